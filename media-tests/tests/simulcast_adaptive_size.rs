//! Adaptive stream with simulcast against the real server: a native publisher sends three synthetic layers (q/h/f);
//! a subscriber that asks for nothing gets the full layer (f, 1280 wide), and one that sends `track_settings`
//! 320×180 right after `subscribed` never gets a frame wider than 320 (q only).
//!
//! Works with the server as it is (layer selection by `track_settings`, no bandwidth estimation involved):
//! `cargo test -p media-tests --test simulcast_adaptive_size`.

mod courier;

use std::time::Duration;

use courier::Courier;
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::report::VideoTrackReport;
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tile_gets_only_the_low_layer() {
    let server = Courier::start();
    let room = "adaptive";
    let alice = courier::simulcast_publisher(&server, room, T).await;

    let mut big = Client::connect(&server.url, &server.token(room, "big"), ClientOptions::default()).await.unwrap();
    let mut small = Client::connect(
        &server.url,
        &server.token(room, "small"),
        ClientOptions { max_video_size: Some((320, 180)), ..ClientOptions::default() },
    )
    .await
    .unwrap();
    // `small` sends track_settings as it handles `subscribed`, before this event is emitted.
    small.wait_for_event(T, |e| matches!(e, ClientEvent::TrackSubscribed(_))).await.expect("small subscribed");
    let settings_ms = now_ms();
    for c in [&mut big, &mut small] {
        c.wait_for_event(T, |e| matches!(e, ClientEvent::MediaReceived { kind: MediaKind::Video, .. }))
            .await
            .expect("video arrives");
    }
    tokio::time::sleep(Duration::from_secs(8)).await;

    let big = big.leave().await.unwrap();
    let small = small.leave().await.unwrap();
    let alice = alice.leave().await.unwrap();
    for r in [&alice, &big, &small] {
        println!("{}", serde_json::to_string(r).unwrap());
    }
    let video = |r: &media_tests::report::Report| -> VideoTrackReport {
        r.video().find(|v| v.participant_id == alice.participant_id).cloned().expect("alice's video")
    };
    let (big, small) = (video(&big), video(&small));

    // Every layer was sent, about 9 s at 30 fps each.
    assert_eq!(alice.published.video_layers.len(), 3, "{:?}", alice.published);
    for l in &alice.published.video_layers {
        assert!(l.frames_sent >= 240, "{l:?}");
    }

    // No size limit: the full layer.
    intact(&big);
    assert_eq!(big.current_layer, Some(2), "{big:?}");
    assert_eq!(big.max_width, Some(1280), "{big:?}");
    assert!(big.frames_per_layer[2] >= 200, "{big:?}");

    // 320×180: from the first keyframe after the settings went out, nothing wider than 320.
    intact(&small);
    let after: Vec<_> = small.layer_timeline.iter().filter(|c| c.at_ms >= settings_ms).collect();
    let first_small = after.iter().position(|c| c.width.is_some_and(|w| w <= 320)).expect("a 320-wide keyframe");
    assert!(after[first_small..].iter().all(|c| c.width.is_some_and(|w| w <= 320)), "{:?}", small.layer_timeline);
    assert_eq!(small.current_layer, Some(0), "{small:?}");
    // The server knew every layer's size before `small` subscribed, so it never forwarded more than q.
    assert_eq!(small.max_width, Some(320), "{small:?}");
    assert_eq!(small.frames_per_layer[1] + small.frames_per_layer[2], 0, "{small:?}");
    assert!(small.frames_per_layer[0] >= 200, "{small:?}");
}

/// Intact and continuous: no corrupt or duplicate frames, the counter never goes backwards, and almost nothing
/// missing.
fn intact(v: &VideoTrackReport) {
    assert_eq!(v.frames_corrupt, 0, "{v:?}");
    assert_eq!(v.frames_duplicate, 0, "{v:?}");
    assert_eq!(v.counter_backwards, 0, "{v:?}");
    let complete = v.frames_complete as f64 / (v.frames_complete + v.frames_missing).max(1) as f64;
    assert!(complete >= 0.98, "{:.1}% complete: {v:?}", complete * 100.0);
}
