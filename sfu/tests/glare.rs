//! Both sides offer at once: the server peer is the polite side. Driven in memory over a simulated network
//! ([`common::Pair`]), with a str0m `Rtc` as the client, so the outcome is deterministic.

mod common;

use std::time::Duration;

use common::Pair;
use sfu::id::{PeerId, TrackId};

use sfu::keyframe::KeyframeStart;
use sfu::peer::PeerEvent;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};

const MOMENT: Duration = Duration::from_millis(1);

#[test]
fn polite_server_abandons_its_offer_and_offers_again() {
    let mut p = Pair::new();

    // The server wants to send a track: it offers (id 1) and says on which mid.
    p.peer.add_downtrack(TrackId(7), MediaKind::Video, PeerId(2));
    let out = p.run(MOMENT);
    let first = out.offers();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, 1);
    assert!(out.events.iter().any(|e| matches!(e, PeerEvent::Subscribed { track: TrackId(7), .. })));

    // Meanwhile the client offers to publish audio (it ignores the server's offer: the impolite side).
    let mut change = p.client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (client_offer, pending) = change.apply().unwrap();
    p.peer.handle_offer(p.now, 1, &client_offer.to_sdp_string());
    let out = p.run(MOMENT);

    // The server answers the client's offer and offers again, with a new id and the track announced again.
    let answer = out.answer(1).expect("an answer to the client's offer");
    let second = out.offers();
    assert_eq!(second.len(), 1, "{:?}", out.events);
    assert_eq!(second[0].0, 2, "a fresh offer id after glare");
    assert_eq!(out.events.iter().filter(|e| matches!(e, PeerEvent::Subscribed { .. })).count(), 1);
    p.client.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

    // ICE + DTLS come up; the client's audio track is published.
    let out = p.run(Duration::from_secs(2));
    assert!(out.client_connected, "client connected: {:?}", out.client_events);
    assert!(out.events.iter().any(|e| matches!(e, PeerEvent::Connected)), "{:?}", out.events);
    assert!(
        out.events.iter().any(|e| matches!(e, PeerEvent::TrackPublished { kind: MediaKind::Audio, .. })),
        "{:?}",
        out.events
    );

    // A late answer to the abandoned offer is ignored, not an error.
    // (A valid answer from another client instance: only its id matters.)
    let mut other = str0m::Rtc::builder().build(p.now);
    let stale = other.sdp_api().accept_offer(SdpOffer::from_sdp_string(&first[0].1).unwrap()).unwrap();
    p.peer.handle_answer(p.now, 1, &stale.to_sdp_string()).expect("a stale answer is not an error");
    let out = p.run(MOMENT);
    assert!(
        out.offers().is_empty() && out.keyframe_requests.is_empty(),
        "stale answer changes nothing: {:?}",
        out.events
    );

    // The client answers the fresh offer: the video down-track opens; its first (delta) packet is held back and
    // the publisher is asked for a keyframe.
    let fresh = p.client.sdp_api().accept_offer(SdpOffer::from_sdp_string(&second[0].1).unwrap()).unwrap();
    p.peer.handle_answer(p.now, 2, &fresh.to_sdp_string()).unwrap();
    p.run(MOMENT);
    assert_eq!(p.peer.subscribed_tracks().collect::<Vec<_>>(), vec![TrackId(7)]);
    let params = *p.client.codec_config().find(|c| c.spec().codec == Codec::Vp8).unwrap();
    let delta = common::packet(TrackId(7), params, p.now)
        .seq_no(1)
        .marker(true)
        .keyframe(KeyframeStart::No)
        .payload(vec![0x10, 0x01, 0, 0])
        .build();
    p.peer.handle_forward(&delta);
    let out = p.run(MOMENT);
    assert_eq!(out.keyframe_requests, vec![TrackId(7)], "{:?}", out.events);
    assert!(out.client_rtp.is_empty(), "a delta frame is not forwarded before a keyframe");
}

#[test]
fn stale_answer_with_an_unknown_id_is_ignored() {
    let mut p = Pair::new();
    p.peer.add_downtrack(TrackId(3), MediaKind::Audio, PeerId(2));
    let out = p.run(MOMENT);
    let (id, offer) = out.offers().remove(0);
    let answer = p.client.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    // Wrong id: ignored, the offer stays outstanding.
    p.peer.handle_answer(p.now, id + 10, &answer.to_sdp_string()).unwrap();
    p.run(MOMENT);
    assert_eq!(p.peer.subscribed_tracks().count(), 1);
    // Right id: accepted.
    p.peer.handle_answer(p.now, id, &answer.to_sdp_string()).unwrap();
    let out = p.run(Duration::from_secs(2));
    assert!(out.client_connected, "{:?}", out.client_events);
}

#[test]
fn unsubscribe_while_offering_stops_after_the_answer() {
    let mut p = Pair::new();
    p.peer.add_downtrack(TrackId(9), MediaKind::Audio, PeerId(2));
    let (id, offer) = p.run(MOMENT).offers().remove(0);
    // Unsubscribed before the answer arrives: nothing new is offered yet (one offer at a time).
    p.peer.remove_downtrack(TrackId(9));
    assert!(p.run(MOMENT).offers().is_empty());
    let answer = p.client.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
    p.peer.handle_answer(p.now, id, &answer.to_sdp_string()).unwrap();
    // Once answered, the m-line is given up in a new offer: made inactive, as it is the bundle's first m-line
    // (sdp_interop.rs: a later one is stopped with port 0).
    let next = p.run(MOMENT).offers();
    assert_eq!(next.len(), 1);
    assert!(next[0].1.contains("a=inactive"), "the m-line is inactive:\n{}", next[0].1);
    let answer = p.client.sdp_api().accept_offer(SdpOffer::from_sdp_string(&next[0].1).unwrap()).unwrap();
    p.peer.handle_answer(p.now, next[0].0, &answer.to_sdp_string()).unwrap();
    p.run(MOMENT);
    assert_eq!(p.peer.subscribed_tracks().count(), 0);
}
