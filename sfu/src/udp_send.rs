//! Batched UDP sends: the datagrams a worker produces in one cycle leave in `sendmmsg(2)` calls of up to
//! [`BATCH`] datagrams, to any mix of destinations, instead of one `sendto` each.
//!
//! Why: at one publisher to a hundred subscribers the server sends a hundred datagrams for each one it receives, and
//! every send paid a system call and tokio's readiness bookkeeping of its own. A batch pays them once.
//!
//! What does not change: a send never waits. The batch is flushed when it is full and at the end of every worker
//! cycle (before the worker sleeps), so a datagram waits at most for the rest of the cycle it was made in, and the
//! datagrams of one peer leave in the order the peer made them. When the socket buffer is full (`EAGAIN`) the rest of
//! the batch is dropped and counted, as a failed `try_send_to` was: subscribers recover through NACK or a keyframe.
//! A datagram the kernel refuses for its own reason (an unreachable destination) is dropped and the rest go on.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::forward_delay::DelayBuckets;

/// Datagrams per `sendmmsg` call (the kernel takes up to `UIO_MAXIOV`, 1024).
pub const BATCH: usize = 64;

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Datagrams dropped (socket buffer full, or refused).
    pub dropped: u64,
    /// System calls made.
    pub calls: u64,
}

/// Datagrams waiting for the next flush, with the buffers the system call reads reused from flush to flush.
#[derive(Default)]
pub struct SendBatch {
    dests: Vec<SocketAddr>,
    datagrams: Vec<Vec<u8>>,
    /// When each datagram's packet reached the server, for forwarded media ([`crate::forward_delay`]).
    arrivals: Vec<Option<Instant>>,
    #[cfg(target_os = "linux")]
    sys: linux::Scratch,
}

impl SendBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a datagram (with its packet's arrival, if it is forwarded media); true when the batch is full and
    /// must be flushed before the next push.
    pub fn push(&mut self, dest: SocketAddr, datagram: Vec<u8>, arrival: Option<Instant>) -> bool {
        self.dests.push(dest);
        self.datagrams.push(datagram);
        self.arrivals.push(arrival);
        self.datagrams.len() >= BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Sends everything queued, in order, without waiting; the batch is empty afterwards. A sent datagram with an
    /// arrival adds its time in the server, up to the return of its system call, to `delays`.
    pub fn flush(&mut self, socket: &UdpSocket, delays: &mut DelayBuckets) -> Flushed {
        let mut f = Flushed::default();
        if self.datagrams.is_empty() {
            return f;
        }
        #[cfg(target_os = "linux")]
        self.sys.send(socket, &self.dests, &self.datagrams, &self.arrivals, delays, &mut f);
        #[cfg(not(target_os = "linux"))]
        for ((d, dg), arrival) in self.dests.iter().zip(&self.datagrams).zip(&self.arrivals) {
            f.calls += 1;
            match socket.try_send_to(dg, *d) {
                Ok(n) => {
                    f.sent += 1;
                    f.bytes += n as u64;
                    if let Some(a) = arrival {
                        delays.record(Instant::now().saturating_duration_since(*a));
                    }
                }
                Err(_) => f.dropped += 1,
            }
        }
        self.dests.clear();
        self.datagrams.clear();
        self.arrivals.clear();
        f
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::mem;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    use super::Flushed;
    use crate::forward_delay::DelayBuckets;

    /// Whether an error from a send means the socket buffer is full (the rest of the batch would fail too).
    fn is_full(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::WouldBlock
    }

    /// The system call's arrays, kept between flushes so a flush allocates nothing once they have grown.
    #[derive(Default)]
    pub(super) struct Scratch {
        addrs: Vec<libc::sockaddr_storage>,
        addr_lens: Vec<libc::socklen_t>,
        iovecs: Vec<libc::iovec>,
        msgs: Vec<libc::mmsghdr>,
    }

    // The raw pointers in `iovecs` and `msgs` are only set and read inside `send`, from data it borrows.
    unsafe impl Send for Scratch {}

    impl Scratch {
        pub(super) fn send(
            &mut self,
            socket: &UdpSocket,
            dests: &[SocketAddr],
            datagrams: &[Vec<u8>],
            arrivals: &[Option<Instant>],
            delays: &mut DelayBuckets,
            f: &mut Flushed,
        ) {
            let n = datagrams.len();
            self.addrs.clear();
            self.addr_lens.clear();
            self.iovecs.clear();
            self.msgs.clear();
            for (d, dg) in dests.iter().zip(datagrams) {
                let (storage, len) = sockaddr(d);
                self.addrs.push(storage);
                self.addr_lens.push(len);
                // sendmsg does not write through iov_base; the cast to *mut is what the C struct declares.
                self.iovecs.push(libc::iovec { iov_base: dg.as_ptr() as *mut libc::c_void, iov_len: dg.len() });
            }
            // Every array is complete: the pointers taken now stay valid until this function returns.
            for i in 0..n {
                // SAFETY: an all-zero msghdr is a valid "no control data, no flags" header.
                let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
                hdr.msg_name = &mut self.addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
                hdr.msg_namelen = self.addr_lens[i];
                hdr.msg_iov = &mut self.iovecs[i] as *mut libc::iovec;
                hdr.msg_iovlen = 1;
                self.msgs.push(libc::mmsghdr { msg_hdr: hdr, msg_len: 0 });
            }
            let fd = socket.as_raw_fd();
            let mut start = 0;
            // Each round sends at least one datagram or drops at least one, so this ends within n rounds.
            while start < n {
                f.calls += 1;
                let batch = &mut self.msgs[start..];
                let r = socket.try_io(Interest::WRITABLE, || {
                    // SAFETY: `batch` points at `batch.len()` initialised headers whose name and iovec pointers
                    // refer to `self.addrs`, `self.iovecs` and the datagrams, all alive and unmoved for this call.
                    let k = unsafe {
                        libc::sendmmsg(fd, batch.as_mut_ptr(), batch.len() as libc::c_uint, libc::MSG_DONTWAIT)
                    };
                    if k < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(k as usize)
                    }
                });
                match r {
                    Ok(0) => {
                        // Nothing taken and no error: treat as full rather than spin.
                        f.dropped += (n - start) as u64;
                        return;
                    }
                    Ok(k) => {
                        f.sent += k as u64;
                        f.bytes += datagrams[start..start + k].iter().map(|d| d.len() as u64).sum::<u64>();
                        let sent_at = Instant::now();
                        for a in arrivals[start..start + k].iter().flatten() {
                            delays.record(sent_at.saturating_duration_since(*a));
                        }
                        start += k;
                    }
                    Err(e) if is_full(&e) => {
                        f.dropped += (n - start) as u64;
                        return;
                    }
                    Err(_) => {
                        // The first datagram of the rest was refused (e.g. its destination unreachable): drop it
                        // and send on.
                        f.dropped += 1;
                        start += 1;
                    }
                }
            }
        }
    }

    /// A socket address as the kernel reads it, and its length.
    fn sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value, then filled as the family says.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
                (storage, mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
                (storage, mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One datagram, or a failed test after 5 s (loopback does not lose them; a bug must not hang the run).
    async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> (usize, std::net::SocketAddr) {
        tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap()
    }

    /// A socket the reactor has seen writable (as the engine's is: a flush happens inside a running worker).
    async fn bound() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.writable().await.unwrap();
        s
    }

    #[tokio::test]
    async fn a_batch_reaches_every_destination_in_order() {
        let tx = bound().await;
        let a = bound().await;
        let b = bound().await;
        let mut batch = SendBatch::new();
        // Even ones are forwarded media that arrived 20 ms ago; odd ones (RTCP, say) carry no arrival.
        let arrived = Instant::now() - std::time::Duration::from_millis(20);
        for i in 0..10u8 {
            let to = if i % 3 == 0 { b.local_addr().unwrap() } else { a.local_addr().unwrap() };
            assert!(!batch.push(to, vec![i; 100 + usize::from(i)], (i % 2 == 0).then_some(arrived)));
        }
        let mut delays = DelayBuckets::default();
        let f = batch.flush(&tx, &mut delays);
        assert_eq!(f, Flushed { sent: 10, bytes: (0..10u64).map(|i| 100 + i).sum(), dropped: 0, calls: f.calls });
        assert!(f.calls >= 1 && f.calls <= 2, "{f:?}");
        assert!(batch.is_empty());
        assert_eq!(delays.count(), 5, "one delay per sent datagram with an arrival");
        assert_eq!(delays.share_within_us(15_000), Some(0.0), "each at least 20 ms: {delays:?}");
        let mut buf = [0u8; 2048];
        for (sock, want) in [(&a, vec![1u8, 2, 4, 5, 7, 8]), (&b, vec![0, 3, 6, 9])] {
            for w in want {
                let (n, from) = recv(sock, &mut buf).await;
                assert_eq!(from, tx.local_addr().unwrap());
                assert_eq!((n, buf[0]), (100 + usize::from(w), w), "in the order pushed");
            }
        }
    }

    #[tokio::test]
    async fn a_full_batch_says_so_and_ipv6_is_refused_on_an_ipv4_socket_without_stopping_the_rest() {
        let tx = bound().await;
        let rx = bound().await;
        let mut batch = SendBatch::new();
        for i in 0..BATCH - 1 {
            let to = if i == 5 { "[::1]:9".parse().unwrap() } else { rx.local_addr().unwrap() };
            assert!(!batch.push(to, vec![1; 10], Some(Instant::now())));
        }
        assert!(batch.push(rx.local_addr().unwrap(), vec![2; 10], None), "the 64th fills it");
        let mut delays = DelayBuckets::default();
        let f = batch.flush(&tx, &mut delays);
        assert_eq!((f.sent, f.dropped), (BATCH as u64 - 1, 1), "{f:?}");
        assert_eq!(delays.count(), BATCH as u64 - 2, "the refused datagram's delay is not counted");
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < BATCH - 1 {
            recv(&rx, &mut buf).await;
            got += 1;
        }
        assert_eq!(buf[0], 2, "the last one pushed came last");
    }

    #[tokio::test]
    async fn an_empty_flush_makes_no_call() {
        let tx = bound().await;
        let mut delays = DelayBuckets::default();
        assert_eq!(SendBatch::new().flush(&tx, &mut delays), Flushed::default());
        assert_eq!(delays.count(), 0);
    }
}
