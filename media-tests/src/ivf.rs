//! A reader for IVF, the minimal container libvpx's tools write (`vpxenc --ivf`).
//!
//! The native client sends a real VP8 clip stored as IVF (see [`crate::frame::Vp8Clip`]); this
//! module only splits the file into frames. Layout, all integers little-endian:
//!
//! ```text
//! file header (32 bytes): "DKIF" | version u16 | header length u16 | fourcc [4] | width u16 |
//!                         height u16 | timebase denominator u32 | timebase numerator u32 |
//!                         frame count u32 | unused u32
//! per frame:              size u32 | pts u64 | size bytes of codec data
//! ```
//!
//! The frame count in the header is informational (writers fill it in at the end, or not at
//! all); the frames are read until the end of the data. Sans-I/O: it parses bytes.

use bytes::Bytes;

/// Signature at the start of every IVF file.
pub const SIGNATURE: [u8; 4] = *b"DKIF";
/// Length of the file header this reader understands (a longer declared header is skipped).
pub const FILE_HEADER_LEN: usize = 32;
/// Length of the header in front of each frame.
pub const FRAME_HEADER_LEN: usize = 12;

/// The IVF file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvfHeader {
    /// Codec fourcc, e.g. `VP80`.
    pub fourcc: [u8; 4],
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Timebase denominator (the frame rate for `vpxenc` output).
    pub timebase_den: u32,
    /// Timebase numerator.
    pub timebase_num: u32,
    /// Frame count as declared by the writer.
    pub declared_frames: u32,
}

/// One frame of an IVF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfFrame {
    /// Presentation timestamp in timebase units.
    pub pts: u64,
    /// The codec data (shares the buffer passed to [`parse`]).
    pub data: Bytes,
}

/// A parsed IVF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ivf {
    /// The file header.
    pub header: IvfHeader,
    /// The frames, in file order.
    pub frames: Vec<IvfFrame>,
}

/// Why IVF data could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IvfError {
    /// Shorter than the file header.
    #[error("IVF data too short for its header: {0} bytes")]
    TooShort(usize),
    /// Does not start with `DKIF`.
    #[error("not IVF: the signature is {0:02x?}, not \"DKIF\"")]
    BadSignature([u8; 4]),
    /// The header declares a length below 32 bytes or beyond the data.
    #[error("IVF header length {0} is invalid")]
    BadHeaderLength(u16),
    /// The data ends inside a frame header.
    #[error("IVF frame {index}: header truncated")]
    TruncatedFrameHeader {
        /// Index of the frame.
        index: usize,
    },
    /// The data ends inside a frame.
    #[error("IVF frame {index}: {declared} bytes declared, {available} present")]
    TruncatedFrame {
        /// Index of the frame.
        index: usize,
        /// Size in the frame header.
        declared: usize,
        /// Bytes left in the data.
        available: usize,
    },
}

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Parses a whole IVF file. Frames share `data`'s buffer (no copy).
pub fn parse(data: Bytes) -> Result<Ivf, IvfError> {
    if data.len() < FILE_HEADER_LEN {
        return Err(IvfError::TooShort(data.len()));
    }
    let signature = [data[0], data[1], data[2], data[3]];
    if signature != SIGNATURE {
        return Err(IvfError::BadSignature(signature));
    }
    let header_len = u16_at(&data, 6);
    if usize::from(header_len) < FILE_HEADER_LEN || usize::from(header_len) > data.len() {
        return Err(IvfError::BadHeaderLength(header_len));
    }
    let header = IvfHeader {
        fourcc: [data[8], data[9], data[10], data[11]],
        width: u16_at(&data, 12),
        height: u16_at(&data, 14),
        timebase_den: u32_at(&data, 16),
        timebase_num: u32_at(&data, 20),
        declared_frames: u32_at(&data, 24),
    };
    let mut frames = Vec::with_capacity(header.declared_frames.min(10_000) as usize);
    let mut at = usize::from(header_len);
    while at < data.len() {
        let index = frames.len();
        if data.len() - at < FRAME_HEADER_LEN {
            return Err(IvfError::TruncatedFrameHeader { index });
        }
        let declared = u32_at(&data, at) as usize;
        let pts = u64::from(u32_at(&data, at + 4)) | (u64::from(u32_at(&data, at + 8)) << 32);
        at += FRAME_HEADER_LEN;
        let available = data.len() - at;
        if declared > available {
            return Err(IvfError::TruncatedFrame { index, declared, available });
        }
        frames.push(IvfFrame { pts, data: data.slice(at..at + declared) });
        at += declared;
    }
    Ok(Ivf { header, frames })
}

/// Writes an IVF file (a 32-byte header; `declared_frames` is replaced by the real count).
pub fn write(header: &IvfHeader, frames: &[(u64, &[u8])]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(FILE_HEADER_LEN + frames.iter().map(|(_, d)| FRAME_HEADER_LEN + d.len()).sum::<usize>());
    out.extend_from_slice(&SIGNATURE);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(FILE_HEADER_LEN as u16).to_le_bytes());
    out.extend_from_slice(&header.fourcc);
    out.extend_from_slice(&header.width.to_le_bytes());
    out.extend_from_slice(&header.height.to_le_bytes());
    out.extend_from_slice(&header.timebase_den.to_le_bytes());
    out.extend_from_slice(&header.timebase_num.to_le_bytes());
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (pts, data) in frames {
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&pts.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: IvfHeader =
        IvfHeader { fourcc: *b"VP80", width: 320, height: 180, timebase_den: 30, timebase_num: 1, declared_frames: 0 };

    /// An IVF file with the given header length and frames.
    fn file(header_len: u16, frames: &[(u64, &[u8])]) -> Vec<u8> {
        let written = write(&HEADER, frames);
        let mut out = written[..FILE_HEADER_LEN].to_vec();
        out[6..8].copy_from_slice(&header_len.to_le_bytes());
        out.resize(usize::from(header_len), 0);
        out.extend_from_slice(&written[FILE_HEADER_LEN..]);
        out
    }

    #[test]
    fn parses_header_and_frames() {
        let data = file(32, &[(0, b"abc"), (1, b""), (0x1_0000_0002, b"defgh")]);
        let ivf = parse(Bytes::from(data)).unwrap();
        assert_eq!(
            ivf.header,
            IvfHeader {
                fourcc: *b"VP80",
                width: 320,
                height: 180,
                timebase_den: 30,
                timebase_num: 1,
                declared_frames: 3,
            }
        );
        let frames: Vec<(u64, &[u8])> = ivf.frames.iter().map(|f| (f.pts, &f.data[..])).collect();
        assert_eq!(frames, vec![(0, &b"abc"[..]), (1, &b""[..]), (0x1_0000_0002, &b"defgh"[..])]);
    }

    #[test]
    fn error_table() {
        let good = file(32, &[(0, b"abcdef"), (1, b"ghij")]);
        let mut bad_signature = good.clone();
        bad_signature[0] = b'X';
        let mut short_header_len = good.clone();
        short_header_len[6] = 16;
        let mut huge_header_len = good.clone();
        huge_header_len[6..8].copy_from_slice(&0xffffu16.to_le_bytes());
        let cases: Vec<(&str, Vec<u8>, Result<usize, IvfError>)> = vec![
            ("whole file", good.clone(), Ok(2)),
            ("no frames", good[..32].to_vec(), Ok(0)),
            ("longer header skipped", file(40, &[(0, b"abcdef")]), Ok(1)),
            ("empty", vec![], Err(IvfError::TooShort(0))),
            ("header cut", good[..31].to_vec(), Err(IvfError::TooShort(31))),
            ("bad signature", bad_signature, Err(IvfError::BadSignature(*b"XKIF"))),
            ("header length below 32", short_header_len, Err(IvfError::BadHeaderLength(16))),
            ("header length beyond the data", huge_header_len, Err(IvfError::BadHeaderLength(0xffff))),
            ("frame header cut", good[..32 + 5].to_vec(), Err(IvfError::TruncatedFrameHeader { index: 0 })),
            (
                "first frame cut",
                good[..32 + 12 + 3].to_vec(),
                Err(IvfError::TruncatedFrame { index: 0, declared: 6, available: 3 }),
            ),
            (
                "second frame header cut",
                good[..32 + 18 + 11].to_vec(),
                Err(IvfError::TruncatedFrameHeader { index: 1 }),
            ),
            (
                "last byte missing",
                good[..good.len() - 1].to_vec(),
                Err(IvfError::TruncatedFrame { index: 1, declared: 4, available: 3 }),
            ),
        ];
        for (name, data, expected) in cases {
            let got = parse(Bytes::from(data)).map(|ivf| ivf.frames.len());
            assert_eq!(got, expected, "{name}");
        }
    }
}
