//! Loss between the server and a subscriber is repaired: the subscriber's NACKs are answered from the server's
//! send cache (RTX), because forwarded video is written as nackable. Simulated network, virtual clock.

mod common;

use std::time::Duration;

use common::Pair;
use sfu::id::TrackId;
use sfu::keyframe::KeyframeStart;

#[test]
fn lost_video_packets_are_retransmitted() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (mut p, params) = Pair::subscribed_video(TrackId(5));

    // The network loses the 10th and 11th RTP packets on their first way to the subscriber.
    p.lose = Box::new(|n| n == 10 || n == 11);
    let first_seq = 40_000u64;
    let count = 60u64;
    let mut received = Vec::new();
    let mut dropped = 0;
    for i in 0..count {
        let keyframe = i == 0;
        let payload: Vec<u8> = if keyframe { vec![0x10, 0x00, 0x9d, 0x01, 0x2a, 7] } else { vec![0x10, 0x01, 7, 7] };
        let pkt = common::packet(TrackId(5), params, p.now)
            .seq_no(first_seq + i)
            .timestamp(90_000 + (i as u32) * 3000)
            .marker(true)
            .keyframe(if keyframe { KeyframeStart::Yes } else { KeyframeStart::No })
            .payload(payload)
            .arc();
        p.peer.handle_forward(&pkt);
        let out = p.run(Duration::from_millis(33));
        received.extend(out.client_rtp);
        dropped += out.dropped;
    }
    let out = p.run(Duration::from_secs(2));
    received.extend(out.client_rtp);
    dropped += out.dropped;

    assert_eq!(dropped, 2, "the network dropped two packets");
    received.sort_unstable();
    received.dedup();
    assert_eq!(received.len() as u64, count, "every packet arrived, the lost ones as retransmissions: {received:?}");
    // The subscriber's numbering is continuous (and starts low, so SRTP's rollover counter starts at zero).
    assert!(received.windows(2).all(|w| w[1] == w[0] + 1), "{received:?}");
    assert!(received[0] < 1 << 15);
    // What `/metrics` reports as RTP packets out: each forwarded packet once (retransmissions are str0m's repairs).
    assert_eq!(p.peer.rtp_counts(), (0, count));
}
