//! The client's report: what it received per track and what it sent.
//!
//! The report is the contract between the client and whoever runs it. The CLI prints it as the
//! last line of stdout and scenario tests parse it, so it is plain serde data with stable field
//! names and no webrtc-rs types. Fields are documented on [`VideoTrackReport`] and
//! [`AudioTrackReport`]; the counting rules are in [`crate::frame::VideoReceiver`] and
//! [`crate::audio::AudioReceiver`].
//!
//! Times in timelines (`at_ms`) are milliseconds since the UNIX epoch, so that reports of
//! several processes (and the relay's schedule, [`crate::relay::Relay::started_unix_ms`]) can
//! be lined up. Fields added after the first version default when absent, so older reports
//! still parse.

use serde::{Deserialize, Serialize};

use crate::audio::AudioStats;
use crate::frame::VideoStats;
use crate::series::Series;
use crate::signal::{LayerActive, MediaKind};

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
    /// Every `stream_state` the server sent about the tracks this client receives, in order.
    #[serde(default)]
    pub stream_states: Vec<StreamStateReport>,
    /// RTCP feedback this client sent and retransmissions it received, over all received tracks.
    #[serde(default)]
    pub rtcp: RtcpReport,
}

/// Receiver-side feedback counters: what the client's RTCP write path carried (NACKs from webrtc-rs's NACK
/// generator, keyframe requests) and the RTX packets that arrived, counted in its interceptor chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcpReport {
    /// Generic NACK messages sent (RFC 4585 transport-layer feedback; one per media SSRC per compound packet).
    pub nacks_sent: u64,
    /// Sequence numbers those NACKs asked for (a number asked for again counts again).
    pub nacked_packets: u64,
    /// Picture loss indications sent.
    pub plis_sent: u64,
    /// Full intra requests sent.
    pub firs_sent: u64,
    /// Retransmissions (RTX, RFC 4588) received with a payload.
    pub rtx_received: u64,
}

/// One `stream_state` message, when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStateReport {
    /// Arrival, ms since the UNIX epoch.
    pub at_ms: u64,
    /// The received track.
    pub track_id: String,
    /// `active` or `paused`.
    pub state: String,
    /// When active: the RID forwarded.
    #[serde(default)]
    pub layer: Option<String>,
    /// When paused: why.
    #[serde(default)]
    pub reason: Option<String>,
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
#[allow(clippy::large_enum_variant)] // built once per track at the end, not worth a box in every match
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
    /// Our frames received intact more than once (same layer).
    pub frames_duplicate: u64,
    /// Our frames received again from another simulcast layer at a switch (the same picture, sharper).
    pub frames_repeated_at_switch: u64,
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
    /// Intact frames per simulcast layer (q, h, f), from the layer byte of their trailers.
    #[serde(default)]
    pub frames_per_layer: [u64; 3],
    /// The layer of the newest intact frame (0 = q, 1 = h, 2 = f; null without simulcast).
    #[serde(default)]
    pub current_layer: Option<u8>,
    /// The largest width any intact keyframe announced.
    #[serde(default)]
    pub max_width: Option<u16>,
    /// The largest height any intact keyframe announced.
    #[serde(default)]
    pub max_height: Option<u16>,
    /// Intact frames out of counter order (in RTP timestamp order): should be 0.
    #[serde(default)]
    pub counter_backwards: u64,
    /// Runs of missing frame counters.
    #[serde(default)]
    pub counter_gaps: u64,
    /// Each change of layer or width between the newest intact frames, from the first one on
    /// (late retransmitted frames change nothing).
    #[serde(default)]
    pub layer_timeline: Vec<LayerChangeReport>,
    /// Freezes (WebRTC's definition: a frame later than `max(3 × mean interval, mean + 150 ms)`).
    #[serde(default)]
    pub freezes: u64,
    /// The longest freeze, ms.
    #[serde(default)]
    pub freeze_longest_ms: u64,
    /// All freezes added up, ms.
    #[serde(default)]
    pub freeze_total_ms: u64,
    /// Each freeze: when it ended (ms since the UNIX epoch) and its length (ms).
    #[serde(default)]
    pub freeze_timeline: Vec<FreezeReport>,
    /// Loss episodes recovered from: see [`crate::recovery`] (a gap in the shown frames or a frame > 150 ms late,
    /// until the first of 5 consecutive on-time frames in order).
    #[serde(default)]
    pub recoveries: u64,
    /// Median recovery time, ms (null without one).
    #[serde(default)]
    pub recovery_ms_p50: Option<u64>,
    /// Longest recovery time, ms.
    #[serde(default)]
    pub recovery_ms_max: Option<u64>,
    /// Whether an episode was still open at the end (not in the counts above).
    #[serde(default)]
    pub recovery_unfinished: bool,
    /// Each recovery: when its episode began (the last good frame's show time, ms since the UNIX epoch) and how
    /// long it took (ms).
    #[serde(default)]
    pub recovery_timeline: Vec<FreezeReport>,
    /// Received bitrate, loss and frame delay per 500 ms (at most 1200 bins).
    #[serde(default)]
    pub series: Series,
}

/// One freeze of a received video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeReport {
    /// When the frame that ended it completed, ms since the UNIX epoch.
    pub at_ms: u64,
    /// How long no new frame came, ms.
    pub ms: u64,
}

/// One change of the layer (or the width) a subscriber receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerChangeReport {
    /// When the first frame of it completed, ms since the UNIX epoch.
    pub at_ms: u64,
    /// That frame's counter.
    pub counter: u32,
    /// The layer (0 = q, 1 = h, 2 = f; null without simulcast).
    pub layer: Option<u8>,
    /// The width from the last keyframe.
    pub width: Option<u16>,
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
            frames_repeated_at_switch: s.frames_repeated_at_switch,
            delay_ms_p50: s.delay_ms_p50,
            delay_ms_p99: s.delay_ms_p99,
            packets_received: s.packets_received,
            packets_malformed: s.packets_malformed,
            keyframes: s.keyframes,
            frames_per_layer: s.frames_per_layer,
            current_layer: s.current_layer,
            max_width: s.max_width,
            max_height: s.max_height,
            counter_backwards: s.counter_backwards,
            counter_gaps: s.counter_gaps,
            layer_timeline: s
                .layer_changes
                .iter()
                .map(|c| LayerChangeReport {
                    at_ms: c.at_us / 1000,
                    counter: c.counter,
                    layer: c.layer,
                    width: c.width,
                })
                .collect(),
            freezes: s.freezes,
            freeze_longest_ms: s.freeze_longest_ms,
            freeze_total_ms: s.freeze_total_ms,
            freeze_timeline: s
                .freeze_list
                .iter()
                .map(|&(at_us, ms)| FreezeReport { at_ms: at_us / 1000, ms })
                .collect(),
            recoveries: s.recoveries,
            recovery_ms_p50: percentile_ms(&s.recovery_list, 50),
            recovery_ms_max: s.recovery_list.iter().map(|r| r.ms).max(),
            recovery_unfinished: s.recovery_unfinished,
            recovery_timeline: s
                .recovery_list
                .iter()
                .map(|r| FreezeReport { at_ms: r.start_us / 1000, ms: r.ms })
                .collect(),
            series: s.series,
        }
    }
}

/// The nearest-rank percentile of the recovery times.
fn percentile_ms(list: &[crate::recovery::Recovery], pct: usize) -> Option<u64> {
    let mut v: Vec<u64> = list.iter().map(|r| r.ms).collect();
    v.sort_unstable();
    (!v.is_empty()).then(|| v[(v.len() * pct).div_ceil(100).saturating_sub(1)])
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
    /// Simulcast: per layer of the published video track, lowest first (empty without).
    #[serde(default)]
    pub video_layers: Vec<LayerSentReport>,
    /// Every `set_layers` the server sent, in order.
    #[serde(default)]
    pub set_layers: Vec<SetLayersReport>,
}

/// What was sent on one simulcast layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSentReport {
    /// Its RID.
    pub rid: String,
    /// The width its keyframes announce.
    pub width: u16,
    /// The height its keyframes announce.
    pub height: u16,
    /// Frames handed to the peer connection.
    pub frames_sent: u64,
    /// RTP packets handed to the peer connection.
    pub packets_sent: u64,
    /// Keyframes among them.
    pub keyframes_sent: u64,
    /// Whether it is being sent now (the server may pause it with `set_layers`).
    pub active: bool,
}

/// One `set_layers` message, when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetLayersReport {
    /// Arrival, ms since the UNIX epoch.
    pub at_ms: u64,
    /// The publisher's track.
    pub track_id: String,
    /// The layers as the server set them.
    pub layers: Vec<LayerActive>,
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
            stream_states: vec![],
            rtcp: RtcpReport { nacks_sent: 3, nacked_packets: 7, plis_sent: 1, firs_sent: 0, rtx_received: 6 },
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

        // A report from before simulcast (no new fields) still parses, with defaults.
        let mut old = serde_json::to_value(&report).unwrap();
        old.as_object_mut().unwrap().remove("stream_states");
        old.as_object_mut().unwrap().remove("rtcp");
        for k in ["frames_per_layer", "current_layer", "max_width", "layer_timeline", "counter_backwards"] {
            old["tracks"][0].as_object_mut().unwrap().remove(k);
        }
        old["published"].as_object_mut().unwrap().remove("video_layers");
        let parsed: Report = serde_json::from_value(old).unwrap();
        assert_eq!(parsed, Report { rtcp: RtcpReport::default(), ..report.clone() });
        assert_eq!(v["rtcp"]["nacked_packets"], 7);
        assert_eq!(v["tracks"][0]["recovery_ms_p50"], serde_json::Value::Null);
        assert_eq!(v["tracks"][0]["series"]["bin_ms"], 0);
    }
}
