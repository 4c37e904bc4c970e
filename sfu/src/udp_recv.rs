//! Batched UDP receives with the kernel's arrival stamps: up to [`BATCH`] datagrams per `recvmmsg(2)` call, each
//! with the time the kernel stamped it on arrival (`SO_TIMESTAMPNS`).
//!
//! Why: the engine's one socket receives every publisher's media and every subscriber's feedback; one call per
//! datagram paid a system call and tokio's readiness bookkeeping for each. And the arrival time the engine hands to
//! str0m (TWCC feedback to publishers) and to the forwarding-delay histogram ([`crate::forward_delay`]) should be
//! when the datagram reached the host, not when a busy receive task got to it.
//!
//! The kernel stamps on the real-time clock; an arrival is placed on the monotonic clock by its age (the real-time
//! clock now minus the stamp), read once per batch. An age that is negative or over [`MAX_AGE`] (the real-time clock
//! was stepped) counts as zero. Elsewhere than Linux: one `recv_from` per call, stamped when it returns.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

/// Datagrams per `recvmmsg` call.
pub const BATCH: usize = 32;

/// The largest datagram taken whole; a longer one is dropped (no WebRTC packet the engine handles comes near it).
pub const MAX_DATAGRAM: usize = 2048;

/// A stamp older than this is not believed (the real-time clock was stepped between stamp and read).
pub const MAX_AGE: Duration = Duration::from_secs(2);

/// Asks the kernel to stamp the socket's datagrams on arrival. Without it (or elsewhere than Linux) arrivals are
/// taken when the receive returns.
pub fn enable_arrival_stamps(socket: &UdpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and an int option of the declared size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

/// Where a stamp `age` old on the real-time clock falls on the monotonic clock `now`.
fn arrival_from_age(now: Instant, age: Option<Duration>) -> Instant {
    match age {
        Some(a) if a <= MAX_AGE => now.checked_sub(a).unwrap_or(now),
        _ => now,
    }
}

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub source: SocketAddr,
    pub data: &'a [u8],
    /// When it reached the host (the kernel's stamp), or when the receive returned.
    pub arrival: Instant,
}

/// The buffers of one batch, reused from call to call.
pub struct RecvBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    got: Vec<(SocketAddr, usize, Instant)>,
    #[cfg(target_os = "linux")]
    sys: linux::Scratch,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            got: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            sys: linux::Scratch::default(),
        }
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for at least one datagram and takes as many as are queued (up to [`BATCH`]); returns how many.
    pub async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        #[cfg(target_os = "linux")]
        self.sys.recv(socket, &mut self.bufs, &mut self.got).await?;
        #[cfg(not(target_os = "linux"))]
        {
            let (n, source) = socket.recv_from(&mut self.bufs[0]).await?;
            self.got.push((source, n, Instant::now()));
        }
        Ok(self.got.len())
    }

    /// The `i`th datagram of the last [`Self::recv`].
    pub fn get(&self, i: usize) -> Option<Received<'_>> {
        let (source, len, arrival) = *self.got.get(i)?;
        Some(Received { source, data: &self.bufs[i][..len], arrival })
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::mem;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant, SystemTime};

    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    use super::{arrival_from_age, BATCH, MAX_DATAGRAM};

    /// Room for one `SCM_TIMESTAMPNS` control message (and alignment for `cmsghdr`).
    type Control = [u64; 8];

    /// The system call's arrays, kept between calls.
    pub(super) struct Scratch {
        addrs: Vec<libc::sockaddr_storage>,
        iovecs: Vec<libc::iovec>,
        controls: Vec<Control>,
        msgs: Vec<libc::mmsghdr>,
    }

    // The raw pointers in `iovecs` and `msgs` are only set and read inside `recv`, from data it borrows.
    unsafe impl Send for Scratch {}

    impl Default for Scratch {
        fn default() -> Self {
            Scratch {
                // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
                addrs: vec![unsafe { mem::zeroed() }; BATCH],
                iovecs: Vec::with_capacity(BATCH),
                controls: vec![[0; 8]; BATCH],
                msgs: Vec::with_capacity(BATCH),
            }
        }
    }

    impl Scratch {
        pub(super) async fn recv(
            &mut self,
            socket: &UdpSocket,
            bufs: &mut [[u8; MAX_DATAGRAM]],
            got: &mut Vec<(SocketAddr, usize, Instant)>,
        ) -> io::Result<()> {
            let fd = socket.as_raw_fd();
            loop {
                socket.readable().await?;
                // Headers rebuilt for every call: the kernel rewrites the name and control lengths, and the pointers
                // are taken from arrays that are complete and not resized until this call returns.
                self.iovecs.clear();
                self.msgs.clear();
                for b in bufs.iter_mut() {
                    self.iovecs.push(libc::iovec { iov_base: b.as_mut_ptr() as *mut libc::c_void, iov_len: b.len() });
                }
                for i in 0..BATCH {
                    // SAFETY: an all-zero msghdr is a valid "no name, no control, no flags" header.
                    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
                    hdr.msg_name = &mut self.addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
                    hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    hdr.msg_iov = &mut self.iovecs[i] as *mut libc::iovec;
                    hdr.msg_iovlen = 1;
                    hdr.msg_control = self.controls[i].as_mut_ptr() as *mut libc::c_void;
                    hdr.msg_controllen = mem::size_of::<Control>() as _;
                    self.msgs.push(libc::mmsghdr { msg_hdr: hdr, msg_len: 0 });
                }
                let msgs = &mut self.msgs;
                let r = socket.try_io(Interest::READABLE, || {
                    // SAFETY: `msgs` holds BATCH initialised headers whose pointers refer to `self.addrs`,
                    // `self.iovecs`, `self.controls` and `bufs`, all alive and unmoved for this call.
                    let k = unsafe {
                        libc::recvmmsg(
                            fd,
                            msgs.as_mut_ptr(),
                            BATCH as libc::c_uint,
                            libc::MSG_DONTWAIT,
                            std::ptr::null_mut(),
                        )
                    };
                    if k < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(k as usize)
                    }
                });
                let k = match r {
                    Ok(k) => k,
                    // Readiness was stale: wait again.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                let (now, wall) = (Instant::now(), SystemTime::now());
                let wall = wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                for (i, m) in self.msgs[..k].iter().enumerate() {
                    let hdr = &m.msg_hdr;
                    if hdr.msg_flags & libc::MSG_TRUNC != 0 {
                        continue;
                    }
                    let Some(source) = from_sockaddr(&self.addrs[i]) else { continue };
                    let age = stamp(hdr).and_then(|s| wall.checked_sub(s));
                    got.push((source, m.msg_len as usize, arrival_from_age(now, age)));
                    // `got` is in receive order and `RecvBatch::get` indexes the buffers by position: keep them
                    // aligned when an earlier datagram was skipped.
                    let j = got.len() - 1;
                    if j != i {
                        let (a, b) = bufs.split_at_mut(i);
                        a[j][..m.msg_len as usize].copy_from_slice(&b[0][..m.msg_len as usize]);
                    }
                }
                if !got.is_empty() {
                    return Ok(());
                }
            }
        }
    }

    /// The `SCM_TIMESTAMPNS` stamp of a received message, as time since the Unix epoch.
    fn stamp(hdr: &libc::msghdr) -> Option<Duration> {
        // SAFETY: `hdr` is a header the kernel just filled; CMSG_* walk its control buffer within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    return Some(Duration::new(u64::try_from(ts.tv_sec).ok()?, u32::try_from(ts.tv_nsec).ok()?));
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        None
    }

    /// The address the kernel wrote into a `sockaddr_storage`.
    fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(s.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in, which it is large and aligned enough for.
                let sin = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_places_the_arrival_before_now_unless_it_is_not_believable() {
        let now = Instant::now() + Duration::from_secs(10);
        assert_eq!(arrival_from_age(now, Some(Duration::from_millis(3))), now - Duration::from_millis(3));
        assert_eq!(arrival_from_age(now, None), now, "no stamp, or a stamp after now");
        assert_eq!(arrival_from_age(now, Some(MAX_AGE + Duration::from_millis(1))), now, "a stepped clock");
    }

    async fn recv(sock: &UdpSocket, batch: &mut RecvBatch) -> usize {
        tokio::time::timeout(Duration::from_secs(5), batch.recv(sock)).await.expect("datagrams within 5 s").unwrap()
    }

    #[tokio::test]
    async fn queued_datagrams_come_in_one_batch_in_order_with_their_sources_and_stamps() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable_arrival_stamps(&rx).unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let mut batch = RecvBatch::new();
        // The kernel turns stamping on in deferred work the first time any socket asks: until then a datagram is
        // stamped when it is read. Wait (boundedly) until a datagram held 20 ms reads as 20 ms old.
        #[cfg(target_os = "linux")]
        for attempt in 0.. {
            assert!(attempt < 100, "the kernel never stamped a datagram on arrival");
            a.send_to(b"warm-up", to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let read_at = Instant::now();
            assert_eq!(recv(&rx, &mut batch).await, 1);
            if batch.get(0).unwrap().arrival + Duration::from_millis(15) <= read_at {
                break;
            }
        }
        let before = Instant::now();
        for i in 0..5u8 {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(&vec![i; 10 + usize::from(i)], to).await.unwrap();
        }
        // Queued a while before the receive: the stamps must say when they came, not when they were read.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent_by = Instant::now() - Duration::from_millis(40);
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let n = recv(&rx, &mut batch).await;
            for i in 0..n {
                let r = batch.get(i).unwrap();
                seen.push((r.source, r.data.to_vec(), r.arrival));
            }
        }
        for (i, (source, data, arrival)) in seen.iter().enumerate() {
            let from = if i % 2 == 0 { &a } else { &b };
            assert_eq!(*source, from.local_addr().unwrap());
            assert_eq!(*data, vec![i as u8; 10 + i], "in the order sent");
            #[cfg(target_os = "linux")]
            assert!(*arrival >= before - Duration::from_millis(5) && *arrival <= sent_by, "stamped on arrival");
            #[cfg(not(target_os = "linux"))]
            let _ = (arrival, before, sent_by);
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_datagram_too_long_is_dropped_and_the_next_one_read() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        tx.send_to(&vec![1u8; MAX_DATAGRAM + 1], to).await.unwrap();
        tx.send_to(&[2u8; 20], to).await.unwrap();
        let mut batch = RecvBatch::new();
        let mut datas = Vec::new();
        while datas.is_empty() {
            let n = recv(&rx, &mut batch).await;
            datas.extend((0..n).map(|i| batch.get(i).unwrap().data.to_vec()));
        }
        assert_eq!(datas, vec![vec![2u8; 20]]);
    }
}
