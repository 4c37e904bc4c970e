//! A crowd of WebSocket members for the huge-room test and the chat benchmarks: light connections, a cheap look at
//! each server frame, one reader task per member that reads continuously and keeps a small log, and "actors" (the
//! connections that send) whose acknowledgements come back on a channel.
//!
//! Everything here is bounded: joins run a fixed number at a time, every wait has a deadline, readers stop on a
//! signal.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = crate::common::Ws;

/// Microseconds since the Unix epoch (the send timestamp carried in payloads).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// This process's resident set size, KiB (`VmRSS` of /proc/self/status).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A client connection with small buffers (the tungstenite defaults are 128 KiB each way, which for thousands of
/// members is mostly slack).
pub async fn connect_light(addr: std::net::SocketAddr) -> Ws {
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024).write_buffer_size(0);
    let url = format!("ws://{addr}/rtc");
    let mut tries = 0;
    loop {
        match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await {
            Ok((ws, _)) => return ws,
            Err(e) => {
                tries += 1;
                assert!(tries < 5, "connecting to {url}: {e}");
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
        }
    }
}

/// The fields of a server frame the crowd looks at; everything else is skipped unparsed.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: &'a str,
    pub seq: Option<u64>,
    #[serde(borrow)]
    pub client_id: Option<&'a str>,
    #[serde(borrow)]
    pub priority: Option<&'a str>,
    pub ephemeral: bool,
    pub shed: bool,
    pub count: Option<u64>,
    #[serde(borrow)]
    pub kind: Option<&'a str>,
    #[serde(borrow)]
    pub code: Option<&'a str>,
    #[serde(borrow)]
    pub status: Option<&'a str>,
    pub replayed: Option<u64>,
    pub last_seq: Option<u64>,
    pub payload: Option<Probe>,
}

/// The payload the test senders use: `t`, the send time (µs since the epoch), and `i`, an index.
#[derive(Deserialize, Default, Debug, Clone, Copy)]
#[serde(default)]
pub struct Probe {
    pub t: u64,
    pub i: u64,
}

/// Is this frame one of the room's participant events (skipped without parsing: a member of a room of n hears
/// n of them, and `joined` lists everyone)?
pub fn is_room_event(text: &str) -> bool {
    text.starts_with(r#"{"type":"participant_"#) || text.starts_with(r#"{"type":"joined""#)
}

pub fn parse(text: &str) -> Option<Wire<'_>> {
    serde_json::from_str(text).ok()
}

/// Counters every member updates, to wait on without stopping the readers.
#[derive(Debug, Default)]
pub struct Progress {
    /// `participant_*` frames read.
    pub room_events: AtomicU64,
    /// `chat_message` frames read (sequenced and ephemeral).
    pub chat_frames: AtomicU64,
    /// Members whose socket ended.
    pub closed: AtomicU64,
    /// When the last chat frame arrived, µs since the epoch.
    pub last_chat_us: AtomicU64,
    /// Per member (by index): the last sequence number and the high-priority messages it holds.
    pub members: Vec<MemberProgress>,
}

#[derive(Debug, Default)]
pub struct MemberProgress {
    pub last_seq: AtomicU64,
    pub highs: AtomicU64,
}

impl Progress {
    pub fn new(members: usize) -> Arc<Progress> {
        Arc::new(Progress { members: (0..members).map(|_| MemberProgress::default()).collect(), ..Default::default() })
    }

    /// Members whose last sequence number is at least `seq`.
    pub fn at_seq(&self, seq: u64) -> usize {
        self.members.iter().filter(|m| m.last_seq.load(Ordering::Relaxed) >= seq).count()
    }

    /// Members holding at least `n` high-priority messages.
    pub fn with_highs(&self, n: u64) -> usize {
        self.members.iter().filter(|m| m.highs.load(Ordering::Relaxed) >= n).count()
    }
}

/// What one reading member saw.
#[derive(Debug, Default)]
pub struct MemberLog {
    pub index: usize,
    /// (seq, client_id) of each high-priority message, in arrival order.
    pub highs: Vec<(u64, String)>,
    /// Sequenced `chat_message`s.
    pub sequenced: u64,
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    /// Sequenced messages whose number was not the previous one plus one (a duplicate, a gap or a reordering).
    pub seq_breaks: u64,
    /// Ephemeral `chat_message`s (danmaku and the like).
    pub ephemeral: u64,
    /// `chat_aggregate` frames and the sum of their counts.
    pub aggregates: u64,
    pub aggregate_count: u64,
    pub room_events: u64,
    pub errors: u64,
    /// The close code, if the server closed the socket.
    pub close: Option<u16>,
    /// The socket ended without a close frame (reset or EOF), with the reason.
    pub broken: Option<String>,
    /// Send→receive latencies, µs (only when asked for, from payloads carrying `t`).
    pub latencies: Vec<u32>,
    pub first_chat_us: u64,
    pub last_chat_us: u64,
}

/// How a reader treats what it reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReaderOptions {
    pub record_latency: bool,
}

/// Send `join` and read until `joined`.
pub async fn join(ws: &mut Ws, join_msg: &str) {
    ws.send(Message::Text(join_msg.into())).await.expect("send join");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.expect("joined within 30 s");
        match m {
            Some(Ok(Message::Text(t))) if t.as_str().starts_with(r#"{"type":"joined""#) => return,
            Some(Ok(Message::Text(_))) | Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("no joined: {other:?}"),
        }
    }
}

pub fn join_msg(token: &str) -> String {
    format!(r#"{{"type":"join","v":1,"token":"{token}","auto_subscribe":false}}"#)
}

/// Read `ws` until `stop` or the socket ends, keeping a log. Sends a WebSocket ping every 10 s (staggered by
/// `index`) so the server's idle timeout never fires on a member that only listens.
pub fn spawn_reader(
    index: usize,
    mut ws: Ws,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
    opts: ReaderOptions,
) -> JoinHandle<MemberLog> {
    tokio::spawn(async move {
        let mut log = MemberLog { index, ..MemberLog::default() };
        let first_ping = Duration::from_millis(5_000 + (index as u64 * 7) % 10_000);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + first_ping, Duration::from_secs(10));
        let mine = progress.members.get(index);
        loop {
            let frame = tokio::select! {
                biased;
                _ = stop.changed() => break,
                f = ws.next() => f,
                _ = ping.tick() => {
                    let _ = ws.send(Message::Ping(Default::default())).await;
                    continue;
                }
            };
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(c))) => {
                    log.close = Some(c.map_or(1005, |f| u16::from(f.code)));
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    log.broken = Some(e.to_string());
                    break;
                }
                None => {
                    log.broken = Some("end of stream".into());
                    break;
                }
            };
            let text = text.as_str();
            if is_room_event(text) {
                log.room_events += 1;
                progress.room_events.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(w) = parse(text) else {
                log.errors += 1;
                continue;
            };
            match w.ty {
                "chat_message" => {
                    let now = now_us();
                    if log.first_chat_us == 0 {
                        log.first_chat_us = now;
                    }
                    log.last_chat_us = now;
                    progress.chat_frames.fetch_add(1, Ordering::Relaxed);
                    progress.last_chat_us.store(now, Ordering::Relaxed);
                    if opts.record_latency {
                        if let Some(p) = w.payload.filter(|p| p.t > 0) {
                            log.latencies.push(now.saturating_sub(p.t).min(u64::from(u32::MAX)) as u32);
                        }
                    }
                    match w.seq {
                        Some(seq) => {
                            log.sequenced += 1;
                            if log.first_seq.is_none() {
                                log.first_seq = Some(seq);
                            } else if seq != log.last_seq + 1 {
                                log.seq_breaks += 1;
                            }
                            log.last_seq = seq;
                            if w.priority == Some("high") {
                                log.highs.push((seq, w.client_id.unwrap_or_default().to_string()));
                            }
                            if let Some(m) = mine {
                                m.last_seq.store(seq, Ordering::Relaxed);
                                m.highs.store(log.highs.len() as u64, Ordering::Relaxed);
                            }
                        }
                        None => log.ephemeral += 1,
                    }
                }
                "chat_aggregate" => {
                    log.aggregates += 1;
                    log.aggregate_count += w.count.unwrap_or(0);
                }
                "error" => log.errors += 1,
                _ => {}
            }
        }
        progress.closed.fetch_add(u64::from(log.close.is_some() || log.broken.is_some()), Ordering::Relaxed);
        log
    })
}

/// Join `n` members (`token(i)`) to the room, `concurrency` at a time, each handed to a reader as soon as it joined.
// Each future yields the reader task it spawned: the handle is the point, not something to await here.
#[allow(clippy::async_yields_async)]
pub async fn join_crowd(
    addr: std::net::SocketAddr,
    n: usize,
    concurrency: usize,
    token: impl Fn(usize) -> String,
    progress: &Arc<Progress>,
    stop: &watch::Receiver<bool>,
    opts: ReaderOptions,
) -> Vec<JoinHandle<MemberLog>> {
    let joins = futures::stream::iter((0..n).map(|i| {
        let msg = join_msg(&token(i));
        let (progress, stop) = (progress.clone(), stop.clone());
        async move {
            let mut ws = connect_light(addr).await;
            join(&mut ws, &msg).await;
            spawn_reader(i, ws, progress, stop, opts)
        }
    }))
    .buffered(concurrency);
    joins.collect().await
}

/// Wait until `done()` or `deadline`; true if done.
pub async fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection that sends: its write half, and its acknowledgements and errors (parsed) on a channel. Everything
/// else it hears is read and counted.
pub struct Actor {
    pub sink: SplitSink<Ws, Message>,
    pub answers: mpsc::UnboundedReceiver<(Instant, serde_json::Value)>,
    pub reader: JoinHandle<ActorEnd>,
}

/// How an actor's reader ended.
#[derive(Debug, Default)]
pub struct ActorEnd {
    pub frames: u64,
    pub close: Option<u16>,
}

/// The runtime the actors (the senders) run on: they stand for clients on other machines, so their sockets and
/// tasks are not starved behind the members' readers, which share the test's runtime with the server. (On 2 cores a
/// flooder's reader fell a second behind there, its socket filled, and the server rightly closed it as too slow.)
pub fn actor_runtime() -> &'static tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("actors")
            .enable_all()
            .build()
            .expect("the actors' runtime")
    })
    .handle()
}

impl Actor {
    /// Join on the [`actor_runtime`]; the actor's reader runs there too.
    pub async fn join(addr: std::net::SocketAddr, token: &str, stop: watch::Receiver<bool>) -> Actor {
        let token = token.to_string();
        actor_runtime().spawn(async move { Actor::join_here(addr, &token, stop).await }).await.expect("actor joins")
    }

    async fn join_here(addr: std::net::SocketAddr, token: &str, mut stop: watch::Receiver<bool>) -> Actor {
        let mut ws = connect_light(addr).await;
        join(&mut ws, &join_msg(token)).await;
        let (sink, mut stream) = ws.split();
        let (tx, answers) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut end = ActorEnd::default();
            loop {
                let frame = tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    f = stream.next() => f,
                };
                match frame {
                    Some(Ok(Message::Text(t))) => {
                        end.frames += 1;
                        let t = t.as_str();
                        if is_room_event(t) {
                            continue;
                        }
                        let interesting =
                            parse(t).is_some_and(|w| matches!(w.ty, "chat_ack" | "error" | "chat_resumed"));
                        if interesting {
                            let _ = tx.send((Instant::now(), serde_json::from_str(t).unwrap()));
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        end.close = Some(c.map_or(1005, |f| u16::from(f.code)));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            end
        });
        Actor { sink, answers, reader }
    }

    /// Queue a text frame (sent at the next flush); false if the connection is gone.
    pub async fn feed(&mut self, text: String) -> bool {
        self.sink.feed(Message::Text(text.into())).await.is_ok()
    }

    pub async fn flush(&mut self) -> bool {
        self.sink.flush().await.is_ok()
    }

    pub async fn send(&mut self, text: String) -> bool {
        self.sink.send(Message::Text(text.into())).await.is_ok()
    }

    /// The next answer within `d`.
    pub async fn answer(&mut self, d: Duration) -> Option<(Instant, serde_json::Value)> {
        tokio::time::timeout(d, self.answers.recv()).await.ok().flatten()
    }
}

/// The `p`-th percentile (0–100) of sorted `v`.
pub fn percentile<T: Copy + Default>(v: &[T], p: f64) -> T {
    if v.is_empty() {
        return T::default();
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}
