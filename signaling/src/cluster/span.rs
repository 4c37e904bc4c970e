//! Rooms that span nodes (issue 19): the shell that keeps a room's parts on several nodes in step and relays tracks
//! between them.
//!
//! A room lives on one node ([`super::placement`]), but a join that reaches a node of another region is served
//! there, in a *part* of the room ([`crate::room::Rooms::open_part`]). Every node that serves members of a room
//! (its own node included) then:
//!
//! - **publishes the changes of its part** (joined, left, published, unpublished, renamed), numbered per (room,
//!   node), on the room's channel, which every node with a member there already follows for the room's chat;
//! - **mirrors the other parts** with a [`RoomMirror`] per room: changes applied in order, a snapshot asked for
//!   (`Want`) on a gap or when its part opens, answered by every part (`Snapshot`); what comes out is shown to the
//!   local members as remote participants ([`crate::room::Rooms::apply_remote`]);
//! - **relays every track of the other parts** it has members for: [`RelaySetup`] opens one relay peer per pair of
//!   nodes (its messages cross on the receiving node's own channel), and each relayed track is announced to the
//!   local members once its copy is available here, so they subscribe to it like to a local publisher's track; the
//!   engine's allocator picks layers per subscriber, and the edge's dynacast stops layers nobody here needs.
//!
//! Sequence numbers start at the time the part opened (ms × 1000), so a part opened again, or a node restarted,
//! shows up as a gap and is resynchronised from a snapshot rather than taken for a repeat. One task owns all of it:
//! it takes the registry's changes, the bus's span messages, the relay peers' events and a tick, in one queue.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use courier_protocol::ParticipantInfo;
use serde::{Deserialize, Serialize};
use sfu::cascade::RemoteTrack;
use sfu::relay_setup::{Action, RelayMsg, RelaySetup};
use sfu::{MediaKind, PeerEvent, PeerId, PeerOptions, TrackId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::mirror::{self, Change, RoomMirror, Step};
use super::registry::PREFIX;
use super::shell::Cluster;
use crate::AppState;

/// The channel a node reads the relay messages meant for it on.
pub fn node_channel(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}

/// A relay that was lost while its track is still wanted is asked for again after this long.
const REOPEN_AFTER: Duration = Duration::from_secs(2);

/// A span message, as it crosses the bus inside [`super::bus::BusMsg::Span`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum SpanMsg {
    /// Change number `seq` of the sender's part of `room`.
    Change { room: String, seq: u64, change: Change },
    /// Parts of `room` (only node `of`, if set): send your snapshot.
    Want { room: String, of: Option<String> },
    /// The sender's part of `room` as of its change `seq`.
    Snapshot { room: String, seq: u64, members: Vec<ParticipantInfo> },
    /// A relay set-up message for node `to` (published on its [`node_channel`]).
    Relay { to: String, msg: RelayWire },
}

/// [`RelayMsg`] on the wire (track ids as the engine's hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum RelayWire {
    Open { track: String, top: Option<u8> },
    Layers { track: String, top: Option<u8> },
    Close { track: String },
    Offer { id: u64, sdp: String, mids: Vec<(String, String)> },
    Answer { id: u64, sdp: String },
    Gone { track: String },
}

impl From<RelayMsg> for RelayWire {
    fn from(m: RelayMsg) -> Self {
        match m {
            RelayMsg::Open { track, top } => RelayWire::Open { track: track.to_string(), top },
            RelayMsg::Layers { track, top } => RelayWire::Layers { track: track.to_string(), top },
            RelayMsg::Close { track } => RelayWire::Close { track: track.to_string() },
            RelayMsg::Offer { id, sdp, mids } => {
                RelayWire::Offer { id, sdp, mids: mids.into_iter().map(|(m, t)| (m, t.to_string())).collect() }
            }
            RelayMsg::Answer { id, sdp } => RelayWire::Answer { id, sdp },
            RelayMsg::Gone { track } => RelayWire::Gone { track: track.to_string() },
        }
    }
}

impl RelayWire {
    /// The message, if every track id in it is well formed.
    pub fn to_msg(&self) -> Option<RelayMsg> {
        let t = |s: &str| TrackId::from_str(s).ok();
        Some(match self {
            RelayWire::Open { track, top } => RelayMsg::Open { track: t(track)?, top: *top },
            RelayWire::Layers { track, top } => RelayMsg::Layers { track: t(track)?, top: *top },
            RelayWire::Close { track } => RelayMsg::Close { track: t(track)? },
            RelayWire::Offer { id, sdp, mids } => RelayMsg::Offer {
                id: *id,
                sdp: sdp.clone(),
                mids: mids.iter().map(|(m, tr)| Some((m.clone(), t(tr)?))).collect::<Option<Vec<_>>>()?,
            },
            RelayWire::Answer { id, sdp } => RelayMsg::Answer { id: *id, sdp: sdp.clone() },
            RelayWire::Gone { track } => RelayMsg::Gone { track: t(track)? },
        })
    }
}

/// The engine's id of a track from its wire id (`TR_<hex>`).
fn engine_track(wire: &str) -> Option<TrackId> {
    TrackId::from_str(wire.strip_prefix("TR_")?).ok()
}

/// The top layer a relay of a track of `kind` asks for: every simulcast layer of a video (the edge's dynacast then
/// stops what nobody there needs), nothing layered for audio.
fn top_layer(kind: courier_protocol::MediaKind) -> Option<u8> {
    match kind {
        courier_protocol::MediaKind::Audio => None,
        courier_protocol::MediaKind::Video => Some(2),
    }
}

/// What the span task hears.
#[derive(Debug)]
pub enum SpanIn {
    /// A change of the members this node serves in `room` (`None`: a hidden member came or went).
    Local { room: String, change: Option<Change> },
    /// A span message from node `from`.
    Bus { from: String, msg: SpanMsg },
    /// An event of one of the relay peers.
    Peer { peer: PeerId, event: PeerEvent },
}

/// This node's part of one room.
#[derive(Debug)]
struct Part {
    seq: u64,
    /// The members served here (not hidden), as published.
    local: BTreeMap<String, ParticipantInfo>,
    mirror: RoomMirror,
}

/// A remote track this node relays for its members.
#[derive(Debug, Clone)]
struct Wanted {
    room: String,
    participant: String,
    track: courier_protocol::TrackInfo,
    /// When a lost relay is to be asked for again.
    reopen: Option<Instant>,
}

struct Span {
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
    me: String,
    tx: mpsc::UnboundedSender<SpanIn>,
    parts: HashMap<String, Part>,
    setup: RelaySetup,
    wanted: HashMap<RemoteTrack, Wanted>,
    available: HashMap<RemoteTrack, TrackId>,
    /// The live nodes as last seen, with their start time: a node that restarted under the same id is gone (its
    /// relays and members with it) and new.
    nodes: HashMap<String, u64>,
}

/// Run the span task until the server stops (the queue closes or the state is gone).
pub async fn run(
    cluster: Arc<Cluster>,
    state: Weak<AppState>,
    tx: mpsc::UnboundedSender<SpanIn>,
    mut rx: mpsc::UnboundedReceiver<SpanIn>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let me = cluster.node_id().to_string();
    let mut span = Span {
        cluster,
        state,
        me,
        tx,
        parts: HashMap::new(),
        setup: RelaySetup::new(),
        wanted: HashMap::new(),
        available: HashMap::new(),
        nodes: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
            input = rx.recv() => {
                let Some(input) = input else { return };
                span.input(input);
            }
            _ = tick.tick() => span.tick(),
        }
        if !span.act().await {
            return;
        }
    }
}

impl Span {
    fn input(&mut self, input: SpanIn) {
        match input {
            SpanIn::Local { room, change } => self.local(room, change),
            SpanIn::Bus { from, msg } => self.bus(from, msg),
            SpanIn::Peer { peer, event } => self.setup.handle_peer_event(peer, &event),
        }
    }

    fn publish(&self, channel: String, msg: SpanMsg) {
        self.cluster.publish_span(channel, msg);
    }

    fn state(&self) -> Option<Arc<AppState>> {
        self.state.upgrade()
    }

    /// A change of the members served here.
    fn local(&mut self, room: String, change: Option<Change>) {
        let present = self.state().map_or(0, |s| s.rooms.local_members(&room)) > 0;
        if let Some(Change::Unpublished { track, .. }) = &change {
            // As the origin: every edge relaying it hears it gone.
            if let Some(t) = engine_track(track) {
                self.setup.track_unpublished(t);
            }
        }
        if !self.parts.contains_key(&room) {
            if !present {
                return;
            }
            let seq = super::shell::now_ms() * 1000;
            self.parts.insert(room.clone(), Part { seq, local: BTreeMap::new(), mirror: RoomMirror::new() });
            // Learn the other parts (they answer with their snapshots; ours goes out with the next change).
            self.publish(super::bus::room_channel(&room), SpanMsg::Want { room: room.clone(), of: None });
        }
        let part = self.parts.get_mut(&room).expect("inserted above");
        if let Some(change) = change {
            mirror::apply(&mut part.local, change.clone());
            part.seq += 1;
            let msg = SpanMsg::Change { room: room.clone(), seq: part.seq, change };
            self.publish(super::bus::room_channel(&room), msg);
        }
        if !present {
            self.close_part(&room);
        }
    }

    /// Nobody is served here in `room` any more: its relays close, its remote members are forgotten.
    fn close_part(&mut self, room: &str) {
        self.parts.remove(room);
        let gone: Vec<RemoteTrack> =
            self.wanted.iter().filter(|(_, w)| w.room == room).map(|(r, _)| r.clone()).collect();
        for remote in gone {
            self.unwant(&remote);
        }
    }

    fn bus(&mut self, from: String, msg: SpanMsg) {
        match msg {
            SpanMsg::Change { room, seq, change } => {
                let Some(part) = self.parts.get_mut(&room) else { return };
                let step = part.mirror.on_change(&from, seq, change);
                self.step(&room, &from, step);
            }
            SpanMsg::Want { room, of } => {
                if of.as_deref().is_some_and(|n| n != self.me) {
                    return;
                }
                let Some(part) = self.parts.get(&room) else { return };
                let members = part.local.values().cloned().collect();
                let msg = SpanMsg::Snapshot { room: room.clone(), seq: part.seq, members };
                self.publish(super::bus::room_channel(&room), msg);
            }
            SpanMsg::Snapshot { room, seq, members } => {
                let Some(part) = self.parts.get_mut(&room) else { return };
                let step = part.mirror.on_snapshot(&from, seq, members);
                self.step(&room, &from, step);
            }
            SpanMsg::Relay { to, msg } => {
                if to != self.me {
                    return;
                }
                match msg.to_msg() {
                    Some(m) => self.setup.handle(&from, m),
                    None => debug!(from = %from, "a malformed relay message; dropped"),
                }
            }
        }
    }

    /// Show what the mirror of `room` says about node `node`'s part (or ask for its snapshot).
    fn step(&mut self, room: &str, node: &str, step: Step) {
        let (show, resync) = match step {
            Step::Show(show) => (show, false),
            Step::Resync { show, .. } => (show, true),
        };
        for change in show {
            self.show(room, node, change);
        }
        if resync {
            let msg = SpanMsg::Want { room: room.to_string(), of: Some(node.to_string()) };
            self.publish(super::bus::room_channel(room), msg);
        }
    }

    /// A change of `node`'s part of `room`, as the mirror shows it: to the local members, and to the relays.
    fn show(&mut self, room: &str, node: &str, change: Change) {
        let Some(state) = self.state() else { return };
        match &change {
            Change::Joined(info) | Change::Updated(info) => {
                state.rooms.apply_remote(room, node, change.clone());
                for t in info.tracks.clone() {
                    self.want(room, node, &info.id, t);
                }
            }
            Change::Published { participant, track } => self.want(room, node, participant, track.clone()),
            Change::Unpublished { participant, track } => {
                let remote = self
                    .wanted
                    .iter()
                    .find(|(_, w)| w.room == room && w.participant == *participant && w.track.id == *track)
                    .map(|(r, _)| r.clone());
                if let Some(remote) = remote {
                    self.unwant(&remote);
                }
            }
            Change::Left { participant } => {
                let gone: Vec<RemoteTrack> = self
                    .wanted
                    .iter()
                    .filter(|(_, w)| w.room == room && w.participant == *participant)
                    .map(|(r, _)| r.clone())
                    .collect();
                for remote in gone {
                    self.unwant(&remote);
                }
                state.rooms.apply_remote(room, node, change.clone());
            }
        }
    }

    /// Relay `track` of `participant` (served by `node`) here, for the members of `room`.
    fn want(&mut self, room: &str, node: &str, participant: &str, track: courier_protocol::TrackInfo) {
        let Some(engine) = engine_track(&track.id) else { return };
        let remote = RemoteTrack { node: node.to_string(), track: engine.to_string() };
        if self.wanted.contains_key(&remote) {
            return;
        }
        let top = top_layer(track.kind);
        debug!(room, node, track = %track.id, "relaying a remote track here");
        self.wanted.insert(
            remote,
            Wanted { room: room.to_string(), participant: participant.to_string(), track, reopen: None },
        );
        self.setup.open(node, engine, top);
    }

    fn unwant(&mut self, remote: &RemoteTrack) {
        let Some(w) = self.wanted.remove(remote) else { return };
        if let Ok(t) = TrackId::from_str(&remote.track) {
            self.setup.close(&remote.node, t);
        }
        if self.available.remove(remote).is_some() {
            if let Some(state) = self.state() {
                state.rooms.unpublish_remote(&w.room, &w.participant, &w.track.id);
            }
        }
    }

    /// Once a second: nodes gone from the registry, and lost relays asked for again.
    fn tick(&mut self) {
        let live: HashMap<String, u64> = self.cluster.nodes().into_iter().map(|n| (n.id, n.started_ms)).collect();
        if !live.is_empty() {
            let gone: Vec<String> = self
                .nodes
                .iter()
                .filter(|(id, started)| live.get(*id) != Some(started))
                .map(|(id, _)| id.clone())
                .collect();
            for node in gone {
                info!(node = %node, "a node serving rooms with us is gone");
                self.setup.node_gone(&node);
                let rooms: Vec<String> = self.parts.keys().cloned().collect();
                for room in rooms {
                    let left = self.parts.get_mut(&room).map(|p| p.mirror.node_gone(&node)).unwrap_or_default();
                    for change in left {
                        self.show(&room, &node, change);
                    }
                }
            }
            self.nodes = live;
        }
        let now = Instant::now();
        let due: Vec<(RemoteTrack, Option<u8>)> = self
            .wanted
            .iter_mut()
            .filter(|(_, w)| w.reopen.is_some_and(|at| at <= now))
            .map(|(r, w)| {
                w.reopen = None;
                (r.clone(), top_layer(w.track.kind))
            })
            .collect();
        for (remote, top) in due {
            if let Ok(t) = TrackId::from_str(&remote.track) {
                self.setup.open(&remote.node, t, top);
            }
        }
    }

    /// Carry out the relay set-up's actions. `false` when the server is gone.
    async fn act(&mut self) -> bool {
        let Some(state) = self.state() else { return false };
        let sfu = &state.sfu;
        while let Some(action) = self.setup.poll() {
            let done = match action {
                Action::Send { to, msg } => {
                    self.publish(node_channel(&to), SpanMsg::Relay { to, msg: msg.into() });
                    Ok(())
                }
                Action::CreateRelayPeer { node } => self.create_peer(&state, node, true).await,
                Action::CreateEdgePeer { node } => self.create_peer(&state, node, false).await,
                Action::Subscribe { peer, track } => {
                    let r = sfu.subscribe(peer, track).await;
                    if r.is_err() {
                        // Not (or no longer) published here: the edges asking for it hear it gone.
                        self.setup.track_unpublished(track);
                    }
                    r
                }
                Action::Unsubscribe { peer, track } => sfu.unsubscribe(peer, track).await,
                Action::Demand { peer, track, top } => sfu.relay_demand(peer, track, top).await,
                Action::Offer { peer, id, sdp } => sfu.offer(peer, id, sdp).await,
                Action::Answer { peer, id, sdp } => sfu.answer(peer, id, sdp).await,
                Action::ClosePeer { peer } => sfu.close_peer(peer).await,
                Action::Available { remote, local } => {
                    match self.wanted.get(&remote) {
                        Some(w) => {
                            let kind = match w.track.kind {
                                courier_protocol::MediaKind::Audio => MediaKind::Audio,
                                courier_protocol::MediaKind::Video => MediaKind::Video,
                            };
                            if state.rooms.publish_remote(&w.room, &w.participant, w.track.clone(), local, kind) {
                                self.available.insert(remote, local);
                            }
                        }
                        None => {
                            if let Ok(t) = TrackId::from_str(&remote.track) {
                                self.setup.close(&remote.node, t);
                            }
                        }
                    }
                    Ok(())
                }
                Action::Unavailable { remote } => {
                    if let Some(w) = self.wanted.get_mut(&remote) {
                        w.reopen = Some(Instant::now() + REOPEN_AFTER);
                        if self.available.remove(&remote).is_some() {
                            state.rooms.unpublish_remote(&w.room, &w.participant, &w.track.id);
                        }
                    }
                    Ok(())
                }
            };
            if let Err(e) = done {
                debug!(error = %e, "a relay action failed");
            }
        }
        true
    }

    async fn create_peer(&mut self, state: &AppState, node: String, origin_side: bool) -> Result<(), sfu::SfuError> {
        let opts = PeerOptions {
            can_publish: !origin_side,
            can_subscribe: origin_side,
            label: format!("relay {} {node}", if origin_side { "to" } else { "from" }),
            client_offers: false,
            relay: origin_side,
        };
        let (peer, mut events) = match state.sfu.create_peer(opts).await {
            Ok(p) => p,
            Err(e) => {
                warn!(node = %node, error = %e, "cannot create a relay peer");
                return Err(e);
            }
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if tx.send(SpanIn::Peer { peer, event }).is_err() {
                    return;
                }
            }
        });
        self.setup.peer_created(&node, peer, origin_side);
        Ok(())
    }
}
