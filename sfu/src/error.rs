//! The engine's error type.

use std::net::SocketAddr;

use crate::id::{PeerId, TrackId};

/// What can go wrong when driving the engine from outside.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP socket {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// A configuration value is out of range.
    #[error("invalid sfu config: {0}")]
    Config(String),
    /// No such peer (it closed, or never existed).
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    /// No such track (unpublished, or never existed).
    #[error("unknown track {0}")]
    UnknownTrack(TrackId),
    /// The engine is shutting down.
    #[error("the sfu is stopped")]
    Stopped,
}
