//! The TURN server state machine (RFC 8656, UDP relays only), sans I/O.
//!
//! [`Server`] owns every allocation. The shell feeds it what arrives — [`Server::handle_client`] for bytes from
//! a client's 5-tuple, [`Server::handle_peer`] for bytes a relay socket received, [`Server::handle_relay_opened`]
//! when the socket it asked for is bound (or could not be), [`Server::handle_client_closed`] when a TCP/TLS
//! connection ends — each with the current time. **After every input, drain [`Server::poll_output`] until it
//! returns `None`**, then sleep until [`Server::poll_timeout`] and call [`Server::handle_timeout`]; an extra
//! `handle_timeout` is a harmless no-op. The server never reads a clock.
//!
//! Authentication is the long-term mechanism with REST-style credentials (see [`crate::credentials`]): a
//! stateless nonce that goes stale after [`Config::nonce_lifetime`] (438), a username whose expiry has passed
//! is refused with 401 "credential expired". Relaying is limited by [`PeerPolicy`]: by default only towards the
//! SFU's own media address (no open relay); see its doc for the hairpin mapping.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::credentials;
use crate::stun::{attr, method, ChannelData, Class, Message, MessageBuilder, CHANNEL_MAX, CHANNEL_MIN};

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// ChannelData is padded to 4 bytes on stream transports.
    fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A client's 5-tuple: the key of its allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// One relay socket, named by the server; the shell maps it to a bound UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u64);

/// An IP network, `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// One address of the SFU: the one clients are told (`announced`, in its ICE candidates) and the one this host
/// reaches it on (`local`). They differ when the SFU announces a NAT'd public IP that this host cannot reach
/// (no hairpin) or binds the unspecified address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaAddr {
    pub announced: SocketAddr,
    pub local: SocketAddr,
}

/// Where relays may send. Nothing is open by default: a peer is either one of the SFU's [`MediaAddr`]s (its
/// exact IP *and* port — TURN permissions are per IP, so the port is checked on every send) or inside one of
/// `allowed_peers`, which an operator sets deliberately.
///
/// Hairpin: a packet a client sends towards `announced` leaves the relay towards `local`, and a packet that
/// arrives from `local` is reported to the client as coming from `announced`, so the client's ICE agent sees
/// exactly the candidate the SFU signalled.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub media: Vec<MediaAddr>,
    pub allowed_peers: Vec<Cidr>,
}

impl PeerPolicy {
    /// May a permission be installed for `ip` (the address the client names)?
    fn permits_ip(&self, ip: IpAddr) -> bool {
        self.media.iter().any(|m| m.announced.ip() == ip || m.local.ip() == ip)
            || self.allowed_peers.iter().any(|c| c.contains(ip))
    }

    /// Where a packet the client addresses to `peer` really goes; `None`: refused.
    fn route(&self, peer: SocketAddr) -> Option<SocketAddr> {
        if let Some(m) = self.media.iter().find(|m| m.announced == peer) {
            return Some(m.local);
        }
        if self.media.iter().any(|m| m.local == peer) || self.allowed_peers.iter().any(|c| c.contains(peer.ip())) {
            return Some(peer);
        }
        None
    }

    /// The address the client is told a packet from `from` came from.
    fn map_back(&self, from: SocketAddr) -> SocketAddr {
        self.media.iter().find(|m| m.local == from).map_or(from, |m| m.announced)
    }
}

/// Everything the server needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The REALM of the long-term credentials.
    pub realm: String,
    /// The shared secret of the REST credentials.
    pub secret: Vec<u8>,
    pub policy: PeerPolicy,
    /// Allocations at once, all clients together (486 beyond).
    pub max_allocations: usize,
    /// Allocations at once per identity (the part of the username after `<expiry>:`).
    pub max_allocations_per_identity: usize,
    /// Lifetime when the client asks for none or less (RFC 8656: 10 minutes).
    pub default_lifetime: Duration,
    /// Longest lifetime granted.
    pub max_lifetime: Duration,
    /// A nonce older than this is stale (438) and the client retries with a fresh one.
    pub nonce_lifetime: Duration,
}

impl Config {
    /// Defaults from RFC 8656 and caps that fit one SFU node.
    pub fn new(realm: impl Into<String>, secret: Vec<u8>, policy: PeerPolicy) -> Config {
        Config {
            realm: realm.into(),
            secret,
            policy,
            max_allocations: 1000,
            max_allocations_per_identity: 10,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send to the client on its 5-tuple (on TCP/TLS: write to that connection).
    ToClient { to: FiveTuple, data: Vec<u8> },
    /// Send from relay socket `relay` to `peer`.
    ToPeer { relay: RelayId, peer: SocketAddr, data: Vec<u8> },
    /// Bind a UDP socket (a port of the relay range, the IP family of `client`) and answer with
    /// [`Server::handle_relay_opened`].
    OpenRelay { relay: RelayId, client: SocketAddr },
    /// Close the relay socket: its allocation is gone.
    CloseRelay { relay: RelayId },
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests refused for credentials (401) — wrong password, expired, malformed username.
    pub auth_failures: u64,
    /// Permissions, channel binds or sends refused by the peer policy (403 or dropped).
    pub forbidden_peers: u64,
    /// Allocations refused by a cap (486).
    pub quota_refusals: u64,
    /// Inputs that did not parse, or came to no allocation.
    pub dropped: u64,
    /// Bytes relayed client → peer and peer → client.
    pub bytes_to_peers: u64,
    pub bytes_to_clients: u64,
}

const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// A relay socket the shell has not bound after this long fails the Allocate.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

struct Allocation {
    five: FiveTuple,
    /// The relayed transport address; `None` until the shell bound the socket.
    relayed: Option<SocketAddr>,
    username: String,
    identity: String,
    key: [u8; 16],
    /// Lifetime granted (answered once the socket is bound).
    lifetime: Duration,
    expires: Instant,
    /// The Allocate transaction and its success response (sent again for a retransmission).
    txid: [u8; 12],
    response: Option<Vec<u8>>,
    /// Peer IP (as the client names it) → permission expiry.
    permissions: HashMap<IpAddr, Instant>,
    /// Channel → (peer, expiry), and the reverse.
    channels: HashMap<u16, (SocketAddr, Instant)>,
    peer_channels: HashMap<SocketAddr, u16>,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }
}

/// An authenticated request's credentials.
struct Auth {
    username: String,
    identity: String,
    key: [u8; 16],
}

/// The TURN server. See the module doc for the run loop.
pub struct Server {
    config: Config,
    /// A moment and the Unix time then: credentials carry wall-clock expiries, everything else runs on `now`.
    epoch: (Instant, u64),
    allocations: HashMap<RelayId, Allocation>,
    by_five: HashMap<FiveTuple, RelayId>,
    per_identity: HashMap<String, usize>,
    /// (expiry, relay) of every allocation: `poll_timeout` is the first.
    expiries: BTreeSet<(Instant, RelayId)>,
    next_relay: u64,
    /// Counter in the transaction ids of Data indications.
    data_tx: u64,
    out: VecDeque<Output>,
    stats: Stats,
}

impl Server {
    /// A server whose clock reads Unix time `unix_secs` at `now`.
    pub fn new(config: Config, now: Instant, unix_secs: u64) -> Server {
        Server {
            config,
            epoch: (now, unix_secs),
            allocations: HashMap::new(),
            by_five: HashMap::new(),
            per_identity: HashMap::new(),
            expiries: BTreeSet::new(),
            next_relay: 1,
            data_tx: 0,
            out: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Allocations that exist now (pending ones included).
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The next thing the shell must do; drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Server::handle_timeout`] must run next: the first allocation expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Expires allocations (and with them their permissions and channels) due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, relay)) = self.expiries.first() {
            if t > now {
                break;
            }
            if let Some(a) = self.allocations.get(&relay) {
                if a.relayed.is_none() {
                    // The shell never bound the socket.
                    let err = error_response(method::ALLOCATE, a.txid, 508, "Insufficient Capacity");
                    self.out.push_back(Output::ToClient { to: a.five, data: err });
                }
            }
            self.remove(relay);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, e| *e > now);
            let peer_channels = &mut a.peer_channels;
            a.channels.retain(|_, (peer, e)| {
                let keep = *e > now;
                if !keep {
                    peer_channels.remove(peer);
                }
                keep
            });
        }
    }

    /// A TCP/TLS connection ended: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, five: FiveTuple) {
        if let Some(relay) = self.by_five.get(&five).copied() {
            self.remove(relay);
        }
    }

    /// The relay socket asked for by [`Output::OpenRelay`] is bound at `result` (the address to tell the client:
    /// the public IP when the socket listens on the unspecified address), or could not be bound (508).
    pub fn handle_relay_opened(&mut self, now: Instant, relay: RelayId, result: Option<SocketAddr>) {
        let Some(a) = self.allocations.get_mut(&relay) else {
            // Expired meanwhile: the shell must not keep the socket.
            self.out.push_back(Output::CloseRelay { relay });
            return;
        };
        if a.relayed.is_some() {
            return;
        }
        let Some(addr) = result else {
            let err = error_response(method::ALLOCATE, a.txid, 508, "Insufficient Capacity");
            self.out.push_back(Output::ToClient { to: a.five, data: err });
            self.remove_no_close(relay);
            return;
        };
        a.relayed = Some(addr);
        let resp = MessageBuilder::new(method::ALLOCATE, Class::Success, a.txid)
            .xor_address(attr::XOR_RELAYED_ADDRESS, addr)
            .u32_attr(attr::LIFETIME, a.lifetime.as_secs() as u32)
            .xor_address(attr::XOR_MAPPED_ADDRESS, a.five.client)
            .finish_with_integrity(&a.key);
        a.response = Some(resp.clone());
        let to = a.five;
        let lifetime = a.lifetime;
        self.set_expiry(relay, now + lifetime);
        self.out.push_back(Output::ToClient { to, data: resp });
    }

    /// Bytes from a client on `five`: a STUN request or indication, or ChannelData.
    pub fn handle_client(&mut self, now: Instant, five: FiveTuple, data: &[u8]) {
        if data.first().is_some_and(|b| b >> 6 == 1) {
            self.client_channel_data(now, five, data);
            return;
        }
        let Ok(msg) = Message::parse(data) else {
            self.stats.dropped += 1;
            return;
        };
        match (msg.class, msg.method) {
            (Class::Request, method::BINDING) => {
                let resp = MessageBuilder::new(method::BINDING, Class::Success, msg.transaction_id)
                    .xor_address(attr::XOR_MAPPED_ADDRESS, five.client)
                    .finish_with_fingerprint();
                self.out.push_back(Output::ToClient { to: five, data: resp });
            }
            (Class::Indication, method::SEND) => self.send_indication(now, five, &msg),
            (
                Class::Request,
                m @ (method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND),
            ) => {
                let auth = match self.authenticate(now, &msg) {
                    Ok(auth) => auth,
                    Err(resp) => {
                        self.out.push_back(Output::ToClient { to: five, data: resp });
                        return;
                    }
                };
                match m {
                    method::ALLOCATE => self.allocate(now, five, &msg, auth),
                    _ => self.on_allocation(now, five, &msg, auth),
                }
            }
            (Class::Request, m) => {
                let resp = error_response(m, msg.transaction_id, 400, "Bad Request: unknown method");
                self.out.push_back(Output::ToClient { to: five, data: resp });
            }
            _ => self.stats.dropped += 1,
        }
    }

    /// Bytes a relay socket received from `from`.
    pub fn handle_peer(&mut self, now: Instant, relay: RelayId, from: SocketAddr, data: &[u8]) {
        let peer = self.config.policy.map_back(from);
        let Some(a) = self.allocations.get(&relay) else {
            self.stats.dropped += 1;
            return;
        };
        if !a.permitted(peer.ip(), now) {
            self.stats.dropped += 1;
            return;
        }
        let to = a.five;
        let channel = a.peer_channels.get(&peer).copied().filter(|c| a.channels.get(c).is_some_and(|(_, e)| *e > now));
        let msg = match channel {
            Some(channel) => ChannelData::encode(channel, data, to.transport.is_stream()),
            None => MessageBuilder::new(method::DATA, Class::Indication, self.transaction_id(relay))
                .xor_address(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data)
                .finish(),
        };
        self.stats.bytes_to_clients += data.len() as u64;
        self.out.push_back(Output::ToClient { to, data: msg });
    }

    fn client_channel_data(&mut self, now: Instant, five: FiveTuple, data: &[u8]) {
        let Ok(cd) = ChannelData::parse(data) else {
            self.stats.dropped += 1;
            return;
        };
        let Some(a) = self.by_five.get(&five).and_then(|r| self.allocations.get(r)) else {
            self.stats.dropped += 1;
            return;
        };
        let Some(&(peer, expires)) = a.channels.get(&cd.channel) else {
            self.stats.dropped += 1;
            return;
        };
        if expires <= now {
            self.stats.dropped += 1;
            return;
        }
        let relay = self.by_five[&five];
        self.relay_to_peer(now, relay, peer, cd.data);
    }

    fn send_indication(&mut self, now: Instant, five: FiveTuple, msg: &Message<'_>) {
        let (Some(Ok(peer)), Some(data)) = (msg.xor_address(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA)) else {
            self.stats.dropped += 1;
            return;
        };
        let Some(&relay) = self.by_five.get(&five) else {
            self.stats.dropped += 1;
            return;
        };
        self.relay_to_peer(now, relay, peer, data);
    }

    /// Relays `data` to `peer` if a permission and the policy allow it; drops it otherwise.
    fn relay_to_peer(&mut self, now: Instant, relay: RelayId, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocations.get(&relay) else { return };
        if a.relayed.is_none() || !a.permitted(peer.ip(), now) {
            self.stats.dropped += 1;
            return;
        }
        let Some(dest) = self.config.policy.route(peer) else {
            // Same IP as the SFU but another port, say.
            self.stats.forbidden_peers += 1;
            return;
        };
        self.stats.bytes_to_peers += data.len() as u64;
        self.out.push_back(Output::ToPeer { relay, peer: dest, data: data.to_vec() });
    }

    fn allocate(&mut self, now: Instant, five: FiveTuple, msg: &Message<'_>, auth: Auth) {
        let txid = msg.transaction_id;
        let reply = |code, reason: &str| error_response_signed(method::ALLOCATE, txid, code, reason, &auth.key);
        if let Some(a) = self.by_five.get(&five).and_then(|r| self.allocations.get(r)) {
            if a.txid == txid {
                // A retransmission: answer again (or not yet, while the socket is being bound).
                if let Some(resp) = a.response.clone() {
                    self.out.push_back(Output::ToClient { to: five, data: resp });
                }
            } else {
                self.out.push_back(Output::ToClient { to: five, data: reply(437, "Allocation Mismatch") });
            }
            return;
        }
        let resp = match msg.requested_transport() {
            None => Some((400, "Bad Request: REQUESTED-TRANSPORT missing")),
            Some(17) => None,
            Some(_) => Some((442, "Unsupported Transport Protocol")),
        }
        .or_else(|| {
            msg.get(attr::REQUESTED_ADDRESS_FAMILY)
                .filter(|v| v.first() != Some(&1) || five.client.is_ipv6())
                .map(|_| (440, "Address Family not Supported"))
        })
        .or_else(|| {
            let total = self.allocations.len() >= self.config.max_allocations;
            let mine = self.per_identity.get(&auth.identity).copied().unwrap_or(0);
            (total || mine >= self.config.max_allocations_per_identity).then_some((486, "Allocation Quota Reached"))
        });
        if let Some((code, reason)) = resp {
            if code == 486 {
                self.stats.quota_refusals += 1;
            }
            self.out.push_back(Output::ToClient { to: five, data: reply(code, reason) });
            return;
        }
        let lifetime = self.lifetime(msg);
        let relay = RelayId(self.next_relay);
        self.next_relay += 1;
        *self.per_identity.entry(auth.identity.clone()).or_default() += 1;
        self.allocations.insert(
            relay,
            Allocation {
                five,
                relayed: None,
                username: auth.username,
                identity: auth.identity,
                key: auth.key,
                lifetime,
                expires: now,
                txid,
                response: None,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                peer_channels: HashMap::new(),
            },
        );
        self.by_five.insert(five, relay);
        self.set_expiry(relay, now + OPEN_TIMEOUT);
        self.out.push_back(Output::OpenRelay { relay, client: five.client });
    }

    /// Refresh, CreatePermission and ChannelBind: they act on the allocation of `five`.
    fn on_allocation(&mut self, now: Instant, five: FiveTuple, msg: &Message<'_>, auth: Auth) {
        let txid = msg.transaction_id;
        let m = msg.method;
        let key = auth.key;
        let reply = |code, reason: &str| error_response_signed(m, txid, code, reason, &key);
        let Some(relay) = self.by_five.get(&five).copied().filter(|r| self.allocations[r].relayed.is_some()) else {
            self.out.push_back(Output::ToClient { to: five, data: reply(437, "Allocation Mismatch") });
            return;
        };
        if self.allocations[&relay].username != auth.username {
            self.out.push_back(Output::ToClient { to: five, data: reply(441, "Wrong Credentials") });
            return;
        }
        let resp = match m {
            method::REFRESH => {
                let requested = msg.u32_attr(attr::LIFETIME);
                if requested == Some(0) {
                    self.remove(relay);
                    MessageBuilder::new(m, Class::Success, txid).u32_attr(attr::LIFETIME, 0).finish_with_integrity(&key)
                } else {
                    let lifetime = self.lifetime(msg);
                    self.set_expiry(relay, now + lifetime);
                    MessageBuilder::new(m, Class::Success, txid)
                        .u32_attr(attr::LIFETIME, lifetime.as_secs() as u32)
                        .finish_with_integrity(&key)
                }
            }
            method::CREATE_PERMISSION => {
                let peers: Result<Vec<SocketAddr>, _> = msg.xor_peer_addresses().collect();
                match peers {
                    Ok(peers) if !peers.is_empty() => {
                        if peers.iter().all(|p| self.config.policy.permits_ip(p.ip())) {
                            let a = self.allocations.get_mut(&relay).expect("looked up above");
                            for p in peers {
                                a.permissions.insert(p.ip(), now + PERMISSION_LIFETIME);
                            }
                            MessageBuilder::new(m, Class::Success, txid).finish_with_integrity(&key)
                        } else {
                            self.stats.forbidden_peers += 1;
                            reply(403, "Forbidden: this server relays only to its own media address")
                        }
                    }
                    _ => reply(400, "Bad Request: XOR-PEER-ADDRESS missing or malformed"),
                }
            }
            _ => self.channel_bind(now, relay, msg, &key),
        };
        self.out.push_back(Output::ToClient { to: five, data: resp });
    }

    fn channel_bind(&mut self, now: Instant, relay: RelayId, msg: &Message<'_>, key: &[u8]) -> Vec<u8> {
        let (m, txid) = (msg.method, msg.transaction_id);
        let (Some(channel), Some(Ok(peer))) = (msg.channel_number(), msg.xor_address(attr::XOR_PEER_ADDRESS)) else {
            return error_response_signed(m, txid, 400, "Bad Request: CHANNEL-NUMBER or XOR-PEER-ADDRESS", key);
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            return error_response_signed(m, txid, 400, "Bad Request: channel number out of range", key);
        }
        if self.config.policy.route(peer).is_none() {
            self.stats.forbidden_peers += 1;
            return error_response_signed(
                m,
                txid,
                403,
                "Forbidden: this server relays only to its own media address",
                key,
            );
        }
        let a = self.allocations.get_mut(&relay).expect("checked by the caller");
        let live = |e: &Instant| *e > now;
        let other_peer = a.channels.get(&channel).is_some_and(|(p, e)| live(e) && *p != peer);
        let other_channel = a
            .peer_channels
            .get(&peer)
            .is_some_and(|c| *c != channel && a.channels.get(c).is_some_and(|(_, e)| live(e)));
        if other_peer || other_channel {
            return error_response_signed(m, txid, 400, "Bad Request: channel or peer bound otherwise", key);
        }
        a.channels.insert(channel, (peer, now + CHANNEL_LIFETIME));
        a.peer_channels.insert(peer, channel);
        a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        MessageBuilder::new(m, Class::Success, txid).finish_with_integrity(key)
    }

    /// The lifetime a request asks for, within [default, max].
    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let asked =
            msg.u32_attr(attr::LIFETIME).map_or(self.config.default_lifetime, |s| Duration::from_secs(s.into()));
        asked.clamp(self.config.default_lifetime.min(self.config.max_lifetime), self.config.max_lifetime)
    }

    /// Checks the long-term credentials of a request; `Err` is the error response to send.
    fn authenticate(&mut self, now: Instant, msg: &Message<'_>) -> Result<Auth, Vec<u8>> {
        let (m, txid) = (msg.method, msg.transaction_id);
        let unknown = msg.unknown_required();
        if !unknown.is_empty() {
            let list: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            return Err(MessageBuilder::new(m, Class::Error, txid)
                .error(420, "Unknown Attribute")
                .attr(attr::UNKNOWN_ATTRIBUTES, &list)
                .finish());
        }
        if !msg.has_integrity() {
            return Err(self.challenge(now, m, txid, 401, "Unauthorized"));
        }
        let (Some(username), Some(realm), Some(nonce)) =
            (msg.text(attr::USERNAME), msg.text(attr::REALM), msg.text(attr::NONCE))
        else {
            return Err(error_response(m, txid, 400, "Bad Request: USERNAME, REALM and NONCE are required"));
        };
        if !self.nonce_is_fresh(now, nonce) {
            return Err(self.challenge(now, m, txid, 438, "Stale Nonce"));
        }
        let fail = |s: &mut Self, reason| {
            s.stats.auth_failures += 1;
            Err(s.challenge(now, m, txid, 401, reason))
        };
        let Some((expiry, identity)) = credentials::parse_username(username) else {
            return fail(self, "Unauthorized: username is not <expiry>:<name>");
        };
        if expiry < self.unix_secs(now) {
            return fail(self, "Unauthorized: credential expired");
        }
        if realm != self.config.realm {
            return fail(self, "Unauthorized: wrong realm");
        }
        let password = credentials::password(&self.config.secret, username);
        let key = credentials::long_term_key(username, realm, &password);
        if !msg.check_integrity(&key) {
            return fail(self, "Unauthorized: wrong password");
        }
        Ok(Auth { username: username.to_owned(), identity: identity.to_owned(), key })
    }

    /// A 401 or 438 with REALM and a fresh NONCE (RFC 8489 §9.2.4).
    fn challenge(&self, now: Instant, m: u16, txid: [u8; 12], code: u16, reason: &str) -> Vec<u8> {
        MessageBuilder::new(m, Class::Error, txid)
            .error(code, reason)
            .attr(attr::REALM, self.config.realm.as_bytes())
            .attr(attr::NONCE, self.nonce(now).as_bytes())
            .finish()
    }

    fn unix_secs(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    /// A stateless nonce: the time it was issued (milliseconds since the epoch instant) and a MAC over it.
    fn nonce(&self, now: Instant) -> String {
        let issued = now.saturating_duration_since(self.epoch.0).as_millis() as u64;
        format!("{issued:x}-{}", self.nonce_tag(issued))
    }

    fn nonce_tag(&self, issued: u64) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.config.secret).expect("HMAC takes keys of any length");
        mac.update(b"courier-turn-nonce");
        mac.update(&issued.to_be_bytes());
        mac.finalize().into_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn nonce_is_fresh(&self, now: Instant, nonce: &str) -> bool {
        let Some((issued, tag)) = nonce.split_once('-') else { return false };
        let Ok(issued) = u64::from_str_radix(issued, 16) else { return false };
        let age = now.saturating_duration_since(self.epoch.0).as_millis() as u64;
        tag == self.nonce_tag(issued) && age.saturating_sub(issued) <= self.config.nonce_lifetime.as_millis() as u64
    }

    /// A transaction id for a Data indication (unique enough: relay and a counter).
    fn transaction_id(&mut self, relay: RelayId) -> [u8; 12] {
        self.data_tx = self.data_tx.wrapping_add(1);
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&(relay.0 as u32).to_be_bytes());
        t[4..].copy_from_slice(&self.data_tx.to_be_bytes());
        t
    }

    fn set_expiry(&mut self, relay: RelayId, at: Instant) {
        if let Some(a) = self.allocations.get_mut(&relay) {
            self.expiries.remove(&(a.expires, relay));
            a.expires = at;
            self.expiries.insert((at, relay));
        }
    }

    fn remove(&mut self, relay: RelayId) {
        // An allocation whose socket is not bound yet has nothing to close: if the socket comes,
        // handle_relay_opened closes it.
        if self.allocations.get(&relay).is_some_and(|a| a.relayed.is_some()) {
            self.out.push_back(Output::CloseRelay { relay });
        }
        self.remove_no_close(relay);
    }

    fn remove_no_close(&mut self, relay: RelayId) {
        let Some(a) = self.allocations.remove(&relay) else { return };
        self.expiries.remove(&(a.expires, relay));
        self.by_five.remove(&a.five);
        if let Some(n) = self.per_identity.get_mut(&a.identity) {
            *n -= 1;
            if *n == 0 {
                self.per_identity.remove(&a.identity);
            }
        }
    }
}

fn error_response(m: u16, txid: [u8; 12], code: u16, reason: &str) -> Vec<u8> {
    MessageBuilder::new(m, Class::Error, txid).error(code, reason).finish()
}

fn error_response_signed(m: u16, txid: [u8; 12], code: u16, reason: &str, key: &[u8]) -> Vec<u8> {
    MessageBuilder::new(m, Class::Error, txid).error(code, reason).finish_with_integrity(key)
}
