//! RTP sequence number and timestamp rewriting for one down-track.
//!
//! A subscriber must see one continuous RTP stream per m-line, whatever the server does upstream: it joins in the
//! middle of a publisher's stream, and later (simulcast) the source may switch between layers that each have their
//! own numbering. SRTP also requires that a new receiver's first packet has a rollover counter of zero, so a
//! long-running publisher's extended sequence numbers cannot be passed through as they are.
//!
//! The [`Munger`] maps the publisher's extended sequence numbers (str0m unwraps them to 64 bits) and 32-bit RTP
//! timestamps onto the subscriber's numbering: the first forwarded packet gets a small starting sequence number and
//! a random timestamp base, later packets keep their distance from it. Reordered packets keep their order, packets
//! older than the start are dropped, and a re-based source ([`Munger::rebase`]) continues right after the last
//! packet sent.

/// Result of mapping one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Munged {
    /// Extended outgoing sequence number (ROC in the upper bits).
    pub seq_no: u64,
    /// Outgoing RTP timestamp.
    pub timestamp: u32,
}

/// How many sequence-offset changes (dropped padding packets, re-bases) are remembered, so that a packet arriving
/// late, from before a change, still gets the offset that was in force where it belongs.
const OFFSET_HISTORY: usize = 64;

/// Per-down-track rewriting state. See the module doc.
#[derive(Debug, Clone)]
pub struct Munger {
    /// Outgoing sequence number of the first forwarded packet.
    start_seq: u64,
    /// Outgoing timestamp of the first forwarded packet.
    start_ts: u32,
    /// `(first incoming seq, seq offset)` ranges, oldest first: `out = in + offset` (wrapping) for `in` from
    /// `first` up to the next range's start. Empty until the first packet.
    offsets: std::collections::VecDeque<(u64, u64)>,
    /// `out = in + ts_offset` once started (wrapping on u32).
    ts_offset: u32,
    /// Highest incoming sequence number seen (forwarded or skipped).
    highest_in: u64,
    /// Highest outgoing sequence number and its timestamp so far.
    highest_out: Option<(u64, u32)>,
    /// A new source is to be joined at its next packet (see [`Munger::rebase`]).
    rebase_pending: Option<u32>,
}

impl Munger {
    /// A munger whose first packet will be sent with sequence number `start_seq` (keep it below 2^15 so the
    /// receiver's rollover counter starts at zero) and timestamp `start_ts`.
    pub fn new(start_seq: u16, start_ts: u32) -> Self {
        Munger {
            start_seq: u64::from(start_seq & 0x7fff),
            start_ts,
            offsets: std::collections::VecDeque::new(),
            ts_offset: 0,
            highest_in: 0,
            highest_out: None,
            rebase_pending: None,
        }
    }

    fn push_offset(&mut self, from_in: u64, offset: u64) {
        if self.offsets.len() == OFFSET_HISTORY {
            self.offsets.pop_front();
        }
        self.offsets.push_back((from_in, offset));
    }

    /// The offset in force for `in_seq`, or `None` when it is older than everything remembered.
    fn offset_for(&self, in_seq: u64) -> Option<u64> {
        self.offsets.iter().rev().find(|(from, _)| in_seq >= *from).map(|(_, o)| *o)
    }

    /// Map one incoming packet, or `None` when it must not be forwarded (older than the start of the current source,
    /// or older than the remembered history).
    pub fn map(&mut self, in_seq: u64, in_ts: u32) -> Option<Munged> {
        if let Some(ts_gap) = self.rebase_pending.take() {
            // Continue right after the last packet sent, `ts_gap` later in media time. Older packets of the previous
            // source cannot be placed any more.
            let (last_seq, last_ts) = self.highest_out.unwrap_or((self.start_seq.wrapping_sub(1), self.start_ts));
            let out_seq = last_seq.wrapping_add(1);
            let out_ts = last_ts.wrapping_add(ts_gap);
            self.offsets.clear();
            self.push_offset(in_seq, out_seq.wrapping_sub(in_seq));
            self.ts_offset = out_ts.wrapping_sub(in_ts);
            self.highest_in = in_seq;
        }
        if self.offsets.is_empty() {
            self.push_offset(in_seq, self.start_seq.wrapping_sub(in_seq));
            self.ts_offset = self.start_ts.wrapping_sub(in_ts);
            self.highest_in = in_seq;
        }
        let offset = self.offset_for(in_seq)?;
        self.highest_in = self.highest_in.max(in_seq);
        let out = Munged { seq_no: in_seq.wrapping_add(offset), timestamp: in_ts.wrapping_add(self.ts_offset) };
        match self.highest_out {
            Some((h, _)) if h >= out.seq_no => {}
            _ => self.highest_out = Some((out.seq_no, out.timestamp)),
        }
        Some(out)
    }

    /// The packet `in_seq` is deliberately not forwarded (padding only): close the gap it would leave, so the
    /// subscriber does not see a loss it would ask to have repaired. Only a packet newer than all before it can be
    /// closed up; an older one (reordered) is already inside the sequence and is ignored.
    pub fn skip(&mut self, in_seq: u64) {
        if self.offsets.is_empty() || self.rebase_pending.is_some() || in_seq <= self.highest_in {
            return;
        }
        let current = self.offsets.back().map(|(_, o)| *o).expect("offsets is not empty");
        self.highest_in = in_seq;
        self.push_offset(in_seq + 1, current.wrapping_sub(1));
    }

    /// The next packet comes from a different source numbering (another layer or a re-published track). It will be
    /// sent with the sequence number after the last one, and a timestamp `ts_gap` ticks after the last one.
    pub fn rebase(&mut self, ts_gap: u32) {
        self.rebase_pending = Some(ts_gap);
    }

    /// Highest outgoing (sequence number, timestamp) so far.
    pub fn highest_out(&self) -> Option<(u64, u32)> {
        self.highest_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (incoming ext seq, incoming ts) -> expected outgoing (seq, ts) or None
        struct Case {
            name: &'static str,
            start: (u16, u32),
            input: &'static [(u64, u32)],
            want: &'static [Option<(u64, u32)>],
        }
        let cases = [
            Case {
                name: "starts at the chosen base",
                start: (100, 5000),
                input: &[(70_000, 1_000), (70_001, 1_000), (70_002, 4_000)],
                want: &[Some((100, 5000)), Some((101, 5000)), Some((102, 8000))],
            },
            Case {
                name: "incoming 16-bit wrap stays continuous (str0m extends seq)",
                start: (10, 0),
                input: &[(65_534, 10), (65_535, 20), (65_536, 30), (65_537, 40)],
                want: &[Some((10, 0)), Some((11, 10)), Some((12, 20)), Some((13, 30))],
            },
            Case {
                name: "timestamp wraps at 2^32",
                start: (1, u32::MAX - 5),
                input: &[(5, 0), (6, 3), (7, 10)],
                want: &[Some((1, u32::MAX - 5)), Some((2, u32::MAX - 2)), Some((3, 4))],
            },
            Case {
                name: "reordering keeps order and relative distance",
                start: (1, 0),
                input: &[(10, 0), (12, 180), (11, 90), (13, 270)],
                want: &[Some((1, 0)), Some((3, 180)), Some((2, 90)), Some((4, 270))],
            },
            Case {
                name: "packets older than the start are dropped",
                start: (1, 0),
                input: &[(10, 0), (9, 0), (11, 0)],
                want: &[Some((1, 0)), None, Some((2, 0))],
            },
            Case {
                name: "outgoing start keeps ROC zero",
                start: (0xffff, 0),
                input: &[(1, 0)],
                want: &[Some((0x7fff, 0))],
            },
        ];
        for c in cases {
            let mut m = Munger::new(c.start.0, c.start.1);
            let got: Vec<_> = c.input.iter().map(|&(s, t)| m.map(s, t).map(|o| (o.seq_no, o.timestamp))).collect();
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn rebase_continues_after_last_packet() {
        let mut m = Munger::new(100, 1000);
        assert_eq!(m.map(500, 90_000).unwrap().seq_no, 100);
        assert_eq!(m.map(501, 93_000).unwrap().seq_no, 101);
        // New source with unrelated numbering.
        m.rebase(3000);
        let first = m.map(7, 5).unwrap();
        assert_eq!(first, Munged { seq_no: 102, timestamp: 1000 + 3000 + 3000 });
        let next = m.map(8, 3005).unwrap();
        assert_eq!(next, Munged { seq_no: 103, timestamp: 1000 + 3000 + 3000 + 3000 });
        // Packets of the new source from before its first one are dropped.
        assert_eq!(m.map(6, 0), None);
    }

    #[test]
    fn skipped_padding_leaves_no_gap() {
        let mut m = Munger::new(1, 0);
        let seq = |m: &mut Munger, s| m.map(s, 0).map(|o| o.seq_no);
        assert_eq!(seq(&mut m, 100), Some(1));
        assert_eq!(seq(&mut m, 101), Some(2));
        m.skip(102);
        m.skip(103);
        assert_eq!(seq(&mut m, 104), Some(3), "two padding packets closed up");
        // A reordered media packet from before the padding keeps its own place.
        m.skip(106);
        assert_eq!(seq(&mut m, 107), Some(5));
        assert_eq!(seq(&mut m, 105), Some(4), "late packet from before the skip");
        // Skipping an old sequence number changes nothing.
        m.skip(90);
        assert_eq!(seq(&mut m, 108), Some(6));
        // Before the start: dropped.
        assert_eq!(seq(&mut m, 99), None);
    }
}
