//! Setting relays up between two nodes: the messages the nodes exchange, and what each engine must do on them
//! (sans-I/O). The relay peers themselves are [`crate::relay`]'s; which remote tracks a node needs is
//! [`crate::cascade::Demand`]'s.
//!
//! Each node runs one [`RelaySetup`]. As the **origin** of a track it keeps, per edge node, one relay peer that
//! carries every track that edge asked for: the first `Open` creates the peer, each further one subscribes it to one
//! more track (a renegotiation), `Close` unsubscribes, and a relay left with no track is closed. As an **edge** it
//! keeps, per origin node, the one peer that receives that origin's relays: the origin's offers go to it, its answers
//! go back, and when it publishes a relayed track the node learns which local track stands for which remote one
//! ([`Action::Available`]). The edge peer's dynacast (which layers the edge's own subscribers need) is passed back as
//! `Layers`, so a layer nobody at the edge needs does not cross.
//!
//! Both sides are driven the same way: feed it what arrived ([`RelaySetup::handle`] for a message from another node,
//! [`RelaySetup::handle_peer_event`] for an event of one of its peers, [`RelaySetup::peer_created`] when a peer it
//! asked for exists), then take [`RelaySetup::poll`] until `None` and carry each [`Action`] out. The shell carries
//! the messages (over Redis) and runs the engine; nothing here waits or does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::cascade::RemoteTrack;
use crate::id::{PeerId, TrackId};
use crate::peer::PeerEvent;
use crate::relay::layer_of;

/// A message between two nodes about the relays from one to the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayMsg {
    /// Edge → origin: relay `track` (the origin's id) to me, layers up to `top` (`None`: only what audio needs).
    Open { track: TrackId, top: Option<u8> },
    /// Edge → origin: relay layers of `track` up to `top` only (`None`: none for now).
    Layers { track: TrackId, top: Option<u8> },
    /// Edge → origin: I need `track` no more.
    Close { track: TrackId },
    /// Origin → edge: an offer for the relay; `mids` says which m-line carries which of the origin's tracks.
    Offer { id: u64, sdp: String, mids: Vec<(String, TrackId)> },
    /// Edge → origin: the answer to offer `id`.
    Answer { id: u64, sdp: String },
    /// Origin → edge: `track` is not (or no longer) relayed: unknown here, unpublished, or the relay failed.
    Gone { track: TrackId },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `msg` to node `to`.
    Send {
        to: String,
        msg: RelayMsg,
    },
    /// Create the relay peer towards edge `node` (`PeerOptions::relay`), then call [`RelaySetup::peer_created`].
    CreateRelayPeer {
        node: String,
    },
    /// Create the peer receiving `node`'s relays (a publishing peer), then call [`RelaySetup::peer_created`].
    CreateEdgePeer {
        node: String,
    },
    /// Engine calls on `peer`.
    Subscribe {
        peer: PeerId,
        track: TrackId,
    },
    Unsubscribe {
        peer: PeerId,
        track: TrackId,
    },
    Demand {
        peer: PeerId,
        track: TrackId,
        top: Option<u8>,
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
    ClosePeer {
        peer: PeerId,
    },
    /// Edge: the relayed `remote` track is `local` on this node's engine; subscribe local members to it.
    Available {
        remote: RemoteTrack,
        local: TrackId,
    },
    /// Edge: `remote` is no longer relayed here (its local copy, if any, is unpublished by the engine).
    Unavailable {
        remote: RemoteTrack,
    },
}

/// The origin's side of the relay to one edge node.
#[derive(Debug, Default)]
struct ToEdge {
    peer: Option<PeerId>,
    /// Each relayed track and the top layer the edge needs.
    tracks: BTreeMap<TrackId, Option<u8>>,
    /// The relay's m-line of each track (from the peer's `Subscribed` events).
    mids: BTreeMap<TrackId, String>,
}

/// The edge's side of the relays from one origin node.
#[derive(Debug, Default)]
struct FromOrigin {
    peer: Option<PeerId>,
    /// The origin's tracks this node asked for and has not closed.
    wanted: BTreeSet<TrackId>,
    /// Offers that came before the peer existed.
    waiting: Vec<(u64, String)>,
    /// m-line → the origin's track, from the offers.
    mids: HashMap<String, TrackId>,
    /// The local copy of each relayed track.
    local: HashMap<TrackId, TrackId>,
}

/// One node's relays, both as origin and as edge. See the module doc.
#[derive(Debug, Default)]
pub struct RelaySetup {
    to_edges: BTreeMap<String, ToEdge>,
    from_origins: BTreeMap<String, FromOrigin>,
    /// Which link each of this node's relay and edge peers serves: (node, is this node the origin).
    peers: HashMap<PeerId, (String, bool)>,
    out: VecDeque<Action>,
}

impl RelaySetup {
    pub fn new() -> RelaySetup {
        RelaySetup::default()
    }

    /// This node (as edge) needs `track` of node `origin`, up to layer `top`.
    pub fn open(&mut self, origin: &str, track: TrackId, top: Option<u8>) {
        self.from_origins.entry(origin.to_string()).or_default().wanted.insert(track);
        self.send(origin, RelayMsg::Open { track, top });
    }

    /// This node (as edge) needs `track` of node `origin` up to `top` only.
    pub fn layers(&mut self, origin: &str, track: TrackId, top: Option<u8>) {
        self.send(origin, RelayMsg::Layers { track, top });
    }

    /// This node (as edge) needs `track` of node `origin` no more. The last one closed closes the peer receiving
    /// that origin's relays at once (the origin closes its side too), rather than after a liveness timeout.
    pub fn close(&mut self, origin: &str, track: TrackId) {
        self.send(origin, RelayMsg::Close { track });
        let Some(link) = self.from_origins.get_mut(origin) else { return };
        link.wanted.remove(&track);
        // The shell forgets its copy itself; the engine drops it with the relay.
        link.local.remove(&track);
        if link.wanted.is_empty() {
            self.origin_lost(origin, true);
        }
    }

    /// A message from node `from`.
    pub fn handle(&mut self, from: &str, msg: RelayMsg) {
        match msg {
            // --- as origin ---
            RelayMsg::Open { track, top } => {
                let link = self.to_edges.entry(from.to_string()).or_default();
                let new = link.tracks.insert(track, top).is_none();
                match link.peer {
                    Some(peer) if new => {
                        self.out.push_back(Action::Subscribe { peer, track });
                        self.out.push_back(Action::Demand { peer, track, top: top.or(Some(0)) });
                    }
                    Some(peer) => self.out.push_back(Action::Demand { peer, track, top: top.or(Some(0)) }),
                    None if link.tracks.len() == 1 => {
                        self.out.push_back(Action::CreateRelayPeer { node: from.to_string() })
                    }
                    None => {} // subscribed once the peer exists
                }
            }
            RelayMsg::Layers { track, top } => {
                let Some(link) = self.to_edges.get_mut(from) else { return };
                if let Some(t) = link.tracks.get_mut(&track) {
                    *t = top;
                    if let Some(peer) = link.peer {
                        self.out.push_back(Action::Demand { peer, track, top });
                    }
                }
            }
            RelayMsg::Close { track } => self.stop_relaying(from, track),
            RelayMsg::Answer { id, sdp } => {
                if let Some(peer) = self.to_edges.get(from).and_then(|l| l.peer) {
                    self.out.push_back(Action::Answer { peer, id, sdp });
                }
            }
            // --- as edge ---
            RelayMsg::Offer { id, sdp, mids } => {
                // An offer for relays this node no longer wants (it closed them meanwhile) is stale.
                let Some(link) = self.from_origins.get_mut(from).filter(|l| !l.wanted.is_empty()) else { return };
                link.mids.extend(mids);
                match link.peer {
                    Some(peer) => self.out.push_back(Action::Offer { peer, id, sdp }),
                    None => {
                        if link.waiting.is_empty() {
                            self.out.push_back(Action::CreateEdgePeer { node: from.to_string() });
                        }
                        link.waiting.push((id, sdp));
                    }
                }
            }
            RelayMsg::Gone { track } => {
                let remote = RemoteTrack { node: from.to_string(), track: track.to_string() };
                if let Some(link) = self.from_origins.get_mut(from) {
                    link.local.remove(&track);
                }
                self.out.push_back(Action::Unavailable { remote });
            }
        }
    }

    /// The peer asked for with [`Action::CreateRelayPeer`] or [`Action::CreateEdgePeer`] for `node` exists.
    pub fn peer_created(&mut self, node: &str, peer: PeerId, origin_side: bool) {
        self.peers.insert(peer, (node.to_string(), origin_side));
        if origin_side {
            let Some(link) = self.to_edges.get_mut(node) else {
                self.out.push_back(Action::ClosePeer { peer });
                return;
            };
            link.peer = Some(peer);
            for (&track, &top) in &link.tracks {
                self.out.push_back(Action::Subscribe { peer, track });
                self.out.push_back(Action::Demand { peer, track, top: top.or(Some(0)) });
            }
            if link.tracks.is_empty() {
                self.close_to_edge(node);
            }
        } else {
            let link = self.from_origins.entry(node.to_string()).or_default();
            link.peer = Some(peer);
            for (id, sdp) in std::mem::take(&mut link.waiting) {
                self.out.push_back(Action::Offer { peer, id, sdp });
            }
        }
    }

    /// An event of one of this node's relay or edge peers (others are ignored).
    pub fn handle_peer_event(&mut self, peer: PeerId, event: &PeerEvent) {
        let Some((node, origin_side)) = self.peers.get(&peer).cloned() else { return };
        if origin_side {
            let Some(link) = self.to_edges.get_mut(&node) else { return };
            match event {
                PeerEvent::Subscribed { track, mid } => {
                    link.mids.insert(*track, mid.clone());
                }
                PeerEvent::Offer { id, sdp } => {
                    let mids = link.mids.iter().map(|(t, m)| (m.clone(), *t)).collect();
                    self.send(&node, RelayMsg::Offer { id: *id, sdp: sdp.clone(), mids });
                }
                PeerEvent::Closed { reason } => {
                    // The relay failed (ICE, DTLS, a fault): the edge hears every track gone and asks again.
                    tracing::info!(edge = %node, ?reason, "relay to edge closed");
                    self.peers.remove(&peer);
                    if let Some(link) = self.to_edges.remove(&node) {
                        for track in link.tracks.into_keys() {
                            self.send(&node, RelayMsg::Gone { track });
                        }
                    }
                }
                _ => {}
            }
            return;
        }
        let Some(link) = self.from_origins.get_mut(&node) else { return };
        match event {
            PeerEvent::Answer { id, sdp } => self.send(&node, RelayMsg::Answer { id: *id, sdp: sdp.clone() }),
            PeerEvent::TrackPublished { track: local, mid, .. } => {
                if let Some(&remote) = link.mids.get(mid) {
                    link.local.insert(remote, *local);
                    let remote = RemoteTrack { node: node.clone(), track: remote.to_string() };
                    self.out.push_back(Action::Available { remote, local: *local });
                }
            }
            PeerEvent::TrackUnpublished { track: local } => {
                if let Some(remote) = link.local.iter().find(|(_, l)| *l == local).map(|(r, _)| *r) {
                    link.local.remove(&remote);
                    let remote = RemoteTrack { node: node.clone(), track: remote.to_string() };
                    self.out.push_back(Action::Unavailable { remote });
                }
            }
            PeerEvent::PublishLayers { track: local, layers } => {
                let Some(remote) = link.local.iter().find(|(_, l)| *l == local).map(|(r, _)| *r) else { return };
                let top = layers.iter().filter(|(_, on)| *on).filter_map(|(rid, _)| layer_of(rid)).max();
                self.send(&node, RelayMsg::Layers { track: remote, top });
            }
            PeerEvent::Closed { reason } => {
                tracing::info!(origin = %node, ?reason, "relays from origin closed");
                self.peers.remove(&peer);
                self.origin_lost(&node, false);
            }
            _ => {}
        }
    }

    /// Node `node` is gone (its registry entry expired): relays to it close, relays from it are lost.
    pub fn node_gone(&mut self, node: &str) {
        self.close_to_edge(node);
        self.origin_lost(node, true);
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// The origin of `track` here: it was unpublished, so every edge relaying it hears it gone.
    pub fn track_unpublished(&mut self, track: TrackId) {
        let edges: Vec<String> =
            self.to_edges.iter().filter(|(_, l)| l.tracks.contains_key(&track)).map(|(n, _)| n.clone()).collect();
        for edge in edges {
            self.stop_relaying(&edge, track);
            self.send(&edge, RelayMsg::Gone { track });
        }
    }

    fn stop_relaying(&mut self, edge: &str, track: TrackId) {
        let Some(link) = self.to_edges.get_mut(edge) else { return };
        if link.tracks.remove(&track).is_none() {
            return;
        }
        link.mids.remove(&track);
        if let Some(peer) = link.peer {
            self.out.push_back(Action::Unsubscribe { peer, track });
        }
        if link.tracks.is_empty() {
            self.close_to_edge(edge);
        }
    }

    /// A relay nobody needs closes.
    fn close_to_edge(&mut self, edge: &str) {
        if let Some(link) = self.to_edges.remove(edge) {
            if let Some(peer) = link.peer {
                self.peers.remove(&peer);
                self.out.push_back(Action::ClosePeer { peer });
            }
        }
    }

    fn origin_lost(&mut self, origin: &str, close_peer: bool) {
        let Some(link) = self.from_origins.remove(origin) else { return };
        if let Some(peer) = link.peer.filter(|_| close_peer) {
            self.peers.remove(&peer);
            self.out.push_back(Action::ClosePeer { peer });
        }
        for remote in link.local.into_keys() {
            let remote = RemoteTrack { node: origin.to_string(), track: remote.to_string() };
            self.out.push_back(Action::Unavailable { remote });
        }
    }

    fn send(&mut self, to: &str, msg: RelayMsg) {
        self.out.push_back(Action::Send { to: to.to_string(), msg });
    }
}

/// For the log: what a message is about, without its SDP.
impl std::fmt::Display for RelayMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayMsg::Open { track, .. } => write!(f, "open {track}"),
            RelayMsg::Layers { track, top } => write!(f, "layers {track} {top:?}"),
            RelayMsg::Close { track } => write!(f, "close {track}"),
            RelayMsg::Offer { id, .. } => write!(f, "offer {id}"),
            RelayMsg::Answer { id, .. } => write!(f, "answer {id}"),
            RelayMsg::Gone { track } => write!(f, "gone {track}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::CloseReason;
    use str0m::media::MediaKind;

    fn drain(s: &mut RelaySetup) -> Vec<Action> {
        std::iter::from_fn(|| s.poll()).collect()
    }

    const T1: TrackId = TrackId(1);
    const T2: TrackId = TrackId(2);

    #[test]
    fn the_origin_makes_one_relay_per_edge_and_closes_it_when_nothing_is_left() {
        let mut o = RelaySetup::new();
        o.handle("b", RelayMsg::Open { track: T1, top: Some(2) });
        o.handle("b", RelayMsg::Open { track: T2, top: None });
        assert_eq!(drain(&mut o), vec![Action::CreateRelayPeer { node: "b".into() }], "one peer for the pair");
        let relay = PeerId(10);
        o.peer_created("b", relay, true);
        assert_eq!(
            drain(&mut o),
            vec![
                Action::Subscribe { peer: relay, track: T1 },
                Action::Demand { peer: relay, track: T1, top: Some(2) },
                Action::Subscribe { peer: relay, track: T2 },
                Action::Demand { peer: relay, track: T2, top: Some(0) },
            ]
        );
        // Its offer goes to the edge with the track of each m-line.
        o.handle_peer_event(relay, &PeerEvent::Subscribed { track: T1, mid: "v1".into() });
        o.handle_peer_event(relay, &PeerEvent::Subscribed { track: T2, mid: "a1".into() });
        o.handle_peer_event(relay, &PeerEvent::Offer { id: 1, sdp: "o".into() });
        let mids = vec![("v1".to_string(), T1), ("a1".to_string(), T2)];
        let offer = RelayMsg::Offer { id: 1, sdp: "o".into(), mids };
        assert_eq!(drain(&mut o), vec![Action::Send { to: "b".into(), msg: offer }]);
        o.handle("b", RelayMsg::Answer { id: 1, sdp: "a".into() });
        o.handle("b", RelayMsg::Layers { track: T1, top: Some(0) });
        assert_eq!(
            drain(&mut o),
            vec![
                Action::Answer { peer: relay, id: 1, sdp: "a".into() },
                Action::Demand { peer: relay, track: T1, top: Some(0) },
            ]
        );
        // A track unpublished here is gone for the edge; the last one closed closes the relay.
        o.track_unpublished(T2);
        assert_eq!(
            drain(&mut o),
            vec![
                Action::Unsubscribe { peer: relay, track: T2 },
                Action::Send { to: "b".into(), msg: RelayMsg::Gone { track: T2 } },
            ]
        );
        o.handle("b", RelayMsg::Close { track: T1 });
        assert_eq!(
            drain(&mut o),
            vec![Action::Unsubscribe { peer: relay, track: T1 }, Action::ClosePeer { peer: relay }]
        );
        // A new need makes a new relay.
        o.handle("b", RelayMsg::Open { track: T1, top: Some(1) });
        assert_eq!(drain(&mut o), vec![Action::CreateRelayPeer { node: "b".into() }]);
    }

    #[test]
    fn a_failed_relay_tells_the_edge_every_track_is_gone() {
        let mut o = RelaySetup::new();
        o.handle("b", RelayMsg::Open { track: T1, top: Some(2) });
        o.peer_created("b", PeerId(10), true);
        drain(&mut o);
        o.handle_peer_event(PeerId(10), &PeerEvent::Closed { reason: CloseReason::Disconnected });
        assert_eq!(drain(&mut o), vec![Action::Send { to: "b".into(), msg: RelayMsg::Gone { track: T1 } }]);
        // A node that is gone takes its relay with it.
        o.handle("c", RelayMsg::Open { track: T1, top: None });
        o.peer_created("c", PeerId(11), true);
        drain(&mut o);
        o.node_gone("c");
        assert_eq!(drain(&mut o), vec![Action::ClosePeer { peer: PeerId(11) }]);
    }

    #[test]
    fn the_edge_maps_relayed_tracks_and_passes_its_dynacast_back() {
        let mut e = RelaySetup::new();
        e.open("a", T1, Some(2));
        assert_eq!(
            drain(&mut e),
            vec![Action::Send { to: "a".into(), msg: RelayMsg::Open { track: T1, top: Some(2) } }]
        );
        // The offer comes before the peer exists: it waits for it.
        e.handle("a", RelayMsg::Offer { id: 1, sdp: "o".into(), mids: vec![("v1".into(), T1)] });
        assert_eq!(drain(&mut e), vec![Action::CreateEdgePeer { node: "a".into() }]);
        let edge = PeerId(20);
        e.peer_created("a", edge, false);
        assert_eq!(drain(&mut e), vec![Action::Offer { peer: edge, id: 1, sdp: "o".into() }]);
        e.handle_peer_event(edge, &PeerEvent::Answer { id: 1, sdp: "a".into() });
        let local = TrackId(99);
        let published = PeerEvent::TrackPublished { track: local, mid: "v1".into(), kind: MediaKind::Video };
        e.handle_peer_event(edge, &published);
        let remote = RemoteTrack { node: "a".into(), track: T1.to_string() };
        assert_eq!(
            drain(&mut e),
            vec![
                Action::Send { to: "a".into(), msg: RelayMsg::Answer { id: 1, sdp: "a".into() } },
                Action::Available { remote: remote.clone(), local },
            ]
        );
        // Nobody here needs more than q: the origin hears it in its own track's terms.
        let layers = vec![("q".to_string(), true), ("h".to_string(), false), ("f".to_string(), false)];
        e.handle_peer_event(edge, &PeerEvent::PublishLayers { track: local, layers });
        assert_eq!(
            drain(&mut e),
            vec![Action::Send { to: "a".into(), msg: RelayMsg::Layers { track: T1, top: Some(0) } }]
        );
        // The origin's node dies: the copy is gone here, and the peer closed.
        e.node_gone("a");
        assert_eq!(drain(&mut e), vec![Action::ClosePeer { peer: edge }, Action::Unavailable { remote }]);
    }

    #[test]
    fn the_edge_closes_its_peer_with_the_last_track_it_needs_and_ignores_a_stale_offer() {
        let mut e = RelaySetup::new();
        e.open("a", T1, Some(2));
        e.open("a", T2, None);
        e.handle("a", RelayMsg::Offer { id: 1, sdp: "o".into(), mids: vec![("v1".into(), T1), ("a1".into(), T2)] });
        let edge = PeerId(20);
        e.peer_created("a", edge, false);
        drain(&mut e);
        e.close("a", T1);
        assert_eq!(drain(&mut e), vec![Action::Send { to: "a".into(), msg: RelayMsg::Close { track: T1 } }]);
        e.close("a", T2);
        assert_eq!(
            drain(&mut e),
            vec![Action::Send { to: "a".into(), msg: RelayMsg::Close { track: T2 } }, Action::ClosePeer { peer: edge }]
        );
        // The origin's renegotiation that crossed the close creates nothing.
        e.handle("a", RelayMsg::Offer { id: 2, sdp: "o".into(), mids: vec![] });
        assert_eq!(drain(&mut e), vec![]);
        // Asked again later: a new peer.
        e.open("a", T1, Some(2));
        e.handle("a", RelayMsg::Offer { id: 3, sdp: "o".into(), mids: vec![("v1".into(), T1)] });
        let actions = drain(&mut e);
        assert_eq!(actions.last(), Some(&Action::CreateEdgePeer { node: "a".into() }), "{actions:?}");
    }

    #[test]
    fn track_ids_cross_nodes_as_text() {
        let t = TrackId::random();
        assert_eq!(t.to_string().parse::<TrackId>(), Ok(t));
    }
}
