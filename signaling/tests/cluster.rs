//! Many nodes as one service (issue 18): three real `courier` processes on loopback ports, sharing a real Redis
//! (`COURIER_TEST_REDIS_URL`, started by scripts/test.sh with scripts/redis.sh) and a real PostgreSQL database.
//!
//! The tests run one at a time (they share one Redis, and one of them restarts it), each on its own Redis database
//! (flushed first) and PostgreSQL database, with room and identity names of its own.

mod common;
#[path = "cluster/dm_client.rs"]
mod dm_client;
#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/netns.rs"]
mod netns;
#[path = "cluster/node.rs"]
mod node;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use harness::{
    api, api_get, close_code, create_room_on, join, join_elsewhere, metric, next_json, recv_type, runtime, token,
    Cluster, Ws,
};
use node::{Node, KEY, SECRET};
use serde_json::{json, Value};
use signaling::auth::{mint, TokenRequest};
use tokio_tungstenite::tungstenite::Message;

/// The cluster tests share one Redis: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn joins_through_any_node_end_on_the_rooms_node() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(c) = Cluster::start("place", 1).await else { return };
        let room = "placed-room";
        // The first join places the room (on the node it reached unless another is clearly less loaded).
        let (mut first, joined, host, _) = join(&c.url(1), &token(room, "ann")).await.unwrap();
        assert_eq!(joined["room"], room);
        let host_index = (0..3).find(|i| c.url(*i) == host).expect("a node of the cluster");
        // A participant says which node serves it, and that node's region.
        let served = &c.setups[host_index];
        assert_eq!(joined["participant"]["node"], served.id.as_str(), "{joined}");
        assert_eq!(joined["participant"]["region"], served.region.as_str(), "{joined}");
        // Joins reaching any node end on the room's node (redirected by the others), and see the first member.
        for (i, who) in [(0, "ben"), (1, "cat"), (2, "dan")] {
            let (ws, joined, at, hops) = join(&c.url(i), &token(room, who)).await.unwrap();
            assert_eq!(at, host, "{who} ends on the room's node\n{}", c.logs());
            assert_eq!(hops, usize::from(i != host_index), "{who}: one redirect from another node, none from it");
            let others: Vec<&str> =
                joined["participants"].as_array().unwrap().iter().filter_map(|p| p["identity"].as_str()).collect();
            assert!(others.contains(&"ann"), "{who} sees ann: {others:?}");
            assert_eq!(joined["participant"]["node"], served.id.as_str(), "{who} is served by the room's node");
            assert_eq!(joined["participant"]["region"], served.region.as_str(), "{who}: the node's region");
            let ann = joined["participants"].as_array().unwrap().iter().find(|p| p["identity"] == "ann").unwrap();
            assert_eq!(ann["node"], served.id.as_str(), "{who} sees which node serves ann");
            std::mem::forget(ws);
        }
        // Every node lists the three nodes, with their URLs.
        for s in &c.setups {
            let (status, body) = api_get(&s.http(), "/api/v1/nodes").await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["cluster"], true);
            let mut urls: Vec<String> =
                body["nodes"].as_array().unwrap().iter().map(|n| n["url"].as_str().unwrap().to_string()).collect();
            urls.sort();
            let mut want: Vec<String> = (0..3).map(|i| c.url(i)).collect();
            want.sort();
            assert_eq!(urls, want);
        }
        // Presence, read on any node: ann is on node b.
        let presence = common::eventually("ann's presence", Duration::from_secs(5), || {
            let http = c.setups[2].http();
            async move {
                let (status, body) = api_get(&http, "/api/v1/identities/ann/presence").await;
                if status == 200 && body["online"] == true {
                    Ok(body)
                } else {
                    Err(format!("{status} {body}"))
                }
            }
        })
        .await;
        assert_eq!(presence["sessions"][0]["node"], c.setups[host_index].id);
        assert_eq!(presence["sessions"][0]["room"], room);
        // A second session of ann, joining through node a, replaces the first (4009 on node b).
        let (_again, _, at, _) = join(&c.url((host_index + 1) % 3), &token(room, "ann")).await.unwrap();
        assert_eq!(at, host);
        assert_eq!(close_code(&mut first).await, Some(4009), "the older session is replaced");
    });
}

#[test]
fn the_admin_api_on_any_node_acts_on_any_room() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(c) = Cluster::start("admin", 5).await else { return };
        let http = |i: usize| c.setups[i].http();
        // Created through node a: it lives there.
        let (status, created) = api(&http(0), "POST", "/api/v1/rooms", Some(json!({"name": "board"}))).await;
        assert_eq!(status, 201, "{created}");
        let (status, _) = api(&http(1), "POST", "/api/v1/rooms", Some(json!({"name": "board"}))).await;
        assert_eq!(status, 409, "the name is taken in the whole cluster");
        // A member joins through node c and is redirected to node a.
        let (mut ws, _, at, hops) = join(&c.url(2), &token("board", "erin")).await.unwrap();
        assert_eq!((at.as_str(), hops), (c.url(0).as_str(), 1));
        // Any node answers about the room, its participants, and acts on them.
        for i in 0..3 {
            let (status, room) = api_get(&http(i), "/api/v1/rooms/board").await;
            assert_eq!((status, room["name"].as_str()), (200, Some("board")), "node {i}: {room}");
            let (status, list) = api_get(&http(i), "/api/v1/rooms/board/participants").await;
            let who: Vec<&str> =
                list["participants"].as_array().unwrap().iter().filter_map(|p| p["identity"].as_str()).collect();
            assert_eq!((status, who), (200, vec!["erin"]), "node {i}");
        }
        // Room lists are cluster-wide: a room on node b shows up on node c's list too.
        create_room_on(&c, 1, "elsewhere").await;
        let (_other, _, at_b, _) = join(&c.url(2), &token("elsewhere", "finn")).await.unwrap();
        assert_eq!(at_b, c.url(1), "finn's room is on node b, where it was created");
        let (status, rooms) = api_get(&http(2), "/api/v1/rooms").await;
        let mut names: Vec<&str> =
            rooms["rooms"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
        names.sort();
        assert_eq!((status, names), (200, vec!["board", "elsewhere"]), "{rooms}");
        // A system message sent through node b reaches erin on node a; removing her through node b closes her socket.
        let (status, sent) =
            api(&http(1), "POST", "/api/v1/rooms/board/messages", Some(json!({"payload": {"text": "hello"}}))).await;
        assert_eq!(status, 201, "{sent}");
        let m = recv_type(&mut ws, "chat_message", Duration::from_secs(5)).await.unwrap();
        assert_eq!(m["payload"]["text"], "hello");
        let (status, _) = api(&http(1), "DELETE", "/api/v1/rooms/board/participants/erin", None).await;
        assert_eq!(status, 204);
        assert_eq!(close_code(&mut ws).await, Some(4010));
        // A room nobody hosts is not found, wherever asked.
        let (status, _) = api_get(&http(2), "/api/v1/rooms/nowhere").await;
        assert_eq!(status, 404);
    });
}

/// Room chat in a room that spans nodes (issue 19) is one conversation: the room lives on node a; bob and carol,
/// joining through nodes b and c (each of a region of its own), are served there, in parts of the room. The three
/// send at once, interleaved; each receives every message of `room:<name>` once, in one order, numbered 1..=N
/// (one sequence for the room, whichever node committed a message), with an ack for each of its own.
#[test]
fn room_chat_in_a_room_spanning_nodes_is_one_conversation() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(c) = Cluster::start_regions("spanchat", 12).await else { return };
        let room = "spanchat-room";
        create_room_on(&c, 0, room).await;
        let mut members = Vec::new();
        for (i, who) in ["alice", "bob", "carol"].into_iter().enumerate() {
            let (ws, _, at, hops) = join(&c.url(i), &token(room, who)).await.unwrap();
            assert_eq!((at.as_str(), hops), (c.url(i).as_str(), 0), "{who}: served where it connected");
            members.push((ws, who));
        }
        // Every part knows the others' members before the chat starts (the mirror, over Redis).
        for (ws, who) in members.iter_mut() {
            let mut seen = std::collections::HashSet::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while seen.len() < 2 {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let Some(v) = next_json(ws, left).await else { panic!("{who} saw only {seen:?} join\n{}", c.logs()) };
                if v["type"] == "participant_joined" {
                    seen.insert(v["participant"]["identity"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        const N: usize = 15;
        for k in 0..N {
            for (ws, who) in members.iter_mut() {
                let m = json!({"type": "chat_send", "client_id": format!("{who}-{k}"), "payload": {"text": format!("{k}")}});
                ws.send(Message::Text(m.to_string().into())).await.unwrap();
            }
        }
        let total = 3 * N as u64;
        let mut orders = Vec::new();
        for (ws, who) in members.iter_mut() {
            let (mut got, mut acks) = (Vec::new(), 0);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while got.len() < total as usize || acks < N {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let Some(v) = next_json(ws, left).await else {
                    panic!("{who}: {} messages, {acks} acks by the deadline\n{}", got.len(), c.logs())
                };
                match v["type"].as_str() {
                    Some("chat_message") => {
                        assert_eq!(v["conversation"], format!("room:{room}"), "{v}");
                        got.push((v["seq"].as_u64().unwrap(), format!("{}:{}", v["sender"], v["payload"]["text"])));
                    }
                    Some("chat_ack") => acks += 1,
                    Some("error") => panic!("{who}: {v}"),
                    _ => {}
                }
            }
            let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "{who}: every number once, in order");
            orders.push(got);
        }
        assert!(orders.windows(2).all(|w| w[0] == w[1]), "one order for everyone: {orders:?}");
    });
}

#[test]
fn direct_messages_cross_nodes_once_and_in_order() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(c) = Cluster::start("dm", 2).await else { return };
        // Two members in rooms of their own, on different nodes.
        let (mut alice, _, at_a, _) = join(&c.url(0), &token("dm-room-a", "alice")).await.unwrap();
        let mut bob = join_elsewhere(&c, "dm-room", "bob", &at_a).await;
        // One way first: bob's node hears of the conversation only through the bus (nothing of it is committed
        // there), so this is the bus's live delivery, not a hole filled by the next local message.
        for i in 0..5 {
            let m = json!({"type": "chat_send", "to": "bob", "client_id": format!("first-{i}"), "payload": {"n": i}});
            alice.send(Message::Text(m.to_string().into())).await.unwrap();
        }
        for seq in 1..=5u64 {
            let m = recv_type(&mut bob, "chat_message", Duration::from_secs(5)).await.unwrap();
            assert_eq!((m["conversation"].as_str(), m["seq"].as_u64()), (Some("dm:alice:bob"), Some(seq)));
        }
        const N: usize = 40;
        // Both send at once, interleaved; both must see all 2N more messages of dm:alice:bob once, in order.
        for i in 0..N {
            for (ws, me, peer) in [(&mut alice, "alice", "bob"), (&mut bob, "bob", "alice")] {
                let m = json!({"type": "chat_send", "to": peer, "client_id": format!("{me}-{i}"),
                    "payload": {"text": format!("{i} from {me}")}});
                ws.send(Message::Text(m.to_string().into())).await.unwrap();
            }
        }
        for (ws, me) in [(&mut alice, "alice"), (&mut bob, "bob")] {
            let mut seqs = Vec::new();
            let mut acks = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            // Alice's first five (her own copies and acks) are still to be read.
            let first = if me == "alice" { 1 } else { 6 };
            let want: Vec<u64> = (first..=5 + 2 * N as u64).collect();
            let want_acks = if me == "alice" { N + 5 } else { N };
            while seqs.len() < want.len() || acks < want_acks {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let Some(v) = next_json(ws, left).await else {
                    panic!("{me}: {} messages, {acks} acks by the deadline\n{}", seqs.len(), c.logs())
                };
                match v["type"].as_str() {
                    Some("chat_message") => {
                        assert_eq!(v["conversation"], "dm:alice:bob");
                        seqs.push(v["seq"].as_u64().unwrap());
                    }
                    Some("chat_ack") => acks += 1,
                    Some("error") => panic!("{me}: {v}"),
                    _ => {}
                }
            }
            assert_eq!(seqs, want, "{me}: every number once, in order");
        }
        // Typing crosses nodes too (an ephemeral frame on the bus).
        let typing = json!({"type": "chat_typing", "to": "bob", "typing": true});
        alice.send(Message::Text(typing.to_string().into())).await.unwrap();
        let t = recv_type(&mut bob, "chat_typing", Duration::from_secs(5)).await.unwrap();
        assert_eq!(t["identity"], "alice");
    });
}

/// Run `scripts/<script> <cmd> <dir>` (stop, restart or resume a test server).
fn run_script(script: &str, cmd: &str, dir: &str) {
    let path = format!("{}/../scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash").arg(path).arg(cmd).arg(dir).output().unwrap();
    assert!(out.status.success(), "{script} {cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The data directory of the test server named by `var` (scripts/test.sh sets it), or `None` outside CI.
fn server_dir(var: &str) -> Option<String> {
    let dir = std::env::var(var).ok();
    if dir.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI sets {var}");
        eprintln!("skipped: {var} not set");
    }
    dir
}

/// Redis gone for a while: rooms a node hosts keep working (joins, chat), what needs Redis is refused with a
/// retryable error, and when Redis comes back (empty) the nodes fill it again and the messages committed meanwhile
/// reach the members on other nodes.
#[test]
fn redis_down_for_a_while_costs_time_never_a_message() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(c) = Cluster::start("outage", 10).await else { return };
        let Some(dir) = server_dir("COURIER_TEST_REDIS_DIR") else { return };
        let (mut alice, _, at_a, _) = join(&c.url(0), &token("outage-a", "alice")).await.unwrap();
        let mut bob = join_elsewhere(&c, "outage", "bob", &at_a).await;
        run_script("redis.sh", "stop", &dir);
        // Chat goes on (PostgreSQL): alice's messages are acknowledged.
        for i in 0..5 {
            let m = json!({"type": "chat_send", "to": "bob", "client_id": format!("outage-{i}"), "payload": {"n": i}});
            alice.send(Message::Text(m.to_string().into())).await.unwrap();
        }
        for _ in 0..5 {
            recv_type(&mut alice, "chat_ack", Duration::from_secs(10)).await.unwrap();
        }
        // A room this node hosts is joined; a room that needs placing is refused, retryably.
        let (_carl, joined, at, _) = join(&at_a, &token("outage-a", "carl")).await.unwrap();
        assert_eq!((joined["room"].as_str(), at.as_str()), (Some("outage-a"), at_a.as_str()));
        let (mut ws, _) = tokio_tungstenite::connect_async(c.url(0).as_str()).await.unwrap();
        let join_msg = json!({"type": "join", "v": 1, "token": token("outage-new", "dora")}).to_string();
        ws.send(Message::Text(join_msg.into())).await.unwrap();
        let refused = next_json(&mut ws, Duration::from_secs(5)).await.expect("an answer");
        assert_eq!(refused["code"], "cluster_unavailable", "{refused}");
        assert_eq!(close_code(&mut ws).await, Some(1013));
        // Redis comes back, empty.
        tokio::time::sleep(Duration::from_secs(2)).await;
        run_script("redis.sh", "restart", &dir);
        c.wait_for_nodes(3).await;
        // What alice sent meanwhile reaches bob on his node (a head notice, then the store), once and in order.
        let mut seqs = Vec::new();
        while seqs.len() < 5 {
            let m = recv_type(&mut bob, "chat_message", Duration::from_secs(10)).await.unwrap_or_else(|e| {
                panic!("bob got {seqs:?}: {e}\n{}", c.logs());
            });
            seqs.push(m["seq"].as_u64().unwrap());
        }
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        // And new rooms are placed again.
        let (_dora, joined, _, _) = join(&c.url(0), &token("outage-new", "dora")).await.unwrap();
        assert_eq!(joined["room"], "outage-new");
        // Bob's room is defined (created through the admin API) and its node wrote it again: no other node took it
        // for an orphan in the moment before that (adoption waits after an outage), not even two adoption rounds on.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for i in 0..3 {
            let adopted = metric(&c.setups[i].http(), "courier_cluster_rooms_adopted_total").await;
            assert_eq!(adopted, Some(0.0), "node {i} adopted a room whose node is alive\n{}", c.logs());
        }
    });
}

/// PostgreSQL gone for a while: a chat send gets a retryable error (nothing stored, nothing acknowledged), the
/// nodes reconnect by themselves when it is back, the retry with the same `client_id` is stored once, and the member
/// on the other node receives every message once and in order.
#[test]
fn postgres_down_for_a_while_costs_time_never_a_message() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(c) = Cluster::start("pgdown", 11).await else { return };
        let Some(dir) = server_dir("COURIER_TEST_POSTGRES_DIR") else { return };
        let postgres_sh = |cmd: &str| run_script("postgres.sh", cmd, &dir);
        let (mut alice, _, at_a, _) = join(&c.url(0), &token("pgdown-a", "alice")).await.unwrap();
        let mut bob = join_elsewhere(&c, "pgdown", "bob", &at_a).await;
        let send = |i: usize| {
            json!({"type": "chat_send", "to": "bob", "client_id": format!("pg-{i}"), "payload": {"n": i}}).to_string()
        };
        // The answer to alice's send of `pg-<i>`: its ack or its error.
        async fn answer(ws: &mut Ws, i: usize) -> Value {
            let cid = format!("pg-{i}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let v = next_json(ws, left).await.unwrap_or_else(|| panic!("no answer to {cid}"));
                if (v["type"] == "chat_ack" || v["type"] == "error") && v["client_id"] == cid.as_str() {
                    return v;
                }
            }
        }
        alice.send(Message::Text(send(0).into())).await.unwrap();
        assert_eq!(answer(&mut alice, 0).await["type"], "chat_ack");
        postgres_sh("stop");
        alice.send(Message::Text(send(1).into())).await.unwrap();
        let refused = answer(&mut alice, 1).await;
        assert_eq!(
            (refused["type"].as_str(), refused["code"].as_str()),
            (Some("error"), Some("internal")),
            "{refused}"
        );
        postgres_sh("resume");
        // The client retries with the same id until it is stored (the node reconnects by itself).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let acked = loop {
            alice.send(Message::Text(send(1).into())).await.unwrap();
            let v = answer(&mut alice, 1).await;
            if v["type"] == "chat_ack" {
                break v;
            }
            assert!(tokio::time::Instant::now() < deadline, "not stored within 30 s of PostgreSQL's return: {v}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(acked["seq"], 2, "stored once, after the first: {acked}");
        alice.send(Message::Text(send(2).into())).await.unwrap();
        assert_eq!(answer(&mut alice, 2).await["seq"], 3);
        let mut seqs = Vec::new();
        while seqs.len() < 3 {
            let m = recv_type(&mut bob, "chat_message", Duration::from_secs(10)).await.unwrap_or_else(|e| {
                panic!("bob got {seqs:?}: {e}\n{}", c.logs());
            });
            seqs.push(m["seq"].as_u64().unwrap());
        }
        assert_eq!(seqs, vec![1, 2, 3], "bob: every message once, in order");
    });
}

#[test]
fn a_dead_nodes_room_is_placed_again() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(mut c) = Cluster::start("dead", 3).await else { return };
        let room = "orphan-room";
        let (_ws, _, host, _) = join(&c.url(1), &token(room, "dana")).await.unwrap();
        let host = (0..3).find(|i| c.url(*i) == host).expect("a node of the cluster");
        // A moderator mutes erin's chat in the room, for ten minutes.
        let moderator = mint(
            KEY,
            SECRET,
            &TokenRequest {
                room: room.into(),
                identity: "mod".into(),
                ttl: Duration::from_secs(600),
                can_chat: true,
                room_admin: true,
                ..TokenRequest::new("", "")
            },
        );
        let (mut moderator, _, _, _) = join(&c.url(host), &moderator).await.unwrap();
        let mute = json!({"type": "chat_mute", "identity": "erin", "muted": true, "duration_secs": 600});
        moderator.send(Message::text(mute.to_string())).await.unwrap();
        recv_type(&mut moderator, "chat_muted", Duration::from_secs(5)).await.unwrap();
        c.nodes[host].take().unwrap().kill();
        c.wait_for_nodes(2).await;
        // The next join, wherever it lands, places the room on a live node.
        let (_ws, joined, at, _) = join(&c.url((host + 1) % 3), &token(room, "dana")).await.unwrap();
        assert_ne!(at, c.url(host));
        assert_eq!(joined["room"], room);
        // The mute came along (kept in PostgreSQL): erin reads, but her message to the room is refused.
        let (mut erin, _, _, _) = join(&c.url((host + 2) % 3), &token(room, "erin")).await.unwrap();
        let send = json!({"type": "chat_send", "client_id": "e1", "payload": {"text": "hi"}});
        erin.send(Message::text(send.to_string())).await.unwrap();
        let refused = recv_type(&mut erin, "error", Duration::from_secs(5)).await.unwrap();
        assert_eq!(refused["code"], "muted", "{refused}\n{}", c.logs());
        // A node that drains (SIGTERM) leaves the registry at once.
        let second = (0..3).find(|i| c.url(*i) == at).expect("a node of the cluster");
        c.nodes[second].take().unwrap().stop().await;
        c.wait_for_nodes(1).await;
        let survivor = 3 - host - second;
        let (_ws, _, at, _) = join(&c.url(survivor), &token(room, "dana")).await.unwrap();
        assert_eq!(at, c.url(survivor), "the last node takes the room");
    });
}

/// A webhook receiver on a loopback port: its URL, and the events it got (answered 204, in arrival order).
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let got = events.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: axum::body::Bytes| {
            let got = got.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    got.lock().unwrap().push(v);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, events)
}

/// Item 6: a scheduled room defined through node a lives in the shared PostgreSQL. Node a is SIGKILLed before the
/// room opens; another node adopts it (the admin API on any node finds it there), opens it on time for its member,
/// and closes it at its end: one `room_started` (at creation) and one `room_finished` in the whole cluster.
#[test]
fn a_scheduled_room_opens_and_closes_once_when_its_node_dies() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let (hook_url, events) = webhook_receiver().await;
        let Some(mut c) = Cluster::start_with("sched", 12, Some(hook_url)).await else { return };
        let room = "crew-42";
        let count = |event: &str| {
            events.lock().unwrap().iter().filter(|v| v["event"] == event && v["room"]["name"] == room).count()
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let (start, end) = (now + 3, now + 12);
        let (status, body) = api(
            &c.setups[0].http(),
            "POST",
            "/api/v1/rooms",
            Some(json!({"name": room, "start": start, "end": end, "members": ["dana"], "retention": "keep"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let hooks = events.clone();
        common::eventually("room_started from node a", Duration::from_secs(5), || {
            let n = hooks.lock().unwrap().iter().filter(|v| v["event"] == "room_started").count();
            async move {
                if n == 1 {
                    Ok(())
                } else {
                    Err(format!("{n} room_started"))
                }
            }
        })
        .await;
        // Creating it again through another node: the name is taken (in PostgreSQL, whatever node is asked).
        let (status, _) = api(
            &c.setups[1].http(),
            "POST",
            "/api/v1/rooms",
            Some(json!({"name": room, "start": start, "end": end, "members": ["dana"]})),
        )
        .await;
        assert_eq!(status, 409);
        let killed = std::time::Instant::now();
        c.nodes[0].take().unwrap().kill();
        // Adopted by node b or c: the admin API on node b finds it (local, or forwarded to c), still scheduled.
        let summary = common::eventually("the room adopted", Duration::from_secs(12), || {
            let http = c.setups[1].http();
            async move {
                let (status, body) = api_get(&http, &format!("/api/v1/rooms/{room}")).await;
                if status == 200 {
                    Ok(body)
                } else {
                    Err(format!("{status} {body}"))
                }
            }
        })
        .await;
        assert_eq!(summary["options"]["schedule"]["members"], json!(["dana"]), "restored with its schedule: {summary}");
        println!("adopted {} ms after the kill", killed.elapsed().as_millis());
        // Open on time, on the adopting node.
        let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let wait = (start * 1000 + 300).saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let (mut dana, joined, at, _) = join(&c.url(2), &token(room, "dana")).await.unwrap();
        assert_ne!(at, c.url(0));
        assert_eq!(joined["room"], room);
        // Closed at its end: dana is removed, the room stays (closed, for audit) on its node.
        assert_eq!(close_code(&mut dana).await, Some(4010), "removed at the room's end\n{}", c.logs());
        let closed = common::eventually("the room closed", Duration::from_secs(5), || {
            let http = c.setups[2].http();
            async move {
                let (status, body) = api_get(&http, &format!("/api/v1/rooms/{room}")).await;
                if body["phase"] == "closed" {
                    Ok(body)
                } else {
                    Err(format!("{status} {body}"))
                }
            }
        })
        .await;
        assert!(now_ms() >= end * 1000, "closed at its end, not before: {closed}");
        // A few more lifecycle ticks and adoption rounds: nothing happens twice.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            (count("room_started"), count("room_finished")),
            (1, 1),
            "{:?}\n{}",
            events.lock().unwrap(),
            c.logs()
        );
    });
}

/// The chat fault test across nodes: two pairs of members write to each other (every pair's two members on
/// different nodes) while connections are cut, node b is SIGKILLed, Redis is restarted empty and node c drains
/// and starts again. Every acknowledged message must be in PostgreSQL exactly once at the number its ack gave, and
/// every member must have received exactly that history, each number once and in order.
#[test]
fn chat_across_nodes_survives_cuts_a_killed_node_and_a_redis_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(mut c) = Cluster::start("faults", 4).await else { return };
        let seed = std::env::var("CLUSTER_FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        println!("cluster chat faults: seed {seed} (CLUSTER_FAULTS_SEED={seed} repeats it)");
        const MESSAGES: usize = 150;
        let pairs = [("alice", "bob"), ("carol", "dave")];
        let progress: Vec<Arc<dm_client::Progress>> = (0..4).map(|_| Arc::default()).collect();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
        let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
        let mut tasks = Vec::new();
        for (p, (a, b)) in pairs.iter().enumerate() {
            for (k, (me, peer)) in [(a, b), (b, a)].into_iter().enumerate() {
                let index = 2 * p + k;
                let room = format!("room-{me}");
                // Start each member on another node: a, b, c, a.
                let mut own = urls.clone();
                own.rotate_left(index % 3);
                let cfg = dm_client::DmConfig {
                    index,
                    identity: me.to_string(),
                    token: token(&room, me),
                    to: peer.to_string(),
                    from: peer.to_string(),
                    messages: MESSAGES,
                    urls: own,
                    deadline,
                    seed,
                    max_cuts: 6,
                };
                tasks.push(tokio::spawn(dm_client::run(cfg, progress[index].clone(), stop_rx.clone())));
            }
        }
        let total = 4 * MESSAGES;
        let acked = || progress.iter().map(|p| p.acked.load(Ordering::Relaxed)).sum::<usize>();
        let received = || progress.iter().map(|p| p.received.load(Ordering::Relaxed)).sum::<u64>();
        // Faults at fixed shares of the progress.
        let wait_for = |share: usize| async move {
            while acked() * 100 < total * share && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        wait_for(25).await;
        println!("faults: SIGKILL node b at {} acked", acked());
        c.nodes[1].take().unwrap().kill();
        wait_for(45).await;
        match std::env::var("COURIER_TEST_REDIS_DIR") {
            Ok(dir) => {
                println!("faults: Redis restarted (empty) at {} acked", acked());
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/redis.sh");
                let out = std::process::Command::new("bash").arg(script).arg("restart").arg(&dir).output().unwrap();
                assert!(out.status.success(), "redis.sh restart: {}", String::from_utf8_lossy(&out.stderr));
            }
            Err(_) => println!("faults: no COURIER_TEST_REDIS_DIR, Redis not restarted"),
        }
        wait_for(65).await;
        println!("faults: node c drains and starts again, node b starts again, at {} acked", acked());
        c.nodes[2].take().unwrap().stop().await;
        c.nodes[2] = Some(Node::start(&c.setups[2]).await);
        c.nodes[1] = Some(Node::start(&c.setups[1]).await);
        // Everything acknowledged, and every member has the whole conversation (2 × MESSAGES each).
        let want = (4 * 2 * MESSAGES) as u64;
        while (acked() < total || received() < want) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(true);
        let mut reports = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => reports.push(r),
                Err(e) => panic!("{e}\n{}", c.logs()),
            }
        }
        assert_eq!(received(), want, "every member received its whole conversation\n{}", c.logs());
        for r in &reports {
            println!("{}: {:?}", r.identity, r.stats);
        }
        // The truth: the history in PostgreSQL.
        let (db, conn) = tokio_postgres::connect(&c.setups[0].postgres_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        for (a, b) in pairs {
            let conv = dm_client::dm(a, b);
            let rows = db
                .query("SELECT seq, sender, client_id FROM messages WHERE conversation = $1 ORDER BY seq", &[&conv])
                .await
                .unwrap();
            let history: Vec<(u64, String, String)> =
                rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2))).collect();
            assert_eq!(
                history.iter().map(|h| h.0).collect::<Vec<_>>(),
                (1..=2 * MESSAGES as u64).collect::<Vec<_>>(),
                "{conv}: every message stored once, numbered without a gap"
            );
            for r in reports.iter().filter(|r| r.identity == a || r.identity == b) {
                assert_eq!(r.received[&conv], history, "{} received exactly the stored history of {conv}", r.identity);
                for (i, ack) in r.acks.iter().enumerate() {
                    let cid = dm_client::client_id(&r.identity, i);
                    let stored: Vec<u64> = history.iter().filter(|h| h.2 == cid).map(|h| h.0).collect();
                    assert_eq!(stored, vec![ack.expect("acked")], "{cid}: stored once, at its ack's number");
                }
            }
        }
        let cuts: u64 = reports.iter().map(|r| r.stats.cuts).sum();
        let redirects: u64 = reports.iter().map(|r| r.stats.redirects).sum();
        println!("cluster chat faults: {cuts} cuts, {redirects} redirects followed");
        assert!(reports.iter().map(|r| r.stats.disconnects).sum::<u64>() >= 2, "the faults reached the clients");
    });
}

// ------------------------------------------------------------------------------------------------ benchmarks
//
// On demand, not in CI (numbers go to docs/benchmarks.md, "Cluster"); needs the test Redis and PostgreSQL:
//
//   COURIER_TEST_REDIS_URL=… COURIER_TEST_POSTGRES_URL=… \
//   cargo test --release -p signaling --test cluster -- --ignored --nocapture --test-threads 1

/// Redis's own counters: (commands processed, bytes in + out).
async fn redis_counters(url: &str) -> (u64, u64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut conn).await.unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("total_commands_processed"), field("total_net_input_bytes") + field("total_net_output_bytes"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Send `n` direct messages from `from` to `to`, paced at `per_sec`; the send→receive latency at `to` of each, ms.
async fn dm_latencies(from: &mut Ws, to: &mut Ws, peer: &str, tag: &str, n: usize, per_sec: u64) -> Vec<f64> {
    let mut sent = std::collections::HashMap::new();
    let mut lat = Vec::with_capacity(n);
    let gap = Duration::from_micros(1_000_000 / per_sec);
    let mut next = tokio::time::Instant::now();
    let mut i = 0;
    // Both sides say something now and then (a member silent for 30 s is closed).
    let mut keepalive = tokio::time::interval(Duration::from_secs(5));
    while lat.len() < n {
        if i < n && tokio::time::Instant::now() >= next {
            let cid = format!("{tag}-{i}");
            let m = json!({"type": "chat_send", "to": peer, "client_id": cid, "payload": {"i": i}});
            sent.insert(cid, std::time::Instant::now());
            from.send(Message::Text(m.to_string().into())).await.unwrap();
            i += 1;
            next += gap;
        }
        tokio::select! {
            f = to.next() => {
                let Some(Ok(Message::Text(t))) = f else { panic!("receiver closed") };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "chat_message" {
                    if let Some(at) = v["client_id"].as_str().and_then(|c| sent.get(c)) {
                        lat.push(at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
            f = from.next() => { let _ = f; }
            _ = keepalive.tick() => {
                for ws in [&mut *from, &mut *to] {
                    ws.send(Message::Text(json!({"type": "ping", "ts": 0}).to_string().into())).await.unwrap();
                }
            }
            _ = tokio::time::sleep_until(next) => {}
        }
    }
    lat.sort_by(f64::total_cmp);
    lat
}

#[test]
#[ignore]
fn bench_cross_node_chat_latency_and_redis_cost() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(c) = Cluster::start("bench", 8).await else { return };
        let redis_url = c.setups[0].redis_url.clone();
        // alice and carol on one node, bob on another (their own rooms, joined where each connects).
        // alice and carol in one room (so on one node), bob in a room on another node.
        let (mut alice, _, at_a, _) = join(&c.url(0), &token("bench-a", "alice")).await.unwrap();
        let (mut carol, _, at_c, _) = join(&c.url(0), &token("bench-a", "carol")).await.unwrap();
        assert_eq!(at_a, at_c);
        let mut bob = join_elsewhere(&c, "bench", "bob", &at_a).await;
        const N: usize = 2000;
        for rate in [200u64, 1000] {
            let same = dm_latencies(&mut alice, &mut carol, "carol", &format!("same{rate}"), N, rate).await;
            let cross = dm_latencies(&mut alice, &mut bob, "bob", &format!("cross{rate}"), N, rate).await;
            println!(
                "DM delivery at {rate}/s, {N} messages: same node p50 {:.2} ms p99 {:.2} ms; other node p50 {:.2} ms p99 {:.2} ms",
                percentile(&same, 0.5), percentile(&same, 0.99), percentile(&cross, 0.5), percentile(&cross, 0.99)
            );
        }
        // Redis cost per message: commands and bytes with the cluster idle (heartbeats only) subtracted.
        let (c0, b0) = redis_counters(&redis_url).await;
        for ws in [&mut alice, &mut bob, &mut carol] {
            ws.send(Message::Text(json!({"type": "ping", "ts": 0}).to_string().into())).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (c1, b1) = redis_counters(&redis_url).await;
        let idle = ((c1 - c0) as f64 / 5.0, (b1 - b0) as f64 / 5.0);
        let start = std::time::Instant::now();
        let _ = dm_latencies(&mut alice, &mut bob, "bob", "cost", N, 1000).await;
        let secs = start.elapsed().as_secs_f64();
        let (c2, b2) = redis_counters(&redis_url).await;
        let per_msg_cmds = ((c2 - c1) as f64 - idle.0 * secs) / N as f64;
        let per_msg_bytes = ((b2 - b1) as f64 - idle.1 * secs) / N as f64;
        println!("idle cluster (3 nodes): {:.1} Redis commands/s, {:.0} bytes/s", idle.0, idle.1);
        println!("per cross-node direct message: {per_msg_cmds:.2} Redis commands, {per_msg_bytes:.0} bytes");
        // Per join (and its leave): joins through the room's node, no redirect.
        const J: usize = 200;
        let (c3, b3) = redis_counters(&redis_url).await;
        let start = std::time::Instant::now();
        for i in 0..J {
            let (mut ws, _, _, _) = join(&at_a, &token("bench-a", &format!("j{i}"))).await.unwrap();
            let _ = ws.close(None).await;
        }
        let secs = start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(1500)).await; // presence is written by the next heartbeat
        let secs = secs + 1.5;
        let (c4, b4) = redis_counters(&redis_url).await;
        println!(
            "per join (and leave): {:.2} Redis commands, {:.0} bytes",
            ((c4 - c3) as f64 - idle.0 * secs) / J as f64,
            ((b4 - b3) as f64 - idle.1 * secs) / J as f64
        );
    });
}

#[test]
#[ignore]
fn bench_three_node_join_storm() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let Some(c) = Cluster::start("storm", 9).await else { return };
        const ROOMS: usize = 30;
        const PER_ROOM: usize = 10;
        let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
        let start = std::time::Instant::now();
        let mut tasks = Vec::new();
        for i in 0..ROOMS * PER_ROOM {
            // Members of one room arrive through different nodes (all but the room's own are redirected).
            let url = urls[(i / ROOMS) % 3].clone();
            let t = token(&format!("storm-{}", i % ROOMS), &format!("u{i}"));
            tasks.push(tokio::spawn(async move {
                let t0 = std::time::Instant::now();
                let r = join(&url, &t).await;
                (r.map(|(ws, _, at, hops)| (ws, at, hops)), t0.elapsed().as_secs_f64() * 1000.0)
            }));
        }
        let mut times = Vec::new();
        let mut hops = 0;
        let mut keep = Vec::new();
        let mut rooms_on: std::collections::HashMap<String, usize> = Default::default();
        for t in tasks {
            let (r, ms) = t.await.unwrap();
            let (ws, at, h) = r.expect("every join gets in");
            hops += h;
            *rooms_on.entry(at).or_default() += 1;
            times.push(ms);
            keep.push(ws);
        }
        let secs = start.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        println!(
            "join storm: {} joins into {ROOMS} rooms through 3 nodes in {secs:.2} s = {:.0} joins/s; join p50 {:.1} ms p99 {:.1} ms; {hops} redirects; members per node {:?}",
            ROOMS * PER_ROOM,
            (ROOMS * PER_ROOM) as f64 / secs,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            rooms_on.values().collect::<Vec<_>>()
        );
    });
}
