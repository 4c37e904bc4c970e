//! Batched UDP sends: the datagrams a worker produces in one cycle leave in `sendmmsg(2)` calls of up to
//! [`BATCH`] datagrams, to any mix of destinations, instead of one `sendto` each; and a run of datagrams to one
//! destination leaves as one message with UDP generic segmentation offload (GSO, `UDP_SEGMENT`).
//!
//! Why: at one publisher to a hundred subscribers the server sends a hundred datagrams for each one it receives, and
//! every send paid a system call and tokio's readiness bookkeeping of its own. A batch pays them once. Inside the
//! kernel each datagram still paid the whole send path (route lookup, IP output, the device); a subscriber's burst
//! (a video frame's packets, the audio of ten speakers drained in one cycle) is usually datagrams of one size to one
//! address, which GSO hands down as one buffer, cut into datagrams at the device or in the NIC.
//!
//! What does not change: a send never waits. The batch is flushed when it is full and at the end of every worker
//! cycle (before the worker sleeps), so a datagram waits at most for the rest of the cycle it was made in, and the
//! datagrams of one peer leave in the order the peer made them. When the socket buffer is full (`EAGAIN`) the rest of
//! the batch is dropped and counted, as a failed `try_send_to` was: subscribers recover through NACK or a keyframe.
//! A datagram the kernel refuses for its own reason (an unreachable destination) is dropped and the rest go on.
//!
//! GSO is only a way of sending: a run the kernel refuses as one message (a device without checksum offload says
//! `EIO`, a path whose MTU is below the datagram size `EINVAL`) is sent again datagram by datagram; after an `EIO`
//! the batch stops grouping for good. Runs: same destination, every datagram but the last of the same length and the
//! last no longer (what `UDP_SEGMENT` can express), at most [`GSO_MAX_SEGMENTS`] and [`GSO_MAX_BYTES`].

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::forward_delay::DelayBuckets;

/// Datagrams per `sendmmsg` call (the kernel takes up to `UIO_MAXIOV`, 1024).
pub const BATCH: usize = 64;

/// Datagrams in one GSO message at most (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels, 128 on newer).
pub const GSO_MAX_SEGMENTS: usize = 32;

/// Bytes in one GSO message at most (the datagrams' payloads together must fit one IP packet's length field).
pub const GSO_MAX_BYTES: usize = 60_000;

/// How many datagrams from `start` on can leave as one GSO message (at least one).
pub fn gso_run(dests: &[SocketAddr], datagrams: &[Vec<u8>], start: usize) -> usize {
    let size = datagrams[start].len();
    if size == 0 {
        return 1;
    }
    let mut total = size;
    let mut k = 1;
    while k < GSO_MAX_SEGMENTS {
        let i = start + k;
        let (Some(dest), Some(d)) = (dests.get(i), datagrams.get(i)) else { break };
        if *dest != dests[start] || d.len() > size || d.is_empty() || total + d.len() > GSO_MAX_BYTES {
            break;
        }
        total += d.len();
        k += 1;
        if d.len() < size {
            // A shorter one can only be the last.
            break;
        }
    }
    k
}

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
    /// Messages the kernel took: fewer than `sent` when runs left as one (GSO).
    pub messages: u64,
}

/// Datagrams waiting for the next flush, with the buffers the system call reads reused from flush to flush.
pub struct SendBatch {
    dests: Vec<SocketAddr>,
    datagrams: Vec<Vec<u8>>,
    /// When each datagram's packet reached the server, for forwarded media ([`crate::forward_delay`]).
    arrivals: Vec<Option<Instant>>,
    #[cfg(target_os = "linux")]
    sys: linux::Scratch,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// A batch that groups runs with GSO where the kernel can.
    pub fn new() -> Self {
        Self::with_gso(true)
    }

    /// A batch that groups runs with GSO (`true`, where the kernel can) or sends every datagram as a message of its
    /// own (`false`, the `udp_gso = false` setting).
    pub fn with_gso(gso: bool) -> Self {
        #[cfg(not(target_os = "linux"))]
        let _ = gso; // one datagram per send there
        SendBatch {
            dests: Vec::new(),
            datagrams: Vec::new(),
            arrivals: Vec::new(),
            #[cfg(target_os = "linux")]
            sys: linux::Scratch::new(gso),
        }
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
                    f.messages += 1;
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

    use tracing::{debug, warn};

    use super::Flushed;
    use crate::forward_delay::DelayBuckets;

    /// Whether an error from a send means the socket buffer is full (the rest of the batch would fail too).
    fn is_full(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::WouldBlock
    }

    /// The `UDP_SEGMENT` control message: the size of every datagram of a run but the last.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct GsoControl {
        hdr: libc::cmsghdr,
        size: u16,
        _pad: [u8; 6],
    }

    /// `UDP_SEGMENT` from `linux/udp.h` (not in every libc target's constants).
    const UDP_SEGMENT: libc::c_int = 103;

    /// One message of the batch: datagrams `first .. first + count`, one run.
    #[derive(Clone, Copy)]
    struct Run {
        first: usize,
        count: usize,
    }

    /// The system call's arrays, kept between flushes so a flush allocates nothing once they have grown.
    pub(super) struct Scratch {
        addrs: Vec<libc::sockaddr_storage>,
        addr_lens: Vec<libc::socklen_t>,
        iovecs: Vec<libc::iovec>,
        controls: Vec<GsoControl>,
        runs: Vec<Run>,
        msgs: Vec<libc::mmsghdr>,
        /// Group runs with GSO: asked for, and not yet refused with `EIO`. Whether the kernel knows `UDP_SEGMENT`
        /// at all is asked once, at the first flush (`None` until then).
        gso: Option<bool>,
    }

    // The raw pointers in `iovecs`, `controls` and `msgs` are only set and read inside `send`, from data it borrows.
    unsafe impl Send for Scratch {}

    impl Scratch {
        pub(super) fn new(gso: bool) -> Self {
            Scratch {
                addrs: Vec::new(),
                addr_lens: Vec::new(),
                iovecs: Vec::new(),
                controls: Vec::new(),
                runs: Vec::new(),
                msgs: Vec::new(),
                gso: if gso { None } else { Some(false) },
            }
        }

        /// Lays out the messages for datagrams `from..`: runs where GSO is on, except before `alone_until`, where
        /// every datagram is a message of its own (a run the kernel just refused).
        fn lay_out(&mut self, dests: &[SocketAddr], datagrams: &[Vec<u8>], from: usize, alone_until: usize) {
            let n = datagrams.len();
            self.runs.clear();
            self.controls.clear();
            self.msgs.clear();
            let gso = self.gso == Some(true);
            let mut i = from;
            while i < n {
                let count = if gso && i >= alone_until { super::gso_run(dests, datagrams, i) } else { 1 };
                self.runs.push(Run { first: i, count });
                i += count;
            }
            for run in &self.runs {
                if run.count > 1 {
                    // SAFETY: an all-zero cmsghdr is valid; its fields are set next.
                    let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
                    hdr.cmsg_level = libc::SOL_UDP;
                    hdr.cmsg_type = UDP_SEGMENT;
                    // SAFETY: CMSG_LEN only computes a length.
                    hdr.cmsg_len = unsafe { libc::CMSG_LEN(mem::size_of::<u16>() as u32) } as _;
                    self.controls.push(GsoControl { hdr, size: datagrams[run.first].len() as u16, _pad: [0; 6] });
                }
            }
            // Every array is complete: the pointers taken now stay valid until `send` returns.
            let mut c = 0;
            for run in &self.runs {
                // SAFETY: an all-zero msghdr is a valid "no control data, no flags" header.
                let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
                hdr.msg_name = &mut self.addrs[run.first] as *mut libc::sockaddr_storage as *mut libc::c_void;
                hdr.msg_namelen = self.addr_lens[run.first];
                hdr.msg_iov = &mut self.iovecs[run.first] as *mut libc::iovec;
                hdr.msg_iovlen = run.count as _;
                if run.count > 1 {
                    hdr.msg_control = &mut self.controls[c] as *mut GsoControl as *mut libc::c_void;
                    // SAFETY: CMSG_SPACE only computes a length.
                    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as _;
                    c += 1;
                }
                self.msgs.push(libc::mmsghdr { msg_hdr: hdr, msg_len: 0 });
            }
        }

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
            let fd = socket.as_raw_fd();
            if self.gso.is_none() {
                let has = kernel_has_gso(fd);
                debug!(gso = has, "UDP generic segmentation offload");
                self.gso = Some(has);
            }
            self.addrs.clear();
            self.addr_lens.clear();
            self.iovecs.clear();
            for (d, dg) in dests.iter().zip(datagrams) {
                let (storage, len) = sockaddr(d);
                self.addrs.push(storage);
                self.addr_lens.push(len);
                // sendmsg does not write through iov_base; the cast to *mut is what the C struct declares.
                self.iovecs.push(libc::iovec { iov_base: dg.as_ptr() as *mut libc::c_void, iov_len: dg.len() });
            }
            self.lay_out(dests, datagrams, 0, 0);
            let mut m = 0;
            // Each round sends at least one message, drops one, or splits a run into single datagrams (at most n
            // times), so this ends.
            while m < self.msgs.len() {
                f.calls += 1;
                let batch = &mut self.msgs[m..];
                let r = socket.try_io(Interest::WRITABLE, || {
                    // SAFETY: `batch` points at `batch.len()` initialised headers whose name, iovec and control
                    // pointers refer to `self.addrs`, `self.iovecs`, `self.controls` and the datagrams, all alive and
                    // unmoved for this call.
                    let k = unsafe {
                        libc::sendmmsg(fd, batch.as_mut_ptr(), batch.len() as libc::c_uint, libc::MSG_DONTWAIT)
                    };
                    if k < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(k as usize)
                    }
                });
                let rest = |runs: &[Run], m: usize| n - runs[m].first;
                match r {
                    Ok(0) => {
                        // Nothing taken and no error: treat as full rather than spin.
                        f.dropped += rest(&self.runs, m) as u64;
                        return;
                    }
                    Ok(k) => {
                        let sent_at = Instant::now();
                        for run in &self.runs[m..m + k] {
                            let range = run.first..run.first + run.count;
                            f.sent += run.count as u64;
                            f.messages += 1;
                            f.bytes += datagrams[range.clone()].iter().map(|d| d.len() as u64).sum::<u64>();
                            for a in arrivals[range].iter().flatten() {
                                delays.record(sent_at.saturating_duration_since(*a));
                            }
                        }
                        m += k;
                    }
                    Err(e) if is_full(&e) => {
                        f.dropped += rest(&self.runs, m) as u64;
                        return;
                    }
                    Err(e) if self.runs[m].count > 1 => {
                        // The kernel refused the run as one message: send it datagram by datagram. `EIO` says the
                        // device cannot finish GSO packets (no checksum offload): no more runs on this socket.
                        let run = self.runs[m];
                        if e.raw_os_error() == Some(libc::EIO) {
                            warn!(error = %e, "UDP GSO refused by the device; sending datagrams one by one");
                            self.gso = Some(false);
                        } else {
                            debug!(error = %e, datagrams = run.count, "a GSO run refused; sent one by one");
                        }
                        self.lay_out(dests, datagrams, run.first, run.first + run.count);
                        m = 0;
                    }
                    Err(_) => {
                        // The first datagram of the rest was refused (e.g. its destination unreachable): drop it
                        // and send on.
                        f.dropped += 1;
                        m += 1;
                    }
                }
            }
        }
    }

    /// Whether the kernel takes `UDP_SEGMENT` on this socket (Linux 4.18 and later).
    pub(super) fn kernel_has_gso(fd: libc::c_int) -> bool {
        let mut v: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        let out = &mut v as *mut libc::c_int as *mut libc::c_void;
        // SAFETY: `v` and `len` are valid for the kernel to write an int option into.
        unsafe { libc::getsockopt(fd, libc::SOL_UDP, UDP_SEGMENT, out, &mut len) == 0 }
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
        let bytes = (0..10u64).map(|i| 100 + i).sum();
        assert_eq!(f, Flushed { sent: 10, bytes, dropped: 0, calls: f.calls, messages: 10 }, "sizes differ: no runs");
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

    fn to(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The runs `gso_run` cuts a batch into, as their lengths.
    fn runs(batch: &[(u16, usize)]) -> Vec<usize> {
        let dests: Vec<SocketAddr> = batch.iter().map(|&(p, _)| to(p)).collect();
        let datagrams: Vec<Vec<u8>> = batch.iter().map(|&(_, n)| vec![0; n]).collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < batch.len() {
            let k = gso_run(&dests, &datagrams, i);
            out.push(k);
            i += k;
        }
        out
    }

    #[test]
    fn a_run_is_one_destination_one_size_and_a_shorter_last() {
        // A frame's packets to one subscriber, the last shorter; then another subscriber's.
        assert_eq!(runs(&[(1, 1200), (1, 1200), (1, 1200), (1, 900), (2, 1200), (2, 1200)]), vec![4, 2]);
        // A shorter one ends the run even if equal ones follow; a longer one starts a new run.
        assert_eq!(runs(&[(1, 1200), (1, 1100), (1, 1100), (1, 1300), (1, 1300)]), vec![2, 1, 2]);
        // Another destination in between breaks it: one peer's order is kept, runs never reorder.
        assert_eq!(runs(&[(1, 100), (2, 100), (1, 100)]), vec![1, 1, 1]);
        // Empty datagrams are never grouped (a zero segment size means "no GSO").
        assert_eq!(runs(&[(1, 0), (1, 0), (1, 10), (1, 0)]), vec![1, 1, 1, 1]);
    }

    #[test]
    fn a_run_stops_at_the_segment_and_byte_caps() {
        let many: Vec<(u16, usize)> = (0..GSO_MAX_SEGMENTS + 5).map(|_| (1, 100)).collect();
        assert_eq!(runs(&many), vec![GSO_MAX_SEGMENTS, 5]);
        let big: Vec<(u16, usize)> = (0..31).map(|_| (1, 2000)).collect();
        let per = GSO_MAX_BYTES / 2000;
        assert_eq!(runs(&big), vec![per, 31 - per]);
        assert!(per * 2000 <= GSO_MAX_BYTES);
    }

    #[cfg(target_os = "linux")]
    fn kernel_has_gso(s: &UdpSocket) -> bool {
        use std::os::fd::AsRawFd;
        super::linux::kernel_has_gso(s.as_raw_fd())
    }

    /// Pushes a video-like burst: six 1,200-byte datagrams and a 700-byte one to `a`, three to `b`, two more to
    /// `a`; each datagram's first two bytes number it.
    fn burst(batch: &mut SendBatch, a: SocketAddr, b: SocketAddr) -> Vec<(SocketAddr, usize)> {
        let mut plan: Vec<(SocketAddr, usize)> = (0..6).map(|_| (a, 1200)).collect();
        plan.push((a, 700));
        plan.extend((0..3).map(|_| (b, 1200)));
        plan.extend((0..2).map(|_| (a, 1200)));
        for (i, &(dest, n)) in plan.iter().enumerate() {
            let mut d = vec![0xab; n];
            d[..2].copy_from_slice(&(i as u16).to_be_bytes());
            batch.push(dest, d, Some(Instant::now()));
        }
        plan
    }

    /// Every datagram of `plan` arrives alone, whole, and in order per destination.
    async fn all_arrive(plan: &[(SocketAddr, usize)], a: &UdpSocket, b: &UdpSocket) {
        let mut buf = [0u8; 2048];
        for sock in [a, b] {
            let me = sock.local_addr().unwrap();
            for (i, &(_, n)) in plan.iter().enumerate().filter(|(_, (d, _))| *d == me) {
                let (got, _) = recv(sock, &mut buf).await;
                assert_eq!((got, u16::from_be_bytes([buf[0], buf[1]])), (n, i as u16), "datagram {i} to {me}");
                assert!(buf[2..got].iter().all(|&x| x == 0xab));
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn runs_leave_as_one_message_each_and_arrive_as_separate_datagrams() {
        let (tx, a, b) = (bound().await, bound().await, bound().await);
        assert!(kernel_has_gso(&tx), "this test needs a kernel with UDP GSO (4.18+)");
        let mut batch = SendBatch::new();
        let plan = burst(&mut batch, a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut delays = DelayBuckets::default();
        let f = batch.flush(&tx, &mut delays);
        assert_eq!((f.sent, f.dropped, f.messages, f.calls), (12, 0, 3, 1), "three runs, one call: {f:?}");
        assert_eq!(f.bytes, plan.iter().map(|p| p.1 as u64).sum::<u64>());
        assert_eq!(delays.count(), 12, "every datagram of a run has its delay recorded");
        all_arrive(&plan, &a, &b).await;

        // The same with GSO off: a message per datagram.
        let mut batch = SendBatch::with_gso(false);
        let plan = burst(&mut batch, a.local_addr().unwrap(), b.local_addr().unwrap());
        let f = batch.flush(&tx, &mut delays);
        assert_eq!((f.sent, f.messages), (12, 12), "{f:?}");
        all_arrive(&plan, &a, &b).await;
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_run_the_kernel_refuses_is_sent_datagram_by_datagram() {
        use std::os::fd::AsRawFd;
        let (tx, a, b) = (bound().await, bound().await, bound().await);
        // SO_NO_CHECK (no UDP checksums) makes the kernel refuse every GSO message with EINVAL.
        let one: libc::c_int = 1;
        // SAFETY: setting an int socket option from a live int.
        let r = unsafe {
            libc::setsockopt(tx.as_raw_fd(), libc::SOL_SOCKET, 11, &one as *const _ as *const libc::c_void, 4)
        };
        assert_eq!(r, 0);
        let mut batch = SendBatch::new();
        let plan = burst(&mut batch, a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut delays = DelayBuckets::default();
        let f = batch.flush(&tx, &mut delays);
        assert_eq!((f.sent, f.dropped, f.messages), (12, 0, 12), "every run resent one by one: {f:?}");
        assert!(f.calls >= 4, "a call per refused run, and after it: {f:?}");
        all_arrive(&plan, &a, &b).await;
    }

    #[tokio::test]
    async fn an_empty_flush_makes_no_call() {
        let tx = bound().await;
        let mut delays = DelayBuckets::default();
        assert_eq!(SendBatch::new().flush(&tx, &mut delays), Flushed::default());
        assert_eq!(delays.count(), 0);
    }
}
