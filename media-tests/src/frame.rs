//! Real VP8 test frames that carry an integrity trailer, their RTP packetizer, and the receiving
//! assembler.
//!
//! The native client's video has two audiences. Browsers must *decode* it (the browser smoke
//! test watches Chrome's `framesDecoded`), so it has to be real VP8; and the receiving native
//! client must tell exactly which frame arrived, whether it is intact, and how late it is. So
//! every frame is a real VP8 frame taken from a short clip encoded by libvpx ([`Vp8Clip`]: the
//! committed `data/vp8-320x180-30fps.ivf`, made by `scripts/make-vp8-fixture.sh`), followed by
//! filler and a fixed-size trailer:
//!
//! ```text
//! VP8 frame (from the clip) | filler | trailer (28 bytes):
//!     "CRFR" | counter u32 | send time u64 (µs since the UNIX epoch) | layer u8 |
//!     VP8 length u24 | frame length u32 | crc32 u32
//! ```
//!
//! A VP8 frame's last partition runs to the end of the buffer, yet libvpx (which browsers decode
//! VP8 with) decodes a frame with bytes appended exactly like the frame alone, since the encoder
//! pads its bool-coded data (checked with `vpxdec --md5`; the ignored test
//! `source_output_decodes_like_the_clip` repeats the check on this module's output, keyframe
//! restarts included). So the trailer sits at the very end, where the decoder ignores it, and
//! the frame starts with a genuine frame tag, which the SFU reads for keyframes. Chrome decodes
//! this stream (the browser smoke test in `web-demo/` checks `framesDecoded`).
//!
//! Trailer integers are big-endian. The VP8 length is the clip frame's, the frame length the
//! whole frame's. The layer byte is 0 on a track without simulcast and `1 + spatial index` on a
//! simulcast layer (1 = q, 2 = h, 3 = f; see [`crate::simulcast`]), so a receiver knows which
//! layer every frame came from even after the SFU rewrote SSRCs and sequence numbers; it was the
//! VP8 length's (always zero) high byte before simulcast, so old frames read as layer-less. The filler is derived from the counter and pads each frame to the size the
//! configured bitrate asks for. The CRC-32 (IEEE) covers every byte before it. A receiver reads
//! from the end ([`verify_frame`]):
//!
//! - trailer magic present: lengths, CRC, filler and the VP8 frame header are checked, giving
//!   [`FrameCheck::Complete`] (counter, keyframe flag, send time for the one-way delay) or
//!   [`FrameCheck::Corrupt`];
//! - no magic, but the frame begins like one of the clip's frames: ours with its end lost,
//!   [`Corruption::Truncated`];
//! - otherwise [`FrameCheck::Foreign`], e.g. a browser's VP8.
//!
//! The source walks the clip in order and jumps back to its frame 0, the clip's only keyframe,
//! on a keyframe request, when the keyframe interval has elapsed, and at the end of the clip, so
//! the decoding order is always valid (a keyframe resets all VP8 decoder state) and a keyframe
//! comes at least once per clip length (5 s).
//!
//! Everything here is sans-I/O: callers pass the time in and get packets or verdicts out.
//!
//! - [`Vp8Clip`] holds the clip's frames ([`Vp8Clip::builtin`] is the committed one).
//! - [`VideoSource`] makes frames at a configured rate, bitrate and keyframe interval.
//! - [`Vp8Packetizer`] splits a frame into RTP packets of at most [`MAX_RTP_PAYLOAD`] bytes.
//! - [`FrameAssembler`] groups received packets back into frames.
//! - [`verify_frame`] classifies a reassembled frame as ours and intact, ours and corrupt, or
//!   foreign (e.g. from a browser).
//! - [`VideoReceiver`] ties the last two together and keeps the counters the report shows.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use rtc::rtp;

use crate::delay::DelaySamples;
use crate::ivf::{self, IvfError};
use crate::recovery::{Recovery, RecoveryTracker};
use crate::seq::Unwrapper;
use crate::series::{Series, SeriesBinner};

/// The four bytes that start the trailer of our frames.
pub const MAGIC: [u8; 4] = *b"CRFR";
/// Length of the trailer: magic, counter, send time, layer and VP8 length, frame length, CRC-32.
pub const TRAILER_LEN: usize = 4 + 4 + 8 + 4 + 4 + 4;
/// Largest RTP payload (descriptor included) the packetizer emits.
pub const MAX_RTP_PAYLOAD: usize = 1100;
/// RTP clock rate of VP8.
pub const VP8_CLOCK_RATE: u32 = 90_000;
/// Length of the VP8 payload descriptor the packetizer writes (X, I with M, L, T).
pub const DESCRIPTOR_LEN: usize = 6;
/// Largest frame the source pads to (a frame is never smaller than its VP8 frame + trailer).
pub const MAX_FRAME_LEN: usize = 1 << 19;
/// How many leading bytes of a received frame [`Vp8Clip::recognizes`] compares.
pub const RECOGNIZE_PREFIX_LEN: usize = 16;

/// Largest spatial layer index a trailer can carry (three layers: q, h, f).
pub const MAX_LAYER: u8 = 2;
/// Largest VP8 length the trailer's 24-bit field holds.
const MAX_VP8_LEN: usize = (1 << 24) - 1;

const FRAME_TAG_LEN: usize = 3;
const KEYFRAME_HEADER_LEN: usize = 10;
const KEYFRAME_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// The committed clip: 320×180, 30 fps, 150 frames, one keyframe (frame 0).
static BUILTIN_IVF: &[u8] = include_bytes!("../data/vp8-320x180-30fps.ivf");

// ---------------------------------------------------------------------------------------------
// VP8 frame header and the clip

/// The fields of a VP8 frame header (RFC 6386 §9.1) that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Header {
    /// The frame tag's (inverse) keyframe bit says keyframe.
    pub keyframe: bool,
    /// Version (profile), 0 to 3.
    pub version: u8,
    /// The frame is meant to be displayed (hidden frames are alt-ref updates).
    pub show_frame: bool,
    /// Size of the first partition.
    pub first_partition_len: usize,
    /// Width and height of a keyframe (scaling bits stripped).
    pub size: Option<(u16, u16)>,
}

/// Parses the header of a VP8 frame; `None` if it is not a valid one: shorter than its header,
/// a keyframe without the start code, a version above 3, or a first partition longer than the
/// frame.
pub fn parse_vp8_header(frame: &[u8]) -> Option<Vp8Header> {
    let tag = frame.get(..FRAME_TAG_LEN)?;
    let tag = u32::from_le_bytes([tag[0], tag[1], tag[2], 0]);
    let keyframe = tag & 1 == 0;
    let version = ((tag >> 1) & 0x7) as u8;
    let show_frame = (tag >> 4) & 1 == 1;
    let first_partition_len = (tag >> 5) as usize;
    let header_len = if keyframe { KEYFRAME_HEADER_LEN } else { FRAME_TAG_LEN };
    if version > 3 || frame.len() < header_len || first_partition_len > frame.len() - header_len {
        return None;
    }
    let size = if keyframe {
        if frame[3..6] != KEYFRAME_START_CODE {
            return None;
        }
        let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
        let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
        Some((width, height))
    } else {
        None
    };
    Some(Vp8Header { keyframe, version, show_frame, first_partition_len, size })
}

/// Why an IVF file is not a usable clip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClipError {
    /// The container did not parse.
    #[error(transparent)]
    Ivf(#[from] IvfError),
    /// The codec is not VP8.
    #[error("the clip's codec is {0:02x?}, not VP80")]
    NotVp8([u8; 4]),
    /// No frames.
    #[error("the clip has no frames")]
    Empty,
    /// A frame whose header does not parse.
    #[error("clip frame {0} is not a valid VP8 frame")]
    BadFrame(usize),
    /// The first frame is not a keyframe, so the clip cannot start a stream.
    #[error("the clip's first frame is not a keyframe")]
    FirstNotKeyframe,
    /// A hidden frame (show_frame = 0): one RTP timestamp per frame shows nothing for it.
    #[error("clip frame {0} is hidden (show_frame = 0)")]
    Hidden(usize),
    /// A later keyframe with another size than frame 0.
    #[error("clip frame {0} is a keyframe of another size than frame 0")]
    SizeChanged(usize),
}

/// A VP8 clip: real frames in decoding order, the first a keyframe, all shown, one size.
///
/// [`Vp8Clip::builtin`] is the committed fixture; [`Vp8Clip::from_ivf`] loads another one.
#[derive(Clone)]
pub struct Vp8Clip {
    width: u16,
    height: u16,
    frames: Vec<Bytes>,
    keyframes: Vec<bool>,
    prefixes: HashSet<[u8; RECOGNIZE_PREFIX_LEN]>,
}

impl fmt::Debug for Vp8Clip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vp8Clip")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("frames", &self.frames.len())
            .field("bytes", &self.total_bytes())
            .finish()
    }
}

impl Vp8Clip {
    /// Loads a clip from an IVF file and checks it (see [`ClipError`]).
    pub fn from_ivf(data: Bytes) -> Result<Self, ClipError> {
        let file = ivf::parse(data)?;
        if file.header.fourcc != *b"VP80" {
            return Err(ClipError::NotVp8(file.header.fourcc));
        }
        if file.frames.is_empty() {
            return Err(ClipError::Empty);
        }
        let mut size = None;
        let mut keyframes = Vec::with_capacity(file.frames.len());
        for (index, frame) in file.frames.iter().enumerate() {
            let header = parse_vp8_header(&frame.data).ok_or(ClipError::BadFrame(index))?;
            if index == 0 && !header.keyframe {
                return Err(ClipError::FirstNotKeyframe);
            }
            if !header.show_frame {
                return Err(ClipError::Hidden(index));
            }
            if let Some(s) = header.size {
                if *size.get_or_insert(s) != s {
                    return Err(ClipError::SizeChanged(index));
                }
            }
            keyframes.push(header.keyframe);
        }
        let (width, height) = size.expect("frame 0 is a keyframe, which has a size");
        let frames: Vec<Bytes> = file.frames.into_iter().map(|f| f.data).collect();
        let prefixes = frames.iter().filter_map(|f| recognition_prefix(f)).collect();
        Ok(Self { width, height, frames, keyframes, prefixes })
    }

    /// The committed clip (`data/vp8-320x180-30fps.ivf`, embedded in the binary): 320×180,
    /// 30 fps, 150 frames (5 s), one keyframe, about 140 kbps.
    pub fn builtin() -> Arc<Vp8Clip> {
        Arc::clone(builtin_clip())
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Never true for a loaded clip; here for completeness.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frame `index` (panics if out of range).
    pub fn frame(&self, index: usize) -> &Bytes {
        &self.frames[index]
    }

    /// Whether frame `index` is a keyframe (panics if out of range).
    pub fn is_keyframe(&self, index: usize) -> bool {
        self.keyframes[index]
    }

    /// Width from the keyframes.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Height from the keyframes.
    pub fn height(&self) -> u16 {
        self.height
    }

    /// Bytes of all frames.
    pub fn total_bytes(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }

    /// Whether `data` begins with the first [`RECOGNIZE_PREFIX_LEN`] bytes of one of the clip's
    /// frames (frames shorter than that are never recognised). This is how a frame of ours
    /// that lost its trailer is told from a foreign one. A keyframe's size bytes are not
    /// compared, since simulcast layers patch them ([`patch_keyframe_size`]).
    pub fn recognizes(&self, data: &[u8]) -> bool {
        recognition_prefix(data).is_some_and(|p| self.prefixes.contains(&p))
    }
}

/// The first [`RECOGNIZE_PREFIX_LEN`] bytes, with a keyframe's width and height zeroed.
fn recognition_prefix(data: &[u8]) -> Option<[u8; RECOGNIZE_PREFIX_LEN]> {
    let mut p: [u8; RECOGNIZE_PREFIX_LEN] = data.get(..RECOGNIZE_PREFIX_LEN)?.try_into().ok()?;
    if p[0] & 1 == 0 && p[3..6] == KEYFRAME_START_CODE {
        p[6..KEYFRAME_HEADER_LEN].fill(0);
    }
    Some(p)
}

/// Writes `width` × `height` (14 bits each, scaling bits cleared) into the header of a VP8
/// keyframe (bytes 6..10, RFC 6386 §9.1). Returns false, changing nothing, when `frame` is not
/// a keyframe with a valid start code or a size does not fit 14 bits.
///
/// The SFU learns each simulcast layer's size from its keyframes; the synthetic layers carry the
/// 320×180 clip, so their keyframes are patched to the layer's nominal size. Such frames are not
/// decodable at the patched size; nothing here decodes them.
pub fn patch_keyframe_size(frame: &mut [u8], width: u16, height: u16) -> bool {
    let is_key = frame.len() >= KEYFRAME_HEADER_LEN && frame[0] & 1 == 0 && frame[3..6] == KEYFRAME_START_CODE;
    if !is_key || width > 0x3fff || height > 0x3fff {
        return false;
    }
    frame[6..8].copy_from_slice(&width.to_le_bytes());
    frame[8..10].copy_from_slice(&height.to_le_bytes());
    true
}

fn builtin_clip() -> &'static Arc<Vp8Clip> {
    static CLIP: OnceLock<Arc<Vp8Clip>> = OnceLock::new();
    CLIP.get_or_init(|| {
        Arc::new(
            Vp8Clip::from_ivf(Bytes::from_static(BUILTIN_IVF))
                .expect("the embedded clip is valid (a unit test checks it)"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Frames

/// What the trailer of one frame says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Frame counter, +1 per frame sent on a track.
    pub counter: u32,
    /// Whether the VP8 frame is a keyframe.
    pub keyframe: bool,
    /// Send time, microseconds since the UNIX epoch.
    pub send_time_us: u64,
    /// Length of the whole frame in bytes (VP8 frame, filler and trailer).
    pub len: usize,
    /// Length of the VP8 frame at its start.
    pub vp8_len: usize,
    /// The simulcast layer (spatial index, 0 = lowest) it was sent on; `None` without simulcast.
    pub layer: Option<u8>,
    /// Width and height of a keyframe, from its VP8 header.
    pub size: Option<(u16, u16)>,
}

/// Builds one frame: `vp8`, then filler, then the trailer, `len` bytes in all. `len` is capped
/// at [`MAX_FRAME_LEN`] and raised to `vp8.len() + TRAILER_LEN` (no filler) when smaller.
pub fn build_frame(vp8: &[u8], counter: u32, send_time_us: u64, len: usize) -> Vec<u8> {
    build_layer_frame(vp8, counter, send_time_us, len, None)
}

/// Like [`build_frame`], for simulcast layer `layer` (spatial index, at most [`MAX_LAYER`]; larger
/// values are clamped) when it is `Some`. `vp8` must be shorter than 16 MiB.
pub fn build_layer_frame(vp8: &[u8], counter: u32, send_time_us: u64, len: usize, layer: Option<u8>) -> Vec<u8> {
    let vp8 = &vp8[..vp8.len().min(MAX_VP8_LEN)];
    let len = len.min(MAX_FRAME_LEN).max(vp8.len() + TRAILER_LEN);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(vp8);
    let mut filler = Filler::new(counter);
    out.extend((0..len - vp8.len() - TRAILER_LEN).map(|_| filler.next_byte()));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&send_time_us.to_be_bytes());
    let layer_byte = layer.map_or(0, |l| l.min(MAX_LAYER) + 1);
    out.extend_from_slice(&((u32::from(layer_byte) << 24) | vp8.len() as u32).to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(out.len(), len);
    out
}

/// Why a frame of ours failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// No trailer, but the frame starts like one of the clip's: its end is missing.
    Truncated,
    /// The VP8 length in the trailer does not fit the frame, or the VP8 frame header is invalid.
    BadHeader,
    /// The frame length in the trailer is not the received length (bytes lost or added).
    LengthMismatch {
        /// Length written by the sender.
        declared: usize,
        /// Length reassembled by the receiver.
        actual: usize,
    },
    /// The CRC-32 does not match.
    Checksum,
    /// The CRC matched but the filler is not the one of this counter (frames mixed up).
    Filler,
}

/// The verdict on one reassembled frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// One of our frames, intact.
    Complete(FrameInfo),
    /// One of our frames (trailer magic, or the start of a clip frame), damaged.
    Corrupt(Corruption),
    /// A frame that is not ours, e.g. from a browser: received, but not checkable.
    Foreign {
        /// The VP8 frame tag's keyframe flag (false if the frame is too short to have one).
        keyframe: bool,
    },
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Classifies a complete frame (the payloads of its packets, descriptors stripped), reading the
/// trailer from the end. Truncated frames are recognised by the builtin clip
/// ([`Vp8Clip::recognizes`]).
pub fn verify_frame(data: &[u8]) -> FrameCheck {
    let trailer_at = data.len().checked_sub(TRAILER_LEN).filter(|&at| data[at..at + MAGIC.len()] == MAGIC);
    let Some(trailer_at) = trailer_at else {
        if builtin_clip().recognizes(data) {
            return FrameCheck::Corrupt(Corruption::Truncated);
        }
        return FrameCheck::Foreign { keyframe: data.len() >= FRAME_TAG_LEN && data[0] & 1 == 0 };
    };
    let t = &data[trailer_at..];
    let counter = be_u32(&t[4..8]);
    let send_time_us = u64::from_be_bytes(t[8..16].try_into().expect("8 bytes"));
    let layer_byte = t[16];
    let vp8_len = (be_u32(&t[16..20]) & 0x00ff_ffff) as usize;
    let declared = be_u32(&t[20..24]) as usize;
    let checksum = be_u32(&t[24..28]);
    if declared != data.len() {
        return FrameCheck::Corrupt(Corruption::LengthMismatch { declared, actual: data.len() });
    }
    if crc32(&data[..data.len() - 4]) != checksum {
        return FrameCheck::Corrupt(Corruption::Checksum);
    }
    if vp8_len > trailer_at || layer_byte > MAX_LAYER + 1 {
        return FrameCheck::Corrupt(Corruption::BadHeader);
    }
    let mut filler = Filler::new(counter);
    if data[vp8_len..trailer_at].iter().any(|&b| b != filler.next_byte()) {
        return FrameCheck::Corrupt(Corruption::Filler);
    }
    let Some(header) = parse_vp8_header(&data[..vp8_len]) else {
        return FrameCheck::Corrupt(Corruption::BadHeader);
    };
    FrameCheck::Complete(FrameInfo {
        counter,
        keyframe: header.keyframe,
        send_time_us,
        len: data.len(),
        vp8_len,
        layer: layer_byte.checked_sub(1),
        size: header.size,
    })
}

/// Deterministic filler bytes: xorshift32 seeded from the frame counter.
struct Filler {
    state: u32,
    word: [u8; 4],
    used: usize,
}

impl Filler {
    fn new(counter: u32) -> Self {
        let seed = counter.wrapping_mul(0x9E37_79B9) ^ 0x85EB_CA6B;
        Self { state: if seed == 0 { 1 } else { seed }, word: [0; 4], used: 4 }
    }

    fn next_byte(&mut self) -> u8 {
        if self.used == 4 {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.state = x;
            self.word = x.to_le_bytes();
            self.used = 0;
        }
        let b = self.word[self.used];
        self.used += 1;
        b
    }
}

/// CRC-32 (IEEE 802.3, the zlib/PNG one).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

// ---------------------------------------------------------------------------------------------
// Source

/// How the video track behaves. The picture is the clip's (320×180 for the builtin one).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in bits per second; frame sizes average to this (filler makes up the
    /// difference to the clip's own, lower, bitrate).
    pub bitrate_bps: u32,
    /// Time between keyframes; the end of the clip also brings one (every 5 s for the builtin
    /// clip at 30 fps), so longer intervals act as the clip length.
    pub keyframe_interval: Duration,
    /// Largest RTP payload, descriptor included ([`MAX_RTP_PAYLOAD`] by default).
    pub max_rtp_payload: usize,
}

impl Default for VideoConfig {
    /// 30 fps, 700 kbps, a keyframe every 2 s, RTP payloads of at most 1100 bytes.
    fn default() -> Self {
        Self {
            fps: 30,
            bitrate_bps: 700_000,
            keyframe_interval: Duration::from_secs(2),
            max_rtp_payload: MAX_RTP_PAYLOAD,
        }
    }
}

/// One frame from [`VideoSource`].
#[derive(Debug, Clone)]
pub struct SourceFrame {
    /// The frame counter written into the frame.
    pub counter: u32,
    /// Whether it is a keyframe.
    pub keyframe: bool,
    /// Which frame of the clip it carries.
    pub clip_frame: usize,
    /// The frame's RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// The frame itself.
    pub data: Vec<u8>,
}

/// Makes the frames of one video track from a [`Vp8Clip`].
///
/// Frames follow the clip in order. The source goes back to clip frame 0 (a keyframe) for the
/// first frame, after [`VideoSource::request_keyframe`], when the keyframe interval has passed
/// since the last keyframe, and after the clip's last frame; so every frame it sends can be
/// decoded after the ones before it.
///
/// Sizes follow the configured bitrate: keyframes are four times the average frame size and
/// delta frames vary ±15 % around the rest of the budget, so the stream averages `bitrate_bps`
/// over each keyframe interval. A frame is never smaller than its clip frame plus the trailer,
/// so a bitrate below the clip's own (about 140 kbps for the builtin clip) gives the clip's.
#[derive(Debug, Clone)]
pub struct VideoSource {
    config: VideoConfig,
    clip: Arc<Vp8Clip>,
    counter: u32,
    next_clip_frame: usize,
    since_keyframe: Option<u32>,
    force_keyframe: bool,
    timestamp_base: u32,
    /// Simulcast: the layer's spatial index and the size its keyframes announce.
    layer: Option<(u8, u16, u16)>,
}

impl VideoSource {
    /// A source of the builtin clip whose first frame has counter 0, is a keyframe, and has
    /// RTP timestamp `timestamp_base`.
    pub fn new(config: VideoConfig, timestamp_base: u32) -> Self {
        Self::with_clip(config, Vp8Clip::builtin(), timestamp_base)
    }

    /// Like [`VideoSource::new`] with another clip. (Receivers recognise truncated frames of
    /// the builtin clip only.)
    pub fn with_clip(config: VideoConfig, clip: Arc<Vp8Clip>, timestamp_base: u32) -> Self {
        Self {
            config: VideoConfig { fps: config.fps.max(1), ..config },
            clip,
            counter: 0,
            next_clip_frame: 0,
            since_keyframe: None,
            force_keyframe: false,
            timestamp_base,
            layer: None,
        }
    }

    /// A source for simulcast layer `layer` (spatial index, 0 = lowest): like [`VideoSource::new`],
    /// but its trailers carry the layer and its keyframes announce `width` × `height`
    /// ([`patch_keyframe_size`]). Sources of one track built with the same `timestamp_base` and
    /// advanced together give the same counter and RTP timestamp to the same captured frame.
    pub fn for_layer(config: VideoConfig, layer: u8, width: u16, height: u16, timestamp_base: u32) -> Self {
        Self { layer: Some((layer.min(MAX_LAYER), width, height)), ..Self::new(config, timestamp_base) }
    }

    /// The simulcast layer it sends, if any.
    pub fn layer(&self) -> Option<u8> {
        self.layer.map(|(l, _, _)| l)
    }

    /// The clip it sends.
    pub fn clip(&self) -> &Arc<Vp8Clip> {
        &self.clip
    }

    /// Time between two frames.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.config.fps
    }

    /// Makes the next frame a keyframe (e.g. after a PLI).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Frames from one keyframe to the next: the interval, at most the clip's length.
    fn frames_per_keyframe(&self) -> u32 {
        let n = (self.config.keyframe_interval.as_secs_f64() * f64::from(self.config.fps)).round();
        let clip_len = u32::try_from(self.clip.len()).unwrap_or(u32::MAX);
        (n as u32).clamp(1, clip_len.max(1))
    }

    /// Target size of the frame with this counter.
    fn frame_len(&self, counter: u32, keyframe: bool) -> usize {
        let avg = f64::from(self.config.bitrate_bps) / 8.0 / f64::from(self.config.fps);
        let n = f64::from(self.frames_per_keyframe());
        let key = if n > 1.0 { avg * 4.0 } else { avg };
        let len = if keyframe {
            key
        } else {
            let delta_avg = ((avg * n - key) / (n - 1.0)).max(0.0);
            // ±15 %, deterministic per counter.
            let spread = (counter.wrapping_mul(2_654_435_761) >> 16) % 31;
            delta_avg * (1.0 + (f64::from(spread) - 15.0) / 100.0)
        };
        len.round() as usize
    }

    /// Makes the next frame, stamping `send_time_us` into it.
    pub fn next_frame(&mut self, send_time_us: u64) -> SourceFrame {
        let counter = self.counter;
        let restart = self.force_keyframe
            || self.next_clip_frame >= self.clip.len()
            || match self.since_keyframe {
                None => true,
                Some(n) => n + 1 >= self.frames_per_keyframe(),
            };
        if restart {
            self.next_clip_frame = 0;
        }
        let clip_frame = self.next_clip_frame;
        self.next_clip_frame += 1;
        let keyframe = self.clip.is_keyframe(clip_frame);
        self.since_keyframe = if keyframe { Some(0) } else { self.since_keyframe.map(|n| n + 1) };
        self.force_keyframe = false;
        self.counter = self.counter.wrapping_add(1);
        let len = self.frame_len(counter, keyframe);
        let ticks = u64::from(counter) * u64::from(VP8_CLOCK_RATE) / u64::from(self.config.fps);
        let data = match self.layer {
            None => build_frame(self.clip.frame(clip_frame), counter, send_time_us, len),
            Some((layer, width, height)) => {
                let mut vp8 = self.clip.frame(clip_frame).to_vec();
                if keyframe {
                    patch_keyframe_size(&mut vp8, width, height);
                }
                build_layer_frame(&vp8, counter, send_time_us, len, Some(layer))
            }
        };
        SourceFrame {
            counter,
            keyframe,
            clip_frame,
            rtp_timestamp: self.timestamp_base.wrapping_add(ticks as u32),
            data,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Packetizer

/// Splits frames into RTP packets with an RFC 7741 payload descriptor.
///
/// Every packet carries X=1, I=1 with a 15-bit picture id (M=1), L=1 with TL0PICIDX, and T=1
/// with TID=0 and Y=1; S=1 and PartID=0 on a frame's first packet. The picture id and TL0PICIDX
/// advance by one per frame (every frame is on the base temporal layer). The RTP marker is set on
/// a frame's last packet, and all packets of a frame share its timestamp.
#[derive(Debug, Clone)]
pub struct Vp8Packetizer {
    ssrc: u32,
    payload_type: u8,
    sequence_number: u16,
    picture_id: u16,
    tl0_pic_idx: u8,
    max_payload: usize,
}

impl Vp8Packetizer {
    /// A packetizer starting at the given sequence number and picture id (taken mod 2^15).
    pub fn new(ssrc: u32, payload_type: u8, first_sequence: u16, first_picture_id: u16) -> Self {
        Self {
            ssrc,
            payload_type,
            sequence_number: first_sequence,
            picture_id: first_picture_id & 0x7fff,
            tl0_pic_idx: 0,
            max_payload: MAX_RTP_PAYLOAD,
        }
    }

    /// Changes the payload type (known only once negotiation is done).
    pub fn set_payload_type(&mut self, payload_type: u8) {
        self.payload_type = payload_type;
    }

    /// Changes the largest payload; values below `DESCRIPTOR_LEN + 1` are raised to it.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload.max(DESCRIPTOR_LEN + 1);
    }

    /// The sequence number the next packet will get.
    pub fn next_sequence_number(&self) -> u16 {
        self.sequence_number
    }

    /// Packetizes one frame. An empty frame still yields one (empty) packet.
    pub fn packetize(&mut self, frame: &[u8], timestamp: u32) -> Vec<rtp::Packet> {
        let chunk = self.max_payload - DESCRIPTOR_LEN;
        let count = frame.len().div_ceil(chunk).max(1);
        let mut packets = Vec::with_capacity(count);
        for i in 0..count {
            let part = &frame[(i * chunk).min(frame.len())..((i + 1) * chunk).min(frame.len())];
            let mut payload = Vec::with_capacity(DESCRIPTOR_LEN + part.len());
            let start = if i == 0 { 0x10 } else { 0x00 };
            payload.push(0x80 | start); // X, S, PartID 0
            payload.push(0xE0); // I, L, T
            payload.push(0x80 | (self.picture_id >> 8) as u8); // M + picture id high bits
            payload.push(self.picture_id as u8);
            payload.push(self.tl0_pic_idx);
            payload.push(0x20); // TID 0, Y=1, KEYIDX 0
            payload.extend_from_slice(part);
            packets.push(rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i + 1 == count,
                    payload_type: self.payload_type,
                    sequence_number: self.sequence_number,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            });
            self.sequence_number = self.sequence_number.wrapping_add(1);
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.tl0_pic_idx = self.tl0_pic_idx.wrapping_add(1);
        packets
    }
}

/// A parsed VP8 payload descriptor (RFC 7741 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S: the first packet of a partition.
    pub start: bool,
    /// PartID.
    pub partition_id: u8,
    /// N: a non-reference frame.
    pub non_reference: bool,
    /// PictureID (7 or 15 bits) when I=1.
    pub picture_id: Option<u16>,
    /// TL0PICIDX when L=1.
    pub tl0_pic_idx: Option<u8>,
    /// TID when T=1.
    pub tid: Option<u8>,
    /// Y (layer sync) when T=1.
    pub layer_sync: Option<bool>,
    /// KEYIDX when K=1.
    pub key_idx: Option<u8>,
    /// Bytes taken by the descriptor.
    pub len: usize,
}

/// A VP8 payload descriptor that could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The payload ends inside the descriptor.
    #[error("VP8 payload descriptor truncated")]
    Truncated,
}

/// Parses the VP8 payload descriptor at the start of an RTP payload.
pub fn parse_descriptor(payload: &[u8]) -> Result<Vp8Descriptor, DescriptorError> {
    let byte = |i: usize| payload.get(i).copied().ok_or(DescriptorError::Truncated);
    let b0 = byte(0)?;
    let mut d = Vp8Descriptor {
        start: b0 & 0x10 != 0,
        partition_id: b0 & 0x07,
        non_reference: b0 & 0x20 != 0,
        picture_id: None,
        tl0_pic_idx: None,
        tid: None,
        layer_sync: None,
        key_idx: None,
        len: 1,
    };
    if b0 & 0x80 == 0 {
        return Ok(d);
    }
    let b1 = byte(1)?;
    let mut at = 2;
    if b1 & 0x80 != 0 {
        let p = byte(at)?;
        if p & 0x80 != 0 {
            let lo = byte(at + 1)?;
            d.picture_id = Some((u16::from(p & 0x7f) << 8) | u16::from(lo));
            at += 2;
        } else {
            d.picture_id = Some(u16::from(p));
            at += 1;
        }
    }
    if b1 & 0x40 != 0 {
        d.tl0_pic_idx = Some(byte(at)?);
        at += 1;
    }
    if b1 & 0x30 != 0 {
        let tk = byte(at)?;
        if b1 & 0x20 != 0 {
            d.tid = Some(tk >> 6);
            d.layer_sync = Some(tk & 0x20 != 0);
        }
        if b1 & 0x10 != 0 {
            d.key_idx = Some(tk & 0x1f);
        }
        at += 1;
    }
    d.len = at;
    Ok(d)
}

// ---------------------------------------------------------------------------------------------
// Assembler

/// A frame whose packets all arrived, descriptors stripped.
#[derive(Debug, Clone)]
pub struct AssembledFrame {
    /// The frame's RTP timestamp.
    pub timestamp: u32,
    /// Number of packets it came in.
    pub packets: usize,
    /// The VP8 frame.
    pub data: Vec<u8>,
}

/// A frame the assembler gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbandonedFrame {
    /// The frame's RTP timestamp.
    pub timestamp: u32,
    /// Packets that did arrive.
    pub packets: usize,
    /// Whether it was one of ours, when its first packet arrived and tells.
    pub ours: Option<bool>,
}

/// What one packet did to the assembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketStatus {
    /// The first packet seen of a frame.
    NewFrame,
    /// Another packet of a frame in progress.
    Added,
    /// Already had this sequence number.
    Duplicate,
    /// Its frame was already completed or abandoned.
    Late,
    /// The descriptor did not parse; the packet was dropped.
    Malformed(DescriptorError),
}

/// The result of [`FrameAssembler::push`].
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// What happened to the packet.
    pub status: PacketStatus,
    /// The frame this packet completed, if any.
    pub completed: Option<AssembledFrame>,
    /// Frames given up on because the stream moved on without them.
    pub abandoned: Vec<AbandonedFrame>,
}

#[derive(Debug)]
struct Part {
    start: bool,
    marker: bool,
    data: Bytes,
}

#[derive(Debug, Default)]
struct PendingFrame {
    parts: BTreeMap<i64, Part>,
    newest: i64,
}

impl PendingFrame {
    /// Complete when the lowest packet starts partition 0, the highest has the marker, and no
    /// sequence number in between is missing.
    fn is_complete(&self) -> bool {
        let (Some((first, fp)), Some((last, lp))) = (self.parts.first_key_value(), self.parts.last_key_value()) else {
            return false;
        };
        fp.start && lp.marker && (last - first + 1) as usize == self.parts.len()
    }

    fn ours(&self) -> Option<bool> {
        let (_, first) = self.parts.first_key_value()?;
        if !first.start {
            return None;
        }
        // The trailer is at the end; the start of a frame of ours is the start of a clip frame.
        Some(builtin_clip().recognizes(&first.data))
    }
}

/// How far (in packets) the stream may move past a frame before it is abandoned. Generous
/// enough for NACK recovery at test bitrates (~80 packets a second).
const ABANDON_AFTER_PACKETS: i64 = 512;
/// At most this many frames in progress; the oldest is abandoned beyond it.
const MAX_PENDING_FRAMES: usize = 64;
/// How many finished (completed or abandoned) timestamps are remembered to spot late packets.
const FINISHED_MEMORY: usize = 256;

/// Groups VP8 RTP packets into frames.
///
/// Packets are grouped by RTP timestamp and ordered by unwrapped sequence number, so reordering
/// and the 16-bit wrap are handled. A frame is emitted once complete (see
/// [`PushOutcome::completed`]); a frame the stream has moved [`ABANDON_AFTER_PACKETS`] past, or
/// the oldest beyond [`MAX_PENDING_FRAMES`], is abandoned. Packets for finished frames
/// (retransmissions arriving late, duplicates) are reported as [`PacketStatus::Late`].
#[derive(Debug, Default)]
pub struct FrameAssembler {
    seq: Unwrapper,
    highest: Option<i64>,
    pending: HashMap<u32, PendingFrame>,
    finished: VecDeque<u32>,
    finished_set: HashSet<u32>,
}

impl FrameAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames currently in progress.
    pub fn pending_frames(&self) -> usize {
        self.pending.len()
    }

    fn finish(&mut self, timestamp: u32) {
        if self.finished_set.insert(timestamp) {
            self.finished.push_back(timestamp);
            if self.finished.len() > FINISHED_MEMORY {
                if let Some(old) = self.finished.pop_front() {
                    self.finished_set.remove(&old);
                }
            }
        }
    }

    /// Takes one packet.
    pub fn push(&mut self, packet: &rtp::Packet) -> PushOutcome {
        let mut outcome = PushOutcome { status: PacketStatus::Added, completed: None, abandoned: Vec::new() };
        let descriptor = match parse_descriptor(&packet.payload) {
            Ok(d) => d,
            Err(e) => {
                outcome.status = PacketStatus::Malformed(e);
                return outcome;
            }
        };
        let seq = self.seq.unwrap_u16(packet.header.sequence_number);
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        let ts = packet.header.timestamp;

        if self.finished_set.contains(&ts) {
            outcome.status = PacketStatus::Late;
        } else {
            let frame = self.pending.entry(ts).or_insert_with(|| {
                outcome.status = PacketStatus::NewFrame;
                PendingFrame { parts: BTreeMap::new(), newest: seq }
            });
            if frame.parts.contains_key(&seq) {
                outcome.status = PacketStatus::Duplicate;
            } else {
                frame.newest = frame.newest.max(seq);
                frame.parts.insert(
                    seq,
                    Part {
                        start: descriptor.start && descriptor.partition_id == 0,
                        marker: packet.header.marker,
                        data: packet.payload.slice(descriptor.len..),
                    },
                );
                if frame.is_complete() {
                    let frame = self.pending.remove(&ts).expect("frame was just found");
                    let mut data = Vec::with_capacity(frame.parts.values().map(|p| p.data.len()).sum());
                    for part in frame.parts.values() {
                        data.extend_from_slice(&part.data);
                    }
                    outcome.completed = Some(AssembledFrame { timestamp: ts, packets: frame.parts.len(), data });
                    self.finish(ts);
                }
            }
        }
        outcome.abandoned = self.abandon_stale();
        outcome
    }

    fn abandon_stale(&mut self) -> Vec<AbandonedFrame> {
        let Some(highest) = self.highest else {
            return Vec::new();
        };
        let mut stale: Vec<(i64, u32)> = self
            .pending
            .iter()
            .filter(|(_, f)| highest - f.newest > ABANDON_AFTER_PACKETS)
            .map(|(&ts, f)| (f.newest, ts))
            .collect();
        if self.pending.len() - stale.len() > MAX_PENDING_FRAMES {
            let mut rest: Vec<(i64, u32)> = self
                .pending
                .iter()
                .filter(|(_, f)| highest - f.newest <= ABANDON_AFTER_PACKETS)
                .map(|(&ts, f)| (f.newest, ts))
                .collect();
            rest.sort_unstable();
            let excess = rest.len() - MAX_PENDING_FRAMES;
            stale.extend(rest.into_iter().take(excess));
        }
        stale.sort_unstable();
        let mut out = Vec::with_capacity(stale.len());
        for (_, ts) in stale {
            if let Some(frame) = self.pending.remove(&ts) {
                out.push(AbandonedFrame { timestamp: ts, packets: frame.parts.len(), ours: frame.ours() });
                self.finish(ts);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Receiver statistics

/// Counters of one received video track; see [`VideoReceiver`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoStats {
    /// RTP packets received (duplicates and malformed ones included).
    pub packets_received: u64,
    /// Packets whose VP8 descriptor did not parse.
    pub packets_malformed: u64,
    /// Frames of which at least one packet arrived.
    pub frames_received: u64,
    /// Our frames, complete and intact.
    pub frames_complete: u64,
    /// Our frames, complete but damaged.
    pub frames_corrupt: u64,
    /// Frames without our magic (not checkable).
    pub frames_foreign: u64,
    /// Frames that never completed; see [`VideoReceiver`] for how they are counted.
    pub frames_missing: u64,
    /// Our frames received intact more than once (same counter, same layer): a mix-up upstream.
    pub frames_duplicate: u64,
    /// Our frames received again from another simulcast layer: at an up-switch the new layer's keyframe can
    /// carry the picture just shown from the old one (both layers encode every picture). Not an error.
    pub frames_repeated_at_switch: u64,
    /// Complete frames (ours or foreign) that are keyframes.
    pub keyframes: u64,
    /// Median one-way delay of our complete frames, in ms.
    pub delay_ms_p50: Option<f64>,
    /// 99th-percentile one-way delay of our complete frames, in ms.
    pub delay_ms_p99: Option<f64>,
    /// Our intact frames per simulcast layer (index = spatial layer: q, h, f).
    pub frames_per_layer: [u64; 3],
    /// The layer of the newest intact frame (in RTP timestamp order); `None` without simulcast.
    pub current_layer: Option<u8>,
    /// The largest keyframe width and height among our intact frames.
    pub max_width: Option<u16>,
    /// See `max_width`.
    pub max_height: Option<u16>,
    /// Intact frames whose counter is below the counter of the intact frame before them in RTP
    /// timestamp order (or above the one after): the stream went backwards. (A repeated counter
    /// is a duplicate, see `frames_duplicate`.)
    pub counter_backwards: u64,
    /// Runs of missing counters between the lowest and highest intact counter (a run of 5
    /// missing frames is one gap; their number is in `frames_missing`).
    pub counter_gaps: u64,
    /// Every change of (layer, width) between consecutive newest intact frames (a frame older
    /// than one already received, completed late, changes nothing), starting with the first
    /// intact frame; at most [`MAX_LAYER_CHANGES`] are kept.
    pub layer_changes: Vec<LayerChange>,
    /// Freezes: a frame shown more than `max(3 × mean, mean + 150 ms)` after the one before it (the mean frame
    /// interval over the recent frames, freezes left out): the definition of WebRTC's `freezeCount`, so numbers
    /// compare with a browser's `getStats`. A frame is shown as a decoder would: in counter order, a delta frame
    /// once the frame before it is (a frame repaired late by a retransmission holds up those behind it), a keyframe
    /// at once (what was missing before it is skipped).
    pub freezes: u64,
    /// The longest such gap, ms (0 without a freeze).
    pub freeze_longest_ms: u64,
    /// All freeze gaps added up, ms.
    pub freeze_total_ms: u64,
    /// Each freeze: when it ended (the late frame completed, µs since the UNIX epoch) and how long it was (ms); at
    /// most [`MAX_LAYER_CHANGES`] are kept.
    pub freeze_list: Vec<(u64, u64)>,
    /// Loss episodes recovered from (see [`crate::recovery`] for the definition).
    pub recoveries: u64,
    /// Each recovery, at most [`crate::recovery::MAX_RECOVERIES`].
    pub recovery_list: Vec<Recovery>,
    /// Whether a loss episode was still open at the end.
    pub recovery_unfinished: bool,
    /// Received bitrate, loss and frame delay per 500 ms bin.
    pub series: Series,
}

/// One entry of [`VideoStats::layer_changes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerChange {
    /// When the first frame of the new layer completed, µs since the UNIX epoch.
    pub at_us: u64,
    /// Its frame counter.
    pub counter: u32,
    /// The layer from its trailer (`None`: not a simulcast layer).
    pub layer: Option<u8>,
    /// The width of the stream from then on, if a keyframe told: from the layer's last keyframe
    /// (simulcast), else from the last keyframe.
    pub width: Option<u16>,
}

/// How many layer changes a [`VideoReceiver`] keeps.
pub const MAX_LAYER_CHANGES: usize = 1000;
/// How many recent frames (by RTP timestamp) the backwards check compares against.
const ORDER_MEMORY: usize = 512;

/// Receives one video track: assembles frames, verifies them and keeps [`VideoStats`].
///
/// Missing frames are counted from gaps in the frame counter when the track carries our frames
/// (`last - first + 1 - intact - corrupt`, so a frame lost entirely still counts), and as the
/// number of abandoned incomplete frames when it carries only foreign frames (there a frame
/// none of whose packets arrived is not seen). Delay is `receive time - send time` of each
/// intact frame, so sender and receiver must share a clock (they do on one machine).
///
/// Simulcast: each intact frame's layer is read from its trailer, and the stream's size from
/// its last keyframe; changes of either between the newest frames (RTP order) go to
/// [`VideoStats::layer_changes`]. The frame counter
/// is shared by a track's layers, so a subscriber that the SFU switches between layers still
/// sees one counter sequence: [`VideoStats::counter_backwards`] checks that it only moves
/// forward in RTP timestamp order (the order the SFU sent the frames in, whatever order they
/// completed in after retransmissions).
#[derive(Debug, Default)]
pub struct VideoReceiver {
    assembler: FrameAssembler,
    stats: VideoStats,
    counters: HashSet<u32>,
    /// The layers (bit `i` = layer `i`, bit 7 = no layer) each counter was received on.
    counter_layers: HashMap<u32, u8>,
    counter_min: Option<u32>,
    counter_max: Option<u32>,
    abandoned: u64,
    delays: DelaySamples,
    /// Unwrapped RTP timestamp → counter of recent intact frames.
    order: BTreeMap<i64, u32>,
    ts: Unwrapper,
    /// Size from the newest intact keyframe (streams without simulcast).
    size: Option<(u16, u16)>,
    /// Per simulcast layer: the size from its last intact keyframe.
    layer_sizes: [Option<(u16, u16)>; 3],
    last: Option<(Option<u8>, Option<u16>)>,
    /// When the frame shown last was shown (µs since the UNIX epoch).
    last_shown_us: Option<u64>,
    /// The counter a decoder would show next (`None` before the first keyframe).
    next_shown: Option<u32>,
    /// Complete frames waiting for the frame before them, by counter: their send time, µs.
    waiting: BTreeMap<u32, u64>,
    /// Loss episodes and recovery times, from the frames as shown.
    recovery: RecoveryTracker,
    /// Bitrate, loss and delay per 500 ms.
    series: SeriesBinner,
    /// Smoothed interval between newest intact frames, ms (freezes left out).
    mean_interval_ms: Option<f64>,
}

impl VideoReceiver {
    /// A receiver with empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one RTP packet received at `now_us` (µs since the UNIX epoch) and returns the
    /// verdict on the frame it completed, if any.
    pub fn handle_packet(&mut self, packet: &rtp::Packet, now_us: u64) -> Option<FrameCheck> {
        self.stats.packets_received += 1;
        self.series.on_packet(packet.header.sequence_number, 12 + packet.payload.len(), now_us);
        let outcome = self.assembler.push(packet);
        match outcome.status {
            PacketStatus::NewFrame => self.stats.frames_received += 1,
            PacketStatus::Malformed(_) => self.stats.packets_malformed += 1,
            PacketStatus::Added | PacketStatus::Duplicate | PacketStatus::Late => {}
        }
        self.abandoned += outcome.abandoned.len() as u64;
        let frame = outcome.completed?;
        let check = verify_frame(&frame.data);
        match check {
            FrameCheck::Complete(info) => {
                let bit = info.layer.map_or(0x80, |l| 1u8 << l.min(MAX_LAYER));
                let layers = self.counter_layers.entry(info.counter).or_insert(0);
                let other_layer = *layers != 0 && *layers & bit == 0;
                *layers |= bit;
                if self.counters.insert(info.counter) {
                    self.stats.frames_complete += 1;
                    self.on_decodable_order(info.counter, info.keyframe, info.send_time_us, now_us);
                } else if other_layer {
                    self.stats.frames_repeated_at_switch += 1;
                } else {
                    self.stats.frames_duplicate += 1;
                }
                self.counter_min = Some(self.counter_min.map_or(info.counter, |m| m.min(info.counter)));
                self.counter_max = Some(self.counter_max.map_or(info.counter, |m| m.max(info.counter)));
                if info.keyframe {
                    self.stats.keyframes += 1;
                }
                let delay_ms = (now_us as f64 - info.send_time_us as f64) / 1000.0;
                self.delays.record(delay_ms);
                self.series.on_frame_delay(delay_ms, now_us);
                self.on_intact(&info, frame.timestamp, now_us);
            }
            FrameCheck::Corrupt(_) => self.stats.frames_corrupt += 1,
            FrameCheck::Foreign { keyframe } => {
                self.stats.frames_foreign += 1;
                if keyframe {
                    self.stats.keyframes += 1;
                }
            }
        }
        Some(check)
    }

    fn on_intact(&mut self, info: &FrameInfo, timestamp: u32, now_us: u64) {
        if let Some(layer) = info.layer {
            self.stats.frames_per_layer[usize::from(layer.min(MAX_LAYER))] += 1;
        }
        if let Some((w, h)) = info.size {
            self.stats.max_width = Some(self.stats.max_width.map_or(w, |m| m.max(w)));
            self.stats.max_height = Some(self.stats.max_height.map_or(h, |m| m.max(h)));
            if let Some(layer) = info.layer {
                // Even when it completed late: the layer's delta frames that follow need it.
                self.layer_sizes[usize::from(layer.min(MAX_LAYER))] = Some((w, h));
            }
        }
        let ts = self.ts.unwrap_u32(timestamp);
        // Only the newest frame (in RTP order) says what is being received now: an older one that
        // completed late (a retransmission) is from before the current layer.
        let newest = self.order.last_key_value().is_none_or(|(last, _)| ts > *last);
        if newest {
            self.stats.current_layer = info.layer;
            if let Some(size) = info.size {
                self.size = Some(size);
            }
            let size = match info.layer {
                Some(layer) => self.layer_sizes[usize::from(layer.min(MAX_LAYER))],
                None => self.size,
            };
            let now = (info.layer, size.map(|(w, _)| w));
            if self.last != Some(now) {
                self.last = Some(now);
                if self.stats.layer_changes.len() < MAX_LAYER_CHANGES {
                    self.stats.layer_changes.push(LayerChange {
                        at_us: now_us,
                        counter: info.counter,
                        layer: info.layer,
                        width: now.1,
                    });
                }
            }
        }
        let before = self.order.range(..ts).next_back().map(|(_, c)| *c);
        let after = self.order.range(ts + 1..).next().map(|(_, c)| *c);
        // Equal counters are duplicates (counted as such), not a step backwards.
        if before.is_some_and(|b| b > info.counter) || after.is_some_and(|a| a < info.counter) {
            self.stats.counter_backwards += 1;
        }
        self.order.insert(ts, info.counter);
        while self.order.len() > ORDER_MEMORY {
            self.order.pop_first();
        }
    }

    /// A frame completed for the first time: shown now if a decoder could (see [`VideoStats::freezes`]), with
    /// those waiting behind it; otherwise it waits.
    fn on_decodable_order(&mut self, counter: u32, keyframe: bool, send_us: u64, now_us: u64) {
        /// Frames held waiting for a gap that no keyframe ends (bounded; the oldest give way).
        const MAX_WAITING: usize = 1024;
        match self.next_shown {
            Some(next) if counter < next => return, // behind what is shown (skipped by a keyframe)
            Some(next) if counter == next || keyframe => {}
            None if keyframe => {}
            _ => {
                self.waiting.insert(counter, send_us);
                if self.waiting.len() > MAX_WAITING {
                    self.waiting.pop_first();
                }
                return;
            }
        }
        self.on_shown(counter, send_us, now_us);
        let mut next = counter.wrapping_add(1);
        // Whatever waited behind it goes now; what waited for a frame before it never shows.
        self.waiting.retain(|c, _| *c > counter);
        while let Some((c, send_us)) = self.waiting.first_key_value().map(|(c, s)| (*c, *s)).filter(|(c, _)| *c == next)
        {
            self.waiting.pop_first();
            self.on_shown(c, send_us, now_us);
            next = next.wrapping_add(1);
        }
        self.next_shown = Some(next);
    }

    /// Frame `counter` (sent at `send_us`) shown at `now_us`: a freeze if it came too long after the one before.
    fn on_shown(&mut self, counter: u32, send_us: u64, now_us: u64) {
        self.recovery.on_shown(counter, send_us, now_us);
        if let Some(prev) = self.last_shown_us {
            let gap = now_us.saturating_sub(prev) as f64 / 1000.0;
            match self.mean_interval_ms {
                Some(mean) if gap > (3.0 * mean).max(mean + 150.0) => {
                    let ms = gap.round() as u64;
                    self.stats.freezes += 1;
                    self.stats.freeze_longest_ms = self.stats.freeze_longest_ms.max(ms);
                    self.stats.freeze_total_ms += ms;
                    if self.stats.freeze_list.len() < MAX_LAYER_CHANGES {
                        self.stats.freeze_list.push((now_us, ms));
                    }
                }
                // About the last 16 intervals.
                Some(mean) => self.mean_interval_ms = Some(mean + (gap - mean) / 16.0),
                None => self.mean_interval_ms = Some(gap),
            }
        }
        self.last_shown_us = Some(now_us);
    }

    /// The counters so far.
    pub fn stats(&self) -> VideoStats {
        let mut stats = self.stats.clone();
        let mut counters: Vec<u32> = self.counters.iter().copied().collect();
        counters.sort_unstable();
        stats.counter_gaps = counters.windows(2).filter(|w| w[1] - w[0] > 1).count() as u64;
        stats.frames_missing = match (self.counter_min, self.counter_max) {
            (Some(min), Some(max)) => {
                (u64::from(max - min) + 1).saturating_sub(self.counters.len() as u64 + self.stats.frames_corrupt)
            }
            _ => self.abandoned,
        };
        stats.delay_ms_p50 = self.delays.percentile(50.0);
        stats.recoveries = self.recovery.count;
        stats.recovery_list = self.recovery.recoveries.clone();
        // Also open: complete frames waiting for a gap no keyframe has ended (nothing shown after it yet).
        stats.recovery_unfinished = self.recovery.unrecovered() || !self.waiting.is_empty();
        stats.series = self.series.series();
        stats.delay_ms_p99 = self.delays.percentile(99.0);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_TIME_BASE: u64 = 1_700_000_000_000_000;

    /// A frame of ours: clip frame 0 (the keyframe) or 1 (a delta frame), `len` bytes.
    fn frame(counter: u32, keyframe: bool, len: usize) -> Vec<u8> {
        let clip = Vp8Clip::builtin();
        let vp8 = clip.frame(if keyframe { 0 } else { 1 });
        build_frame(vp8, counter, SEND_TIME_BASE + u64::from(counter), len)
    }

    /// Recomputes the CRC after a deliberate edit, so that a later check has to catch it.
    fn fix_crc(mut f: Vec<u8>) -> Vec<u8> {
        let n = f.len();
        let crc = crc32(&f[..n - 4]);
        f[n - 4..].copy_from_slice(&crc.to_be_bytes());
        f
    }

    #[test]
    fn crc32_known_vector() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn builtin_clip_is_the_fixture() {
        let clip = Vp8Clip::builtin();
        assert_eq!((clip.width(), clip.height(), clip.len()), (320, 180, 150));
        assert!(BUILTIN_IVF.len() <= 200_000, "{} bytes: keep the committed fixture small", BUILTIN_IVF.len());
        let keyframes: Vec<usize> = (0..clip.len()).filter(|&i| clip.is_keyframe(i)).collect();
        assert_eq!(keyframes, vec![0], "one keyframe, at frame 0");
        for i in 0..clip.len() {
            let header = parse_vp8_header(clip.frame(i)).expect("valid VP8 frame");
            assert!(header.show_frame, "frame {i} shown");
            assert_eq!(header.keyframe, clip.is_keyframe(i));
            assert!(clip.recognizes(clip.frame(i)), "frame {i} recognised");
        }
        assert_eq!(parse_vp8_header(clip.frame(0)).unwrap().size, Some((320, 180)));
        // The clip's own bitrate (~140 kbps) leaves room for filler at the default 700 kbps.
        let kbps = clip.total_bytes() as f64 * 8.0 / 5.0 / 1000.0;
        assert!((50.0..=300.0).contains(&kbps), "{kbps} kbps");
    }

    #[test]
    fn vp8_header_table() {
        let clip = Vp8Clip::builtin();
        let key = clip.frame(0).to_vec();
        let delta = clip.frame(1).to_vec();
        let mut bad_start_code = key.clone();
        bad_start_code[4] ^= 0x40;
        let mut bad_version = delta.clone();
        bad_version[0] |= 0x08; // version 4
        let mut hidden = delta.clone();
        hidden[0] &= !0x10;
        // (keyframe, show_frame, size) or not a valid header
        type Parsed = Option<(bool, bool, Option<(u16, u16)>)>;
        let cases: Vec<(&str, Vec<u8>, Parsed)> = vec![
            ("keyframe", key.clone(), Some((true, true, Some((320, 180))))),
            ("delta", delta.clone(), Some((false, true, None))),
            ("hidden delta", hidden, Some((false, false, None))),
            ("keyframe without start code", bad_start_code, None),
            ("version 4", bad_version, None),
            ("keyframe cut inside its header", key[..9].to_vec(), None),
            // The first partition ends past the data.
            ("delta cut", delta[..20].to_vec(), None),
            ("two bytes", vec![0x31, 0x00], None),
            ("empty", vec![], None),
        ];
        for (name, data, expected) in cases {
            let got = parse_vp8_header(&data).map(|h| (h.keyframe, h.show_frame, h.size));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn clip_from_ivf_table() {
        let clip = Vp8Clip::builtin();
        let key = clip.frame(0).to_vec();
        let delta = clip.frame(1).to_vec();
        let header = ivf::IvfHeader {
            fourcc: *b"VP80",
            width: 320,
            height: 180,
            timebase_den: 30,
            timebase_num: 1,
            declared_frames: 0,
        };
        let file = |fourcc: &[u8; 4], frames: &[&[u8]]| {
            let frames: Vec<(u64, &[u8])> = frames.iter().enumerate().map(|(i, f)| (i as u64, *f)).collect();
            ivf::write(&ivf::IvfHeader { fourcc: *fourcc, ..header }, &frames)
        };
        let mut hidden = delta.clone();
        hidden[0] &= !0x10;
        let mut other_size = key.clone();
        other_size[6..8].copy_from_slice(&640u16.to_le_bytes());
        let good = file(b"VP80", &[&key, &delta, &delta]);
        let cases: Vec<(&str, Vec<u8>, Result<usize, ClipError>)> = vec![
            ("key, delta, delta", good.clone(), Ok(3)),
            ("a second keyframe", file(b"VP80", &[&key, &delta, &key]), Ok(3)),
            ("the builtin fixture", BUILTIN_IVF.to_vec(), Ok(150)),
            (
                "truncated file",
                good[..good.len() - 10].to_vec(),
                Err(ClipError::Ivf(IvfError::TruncatedFrame {
                    index: 2,
                    declared: delta.len(),
                    available: delta.len() - 10,
                })),
            ),
            (
                "not IVF",
                b"RIFF0000WEBPVP8 not an ivf file at all".to_vec(),
                Err(ClipError::Ivf(IvfError::BadSignature(*b"RIFF"))),
            ),
            ("VP9", file(b"VP90", &[&key]), Err(ClipError::NotVp8(*b"VP90"))),
            ("no frames", file(b"VP80", &[]), Err(ClipError::Empty)),
            ("starts with a delta frame", file(b"VP80", &[&delta, &key]), Err(ClipError::FirstNotKeyframe)),
            ("hidden frame", file(b"VP80", &[&key, &hidden]), Err(ClipError::Hidden(1))),
            ("garbage frame", file(b"VP80", &[&key, &[0x00, 0x01]]), Err(ClipError::BadFrame(1))),
            ("size changes", file(b"VP80", &[&key, &delta, &other_size]), Err(ClipError::SizeChanged(2))),
        ];
        for (name, data, expected) in cases {
            let got = Vp8Clip::from_ivf(Bytes::from(data)).map(|c| c.len());
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn frame_layout() {
        let clip = Vp8Clip::builtin();
        let key = frame(7, true, 5000);
        let vp8 = clip.frame(0);
        assert_eq!(key.len(), 5000);
        assert_eq!(&key[..vp8.len()], &vp8[..], "starts with the clip frame, unchanged");
        assert_eq!(key[0] & 1, 0, "keyframe bit (inverse) of the real frame");
        let t = &key[5000 - TRAILER_LEN..];
        assert_eq!(&t[..4], b"CRFR");
        assert_eq!(be_u32(&t[4..8]), 7);
        assert_eq!(u64::from_be_bytes(t[8..16].try_into().unwrap()), SEND_TIME_BASE + 7);
        assert_eq!(be_u32(&t[16..20]) as usize, vp8.len());
        assert_eq!(be_u32(&t[20..24]), 5000);
        assert_eq!(be_u32(&t[24..28]), crc32(&key[..5000 - 4]));

        // Too-small sizes are raised to the clip frame plus the trailer (no filler); huge ones
        // are capped.
        let delta = clip.frame(1);
        assert_eq!(frame(1, false, 0).len(), delta.len() + TRAILER_LEN);
        assert_eq!(frame(1, false, usize::MAX).len(), MAX_FRAME_LEN);
        assert!(matches!(
            verify_frame(&frame(1, false, 0)),
            FrameCheck::Complete(FrameInfo { len, .. }) if len == delta.len() + TRAILER_LEN
        ));
    }

    #[test]
    fn verify_verdicts() {
        let clip = Vp8Clip::builtin();
        let (key_len, delta_len) = (clip.frame(0).len(), clip.frame(1).len());
        let good_key = frame(3, true, 3000);
        let good_delta = frame(4, false, 2000);
        let flip = |mut f: Vec<u8>, at: usize| {
            f[at] ^= 0x40;
            f
        };
        let trailer = 2000 - TRAILER_LEN;
        // Counter of frame 5, everything else of frame 4 with a fixed-up CRC: the filler check
        // must catch the mix-up.
        let mut mixed = frame(5, false, 2000);
        mixed[trailer + 4..trailer + 8].copy_from_slice(&4u32.to_be_bytes());
        let mixed = fix_crc(mixed);
        // The first half of frame 4 and the second half of frame 6, same length.
        let mut spliced = good_delta[..1000].to_vec();
        spliced.extend_from_slice(&frame(6, false, 2000)[1000..]);
        // A packet's worth of bytes lost in the middle.
        let mut middle_lost = good_delta[..600].to_vec();
        middle_lost.extend_from_slice(&good_delta[1100..]);
        // A sender bug: the VP8 length runs into the trailer, CRC fixed up.
        let mut vp8_len_too_big = good_delta.clone();
        vp8_len_too_big[trailer + 16..trailer + 20].copy_from_slice(&1990u32.to_be_bytes());
        let vp8_len_too_big = fix_crc(vp8_len_too_big);
        // A sender bug: the keyframe's start code damaged, CRC fixed up.
        let bad_start_code = fix_crc(flip(good_key.clone(), 4));
        // A browser's keyframe and delta frame: real VP8, no trailer.
        let mut foreign_key = vec![0x50, 0x12, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        foreign_key.extend(std::iter::repeat_n(0xAB, 300));
        let mut foreign_delta = vec![0x31, 0x00, 0x00];
        foreign_delta.extend((0..500u32).map(|i| (i * 7) as u8));

        let cases: Vec<(&str, Vec<u8>, FrameCheck)> = vec![
            (
                "intact keyframe",
                good_key.clone(),
                FrameCheck::Complete(FrameInfo {
                    counter: 3,
                    keyframe: true,
                    send_time_us: SEND_TIME_BASE + 3,
                    len: 3000,
                    vp8_len: key_len,
                    layer: None,
                    size: Some((320, 180)),
                }),
            ),
            (
                "intact delta",
                good_delta.clone(),
                FrameCheck::Complete(FrameInfo {
                    counter: 4,
                    keyframe: false,
                    send_time_us: SEND_TIME_BASE + 4,
                    len: 2000,
                    vp8_len: delta_len,
                    layer: None,
                    size: None,
                }),
            ),
            (
                "intact, no filler",
                frame(9, false, 0),
                FrameCheck::Complete(FrameInfo {
                    counter: 9,
                    keyframe: false,
                    send_time_us: SEND_TIME_BASE + 9,
                    len: delta_len + TRAILER_LEN,
                    vp8_len: delta_len,
                    layer: None,
                    size: None,
                }),
            ),
            ("VP8 tag byte flipped", flip(good_delta.clone(), 0), FrameCheck::Corrupt(Corruption::Checksum)),
            (
                "VP8 data byte flipped",
                flip(good_delta.clone(), delta_len - 1),
                FrameCheck::Corrupt(Corruption::Checksum),
            ),
            ("filler byte flipped", flip(good_delta.clone(), 1000), FrameCheck::Corrupt(Corruption::Checksum)),
            ("counter flipped", flip(good_delta.clone(), trailer + 7), FrameCheck::Corrupt(Corruption::Checksum)),
            ("send time flipped", flip(good_delta.clone(), trailer + 12), FrameCheck::Corrupt(Corruption::Checksum)),
            ("VP8 length flipped", flip(good_delta.clone(), trailer + 19), FrameCheck::Corrupt(Corruption::Checksum)),
            ("checksum flipped", flip(good_delta.clone(), 1999), FrameCheck::Corrupt(Corruption::Checksum)),
            (
                "frame length flipped",
                flip(good_delta.clone(), trailer + 22),
                FrameCheck::Corrupt(Corruption::LengthMismatch { declared: 2000 ^ 0x4000, actual: 2000 }),
            ),
            ("trailer magic damaged", flip(good_delta.clone(), trailer), FrameCheck::Corrupt(Corruption::Truncated)),
            ("end cut off", good_delta[..1500].to_vec(), FrameCheck::Corrupt(Corruption::Truncated)),
            ("keyframe end cut off", good_key[..2999].to_vec(), FrameCheck::Corrupt(Corruption::Truncated)),
            (
                "bytes lost in the middle",
                middle_lost,
                FrameCheck::Corrupt(Corruption::LengthMismatch { declared: 2000, actual: 1500 }),
            ),
            (
                "start cut off",
                good_delta[100..].to_vec(),
                FrameCheck::Corrupt(Corruption::LengthMismatch { declared: 2000, actual: 1900 }),
            ),
            ("bytes appended", [&good_delta[..], &[0u8; 10][..]].concat(), FrameCheck::Corrupt(Corruption::Truncated)),
            (
                "two frames in one",
                [&good_key[..], &good_delta[..]].concat(),
                FrameCheck::Corrupt(Corruption::LengthMismatch { declared: 2000, actual: 5000 }),
            ),
            ("halves of two frames", spliced, FrameCheck::Corrupt(Corruption::Checksum)),
            ("frames mixed up", mixed, FrameCheck::Corrupt(Corruption::Filler)),
            ("VP8 length beyond the frame", vp8_len_too_big, FrameCheck::Corrupt(Corruption::BadHeader)),
            ("keyframe start code damaged", bad_start_code, FrameCheck::Corrupt(Corruption::BadHeader)),
            ("too short to tell", good_key[..12].to_vec(), FrameCheck::Foreign { keyframe: true }),
            ("foreign keyframe", foreign_key, FrameCheck::Foreign { keyframe: true }),
            ("foreign delta", foreign_delta, FrameCheck::Foreign { keyframe: false }),
            ("a bare clip frame", clip.frame(1).to_vec(), FrameCheck::Corrupt(Corruption::Truncated)),
            ("empty", vec![], FrameCheck::Foreign { keyframe: false }),
        ];
        for (name, data, expected) in cases {
            assert_eq!(verify_frame(&data), expected, "{name}");
        }
    }

    #[test]
    fn descriptor_round_trip() {
        let mut p = Vp8Packetizer::new(0x1234, 96, 65534, 0x7ffe);
        let f = frame(0, true, 2500);
        let packets = p.packetize(&f, 9000);
        assert_eq!(packets.len(), 3);
        let seqs: Vec<u16> = packets.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(seqs, vec![65534, 65535, 0]);
        for (i, pkt) in packets.iter().enumerate() {
            assert!(pkt.payload.len() <= MAX_RTP_PAYLOAD);
            assert_eq!(pkt.header.timestamp, 9000);
            assert_eq!(pkt.header.ssrc, 0x1234);
            assert_eq!(pkt.header.payload_type, 96);
            assert_eq!(pkt.header.marker, i == 2);
            let d = parse_descriptor(&pkt.payload).unwrap();
            assert_eq!(d.start, i == 0);
            assert_eq!(d.partition_id, 0);
            assert_eq!(d.picture_id, Some(0x7ffe));
            assert_eq!(d.tl0_pic_idx, Some(0));
            assert_eq!(d.tid, Some(0));
            assert_eq!(d.layer_sync, Some(true));
            assert_eq!(d.key_idx, None);
            assert_eq!(d.len, DESCRIPTOR_LEN);
        }
        // Picture id wraps at 15 bits, TL0PICIDX advances per frame.
        let next = p.packetize(&frame(1, false, 100), 12000);
        let d = parse_descriptor(&next[0].payload).unwrap();
        assert_eq!(d.picture_id, Some(0x7fff));
        assert_eq!(d.tl0_pic_idx, Some(1));
        let next = p.packetize(&frame(2, false, 100), 15000);
        assert_eq!(parse_descriptor(&next[0].payload).unwrap().picture_id, Some(0));
    }

    #[test]
    fn descriptor_parse_table() {
        // (bytes, Ok((start, picture id, tl0picidx, tid, descriptor length)) or the error)
        type Parsed = (bool, Option<u16>, Option<u8>, Option<u8>, usize);
        let cases: &[(&[u8], Result<Parsed, DescriptorError>)] = &[
            (&[0x10, 0xAA], Ok((true, None, None, None, 1))),
            (&[0x90, 0x80, 0x05, 0xAA], Ok((true, Some(5), None, None, 3))),
            (&[0x80, 0x80, 0x81, 0x02], Ok((false, Some(0x102), None, None, 4))),
            (&[0x90, 0xC0, 0x81, 0x02, 0x09], Ok((true, Some(0x102), Some(9), None, 5))),
            (&[0x90, 0xE0, 0x81, 0x02, 0x09, 0x60], Ok((true, Some(0x102), Some(9), Some(1), 6))),
            (&[0x90, 0x10, 0x1f], Ok((true, None, None, None, 3))),
            (&[], Err(DescriptorError::Truncated)),
            (&[0x90], Err(DescriptorError::Truncated)),
            (&[0x90, 0x80, 0x81], Err(DescriptorError::Truncated)),
            (&[0x90, 0xE0, 0x81, 0x02, 0x09], Err(DescriptorError::Truncated)),
        ];
        for (bytes, expected) in cases {
            let got = parse_descriptor(bytes).map(|d| (d.start, d.picture_id, d.tl0_pic_idx, d.tid, d.len));
            assert_eq!(&got, expected, "{bytes:02x?}");
        }
    }

    /// Packets of consecutive frames with sequence numbers starting at `first_seq`.
    fn stream(first_seq: u16, frames: &[(u32, bool, usize)]) -> Vec<rtp::Packet> {
        let mut p = Vp8Packetizer::new(1, 96, first_seq, 0);
        frames.iter().flat_map(|&(counter, key, len)| p.packetize(&frame(counter, key, len), counter * 3000)).collect()
    }

    /// Feeds packets (in the given order of indices) and returns the stats.
    fn run(packets: &[rtp::Packet], order: &[usize]) -> VideoStats {
        let mut rx = VideoReceiver::new();
        for &i in order {
            rx.handle_packet(&packets[i], 1_700_000_000_010_000);
        }
        rx.stats()
    }

    #[test]
    fn assembler_scenarios() {
        // Three frames of 3 packets each (2500 bytes) = 9 packets.
        let frames = [(0, true, 2500), (1, false, 2500), (2, false, 2500)];
        let in_order: Vec<usize> = (0..9).collect();
        struct Case {
            name: &'static str,
            first_seq: u16,
            order: Vec<usize>,
            corrupt: Option<usize>,
            expect: (u64, u64, u64, u64), // complete, corrupt, missing, received
        }
        let cases = vec![
            Case { name: "in order", first_seq: 100, order: in_order.clone(), corrupt: None, expect: (3, 0, 0, 3) },
            Case {
                name: "seq wraps inside a frame",
                first_seq: 65532,
                order: in_order.clone(),
                corrupt: None,
                expect: (3, 0, 0, 3),
            },
            Case {
                name: "reordered",
                first_seq: 65533,
                order: vec![2, 0, 1, 5, 4, 3, 8, 6, 7],
                corrupt: None,
                expect: (3, 0, 0, 3),
            },
            Case {
                name: "frames interleaved",
                first_seq: 7,
                order: vec![0, 3, 1, 4, 2, 5, 6, 7, 8],
                corrupt: None,
                expect: (3, 0, 0, 3),
            },
            Case {
                name: "missing middle packet",
                first_seq: 1,
                order: vec![0, 1, 2, 3, 5, 6, 7, 8],
                corrupt: None,
                expect: (2, 0, 1, 3),
            },
            Case {
                name: "whole frame lost",
                first_seq: 1,
                order: vec![0, 1, 2, 6, 7, 8],
                corrupt: None,
                expect: (2, 0, 1, 2),
            },
            Case {
                name: "missing first packet",
                first_seq: 65535,
                order: vec![0, 1, 2, 4, 5, 6, 7, 8],
                corrupt: None,
                expect: (2, 0, 1, 3),
            },
            Case {
                name: "missing last packet",
                first_seq: 9,
                order: vec![0, 1, 2, 3, 4, 6, 7, 8],
                corrupt: None,
                expect: (2, 0, 1, 3),
            },
            Case {
                name: "duplicates",
                first_seq: 9,
                order: vec![0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 8],
                corrupt: None,
                expect: (3, 0, 0, 3),
            },
            Case {
                name: "corrupted byte",
                first_seq: 3,
                order: in_order.clone(),
                corrupt: Some(4),
                expect: (2, 1, 0, 3),
            },
        ];
        for case in cases {
            let mut packets = stream(case.first_seq, &frames);
            if let Some(i) = case.corrupt {
                let mut bytes = packets[i].payload.to_vec();
                bytes[500] ^= 0x01;
                packets[i].payload = Bytes::from(bytes);
            }
            let s = run(&packets, &case.order);
            assert_eq!(
                (s.frames_complete, s.frames_corrupt, s.frames_missing, s.frames_received),
                case.expect,
                "{}: {s:?}",
                case.name
            );
            assert_eq!(s.packets_received, case.order.len() as u64, "{}", case.name);
        }
    }

    #[test]
    fn keyframes_and_delay() {
        let packets = stream(0, &[(0, true, 5000), (1, false, 100), (2, true, 5000)]);
        let mut rx = VideoReceiver::new();
        for p in &packets {
            rx.handle_packet(p, 1_700_000_000_002_500);
        }
        let s = rx.stats();
        assert_eq!(s.keyframes, 2);
        assert_eq!(s.frames_complete, 3);
        // send times are base + counter µs; receive is base + 2500 µs
        assert_eq!(s.delay_ms_p50, Some(2.499));
        assert_eq!(s.delay_ms_p99, Some(2.5));
        assert_eq!(s.frames_duplicate, 0);
    }

    #[test]
    fn freezes_follow_webrtcs_definition() {
        // Our frames every 33 ms. Frames 60..72 never arrive and 72 is a keyframe: shown 429 ms after 59, a freeze.
        // Frames 100..104 neither, 104 a keyframe: 165 ms, under mean + 150 ms, not a freeze. Frame 120 arrives
        // 300 ms late (a retransmission): 121..129 wait for it and show with it, 333 ms after 119: a freeze. Frames
        // 140..150 never arrive and no keyframe follows: what comes after never shows.
        let mut p = Vp8Packetizer::new(1, 96, 0, 0);
        let mut rx = VideoReceiver::new();
        let keyframe = |c: u32| c == 0 || c == 72 || c == 104;
        let mut arrivals: Vec<(u64, u32)> = (0..160u32)
            .filter(|c| !(60..72).contains(c) && !(100..104).contains(c) && !(140..150).contains(c))
            .map(|c| (u64::from(c) * 33_000 + if c == 120 { 300_000 } else { 0 }, c))
            .collect();
        arrivals.sort_unstable();
        for (at, counter) in arrivals {
            for pkt in p.packetize(&frame(counter, keyframe(counter), 1200), counter * 3000) {
                rx.handle_packet(&pkt, SEND_TIME_BASE + at);
            }
        }
        let s = rx.stats();
        assert_eq!(s.frames_complete, 160 - 12 - 4 - 10);
        assert_eq!((s.freezes, s.freeze_longest_ms, s.freeze_total_ms), (2, 429, 429 + 333), "{s:?}");
        assert_eq!(
            s.freeze_list,
            vec![(SEND_TIME_BASE + 72 * 33_000, 429), (SEND_TIME_BASE + 120 * 33_000 + 300_000, 333)]
        );
    }

    #[test]
    fn recovery_times_and_series_from_packets() {
        // Frames every 33 ms, each arriving 10 ms after it was sent; 60..72 lost (72 a keyframe): recovered at 72,
        // 13 frames after 59. 120 arrives 300 ms late; 121..125 wait for it: 120..124 are late (> 10 + 150 ms),
        // 125 is not and starts the good run: 333 ms after 119. 190..195 lost, no keyframe after: unfinished.
        let mut p = Vp8Packetizer::new(1, 96, 0, 0);
        let mut rx = VideoReceiver::new();
        // Every frame is packetized (sequence numbers run on), the lost ones are not delivered.
        let mut arrivals: Vec<(u64, u32, Vec<rtp::Packet>)> = (0..200u32)
            .map(|c| {
                let vp8 = Vp8Clip::builtin().frame(if c == 0 || c == 72 { 0 } else { 1 }).clone();
                let data = build_frame(&vp8, c, SEND_TIME_BASE + u64::from(c) * 33_000, 1200);
                (u64::from(c) * 33_000 + 10_000 + if c == 120 { 300_000 } else { 0 }, c, p.packetize(&data, c * 3000))
            })
            .filter(|(_, c, _)| !(60..72).contains(c) && !(190..195).contains(c))
            .collect();
        arrivals.sort_by_key(|(at, c, _)| (*at, *c));
        for (at, _, packets) in arrivals {
            for pkt in packets {
                rx.handle_packet(&pkt, SEND_TIME_BASE + at);
            }
        }
        let s = rx.stats();
        let ms: Vec<u64> = s.recovery_list.iter().map(|r| r.ms).collect();
        assert_eq!((s.recoveries, ms, s.recovery_unfinished), (2, vec![429, 333], true), "{:?}", s.recovery_list);
        assert_eq!(s.recovery_list[0].start_us, SEND_TIME_BASE + 59 * 33_000 + 10_000);
        // Bins of 500 ms from the first arrival's bin: frames 60..71 were due in bin 3 (1980..2000 ms) and 4; their
        // loss shows when 72 arrives (bin 4).
        let series = &s.series;
        assert_eq!((series.start_ms, series.bin_ms), (SEND_TIME_BASE / 1000, 500));
        assert_eq!(series.kbps.len(), 14, "199 × 33 + 10 ms = 6577 ms: 14 bins");
        assert_eq!(series.loss_pct[0], Some(0.0));
        assert!(series.loss_pct[4].unwrap() > 50.0, "{:?}", series.loss_pct);
        assert_eq!(series.delay_ms_p50[0], Some(10.0));
        assert!(series.kbps[1] > 250.0, "15 frames of 1200 bytes: ~300 kbit/s: {:?}", series.kbps);
    }

    #[test]
    fn foreign_frames() {
        let mut foreign = vec![0x50, 0x12, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        foreign.extend(std::iter::repeat_n(0x11, 2000));
        let mut p = Vp8Packetizer::new(1, 96, 0, 0);
        let mut packets = p.packetize(&foreign, 0);
        packets.extend(p.packetize(&foreign[..800], 3000));
        let mut rx = VideoReceiver::new();
        // Drop the last packet of the first frame: it never completes.
        for (i, pkt) in packets.iter().enumerate() {
            if i != 1 {
                rx.handle_packet(pkt, 0);
            }
        }
        let s = rx.stats();
        assert_eq!((s.frames_foreign, s.frames_complete, s.frames_received), (1, 0, 2));
        // Not abandoned yet: the stream has not moved far enough past it.
        assert_eq!(s.frames_missing, 0);
        let more: Vec<rtp::Packet> = (0..600).flat_map(|i| p.packetize(&foreign[..200], 6000 + i * 3000)).collect();
        for pkt in &more {
            rx.handle_packet(pkt, 0);
        }
        let s = rx.stats();
        assert_eq!(s.frames_missing, 1);
        assert_eq!(s.frames_foreign, 601);
    }

    #[test]
    fn late_packets_after_abandon_are_ignored() {
        let packets = stream(0, &[(0, false, 2500)]);
        let mut asm = FrameAssembler::new();
        asm.push(&packets[0]);
        // Jump far ahead with a new frame to abandon the first one.
        let mut p = Vp8Packetizer::new(1, 96, 2000, 5);
        let far = p.packetize(&frame(9, false, 100), 90_000);
        let out = asm.push(&far[0]);
        assert_eq!(out.completed.map(|f| f.timestamp), Some(90_000));
        assert_eq!(out.abandoned, vec![AbandonedFrame { timestamp: 0, packets: 1, ours: Some(true) }]);
        assert_eq!(asm.push(&packets[1]).status, PacketStatus::Late);
        assert_eq!(asm.pending_frames(), 0);
    }

    #[test]
    fn source_rate_and_frames() {
        let config = VideoConfig::default();
        let mut src = VideoSource::new(config.clone(), 1000);
        let frames: Vec<SourceFrame> = (0..120).map(|i| src.next_frame(i)).collect();
        assert_eq!(frames[1].rtp_timestamp - frames[0].rtp_timestamp, 3000);
        assert_eq!(frames[0].rtp_timestamp, 1000);
        let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
        let kbps = bytes as f64 * 8.0 / 4.0 / 1000.0; // 120 frames = 4 s
        assert!((600.0..=800.0).contains(&kbps), "{kbps} kbps");
        let clip = Vp8Clip::builtin();
        for f in &frames {
            let vp8 = clip.frame(f.clip_frame);
            assert_eq!(&f.data[..vp8.len()], &vp8[..], "frame {}", f.counter);
            assert!(
                matches!(verify_frame(&f.data), FrameCheck::Complete(i)
                    if i.counter == f.counter && i.keyframe == f.keyframe && i.vp8_len == vp8.len()
                        && i.send_time_us == u64::from(f.counter)),
                "frame {}",
                f.counter
            );
        }
        assert_eq!(src.frame_interval(), Duration::from_secs(1) / 30);

        // Below the clip's own bitrate, frames carry no filler: the clip's rate it is.
        let mut low = VideoSource::new(VideoConfig { bitrate_bps: 10_000, ..VideoConfig::default() }, 0);
        for _ in 0..200 {
            let f = low.next_frame(0);
            assert_eq!(f.data.len(), clip.frame(f.clip_frame).len() + TRAILER_LEN);
        }
    }

    #[test]
    fn source_keyframes() {
        let clip_len = Vp8Clip::builtin().len() as u32; // 150
        struct Case {
            name: &'static str,
            interval: Duration,
            fps: u32,
            /// Frame counters before which a keyframe is requested.
            requests: &'static [u32],
            frames: u32,
            keyframes: Vec<u32>,
        }
        let cases = vec![
            Case {
                name: "every 2 s",
                interval: Duration::from_secs(2),
                fps: 30,
                requests: &[],
                frames: 200,
                keyframes: vec![0, 60, 120, 180],
            },
            Case {
                name: "interval longer than the clip: the clip's end brings them",
                interval: Duration::from_secs(60),
                fps: 30,
                requests: &[],
                frames: 2 * clip_len + 10,
                keyframes: vec![0, clip_len, 2 * clip_len],
            },
            Case {
                name: "requests restart the interval",
                interval: Duration::from_secs(1),
                fps: 30,
                requests: &[10, 11, 50],
                frames: 100,
                keyframes: vec![0, 10, 11, 41, 50, 80],
            },
            Case {
                name: "request at the very first frame",
                interval: Duration::from_secs(1),
                fps: 10,
                requests: &[0, 1],
                frames: 25,
                keyframes: vec![0, 1, 11, 21],
            },
            Case {
                name: "every frame",
                interval: Duration::ZERO,
                fps: 30,
                requests: &[],
                frames: 5,
                keyframes: vec![0, 1, 2, 3, 4],
            },
        ];
        for case in cases {
            let mut src = VideoSource::new(
                VideoConfig { fps: case.fps, keyframe_interval: case.interval, ..VideoConfig::default() },
                0,
            );
            let mut keyframes = Vec::new();
            let mut expected_clip_frame = 0;
            for counter in 0..case.frames {
                if case.requests.contains(&counter) {
                    src.request_keyframe();
                }
                let f = src.next_frame(0);
                assert_eq!(f.counter, counter, "{}", case.name);
                if f.keyframe {
                    keyframes.push(counter);
                    expected_clip_frame = 0;
                }
                // Always in clip order from the last keyframe: a valid decoding order.
                assert_eq!(f.clip_frame, expected_clip_frame, "{}: {counter}", case.name);
                assert_eq!(f.keyframe, f.clip_frame == 0, "{}: {counter}", case.name);
                assert_eq!(f.data[0] & 1 == 0, f.keyframe, "{}: {counter}", case.name);
                expected_clip_frame += 1;
            }
            assert_eq!(keyframes, case.keyframes, "{}", case.name);
        }
    }

    #[test]
    fn source_with_a_short_clip() {
        let builtin = Vp8Clip::builtin();
        let (key, delta) = (builtin.frame(0), builtin.frame(1));
        let header = ivf::IvfHeader {
            fourcc: *b"VP80",
            width: 320,
            height: 180,
            timebase_den: 30,
            timebase_num: 1,
            declared_frames: 0,
        };
        let data = ivf::write(&header, &[(0, key), (1, delta), (2, delta)]);
        let clip = Arc::new(Vp8Clip::from_ivf(Bytes::from(data)).unwrap());
        let mut src = VideoSource::with_clip(VideoConfig::default(), clip, 0);
        let order: Vec<(usize, bool)> = (0..7)
            .map(|_| {
                let f = src.next_frame(0);
                (f.clip_frame, f.keyframe)
            })
            .collect();
        assert_eq!(order, vec![(0, true), (1, false), (2, false), (0, true), (1, false), (2, false), (0, true)]);
        assert_eq!(src.clip().len(), 3);
    }

    /// Writes what the source sends (trailers, filler, keyframe requests and restarts
    /// included) as IVF and checks with `vpxdec --md5` that libvpx decodes it exactly like the
    /// same clip frames without trailers. Needs vpx-tools (`scripts/make-vp8-fixture.sh`
    /// installs them): `cargo test -p media-tests -- --ignored source_output_decodes`.
    #[test]
    #[ignore = "needs vpxdec (Debian vpx-tools)"]
    fn source_output_decodes_like_the_clip() {
        let mut src = VideoSource::new(VideoConfig::default(), 0);
        let mut sent = Vec::new();
        let mut bare = Vec::new();
        for counter in 0..400u32 {
            if counter == 77 || counter == 200 {
                src.request_keyframe();
            }
            let f = src.next_frame(u64::from(counter));
            bare.push(Vp8Clip::builtin().frame(f.clip_frame).to_vec());
            sent.push(f.data);
        }
        let header = ivf::IvfHeader {
            fourcc: *b"VP80",
            width: 320,
            height: 180,
            timebase_den: 30,
            timebase_num: 1,
            declared_frames: 0,
        };
        let dir = std::env::temp_dir().join(format!("media-tests-vp8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let md5 = |name: &str, frames: &[Vec<u8>]| {
            let list: Vec<(u64, &[u8])> = frames.iter().enumerate().map(|(i, f)| (i as u64, &f[..])).collect();
            let path = dir.join(name);
            std::fs::write(&path, ivf::write(&header, &list)).unwrap();
            let out = std::process::Command::new("vpxdec")
                .args(["--md5", "--i420"])
                .arg(&path)
                .output()
                .expect("vpxdec runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let with_trailers = md5("sent.ivf", &sent);
        let without = md5("bare.ivf", &bare);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(with_trailers, without);
    }

    #[test]
    fn layer_byte_and_size_patch() {
        let clip = Vp8Clip::builtin();
        let mut key = clip.frame(0).to_vec();
        assert!(patch_keyframe_size(&mut key, 1280, 720));
        assert_eq!(parse_vp8_header(&key).and_then(|h| h.size), Some((1280, 720)));
        let mut delta = clip.frame(1).to_vec();
        assert!(!patch_keyframe_size(&mut delta, 1280, 720), "not a keyframe");
        assert_eq!(&delta[..], &clip.frame(1)[..]);
        assert!(!patch_keyframe_size(&mut key, 16384, 1), "14 bits");

        for (layer, expected) in [(None, None), (Some(0), Some(0)), (Some(2), Some(2)), (Some(9), Some(MAX_LAYER))] {
            let f = build_layer_frame(&key, 5, 0, 3000, layer);
            let FrameCheck::Complete(info) = verify_frame(&f) else { panic!("{layer:?} intact") };
            assert_eq!((info.layer, info.size, info.vp8_len), (expected, Some((1280, 720)), key.len()), "{layer:?}");
        }
        // Without a layer the trailer is byte for byte the pre-simulcast one.
        assert_eq!(build_layer_frame(clip.frame(1), 3, 9, 2000, None), build_frame(clip.frame(1), 3, 9, 2000));
        // A layer byte no sender writes, CRC fixed up.
        let mut bad = build_layer_frame(&key, 5, 0, 3000, Some(1));
        bad[3000 - TRAILER_LEN + 16] = 7;
        assert_eq!(verify_frame(&fix_crc(bad)), FrameCheck::Corrupt(Corruption::BadHeader));
        // A patched keyframe that lost its end is still recognised as ours.
        let f = build_layer_frame(&key, 5, 0, 3000, Some(2));
        assert_eq!(verify_frame(&f[..1500]), FrameCheck::Corrupt(Corruption::Truncated));
    }

    #[test]
    fn receiver_follows_layers_and_counter_order() {
        let sc = crate::simulcast::SimulcastConfig::default();
        let mut src = crate::simulcast::SimulcastSource::new(&sc, &VideoConfig::default(), 90_000);
        // What an SFU forwards: f for frames 0..10, q from its keyframe at 10, h from its keyframe at 20.
        let mut forwarded = Vec::new();
        for n in 0..30u32 {
            if n == 10 {
                src.request_keyframe(0);
            }
            if n == 20 {
                src.request_keyframe(1);
            }
            let want = match n {
                0..=9 => 2,
                10..=19 => 0,
                _ => 1,
            };
            let f = src.next_frames(1_000 + u64::from(n)).into_iter().find(|f| f.layer == want).unwrap();
            forwarded.push(f.frame);
        }
        forwarded.remove(25); // frames 25 and 26 lost entirely: one gap of two
        forwarded.remove(25);
        let mut p = Vp8Packetizer::new(1, 96, 65_500, 0);
        let mut packets: Vec<Vec<rtp::Packet>> =
            forwarded.iter().map(|f| p.packetize(&f.data, f.rtp_timestamp)).collect();
        // Frames 5 and 9 complete after the frames that follow them (retransmissions): completion
        // order is not RTP order, and frame 9 (f) completing after frame 10 (q) is no switch back.
        packets.swap(5, 6);
        packets.swap(9, 10);
        let mut rx = VideoReceiver::new();
        for (i, frame) in packets.iter().enumerate() {
            for pkt in frame {
                rx.handle_packet(pkt, 2_000_000 + i as u64 * 1000);
            }
        }
        let s = rx.stats();
        assert_eq!((s.frames_complete, s.frames_corrupt, s.frames_duplicate), (28, 0, 0), "{s:?}");
        assert_eq!((s.frames_missing, s.counter_gaps, s.counter_backwards), (2, 1, 0), "{s:?}");
        assert_eq!(s.frames_per_layer, [10, 8, 10]);
        assert_eq!((s.current_layer, s.max_width, s.max_height), (Some(1), Some(1280), Some(720)));
        let changes: Vec<(u32, Option<u8>, Option<u16>)> =
            s.layer_changes.iter().map(|c| (c.counter, c.layer, c.width)).collect();
        assert_eq!(changes, vec![(0, Some(2), Some(1280)), (10, Some(0), Some(320)), (20, Some(1), Some(640))]);
        assert_eq!(s.layer_changes[1].at_us, 2_009_000);

        // The same counter again, later in the stream: a duplicate. A lower one: backwards.
        let last = forwarded.last().unwrap();
        let ts = last.rtp_timestamp;
        for (counter, dts) in [(29, 3000), (25, 6000)] {
            let again = build_layer_frame(Vp8Clip::builtin().frame(1), counter, 0, 800, Some(1));
            for pkt in p.packetize(&again, ts.wrapping_add(dts)) {
                rx.handle_packet(&pkt, 3_000_000);
            }
        }
        let s = rx.stats();
        assert_eq!((s.frames_duplicate, s.counter_backwards), (1, 1), "{s:?}");

        // The newest picture again from another layer (an up-switch landing on the same picture): a repeat,
        // not a duplicate, and not backwards.
        let newest = build_layer_frame(Vp8Clip::builtin().frame(1), 40, 0, 800, Some(2));
        for pkt in p.packetize(&newest, ts.wrapping_add(9000)) {
            rx.handle_packet(&pkt, 3_100_000);
        }
        let repeat = build_layer_frame(Vp8Clip::builtin().frame(1), 40, 0, 800, Some(0));
        for pkt in p.packetize(&repeat, ts.wrapping_add(9090)) {
            rx.handle_packet(&pkt, 3_200_000);
        }
        let s = rx.stats();
        assert_eq!((s.frames_duplicate, s.frames_repeated_at_switch, s.counter_backwards), (1, 1, 1), "{s:?}");
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let good = frame(1, true, 3000);
        let mut asm = FrameAssembler::new();
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = verify_frame(&bytes);
            let _ = parse_descriptor(&bytes);
            // Our frame with a random prefix cut or a random byte set.
            let mut damaged = good[..(next() as usize % good.len())].to_vec();
            if !damaged.is_empty() {
                let i = next() as usize % damaged.len();
                damaged[i] = next() as u8;
            }
            assert!(!matches!(verify_frame(&damaged), FrameCheck::Complete(_)) || damaged.len() == good.len());
            bytes.truncate(len);
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    sequence_number: next() as u16,
                    timestamp: (next() % 8) as u32,
                    marker: next() % 2 == 0,
                    ..Default::default()
                },
                payload: Bytes::from(bytes),
            };
            let _ = asm.push(&packet);
        }
        assert!(asm.pending_frames() <= MAX_PENDING_FRAMES);
    }
}
