//! A simulated network for one server [`Peer`] and one client (a str0m `Rtc`), with a virtual clock: datagrams
//! are delivered in memory and time jumps to the next timeout, so tests are deterministic and fast.

#![allow(dead_code)]

use std::net::SocketAddr;
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
    pub client_events: Vec<String>,
    pub client_connected: bool,
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
}

impl Pair {
    pub fn new() -> Pair {
        let now = Instant::now();
        let config = PeerConfig {
            can_publish: true,
            can_subscribe: true,
            udp_addr: SERVER.parse().unwrap(),
            keyframe_request_interval: Duration::from_millis(500),
        };
        let peer = Peer::new(PeerId(1), config, IceCreds::new(), now);
        let mut client = Rtc::builder().build(now);
        client.add_local_candidate(Candidate::host(CLIENT.parse().unwrap(), "udp").unwrap());
        Pair { now, peer, client }
    }

    /// Move datagrams both ways and advance the clock to each next timeout, for `duration` of virtual time.
    pub fn run(&mut self, duration: Duration) -> Out {
        let server: SocketAddr = SERVER.parse().unwrap();
        let client_addr: SocketAddr = CLIENT.parse().unwrap();
        let end = self.now + duration;
        let mut out = Out::default();
        for _ in 0..100_000 {
            let mut next = end;
            // Server side.
            loop {
                match self.peer.poll_output() {
                    PeerOutput::Timeout(t) => {
                        next = next.min(t);
                        break;
                    }
                    PeerOutput::Transmit(t) => {
                        let input = Input::Receive(
                            self.now,
                            Receive {
                                proto: Protocol::Udp,
                                source: server,
                                destination: client_addr,
                                contents: (&t.contents[..]).try_into().unwrap(),
                            },
                        );
                        let _ = self.client.handle_input(input);
                        next = self.now;
                    }
                    PeerOutput::Event(e) => out.events.push(e),
                    PeerOutput::KeyframeRequest { track, .. } => out.keyframe_requests.push(track),
                    PeerOutput::Forward(p) => out.forwarded.push(p),
                }
            }
            // Client side.
            loop {
                match self.client.poll_output().unwrap() {
                    Output::Timeout(t) => {
                        next = next.min(t);
                        break;
                    }
                    Output::Transmit(t) => {
                        self.peer.handle_receive(self.now, client_addr, server, &t.contents);
                        next = self.now;
                    }
                    Output::Event(e) => {
                        if matches!(e, Event::Connected) {
                            out.client_connected = true;
                        }
                        out.client_events.push(format!("{e:?}"));
                    }
                }
            }
            if next >= end {
                self.now = end;
                self.peer.handle_timeout(end);
                let _ = self.client.handle_input(Input::Timeout(end));
                return out;
            }
            if next > self.now {
                self.now = next;
            }
            self.peer.handle_timeout(self.now);
            let _ = self.client.handle_input(Input::Timeout(self.now));
        }
        panic!("the pair never settled");
    }
}
