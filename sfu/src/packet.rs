//! [`ForwardPacket`]: the datum of the forwarding path, the seam between a publisher and its subscribers.
//!
//! A publisher's [`crate::peer::Peer`] reads each RTP packet once, works out everything a subscriber could need
//! (keyframe start, layer, VP8 descriptor, RED primary, capture time), and hands the result out as one shared
//! [`ForwardPacket`]. The engine fans it out, and every subscriber's [`crate::downtrack::DownTrack`] writes it
//! on with its own numbering. Neither side knows the other: this type is all they share, so it lives below both
//! (like LiveKit's `buffer/`), and `peer` and `downtrack` depend on it rather than on each other's internals.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::MediaKind;
use str0m::rtp::{ExtensionValues, Vp8Descriptor};

use crate::id::TrackId;
use crate::keyframe::KeyframeStart;
use crate::layer::LayerSizes;

/// A media packet from a publisher, ready to be written to any number of down-tracks.
///
/// It is shared (`Arc`) between all subscribers of the track: the payload is never copied on the way through.
#[derive(Debug)]
pub struct ForwardPacket {
    /// The published track it belongs to.
    pub track: TrackId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher's codec parameters for its payload type (matched to each subscriber's PT).
    pub params: PayloadParams,
    /// Extended (64-bit, unwrapped) sequence number on the publisher's stream.
    pub seq_no: u64,
    /// RTP timestamp on the publisher's stream.
    pub timestamp: u32,
    /// RTP marker bit (end of a video frame).
    pub marker: bool,
    /// Does this packet start a keyframe?
    pub keyframe: KeyframeStart,
    /// Spatial layer (simulcast) it belongs to; 0 without simulcast.
    pub layer: u8,
    /// Which spatial layers of the track are live right now (bit `i` = layer `i`).
    pub live_layers: u8,
    /// Frame sizes of the layers, as far as their keyframes have told.
    pub layer_sizes: LayerSizes,
    /// Measured bitrate of each layer (bits per second; 0: not live), for the subscribers' allocators.
    pub layer_bitrates: [u32; 3],
    /// Does the track have simulcast layers?
    pub simulcast: bool,
    /// When the packet's frame was captured, in seconds on the publisher's sender-report clock (`None` before
    /// the layer's first sender report). Aligns timestamps across layer switches.
    pub capture: Option<f64>,
    /// The RTP clock rate.
    pub clock_rate: u32,
    /// The VP8 payload descriptor, parsed once here for every subscriber's munger.
    pub vp8: Option<Vp8Descriptor>,
    /// When the payload is RFC 2198 RED (sent on the publisher's RED payload type for `params`): its primary block,
    /// found once here (the RED payload checked well formed, the primary of `params`' payload type) and shared by
    /// every subscriber that gets plain Opus; the others get the RED payload.
    pub red: Option<Arc<[u8]>>,
    /// Header extension values worth forwarding (audio level, orientation, …).
    pub ext: ExtensionValues,
    /// The RTP payload.
    pub payload: Arc<[u8]>,
    /// When the server received it.
    pub arrival: Instant,
}
