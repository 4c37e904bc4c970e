//! Unwrapping of RTP's wrapping counters.
//!
//! RTP sequence numbers are 16 bits and timestamps 32 bits; both wrap within minutes or hours of
//! a normal call, and both arrive reordered. Every receiver in this crate (the VP8 frame
//! assembler, the Opus receiver, the delay estimators) needs them on a straight line to order
//! packets and to measure gaps, so the unwrapping lives here once, with its wraparound tests.

/// Extends a wrapping `u16`/`u32` counter to an `i64` that keeps increasing across wraps.
///
/// Each value is placed at the position closest to the previous one (within half the counter's
/// range), so reordered packets land before it and wrapped ones after it. The first value seen
/// maps to itself.
#[derive(Debug, Clone, Default)]
pub struct Unwrapper {
    last: Option<i64>,
}

impl Unwrapper {
    /// A fresh unwrapper with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwraps a 16-bit RTP sequence number.
    pub fn unwrap_u16(&mut self, value: u16) -> i64 {
        self.unwrap_bits(u64::from(value), 16)
    }

    /// Unwraps a 32-bit RTP timestamp.
    pub fn unwrap_u32(&mut self, value: u32) -> i64 {
        self.unwrap_bits(u64::from(value), 32)
    }

    fn unwrap_bits(&mut self, value: u64, bits: u32) -> i64 {
        let range = 1i64 << bits;
        let value = value as i64;
        let Some(last) = self.last else {
            self.last = Some(value);
            return value;
        };
        let last_low = last.rem_euclid(range);
        let mut delta = value - last_low;
        if delta > range / 2 {
            delta -= range;
        } else if delta < -(range / 2) {
            delta += range;
        }
        let unwrapped = last + delta;
        // Only move forward: a late packet must not drag the reference backwards, or a burst of
        // late packets near a wrap would flip the next on-time packet a whole cycle ahead.
        if unwrapped > last {
            self.last = Some(unwrapped);
        }
        unwrapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers() {
        // (input sequence, expected unwrapped values)
        let cases: &[(&[u16], &[i64])] = &[
            (&[1, 2, 3], &[1, 2, 3]),
            (&[65534, 65535, 0, 1], &[65534, 65535, 65536, 65537]),
            (&[65535, 1, 0, 2], &[65535, 65537, 65536, 65538]),
            (&[0, 65535], &[0, -1]),
            (&[10, 8, 9, 11], &[10, 8, 9, 11]),
            (&[100, 30000, 60000, 10000], &[100, 30000, 60000, 75536]),
            (&[100, 40000], &[100, -25536]),
        ];
        for (input, expected) in cases {
            let mut u = Unwrapper::new();
            let got: Vec<i64> = input.iter().map(|&s| u.unwrap_u16(s)).collect();
            assert_eq!(&got[..], *expected, "input {input:?}");
        }
    }

    #[test]
    fn timestamps() {
        let cases: &[(&[u32], &[i64])] = &[
            (&[u32::MAX - 2999, 0x0000_0bb8], &[4_294_964_296, 4_294_970_296]),
            (&[3000, 0, 6000], &[3000, 0, 6000]),
            (&[5, u32::MAX], &[5, -1]),
        ];
        for (input, expected) in cases {
            let mut u = Unwrapper::new();
            let got: Vec<i64> = input.iter().map(|&s| u.unwrap_u32(s)).collect();
            assert_eq!(&got[..], *expected, "input {input:?}");
        }
    }
}
