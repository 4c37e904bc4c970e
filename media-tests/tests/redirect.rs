//! The native client follows a cluster's redirects by itself: a stand-in node (a tiny WebSocket server in this test)
//! answers `join` with `redirect` to a real Courier server and closes 4012, and the client ends joined there with
//! media flowing both ways; a node that redirects to itself ends in `TooManyRedirects` at once. WHIP the same way:
//! a stand-in endpoint answers the `POST` with `307` to the real server's `/whip`, the stream reaches a subscriber,
//! and `DELETE` goes to the resource on the real server; a `307` loop fails with a redirect error.

mod courier;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier::Courier;
use futures::{SinkExt, StreamExt};
use media_tests::client::{Client, ClientError, ClientEvent, ClientOptions};
use media_tests::report::Report;
use media_tests::signal::{MediaKind, RedirectError, MAX_REDIRECTS};
use media_tests::whip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(10);
const PLAY: Duration = Duration::from_secs(5);

/// A cluster node that hosts no room: every `join` is answered with `redirect` to `target` (its own URL when
/// `None`), then close 4012. Records each first message received.
struct RedirectingNode {
    url: String,
    joins: Arc<Mutex<Vec<String>>>,
}

impl RedirectingNode {
    async fn start(target: Option<String>, node: &'static str) -> RedirectingNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/rtc", listener.local_addr().unwrap());
        let target = target.unwrap_or_else(|| url.clone());
        let joins = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&joins);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (target, seen) = (target.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                    let Some(Ok(Message::Text(join))) = ws.next().await else { return };
                    seen.lock().unwrap().push(join.as_str().to_owned());
                    let redirect = serde_json::json!({"type": "redirect", "url": target, "node": node, "room": "r"});
                    let _ = ws.send(Message::text(redirect.to_string())).await;
                    let close = CloseFrame { code: CloseCode::from(4012), reason: "redirect".into() };
                    let _ = ws.close(Some(close)).await;
                });
            }
        });
        RedirectingNode { url, joins }
    }

    fn joins(&self) -> Vec<String> {
        self.joins.lock().unwrap().clone()
    }
}

/// A WHIP endpoint of a node that does not host the room: every request is read whole and answered `307` with
/// `Location: location`. Counts the requests.
async fn redirecting_whip(location: Option<String>) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/whip", listener.local_addr().unwrap());
    let location = location.unwrap_or_else(|| endpoint.clone());
    let count = Arc::new(Mutex::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (location, seen) = (location.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                // Read the head, then the body its Content-Length announces.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_len = loop {
                    let Ok(n) = stream.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        break end + 4 + len;
                    }
                };
                while buf.len() < body_len {
                    let Ok(n) = stream.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                *seen.lock().unwrap() += 1;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (endpoint, count)
}

fn both() -> ClientOptions {
    ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video])
}

/// About `PLAY` at 30 fps of `from`'s video arrived, ≥ 99 % complete, none corrupt, and its audio decoded.
fn assert_received_from(r: &Report, from: &str, who: &str) {
    let v = r.video().find(|v| v.participant_id == from).unwrap_or_else(|| panic!("{who}: no video: {r:?}"));
    assert!(v.frames_received >= 100, "{who}: only {} frames: {v:?}", v.frames_received);
    let complete = v.frames_complete as f64 / (v.frames_received + v.frames_missing).max(1) as f64;
    assert!(complete >= 0.99, "{who}: {:.2}% complete: {v:?}", complete * 100.0);
    assert_eq!(v.frames_corrupt, 0, "{who}: {v:?}");
    let a = r.audio().find(|a| a.participant_id == from).unwrap_or_else(|| panic!("{who}: no audio: {r:?}"));
    assert!(a.packets_decoded >= 100, "{who}: {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_client_joins_the_real_node_and_media_flows() {
    let server = Courier::start();
    let node_a = RedirectingNode::start(Some(server.url.clone()), "node-b").await;

    let token = server.token("r", "alice");
    let mut alice = Client::connect(&node_a.url, &token, both()).await.expect("alice joins through the redirect");
    assert_eq!(alice.url(), server.url, "ended on the node that hosts the room");
    assert_eq!(alice.node(), Some("node-b"));
    let joins = node_a.joins();
    assert_eq!(joins.len(), 1, "one join on the redirecting node: {joins:?}");
    let first: serde_json::Value = serde_json::from_str(&joins[0]).unwrap();
    assert_eq!(first["type"], "join");
    assert_eq!(first["token"], token.as_str(), "the same join (token) went to both");

    let mut bob = Client::connect(&server.url, &server.token("r", "bob"), both()).await.expect("bob joins");
    assert_eq!(bob.node(), None, "no redirect, no node");
    for c in [&mut alice, &mut bob] {
        c.wait_connected(T).await.expect("media connected");
        for _ in 0..2 {
            c.wait_for_event(T, |e| matches!(e, ClientEvent::TrackSubscribed(_))).await.expect("subscribed");
        }
    }
    tokio::time::sleep(PLAY).await;
    let (alice_id, bob_id) = (alice.participant_id().to_owned(), bob.participant_id().to_owned());
    let ra = alice.leave().await.expect("alice leaves");
    let rb = bob.leave().await.expect("bob leaves");
    println!("{}\n{}", serde_json::to_string(&ra).unwrap(), serde_json::to_string(&rb).unwrap());
    assert_received_from(&ra, &bob_id, "alice (redirected) from bob");
    assert_received_from(&rb, &alice_id, "bob from alice (redirected)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_ends_in_too_many_redirects() {
    let node = RedirectingNode::start(None, "node-a").await;
    let started = Instant::now();
    let result = tokio::time::timeout(T, Client::connect(&node.url, "any-token", ClientOptions::default()))
        .await
        .expect("bounded: no hang on a redirect loop");
    let err = result.expect_err("a loop never joins");
    assert!(matches!(err, ClientError::TooManyRedirects { .. }), "{err}");
    assert!(err.to_string().starts_with("too many redirects"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "at once, not after a timeout: {:?}", started.elapsed());
    assert_eq!(node.joins().len(), MAX_REDIRECTS + 1, "the first join and three redirects followed");

    // A redirect to something that is not a WebSocket URL is refused as such.
    let bad = RedirectingNode::start(Some("http://127.0.0.1:1/rtc".into()), "node-x").await;
    let err = Client::connect(&bad.url, "any-token", ClientOptions::default()).await.expect_err("not followed");
    assert!(matches!(err, ClientError::BadRedirect { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_follows_a_307_to_the_node_that_hosts_the_room() {
    let server = Courier::start();
    let mut viewer =
        Client::connect(&server.url, &server.token("w", "viewer"), ClientOptions::publishing(&[])).await.expect("join");
    let real = format!("http://{}/whip", server.http);
    let (endpoint, posts) = redirecting_whip(Some(real.clone())).await;
    let mut publisher = whip::publish(&endpoint, &server.token("w", "obs"), &both()).await.expect("WHIP publish");
    assert_eq!(*posts.lock().unwrap(), 1);
    assert!(
        publisher.resource().starts_with(&format!("http://{}/whip/", server.http)),
        "the resource is on the node that answered 201: {}",
        publisher.resource()
    );
    publisher.wait_connected(T).await.expect("WHIP publisher connected");
    let obs = courier::wait_for_publisher(&mut viewer, "obs", 2, T).await;
    tokio::time::sleep(PLAY).await;
    let (_, status) = publisher.stop().await.expect("DELETE");
    assert_eq!(status, 200, "DELETE reached the resource on the real node");
    let report = viewer.leave().await.expect("leave");
    println!("{}", serde_json::to_string(&report).unwrap());
    assert_received_from(&report, &obs.id, "WebSocket subscriber of a redirected WHIP publisher");

    // A 307 loop: the offer is posted 1 + 3 times, then refused.
    let (looping, posts) = redirecting_whip(None).await;
    let err = tokio::time::timeout(T, whip::publish(&looping, "any-token", &both()))
        .await
        .expect("bounded")
        .expect_err("a loop never publishes");
    assert!(matches!(err, whip::WhipError::Redirect(RedirectError::TooMany { .. })), "{err}");
    assert_eq!(*posts.lock().unwrap(), MAX_REDIRECTS + 1);
}
