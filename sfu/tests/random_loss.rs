//! Random loss is not congestion: a subscriber behind an uncongested 1 ms link that loses a share of what the
//! server sends it at random (repaired by NACK/RTX) keeps its only video layer, without a pause, and the server's
//! send-side estimate stays above what the layer costs. str0m's estimator is fed by the str0m client's TWCC
//! feedback, as a browser's would feed it. Simulated network, virtual clock.

mod common;

use std::time::Duration;

use common::{Link, Pair, Vp8Layer};
use rand::{Rng, SeedableRng};
use sfu::downtrack::StreamState;
use sfu::id::TrackId;
use sfu::peer::PeerEvent;
use str0m::bwe::Bitrate;

const TRACK: TrackId = TrackId(31);
const FRAME: Duration = Duration::from_nanos(33_333_333);

/// What one run saw.
#[derive(Debug)]
struct Run {
    /// When the server told the subscriber its video was paused, and resumed.
    paused: Vec<Duration>,
    resumed: Vec<Duration>,
    /// Once a second: (second, estimate).
    estimates: Vec<(u64, Option<u64>)>,
    /// Frames the client received whole, and frames sent.
    frames_received: usize,
    frames_sent: u32,
}

/// An uncongested link: 50 Mbit/s, 1 ms each way.
const CLEAN: u64 = 50_000_000;

/// One single-layer publisher ramping from 300 kbit/s to `bitrate` over 10 s (as a browser's encoder does), a
/// subscriber whose downlink loses `loss_pct` % of RTP datagrams at random and has the capacity `capacity(t)` (a
/// 200 ms drop-tail queue), for `secs` seconds.
fn run(loss_pct: u32, bitrate: u32, secs: u64, seed: u64, capacity: impl Fn(Duration) -> u64) -> Run {
    if std::env::var("TRACE_ESTIMATE").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    }
    let mut pair = Pair::with_bwe(Bitrate::kbps(1000), |b| b.set_rtp_mode(true));
    let link = Link { capacity: CLEAN, queue: Duration::from_millis(200), delay: Duration::from_millis(1) };
    pair.link = Some(link);
    let (mut p, params) = Pair::subscribed_video_on(pair, TRACK);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    p.lose = Box::new(move |_| rng.gen_range(0..100) < loss_pct);
    let start = p.now;
    let mut layer = Vp8Layer::single(TRACK, 300_000);
    let mut frame = 0u32;
    let (mut link_bytes, mut padding_bytes) = (0u64, 0u64);
    let mut run = Run { paused: vec![], resumed: vec![], estimates: vec![], frames_received: 0, frames_sent: 0 };
    let mut received = std::collections::BTreeSet::new();
    while p.now - start < Duration::from_secs(secs) {
        let t = p.now - start;
        p.link = Some(Link { capacity: capacity(t), ..link });
        let ramp = (t.as_secs_f64() / 10.0).min(1.0);
        layer.bitrate = (300_000.0 + (f64::from(bitrate) - 300_000.0) * ramp) as u32;
        layer.layer_bitrates[0] = layer.bitrate;
        frame += 1;
        if frame.is_multiple_of(300) {
            layer.key_due = true;
        }
        let now = p.now;
        for pkt in layer.frame(params, frame, now) {
            p.peer.handle_forward(&pkt);
        }
        let out = p.run(FRAME);
        link_bytes += out.link_bytes;
        padding_bytes += out.link_padding_bytes + out.link_rtx_bytes;
        if out.keyframe_requests.contains(&TRACK) {
            layer.key_due = true;
        }
        for e in &out.events {
            match e {
                PeerEvent::StreamState { state: StreamState::Paused, .. } => run.paused.push(p.now - start),
                PeerEvent::StreamState { state: StreamState::Active { .. }, .. } if !run.paused.is_empty() => {
                    run.resumed.push(p.now - start)
                }
                _ => {}
            }
        }
        for (_, _, payload) in &out.client_payloads {
            let n = payload.len();
            received.insert(u32::from_be_bytes(payload[n - 4..].try_into().unwrap()));
        }
        if frame.is_multiple_of(30) {
            let est = p.peer.bandwidth_estimate();
            run.estimates.push((u64::from(frame / 30), est));
            if std::env::var("TRACE_ESTIMATE").is_ok() {
                println!(
                    "loss {loss_pct:>2} % {:>3} s  capacity {:>8}  stream {:>8}  estimate {est:?}  sent {} kbit/s \
                     (padding and RTX {})",
                    frame / 30,
                    capacity(t),
                    layer.bitrate,
                    link_bytes * 8 / 1000,
                    padding_bytes * 8 / 1000
                );
            }
            (link_bytes, padding_bytes) = (0, 0);
        }
    }
    run.frames_sent = frame;
    run.frames_received = received.len();
    run
}

#[test]
fn random_loss_never_pauses_the_only_layer() {
    for loss in [0, 2, 5, 10, 20] {
        let r = run(loss, 1_200_000, 40, 7 + u64::from(loss), |_| CLEAN);
        println!(
            "loss {loss} %: paused at {:?}; frames {}/{}; estimates {:?}",
            r.paused, r.frames_received, r.frames_sent, r.estimates
        );
        assert!(r.paused.is_empty(), "at {loss} % random loss the video was paused at {:?}", r.paused);
    }
}

#[test]
fn a_link_that_cannot_carry_the_layer_pauses_it_and_it_comes_back() {
    // From 15 s to 30 s the link carries 500 kbit/s: the 1.2 Mbit/s layer builds a standing queue and overflows
    // it. Then the link is clean again.
    let (down, up) = (Duration::from_secs(15), Duration::from_secs(30));
    let r = run(0, 1_200_000, 45, 3, |t| if t >= down && t < up { 500_000 } else { CLEAN });
    println!("paused at {:?}, resumed at {:?}; estimates {:?}", r.paused, r.resumed, r.estimates);
    let paused = *r.paused.first().expect("paused while the link could not carry the layer");
    assert!(paused > down && paused - down <= Duration::from_secs(6), "paused at {paused:?}");
    let resumed = r.resumed.iter().copied().find(|t| *t > up).expect("resumed after the link came back");
    assert!(resumed - up <= Duration::from_secs(8), "resumed only at {resumed:?}");
}
