//! A cluster of hosts, not of ports: three real `courier` nodes, each in a network namespace of its own on one test
//! network (`cluster/netns.rs`), bound to and advertising its address there, sharing the test Redis and PostgreSQL
//! (`COURIER_TEST_REDIS_URL`, `COURIER_TEST_POSTGRES_URL`, reached through relays on the network's gateway). The
//! test process is the client, in the root namespace. This is the harness the tests of rooms spanning nodes (media
//! relayed between nodes) build on; the scenario here proves it: redirects name an address another host reaches,
//! room chat works on the room's node, and a direct message crosses from one namespace to another over Redis.
//!
//! Needs root (network namespaces): skipped otherwise, failed in CI. Uses Redis database 13.

mod common;
#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/netns.rs"]
mod netns;
#[path = "cluster/node.rs"]
mod node;

use std::time::{Duration, Instant};

use futures::SinkExt;
use harness::{api, api_get, join, recv_type, runtime, token, Cluster};
use netns::Segment;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[test]
fn nodes_in_namespaces_redirect_to_and_chat_across_their_hosts() {
    let started = Instant::now();
    let Some(segment) = Segment::create_or_skip(3) else { return };
    runtime().block_on(async {
        let within = Duration::from_secs(60);
        let scenario = async {
            let Some(c) = Cluster::start_in("netns", 13, segment).await else { return };
            println!("three nodes up in their namespaces after {} ms", started.elapsed().as_millis());
            let hosts = &c.segment.as_ref().expect("a cluster in a segment").hosts;
            // Every node lists the three, each at its namespace address (WebSocket URL and UDP).
            let (status, body) = api_get(&c.setups[0].http(), "/api/v1/nodes").await;
            assert_eq!(status, 200, "{body}");
            let nodes = body["nodes"].as_array().expect("a node list");
            assert_eq!(nodes.len(), 3, "{body}");
            for (s, host) in c.setups.iter().zip(hosts) {
                let n = nodes.iter().find(|n| n["id"] == s.id.as_str()).unwrap_or_else(|| panic!("{} in {body}", s.id));
                assert_eq!(n["url"], format!("ws://{}:7880/rtc", host.addr), "{body}");
                let udp: std::net::SocketAddr = n["udp"].as_str().and_then(|u| u.parse().ok()).expect("a UDP address");
                assert_eq!(udp.ip(), host.addr, "ICE candidates name the namespace address: {body}");
            }
            // The room is created through node a, so it lives there (placement by load would pick any node); a join
            // through node b is redirected to node a, at its namespace address, and gets in there.
            let room = "netns-room";
            let (status, body) = api(&c.setups[0].http(), "POST", "/api/v1/rooms", Some(json!({"name": room}))).await;
            assert_eq!(status, 201, "{body}");
            let (mut alice, _, at, hops) = join(&c.url(0), &token(room, "alice")).await.unwrap();
            assert_eq!((at.as_str(), hops), (c.url(0).as_str(), 0), "alice: on the room's node, no redirect");
            let (mut bob, joined, bob_at, hops) = join(&c.url(1), &token(room, "bob")).await.unwrap();
            assert_eq!((bob_at.as_str(), hops), (at.as_str(), 1), "bob: redirected once, to the room's node");
            assert_eq!(at, format!("ws://{}:7880/rtc", hosts[0].addr), "a namespace address");
            let members: Vec<&str> =
                joined["participants"].as_array().unwrap().iter().filter_map(|p| p["identity"].as_str()).collect();
            assert_eq!(members, vec!["alice"], "{joined}");
            // Room chat on the room's node.
            let m = json!({"type": "chat_send", "client_id": "bob-1", "payload": {"text": "hello room"}});
            bob.send(Message::Text(m.to_string().into())).await.unwrap();
            let got = recv_type(&mut alice, "chat_message", Duration::from_secs(5)).await.unwrap();
            assert_eq!(
                (got["conversation"].as_str(), got["sender"].as_str(), got["payload"]["text"].as_str()),
                (Some(format!("room:{room}").as_str()), Some("bob"), Some("hello room")),
                "{got}"
            );
            // A direct message between two identities on two nodes (two namespaces) crosses over Redis, both ways.
            // Carol's room lives on node c (created there); she joins through node b too.
            let carols = "netns-carol";
            let (status, body) = api(&c.setups[2].http(), "POST", "/api/v1/rooms", Some(json!({"name": carols}))).await;
            assert_eq!(status, 201, "{body}");
            let (mut carol, _, carol_at, hops) = join(&c.url(1), &token(carols, "carol")).await.unwrap();
            assert_eq!((carol_at.as_str(), hops), (c.url(2).as_str(), 1), "carol: redirected once, to node c");
            let m =
                json!({"type": "chat_send", "to": "carol", "client_id": "alice-1", "payload": {"text": "hi carol"}});
            alice.send(Message::Text(m.to_string().into())).await.unwrap();
            let got = recv_type(&mut carol, "chat_message", Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("carol: {e}\n{}", c.logs()));
            assert_eq!(
                (got["conversation"].as_str(), got["seq"].as_u64(), got["payload"]["text"].as_str()),
                (Some("dm:alice:carol"), Some(1), Some("hi carol")),
                "{got}"
            );
            let m =
                json!({"type": "chat_send", "to": "alice", "client_id": "carol-1", "payload": {"text": "hi alice"}});
            carol.send(Message::Text(m.to_string().into())).await.unwrap();
            let got = loop {
                let got = recv_type(&mut alice, "chat_message", Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|e| panic!("alice: {e}\n{}", c.logs()));
                // Alice's own message comes back to her first (every session of a conversation gets it).
                if got["sender"] == "carol" {
                    break got;
                }
            };
            assert_eq!((got["conversation"].as_str(), got["seq"].as_u64()), (Some("dm:alice:carol"), Some(2)), "{got}");
        };
        tokio::time::timeout(within, scenario).await.unwrap_or_else(|_| panic!("not done within {within:?}"));
    });
    println!("done in {} ms", started.elapsed().as_millis());
}
