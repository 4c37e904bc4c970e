//! Active speakers: who is talking in a room, from the audio levels publishers put in their packets.
//!
//! Every audio packet may carry its level (RFC 6464: 0 dBov loudest, -127 silence) and a voice-activity flag. A
//! single packet says little, so the [`SpeakerDetector`] smooths each track's level, uses two thresholds
//! (hysteresis) so a speaker near the edge does not flicker in and out, forgets tracks that fell silent, and emits
//! the ranked list only when it changes and at most every `interval` (500 ms): the list drives UI highlights, and
//! clients should not be flooded with it. Sans-I/O: feed levels with their time, poll with the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Level (dBov) mapped to 0.0; louder maps linearly up to 1.0 at 0 dBov.
const FLOOR_DBOV: f32 = -70.0;
/// Time constant of the exponential average.
const TAU: Duration = Duration::from_millis(200);
/// A track becomes active above this smoothed activity…
const ENTER: f32 = 0.45;
/// …and stays active until it falls below this one.
const LEAVE: f32 = 0.3;
/// An active speaker stays active through pauses shorter than this (between words and sentences).
const HOLD: Duration = Duration::from_millis(800);
/// A track that sent no level for this long is dropped.
const STALE: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy)]
struct Level {
    smoothed: f32,
    active: bool,
    /// While active: since when the level has been below [`LEAVE`].
    quiet_since: Option<Instant>,
    updated: Instant,
}

/// See the module doc. `K` names a track (or a participant).
#[derive(Debug)]
pub struct SpeakerDetector<K> {
    levels: HashMap<K, Level>,
    interval: Duration,
    /// Weight of each new sample, from the sample period and [`TAU`].
    alpha: f32,
    last_emit: Option<Instant>,
    last_list: Vec<K>,
}

impl<K: Clone + Eq + std::hash::Hash + Ord> SpeakerDetector<K> {
    /// A detector emitting at most every `interval`, fed one level per key every `sample_period` (20 ms for
    /// every packet; longer when levels are aggregated upstream).
    pub fn new(interval: Duration, sample_period: Duration) -> Self {
        let alpha = 1.0 - (-sample_period.as_secs_f32() / TAU.as_secs_f32()).exp();
        SpeakerDetector { levels: HashMap::new(), interval, alpha, last_emit: None, last_list: Vec::new() }
    }

    /// One packet's audio level (dBov, -127..=0; positive values are clamped) for `key`.
    pub fn handle_level(&mut self, key: K, dbov: i8, now: Instant) {
        let x = ((f32::from(dbov.min(0)) - FLOOR_DBOV) / -FLOOR_DBOV).clamp(0.0, 1.0);
        let l =
            self.levels.entry(key).or_insert(Level { smoothed: 0.0, active: false, quiet_since: None, updated: now });
        l.smoothed += self.alpha * (x - l.smoothed);
        if !l.active {
            l.active = l.smoothed > ENTER;
        } else if l.smoothed >= LEAVE {
            l.quiet_since = None;
        } else {
            let since = *l.quiet_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= HOLD {
                l.active = false;
                l.quiet_since = None;
            }
        }
        l.updated = now;
    }

    /// Forget `key` (its track ended).
    pub fn remove(&mut self, key: &K) {
        self.levels.remove(key);
    }

    /// The active speakers, loudest first, with their smoothed level in 0..=1 — when the list (membership or
    /// order) changed since the last emission and `interval` has passed since it. Otherwise `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<(K, f32)>> {
        self.levels.retain(|_, l| now.saturating_duration_since(l.updated) < STALE);
        if self.last_emit.is_some_and(|t| now.saturating_duration_since(t) < self.interval) {
            return None;
        }
        let mut active: Vec<(K, f32)> =
            self.levels.iter().filter(|(_, l)| l.active).map(|(k, l)| (k.clone(), l.smoothed)).collect();
        active.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let keys: Vec<K> = active.iter().map(|(k, _)| k.clone()).collect();
        if keys == self.last_list {
            return None;
        }
        self.last_list = keys;
        self.last_emit = Some(now);
        Some(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `dbov` for `key` every 20 ms over `ms`, polling each time; collect emissions with their time.
    fn feed(
        d: &mut SpeakerDetector<u8>,
        t: &mut Instant,
        ms: u64,
        levels: &[(u8, i8)],
        out: &mut Vec<(u64, Vec<u8>)>,
        t0: Instant,
    ) {
        for _ in 0..ms / 20 {
            *t += Duration::from_millis(20);
            for (k, l) in levels {
                d.handle_level(*k, *l, *t);
            }
            if let Some(list) = d.poll(*t) {
                out.push((t.duration_since(t0).as_millis() as u64, list.into_iter().map(|(k, _)| k).collect()));
            }
        }
    }

    #[test]
    fn speakers_come_and_go_ranked_and_rate_limited() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut d = SpeakerDetector::new(Duration::from_millis(500), Duration::from_millis(20));
        let mut out = Vec::new();
        // Quiet room: nothing to say (the empty list is the initial state).
        feed(&mut d, &mut t, 400, &[(1, -127), (2, -127)], &mut out, t0);
        assert!(out.is_empty(), "{out:?}");
        // 1 speaks loudly: active within a few hundred ms.
        feed(&mut d, &mut t, 600, &[(1, -10), (2, -127)], &mut out, t0);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].1, vec![1]);
        assert!(out[0].0 <= 800, "became active {} ms in", out[0].0);
        // 2 joins, louder: ranked first; the change waits for the 500 ms interval.
        feed(&mut d, &mut t, 1000, &[(1, -20), (2, -3)], &mut out, t0);
        assert_eq!(out.last().unwrap().1, vec![2, 1], "{out:?}");
        for w in out.windows(2) {
            assert!(w[1].0 - w[0].0 >= 500, "at most every 500 ms: {out:?}");
        }
        // Both stop sending (muted / left): dropped after they go stale.
        let before = out.len();
        feed(&mut d, &mut t, 2000, &[], &mut out, t0);
        assert_eq!(out.last().unwrap().1, Vec::<u8>::new(), "{out:?}");
        assert_eq!(out.len(), before + 1);
    }

    #[test]
    fn hysteresis_keeps_a_steady_speaker() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut d = SpeakerDetector::new(Duration::from_millis(500), Duration::from_millis(20));
        let mut out = Vec::new();
        feed(&mut d, &mut t, 1000, &[(7, -5)], &mut out, t0);
        assert_eq!(out.len(), 1);
        // Level wavers around the entry threshold (~ -38..-42 dBov ≈ 0.4..0.46): stays active, no flapping.
        for i in 0..50 {
            let l = if i % 2 == 0 { -38 } else { -42 };
            feed(&mut d, &mut t, 20, &[(7, l)], &mut out, t0);
        }
        assert_eq!(out.len(), 1, "no flapping: {out:?}");
        // A pause between words: still active.
        feed(&mut d, &mut t, 600, &[(7, -127)], &mut out, t0);
        feed(&mut d, &mut t, 400, &[(7, -5)], &mut out, t0);
        assert_eq!(out.len(), 1, "held through a short pause: {out:?}");
        // Real silence: leaves.
        feed(&mut d, &mut t, 2000, &[(7, -127)], &mut out, t0);
        assert_eq!(out.last().unwrap().1, Vec::<u8>::new());
    }
}
