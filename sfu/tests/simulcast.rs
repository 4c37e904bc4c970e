//! A down-track forwards one simulcast layer at a time and switches only at a keyframe of the target layer, asking
//! the publisher for that keyframe; the subscriber's sequence numbers and VP8 picture ids stay continuous across
//! the switch. Simulated network, virtual clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Pair;
use sfu::downtrack::TrackSettings;
use sfu::id::TrackId;
use sfu::keyframe::{starts_keyframe, KeyframeStart};
use sfu::packet::ForwardPacket;
use str0m::format::{Codec, PayloadParams};
use str0m::rtp::Vp8Descriptor;

const TRACK: TrackId = TrackId(11);

/// A VP8 payload with a 15-bit picture id, TL0PICIDX and TID (RFC 7741: L requires T); `key` sets the keyframe
/// bit of the frame tag.
fn vp8(picture_id: u16, tl0: u8, key: bool) -> Vec<u8> {
    let tag = if key { 0x10 } else { 0x11 };
    vec![0x90, 0xe0, 0x80 | (picture_id >> 8) as u8, picture_id as u8, tl0, 0x20, tag, 0, 0]
}

struct Layer {
    index: u8,
    seq: u64,
    ts: u32,
    pid: u16,
}

impl Layer {
    /// The next packet: one whole frame, captured at `frame` / 30 s (on a clock both layers share, as their
    /// sender reports would tell).
    fn packet(&mut self, params: PayloadParams, key: bool, live: u8, p: &Pair, frame: u32) -> Arc<ForwardPacket> {
        let payload = vp8(self.pid, self.pid as u8, key);
        let f = common::packet(TRACK, params, p.now)
            .seq_no(self.seq)
            .timestamp(self.ts)
            .marker(true)
            .vp8(payload)
            .layer(self.index)
            .live_layers(live)
            .layer_sizes([Some((320, 180)), None, Some((1280, 720))])
            .simulcast(true)
            .capture(1_000.0 + f64::from(frame) / 30.0)
            .arc();
        self.seq += 1;
        self.ts = self.ts.wrapping_add(3000);
        self.pid = (self.pid + 1) & 0x7fff;
        f
    }
}

fn picture_id(payload: &[u8]) -> u16 {
    Vp8Descriptor::parse(payload).unwrap().picture_id().unwrap()
}

#[test]
fn switches_layers_at_keyframes_with_continuous_numbering() {
    let (mut p, params) = Pair::subscribed_video(TRACK);

    // Two layers live (0 and 2), with unrelated numbering.
    let mut low = Layer { index: 0, seq: 100, ts: 5_000, pid: 30_000 };
    let mut high = Layer { index: 2, seq: 60_000, ts: 900_000, pid: 7 };
    let live = 0b101;
    let mut received: Vec<(u64, u32, Vec<u8>)> = Vec::new();
    let mut keyframe_requests: Vec<TrackId> = Vec::new();
    // The frame being captured; both layers encode each frame.
    let mut frame = 0;
    macro_rules! send {
        ($p:expr, $l:expr, $key:expr) => {{
            let pkt = $l.packet(params, $key, live, &$p, frame);
            $p.peer.handle_forward(&pkt);
            let out = $p.run(Duration::from_millis(10));
            received.extend(out.client_payloads);
            keyframe_requests.extend(out.keyframe_requests);
        }};
    }

    // Delta frames only: nothing is forwarded, and the down-track asks for a keyframe of the top layer.
    send!(p, low, false);
    send!(p, high, false);
    assert!(received.is_empty());
    assert_eq!(keyframe_requests, vec![TRACK], "one request (retries are throttled)");
    assert_eq!(p.peer.current_layer(TRACK), None);

    // The top layer's keyframe starts the stream; the low layer is not forwarded.
    frame += 1;
    send!(p, high, true);
    for _ in 0..5 {
        frame += 1;
        send!(p, low, false);
        send!(p, high, false);
    }
    assert_eq!(p.peer.current_layer(TRACK), Some(2));
    assert_eq!(received.len(), 6, "only the top layer: keyframe + 5 deltas");

    // The subscriber may now have only the lowest layer: the top keeps flowing until the low layer's keyframe.
    p.peer.set_max_layer(TRACK, 0);
    frame += 1;
    send!(p, low, false);
    send!(p, high, false);
    assert_eq!(p.peer.current_layer(TRACK), Some(2), "no switch without a keyframe");
    frame += 1;
    send!(p, low, true);
    assert_eq!(p.peer.current_layer(TRACK), Some(0), "switched at the keyframe");
    for _ in 0..5 {
        frame += 1;
        send!(p, high, false);
        send!(p, low, false);
    }
    let out = p.run(Duration::from_secs(1));
    received.extend(out.client_payloads);

    received.sort_by_key(|r| r.0);
    received.dedup_by_key(|r| r.0);
    assert_eq!(received.len(), 6 + 1 + 1 + 5, "top: key + 5 + 1 delta; low: key + 5 deltas");
    let seqs: Vec<u64> = received.iter().map(|r| r.0).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "continuous sequence numbers: {seqs:?}");
    let pids: Vec<u16> = received.iter().map(|r| picture_id(&r.2)).collect();
    assert!(pids.windows(2).all(|w| w[1] == (w[0] + 1) & 0x7fff), "continuous picture ids: {pids:?}");
    let ts: Vec<u32> = received.iter().map(|r| r.1).collect();
    // Across the switch too: the step comes from the layers' capture times (sender reports), not from their
    // unrelated timestamp bases or from when the packets happened to arrive.
    assert!(ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 3000), "timestamps advance a frame at a time: {ts:?}");
    assert_eq!(starts_keyframe(Codec::Vp8, &received[7].2), KeyframeStart::Yes, "the switch lands on a keyframe");
}

#[test]
fn a_small_tile_never_gets_the_full_layer_and_a_hidden_one_gets_nothing() {
    let (mut p, params) = Pair::subscribed_video(TRACK);
    // The subscriber renders this track at 320×180 from the start.
    p.peer.set_track_settings(TRACK, TrackSettings { size: Some((320, 180)), hidden: false });
    // Dynacast: the publisher learns that this subscriber needs the low layer only.
    assert_eq!(p.run(Duration::from_millis(1)).layer_demands, vec![(TRACK, Some(0))]);
    let mut low = Layer { index: 0, seq: 1, ts: 0, pid: 1 };
    let mut high = Layer { index: 2, seq: 40_000, ts: 77, pid: 500 };
    let live = 0b101;
    let mut got: Vec<(u64, u32, Vec<u8>)> = Vec::new();
    let step = |p: &mut Pair, l: &mut Layer, key: bool| {
        let frame = l.seq as u32; // capture times do not matter here
        let pkt = l.packet(params, key, live, p, frame);
        p.peer.handle_forward(&pkt);
        p.run(Duration::from_millis(10)).client_payloads
    };
    for i in 0..20 {
        got.extend(step(&mut p, &mut high, i % 5 == 0));
        got.extend(step(&mut p, &mut low, i % 5 == 0));
    }
    assert_eq!(p.peer.current_layer(TRACK), Some(0));
    assert_eq!(got.len(), 20, "every low-layer packet and none of the full layer");
    assert!(got.iter().all(|g| picture_id(&g.2) < 100), "low layer's picture ids only");

    // Hidden: nothing is forwarded.
    p.peer.set_track_settings(TRACK, TrackSettings { size: Some((320, 180)), hidden: true });
    assert_eq!(p.run(Duration::from_millis(1)).layer_demands, vec![(TRACK, None)], "a hidden tile needs nothing");
    for i in 0..10 {
        assert!(step(&mut p, &mut low, i == 0).is_empty());
    }
    // Shown again: resumes at the next keyframe, numbering continuous.
    p.peer.set_track_settings(TRACK, TrackSettings { size: None, hidden: false });
    assert_eq!(p.run(Duration::from_millis(1)).layer_demands, vec![(TRACK, Some(2))]);
    let mut resumed = Vec::new();
    for i in 0..10 {
        resumed.extend(step(&mut p, &mut high, i == 3));
        resumed.extend(step(&mut p, &mut low, false));
    }
    assert_eq!(p.peer.current_layer(TRACK), Some(2), "no size limit: the full layer");
    assert_eq!(resumed.len(), 7, "from the full layer's keyframe on");
    let last = got.last().unwrap().0;
    assert_eq!(resumed[0].0, last + 1, "no gap in sequence numbers across the pause");
}
