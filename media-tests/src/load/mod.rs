//! The load generator: `media-tests load`. Rooms of cheap publishers and subscribers ([`peer`]) against a server
//! under test ([`target`]: Courier, Janus's videoroom, Pion's broadcast example), measured over a fixed window after
//! every subscriber receives: packets/s in and out, the server's CPU time and RSS from `/proc`, forwarded packets
//! per server CPU-second, loss from sequence gaps, and the added delay from the stamp in every payload (publisher and
//! subscriber share one clock: they are in this process).
//!
//! The same peers and counters serve every target, so the numbers compare. Servers that will not gather candidates
//! on loopback run in a network namespace ([`netns`]) joined to this one by a veth pair.

pub mod courier;
pub mod http;
pub mod janus;
pub mod netns;
pub mod peer;
pub mod pion;
pub mod target;
pub mod turn;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::server::{proc_cpu_time, proc_status_kib};
use peer::{Measure, PeerHandle, Role};
use target::{Media, Session, Target};

/// The workload.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
    #[serde(skip)]
    pub media: Media,
    /// Per publisher, when it sends video.
    pub video_kbps: u32,
    pub packet_bytes: usize,
    /// Publishers spread a frame's packets at this multiple of `video_kbps` (browsers: 2.5); `None`: all at once.
    pub pacing: Option<f64>,
    /// Measured window (after everyone receives, and `warmup`).
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// Subscribers negotiating at once.
    pub parallel_joins: usize,
    /// How subscribers' packets travel (UDP, or ICE-TCP).
    #[serde(serialize_with = "transport")]
    pub subscriber_transport: peer::Transport,
}

fn transport<S: serde::Serializer>(t: &peer::Transport, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match t {
        peer::Transport::Udp => "udp",
        peer::Transport::Tcp => "tcp",
        peer::Transport::Turn => "turn",
    })
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub target: String,
    pub workload: Workload,
    pub media: String,
    /// Length of the measured window, s.
    pub seconds: f64,
    /// From every subscriber receiving something to all receiving at the full rate, s (a bandwidth estimate's
    /// ramp-up), and whether that happened within 30 s.
    pub ramp_seconds: f64,
    pub steady: bool,
    /// RTP packets the publishers sent per second.
    pub packets_in_per_s: f64,
    /// RTP packets the subscribers received per second.
    pub packets_out_per_s: f64,
    /// Mbit/s of payload received.
    pub mbps_out: f64,
    /// Server CPU (user + system) over the window, % of one core.
    pub server_cpu_percent: f64,
    /// Packets received by subscribers per second of server CPU.
    pub forwarded_per_cpu_second: f64,
    /// Server RSS before any peer joined, and at the end of the window, MiB.
    pub server_rss_idle_mib: f64,
    pub server_rss_mib: f64,
    /// (RSS at the end − idle) per subscriber, MiB.
    pub rss_per_subscriber_mib: f64,
    /// 1 − received / expected (from sequence numbers), %. Blind to packets a server never sent (it renumbers).
    pub loss_percent: f64,
    /// Per subscriber, media packets received over the window ÷ packets its room's publishers sent in it, %: the
    /// lowest, the median, and how many subscribers got under 99.5 %.
    pub delivered_min_percent: f64,
    pub delivered_median_percent: f64,
    pub delivered_under_99_5: usize,
    /// Stamp-to-arrival delay over the window, ms.
    pub delay_p50_ms: Option<f64>,
    pub delay_p99_ms: Option<f64>,
    pub delay_samples: u64,
    /// The server's own share (its forwarding-delay histogram, kernel arrival to send, Courier only) over the
    /// window: upper bounds of the buckets holding p50 and p99, ms; the share at most 2 ms, %; packets timed.
    pub server_delay_p50_ms: Option<f64>,
    pub server_delay_p99_ms: Option<f64>,
    pub server_delay_within_2ms_percent: Option<f64>,
    pub server_delay_samples: u64,
    /// This generator's CPU over the window, % of one core (near 100 % means it, not the server, may be the limit).
    pub generator_cpu_percent: f64,
    /// Keyframes the publishers sent (each its first frame, then one per request, at most one per 500 ms).
    pub keyframes: u64,
    /// Received payloads without a stamp.
    pub unstamped: u64,
}

#[derive(Default, Clone, Copy)]
struct Sums {
    sent: u64,
    received: u64,
    bytes: u64,
    expected: u64,
}

fn sums(pubs: &[PeerHandle], subs: &[PeerHandle]) -> Sums {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut s = Sums::default();
    for p in pubs {
        s.sent += load(&p.counters.packets);
    }
    for p in subs {
        s.received += load(&p.counters.packets);
        s.bytes += load(&p.counters.bytes);
        s.expected += load(&p.counters.expected);
    }
    s
}

/// Longest wait for subscribers to receive at the full rate (a server's bandwidth estimate may ramp up first).
const RAMP_LIMIT: Duration = Duration::from_secs(30);

/// Waits until, over one second, subscribers receive at least 95 % of what the publishers send times the subscribers
/// per room; `false` after `limit`.
async fn until_steady(pubs: &[PeerHandle], subs: &[PeerHandle], per_room: usize, limit: Duration) -> bool {
    let start = Instant::now();
    let mut last = sums(pubs, subs);
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sums(pubs, subs);
        let want = (now.sent - last.sent) as f64 * per_room as f64;
        let got = (now.received - last.received) as f64;
        last = now;
        if want > 0.0 && got >= 0.95 * want {
            return true;
        }
    }
    false
}

/// Runs `workload` against `target`, peers bound to `bind`; returns the measurements.
pub async fn run(target: &dyn Target, workload: &Workload, bind: IpAddr) -> anyhow::Result<LoadReport> {
    let w = workload;
    target.supports(w.rooms, w.publishers, w.media)?;
    let pids = target.pids();
    let cpu_of = |pids: &[u32]| pids.iter().map(|p| proc_cpu_time(*p)).sum::<Duration>();
    let rss_of = |pids: &[u32]| pids.iter().map(|p| proc_status_kib(*p, "VmRSS:")).sum::<u64>();
    let measure = Arc::new(Measure::default());
    let rss_idle = rss_of(&pids);
    let mut sessions: Vec<Session> = Vec::new();
    let mut pubs = Vec::new();
    let mut pub_rooms = Vec::new();
    let id = |room: usize, i: usize| ((room as u32) << 16) | i as u32;
    for room in 0..w.rooms {
        for i in 0..w.publishers {
            let role = Role::Publisher {
                id: id(room, i),
                media: w.media,
                video_kbps: w.video_kbps,
                packet_bytes: w.packet_bytes,
                pacing: w.pacing,
            };
            let p = peer::spawn(bind, role, peer::Transport::Udp, measure.clone()).await?;
            sessions.push(target.publish(room, i, w.media, &p).await.with_context(|| format!("publisher {room}/{i}"))?);
            p.connected(Duration::from_secs(10)).await.with_context(|| format!("publisher {room}/{i}"))?;
            pubs.push(p);
            pub_rooms.push(room);
        }
    }
    let joins: Vec<(usize, usize)> = (0..w.rooms).flat_map(|r| (0..w.subscribers).map(move |i| (r, i))).collect();
    let joined: Vec<(usize, PeerHandle, Session)> = stream::iter(joins)
        .map(|(room, i)| {
            let measure = measure.clone();
            async move {
                let p = peer::spawn(bind, Role::Subscriber, w.subscriber_transport, measure).await?;
                let s =
                    target.subscribe(room, i, w.media, &p).await.with_context(|| format!("subscriber {room}/{i}"))?;
                p.connected(Duration::from_secs(15)).await.with_context(|| format!("subscriber {room}/{i}"))?;
                anyhow::Ok((room, p, s))
            }
        })
        .buffer_unordered(w.parallel_joins.max(1))
        .try_collect()
        .await?;
    let mut subs = Vec::new();
    let mut sub_rooms = Vec::new();
    for (room, p, s) in joined {
        subs.push(p);
        sub_rooms.push(room);
        sessions.push(s);
    }
    peer::all_receiving(&subs, Duration::from_secs(30)).await?;
    let ramp = Instant::now();
    let steady = until_steady(&pubs, &subs, w.subscribers, RAMP_LIMIT).await;
    let ramp_seconds = ramp.elapsed().as_secs_f64();
    if !steady {
        tracing::warn!("subscribers still receive under 95 % of what is sent after {RAMP_LIMIT:?}; measuring anyway");
    }
    tokio::time::sleep(w.warmup).await;

    let me = std::process::id();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let sent_per_room = |pubs: &[PeerHandle]| {
        let mut v = vec![0u64; w.rooms];
        for (p, room) in pubs.iter().zip(&pub_rooms) {
            v[*room] += load(&p.counters.packets);
        }
        v
    };
    let media_of = |subs: &[PeerHandle]| subs.iter().map(|p| load(&p.counters.media)).collect::<Vec<_>>();
    let (sent0, media0) = (sent_per_room(&pubs), media_of(&subs));
    let fwd0 = target.forward_delay();
    let (cpu0, gen0, s0, t0) = (cpu_of(&pids), proc_cpu_time(me), sums(&pubs, &subs), Instant::now());
    measure.on.store(true, Ordering::Relaxed);
    let mut rss_max = 0;
    while t0.elapsed() < w.duration {
        tokio::time::sleep(Duration::from_millis(250).min(w.duration.saturating_sub(t0.elapsed()))).await;
        rss_max = rss_max.max(rss_of(&pids));
    }
    measure.on.store(false, Ordering::Relaxed);
    let (cpu1, gen1, s1, dt) = (cpu_of(&pids), proc_cpu_time(me), sums(&pubs, &subs), t0.elapsed());
    let server_delay = match (fwd0, target.forward_delay()) {
        (Some(a), Some(b)) => ServerDelay::between(&a, &b),
        _ => ServerDelay::default(),
    };
    // Packets in flight at the window's edges make a few per subscriber either way.
    let (sent1, media1) = (sent_per_room(&pubs), media_of(&subs));
    let mut delivered: Vec<f64> = (0..subs.len())
        .map(|i| {
            let room = sub_rooms[i];
            let want = (sent1[room] - sent0[room]) as f64;
            let got = (media1[i] - media0[i]) as f64;
            if want > 0.0 {
                got / want * 100.0
            } else {
                100.0
            }
        })
        .collect();
    delivered.sort_by(f64::total_cmp);
    let secs = dt.as_secs_f64();
    let cpu = (cpu1 - cpu0).as_secs_f64();
    let received = (s1.received - s0.received) as f64;
    let expected = (s1.expected - s0.expected) as f64;
    let delay = measure.delay.lock().map(|h| h.clone()).unwrap_or_default();
    let subscribers = (w.rooms * w.subscribers).max(1) as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let report = LoadReport {
        target: target.name().to_string(),
        workload: w.clone(),
        media: match (w.media.audio, w.media.video) {
            (true, true) => "audio+video",
            (true, false) => "audio",
            _ => "video",
        }
        .into(),
        seconds: secs,
        ramp_seconds,
        steady,
        packets_in_per_s: (s1.sent - s0.sent) as f64 / secs,
        packets_out_per_s: received / secs,
        mbps_out: (s1.bytes - s0.bytes) as f64 * 8.0 / secs / 1e6,
        server_cpu_percent: cpu / secs * 100.0,
        forwarded_per_cpu_second: if cpu > 0.0 { received / cpu } else { 0.0 },
        server_rss_idle_mib: mib(rss_idle),
        server_rss_mib: mib(rss_max),
        rss_per_subscriber_mib: mib(rss_max.saturating_sub(rss_idle)) / subscribers,
        loss_percent: if expected > 0.0 { (1.0 - received / expected).max(0.0) * 100.0 } else { 0.0 },
        delivered_min_percent: delivered.first().copied().unwrap_or(100.0),
        delivered_median_percent: delivered.get(delivered.len() / 2).copied().unwrap_or(100.0),
        delivered_under_99_5: delivered.iter().filter(|d| **d < 99.5).count(),
        delay_p50_ms: delay.percentile_ms(50.0),
        delay_p99_ms: delay.percentile_ms(99.0),
        delay_samples: delay.count(),
        server_delay_p50_ms: server_delay.p50_ms,
        server_delay_p99_ms: server_delay.p99_ms,
        server_delay_within_2ms_percent: server_delay.within_2ms_percent,
        server_delay_samples: server_delay.samples,
        generator_cpu_percent: (gen1 - gen0).as_secs_f64() / secs * 100.0,
        keyframes: pubs.iter().map(|p| p.counters.keyframes.load(Ordering::Relaxed)).sum(),
        unstamped: subs.iter().map(|p| p.counters.unstamped.load(Ordering::Relaxed)).sum(),
    };
    drop(sessions);
    drop(subs);
    drop(pubs);
    Ok(report)
}

/// The server's forwarding delay over a window, from two readings of its cumulative histogram.
#[derive(Debug, Default, Clone, PartialEq)]
struct ServerDelay {
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    within_2ms_percent: Option<f64>,
    samples: u64,
}

impl ServerDelay {
    /// `before` and `after` are (upper bound in s, cumulative count), bounds ascending, `+Inf` last. The workers add
    /// to the server's histogram once a second, so the window's edges are that coarse.
    fn between(before: &[(f64, u64)], after: &[(f64, u64)]) -> ServerDelay {
        if before.len() != after.len() || before.iter().zip(after).any(|(a, b)| a.0 != b.0) {
            return ServerDelay::default();
        }
        let cum: Vec<(f64, u64)> = before.iter().zip(after).map(|(a, b)| (b.0, b.1.saturating_sub(a.1))).collect();
        let n = cum.last().map_or(0, |c| c.1);
        if n == 0 {
            return ServerDelay::default();
        }
        let bound_ms = |p: f64| {
            let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
            cum.iter().find(|c| c.1 >= rank).map(|c| c.0 * 1000.0)
        };
        let within = cum.iter().filter(|c| c.0 <= 0.002 + 1e-12).map(|c| c.1).max().unwrap_or(0);
        ServerDelay {
            p50_ms: bound_ms(50.0),
            p99_ms: bound_ms(99.0),
            within_2ms_percent: Some(within as f64 / n as f64 * 100.0),
            samples: n,
        }
    }
}

/// The report as a few aligned lines for people.
pub fn table(r: &LoadReport) -> String {
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.3} ms")).unwrap_or_else(|| "-".into());
    format!(
        "target {} · {} rooms × {} publishers → {} subscribers · {} · {:.1} s\n\
         full rate after {:.1} s{}\n\
         packets/s in {:.0}, out {:.0} ({:.1} Mbit/s)\n\
         server CPU {:.1} % · {:.0} forwarded packets per CPU-second\n\
         server RSS {:.1} MiB (idle {:.1}) · {:.3} MiB per subscriber\n\
         loss {:.3} % · delivered per subscriber: lowest {:.2} %, median {:.2} %, {} under 99.5 %\n\
         delay p50 {} p99 {} ({} samples)\n\
         server's own delay p50 ≤ {} p99 ≤ {} · {} within 2 ms ({} packets)\n\
         generator CPU {:.1} % · keyframes {} · unstamped {}",
        r.target,
        r.workload.rooms,
        r.workload.publishers,
        r.workload.subscribers,
        r.media,
        r.seconds,
        r.ramp_seconds,
        if r.steady { "" } else { " (never steady)" },
        r.packets_in_per_s,
        r.packets_out_per_s,
        r.mbps_out,
        r.server_cpu_percent,
        r.forwarded_per_cpu_second,
        r.server_rss_mib,
        r.server_rss_idle_mib,
        r.rss_per_subscriber_mib,
        r.loss_percent,
        r.delivered_min_percent,
        r.delivered_median_percent,
        r.delivered_under_99_5,
        ms(r.delay_p50_ms),
        ms(r.delay_p99_ms),
        r.delay_samples,
        ms(r.server_delay_p50_ms),
        ms(r.server_delay_p99_ms),
        r.server_delay_within_2ms_percent.map(|p| format!("{p:.2} %")).unwrap_or_else(|| "-".into()),
        r.server_delay_samples,
        r.generator_cpu_percent,
        r.keyframes,
        r.unstamped,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_delay_is_read_from_the_difference_of_two_histogram_readings() {
        let bounds = [0.0005, 0.001, 0.002, 0.005, f64::INFINITY];
        let h = |counts: [u64; 5]| bounds.iter().copied().zip(counts).collect::<Vec<_>>();
        // Before the window: 1,000 slow packets (a ramp). In it: 90 under 0.5 ms, 8 in (1, 2] ms, 2 in (2, 5] ms.
        let before = h([0, 0, 0, 0, 1_000]);
        let after = h([90, 90, 98, 100, 1_100]);
        let d = ServerDelay::between(&before, &after);
        assert_eq!(d.samples, 100);
        assert_eq!(d.p50_ms, Some(0.5));
        assert_eq!(d.p99_ms, Some(5.0));
        assert_eq!(d.within_2ms_percent, Some(98.0));
        assert_eq!(ServerDelay::between(&before, &before), ServerDelay::default(), "nothing timed in the window");
        assert_eq!(ServerDelay::between(&before, &after[..4]), ServerDelay::default(), "different buckets");
    }
}
