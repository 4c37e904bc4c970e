//! The server under test, seen from the load generator: how a cheap peer publishes into or subscribes from a room on
//! Courier, Janus (videoroom) or Pion's broadcast example. Each speaks its own signaling; all of them end in an SDP
//! exchange with a [`PeerHandle`], so the same peers, the same packets and the same counters serve every server and
//! the numbers compare.

use std::any::Any;

use async_trait::async_trait;

use super::peer::PeerHandle;

/// What a peer sends (publisher) or expects to receive (subscriber).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    pub audio: bool,
    pub video: bool,
}

/// Whatever must stay alive while a peer takes part (a WebSocket, a Janus handle, nothing); dropped at the end.
pub type Session = Box<dyn Any + Send>;

/// A server under test: started by its constructor, stopped when dropped.
#[async_trait]
pub trait Target: Send + Sync {
    /// Short name for reports: `courier`, `janus`, `pion`.
    fn name(&self) -> &'static str;
    /// The server's process id, for CPU time and RSS from `/proc`.
    fn pid(&self) -> u32;
    /// Every process of the server (a cluster runs several): CPU time and RSS are their sums.
    fn pids(&self) -> Vec<u32> {
        vec![self.pid()]
    }
    /// Whether the target can run `rooms` rooms of `publishers` publishers sending `media` (Pion's broadcast example:
    /// one room, one video publisher). `Err` says why not.
    fn supports(&self, rooms: usize, publishers: usize, media: Media) -> anyhow::Result<()>;
    /// Publishes `peer`'s media (`media`) as publisher `index` of room `room`; returns once the server accepted it
    /// (answer applied). Publishers are all published before any subscriber subscribes.
    async fn publish(&self, room: usize, index: usize, media: Media, peer: &PeerHandle) -> anyhow::Result<Session>;
    /// Subscribes `peer` (subscriber `index` of room `room`) to every publisher of the room, all of `media`; returns
    /// once negotiated.
    async fn subscribe(&self, room: usize, index: usize, media: Media, peer: &PeerHandle) -> anyhow::Result<Session>;
    /// The server's own forwarding-delay histogram so far (kernel arrival to send), where it has one: cumulative
    /// counts per upper bound in seconds, `+Inf` last.
    fn forward_delay(&self) -> Option<Vec<(f64, u64)>> {
        None
    }
}
