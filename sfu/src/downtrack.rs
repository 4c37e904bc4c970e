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

use str0m::media::{MediaKind, Mid, Pt};
use str0m::Rtc;

use crate::id::{PeerId, TrackId};
use crate::keyframe::KeyframeStart;
use crate::munger::Munger;
use crate::peer::ForwardPacket;

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

/// What to write for one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteParams {
    /// The subscriber's payload type for the packet's codec.
    pub pt: Pt,
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
    /// Publisher PT → our PT, cached.
    pt_map: Option<(Pt, Pt)>,
    /// Video waits for a keyframe before forwarding anything.
    waiting_keyframe: bool,
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
            munger: Munger::new(start_seq, rand::random()),
            pt_map: None,
            waiting_keyframe: kind == MediaKind::Video,
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
        let src_pt = pkt.params.pt();
        let pt = match self.pt_map {
            Some((s, l)) if s == src_pt => l,
            _ => {
                let local = rtc.codec_config().match_params(pkt.params)?.pt();
                if !rtc.media(mid)?.remote_pts().contains(&local) {
                    return None;
                }
                self.pt_map = Some((src_pt, local));
                local
            }
        };
        if self.waiting_keyframe {
            if pkt.keyframe == KeyframeStart::No {
                return None;
            }
            self.waiting_keyframe = false;
        }
        let m = self.munger.map(pkt.seq_no, pkt.timestamp)?;
        Some((mid, WriteParams { pt, seq_no: m.seq_no, timestamp: m.timestamp }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(s: &str) -> Mid {
        s.into()
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
