//! What the cluster tests share: a [`Cluster`] of three `courier` nodes (on loopback ports, or each in a network
//! namespace of a [`Segment`]), the test Redis and PostgreSQL, tokens, admin API calls, and a client that joins as a
//! client in a cluster does (following redirects).

#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signaling::auth::{mint, TokenRequest};
use tokio_tungstenite::tungstenite::Message;

use crate::common;
use crate::netns::Segment;
use crate::node::{free_port, Node, NodeSetup, KEY, SECRET};

pub type Ws = common::Ws;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The test Redis with database `db` (flushed), or `None` outside CI when there is none.
pub async fn redis_database(db: u32) -> Option<String> {
    let Ok(url) = std::env::var("COURIER_TEST_REDIS_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the cluster tests: COURIER_TEST_REDIS_URL is not set");
        eprintln!("skipped: COURIER_TEST_REDIS_URL not set");
        return None;
    };
    let base = url.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(url);
    let url = format!("{base}/{db}");
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("the test Redis");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("FLUSHDB");
    Some(url)
}

/// Three running nodes `<prefix>-a`, `-b`, `-c` (`nodes[i]` is `None` while node `i` is down).
pub struct Cluster {
    // Fields drop in this order: the nodes die before their namespaces, relays and files go.
    pub nodes: Vec<Option<Node>>,
    pub setups: Vec<NodeSetup>,
    pub segment: Option<Segment>,
    _root: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes on loopback ports, or `None` when Redis or PostgreSQL is not there (outside CI).
    pub async fn start(prefix: &str, db: u32) -> Option<Cluster> {
        Self::start_with(prefix, db, None).await
    }

    /// [`Cluster::start`] with each node in a region of its own (its id): a room spans the nodes its members join
    /// through.
    pub async fn start_regions(prefix: &str, db: u32) -> Option<Cluster> {
        Self::start_nodes(prefix, db, None, true).await
    }

    /// [`Cluster::start`], every node sending its webhook events to `webhook`.
    pub async fn start_with(prefix: &str, db: u32, webhook: Option<String>) -> Option<Cluster> {
        Self::start_nodes(prefix, db, webhook, false).await
    }

    async fn start_nodes(prefix: &str, db: u32, webhook: Option<String>, own_regions: bool) -> Option<Cluster> {
        let redis_url = redis_database(db).await?;
        let postgres_url = common::postgres_database().await?;
        let root = tempfile::tempdir().unwrap();
        let setups = ["a", "b", "c"]
            .iter()
            .map(|n| NodeSetup {
                id: format!("{prefix}-{n}"),
                addr: std::net::Ipv4Addr::LOCALHOST.into(),
                port: free_port(),
                netns: None,
                root: root.path().to_path_buf(),
                redis_url: redis_url.clone(),
                postgres_url: postgres_url.clone(),
                region: if own_regions { format!("{prefix}-{n}") } else { "test".into() },
                webhook: webhook.clone(),
            })
            .collect();
        Some(Cluster::launch(setups, None, root).await)
    }

    /// Three nodes, node `i` in the namespace of `segment.hosts[i]`, bound to and advertising its address there;
    /// they reach the test Redis and PostgreSQL through relays on the segment's gateway. `None` when Redis or
    /// PostgreSQL is not there (outside CI).
    pub async fn start_in(prefix: &str, db: u32, mut segment: Segment) -> Option<Cluster> {
        assert!(segment.hosts.len() >= 3, "a segment of three hosts at least");
        let redis_url = redis_database(db).await?;
        let postgres_url = common::postgres_database().await?;
        let redis_url = segment.relay_url(&redis_url).await.expect("a relay to the test Redis");
        let postgres_url = segment.relay_url(&postgres_url).await.expect("a relay to the test PostgreSQL");
        let root = tempfile::tempdir().unwrap();
        let setups = ["a", "b", "c"]
            .iter()
            .zip(&segment.hosts)
            .map(|(n, host)| NodeSetup {
                id: format!("{prefix}-{n}"),
                addr: host.addr.into(),
                // The namespace is new: every port is free there.
                port: 7880,
                netns: Some(host.netns.clone()),
                root: root.path().to_path_buf(),
                redis_url: redis_url.clone(),
                postgres_url: postgres_url.clone(),
                region: "test".into(),
                webhook: None,
            })
            .collect();
        Some(Cluster::launch(setups, Some(segment), root).await)
    }

    async fn launch(setups: Vec<NodeSetup>, segment: Option<Segment>, root: tempfile::TempDir) -> Cluster {
        let mut c = Cluster { nodes: Vec::new(), setups, segment, _root: root };
        for i in 0..c.setups.len() {
            let node = Node::start(&c.setups[i]).await;
            c.nodes.push(Some(node));
        }
        c.wait_for_nodes(c.setups.len()).await;
        c
    }

    pub fn url(&self, i: usize) -> String {
        self.setups[i].ws_url()
    }

    /// Wait until node 0's (or the first running node's) registry lists `n` nodes.
    pub async fn wait_for_nodes(&self, n: usize) {
        let i = self.nodes.iter().position(Option::is_some).expect("a running node");
        let http = self.setups[i].http();
        common::eventually(&format!("{n} nodes in the registry"), Duration::from_secs(10), || {
            let http = http.clone();
            async move {
                let (status, body) = api_get(&http, "/api/v1/nodes").await;
                let have = body["nodes"].as_array().map_or(0, Vec::len);
                if status == 200 && have == n {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            }
        })
        .await;
    }

    pub fn logs(&self) -> String {
        self.setups.iter().map(|s| format!("--- {} ---\n{}", s.id, s.log_tail(25))).collect::<Vec<_>>().join("\n")
    }
}

pub fn token(room: &str, identity: &str) -> String {
    mint(
        KEY,
        SECRET,
        &TokenRequest {
            room: room.into(),
            identity: identity.into(),
            ttl: Duration::from_secs(600),
            can_publish: true,
            can_subscribe: true,
            can_chat: true,
            ..TokenRequest::new("", "")
        },
    )
}

pub fn api_token() -> String {
    mint(
        KEY,
        SECRET,
        &TokenRequest {
            room_join: false,
            can_publish: false,
            can_subscribe: false,
            can_chat: false,
            room_list: true,
            room_admin: true,
            room_create: true,
            ..TokenRequest::new("*", "backend")
        },
    )
}

pub async fn api_get(http: &str, path: &str) -> (u16, Value) {
    api(http, "GET", path, None).await
}

/// One admin API call with the all-rooms admin token: (status, JSON body or `null`); status 0 on no answer.
pub async fn api(http: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, bytes) = request(http, method, path, body).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A counter or gauge from a node's `/metrics` (the sample without labels); `None` when absent or unreadable.
pub async fn metric(http: &str, name: &str) -> Option<f64> {
    let (_, bytes) = request(http, "GET", "/metrics", None).await;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn request(http: &str, method: &str, path: &str, body: Option<Value>) -> (u16, axum::body::Bytes) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<axum::body::Bytes>>();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("{http}{path}"))
        .header("authorization", format!("Bearer {}", api_token()))
        .header("content-type", "application/json")
        .body(Full::new(axum::body::Bytes::from(body)))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
        Ok(Ok(res)) => {
            let status = res.status().as_u16();
            (status, res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
        }
        _ => (0, Default::default()),
    }
}

/// Next text frame as JSON within `within`; `None` on a close, an error or the timeout.
pub async fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Join at `url` as a client does in a cluster: follow `redirect`s (at most 3). Returns the socket, `joined`, the
/// URL it ended at and how many redirects it followed.
pub async fn join(url: &str, token: &str) -> Result<(Ws, Value, String, usize), String> {
    let mut url = url.to_string();
    for hops in 0..=3 {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| format!("connect {url}: {e}"))?;
        let join = json!({"type": "join", "v": 1, "token": token}).to_string();
        ws.send(Message::Text(join.into())).await.map_err(|e| e.to_string())?;
        let Some(first) = next_json(&mut ws, Duration::from_secs(5)).await else {
            return Err(format!("no answer to join at {url}"));
        };
        match first["type"].as_str() {
            Some("joined") => return Ok((ws, first, url, hops)),
            Some("redirect") => {
                let code = close_code(&mut ws).await;
                if code != Some(4012) {
                    return Err(format!("redirect followed by close {code:?}, not 4012"));
                }
                url = first["url"].as_str().ok_or("redirect without url")?.to_string();
            }
            _ => return Err(format!("join at {url} answered {first}")),
        }
    }
    Err("more than 3 redirects".into())
}

pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return Some(u16::from(f.code)),
            Ok(Some(Ok(Message::Close(None)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Create `room` through the admin API of node `i`, which places it there (placement by load would pick whichever
/// node is least busy at that moment, and a test that needs two nodes cannot leave that to chance).
pub async fn create_room_on(c: &Cluster, i: usize, room: &str) {
    let (status, body) = api(&c.setups[i].http(), "POST", "/api/v1/rooms", Some(json!({"name": room}))).await;
    assert_eq!(status, 201, "creating {room} on node {i}: {body}");
}

/// Join `identity` to a room of its own, `<prefix>-b`, created on the first node other than `not_at` (through the
/// admin API, so it lives there) and joined through that node.
pub async fn join_elsewhere(c: &Cluster, prefix: &str, identity: &str, not_at: &str) -> Ws {
    let i = (0..c.setups.len()).find(|i| c.url(*i) != not_at).expect("a node other than {not_at}");
    let room = format!("{prefix}-b");
    create_room_on(c, i, &room).await;
    let (ws, _, at, hops) = join(&c.url(i), &token(&room, identity)).await.unwrap();
    assert_eq!((at.as_str(), hops), (c.url(i).as_str(), 0), "{identity} joined {room} where it was created");
    ws
}

/// Wait for a frame of `ty`, skipping others.
pub async fn recv_type(ws: &mut Ws, ty: &str, within: Duration) -> Result<Value, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_json(ws, left).await {
            Some(v) if v["type"] == ty => return Ok(v),
            Some(_) => continue,
            None => return Err(format!("no {ty} within {within:?}")),
        }
    }
}
