//! The built-in TURN server's input: every datagram and stream frame a client or a relayed peer sends goes through
//! `courier_turn::stun` and then the server state machine. Nothing may panic; what parses must re-encode; and the
//! server, fed the bytes from a client and from a peer, must keep its invariants (no output to a peer that the
//! policy forbids).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use courier_turn::stun::{frame_len, ChannelData, Message};
use courier_turn::{Config, FiveTuple, MediaAddr, Output, PeerPolicy, RelayId, Server, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let _ = m.check_integrity(b"key");
        let _ = m.unknown_required();
        let _ = m.xor_peer_addresses().count();
        let _ = (m.error_code(), m.channel_number(), m.requested_transport(), m.u32_attr(0x000D));
    }
    if let Ok(cd) = ChannelData::parse(data) {
        assert_eq!(ChannelData::parse(&ChannelData::encode(cd.channel, cd.data, true)).map(|c| c.data), Ok(cd.data));
    }
    if let Ok(Some(n)) = frame_len(data) {
        assert!(n >= 4);
    }
    let media: SocketAddr = "127.0.0.1:4000".parse().expect("a valid address");
    let policy = PeerPolicy { media: vec![MediaAddr { announced: media, local: media }], allowed_peers: vec![] };
    let now = Instant::now();
    let mut server = Server::new(Config::new("r", b"secret".to_vec(), policy), now, 1_800_000_000);
    let five = FiveTuple {
        transport: Transport::Tcp,
        client: "192.0.2.1:5000".parse().expect("a valid address"),
        server: "192.0.2.2:3478".parse().expect("a valid address"),
    };
    // Each half of the input as a client frame, then as a peer datagram.
    let (a, b) = data.split_at(data.len() / 2);
    for (i, chunk) in [a, b, data].iter().enumerate() {
        let t = now + Duration::from_secs(i as u64);
        server.handle_client(t, five, chunk);
        server.handle_peer(t, RelayId(1), media, chunk);
        server.handle_timeout(t + Duration::from_secs(700));
        while let Some(out) = server.poll_output() {
            if let Output::ToPeer { peer, .. } = out {
                assert_eq!(peer, media, "relayed to a forbidden peer");
            }
        }
    }
});
