//! An impairment relay: a userspace UDP hop between one client and the server that caps bandwidth, queues,
//! delays, jitters and drops datagrams, per direction, on a schedule.
//!
//! The server's congestion control (a send-side bandwidth estimator fed by TWCC) and its simulcast allocator only
//! show what they do when a link is short of capacity, and loopback never is. Kernel tools (`tc netem`) need
//! privileges and act on a whole interface; this relay needs none and impairs exactly one client's path: the client
//! is told to send to the relay instead of the server (`ClientOptions::udp_via`), the relay forwards from its own
//! upstream socket, and the ICE-lite server sees the relay's upstream address as the client's peer-reflexive
//! address.
//!
//! It is split like the rest of this crate:
//!
//! - [`Link`] is the sans-I/O emulator of one direction: datagrams go in with the time ([`Link::handle_datagram`]),
//!   come out when due ([`Link::poll_transmit`]), and [`Link::poll_timeout`] says when to look again. It models a
//!   bottleneck of `rate_bps` with a tail-drop queue in front of it (the queue is what a sender's estimator reacts
//!   to: delay grows, then packets drop), then a fixed delay plus uniform jitter (jitter alone never reorders),
//!   random loss on input or burst loss from a two-state Gilbert–Elliott chain ([`BurstLoss`]), and, on request,
//!   reordering (a datagram held back so that later ones overtake it), duplication, and outages (nothing is
//!   delivered for a while). An [`Impairment`] is one such setting; a [`Schedule`] switches settings at fixed
//!   offsets from the start (e.g. 3 Mbps, 400 kbps from 8 s, 3 Mbps from 16 s). Randomness comes from a seed.
//!   The same emulator carries a byte stream in stream mode ([`Link::new_stream`]), for the TCP relay
//!   ([`crate::tcp_relay`]): there it never drops, reorders or duplicates, and pushes back instead.
//! - [`Relay`] is the thin tokio shell: two sockets on `127.0.0.1:0`, one [`Link`] per direction, counters
//!   ([`RelayStats`]). Its task stops when the [`Relay`] is stopped or dropped.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(server_udp: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use media_tests::relay::{Impairment, Relay, RelayConfig, Schedule};
//!
//! let down = Schedule::constant(Impairment::rate(3_000_000))
//!     .then(Duration::from_secs(8), Impairment::rate(400_000))
//!     .then(Duration::from_secs(16), Impairment::rate(3_000_000));
//! let relay = Relay::start(RelayConfig::new(server_udp).to_client(down)).await?;
//! // ClientOptions { udp_via: Some(relay.addr()), .. }
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

/// How much may wait in front of the bottleneck before new datagrams are dropped (tail drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// At most this many bytes queued (the datagram being serialised included).
    Bytes(usize),
    /// At most this much queueing delay at the current rate.
    Delay(Duration),
}

/// One setting of a link direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Bottleneck rate in bits per second; `None`: unlimited (no queueing).
    pub rate_bps: Option<u64>,
    /// The queue in front of the bottleneck.
    pub queue: QueueLimit,
    /// Fixed one-way delay added after the bottleneck.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram (datagrams are never reordered by it).
    pub jitter: Duration,
    /// Probability (0 to 1) that a datagram is lost on input.
    pub loss: f64,
    /// Burst loss on input (applied after `loss`): a Gilbert–Elliott chain; `None`: none.
    pub burst: Option<BurstLoss>,
    /// Probability (0 to 1) that a datagram is held back by `reorder_delay` after the bottleneck, so that the
    /// datagrams behind it arrive first.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Probability (0 to 1) that a delivered datagram is delivered twice.
    pub duplicate: f64,
    /// The far end is cut off: nothing is delivered while this setting is in force. A datagram due during an
    /// outage is lost; a byte stream ([`Link::new_stream`]) waits and is delivered when the outage ends. Input is
    /// still taken (and the bottleneck still serves), so a stream resumes with everything sent meanwhile.
    pub outage: bool,
}

/// Burst loss as a two-state Markov chain (Gilbert–Elliott): per datagram the chain moves from good to bad with
/// probability `p` and from bad to good with `r`, then the datagram is lost with `loss_good` or `loss_bad`. The mean
/// burst lasts `1/r` datagrams; the share of time in the bad state is `p/(p+r)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLoss {
    /// Good → bad, per datagram.
    pub p: f64,
    /// Bad → good, per datagram.
    pub r: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

impl BurstLoss {
    /// Bursts that lose everything (`loss_bad` 1, `loss_good` 0) with an average loss of `mean_loss` (0 to <1) in
    /// bursts of `mean_burst` datagrams on average (at least 1).
    pub fn with_mean(mean_loss: f64, mean_burst: f64) -> Self {
        let loss = if mean_loss.is_nan() { 0.0 } else { mean_loss.clamp(0.0, 0.99) };
        let r = 1.0 / if mean_burst.is_nan() { 1.0 } else { mean_burst.max(1.0) };
        // Stationary bad share p/(p+r) = loss.
        let p = (loss * r / (1.0 - loss)).min(1.0);
        Self { p, r, loss_good: 0.0, loss_bad: 1.0 }
    }
}

impl Default for Impairment {
    /// A perfect link: unlimited rate, no delay, no loss (the queue limit is 100 ms, used once a rate is set).
    fn default() -> Self {
        Self {
            rate_bps: None,
            queue: QueueLimit::Delay(Duration::from_millis(100)),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            duplicate: 0.0,
            outage: false,
        }
    }
}

impl Impairment {
    /// A perfect link.
    pub fn none() -> Self {
        Self::default()
    }

    /// An outage: nothing is delivered while it is in force (see the `outage` field).
    pub fn outage() -> Self {
        Self { outage: true, ..Self::default() }
    }

    /// A bottleneck of `bps` with the default queue (100 ms of queueing).
    pub fn rate(bps: u64) -> Self {
        Self { rate_bps: Some(bps), ..Self::default() }
    }

    /// With this queue limit.
    pub fn with_queue(self, queue: QueueLimit) -> Self {
        Self { queue, ..self }
    }

    /// With this fixed delay and jitter.
    pub fn with_delay(self, delay: Duration, jitter: Duration) -> Self {
        Self { delay, jitter, ..self }
    }

    /// With this random loss (clamped to 0..=1).
    pub fn with_loss(self, loss: f64) -> Self {
        Self { loss: clamp_probability(loss), ..self }
    }

    /// With burst loss (see [`BurstLoss`]).
    pub fn with_burst_loss(self, burst: BurstLoss) -> Self {
        Self { burst: Some(burst), ..self }
    }

    /// With reordering: a share `probability` of datagrams held back by `delay`.
    pub fn with_reorder(self, probability: f64, delay: Duration) -> Self {
        Self { reorder: clamp_probability(probability), reorder_delay: delay, ..self }
    }

    /// With duplication of a share `probability` of datagrams.
    pub fn with_duplicate(self, probability: f64) -> Self {
        Self { duplicate: clamp_probability(probability), ..self }
    }

    /// The bytes that `limit` of queueing holds at this rate (`usize::MAX` when unlimited).
    fn bytes_in(&self, limit: Duration) -> usize {
        match self.rate_bps {
            Some(bps) => usize::try_from(limit.as_nanos() * u128::from(bps) / 8_000_000_000).unwrap_or(usize::MAX),
            None => usize::MAX,
        }
    }

    /// What a TCP sender would wait before sending a lost segment again: one retransmission timeout, at least
    /// 200 ms (Linux's minimum) and at least a round trip (twice this direction's delay, the reverse path assumed
    /// alike).
    pub fn retransmission_timeout(&self) -> Duration {
        Duration::from_millis(200).max(self.delay * 2)
    }

    /// Time to serialise `len` bytes at this rate (zero when unlimited).
    fn serialization(&self, len: usize) -> Duration {
        match self.rate_bps {
            Some(bps) if bps > 0 => Duration::from_nanos((len as u64 * 8).saturating_mul(1_000_000_000) / bps),
            Some(_) => Duration::MAX,
            None => Duration::ZERO,
        }
    }
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// Settings over time: each step applies from its offset (from the link's start) until the next step.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    steps: Vec<(Duration, Impairment)>,
}

impl Default for Schedule {
    /// A perfect link forever.
    fn default() -> Self {
        Self::constant(Impairment::none())
    }
}

impl Schedule {
    /// One setting from the start.
    pub fn constant(impairment: Impairment) -> Self {
        Self { steps: vec![(Duration::ZERO, impairment)] }
    }

    /// Adds a step at `at`; a step at the same offset is replaced, and steps stay sorted.
    pub fn then(mut self, at: Duration, impairment: Impairment) -> Self {
        self.steps.retain(|(t, _)| *t != at);
        let i = self.steps.partition_point(|(t, _)| *t < at);
        self.steps.insert(i, (at, impairment));
        self
    }

    /// The steps, sorted by offset.
    pub fn steps(&self) -> &[(Duration, Impairment)] {
        &self.steps
    }

    /// The setting in force at `offset`.
    pub fn at(&self, offset: Duration) -> Impairment {
        let i = self.steps.partition_point(|(t, _)| *t <= offset);
        // The first step is at zero (constant() makes one, then() keeps it), so i >= 1.
        self.steps.get(i.wrapping_sub(1)).map(|(_, imp)| *imp).unwrap_or_default()
    }

    /// When the outage in force at `offset` ends: the offset of the first later step without one. `None` when no
    /// outage is in force at `offset`, or when it never ends.
    pub fn outage_end(&self, offset: Duration) -> Option<Duration> {
        if !self.at(offset).outage {
            return None;
        }
        self.steps.iter().find(|(t, imp)| *t > offset && !imp.outage).map(|(t, _)| *t)
    }

    /// From `offset` on, `impairment` replaces whatever was scheduled.
    pub(crate) fn replace_from(&mut self, offset: Duration, impairment: Impairment) {
        self.steps.retain(|(t, _)| *t < offset);
        self.steps.push((offset, impairment));
    }
}

/// What [`Link::handle_datagram`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queued; it comes out of [`Link::poll_transmit`] when due.
    Queued,
    /// Dropped by random loss.
    Lost,
    /// Dropped because the queue was full (tail drop).
    QueueFull,
}

/// Counters of one link direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered.
    pub datagrams_in: u64,
    /// Bytes offered.
    pub bytes_in: u64,
    /// Datagrams delivered.
    pub datagrams_out: u64,
    /// Bytes delivered.
    pub bytes_out: u64,
    /// Datagrams dropped by random or burst loss.
    pub datagrams_lost: u64,
    /// Of those, dropped by burst loss.
    pub datagrams_lost_in_bursts: u64,
    /// Datagrams held back so that later ones overtook them.
    pub datagrams_reordered: u64,
    /// Extra copies delivered.
    pub datagrams_duplicated: u64,
    /// Datagrams dropped because the queue was full.
    pub datagrams_dropped: u64,
    /// Datagrams lost because they were due during an outage.
    pub datagrams_lost_in_outage: u64,
    /// Stream mode: chunks that loss delayed by one retransmission timeout (they are never dropped).
    pub datagrams_retransmitted: u64,
    /// Bytes dropped (loss, outage and full queue).
    pub bytes_dropped: u64,
    /// Longest time a delivered datagram waited in the queue before the bottleneck.
    pub max_queue_delay: Duration,
}

impl LinkStats {
    /// Adds `other`'s counters to these (the longest queue delay is the longer of the two): the total of several
    /// links, e.g. one per TCP connection.
    pub fn merge(&mut self, other: &LinkStats) {
        self.datagrams_in += other.datagrams_in;
        self.bytes_in += other.bytes_in;
        self.datagrams_out += other.datagrams_out;
        self.bytes_out += other.bytes_out;
        self.datagrams_lost += other.datagrams_lost;
        self.datagrams_lost_in_bursts += other.datagrams_lost_in_bursts;
        self.datagrams_reordered += other.datagrams_reordered;
        self.datagrams_duplicated += other.datagrams_duplicated;
        self.datagrams_dropped += other.datagrams_dropped;
        self.datagrams_lost_in_outage += other.datagrams_lost_in_outage;
        self.datagrams_retransmitted += other.datagrams_retransmitted;
        self.bytes_dropped += other.bytes_dropped;
        self.max_queue_delay = self.max_queue_delay.max(other.max_queue_delay);
    }
}

/// Datagrams that may be in flight between the bottleneck and the far end (delay line); more are dropped as if
/// the queue were full. Only reachable with an unlimited rate and a long delay.
const MAX_IN_FLIGHT: usize = 65_536;

/// Stream mode: the most bytes a link holds (queued and in flight) before [`Link::room`] says no more, like a TCP
/// window. Only reached with an unlimited rate and a long delay, or during an outage.
pub const STREAM_WINDOW: usize = 1 << 20;

/// Stream mode: an empty queue always takes this much, however slow the bottleneck (one TCP segment), so that a
/// stream never stalls for good.
const MIN_SEGMENT: usize = 1460;

#[derive(Debug)]
struct Queued {
    data: Bytes,
    arrived: Instant,
    /// Stream mode: extra delay of a chunk that loss hit (one retransmission timeout).
    penalty: Duration,
}

/// One direction of an impaired link. Sans-I/O: see the module doc.
///
/// Inputs: [`Link::handle_datagram`] (a datagram arrived at `now`), [`Link::set_impairment`] and
/// [`Link::set_schedule`]. Outputs: [`Link::poll_transmit`] (a datagram due at `now`; call until `None`), and
/// [`Link::poll_timeout`] (the next instant at which something becomes due, as of the last call that took a
/// `now`; `None` when nothing is queued or in flight, or when all that is left waits for an outage that never
/// ends). Calling `poll_transmit` early or again is a harmless no-op. Time must not go backwards between calls.
///
/// # Datagrams and streams
///
/// [`Link::new`] carries datagrams (UDP): they can be lost, dropped at the tail of a full queue, reordered and
/// duplicated, and one due during an outage is lost. [`Link::new_stream`] carries the chunks of a byte stream
/// (TCP) read by a relay, which must arrive intact, once and in order, because TCP below would have repaired any
/// damage: in stream mode reordering and duplication are ignored, a chunk that loss hits is delayed by one
/// retransmission timeout ([`Impairment::retransmission_timeout`]) instead, and so is everything behind it (head-of-line
/// blocking), an outage holds chunks until it ends, and nothing is ever dropped. The shell instead reads at most
/// [`Link::room`] bytes and stops reading at zero, which pushes back on the sender as a full TCP window would.
#[derive(Debug)]
pub struct Link {
    schedule: Schedule,
    start: Instant,
    rng: StdRng,
    /// Stream mode (see the type doc).
    stream: bool,
    /// The latest `now` seen.
    now: Instant,
    /// Waiting for (or being serialised by) the bottleneck, in arrival order.
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// When the bottleneck finished its last datagram.
    free_at: Instant,
    /// Past the bottleneck, sorted by delivery time (ties in insertion order).
    in_flight: VecDeque<(Instant, Bytes)>,
    in_flight_bytes: usize,
    /// Delivery time of the last datagram not held back: jitter alone never reorders.
    last_in_order: Instant,
    /// The Gilbert–Elliott chain is in its bad state.
    burst_bad: bool,
    stats: LinkStats,
}

impl Link {
    /// A datagram link following `schedule` from `start`, its random choices drawn from `seed`.
    pub fn new(schedule: Schedule, start: Instant, seed: u64) -> Self {
        Self {
            schedule,
            start,
            rng: StdRng::seed_from_u64(seed),
            stream: false,
            now: start,
            queue: VecDeque::new(),
            queued_bytes: 0,
            free_at: start,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            last_in_order: start,
            burst_bad: false,
            stats: LinkStats::default(),
        }
    }

    /// A link carrying the chunks of a byte stream, which it never drops, reorders or duplicates (see the type
    /// doc); otherwise like [`Link::new`].
    pub fn new_stream(schedule: Schedule, start: Instant, seed: u64) -> Self {
        Self { stream: true, ..Self::new(schedule, start, seed) }
    }

    /// The setting in force at `at`.
    pub fn impairment_at(&self, at: Instant) -> Impairment {
        self.schedule.at(at.saturating_duration_since(self.start))
    }

    /// From `now` on, `impairment` replaces the rest of the schedule. Datagrams already queued keep their place.
    pub fn set_impairment(&mut self, now: Instant, impairment: Impairment) {
        self.advance(now);
        self.schedule.replace_from(now.saturating_duration_since(self.start), impairment);
    }

    /// From `now` on, `schedule` (still counted from the link's start) replaces the current one. Datagrams that
    /// the bottleneck finished by `now` keep their delivery time; the rest follow the new schedule.
    pub fn set_schedule(&mut self, now: Instant, schedule: Schedule) {
        self.advance(now);
        self.schedule = schedule;
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Bytes waiting for the bottleneck at `now` (the one being serialised included).
    pub fn queued_bytes(&mut self, now: Instant) -> usize {
        self.advance(now);
        self.queued_bytes
    }

    /// Whether nothing is queued or in flight.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// How many bytes [`Link::handle_datagram`] takes at `now` without a tail drop (`usize::MAX`: no limit). In
    /// stream mode this is what the shell may read: it never exceeds the [`STREAM_WINDOW`] less the bytes held,
    /// an empty queue takes at least one segment, and zero means "stop reading until the next
    /// [`Link::poll_timeout`]" (backpressure).
    pub fn room(&mut self, now: Instant) -> usize {
        self.advance(now);
        if self.queue.len() + self.in_flight.len() >= MAX_IN_FLIGHT {
            return 0;
        }
        let imp = self.impairment_at(now);
        let limit = match imp.queue {
            _ if imp.rate_bps.is_none() => usize::MAX,
            QueueLimit::Bytes(limit) => limit,
            QueueLimit::Delay(limit) => imp.bytes_in(limit),
        };
        let mut room = limit.saturating_sub(self.queued_bytes);
        if self.stream {
            if self.queue.is_empty() {
                room = room.max(MIN_SEGMENT);
            }
            room = room.min(STREAM_WINDOW.saturating_sub(self.queued_bytes + self.in_flight_bytes));
        }
        room
    }

    /// A datagram arrived at `now`. In stream mode it is always [`Verdict::Queued`] (keep within
    /// [`Link::room`]).
    pub fn handle_datagram(&mut self, now: Instant, data: Bytes) -> Verdict {
        self.advance(now);
        let len = data.len();
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += len as u64;
        let imp = self.impairment_at(now);
        let mut lost = imp.loss > 0.0 && self.rng.gen::<f64>() < imp.loss;
        let mut in_burst = false;
        if let (false, Some(ge)) = (lost, imp.burst) {
            let flip = if self.burst_bad { ge.r } else { ge.p };
            if self.rng.gen::<f64>() < flip {
                self.burst_bad = !self.burst_bad;
            }
            let loss = if self.burst_bad { ge.loss_bad } else { ge.loss_good };
            lost = loss > 0.0 && self.rng.gen::<f64>() < loss;
            in_burst = lost;
        }
        let mut penalty = Duration::ZERO;
        if lost && self.stream {
            // TCP sends it again after a timeout; what follows waits behind it.
            self.stats.datagrams_retransmitted += 1;
            penalty = imp.retransmission_timeout();
        } else if lost {
            self.stats.datagrams_lost += 1;
            self.stats.datagrams_lost_in_bursts += u64::from(in_burst);
            self.stats.bytes_dropped += len as u64;
            return Verdict::Lost;
        }
        let full = match imp.queue {
            _ if imp.rate_bps.is_none() => false,
            QueueLimit::Bytes(limit) => self.queued_bytes + len > limit,
            QueueLimit::Delay(limit) => imp.serialization(self.queued_bytes + len) > limit,
        };
        if !self.stream && (full || self.in_flight.len() + self.queue.len() >= MAX_IN_FLIGHT) {
            self.stats.datagrams_dropped += 1;
            self.stats.bytes_dropped += len as u64;
            return Verdict::QueueFull;
        }
        self.queued_bytes += len;
        self.queue.push_back(Queued { data, arrived: now, penalty });
        self.advance(now);
        Verdict::Queued
    }

    /// The next datagram due at `now`, if any. A datagram due during an outage is dropped here; a stream chunk
    /// waits for the outage to end.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.advance(now);
        if self.stream && self.impairment_at(now).outage {
            return None;
        }
        // Bounded by the delay line's length.
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            let (at, data) = self.in_flight.pop_front()?;
            self.in_flight_bytes -= data.len();
            if !self.stream && self.impairment_at(at).outage {
                self.stats.datagrams_lost_in_outage += 1;
                self.stats.bytes_dropped += data.len() as u64;
                continue;
            }
            self.stats.datagrams_out += 1;
            self.stats.bytes_out += data.len() as u64;
            return Some(data);
        }
        None
    }

    /// When the next datagram leaves the bottleneck or is delivered (a stream chunk held by an outage: when the
    /// outage ends); `None` when nothing is queued or in flight, or all that is left waits for an outage without
    /// end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let bottleneck = self.queue.front().map(|q| self.serialized_at(q));
        let delivery = self.in_flight.front().and_then(|(at, _)| {
            let due = (*at).max(self.now);
            if !self.stream || !self.impairment_at(due).outage {
                return Some(*at);
            }
            let end = self.schedule.outage_end(due.saturating_duration_since(self.start))?;
            Some(self.start + end)
        });
        match (bottleneck, delivery) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the bottleneck finishes `head` (the first queued datagram): it starts when both it and the bottleneck
    /// are there, at the rate in force then.
    fn serialized_at(&self, head: &Queued) -> Instant {
        let begin = self.free_at.max(head.arrived);
        let d = self.impairment_at(begin).serialization(head.data.len());
        begin.checked_add(d).unwrap_or(begin + Duration::from_secs(86_400))
    }

    /// Moves every datagram the bottleneck has finished by `now` into the delay line.
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        // Bounded by the queue's length.
        while let Some(head) = self.queue.front() {
            let done = self.serialized_at(head);
            if done > now {
                break;
            }
            let begin = self.free_at.max(head.arrived);
            let Some(q) = self.queue.pop_front() else { break };
            self.queued_bytes -= q.data.len();
            self.free_at = done;
            self.stats.max_queue_delay = self.stats.max_queue_delay.max(begin - q.arrived);
            let imp = self.impairment_at(done);
            let jitter = if imp.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(self.rng.gen_range(0..=imp.jitter.as_nanos().min(u128::from(u64::MAX)) as u64))
            };
            let mut at = (done + imp.delay + jitter + q.penalty).max(self.last_in_order);
            if !self.stream && imp.reorder > 0.0 && self.rng.gen::<f64>() < imp.reorder {
                self.stats.datagrams_reordered += 1;
                at += imp.reorder_delay;
            } else {
                self.last_in_order = at;
            }
            let copy = !self.stream && imp.duplicate > 0.0 && self.rng.gen::<f64>() < imp.duplicate;
            if copy {
                self.stats.datagrams_duplicated += 1;
                self.insert_in_flight(at, q.data.clone());
            }
            self.insert_in_flight(at, q.data);
        }
    }

    /// Into the delay line at its delivery time, after those due at the same time.
    fn insert_in_flight(&mut self, at: Instant, data: Bytes) {
        // Most datagrams go at the end; only one held back (or overtaken) is placed further in.
        let i = self.in_flight.partition_point(|(t, _)| *t <= at);
        self.in_flight_bytes += data.len();
        self.in_flight.insert(i, (at, data));
    }
}

// ---------------------------------------------------------------------------------------------
// The tokio shell

/// Which way a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server (the client's uplink).
    ToServer,
    /// From the server to the client (the client's downlink).
    ToClient,
}

/// How to start a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The server's UDP address (its ICE host candidate).
    pub server: SocketAddr,
    /// Impairment of client → server.
    pub to_server: Schedule,
    /// Impairment of server → client.
    pub to_client: Schedule,
    /// Seed of the random choices (loss, jitter); each direction derives its own.
    pub seed: u64,
}

impl RelayConfig {
    /// A relay to `server` that impairs nothing (yet).
    pub fn new(server: SocketAddr) -> Self {
        Self { server, to_server: Schedule::default(), to_client: Schedule::default(), seed: 1 }
    }

    /// With this client → server schedule.
    pub fn to_server(self, schedule: Schedule) -> Self {
        Self { to_server: schedule, ..self }
    }

    /// With this server → client schedule.
    pub fn to_client(self, schedule: Schedule) -> Self {
        Self { to_client: schedule, ..self }
    }

    /// With this schedule in both directions.
    pub fn both(self, schedule: Schedule) -> Self {
        Self { to_server: schedule.clone(), to_client: schedule, ..self }
    }

    /// With this seed.
    pub fn seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }
}

/// Counters of a [`Relay`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client → server.
    pub to_server: LinkStats,
    /// Server → client.
    pub to_client: LinkStats,
    /// The client's address (the source of its last datagram), once it sent one.
    pub client: Option<SocketAddr>,
    /// Datagrams from anyone but the server on the upstream socket (ignored).
    pub strays: u64,
}

/// A relay failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A socket could not be bound on 127.0.0.1.
    #[error("binding the relay's sockets: {0}")]
    Bind(#[source] std::io::Error),
}

enum RelayCommand {
    Set(Direction, Impairment),
}

/// A running relay; see the module doc. Dropping it stops its task.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    started: Instant,
    started_unix_ms: u64,
    stats: Arc<StdMutex<RelayStats>>,
    commands: mpsc::UnboundedSender<RelayCommand>,
    task: JoinHandle<()>,
}

/// Consecutive socket errors after which the relay gives up (a socket that keeps failing would otherwise spin).
const MAX_CONSECUTIVE_ERRORS: u32 = 1000;
/// Datagrams read per socket per wake-up before the queues are serviced again.
const READ_BUDGET: usize = 64;

impl Relay {
    /// Binds `127.0.0.1:0` twice (client side and upstream) and starts forwarding. Schedules start now.
    pub async fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        let client_side = UdpSocket::bind("127.0.0.1:0").await.map_err(RelayError::Bind)?;
        let upstream = UdpSocket::bind("127.0.0.1:0").await.map_err(RelayError::Bind)?;
        let addr = client_side.local_addr().map_err(RelayError::Bind)?;
        let upstream_addr = upstream.local_addr().map_err(RelayError::Bind)?;
        let started = Instant::now();
        let started_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        let stats = Arc::new(StdMutex::new(RelayStats::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let shell = Shell {
            client_side,
            upstream,
            server: config.server,
            client: None,
            up: Link::new(config.to_server, started, config.seed),
            down: Link::new(config.to_client, started, config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1)),
            stats: Arc::clone(&stats),
            strays: 0,
        };
        let task = tokio::spawn(shell.run(rx));
        debug!(%addr, upstream = %upstream_addr, "relay started");
        Ok(Relay { addr, upstream: upstream_addr, started, started_unix_ms, stats, commands: tx, task })
    }

    /// Where the client sends (give it to `ClientOptions::udp_via`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the server sees the client at.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
    }

    /// The instant the schedules count from.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// The same instant as milliseconds since the UNIX epoch (the clock of the client's report timelines).
    pub fn started_unix_ms(&self) -> u64 {
        self.started_unix_ms
    }

    /// Counters so far.
    pub fn stats(&self) -> RelayStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, `impairment` replaces the rest of `direction`'s schedule.
    pub fn set_impairment(&self, direction: Direction, impairment: Impairment) {
        let _ = self.commands.send(RelayCommand::Set(direction, impairment));
    }

    /// Stops forwarding and returns the final counters.
    pub async fn stop(self) -> RelayStats {
        self.task.abort();
        self.stats()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shell {
    client_side: UdpSocket,
    upstream: UdpSocket,
    server: SocketAddr,
    client: Option<SocketAddr>,
    up: Link,
    down: Link,
    stats: Arc<StdMutex<RelayStats>>,
    strays: u64,
}

impl Shell {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<RelayCommand>) {
        let mut cbuf = vec![0u8; 65_536];
        let mut ubuf = vec![0u8; 65_536];
        let mut errors = 0u32;
        loop {
            let timeout = match (self.up.poll_timeout(), self.down.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match timeout {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            let ok = tokio::select! {
                r = self.client_side.recv_from(&mut cbuf) => match r {
                    Ok((n, from)) => {
                        self.on_client_datagram(&cbuf[..n], from);
                        self.read_more(&mut cbuf);
                        true
                    }
                    Err(e) => { debug!(error = %e, "relay: client socket"); false }
                },
                r = self.upstream.recv_from(&mut ubuf) => match r {
                    Ok((n, from)) => {
                        self.on_server_datagram(&ubuf[..n], from);
                        self.read_more(&mut ubuf);
                        true
                    }
                    Err(e) => { debug!(error = %e, "relay: upstream socket"); false }
                },
                _ = sleep => true,
                cmd = commands.recv() => match cmd {
                    Some(RelayCommand::Set(direction, imp)) => {
                        let now = Instant::now();
                        match direction {
                            Direction::ToServer => self.up.set_impairment(now, imp),
                            Direction::ToClient => self.down.set_impairment(now, imp),
                        }
                        debug!(?direction, ?imp, "relay: impairment set");
                        true
                    }
                    None => break,
                },
            };
            errors = if ok { 0 } else { errors + 1 };
            if errors >= MAX_CONSECUTIVE_ERRORS {
                warn!("relay: sockets keep failing; stopping");
                break;
            }
            self.flush().await;
            self.publish_stats();
        }
        self.publish_stats();
    }

    /// Reads what else is waiting, without blocking, up to the budget.
    fn read_more(&mut self, buf: &mut [u8]) {
        for _ in 0..READ_BUDGET {
            match self.client_side.try_recv_from(buf) {
                Ok((n, from)) => self.on_client_datagram(&buf[..n], from),
                Err(_) => break,
            }
        }
        for _ in 0..READ_BUDGET {
            match self.upstream.try_recv_from(buf) {
                Ok((n, from)) => self.on_server_datagram(&buf[..n], from),
                Err(_) => break,
            }
        }
    }

    fn on_client_datagram(&mut self, data: &[u8], from: SocketAddr) {
        self.client = Some(from);
        let verdict = self.up.handle_datagram(Instant::now(), Bytes::copy_from_slice(data));
        trace!(len = data.len(), ?verdict, "relay: to server");
    }

    fn on_server_datagram(&mut self, data: &[u8], from: SocketAddr) {
        if from != self.server {
            self.strays += 1;
            return;
        }
        let verdict = self.down.handle_datagram(Instant::now(), Bytes::copy_from_slice(data));
        trace!(len = data.len(), ?verdict, "relay: to client");
    }

    async fn flush(&mut self) {
        let now = Instant::now();
        while let Some(d) = self.up.poll_transmit(now) {
            if let Err(e) = self.upstream.send_to(&d, self.server).await {
                debug!(error = %e, "relay: send to server");
            }
        }
        while let Some(d) = self.down.poll_transmit(now) {
            let Some(client) = self.client else { continue };
            if let Err(e) = self.client_side.send_to(&d, client).await {
                debug!(error = %e, "relay: send to client");
            }
        }
    }

    fn publish_stats(&self) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *s = RelayStats {
            to_server: self.up.stats(),
            to_client: self.down.stats(),
            client: self.client,
            strays: self.strays,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers `len`-byte datagrams at `offered_bps` from `from` to `to` (simulated), drains the link as it goes,
    /// and returns (bytes delivered in [from, to), delivery times).
    fn drive(link: &mut Link, t0: Instant, from: Duration, to: Duration, offered_bps: u64, len: usize) -> Vec<Instant> {
        let gap = Duration::from_nanos(len as u64 * 8 * 1_000_000_000 / offered_bps);
        let mut next_in = t0 + from;
        let end = t0 + to;
        let mut out = Vec::new();
        // Bounded: one step per arrival or departure until `end`.
        for _ in 0..10_000_000 {
            let next_out = link.poll_timeout();
            let now = match next_out {
                Some(o) if o < next_in => o,
                _ => next_in,
            };
            if now >= end {
                break;
            }
            if now == next_in {
                link.handle_datagram(now, Bytes::from(vec![0u8; len]));
                next_in += gap;
            }
            while link.poll_transmit(now).is_some() {
                out.push(now);
            }
        }
        out
    }

    fn kbps(times: &[Instant], len: usize, t0: Instant, from: Duration, to: Duration) -> f64 {
        let n = times.iter().filter(|t| **t >= t0 + from && **t < t0 + to).count();
        (n * len * 8) as f64 / (to - from).as_secs_f64() / 1000.0
    }

    #[test]
    fn a_cap_passes_its_rate_and_drops_the_rest() {
        let t0 = Instant::now();
        let mut link = Link::new(Schedule::constant(Impairment::rate(400_000)), t0, 7);
        let out = drive(&mut link, t0, Duration::ZERO, Duration::from_secs(10), 1_000_000, 1200);
        let rate = kbps(&out, 1200, t0, Duration::from_secs(1), Duration::from_secs(10));
        assert!((390.0..=410.0).contains(&rate), "{rate} kbps out");
        let s = link.stats();
        assert_eq!(s.datagrams_lost, 0);
        // About 60 % of the offered load is dropped at the tail.
        let dropped = s.datagrams_dropped as f64 / s.datagrams_in as f64;
        assert!((0.55..=0.65).contains(&dropped), "{s:?}");
        // The queue holds at most 100 ms at 400 kbps (5000 bytes), so no datagram waits longer.
        assert!(s.max_queue_delay <= Duration::from_millis(100), "{s:?}");
        assert!(s.max_queue_delay >= Duration::from_millis(40), "the queue did fill: {s:?}");
    }

    #[test]
    fn queue_limits() {
        struct Case {
            name: &'static str,
            queue: QueueLimit,
            max_delay_ms: u64,
        }
        let cases = [
            Case { name: "bytes", queue: QueueLimit::Bytes(12_000), max_delay_ms: 240 },
            Case { name: "delay", queue: QueueLimit::Delay(Duration::from_millis(50)), max_delay_ms: 50 },
        ];
        for case in cases {
            let t0 = Instant::now();
            // 400 kbps: 1200 bytes take 24 ms; 12 000 bytes queue 240 ms.
            let mut link = Link::new(Schedule::constant(Impairment::rate(400_000).with_queue(case.queue)), t0, 1);
            drive(&mut link, t0, Duration::ZERO, Duration::from_secs(3), 2_000_000, 1200);
            let s = link.stats();
            assert!(s.max_queue_delay <= Duration::from_millis(case.max_delay_ms), "{}: {s:?}", case.name);
            assert!(
                s.max_queue_delay >= Duration::from_millis(case.max_delay_ms / 4),
                "{}: the queue filled up: {s:?}",
                case.name
            );
            assert!(s.datagrams_dropped > 0, "{}", case.name);
        }
    }

    #[test]
    fn under_the_cap_nothing_is_dropped_or_queued() {
        let t0 = Instant::now();
        let mut link = Link::new(Schedule::constant(Impairment::rate(3_000_000)), t0, 1);
        let out = drive(&mut link, t0, Duration::ZERO, Duration::from_secs(5), 1_000_000, 1000);
        let s = link.stats();
        assert_eq!((s.datagrams_dropped, s.datagrams_lost), (0, 0));
        assert!(out.len() as u64 + 1 >= s.datagrams_in, "all delivered (the last may still be serialising)");
        // Serialisation only: 1000 bytes at 3 Mbps = 2.67 ms.
        assert!(s.max_queue_delay.is_zero(), "{s:?}");
    }

    #[test]
    fn schedule_switches_at_the_right_instant() {
        let t0 = Instant::now();
        let schedule = Schedule::constant(Impairment::rate(3_000_000))
            .then(Duration::from_secs(8), Impairment::rate(400_000))
            .then(Duration::from_secs(16), Impairment::rate(3_000_000));
        assert_eq!(schedule.at(Duration::from_millis(7999)).rate_bps, Some(3_000_000));
        assert_eq!(schedule.at(Duration::from_secs(8)).rate_bps, Some(400_000));
        assert_eq!(schedule.at(Duration::from_millis(15_999)).rate_bps, Some(400_000));
        assert_eq!(schedule.at(Duration::from_secs(16)).rate_bps, Some(3_000_000));
        assert_eq!(schedule.at(Duration::from_secs(3600)).rate_bps, Some(3_000_000));

        let mut link = Link::new(schedule, t0, 3);
        let out = drive(&mut link, t0, Duration::ZERO, Duration::from_secs(24), 1_000_000, 1200);
        let s = |a: u64, b: u64| kbps(&out, 1200, t0, Duration::from_millis(a), Duration::from_millis(b));
        assert!((950.0..=1050.0).contains(&s(0, 8000)), "before: {}", s(0, 8000));
        // The queue fills within 100 ms of the switch; from then on exactly the cap.
        assert!((390.0..=410.0).contains(&s(8200, 16_000)), "during: {}", s(8200, 16_000));
        // Nothing is delivered faster than the cap once it applies (first 200 ms: cap + the old queue, tiny).
        assert!(s(8000, 8200) <= 1050.0, "switch: {}", s(8000, 8200));
        assert!((950.0..=1050.0).contains(&s(16_200, 24_000)), "after: {}", s(16_200, 24_000));
        // The first drop happens right after 8 s, none before.
        let st = link.stats();
        assert!(st.datagrams_dropped > 0);
    }

    #[test]
    fn set_impairment_replaces_the_rest_of_the_schedule() {
        let t0 = Instant::now();
        let mut link = Link::new(
            Schedule::constant(Impairment::none()).then(Duration::from_secs(5), Impairment::rate(100_000)),
            t0,
            1,
        );
        link.set_impairment(t0 + Duration::from_secs(2), Impairment::rate(1_000_000));
        assert_eq!(link.impairment_at(t0 + Duration::from_secs(1)).rate_bps, None);
        assert_eq!(link.impairment_at(t0 + Duration::from_secs(2)).rate_bps, Some(1_000_000));
        assert_eq!(link.impairment_at(t0 + Duration::from_secs(9)).rate_bps, Some(1_000_000));
    }

    #[test]
    fn delay_and_jitter_never_reorder() {
        let t0 = Instant::now();
        let imp = Impairment::none().with_delay(Duration::from_millis(40), Duration::from_millis(20));
        let mut link = Link::new(Schedule::constant(imp), t0, 9);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for i in 0..1000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            link.handle_datagram(now, Bytes::from(i.to_be_bytes().to_vec()));
            sent.push(now);
            while let Some(d) = link.poll_transmit(now) {
                got.push((now, u32::from_be_bytes([d[0], d[1], d[2], d[3]])));
            }
        }
        let end = t0 + Duration::from_secs(5);
        while let Some(d) = link.poll_transmit(end) {
            got.push((end, u32::from_be_bytes([d[0], d[1], d[2], d[3]])));
        }
        assert_eq!(got.len(), 1000);
        for (i, (at, n)) in got.iter().enumerate() {
            assert_eq!(*n, i as u32, "order kept");
            if *at < end {
                let delay = *at - sent[i];
                assert!(delay >= Duration::from_millis(40) && delay <= Duration::from_millis(61), "{delay:?}");
            }
        }
        assert_eq!(link.poll_timeout(), None);
    }

    #[test]
    fn loss_is_random_but_seeded() {
        let run = |seed| {
            let t0 = Instant::now();
            let mut link = Link::new(Schedule::constant(Impairment::none().with_loss(0.1)), t0, seed);
            (0..10_000).map(|_| link.handle_datagram(t0, Bytes::from_static(b"x")) == Verdict::Lost).collect::<Vec<_>>()
        };
        let a = run(5);
        assert_eq!(a, run(5), "same seed, same losses");
        assert_ne!(a, run(6));
        let lost = a.iter().filter(|l| **l).count();
        assert!((900..=1100).contains(&lost), "{lost}");
    }

    #[tokio::test]
    async fn the_shell_paces_to_the_cap() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // 2 Mbps, room for everything: 50 datagrams of 1000 bytes (few enough for the socket buffers) leave over
        // 200 ms.
        let cap = Impairment::rate(2_000_000).with_queue(QueueLimit::Bytes(200_000));
        let relay = Relay::start(RelayConfig::new(server.local_addr().unwrap()).to_server(Schedule::constant(cap)))
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..50 {
            client.send_to(&[7u8; 1000], relay.addr()).await.unwrap();
        }
        let mut buf = [0u8; 2000];
        let mut first = None;
        for _ in 0..50 {
            let r = tokio::time::timeout(Duration::from_secs(5), server.recv_from(&mut buf)).await;
            let (n, _) = r.unwrap_or_else(|_| panic!("{:?}", relay.stats())).unwrap();
            assert_eq!(n, 1000);
            first.get_or_insert_with(Instant::now);
        }
        let spread = first.unwrap().elapsed();
        assert!(spread >= Duration::from_millis(150) && spread <= Duration::from_secs(2), "{spread:?}");
        let s = relay.stats().to_server;
        assert_eq!((s.datagrams_out, s.datagrams_dropped), (50, 0), "{s:?}");
    }

    /// Sends `n` numbered datagrams one per millisecond through `link` (simulated time) and returns what came out,
    /// in delivery order, as the numbers.
    fn numbered(link: &mut Link, t0: Instant, n: u32) -> Vec<u32> {
        numbered_timed(link, t0, n).into_iter().map(|(n, _)| n).collect()
    }

    /// [`numbered`] with each delivery's time since `t0`.
    fn numbered_timed(link: &mut Link, t0: Instant, n: u32) -> Vec<(u32, Duration)> {
        let mut out = Vec::new();
        let drain = |link: &mut Link, now: Instant, out: &mut Vec<(u32, Duration)>| {
            while let Some(d) = link.poll_transmit(now) {
                out.push((u32::from_be_bytes([d[0], d[1], d[2], d[3]]), now - t0));
            }
        };
        for i in 0..n {
            let now = t0 + Duration::from_millis(u64::from(i));
            drain(link, now, &mut out);
            link.handle_datagram(now, Bytes::copy_from_slice(&i.to_be_bytes()));
        }
        // Bounded: the delay line empties within the longest delay configured in these tests.
        let mut now = t0 + Duration::from_millis(u64::from(n));
        for _ in 0..100_000 {
            drain(link, now, &mut out);
            match link.poll_timeout() {
                Some(t) => now = t.max(now),
                None => break,
            }
        }
        out
    }

    #[test]
    fn an_outage_loses_the_datagrams_due_during_it() {
        let t0 = Instant::now();
        let delay = Impairment::none().with_delay(Duration::from_millis(50), Duration::ZERO);
        // The same delay during the outage, so that every datagram is due 50 ms after it was sent.
        let schedule = Schedule::constant(delay)
            .then(Duration::from_secs(1), Impairment { outage: true, ..delay })
            .then(Duration::from_secs(2), delay);
        assert_eq!(schedule.outage_end(Duration::from_millis(999)), None, "no outage then");
        assert_eq!(schedule.outage_end(Duration::from_millis(1500)), Some(Duration::from_secs(2)));
        assert_eq!(Schedule::constant(Impairment::outage()).outage_end(Duration::ZERO), None, "endless");
        let mut link = Link::new(schedule, t0, 1);
        let got = numbered_timed(&mut link, t0, 3000);
        // Sent at i ms, due at i + 50 ms: those due in [1 s, 2 s) are lost, the rest arrive on time.
        let want: Vec<u32> = (0..950).chain(1950..3000).collect();
        assert!(got.iter().map(|(n, _)| *n).eq(want.iter().copied()), "{} delivered", got.len());
        assert!(got.iter().all(|(n, at)| *at == Duration::from_millis(u64::from(*n) + 50)));
        let s = link.stats();
        assert_eq!((s.datagrams_lost_in_outage, s.datagrams_lost, s.bytes_dropped), (1000, 0, 4000));
    }

    #[test]
    fn a_stream_outage_holds_everything_and_delivers_it_in_order_when_it_ends() {
        let t0 = Instant::now();
        let delay = Impairment::none().with_delay(Duration::from_millis(50), Duration::from_millis(5));
        let schedule = Schedule::constant(delay)
            .then(Duration::from_secs(1), Impairment::outage())
            .then(Duration::from_secs(2), delay);
        let mut link = Link::new_stream(schedule, t0, 1);
        let got = numbered_timed(&mut link, t0, 3000);
        assert!(got.iter().map(|(n, _)| *n).eq(0..3000), "all, in order: {} delivered", got.len());
        let (second, third) = (Duration::from_secs(1), Duration::from_secs(2));
        assert!(got.iter().all(|(_, at)| *at < second || *at >= third), "nothing during the outage");
        // Held since they were due (at most 55 ms after being sent), then all at once when it ends.
        let held: Vec<u32> = got.iter().filter(|(_, at)| *at == third).map(|(n, _)| *n).collect();
        assert!(held.len() > 990 && held[0] <= 950 && held[held.len() - 1] >= 1945, "{}", held.len());
        let s = link.stats();
        assert_eq!((s.datagrams_lost_in_outage, s.bytes_dropped, s.datagrams_out), (0, 0, 3000));
        assert_eq!(link.poll_timeout(), None);
        assert!(link.is_empty());
    }

    #[test]
    fn a_stream_is_never_dropped_reordered_or_duplicated_and_loss_costs_a_retransmission() {
        let t0 = Instant::now();
        let n = 20_000;
        let imp = Impairment::none()
            .with_delay(Duration::from_millis(20), Duration::ZERO)
            .with_loss(0.05)
            .with_burst_loss(BurstLoss::with_mean(0.02, 3.0))
            .with_reorder(0.1, Duration::from_millis(5))
            .with_duplicate(0.1);
        assert_eq!(imp.retransmission_timeout(), Duration::from_millis(200), "at least 200 ms");
        let mut link = Link::new_stream(Schedule::constant(imp), t0, 4);
        let got = numbered_timed(&mut link, t0, n);
        assert!(got.iter().map(|(n, _)| *n).eq(0..n), "all, once, in order: {} delivered", got.len());
        let s = link.stats();
        assert_eq!(
            (s.datagrams_lost, s.datagrams_dropped, s.datagrams_reordered, s.datagrams_duplicated, s.bytes_dropped),
            (0, 0, 0, 0, 0)
        );
        let retransmitted = s.datagrams_retransmitted as f64 / f64::from(n);
        assert!((0.06..0.08).contains(&retransmitted), "{retransmitted}");
        // A lost chunk arrives one RTO late, and those behind it wait for it (head-of-line blocking).
        let delays: Vec<Duration> = got.iter().map(|(i, at)| *at - Duration::from_millis(u64::from(*i))).collect();
        assert_eq!(delays.iter().max(), Some(&Duration::from_millis(220)));
        assert_eq!(delays.iter().min(), Some(&Duration::from_millis(20)));
        let late = delays.iter().filter(|d| **d > Duration::from_millis(20)).count() as u64;
        assert!(late > 5 * s.datagrams_retransmitted, "{late} late");
        // A longer delay makes a longer timeout: a round trip.
        let slow = Impairment::none().with_delay(Duration::from_millis(150), Duration::ZERO);
        assert_eq!(slow.retransmission_timeout(), Duration::from_millis(300));
    }

    #[test]
    fn a_stream_pushes_back_instead_of_dropping() {
        // A sender with an endless backlog reads what the link has room for, whenever it has some.
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(5);
        let mut link = Link::new_stream(Schedule::constant(Impairment::rate(200_000)), t0, 1);
        let (mut now, mut delivered, mut pushed_back) = (t0, 0usize, 0u32);
        let mut done = false;
        for _ in 0..1_000_000 {
            while let Some(d) = link.poll_transmit(now) {
                delivered += d.len();
            }
            let room = link.room(now).min(1000);
            if room > 0 {
                assert_eq!(link.handle_datagram(now, Bytes::from(vec![0u8; room])), Verdict::Queued);
                continue;
            }
            pushed_back += 1;
            match link.poll_timeout() {
                Some(t) if t < end => now = t.max(now),
                _ => {
                    done = true;
                    break;
                }
            }
        }
        assert!(done, "bounded");
        // 5 s at 200 kbps = 125 000 bytes; the queue filled but never held more than its 100 ms (2500 bytes).
        assert!((124_000..=125_000).contains(&delivered), "{delivered}");
        let s = link.stats();
        assert_eq!((s.datagrams_dropped, s.bytes_dropped), (0, 0));
        assert!(s.max_queue_delay <= Duration::from_millis(100), "{s:?}");
        assert!(s.max_queue_delay >= Duration::from_millis(40), "{s:?}");
        assert!(pushed_back > 100, "{pushed_back}");

        // During an outage a stream takes a window's worth, then nothing until it ends.
        let mut link = Link::new_stream(Schedule::constant(Impairment::outage()), t0, 1);
        let mut taken = 0;
        while link.room(t0) > 0 {
            let room = link.room(t0).min(65_536);
            link.handle_datagram(t0, Bytes::from(vec![0u8; room]));
            taken += room;
        }
        assert_eq!(taken, STREAM_WINDOW);
        assert_eq!(link.poll_transmit(t0 + Duration::from_secs(60)), None);
        assert_eq!(link.poll_timeout(), None, "an endless outage never wakes");
        link.set_impairment(t0 + Duration::from_secs(61), Impairment::none());
        let mut out = 0;
        while let Some(d) = link.poll_transmit(t0 + Duration::from_secs(61)) {
            out += d.len();
        }
        assert_eq!(out, STREAM_WINDOW, "all of it once the outage ends");
    }

    /// The mean length of the runs of consecutive numbers missing from `got` (delivered numbers, in order).
    fn mean_loss_run(got: &[u32]) -> f64 {
        let (mut runs, mut missing) = (0u32, 0u32);
        for w in got.windows(2) {
            let gap = w[1] - w[0] - 1;
            if gap > 0 {
                runs += 1;
                missing += gap;
            }
        }
        f64::from(missing) / f64::from(runs)
    }

    #[test]
    fn burst_loss_has_the_mean_and_the_burst_length_asked_for() {
        let t0 = Instant::now();
        let n = 200_000;
        let mut link =
            Link::new(Schedule::constant(Impairment::none().with_burst_loss(BurstLoss::with_mean(0.10, 5.0))), t0, 7);
        let got = numbered(&mut link, t0, n);
        let lost = f64::from(n - got.len() as u32) / f64::from(n);
        assert!((lost - 0.10).abs() < 0.01, "mean loss {lost}");
        // Runs of consecutive missing numbers: about 5 long on average (random loss at 10 % would give ~1.1).
        let mean_run = mean_loss_run(&got);
        assert!((4.0..6.0).contains(&mean_run), "mean burst {mean_run}");
        assert_eq!(link.stats().datagrams_lost_in_bursts, u64::from(n) - got.len() as u64);
        // Random loss of the same mean has short runs.
        let mut random = Link::new(Schedule::constant(Impairment::none().with_loss(0.10)), t0, 7);
        let got = numbered(&mut random, t0, n);
        assert!(mean_loss_run(&got) < 1.3);
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake_and_loses_none() {
        let t0 = Instant::now();
        let n = 20_000;
        let imp = Impairment::none()
            .with_delay(Duration::from_millis(10), Duration::from_millis(2))
            .with_reorder(0.05, Duration::from_millis(5));
        let mut link = Link::new(Schedule::constant(imp), t0, 3);
        let got = numbered(&mut link, t0, n);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "every datagram once");
        // A datagram is out of order when a higher number came before it.
        let mut highest = 0;
        let late = got.iter().filter(|&&x| {
            let l = x < highest;
            highest = highest.max(x);
            l
        });
        let late = late.count() as f64 / f64::from(n);
        assert!((0.035..0.065).contains(&late), "out of order {late}");
        assert!((link.stats().datagrams_reordered as f64 / f64::from(n) - 0.05).abs() < 0.01);
        // Without reordering, jitter alone keeps the order.
        let mut plain = Link::new(
            Schedule::constant(Impairment::none().with_delay(Duration::from_millis(10), Duration::from_millis(2))),
            t0,
            3,
        );
        assert_eq!(numbered(&mut plain, t0, 2_000), (0..2_000).collect::<Vec<_>>());
    }

    #[test]
    fn duplication_delivers_copies_next_to_the_original() {
        let t0 = Instant::now();
        let n = 20_000;
        let mut link = Link::new(Schedule::constant(Impairment::none().with_duplicate(0.02)), t0, 11);
        let got = numbered(&mut link, t0, n);
        let copies = got.len() - n as usize;
        assert!((copies as f64 / f64::from(n) - 0.02).abs() < 0.005, "copies {copies}");
        assert_eq!(link.stats().datagrams_duplicated, copies as u64);
        let mut dedup = got.clone();
        dedup.dedup();
        assert_eq!(dedup, (0..n).collect::<Vec<_>>(), "in order, each copy right after its original");
    }

    #[tokio::test]
    async fn relays_both_ways_over_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::start(RelayConfig::new(server.local_addr().unwrap())).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let t = Duration::from_secs(5);
        let mut buf = [0u8; 64];
        client.send_to(b"ping", relay.addr()).await.unwrap();
        let (n, from) = tokio::time::timeout(t, server.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], relay.upstream_addr()));
        server.send_to(b"pong", from).await.unwrap();
        let (n, from) = tokio::time::timeout(t, client.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay.addr()));
        // A stranger on the upstream socket is ignored.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(b"spam", relay.upstream_addr()).await.unwrap();
        let deadline = tokio::time::Instant::now() + t;
        while relay.stats().strays == 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = relay.stats();
        assert_eq!((s.to_server.datagrams_out, s.to_client.datagrams_out), (1, 1));
        assert_eq!(s.client, Some(client.local_addr().unwrap()));
        let s = relay.stop().await;
        assert_eq!(s.to_client.bytes_in, 4);
    }
}
