//! The stream allocator against a bottleneck: a subscriber behind a link whose capacity steps 3 Mbit/s → 400 kbit/s
//! → 3 Mbit/s receives a three-layer simulcast track (q/h/f at 150/500/1500 kbit/s). str0m's send-side estimate
//! (TWCC from the str0m client) drives the allocator; the test checks the layer the client actually receives, the
//! continuity of what it receives, and prints the switch times (recorded in docs/benchmarks.md). Simulated network,
//! virtual clock: about 30 s of call in well under a second of test.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Link, Pair, Vp8Layer};
use sfu::downtrack::StreamState;
use sfu::id::TrackId;
use sfu::peer::PeerEvent;
use str0m::bwe::Bitrate;

const TRACK: TrackId = TrackId(21);
const FRAME: Duration = Duration::from_nanos(33_333_333);
const BITRATES: [u32; 3] = [150_000, 500_000, 1_500_000];
const SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];
/// What the client received of one frame (by its outgoing timestamp).
#[derive(Debug, Default)]
struct Frame {
    layers: Vec<u8>,
    numbers: Vec<u32>,
    /// When its first packet reached the client (to the step, 1/30 s).
    at: Duration,
}

#[test]
fn follows_a_bandwidth_step_down_and_up() {
    let mut pair = Pair::with_bwe(Bitrate::kbps(1000), |b| b.set_rtp_mode(true));
    let link = Link { capacity: 3_000_000, queue: Duration::from_millis(200), delay: Duration::from_millis(20) };
    pair.link = Some(link);
    let (mut p, params) = Pair::subscribed_video_on(pair, TRACK);
    let start = p.now;

    // The publisher's layers, numbered unrelatedly, each starting with a keyframe.
    let mut layers: Vec<Vp8Layer> = [(0u8, 100u64, 5_000u32), (1, 20_000, 700_000), (2, 50_000, 9_000_000)]
        .into_iter()
        .map(|(index, seq, ts)| Vp8Layer {
            track: TRACK,
            index,
            bitrate: BITRATES[usize::from(index)],
            size: SIZES[usize::from(index)],
            simulcast: true,
            live_layers: 0b111,
            layer_sizes: SIZES.map(Some),
            layer_bitrates: BITRATES,
            seq,
            ts,
            pid: 1000 * u16::from(index),
            tl0: 0,
            key_due: true,
        })
        .collect();

    let drop_at = Duration::from_secs(10);
    let back_at = Duration::from_secs(20);
    let end = Duration::from_secs(34);

    let mut frames: BTreeMap<u64, Frame> = BTreeMap::new(); // by extended outgoing sequence number of first packet
    let mut by_ts: BTreeMap<u32, Frame> = BTreeMap::new();
    let mut seqs: Vec<u64> = Vec::new();
    let mut states: Vec<(Duration, StreamState)> = Vec::new();
    let (mut link_bytes, mut link_dropped, mut media_bytes, mut media_packets) = (0u64, 0usize, 0u64, 0u64);
    let (mut padding_bytes, mut rtx_bytes) = (0u64, 0u64);
    let mut frame = 0u32;
    while p.now - start < end {
        let t = p.now - start;
        let capacity = if t < drop_at || t >= back_at { 3_000_000 } else { 400_000 };
        p.link = Some(Link { capacity, ..link });
        frame += 1;
        // Periodic keyframes every 3 s, as encoders do; requested ones below.
        if frame.is_multiple_of(90) {
            layers.iter_mut().for_each(|l| l.key_due = true);
        }
        let now = p.now;
        for l in &mut layers {
            for pkt in l.frame(params, frame, now) {
                p.peer.handle_forward(&pkt);
            }
        }
        let out = p.run(FRAME);
        let t = p.now - start;
        if std::env::var("TRACE_ESTIMATE").is_ok() && frame.is_multiple_of(6) {
            println!("{:>6.2} s  cap {capacity:>7}  estimate {:?}", t.as_secs_f64(), p.peer.bandwidth_estimate());
        }
        for (track, layer) in &out.keyframe_layers {
            if *track == TRACK {
                layers[usize::from(*layer)].key_due = true;
            }
        }
        for e in &out.events {
            if let PeerEvent::StreamState { track, state } = e {
                assert_eq!(*track, TRACK);
                states.push((t, *state));
            }
        }
        link_bytes += out.link_bytes;
        link_dropped += out.link_dropped;
        padding_bytes += out.link_padding_bytes;
        rtx_bytes += out.link_rtx_bytes;
        for (seq, ts, payload) in out.client_payloads {
            let n = payload.len();
            media_bytes += n as u64;
            media_packets += 1;
            assert!(n >= Vp8Layer::TRAILER, "a forwarded packet lost its trailer");
            let layer = payload[n - Vp8Layer::TRAILER];
            let number = u32::from_be_bytes(payload[n - 4..].try_into().unwrap());
            seqs.push(seq);
            let f = by_ts.entry(ts).or_insert_with(|| Frame { at: t, ..Default::default() });
            f.layers.push(layer);
            f.numbers.push(number);
        }
    }
    let _ = &mut frames;

    // Continuity: every frame is made of one layer's packets of one source frame, and frames follow each other in
    // timestamp order with the source pictures moving forward. At a switch the new layer's keyframe may carry the
    // picture just shown from the old layer (the layers of one picture arrive together): shown again, sharper.
    let (mut last_number, mut last_layer) = (0, 0);
    for (ts, f) in &by_ts {
        assert!(f.layers.iter().all(|l| *l == f.layers[0]), "frame at ts {ts} mixes layers: {:?}", f.layers);
        assert!(f.numbers.iter().all(|n| *n == f.numbers[0]), "frame at ts {ts} mixes pictures: {:?}", f.numbers);
        let switched = f.layers[0] != last_layer;
        assert!(
            f.numbers[0] > last_number || (switched && f.numbers[0] == last_number),
            "picture {} after {last_number} at ts {ts}",
            f.numbers[0]
        );
        (last_number, last_layer) = (f.numbers[0], f.layers[0]);
    }
    seqs.sort_unstable();
    seqs.dedup();

    // The layer on screen over time: the layer of each received frame, in order.
    let timeline: Vec<(Duration, u8)> = by_ts.values().map(|f| (f.at, f.layers[0])).collect();
    let first_f = timeline.iter().find(|(_, l)| *l == 2).map(|(t, _)| *t);
    let low_after_drop = timeline.iter().find(|(t, l)| *t >= drop_at && *l == 0).map(|(t, _)| *t);
    let last_above_low =
        timeline.iter().filter(|(t, l)| *t >= drop_at && *t < back_at && *l > 0).map(|(t, _)| *t).max();
    let f_after_back = timeline.iter().find(|(t, l)| *t >= back_at && *l == 2).map(|(t, _)| *t);
    // The longest time without a new frame around each switch (frozen picture).
    let mut frozen = Duration::ZERO;
    for w in timeline.windows(2) {
        if w[0].1 != w[1].1 {
            frozen = frozen.max(w[1].0 - w[0].0);
        }
    }
    println!(
        "first f at {first_f:?}; drop at {drop_at:?}: q from {low_after_drop:?} (last h/f frame {last_above_low:?}); \
         back at {back_at:?}: f from {f_after_back:?}; longest gap at a switch {frozen:?}; \
         frames received {}, link bytes {link_bytes} (padding-only {padding_bytes}, RTX {rtx_bytes}) for {media_bytes} bytes of media payload in {media_packets} \
         packets, dropped by the link queue {link_dropped}; states {states:?}",
        by_ts.len()
    );

    let first_f = first_f.expect("the full layer was reached on the 3 Mbit/s link");
    assert!(first_f < drop_at, "the full layer came only at {first_f:?}");
    let before_drop = timeline.iter().rev().find(|(t, _)| *t < drop_at).map(|(_, l)| *l);
    assert_eq!(before_drop, Some(2), "on the full layer when the link shrinks: {states:?}");
    let low = low_after_drop.expect("the low layer after the drop");
    assert!(low - drop_at <= Duration::from_secs(2), "on the low layer only {:?} after the drop", low - drop_at);
    let settled = last_above_low.map_or(drop_at, |t| t.max(drop_at));
    assert!(settled - drop_at <= Duration::from_secs(2), "h or f frames until {settled:?} after the drop");
    let f = f_after_back.expect("back on the full layer");
    assert!(f - back_at <= Duration::from_secs(10), "back on the full layer only {:?} after the link", f - back_at);
    assert!(states.iter().any(|(_, s)| *s == StreamState::Active { layer: Some(0) }), "told about q: {states:?}");
    assert!(!states.iter().any(|(_, s)| *s == StreamState::Paused), "400 kbit/s carries q: never paused");
}
