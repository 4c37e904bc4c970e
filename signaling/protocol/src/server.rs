//! Messages the server sends ([`ServerMsg`]) and the records inside them.
//!
//! The server encodes them with [`ServerMsg::to_json`]; a native client decodes them with [`ServerMsg::parse`], which
//! maps a `type` it does not know to [`ServerMsg::Unknown`] (a newer server may add messages; clients ignore them).

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};

use crate::chat::{is_default, AlertAckStatus, AlertAckView, ChatMessage, ReceiptView, ResumeStatus};
use crate::codes::ErrorCode;
use crate::grants::{Permissions, TrackSource};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl std::fmt::Display for MediaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A published track as the room sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct TrackInfo {
    pub id: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub name: String,
    pub muted: bool,
    /// Only in the publisher's own `track_published`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub mid: Option<String>,
}

/// A participant as the room sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ParticipantInfo {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
    /// Opaque, from the token or the admin API.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// The id of the cluster node that serves this participant (`[cluster] node_id`); absent outside a cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// The region of that node (`[cluster] region`); absent outside a cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

/// One entry of `active_speakers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SpeakerInfo {
    pub participant_id: String,
    /// Smoothed loudness, 0 (silence) to 1 (0 dBov).
    pub level: f32,
}

/// One simulcast layer in `set_layers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct LayerActive {
    pub rid: String,
    pub active: bool,
}

/// What a subscriber receives of a video track (`stream_state.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum StreamStateKind {
    Active,
    Paused,
}

impl StreamStateKind {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            StreamStateKind::Active => "active",
            StreamStateKind::Paused => "paused",
        }
    }
}

impl std::fmt::Display for StreamStateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The room snapshot in `joined`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Joined {
    pub v: u32,
    pub room: String,
    /// The room's metadata (set by the admin API; empty if none).
    #[serde(default)]
    pub room_metadata: String,
    #[serde(default)]
    pub server_version: String,
    /// This participant.
    pub participant: ParticipantInfo,
    /// Everyone else already in the room (hidden participants are not shown).
    pub participants: Vec<ParticipantInfo>,
    /// TURN servers for this participant's peer connection (the built-in TURN server or an external one), with
    /// short-lived credentials; empty when the server offers none. Shaped like WebRTC's `RTCIceServer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
}

/// One entry of `joined.ice_servers`: what a browser passes to `RTCPeerConnection` as an `RTCIceServer`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct IceServer {
    /// `turn:host:3478?transport=udp`, `turn:host:3478?transport=tcp`, `turns:host:5349?transport=tcp`.
    pub urls: Vec<String>,
    /// `<expiry unix seconds>:<identity>` (the TURN REST convention).
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
}

/// Messages the server sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The answer to `join`: the room as it is.
    Joined(Joined),
    /// The answer to `join` on a node of a cluster that does not host the room: join again at `url` with the same
    /// `join` message (close `4012` follows). Clients follow it by themselves.
    Redirect {
        /// The WebSocket URL of the node that hosts the room.
        url: String,
        /// That node's id (for logs and the demo's display).
        node: String,
        room: String,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: String,
        /// `left`, `disconnected`, `replaced`, `removed`, `room_closed`, `room_ended`, `server_shutdown`.
        reason: Cow<'static, str>,
    },
    TrackPublished {
        participant_id: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    TrackMuted {
        participant_id: String,
        track_id: String,
        muted: bool,
    },
    /// To one participant: the admin API changed its permissions; they apply at once.
    PermissionsChanged {
        permissions: Permissions,
    },
    /// A participant's name or metadata changed (admin API).
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    /// The room's metadata changed (admin API).
    RoomUpdated {
        metadata: String,
    },
    Subscribed {
        track_id: String,
        participant_id: String,
        kind: MediaKind,
        mid: String,
    },
    Unsubscribed {
        track_id: String,
        /// `requested`, `unpublished`, `participant_left`, `permission`.
        reason: Cow<'static, str>,
    },
    ActiveSpeakers {
        speakers: Vec<SpeakerInfo>,
    },
    /// To a subscriber: what it receives of a video track now (another layer, paused, resumed).
    StreamState {
        track_id: String,
        state: StreamStateKind,
        /// The layer forwarded (`q`, `h`, `f`, lowest to highest), `null` without simulcast; only when active.
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
        #[cfg_attr(feature = "ts", ts(optional))]
        layer: Option<Option<Cow<'static, str>>>,
        /// Why it is paused (`bandwidth`); only when paused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        reason: Option<Cow<'static, str>>,
    },
    /// To a publisher (dynacast): which simulcast layers of its track anyone needs; it stops encoding the others.
    SetLayers {
        track_id: String,
        layers: Vec<LayerActive>,
    },
    Offer {
        id: u64,
        sdp: String,
    },
    Answer {
        id: u64,
        sdp: String,
    },
    /// A trickled server candidate. The server puts its candidates in its SDP and sends none today; a client
    /// accepts it should that change.
    Candidate {
        candidate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        sdp_mid: Option<String>,
    },
    Pong {
        #[serde(default)]
        #[cfg_attr(feature = "ts", ts(type = "unknown"))]
        ts: serde_json::Value,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// The `type` of the message that failed, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        req_type: Option<String>,
        /// The `id` of the request that failed, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional, type = "unknown"))]
        id: Option<serde_json::Value>,
        /// The `client_id` of the refused chat message, so the client's outbox knows which.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        client_id: Option<String>,
    },
    /// A chat message is stored (or, `ephemeral`, was passed on without being stored).
    ChatAck {
        client_id: String,
        conversation: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        epoch: Option<u64>,
        time: u64,
        #[serde(default, skip_serializing_if = "is_default")]
        duplicate: bool,
        #[serde(default, skip_serializing_if = "is_default")]
        ephemeral: bool,
        /// A low-priority message the room's quota shed: it reached no one.
        #[serde(default, skip_serializing_if = "is_default")]
        shed: bool,
    },
    /// A stored or ephemeral chat message.
    ChatMessage(ChatMessage),
    ChatHistory {
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        #[cfg_attr(feature = "ts", ts(type = "unknown"))]
        id: serde_json::Value,
        conversation: String,
        epoch: u64,
        first_seq: u64,
        last_seq: u64,
        messages: Vec<ChatMessage>,
    },
    /// After the replay of one conversation of a resume (or, `fresh`, where a conversation stands at join).
    ChatResumed {
        conversation: String,
        status: ResumeStatus,
        epoch: u64,
        first_seq: u64,
        last_seq: u64,
        replayed: u64,
        unread: u64,
    },
    ChatReceipt {
        conversation: String,
        identity: String,
        delivered: u64,
        read: u64,
    },
    ChatReceipts {
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        #[cfg_attr(feature = "ts", ts(type = "unknown"))]
        id: serde_json::Value,
        conversation: String,
        receipts: Vec<ReceiptView>,
    },
    ChatTyping {
        conversation: String,
        identity: String,
        typing: bool,
    },
    /// A room admin muted or unmuted a member's chat (`until`: Unix milliseconds, absent when open-ended).
    ChatMuted {
        conversation: String,
        identity: String,
        muted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        until: Option<u64>,
        by: String,
    },
    /// Aggregated low-priority messages (likes): how many of `kind` were sent in the last `window_ms`.
    ChatAggregate {
        conversation: String,
        kind: String,
        count: u64,
        window_ms: u64,
    },
    /// A must-acknowledge message this member has not acknowledged yet (sent again until it is).
    ChatAlert {
        conversation: String,
        seq: u64,
        message: ChatMessage,
    },
    /// The answer to `chat_alert_ack`.
    ChatAlertAck {
        conversation: String,
        seq: u64,
        status: AlertAckStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        at: Option<u64>,
    },
    /// To the sender's sessions: a member acknowledged an alert.
    ChatAlertAcked {
        conversation: String,
        seq: u64,
        identity: String,
        at: u64,
    },
    ChatAlertStatus {
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        #[cfg_attr(feature = "ts", ts(type = "unknown"))]
        id: serde_json::Value,
        conversation: String,
        seq: u64,
        acked: Vec<AlertAckView>,
        pending: Vec<String>,
    },
    /// The server is about to close the socket: `server_shutdown`, `replaced`, `removed`, `room_closed`,
    /// `room_ended`.
    Leave {
        reason: Cow<'static, str>,
    },
    /// A `type` this side does not know (a newer server); ignore it. Never sent.
    #[serde(other)]
    #[cfg_attr(feature = "ts", ts(skip))]
    Unknown,
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value (absence is the field's `default`, `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl ServerMsg {
    /// Encode as one text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }

    /// Decode one text frame (a client's view). A `type` this side does not know is [`ServerMsg::Unknown`].
    pub fn parse(text: &str) -> Result<ServerMsg, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        use ServerMsg::*;
        match self {
            Joined(_) => "joined",
            Redirect { .. } => "redirect",
            ParticipantJoined { .. } => "participant_joined",
            ParticipantLeft { .. } => "participant_left",
            TrackPublished { .. } => "track_published",
            TrackUnpublished { .. } => "track_unpublished",
            TrackMuted { .. } => "track_muted",
            PermissionsChanged { .. } => "permissions_changed",
            ParticipantUpdated { .. } => "participant_updated",
            RoomUpdated { .. } => "room_updated",
            Subscribed { .. } => "subscribed",
            Unsubscribed { .. } => "unsubscribed",
            ActiveSpeakers { .. } => "active_speakers",
            StreamState { .. } => "stream_state",
            SetLayers { .. } => "set_layers",
            Offer { .. } => "offer",
            Answer { .. } => "answer",
            Candidate { .. } => "candidate",
            Pong { .. } => "pong",
            Error { .. } => "error",
            ChatAck { .. } => "chat_ack",
            ChatMessage(_) => "chat_message",
            ChatHistory { .. } => "chat_history",
            ChatResumed { .. } => "chat_resumed",
            ChatReceipt { .. } => "chat_receipt",
            ChatReceipts { .. } => "chat_receipts",
            ChatTyping { .. } => "chat_typing",
            ChatMuted { .. } => "chat_muted",
            ChatAggregate { .. } => "chat_aggregate",
            ChatAlert { .. } => "chat_alert",
            ChatAlertAck { .. } => "chat_alert_ack",
            ChatAlertAcked { .. } => "chat_alert_acked",
            ChatAlertStatus { .. } => "chat_alert_status",
            Leave { .. } => "leave",
            Unknown => "unknown",
        }
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>, req_type: Option<&str>) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
            req_type: req_type.map(str::to_string),
            id: None,
            client_id: None,
        }
    }

    /// An `error` answering the request `id` (absent or `null`: none).
    pub fn error_for(code: ErrorCode, message: impl Into<String>, req_type: &str, id: &serde_json::Value) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
            req_type: Some(req_type.to_string()),
            id: (!id.is_null()).then(|| id.clone()),
            client_id: None,
        }
    }

    /// The `chat_ack` of an ephemeral message (`shed`: the room's quota dropped it).
    pub fn ephemeral_ack(client_id: String, conversation: String, time: u64, shed: bool) -> ServerMsg {
        ServerMsg::ChatAck {
            client_id,
            conversation,
            seq: None,
            epoch: None,
            time,
            duplicate: false,
            ephemeral: true,
            shed,
        }
    }

    /// An `error` about the chat message `client_id`.
    pub fn chat_error(code: ErrorCode, message: impl Into<String>, req_type: &str, client_id: &str) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
            req_type: Some(req_type.to_string()),
            id: None,
            client_id: Some(client_id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_absent_null_or_a_name() {
        let cases = [
            (None, r#"{"type":"stream_state","track_id":"TR_1","state":"paused","reason":"bandwidth"}"#),
            (Some(None), r#"{"type":"stream_state","track_id":"TR_1","state":"active","layer":null}"#),
            (Some(Some("h".into())), r#"{"type":"stream_state","track_id":"TR_1","state":"active","layer":"h"}"#),
        ];
        for (layer, text) in cases {
            let ServerMsg::StreamState { layer: parsed, .. } = ServerMsg::parse(text).unwrap() else {
                panic!("{text}")
            };
            assert_eq!(parsed, layer, "{text}");
            assert_eq!(ServerMsg::parse(text).unwrap().to_json(), text);
        }
    }

    #[test]
    fn an_unknown_type_is_ignorable_and_a_known_one_is_checked() {
        assert!(matches!(ServerMsg::parse(r#"{"type":"hologram","x":1}"#), Ok(ServerMsg::Unknown)));
        assert!(ServerMsg::parse(r#"{"type":"pong"}"#).is_ok());
        assert!(ServerMsg::parse(r#"{"type":"subscribed","track_id":"TR_1"}"#).is_err());
        let e = ServerMsg::parse(r#"{"type":"error","code":"from_the_future","message":"m"}"#).unwrap();
        assert!(matches!(e, ServerMsg::Error { code: ErrorCode::Unknown, .. }));
    }

    #[test]
    fn errors_carry_the_request_id_only_when_there_is_one() {
        let with = ServerMsg::error_for(ErrorCode::BadMessage, "m", "chat_history", &serde_json::json!(3));
        assert_eq!(
            with.to_json(),
            r#"{"type":"error","code":"bad_message","message":"m","req_type":"chat_history","id":3}"#
        );
        let without = ServerMsg::error_for(ErrorCode::BadMessage, "m", "chat_history", &serde_json::Value::Null);
        assert!(!without.to_json().contains("\"id\""));
    }

    #[test]
    fn a_participants_node_and_region_are_absent_when_empty_and_round_trip_when_set() {
        let alone = ParticipantInfo {
            id: "PA_1".into(),
            identity: "alice".into(),
            name: "Alice".into(),
            tracks: Vec::new(),
            metadata: String::new(),
            node: String::new(),
            region: String::new(),
        };
        let cases = [
            (alone.clone(), r#"{"id":"PA_1","identity":"alice","name":"Alice","tracks":[]}"#),
            (
                ParticipantInfo { node: "node-a".into(), region: "eu-west".into(), ..alone.clone() },
                r#"{"id":"PA_1","identity":"alice","name":"Alice","tracks":[],"node":"node-a","region":"eu-west"}"#,
            ),
            (
                ParticipantInfo { node: "node-a".into(), ..alone },
                r#"{"id":"PA_1","identity":"alice","name":"Alice","tracks":[],"node":"node-a"}"#,
            ),
        ];
        for (info, text) in cases {
            assert_eq!(serde_json::to_string(&info).unwrap(), text);
            assert_eq!(serde_json::from_str::<ParticipantInfo>(text).unwrap(), info, "{text}");
        }
    }
}
