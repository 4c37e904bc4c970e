//! What other WebRTC stacks need from the server's SDP, found with the interop matrix (`interop/`):
//! - the server's candidate in every bundled m-section (aiortc reads the last one);
//! - feedback lines written with a trailing space still negotiated (Pion writes `a=rtcp-fb:96 transport-cc `);
//! - `a=ssrc-group:FID` before the `a=ssrc` lines (Pion v3 reads them in order and otherwise takes the RTX SSRC for
//!   an unknown stream);
//! - no packet on an SSRC the SDP does not declare (str0m probed on SSRC 0 when no stream could carry probes);
//! - the first m-line (the BUNDLE tag) made inactive, never stopped (Chrome lost its connection).

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
    let group = lines
        .iter()
        .position(|l| l.starts_with("a=ssrc-group:FID "))
        .unwrap_or_else(|| panic!("an RTX group: {video}"));
    let first_ssrc = lines.iter().position(|l| l.starts_with("a=ssrc:")).expect("SSRC lines");
    assert!(group < first_ssrc, "the FID group after the SSRC lines: {video}");
}

/// The `m=` line and the direction of each m-section, and the mids of the BUNDLE group.
fn layout(sdp: &str) -> (Vec<(String, String)>, Vec<String>) {
    let sections = m_sections(sdp)
        .iter()
        .map(|m| {
            let first = m.lines().next().unwrap_or_default().to_string();
            let dir = m
                .lines()
                .find(|l| ["a=sendonly", "a=recvonly", "a=sendrecv", "a=inactive"].contains(l))
                .unwrap_or("none")
                .to_string();
            (first, dir)
        })
        .collect();
    let bundle = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=group:BUNDLE "))
        .map(|g| g.split(' ').map(String::from).collect())
        .unwrap_or_default();
    (sections, bundle)
}

#[test]
fn the_first_m_line_is_made_inactive_not_stopped() {
    // A subscriber-only client: its first m-line is a server-offered down-track. When that track goes away, Chrome
    // would move the bundle to a new transport if the m-line were stopped (port 0, out of the BUNDLE group) and the
    // connection would be lost: it is made inactive and stays in the group. A later m-line is stopped as usual.
    let (a, b) = (sfu::id::TrackId(6), sfu::id::TrackId(7));
    let (mut p, _) = Pair::subscribed_video(a);
    p.peer.add_downtrack(b, MediaKind::Video, sfu::id::PeerId(9));
    let (id, offer) = p.run(Duration::from_millis(1)).offers().remove(0);
    let answer = p.client.sdp_api().accept_offer(str0m::change::SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    p.peer.handle_answer(p.now, id, &answer.to_sdp_string()).unwrap();
    p.run(Duration::from_millis(100));

    p.peer.remove_downtrack(a);
    let (id, offer) = p.run(Duration::from_millis(1)).offers().remove(0);
    let (sections, bundle) = layout(&offer);
    assert!(!sections[0].0.starts_with("video 0 "), "the first m-line stopped: {offer}");
    assert_eq!(sections[0].1, "a=inactive", "{offer}");
    assert_eq!(bundle.len(), 2, "both mids stay in the BUNDLE group: {offer}");
    let answer = p.client.sdp_api().accept_offer(str0m::change::SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    p.peer.handle_answer(p.now, id, &answer.to_sdp_string()).unwrap();
    p.run(Duration::from_secs(1));

    p.peer.remove_downtrack(b);
    let (_, offer) = p.run(Duration::from_millis(1)).offers().remove(0);
    let (sections, _) = layout(&offer);
    assert!(sections[1].0.starts_with("video 0 "), "a later m-line is stopped: {offer}");
    assert!(!p.peer.is_closed());
}

#[test]
fn every_ssrc_a_subscriber_receives_is_in_its_sdp() {
    // Audio only, estimation on: no stream can carry probes as RTX. str0m's fallback sent them on SSRC 0.
    let mut p = Pair::with_bwe(str0m::bwe::Bitrate::kbps(300), |b| {
        b.set_rtp_mode(true).clear_codecs().enable_opus(true, false)
    });
    let track = sfu::id::TrackId(11);
    p.peer.add_downtrack(track, MediaKind::Audio, sfu::id::PeerId(9));
    let (id, offer) = p.run(Duration::from_millis(1)).offers().remove(0);
    let answer = p.client.sdp_api().accept_offer(str0m::change::SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    p.peer.handle_answer(p.now, id, &answer.to_sdp_string()).unwrap();
    let declared: std::collections::BTreeSet<u32> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=ssrc:"))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut padded = 0u64;
    for i in 0..500u64 {
        p.peer.handle_forward(&common::opus_packet(track, i, p.now));
        let out = p.run(Duration::from_millis(20));
        seen.extend(out.rtp_ssrcs.iter().copied());
        padded += out.link_padding_bytes;
    }
    assert!(!seen.is_empty(), "nothing received");
    let undeclared: Vec<_> = seen.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "SSRCs {undeclared:?} not in the SDP (declared {declared:?}); padding bytes {padded}"
    );
}
