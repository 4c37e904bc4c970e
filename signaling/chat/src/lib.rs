//! `courier-chat`: chat (IM) that is never lost, never duplicated and never out of order — Courier's IM core, a
//! library the server shell (`signaling`) drives. It knows no socket, no HTTP framework and no media engine.
//!
//! Chat rides on the same WebSocket as signaling. Every conversation — the chat of a room, or a direct conversation
//! between two identities — has one [`sequencer`] that gives each persisted message the next 64-bit sequence number
//! of that conversation, and one durable history in the [`store`]. A message is acknowledged to its sender only
//! after it has its number and the transaction that stored it is committed, so "acknowledged" means "durable"; a
//! retry with the same client id gets the original acknowledgement back, never a second message.
//!
//! The crate root holds the plain types every part of chat shares: [`ConversationId`], the message to store
//! ([`NewMessage`]) with its [`Flags`], and the input checks ([`Limits`], [`InvalidInput`]). Whether a message is
//! persisted or ephemeral (typing, presence) is decided before the store: only persisted messages reach it.
//!
//! # Layout
//!
//! - [`sequencer`]: sans-I/O: sequence numbers, epochs and the idempotency cache.
//! - [`store`]: the store interface ([`store::ChatStore`]) and its plain types.
//! - [`sqlite`]: the embedded SQLite store, one writer thread with group commit.
//! - [`writer`]: the callers' side of a store's single writer, shared by both stores.
//! - [`postgres`]: the PostgreSQL store, for many nodes.
//! - [`moderation`]: sans-I/O: keyword lists (blocked, masked) and muted members.
//! - [`outbound`]: sans-I/O: one connection's bounded outbound queue, shedding droppable items first.
//! - [`clock`]: the wall clock and random ids, read at the edges only.
//! - [`frame`]: what the hub hands to sessions: one encoded text frame, cloned to every member.
//! - [`frames`]: the chat frames of protocol v1 built from stored messages.
//! - [`gate`]: sans-I/O: the admission gate — grant, rate, mute, words, priority, quota → one verdict.
//! - [`rate`]: sans-I/O: token buckets.
//! - [`hub`]: who receives what: sessions by room and identity, fan-out of committed and ephemeral messages.
//! - [`quota`]: sans-I/O: per-room rate quotas with a share reserved for high priority; low priority goes first.
//! - [`resume`]: sans-I/O: a reconnecting member's replay merged with live messages, each number once, in order.

pub mod clock;
pub mod frame;
pub mod frames;
pub mod gate;
pub mod hub;
pub mod moderation;
pub mod outbound;
pub mod postgres;
pub mod quota;
pub mod rate;
pub mod resume;
pub mod sequencer;
pub mod sqlite;
pub mod store;
mod writer;

#[cfg(test)]
mod contract;

use std::fmt;

/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 128;
/// Longest identity, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 128;
/// Longest client id (the sender's idempotency key), in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 64;
/// Longest message type, in bytes.
pub const MAX_KIND_BYTES: usize = 64;
/// Most identities one message may mention.
pub const MAX_MENTIONS: usize = 64;
/// Default payload cap, in bytes of JSON text.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// Why a piece of client input was refused. Every variant is a client mistake, never a server fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A conversation id that is neither `room:<room>` nor `dm:<a>:<b>` with `a < b`.
    #[error("malformed conversation id")]
    ConversationId,
    /// A room name that is empty, too long or holds control characters.
    #[error("invalid room name")]
    Room,
    /// An identity that is empty, too long, holds `:` or control characters.
    #[error("invalid identity")]
    Identity,
    /// A direct conversation of an identity with itself.
    #[error("a direct conversation needs two different identities")]
    SelfConversation,
    /// A client id that is empty, too long or not printable ASCII.
    #[error("invalid client id")]
    ClientId,
    /// A message type that is empty, too long or not `[A-Za-z0-9._-]`.
    #[error("invalid message type")]
    Kind,
    /// A payload larger than the configured cap.
    #[error("payload of {len} bytes is larger than {max}")]
    PayloadTooLarge { len: usize, max: usize },
    /// A payload that is not one JSON value.
    #[error("payload is not JSON")]
    PayloadNotJson,
    /// More mentions than [`MAX_MENTIONS`].
    #[error("too many mentions")]
    TooManyMentions,
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Check an identity: 1..=[`MAX_IDENTITY_BYTES`] bytes, no `:` (it separates the parts of a direct conversation id)
/// and no control characters.
pub fn validate_identity(identity: &str) -> Result<(), InvalidInput> {
    if identity.is_empty() || identity.len() > MAX_IDENTITY_BYTES || identity.contains(':') || !printable(identity) {
        return Err(InvalidInput::Identity);
    }
    Ok(())
}

fn validate_room(room: &str) -> Result<(), InvalidInput> {
    if room.is_empty() || room.len() > MAX_ROOM_BYTES || !printable(room) {
        return Err(InvalidInput::Room);
    }
    Ok(())
}

/// One conversation: the chat of a room (`room:<room>`) or a direct conversation between two identities
/// (`dm:<a>:<b>`, the two sorted so both sides name it the same). Always valid once built.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(String);

impl ConversationId {
    /// The chat of `room`.
    pub fn room(room: &str) -> Result<ConversationId, InvalidInput> {
        validate_room(room)?;
        Ok(ConversationId(format!("room:{room}")))
    }

    /// The direct conversation between `a` and `b`; `direct(a, b) == direct(b, a)`.
    pub fn direct(a: &str, b: &str) -> Result<ConversationId, InvalidInput> {
        validate_identity(a)?;
        validate_identity(b)?;
        let (lo, hi) = match a.cmp(b) {
            std::cmp::Ordering::Less => (a, b),
            std::cmp::Ordering::Greater => (b, a),
            std::cmp::Ordering::Equal => return Err(InvalidInput::SelfConversation),
        };
        Ok(ConversationId(format!("dm:{lo}:{hi}")))
    }

    /// Parse the text form (as stored, or as a client sent it). A `dm:` id must already be in sorted order.
    pub fn parse(s: &str) -> Result<ConversationId, InvalidInput> {
        if let Some(room) = s.strip_prefix("room:") {
            return ConversationId::room(room);
        }
        if let Some(rest) = s.strip_prefix("dm:") {
            let (a, b) = rest.split_once(':').ok_or(InvalidInput::ConversationId)?;
            if a >= b {
                return Err(InvalidInput::ConversationId);
            }
            return ConversationId::direct(a, b);
        }
        Err(InvalidInput::ConversationId)
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The room, for a room chat.
    pub fn as_room(&self) -> Option<&str> {
        self.0.strip_prefix("room:")
    }

    /// The two identities, sorted, for a direct conversation.
    pub fn as_direct(&self) -> Option<(&str, &str)> {
        self.0.strip_prefix("dm:").and_then(|rest| rest.split_once(':'))
    }

    /// Whether `identity` is one of the two sides of this direct conversation.
    pub fn involves(&self, identity: &str) -> bool {
        self.as_direct().is_some_and(|(a, b)| a == identity || b == identity)
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How urgently a message must get through when a room is over its quota. High is never shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    /// The stored code.
    pub fn code(self) -> u8 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        }
    }

    /// From the stored code.
    pub fn from_code(code: u8) -> Option<Priority> {
        match code {
            0 => Some(Priority::Low),
            1 => Some(Priority::Normal),
            2 => Some(Priority::High),
            _ => None,
        }
    }
}

/// What a message asks of the server beyond storing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// Every member is asked to acknowledge it; the server tracks who has.
    pub must_ack: bool,
    /// `@all`.
    pub mention_all: bool,
    /// `@identity`, each a valid identity.
    pub mentions: Vec<String>,
    pub priority: Priority,
    /// Counts toward the members' unread count (`false` for notices that should not badge).
    pub counted: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags { must_ack: false, mention_all: false, mentions: Vec::new(), priority: Priority::Normal, counted: true }
    }
}

/// A persisted message as the sender gave it, before it has a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub conversation: ConversationId,
    /// The sender's identity (from its access token, never from the message body).
    pub sender: String,
    /// The sender's idempotency key: a retry with the same `(conversation, sender, client_id)` is the same message.
    pub client_id: String,
    /// The message type: `text`, or a custom application type.
    pub kind: String,
    /// JSON text.
    pub payload: String,
    pub flags: Flags,
    /// This message recalls or edits an earlier one of the same conversation; the store applies the change to that
    /// message in the same transaction (see [`store::Amend`]).
    pub amends: Option<store::Amend>,
    /// The identities asked to acknowledge it (must-acknowledge alerts), chosen by the server at send time.
    pub alert_to: Vec<String>,
}

/// The size limits the store enforces on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload, in bytes of JSON text.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES }
    }
}

/// Check a message type: 1..=[`MAX_KIND_BYTES`] bytes of `[A-Za-z0-9._-]`.
pub fn validate_kind(kind: &str) -> Result<(), InvalidInput> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_BYTES
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::Kind)
    }
}

/// Check a payload: at most `limits.max_payload_bytes`, and one JSON value.
pub fn validate_payload(payload: &str, limits: &Limits) -> Result<(), InvalidInput> {
    if payload.len() > limits.max_payload_bytes {
        return Err(InvalidInput::PayloadTooLarge { len: payload.len(), max: limits.max_payload_bytes });
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload).map_err(|_| InvalidInput::PayloadNotJson)?;
    Ok(())
}

impl NewMessage {
    /// Check everything the client chose. The conversation id is valid by construction.
    pub fn validate(&self, limits: &Limits) -> Result<(), InvalidInput> {
        validate_identity(&self.sender)?;
        let id_ok = !self.client_id.is_empty()
            && self.client_id.len() <= MAX_CLIENT_ID_BYTES
            && self.client_id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err(InvalidInput::ClientId);
        }
        validate_kind(&self.kind)?;
        if self.flags.mentions.len() > MAX_MENTIONS {
            return Err(InvalidInput::TooManyMentions);
        }
        for m in self.flags.mentions.iter().chain(&self.alert_to) {
            validate_identity(m)?;
        }
        validate_payload(&self.payload, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_conversation_ids_are_symmetric() {
        let ab = ConversationId::direct("alice", "bob").unwrap();
        let ba = ConversationId::direct("bob", "alice").unwrap();
        assert_eq!(ab, ba);
        assert_eq!(ab.as_str(), "dm:alice:bob");
        assert_eq!(ab.as_direct(), Some(("alice", "bob")));
        assert!(ab.involves("bob") && !ab.involves("carol"));
        assert_eq!(ConversationId::parse("dm:alice:bob").unwrap(), ab);
    }

    #[test]
    fn conversation_ids_are_checked() {
        let long = "x".repeat(MAX_IDENTITY_BYTES + 1);
        let cases: &[(&str, Result<&str, InvalidInput>)] = &[
            ("room:lobby", Ok("room:lobby")),
            ("room:a:b", Ok("room:a:b")),
            ("room:", Err(InvalidInput::Room)),
            ("room:a\nb", Err(InvalidInput::Room)),
            ("dm:alice:bob", Ok("dm:alice:bob")),
            ("dm:bob:alice", Err(InvalidInput::ConversationId)),
            ("dm:alice:alice", Err(InvalidInput::ConversationId)),
            ("dm:alice", Err(InvalidInput::ConversationId)),
            ("dm:a:b:c", Err(InvalidInput::Identity)),
            ("dm::bob", Err(InvalidInput::Identity)),
            ("chat:x", Err(InvalidInput::ConversationId)),
            ("", Err(InvalidInput::ConversationId)),
        ];
        for (input, want) in cases {
            let got = ConversationId::parse(input);
            assert_eq!(got.as_ref().map(|c| c.as_str()), want.as_ref().copied(), "{input:?}");
        }
        assert_eq!(ConversationId::direct("a:b", "c"), Err(InvalidInput::Identity));
        assert_eq!(ConversationId::direct("a", "a"), Err(InvalidInput::SelfConversation));
        assert_eq!(ConversationId::direct(&long, "a"), Err(InvalidInput::Identity));
        assert_eq!(ConversationId::room(&"r".repeat(MAX_ROOM_BYTES + 1)), Err(InvalidInput::Room));
    }

    fn msg(payload: &str) -> NewMessage {
        NewMessage {
            conversation: ConversationId::room("r").unwrap(),
            sender: "alice".into(),
            client_id: "c-1".into(),
            kind: "text".into(),
            payload: payload.into(),
            flags: Flags::default(),
            amends: None,
            alert_to: Vec::new(),
        }
    }

    #[test]
    fn messages_are_checked() {
        let limits = Limits { max_payload_bytes: 32 };
        assert_eq!(msg(r#"{"text":"hi"}"#).validate(&limits), Ok(()));
        let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(40));
        assert_eq!(msg(&big).validate(&limits), Err(InvalidInput::PayloadTooLarge { len: big.len(), max: 32 }));
        assert_eq!(msg("{not json").validate(&limits), Err(InvalidInput::PayloadNotJson));
        assert_eq!(msg("{} {}").validate(&limits), Err(InvalidInput::PayloadNotJson));
        let mut m = msg("1");
        m.client_id = "has space".into();
        assert_eq!(m.validate(&limits), Err(InvalidInput::ClientId));
        let mut m = msg("1");
        m.kind = "app/x".into();
        assert_eq!(m.validate(&limits), Err(InvalidInput::Kind));
        let mut m = msg("1");
        m.flags.mentions = vec!["a:b".into()];
        assert_eq!(m.validate(&limits), Err(InvalidInput::Identity));
        let mut m = msg("1");
        m.sender = String::new();
        assert_eq!(m.validate(&limits), Err(InvalidInput::Identity));
    }
}
