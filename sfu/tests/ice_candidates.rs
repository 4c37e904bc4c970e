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

/// The m-sections of an SDP (each from its `m=` line to the next).
fn m_sections(sdp: &str) -> Vec<&str> {
    sdp.split("\r\nm=").skip(1).collect()
}

#[test]
fn the_server_candidate_is_in_every_bundled_m_section() {
    // aiortc reads a bundled transport's candidates from the last m-section, others from the first: both have it.
    let mut p = Pair::new();
    let mut change = p.client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = change.apply().unwrap();
    p.peer.handle_offer(p.now, 1, &offer.to_sdp_string());
    p.peer.add_downtrack(sfu::id::TrackId(5), MediaKind::Audio, sfu::id::PeerId(9));
    p.peer.add_downtrack(sfu::id::TrackId(6), MediaKind::Video, sfu::id::PeerId(9));
    let out = p.run(Duration::from_millis(1));
    let answer = out.answer(1).expect("an answer");
    let (ip, port) = common::SERVER.split_once(':').unwrap();
    let host = format!("{ip} {port} typ host");
    for (what, sdp) in [("answer", answer)].into_iter().chain(out.offers().into_iter().map(|(_, s)| ("offer", s))) {
        let sections = m_sections(&sdp);
        assert!(sections.len() >= 2, "{what}: {sdp}");
        for (i, m) in sections.iter().enumerate() {
            assert!(
                m.lines().any(|l| l.starts_with("a=candidate") && l.contains(&host)),
                "{what}: m-section {i} has no candidate: {sdp}"
            );
        }
    }
}

#[test]
fn feedback_written_with_a_trailing_space_is_negotiated() {
    // Pion writes "a=rtcp-fb:96 transport-cc " (a space before the empty parameter). The answer must still carry
    // transport-cc and NACK for the codec, or the client gets no bandwidth estimation and no retransmissions.
    let mut p = Pair::new();
    let mut change = p.client.sdp_api();
    change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = change.apply().unwrap();
    let spaced = offer
        .to_sdp_string()
        .split("\r\n")
        .map(|l| if l.starts_with("a=rtcp-fb:") && !l.ends_with(' ') { format!("{l} ") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\r\n");
    assert!(spaced.contains(" transport-cc \r\n"), "{spaced}");
    p.peer.handle_offer(p.now, 1, &spaced);
    let answer = p.run(Duration::from_millis(1)).answer(1).expect("an answer");
    let vp8 = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=rtpmap:").and_then(|r| r.strip_suffix(" VP8/90000")))
        .expect("VP8 answered");
    for fb in ["transport-cc", "nack", "nack pli"] {
        assert!(answer.lines().any(|l| l == format!("a=rtcp-fb:{vp8} {fb}")), "no {fb} for VP8 in: {answer}");
    }
}
