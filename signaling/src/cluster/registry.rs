//! The node registry: what each node of a cluster tells the others about itself, and the Redis keys everything of
//! the cluster lives under.
//!
//! Each node writes its [`NodeInfo`] once a second under `courier:node:<id>` with a time to live
//! ([`NODE_TTL`]): a node that stops writing (killed, cut off) disappears by itself within that time, and one that
//! drains deletes its key first. `courier:nodes` is a sorted set of node ids scored by when their key expires, so
//! the cluster is listed without scanning the key space; ids whose key is gone are dropped from it by the next
//! heartbeat of any node. Redis holds nothing durable: a Redis that restarts empty is filled again by the nodes'
//! next heartbeats (nodes, then the rooms they host and their members' presence).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a node writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat stays in Redis: a node silent this long is gone from the cluster.
pub const NODE_TTL: Duration = Duration::from_secs(3);

/// Every key and channel of Courier starts with this, so a Redis can be shared with other applications.
pub const PREFIX: &str = "courier:";

/// The node a full node last sent joins of `room` to ([`SPILL_TTL`]): that node serves them, even while its view
/// of the room's node (a heartbeat old) does not show it full yet.
pub fn spill_key(room: &str) -> String {
    format!("{PREFIX}spill:{room}")
}

/// How long a [`spill_key`] holds: a few heartbeats, by when every node sees the room's node full.
pub const SPILL_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The key of a node's heartbeat.
pub fn node_key(id: &str) -> String {
    format!("{PREFIX}node:{id}")
}

/// The sorted set of node ids, scored by the Unix millisecond their heartbeat expires.
pub fn nodes_key() -> String {
    format!("{PREFIX}nodes")
}

/// The key holding the id of the node a room lives on.
pub fn room_key(room: &str) -> String {
    format!("{PREFIX}room:{room}")
}

/// The hash of an identity's live sessions: participant id → [`PresenceEntry`] (JSON).
pub fn presence_key(identity: &str) -> String {
    format!("{PREFIX}presence:{identity}")
}

/// How loaded a node is, as it reports itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub rooms: usize,
    pub participants: usize,
    pub tracks: usize,
    /// CPU time used by the process over the last heartbeat interval, in cores (1.0 = one core busy).
    pub cpu: f64,
    /// Media the node sent over the last interval, bits per second.
    pub send_bps: u64,
}

impl NodeLoad {
    /// One number to compare nodes by: a participant costs 1, a published track 2 (each is forwarded to many), a
    /// busy core 50 (CPU is what runs out first on an SFU).
    pub fn score(&self) -> f64 {
        self.participants as f64 + 2.0 * self.tracks as f64 + 50.0 * self.cpu
    }
}

/// A node as the registry holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// The WebSocket URL clients are redirected to.
    pub url: String,
    pub region: String,
    /// The media (UDP) address the node announces.
    pub udp: String,
    pub version: String,
    pub started_ms: u64,
    /// When this heartbeat was written, Unix milliseconds.
    pub heartbeat_ms: u64,
    pub load: NodeLoad,
}

/// One live session of an identity, as presence holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub node: String,
    pub room: String,
    pub participant_id: String,
    pub since_ms: u64,
}

/// The `http(s)://host:port` base of a node's WebSocket URL (`ws` → `http`, `wss` → `https`, path dropped): where
/// its HTTP routes (WHIP, WHEP, the admin API) are.
pub fn http_base(ws_url: &str) -> Option<String> {
    let (scheme, rest) = ws_url.split_once("://")?;
    let scheme = match scheme {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty())?;
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_base_of_a_websocket_url() {
        assert_eq!(http_base("ws://127.0.0.1:7001/rtc").as_deref(), Some("http://127.0.0.1:7001"));
        assert_eq!(http_base("wss://node-a.example.com/rtc?x=1").as_deref(), Some("https://node-a.example.com"));
        assert_eq!(http_base("ftp://x/rtc"), None);
        assert_eq!(http_base("ws:///rtc"), None);
    }

    #[test]
    fn a_node_round_trips_as_json() {
        let n = NodeInfo {
            id: "a".into(),
            url: "ws://127.0.0.1:1/rtc".into(),
            region: "eu".into(),
            udp: "127.0.0.1:2".into(),
            version: "0.1.0".into(),
            started_ms: 1,
            heartbeat_ms: 2,
            load: NodeLoad { rooms: 1, participants: 3, tracks: 2, cpu: 0.5, send_bps: 10 },
        };
        let back: NodeInfo = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        assert_eq!(n.load.score(), 3.0 + 4.0 + 25.0);
    }
}
