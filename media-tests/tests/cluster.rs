//! Media in a cluster (issue 18): three real `courier` nodes sharing the test Redis (`COURIER_TEST_REDIS_URL`) and
//! PostgreSQL (`COURIER_TEST_POSTGRES_URL`), started by scripts/test.sh. Native clients (webrtc-rs) that join the
//! same room through different nodes end on the one node that hosts it and receive each other; when that node is
//! SIGKILLed, they join again through a surviving node, the room is placed again and media flows again. The time
//! from the kill to the first complete frame is printed (docs/benchmarks.md, "Cluster"); the test bounds it only
//! loosely, it is a number, not a timed test.

mod courier;

use std::time::{Duration, Instant};

use courier::{courier_bin, KEY, SECRET};
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::report::Report;
use media_tests::server::CourierProcess;
use media_tests::signal::MediaKind;

const T: Duration = Duration::from_secs(10);

/// The test Redis and PostgreSQL, or `None` outside CI.
fn backends() -> Option<(String, String)> {
    match (std::env::var("COURIER_TEST_REDIS_URL"), std::env::var("COURIER_TEST_POSTGRES_URL")) {
        (Ok(r), Ok(p)) => {
            // A database of its own in the shared Redis (the signaling cluster tests use 1..=4).
            let r = format!("{}/6", r.rsplit_once('/').map_or(r.as_str(), |(b, _)| b));
            Some((r, p))
        }
        _ => {
            assert!(std::env::var_os("CI").is_none(), "CI must run the cluster media test (Redis, PostgreSQL)");
            eprintln!("skipped: COURIER_TEST_REDIS_URL or COURIER_TEST_POSTGRES_URL not set");
            None
        }
    }
}

fn node(id: &str, redis: &str, postgres: &str) -> CourierProcess {
    let env = [
        ("COURIER_CLUSTER_REDIS_URL", redis),
        ("COURIER_CLUSTER_NODE_ID", id),
        ("COURIER_CLUSTER_REGION", "test"),
        ("COURIER_CHAT_STORE", "postgres"),
        ("COURIER_CHAT_POSTGRES_URL", postgres),
    ];
    CourierProcess::start(&courier_bin(), KEY, SECRET, &env).expect("a cluster node starts")
}

fn both() -> ClientOptions {
    ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video])
}

/// (frames received, frames not complete) of `from`'s video.
fn complete_from(r: &Report, from: &str) -> (u64, u64) {
    let Some(v) = r.video().find(|v| v.participant_id == from) else { return (0, 0) };
    assert_eq!(v.frames_corrupt, 0, "{v:?}");
    (v.frames_received, (v.frames_received + v.frames_missing).saturating_sub(v.frames_complete))
}

/// At least 60 frames (2 s at 30 fps) and at most 1 % of them incomplete, or 2 in so short a window (a frame at
/// the edge of a publication may be cut).
fn fine((frames, incomplete): (u64, u64)) -> bool {
    frames >= 60 && (incomplete * 100 <= frames || incomplete <= 2)
}

/// Join `room` as `identity` through the first of `urls` that lets it in (a dead node refuses at once).
async fn join_any(urls: &[String], token: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for url in urls {
            if let Ok(c) = Client::connect(url, token, both()).await {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "no node let the client in within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_joined_through_any_node_lives_on_one_and_comes_back_after_its_node_dies() {
    let Some((redis, postgres)) = backends() else { return };
    let suffix = std::process::id();
    let mut nodes: Vec<Option<CourierProcess>> =
        ["a", "b", "c"].iter().map(|n| Some(node(&format!("media-{n}-{suffix}"), &redis, &postgres))).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.as_ref().unwrap().url.clone()).collect();
    let room = format!("cluster-media-{suffix}");
    let token = |who: &str| nodes[0].as_ref().unwrap().token(&room, who).expect("token");
    let (alice_token, bob_token) = (token("alice"), token("bob"));
    // The registry fills within a heartbeat; until then a node places rooms on itself, which is fine too.
    let mut alice = Client::connect(&urls[0], &alice_token, both()).await.expect("alice joins through node a");
    let mut bob = Client::connect(&urls[2], &bob_token, both()).await.expect("bob joins through node c");
    assert_eq!(alice.url(), bob.url(), "both end on the room's node");
    let host = urls.iter().position(|u| u == alice.url()).expect("a node of the cluster");
    println!("room on node {host}; alice redirected: {:?}, bob redirected: {:?}", alice.node(), bob.node());
    for c in [&mut alice, &mut bob] {
        c.wait_connected(T).await.expect("media connected");
        for _ in 0..2 {
            c.wait_for_event(T, |e| matches!(e, ClientEvent::TrackSubscribed(_))).await.expect("subscribed");
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alice_id = alice.participant_id().to_owned();
    let rb = bob.stats();
    let got = complete_from(&rb, &alice_id);
    assert!(fine(got), "bob before the kill: (frames, incomplete) = {got:?}");

    // The room's node dies: both join again through the nodes that are left.
    let killed = Instant::now();
    drop(nodes[host].take());
    drop(alice);
    drop(bob);
    let left: Vec<String> = (0..3).filter(|i| *i != host).map(|i| urls[i].clone()).collect();
    let alice = join_any(&left, &alice_token).await;
    let bob = join_any(&left[1..].iter().chain(&left[..1]).cloned().collect::<Vec<_>>(), &bob_token).await;
    assert_eq!(alice.url(), bob.url(), "the room was placed again, on one node");
    assert_ne!(alice.url(), urls[host]);
    let alice_id = alice.participant_id().to_owned();
    // Back: the first complete frame of alice's new publication at bob.
    let deadline = killed + Duration::from_secs(20);
    let back = loop {
        let (frames, _) = complete_from(&bob.stats(), &alice_id);
        if frames > 0 {
            break killed.elapsed();
        }
        assert!(Instant::now() < deadline, "no frame from alice within 20 s of the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("failover: SIGKILL of the room's node to bob's first frame from alice again: {} ms", back.as_millis());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bob_id = bob.participant_id().to_owned();
    let rb = bob.leave().await.expect("bob leaves");
    let ra = alice.leave().await.expect("alice leaves");
    let got = complete_from(&rb, &alice_id);
    assert!(fine(got), "bob after the failover: (frames, incomplete) = {got:?}");
    let got = complete_from(&ra, &bob_id);
    assert!(fine(got), "alice after the failover: (frames, incomplete) = {got:?}");
}

fn node_in(id: &str, region: &str, redis: &str, postgres: &str) -> CourierProcess {
    let env = [
        ("COURIER_CLUSTER_REDIS_URL", redis),
        ("COURIER_CLUSTER_NODE_ID", id),
        ("COURIER_CLUSTER_REGION", region),
        ("COURIER_CHAT_STORE", "postgres"),
        ("COURIER_CHAT_POSTGRES_URL", postgres),
    ];
    CourierProcess::start(&courier_bin(), KEY, SECRET, &env).expect("a cluster node starts")
}

/// A room that spans two regions (issue 19): alice joins through node a (region `eu`), where the room lives; bob and
/// carol join through node b (region `us`) and are served there, in b's part of the room, with no redirect. Each
/// side's tracks cross between the nodes on one relay peer and every member receives every other's video whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_two_regions_and_every_member_receives_the_others() {
    let Some((redis, postgres)) = backends() else { return };
    // A database of its own: the other test's nodes are of another region, but their rooms need not be seen here.
    let redis = format!("{}/7", redis.rsplit_once('/').map_or(redis.as_str(), |(b, _)| b));
    let suffix = std::process::id();
    // Regions of this run only: the nodes of an earlier run stay in the registry for a few seconds after it.
    let a = node_in(&format!("span-a-{suffix}"), &format!("eu-{suffix}"), &redis, &postgres);
    let b = node_in(&format!("span-b-{suffix}"), &format!("us-{suffix}"), &redis, &postgres);
    // Both nodes in each other's registry (a heartbeat a second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let room = format!("span-{suffix}");
    let token = |who: &str| a.token(&room, who).expect("token");
    let mut alice = Client::connect(&a.url, &token("alice"), both()).await.expect("alice joins through node a");
    assert_eq!((alice.url(), alice.node()), (a.url.as_str(), None), "the room lives on node a");
    let mut bob = Client::connect(&b.url, &token("bob"), both())
        .await
        .unwrap_or_else(|e| panic!("bob joins through node b: {e:#}"));
    assert_eq!((bob.url(), bob.node()), (b.url.as_str(), None), "bob is served on node b (another region)");
    let mut carol = Client::connect(&b.url, &token("carol"), both()).await.expect("carol joins through node b");
    assert_eq!(carol.url(), b.url.as_str());
    // Everyone subscribes to the two others' audio and video: 4 tracks each.
    for c in [&mut alice, &mut bob, &mut carol] {
        c.wait_connected(T).await.expect("media connected");
        for i in 0..4 {
            c.wait_for_event(Duration::from_secs(20), |e| matches!(e, ClientEvent::TrackSubscribed(_)))
                .await
                .unwrap_or_else(|e| panic!("{}: subscription {i}: {e}", c.participant_id()));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // One relay each way between the nodes, however many members receive it on the other side: node a has alice,
    // its relay to b and the peer receiving b's relay; node b has bob, carol and the same two.
    let peers = |n: &CourierProcess| n.metrics().ok().and_then(|m| m.get("courier_sfu_peers").copied());
    assert_eq!((peers(&a), peers(&b)), (Some(3.0), Some(4.0)), "peers at (a, b)");
    let ids: Vec<String> = [&alice, &bob, &carol].iter().map(|c| c.participant_id().to_owned()).collect();
    let (rb, rc) = (bob.leave().await.expect("bob"), carol.leave().await.expect("carol"));
    // Nobody left on node b: the relays between the nodes close.
    let t0 = Instant::now();
    while peers(&a) != Some(1.0) {
        assert!(t0.elapsed() < Duration::from_secs(30), "node a still has {:?} peers for alice alone", peers(&a));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("relays closed {} ms after node b's last member left", t0.elapsed().as_millis());
    let reports = [alice.leave().await.expect("alice"), rb, rc];
    for (i, r) in reports.iter().enumerate() {
        for (j, from) in ids.iter().enumerate() {
            if i != j {
                let got = complete_from(r, from);
                println!("member {i} from member {j}: (frames, incomplete) = {got:?}");
                assert!(fine(got), "member {i} from member {j}: (frames, incomplete) = {got:?}");
            }
        }
    }
}
