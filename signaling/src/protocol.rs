//! Protocol v1 wire messages (see `docs/protocol.md`): parsing what clients send and encoding what the server
//! sends. This module only parses and encodes; it decides nothing.
//!
//! Parsing happens in two steps so every failure has its own error code: the frame must be a JSON object with a
//! string `type` (else `bad_message`), the type must be known (else `unknown_type`), and the fields must have the
//! right types (else `bad_message` naming the type).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::chat::store::{MessageState, StoredMessage};
use crate::chat::Priority;

/// Protocol version this server speaks.
pub const VERSION: u32 = 1;

/// Stable error codes sent in `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    UnknownType,
    TooLarge,
    NotJoined,
    AlreadyJoined,
    PermissionDenied,
    TrackNotFound,
    SdpRejected,
    BadCandidate,
    RateLimited,
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
}

/// WebSocket close codes (see `docs/protocol.md`).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const INVALID_TOKEN: u16 = 4001;
    pub const TOKEN_EXPIRED: u16 = 4002;
    pub const NO_JOIN: u16 = 4003;
    pub const NOT_ALLOWED: u16 = 4004;
    pub const BAD_VERSION: u16 = 4005;
    pub const TIMEOUT_OR_SLOW: u16 = 4008;
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
    /// Too many joins from this address or identity (`rate_limited`).
    pub const RATE_LIMITED: u16 = 4029;
}

/// A track description in an offer's `tracks`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OfferTrack {
    pub mid: String,
    #[serde(default)]
    pub source: Option<TrackSource>,
    #[serde(default)]
    pub name: Option<String>,
}

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
    Unknown,
}

/// One simulcast layer in `set_layers`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LayerActive {
    pub rid: String,
    pub active: bool,
}

/// Where a client's copy of a conversation stands, for a resume.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ResumePos {
    pub conversation: String,
    pub epoch: u64,
    pub last_seq: u64,
}

/// Wire priority of a chat message.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WirePriority {
    Low,
    #[default]
    Normal,
    High,
}

impl From<WirePriority> for Priority {
    fn from(p: WirePriority) -> Priority {
        match p {
            WirePriority::Low => Priority::Low,
            WirePriority::Normal => Priority::Normal,
            WirePriority::High => Priority::High,
        }
    }
}

/// Which conversation a chat request is about: `conversation` by id, or `to` an identity (a direct
/// conversation), or neither (the chat of the session's room).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Target {
    #[serde(default)]
    pub conversation: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

/// `chat_send`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSend {
    pub client_id: String,
    pub target: Target,
    pub kind: String,
    /// JSON text.
    pub payload: String,
    pub persist: bool,
    pub counted: bool,
    pub priority: WirePriority,
    pub must_ack: bool,
    pub mentions: Vec<String>,
    pub mention_all: bool,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    Join { v: u32, token: String, auto_subscribe: bool, chat: Vec<ResumePos> },
    Offer { id: u64, sdp: String, tracks: Vec<OfferTrack> },
    Answer { id: u64, sdp: String },
    Candidate { candidate: String, sdp_mid: Option<String> },
    Subscribe { track_ids: Vec<String> },
    Unsubscribe { track_ids: Vec<String> },
    Mute { track_id: String, muted: bool },
    TrackSettings { track_id: String, width: Option<u16>, height: Option<u16>, hidden: bool },
    Ping { ts: serde_json::Value },
    Leave,
    ChatSend(ChatSend),
    ChatHistory { id: serde_json::Value, target: Target, before: Option<u64>, after: Option<u64>, limit: usize },
    ChatResume { conversations: Vec<ResumePos> },
    ChatReceipt { conversation: String, delivered: u64, read: u64 },
    ChatReceipts { id: serde_json::Value, conversation: String },
    ChatTyping { target: Target, typing: bool },
    ChatRecall { client_id: String, target: Target, seq: u64 },
    ChatEdit { client_id: String, target: Target, seq: u64, payload: String },
    ChatAlertAck { conversation: String, seq: u64 },
    ChatAlertStatus { id: serde_json::Value, conversation: String, seq: u64 },
    ChatMute { identity: String, muted: bool, duration_secs: Option<u64> },
}

/// Default and largest `chat_history` page.
pub const HISTORY_DEFAULT_LIMIT: usize = 50;
pub const HISTORY_MAX_LIMIT: usize = 200;

/// Why a frame could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub code: ErrorCode,
    pub message: String,
    /// The `type` of the failed message, when it had one.
    pub req_type: Option<String>,
}

#[derive(Deserialize)]
struct JoinF {
    v: u32,
    token: String,
    #[serde(default = "yes")]
    auto_subscribe: bool,
    #[serde(default)]
    chat: Vec<ResumePos>,
}
#[derive(Deserialize)]
struct ChatSendF {
    client_id: String,
    #[serde(flatten)]
    target: Target,
    #[serde(default = "text_kind")]
    kind: String,
    payload: Box<RawValue>,
    #[serde(default = "yes")]
    persist: bool,
    #[serde(default = "yes")]
    counted: bool,
    #[serde(default)]
    priority: WirePriority,
    #[serde(default)]
    must_ack: bool,
    #[serde(default)]
    mentions: Vec<String>,
    #[serde(default)]
    mention_all: bool,
}
#[derive(Deserialize)]
struct ChatHistoryF {
    #[serde(default)]
    id: serde_json::Value,
    #[serde(flatten)]
    target: Target,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}
#[derive(Deserialize)]
struct ChatResumeF {
    conversations: Vec<ResumePos>,
}
#[derive(Deserialize)]
struct ChatReceiptF {
    conversation: String,
    #[serde(default)]
    delivered: u64,
    #[serde(default)]
    read: u64,
}
#[derive(Deserialize)]
struct IdConversationF {
    #[serde(default)]
    id: serde_json::Value,
    conversation: String,
}
#[derive(Deserialize)]
struct ChatTypingF {
    #[serde(flatten)]
    target: Target,
    typing: bool,
}
#[derive(Deserialize)]
struct ChatRecallF {
    client_id: String,
    #[serde(flatten)]
    target: Target,
    seq: u64,
}
#[derive(Deserialize)]
struct ChatEditF {
    client_id: String,
    #[serde(flatten)]
    target: Target,
    seq: u64,
    payload: Box<RawValue>,
}
#[derive(Deserialize)]
struct ChatMuteF {
    identity: String,
    muted: bool,
    #[serde(default)]
    duration_secs: Option<u64>,
}
#[derive(Deserialize)]
struct AlertF {
    #[serde(default)]
    id: serde_json::Value,
    conversation: String,
    seq: u64,
}

fn text_kind() -> String {
    "text".into()
}

/// Most positions in one resume.
pub const MAX_RESUME: usize = 256;
#[derive(Deserialize)]
struct OfferF {
    id: u64,
    sdp: String,
    #[serde(default)]
    tracks: Vec<OfferTrack>,
}
#[derive(Deserialize)]
struct AnswerF {
    id: u64,
    sdp: String,
}
#[derive(Deserialize)]
struct CandidateF {
    candidate: String,
    #[serde(default)]
    sdp_mid: Option<String>,
}
#[derive(Deserialize)]
struct TrackIdsF {
    track_ids: Vec<String>,
}
#[derive(Deserialize)]
struct MuteF {
    track_id: String,
    muted: bool,
}
#[derive(Deserialize)]
struct TrackSettingsF {
    track_id: String,
    #[serde(default)]
    width: Option<u16>,
    #[serde(default)]
    height: Option<u16>,
    #[serde(default)]
    hidden: bool,
}
#[derive(Deserialize)]
struct PingF {
    #[serde(default)]
    ts: serde_json::Value,
}

fn yes() -> bool {
    true
}

impl ClientMsg {
    /// Parse one text frame.
    pub fn parse(text: &str) -> Result<ClientMsg, ParseError> {
        let bad = |m: String, t: Option<&str>| ParseError {
            code: ErrorCode::BadMessage,
            message: m,
            req_type: t.map(str::to_string),
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}"), None))?;
        let Some(obj) = value.as_object() else { return Err(bad("message must be a JSON object".into(), None)) };
        let Some(ty) = obj.get("type").and_then(|t| t.as_str()) else {
            return Err(bad("message needs a string \"type\"".into(), None));
        };
        let ty = ty.to_string();
        fn fields<T: for<'de> Deserialize<'de>>(v: serde_json::Value, ty: &str) -> Result<T, ParseError> {
            serde_json::from_value(v).map_err(|e| ParseError {
                code: ErrorCode::BadMessage,
                message: format!("bad {ty}: {e}"),
                req_type: Some(ty.to_string()),
            })
        }
        let msg = match ty.as_str() {
            "join" => {
                let f: JoinF = fields(value, &ty)?;
                if f.chat.len() > MAX_RESUME {
                    return Err(bad(format!("more than {MAX_RESUME} chat positions"), Some("join")));
                }
                ClientMsg::Join { v: f.v, token: f.token, auto_subscribe: f.auto_subscribe, chat: f.chat }
            }
            "offer" => {
                let f: OfferF = fields(value, &ty)?;
                if f.tracks.iter().any(|t| t.name.as_ref().is_some_and(|n| n.len() > 128)) {
                    return Err(bad("track name longer than 128 bytes".into(), Some("offer")));
                }
                ClientMsg::Offer { id: f.id, sdp: f.sdp, tracks: f.tracks }
            }
            "answer" => {
                let f: AnswerF = fields(value, &ty)?;
                ClientMsg::Answer { id: f.id, sdp: f.sdp }
            }
            "candidate" => {
                let f: CandidateF = fields(value, &ty)?;
                ClientMsg::Candidate { candidate: f.candidate, sdp_mid: f.sdp_mid }
            }
            "subscribe" => ClientMsg::Subscribe { track_ids: fields::<TrackIdsF>(value, &ty)?.track_ids },
            "unsubscribe" => ClientMsg::Unsubscribe { track_ids: fields::<TrackIdsF>(value, &ty)?.track_ids },
            "mute" => {
                let f: MuteF = fields(value, &ty)?;
                ClientMsg::Mute { track_id: f.track_id, muted: f.muted }
            }
            "track_settings" => {
                let f: TrackSettingsF = fields(value, &ty)?;
                if f.width.is_some() != f.height.is_some() {
                    return Err(bad("give both width and height, or neither".into(), Some("track_settings")));
                }
                ClientMsg::TrackSettings { track_id: f.track_id, width: f.width, height: f.height, hidden: f.hidden }
            }
            "ping" => ClientMsg::Ping { ts: fields::<PingF>(value, &ty)?.ts },
            "leave" => ClientMsg::Leave,
            "chat_send" => {
                let f: ChatSendF = fields(value, &ty)?;
                ClientMsg::ChatSend(ChatSend {
                    client_id: f.client_id,
                    target: f.target,
                    kind: f.kind,
                    payload: f.payload.get().to_string(),
                    persist: f.persist,
                    counted: f.counted,
                    priority: f.priority,
                    must_ack: f.must_ack,
                    mentions: f.mentions,
                    mention_all: f.mention_all,
                })
            }
            "chat_history" => {
                let f: ChatHistoryF = fields(value, &ty)?;
                if f.before.is_some() && f.after.is_some() {
                    return Err(bad("give before or after, not both".into(), Some("chat_history")));
                }
                let limit = f.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
                if limit == 0 || limit > HISTORY_MAX_LIMIT {
                    return Err(bad(format!("limit must be 1..={HISTORY_MAX_LIMIT}"), Some("chat_history")));
                }
                ClientMsg::ChatHistory { id: f.id, target: f.target, before: f.before, after: f.after, limit }
            }
            "chat_resume" => {
                let f: ChatResumeF = fields(value, &ty)?;
                if f.conversations.len() > MAX_RESUME {
                    return Err(bad(format!("more than {MAX_RESUME} positions"), Some("chat_resume")));
                }
                ClientMsg::ChatResume { conversations: f.conversations }
            }
            "chat_receipt" => {
                let f: ChatReceiptF = fields(value, &ty)?;
                ClientMsg::ChatReceipt { conversation: f.conversation, delivered: f.delivered, read: f.read }
            }
            "chat_receipts" => {
                let f: IdConversationF = fields(value, &ty)?;
                ClientMsg::ChatReceipts { id: f.id, conversation: f.conversation }
            }
            "chat_typing" => {
                let f: ChatTypingF = fields(value, &ty)?;
                ClientMsg::ChatTyping { target: f.target, typing: f.typing }
            }
            "chat_recall" => {
                let f: ChatRecallF = fields(value, &ty)?;
                ClientMsg::ChatRecall { client_id: f.client_id, target: f.target, seq: f.seq }
            }
            "chat_edit" => {
                let f: ChatEditF = fields(value, &ty)?;
                ClientMsg::ChatEdit {
                    client_id: f.client_id,
                    target: f.target,
                    seq: f.seq,
                    payload: f.payload.get().to_string(),
                }
            }
            "chat_alert_ack" => {
                let f: AlertF = fields(value, &ty)?;
                ClientMsg::ChatAlertAck { conversation: f.conversation, seq: f.seq }
            }
            "chat_alert_status" => {
                let f: AlertF = fields(value, &ty)?;
                ClientMsg::ChatAlertStatus { id: f.id, conversation: f.conversation, seq: f.seq }
            }
            "chat_mute" => {
                let f: ChatMuteF = fields(value, &ty)?;
                ClientMsg::ChatMute { identity: f.identity, muted: f.muted, duration_secs: f.duration_secs }
            }
            _ => {
                return Err(ParseError {
                    code: ErrorCode::UnknownType,
                    message: format!("unknown message type {ty:?}"),
                    req_type: Some(ty),
                })
            }
        };
        Ok(msg)
    }

    /// Is this a chat message that takes a chat rate-limit token (send, recall, edit)?
    pub fn is_chat_message(&self) -> bool {
        matches!(self, ClientMsg::ChatSend(_) | ClientMsg::ChatRecall { .. } | ClientMsg::ChatEdit { .. })
    }

    /// Is this a chat request (handled by the session's chat half)?
    pub fn is_chat(&self) -> bool {
        matches!(
            self,
            ClientMsg::ChatSend(_)
                | ClientMsg::ChatHistory { .. }
                | ClientMsg::ChatResume { .. }
                | ClientMsg::ChatReceipt { .. }
                | ClientMsg::ChatReceipts { .. }
                | ClientMsg::ChatTyping { .. }
                | ClientMsg::ChatRecall { .. }
                | ClientMsg::ChatEdit { .. }
                | ClientMsg::ChatAlertAck { .. }
                | ClientMsg::ChatAlertStatus { .. }
                | ClientMsg::ChatMute { .. }
        )
    }

    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMsg::Join { .. } => "join",
            ClientMsg::Offer { .. } => "offer",
            ClientMsg::Answer { .. } => "answer",
            ClientMsg::Candidate { .. } => "candidate",
            ClientMsg::Subscribe { .. } => "subscribe",
            ClientMsg::Unsubscribe { .. } => "unsubscribe",
            ClientMsg::Mute { .. } => "mute",
            ClientMsg::TrackSettings { .. } => "track_settings",
            ClientMsg::Ping { .. } => "ping",
            ClientMsg::Leave => "leave",
            ClientMsg::ChatSend(_) => "chat_send",
            ClientMsg::ChatHistory { .. } => "chat_history",
            ClientMsg::ChatResume { .. } => "chat_resume",
            ClientMsg::ChatReceipt { .. } => "chat_receipt",
            ClientMsg::ChatReceipts { .. } => "chat_receipts",
            ClientMsg::ChatTyping { .. } => "chat_typing",
            ClientMsg::ChatRecall { .. } => "chat_recall",
            ClientMsg::ChatEdit { .. } => "chat_edit",
            ClientMsg::ChatAlertAck { .. } => "chat_alert_ack",
            ClientMsg::ChatAlertStatus { .. } => "chat_alert_status",
            ClientMsg::ChatMute { .. } => "chat_mute",
        }
    }
}

/// A published track as the room sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrackInfo {
    pub id: String,
    pub kind: &'static str,
    pub source: TrackSource,
    pub name: String,
    pub muted: bool,
    /// Only in the publisher's own `track_published`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
}

/// A participant as the room sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParticipantInfo {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
    /// Opaque, from the token or the admin API.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metadata: String,
}

/// One entry of `active_speakers`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpeakerInfo {
    pub participant_id: String,
    /// Smoothed loudness, 0 (silence) to 1 (0 dBov).
    pub level: f32,
}

/// One chat message as sent in `chat_message`, `chat_history` and `chat_alert`.
#[derive(Debug, Serialize)]
pub struct ChatMessageView<'a> {
    /// `chat_message` when this is a frame of its own; absent inside a list.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<&'static str>,
    pub conversation: &'a str,
    /// Absent for ephemeral messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub sender: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    pub kind: &'a str,
    /// Absent once recalled or erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a RawValue>,
    pub time: u64,
    /// `normal`, `edited`, `recalled`, `erased`.
    #[serde(skip_serializing_if = "is_normal")]
    pub state: &'static str,
    #[serde(skip_serializing_if = "is_normal")]
    pub priority: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub must_ack: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mention_all: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub mentions: &'a [String],
    /// The receiving member is mentioned (by name or `@all`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mentioned: bool,
    #[serde(skip_serializing_if = "is_true")]
    pub counted: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_normal(s: &&'static str) -> bool {
    *s == "normal"
}

/// The wire name of a priority.
pub fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Low => "low",
        Priority::Normal => "normal",
        Priority::High => "high",
    }
}

fn state_name(s: MessageState) -> &'static str {
    match s {
        MessageState::Normal => "normal",
        MessageState::Edited => "edited",
        MessageState::Recalled => "recalled",
        MessageState::Erased => "erased",
    }
}

impl<'a> ChatMessageView<'a> {
    /// The view of a stored message; `payload` is its parsed JSON text.
    pub fn stored(m: &'a StoredMessage, payload: Option<&'a RawValue>, mentioned: bool) -> ChatMessageView<'a> {
        ChatMessageView {
            ty: None,
            conversation: m.conversation.as_str(),
            seq: Some(m.seq),
            sender: &m.sender,
            client_id: Some(&m.client_id),
            kind: &m.kind,
            payload,
            time: m.server_time_ms,
            state: state_name(m.state),
            priority: priority_name(m.flags.priority),
            must_ack: m.flags.must_ack,
            mention_all: m.flags.mention_all,
            mentions: &m.flags.mentions,
            mentioned,
            counted: m.flags.counted,
            ephemeral: false,
        }
    }
}

/// A stored message as JSON text: a `chat_message` frame when `frame`, else an element of a list.
pub fn encode_stored(m: &StoredMessage, mentioned: bool, frame: bool) -> String {
    let payload: Option<&RawValue> = m.payload.as_deref().and_then(|p| serde_json::from_str(p).ok());
    let mut view = ChatMessageView::stored(m, payload, mentioned);
    if frame {
        view.ty = Some("chat_message");
    }
    serde_json::to_string(&view).expect("chat messages always serialize")
}

/// The `chat_message` frame of a stored message for a member (`mentioned`: that member is mentioned).
pub fn chat_message_frame(m: &StoredMessage, mentioned: bool) -> String {
    encode_stored(m, mentioned, true)
}

/// One receipt in `chat_receipts`.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptView {
    pub identity: String,
    pub delivered: u64,
    pub read: u64,
}

/// One acknowledgement in `chat_alert_status`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertAckView {
    pub identity: String,
    pub at: u64,
}

/// Messages the server sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Joined {
        v: u32,
        room: String,
        /// The room's metadata (set by the admin API; empty if none).
        room_metadata: String,
        server_version: &'static str,
        participant: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: String,
        reason: &'static str,
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
        permissions: crate::auth::Permissions,
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
        kind: &'static str,
        mid: String,
    },
    Unsubscribed {
        track_id: String,
        reason: &'static str,
    },
    ActiveSpeakers {
        speakers: Vec<SpeakerInfo>,
    },
    /// To a subscriber: what it receives of a video track now (another layer, paused, resumed).
    StreamState {
        track_id: String,
        /// `active` or `paused`.
        state: &'static str,
        /// The layer forwarded (`q`, `h`, `f`, lowest to highest), `null` without simulcast; only when active.
        #[serde(skip_serializing_if = "Option::is_none")]
        layer: Option<Option<&'static str>>,
        /// Why it is paused (`bandwidth`); only when paused.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
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
    Pong {
        ts: serde_json::Value,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        req_type: Option<String>,
        /// The `client_id` of the refused chat message, so the client's outbox knows which.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// A chat message is stored (or, `ephemeral`, was passed on without being stored).
    ChatAck {
        client_id: String,
        conversation: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
        time: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        ephemeral: bool,
        /// A low-priority message the room's quota shed: it reached no one.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        shed: bool,
    },
    ChatHistory {
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
        id: serde_json::Value,
        conversation: String,
        epoch: u64,
        first_seq: u64,
        last_seq: u64,
        messages: Vec<Box<RawValue>>,
    },
    /// After the replay of one conversation of a resume (or, `fresh`, where a conversation stands at join).
    ChatResumed {
        conversation: String,
        /// `ok`, `fresh`, `not_recovered` or `reset`.
        status: &'static str,
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
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
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
        #[serde(skip_serializing_if = "Option::is_none")]
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
        message: Box<RawValue>,
    },
    /// The answer to `chat_alert_ack`: `acked`, `already_acked` or `not_asked`.
    ChatAlertAck {
        conversation: String,
        seq: u64,
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
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
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
        id: serde_json::Value,
        conversation: String,
        seq: u64,
        acked: Vec<AlertAckView>,
        pending: Vec<String>,
    },
    Leave {
        reason: &'static str,
    },
}

impl ServerMsg {
    /// Encode as one text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>, req_type: Option<&str>) -> ServerMsg {
        ServerMsg::Error { code, message: message.into(), req_type: req_type.map(str::to_string), client_id: None }
    }

    /// The `chat_ack` of an ephemeral message (`shed`: the room's quota dropped it).
    pub fn ephemeral_ack(
        client_id: String,
        conversation: &crate::chat::ConversationId,
        time: u64,
        shed: bool,
    ) -> ServerMsg {
        ServerMsg::ChatAck {
            client_id,
            conversation: conversation.to_string(),
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
            client_id: Some(client_id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok: &[(&str, ClientMsg)] = &[
            (
                r#"{"type":"join","v":1,"token":"t"}"#,
                ClientMsg::Join { v: 1, token: "t".into(), auto_subscribe: true, chat: Vec::new() },
            ),
            (
                r#"{"type":"join","v":1,"token":"t","auto_subscribe":false,"extra":1}"#,
                ClientMsg::Join { v: 1, token: "t".into(), auto_subscribe: false, chat: Vec::new() },
            ),
            (r#"{"type":"answer","id":3,"sdp":"v=0"}"#, ClientMsg::Answer { id: 3, sdp: "v=0".into() }),
            (r#"{"type":"leave"}"#, ClientMsg::Leave),
            (r#"{"type":"ping","ts":5}"#, ClientMsg::Ping { ts: serde_json::json!(5) }),
            (
                r#"{"type":"mute","track_id":"TR_1","muted":true}"#,
                ClientMsg::Mute { track_id: "TR_1".into(), muted: true },
            ),
            (
                r#"{"type":"track_settings","track_id":"TR_1","width":320,"height":180}"#,
                ClientMsg::TrackSettings {
                    track_id: "TR_1".into(),
                    width: Some(320),
                    height: Some(180),
                    hidden: false,
                },
            ),
            (
                r#"{"type":"track_settings","track_id":"TR_1","hidden":true}"#,
                ClientMsg::TrackSettings { track_id: "TR_1".into(), width: None, height: None, hidden: true },
            ),
        ];
        for (text, want) in ok {
            assert_eq!(&ClientMsg::parse(text).unwrap(), want, "{text}");
        }
        let bad: &[(&str, ErrorCode)] = &[
            ("", ErrorCode::BadMessage),
            ("not json", ErrorCode::BadMessage),
            ("[1,2]", ErrorCode::BadMessage),
            ("{}", ErrorCode::BadMessage),
            (r#"{"type":5}"#, ErrorCode::BadMessage),
            (r#"{"type":"dance"}"#, ErrorCode::UnknownType),
            (r#"{"type":"join","v":"one","token":"t"}"#, ErrorCode::BadMessage),
            (r#"{"type":"offer","sdp":"x"}"#, ErrorCode::BadMessage),
            (r#"{"type":"subscribe","track_ids":"TR_1"}"#, ErrorCode::BadMessage),
            (r#"{"type":"mute","track_id":"TR_1"}"#, ErrorCode::BadMessage),
            (r#"{"type":"track_settings","track_id":"TR_1","width":320}"#, ErrorCode::BadMessage),
            (r#"{"type":"track_settings","track_id":"TR_1","width":-5,"height":1}"#, ErrorCode::BadMessage),
        ];
        for (text, code) in bad {
            assert_eq!(ClientMsg::parse(text).unwrap_err().code, *code, "{text}");
        }
    }

    #[test]
    fn chat_examples_of_the_protocol_document_parse() {
        let doc = include_str!("../../docs/protocol.md");
        let mut parsed = 0;
        for line in doc.lines().filter(|l| l.starts_with(r#"{"type":"chat_"#)) {
            let ty = line.split('"').nth(3).unwrap_or_default();
            let client_side = [
                "chat_send",
                "chat_history",
                "chat_resume",
                "chat_typing",
                "chat_recall",
                "chat_edit",
                "chat_alert_ack",
                "chat_alert_status",
                "chat_receipts",
                "chat_receipt",
                "chat_mute",
            ];
            if !client_side.contains(&ty) || line.contains(r#""identity":"#) || line.contains(r#""status":"#) {
                continue; // a server message of the same name
            }
            if ty == "chat_history" && line.contains("epoch") {
                continue;
            }
            let m = ClientMsg::parse(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
            assert_eq!(m.type_name(), ty);
            assert!(m.is_chat());
            parsed += 1;
        }
        assert!(parsed >= 10, "found {parsed} client chat examples");
        let join = r#"{"type":"join","v":1,"token":"t","chat":[{"conversation":"room:demo","epoch":5214087365517,"last_seq":41}]}"#;
        assert!(matches!(ClientMsg::parse(join), Ok(ClientMsg::Join { chat, .. }) if chat[0].last_seq == 41));
    }

    #[test]
    fn chat_message_frames_leave_defaults_out() {
        use crate::chat::{ConversationId, Flags};
        let m = StoredMessage {
            conversation: ConversationId::room("demo").unwrap(),
            seq: 42,
            sender: "alice".into(),
            client_id: "7b0c-01".into(),
            kind: "text".into(),
            payload: Some(r#"{"text":"hello @bob"}"#.into()),
            flags: Flags { mentions: vec!["bob".into()], ..Flags::default() },
            server_time_ms: 1764000000123,
            state: MessageState::Normal,
        };
        assert_eq!(
            chat_message_frame(&m, true),
            r#"{"type":"chat_message","conversation":"room:demo","seq":42,"sender":"alice","client_id":"7b0c-01","kind":"text","payload":{"text":"hello @bob"},"time":1764000000123,"mentions":["bob"],"mentioned":true}"#
        );
        let recalled = StoredMessage { payload: None, state: MessageState::Recalled, ..m };
        let text = encode_stored(&recalled, false, false);
        assert!(text.starts_with(r#"{"conversation":"room:demo","seq":42"#) && text.contains(r#""state":"recalled""#));
        assert!(!text.contains("payload"));
    }

    #[test]
    fn encode_examples() {
        let m = ServerMsg::error(ErrorCode::UnknownType, "unknown message type \"dance\"", Some("dance"));
        assert_eq!(
            m.to_json(),
            r#"{"type":"error","code":"unknown_type","message":"unknown message type \"dance\"","req_type":"dance"}"#
        );
        assert_eq!(ServerMsg::Pong { ts: serde_json::json!(1) }.to_json(), r#"{"type":"pong","ts":1}"#);
        // The examples of docs/protocol.md.
        let active = ServerMsg::StreamState {
            track_id: "TR_4mZk2LpQ".into(),
            state: "active",
            layer: Some(Some("h")),
            reason: None,
        };
        assert_eq!(
            active.to_json(),
            r#"{"type":"stream_state","track_id":"TR_4mZk2LpQ","state":"active","layer":"h"}"#
        );
        let plain =
            ServerMsg::StreamState { track_id: "TR_1".into(), state: "active", layer: Some(None), reason: None };
        assert_eq!(plain.to_json(), r#"{"type":"stream_state","track_id":"TR_1","state":"active","layer":null}"#);
        let paused = ServerMsg::StreamState {
            track_id: "TR_4mZk2LpQ".into(),
            state: "paused",
            layer: None,
            reason: Some("bandwidth"),
        };
        assert_eq!(
            paused.to_json(),
            r#"{"type":"stream_state","track_id":"TR_4mZk2LpQ","state":"paused","reason":"bandwidth"}"#
        );
        let layers = ServerMsg::SetLayers {
            track_id: "TR_4mZk2LpQ".into(),
            layers: [("q", true), ("h", true), ("f", false)]
                .map(|(rid, active)| LayerActive { rid: rid.into(), active })
                .to_vec(),
        };
        assert_eq!(
            layers.to_json(),
            r#"{"type":"set_layers","track_id":"TR_4mZk2LpQ","layers":[{"rid":"q","active":true},{"rid":"h","active":true},{"rid":"f","active":false}]}"#
        );
    }
}
