//! A simulated network for one server [`Peer`] and one client (a str0m `Rtc`), with a virtual clock: datagrams
//! are delivered in memory and time jumps to the next timeout, so tests are deterministic and fast.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sfu::id::{PeerId, TrackId};
use sfu::peer::{ForwardPacket, Peer, PeerConfig, PeerEvent, PeerOutput};
use str0m::net::{Protocol, Receive};
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
    pub client_events: Vec<String>,
    pub client_connected: bool,
    /// Sequence numbers of RTP packets the client received (RTX already unwrapped by str0m).
    pub client_rtp: Vec<u64>,
    /// (sequence number, RTP timestamp, payload) of each RTP packet the client received.
    pub client_payloads: Vec<(u64, u32, Vec<u8>)>,
    /// RTCP NACKs the server peer received from the client are visible only as retransmissions; this counts
    /// server → client datagrams dropped by the simulated network.
    pub dropped: usize,
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
    to_client: VecDeque<Vec<u8>>,
    to_server: VecDeque<Vec<u8>>,
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
        let now = Instant::now();
        let config = PeerConfig {
            can_publish: true,
            can_subscribe: true,
            udp_addr: SERVER.parse().unwrap(),
            keyframe_request_interval: Duration::from_millis(500),
            // These tests drive down-tracks directly; the allocator has its own (simulated-time) tests.
            bwe_initial: None,
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
        }
    }

    /// A connected pair whose client (in RTP mode) receives video `track` from the server peer, and the VP8
    /// codec parameters a publisher of it would attach to its packets.
    pub fn subscribed_video(track: TrackId) -> (Pair, str0m::format::PayloadParams) {
        let mut p = Pair::with_client(|b| b.set_rtp_mode(true));
        p.peer.add_downtrack(track, str0m::media::MediaKind::Video, PeerId(9));
        let (id, offer) = p.run(Duration::from_millis(1)).offers().remove(0);
        let offer = str0m::change::SdpOffer::from_sdp_string(&offer).expect("server offer parses");
        let answer = p.client.sdp_api().accept_offer(offer).expect("client accepts the offer");
        p.peer.handle_answer(p.now, id, &answer.to_sdp_string()).expect("server accepts the answer");
        let out = p.run(Duration::from_secs(2));
        assert!(out.client_connected, "{:?}", out.client_events);
        let params =
            *p.client.codec_config().find(|c| c.spec().codec == str0m::format::Codec::Vp8).expect("VP8 configured");
        (p, params)
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
        for _ in 0..200_000 {
            let mut next = end;
            next = next.min(self.drain_server(&mut out, &mut to_client));
            next = next.min(self.drain_client(&mut out, &mut to_server));
            if let Some(d) = to_client.pop_front() {
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
            if let Some(d) = to_server.pop_front() {
                self.peer.handle_receive(self.now, CLIENT.parse().unwrap(), SERVER.parse().unwrap(), &d);
                continue;
            }
            if next >= end {
                self.now = end;
                self.peer.handle_timeout(end);
                let _ = self.client.handle_input(Input::Timeout(end));
                self.drain_server(&mut out, &mut to_client);
                self.drain_client(&mut out, &mut to_server);
                self.to_client = to_client;
                self.to_server = to_server;
                return out;
            }
            self.now = self.now.max(next);
            self.peer.handle_timeout(self.now);
            let _ = self.client.handle_input(Input::Timeout(self.now));
        }
        panic!("the pair never settled");
    }

    fn drain_server(&mut self, out: &mut Out, to_client: &mut VecDeque<Vec<u8>>) -> Instant {
        loop {
            match self.peer.poll_output() {
                PeerOutput::Timeout(t) => return t,
                PeerOutput::Transmit(t) => {
                    if is_rtp(&t.contents) {
                        let n = self.rtp_to_client;
                        self.rtp_to_client += 1;
                        if (self.lose)(n) {
                            out.dropped += 1;
                            continue;
                        }
                    }
                    to_client.push_back(t.contents.to_vec());
                }
                PeerOutput::Event(e) => out.events.push(e),
                PeerOutput::KeyframeRequest { track, .. } => out.keyframe_requests.push(track),
                PeerOutput::Forward(p) => out.forwarded.push(p),
                PeerOutput::LayerDemand { track, demand } => out.layer_demands.push((track, demand)),
            }
        }
    }

    fn drain_client(&mut self, out: &mut Out, to_server: &mut VecDeque<Vec<u8>>) -> Instant {
        loop {
            match self.client.poll_output().expect("client poll") {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => to_server.push_back(t.contents.to_vec()),
                Output::Event(e) => {
                    if matches!(e, Event::Connected) {
                        out.client_connected = true;
                    }
                    if let Event::RtpPacket(p) = &e {
                        out.client_rtp.push(*p.seq_no);
                        out.client_payloads.push((*p.seq_no, p.header.timestamp, p.payload.to_vec()));
                    }
                    out.client_events.push(format!("{e:?}"));
                }
            }
        }
    }
}
