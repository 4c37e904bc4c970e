//! Courier's wire protocol, version 1, as serde types: what `docs/protocol.md` documents, and nothing else.
//!
//! The server (`signaling`) parses what clients send and encodes what it sends with these types; native clients
//! (`media-tests`) do the reverse with the same types; the JS client's types are generated from them
//! (`web-demo/protocol.d.ts`). The golden tests (`tests/golden.rs`) read every JSON example in the document and
//! require it to parse into its type and encode back to the same JSON, so the document is the oracle, not a copy.
//! This crate parses and encodes; it decides nothing, and knows no socket, runtime or store.
//!
//! # Modules
//!
//! - [`client`]: messages a client sends ([`ClientMsg`]), parsed in two steps so each failure has its own code.
//! - [`server`]: messages the server sends ([`ServerMsg`]) and the records inside them.
//! - [`chat`]: the types chat frames share: a message as shown, priority, state, resume positions, targets.
//! - [`codes`]: `error` codes ([`ErrorCode`]) and WebSocket close codes ([`close`]).
//! - [`grants`]: token claims and grants, a participant's permissions, track sources.
//! - [`hooks`]: the pre-send hook's request and answer.
//! - [`admin`]: admin API bodies that carry protocol records (participants, errors).
//! - [`webhooks`]: webhook event bodies.
//! - [`ts`]: TypeScript declarations of the wire types (feature `ts`), checked in as `web-demo/protocol.d.ts`.
//! - `ts` (feature `ts`): the TypeScript declarations of all of these, for `web-demo/protocol.d.ts`.

pub mod admin;
pub mod chat;
pub mod client;
pub mod codes;
pub mod grants;
pub mod hooks;
pub mod server;
#[cfg(feature = "ts")]
pub mod ts;
pub mod webhooks;

pub use chat::{
    AlertAckStatus, AlertAckView, ChatMessage, MessageState, Priority, ReceiptView, ResumePos, ResumeStatus, Target,
};
pub use client::{
    ChatSend, ClientMsg, OfferTrack, ParseError, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, MAX_RESUME, MAX_TRACK_NAME,
};
pub use codes::{close, ErrorCode};
pub use grants::{ApiGrant, Claims, Permissions, TrackSource, VideoGrant, ALL_ROOMS, MAX_METADATA};
pub use server::{
    IceServer, Joined, LayerActive, MediaKind, ParticipantInfo, ServerMsg, SpeakerInfo, StreamStateKind, TrackInfo,
};

/// Protocol version this crate speaks (`join.v`).
pub const VERSION: u32 = 1;
