//! The client side of the Courier signaling protocol, version 1 (`docs/protocol.md`).
//!
//! media-tests reaches the server only over the network, like any client. The wire messages are
//! `courier_protocol`'s (the crate native clients share with the server, never the server itself);
//! what keeps both honest is that crate's golden tests, which check every example of the document.
//!
//! - [`ClientMessage`] / [`ServerMessage`]: the JSON messages (`courier_protocol`'s `ClientMsg` and
//!   `ServerMsg`).
//! - [`Negotiation`]: who may offer when. The server is polite, this client is impolite: while
//!   its own offer is outstanding it ignores server offers (the server re-offers after
//!   answering). Sans-I/O, unit-tested.
//! - [`Subscriptions`]: the `mid` → track map built from `subscribed`/`unsubscribed`, which is how
//!   an incoming RTP stream is labelled with the server's track id.
//! - [`rewrite_candidates`]: points the server's ICE candidates at another address (the
//!   impairment relay, [`crate::relay`]).
//! - [`follow_redirect`]: where a cluster's `redirect` (or WHIP's HTTP 307/308) sends the client, and when a
//!   chain of them is too long ([`MAX_REDIRECTS`]). Pure, unit-tested.
//! - [`SignalConnection`]: the WebSocket itself (text frames, one JSON object each).
//!
//! Unknown server message types are ignored (they parse as `ServerMessage::Unknown`).

use std::collections::HashMap;
use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use courier_protocol::{
    ClientMsg as ClientMessage, ErrorCode, IceServer, Joined, LayerActive, MediaKind, OfferTrack, ParticipantInfo,
    ServerMsg as ServerMessage, StreamStateKind, TrackInfo, TrackSource, VERSION as PROTOCOL_VERSION,
};

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
// Redirects

/// How many redirects in a row a join (or a WHIP/WHEP `POST`) follows before it fails (docs/protocol.md,
/// `redirect`): enough for a load balancer → a stale node → the room's node, short enough to stop a loop at once.
pub const MAX_REDIRECTS: usize = 3;

/// Why a redirect is not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    /// More than [`MAX_REDIRECTS`] in a row (a loop, or a cluster still moving the room).
    #[error("too many redirects: more than {max} in a row, the last to {last}", max = MAX_REDIRECTS)]
    TooMany {
        /// Where the one too many pointed.
        last: String,
    },
    /// The target does not parse, or is not of a scheme this client speaks there.
    #[error("redirect to a bad URL {url:?}: {reason}")]
    BadUrl {
        /// The target as the server sent it.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where the `hop`-th redirect in a row (1, 2, …) sends a request made to `current`: `to` resolved against `current`
/// (so a relative target works, as HTTP's `Location` allows), if its scheme is one of `schemes` (`["ws", "wss"]` for
/// the signaling socket, `["http"]` for WHIP). The target is untrusted input: every failure is an error, never a
/// panic.
pub fn follow_redirect(hop: usize, current: &str, to: &str, schemes: &[&str]) -> Result<url::Url, RedirectError> {
    if hop > MAX_REDIRECTS {
        return Err(RedirectError::TooMany { last: to.to_owned() });
    }
    let bad = |reason: String| RedirectError::BadUrl { url: to.to_owned(), reason };
    if to.is_empty() {
        return Err(bad("empty".to_owned()));
    }
    let base = url::Url::parse(current).map_err(|e| bad(format!("the current URL {current:?}: {e}")))?;
    let target = base.join(to).map_err(|e| bad(e.to_string()))?;
    if !schemes.contains(&target.scheme()) {
        return Err(bad(format!("scheme {} is not one of {schemes:?}", target.scheme())));
    }
    Ok(target)
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
#[derive(Debug, Clone)]
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
                    return Ok(match ServerMessage::parse(&text) {
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
    fn redirects_are_followed_three_times_then_refused() {
        const WS: &[&str] = &["ws", "wss"];
        let here = "ws://127.0.0.1:7001/rtc";
        for hop in 1..=MAX_REDIRECTS {
            assert_eq!(
                follow_redirect(hop, here, "ws://127.0.0.1:7002/rtc", WS).unwrap().as_str(),
                "ws://127.0.0.1:7002/rtc"
            );
        }
        assert_eq!(
            follow_redirect(MAX_REDIRECTS + 1, here, "ws://127.0.0.1:7002/rtc", WS),
            Err(RedirectError::TooMany { last: "ws://127.0.0.1:7002/rtc".into() })
        );
        // (target, resolved or None for refused)
        let cases = [
            ("wss://node-b.example.com/rtc", Some("wss://node-b.example.com/rtc")),
            ("/b/rtc", Some("ws://127.0.0.1:7001/b/rtc")),
            ("//10.0.0.2:7002/rtc", Some("ws://10.0.0.2:7002/rtc")),
            ("http://127.0.0.1:7002/rtc", None),
            ("javascript:alert(1)", None),
            ("", None),
            ("ws://[::1", None),
        ];
        for (to, expected) in cases {
            let got = follow_redirect(1, here, to, WS);
            assert_eq!(got.as_ref().ok().map(url::Url::as_str), expected, "{to:?}: {got:?}");
        }
        // WHIP: a 307's Location, relative or absolute, http only.
        let whip = "http://127.0.0.1:8001/whip";
        assert_eq!(
            follow_redirect(1, whip, "http://127.0.0.1:8002/whip", &["http"]).unwrap().as_str(),
            "http://127.0.0.1:8002/whip"
        );
        assert_eq!(
            follow_redirect(2, whip, "/whip?x=1", &["http"]).unwrap().as_str(),
            "http://127.0.0.1:8001/whip?x=1"
        );
        assert!(matches!(follow_redirect(1, whip, "ws://a/rtc", &["http"]), Err(RedirectError::BadUrl { .. })));
        let too_many = follow_redirect(4, whip, "/whip", &["http"]).unwrap_err().to_string();
        assert!(too_many.starts_with("too many redirects"), "{too_many}");
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
