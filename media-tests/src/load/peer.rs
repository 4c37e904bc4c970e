//! A cheap WebRTC peer for load: str0m's sans-I/O `Rtc` in RTP mode on one UDP socket, driven by one tokio task.
//! It never encodes or decodes. A publisher sends synthetic VP8 (30 frames/s, a keyframe when asked) and Opus-sized
//! audio (50 packets/s) whose payload ends in a [`Stamp`]; a subscriber counts packets, sequence gaps and the delay
//! from each stamp to its arrival. Hundreds of them fit on one core, which the generator needs to saturate a server
//! on the other (webrtc-rs, the native client's stack, costs several tasks and interceptor passes per packet).
//!
//! The load runner creates peers with [`spawn`]; a [`super::target::Target`] negotiates through the
//! [`PeerHandle`] (offer/answer/candidates), whatever its signaling.
//!
//! A subscriber can take ICE-TCP instead ([`Transport::Tcp`]): when the server's offer arrives it connects to the
//! offer's passive TCP candidate and answers with an active one, and every packet crosses that connection in RFC
//! 4571 frames (a 16-bit length, then the packet) — what a browser whose UDP is blocked does.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use super::target::Media;
use crate::delay::Histogram;

/// The stamp's magic, first of its 16 bytes.
const MAGIC: [u8; 4] = *b"CLG1";
/// Stamp length at the end of every payload: magic, send time ([`now_ns`]), publisher id.
pub const STAMP_LEN: usize = 16;

/// Now on the clock stamps use: CLOCK_REALTIME in ns, the clock the kernel stamps arriving datagrams with
/// (`SO_TIMESTAMPNS`), so a delay is measured from the publisher's send to the datagram's arrival at the
/// subscriber's socket — not to the moment this busy generator gets round to reading it.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// What a payload's last [`STAMP_LEN`] bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, [`now_ns`].
    pub sent_ns: u64,
    /// Which publisher sent it.
    pub publisher: u32,
}

impl Stamp {
    pub fn write(&self, tail: &mut [u8]) {
        tail[..4].copy_from_slice(&MAGIC);
        tail[4..12].copy_from_slice(&self.sent_ns.to_be_bytes());
        tail[12..16].copy_from_slice(&self.publisher.to_be_bytes());
    }

    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let tail = payload.get(payload.len().checked_sub(STAMP_LEN)?..)?;
        if tail[..4] != MAGIC {
            return None;
        }
        Some(Stamp {
            sent_ns: u64::from_be_bytes(tail[4..12].try_into().ok()?),
            publisher: u32::from_be_bytes(tail[12..16].try_into().ok()?),
        })
    }
}

/// How a peer's packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// One UDP socket, its host candidate.
    #[default]
    Udp,
    /// ICE-TCP to the server's passive candidate (subscribers only: it is found in the server's offer).
    Tcp,
    /// Through a TURN relay over UDP (subscribers only): [`PeerHandle::relay`] allocates before the server's offer,
    /// the peer binds a channel to the offer's UDP candidate and its only candidate is the relayed one.
    Turn,
}

/// A [`Transport::Turn`] peer's relay: the allocation, and the SFU address its channel is bound to.
struct Relay {
    allocation: super::turn::Allocation,
    peer: Option<SocketAddr>,
    /// The ChannelData being written (reused).
    out: Vec<u8>,
}

/// The first host candidate of an SDP over `proto` (and, for TCP, of `tcptype`), parsed by str0m as trickled ones
/// are: the SFU's UDP media address, or its passive ICE-TCP address.
fn host_candidate(sdp: &str, proto: Protocol, tcptype: Option<str0m::net::TcpType>) -> Option<SocketAddr> {
    sdp.lines().filter_map(|l| l.trim().strip_prefix("a=")).filter(|l| l.starts_with("candidate:")).find_map(|l| {
        let c = Candidate::from_sdp_string(l).ok()?;
        (c.kind() == str0m::CandidateKind::Host && c.proto() == proto && c.tcptype() == tcptype).then(|| c.addr())
    })
}

/// The ICE-TCP connection of a [`Transport::Tcp`] peer.
struct TcpLink {
    stream: TcpStream,
    local: SocketAddr,
    server: SocketAddr,
    /// Bytes read and not yet a whole frame.
    read: Vec<u8>,
    /// Framed bytes not yet written (the socket was full).
    write: Vec<u8>,
}

/// Frames larger than this are refused (a media packet is under 1,500 bytes; STUN and DTLS under 4 KiB).
const MAX_TCP_FRAME: usize = 8 * 1024;
/// Written bytes held while the socket is full; beyond it packets are dropped, as a full queue would.
const MAX_TCP_BACKLOG: usize = 1 << 20;

/// The passive TCP candidate of an SDP (`a=candidate:… tcp … typ host … tcptype passive`), if any.
pub fn passive_tcp_candidate(sdp: &str) -> Option<SocketAddr> {
    host_candidate(sdp, Protocol::Tcp, Some(str0m::net::TcpType::Passive))
}

/// What a peer does once connected.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Sends `media`: video at `video_kbps` (30 frames/s, `packet_bytes` payloads), audio 50 packets/s of 100 bytes.
    /// A frame's packets leave at once, or with `pacing` spread out at that multiple of `video_kbps` (a browser
    /// paces at 2.5×: a frame then takes 40 % of its interval).
    Publisher { id: u32, media: Media, video_kbps: u32, packet_bytes: usize, pacing: Option<f64> },
    /// Receives and counts.
    Subscriber,
}

/// Counters the runner reads while the peer runs (relaxed atomics: one writer, readers take snapshots).
#[derive(Debug, Default)]
pub struct Counters {
    /// RTP packets sent (publisher) or received (subscriber).
    pub packets: AtomicU64,
    /// Subscriber: packets received that carry a publisher's stamp (media, not padding; a repaired loss once).
    pub media: AtomicU64,
    /// Payload bytes, same direction.
    pub bytes: AtomicU64,
    /// Subscriber: packets expected from the highest sequence numbers seen per stream.
    pub expected: AtomicU64,
    /// Keyframe requests a publisher answered.
    pub keyframes: AtomicU64,
    /// Received payloads without a stamp (not ours, or mangled).
    pub unstamped: AtomicU64,
}

/// Shared by all peers of a run: whether arrivals are being measured now, and the delay histogram they fill.
#[derive(Debug, Default)]
pub struct Measure {
    pub on: AtomicBool,
    pub delay: Mutex<Histogram>,
}

enum Command {
    Offer { media: Media, send: bool, reply: oneshot::Sender<anyhow::Result<String>> },
    AcceptAnswer { sdp: String, reply: oneshot::Sender<anyhow::Result<()>> },
    Answer { sdp: String, reply: oneshot::Sender<anyhow::Result<String>> },
    Candidate { candidate: String, reply: oneshot::Sender<anyhow::Result<()>> },
    Connected { reply: oneshot::Sender<()> },
    Relay { server: SocketAddr, username: String, password: String, reply: oneshot::Sender<anyhow::Result<()>> },
}

/// The handle a [`super::target::Target`] negotiates through. Dropping every handle stops the peer.
#[derive(Clone)]
pub struct PeerHandle {
    tx: mpsc::Sender<Command>,
    local: SocketAddr,
    transport: Transport,
    pub counters: Arc<Counters>,
}

impl PeerHandle {
    /// The address of its socket (its one ICE host candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How its packets travel.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// [`Transport::Turn`]: allocates a relay on the TURN server `server` with these credentials, before the
    /// server's offer.
    pub async fn relay(&self, server: SocketAddr, username: String, password: String) -> anyhow::Result<()> {
        self.ask(|reply| Command::Relay { server, username, password, reply }).await?
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> anyhow::Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| anyhow!("the peer has stopped"))?;
        rx.await.map_err(|_| anyhow!("the peer has stopped"))
    }

    /// An offer with `media`'s m-lines, send-only (`send`) or receive-only, and the host candidate in it.
    pub async fn offer(&self, media: Media, send: bool) -> anyhow::Result<String> {
        self.ask(|reply| Command::Offer { media, send, reply }).await?
    }

    /// Applies the answer to the last [`offer`](Self::offer).
    pub async fn accept_answer(&self, sdp: String) -> anyhow::Result<()> {
        self.ask(|reply| Command::AcceptAnswer { sdp, reply }).await?
    }

    /// Answers the server's offer (every m-line accepted as offered).
    pub async fn answer(&self, sdp: String) -> anyhow::Result<String> {
        self.ask(|reply| Command::Answer { sdp, reply }).await?
    }

    /// Adds a trickled remote candidate (`candidate:…`, with or without `a=`).
    pub async fn add_remote_candidate(&self, candidate: String) -> anyhow::Result<()> {
        self.ask(|reply| Command::Candidate { candidate, reply }).await?
    }

    /// Waits until ICE and DTLS are up, at most `within`.
    pub async fn connected(&self, within: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(within, self.ask(|reply| Command::Connected { reply }))
            .await
            .map_err(|_| anyhow!("not connected within {within:?}"))?
    }
}

/// Starts a peer on a fresh UDP socket at `bind:0` (or, with [`Transport::Tcp`], on the ICE-TCP connection it makes
/// when the server's offer arrives); it runs until every handle is dropped.
pub async fn spawn(
    bind: IpAddr,
    role: Role,
    transport: Transport,
    measure: Arc<Measure>,
) -> anyhow::Result<PeerHandle> {
    if transport != Transport::Udp && matches!(role, Role::Publisher { .. }) {
        bail!("ICE-TCP and TURN are for subscribers: the server's candidate comes with its offer");
    }
    let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await.context("binding the peer's UDP socket")?;
    enable_rx_timestamps(&socket).context("SO_TIMESTAMPNS")?;
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut rtc =
        RtcConfig::new().set_rtp_mode(true).clear_codecs().enable_vp8(true).enable_opus(true, false).build(now);
    if transport == Transport::Udp {
        rtc.add_local_candidate(Candidate::host(local, Protocol::Udp).context("host candidate")?);
    }
    let (tx, rx) = mpsc::channel(8);
    let counters = Arc::new(Counters::default());
    let peer = Peer {
        rtc,
        socket,
        local,
        transport,
        tcp: None,
        relay: None,
        role,
        rx,
        counters: counters.clone(),
        measure,
        pending: None,
        connected: false,
        waiting_connected: Vec::new(),
        streams: Vec::new(),
        mids: Vec::new(),
        send: SendState::default(),
        payload: Vec::new(),
        arrival_ns: 0,
    };
    tokio::spawn(peer.run());
    Ok(PeerHandle { tx, local, transport, counters })
}

/// Per received stream: the highest extended sequence number.
struct RxStream {
    ssrc: u32,
    max_seq: u64,
}

#[derive(Default)]
struct SendState {
    video: Option<(Mid, u8)>,
    audio: Option<(Mid, u8)>,
    video_seq: u64,
    audio_seq: u64,
    frame: u64,
    audio_n: u64,
    next_video: Option<Instant>,
    next_audio: Option<Instant>,
    keyframe_wanted: bool,
    last_keyframe: Option<Instant>,
    /// A paced publisher's video packets waiting for their time, in order.
    paced: VecDeque<Paced>,
}

/// A video packet a paced publisher sends at `due` (its stamp is written then).
struct Paced {
    due: Instant,
    mid: Mid,
    pt: u8,
    seq: u64,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
}

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    transport: Transport,
    tcp: Option<TcpLink>,
    relay: Option<Relay>,
    role: Role,
    rx: mpsc::Receiver<Command>,
    counters: Arc<Counters>,
    measure: Arc<Measure>,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    waiting_connected: Vec<oneshot::Sender<()>>,
    streams: Vec<RxStream>,
    /// The m-lines it offered.
    mids: Vec<Mid>,
    send: SendState,
    payload: Vec<u8>,
    /// When the datagram being handled reached the socket ([`now_ns`]'s clock).
    arrival_ns: u64,
}

const VIDEO_FRAME: Duration = Duration::from_nanos(1_000_000_000 / 30);
const AUDIO_PACKET: Duration = Duration::from_millis(20);
const AUDIO_BYTES: usize = 100;
/// A keyframe answers at most one request per this interval.
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(500);

impl Peer {
    async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        loop {
            let Some(timeout) = self.drain() else { return };
            let now = Instant::now();
            let paced = self.send.paced.front().map(|p| p.due);
            let due = [Some(timeout), self.send.next_video, self.send.next_audio, paced].into_iter().flatten().min();
            let sleep = due.map(|d| d.saturating_duration_since(now)).unwrap_or(Duration::from_millis(100));
            let backlog = self.tcp.as_ref().is_some_and(|t| !t.write.is_empty());
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => return,
                },
                r = tcp_readable(&self.tcp) => {
                    if let Err(e) = r {
                        tracing::warn!("peer TCP: {e}");
                        return;
                    }
                    if !self.read_tcp(&mut buf) || self.drain().is_none() {
                        return;
                    }
                }
                r = tcp_writable(&self.tcp), if backlog => {
                    if r.is_err() {
                        return;
                    }
                    self.flush_tcp();
                }
                r = self.socket.readable() => {
                    if let Err(e) = r {
                        tracing::warn!("peer socket: {e}");
                        return;
                    }
                    // Everything queued, each with the kernel's arrival time.
                    let fd = self.socket.as_raw_fd();
                    while let Ok((n, source, at)) =
                        self.socket.try_io(tokio::io::Interest::READABLE, || recv_stamped(fd, &mut buf))
                    {
                        self.arrival_ns = at.unwrap_or_else(now_ns);
                        self.receive(source, &buf[..n]);
                        if self.drain().is_none() {
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep(sleep) => {
                    let now = Instant::now();
                    self.publish_due(now);
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        tracing::warn!("peer stopped: {e}");
                        return;
                    }
                }
            }
        }
    }

    fn receive(&mut self, source: SocketAddr, data: &[u8]) {
        // Through the relay: ChannelData from the TURN server is the SFU's datagram to the relayed address.
        let (source, destination, data) = match &self.relay {
            Some(r) if source == r.allocation.server => {
                let (Some(peer), Some(inner)) = (r.peer, super::turn::from_channel(data)) else { return };
                (peer, r.allocation.relayed, inner)
            }
            _ => (source, self.local, data),
        };
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination, contents });
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!("peer input: {e}");
        }
    }

    /// Reads what the ICE-TCP connection has and hands every whole frame to str0m, draining it after each.
    /// `false`: the connection or the peer ended.
    fn read_tcp(&mut self, buf: &mut [u8]) -> bool {
        let Some(t) = self.tcp.as_mut() else { return true };
        loop {
            match t.stream.try_read(buf) {
                Ok(0) => return false,
                Ok(n) => t.read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("peer TCP read: {e}");
                    return false;
                }
            }
        }
        let (server, local) = (t.server, t.local);
        let mut frames = std::mem::take(&mut t.read);
        let mut at = 0;
        while frames.len() - at >= 2 {
            let len = u16::from_be_bytes([frames[at], frames[at + 1]]) as usize;
            if len > MAX_TCP_FRAME {
                tracing::warn!("peer TCP: a {len}-byte frame");
                return false;
            }
            if frames.len() - at - 2 < len {
                break;
            }
            self.arrival_ns = now_ns();
            let data = &frames[at + 2..at + 2 + len];
            if let Ok(contents) = data.try_into() {
                let input = Input::Receive(
                    Instant::now(),
                    Receive { proto: Protocol::Tcp, source: server, destination: local, contents },
                );
                if let Err(e) = self.rtc.handle_input(input) {
                    tracing::debug!("peer input: {e}");
                }
                // str0m's drain rule: poll after every input (the next input would replace this one's events).
                if self.drain().is_none() {
                    return false;
                }
            }
            at += 2 + len;
        }
        frames.drain(..at);
        if let Some(t) = self.tcp.as_mut() {
            t.read = frames;
        }
        true
    }

    /// Writes what is held for the ICE-TCP connection, as much as it takes now.
    fn flush_tcp(&mut self) {
        let Some(t) = self.tcp.as_mut() else { return };
        while !t.write.is_empty() {
            match t.stream.try_write(&t.write) {
                Ok(n) => {
                    t.write.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("peer TCP write: {e}");
                    t.write.clear();
                    break;
                }
            }
        }
    }

    /// Connects to the passive TCP candidate of the server's offer and makes the connection this peer's only
    /// candidate (active).
    async fn connect_tcp(&mut self, offer: &str) -> anyhow::Result<()> {
        let server =
            passive_tcp_candidate(offer).ok_or_else(|| anyhow!("the server's offer has no passive TCP candidate"))?;
        let stream = TcpStream::connect(server).await.with_context(|| format!("connecting to {server} (ICE-TCP)"))?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let candidate = Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(str0m::net::TcpType::Active)
            .build()
            .context("TCP candidate")?;
        self.rtc.add_local_candidate(candidate);
        self.tcp = Some(TcpLink { stream, local, server, read: Vec::new(), write: Vec::new() });
        Ok(())
    }

    /// Polls str0m until it wants time; `None` when the peer is closed.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) if t.proto == Protocol::Tcp => {
                    let Some(link) = self.tcp.as_mut() else { continue };
                    if link.write.len() + t.contents.len() + 2 > MAX_TCP_BACKLOG {
                        continue; // a full queue loses the packet, as a full socket buffer would
                    }
                    link.write.extend_from_slice(&(t.contents.len() as u16).to_be_bytes());
                    link.write.extend_from_slice(&t.contents);
                    self.flush_tcp();
                }
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer loses the datagram, as a network would.
                    match self.relay.as_mut() {
                        Some(r) if Some(t.destination) == r.peer => {
                            super::turn::channel_data(&t.contents, &mut r.out);
                            let _ = self.socket.try_send_to(&r.out, r.allocation.server);
                        }
                        _ => {
                            let _ = self.socket.try_send_to(&t.contents, t.destination);
                        }
                    }
                }
                Ok(Output::Event(e)) => self.event(e),
                Err(e) => {
                    tracing::warn!("peer stopped: {e}");
                    return None;
                }
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                for w in self.waiting_connected.drain(..) {
                    let _ = w.send(());
                }
                self.start_sending();
            }
            Event::RtpPacket(p) => self.arrived(&p),
            Event::KeyframeRequest(_) => self.send.keyframe_wanted = true,
            Event::MediaAdded(_) | Event::MediaChanged(_) => self.start_sending(),
            _ => {}
        }
    }

    fn arrived(&mut self, p: &str0m::rtp::RtpPacket) {
        let c = &self.counters;
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
        let ssrc = *p.header.ssrc;
        let seq = *p.seq_no;
        match self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            Some(s) if seq > s.max_seq => {
                c.expected.fetch_add(seq - s.max_seq, Ordering::Relaxed);
                s.max_seq = seq;
            }
            Some(_) => {}
            None => {
                c.expected.fetch_add(1, Ordering::Relaxed);
                self.streams.push(RxStream { ssrc, max_seq: seq });
            }
        }
        let stamp = Stamp::read(&p.payload);
        if stamp.is_some() {
            c.media.fetch_add(1, Ordering::Relaxed);
        }
        match stamp {
            Some(stamp) if self.measure.on.load(Ordering::Relaxed) => {
                let delay = Duration::from_nanos(self.arrival_ns.saturating_sub(stamp.sent_ns));
                if let Ok(mut h) = self.measure.delay.lock() {
                    h.record(delay);
                }
            }
            Some(_) => {}
            None => {
                c.unstamped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Offer { media, send, reply } => {
                let dir = if send { Direction::SendOnly } else { Direction::RecvOnly };
                let mut sdp = self.rtc.sdp_api();
                if media.audio {
                    let mid = sdp.add_media(MediaKind::Audio, dir, Some("load".into()), Some("audio".into()), None);
                    self.mids.push(mid);
                }
                if media.video {
                    let mid = sdp.add_media(MediaKind::Video, dir, Some("load".into()), Some("video".into()), None);
                    self.mids.push(mid);
                }
                let r = match sdp.apply() {
                    Some((offer, pending)) => {
                        self.pending = Some(pending);
                        Ok(offer.to_sdp_string())
                    }
                    None => Err(anyhow!("nothing to offer")),
                };
                let _ = reply.send(r);
            }
            Command::AcceptAnswer { sdp, reply } => {
                let r = (|| {
                    let pending = self.pending.take().ok_or_else(|| anyhow!("no offer outstanding"))?;
                    let answer = SdpAnswer::from_sdp_string(&sdp).context("parsing the answer")?;
                    self.rtc.sdp_api().accept_answer(pending, answer).context("applying the answer")?;
                    self.start_sending();
                    Ok(())
                })();
                let _ = reply.send(r);
            }
            Command::Relay { server, username, password, reply } => {
                let r = async {
                    let allocation = super::turn::allocate(&self.socket, server, &username, &password).await?;
                    let candidate = Candidate::relayed(allocation.relayed, self.local, Protocol::Udp)
                        .context("relayed candidate")?;
                    self.rtc.add_local_candidate(candidate);
                    self.relay = Some(Relay { allocation, peer: None, out: Vec::with_capacity(2048) });
                    Ok(())
                }
                .await;
                let _ = reply.send(r);
            }
            Command::Answer { sdp, reply } => {
                if let Some(r) = self.relay.as_mut().filter(|r| r.peer.is_none()) {
                    let bound = match host_candidate(&sdp, Protocol::Udp, None) {
                        Some(peer) => r.allocation.bind_channel(&self.socket, peer).await.map(|()| peer),
                        None => Err(anyhow!("the server's offer has no UDP host candidate to relay to")),
                    };
                    match bound {
                        Ok(peer) => r.peer = Some(peer),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return;
                        }
                    }
                }
                if self.transport == Transport::Tcp && self.tcp.is_none() {
                    if let Err(e) = self.connect_tcp(&sdp).await {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                let r = (|| {
                    let offer = SdpOffer::from_sdp_string(&sdp).context("parsing the offer")?;
                    let answer = self.rtc.sdp_api().accept_offer(offer).context("accepting the offer")?;
                    self.start_sending();
                    Ok(answer.to_sdp_string())
                })();
                let _ = reply.send(r);
            }
            Command::Candidate { candidate, reply } => {
                let text = candidate.trim().trim_start_matches("a=");
                let r = Candidate::from_sdp_string(text)
                    .map(|c| self.rtc.add_remote_candidate(c))
                    .map_err(|e| anyhow!("bad candidate {text:?}: {e}"));
                let _ = reply.send(r);
            }
            Command::Connected { reply } => {
                if self.connected {
                    let _ = reply.send(());
                } else {
                    self.waiting_connected.push(reply);
                }
            }
        }
    }

    /// Once connected with negotiated send m-lines: finds their mids and payload types and starts the clocks.
    fn start_sending(&mut self) {
        let Role::Publisher { media, .. } = self.role else { return };
        if !self.connected {
            return;
        }
        let mids = &self.mids;
        let find = |rtc: &Rtc, kind: MediaKind, codec: Codec| -> Option<(Mid, u8)> {
            // The first negotiated send m-line of that kind, and the payload type the other side took for `codec`.
            let media =
                mids.iter().filter_map(|m| rtc.media(*m)).find(|m| m.kind() == kind && m.direction().is_sending())?;
            let pt = rtc
                .codec_config()
                .iter()
                .find(|p| p.spec().codec == codec && media.remote_pts().contains(&p.pt()))
                .map(|p| *p.pt())?;
            Some((media.mid(), pt))
        };
        let now = Instant::now();
        if media.video && self.send.video.is_none() {
            self.send.video = find(&self.rtc, MediaKind::Video, Codec::Vp8);
            if self.send.video.is_some() {
                self.send.next_video = Some(now);
                self.send.keyframe_wanted = true;
            }
        }
        if media.audio && self.send.audio.is_none() {
            self.send.audio = find(&self.rtc, MediaKind::Audio, Codec::Opus);
            if self.send.audio.is_some() {
                self.send.next_audio = Some(now);
            }
        }
    }

    /// Sends the frames and audio packets whose time has come (catching up at most one interval's worth).
    fn publish_due(&mut self, now: Instant) {
        let Role::Publisher { id, video_kbps, packet_bytes, pacing, .. } = self.role else { return };
        if let (Some(due), Some((mid, pt))) = (self.send.next_video, self.send.video) {
            if now >= due {
                let mut key = false;
                if self.send.keyframe_wanted
                    && self.send.last_keyframe.is_none_or(|t| now.duration_since(t) >= KEYFRAME_MIN_INTERVAL)
                {
                    key = true;
                    self.send.keyframe_wanted = false;
                    self.send.last_keyframe = Some(now);
                    self.counters.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                self.send_frame(now, mid, pt, id, key, video_kbps, packet_bytes, pacing);
                self.send.frame += 1;
                self.send.next_video = Some((due + VIDEO_FRAME).max(now - VIDEO_FRAME));
            }
        }
        // A paced frame's packets whose time has come (the first one at once).
        while self.send.paced.front().is_some_and(|p| p.due <= now) {
            let Some(mut p) = self.send.paced.pop_front() else { break };
            let at = p.payload.len() - STAMP_LEN;
            Stamp { sent_ns: now_ns(), publisher: id }.write(&mut p.payload[at..]);
            self.write(now, p.mid, p.pt, p.seq, p.ts, p.marker, &p.payload);
        }
        if let (Some(due), Some((mid, pt))) = (self.send.next_audio, self.send.audio) {
            if now >= due {
                let n = self.send.audio_n;
                let mut payload = std::mem::take(&mut self.payload);
                payload.clear();
                payload.resize(AUDIO_BYTES, 0x5a);
                Stamp { sent_ns: now_ns(), publisher: id }.write(&mut payload[AUDIO_BYTES - STAMP_LEN..]);
                let seq = self.send.audio_seq;
                self.send.audio_seq += 1;
                self.write(now, mid, pt, seq, (n * 960) as u32, false, &payload);
                self.payload = payload;
                self.send.audio_n += 1;
                self.send.next_audio = Some((due + AUDIO_PACKET).max(now - AUDIO_PACKET));
            }
        }
    }

    /// One video frame: ⌈bytes/packet_bytes⌉ packets, each a VP8 payload descriptor, the first with a VP8 frame
    /// header (key or delta), the last marked; every payload ends in a stamp. Paced (`pacing` × `kbps`), the first
    /// packet leaves now and each next one when the one before has had its time on the wire at that rate.
    #[allow(clippy::too_many_arguments)]
    fn send_frame(
        &mut self,
        now: Instant,
        mid: Mid,
        pt: u8,
        id: u32,
        key: bool,
        kbps: u32,
        packet_bytes: usize,
        pacing: Option<f64>,
    ) {
        let frame_bytes = (kbps as usize * 1000 / 8 / 30).max(packet_bytes.min(200));
        let count = frame_bytes.div_ceil(packet_bytes).max(1);
        let size = (frame_bytes / count).max(32);
        let ts = (self.send.frame * 3000) as u32;
        let mut payload = std::mem::take(&mut self.payload);
        for i in 0..count {
            payload.clear();
            payload.resize(size, 0);
            // VP8 payload descriptor: no extensions, S=1 on the first packet of the frame, partition 0.
            payload[0] = if i == 0 { 0x10 } else { 0x00 };
            if i == 0 {
                let first_part = (size as u32).min(0x7_ffff);
                // Frame tag: bit 0 = 0 for a keyframe, version 0, show_frame, first partition size.
                let tag = u32::from(!key) | (1 << 4) | (first_part << 5);
                payload[1..4].copy_from_slice(&tag.to_le_bytes()[..3]);
                if key {
                    payload[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                    payload[7..9].copy_from_slice(&640u16.to_le_bytes());
                    payload[9..11].copy_from_slice(&360u16.to_le_bytes());
                }
            }
            let seq = self.send.video_seq;
            self.send.video_seq += 1;
            if let Some(factor) = pacing {
                // One packet's time on the wire at the pacing rate; after the queue's last, or from now.
                let gap = Duration::from_secs_f64(size as f64 * 8.0 / (factor * f64::from(kbps.max(1)) * 1000.0));
                let due = self.send.paced.back().map_or(now, |p| (p.due + gap).max(now));
                let marker = i + 1 == count;
                self.send.paced.push_back(Paced { due, mid, pt, seq, ts, marker, payload: payload.clone() });
                continue;
            }
            Stamp { sent_ns: now_ns(), publisher: id }.write(&mut payload[size - STAMP_LEN..]);
            self.write(now, mid, pt, seq, ts, i + 1 == count, &payload);
        }
        self.payload = payload;
    }

    #[allow(clippy::too_many_arguments)]
    fn write(&mut self, now: Instant, mid: Mid, pt: u8, seq: u64, ts: u32, marker: bool, payload: &[u8]) {
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else { return };
        let rtp =
            RtpWrite::new(pt.into(), seq.into(), ts, now, Arc::<[u8]>::from(payload)).marker(marker).nackable(true);
        stream.write_rtp(rtp);
        self.counters.packets.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
    }
}

/// Asks the kernel to stamp each datagram's arrival (`SO_TIMESTAMPNS`, CLOCK_REALTIME).
/// Readable, for a peer with an ICE-TCP connection; never, without.
async fn tcp_readable(t: &Option<TcpLink>) -> std::io::Result<()> {
    match t {
        Some(t) => t.stream.readable().await,
        None => std::future::pending().await,
    }
}

/// Writable, for a peer with an ICE-TCP connection; never, without.
async fn tcp_writable(t: &Option<TcpLink>) -> std::io::Result<()> {
    match t {
        Some(t) => t.stream.writable().await,
        None => std::future::pending().await,
    }
}

fn enable_rx_timestamps(socket: &UdpSocket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One datagram without blocking (`recvmsg`), with its source and the kernel's arrival stamp in ns, if given.
fn recv_stamped(fd: std::os::fd::RawFd, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, Option<u64>)> {
    // SAFETY: every pointer in `msg` points into locals that outlive the call, with their true lengths; the control
    // messages are walked with the CMSG_* macros within `msg_controllen`, and the timestamp read unaligned.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut at = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                at = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let source = match i32::from(addr.ss_family) {
            libc::AF_INET => {
                let a: libc::sockaddr_in = std::ptr::read_unaligned((&addr as *const libc::sockaddr_storage).cast());
                SocketAddr::new(
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                    u16::from_be(a.sin_port),
                )
            }
            libc::AF_INET6 => {
                let a: libc::sockaddr_in6 = std::ptr::read_unaligned((&addr as *const libc::sockaddr_storage).cast());
                SocketAddr::new(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into(), u16::from_be(a.sin6_port))
            }
            f => return Err(std::io::Error::other(format!("address family {f}"))),
        };
        Ok((n as usize, source, at))
    }
}

/// Waits until every subscriber counter has moved (each received something), at most `within`.
pub async fn all_receiving(peers: &[PeerHandle], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let idle = peers.iter().filter(|p| p.counters.packets.load(Ordering::Relaxed) == 0).count();
        if idle == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{idle} of {} subscribers received nothing within {within:?}", peers.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passive_tcp_candidate_is_found_in_an_offer() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.9 7881 typ host\r\n\
                   a=candidate:2 1 tcp 1518280447 10.0.0.9 7881 typ host tcptype passive\r\n";
        assert_eq!(passive_tcp_candidate(sdp), Some("10.0.0.9:7881".parse().unwrap()));
        assert_eq!(passive_tcp_candidate("a=candidate:1 1 udp 2130706431 10.0.0.9 7881 typ host\r\n"), None);
        assert_eq!(passive_tcp_candidate("a=candidate:2 1 tcp 1 10.0.0.9 9 typ host tcptype active\r\n"), None);
    }

    #[test]
    fn a_stamp_reads_back_from_the_payload_tail() {
        let mut p = vec![7u8; 100];
        let s = Stamp { sent_ns: 123_456_789_012, publisher: 0x0001_0002 };
        s.write(&mut p[100 - STAMP_LEN..]);
        assert_eq!(Stamp::read(&p), Some(s));
        p[100 - STAMP_LEN] = b'X';
        assert_eq!(Stamp::read(&p), None);
        assert_eq!(Stamp::read(&p[..10]), None);
    }
}
