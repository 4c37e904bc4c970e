//! The TURN state machine under simulated time: every request type, its error paths and every expiry.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use courier_turn::credentials::{self, Credential};
use courier_turn::stun::{attr, method, ChannelData, Class, Message, MessageBuilder};
use courier_turn::{Cidr, Config, FiveTuple, MediaAddr, Output, PeerPolicy, RelayId, Server, Transport};

const SECRET: &[u8] = b"test-secret";
const REALM: &str = "courier";
const UNIX0: u64 = 1_800_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The SFU announces 203.0.113.5:4000 and is reached at 127.0.0.1:4000 (a NAT'd public IP, no hairpin).
fn media() -> MediaAddr {
    MediaAddr { announced: addr("203.0.113.5:4000"), local: addr("127.0.0.1:4000") }
}

struct Harness {
    server: Server,
    now: Instant,
    t0: Instant,
    tx: u32,
    /// Outputs not addressed to the client of the last `send`.
    pending: Vec<Output>,
}

/// A client on one 5-tuple with one credential.
struct Client {
    five: FiveTuple,
    cred: Credential,
    nonce: String,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut Config)) -> Harness {
        let mut config =
            Config::new(REALM, SECRET.to_vec(), PeerPolicy { media: vec![media()], allowed_peers: vec![] });
        f(&mut config);
        let t0 = Instant::now();
        Harness { server: Server::new(config, t0, UNIX0), now: t0, t0, tx: 0, pending: Vec::new() }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now);
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.server.poll_output()).collect()
    }

    fn client(&self, transport: Transport, port: u16, who: &str, valid_for: u64) -> Client {
        let now_unix = UNIX0 + (self.now - self.t0).as_secs();
        Client {
            five: FiveTuple {
                transport,
                client: SocketAddr::from(([198, 51, 100, 1], port)),
                server: addr("192.0.2.1:3478"),
            },
            cred: credentials::mint(SECRET, who, now_unix + valid_for),
            nonce: String::new(),
        }
    }

    fn txid(&mut self) -> [u8; 12] {
        self.tx += 1;
        let mut t = [7u8; 12];
        t[..4].copy_from_slice(&self.tx.to_be_bytes());
        t
    }

    /// Sends a request, answering a 401/438 challenge once; binds a relay socket the server asks for (port
    /// 50000 + relay id, as if `public_ip` were announced); returns the final response.
    fn request(&mut self, c: &mut Client, m: u16, build: impl Fn(MessageBuilder) -> MessageBuilder) -> Vec<u8> {
        for _ in 0..2 {
            let tx = self.txid();
            let bytes = signed(c, build(MessageBuilder::new(m, Class::Request, tx)));
            let resp = self.send(c, &bytes).pop().expect("a response");
            let msg = Message::parse(&resp).unwrap();
            match msg.error_code() {
                Some((401, _)) if c.nonce.is_empty() => c.nonce = msg.text(attr::NONCE).unwrap().to_owned(),
                Some((438, _)) => c.nonce = msg.text(attr::NONCE).unwrap().to_owned(),
                _ => return resp,
            }
        }
        panic!("challenged twice");
    }

    /// Feeds `bytes` from `c`, opens relays asked for, returns what went to `c`; other outputs go to `pending`.
    fn send(&mut self, c: &Client, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.server.handle_client(self.now, c.five, bytes);
        let mut out = self.outputs();
        if let Some(relay) = out.iter().find_map(|o| match o {
            Output::OpenRelay { relay, .. } => Some(*relay),
            _ => None,
        }) {
            self.server.handle_relay_opened(self.now, relay, Some(relayed(relay)));
            out.extend(self.outputs());
        }
        let mut mine = Vec::new();
        for o in out {
            match o {
                Output::ToClient { to, data } if to == c.five => mine.push(data),
                Output::OpenRelay { .. } => {}
                o => self.pending.push(o),
            }
        }
        mine
    }

    /// CreatePermission for `peer`: the error code, if any.
    fn permit(&mut self, c: &mut Client, peer: SocketAddr) -> Option<u16> {
        code(&self.request(c, method::CREATE_PERMISSION, |b| peer_of(b, peer)))
    }

    fn allocate(&mut self, c: &mut Client) -> Vec<u8> {
        self.request(c, method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]))
    }
}

/// A harness with one client ("alice", credential valid `valid_for` s) whose allocation succeeded.
fn allocated(transport: Transport, valid_for: u64) -> (Harness, Client) {
    let mut h = Harness::new();
    let mut c = h.client(transport, 5000, "alice", valid_for);
    let resp = h.allocate(&mut c);
    assert_eq!(code(&resp), None, "{}", reason(&resp));
    (h, c)
}

/// A harness, a client that has its nonce, and its signed Allocate (not sent yet).
fn signed_allocate() -> (Harness, Client, Vec<u8>) {
    let mut h = Harness::new();
    let mut c = h.client(Transport::Udp, 5000, "alice", 600);
    let req = MessageBuilder::new(method::ALLOCATE, Class::Request, [1; 12]).finish();
    let resp = h.send(&c, &req).pop().unwrap();
    c.nonce = Message::parse(&resp).unwrap().text(attr::NONCE).unwrap().to_owned();
    let allocate = MessageBuilder::new(method::ALLOCATE, Class::Request, [2; 12]);
    let req = signed(&c, allocate.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
    (h, c, req)
}

fn relayed(relay: RelayId) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 5], 50000 + relay.0 as u16))
}

/// Adds USERNAME, REALM, NONCE and MESSAGE-INTEGRITY once the client has a nonce.
fn signed(c: &Client, b: MessageBuilder) -> Vec<u8> {
    if c.nonce.is_empty() {
        return b.finish();
    }
    let key = credentials::long_term_key(&c.cred.username, REALM, &c.cred.password);
    b.attr(attr::USERNAME, c.cred.username.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, c.nonce.as_bytes())
        .finish_with_integrity(&key)
}

fn code(resp: &[u8]) -> Option<u16> {
    Message::parse(resp).unwrap().error_code().map(|(c, _)| c)
}

fn reason(resp: &[u8]) -> String {
    Message::parse(resp).unwrap().error_code().map(|(_, r)| r.to_owned()).unwrap_or_default()
}

fn peer_of(b: MessageBuilder, p: SocketAddr) -> MessageBuilder {
    b.xor_address(attr::XOR_PEER_ADDRESS, p)
}

fn send_indication(p: SocketAddr, data: &[u8]) -> Vec<u8> {
    MessageBuilder::new(method::SEND, Class::Indication, [9; 12])
        .xor_address(attr::XOR_PEER_ADDRESS, p)
        .attr(attr::DATA, data)
        .finish()
}

#[test]
fn allocate_is_challenged_then_succeeds_with_relayed_and_mapped_address() {
    let mut h = Harness::new();
    let mut c = h.client(Transport::Udp, 5000, "alice", 600);
    let resp = h.allocate(&mut c);
    let m = Message::parse(&resp).unwrap();
    assert_eq!((m.class, m.method), (Class::Success, method::ALLOCATE), "{}", reason(&resp));
    assert_eq!(m.xor_address(attr::XOR_RELAYED_ADDRESS), Some(Ok(relayed(RelayId(1)))));
    assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok(c.five.client)));
    assert_eq!(m.u32_attr(attr::LIFETIME), Some(600));
    let key = credentials::long_term_key(&c.cred.username, REALM, &c.cred.password);
    assert!(m.check_integrity(&key), "the response is signed");
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn unauthenticated_request_gets_401_with_realm_and_nonce() {
    let mut h = Harness::new();
    let c = h.client(Transport::Udp, 5000, "alice", 600);
    let req = MessageBuilder::new(method::ALLOCATE, Class::Request, [1; 12])
        .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .finish();
    let resp = h.send(&c, &req).pop().unwrap();
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.error_code().map(|e| e.0), Some(401));
    assert_eq!(m.text(attr::REALM), Some(REALM));
    assert!(m.text(attr::NONCE).is_some_and(|n| !n.is_empty()));
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn wrong_password_and_expired_credentials_are_refused() {
    let mut h = Harness::new();
    let mut c = h.client(Transport::Udp, 5000, "alice", 600);
    c.cred.password = credentials::password(b"another secret", &c.cred.username);
    let resp = h.allocate(&mut c);
    assert_eq!(code(&resp), Some(401));
    assert_eq!(reason(&resp), "Unauthorized: wrong password");

    let mut old = h.client(Transport::Udp, 5001, "bob", 60);
    h.advance(Duration::from_secs(61));
    let resp = h.allocate(&mut old);
    assert_eq!(code(&resp), Some(401));
    assert_eq!(reason(&resp), "Unauthorized: credential expired");

    let mut odd = h.client(Transport::Udp, 5002, "carol", 60);
    odd.cred = Credential { username: "carol".into(), password: credentials::password(SECRET, "carol") };
    assert_eq!(code(&h.allocate(&mut odd)), Some(401));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.stats().auth_failures, 3);
}

#[test]
fn stale_nonce_gets_438_and_a_fresh_one_works() {
    let mut h = Harness::new();
    let mut c = h.client(Transport::Udp, 5000, "alice", 7200);
    let resp = h.request(&mut c, method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).u32_attr(attr::LIFETIME, 3600)
    });
    assert_eq!(Message::parse(&resp).unwrap().u32_attr(attr::LIFETIME), Some(3600));
    let first_nonce = c.nonce.clone();
    h.advance(Duration::from_secs(601));
    // Refresh with the old nonce: 438, then the harness retries with the new one.
    let tx = h.txid();
    let req = signed(&c, MessageBuilder::new(method::REFRESH, Class::Request, tx).u32_attr(attr::LIFETIME, 600));
    let resp = h.send(&c, &req).pop().unwrap();
    assert_eq!(code(&resp), Some(438));
    let resp = h.request(&mut c, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 600));
    assert_eq!(code(&resp), None, "{}", reason(&resp));
    assert_ne!(c.nonce, first_nonce);
}

#[test]
fn allocate_errors() {
    let mut h = Harness::new();
    let mut c = h.client(Transport::Udp, 5000, "alice", 600);
    let resp = h.request(&mut c, method::ALLOCATE, |b| b);
    assert_eq!(code(&resp), Some(400), "no REQUESTED-TRANSPORT");
    let resp = h.request(&mut c, method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]));
    assert_eq!(code(&resp), Some(442), "TCP relays are not offered");
    let resp = h.request(&mut c, method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::EVEN_PORT, &[0x80, 0, 0, 0])
    });
    assert_eq!(code(&resp), Some(420));
    let resp = h.request(&mut c, method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0])
    });
    assert_eq!(code(&resp), Some(440));
    assert!(code(&h.allocate(&mut c)).is_none());
    assert_eq!(code(&h.allocate(&mut c)), Some(437), "a second allocation on one 5-tuple");
    // Refresh etc. from a 5-tuple without an allocation.
    let mut other = h.client(Transport::Udp, 5001, "alice", 600);
    assert_eq!(code(&h.request(&mut other, method::REFRESH, |b| b)), Some(437));
    // Another user on the allocation's 5-tuple.
    let mut thief = h.client(Transport::Udp, 5000, "mallory", 600);
    thief.nonce = c.nonce.clone();
    assert_eq!(code(&h.request(&mut thief, method::REFRESH, |b| b)), Some(441));
}

#[test]
fn relay_socket_that_cannot_be_bound_fails_the_allocate_with_508() {
    let (mut h, c, req) = signed_allocate();
    h.server.handle_client(h.now, c.five, &req);
    let Some(Output::OpenRelay { relay, .. }) = h.server.poll_output() else { panic!("asks for a socket") };
    h.server.handle_relay_opened(h.now, relay, None);
    let Some(Output::ToClient { data, .. }) = h.server.poll_output() else { panic!("answers") };
    assert_eq!(code(&data), Some(508));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.poll_output(), None);
}

#[test]
fn retransmitted_allocate_gets_the_same_answer() {
    let (mut h, c, req) = signed_allocate();
    let first = h.send(&c, &req).pop().unwrap();
    let again = h.send(&c, &req).pop().unwrap();
    assert_eq!(first, again);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn refresh_extends_and_lifetime_zero_deletes() {
    let (mut h, mut c) = allocated(Transport::Udp, 7200);
    assert_eq!(h.server.poll_timeout(), Some(h.now + Duration::from_secs(600)));
    let resp = h.request(&mut c, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 99_999));
    assert_eq!(Message::parse(&resp).unwrap().u32_attr(attr::LIFETIME), Some(3600), "capped at max_lifetime");
    assert_eq!(h.server.poll_timeout(), Some(h.now + Duration::from_secs(3600)));
    let resp = h.request(&mut c, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 0));
    assert_eq!(Message::parse(&resp).unwrap().u32_attr(attr::LIFETIME), Some(0));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.pending.contains(&Output::CloseRelay { relay: RelayId(1) }));
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn allocation_expires_and_its_relay_closes() {
    let (mut h, _c) = allocated(Transport::Udp, 7200);
    h.advance(Duration::from_secs(599));
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.outputs(), vec![Output::CloseRelay { relay: RelayId(1) }]);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.outputs(), vec![], "an extra handle_timeout is a no-op");
}

#[test]
fn tcp_connection_close_deletes_its_allocation() {
    let (mut h, c) = allocated(Transport::Tcp, 600);
    h.server.handle_client_closed(c.five);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.outputs(), vec![Output::CloseRelay { relay: RelayId(1) }]);
}

#[test]
fn permission_only_towards_the_media_address() {
    let (mut h, mut c) = allocated(Transport::Udp, 600);
    let elsewhere = addr("192.0.2.99:4000");
    let resp = h.request(&mut c, method::CREATE_PERMISSION, |b| peer_of(b, elsewhere));
    assert_eq!(code(&resp), Some(403));
    // All or nothing: one forbidden address refuses the whole request.
    let resp = h.request(&mut c, method::CREATE_PERMISSION, |b| peer_of(peer_of(b, media().announced), elsewhere));
    assert_eq!(code(&resp), Some(403));
    let resp = h.request(&mut c, method::CREATE_PERMISSION, |b| b);
    assert_eq!(code(&resp), Some(400), "no peer address");
    let resp = h.request(&mut c, method::CREATE_PERMISSION, |b| peer_of(b, media().announced));
    assert_eq!(code(&resp), None);
    // Nothing goes to a forbidden peer, even by Send indication.
    h.send(&c, &send_indication(elsewhere, b"x"));
    assert!(h.pending.iter().all(|o| !matches!(o, Output::ToPeer { .. })));
    assert_eq!(h.server.stats().forbidden_peers, 2);
}

#[test]
fn send_goes_to_the_local_media_address_and_other_ports_are_dropped() {
    let (mut h, mut c) = allocated(Transport::Udp, 600);
    // Before any permission: dropped.
    h.send(&c, &send_indication(media().announced, b"early"));
    assert!(h.pending.is_empty());
    assert_eq!(h.permit(&mut c, media().announced), None);
    h.send(&c, &send_indication(media().announced, b"hello"));
    assert_eq!(
        h.pending.pop(),
        Some(Output::ToPeer { relay: RelayId(1), peer: media().local, data: b"hello".to_vec() })
    );
    // Same IP, another port: the permission is per IP, the policy is per port.
    h.send(&c, &send_indication(addr("203.0.113.5:22"), b"ssh?"));
    assert!(h.pending.is_empty());
    assert_eq!(h.server.stats().forbidden_peers, 1);
}

#[test]
fn peer_data_maps_back_to_the_announced_address() {
    let (mut h, mut c) = allocated(Transport::Udp, 600);
    // From the SFU before a permission: dropped.
    h.server.handle_peer(h.now, RelayId(1), media().local, b"early");
    assert!(h.outputs().is_empty());
    assert_eq!(h.permit(&mut c, media().announced), None);
    h.server.handle_peer(h.now, RelayId(1), media().local, b"media");
    let out = h.outputs();
    let [Output::ToClient { to, data }] = &out[..] else { panic!("{out:?}") };
    assert_eq!(*to, c.five);
    let m = Message::parse(data).unwrap();
    assert_eq!((m.class, m.method), (Class::Indication, method::DATA));
    assert_eq!(
        m.xor_address(attr::XOR_PEER_ADDRESS),
        Some(Ok(media().announced)),
        "the client sees the announced address"
    );
    assert_eq!(m.get(attr::DATA), Some(&b"media"[..]));
    // From anyone else: dropped.
    h.server.handle_peer(h.now, RelayId(1), addr("192.0.2.99:4000"), b"spoof");
    assert!(h.outputs().is_empty());
}

#[test]
fn channel_bind_and_channel_data_both_ways_with_padding_on_tcp() {
    let (mut h, mut c) = allocated(Transport::Tcp, 600);
    let bind = |b: MessageBuilder, ch: u16, p: SocketAddr| {
        peer_of(b.attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0]), p)
    };
    assert_eq!(code(&h.request(&mut c, method::CHANNEL_BIND, |b| bind(b, 0x4000, addr("192.0.2.99:4000")))), Some(403));
    assert_eq!(code(&h.request(&mut c, method::CHANNEL_BIND, |b| bind(b, 0x3000, media().announced))), Some(400));
    assert_eq!(code(&h.request(&mut c, method::CHANNEL_BIND, |b| bind(b, 0x4000, media().announced))), None);
    // Rebinding the same pair refreshes it; the channel to another peer or the peer to another channel is refused.
    assert_eq!(code(&h.request(&mut c, method::CHANNEL_BIND, |b| bind(b, 0x4000, media().announced))), None);
    assert_eq!(code(&h.request(&mut c, method::CHANNEL_BIND, |b| bind(b, 0x4001, media().announced))), Some(400));
    // Client → peer over the channel (the bind installed the permission).
    h.send(&c, &ChannelData::encode(0x4000, b"abcde", true));
    assert_eq!(
        h.pending.pop(),
        Some(Output::ToPeer { relay: RelayId(1), peer: media().local, data: b"abcde".to_vec() })
    );
    // An unbound channel: dropped.
    h.send(&c, &ChannelData::encode(0x4002, b"abcde", true));
    assert!(h.pending.is_empty());
    // Peer → client as padded ChannelData.
    h.server.handle_peer(h.now, RelayId(1), media().local, b"abcde");
    assert_eq!(h.outputs(), vec![Output::ToClient { to: c.five, data: ChannelData::encode(0x4000, b"abcde", true) }]);
}

#[test]
fn permissions_and_channels_expire() {
    let (mut h, mut c) = allocated(Transport::Udp, 7200);
    let ch = |b: MessageBuilder| peer_of(b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]), media().announced);
    assert!(code(&h.request(&mut c, method::CHANNEL_BIND, ch)).is_none());
    assert!(code(&h.request(&mut c, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 3600))).is_none());
    // After 5 minutes the permission is gone (the channel lives 10): nothing passes.
    h.advance(Duration::from_secs(301));
    h.send(&c, &ChannelData::encode(0x4000, b"x", false));
    h.server.handle_peer(h.now, RelayId(1), media().local, b"y");
    assert!(h.pending.is_empty());
    assert!(h.outputs().is_empty());
    // A CreatePermission restores it while the channel lives.
    assert_eq!(h.permit(&mut c, media().announced), None);
    h.send(&c, &ChannelData::encode(0x4000, b"x", false));
    assert_eq!(h.pending.len(), 1);
    h.pending.clear();
    // After 10 minutes the channel is gone: Data indications instead, ChannelData dropped.
    h.advance(Duration::from_secs(300));
    assert_eq!(h.permit(&mut c, media().announced), None);
    h.send(&c, &ChannelData::encode(0x4000, b"x", false));
    assert!(h.pending.is_empty());
    h.server.handle_peer(h.now, RelayId(1), media().local, b"y");
    let out = h.outputs();
    let [Output::ToClient { data, .. }] = &out[..] else { panic!("{out:?}") };
    assert_eq!(Message::parse(data).unwrap().method, method::DATA);
}

#[test]
fn caps_per_identity_and_in_total() {
    let mut h = Harness::with(|c| {
        c.max_allocations = 3;
        c.max_allocations_per_identity = 2;
    });
    let mut a1 = h.client(Transport::Udp, 5001, "alice", 600);
    let mut a2 = h.client(Transport::Udp, 5002, "alice", 600);
    let mut a3 = h.client(Transport::Udp, 5003, "alice", 600);
    assert!(code(&h.allocate(&mut a1)).is_none());
    assert!(code(&h.allocate(&mut a2)).is_none());
    assert_eq!(code(&h.allocate(&mut a3)), Some(486));
    let mut b1 = h.client(Transport::Udp, 6001, "bob", 600);
    let mut b2 = h.client(Transport::Udp, 6002, "bob", 600);
    assert!(code(&h.allocate(&mut b1)).is_none());
    assert_eq!(code(&h.allocate(&mut b2)), Some(486), "the total cap");
    // A deleted allocation frees its place.
    assert!(code(&h.request(&mut a1, method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 0))).is_none());
    assert!(code(&h.allocate(&mut a3)).is_none());
    assert_eq!(h.server.stats().quota_refusals, 2);
}

#[test]
fn allowed_peers_open_the_relay_deliberately() {
    let mut h = Harness::with(|c| c.policy.allowed_peers = vec![Cidr::parse("10.0.0.0/8").unwrap()]);
    let mut c = h.client(Transport::Udp, 5000, "alice", 600);
    assert!(code(&h.allocate(&mut c)).is_none());
    let peer = addr("10.1.2.3:9999");
    assert_eq!(h.permit(&mut c, peer), None);
    h.send(&c, &send_indication(peer, b"hi"));
    assert_eq!(h.pending.pop(), Some(Output::ToPeer { relay: RelayId(1), peer, data: b"hi".to_vec() }));
    assert_eq!(h.permit(&mut c, addr("11.0.0.1:1")), Some(403));
}

#[test]
fn binding_request_answers_the_mapped_address_and_garbage_is_dropped() {
    let mut h = Harness::new();
    let c = h.client(Transport::Udp, 5000, "alice", 600);
    let req = MessageBuilder::new(method::BINDING, Class::Request, [3; 12]).finish();
    let resp = h.send(&c, &req).pop().unwrap();
    assert_eq!(Message::parse(&resp).unwrap().xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok(c.five.client)));
    for junk in [&b""[..], &[0u8, 1], &[0xff; 4], &[0x40, 0, 0, 9, 1, 2, 3]] {
        assert!(h.send(&c, junk).is_empty());
    }
    assert_eq!(h.server.stats().dropped, 4);
}

#[test]
fn cidr_parsing() {
    let c = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(c.contains("10.255.0.1".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
    assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8::5".parse().unwrap()));
    assert!(Cidr::parse("192.0.2.1").unwrap().contains("192.0.2.1".parse().unwrap()));
    assert!(Cidr::parse("10.0.0.0/33").is_none());
    assert!(Cidr::parse("nope").is_none());
}
