//! A native Courier participant built on webrtc-rs: joins, publishes test media, receives
//! and checks everything it is sent, and reports.
//!
//! The server is built on str0m; testing it with a second, independent WebRTC stack catches
//! what a same-stack test cannot (SDP dialect, RTCP and extension handling, timing). The client
//! is meant for scenario tests and load: no media devices, deterministic payloads, and counters
//! that say exactly what arrived.
//!
//! # Tasks
//!
//! [`Client::connect`] joins over the WebSocket (following a cluster's `redirect` to the node that hosts the room,
//! at most [`MAX_REDIRECTS`] in a row), builds one `PeerConnection` once joined, then spawns:
//!
//! - the **session** task, sole owner of the WebSocket and of negotiation: it answers server
//!   offers, sends its own when publishing changes (following [`Negotiation`]'s glare rules),
//!   trickles candidates, pings every 10 s, and turns server messages into [`ClientEvent`]s;
//! - one **sender** task per published track, writing RTP to a `TrackLocalStaticRTP` once the
//!   connection is up and the track's m-line is negotiated (Opus every 20 ms; VP8 frames at the
//!   configured rate, with a keyframe on PLI/FIR);
//! - one **reader** task per remote track, feeding packets to a [`VideoReceiver`] or
//!   [`AudioReceiver`] under the track id that `subscribed` gave its m-line.
//!
//! # Simulcast, dynacast, adaptive stream
//!
//! With [`ClientOptions::simulcast`] the video track is sent as up to three synthetic layers
//! ([`crate::simulcast`]): one encoding per RID on one m-line (`a=rid:q send` … `a=simulcast:send
//! q;h;f`), each packet carrying the `sdes:mid` and `sdes:rtp-stream-id` header extensions so the
//! server can map each SSRC to its layer. The server's `set_layers` pauses and resumes layers (a
//! resumed layer starts with a keyframe); a PLI/FIR for one layer's SSRC makes a keyframe on that
//! layer only. A subscriber records `stream_state` messages, and with
//! [`ClientOptions::max_video_size`] sends `track_settings` for every video track it receives.
//!
//! # Behind the impairment relay
//!
//! [`ClientOptions::udp_via`] rewrites the server's ICE candidates (in its SDP, and any trickled
//! ones) to another address, the [`crate::relay::Relay`]'s; the ICE-lite server then learns the
//! relay's upstream address as a peer-reflexive candidate from the first STUN request.
//!
//! The webrtc-rs driver never blocks on a slow reader: it drops packets when a track's queue
//! (256) is full. So [`Client::set_media_reading`]`(false)` makes a subscriber that stops
//! *consuming* media, but it keeps sending RTCP receiver reports from the interceptors; to the
//! SFU it still looks alive. A subscriber that goes silent on the network needs the link
//! emulator.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder, Packet as InterceptorPacket, Slot, StreamInfo,
    TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind, TYPE_RTCP_FB_NACK,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, Registry,
};
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

use crate::audio::{AudioError, AudioReceiver, AudioSource, DEFAULT_BITRATE_BPS, FRAME_DURATION, FRAME_SAMPLES};
use crate::frame::{VideoConfig, VideoReceiver, VideoSource, Vp8Packetizer};
use crate::interop_report::{Units, Window};
use crate::report::{
    AudioTrackReport, LayerSentReport, PublishedReport, Report, RtcpReport, SetLayersReport, StreamStateReport,
    TrackReport, VideoTrackReport,
};
use crate::signal::{
    follow_redirect, rewrite_candidate, rewrite_candidates, AnswerAction, ClientMessage, IceServer, Incoming, Joined,
    LayerActive, MediaKind, Negotiation, OfferTrack, ParticipantInfo, RedirectError, ServerMessage, ServerOfferAction,
    SignalConnection, SignalError, Subscription, Subscriptions, TrackInfo, TrackSource, MAX_REDIRECTS,
    PROTOCOL_VERSION,
};
use crate::simulcast::{SimulcastConfig, SimulcastError, SimulcastSource};

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Publish an Opus track.
    pub publish_audio: bool,
    /// Publish a VP8 track (the test clip, each frame with an integrity trailer).
    pub publish_video: bool,
    /// The VP8 track's rate, bitrate, keyframe interval and RTP payload size.
    pub video: VideoConfig,
    /// The Opus bitrate.
    pub audio_bitrate_bps: i32,
    /// `join.auto_subscribe`.
    pub auto_subscribe: bool,
    /// Drain received media from the start (see [`Client::set_media_reading`]).
    pub read_media: bool,
    /// Local UDP address for ICE. `None`: `127.0.0.1:0` when the server's host is a loopback
    /// address or `localhost`, otherwise `0.0.0.0:0` (every interface).
    pub udp_addr: Option<SocketAddr>,
    /// How long to wait for `joined`.
    pub join_timeout: Duration,
    /// Keepalive interval (the protocol says 10 s; the server closes after 30 s of silence).
    pub ping_interval: Duration,
    /// Send the video track as these simulcast layers (with `publish_video`); `None`: one stream.
    pub simulcast: Option<SimulcastConfig>,
    /// Send media to this address instead of the server's: every server ICE candidate (from its
    /// SDP and trickled) is rewritten to it. Point it at a [`crate::relay::Relay`].
    pub udp_via: Option<SocketAddr>,
    /// Right after each `subscribed` for a video track, send `track_settings` with this render
    /// size (width, height), as an app showing it in a tile of that size would.
    pub max_video_size: Option<(u16, u16)>,
    /// Negotiate transport-wide congestion control (TWCC feedback for what this client receives,
    /// sequence numbers on what it sends), which the server's bandwidth estimator needs. Off by
    /// default: see the note in `build_peer_connection`.
    pub twcc: bool,
    /// The interop matrix's measuring window ([`crate::interop_report`]); empty by default.
    pub window: Window,
    /// Media only through a TURN relay (ICE transport policy `relay`), with the TURN servers `joined.ice_servers`
    /// offers (they are always used; this drops every other candidate). webrtc-rs 0.21 does TURN over UDP only:
    /// it skips `?transport=tcp` and `turns:` URLs.
    pub relay_only: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            publish_audio: false,
            publish_video: false,
            video: VideoConfig::default(),
            audio_bitrate_bps: DEFAULT_BITRATE_BPS,
            auto_subscribe: true,
            read_media: true,
            udp_addr: None,
            join_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            simulcast: None,
            udp_via: None,
            max_video_size: None,
            twcc: false,
            window: Window::default(),
            relay_only: false,
        }
    }
}

impl ClientOptions {
    /// Options publishing the given kinds.
    pub fn publishing(kinds: &[MediaKind]) -> Self {
        Self {
            publish_audio: kinds.contains(&MediaKind::Audio),
            publish_video: kinds.contains(&MediaKind::Video),
            ..Self::default()
        }
    }
}

/// Something that happened to a [`Client`], in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The room snapshot (always the first event).
    Joined(Joined),
    /// Someone joined.
    ParticipantJoined(ParticipantInfo),
    /// Someone left.
    ParticipantLeft {
        /// Who.
        participant_id: String,
        /// Why.
        reason: String,
    },
    /// A track was published (ours included; then `own` is true and `track.mid` is set).
    TrackPublished {
        /// The publisher.
        participant_id: String,
        /// The track.
        track: TrackInfo,
        /// Whether it is one of this client's tracks.
        own: bool,
    },
    /// A track was unpublished.
    TrackUnpublished {
        /// The publisher.
        participant_id: String,
        /// The track.
        track_id: String,
    },
    /// A track was muted or unmuted.
    TrackMuted {
        /// The publisher.
        participant_id: String,
        /// The track.
        track_id: String,
        /// New state.
        muted: bool,
    },
    /// This client will receive a track (from `subscribed`).
    TrackSubscribed(Subscription),
    /// This client no longer receives a track.
    TrackUnsubscribed {
        /// The track.
        track_id: String,
        /// Why.
        reason: String,
    },
    /// The first RTP packet of a received track arrived (`track_id` as in the report).
    MediaReceived {
        /// The track.
        track_id: String,
        /// Its kind.
        kind: MediaKind,
    },
    /// The server asked this publisher to send only some simulcast layers (`set_layers`).
    SetLayers {
        /// The publisher's own track.
        track_id: String,
        /// The layers as the server set them.
        layers: Vec<LayerActive>,
    },
    /// What this subscriber receives of a track changed (`stream_state`).
    StreamState {
        /// The received track.
        track_id: String,
        /// `active` or `paused`.
        state: String,
        /// When active: the RID forwarded.
        layer: Option<String>,
        /// When paused: why.
        reason: Option<String>,
    },
    /// The peer connection changed state (`connected`, `failed`, …).
    ConnectionState(String),
    /// The server reported an error, or a local negotiation step failed (`code` = `local`).
    Error {
        /// The server's code, or `local`.
        code: String,
        /// Details.
        message: String,
        /// The failed request's type, when known.
        req_type: Option<String>,
    },
    /// The session ended; no events follow.
    Closed {
        /// WebSocket close code, if the server sent one.
        code: Option<u16>,
        /// Close reason.
        reason: String,
        /// The `reason` of the server's `leave` message, if one came first.
        leave_reason: Option<String>,
    },
}

/// A client failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The WebSocket failed or the URL is bad.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// The server closed the socket instead of answering `join` (bad token, version, …).
    #[error("join refused: socket closed with code {code:?} {reason:?}")]
    JoinClosed {
        /// Close code (4001 invalid token, 4002 expired, 4004 not allowed, 4005 version, …).
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// The server answered `join` with an error message.
    #[error("join refused: {code}: {message}")]
    JoinError {
        /// Error code.
        code: String,
        /// Error message.
        message: String,
    },
    /// No `joined` within the join timeout.
    #[error("no joined message within {0:?}")]
    JoinTimeout(Duration),
    /// The first message after `join` was something else.
    #[error("expected joined, got {0}")]
    UnexpectedMessage(String),
    /// A cluster redirected the join more than [`MAX_REDIRECTS`] times in a row (a loop, or a room still moving).
    #[error("too many redirects: more than {max} in a row, the last to {last}", max = MAX_REDIRECTS)]
    TooManyRedirects {
        /// Where the one too many pointed.
        last: String,
    },
    /// A cluster redirected the join to a URL that does not parse or is not ws:// / wss://.
    #[error("redirect to a bad URL {url:?}: {reason}")]
    BadRedirect {
        /// The URL the server sent.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// webrtc-rs refused an operation.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// libopus failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The simulcast configuration cannot be sent.
    #[error(transparent)]
    Simulcast(#[from] SimulcastError),
    /// Nothing of this kind is published.
    #[error("no {0} track is published")]
    NotPublished(MediaKind),
    /// The server has not confirmed the track yet (no `track_published` for it).
    #[error("the {0} track has no server id yet")]
    NotAcknowledged(MediaKind),
    /// A track of this kind is already published.
    #[error("a {0} track is already published")]
    AlreadyPublished(MediaKind),
    /// The session has ended.
    #[error("the session is closed")]
    Closed,
    /// Waiting for something timed out.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// webrtc-rs did not behave as its documentation says.
    #[error("unexpected webrtc-rs behaviour: {0}")]
    Unexpected(&'static str),
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Joins at `url`: opens the socket, sends `join`, waits up to `timeout` for the answer. A `redirect` (a cluster
/// node that does not host the room) drops that socket and sends the same `join` to the URL it names, at most
/// [`MAX_REDIRECTS`] times in a row. Returns the joined socket, `joined`, and the URL and node id (from the last
/// redirect) where it happened. No peer connection exists yet: it is made for the node that answered `joined`.
async fn join_following_redirects(
    url: &str,
    join: &ClientMessage,
    timeout: Duration,
) -> Result<(SignalConnection, Joined, String, Option<String>), ClientError> {
    let mut url = url.to_owned();
    let mut node = None;
    let mut hop = 0;
    loop {
        hop += 1;
        let mut conn = SignalConnection::connect(&url).await?;
        conn.send(join).await?;
        let incoming =
            tokio::time::timeout(timeout, conn.recv()).await.map_err(|_| ClientError::JoinTimeout(timeout))?;
        match incoming? {
            Incoming::Message(ServerMessage::Joined(j)) => return Ok((conn, j, url, node)),
            Incoming::Message(ServerMessage::Redirect { url: to, node: to_node, room }) => {
                // Dropped, not closed: the node that redirected closes it (4012) and did nothing else.
                drop(conn);
                let next = follow_redirect(hop, &url, &to, &["ws", "wss"]).map_err(|e| match e {
                    RedirectError::TooMany { last } => ClientError::TooManyRedirects { last },
                    RedirectError::BadUrl { url, reason } => ClientError::BadRedirect { url, reason },
                })?;
                info!(%room, node = %to_node, url = %next, hop, "redirected");
                url = next.into();
                node = Some(to_node);
            }
            Incoming::Message(ServerMessage::Error { code, message, .. }) => {
                return Err(ClientError::JoinError { code: code.name(), message })
            }
            Incoming::Closed { code, reason } => return Err(ClientError::JoinClosed { code, reason }),
            Incoming::Message(other) => return Err(ClientError::UnexpectedMessage(format!("{other:?}"))),
            Incoming::Invalid { error, text } => {
                return Err(ClientError::UnexpectedMessage(format!("{text} ({error})")))
            }
        }
    }
}

/// Wall-clock time, ms since the UNIX epoch.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    // A panic in another holder does not make the counters meaningless; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Shared state (session, readers, senders, and the Client handle)

#[derive(Debug, Default)]
struct SentCounters {
    audio_packets: AtomicU64,
    video_frames: AtomicU64,
    video_packets: AtomicU64,
    errors: AtomicU64,
    /// Simulcast: one per layer of the configuration.
    layers: Vec<LayerCounters>,
}

#[derive(Debug)]
struct LayerCounters {
    rid: String,
    width: u16,
    height: u16,
    frames: AtomicU64,
    packets: AtomicU64,
    keyframes: AtomicU64,
    active: AtomicBool,
}

impl SentCounters {
    fn new(simulcast: Option<&SimulcastConfig>) -> Self {
        let layers = simulcast
            .map(|c| {
                c.layers
                    .iter()
                    .map(|l| LayerCounters {
                        rid: l.rid.clone(),
                        width: l.width,
                        height: l.height,
                        frames: AtomicU64::new(0),
                        packets: AtomicU64::new(0),
                        keyframes: AtomicU64::new(0),
                        active: AtomicBool::new(true),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { layers, ..Self::default() }
    }
}

enum RxMedia {
    Video(Box<VideoReceiver>),
    Audio(Box<AudioReceiver>),
}

struct RxTrack {
    track_id: String,
    participant_id: String,
    media: RxMedia,
}

#[derive(Default)]
struct RxState {
    subs: Subscriptions,
    tracks: Vec<RxTrack>,
}

pub(crate) struct Shared {
    joined_at: Instant,
    identity: String,
    participant_id: String,
    room: String,
    rx: StdMutex<RxState>,
    sent: SentCounters,
    set_layers: StdMutex<Vec<SetLayersReport>>,
    stream_states: StdMutex<Vec<StreamStateReport>>,
    rtcp: Arc<RtcpCounters>,
    /// Sent and received units for the interop report.
    units: Arc<StdMutex<Units>>,
}

/// Counted by [`RtxUnwrapper`] in the interceptor chain; see [`RtcpReport`].
#[derive(Debug, Default)]
struct RtcpCounters {
    nacks: AtomicU64,
    nacked: AtomicU64,
    plis: AtomicU64,
    firs: AtomicU64,
    rtx: AtomicU64,
}

impl Shared {
    /// The state of a participant that publishes what `options` asks for.
    pub(crate) fn new(identity: String, participant_id: String, room: String, options: &ClientOptions) -> Shared {
        Shared {
            joined_at: Instant::now(),
            identity,
            participant_id,
            room,
            rx: StdMutex::new(RxState::default()),
            sent: SentCounters::new(options.simulcast.as_ref().filter(|_| options.publish_video)),
            set_layers: StdMutex::new(Vec::new()),
            stream_states: StdMutex::new(Vec::new()),
            rtcp: Arc::default(),
            units: Arc::new(StdMutex::new(Units::new(options.window))),
        }
    }

    /// Counts one received packet on `mid`. Returns the track id and kind when it was the first
    /// packet of that track.
    fn on_rtp(&self, mid: &str, kind: MediaKind, packet: &rtc::rtp::Packet) -> Option<(String, MediaKind)> {
        let now = now_us();
        let mut rx = lock(&self.rx);
        let (track_id, participant_id) = match rx.subs.by_mid(mid) {
            Some(s) => (s.track_id.clone(), s.participant_id.clone()),
            None => (format!("mid:{mid}"), String::new()),
        };
        let (seq, marker) = (packet.header.sequence_number, packet.header.marker);
        lock(&self.units).received(&track_id, &participant_id, kind, seq, marker, now / 1000);
        let index = match rx.tracks.iter().position(|t| t.track_id == track_id) {
            Some(i) => i,
            None => {
                let media = match kind {
                    MediaKind::Video => RxMedia::Video(Box::default()),
                    MediaKind::Audio => match AudioReceiver::new() {
                        Ok(r) => RxMedia::Audio(Box::new(r)),
                        Err(e) => {
                            warn!(error = %e, "cannot create an Opus decoder; dropping audio");
                            return None;
                        }
                    },
                };
                rx.tracks.push(RxTrack { track_id: track_id.clone(), participant_id, media });
                rx.tracks.len() - 1
            }
        };
        let first = {
            let track = &mut rx.tracks[index];
            match &mut track.media {
                RxMedia::Video(v) => {
                    let first = v.stats().packets_received == 0;
                    v.handle_packet(packet, now);
                    first
                }
                RxMedia::Audio(a) => {
                    let first = a.stats().packets_received == 0;
                    a.handle_packet(packet, now);
                    first
                }
            }
        };
        first.then_some((track_id, kind))
    }

    pub(crate) fn report(&self) -> Report {
        let rx = lock(&self.rx);
        let tracks = rx
            .tracks
            .iter()
            .map(|t| match &t.media {
                RxMedia::Video(v) => {
                    TrackReport::Video(VideoTrackReport::new(t.track_id.clone(), t.participant_id.clone(), v.stats()))
                }
                RxMedia::Audio(a) => {
                    TrackReport::Audio(AudioTrackReport::new(t.track_id.clone(), t.participant_id.clone(), a.stats()))
                }
            })
            .collect();
        Report {
            identity: self.identity.clone(),
            participant_id: self.participant_id.clone(),
            room: self.room.clone(),
            duration_s: (self.joined_at.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            tracks,
            published: PublishedReport {
                audio_packets_sent: self.sent.audio_packets.load(Ordering::Relaxed),
                video_frames_sent: self.sent.video_frames.load(Ordering::Relaxed),
                video_packets_sent: self.sent.video_packets.load(Ordering::Relaxed),
                send_errors: self.sent.errors.load(Ordering::Relaxed),
                video_layers: self
                    .sent
                    .layers
                    .iter()
                    .map(|l| LayerSentReport {
                        rid: l.rid.clone(),
                        width: l.width,
                        height: l.height,
                        frames_sent: l.frames.load(Ordering::Relaxed),
                        packets_sent: l.packets.load(Ordering::Relaxed),
                        keyframes_sent: l.keyframes.load(Ordering::Relaxed),
                        active: l.active.load(Ordering::Relaxed),
                    })
                    .collect(),
                set_layers: lock(&self.set_layers).clone(),
            },
            stream_states: lock(&self.stream_states).clone(),
            rtcp: RtcpReport {
                nacks_sent: self.rtcp.nacks.load(Ordering::Relaxed),
                nacked_packets: self.rtcp.nacked.load(Ordering::Relaxed),
                plis_sent: self.rtcp.plis.load(Ordering::Relaxed),
                firs_sent: self.rtcp.firs.load(Ordering::Relaxed),
                rtx_received: self.rtcp.rtx.load(Ordering::Relaxed),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The handle

enum Command {
    Unpublish(MediaKind, oneshot::Sender<Result<(), ClientError>>),
    Mute(MediaKind, bool, oneshot::Sender<Result<(), ClientError>>),
    Republish(MediaKind, oneshot::Sender<Result<(), ClientError>>),
    Send(ClientMessage, oneshot::Sender<Result<(), ClientError>>),
    SendText(String, oneshot::Sender<Result<(), ClientError>>),
    Leave(oneshot::Sender<()>),
}

/// A joined participant. Dropping it leaves the room (in the background).
pub struct Client {
    joined: Joined,
    /// The signaling URL of the node joined (where the last redirect led, else the one given).
    url: String,
    /// That node's id, as the last redirect named it; `None` when no redirect led here.
    node: Option<String>,
    shared: Arc<Shared>,
    cmd_tx: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    reading: watch::Sender<bool>,
    connection: watch::Receiver<RTCPeerConnectionState>,
    session: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.shared.identity)
            .field("participant_id", &self.shared.participant_id)
            .field("room", &self.shared.room)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `url` (`ws://host:port/rtc`), joins with `token`, builds the peer connection
    /// and starts publishing what `options` asks for. Returns once `joined` arrived; media starts
    /// when ICE and DTLS are up (see [`Client::wait_connected`]).
    pub async fn connect(url: &str, token: &str, options: ClientOptions) -> Result<Client, ClientError> {
        if let Some(simulcast) = &options.simulcast {
            simulcast.validate()?;
        }
        let join = ClientMessage::Join {
            v: PROTOCOL_VERSION,
            token: token.to_owned(),
            auto_subscribe: options.auto_subscribe,
            chat: Vec::new(),
        };
        let (conn, joined, url, node) = join_following_redirects(url, &join, options.join_timeout).await?;
        let url = url.as_str();
        info!(
            room = %joined.room,
            participant = %joined.participant.id,
            identity = %joined.participant.identity,
            others = joined.participants.len(),
            "joined"
        );

        let shared = Arc::new(Shared::new(
            joined.participant.identity.clone(),
            joined.participant.id.clone(),
            joined.room.clone(),
            &options,
        ));

        let (pc, pc_rx, conn_state_rx) =
            new_peer_connection(url, &options, &shared, ice_config(&joined.ice_servers, options.relay_only)).await?;

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let _ = events_tx.send(ClientEvent::Joined(joined.clone()));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (reading_tx, reading_rx) = watch::channel(options.read_media);

        let mut session = Session {
            conn,
            pc,
            neg: Negotiation::new(),
            shared: Arc::clone(&shared),
            events: events_tx,
            pc_events: pc_rx,
            cmds: cmd_rx,
            publishers: Vec::new(),
            options: options.clone(),
            reading: reading_rx,
            connection: conn_state_rx.clone(),
            sdp_sent: false,
            pending_candidates: Vec::new(),
            leave_reason: None,
            readers: Vec::new(),
        };
        for (wanted, kind) in [(options.publish_audio, MediaKind::Audio), (options.publish_video, MediaKind::Video)] {
            if wanted {
                if let Err(e) = session.publish(kind).await {
                    session.conn.close().await;
                    let _ = session.pc.close().await;
                    return Err(e);
                }
            }
        }
        let task = tokio::spawn(session.run());

        Ok(Client {
            joined,
            url: url.to_owned(),
            node,
            shared,
            cmd_tx,
            events: events_rx,
            reading: reading_tx,
            connection: conn_state_rx,
            session: Some(task),
        })
    }

    /// The `joined` snapshot.
    pub fn joined(&self) -> &Joined {
        &self.joined
    }

    /// The signaling URL of the node this client joined: where the last `redirect` led, else the one given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster node this client is on, as the last `redirect` named it (`None` when no redirect led here).
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// This client's participant id.
    pub fn participant_id(&self) -> &str {
        &self.shared.participant_id
    }

    /// This client's identity.
    pub fn identity(&self) -> &str {
        &self.shared.identity
    }

    /// The next event, or `None` once the session has ended and all events were taken.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// Takes events until one matches `pred` (returned) or `timeout` passes. Events that do not
    /// match are dropped.
    pub async fn wait_for_event<F>(&mut self, timeout: Duration, mut pred: F) -> Result<ClientEvent, ClientError>
    where
        F: FnMut(&ClientEvent) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Err(ClientError::Timeout("event".to_owned())),
                Ok(None) => return Err(ClientError::Closed),
                Ok(Some(e)) if pred(&e) => return Ok(e),
                Ok(Some(e)) => trace!(event = ?e, "skipped while waiting"),
            }
        }
    }

    /// Waits until the peer connection is `connected`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.connection.clone();
        let wait = async {
            loop {
                match *rx.borrow_and_update() {
                    RTCPeerConnectionState::Connected => return Ok(()),
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return Err(ClientError::Closed),
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(ClientError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ClientError::Timeout("peer connection".to_owned()))?
    }

    /// The peer connection's current state.
    pub fn connection_state(&self) -> String {
        self.connection.borrow().to_string()
    }

    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmd_tx.send(make(tx)).map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Stops publishing the track of `kind` (its m-line goes `inactive` in a new offer).
    pub async fn unpublish(&self, kind: MediaKind) -> Result<(), ClientError> {
        self.command(|tx| Command::Unpublish(kind, tx)).await
    }

    /// Publishes a new track of `kind` (after [`Client::unpublish`], or one not published at
    /// connect). It gets a new m-line, a new SSRC and a new server track id.
    pub async fn republish(&self, kind: MediaKind) -> Result<(), ClientError> {
        self.command(|tx| Command::Republish(kind, tx)).await
    }

    /// Mutes or unmutes the published track of `kind`: sends `mute` with its server id and
    /// stops (or resumes) sending its media. Frame counters continue where they stopped, so a
    /// subscriber sees no missing frames across a mute.
    pub async fn mute(&self, kind: MediaKind, muted: bool) -> Result<(), ClientError> {
        self.command(|tx| Command::Mute(kind, muted, tx)).await
    }

    /// Sends a protocol message as is (`subscribe`, `unsubscribe`, …).
    pub async fn send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.command(|tx| Command::Send(msg, tx)).await
    }

    /// Sends `track_settings` for a received video track: render `size` (width, height; `None`
    /// lifts the limit) or `hidden`.
    pub async fn set_track_settings(
        &self,
        track_id: &str,
        size: Option<(u16, u16)>,
        hidden: bool,
    ) -> Result<(), ClientError> {
        self.send(ClientMessage::TrackSettings {
            track_id: track_id.to_owned(),
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
            hidden,
        })
        .await
    }

    /// Sends a raw text frame (for malformed-input tests).
    pub async fn send_text(&self, text: impl Into<String>) -> Result<(), ClientError> {
        let text = text.into();
        self.command(|tx| Command::SendText(text, tx)).await
    }

    /// Stops (`false`) or resumes (`true`) draining received media. While stopped, the packets
    /// pile up in webrtc-rs' per-track queue and are then dropped there; they are not counted.
    pub fn set_media_reading(&self, on: bool) {
        let _ = self.reading.send(on);
    }

    /// The interop unit counters, to read after [`Client::leave`] consumed the client.
    pub fn units_handle(&self) -> Arc<StdMutex<Units>> {
        Arc::clone(&self.shared.units)
    }

    /// The report so far.
    pub fn stats(&self) -> Report {
        self.shared.report()
    }

    /// Sends `leave`, waits (up to 2 s) for the server to close the socket, closes the peer
    /// connection, and returns the final report.
    pub async fn leave(mut self) -> Result<Report, ClientError> {
        let (tx, rx) = oneshot::channel();
        if self.cmd_tx.send(Command::Leave(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Some(task) = self.session.take() {
            let _ = task.await;
        }
        Ok(self.shared.report())
    }
}

fn default_udp_addr(url: &str) -> SocketAddr {
    let loopback = url::Url::parse(url)
        .ok()
        .and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.is_loopback()),
            Some(url::Host::Ipv6(ip)) => Some(ip.is_loopback()),
            Some(url::Host::Domain(d)) => Some(d == "localhost"),
            None => None,
        })
        .unwrap_or(false);
    let ip = if loopback { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    SocketAddr::new(ip, 0)
}

// ---------------------------------------------------------------------------------------------
// Peer connection

pub(crate) enum PcEvent {
    Candidate(RTCIceCandidateInit),
    GatheringComplete,
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
}

/// Runs on the webrtc-rs driver: must never block, so it only forwards.
struct PcHandler {
    tx: mpsc::UnboundedSender<PcEvent>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PcHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.tx.send(PcEvent::Candidate(init));
            }
            Err(e) => warn!(error = %e, "cannot serialise a local candidate"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(PcEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
        let _ = self.tx.send(PcEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tx.send(PcEvent::Track(track));
    }
}

/// The peer connection of a participant that talks to the server at `url`, as `options` asks, with its events
/// and its connection state.
pub(crate) async fn new_peer_connection(
    url: &str,
    options: &ClientOptions,
    shared: &Shared,
    ice: RTCConfigurationBuilder,
) -> Result<
    (Arc<dyn PeerConnection>, mpsc::UnboundedReceiver<PcEvent>, watch::Receiver<RTCPeerConnectionState>),
    ClientError,
> {
    let (pc_tx, pc_rx) = mpsc::unbounded_channel();
    let (conn_state_tx, conn_state_rx) = watch::channel(RTCPeerConnectionState::New);
    let handler = Arc::new(PcHandler { tx: pc_tx, state: conn_state_tx });
    let udp_addr = options.udp_addr.unwrap_or_else(|| default_udp_addr(url));
    let pc = build_peer_connection(
        handler,
        udp_addr,
        options.simulcast.is_some(),
        options.twcc,
        Arc::clone(&shared.rtcp),
        ice,
    )
    .await?;
    Ok((pc, pc_rx, conn_state_rx))
}

async fn build_peer_connection(
    handler: Arc<PcHandler>,
    udp_addr: SocketAddr,
    simulcast: bool,
    twcc: bool,
    rtcp: Arc<RtcpCounters>,
    ice: RTCConfigurationBuilder,
) -> Result<Arc<dyn PeerConnection>, ClientError> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    if simulcast {
        // sdes:mid, sdes:rtp-stream-id and repaired-rtp-stream-id on video m-lines: the server
        // maps each layer's SSRC by mid + rid (no a=ssrc lines for simulcast encodings).
        configure_simulcast_extension_headers(&mut media_engine)?;
    }
    // NACK (generator + responder), RTCP SR/RR, TWCC when asked for, and keyframe requests
    // delivered to the sender tasks.
    let registry = configure_nack(Registry::new(), &mut media_engine);
    // TWCC is off unless asked for: webrtc-rs 0.21's feedback makes the server's send-side
    // estimate collapse at the start of a call (its bandwidth probes measure ~300 kbit/s on loopback, where
    // Chrome's feedback gives 2 Mbit/s), which would have the server's allocator pause video on a clean link.
    // Without TWCC the server has no estimate for this client and forwards what its settings want.
    let registry = if twcc { configure_twcc(registry, &mut media_engine)? } else { registry };
    let registry = configure_rtcp_reports(registry);
    let registry = registry.with(Slot::from(14_000), KeyframeRequestForwarder::default());
    // Between the FEC decoder (6_000) and the NACK generator (7_000) on the read walk; on the write walk (towards
    // the wire) below the NACK generator, so it counts the NACKs it emits.
    let registry = registry.with(Slot::from(6_500), RtxUnwrapper { counters: rtcp, ..RtxUnwrapper::default() });

    let setting_engine =
        SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(ice.build())
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec![udp_addr])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

/// How often the NACK generator asks again for what is still missing. Chrome NACKs a gap as soon as it sees it and
/// again after each round trip; webrtc-rs's default 100 ms cycle made every repair cost 100–200 ms that a browser
/// spends in one round trip, and a packet lost twice a freeze over 500 ms that no browser user would see (media-tests
/// measured that in one run of `loss-10` in six). 20 ms is still slower than Chrome on a short path.
const NACK_INTERVAL: Duration = Duration::from_millis(20);

/// NACK and PLI feedback on video, the NACK responder, and the NACK generator at [`NACK_INTERVAL`]
/// (webrtc-rs's `configure_nack` with the generator's cycle set).
fn configure_nack(registry: Registry, media_engine: &mut MediaEngine) -> Registry {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback { typ: TYPE_RTCP_FB_NACK.to_owned(), parameter: parameter.to_owned() },
            RtpCodecKind::Video,
        );
    }
    registry
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().with_interval(NACK_INTERVAL).build())
}

/// The ICE part of the peer connection's configuration: ICE servers (`joined.ice_servers`), and the relay-only
/// policy.
pub(crate) fn ice_config(servers: &[IceServer], relay_only: bool) -> RTCConfigurationBuilder {
    let servers = servers
        .iter()
        .map(|s| RTCIceServer { urls: s.urls.clone(), username: s.username.clone(), credential: s.credential.clone() })
        .collect();
    let policy = if relay_only { RTCIceTransportPolicy::Relay } else { RTCIceTransportPolicy::All };
    RTCConfigurationBuilder::new().with_ice_servers(servers).with_ice_transport_policy(policy)
}

/// Marks inbound PLI/FIR for delivery to the application, so a sender task can answer a
/// keyframe request (inbound RTCP otherwise stops at the end of the interceptor chain).
#[derive(Default)]
struct KeyframeRequestForwarder {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = webrtc::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = InterceptorPacket::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Turns each received retransmission (RFC 4588: RTX SSRC and payload type, the original sequence number in the
/// first two payload bytes) back into the packet it repairs before the NACK generator sees it, as a browser does.
///
/// rtc 0.21 hands RTX packets to the interceptor chain as they came (the endpoint handler unwraps them later, on
/// the way to the application), so its NACK generator never learns that a NACKed packet arrived and asks for it
/// again every 100 ms until it leaves the receive log: measured with `media-tests run scenarios/loss-5.toml`, more
/// retransmissions than original packets, which tripped str0m's retransmission cap and stalled repair for up to a
/// second. Unwrapped here, a repaired packet counts as received and is asked for no more.
///
/// It also counts, into [`RtcpCounters`], the RTX packets it unwraps and the NACKs, PLIs and FIRs on the RTCP write
/// path (it sits below the NACK generator, so it sees what that emits, and every RTCP the application writes).
#[derive(Default)]
struct RtxUnwrapper {
    counters: Arc<RtcpCounters>,
    /// RTX SSRC → (the SSRC it repairs, that stream's payload type).
    repairs: std::collections::HashMap<u32, (u32, u8)>,
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxUnwrapper {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = webrtc::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtp(packet) = &mut msg.message.packet {
            if let Some(&(ssrc, pt)) = self.repairs.get(&packet.header.ssrc) {
                if packet.payload.len() >= 2 {
                    self.counters.rtx.fetch_add(1, Ordering::Relaxed);
                    packet.header.sequence_number = u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
                    packet.header.ssrc = ssrc;
                    packet.header.payload_type = pt;
                    packet.payload = packet.payload.slice(2..);
                } else {
                    return Ok(()); // padding-only RTX: nothing to repair
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                let any = p.as_ref().as_any();
                if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                    self.counters.nacks.fetch_add(1, Ordering::Relaxed);
                    let n: usize = nack.nacks.iter().map(|pair| pair.packet_list().len()).sum();
                    self.counters.nacked.fetch_add(n as u64, Ordering::Relaxed);
                } else if any.is::<PictureLossIndication>() {
                    self.counters.plis.fetch_add(1, Ordering::Relaxed);
                } else if any.is::<FullIntraRequest>() {
                    self.counters.firs.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for RtxUnwrapper {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.repairs.insert(rtx, (info.ssrc, info.payload_type));
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.repairs.remove(&rtx);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Publishing

pub(crate) struct Publisher {
    kind: MediaKind,
    transceiver: Arc<dyn RtpTransceiver>,
    sender: Arc<dyn RtpSender>,
    mid: Option<String>,
    /// The server's id for it, from our own `track_published`.
    track_id: Option<String>,
    active: bool,
    /// Set when an answer covering this m-line was applied; the sender task waits for it.
    pub(crate) negotiated: watch::Sender<bool>,
    muted: watch::Sender<bool>,
    pub(crate) stop: watch::Sender<bool>,
    /// Simulcast: which layers to send (from `set_layers`), by spatial index.
    layers: Option<watch::Sender<Vec<bool>>>,
    pub(crate) task: JoinHandle<()>,
}

fn codec_for(kind: MediaKind) -> RTCRtpCodec {
    match kind {
        MediaKind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        MediaKind::Video => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

/// The payload type negotiated for `mime` on `sender`.
async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>, mime: &str) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

/// Waits until the connection is up and the m-line negotiated; false if told to stop first.
async fn wait_ready(
    stop: &mut watch::Receiver<bool>,
    negotiated: &mut watch::Receiver<bool>,
    connection: &mut watch::Receiver<RTCPeerConnectionState>,
) -> bool {
    loop {
        if *stop.borrow_and_update() {
            return false;
        }
        let ready =
            *negotiated.borrow_and_update() && *connection.borrow_and_update() == RTCPeerConnectionState::Connected;
        if ready {
            return true;
        }
        tokio::select! {
            r = stop.changed() => if r.is_err() { return false },
            r = negotiated.changed() => if r.is_err() { return false },
            r = connection.changed() => if r.is_err() { return false },
        }
    }
}

/// Add a send-only transceiver for `kind` (one encoding, or the simulcast layers `options` asks for) to `pc` and
/// start its sender task, which waits until the m-line is negotiated (its `negotiated` is set) and `connection`
/// is up. The `n`th publisher of this participant. Shared by the WebSocket client and WHIP ([`crate::whip`]).
pub(crate) async fn start_publisher(
    pc: &Arc<dyn PeerConnection>,
    shared: &Arc<Shared>,
    options: &ClientOptions,
    connection: &watch::Receiver<RTCPeerConnectionState>,
    kind: MediaKind,
    n: usize,
) -> Result<Publisher, ClientError> {
    let ssrc: u32 = rand::random();
    let rtc_kind = match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    };
    let id = format!("{}-{kind}-{n}", shared.identity);
    let simulcast = options.simulcast.clone().filter(|_| kind == MediaKind::Video);
    // One encoding, or one per simulcast layer (each with its own SSRC and RID).
    let codings: Vec<RTCRtpEncodingParameters> = match &simulcast {
        None => vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: codec_for(kind),
            ..Default::default()
        }],
        Some(config) => config
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: l.rid.clone(),
                    ssrc: Some(if i == 0 { ssrc } else { rand::random() }),
                    ..Default::default()
                },
                codec: codec_for(kind),
                max_bitrate: l.bitrate_bps,
                ..Default::default()
            })
            .collect(),
    };
    let layer_ssrcs: Vec<u32> = match &simulcast {
        None => Vec::new(),
        Some(_) => codings.iter().filter_map(|c| c.rtp_coding_parameters.ssrc).collect(),
    };
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("{}-stream", shared.identity),
        id.clone(),
        id,
        rtc_kind,
        codings,
    )));
    // Always a new transceiver: add_track would (per the spec) reuse a recvonly m-line the
    // server created for a subscription, turning it into a publication.
    let transceiver = pc
        .add_transceiver_from_track(
            Arc::clone(&track) as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await?;
    let sender = transceiver.sender().await?.ok_or(ClientError::Unexpected("a new transceiver has no sender"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (neg_tx, neg_rx) = watch::channel(false);
    let (muted_tx, muted_rx) = watch::channel(false);
    let (layers_tx, layers_rx) = watch::channel(vec![true; layer_ssrcs.len()]);
    for l in &shared.sent.layers {
        l.active.store(true, Ordering::Relaxed);
    }
    let task = SenderTask {
        track,
        sender: Arc::clone(&sender),
        transceiver: Arc::clone(&transceiver),
        ssrc,
        layer_ssrcs,
        active_layers: layers_rx,
        shared: Arc::clone(shared),
        stop: stop_rx,
        negotiated: neg_rx,
        muted: muted_rx,
        connection: connection.clone(),
    };
    let task = match (kind, simulcast.clone()) {
        (MediaKind::Audio, _) => tokio::spawn(task.run_audio(options.audio_bitrate_bps)),
        (MediaKind::Video, None) => tokio::spawn(task.run_video(options.video.clone())),
        (MediaKind::Video, Some(config)) => tokio::spawn(task.run_simulcast(options.video.clone(), config)),
    };
    info!(%kind, ssrc, simulcast = simulcast.is_some(), "publishing");
    Ok(Publisher {
        kind,
        transceiver,
        sender,
        mid: None,
        track_id: None,
        active: true,
        negotiated: neg_tx,
        muted: muted_tx,
        stop: stop_tx,
        layers: simulcast.map(|_| layers_tx),
        task,
    })
}

struct SenderTask {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    transceiver: Arc<dyn RtpTransceiver>,
    ssrc: u32,
    /// Simulcast: the SSRC of each layer (`ssrc` is the first).
    layer_ssrcs: Vec<u32>,
    /// Simulcast: which layers to send.
    active_layers: watch::Receiver<Vec<bool>>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    muted: watch::Receiver<bool>,
    negotiated: watch::Receiver<bool>,
    connection: watch::Receiver<RTCPeerConnectionState>,
}

impl SenderTask {
    async fn run_audio(mut self, bitrate: i32) {
        if !wait_ready(&mut self.stop, &mut self.negotiated, &mut self.connection).await {
            return;
        }
        let pt = negotiated_payload_type(&self.sender, MIME_TYPE_OPUS).await.unwrap_or(111);
        let mut source = match AudioSource::new(bitrate) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot create an Opus encoder; not sending audio");
                return;
            }
        };
        let mut seq: u16 = rand::random();
        let mut ts: u32 = rand::random();
        let mut tick = tokio::time::interval(FRAME_DURATION);
        debug!(ssrc = self.ssrc, pt, "audio sender started");
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.changed() => break,
            }
            if *self.stop.borrow() {
                break;
            }
            if *self.muted.borrow() {
                continue;
            }
            let payload = match source.next_packet() {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "opus encode failed");
                    self.shared.sent.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker: false,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: payload.into(),
            };
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(FRAME_SAMPLES as u32);
            match self.track.write_rtp(packet).await {
                Ok(()) => {
                    lock(&self.shared.units).sent(MediaKind::Audio, now_ms());
                    self.shared.sent.audio_packets.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => self.shared.sent.errors.fetch_add(1, Ordering::Relaxed),
            };
        }
        debug!(ssrc = self.ssrc, "audio sender stopped");
    }

    async fn run_video(mut self, config: VideoConfig) {
        if !wait_ready(&mut self.stop, &mut self.negotiated, &mut self.connection).await {
            return;
        }
        let pt = negotiated_payload_type(&self.sender, MIME_TYPE_VP8).await.unwrap_or(96);
        let max_payload = config.max_rtp_payload;
        let mut source = VideoSource::new(config, rand::random());
        let mut packetizer = Vp8Packetizer::new(self.ssrc, pt, rand::random(), rand::random());
        packetizer.set_max_payload(max_payload);
        let mut tick = tokio::time::interval(source.frame_interval());
        let mut last_forced: Option<Instant> = None;
        let mut feedback_open = true;
        debug!(ssrc = self.ssrc, pt, "video sender started");
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.changed() => break,
                event = self.track.poll(), if feedback_open => {
                    match event {
                        Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                                // Honour at most one request per 250 ms; SFUs repeat them.
                                if last_forced.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
                                    debug!(ssrc = self.ssrc, "keyframe requested");
                                    source.request_keyframe();
                                    last_forced = Some(Instant::now());
                                }
                            }
                        }
                        Some(_) => {}
                        None => feedback_open = false,
                    }
                    continue;
                }
            }
            if *self.stop.borrow() {
                break;
            }
            if *self.muted.borrow() {
                continue;
            }
            let frame = source.next_frame(now_us());
            let mut ok = true;
            for packet in packetizer.packetize(&frame.data, frame.rtp_timestamp) {
                match self.track.write_rtp(packet).await {
                    Ok(()) => {
                        self.shared.sent.video_packets.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        ok = false;
                        self.shared.sent.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if ok {
                lock(&self.shared.units).sent(MediaKind::Video, now_ms());
                self.shared.sent.video_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        debug!(ssrc = self.ssrc, "video sender stopped");
    }

    /// The simulcast video sender: every frame interval, one frame per active layer, each layer
    /// on its own SSRC with the mid and rid header extensions.
    async fn run_simulcast(mut self, video: VideoConfig, config: SimulcastConfig) {
        if !wait_ready(&mut self.stop, &mut self.negotiated, &mut self.connection).await {
            return;
        }
        let pt = negotiated_payload_type(&self.sender, MIME_TYPE_VP8).await.unwrap_or(96);
        let (mid_ext, rid_ext) = simulcast_extension_ids(&self.sender).await;
        let mid = self.transceiver.mid().await.ok().flatten().unwrap_or_default();
        if mid_ext.is_none() || rid_ext.is_none() {
            warn!(?mid_ext, ?rid_ext, "mid/rid header extensions not negotiated; the server may not see the layers");
        }
        let mut source = SimulcastSource::new(&config, &video, rand::random());
        let mut packetizers: Vec<Vp8Packetizer> = self
            .layer_ssrcs
            .iter()
            .map(|&ssrc| {
                let mut p = Vp8Packetizer::new(ssrc, pt, rand::random(), rand::random());
                p.set_max_payload(video.max_rtp_payload);
                p
            })
            .collect();
        let rids: Vec<bytes::Bytes> = config.layers.iter().map(|l| bytes::Bytes::from(l.rid.clone())).collect();
        let mid = bytes::Bytes::from(mid);
        let mut tick = tokio::time::interval(source.frame_interval());
        let mut last_forced: Vec<Option<Instant>> = vec![None; self.layer_ssrcs.len()];
        let mut feedback_open = true;
        let mut layers_open = true;
        debug!(ssrcs = ?self.layer_ssrcs, pt, ?mid_ext, ?rid_ext, "simulcast sender started");
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.changed() => break,
                r = self.active_layers.changed(), if layers_open => {
                    if r.is_err() {
                        layers_open = false;
                        continue;
                    }
                    let active = self.active_layers.borrow_and_update().clone();
                    for (i, on) in active.iter().enumerate() {
                        if source.set_active(i as u8, *on) {
                            info!(layer = i, active = on, "simulcast layer switched");
                        }
                    }
                    continue;
                }
                event = self.track.poll(), if feedback_open => {
                    match event {
                        Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                            for ssrc in packets.iter().flat_map(|p| keyframe_request_ssrcs(p.as_ref())) {
                                let Some(layer) = self.layer_ssrcs.iter().position(|s| *s == ssrc) else { continue };
                                // At most one per 250 ms per layer; SFUs repeat them.
                                if last_forced[layer].is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
                                    debug!(ssrc, layer, "keyframe requested");
                                    source.request_keyframe(layer as u8);
                                    last_forced[layer] = Some(Instant::now());
                                }
                            }
                        }
                        Some(_) => {}
                        None => feedback_open = false,
                    }
                    continue;
                }
            }
            if *self.stop.borrow() {
                break;
            }
            if *self.muted.borrow() {
                continue;
            }
            let mut any_ok = false;
            for lf in source.next_frames(now_us()) {
                let layer = usize::from(lf.layer);
                let Some(packetizer) = packetizers.get_mut(layer) else { continue };
                let mut ok = true;
                for mut packet in packetizer.packetize(&lf.frame.data, lf.frame.rtp_timestamp) {
                    for (id, value) in [(mid_ext, &mid), (rid_ext, &rids[layer])] {
                        if let Some(id) = id {
                            if packet.header.set_extension(id, value.clone()).is_err() {
                                self.shared.sent.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    match self.track.write_rtp(packet).await {
                        Ok(()) => {
                            self.shared.sent.video_packets.fetch_add(1, Ordering::Relaxed);
                            if let Some(c) = self.shared.sent.layers.get(layer) {
                                c.packets.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            ok = false;
                            self.shared.sent.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if ok {
                    any_ok = true;
                    if let Some(c) = self.shared.sent.layers.get(layer) {
                        c.frames.fetch_add(1, Ordering::Relaxed);
                        if lf.frame.keyframe {
                            c.keyframes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            if any_ok {
                // One captured frame, however many layers carried it.
                lock(&self.shared.units).sent(MediaKind::Video, now_ms());
                self.shared.sent.video_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        debug!(ssrcs = ?self.layer_ssrcs, "simulcast sender stopped");
    }
}

/// The SSRCs a PLI or FIR asks a keyframe of.
fn keyframe_request_ssrcs(packet: &dyn rtc::rtcp::Packet) -> Vec<u32> {
    let any = packet.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        return vec![pli.media_ssrc];
    }
    if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
        return fir.fir.iter().map(|e| e.ssrc).collect();
    }
    Vec::new()
}

/// The negotiated ids of the `sdes:mid` and `sdes:rtp-stream-id` header extensions on `sender`.
async fn simulcast_extension_ids(sender: &Arc<dyn RtpSender>) -> (Option<u8>, Option<u8>) {
    let Ok(params) = sender.get_parameters().await else { return (None, None) };
    let id = |uri: &str| {
        params.rtp_parameters.header_extensions.iter().find(|e| e.uri == uri).and_then(|e| u8::try_from(e.id).ok())
    };
    (id("urn:ietf:params:rtp-hdrext:sdes:mid"), id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"))
}

// ---------------------------------------------------------------------------------------------
// Receiving

pub(crate) async fn run_reader(
    track: Arc<dyn TrackRemote>,
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<ClientEvent>,
    mut reading: watch::Receiver<bool>,
) {
    let kind = match track.kind().await {
        RtpCodecKind::Audio => MediaKind::Audio,
        _ => MediaKind::Video,
    };
    let mid = find_mid(&pc, &track).await.unwrap_or_default();
    debug!(%mid, %kind, "remote track");
    loop {
        if !*reading.borrow_and_update() {
            if reading.changed().await.is_err() {
                break;
            }
            continue;
        }
        let event = tokio::select! {
            e = track.poll() => e,
            r = reading.changed() => {
                if r.is_err() { break }
                continue;
            }
        };
        match event {
            Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                if let Some((track_id, kind)) = shared.on_rtp(&mid, kind, &packet) {
                    info!(track = %track_id, %kind, %mid, "media received");
                    let _ = events.send(ClientEvent::MediaReceived { track_id, kind });
                }
            }
            Some(TrackRemoteEvent::OnEnded) | None => break,
            Some(_) => {}
        }
    }
    debug!(%mid, "remote track ended");
}

/// The mid of the transceiver whose receiver delivers `track`.
async fn find_mid(pc: &Arc<dyn PeerConnection>, track: &Arc<dyn TrackRemote>) -> Option<String> {
    for t in pc.get_transceivers().await {
        if let Ok(Some(receiver)) = t.receiver().await {
            if Arc::ptr_eq(receiver.track(), track) {
                return t.mid().await.ok().flatten();
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The session task

struct Session {
    conn: SignalConnection,
    pc: Arc<dyn PeerConnection>,
    neg: Negotiation,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<ClientEvent>,
    pc_events: mpsc::UnboundedReceiver<PcEvent>,
    cmds: mpsc::UnboundedReceiver<Command>,
    publishers: Vec<Publisher>,
    options: ClientOptions,
    reading: watch::Receiver<bool>,
    connection: watch::Receiver<RTCPeerConnectionState>,
    /// Candidates wait until the first description went out.
    sdp_sent: bool,
    pending_candidates: Vec<ClientMessage>,
    leave_reason: Option<String>,
    readers: Vec<JoinHandle<()>>,
}

impl Session {
    fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
    }

    fn local_error(&self, what: &str, err: impl std::fmt::Display) {
        warn!(error = %err, "{what} failed");
        self.emit(ClientEvent::Error { code: "local".to_owned(), message: format!("{what}: {err}"), req_type: None });
    }

    async fn run(mut self) {
        let mut ping = tokio::time::interval(self.options.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        self.drive_offers().await;
        loop {
            tokio::select! {
                incoming = self.conn.recv() => match incoming {
                    Ok(Incoming::Message(msg)) => self.handle_server(msg).await,
                    Ok(Incoming::Invalid { error, text }) => {
                        warn!(%error, %text, "unparsable server message");
                    }
                    Ok(Incoming::Closed { code, reason }) => {
                        info!(?code, %reason, "signaling closed by server");
                        self.shutdown(code, reason).await;
                        return;
                    }
                    Err(e) => {
                        warn!(error = %e, "signaling failed");
                        self.shutdown(None, e.to_string()).await;
                        return;
                    }
                },
                Some(ev) = self.pc_events.recv() => self.handle_pc_event(ev).await,
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Leave(reply)) => {
                        self.leave().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.handle_command(cmd).await,
                    None => {
                        // The Client was dropped without leave().
                        self.leave().await;
                        return;
                    }
                },
                _ = ping.tick() => {
                    let ts = (now_us() / 1000).max(1);
                    if let Err(e) = self.conn.send(&ClientMessage::Ping { ts: ts.into() }).await {
                        warn!(error = %e, "ping failed");
                    }
                }
            }
            self.drive_offers().await;
        }
    }

    /// Adds a send-only transceiver for a new track of `kind` and asks for an offer.
    async fn publish(&mut self, kind: MediaKind) -> Result<(), ClientError> {
        if self.publishers.iter().any(|p| p.kind == kind && p.active) {
            return Err(ClientError::AlreadyPublished(kind));
        }
        let n = self.publishers.len();
        let publisher = start_publisher(&self.pc, &self.shared, &self.options, &self.connection, kind, n).await?;
        self.publishers.push(publisher);
        self.neg.request_offer();
        Ok(())
    }

    async fn unpublish(&mut self, kind: MediaKind) -> Result<(), ClientError> {
        let Some(i) = self.publishers.iter().position(|p| p.kind == kind && p.active) else {
            return Err(ClientError::NotPublished(kind));
        };
        let publisher = &mut self.publishers[i];
        let _ = publisher.stop.send(true);
        publisher.active = false;
        self.pc.remove_track(&publisher.sender).await?;
        info!(%kind, mid = ?publisher.mid, track = ?publisher.track_id, "unpublishing");
        self.neg.request_offer();
        Ok(())
    }

    async fn mute(&mut self, kind: MediaKind, muted: bool) -> Result<(), ClientError> {
        let Some(p) = self.publishers.iter().find(|p| p.kind == kind && p.active) else {
            return Err(ClientError::NotPublished(kind));
        };
        let Some(track_id) = p.track_id.clone() else {
            return Err(ClientError::NotAcknowledged(kind));
        };
        let _ = p.muted.send(muted);
        info!(%kind, track = %track_id, muted, "mute");
        self.conn.send(&ClientMessage::Mute { track_id, muted }).await.map_err(ClientError::from)
    }

    async fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Unpublish(kind, reply) => {
                let r = self.unpublish(kind).await;
                let _ = reply.send(r);
            }
            Command::Mute(kind, muted, reply) => {
                let r = self.mute(kind, muted).await;
                let _ = reply.send(r);
            }
            Command::Republish(kind, reply) => {
                let r = self.publish(kind).await;
                let _ = reply.send(r);
            }
            Command::Send(msg, reply) => {
                let r = self.conn.send(&msg).await.map_err(ClientError::from);
                let _ = reply.send(r);
            }
            Command::SendText(text, reply) => {
                let r = self.conn.send_text(text).await.map_err(ClientError::from);
                let _ = reply.send(r);
            }
            Command::Leave(_) => unreachable!("handled in run"),
        }
    }

    async fn handle_pc_event(&mut self, ev: PcEvent) {
        match ev {
            PcEvent::Candidate(init) => {
                let msg = ClientMessage::Candidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid.filter(|m| !m.is_empty()),
                };
                self.send_candidate(msg).await;
            }
            PcEvent::GatheringComplete => {
                let msg = ClientMessage::Candidate { candidate: String::new(), sdp_mid: None };
                self.send_candidate(msg).await;
            }
            PcEvent::State(state) => {
                info!(%state, "peer connection");
                self.emit(ClientEvent::ConnectionState(state.to_string()));
            }
            PcEvent::Track(track) => {
                let reader = tokio::spawn(run_reader(
                    track,
                    Arc::clone(&self.pc),
                    Arc::clone(&self.shared),
                    self.events.clone(),
                    self.reading.clone(),
                ));
                self.readers.retain(|r| !r.is_finished());
                self.readers.push(reader);
            }
        }
    }

    async fn send_candidate(&mut self, msg: ClientMessage) {
        if !self.sdp_sent {
            self.pending_candidates.push(msg);
            return;
        }
        if let Err(e) = self.conn.send(&msg).await {
            warn!(error = %e, "sending a candidate failed");
        }
    }

    async fn description_sent(&mut self) {
        if self.sdp_sent {
            return;
        }
        self.sdp_sent = true;
        for msg in std::mem::take(&mut self.pending_candidates) {
            if let Err(e) = self.conn.send(&msg).await {
                warn!(error = %e, "sending a candidate failed");
            }
        }
    }

    async fn rollback(&self) {
        match RTCSessionDescription::rollback(None) {
            Ok(rb) => {
                if let Err(e) = self.pc.set_local_description(rb).await {
                    debug!(error = %e, "rollback failed");
                }
            }
            Err(e) => debug!(error = %e, "cannot build a rollback"),
        }
    }

    async fn drive_offers(&mut self) {
        let Some(id) = self.neg.poll_offer() else {
            return;
        };
        if let Err(e) = self.send_offer(id).await {
            self.neg.handle_offer_not_sent();
            self.rollback().await;
            self.local_error("creating an offer", e);
        }
    }

    async fn send_offer(&mut self, id: u64) -> Result<(), ClientError> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer.clone()).await?;
        let mut tracks = Vec::new();
        for p in &mut self.publishers {
            if p.mid.is_none() {
                p.mid = p.transceiver.mid().await.ok().flatten();
            }
            if p.active {
                if let Some(mid) = &p.mid {
                    tracks.push(OfferTrack {
                        mid: mid.clone(),
                        source: Some(match p.kind {
                            MediaKind::Audio => TrackSource::Microphone,
                            MediaKind::Video => TrackSource::Camera,
                        }),
                        name: Some(format!("{}-{}", self.shared.identity, p.kind)),
                    });
                }
            }
        }
        let sdp = self.pc.local_description().await.map(|d| d.sdp).unwrap_or(offer.sdp);
        debug!(id, tracks = tracks.len(), "sending offer");
        trace!(id, %sdp, "our offer");
        self.conn.send(&ClientMessage::Offer { id, sdp, tracks }).await?;
        self.description_sent().await;
        Ok(())
    }

    /// The server's SDP, its candidates pointed at `udp_via` when set.
    fn server_sdp(&self, sdp: String) -> String {
        match self.options.udp_via {
            Some(via) => rewrite_candidates(&sdp, via),
            None => sdp,
        }
    }

    async fn answer_offer(&mut self, id: u64, sdp: String) -> Result<(), ClientError> {
        let sdp = self.server_sdp(sdp);
        trace!(id, %sdp, "server offer");
        let offer = RTCSessionDescription::offer(sdp)?;
        self.pc.set_remote_description(offer).await?;
        let result = async {
            let answer = self.pc.create_answer(None).await?;
            self.pc.set_local_description(answer.clone()).await?;
            let sdp = self.pc.local_description().await.map(|d| d.sdp).unwrap_or(answer.sdp);
            Ok::<_, ClientError>(sdp)
        }
        .await;
        let sdp = match result {
            Ok(sdp) => sdp,
            Err(e) => {
                self.rollback().await;
                return Err(e);
            }
        };
        debug!(id, "sending answer");
        trace!(id, %sdp, "our answer");
        self.conn.send(&ClientMessage::Answer { id, sdp }).await?;
        self.description_sent().await;
        Ok(())
    }

    async fn apply_answer(&mut self, sdp: String) -> Result<(), ClientError> {
        let sdp = self.server_sdp(sdp);
        trace!(%sdp, "server answer");
        let answer = RTCSessionDescription::answer(sdp)?;
        self.pc.set_remote_description(answer).await?;
        for p in &self.publishers {
            if p.active && p.mid.is_some() {
                let _ = p.negotiated.send(true);
            }
        }
        Ok(())
    }

    async fn handle_server(&mut self, msg: ServerMessage) {
        match msg {
            ServerMessage::Offer { id, sdp } => match self.neg.handle_server_offer(id) {
                ServerOfferAction::IgnoreGlare => {
                    debug!(id, outstanding = ?self.neg.outstanding(), "ignoring server offer (glare)");
                }
                ServerOfferAction::Answer => {
                    if let Err(e) = self.answer_offer(id, sdp).await {
                        self.local_error("answering a server offer", e);
                    }
                }
            },
            ServerMessage::Answer { id, sdp } => match self.neg.handle_answer(id) {
                AnswerAction::Apply => {
                    if let Err(e) = self.apply_answer(sdp).await {
                        self.rollback().await;
                        self.local_error("applying the server's answer", e);
                    }
                }
                AnswerAction::Stale => debug!(id, "ignoring stale answer"),
            },
            ServerMessage::Subscribed { track_id, participant_id, kind, mid } => {
                let sub = Subscription { track_id, participant_id, kind, mid };
                info!(track = %sub.track_id, mid = %sub.mid, kind = %sub.kind, "subscribed");
                lock(&self.shared.rx).subs.handle_subscribed(sub.clone());
                if let (Some((width, height)), MediaKind::Video) = (self.options.max_video_size, sub.kind) {
                    let msg = ClientMessage::TrackSettings {
                        track_id: sub.track_id.clone(),
                        width: Some(width),
                        height: Some(height),
                        hidden: false,
                    };
                    debug!(track = %sub.track_id, width, height, "track settings");
                    if let Err(e) = self.conn.send(&msg).await {
                        warn!(error = %e, "sending track_settings failed");
                    }
                }
                self.emit(ClientEvent::TrackSubscribed(sub));
            }
            ServerMessage::Unsubscribed { track_id, reason } => {
                info!(track = %track_id, %reason, "unsubscribed");
                lock(&self.shared.rx).subs.handle_unsubscribed(&track_id);
                self.emit(ClientEvent::TrackUnsubscribed { track_id, reason: reason.into_owned() });
            }
            ServerMessage::TrackPublished { participant_id, track } => {
                let own = participant_id == self.shared.participant_id;
                if own {
                    if let Some(p) = self.publishers.iter_mut().find(|p| p.mid.is_some() && p.mid == track.mid) {
                        p.track_id = Some(track.id.clone());
                    }
                    info!(track = %track.id, mid = ?track.mid, kind = %track.kind, "published");
                }
                self.emit(ClientEvent::TrackPublished { participant_id, track, own });
            }
            ServerMessage::TrackUnpublished { participant_id, track_id } => {
                self.emit(ClientEvent::TrackUnpublished { participant_id, track_id })
            }
            ServerMessage::TrackMuted { participant_id, track_id, muted } => {
                self.emit(ClientEvent::TrackMuted { participant_id, track_id, muted })
            }
            ServerMessage::ParticipantJoined { participant } => self.emit(ClientEvent::ParticipantJoined(participant)),
            ServerMessage::ParticipantLeft { participant_id, reason } => {
                self.emit(ClientEvent::ParticipantLeft { participant_id, reason: reason.into_owned() })
            }
            ServerMessage::Error { code, message, req_type, .. } => {
                warn!(%code, %message, ?req_type, "server error");
                if req_type.as_deref() == Some("offer") && self.neg.outstanding().is_some() {
                    // Our offer was refused (permission_denied, sdp_rejected): roll it back and
                    // do not retry the same change.
                    self.neg.handle_offer_failed(false);
                    self.rollback().await;
                }
                self.emit(ClientEvent::Error { code: code.name(), message, req_type });
            }
            ServerMessage::Leave { reason } => {
                info!(%reason, "server says leave");
                self.leave_reason = Some(reason.into_owned());
            }
            ServerMessage::SetLayers { track_id, layers } => self.set_layers(track_id, layers),
            ServerMessage::StreamState { track_id, state, layer, reason } => {
                let state = state.name().to_string();
                let layer = layer.flatten().map(|l| l.into_owned());
                let reason = reason.map(|r| r.into_owned());
                info!(track = %track_id, %state, ?layer, ?reason, "stream state");
                lock(&self.shared.stream_states).push(StreamStateReport {
                    at_ms: now_ms(),
                    track_id: track_id.clone(),
                    state: state.clone(),
                    layer: layer.clone(),
                    reason: reason.clone(),
                });
                self.emit(ClientEvent::StreamState { track_id, state, layer, reason });
            }
            ServerMessage::Candidate { candidate, sdp_mid } => {
                let candidate = match self.options.udp_via {
                    Some(via) => rewrite_candidate(&candidate, via),
                    None => candidate,
                };
                let init = RTCIceCandidateInit { candidate, sdp_mid, ..Default::default() };
                if let Err(e) = self.pc.add_ice_candidate(init).await {
                    self.local_error("adding a server candidate", e);
                }
            }
            ServerMessage::Pong { .. } => trace!("pong"),
            ServerMessage::Joined(_) => warn!("unexpected second joined"),
            ServerMessage::Unknown => debug!("unknown server message type"),
            // Chat, permissions and room metadata: this media client does not act on them.
            other => debug!(r#type = other.type_name(), "server message not handled"),
        }
    }

    /// `set_layers`: pause or resume the layers of our simulcast track `track_id`. Layers the
    /// message does not name keep their state.
    fn set_layers(&mut self, track_id: String, layers: Vec<LayerActive>) {
        info!(track = %track_id, ?layers, "set_layers");
        lock(&self.shared.set_layers).push(SetLayersReport {
            at_ms: now_ms(),
            track_id: track_id.clone(),
            layers: layers.clone(),
        });
        let publisher = self.publishers.iter().find(|p| p.active && p.track_id.as_deref() == Some(track_id.as_str()));
        match (publisher.and_then(|p| p.layers.as_ref()), &self.options.simulcast) {
            (Some(tx), Some(config)) => {
                tx.send_modify(|active| {
                    for l in &layers {
                        if let Some(i) = config.index_of(&l.rid) {
                            if let Some(a) = active.get_mut(usize::from(i)) {
                                *a = l.active;
                            }
                            if let Some(c) = self.shared.sent.layers.get(usize::from(i)) {
                                c.active.store(l.active, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
            _ => warn!(track = %track_id, "set_layers for a track that is not our simulcast track"),
        }
        self.emit(ClientEvent::SetLayers { track_id, layers });
    }

    async fn leave(&mut self) {
        info!("leaving");
        let _ = self.conn.send(&ClientMessage::Leave).await;
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        let (code, reason);
        loop {
            tokio::select! {
                r = self.conn.recv() => match r {
                    Ok(Incoming::Closed { code: c, reason: r }) => {
                        code = c;
                        reason = r;
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        code = None;
                        reason = e.to_string();
                        break;
                    }
                },
                _ = &mut deadline => {
                    self.conn.close().await;
                    code = None;
                    reason = "no close from server".to_owned();
                    break;
                }
            }
        }
        self.shutdown(code, reason).await;
    }

    async fn shutdown(&mut self, code: Option<u16>, reason: String) {
        for p in &self.publishers {
            let _ = p.stop.send(true);
        }
        if let Err(e) = self.pc.close().await {
            debug!(error = %e, "closing the peer connection");
        }
        for p in &self.publishers {
            p.task.abort();
        }
        for r in &self.readers {
            r.abort();
        }
        let leave_reason = self.leave_reason.take();
        self.emit(ClientEvent::Closed { code, reason, leave_reason });
    }
}
