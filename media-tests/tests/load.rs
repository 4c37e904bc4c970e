//! The load generator against the real server, small: what it counts must add up. A 1→3 video fan-out (its
//! publisher bursting each frame, and pacing it) and a 2→2
//! audio room on loopback; every subscriber receives every publisher's packets (so out ≈ subscribers × in), nothing
//! is lost on loopback, every payload comes back with its stamp, and the delay and the server's CPU time are
//! measured; the fan-out again with subscribers on ICE-TCP and through TURN. Throughput numbers come from `media-tests/bench/compare.sh` (release build, pinned cores), not from here.

mod courier;

use std::time::Duration;

use media_tests::load::{self, courier::Courier, peer::Transport, target::Media, LoadReport, Workload};

fn workload(rooms: usize, publishers: usize, subscribers: usize, media: Media) -> Workload {
    Workload {
        rooms,
        publishers,
        subscribers,
        media,
        // Under the server's initial bandwidth estimate, so subscribers get it all at once.
        video_kbps: 400,
        packet_bytes: 1100,
        pacing: None,
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(500),
        parallel_joins: 4,
        subscriber_transport: Transport::Udp,
    }
}

fn run(w: &Workload) -> LoadReport {
    run_with_metrics(w).0
}

/// A run, and the server's metrics at its end.
fn run_with_metrics(w: &Workload) -> (LoadReport, std::collections::HashMap<String, f64>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let turn = w.subscriber_transport == Transport::Turn;
    let server = Courier::start(&courier::courier_bin(), None, None, 1, None, turn).expect("courier starts");
    let report = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), load::run(&server, w, std::net::Ipv4Addr::LOCALHOST.into()))
            .await
            .expect("the run ends within 90 s")
            .expect("the run succeeds")
    });
    (report, server.metrics().expect("metrics"))
}

fn assert_adds_up(r: &LoadReport, per_publisher_pps: f64) {
    let w = &r.workload;
    println!("{}", load::table(r));
    assert!(r.steady, "subscribers reached the full rate");
    let want_in = per_publisher_pps * (w.rooms * w.publishers) as f64;
    assert!((r.packets_in_per_s - want_in).abs() < want_in * 0.1, "publishers sent {} packets/s", r.packets_in_per_s);
    let want_out = r.packets_in_per_s * w.subscribers as f64;
    assert!(
        (r.packets_out_per_s - want_out).abs() < want_out * 0.1,
        "out {} packets/s, want ≈ {want_out} (each subscriber gets every publisher of its room)",
        r.packets_out_per_s
    );
    assert!(r.loss_percent < 1.0, "loss {} % on loopback", r.loss_percent);
    // What each subscriber received of what its room's publishers sent (sequence numbers cannot show packets the
    // server never sent: it renumbers).
    assert!(
        r.delivered_min_percent >= 97.0 && r.delivered_median_percent <= 101.0,
        "delivered per subscriber: lowest {} %, median {} %",
        r.delivered_min_percent,
        r.delivered_median_percent
    );
    assert_eq!(r.unstamped, 0, "every payload arrives with its stamp");
    assert!(r.delay_samples as f64 > r.packets_out_per_s, "delay measured per packet");
    let p99 = r.delay_p99_ms.expect("a p99");
    assert!(p99 > 0.0 && p99 < 100.0, "delay p99 {p99} ms");
    assert!(r.server_cpu_percent > 0.0 && r.forwarded_per_cpu_second > 0.0, "server CPU measured");
    assert!(r.server_rss_mib > r.server_rss_idle_mib, "server RSS measured");
}

#[test]
fn a_video_fan_out_adds_up() {
    let r = run(&workload(1, 1, 3, Media { audio: false, video: true }));
    // 400 kbit/s at 30 frames/s in 1100-byte packets: 2 packets a frame.
    assert_adds_up(&r, 60.0);
    assert!(r.keyframes >= 1, "the publisher starts with a keyframe");
}

/// The fan-out from a publisher that paces each frame's packets as a browser does (2.5× its bitrate): every packet
/// still leaves, in order, stamped when it does.
#[test]
fn a_paced_publishers_fan_out_adds_up() {
    let mut w = workload(1, 1, 3, Media { audio: false, video: true });
    w.pacing = Some(2.5);
    let r = run(&w);
    assert_adds_up(&r, 60.0);
}

/// The same fan-out with every subscriber on ICE-TCP (the server's passive candidate, RFC 4571 frames): nothing lost,
/// every packet stamped.
#[test]
fn a_video_fan_out_over_ice_tcp_adds_up() {
    let mut w = workload(1, 1, 3, Media { audio: false, video: true });
    w.subscriber_transport = Transport::Tcp;
    let r = run(&w);
    assert_adds_up(&r, 60.0);
}

/// And with every subscriber relayed through the built-in TURN server (UDP, a channel to the SFU).
#[test]
fn a_video_fan_out_through_turn_adds_up() {
    let mut w = workload(1, 1, 3, Media { audio: false, video: true });
    w.subscriber_transport = Transport::Turn;
    let (r, m) = run_with_metrics(&w);
    assert_adds_up(&r, 60.0);
    // 3 subscribers × 60 packets/s × ~1,100 bytes for 5 s and more went through the relay.
    let relayed = m.get("courier_turn_bytes_to_clients_total").copied().unwrap_or(0.0);
    assert!(relayed > 500_000.0, "the media went through the relay: {relayed} bytes ({m:?})");
}

#[test]
fn an_audio_room_adds_up() {
    let r = run(&workload(2, 2, 2, Media { audio: true, video: false }));
    assert_adds_up(&r, 50.0);
}
