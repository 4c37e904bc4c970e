//! Downstream loss: what the subscribers of one published audio track lose, combined into the loss the server
//! reports to its publisher.
//!
//! The server's receiver reports to a publisher describe only the publisher → server leg, so a publisher never
//! hears that its subscribers lose packets. For audio that matters: libwebrtc hands the fraction lost of the
//! receiver reports about its audio stream to its Opus encoder, which switches on in-band FEC (and raises its
//! expected loss) when that fraction rises. So each subscriber's peer reports the loss its receiver reports show
//! for the track (at most every [`LOSS_REPORT_REFRESH`], or when it changes by [`LOSS_REPORT_STEP`]), the engine
//! routes the reports to the publisher's peer like layer demands, and a [`DownstreamLoss`] per track turns them
//! into a floor for the fraction lost the server reports upstream (str0m's `set_reported_loss_floor`; the measured
//! upstream loss still counts when it is higher).
//!
//! The rule, with its numbers:
//! - per subscriber, the latest report, or the highest one decaying with a half-life of [`DECAY_HALF_LIFE`] since
//!   it came if that is higher: a rise counts at once, a steady loss stays steady, and one clean receiver report
//!   does not switch FEC off at once. A subscriber not heard from for [`STALE_AFTER`] (it left) no longer counts.
//! - across subscribers, the worst, except that with ten or more the worst tenth is left out (the `n/10`-th
//!   highest, 0-based): one hopeless link should not make the publisher spend bits on FEC for everyone;
//! - the result is capped at [`MAX_FLOOR`] (libwebrtc's Opus encoder takes no more than 20 % into account) and
//!   values under [`MIN_FLOOR`] count as none.
//!
//! Sans-I/O: reports come in with their time, the floor is read with the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::id::PeerId;

/// A subscriber reports its loss again after this long even when it did not change (while above zero), so the
/// publisher's view does not go stale.
pub const LOSS_REPORT_REFRESH: Duration = Duration::from_secs(2);
/// …and at once when it changed by at least this much.
pub const LOSS_REPORT_STEP: f32 = 0.01;
/// A subscriber's reported loss that nothing renews halves in this time.
pub const DECAY_HALF_LIFE: Duration = Duration::from_secs(3);
/// A subscriber not heard from for this long is forgotten.
pub const STALE_AFTER: Duration = Duration::from_secs(6);
/// The highest floor reported upstream.
pub const MAX_FLOOR: f32 = 0.2;
/// Floors below this are reported as none.
pub const MIN_FLOOR: f32 = 0.005;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The latest report.
    latest: f32,
    /// The highest report, decaying since it came.
    held: f32,
    since: Instant,
    /// When the subscriber last reported.
    heard: Instant,
}

impl Entry {
    fn held(&self, now: Instant) -> f32 {
        let age = now.saturating_duration_since(self.since).as_secs_f32();
        self.held * 0.5f32.powf(age / DECAY_HALF_LIFE.as_secs_f32())
    }

    fn value(&self, now: Instant) -> f32 {
        self.latest.max(self.held(now))
    }
}

/// See the module doc. One per published audio track.
#[derive(Debug, Default)]
pub struct DownstreamLoss {
    subscribers: HashMap<PeerId, Entry>,
}

impl DownstreamLoss {
    /// `subscriber` reports `loss` (a fraction, 0..=1) for the track at `now`.
    pub fn handle_report(&mut self, now: Instant, subscriber: PeerId, loss: f32) {
        let loss = if loss.is_finite() { loss.clamp(0.0, 1.0) } else { 0.0 };
        let e = self.subscribers.entry(subscriber).or_insert(Entry { latest: 0.0, held: 0.0, since: now, heard: now });
        if loss >= e.held(now) {
            e.held = loss;
            e.since = now;
        }
        e.latest = loss;
        e.heard = now;
    }

    /// `subscriber` no longer receives the track.
    pub fn remove(&mut self, subscriber: PeerId) {
        self.subscribers.remove(&subscriber);
    }

    /// Is any subscriber's loss still counted (so the floor may still change with time)?
    pub fn is_active(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// The fraction lost to report upstream at `now` at least (0: none). Forgets stale subscribers.
    pub fn floor(&mut self, now: Instant) -> f32 {
        self.subscribers.retain(|_, e| now.saturating_duration_since(e.heard) < STALE_AFTER);
        let mut values: Vec<f32> = self.subscribers.values().map(|e| e.value(now)).collect();
        if values.is_empty() {
            return 0.0;
        }
        values.sort_by(|a, b| b.total_cmp(a));
        let v = values[values.len() / 10].min(MAX_FLOOR);
        if v < MIN_FLOOR {
            0.0
        } else {
            v
        }
    }
}

/// A subscriber's side: decides when its loss for one track is worth a report to the publisher.
#[derive(Debug, Default, Clone, Copy)]
pub struct LossReporter {
    /// The last loss heard from the subscriber's receiver reports, and when.
    heard: Option<(f32, Instant)>,
    /// The last loss reported upstream, and when.
    sent: Option<(f32, Instant)>,
}

impl LossReporter {
    /// New statistics at `now`: `rr_loss` is the fraction lost of the receiver reports that arrived since the last
    /// statistics (`None`: none arrived). Returns the loss to report to the publisher, if a report is due.
    pub fn handle_stats(&mut self, now: Instant, rr_loss: Option<f32>) -> Option<f32> {
        if let Some(l) = rr_loss.filter(|l| l.is_finite()) {
            self.heard = Some((l.clamp(0.0, 1.0), now));
        }
        // Receiver reports stopped (a subscriber's audio reports come every few seconds): after a while, assume none.
        let loss = match self.heard {
            Some((l, at)) if now.saturating_duration_since(at) < STALE_AFTER * 2 => l,
            _ => 0.0,
        };
        let due = match self.sent {
            None => loss > 0.0,
            Some((s, at)) => {
                (loss - s).abs() >= LOSS_REPORT_STEP
                    || (loss > 0.0 && now.saturating_duration_since(at) >= LOSS_REPORT_REFRESH)
            }
        };
        if due {
            self.sent = Some((loss, now));
            Some(loss)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_subscribers_loss_raises_the_floor_and_decays_when_it_stops() {
        let t0 = Instant::now();
        let mut d = DownstreamLoss::default();
        assert_eq!(d.floor(t0), 0.0, "no subscribers");
        d.handle_report(t0, PeerId(1), 0.0);
        assert_eq!(d.floor(t0), 0.0, "a clean subscriber");
        d.handle_report(ms(t0, 500), PeerId(1), 0.1);
        assert!((d.floor(ms(t0, 500)) - 0.1).abs() < 1e-6, "raised at once");
        // While it keeps reporting the same loss, the floor stays.
        for t in [1500, 2500, 4500] {
            d.handle_report(ms(t0, t), PeerId(1), 0.1);
            assert!((d.floor(ms(t0, t + 1900)) - 0.1).abs() < 1e-6, "steady at {t} ms");
        }
        let t0 = ms(t0, 4000);
        // The loss stops: the subscriber reports 0 every 2 s; the floor halves every 3 s, down to none.
        let mut last = 0.1;
        for i in 1..=10u64 {
            let t = ms(t0, 500 + i * 2000);
            d.handle_report(t, PeerId(1), 0.0);
            let f = d.floor(t);
            assert!(f < last || f == 0.0, "decays: {f} after {last}");
            last = f;
        }
        let after_6s = {
            let mut d = DownstreamLoss::default();
            d.handle_report(t0, PeerId(1), 0.1);
            d.handle_report(ms(t0, 6000), PeerId(1), 0.0);
            d.floor(ms(t0, 6000))
        };
        assert!((after_6s - 0.025).abs() < 1e-3, "two half-lives: {after_6s}");
        assert_eq!(last, 0.0, "gone after 20 s");
        // A new, lower loss while a higher one decays: the higher one still counts until it has decayed below.
        d.handle_report(ms(t0, 30_000), PeerId(1), 0.08);
        d.handle_report(ms(t0, 30_500), PeerId(1), 0.02);
        assert!(d.floor(ms(t0, 30_500)) > 0.07);
    }

    #[test]
    fn several_subscribers_the_worst_without_the_worst_tenth() {
        let t0 = Instant::now();
        // (losses, expected floor)
        let cases: &[(&[f32], f32)] = &[
            (&[0.0, 0.05, 0.02], 0.05),
            (&[0.3], MAX_FLOOR),
            (&[0.004], 0.0),
            // Ten subscribers: the single worst is left out.
            (&[0.5, 0.06, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.06),
            // Nine: not yet.
            (&[0.15, 0.06, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.15),
            // Twenty: the two worst are left out.
            (
                &[0.5, 0.4, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                0.03,
            ),
        ];
        for (losses, want) in cases {
            let mut d = DownstreamLoss::default();
            for (i, l) in losses.iter().enumerate() {
                d.handle_report(t0, PeerId(i as u64), *l);
            }
            assert!((d.floor(t0) - want).abs() < 1e-6, "{losses:?}: {} != {want}", d.floor(t0));
        }
    }

    #[test]
    fn subscribers_that_leave_or_go_silent_stop_counting() {
        let t0 = Instant::now();
        let mut d = DownstreamLoss::default();
        d.handle_report(t0, PeerId(1), 0.1);
        d.handle_report(t0, PeerId(2), 0.05);
        d.remove(PeerId(1));
        assert!((d.floor(t0) - 0.05).abs() < 1e-6);
        assert!(d.is_active());
        assert_eq!(d.floor(t0 + STALE_AFTER), 0.0, "not heard from");
        assert!(!d.is_active());
        d.handle_report(t0, PeerId(3), f32::NAN);
        assert_eq!(d.floor(t0), 0.0, "a nonsense report counts as no loss");
    }

    #[test]
    fn reporter_sends_on_change_and_refreshes_while_lossy() {
        let t0 = Instant::now();
        let mut r = LossReporter::default();
        // (ms, receiver-report loss since the last stats, expected report)
        let steps: &[(u64, Option<f32>, Option<f32>)] = &[
            (0, None, None),
            (500, Some(0.0), None),       // clean from the start: nothing to say
            (1000, Some(0.1), Some(0.1)), // loss: at once
            (1500, None, None),           // no news
            (2500, Some(0.105), None),    // less than a 1 % change
            (3000, None, Some(0.105)),    // 2 s since the last report, still lossy: refresh
            (3500, Some(0.0), Some(0.0)), // clean again: at once
            (6000, None, None),           // clean needs no refresh
            (20_000, None, None),
        ];
        for (t, rr, want) in steps {
            assert_eq!(r.handle_stats(ms(t0, *t), *rr), *want, "at {t} ms");
        }
        // Reports that stop while lossy: assumed clean after a while.
        let mut r = LossReporter::default();
        assert_eq!(r.handle_stats(t0, Some(0.2)), Some(0.2));
        assert_eq!(r.handle_stats(t0 + STALE_AFTER * 2, None), Some(0.0));
    }
}
