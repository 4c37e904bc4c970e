//! The signaling view of rooms: who is in each room, what they publish, and the events everyone in a room hears.
//!
//! A room is created by the admin API or on first join (see [`crate::lifecycle`] for when it opens and closes; the
//! decisions live there, this registry applies them). The state lives behind one mutex that is never held
//! across an `await`; every change produces [`RoomEvent`]s that are pushed, without waiting, into each member's
//! bounded queue. A member whose queue is full is too slow to follow the room: it is told to close (`4008`) and
//! resumes by reconnecting, and the room carries on.
//!
//! The same changes are reported to the webhooks (`room_started`, `participant_joined`, `track_published`, …) from
//! here, the one place they happen, through [`Webhooks::emit`], which never waits either.

use std::collections::HashMap;
use std::sync::Mutex;

use sfu::speaker::SpeakerDetector;
use sfu::{MediaKind, PeerId, TrackId};
use tokio::sync::mpsc;

use serde::Serialize;

use crate::auth::Permissions;
use crate::lifecycle::{self, RoomOptions, RoomPhase, RoomView, Transition};
use crate::webhook::{EventKind, Facts, Webhooks};
use courier_protocol::{close, ErrorCode, ParticipantInfo, TrackInfo};

/// Capacity of each member's room-event queue.
pub const MEMBER_QUEUE: usize = 1024;

/// Something a member's session must hear.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    ParticipantJoined(ParticipantInfo),
    ParticipantLeft {
        participant_id: String,
        reason: &'static str,
    },
    TrackPublished {
        participant_id: String,
        track: TrackInfo,
        sfu_track: TrackId,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
        sfu_track: TrackId,
    },
    TrackMuted {
        participant_id: String,
        track_id: String,
        muted: bool,
    },
    /// Who is talking, loudest first (changes only, at most every 500 ms).
    ActiveSpeakers(Vec<(String, f32)>),
    /// To one member: its permissions changed (admin API).
    PermissionsChanged(Permissions),
    /// A member's name or metadata changed.
    ParticipantUpdated(ParticipantInfo),
    /// The room's metadata changed.
    RoomUpdated {
        metadata: String,
    },
}

/// A reason to close a session, sent on its close channel.
pub type CloseSignal = (u16, &'static str);

/// The handles a member's session gives the room.
#[derive(Debug, Clone)]
pub struct MemberHandles {
    pub events: mpsc::Sender<RoomEvent>,
    pub close: mpsc::Sender<CloseSignal>,
}

#[derive(Debug)]
struct Member {
    info: ParticipantInfo,
    peer: PeerId,
    handles: MemberHandles,
    /// Wire track id → engine track id.
    tracks: HashMap<String, TrackId>,
    permissions: Permissions,
    joined_ms: u64,
}

/// A member of a room that spans nodes, served by another node: shown to the members here, never counted here. Its
/// tracks are the local copies of their relays, added as they become available.
#[derive(Debug)]
struct RemoteMember {
    node: String,
    info: ParticipantInfo,
    /// Wire track id (the origin's) → the relayed copy's engine track here.
    tracks: HashMap<String, TrackId>,
}

/// One change of the members this node serves in a room, as other nodes serving the same room must hear it (see
/// `cluster::mirror`). Hidden members are never described.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "c", rename_all = "snake_case")]
pub enum MemberChange {
    Joined(ParticipantInfo),
    /// Name or metadata changed (tracks change with `Published`/`Unpublished`).
    Updated(ParticipantInfo),
    Left {
        participant: String,
    },
    Published {
        participant: String,
        track: TrackInfo,
    },
    Unpublished {
        participant: String,
        track: String,
    },
}

/// Told every change of the members this node serves, under the registry's lock (so in order); `None` when a hidden
/// member joined or left (nothing to describe, but the room's local membership changed).
pub type ChangeObserver = Box<dyn Fn(&str, Option<MemberChange>) + Send + Sync>;

#[derive(Debug)]
struct Room {
    members: HashMap<String, Member>,
    /// Members served by other nodes (a room that spans nodes), by participant id.
    remote: HashMap<String, RemoteMember>,
    /// This node serves a part of a room that lives on another node: its lifecycle (and webhooks) happen there.
    part: bool,
    speakers: SpeakerDetector<String>,
    options: RoomOptions,
    phase: RoomPhase,
    /// Created on first join.
    auto: bool,
    created_ms: u64,
    empty_since_ms: Option<u64>,
}

impl Room {
    fn new(options: RoomOptions, auto: bool, now_ms: u64) -> Room {
        Room {
            members: HashMap::new(),
            remote: HashMap::new(),
            part: false,
            speakers: SpeakerDetector::new(SPEAKER_INTERVAL, sfu::peer::AUDIO_LEVEL_PERIOD),
            phase: lifecycle::initial_phase(&options, now_ms),
            options,
            auto,
            created_ms: now_ms,
            empty_since_ms: Some(now_ms),
        }
    }

    fn view(&self) -> RoomView<'_> {
        RoomView {
            options: &self.options,
            phase: self.phase,
            auto: self.auto,
            members: self.members.values().filter(|m| !m.permissions.hidden).count(),
            empty_since_ms: self.empty_since_ms.filter(|_| self.members.is_empty()),
        }
    }

    fn summary(&self, name: &str) -> RoomSummary {
        RoomSummary {
            name: name.to_string(),
            phase: self.phase,
            num_participants: self.members.len(),
            created_ms: self.created_ms,
            options: self.options.clone(),
        }
    }
}

/// A room as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomSummary {
    pub name: String,
    pub phase: RoomPhase,
    pub num_participants: usize,
    /// ms since the Unix epoch.
    pub created_ms: u64,
    pub options: RoomOptions,
}

pub use courier_protocol::admin::ParticipantSummary;

/// What the admin API may change about a participant.
#[derive(Debug, Clone, Default)]
pub struct ParticipantUpdate {
    pub permissions: Option<Permissions>,
    pub name: Option<String>,
    pub metadata: Option<String>,
}

/// Who is joining.
#[derive(Debug, Clone)]
pub struct Joiner<'a> {
    pub identity: &'a str,
    pub name: &'a str,
    pub metadata: &'a str,
    pub permissions: Permissions,
    /// The id and region of the cluster node that serves the joiner; empty outside a cluster.
    pub node: &'a str,
    pub region: &'a str,
}

/// How long a part opened for a join waits for it before it may be forgotten as empty ([`Rooms::open_part`]).
pub const PART_JOIN_GRACE_MS: u64 = 10_000;

/// Active-speaker updates are sent at most this often.
pub const SPEAKER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Where a published track lives.
#[derive(Debug, Clone)]
pub struct TrackRef {
    pub sfu_track: TrackId,
    pub participant_id: String,
    pub kind: MediaKind,
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<String, Room>,
    /// Wire track id → (room, where).
    tracks: HashMap<String, (String, TrackRef)>,
    /// Engine track id → wire track id.
    by_sfu: HashMap<TrackId, String>,
}

/// All rooms. See the module doc.
#[derive(Debug, Default)]
pub struct Rooms {
    state: Mutex<State>,
    /// Join of an unknown room creates it (else `room_not_found`). Set once at start.
    pub auto_create: bool,
    webhooks: Webhooks,
    /// Told the identity of every member that joins or leaves (a cluster's presence).
    membership: std::sync::OnceLock<Observer>,
    /// Told every change of the members served here (a cluster's rooms that span nodes).
    changes: std::sync::OnceLock<Changes>,
}

struct Changes(ChangeObserver);

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Changes")
    }
}

struct Observer(MembershipObserver);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// See [`Rooms::on_membership`].
pub type MembershipObserver = Box<dyn Fn(&str) + Send + Sync>;

/// One member, as [`Rooms::members`] lists it.
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub room: String,
    pub identity: String,
    pub participant_id: String,
    pub joined_ms: u64,
}

/// What a joining member learns.
#[derive(Debug)]
pub struct Joined {
    pub me: ParticipantInfo,
    pub others: Vec<ParticipantInfo>,
    /// Tracks already published in the room.
    pub tracks: Vec<TrackId>,
    /// The room's metadata.
    pub room_metadata: String,
}

impl Rooms {
    /// No rooms yet; a join of an unknown room creates it if `auto_create`; changes are reported to `webhooks`.
    pub fn new(auto_create: bool, webhooks: Webhooks) -> Rooms {
        Rooms {
            state: Mutex::default(),
            auto_create,
            webhooks,
            membership: std::sync::OnceLock::new(),
            changes: std::sync::OnceLock::new(),
        }
    }

    /// Call `observer` with the identity of every member that joins or leaves from now on (once; later calls are
    /// ignored). It runs under the rooms' lock: it must only note the change.
    pub fn on_membership(&self, observer: MembershipObserver) {
        let _ = self.membership.set(Observer(observer));
    }

    /// Report every change of the members served here to `observer` (once; a cluster's rooms that span nodes).
    pub fn on_change(&self, observer: ChangeObserver) {
        let _ = self.changes.set(Changes(observer));
    }

    fn changed(&self, room: &str, change: Option<MemberChange>) {
        if let Some(Changes(f)) = self.changes.get() {
            f(room, change);
        }
    }

    fn membership_changed(&self, identity: &str) {
        if let Some(o) = self.membership.get() {
            (o.0)(identity);
        }
    }

    /// The names of every room here now (with members or not).
    pub fn names(&self) -> Vec<String> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Does `room` exist here now?
    pub fn exists(&self, room: &str) -> bool {
        self.lock().rooms.contains_key(room)
    }

    /// Every member of every room.
    pub fn members(&self) -> Vec<MemberSummary> {
        let st = self.lock();
        st.rooms
            .iter()
            .flat_map(|(room, r)| {
                r.members.values().map(move |m| MemberSummary {
                    room: room.clone(),
                    identity: m.info.identity.clone(),
                    participant_id: m.info.id.clone(),
                    joined_ms: m.joined_ms,
                })
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("rooms lock poisoned")
    }

    /// Would a join of `identity` to `room` fit in the server's `caps` now? A cheap early answer given before the
    /// session spends anything on the join; [`Rooms::join`] decides, under the same lock as the insert.
    pub fn admits(&self, room: &str, identity: &str, caps: RoomCaps) -> Result<(), ErrorCode> {
        fits(&self.lock(), room, identity, caps)
    }

    /// Add a member, if the server's `caps` and the room let it in (see [`lifecycle::may_join`]), checked and done
    /// under one lock so that concurrent joins cannot overshoot. A member with the same identity is told to close
    /// with `4009` (the newer session wins) and does not count. Hidden members are not announced.
    pub fn join(
        &self,
        caps: RoomCaps,
        room: &str,
        who: Joiner<'_>,
        peer: PeerId,
        handles: MemberHandles,
    ) -> Result<Joined, ErrorCode> {
        let identity = who.identity;
        let me = ParticipantInfo {
            id: format!("PA_{}", random_token(12)),
            identity: identity.to_string(),
            name: who.name.to_string(),
            tracks: Vec::new(),
            metadata: who.metadata.to_string(),
            node: who.node.to_string(),
            region: who.region.to_string(),
        };
        let now = now_ms();
        let mut st = self.lock();
        fits(&st, room, identity, caps)?;
        if !st.rooms.contains_key(room) {
            if !self.auto_create {
                return Err(ErrorCode::RoomNotFound);
            }
            self.webhooks.emit(EventKind::RoomStarted, Facts::room(room));
            st.rooms.insert(room.to_string(), Room::new(RoomOptions::default(), true, now));
        }
        let r = st.rooms.get_mut(room).expect("inserted above");
        let replacing = r.members.values().filter(|m| m.info.identity == identity).count();
        let mut view = r.view();
        view.members = view.members.saturating_sub(replacing);
        lifecycle::may_join(view, identity, who.permissions.hidden)?;
        for m in r.members.values() {
            if m.info.identity == identity {
                let _ = m.handles.close.try_send((close::REPLACED, "replaced"));
            }
        }
        let others: Vec<ParticipantInfo> = r
            .members
            .values()
            .filter(|m| m.info.identity != identity && !m.permissions.hidden)
            .map(|m| m.info.clone())
            .chain(r.remote.values().filter(|m| m.info.identity != identity).map(|m| m.info.clone()))
            .collect();
        let tracks = r
            .members
            .values()
            .filter(|m| m.info.identity != identity)
            .flat_map(|m| m.tracks.values().copied())
            .chain(r.remote.values().filter(|m| m.info.identity != identity).flat_map(|m| m.tracks.values().copied()))
            .collect();
        if !who.permissions.hidden {
            broadcast(r, None, RoomEvent::ParticipantJoined(me.clone()));
        }
        self.changed(room, (!who.permissions.hidden).then(|| MemberChange::Joined(me.clone())));
        self.webhooks.emit(EventKind::ParticipantJoined, Facts::participant(room, &me));
        self.membership_changed(identity);
        r.empty_since_ms = None;
        r.members.insert(
            me.id.clone(),
            Member {
                info: me.clone(),
                peer,
                handles,
                tracks: HashMap::new(),
                permissions: who.permissions,
                joined_ms: now,
            },
        );
        Ok(Joined { me, others, tracks, room_metadata: r.options.metadata.clone() })
    }

    /// Remove a member: its tracks are unpublished and the others told it left.
    pub fn leave(&self, room: &str, participant_id: &str, reason: &'static str) {
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else { return };
        let Some(m) = r.members.remove(participant_id) else { return };
        let mut gone = Vec::new();
        for (wire, sfu_track) in &m.tracks {
            if let Some(t) = m.info.tracks.iter().find(|t| t.id == *wire) {
                self.webhooks.emit(EventKind::TrackUnpublished, Facts::track(room, &m.info, t));
            }
            broadcast(
                r,
                None,
                RoomEvent::TrackUnpublished {
                    participant_id: participant_id.to_string(),
                    track_id: wire.clone(),
                    sfu_track: *sfu_track,
                },
            );
            gone.push((wire.clone(), *sfu_track));
        }
        r.speakers.remove(&participant_id.to_string());
        if !m.permissions.hidden {
            broadcast(r, None, RoomEvent::ParticipantLeft { participant_id: participant_id.to_string(), reason });
        }
        let hidden = m.permissions.hidden;
        self.changed(room, (!hidden).then(|| MemberChange::Left { participant: participant_id.to_string() }));
        self.webhooks.emit(
            EventKind::ParticipantLeft,
            Facts { reason: Some(reason.to_string()), ..Facts::participant(room, &m.info) },
        );
        self.membership_changed(&m.info.identity);
        if r.members.is_empty() && r.phase == RoomPhase::Closed && r.options.schedule.is_none() {
            // Closed earlier (its room_finished was sent then); its last member has now read the close.
            st.rooms.remove(room);
        } else if r.members.is_empty() {
            let now = now_ms();
            r.empty_since_ms = Some(now);
            if lifecycle::due(r.view(), now) == Some(Transition::Expire) {
                let part = r.part;
                if let Some(r) = st.rooms.remove(room) {
                    forget_remote_tracks(&mut st, &r);
                }
                if !part {
                    self.webhooks.emit(EventKind::RoomFinished, Facts::room(room));
                }
            }
        }
        for (wire, t) in gone {
            st.tracks.remove(&wire);
            st.by_sfu.remove(&t);
        }
    }

    /// A member published a track. Everyone hears it (the publisher's copy carries the `mid`).
    pub fn publish(&self, room: &str, participant_id: &str, mut track: TrackInfo, sfu_track: TrackId, kind: MediaKind) {
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else { return };
        let Some(m) = r.members.get_mut(participant_id) else { return };
        m.tracks.insert(track.id.clone(), sfu_track);
        let mut public = track.clone();
        public.mid = None;
        m.info.tracks.push(public.clone());
        self.webhooks.emit(EventKind::TrackPublished, Facts::track(room, &m.info, &public));
        let own = m.handles.clone();
        let _ = own.events.try_send(RoomEvent::TrackPublished {
            participant_id: participant_id.to_string(),
            track: track.clone(),
            sfu_track,
        });
        track.mid = None;
        broadcast(
            r,
            Some(participant_id),
            RoomEvent::TrackPublished { participant_id: participant_id.to_string(), track: public.clone(), sfu_track },
        );
        let hidden = r.members.get(participant_id).is_some_and(|m| m.permissions.hidden);
        if !hidden {
            self.changed(
                room,
                Some(MemberChange::Published { participant: participant_id.to_string(), track: public }),
            );
        }
        let wire = track.id.clone();
        st.tracks.insert(
            wire.clone(),
            (room.to_string(), TrackRef { sfu_track, participant_id: participant_id.to_string(), kind }),
        );
        st.by_sfu.insert(sfu_track, wire);
    }

    /// A member stopped publishing a track.
    pub fn unpublish(&self, room: &str, participant_id: &str, sfu_track: TrackId) {
        let mut st = self.lock();
        let Some(wire) = st.by_sfu.remove(&sfu_track) else { return };
        st.tracks.remove(&wire);
        let Some(r) = st.rooms.get_mut(room) else { return };
        if let Some(m) = r.members.get_mut(participant_id) {
            m.tracks.remove(&wire);
            if let Some(t) = m.info.tracks.iter().find(|t| t.id == wire) {
                self.webhooks.emit(EventKind::TrackUnpublished, Facts::track(room, &m.info, t));
            }
            m.info.tracks.retain(|t| t.id != wire);
            if !m.permissions.hidden {
                let change = MemberChange::Unpublished { participant: participant_id.to_string(), track: wire.clone() };
                self.changed(room, Some(change));
            }
        }
        broadcast(
            r,
            None,
            RoomEvent::TrackUnpublished { participant_id: participant_id.to_string(), track_id: wire, sfu_track },
        );
    }

    /// A publisher's audio level; may broadcast a new active-speaker list.
    pub fn audio_level(&self, room: &str, participant_id: &str, dbov: i8, now: std::time::Instant) {
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else { return };
        r.speakers.handle_level(participant_id.to_string(), dbov, now);
        if let Some(list) = r.speakers.poll(now) {
            broadcast(r, None, RoomEvent::ActiveSpeakers(list));
        }
    }

    /// Mute or unmute one of the member's own tracks. `false` if it is not theirs.
    pub fn mute(&self, room: &str, participant_id: &str, track_id: &str, muted: bool) -> bool {
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else { return false };
        let Some(m) = r.members.get_mut(participant_id) else { return false };
        let Some(t) = m.info.tracks.iter_mut().find(|t| t.id == track_id) else { return false };
        t.muted = muted;
        broadcast(
            r,
            None,
            RoomEvent::TrackMuted { participant_id: participant_id.to_string(), track_id: track_id.to_string(), muted },
        );
        true
    }

    /// A track in `room` by its wire id.
    pub fn track(&self, room: &str, track_id: &str) -> Option<TrackRef> {
        let st = self.lock();
        st.tracks.get(track_id).filter(|(r, _)| r == room).map(|(_, t)| t.clone())
    }

    /// The wire id of an engine track, with its publisher and kind.
    pub fn track_by_sfu(&self, sfu_track: TrackId) -> Option<(String, TrackRef)> {
        let st = self.lock();
        let wire = st.by_sfu.get(&sfu_track)?;
        st.tracks.get(wire).map(|(_, t)| (wire.clone(), t.clone()))
    }

    /// Peers of the members of `room` other than `except`.
    pub fn peers(&self, room: &str) -> Vec<PeerId> {
        let st = self.lock();
        st.rooms.get(room).map(|r| r.members.values().map(|m| m.peer).collect()).unwrap_or_default()
    }

    /// (rooms, participants, published tracks).
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.lock();
        let participants = st.rooms.values().map(|r| r.members.len()).sum();
        (st.rooms.len(), participants, st.tracks.len())
    }

    /// Create a room with its options. `false` if one of that name exists.
    pub fn create(&self, room: &str, options: RoomOptions, max_rooms: usize) -> Result<RoomSummary, CreateError> {
        let mut st = self.lock();
        if st.rooms.contains_key(room) {
            return Err(CreateError::Exists);
        }
        if st.rooms.len() >= max_rooms {
            return Err(CreateError::TooManyRooms);
        }
        let r = Room::new(options, false, now_ms());
        let summary = r.summary(room);
        st.rooms.insert(room.to_string(), r);
        self.webhooks.emit(EventKind::RoomStarted, Facts::room(room));
        Ok(summary)
    }

    /// Bring back a room the admin API created before a restart ([`crate::room_store`]). Nobody is in it; a
    /// scheduled room takes the phase the clock says unless it was closed already.
    pub fn restore(&self, kept: crate::room_store::StoredRoom, now_ms: u64) {
        let mut r = Room::new(kept.options, false, now_ms);
        r.created_ms = kept.created_ms;
        if kept.phase == RoomPhase::Closed {
            r.phase = RoomPhase::Closed;
        }
        self.lock().rooms.entry(kept.name).or_insert(r);
    }

    /// The definitions of the rooms the admin API created, as [`crate::room_store`] keeps them.
    pub fn definitions(&self) -> Vec<crate::room_store::StoredRoom> {
        let st = self.lock();
        let mut all: Vec<crate::room_store::StoredRoom> = st
            .rooms
            .iter()
            .filter(|(_, r)| !r.auto)
            .map(|(name, r)| crate::room_store::StoredRoom {
                name: name.clone(),
                options: r.options.clone(),
                phase: r.phase,
                created_ms: r.created_ms,
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Forget a room the admin API just created (its definition could not be kept).
    pub fn discard(&self, room: &str) {
        let mut st = self.lock();
        if st.rooms.get(room).is_some_and(|r| r.members.is_empty()) {
            st.rooms.remove(room);
        }
    }

    /// Replace a room's metadata; every member hears `room_updated`. `None` if there is no such room.
    pub fn set_metadata(&self, room: &str, metadata: String) -> Option<RoomSummary> {
        let mut st = self.lock();
        let r = st.rooms.get_mut(room)?;
        r.options.metadata = metadata.clone();
        broadcast(r, None, RoomEvent::RoomUpdated { metadata });
        Some(r.summary(room))
    }

    /// Every room, by name.
    pub fn list(&self) -> Vec<RoomSummary> {
        let st = self.lock();
        let mut all: Vec<RoomSummary> = st.rooms.iter().map(|(n, r)| r.summary(n)).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// One room.
    pub fn get(&self, room: &str) -> Option<RoomSummary> {
        self.lock().rooms.get(room).map(|r| r.summary(room))
    }

    /// The room's phase, if it exists.
    pub fn phase(&self, room: &str) -> Option<RoomPhase> {
        self.lock().rooms.get(room).map(|r| r.phase)
    }

    /// Close a room: everyone is removed with `reason`. A scheduled room stays, closed, for audit; others go.
    pub fn close(&self, room: &str, reason: &'static str) -> bool {
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else { return false };
        for m in r.members.values() {
            let _ = m.handles.close.try_send((close::REMOVED, reason));
        }
        let was_closed = std::mem::replace(&mut r.phase, RoomPhase::Closed) == RoomPhase::Closed;
        // A room without a schedule is forgotten when its last member has left (now, if it is empty): its members'
        // sessions still hold its event queues until they have read the close.
        let part = r.part;
        if r.options.schedule.is_none() && r.members.is_empty() {
            if let Some(r) = st.rooms.remove(room) {
                forget_remote_tracks(&mut st, &r);
            }
        }
        if !was_closed && !part {
            self.webhooks.emit(EventKind::RoomFinished, Facts::room(room));
        }
        true
    }

    /// Apply the lifecycle transitions due at `now_ms`; returns them.
    pub fn tick(&self, now_ms: u64) -> Vec<(String, Transition)> {
        let due: Vec<(String, Transition)> = {
            let st = self.lock();
            st.rooms.iter().filter_map(|(n, r)| lifecycle::due(r.view(), now_ms).map(|t| (n.clone(), t))).collect()
        };
        for (name, t) in &due {
            match t {
                Transition::Open => {
                    if let Some(r) = self.lock().rooms.get_mut(name) {
                        r.phase = RoomPhase::Open;
                    }
                }
                Transition::End => {
                    self.close(name, "room_ended");
                }
                Transition::Expire => {
                    let mut st = self.lock();
                    if st.rooms.get(name).is_some_and(|r| r.members.is_empty()) {
                        if let Some(r) = st.rooms.remove(name) {
                            forget_remote_tracks(&mut st, &r);
                            if !r.part {
                                self.webhooks.emit(EventKind::RoomFinished, Facts::room(name));
                            }
                        }
                    }
                }
            }
        }
        due
    }

    /// The members of a room (hidden ones too: this is the admin's view).
    pub fn participants(&self, room: &str) -> Option<Vec<(ParticipantSummary, PeerId)>> {
        let st = self.lock();
        let r = st.rooms.get(room)?;
        let mut all: Vec<_> = r.members.values().map(summary_of).collect();
        all.sort_by(|a, b| a.0.info.identity.cmp(&b.0.info.identity));
        Some(all)
    }

    /// One member, by identity.
    pub fn participant(&self, room: &str, identity: &str) -> Option<(ParticipantSummary, PeerId)> {
        let st = self.lock();
        st.rooms.get(room)?.members.values().find(|m| m.info.identity == identity).map(summary_of)
    }

    /// Remove a member (admin): its session is closed with `4010`.
    pub fn remove(&self, room: &str, identity: &str) -> bool {
        let st = self.lock();
        let Some(r) = st.rooms.get(room) else { return false };
        let mut found = false;
        for m in r.members.values().filter(|m| m.info.identity == identity) {
            let _ = m.handles.close.try_send((close::REMOVED, "removed"));
            found = true;
        }
        found
    }

    /// Change a member's permissions, name or metadata; they apply at once. Tracks the new permissions do not
    /// allow are unpublished (everyone hears it; subscribers drop them).
    pub fn update(&self, room: &str, identity: &str, u: ParticipantUpdate) -> Option<(ParticipantSummary, PeerId)> {
        let mut st = self.lock();
        let r = st.rooms.get_mut(room)?;
        let id = r.members.values().find(|m| m.info.identity == identity)?.info.id.clone();
        let m = r.members.get_mut(&id)?;
        let mut gone = Vec::new();
        if let Some(p) = u.permissions {
            for t in &m.info.tracks {
                if !p.may_publish(t.source) {
                    if let Some(sfu_track) = m.tracks.get(&t.id) {
                        gone.push((t.id.clone(), *sfu_track));
                    }
                }
            }
            for (wire, _) in &gone {
                m.tracks.remove(wire);
                m.info.tracks.retain(|t| t.id != *wire);
            }
            m.permissions = p.clone();
            let _ = m.handles.events.try_send(RoomEvent::PermissionsChanged(p));
        }
        let renamed = u.name.is_some() || u.metadata.is_some();
        if let Some(n) = u.name {
            m.info.name = n;
        }
        if let Some(md) = u.metadata {
            m.info.metadata = md;
        }
        let summary = summary_of(m);
        let (info, hidden) = (m.info.clone(), m.permissions.hidden);
        for (wire, sfu_track) in &gone {
            broadcast(
                r,
                None,
                RoomEvent::TrackUnpublished {
                    participant_id: id.clone(),
                    track_id: wire.clone(),
                    sfu_track: *sfu_track,
                },
            );
        }
        if renamed && !hidden {
            broadcast(r, None, RoomEvent::ParticipantUpdated(info.clone()));
        }
        if !hidden {
            for (wire, _) in &gone {
                self.changed(room, Some(MemberChange::Unpublished { participant: id.clone(), track: wire.clone() }));
            }
            if renamed {
                self.changed(room, Some(MemberChange::Updated(info)));
            }
        }
        for (wire, t) in gone {
            st.tracks.remove(&wire);
            st.by_sfu.remove(&t);
        }
        Some(summary)
    }

    /// Mute or unmute a published track on its publisher's behalf (admin). `false` if there is no such track.
    pub fn mute_track(&self, room: &str, track_id: &str, muted: bool) -> bool {
        let Some(t) = self.track(room, track_id) else { return false };
        self.mute(room, &t.participant_id, track_id, muted)
    }

    /// Tell every member to close (server shutdown).
    pub fn close_all(&self, signal: CloseSignal) {
        let st = self.lock();
        for r in st.rooms.values() {
            for m in r.members.values() {
                let _ = m.handles.close.try_send(signal);
            }
        }
    }
}

/// Forget the relayed tracks of a room's remote members (the room is gone).
fn forget_remote_tracks(st: &mut State, r: &Room) {
    for m in r.remote.values() {
        for (wire, t) in &m.tracks {
            st.tracks.remove(wire);
            st.by_sfu.remove(t);
        }
    }
}

/// Rooms that span nodes: the part of a room this node serves, and the members other nodes serve.
impl Rooms {
    /// Serve a part of `room`, which lives on another node: created (without webhooks: its lifecycle happens on its
    /// node) unless it exists here. `false` if it exists as a room of this node's own.
    ///
    /// The part is opened for a join that has not happened yet: an empty part created on demand would be forgotten
    /// at the next lifecycle tick (its empty timeout is zero), and the join would then make a room of this node's
    /// own. So it counts as empty only from [`PART_JOIN_GRACE_MS`] on.
    pub fn open_part(&self, room: &str) -> bool {
        let mut st = self.lock();
        if let Some(r) = st.rooms.get(room) {
            return r.part;
        }
        let mut r = Room::new(RoomOptions::default(), true, now_ms());
        r.part = true;
        r.empty_since_ms = r.empty_since_ms.map(|t| t + PART_JOIN_GRACE_MS);
        st.rooms.insert(room.to_string(), r);
        true
    }

    /// `room` is here as a part of a room that lives on another node.
    pub fn is_part(&self, room: &str) -> bool {
        self.lock().rooms.get(room).is_some_and(|r| r.part)
    }

    /// The room's node is gone and this node now holds it: the part becomes the room.
    pub fn make_home(&self, room: &str) {
        if let Some(r) = self.lock().rooms.get_mut(room) {
            r.part = false;
        }
    }

    /// The names of the rooms that live on this node (not the parts it serves of rooms living elsewhere).
    pub fn homed_names(&self) -> Vec<String> {
        self.lock().rooms.iter().filter(|(_, r)| !r.part).map(|(n, _)| n.clone()).collect()
    }

    /// Members served here in `room`, hidden ones included.
    pub fn local_members(&self, room: &str) -> usize {
        self.lock().rooms.get(room).map_or(0, |r| r.members.len())
    }

    /// A change of the members another node (`node`) serves in `room`, as the local members must hear it. Tracks
    /// are not shown from here: each is announced once its relay is available ([`Rooms::publish_remote`]).
    pub fn apply_remote(&self, room: &str, node: &str, change: MemberChange) {
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else { return };
        match change {
            MemberChange::Joined(mut info) | MemberChange::Updated(mut info) => {
                info.tracks.clear();
                match r.remote.get_mut(&info.id) {
                    Some(m) => {
                        m.info.name = info.name;
                        m.info.metadata = info.metadata;
                        let shown = m.info.clone();
                        broadcast(r, None, RoomEvent::ParticipantUpdated(shown));
                    }
                    None => {
                        broadcast(r, None, RoomEvent::ParticipantJoined(info.clone()));
                        let m = RemoteMember { node: node.to_string(), info, tracks: HashMap::new() };
                        r.remote.insert(m.info.id.clone(), m);
                    }
                }
            }
            MemberChange::Left { participant } => {
                let Some(m) = r.remote.remove(&participant) else { return };
                for (wire, sfu_track) in &m.tracks {
                    let ev = RoomEvent::TrackUnpublished {
                        participant_id: participant.clone(),
                        track_id: wire.clone(),
                        sfu_track: *sfu_track,
                    };
                    broadcast(r, None, ev);
                }
                broadcast(r, None, RoomEvent::ParticipantLeft { participant_id: participant, reason: "left" });
                for (wire, t) in &m.tracks {
                    st.tracks.remove(wire);
                    st.by_sfu.remove(t);
                }
            }
            MemberChange::Published { .. } | MemberChange::Unpublished { .. } => {}
        }
    }

    /// The relay of a remote member's track is available here as engine track `local`: the members hear it
    /// published (and subscribe as to any track). `false` if the member is not known here (any more).
    pub fn publish_remote(
        &self,
        room: &str,
        participant: &str,
        track: TrackInfo,
        local: TrackId,
        kind: MediaKind,
    ) -> bool {
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else { return false };
        let Some(m) = r.remote.get_mut(participant) else { return false };
        if m.tracks.insert(track.id.clone(), local).is_some() {
            m.info.tracks.retain(|t| t.id != track.id);
        }
        let mut public = track;
        public.mid = None;
        m.info.tracks.push(public.clone());
        let wire = public.id.clone();
        broadcast(
            r,
            None,
            RoomEvent::TrackPublished { participant_id: participant.to_string(), track: public, sfu_track: local },
        );
        st.tracks.insert(
            wire.clone(),
            (room.to_string(), TrackRef { sfu_track: local, participant_id: participant.to_string(), kind }),
        );
        st.by_sfu.insert(local, wire);
        true
    }

    /// A remote member's track is not relayed here any more (unpublished at its origin, or the relay was lost).
    pub fn unpublish_remote(&self, room: &str, participant: &str, wire: &str) {
        let mut st = self.lock();
        let Some(r) = st.rooms.get_mut(room) else { return };
        let Some(m) = r.remote.get_mut(participant) else { return };
        let Some(sfu_track) = m.tracks.remove(wire) else { return };
        m.info.tracks.retain(|t| t.id != wire);
        let ev = RoomEvent::TrackUnpublished {
            participant_id: participant.to_string(),
            track_id: wire.to_string(),
            sfu_track,
        };
        broadcast(r, None, ev);
        st.tracks.remove(wire);
        st.by_sfu.remove(&sfu_track);
    }

    /// The members of `room` served by `node`, by participant id.
    /// The other nodes that serve members of `room` (as this node's part of it knows them), sorted.
    pub fn remote_nodes(&self, room: &str) -> Vec<String> {
        let st = self.lock();
        let mut nodes: Vec<String> =
            st.rooms.get(room).map(|r| r.remote.values().map(|m| m.node.clone()).collect()).unwrap_or_default();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    pub fn remote_members(&self, room: &str, node: &str) -> Vec<String> {
        let st = self.lock();
        st.rooms
            .get(room)
            .map(|r| r.remote.values().filter(|m| m.node == node).map(|m| m.info.id.clone()).collect())
            .unwrap_or_default()
    }
}

/// Server-wide caps a join must fit in (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomCaps {
    /// Rooms at once; a join that would open one more is refused.
    pub max_rooms: usize,
    /// Members of one room.
    pub max_participants: usize,
}

/// Why [`Rooms::create`] did not create a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    /// A room of that name exists.
    Exists,
    /// The server has `limits.max_rooms` rooms.
    TooManyRooms,
}

/// The server-wide caps, before the room's own rules: every member counts here, hidden or not (they cost the
/// same), and the member a join replaces does not.
fn fits(st: &State, room: &str, identity: &str, caps: RoomCaps) -> Result<(), ErrorCode> {
    match st.rooms.get(room) {
        Some(r) if r.members.values().filter(|m| m.info.identity != identity).count() >= caps.max_participants => {
            Err(ErrorCode::RoomFull)
        }
        None if st.rooms.len() >= caps.max_rooms => Err(ErrorCode::TooManyRooms),
        _ => Ok(()),
    }
}

/// Push an event to every member (but `except`), never waiting. A member whose queue is full is told to close.
fn broadcast(r: &Room, except: Option<&str>, ev: RoomEvent) {
    for (id, m) in &r.members {
        if Some(id.as_str()) == except {
            continue;
        }
        if m.handles.events.try_send(ev.clone()).is_err() {
            let _ = m.handles.close.try_send((close::TIMEOUT_OR_SLOW, "too slow"));
        }
    }
}

/// A member as the admin API shows it (the estimate is the engine's to fill in), and its engine peer.
fn summary_of(m: &Member) -> (ParticipantSummary, PeerId) {
    let summary = ParticipantSummary {
        info: m.info.clone(),
        permissions: m.permissions.clone(),
        joined_ms: m.joined_ms,
        bandwidth_estimate_bps: None,
    };
    (summary, m.peer)
}

pub use courier_chat::clock::{now_ms, random_token};

/// The wire id of an engine track.
pub fn wire_track_id(t: TrackId) -> String {
    format!("TR_{t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> (MemberHandles, mpsc::Receiver<RoomEvent>, mpsc::Receiver<CloseSignal>) {
        let (etx, erx) = mpsc::channel(4);
        let (ctx, crx) = mpsc::channel(1);
        (MemberHandles { events: etx, close: ctx }, erx, crx)
    }

    fn who(identity: &str) -> Joiner<'_> {
        Joiner {
            identity,
            name: identity,
            metadata: "",
            permissions: Permissions::from(&crate::auth::VideoGrant {
                room: "r".into(),
                room_join: true,
                can_publish: true,
                can_subscribe: true,
                can_chat: true,
                room_admin: false,
                can_publish_sources: None,
                hidden: false,
                room_create: false,
                room_list: false,
            }),
            node: "",
            region: "",
        }
    }

    const CAPS: RoomCaps = RoomCaps { max_rooms: 100, max_participants: 100 };

    fn track(id: &str) -> TrackInfo {
        TrackInfo {
            id: id.into(),
            kind: courier_protocol::MediaKind::Video,
            source: courier_protocol::TrackSource::Camera,
            name: String::new(),
            muted: false,
            mid: Some("0".into()),
        }
    }

    #[test]
    fn join_publish_leave() {
        let rooms = Rooms::new(true, Webhooks::default());
        let (ha, mut ea, _ca) = member();
        let a = rooms.join(CAPS, "r", who("alice"), PeerId(1), ha).unwrap();
        let (hb, mut eb, _cb) = member();
        let b = rooms.join(CAPS, "r", who("bob"), PeerId(2), hb).unwrap();
        assert_eq!(b.others.len(), 1);
        assert!(matches!(ea.try_recv(), Ok(RoomEvent::ParticipantJoined(p)) if p.identity == "bob"));

        rooms.publish("r", &a.me.id, track("TR_1"), TrackId(9), MediaKind::Video);
        match ea.try_recv() {
            Ok(RoomEvent::TrackPublished { track, .. }) => {
                assert_eq!(track.mid.as_deref(), Some("0"), "own copy has mid")
            }
            other => panic!("{other:?}"),
        }
        match eb.try_recv() {
            Ok(RoomEvent::TrackPublished { track, .. }) => assert_eq!(track.mid, None, "others' copy has no mid"),
            other => panic!("{other:?}"),
        }
        assert_eq!(rooms.track("r", "TR_1").unwrap().sfu_track, TrackId(9));
        assert!(rooms.track("other", "TR_1").is_none(), "tracks are per room");
        assert_eq!(rooms.counts(), (1, 2, 1));

        rooms.leave("r", &a.me.id, "left");
        assert!(matches!(eb.try_recv(), Ok(RoomEvent::TrackUnpublished { .. })));
        assert!(matches!(eb.try_recv(), Ok(RoomEvent::ParticipantLeft { reason: "left", .. })));
        assert_eq!(rooms.counts(), (1, 1, 0));
        rooms.leave("r", &b.me.id, "left");
        assert_eq!(rooms.counts(), (0, 0, 0));
    }

    #[test]
    fn a_part_opened_for_a_join_waits_for_it() {
        let rooms = Rooms::new(true, Webhooks::default());
        assert!(rooms.open_part("r"));
        let now = now_ms();
        assert!(rooms.tick(now + 1_000).is_empty(), "not forgotten before its join");
        let (h, _e, _c) = member();
        rooms.join(CAPS, "r", who("viewer"), PeerId(1), h).unwrap();
        assert!(rooms.is_part("r"), "the join lands in the part");
        assert!(rooms.homed_names().is_empty(), "a part is not a room of this node's own");
        assert!(rooms.open_part("s"));
        let due = rooms.tick(now_ms() + PART_JOIN_GRACE_MS + 1_000);
        assert_eq!(due, vec![("s".to_string(), Transition::Expire)], "a part nobody joined goes after the grace");
        assert!(!rooms.exists("s"));
    }

    #[test]
    fn loud_member_becomes_active_speaker() {
        let rooms = Rooms::new(true, Webhooks::default());
        let (ha, _ea, _ca) = member();
        let a = rooms.join(CAPS, "r", who("alice"), PeerId(1), ha).unwrap();
        let (hb, mut eb, _cb) = member();
        rooms.join(CAPS, "r", who("bob"), PeerId(2), hb).unwrap();
        let t0 = std::time::Instant::now();
        let mut seen = None;
        for i in 1..=10 {
            rooms.audio_level("r", &a.me.id, -10, t0 + std::time::Duration::from_millis(100 * i));
            while let Ok(ev) = eb.try_recv() {
                if let RoomEvent::ActiveSpeakers(list) = ev {
                    seen = Some((i, list));
                }
            }
        }
        let (at, list) = seen.expect("alice became an active speaker");
        assert!(at <= 6, "within 600 ms of loud audio, was {at}00 ms");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0, a.me.id);
    }

    #[test]
    fn same_identity_replaces_and_slow_member_is_closed() {
        let rooms = Rooms::new(true, Webhooks::default());
        let (h1, _e1, mut c1) = member();
        rooms.join(CAPS, "r", who("alice"), PeerId(1), h1).unwrap();
        let (h2, _e2, _c2) = member();
        let j = rooms.join(CAPS, "r", who("alice"), PeerId(2), h2).unwrap();
        assert_eq!(c1.try_recv().unwrap(), (close::REPLACED, "replaced"));
        assert!(j.others.is_empty(), "the replaced session is not in the snapshot");

        let (h3, _e3_never_read, mut c3) = member();
        rooms.join(CAPS, "s", who("slow"), PeerId(3), h3).unwrap();
        for i in 0..10 {
            let (h, _e, _c) = member();
            rooms.join(CAPS, "s", who(&format!("p{i}")), PeerId(10 + i), h).unwrap();
        }
        assert_eq!(c3.try_recv().unwrap(), (close::TIMEOUT_OR_SLOW, "too slow"));
    }

    #[test]
    fn server_caps_count_every_member_and_not_the_one_replaced() {
        let rooms = Rooms::new(true, Webhooks::default());
        let caps = RoomCaps { max_rooms: 1, max_participants: 2 };
        let (h1, _e1, _c1) = member();
        rooms.join(caps, "r", who("alice"), PeerId(1), h1).unwrap();
        let (h2, _e2, _c2) = member();
        rooms.join(caps, "r", who("bob"), PeerId(2), h2).unwrap();
        let (h3, _e3, _c3) = member();
        assert_eq!(rooms.join(caps, "r", who("carol"), PeerId(3), h3).err(), Some(ErrorCode::RoomFull));
        assert_eq!(rooms.admits("r", "carol", caps), Err(ErrorCode::RoomFull));
        // Alice again replaces alice: she fits.
        assert_eq!(rooms.admits("r", "alice", caps), Ok(()));
        let (h4, _e4, _c4) = member();
        rooms.join(caps, "r", who("alice"), PeerId(4), h4).unwrap();
        // A second room would exceed max_rooms.
        let (h5, _e5, _c5) = member();
        assert_eq!(rooms.join(caps, "s", who("dave"), PeerId(5), h5).err(), Some(ErrorCode::TooManyRooms));
    }
}
