//! Synthetic VP8 test frames, their RTP packetizer, and the receiving assembler.
//!
//! The SFU forwards VP8 without decoding it, but it does read it: keyframe detection, picture-id
//! and TL0PICIDX rewriting and layer choice all look at the VP8 payload descriptor and frame tag.
//! A real encoder would make the client heavy and its output unverifiable, so this module sends
//! frames that are VP8 on the outside (a correct frame tag, keyframe start code and size, and a
//! full RFC 7741 descriptor on every packet) and a self-checking block on the inside:
//!
//! ```text
//! VP8 frame tag (3 bytes) [keyframe: 9d 01 2a, width, height (7 bytes)]
//! "CRFR" | counter u32 | send time u64 (µs since the UNIX epoch) | frame length u32 | filler | crc32
//! ```
//!
//! All integers in the block are big-endian. The frame length is the length of the whole frame
//! (header included). The filler is derived from the counter, and the CRC-32 (IEEE) covers
//! everything after the magic except the checksum itself, so a receiver detects corruption,
//! truncation and frames spliced together, and computes one-way delay from the send time.
//!
//! Everything here is sans-I/O: callers pass the time in and get packets or verdicts out.
//!
//! - [`VideoSource`] makes frames at a configured rate, bitrate and keyframe interval.
//! - [`Vp8Packetizer`] splits a frame into RTP packets of at most [`MAX_RTP_PAYLOAD`] bytes.
//! - [`FrameAssembler`] groups received packets back into frames.
//! - [`verify_frame`] classifies a reassembled frame as ours and intact, ours and corrupt, or
//!   foreign (a real VP8 frame, e.g. from a browser).
//! - [`VideoReceiver`] ties the last two together and keeps the counters the report shows.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use rtc::rtp;

use crate::delay::DelaySamples;
use crate::seq::Unwrapper;

/// The four bytes that mark a frame as one of ours.
pub const MAGIC: [u8; 4] = *b"CRFR";
/// Largest RTP payload (descriptor included) the packetizer emits.
pub const MAX_RTP_PAYLOAD: usize = 1100;
/// RTP clock rate of VP8.
pub const VP8_CLOCK_RATE: u32 = 90_000;
/// Length of the VP8 payload descriptor the packetizer writes (X, I with M, L, T).
pub const DESCRIPTOR_LEN: usize = 6;
/// Largest frame: the VP8 first-partition size field has 19 bits.
pub const MAX_FRAME_LEN: usize = (1 << 19) - 1;

const KEYFRAME_HEADER_LEN: usize = 10;
const DELTA_HEADER_LEN: usize = 3;
const KEYFRAME_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];
/// magic + counter + send time + length
const BLOCK_FIXED_LEN: usize = 4 + 4 + 8 + 4;
const CHECKSUM_LEN: usize = 4;

/// What the self-checking block of one frame says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Frame counter, +1 per frame sent on a track.
    pub counter: u32,
    /// Whether the VP8 frame tag marks a keyframe.
    pub keyframe: bool,
    /// Send time, microseconds since the UNIX epoch.
    pub send_time_us: u64,
    /// Length of the whole frame in bytes.
    pub len: usize,
}

/// Length of the VP8 header in front of our block.
fn header_len(keyframe: bool) -> usize {
    if keyframe {
        KEYFRAME_HEADER_LEN
    } else {
        DELTA_HEADER_LEN
    }
}

/// The smallest frame that holds the header and the block with an empty filler.
pub fn min_frame_len(keyframe: bool) -> usize {
    header_len(keyframe) + BLOCK_FIXED_LEN + CHECKSUM_LEN
}

/// Builds one frame. `info.len` is clamped to `min_frame_len(keyframe)..=MAX_FRAME_LEN`.
pub fn build_frame(info: &FrameInfo, width: u16, height: u16) -> Vec<u8> {
    let hlen = header_len(info.keyframe);
    let len = info.len.clamp(min_frame_len(info.keyframe), MAX_FRAME_LEN);
    let mut out = Vec::with_capacity(len);

    // RFC 6386 §9.1: bit 0 is the inverse keyframe flag, bits 1-3 the version, bit 4 show_frame,
    // bits 5-23 the first partition size. Our block stands in for the first partition.
    let first_partition = (len - hlen) as u32;
    let tag = u32::from(!info.keyframe) | (1 << 4) | (first_partition << 5);
    out.extend_from_slice(&tag.to_le_bytes()[..3]);
    if info.keyframe {
        out.extend_from_slice(&KEYFRAME_START_CODE);
        // 14 bits of size, 2 bits of scaling (0).
        out.extend_from_slice(&(width & 0x3fff).to_le_bytes());
        out.extend_from_slice(&(height & 0x3fff).to_le_bytes());
    }
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&info.counter.to_be_bytes());
    out.extend_from_slice(&info.send_time_us.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    let filler_len = len - out.len() - CHECKSUM_LEN;
    let mut filler = Filler::new(info.counter);
    out.extend((0..filler_len).map(|_| filler.next_byte()));
    let crc = crc32(&out[hlen + MAGIC.len()..]);
    out.extend_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(out.len(), len);
    out
}

/// Why a frame carrying our magic failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Too short to hold the block.
    Truncated,
    /// The VP8 header disagrees with the block (keyframe bit, start code, partition size).
    BadHeader,
    /// The declared frame length is not the received length.
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
    /// One of our frames (the magic is there), damaged.
    Corrupt(Corruption),
    /// A frame without our magic, e.g. from a browser: received, but not checkable.
    Foreign {
        /// The VP8 frame tag's keyframe flag (false if the frame is too short to have one).
        keyframe: bool,
    },
}

/// Classifies a complete frame (the payloads of its packets, descriptors stripped).
pub fn verify_frame(data: &[u8]) -> FrameCheck {
    let keyframe_bit = data.first().is_some_and(|b| b & 1 == 0);
    let magic_at = |offset: usize| data.get(offset..offset + MAGIC.len()) == Some(&MAGIC[..]);
    let hlen = if magic_at(KEYFRAME_HEADER_LEN) {
        KEYFRAME_HEADER_LEN
    } else if magic_at(DELTA_HEADER_LEN) {
        DELTA_HEADER_LEN
    } else {
        return FrameCheck::Foreign {
            keyframe: keyframe_bit && data.len() >= DELTA_HEADER_LEN,
        };
    };
    let keyframe = hlen == KEYFRAME_HEADER_LEN;
    if data.len() < min_frame_len(keyframe) {
        return FrameCheck::Corrupt(Corruption::Truncated);
    }
    if keyframe_bit != keyframe
        || (keyframe && data[3..6] != KEYFRAME_START_CODE)
        || (data[0] >> 1) & 0x7 != 0
        || (data[0] >> 4) & 1 != 1
    {
        return FrameCheck::Corrupt(Corruption::BadHeader);
    }
    let tag = u32::from_le_bytes([data[0], data[1], data[2], 0]);
    let first_partition = (tag >> 5) as usize;

    let block = &data[hlen..];
    let field = |at: usize, n: usize| &block[at..at + n];
    // `field(at, n)` is exactly n bytes, in range because of the minimum length checked above.
    let counter = u32::from_be_bytes(field(4, 4).try_into().expect("field is 4 bytes"));
    let send_time_us = u64::from_be_bytes(field(8, 8).try_into().expect("field is 8 bytes"));
    let declared = u32::from_be_bytes(field(16, 4).try_into().expect("field is 4 bytes")) as usize;
    if declared != data.len() {
        return FrameCheck::Corrupt(Corruption::LengthMismatch {
            declared,
            actual: data.len(),
        });
    }
    if first_partition != data.len() - hlen {
        return FrameCheck::Corrupt(Corruption::BadHeader);
    }
    let (covered, checksum) = data[hlen + MAGIC.len()..].split_at(data.len() - hlen - 8);
    // split_at left exactly the last 4 bytes.
    let checksum = u32::from_be_bytes(checksum.try_into().expect("checksum is 4 bytes"));
    if crc32(covered) != checksum {
        return FrameCheck::Corrupt(Corruption::Checksum);
    }
    let mut filler = Filler::new(counter);
    let filler_bytes = &block[BLOCK_FIXED_LEN..block.len() - CHECKSUM_LEN];
    if filler_bytes.iter().any(|&b| b != filler.next_byte()) {
        return FrameCheck::Corrupt(Corruption::Filler);
    }
    FrameCheck::Complete(FrameInfo {
        counter,
        keyframe,
        send_time_us,
        len: data.len(),
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
        Self {
            state: if seed == 0 { 1 } else { seed },
            word: [0; 4],
            used: 4,
        }
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
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
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

/// How the synthetic video track behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate in bits per second; frame sizes average to this.
    pub bitrate_bps: u32,
    /// Time between keyframes.
    pub keyframe_interval: Duration,
    /// Width written into keyframes.
    pub width: u16,
    /// Height written into keyframes.
    pub height: u16,
    /// Largest RTP payload, descriptor included ([`MAX_RTP_PAYLOAD`] by default).
    pub max_rtp_payload: usize,
}

impl Default for VideoConfig {
    /// 1280×720 at 30 fps, 700 kbps, a keyframe every 2 s, RTP payloads of at most 1100 bytes.
    fn default() -> Self {
        Self {
            fps: 30,
            bitrate_bps: 700_000,
            keyframe_interval: Duration::from_secs(2),
            width: 1280,
            height: 720,
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
    /// The frame's RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// The frame itself.
    pub data: Vec<u8>,
}

/// Makes the frames of one synthetic video track.
///
/// Keyframes are four times the average frame size and delta frames vary ±15 % around the rest
/// of the budget, so the stream averages `bitrate_bps` over each keyframe interval.
#[derive(Debug, Clone)]
pub struct VideoSource {
    config: VideoConfig,
    counter: u32,
    since_keyframe: Option<u32>,
    force_keyframe: bool,
    timestamp_base: u32,
}

impl VideoSource {
    /// A source whose first frame has counter 0, is a keyframe, and has RTP timestamp
    /// `timestamp_base`.
    pub fn new(config: VideoConfig, timestamp_base: u32) -> Self {
        Self {
            config: VideoConfig {
                fps: config.fps.max(1),
                ..config
            },
            counter: 0,
            since_keyframe: None,
            force_keyframe: false,
            timestamp_base,
        }
    }

    /// Time between two frames.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.config.fps
    }

    /// Makes the next frame a keyframe (e.g. after a PLI).
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    fn frames_per_keyframe(&self) -> u32 {
        let n = (self.config.keyframe_interval.as_secs_f64() * f64::from(self.config.fps)).round();
        (n as u32).max(1)
    }

    /// Size of the frame with this counter.
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
        (len.round() as usize).clamp(min_frame_len(keyframe), MAX_FRAME_LEN)
    }

    /// Makes the next frame, stamping `send_time_us` into it.
    pub fn next_frame(&mut self, send_time_us: u64) -> SourceFrame {
        let counter = self.counter;
        let keyframe = self.force_keyframe
            || match self.since_keyframe {
                None => true,
                Some(n) => n + 1 >= self.frames_per_keyframe(),
            };
        self.since_keyframe = if keyframe {
            Some(0)
        } else {
            self.since_keyframe.map(|n| n + 1)
        };
        self.force_keyframe = false;
        self.counter = self.counter.wrapping_add(1);
        let info = FrameInfo {
            counter,
            keyframe,
            send_time_us,
            len: self.frame_len(counter, keyframe),
        };
        let ticks = u64::from(counter) * u64::from(VP8_CLOCK_RATE) / u64::from(self.config.fps);
        SourceFrame {
            counter,
            keyframe,
            rtp_timestamp: self.timestamp_base.wrapping_add(ticks as u32),
            data: build_frame(&info, self.config.width, self.config.height),
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
        let (Some((first, fp)), Some((last, lp))) =
            (self.parts.first_key_value(), self.parts.last_key_value())
        else {
            return false;
        };
        fp.start && lp.marker && (last - first + 1) as usize == self.parts.len()
    }

    fn ours(&self) -> Option<bool> {
        let (_, first) = self.parts.first_key_value()?;
        if !first.start {
            return None;
        }
        let d = &first.data;
        let at = |o: usize| d.get(o..o + MAGIC.len()) == Some(&MAGIC[..]);
        Some(at(KEYFRAME_HEADER_LEN) || at(DELTA_HEADER_LEN))
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
        let mut outcome = PushOutcome {
            status: PacketStatus::Added,
            completed: None,
            abandoned: Vec::new(),
        };
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
                PendingFrame {
                    parts: BTreeMap::new(),
                    newest: seq,
                }
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
                    let mut data =
                        Vec::with_capacity(frame.parts.values().map(|p| p.data.len()).sum());
                    for part in frame.parts.values() {
                        data.extend_from_slice(&part.data);
                    }
                    outcome.completed = Some(AssembledFrame {
                        timestamp: ts,
                        packets: frame.parts.len(),
                        data,
                    });
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
                out.push(AbandonedFrame {
                    timestamp: ts,
                    packets: frame.parts.len(),
                    ours: frame.ours(),
                });
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
    /// Our frames received intact more than once (same counter): a mix-up upstream.
    pub frames_duplicate: u64,
    /// Complete frames (ours or foreign) that are keyframes.
    pub keyframes: u64,
    /// Median one-way delay of our complete frames, in ms.
    pub delay_ms_p50: Option<f64>,
    /// 99th-percentile one-way delay of our complete frames, in ms.
    pub delay_ms_p99: Option<f64>,
}

/// Receives one video track: assembles frames, verifies them and keeps [`VideoStats`].
///
/// Missing frames are counted from gaps in the frame counter when the track carries our frames
/// (`last - first + 1 - intact - corrupt`, so a frame lost entirely still counts), and as the
/// number of abandoned incomplete frames when it carries only foreign frames (there a frame
/// none of whose packets arrived is not seen). Delay is `receive time - send time` of each
/// intact frame, so sender and receiver must share a clock (they do on one machine).
#[derive(Debug, Default)]
pub struct VideoReceiver {
    assembler: FrameAssembler,
    stats: VideoStats,
    counters: HashSet<u32>,
    counter_min: Option<u32>,
    counter_max: Option<u32>,
    abandoned: u64,
    delays: DelaySamples,
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
                if self.counters.insert(info.counter) {
                    self.stats.frames_complete += 1;
                } else {
                    self.stats.frames_duplicate += 1;
                }
                self.counter_min = Some(
                    self.counter_min
                        .map_or(info.counter, |m| m.min(info.counter)),
                );
                self.counter_max = Some(
                    self.counter_max
                        .map_or(info.counter, |m| m.max(info.counter)),
                );
                if info.keyframe {
                    self.stats.keyframes += 1;
                }
                let delay_ms = (now_us as f64 - info.send_time_us as f64) / 1000.0;
                self.delays.record(delay_ms);
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

    /// The counters so far.
    pub fn stats(&self) -> VideoStats {
        let mut stats = self.stats.clone();
        stats.frames_missing = match (self.counter_min, self.counter_max) {
            (Some(min), Some(max)) => (u64::from(max - min) + 1)
                .saturating_sub(self.counters.len() as u64 + self.stats.frames_corrupt),
            _ => self.abandoned,
        };
        stats.delay_ms_p50 = self.delays.percentile(50.0);
        stats.delay_ms_p99 = self.delays.percentile(99.0);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(counter: u32, keyframe: bool, len: usize) -> Vec<u8> {
        build_frame(
            &FrameInfo {
                counter,
                keyframe,
                send_time_us: 1_700_000_000_000_000 + u64::from(counter),
                len,
            },
            1280,
            720,
        )
    }

    #[test]
    fn crc32_known_vector() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn frame_layout() {
        let key = frame(7, true, 5000);
        assert_eq!(key.len(), 5000);
        assert_eq!(key[0] & 1, 0, "keyframe bit is inverse");
        assert_eq!(&key[3..6], &KEYFRAME_START_CODE);
        assert_eq!(u16::from_le_bytes([key[6], key[7]]), 1280);
        assert_eq!(u16::from_le_bytes([key[8], key[9]]), 720);
        assert_eq!(&key[10..14], b"CRFR");
        let tag = u32::from_le_bytes([key[0], key[1], key[2], 0]);
        assert_eq!((tag >> 5) as usize, 5000 - 10);
        assert_eq!((tag >> 4) & 1, 1, "show_frame");

        let delta = frame(8, false, 100);
        assert_eq!(delta[0] & 1, 1);
        assert_eq!(&delta[3..7], b"CRFR");
        assert_eq!(u32::from_be_bytes(delta[7..11].try_into().unwrap()), 8);

        // Too-small sizes are raised to the minimum.
        assert_eq!(frame(1, true, 0).len(), min_frame_len(true));
        assert_eq!(frame(1, false, 0).len(), min_frame_len(false));
    }

    #[test]
    fn verify_verdicts() {
        let good_key = frame(3, true, 3000);
        let good_delta = frame(4, false, 2000);
        let mutate = |mut f: Vec<u8>, at: usize| {
            f[at] ^= 0x40;
            f
        };
        let truncated = good_delta[..1500].to_vec();
        let mut mixed = frame(5, false, 2000);
        // Counter of frame 5, everything else of frame 4 with a fixed-up CRC: the filler check
        // must catch the mix-up.
        mixed[7..11].copy_from_slice(&4u32.to_be_bytes());
        let crc = crc32(&mixed[7..mixed.len() - 4]);
        let n = mixed.len();
        mixed[n - 4..].copy_from_slice(&crc.to_be_bytes());
        let mut flipped_key_bit = good_key.clone();
        flipped_key_bit[0] |= 1;
        // A VP8 keyframe without our magic (like a browser's).
        let mut foreign_key = vec![0x50, 0x12, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        foreign_key.extend(std::iter::repeat_n(0xAB, 300));

        let cases: Vec<(&str, Vec<u8>, FrameCheck)> = vec![
            (
                "intact keyframe",
                good_key.clone(),
                FrameCheck::Complete(FrameInfo {
                    counter: 3,
                    keyframe: true,
                    send_time_us: 1_700_000_000_000_003,
                    len: 3000,
                }),
            ),
            (
                "intact delta",
                good_delta.clone(),
                FrameCheck::Complete(FrameInfo {
                    counter: 4,
                    keyframe: false,
                    send_time_us: 1_700_000_000_000_004,
                    len: 2000,
                }),
            ),
            (
                "filler byte flipped",
                mutate(good_delta.clone(), 1000),
                FrameCheck::Corrupt(Corruption::Checksum),
            ),
            (
                "checksum byte flipped",
                mutate(good_delta.clone(), 1999),
                FrameCheck::Corrupt(Corruption::Checksum),
            ),
            (
                "send time flipped",
                mutate(good_delta.clone(), 12),
                FrameCheck::Corrupt(Corruption::Checksum),
            ),
            (
                "truncated",
                truncated,
                FrameCheck::Corrupt(Corruption::LengthMismatch {
                    declared: 2000,
                    actual: 1500,
                }),
            ),
            (
                "frames mixed up",
                mixed,
                FrameCheck::Corrupt(Corruption::Filler),
            ),
            (
                "keyframe bit flipped",
                flipped_key_bit,
                FrameCheck::Corrupt(Corruption::BadHeader),
            ),
            (
                "start code damaged",
                mutate(good_key.clone(), 4),
                FrameCheck::Corrupt(Corruption::BadHeader),
            ),
            (
                "partition size damaged",
                mutate(good_key.clone(), 1),
                FrameCheck::Corrupt(Corruption::BadHeader),
            ),
            (
                "just the header",
                good_key[..12].to_vec(),
                FrameCheck::Foreign { keyframe: true },
            ),
            (
                "foreign keyframe",
                foreign_key,
                FrameCheck::Foreign { keyframe: true },
            ),
            (
                "foreign delta",
                vec![0x31, 0x00, 0x00, 1, 2, 3, 4, 5],
                FrameCheck::Foreign { keyframe: false },
            ),
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
        assert_eq!(
            parse_descriptor(&next[0].payload).unwrap().picture_id,
            Some(0)
        );
    }

    #[test]
    fn descriptor_parse_table() {
        // (bytes, Ok((start, picture id, tl0picidx, tid, descriptor length)) or the error)
        type Parsed = (bool, Option<u16>, Option<u8>, Option<u8>, usize);
        let cases: &[(&[u8], Result<Parsed, DescriptorError>)] = &[
            (&[0x10, 0xAA], Ok((true, None, None, None, 1))),
            (
                &[0x90, 0x80, 0x05, 0xAA],
                Ok((true, Some(5), None, None, 3)),
            ),
            (
                &[0x80, 0x80, 0x81, 0x02],
                Ok((false, Some(0x102), None, None, 4)),
            ),
            (
                &[0x90, 0xC0, 0x81, 0x02, 0x09],
                Ok((true, Some(0x102), Some(9), None, 5)),
            ),
            (
                &[0x90, 0xE0, 0x81, 0x02, 0x09, 0x60],
                Ok((true, Some(0x102), Some(9), Some(1), 6)),
            ),
            (&[0x90, 0x10, 0x1f], Ok((true, None, None, None, 3))),
            (&[], Err(DescriptorError::Truncated)),
            (&[0x90], Err(DescriptorError::Truncated)),
            (&[0x90, 0x80, 0x81], Err(DescriptorError::Truncated)),
            (
                &[0x90, 0xE0, 0x81, 0x02, 0x09],
                Err(DescriptorError::Truncated),
            ),
        ];
        for (bytes, expected) in cases {
            let got = parse_descriptor(bytes)
                .map(|d| (d.start, d.picture_id, d.tl0_pic_idx, d.tid, d.len));
            assert_eq!(&got, expected, "{bytes:02x?}");
        }
    }

    /// Packets of consecutive frames with sequence numbers starting at `first_seq`.
    fn stream(first_seq: u16, frames: &[(u32, bool, usize)]) -> Vec<rtp::Packet> {
        let mut p = Vp8Packetizer::new(1, 96, first_seq, 0);
        frames
            .iter()
            .flat_map(|&(counter, key, len)| p.packetize(&frame(counter, key, len), counter * 3000))
            .collect()
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
            Case {
                name: "in order",
                first_seq: 100,
                order: in_order.clone(),
                corrupt: None,
                expect: (3, 0, 0, 3),
            },
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
                (
                    s.frames_complete,
                    s.frames_corrupt,
                    s.frames_missing,
                    s.frames_received
                ),
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
        assert_eq!(
            (s.frames_foreign, s.frames_complete, s.frames_received),
            (1, 0, 2)
        );
        // Not abandoned yet: the stream has not moved far enough past it.
        assert_eq!(s.frames_missing, 0);
        let more: Vec<rtp::Packet> = (0..600)
            .flat_map(|i| p.packetize(&foreign[..200], 6000 + i * 3000))
            .collect();
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
        assert_eq!(
            out.abandoned,
            vec![AbandonedFrame {
                timestamp: 0,
                packets: 1,
                ours: Some(true)
            }]
        );
        assert_eq!(asm.push(&packets[1]).status, PacketStatus::Late);
        assert_eq!(asm.pending_frames(), 0);
    }

    #[test]
    fn source_rate_and_keyframes() {
        let config = VideoConfig::default();
        let mut src = VideoSource::new(config.clone(), 1000);
        let frames: Vec<SourceFrame> = (0..120).map(|i| src.next_frame(i)).collect();
        let keys: Vec<u32> = frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.counter)
            .collect();
        assert_eq!(keys, vec![0, 60]);
        assert_eq!(frames[1].rtp_timestamp - frames[0].rtp_timestamp, 3000);
        assert_eq!(frames[0].rtp_timestamp, 1000);
        let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
        let kbps = bytes as f64 * 8.0 / 4.0 / 1000.0; // 120 frames = 4 s
        assert!((600.0..=800.0).contains(&kbps), "{kbps} kbps");
        for f in &frames {
            assert!(
                matches!(verify_frame(&f.data), FrameCheck::Complete(i) if i.counter == f.counter && i.keyframe == f.keyframe)
            );
        }
        src.request_keyframe();
        assert!(src.next_frame(0).keyframe);
        assert!(!src.next_frame(0).keyframe);
        assert_eq!(src.frame_interval(), Duration::from_secs(1) / 30);
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
            assert!(
                !matches!(verify_frame(&damaged), FrameCheck::Complete(_))
                    || damaged.len() == good.len()
            );
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
