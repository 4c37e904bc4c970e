//! The forwarding path's cost, sans-I/O and on simulated time, so that it repeats: one publisher's packets handed to
//! N subscriber peers (each a real str0m client on a simulated link that sends TWCC feedback and receiver reports,
//! as browsers do). Not a test of behaviour: `media-tests/bench/forward-cost.sh` runs it under
//! `valgrind --tool=callgrind`, counting only the server peers' work (their four entry points) inside a measured
//! window after the connections and the estimate's ramp, and divides by the packets handed to the peers in it.
//! Everything is driven by the workload's own clock, so two runs of one build count nearly the same instructions,
//! where the whole process under real load (`media-tests/bench/callgrind.sh`) varies by 15 %.
//!
//! Knobs (environment): `FORWARD_COST_SUBSCRIBERS` (default 20), `FORWARD_COST_FRAMES` (the measured window,
//! default 300 at 30 fps), `FORWARD_COST_WARMUP` (frames before it, default 90), `FORWARD_COST_KBPS` (the video
//! layer's bitrate, default 1000), `FORWARD_COST_AUDIO` (1: an Opus track too), `FORWARD_COST_PACED` (1: a frame's
//! packets handed one at a time over 40 % of its interval, as from a browser that paces at 2.5× its rate, instead
//! of all at once).

mod common;

use std::time::Duration;

use common::{opus_packet, Link, Pair, Vp8Layer};
use sfu::id::TrackId;
use str0m::bwe::Bitrate;
use str0m::media::MediaKind;

const VIDEO: TrackId = TrackId(7);
const AUDIO: TrackId = TrackId(8);
const FRAME: Duration = Duration::from_micros(33_333);

/// The measured window starts: callgrind zeroes its counts on entering this function (`--zero-before`).
#[inline(never)]
fn window_starts() {
    // Bodies that differ, or the two functions are folded into one.
    std::hint::black_box("the measured window starts");
}

/// The measured window ends: callgrind writes its counts on entering this function (`--dump-before`).
#[inline(never)]
fn window_ends() {
    std::hint::black_box("the measured window ends");
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore = "a benchmark workload: media-tests/bench/forward-cost.sh"]
fn forward_cost_workload() {
    let subscribers = knob("FORWARD_COST_SUBSCRIBERS", 20) as usize;
    let frames = knob("FORWARD_COST_FRAMES", 300) as u32;
    let kbps = knob("FORWARD_COST_KBPS", 1000) as u32;
    let audio = knob("FORWARD_COST_AUDIO", 0) == 1;
    let warmup = knob("FORWARD_COST_WARMUP", 90) as u32;
    let paced = knob("FORWARD_COST_PACED", 0) == 1;
    // Each subscriber's link: room for the layer and its probes, 10 ms each way, a 200 ms queue.
    let link = Link { capacity: 5_000_000, queue: Duration::from_millis(200), delay: Duration::from_millis(10) };
    let mut pairs: Vec<Pair> = Vec::with_capacity(subscribers);
    let mut params = None;
    for _ in 0..subscribers {
        let mut pair = Pair::with_bwe(Bitrate::kbps(u64::from(kbps) * 2), |b| b.set_rtp_mode(true));
        pair.link = Some(link);
        pair.timeouts_when_due = true;
        let (mut pair, p) = Pair::subscribed_video_on(pair, VIDEO);
        if audio {
            pair.peer.add_downtrack(AUDIO, MediaKind::Audio, sfu::id::PeerId(9));
            pair.accept_next_offer();
            pair.run(Duration::from_millis(100));
        }
        params = Some(p);
        pairs.push(pair);
    }
    let params = params.expect("at least one subscriber");
    // One clock for all: the pairs were connected one after another.
    let start = pairs.iter().map(|p| p.now).max().expect("subscribers");
    for p in &mut pairs {
        let lag = start - p.now;
        p.run(lag);
    }
    let mut layer = Vp8Layer::single(VIDEO, kbps * 1000);
    let (mut handed, mut received) = (0u64, 0u64);
    let mut opus = 0u64;
    for f in 0..warmup + frames {
        if f == warmup {
            window_starts();
            (handed, received) = (0, 0);
        }
        if f > 0 && f % 90 == 0 {
            layer.key_due = true;
        }
        let now = pairs[0].now;
        let mut pkts = layer.frame(params, f, now);
        // Opus every 20 ms: 50 a second, 5 every 3 frames.
        while audio && opus < u64::from(f + 1) * 5 / 3 {
            pkts.push(opus_packet(AUDIO, opus, now));
            opus += 1;
        }
        for pair in &mut pairs {
            if paced {
                // As a browser paces (2.5× its rate): the frame's packets spread over 40 % of its interval, each
                // handed alone and the peer driven until the next.
                let gap = FRAME * 2 / 5 / pkts.len().max(1) as u32;
                for p in &pkts {
                    pair.peer.handle_forward(p);
                    received += pair.run(gap).client_rtp.len() as u64;
                }
                received += pair.run(FRAME - gap * pkts.len() as u32).client_rtp.len() as u64;
                continue;
            }
            for p in &pkts {
                pair.peer.handle_forward(p);
            }
            let out = pair.run(FRAME);
            received += out.client_rtp.len() as u64;
        }
        handed += (pkts.len() * pairs.len()) as u64;
    }
    window_ends();
    // Drain what is still in flight (not counted: the window ended).
    for pair in &mut pairs {
        received += pair.run(Duration::from_millis(300)).client_rtp.len() as u64;
    }
    println!(
        "forward cost workload: {subscribers} subscribers, {frames} frames at {kbps} kbit/s{} after {warmup}: {handed} \
         packets handed to the subscriber peers in the window, {received} received by their clients",
        if audio { " + Opus" } else { "" }
    );
    assert!(received * 1000 >= handed * 995, "the clients received what was forwarded: {received} of {handed}");
}
