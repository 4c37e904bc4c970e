//! Forwarding delay: how long the server holds a packet, from the kernel's arrival stamp on the publisher's datagram
//! to the system call that sends a subscriber's copy.
//!
//! Why: a subscriber's end-to-end delay mixes the publisher's network, the server and the subscriber's network; an
//! operator (and the target, "p99 added latency at 1 → 100 ≤ 2 ms") needs the server's own share. Both ends
//! of it are taken where nothing else can add to it: the kernel stamps the datagram as it reaches the socket
//! (`SO_TIMESTAMPNS`, [`crate::udp_recv`]), and the send is timed when `sendmmsg` returns ([`crate::udp_send`]).
//! Between them are the worker's channel, str0m's receive path, the fan-out, the subscriber's pacer and the batch.
//!
//! How a sent datagram finds its arrival: when a down-track writes a packet it notes `(SSRC, sequence number) →
//! arrival` in [`SendStamps`], a ring per outgoing stream, for one packet in [`SAMPLE`] (by sequence number); when the peer transmits, the datagram's RTP header (left
//! in the clear by SRTP) names the slot, which is taken (a retransmission of the same number finds it empty and is
//! not counted). RTCP, STUN, DTLS, padding and retransmissions on their own SSRC carry no stamp.
//!
//! [`DelayBuckets`] is the histogram, in fixed buckets a Prometheus histogram can show as they are.

use std::time::{Duration, Instant};

/// Upper bounds of the histogram's buckets, in microseconds; a last bucket holds everything above.
pub const BUCKET_BOUNDS_US: [u64; 16] =
    [100, 250, 500, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000, 100_000, 250_000];

/// Number of buckets, the overflow bucket included.
pub const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

/// Counts of delays per bucket ([`BUCKET_BOUNDS_US`]; not cumulative) and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayBuckets {
    pub counts: [u64; BUCKETS],
    /// The delays added up, in microseconds.
    pub sum_us: u64,
}

impl DelayBuckets {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKET_BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(BUCKET_BOUNDS_US.len());
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &DelayBuckets) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// The counts since `earlier` (a snapshot of the same growing histogram).
    pub fn since(&self, earlier: &DelayBuckets) -> DelayBuckets {
        let mut d = DelayBuckets { sum_us: self.sum_us.saturating_sub(earlier.sum_us), ..DelayBuckets::default() };
        for (i, v) in d.counts.iter_mut().enumerate() {
            *v = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        d
    }

    /// The upper bound (µs) of the bucket holding the nearest-rank percentile `p` (0..=100): the delay is at most
    /// this. `None` without samples, `Some(u64::MAX)` in the overflow bucket.
    pub fn percentile_bound_us(&self, p: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BUCKET_BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }

    /// The share of samples at most `bound_us` (which must be one of [`BUCKET_BOUNDS_US`] to be exact).
    pub fn share_within_us(&self, bound_us: u64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let within: u64 =
            BUCKET_BOUNDS_US.iter().zip(self.counts.iter()).take_while(|(b, _)| **b <= bound_us).map(|(_, c)| c).sum();
        Some(within as f64 / n as f64)
    }
}

/// One packet in `SAMPLE`, by outgoing sequence number, is timed: plenty for percentiles (thousands a second under
/// load), at an eighth of the cost (a profile of the audio room put noting every packet at 1.6 % of the CPU: a
/// search through the peer's streams and a write to a cold cache line per packet).
pub const SAMPLE: u16 = 8;

/// Slots per outgoing stream; with [`SAMPLE`] they cover 1,024 sequence numbers: about 9 s of a 1 Mbit/s layer,
/// longer than str0m's pacer keeps a packet (2 s).
const RING: usize = 128;

/// One outgoing stream's ring: slot `seq / SAMPLE % RING` holds `seq` in its top 16 bits and the arrival, in
/// microseconds after [`SendStamps`]'s base, in the rest; 0 is empty.
struct Ring {
    ssrc: u32,
    slots: Box<[u64; RING]>,
}

/// Arrival stamps of the packets a peer has written and not yet sent, by outgoing SSRC and sequence number.
pub struct SendStamps {
    base: Instant,
    rings: Vec<Ring>,
}

/// Outgoing streams remembered per peer (a peer that subscribed to more over its life forgets the oldest).
const MAX_STREAMS: usize = 32;

const SEQ_SHIFT: u32 = 48;
const TIME_MASK: u64 = (1 << SEQ_SHIFT) - 1;

impl SendStamps {
    /// Stamps are kept relative to `base` (no arrival before it is noted).
    pub fn new(base: Instant) -> Self {
        SendStamps { base, rings: Vec::new() }
    }

    /// A packet `(ssrc, seq)` that arrived at `arrival` was written toward this peer (kept if `seq` is sampled).
    pub fn note(&mut self, ssrc: u32, seq: u16, arrival: Instant) {
        if !seq.is_multiple_of(SAMPLE) {
            return;
        }
        let Some(since) = arrival.checked_duration_since(self.base) else { return };
        // +1: a packet arriving exactly at the base must not read as an empty slot. 2^48 µs is nine years.
        let t = (u64::try_from(since.as_micros()).unwrap_or(TIME_MASK) + 1).min(TIME_MASK);
        let ring = match self.rings.iter().position(|r| r.ssrc == ssrc) {
            Some(i) => &mut self.rings[i],
            None => {
                if self.rings.len() >= MAX_STREAMS {
                    // Streams of down-tracks long gone; the oldest goes.
                    self.rings.remove(0);
                }
                self.rings.push(Ring { ssrc, slots: Box::new([0; RING]) });
                self.rings.last_mut().expect("just pushed")
            }
        };
        ring.slots[slot_of(seq)] = (u64::from(seq) << SEQ_SHIFT) | t;
    }

    /// The arrival of the packet in `datagram`, if it is an RTP packet this peer noted and has not sent before; its
    /// slot is emptied.
    pub fn take(&mut self, datagram: &[u8]) -> Option<Instant> {
        let (ssrc, seq) = rtp_ssrc_seq(datagram)?;
        if !seq.is_multiple_of(SAMPLE) {
            return None;
        }
        let ring = self.rings.iter_mut().find(|r| r.ssrc == ssrc)?;
        let slot = &mut ring.slots[slot_of(seq)];
        let v = std::mem::take(slot);
        if v == 0 || (v >> SEQ_SHIFT) as u16 != seq {
            // Empty, or a newer packet's: put the newer one back.
            *slot = v;
            return None;
        }
        Some(self.base + Duration::from_micros((v & TIME_MASK) - 1))
    }
}

fn slot_of(seq: u16) -> usize {
    usize::from(seq / SAMPLE) % RING
}

/// The SSRC and sequence number of an RTP (or SRTP) packet; `None` for RTCP and anything else (RFC 7983's first
/// byte 128–191, then RFC 5761: RTCP packet types 192–223 in the second byte).
fn rtp_ssrc_seq(d: &[u8]) -> Option<(u32, u16)> {
    if d.len() < 12 || d[0] & 0xC0 != 0x80 || (192..=223).contains(&d[1]) {
        return None;
    }
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    Some((ssrc, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32, seq: u16, marker_pt: u8) -> Vec<u8> {
        let mut d = vec![0x80, marker_pt];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 1]);
        d.extend_from_slice(&ssrc.to_be_bytes());
        d.extend_from_slice(&[0xAB; 100]);
        d
    }

    #[test]
    fn a_sent_packet_finds_its_arrival_once() {
        let t0 = Instant::now();
        let mut s = SendStamps::new(t0);
        s.note(7, 96, t0 + Duration::from_micros(1500));
        s.note(7, 104, t0);
        s.note(9, 96, t0 + Duration::from_millis(3));
        assert_eq!(s.take(&rtp(7, 96, 96)), Some(t0 + Duration::from_micros(1500)));
        assert_eq!(s.take(&rtp(7, 96, 96)), None, "a resend of the same number is not counted again");
        assert_eq!(s.take(&rtp(7, 104, 96 | 0x80)), Some(t0), "marker bit set, arrival at the base");
        assert_eq!(s.take(&rtp(9, 96, 96)), Some(t0 + Duration::from_millis(3)));
        assert_eq!(s.take(&rtp(8, 96, 96)), None, "an SSRC never noted (RTX, padding)");
    }

    #[test]
    fn only_sampled_sequence_numbers_are_timed() {
        let t0 = Instant::now();
        let mut s = SendStamps::new(t0);
        for seq in 0..64u16 {
            s.note(7, seq, t0);
        }
        let timed = (0..64u16).filter(|seq| s.take(&rtp(7, *seq, 96)).is_some()).count();
        assert_eq!(timed, 64 / usize::from(SAMPLE));
    }

    #[test]
    fn rtcp_stun_and_short_datagrams_carry_no_stamp() {
        let t0 = Instant::now();
        let mut s = SendStamps::new(t0);
        // An RTCP receiver report whose "sequence" and "SSRC" bytes would match a noted packet.
        s.note(7, 8, t0);
        let rr = rtp(7, 8, 201);
        assert_eq!(s.take(&rr), None);
        assert_eq!(s.take(&[0x00, 0x01, 0x00, 0x00]), None, "STUN");
        assert_eq!(s.take(&[0x16, 0xfe, 0xfd]), None, "DTLS");
        assert_eq!(s.take(&rtp(7, 8, 96)[..11]), None, "shorter than a header");
        assert_eq!(s.take(&rtp(7, 8, 96)), Some(t0), "the slot is still there for the RTP packet");
    }

    #[test]
    fn a_slot_reused_by_a_newer_packet_is_not_matched_by_the_older_number() {
        let t0 = Instant::now();
        let mut s = SendStamps::new(t0);
        let span = (RING * usize::from(SAMPLE)) as u16;
        s.note(7, 8, t0);
        s.note(7, 8 + span, t0 + Duration::from_millis(1));
        assert_eq!(s.take(&rtp(7, 8, 96)), None, "overwritten (the old packet was never sent)");
        assert_eq!(s.take(&rtp(7, 8 + span, 96)), Some(t0 + Duration::from_millis(1)));
        s.note(7, 8 + span, t0);
        for ssrc in 100..100 + MAX_STREAMS as u32 {
            s.note(ssrc, 16, t0);
        }
        assert_eq!(s.take(&rtp(7, 8 + span, 96)), None, "the oldest stream was forgotten");
        assert_eq!(s.take(&rtp(100, 16, 96)), Some(t0));
    }

    #[test]
    fn an_arrival_before_the_base_is_not_noted() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut s = SendStamps::new(t0);
        s.note(7, 8, t0 - Duration::from_millis(1));
        assert_eq!(s.take(&rtp(7, 8, 96)), None);
    }

    #[test]
    fn buckets_give_bounds_shares_and_differences() {
        let mut h = DelayBuckets::default();
        assert_eq!(h.percentile_bound_us(50.0), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(400));
        }
        h.record(Duration::from_micros(1_800));
        h.record(Duration::from_secs(2));
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile_bound_us(50.0), Some(500));
        assert_eq!(h.percentile_bound_us(99.0), Some(2_000));
        assert_eq!(h.percentile_bound_us(100.0), Some(u64::MAX));
        assert_eq!(h.share_within_us(2_000), Some(0.99));
        assert_eq!(h.share_within_us(500), Some(0.98));
        let before = h;
        h.record(Duration::from_micros(100));
        h.record(Duration::ZERO);
        let d = h.since(&before);
        assert_eq!(d.count(), 2);
        assert_eq!(d.counts[0], 2, "both at most 100 µs");
        assert_eq!(d.sum_us, 100);
        assert_eq!(before.sum_us, 98 * 400 + 1_800 + 2_000_000);
        let mut sum = before;
        sum.add(&d);
        assert_eq!(sum, h);
    }
}
