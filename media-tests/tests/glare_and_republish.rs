//! The client is the impolite side of glare: a server offer that arrives while its own offer is
//! outstanding is ignored, never answered. And unpublish/republish renegotiate: a republished
//! track comes back on a new m-line with a new server track id.

mod common;

use std::time::Duration;

use common::{init_tracing, FakeOptions, FakeServer};
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);

async fn next_own_publication(client: &mut Client) -> (MediaKind, String, String) {
    match client
        .wait_for_event(T, |e| {
            matches!(e, ClientEvent::TrackPublished { own: true, .. }) || matches!(e, ClientEvent::Error { .. })
        })
        .await
        .unwrap()
    {
        ClientEvent::TrackPublished { track, .. } => (track.kind, track.id, track.mid.unwrap()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_offers_during_our_offer_are_ignored() {
    init_tracing();
    let server = FakeServer::start(FakeOptions { glare: true }).await;
    let mut alice =
        Client::connect(&server.url, "alice", ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video]))
            .await
            .unwrap();
    let first = [next_own_publication(&mut alice).await, next_own_publication(&mut alice).await];
    alice.wait_connected(T).await.unwrap();
    let video_mid = first.iter().find(|p| p.0 == MediaKind::Video).unwrap().2.clone();

    alice.unpublish(MediaKind::Video).await.unwrap();
    assert!(matches!(
        alice.unpublish(MediaKind::Video).await,
        Err(media_tests::client::ClientError::NotPublished(MediaKind::Video))
    ));
    alice.republish(MediaKind::Video).await.unwrap();
    let (kind, id, mid) = next_own_publication(&mut alice).await;
    assert_eq!(kind, MediaKind::Video);
    assert!(first.iter().all(|p| p.1 != id), "a new track id");
    assert_ne!(mid, video_mid, "a new m-line");

    // Let the republished track send for a moment.
    let before = alice.stats().published.video_frames_sent;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(alice.stats().published.video_frames_sent > before + 10);

    // Muting stops the media; unmuting resumes it.
    alice.mute(MediaKind::Video, true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let muted_at = alice.stats().published.video_frames_sent;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alice.stats().published.video_frames_sent, muted_at);
    alice.mute(MediaKind::Video, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alice.stats().published.video_frames_sent > muted_at + 5);

    let no_error = alice.wait_for_event(Duration::from_millis(200), |e| matches!(e, ClientEvent::Error { .. })).await;
    assert!(no_error.is_err(), "{no_error:?}");
    let answers = server.answers_received();
    assert!(answers.iter().all(|&id| id < 999_000), "answered a glare offer: {answers:?}");
    let report = alice.leave().await.unwrap();
    assert_eq!(report.published.send_errors, 0);
}
