//! Three native clients in one room, each publishing Opus audio and VP8 test frames for about 10 s: each receives
//! both others' tracks, with ≥ 99% of video frames complete, none corrupt, and audio decoded.

mod courier;

use std::time::Duration;

use courier::Courier;
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_receive_each_other() {
    let server = Courier::start();
    let mut clients = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let c = Client::connect(
            &server.url,
            &server.token("three", name),
            ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video]),
        )
        .await
        .expect("join");
        clients.push(c);
    }
    for c in &mut clients {
        c.wait_connected(T).await.expect("media connected");
        // Four incoming tracks: two others × (audio, video).
        for _ in 0..4 {
            c.wait_for_event(T, |e| matches!(e, ClientEvent::TrackSubscribed(_))).await.expect("subscribed");
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut reports = Vec::new();
    for c in clients {
        reports.push(c.leave().await.expect("leave"));
    }
    for r in &reports {
        println!("{}", serde_json::to_string(r).unwrap());
        let others: Vec<&str> =
            reports.iter().filter(|o| o.identity != r.identity).map(|o| o.participant_id.as_str()).collect();
        for pid in &others {
            let v = r
                .video()
                .find(|v| v.participant_id == *pid)
                .unwrap_or_else(|| panic!("{} got no video from {pid}", r.identity));
            // About 10 s at 30 fps; the first frames before the subscription opened (and its first keyframe) are
            // legitimately not received, so the bar is 9 s worth.
            assert!(v.frames_received >= 270, "{}: only {} frames from {pid}: {v:?}", r.identity, v.frames_received);
            // Complete out of everything expected since the first frame received (gaps count as missing).
            let complete = v.frames_complete as f64 / (v.frames_received + v.frames_missing).max(1) as f64;
            assert!(complete >= 0.99, "{}: {:.2}% complete from {pid}: {v:?}", r.identity, complete * 100.0);
            assert_eq!(v.frames_corrupt, 0, "{v:?}");
            assert_eq!(v.frames_duplicate, 0, "{v:?}");
            let a = r
                .audio()
                .find(|a| a.participant_id == *pid)
                .unwrap_or_else(|| panic!("{} got no audio from {pid}", r.identity));
            assert!(a.packets_decoded >= 400, "{}: audio from {pid}: {a:?}", r.identity);
            assert_eq!(a.decode_errors, 0, "{a:?}");
        }
    }
    let m = server.wait_empty(Duration::from_secs(10));
    assert_eq!(m["courier_sfu_peers"], 0.0, "{m:?}");
}
