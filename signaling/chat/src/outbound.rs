//! One connection's outbound chat queue: bounded, and when it is full the droppable items go first.
//!
//! Fan-out pushes into every member's queue without waiting; the member's session pops at the pace its socket
//! allows. A queue cannot grow past its capacity, so a slow member costs bounded memory. When it is full:
//!
//! - a new **droppable** item (typing, presence, low-priority danmaku and likes: never sequenced, never stored) is
//!   shed, or — if it is newer than the oldest droppable item queued — replaces that one, so a slow member sees the
//!   freshest of them;
//! - a new **kept** item (a sequenced message) evicts the oldest droppable item if there is one;
//! - if everything queued is kept, the member is hopeless: [`Push::Overflow`]. The caller disconnects it; it
//!   resumes from the store when it reconnects, so nothing sequenced is lost.
//!
//! Sans-I/O: no locks, no waking; the hub wraps it.

use std::collections::VecDeque;

/// How an item may be treated when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// May be shed.
    Droppable,
    /// Must be delivered or the connection closed.
    Kept,
}

/// What [`OutQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Queued, but an older droppable item was shed to make room.
    QueuedShedOlder,
    /// The new droppable item was shed.
    Shed,
    /// Full of kept items: the item was not queued and the member must be disconnected.
    Overflow,
}

/// See the module doc.
#[derive(Debug)]
pub struct OutQueue<T> {
    kept: VecDeque<(u64, T)>,
    droppable: VecDeque<(u64, T)>,
    /// Arrival order across both deques.
    stamp: u64,
    capacity: usize,
    shed: u64,
}

impl<T> OutQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        OutQueue { kept: VecDeque::new(), droppable: VecDeque::new(), stamp: 0, capacity: capacity.max(1), shed: 0 }
    }

    pub fn len(&self) -> usize {
        self.kept.len() + self.droppable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Droppable items shed so far.
    pub fn shed(&self) -> u64 {
        self.shed
    }

    /// Queue `item`; see the module doc for a full queue.
    pub fn push(&mut self, class: Class, item: T) -> Push {
        let full = self.len() >= self.capacity;
        let mut result = Push::Queued;
        if full {
            if self.droppable.pop_front().is_none() {
                return match class {
                    Class::Droppable => {
                        self.shed += 1;
                        Push::Shed
                    }
                    Class::Kept => Push::Overflow,
                };
            }
            self.shed += 1;
            result = Push::QueuedShedOlder;
        }
        self.stamp += 1;
        match class {
            Class::Droppable => self.droppable.push_back((self.stamp, item)),
            Class::Kept => self.kept.push_back((self.stamp, item)),
        }
        result
    }

    /// The oldest item, of either class.
    pub fn pop(&mut self) -> Option<T> {
        let take_kept = match (self.kept.front(), self.droppable.front()) {
            (Some((k, _)), Some((d, _))) => k < d,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let deque = if take_kept { &mut self.kept } else { &mut self.droppable };
        deque.pop_front().map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut OutQueue<u32>) -> Vec<u32> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn items_come_out_in_arrival_order() {
        let mut q = OutQueue::new(10);
        for i in 0..6 {
            let class = if i % 2 == 0 { Class::Kept } else { Class::Droppable };
            assert_eq!(q.push(class, i), Push::Queued);
        }
        assert_eq!(drain(&mut q), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_full_queue_sheds_the_oldest_droppable_first() {
        let mut q = OutQueue::new(4);
        q.push(Class::Kept, 1);
        q.push(Class::Droppable, 2);
        q.push(Class::Droppable, 3);
        q.push(Class::Kept, 4);
        assert_eq!(q.push(Class::Kept, 5), Push::QueuedShedOlder, "kept evicts droppable 2");
        assert_eq!(q.push(Class::Droppable, 6), Push::QueuedShedOlder, "fresher droppable replaces 3");
        assert_eq!(q.push(Class::Kept, 7), Push::QueuedShedOlder, "kept evicts droppable 6");
        assert_eq!(q.push(Class::Droppable, 8), Push::Shed, "nothing droppable left: the new one goes");
        assert_eq!(q.push(Class::Kept, 9), Push::Overflow, "all kept: hopeless");
        assert_eq!(q.shed(), 4);
        assert_eq!(drain(&mut q), vec![1, 4, 5, 7]);
    }

    #[test]
    fn kept_items_are_never_shed() {
        let mut q = OutQueue::new(3);
        let (mut kept, mut out) = (Vec::new(), Vec::new());
        for i in 0..100u32 {
            let class = if i % 10 == 0 { Class::Kept } else { Class::Droppable };
            assert_ne!(q.push(class, i), Push::Overflow, "at {i}");
            if class == Class::Kept {
                kept.push(i);
            }
            if i % 7 == 0 {
                out.extend(q.pop());
            }
            assert!(q.len() <= 3);
        }
        out.extend(drain(&mut q));
        let kept_out: Vec<u32> = out.iter().copied().filter(|i| i % 10 == 0).collect();
        assert_eq!(kept_out, kept, "every kept item, in order");
        assert!(out.windows(2).all(|w| w[0] < w[1]), "arrival order");
    }
}
