//! The interop matrix's report (`interop/README.md`): what `media-tests client --report PATH` writes so the
//! webrtc-rs client can be one cell of the matrix beside Chromium, Pion, aiortc and GStreamer.
//!
//! Kept apart from [`crate::report`] (the scenario tests' report) so neither format bends to the other. Units: video
//! frames (sent: frames written; received: RTP packets with the marker bit), audio RTP packets. A unit is in the
//! window when it was sent / received at a unix-ms time in `[start, end)`.

use serde::{Deserialize, Serialize};

use crate::signal::MediaKind;

/// The measuring window, unix ms, `[start_ms, end_ms)`. The default is empty (nothing counts as in it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// First ms in the window.
    pub start_ms: u64,
    /// First ms after it.
    pub end_ms: u64,
}

impl Window {
    /// Whether `at_ms` is in the window.
    pub fn contains(&self, at_ms: u64) -> bool {
        at_ms >= self.start_ms && at_ms < self.end_ms
    }
}

/// Counts units of one track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitCounter {
    /// Every unit.
    pub total: u64,
    /// Units in the window.
    pub window: u64,
    /// When the first unit was counted.
    pub first_ms: Option<u64>,
}

impl UnitCounter {
    /// Counts one unit at `at_ms`.
    pub fn count(&mut self, window: &Window, at_ms: u64) {
        self.total += 1;
        if window.contains(at_ms) {
            self.window += 1;
        }
        self.first_ms.get_or_insert(at_ms);
    }
}

/// How many recent counted sequence numbers a track remembers to drop duplicates.
const DEDUP_WINDOW: usize = 1024;

/// One received track's counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedUnits {
    /// Courier's track id (`subscribed`), or `mid:N` when no `subscribed` named the m-line.
    pub track_id: String,
    /// Its publisher.
    pub participant_id: String,
    /// Its kind.
    pub kind: MediaKind,
    /// The count.
    pub units: UnitCounter,
    /// Sequence numbers already counted (the newest [`DEDUP_WINDOW`]): a retransmission, or an old packet the server
    /// resends as a bandwidth probe (RTX, unwrapped before it reaches the count), is not a second unit.
    counted: std::collections::VecDeque<u16>,
    counted_set: std::collections::HashSet<u16>,
}

/// Everything a client counts for the interop report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Units {
    /// The window.
    pub window: Window,
    /// Audio packets sent.
    pub sent_audio: UnitCounter,
    /// Video frames sent.
    pub sent_video: UnitCounter,
    /// Per received track, in order of first media.
    pub received: Vec<ReceivedUnits>,
}

impl Units {
    /// Units counting in `window`.
    pub fn new(window: Window) -> Self {
        Self { window, ..Self::default() }
    }

    /// One unit sent of `kind` at `at_ms`.
    pub fn sent(&mut self, kind: MediaKind, at_ms: u64) {
        let window = self.window;
        match kind {
            MediaKind::Audio => self.sent_audio.count(&window, at_ms),
            MediaKind::Video => self.sent_video.count(&window, at_ms),
        }
    }

    /// One RTP packet (sequence number `seq`) received on a track at `at_ms`; video counts only packets with the
    /// marker bit; a sequence number already counted is not counted again.
    pub fn received(
        &mut self,
        track_id: &str,
        participant_id: &str,
        kind: MediaKind,
        seq: u16,
        marker: bool,
        at_ms: u64,
    ) {
        let index = match self.received.iter().position(|r| r.track_id == track_id) {
            Some(i) => i,
            None => {
                self.received.push(ReceivedUnits {
                    track_id: track_id.to_owned(),
                    participant_id: participant_id.to_owned(),
                    kind,
                    units: UnitCounter::default(),
                    counted: std::collections::VecDeque::new(),
                    counted_set: std::collections::HashSet::new(),
                });
                self.received.len() - 1
            }
        };
        if kind == MediaKind::Audio || marker {
            let window = self.window;
            let r = &mut self.received[index];
            if !r.counted_set.insert(seq) {
                return;
            }
            r.counted.push_back(seq);
            if r.counted.len() > DEDUP_WINDOW {
                if let Some(old) = r.counted.pop_front() {
                    r.counted_set.remove(&old);
                }
            }
            r.units.count(&window, at_ms);
        }
    }
}

/// `sent[]` of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentTrack {
    /// The m-line.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: MediaKind,
    /// From our own `track_published`.
    pub track_id: String,
    /// `packets` or `frames`.
    pub units: String,
    /// Units in the window.
    pub window: u64,
    /// Every unit.
    pub total: u64,
}

/// `received[]` of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedTrack {
    /// From `subscribed`.
    pub track_id: String,
    /// From `subscribed`.
    pub participant_id: String,
    /// `audio` or `video`.
    pub kind: MediaKind,
    /// `packets` or `frames`.
    pub units: String,
    /// When the first unit arrived.
    pub first_ms: Option<u64>,
    /// Units in the window.
    pub window: u64,
    /// Every unit.
    pub total: u64,
}

/// The report (see `interop/README.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteropReport {
    /// `webrtc-rs`.
    pub stack: String,
    /// e.g. `webrtc-rs (webrtc 0.x)`.
    pub stack_version: String,
    /// Ours.
    pub participant_id: String,
    /// When `joined` arrived.
    pub joined_ms: u64,
    /// When the peer connection first reached `connected`.
    pub connected_ms: Option<u64>,
    /// Every peer-connection state change, `[unix_ms, state]`.
    pub states: Vec<(u64, String)>,
    /// Why the session ended before `--duration`, or null.
    pub closed_early: Option<String>,
    /// What we sent.
    pub sent: Vec<SentTrack>,
    /// What we received.
    pub received: Vec<ReceivedTrack>,
    /// Errors seen.
    pub errors: Vec<String>,
}

/// The unit name of `kind`.
pub fn unit_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "packets",
        MediaKind::Video => "frames",
    }
}

impl ReceivedTrack {
    /// From a counter.
    pub fn from_units(r: &ReceivedUnits) -> Self {
        Self {
            track_id: r.track_id.clone(),
            participant_id: r.participant_id.clone(),
            kind: r.kind,
            units: unit_name(r.kind).to_owned(),
            first_ms: r.units.first_ms,
            window: r.units.window,
            total: r.units.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_half_open() {
        let w = Window { start_ms: 1000, end_ms: 2000 };
        assert!(!w.contains(999));
        assert!(w.contains(1000));
        assert!(w.contains(1999));
        assert!(!w.contains(2000));
        assert!(!Window::default().contains(0));
    }

    #[test]
    fn counts_units_in_and_out_of_the_window() {
        let mut u = Units::new(Window { start_ms: 1000, end_ms: 2000 });
        for t in [500, 1000, 1500, 1999, 2000, 2500] {
            u.sent(MediaKind::Audio, t);
        }
        u.sent(MediaKind::Video, 1200);
        assert_eq!(u.sent_audio, UnitCounter { total: 6, window: 3, first_ms: Some(500) });
        assert_eq!(u.sent_video, UnitCounter { total: 1, window: 1, first_ms: Some(1200) });

        // Video: only marker packets are frames; a track appears on its first packet even without a unit.
        u.received("TR_v", "PA_a", MediaKind::Video, 1, false, 900);
        u.received("TR_v", "PA_a", MediaKind::Video, 2, true, 950);
        u.received("TR_v", "PA_a", MediaKind::Video, 3, false, 1100);
        u.received("TR_v", "PA_a", MediaKind::Video, 4, true, 1100);
        u.received("TR_v", "PA_a", MediaKind::Video, 4, true, 1150); // a retransmission / RTX probe: not a new frame
        u.received("TR_a", "PA_a", MediaKind::Audio, 7, false, 1990);
        u.received("TR_a", "PA_a", MediaKind::Audio, 8, false, 2000);
        u.received("TR_a", "PA_a", MediaKind::Audio, 7, false, 2001);
        assert_eq!(u.received.len(), 2);
        assert_eq!(u.received[0].units, UnitCounter { total: 2, window: 1, first_ms: Some(950) });
        assert_eq!(u.received[1].units, UnitCounter { total: 2, window: 1, first_ms: Some(1990) });
        let r = ReceivedTrack::from_units(&u.received[0]);
        assert_eq!((r.units.as_str(), r.window, r.total), ("frames", 1, 2));
    }

    #[test]
    fn report_shape() {
        let report = InteropReport {
            stack: "webrtc-rs".into(),
            stack_version: "v".into(),
            participant_id: "PA_x".into(),
            joined_ms: 1,
            connected_ms: None,
            states: vec![(2, "connecting".into())],
            closed_early: None,
            sent: vec![],
            received: vec![],
            errors: vec![],
        };
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(v["states"][0], serde_json::json!([2, "connecting"]));
        assert!(v["closed_early"].is_null());
        assert!(v["connected_ms"].is_null());
    }
}
