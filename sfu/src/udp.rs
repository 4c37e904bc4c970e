//! The one UDP socket every peer shares, and the datagram → peer demultiplexer.
//!
//! This is the only module of the engine that touches the OS. Every peer's ICE, DTLS, SRTP and RTCP arrive on one
//! port; a datagram is routed by its **source address** once that address is known, and before that by the
//! **ICE username** in the client's STUN binding request (`<server ufrag>:<client ufrag>`), whose server part names
//! the peer. A STUN request that names a peer also teaches the index its source address, so the client's DTLS and
//! SRTP that follow from that address find the peer. Datagrams that match nothing are dropped and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use crate::id::{PeerId, WorkerId};

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The peer it belongs to.
    pub peer: PeerId,
    /// The worker that owns the peer.
    pub worker: WorkerId,
}

/// The demultiplexing index. Lookups take a read lock (uncontended in steady state); writes happen when a peer is
/// created, when it learns a new address, and when it is removed.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: RwLock<HashMap<String, Route>>,
    by_addr: RwLock<HashMap<SocketAddr, Route>>,
}

impl Demux {
    /// Register a peer under its local ICE username fragment.
    pub fn insert_ufrag(&self, ufrag: String, route: Route) {
        self.by_ufrag.write().expect("demux lock poisoned").insert(ufrag, route);
    }

    /// Forget a peer: its ufrag and every address it used.
    pub fn remove_peer(&self, peer: PeerId) {
        self.by_ufrag.write().expect("demux lock poisoned").retain(|_, r| r.peer != peer);
        self.by_addr.write().expect("demux lock poisoned").retain(|_, r| r.peer != peer);
    }

    /// Number of peers registered (by ufrag).
    pub fn len(&self) -> usize {
        self.by_ufrag.read().expect("demux lock poisoned").len()
    }

    /// Is the index empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of source addresses known.
    pub fn addr_len(&self) -> usize {
        self.by_addr.read().expect("demux lock poisoned").len()
    }

    /// The peer a STUN request names by its ICE username, without learning any address (ICE-TCP: a connection
    /// is bound to its peer once, by its first frame).
    pub fn route_ufrag(&self, data: &[u8]) -> Option<Route> {
        let ufrag = stun_local_ufrag(data)?;
        self.by_ufrag.read().expect("demux lock poisoned").get(ufrag).copied()
    }

    /// Which peer does this datagram from `source` belong to?
    pub fn route(&self, source: SocketAddr, data: &[u8]) -> Option<Route> {
        if let Some(ufrag) = stun_local_ufrag(data) {
            let route = *self.by_ufrag.read().expect("demux lock poisoned").get(ufrag)?;
            let known = self.by_addr.read().expect("demux lock poisoned").get(&source).copied();
            if known != Some(route) {
                self.by_addr.write().expect("demux lock poisoned").insert(source, route);
            }
            return Some(route);
        }
        self.by_addr.read().expect("demux lock poisoned").get(&source).copied()
    }
}

/// If `data` is a STUN message with a USERNAME attribute, the part before the colon (the receiver's ufrag).
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    // RFC 5389: first two bits zero, magic cookie, length a multiple of 4 that fits.
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if len % 4 != 0 || 20 + len > data.len() {
        return None;
    }
    let mut attrs = &data[20..20 + len];
    while attrs.len() >= 4 {
        let typ = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + alen)?;
        if typ == 0x0006 {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        let padded = (alen + 3) & !3;
        attrs = attrs.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn ufrag_table() {
        let with_user = stun(&[(0x0024, &[0, 0, 0, 1]), (0x0006, b"srv1:cli2")]);
        let no_user = stun(&[(0x0024, &[0, 0, 0, 1])]);
        let mut truncated = with_user.clone();
        truncated.truncate(30);
        let mut bad_cookie = with_user.clone();
        bad_cookie[4] = 0;
        let mut overlong_attr = stun(&[(0x0006, b"abcd")]);
        overlong_attr[23] = 200; // attribute length beyond the message
        let cases: &[(&str, &[u8], Option<&str>)] = &[
            ("binding request with username", &with_user, Some("srv1")),
            ("no username attribute", &no_user, None),
            ("truncated", &truncated, None),
            ("wrong magic cookie", &bad_cookie, None),
            ("attribute longer than message", &overlong_attr, None),
            ("rtp packet", &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], None),
            ("dtls record", &[22, 0xfe, 0xfd, 0, 0], None),
            ("empty", &[], None),
        ];
        for (name, data, want) in cases {
            assert_eq!(stun_local_ufrag(data), *want, "{name}");
        }
    }

    #[test]
    fn stun_teaches_the_address() {
        let d = Demux::default();
        let route = Route { peer: PeerId(5), worker: WorkerId(1) };
        d.insert_ufrag("srv1".into(), route);
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let rtp = [0x80u8, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(d.route(addr, &rtp), None, "unknown address before STUN");
        assert_eq!(d.route(addr, &stun(&[(0x0006, b"srv1:x")])), Some(route));
        assert_eq!(d.route(addr, &rtp), Some(route), "known address after STUN");
        assert_eq!(d.route(addr, &stun(&[(0x0006, b"other:x")])), None, "unknown ufrag");
        d.remove_peer(PeerId(5));
        assert_eq!(d.route(addr, &rtp), None);
        assert!(d.is_empty());
        assert_eq!(d.addr_len(), 0);
    }
}
