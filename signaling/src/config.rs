//! Configuration: a TOML file, `COURIER_*` environment variables and command-line flags, merged in that order (a
//! flag beats a variable, which beats the file, which beats the built-in default), then validated once. A bad
//! value fails at start-up with a message naming it, never later.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// The raw, all-optional layer: one of these from the file, one from the environment, one from the flags.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub http_addr: Option<SocketAddr>,
    pub udp_addr: Option<SocketAddr>,
    /// ICE-TCP listener (default, when on: the UDP address's IP and port, over TCP). Setting it turns ICE-TCP on.
    pub ice_tcp_addr: Option<SocketAddr>,
    /// ICE-TCP on or off (default: on).
    pub ice_tcp: Option<bool>,
    pub public_ip: Option<IpAddr>,
    pub data_dir: Option<PathBuf>,
    /// Static files at `/`: unset serves the web demo built into the binary, a directory serves that directory,
    /// `""` serves none.
    pub web_root: Option<PathBuf>,
    pub workers: Option<usize>,
    /// Starting send-side bandwidth estimate per subscriber, kbit/s; 0 turns estimation and allocation off.
    pub bwe_initial_kbps: Option<u32>,
    /// Send a subscriber's run of equal datagrams as one buffer (UDP GSO) where the kernel can; on by default.
    pub udp_gso: Option<bool>,
    pub max_message_bytes: Option<usize>,
    pub log_format: Option<String>,
    /// API key → secret.
    pub keys: Option<HashMap<String, String>>,
    /// The `[chat]` table.
    pub chat: Option<RawChatConfig>,
    /// How long a stopping server waits for its sessions to leave, seconds.
    pub drain_timeout_secs: Option<u64>,
    /// The `[limits]` table.
    pub limits: Option<RawLimitsConfig>,
    /// The `[rooms]` table.
    pub rooms: Option<RawRoomsConfig>,
    /// The `[webhooks]` table.
    pub webhooks: Option<RawWebhooks>,
    /// The `[tls]` table.
    pub tls: Option<RawTlsConfig>,
    /// A PEM file of CA certificates trusted for outbound HTTPS (webhooks, the pre-send hook, PostgreSQL TLS),
    /// besides the built-in Mozilla roots.
    pub outbound_ca_file: Option<PathBuf>,
    /// The `[turn]` table.
    pub turn: Option<RawTurnConfig>,
    /// The `[cluster]` table.
    pub cluster: Option<RawClusterConfig>,
}

pub use crate::cluster::{ClusterConfig, RawClusterConfig};

pub use crate::turn::{RawTurnConfig, TurnConfig};

pub use crate::limits::{LimitsConfig, RawLimitsConfig};

/// The raw `[tls]` table: both files, or neither (plain HTTP).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// The validated `[tls]` table: HTTPS and WSS on `http_addr` with these files, read again when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl RawTlsConfig {
    fn resolve(self) -> anyhow::Result<Option<TlsConfig>> {
        match (self.cert_file, self.key_file) {
            (None, None) => Ok(None),
            (Some(cert_file), Some(key_file)) => Ok(Some(TlsConfig { cert_file, key_file })),
            _ => bail!("tls needs both cert_file and key_file (COURIER_TLS_CERT and COURIER_TLS_KEY)"),
        }
    }
}

/// The raw `[rooms]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoomsConfig {
    /// A join of an unknown room creates it (default `true`); `false`: only rooms the admin API created exist.
    pub auto_create: Option<bool>,
}

/// The validated `[rooms]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsConfig {
    pub auto_create: bool,
}

/// The raw `[webhooks]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    /// Seconds after it is stored that an alert still missing acknowledgements is reported.
    pub alert_delay_secs: Option<u64>,
    /// Message payloads larger than this are left out of `message_sent`.
    pub payload_max_bytes: Option<usize>,
    /// The receivers (`[[webhooks.endpoints]]`).
    pub endpoints: Option<Vec<RawWebhookEndpoint>>,
}

/// One raw `[[webhooks.endpoints]]` entry.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhookEndpoint {
    pub url: Option<String>,
    /// The signing secret; or name an API key whose secret signs.
    pub secret: Option<String>,
    pub api_key: Option<String>,
    /// Event names sent to this endpoint (default: all).
    pub events: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub max_age_secs: Option<u64>,
    pub queue_capacity: Option<usize>,
    pub concurrency: Option<usize>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
}

impl RawWebhooks {
    fn over(self, lower: RawWebhooks) -> RawWebhooks {
        RawWebhooks {
            alert_delay_secs: self.alert_delay_secs.or(lower.alert_delay_secs),
            payload_max_bytes: self.payload_max_bytes.or(lower.payload_max_bytes),
            endpoints: self.endpoints.or(lower.endpoints),
        }
    }

    /// Defaults, then check. `keys` resolves `api_key` references.
    fn resolve(self, keys: &HashMap<String, String>) -> anyhow::Result<crate::webhook::WebhooksConfig> {
        use crate::webhook::{queue::Policy, EndpointConfig, EventKind, WebhooksConfig};
        use std::time::Duration;
        let defaults = WebhooksConfig::default();
        let alert_delay = self.alert_delay_secs.map_or(defaults.alert_delay, Duration::from_secs);
        let payload_max_bytes = self.payload_max_bytes.unwrap_or(defaults.payload_max_bytes);
        let mut endpoints = Vec::new();
        for (i, e) in self.endpoints.unwrap_or_default().into_iter().enumerate() {
            let at = format!("webhooks.endpoints[{i}]");
            let Some(url) = e.url.filter(|u| !u.is_empty()) else { bail!("{at}: url is required") };
            crate::outbound::callback_url(&format!("{at}.url"), &url).map_err(|e| anyhow::anyhow!(e))?;
            let secret = match (e.secret, e.api_key) {
                (Some(s), None) if s.len() >= 16 => s,
                (Some(_), None) => bail!("{at}: secret must be at least 16 bytes"),
                (None, Some(k)) => match keys.get(&k) {
                    Some(s) => s.clone(),
                    None => bail!("{at}: api_key {k:?} is not a configured API key"),
                },
                _ => bail!("{at}: give secret or api_key (one of them)"),
            };
            let events = match e.events {
                None => None,
                Some(names) => Some(
                    names
                        .iter()
                        .map(|n| EventKind::parse(n).with_context(|| format!("{at}: unknown event {n:?}")))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                ),
            };
            let d = Policy::default();
            let policy = Policy {
                capacity: e.queue_capacity.unwrap_or(d.capacity),
                max_attempts: e.max_attempts.unwrap_or(d.max_attempts),
                max_age: e.max_age_secs.map_or(d.max_age, Duration::from_secs),
                backoff_initial: e.backoff_initial_ms.map_or(d.backoff_initial, Duration::from_millis),
                backoff_max: e.backoff_max_ms.map_or(d.backoff_max, Duration::from_millis),
                concurrency: e.concurrency.unwrap_or(d.concurrency),
            };
            let timeout_ms = e.timeout_ms.unwrap_or(5000);
            if !(1..=60_000).contains(&timeout_ms) {
                bail!("{at}: timeout_ms must be between 1 and 60000");
            }
            if policy.capacity == 0 || policy.max_attempts == 0 || !(1..=64).contains(&policy.concurrency) {
                bail!("{at}: queue_capacity and max_attempts must be at least 1, concurrency between 1 and 64");
            }
            if policy.backoff_initial.is_zero() || policy.backoff_max < policy.backoff_initial {
                bail!("{at}: backoff_initial_ms must be at least 1 and at most backoff_max_ms");
            }
            endpoints.push(EndpointConfig { url, secret, events, timeout: Duration::from_millis(timeout_ms), policy });
        }
        Ok(WebhooksConfig { endpoints, alert_delay, payload_max_bytes })
    }
}

/// The raw `[chat]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChatConfig {
    /// `sqlite` (default, in the data directory) or `postgres`.
    pub store: Option<String>,
    pub postgres_url: Option<String>,
    pub max_payload_bytes: Option<usize>,
    /// Chat messages per second one connection may send (burst: twice as many).
    pub rate_per_sec: Option<f64>,
    /// Outbound chat items queued per connection before droppable ones are shed.
    pub queue_capacity: Option<usize>,
    /// Rooms with more sessions than this do not fan receipts out to every member.
    pub receipt_fanout_max: Option<usize>,
    /// Unacknowledged alerts are sent again this often, seconds.
    pub alert_renotify_secs: Option<u64>,
    /// Chat messages per second one room takes, all priorities together.
    pub room_rate_per_sec: Option<f64>,
    /// Share of a room's burst only high priority may use.
    pub high_reserve: Option<f64>,
    /// Low priority passes only while more than this share of a room's burst is left.
    pub low_floor: Option<f64>,
    /// Message kinds that are low priority (ephemeral, shed first).
    pub low_priority_kinds: Option<Vec<String>>,
    /// Message kinds that are high priority (never shed).
    pub high_priority_kinds: Option<Vec<String>>,
    /// Identities whose messages are high priority.
    pub high_priority_identities: Option<Vec<String>>,
    /// Low-priority kinds delivered as a count per room each second instead of one by one.
    pub aggregate_kinds: Option<Vec<String>>,
    /// Words that refuse a message.
    pub blocked_words: Option<Vec<String>>,
    /// Words masked with `*`.
    pub replaced_words: Option<Vec<String>>,
    /// A TOML file with `blocked = [...]` and `replaced = [...]`, added to the lists above and reloaded when it
    /// changes.
    pub words_file: Option<PathBuf>,
    /// The pre-send hook (`http://…` or `https://…`), asked about every stored message.
    pub hook_url: Option<String>,
    pub hook_timeout_ms: Option<u64>,
    /// On a hook failure pass the message (`true`) or refuse it (`false`).
    pub hook_fail_open: Option<bool>,
    /// History older than this goes (every conversation without its own rule).
    pub retention_max_age_secs: Option<u64>,
    /// Only the newest this many messages stay (every conversation without its own rule).
    pub retention_max_count: Option<u64>,
    /// How often retention runs.
    pub retention_interval_secs: Option<u64>,
    /// Room name → its own retention (`[chat.room_retention.<room>]`).
    pub room_retention: Option<HashMap<String, RawRetention>>,
}

/// A retention rule in the config.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub max_age_secs: Option<u64>,
    pub max_count: Option<u64>,
}

impl RawRetention {
    fn resolve(&self) -> courier_chat::store::Retention {
        courier_chat::store::Retention {
            max_age_ms: self.max_age_secs.map(|s| s.saturating_mul(1000)),
            max_count: self.max_count,
        }
    }
}

impl RawChatConfig {
    fn over(self, lower: RawChatConfig) -> RawChatConfig {
        RawChatConfig {
            store: self.store.or(lower.store),
            postgres_url: self.postgres_url.or(lower.postgres_url),
            max_payload_bytes: self.max_payload_bytes.or(lower.max_payload_bytes),
            rate_per_sec: self.rate_per_sec.or(lower.rate_per_sec),
            queue_capacity: self.queue_capacity.or(lower.queue_capacity),
            receipt_fanout_max: self.receipt_fanout_max.or(lower.receipt_fanout_max),
            alert_renotify_secs: self.alert_renotify_secs.or(lower.alert_renotify_secs),
            room_rate_per_sec: self.room_rate_per_sec.or(lower.room_rate_per_sec),
            high_reserve: self.high_reserve.or(lower.high_reserve),
            low_floor: self.low_floor.or(lower.low_floor),
            low_priority_kinds: self.low_priority_kinds.or(lower.low_priority_kinds),
            high_priority_kinds: self.high_priority_kinds.or(lower.high_priority_kinds),
            high_priority_identities: self.high_priority_identities.or(lower.high_priority_identities),
            aggregate_kinds: self.aggregate_kinds.or(lower.aggregate_kinds),
            blocked_words: self.blocked_words.or(lower.blocked_words),
            replaced_words: self.replaced_words.or(lower.replaced_words),
            words_file: self.words_file.or(lower.words_file),
            hook_url: self.hook_url.or(lower.hook_url),
            hook_timeout_ms: self.hook_timeout_ms.or(lower.hook_timeout_ms),
            hook_fail_open: self.hook_fail_open.or(lower.hook_fail_open),
            retention_max_age_secs: self.retention_max_age_secs.or(lower.retention_max_age_secs),
            retention_max_count: self.retention_max_count.or(lower.retention_max_count),
            retention_interval_secs: self.retention_interval_secs.or(lower.retention_interval_secs),
            room_retention: self.room_retention.or(lower.room_retention),
        }
    }
}

/// Where chat history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatStoreKind {
    /// `chat.sqlite3` in the data directory.
    Sqlite,
    Postgres {
        url: String,
    },
}

/// The validated `[chat]` settings.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub store: ChatStoreKind,
    pub max_payload_bytes: usize,
    pub rate_per_sec: f64,
    pub queue_capacity: usize,
    pub receipt_fanout_max: usize,
    pub alert_renotify: std::time::Duration,
    pub quota: courier_chat::quota::QuotaConfig,
    pub low_priority_kinds: Vec<String>,
    pub high_priority_kinds: Vec<String>,
    pub high_priority_identities: Vec<String>,
    pub aggregate_kinds: Vec<String>,
    pub blocked_words: Vec<String>,
    pub replaced_words: Vec<String>,
    pub words_file: Option<PathBuf>,
    /// (URL, timeout, fail open).
    pub hook: Option<(String, std::time::Duration, bool)>,
    /// Retention of conversations without a rule of their own.
    pub retention: courier_chat::store::Retention,
    /// Room name → its retention.
    pub room_retention: HashMap<String, courier_chat::store::Retention>,
    pub retention_interval: std::time::Duration,
}

impl ChatConfig {
    /// The retention rule of `conversation`.
    pub fn retention_of(&self, conversation: &courier_chat::ConversationId) -> courier_chat::store::Retention {
        conversation.as_room().and_then(|r| self.room_retention.get(r)).copied().unwrap_or(self.retention)
    }
}

impl ChatConfig {
    fn resolve(raw: RawChatConfig) -> anyhow::Result<ChatConfig> {
        let store = match raw.store.as_deref() {
            None | Some("sqlite") => ChatStoreKind::Sqlite,
            Some("postgres") => match raw.postgres_url {
                Some(url) if !url.is_empty() => ChatStoreKind::Postgres { url },
                _ => bail!("chat.store = \"postgres\" needs chat.postgres_url"),
            },
            Some(other) => bail!("chat.store must be sqlite or postgres, not {other:?}"),
        };
        let max_payload_bytes = raw.max_payload_bytes.unwrap_or(courier_chat::DEFAULT_MAX_PAYLOAD_BYTES);
        if !(64..=1024 * 1024).contains(&max_payload_bytes) {
            bail!("chat.max_payload_bytes must be between 64 and 1048576");
        }
        let rate_per_sec = raw.rate_per_sec.unwrap_or(20.0);
        if !(rate_per_sec > 0.0 && rate_per_sec <= 100_000.0) {
            bail!("chat.rate_per_sec must be above 0 and at most 100000");
        }
        let queue_capacity = raw.queue_capacity.unwrap_or(1024);
        if !(16..=1_000_000).contains(&queue_capacity) {
            bail!("chat.queue_capacity must be between 16 and 1000000");
        }
        let alert_renotify_secs = raw.alert_renotify_secs.unwrap_or(30);
        if alert_renotify_secs == 0 {
            bail!("chat.alert_renotify_secs must be at least 1");
        }
        let quota = courier_chat::quota::QuotaConfig {
            rate: raw.room_rate_per_sec.unwrap_or(200.0),
            high_reserve: raw.high_reserve.unwrap_or(0.2),
            low_floor: raw.low_floor.unwrap_or(0.5),
        };
        if !(quota.rate >= 1.0 && quota.rate <= 1_000_000.0) {
            bail!("chat.room_rate_per_sec must be between 1 and 1000000");
        }
        if !(0.0..1.0).contains(&quota.high_reserve) || !(0.0..1.0).contains(&quota.low_floor) {
            bail!("chat.high_reserve and chat.low_floor must be at least 0 and below 1");
        }
        let strings = |v: Option<Vec<String>>, default: &[&str]| {
            v.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
        };
        let hook_timeout_ms = raw.hook_timeout_ms.unwrap_or(500);
        if !(1..=60_000).contains(&hook_timeout_ms) {
            bail!("chat.hook_timeout_ms must be between 1 and 60000");
        }
        let hook = match raw.hook_url.filter(|u| !u.is_empty()) {
            Some(url) => {
                crate::outbound::callback_url("chat.hook_url", &url).map_err(|e| anyhow::anyhow!(e))?;
                Some((url, std::time::Duration::from_millis(hook_timeout_ms), raw.hook_fail_open.unwrap_or(true)))
            }
            None => None,
        };
        if let Some(path) = &raw.words_file {
            courier_chat::moderation::WordLists::load(path).map_err(|e| anyhow::anyhow!(e))?;
        }
        let retention =
            RawRetention { max_age_secs: raw.retention_max_age_secs, max_count: raw.retention_max_count }.resolve();
        let room_retention: HashMap<String, courier_chat::store::Retention> =
            raw.room_retention.unwrap_or_default().iter().map(|(room, r)| (room.clone(), r.resolve())).collect();
        if std::iter::once(&retention).chain(room_retention.values()).any(|r| r.max_count == Some(0)) {
            bail!("chat retention max_count must be at least 1");
        }
        let retention_interval_secs = raw.retention_interval_secs.unwrap_or(60);
        if retention_interval_secs == 0 {
            bail!("chat.retention_interval_secs must be at least 1");
        }
        Ok(ChatConfig {
            retention,
            room_retention,
            retention_interval: std::time::Duration::from_secs(retention_interval_secs),
            blocked_words: strings(raw.blocked_words, &[]),
            replaced_words: strings(raw.replaced_words, &[]),
            words_file: raw.words_file,
            hook,
            quota,
            low_priority_kinds: strings(raw.low_priority_kinds, &["like", "danmaku"]),
            high_priority_kinds: strings(raw.high_priority_kinds, &[]),
            high_priority_identities: strings(raw.high_priority_identities, &[]),
            aggregate_kinds: strings(raw.aggregate_kinds, &["like"]),
            store,
            max_payload_bytes,
            rate_per_sec,
            queue_capacity,
            receipt_fanout_max: raw.receipt_fanout_max.unwrap_or(200),
            alert_renotify: std::time::Duration::from_secs(alert_renotify_secs),
        })
    }
}

impl RawConfig {
    /// Values from `path`.
    pub fn from_file(path: &Path) -> anyhow::Result<RawConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// Values from `COURIER_*` variables, read through `get` (so tests need not touch the process environment).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<RawConfig> {
        fn parse<T: std::str::FromStr>(name: &str, v: Option<String>) -> anyhow::Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            v.map(|s| s.parse::<T>().map_err(|e| anyhow::anyhow!("{name}={s:?}: {e}"))).transpose()
        }
        Ok(RawConfig {
            http_addr: parse("COURIER_HTTP_ADDR", get("COURIER_HTTP_ADDR"))?,
            udp_addr: parse("COURIER_UDP_ADDR", get("COURIER_UDP_ADDR"))?,
            ice_tcp_addr: parse("COURIER_ICE_TCP_ADDR", get("COURIER_ICE_TCP_ADDR"))?,
            ice_tcp: parse("COURIER_ICE_TCP", get("COURIER_ICE_TCP"))?,
            public_ip: parse("COURIER_PUBLIC_IP", get("COURIER_PUBLIC_IP"))?,
            data_dir: get("COURIER_DATA_DIR").map(PathBuf::from),
            web_root: get("COURIER_WEB_ROOT").map(PathBuf::from),
            workers: parse("COURIER_WORKERS", get("COURIER_WORKERS"))?,
            bwe_initial_kbps: parse("COURIER_BWE_INITIAL_KBPS", get("COURIER_BWE_INITIAL_KBPS"))?,
            udp_gso: parse("COURIER_UDP_GSO", get("COURIER_UDP_GSO"))?,
            max_message_bytes: parse("COURIER_MAX_MESSAGE_BYTES", get("COURIER_MAX_MESSAGE_BYTES"))?,
            log_format: get("COURIER_LOG_FORMAT"),
            keys: get("COURIER_KEYS").map(|s| parse_keys(&s)).transpose()?,
            webhooks: Some(RawWebhooks {
                alert_delay_secs: parse("COURIER_WEBHOOK_ALERT_DELAY_SECS", get("COURIER_WEBHOOK_ALERT_DELAY_SECS"))?,
                payload_max_bytes: parse(
                    "COURIER_WEBHOOK_PAYLOAD_MAX_BYTES",
                    get("COURIER_WEBHOOK_PAYLOAD_MAX_BYTES"),
                )?,
                // One endpoint from the environment: COURIER_WEBHOOK_URL with COURIER_WEBHOOK_SECRET or _API_KEY.
                endpoints: get("COURIER_WEBHOOK_URL").map(|url| {
                    vec![RawWebhookEndpoint {
                        url: Some(url),
                        secret: get("COURIER_WEBHOOK_SECRET"),
                        api_key: get("COURIER_WEBHOOK_API_KEY"),
                        ..Default::default()
                    }]
                }),
            }),
            chat: Some(RawChatConfig {
                store: get("COURIER_CHAT_STORE"),
                postgres_url: get("COURIER_CHAT_POSTGRES_URL"),
                max_payload_bytes: parse("COURIER_CHAT_MAX_PAYLOAD_BYTES", get("COURIER_CHAT_MAX_PAYLOAD_BYTES"))?,
                rate_per_sec: parse("COURIER_CHAT_RATE_PER_SEC", get("COURIER_CHAT_RATE_PER_SEC"))?,
                queue_capacity: parse("COURIER_CHAT_QUEUE_CAPACITY", get("COURIER_CHAT_QUEUE_CAPACITY"))?,
                receipt_fanout_max: parse("COURIER_CHAT_RECEIPT_FANOUT_MAX", get("COURIER_CHAT_RECEIPT_FANOUT_MAX"))?,
                alert_renotify_secs: parse(
                    "COURIER_CHAT_ALERT_RENOTIFY_SECS",
                    get("COURIER_CHAT_ALERT_RENOTIFY_SECS"),
                )?,
                room_rate_per_sec: parse("COURIER_CHAT_ROOM_RATE_PER_SEC", get("COURIER_CHAT_ROOM_RATE_PER_SEC"))?,
                high_reserve: parse("COURIER_CHAT_HIGH_RESERVE", get("COURIER_CHAT_HIGH_RESERVE"))?,
                low_floor: parse("COURIER_CHAT_LOW_FLOOR", get("COURIER_CHAT_LOW_FLOOR"))?,
                low_priority_kinds: get("COURIER_CHAT_LOW_PRIORITY_KINDS").map(|s| list(&s)),
                high_priority_kinds: get("COURIER_CHAT_HIGH_PRIORITY_KINDS").map(|s| list(&s)),
                high_priority_identities: get("COURIER_CHAT_HIGH_PRIORITY_IDENTITIES").map(|s| list(&s)),
                aggregate_kinds: get("COURIER_CHAT_AGGREGATE_KINDS").map(|s| list(&s)),
                blocked_words: get("COURIER_CHAT_BLOCKED_WORDS").map(|s| list(&s)),
                replaced_words: get("COURIER_CHAT_REPLACED_WORDS").map(|s| list(&s)),
                words_file: get("COURIER_CHAT_WORDS_FILE").map(PathBuf::from),
                hook_url: get("COURIER_CHAT_HOOK_URL"),
                hook_timeout_ms: parse("COURIER_CHAT_HOOK_TIMEOUT_MS", get("COURIER_CHAT_HOOK_TIMEOUT_MS"))?,
                hook_fail_open: parse("COURIER_CHAT_HOOK_FAIL_OPEN", get("COURIER_CHAT_HOOK_FAIL_OPEN"))?,
                retention_max_age_secs: parse(
                    "COURIER_CHAT_RETENTION_MAX_AGE_SECS",
                    get("COURIER_CHAT_RETENTION_MAX_AGE_SECS"),
                )?,
                retention_max_count: parse(
                    "COURIER_CHAT_RETENTION_MAX_COUNT",
                    get("COURIER_CHAT_RETENTION_MAX_COUNT"),
                )?,
                retention_interval_secs: parse(
                    "COURIER_CHAT_RETENTION_INTERVAL_SECS",
                    get("COURIER_CHAT_RETENTION_INTERVAL_SECS"),
                )?,
                room_retention: None,
            }),
            drain_timeout_secs: parse("COURIER_DRAIN_TIMEOUT_SECS", get("COURIER_DRAIN_TIMEOUT_SECS"))?,
            limits: Some(RawLimitsConfig {
                max_rooms: parse("COURIER_LIMITS_MAX_ROOMS", get("COURIER_LIMITS_MAX_ROOMS"))?,
                max_participants: parse("COURIER_LIMITS_MAX_PARTICIPANTS", get("COURIER_LIMITS_MAX_PARTICIPANTS"))?,
                max_tracks_per_participant: parse(
                    "COURIER_LIMITS_MAX_TRACKS_PER_PARTICIPANT",
                    get("COURIER_LIMITS_MAX_TRACKS_PER_PARTICIPANT"),
                )?,
                token_leeway_secs: parse("COURIER_LIMITS_TOKEN_LEEWAY_SECS", get("COURIER_LIMITS_TOKEN_LEEWAY_SECS"))?,
                join_per_ip_per_sec: parse(
                    "COURIER_LIMITS_JOIN_PER_IP_PER_SEC",
                    get("COURIER_LIMITS_JOIN_PER_IP_PER_SEC"),
                )?,
                join_per_identity_per_sec: parse(
                    "COURIER_LIMITS_JOIN_PER_IDENTITY_PER_SEC",
                    get("COURIER_LIMITS_JOIN_PER_IDENTITY_PER_SEC"),
                )?,
                api_per_ip_per_sec: parse(
                    "COURIER_LIMITS_API_PER_IP_PER_SEC",
                    get("COURIER_LIMITS_API_PER_IP_PER_SEC"),
                )?,
                api_per_identity_per_sec: parse(
                    "COURIER_LIMITS_API_PER_IDENTITY_PER_SEC",
                    get("COURIER_LIMITS_API_PER_IDENTITY_PER_SEC"),
                )?,
                max_body_bytes: parse("COURIER_LIMITS_MAX_BODY_BYTES", get("COURIER_LIMITS_MAX_BODY_BYTES"))?,
                ..RawLimitsConfig::default()
            }),
            rooms: Some(RawRoomsConfig {
                auto_create: parse("COURIER_ROOMS_AUTO_CREATE", get("COURIER_ROOMS_AUTO_CREATE"))?,
            }),
            tls: Some(RawTlsConfig {
                cert_file: get("COURIER_TLS_CERT").map(PathBuf::from),
                key_file: get("COURIER_TLS_KEY").map(PathBuf::from),
            }),
            outbound_ca_file: get("COURIER_OUTBOUND_CA_FILE").map(PathBuf::from),
            turn: Some(RawTurnConfig::from_env(&get)?),
            cluster: Some(RawClusterConfig::from_env(&get)?),
        })
    }

    /// `self` over `lower`: every value set here wins.
    pub fn over(self, lower: RawConfig) -> RawConfig {
        RawConfig {
            http_addr: self.http_addr.or(lower.http_addr),
            udp_addr: self.udp_addr.or(lower.udp_addr),
            ice_tcp_addr: self.ice_tcp_addr.or(lower.ice_tcp_addr),
            ice_tcp: self.ice_tcp.or(lower.ice_tcp),
            public_ip: self.public_ip.or(lower.public_ip),
            data_dir: self.data_dir.or(lower.data_dir),
            web_root: self.web_root.or(lower.web_root),
            workers: self.workers.or(lower.workers),
            bwe_initial_kbps: self.bwe_initial_kbps.or(lower.bwe_initial_kbps),
            udp_gso: self.udp_gso.or(lower.udp_gso),
            max_message_bytes: self.max_message_bytes.or(lower.max_message_bytes),
            log_format: self.log_format.or(lower.log_format),
            keys: self.keys.or(lower.keys),
            webhooks: match (self.webhooks, lower.webhooks) {
                (Some(a), Some(b)) => Some(a.over(b)),
                (a, b) => a.or(b),
            },
            chat: match (self.chat, lower.chat) {
                (Some(a), Some(b)) => Some(a.over(b)),
                (a, b) => a.or(b),
            },
            drain_timeout_secs: self.drain_timeout_secs.or(lower.drain_timeout_secs),
            limits: match (self.limits, lower.limits) {
                (Some(a), Some(b)) => Some(a.over(b)),
                (a, b) => a.or(b),
            },
            rooms: match (self.rooms, lower.rooms) {
                (Some(a), Some(b)) => Some(RawRoomsConfig { auto_create: a.auto_create.or(b.auto_create) }),
                (a, b) => a.or(b),
            },
            tls: match (self.tls, lower.tls) {
                (Some(a), Some(b)) => {
                    Some(RawTlsConfig { cert_file: a.cert_file.or(b.cert_file), key_file: a.key_file.or(b.key_file) })
                }
                (a, b) => a.or(b),
            },
            outbound_ca_file: self.outbound_ca_file.or(lower.outbound_ca_file),
            turn: match (self.turn, lower.turn) {
                (Some(a), Some(b)) => Some(a.over(b)),
                (a, b) => a.or(b),
            },
            cluster: match (self.cluster, lower.cluster) {
                (Some(a), Some(b)) => Some(a.over(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// `a,b,c` (empty items dropped).
fn list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

/// `key:secret[,key:secret…]`.
pub fn parse_keys(s: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut keys = HashMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once(':') else { bail!("API key {pair:?} must be key:secret") };
        if k.is_empty() || v.is_empty() {
            bail!("API key and secret must not be empty");
        }
        keys.insert(k.to_string(), v.to_string());
    }
    Ok(keys)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What the HTTP server answers at `/` and `/<file>`, besides its own routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebRoot {
    /// The web demo built into the binary ([`crate::web_demo`]); the default.
    Embedded,
    /// The files of this directory (`web_root = "DIR"`), e.g. a customised copy of the demo.
    Dir(PathBuf),
    /// No static files (`web_root = ""`).
    Off,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub udp_addr: SocketAddr,
    /// Where ICE-TCP listens; `None`: off.
    pub ice_tcp_addr: Option<SocketAddr>,
    pub public_ip: Option<IpAddr>,
    pub data_dir: PathBuf,
    pub web_root: WebRoot,
    pub workers: usize,
    /// `None`: bandwidth estimation and stream allocation off.
    pub bwe_initial_kbps: Option<u32>,
    /// UDP generic segmentation offload for runs of datagrams to one subscriber (falls back by itself where the
    /// device refuses it).
    pub udp_gso: bool,
    pub max_message_bytes: usize,
    pub log_format: LogFormat,
    pub keys: HashMap<String, String>,
    pub dev: bool,
    pub chat: ChatConfig,
    /// How long a stopping server waits for its sessions to leave.
    pub drain_timeout: std::time::Duration,
    pub limits: LimitsConfig,
    pub rooms: RoomsConfig,
    pub webhooks: crate::webhook::WebhooksConfig,
    /// `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `outbound_ca_file`, as given.
    pub outbound_ca_file: Option<PathBuf>,
    /// What outbound TLS trusts: the Mozilla roots and the certificates of `outbound_ca_file` (read at start-up).
    pub outbound_roots: std::sync::Arc<rustls::RootCertStore>,
    /// The `[turn]` table: built-in TURN server, external one, or none.
    pub turn: TurnConfig,
    /// The `[cluster]` table; `None`: one node on its own.
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// Defaults, then check. In dev mode missing keys are allowed (the caller creates development ones).
    pub fn resolve(raw: RawConfig, dev: bool) -> anyhow::Result<Config> {
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log_format must be text or json, not {other:?}"),
        };
        let workers = raw.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
        if workers == 0 || workers > 256 {
            bail!("workers must be between 1 and 256");
        }
        let bwe_initial_kbps = match raw.bwe_initial_kbps.unwrap_or(1000) {
            0 => None,
            k if (30..=100_000).contains(&k) => Some(k),
            _ => bail!("bwe_initial_kbps must be 0 (off) or between 30 and 100000"),
        };
        let max_message_bytes = raw.max_message_bytes.unwrap_or(64 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_message_bytes) {
            bail!("max_message_bytes must be between 1 KiB and 16 MiB");
        }
        let keys = raw.keys.unwrap_or_default();
        if keys.is_empty() && !dev {
            bail!("no API keys configured: set [keys] in the config file, COURIER_KEYS=key:secret, or --keys (or use --dev)");
        }
        if let Some((k, _)) = keys.iter().find(|(_, s)| s.is_empty() || (s.len() < 8 && !dev)) {
            bail!("the secret of API key {k:?} is {}", if dev { "empty" } else { "shorter than 8 bytes" });
        }
        let udp_addr = raw.udp_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7881)));
        if udp_addr.ip().is_unspecified() && raw.public_ip.is_none() {
            bail!("udp_addr {udp_addr} is unspecified: set public_ip to the address clients reach");
        }
        // On unless `ice_tcp = false`: a client whose network blocks UDP still gets media (media-tests/chrome
        // reach.mjs, Chromium with UDP dropped by nftables). Browsers try TCP only when UDP fails.
        let ice_tcp_addr = match raw.ice_tcp.unwrap_or(true) {
            true => Some(raw.ice_tcp_addr.unwrap_or(udp_addr)),
            false => None,
        };
        if ice_tcp_addr.is_some_and(|a| a.ip().is_unspecified()) && raw.public_ip.is_none() {
            bail!("ice_tcp_addr is unspecified: set public_ip to the address clients reach");
        }
        let chat = ChatConfig::resolve(raw.chat.unwrap_or_default())?;
        let drain_timeout_secs = raw.drain_timeout_secs.unwrap_or(10);
        if drain_timeout_secs > 3600 {
            bail!("drain_timeout_secs must be at most 3600");
        }
        let limits = LimitsConfig::resolve(raw.limits.unwrap_or_default())?;
        let webhooks = raw.webhooks.unwrap_or_default().resolve(&keys)?;
        let web_root = match raw.web_root {
            None => WebRoot::Embedded,
            Some(p) if p.as_os_str().is_empty() => WebRoot::Off,
            Some(p) if p.is_dir() => WebRoot::Dir(p),
            Some(p) => bail!(
                "web_root {} is not a directory (leave it unset for the built-in web demo, \"\" for none)",
                p.display()
            ),
        };
        let outbound_roots = crate::outbound::roots(raw.outbound_ca_file.as_deref())?;
        let tls = raw.tls.unwrap_or_default().resolve()?;
        let turn = raw.turn.unwrap_or_default().resolve(udp_addr, raw.public_ip, tls.is_some())?;
        let http_addr = raw.http_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7880)));
        let cluster = raw.cluster.unwrap_or_default().resolve(http_addr, tls.is_some())?;
        if cluster.is_some() && chat.store == ChatStoreKind::Sqlite {
            bail!(
                "[cluster] needs the PostgreSQL chat store, which every node shares (set [chat] store = \"postgres\" \
                 and postgres_url, or COURIER_CHAT_STORE=postgres and COURIER_CHAT_POSTGRES_URL): with SQLite each node would keep its own history"
            );
        }
        Ok(Config {
            http_addr,
            udp_addr,
            ice_tcp_addr,
            public_ip: raw.public_ip,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("courier-data")),
            web_root,
            workers,
            bwe_initial_kbps,
            udp_gso: raw.udp_gso.unwrap_or(true),
            max_message_bytes,
            log_format,
            keys,
            dev,
            chat,
            drain_timeout: std::time::Duration::from_secs(drain_timeout_secs),
            limits,
            rooms: RoomsConfig { auto_create: raw.rooms.and_then(|r| r.auto_create).unwrap_or(true) },
            webhooks,
            tls,
            outbound_ca_file: raw.outbound_ca_file,
            outbound_roots,
            turn,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flag_env_file_default() {
        let file: RawConfig = toml::from_str(
            "http_addr = \"127.0.0.1:1000\"\nudp_addr = \"127.0.0.1:1001\"\nworkers = 3\n[keys]\nfile = \"filesecret\"\n",
        )
        .unwrap();
        let env = RawConfig::from_env(|k| match k {
            "COURIER_UDP_ADDR" => Some("127.0.0.1:2001".into()),
            "COURIER_WORKERS" => Some("4".into()),
            _ => None,
        })
        .unwrap();
        let flags = RawConfig { workers: Some(5), ..Default::default() };
        let c = Config::resolve(flags.over(env.over(file)), false).unwrap();
        assert_eq!(c.http_addr.port(), 1000, "file value");
        assert_eq!(c.udp_addr.port(), 2001, "env beats file");
        assert_eq!(c.workers, 5, "flag beats env");
        assert_eq!(c.max_message_bytes, 65536, "default");
        assert_eq!(c.keys["file"], "filesecret");
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/courier.toml");
        let c = Config::resolve(RawConfig::from_file(&path).unwrap(), false).unwrap();
        assert_eq!(c.chat.store, ChatStoreKind::Sqlite);
        assert_eq!(c.chat.high_priority_identities, vec!["system".to_string()]);
        let env = RawConfig::from_env(|k| (k == "COURIER_CHAT_LOW_PRIORITY_KINDS").then(|| "a, b,".into())).unwrap();
        let c = Config::resolve(env, true).unwrap();
        assert_eq!(c.chat.low_priority_kinds, vec!["a".to_string(), "b".to_string()]);
        let bad = RawConfig {
            chat: Some(RawChatConfig { store: Some("postgres".into()), ..Default::default() }),
            ..Default::default()
        };
        assert!(Config::resolve(bad, true).is_err(), "postgres needs a URL");
    }

    #[test]
    fn refusals() {
        assert!(Config::resolve(RawConfig::default(), false).is_err(), "no keys outside dev");
        assert!(Config::resolve(RawConfig::default(), true).is_ok(), "dev creates keys later");
        let empty_secret = RawConfig { keys: Some([("k".to_string(), String::new())].into()), ..Default::default() };
        assert!(Config::resolve(empty_secret, true).is_err(), "no empty secret, even in dev (mint needs one)");
        assert!(RawConfig::from_env(|k| (k == "COURIER_WORKERS").then(|| "many".into())).is_err());
        assert!(parse_keys("nocolon").is_err());
        assert!(toml::from_str::<RawConfig>("bogus = 1").is_err(), "unknown keys are refused");
        let raw = RawConfig { udp_addr: Some("0.0.0.0:5".parse().unwrap()), ..Default::default() };
        assert!(Config::resolve(raw, true).is_err(), "unspecified UDP needs public_ip");
        let limits = |l: RawLimitsConfig| RawConfig { limits: Some(l), ..Default::default() };
        assert!(Config::resolve(limits(RawLimitsConfig { max_rooms: Some(0), ..Default::default() }), true).is_err());
        let negative = RawLimitsConfig { api_per_ip_per_sec: Some(-1.0), ..Default::default() };
        assert!(Config::resolve(limits(negative), true).is_err());
        let tiny_body = RawLimitsConfig { max_body_bytes: Some(10), ..Default::default() };
        assert!(Config::resolve(limits(tiny_body), true).is_err());
    }

    #[test]
    fn web_root_built_in_directory_or_off() {
        let with = |w: Option<&str>| {
            Config::resolve(RawConfig { web_root: w.map(PathBuf::from), ..Default::default() }, true)
                .map(|c| c.web_root)
        };
        assert_eq!(with(None).unwrap(), WebRoot::Embedded, "the built-in demo by default");
        assert_eq!(with(Some("")).unwrap(), WebRoot::Off, "\"\" turns static files off");
        let dir = env!("CARGO_MANIFEST_DIR");
        assert_eq!(with(Some(dir)).unwrap(), WebRoot::Dir(dir.into()));
        assert!(with(Some("/nonexistent/web")).is_err(), "a missing directory fails at start");
        let env = RawConfig::from_env(|k| (k == "COURIER_WEB_ROOT").then(String::new)).unwrap();
        assert_eq!(Config::resolve(env, true).unwrap().web_root, WebRoot::Off, "COURIER_WEB_ROOT= too");
    }

    #[test]
    fn limits_defaults_and_off() {
        let c = Config::resolve(RawConfig::default(), true).unwrap();
        assert_eq!(c.limits.token_leeway_secs, 60);
        assert_eq!(c.limits.join_per_ip, Some(crate::limits::Rate::new(20.0, 100.0)));
        assert_eq!(c.drain_timeout, std::time::Duration::from_secs(10));
        let off = RawLimitsConfig { join_per_ip_per_sec: Some(0.0), ..Default::default() };
        let c = Config::resolve(RawConfig { limits: Some(off), ..Default::default() }, true).unwrap();
        assert_eq!(c.limits.join_per_ip, None, "0 turns a limit off");
        let env = RawConfig::from_env(|k| (k == "COURIER_LIMITS_MAX_ROOMS").then(|| "7".into())).unwrap();
        let file = RawConfig {
            limits: Some(RawLimitsConfig { max_rooms: Some(3), max_participants: Some(4), ..Default::default() }),
            ..Default::default()
        };
        let c = Config::resolve(env.over(file), true).unwrap();
        assert_eq!((c.limits.max_rooms, c.limits.max_participants), (7, 4), "env over file, per key");
    }

    #[test]
    fn webhooks_table() {
        let file: RawConfig = toml::from_str(
            r#"
[keys]
k1 = "secret-of-k1"
[webhooks]
alert_delay_secs = 30
[[webhooks.endpoints]]
url = "http://127.0.0.1:9000/hooks"
secret = "0123456789abcdef"
events = ["room_started", "message_sent"]
max_attempts = 3
[[webhooks.endpoints]]
url = "http://127.0.0.1:9001/"
api_key = "k1"
"#,
        )
        .unwrap();
        let c = Config::resolve(file, false).unwrap();
        let w = &c.webhooks;
        assert_eq!(w.alert_delay, std::time::Duration::from_secs(30));
        assert_eq!(w.endpoints.len(), 2);
        assert_eq!(w.endpoints[0].policy.max_attempts, 3);
        assert_eq!(w.endpoints[0].events.as_ref().map(Vec::len), Some(2));
        assert_eq!(w.endpoints[1].secret, "secret-of-k1", "api_key names the signing secret");
        assert!(w.endpoints[1].events.is_none(), "all events by default");

        let env = RawConfig::from_env(|k| match k {
            "COURIER_WEBHOOK_URL" => Some("http://127.0.0.1:1/".into()),
            "COURIER_WEBHOOK_SECRET" => Some("from-the-environment".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(Config::resolve(env, true).unwrap().webhooks.endpoints[0].secret, "from-the-environment");

        for (bad, why) in [
            ("[[webhooks.endpoints]]\nsecret = \"0123456789abcdef\"", "no url"),
            ("[[webhooks.endpoints]]\nurl = \"ftp://x/\"\nsecret = \"0123456789abcdef\"", "ftp"),
            ("[[webhooks.endpoints]]\nurl = \"http://x/\"\nsecret = \"short\"", "short secret"),
            ("[[webhooks.endpoints]]\nurl = \"http://x/\"\napi_key = \"nope\"", "unknown key"),
            ("[[webhooks.endpoints]]\nurl = \"http://x/\"", "no secret"),
            ("[[webhooks.endpoints]]\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\nevents = [\"x\"]", "event"),
            ("[[webhooks.endpoints]]\nurl = \"http://x/\"\nsecret = \"0123456789abcdef\"\nconcurrency = 0", "0"),
        ] {
            let raw: RawConfig = toml::from_str(bad).unwrap();
            assert!(Config::resolve(raw, true).is_err(), "{why}");
        }
    }

    #[test]
    fn outbound_ca_file_layers_and_is_read_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let file: RawConfig =
            toml::from_str(&format!("outbound_ca_file = {:?}\n", missing.display().to_string())).unwrap();
        let err = Config::resolve(file.clone(), true).unwrap_err();
        assert!(format!("{err:#}").contains("outbound_ca_file"), "{err:#}");
        let ca = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.pem()).unwrap();
        let env =
            RawConfig::from_env(|k| (k == "COURIER_OUTBOUND_CA_FILE").then(|| good.display().to_string())).unwrap();
        let c = Config::resolve(env.over(file), true).unwrap();
        assert_eq!(c.outbound_ca_file.as_deref(), Some(good.as_path()), "env over file");
        let plain = Config::resolve(RawConfig::default(), true).unwrap();
        assert_eq!(
            c.outbound_roots.len(),
            plain.outbound_roots.len() + 1,
            "the file's CA on top of the built-in roots"
        );

        let https: RawConfig = toml::from_str(
            "[chat]\nhook_url = \"https://hook.example.com/check\"\n[[webhooks.endpoints]]\nurl = \"https://hooks.example.com/\"\nsecret = \"0123456789abcdef\"\n",
        )
        .unwrap();
        let c = Config::resolve(https, true).unwrap();
        assert_eq!(c.webhooks.endpoints[0].url, "https://hooks.example.com/");
        assert!(c.chat.hook.is_some());
    }
}
