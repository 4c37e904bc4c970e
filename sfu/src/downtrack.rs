//! A down-track: one subscriber's copy of one published track.
//!
//! It exists because what a subscriber receives is not simply what the publisher sends: the subscriber's m-line
//! has its own payload types (matched by codec parameters), its own SSRC (str0m stamps it), its own continuous
//! sequence numbers and timestamps ([`Munger`]; padding-only packets are dropped and their numbers closed up), and
//! a video down-track starts only at a keyframe, since nothing before one can be decoded.
//!
//! Lifecycle (the m-line on the subscriber's peer connection):
//!
//! ```text
//! ToOpen --offer--> Negotiating(mid) --answer--> Open(mid) --remove--> ToStop(mid) --offer--> NegotiatingStop(mid) --answer--> Gone
//!    ^                    |  client offer (glare): back to ToOpen; the abandoned mid is not used
//!    +--------------------+
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::Vp8Patch;
use str0m::Rtc;

use crate::allocator::{Allocation, Priority, TrackInput};
use crate::downstream_loss::LossReporter;
use crate::id::{PeerId, TrackId};
use crate::keyframe::KeyframeStart;
use crate::layer::{self, MAX_SPATIAL};
use crate::munger::Munger;
use crate::packet::ForwardPacket;
use crate::vp8munger::Vp8Munger;

/// How often a down-track waiting for a keyframe asks again (the publisher side throttles further).
const KEYFRAME_RETRY: Duration = Duration::from_millis(500);

/// RTP timestamp step between the last frame of one layer and the first of the next (90 kHz, 30 fps) when neither
/// sender reports nor arrival times can tell.
const SWITCH_TS_GAP: u32 = 3000;

/// A measured step across a switch outside this range (seconds) is not believed.
const SWITCH_GAP_RANGE: std::ops::RangeInclusive<f64> = 0.001..=3.0;

/// What a subscriber is told about a video down-track (`stream_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Media flows; `layer` is the spatial layer forwarded (`None` without simulcast).
    Active { layer: Option<u8> },
    /// Paused by the allocator: not even the lowest layer fits the link.
    Paused,
}

/// Where a down-track is in its negotiation. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownTrackState {
    /// To be added in the next server offer.
    ToOpen,
    /// Offered on `mid`, waiting for the answer.
    Negotiating(Mid),
    /// Negotiated; media flows on `mid`.
    Open(Mid),
    /// To be stopped in the next server offer.
    ToStop(Mid),
    /// Stop offered, waiting for the answer.
    NegotiatingStop(Mid),
    /// Finished; removed from the peer.
    Gone,
}

/// How the subscriber shows a video track (adaptive stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackSettings {
    /// The size it renders at; `None`: no limit.
    pub size: Option<(u16, u16)>,
    /// Not shown at all: nothing is forwarded until shown again.
    pub hidden: bool,
}

/// What to write for one forwarded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteParams {
    /// The subscriber's payload type for the packet's codec (its RED payload type when RED is forwarded).
    pub pt: Pt,
    /// The payload to write instead of the publisher's: the primary block of a RED packet for a subscriber without
    /// RED, or a RED packet relabelled with the subscriber's Opus payload type. `None`: the publisher's payload.
    pub payload: Option<std::sync::Arc<[u8]>>,
    /// VP8 descriptor rewrite, when the picture id or TL0PICIDX must change (after a layer switch).
    pub vp8_patch: Option<Vp8Patch>,
    /// Outgoing extended sequence number.
    pub seq_no: u64,
    /// Outgoing RTP timestamp.
    pub timestamp: u32,
}

/// See the module doc.
#[derive(Debug)]
pub struct DownTrack {
    /// The published track.
    pub track: TrackId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Who publishes it (announced as the m-line's stream id).
    pub publisher: PeerId,
    /// Negotiation state.
    pub state: DownTrackState,
    /// Unsubscribed while an offer was in flight: stop it once that settles.
    pub removed: bool,
    munger: Munger,
    /// Publisher PT → our PT for that codec and our RED payload type for it (when this subscriber negotiated RED),
    /// cached.
    pt_map: Option<(Pt, Pt, Option<Pt>)>,
    vp8: Vp8Munger,
    /// The spatial layer being forwarded; `None` until the first keyframe (video) or packet (audio).
    current: Option<u8>,
    /// The highest spatial layer this subscriber may get (a fixed preference; the allocator works below it).
    pub max_layer: u8,
    /// What the stream allocator gives this track.
    pub allocation: Allocation,
    /// Audio, screen share or camera.
    pub priority: Priority,
    /// What the subscriber renders: its size (adaptive stream: no larger layer than that needs) or hidden.
    pub settings: TrackSettings,
    /// From the latest packet: layer bitrates, live layers, sizes, and whether the track has simulcast.
    bitrates: [u32; 3],
    live: u8,
    sizes: layer::LayerSizes,
    simulcast: bool,
    /// The last forwarded packet's capture time (seconds, publisher's clock, from its sender reports) and
    /// arrival: how far to advance the timestamp across a switch.
    last_capture: Option<f64>,
    last_arrival: Option<Instant>,
    /// The state last told to the subscriber, and the layer demand last told to the publisher.
    reported: Option<StreamState>,
    demand_reported: Option<Option<u8>>,
    /// Egress counters at the last stats (packets sent, NACKs received, receiver-report loss).
    last_egress: Option<(u64, u64, Option<f32>)>,
    /// Has anything been forwarded yet? (Then a resume or switch continues the numbering.)
    started: bool,
    /// The layer whose keyframe we wait for, and when we last asked for one.
    keyframe_wish: Option<u8>,
    keyframe_asked: Option<(u8, Instant)>,
    /// Whether the str0m stream's retransmission cache was set up (once, before the first packet).
    pub rtx_cache_set: bool,
    /// The sending side of a relay to another node ([`crate::relay`]): every layer the edge needs, each on its own
    /// simulcast stream, with the publisher's numbering. The edge node munges per subscriber.
    pub relay: bool,
    /// Relay: the layers whose stream's retransmission cache was set up (bit `i` = layer `i`).
    pub relay_rtx_set: u8,
    /// Audio: when the subscriber's loss is worth a report to the publisher.
    loss_reporter: LossReporter,
}

impl DownTrack {
    /// A down-track to be offered.
    pub fn new(track: TrackId, kind: MediaKind, publisher: PeerId) -> Self {
        let start_seq: u16 = rand::random::<u16>() & 0x3fff;
        DownTrack {
            track,
            kind,
            publisher,
            state: DownTrackState::ToOpen,
            removed: false,
            rtx_cache_set: false,
            relay: false,
            relay_rtx_set: 0,
            munger: Munger::new(start_seq, rand::random()),
            pt_map: None,
            vp8: Vp8Munger::new(),
            current: None,
            max_layer: MAX_SPATIAL,
            allocation: Allocation::Layer(MAX_SPATIAL),
            priority: if kind == MediaKind::Audio { Priority::Audio } else { Priority::Camera },
            settings: TrackSettings::default(),
            bitrates: [0; 3],
            live: 0,
            sizes: [None; 3],
            simulcast: false,
            last_capture: None,
            last_arrival: None,
            reported: None,
            demand_reported: None,
            last_egress: None,
            started: false,
            keyframe_wish: None,
            keyframe_asked: None,
            loss_reporter: LossReporter::default(),
        }
    }

    /// The m-line, once one is assigned.
    pub fn mid(&self) -> Option<Mid> {
        match self.state {
            DownTrackState::Negotiating(m)
            | DownTrackState::Open(m)
            | DownTrackState::ToStop(m)
            | DownTrackState::NegotiatingStop(m) => Some(m),
            DownTrackState::ToOpen | DownTrackState::Gone => None,
        }
    }

    /// Does the next server offer need to carry a change for this down-track?
    pub fn needs_negotiation(&self) -> bool {
        matches!(self.state, DownTrackState::ToOpen | DownTrackState::ToStop(_))
    }

    /// Our offer was abandoned (glare) or failed: offer again what it carried.
    pub fn rollback(&mut self) {
        self.state = match self.state {
            DownTrackState::Negotiating(_) if self.removed => DownTrackState::Gone,
            DownTrackState::Negotiating(_) => DownTrackState::ToOpen,
            DownTrackState::NegotiatingStop(m) => DownTrackState::ToStop(m),
            s => s,
        };
    }

    /// Our offer was answered. Returns the track if this down-track just opened.
    pub fn negotiated(&mut self) -> Option<TrackId> {
        match self.state {
            DownTrackState::Negotiating(m) if self.removed => {
                self.state = DownTrackState::ToStop(m);
                None
            }
            DownTrackState::Negotiating(m) => {
                self.state = DownTrackState::Open(m);
                Some(self.track)
            }
            DownTrackState::NegotiatingStop(_) => {
                self.state = DownTrackState::Gone;
                None
            }
            _ => None,
        }
    }

    /// Unsubscribe.
    pub fn remove(&mut self) {
        self.removed = true;
        self.state = match self.state {
            DownTrackState::ToOpen => DownTrackState::Gone,
            DownTrackState::Open(m) => DownTrackState::ToStop(m),
            s => s,
        };
    }

    /// Decide whether and how to write `pkt` to this subscriber: `None` when it must not be sent (not open, codec
    /// not negotiated with this subscriber, waiting for a keyframe, older than the start).
    pub fn prepare(&mut self, pkt: &ForwardPacket, rtc: &Rtc) -> Option<(Mid, WriteParams)> {
        let DownTrackState::Open(mid) = self.state else { return None };
        if pkt.payload.is_empty() {
            // Padding only (bandwidth probing upstream): not forwarded, and its sequence number closed up.
            self.munger.skip(pkt.seq_no);
            return None;
        }
        let (pt, red_pt) = self.map_pt(pkt, rtc, mid)?;
        let (pt, payload) = match &pkt.red {
            Some(primary) => red_for_subscriber(pkt, primary, pt, red_pt)?,
            None => (pt, None),
        };
        self.bitrates = pkt.layer_bitrates;
        self.live = pkt.live_layers | (1 << pkt.layer);
        self.sizes = pkt.layer_sizes;
        self.simulcast = pkt.simulcast;
        if !self.select(pkt) {
            return None;
        }
        let m = self.munger.map(pkt.seq_no, pkt.timestamp)?;
        self.last_capture = pkt.capture;
        self.last_arrival = Some(pkt.arrival);
        let vp8_patch = pkt.vp8.and_then(|d| {
            let pid = d.picture_id().map(|p| (p, self.vp8_wide(&d)));
            let out = self.vp8.map(pid, d.tl0_pic_idx());
            if !out.changed {
                return None;
            }
            let mut b = d.patch();
            if let Some(p) = out.picture_id {
                b = b.picture_id(p);
            }
            if let Some(t) = out.tl0_pic_idx {
                b = b.tl0_pic_idx(t);
            }
            b.build().ok()
        });
        Some((mid, WriteParams { pt, payload, vp8_patch, seq_no: m.seq_no, timestamp: m.timestamp }))
    }

    /// A relay's copy of `pkt` ([`DownTrack::relay`]): the publisher's own sequence number and timestamp, padding
    /// included (a hole in the numbering would have the edge ask for it in vain). `None` when it must not be sent:
    /// not open, codec not negotiated, or a layer above what the edge node's subscribers need (dynacast across
    /// nodes: a layer nobody there needs does not cross).
    pub fn prepare_relay(&mut self, pkt: &ForwardPacket, rtc: &Rtc) -> Option<(Mid, WriteParams)> {
        let DownTrackState::Open(mid) = self.state else { return None };
        if self.kind == MediaKind::Video && self.wanted_layer().is_none_or(|top| pkt.layer > top) {
            return None;
        }
        let (pt, red_pt) = self.map_pt(pkt, rtc, mid)?;
        let (pt, payload) = match &pkt.red {
            Some(primary) => red_for_subscriber(pkt, primary, pt, red_pt)?,
            None => (pt, None),
        };
        Some((mid, WriteParams { pt, payload, vp8_patch: None, seq_no: pkt.seq_no, timestamp: pkt.timestamp }))
    }

    /// This subscriber's payload type (and RED payload type) for the publisher's codec of `pkt`, cached per
    /// publisher payload type; `None` when the subscriber did not negotiate the codec on `mid`.
    fn map_pt(&mut self, pkt: &ForwardPacket, rtc: &Rtc, mid: Mid) -> Option<(Pt, Option<Pt>)> {
        let src_pt = pkt.params.pt();
        match self.pt_map {
            Some((s, l, r)) if s == src_pt => Some((l, r)),
            _ => {
                let local = rtc.codec_config().match_params(pkt.params)?;
                let (pt, red_pt) = (local.pt(), local.red());
                if !rtc.media(mid)?.remote_pts().contains(&pt) {
                    return None;
                }
                self.pt_map = Some((src_pt, pt, red_pt));
                Some((pt, red_pt))
            }
        }
    }

    /// Is the picture id field 15 bits wide? (The descriptor knows; a value above 127 proves it.)
    fn vp8_wide(&self, d: &str0m::rtp::Vp8Descriptor) -> bool {
        // A 7-bit field cannot be patched with a 15-bit value; probe the builder.
        d.patch().picture_id(0x100).build().is_ok()
    }

    /// Layer selection: forward the current layer; switch to the target layer at its keyframe. Returns whether
    /// `pkt` is to be forwarded.
    fn select(&mut self, pkt: &ForwardPacket) -> bool {
        if self.kind == MediaKind::Audio {
            return true;
        }
        let Allocation::Layer(allocated) = self.allocation else {
            // Paused by the allocator: resume at a keyframe, continuing the numbering.
            self.current = None;
            self.keyframe_wish = None;
            return false;
        };
        let Some(wanted) = self.wanted_layer() else {
            // Hidden: likewise.
            self.current = None;
            self.keyframe_wish = None;
            return false;
        };
        let max = wanted.min(allocated);
        let target = layer::select(pkt.live_layers | (1 << pkt.layer), max).unwrap_or(pkt.layer);
        if self.current == Some(pkt.layer) && target == pkt.layer {
            self.keyframe_wish = None;
            return true;
        }
        if pkt.layer == target {
            // Switch (or start) only where the target layer can be decoded from.
            if pkt.keyframe == KeyframeStart::No {
                self.keyframe_wish = Some(target);
                return false;
            }
            if self.started {
                self.munger.rebase(self.switch_gap(pkt));
                self.vp8.rebase();
            }
            self.started = true;
            self.current = Some(target);
            self.keyframe_wish = None;
            return true;
        }
        // Another layer: keep forwarding the current one until the target's keyframe arrives.
        if self.current != Some(target) {
            self.keyframe_wish = Some(target);
        }
        self.current == Some(pkt.layer)
    }

    /// How far (RTP ticks) the timestamp advances from the last forwarded packet to `pkt`, the first of another
    /// layer: the difference of their capture times when both layers' sender reports tell them, else of their
    /// arrival times, else one frame at 30 fps. Layers have unrelated timestamp bases, so the numbers themselves
    /// say nothing.
    fn switch_gap(&self, pkt: &ForwardPacket) -> u32 {
        let clock = f64::from(pkt.clock_rate);
        let gap = match (self.last_capture, pkt.capture) {
            (Some(a), Some(b)) => Some(b - a),
            _ => self.last_arrival.map(|a| pkt.arrival.saturating_duration_since(a).as_secs_f64()),
        };
        match gap {
            Some(g) if SWITCH_GAP_RANGE.contains(&g) => (g * clock).round() as u32,
            Some(g) if g >= 0.0 && g < *SWITCH_GAP_RANGE.start() => (SWITCH_GAP_RANGE.start() * clock) as u32,
            _ => SWITCH_TS_GAP,
        }
    }

    /// The highest layer the subscriber can use: its preference, lowered to what its render size needs; `None`
    /// when it hides the track.
    pub fn wanted_layer(&self) -> Option<u8> {
        if self.settings.hidden {
            return None;
        }
        Some(match self.settings.size {
            Some(size) => self.max_layer.min(layer::layer_for_size(&self.sizes, size)),
            None => self.max_layer,
        })
    }

    /// What the allocator needs to know about this down-track (`None` until it is open).
    pub fn allocator_input(&self) -> Option<TrackInput> {
        if !matches!(self.state, DownTrackState::Open(_)) {
            return None;
        }
        Some(TrackInput {
            track: self.track,
            priority: self.priority,
            bitrates: self.bitrates,
            live: self.live,
            wanted: if self.kind == MediaKind::Audio { Some(0) } else { self.wanted_layer() },
        })
    }

    /// A change of what the subscriber should be told (`stream_state`), once per change. Video only.
    pub fn take_state_change(&mut self) -> Option<StreamState> {
        if self.kind != MediaKind::Video {
            return None;
        }
        let state = match (self.allocation, self.current) {
            (Allocation::Paused, _) => StreamState::Paused,
            (_, Some(l)) => StreamState::Active { layer: self.simulcast.then_some(l) },
            (_, None) => return None,
        };
        if self.reported == Some(state) {
            return None;
        }
        self.reported = Some(state);
        Some(state)
    }

    /// A change of the highest layer this subscriber needs from the publisher (dynacast), once per change.
    /// `Some(None)`: it needs nothing (hidden or unsubscribed).
    pub fn take_demand_change(&mut self) -> Option<Option<u8>> {
        if self.kind != MediaKind::Video {
            return None;
        }
        let demand = if self.removed { None } else { self.wanted_layer() };
        if self.demand_reported == Some(demand) {
            return None;
        }
        self.demand_reported = Some(demand);
        Some(demand)
    }

    /// The loss the subscriber signals since the last call, from str0m's cumulative egress counters: NACKs received
    /// per packet sent, or a receiver report's fraction lost when it changed (a report is repeated until the next).
    pub fn egress_loss(&mut self, packets: u64, nacks: u64, rr_loss: Option<f32>) -> Option<f32> {
        let last = self.last_egress.replace((packets, nacks, rr_loss));
        let (p0, n0, l0) = last?;
        let sent = packets.saturating_sub(p0);
        let nack_ratio = if sent >= 20 { nacks.saturating_sub(n0) as f32 / sent as f32 } else { 0.0 };
        let rr = rr_loss.filter(|l| Some(*l) != l0).unwrap_or(0.0);
        Some(nack_ratio.max(rr))
    }

    /// Audio: new egress statistics at `now`, with the fraction lost of the subscriber's receiver reports that arrived
    /// since the last ones. Returns the loss to report to the publisher, when a report is due (see
    /// [`crate::downstream_loss`]).
    pub fn take_loss_report(&mut self, now: Instant, rr_loss: Option<f32>) -> Option<f32> {
        if self.kind != MediaKind::Audio || !matches!(self.state, DownTrackState::Open(_)) {
            return None;
        }
        self.loss_reporter.handle_stats(now, rr_loss)
    }

    /// If this down-track waits for a keyframe, the layer to ask for — at most every 500 ms.
    pub fn take_keyframe_wish(&mut self, now: Instant) -> Option<u8> {
        let layer = self.keyframe_wish?;
        match self.keyframe_asked {
            Some((l, at)) if l == layer && now.saturating_duration_since(at) < KEYFRAME_RETRY => None,
            _ => {
                self.keyframe_asked = Some((layer, now));
                Some(layer)
            }
        }
    }

    /// The layer a subscriber's own PLI/FIR is about: the one it is decoding (or waiting for).
    pub fn layer_for_keyframe(&self) -> Option<u8> {
        match self.kind {
            MediaKind::Audio => None,
            MediaKind::Video => self.keyframe_wish.or(self.current).or(Some(0)),
        }
    }

    /// The spatial layer being forwarded.
    pub fn current_layer(&self) -> Option<u8> {
        self.current
    }
}

/// What a subscriber gets of a RED packet (`pkt.red`, whose primary block is `primary`): its payload type and, when
/// the publisher's bytes cannot go as they are, the payload to send instead. `pt` is the subscriber's Opus payload
/// type, `red_pt` its RED payload type if it negotiated RED.
///
/// - RED subscriber: the RED packet under `red_pt`, its blocks relabelled when the two sides' Opus payload types
///   differ (a RED packet holding a block of another codec cannot be relabelled: its primary goes instead).
/// - Otherwise the primary block alone, under `pt`: the same sequence number and timestamp, so the numbering stays
///   continuous.
///
/// The primary block is shared, not copied: the ingress found it once for every subscriber.
fn red_for_subscriber(
    pkt: &ForwardPacket,
    primary: &Arc<[u8]>,
    pt: Pt,
    red_pt: Option<Pt>,
) -> Option<(Pt, Option<Arc<[u8]>>)> {
    let src = *pkt.params.pt();
    if let Some(red_pt) = red_pt {
        if src == *pt {
            return Some((red_pt, None));
        }
        if let Some(relabelled) = crate::red::rewrite_pt(&pkt.payload, src, *pt) {
            return Some((red_pt, Some(Arc::from(relabelled))));
        }
    }
    Some((pt, Some(primary.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(s: &str) -> Mid {
        s.into()
    }

    #[test]
    fn red_for_subscriber_table() {
        // The publisher: Opus on PT 111 with RED on 63.
        let mut cc = str0m::format::CodecConfig::empty();
        cc.enable_opus(true, true);
        let params = *cc.find(|p| p.spec().codec == str0m::format::Codec::Opus).unwrap();
        assert_eq!((*params.pt(), params.red().map(|p| *p)), (111, Some(63)));
        let red = |pts: [u8; 2]| vec![0x80 | pts[0], 0x0f, 0x00, 0x02, pts[1], 1, 2, 9, 8, 7];
        let pkt = |payload: Vec<u8>| ForwardPacket {
            track: TrackId(1),
            kind: MediaKind::Audio,
            params,
            seq_no: 1,
            timestamp: 0,
            marker: false,
            keyframe: KeyframeStart::Unknown,
            layer: 0,
            live_layers: 1,
            layer_sizes: [None; 3],
            layer_bitrates: [0; 3],
            simulcast: false,
            capture: None,
            clock_rate: 48_000,
            vp8: None,
            red: crate::red::primary(&payload, 111).map(Arc::from),
            ext: Default::default(),
            payload: Arc::from(payload),
            arrival: Instant::now(),
        };
        type Want = Option<(u8, Option<Vec<u8>>)>;
        // (case, payload, subscriber's Opus PT, its RED PT, expected PT and replaced payload)
        type Case = (&'static str, Vec<u8>, u8, Option<u8>, Want);
        let cases: &[Case] = &[
            ("RED subscriber, same PTs: as is", red([111, 111]), 111, Some(63), Some((63, None))),
            (
                "RED subscriber, other PTs: relabelled",
                red([111, 111]),
                109,
                Some(62),
                Some((62, Some(red([109, 109])))),
            ),
            ("no RED: primary", red([111, 111]), 111, None, Some((111, Some(vec![9, 8, 7])))),
            ("no RED, other Opus PT: primary", red([111, 111]), 109, None, Some((109, Some(vec![9, 8, 7])))),
            (
                "RED subscriber, block of another codec, other PTs: primary",
                red([0, 111]),
                109,
                Some(62),
                Some((109, Some(vec![9, 8, 7]))),
            ),
            ("malformed: dropped", vec![0x80 | 111, 0, 0], 111, None, None),
            ("primary of another codec: dropped", red([111, 0]), 109, None, None),
        ];
        // A payload the ingress finds no primary block in never reaches a subscriber.
        for (name, payload, pt, red_pt, want) in cases {
            let pkt = pkt(payload.clone());
            let got = pkt
                .red
                .as_ref()
                .and_then(|primary| red_for_subscriber(&pkt, primary, Pt::from(*pt), red_pt.map(Pt::from)))
                .map(|(pt, p)| (*pt, p.map(|p| p.to_vec())));
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn lifecycle_table() {
        // (start, action, expected)
        type Action = fn(&mut DownTrack);
        let offer: Action = |d| {
            d.state = match d.state {
                DownTrackState::ToOpen => DownTrackState::Negotiating("1".into()),
                DownTrackState::ToStop(m) => DownTrackState::NegotiatingStop(m),
                s => s,
            }
        };
        let answer: Action = |d| {
            d.negotiated();
        };
        let glare: Action = |d| d.rollback();
        let remove: Action = |d| d.remove();
        let cases: &[(&str, &[Action], DownTrackState)] = &[
            ("offer+answer opens", &[offer, answer], DownTrackState::Open(mid("1"))),
            ("glare returns to ToOpen", &[offer, glare], DownTrackState::ToOpen),
            ("glare then offer again", &[offer, glare, offer, answer], DownTrackState::Open(mid("1"))),
            ("remove before offer is gone at once", &[remove], DownTrackState::Gone),
            ("remove while negotiating stops after answer", &[offer, remove, answer], DownTrackState::ToStop(mid("1"))),
            ("remove while negotiating, then glare: gone", &[offer, remove, glare], DownTrackState::Gone),
            ("remove open: stop offered and answered", &[offer, answer, remove, offer, answer], DownTrackState::Gone),
            (
                "stop offer abandoned: stop again",
                &[offer, answer, remove, offer, glare],
                DownTrackState::ToStop(mid("1")),
            ),
        ];
        for (name, actions, want) in cases {
            let mut d = DownTrack::new(TrackId(1), MediaKind::Video, PeerId(2));
            for a in actions.iter() {
                a(&mut d);
            }
            assert_eq!(d.state, *want, "{name}");
        }
    }
}
