//! Liveness of an ICE-lite peer: it stays up while the client sends valid SRTP/SRTCP or STUN, and is closed when
//! nothing valid arrived for 15 s. pion/ice sends no STUN binding requests on a pair busy with media; such a client
//! must not be dropped. Simulated network and virtual clock ([`common::Pair`]); the client is a str0m `Rtc` whose
//! STUN the test's network loses after the connection is up.

mod common;

use std::time::{Duration, Instant};

use common::{Pair, CLIENT, SERVER};
use sfu::id::{PeerId, TrackId};
use sfu::peer::{CloseReason, PeerEvent};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime};

const FRAME: Duration = Duration::from_millis(20);

/// STUN, by RFC 7983's first-byte rule (0–3); DTLS is 20–63, RTP/RTCP 128–191.
fn is_stun(d: &[u8]) -> bool {
    d.first().is_some_and(|b| *b < 4)
}

/// When the peer was closed as disconnected, if it was.
fn disconnected_at(out: &common::Out, at: Instant) -> Option<Instant> {
    out.events.iter().any(|e| matches!(e, PeerEvent::Closed { reason: CloseReason::Disconnected })).then_some(at)
}

/// A connected pair whose client publishes Opus (frame mode); returns it and a function sending one frame.
fn publishing() -> (Pair, impl FnMut(&mut Pair)) {
    let mut p = Pair::with_client(|b| b.clear_codecs().enable_opus(true, false));
    let mut change = p.client.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    p.peer.handle_offer(p.now, 1, &offer.to_sdp_string());
    let answer = p.run(Duration::from_millis(1)).answer(1).expect("an answer");
    p.client.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    assert!(p.run(Duration::from_secs(1)).client_connected);
    let pt = p.client.codec_config().find(|c| c.spec().codec == Codec::Opus).unwrap().pt();
    let mut frame = 0u64;
    let send = move |p: &mut Pair| {
        let t = MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ);
        p.client.writer(mid).expect("writer").write(pt, p.now, t, vec![0xf8, 0xff, 0xfe]).expect("write");
        frame += 1;
    };
    (p, send)
}

#[test]
fn a_publisher_sending_media_without_stun_stays() {
    let (mut p, mut send) = publishing();
    p.lose_to_server = Box::new(is_stun);
    // 40 s: far past the 15 s without a binding request.
    for _ in 0..2000 {
        send(&mut p);
        let out = p.run(FRAME);
        assert_eq!(disconnected_at(&out, p.now), None, "closed although SRTP kept arriving");
    }
    assert!(!p.peer.is_closed());
}

#[test]
fn a_subscriber_sending_only_rtcp_without_stun_stays() {
    // The client only receives audio; all it sends back is SRTCP (receiver reports every second).
    let mut p = Pair::with_client(|b| {
        b.set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .set_rtcp_report_interval_audio(Duration::from_secs(1))
    });
    let track = TrackId(11);
    p.peer.add_downtrack(track, MediaKind::Audio, PeerId(9));
    p.accept_next_offer();
    assert!(p.run(Duration::from_secs(1)).client_connected);
    p.lose_to_server = Box::new(is_stun);
    for i in 0..2000u64 {
        p.peer.handle_forward(&common::opus_packet(track, i, p.now));
        let out = p.run(FRAME);
        assert_eq!(disconnected_at(&out, p.now), None, "closed although SRTCP kept arriving");
    }
    assert!(!p.peer.is_closed());
}

/// Runs in 100 ms steps for up to 30 s, calling `tick` each step; the seconds from start to the close.
fn seconds_to_close(p: &mut Pair, mut tick: impl FnMut(&mut Pair)) -> Option<f64> {
    let start = p.now;
    for _ in 0..300 {
        tick(p);
        let out = p.run(Duration::from_millis(100));
        if let Some(at) = disconnected_at(&out, p.now) {
            return Some((at - start).as_secs_f64());
        }
    }
    None
}

#[test]
fn a_silent_client_is_closed_after_the_timeout() {
    let (mut p, _) = publishing();
    // The client's last binding request was at most a few seconds ago (str0m checks every ~3 s at most).
    p.lose_to_server = Box::new(|_| true);
    let secs = seconds_to_close(&mut p, |_| {}).expect("closed");
    assert!((10.0..=16.0).contains(&secs), "closed after {secs} s");
}

#[test]
fn forged_media_keeps_nothing_alive() {
    // Datagrams that look like RTP/RTCP from the client's address but fail SRTP authentication are no sign of life.
    let (mut p, _) = publishing();
    p.lose_to_server = Box::new(|_| true);
    let mut n = 0u16;
    let secs = seconds_to_close(&mut p, |p| {
        for _ in 0..5 {
            n = n.wrapping_add(1);
            let mut rtp = vec![0x80, 111, (n >> 8) as u8, n as u8, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
            rtp.extend_from_slice(&[0u8; 40]);
            p.peer.handle_receive(
                p.now,
                str0m::net::Protocol::Udp,
                CLIENT.parse().unwrap(),
                SERVER.parse().unwrap(),
                &rtp,
            );
            let rtcp = [0x80u8, 201, 0, 1, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 1];
            p.peer.handle_receive(
                p.now,
                str0m::net::Protocol::Udp,
                CLIENT.parse().unwrap(),
                SERVER.parse().unwrap(),
                &rtcp,
            );
        }
    })
    .expect("closed");
    assert!((10.0..=16.0).contains(&secs), "closed after {secs} s");
}
