//! Benchmarks of the control plane, run on demand (not in CI; numbers go to docs/benchmarks.md):
//!
//! ```text
//! cargo test --release -p signaling --test ops_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `admin_api_requests`: `GET /api/v1/rooms/{room}` (token verified, grant checked, JSON answered) by 1 and 16
//!   keep-alive clients for 5 s each, API rate limits off: requests/s, p50/p99.
//! - `join_flood_refused`: one address opens WebSockets and sends `join` as fast as 64 connections can for 5 s,
//!   under the default join limits (20/s per address, burst 100): joins admitted, refused (`rate_limited`), and
//!   attempts handled per second of server-and-client CPU.
//!
//! The server runs in this process, on the same two cores as the clients.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn admin_api_requests() {
    use http_body_util::{BodyExt, Full};
    let s = server_with(|raw| {
        let l = raw.limits.get_or_insert_with(Default::default);
        l.api_per_ip_per_sec = Some(0.0);
        l.api_per_identity_per_sec = Some(0.0);
    })
    .await;
    let t = api_token("*", |r| {
        r.room_admin = true;
        r.room_list = true;
        r.room_create = true;
    });
    let (status, _) = api(&s, "POST", "/api/v1/rooms", Some(&t), Some(serde_json::json!({"name": "b"}))).await;
    assert_eq!(status, 201);
    println!("| clients | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for clients in [1usize, 16] {
        let end = Instant::now() + Duration::from_secs(5);
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (addr, t) = (s.http_addr, t.clone());
                tokio::spawn(async move {
                    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                        .build_http::<Full<axum::body::Bytes>>();
                    let mut lat = Vec::new();
                    while Instant::now() < end {
                        let req = hyper::Request::get(format!("http://{addr}/api/v1/rooms/b"))
                            .header("authorization", format!("Bearer {t}"))
                            .body(Full::new(axum::body::Bytes::new()))
                            .unwrap();
                        let at = Instant::now();
                        let res = client.request(req).await.unwrap();
                        assert_eq!(res.status(), 200);
                        res.into_body().collect().await.unwrap();
                        lat.push(at.elapsed().as_micros() as u64);
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
        println!(
            "| {clients} | {:.0} | {:.2} | {:.2} |",
            lat.len() as f64 / 5.0,
            percentile(&lat, 50.0) as f64 / 1000.0,
            percentile(&lat, 99.0) as f64 / 1000.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn join_flood_refused() {
    let s = server().await;
    let (admitted, refused, other) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let end = start + Duration::from_secs(5);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (addr, admitted, refused, other) = (s.http_addr, admitted.clone(), refused.clone(), other.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < end {
                    n += 1;
                    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/rtc")).await else {
                        other.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let join = format!(
                        r#"{{"type":"join","v":1,"token":"{}","auto_subscribe":false}}"#,
                        token("flood", &format!("f{i}-{n}"))
                    );
                    if ws.send(Message::Text(join.into())).await.is_err() {
                        other.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    loop {
                        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                            Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""type":"joined""#) => {
                                admitted.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""code":"rate_limited""#) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(Some(Ok(_))) => continue,
                            _ => {
                                other.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    let _ = ws.close(None).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (a, r, o) = (admitted.load(Ordering::Relaxed), refused.load(Ordering::Relaxed), other.load(Ordering::Relaxed));
    println!("| attempts | admitted | refused (rate_limited) | other | attempts/s | attempts per CPU-second |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {a} | {r} | {o} | {:.0} | {:.0} |",
        a + r + o,
        (a + r + o) as f64 / secs,
        (a + r + o) as f64 / cpu
    );
}
