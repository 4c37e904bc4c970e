//! Webhooks with real media: a native WebRTC client publishes audio and video through the real `courier` binary,
//! and a receiver on loopback gets the room, participant and track events of what really happened — each signed
//! (HMAC-SHA256 over `t.body`, checked here with the shared secret), with the track ids the subscriber saw.

mod courier;

use std::collections::HashMap;
use std::time::Duration;

use courier::Courier;
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(15);
const SECRET: &str = "webhook-secret-for-e2e";

/// One delivery: its headers (lower-case names) and body.
struct Delivery {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 receiver on 127.0.0.1: answers every POST `200` and hands the delivery over.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Requests on a kept-alive connection, one after another.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers: HashMap<String, String> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + len].to_vec();
                    buf.drain(..head_end + len);
                    if sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                        return;
                    }
                    let _ = tx.send(Delivery { headers, body });
                }
            });
        }
    });
    (url, rx)
}

fn signature_ok(header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header.split_once(',') else { return false };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let expected: String = ring::hmac::sign(&key, &signed).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    expected == v1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_report_real_rooms_participants_and_tracks() {
    let (url, mut deliveries) = receiver().await;
    let server = Courier::start_with_env(&[("COURIER_WEBHOOK_URL", &url), ("COURIER_WEBHOOK_SECRET", SECRET)]);
    let av = [MediaKind::Audio, MediaKind::Video];
    let mut alice =
        Client::connect(&server.url, &server.token("wh", "alice"), ClientOptions::publishing(&av)).await.unwrap();
    for _ in 0..2 {
        alice.wait_for_event(T, |e| matches!(e, ClientEvent::TrackPublished { own: true, .. })).await.unwrap();
    }
    let alice_id = alice.participant_id().to_string();
    // Bob joins after both tracks are published: his snapshot names them.
    let mut bob = Client::connect(&server.url, &server.token("wh", "bob"), ClientOptions::default()).await.unwrap();
    let mut seen_tracks: Vec<String> =
        bob.joined().participants.iter().flat_map(|p| p.tracks.iter().map(|t| t.id.clone())).collect();
    assert_eq!(seen_tracks.len(), 2, "alice's two tracks in bob's snapshot");
    bob.wait_for_event(T, |e| matches!(e, ClientEvent::MediaReceived { kind: MediaKind::Video, .. }))
        .await
        .expect("bob receives alice's video");
    seen_tracks.sort();
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();

    // Every event up to room_finished, within a bound.
    let mut events: Vec<serde_json::Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Two deliveries run at once, so events may arrive out of order: wait for all of them, not just the last one.
    let complete = |events: &[serde_json::Value]| {
        let n = |name: &str| events.iter().filter(|e| e["event"] == name).count();
        n("room_finished") >= 1
            && n("participant_joined") >= 2
            && n("participant_left") >= 2
            && n("track_published") >= 2
            && n("track_unpublished") >= 2
    };
    while !complete(&events) {
        let d = tokio::time::timeout_at(deadline, deliveries.recv())
            .await
            .unwrap_or_else(|_| panic!("not every event within 20 s; got {events:#?}"))
            .expect("receiver running");
        let sig = d.headers.get("courier-signature").cloned().unwrap_or_default();
        assert!(signature_ok(&sig, &d.body), "signature {sig:?} does not verify");
        let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(d.headers.get("courier-event-id").map(String::as_str), v["id"].as_str(), "event id header");
        events.push(v);
    }
    let of = |name: &str| events.iter().filter(|e| e["event"] == name).collect::<Vec<_>>();
    assert_eq!(of("room_started").len(), 1, "{events:#?}");
    assert_eq!(of("room_started")[0]["room"]["name"], "wh");
    let mut joined: Vec<&str> =
        of("participant_joined").iter().filter_map(|e| e["participant"]["identity"].as_str()).collect();
    joined.sort();
    assert_eq!(joined, ["alice", "bob"]);
    let mut left: Vec<&str> =
        of("participant_left").iter().filter_map(|e| e["participant"]["identity"].as_str()).collect();
    left.sort();
    assert_eq!(left, ["alice", "bob"]);
    for (name, want) in [("track_published", &seen_tracks), ("track_unpublished", &seen_tracks)] {
        let evs = of(name);
        let mut ids: Vec<String> = evs.iter().filter_map(|e| e["track"]["id"].as_str().map(String::from)).collect();
        ids.sort();
        assert_eq!(&ids, want, "{name}: the tracks the subscriber saw");
        for e in evs {
            assert_eq!(e["participant"]["id"], alice_id.as_str(), "{name} names the publisher");
            assert_eq!(e["room"]["name"], "wh");
        }
    }
    let mut kinds: Vec<&str> = of("track_published").iter().filter_map(|e| e["track"]["kind"].as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["audio", "video"]);
    // Times: started first, finished last.
    let at = |e: &serde_json::Value| e["created_at"].as_u64().unwrap();
    let first = events.iter().map(at).min().unwrap();
    let last = events.iter().map(at).max().unwrap();
    assert_eq!(at(of("room_started")[0]), first);
    assert_eq!(at(of("room_finished")[0]), last);
    let m = server.metrics();
    assert_eq!(m.get("courier_webhook_failed_attempts_total"), Some(&0.0), "{m:?}");
}
