//! The client publishes and receives audio and video end to end, over real sockets, through
//! the stand-in server of `common` (webrtc-rs on both sides, so it tests this client, not
//! Courier): every frame arrives intact, Opus decodes, and track ids follow `subscribed`.

mod common;

use std::time::Duration;

use common::{init_tracing, FakeOptions, FakeServer};
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);

async fn published_ids(client: &mut Client, n: usize) -> Vec<(MediaKind, String)> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let ev =
            client.wait_for_event(T, |e| matches!(e, ClientEvent::TrackPublished { own: true, .. })).await.unwrap();
        if let ClientEvent::TrackPublished { track, .. } = ev {
            assert!(track.mid.is_some(), "own track_published carries the mid");
            ids.push((track.kind, track.id));
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_and_video_arrive_intact() {
    init_tracing();
    let server = FakeServer::start(FakeOptions::default()).await;
    let mut options = ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video]);
    options.video.keyframe_interval = Duration::from_secs(1);
    let mut alice = Client::connect(&server.url, "alice", options).await.unwrap();
    let published = published_ids(&mut alice, 2).await;
    alice.wait_connected(T).await.unwrap();

    let mut bob = Client::connect(&server.url, "bob", ClientOptions::default()).await.unwrap();
    let mut flowing = Vec::new();
    while flowing.len() < 2 {
        if let ClientEvent::MediaReceived { track_id, kind } =
            bob.wait_for_event(T, |e| matches!(e, ClientEvent::MediaReceived { .. })).await.unwrap()
        {
            flowing.push((kind, track_id));
        }
    }
    flowing.sort();
    let mut expected = published.clone();
    expected.sort();
    assert_eq!(flowing, expected, "received tracks are labelled with the published ids");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let mid_report = bob.stats();
    bob.set_media_reading(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused = bob.stats();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still_paused = bob.stats();
    assert_eq!(
        paused.tracks.iter().map(|t| serde_json::to_string(t).unwrap()).collect::<Vec<_>>(),
        still_paused.tracks.iter().map(|t| serde_json::to_string(t).unwrap()).collect::<Vec<_>>(),
        "nothing is counted while reading is stopped"
    );
    bob.set_media_reading(true);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let alice_id = alice.participant_id().to_owned();
    let bob_report = bob.leave().await.unwrap();
    let alice_report = alice.leave().await.unwrap();
    println!("{}", serde_json::to_string(&bob_report).unwrap());
    println!("{}", serde_json::to_string(&alice_report).unwrap());

    assert!(alice_report.tracks.is_empty());
    assert!(alice_report.published.video_frames_sent > 100);
    assert!(alice_report.published.audio_packets_sent > 150);
    assert_eq!(alice_report.published.send_errors, 0);

    let video: Vec<_> = bob_report.video().collect();
    assert_eq!(video.len(), 1);
    let v = video[0];
    assert_eq!(v.participant_id, alice_id);
    assert!(v.frames_complete >= 80, "{v:?}");
    assert_eq!((v.frames_corrupt, v.frames_foreign, v.frames_duplicate, v.packets_malformed), (0, 0, 0, 0), "{v:?}");
    assert!(v.keyframes >= 2, "{v:?}");
    assert!(v.delay_ms_p50.unwrap() < 50.0, "{v:?}");
    let mid_video = mid_report.video().next().unwrap();
    // Loopback without impairment: nothing is lost while reading (the pause may drop some).
    assert_eq!(mid_video.frames_missing, 0, "{mid_video:?}");

    let audio: Vec<_> = bob_report.audio().collect();
    assert_eq!(audio.len(), 1);
    let a = audio[0];
    assert!(a.packets_decoded >= 150, "{a:?}");
    assert_eq!(a.decode_errors, 0, "{a:?}");
    let mid_audio = mid_report.audio().next().unwrap();
    assert_eq!(mid_audio.packets_concealed, 0, "{mid_audio:?}");
    assert_eq!(mid_audio.packets_decoded, mid_audio.packets_received);
}
