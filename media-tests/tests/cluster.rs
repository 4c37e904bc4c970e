//! Media in a cluster (issue 18): three real `courier` nodes sharing the test Redis (`COURIER_TEST_REDIS_URL`) and
//! PostgreSQL (`COURIER_TEST_POSTGRES_URL`), started by scripts/test.sh. Native clients (webrtc-rs) that join the
//! same room through different nodes end on the one node that hosts it and receive each other; when that node is
//! SIGKILLed, they join again through a surviving node, the room is placed again and media flows again. The time
//! from the kill to the first complete frame is printed (docs/benchmarks.md, "Cluster"); the test bounds it only
//! loosely, it is a number, not a timed test.

mod courier;
// The test network of simulated hosts the signaling cluster tests use (one piece of code for one job).
#[path = "../../signaling/tests/cluster/netns.rs"]
mod netns;

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
            let r = redis_db(&r, 6);
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

/// Waits (at most 10 s) until each of `nodes` sees all of them in the registry.
fn see_each_other(nodes: &[&CourierProcess]) {
    media_tests::server::wait_for_cluster(nodes, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
}

/// Database `db` of the test Redis at `url`.
fn redis_db(url: &str, db: u32) -> String {
    format!("{}/{db}", url.rsplit_once('/').map_or(url, |(b, _)| b))
}

/// A node's WebRTC peers (members and relays), from its metrics.
fn peers(n: &CourierProcess) -> Option<f64> {
    n.metrics().ok().and_then(|m| m.get("courier_sfu_peers").copied())
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
    node_with(id, region, redis, postgres, &[], None)
}

/// [`node_in`] with more environment, on loopback or (`host`) in a simulated host's namespace at its address.
fn node_with(
    id: &str,
    region: &str,
    redis: &str,
    postgres: &str,
    more: &[(&str, &str)],
    host: Option<&netns::Host>,
) -> CourierProcess {
    let mut env = vec![
        ("COURIER_CLUSTER_REDIS_URL", redis),
        ("COURIER_CLUSTER_NODE_ID", id),
        ("COURIER_CLUSTER_REGION", region),
        ("COURIER_CHAT_STORE", "postgres"),
        ("COURIER_CHAT_POSTGRES_URL", postgres),
    ];
    env.extend_from_slice(more);
    let started = match host {
        None => CourierProcess::start(&courier_bin(), KEY, SECRET, &env),
        Some(h) => {
            let prefix = ["ip", "netns", "exec", h.netns.as_str()].map(String::from);
            CourierProcess::start_with(&courier_bin(), KEY, SECRET, &env, &prefix, h.addr.into(), 2)
        }
    };
    started.unwrap_or_else(|e| panic!("cluster node {id} starts: {e}"))
}

/// Wait until every client has subscribed to `n` tracks.
async fn subscribed(clients: &mut [&mut Client], n: usize) {
    for c in clients.iter_mut() {
        c.wait_connected(T).await.expect("media connected");
        for i in 0..n {
            c.wait_for_event(Duration::from_secs(20), |e| matches!(e, ClientEvent::TrackSubscribed(_)))
                .await
                .unwrap_or_else(|e| panic!("{}: subscription {i} of {n}: {e}", c.participant_id()));
        }
    }
}

/// A room that spans three regions (issue 19). The room lives on node a (region 1), where alice joins; bob and carol
/// join through node b (region 2), dave through node c (region 3), and each is served where it connected, in that
/// node's part of the room, with no redirect. Everyone publishes audio and video and receives every other member's
/// video whole; the tracks cross between two nodes on one relay connection per direction, however many members
/// receive them (the nodes' peer counts say so). Node b is then SIGKILLed: its members leave the others' rooms, bob
/// joins again through node c and receives alice's and dave's video again. Node a (the room's, alice's) is then
/// SIGKILLed: at node c alice leaves with her tracks; node a comes back, alice joins through it again and the members
/// on node c receive her again. When the members of node c leave, the relays between a and c close at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_three_regions_and_survives_an_edge_node_killed() {
    let Some((redis, postgres)) = backends() else { return };
    // A database of its own: the other test's nodes are of another region, but their rooms need not be seen here.
    let redis = redis_db(&redis, 7);
    let suffix = std::process::id();
    // Regions of this run only: the nodes of an earlier run stay in the registry for a few seconds after it.
    let start = |n: &str| node_in(&format!("span-{n}-{suffix}"), &format!("{n}-{suffix}"), &redis, &postgres);
    let (a, b, c) = (start("a"), start("b"), start("c"));
    let mut b = Some(b);
    see_each_other(&[&a, b.as_ref().unwrap(), &c]);
    let room = format!("span-{suffix}");
    // Tokens from node c, which lives through the whole test (the nodes share the key).
    let token = |who: &str| c.token(&room, who).expect("token");
    let b_url = b.as_ref().unwrap().url.clone();
    let join = |url: String, who: &'static str| {
        let t = token(who);
        async move {
            let c = Client::connect(&url, &t, both()).await.unwrap_or_else(|e| panic!("{who} joins at {url}: {e:#}"));
            assert_eq!((c.url(), c.node()), (url.as_str(), None), "{who} is served where it connected");
            c
        }
    };
    let mut alice = join(a.url.clone(), "alice").await;
    let alice_first = alice.participant_id().to_owned();
    let mut bob = join(b_url.clone(), "bob").await;
    let mut carol = join(b_url.clone(), "carol").await;
    let mut dave = join(c.url.clone(), "dave").await;
    // Each subscribes to the three others' audio and video.
    subscribed(&mut [&mut alice, &mut bob, &mut carol, &mut dave], 6).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // One relay connection per direction between two nodes: a and c have their member and four relay peers (one
    // out, one in, per other node), b its two members and four.
    let counts = (peers(&a), peers(b.as_ref().unwrap()), peers(&c));
    assert_eq!(counts, (Some(5.0), Some(6.0), Some(5.0)), "peers at (a, b, c)");
    let clients = [&alice, &bob, &carol, &dave];
    let ids: Vec<String> = clients.iter().map(|c| c.participant_id().to_owned()).collect();
    for (i, r) in clients.iter().map(|c| c.stats()).enumerate() {
        for (j, from) in ids.iter().enumerate() {
            if i != j {
                let got = complete_from(&r, from);
                println!("member {i} from member {j}: (frames, incomplete) = {got:?}");
                assert!(fine(got), "member {i} from member {j}: (frames, incomplete) = {got:?}");
            }
        }
    }

    // Node b dies. Bob joins again through node c; alice and dave see b's members leave.
    drop(b.take());
    drop(bob);
    drop(carol);
    let killed = Instant::now();
    let mut bob = join(c.url.clone(), "bob").await;
    subscribed(&mut [&mut bob], 4).await;
    let deadline = killed + Duration::from_secs(20);
    let back = loop {
        let r = bob.stats();
        if complete_from(&r, &ids[0]).0 > 0 && complete_from(&r, &ids[3]).0 > 0 {
            break killed.elapsed();
        }
        assert!(Instant::now() < deadline, "bob on node c: no frame from alice and dave within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("edge node killed: bob receiving again through node c after {} ms", back.as_millis());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = bob.stats();
    for (j, from) in [(0, &ids[0]), (3, &ids[3])] {
        let got = complete_from(&r, from);
        assert!(fine(got), "bob on node c from member {j}: (frames, incomplete) = {got:?}");
    }
    // Node b's relays are gone from a and c (within the registry's 3 s), bob's own cost nothing at a.
    let t0 = Instant::now();
    while (peers(&a), peers(&c)) != (Some(3.0), Some(4.0)) {
        assert!(t0.elapsed() < Duration::from_secs(20), "peers at (a, c) after b died: {:?}", (peers(&a), peers(&c)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The publisher's node dies: at node c, alice leaves once the registry drops node a (3 s), her tracks with her.
    let killed = Instant::now();
    drop(a);
    drop(alice);
    let left = |e: &ClientEvent| matches!(e, ClientEvent::ParticipantLeft { participant_id, .. } if *participant_id == alice_first);
    dave.wait_for_event(Duration::from_secs(15), left).await.expect("dave sees alice leave with her node");
    println!("publisher's node killed: alice gone at node c after {} ms", killed.elapsed().as_millis());
    // Node a comes back (same id and region), alice joins through it again: dave receives her new video.
    let a = start("a");
    see_each_other(&[&a, &c]);
    let mut alice = join(a.url.clone(), "alice").await;
    subscribed(&mut [&mut alice], 4).await;
    let alice_id = alice.participant_id().to_owned();
    let t0 = Instant::now();
    while complete_from(&dave.stats(), &alice_id).0 == 0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "dave: no frame from alice back on node a within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("alice back on node a: her first frame at dave after {} ms", t0.elapsed().as_millis());
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (who, r) in [("dave", dave.stats()), ("bob", bob.stats())] {
        let got = complete_from(&r, &alice_id);
        assert!(fine(got), "{who} from alice back on node a: (frames, incomplete) = {got:?}");
    }

    // Nobody left on node c: the relays between a and c close, both ways, at once.
    let (_, _) = (bob.leave().await.expect("bob"), dave.leave().await.expect("dave"));
    let t0 = Instant::now();
    while peers(&a) != Some(1.0) {
        assert!(t0.elapsed() < Duration::from_secs(10), "node a still has {:?} peers for alice alone", peers(&a));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("relays closed {} ms after node c's last member left", t0.elapsed().as_millis());
    alice.leave().await.expect("alice");
}

/// Numbers for docs/benchmarks.md ("Rooms that span nodes"), not a CI test: alice publishes audio and video on node
/// a; one subscriber on node a, and 1, then 8 subscribers on node b (another region). Prints the frame delay p50/p99
/// of the subscriber on a against those on b (one relay hop more), and the bytes per second node b receives (the
/// relay: one copy whatever the number of subscribers there) against what it sends.
/// `cargo test --release -p media-tests --test cluster bench_span -- --ignored --nocapture` with Redis and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_span_hop_delay_and_link_bytes() {
    let Some((redis, postgres)) = backends() else { return };
    let redis = redis_db(&redis, 7);
    let suffix = std::process::id();
    let start = |n: &str| node_in(&format!("bench-{n}-{suffix}"), &format!("{n}-{suffix}"), &redis, &postgres);
    let (a, b) = (start("a"), start("b"));
    see_each_other(&[&a, &b]);
    let room = format!("bench-span-{suffix}");
    let token = |who: &str| a.token(&room, who).expect("token");
    let watching = || ClientOptions::publishing(&[]);
    let alice = Client::connect(&a.url, &token("alice"), both()).await.expect("alice");
    alice.wait_connected(T).await.expect("alice connected");
    let mut near = Client::connect(&a.url, &token("near"), watching()).await.expect("near");
    subscribed(&mut [&mut near], 2).await;
    let mut far: Vec<Client> = Vec::new();
    let bytes = |n: &CourierProcess, k: &str| n.metrics().ok().and_then(|m| m.get(k).copied()).unwrap_or(0.0);
    for n in [1usize, 8] {
        while far.len() < n {
            let who = format!("far{}", far.len());
            let mut c = Client::connect(&b.url, &token(&who), watching()).await.expect("far");
            assert_eq!(c.url(), b.url.as_str(), "served on node b");
            subscribed(&mut [&mut c], 2).await;
            far.push(c);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (in0, out0) = (bytes(&b, "courier_udp_bytes_in_total"), bytes(&b, "courier_udp_bytes_out_total"));
        let a_out0 = bytes(&a, "courier_udp_bytes_out_total");
        let pkts = |n: &CourierProcess| bytes(n, "courier_rtp_packets_out_total");
        let (cpu_a0, cpu_b0, pa0, pb0) = (a.cpu_time(), b.cpu_time(), pkts(&a), pkts(&b));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (in1, out1) = (bytes(&b, "courier_udp_bytes_in_total"), bytes(&b, "courier_udp_bytes_out_total"));
        let a_out1 = bytes(&a, "courier_udp_bytes_out_total");
        // CPU per forwarded packet: the whole process's CPU time (signaling, timers and all) over the RTP packets it
        // sent in the window; at a to near and over the relay, at b to its subscribers.
        let per_packet = |cpu0: Duration, cpu1: Duration, p0: f64, p1: f64| {
            let (cpu, sent) = ((cpu1 - cpu0).as_secs_f64() * 1e6, p1 - p0);
            format!("{:.1} µs × {:.0} packets/s ({:.1} % of a core)", cpu / sent.max(1.0), sent / 10.0, cpu / 1e5)
        };
        println!(
            "{n} subscriber(s) on b: CPU per forwarded packet, origin a: {}; edge b: {}",
            per_packet(cpu_a0, a.cpu_time(), pa0, pkts(&a)),
            per_packet(cpu_b0, b.cpu_time(), pb0, pkts(&b)),
        );
        let alice_id = alice.participant_id().to_owned();
        let delay = |c: &Client| {
            let r = c.stats();
            let v = r.video().find(|v| v.participant_id == alice_id).cloned();
            v.map(|v| (v.delay_ms_p50.unwrap_or(f64::NAN), v.delay_ms_p99.unwrap_or(f64::NAN)))
        };
        println!(
            "{n} subscriber(s) on b: node b in {:.0} kbit/s, out {:.0} kbit/s; node a out {:.0} kbit/s \
             (alice to near and the relay); delay p50/p99 ms: near {:?}, far {:?}",
            (in1 - in0) * 8.0 / 10_000.0,
            (out1 - out0) * 8.0 / 10_000.0,
            (a_out1 - a_out0) * 8.0 / 10_000.0,
            delay(&near),
            far.iter().map(delay).collect::<Vec<_>>(),
        );
    }
}

/// A live room over three nodes (issue 19, "huge live rooms" at test scale): one publisher on node a, the room's;
/// hidden viewers served on each of the three nodes (two each, connected where they are). Hidden viewers are never
/// announced, yet a node serving only hidden viewers still receives the publisher's tracks over one relay and every
/// viewer gets the video whole; the publisher hears of none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_room_reaches_hidden_viewers_on_three_nodes() {
    let Some((redis, postgres)) = backends() else { return };
    let redis = redis_db(&redis, 8);
    let suffix = std::process::id();
    let start = |n: &str| node_in(&format!("live-{n}-{suffix}"), &format!("live-{n}-{suffix}"), &redis, &postgres);
    let nodes = [start("a"), start("b"), start("c")];
    see_each_other(&nodes.each_ref());
    let room = format!("live-{suffix}");
    let mut alice = Client::connect(&nodes[0].url, &nodes[0].token(&room, "alice").expect("token"), both())
        .await
        .expect("alice joins through node a");
    alice.wait_connected(T).await.expect("alice connected");
    let mut viewers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for k in 0..2 {
            let t = n.viewer_token(&room, &format!("viewer-{i}-{k}")).expect("token");
            let mut v = Client::connect(&n.url, &t, ClientOptions::publishing(&[])).await.expect("a viewer joins");
            assert_eq!((v.url(), v.node()), (n.url.as_str(), None), "viewer {i}/{k} served where it connected");
            subscribed(&mut [&mut v], 2).await;
            viewers.push(v);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alice_id = alice.participant_id().to_owned();
    for (i, v) in viewers.iter().enumerate() {
        let got = complete_from(&v.stats(), &alice_id);
        assert!(fine(got), "viewer {i}: (frames, incomplete) = {got:?}");
    }
    // Node a: alice, its two viewers, one relay to each other node; b and c: two viewers and the relay from a.
    let counts: Vec<Option<f64>> = nodes.iter().map(peers).collect();
    assert_eq!(counts, vec![Some(5.0), Some(3.0), Some(3.0)], "peers at a, b, c");
    let joined =
        alice.wait_for_event(Duration::from_millis(200), |e| matches!(e, ClientEvent::ParticipantJoined(_))).await;
    assert!(joined.is_err(), "the publisher heard of a hidden viewer: {joined:?}");
    alice.leave().await.expect("alice");
}

/// A full node spills (issue 19): three nodes of one region, each full at two participants
/// (`COURIER_CLUSTER_FULL_PARTICIPANTS=2`). Alice and bob join through the node the room is placed on and are served
/// there (the cheap case: nothing crosses). Carol joins through that node too, which is full: she is redirected to
/// another node of the region and served there, in its part of the room; dave, redirected the same way, goes to the
/// node that serves the room already (its relay is there). Everyone receives everyone's video whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_spills_a_room_onto_another_node_of_its_region() {
    let Some((redis, postgres)) = backends() else { return };
    let redis = redis_db(&redis, 15);
    let suffix = std::process::id();
    let region = format!("full-{suffix}");
    let full = [("COURIER_CLUSTER_FULL_PARTICIPANTS", "2")];
    let start = |n: &str| node_with(&format!("full-{n}-{suffix}"), &region, &redis, &postgres, &full, None);
    let nodes = [start("a"), start("b"), start("c")];
    see_each_other(&nodes.each_ref());
    let room = format!("full-{suffix}");
    let token = |who: &str| nodes[0].token(&room, who).expect("token");
    let alice = Client::connect(&nodes[0].url, &token("alice"), both()).await.expect("alice joins");
    // Placed by load: most likely node a, but any node of the region may be the room's.
    let home = alice.url().to_owned();
    let bob = Client::connect(&home, &token("bob"), both()).await.expect("bob joins");
    assert_eq!(bob.url(), home, "bob: the room's node has room");
    let mut carol = Client::connect(&home, &token("carol"), both()).await.expect("carol joins");
    assert_ne!(carol.url(), home, "carol: the room's node is full (alice, bob): served on another node");
    let spill = carol.url().to_owned();
    let mut alice = alice;
    alice
        .wait_for_event(T, |e| matches!(e, ClientEvent::ParticipantJoined(p) if p.identity == "carol"))
        .await
        .expect("alice sees carol, on another node, join");
    let dave = Client::connect(&home, &token("dave"), both()).await.expect("dave joins");
    assert_eq!(dave.url(), spill, "dave: to the node that serves the room already");
    let (mut bob, mut dave) = (bob, dave);
    subscribed(&mut [&mut alice, &mut bob, &mut carol, &mut dave], 6).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids: Vec<(String, String)> =
        [&alice, &bob, &carol, &dave].iter().map(|c| (c.participant_id().to_owned(), c.url().to_owned())).collect();
    for (who, c) in [("alice", &alice), ("bob", &bob), ("carol", &carol), ("dave", &dave)] {
        let r = c.stats();
        for (id, at) in ids.iter().filter(|(id, _)| id != c.participant_id()) {
            let got = complete_from(&r, id);
            assert!(fine(got), "{who} ({}) from {id} ({at}): (frames, incomplete) = {got:?}", c.url());
        }
    }
    let served: Vec<Option<f64>> = nodes.iter().map(|n| peers(n)).collect();
    println!("a full node spilled: peers at a, b, c = {served:?} (room on {home}, carol and dave on {spill})");
    for c in [alice, bob, carol, dave] {
        c.leave().await.expect("leaves");
    }
}

/// Dynacast across nodes (issue 19): alice publishes three simulcast layers on node a, where nobody subscribes; bob
/// (node b) and carol (node c), of other regions, show her video in 320×180 tiles. Each edge's dynacast tells node a
/// it needs only `q`, so the relays carry `q` alone and node a tells alice that nobody needs `f` (and `h`): she stops
/// sending them. When bob asks for 1280×720, node b asks node a for every layer, `f` comes back at alice, crosses the
/// relay to node b and bob receives it; carol, still small, keeps receiving `q` whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynacast_crosses_nodes_the_publisher_stops_layers_no_node_needs() {
    let Some((redis, postgres)) = backends() else { return };
    let redis = redis_db(&redis, 14);
    let suffix = std::process::id();
    let start = |n: &str| node_in(&format!("dyn-{n}-{suffix}"), &format!("dyn-{n}-{suffix}"), &redis, &postgres);
    let (a, b, c) = (start("a"), start("b"), start("c"));
    see_each_other(&[&a, &b, &c]);
    let room = format!("dyn-{suffix}");
    let mut alice = courier::simulcast_publisher_at(&a.url, &a.token(&room, "alice").expect("token"), T).await;
    let small = || ClientOptions { max_video_size: Some((320, 180)), ..ClientOptions::default() };
    let mut viewers = Vec::new();
    for (n, who) in [(&b, "bob"), (&c, "carol")] {
        let mut v = Client::connect(&n.url, &n.token(&room, who).expect("token"), small()).await.expect("joins");
        assert_eq!((v.url(), v.node()), (n.url.as_str(), None), "{who} is served where it connected");
        subscribed(&mut [&mut v], 1).await;
        viewers.push(v);
    }
    let [bob, carol] = <[Client; 2]>::try_from(viewers).unwrap_or_else(|_| unreachable!("two viewers"));
    let asked_small = Instant::now();
    let layer = |e: &ClientEvent, rid: &str, active: bool| matches!(e, ClientEvent::SetLayers { layers, .. } if layers.iter().any(|l| l.rid == rid && l.active == active));
    // Two dynacast delays (the edges', then node a's) and the relay messages between.
    alice
        .wait_for_event(Duration::from_secs(12), |e| layer(e, "f", false))
        .await
        .expect("alice told to stop f: no node needs it");
    println!(
        "dynacast across nodes: f paused at the publisher {} ms after the small tiles",
        asked_small.elapsed().as_millis()
    );
    let f_sent =
        |c: &Client| c.stats().published.video_layers.iter().find(|l| l.rid == "f").map_or(0, |l| l.frames_sent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = f_sent(&alice);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f_sent(&alice), paused_at, "f is not sent while no node needs it");
    // Bob wants the full size: f comes back and reaches him over the relay.
    let track = bob.stats().video().next().map(|v| v.track_id.clone()).expect("bob receives alice's video");
    bob.set_track_settings(&track, Some((1280, 720)), false).await.expect("track_settings");
    let asked_big = Instant::now();
    alice.wait_for_event(Duration::from_secs(6), |e| layer(e, "f", true)).await.expect("alice told to send f again");
    while !bob.stats().video().any(|v| v.track_id == track && v.current_layer == Some(2)) {
        assert!(asked_big.elapsed() < Duration::from_secs(10), "bob not on f within 10 s: {:?}", bob.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("dynacast across nodes: bob on f {} ms after asking for it", asked_big.elapsed().as_millis());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alice_id = alice.participant_id().to_owned();
    for (who, r) in [("bob", bob.leave().await.expect("bob")), ("carol", carol.leave().await.expect("carol"))] {
        let v = r.video().find(|v| v.participant_id == alice_id).expect("alice's video");
        assert_eq!((v.frames_corrupt, v.frames_duplicate, v.counter_backwards), (0, 0, 0), "{who}: {v:?}");
        assert!(v.frames_per_layer[0] >= 60, "{who} received q: {v:?}");
        let on_f = v.frames_per_layer[2];
        if who == "bob" {
            assert!(on_f >= 10, "bob received f: {v:?}");
        } else {
            assert_eq!(on_f, 0, "carol, small, never on f: {v:?}");
        }
    }
    let r = alice.leave().await.expect("alice");
    assert!(r.published.video_layers.iter().find(|l| l.rid == "f").is_some_and(|f| f.frames_sent > paused_at));
}

/// A room spanning three hosts (issue 19's CI scenario): three nodes, each in a network namespace of its own on one
/// test network (`netns::Segment`), three regions, sharing the test Redis and PostgreSQL through relays on the
/// gateway; the clients are this process, in the root namespace. Alice publishes on host a; bob and carol receive on
/// host b, dave on host c, each served where they connect. The link between hosts a and b drops 5 % of the UDP
/// datagrams each way (nftables in both namespaces, counted): the relay repairs it like any link (NACK/RTX, keyframe
/// requests), so every subscriber's video is whole (≥ 99 % of frames complete, none corrupt). Host b's node is then
/// SIGKILLed: bob joins again through host c and receives alice whole there.
///
/// Needs root (network namespaces, nftables): skipped otherwise, failed in CI. Uses Redis database 12.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_over_three_hosts_repairs_a_lossy_relay_link_and_survives_an_edge_host_killed() {
    let Some((redis, postgres)) = backends() else { return };
    let Some(mut segment) = netns::Segment::create_or_skip(3) else { return };
    let redis = redis_db(&redis, 12);
    let redis = segment.relay_url(&redis).await.expect("a relay to the test Redis");
    let postgres = segment.relay_url(&postgres).await.expect("a relay to the test PostgreSQL");
    let hosts = segment.hosts.clone();
    let suffix = std::process::id();
    let start = |i: usize| {
        let id = format!("hosts-{}-{suffix}", ["a", "b", "c"][i]);
        node_with(&id, &id, &redis, &postgres, &[], Some(&hosts[i]))
    };
    let (a, b, c) = (start(0), start(1), start(2));
    see_each_other(&[&a, &b, &c]);
    let lossy = [Loss::drop_udp(&hosts[1], hosts[0].addr, 5), Loss::drop_udp(&hosts[0], hosts[1].addr, 5)];
    let room = format!("hosts-{suffix}");
    let join = |n: &CourierProcess, who: &'static str, publish: ClientOptions| {
        let (url, t) = (n.url.clone(), n.token(&room, who).expect("token"));
        async move {
            let c = Client::connect(&url, &t, publish).await.unwrap_or_else(|e| panic!("{who} joins at {url}: {e:#}"));
            assert_eq!((c.url(), c.node()), (url.as_str(), None), "{who} is served where it connected");
            c
        }
    };
    let watching = || ClientOptions::publishing(&[]);
    let alice = join(&a, "alice", both()).await;
    alice.wait_connected(T).await.expect("alice connected");
    let mut bob = join(&b, "bob", watching()).await;
    let mut carol = join(&b, "carol", watching()).await;
    let mut dave = join(&c, "dave", watching()).await;
    subscribed(&mut [&mut bob, &mut carol, &mut dave], 2).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let alice_id = alice.participant_id().to_owned();
    for (who, v) in [("bob", &bob), ("carol", &carol), ("dave", &dave)] {
        let got = complete_from(&v.stats(), &alice_id);
        assert!(fine(got), "{who} (host {}): (frames, incomplete) = {got:?}", if who == "dave" { "c" } else { "b" });
    }
    let dropped: Vec<u64> = lossy.iter().map(Loss::dropped).collect();
    println!("the a-b link dropped {dropped:?} datagrams (to b, to a); every subscriber's video whole");
    assert!(dropped.iter().all(|d| *d > 0), "no datagram dropped on the a-b link: {dropped:?}");
    // Host a: alice and a relay to each other host; host b: two subscribers and the relay; host c: one and the relay.
    assert_eq!([peers(&a), peers(&b), peers(&c)], [Some(3.0), Some(3.0), Some(2.0)], "peers at a, b, c");
    // Host b's node dies; bob joins again through host c.
    let killed = Instant::now();
    drop(b);
    drop((bob, carol));
    let mut bob = join(&c, "bob", watching()).await;
    subscribed(&mut [&mut bob], 2).await;
    let bob_id = bob.participant_id().to_owned();
    while complete_from(&bob.stats(), &alice_id).0 == 0 {
        assert!(killed.elapsed() < Duration::from_secs(20), "bob: no frame from alice on host c within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("host b killed: bob's first frame from alice through host c after {} ms", killed.elapsed().as_millis());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = complete_from(&bob.leave().await.expect("bob leaves"), &alice_id);
    assert!(fine(got), "bob on host c: (frames, incomplete) = {got:?} ({bob_id})");
    let got = complete_from(&dave.leave().await.expect("dave leaves"), &alice_id);
    assert!(fine(got), "dave through it all: (frames, incomplete) = {got:?}");
    alice.leave().await.expect("alice leaves");
    drop((a, c));
    drop(segment);
}

/// Loss on a link between two simulated hosts: an nftables table in the receiving host's namespace that drops a
/// share of the UDP datagrams from the other host (at random, each datagram on its own), and counts them. The table
/// goes with the namespace.
struct Loss {
    netns: String,
}

impl Loss {
    const TABLE: &'static str = "courier_test_loss";

    fn drop_udp(at: &netns::Host, from: std::net::Ipv4Addr, percent: u32) -> Loss {
        let script = format!(
            "table inet {t} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  \
             ip saddr {from} meta l4proto udp numgen random mod 100 < {percent} counter drop\n }}\n}}\n",
            t = Self::TABLE
        );
        let mut nft = std::process::Command::new("ip")
            .args(["netns", "exec", &at.netns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft (nftables) runs");
        use std::io::Write;
        nft.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("the rules written");
        assert!(nft.wait().expect("nft ends").success(), "nft refused: {script}");
        Loss { netns: at.netns.clone() }
    }

    /// Datagrams dropped so far.
    fn dropped(&self) -> u64 {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.netns, "nft", "list", "table", "inet", Self::TABLE])
            .output()
            .expect("nft lists its table");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("counter packets ").nth(1).and_then(|t| t.split_whitespace().next()?.parse().ok()).unwrap_or(0)
    }
}
