//! A TCP impairment relay: the signaling WebSocket's counterpart of the UDP [`crate::relay`], between one client
//! and the server, impairing each direction on a schedule.
//!
//! A participant's media and its signaling take different paths, and either can be bad on its own: a proxy or a
//! congested uplink delays the WebSocket, a Wi-Fi handover stalls it for seconds while RTP over ICE recovers at
//! once. The UDP relay cannot show what the server and the client do then (does media keep flowing while
//! negotiation, chat and room events wait? does anyone time out?), so this relay puts the same emulator, [`Link`]
//! in stream mode ([`Link::new_stream`]), on the TCP path: it listens on `127.0.0.1:0`, opens one connection to
//! the server for each connection it accepts, and moves the bytes of each direction through one [`Link`], each
//! chunk read from a socket counting as one of its datagrams. The client connects to the relay instead of the
//! server ([`TcpRelay::url_via`] rewrites a `ws://` URL).
//!
//! # What a byte stream can and cannot suffer
//!
//! TCP delivers every byte once and in order, so the relay must never drop, reorder, duplicate or corrupt one: TCP
//! below would have repaired that damage, and the application would only have seen it arrive late. Of an
//! [`Impairment`] the relay therefore applies:
//!
//! - the rate cap, with its queue, but instead of dropping at the tail of a full queue it stops reading from the
//!   sender (backpressure) until there is room again: the sender's socket buffers fill and its writes block, as
//!   behind a real bottleneck;
//! - the delay and the jitter (which never reorders);
//! - an outage ([`Impairment::outage`]): nothing is delivered while it lasts; what was sent meanwhile is held (up
//!   to [`crate::relay::STREAM_WINDOW`] per direction, then the relay stops reading) and delivered, intact and in
//!   order, when it ends. The UDP relay drops instead;
//! - loss (random or burst) only as what TCP makes of it, a delay: a chunk that loss hits arrives one
//!   retransmission timeout late ([`Impairment::retransmission_timeout`], at least 200 ms and at least a round
//!   trip), and everything behind it waits for it (head-of-line blocking). This is a simple model: a real sender
//!   often recovers faster (fast retransmit after three duplicate acknowledgements) when more data follows, and
//!   slower (exponential backoff) when a retransmission is lost too, and its congestion window shrinks;
//! - reordering and duplication not at all.
//!
//! Schedules count from the relay's start, as the UDP relay's do, so that both relays of a participant started
//! together share one time line.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(server_http: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use media_tests::relay::{Impairment, Schedule};
//! use media_tests::tcp_relay::{TcpRelay, TcpRelayConfig};
//!
//! let delayed = Impairment::none().with_delay(Duration::from_millis(100), Duration::ZERO);
//! // 100 ms each way, and nothing at all from 5 s to 8 s.
//! let schedule = Schedule::constant(delayed)
//!     .then(Duration::from_secs(5), Impairment::outage())
//!     .then(Duration::from_secs(8), delayed);
//! let relay = TcpRelay::start(TcpRelayConfig::new(server_http).both(schedule)).await?;
//! let url = relay.url_via("ws://127.0.0.1:7880/rtc")?;
//! // Client::connect(&url, &token, options)
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, trace};

use crate::relay::{Direction, Impairment, Link, LinkStats, Schedule};

/// How to start a [`TcpRelay`]: the same settings as the UDP relay's, `server` being the server's TCP address (its
/// HTTP/WebSocket listener); see the module doc for what of an [`Impairment`] applies to a byte stream.
pub type TcpRelayConfig = crate::relay::RelayConfig;

/// Counters of a [`TcpRelay`], over all its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpRelayStats {
    /// Connections accepted from clients.
    pub connections: u64,
    /// Of those, still open.
    pub open: u64,
    /// Connections to the server that could not be opened (the client's was closed).
    pub connect_failures: u64,
    /// Client → server, all connections together; a "datagram" is one chunk read from the client. Nothing is ever
    /// dropped, reordered or duplicated (see the module doc).
    pub to_server: LinkStats,
    /// Server → client, likewise.
    pub to_client: LinkStats,
    /// Times the relay stopped reading from a client because its client → server link was full (backpressure).
    pub client_reads_paused: u64,
    /// Times the relay stopped reading from the server because a server → client link was full.
    pub server_reads_paused: u64,
}

/// A TCP relay failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpRelayError {
    /// The listener could not be bound on 127.0.0.1.
    #[error("binding the TCP relay's listener: {0}")]
    Bind(#[source] std::io::Error),
    /// A URL to rewrite was not a URL with a host.
    #[error("bad URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Most bytes read from a socket at once (one chunk, one "datagram" of the link).
const READ_CHUNK: usize = 16 * 1024;

/// A running TCP relay; see the module doc. [`TcpRelay::stop`] or dropping it stops accepting and closes every
/// connection.
#[derive(Debug)]
pub struct TcpRelay {
    addr: SocketAddr,
    started: Instant,
    /// The schedules in force (client → server, server → client); every connection follows changes.
    schedules: watch::Sender<[Schedule; 2]>,
    counters: Arc<StdMutex<Counters>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// Binds `127.0.0.1:0` and starts relaying to `config.server`. Schedules start now.
    pub async fn start(config: TcpRelayConfig) -> Result<TcpRelay, TcpRelayError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(TcpRelayError::Bind)?;
        let addr = listener.local_addr().map_err(TcpRelayError::Bind)?;
        let started = Instant::now();
        let (schedules, schedules_rx) = watch::channel([config.to_server, config.to_client]);
        let counters = Arc::new(StdMutex::new(Counters::default()));
        let (shutdown, shutdown_rx) = oneshot::channel();
        let acceptor = Acceptor {
            listener,
            server: config.server,
            seed: config.seed,
            started,
            schedules: schedules_rx,
            counters: Arc::clone(&counters),
        };
        let task = tokio::spawn(acceptor.run(shutdown_rx));
        debug!(%addr, server = %config.server, "tcp relay started");
        Ok(TcpRelay { addr, started, schedules, counters, shutdown: Some(shutdown), task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (e.g. the server's `ws://host:port/rtc`) with its host and port replaced by the relay's.
    pub fn url_via(&self, url: &str) -> Result<String, TcpRelayError> {
        let bad = |reason: String| TcpRelayError::Url { url: url.to_owned(), reason };
        let mut u = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        u.set_ip_host(self.addr.ip()).map_err(|()| bad("it cannot have a host".into()))?;
        u.set_port(Some(self.addr.port())).map_err(|()| bad("it cannot have a port".into()))?;
        Ok(u.into())
    }

    /// The instant the schedules count from.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Counters so far.
    pub fn stats(&self) -> TcpRelayStats {
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).total()
    }

    /// From now on, `impairment` replaces the rest of `direction`'s schedule, on open connections and new ones.
    pub fn set_impairment(&self, direction: Direction, impairment: Impairment) {
        let offset = self.started.elapsed();
        self.schedules.send_modify(|s| s[index(direction)].replace_from(offset, impairment));
        debug!(?direction, ?impairment, "tcp relay: impairment set");
    }

    /// Stops accepting, closes every connection (what the links still hold is discarded) and returns the final
    /// counters.
    pub async fn stop(mut self) -> TcpRelayStats {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.task).await;
        self.stats()
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        // Aborting the acceptor drops its JoinSet, which aborts every connection task; their sockets close.
        self.task.abort();
    }
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

/// What the tasks count, shared with the [`TcpRelay`].
#[derive(Debug, Default)]
struct Counters {
    connections: u64,
    open: u64,
    connect_failures: u64,
    /// Per connection: each direction's link counters, as last published.
    links: Vec<[LinkStats; 2]>,
    reads_paused: [u64; 2],
}

impl Counters {
    fn total(&self) -> TcpRelayStats {
        let mut total = TcpRelayStats {
            connections: self.connections,
            open: self.open,
            connect_failures: self.connect_failures,
            client_reads_paused: self.reads_paused[0],
            server_reads_paused: self.reads_paused[1],
            ..TcpRelayStats::default()
        };
        for [up, down] in &self.links {
            total.to_server.merge(up);
            total.to_client.merge(down);
        }
        total
    }
}

fn lock(counters: &StdMutex<Counters>) -> std::sync::MutexGuard<'_, Counters> {
    counters.lock().unwrap_or_else(|e| e.into_inner())
}

struct Acceptor {
    listener: TcpListener,
    server: SocketAddr,
    seed: u64,
    started: Instant,
    schedules: watch::Receiver<[Schedule; 2]>,
    counters: Arc<StdMutex<Counters>>,
}

impl Acceptor {
    async fn run(self, mut shutdown: oneshot::Receiver<()>) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((client, _)) => {
                        let id = {
                            let mut c = lock(&self.counters);
                            c.connections += 1;
                            c.open += 1;
                            c.links.push([LinkStats::default(); 2]);
                            c.links.len() - 1
                        };
                        let conn = Connection {
                            id,
                            server: self.server,
                            started: self.started,
                            seed: self.seed.wrapping_add(id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                            schedules: self.schedules.clone(),
                            counters: Arc::clone(&self.counters),
                        };
                        connections.spawn(conn.run(client));
                    }
                    Err(e) => {
                        // Out of descriptors, say: wait a little instead of spinning.
                        debug!(error = %e, "tcp relay: accept");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        lock(&self.counters).open = 0;
        debug!("tcp relay stopped");
    }
}

struct Connection {
    id: usize,
    server: SocketAddr,
    started: Instant,
    seed: u64,
    schedules: watch::Receiver<[Schedule; 2]>,
    counters: Arc<StdMutex<Counters>>,
}

impl Connection {
    async fn run(self, client: TcpStream) {
        let upstream = match TcpStream::connect(self.server).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "tcp relay: connecting to the server");
                let mut c = lock(&self.counters);
                c.connect_failures += 1;
                c.open -= 1;
                return;
            }
        };
        // The relay adds exactly the impairment's delay, not Nagle's.
        for s in [&client, &upstream] {
            if let Err(e) = s.set_nodelay(true) {
                debug!(error = %e, "tcp relay: TCP_NODELAY");
            }
        }
        let [up, down] = self.schedules.borrow().clone();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = upstream.into_split();
        let pump = |direction, schedule, seed, from, to| Pump {
            direction,
            link: Link::new_stream(schedule, self.started, seed),
            from,
            to,
            schedules: self.schedules.clone(),
            counters: &self.counters,
            id: self.id,
        };
        let to_server = pump(Direction::ToServer, up, self.seed, client_read, server_write);
        let to_client = pump(Direction::ToClient, down, self.seed ^ 0x5555_5555_5555_5555, server_read, client_write);
        // The first error (a reset, a peer gone) drops the other direction too, which closes both sockets.
        match tokio::try_join!(to_server.run(), to_client.run()) {
            Ok(_) => trace!(id = self.id, "tcp relay: connection closed"),
            Err(e) => debug!(id = self.id, error = %e, "tcp relay: connection ended"),
        }
        lock(&self.counters).open -= 1;
    }
}

/// One direction of one connection: reads what its link has room for, writes what the link delivers.
struct Pump<'a> {
    direction: Direction,
    link: Link,
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    schedules: watch::Receiver<[Schedule; 2]>,
    counters: &'a StdMutex<Counters>,
    id: usize,
}

impl Pump<'_> {
    /// Until the sender closes and everything it sent is delivered (then the close is passed on), or an error.
    async fn run(mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; READ_CHUNK];
        // Delivered by the link, not yet written.
        let mut pending = Bytes::new();
        let mut eof = false;
        let mut paused = false;
        let mut schedules_open = true;
        loop {
            let now = Instant::now();
            self.follow_schedule(now);
            if pending.is_empty() {
                pending = self.link.poll_transmit(now).unwrap_or_default();
            }
            if eof && pending.is_empty() && self.link.is_empty() {
                self.publish(false);
                // The far end may be gone already; the connection ends either way.
                let _ = self.to.shutdown().await;
                return Ok(());
            }
            let room = if eof { 0 } else { self.link.room(now).min(buf.len()) };
            let pause = room == 0 && !eof && !paused;
            paused = room == 0;
            self.publish(pause);
            let wake = if pending.is_empty() { self.link.poll_timeout() } else { None };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = self.from.read(&mut buf[..room]), if room > 0 => match read? {
                    0 => eof = true,
                    n => {
                        let now = Instant::now();
                        // A change made before these bytes were sent applies to them.
                        self.follow_schedule(now);
                        self.link.handle_datagram(now, Bytes::copy_from_slice(&buf[..n]));
                        trace!(id = self.id, direction = ?self.direction, len = n, "tcp relay: read");
                    }
                },
                written = self.to.write(&pending), if !pending.is_empty() => match written? {
                    0 => return Err(std::io::ErrorKind::WriteZero.into()),
                    n => pending.advance(n),
                },
                _ = sleep => {}
                changed = self.schedules.changed(), if schedules_open => match changed {
                    // `changed` marked the new schedules seen: apply them now.
                    Ok(()) => self.apply_schedule(Instant::now()),
                    Err(_) => schedules_open = false,
                },
            }
        }
    }

    /// Applies a schedule changed by [`TcpRelay::set_impairment`] and not seen yet.
    fn follow_schedule(&mut self, now: Instant) {
        if self.schedules.has_changed().unwrap_or(false) {
            self.apply_schedule(now);
        }
    }

    fn apply_schedule(&mut self, now: Instant) {
        let schedule = self.schedules.borrow_and_update()[index(self.direction)].clone();
        self.link.set_schedule(now, schedule);
    }

    fn publish(&self, paused: bool) {
        let mut c = lock(self.counters);
        let i = index(self.direction);
        c.reads_paused[i] += u64::from(paused);
        if let Some(links) = c.links.get_mut(self.id) {
            links[i] = self.link.stats();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::relay::STREAM_WINDOW;

    /// An echo server on 127.0.0.1; also returns when it first received a byte.
    async fn echo_server() -> (SocketAddr, Arc<OnceLock<Instant>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let first = Arc::new(OnceLock::new());
        let first_byte = Arc::clone(&first);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let first_byte = Arc::clone(&first_byte);
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.into_split();
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n @ 1..) = read.read(&mut buf).await {
                        first_byte.get_or_init(Instant::now);
                        if write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, first)
    }

    fn delay(ms: u64) -> Impairment {
        Impairment::none().with_delay(Duration::from_millis(ms), Duration::ZERO)
    }

    /// `n` bytes that differ from their neighbours (a shifted or repeated piece would not match).
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
    }

    /// Writes `data` to `stream` while reading as much back; returns what came back and when its first byte did.
    async fn echo_through(stream: TcpStream, data: Vec<u8>, limit: Duration) -> (Vec<u8>, Instant) {
        let (mut read, mut write) = stream.into_split();
        let n = data.len();
        let writer = tokio::spawn(async move { write.write_all(&data).await.map(|()| write) });
        let mut got = vec![0u8; n];
        let first = tokio::time::timeout(limit, async {
            read.read_exact(&mut got[..1]).await.unwrap();
            let first = Instant::now();
            read.read_exact(&mut got[1..]).await.unwrap();
            first
        })
        .await
        .expect("everything came back in time");
        writer.await.unwrap().unwrap();
        (got, first)
    }

    async fn round_trip(stream: &mut TcpStream) -> Duration {
        let t = Instant::now();
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"ping");
        t.elapsed()
    }

    #[tokio::test]
    async fn delay_adds_a_round_trip_and_changes_apply_to_open_connections() {
        let (server, _) = echo_server().await;
        let relay = TcpRelay::start(TcpRelayConfig::new(server).both(Schedule::constant(delay(100)))).await.unwrap();
        let mut client = TcpStream::connect(relay.addr()).await.unwrap();
        for _ in 0..3 {
            let rtt = round_trip(&mut client).await;
            assert!(rtt >= Duration::from_millis(200) && rtt < Duration::from_secs(1), "{rtt:?}");
        }
        relay.set_impairment(Direction::ToClient, delay(300));
        let rtt = round_trip(&mut client).await;
        assert!(rtt >= Duration::from_millis(400) && rtt < Duration::from_millis(1200), "{rtt:?}");
        let s = relay.stats();
        assert_eq!((s.connections, s.open, s.connect_failures), (1, 1, 0));
        assert_eq!((s.to_server.bytes_out, s.to_client.bytes_out), (16, 16));
        // Closing passes through: the client's close reaches the server, whose close comes back.
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(3);
        while relay.stats().open > 0 {
            assert!(Instant::now() < deadline, "{:?}", relay.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_cap_paces_the_stream_without_losing_a_byte() {
        let (server, _) = echo_server().await;
        // 50 000 bytes at 200 kbps take 2 s, behind a queue of 100 ms (2500 bytes).
        let relay =
            TcpRelay::start(TcpRelayConfig::new(server).to_server(Schedule::constant(Impairment::rate(200_000))))
                .await
                .unwrap();
        let client = TcpStream::connect(relay.addr()).await.unwrap();
        let data = pattern(50_000);
        let t = Instant::now();
        let (got, _) = echo_through(client, data.clone(), Duration::from_secs(4)).await;
        let took = t.elapsed();
        assert!(got == data, "intact and in order");
        assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "{took:?}");
        let s = relay.stats();
        let up = s.to_server;
        assert_eq!((up.bytes_in, up.bytes_out, up.bytes_dropped, up.datagrams_dropped), (50_000, 50_000, 0, 0));
        // The relay stopped reading instead of queueing more than 100 ms.
        assert!(s.client_reads_paused > 0, "{s:?}");
        assert!(up.max_queue_delay <= Duration::from_millis(100), "{up:?}");
    }

    #[tokio::test]
    async fn an_outage_holds_everything_then_delivers_it_intact_and_in_order() {
        let (server, first_at_server) = echo_server().await;
        let outage = Schedule::constant(Impairment::outage()).then(Duration::from_millis(1500), Impairment::none());
        let relay = TcpRelay::start(TcpRelayConfig::new(server).to_server(outage)).await.unwrap();
        let end = relay.started_at() + Duration::from_millis(1500);
        let client = TcpStream::connect(relay.addr()).await.unwrap();
        // Twice the window: the relay holds one window, the rest waits in the sender (its writes block).
        let data = pattern(2 * STREAM_WINDOW);
        let (got, first_back) = echo_through(client, data.clone(), Duration::from_secs(4)).await;
        assert!(got == data, "intact and in order");
        let first_at_server = *first_at_server.get().expect("the server got bytes");
        assert!(first_at_server >= end, "the server got a byte {:?} early", end - first_at_server);
        assert!(first_back >= end);
        let s = relay.stats();
        let up = s.to_server;
        assert_eq!((up.bytes_in, up.bytes_out, up.bytes_dropped), (data.len() as u64, data.len() as u64, 0));
        assert!(s.client_reads_paused > 0, "the window filled: {s:?}");
    }

    #[tokio::test]
    async fn stop_and_drop_close_the_connections() {
        let (server, _) = echo_server().await;
        for stop in [true, false] {
            let relay = TcpRelay::start(TcpRelayConfig::new(server)).await.unwrap();
            let addr = relay.addr();
            let mut client = TcpStream::connect(addr).await.unwrap();
            assert!(round_trip(&mut client).await < Duration::from_secs(1));
            if stop {
                let s = relay.stop().await;
                assert_eq!((s.connections, s.open, s.to_server.bytes_out), (1, 0, 4));
            } else {
                drop(relay);
            }
            let mut buf = [0u8; 8];
            let read = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed (stop: {stop}): {read:?}");
            if stop {
                assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
            }
        }
    }

    #[tokio::test]
    async fn urls_are_rewritten_to_the_relay() {
        let relay = TcpRelay::start(TcpRelayConfig::new("127.0.0.1:9".parse().unwrap())).await.unwrap();
        let port = relay.addr().port();
        assert_eq!(relay.url_via("ws://localhost:7880/rtc").unwrap(), format!("ws://127.0.0.1:{port}/rtc"));
        assert_eq!(relay.url_via("ws://10.0.0.1/rtc?x=1").unwrap(), format!("ws://127.0.0.1:{port}/rtc?x=1"));
        assert!(relay.url_via("not a url").is_err());
    }
}
