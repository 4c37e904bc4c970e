//! The load generator's TURN client: enough of RFC 8656 over UDP for a subscriber to reach the server through a
//! relay — Allocate with long-term credentials (RFC 8489: the 401 gives realm and nonce, the retry carries
//! USERNAME, REALM, NONCE and MESSAGE-INTEGRITY), ChannelBind towards the SFU's media address, and ChannelData both
//! ways (4 bytes of header instead of a Send/Data indication's 36). Runs are shorter than an allocation's 10 min,
//! so nothing is refreshed. Written from the RFCs, apart from the server it loads.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use tokio::net::UdpSocket;

const COOKIE: u32 = 0x2112_A442;
const ALLOCATE: u16 = 0x0003;
const CHANNEL_BIND: u16 = 0x0009;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const CHANNEL_NUMBER: u16 = 0x000C;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_TRANSPORT: u16 = 0x0019;
/// The one channel a load subscriber binds (towards the SFU).
pub const CHANNEL: u16 = 0x4000;

/// An allocation this client holds: where to send, the relayed address, and what authenticates later requests.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub server: SocketAddr,
    pub relayed: SocketAddr,
    username: String,
    realm: String,
    nonce: String,
    key: [u8; 16],
}

/// A STUN message: header, then attributes (each padded to 4 bytes); `integrity` appends MESSAGE-INTEGRITY.
fn message(method_class: u16, tid: [u8; 12], attrs: &[(u16, Vec<u8>)], integrity: Option<&[u8]>) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&method_class.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&COOKIE.to_be_bytes());
    m.extend_from_slice(&tid);
    for (ty, v) in attrs {
        m.extend_from_slice(&ty.to_be_bytes());
        m.extend_from_slice(&(v.len() as u16).to_be_bytes());
        m.extend_from_slice(v);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    if let Some(key) = integrity {
        // The length covers the MESSAGE-INTEGRITY attribute (24 bytes) while the HMAC is computed.
        let len = (m.len() - 20 + 24) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&m);
        m.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
        m.extend_from_slice(&20u16.to_be_bytes());
        m.extend_from_slice(&mac.finalize().into_bytes());
    }
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

/// XOR-*-ADDRESS value (IPv4 only: the load runs on IPv4).
fn xor_address(addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let IpAddr::V4(ip) = addr.ip() else { bail!("IPv6 is not supported here") };
    let mut v = vec![0, 1];
    v.extend_from_slice(&(addr.port() ^ (COOKIE >> 16) as u16).to_be_bytes());
    v.extend_from_slice(&(u32::from(ip) ^ COOKIE).to_be_bytes());
    Ok(v)
}

fn parse_xor_address(v: &[u8]) -> Option<SocketAddr> {
    if v.len() < 8 || v[1] != 1 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (COOKIE >> 16) as u16;
    let ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ COOKIE;
    Some(SocketAddr::new(IpAddr::V4(ip.into()), port))
}

/// A response's type and attributes, if `buf` is the answer to `tid`.
fn response(buf: &[u8], tid: &[u8; 12]) -> Option<(u16, Vec<(u16, Vec<u8>)>)> {
    if buf.len() < 20 || buf[4..8] != COOKIE.to_be_bytes() || &buf[8..20] != tid {
        return None;
    }
    let ty = u16::from_be_bytes([buf[0], buf[1]]);
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let body = buf.get(20..20 + len)?;
    let mut attrs = Vec::new();
    let mut at = 0;
    while at + 4 <= body.len() {
        let t = u16::from_be_bytes([body[at], body[at + 1]]);
        let l = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let v = body.get(at + 4..at + 4 + l)?;
        attrs.push((t, v.to_vec()));
        at += (4 + l).next_multiple_of(4);
    }
    Some((ty, attrs))
}

fn attr(attrs: &[(u16, Vec<u8>)], ty: u16) -> Option<&[u8]> {
    attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| v.as_slice())
}

fn error_of(attrs: &[(u16, Vec<u8>)]) -> String {
    attr(attrs, ERROR_CODE)
        .filter(|v| v.len() >= 4)
        .map(|v| format!("{} {}", u16::from(v[2]) * 100 + u16::from(v[3]), String::from_utf8_lossy(&v[4..])))
        .unwrap_or_else(|| "an error without ERROR-CODE".into())
}

/// Sends `req` to `server` and waits for the answer to `tid` (three tries, 1 s each).
async fn transact(
    socket: &UdpSocket,
    server: SocketAddr,
    tid: [u8; 12],
    req: &[u8],
) -> anyhow::Result<(u16, Vec<(u16, Vec<u8>)>)> {
    let mut buf = vec![0u8; 2048];
    for _ in 0..3 {
        socket.send_to(req, server).await.context("sending to the TURN server")?;
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(r) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
            let (n, from) = r?;
            if from == server {
                if let Some(answer) = response(&buf[..n], &tid) {
                    return Ok(answer);
                }
            }
        }
    }
    Err(anyhow!("the TURN server at {server} did not answer"))
}

/// Allocates a UDP relay on `server` with the REST credentials of `joined.ice_servers`.
pub async fn allocate(
    socket: &UdpSocket,
    server: SocketAddr,
    username: &str,
    password: &str,
) -> anyhow::Result<Allocation> {
    let transport = vec![17, 0, 0, 0];
    let tid: [u8; 12] = rand::random();
    let (ty, attrs) =
        transact(socket, server, tid, &message(ALLOCATE, tid, &[(REQUESTED_TRANSPORT, transport.clone())], None))
            .await?;
    if ty != (ALLOCATE | ERROR) {
        bail!("an unauthenticated Allocate was answered {ty:#06x}, not 401");
    }
    let realm = String::from_utf8_lossy(attr(&attrs, REALM).context("no REALM in the 401")?).into_owned();
    let nonce = String::from_utf8_lossy(attr(&attrs, NONCE).context("no NONCE in the 401")?).into_owned();
    let key: [u8; 16] = Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).into();
    let tid: [u8; 12] = rand::random();
    let req = message(
        ALLOCATE,
        tid,
        &[
            (REQUESTED_TRANSPORT, transport),
            (USERNAME, username.as_bytes().to_vec()),
            (REALM, realm.as_bytes().to_vec()),
            (NONCE, nonce.as_bytes().to_vec()),
        ],
        Some(&key),
    );
    let (ty, attrs) = transact(socket, server, tid, &req).await?;
    if ty != (ALLOCATE | SUCCESS) {
        bail!("Allocate refused: {}", error_of(&attrs));
    }
    let relayed = attr(&attrs, XOR_RELAYED_ADDRESS).and_then(parse_xor_address).context("no XOR-RELAYED-ADDRESS")?;
    Ok(Allocation { server, relayed, username: username.into(), realm, nonce, key })
}

impl Allocation {
    /// Binds [`CHANNEL`] to `peer` (which also permits its address).
    pub async fn bind_channel(&self, socket: &UdpSocket, peer: SocketAddr) -> anyhow::Result<()> {
        let tid: [u8; 12] = rand::random();
        let req = message(
            CHANNEL_BIND,
            tid,
            &[
                (CHANNEL_NUMBER, vec![(CHANNEL >> 8) as u8, CHANNEL as u8, 0, 0]),
                (XOR_PEER_ADDRESS, xor_address(peer)?),
                (USERNAME, self.username.as_bytes().to_vec()),
                (REALM, self.realm.as_bytes().to_vec()),
                (NONCE, self.nonce.as_bytes().to_vec()),
            ],
            Some(&self.key),
        );
        let (ty, attrs) = transact(socket, self.server, tid, &req).await?;
        if ty != (CHANNEL_BIND | SUCCESS) {
            bail!("ChannelBind to {peer} refused: {}", error_of(&attrs));
        }
        Ok(())
    }
}

/// Wraps `data` for [`CHANNEL`] into `out` (cleared first).
pub fn channel_data(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&CHANNEL.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// The payload of a ChannelData message on [`CHANNEL`], if `buf` is one.
pub fn from_channel(buf: &[u8]) -> Option<&[u8]> {
    if buf.len() < 4 || u16::from_be_bytes([buf[0], buf[1]]) != CHANNEL {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    buf.get(4..4 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_channel_data_round_trip() {
        let a: SocketAddr = "10.1.2.3:49152".parse().unwrap();
        assert_eq!(parse_xor_address(&xor_address(a).unwrap()), Some(a));
        let mut out = Vec::new();
        channel_data(b"hello", &mut out);
        assert_eq!(&out[..4], &[0x40, 0x00, 0, 5]);
        assert_eq!(from_channel(&out), Some(&b"hello"[..]));
        assert_eq!(from_channel(&[0x00, 0x01, 0, 0]), None);
    }

    #[test]
    fn integrity_covers_the_header_with_its_own_length() {
        let m = message(ALLOCATE, [7; 12], &[(USERNAME, b"u".to_vec())], Some(&[1; 16]));
        // header 20 + USERNAME 8 (padded) + MESSAGE-INTEGRITY 24
        assert_eq!(m.len(), 52);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]), 32);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&[1; 16]).unwrap();
        mac.update(&m[..28]);
        assert_eq!(&m[32..], &mac.finalize().into_bytes()[..]);
    }
}
