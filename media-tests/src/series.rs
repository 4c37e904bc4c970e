//! Per-time series of one received video track, in fixed bins (500 ms), for the scenario plot: received bitrate,
//! packet loss and frame delay. Sans-I/O: fed with arrival times (µs since the UNIX epoch), bounded in size.

use serde::{Deserialize, Serialize};

use crate::seq::Unwrapper;

/// The width of a bin, ms.
pub const BIN_MS: u64 = 500;
/// At most this many bins are kept (10 min at 500 ms); later arrivals are not binned.
pub const MAX_BINS: usize = 1200;

#[derive(Debug, Clone, Default)]
struct Bin {
    bytes: u64,
    packets: u64,
    /// Packets that arrived above the highest sequence number so far (not retransmissions or reordered ones).
    in_order: u64,
    /// Extended highest sequence number at the end of the bin.
    highest: Option<i64>,
    delays_ms: Vec<f64>,
}

/// Bins RTP arrivals and frame delays by arrival time. Loss per bin, with
/// `expected = highest sequence number at the end of the bin − at the end of the bin before`:
/// - `loss_pct`, before repair: `(expected − packets that arrived above the highest sequence number so far) /
///   expected` — what the network lost (a retransmission, unwrapped to its original sequence number, and a
///   reordered packet are not counted);
/// - `residual_loss_pct`, after repair: RFC 3550's interval loss, `expected − all packets received in the bin`
///   (retransmissions count in the bin they arrive in), clamped to 0..100 %.
#[derive(Debug, Clone, Default)]
pub struct SeriesBinner {
    start_ms: Option<u64>,
    bins: Vec<Bin>,
    seq: Unwrapper,
    highest: Option<i64>,
    /// Highest sequence number before the first bin (the first packet's − 1).
    base: Option<i64>,
}

/// The binned series: bin `i` covers `start_ms + i × bin_ms ..` (ms since the UNIX epoch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Start of the first bin, ms since the UNIX epoch (a multiple of `bin_ms`).
    pub start_ms: u64,
    /// Bin width, ms.
    pub bin_ms: u64,
    /// Received RTP bitrate (payload + 12-byte header), kbit/s.
    pub kbps: Vec<f64>,
    /// Packet loss before repair, % (null: no packet expected).
    pub loss_pct: Vec<Option<f64>>,
    /// Packet loss after repair (RFC 3550 interval loss), % (null: no packet expected).
    #[serde(default)]
    pub residual_loss_pct: Vec<Option<f64>>,
    /// Median one-way delay of the intact frames completed in the bin, ms (null: none).
    pub delay_ms_p50: Vec<Option<f64>>,
}

impl SeriesBinner {
    /// An empty binner.
    pub fn new() -> Self {
        Self::default()
    }

    fn bin(&mut self, now_us: u64) -> Option<&mut Bin> {
        let now_ms = now_us / 1000;
        let start = *self.start_ms.get_or_insert(now_ms - now_ms % BIN_MS);
        let i = (now_ms.checked_sub(start)? / BIN_MS) as usize;
        if i >= MAX_BINS {
            return None;
        }
        if self.bins.len() <= i {
            self.bins.resize(i + 1, Bin::default());
        }
        Some(&mut self.bins[i])
    }

    /// One RTP packet (after RTX unwrapping) of `size` bytes on the wire (header + payload) arrived.
    pub fn on_packet(&mut self, sequence_number: u16, size: usize, now_us: u64) {
        let ext = self.seq.unwrap_u16(sequence_number);
        if self.base.is_none() {
            self.base = Some(ext - 1);
        }
        let in_order = self.highest.is_none_or(|h| ext > h);
        let highest = self.highest.map_or(ext, |h| h.max(ext));
        self.highest = Some(highest);
        if let Some(bin) = self.bin(now_us) {
            bin.bytes += size as u64;
            bin.packets += 1;
            bin.in_order += u64::from(in_order);
            bin.highest = Some(highest);
        }
    }

    /// An intact frame with this one-way delay completed.
    pub fn on_frame_delay(&mut self, delay_ms: f64, now_us: u64) {
        if let Some(bin) = self.bin(now_us) {
            // 30 frames/s: ~15 a bin; bounded for safety.
            if bin.delays_ms.len() < 1024 {
                bin.delays_ms.push(delay_ms);
            }
        }
    }

    /// The series so far.
    pub fn series(&self) -> Series {
        let mut s = Series { start_ms: self.start_ms.unwrap_or(0), bin_ms: BIN_MS, ..Series::default() };
        let mut prev = self.base;
        for bin in &self.bins {
            s.kbps.push(bin.bytes as f64 * 8.0 / BIN_MS as f64);
            let loss = |received: u64| match (prev, bin.highest) {
                (Some(p), Some(h)) if h > p => {
                    let expected = (h - p) as f64;
                    Some((100.0 * (expected - received as f64) / expected).clamp(0.0, 100.0))
                }
                _ => None,
            };
            s.loss_pct.push(loss(bin.in_order));
            s.residual_loss_pct.push(loss(bin.packets));
            if bin.highest.is_some() {
                prev = bin.highest;
            }
            let mut d = bin.delays_ms.clone();
            d.sort_by(f64::total_cmp);
            s.delay_ms_p50.push((!d.is_empty()).then(|| d[(d.len() - 1) / 2]));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_bitrate_loss_and_delay() {
        let mut b = SeriesBinner::new();
        let t0 = 1_000_000_250_000u64; // 1_000_000_250 ms: 250 ms into a bin
                                       // Bin 0 (250 ms of it): 10 packets of 1000 bytes, seq 65530..=65535 and 0..=3 (wraps), none lost.
        for i in 0..10u64 {
            b.on_packet((65530 + i as u32) as u16, 1000, t0 + i * 20_000);
        }
        b.on_frame_delay(30.0, t0);
        b.on_frame_delay(10.0, t0 + 1000);
        b.on_frame_delay(20.0, t0 + 2000);
        // Bin 1: seq 4..=13 expected, 4 and 5 lost: 8 packets.
        for s in 6..14u16 {
            b.on_packet(s, 500, t0 + 300_000 + u64::from(s) * 1000);
        }
        // Bin 2: nothing. Bin 3: the retransmitted 4 and 5 (no new packet: nothing expected) and 14.
        b.on_packet(4, 500, t0 + 1_300_000);
        b.on_packet(5, 500, t0 + 1_310_000);
        b.on_packet(14, 500, t0 + 1_320_000);
        let s = b.series();
        assert_eq!(s.start_ms, 1_000_000_000);
        assert_eq!(s.bin_ms, 500);
        assert_eq!(s.kbps, vec![10_000.0 * 8.0 / 500.0, 4_000.0 * 8.0 / 500.0, 0.0, 1_500.0 * 8.0 / 500.0]);
        assert_eq!(s.loss_pct, vec![Some(0.0), Some(20.0), None, Some(0.0)], "14 in order: 0 %");
        assert_eq!(s.residual_loss_pct, vec![Some(0.0), Some(20.0), None, Some(0.0)], "3 for 1 expected: 0 %");
        // Bin 4: 15..=22 expected, 15 and 16 lost, 17..=22 arrive, then 15 retransmitted: 25 % lost before
        // repair, 12.5 % after.
        let mut b2 = b.clone();
        for s in 17..=22u16 {
            b2.on_packet(s, 100, t0 + 1_800_000);
        }
        b2.on_packet(15, 100, t0 + 1_810_000);
        let s2 = b2.series();
        assert_eq!((s2.loss_pct[4], s2.residual_loss_pct[4]), (Some(25.0), Some(12.5)));
        assert_eq!(s.delay_ms_p50, vec![Some(20.0), None, None, None]);
    }

    #[test]
    fn is_bounded() {
        let mut b = SeriesBinner::new();
        for i in 0..(MAX_BINS as u64 + 50) {
            b.on_packet(i as u16, 100, i * BIN_MS * 1000);
        }
        assert_eq!(b.series().kbps.len(), MAX_BINS);
        // A packet from before the first bin (clock step) is not binned.
        let mut b = SeriesBinner::new();
        b.on_packet(1, 100, 10_000_000);
        b.on_packet(2, 100, 1_000_000);
        assert_eq!(b.series().kbps.len(), 1);
    }
}
