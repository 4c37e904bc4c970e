//! The built-in TURN server's async shell: sockets, tasks and timers around `courier_turn::Server`.
//!
//! One driver task owns the state machine. Everything that arrives — datagrams on the UDP listener, frames cut
//! from each TCP/TLS connection (one task per connection), datagrams on each relay socket (one reader task per
//! relay) — reaches it over one bounded channel; it feeds the state machine, drains its outputs and sleeps until
//! its next timeout. Sends never wait: UDP with `try_send_to`, a connection through its bounded queue (full: the
//! packet is dropped, as a congested UDP path would). Relay sockets bind ports of `turn.relay_port_min..=max`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_turn::{Config, FiveTuple, MediaAddr, Output, PeerPolicy, RelayId, Server, Stats, Transport};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::TurnConfig;

/// Events queued for the driver at most; readers wait (and the kernel drops datagrams) beyond.
const EVENT_QUEUE: usize = 4096;
/// Frames queued towards one TCP/TLS client; more are dropped.
const CONN_QUEUE: usize = 256;
/// A TCP/TLS connection that sends nothing for this long is closed (a live TURN client sends ICE consent checks
/// every few seconds and refreshes its allocation well within 10 minutes).
const CONN_IDLE: Duration = Duration::from_secs(300);
/// Random ports of the relay range tried before an Allocate fails with 508.
const BIND_ATTEMPTS: usize = 64;
/// Largest datagram read from a socket.
const MAX_DATAGRAM: usize = 65536;

enum Event {
    Client { five: FiveTuple, data: Vec<u8> },
    Peer { relay: RelayId, from: SocketAddr, data: Vec<u8> },
    Connected { five: FiveTuple, tx: mpsc::Sender<Vec<u8>> },
    Closed { five: FiveTuple },
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnStats {
    pub allocations: usize,
    pub core: Stats,
    /// TCP/TLS connections refused at `max_connections`.
    pub connections_refused: u64,
}

/// The running built-in TURN server.
pub struct TurnShell {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    stop: CancellationToken,
    tracker: TaskTracker,
    stats: Arc<Mutex<TurnStats>>,
}

/// The SFU's media address as the relay policy needs it: what it announces and where this host reaches it.
pub fn media_addr(media: SocketAddr, public_ip: Option<IpAddr>) -> MediaAddr {
    let local_ip = match media.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    MediaAddr {
        announced: SocketAddr::new(public_ip.unwrap_or(local_ip), media.port()),
        local: SocketAddr::new(local_ip, media.port()),
    }
}

/// The UDP socket and the TCP listener of one TURN address, on the same port. With port 0 the UDP socket's ephemeral
/// port may be taken over TCP: then another is tried (a few times), rather than failing a start that asked for any.
async fn bind_pair(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    use anyhow::Context;
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(addr).await.with_context(|| format!("binding TURN UDP {addr}"))?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse && tries < 20 => tries += 1,
            Err(e) => return Err(e).with_context(|| format!("binding TURN TCP {bound}")),
        }
    }
}

impl TurnShell {
    /// Binds the listeners and starts the driver. `media` is the SFU's bound UDP address.
    pub async fn start(
        config: &TurnConfig,
        secret: &[u8],
        addr: SocketAddr,
        tls: Option<(SocketAddr, Arc<crate::tls::CertFiles>)>,
        media: SocketAddr,
        public_ip: Option<IpAddr>,
    ) -> anyhow::Result<TurnShell> {
        use anyhow::Context;
        let (udp, tcp) = bind_pair(addr).await?;
        let udp = Arc::new(udp);
        let addr = udp.local_addr()?;
        let tls = match tls {
            Some((a, files)) => {
                let l = TcpListener::bind(a).await.with_context(|| format!("binding TURN TLS {a}"))?;
                let bound = l.local_addr()?;
                Some((crate::tls::TlsListener::new(l, files.server_config_alpn(Vec::new())), bound))
            }
            None => None,
        };
        let tls_addr = tls.as_ref().map(|(_, a)| *a);
        let policy =
            PeerPolicy { media: vec![media_addr(media, public_ip)], allowed_peers: config.allowed_peers.clone() };
        let mut core_config = Config::new(config.realm.clone(), secret.to_vec(), policy);
        core_config.max_allocations = config.max_allocations;
        core_config.max_allocations_per_identity = config.max_allocations_per_identity;
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let core = Server::new(core_config, Instant::now(), unix);
        // The relayed address clients are told: the public IP, else the listener's IP, else the SFU's.
        let relay_ip = addr.ip();
        let announced_ip = public_ip
            .or(Some(relay_ip).filter(|ip| !ip.is_unspecified()))
            .unwrap_or(media_addr(media, None).local.ip());

        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let stats = Arc::new(Mutex::new(TurnStats::default()));
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let driver = Driver {
            core,
            udp: udp.clone(),
            conns: HashMap::new(),
            relays: HashMap::new(),
            relay_ip,
            announced_ip,
            relay_ports: config.relay_ports.clone(),
            events: events.clone(),
            stop: stop.clone(),
            tracker: tracker.clone(),
            stats: stats.clone(),
        };
        tracker.spawn(driver.run(rx));
        tracker.spawn(udp_reader(udp, addr, events.clone(), stop.clone()));
        let acceptor = Acceptor {
            events,
            conns: Arc::new(Semaphore::new(config.max_connections)),
            stop: stop.clone(),
            tracker: tracker.clone(),
            stats: stats.clone(),
        };
        // Frames go out as soon as they are written (no Nagle delay on relayed media).
        let tcp = axum::serve::ListenerExt::tap_io(tcp, |s| {
            let _ = s.set_nodelay(true);
        });
        tracker.spawn(acceptor.clone().run(tcp, Transport::Tcp, addr));
        if let Some((listener, bound)) = tls {
            tracker.spawn(acceptor.run(listener, Transport::Tls, bound));
        }
        info!(udp_tcp = %addr, tls = ?tls_addr, "TURN server listening");
        Ok(TurnShell { addr, tls_addr, stop, tracker, stats })
    }

    /// The UDP and TCP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listener's address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn stats(&self) -> TurnStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every listener, connection and relay, and waits (briefly) for their tasks.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await.is_err() {
            warn!("TURN tasks still running after 2 s");
        }
    }
}

struct Relay {
    socket: Arc<UdpSocket>,
    stop: CancellationToken,
}

struct Driver {
    core: Server,
    udp: Arc<UdpSocket>,
    conns: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    relays: HashMap<RelayId, Relay>,
    relay_ip: IpAddr,
    announced_ip: IpAddr,
    relay_ports: std::ops::RangeInclusive<u16>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
    tracker: TaskTracker,
    stats: Arc<Mutex<TurnStats>>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        loop {
            let deadline = self.core.poll_timeout();
            tokio::select! {
                _ = self.stop.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => self.core.handle_timeout(Instant::now()),
            }
            self.drain();
        }
        for (_, r) in self.relays.drain() {
            r.stop.cancel();
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Client { five, data } => self.core.handle_client(now, five, &data),
            Event::Peer { relay, from, data } => self.core.handle_peer(now, relay, from, &data),
            Event::Connected { five, tx } => {
                self.conns.insert(five, tx);
            }
            Event::Closed { five } => {
                self.conns.remove(&five);
                self.core.handle_client_closed(five);
            }
        }
    }

    /// Carries out every output; sends never wait.
    fn drain(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::ToClient { to, data } => match to.transport {
                    Transport::Udp => {
                        let _ = self.udp.try_send_to(&data, to.client);
                    }
                    Transport::Tcp | Transport::Tls => {
                        if let Some(tx) = self.conns.get(&to) {
                            let _ = tx.try_send(data);
                        }
                    }
                },
                Output::ToPeer { relay, peer, data } => {
                    if let Some(r) = self.relays.get(&relay) {
                        let _ = r.socket.try_send_to(&data, peer);
                    }
                }
                Output::OpenRelay { relay, .. } => {
                    let opened = self.open_relay(relay);
                    self.core.handle_relay_opened(Instant::now(), relay, opened);
                }
                Output::CloseRelay { relay } => {
                    if let Some(r) = self.relays.remove(&relay) {
                        r.stop.cancel();
                    }
                }
            }
        }
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        s.allocations = self.core.allocation_count();
        s.core = self.core.stats();
    }

    /// Binds a relay socket on a random free port of the range and starts its reader; the address to announce.
    fn open_relay(&mut self, relay: RelayId) -> Option<SocketAddr> {
        let (lo, hi) = (*self.relay_ports.start(), *self.relay_ports.end());
        let mut rng = rand::thread_rng();
        for _ in 0..BIND_ATTEMPTS {
            let port = rng.gen_range(lo..=hi);
            let Ok(std_socket) = std::net::UdpSocket::bind(SocketAddr::new(self.relay_ip, port)) else { continue };
            if std_socket.set_nonblocking(true).is_err() {
                continue;
            }
            let Ok(socket) = UdpSocket::from_std(std_socket) else { continue };
            let socket = Arc::new(socket);
            let stop = self.stop.child_token();
            self.tracker.spawn(relay_reader(relay, socket.clone(), self.events.clone(), stop.clone()));
            self.relays.insert(relay, Relay { socket, stop });
            return Some(SocketAddr::new(self.announced_ip, port));
        }
        warn!(ports = ?self.relay_ports, "no free relay port");
        None
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn udp_reader(udp: Arc<UdpSocket>, local: SocketAddr, events: mpsc::Sender<Event>, stop: CancellationToken) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = udp.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on some systems; the socket is still good.
                Err(e) => { debug!(error = %e, "TURN UDP receive"); continue; }
            },
        };
        let five = FiveTuple { transport: Transport::Udp, client: from, server: local };
        if events.send(Event::Client { five, data: buf[..n].to_vec() }).await.is_err() {
            return;
        }
    }
}

async fn relay_reader(relay: RelayId, socket: Arc<UdpSocket>, events: mpsc::Sender<Event>, stop: CancellationToken) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        if events.send(Event::Peer { relay, from, data: buf[..n].to_vec() }).await.is_err() {
            return;
        }
    }
}

/// What the TCP and TLS accept loops share.
#[derive(Clone)]
struct Acceptor {
    events: mpsc::Sender<Event>,
    /// One permit per open connection (`max_connections`).
    conns: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
    stats: Arc<Mutex<TurnStats>>,
}

impl Acceptor {
    /// Accepts connections (TCP, or TLS with the handshake done by the listener) until stopped; each is served in a
    /// task of its own, or closed at once when `max_connections` are open.
    async fn run<L>(self, mut listener: L, transport: Transport, local: SocketAddr)
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        loop {
            // Both listeners back off on accept errors by themselves.
            let (stream, from) = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = listener.accept() => r,
            };
            let Ok(permit) = self.conns.clone().try_acquire_owned() else {
                self.stats.lock().unwrap_or_else(|p| p.into_inner()).connections_refused += 1;
                continue;
            };
            let five = FiveTuple { transport, client: from, server: local };
            let (events, stop) = (self.events.clone(), self.stop.clone());
            self.tracker.spawn(async move {
                serve_stream(stream, five, events, stop).await;
                drop(permit);
            });
        }
    }
}

/// One TCP or TLS connection: frames in (STUN messages and padded ChannelData, RFC 8656 §12.5), frames out.
async fn serve_stream<S>(stream: S, five: FiveTuple, events: mpsc::Sender<Event>, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut out) = mpsc::channel::<Vec<u8>>(CONN_QUEUE);
    if events.send(Event::Connected { five, tx }).await.is_err() {
        return;
    }
    let write = async move {
        while let Some(frame) = out.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    let events_in = events.clone();
    let read = async move {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            // Every complete frame in the buffer goes to the driver.
            loop {
                let n = match courier_turn::stun::frame_len(&buf) {
                    Ok(Some(n)) if buf.len() >= n => n,
                    Ok(_) => break,
                    Err(_) => {
                        debug!(client = %five.client, "not TURN framing; connection closed");
                        return;
                    }
                };
                let frame: Vec<u8> = buf.drain(..n).collect();
                if events_in.send(Event::Client { five, data: frame }).await.is_err() {
                    return;
                }
            }
            match tokio::time::timeout(CONN_IDLE, reader.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = read => {}
        _ = write => {}
    }
    let _ = events.send(Event::Closed { five }).await;
}
