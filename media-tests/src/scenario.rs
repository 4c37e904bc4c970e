//! Scenarios as files: who joins, what each publishes, how each one's network is impaired over time, for how long,
//! and what must hold at the end. A QA team writes a TOML file; `media-tests run FILE` plays it against a real
//! server (see `main.rs`), and this module does everything that needs no network: parsing, turning impairment
//! steps into relay [`Schedule`]s, computing the metrics from the clients' [`Report`]s and checking the thresholds.
//!
//! ```toml
//! name = "loss-5"
//! description = "5 % random loss on the subscriber's downlink"
//! duration_s = 12
//!
//! [[participant]]
//! identity = "alice"
//! publish = ["audio", "video"]
//!
//! [[participant]]
//! identity = "bob"
//! down = [{ loss_pct = 5.0 }]                     # server → bob, from the start
//! # up = [...]                                    # bob → server
//! # down = [{ rate_kbps = 3000 }, { at_s = 10, rate_kbps = 300 }]
//!
//! # [participant.signal]                          # bob's signaling WebSocket (TCP), the same steps
//! # up = [{ delay_ms = 100 }, { at_s = 5, outage = true }, { at_s = 8, delay_ms = 100 }]
//! # down = [...]
//!
//! [expect]
//! video_frames_complete_min_pct = 99.0
//! freeze_longest_max_ms = 500
//! ```
//!
//! A step sets everything about its direction from `at_s` on (what it leaves out is perfect): `rate_kbps` and
//! `queue_ms` (a bottleneck with a tail-drop queue), `delay_ms` and `jitter_ms`, `loss_pct` (random),
//! `burst_loss_pct` with `burst_len` (Gilbert–Elliott bursts of that mean length), `reorder_pct` with
//! `reorder_ms`, `duplicate_pct`, and `outage` (nothing is delivered while it is in force: a datagram due then is
//! lost).
//!
//! `up` and `down` impair the participant's media (UDP, through a [`crate::relay::Relay`]); the same steps in a
//! `[participant.signal]` table impair its signaling WebSocket (TCP, through a [`crate::tcp_relay::TcpRelay`]).
//! A byte stream is never damaged, so there loss becomes delay (one retransmission timeout per chunk hit), an
//! outage holds the bytes and delivers them when it ends, a full queue stops the relay reading instead of
//! dropping, and `reorder_pct` and `duplicate_pct` are refused.
//!
//! Metrics, per received track: video frames complete (of those sent while subscribed: complete, corrupt and
//! missing), freezes (count, longest, total; WebRTC's definition, see [`crate::frame::VideoStats::freezes`]), layer
//! switches, one-way frame delay p50/p99, loss episodes and their recovery time (count, p50, max; see
//! [`crate::recovery`]) and the receiving client's NACKs (messages and sequence numbers), PLIs + FIRs and RTX
//! received (per client, repeated on each of its video tracks); audio packets concealed (Opus packet-loss
//! concealment), late, and an E-model MOS estimate ([`mos_estimate`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::relay::{BurstLoss, Impairment, QueueLimit, Schedule};
use crate::report::Report;
use crate::signal::MediaKind;

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (the report file is named after it).
    pub name: String,
    /// What it shows, for people.
    #[serde(default)]
    pub description: String,
    /// How long every participant stays after all have joined, seconds.
    pub duration_s: f64,
    /// The room (default: the name).
    #[serde(default)]
    pub room: Option<String>,
    /// Seed of the relays' random choices (participant `i` uses `seed + i`).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Who joins, in this order.
    #[serde(rename = "participant")]
    pub participants: Vec<ParticipantSpec>,
    /// What must hold.
    #[serde(default)]
    pub expect: Expectations,
}

fn default_seed() -> u64 {
    1
}

/// One participant.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSpec {
    /// Its identity (token `sub`).
    pub identity: String,
    /// `audio`, `video`.
    #[serde(default)]
    pub publish: Vec<MediaKind>,
    /// Send the video as three simulcast layers (q/h/f).
    #[serde(default)]
    pub simulcast: bool,
    /// Video bitrate, kbps (single-layer video).
    #[serde(default)]
    pub video_kbps: Option<u32>,
    /// Negotiate TWCC (the server's bandwidth estimate of this participant's downlink needs it).
    #[serde(default)]
    pub twcc: bool,
    /// Client → server impairment steps.
    #[serde(default)]
    pub up: Vec<Step>,
    /// Server → client impairment steps.
    #[serde(default)]
    pub down: Vec<Step>,
    /// Impairment of its signaling WebSocket; `None`: it connects to the server directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalSpec>,
}

/// A participant's signaling path (its WebSocket over TCP): the same steps as its media's, per direction.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSpec {
    /// Client → server impairment steps.
    #[serde(default)]
    pub up: Vec<Step>,
    /// Server → client impairment steps.
    #[serde(default)]
    pub down: Vec<Step>,
}

impl SignalSpec {
    /// Client → server schedule.
    pub fn up_schedule(&self) -> Schedule {
        schedule(&self.up)
    }

    /// Server → client schedule.
    pub fn down_schedule(&self) -> Schedule {
        schedule(&self.down)
    }
}

impl ParticipantSpec {
    /// Whether its media goes through a relay (it has an impairment in either direction).
    pub fn impaired(&self) -> bool {
        !self.up.is_empty() || !self.down.is_empty()
    }

    /// Client → server schedule.
    pub fn up_schedule(&self) -> Schedule {
        schedule(&self.up)
    }

    /// Server → client schedule.
    pub fn down_schedule(&self) -> Schedule {
        schedule(&self.down)
    }
}

/// One impairment step of one direction; see the module doc.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// From when, seconds from the start of the scenario.
    #[serde(default)]
    pub at_s: f64,
    /// Bottleneck rate, kbps.
    #[serde(default)]
    pub rate_kbps: Option<u64>,
    /// Queue in front of the bottleneck, ms of queueing at the rate (default 100).
    #[serde(default)]
    pub queue_ms: Option<u64>,
    /// Fixed one-way delay, ms.
    #[serde(default)]
    pub delay_ms: f64,
    /// Extra delay drawn uniformly from 0 to this, ms.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Random loss, %.
    #[serde(default)]
    pub loss_pct: f64,
    /// Burst loss, % on average.
    #[serde(default)]
    pub burst_loss_pct: f64,
    /// Mean burst length, datagrams (default 5).
    #[serde(default)]
    pub burst_len: Option<f64>,
    /// Datagrams held back so that later ones overtake them, %.
    #[serde(default)]
    pub reorder_pct: f64,
    /// How long those are held back, ms (default 10).
    #[serde(default)]
    pub reorder_ms: Option<f64>,
    /// Datagrams delivered twice, %.
    #[serde(default)]
    pub duplicate_pct: f64,
    /// Nothing is delivered while this step is in force.
    #[serde(default)]
    pub outage: bool,
}

impl Step {
    /// The relay setting.
    pub fn impairment(&self) -> Impairment {
        let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1000.0);
        let mut imp = match self.rate_kbps {
            Some(kbps) => Impairment::rate(kbps * 1000),
            None => Impairment::none(),
        };
        if let Some(q) = self.queue_ms {
            imp = imp.with_queue(QueueLimit::Delay(Duration::from_millis(q)));
        }
        imp = imp.with_delay(ms(self.delay_ms), ms(self.jitter_ms)).with_loss(self.loss_pct / 100.0);
        if self.burst_loss_pct > 0.0 {
            imp = imp.with_burst_loss(BurstLoss::with_mean(self.burst_loss_pct / 100.0, self.burst_len.unwrap_or(5.0)));
        }
        if self.reorder_pct > 0.0 {
            imp = imp.with_reorder(self.reorder_pct / 100.0, ms(self.reorder_ms.unwrap_or(10.0)));
        }
        if self.duplicate_pct > 0.0 {
            imp = imp.with_duplicate(self.duplicate_pct / 100.0);
        }
        Impairment { outage: self.outage, ..imp }
    }
}

impl Step {
    /// A few words for a plot: `300 kbps, 5% loss`, or `clean`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.outage {
            parts.push("outage".to_string());
        }
        if let Some(k) = self.rate_kbps {
            parts.push(format!("{k} kbps"));
        }
        if self.delay_ms > 0.0 || self.jitter_ms > 0.0 {
            parts.push(format!("{}+{} ms", self.delay_ms, self.jitter_ms));
        }
        for (v, what) in [
            (self.loss_pct, "loss"),
            (self.burst_loss_pct, "burst loss"),
            (self.reorder_pct, "reordered"),
            (self.duplicate_pct, "duplicated"),
        ] {
            if v > 0.0 {
                parts.push(format!("{v}% {what}"));
            }
        }
        if parts.is_empty() {
            "clean".into()
        } else {
            parts.join(", ")
        }
    }
}

fn schedule(steps: &[Step]) -> Schedule {
    let mut s = Schedule::constant(Impairment::none());
    for step in steps {
        s = s.then(Duration::from_secs_f64(step.at_s.max(0.0)), step.impairment());
    }
    s
}

/// Thresholds; each one set is checked against the worst received track.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Every received video: at least this share of its frames complete, %.
    #[serde(default)]
    pub video_frames_complete_min_pct: Option<f64>,
    /// No freeze longer than this, ms.
    #[serde(default)]
    pub freeze_longest_max_ms: Option<u64>,
    /// One-way frame delay p99 at most this, ms.
    #[serde(default)]
    pub video_delay_p99_max_ms: Option<f64>,
    /// Every received video: the server paused it (`stream_state` `paused`) at most this many times.
    #[serde(default)]
    pub video_pauses_max: Option<u64>,
    /// Every received audio: at most this share of its packets concealed, %.
    #[serde(default)]
    pub audio_concealed_max_pct: Option<f64>,
    /// Every received audio: an E-model MOS of at least this.
    #[serde(default)]
    pub audio_mos_min: Option<f64>,
    /// Every participant receives every other participant's published tracks.
    #[serde(default = "yes")]
    pub everyone_receives_everyone: bool,
}

fn yes() -> bool {
    true
}

impl Scenario {
    /// Parses a scenario file.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        if s.participants.is_empty() {
            return Err(ScenarioError::Invalid("no participant".into()));
        }
        if !(s.duration_s > 0.0 && s.duration_s <= 3600.0) {
            return Err(ScenarioError::Invalid(format!("duration_s {} is not in (0, 3600]", s.duration_s)));
        }
        let mut ids: Vec<&str> = s.participants.iter().map(|p| p.identity.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(ScenarioError::Invalid("two participants with one identity".into()));
        }
        for p in &s.participants {
            let signal = p.signal.iter().flat_map(|sig| sig.up.iter().chain(&sig.down));
            for step in p.up.iter().chain(&p.down).chain(signal.clone()) {
                let pct = [step.loss_pct, step.burst_loss_pct, step.reorder_pct, step.duplicate_pct];
                if pct.iter().any(|v| !(0.0..=100.0).contains(v)) || step.at_s < 0.0 || step.at_s > s.duration_s {
                    return Err(ScenarioError::Invalid(format!("{}: a step out of range: {step:?}", p.identity)));
                }
            }
            if let Some(step) = signal.into_iter().find(|st| st.reorder_pct > 0.0 || st.duplicate_pct > 0.0) {
                return Err(ScenarioError::Invalid(format!(
                    "{}: a byte stream cannot be reordered or duplicated (TCP would repair it): {step:?}",
                    p.identity
                )));
            }
        }
        Ok(s)
    }

    /// The room name.
    pub fn room(&self) -> &str {
        self.room.as_deref().unwrap_or(&self.name)
    }
}

/// A scenario file that cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid TOML for a scenario.
    #[error("scenario: {0}")]
    Parse(String),
    /// Valid TOML, but not a playable scenario.
    #[error("scenario: {0}")]
    Invalid(String),
}

/// What one participant measured of one received track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackMetrics {
    /// The receiver.
    pub receiver: String,
    /// The publisher's identity.
    pub publisher: String,
    /// `audio` or `video`.
    pub kind: String,
    /// Video: complete frames of those sent while subscribed (complete + corrupt + missing), %.
    pub frames_complete_pct: Option<f64>,
    /// Video: freezes.
    pub freezes: Option<u64>,
    /// Video: the longest freeze, ms.
    pub freeze_longest_ms: Option<u64>,
    /// Video: layer changes after the first layer.
    pub layer_switches: Option<u64>,
    /// Video: one-way frame delay p50, ms.
    pub delay_ms_p50: Option<f64>,
    /// Video: one-way frame delay p99, ms.
    pub delay_ms_p99: Option<f64>,
    /// Audio: packets concealed of decoded + concealed, %.
    pub concealed_pct: Option<f64>,
    /// Audio: E-model MOS estimate.
    pub mos: Option<f64>,
    /// Video: loss episodes recovered from ([`crate::recovery`]).
    #[serde(default)]
    pub recoveries: Option<u64>,
    /// Video: median recovery time, ms.
    #[serde(default)]
    pub recovery_ms_p50: Option<u64>,
    /// Video: longest recovery time, ms.
    #[serde(default)]
    pub recovery_ms_max: Option<u64>,
    /// Video: the receiver's NACK messages sent (over all its received tracks: a per-client count).
    #[serde(default)]
    pub nacks_sent: Option<u64>,
    /// Video: sequence numbers those NACKs asked for.
    #[serde(default)]
    pub nacked_packets: Option<u64>,
    /// Video: PLIs + FIRs the receiver sent.
    #[serde(default)]
    pub keyframe_requests_sent: Option<u64>,
    /// Video: retransmissions (RTX) the receiver got.
    #[serde(default)]
    pub rtx_received: Option<u64>,
    /// Video: how many times the server paused it (`stream_state` `paused`).
    #[serde(default)]
    pub pauses: Option<u64>,
}

/// One threshold against what was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The worst value measured (as text: a number or a list of what is missing).
    pub measured: String,
    /// The threshold.
    pub limit: String,
    /// Whether it holds.
    pub pass: bool,
}

/// Metrics of every received track and the checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Per (receiver, received track).
    pub tracks: Vec<TrackMetrics>,
    /// Per threshold.
    pub checks: Vec<Check>,
}

impl Outcome {
    /// Whether every check holds.
    pub fn pass(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    /// A plain-text table of the tracks and the checks, for a terminal.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
        let u = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let mut out = format!(
            "{:<10} {:<10} {:<5} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>10} {:>5} {:>6} {:>11} {:>11} {:>6} {:>7} {:>8} {:>6}\n",
            "receiver",
            "from",
            "kind",
            "complete%",
            "freezes",
            "longest_ms",
            "switches",
            "p50_ms",
            "p99_ms",
            "concealed%",
            "mos",
            "recov",
            "recov_p50ms",
            "recov_maxms",
            "nacks",
            "nacked",
            "pli+fir",
            "rtx"
        );
        for t in &self.tracks {
            out += &format!(
                "{:<10} {:<10} {:<5} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>10} {:>5} {:>6} {:>11} {:>11} {:>6} {:>7} {:>8} {:>6}\n",
                t.receiver,
                t.publisher,
                t.kind,
                f(t.frames_complete_pct, 2),
                u(t.freezes),
                u(t.freeze_longest_ms),
                u(t.layer_switches),
                f(t.delay_ms_p50, 1),
                f(t.delay_ms_p99, 1),
                f(t.concealed_pct, 2),
                f(t.mos, 2),
                u(t.recoveries),
                u(t.recovery_ms_p50),
                u(t.recovery_ms_max),
                u(t.nacks_sent),
                u(t.nacked_packets),
                u(t.keyframe_requests_sent),
                u(t.rtx_received),
            );
        }
        for c in &self.checks {
            out +=
                &format!("{} {}: {} (limit {})\n", if c.pass { "PASS" } else { "FAIL" }, c.name, c.measured, c.limit);
        }
        out
    }
}

/// An E-model (ITU-T G.107, simplified) MOS estimate for a voice stream: `R = 93.2 − Id − Ie,eff` with the delay
/// impairment `Id = 0.024 d + 0.11 (d − 177.3) H(d − 177.3)` (`d`: one-way mouth-to-ear delay, ms) and the
/// loss impairment `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl + Bpl)` (`Ppl`: packet loss after concealment was needed,
/// %). Opus has no G.113 values; `Ie = 0` and `Bpl = 20` are assumed (between G.711 with PLC, 25.1, and G.729A,
/// 19). `MOS = 1 + 0.035 R + R (R − 60)(100 − R) · 7·10⁻⁶`, R clamped to 0..100.
pub fn mos_estimate(loss_pct: f64, one_way_delay_ms: f64) -> f64 {
    let d = one_way_delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let (ie, bpl) = (0.0, 20.0);
    let ppl = loss_pct.clamp(0.0, 100.0);
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl);
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
}

/// The metrics and checks of a finished run: `reports` are the participants' reports, in any order.
pub fn evaluate(scenario: &Scenario, reports: &[Report]) -> Outcome {
    let identity_of = |pid: &str| {
        reports.iter().find(|r| r.participant_id == pid).map_or_else(|| pid.to_string(), |r| r.identity.clone())
    };
    let pct = |part: u64, whole: u64| (whole > 0).then(|| 100.0 * part as f64 / whole as f64);
    let mut tracks = Vec::new();
    for r in reports {
        for v in r.video() {
            let sent = v.frames_complete + v.frames_corrupt + v.frames_missing;
            tracks.push(TrackMetrics {
                receiver: r.identity.clone(),
                publisher: identity_of(&v.participant_id),
                kind: "video".into(),
                frames_complete_pct: pct(v.frames_complete, sent),
                freezes: Some(v.freezes),
                freeze_longest_ms: Some(v.freeze_longest_ms),
                layer_switches: Some(v.layer_timeline.len().saturating_sub(1) as u64),
                delay_ms_p50: v.delay_ms_p50,
                delay_ms_p99: v.delay_ms_p99,
                concealed_pct: None,
                mos: None,
                recoveries: Some(v.recoveries),
                recovery_ms_p50: v.recovery_ms_p50,
                recovery_ms_max: v.recovery_ms_max,
                nacks_sent: Some(r.rtcp.nacks_sent),
                nacked_packets: Some(r.rtcp.nacked_packets),
                keyframe_requests_sent: Some(r.rtcp.plis_sent + r.rtcp.firs_sent),
                rtx_received: Some(r.rtcp.rtx_received),
                pauses: Some(
                    r.stream_states.iter().filter(|s| s.track_id == v.track_id && s.state == "paused").count() as u64,
                ),
            });
        }
        for a in r.audio() {
            let concealed = pct(a.packets_concealed, a.packets_decoded + a.packets_concealed);
            // Mouth-to-ear: the network's extra delay measured (relative) plus 60 ms for packetization, jitter
            // buffer and playout, a typical budget.
            let delay = a.delay_ms_p50.unwrap_or(0.0) + 60.0;
            tracks.push(TrackMetrics {
                receiver: r.identity.clone(),
                publisher: identity_of(&a.participant_id),
                kind: "audio".into(),
                frames_complete_pct: None,
                freezes: None,
                freeze_longest_ms: None,
                layer_switches: None,
                delay_ms_p50: a.delay_ms_p50,
                delay_ms_p99: a.delay_ms_p99,
                concealed_pct: concealed,
                mos: concealed.map(|c| mos_estimate(c, delay)),
                recoveries: None,
                recovery_ms_p50: None,
                recovery_ms_max: None,
                nacks_sent: None,
                nacked_packets: None,
                keyframe_requests_sent: None,
                rtx_received: None,
                pauses: None,
            });
        }
    }

    let e = &scenario.expect;
    let mut checks = Vec::new();
    let video = || tracks.iter().filter(|t| t.kind == "video");
    let audio = || tracks.iter().filter(|t| t.kind == "audio");
    // Each threshold against the worst track: the lowest value for a minimum, the highest for a maximum.
    let mut check = |name: &str, values: Vec<f64>, limit: Option<f64>, at_least: bool| {
        let Some(limit) = limit else { return };
        let worst = values.into_iter().reduce(if at_least { f64::min } else { f64::max });
        checks.push(Check {
            name: name.into(),
            measured: worst.map_or("nothing received".into(), |w| format!("{w:.2}")),
            limit: format!("{} {limit}", if at_least { ">=" } else { "<=" }),
            pass: worst.is_some_and(|w| if at_least { w >= limit } else { w <= limit }),
        });
    };
    check(
        "video frames complete %",
        video().filter_map(|t| t.frames_complete_pct).collect(),
        e.video_frames_complete_min_pct,
        true,
    );
    check("audio MOS", audio().filter_map(|t| t.mos).collect(), e.audio_mos_min, true);
    check(
        "longest freeze ms",
        video().filter_map(|t| t.freeze_longest_ms.map(|v| v as f64)).collect(),
        e.freeze_longest_max_ms.map(|v| v as f64),
        false,
    );
    check(
        "video pauses",
        video().filter_map(|t| t.pauses.map(|v| v as f64)).collect(),
        e.video_pauses_max.map(|v| v as f64),
        false,
    );
    check("video delay p99 ms", video().filter_map(|t| t.delay_ms_p99).collect(), e.video_delay_p99_max_ms, false);
    check("audio concealed %", audio().filter_map(|t| t.concealed_pct).collect(), e.audio_concealed_max_pct, false);

    if e.everyone_receives_everyone {
        let mut missing = Vec::new();
        for receiver in &scenario.participants {
            for publisher in scenario.participants.iter().filter(|p| p.identity != receiver.identity) {
                for kind in &publisher.publish {
                    let kind = match kind {
                        MediaKind::Audio => "audio",
                        MediaKind::Video => "video",
                    };
                    let got = tracks.iter().any(|t| {
                        t.receiver == receiver.identity && t.publisher == publisher.identity && t.kind == kind
                    });
                    if !got {
                        missing.push(format!("{}←{} {kind}", receiver.identity, publisher.identity));
                    }
                }
            }
        }
        checks.push(Check {
            name: "everyone receives everyone".into(),
            measured: if missing.is_empty() { "all".into() } else { format!("missing: {}", missing.join(", ")) },
            limit: "all".into(),
            pass: missing.is_empty(),
        });
    }
    Outcome { tracks, checks }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "step"
duration_s = 20
[[participant]]
identity = "alice"
publish = ["audio", "video"]
[[participant]]
identity = "bob"
down = [{ rate_kbps = 3000, loss_pct = 2 }, { at_s = 10, rate_kbps = 300, burst_loss_pct = 10, burst_len = 4 }]
up = [{ delay_ms = 50, jitter_ms = 20, reorder_pct = 1, duplicate_pct = 0.5 }]
[participant.signal]
up = [{ delay_ms = 100 }, { at_s = 5, outage = true, delay_ms = 100 }, { at_s = 8, delay_ms = 100 }]
down = [{ delay_ms = 100, loss_pct = 1 }]
[expect]
video_frames_complete_min_pct = 99
freeze_longest_max_ms = 500
"#;

    #[test]
    fn a_file_becomes_schedules() {
        let s = Scenario::from_toml(FILE).unwrap();
        assert_eq!(s.room(), "step");
        let bob = &s.participants[1];
        assert!(bob.impaired() && !s.participants[0].impaired());
        let down = bob.down_schedule();
        let first = down.at(Duration::from_secs(5));
        assert_eq!((first.rate_bps, first.loss), (Some(3_000_000), 0.02));
        let later = down.at(Duration::from_secs(11));
        assert_eq!(later.rate_bps, Some(300_000));
        assert_eq!(later.loss, 0.0, "a step sets everything: what it leaves out is perfect");
        let burst = later.burst.unwrap();
        assert!((burst.r - 0.25).abs() < 1e-9 && (burst.p / (burst.p + burst.r) - 0.10).abs() < 1e-9);
        let up = bob.up_schedule().at(Duration::ZERO);
        assert_eq!((up.delay, up.jitter), (Duration::from_millis(50), Duration::from_millis(20)));
        assert_eq!((up.reorder, up.reorder_delay, up.duplicate), (0.01, Duration::from_millis(10), 0.005));
        assert!(!up.outage);

        assert_eq!(s.participants[0].signal, None, "alice connects directly");
        let signal = bob.signal.as_ref().unwrap();
        let up = signal.up_schedule();
        let ms = Duration::from_millis;
        assert_eq!((up.at(ms(4999)).outage, up.at(ms(4999)).delay), (false, ms(100)));
        assert_eq!((up.at(ms(5000)).outage, up.at(ms(5000)).delay), (true, ms(100)));
        assert_eq!(up.outage_end(ms(5000)), Some(ms(8000)));
        assert!(!up.at(ms(8000)).outage);
        assert_eq!(signal.down_schedule().at(ms(9000)).loss, 0.01);
        assert_eq!(signal.up[1].summary(), "outage, 100+0 ms");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let unknown = FILE.replace("loss_pct = 2", "los_pct = 2");
        assert!(matches!(Scenario::from_toml(&unknown), Err(ScenarioError::Parse(_))));
        let over = FILE.replace("loss_pct = 2", "loss_pct = 200");
        assert!(matches!(Scenario::from_toml(&over), Err(ScenarioError::Invalid(_))));
        let reordered = FILE.replace("loss_pct = 1 }", "reorder_pct = 1 }");
        let e = Scenario::from_toml(&reordered).unwrap_err();
        assert!(matches!(&e, ScenarioError::Invalid(m) if m.contains("byte stream")), "{e}");
        let late = FILE.replace("at_s = 8,", "at_s = 80,");
        assert!(matches!(Scenario::from_toml(&late), Err(ScenarioError::Invalid(_))), "signal steps are checked too");
        let unknown = FILE.replace("[participant.signal]\nup", "[participant.signal]\nupp");
        assert!(matches!(Scenario::from_toml(&unknown), Err(ScenarioError::Parse(_))));
        let twice = FILE.replace("identity = \"bob\"", "identity = \"alice\"");
        assert!(matches!(Scenario::from_toml(&twice), Err(ScenarioError::Invalid(_))));
        assert!(Scenario::from_toml("name = \"x\"\nduration_s = 0\nparticipant = []").is_err());
    }

    #[test]
    fn mos_falls_with_loss_and_delay() {
        let clean = mos_estimate(0.0, 80.0);
        assert!(clean > 4.3 && clean < 4.5, "{clean}");
        assert!(mos_estimate(5.0, 80.0) < clean);
        assert!(mos_estimate(5.0, 80.0) > mos_estimate(20.0, 80.0));
        assert!(mos_estimate(0.0, 400.0) < mos_estimate(0.0, 100.0));
        assert!((1.0..=4.5).contains(&mos_estimate(100.0, 1000.0)));
    }

    fn report(identity: &str, pid: &str, json_tracks: &str) -> Report {
        serde_json::from_str(&format!(
            r#"{{"identity":"{identity}","participant_id":"{pid}","room":"r","duration_s":10,
               "tracks":{json_tracks},
               "published":{{"audio_packets_sent":0,"video_frames_sent":0,"video_packets_sent":0,"send_errors":0}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn checks_take_the_worst_track_and_name_what_is_missing() {
        let s = Scenario::from_toml(FILE).unwrap();
        let video = r#"[{"kind":"video","track_id":"TR_v","participant_id":"PA_a","frames_received":300,
            "frames_complete":297,"frames_corrupt":0,"frames_missing":3,"frames_foreign":0,"frames_duplicate":0,
            "frames_repeated_at_switch":0,"delay_ms_p50":5.0,"delay_ms_p99":40.0,"packets_received":900,
            "packets_malformed":0,"keyframes":5,"freezes":1,"freeze_longest_ms":620,
            "recoveries":2,"recovery_ms_p50":300,"recovery_ms_max":650}]"#;
        let reports = [report("alice", "PA_a", "[]"), report("bob", "PA_b", video)];
        let o = evaluate(&s, &reports);
        assert_eq!(o.tracks.len(), 1);
        assert_eq!(o.tracks[0].publisher, "alice");
        assert_eq!(o.tracks[0].frames_complete_pct, Some(99.0));
        assert_eq!(
            (o.tracks[0].recoveries, o.tracks[0].recovery_ms_p50, o.tracks[0].recovery_ms_max),
            (Some(2), Some(300), Some(650))
        );
        assert_eq!((o.tracks[0].nacks_sent, o.tracks[0].rtx_received), (Some(0), Some(0)), "no rtcp in the report: 0");
        let header = o.table().lines().next().unwrap().to_string();
        assert!(header.contains("recov_p50ms") && header.contains("nacked") && header.contains("rtx"), "{header}");
        let by = |n: &str| o.checks.iter().find(|c| c.name == n).unwrap().clone();
        assert!(by("video frames complete %").pass);
        assert!(!by("longest freeze ms").pass, "620 ms > 500 ms");
        let everyone = by("everyone receives everyone");
        assert!(!everyone.pass && everyone.measured.contains("bob←alice audio"), "{everyone:?}");
        assert!(!o.pass());
        assert!(o.table().contains("FAIL longest freeze ms: 620.00 (limit <= 500)"), "{}", o.table());
    }
}
