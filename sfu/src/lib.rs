//! The media engine of Courier: a selective forwarding unit (SFU) on top of str0m.
//!
//! Participants publish audio and video over WebRTC; the engine forwards each RTP packet, without decoding it, to
//! every peer subscribed to its track. Everything a participant needs from the engine — SDP answers and offers,
//! media, keyframe requests — goes through one str0m [`str0m::Rtc`] per participant in RTP mode, and all of them
//! share **one UDP port**.
//!
//! The engine is built the way str0m and quinn are: a deterministic core with no sockets, no tasks and no clock
//! of its own, inside a thin async shell.
//!
//! - Sans-I/O: [`peer::Peer`] (one participant), [`downtrack::DownTrack`] (one subscriber's copy of a track),
//!   [`munger::Munger`] (sequence number and timestamp rewriting), [`keyframe`] (keyframe detection),
//!   [`udp::Demux`] (which peer a datagram belongs to), [`router::Router`] (where a track's packets go). They take
//!   input with the current time and return output, and are unit tested with simulated time.
//! - The shell: [`engine::Sfu`] binds the socket, runs the UDP task and the worker tasks (about one per core) that
//!   own the peers, and is the handle the signaling layer drives.
//!
//! # Run loop and the drain rule
//!
//! After every input to a peer, its outputs are drained with [`peer::Peer::poll_output`] until it returns a
//! timeout; see the contract on [`peer`]. The worker does this; callers of [`engine::Sfu`] only send messages.
//!
//! # Layout
//!
//! - [`engine`]: the async shell and the [`Sfu`] handle; the architecture diagram is in its doc.
//! - [`peer`]: one participant's `Rtc`, its published tracks and its down-tracks.
//! - [`packet`]: [`ForwardPacket`], the packet a publisher's peer shares with every subscriber's down-track.
//! - [`router`]: a worker's fan-out table: which workers and local peers a track's packets go to, with counts.
//! - [`downtrack`], [`munger`], [`vp8munger`], [`keyframe`], [`red`]: forwarding to one subscriber.
//! - [`downstream_loss`]: subscribers' audio loss, reported to the publisher.
//! - [`allocator`]: how much of each subscribed track one subscriber's link gets (layers from the estimate).
//! - [`layer`]: simulcast layers of a published track: which one a packet belongs to, which are live.
//! - [`cascade`]: rooms that span nodes: which tracks of other nodes this node needs relayed, and which layers.
//! - [`relay`]: how a track crosses to another node: the relay peer pair and its simulcast RIDs.
//! - [`relay_setup`]: the messages two nodes exchange to set relays up, and what each engine does on them.
//! - [`speaker`]: active speakers from the audio levels in publishers' packets.
//! - [`udp`]: the socket's demultiplexer.
//! - [`forward_delay`]: how long the server holds a forwarded packet (kernel arrival → `sendmmsg`), as a histogram.
//! - [`udp_recv`]: batched receives (`recvmmsg`) with the kernel's arrival stamps.
//! - [`udp_send`]: batched sends (`sendmmsg`), one system call for a worker cycle's datagrams.
//! - [`tcp`]: ICE-TCP: RFC 4571 framing and the connections' write queues.
//! - [`config`], [`error`], [`id`].

pub mod allocator;
pub mod cascade;
pub mod config;
pub mod downstream_loss;
pub mod downtrack;
pub mod engine;
pub mod error;
pub mod forward_delay;
pub mod id;
pub mod keyframe;
pub mod layer;
pub mod munger;
pub mod packet;
pub mod peer;
pub mod red;
pub mod relay;
pub mod relay_setup;
pub mod router;
pub mod speaker;
pub mod tcp;
pub mod udp;
pub mod udp_recv;
pub mod udp_send;
pub mod vp8munger;

pub use config::SfuConfig;
pub use downtrack::TrackSettings;
pub use engine::{PeerOptions, Sfu, StatsSnapshot};
pub use error::SfuError;
pub use id::{PeerId, TrackId};
pub use packet::ForwardPacket;
pub use peer::{CloseReason, PeerEvent};
pub use str0m::media::MediaKind;
pub use str0m::net::Protocol;
