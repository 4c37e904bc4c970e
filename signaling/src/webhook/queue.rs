//! One endpoint's delivery queue, sans-I/O: which event to send next, when to retry a failed one, and what to drop.
//!
//! Every event pushed is delivered at least once unless it is dropped, and every drop is counted:
//!
//! - **Bounded.** At most [`Policy::capacity`] events wait (in-flight ones not counted). Pushing onto a full queue
//!   drops the *oldest* waiting event: when a receiver has been down long enough to fill the queue, the oldest
//!   events are the ones closest to running out of attempts anyway, and the newest describe the present.
//! - **Retries with exponential backoff and jitter.** Attempt `n` failed → the event waits
//!   `min(backoff_initial × 2^(n−1), backoff_max)`, scaled by a random factor in `[0.5, 1.0]` so receivers that come
//!   back are not hit by every server at once, then goes back in line.
//! - **Given up** after [`Policy::max_attempts`] attempts, or when the next attempt would start later than
//!   [`Policy::max_age`] after the event was pushed.
//! - **Concurrency.** At most [`Policy::concurrency`] attempts are in flight. Waiting events go out in order of
//!   their due time, then of pushing: in push order while the receiver answers, but a retried event may arrive after
//!   newer ones (receivers order by `created_at` if they care).
//!
//! Driving it (the shell in `sender` does this): [`DeliveryQueue::push`] events; call
//! [`DeliveryQueue::poll_send`] until `None`, start each returned attempt, and report each attempt's end with
//! [`DeliveryQueue::handle_outcome`]; when there is nothing to send, sleep until [`DeliveryQueue::poll_timeout`]
//! (or a push or an outcome, whichever is first). Calling `poll_send` early is harmless: it returns `None`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Event;

/// How an endpoint's queue behaves. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub capacity: usize,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub concurrency: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            capacity: 10_000,
            max_attempts: 12,
            max_age: Duration::from_secs(3600),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            concurrency: 2,
        }
    }
}

/// One attempt to start: POST `event` (this is attempt number `attempt`, from 1), then report the outcome with
/// `key`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub key: u64,
    pub attempt: u32,
    pub event: Arc<Event>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Anything else: another status, a timeout, a connection error.
    Failed,
}

/// What became of an event, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    /// It will be tried again.
    Retrying,
    /// Given up: attempts or age exhausted.
    Exhausted,
}

/// Counters since the queue was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Events delivered.
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Events dropped because the queue was full.
    pub dropped_overflow: u64,
    /// Events dropped after their last attempt failed.
    pub dropped_exhausted: u64,
}

#[derive(Debug)]
struct Entry {
    event: Arc<Event>,
    /// Attempts made so far.
    attempts: u32,
    pushed_at: Instant,
    due: Instant,
}

/// See the module doc.
#[derive(Debug)]
pub struct DeliveryQueue {
    policy: Policy,
    next_key: u64,
    /// Waiting events by key (push order: the first is the oldest).
    waiting: BTreeMap<u64, Entry>,
    /// Waiting events by (due, key): the next to send is the first.
    by_due: BTreeSet<(Instant, u64)>,
    in_flight: HashMap<u64, Entry>,
    rng: u64,
    stats: QueueStats,
}

impl DeliveryQueue {
    /// An empty queue; `seed` drives the jitter (any value; tests fix it).
    pub fn new(policy: Policy, seed: u64) -> DeliveryQueue {
        DeliveryQueue {
            policy,
            next_key: 0,
            waiting: BTreeMap::new(),
            by_due: BTreeSet::new(),
            in_flight: HashMap::new(),
            rng: seed | 1,
            stats: QueueStats::default(),
        }
    }

    /// Queue `event`, due at once. On a full queue the oldest waiting event is dropped: `true` when that happened.
    pub fn push(&mut self, event: Arc<Event>, now: Instant) -> bool {
        let mut dropped = false;
        if self.waiting.len() >= self.policy.capacity.max(1) {
            if let Some((key, e)) = self.waiting.pop_first() {
                self.by_due.remove(&(e.due, key));
                self.stats.dropped_overflow += 1;
                dropped = true;
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        self.waiting.insert(key, Entry { event, attempts: 0, pushed_at: now, due: now });
        self.by_due.insert((now, key));
        dropped
    }

    /// The next attempt to start now, if a slot is free and an event is due.
    pub fn poll_send(&mut self, now: Instant) -> Option<Attempt> {
        if self.in_flight.len() >= self.policy.concurrency.max(1) {
            return None;
        }
        let &(due, key) = self.by_due.first()?;
        if due > now {
            return None;
        }
        self.by_due.remove(&(due, key));
        let mut e = self.waiting.remove(&key).expect("by_due and waiting hold the same keys");
        e.attempts += 1;
        let attempt = Attempt { key, attempt: e.attempts, event: e.event.clone() };
        self.in_flight.insert(key, e);
        Some(attempt)
    }

    /// When [`Self::poll_send`] will next have something, if a slot is free; `None` while all slots are busy (an
    /// outcome frees one) or nothing waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.len() >= self.policy.concurrency.max(1) {
            return None;
        }
        self.by_due.first().map(|(due, _)| *due)
    }

    /// An attempt ended. Unknown keys (reported twice) are ignored and answer `None`.
    pub fn handle_outcome(&mut self, key: u64, outcome: Outcome, now: Instant) -> Option<Fate> {
        let mut e = self.in_flight.remove(&key)?;
        if outcome == Outcome::Delivered {
            self.stats.delivered += 1;
            return Some(Fate::Delivered);
        }
        self.stats.failed_attempts += 1;
        let due = now + self.backoff(e.attempts);
        if e.attempts >= self.policy.max_attempts || due.duration_since(e.pushed_at) > self.policy.max_age {
            self.stats.dropped_exhausted += 1;
            return Some(Fate::Exhausted);
        }
        e.due = due;
        self.by_due.insert((due, key));
        self.waiting.insert(key, e);
        Some(Fate::Retrying)
    }

    /// The wait after failed attempt number `attempts`.
    fn backoff(&mut self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let full = self.policy.backoff_initial.saturating_mul(1u32 << exp).min(self.policy.backoff_max);
        // xorshift64: enough for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        full.mul_f64(factor)
    }

    /// Events waiting (not in flight).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Attempts in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Nothing waiting or in flight.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{EventKind, Facts};

    fn ev(n: u64) -> Arc<Event> {
        Arc::new(Event::new(EventKind::RoomStarted, n, Facts::default()))
    }

    fn policy() -> Policy {
        Policy {
            capacity: 3,
            max_attempts: 4,
            max_age: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(4),
            concurrency: 1,
        }
    }

    #[test]
    fn in_order_while_the_receiver_answers_and_one_at_a_time() {
        let t0 = Instant::now();
        let mut q = DeliveryQueue::new(policy(), 7);
        for n in 1..=3 {
            q.push(ev(n), t0);
        }
        let mut order = Vec::new();
        while let Some(a) = q.poll_send(t0) {
            assert!(q.poll_send(t0).is_none(), "concurrency 1");
            assert_eq!(q.poll_timeout(), None, "no timer while the slot is busy");
            order.push(a.event.created_at_ms);
            assert_eq!(q.handle_outcome(a.key, Outcome::Delivered, t0), Some(Fate::Delivered));
            assert_eq!(q.handle_outcome(a.key, Outcome::Delivered, t0), None, "a second report is ignored");
        }
        assert_eq!(order, vec![1, 2, 3]);
        assert!(q.is_idle());
        assert_eq!(q.stats().delivered, 3);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_then_gives_up() {
        let t0 = Instant::now();
        let mut q = DeliveryQueue::new(Policy { max_attempts: 5, ..policy() }, 42);
        q.push(ev(1), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for attempt in 1..=5 {
            let a = q.poll_send(now).expect("due");
            assert_eq!(a.attempt, attempt);
            let fate = q.handle_outcome(a.key, Outcome::Failed, now).unwrap();
            if attempt == 5 {
                assert_eq!(fate, Fate::Exhausted);
                break;
            }
            assert_eq!(fate, Fate::Retrying);
            let due = q.poll_timeout().expect("a retry is scheduled");
            assert!(q.poll_send(due - Duration::from_millis(1)).is_none(), "not before its time");
            waits.push(due - now);
            now = due;
        }
        // Nominal waits 1, 2, 4, 4 s (capped), each scaled by [0.5, 1.0].
        for (w, nominal) in waits.iter().zip([1.0, 2.0, 4.0, 4.0]) {
            let s = w.as_secs_f64();
            assert!(s >= nominal * 0.5 && s <= nominal, "wait {s} for nominal {nominal}");
        }
        assert!(q.is_idle());
        assert_eq!(q.stats(), QueueStats { failed_attempts: 5, dropped_exhausted: 1, ..QueueStats::default() });
    }

    #[test]
    fn too_old_to_retry_is_given_up() {
        let t0 = Instant::now();
        let mut q = DeliveryQueue::new(Policy { max_age: Duration::from_secs(10), max_attempts: 100, ..policy() }, 3);
        q.push(ev(1), t0);
        let a = q.poll_send(t0).unwrap();
        // The receiver took 9.9 s to fail: a retry at least 0.5 s later would pass the 10 s age.
        assert_eq!(q.handle_outcome(a.key, Outcome::Failed, t0 + Duration::from_millis(9_900)), Some(Fate::Exhausted));
        assert_eq!(q.stats().dropped_exhausted, 1);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_waiting_event() {
        let t0 = Instant::now();
        let mut q = DeliveryQueue::new(policy(), 1);
        q.push(ev(1), t0);
        let in_flight = q.poll_send(t0).unwrap();
        for n in 2..=4 {
            assert!(!q.push(ev(n), t0), "room for three waiting");
        }
        assert!(q.push(ev(5), t0), "full: event 2 goes");
        assert_eq!(q.stats().dropped_overflow, 1);
        assert_eq!((q.waiting(), q.in_flight()), (3, 1));
        q.handle_outcome(in_flight.key, Outcome::Delivered, t0);
        let mut rest = Vec::new();
        while let Some(a) = q.poll_send(t0) {
            rest.push(a.event.created_at_ms);
            q.handle_outcome(a.key, Outcome::Delivered, t0);
        }
        assert_eq!(rest, vec![3, 4, 5]);
    }

    #[test]
    fn a_retry_waits_while_newer_events_go_and_every_event_arrives() {
        // A receiver that fails every other attempt; simulated time jumps to each wake-up.
        let t0 = Instant::now();
        let mut q = DeliveryQueue::new(Policy { capacity: 100, concurrency: 2, max_attempts: 10, ..policy() }, 9);
        for n in 1..=20 {
            q.push(ev(n), t0);
        }
        let mut now = t0;
        let mut delivered = Vec::new();
        let mut calls = 0;
        for _ in 0..1000 {
            let mut started = Vec::new();
            while let Some(a) = q.poll_send(now) {
                started.push(a);
            }
            for a in started {
                calls += 1;
                let outcome = if calls % 2 == 0 { Outcome::Failed } else { Outcome::Delivered };
                if q.handle_outcome(a.key, outcome, now) == Some(Fate::Delivered) {
                    delivered.push(a.event.created_at_ms);
                }
            }
            match q.poll_timeout() {
                Some(t) => now = now.max(t),
                None if q.is_idle() => break,
                None => {}
            }
        }
        assert!(q.is_idle(), "settled");
        delivered.sort();
        assert_eq!(delivered, (1..=20).collect::<Vec<_>>(), "every event once delivered");
        assert_eq!(q.stats().dropped_exhausted + q.stats().dropped_overflow, 0);
    }
}
