//! Media through Courier's built-in TURN server: a native (webrtc-rs) publisher with the relay-only ICE policy
//! takes its TURN server and credentials from `joined.ice_servers`, publishes over a UDP relay, and a subscriber
//! receives its frames whole. A second case announces a `public_ip` this host cannot reach (TEST-NET-3): the relay
//! must hairpin to the SFU's local socket, and both clients, relay-only, still exchange media.
//! (webrtc-rs 0.21 does TURN over UDP only; TCP and TLS relays are covered by signaling/tests/turn.rs and the
//! Chromium tests.)

mod courier;

use std::time::Duration;

use courier::Courier;
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(15);

async fn publish_and_receive(server: &Courier, room: &str, subscriber_relay_only: bool) {
    let publisher = ClientOptions { relay_only: true, ..ClientOptions::publishing(&[MediaKind::Video]) };
    let alice = Client::connect(&server.url, &server.token(room, "alice"), publisher).await.expect("alice joins");
    let servers = &alice.joined().ice_servers;
    assert_eq!(servers.len(), 1, "joined offers the built-in TURN server");
    assert!(
        servers[0].urls.iter().any(|u| u.starts_with("turn:127.0.0.1:") && u.ends_with("?transport=udp")),
        "{servers:?}"
    );
    let subscriber = ClientOptions { relay_only: subscriber_relay_only, ..ClientOptions::default() };
    let mut bob = Client::connect(&server.url, &server.token(room, "bob"), subscriber).await.expect("bob joins");
    alice.wait_connected(T).await.expect("alice connected through the relay");
    bob.wait_connected(T).await.expect("bob connected");
    bob.wait_for_event(T, |e| matches!(e, ClientEvent::TrackSubscribed(_))).await.expect("bob subscribed");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = alice.joined().participant.id.clone();
    // The subscriber leaves first: a publisher leaving mid-frame would cut the last frame short.
    let r = bob.leave().await.expect("bob leaves");
    let _ = alice.leave().await.expect("alice leaves");
    let v = r.video().find(|v| v.participant_id == pid).expect("bob got alice's video");
    // About 5 s at 30 fps; the first frames before the subscription opened are not received.
    assert!(v.frames_received >= 120, "only {} frames: {v:?}", v.frames_received);
    // Every frame complete but the edges: the first may have begun before the subscription opened, the last may be
    // cut by the leave (at 30 fps for 5 s, 99 % would allow only one).
    let incomplete = (v.frames_received + v.frames_missing).saturating_sub(v.frames_complete);
    assert!(incomplete <= 2, "{incomplete} frames incomplete: {v:?}");
    assert_eq!(v.frames_corrupt, 0, "{v:?}");
    let m = server.metrics();
    assert!(m["courier_turn_bytes_to_peers_total"] > 100_000.0, "the media went through the relay: {m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_publisher_reaches_a_subscriber_through_the_builtin_turn() {
    let server = Courier::start_with_env(&[("COURIER_TURN_ENABLED", "true"), ("COURIER_TURN_ADDR", "127.0.0.1:0")]);
    publish_and_receive(&server, "turn", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_public_ip_is_hairpinned_for_relay_only_clients() {
    let server = Courier::start_with_env(&[
        ("COURIER_TURN_ENABLED", "true"),
        ("COURIER_TURN_ADDR", "127.0.0.1:0"),
        // On no interface of this host: the SFU announces it, only the relay's hairpin mapping reaches the SFU.
        ("COURIER_PUBLIC_IP", "203.0.113.77"),
        ("COURIER_TURN_HOST", "127.0.0.1"),
    ]);
    publish_and_receive(&server, "hairpin", true).await;
}
