//! What other WebRTC stacks need from the server's SDP, found with the interop matrix (`interop/`):
//! - the server's candidate in every bundled m-section (aiortc reads the last one);
//! - feedback lines written with a trailing space still negotiated (Pion writes `a=rtcp-fb:96 transport-cc `);
//! - `a=ssrc-group:FID` before the `a=ssrc` lines (Pion v3 reads them in order and otherwise takes the RTX SSRC for
//!   an unknown stream).

mod common;

use std::time::Duration;

use common::Pair;
use str0m::media::{Direction, MediaKind};

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

#[test]
fn rtx_groups_come_before_the_ssrc_lines() {
    let mut p = Pair::new();
    p.peer.add_downtrack(sfu::id::TrackId(6), MediaKind::Video, sfu::id::PeerId(9));
    let (_, offer) = p.run(Duration::from_millis(1)).offers().remove(0);
    let video = m_sections(&offer).into_iter().find(|m| m.starts_with("video")).expect("a video m-section");
    let lines: Vec<&str> = video.lines().collect();
    let group = lines.iter().position(|l| l.starts_with("a=ssrc-group:FID ")).unwrap_or_else(|| panic!("an RTX group: {video}"));
    let first_ssrc = lines.iter().position(|l| l.starts_with("a=ssrc:")).expect("SSRC lines");
    assert!(group < first_ssrc, "the FID group after the SSRC lines: {video}");
}
