//! Join, leave and rejoin; unpublish and republish: the room and everyone's media follow each change.

mod courier;

use std::time::Duration;

use courier::Courier;
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);

fn is_video(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::MediaReceived { kind: MediaKind::Video, .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_rejoin() {
    let server = Courier::start();
    let av = [MediaKind::Audio, MediaKind::Video];
    let mut alice =
        Client::connect(&server.url, &server.token("jl", "alice"), ClientOptions::publishing(&av)).await.unwrap();
    let mut bob =
        Client::connect(&server.url, &server.token("jl", "bob"), ClientOptions::publishing(&[MediaKind::Audio]))
            .await
            .unwrap();
    bob.wait_for_event(T, is_video).await.expect("video before leaving");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bob_id = bob.participant_id().to_string();
    alice.wait_for_event(T, |e| matches!(e, ClientEvent::ParticipantJoined(p) if p.identity == "bob")).await.unwrap();

    // Bob leaves: alice hears his track go and him leave.
    let first = bob.leave().await.unwrap();
    assert!(first.video().any(|v| v.frames_complete > 0), "bob received alice's video before leaving: {first:?}");
    let left = alice.wait_for_event(T, |e| matches!(e, ClientEvent::ParticipantLeft { .. })).await.unwrap();
    assert!(
        matches!(left, ClientEvent::ParticipantLeft { ref participant_id, ref reason } if *participant_id == bob_id && reason == "left"),
        "{left:?}"
    );
    assert_eq!(server.metric("courier_participants"), 1.0);

    // Bob comes back with the same identity and gets alice's media again.
    let mut bob = Client::connect(&server.url, &server.token("jl", "bob"), ClientOptions::default()).await.unwrap();
    assert_eq!(bob.joined().participants.len(), 1, "alice in the snapshot");
    assert_eq!(bob.joined().participants[0].tracks.len(), 2, "with her two tracks");
    bob.wait_for_event(T, is_video).await.expect("video after rejoin");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Alice leaves: bob hears both tracks unpublished, then alice left.
    let alice_id = alice.participant_id().to_string();
    alice.leave().await.unwrap();
    for _ in 0..2 {
        let e = bob.wait_for_event(T, |e| matches!(e, ClientEvent::TrackUnpublished { .. })).await.unwrap();
        assert!(matches!(e, ClientEvent::TrackUnpublished { ref participant_id, .. } if *participant_id == alice_id));
    }
    bob.wait_for_event(T, |e| matches!(e, ClientEvent::ParticipantLeft { .. })).await.unwrap();
    let report = bob.leave().await.unwrap();
    let v = report.video().next().expect("video after rejoin");
    assert!(v.frames_complete >= 30, "{v:?}");
    assert_eq!(v.frames_corrupt, 0, "{v:?}");
    let m = server.wait_empty(Duration::from_secs(10));
    assert_eq!(m["courier_sfu_peers"], 0.0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_and_republish() {
    let server = Courier::start();
    let alice = Client::connect(
        &server.url,
        &server.token("ur", "alice"),
        ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video]),
    )
    .await
    .unwrap();
    let mut bob = Client::connect(&server.url, &server.token("ur", "bob"), ClientOptions::default()).await.unwrap();
    bob.wait_for_event(T, is_video).await.expect("video");
    tokio::time::sleep(Duration::from_secs(1)).await;

    alice.unpublish(MediaKind::Video).await.unwrap();
    // The subscriber hears that it no longer receives the track, then that it is gone.
    let unsub = bob.wait_for_event(T, |e| matches!(e, ClientEvent::TrackUnsubscribed { .. })).await.unwrap();
    let ClientEvent::TrackUnsubscribed { track_id: old_id, reason } = unsub else { unreachable!() };
    assert_eq!(reason, "unpublished");
    let gone = bob.wait_for_event(T, |e| matches!(e, ClientEvent::TrackUnpublished { .. })).await.unwrap();
    assert!(matches!(gone, ClientEvent::TrackUnpublished { ref track_id, .. } if *track_id == old_id), "{gone:?}");
    assert_eq!(server.metric("courier_tracks"), 1.0, "audio left");

    alice.republish(MediaKind::Video).await.unwrap();
    let again = bob.wait_for_event(T, is_video).await.expect("republished video reaches bob");
    let ClientEvent::MediaReceived { track_id: new_id, .. } = again else { unreachable!() };
    assert_ne!(new_id, old_id, "a republished track has a new id");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let report = bob.leave().await.unwrap();
    alice.leave().await.unwrap();
    assert_eq!(report.video().count(), 2, "the first and the republished video track: {report:?}");
    for v in report.video() {
        assert!(v.frames_complete > 0, "{v:?}");
        assert_eq!((v.frames_corrupt, v.frames_duplicate), (0, 0), "{v:?}");
    }
    let a = report.audio().next().expect("audio");
    assert!(a.packets_decoded > 100, "{a:?}");
    server.wait_empty(Duration::from_secs(10));
}
