//! The async shell around the sans-I/O peers: the UDP task, the worker tasks, and the [`Sfu`] handle.
//!
//! ```text
//!               +------------------+   Datagram (try_send; dropped when full)
//!  UDP socket ->| udp recv task    |-----------------------------+
//!               | demux by ufrag / |                             v
//!               | source address   |                    +-----------------+  Media batch (one msg per
//!               +------------------+                    | worker k        |  destination worker per
//!                                                       |  owns peers     |  drain cycle; try_send)
//!  signaling --- Sfu handle --- control msgs ---------->|  (str0m Rtc)    |-------> other workers
//!      ^                                                |  router         |
//!      +------------- PeerEvent (per-peer channel) -----+-----------------+--> socket (sendmmsg batch)
//! ```
//!
//! A worker owns its peers outright: no locks around a peer. A packet published on worker A goes to every local
//! subscriber directly and to each other worker that has subscribers as one batched message per drain cycle, never
//! one message per subscriber. Nothing on this path awaits: channel sends are `try_send`, and a cycle's datagrams
//! leave in non-blocking `sendmmsg` batches ([`crate::udp_send`], flushed when full and before the worker sleeps);
//! when a queue or the socket buffer is full the packet is dropped and counted, and the subscriber recovers through
//! NACK or a keyframe request — a slow peer never stalls the room. A panic inside one peer's state machine is caught,
//! that peer is closed with [`CloseReason::Fault`], and the worker carries on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::net::Protocol;
use str0m::IceCreds;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::allocator::Priority;
use crate::config::SfuConfig;
use crate::error::SfuError;
use crate::forward_delay::{DelayBuckets, BUCKETS};
use crate::id::{PeerId, TrackId, WorkerId};
use crate::packet::ForwardPacket;
use crate::peer::{CloseReason, Peer, PeerConfig, PeerEvent, PeerOutput};
use crate::router::Router;
use crate::tcp;
use crate::udp::{Demux, Route};
use crate::udp_recv::{Received, RecvBatch};
use crate::udp_send::SendBatch;

/// Counters for metrics. Gauges are kept exact; counters only grow.
#[derive(Debug, Default)]
pub struct Stats {
    /// Peers alive.
    pub peers: AtomicU64,
    /// Published tracks alive.
    pub tracks: AtomicU64,
    /// Down-tracks alive (subscriptions).
    pub downtracks: AtomicU64,
    /// Datagrams received on the socket.
    pub datagrams_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Datagrams that matched no peer.
    pub datagrams_unrouted: AtomicU64,
    /// Packets dropped because a queue was full (worker channel or socket buffer).
    pub forward_drops: AtomicU64,
    /// Peers torn down by a panic in their state machine.
    pub peer_faults: AtomicU64,
    /// RTP packets received from publishers (repairs included), counted by the workers at most once a second.
    pub rtp_in: AtomicU64,
    /// RTP packets sent to subscribers, likewise.
    pub rtp_out: AtomicU64,
    /// Forwarded packets per bucket of time in the server, kernel arrival to send ([`crate::forward_delay`]); added
    /// by the workers at most once a second.
    pub forward_delay: [AtomicU64; BUCKETS],
    /// The sum of those delays, microseconds.
    pub forward_delay_sum_us: AtomicU64,
}

/// One worker's summary of its subscribers' send-side bandwidth estimates, written by that worker at most once a
/// second and read by [`Sfu::stats`] and [`Sfu::bandwidth_estimate`]: the media path takes no lock for it (the
/// per-peer list is swapped under its lock once a second, never per packet).
#[derive(Debug, Default)]
struct WorkerBwe {
    /// Peers with an estimate.
    peers: AtomicU64,
    /// Sum of their estimates, bits per second.
    sum_bps: AtomicU64,
    /// The lowest estimate (`u64::MAX` when none).
    min_bps: AtomicU64,
    /// Each of its peers' estimate, bits per second, as of the same moment (read by [`Sfu::bandwidth_estimate`];
    /// replaced whole once a second, off the media path).
    per_peer: Mutex<Vec<(PeerId, u64)>>,
}

/// Passes over the peers whose timers are due, per worker cycle, while a pass makes another due at once. When
/// str0m's pacer may not run alone (a probe cluster, another timer due: vendor patch 14's conditions) it sends one
/// packet per timeout, each asking for an immediate one, so a frame of n packets needs n passes; the passes left
/// over wait for the next cycle, a timer tick (about 1 ms) later. 16 covers a 1.5 Mbit/s frame with room; the
/// bound keeps a peer that is always due from holding the worker.
const TIMER_ROUNDS: usize = 16;

/// How often a worker publishes its RTP counts and bandwidth summary.
const STATS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub peers: u64,
    pub tracks: u64,
    pub downtracks: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub datagrams_unrouted: u64,
    pub forward_drops: u64,
    pub peer_faults: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    /// Subscribers (peers) with a send-side bandwidth estimate.
    pub bwe_peers: u64,
    /// Sum of their estimates, bits per second (the mean is this over `bwe_peers`).
    pub bwe_sum_bps: u64,
    /// The lowest of their estimates, bits per second (0 when there is none).
    pub bwe_min_bps: u64,
    /// Forwarded packets per bucket of their time in the server (not cumulative; [`crate::forward_delay`]).
    pub forward_delay: DelayBuckets,
}

impl Stats {
    /// Read every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            peers: r(&self.peers),
            tracks: r(&self.tracks),
            downtracks: r(&self.downtracks),
            datagrams_in: r(&self.datagrams_in),
            datagrams_out: r(&self.datagrams_out),
            bytes_in: r(&self.bytes_in),
            bytes_out: r(&self.bytes_out),
            datagrams_unrouted: r(&self.datagrams_unrouted),
            forward_drops: r(&self.forward_drops),
            peer_faults: r(&self.peer_faults),
            rtp_in: r(&self.rtp_in),
            rtp_out: r(&self.rtp_out),
            forward_delay: DelayBuckets {
                counts: std::array::from_fn(|i| r(&self.forward_delay[i])),
                sum_us: r(&self.forward_delay_sum_us),
            },
            ..StatsSnapshot::default()
        }
    }
}

/// Options for one new peer.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// May it publish?
    pub can_publish: bool,
    /// May it subscribe?
    pub can_subscribe: bool,
    /// Tracing label (room/identity) for its span.
    pub label: String,
    /// The client makes every offer, the peer none (a WHEP viewer): see [`crate::peer::PeerConfig::client_offers`].
    pub client_offers: bool,
    /// The origin side of a relay to another node ([`crate::relay`]): a UDP socket of its own, full ICE, no
    /// bandwidth estimation. Its "client" is the other engine; subscribe it to the tracks to relay.
    pub relay: bool,
}

#[derive(Debug, Clone, Copy)]
struct TrackEntry {
    publisher: PeerId,
    worker: WorkerId,
    kind: MediaKind,
    /// For the subscribers' allocators: audio, screen share or camera.
    priority: Priority,
}

enum WorkerMsg {
    AddPeer {
        peer: Box<Peer>,
        events: mpsc::UnboundedSender<PeerEvent>,
        label: String,
        /// A relay peer's own socket.
        socket: Option<PeerSocket>,
    },
    /// A relay's edge needs `track` up to layer `demand`.
    RelayDemand {
        peer: PeerId,
        track: TrackId,
        demand: Option<u8>,
    },
    /// A UDP datagram, or a frame of an ICE-TCP connection.
    Datagram {
        peer: PeerId,
        proto: Protocol,
        source: SocketAddr,
        /// The address it was sent to, as the peer's candidate announces it (what the client sent to), so str0m
        /// finds its local candidate also behind NAT or on a 0.0.0.0 bind. Set by the reader of the socket.
        dest: SocketAddr,
        at: Instant,
        data: Vec<u8>,
    },
    Offer {
        peer: PeerId,
        id: u64,
        sdp: String,
    },
    Answer {
        peer: PeerId,
        id: u64,
        sdp: String,
    },
    Candidate {
        peer: PeerId,
        candidate: String,
    },
    /// Stop taking a published track from its publisher.
    Unpublish {
        peer: PeerId,
        track: TrackId,
    },
    AddDownTrack {
        peer: PeerId,
        track: TrackId,
        kind: MediaKind,
        publisher: PeerId,
        priority: Priority,
    },
    /// A subscriber's need for a track's layers, for the publisher's dynacast.
    LayerDemand {
        track: TrackId,
        subscriber: PeerId,
        demand: Option<u8>,
    },
    /// A subscriber's loss on an audio track, for the publisher's receiver reports.
    SubscriberLoss {
        track: TrackId,
        subscriber: PeerId,
        loss: f32,
    },
    RemoveDownTrack {
        peer: PeerId,
        track: TrackId,
    },
    AddRoute {
        track: TrackId,
        to: WorkerId,
    },
    RemoveRoute {
        track: TrackId,
        to: WorkerId,
    },
    Media(Vec<Arc<ForwardPacket>>),
    KeyframeRequest {
        track: TrackId,
        kind: KeyframeRequestKind,
        layer: u8,
    },
    ClosePeer {
        peer: PeerId,
    },
    TrackSettings {
        peer: PeerId,
        track: TrackId,
        settings: crate::downtrack::TrackSettings,
    },
    #[cfg(any(test, feature = "fault-injection"))]
    Panic {
        peer: PeerId,
    },
    Shutdown,
    /// A peer's timer is due.
    Tick,
}

struct Shared {
    /// `udp_addr` is the announced address (the UDP candidate's), `tcp_addr` likewise.
    config: SfuConfig,
    local_addr: SocketAddr,
    socket: Arc<UdpSocket>,
    /// The ICE-TCP listener's bound address.
    tcp_local: Option<SocketAddr>,
    /// Open ICE-TCP connections, for the peers' TCP transmits.
    tcp: tcp::Connections,
    demux: Demux,
    workers: Vec<mpsc::Sender<WorkerMsg>>,
    peers: Mutex<HashMap<PeerId, WorkerId>>,
    tracks: Mutex<HashMap<TrackId, TrackEntry>>,
    stats: Stats,
    /// One bandwidth summary per worker.
    bwe: Vec<WorkerBwe>,
    next_worker: AtomicU64,
}

/// The handle signaling holds: create peers, pass them SDP and candidates, subscribe them to tracks.
///
/// Cheap to clone. Every method returns quickly: it only queues a message for the worker that owns the peer.
#[derive(Clone)]
pub struct Sfu {
    shared: Arc<Shared>,
}

impl Sfu {
    /// Bind the UDP socket and start the UDP task and the workers on the current tokio runtime.
    pub async fn start(config: SfuConfig) -> Result<Sfu, SfuError> {
        config.validate()?;
        let socket = UdpSocket::bind(config.udp_addr).await.map_err(|e| SfuError::Bind(config.udp_addr, e))?;
        let local_addr = socket.local_addr().map_err(|e| SfuError::Bind(config.udp_addr, e))?;
        let announced = SocketAddr::new(config.public_ip.unwrap_or(local_addr.ip()), local_addr.port());
        let socket = Arc::new(socket);
        let tcp_listener = match config.tcp_addr {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| SfuError::Bind(a, e))?),
            None => None,
        };
        let tcp_local = match &tcp_listener {
            Some(l) => Some(l.local_addr().map_err(|e| SfuError::Bind(config.tcp_addr.unwrap_or(local_addr), e))?),
            None => None,
        };
        let tcp_announced = tcp_local.map(|a| SocketAddr::new(config.public_ip.unwrap_or(a.ip()), a.port()));
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..config.workers {
            let (tx, rx) = mpsc::channel(config.worker_queue);
            senders.push(tx);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            config: SfuConfig { udp_addr: announced, tcp_addr: tcp_announced, ..config },
            local_addr,
            socket,
            tcp_local,
            tcp: tcp::Connections::default(),
            demux: Demux::default(),
            workers: senders,
            peers: Mutex::new(HashMap::new()),
            tracks: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            bwe: (0..receivers.len()).map(|_| WorkerBwe::default()).collect(),
            next_worker: AtomicU64::new(0),
        });
        for (i, rx) in receivers.into_iter().enumerate() {
            let w = Worker::new(WorkerId(i), shared.clone());
            tokio::spawn(w.run(rx).instrument(tracing::info_span!("worker", id = i)));
        }
        tokio::spawn(udp_recv(shared.clone()));
        if let Some(listener) = tcp_listener {
            tokio::spawn(tcp_accept(shared.clone(), listener));
        }
        info!(udp = %local_addr, tcp = ?tcp_local, workers = shared.workers.len(), "sfu started");
        Ok(Sfu { shared })
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address the ICE-TCP listener is bound to, if there is one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.shared.tcp_local
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.shared.stats.snapshot();
        let mut min = u64::MAX;
        for w in &self.shared.bwe {
            s.bwe_peers += w.peers.load(Ordering::Relaxed);
            s.bwe_sum_bps += w.sum_bps.load(Ordering::Relaxed);
            min = min.min(w.min_bps.load(Ordering::Relaxed));
        }
        s.bwe_min_bps = if s.bwe_peers == 0 { 0 } else { min };
        s
    }

    /// A peer's latest send-side bandwidth estimate (bits per second) as its worker last published it (at most a
    /// second old), or `None` when the peer is unknown or gives no TWCC feedback.
    pub fn bandwidth_estimate(&self, peer: PeerId) -> Option<u64> {
        let worker = *self.shared.peers.lock().expect("peers lock").get(&peer)?;
        let list = self.shared.bwe[worker.0].per_peer.lock().expect("bwe lock");
        list.iter().find(|(p, _)| *p == peer).map(|(_, bps)| *bps)
    }

    /// Create a peer. Its events arrive on the returned receiver until [`PeerEvent::Closed`].
    pub async fn create_peer(
        &self,
        opts: PeerOptions,
    ) -> Result<(PeerId, mpsc::UnboundedReceiver<PeerEvent>), SfuError> {
        let id = PeerId::random();
        let n = self.shared.workers.len() as u64;
        let worker = WorkerId((self.shared.next_worker.fetch_add(1, Ordering::Relaxed) % n) as usize);
        let ice = IceCreds::new();
        let config = PeerConfig {
            can_publish: opts.can_publish,
            can_subscribe: opts.can_subscribe,
            udp_addr: self.shared.config.udp_addr,
            tcp_addr: self.shared.config.tcp_addr,
            keyframe_request_interval: self.shared.config.keyframe_request_interval,
            bwe_initial: self.shared.config.bwe_initial_kbps.map(|k| str0m::bwe::Bitrate::kbps(u64::from(k))),
            client_offers: opts.client_offers,
            relay: false,
        };
        let (config, socket) = if opts.relay {
            // A socket of its own on the engine's address: the edge answers it by its address, and the main socket's
            // demultiplexer never has to tell a relay's packets from a client's.
            let bind = SocketAddr::new(self.shared.local_addr.ip(), 0);
            let socket = UdpSocket::bind(bind).await.map_err(|e| SfuError::Bind(bind, e))?;
            let local = socket.local_addr().map_err(|e| SfuError::Bind(bind, e))?;
            let announced = SocketAddr::new(self.shared.config.udp_addr.ip(), local.port());
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let socket = Arc::new(socket);
            let route = Route { peer: id, worker };
            tokio::spawn(relay_recv(self.shared.clone(), socket.clone(), route, announced, stopped));
            let config = PeerConfig { udp_addr: announced, tcp_addr: None, bwe_initial: None, relay: true, ..config };
            (config, Some(PeerSocket { socket, _stop: stop }))
        } else {
            (config, None)
        };
        let peer = Peer::new(id, config, ice.clone(), Instant::now());
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.peers.lock().expect("peers lock").insert(id, worker);
        if socket.is_none() {
            self.shared.demux.insert_ufrag(ice.ufrag, Route { peer: id, worker });
        }
        self.shared.stats.peers.fetch_add(1, Ordering::Relaxed);
        self.send(worker, WorkerMsg::AddPeer { peer: Box::new(peer), events: tx, label: opts.label, socket }).await?;
        Ok((id, rx))
    }

    /// The client's offer.
    pub async fn offer(&self, peer: PeerId, id: u64, sdp: String) -> Result<(), SfuError> {
        self.to_peer(peer, WorkerMsg::Offer { peer, id, sdp }).await
    }

    /// The client's answer to our offer `id`.
    pub async fn answer(&self, peer: PeerId, id: u64, sdp: String) -> Result<(), SfuError> {
        self.to_peer(peer, WorkerMsg::Answer { peer, id, sdp }).await
    }

    /// A trickled candidate.
    pub async fn candidate(&self, peer: PeerId, candidate: String) -> Result<(), SfuError> {
        self.to_peer(peer, WorkerMsg::Candidate { peer, candidate }).await
    }

    /// Send `track` to `subscriber`.
    pub async fn subscribe(&self, subscriber: PeerId, track: TrackId) -> Result<(), SfuError> {
        let entry = self.track(track)?;
        let worker = self.worker_of(subscriber)?;
        self.send(entry.worker, WorkerMsg::AddRoute { track, to: worker }).await?;
        self.send(
            worker,
            WorkerMsg::AddDownTrack {
                peer: subscriber,
                track,
                kind: entry.kind,
                publisher: entry.publisher,
                priority: entry.priority,
            },
        )
        .await
    }

    /// Set how subscribers' allocators rank `track` (a screen share before cameras). Call it when the track is
    /// published, before anyone subscribes.
    pub fn set_track_priority(&self, track: TrackId, priority: Priority) -> Result<(), SfuError> {
        let mut tracks = self.shared.tracks.lock().expect("tracks lock");
        let entry = tracks.get_mut(&track).ok_or(SfuError::UnknownTrack(track))?;
        if entry.kind == MediaKind::Video {
            entry.priority = priority;
        }
        Ok(())
    }

    /// A relay's edge node needs `track` up to layer `demand` (`None`: nothing of it for now). `peer` is the
    /// relay's origin side, made with [`PeerOptions::relay`] and subscribed to `track`.
    pub async fn relay_demand(&self, peer: PeerId, track: TrackId, demand: Option<u8>) -> Result<(), SfuError> {
        self.to_peer(peer, WorkerMsg::RelayDemand { peer, track, demand }).await
    }

    /// Stop sending `track` to `subscriber`.
    pub async fn unsubscribe(&self, subscriber: PeerId, track: TrackId) -> Result<(), SfuError> {
        let worker = self.worker_of(subscriber)?;
        if let Ok(entry) = self.track(track) {
            self.send(entry.worker, WorkerMsg::RemoveRoute { track, to: worker }).await?;
        }
        self.send(worker, WorkerMsg::RemoveDownTrack { peer: subscriber, track }).await
    }

    /// How `subscriber` shows `track` (adaptive stream).
    pub async fn track_settings(
        &self,
        subscriber: PeerId,
        track: TrackId,
        settings: crate::downtrack::TrackSettings,
    ) -> Result<(), SfuError> {
        self.to_peer(subscriber, WorkerMsg::TrackSettings { peer: subscriber, track, settings }).await
    }

    /// Stop taking `track` from its publisher `peer` (e.g. its grant to publish was revoked). Its
    /// `TrackUnpublished` event follows, as for a track the client stopped; packets still sent are dropped.
    pub async fn unpublish(&self, peer: PeerId, track: TrackId) -> Result<(), SfuError> {
        self.to_peer(peer, WorkerMsg::Unpublish { peer, track }).await
    }

    /// Close a peer. Its `Closed` event follows; its tracks are unpublished.
    pub async fn close_peer(&self, peer: PeerId) -> Result<(), SfuError> {
        self.to_peer(peer, WorkerMsg::ClosePeer { peer }).await
    }

    /// Make the peer's state machine panic (tests of fault isolation only).
    #[cfg(any(test, feature = "fault-injection"))]
    pub async fn inject_panic(&self, peer: PeerId) -> Result<(), SfuError> {
        self.to_peer(peer, WorkerMsg::Panic { peer }).await
    }

    /// Close every peer and stop the workers.
    pub async fn shutdown(&self) {
        for w in &self.shared.workers {
            let _ = w.send(WorkerMsg::Shutdown).await;
        }
    }

    fn track(&self, track: TrackId) -> Result<TrackEntry, SfuError> {
        self.shared.tracks.lock().expect("tracks lock").get(&track).copied().ok_or(SfuError::UnknownTrack(track))
    }

    fn worker_of(&self, peer: PeerId) -> Result<WorkerId, SfuError> {
        self.shared.peers.lock().expect("peers lock").get(&peer).copied().ok_or(SfuError::UnknownPeer(peer))
    }

    async fn to_peer(&self, peer: PeerId, msg: WorkerMsg) -> Result<(), SfuError> {
        let w = self.worker_of(peer)?;
        self.send(w, msg).await
    }

    async fn send(&self, w: WorkerId, msg: WorkerMsg) -> Result<(), SfuError> {
        self.shared.workers[w.0].send(msg).await.map_err(|_| SfuError::Stopped)
    }
}

/// Receive datagrams, a batch at a time, and hand each to the worker owning its peer.
async fn udp_recv(shared: Arc<Shared>) {
    if let Err(e) = crate::udp_recv::enable_arrival_stamps(&shared.socket) {
        warn!(error = %e, "no kernel arrival stamps; arrivals are taken when read");
    }
    let mut batch = RecvBatch::new();
    loop {
        let n = match batch.recv(&shared.socket).await {
            Ok(n) => n,
            Err(e) => {
                // ICMP port unreachable surfaces here on some platforms; keep serving.
                debug!(error = %e, "udp recv error");
                continue;
            }
        };
        for i in 0..n {
            let Some(Received { source, data, arrival: at }) = batch.get(i) else { break };
            shared.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            shared.stats.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
            let Some(route) = shared.demux.route(source, data) else {
                shared.stats.datagrams_unrouted.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let dest = shared.config.udp_addr;
            let msg =
                WorkerMsg::Datagram { peer: route.peer, proto: Protocol::Udp, source, dest, at, data: data.to_vec() };
            if shared.workers[route.worker.0].try_send(msg).is_err() {
                shared.stats.forward_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A relay peer's own UDP socket ([`PeerOptions::relay`]) and the reader task's stop (dropped with the peer).
struct PeerSocket {
    socket: Arc<UdpSocket>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Receive a relay peer's datagrams and hand them to its worker, until the peer is gone.
async fn relay_recv(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    route: Route,
    announced: SocketAddr,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, source) = tokio::select! {
            _ = &mut stopped => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    debug!(error = %e, "relay udp recv error");
                    continue;
                }
            },
        };
        shared.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        shared.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let at = Instant::now();
        let data = buf[..n].to_vec();
        let msg = WorkerMsg::Datagram { peer: route.peer, proto: Protocol::Udp, source, dest: announced, at, data };
        if shared.workers[route.worker.0].try_send(msg).is_err() {
            shared.stats.forward_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Accept ICE-TCP connections; each gets a reader and a writer task.
async fn tcp_accept(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                debug!(error = %e, "ice-tcp accept error");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (queue, writes) = mpsc::channel(tcp::WRITE_QUEUE);
        if !shared.tcp.insert(remote, queue) {
            debug!(%remote, "too many ICE-TCP connections; closed");
            continue;
        }
        let (read, write) = stream.into_split();
        tokio::spawn(tcp_write(write, writes));
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(why) = tcp_read(&shared, read, remote).await {
                debug!(%remote, why, "ice-tcp connection closed");
            }
            // Dropping the queue's sender ends the writer.
            shared.tcp.remove(remote);
        });
    }
}

/// Read frames and hand them to the peer the first one names.
async fn tcp_read(shared: &Shared, mut read: tokio::net::tcp::OwnedReadHalf, remote: SocketAddr) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let mut framer = tcp::Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut route: Option<Route> = None;
    let dest = shared.config.tcp_addr.ok_or("no ICE-TCP address announced")?;
    loop {
        let n = if route.is_some() {
            read.read(&mut buf).await
        } else {
            tokio::time::timeout(tcp::FIRST_FRAME_TIMEOUT, read.read(&mut buf))
                .await
                .map_err(|_| "no ICE binding request in time".to_string())?
        }
        .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        framer.push(&buf[..n]);
        let at = Instant::now();
        while let Some(frame) = framer.next_frame().map_err(|e| e.to_string())? {
            shared.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            shared.stats.bytes_in.fetch_add(frame.len() as u64, Ordering::Relaxed);
            let r = match route {
                Some(r) => r,
                None => {
                    let r = shared.demux.route_ufrag(frame).ok_or("the first frame names no peer")?;
                    route = Some(r);
                    r
                }
            };
            let msg = WorkerMsg::Datagram {
                peer: r.peer,
                proto: Protocol::Tcp,
                source: remote,
                dest,
                at,
                data: frame.to_vec(),
            };
            if shared.workers[r.worker.0].try_send(msg).is_err() {
                shared.stats.forward_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Write queued frames, as many as are waiting in one write.
async fn tcp_write(mut write: tokio::net::tcp::OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::with_capacity(16 * 1024);
    while let Some(first) = queue.recv().await {
        out.clear();
        tcp::frame(&first, &mut out);
        while out.len() < 64 * 1024 {
            match queue.try_recv() {
                Ok(more) => tcp::frame(&more, &mut out),
                Err(_) => break,
            }
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

struct PeerSlot {
    peer: Box<Peer>,
    /// A relay peer's own socket (else the engine's).
    socket: Option<PeerSocket>,
    events: mpsc::UnboundedSender<PeerEvent>,
    span: tracing::Span,
    next_timeout: Instant,
    /// RTP packets (in, out) already added to the shared counters.
    rtp_counted: (u64, u64),
}

struct Worker {
    id: WorkerId,
    shared: Arc<Shared>,
    peers: HashMap<PeerId, PeerSlot>,
    /// Where packets of tracks go: this worker's published tracks → destination workers (with subscriber counts),
    /// and track → local subscribing peers.
    router: Router,
    /// Media to send to other workers at the end of this cycle.
    outbox: Vec<Vec<Arc<ForwardPacket>>>,
    /// Keyframe requests for publishers on this worker, applied after the current drain (not inside it).
    keyframe_requests: Vec<(TrackId, KeyframeRequestKind, u8)>,
    /// Subscribers' layer demands (track, subscriber, demand) for publishers on this worker, likewise.
    layer_demands: Vec<(TrackId, PeerId, Option<u8>)>,
    /// Subscribers' audio loss (track, subscriber, loss) for publishers on this worker, likewise.
    subscriber_losses: Vec<(TrackId, PeerId, f32)>,
    /// When RTP counts and the bandwidth summary were last published.
    stats_at: Instant,
    /// A peer left: publish at the end of this cycle (an idle worker may not run another for a long time).
    stats_due: bool,
    /// Datagrams for the shared socket, sent when full and at the end of every cycle ([`crate::udp_send`]).
    sends: SendBatch,
    /// Forwarding delays measured since they were last added to the shared histogram.
    delays: DelayBuckets,
}

impl Worker {
    fn new(id: WorkerId, shared: Arc<Shared>) -> Self {
        let n = shared.workers.len();
        let gso = shared.config.udp_gso;
        Worker {
            id,
            shared,
            peers: HashMap::new(),
            router: Router::new(),
            outbox: vec![Vec::new(); n],
            keyframe_requests: Vec::new(),
            layer_demands: Vec::new(),
            subscriber_losses: Vec::new(),
            stats_at: Instant::now(),
            stats_due: false,
            sends: SendBatch::with_gso(gso),
            delays: DelayBuckets::default(),
        }
    }

    /// Sends the batched datagrams now.
    fn flush_sends(&mut self) {
        let f = self.sends.flush(&self.shared.socket, &mut self.delays);
        let stats = &self.shared.stats;
        if f.sent > 0 {
            stats.datagrams_out.fetch_add(f.sent, Ordering::Relaxed);
            stats.bytes_out.fetch_add(f.bytes, Ordering::Relaxed);
        }
        if f.dropped > 0 {
            stats.forward_drops.fetch_add(f.dropped, Ordering::Relaxed);
        }
    }

    /// Add a peer's RTP packets since the last call to the shared counters.
    fn count_rtp(shared: &Shared, slot: &mut PeerSlot) {
        let (rtp_in, rtp_out) = slot.peer.rtp_counts();
        shared.stats.rtp_in.fetch_add(rtp_in.saturating_sub(slot.rtp_counted.0), Ordering::Relaxed);
        shared.stats.rtp_out.fetch_add(rtp_out.saturating_sub(slot.rtp_counted.1), Ordering::Relaxed);
        slot.rtp_counted = (rtp_in, rtp_out);
    }

    /// Publish RTP counts and this worker's bandwidth summary, at most every [`STATS_PERIOD`].
    fn publish_stats(&mut self, now: Instant) {
        if !self.stats_due && now.saturating_duration_since(self.stats_at) < STATS_PERIOD {
            return;
        }
        self.stats_at = now;
        self.stats_due = false;
        let delays = std::mem::take(&mut self.delays);
        for (shared, n) in self.shared.stats.forward_delay.iter().zip(delays.counts) {
            if n > 0 {
                shared.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.shared.stats.forward_delay_sum_us.fetch_add(delays.sum_us, Ordering::Relaxed);
        let (mut peers, mut sum, mut min) = (0u64, 0u64, u64::MAX);
        let mut per_peer = Vec::new();
        for (id, slot) in self.peers.iter_mut() {
            Self::count_rtp(&self.shared, slot);
            if let Some(bps) = slot.peer.bandwidth_estimate() {
                peers += 1;
                sum = sum.saturating_add(bps);
                min = min.min(bps);
                per_peer.push((*id, bps));
            }
        }
        let w = &self.shared.bwe[self.id.0];
        w.peers.store(peers, Ordering::Relaxed);
        w.sum_bps.store(sum, Ordering::Relaxed);
        w.min_bps.store(min, Ordering::Relaxed);
        *w.per_peer.lock().expect("bwe lock") = per_peer;
    }

    async fn run(mut self, mut rx: mpsc::Receiver<WorkerMsg>) {
        loop {
            let deadline = self.peers.values().map(|p| p.next_timeout).min();
            let msg = match deadline {
                Some(d) => {
                    tokio::select! {
                        m = rx.recv() => m,
                        _ = tokio::time::sleep_until(d.into()) => Some(WorkerMsg::Tick),
                    }
                }
                None => rx.recv().await,
            };
            let Some(msg) = msg else { return };
            if !self.handle(msg) {
                self.flush_sends();
                return;
            }
            // Take whatever else is queued, bounded so timers are not starved.
            for _ in 0..self.shared.config.worker_batch {
                match rx.try_recv() {
                    Ok(m) => {
                        if !self.handle(m) {
                            self.flush_sends();
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            // Timers that are due, again while a timeout makes another one due at once (str0m's pacer releases a
            // packet in one timeout and sends it in the next): a sleep, even to a past instant, costs a timer tick.
            for _ in 0..TIMER_ROUNDS {
                let now = Instant::now();
                let due: Vec<PeerId> =
                    self.peers.iter().filter(|(_, p)| p.next_timeout <= now).map(|(id, _)| *id).collect();
                if due.is_empty() {
                    break;
                }
                for id in due {
                    self.with_peer(id, |p| p.handle_timeout(now));
                }
            }
            self.apply_keyframe_requests();
            self.apply_layer_demands();
            self.apply_subscriber_losses();
            self.flush_outbox();
            self.flush_sends();
            self.publish_stats(Instant::now());
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, msg: WorkerMsg) -> bool {
        match msg {
            WorkerMsg::AddPeer { peer, events, label, socket } => {
                let id = peer.id();
                let span = tracing::info_span!("peer", peer = %id, who = %label);
                let slot = PeerSlot { peer, socket, events, span, next_timeout: Instant::now(), rtp_counted: (0, 0) };
                self.peers.insert(id, slot);
                self.drain(id);
            }
            WorkerMsg::RelayDemand { peer, track, demand } => {
                self.with_peer(peer, |p| p.set_relay_demand(track, demand))
            }
            WorkerMsg::Datagram { peer, proto, source, dest, at, data } => {
                self.with_peer(peer, |p| p.handle_receive(at, proto, source, dest, &data))
            }
            WorkerMsg::Offer { peer, id, sdp } => self.with_peer(peer, |p| p.handle_offer(Instant::now(), id, &sdp)),
            WorkerMsg::Answer { peer, id, sdp } => {
                self.with_peer(peer, |p| {
                    if let Err(e) = p.handle_answer(Instant::now(), id, &sdp) {
                        debug!(error = %e, "answer rejected");
                    }
                });
            }
            WorkerMsg::Candidate { peer, candidate } => {
                self.with_peer(peer, |p| {
                    if let Err(e) = p.handle_candidate(&candidate) {
                        debug!(error = %e, "candidate rejected");
                    }
                });
            }
            WorkerMsg::AddDownTrack { peer, track, kind, publisher, priority } => {
                if self.peers.contains_key(&peer) {
                    if self.router.subscribe(track, peer) {
                        self.shared.stats.downtracks.fetch_add(1, Ordering::Relaxed);
                    }
                    self.with_peer(peer, |p| {
                        p.add_downtrack(track, kind, publisher);
                        p.set_track_priority(track, priority);
                    });
                }
            }
            WorkerMsg::RemoveDownTrack { peer, track } => {
                self.remove_local_sub(track, peer);
                self.with_peer(peer, |p| p.remove_downtrack(track));
            }
            WorkerMsg::AddRoute { track, to } => self.router.add_route(track, to),
            WorkerMsg::RemoveRoute { track, to } => {
                self.router.remove_route(track, to);
            }
            WorkerMsg::Media(batch) => {
                for pkt in &batch {
                    self.deliver_local(pkt);
                }
            }
            WorkerMsg::KeyframeRequest { track, kind, layer } => self.keyframe_requests.push((track, kind, layer)),
            WorkerMsg::LayerDemand { track, subscriber, demand } => {
                self.layer_demands.push((track, subscriber, demand))
            }
            WorkerMsg::SubscriberLoss { track, subscriber, loss } => {
                self.subscriber_losses.push((track, subscriber, loss))
            }
            WorkerMsg::ClosePeer { peer } => self.with_peer(peer, |p| p.close(CloseReason::Requested)),
            WorkerMsg::Unpublish { peer, track } => self.with_peer(peer, |p| p.stop_publishing(track)),
            WorkerMsg::TrackSettings { peer, track, settings } => {
                self.with_peer(peer, |p| p.set_track_settings(track, settings))
            }
            #[cfg(any(test, feature = "fault-injection"))]
            WorkerMsg::Panic { peer } => self.with_peer(peer, |_| panic!("injected fault")),
            WorkerMsg::Tick => {}
            WorkerMsg::Shutdown => {
                let ids: Vec<PeerId> = self.peers.keys().copied().collect();
                for id in ids {
                    self.with_peer(id, |p| p.close(CloseReason::Requested));
                }
                return false;
            }
        }
        true
    }

    /// Run `f` on a peer, catching a panic (a fault closes that peer only), then drain it at once.
    ///
    /// Draining right after every input is not an optimisation but str0m's contract: in RTP mode an `Rtc` holds a
    /// single received packet until the next `poll_output`, so a second `handle_input` before the drain would
    /// overwrite (lose) the first.
    fn with_peer(&mut self, id: PeerId, f: impl FnOnce(&mut Peer)) {
        let Some(slot) = self.peers.get_mut(&id) else { return };
        let _g = slot.span.enter();
        let r = catch_unwind(AssertUnwindSafe(|| f(&mut slot.peer)));
        drop(_g);
        match r {
            Ok(()) => self.drain(id),
            Err(_) => self.fault(id),
        }
    }

    fn fault(&mut self, id: PeerId) {
        warn!(peer = %id, "peer state machine panicked; closing this peer only");
        self.shared.stats.peer_faults.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = self.peers.get(&id) else { return };
        let tracks: Vec<TrackId> = slot.peer.published_tracks().collect();
        let events = slot.events.clone();
        // Gone from the engine (routes, demux, counts) before anyone hears it closed.
        self.remove_peer(id);
        for t in tracks {
            let _ = events.send(PeerEvent::TrackUnpublished { track: t });
        }
        let _ = events.send(PeerEvent::Closed { reason: CloseReason::Fault });
    }

    fn remove_peer(&mut self, id: PeerId) {
        let Some(mut slot) = self.peers.remove(&id) else { return };
        Self::count_rtp(&self.shared, &mut slot);
        self.stats_due = true;
        self.shared.demux.remove_peer(id);
        self.shared.peers.lock().expect("peers lock").remove(&id);
        self.shared.stats.peers.fetch_sub(1, Ordering::Relaxed);
        // Its published tracks.
        let published: Vec<TrackId> = slot.peer.published_tracks().collect();
        for t in published {
            self.unregister_track(t);
        }
        // Its subscriptions.
        for t in self.router.forget_peer(id) {
            self.shared.stats.downtracks.fetch_sub(1, Ordering::Relaxed);
            if let Ok(entry) = self.shared.tracks.lock().expect("tracks lock").get(&t).copied().ok_or(()) {
                let _ = self.shared.workers[entry.worker.0].try_send(WorkerMsg::RemoveRoute { track: t, to: self.id });
            }
            self.send_layer_demand(t, id, None);
        }
    }

    fn remove_local_sub(&mut self, track: TrackId, peer: PeerId) {
        if self.router.unsubscribe(track, peer) {
            self.shared.stats.downtracks.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn unregister_track(&mut self, track: TrackId) {
        if self.shared.tracks.lock().expect("tracks lock").remove(&track).is_some() {
            self.shared.stats.tracks.fetch_sub(1, Ordering::Relaxed);
        }
        self.router.forget_track(track);
    }

    fn deliver_local(&mut self, pkt: &Arc<ForwardPacket>) {
        // By index rather than over a copy of the list: no allocation per packet. A subscriber removed meanwhile
        // (a fault inside `with_peer`) can at worst make this one packet skip another subscriber.
        let mut i = 0;
        while let Some(&s) = self.router.local_subscribers(pkt.track).get(i) {
            self.forward_to(s, pkt);
            i += 1;
        }
    }

    /// One packet into one subscriber, not drained now: `write_rtp` only queues, and whatever it produced (the
    /// transmit, a keyframe wish) comes out in this cycle's timer pass, which drains every peer due. So a subscriber
    /// that gets a frame's packets in one cycle is polled once for all of them, not once per packet — str0m's
    /// `poll_output` walks every subsystem (ICE, DTLS, SCTP, streams), the largest cost of a fan-out.
    fn forward_to(&mut self, id: PeerId, pkt: &ForwardPacket) {
        let Some(slot) = self.peers.get_mut(&id) else { return };
        let _g = slot.span.enter();
        let r = catch_unwind(AssertUnwindSafe(|| slot.peer.handle_forward(pkt)));
        drop(_g);
        match r {
            Ok(()) => slot.next_timeout = slot.next_timeout.min(pkt.arrival),
            Err(_) => self.fault(id),
        }
    }

    fn apply_keyframe_requests(&mut self) {
        for (track, kind, layer) in std::mem::take(&mut self.keyframe_requests) {
            let publisher = self.shared.tracks.lock().expect("tracks lock").get(&track).map(|e| e.publisher);
            if let Some(p) = publisher {
                self.with_peer(p, |peer| peer.handle_keyframe_request(Instant::now(), track, kind, layer));
            }
        }
    }

    fn apply_layer_demands(&mut self) {
        for (track, subscriber, demand) in std::mem::take(&mut self.layer_demands) {
            let publisher = self.shared.tracks.lock().expect("tracks lock").get(&track).map(|e| e.publisher);
            if let Some(p) = publisher {
                self.with_peer(p, |peer| peer.handle_layer_demand(Instant::now(), track, subscriber, demand));
            }
        }
    }

    fn apply_subscriber_losses(&mut self) {
        for (track, subscriber, loss) in std::mem::take(&mut self.subscriber_losses) {
            let publisher = self.shared.tracks.lock().expect("tracks lock").get(&track).map(|e| e.publisher);
            if let Some(p) = publisher {
                self.with_peer(p, |peer| peer.handle_subscriber_loss(Instant::now(), track, subscriber, loss));
            }
        }
    }

    /// Route a subscriber's layer demand to the worker of the track's publisher.
    fn send_layer_demand(&mut self, track: TrackId, subscriber: PeerId, demand: Option<u8>) {
        self.route_to_publisher(track, WorkerMsg::LayerDemand { track, subscriber, demand });
    }

    /// A message for the publisher of `track`: queued here for after the current drain when the publisher is on
    /// this worker (never applied inside another peer's drain), else sent to its worker without waiting.
    fn route_to_publisher(&mut self, track: TrackId, msg: WorkerMsg) {
        let entry = self.shared.tracks.lock().expect("tracks lock").get(&track).copied();
        let Some(e) = entry else { return };
        if e.worker != self.id {
            let _ = self.shared.workers[e.worker.0].try_send(msg);
            return;
        }
        match msg {
            WorkerMsg::KeyframeRequest { track, kind, layer } => self.keyframe_requests.push((track, kind, layer)),
            WorkerMsg::LayerDemand { track, subscriber, demand } => {
                self.layer_demands.push((track, subscriber, demand))
            }
            WorkerMsg::SubscriberLoss { track, subscriber, loss } => {
                self.subscriber_losses.push((track, subscriber, loss))
            }
            _ => debug_assert!(false, "only requests for a publisher are routed to it"),
        }
    }

    /// The drain rule: poll the peer until its timeout.
    fn drain(&mut self, id: PeerId) {
        // Bound the work per peer per cycle so one busy peer cannot starve the others.
        for _ in 0..10_000 {
            let Some(slot) = self.peers.get_mut(&id) else { return };
            let _g = slot.span.enter();
            let out = match catch_unwind(AssertUnwindSafe(|| slot.peer.poll_output())) {
                Ok(o) => o,
                Err(_) => {
                    drop(_g);
                    self.fault(id);
                    return;
                }
            };
            drop(_g);
            match out {
                PeerOutput::Timeout(t) => {
                    let closed = slot.peer.is_closed();
                    slot.next_timeout = t;
                    if closed {
                        self.remove_peer(id);
                    }
                    return;
                }
                PeerOutput::Transmit(t) if t.proto == Protocol::Udp => {
                    let arrival = slot.peer.arrival_of_sent(&t.contents);
                    match slot.socket.as_ref() {
                        // A relay peer's own socket: sent at once (a few datagrams; not worth a batch of its own).
                        Some(s) => match s.socket.try_send_to(&t.contents, t.destination) {
                            Ok(n) => {
                                self.shared.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
                                self.shared.stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                                if let Some(a) = arrival {
                                    self.delays.record(Instant::now().saturating_duration_since(a));
                                }
                            }
                            Err(_) => {
                                self.shared.stats.forward_drops.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        None => {
                            if self.sends.push(t.destination, Vec::from(t.contents), arrival) {
                                self.flush_sends();
                            }
                        }
                    }
                }
                PeerOutput::Transmit(t) => {
                    let n = t.contents.len() as u64;
                    let arrival = slot.peer.arrival_of_sent(&t.contents);
                    if self.shared.tcp.send(t.destination, Vec::from(t.contents)) {
                        // Timed to the hand-off to the connection's writer task.
                        if let Some(a) = arrival {
                            self.delays.record(Instant::now().saturating_duration_since(a));
                        }
                        self.shared.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
                        self.shared.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
                    } else {
                        // No connection from there (a remote candidate we cannot reach over TCP), or its queue
                        // is full: dropped, as a full socket buffer would.
                        self.shared.stats.forward_drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
                PeerOutput::Forward(pkt) => self.route(pkt),
                PeerOutput::LayerDemand { track, demand } => self.send_layer_demand(track, id, demand),
                PeerOutput::SubscriberLoss { track, loss } => {
                    self.route_to_publisher(track, WorkerMsg::SubscriberLoss { track, subscriber: id, loss })
                }
                PeerOutput::KeyframeRequest { track, kind, layer } => {
                    self.route_to_publisher(track, WorkerMsg::KeyframeRequest { track, kind, layer })
                }
                PeerOutput::Event(ev) => {
                    match &ev {
                        PeerEvent::TrackPublished { track, kind, .. } => {
                            let priority = match kind {
                                MediaKind::Audio => Priority::Audio,
                                MediaKind::Video => Priority::Camera,
                            };
                            let entry = TrackEntry { publisher: id, worker: self.id, kind: *kind, priority };
                            self.shared.tracks.lock().expect("tracks lock").insert(*track, entry);
                            self.shared.stats.tracks.fetch_add(1, Ordering::Relaxed);
                        }
                        PeerEvent::TrackUnpublished { track } => self.unregister_track(*track),
                        _ => {}
                    }
                    if let Some(slot) = self.peers.get(&id) {
                        let _ = slot.events.send(ev);
                    }
                }
            }
        }
        // Still busy: come back next cycle.
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.next_timeout = Instant::now();
        }
    }

    /// Fan a published packet out: local subscribers now, other workers in this cycle's batch.
    fn route(&mut self, pkt: Arc<ForwardPacket>) {
        let mut local = false;
        for w in self.router.workers(pkt.track) {
            if w == self.id {
                local = true;
            } else {
                self.outbox[w.0].push(pkt.clone());
            }
        }
        if local {
            self.deliver_local(&pkt);
        }
    }

    fn flush_outbox(&mut self) {
        for (w, batch) in self.outbox.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let b = std::mem::take(batch);
            if self.shared.workers[w].try_send(WorkerMsg::Media(b)).is_err() {
                self.shared.stats.forward_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        debug!("sfu shared state dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next_event(rx: &mut mpsc::UnboundedReceiver<PeerEvent>) -> Option<PeerEvent> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event within 5 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_peer_is_closed_alone() {
        let sfu = Sfu::start(SfuConfig { workers: 2, ..SfuConfig::default() }).await.unwrap();
        let opts = PeerOptions {
            can_publish: true,
            can_subscribe: true,
            label: "t".into(),
            client_offers: false,
            relay: false,
        };
        let (a, mut a_ev) = sfu.create_peer(opts.clone()).await.unwrap();
        let (b, mut b_ev) = sfu.create_peer(opts.clone()).await.unwrap();
        assert_eq!(sfu.stats().peers, 2);

        sfu.inject_panic(a).await.unwrap();
        assert_eq!(next_event(&mut a_ev).await, Some(PeerEvent::Closed { reason: CloseReason::Fault }));
        // The engine goes on: the other peer still answers, and new peers can be created.
        sfu.offer(b, 1, "not sdp".into()).await.unwrap();
        assert!(matches!(next_event(&mut b_ev).await, Some(PeerEvent::OfferRejected { id: 1, .. })));
        let (_c, _c_ev) = sfu.create_peer(opts).await.unwrap();
        assert_eq!(sfu.stats().peer_faults, 1);
        assert_eq!(sfu.stats().peers, 2, "a is gone, b and c remain");
        assert!(matches!(sfu.offer(a, 2, String::new()).await, Err(SfuError::UnknownPeer(_))));

        sfu.close_peer(b).await.unwrap();
        assert_eq!(next_event(&mut b_ev).await, Some(PeerEvent::Closed { reason: CloseReason::Requested }));
    }
}
