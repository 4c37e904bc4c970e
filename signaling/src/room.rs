//! The signaling view of rooms: who is in each room, what they publish, and the events everyone in a room hears.
//!
//! A room exists while it has members (created on first join). The state lives behind one mutex that is never held
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

use crate::protocol::{close, ParticipantInfo, TrackInfo};
use crate::webhook::{EventKind, Facts, Webhooks};

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
}

#[derive(Debug)]
struct Room {
    members: HashMap<String, Member>,
    speakers: SpeakerDetector<String>,
}

impl Default for Room {
    fn default() -> Self {
        Room {
            members: HashMap::new(),
            speakers: SpeakerDetector::new(SPEAKER_INTERVAL, sfu::peer::AUDIO_LEVEL_PERIOD),
        }
    }
}

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
    webhooks: Webhooks,
}

/// What a joining member learns.
#[derive(Debug)]
pub struct Joined {
    pub me: ParticipantInfo,
    pub others: Vec<ParticipantInfo>,
    /// Tracks already published in the room.
    pub tracks: Vec<TrackId>,
}

impl Rooms {
    /// No rooms yet; changes are reported to `webhooks`.
    pub fn new(webhooks: Webhooks) -> Rooms {
        Rooms { state: Mutex::default(), webhooks }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("rooms lock poisoned")
    }

    /// Add a member. A member with the same identity is told to close with `4009` (the newer session wins).
    pub fn join(&self, room: &str, identity: &str, name: &str, peer: PeerId, handles: MemberHandles) -> Joined {
        let me = ParticipantInfo {
            id: format!("PA_{}", random_token(12)),
            identity: identity.to_string(),
            name: name.to_string(),
            tracks: Vec::new(),
        };
        let mut st = self.lock();
        if !st.rooms.contains_key(room) {
            self.webhooks.emit(EventKind::RoomStarted, Facts::room(room));
        }
        let r = st.rooms.entry(room.to_string()).or_default();
        for m in r.members.values() {
            if m.info.identity == identity {
                let _ = m.handles.close.try_send((close::REPLACED, "replaced"));
            }
        }
        let others: Vec<ParticipantInfo> =
            r.members.values().filter(|m| m.info.identity != identity).map(|m| m.info.clone()).collect();
        let tracks = r
            .members
            .values()
            .filter(|m| m.info.identity != identity)
            .flat_map(|m| m.tracks.values().copied())
            .collect();
        broadcast(r, None, RoomEvent::ParticipantJoined(me.clone()));
        self.webhooks.emit(EventKind::ParticipantJoined, Facts::participant(room, &me));
        r.members.insert(me.id.clone(), Member { info: me.clone(), peer, handles, tracks: HashMap::new() });
        Joined { me, others, tracks }
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
        broadcast(r, None, RoomEvent::ParticipantLeft { participant_id: participant_id.to_string(), reason });
        self.webhooks.emit(
            EventKind::ParticipantLeft,
            Facts { reason: Some(reason.to_string()), ..Facts::participant(room, &m.info) },
        );
        if r.members.is_empty() {
            st.rooms.remove(room);
            self.webhooks.emit(EventKind::RoomFinished, Facts::room(room));
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
            RoomEvent::TrackPublished { participant_id: participant_id.to_string(), track: public, sfu_track },
        );
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

/// A random alphanumeric string, for ids.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

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

    fn track(id: &str) -> TrackInfo {
        TrackInfo {
            id: id.into(),
            kind: "video",
            source: crate::protocol::TrackSource::Camera,
            name: String::new(),
            muted: false,
            mid: Some("0".into()),
        }
    }

    #[test]
    fn join_publish_leave() {
        let rooms = Rooms::default();
        let (ha, mut ea, _ca) = member();
        let a = rooms.join("r", "alice", "Alice", PeerId(1), ha);
        let (hb, mut eb, _cb) = member();
        let b = rooms.join("r", "bob", "Bob", PeerId(2), hb);
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
    fn loud_member_becomes_active_speaker() {
        let rooms = Rooms::default();
        let (ha, _ea, _ca) = member();
        let a = rooms.join("r", "alice", "A", PeerId(1), ha);
        let (hb, mut eb, _cb) = member();
        rooms.join("r", "bob", "B", PeerId(2), hb);
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
        let rooms = Rooms::default();
        let (h1, _e1, mut c1) = member();
        rooms.join("r", "alice", "A", PeerId(1), h1);
        let (h2, _e2, _c2) = member();
        let j = rooms.join("r", "alice", "A", PeerId(2), h2);
        assert_eq!(c1.try_recv().unwrap(), (close::REPLACED, "replaced"));
        assert!(j.others.is_empty(), "the replaced session is not in the snapshot");

        let (h3, _e3_never_read, mut c3) = member();
        rooms.join("s", "slow", "S", PeerId(3), h3);
        for i in 0..10 {
            let (h, _e, _c) = member();
            rooms.join("s", &format!("p{i}"), "P", PeerId(10 + i), h);
        }
        assert_eq!(c3.try_recv().unwrap(), (close::TIMEOUT_OR_SLOW, "too slow"));
    }
}
