//! The stable codes of protocol v1: `error.code` values ([`ErrorCode`]) and WebSocket close codes ([`close`]).
//!
//! Both tables are in `docs/protocol.md` ("Error codes", "Close codes"); a client decides what to do from the code,
//! never from the human-readable message next to it.

use serde::{Deserialize, Serialize};

/// Stable error codes sent in `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object with a string `type`, or a field has the wrong type or is missing.
    BadMessage,
    /// A `type` this server does not know.
    UnknownType,
    /// The frame is larger than the server's message-size limit.
    TooLarge,
    /// A request before `join`.
    NotJoined,
    /// A second `join` on one connection.
    AlreadyJoined,
    /// The token's grants do not allow this.
    PermissionDenied,
    /// No such track.
    TrackNotFound,
    /// The SDP could not be applied.
    SdpRejected,
    /// The ICE candidate could not be parsed.
    BadCandidate,
    /// Too many requests; slow down.
    RateLimited,
    /// A server fault; the request may be retried.
    Internal,
    /// The conversation does not exist or is not yours to read or write.
    ConversationNotFound,
    /// No such message (never sent, trimmed, or not yours to change).
    MessageNotFound,
    /// The server is too busy to take this now; retry later (nothing was stored).
    Overloaded,
    /// The room is over its chat quota for this priority; retry later (nothing was stored).
    QuotaExceeded,
    /// A room admin muted this member's chat.
    Muted,
    /// The message holds a blocked word.
    Blocked,
    /// The pre-send hook dropped the message.
    Rejected,
    /// The pre-send hook could not be asked and the server fails closed; retry later.
    HookUnavailable,
    /// Join: the room has its `max_participants` members (the room's option or `limits.max_participants`).
    RoomFull,
    /// Join: the server has `limits.max_rooms` rooms and this join would open another.
    TooManyRooms,
    /// The offer would publish more than `limits.max_tracks_per_participant` tracks.
    TooManyTracks,
    /// The server is shutting down and takes no new joins; join another server or retry later.
    ServerDraining,
    /// Join: no such room, and rooms are not created on first join (`[rooms] auto_create = false`).
    RoomNotFound,
    /// Join: a scheduled room before its start.
    RoomNotOpen,
    /// Join: a scheduled room whose members do not include this identity.
    NotInvited,
    /// The room is closed (a scheduled room after its end): its history is read-only.
    RoomClosed,
    /// Publish: the token's `can_publish_sources` does not include this track's source.
    SourceNotAllowed,
    /// Join: the token is not valid (close 4001 follows).
    InvalidToken,
    /// Join: the token expired or is not valid yet (close 4002 follows).
    TokenExpired,
    /// Join: the token does not allow joining (close 4004 follows).
    NotAllowed,
    /// Join: a protocol version this server does not speak (close 4005 follows).
    BadVersion,
    /// Join (or a chat send needing the cluster): the cluster could not decide where the room lives (its
    /// coordination store is unreachable); nothing was done; retry (close `1013` follows a refused join).
    ClusterUnavailable,
    /// A code this client does not know (a newer server); treat it as a failure of the request.
    #[serde(other)]
    #[cfg_attr(feature = "ts", ts(skip))]
    Unknown,
}

impl ErrorCode {
    /// The wire name (`bad_message`, …).
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            _ => format!("{self:?}"),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// WebSocket close codes (see `docs/protocol.md`, "Close codes").
pub mod close {
    /// The session ended normally (after `leave`, or answering the client's close).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame larger than the message-size limit (`too_large` in the preceding `error`).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The token is not valid.
    pub const INVALID_TOKEN: u16 = 4001;
    /// The token expired or is not valid yet.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// The first message was not a well-formed `join`.
    pub const NO_JOIN: u16 = 4003;
    /// The token does not allow joining.
    pub const NOT_ALLOWED: u16 = 4004;
    /// A protocol version this server does not speak.
    pub const BAD_VERSION: u16 = 4005;
    /// The client was silent too long, or read too slowly.
    pub const TIMEOUT_OR_SLOW: u16 = 4008;
    /// Another session of the same identity joined the room.
    pub const REPLACED: u16 = 4009;
    /// The server is draining (shutting down) and takes no new joins: the WebSocket "try again later" code.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The room is full (`room_full` in the preceding `error`).
    pub const ROOM_FULL: u16 = 4006;
    /// The server has as many rooms as it may (`too_many_rooms`).
    pub const TOO_MANY_ROOMS: u16 = 4007;
    /// Removed by a room admin, or the room was closed (the preceding `leave` says which).
    pub const REMOVED: u16 = 4010;
    /// The room refused the join: not found, not open yet, closed, or not invited (the preceding `error` says which).
    pub const ROOM_UNAVAILABLE: u16 = 4011;
    /// The room lives on another node of the cluster: the preceding `redirect` names it; join there.
    pub const REDIRECT: u16 = 4012;
    /// Too many joins from this address or identity (`rate_limited`).
    pub const RATE_LIMITED: u16 = 4029;
}
