//! Merging a resume's replay with live messages: what a reconnecting member receives of one conversation.
//!
//! A member that reconnects says which sequence number it saw last. The session subscribes to the conversation's
//! live fan-out *first* and then reads the gap from the store, so nothing committed in between can fall through —
//! but the same message can then come both ways, and live messages can arrive before the replay reaches them.
//! [`ResumeMerge`] takes both streams and emits each sequence number exactly once, in order: replayed messages as
//! they come, live ones held back until the replay has caught up to them. It is sans-I/O: the session feeds it and
//! sends what it returns.
//!
//! After the replay, the merge keeps running on the live stream alone, where it drops anything already delivered
//! and reports a hole (a live message beyond the next expected number, e.g. after the member's queue shed
//! messages) instead of delivering past it: the caller fills the hole from the store ([`Step::Fill`]).

use std::collections::BTreeMap;

/// What the caller does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<M> {
    /// Send these to the member, in this order.
    Deliver(Vec<(u64, M)>),
    /// Deliver these, then read `after..=up_to` from the store and feed it with [`ResumeMerge::on_replay`] (the
    /// merge is back to replaying).
    Fill { deliver: Vec<(u64, M)>, after: u64, up_to: u64 },
}

/// See the module doc.
#[derive(Debug)]
pub struct ResumeMerge<M> {
    /// The next sequence number the member should receive.
    next: u64,
    /// Is a replay (or fill) in progress?
    replaying: bool,
    /// Live messages at or beyond `next`, waiting for the replay to reach them (bounded by the caller's queue).
    held: BTreeMap<u64, M>,
}

impl<M> ResumeMerge<M> {
    /// The member saw everything up to `last_seen` (0: nothing). A replay from the store follows.
    pub fn new(last_seen: u64) -> Self {
        ResumeMerge { next: last_seen + 1, replaying: true, held: BTreeMap::new() }
    }

    /// The next sequence number the member should receive.
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    /// Live messages held back, waiting for the replay.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// A live message. While replaying it is held (once); afterwards it is delivered if it is the next one, dropped
    /// if already delivered, and a hole before it is reported.
    pub fn on_live(&mut self, seq: u64, msg: M) -> Step<M> {
        if seq < self.next {
            return Step::Deliver(Vec::new());
        }
        self.held.entry(seq).or_insert(msg);
        if self.replaying {
            return Step::Deliver(Vec::new());
        }
        self.release()
    }

    /// A batch of replayed messages, in order (duplicates and anything already delivered are skipped).
    pub fn on_replay(&mut self, batch: impl IntoIterator<Item = (u64, M)>) -> Vec<(u64, M)> {
        let mut out = Vec::new();
        for (seq, msg) in batch {
            if seq < self.next {
                continue;
            }
            if seq > self.next {
                // The store never skips a number; a hole here is the caller's range being short. Hold it.
                self.held.entry(seq).or_insert(msg);
                continue;
            }
            out.push((seq, msg));
            self.next += 1;
            self.held.remove(&seq);
        }
        out
    }

    /// The replay (or fill) read everything up to the head it saw. Held live messages that now follow on are
    /// delivered; a hole before the rest is reported.
    pub fn replay_done(&mut self) -> Step<M> {
        self.replaying = false;
        self.release()
    }

    /// Deliver the held run that starts at `next`; report a hole before anything held beyond it.
    fn release(&mut self) -> Step<M> {
        let mut out = Vec::new();
        while let Some(msg) = self.held.remove(&self.next) {
            out.push((self.next, msg));
            self.next += 1;
        }
        match self.held.keys().next() {
            Some(&first) => {
                self.replaying = true;
                Step::Fill { deliver: out, after: self.next - 1, up_to: first - 1 }
            }
            None => Step::Deliver(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs<M>(v: &[(u64, M)]) -> Vec<u64> {
        v.iter().map(|(s, _)| *s).collect()
    }

    fn delivered<M>(s: Step<M>) -> Vec<u64> {
        match s {
            Step::Deliver(v) => seqs(&v),
            Step::Fill { .. } => panic!("unexpected fill"),
        }
    }

    #[test]
    fn live_messages_during_the_replay_are_merged_without_duplicates() {
        // Seen up to 10; the store holds 11..=15 when the replay reads it; 14..=17 arrive live meanwhile.
        let mut m = ResumeMerge::new(10);
        let mut got = Vec::new();
        for s in [14, 15] {
            got.extend(delivered(m.on_live(s, "live")));
        }
        got.extend(seqs(&m.on_replay((11..=15).map(|s| (s, "replay")))));
        got.extend(delivered(m.on_live(16, "live")));
        got.extend(delivered(m.replay_done()));
        got.extend(delivered(m.on_live(15, "live again")));
        got.extend(delivered(m.on_live(17, "live")));
        assert_eq!(got, (11..=17).collect::<Vec<_>>(), "each number once, in order");
        assert_eq!((m.next_expected(), m.held()), (18, 0));
    }

    #[test]
    fn the_replayed_copy_wins_and_live_copies_are_dropped() {
        let mut m = ResumeMerge::new(0);
        assert!(delivered(m.on_live(1, "live")).is_empty(), "held while replaying");
        let out = m.on_replay([(1, "replay"), (2, "replay")]);
        assert_eq!(out, vec![(1, "replay"), (2, "replay")]);
        assert!(delivered(m.replay_done()).is_empty());
        assert!(delivered(m.on_live(2, "late live copy")).is_empty());
    }

    #[test]
    fn a_hole_in_the_live_stream_is_filled_from_the_store() {
        let mut m = ResumeMerge::new(4);
        assert!(m.on_replay([(5, ())]).len() == 1);
        assert!(delivered(m.replay_done()).is_empty());
        assert_eq!(delivered(m.on_live(6, ())), vec![6]);
        // 7 and 8 were shed on the way; 9 arrives.
        match m.on_live(9, ()) {
            Step::Fill { deliver, after, up_to } => {
                assert!(deliver.is_empty());
                assert_eq!((after, up_to), (6, 8));
            }
            s => panic!("expected a fill, got {s:?}"),
        }
        // Live 10 while filling: held.
        assert!(delivered(m.on_live(10, ())).is_empty());
        assert_eq!(seqs(&m.on_replay([(7, ()), (8, ())])), vec![7, 8]);
        assert_eq!(delivered(m.replay_done()), vec![9, 10]);
        assert_eq!(m.next_expected(), 11);
    }

    #[test]
    fn a_short_replay_reports_the_rest_as_a_hole() {
        // The replay read up to 12 but live 15 is held: 13..=14 must come from the store.
        let mut m = ResumeMerge::new(10);
        m.on_live(15, ());
        assert_eq!(seqs(&m.on_replay([(11, ()), (12, ())])), vec![11, 12]);
        match m.replay_done() {
            Step::Fill { after, up_to, .. } => assert_eq!((after, up_to), (12, 14)),
            s => panic!("expected a fill, got {s:?}"),
        }
    }

    #[test]
    fn a_member_that_saw_nothing_starts_at_one() {
        let mut m = ResumeMerge::new(0);
        assert!(delivered(m.replay_done()).is_empty());
        assert_eq!(delivered(m.on_live(1, ())), vec![1]);
    }
}
