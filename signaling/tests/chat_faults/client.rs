//! One chat client of the fault test: an outbox of messages, sent through the relay with a window in flight,
//! retried with the same `client_id` after every reconnect until acknowledged; every `chat_message` recorded and
//! checked as it arrives (each number once, in order, no holes).
//!
//! A protocol violation ends the client with `Err` (the test fails with it); a broken connection or a dead
//! server only makes it reconnect, with backoff, within a bounded number of attempts and the overall deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Messages in flight (sent, not yet answered) per client.
pub const WINDOW: usize = 8;
/// Error codes that mean "nothing was stored, retry later".
const RETRYABLE: &[&str] = &["overloaded", "rate_limited", "internal", "quota_exceeded"];
/// A connection on which nothing arrives for this long while something is awaited counts as stalled.
const STALL: Duration = Duration::from_secs(10);

pub struct ClientConfig {
    pub index: usize,
    pub identity: String,
    pub room: String,
    pub token: String,
    pub relay_port: u16,
    pub messages: usize,
    pub deadline: Instant,
    pub max_connects: u64,
    pub seed: u64,
}

/// What all clients share: progress towards the end.
pub struct Shared {
    /// Distinct messages acknowledged, all clients together.
    pub acked: AtomicUsize,
    /// The highest sequence number any acknowledgement named.
    pub max_ack_seq: AtomicU64,
    pub total: usize,
}

/// Where one client stands (for the deadline report and the coordinator).
#[derive(Default)]
pub struct Progress {
    pub acked: AtomicUsize,
    pub last_seq: AtomicU64,
    pub connects: AtomicU64,
    pub done: AtomicBool,
    pub phase: Mutex<String>,
}

impl Progress {
    fn set_phase(&self, p: impl Into<String>) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p.into();
    }

    pub fn describe(&self) -> String {
        format!(
            "acked {}, last seq {}, connects {}, done {}, {}",
            self.acked.load(Ordering::Relaxed),
            self.last_seq.load(Ordering::Relaxed),
            self.connects.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
            self.phase.lock().unwrap_or_else(|e| e.into_inner())
        )
    }
}

#[derive(Debug, Default, Clone)]
pub struct ClientStats {
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub server_closes: u64,
    pub stalls: u64,
    /// Sends of a message that had been sent before (after a reconnect or a retryable error).
    pub resends: u64,
    pub duplicate_acks: u64,
    pub retryable_errors: u64,
    /// Messages received before the `chat_resumed` of a connection (the replayed gap).
    pub replayed: u64,
    pub resumes_ok: u64,
    pub resumes_fresh: u64,
}

/// One received `chat_message` (or one history entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub seq: u64,
    pub sender: String,
    pub client_id: String,
}

pub struct ClientReport {
    pub identity: String,
    /// Per outbox message: (seq, epoch) of its acknowledgement.
    pub acks: Vec<Option<(u64, u64)>>,
    pub received: Vec<Seen>,
    pub stats: ClientStats,
}

pub fn client_id(identity: &str, i: usize) -> String {
    format!("{identity}-{i}")
}

pub fn text(identity: &str, i: usize) -> String {
    format!("message {i} from {identity}")
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    /// Not on this connection yet; may be sent from the instant on.
    Waiting(Instant),
    InFlight,
    Acked,
}

enum End {
    Stopped,
    Disconnected(String),
}

struct Client {
    cfg: ClientConfig,
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    states: Vec<State>,
    sent: Vec<u32>,
    acks: Vec<Option<(u64, u64)>>,
    in_flight: usize,
    received: Vec<Seen>,
    last: u64,
    epoch: u64,
    stats: ClientStats,
    rng: StdRng,
}

pub async fn run(
    cfg: ClientConfig,
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Result<ClientReport, String> {
    let n = cfg.messages;
    let rng = StdRng::seed_from_u64(cfg.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(cfg.index as u64 + 1)));
    let mut c = Client {
        cfg,
        shared,
        progress,
        states: vec![State::Waiting(Instant::now()); n],
        sent: vec![0; n],
        acks: vec![None; n],
        in_flight: 0,
        received: Vec::new(),
        last: 0,
        epoch: 0,
        stats: ClientStats::default(),
        rng,
    };
    let mut backoff = Duration::from_millis(20);
    loop {
        if *stop.borrow() {
            break;
        }
        if Instant::now() >= c.cfg.deadline {
            return Err(format!("{}: overall deadline passed ({})", c.cfg.identity, c.progress.describe()));
        }
        if c.stats.connects >= c.cfg.max_connects {
            return Err(format!(
                "{}: gave up after {} connection attempts ({})",
                c.cfg.identity,
                c.stats.connects,
                c.progress.describe()
            ));
        }
        c.stats.connects += 1;
        c.progress.connects.store(c.stats.connects, Ordering::Relaxed);
        let mut joined = false;
        match c.connection(&mut stop, &mut joined).await {
            Ok(End::Stopped) => break,
            Ok(End::Disconnected(why)) => {
                c.stats.disconnects += 1;
                c.progress.set_phase(format!("disconnected: {why}"));
                if joined {
                    backoff = Duration::from_millis(20);
                }
                let jitter = c.rng.gen_range(0..=backoff.as_millis() as u64 / 2);
                let pause = backoff + Duration::from_millis(jitter);
                backoff = (backoff * 2).min(Duration::from_millis(400));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(violation) => {
                return Err(format!("{}: {violation} (last seq {}, epoch {})", c.cfg.identity, c.last, c.epoch))
            }
        }
    }
    Ok(ClientReport { identity: c.cfg.identity, acks: c.acks, received: c.received, stats: c.stats })
}

impl Client {
    fn conversation(&self) -> String {
        format!("room:{}", self.cfg.room)
    }

    /// The next message to send on this connection, if the window has room.
    fn next_to_send(&self, now: Instant) -> Option<usize> {
        if self.in_flight >= WINDOW {
            return None;
        }
        self.states.iter().position(|s| matches!(s, State::Waiting(t) if *t <= now))
    }

    /// When a waiting message may next be sent (for a retry after a refusal).
    fn next_wake(&self) -> Option<Instant> {
        if self.in_flight >= WINDOW {
            return None;
        }
        self.states
            .iter()
            .filter_map(|s| match s {
                State::Waiting(t) => Some(*t),
                _ => None,
            })
            .min()
    }

    fn check_done(&self) {
        let all_mine = self.acks.iter().all(Option::is_some);
        let all = self.shared.acked.load(Ordering::SeqCst) == self.shared.total;
        if all_mine && all && self.last >= self.shared.max_ack_seq.load(Ordering::SeqCst) {
            self.progress.done.store(true, Ordering::SeqCst);
        }
    }

    async fn connection(&mut self, stop: &mut watch::Receiver<bool>, joined: &mut bool) -> Result<End, String> {
        self.progress.set_phase("connecting");
        let url = format!("ws://127.0.0.1:{}/rtc", self.cfg.relay_port);
        let tcp =
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(("127.0.0.1", self.cfg.relay_port)))
                .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    self.stats.connect_failures += 1;
                    return Ok(End::Disconnected(format!("tcp connect: {e}")));
                }
                Err(_) => {
                    self.stats.connect_failures += 1;
                    return Ok(End::Disconnected("tcp connect timed out".into()));
                }
            };
        let _ = tcp.set_nodelay(true);
        let ws = match tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::client_async(url, tcp)).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                self.stats.connect_failures += 1;
                return Ok(End::Disconnected(format!("upgrade: {e}")));
            }
            Err(_) => {
                self.stats.connect_failures += 1;
                return Ok(End::Disconnected("upgrade timed out".into()));
            }
        };
        let (mut sink, mut stream) = ws.split();
        // Everything not acknowledged goes (again) on this connection.
        let now = Instant::now();
        for s in self.states.iter_mut() {
            if *s != State::Acked {
                *s = State::Waiting(now);
            }
        }
        self.in_flight = 0;
        let join = json!({
            "type": "join", "v": 1, "token": self.cfg.token,
            "chat": [{"conversation": self.conversation(), "epoch": self.epoch, "last_seq": self.last}],
        });
        if !send(&mut sink, join.to_string()).await {
            return Ok(End::Disconnected("join not sent".into()));
        }
        self.progress.set_phase("joining");
        let mut resumed = false;
        let mut last_heard = Instant::now();
        loop {
            if *joined {
                let now = Instant::now();
                while let Some(i) = self.next_to_send(now) {
                    let msg = json!({
                        "type": "chat_send",
                        "client_id": client_id(&self.cfg.identity, i),
                        "payload": {"text": text(&self.cfg.identity, i)},
                    });
                    if !send(&mut sink, msg.to_string()).await {
                        return Ok(End::Disconnected("send failed".into()));
                    }
                    if self.sent[i] > 0 {
                        self.stats.resends += 1;
                    }
                    self.sent[i] += 1;
                    self.states[i] = State::InFlight;
                    self.in_flight += 1;
                }
            }
            let wake = self.next_wake().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let awaiting = self.in_flight > 0 || !resumed;
            tokio::select! {
                m = stream.next() => {
                    last_heard = Instant::now();
                    match m {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(&t).map_err(|e| format!("unparsable frame {t}: {e}"))?;
                            self.handle(&v, joined, &mut resumed)?;
                            self.check_done();
                        }
                        Some(Ok(Message::Close(f))) => {
                            self.stats.server_closes += 1;
                            return Ok(End::Disconnected(format!("closed by the server: {f:?}")));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ok(End::Disconnected(format!("socket: {e}"))),
                        None => return Ok(End::Disconnected("end of stream".into())),
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = tokio::time::sleep_until(last_heard + STALL) => {
                    if awaiting {
                        self.stats.stalls += 1;
                        return Ok(End::Disconnected(format!(
                            "stalled: nothing for {STALL:?} with {} in flight, resumed {resumed}", self.in_flight
                        )));
                    }
                    last_heard = Instant::now();
                }
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        let _ = tokio::time::timeout(Duration::from_millis(500), sink.send(Message::Close(None))).await;
                        return Ok(End::Stopped);
                    }
                }
            }
        }
    }

    /// One frame from the server; `Err` is a protocol violation.
    fn handle(&mut self, v: &Value, joined: &mut bool, resumed: &mut bool) -> Result<(), String> {
        let conv = self.conversation();
        match v["type"].as_str().unwrap_or("") {
            "joined" => {
                *joined = true;
                self.progress.set_phase("joined");
            }
            "chat_resumed" => {
                if v["conversation"] != conv.as_str() {
                    return Err(format!("chat_resumed for a conversation never asked about: {v}"));
                }
                let (epoch, last_seq) = (u(v, "epoch")?, u(v, "last_seq")?);
                match v["status"].as_str() {
                    Some("ok") => {
                        if self.epoch != 0 && epoch != self.epoch {
                            return Err(format!("resume ok but the epoch changed from {}: {v}", self.epoch));
                        }
                        if self.last < last_seq {
                            return Err(format!(
                                "resume ok up to {last_seq} but only {} was delivered: {v}",
                                self.last
                            ));
                        }
                        self.stats.resumes_ok += 1;
                    }
                    Some("fresh") => {
                        // Only before anything was ever stored: then nothing may be missing.
                        if last_seq != self.last {
                            return Err(format!("resume fresh at {last_seq}, but this client has {}: {v}", self.last));
                        }
                        self.stats.resumes_fresh += 1;
                    }
                    _ => return Err(format!("resume not recovered (nothing is trimmed in this test): {v}")),
                }
                if epoch != 0 {
                    self.epoch = epoch;
                }
                *resumed = true;
                self.progress.set_phase("resumed");
            }
            "chat_message" => {
                if v["conversation"] != conv.as_str() {
                    return Err(format!("a message of another conversation: {v}"));
                }
                let seq = v["seq"].as_u64().ok_or_else(|| format!("a chat_message without seq: {v}"))?;
                if seq <= self.last {
                    return Err(format!("duplicate delivery: seq {seq} after {} (resumed {resumed}): {v}", self.last));
                }
                if seq != self.last + 1 {
                    return Err(format!(
                        "out of order or a hole: seq {seq} after {} (resumed {resumed}): {v}",
                        self.last
                    ));
                }
                self.received.push(Seen {
                    seq,
                    sender: v["sender"].as_str().unwrap_or("").to_string(),
                    client_id: v["client_id"].as_str().unwrap_or("").to_string(),
                });
                self.last = seq;
                self.progress.last_seq.store(seq, Ordering::Relaxed);
                if !*resumed {
                    self.stats.replayed += 1;
                }
            }
            "chat_ack" => {
                let i = self.index_of(v)?;
                if v["conversation"] != conv.as_str() {
                    return Err(format!("an ack for another conversation: {v}"));
                }
                let (seq, epoch) = (u(v, "seq")?, u(v, "epoch")?);
                let dup = v["duplicate"].as_bool().unwrap_or(false);
                if dup {
                    self.stats.duplicate_acks += 1;
                    if self.sent[i] < 2 {
                        return Err(format!("a duplicate ack for a message sent only once: {v}"));
                    }
                }
                if self.epoch != 0 && epoch != self.epoch {
                    return Err(format!("an ack in epoch {epoch}, the conversation is in {}: {v}", self.epoch));
                }
                self.epoch = epoch;
                match self.acks[i] {
                    Some((s, _)) if s != seq => {
                        return Err(format!(
                            "two acks for {} disagree: seq {s} and then {v}",
                            client_id(&self.cfg.identity, i)
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.acks[i] = Some((seq, epoch));
                        self.shared.acked.fetch_add(1, Ordering::SeqCst);
                        self.shared.max_ack_seq.fetch_max(seq, Ordering::SeqCst);
                        self.progress.acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if self.states[i] == State::InFlight {
                    self.in_flight -= 1;
                }
                self.states[i] = State::Acked;
            }
            "error" => {
                let code = v["code"].as_str().unwrap_or("");
                if v["client_id"].is_string() && RETRYABLE.contains(&code) {
                    let i = self.index_of(v)?;
                    self.stats.retryable_errors += 1;
                    if self.states[i] == State::InFlight {
                        self.in_flight -= 1;
                        self.states[i] = State::Waiting(Instant::now() + Duration::from_millis(50));
                    }
                } else {
                    return Err(format!("unexpected error: {v}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn index_of(&self, v: &Value) -> Result<usize, String> {
        let id = v["client_id"].as_str().ok_or_else(|| format!("no client_id: {v}"))?;
        id.strip_prefix(&format!("{}-", self.cfg.identity))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|i| *i < self.cfg.messages)
            .ok_or_else(|| format!("an answer about a client_id this client never used: {v}"))
    }
}

fn u(v: &Value, field: &str) -> Result<u64, String> {
    v[field].as_u64().ok_or_else(|| format!("no {field} in {v}"))
}

type Sink = futures::stream::SplitSink<tokio_tungstenite::WebSocketStream<TcpStream>, Message>;

async fn send(sink: &mut Sink, text: String) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Text(text.into()))).await, Ok(Ok(())))
}
