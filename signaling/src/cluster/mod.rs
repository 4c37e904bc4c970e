//! Many Courier nodes as one service: the Redis side of a cluster (issue 18).
//!
//! Off by default: one node, SQLite, no Redis, exactly as before. With `[cluster] redis_url` set, the node joins a
//! cluster of nodes that share one Redis (coordination, never durable state) and one PostgreSQL (chat history):
//!
//! - [`registry`]: each node's heartbeat (id, URL, region, load) under a key with a time to live; the node list.
//! - [`placement`]: a room lives on one node at a time; a join reaching another node is redirected there.
//! - [`bus`]: committed chat messages and ephemeral frames cross nodes on Redis pub/sub; the store fills whatever
//!   the bus loses, so pub/sub carries no durability.
//! - presence: which identities are online on which node (written by the heartbeat from the room registry).
//! - [`mirror`]: a room's members on other nodes (groundwork for rooms that span nodes, issue 19).
//! - [`span`]: rooms that span nodes: each part's changes mirrored on the others, tracks relayed between nodes.
//! - [`forward`]: the admin API on any node: requests about another node's room go there; room lists are gathered.
//!
//! The design, the keys and channels, and what happens on each fault are in `docs/architecture.md` ("Cluster").

pub mod bus;
pub mod forward;
pub mod mirror;
pub mod placement;
pub mod registry;
mod shell;
pub mod span;

pub use placement::Placement;
pub use shell::{Cluster, ClusterStats, REDIS_TIMEOUT};

use anyhow::bail;
use serde::Deserialize;

/// The raw `[cluster]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterConfig {
    /// `redis://[:password@]host:port/db`. Setting it turns the cluster on.
    pub redis_url: Option<String>,
    /// This node's id in the cluster (default: the host name and a random suffix).
    pub node_id: Option<String>,
    /// The WebSocket URL clients are redirected to (default: `ws://<http_addr>/rtc`, `wss` with `[tls]`).
    pub advertise_url: Option<String>,
    /// A region label; new rooms go to a node of the joining node's region first (default `default`).
    pub region: Option<String>,
    /// Participants at which this node is full (default: never): a room it hosts takes further members on another
    /// node of the region, the room then spanning nodes (issue 19).
    pub full_participants: Option<usize>,
}

impl RawClusterConfig {
    pub fn over(self, lower: RawClusterConfig) -> RawClusterConfig {
        RawClusterConfig {
            redis_url: self.redis_url.or(lower.redis_url),
            node_id: self.node_id.or(lower.node_id),
            advertise_url: self.advertise_url.or(lower.advertise_url),
            region: self.region.or(lower.region),
            full_participants: self.full_participants.or(lower.full_participants),
        }
    }

    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<RawClusterConfig> {
        let full = "COURIER_CLUSTER_FULL_PARTICIPANTS";
        let full_participants =
            get(full).map(|v| v.parse::<usize>().map_err(|e| anyhow::anyhow!("{full}={v:?}: {e}"))).transpose()?;
        Ok(RawClusterConfig {
            redis_url: get("COURIER_CLUSTER_REDIS_URL"),
            node_id: get("COURIER_CLUSTER_NODE_ID"),
            advertise_url: get("COURIER_CLUSTER_ADVERTISE_URL"),
            region: get("COURIER_CLUSTER_REGION"),
            full_participants,
        })
    }

    /// `None` without `redis_url` (no cluster). `http_addr` and `tls` give the default advertised URL.
    pub fn resolve(self, http_addr: std::net::SocketAddr, tls: bool) -> anyhow::Result<Option<ClusterConfig>> {
        let Some(redis_url) = self.redis_url.filter(|u| !u.is_empty()) else {
            if self.node_id.is_some()
                || self.advertise_url.is_some()
                || self.region.is_some()
                || self.full_participants.is_some()
            {
                bail!("[cluster] needs redis_url (COURIER_CLUSTER_REDIS_URL, --redis-url) to be on");
            }
            return Ok(None);
        };
        if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
            bail!("cluster redis_url must start with redis:// (or rediss://)");
        }
        if redis_url.starts_with("rediss://") {
            bail!("cluster redis_url: TLS to Redis (rediss://) is not supported yet; keep Redis on a private network");
        }
        let node_id = match self.node_id {
            Some(id) => id,
            None => {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                let host = if host.is_empty() { "node".to_string() } else { host };
                format!("{host}-{}", crate::room::random_token(6).to_lowercase())
            }
        };
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!("cluster node_id must be 1 to 64 characters of [A-Za-z0-9._-], not {node_id:?}");
        }
        let advertise_default = self.advertise_url.is_none() && http_addr.port() == 0;
        let advertise_url = match self.advertise_url {
            Some(u) => u,
            None => {
                if http_addr.ip().is_unspecified() {
                    bail!(
                        "http_addr {http_addr} is unspecified: set [cluster] advertise_url to the WebSocket URL \
                         clients reach this node at (e.g. wss://node-a.example.com/rtc)"
                    );
                }
                format!("{}://{http_addr}/rtc", if tls { "wss" } else { "ws" })
            }
        };
        if registry::http_base(&advertise_url).is_none()
            || !(advertise_url.starts_with("ws://") || advertise_url.starts_with("wss://"))
        {
            bail!("cluster advertise_url must be a ws:// or wss:// URL with a host, not {advertise_url:?}");
        }
        let region = self.region.unwrap_or_else(|| "default".to_string());
        if region.is_empty() || region.len() > 64 {
            bail!("cluster region must be 1 to 64 characters");
        }
        if self.full_participants == Some(0) {
            bail!("cluster full_participants must be at least 1 (leave it out for no limit)");
        }
        let full_participants = self.full_participants.unwrap_or(usize::MAX);
        Ok(Some(ClusterConfig { redis_url, node_id, advertise_url, region, advertise_default, full_participants }))
    }
}

/// The validated `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis_url: String,
    pub node_id: String,
    pub advertise_url: String,
    pub region: String,
    /// Participants at which this node is full (`usize::MAX`: no limit); see [`placement::serve`].
    pub full_participants: usize,
    /// `advertise_url` is the default of an ephemeral `http_addr` (port 0): the server puts the bound port in.
    pub advertise_default: bool,
}

impl ClusterConfig {
    /// The configuration with the port the HTTP listener actually bound, when the default URL had none.
    pub fn bound(mut self, http_addr: std::net::SocketAddr, tls: bool) -> ClusterConfig {
        if self.advertise_default {
            self.advertise_url = format!("{}://{http_addr}/rtc", if tls { "wss" } else { "ws" });
            self.advertise_default = false;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: Option<&str>) -> RawClusterConfig {
        RawClusterConfig { redis_url: url.map(str::to_string), ..RawClusterConfig::default() }
    }

    #[test]
    fn off_without_redis_and_defaults_with_it() {
        let addr: std::net::SocketAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(raw(None).resolve(addr, false).unwrap(), None);
        let c = raw(Some("redis://127.0.0.1:6379/0")).resolve(addr, false).unwrap().unwrap();
        assert_eq!(c.advertise_url, "ws://127.0.0.1:7001/rtc");
        assert_eq!(c.region, "default");
        assert!(!c.node_id.is_empty());
        let c = raw(Some("redis://r")).resolve(addr, true).unwrap().unwrap();
        assert_eq!(c.advertise_url, "wss://127.0.0.1:7001/rtc");
    }

    #[test]
    fn refusals_name_the_setting() {
        let addr: std::net::SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let err = |r: RawClusterConfig, a| r.resolve(a, false).unwrap_err().to_string();
        assert!(err(raw(Some("http://x")), addr).contains("redis://"));
        assert!(err(raw(Some("redis://x")), any).contains("advertise_url"));
        let bad_id = RawClusterConfig { node_id: Some("a b".into()), ..raw(Some("redis://x")) };
        assert!(err(bad_id, addr).contains("node_id"));
        let no_redis = RawClusterConfig { node_id: Some("a".into()), ..raw(None) };
        assert!(err(no_redis, addr).contains("redis_url"));
        let bad_url = RawClusterConfig { advertise_url: Some("http://x/rtc".into()), ..raw(Some("redis://x")) };
        assert!(err(bad_url, addr).contains("advertise_url"));
        let zero = RawClusterConfig { full_participants: Some(0), ..raw(Some("redis://x")) };
        assert!(err(zero, addr).contains("full_participants"));
        let env = |v: &'static str| move |k: &str| (k == "COURIER_CLUSTER_FULL_PARTICIPANTS").then(|| v.to_string());
        assert!(RawClusterConfig::from_env(&env("many")).unwrap_err().to_string().contains("FULL_PARTICIPANTS"));
        let full = RawClusterConfig::from_env(&env("500")).unwrap().over(raw(Some("redis://x")));
        assert_eq!(full.resolve(addr, false).unwrap().unwrap().full_participants, 500);
        let unlimited = raw(Some("redis://x")).resolve(addr, false).unwrap().unwrap();
        assert_eq!(unlimited.full_participants, usize::MAX, "no limit by default");
    }
}
