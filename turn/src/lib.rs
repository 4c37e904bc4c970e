//! Courier's built-in TURN server (RFC 8656 over RFC 8489 STUN), as a sans-I/O core: no sockets, no tasks, no
//! clock. A client behind a firewall that allows no UDP to the SFU, or only TCP/TLS to port 443, reaches the SFU
//! through a relay this server allocates; the `signaling` crate's `turn` module is the thin async shell
//! (listeners, relay sockets, timers) around [`server::Server`].
//!
//! It is not a general TURN server: relays send only to the SFU's own media address unless an operator opens
//! more (`allowed_peers`), so it cannot be used as an open relay, and credentials are the short-lived
//! HMAC kind of the "TURN REST API" convention that the signaling server mints at join.
//!
//! # Layout
//! - [`stun`]: the STUN/TURN wire format (messages, attributes, MESSAGE-INTEGRITY, FINGERPRINT, ChannelData,
//!   stream framing).
//! - [`credentials`]: REST credentials (mint, check) and the long-term key.
//! - [`server`]: the state machine: authentication, allocations, permissions, channels, relaying, expiry, caps,
//!   the peer policy (no open relay, hairpin mapping).

pub mod credentials;
pub mod server;
pub mod stun;

pub use server::{Cidr, Config, FiveTuple, MediaAddr, Output, PeerPolicy, RelayId, Server, Stats, Transport};
