//! The client's report: what it received per track and what it sent.
//!
//! The report is the contract between the client and whoever runs it. The CLI prints it as the
//! last line of stdout and scenario tests parse it, so it is plain serde data with stable field
//! names and no webrtc-rs types. Fields are documented on [`VideoTrackReport`] and
//! [`AudioTrackReport`]; the counting rules are in [`crate::frame::VideoReceiver`] and
//! [`crate::audio::AudioReceiver`].

use serde::{Deserialize, Serialize};

use crate::audio::AudioStats;
use crate::frame::VideoStats;
use crate::signal::MediaKind;

/// Everything one client saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The client's identity (token `sub`).
    pub identity: String,
    /// Its participant id (`PA_…`).
    pub participant_id: String,
    /// The room.
    pub room: String,
    /// Seconds from `joined` to this report.
    pub duration_s: f64,
    /// One entry per received track, in the order they first delivered media.
    pub tracks: Vec<TrackReport>,
    /// What this client sent.
    pub published: PublishedReport,
}

impl Report {
    /// The report of the track with this id.
    pub fn track(&self, track_id: &str) -> Option<&TrackReport> {
        self.tracks.iter().find(|t| t.track_id() == track_id)
    }

    /// The received video tracks.
    pub fn video(&self) -> impl Iterator<Item = &VideoTrackReport> {
        self.tracks.iter().filter_map(|t| match t {
            TrackReport::Video(v) => Some(v),
            TrackReport::Audio(_) => None,
        })
    }

    /// The received audio tracks.
    pub fn audio(&self) -> impl Iterator<Item = &AudioTrackReport> {
        self.tracks.iter().filter_map(|t| match t {
            TrackReport::Audio(a) => Some(a),
            TrackReport::Video(_) => None,
        })
    }

    /// Parses the report from the CLI's stdout (its last non-empty line).
    pub fn from_stdout(stdout: &str) -> Result<Report, serde_json::Error> {
        let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        serde_json::from_str(line)
    }
}

/// One received track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TrackReport {
    /// A video track.
    Video(VideoTrackReport),
    /// An audio track.
    Audio(AudioTrackReport),
}

impl TrackReport {
    /// The track's id.
    pub fn track_id(&self) -> &str {
        match self {
            TrackReport::Video(v) => &v.track_id,
            TrackReport::Audio(a) => &a.track_id,
        }
    }

    /// The publisher's participant id.
    pub fn participant_id(&self) -> &str {
        match self {
            TrackReport::Video(v) => &v.participant_id,
            TrackReport::Audio(a) => &a.participant_id,
        }
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        match self {
            TrackReport::Video(_) => MediaKind::Video,
            TrackReport::Audio(_) => MediaKind::Audio,
        }
    }
}

/// One received video track. `track_id` is the server's id from `subscribed`; a stream that
/// arrived on an m-line no `subscribed` named is reported as `mid:<mid>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoTrackReport {
    /// `TR_…`.
    pub track_id: String,
    /// `PA_…` of the publisher (empty if unknown).
    pub participant_id: String,
    /// Frames of which at least one packet arrived.
    pub frames_received: u64,
    /// Our frames, complete and intact.
    pub frames_complete: u64,
    /// Our frames, complete but damaged (checksum, length, header).
    pub frames_corrupt: u64,
    /// Frames that never completed (from frame-counter gaps for our frames).
    pub frames_missing: u64,
    /// Complete frames without our magic (e.g. from a browser).
    pub frames_foreign: u64,
    /// Our frames received intact more than once.
    pub frames_duplicate: u64,
    /// Median one-way frame delay, ms (null without intact frames).
    pub delay_ms_p50: Option<f64>,
    /// 99th-percentile one-way frame delay, ms.
    pub delay_ms_p99: Option<f64>,
    /// RTP packets received.
    pub packets_received: u64,
    /// Packets with an unparsable VP8 descriptor.
    pub packets_malformed: u64,
    /// Complete keyframes.
    pub keyframes: u64,
}

impl VideoTrackReport {
    /// Builds the report entry from the receiver's counters.
    pub fn new(track_id: String, participant_id: String, s: VideoStats) -> Self {
        Self {
            track_id,
            participant_id,
            frames_received: s.frames_received,
            frames_complete: s.frames_complete,
            frames_corrupt: s.frames_corrupt,
            frames_missing: s.frames_missing,
            frames_foreign: s.frames_foreign,
            frames_duplicate: s.frames_duplicate,
            delay_ms_p50: s.delay_ms_p50,
            delay_ms_p99: s.delay_ms_p99,
            packets_received: s.packets_received,
            packets_malformed: s.packets_malformed,
            keyframes: s.keyframes,
        }
    }
}

/// One received audio track. The delays are relative (extra delay over the fastest packet,
/// estimated from RTP timestamps); see [`crate::audio`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioTrackReport {
    /// `TR_…`.
    pub track_id: String,
    /// `PA_…` of the publisher (empty if unknown).
    pub participant_id: String,
    /// RTP packets received.
    pub packets_received: u64,
    /// Packets decoded by libopus.
    pub packets_decoded: u64,
    /// Frames synthesised by packet loss concealment for sequence gaps.
    pub packets_concealed: u64,
    /// Packets that came too late (after their slot was concealed) or twice.
    pub packets_late: u64,
    /// Packets libopus rejected.
    pub decode_errors: u64,
    /// Median relative delay, ms.
    pub delay_ms_p50: Option<f64>,
    /// 99th-percentile relative delay, ms.
    pub delay_ms_p99: Option<f64>,
}

impl AudioTrackReport {
    /// Builds the report entry from the receiver's counters.
    pub fn new(track_id: String, participant_id: String, s: AudioStats) -> Self {
        Self {
            track_id,
            participant_id,
            packets_received: s.packets_received,
            packets_decoded: s.packets_decoded,
            packets_concealed: s.packets_concealed,
            packets_late: s.packets_late,
            decode_errors: s.decode_errors,
            delay_ms_p50: s.delay_ms_p50,
            delay_ms_p99: s.delay_ms_p99,
        }
    }
}

/// What this client sent, over all its published tracks (republishing included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishedReport {
    /// Opus packets handed to the peer connection.
    pub audio_packets_sent: u64,
    /// Video frames handed to the peer connection (all their packets accepted).
    pub video_frames_sent: u64,
    /// Video RTP packets handed to the peer connection.
    pub video_packets_sent: u64,
    /// Packets the peer connection refused (not yet negotiated, closed, …).
    pub send_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let report = Report {
            identity: "alice".into(),
            participant_id: "PA_1".into(),
            room: "demo".into(),
            duration_s: 10.0,
            tracks: vec![
                TrackReport::Video(VideoTrackReport::new(
                    "TR_v".into(),
                    "PA_2".into(),
                    VideoStats {
                        frames_received: 300,
                        frames_complete: 299,
                        frames_missing: 1,
                        delay_ms_p50: Some(1.2),
                        ..Default::default()
                    },
                )),
                TrackReport::Audio(AudioTrackReport::new(
                    "TR_a".into(),
                    "PA_2".into(),
                    AudioStats { packets_received: 500, ..Default::default() },
                )),
            ],
            published: PublishedReport { audio_packets_sent: 500, video_frames_sent: 300, ..Default::default() },
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["tracks"][0]["kind"], "video");
        assert_eq!(v["tracks"][0]["track_id"], "TR_v");
        assert_eq!(v["tracks"][0]["frames_complete"], 299);
        assert_eq!(v["tracks"][0]["delay_ms_p99"], serde_json::Value::Null);
        assert_eq!(v["tracks"][1]["kind"], "audio");
        assert_eq!(v["tracks"][1]["packets_received"], 500);
        assert_eq!(v["published"]["video_frames_sent"], 300);
        let line = serde_json::to_string(&report).unwrap();
        let parsed = Report::from_stdout(&format!("log line\n{line}\n\n")).unwrap();
        assert_eq!(parsed, report);
        assert_eq!(parsed.video().count(), 1);
        assert_eq!(parsed.track("TR_a").map(|t| t.kind()), Some(MediaKind::Audio));
    }
}
