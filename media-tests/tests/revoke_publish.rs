//! Revoking a publisher's grant at run time, with real media: the admin API narrows alice's sources to the
//! microphone while she sends audio and video. Her camera track is unpublished at once — the subscriber hears it,
//! and the engine itself drops the track (`courier_sfu_tracks`) — while her audio keeps flowing.

mod courier;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use courier::{Courier, KEY, SECRET};
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);

/// An admin API token for `room` (room_admin), signed like the server's own.
fn admin_token(room: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims =
        serde_json::json!({"iss": KEY, "sub": "backend", "exp": exp, "video": {"room": room, "room_admin": true}});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(KEY.to_string());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// One HTTP/1.0 request to the server; (status, body).
fn http(server: &Courier, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(&server.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.http,
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_camera_unpublishes_it_in_the_room_and_the_engine() {
    let server = Courier::start();
    let av = [MediaKind::Audio, MediaKind::Video];
    let mut alice =
        Client::connect(&server.url, &server.token("rv", "alice"), ClientOptions::publishing(&av)).await.unwrap();
    for _ in 0..2 {
        alice.wait_for_event(T, |e| matches!(e, ClientEvent::TrackPublished { own: true, .. })).await.unwrap();
    }
    let alice_id = alice.participant_id().to_string();
    let mut bob = Client::connect(&server.url, &server.token("rv", "bob"), ClientOptions::default()).await.unwrap();
    let video_id = bob.joined().participants[0]
        .tracks
        .iter()
        .find(|t| t.kind == MediaKind::Video)
        .map(|t| t.id.clone())
        .expect("alice's video in bob's snapshot");
    bob.wait_for_event(T, |e| matches!(e, ClientEvent::MediaReceived { kind: MediaKind::Video, .. })).await.unwrap();
    assert_eq!(server.metric("courier_sfu_tracks"), 2.0);

    let permissions = r#"{"permissions":{"can_publish":true,"can_publish_sources":["microphone"],"can_subscribe":true,"can_chat":true,"room_admin":false,"hidden":false}}"#;
    let (status, body) = http(&server, "PATCH", "/api/v1/rooms/rv/participants/alice", &admin_token("rv"), permissions);
    assert_eq!(status, 200, "{body}");

    // The subscriber hears the camera go, and only the camera.
    let e = bob.wait_for_event(T, |e| matches!(e, ClientEvent::TrackUnpublished { .. })).await.unwrap();
    assert!(
        matches!(e, ClientEvent::TrackUnpublished { ref participant_id, ref track_id } if *participant_id == alice_id && *track_id == video_id),
        "{e:?}"
    );
    // The engine dropped it too, while alice stays connected and her audio stays published.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = server.metrics();
        if m.get("courier_sfu_tracks") == Some(&1.0) {
            assert_eq!(m.get("courier_sfu_peers"), Some(&2.0), "{m:?}");
            assert_eq!(m.get("courier_tracks"), Some(&1.0), "{m:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the engine still holds the revoked track: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Audio keeps flowing to bob after the revocation.
    let before = server.metric("courier_rtp_packets_out_total");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = server.metric("courier_rtp_packets_out_total");
    assert!(after > before + 20.0, "audio still forwarded: {before} -> {after}");
    let report = bob.leave().await.unwrap();
    assert!(report.audio().any(|a| a.packets_received > 100), "{report:?}");
    alice.leave().await.unwrap();
}
