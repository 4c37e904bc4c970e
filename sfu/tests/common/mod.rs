//! A simulated network for one server [`Peer`] and one client (a str0m `Rtc`), with a virtual clock: datagrams
//! are delivered in memory and time jumps to the next timeout, so tests are deterministic and fast. By default
//! the network is perfect (no delay, no limit); [`Link`] makes the server → client direction a bottleneck.

#![allow(dead_code)]

pub mod client;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfu::id::{PeerId, TrackId};
use sfu::keyframe::{starts_keyframe, KeyframeStart};
use sfu::packet::ForwardPacket;
use sfu::peer::{Peer, PeerConfig, PeerEvent, PeerOutput};
use str0m::format::{Codec, PayloadParams};
use str0m::media::MediaKind;
use str0m::net::{Protocol, Receive};
use str0m::rtp::Vp8Descriptor;
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc};

pub const SERVER: &str = "127.0.0.1:5000";
pub const CLIENT: &str = "127.0.0.1:6000";

/// What the server peer produced in one [`Pair::run`].
#[derive(Debug, Default)]
pub struct Out {
    pub events: Vec<PeerEvent>,
    pub keyframe_requests: Vec<TrackId>,
    pub forwarded: Vec<std::sync::Arc<ForwardPacket>>,
    /// Layer demands (dynacast) the subscriber peer sent toward publishers.
    pub layer_demands: Vec<(TrackId, Option<u8>)>,
    /// Audio loss the subscriber peer reported toward publishers: (track, fraction lost).
    pub subscriber_losses: Vec<(TrackId, f32)>,
    pub client_events: Vec<String>,
    pub client_connected: bool,
    /// Sequence numbers of RTP packets the client received (RTX already unwrapped by str0m).
    pub client_rtp: Vec<u64>,
    /// (sequence number, RTP timestamp, payload) of each RTP packet the client received.
    pub client_payloads: Vec<(u64, u32, Vec<u8>)>,
    /// (payload type, sequence number, RTP timestamp, payload) of each RTP packet the client received.
    pub client_rtp_full: Vec<(u8, u64, u32, Vec<u8>)>,
    /// RTCP NACKs the server peer received from the client are visible only as retransmissions; this counts
    /// server → client datagrams dropped by the simulated network.
    pub dropped: usize,
    /// Keyframe requests the server peer sent upstream: (track, spatial layer).
    pub keyframe_layers: Vec<(TrackId, u8)>,
    /// Server → client datagrams (count, bytes) that entered the link, and those the link's queue dropped.
    pub link_bytes: u64,
    pub link_dropped: usize,
    /// Of `link_bytes`: RTP datagrams with the padding bit set (str0m's padding and probes).
    pub link_padding_bytes: u64,
    /// Of `link_bytes`: RTX datagrams (retransmissions, and probes str0m makes of resent media).
    pub link_rtx_bytes: u64,
    /// The SSRC of every server → client RTP datagram (media, RTX, padding, probes).
    pub rtp_ssrcs: std::collections::BTreeSet<u32>,
}

/// A bottleneck on the server → client path: a capacity, a drop-tail queue holding at most `queue` of data at
/// that rate, and a one-way `delay` (both directions).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Bits per second.
    pub capacity: u64,
    /// Longest queueing delay before the queue drops arrivals.
    pub queue: Duration,
    /// Propagation delay, each way.
    pub delay: Duration,
}

impl Out {
    pub fn offers(&self) -> Vec<(u64, String)> {
        self.events
            .iter()
            .filter_map(|e| if let PeerEvent::Offer { id, sdp } = e { Some((*id, sdp.clone())) } else { None })
            .collect()
    }

    pub fn answer(&self, want: u64) -> Option<String> {
        self.events.iter().find_map(|e| match e {
            PeerEvent::Answer { id, sdp } if *id == want => Some(sdp.clone()),
            _ => None,
        })
    }
}

pub struct Pair {
    pub now: Instant,
    pub peer: Peer,
    pub client: Rtc,
    /// Server → client RTP datagrams seen so far.
    pub rtp_to_client: u64,
    /// Decides, by the index of a server → client RTP datagram, whether the network loses it.
    pub lose: Box<dyn FnMut(u64) -> bool>,
    to_client: VecDeque<(Instant, Vec<u8>)>,
    to_server: VecDeque<(Instant, Vec<u8>)>,
    /// The bottleneck, if any, and when its transmitter is next free.
    pub link: Option<Link>,
    link_free_at: Instant,
    /// The subscriber's RTX payload type for video, once known (to count retransmissions on the link).
    pub rtx_pt: Option<u8>,
    /// Decides, by its bytes, whether the network loses a client → server datagram.
    pub lose_to_server: Box<dyn FnMut(&[u8]) -> bool>,
    /// The server peer's timeouts are handled only when due, as the engine's worker does (by default it is also
    /// woken whenever the client is, which str0m allows and which makes no difference to behaviour, but does to
    /// what its timers cost: `forward_cost.rs`).
    pub timeouts_when_due: bool,
}

/// Is this datagram RTP (not RTCP, DTLS or STUN)?
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with_client(|b| b)
    }

    /// A pair whose client is built from the given str0m config (e.g. RTP mode).
    pub fn with_client(f: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig) -> Pair {
        // These tests drive down-tracks directly; allocation is tested with [`Pair::with_bwe`].
        Pair::build(None, f)
    }

    /// A pair whose server peer estimates the bandwidth to the client from `initial` and allocates by it.
    pub fn with_bwe(initial: str0m::bwe::Bitrate, f: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig) -> Pair {
        Pair::build(Some(initial), f)
    }

    fn build(bwe_initial: Option<str0m::bwe::Bitrate>, f: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig) -> Pair {
        let now = Instant::now();
        let config = PeerConfig {
            can_publish: true,
            can_subscribe: true,
            udp_addr: SERVER.parse().unwrap(),
            tcp_addr: None,
            keyframe_request_interval: Duration::from_millis(500),
            bwe_initial,
            client_offers: false,
            relay: false,
        };
        let peer = Peer::new(PeerId(1), config, IceCreds::new(), now);
        let mut client = f(Rtc::builder()).build(now);
        client.add_local_candidate(Candidate::host(CLIENT.parse().unwrap(), "udp").unwrap());
        Pair {
            now,
            peer,
            client,
            rtp_to_client: 0,
            lose: Box::new(|_| false),
            to_client: VecDeque::new(),
            to_server: VecDeque::new(),
            link: None,
            link_free_at: now,
            rtx_pt: None,
            lose_to_server: Box::new(|_| false),
            timeouts_when_due: false,
        }
    }

    /// A connected pair whose client (in RTP mode) receives video `track` from the server peer, and the VP8
    /// codec parameters a publisher of it would attach to its packets.
    pub fn subscribed_video(track: TrackId) -> (Pair, str0m::format::PayloadParams) {
        Pair::subscribed_video_on(Pair::with_client(|b| b.set_rtp_mode(true)), track)
    }

    /// [`Pair::subscribed_video`] on a given pair (whose client must be in RTP mode).
    pub fn subscribed_video_on(mut p: Pair, track: TrackId) -> (Pair, str0m::format::PayloadParams) {
        p.peer.add_downtrack(track, str0m::media::MediaKind::Video, PeerId(9));
        p.accept_next_offer();
        let out = p.run(Duration::from_secs(2));
        assert!(out.client_connected, "{:?}", out.client_events);
        let params =
            *p.client.codec_config().find(|c| c.spec().codec == str0m::format::Codec::Vp8).expect("VP8 configured");
        p.rtx_pt = params.resend().map(|pt| *pt);
        (p, params)
    }

    /// The server peer's next offer (after a change such as a new down-track), accepted by the client and its
    /// answer handed back; returns the offer's SDP.
    pub fn accept_next_offer(&mut self) -> String {
        let (id, sdp) = self.run(Duration::from_millis(1)).offers().remove(0);
        let offer = str0m::change::SdpOffer::from_sdp_string(&sdp).expect("server offer parses");
        let answer = self.client.sdp_api().accept_offer(offer).expect("client accepts the offer");
        self.peer.handle_answer(self.now, id, &answer.to_sdp_string()).expect("server accepts the answer");
        sdp
    }

    /// Move datagrams both ways and advance the clock to each next timeout, for `duration` of virtual time.
    ///
    /// Each side is drained after every single input (str0m's rule; in RTP mode a second input before the drain
    /// would overwrite the first received packet).
    pub fn run(&mut self, duration: Duration) -> Out {
        let end = self.now + duration;
        let mut out = Out::default();
        // In-flight datagrams carry over from one run to the next.
        let mut to_client = std::mem::take(&mut self.to_client);
        let mut to_server = std::mem::take(&mut self.to_server);
        // The server's next timeout, known since its last input (with `timeouts_when_due`, the server peer is
        // polled only after an input, as the engine's worker does).
        let mut server_known: Option<Instant> = None;
        for _ in 0..200_000 {
            let mut next = end;
            let server_at = match server_known {
                Some(t) if self.timeouts_when_due => t,
                _ => self.drain_server(&mut out, &mut to_client),
            };
            server_known = Some(server_at);
            next = next.min(server_at);
            next = next.min(self.drain_client(&mut out, &mut to_server));
            if let Some(&(at, _)) = to_client.front() {
                next = next.min(at);
            }
            if let Some(&(at, _)) = to_server.front() {
                next = next.min(at);
            }
            if let Some((_, d)) = pop_due(&mut to_client, self.now) {
                let input = Input::Receive(
                    self.now,
                    Receive {
                        proto: Protocol::Udp,
                        source: SERVER.parse().unwrap(),
                        destination: CLIENT.parse().unwrap(),
                        contents: (&d[..]).try_into().unwrap(),
                    },
                );
                let _ = self.client.handle_input(input);
                continue;
            }
            if let Some((_, d)) = pop_due(&mut to_server, self.now) {
                self.peer.handle_receive(self.now, Protocol::Udp, CLIENT.parse().unwrap(), SERVER.parse().unwrap(), &d);
                server_known = None;
                continue;
            }
            if next >= end {
                self.now = end;
                if !self.timeouts_when_due || server_at <= end {
                    self.peer.handle_timeout(end);
                }
                let _ = self.client.handle_input(Input::Timeout(end));
                self.drain_server(&mut out, &mut to_client);
                self.drain_client(&mut out, &mut to_server);
                self.to_client = to_client;
                self.to_server = to_server;
                return out;
            }
            self.now = self.now.max(next);
            if !self.timeouts_when_due || server_at <= self.now {
                self.peer.handle_timeout(self.now);
                server_known = None;
            }
            let _ = self.client.handle_input(Input::Timeout(self.now));
        }
        panic!("the pair never settled");
    }

    fn drain_server(&mut self, out: &mut Out, to_client: &mut VecDeque<(Instant, Vec<u8>)>) -> Instant {
        loop {
            match self.peer.poll_output() {
                PeerOutput::Timeout(t) => return t,
                PeerOutput::Transmit(t) => {
                    if is_rtp(&t.contents) {
                        out.rtp_ssrcs.insert(u32::from_be_bytes([
                            t.contents[8],
                            t.contents[9],
                            t.contents[10],
                            t.contents[11],
                        ]));
                        let n = self.rtp_to_client;
                        self.rtp_to_client += 1;
                        if (self.lose)(n) {
                            out.dropped += 1;
                            continue;
                        }
                    }
                    let release = match self.link {
                        None => self.now,
                        Some(link) => {
                            let start = self.link_free_at.max(self.now);
                            if start.saturating_duration_since(self.now) > link.queue {
                                out.link_dropped += 1;
                                continue;
                            }
                            let bits = t.contents.len() as u64 * 8;
                            self.link_free_at = start + Duration::from_nanos(bits * 1_000_000_000 / link.capacity);
                            self.link_free_at + link.delay
                        }
                    };
                    out.link_bytes += t.contents.len() as u64;
                    if is_rtp(&t.contents) && t.contents[0] & 0x20 != 0 {
                        out.link_padding_bytes += t.contents.len() as u64;
                    } else if is_rtp(&t.contents) && Some(t.contents[1] & 0x7f) == self.rtx_pt {
                        out.link_rtx_bytes += t.contents.len() as u64;
                    }
                    to_client.push_back((release, t.contents.to_vec()));
                }
                PeerOutput::Event(e) => out.events.push(e),
                PeerOutput::KeyframeRequest { track, layer, .. } => {
                    out.keyframe_requests.push(track);
                    out.keyframe_layers.push((track, layer));
                }
                PeerOutput::Forward(p) => out.forwarded.push(p),
                PeerOutput::LayerDemand { track, demand } => out.layer_demands.push((track, demand)),
                PeerOutput::SubscriberLoss { track, loss } => out.subscriber_losses.push((track, loss)),
            }
        }
    }

    fn drain_client(&mut self, out: &mut Out, to_server: &mut VecDeque<(Instant, Vec<u8>)>) -> Instant {
        loop {
            match self.client.poll_output().expect("client poll") {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => {
                    if (self.lose_to_server)(&t.contents) {
                        continue;
                    }
                    let delay = self.link.map_or(Duration::ZERO, |l| l.delay);
                    to_server.push_back((self.now + delay, t.contents.to_vec()))
                }
                Output::Event(e) => {
                    if matches!(e, Event::Connected) {
                        out.client_connected = true;
                    }
                    if let Event::RtpPacket(p) = &e {
                        out.client_rtp.push(*p.seq_no);
                        out.client_payloads.push((*p.seq_no, p.header.timestamp, p.payload.to_vec()));
                        out.client_rtp_full.push((
                            *p.header.payload_type,
                            *p.seq_no,
                            p.header.timestamp,
                            p.payload.to_vec(),
                        ));
                    }
                    out.client_events.push(format!("{e:?}"));
                }
            }
        }
    }
}

/// The first datagram of `q`, if it is due at `now`.
fn pop_due(q: &mut VecDeque<(Instant, Vec<u8>)>, now: Instant) -> Option<(Instant, Vec<u8>)> {
    if q.front().is_some_and(|(at, _)| *at <= now) {
        q.pop_front()
    } else {
        None
    }
}

/// One encoding of a synthetic VP8 publisher: frames of a fixed bitrate at 30 fps, cut into packets of at most
/// [`Vp8Layer::MTU`] payload bytes, each ending with a trailer (layer, frame number) so the client can tell what it got.
pub struct Vp8Layer {
    pub track: TrackId,
    /// Spatial layer (0 without simulcast).
    pub index: u8,
    /// Bits per second of the encoding (a keyframe is twice a delta frame's size).
    pub bitrate: u32,
    /// Frame size announced by keyframes.
    pub size: (u16, u16),
    /// What every packet says of the whole track: simulcast or not, live layers, their sizes and bitrates.
    pub simulcast: bool,
    pub live_layers: u8,
    pub layer_sizes: [Option<(u16, u16)>; 3],
    pub layer_bitrates: [u32; 3],
    pub seq: u64,
    pub ts: u32,
    pub pid: u16,
    pub tl0: u8,
    pub key_due: bool,
}

impl Vp8Layer {
    /// Payload bytes per RTP packet.
    pub const MTU: usize = 1000;
    /// Bytes at the end of every payload: the layer and the frame number.
    pub const TRAILER: usize = 5;

    /// A single-encoding (no simulcast) track of `bitrate` bits per second at 1280×720, starting on a keyframe.
    pub fn single(track: TrackId, bitrate: u32) -> Vp8Layer {
        Vp8Layer {
            track,
            index: 0,
            bitrate,
            size: (1280, 720),
            simulcast: false,
            live_layers: 0b1,
            layer_sizes: [Some((1280, 720)), None, None],
            layer_bitrates: [bitrate, 0, 0],
            seq: 1000,
            ts: 90_000,
            pid: 100,
            tl0: 0,
            key_due: true,
        }
    }

    /// The packets of one frame: VP8 descriptors (15-bit picture id, TL0PICIDX), a keyframe tag when `key_due`,
    /// filler to the layer's bitrate (a keyframe twice that), and the trailer.
    pub fn frame(&mut self, params: PayloadParams, frame: u32, arrival: Instant) -> Vec<Arc<ForwardPacket>> {
        let (mtu, trailer) = (Self::MTU, Self::TRAILER);
        let key = std::mem::take(&mut self.key_due);
        let mut size = (self.bitrate / 8 / 30) as usize;
        if key {
            size *= 2;
        }
        let n = size.div_ceil(mtu);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut payload = vec![if i == 0 { 0x90 } else { 0x80 }, 0xe0];
            payload.extend([0x80 | (self.pid >> 8) as u8, self.pid as u8, self.tl0, 0x20]);
            if i == 0 {
                // Frame tag (bit 0 clear: keyframe) and, for keyframes, the start code and size.
                payload.push(if key { 0x10 } else { 0x11 });
                payload.extend([0, 0]);
                if key {
                    let (w, h) = self.size;
                    payload.extend([0x9d, 0x01, 0x2a]);
                    payload.extend(w.to_le_bytes());
                    payload.extend(h.to_le_bytes());
                }
            }
            payload.resize(mtu.min(size - i * mtu).max(payload.len() + trailer) - trailer, 0xab);
            payload.push(self.index);
            payload.extend(frame.to_be_bytes());
            out.push(
                packet(self.track, params, arrival)
                    .seq_no(self.seq)
                    .timestamp(self.ts)
                    .marker(i + 1 == n)
                    .vp8(payload)
                    .layer(self.index)
                    .live_layers(self.live_layers)
                    .layer_sizes(self.layer_sizes)
                    .layer_bitrates(self.layer_bitrates)
                    .simulcast(self.simulcast)
                    .capture(f64::from(frame) / 30.0)
                    .arc(),
            );
            self.seq += 1;
        }
        self.ts = self.ts.wrapping_add(3000);
        self.pid = (self.pid + 1) & 0x7fff;
        self.tl0 = self.tl0.wrapping_add(1);
        out
    }
}

/// Opus packet `i` of audio `track` (20 ms apart, a 3-byte silent frame), as a publisher's peer hands it on.
pub fn opus_packet(track: TrackId, i: u64, arrival: Instant) -> Arc<ForwardPacket> {
    let mut cc = str0m::format::CodecConfig::empty();
    cc.enable_opus(true, false);
    let params = *cc.find(|c| c.spec().codec == Codec::Opus).expect("Opus configured");
    packet(track, params, arrival)
        .seq_no(1000 + i)
        .timestamp((i as u32).wrapping_mul(960))
        .marker(i == 0)
        .payload(vec![0xf8, 0xff, 0xfe])
        .arc()
}

/// A [`ForwardPacket`] of `track` in `params`' codec, arriving at `arrival`, as a publisher's peer would hand it on;
/// chain the setters for what a test varies, then [`PacketBuilder::build`] or [`PacketBuilder::arc`].
///
/// Defaults: kind and clock rate from the codec; sequence number and timestamp 0; no marker; keyframe start
/// unknown; layer 0 of a non-simulcast track whose only live layer is 0 (no sizes or bitrates known); no capture
/// time, VP8 descriptor, RED primary or header extensions; an empty payload.
pub fn packet(track: TrackId, params: PayloadParams, arrival: Instant) -> PacketBuilder {
    let codec = params.spec().codec;
    PacketBuilder(ForwardPacket {
        track,
        kind: if codec.is_audio() { MediaKind::Audio } else { MediaKind::Video },
        params,
        seq_no: 0,
        timestamp: 0,
        marker: false,
        keyframe: KeyframeStart::Unknown,
        layer: 0,
        live_layers: 0b001,
        layer_sizes: [None; 3],
        layer_bitrates: [0; 3],
        simulcast: false,
        capture: None,
        clock_rate: params.spec().clock_rate.get(),
        vp8: None,
        red: None,
        ext: Default::default(),
        payload: Arc::from(Vec::new()),
        arrival,
    })
}

/// Builds a [`ForwardPacket`] for a test; see [`packet`].
#[derive(Debug)]
pub struct PacketBuilder(ForwardPacket);

impl PacketBuilder {
    pub fn seq_no(mut self, seq_no: u64) -> Self {
        self.0.seq_no = seq_no;
        self
    }

    pub fn timestamp(mut self, timestamp: u32) -> Self {
        self.0.timestamp = timestamp;
        self
    }

    pub fn marker(mut self, marker: bool) -> Self {
        self.0.marker = marker;
        self
    }

    pub fn keyframe(mut self, keyframe: KeyframeStart) -> Self {
        self.0.keyframe = keyframe;
        self
    }

    /// The payload as it is: no VP8 descriptor parsed, the keyframe start left as set.
    pub fn payload(mut self, payload: impl Into<Arc<[u8]>>) -> Self {
        self.0.payload = payload.into();
        self
    }

    /// A VP8 payload, parsed as the publisher's peer does: its descriptor, and whether it starts a keyframe.
    pub fn vp8(mut self, payload: Vec<u8>) -> Self {
        self.0.vp8 = Vp8Descriptor::parse(&payload).ok();
        self.0.keyframe = starts_keyframe(Codec::Vp8, &payload);
        self.0.payload = Arc::from(payload);
        self
    }

    /// The RED payload's primary block (the payload itself is set with [`PacketBuilder::payload`]).
    pub fn red(mut self, primary: Option<Arc<[u8]>>) -> Self {
        self.0.red = primary;
        self
    }

    pub fn layer(mut self, layer: u8) -> Self {
        self.0.layer = layer;
        self
    }

    pub fn live_layers(mut self, live_layers: u8) -> Self {
        self.0.live_layers = live_layers;
        self
    }

    pub fn layer_sizes(mut self, layer_sizes: [Option<(u16, u16)>; 3]) -> Self {
        self.0.layer_sizes = layer_sizes;
        self
    }

    pub fn layer_bitrates(mut self, layer_bitrates: [u32; 3]) -> Self {
        self.0.layer_bitrates = layer_bitrates;
        self
    }

    pub fn simulcast(mut self, simulcast: bool) -> Self {
        self.0.simulcast = simulcast;
        self
    }

    /// Capture time, seconds on the publisher's sender-report clock.
    pub fn capture(mut self, capture: f64) -> Self {
        self.0.capture = Some(capture);
        self
    }

    pub fn build(self) -> ForwardPacket {
        self.0
    }

    pub fn arc(self) -> Arc<ForwardPacket> {
        Arc::new(self.0)
    }
}
