//! [`Frame`]: what the hub hands to sessions — one encoded text frame, built once per message and cloned into every
//! member's queue.
//!
//! The server chooses the type: its WebSocket library's shared text type, so a clone is a reference count and the
//! session sends it as it is, with no copy and no second UTF-8 check per member on the fan-out path. Tests use
//! `String`.

/// An encoded JSON text frame, cheap to clone (see the module doc).
pub trait Frame: Clone + From<String> + Send + Sync + 'static {}

impl<T: Clone + From<String> + Send + Sync + 'static> Frame for T {}
