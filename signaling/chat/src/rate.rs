//! Token buckets: a rate with a burst, sans-I/O (the caller passes the time). The chat [`crate::gate`] limits each
//! identity's messages with one; the server's limits (joins, API calls) keep a bounded table of them.

use std::time::{Duration, Instant};

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// The most a bucket holds (the burst a quiet client may spend at once).
    pub burst: f64,
}

impl Rate {
    /// `per_sec` with a burst of `burst` (at least one token).
    pub fn new(per_sec: f64, burst: f64) -> Rate {
        Rate { per_sec, burst: burst.max(1.0) }
    }

    /// How long an empty bucket takes to fill up again.
    pub fn refill_time(&self) -> Duration {
        Duration::from_secs_f64((self.burst / self.per_sec).min(86_400.0))
    }
}

/// A refusal: no token now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When the next token will be there.
    pub retry_after: Duration,
}

impl Refused {
    /// [`Refused::retry_after`] in whole seconds, rounded up (at least 1), for a `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        (self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)).max(1)
    }
}

/// One token bucket. Starts full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket { tokens: rate.burst, at: now }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        // A clock that went backwards (it does not, with Instant, but callers pass their own) refills nothing.
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.at = self.at.max(now);
    }

    /// Take one token at `now`, or say when the next one comes.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Refused> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        // At most a day: a tiny configured rate must not overflow a Duration.
        Err(Refused { retry_after: Duration::from_secs_f64((missing / rate.per_sec).min(86_400.0)) })
    }

    /// Would this bucket be full at `now` (so forgetting it changes nothing)?
    pub fn is_idle(&self, rate: Rate, now: Instant) -> bool {
        now.saturating_duration_since(self.at) >= rate.refill_time()
            || self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate.per_sec >= rate.burst
    }
}
