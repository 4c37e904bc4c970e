//! A subscriber that stops reading — one whose application stops draining media, and one whose whole process is
//! frozen (SIGSTOP: its sockets stop reading, its WebSocket backs up) — does not lower what the others receive.

mod courier;

use std::time::Duration;

use courier::{CliClient, Courier};
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_hurt_the_others() {
    let server = Courier::start();
    let alice = Client::connect(
        &server.url,
        &server.token("slow", "alice"),
        ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video]),
    )
    .await
    .unwrap();
    let frozen = CliClient::spawn(&server, "slow", "frozen", "audio", "30s");
    let mut stalled =
        Client::connect(&server.url, &server.token("slow", "stalled"), ClientOptions::default()).await.unwrap();
    let mut bob = Client::connect(&server.url, &server.token("slow", "bob"), ClientOptions::default()).await.unwrap();
    for c in [&mut stalled, &mut bob] {
        c.wait_for_event(T, |e| matches!(e, ClientEvent::MediaReceived { kind: MediaKind::Video, .. })).await.unwrap();
    }
    // Wait until the frozen client receives too (the server has 3 video down-tracks for alice's video).
    let deadline = std::time::Instant::now() + T;
    while server.metric("courier_sfu_downtracks") < 8.0 {
        assert!(std::time::Instant::now() < deadline, "frozen client never subscribed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    frozen.signal("STOP");
    stalled.set_media_reading(false);
    tokio::time::sleep(Duration::from_secs(8)).await;

    let report = bob.leave().await.unwrap();
    let published = alice.leave().await.unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
    let v = report.video().find(|v| v.participant_id == published.participant_id).expect("bob got alice's video");
    assert!(v.frames_received >= 240, "8 s at 30 fps while others stall: {v:?}");
    let complete = v.frames_complete as f64 / (v.frames_received + v.frames_missing) as f64;
    assert!(complete >= 0.99, "{:.2}% complete: {v:?}", complete * 100.0);
    assert_eq!(v.frames_corrupt, 0);
    let a = report.audio().find(|a| a.participant_id == published.participant_id).expect("bob got alice's audio");
    assert!(a.packets_decoded >= 400, "{a:?}");
    assert!(published.published.video_frames_sent > 0);
    drop(frozen);
    drop(stalled);
    server.wait_empty(Duration::from_secs(40));
}
