//! Courier as a load target: the `courier` binary started by [`crate::server::CourierProcess`] (optionally inside a
//! network namespace and pinned to a core), joined over its WebSocket protocol v1 like any client. A publisher joins
//! without auto-subscribe and offers its send m-lines; a subscriber joins with auto-subscribe and answers the server's
//! offers. Each keeps its socket open (pings every 10 s, later offers answered) until its session is dropped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;

use super::netns::Netns;
use super::peer::{PeerHandle, Transport};
use super::target::{Media, Session, Target};
use crate::server::CourierProcess;
use crate::signal::{ClientMessage, Incoming, Joined, OfferTrack, ServerMessage, SignalConnection, PROTOCOL_VERSION};

/// How long one signaling step may take.
const STEP: Duration = Duration::from_secs(15);

pub struct Courier {
    server: CourierProcess,
    /// The other nodes of a cluster ([`Courier::start_cluster`]): subscriber `i` joins through node `i % n`.
    others: Vec<CourierProcess>,
    /// Tracks published so far per room: what a subscriber of that room waits to be offered.
    tracks: Mutex<HashMap<usize, usize>>,
}

impl Courier {
    /// Starts `bin` on 127.0.0.1, or inside `netns` on its address; pinned to `cpu` when given; `workers` runtime
    /// threads; each subscriber's bandwidth estimate starting at `bwe_initial_kbps` (the server's default when
    /// `None`). Join rate limits are off (every peer comes from one address, quickly). With `turn`, its built-in
    /// TURN server runs too (on an ephemeral port), for [`super::peer::Transport::Turn`] subscribers.
    pub fn start(
        bin: &Path,
        netns: Option<&Netns>,
        cpu: Option<usize>,
        workers: usize,
        bwe_initial_kbps: Option<u32>,
        turn: bool,
    ) -> anyhow::Result<Courier> {
        let bwe = bwe_initial_kbps.map(|k| k.to_string());
        let mut env =
            vec![("COURIER_LIMITS_JOIN_PER_IP_PER_SEC", "0"), ("COURIER_LIMITS_JOIN_PER_IDENTITY_PER_SEC", "0")];
        if let Some(k) = &bwe {
            env.push(("COURIER_BWE_INITIAL_KBPS", k.as_str()));
        }
        let (prefix, ip): (Vec<String>, std::net::IpAddr) = match netns {
            Some(ns) => (ns.exec_prefix(cpu), ns.ns_addr.into()),
            None => {
                let prefix = cpu.map(|c| vec!["taskset".into(), "-c".into(), c.to_string()]).unwrap_or_default();
                (prefix, std::net::Ipv4Addr::LOCALHOST.into())
            }
        };
        let turn_addr = format!("{ip}:0");
        if turn {
            env.push(("COURIER_TURN_ENABLED", "true"));
            env.push(("COURIER_TURN_ADDR", turn_addr.as_str()));
            // Every subscriber is one identity's allocation; the default cap of 1,000 in total is enough.
        }
        let server = CourierProcess::start_with(bin, "load", "load-secret-load-secret", &env, &prefix, ip, workers)
            .context("starting courier")?;
        Ok(Courier { server, others: Vec::new(), tracks: Mutex::new(HashMap::new()) })
    }

    /// `nodes` courier processes on 127.0.0.1 as one cluster on `redis` and `postgres`, each of a region of its own,
    /// so that a member is served on the node it connects to and the room spans them all (issue 19). Publishers
    /// join through the first node, subscriber `i` through node `i % nodes`.
    pub fn start_cluster(
        bin: &Path,
        workers: usize,
        nodes: usize,
        redis: &str,
        postgres: &str,
    ) -> anyhow::Result<Courier> {
        let run = std::process::id();
        let mut all = Vec::new();
        for n in 0..nodes.max(1) {
            let (id, region) = (format!("load-{n}-{run}"), format!("load-region-{n}-{run}"));
            let env = [
                ("COURIER_LIMITS_JOIN_PER_IP_PER_SEC", "0"),
                ("COURIER_LIMITS_JOIN_PER_IDENTITY_PER_SEC", "0"),
                ("COURIER_CLUSTER_REDIS_URL", redis),
                ("COURIER_CLUSTER_NODE_ID", id.as_str()),
                ("COURIER_CLUSTER_REGION", region.as_str()),
                ("COURIER_CHAT_STORE", "postgres"),
                ("COURIER_CHAT_POSTGRES_URL", postgres),
            ];
            let ip = std::net::Ipv4Addr::LOCALHOST.into();
            let node = CourierProcess::start_with(bin, "load", "load-secret-load-secret", &env, &[], ip, workers)
                .with_context(|| format!("starting cluster node {n}"))?;
            all.push(node);
        }
        crate::server::wait_for_cluster(&all.iter().collect::<Vec<_>>(), Duration::from_secs(10))
            .map_err(|e| anyhow!(e))?;
        let server = all.remove(0);
        Ok(Courier { server, others: all, tracks: Mutex::new(HashMap::new()) })
    }

    /// The node subscriber `index` joins through.
    fn node(&self, index: usize) -> &CourierProcess {
        match index % (1 + self.others.len()) {
            0 => &self.server,
            k => &self.others[k - 1],
        }
    }

    /// The server's `/metrics`, by name.
    pub fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        self.server.metrics().context("fetching /metrics")
    }

    async fn join(
        &self,
        node: &CourierProcess,
        room: usize,
        identity: &str,
        auto_subscribe: bool,
    ) -> anyhow::Result<(SignalConnection, Box<Joined>)> {
        let token = node.token(&format!("load-{room}"), identity)?;
        let mut ws = SignalConnection::connect(&node.url).await?;
        ws.send(&ClientMessage::Join { v: PROTOCOL_VERSION, token, auto_subscribe, chat: Vec::new() }).await?;
        let joined = step("joined", async {
            loop {
                match next(&mut ws).await? {
                    ServerMessage::Joined(j) => return Ok(j),
                    ServerMessage::Error { code, message, .. } => bail!("join refused: {code}: {message}"),
                    _ => {}
                }
            }
        })
        .await?;
        Ok((ws, joined.into()))
    }
}

/// The UDP TURN URL of `joined.ice_servers` (`turn:host:port?transport=udp`, host an IP) and its credentials.
fn turn_server(joined: &Joined) -> anyhow::Result<(std::net::SocketAddr, String, String)> {
    for s in &joined.ice_servers {
        for url in &s.urls {
            let Some(rest) = url.strip_prefix("turn:") else { continue };
            let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
            if query.contains("transport=tcp") {
                continue;
            }
            if let Ok(addr) = hostport.parse() {
                return Ok((addr, s.username.clone(), s.credential.clone()));
            }
        }
    }
    bail!("joined offers no UDP TURN server (start courier with COURIER_TURN_ENABLED=true)")
}

/// The next server message; a closed socket is an error.
async fn next(ws: &mut SignalConnection) -> anyhow::Result<ServerMessage> {
    loop {
        match ws.recv().await? {
            Incoming::Message(m) => return Ok(m),
            Incoming::Invalid { error, text } => tracing::debug!("invalid server message ({error}): {text}"),
            Incoming::Closed { code, reason } => bail!("the server closed the socket: {code:?} {reason}"),
        }
    }
}

async fn step<T>(what: &str, f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP, f).await.map_err(|_| anyhow!("courier: no {what} within {STEP:?}"))?
}

/// `(mid, kind)` of each m-line of an SDP, in order.
fn mids(sdp: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut kind = None;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            kind = m.split_whitespace().next().map(str::to_string);
        } else if let (Some(mid), Some(k)) = (line.strip_prefix("a=mid:"), &kind) {
            out.push((mid.trim().to_string(), k.clone()));
        }
    }
    out
}

/// Keeps a joined session alive: pings, answers later server offers; ends with the socket or when aborted.
fn keep_alive(mut ws: SignalConnection, peer: PeerHandle) -> Session {
    let task = tokio::spawn(async move {
        let mut ping = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    if ws.send(&ClientMessage::Ping { ts: 0.into() }).await.is_err() { return; }
                }
                m = next(&mut ws) => match m {
                    Ok(ServerMessage::Offer { id, sdp }) => {
                        let Ok(sdp) = peer.answer(sdp).await else { return };
                        if ws.send(&ClientMessage::Answer { id, sdp }).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(e) => { tracing::debug!("courier session ended: {e}"); return; }
                }
            }
        }
    });
    Box::new(AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl Target for Courier {
    fn name(&self) -> &'static str {
        "courier"
    }

    fn pid(&self) -> u32 {
        self.server.pid()
    }

    fn pids(&self) -> Vec<u32> {
        std::iter::once(&self.server).chain(&self.others).map(|n| n.pid()).collect()
    }

    fn supports(&self, _rooms: usize, _publishers: usize, _media: Media) -> anyhow::Result<()> {
        Ok(())
    }

    fn forward_delay(&self) -> Option<Vec<(f64, u64)>> {
        // Every node's histogram, summed bucket by bucket (the bounds are the same on every node).
        let mut sum: Vec<(f64, u64)> = Vec::new();
        for node in std::iter::once(&self.server).chain(&self.others) {
            let mut h: Vec<(f64, u64)> = node
                .metrics()
                .ok()?
                .into_iter()
                .filter_map(|(k, v)| {
                    let le = k.strip_prefix("courier_forward_delay_seconds_bucket{le=\"")?.strip_suffix("\"}")?;
                    let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                    Some((le, v as u64))
                })
                .collect();
            h.sort_by(|a, b| a.0.total_cmp(&b.0));
            if sum.is_empty() {
                sum = h;
            } else if sum.len() == h.len() {
                for (a, b) in sum.iter_mut().zip(h) {
                    a.1 += b.1;
                }
            } else {
                return None;
            }
        }
        (!sum.is_empty()).then_some(sum)
    }

    async fn publish(&self, room: usize, index: usize, media: Media, peer: &PeerHandle) -> anyhow::Result<Session> {
        let (mut ws, _) = self.join(&self.server, room, &format!("pub-{room}-{index}"), false).await?;
        let sdp = peer.offer(media, true).await?;
        let tracks: Vec<OfferTrack> =
            mids(&sdp).into_iter().map(|(mid, _)| OfferTrack { mid, source: None, name: None }).collect();
        let count = tracks.len();
        ws.send(&ClientMessage::Offer { id: 1, sdp, tracks }).await?;
        let answer = step("answer", async {
            loop {
                match next(&mut ws).await? {
                    ServerMessage::Answer { id: 1, sdp } => return Ok(sdp),
                    ServerMessage::Error { code, message, .. } => bail!("offer refused: {code}: {message}"),
                    _ => {}
                }
            }
        })
        .await?;
        peer.accept_answer(answer).await?;
        *self.tracks.lock().map_err(|_| anyhow!("poisoned"))?.entry(room).or_default() += count;
        Ok(keep_alive(ws, peer.clone()))
    }

    async fn subscribe(&self, room: usize, index: usize, _media: Media, peer: &PeerHandle) -> anyhow::Result<Session> {
        let expected = self.tracks.lock().map_err(|_| anyhow!("poisoned"))?.get(&room).copied().unwrap_or(0);
        let (mut ws, joined) = self.join(self.node(index), room, &format!("sub-{room}-{index}"), true).await?;
        if peer.transport() == Transport::Turn {
            let (server, username, password) = turn_server(&joined)?;
            peer.relay(server, username, password).await.context("allocating a TURN relay")?;
        }
        step("offer with every track", async {
            let mut subscribed = 0;
            loop {
                match next(&mut ws).await? {
                    ServerMessage::Subscribed { .. } => subscribed += 1,
                    ServerMessage::Offer { id, sdp } => {
                        let sdp = peer.answer(sdp).await?;
                        ws.send(&ClientMessage::Answer { id, sdp }).await?;
                        if subscribed >= expected {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        })
        .await?;
        Ok(keep_alive(ws, peer.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mids_follow_their_m_lines() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        assert_eq!(mids(sdp), vec![("0".into(), "audio".into()), ("1".into(), "video".into())]);
    }
}
