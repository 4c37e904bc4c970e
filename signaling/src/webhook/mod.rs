//! Webhooks: signed HTTP POSTs that tell an application what happened in its rooms — rooms started and
//! finished, participants joined and left, tracks published, chat messages stored and recalled, alerts left
//! unacknowledged — delivered at least once, with retries, without ever slowing the rooms down.
//!
//! The rest of the server calls [`Webhooks::emit`] where a fact happens (the room registry for rooms, members and
//! tracks; the chat store's commit listener for messages). `emit` encodes the event once and pushes it into each
//! interested endpoint's bounded queue under a short lock: it never waits, so the request path and the store's
//! writer are never held up by a slow or dead receiver. One task per endpoint drains its queue over HTTP.
//!
//! # Layout
//!
//! - [`queue`]: sans-I/O: an endpoint's bounded queue, retries with backoff and jitter, drops, counters.
//! - [`sign`]: the `Courier-Signature` header (HMAC-SHA256 over time and body) and its check.
//! - [`alerts`]: sans-I/O: which must-acknowledge alerts to check for `alert_unacknowledged`, and when.
//! - `sender`: the async shell: one task per endpoint, the alert checker. The HTTP(S) client is
//!   [`crate::outbound`]'s, shared with the pre-send hook.
//!
//! Delivery is at least once while the process runs: queues are in memory, so events still queued when the server
//! stops (after its drain grace) are lost. Receivers de-duplicate by the event `id`.

pub mod alerts;
pub mod queue;
mod sender;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use courier_chat::store::{ChatStore, CommitListener, StoredMessage};
use courier_chat::ConversationId;

pub use courier_protocol::webhooks::{
    AlertView, EventKind, Facts, MessageView, ParticipantView, RecallView, RoomView, WebhookEvent,
};

/// The facts of an event about a conversation: its room, for a room's chat.
fn conversation_facts(c: &ConversationId) -> Facts {
    match c.as_room() {
        Some(room) => Facts::room(room),
        None => Facts::default(),
    }
}

/// One event, encoded once for every endpoint.
#[derive(Debug)]
pub struct Event {
    /// `EV_` and 20 random characters; the same on every retry.
    pub id: String,
    pub kind: EventKind,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// The JSON body.
    pub body: Bytes,
}

impl Event {
    pub fn new(kind: EventKind, created_at_ms: u64, facts: Facts) -> Event {
        let body = WebhookEvent {
            id: format!("EV_{}", crate::room::random_token(20)),
            event: kind,
            created_at: created_at_ms,
            facts,
        };
        let bytes = serde_json::to_vec(&body).expect("event bodies are plain structs of strings and numbers");
        Event { id: body.id, kind, created_at_ms, body: Bytes::from(bytes) }
    }
}

/// One receiver, validated (the `[[webhooks.endpoints]]` entries).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub url: String,
    /// HMAC key for the signature.
    pub secret: String,
    /// Events sent to it; `None` for all.
    pub events: Option<Vec<EventKind>>,
    /// Per request, connection included.
    pub timeout: Duration,
    pub policy: queue::Policy,
}

/// The validated `[webhooks]` settings.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    pub endpoints: Vec<EndpointConfig>,
    /// How long after it is stored an alert must still miss acknowledgements to be reported.
    pub alert_delay: Duration,
    /// Message payloads larger than this are left out of `message_sent` (their size is sent).
    pub payload_max_bytes: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig { endpoints: Vec::new(), alert_delay: Duration::from_secs(300), payload_max_bytes: 4096 }
    }
}

/// Totals over all endpoints, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dropped_overflow: u64,
    pub dropped_exhausted: u64,
    /// Events waiting or in flight now.
    pub queued: u64,
}

/// The handle the server holds; cheap to clone. The default has no endpoints and ignores every event.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    endpoints: Vec<Arc<sender::Endpoint>>,
    alerts: Option<Arc<sender::AlertChecker>>,
    payload_max_bytes: usize,
    tasks: Tasks,
}

/// The module's tasks and how they are stopped: the alert checker first (it emits), then the endpoints, which send
/// what is queued before they end; `quit` ends everything at once (the grace is over, or the handle is gone).
#[derive(Default)]
struct Tasks {
    checker: TaskTracker,
    stop_checker: CancellationToken,
    senders: TaskTracker,
    finish: CancellationToken,
    quit: CancellationToken,
}

impl Tasks {
    fn new() -> Tasks {
        let quit = CancellationToken::new();
        Tasks {
            checker: TaskTracker::new(),
            stop_checker: quit.child_token(),
            senders: TaskTracker::new(),
            finish: quit.child_token(),
            quit,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tasks.quit.cancel();
    }
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("endpoints", &self.inner.endpoints.len()).finish()
    }
}

/// Why the webhooks could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// An endpoint URL that is not an `http://` or `https://` URL.
    #[error("{0}")]
    Url(String),
}

pub(crate) use courier_chat::clock::now_ms;

impl Webhooks {
    /// Start one sender task per endpoint, sending through `client`, and the alert checker reading `store`.
    /// Needs a tokio runtime.
    pub fn start(
        config: &WebhooksConfig,
        store: Arc<dyn ChatStore>,
        client: &crate::outbound::HttpClient,
    ) -> Result<Webhooks, WebhookError> {
        if config.endpoints.is_empty() {
            return Ok(Webhooks::default());
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| sender::Endpoint::new(e, client.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(WebhookError::Url)?;
        let tasks = Tasks::new();
        for e in &endpoints {
            tasks.senders.spawn(e.clone().run(tasks.finish.clone(), tasks.quit.clone()));
        }
        let wants_alerts = endpoints.iter().any(|e| e.wants(EventKind::AlertUnacknowledged));
        // The alert checker emits through a weak handle, so it does not keep the endpoints alive.
        let inner = Arc::new_cyclic(|weak| {
            let alerts = wants_alerts.then(|| {
                let checker = sender::AlertChecker::new(config.alert_delay);
                tasks.checker.spawn(checker.clone().run(store, weak.clone(), tasks.stop_checker.clone()));
                checker
            });
            Inner { endpoints, alerts, payload_max_bytes: config.payload_max_bytes, tasks }
        });
        Ok(Webhooks { inner })
    }

    /// Any endpoint configured?
    pub fn enabled(&self) -> bool {
        !self.inner.endpoints.is_empty()
    }

    /// Queue `kind` with `facts` for every endpoint that wants it. Never waits.
    pub fn emit(&self, kind: EventKind, facts: Facts) {
        emit(&self.inner, kind, facts);
    }

    /// Totals over all endpoints.
    pub fn stats(&self) -> WebhookStats {
        let mut s = WebhookStats::default();
        for e in &self.inner.endpoints {
            let (q, queued) = e.stats();
            s.delivered += q.delivered;
            s.failed_attempts += q.failed_attempts;
            s.dropped_overflow += q.dropped_overflow;
            s.dropped_exhausted += q.dropped_exhausted;
            s.queued += queued as u64;
        }
        s
    }

    /// Stop at server shutdown: the alert checker ends, then each endpoint sends what is queued (retries
    /// included) and ends; whatever is still queued when `grace` has passed is dropped.
    pub async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let t = &self.inner.tasks;
        t.stop_checker.cancel();
        t.checker.close();
        let _ = tokio::time::timeout_at(deadline, t.checker.wait()).await;
        t.finish.cancel();
        t.senders.close();
        if tokio::time::timeout_at(deadline, t.senders.wait()).await.is_err() {
            tracing::warn!(queued = self.stats().queued, "webhook events left undelivered at shutdown");
            t.quit.cancel();
        }
    }
}

fn emit(inner: &Inner, kind: EventKind, facts: Facts) {
    if !inner.endpoints.iter().any(|e| e.wants(kind)) {
        return;
    }
    let event = Arc::new(Event::new(kind, now_ms(), facts));
    let now = tokio::time::Instant::now().into_std();
    for e in inner.endpoints.iter().filter(|e| e.wants(kind)) {
        e.push(event.clone(), now);
    }
}

/// `message_sent` and `message_recalled` from the store, in commit order; alerts start being watched.
impl CommitListener for Webhooks {
    fn committed(&self, messages: &[StoredMessage]) {
        for m in messages {
            self.message_committed(m);
        }
    }
}

impl Webhooks {
    fn message_committed(&self, m: &StoredMessage) {
        let base = conversation_facts(&m.conversation);
        if m.kind == "chat.recall" {
            #[derive(serde::Deserialize)]
            struct Recall {
                seq: u64,
            }
            let Some(Recall { seq }) = m.payload.as_deref().and_then(|p| serde_json::from_str(p).ok()) else {
                return;
            };
            let message = MessageView {
                conversation: m.conversation.to_string(),
                seq,
                sender: None,
                kind: None,
                time: None,
                payload: None,
                payload_bytes: None,
                must_ack: false,
            };
            let recall = RecallView { by: m.sender.clone(), seq: m.seq, time: m.server_time_ms };
            self.emit(EventKind::MessageRecalled, Facts { message: Some(message), recall: Some(recall), ..base });
            return;
        }
        if m.kind.starts_with("chat.") {
            // Edits and other server-made messages are not reported.
            return;
        }
        let bytes = m.payload.as_ref().map(String::len);
        let payload = m
            .payload
            .as_deref()
            .filter(|p| p.len() <= self.inner.payload_max_bytes)
            .and_then(|p| RawValue::from_string(p.to_string()).ok());
        let message = MessageView {
            conversation: m.conversation.to_string(),
            seq: m.seq,
            sender: Some(m.sender.clone()),
            kind: Some(m.kind.clone()),
            time: Some(m.server_time_ms),
            payload,
            payload_bytes: bytes,
            must_ack: m.flags.must_ack,
        };
        self.emit(EventKind::MessageSent, Facts { message: Some(message), ..base });
        if m.flags.must_ack {
            if let Some(a) = &self.inner.alerts {
                a.watch(alerts::Watched {
                    conversation: m.conversation.clone(),
                    seq: m.seq,
                    sender: m.sender.clone(),
                    kind: m.kind.clone(),
                    time_ms: m.server_time_ms,
                });
            }
        }
    }
}

/// Fold a checked alert into its event.
pub(crate) fn alert_facts(w: &alerts::Watched, pending: Vec<String>, acked: Vec<String>) -> Facts {
    let message = MessageView {
        conversation: w.conversation.to_string(),
        seq: w.seq,
        sender: Some(w.sender.clone()),
        kind: Some(w.kind.clone()),
        time: Some(w.time_ms),
        payload: None,
        payload_bytes: None,
        must_ack: true,
    };
    Facts { message: Some(message), alert: Some(AlertView { pending, acked }), ..conversation_facts(&w.conversation) }
}
