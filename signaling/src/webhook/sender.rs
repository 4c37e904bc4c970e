//! The async shell around [`super::queue`] and [`super::alerts`]: one task per endpoint that moves events from its
//! queue to the receiver over HTTP or HTTPS (the shared [`crate::outbound`] client), and one task that checks watched alerts against the store.
//!
//! The tasks only move bytes and wake the state machines: every decision (what to send, when to retry, what to
//! drop, which alert is due) is the sans-I/O structs'. The tasks run on the module's task trackers and stop on its
//! cancellation tokens: at shutdown ([`super::Webhooks::drain`]) or when the last handle is dropped.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::alerts::{AlertWatch, Watched};
use super::queue::{Attempt, DeliveryQueue, Fate, Outcome, QueueStats};
use super::sign::{sign, ATTEMPT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER};
use super::{EndpointConfig, Event, EventKind, Inner};
use crate::outbound::{callback_url, HttpClient};
use courier_chat::store::ChatStore;

/// Most of a receiver's answer read (and thrown away, so the connection can be reused).
const MAX_ANSWER: usize = 64 * 1024;
/// Most alerts watched at once.
const ALERTS_WATCHED: usize = 100_000;

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// One receiver: its queue, its client, and the task draining it.
pub(super) struct Endpoint {
    config: EndpointConfig,
    uri: hyper::Uri,
    client: HttpClient,
    queue: Mutex<DeliveryQueue>,
    wake: Notify,
}

impl Endpoint {
    /// Check the URL; [`Endpoint::run`] is its task, sending through `client`.
    pub(super) fn new(config: &EndpointConfig, client: HttpClient) -> Result<Arc<Endpoint>, String> {
        let uri = callback_url("webhook url", &config.url)?;
        let endpoint = Arc::new(Endpoint {
            uri,
            client,
            queue: Mutex::new(DeliveryQueue::new(config.policy, rand::random())),
            wake: Notify::new(),
            config: config.clone(),
        });
        Ok(endpoint)
    }

    pub(super) fn wants(&self, kind: EventKind) -> bool {
        self.config.events.as_ref().is_none_or(|list| list.contains(&kind))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeliveryQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue an event; never waits.
    pub(super) fn push(&self, event: Arc<Event>, now: Instant) {
        if self.lock().push(event, now) {
            warn!(url = %self.config.url, "webhook queue full; oldest event dropped");
        }
        self.wake.notify_one();
    }

    pub(super) fn stats(&self) -> (QueueStats, usize) {
        let q = self.lock();
        (q.stats(), q.waiting() + q.in_flight())
    }

    pub(super) fn is_idle(&self) -> bool {
        self.lock().is_idle()
    }

    /// Move events from the queue to the receiver until `quit`, or until `finish` and nothing is left to send.
    pub(super) async fn run(self: Arc<Self>, finish: CancellationToken, quit: CancellationToken) {
        let mut attempts = FuturesUnordered::new();
        let mut finishing = false;
        loop {
            if finishing && attempts.is_empty() && self.is_idle() {
                break;
            }
            let (starts, timeout) = {
                let mut q = self.lock();
                let now = now();
                let starts: Vec<Attempt> = std::iter::from_fn(|| q.poll_send(now)).collect();
                (starts, q.poll_timeout())
            };
            for a in starts {
                let me = self.clone();
                attempts.push(async move {
                    let outcome = me.deliver(&a).await;
                    (a, outcome)
                });
            }
            let sleep = timeout.map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = quit.cancelled() => break,
                _ = finish.cancelled(), if !finishing => finishing = true,
                _ = self.wake.notified() => {}
                Some((a, outcome)) = attempts.next(), if !attempts.is_empty() => {
                    let fate = self.lock().handle_outcome(a.key, outcome, now());
                    match fate {
                        Some(Fate::Exhausted) => warn!(url = %self.config.url, event = %a.event.id,
                            attempts = a.attempt, "webhook event given up"),
                        Some(Fate::Retrying) => debug!(url = %self.config.url, event = %a.event.id,
                            attempt = a.attempt, "webhook attempt failed; will retry"),
                        _ => {}
                    }
                }
                _ = async { if let Some(t) = sleep { tokio::time::sleep_until(t).await } }, if sleep.is_some() => {}
            }
        }
    }

    /// POST one attempt. 2xx is delivered; anything else, or no answer within the timeout, failed.
    async fn deliver(&self, a: &Attempt) -> Outcome {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let request = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("courier-webhooks/", env!("CARGO_PKG_VERSION")))
            .header(SIGNATURE_HEADER, sign(self.config.secret.as_bytes(), t, &a.event.body))
            .header(EVENT_ID_HEADER, a.event.id.as_str())
            .header(ATTEMPT_HEADER, a.attempt)
            .body(Full::new(a.event.body.clone()));
        let Ok(request) = request else { return Outcome::Failed };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            // Read (a bounded part of) the answer so the connection goes back to the pool.
            let _ = http_body_util::Limited::new(response.into_body(), MAX_ANSWER).collect().await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(Ok(status)) if status.is_success() => Outcome::Delivered,
            Ok(Ok(status)) => {
                debug!(url = %self.config.url, %status, "webhook answered an error");
                Outcome::Failed
            }
            Ok(Err(e)) => {
                debug!(url = %self.config.url, error = %e, "webhook request failed");
                Outcome::Failed
            }
            Err(_) => {
                debug!(url = %self.config.url, timeout_ms = self.config.timeout.as_millis() as u64, "webhook timed out");
                Outcome::Failed
            }
        }
    }
}

/// Checks watched alerts when they fall due and emits `alert_unacknowledged` for those still missing
/// acknowledgements.
pub(super) struct AlertChecker {
    watch: Mutex<AlertWatch>,
    wake: Notify,
}

impl AlertChecker {
    /// [`AlertChecker::run`] is its task.
    pub(super) fn new(delay: Duration) -> Arc<AlertChecker> {
        Arc::new(AlertChecker { watch: Mutex::new(AlertWatch::new(delay, ALERTS_WATCHED)), wake: Notify::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AlertWatch> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watch an alert just committed; never waits.
    pub(super) fn watch(&self, alert: Watched) {
        if !self.lock().watch(alert, now()) {
            warn!("too many alerts watched; this one will not be reported if left unacknowledged");
        }
        self.wake.notify_one();
    }

    /// Check alerts as they fall due until `stop`.
    pub(super) async fn run(self: Arc<Self>, store: Arc<dyn ChatStore>, target: Weak<Inner>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let (due, timeout) = {
                let mut w = self.lock();
                (w.poll_due(now()), w.poll_timeout())
            };
            for alert in due {
                let status = match store.alert_status(&alert.conversation, alert.seq).await {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(conversation = %alert.conversation, seq = alert.seq, error = %e,
                            "alert status not read; not reported");
                        continue;
                    }
                };
                if status.pending.is_empty() {
                    continue;
                }
                let Some(inner) = target.upgrade() else { return };
                let acked = status.acked.into_iter().map(|(identity, _)| identity).collect();
                super::emit(&inner, EventKind::AlertUnacknowledged, super::alert_facts(&alert, status.pending, acked));
            }
            let sleep = timeout.map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = async { if let Some(t) = sleep { tokio::time::sleep_until(t).await } }, if sleep.is_some() => {}
            }
        }
    }
}
