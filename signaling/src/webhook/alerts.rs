//! Which must-acknowledge alerts to check, and when, sans-I/O: the timer behind `alert_unacknowledged`.
//!
//! Every stored alert is watched from its commit; once `delay` has passed the shell asks the store who has not
//! acknowledged it yet and, if anyone, emits `alert_unacknowledged` once. Watches live in memory: an alert
//! committed less than `delay` before a restart is not checked after it. At most `capacity` alerts are watched;
//! past that the newest is not watched (and counted), so a flood of alerts cannot grow memory without bound.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use courier_chat::ConversationId;

/// One alert to check: its conversation and sequence number, with what the event reports of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watched {
    pub conversation: ConversationId,
    pub seq: u64,
    pub sender: String,
    pub kind: String,
    /// When it was stored, Unix milliseconds.
    pub time_ms: u64,
}

/// See the module doc.
#[derive(Debug)]
pub struct AlertWatch {
    delay: Duration,
    capacity: usize,
    due: BTreeSet<(Instant, Watched)>,
    /// Alerts not watched because the watch was full.
    pub refused: u64,
}

impl AlertWatch {
    pub fn new(delay: Duration, capacity: usize) -> AlertWatch {
        AlertWatch { delay, capacity, due: BTreeSet::new(), refused: 0 }
    }

    /// Start watching an alert committed at `now`. `false` when the watch is full.
    pub fn watch(&mut self, alert: Watched, now: Instant) -> bool {
        if self.due.len() >= self.capacity {
            self.refused += 1;
            return false;
        }
        self.due.insert((now + self.delay, alert));
        true
    }

    /// The alerts whose delay has passed at `now`, oldest first; each is returned once.
    pub fn poll_due(&mut self, now: Instant) -> Vec<Watched> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.due.first() {
            if *at > now {
                break;
            }
            if let Some((_, w)) = self.due.pop_first() {
                out.push(w);
            }
        }
        out
    }

    /// When the next alert falls due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(seq: u64) -> Watched {
        Watched {
            conversation: ConversationId::room("r").unwrap(),
            seq,
            sender: "alice".into(),
            kind: "text".into(),
            time_ms: seq,
        }
    }

    #[test]
    fn due_after_the_delay_once_in_commit_order() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = AlertWatch::new(10 * s, 2);
        assert!(w.watch(alert(1), t0));
        assert!(w.watch(alert(2), t0 + s));
        assert!(!w.watch(alert(3), t0 + s), "full");
        assert_eq!(w.refused, 1);
        assert_eq!(w.poll_timeout(), Some(t0 + 10 * s));
        assert!(w.poll_due(t0 + 9 * s).is_empty());
        assert_eq!(w.poll_due(t0 + 11 * s), vec![alert(1), alert(2)]);
        assert!(w.poll_due(t0 + 20 * s).is_empty(), "each once");
        assert!(w.is_empty() && w.poll_timeout().is_none());
    }
}
