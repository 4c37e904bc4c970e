//! Opus RED (RFC 2198) through the server, and subscribers' audio loss passed on to the publisher. Simulated
//! network, virtual clock ([`common::Pair`]), a str0m `Rtc` as the client.
//!
//! - A subscriber that negotiated RED receives the publisher's RED packets with their blocks intact.
//! - A subscriber without RED receives the primary Opus block on its Opus payload type, with continuous sequence
//!   numbers and timestamps.
//! - A publisher's plain Opus reaches a RED subscriber as plain Opus.
//! - A subscriber's lossy receiver reports become a loss report toward the publisher, and a publisher's peer told
//!   of its subscribers' loss puts at least that fraction lost in its receiver reports (str0m's
//!   `set_reported_loss_floor`), which the publishing client sees in its own statistics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Pair;
use sfu::id::{PeerId, TrackId};
use sfu::packet::ForwardPacket;
use sfu::peer::PeerEvent;
use str0m::change::SdpAnswer;
use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{Direction, MediaKind, MediaTime};

const TRACK: TrackId = TrackId(11);

/// What the client received: (payload type, sequence number, timestamp, payload).
type Received = (u8, u64, u32, Vec<u8>);
const FRAME: Duration = Duration::from_millis(20);

/// The publisher's Opus parameters: PT 111, with RED on PT 63 when `red` (as a Chrome publisher negotiates them).
fn publisher_opus(red: bool) -> PayloadParams {
    let mut cc = CodecConfig::empty();
    cc.enable_opus(true, red);
    *cc.find(|p| p.spec().codec == Codec::Opus).expect("Opus configured")
}

/// A RED payload as Chrome sends it: the previous frame as a redundant block (960 ticks earlier), then this one.
fn red_payload(pt: u8, prev: &[u8], this: &[u8]) -> Vec<u8> {
    let len = prev.len();
    let mut p = vec![0x80 | pt, (960u16 >> 6) as u8, (((960u16 & 0x3f) as u8) << 2) | (len >> 8) as u8, len as u8, pt];
    p.extend_from_slice(prev);
    p.extend_from_slice(this);
    p
}

/// Frame `i`'s Opus bytes (distinct per frame).
fn opus_frame(i: u64) -> Vec<u8> {
    vec![0x78, i as u8, (i >> 8) as u8, 0xaa, 0xbb]
}

fn audio_packet(p: &Pair, params: PayloadParams, red: bool, i: u64, payload: Vec<u8>) -> ForwardPacket {
    let primary =
        red.then(|| sfu::red::primary(&payload, *params.pt()).map(Arc::from).expect("a well-formed RED payload"));
    common::packet(TRACK, params, p.now)
        .seq_no(30_000 + i)
        .timestamp(480_000u32.wrapping_add((i as u32) * 960))
        .marker(i == 0)
        .red(primary)
        .payload(payload)
        .build()
}

/// A connected pair whose client (RTP mode, Opus with or without RED) receives audio `TRACK`.
fn subscribed_audio(client_red: bool) -> Pair {
    let mut p = Pair::with_client(|b| {
        b.set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, client_red)
            .set_rtcp_report_interval_audio(Duration::from_secs(1))
    });
    p.peer.add_downtrack(TRACK, MediaKind::Audio, PeerId(9));
    let offer = p.accept_next_offer();
    assert!(offer.contains("red/48000/2"), "the server offers RED: {offer}");
    let out = p.run(Duration::from_secs(2));
    assert!(out.client_connected, "{:?}", out.client_events);
    p
}

/// Send `n` packets made by `make(i)`, one every 20 ms; returns what the client received: (PT, seq, ts, payload).
fn send_audio(p: &mut Pair, n: u64, mut make: impl FnMut(&Pair, u64) -> ForwardPacket) -> (Vec<Received>, common::Out) {
    let mut got = Vec::new();
    let mut last = common::Out::default();
    for i in 0..n {
        let pkt = make(p, i);
        p.peer.handle_forward(&Arc::new(pkt));
        let out = p.run(FRAME);
        got.extend(out.client_rtp_full.iter().cloned());
        last.subscriber_losses.extend(out.subscriber_losses.iter().copied());
    }
    let out = p.run(Duration::from_millis(200));
    got.extend(out.client_rtp_full.iter().cloned());
    last.subscriber_losses.extend(out.subscriber_losses.iter().copied());
    (got, last)
}

fn assert_continuous(got: &[Received]) {
    for w in got.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1, "sequence numbers continuous");
        assert_eq!(w[1].2.wrapping_sub(w[0].2), 960, "timestamps continuous");
    }
}

#[test]
fn red_subscriber_receives_red_with_intact_blocks() {
    let mut p = subscribed_audio(true);
    let local = *p.client.codec_config().find(|c| c.spec().codec == Codec::Opus).unwrap();
    let red_pt = local.red().expect("the client negotiated RED");
    let params = publisher_opus(true);
    let n = 50;
    let (got, _) = send_audio(&mut p, n, |p, i| {
        audio_packet(p, params, true, i, red_payload(111, &opus_frame(i.saturating_sub(1)), &opus_frame(i)))
    });
    assert_eq!(got.len() as u64, n, "every packet arrived");
    for (i, (pt, _, _, payload)) in got.iter().enumerate() {
        assert_eq!(*pt, *red_pt, "on the subscriber's RED payload type");
        let want = red_payload(*local.pt(), &opus_frame((i as u64).saturating_sub(1)), &opus_frame(i as u64));
        assert_eq!(payload, &want, "packet {i}: blocks intact");
    }
    assert_continuous(&got);
}

#[test]
fn subscriber_without_red_receives_the_primary_opus_block() {
    let mut p = subscribed_audio(false);
    let local = *p.client.codec_config().find(|c| c.spec().codec == Codec::Opus).unwrap();
    assert_eq!(local.red(), None, "the client did not negotiate RED");
    let params = publisher_opus(true);
    let n = 50;
    let (got, _) = send_audio(&mut p, n, |p, i| {
        audio_packet(p, params, true, i, red_payload(111, &opus_frame(i.saturating_sub(1)), &opus_frame(i)))
    });
    assert_eq!(got.len() as u64, n, "every packet arrived");
    for (i, (pt, _, _, payload)) in got.iter().enumerate() {
        assert_eq!(*pt, *local.pt(), "on the subscriber's Opus payload type");
        assert_eq!(payload, &opus_frame(i as u64), "packet {i}: the primary block alone");
    }
    assert_continuous(&got);
}

#[test]
fn plain_opus_reaches_a_red_subscriber_as_plain_opus() {
    let mut p = subscribed_audio(true);
    let local = *p.client.codec_config().find(|c| c.spec().codec == Codec::Opus).unwrap();
    let params = publisher_opus(false);
    let (got, _) = send_audio(&mut p, 20, |p, i| audio_packet(p, params, false, i, opus_frame(i)));
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|(pt, ..)| *pt == *local.pt()), "no RED synthesised");
    assert!(got.iter().enumerate().all(|(i, g)| g.3 == opus_frame(i as u64)));
    assert_continuous(&got);
}

#[test]
fn a_lossy_subscriber_reports_its_audio_loss_toward_the_publisher() {
    let mut p = subscribed_audio(true);
    // The network loses every 10th packet to the subscriber; its receiver reports (every second) say so.
    p.lose = Box::new(|n| n % 10 == 5);
    let params = publisher_opus(true);
    let (_, out) = send_audio(&mut p, 250, |p, i| {
        audio_packet(p, params, true, i, red_payload(111, &opus_frame(i.saturating_sub(1)), &opus_frame(i)))
    });
    let reports: Vec<f32> = out.subscriber_losses.iter().filter(|(t, _)| *t == TRACK).map(|(_, l)| *l).collect();
    assert!(!reports.is_empty(), "no loss report in 5 s");
    assert!(reports.iter().any(|l| (0.07..=0.13).contains(l)), "about 10 %: {reports:?}");
    // Bounded: not one per packet or per statistics interval.
    assert!(reports.len() <= 5, "{reports:?}");
}

#[test]
fn the_publisher_is_told_its_subscribers_loss_in_receiver_reports() {
    // The client publishes Opus (frame mode) and reads its egress statistics, which carry the server's RRs.
    let mut p = Pair::with_client(|b| b.clear_codecs().enable_opus(true, false).set_stats_interval(Some(FRAME * 25)));
    let mut change = p.client.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    p.peer.handle_offer(p.now, 1, &offer.to_sdp_string());
    let out = p.run(Duration::from_millis(1));
    let answer = out.answer(1).expect("an answer");
    p.client.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    let out = p.run(Duration::from_secs(1));
    let track = out
        .events
        .iter()
        .find_map(|e| if let PeerEvent::TrackPublished { track, .. } = e { Some(*track) } else { None })
        .expect("published");
    let pt = p.client.codec_config().find(|c| c.spec().codec == Codec::Opus).unwrap().pt();

    // Sends for `secs`, and returns the loss in the RRs the client heard meanwhile.
    let mut frame = 0u64;
    let mut run = |p: &mut Pair, secs: u64| -> Vec<f32> {
        let mut losses = Vec::new();
        for _ in 0..secs * 50 {
            let t = MediaTime::new(frame * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
            p.client.writer(mid).expect("writer").write(pt, p.now, t, opus_frame(frame)).expect("write");
            frame += 1;
            let out = p.run(FRAME);
            for e in &out.client_events {
                if let Some(l) = e.split("loss: Some(").nth(1).and_then(|r| r.split(')').next()) {
                    if e.starts_with("MediaEgressStats") {
                        losses.push(l.parse::<f32>().expect("a number"));
                    }
                }
            }
        }
        losses
    };
    let clean = run(&mut p, 3);
    assert!(!clean.is_empty() && clean.iter().all(|l| *l == 0.0), "a clean upstream: {clean:?}");

    // A subscriber loses 10 % (and says so again every second): the server's RRs to the publisher say that much.
    let mut lossy = Vec::new();
    for _ in 0..4 {
        p.peer.handle_subscriber_loss(p.now, track, PeerId(7), 0.1);
        lossy.extend(run(&mut p, 1));
    }
    assert!(lossy.iter().any(|l| (0.09..=0.11).contains(l)), "{lossy:?}");
    assert!(lossy.iter().skip(1).all(|l| (0.09..=0.11).contains(l)), "steady: {lossy:?}");

    // It recovers: the floor decays away.
    for _ in 0..10 {
        p.peer.handle_subscriber_loss(p.now, track, PeerId(7), 0.0);
        run(&mut p, 2);
    }
    let after = run(&mut p, 2);
    assert!(after.iter().all(|l| *l < 0.01), "{after:?}");
}
