//! The chat fault test: the promise "nothing lost, nothing twice, nothing out of order" (不丢、不重、不乱) under
//! broken connections and a server that dies.
//!
//! The real `courier` binary runs as a child process on a fixed loopback port with a fresh data directory.
//! [`CLIENTS`] clients in one room each send [`MESSAGES`] messages through a TCP relay that kills connections at
//! random (and sometimes right after a `chat_send`, so the ack is lost), while the server is killed with SIGKILL
//! and restarted [`SERVER_KILLS`] times at seeded points while traffic flows. Clients reconnect, resume from
//! their position and retry every unacknowledged message with the same `client_id`; each checks every
//! `chat_message` as it arrives (once, in order, no holes). At the end the full history is read from the last
//! server and every acknowledged message must be in it exactly once, at the number its ack gave, and every
//! client must have received exactly that history.
//!
//! Seeded: `CHAT_FAULTS_SEED=<u64>` repeats a run's decisions (timing still varies); the seed is printed.

#[path = "chat_faults/client.rs"]
mod client;
#[path = "chat_faults/relay.rs"]
mod relay;
#[path = "chat_faults/server.rs"]
mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::{ClientConfig, ClientReport, ClientStats, Progress, Seen, Shared};
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relay::{Chaos, Relay};
use serde_json::{json, Value};
use server::{ServerProc, ServerSetup, KEY, SECRET};
use signaling::auth::{mint, TokenRequest};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Clients (identities) in the room.
const CLIENTS: usize = 4;
/// Messages each client sends.
const MESSAGES: usize = 500;
/// SIGKILLs (each followed by a restart).
const SERVER_KILLS: usize = 2;
/// The whole run, start to end.
const DEADLINE: Duration = Duration::from_secs(90);
const ROOM: &str = "faults";
const CHAOS: Chaos = Chaos { max_random_kills: 40, max_send_cuts: 25, send_cut_one_in: 60 };

#[test]
fn chat_survives_connection_cuts_and_server_kills() {
    let seed = std::env::var("CHAT_FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("chat_faults: seed {seed} (CHAT_FAULTS_SEED={seed} repeats it)");
    let root = tempfile::tempdir().expect("temp dir");
    let setup = Arc::new(ServerSetup { root: root.path().to_path_buf(), port: free_port() });
    setup.write_config().expect("config file");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // A panic inside unwinds through here: dropping the runtime drops every task, and with it the server process
    // (its Drop kills it).
    let outcome = rt.block_on(run(seed, setup.clone()));
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(summary) => println!("{summary}"),
        Err(e) => {
            let tail = setup.log_tail(80);
            let kept = root.keep();
            panic!(
                "chat fault test failed (seed {seed}):\n{e}\n--- server log {}/server.log, last lines ---\n{tail}",
                kept.display()
            );
        }
    }
}

/// A loopback port free now; the server binds it on every (re)start.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn token(identity: &str) -> String {
    mint(
        KEY,
        SECRET,
        &TokenRequest {
            room: ROOM.into(),
            identity: identity.into(),
            name: None,
            ttl: Duration::from_secs(600),
            can_publish: true,
            can_subscribe: true,
            can_chat: true,
            room_admin: false,
            ..TokenRequest::new("", "")
        },
    )
}

/// One SIGKILL and the restart after it.
struct Kill {
    at_acked: usize,
    max_ack_seq: u64,
    status: String,
    down_ms: u64,
    ready_ms: u128,
}

/// Kill the server when the acknowledged count passes each threshold, and start it again after `downtime`.
async fn kill_and_restart(
    mut server: ServerProc,
    setup: Arc<ServerSetup>,
    shared: Arc<Shared>,
    plan: Vec<(usize, u64, u64)>,
    deadline: Instant,
) -> Result<(ServerProc, Vec<Kill>), String> {
    let mut kills = Vec::new();
    for (k, (threshold, delay_ms, down_ms)) in plan.into_iter().enumerate() {
        while shared.acked.load(Ordering::SeqCst) < threshold {
            if Instant::now() >= deadline {
                return Err(format!(
                    "kill {k}: {} acknowledged by the deadline, waiting for {threshold}",
                    shared.acked.load(Ordering::SeqCst)
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let (at_acked, max_ack_seq) = (shared.acked.load(Ordering::SeqCst), shared.max_ack_seq.load(Ordering::SeqCst));
        let pid = server.pid;
        let status = tokio::task::spawn_blocking(move || server.kill()).await.map_err(|e| e.to_string())??;
        println!("chat_faults: SIGKILL server pid {pid} at {at_acked} acked (highest ack seq {max_ack_seq})");
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        let t = Instant::now();
        server = ServerProc::start(&setup, k as u32 + 1).await?;
        let ready_ms = t.elapsed().as_millis();
        println!("chat_faults: restarted as pid {} after {down_ms} ms down, ready in {ready_ms} ms", server.pid);
        kills.push(Kill { at_acked, max_ack_seq, status, down_ms, ready_ms });
    }
    Ok((server, kills))
}

async fn run(seed: u64, setup: Arc<ServerSetup>) -> Result<String, String> {
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let mut rng = StdRng::seed_from_u64(seed);
    let total = CLIENTS * MESSAGES;

    let server = ServerProc::start(&setup, 0).await?;
    let relay = Relay::start(setup.port, rng.gen(), CHAOS).await;
    let shared = Arc::new(Shared { acked: AtomicUsize::new(0), max_ack_seq: AtomicU64::new(0), total });

    // Kill points spread over the run, never near its end (traffic must still flow when the server dies).
    let mut plan = Vec::new();
    for k in 0..SERVER_KILLS {
        let lo = total * (10 + 60 * k / SERVER_KILLS) / 100;
        let hi = total * (10 + 60 * (k + 1) / SERVER_KILLS) / 100;
        plan.push((rng.gen_range(lo..hi), rng.gen_range(0..20), rng.gen_range(50..400)));
    }
    let killer = tokio::spawn(kill_and_restart(server, setup.clone(), shared.clone(), plan, deadline));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut progress = Vec::new();
    let mut clients = Vec::new();
    for index in 0..CLIENTS {
        let identity = format!("user{index}");
        let cfg = ClientConfig {
            index,
            token: token(&identity),
            identity,
            room: ROOM.into(),
            relay_port: relay.port,
            messages: MESSAGES,
            deadline,
            max_connects: 400,
            seed: rng.gen(),
        };
        let p = Arc::new(Progress::default());
        progress.push(p.clone());
        clients.push(Some(tokio::spawn(client::run(cfg, shared.clone(), p, stop_rx.clone()))));
    }

    // Until every client has all its messages acknowledged and has received up to the final head.
    let mut killed: Option<(ServerProc, Vec<Kill>)> = None;
    let mut killer = Some(killer);
    loop {
        for (i, h) in clients.iter_mut().enumerate() {
            if h.as_ref().is_some_and(|h| h.is_finished()) {
                let r = h.take().unwrap().await.map_err(|e| format!("client {i} panicked: {e}"))?;
                return Err(match r {
                    Err(e) => format!("protocol violation or give-up: {e}"),
                    Ok(_) => format!("client {i} stopped before the end"),
                });
            }
        }
        if killer.as_ref().is_some_and(|k| k.is_finished()) {
            killed = Some(killer.take().unwrap().await.map_err(|e| format!("kill task panicked: {e}"))??);
        }
        if killed.is_some() && progress.iter().all(|p| p.done.load(Ordering::SeqCst)) {
            break;
        }
        if Instant::now() >= deadline {
            let who: Vec<String> =
                progress.iter().enumerate().map(|(i, p)| format!("  user{i}: {}", p.describe())).collect();
            return Err(format!(
                "not done within {DEADLINE:?}: {} of {total} acknowledged, highest ack seq {}, server kills done: {}, relay {:?}\n{}",
                shared.acked.load(Ordering::SeqCst),
                shared.max_ack_seq.load(Ordering::SeqCst),
                killed.is_some(),
                relay.stats(),
                who.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (server, kills) = killed.expect("the kill task finished");

    // A moment more with every client listening: anything delivered late (twice) is caught by its checks.
    relay.set_chaos(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let mut reports = Vec::new();
    for (i, h) in clients.into_iter().enumerate() {
        let h = h.expect("running");
        let r = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .map_err(|_| format!("client {i} did not stop"))?
            .map_err(|e| format!("client {i} panicked: {e}"))?;
        reports.push(r.map_err(|e| format!("protocol violation: {e}"))?);
    }
    let relay_stats = relay.stats();
    drop(relay);

    let history = read_history(setup.port, total).await?;
    let inversions = check(&history, &reports, total)?;
    for (k, kill) in kills.iter().enumerate() {
        if kill.at_acked >= total {
            return Err(format!(
                "kill {k} came after the traffic ended ({} acked): the test did not test",
                kill.at_acked
            ));
        }
    }
    drop(server);

    let mut s = ClientStats::default();
    for r in &reports {
        let t = &r.stats;
        s.connects += t.connects;
        s.connect_failures += t.connect_failures;
        s.disconnects += t.disconnects;
        s.server_closes += t.server_closes;
        s.stalls += t.stalls;
        s.resends += t.resends;
        s.duplicate_acks += t.duplicate_acks;
        s.retryable_errors += t.retryable_errors;
        s.replayed += t.replayed;
        s.resumes_ok += t.resumes_ok;
        s.resumes_fresh += t.resumes_fresh;
    }
    let kill_lines: Vec<String> = kills
        .iter()
        .map(|k| {
            format!(
                "at {}/{total} acked (ack seq {}), {}, down {} ms, ready {} ms",
                k.at_acked, k.max_ack_seq, k.status, k.down_ms, k.ready_ms
            )
        })
        .collect();
    Ok(format!(
        "chat_faults summary (seed {seed}):\n  \
         messages: {CLIENTS} clients x {MESSAGES} = {total} sent, {total} acknowledged, history 1..={} (epoch {}), every client received all {} in order\n  \
         connection kills: {} random + {} right after a send (relay accepted {}, {} refused while the server was down)\n  \
         server: {} SIGKILLs, {} restarts: {}\n  \
         clients: {} connects ({} failed), {} disconnects ({} closed by the server, {} stalls), {} resumes ok + {} fresh, {} messages replayed on resume\n  \
         retries: {} resends, {} duplicate acks, {} retryable refusals; per-sender reorderings in history: {}\n  \
         duration: {:.1} s",
        history.last_seq,
        history.epoch,
        history.messages.len(),
        relay_stats.random_kills,
        relay_stats.send_cuts,
        relay_stats.accepted,
        relay_stats.upstream_refused,
        kills.len(),
        kills.len(),
        kill_lines.join("; "),
        s.connects,
        s.connect_failures,
        s.disconnects,
        s.server_closes,
        s.stalls,
        s.resumes_ok,
        s.resumes_fresh,
        s.replayed,
        s.resends,
        s.duplicate_acks,
        s.retryable_errors,
        inversions,
        started.elapsed().as_secs_f64()
    ))
}

struct History {
    epoch: u64,
    last_seq: u64,
    /// (seq, sender, client_id) and the text.
    messages: Vec<(Seen, String)>,
}

/// The whole room history from the server directly (no relay), page by page.
async fn read_history(port: u16, total: usize) -> Result<History, String> {
    let url = format!("ws://127.0.0.1:{port}/rtc");
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| "history: connect timed out".to_string())?
        .map_err(|e| format!("history: connect: {e}"))?;
    let join = json!({"type": "join", "v": 1, "token": token("auditor")});
    ws.send(Message::Text(join.to_string().into())).await.map_err(|e| format!("history: join: {e}"))?;
    recv_type(&mut ws, "joined").await?;
    let conversation = format!("room:{ROOM}");
    let mut h = History { epoch: 0, last_seq: 0, messages: Vec::new() };
    let mut after = 0u64;
    for _ in 0..(total / 200 + 20) {
        let ask = json!({"type": "chat_history", "conversation": conversation, "after": after, "limit": 200});
        let mut page = None;
        // History requests share the session's general rate limit: a refusal is waited out.
        for _ in 0..50 {
            ws.send(Message::Text(ask.to_string().into())).await.map_err(|e| format!("history: send: {e}"))?;
            let v = recv_type(&mut ws, "chat_history").await?;
            if v["type"] == "chat_history" {
                page = Some(v);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let page = page.ok_or_else(|| "history: still rate limited after 50 tries".to_string())?;
        h.epoch = page["epoch"].as_u64().unwrap_or(0);
        h.last_seq = page["last_seq"].as_u64().unwrap_or(0);
        let msgs = page["messages"].as_array().cloned().unwrap_or_default();
        if msgs.is_empty() {
            break;
        }
        for m in &msgs {
            let seq = m["seq"].as_u64().ok_or_else(|| format!("history entry without seq: {m}"))?;
            let seen = Seen {
                seq,
                sender: m["sender"].as_str().unwrap_or("").to_string(),
                client_id: m["client_id"].as_str().unwrap_or("").to_string(),
            };
            h.messages.push((seen, m["payload"]["text"].as_str().unwrap_or("").to_string()));
            after = seq;
        }
        if after >= h.last_seq {
            break;
        }
    }
    let _ = ws.close(None).await;
    Ok(h)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next frame of type `ty`, skipping others, within 5 s; an `error` fails, but for `rate_limited`, which is
/// returned (the caller retries).
async fn recv_type(ws: &mut Ws, ty: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m =
            tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| format!("history: no {ty} within 5 s"))?;
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v["type"] == ty {
                    return Ok(v);
                }
                if v["type"] == "error" && v["code"] == "rate_limited" {
                    return Ok(v);
                }
                if v["type"] == "error" {
                    return Err(format!("history: {v}"));
                }
            }
            Some(Ok(_)) => {}
            other => return Err(format!("history: connection ended: {other:?}")),
        }
    }
}

/// The end checks; returns the number of per-sender reorderings (reported, not a failure: a retried message
/// may legitimately be numbered after a later one of the same sender).
fn check(history: &History, reports: &[ClientReport], total: usize) -> Result<usize, String> {
    let mut problems = Vec::new();
    let seqs: Vec<u64> = history.messages.iter().map(|(s, _)| s.seq).collect();
    let n = seqs.len() as u64;
    if let Some(i) = seqs.iter().enumerate().position(|(i, s)| *s != i as u64 + 1) {
        problems.push(format!("history is not contiguous: entry {i} has seq {} (expected {})", seqs[i], i + 1));
    }
    if history.last_seq != n {
        problems.push(format!("history head is {} but {n} entries were read", history.last_seq));
    }
    if n != total as u64 {
        problems.push(format!("history holds {n} messages, {total} were sent (lost or doubled)"));
    }
    // No (sender, client_id) twice.
    let mut by_key: HashMap<(&str, &str), u64> = HashMap::new();
    for (s, _) in &history.messages {
        if let Some(first) = by_key.insert((&s.sender, &s.client_id), s.seq) {
            problems.push(format!("{}/{} stored twice: seq {first} and {}", s.sender, s.client_id, s.seq));
        }
    }
    let at = |seq: u64| history.messages.get((seq as usize).wrapping_sub(1)).filter(|(s, _)| s.seq == seq);
    let identities: Vec<&str> = reports.iter().map(|r| r.identity.as_str()).collect();
    let mut acked = 0;
    for r in reports {
        for (i, a) in r.acks.iter().enumerate() {
            let cid = client::client_id(&r.identity, i);
            let Some((seq, epoch)) = a else {
                problems.push(format!("{cid} was never acknowledged"));
                continue;
            };
            acked += 1;
            if *epoch != history.epoch {
                problems.push(format!("{cid} acknowledged in epoch {epoch}, history is epoch {}", history.epoch));
            }
            match at(*seq) {
                Some((s, text)) if s.sender == r.identity && s.client_id == cid => {
                    if *text != client::text(&r.identity, i) {
                        problems.push(format!("{cid} at seq {seq} has the wrong text {text:?}"));
                    }
                }
                Some((s, _)) => problems.push(format!("{cid} acknowledged as seq {seq}, which history holds as {s:?}")),
                None => problems.push(format!("{cid} acknowledged as seq {seq}, which history does not hold (lost)")),
            }
            if by_key.get(&(r.identity.as_str(), cid.as_str())) != Some(seq) {
                problems.push(format!(
                    "{cid}: acknowledged as seq {seq}, history has it at {:?}",
                    by_key.get(&(r.identity.as_str(), cid.as_str()))
                ));
            }
        }
    }
    if acked != total {
        problems.push(format!("{acked} acknowledged, {total} sent"));
    }
    for (s, _) in &history.messages {
        if !identities.contains(&s.sender.as_str()) {
            problems.push(format!("history holds a message nobody sent: {s:?}"));
        }
    }
    // Every member received exactly the history, in its order.
    let expected: Vec<&Seen> = history.messages.iter().map(|(s, _)| s).collect();
    for r in reports {
        let got: Vec<&Seen> = r.received.iter().collect();
        if got != expected {
            let i = got.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
            problems.push(format!(
                "{} received {} messages, history has {}; first difference at index {i}: got {:?}, history {:?}",
                r.identity,
                got.len(),
                expected.len(),
                got.get(i),
                expected.get(i)
            ));
        }
    }
    // Per sender: the order of its messages in history against its outbox order.
    let mut inversions = 0;
    for r in reports {
        let order: Vec<usize> = history
            .messages
            .iter()
            .filter(|(s, _)| s.sender == r.identity)
            .filter_map(|(s, _)| s.client_id.rsplit('-').next().and_then(|x| x.parse().ok()))
            .collect();
        inversions += order.windows(2).filter(|w| w[0] > w[1]).count();
    }
    if problems.is_empty() {
        Ok(inversions)
    } else {
        let more = problems.len().saturating_sub(20);
        problems.truncate(20);
        Err(format!("end checks failed:\n  {}\n  ({more} more)", problems.join("\n  ")))
    }
}
