//! Keyframe detection on RTP payloads, per codec.
//!
//! A subscriber that starts receiving a video track in the middle of the stream can only decode from a keyframe on,
//! so a down-track holds video back until the first packet of a keyframe. This module answers "does this RTP
//! payload start a keyframe?" for the codecs the SFU forwards, by reading only the payload descriptor or NAL
//! header — the SFU never decodes media. Codecs it cannot inspect return [`KeyframeStart::Unknown`], and the
//! caller forwards them as they come.

use str0m::format::Codec;

/// Answer of [`starts_keyframe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeStart {
    /// The payload is the first packet of a keyframe.
    Yes,
    /// The payload is not the start of a keyframe.
    No,
    /// This codec is not inspected; treat every packet as decodable.
    Unknown,
}

/// Does this RTP payload start a keyframe? See the module doc.
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> KeyframeStart {
    let yes = |b: bool| if b { KeyframeStart::Yes } else { KeyframeStart::No };
    match codec {
        Codec::Vp8 => yes(vp8_starts_keyframe(payload)),
        Codec::H264 => yes(h264_starts_keyframe(payload)),
        Codec::Vp9 => yes(vp9_starts_keyframe(payload)),
        _ => KeyframeStart::Unknown,
    }
}

/// RFC 7741: skip the payload descriptor; on the first packet of a partition (S=1, PID=0) the VP8 frame tag's
/// lowest bit is 0 for a keyframe.
fn vp8_starts_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let x = b0 & 0x80 != 0;
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !s || pid != 0 {
        return false;
    }
    let mut i = 1;
    if x {
        let Some(&ext) = p.get(i) else { return false };
        i += 1;
        if ext & 0x80 != 0 {
            // Picture id, 7 or 15 bits.
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    p.get(i).is_some_and(|tag| tag & 0x01 == 0)
}

/// Width and height from the first packet of a VP8 keyframe (RFC 6386 §9.1: after the 3-byte frame tag, the start
/// code `9d 01 2a` and two little-endian 14-bit sizes), or `None` for any other packet.
pub fn vp8_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    if !vp8_starts_keyframe(p) {
        return None;
    }
    let b0 = p[0];
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let ext = *p.get(i)?;
        i += 1;
        if ext & 0x80 != 0 {
            i += if p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1;
        }
        if ext & 0x30 != 0 {
            i += 1;
        }
    }
    let h = p.get(i..i + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((w, ht))
}

/// RFC 6184: an IDR slice (5) or an SPS (7) in a single NAL unit, inside a STAP-A, or at the start of an FU-A.
fn h264_starts_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let is_key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    match b0 & 0x1f {
        1..=23 => is_key(b0 & 0x1f),
        24 => {
            // STAP-A: (2-byte size, NAL)*
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if let Some(&h) = p.get(i + 2) {
                    if is_key(h & 0x1f) {
                        return true;
                    }
                }
                i += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        _ => false,
    }
}

/// VP9 payload descriptor (draft-ietf-payload-vp9): B=1 (start of frame) and P=0 (not inter-predicted).
fn vp9_starts_keyframe(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x08 != 0 && b & 0x40 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_sizes() {
        let key_720p = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02];
        assert_eq!(vp8_keyframe_size(&key_720p), Some((1280, 720)));
        let mut delta = key_720p;
        delta[4] = 0x11;
        assert_eq!(vp8_keyframe_size(&delta), None, "delta frame");
        let mut no_start_code = key_720p;
        no_start_code[7] = 0;
        assert_eq!(vp8_keyframe_size(&no_start_code), None);
        assert_eq!(vp8_keyframe_size(&key_720p[..9]), None, "truncated");
    }

    #[test]
    fn table() {
        let cases: &[(&str, Codec, &[u8], KeyframeStart)] = &[
            ("vp8 key, no ext", Codec::Vp8, &[0x10, 0x00, 0x00, 0x00], KeyframeStart::Yes),
            ("vp8 delta, no ext", Codec::Vp8, &[0x10, 0x01, 0x00, 0x00], KeyframeStart::No),
            ("vp8 key, 15-bit picture id", Codec::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x10], KeyframeStart::Yes),
            (
                "vp8 key, pic id + tl0 + tid",
                Codec::Vp8,
                &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x10],
                KeyframeStart::Yes,
            ),
            (
                "vp8 delta, pic id + tl0 + tid",
                Codec::Vp8,
                &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x11],
                KeyframeStart::No,
            ),
            ("vp8 continuation packet", Codec::Vp8, &[0x80, 0x80, 0x81, 0x23, 0x10], KeyframeStart::No),
            ("vp8 truncated", Codec::Vp8, &[0x90, 0x80], KeyframeStart::No),
            ("vp8 empty", Codec::Vp8, &[], KeyframeStart::No),
            ("h264 idr single nal", Codec::H264, &[0x65, 0x88], KeyframeStart::Yes),
            ("h264 non-idr single nal", Codec::H264, &[0x41, 0x9a], KeyframeStart::No),
            (
                "h264 stap-a with sps",
                Codec::H264,
                &[0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce],
                KeyframeStart::Yes,
            ),
            ("h264 stap-a truncated", Codec::H264, &[0x18, 0x00], KeyframeStart::No),
            ("h264 fu-a start of idr", Codec::H264, &[0x7c, 0x85, 0x00], KeyframeStart::Yes),
            ("h264 fu-a middle of idr", Codec::H264, &[0x7c, 0x05, 0x00], KeyframeStart::No),
            ("vp9 key", Codec::Vp9, &[0x08], KeyframeStart::Yes),
            ("vp9 inter", Codec::Vp9, &[0x48], KeyframeStart::No),
            ("opus is not inspected", Codec::Opus, &[0x00], KeyframeStart::Unknown),
        ];
        for (name, codec, payload, want) in cases {
            assert_eq!(starts_keyframe(*codec, payload), *want, "{name}");
        }
    }
}
