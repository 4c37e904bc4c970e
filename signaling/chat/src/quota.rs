//! Per-room chat quotas for huge rooms: a token bucket with a share reserved for high-priority messages.
//!
//! A live room of 10,000 people cannot show everyone's every message, and it must not let a flood of likes or
//! danmaku crowd out the host's announcement. Each room gets `rate` messages per second with a burst of one
//! second's worth. The bucket is shared, but not equally:
//!
//! - **high** (system/admin messages, allowlisted identities and kinds) always passes. It still takes a token — the
//!   bucket may go into debt down to minus one burst — so the others yield to it;
//! - **normal** passes only while more than the reserved share (`high_reserve`, default 20 %) of the burst is left:
//!   the last tokens are kept for high priority;
//! - **low** (likes, danmaku) passes only while more than `low_floor` (default 50 %) is left: it is the first to go.
//!
//! Refused normal messages are answered `quota_exceeded` (nothing stored; the client's outbox retries later);
//! refused low ones are shed. Sans-I/O: the caller passes the time.

use std::time::Instant;

use super::Priority;

/// Quota settings of every room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaConfig {
    /// Messages per second a room takes, all priorities together.
    pub rate: f64,
    /// Share of the burst only high priority may use.
    pub high_reserve: f64,
    /// Low priority passes only above this share of the burst.
    pub low_floor: f64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig { rate: 200.0, high_reserve: 0.2, low_floor: 0.5 }
    }
}

/// One room's bucket. See the module doc.
#[derive(Debug, Clone)]
pub struct RoomQuota {
    tokens: f64,
    at: Option<Instant>,
}

impl Default for RoomQuota {
    fn default() -> Self {
        RoomQuota { tokens: f64::NAN, at: None }
    }
}

impl RoomQuota {
    /// May a message of `priority` pass at `now`? Takes a token when it does.
    pub fn admit(&mut self, config: &QuotaConfig, priority: Priority, now: Instant) -> bool {
        let burst = config.rate.max(1.0);
        if self.tokens.is_nan() {
            self.tokens = burst;
        }
        if let Some(at) = self.at {
            self.tokens = (self.tokens + now.saturating_duration_since(at).as_secs_f64() * config.rate).min(burst);
        }
        self.at = Some(now);
        let floor = match priority {
            Priority::High => {
                self.tokens = (self.tokens - 1.0).max(-burst);
                return true;
            }
            Priority::Normal => config.high_reserve * burst,
            Priority::Low => config.low_floor.max(config.high_reserve) * burst,
        };
        if self.tokens - 1.0 >= floor {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Tokens left (for tests and metrics).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> QuotaConfig {
        QuotaConfig { rate: 100.0, high_reserve: 0.2, low_floor: 0.5 }
    }

    #[test]
    fn low_goes_first_normal_keeps_the_reserve_and_high_always_passes() {
        let (c, t0) = (config(), Instant::now());
        let mut q = RoomQuota::default();
        let low = (0..100).filter(|_| q.admit(&c, Priority::Low, t0)).count();
        assert_eq!(low, 50, "low stops at half the burst");
        let normal = (0..100).filter(|_| q.admit(&c, Priority::Normal, t0)).count();
        assert_eq!(normal, 30, "normal stops at the 20 % reserve");
        let high = (0..100).filter(|_| q.admit(&c, Priority::High, t0)).count();
        assert_eq!(high, 100, "high is never refused");
        assert!(!q.admit(&c, Priority::Normal, t0));
        // The debt is paid back over time before the others pass again.
        // 80 tokens of debt: half a second later (-30) normal still waits; a second later (+20) it passes.
        assert!(!q.admit(&c, Priority::Normal, t0 + Duration::from_millis(500)));
        assert!(q.admit(&c, Priority::Normal, t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn a_steady_flood_gets_the_rate_and_high_still_passes() {
        let (c, t0) = (config(), Instant::now());
        let mut q = RoomQuota::default();
        let (mut low_ok, mut high_ok, mut normal_ok) = (0, 0, 0);
        // 10 s of 1,000 low/s, 50 normal/s and 5 high/s.
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            low_ok += usize::from(q.admit(&c, Priority::Low, now));
            if ms % 20 == 0 {
                normal_ok += usize::from(q.admit(&c, Priority::Normal, now));
            }
            if ms % 200 == 0 {
                high_ok += usize::from(q.admit(&c, Priority::High, now));
            }
        }
        assert_eq!(high_ok, 50, "every high-priority message");
        assert!(normal_ok >= 495, "normal traffic under the rate passes: {normal_ok}");
        let total = (low_ok + high_ok + normal_ok) as f64;
        assert!(total <= 100.0 * 10.0 + 100.0, "the room stays within rate plus one burst: {total}");
        assert!(low_ok > 0, "low gets what is left");
    }
}
