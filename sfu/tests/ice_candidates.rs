//! A client that trickles its candidates may send its TCP ones first (Chrome does). The server listens on UDP only:
//! a TCP candidate is ignored, not paired — given only TCP candidates str0m finds no possible pair, reports the ICE
//! connection disconnected, and the peer would be closed before the client's UDP candidate arrives.

mod common;

use std::time::Duration;

use common::{Pair, CLIENT};
use sfu::peer::{CloseReason, PeerEvent};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};

/// An SDP without its candidate lines (the client trickles them).
fn without_candidates(sdp: &str) -> String {
    sdp.split("\r\n").filter(|l| !l.starts_with("a=candidate")).collect::<Vec<_>>().join("\r\n")
}

#[test]
fn tcp_candidates_trickled_first_do_not_close_the_peer() {
    let mut p = Pair::new();
    let mut change = p.client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    p.peer.handle_offer(p.now, 1, &without_candidates(&offer.to_sdp_string()));
    let out = p.run(Duration::from_millis(1));
    let answer = out.answer(1).expect("an answer");
    p.client.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

    // The TCP candidates first (active and passive), then nothing for a while.
    for c in [
        "candidate:1 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0",
        "candidate:2 1 tcp 1518214911 127.0.0.1 50000 typ host tcptype passive",
    ] {
        p.peer.handle_candidate(c).expect("a well-formed candidate is accepted");
    }
    let mut events = p.run(Duration::from_secs(1)).events;

    // Then the UDP one.
    let (ip, port) = CLIENT.split_once(':').unwrap();
    p.peer.handle_candidate(&format!("candidate:3 1 udp 2122260223 {ip} {port} typ host")).unwrap();
    events.extend(p.run(Duration::from_secs(2)).events);
    assert!(
        !events.iter().any(|e| matches!(e, PeerEvent::Closed { reason: CloseReason::Disconnected })),
        "closed on TCP candidates: {events:?}"
    );
    assert!(events.iter().any(|e| matches!(e, PeerEvent::Connected)), "{events:?}");
    assert!(!p.peer.is_closed());
}
