//! The native client over WHIP and WHEP against the real `courier` binary: a WHIP publisher's Opus and VP8 test
//! frames reach a WebSocket subscriber whole, and a WHEP player receives a WebSocket publisher's, ~5 s each.

mod courier;

use std::time::Duration;

use courier::Courier;
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::report::Report;
use media_tests::signal::MediaKind;
use media_tests::whip;

const T: Duration = Duration::from_secs(10);
const PLAY: Duration = Duration::from_secs(5);

fn both() -> ClientOptions {
    ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video])
}

/// About `PLAY` at 30 fps arrived (the first frames before the first keyframe aside), ≥ 99 % complete, none
/// corrupt, and audio decoded.
fn assert_received(r: &Report, who: &str) {
    let v = r.video().next().unwrap_or_else(|| panic!("{who}: no video: {r:?}"));
    assert!(v.frames_received >= 100, "{who}: only {} frames: {v:?}", v.frames_received);
    let complete = v.frames_complete as f64 / (v.frames_received + v.frames_missing).max(1) as f64;
    assert!(complete >= 0.99, "{who}: {:.2}% complete: {v:?}", complete * 100.0);
    assert_eq!(v.frames_corrupt, 0, "{who}: {v:?}");
    let a = r.audio().next().unwrap_or_else(|| panic!("{who}: no audio: {r:?}"));
    assert!(a.packets_decoded >= 100, "{who}: {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_reaches_a_websocket_subscriber() {
    let server = Courier::start();
    let mut viewer =
        Client::connect(&server.url, &server.token("w", "viewer"), ClientOptions::publishing(&[])).await.expect("join");
    let endpoint = format!("http://{}/whip", server.http);
    let mut publisher = whip::publish(&endpoint, &server.token("w", "obs"), &both()).await.expect("WHIP publish");
    assert!(publisher.resource().contains("/whip/"), "{}", publisher.resource());
    publisher.wait_connected(T).await.expect("WHIP publisher connected");
    let obs = courier::wait_for_publisher(&mut viewer, "obs", 2, T).await;
    tokio::time::sleep(PLAY).await;
    let sent = publisher.stats();
    let (_, status) = publisher.stop().await.expect("DELETE");
    assert_eq!(status, 200);
    let left = viewer
        .wait_for_event(
            T,
            |e| matches!(e, ClientEvent::ParticipantLeft { participant_id, .. } if *participant_id == obs.id),
        )
        .await;
    assert!(left.is_ok(), "the WHIP publisher left after DELETE");
    let report = viewer.leave().await.expect("leave");
    println!("{}", serde_json::to_string(&report).unwrap());
    println!("WHIP sent {} video frames", sent.published.video_frames_sent);
    assert_received(&report, "WebSocket subscriber of a WHIP publisher");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_player_plays_a_websocket_publisher() {
    let server = Courier::start();
    let mut cam = Client::connect(&server.url, &server.token("p", "cam"), both()).await.expect("join");
    cam.wait_connected(T).await.expect("publisher connected");
    for _ in 0..2 {
        cam.wait_for_event(T, |e| matches!(e, ClientEvent::TrackPublished { own: true, .. })).await.expect("published");
    }
    let endpoint = format!("http://{}/whep?participant=cam", server.http);
    let mut player =
        whip::play(&endpoint, &server.token("p", "player"), &ClientOptions::default()).await.expect("WHEP");
    assert!(player.resource().contains("/whep/"), "{}", player.resource());
    player.wait_connected(T).await.expect("WHEP player connected");
    tokio::time::sleep(PLAY).await;
    let (report, status) = player.stop().await.expect("DELETE");
    assert_eq!(status, 200);
    println!("{}", serde_json::to_string(&report).unwrap());
    assert_received(&report, "WHEP player");
    drop(cam);

    // A refusal surfaces with its status.
    let err = whip::play(&endpoint, "bad-token", &ClientOptions::default()).await.unwrap_err();
    assert!(matches!(err, whip::WhipError::Refused { status: 401, .. }), "{err}");
}
