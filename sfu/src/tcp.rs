//! ICE-TCP (RFC 6544): media over TCP for clients whose UDP is blocked, on one listening port shared by every peer.
//!
//! On a TCP connection ICE, DTLS, SRTP and RTCP travel as frames, each prefixed by its 16-bit length (RFC 4571).
//! [`Framer`] cuts a byte stream into those frames and [`frame`] writes one; both are sans-I/O. A connection
//! belongs to the peer named by the ICE username of its **first** frame, which must be a STUN binding request for a
//! known peer (the same index the UDP port uses); every later frame of the connection goes to that peer, so TCP
//! needs no per-address index. What the peer sends to the connection's address over TCP is written back on it.
//!
//! The async shell (the listener, one reader and one writer task per connection, [`Connections`]) lives in
//! [`crate::engine`]; the bounds are here: frames at most [`MAX_FRAME`] bytes, a first frame within
//! [`FIRST_FRAME_TIMEOUT`], at most [`MAX_CONNECTIONS`] connections, and [`WRITE_QUEUE`] frames queued per
//! connection (a full queue drops the frame, as a full UDP socket buffer would).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

/// The largest frame accepted. RFC 4571 allows 65,535; WebRTC packets stay under the path MTU, and DTLS
/// handshake flights are split into records that fit one.
pub const MAX_FRAME: usize = 8 * 1024;
/// A connection that has not named its peer by then is closed.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// ICE-TCP connections open at once, at most.
pub const MAX_CONNECTIONS: usize = 4096;
/// Frames waiting to be written to one connection.
pub const WRITE_QUEUE: usize = 512;

/// Why a connection's byte stream is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
}

/// Cuts a TCP byte stream into RFC 4571 frames.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames.
    start: usize,
}

impl Framer {
    /// Add bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one is buffered. An error means the stream is broken: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let rest = &self.buf[self.start..];
        if rest.len() < 2 {
            self.compact();
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if rest.len() < 2 + len {
            self.compact();
            return Ok(None);
        }
        let at = self.start + 2;
        self.start = at + len;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// Move a partial frame to the front, so the buffer never grows past one frame and one read.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Append `data` as one frame to `out`. `data` must be at most 65,535 bytes (a WebRTC packet always is).
pub fn frame(data: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(data.len()).expect("an ICE-TCP frame fits 16 bits");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

/// The open connections' write queues, by the client's address: where a peer's TCP transmits go.
#[derive(Debug, Default)]
pub struct Connections {
    by_addr: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>> {
        self.by_addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a connection; `false` when [`MAX_CONNECTIONS`] are open.
    pub fn insert(&self, remote: SocketAddr, queue: mpsc::Sender<Vec<u8>>) -> bool {
        let mut map = self.lock();
        if map.len() >= MAX_CONNECTIONS {
            return false;
        }
        map.insert(remote, queue);
        true
    }

    pub fn remove(&self, remote: SocketAddr) {
        self.lock().remove(&remote);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue `data` for the connection from `remote`; `false` if there is none or its queue is full (dropped).
    pub fn send(&self, remote: SocketAddr, data: Vec<u8>) -> bool {
        let map = self.lock();
        let Some(queue) = map.get(&remote) else { return false };
        queue.try_send(data).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined_anywhere_come_out_whole() {
        let packets: Vec<Vec<u8>> = vec![vec![1; 20], vec![2; 1], vec![3; 1200], vec![4; 2]];
        let mut stream = Vec::new();
        for p in &packets {
            frame(p, &mut stream);
        }
        // Every way of cutting the stream in two, and byte by byte.
        for cut in 0..stream.len() {
            let mut f = Framer::default();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                f.push(part);
                while let Some(fr) = f.next_frame().unwrap() {
                    got.push(fr.to_vec());
                }
            }
            assert_eq!(got, packets, "cut at {cut}");
        }
        let mut f = Framer::default();
        let mut got = Vec::new();
        for b in &stream {
            f.push(std::slice::from_ref(b));
            while let Some(fr) = f.next_frame().unwrap() {
                got.push(fr.to_vec());
            }
        }
        assert_eq!(got, packets);
        assert!(f.buf.is_empty() || f.start == f.buf.len(), "nothing left over");
    }

    #[test]
    fn a_broken_stream_is_an_error() {
        let mut f = Framer::default();
        f.push(&[0, 0]);
        assert_eq!(f.next_frame(), Err(FrameError::Empty));
        let mut f = Framer::default();
        f.push(&[0xff, 0xff, 1, 2, 3]);
        assert_eq!(f.next_frame(), Err(FrameError::TooLarge(65_535)));
    }

    #[test]
    fn sends_go_to_the_registered_connection_and_a_full_queue_drops() {
        let c = Connections::default();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(!c.send(a, b"x".to_vec()), "no connection");
        let (tx, mut rx) = mpsc::channel(1);
        assert!(c.insert(a, tx));
        assert!(c.send(a, b"one".to_vec()));
        assert!(!c.send(a, b"two".to_vec()), "queue full: dropped");
        assert_eq!(rx.try_recv().unwrap(), b"one");
        c.remove(a);
        assert!(!c.send(a, b"three".to_vec()));
        assert!(c.is_empty());
    }
}
