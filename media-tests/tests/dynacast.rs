//! Dynacast against the real server: a native publisher sends three synthetic simulcast layers; its only subscriber
//! shows the track in a 320×180 tile. The server tells the publisher (`set_layers`) that nobody needs `f`, and the
//! publisher stops sending it; when the subscriber asks for 1280×720 again, `f` comes back (starting with a
//! keyframe) and the subscriber receives it.
//!

mod courier;

use std::time::{Duration, Instant};

use courier::Courier;
use media_tests::client::{Client, ClientEvent, ClientOptions};

const T: Duration = Duration::from_secs(15);

fn layer_active(e: &ClientEvent, rid: &str, active: bool) -> bool {
    matches!(e, ClientEvent::SetLayers { layers, .. } if layers.iter().any(|l| l.rid == rid && l.active == active))
}

fn f_frames_sent(c: &Client) -> u64 {
    c.stats().published.video_layers.iter().find(|l| l.rid == "f").map_or(0, |l| l.frames_sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_layers_are_paused_and_resumed() {
    let server = Courier::start();
    let room = "dynacast";
    let mut alice = courier::simulcast_publisher(&server, room, T).await;

    let mut bob = Client::connect(
        &server.url,
        &server.token(room, "bob"),
        ClientOptions { max_video_size: Some((320, 180)), ..ClientOptions::default() },
    )
    .await
    .expect("bob joins");
    let track_id = match bob.wait_for_event(T, |e| matches!(e, ClientEvent::TrackSubscribed(_))).await {
        Ok(ClientEvent::TrackSubscribed(s)) => s.track_id,
        other => panic!("no subscription: {other:?}"),
    };
    let asked_small = Instant::now();

    // Nobody needs f: the server says so within a few seconds, and f stops.
    alice
        .wait_for_event(Duration::from_secs(6), |e| layer_active(e, "f", false))
        .await
        .expect("set_layers with f inactive within 6 s");
    println!("f paused {:?} after the settings", asked_small.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = f_frames_sent(&alice);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f_frames_sent(&alice), paused_at, "f is not sent while paused");
    assert!(alice.stats().published.video_layers.iter().any(|l| l.rid == "q" && l.active));

    // Bob wants the full size again: f comes back, and bob receives it.
    bob.set_track_settings(&track_id, Some((1280, 720)), false).await.expect("track_settings");
    let asked_big = Instant::now();
    alice
        .wait_for_event(Duration::from_secs(6), |e| layer_active(e, "f", true))
        .await
        .expect("set_layers with f active within 6 s");
    println!("f resumed {:?} after the settings", asked_big.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let on_f = bob.stats().video().any(|v| v.track_id == track_id && v.current_layer == Some(2));
        if on_f {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob did not receive f within 5 s of set_layers: {:?}\npublisher: {:?}",
            bob.stats(),
            alice.stats().published
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("bob on f {:?} after the settings", asked_big.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let bob = bob.leave().await.unwrap();
    let alice = alice.leave().await.unwrap();
    println!("{}", serde_json::to_string(&alice).unwrap());
    println!("{}", serde_json::to_string(&bob).unwrap());
    assert!(alice.published.video_layers.iter().all(|l| l.active), "all active at the end: {:?}", alice.published);
    let f = alice.published.video_layers.iter().find(|l| l.rid == "f").unwrap();
    assert!(f.frames_sent > paused_at, "f resumed: {f:?}");
    assert!(f.keyframes_sent >= 2, "the resumed f starts with a keyframe: {f:?}");
    let v = bob.video().find(|v| v.track_id == track_id).expect("bob's video");
    assert_eq!((v.frames_corrupt, v.frames_duplicate, v.counter_backwards), (0, 0, 0), "{v:?}");
    assert_eq!(v.max_width, Some(1280), "{v:?}");
    assert!(v.frames_per_layer[0] >= 60, "{v:?}");
    assert!(v.frames_per_layer[2] >= 20, "{v:?}");
}
