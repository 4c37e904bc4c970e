//! Simulcast under a bandwidth step, against the real server: a native publisher sends three synthetic layers
//! (q 150, h 500, f 1500 kbps); a subscriber receives through the impairment relay, whose server → subscriber cap
//! steps 3 Mbps → 400 kbps (at 8 s) → 3 Mbps (at 16 s). The server's send-side estimator (TWCC feedback from the
//! subscriber) and its allocator must move the subscriber to f, down to q (h does not fit 400 kbps) within 2 s of
//! the drop, and back to f within 10 s of the recovery, with the frame counter continuous throughout.
//!
//! - `relay_path_carries_the_full_layer`: the relay itself and `udp_via` (ICE-lite server, relay address learnt as
//!   peer-reflexive) with an uncapped link and no TWCC: the subscriber gets f, all of it through the relay. Runs
//!   today: `cargo test -p media-tests --test simulcast_bandwidth_step`.
//! - `layers_follow_a_bandwidth_step`: the step, with webrtc-rs as the subscriber's TWCC feedback. On demand
//!   (`cargo test -p media-tests --test simulcast_bandwidth_step -- --ignored --nocapture`), not in CI: with
//!   webrtc-rs 0.21's feedback str0m's estimate falls apart after an up-switch to f (measured: on q 0.8 s after the
//!   drop, on f 6.3 s after the recovery, then down to q again 1.3 s later), where the same server with a str0m
//!   subscriber holds f (`sfu/tests/allocation.rs`, which CI runs: the same step over a simulated bottleneck).

mod courier;

use std::time::Duration;

use courier::Courier;
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::relay::{Impairment, Relay, RelayConfig, Schedule};
use media_tests::report::{Report, VideoTrackReport};
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);
const DROP_AT: Duration = Duration::from_secs(8);
const RISE_AT: Duration = Duration::from_secs(16);
const RUN: Duration = Duration::from_secs(30);

fn video_from(report: &Report, publisher: &Report) -> VideoTrackReport {
    report.video().find(|v| v.participant_id == publisher.participant_id).cloned().expect("the publisher's video")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_path_carries_the_full_layer() {
    let server = Courier::start();
    let alice = courier::simulcast_publisher(&server, "relay", T).await;
    let relay = Relay::start(RelayConfig::new(server.udp)).await.expect("relay");
    let mut bob = Client::connect(
        &server.url,
        &server.token("relay", "bob"),
        // No TWCC: no estimate, so the server forwards the full layer whatever its allocator does; this test is
        // about the path.
        ClientOptions { udp_via: Some(relay.addr()), ..ClientOptions::default() },
    )
    .await
    .expect("bob joins");
    bob.wait_connected(T).await.expect("bob connects through the relay");
    bob.wait_for_event(T, |e| matches!(e, ClientEvent::MediaReceived { kind: MediaKind::Video, .. }))
        .await
        .expect("video through the relay");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let bob = bob.leave().await.unwrap();
    let alice = alice.leave().await.unwrap();
    let stats = relay.stop().await;
    println!("{}\nrelay: {stats:?}", serde_json::to_string(&bob).unwrap());
    let v = video_from(&bob, &alice);
    assert_eq!((v.frames_corrupt, v.frames_duplicate, v.counter_backwards), (0, 0, 0), "{v:?}");
    assert_eq!(v.current_layer, Some(2), "{v:?}");
    assert!(v.frames_per_layer[2] >= 120, "{v:?}");
    // All of bob's media went through the relay: ~1.5 Mbps for 6 s down; STUN, DTLS and RTCP up.
    assert!(stats.to_client.bytes_out >= 6 * 1_500_000 / 8 * 8 / 10, "{stats:?}");
    assert!(stats.to_server.datagrams_out >= 10, "{stats:?}");
    assert_eq!(stats.to_client.datagrams_dropped + stats.to_client.datagrams_lost, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "on demand: webrtc-rs 0.21's TWCC feedback destabilises the estimate (see the module doc)"]
async fn layers_follow_a_bandwidth_step() {
    let server = Courier::start();
    let alice = courier::simulcast_publisher(&server, "step", T).await;
    let down = Schedule::constant(Impairment::rate(3_000_000))
        .then(DROP_AT, Impairment::rate(400_000))
        .then(RISE_AT, Impairment::rate(3_000_000));
    let relay = Relay::start(RelayConfig::new(server.udp).to_client(down)).await.expect("relay");
    let start_ms = relay.started_unix_ms();
    let bob = Client::connect(
        &server.url,
        &server.token("step", "bob"),
        ClientOptions { udp_via: Some(relay.addr()), twcc: true, ..ClientOptions::default() },
    )
    .await
    .expect("bob joins");
    bob.wait_connected(T).await.expect("bob connects through the relay");
    tokio::time::sleep_until(tokio::time::Instant::from_std(relay.started_at() + RUN)).await;

    let bob = bob.leave().await.unwrap();
    let alice = alice.leave().await.unwrap();
    let stats = relay.stop().await;
    println!("{}\n{}\nrelay: {stats:?}", serde_json::to_string(&alice).unwrap(), serde_json::to_string(&bob).unwrap());
    let v = video_from(&bob, &alice);
    // (seconds since the relay started, layer) at every change.
    let timeline: Vec<(f64, Option<u8>)> =
        v.layer_timeline.iter().map(|c| ((c.at_ms.saturating_sub(start_ms)) as f64 / 1000.0, c.layer)).collect();
    let states: Vec<(f64, &str, Option<&str>)> = bob
        .stream_states
        .iter()
        .map(|s| ((s.at_ms.saturating_sub(start_ms)) as f64 / 1000.0, s.state.as_str(), s.layer.as_deref()))
        .collect();
    println!("layer timeline: {timeline:?}\nstream states: {states:?}");
    let layer_at = |t: f64| timeline.iter().take_while(|(at, _)| *at <= t).last().and_then(|(_, l)| *l);
    let (drop_s, rise_s) = (DROP_AT.as_secs_f64(), RISE_AT.as_secs_f64());

    assert!(timeline.iter().any(|(t, l)| *t < drop_s && *l == Some(2)), "f before the drop: {timeline:?}");
    assert_eq!(layer_at(drop_s + 2.0), Some(0), "q within 2 s of the drop: {timeline:?}");
    assert!(
        timeline.iter().filter(|(t, _)| *t > drop_s + 2.0 && *t < rise_s).all(|(_, l)| *l == Some(0)),
        "only q while capped (h does not fit): {timeline:?}"
    );
    assert_eq!(layer_at(rise_s + 10.0), Some(2), "f within 10 s of the recovery: {timeline:?}");
    assert_eq!((v.frames_corrupt, v.frames_duplicate, v.counter_backwards), (0, 0, 0), "{v:?}");
    // The cap did bite: the relay dropped or queued.
    assert!(stats.to_client.datagrams_dropped > 0 || stats.to_client.max_queue_delay > Duration::ZERO, "{stats:?}");
}
