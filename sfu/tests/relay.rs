//! A relay between two nodes' engines (`sfu::relay`), sans-I/O: the origin's relay peer and the edge's publisher
//! peer, both real str0m, joined by a simulated network with a virtual clock. What crosses must be what the publisher
//! sent, layer by layer and numbered as it numbered it; loss on the link is repaired from the origin's cache; the
//! edge's keyframe requests and layer needs reach the origin's publisher.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{opus_packet, Vp8Layer};
use sfu::id::{PeerId, TrackId};
use sfu::keyframe::KeyframeStart;
use sfu::packet::ForwardPacket;
use sfu::peer::{Peer, PeerConfig, PeerEvent, PeerOutput};
use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::net::Protocol;
use str0m::IceCreds;

const ORIGIN: &str = "10.0.0.1:40000";
const EDGE: &str = "10.0.0.2:5000";
/// The published track on the origin node.
const TRACK: TrackId = TrackId(7);
const AUDIO: TrackId = TrackId(8);

/// What the two sides produced during one [`Relay::run`].
#[derive(Debug, Default)]
struct Seen {
    /// Packets the edge's peer hands to its node's subscribers.
    edge_forwarded: Vec<Arc<ForwardPacket>>,
    edge_events: Vec<PeerEvent>,
    origin_events: Vec<PeerEvent>,
    /// Keyframe requests the origin's relay peer sends towards the publisher: (track, layer).
    origin_keyframe_requests: Vec<(TrackId, u8)>,
    /// Layer demands the origin's relay peer sends towards the publisher.
    origin_layer_demands: Vec<(TrackId, Option<u8>)>,
    /// Origin → edge RTP datagrams the network lost.
    dropped: usize,
}

struct Relay {
    now: Instant,
    origin: Peer,
    edge: Peer,
    to_edge: VecDeque<Vec<u8>>,
    to_origin: VecDeque<Vec<u8>>,
    /// Decides, by its index, whether the network loses an origin → edge RTP datagram.
    lose: Box<dyn FnMut(u64) -> bool>,
    rtp_sent: u64,
    /// The link is cut: every datagram, either way, is lost.
    cut: bool,
    /// The edge's id for the relayed video and audio tracks.
    edge_track: Option<TrackId>,
    edge_audio: Option<TrackId>,
}

fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

fn config(relay: bool, addr: &str) -> PeerConfig {
    PeerConfig {
        can_publish: !relay,
        can_subscribe: relay,
        udp_addr: addr.parse().unwrap(),
        tcp_addr: None,
        keyframe_request_interval: Duration::from_millis(500),
        bwe_initial: None,
        client_offers: false,
        relay,
    }
}

/// The codec parameters a VP8 publisher on the origin node would attach to its packets.
fn vp8_params() -> PayloadParams {
    *CodecConfig::new_with_defaults().find(|c| c.spec().codec == Codec::Vp8).expect("VP8")
}

impl Relay {
    /// The origin relays `TRACK` (video) and `AUDIO`; the edge accepted the offer and both are connected.
    fn connected() -> Relay {
        let now = Instant::now();
        let mut r = Relay {
            now,
            origin: Peer::new(PeerId(1), config(true, ORIGIN), IceCreds::new(), now),
            edge: Peer::new(PeerId(2), config(false, EDGE), IceCreds::new(), now),
            to_edge: VecDeque::new(),
            to_origin: VecDeque::new(),
            lose: Box::new(|_| false),
            rtp_sent: 0,
            cut: false,
            edge_track: None,
            edge_audio: None,
        };
        r.origin.add_downtrack(TRACK, MediaKind::Video, PeerId(9));
        r.origin.add_downtrack(AUDIO, MediaKind::Audio, PeerId(9));
        // The audio waits for the video's offer to be answered: two rounds.
        let mut seen = r.run(Duration::from_millis(1));
        for _ in 0..2 {
            let (id, offer) = seen
                .origin_events
                .iter()
                .find_map(|e| if let PeerEvent::Offer { id, sdp } = e { Some((*id, sdp.clone())) } else { None })
                .expect("the relay offers");
            assert!(offer.contains("a=simulcast:send q;h;f"), "three layers offered");
            assert!(!offer.contains("a=ice-lite"), "the origin's side runs full ICE");
            r.edge.handle_offer(r.now, id, &offer);
            let answered = r.run(Duration::from_millis(1));
            let answer = answered
                .edge_events
                .iter()
                .find_map(|e| match e {
                    PeerEvent::Answer { id: a, sdp } if *a == id => Some(sdp.clone()),
                    _ => None,
                })
                .expect("the edge answers");
            r.note_published(&answered);
            r.origin.handle_answer(r.now, id, &answer).expect("the origin accepts the answer");
            seen = r.run(Duration::from_millis(1));
            r.note_published(&seen);
        }
        // str0m announces the edge's new media once connected.
        let seen = r.run(Duration::from_secs(2));
        r.note_published(&seen);
        assert!(r.origin.is_connected() && r.edge.is_connected(), "{seen:?}");
        assert!(r.edge_track.is_some() && r.edge_audio.is_some(), "both tracks published at the edge");
        r
    }

    /// Note the edge's ids of the relayed tracks.
    fn note_published(&mut self, seen: &Seen) {
        for e in &seen.edge_events {
            if let PeerEvent::TrackPublished { track, kind, .. } = e {
                match kind {
                    MediaKind::Video => self.edge_track = Some(*track),
                    MediaKind::Audio => self.edge_audio = Some(*track),
                }
            }
        }
    }

    /// Feed packets to the origin's relay peer (as its engine would), draining after each.
    fn feed(&mut self, pkts: &[Arc<ForwardPacket>], seen: &mut Seen) {
        for p in pkts {
            self.origin.handle_forward(p);
            self.drain(seen);
        }
    }

    /// Move datagrams both ways (no delay) and advance the clock to each next timeout, for `d` of virtual time.
    fn run(&mut self, d: Duration) -> Seen {
        let mut seen = Seen::default();
        self.run_into(d, &mut seen);
        seen
    }

    fn run_into(&mut self, d: Duration, seen: &mut Seen) {
        let end = self.now + d;
        for _ in 0..200_000 {
            let next = self.drain(seen);
            if let Some(data) = self.to_edge.pop_front() {
                let (src, dst) = (ORIGIN.parse().unwrap(), EDGE.parse().unwrap());
                self.edge.handle_receive(self.now, Protocol::Udp, src, dst, &data);
                continue;
            }
            if let Some(data) = self.to_origin.pop_front() {
                let (src, dst) = (EDGE.parse().unwrap(), ORIGIN.parse().unwrap());
                self.origin.handle_receive(self.now, Protocol::Udp, src, dst, &data);
                continue;
            }
            self.now = next.min(end).max(self.now);
            self.origin.handle_timeout(self.now);
            self.edge.handle_timeout(self.now);
            if self.now >= end {
                self.drain(seen);
                if self.to_edge.is_empty() && self.to_origin.is_empty() {
                    return;
                }
            }
        }
        panic!("the relay never settled");
    }

    /// Drain both peers; returns the earlier of their timeouts.
    fn drain(&mut self, seen: &mut Seen) -> Instant {
        let origin_next = loop {
            match self.origin.poll_output() {
                PeerOutput::Timeout(t) => break t,
                PeerOutput::Transmit(t) => {
                    assert_eq!(t.destination, EDGE.parse().unwrap(), "the relay sends to the edge's candidate");
                    if self.cut {
                        continue;
                    }
                    if is_rtp(&t.contents) {
                        let n = self.rtp_sent;
                        self.rtp_sent += 1;
                        if (self.lose)(n) {
                            seen.dropped += 1;
                            continue;
                        }
                    }
                    self.to_edge.push_back(t.contents.to_vec());
                }
                PeerOutput::Event(e) => seen.origin_events.push(e),
                PeerOutput::KeyframeRequest { track, layer, .. } => seen.origin_keyframe_requests.push((track, layer)),
                PeerOutput::LayerDemand { track, demand } => seen.origin_layer_demands.push((track, demand)),
                PeerOutput::Forward(_) | PeerOutput::SubscriberLoss { .. } => {}
            }
        };
        let edge_next = loop {
            match self.edge.poll_output() {
                PeerOutput::Timeout(t) => break t,
                PeerOutput::Transmit(_) if self.cut => {}
                PeerOutput::Transmit(t) => self.to_origin.push_back(t.contents.to_vec()),
                PeerOutput::Event(e) => seen.edge_events.push(e),
                PeerOutput::Forward(p) => seen.edge_forwarded.push(p),
                _ => {}
            }
        };
        origin_next.min(edge_next)
    }
}

/// Packets by (layer, sequence number): their payloads.
type Fed = BTreeMap<(u8, u64), Vec<u8>>;

/// Three simulcast layers of `TRACK` (150 kbit/s, 500 kbit/s, 1.5 Mbit/s), each numbered from its own start.
fn layers() -> Vec<Vp8Layer> {
    let sizes = [(320, 180), (640, 360), (1280, 720)];
    let bitrates = [150_000, 500_000, 1_500_000];
    (0..3u8)
        .map(|i| {
            let mut l = Vp8Layer::single(TRACK, bitrates[usize::from(i)]);
            l.index = i;
            l.size = sizes[usize::from(i)];
            l.simulcast = true;
            l.live_layers = 0b111;
            l.layer_sizes = sizes.map(Some);
            l.layer_bitrates = bitrates;
            l.seq = 1000 + u64::from(i) * 20_000;
            l.ts = 90_000 * (u32::from(i) + 1);
            l
        })
        .collect()
}

/// `frames` frames of every layer in `layers` and an Opus packet per 20 ms, fed at 30 frames a second; returns what
/// was fed: (layer, sequence number) → payload, and the audio's sequence numbers.
fn send(r: &mut Relay, layers: &mut [Vp8Layer], frames: u32, seen: &mut Seen) -> (Fed, BTreeSet<u64>) {
    let params = vp8_params();
    let mut fed = BTreeMap::new();
    let mut audio = BTreeSet::new();
    let mut opus_i = 0u64;
    for f in 0..frames {
        for l in layers.iter_mut() {
            let pkts = l.frame(params, f, r.now);
            for p in &pkts {
                fed.insert((p.layer, p.seq_no), p.payload.to_vec());
            }
            r.feed(&pkts, seen);
        }
        // Opus at 50 packets a second: 5 every 3 frames.
        while opus_i * 20 < u64::from(f + 1) * 1000 / 30 {
            let p = opus_packet(AUDIO, opus_i, r.now);
            audio.insert(p.seq_no);
            r.feed(&[p], seen);
            opus_i += 1;
        }
        r.run_into(Duration::from_millis(33), seen);
    }
    (fed, audio)
}

/// What the edge got of the relayed video: (layer, low 16 bits of the sequence number) → payload.
fn received(seen: &Seen, track: TrackId) -> BTreeMap<(u8, u64), Vec<u8>> {
    seen.edge_forwarded
        .iter()
        .filter(|p| p.track == track && !p.payload.is_empty())
        .map(|p| ((p.layer, p.seq_no & 0xffff), p.payload.to_vec()))
        .collect()
}

fn low16(fed: &BTreeMap<(u8, u64), Vec<u8>>) -> BTreeMap<(u8, u64), Vec<u8>> {
    fed.iter().map(|((l, s), p)| ((*l, s & 0xffff), p.clone())).collect()
}

#[test]
fn every_layer_crosses_once_numbered_as_the_publisher_numbered_it() {
    let mut r = Relay::connected();
    let (edge_track, edge_audio) = (r.edge_track.unwrap(), r.edge_audio.unwrap());
    let mut seen = Seen::default();
    let mut layers = layers();
    let (fed, audio) = send(&mut r, &mut layers, 60, &mut seen);
    r.run_into(Duration::from_millis(500), &mut seen);

    let got = received(&seen, edge_track);
    assert_eq!(got.len(), fed.len(), "every packet of every layer crossed");
    assert_eq!(got, low16(&fed), "same layers, numbers and payloads");
    // Once each: the edge handed no packet on twice.
    let video: Vec<_> = seen.edge_forwarded.iter().filter(|p| p.track == edge_track).collect();
    assert_eq!(video.len(), fed.len(), "no packet twice");
    // The edge reads the layers as simulcast and finds each layer's first keyframe.
    for layer in 0..3u8 {
        let first = video.iter().find(|p| p.layer == layer).expect("the layer crossed");
        assert_eq!(first.keyframe, KeyframeStart::Yes, "layer {layer} starts on its keyframe");
        assert!(first.simulcast);
    }
    assert_eq!(video.last().unwrap().live_layers, 0b111, "all three layers live at the edge");
    // Audio crosses on its own m-line, numbered as sent.
    let got_audio: BTreeSet<u64> =
        seen.edge_forwarded.iter().filter(|p| p.track == edge_audio).map(|p| p.seq_no & 0xffff).collect();
    assert_eq!(got_audio, audio, "every audio packet crossed");
    assert_eq!(seen.dropped, 0);
}

#[test]
fn loss_on_the_relay_link_is_repaired_from_the_origins_cache() {
    let mut r = Relay::connected();
    let edge_track = r.edge_track.unwrap();
    // 5 % of the relay's RTP lost: every 20th datagram, retransmissions included.
    r.lose = Box::new(|n| n % 20 == 7);
    let mut seen = Seen::default();
    let mut layers = layers();
    let (mut fed, _) = send(&mut r, &mut layers, 90, &mut seen);
    // Then a clean second: a lost last packet shows as a gap only when the next one arrives (NACK cannot see a loss
    // at the tail).
    r.lose = Box::new(|_| false);
    fed.extend(send(&mut r, &mut layers, 30, &mut seen).0);
    r.run_into(Duration::from_secs(1), &mut seen);

    assert!(seen.dropped > 50, "the link lost packets: {}", seen.dropped);
    let got = received(&seen, edge_track);
    let missing: Vec<_> = low16(&fed).keys().filter(|k| !got.contains_key(k)).copied().collect();
    assert!(
        missing.is_empty(),
        "{} of {} never reached the edge: {:?}",
        missing.len(),
        fed.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(got, low16(&fed), "repaired packets carry the publisher's bytes");
}

#[test]
fn the_edges_keyframe_requests_reach_the_origin_per_layer() {
    let mut r = Relay::connected();
    let edge_track = r.edge_track.unwrap();
    let mut seen = Seen::default();
    let mut layers = layers();
    send(&mut r, &mut layers, 10, &mut seen);
    for layer in [2u8, 0] {
        let mut seen = Seen::default();
        r.edge.handle_keyframe_request(r.now, edge_track, KeyframeRequestKind::Pli, layer);
        r.run_into(Duration::from_millis(100), &mut seen);
        assert_eq!(seen.origin_keyframe_requests, vec![(TRACK, layer)], "layer {layer}'s request crossed");
    }
}

#[test]
fn a_layer_the_edge_does_not_need_stops_crossing() {
    let mut r = Relay::connected();
    let edge_track = r.edge_track.unwrap();
    let mut layers = layers();
    // Nobody subscribes at the edge: after its dynacast delay, the edge's peer says only the lowest layer is needed
    // (what its signaling passes to the origin).
    let mut seen = Seen::default();
    send(&mut r, &mut layers, 30, &mut seen);
    r.run_into(sfu::peer::DYNACAST_DELAY + Duration::from_millis(500), &mut seen);
    let told = seen.edge_events.iter().find_map(|e| match e {
        PeerEvent::PublishLayers { track, layers } if *track == edge_track => Some(layers.clone()),
        _ => None,
    });
    let expected: Vec<(String, bool)> = vec![("q".into(), true), ("h".into(), false), ("f".into(), false)];
    assert_eq!(told, Some(expected));

    // The origin is told: the publisher hears the relay's demand, and only layer 0 crosses from then on.
    let mut seen = Seen::default();
    r.origin.set_relay_demand(TRACK, Some(0));
    r.run_into(Duration::from_millis(1), &mut seen);
    assert_eq!(seen.origin_layer_demands, vec![(TRACK, Some(0))]);
    let (fed, _) = send(&mut r, &mut layers, 30, &mut seen);
    let got = received(&seen, edge_track);
    assert!(got.keys().all(|(layer, _)| *layer == 0), "only layer 0 crossed");
    assert_eq!(got.len(), fed.keys().filter(|(l, _)| *l == 0).count(), "all of layer 0 crossed");

    // Needed again: layer 2 crosses again.
    let mut seen = Seen::default();
    r.origin.set_relay_demand(TRACK, Some(2));
    let (fed, _) = send(&mut r, &mut layers, 10, &mut seen);
    assert_eq!(seen.origin_layer_demands, vec![(TRACK, Some(2))]);
    assert_eq!(received(&seen, edge_track).len(), fed.len(), "every layer crosses again");
}

/// One node of the in-memory cluster below: its engine, its relay set-up, and the events of the peers it made.
struct Node {
    sfu: sfu::Sfu,
    setup: sfu::relay_setup::RelaySetup,
    events: tokio::sync::mpsc::UnboundedReceiver<(sfu::id::PeerId, PeerEvent)>,
    events_tx: tokio::sync::mpsc::UnboundedSender<(sfu::id::PeerId, PeerEvent)>,
    /// The relayed copies available here: remote track → local track.
    available: std::collections::HashMap<sfu::cascade::RemoteTrack, TrackId>,
    relay_closed: usize,
}

impl Node {
    async fn start() -> Node {
        let sfu = sfu::Sfu::start(sfu::SfuConfig { workers: 1, ..Default::default() }).await.unwrap();
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let setup = sfu::relay_setup::RelaySetup::new();
        Node { sfu, setup, events, events_tx, available: Default::default(), relay_closed: 0 }
    }

    /// Carry out the set-up's actions; messages for the other node are returned (the shell's Redis).
    async fn act(&mut self) -> Vec<(String, sfu::relay_setup::RelayMsg)> {
        use sfu::relay_setup::Action;
        let mut out = Vec::new();
        while let Some(a) = self.setup.poll() {
            match a {
                Action::Send { to, msg } => out.push((to, msg)),
                Action::CreateRelayPeer { node } => self.create_peer(&node, true).await,
                Action::CreateEdgePeer { node } => self.create_peer(&node, false).await,
                Action::Subscribe { peer, track } => self.sfu.subscribe(peer, track).await.unwrap(),
                Action::Unsubscribe { peer, track } => self.sfu.unsubscribe(peer, track).await.unwrap(),
                Action::Demand { peer, track, top } => self.sfu.relay_demand(peer, track, top).await.unwrap(),
                Action::Offer { peer, id, sdp } => self.sfu.offer(peer, id, sdp).await.unwrap(),
                Action::Answer { peer, id, sdp } => self.sfu.answer(peer, id, sdp).await.unwrap(),
                Action::ClosePeer { peer } => self.sfu.close_peer(peer).await.unwrap(),
                Action::Available { remote, local } => {
                    self.available.insert(remote, local);
                }
                Action::Unavailable { remote } => {
                    self.available.remove(&remote);
                }
            }
        }
        out
    }

    /// A relay peer towards `node` (`origin_side`), or the peer receiving its relays; its events feed the set-up.
    async fn create_peer(&mut self, node: &str, origin_side: bool) {
        let opts = sfu::engine::PeerOptions {
            can_publish: !origin_side,
            can_subscribe: origin_side,
            label: format!("relay {} {node}", if origin_side { "to" } else { "from" }),
            client_offers: false,
            relay: origin_side,
        };
        let (peer, mut rx) = self.sfu.create_peer(opts).await.unwrap();
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let _ = tx.send((peer, ev));
            }
        });
        self.setup.peer_created(node, peer, origin_side);
    }

    fn take_events(&mut self) {
        while let Ok((peer, ev)) = self.events.try_recv() {
            if matches!(ev, PeerEvent::Closed { .. }) {
                self.relay_closed += 1;
            }
            self.setup.handle_peer_event(peer, &ev);
        }
    }
}

/// Run both nodes' set-ups until `done`, carrying messages between them; fails after 10 s.
async fn settle(a: &mut Node, b: &mut Node, what: &str, mut done: impl FnMut(&Node, &Node) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(a, b) {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 10 s");
        a.take_events();
        b.take_events();
        for (to, msg) in a.act().await {
            assert_eq!(to, "b");
            b.setup.handle("a", msg);
        }
        for (to, msg) in b.act().await {
            assert_eq!(to, "a");
            a.setup.handle("b", msg);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two engines with real sockets on loopback and their relay set-ups, messages carried in memory: a client publishes
/// audio on node A; node B asks for it; A's relay peer (full ICE, from a socket of its own) connects to B's, B gets
/// the track and its packets; B no longer needs it and A's relay closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_set_a_relay_up_and_tear_it_down() {
    use common::client::{publish_audio, Link};

    let (mut a, mut b) = (Node::start().await, Node::start().await);
    let (published_tx, mut published) = tokio::sync::mpsc::unbounded_channel();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a_sfu, b_sfu, server) = (a.sfu.clone(), b.sfu.clone(), a.sfu.local_addr());
    // 4 s of audio; done once engine B counted 50 packets of it.
    let publisher = tokio::spawn(async move {
        let track = move |t| {
            let _ = published_tx.send(t);
        };
        publish_audio(&a_sfu, Link::Udp(udp), server, 200, track, move || b_sfu.stats().rtp_in >= 50).await;
    });
    let track = tokio::time::timeout(Duration::from_secs(10), published.recv()).await.unwrap().unwrap();
    let remote = sfu::cascade::RemoteTrack { node: "a".into(), track: track.to_string() };

    b.setup.open("a", track, None);
    settle(&mut a, &mut b, "the relayed track at B", |_, b| b.available.contains_key(&remote)).await;
    // The publisher stops once B has counted 50 of its packets (it fails after 20 s otherwise).
    publisher.await.expect("the audio crossed to engine B");
    assert!(b.sfu.stats().rtp_in >= 50, "engine B received the relayed packets: {:?}", b.sfu.stats());
    assert_eq!(b.sfu.stats().datagrams_unrouted, 0, "every datagram of the relay found its peer at B");
    assert_eq!(a.sfu.stats().peers, 2, "the publisher and one relay peer at A");

    // B needs it no more: A's relay, left with nothing, closes.
    b.setup.close("a", track);
    settle(&mut a, &mut b, "the relay closed", |a, _| a.relay_closed == 1).await;
    assert_eq!(a.sfu.stats().peers, 1, "only the publisher left at A");
    a.sfu.shutdown().await;
    b.sfu.shutdown().await;
}

/// Benchmark (on demand: `cargo test --release -p sfu --test relay -- --ignored --nocapture`): the cost of one relay
/// hop per packet, sans-I/O on one thread. Three VP8 layers (2.15 Mbit/s) and Opus cross for 20 s of virtual time; it
/// reports the time the origin's relay peer takes per packet (write, SRTP, transmit; a frame's packets timed
/// together) and the time the edge's peer
/// takes per datagram (SRTP, parse, hand-off), as percentiles, and the bytes on the link against the media's bytes.
#[test]
#[ignore]
fn bench_relay_hop_cost() {
    let mut r = Relay::connected();
    let edge_track = r.edge_track.unwrap();
    let mut layers = layers();
    let params = vp8_params();
    let (mut origin_ns, mut edge_ns) = (Vec::new(), Vec::new());
    let (mut media_bytes, mut link_bytes, mut crossed) = (0u64, 0u64, 0u64);
    let mut seen = Seen::default();
    for f in 0..600u32 {
        let mut pkts = Vec::new();
        for l in layers.iter_mut() {
            pkts.extend(l.frame(params, f, r.now));
        }
        // The origin: every packet of the frame written, then the timer pass that sends them (str0m queues on write
        // and transmits in `handle_timeout`, as the engine's worker runs it once per batch).
        let t = Instant::now();
        for p in &pkts {
            media_bytes += p.payload.len() as u64;
            r.origin.handle_forward(p);
        }
        r.origin.handle_timeout(r.now);
        let mut out = Vec::new();
        loop {
            match r.origin.poll_output() {
                PeerOutput::Timeout(_) => break,
                PeerOutput::Transmit(t) => out.push(t.contents.to_vec()),
                _ => {}
            }
        }
        let per_packet = t.elapsed().as_nanos() as u64 / pkts.len().max(1) as u64;
        origin_ns.extend(std::iter::repeat_n(per_packet, pkts.len()));
        for d in out {
            link_bytes += d.len() as u64;
            let t = Instant::now();
            let (src, dst) = (ORIGIN.parse().unwrap(), EDGE.parse().unwrap());
            r.edge.handle_receive(r.now, Protocol::Udp, src, dst, &d);
            loop {
                match r.edge.poll_output() {
                    PeerOutput::Timeout(_) => break,
                    PeerOutput::Forward(p) if p.track == edge_track => crossed += 1,
                    PeerOutput::Transmit(t) => r.to_origin.push_back(t.contents.to_vec()),
                    _ => {}
                }
            }
            edge_ns.push(t.elapsed().as_nanos() as u64);
        }
        r.run_into(Duration::from_millis(33), &mut seen);
    }
    // Packets the timer pass released (str0m paces within a timeout) went through `run_into`: count them too.
    crossed += seen.edge_forwarded.iter().filter(|p| p.track == edge_track).count() as u64;
    origin_ns.sort_unstable();
    edge_ns.sort_unstable();
    let pct = |v: &[u64], p: f64| v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!(
        "relay hop: {} packets fed, {} crossed | origin relay peer per packet: p50 {:.1} µs p99 {:.1} µs | edge peer per \
         datagram: p50 {:.1} µs p99 {:.1} µs ({} timed) | link bytes {} for media payload {} (+{:.1} %)",
        origin_ns.len(),
        crossed,
        pct(&origin_ns, 0.5),
        pct(&origin_ns, 0.99),
        pct(&edge_ns, 0.5),
        pct(&edge_ns, 0.99),
        edge_ns.len(),
        link_bytes,
        media_bytes,
        (link_bytes as f64 / media_bytes as f64 - 1.0) * 100.0
    );
    assert!(crossed as usize >= origin_ns.len() * 99 / 100, "the packets crossed");
}

/// A cut of the relay link (nothing passes either way) ends the relay on both sides: the origin's full ICE agent
/// stops hearing answers to its checks, the edge's peer stops hearing the origin; each side's peer closes and the
/// set-up turns that into the track gone (origin) and unavailable (edge), so the edge asks again.
#[test]
fn a_cut_relay_link_closes_both_sides() {
    let mut r = Relay::connected();
    let mut layers = layers();
    let mut seen = Seen::default();
    send(&mut r, &mut layers, 30, &mut seen);
    r.cut = true;
    let cut_at = r.now;
    let (mut origin_closed, mut edge_closed) = (None, None);
    for _ in 0..120 {
        let mut seen = Seen::default();
        r.run_into(Duration::from_millis(500), &mut seen);
        if seen.origin_events.iter().any(|e| matches!(e, PeerEvent::Closed { .. })) {
            origin_closed.get_or_insert(r.now - cut_at);
        }
        if seen.edge_events.iter().any(|e| matches!(e, PeerEvent::Closed { .. })) {
            edge_closed.get_or_insert(r.now - cut_at);
        }
        if origin_closed.is_some() && edge_closed.is_some() {
            break;
        }
    }
    let (o, e) = (origin_closed.expect("the origin's relay peer closes"), edge_closed.expect("the edge's peer closes"));
    // The origin's relay checks every second and gives up after six unanswered (peer::RELAY_STUN_*); the edge's
    // peer is an ordinary one, closed by its liveness timeout.
    assert!(o <= Duration::from_secs(10), "the origin's side closed within 10 s: {o:?}");
    assert!(e <= Duration::from_secs(20), "the edge's side closed within 20 s: {e:?}");
    println!("relay link cut: origin side closed after {o:?}, edge side after {e:?}");
}
