//! The client side of the Courier signaling protocol, version 1 (`docs/protocol.md`).
//!
//! media-tests reaches the server only over the network, like any client, so the wire messages
//! are defined here again rather than borrowed from the `signaling` crate: a test that shares the
//! server's types cannot notice that the server drifted from the document.
//!
//! - [`ClientMessage`] / [`ServerMessage`]: the JSON messages, as tagged serde enums.
//! - [`Negotiation`]: who may offer when. The server is polite, this client is impolite: while
//!   its own offer is outstanding it ignores server offers (the server re-offers after
//!   answering). Sans-I/O, unit-tested.
//! - [`Subscriptions`]: the `mid` → track map built from `subscribed`/`unsubscribed`, which is how
//!   an incoming RTP stream is labelled with the server's track id.
//! - [`rewrite_candidates`]: points the server's ICE candidates at another address (the
//!   impairment relay, [`crate::relay`]).
//! - [`SignalConnection`]: the WebSocket itself (text frames, one JSON object each).
//!
//! Beyond `docs/protocol.md`, this client already speaks the simulcast messages being added to
//! the server (`set_layers`, `stream_state`; see [`ServerMessage`]). Unknown types are still
//! ignored.

use std::collections::HashMap;
use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The protocol version this client speaks (`join.v`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

impl std::fmt::Display for MediaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        })
    }
}

/// What a published track shows (`source` in `offer.tracks` and track infos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A camera.
    Camera,
    /// A microphone.
    Microphone,
    /// A screen share.
    Screen,
    /// Audio of a screen share.
    ScreenAudio,
    /// Anything else, including values this client does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

/// One send m-line described in a client `offer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferTrack {
    /// The m-line's mid.
    pub mid: String,
    /// What it carries; the server defaults by kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TrackSource>,
    /// Free text, ≤ 128 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Messages this client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message: protocol version and access token.
    Join {
        /// Protocol version ([`PROTOCOL_VERSION`]).
        v: u32,
        /// The JWT.
        token: String,
        /// Subscribe to every track in the room automatically.
        auto_subscribe: bool,
    },
    /// An SDP offer adding, changing or removing published tracks.
    Offer {
        /// Chosen by the client; the answer repeats it.
        id: u64,
        /// The SDP.
        sdp: String,
        /// The send m-lines.
        tracks: Vec<OfferTrack>,
    },
    /// The answer to a server offer.
    Answer {
        /// The server offer's id.
        id: u64,
        /// The SDP.
        sdp: String,
    },
    /// A trickled local ICE candidate (empty string: end of candidates).
    Candidate {
        /// The candidate attribute value.
        candidate: String,
        /// The m-line it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
    },
    /// Ask to receive tracks.
    Subscribe {
        /// Track ids.
        track_ids: Vec<String>,
    },
    /// Stop receiving tracks.
    Unsubscribe {
        /// Track ids.
        track_ids: Vec<String>,
    },
    /// Mark an own track muted or unmuted.
    Mute {
        /// The track.
        track_id: String,
        /// New state.
        muted: bool,
    },
    /// How a received video track is shown (adaptive stream): the render size, or hidden.
    /// Without `width`/`height` the size limit is lifted.
    TrackSettings {
        /// The received track.
        track_id: String,
        /// Render width in device pixels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u16>,
        /// Render height in device pixels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u16>,
        /// Nothing of it is shown.
        hidden: bool,
    },
    /// Keepalive; echoed as `pong`.
    Ping {
        /// Any number.
        ts: u64,
    },
    /// Leave the room.
    Leave,
}

/// A participant in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// `PA_…`.
    pub id: String,
    /// The token's `sub`.
    pub identity: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Published tracks.
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
}

/// A published track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// `TR_…`.
    pub id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// What it shows.
    #[serde(default)]
    pub source: TrackSource,
    /// Free text.
    #[serde(default)]
    pub name: String,
    /// Muted by its publisher.
    #[serde(default)]
    pub muted: bool,
    /// Only in the publisher's own `track_published`: the m-line it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
}

/// The room snapshot from `joined`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    /// Protocol version.
    pub v: u32,
    /// Room name.
    pub room: String,
    /// Server version string.
    #[serde(default)]
    pub server_version: String,
    /// This client.
    pub participant: ParticipantInfo,
    /// Everyone else already in the room.
    #[serde(default)]
    pub participants: Vec<ParticipantInfo>,
}

/// Whether one simulcast layer of a published track should be sent (in `set_layers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerActive {
    /// The layer's RID.
    pub rid: String,
    /// Send it (`true`) or stop sending it (`false`).
    pub active: bool,
}

/// Messages the server sends. Unknown types parse as [`ServerMessage::Unknown`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `join`.
    Joined(Joined),
    /// Someone joined.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        participant_id: String,
        /// `left`, `disconnected`, `replaced`, `server_shutdown`.
        #[serde(default)]
        reason: String,
    },
    /// A track was published (also sent to its publisher, with `mid`).
    TrackPublished {
        /// The publisher.
        participant_id: String,
        /// The track.
        track: TrackInfo,
    },
    /// A track was unpublished.
    TrackUnpublished {
        /// The publisher.
        participant_id: String,
        /// The track.
        track_id: String,
    },
    /// A track was muted or unmuted.
    TrackMuted {
        /// The publisher.
        participant_id: String,
        /// The track.
        track_id: String,
        /// New state.
        muted: bool,
    },
    /// This client will receive a track on `mid` (sent before the offer adding it).
    Subscribed {
        /// The track.
        track_id: String,
        /// Its publisher.
        participant_id: String,
        /// Its kind.
        kind: MediaKind,
        /// The m-line of this client's peer connection that carries it.
        mid: String,
    },
    /// This client no longer receives a track.
    Unsubscribed {
        /// The track.
        track_id: String,
        /// `requested`, `unpublished`, `participant_left`.
        #[serde(default)]
        reason: String,
    },
    /// A server offer (adds or stops receive m-lines).
    Offer {
        /// Repeat it in the answer.
        id: u64,
        /// The SDP.
        sdp: String,
    },
    /// The server's answer to a client offer.
    Answer {
        /// The client offer's id.
        id: u64,
        /// The SDP.
        sdp: String,
    },
    /// Reply to `ping`.
    Pong {
        /// The ping's `ts`.
        #[serde(default)]
        ts: serde_json::Value,
    },
    /// A request failed; the connection stays up.
    Error {
        /// Stable code (`sdp_rejected`, `permission_denied`, …).
        code: String,
        /// For humans.
        #[serde(default)]
        message: String,
        /// The type of the message that failed, when known.
        #[serde(default)]
        req_type: Option<String>,
    },
    /// The server is about to close the socket.
    Leave {
        /// `server_shutdown`, `replaced`, `removed`.
        #[serde(default)]
        reason: String,
    },
    /// To a publisher (dynacast): which simulcast layers of its track anyone receives; stop
    /// sending the inactive ones, resume (with a keyframe) the active ones.
    /// `{"type":"set_layers","track_id":"TR_…","layers":[{"rid":"q","active":true},…]}`
    SetLayers {
        /// The publisher's own track (mapped to its m-line through `track_published.mid`).
        track_id: String,
        /// Per layer.
        layers: Vec<LayerActive>,
    },
    /// To a subscriber: what it receives of a track now.
    /// `{"type":"stream_state","track_id":"TR_…","state":"active","layer":"h"}` or
    /// `{"type":"stream_state","track_id":"TR_…","state":"paused","reason":"bandwidth"}`
    StreamState {
        /// The received track.
        track_id: String,
        /// `active` or `paused`.
        state: String,
        /// When active: the RID of the layer forwarded.
        #[serde(default)]
        layer: Option<String>,
        /// When paused: why (`bandwidth`, …).
        #[serde(default)]
        reason: Option<String>,
    },
    /// A trickled server candidate. Courier puts its only candidate in its SDP and never sends
    /// this; it is accepted (and rewritten with `udp_via`) should that change.
    Candidate {
        /// The candidate attribute value.
        candidate: String,
        /// The m-line it belongs to.
        #[serde(default)]
        sdp_mid: Option<String>,
    },
    /// A message type this client does not know (ignored, per the protocol's forward rules).
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// Negotiation

/// What to do with a server `offer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerOfferAction {
    /// Apply it and answer with its id.
    Answer,
    /// Ignore it: our own offer is outstanding, and the server re-offers after answering.
    IgnoreGlare,
}

/// What to do with a server `answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerAction {
    /// It answers our outstanding offer: apply it.
    Apply,
    /// It does not (no offer outstanding, or another id): drop it.
    Stale,
}

/// The offer/answer bookkeeping of one connection, client side.
///
/// Inputs are `handle_*`, local wishes `request_offer`, and output `poll_offer`, which hands out
/// the id of the next offer to send when one is wanted and none is outstanding. Call
/// `poll_offer` after every input; calling it again is a harmless no-op.
#[derive(Debug, Clone)]
pub struct Negotiation {
    next_id: u64,
    outstanding: Option<u64>,
    wanted: bool,
}

impl Default for Negotiation {
    fn default() -> Self {
        Self::new()
    }
}

impl Negotiation {
    /// Nothing outstanding, nothing wanted; the first offer gets id 1.
    pub fn new() -> Self {
        Self { next_id: 1, outstanding: None, wanted: false }
    }

    /// The id of our offer awaiting its answer.
    pub fn outstanding(&self) -> Option<u64> {
        self.outstanding
    }

    /// Whether an offer is wanted but not yet sent.
    pub fn is_offer_wanted(&self) -> bool {
        self.wanted
    }

    /// Our published tracks changed: an offer is needed (merged with any already wanted).
    pub fn request_offer(&mut self) {
        self.wanted = true;
    }

    /// The id for the offer to send now, if one is wanted and none is outstanding. The offer
    /// counts as outstanding from here on.
    pub fn poll_offer(&mut self) -> Option<u64> {
        if !self.wanted || self.outstanding.is_some() {
            return None;
        }
        self.wanted = false;
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding = Some(id);
        Some(id)
    }

    /// A server offer arrived.
    pub fn handle_server_offer(&self, _id: u64) -> ServerOfferAction {
        if self.outstanding.is_some() {
            ServerOfferAction::IgnoreGlare
        } else {
            ServerOfferAction::Answer
        }
    }

    /// A server answer arrived. An applied answer clears the outstanding offer.
    pub fn handle_answer(&mut self, id: u64) -> AnswerAction {
        if self.outstanding == Some(id) {
            self.outstanding = None;
            AnswerAction::Apply
        } else {
            AnswerAction::Stale
        }
    }

    /// Our outstanding offer failed (the server sent an `error` for it, or we could not apply
    /// its answer). Returns its id; the caller rolls the local description back. The change it
    /// carried is wanted again only if `retry`.
    pub fn handle_offer_failed(&mut self, retry: bool) -> Option<u64> {
        let id = self.outstanding.take();
        if id.is_some() && retry {
            self.wanted = true;
        }
        id
    }

    /// We could not even create or send the offer `poll_offer` handed out.
    pub fn handle_offer_not_sent(&mut self) {
        self.outstanding = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/// One track this client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The server's track id.
    pub track_id: String,
    /// Its publisher.
    pub participant_id: String,
    /// Its kind.
    pub kind: MediaKind,
    /// The m-line carrying it.
    pub mid: String,
}

/// The mid → subscription map, kept from `subscribed` / `unsubscribed`.
///
/// An unsubscribed track stays known on its mid ("retired") until another track is subscribed
/// there, so packets still in flight when `unsubscribed` arrives keep their label.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions {
    by_mid: HashMap<String, Subscription>,
    retired: HashMap<String, Subscription>,
}

impl Subscriptions {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// A `subscribed` arrived; a later subscription on the same mid replaces the earlier one.
    pub fn handle_subscribed(&mut self, sub: Subscription) {
        self.by_mid.retain(|_, s| s.track_id != sub.track_id);
        self.retired.remove(&sub.mid);
        self.by_mid.insert(sub.mid.clone(), sub);
    }

    /// An `unsubscribed` arrived; returns what was removed.
    pub fn handle_unsubscribed(&mut self, track_id: &str) -> Option<Subscription> {
        let mid = self.by_mid.iter().find(|(_, s)| s.track_id == track_id).map(|(m, _)| m.clone())?;
        let sub = self.by_mid.remove(&mid)?;
        self.retired.insert(mid, sub.clone());
        Some(sub)
    }

    /// The track on `mid`: the current one, else the last one unsubscribed there.
    pub fn by_mid(&self, mid: &str) -> Option<&Subscription> {
        self.by_mid.get(mid).or_else(|| self.retired.get(mid))
    }

    /// Whether `track_id` is currently subscribed.
    pub fn is_subscribed(&self, track_id: &str) -> bool {
        self.by_mid.values().any(|s| s.track_id == track_id)
    }

    /// All current subscriptions.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.by_mid.values()
    }
}

// ---------------------------------------------------------------------------------------------
// Candidate rewriting

/// Rewrites one ICE candidate (`candidate:…` with or without the `candidate:` / `a=candidate:`
/// prefix) so that a UDP candidate's address and port become `to`; other candidates (TCP) and
/// lines that do not parse are returned unchanged.
///
/// This is how a client is put behind the impairment relay: the server only announces its own
/// host candidate, so the client is told the relay's address instead; the ICE-lite server then
/// sees the relay's upstream socket as the client's peer-reflexive address.
pub fn rewrite_candidate(candidate: &str, to: SocketAddr) -> String {
    let (prefix, body) = match candidate.find("candidate:") {
        Some(i) => candidate.split_at(i + "candidate:".len()),
        None => ("", candidate),
    };
    let mut fields: Vec<&str> = body.split(' ').collect();
    // foundation component transport priority address port "typ" type …
    if fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") || fields[6] != "typ" {
        return candidate.to_owned();
    }
    let (ip, port) = (to.ip().to_string(), to.port().to_string());
    fields[4] = &ip;
    fields[5] = &port;
    format!("{prefix}{}", fields.join(" "))
}

/// [`rewrite_candidate`] on every `a=candidate:` line of an SDP (line endings kept).
pub fn rewrite_candidates(sdp: &str, to: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let (text, end) = match line.strip_suffix("\r\n") {
            Some(t) => (t, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(t) => (t, "\n"),
                None => (line, ""),
            },
        };
        if text.starts_with("a=candidate:") {
            out.push_str(&rewrite_candidate(text, to));
        } else {
            out.push_str(text);
        }
        out.push_str(end);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Connection

/// A signaling connection failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The URL does not parse or is not ws:// / wss://.
    #[error("bad signaling URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The WebSocket failed (connect, read or write).
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// A message could not be encoded.
    #[error("encoding a message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<tokio_tungstenite::tungstenite::Error> for SignalError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        SignalError::WebSocket(Box::new(e))
    }
}

/// What [`SignalConnection::recv`] got.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A parsed server message.
    Message(ServerMessage),
    /// A text frame that is not a valid server message (logged by the caller, then skipped).
    Invalid {
        /// The parse error.
        error: String,
        /// The frame, truncated to 200 bytes.
        text: String,
    },
    /// The server closed the socket (or it ended without a close frame: `code` is `None`).
    Closed {
        /// The close code, e.g. 1000, 4001, 4009.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
}

/// One WebSocket to `/rtc`.
#[derive(Debug)]
pub struct SignalConnection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    closed: bool,
}

impl SignalConnection {
    /// Opens the WebSocket.
    pub async fn connect(url: &str) -> Result<Self, SignalError> {
        let parsed =
            url::Url::parse(url).map_err(|e| SignalError::Url { url: url.to_owned(), reason: e.to_string() })?;
        if parsed.scheme() != "ws" && parsed.scheme() != "wss" {
            return Err(SignalError::Url { url: url.to_owned(), reason: "scheme must be ws or wss".to_owned() });
        }
        let (ws, _response) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { ws, closed: false })
    }

    /// Sends one message as a text frame.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), SignalError> {
        let text = serde_json::to_string(msg)?;
        self.send_text(text).await
    }

    /// Sends a raw text frame (tests use this to send malformed input).
    pub async fn send_text(&mut self, text: String) -> Result<(), SignalError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Receives the next message. Cancel-safe: dropping the future loses nothing.
    ///
    /// Binary frames are skipped (the server never sends them); WebSocket pings are answered by
    /// tungstenite on the next write.
    pub async fn recv(&mut self) -> Result<Incoming, SignalError> {
        if self.closed {
            return Ok(Incoming::Closed { code: None, reason: String::new() });
        }
        loop {
            let Some(frame) = self.ws.next().await else {
                self.closed = true;
                return Ok(Incoming::Closed { code: None, reason: String::new() });
            };
            match frame {
                Ok(Message::Text(text)) => {
                    return Ok(match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(msg) => Incoming::Message(msg),
                        Err(e) => Incoming::Invalid { error: e.to_string(), text: text.chars().take(200).collect() },
                    });
                }
                Ok(Message::Close(frame)) => {
                    self.closed = true;
                    let (code, reason) = match frame {
                        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                        None => (None, String::new()),
                    };
                    return Ok(Incoming::Closed { code, reason });
                }
                Ok(_) => continue,
                Err(e) => {
                    self.closed = true;
                    return Err(e.into());
                }
            }
        }
    }

    /// Closes the socket from our side (normal closure), best effort.
    pub async fn close(&mut self) {
        if !self.closed {
            let _ = self
                .ws
                .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_messages_match_the_document() {
        let cases = vec![
            (
                ClientMessage::Join { v: 1, token: "t".into(), auto_subscribe: true },
                json!({"type":"join","v":1,"token":"t","auto_subscribe":true}),
            ),
            (
                ClientMessage::Offer {
                    id: 1,
                    sdp: "v=0".into(),
                    tracks: vec![
                        OfferTrack { mid: "0".into(), source: Some(TrackSource::Microphone), name: Some("mic".into()) },
                        OfferTrack { mid: "1".into(), source: Some(TrackSource::Camera), name: None },
                    ],
                },
                json!({"type":"offer","id":1,"sdp":"v=0","tracks":[
                    {"mid":"0","source":"microphone","name":"mic"},{"mid":"1","source":"camera"}]}),
            ),
            (ClientMessage::Answer { id: 7, sdp: "v=0".into() }, json!({"type":"answer","id":7,"sdp":"v=0"})),
            (
                ClientMessage::Candidate {
                    candidate: "candidate:1 1 udp 2130706431 127.0.0.1 50123 typ host".into(),
                    sdp_mid: Some("0".into()),
                },
                json!({"type":"candidate",
                    "candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50123 typ host","sdp_mid":"0"}),
            ),
            (
                ClientMessage::Subscribe { track_ids: vec!["TR_a".into()] },
                json!({"type":"subscribe","track_ids":["TR_a"]}),
            ),
            (
                ClientMessage::Unsubscribe { track_ids: vec!["TR_a".into()] },
                json!({"type":"unsubscribe","track_ids":["TR_a"]}),
            ),
            (
                ClientMessage::Mute { track_id: "TR_a".into(), muted: true },
                json!({"type":"mute","track_id":"TR_a","muted":true}),
            ),
            (
                ClientMessage::TrackSettings {
                    track_id: "TR_4mZk2LpQ".into(),
                    width: Some(320),
                    height: Some(180),
                    hidden: false,
                },
                json!({"type":"track_settings","track_id":"TR_4mZk2LpQ","width":320,"height":180,"hidden":false}),
            ),
            (
                ClientMessage::TrackSettings { track_id: "TR_a".into(), width: None, height: None, hidden: true },
                json!({"type":"track_settings","track_id":"TR_a","hidden":true}),
            ),
            (ClientMessage::Ping { ts: 1_732_406_400_123 }, json!({"type":"ping","ts":1_732_406_400_123u64})),
            (ClientMessage::Leave, json!({"type":"leave"})),
        ];
        for (msg, expected) in cases {
            assert_eq!(serde_json::to_value(&msg).unwrap(), expected, "{msg:?}");
        }
    }

    #[test]
    fn server_messages_from_the_document() {
        let cases: Vec<(&str, ServerMessage)> = vec![
            (
                r#"{"type":"joined","v":1,"room":"demo","server_version":"0.1.0",
                 "participant":{"id":"PA_9sQe1bXw","identity":"alice","name":"Alice","tracks":[]},
                 "participants":[{"id":"PA_2hTu8cVn","identity":"bob","name":"Bob",
                   "tracks":[{"id":"TR_4mZk2LpQ","kind":"video","source":"camera","name":"","muted":false}]}]}"#,
                ServerMessage::Joined(Joined {
                    v: 1,
                    room: "demo".into(),
                    server_version: "0.1.0".into(),
                    participant: ParticipantInfo {
                        id: "PA_9sQe1bXw".into(),
                        identity: "alice".into(),
                        name: "Alice".into(),
                        tracks: vec![],
                    },
                    participants: vec![ParticipantInfo {
                        id: "PA_2hTu8cVn".into(),
                        identity: "bob".into(),
                        name: "Bob".into(),
                        tracks: vec![TrackInfo {
                            id: "TR_4mZk2LpQ".into(),
                            kind: MediaKind::Video,
                            source: TrackSource::Camera,
                            name: "".into(),
                            muted: false,
                            mid: None,
                        }],
                    }],
                }),
            ),
            (
                r#"{"type":"participant_left","participant_id":"PA_2","reason":"left"}"#,
                ServerMessage::ParticipantLeft { participant_id: "PA_2".into(), reason: "left".into() },
            ),
            (
                r#"{"type":"track_published","participant_id":"PA_2",
                   "track":{"id":"TR_4","kind":"video","source":"camera","name":"","muted":false,"mid":"1"}}"#,
                ServerMessage::TrackPublished {
                    participant_id: "PA_2".into(),
                    track: TrackInfo {
                        id: "TR_4".into(),
                        kind: MediaKind::Video,
                        source: TrackSource::Camera,
                        name: "".into(),
                        muted: false,
                        mid: Some("1".into()),
                    },
                },
            ),
            (
                r#"{"type":"subscribed","track_id":"TR_4","participant_id":"PA_2","kind":"video","mid":"3"}"#,
                ServerMessage::Subscribed {
                    track_id: "TR_4".into(),
                    participant_id: "PA_2".into(),
                    kind: MediaKind::Video,
                    mid: "3".into(),
                },
            ),
            (r#"{"type":"offer","id":7,"sdp":"v=0"}"#, ServerMessage::Offer { id: 7, sdp: "v=0".into() }),
            (
                r#"{"type":"error","code":"unknown_type","message":"unknown message type \"dance\"","req_type":"dance"}"#,
                ServerMessage::Error {
                    code: "unknown_type".into(),
                    message: "unknown message type \"dance\"".into(),
                    req_type: Some("dance".into()),
                },
            ),
            (r#"{"type":"pong","ts":1732406400123}"#, ServerMessage::Pong { ts: json!(1_732_406_400_123u64) }),
            (
                r#"{"type":"leave","reason":"server_shutdown"}"#,
                ServerMessage::Leave { reason: "server_shutdown".into() },
            ),
            // Forward compatibility: unknown fields and types, unknown sources.
            (
                r#"{"type":"track_muted","participant_id":"P","track_id":"T","muted":true,"extra":1}"#,
                ServerMessage::TrackMuted { participant_id: "P".into(), track_id: "T".into(), muted: true },
            ),
            (r#"{"type":"chat_message","text":"hi"}"#, ServerMessage::Unknown),
            (
                r#"{"type":"set_layers","track_id":"TR_1","layers":[{"rid":"q","active":true},{"rid":"h","active":true},{"rid":"f","active":false}]}"#,
                ServerMessage::SetLayers {
                    track_id: "TR_1".into(),
                    layers: vec![
                        LayerActive { rid: "q".into(), active: true },
                        LayerActive { rid: "h".into(), active: true },
                        LayerActive { rid: "f".into(), active: false },
                    ],
                },
            ),
            (
                r#"{"type":"stream_state","track_id":"TR_1","state":"active","layer":"h"}"#,
                ServerMessage::StreamState {
                    track_id: "TR_1".into(),
                    state: "active".into(),
                    layer: Some("h".into()),
                    reason: None,
                },
            ),
            (
                r#"{"type":"stream_state","track_id":"TR_1","state":"paused","reason":"bandwidth"}"#,
                ServerMessage::StreamState {
                    track_id: "TR_1".into(),
                    state: "paused".into(),
                    layer: None,
                    reason: Some("bandwidth".into()),
                },
            ),
            (
                r#"{"type":"track_published","participant_id":"P","track":{"id":"T","kind":"audio","source":"hologram"}}"#,
                ServerMessage::TrackPublished {
                    participant_id: "P".into(),
                    track: TrackInfo {
                        id: "T".into(),
                        kind: MediaKind::Audio,
                        source: TrackSource::Unknown,
                        name: "".into(),
                        muted: false,
                        mid: None,
                    },
                },
            ),
        ];
        for (text, expected) in cases {
            let got: ServerMessage = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, expected, "{text}");
        }
        assert!(serde_json::from_str::<ServerMessage>(r#"{"type":"offer","id":"x"}"#).is_err());
        assert!(serde_json::from_str::<ServerMessage>(r#"[1,2]"#).is_err());
    }

    #[test]
    fn candidates_are_pointed_at_the_relay() {
        let relay: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let cases = [
            (
                "candidate:1 1 udp 2130706431 127.0.0.1 50123 typ host",
                "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
            ),
            (
                "a=candidate:abc 1 UDP 2130706431 10.0.0.1 3478 typ host generation 0",
                "a=candidate:abc 1 UDP 2130706431 127.0.0.1 40000 typ host generation 0",
            ),
            (
                "1 1 udp 1 192.168.1.2 9 typ srflx raddr 0.0.0.0 rport 0",
                "1 1 udp 1 127.0.0.1 40000 typ srflx raddr 0.0.0.0 rport 0",
            ),
            // TCP and garbage stay as they are.
            (
                "candidate:2 1 tcp 1 127.0.0.1 9 typ host tcptype passive",
                "candidate:2 1 tcp 1 127.0.0.1 9 typ host tcptype passive",
            ),
            ("candidate:nonsense", "candidate:nonsense"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(rewrite_candidate(input, relay), expected, "{input:?}");
        }
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 50123 typ host\r\na=end-of-candidates\r\n";
        let out = rewrite_candidates(sdp, relay);
        assert_eq!(out, sdp.replace("127.0.0.1 50123", "127.0.0.1 40000"));
        assert_eq!(
            rewrite_candidates("a=candidate:1 1 udp 1 ::1 5 typ host", relay),
            "a=candidate:1 1 udp 1 127.0.0.1 40000 typ host"
        );
    }

    #[test]
    fn glare_rules() {
        // (step, expected) sequences through the state machine.
        let mut n = Negotiation::new();
        assert_eq!(n.poll_offer(), None, "nothing wanted");
        assert_eq!(n.handle_server_offer(1), ServerOfferAction::Answer);

        n.request_offer();
        assert_eq!(n.poll_offer(), Some(1));
        assert_eq!(n.poll_offer(), None, "one outstanding at a time");
        // Glare: the server offered at the same time; we are impolite.
        assert_eq!(n.handle_server_offer(7), ServerOfferAction::IgnoreGlare);
        // Another local change while outstanding waits.
        n.request_offer();
        assert_eq!(n.poll_offer(), None);
        // A stale answer (wrong id) changes nothing.
        assert_eq!(n.handle_answer(9), AnswerAction::Stale);
        assert_eq!(n.outstanding(), Some(1));
        assert_eq!(n.handle_answer(1), AnswerAction::Apply);
        assert_eq!(n.handle_answer(1), AnswerAction::Stale, "answered twice");
        // The server's fresh offer is now answered.
        assert_eq!(n.handle_server_offer(8), ServerOfferAction::Answer);
        // The queued change goes out with a new id.
        assert_eq!(n.poll_offer(), Some(2));
        // The server rejects it: no retry.
        assert_eq!(n.handle_offer_failed(false), Some(2));
        assert_eq!(n.poll_offer(), None);
        assert_eq!(n.handle_offer_failed(false), None);
        // Failure with retry.
        n.request_offer();
        assert_eq!(n.poll_offer(), Some(3));
        assert_eq!(n.handle_offer_failed(true), Some(3));
        assert_eq!(n.poll_offer(), Some(4));
        n.handle_offer_not_sent();
        assert_eq!(n.outstanding(), None);
    }

    #[test]
    fn subscriptions_by_mid() {
        let sub = |t: &str, mid: &str| Subscription {
            track_id: t.into(),
            participant_id: "PA_1".into(),
            kind: MediaKind::Video,
            mid: mid.into(),
        };
        let mut s = Subscriptions::new();
        s.handle_subscribed(sub("TR_a", "2"));
        s.handle_subscribed(sub("TR_b", "3"));
        assert_eq!(s.by_mid("2").map(|s| s.track_id.as_str()), Some("TR_a"));
        // mid reused for another track
        s.handle_subscribed(sub("TR_c", "2"));
        assert_eq!(s.by_mid("2").map(|s| s.track_id.as_str()), Some("TR_c"));
        // a track moved to another mid
        s.handle_subscribed(sub("TR_b", "4"));
        assert!(s.by_mid("3").is_none());
        assert_eq!(s.handle_unsubscribed("TR_c").map(|s| s.mid), Some("2".into()));
        assert!(s.handle_unsubscribed("TR_c").is_none());
        assert_eq!(s.iter().count(), 1);
        assert!(!s.is_subscribed("TR_c"));
        // Late packets on mid 2 keep the retired label until mid 2 carries another track.
        assert_eq!(s.by_mid("2").map(|s| s.track_id.as_str()), Some("TR_c"));
        s.handle_subscribed(sub("TR_d", "2"));
        assert_eq!(s.by_mid("2").map(|s| s.track_id.as_str()), Some("TR_d"));
    }
}
