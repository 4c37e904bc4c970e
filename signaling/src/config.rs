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
    pub public_ip: Option<IpAddr>,
    pub data_dir: Option<PathBuf>,
    pub web_root: Option<PathBuf>,
    pub workers: Option<usize>,
    /// Starting send-side bandwidth estimate per subscriber, kbit/s; 0 turns estimation and allocation off.
    pub bwe_initial_kbps: Option<u32>,
    pub max_message_bytes: Option<usize>,
    pub log_format: Option<String>,
    /// API key → secret.
    pub keys: Option<HashMap<String, String>>,
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
            public_ip: parse("COURIER_PUBLIC_IP", get("COURIER_PUBLIC_IP"))?,
            data_dir: get("COURIER_DATA_DIR").map(PathBuf::from),
            web_root: get("COURIER_WEB_ROOT").map(PathBuf::from),
            workers: parse("COURIER_WORKERS", get("COURIER_WORKERS"))?,
            bwe_initial_kbps: parse("COURIER_BWE_INITIAL_KBPS", get("COURIER_BWE_INITIAL_KBPS"))?,
            max_message_bytes: parse("COURIER_MAX_MESSAGE_BYTES", get("COURIER_MAX_MESSAGE_BYTES"))?,
            log_format: get("COURIER_LOG_FORMAT"),
            keys: get("COURIER_KEYS").map(|s| parse_keys(&s)).transpose()?,
        })
    }

    /// `self` over `lower`: every value set here wins.
    pub fn over(self, lower: RawConfig) -> RawConfig {
        RawConfig {
            http_addr: self.http_addr.or(lower.http_addr),
            udp_addr: self.udp_addr.or(lower.udp_addr),
            public_ip: self.public_ip.or(lower.public_ip),
            data_dir: self.data_dir.or(lower.data_dir),
            web_root: self.web_root.or(lower.web_root),
            workers: self.workers.or(lower.workers),
            bwe_initial_kbps: self.bwe_initial_kbps.or(lower.bwe_initial_kbps),
            max_message_bytes: self.max_message_bytes.or(lower.max_message_bytes),
            log_format: self.log_format.or(lower.log_format),
            keys: self.keys.or(lower.keys),
        }
    }
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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub udp_addr: SocketAddr,
    pub public_ip: Option<IpAddr>,
    pub data_dir: PathBuf,
    pub web_root: Option<PathBuf>,
    pub workers: usize,
    /// `None`: bandwidth estimation and stream allocation off.
    pub bwe_initial_kbps: Option<u32>,
    pub max_message_bytes: usize,
    pub log_format: LogFormat,
    pub keys: HashMap<String, String>,
    pub dev: bool,
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
        if let Some((k, _)) = keys.iter().find(|(_, s)| s.len() < 8 && !dev) {
            bail!("the secret of API key {k:?} is shorter than 8 bytes");
        }
        let udp_addr = raw.udp_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7881)));
        if udp_addr.ip().is_unspecified() && raw.public_ip.is_none() {
            bail!("udp_addr {udp_addr} is unspecified: set public_ip to the address clients reach");
        }
        let web_root = raw.web_root.or_else(|| Some(PathBuf::from("web-demo"))).filter(|p| p.is_dir());
        Ok(Config {
            http_addr: raw.http_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7880))),
            udp_addr,
            public_ip: raw.public_ip,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("courier-data")),
            web_root,
            workers,
            bwe_initial_kbps,
            max_message_bytes,
            log_format,
            keys,
            dev,
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
    fn refusals() {
        assert!(Config::resolve(RawConfig::default(), false).is_err(), "no keys outside dev");
        assert!(Config::resolve(RawConfig::default(), true).is_ok(), "dev creates keys later");
        assert!(RawConfig::from_env(|k| (k == "COURIER_WORKERS").then(|| "many".into())).is_err());
        assert!(parse_keys("nocolon").is_err());
        assert!(toml::from_str::<RawConfig>("bogus = 1").is_err(), "unknown keys are refused");
        let raw = RawConfig { udp_addr: Some("0.0.0.0:5".parse().unwrap()), ..Default::default() };
        assert!(Config::resolve(raw, true).is_err(), "unspecified UDP needs public_ip");
    }
}
