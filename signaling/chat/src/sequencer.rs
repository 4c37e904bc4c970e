//! Sequence numbers, epochs and the idempotency cache: the decisions that give every conversation one order.
//!
//! Sans-I/O: nothing here touches a database, a clock or a random number generator. The store's writer loads a
//! conversation's [`ConversationState`] inside its transaction, sequences a group of messages through a [`Group`],
//! writes the changed states back in the same transaction and calls [`Group::commit`] only once that transaction
//! is committed. A group that is dropped instead (the transaction failed) leaves no trace, so the numbers it gave
//! out are given out again, and a failed write can never leave a hole or a stale cache entry.
//!
//! The idempotency cache remembers the acknowledgements of recent messages so a retry is answered without a
//! database lookup. It is bounded (first in, first out) and only a shortcut: the store's unique index on
//! `(conversation, sender, client_id)` is the source of truth.

use std::collections::{HashMap, VecDeque};

use super::store::Ack;
use super::ConversationId;

/// Largest sequence number: stores keep them in signed 64-bit columns.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Epochs are kept below 2^53 so a JavaScript client can hold one in a `Number` exactly.
const EPOCH_MASK: u64 = (1 << 53) - 1;

/// The epoch for a new conversation from a random `u64`: in `1..2^53`.
pub fn epoch_from_random(random: u64) -> u64 {
    (random & EPOCH_MASK).max(1)
}

/// One conversation's sequencing state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationState {
    pub epoch: u64,
    /// The last number issued; 0 before the first message.
    pub last_seq: u64,
    /// The lowest number still retained; `last_seq + 1` when nothing is.
    pub first_seq: u64,
    /// The server time given to the last message, Unix milliseconds.
    pub last_time_ms: u64,
}

impl ConversationState {
    /// A new, empty conversation; `random` picks its epoch.
    pub fn new(random: u64) -> ConversationState {
        ConversationState { epoch: epoch_from_random(random), last_seq: 0, first_seq: 1, last_time_ms: 0 }
    }

    /// The next number and its server time: `now_ms`, or the previous message's time if the clock went back, so
    /// time never decreases along the sequence (retention by age then trims a prefix). `None` when exhausted.
    pub fn next(&mut self, now_ms: u64) -> Option<(u64, u64)> {
        if self.last_seq >= MAX_SEQ {
            return None;
        }
        self.last_seq += 1;
        self.last_time_ms = self.last_time_ms.max(now_ms);
        Some((self.last_seq, self.last_time_ms))
    }
}

/// The idempotency key of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub conversation: ConversationId,
    pub sender: String,
    pub client_id: String,
}

/// Why [`Group::assign`] gave no number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The caller did not [`Group::load`] the conversation first (a bug in the caller).
    #[error("conversation {0} not loaded")]
    NotLoaded(ConversationId),
    /// The conversation has used every number.
    #[error("sequence numbers exhausted in {0}")]
    Exhausted(ConversationId),
}

/// A bounded map of recent acknowledgements, evicting the oldest entry first.
#[derive(Debug)]
struct DedupCache {
    map: HashMap<DedupKey, Ack>,
    order: VecDeque<DedupKey>,
    capacity: usize,
}

impl DedupCache {
    fn insert(&mut self, key: DedupKey, ack: Ack) {
        if self.capacity == 0 || self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, Ack { duplicate: true, ..ack });
    }
}

/// Sequences messages; owned by the store's single writer.
#[derive(Debug)]
pub struct Sequencer {
    cache: DedupCache,
}

impl Sequencer {
    /// A sequencer remembering up to `cache_capacity` recent acknowledgements.
    pub fn new(cache_capacity: usize) -> Sequencer {
        Sequencer { cache: DedupCache { map: HashMap::new(), order: VecDeque::new(), capacity: cache_capacity } }
    }

    /// The original acknowledgement of a committed message, if it is still cached (`duplicate` is set).
    pub fn cached(&self, key: &DedupKey) -> Option<Ack> {
        self.cache.map.get(key).cloned()
    }

    /// How many acknowledgements are cached.
    pub fn cached_len(&self) -> usize {
        self.cache.map.len()
    }

    /// Start sequencing a group of messages that will be committed together.
    pub fn begin(&mut self) -> Group<'_> {
        Group { cache: &mut self.cache, states: HashMap::new(), staged: HashMap::new(), staged_order: Vec::new() }
    }
}

/// The messages of one transaction. Drop it to forget everything it did; [`Group::commit`] after the commit.
#[derive(Debug)]
pub struct Group<'a> {
    cache: &'a mut DedupCache,
    /// Loaded states and whether they changed.
    states: HashMap<ConversationId, (ConversationState, bool)>,
    staged: HashMap<DedupKey, Ack>,
    staged_order: Vec<DedupKey>,
}

impl Group<'_> {
    /// Whether `conversation`'s state is loaded.
    pub fn is_loaded(&self, conversation: &ConversationId) -> bool {
        self.states.contains_key(conversation)
    }

    /// Load a state read in the transaction; `created` marks a conversation that is new and must be written.
    /// Loading an already loaded conversation is a no-op (the group's own state is newer).
    pub fn load(&mut self, conversation: ConversationId, state: ConversationState, created: bool) {
        self.states.entry(conversation).or_insert((state, created));
    }

    /// The loaded state.
    pub fn state(&self, conversation: &ConversationId) -> Option<&ConversationState> {
        self.states.get(conversation).map(|(s, _)| s)
    }

    /// The loaded state, to change (it will be written back).
    pub fn state_mut(&mut self, conversation: &ConversationId) -> Option<&mut ConversationState> {
        self.states.get_mut(conversation).map(|(s, dirty)| {
            *dirty = true;
            s
        })
    }

    /// The original acknowledgement if this message was already sequenced, in this group or (cached) before.
    pub fn duplicate(&self, key: &DedupKey) -> Option<Ack> {
        self.staged.get(key).or_else(|| self.cache.map.get(key)).map(|ack| Ack { duplicate: true, ..ack.clone() })
    }

    /// Remember an acknowledgement found in the store's unique index, so later retries skip the lookup.
    pub fn remember(&mut self, key: DedupKey, ack: Ack) {
        if !self.staged.contains_key(&key) {
            self.staged_order.push(key.clone());
            self.staged.insert(key, Ack { duplicate: true, ..ack });
        }
    }

    /// Give the message `key` the next number of its conversation. The caller has checked [`Group::duplicate`]
    /// and the store's index.
    pub fn assign(&mut self, key: DedupKey, now_ms: u64) -> Result<Ack, SequenceError> {
        let Some((state, dirty)) = self.states.get_mut(&key.conversation) else {
            return Err(SequenceError::NotLoaded(key.conversation));
        };
        let Some((seq, server_time_ms)) = state.next(now_ms) else {
            return Err(SequenceError::Exhausted(key.conversation));
        };
        *dirty = true;
        let ack =
            Ack { conversation: key.conversation.clone(), seq, epoch: state.epoch, server_time_ms, duplicate: false };
        self.staged_order.push(key.clone());
        self.staged.insert(key, Ack { duplicate: true, ..ack.clone() });
        Ok(ack)
    }

    /// The states to write back before committing.
    pub fn changed(&self) -> impl Iterator<Item = (&ConversationId, &ConversationState)> {
        self.states.iter().filter(|(_, (_, dirty))| *dirty).map(|(c, (s, _))| (c, s))
    }

    /// The transaction is committed: cache its acknowledgements.
    pub fn commit(self) {
        let Group { cache, mut staged, staged_order, .. } = self;
        for key in staged_order {
            if let Some(ack) = staged.remove(&key) {
                cache.insert(key, ack);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conv: &str, sender: &str, id: &str) -> DedupKey {
        DedupKey { conversation: ConversationId::parse(conv).unwrap(), sender: sender.into(), client_id: id.into() }
    }

    #[test]
    fn epochs_are_nonzero_and_javascript_safe() {
        for (random, want) in [(0, 1), (1, 1), (u64::MAX, (1 << 53) - 1), (1 << 53, 1), ((1 << 53) + 5, 5)] {
            assert_eq!(epoch_from_random(random), want, "{random}");
        }
    }

    #[test]
    fn numbers_are_contiguous_and_time_never_goes_back() {
        let mut s = ConversationState::new(7);
        assert_eq!(s.next(1000), Some((1, 1000)));
        assert_eq!(s.next(900), Some((2, 1000)), "clock went back");
        assert_eq!(s.next(1200), Some((3, 1200)));
        let mut full = ConversationState { last_seq: MAX_SEQ - 1, ..s };
        assert_eq!(full.next(0).map(|(n, _)| n), Some(MAX_SEQ));
        assert_eq!(full.next(0), None);
        assert_eq!(full.last_seq, MAX_SEQ);
    }

    #[test]
    fn a_group_assigns_per_conversation_and_deduplicates_within_itself() {
        let mut seq = Sequencer::new(16);
        let mut g = seq.begin();
        let (a, b) = (key("room:a", "x", "1"), key("room:b", "x", "1"));
        assert_eq!(g.assign(a.clone(), 5), Err(SequenceError::NotLoaded(a.conversation.clone())));
        g.load(a.conversation.clone(), ConversationState::new(3), true);
        g.load(b.conversation.clone(), ConversationState { last_seq: 41, ..ConversationState::new(4) }, false);
        assert_eq!(g.assign(a.clone(), 5).unwrap().seq, 1);
        assert_eq!(g.assign(b.clone(), 5).unwrap().seq, 42);
        assert_eq!(g.assign(key("room:a", "y", "1"), 5).unwrap().seq, 2);
        let dup = g.duplicate(&a).unwrap();
        assert!(dup.duplicate);
        assert_eq!((dup.seq, dup.epoch), (1, 3));
        assert_eq!(g.changed().count(), 2);
        g.commit();
        assert_eq!(seq.cached(&b).map(|a| (a.seq, a.duplicate)), Some((42, true)));
    }

    #[test]
    fn a_dropped_group_leaves_no_trace() {
        let mut seq = Sequencer::new(16);
        let k = key("room:a", "x", "1");
        {
            let mut g = seq.begin();
            g.load(k.conversation.clone(), ConversationState::new(3), true);
            g.assign(k.clone(), 1).unwrap();
        }
        assert_eq!(seq.cached(&k), None);
        let mut g = seq.begin();
        assert!(g.duplicate(&k).is_none());
        g.load(k.conversation.clone(), ConversationState::new(3), true);
        assert_eq!(g.assign(k, 1).unwrap().seq, 1, "the number is given again");
    }

    #[test]
    fn the_cache_is_bounded_oldest_first() {
        let mut seq = Sequencer::new(3);
        let keys: Vec<_> = (0..5).map(|i| key("room:a", "x", &i.to_string())).collect();
        let mut g = seq.begin();
        g.load(keys[0].conversation.clone(), ConversationState::new(1), true);
        for k in &keys {
            g.assign(k.clone(), 0).unwrap();
        }
        g.commit();
        assert_eq!(seq.cached_len(), 3);
        assert!(seq.cached(&keys[1]).is_none());
        assert_eq!(seq.cached(&keys[4]).map(|a| a.seq), Some(5));
        let mut none = Sequencer::new(0);
        let mut g = none.begin();
        g.remember(keys[0].clone(), seq.cached(&keys[4]).unwrap());
        g.commit();
        assert_eq!(none.cached_len(), 0);
    }
}
