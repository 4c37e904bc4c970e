//! Delay samples and their percentiles.
//!
//! The video receiver measures one-way delay per frame and the audio receiver a relative delay
//! per packet; both report p50/p99. Keeping every sample (bounded) and sorting on demand is
//! exact and cheap at test-client rates (30 frames or 50 packets a second), so no sketch is used.
//! The load generator sees millions of packets a run: it uses [`Histogram`], fixed 1 µs buckets.

/// Upper bound on stored samples: about 9 hours of video at 30 fps. Later samples are dropped,
/// so a runaway test cannot grow memory without bound.
const MAX_SAMPLES: usize = 1_000_000;

/// A bounded list of delay samples, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct DelaySamples {
    samples: Vec<f64>,
}

impl DelaySamples {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample; ignored once [`MAX_SAMPLES`] are stored or if it is not finite.
    pub fn record(&mut self, ms: f64) {
        if self.samples.len() < MAX_SAMPLES && ms.is_finite() {
            self.samples.push(ms);
        }
    }

    /// Number of stored samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The nearest-rank percentile `p` (0..=100), or `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        percentile(&self.samples, p)
    }

    /// Appends the samples of `other` (up to the bound).
    pub fn extend(&mut self, other: &DelaySamples) {
        for &s in &other.samples {
            self.record(s);
        }
    }

    /// Subtracts the smallest sample from every sample and returns the shifted copy, so the
    /// fastest sample becomes zero (used for relative delays).
    pub fn relative_to_min(&self) -> DelaySamples {
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        DelaySamples { samples: self.samples.iter().map(|s| s - min).collect() }
    }
}

/// Nearest-rank percentile of `values` (unsorted), rounded to 0.001 ms so reports stay readable.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(sorted.len() - 1);
    Some((sorted[index] * 1000.0).round() / 1000.0)
}

/// Delays in 1 µs buckets up to [`Histogram::RANGE`], longer ones in one overflow bucket: constant memory and an
/// exact percentile (to the microsecond) whatever the packet count.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    over: u64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: vec![0; Self::RANGE.as_micros() as usize], over: 0, count: 0 }
    }
}

impl Histogram {
    /// The longest delay kept to the microsecond.
    pub const RANGE: std::time::Duration = std::time::Duration::from_millis(100);

    pub fn record(&mut self, d: std::time::Duration) {
        self.count += 1;
        match self.buckets.get_mut(d.as_micros() as usize) {
            Some(b) => *b += 1,
            None => self.over += 1,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The nearest-rank percentile `p` (0..=100) in ms; `None` without samples; [`Self::RANGE`] when it falls in
    /// the overflow bucket.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (us, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(us as f64 / 1000.0);
            }
        }
        Some(Self::RANGE.as_secs_f64() * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_to_the_microsecond() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile_ms(50.0), None);
        for us in 1..=100u64 {
            h.record(std::time::Duration::from_micros(us * 10));
        }
        assert_eq!(h.percentile_ms(50.0), Some(0.5));
        assert_eq!(h.percentile_ms(99.0), Some(0.99));
        h.record(std::time::Duration::from_secs(2));
        assert_eq!(h.count(), 101);
        assert_eq!(h.percentile_ms(100.0), Some(100.0));
    }

    #[test]
    fn nearest_rank() {
        let cases: &[(&[f64], f64, Option<f64>)] = &[
            (&[], 50.0, None),
            (&[5.0], 50.0, Some(5.0)),
            (&[5.0], 99.0, Some(5.0)),
            (&[3.0, 1.0, 2.0, 4.0], 50.0, Some(2.0)),
            (&[3.0, 1.0, 2.0, 4.0], 99.0, Some(4.0)),
            (&[3.0, 1.0, 2.0, 4.0], 0.0, Some(1.0)),
            (&[1.23456], 50.0, Some(1.235)),
        ];
        for (values, p, expected) in cases {
            assert_eq!(percentile(values, *p), *expected, "{values:?} p{p}");
        }
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
        assert_eq!(percentile(&hundred, 50.0), Some(50.0));
    }

    #[test]
    fn relative() {
        let mut d = DelaySamples::new();
        for v in [10.0, 12.0, 11.0, f64::NAN] {
            d.record(v);
        }
        assert_eq!(d.len(), 3);
        let r = d.relative_to_min();
        assert_eq!(r.percentile(0.0), Some(0.0));
        assert_eq!(r.percentile(100.0), Some(2.0));
    }
}
