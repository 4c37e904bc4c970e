//! Synthetic simulcast: the same captured frames sent as up to three layers (RIDs `q`, `h`, `f`), so the SFU's
//! layer selection, bandwidth allocation and dynacast can be tested without a real encoder.
//!
//! A browser's simulcast sends one encoding per resolution; the SFU forwards one layer per subscriber, switching at
//! keyframes. What the SFU looks at is the RID of each stream (SDP `a=rid` / `a=simulcast` and the RTP header
//! extension), each layer's bitrate, and each layer's frame size, which it learns from the VP8 keyframe header.
//! So each layer here carries the committed 320×180 clip ([`crate::frame::Vp8Clip`]) with:
//!
//! - its keyframes' 14-bit width and height patched to the layer's nominal size
//!   ([`crate::frame::patch_keyframe_size`]): **the layers above 320×180 are not decodable**, and nothing here
//!   decodes them (a browser subscriber would fail on `h` and `f`);
//! - filler up to the layer's bitrate and the integrity trailer, which also carries the layer's index, so a
//!   receiver knows which layer each frame came from;
//! - the same frame counter and RTP timestamp as the other layers for the same captured frame, so a subscriber that
//!   the SFU switches between layers sees one continuous counter.
//!
//! Each layer has its own keyframe cadence: periodic, on a keyframe request (PLI/FIR for that layer's SSRC), and
//! when the layer is resumed after the server paused it (`set_layers`, dynacast). Paused layers still advance (their
//! counters stay in step) but their frames are not returned.
//!
//! Sans-I/O: [`SimulcastSource`] takes the send time and returns frames; the client's sender task packetizes them.

use std::time::Duration;

use crate::frame::{SourceFrame, VideoConfig, VideoSource, MAX_LAYER};

/// One simulcast layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerConfig {
    /// Its RTP stream id (`q`, `h`, `f`).
    pub rid: String,
    /// The width its keyframes announce.
    pub width: u16,
    /// The height its keyframes announce.
    pub height: u16,
    /// Its bitrate, bits per second.
    pub bitrate_bps: u32,
}

impl LayerConfig {
    /// A layer.
    pub fn new(rid: &str, width: u16, height: u16, bitrate_bps: u32) -> Self {
        Self { rid: rid.to_owned(), width, height, bitrate_bps }
    }
}

/// The layers of a simulcast track, lowest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastConfig {
    /// One to three layers, lowest (spatial index 0) first.
    pub layers: Vec<LayerConfig>,
}

/// Default layer bitrates in kbps: q, h, f.
pub const DEFAULT_LAYER_KBPS: [u32; 3] = [150, 500, 1500];

impl Default for SimulcastConfig {
    /// `q` 320×180 at 150 kbps, `h` 640×360 at 500 kbps, `f` 1280×720 at 1500 kbps.
    fn default() -> Self {
        Self::with_kbps(DEFAULT_LAYER_KBPS)
    }
}

/// A simulcast configuration that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimulcastError {
    /// No layers, or more than three.
    #[error("simulcast needs 1 to 3 layers, not {0}")]
    LayerCount(usize),
    /// A RID that is empty, too long, not alphanumeric (RFC 8851 allows `-` and `_` too), or used twice.
    #[error("bad or repeated rid {0:?}")]
    Rid(String),
    /// A size of zero or above VP8's 14 bits.
    #[error("layer {0:?}: size must be 1 to 16383 pixels each way")]
    Size(String),
}

impl SimulcastConfig {
    /// `q` 320×180, `h` 640×360, `f` 1280×720 at these bitrates (kbps).
    pub fn with_kbps(kbps: [u32; 3]) -> Self {
        Self {
            layers: vec![
                LayerConfig::new("q", 320, 180, kbps[0].saturating_mul(1000)),
                LayerConfig::new("h", 640, 360, kbps[1].saturating_mul(1000)),
                LayerConfig::new("f", 1280, 720, kbps[2].saturating_mul(1000)),
            ],
        }
    }

    /// Checks what [`SimulcastError`] lists.
    pub fn validate(&self) -> Result<(), SimulcastError> {
        if self.layers.is_empty() || self.layers.len() > usize::from(MAX_LAYER) + 1 {
            return Err(SimulcastError::LayerCount(self.layers.len()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let ok_chars = l.rid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if l.rid.is_empty() || l.rid.len() > 16 || !ok_chars || self.layers[..i].iter().any(|o| o.rid == l.rid) {
                return Err(SimulcastError::Rid(l.rid.clone()));
            }
            if l.width == 0 || l.height == 0 || l.width > 0x3fff || l.height > 0x3fff {
                return Err(SimulcastError::Size(l.rid.clone()));
            }
        }
        Ok(())
    }

    /// The spatial index of `rid`.
    pub fn index_of(&self, rid: &str) -> Option<u8> {
        self.layers.iter().position(|l| l.rid == rid).map(|i| i as u8)
    }
}

/// A frame of one layer.
#[derive(Debug, Clone)]
pub struct LayerFrame {
    /// The layer's spatial index.
    pub layer: u8,
    /// The frame.
    pub frame: SourceFrame,
}

/// Makes the frames of all layers of one track; see the module doc.
///
/// Inputs: [`SimulcastSource::set_active`] (from the server's `set_layers`), [`SimulcastSource::request_keyframe`]
/// (a PLI/FIR for one layer). Output: [`SimulcastSource::next_frames`], called once per frame interval.
#[derive(Debug, Clone)]
pub struct SimulcastSource {
    layers: Vec<VideoSource>,
    active: Vec<bool>,
}

impl SimulcastSource {
    /// Sources for every layer of `config` (rate, keyframe interval and payload size from `video`; its bitrate is
    /// replaced by each layer's), all active, all starting with a keyframe at `timestamp_base`.
    pub fn new(config: &SimulcastConfig, video: &VideoConfig, timestamp_base: u32) -> Self {
        let layers: Vec<VideoSource> = config
            .layers
            .iter()
            .take(usize::from(MAX_LAYER) + 1)
            .enumerate()
            .map(|(i, l)| {
                let cfg = VideoConfig { bitrate_bps: l.bitrate_bps, ..video.clone() };
                VideoSource::for_layer(cfg, i as u8, l.width, l.height, timestamp_base)
            })
            .collect();
        let active = vec![true; layers.len()];
        Self { layers, active }
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Time between two frames.
    pub fn frame_interval(&self) -> Duration {
        self.layers.first().map_or(Duration::from_millis(33), VideoSource::frame_interval)
    }

    /// Whether `layer` is being sent.
    pub fn is_active(&self, layer: u8) -> bool {
        self.active.get(usize::from(layer)).copied().unwrap_or(false)
    }

    /// Pauses or resumes `layer`; a resumed layer starts with a keyframe. Returns whether anything changed.
    pub fn set_active(&mut self, layer: u8, active: bool) -> bool {
        let i = usize::from(layer);
        let Some(current) = self.active.get_mut(i) else { return false };
        if *current == active {
            return false;
        }
        *current = active;
        if active {
            self.layers[i].request_keyframe();
        }
        true
    }

    /// The next frame of `layer` will be a keyframe.
    pub fn request_keyframe(&mut self, layer: u8) {
        if let Some(source) = self.layers.get_mut(usize::from(layer)) {
            source.request_keyframe();
        }
    }

    /// The next captured frame on every active layer (lowest first). Paused layers advance too.
    pub fn next_frames(&mut self, send_time_us: u64) -> Vec<LayerFrame> {
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, source) in self.layers.iter_mut().enumerate() {
            let frame = source.next_frame(send_time_us);
            if self.active[i] {
                out.push(LayerFrame { layer: i as u8, frame });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{parse_vp8_header, verify_frame, FrameCheck};

    #[test]
    fn layers_share_counters_and_timestamps() {
        let mut src = SimulcastSource::new(&SimulcastConfig::default(), &VideoConfig::default(), 1234);
        let mut bytes = [0usize; 3];
        for n in 0..120u32 {
            let frames = src.next_frames(u64::from(n));
            assert_eq!(frames.len(), 3);
            for f in &frames {
                assert_eq!(f.frame.counter, n);
                assert_eq!(f.frame.rtp_timestamp, frames[0].frame.rtp_timestamp);
                assert_eq!(f.frame.keyframe, n % 60 == 0, "keyframe every 2 s on every layer");
                let FrameCheck::Complete(info) = verify_frame(&f.frame.data) else { panic!("frame {n} intact") };
                assert_eq!(info.layer, Some(f.layer));
                assert_eq!(info.counter, n);
                bytes[usize::from(f.layer)] += f.frame.data.len();
            }
        }
        // 120 frames = 4 s; each layer near its bitrate (q is at the clip's own rate, so at least it).
        let kbps = bytes.map(|b| b as f64 * 8.0 / 4.0 / 1000.0);
        assert!((140.0..=200.0).contains(&kbps[0]), "{kbps:?}");
        assert!((450.0..=550.0).contains(&kbps[1]), "{kbps:?}");
        assert!((1400.0..=1600.0).contains(&kbps[2]), "{kbps:?}");
    }

    #[test]
    fn keyframes_announce_the_layer_size() {
        let mut src = SimulcastSource::new(&SimulcastConfig::default(), &VideoConfig::default(), 0);
        let frames = src.next_frames(0);
        let sizes: Vec<_> = frames
            .iter()
            .map(|f| {
                let FrameCheck::Complete(info) = verify_frame(&f.frame.data) else { panic!("intact") };
                assert_eq!(info.size, parse_vp8_header(&f.frame.data).and_then(|h| h.size));
                info.size
            })
            .collect();
        assert_eq!(sizes, vec![Some((320, 180)), Some((640, 360)), Some((1280, 720))]);
        // Delta frames are the clip's bytes, untouched.
        let frames = src.next_frames(0);
        let clip = crate::frame::Vp8Clip::builtin();
        for f in frames {
            assert!(!f.frame.keyframe);
            assert!(f.frame.data.starts_with(clip.frame(1)));
        }
    }

    #[test]
    fn pause_resume_and_per_layer_keyframes() {
        let mut src = SimulcastSource::new(&SimulcastConfig::default(), &VideoConfig::default(), 0);
        src.next_frames(0);
        assert!(src.set_active(2, false));
        assert!(!src.set_active(2, false), "no change");
        assert!(!src.set_active(7, false), "no such layer");
        for _ in 0..10 {
            let layers: Vec<u8> = src.next_frames(0).iter().map(|f| f.layer).collect();
            assert_eq!(layers, vec![0, 1]);
        }
        assert!(src.set_active(2, true));
        let frames = src.next_frames(0);
        let key: Vec<(u8, bool, u32)> = frames.iter().map(|f| (f.layer, f.frame.keyframe, f.frame.counter)).collect();
        assert_eq!(key, vec![(0, false, 11), (1, false, 11), (2, true, 11)], "resumed with a keyframe, in step");
        src.request_keyframe(1);
        let key: Vec<bool> = src.next_frames(0).iter().map(|f| f.frame.keyframe).collect();
        assert_eq!(key, vec![false, true, false]);
    }

    #[test]
    fn validation() {
        let ok = SimulcastConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.index_of("h"), Some(1));
        assert_eq!(ok.index_of("x"), None);
        let cases: Vec<(SimulcastConfig, SimulcastError)> = vec![
            (SimulcastConfig { layers: vec![] }, SimulcastError::LayerCount(0)),
            (SimulcastConfig { layers: vec![LayerConfig::new("q", 1, 1, 1); 4] }, SimulcastError::LayerCount(4)),
            (
                SimulcastConfig { layers: vec![LayerConfig::new("q", 1, 1, 1), LayerConfig::new("q", 2, 2, 1)] },
                SimulcastError::Rid("q".into()),
            ),
            (SimulcastConfig { layers: vec![LayerConfig::new("a b", 1, 1, 1)] }, SimulcastError::Rid("a b".into())),
            (SimulcastConfig { layers: vec![LayerConfig::new("", 1, 1, 1)] }, SimulcastError::Rid("".into())),
            (SimulcastConfig { layers: vec![LayerConfig::new("q", 0, 1, 1)] }, SimulcastError::Size("q".into())),
            (SimulcastConfig { layers: vec![LayerConfig::new("q", 16384, 1, 1)] }, SimulcastError::Size("q".into())),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), Err(expected), "{config:?}");
        }
    }
}
