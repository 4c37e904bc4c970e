//! TURN for clients that cannot reach the SFU's UDP port directly: the built-in TURN server's configuration, its
//! start and stop, and the one place that decides which `ice_servers` (with credentials) a participant gets.
//!
//! The TURN protocol itself is the sans-I/O `courier-turn` crate; [`shell`] is its async shell (UDP and TCP
//! listeners on one port, a TLS listener with the server's `[tls]` certificate, one UDP socket per relay). Or the
//! operator runs an external TURN server (coturn with `use-auth-secret`) and Courier only mints credentials for it
//! (`[turn] urls` + `secret`).
//!
//! Credentials follow the TURN REST convention: username `<expiry>:<identity>`, password
//! `base64(HMAC-SHA1(secret, username))`, valid for `credential_ttl_secs` (default 4 h) from the join.

pub mod shell;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use courier_protocol::IceServer;
use courier_turn::Cidr;
use serde::Deserialize;

/// The raw `[turn]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTurnConfig {
    /// Start the built-in TURN server (default `false`).
    pub enabled: Option<bool>,
    /// Its UDP and TCP listener (default: the media UDP address's IP, port 3478).
    pub addr: Option<SocketAddr>,
    /// Its TLS listener, with the `[tls]` certificate (default, when `[tls]` is set: the same IP, port 5349).
    pub tls_addr: Option<SocketAddr>,
    /// The host name (or IP) put in the TURN URLs; `turns:` needs the certificate's name. Default: `public_ip`,
    /// else the host the client's WebSocket used.
    pub host: Option<String>,
    /// The shared secret of the credentials (at least 16 bytes). Default for the built-in server: random at
    /// start (one node only; a cluster or an external server needs it set).
    pub secret: Option<String>,
    /// Long-term credential realm (default `courier`).
    pub realm: Option<String>,
    /// External TURN server URLs (e.g. coturn): Courier then starts no TURN server and only mints credentials.
    pub urls: Option<Vec<String>>,
    /// Relay sockets bind ports in this range (default 49152-65535).
    pub relay_port_min: Option<u16>,
    pub relay_port_max: Option<u16>,
    /// Allocations at once, all clients (default 1000).
    pub max_allocations: Option<usize>,
    /// Allocations at once per identity (default 10).
    pub max_allocations_per_identity: Option<usize>,
    /// TCP and TLS connections at once (default 1024).
    pub max_connections: Option<usize>,
    /// Networks (CIDR) relays may also send to, besides the SFU's own media address. Empty by default: no open
    /// relay.
    pub allowed_peers: Option<Vec<String>>,
    /// How long credentials are valid after the join, seconds (default 14400 = 4 h, at most 86400).
    pub credential_ttl_secs: Option<u64>,
}

impl RawTurnConfig {
    pub fn over(self, lower: RawTurnConfig) -> RawTurnConfig {
        RawTurnConfig {
            enabled: self.enabled.or(lower.enabled),
            addr: self.addr.or(lower.addr),
            tls_addr: self.tls_addr.or(lower.tls_addr),
            host: self.host.or(lower.host),
            secret: self.secret.or(lower.secret),
            realm: self.realm.or(lower.realm),
            urls: self.urls.or(lower.urls),
            relay_port_min: self.relay_port_min.or(lower.relay_port_min),
            relay_port_max: self.relay_port_max.or(lower.relay_port_max),
            max_allocations: self.max_allocations.or(lower.max_allocations),
            max_allocations_per_identity: self.max_allocations_per_identity.or(lower.max_allocations_per_identity),
            max_connections: self.max_connections.or(lower.max_connections),
            allowed_peers: self.allowed_peers.or(lower.allowed_peers),
            credential_ttl_secs: self.credential_ttl_secs.or(lower.credential_ttl_secs),
        }
    }

    /// From `COURIER_TURN_*` variables.
    pub fn from_env(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<RawTurnConfig> {
        fn parse<T: std::str::FromStr>(get: &impl Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            get(name).map(|s| s.parse::<T>().map_err(|e| anyhow::anyhow!("{name}={s:?}: {e}"))).transpose()
        }
        let list = |name: &str| {
            get(name).map(|s| s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect())
        };
        Ok(RawTurnConfig {
            enabled: parse(get, "COURIER_TURN_ENABLED")?,
            addr: parse(get, "COURIER_TURN_ADDR")?,
            tls_addr: parse(get, "COURIER_TURN_TLS_ADDR")?,
            host: get("COURIER_TURN_HOST"),
            secret: get("COURIER_TURN_SECRET"),
            realm: get("COURIER_TURN_REALM"),
            urls: list("COURIER_TURN_URLS"),
            relay_port_min: parse(get, "COURIER_TURN_RELAY_PORT_MIN")?,
            relay_port_max: parse(get, "COURIER_TURN_RELAY_PORT_MAX")?,
            max_allocations: parse(get, "COURIER_TURN_MAX_ALLOCATIONS")?,
            max_allocations_per_identity: parse(get, "COURIER_TURN_MAX_ALLOCATIONS_PER_IDENTITY")?,
            max_connections: parse(get, "COURIER_TURN_MAX_CONNECTIONS")?,
            allowed_peers: list("COURIER_TURN_ALLOWED_PEERS"),
            credential_ttl_secs: parse(get, "COURIER_TURN_CREDENTIAL_TTL_SECS")?,
        })
    }

    /// Defaults, then check. `udp_addr`, `public_ip` and `tls` are the server's.
    pub fn resolve(self, udp_addr: SocketAddr, public_ip: Option<IpAddr>, tls: bool) -> anyhow::Result<TurnConfig> {
        let urls = self.urls.unwrap_or_default();
        let enabled = self.enabled.unwrap_or(false);
        if enabled && !urls.is_empty() {
            bail!("turn: `enabled` starts the built-in TURN server and `urls` names an external one; set one of them");
        }
        if let Some(s) = &self.secret {
            if s.len() < 16 {
                bail!("turn.secret must be at least 16 bytes");
            }
        }
        let mode = if !urls.is_empty() {
            for u in &urls {
                if !(u.starts_with("turn:") || u.starts_with("turns:")) {
                    bail!("turn.urls: {u:?} is not a turn: or turns: URL");
                }
            }
            if self.secret.is_none() {
                bail!("turn.urls (an external TURN server) needs turn.secret, the secret that server shares");
            }
            TurnMode::External { urls }
        } else if enabled {
            let addr = self.addr.unwrap_or(SocketAddr::new(udp_addr.ip(), 3478));
            let tls_addr = match (self.tls_addr, tls) {
                (Some(_), false) => bail!("turn.tls_addr needs the [tls] certificate"),
                (Some(a), true) => Some(a),
                (None, true) => Some(SocketAddr::new(addr.ip(), 5349)),
                (None, false) => None,
            };
            if addr.ip().is_unspecified() && public_ip.is_none() && self.host.is_none() {
                bail!("turn.addr {addr} is unspecified: set public_ip (or turn.host) to the address clients reach");
            }
            TurnMode::BuiltIn { addr, tls_addr }
        } else {
            TurnMode::Off
        };
        let relay_ports = self.relay_port_min.unwrap_or(49152)..=self.relay_port_max.unwrap_or(65535);
        if relay_ports.is_empty() || *relay_ports.start() == 0 {
            bail!("turn.relay_port_min must be at least 1 and at most turn.relay_port_max");
        }
        let allowed_peers = self
            .allowed_peers
            .unwrap_or_default()
            .iter()
            .map(|s| Cidr::parse(s).with_context(|| format!("turn.allowed_peers: {s:?} is not an IP network (CIDR)")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let credential_ttl_secs = self.credential_ttl_secs.unwrap_or(4 * 3600);
        if !(60..=86_400).contains(&credential_ttl_secs) {
            bail!("turn.credential_ttl_secs must be between 60 and 86400");
        }
        let max_allocations = self.max_allocations.unwrap_or(1000);
        let max_allocations_per_identity = self.max_allocations_per_identity.unwrap_or(10);
        let max_connections = self.max_connections.unwrap_or(1024);
        if max_allocations == 0 || max_allocations_per_identity == 0 || max_connections == 0 {
            bail!("turn.max_allocations, max_allocations_per_identity and max_connections must be at least 1");
        }
        Ok(TurnConfig {
            mode,
            host: self.host.filter(|h| !h.is_empty()),
            secret: self.secret,
            realm: self.realm.unwrap_or_else(|| "courier".into()),
            relay_ports,
            max_allocations,
            max_allocations_per_identity,
            max_connections,
            allowed_peers,
            credential_ttl: Duration::from_secs(credential_ttl_secs),
        })
    }
}

/// Built-in, external, or no TURN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnMode {
    Off,
    /// The built-in server on `addr` (UDP and TCP) and `tls_addr`.
    BuiltIn {
        addr: SocketAddr,
        tls_addr: Option<SocketAddr>,
    },
    /// An external server at these URLs; Courier mints its credentials.
    External {
        urls: Vec<String>,
    },
}

/// The validated `[turn]` table.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub mode: TurnMode,
    pub host: Option<String>,
    pub secret: Option<String>,
    pub realm: String,
    pub relay_ports: std::ops::RangeInclusive<u16>,
    pub max_allocations: usize,
    pub max_allocations_per_identity: usize,
    pub max_connections: usize,
    pub allowed_peers: Vec<Cidr>,
    pub credential_ttl: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        RawTurnConfig::default()
            .resolve(SocketAddr::from(([127, 0, 0, 1], 7881)), None, false)
            .expect("the defaults are valid")
    }
}

/// TURN as the rest of the server sees it: the credentials it hands out and, for the built-in server, the running
/// listeners.
pub struct Turn {
    /// `None`: no TURN at all.
    offer: Option<Offer>,
    shell: Option<shell::TurnShell>,
}

/// What `ice_servers` is made of.
struct Offer {
    secret: Vec<u8>,
    ttl: Duration,
    /// External URLs, complete.
    urls: Vec<String>,
    /// Built-in: the ports, with the host filled in per request.
    builtin: Option<(u16, Option<u16>)>,
    host: Option<String>,
}

impl Turn {
    /// Starts the built-in server (if configured). `media` is the SFU's UDP address as bound and `public_ip` what
    /// it announces.
    pub async fn start(
        config: &TurnConfig,
        media: SocketAddr,
        public_ip: Option<IpAddr>,
        tls: Option<std::sync::Arc<crate::tls::CertFiles>>,
    ) -> anyhow::Result<Turn> {
        let secret = config.secret.clone().map(String::into_bytes).unwrap_or_else(|| {
            use rand::RngCore;
            let mut s = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut s);
            s
        });
        let host = config.host.clone().or_else(|| public_ip.map(|ip| ip.to_string()));
        match &config.mode {
            TurnMode::Off => Ok(Turn { offer: None, shell: None }),
            TurnMode::External { urls } => Ok(Turn {
                offer: Some(Offer { secret, ttl: config.credential_ttl, urls: urls.clone(), builtin: None, host }),
                shell: None,
            }),
            TurnMode::BuiltIn { addr, tls_addr } => {
                let tls_addr = match (tls_addr, tls) {
                    (Some(a), Some(files)) => Some((*a, files)),
                    _ => None,
                };
                let shell = shell::TurnShell::start(config, &secret, *addr, tls_addr, media, public_ip)
                    .await
                    .context("starting the TURN server")?;
                let builtin = Some((shell.addr().port(), shell.tls_addr().map(|a| a.port())));
                Ok(Turn {
                    offer: Some(Offer { secret, ttl: config.credential_ttl, urls: Vec::new(), builtin, host }),
                    shell: Some(shell),
                })
            }
        }
    }

    /// The built-in server, when it runs.
    pub fn shell(&self) -> Option<&shell::TurnShell> {
        self.shell.as_ref()
    }

    /// The `ice_servers` for participant `identity`: TURN URLs with a credential valid for `credential_ttl_secs`
    /// from now. `request_host` is the host the client reached this server by (its `Host` header, port removed),
    /// used for the built-in server's URLs when neither `turn.host` nor `public_ip` is set. Empty when TURN is off.
    /// The join (`joined.ice_servers`) and the WHIP/WHEP endpoints (`Link: <…>; rel="ice-server"`) both call this.
    pub fn ice_servers(&self, identity: &str, request_host: Option<&str>) -> Vec<IceServer> {
        let Some(offer) = &self.offer else { return Vec::new() };
        let urls = match offer.builtin {
            None => offer.urls.clone(),
            Some((port, tls_port)) => {
                let Some(host) = offer.host.as_deref().or(request_host).filter(|h| !h.is_empty()) else {
                    return Vec::new();
                };
                // An IPv6 literal goes in brackets.
                let host =
                    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
                let mut urls =
                    vec![format!("turn:{host}:{port}?transport=udp"), format!("turn:{host}:{port}?transport=tcp")];
                if let Some(tls_port) = tls_port {
                    urls.push(format!("turns:{host}:{tls_port}?transport=tcp"));
                }
                urls
            }
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let cred = courier_turn::credentials::mint(&offer.secret, identity, now + offer.ttl.as_secs());
        vec![IceServer { urls, username: cred.username, credential: cred.password }]
    }

    /// Stops the built-in server's listeners and relays.
    pub async fn shutdown(&self) {
        if let Some(s) = &self.shell {
            s.shutdown().await;
        }
    }
}

/// The host part of a `Host` header (`example.com:7880` → `example.com`, `[::1]:7880` → `::1`).
pub fn host_of(header: &str) -> &str {
    if let Some(rest) = header.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    header.rsplit_once(':').map_or(header, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { header })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(raw: RawTurnConfig, tls: bool) -> anyhow::Result<TurnConfig> {
        raw.resolve(SocketAddr::from(([127, 0, 0, 1], 7881)), None, tls)
    }

    #[test]
    fn defaults_and_checks() {
        assert_eq!(TurnConfig::default().mode, TurnMode::Off);
        let on = resolve(RawTurnConfig { enabled: Some(true), ..Default::default() }, true).unwrap();
        assert_eq!(
            on.mode,
            TurnMode::BuiltIn {
                addr: "127.0.0.1:3478".parse().unwrap(),
                tls_addr: Some("127.0.0.1:5349".parse().unwrap())
            }
        );
        assert_eq!(on.relay_ports, 49152..=65535);
        let ext = RawTurnConfig { urls: Some(vec!["turn:t.example:3478".into()]), ..Default::default() };
        assert!(resolve(ext.clone(), false).is_err(), "an external server needs the secret");
        let ext = RawTurnConfig { secret: Some("0123456789abcdef".into()), ..ext };
        assert!(matches!(resolve(ext.clone(), false).unwrap().mode, TurnMode::External { .. }));
        assert!(resolve(RawTurnConfig { enabled: Some(true), ..ext }, false).is_err(), "both at once");
        let bad = [
            RawTurnConfig { secret: Some("short".into()), ..Default::default() },
            RawTurnConfig {
                enabled: Some(true),
                tls_addr: Some("127.0.0.1:5349".parse().unwrap()),
                ..Default::default()
            },
            RawTurnConfig { relay_port_min: Some(5000), relay_port_max: Some(4000), ..Default::default() },
            RawTurnConfig { allowed_peers: Some(vec!["10.0.0.0/99".into()]), ..Default::default() },
            RawTurnConfig { credential_ttl_secs: Some(10), ..Default::default() },
            RawTurnConfig {
                urls: Some(vec!["http://x".into()]),
                secret: Some("0123456789abcdef".into()),
                ..Default::default()
            },
            RawTurnConfig { enabled: Some(true), addr: Some("0.0.0.0:3478".parse().unwrap()), ..Default::default() },
        ];
        for raw in bad {
            assert!(resolve(raw.clone(), false).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn external_ice_servers_carry_a_credential_the_secret_verifies() {
        let raw = RawTurnConfig {
            urls: Some(vec!["turns:turn.example.com:443?transport=tcp".into()]),
            secret: Some("0123456789abcdef".into()),
            ..Default::default()
        };
        let config = resolve(raw, false).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let turn = rt.block_on(Turn::start(&config, "127.0.0.1:7881".parse().unwrap(), None, None)).unwrap();
        let servers = turn.ice_servers("alice", Some("ignored.example"));
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls, vec!["turns:turn.example.com:443?transport=tcp"]);
        let (expiry, who) = courier_turn::credentials::parse_username(&servers[0].username).unwrap();
        assert_eq!(who, "alice");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!((now + 4 * 3600 - 5..=now + 4 * 3600 + 5).contains(&expiry));
        assert_eq!(
            servers[0].credential,
            courier_turn::credentials::password(b"0123456789abcdef", &servers[0].username)
        );
        let off =
            rt.block_on(Turn::start(&TurnConfig::default(), "127.0.0.1:7881".parse().unwrap(), None, None)).unwrap();
        assert!(off.ice_servers("alice", Some("h")).is_empty());
    }

    #[test]
    fn host_header_parsing() {
        assert_eq!(host_of("example.com:7880"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[::1]:7880"), "::1");
        assert_eq!(host_of("127.0.0.1:80"), "127.0.0.1");
    }
}
