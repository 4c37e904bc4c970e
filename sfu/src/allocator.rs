//! The stream allocator: how much of each subscribed track one subscriber's link gets.
//!
//! It exists because a subscriber's downlink is shared by everything it receives, and only the server can divide
//! it: the send-side bandwidth estimate (str0m's TWCC-based BWE) says how much the link carries, the publishers'
//! layers say what each step costs, and the subscriber's settings say what it can use. The allocator is a pure
//! state machine: it takes the estimate and the tracks with the time, and returns which layer each video track
//! gets (or that it is paused) and what to ask the estimator for. The peer applies the decision; nothing here
//! touches a socket or a clock.
//!
//! # Policy
//!
//! - **Audio first**: audio tracks are priced first and never paused; then screen shares, then cameras.
//! - **Lowest layers first**: every video track gets its lowest layer before any gets a second one (in priority
//!   order). Then tracks move up one layer at a time: screen shares to their best before cameras, cameras
//!   round-robin.
//! - **Pausing is the last resort**: a track whose lowest layer does not fit the estimate keeps that layer, and is
//!   **paused** (the client is told why) only when it has not fitted for [`PAUSE_HOLD`] *and* the link was congested
//!   through that time: a mean loss of at least [`LOSS_PAUSE`] in the reports of the hold (a probe's loss excluded),
//!   or a queue of at least [`QUEUE_CONGESTED`] in every round-trip sample of the hold (at least two; the queue is
//!   the round-trip time above the lowest of the last [`RTT_BASELINE`]). An estimate can fall for
//!   reasons that are not the link (random loss that NACK repairs, a receiver's jittery clock); forwarding a layer the
//!   link carries costs nothing, a frozen picture costs the call. A paused track is probed for and comes back on its
//!   lowest layer once the estimate fits it for [`UP_HOLD`].
//! - **Never more than wanted**: a track's ceiling is the layer its rendered size needs (adaptive stream); a
//!   hidden track gets nothing.
//! - **Down at once, up with proof**: when the current allocation costs more than the estimate, it is cut at
//!   once to what fits in [`UP_FRACTION`] of it. Moving up needs the better allocation to fit for [`UP_HOLD`]
//!   without a break. The gap between the two thresholds and the hold keep it from flapping.
//! - **Probe before moving up**: an estimate only grows when something is sent, so when more is wanted than fits,
//!   the allocator runs a probe: it asks the estimator for padding up to the cost of the next step (`min`) and
//!   for the full want (`desired`, which makes str0m send a probe cluster). If the estimate grows enough, the hold
//!   rule moves up; if not within [`PROBE_TIMEOUT`], the probe fails, padding stops and the next probe waits a
//!   back-off that doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
//! - **Loss is a second opinion**: a delay-based estimate can lag a link that suddenly shrinks (it holds while
//!   the queue overflows). When the subscriber reports losing [`LOSS_CONGESTED`] or more of what it was sent,
//!   the link is taken to carry at most what was sent less what was lost, for [`LOSS_MEMORY`]. Less loss than that
//!   is left to NACK/RTX and to str0m's loss-based estimator.
//! - **The estimator hears what is sent**: the wish's `min` and `desired` are never below what the allocation costs,
//!   and follow it as measured bitrates drift (by more than [`WISH_DRIFT`]). str0m paces at a multiple of the larger
//!   of the estimate and `min`, and caps every probe it makes at twice `desired`: a stale, low wish makes probes that
//!   can only measure that low rate, and a probe's result replaces the estimate.
//! - **Estimate memory**: str0m lowers its estimate toward what is sent when little is sent (a hidden tile, a
//!   paused camera), though the link did not change. The highest estimate seen while everything wanted was being
//!   sent (and at least a third of it used) is remembered for [`ESTIMATE_MEMORY`]; when more is wanted again and
//!   the estimate has fallen below that with no congestion seen since (no cut, no loss), the estimator is
//!   restarted from the remembered value. If the link did shrink meanwhile, the estimator finds out within a
//!   second and the allocator cuts as usual.
//! - **No estimate, no limit**: without TWCC feedback (no estimate) tracks get what their settings want.
//! - **A guess is not evidence**: the estimate a subscriber starts with is configuration (`bwe_initial_kbps`), not a
//!   measurement. Until the estimator first lowers it (by more than [`ESTIMATE_FALL`]), no lowest layer is cut or
//!   paused below it: a single-layer 1.5 Mbit/s camera is not withheld from a new subscriber because the guess was
//!   1 Mbit/s. The media then shows the estimator what the link carries; a link that cannot carry it makes the
//!   estimate fall, and from then on the rules above apply. (Found by the load generator: with 200 new subscribers
//!   on a busy server, probes kept failing and a fifth of them got nothing for 30 s.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::id::TrackId;
use crate::layer::{self, MAX_SPATIAL};

/// Upgrades must fit in this fraction of the estimate.
pub const UP_FRACTION: f64 = 0.9;
/// How long an upgrade must keep fitting before it is made.
pub const UP_HOLD: Duration = Duration::from_secs(1);
/// How long a video track's lowest layer must keep not fitting before the track is paused. Pausing freezes the
/// picture, so a dip of the estimate (one burst of queueing) must not do it; a lower layer is taken at once. The
/// link must also show congestion in that time (see "Pausing is the last resort").
pub const PAUSE_HOLD: Duration = Duration::from_secs(2);
/// A wish is handed to the estimator again when what is sent has drifted this far from it (as a fraction).
pub const WISH_DRIFT: f64 = 0.1;
/// A subscriber losing this fraction of its packets is congested, whatever the estimate says. Random loss below it
/// is what NACK/RTX repairs (a browser keeps 30 fps at 10 % random loss, and most of it at 20 %); a link that cannot
/// carry what it is sent loses more, or queues.
pub const LOSS_CONGESTED: f32 = 0.25;
/// Mean loss over [`PAUSE_HOLD`] at which a link cannot carry what it is sent: far above what NACK repairs, and what a
/// link that carries well under the lowest layer shows.
pub const LOSS_PAUSE: f32 = 0.4;
/// Queueing delay (round-trip time above the lowest seen in [`RTT_BASELINE`]) at which a link is congested.
pub const QUEUE_CONGESTED: Duration = Duration::from_millis(150);
/// How long the lowest round-trip time is remembered as the link's own (no queue).
pub const RTT_BASELINE: Duration = Duration::from_secs(10);
/// How long a loss report caps the estimate.
pub const LOSS_MEMORY: Duration = Duration::from_secs(2);
/// How long a proven estimate is remembered.
pub const ESTIMATE_MEMORY: Duration = Duration::from_secs(30);
/// An estimate below this fraction of the previous one is a fall: the estimator saw congestion.
pub const ESTIMATE_FALL: f64 = 0.95;
/// How far beyond what a step needs a probe asks the estimator to look.
pub const PROBE_OVERSHOOT: f64 = 1.15;
/// No probe for this long after a cut.
pub const CUT_QUIET: Duration = Duration::from_secs(2);
/// How long after a probe loss reports are still blamed on it.
pub const PROBE_LOSS_LAG: Duration = Duration::from_secs(1);
/// How long a probe may take to raise the estimate enough for the next step.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after a failed probe.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait after failed probes.
pub const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// What a layer is assumed to cost before its bitrate has been measured (bits per second; q/h/f).
const DEFAULT_COST: [u64; 3] = [150_000, 500_000, 1_500_000];
/// What an audio track is assumed to cost before it has been measured.
const DEFAULT_AUDIO_COST: u64 = 50_000;

/// Who is served first. Lower is more important.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Audio: priced first, never paused.
    Audio,
    /// A screen share: legible text matters more than faces.
    Screen,
    /// A camera.
    #[default]
    Camera,
}

/// One track as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInput {
    /// The track.
    pub track: TrackId,
    /// Its priority (audio, screen, camera).
    pub priority: Priority,
    /// Measured bitrate of each live layer, bits per second (0: not measured yet, or not live). A track without
    /// simulcast has only layer 0.
    pub bitrates: [u32; 3],
    /// Live layers (bit `i` = layer `i`).
    pub live: u8,
    /// The highest layer the subscriber can use (from its render size); `None`: hidden, nothing wanted.
    pub wanted: Option<u8>,
}

/// What a video track gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Up to this spatial layer.
    Layer(u8),
    /// Nothing: even its lowest layer does not fit.
    Paused,
}

/// What to ask str0m's estimator for: padding up to `min` bits per second in total, and probing toward
/// `desired` (see `str0m::Bwe::set_bitrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitrateWish {
    /// Keep the link busy up to this (media plus padding).
    pub min: u64,
    /// Try to discover this much capacity.
    pub desired: u64,
}

/// The result of [`Allocator::update`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Video tracks whose allocation changed.
    pub changes: Vec<(TrackId, Allocation)>,
    /// A new wish for the estimator, when it changed.
    pub wish: Option<BitrateWish>,
    /// Restart the estimator from this estimate (see "estimate memory" in the module doc).
    pub reset_estimate: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Not probing; the next probe may start at `next` (or at once).
    Idle { next: Option<Instant> },
    /// Padding toward `target` bits per second until `until`.
    Running { until: Instant, target: u64 },
}

/// See the module doc.
#[derive(Debug)]
pub struct Allocator {
    estimate: Option<u64>,
    current: HashMap<TrackId, Allocation>,
    /// Since when a better allocation than the current one has fitted.
    better_since: Option<Instant>,
    /// Since when some track's lowest layer has not fitted (it keeps that layer until [`PAUSE_HOLD`]).
    pause_since: Option<Instant>,
    probe: Probe,
    backoff: Duration,
    last_wish: Option<BitrateWish>,
    /// What the last allocation cost (bits per second), and the ceiling a loss report put on the estimate.
    last_cost: u64,
    loss_cap: Option<(Instant, u64)>,
    /// When the last probe ended (loss then is the probe's own doing for a while).
    probe_ended: Option<Instant>,
    /// Was a probe running when the last wish was made?
    wish_probing: bool,
    /// The highest estimate proven by use, and when (see "estimate memory").
    proven: Option<(u64, Instant)>,
    /// What everything wanted cost at the last update.
    last_wanted: u64,
    /// Has the estimator ever lowered its estimate (seen congestion)? Until then its number is the configured
    /// starting guess, and lowest layers are not cut or paused below it (see "A guess is not evidence").
    estimate_fell: bool,
    /// Loss reports (a probe's excluded) and queueing delays of the last [`PAUSE_HOLD`]; see "Pausing is the last
    /// resort".
    loss_samples: std::collections::VecDeque<(Instant, f32)>,
    queue_samples: std::collections::VecDeque<(Instant, Duration)>,
    /// Round-trip times seen in the last [`RTT_BASELINE`] that were each the lowest so far (a monotonic window).
    rtt_floor: std::collections::VecDeque<(Instant, Duration)>,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator {
            estimate: None,
            current: HashMap::new(),
            better_since: None,
            pause_since: None,
            probe: Probe::Idle { next: None },
            backoff: BACKOFF_MIN,
            last_wish: None,
            last_cost: 0,
            loss_cap: None,
            probe_ended: None,
            wish_probing: false,
            proven: None,
            last_wanted: 0,
            estimate_fell: false,
            loss_samples: std::collections::VecDeque::new(),
            queue_samples: std::collections::VecDeque::new(),
            rtt_floor: std::collections::VecDeque::new(),
        }
    }
}

/// A track's possible steps, lowest first: the live layers up to what it wants.
fn levels(t: &TrackInput) -> ([u8; 3], usize) {
    let mut out = [0u8; 3];
    let mut n = 0;
    let Some(wanted) = t.wanted else { return (out, 0) };
    for l in 0..=wanted.min(MAX_SPATIAL) {
        if t.live & (1 << l) != 0 {
            out[n] = l;
            n += 1;
        }
    }
    if n == 0 {
        // Nothing live that low: the lowest live layer (better than nothing), or, with nothing live yet, the
        // wish itself (it costs nothing until media flows).
        out[0] = layer::select(t.live, 0).unwrap_or(wanted.min(MAX_SPATIAL));
        n = 1;
    }
    (out, n)
}

/// What forwarding `layer` of `t` costs.
fn layer_cost(t: &TrackInput, layer: u8) -> u64 {
    if t.live == 0 {
        return 0;
    }
    let l = usize::from(layer::select(t.live, layer).unwrap_or(0));
    match t.bitrates[l] {
        0 => DEFAULT_COST[l],
        b => u64::from(b),
    }
}

fn audio_cost(t: &TrackInput) -> u64 {
    match t.bitrates[0] {
        0 => DEFAULT_AUDIO_COST,
        b => u64::from(b),
    }
}

/// What an allocation of `t` costs.
fn cost(t: &TrackInput, a: Allocation) -> u64 {
    match a {
        Allocation::Paused => 0,
        Allocation::Layer(l) => layer_cost(t, l),
    }
}

/// Index into `levels(t)` of an allocation: `None` for paused.
fn level_index(t: &TrackInput, a: Allocation) -> Option<usize> {
    let Allocation::Layer(l) = a else { return None };
    let (lv, n) = levels(t);
    Some(lv[..n].iter().rposition(|x| *x <= l).unwrap_or(0))
}

impl Allocator {
    /// A new estimate from the BWE, bits per second.
    pub fn set_estimate(&mut self, bps: u64) {
        if self.estimate.is_some_and(|prev| (bps as f64) < prev as f64 * ESTIMATE_FALL) {
            self.estimate_fell = true;
        }
        self.estimate = Some(bps);
    }

    /// The last estimate.
    pub fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    /// The subscriber reported losing `fraction` of the packets sent to it (RTCP receiver report).
    pub fn report_loss(&mut self, now: Instant, fraction: f32) {
        if fraction >= LOSS_CONGESTED {
            self.proven = None;
        }
        // A probe overfills the link on purpose; the estimator reads its outcome. Loss during a probe, or just
        // after one (reports lag), says nothing about what the media alone can have.
        let probe_loss =
            self.probing() || self.probe_ended.is_some_and(|t| now.saturating_duration_since(t) < PROBE_LOSS_LAG);
        if !probe_loss {
            push_recent(&mut self.loss_samples, now, fraction);
        }
        if fraction >= LOSS_CONGESTED && self.last_cost > 0 && !probe_loss {
            let cap = (self.last_cost as f64 * (1.0 - f64::from(fraction.min(1.0)))) as u64;
            // A second report while one holds lowers the cap only.
            let cap = match self.loss_cap {
                Some((at, c)) if now.saturating_duration_since(at) < LOSS_MEMORY => c.min(cap),
                _ => cap,
            };
            self.loss_cap = Some((now, cap));
        }
    }

    /// A round-trip time measured at `now` (from the subscriber's transport feedback). A queue on the path shows as
    /// time above the lowest round trip of the last [`RTT_BASELINE`].
    pub fn report_rtt(&mut self, now: Instant, rtt: Duration) {
        while self.rtt_floor.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > RTT_BASELINE) {
            self.rtt_floor.pop_front();
        }
        while self.rtt_floor.back().is_some_and(|(_, r)| *r >= rtt) {
            self.rtt_floor.pop_back();
        }
        self.rtt_floor.push_back((now, rtt));
        let floor = self.rtt_floor.front().map_or(rtt, |(_, r)| *r);
        push_recent(&mut self.queue_samples, now, rtt.saturating_sub(floor));
    }

    /// Was the link congested through the last [`PAUSE_HOLD`] before `now` (heavy loss on average, or a queue in
    /// every sample)?
    fn congested(&self, now: Instant) -> bool {
        let recent = |at: &Instant| now.saturating_duration_since(*at) <= PAUSE_HOLD;
        let loss: Vec<f32> = self.loss_samples.iter().filter(|(at, _)| recent(at)).map(|(_, l)| *l).collect();
        let heavy_loss = loss.len() >= 2 && loss.iter().sum::<f32>() / loss.len() as f32 >= LOSS_PAUSE;
        let queue: Vec<Duration> = self.queue_samples.iter().filter(|(at, _)| recent(at)).map(|(_, q)| *q).collect();
        let queued = queue.len() >= 2 && queue.iter().all(|q| *q >= QUEUE_CONGESTED);
        heavy_loss || queued
    }

    /// The estimate to allocate by at `now`: the BWE's, lowered by a recent loss report.
    fn effective_estimate(&mut self, now: Instant) -> Option<u64> {
        if self.loss_cap.is_some_and(|(at, _)| now.saturating_duration_since(at) >= LOSS_MEMORY) {
            self.loss_cap = None;
        }
        let e = self.estimate?;
        Some(self.loss_cap.map_or(e, |(_, cap)| e.min(cap)))
    }

    /// The current allocation of `track`.
    pub fn allocation(&self, track: TrackId) -> Option<Allocation> {
        self.current.get(&track).copied()
    }

    /// The last wish handed to the estimator.
    pub fn wish(&self) -> Option<BitrateWish> {
        self.last_wish
    }

    /// Is a probe running?
    pub fn probing(&self) -> bool {
        matches!(self.probe, Probe::Running { .. })
    }

    /// Decide again, at `now`, for the subscriber's `tracks` (audio and video).
    pub fn update(&mut self, now: Instant, tracks: &[TrackInput]) -> Decision {
        let was_probing = self.probing();
        let decision = self.decide(now, tracks);
        if was_probing && !self.probing() {
            self.probe_ended = Some(now);
        }
        decision
    }

    fn decide(&mut self, now: Instant, tracks: &[TrackInput]) -> Decision {
        let mut video: Vec<&TrackInput> =
            tracks.iter().filter(|t| t.priority != Priority::Audio && t.wanted.is_some()).collect();
        video.sort_by_key(|t| (t.priority, t.track.0));
        let audio: u64 = tracks.iter().filter(|t| t.priority == Priority::Audio).map(audio_cost).sum();
        let before = std::mem::take(&mut self.current);

        // The current allocation, normalised: new tracks start where they fit now; nobody is above their want.
        let unlimited = greedy(&video, u64::MAX);
        let mut reset_estimate = None;
        if let (Some(e), Some((p, at))) = (self.estimate, self.proven) {
            let fresh = now.saturating_duration_since(at) < ESTIMATE_MEMORY && self.loss_cap.is_none();
            let wanted = audio + total_of(&video, &unlimited);
            // The want grew (a tile shown, a track subscribed) after a time when it all fitted: the estimate fell
            // for want of traffic, not because of congestion (then the want stays and the estimate drops under it).
            let grew = wanted as f64 > self.last_wanted as f64 * 1.2;
            let was_limited_by_want = self.last_wanted as f64 <= e as f64 * UP_FRACTION;
            if fresh && p > e && grew && was_limited_by_want && wanted as f64 > e as f64 * UP_FRACTION {
                self.estimate = Some(p);
                self.proven = None;
                reset_estimate = Some(p);
            }
        }
        // A loss report can take a track down to its lowest layer, never pause it: loss at a low rate is as likely
        // noise (or the tail of a queue that already drained) as congestion. Pausing is left to the estimate.
        let lowest: u64 = audio + video.iter().map(|t| layer_cost(t, levels(t).0[0])).sum::<u64>();
        let estimate = match (self.effective_estimate(now), self.estimate) {
            (Some(eff), Some(raw)) if eff < raw => Some(eff.max(lowest.min(raw))),
            (eff, _) => eff,
        };
        // A guess is not evidence: before the estimator has ever lowered its estimate, every lowest layer flows even
        // above it (the media itself shows the estimator what the link carries; upgrades still need proof).
        let floor = (lowest as f64 / UP_FRACTION).ceil() as u64;
        let estimate = if self.estimate_fell { estimate } else { estimate.map(|e| e.max(floor)) };
        let fits_up = match estimate {
            Some(e) => greedy(&video, ((e as f64 * UP_FRACTION) as u64).saturating_sub(audio)),
            None => unlimited.clone(),
        };
        let mut cur: Vec<Allocation> = video
            .iter()
            .zip(&fits_up)
            .map(|(t, fit)| match before.get(&t.track) {
                // No estimate: every track gets what it wants, whatever it had.
                _ if estimate.is_none() => *fit,
                Some(Allocation::Layer(l)) => {
                    let top = levels(t);
                    Allocation::Layer((*l).min(top.0[top.1 - 1]))
                }
                Some(Allocation::Paused) => Allocation::Paused,
                None => *fit,
            })
            .collect();
        let total = |a: &[Allocation]| total_of(&video, a);

        if let Some(estimate) = estimate {
            let cur_cost = audio + total(&cur);
            // Up one step at a time: the probe pads the link up to that step's rate first, so the estimator has
            // seen the link carry it (a jump from q to f on an estimate alone can overrun a queue, and the
            // estimator then drops toward what was flowing before).
            let step = step_up(&video, &cur);
            let better =
                total(&fits_up) > total(&cur) && audio + total(&step) <= (estimate as f64 * UP_FRACTION) as u64;
            if cur_cost > estimate {
                // Over the estimate: cut at once to a lower layer; a pause waits for PAUSE_HOLD.
                let pausing =
                    fits_up.iter().zip(&cur).any(|(f, c)| *f == Allocation::Paused && *c != Allocation::Paused);
                let since = if pausing { *self.pause_since.get_or_insert(now) } else { now };
                // Pausing is the last resort: the lowest layer stays while it has not failed to fit for the whole
                // hold, or while the link shows no congestion (an estimate can fall for reasons that are not the
                // link: random loss NACK repairs, a jittery receive clock).
                let held = now.saturating_duration_since(since) >= PAUSE_HOLD;
                let hold_pauses = pausing && !(held && self.congested(now));
                if !hold_pauses {
                    self.pause_since = None;
                }
                for (i, (f, c)) in fits_up.iter().zip(cur.iter_mut()).enumerate() {
                    *c = match (*f, *c) {
                        // Held: the lowest layer for now.
                        (Allocation::Paused, Allocation::Layer(_)) if hold_pauses => {
                            Allocation::Layer(levels(video[i]).0[0])
                        }
                        (f, _) => f,
                    };
                }
                self.better_since = None;
                self.proven = None;
                // After a cut the link is congested: no probe for a while.
                let quiet = now + self.backoff.max(CUT_QUIET);
                self.probe = match self.probe {
                    Probe::Idle { next } => Probe::Idle { next: Some(next.map_or(quiet, |n| n.max(quiet))) },
                    Probe::Running { .. } => Probe::Idle { next: Some(quiet) },
                };
            } else if better {
                self.pause_since = None;
                let since = *self.better_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= UP_HOLD {
                    cur = step;
                    self.better_since = None;
                    // A probe that got us here succeeded.
                    self.probe = Probe::Idle { next: None };
                    self.backoff = BACKOFF_MIN;
                }
            } else {
                self.better_since = None;
                self.pause_since = None;
            }

            // Probe when more is wanted than is allocated.
            let want_more = total(&unlimited) > total(&cur) || cur.contains(&Allocation::Paused);
            match self.probe {
                _ if !want_more => self.probe = Probe::Idle { next: None },
                Probe::Running { until, .. } if now >= until => {
                    self.probe = Probe::Idle { next: Some(now + self.backoff) };
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
                Probe::Idle { next } if self.better_since.is_none() && next.is_none_or(|t| now >= t) => {
                    let step = step_up(&video, &cur);
                    self.probe = Probe::Running { until: now + PROBE_TIMEOUT, target: audio + total(&step) };
                }
                _ => {}
            }
        }

        let mut decision = Decision { reset_estimate, ..Decision::default() };
        for (t, a) in video.iter().zip(&cur) {
            self.current.insert(t.track, *a);
            if before.get(&t.track) != Some(a) {
                decision.changes.push((t.track, *a));
            }
        }
        self.last_cost = audio + total(&cur);
        self.last_wanted = audio + total(&unlimited);
        if let Some(e) = estimate {
            let all_wanted = total(&cur) == total(&unlimited) && !cur.contains(&Allocation::Paused);
            let used = self.last_cost.saturating_mul(3) >= e;
            let higher =
                self.proven.is_none_or(|(p, at)| e >= p || now.saturating_duration_since(at) >= ESTIMATE_MEMORY);
            if all_wanted && used && higher && self.loss_cap.is_none() {
                self.proven = Some((e, now));
            }
        }
        if self.estimate.is_some() {
            let cur_cost = audio + total(&cur);
            let wish = match self.probe {
                Probe::Running { target, .. } => {
                    // The estimate must reach the want divided by UP_FRACTION before a step is taken: probe a
                    // little beyond that, or the probe can only confirm what is already known.
                    let want = (audio + total(&unlimited)).max(target) as f64 / UP_FRACTION * PROBE_OVERSHOOT;
                    BitrateWish { min: target.max(cur_cost), desired: want as u64 }
                }
                Probe::Idle { .. } => BitrateWish { min: cur_cost, desired: cur_cost },
            };
            // A change of allocation or probe state is a new wish, and so is a cost that drifted by more than
            // WISH_DRIFT (a publisher's encoder ramps up for seconds): below that, measured costs wobble all the
            // time and every raise of `desired` above the estimate would start another probe.
            let probing = self.probing();
            let drifted =
                self.last_wish.is_some_and(|w| (wish.min as f64 - w.min as f64).abs() > w.min as f64 * WISH_DRIFT);
            let changed =
                self.last_wish.is_none() || !decision.changes.is_empty() || probing != self.wish_probing || drifted;
            if changed && self.last_wish != Some(wish) {
                self.last_wish = Some(wish);
                self.wish_probing = probing;
                decision.wish = Some(wish);
            }
        }
        decision
    }
}

/// Append a sample taken at `now`, forgetting those older than [`PAUSE_HOLD`].
fn push_recent<T>(samples: &mut std::collections::VecDeque<(Instant, T)>, now: Instant, value: T) {
    while samples.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > PAUSE_HOLD) {
        samples.pop_front();
    }
    samples.push_back((now, value));
}

/// What `alloc` of `video` costs.
fn total_of(video: &[&TrackInput], alloc: &[Allocation]) -> u64 {
    video.iter().zip(alloc).map(|(t, a)| cost(t, *a)).sum()
}

/// Allocate `budget` bits per second over `video` (in priority order): every track its lowest level first, then
/// upward one level at a time, screen shares before cameras.
fn greedy(video: &[&TrackInput], budget: u64) -> Vec<Allocation> {
    let mut out = vec![Allocation::Paused; video.len()];
    let mut idx: Vec<Option<usize>> = vec![None; video.len()];
    let mut left = budget;
    for (i, t) in video.iter().enumerate() {
        let (lv, _) = levels(t);
        let c = layer_cost(t, lv[0]);
        if c <= left {
            left -= c;
            idx[i] = Some(0);
        }
    }
    for group in [Priority::Screen, Priority::Camera] {
        loop {
            let mut moved = false;
            for (i, t) in video.iter().enumerate().filter(|(_, t)| t.priority == group) {
                let Some(k) = idx[i] else { continue };
                let (lv, n) = levels(t);
                if k + 1 >= n {
                    continue;
                }
                let extra = layer_cost(t, lv[k + 1]).saturating_sub(layer_cost(t, lv[k]));
                if extra <= left {
                    left -= extra;
                    idx[i] = Some(k + 1);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }
    for (i, t) in video.iter().enumerate() {
        if let Some(k) = idx[i] {
            out[i] = Allocation::Layer(levels(t).0[k]);
        }
    }
    out
}

/// The allocation one step above `cur`: the first track (in priority order) that can go up goes up one level.
fn step_up(video: &[&TrackInput], cur: &[Allocation]) -> Vec<Allocation> {
    let mut next = cur.to_vec();
    for (i, t) in video.iter().enumerate() {
        let (lv, n) = levels(t);
        let k = match level_index(t, cur[i]) {
            None => 0,
            Some(k) if k + 1 < n => k + 1,
            Some(_) => continue,
        };
        next[i] = Allocation::Layer(lv[k]);
        return next;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A camera with q/h/f at 150/500/1500 kbit/s.
    fn camera(id: u64, wanted: Option<u8>) -> TrackInput {
        TrackInput {
            track: TrackId(id),
            priority: Priority::Camera,
            bitrates: [150_000, 500_000, 1_500_000],
            live: 0b111,
            wanted,
        }
    }

    fn audio(id: u64) -> TrackInput {
        TrackInput { track: TrackId(id), priority: Priority::Audio, bitrates: [40_000, 0, 0], live: 1, wanted: Some(0) }
    }

    /// Run the allocator every 100 ms from `from` for `dur` with a fixed estimate; returns the time after.
    fn run(a: &mut Allocator, from: Instant, dur: Duration, estimate: u64, tracks: &[TrackInput]) -> Instant {
        let mut t = from;
        a.set_estimate(estimate);
        while t < from + dur {
            a.update(t, tracks);
            t += 100 * MS;
        }
        t
    }

    /// Like [`run`], with the link congested: the subscriber reports losing half of what it is sent, every 500 ms.
    fn run_congested(a: &mut Allocator, from: Instant, dur: Duration, estimate: u64, tracks: &[TrackInput]) -> Instant {
        let mut t = from;
        a.set_estimate(estimate);
        while t < from + dur {
            if (t - from).as_millis().is_multiple_of(500) {
                a.report_loss(t, 0.5);
            }
            a.update(t, tracks);
            t += 100 * MS;
        }
        t
    }

    #[test]
    fn no_estimate_gives_what_is_wanted() {
        let mut a = Allocator::default();
        let d = a.update(Instant::now(), &[camera(1, Some(2)), camera(2, Some(0)), camera(3, None)]);
        assert_eq!(d.changes, vec![(TrackId(1), Allocation::Layer(2)), (TrackId(2), Allocation::Layer(0))]);
        assert_eq!(d.wish, None, "nothing to ask an estimator that is not there");
    }

    #[test]
    fn no_estimate_follows_the_wish_both_ways() {
        let mut a = Allocator::default();
        let t0 = Instant::now();
        a.update(t0, &[camera(1, Some(0))]);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)));
        let d = a.update(t0 + MS, &[camera(1, Some(2))]);
        assert_eq!(d.changes, vec![(TrackId(1), Allocation::Layer(2))], "a bigger tile gets the full layer at once");
    }

    #[test]
    fn switches_down_at_once_and_up_after_the_hold() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let tracks = [audio(9), camera(1, Some(2))];
        let t = run(&mut a, t0, 2000 * MS, 3_000_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(2)));

        // The link drops to 400 kbit/s: h (500) no longer fits, q (150) does. Down on the first update.
        a.set_estimate(400_000);
        let d = a.update(t, &tracks);
        assert_eq!(d.changes, vec![(TrackId(1), Allocation::Layer(0))]);

        // Back to 3 Mbit/s: not before the hold, then up one layer per hold.
        a.set_estimate(3_000_000);
        let t = t + 100 * MS;
        a.update(t, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)), "no jump without proof");
        let d = a.update(t + UP_HOLD - MS, &tracks);
        assert!(d.changes.is_empty());
        let d = a.update(t + UP_HOLD, &tracks);
        assert_eq!(d.changes, vec![(TrackId(1), Allocation::Layer(1))], "one step at a time");
        a.update(t + UP_HOLD + 100 * MS, &tracks);
        let d = a.update(t + 2 * UP_HOLD + 100 * MS, &tracks);
        assert_eq!(d.changes, vec![(TrackId(1), Allocation::Layer(2))]);
    }

    #[test]
    fn a_starting_guess_does_not_pause_a_single_layer_until_the_estimate_falls() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // One layer (no simulcast) at 1.5 Mbit/s; the estimator starts at its configured 1 Mbit/s.
        let single = TrackInput { live: 0b001, bitrates: [1_500_000, 0, 0], ..camera(1, Some(2)) };
        let tracks = [single];
        let t = run(&mut a, t0, PAUSE_HOLD + UP_HOLD, 1_000_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)), "flows above the guess");
        // The estimate grows with what flows, then falls: congestion seen, the usual rules (a pause after the hold).
        let t = run(&mut a, t, 500 * MS, 1_400_000, &tracks);
        let t = run(&mut a, t, PAUSE_HOLD + 100 * MS, 600_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)), "no congestion seen: kept");
        run_congested(&mut a, t, PAUSE_HOLD + 100 * MS, 600_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Paused));
    }

    #[test]
    fn pauses_when_nothing_fits_and_resumes() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let tracks = [audio(9), camera(1, Some(2))];
        let t = run(&mut a, t0, 500 * MS, 3_000_000, &tracks);
        // 150 kbit/s: audio (40) + q (150) does not fit; audio is never paused, the video is — after the hold, the
        // link losing half of what it is sent.
        a.set_estimate(150_000);
        a.report_loss(t, 0.5);
        a.update(t, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)), "down to the lowest layer at once");
        a.report_loss(t + PAUSE_HOLD / 2, 0.5);
        a.update(t + PAUSE_HOLD - MS, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)), "not paused before the hold");
        let t = t + PAUSE_HOLD;
        a.report_loss(t, 0.5);
        a.update(t, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Paused));
        assert_eq!(a.allocation(TrackId(9)), None, "audio is not allocated, only priced");
        // The link recovers (the loss report caps the estimate for LOSS_MEMORY, then the hold).
        run(&mut a, t, LOSS_MEMORY + UP_HOLD + 200 * MS, 300_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)), "resumed on its lowest layer");
    }

    #[test]
    fn screen_share_before_cameras_and_lowest_layers_first() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let screen = TrackInput { priority: Priority::Screen, ..camera(5, Some(2)) };
        let tracks = [camera(1, Some(2)), camera(2, Some(2)), screen];
        // 0.9 × 2.2 M = 1.98 M: q for everyone (450 k), then the screen to f (+1350 k = 1800 k); the rest (180 k)
        // cannot lift a camera to h (+350 k).
        run(&mut a, t0, 500 * MS, 2_200_000, &tracks);
        assert_eq!(a.allocation(TrackId(5)), Some(Allocation::Layer(2)));
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)));
        assert_eq!(a.allocation(TrackId(2)), Some(Allocation::Layer(0)));
        // Very little, the link congested: the screen share keeps its lowest layer, the cameras pause (after the
        // hold).
        run_congested(&mut a, t0 + Duration::from_secs(1), PAUSE_HOLD + 100 * MS, 200_000, &tracks);
        assert_eq!(a.allocation(TrackId(5)), Some(Allocation::Layer(0)));
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Paused));
        assert_eq!(a.allocation(TrackId(2)), Some(Allocation::Paused));
    }

    #[test]
    fn never_more_than_the_render_size_needs() {
        let mut a = Allocator::default();
        let t = run(&mut a, Instant::now(), 3000 * MS, 50_000_000, &[camera(1, Some(0))]);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)));
        // The tile grows: up, but only through the hold (it is an upgrade like any other).
        let d = a.update(t, &[camera(1, Some(1))]);
        assert!(d.changes.is_empty());
        run(&mut a, t, UP_HOLD + 100 * MS, 50_000_000, &[camera(1, Some(1))]);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(1)));
    }

    #[test]
    fn a_layer_that_is_not_live_is_not_chosen() {
        let mut a = Allocator::default();
        let top_stopped = TrackInput { live: 0b011, bitrates: [150_000, 500_000, 0], ..camera(1, Some(2)) };
        run(&mut a, Instant::now(), 500 * MS, 50_000_000, &[top_stopped]);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(1)));
    }

    #[test]
    fn probe_succeeds_when_the_estimate_grows() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let tracks = [audio(9), camera(1, Some(2))];
        // 300 k: q fits (190 k with audio), h (540 k) does not: a probe starts with padding toward h.
        a.set_estimate(300_000);
        let d = a.update(t0, &tracks);
        assert_eq!(d.changes, vec![(TrackId(1), Allocation::Layer(0))]);
        assert!(a.probing());
        // desired: 1.54 M / 0.9 × 1.15.
        assert_eq!(d.wish, Some(BitrateWish { min: 540_000, desired: 1_967_777 }));
        // The estimate grows with the padding; after the hold, up to h, and the probe is over.
        let t = run(&mut a, t0 + 100 * MS, UP_HOLD + 100 * MS, 700_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(1)));
        // The next probe goes for f.
        a.update(t, &tracks);
        assert!(a.probing());
        assert_eq!(a.wish(), Some(BitrateWish { min: 1_540_000, desired: 1_967_777 }));
    }

    #[test]
    fn probe_fails_and_backs_off() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let tracks = [audio(9), camera(1, Some(2))];
        a.set_estimate(300_000);
        a.update(t0, &tracks);
        assert!(a.probing());
        // The estimate does not grow: the probe ends at its timeout; padding stops.
        let d = a.update(t0 + PROBE_TIMEOUT, &tracks);
        assert!(!a.probing());
        assert_eq!(d.wish, Some(BitrateWish { min: 190_000, desired: 190_000 }));
        // Probes start again after 1 s, 2 s, 4 s, 4 s of back-off.
        let mut starts = Vec::new();
        let mut t = t0 + PROBE_TIMEOUT;
        while t < t0 + Duration::from_secs(50) {
            t += 100 * MS;
            let was = a.probing();
            a.update(t, &tracks);
            if !was && a.probing() {
                starts.push(t);
            }
        }
        let gaps: Vec<u128> = starts.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        // Each gap is a failed probe (5 s) plus the back-off.
        assert_eq!(&gaps[..3], &[7000, 9000, 9000], "starts {starts:?}");
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)));
    }

    #[test]
    fn an_estimate_hovering_at_the_threshold_does_not_flap() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let tracks = [camera(1, Some(2))];
        run(&mut a, t0, 2000 * MS, 3_000_000, &tracks);
        // f costs 1.5 M. The estimate swings every 400 ms between 1.45 M (f does not fit: down to h) and 1.7 M (f
        // fits even under 90 % of it, but never for the whole hold), for 20 s.
        let mut changes = 0;
        let mut t = t0 + Duration::from_secs(2);
        for i in 0..200 {
            a.set_estimate(if (i / 4) % 2 == 0 { 1_450_000 } else { 1_700_000 });
            changes += a.update(t, &tracks).changes.len();
            t += 100 * MS;
        }
        assert_eq!(changes, 1, "one switch down, and no way back up without a steady estimate");
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(1)));
    }

    #[test]
    fn heavy_loss_lowers_the_estimate_for_a_while() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let tracks = [audio(9), camera(1, Some(2))];
        let t = run(&mut a, t0, 2000 * MS, 3_000_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(2)));
        // The estimate still says 3 Mbit/s, but a quarter of the 1.54 Mbit/s sent is lost: the link carries about
        // 1.15 Mbit/s. Down to h (540 k with audio) at once.
        a.report_loss(t, 0.25);
        a.update(t, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(1)));
        // Small loss is not congestion.
        a.report_loss(t + 100 * MS, 0.02);
        // The report is forgotten after LOSS_MEMORY; then up again after the hold.
        run(&mut a, t + 100 * MS, LOSS_MEMORY + UP_HOLD + 200 * MS, 3_000_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(2)));
    }

    #[test]
    fn an_estimate_that_fell_while_little_was_sent_is_restored() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let tracks = [audio(9), camera(1, Some(2))];
        let t = run(&mut a, t0, 2000 * MS, 3_000_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(2)));
        // Hidden: only audio flows and the estimator falls to 120 k.
        let hidden = [audio(9), camera(1, None)];
        let t = run(&mut a, t, 5000 * MS, 120_000, &hidden);
        // Shown again: the estimator restarts from the 3 M it had proven, and the track gets f at once.
        let d = a.update(t, &tracks);
        assert_eq!(d.reset_estimate, Some(3_000_000));
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(2)));
    }

    #[test]
    fn a_cut_forgets_the_proven_estimate() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let tracks = [audio(9), camera(1, Some(2))];
        let t = run(&mut a, t0, 2000 * MS, 3_000_000, &tracks);
        // Congestion: the estimate falls while f is being sent.
        let t = run(&mut a, t, 1000 * MS, 400_000, &tracks);
        assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)));
        let d = a.update(t, &tracks);
        assert_eq!(d.reset_estimate, None, "a congested link is not remembered as it was");
    }

    #[test]
    fn random_loss_never_pauses_the_lowest_layer() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // One 1.2 Mbit/s layer; the estimate has fallen to 500 kbit/s (str0m's loss-based estimator at 20 % loss)
        // and the subscriber reports 20-30 % loss that NACK repairs, for 30 s, with no queue on the link.
        let single = TrackInput { live: 0b001, bitrates: [1_200_000, 0, 0], ..camera(1, Some(2)) };
        let tracks = [audio(9), single];
        let mut t = run(&mut a, t0, 2000 * MS, 2_000_000, &tracks);
        a.set_estimate(500_000);
        for i in 0..300u32 {
            if i % 5 == 0 {
                a.report_loss(t, if i % 10 == 0 { 0.3 } else { 0.2 });
                a.report_rtt(t, Duration::from_millis(20 + u64::from(i % 7)));
            }
            a.update(t, &tracks);
            assert_eq!(a.allocation(TrackId(1)), Some(Allocation::Layer(0)), "paused at {:?}", t - t0);
            t += 100 * MS;
        }
    }

    #[test]
    fn a_standing_queue_pauses_after_the_hold() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        let single = TrackInput { live: 0b001, bitrates: [1_200_000, 0, 0], ..camera(1, Some(2)) };
        let tracks = [audio(9), single];
        let mut t = t0;
        for _ in 0..20 {
            a.report_rtt(t, Duration::from_millis(20));
            t = run(&mut a, t, 500 * MS, 2_000_000, &tracks);
        }
        // The link shrinks to 800 kbit/s: the estimate falls and a queue of 300 ms stands; little loss.
        a.set_estimate(700_000);
        let fell = t;
        let mut paused = None;
        while t < fell + Duration::from_secs(5) {
            if (t - fell).as_millis().is_multiple_of(500) {
                a.report_rtt(t, Duration::from_millis(320));
                a.report_loss(t, 0.03);
            }
            a.update(t, &tracks);
            if paused.is_none() && a.allocation(TrackId(1)) == Some(Allocation::Paused) {
                paused = Some(t - fell);
            }
            t += 100 * MS;
        }
        let paused = paused.expect("paused: the link cannot carry the layer");
        assert!(paused >= PAUSE_HOLD && paused <= PAUSE_HOLD + 200 * MS, "paused after {paused:?}");
    }

    #[test]
    fn the_wish_follows_a_growing_stream() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        a.set_estimate(3_000_000);
        let mut t = t0;
        let mut last = None;
        // A single layer whose encoder ramps from 200 kbit/s to 1.2 Mbit/s over 10 s.
        for i in 0..=100u32 {
            let rate = 200_000 + 10_000 * i;
            let single = TrackInput { live: 0b001, bitrates: [rate, 0, 0], ..camera(1, Some(2)) };
            a.update(t, &[single]);
            let w = a.wish().expect("a wish");
            assert!(w.min as f64 >= f64::from(rate) * (1.0 - WISH_DRIFT) - 1.0, "wish {w:?} at {rate}");
            assert!(w.desired >= w.min);
            if last != Some(w) {
                last = Some(w);
            }
            t += 100 * MS;
        }
        assert!(last.is_some_and(|w| w.desired >= 1_080_000), "{last:?}");
    }

    #[test]
    fn removed_tracks_are_forgotten() {
        let mut a = Allocator::default();
        let t0 = Instant::now();
        a.update(t0, &[camera(1, Some(2)), camera(2, Some(2))]);
        a.update(t0 + MS, &[camera(2, Some(2))]);
        assert_eq!(a.allocation(TrackId(1)), None);
    }
}
