//! Recovery time after a loss episode, from the frames a decoder would show (sans-I/O).
//!
//! The input is the sequence of frames as [`crate::frame::VideoReceiver`] shows them (counter order, a delta frame
//! once the one before it is shown, a keyframe at once): per frame its counter, send time and show time. A frame is
//! **good** when it is shown on time — its delay (show − send) is at most [`LATE_MS`] above the smallest delay seen
//! so far — and **bad** when late. A **loss episode** begins at the first of these after a good frame:
//! - a gap in the counters (frames never shown: lost, or skipped by a keyframe), or
//! - a late frame (repaired by a retransmission, held behind one, or queued).
//!
//! Its **recovery time** runs from the show time of the last good frame before it (when the picture stopped moving
//! normally) to the show time of the first frame of the first run of [`RECOVERY_RUN`] consecutive good frames in
//! counter order after it (a new gap or late frame inside the run restarts the count). A gap ending at an on-time
//! keyframe, for example, is recovered at that keyframe once four more frames follow it in order and on time: the
//! recovery time is then the freeze the viewer saw. The first frame shown is good (it sets the smallest delay);
//! an episode still open at the end is reported as unrecovered.

/// A frame this much later than the fastest one is late, ms (WebRTC's freeze threshold is mean + 150 ms).
pub const LATE_MS: f64 = 150.0;
/// Consecutive good frames that end an episode.
pub const RECOVERY_RUN: u32 = 5;
/// At most this many recoveries are kept (the count goes on).
pub const MAX_RECOVERIES: usize = 1000;

/// One recovery: when the episode began and how long it took, both from show times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Show time of the last good frame before the episode, µs since the UNIX epoch.
    pub start_us: u64,
    /// Until the first frame of the good run, ms.
    pub ms: u64,
}

/// Finds loss episodes and their recovery times; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct RecoveryTracker {
    last_counter: Option<u32>,
    last_good_us: Option<u64>,
    min_delay_us: Option<u64>,
    /// The open episode's start (show time of the last good frame before it).
    episode_start_us: Option<u64>,
    /// Good frames in a row within the open episode, and the show time of the first of them.
    run: u32,
    run_start_us: u64,
    /// Recoveries (bounded) and how many there were.
    pub recoveries: Vec<Recovery>,
    /// Number of recoveries (also beyond [`MAX_RECOVERIES`]).
    pub count: u64,
}

impl RecoveryTracker {
    /// No frames yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frame `counter`, sent at `send_us`, is shown at `shown_us` (counters only increase).
    pub fn on_shown(&mut self, counter: u32, send_us: u64, shown_us: u64) {
        let delay = shown_us.saturating_sub(send_us);
        let min = *self.min_delay_us.insert(self.min_delay_us.map_or(delay, |m| m.min(delay)));
        let gap = self.last_counter.is_some_and(|c| counter != c.wrapping_add(1));
        let late = (delay - min) as f64 / 1000.0 > LATE_MS;
        self.last_counter = Some(counter);
        if (gap || late) && self.episode_start_us.is_none() {
            if let Some(good) = self.last_good_us {
                self.episode_start_us = Some(good);
            }
        }
        if gap || late {
            self.run = 0;
        }
        if late {
            return;
        }
        self.last_good_us = Some(shown_us);
        if let Some(start) = self.episode_start_us {
            if self.run == 0 {
                self.run_start_us = shown_us;
            }
            self.run += 1;
            if self.run >= RECOVERY_RUN {
                self.count += 1;
                if self.recoveries.len() < MAX_RECOVERIES {
                    let ms = self.run_start_us.saturating_sub(start).div_ceil(1000);
                    self.recoveries.push(Recovery { start_us: start, ms });
                }
                self.episode_start_us = None;
                self.run = 0;
            }
        }
    }

    /// Whether an episode is still open.
    pub fn unrecovered(&self) -> bool {
        self.episode_start_us.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IV: u64 = 33_000;

    /// Plays frames `0..n` sent every 33 ms with 20 ms of delay, except as `fate` says: `None` never shown,
    /// `Some(t)` shown at `t` (µs from 0).
    fn play(n: u32, fate: impl Fn(u32, u64) -> Option<Option<u64>>) -> RecoveryTracker {
        let mut r = RecoveryTracker::new();
        for c in 0..n {
            let send = u64::from(c) * IV;
            match fate(c, send) {
                Some(None) => {}
                Some(Some(t)) => r.on_shown(c, send, t),
                None => r.on_shown(c, send, send + 20_000),
            }
        }
        r
    }

    #[test]
    fn a_clean_stream_has_no_episode() {
        let r = play(300, |_, _| None);
        assert_eq!((r.count, r.unrecovered()), (0, false));
    }

    #[test]
    fn a_burst_ends_at_the_first_of_five_good_frames() {
        // 60..72 lost; 72 (a keyframe) on time: from 59's show time to 72's.
        let r = play(200, |c, _| (60..72).contains(&c).then_some(None));
        assert_eq!(r.count, 1);
        assert_eq!(r.recoveries[0], Recovery { start_us: 59 * IV + 20_000, ms: 13 * 33 });
    }

    #[test]
    fn late_frames_and_a_gap_inside_the_run_extend_the_episode() {
        // 100 is repaired 300 ms late; 101..=105 wait and show with it: 100..=104 are late (over 20 + 150 ms),
        // 105 is on time (155 ms): a run of 1; 106 is lost, so the run restarts at 107: recovered at 107.
        let r = play(200, |c, _| match c {
            100..=105 => Some(Some(100 * IV + 320_000)),
            106 => Some(None),
            _ => None,
        });
        assert_eq!(r.count, 1);
        assert_eq!(r.recoveries[0], Recovery { start_us: 99 * IV + 20_000, ms: (107 - 99) * 33 });
        // Two bursts: two episodes.
        let r = play(300, |c, _| ((50..53).contains(&c) || (150..160).contains(&c)).then_some(None));
        assert_eq!(r.count, 2);
        assert_eq!(r.recoveries.iter().map(|x| x.ms).collect::<Vec<_>>(), vec![4 * 33, 11 * 33]);
    }

    #[test]
    fn an_episode_open_at_the_end_is_unrecovered() {
        // Lost 97: 98 and 99 are good, but not five of them.
        let r = play(100, |c, _| (c == 97).then_some(None));
        assert_eq!(r.count, 0);
        assert!(r.unrecovered());
    }
}
