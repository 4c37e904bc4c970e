//! Chat benchmarks, run on demand (not in CI; numbers go to docs/benchmarks.md):
//!
//! ```text
//! cargo test --release -p signaling --test chat_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `accepted_per_room`: stored messages acknowledged per second in one room, by 1, 8 and 32 senders each keeping
//!   an outbox window of messages in flight; ack latency p50/p99. SQLite, and PostgreSQL when
//!   `COURIER_TEST_POSTGRES_URL` is set (scripts/postgres.sh starts one).
//! - `fan_out_two_thousand`: 2,000 members in one room, one sender at rising rates; deliveries per second and
//!   send→receive latency p50/p99 (from a send timestamp in the payload) at each rate; memory per member.
//! - `accepted_with_a_webhook_endpoint`: the same 8 × 32 send load with no webhook endpoint, then with one that
//!   gets `message_sent` for every message (a loopback receiver answering 200 at once): accepted/s and ack
//!   latency both ways, events delivered per second, and whether any were dropped.
//! - `resume_a_thousand_message_gap`: a member away while 1,000 messages were sent reconnects with its position;
//!   time from its `join` to the last replayed message and `chat_resumed`.
//!
//! The server runs in this process, on the same two cores as the clients: the numbers are for server and
//! clients together, and the clients (2,000 WebSocket readers parsing JSON) take a large share.

mod common;
#[path = "huge_room/crowd.rs"]
mod crowd;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use crowd::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// No quota in the way of a throughput measurement.
fn unlimited(raw: &mut signaling::config::RawConfig, store: Option<String>) {
    raw.chat = Some(signaling::config::RawChatConfig {
        queue_capacity: Some(16_384),
        room_rate_per_sec: Some(100_000.0),
        rate_per_sec: Some(100_000.0),
        store: store.as_ref().map(|_| "postgres".into()),
        postgres_url: store,
        ..Default::default()
    });
    common::no_join_limits(raw);
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// `senders` connections, each keeping `window` stored messages in flight for `dur`: (acks/s, p50 ms, p99 ms).
async fn accepted(
    addr: std::net::SocketAddr,
    room: &str,
    senders: usize,
    window: usize,
    dur: Duration,
) -> (f64, f64, f64) {
    let (_stop_tx, stop) = watch::channel(false);
    let mut actors = Vec::new();
    for i in 0..senders {
        actors.push(Actor::join(addr, &token(room, &format!("s{senders}-{i}")), stop.clone()).await);
    }
    let start = Instant::now();
    let end = start + dur;
    let tasks: Vec<_> = actors
        .into_iter()
        .enumerate()
        .map(|(i, mut a)| {
            tokio::spawn(async move {
                let mut sent_at = std::collections::HashMap::new();
                let mut lat = Vec::new();
                let mut n = 0u64;
                let mut in_flight = 0;
                loop {
                    while in_flight < window && Instant::now() < end {
                        let id = format!("{i}-{n}");
                        let frame =
                            json!({"type": "chat_send", "client_id": id, "payload": {"text": "benchmark message"}});
                        sent_at.insert(id, Instant::now());
                        assert!(a.feed(frame.to_string()).await);
                        n += 1;
                        in_flight += 1;
                    }
                    assert!(a.flush().await);
                    if in_flight == 0 {
                        break;
                    }
                    let (at, v) = a.answer(Duration::from_secs(30)).await.expect("an ack");
                    if v["type"] == "chat_resumed" {
                        continue; // after joining
                    }
                    assert_eq!(v["type"], "chat_ack", "{v}");
                    if let Some(t) = sent_at.remove(v["client_id"].as_str().unwrap_or_default()) {
                        if at <= end {
                            lat.push(at.duration_since(t).as_micros() as u64);
                        }
                    }
                    in_flight -= 1;
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_unstable();
    let rate = lat.len() as f64 / dur.as_secs_f64();
    (rate, percentile(&lat, 50.0) as f64 / 1000.0, percentile(&lat, 99.0) as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn accepted_per_room() {
    let mut stores = vec![("sqlite", None)];
    if let Some(url) = postgres_database().await {
        stores.push(("postgres", Some(url)));
    }
    for (name, url) in stores {
        let s = server_with(|raw| unlimited(raw, url)).await;
        // One reader, so every message is also delivered once.
        let (_stop_tx, stop) = watch::channel(false);
        let progress = Progress::new(1);
        let _readers =
            join_crowd(s.http_addr, 1, 1, |_| token("bench", "reader"), &progress, &stop, ReaderOptions::default())
                .await;
        for (senders, window) in [(1, 1), (1, 32), (8, 32), (32, 32)] {
            let cpu0 = cpu_seconds();
            let (rate, p50, p99) = accepted(s.http_addr, "bench", senders, window, Duration::from_secs(5)).await;
            let cpu = (cpu_seconds() - cpu0) / 5.0;
            println!(
                "accepted_per_room store={name} senders={senders} window={window}: {rate:.0} msg/s, ack p50 {p50:.2} ms p99 {p99:.2} ms, CPU {:.0}%",
                cpu * 100.0
            );
        }
        s.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn fan_out_two_thousand() {
    const MEMBERS: usize = 2000;
    let s = server_with(|raw| unlimited(raw, None)).await;
    let (stop_tx, stop) = watch::channel(false);
    let rss0 = rss_kib();
    let progress = Progress::new(MEMBERS);
    let opts = ReaderOptions { record_latency: true };
    let t0 = Instant::now();
    let readers =
        join_crowd(s.http_addr, MEMBERS, 64, |i| token("fan", &format!("m{i:04}")), &progress, &stop, opts).await;
    let joined = t0.elapsed();
    let mut sender = Actor::join(s.http_addr, &token("fan", "sender"), stop.clone()).await;
    let events = (MEMBERS * (MEMBERS - 1) / 2 + MEMBERS) as u64;
    assert!(wait_until(Duration::from_secs(120), || progress.room_events.load(Ordering::Relaxed) >= events).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib();
    println!(
        "fan_out: {MEMBERS} members joined in {:.1}s; RSS +{} MiB ({} KiB per member, server and client side together)",
        joined.as_secs_f64(),
        (rss1 - rss0) / 1024,
        (rss1 - rss0) / MEMBERS as u64
    );

    // What 2,000 members cost doing nothing (pings, the media peers' timers).
    let cpu0 = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("fan_out: idle CPU with {MEMBERS} members: {:.0}%", (cpu_seconds() - cpu0) / 5.0 * 100.0);

    // Rising rates, 5 s each; stored (persisted) messages carrying their send time.
    let mut seq_sent = 0u64;
    let mut marks = Vec::new();
    for rate in [10u64, 50, 100, 200, 400] {
        let step = Duration::from_secs(5);
        let n = rate * step.as_secs();
        let (cpu0, frames0) = (cpu_seconds(), progress.chat_frames.load(Ordering::Relaxed));
        let start = Instant::now();
        for i in 0..n {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let frame =
                json!({"type": "chat_send", "client_id": format!("r{rate}-{i}"), "payload": {"t": now_us(), "i": i}});
            assert!(sender.send(frame.to_string()).await);
        }
        seq_sent += n;
        // Until everyone has everything sent so far (bounded).
        let caught_up = wait_until(Duration::from_secs(60), || progress.at_seq(seq_sent) == MEMBERS).await;
        let took = start.elapsed().as_secs_f64();
        let frames = progress.chat_frames.load(Ordering::Relaxed) - frames0;
        let cpu = (cpu_seconds() - cpu0) / took;
        marks.push((rate, seq_sent - n + 1, seq_sent));
        println!(
            "fan_out rate={rate} msg/s: {frames} deliveries in {took:.2}s = {:.0}/s, caught up {caught_up}, CPU {:.0}%",
            frames as f64 / took,
            cpu * 100.0
        );
        while sender.answers.try_recv().is_ok() {}
    }
    stop_tx.send(true).unwrap();
    let mut logs = Vec::new();
    for r in readers {
        logs.push(r.await.unwrap());
    }
    // Latencies per rate: the readers recorded them in arrival (= seq) order.
    let mut offset = 0usize;
    for (rate, first, last) in marks {
        let n = (last - first + 1) as usize;
        let mut lat: Vec<u32> = logs.iter().flat_map(|l| l.latencies.iter().skip(offset).take(n).copied()).collect();
        lat.sort_unstable();
        println!(
            "fan_out rate={rate} msg/s ({} deliveries/s): send→receive p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            rate * MEMBERS as u64,
            percentile(&lat, 50.0) as f64 / 1000.0,
            percentile(&lat, 99.0) as f64 / 1000.0,
            lat.last().copied().unwrap_or(0) as f64 / 1000.0
        );
        offset += n;
    }
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn resume_a_thousand_message_gap() {
    const GAP: u64 = 1000;
    const ROUNDS: usize = 20;
    let s = server_with(|raw| unlimited(raw, None)).await;
    let (_stop_tx, stop) = watch::channel(false);
    let mut sender = Actor::join(s.http_addr, &token("resume", "sender"), stop.clone()).await;
    let mut times = Vec::new();
    let mut last_seq = 0u64;
    let mut epoch = 0u64;
    for round in 0..ROUNDS {
        // The gap: GAP messages while the member is away (acknowledged, so stored), 200 in flight at a time (a
        // connection may have 256 waiting).
        for batch in 0..GAP / 200 {
            for i in batch * 200..(batch + 1) * 200 {
                let frame = json!({"type": "chat_send", "client_id": format!("g{round}-{i}"), "payload": {"text": "while you were away", "i": i}});
                assert!(sender.feed(frame.to_string()).await);
            }
            assert!(sender.flush().await);
            let mut acks = 0;
            while acks < 200 {
                let (_, v) = sender.answer(Duration::from_secs(30)).await.expect("ack");
                match v["type"].as_str() {
                    Some("chat_ack") => acks += 1,
                    Some("chat_resumed") => {} // after joining
                    _ => panic!("{v}"),
                }
            }
        }
        // The member comes back with its position.
        let mut ws = connect_light(s.http_addr).await;
        let hello = if round == 0 {
            join_msg(&token("resume", "member"))
        } else {
            json!({"type": "join", "v": 1, "token": token("resume", "member"), "auto_subscribe": false,
                   "chat": [{"conversation": "room:resume", "epoch": epoch, "last_seq": last_seq}]})
            .to_string()
        };
        let start = Instant::now();
        ws.send(Message::Text(hello.into())).await.unwrap();
        let mut replayed = 0u64;
        let status = loop {
            let m = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("resume within 30 s");
            let Some(Ok(Message::Text(t))) = m else { panic!("connection ended: {m:?}") };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            match v["type"].as_str() {
                Some("chat_message") => {
                    replayed += 1;
                    last_seq = v["seq"].as_u64().unwrap();
                }
                Some("chat_resumed") => {
                    epoch = v["epoch"].as_u64().unwrap();
                    last_seq = last_seq.max(v["last_seq"].as_u64().unwrap());
                    break v["status"].as_str().unwrap().to_string();
                }
                _ => {}
            }
        };
        let took = start.elapsed();
        if round > 0 {
            assert_eq!((status.as_str(), replayed), ("ok", GAP), "round {round}");
            times.push(took.as_micros() as u64);
        }
        drop(ws);
    }
    times.sort_unstable();
    println!(
        "resume: a {GAP}-message gap replayed in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} rounds, join included)",
        percentile(&times, 50.0) as f64 / 1000.0,
        percentile(&times, 99.0) as f64 / 1000.0,
        times.last().copied().unwrap_or(0) as f64 / 1000.0,
        times.len()
    );
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn accepted_with_a_webhook_endpoint() {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let got = Arc::new(AtomicU64::new(0));
    let last_at = Arc::new(std::sync::Mutex::new(Instant::now()));
    {
        let (got, last_at) = (got.clone(), last_at.clone());
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let (got, last_at) = (got.clone(), last_at.clone());
                async move {
                    got.fetch_add(1, Ordering::Relaxed);
                    *last_at.lock().unwrap() = Instant::now();
                    axum::http::StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let dur = Duration::from_secs(5);
    println!(
        "| webhook endpoint | accepted msg/s | ack p50 ms | ack p99 ms | events delivered | delivered/s | dropped |"
    );
    println!("|---|---|---|---|---|---|---|");
    for with in [false, true] {
        let url = url.clone();
        let s = server_with(move |raw| {
            unlimited(raw, None);
            if with {
                raw.webhooks = Some(signaling::config::RawWebhooks {
                    endpoints: Some(vec![signaling::config::RawWebhookEndpoint {
                        url: Some(url),
                        secret: Some("benchmark-webhook-secret".into()),
                        queue_capacity: Some(1_000_000),
                        ..Default::default()
                    }]),
                    ..Default::default()
                });
            }
        })
        .await;
        got.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let (rate, p50, p99) = accepted(s.http_addr, "wh", 8, 32, dur).await;
        if !with {
            println!("| none | {rate:.0} | {p50:.2} | {p99:.2} | - | - | - |");
            continue;
        }
        // Every stored message is one message_sent, plus the room and participant events: wait (bounded) for the
        // queue to drain.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let m = metrics_text(&s).await;
            let queued = metric_value(&m, "courier_webhook_queued").unwrap_or(0.0);
            if queued == 0.0 || Instant::now() > deadline {
                let dropped: f64 = ["queue_full", "exhausted"]
                    .iter()
                    .filter_map(|r| metric_value(&m, &format!("courier_webhook_dropped_total{{reason=\"{r}\"}}")))
                    .sum();
                let n = got.load(Ordering::Relaxed);
                let span = last_at.lock().unwrap().duration_since(start).as_secs_f64();
                println!(
                    "| one (message_sent for each) | {rate:.0} | {p50:.2} | {p99:.2} | {n} | {:.0} | {dropped} |",
                    n as f64 / span
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn metrics_text(s: &signaling::Server) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(s.http_addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
