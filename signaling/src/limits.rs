//! Rate limits: token buckets, one per key (a client IP, an identity), in a table whose size is bounded.
//!
//! Every request that costs the server something (a join, an HTTP API call) first takes a token from its key's
//! bucket. A bucket holds at most `burst` tokens and refills at `per_sec`; an empty bucket refuses, and says how
//! long until the next token ([`Refused::retry_after`]), which becomes the `Retry-After` header or the `error`
//! message's text.
//!
//! The table is bounded, because the keys come from the network: an attacker with many addresses must not grow it
//! without limit. When it is full, keys whose bucket has refilled (idle: they would start full anyway) are
//! evicted; if every key is still active, a key not in the table shares one overflow bucket with every other such
//! key. New clients then get a trickle of capacity together, and a flood from fresh addresses cannot buy fresh
//! buckets.
//!
//! Everything here is sans-I/O: the caller passes `now`, and the tests drive a simulated clock. The `[limits]`
//! table is read and checked here too ([`RawLimitsConfig`] → [`LimitsConfig`]); `config` only merges it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::bail;
use serde::Deserialize;

pub use courier_chat::rate::{Rate, Refused, TokenBucket};

/// The raw `[limits]` table: caps, rate limits and token clock skew. A rate of 0 turns that limit off.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitsConfig {
    /// Rooms on this server at once.
    pub max_rooms: Option<usize>,
    /// Participants in one room.
    pub max_participants: Option<usize>,
    /// Tracks one participant may publish.
    pub max_tracks_per_participant: Option<usize>,
    /// Allowed clock skew between a token's minter and this server, seconds.
    pub token_leeway_secs: Option<u64>,
    /// Joins per second from one IP address (burst: `join_burst_per_ip`).
    pub join_per_ip_per_sec: Option<f64>,
    pub join_burst_per_ip: Option<f64>,
    /// Joins per second of one identity.
    pub join_per_identity_per_sec: Option<f64>,
    pub join_burst_per_identity: Option<f64>,
    /// HTTP API requests per second from one IP address.
    pub api_per_ip_per_sec: Option<f64>,
    pub api_burst_per_ip: Option<f64>,
    /// HTTP API requests per second of one identity (the subject of the request's bearer token).
    pub api_per_identity_per_sec: Option<f64>,
    pub api_burst_per_identity: Option<f64>,
    /// Keys (addresses, identities) each rate limiter remembers.
    pub rate_limit_keys: Option<usize>,
    /// The largest HTTP request body, bytes.
    pub max_body_bytes: Option<usize>,
}

impl RawLimitsConfig {
    pub(crate) fn over(self, lower: RawLimitsConfig) -> RawLimitsConfig {
        RawLimitsConfig {
            max_rooms: self.max_rooms.or(lower.max_rooms),
            max_participants: self.max_participants.or(lower.max_participants),
            max_tracks_per_participant: self.max_tracks_per_participant.or(lower.max_tracks_per_participant),
            token_leeway_secs: self.token_leeway_secs.or(lower.token_leeway_secs),
            join_per_ip_per_sec: self.join_per_ip_per_sec.or(lower.join_per_ip_per_sec),
            join_burst_per_ip: self.join_burst_per_ip.or(lower.join_burst_per_ip),
            join_per_identity_per_sec: self.join_per_identity_per_sec.or(lower.join_per_identity_per_sec),
            join_burst_per_identity: self.join_burst_per_identity.or(lower.join_burst_per_identity),
            api_per_ip_per_sec: self.api_per_ip_per_sec.or(lower.api_per_ip_per_sec),
            api_burst_per_ip: self.api_burst_per_ip.or(lower.api_burst_per_ip),
            api_per_identity_per_sec: self.api_per_identity_per_sec.or(lower.api_per_identity_per_sec),
            api_burst_per_identity: self.api_burst_per_identity.or(lower.api_burst_per_identity),
            rate_limit_keys: self.rate_limit_keys.or(lower.rate_limit_keys),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
        }
    }
}

/// The validated `[limits]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    pub max_rooms: usize,
    pub max_participants: usize,
    pub max_tracks_per_participant: usize,
    pub token_leeway_secs: u64,
    /// `None`: that limit is off.
    pub join_per_ip: Option<Rate>,
    pub join_per_identity: Option<Rate>,
    pub api_per_ip: Option<Rate>,
    pub api_per_identity: Option<Rate>,
    pub rate_limit_keys: usize,
    pub max_body_bytes: usize,
}

impl LimitsConfig {
    pub(crate) fn resolve(raw: RawLimitsConfig) -> anyhow::Result<LimitsConfig> {
        let cap = |name: &str, v: Option<usize>, default: usize| -> anyhow::Result<usize> {
            let v = v.unwrap_or(default);
            if v == 0 {
                bail!("limits.{name} must be at least 1");
            }
            Ok(v)
        };
        let rate = |name: &str, per_sec: Option<f64>, burst: Option<f64>, default: (f64, f64)| {
            // A rate given without a burst gets a burst of two seconds' worth.
            let burst = burst.unwrap_or(per_sec.map_or(default.1, |r| (r * 2.0).max(1.0)));
            let per_sec = per_sec.unwrap_or(default.0);
            if !(0.0..=1_000_000.0).contains(&per_sec) || !(1.0..=1_000_000.0).contains(&burst) {
                bail!("limits.{name}: the rate must be between 0 (off) and 1000000, the burst between 1 and 1000000");
            }
            Ok((per_sec > 0.0).then(|| Rate::new(per_sec, burst)))
        };
        let token_leeway_secs = raw.token_leeway_secs.unwrap_or(60);
        if token_leeway_secs > 3600 {
            bail!("limits.token_leeway_secs must be at most 3600");
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            bail!("limits.max_body_bytes must be between 1 KiB and 64 MiB");
        }
        Ok(LimitsConfig {
            max_rooms: cap("max_rooms", raw.max_rooms, 10_000)?,
            max_participants: cap("max_participants", raw.max_participants, 10_000)?,
            max_tracks_per_participant: cap("max_tracks_per_participant", raw.max_tracks_per_participant, 16)?,
            token_leeway_secs,
            join_per_ip: rate("join_per_ip_per_sec", raw.join_per_ip_per_sec, raw.join_burst_per_ip, (20.0, 100.0))?,
            join_per_identity: rate(
                "join_per_identity_per_sec",
                raw.join_per_identity_per_sec,
                raw.join_burst_per_identity,
                (10.0, 30.0),
            )?,
            api_per_ip: rate("api_per_ip_per_sec", raw.api_per_ip_per_sec, raw.api_burst_per_ip, (50.0, 100.0))?,
            api_per_identity: rate(
                "api_per_identity_per_sec",
                raw.api_per_identity_per_sec,
                raw.api_burst_per_identity,
                (20.0, 50.0),
            )?,
            rate_limit_keys: cap("rate_limit_keys", raw.rate_limit_keys, 100_000)?,
            max_body_bytes,
        })
    }
}

/// Token buckets by key, at most `max_keys` of them. See the module doc.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
    /// Shared by every key that found the table full of active keys.
    overflow: TokenBucket,
    /// The last time idle keys were swept out (a full table is swept at most once per refill time).
    swept_at: Option<Instant>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter giving each key `rate`, remembering at most `max_keys` keys (at least 1).
    pub fn new(rate: Rate, max_keys: usize, now: Instant) -> KeyedLimiter<K> {
        KeyedLimiter {
            rate,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
            overflow: TokenBucket::full(rate, now),
            swept_at: None,
        }
    }

    /// The rate each key gets.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// No key remembered?
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Take one token from `key`'s bucket at `now`.
    pub fn check(&mut self, key: &K, now: Instant) -> Result<(), Refused> {
        let rate = self.rate;
        if let Some(b) = self.buckets.get_mut(key) {
            return b.take(rate, now);
        }
        if self.buckets.len() >= self.max_keys {
            self.sweep(now);
        }
        if self.buckets.len() >= self.max_keys {
            return self.overflow.take(rate, now);
        }
        let mut b = TokenBucket::full(rate, now);
        let r = b.take(rate, now);
        self.buckets.insert(key.clone(), b);
        r
    }

    /// Forget keys whose bucket has refilled. Runs at most once per refill time, so a table full of active keys
    /// is not scanned on every request.
    fn sweep(&mut self, now: Instant) {
        if self.swept_at.is_some_and(|t| now.saturating_duration_since(t) < self.rate.refill_time()) {
            return;
        }
        self.swept_at = Some(now);
        let rate = self.rate;
        self.buckets.retain(|_, b| !b.is_idle(rate, now));
    }
}

/// The server's rate limiters (`[limits]`): joins and HTTP API requests, each per IP address and per identity.
/// A limit configured off is `None` and always passes.
#[derive(Debug)]
pub struct Limiters {
    join_ip: Option<Mutex<KeyedLimiter<IpAddr>>>,
    join_identity: Option<Mutex<KeyedLimiter<String>>>,
    api_ip: Option<Mutex<KeyedLimiter<IpAddr>>>,
    api_identity: Option<Mutex<KeyedLimiter<String>>>,
}

impl Limiters {
    /// The limiters `config` asks for, their buckets full at `now`.
    pub fn new(config: &LimitsConfig, now: Instant) -> Limiters {
        let keys = config.rate_limit_keys;
        fn make<K: Hash + Eq + Clone>(rate: Option<Rate>, keys: usize, now: Instant) -> Option<Mutex<KeyedLimiter<K>>> {
            rate.map(|r| Mutex::new(KeyedLimiter::new(r, keys, now)))
        }
        Limiters {
            join_ip: make(config.join_per_ip, keys, now),
            join_identity: make(config.join_per_identity, keys, now),
            api_ip: make(config.api_per_ip, keys, now),
            api_identity: make(config.api_per_identity, keys, now),
        }
    }

    /// A join from `ip`.
    pub fn join_ip(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        check(&self.join_ip, &ip, now)
    }

    /// A join of `identity`.
    pub fn join_identity(&self, identity: &str, now: Instant) -> Result<(), Refused> {
        check(&self.join_identity, &identity.to_string(), now)
    }

    /// An API request from `ip`.
    pub fn api_ip(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        check(&self.api_ip, &ip, now)
    }

    /// An API request by `identity`.
    pub fn api_identity(&self, identity: &str, now: Instant) -> Result<(), Refused> {
        check(&self.api_identity, &identity.to_string(), now)
    }
}

fn check<K: Hash + Eq + Clone>(l: &Option<Mutex<KeyedLimiter<K>>>, key: &K, now: Instant) -> Result<(), Refused> {
    match l {
        // The lock is held for a hash lookup only and nothing in it panics; a poisoned one passes everything
        // rather than refusing every client.
        Some(l) => l.lock().map(|mut l| l.check(key, now)).unwrap_or(Ok(())),
        None => Ok(()),
    }
}

/// What the limits and caps refused, for `/metrics`. Counters only grow.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Joins refused by the join rate limits.
    pub join_rate_limited: AtomicU64,
    /// Joins refused because the room was full.
    pub join_room_full: AtomicU64,
    /// Joins refused because the server had `max_rooms` rooms.
    pub join_too_many_rooms: AtomicU64,
    /// Joins refused by the room: not found, not open yet, closed, or not invited.
    pub join_room_unavailable: AtomicU64,
    /// Joins refused while the server drained.
    pub join_draining: AtomicU64,
    /// Offers refused for publishing too many tracks.
    pub too_many_tracks: AtomicU64,
    /// HTTP requests answered 429.
    pub http_rate_limited: AtomicU64,
    /// HTTP requests answered 413.
    pub http_too_large: AtomicU64,
}

impl Refusals {
    /// Count one.
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_spends_its_burst_then_refills_at_the_rate() {
        let rate = Rate::new(2.0, 3.0);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        for _ in 0..3 {
            assert_eq!(b.take(rate, t0), Ok(()));
        }
        let refused = b.take(rate, t0).unwrap_err();
        assert_eq!(refused.retry_after, 500 * MS, "one token at 2/s is 500 ms away");
        assert_eq!(refused.retry_after_secs(), 1);
        assert!(b.take(rate, t0 + 499 * MS).is_err());
        assert_eq!(b.take(rate, t0 + 500 * MS), Ok(()));
        // Never more than the burst, however long it rests.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.take(rate, later), Ok(()));
        }
        assert!(b.take(rate, later).is_err());
    }

    #[test]
    fn a_tiny_rate_does_not_overflow() {
        let rate = Rate::new(1e-300, 1.0);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.take(rate, t0).is_ok());
        assert_eq!(b.take(rate, t0).unwrap_err().retry_after, Duration::from_secs(86_400));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let r = |ms| Refused { retry_after: ms * MS }.retry_after_secs();
        assert_eq!(r(0), 1);
        assert_eq!(r(1), 1);
        assert_eq!(r(1000), 1);
        assert_eq!(r(1001), 2);
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(Rate::new(1.0, 2.0), 100, t0);
        assert!(l.check(&"a", t0).is_ok());
        assert!(l.check(&"a", t0).is_ok());
        assert!(l.check(&"a", t0).is_err(), "a spent its burst");
        assert!(l.check(&"b", t0).is_ok(), "b is not a");
        assert!(l.check(&"a", t0 + Duration::from_secs(1)).is_ok(), "a refilled one");
    }

    #[test]
    fn the_table_stays_bounded_and_fresh_keys_share_the_overflow_bucket() {
        let t0 = Instant::now();
        let rate = Rate::new(1.0, 2.0);
        let mut l = KeyedLimiter::new(rate, 10, t0);
        // Ten active keys fill the table.
        for k in 0..10u32 {
            assert!(l.check(&k, t0).is_ok());
        }
        assert_eq!(l.len(), 10);
        // A flood of fresh keys: they share one bucket (burst 2), so only two get through, and the table does
        // not grow.
        let passed = (10..10_000u32).filter(|k| l.check(k, t0).is_ok()).count();
        assert_eq!(passed, 2);
        assert_eq!(l.len(), 10);
        // Once the first keys have been idle long enough to refill, they are forgotten and new keys get their own.
        let later = t0 + Duration::from_secs(2);
        assert!(l.check(&20_000, later).is_ok());
        assert_eq!(l.len(), 1, "the idle keys were swept out");
        assert!(l.check(&20_000, later).is_ok());
        assert!(l.check(&20_000, later).is_err(), "its own bucket, burst 2");
    }

    #[test]
    fn a_full_table_of_active_keys_is_not_swept_on_every_request() {
        let t0 = Instant::now();
        let rate = Rate::new(1.0, 1.0);
        let mut l = KeyedLimiter::new(rate, 2, t0);
        assert!(l.check(&1, t0).is_ok());
        assert!(l.check(&2, t0).is_ok());
        assert!(l.check(&3, t0).is_ok(), "the overflow bucket");
        assert_eq!(l.swept_at, Some(t0));
        // Half a refill time later the table is still full of active keys and is not scanned again.
        assert!(l.check(&4, t0 + 500 * MS).is_err());
        assert_eq!(l.swept_at, Some(t0));
    }

    #[test]
    fn idle_means_it_would_be_full() {
        let t0 = Instant::now();
        let rate = Rate::new(10.0, 5.0);
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.is_idle(rate, t0));
        b.take(rate, t0).unwrap();
        assert!(!b.is_idle(rate, t0));
        assert!(b.is_idle(rate, t0 + 100 * MS), "one token back at 10/s");
    }
}
