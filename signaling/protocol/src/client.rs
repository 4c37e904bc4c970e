//! Messages a client sends ([`ClientMsg`]): parsed by the server with [`ClientMsg::parse`], encoded by native
//! clients with [`ClientMsg::to_json`].
//!
//! Parsing happens in two steps so every failure has its own error code: the frame must be a JSON object with a
//! string `type` (else `bad_message`), the type must be known (else `unknown_type`), and the fields must have the
//! right types (else `bad_message` naming the type). Encoding leaves out fields that hold their default.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::chat::{is_default, is_true, Priority, ResumePos, Target};
use crate::codes::ErrorCode;
use crate::grants::TrackSource;

/// A track description in an offer's `tracks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct OfferTrack {
    pub mid: String,
    /// What it carries; the server defaults by kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub source: Option<TrackSource>,
    /// Free text, at most [`MAX_TRACK_NAME`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub name: Option<String>,
}

/// Longest track name in an offer, bytes.
pub const MAX_TRACK_NAME: usize = 128;

/// `chat_send`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChatSend {
    pub client_id: String,
    #[serde(flatten)]
    pub target: Target,
    #[serde(skip_serializing_if = "is_text")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub kind: String,
    /// The payload's JSON text (on the wire, the JSON value it holds).
    #[serde(serialize_with = "raw")]
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub payload: String,
    #[serde(skip_serializing_if = "is_true")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub persist: bool,
    #[serde(skip_serializing_if = "is_true")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub counted: bool,
    #[serde(skip_serializing_if = "is_default")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub priority: Priority,
    #[serde(skip_serializing_if = "is_default")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub must_ack: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub mentions: Vec<String>,
    #[serde(skip_serializing_if = "is_default")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub mention_all: bool,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// The first message: protocol version, access token, and where the client stands in its conversations.
    Join {
        v: u32,
        token: String,
        #[serde(skip_serializing_if = "is_true")]
        #[cfg_attr(feature = "ts", ts(optional = nullable))]
        auto_subscribe: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        #[cfg_attr(feature = "ts", ts(optional = nullable))]
        chat: Vec<ResumePos>,
    },
    Offer {
        id: u64,
        sdp: String,
        tracks: Vec<OfferTrack>,
    },
    Answer {
        id: u64,
        sdp: String,
    },
    /// A trickled ICE candidate (empty: end of candidates).
    Candidate {
        candidate: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        sdp_mid: Option<String>,
    },
    Subscribe {
        track_ids: Vec<String>,
    },
    Unsubscribe {
        track_ids: Vec<String>,
    },
    Mute {
        track_id: String,
        muted: bool,
    },
    /// How a received video track is shown: its render size (both or neither), or hidden.
    TrackSettings {
        track_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        width: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        height: Option<u16>,
        #[serde(skip_serializing_if = "is_default")]
        #[cfg_attr(feature = "ts", ts(optional = nullable))]
        hidden: bool,
    },
    Ping {
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
        #[cfg_attr(feature = "ts", ts(optional = nullable, type = "unknown"))]
        ts: serde_json::Value,
    },
    Leave,
    ChatSend(ChatSend),
    ChatHistory {
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
        #[cfg_attr(feature = "ts", ts(optional = nullable, type = "unknown"))]
        id: serde_json::Value,
        #[serde(flatten)]
        target: Target,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        before: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        after: Option<u64>,
        #[serde(skip_serializing_if = "is_default_limit")]
        #[cfg_attr(feature = "ts", ts(optional = nullable))]
        limit: usize,
    },
    ChatResume {
        conversations: Vec<ResumePos>,
    },
    ChatReceipt {
        conversation: String,
        #[serde(skip_serializing_if = "is_default")]
        #[cfg_attr(feature = "ts", ts(optional = nullable))]
        delivered: u64,
        #[serde(skip_serializing_if = "is_default")]
        #[cfg_attr(feature = "ts", ts(optional = nullable))]
        read: u64,
    },
    ChatReceipts {
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
        #[cfg_attr(feature = "ts", ts(optional = nullable, type = "unknown"))]
        id: serde_json::Value,
        conversation: String,
    },
    ChatTyping {
        #[serde(flatten)]
        target: Target,
        typing: bool,
    },
    ChatRecall {
        client_id: String,
        #[serde(flatten)]
        target: Target,
        seq: u64,
    },
    ChatEdit {
        client_id: String,
        #[serde(flatten)]
        target: Target,
        seq: u64,
        /// The payload's JSON text (on the wire, the JSON value it holds).
        #[serde(serialize_with = "raw")]
        #[cfg_attr(feature = "ts", ts(type = "unknown"))]
        payload: String,
    },
    ChatAlertAck {
        conversation: String,
        seq: u64,
    },
    ChatAlertStatus {
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
        #[cfg_attr(feature = "ts", ts(optional = nullable, type = "unknown"))]
        id: serde_json::Value,
        conversation: String,
        seq: u64,
    },
    ChatMute {
        identity: String,
        muted: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        duration_secs: Option<u64>,
    },
}

/// The same as [`ClientMsg::parse`] (for a client message inside other JSON, or a test server's reader).
impl<'de> Deserialize<'de> for ClientMsg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClientMsg, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        ClientMsg::parse(&value.to_string()).map_err(|e| serde::de::Error::custom(e.message))
    }
}

fn is_text(kind: &str) -> bool {
    kind == "text"
}

fn is_default_limit(limit: &usize) -> bool {
    *limit == HISTORY_DEFAULT_LIMIT
}

/// Writes JSON text as the JSON value it is (text that is not JSON is written as a string).
fn raw<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<&RawValue>(text) {
        Ok(v) => v.serialize(s),
        Err(_) => s.serialize_str(text),
    }
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
    /// The `id` of the failed request, when it had one (so a client with several requests open knows which).
    pub id: Option<serde_json::Value>,
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
    priority: Priority,
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
    /// Encode as one text frame (a native client's view).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client messages always serialize")
    }

    /// The `id` of a request that has one (`offer`, `answer`, `chat_history`, `chat_receipts`,
    /// `chat_alert_status`): its errors carry it back.
    pub fn request_id(&self) -> Option<serde_json::Value> {
        match self {
            ClientMsg::Offer { id, .. } | ClientMsg::Answer { id, .. } => Some((*id).into()),
            ClientMsg::ChatHistory { id, .. }
            | ClientMsg::ChatReceipts { id, .. }
            | ClientMsg::ChatAlertStatus { id, .. } => (!id.is_null()).then(|| id.clone()),
            _ => None,
        }
    }

    /// Parse one text frame. A failed request's error names its `type` and `id` when the frame had them.
    pub fn parse(text: &str) -> Result<ClientMsg, ParseError> {
        ClientMsg::parse_fields(text).map_err(|mut e| {
            if e.req_type.is_some() {
                let value = serde_json::from_str::<serde_json::Value>(text).ok();
                e.id = value.and_then(|mut v| v.get_mut("id").map(serde_json::Value::take)).filter(|v| !v.is_null());
            }
            e
        })
    }

    fn parse_fields(text: &str) -> Result<ClientMsg, ParseError> {
        let bad = |m: String, t: Option<&str>| ParseError {
            code: ErrorCode::BadMessage,
            message: m,
            req_type: t.map(str::to_string),
            id: None,
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
                id: None,
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
                if f.tracks.iter().any(|t| t.name.as_ref().is_some_and(|n| n.len() > MAX_TRACK_NAME)) {
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
                    id: None,
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
        // A failed request's error carries its id back.
        let e = ClientMsg::parse(r#"{"type":"chat_history","id":"h7","limit":0}"#).unwrap_err();
        assert_eq!(e.id, Some(serde_json::json!("h7")));
        let e = ClientMsg::parse(r#"{"type":"offer","id":4}"#).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::BadMessage, Some(serde_json::json!(4))));
        assert_eq!(ClientMsg::parse(r#"{"id":4}"#).unwrap_err().id, None);
    }
}
