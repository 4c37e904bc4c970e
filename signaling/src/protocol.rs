//! Protocol v1 wire messages (see `docs/protocol.md`): parsing what clients send and encoding what the server
//! sends. This module only parses and encodes; it decides nothing.
//!
//! Parsing happens in two steps so every failure has its own error code: the frame must be a JSON object with a
//! string `type` (else `bad_message`), the type must be known (else `unknown_type`), and the fields must have the
//! right types (else `bad_message` naming the type).

use serde::{Deserialize, Serialize};

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

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    Join { v: u32, token: String, auto_subscribe: bool },
    Offer { id: u64, sdp: String, tracks: Vec<OfferTrack> },
    Answer { id: u64, sdp: String },
    Candidate { candidate: String, sdp_mid: Option<String> },
    Subscribe { track_ids: Vec<String> },
    Unsubscribe { track_ids: Vec<String> },
    Mute { track_id: String, muted: bool },
    TrackSettings { track_id: String, width: Option<u16>, height: Option<u16>, hidden: bool },
    Ping { ts: serde_json::Value },
    Leave,
}

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
}
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
                ClientMsg::Join { v: f.v, token: f.token, auto_subscribe: f.auto_subscribe }
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
}

/// One entry of `active_speakers`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpeakerInfo {
    pub participant_id: String,
    /// Smoothed loudness, 0 (silence) to 1 (0 dBov).
    pub level: f32,
}

/// Messages the server sends.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Joined {
        v: u32,
        room: String,
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
        ServerMsg::Error { code, message: message.into(), req_type: req_type.map(str::to_string) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok: &[(&str, ClientMsg)] = &[
            (r#"{"type":"join","v":1,"token":"t"}"#, ClientMsg::Join { v: 1, token: "t".into(), auto_subscribe: true }),
            (
                r#"{"type":"join","v":1,"token":"t","auto_subscribe":false,"extra":1}"#,
                ClientMsg::Join { v: 1, token: "t".into(), auto_subscribe: false },
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
