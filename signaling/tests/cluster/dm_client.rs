//! One client of the cluster chat fault test: it sends direct messages to one peer, receives its two direct
//! conversations (with the peer it writes to and the peer that writes to it), and goes through every fault the way
//! a real client does: reconnecting to the node it was on, else to the next node it knows, following redirects,
//! resuming each conversation from its position and resending every unacknowledged message with the same
//! `client_id`. Every `chat_message` is checked as it arrives: each number once, in order, no hole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Messages in flight per client.
const WINDOW: usize = 6;
/// Error codes that mean "nothing was stored, send again later".
const RETRYABLE: &[&str] = &["overloaded", "rate_limited", "internal", "cluster_unavailable", "server_draining"];

pub struct DmConfig {
    pub index: usize,
    pub identity: String,
    pub token: String,
    /// The identity this client writes to.
    pub to: String,
    /// The identity that writes to this client.
    pub from: String,
    pub messages: usize,
    pub urls: Vec<String>,
    pub deadline: Instant,
    pub seed: u64,
    /// Connections this client cuts itself, at most.
    pub max_cuts: usize,
}

#[derive(Debug, Default, Clone)]
pub struct DmStats {
    pub connects: u64,
    pub connect_failures: u64,
    pub redirects: u64,
    pub cuts: u64,
    pub disconnects: u64,
    pub resends: u64,
    pub retryable_errors: u64,
    pub replayed: u64,
    /// How many times the client landed on each node URL.
    pub nodes: HashMap<String, u64>,
}

/// What the test reads while clients run.
#[derive(Default)]
pub struct Progress {
    pub acked: AtomicUsize,
    /// Messages received, both conversations.
    pub received: AtomicU64,
}

pub struct DmReport {
    pub identity: String,
    /// Per outbox message: the `seq` its ack gave (in the conversation with `to`).
    pub acks: Vec<Option<u64>>,
    /// Per conversation: (seq, sender, client_id) as received.
    pub received: HashMap<String, Vec<(u64, String, String)>>,
    pub stats: DmStats,
}

pub fn dm(a: &str, b: &str) -> String {
    if a < b {
        format!("dm:{a}:{b}")
    } else {
        format!("dm:{b}:{a}")
    }
}

pub fn client_id(identity: &str, i: usize) -> String {
    format!("{identity}-{i}")
}

struct Conv {
    epoch: u64,
    last: u64,
    got: Vec<(u64, String, String)>,
}

enum End {
    /// Keep going on a new connection.
    Reconnect(String),
    /// Everything is done (acked, and the test said stop).
    Done,
}

pub async fn run(
    cfg: DmConfig,
    progress: Arc<Progress>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<DmReport, String> {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(cfg.index as u64 + 7));
    let mut acks: Vec<Option<u64>> = vec![None; cfg.messages];
    let mut convs: HashMap<String, Conv> = [dm(&cfg.identity, &cfg.to), dm(&cfg.identity, &cfg.from)]
        .into_iter()
        .map(|c| (c, Conv { epoch: 0, last: 0, got: Vec::new() }))
        .collect();
    let mut stats = DmStats::default();
    let mut sent_before = vec![false; cfg.messages];
    let mut url_turn = cfg.index;
    let mut last_url: Option<String> = None;
    let mut attempt = 0u64;
    loop {
        if Instant::now() > cfg.deadline {
            return Err(format!(
                "{}: deadline; {} of {} acked; {stats:?}",
                cfg.identity,
                acks.iter().flatten().count(),
                cfg.messages
            ));
        }
        // The node it was on first, then the others in turn.
        let url = match last_url.take() {
            Some(u) => u,
            None => {
                url_turn += 1;
                cfg.urls[url_turn % cfg.urls.len()].clone()
            }
        };
        match connect_and_join(&cfg, &url, &convs, &mut stats).await {
            Err(e) => {
                stats.connect_failures += 1;
                attempt += 1;
                let backoff = Duration::from_millis((50 * attempt.min(10)) + rng.gen_range(0..50));
                tracing_line(&cfg.identity, &format!("connect failed: {e}"));
                tokio::time::sleep(backoff).await;
                continue;
            }
            Ok((ws, at)) => {
                attempt = 0;
                stats.connects += 1;
                *stats.nodes.entry(at.clone()).or_default() += 1;
                match session(
                    &cfg,
                    ws,
                    &mut acks,
                    &mut sent_before,
                    &mut convs,
                    &mut stats,
                    &progress,
                    &mut rng,
                    &mut stop,
                )
                .await?
                {
                    End::Done => break,
                    End::Reconnect(why) => {
                        stats.disconnects += 1;
                        tracing_line(&cfg.identity, &format!("reconnecting: {why}"));
                        last_url = Some(at);
                        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..120))).await;
                    }
                }
            }
        }
    }
    let received = convs.into_iter().map(|(c, v)| (c, v.got)).collect();
    Ok(DmReport { identity: cfg.identity.clone(), acks, received, stats })
}

fn tracing_line(identity: &str, what: &str) {
    if std::env::var_os("CLUSTER_TEST_VERBOSE").is_some() {
        eprintln!("[{identity}] {what}");
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connect at `url`, join with the resume positions, follow redirects; the socket and the URL it ended at.
async fn connect_and_join(
    cfg: &DmConfig,
    url: &str,
    convs: &HashMap<String, Conv>,
    stats: &mut DmStats,
) -> Result<(Ws, String), String> {
    let positions: Vec<Value> =
        convs.iter().map(|(c, v)| json!({"conversation": c, "epoch": v.epoch, "last_seq": v.last})).collect();
    let join = json!({"type": "join", "v": 1, "token": cfg.token, "chat": positions}).to_string();
    let mut url = url.to_string();
    for _ in 0..=3 {
        let connect = tokio_tungstenite::connect_async(url.as_str());
        let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("connect {url}: {e}")),
            Err(_) => return Err(format!("connect {url}: timeout")),
        };
        ws.send(Message::Text(join.clone().into())).await.map_err(|e| e.to_string())?;
        // The first frame answers the join.
        let first = match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(&t).map_err(|e| e.to_string())?,
            other => return Err(format!("no answer to join at {url}: {other:?}")),
        };
        match first["type"].as_str() {
            Some("joined") => return Ok((ws, url)),
            Some("redirect") => {
                stats.redirects += 1;
                url = first["url"].as_str().ok_or("redirect without url")?.to_string();
            }
            _ => return Err(format!("join at {url}: {first}")),
        }
    }
    Err("more than 3 redirects".into())
}

#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &DmConfig,
    mut ws: Ws,
    acks: &mut [Option<u64>],
    sent_before: &mut [bool],
    convs: &mut HashMap<String, Conv>,
    stats: &mut DmStats,
    progress: &Progress,
    rng: &mut StdRng,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<End, String> {
    let mut in_flight: Vec<usize> = Vec::new();
    let mut next_try: HashMap<usize, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        // Fill the window with the oldest unacknowledged messages not in flight.
        let now = Instant::now();
        let mut i = 0;
        while in_flight.len() < WINDOW && i < acks.len() {
            if acks[i].is_none() && !in_flight.contains(&i) && next_try.get(&i).is_none_or(|t| *t <= now) {
                let m = json!({"type": "chat_send", "to": cfg.to, "client_id": client_id(&cfg.identity, i),
                    "payload": {"n": i}});
                if ws.send(Message::Text(m.to_string().into())).await.is_err() {
                    return Ok(End::Reconnect("send failed".into()));
                }
                if sent_before[i] {
                    stats.resends += 1;
                }
                sent_before[i] = true;
                in_flight.push(i);
            }
            i += 1;
        }
        let all_acked = acks.iter().all(Option::is_some);
        if all_acked && *stop.borrow() {
            let _ = ws.close(None).await;
            return Ok(End::Done);
        }
        let frame = tokio::select! {
            f = ws.next() => f,
            _ = tick.tick() => continue,
            _ = stop.changed() => continue,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => return Ok(End::Reconnect(format!("closed by the server: {c:?}"))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Ok(End::Reconnect(format!("socket error: {e}"))),
            None => return Ok(End::Reconnect("socket ended".into())),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: bad frame {text}: {e}", cfg.identity))?;
        match v["type"].as_str() {
            Some("chat_ack") => {
                let cid = v["client_id"].as_str().unwrap_or_default();
                let Some(i) = cid.strip_prefix(&format!("{}-", cfg.identity)).and_then(|n| n.parse::<usize>().ok())
                else {
                    return Err(format!("{}: ack of a message never sent: {v}", cfg.identity));
                };
                let seq = v["seq"].as_u64().ok_or_else(|| format!("ack without seq: {v}"))?;
                match acks[i] {
                    Some(s) if s != seq => {
                        return Err(format!("{}: message {i} acked as {s} and then as {seq}", cfg.identity))
                    }
                    Some(_) => {}
                    None => {
                        acks[i] = Some(seq);
                        progress.acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let (Some(c), Some(e)) = (v["conversation"].as_str(), v["epoch"].as_u64()) {
                    if let Some(conv) = convs.get_mut(c) {
                        if conv.epoch == 0 {
                            conv.epoch = e;
                        }
                    }
                }
                in_flight.retain(|x| *x != i);
                // Cut the connection now and then, sometimes right after an ack (the next acks are lost).
                if stats.cuts < cfg.max_cuts as u64 && rng.gen_range(0..40) == 0 {
                    stats.cuts += 1;
                    drop(ws);
                    return Ok(End::Reconnect("cut by the client".into()));
                }
            }
            Some("chat_message") => {
                let c = v["conversation"].as_str().unwrap_or_default().to_string();
                let Some(conv) = convs.get_mut(&c) else {
                    return Err(format!("{}: a message of a conversation it is not in: {v}", cfg.identity));
                };
                let seq = v["seq"].as_u64().ok_or_else(|| format!("message without seq: {v}"))?;
                if seq != conv.last + 1 {
                    return Err(format!(
                        "{}: {c}: got {seq} after {} (a {})",
                        cfg.identity,
                        conv.last,
                        if seq <= conv.last { "duplicate" } else { "hole" }
                    ));
                }
                conv.last = seq;
                let sender = v["sender"].as_str().unwrap_or_default().to_string();
                let cid = v["client_id"].as_str().unwrap_or_default().to_string();
                conv.got.push((seq, sender, cid));
                progress.received.fetch_add(1, Ordering::Relaxed);
            }
            Some("chat_resumed") => {
                let c = v["conversation"].as_str().unwrap_or_default();
                if let Some(conv) = convs.get_mut(c) {
                    match v["status"].as_str() {
                        Some("ok") | Some("fresh") => {}
                        other => return Err(format!("{}: resume of {c} answered {other:?}: {v}", cfg.identity)),
                    }
                    if let Some(e) = v["epoch"].as_u64().filter(|e| *e != 0) {
                        conv.epoch = e;
                    }
                    stats.replayed += v["replayed"].as_u64().unwrap_or(0);
                }
            }
            Some("error") => {
                let code = v["code"].as_str().unwrap_or_default();
                if !RETRYABLE.contains(&code) {
                    return Err(format!("{}: error {v}", cfg.identity));
                }
                stats.retryable_errors += 1;
                if let Some(i) = v["client_id"]
                    .as_str()
                    .and_then(|c| c.strip_prefix(&format!("{}-", cfg.identity)))
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    in_flight.retain(|x| *x != i);
                    next_try.insert(i, Instant::now() + Duration::from_millis(200));
                }
            }
            _ => {}
        }
    }
}
