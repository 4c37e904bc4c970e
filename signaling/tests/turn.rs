//! The built-in TURN server with a real Courier server: `joined` hands out TURN URLs and credentials that allocate
//! relays over UDP, TCP and TLS; expired and wrong credentials are refused; relays go only to the SFU's media port
//! (a test socket on another port or address receives nothing); the per-identity cap holds; and with a
//! `public_ip` this host cannot reach, a client's packets towards the announced address still reach the SFU.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use courier_turn::credentials;
use courier_turn::stun::{attr, frame_len, method, ChannelData, Class, Message, MessageBuilder};
use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use signaling::config::{RawConfig, RawTlsConfig, RawTurnConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const TURN_SECRET: &str = "turn-test-secret-0123456789";

fn turn_on(raw: &mut RawConfig) {
    raw.turn = Some(RawTurnConfig {
        enabled: Some(true),
        addr: Some("127.0.0.1:0".parse().unwrap()),
        secret: Some(TURN_SECRET.into()),
        ..Default::default()
    });
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A minimal TURN client over one transport.
enum Conn {
    Udp(UdpSocket, SocketAddr),
    Stream(Box<dyn Stream>, Vec<u8>),
}

struct Client {
    conn: Conn,
    username: String,
    password: String,
    nonce: String,
    realm: String,
    tx: u8,
}

impl Client {
    async fn udp(server: SocketAddr, username: &str, password: &str) -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Client::new(Conn::Udp(s, server), username, password)
    }

    async fn tcp(server: SocketAddr, username: &str, password: &str) -> Client {
        let s = TcpStream::connect(server).await.unwrap();
        Client::new(Conn::Stream(Box::new(s), Vec::new()), username, password)
    }

    fn new(conn: Conn, username: &str, password: &str) -> Client {
        Client {
            conn,
            username: username.into(),
            password: password.into(),
            nonce: String::new(),
            realm: String::new(),
            tx: 0,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s, to) => {
                s.send_to(bytes, *to).await.unwrap();
            }
            Conn::Stream(s, _) => s.write_all(bytes).await.unwrap(),
        }
    }

    /// The next message, or `None` within `wait`.
    async fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(wait, async {
            match &mut self.conn {
                Conn::Udp(s, _) => {
                    let mut buf = vec![0u8; 2048];
                    let n = s.recv(&mut buf).await.unwrap();
                    buf.truncate(n);
                    buf
                }
                Conn::Stream(s, buf) => loop {
                    if let Ok(Some(n)) = frame_len(buf) {
                        if buf.len() >= n {
                            return buf.drain(..n).collect();
                        }
                    }
                    let mut chunk = [0u8; 2048];
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the server closed the connection");
                    buf.extend_from_slice(&chunk[..n]);
                },
            }
        })
        .await
        .ok()
    }

    /// A request (signed once a nonce is known; a 401/438 challenge answered once): the response.
    async fn request(&mut self, m: u16, build: impl Fn(MessageBuilder) -> MessageBuilder) -> Vec<u8> {
        for _ in 0..2 {
            self.tx += 1;
            let b = build(MessageBuilder::new(m, Class::Request, [self.tx; 12]));
            let bytes = if self.nonce.is_empty() {
                b.finish()
            } else {
                let key = credentials::long_term_key(&self.username, &self.realm, &self.password);
                b.attr(attr::USERNAME, self.username.as_bytes())
                    .attr(attr::REALM, self.realm.as_bytes())
                    .attr(attr::NONCE, self.nonce.as_bytes())
                    .finish_with_integrity(&key)
            };
            self.send(&bytes).await;
            let resp = self.recv(Duration::from_secs(5)).await.expect("a response within 5 s");
            let msg = Message::parse(&resp).unwrap();
            assert_eq!(msg.transaction_id, [self.tx; 12]);
            match msg.error_code() {
                Some((401, _)) if self.nonce.is_empty() => {
                    self.nonce = msg.text(attr::NONCE).unwrap().into();
                    self.realm = msg.text(attr::REALM).unwrap().into();
                }
                Some((438, _)) => self.nonce = msg.text(attr::NONCE).unwrap().into(),
                _ => return resp,
            }
        }
        panic!("challenged twice");
    }

    /// Allocates a UDP relay: its address, or the error (code, reason).
    async fn allocate(&mut self) -> Result<SocketAddr, (u16, String)> {
        let resp = self.request(method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])).await;
        let msg = Message::parse(&resp).unwrap();
        match msg.error_code() {
            Some((c, r)) => Err((c, r.to_owned())),
            None => Ok(msg.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap()),
        }
    }

    async fn permit(&mut self, peer: SocketAddr) -> Option<u16> {
        let resp = self.request(method::CREATE_PERMISSION, |b| b.xor_address(attr::XOR_PEER_ADDRESS, peer)).await;
        Message::parse(&resp).unwrap().error_code().map(|e| e.0)
    }

    async fn send_to_peer(&mut self, peer: SocketAddr, data: &[u8]) {
        let ind = MessageBuilder::new(method::SEND, Class::Indication, [0xAA; 12])
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data)
            .finish();
        self.send(&ind).await;
    }
}

/// Waits until the SFU's engine has counted a datagram of no peer since `before`: what a relay sends to the media
/// port arrives there (it belongs to no ICE session, so the engine counts and drops it).
async fn sfu_receives(s: &signaling::Server, before: u64) {
    eventually("the SFU receives the relayed datagram", Duration::from_secs(5), || async {
        let n = s.state.sfu.stats().datagrams_unrouted;
        if n > before {
            Ok(())
        } else {
            Err(format!("{n} unrouted datagrams"))
        }
    })
    .await;
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn turn_addr(s: &signaling::Server) -> SocketAddr {
    s.state.turn.shell().expect("TURN is on").addr()
}

#[tokio::test]
async fn joined_credentials_allocate_over_udp_tcp_and_tls() {
    let ca = Ca::new();
    let dir = data_dir();
    let (chain, key, _) = ca.server_cert();
    std::fs::write(dir.join("cert.pem"), chain).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let s = server_with(|raw| {
        turn_on(raw);
        raw.turn.as_mut().unwrap().tls_addr = Some("127.0.0.1:0".parse().unwrap());
        raw.tls = Some(RawTlsConfig { cert_file: Some(dir.join("cert.pem")), key_file: Some(dir.join("key.pem")) });
    })
    .await;
    let shell = s.state.turn.shell().unwrap();
    let (udp_tcp, tls) = (shell.addr(), shell.tls_addr().expect("TLS is on"));

    // `joined` over wss://127.0.0.1: the URLs name the host the client used.
    let tcp = TcpStream::connect(s.http_addr).await.unwrap();
    let stream = ca.client().connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let url = format!("wss://127.0.0.1:{}/rtc", s.http_addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let join = format!(r#"{{"type":"join","v":1,"token":"{}"}}"#, token("r", "alice"));
    ws.send(WsMessage::Text(join.into())).await.unwrap();
    let joined = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        let WsMessage::Text(t) = m else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "joined" {
            break v;
        }
    };
    let servers = joined["ice_servers"].as_array().expect("ice_servers in joined");
    assert_eq!(servers.len(), 1);
    let urls: Vec<&str> = servers[0]["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    let port = udp_tcp.port();
    assert_eq!(
        urls,
        [
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp"),
            format!("turns:127.0.0.1:{}?transport=tcp", tls.port()),
        ]
    );
    let username = servers[0]["username"].as_str().unwrap();
    let password = servers[0]["credential"].as_str().unwrap();
    let (expiry, who) = credentials::parse_username(username).unwrap();
    assert_eq!(who, "alice");
    assert!(expiry > unix_now() + 3600, "valid for hours, not the token's 10 minutes");

    let mut over_udp = Client::udp(udp_tcp, username, password).await;
    let mut over_tcp = Client::tcp(udp_tcp, username, password).await;
    let tls_stream = ca
        .client()
        .connect(ServerName::try_from("localhost").unwrap(), TcpStream::connect(tls).await.unwrap())
        .await
        .unwrap();
    let mut over_tls = Client::new(Conn::Stream(Box::new(tls_stream), Vec::new()), username, password);
    for (name, c) in [("udp", &mut over_udp), ("tcp", &mut over_tcp), ("tls", &mut over_tls)] {
        let relayed = c.allocate().await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(relayed.ip(), std::net::IpAddr::from([127, 0, 0, 1]), "{name}");
        assert!(relayed.port() >= 49152, "{name}: relay port from the default range");
    }
    assert_eq!(shell.stats().allocations, 3);
    // Closing the TCP connection frees its allocation.
    drop(over_tcp);
    eventually("the TCP allocation is gone", Duration::from_secs(5), || async {
        let n = shell.stats().allocations;
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} allocations"))
        }
    })
    .await;
    s.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn expired_and_wrong_credentials_are_refused() {
    let s = server_with(turn_on).await;
    let expired = credentials::mint(TURN_SECRET.as_bytes(), "alice", unix_now() - 10);
    let mut c = Client::udp(turn_addr(&s), &expired.username, &expired.password).await;
    assert_eq!(c.allocate().await, Err((401, "Unauthorized: credential expired".into())));
    let forged = credentials::mint(b"not the server's secret", "alice", unix_now() + 600);
    let mut c = Client::udp(turn_addr(&s), &forged.username, &forged.password).await;
    assert_eq!(c.allocate().await, Err((401, "Unauthorized: wrong password".into())));
    assert_eq!(s.state.turn.shell().unwrap().stats().allocations, 0);
    assert_eq!(s.state.turn.shell().unwrap().stats().core.auth_failures, 2);
}

#[tokio::test]
async fn relays_go_only_to_the_sfu_media_port() {
    let s = server_with(turn_on).await;
    let cred = credentials::mint(TURN_SECRET.as_bytes(), "alice", unix_now() + 600);
    let mut c = Client::udp(turn_addr(&s), &cred.username, &cred.password).await;
    c.allocate().await.unwrap();
    // Test sockets on the SFU's IP (another port) and on another loopback address.
    let same_ip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other_ip = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    assert_eq!(c.permit(other_ip.local_addr().unwrap()).await, Some(403));
    assert_eq!(c.permit(s.udp_addr).await, None);
    let bind = |b: MessageBuilder, p: SocketAddr| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]).xor_address(attr::XOR_PEER_ADDRESS, p)
    };
    let resp = c.request(method::CHANNEL_BIND, |b| bind(b, same_ip.local_addr().unwrap())).await;
    assert_eq!(Message::parse(&resp).unwrap().error_code().map(|e| e.0), Some(403), "same IP, another port");
    for _ in 0..5 {
        c.send_to_peer(same_ip.local_addr().unwrap(), b"not for you").await;
        c.send_to_peer(other_ip.local_addr().unwrap(), b"not for you").await;
    }
    // What goes to the SFU's port arrives (the engine counts it as a datagram of no peer).
    let before = s.state.sfu.stats().datagrams_unrouted;
    let resp = c.request(method::CHANNEL_BIND, |b| bind(b, s.udp_addr)).await;
    assert_eq!(Message::parse(&resp).unwrap().error_code(), None);
    c.send(&ChannelData::encode(0x4000, b"hello sfu", false)).await;
    sfu_receives(&s, before).await;
    let mut buf = [0u8; 64];
    for sock in [&same_ip, &other_ip] {
        let got = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await;
        assert!(got.is_err(), "a byte reached {:?}", sock.local_addr());
    }
    // The 403s (2) and the sends to the SFU's IP on another port (5); those to 127.0.0.2 had no permission.
    assert_eq!(s.state.turn.shell().unwrap().stats().core.forbidden_peers, 7);
}

#[tokio::test]
async fn allocations_are_capped_per_identity() {
    let s = server_with(|raw| {
        turn_on(raw);
        raw.turn.as_mut().unwrap().max_allocations_per_identity = Some(1);
    })
    .await;
    let cred = credentials::mint(TURN_SECRET.as_bytes(), "alice", unix_now() + 600);
    let mut first = Client::udp(turn_addr(&s), &cred.username, &cred.password).await;
    first.allocate().await.unwrap();
    let mut second = Client::udp(turn_addr(&s), &cred.username, &cred.password).await;
    assert_eq!(second.allocate().await, Err((486, "Allocation Quota Reached".into())));
    let bob = credentials::mint(TURN_SECRET.as_bytes(), "bob", unix_now() + 600);
    let mut other = Client::udp(turn_addr(&s), &bob.username, &bob.password).await;
    other.allocate().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_public_ip_is_hairpinned_to_the_local_media_socket() {
    // 203.0.113.9 (TEST-NET-3) is on no interface here: the SFU announces it, the relay must use 127.0.0.1.
    let s = server_with(|raw| {
        turn_on(raw);
        raw.public_ip = Some("203.0.113.9".parse().unwrap());
    })
    .await;
    let cred = credentials::mint(TURN_SECRET.as_bytes(), "alice", unix_now() + 600);
    let mut c = Client::udp(turn_addr(&s), &cred.username, &cred.password).await;
    let relayed = c.allocate().await.unwrap();
    assert_eq!(relayed.ip(), std::net::IpAddr::from([203, 0, 113, 9]), "the relayed address is the public one");
    let announced = SocketAddr::new("203.0.113.9".parse().unwrap(), s.udp_addr.port());
    assert_eq!(c.permit(announced).await, None);
    let before = s.state.sfu.stats().datagrams_unrouted;
    c.send_to_peer(announced, b"hello sfu").await;
    sfu_receives(&s, before).await;
}

#[tokio::test]
async fn without_turn_joined_has_no_ice_servers() {
    let s = server().await;
    let (_ws, joined) = join(&s, "r", "alice").await;
    assert!(joined.get("ice_servers").is_none(), "{joined}");
    assert!(s.state.turn.shell().is_none());
}
