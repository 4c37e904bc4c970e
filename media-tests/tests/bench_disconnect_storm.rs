//! Benchmark (not run in CI): server memory across a disconnect storm — rounds of clients that join a room,
//! exchange audio and video, and are killed without a word. Prints the server's RSS as rounds go by; the numbers
//! go into docs/benchmarks.md. Run with
//!
//! ```text
//! cargo build -p signaling && cargo test --release -p media-tests --test bench_disconnect_storm -- --ignored --nocapture
//! ```

mod courier;

use std::time::{Duration, Instant};

use courier::{CliClient, Courier};

#[test]
#[ignore = "benchmark; run on demand"]
fn disconnect_storm_memory() {
    let rounds: usize = std::env::var("STORM_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let per_round: usize = std::env::var("STORM_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let server = Courier::start();
    println!("idle: RSS {} KiB", server.rss_kib());
    let mut peak = 0;
    for round in 0..rounds {
        let clients: Vec<CliClient> = (0..per_round)
            .map(|i| CliClient::spawn(&server, &format!("storm{round}"), &format!("s{i}"), "audio,video", "60s"))
            .collect();
        let want = (per_round * (per_round - 1) * 2) as f64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.metric("courier_sfu_downtracks") < want {
            assert!(Instant::now() < deadline, "round {round} never fully subscribed");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let media flow for a second so every send cache fills.
        std::thread::sleep(Duration::from_secs(1));
        peak = peak.max(server.rss_kib());
        for c in &clients {
            c.signal("KILL");
        }
        let m = server.wait_empty(Duration::from_secs(30));
        assert_eq!(m["courier_sfu_peers"], 0.0, "round {round}: {m:?}");
        if (round + 1) % 5 == 0 {
            println!(
                "after {} rounds ({} peers): RSS {} KiB, peak with {per_round} peers {} KiB",
                round + 1,
                (round + 1) * per_round,
                server.rss_kib(),
                peak
            );
        }
    }
}
