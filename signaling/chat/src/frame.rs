//! [`Frame`]: one encoded text frame, shared by every session it goes to.
//!
//! The hub encodes a message once and hands the same bytes to every member's queue; the server shell turns a frame
//! into its WebSocket text message without copying. The bytes are UTF-8 by construction (only made from strings).

use bytes::Bytes;

/// An encoded JSON text frame (UTF-8), cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// A frame of static text.
    pub const fn from_static(text: &'static str) -> Frame {
        Frame(Bytes::from_static(text.as_bytes()))
    }

    /// The frame's bytes (UTF-8).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The frame's text.
    pub fn as_str(&self) -> &str {
        // Made only from `String` and `&str`, so always UTF-8; an empty text is never reached.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Frame {
        Frame(Bytes::from(text))
    }
}

impl From<&str> for Frame {
    fn from(text: &str) -> Frame {
        Frame(Bytes::copy_from_slice(text.as_bytes()))
    }
}
