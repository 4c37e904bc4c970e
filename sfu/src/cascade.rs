//! Cascading between nodes: which tracks of other nodes this node needs relayed, and which layers (sans-I/O).
//!
//! When a room spans nodes, a subscriber on this node (the *edge*) may subscribe to a track published on another
//! node (the *origin*). The track then crosses between the two nodes once, on a relay peer, however many
//! subscribers it has here; this node's own allocator and down-tracks choose each subscriber's layer from the
//! relayed copy. [`Demand`] keeps, per remote track, who here subscribes to it and which simulcast layers they can
//! use, and turns that into the requests the origin must hear: open a relay of the track with these layers, change
//! the layers (dynacast across nodes: a layer nobody here needs is not sent over the relay), close it. A track
//! nobody here needs any more is kept for [`Demand::grace`] before it is closed, so a subscriber that leaves and
//! comes back (a reconnect, a page reload) does not tear the relay down and set it up again.
//!
//! Layers are bit masks as in [`crate::layer`] (bit `i` = spatial layer `i`); audio tracks use [`AUDIO`].
//! The shell (issue 19) carries the requests to the origin over Redis and feeds the answers into the relay peer.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::id::PeerId;

/// The one "layer" of an audio track (or of a video track without simulcast).
pub const AUDIO: u8 = 1;

/// A track published on another node: its node and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteTrack {
    pub node: String,
    pub track: String,
}

/// What the origin of a track must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayRequest {
    /// Start relaying `track` to this node with these layers.
    Open { track: RemoteTrack, layers: u8 },
    /// Relay these layers from now on (a layer left out stops crossing; one added is sent from its next keyframe).
    Layers { track: RemoteTrack, layers: u8 },
    /// Stop relaying `track` to this node.
    Close { track: RemoteTrack },
}

#[derive(Debug, Default)]
struct Entry {
    /// Each local subscriber's usable layers.
    subscribers: HashMap<PeerId, u8>,
    /// What the origin was last told (`None`: not open).
    sent: Option<u8>,
    /// Since when nobody here subscribes (the grace runs from here).
    idle_since: Option<Instant>,
}

impl Entry {
    fn wanted(&self) -> u8 {
        self.subscribers.values().fold(0, |acc, l| acc | l)
    }
}

/// Per remote track: local subscribers, their layers, and what the origin was told. See the module doc.
#[derive(Debug)]
pub struct Demand {
    grace: Duration,
    tracks: BTreeMap<RemoteTrack, Entry>,
}

impl Demand {
    /// Unused relays are closed after `grace`.
    pub fn new(grace: Duration) -> Demand {
        Demand { grace, tracks: BTreeMap::new() }
    }

    /// How long a relay nobody needs is kept.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// `subscriber` here subscribes to `track` and can use `layers` (all of a track's layers at first; the
    /// allocator narrows them with [`Demand::set_layers`]).
    pub fn subscribe(&mut self, subscriber: PeerId, track: &RemoteTrack, layers: u8) {
        let e = self.tracks.entry(track.clone()).or_default();
        e.subscribers.insert(subscriber, layers);
        e.idle_since = None;
    }

    /// The allocator chose: `subscriber` can use `layers` of `track` (0: none for now, e.g. paused).
    pub fn set_layers(&mut self, subscriber: PeerId, track: &RemoteTrack, layers: u8) {
        if let Some(l) = self.tracks.get_mut(track).and_then(|e| e.subscribers.get_mut(&subscriber)) {
            *l = layers;
        }
    }

    /// `subscriber` no longer subscribes to `track`.
    pub fn unsubscribe(&mut self, subscriber: PeerId, track: &RemoteTrack, now: Instant) {
        if let Some(e) = self.tracks.get_mut(track) {
            e.subscribers.remove(&subscriber);
            if e.subscribers.is_empty() {
                e.idle_since.get_or_insert(now);
            }
        }
    }

    /// `subscriber` left this node: every subscription of it ends.
    pub fn remove_subscriber(&mut self, subscriber: PeerId, now: Instant) {
        for e in self.tracks.values_mut() {
            if e.subscribers.remove(&subscriber).is_some() && e.subscribers.is_empty() {
                e.idle_since.get_or_insert(now);
            }
        }
    }

    /// The origin's node is gone: its relays are gone with it (nothing to close). The subscriptions stay, so the
    /// track is opened again if the shell learns of it anew (the publisher back on another node).
    pub fn node_gone(&mut self, node: &str) {
        for (t, e) in self.tracks.iter_mut() {
            if t.node == node {
                e.sent = None;
            }
        }
    }

    /// The relay of `track` was lost (the link cut, the relay peer failed, the origin said it is gone): the origin
    /// is asked again at the next [`Demand::poll`] if anyone here still needs it.
    pub fn relay_lost(&mut self, track: &RemoteTrack) {
        if let Some(e) = self.tracks.get_mut(track) {
            e.sent = None;
        }
    }

    /// The next request for the origins, if any is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<RelayRequest> {
        let grace = self.grace;
        let expired = |e: &Entry| e.idle_since.is_some_and(|since| now.saturating_duration_since(since) >= grace);
        // Abandoned before the origin heard of it: forgotten without a request.
        self.tracks.retain(|_, e| e.sent.is_some() || !expired(e));
        let mut close = None;
        for (track, e) in self.tracks.iter_mut() {
            if expired(e) {
                close = Some(track.clone());
                break;
            }
            if e.idle_since.is_some() {
                continue;
            }
            let wanted = e.wanted();
            match e.sent.replace(wanted) {
                None => return Some(RelayRequest::Open { track: track.clone(), layers: wanted }),
                Some(sent) if sent != wanted => {
                    return Some(RelayRequest::Layers { track: track.clone(), layers: wanted });
                }
                Some(_) => {}
            }
        }
        let track = close?;
        self.tracks.remove(&track);
        Some(RelayRequest::Close { track })
    }

    /// When [`Demand::poll`] next has something to say without new input (a grace ending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks.values().filter_map(|e| e.idle_since.map(|s| s + self.grace)).min()
    }

    /// Remote tracks this node subscribes to or still holds open.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(node: &str, id: &str) -> RemoteTrack {
        RemoteTrack { node: node.into(), track: id.into() }
    }

    fn drain(d: &mut Demand, now: Instant) -> Vec<RelayRequest> {
        std::iter::from_fn(|| d.poll(now)).collect()
    }

    #[test]
    fn a_lost_relay_is_asked_for_again_while_needed() {
        let t0 = Instant::now();
        let mut d = Demand::new(Duration::from_secs(10));
        let (cam, mic) = (track("a", "TR_cam"), track("a", "TR_mic"));
        d.subscribe(PeerId(1), &cam, 0b011);
        d.subscribe(PeerId(1), &mic, AUDIO);
        drain(&mut d, t0);
        d.unsubscribe(PeerId(1), &mic, t0);
        d.relay_lost(&cam);
        d.relay_lost(&mic);
        // The camera is still needed: opened again. Nobody needs the microphone: nothing is asked.
        assert_eq!(drain(&mut d, t0), vec![RelayRequest::Open { track: cam.clone(), layers: 0b011 }]);
        assert_eq!(drain(&mut d, t0 + Duration::from_secs(11)), vec![], "a lost relay needs no close");
    }

    #[test]
    fn one_relay_per_track_however_many_subscribers() {
        let t0 = Instant::now();
        let mut d = Demand::new(Duration::from_secs(10));
        let cam = track("a", "TR_cam");
        for p in 1..=50 {
            d.subscribe(PeerId(p), &cam, 0b111);
        }
        assert_eq!(drain(&mut d, t0), vec![RelayRequest::Open { track: cam.clone(), layers: 0b111 }]);
        assert_eq!(d.poll(t0), None);
    }

    #[test]
    fn layers_follow_the_union_of_what_subscribers_can_use() {
        let t0 = Instant::now();
        let mut d = Demand::new(Duration::from_secs(10));
        let cam = track("a", "TR_cam");
        d.subscribe(PeerId(1), &cam, 0b111);
        d.subscribe(PeerId(2), &cam, 0b111);
        drain(&mut d, t0);
        // Both on small links: only q and h are needed; f stops crossing.
        d.set_layers(PeerId(1), &cam, 0b001);
        d.set_layers(PeerId(2), &cam, 0b011);
        assert_eq!(drain(&mut d, t0), vec![RelayRequest::Layers { track: cam.clone(), layers: 0b011 }]);
        // One paused (no layer): the other's layers remain.
        d.set_layers(PeerId(2), &cam, 0);
        assert_eq!(drain(&mut d, t0), vec![RelayRequest::Layers { track: cam.clone(), layers: 0b001 }]);
        d.set_layers(PeerId(1), &cam, 0b100);
        assert_eq!(drain(&mut d, t0), vec![RelayRequest::Layers { track: cam, layers: 0b100 }]);
    }

    #[test]
    fn a_relay_nobody_needs_closes_after_the_grace_unless_someone_comes_back() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        let mut d = Demand::new(grace);
        let cam = track("a", "TR_cam");
        d.subscribe(PeerId(1), &cam, 0b111);
        drain(&mut d, t0);
        d.unsubscribe(PeerId(1), &cam, t0);
        assert_eq!(d.poll_timeout(), Some(t0 + grace));
        assert_eq!(d.poll(t0 + Duration::from_secs(5)), None);
        // A reload: back within the grace, the relay stays as it was.
        d.subscribe(PeerId(2), &cam, 0b111);
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(drain(&mut d, t0 + Duration::from_secs(11)), vec![]);
        d.remove_subscriber(PeerId(2), t0 + Duration::from_secs(12));
        assert_eq!(d.poll(t0 + Duration::from_secs(21)), None);
        assert_eq!(drain(&mut d, t0 + Duration::from_secs(22)), vec![RelayRequest::Close { track: cam }]);
        assert!(d.is_empty());
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn tracks_of_a_gone_node_open_again_when_asked() {
        let t0 = Instant::now();
        let mut d = Demand::new(Duration::from_secs(10));
        let (cam, mic) = (track("a", "TR_cam"), track("b", "TR_mic"));
        d.subscribe(PeerId(1), &cam, 0b111);
        d.subscribe(PeerId(1), &mic, AUDIO);
        assert_eq!(drain(&mut d, t0).len(), 2);
        d.node_gone("a");
        assert_eq!(drain(&mut d, t0), vec![RelayRequest::Open { track: cam, layers: 0b111 }]);
        // Never opened and abandoned: forgotten at the end of the grace without a request.
        let other = track("c", "TR_x");
        d.subscribe(PeerId(3), &other, AUDIO);
        d.unsubscribe(PeerId(3), &other, t0);
        assert_eq!(drain(&mut d, t0), vec![]);
        assert_eq!(d.len(), 3);
    }
}
