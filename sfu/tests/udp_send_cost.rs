//! CPU per datagram sent: one `try_send_to` each against [`sfu::udp_send::SendBatch`] (`sendmmsg`), on loopback.
//!
//! A benchmark, not a test (ignored; numbers in docs/benchmarks.md): the sending thread's own CPU time
//! (`RUSAGE_THREAD`, which on loopback includes delivering to the receiving socket) for the same datagrams, sizes and
//! destinations, the two ways in turns. The receivers are drained by another thread so no buffer fills.
//!
//!     cargo test --release -p sfu --test udp_send_cost -- --ignored --nocapture

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sfu::udp_send::{SendBatch, BATCH};

const DESTINATIONS: usize = 100;
const DATAGRAMS: usize = 200_000;
const SIZE: usize = 1_100;
const ROUNDS: usize = 4;

fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let t = |v: libc::timeval| Duration::from_secs(v.tv_sec as u64) + Duration::from_micros(v.tv_usec as u64);
    t(u.ru_utime) + t(u.ru_stime)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn cpu_per_datagram_sent_one_by_one_and_batched() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut receivers = Vec::new();
        let mut dests: Vec<SocketAddr> = Vec::new();
        for _ in 0..DESTINATIONS {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            dests.push(s.local_addr().unwrap());
            receivers.push(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let drain = {
            let (stop, received) = (stop.clone(), received.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let mut any = false;
                    for s in &receivers {
                        while s.recv(&mut buf).is_ok() {
                            received.fetch_add(1, Ordering::Relaxed);
                            any = true;
                        }
                    }
                    if !any {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        };
        let payload = vec![7u8; SIZE];
        // Paced in chunks of one batch, so the drain keeps up and neither way meets a full buffer.
        let pause = || std::thread::sleep(Duration::from_micros(300));
        let mut one_by_one = Vec::new();
        let mut batched = Vec::new();
        for _ in 0..ROUNDS {
            // The whole round's CPU (the thread's clock may advance in ticks; the pauses sleep and cost both ways
            // the same). Each datagram is a fresh buffer both ways, as str0m hands the engine one per transmit.
            let mut dropped = 0;
            let t0 = thread_cpu();
            for chunk in 0..DATAGRAMS / BATCH {
                tx.writable().await.unwrap();
                for i in 0..BATCH {
                    let d = payload.clone();
                    if tx.try_send_to(&d, dests[(chunk * BATCH + i) % DESTINATIONS]).is_err() {
                        dropped += 1;
                    }
                }
                pause();
            }
            one_by_one.push((thread_cpu() - t0, dropped));

            let mut batch = SendBatch::new();
            let mut delays = sfu::forward_delay::DelayBuckets::default();
            let mut dropped = 0;
            let t0 = thread_cpu();
            for chunk in 0..DATAGRAMS / BATCH {
                tx.writable().await.unwrap();
                for i in 0..BATCH {
                    batch.push(dests[(chunk * BATCH + i) % DESTINATIONS], payload.clone(), None);
                }
                dropped += batch.flush(&tx, &mut delays).dropped;
                pause();
            }
            batched.push((thread_cpu() - t0, dropped));
        }
        stop.store(true, Ordering::Relaxed);
        drain.join().unwrap();
        let per = |d: Duration| d.as_nanos() as f64 / (DATAGRAMS / BATCH * BATCH) as f64;
        for r in 0..ROUNDS {
            println!(
                "round {r}: try_send_to {:.0} ns/datagram ({} dropped), sendmmsg x{BATCH} {:.0} ns/datagram ({} dropped)",
                per(one_by_one[r].0),
                one_by_one[r].1,
                per(batched[r].0),
                batched[r].1
            );
        }
        println!("received {} of {}", received.load(Ordering::Relaxed), 2 * ROUNDS * (DATAGRAMS / BATCH * BATCH));
    });
}
