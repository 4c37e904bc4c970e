//! The fan-out table of one worker: where a track's packets go.
//!
//! A packet a publisher hands out ([`crate::packet::ForwardPacket`]) goes to two kinds of target: the subscribing
//! peers that live on the same worker, and the other workers that have subscribers of the track. The engine's
//! worker used to keep both as two bare maps next to its channels and sockets; [`Router`] is that table on its
//! own, pure (no channels, no tasks, no clock), so the counting rules are stated and tested here while the worker
//! only moves packets and messages.
//!
//! Two tables, filled from two sides:
//!
//! - **Local subscribers** (track → peers on this worker), kept by the subscriber's worker. A peer is in a track's
//!   list at most once.
//! - **Routes** (track → destination workers, each with a count), kept by the publisher's worker. Every
//!   subscription anywhere adds one to its worker's count, every unsubscription takes one away; at zero the route
//!   is gone. This worker itself appears as a destination when it has local subscribers of its own tracks.
//!
//! Lists keep the engine's old order exactly: new entries are appended, and a removal swaps the last entry into
//! the hole (`Vec::swap_remove`). Nothing relies on the order for correctness, but delivery order follows it.

use std::collections::HashMap;

use crate::id::{PeerId, TrackId, WorkerId};

/// One worker's fan-out table; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Router {
    /// Published tracks owned here → destination workers with their subscriber count (never 0).
    routes: HashMap<TrackId, Vec<(WorkerId, usize)>>,
    /// Track → local subscribing peers (never empty, no duplicates).
    local_subs: HashMap<TrackId, Vec<PeerId>>,
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Local `peer` subscribes to `track`. Returns false (and changes nothing) when it already was.
    pub fn subscribe(&mut self, track: TrackId, peer: PeerId) -> bool {
        let subs = self.local_subs.entry(track).or_default();
        if subs.contains(&peer) {
            return false;
        }
        subs.push(peer);
        true
    }

    /// Local `peer` unsubscribes from `track`. Returns false when it was not subscribed.
    pub fn unsubscribe(&mut self, track: TrackId, peer: PeerId) -> bool {
        let Some(subs) = self.local_subs.get_mut(&track) else { return false };
        let Some(i) = subs.iter().position(|p| *p == peer) else { return false };
        subs.swap_remove(i);
        if subs.is_empty() {
            self.local_subs.remove(&track);
        }
        true
    }

    /// Local `peer` is gone: unsubscribe it from every track. Returns the tracks it was subscribed to (in no
    /// particular order), so the caller can tell their publishers.
    pub fn forget_peer(&mut self, peer: PeerId) -> Vec<TrackId> {
        let tracks: Vec<TrackId> =
            self.local_subs.iter().filter(|(_, peers)| peers.contains(&peer)).map(|(t, _)| *t).collect();
        for t in &tracks {
            self.unsubscribe(*t, peer);
        }
        tracks
    }

    /// One more subscriber of `track` (published here) lives on worker `to`: count it, opening the route at 1.
    pub fn add_route(&mut self, track: TrackId, to: WorkerId) {
        let routes = self.routes.entry(track).or_default();
        match routes.iter_mut().find(|(w, _)| *w == to) {
            Some((_, n)) => *n += 1,
            None => routes.push((to, 1)),
        }
    }

    /// One subscriber of `track` on worker `to` fewer: at zero the route is removed. A route that does not exist
    /// is ignored (its track was already forgotten). Returns true when this removed the route.
    pub fn remove_route(&mut self, track: TrackId, to: WorkerId) -> bool {
        let Some(routes) = self.routes.get_mut(&track) else { return false };
        let Some(i) = routes.iter().position(|(w, _)| *w == to) else { return false };
        routes[i].1 -= 1;
        if routes[i].1 > 0 {
            return false;
        }
        routes.swap_remove(i);
        if routes.is_empty() {
            self.routes.remove(&track);
        }
        true
    }

    /// `track` is no longer published here: drop all its routes, whatever their counts.
    ///
    /// Local subscriptions to it stay: each belongs to a down-track that its subscriber removes (and counts)
    /// itself, through [`Router::unsubscribe`] or [`Router::forget_peer`].
    pub fn forget_track(&mut self, track: TrackId) {
        self.routes.remove(&track);
    }

    /// The workers `track`'s packets go to (this worker included when it has local subscribers of it).
    pub fn workers(&self, track: TrackId) -> impl Iterator<Item = WorkerId> + '_ {
        self.routes.get(&track).into_iter().flatten().map(|(w, _)| *w)
    }

    /// The local subscribers of `track`, in delivery order; empty when none.
    ///
    /// A slice, so a caller that may change the table while it delivers (a subscriber faulting mid-fan-out) can
    /// walk it by index without copying it per packet.
    pub fn local_subscribers(&self, track: TrackId) -> &[PeerId] {
        self.local_subs.get(&track).map_or(&[], Vec::as_slice)
    }

    /// How many subscribers on worker `to` the route of `track` counts (0: no route).
    pub fn route_count(&self, track: TrackId, to: WorkerId) -> usize {
        self.routes.get(&track).and_then(|r| r.iter().find(|(w, _)| *w == to)).map_or(0, |(_, n)| *n)
    }

    /// Does nothing route anywhere: no routes and no local subscribers?
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.local_subs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: TrackId = TrackId(1);
    const T2: TrackId = TrackId(2);
    const A: PeerId = PeerId(10);
    const B: PeerId = PeerId(11);
    const C: PeerId = PeerId(12);
    const W0: WorkerId = WorkerId(0);
    const W1: WorkerId = WorkerId(1);
    const W2: WorkerId = WorkerId(2);

    fn workers(r: &Router, t: TrackId) -> Vec<WorkerId> {
        r.workers(t).collect()
    }

    #[test]
    fn new_router_is_empty() {
        let r = Router::new();
        assert!(r.is_empty());
        assert!(r.local_subscribers(T1).is_empty());
        assert!(workers(&r, T1).is_empty());
        assert_eq!(r.route_count(T1, W0), 0);
    }

    #[test]
    fn subscribe_appends_in_order() {
        let mut r = Router::new();
        assert!(r.subscribe(T1, A));
        assert!(r.subscribe(T1, B));
        assert!(r.subscribe(T2, A));
        assert_eq!(r.local_subscribers(T1), &[A, B]);
        assert_eq!(r.local_subscribers(T2), &[A]);
        assert!(!r.is_empty());
    }

    #[test]
    fn double_subscribe_is_a_no_op() {
        let mut r = Router::new();
        assert!(r.subscribe(T1, A));
        assert!(!r.subscribe(T1, A), "already subscribed");
        assert_eq!(r.local_subscribers(T1), &[A]);
    }

    #[test]
    fn unsubscribe_swaps_the_last_into_the_hole() {
        let mut r = Router::new();
        for p in [A, B, C] {
            r.subscribe(T1, p);
        }
        assert!(r.unsubscribe(T1, A));
        assert_eq!(r.local_subscribers(T1), &[C, B], "swap_remove order, as the engine always had");
        assert!(r.unsubscribe(T1, B));
        assert_eq!(r.local_subscribers(T1), &[C]);
    }

    #[test]
    fn unsubscribe_of_the_unknown_changes_nothing() {
        let mut r = Router::new();
        assert!(!r.unsubscribe(T1, A), "unknown track");
        r.subscribe(T1, A);
        assert!(!r.unsubscribe(T1, B), "unknown peer");
        assert!(!r.unsubscribe(T2, A), "peer subscribed elsewhere only");
        assert_eq!(r.local_subscribers(T1), &[A]);
        assert!(r.unsubscribe(T1, A));
        assert!(!r.unsubscribe(T1, A), "twice");
    }

    #[test]
    fn last_unsubscribe_empties_the_track() {
        let mut r = Router::new();
        r.subscribe(T1, A);
        r.unsubscribe(T1, A);
        assert!(r.local_subscribers(T1).is_empty());
        assert!(r.is_empty(), "no empty list left behind");
        assert!(r.subscribe(T1, A), "subscribing again works");
    }

    #[test]
    fn forget_peer_removes_it_from_every_track() {
        let mut r = Router::new();
        r.subscribe(T1, A);
        r.subscribe(T1, B);
        r.subscribe(T2, A);
        let mut tracks = r.forget_peer(A);
        tracks.sort_by_key(|t| t.0);
        assert_eq!(tracks, vec![T1, T2]);
        assert_eq!(r.local_subscribers(T1), &[B]);
        assert!(r.local_subscribers(T2).is_empty());
        assert!(r.forget_peer(A).is_empty(), "nothing left to forget");
        assert!(r.forget_peer(C).is_empty(), "an unknown peer");
        assert_eq!(r.forget_peer(B), vec![T1]);
        assert!(r.is_empty());
    }

    #[test]
    fn forget_peer_leaves_routes_alone() {
        let mut r = Router::new();
        r.subscribe(T1, A);
        r.add_route(T1, W0);
        r.forget_peer(A);
        assert_eq!(r.route_count(T1, W0), 1, "routes are counted by the publisher's worker's own messages");
    }

    #[test]
    fn add_route_counts_per_worker() {
        let mut r = Router::new();
        r.add_route(T1, W1);
        r.add_route(T1, W0);
        r.add_route(T1, W1);
        assert_eq!(r.route_count(T1, W1), 2);
        assert_eq!(r.route_count(T1, W0), 1);
        assert_eq!(r.route_count(T1, W2), 0);
        assert_eq!(workers(&r, T1), vec![W1, W0], "one entry per worker, in order of arrival");
        assert!(workers(&r, T2).is_empty());
    }

    #[test]
    fn remove_route_at_zero_removes_it() {
        let mut r = Router::new();
        r.add_route(T1, W1);
        r.add_route(T1, W1);
        assert!(!r.remove_route(T1, W1), "one subscriber left");
        assert_eq!(r.route_count(T1, W1), 1);
        assert_eq!(workers(&r, T1), vec![W1]);
        assert!(r.remove_route(T1, W1), "the last one");
        assert_eq!(r.route_count(T1, W1), 0);
        assert!(workers(&r, T1).is_empty());
        assert!(r.is_empty(), "no empty list left behind");
    }

    #[test]
    fn remove_route_swaps_the_last_into_the_hole() {
        let mut r = Router::new();
        for w in [W0, W1, W2] {
            r.add_route(T1, w);
        }
        assert!(r.remove_route(T1, W0));
        assert_eq!(workers(&r, T1), vec![W2, W1]);
    }

    #[test]
    fn remove_route_of_the_unknown_changes_nothing() {
        let mut r = Router::new();
        assert!(!r.remove_route(T1, W1), "unknown track");
        r.add_route(T1, W1);
        assert!(!r.remove_route(T1, W2), "unknown worker");
        assert!(!r.remove_route(T2, W1), "another track");
        assert_eq!(r.route_count(T1, W1), 1);
        assert!(r.remove_route(T1, W1));
        assert!(!r.remove_route(T1, W1), "below zero: ignored, no underflow");
        assert_eq!(r.route_count(T1, W1), 0);
    }

    #[test]
    fn forget_track_drops_its_routes_whatever_the_counts() {
        let mut r = Router::new();
        r.add_route(T1, W0);
        r.add_route(T1, W1);
        r.add_route(T1, W1);
        r.add_route(T2, W1);
        r.forget_track(T1);
        assert!(workers(&r, T1).is_empty());
        assert_eq!(r.route_count(T1, W1), 0);
        assert_eq!(workers(&r, T2), vec![W1], "other tracks keep theirs");
        assert!(!r.remove_route(T1, W1), "a late unsubscription of a forgotten track is ignored");
        r.forget_track(T1);
        r.forget_track(TrackId(99));
        assert_eq!(r.route_count(T2, W1), 1);
    }

    #[test]
    fn forget_track_keeps_local_subscriptions() {
        let mut r = Router::new();
        r.subscribe(T1, A);
        r.add_route(T1, W0);
        r.forget_track(T1);
        assert_eq!(r.local_subscribers(T1), &[A], "the subscriber's down-track removes it");
        assert!(r.unsubscribe(T1, A));
        assert!(r.is_empty());
    }

    #[test]
    fn routes_and_subscriptions_are_independent_per_track() {
        let mut r = Router::new();
        r.subscribe(T1, A);
        r.add_route(T2, W1);
        assert!(workers(&r, T1).is_empty());
        assert!(r.local_subscribers(T2).is_empty());
    }
}
