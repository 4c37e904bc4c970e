//! One participant's WebRTC connection: a str0m [`Rtc`] in RTP mode plus what the SFU knows about it.
//!
//! A [`Peer`] is both a publisher (the tracks it sends us, [`TrackIn`]) and a subscriber (the [`DownTrack`]s we
//! send it). It is sans-I/O like the `Rtc` it wraps: every input comes with the time, and every effect comes out of
//! [`Peer::poll_output`] — datagrams to send, media to forward to other peers, keyframe requests to route upstream,
//! and signaling events for the participant's WebSocket.
//!
//! # Contract
//!
//! **After every `handle_*` call or mutator, drain [`Peer::poll_output`] until it returns [`PeerOutput::Timeout`],
//! before calling anything else.** This is str0m's drain rule, lifted one level: the peer may have produced an SDP
//! offer, packets or events that must leave before the next input is applied. At the timeout instant (or earlier,
//! harmlessly) call [`Peer::handle_timeout`].
//!
//! # Negotiation
//!
//! The client offers what it publishes; the peer offers what the client receives. When both offer at once, the
//! peer is the polite side: accepting a client offer abandons its own outstanding offer (str0m invalidates the
//! pending change), and the down-tracks that offer carried are offered again afterwards. Offers carry ids; an
//! answer whose id is not the outstanding offer's is ignored.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::Vp8Descriptor;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use tracing::{debug, info, warn};

use crate::allocator::{Allocator, Priority};
use crate::downstream_loss::DownstreamLoss;
use crate::downtrack::{DownTrack, DownTrackState, StreamState};
use crate::forward_delay::SendStamps;
use crate::id::{PeerId, TrackId};
use crate::keyframe::{starts_keyframe, KeyframeStart};
use crate::layer::{spatial_of, LayerTracker};
/// Re-exported at its old path: the packet moved to [`crate::packet`], below both `peer` and `downtrack`.
pub use crate::packet::ForwardPacket;

/// Retransmission cache per forwarded video stream: packets (also given to str0m's config, so the cache it makes
/// when the stream opens is the same size) and age (str0m's default).
const RTX_CACHE_PACKETS: usize = 1024;
const RTX_CACHE_AGE: std::time::Duration = std::time::Duration::from_secs(3);
/// str0m stops answering NACKs while retransmitted bytes exceed this share of all it sends to a stream. Its default,
/// 0.15, stalls repair at exactly the loss rates an SFU must get through (at 15 % random loss the honest share is
/// already 15 %; media-tests measured freezes of up to 1 s at 5 % loss with a client that asked twice). Without a
/// cap, retransmissions compete with the media on a congested link and the down-switch comes later (the simulated
/// bottleneck of tests/allocation.rs: 1.33 s at 0.15, 1.53 s at 0.3, over its 2 s limit at 0.5). 0.3 repairs up to
/// ~25 % random loss and still stops a retransmission storm.
const RTX_RATIO_CAP: Option<f32> = Some(0.3);

/// A relay's ICE checks (full ICE, [`PeerConfig::relay`]): the longest wait between two, and how many may go
/// unanswered before the relay counts as cut.
const RELAY_STUN_RTO_MAX: Duration = Duration::from_secs(1);
const RELAY_STUN_RETRANSMITS: usize = 6;

/// How a peer is set up.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// May the client send media?
    pub can_publish: bool,
    /// May the client receive media?
    pub can_subscribe: bool,
    /// The shared UDP socket's address, announced as a host candidate.
    pub udp_addr: SocketAddr,
    /// The ICE-TCP listener's address, announced as a passive TCP host candidate (RFC 6544): clients whose UDP is
    /// blocked connect to it. Its type preference is below UDP's, so UDP wins whenever it works.
    pub tcp_addr: Option<SocketAddr>,
    /// Minimum time between two keyframe requests sent upstream for one track.
    pub keyframe_request_interval: Duration,
    /// Send-side bandwidth estimation and stream allocation, starting from this estimate; `None`: off (every
    /// subscriber gets what its settings want).
    pub bwe_initial: Option<Bitrate>,
    /// The client makes every offer (a WHEP viewer): the peer never offers. Down-tracks added before the client's
    /// offer open on the m-lines it offers to receive, in order and by kind, when that offer is answered.
    pub client_offers: bool,
    /// The sending side of a relay to another node ([`crate::relay`]): full ICE from `udp_addr` (a socket of its
    /// own), every layer of each track on its own simulcast stream, the publisher's numbering. Set `bwe_initial` to
    /// `None`: the relay does not choose layers.
    pub relay: bool,
}

/// How often the stream allocator decides again (besides on every new estimate and settings change).
pub const ALLOCATE_INTERVAL: Duration = Duration::from_millis(250);

/// How long a simulcast layer nobody needs keeps running before the publisher is told to stop it (dynacast). A
/// layer somebody needs again is resumed at once.
pub const DYNACAST_DELAY: Duration = Duration::from_secs(3);

/// How often a publisher's audio levels are reported (the loudest packet of each period).
pub const AUDIO_LEVEL_PERIOD: Duration = Duration::from_millis(100);

/// Why a peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// ICE or DTLS failed or timed out.
    Disconnected,
    /// The engine closed it on request.
    Requested,
    /// A bug (panic) inside its state machine; only this peer was torn down.
    Fault,
}

/// Events for the participant's signaling session.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// Answer to the client's offer `id`.
    Answer { id: u64, sdp: String },
    /// A server offer; the client answers with the same `id`.
    Offer { id: u64, sdp: String },
    /// The client's offer could not be applied; the peer connection is unchanged.
    OfferRejected { id: u64, why: OfferRejection, reason: String },
    /// A new published track from this client's m-line `mid`.
    TrackPublished { track: TrackId, mid: String, kind: MediaKind },
    /// The client stopped publishing this track.
    TrackUnpublished { track: TrackId },
    /// The down-track for `track` will arrive on m-line `mid` (sent before the offer that adds it).
    Subscribed { track: TrackId, mid: String },
    /// The loudest audio level (dBov, RFC 6464) of an audio track over the last [`AUDIO_LEVEL_PERIOD`].
    AudioLevel { track: TrackId, dbov: i8 },
    /// What this subscriber receives of video `track` changed: another layer, paused or resumed.
    StreamState { track: TrackId, state: StreamState },
    /// Dynacast: which simulcast layers (by RID) of `track`, published by this peer, anyone needs. The client
    /// stops encoding the inactive ones.
    PublishLayers { track: TrackId, layers: Vec<(String, bool)> },
    /// ICE and DTLS are up.
    Connected,
    /// The peer is finished; the engine drops it after this event.
    Closed { reason: CloseReason },
}

/// Why a client offer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferRejection {
    /// The SDP could not be parsed or negotiated.
    Sdp,
    /// The offer sends media and the peer may not publish.
    NotAllowed,
}

/// What [`Peer::poll_output`] returns.
#[derive(Debug)]
pub enum PeerOutput {
    /// Call [`Peer::handle_timeout`] at this instant. The drain is complete.
    Timeout(Instant),
    /// A datagram for the UDP socket.
    Transmit(Transmit),
    /// Media published by this peer, to fan out to subscribers.
    Forward(Arc<ForwardPacket>),
    /// A subscriber of `track` on this peer needs a keyframe of spatial `layer`; route it to the publisher.
    KeyframeRequest { track: TrackId, kind: KeyframeRequestKind, layer: u8 },
    /// This subscriber now needs `track` up to spatial layer `demand` (`None`: not at all); route it to the
    /// publisher ([`Peer::handle_layer_demand`]).
    LayerDemand { track: TrackId, demand: Option<u8> },
    /// The loss (a fraction) this subscriber's receiver reports show for audio `track`; route it to the publisher
    /// ([`Peer::handle_subscriber_loss`]). At most every couple of seconds per track, see
    /// [`crate::downstream_loss`].
    SubscriberLoss { track: TrackId, loss: f32 },
    /// A signaling event.
    Event(PeerEvent),
}

/// A track this peer publishes.
#[derive(Debug)]
struct TrackIn {
    id: TrackId,
    kind: MediaKind,
    /// Simulcast RIDs in SDP order (empty without simulcast).
    rids: Vec<String>,
    /// When each spatial layer last carried media.
    layers: LayerTracker,
    /// Frame size of each layer, from its last keyframe.
    sizes: crate::layer::LayerSizes,
    /// Audio: the loudest level of the current period, and when the period started.
    level: Option<(i8, Instant)>,
    /// Cache of the publisher's codec parameters by payload type.
    params: Option<PayloadParams>,
    /// Per spatial layer: the last keyframe request sent upstream.
    last_keyframe_request: [Option<Instant>; 3],
    /// Per spatial layer: a request arrived inside the throttle interval; send it when the interval ends, unless
    /// a keyframe of that layer comes first.
    keyframe_pending: [bool; 3],
    /// Dynacast: the highest layer each subscriber needs, the layers the client was last told to send (bit
    /// `i` = layer `i`), and since when fewer have been needed.
    demands: HashMap<PeerId, u8>,
    active: u8,
    fewer_since: Option<Instant>,
    /// Audio: the loss its subscribers report, and the floor last set on the receiver reports sent upstream.
    downstream_loss: DownstreamLoss,
    loss_floor: f32,
    /// Has a RED packet arrived yet? (Logged once.)
    red_seen: bool,
}

impl TrackIn {
    /// A track just published on an m-line, with its simulcast RIDs in SDP order (none without simulcast). All its
    /// layers are taken to be running until dynacast says otherwise.
    fn new(id: TrackId, kind: MediaKind, rids: Vec<String>) -> TrackIn {
        TrackIn {
            id,
            kind,
            rids,
            layers: LayerTracker::default(),
            sizes: [None; 3],
            level: None,
            params: None,
            last_keyframe_request: [None; 3],
            keyframe_pending: [false; 3],
            demands: HashMap::new(),
            active: 0b111,
            fewer_since: None,
            downstream_loss: DownstreamLoss::default(),
            loss_floor: 0.0,
            red_seen: false,
        }
    }

    /// Dynacast at `now`: the layers to tell the client to send, when that changes. The lowest layer always
    /// runs, so that a new subscriber starts at once.
    fn dynacast(&mut self, now: Instant) -> Option<Vec<(String, bool)>> {
        if self.rids.len() < 2 {
            return None;
        }
        let top = self.demands.values().copied().max().unwrap_or(0).min(crate::layer::MAX_SPATIAL);
        let need: u8 = (1u8 << (top + 1)) - 1;
        if need == self.active {
            self.fewer_since = None;
            return None;
        }
        if need < self.active {
            let since = *self.fewer_since.get_or_insert(now);
            if now.saturating_duration_since(since) < DYNACAST_DELAY {
                return None;
            }
        }
        self.active = need;
        self.fewer_since = None;
        Some(self.rids.iter().map(|r| (r.clone(), need & (1 << spatial_of(r, &self.rids)) != 0)).collect())
    }

    fn rid_of(&self, layer: u8) -> Option<Rid> {
        self.rids.iter().find(|r| spatial_of(r, &self.rids) == layer).map(|r| Rid::from(r.as_str()))
    }
}

/// See the module doc.
pub struct Peer {
    id: PeerId,
    rtc: Rtc,
    config: PeerConfig,
    tracks_in: HashMap<Mid, TrackIn>,
    downtracks: Vec<DownTrack>,
    /// Our outstanding offer: its id and str0m's pending change.
    pending: Option<(u64, SdpPendingOffer)>,
    next_offer_id: u64,
    /// Has the client ever made or answered an offer? (Before, we cannot know whether it will offer first.)
    negotiated_once: bool,
    queue: VecDeque<PeerOutput>,
    closed: bool,
    connected: bool,
    /// RTP packets received from the client / written to it (for the close log and metrics).
    rtp_in: u64,
    rtp_out: u64,
    /// Divides this subscriber's downlink among its down-tracks.
    allocator: Allocator,
    next_allocation: Option<Instant>,
    /// The latest time seen (events from str0m carry none).
    now: Instant,
    /// Has the client's TWCC feedback made an estimate possible? If not by `twcc_deadline` (a second after the
    /// peer connected with a down-track open), estimation is switched off for this peer: str0m would otherwise pace
    /// everything at twice the initial estimate forever.
    twcc: bool,
    twcc_deadline: Option<Instant>,
    twcc_decided: bool,
    /// Has a down-track ever opened (negotiated)? With `connected`, it starts the TWCC deadline.
    downtrack_opened: bool,
    /// Media was written since the last timeout. With BWE on, str0m moves written packets to its pacer only in
    /// `handle_timeout`, so the next timeout is due at once: the worker runs it once per cycle, after the whole
    /// batch of input, rather than once per packet.
    flush_due: bool,
    /// Arrivals of the packets written to this peer and not yet sent, for the forwarding-delay histogram.
    stamps: SendStamps,
    /// When the floors of the loss reported upstream for audio tracks are next brought up to date (while any
    /// subscriber's loss still counts: it decays with time).
    next_loss_update: Option<Instant>,
}

/// How often the loss floor of a published audio track follows its subscribers' decaying loss.
const LOSS_UPDATE_INTERVAL: Duration = Duration::from_millis(500);

/// How long after it is connected with its first down-track open a subscriber must have made a TWCC estimate
/// possible.
const TWCC_GRACE: Duration = Duration::from_secs(1);

impl Peer {
    /// A new peer answering on the shared UDP socket. `ice` are its local ICE credentials; their `ufrag` is how
    /// the UDP demultiplexer recognises the client's first STUN request.
    pub fn new(id: PeerId, config: PeerConfig, ice: IceCreds, now: Instant) -> Peer {
        let mut rtc_config = RtcConfig::new()
            .set_rtp_mode(true)
            // A relay's origin side runs full ICE towards the edge node, which is ICE-lite like every engine peer.
            .set_ice_lite(!config.relay)
            .set_local_ice_credentials(ice)
            .clear_codecs()
            // Opus with RED (RFC 2198) where the client offers it too; str0m lists RED before Opus in the answer,
            // which is what makes Chrome send it (see docs/architecture.md, "Audio redundancy").
            .enable_opus(true, true)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            .enable_bwe(config.bwe_initial)
            .set_send_buffer_video(RTX_CACHE_PACKETS)
            // Every packet on an SSRC the subscriber's SDP declares: no SSRC-0 probes (Pion takes them for an
            // unknown incoming stream). Probes ride on video RTX.
            .set_probe_without_media(false)
            // Egress stats carry the subscriber's reported loss: the allocator's second opinion, and for audio what
            // is passed on to the publisher (`downstream_loss`).
            .set_stats_interval(Some(Duration::from_millis(500)))
            // Receiver reports on published audio every second rather than every 5 s: they carry the subscribers'
            // loss to the publisher's Opus encoder.
            .set_rtcp_report_interval_audio(Duration::from_secs(1));
        if config.relay {
            // Between two nodes a cut must show in seconds, not in the ~20 s a browser-facing agent allows: the
            // edge then asks again (possibly from another origin). Checks every second; six unanswered in a row end it.
            rtc_config.set_max_stun_rto(RELAY_STUN_RTO_MAX);
            rtc_config.set_max_stun_retransmits(RELAY_STUN_RETRANSMITS);
        }
        let mut rtc = rtc_config.build(now);
        let candidate =
            Candidate::host(config.udp_addr, Protocol::Udp).expect("a UDP host candidate from a socket address");
        rtc.add_local_candidate(candidate);
        if let Some(addr) = config.tcp_addr.filter(|_| !config.relay) {
            match Candidate::builder().tcp().host(addr).tcptype(TcpType::Passive).build() {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, error = %e, "no ICE-TCP candidate"),
            }
        }
        Peer {
            id,
            rtc,
            config,
            tracks_in: HashMap::new(),
            downtracks: Vec::new(),
            pending: None,
            next_offer_id: 1,
            negotiated_once: false,
            queue: VecDeque::new(),
            closed: false,
            connected: false,
            rtp_in: 0,
            rtp_out: 0,
            allocator: Allocator::default(),
            next_allocation: None,
            now,
            twcc: false,
            twcc_deadline: None,
            twcc_decided: false,
            downtrack_opened: false,
            flush_due: false,
            stamps: SendStamps::new(now),
            next_loss_update: None,
        }
    }

    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Is the peer finished (its `Closed` event emitted)?
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Tracks this peer publishes.
    pub fn published_tracks(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.tracks_in.values().map(|t| t.id)
    }

    /// Tracks this peer receives (or is negotiating to receive).
    pub fn subscribed_tracks(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.downtracks.iter().filter(|d| !d.removed).map(|d| d.track)
    }

    /// A datagram from the network (`proto` UDP), or a frame of an ICE-TCP connection (`proto` TCP).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        if self.closed {
            return;
        }
        let Ok(contents) = data.try_into() else {
            debug!(peer = %self.id, len = data.len(), "unrecognised datagram dropped");
            return;
        };
        self.now = self.now.max(now);
        let input = Input::Receive(now, Receive { proto, source, destination, contents });
        if let Err(e) = self.rtc.handle_input(input) {
            debug!(peer = %self.id, error = %e, "input rejected");
        }
    }

    /// Time passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.now = self.now.max(now);
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            warn!(peer = %self.id, error = %e, "timeout handling failed; closing");
            self.close(CloseReason::Disconnected);
            return;
        }
        let interval = self.config.keyframe_request_interval;
        let mut due = Vec::new();
        for (mid, t) in &self.tracks_in {
            for layer in 0..3u8 {
                let l = usize::from(layer);
                if t.keyframe_pending[l] && t.last_keyframe_request[l].is_none_or(|last| last + interval <= now) {
                    due.push((*mid, layer));
                }
            }
        }
        for (mid, layer) in due {
            self.request_keyframe(now, mid, KeyframeRequestKind::Pli, layer);
        }
        if self.twcc_deadline.is_some_and(|t| t <= now) {
            self.twcc_deadline = None;
            self.twcc_decided = true;
            if !self.twcc {
                info!(peer = %self.id, "no TWCC feedback from this subscriber: bandwidth estimation and pacing off");
                self.rtc.bwe().reset(Bitrate::gbps(10));
            }
        }
        if self.next_allocation.is_some_and(|t| t <= now) {
            self.allocate(now);
        }
        let mut changed = Vec::new();
        for t in self.tracks_in.values_mut() {
            if let Some(layers) = t.dynacast(now) {
                changed.push((t.id, layers));
            }
        }
        for (track, layers) in changed {
            self.queue.push_back(PeerOutput::Event(PeerEvent::PublishLayers { track, layers }));
        }
        if self.next_loss_update.is_some_and(|t| t <= now) {
            self.update_loss_floors(now);
        }
    }

    /// A subscriber (`subscriber`) of audio `track`, which this peer publishes, reports `loss`. The receiver
    /// reports sent to this publisher about the track carry at least the loss its subscribers see (see
    /// [`crate::downstream_loss`]), so that its Opus encoder adds in-band FEC.
    pub fn handle_subscriber_loss(&mut self, now: Instant, track: TrackId, subscriber: PeerId, loss: f32) {
        let Some(t) = self.tracks_in.values_mut().find(|t| t.id == track) else { return };
        if t.kind != MediaKind::Audio {
            return;
        }
        t.downstream_loss.handle_report(now, subscriber, loss);
        self.update_loss_floors(now);
    }

    /// Set each published audio track's floor of reported loss from its subscribers' loss at `now`.
    fn update_loss_floors(&mut self, now: Instant) {
        let mut active = false;
        let mut api = self.rtc.direct_api();
        for (mid, t) in &mut self.tracks_in {
            if t.kind != MediaKind::Audio {
                continue;
            }
            let floor = t.downstream_loss.floor(now);
            active |= t.downstream_loss.is_active();
            if (floor - t.loss_floor).abs() < 0.001 {
                continue;
            }
            if let Some(stream) = api.stream_rx_by_mid(*mid, None) {
                stream.set_reported_loss_floor(floor);
                debug!(peer = %self.id, track = %t.id, floor, "floor of the loss reported upstream follows the subscribers'");
                t.loss_floor = floor;
            }
        }
        self.next_loss_update = active.then_some(now + LOSS_UPDATE_INTERVAL);
    }

    /// Start the wait for TWCC feedback once the peer is connected and a down-track is open (see [`TWCC_GRACE`]).
    fn arm_twcc_deadline(&mut self, now: Instant) {
        if self.connected && self.downtrack_opened && !self.twcc_decided && self.config.bwe_initial.is_some() {
            self.twcc_deadline.get_or_insert(now + TWCC_GRACE);
        }
    }

    /// Run the stream allocator now and apply its decision: layers, pauses, and what to ask the estimator for.
    fn allocate(&mut self, now: Instant) {
        self.next_allocation = if self.downtracks.is_empty() { None } else { Some(now + ALLOCATE_INTERVAL) };
        if self.config.bwe_initial.is_none() {
            self.report_changes();
            return;
        }
        let inputs: Vec<_> = self.downtracks.iter().filter_map(|d| d.allocator_input()).collect();
        let decision = self.allocator.update(now, &inputs);
        for (track, allocation) in decision.changes {
            if let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == track) {
                debug!(peer = %self.id, %track, ?allocation, estimate = ?self.allocator.estimate(), "allocation");
                dt.allocation = allocation;
            }
        }
        if let Some(bps) = decision.reset_estimate {
            debug!(peer = %self.id, bps, "estimator restarted from the proven estimate");
            self.rtc.bwe().reset(Bitrate::bps(bps));
        }
        if let Some(wish) = decision.wish {
            debug!(peer = %self.id, ?wish, "bitrate wish");
            self.rtc.bwe().set_bitrate(Bitrate::bps(wish.min), Bitrate::bps(wish.desired));
        }
        self.report_changes();
    }

    /// Tell the subscriber and the publishers what changed for each down-track.
    fn report_changes(&mut self) {
        for dt in &mut self.downtracks {
            if let Some(state) = dt.take_state_change() {
                self.queue.push_back(PeerOutput::Event(PeerEvent::StreamState { track: dt.track, state }));
            }
            if let Some(demand) = dt.take_demand_change() {
                self.queue.push_back(PeerOutput::LayerDemand { track: dt.track, demand });
            }
        }
    }

    /// A subscriber (`subscriber`) of `track`, which this peer publishes, now needs it up to layer `demand`
    /// (`None`: not at all). Dynacast: the client is told which layers to send.
    pub fn handle_layer_demand(&mut self, now: Instant, track: TrackId, subscriber: PeerId, demand: Option<u8>) {
        let Some(t) = self.tracks_in.values_mut().find(|t| t.id == track) else { return };
        match demand {
            Some(d) => t.demands.insert(subscriber, d),
            None => t.demands.remove(&subscriber),
        };
        if let Some(layers) = t.dynacast(now) {
            self.queue.push_back(PeerOutput::Event(PeerEvent::PublishLayers { track, layers }));
        }
    }

    /// The client's SDP offer `id` (it adds, changes or removes what it publishes).
    pub fn handle_offer(&mut self, now: Instant, id: u64, sdp: &str) {
        if self.closed {
            return;
        }
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(o) => o,
            Err(e) => {
                self.queue.push_back(PeerOutput::Event(PeerEvent::OfferRejected {
                    id,
                    why: OfferRejection::Sdp,
                    reason: e.to_string(),
                }));
                return;
            }
        };
        if !self.config.can_publish && offer_sends_media(&offer) {
            self.queue.push_back(PeerOutput::Event(PeerEvent::OfferRejected {
                id,
                why: OfferRejection::NotAllowed,
                reason: "this token may not publish".into(),
            }));
            return;
        }
        let offered = if self.config.client_offers { receiving_mlines(&offer.to_sdp_string()) } else { Vec::new() };
        // Polite side: our own outstanding offer, if any, is abandoned by accept_offer.
        let had_pending = self.pending.take().is_some();
        match self.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                self.negotiated_once = true;
                if had_pending {
                    debug!(peer = %self.id, "glare: abandoned our offer for the client's");
                }
                for dt in &mut self.downtracks {
                    dt.rollback();
                }
                if self.config.client_offers {
                    self.open_on_offered(now, &offered);
                }
                self.queue.push_back(PeerOutput::Event(PeerEvent::Answer { id, sdp: answer.to_sdp_string() }));
                // MediaAdded events come out of the Rtc as we drain; direction changes we check here.
                self.drain_rtc(now);
                self.check_unpublished();
            }
            Err(e) => {
                self.queue.push_back(PeerOutput::Event(PeerEvent::OfferRejected {
                    id,
                    why: OfferRejection::Sdp,
                    reason: e.to_string(),
                }));
                // accept_offer invalidated our pending offer even on failure; offer again.
                for dt in &mut self.downtracks {
                    dt.rollback();
                }
            }
        }
        self.negotiate_if_needed();
    }

    /// Open the down-tracks waiting to be offered on the m-lines the client's offer (just accepted) asks to
    /// receive on: in order, each on the first free m-line of its kind that we now send on.
    fn open_on_offered(&mut self, now: Instant, offered: &[(MediaKind, Mid)]) {
        let rtc = &self.rtc;
        let taken: Vec<Mid> = self.downtracks.iter().filter_map(|d| d.mid()).collect();
        let mut free: Vec<(MediaKind, Mid)> = offered
            .iter()
            .filter(|(_, mid)| !taken.contains(mid))
            .filter(|(_, mid)| rtc.media(*mid).is_some_and(|m| m.direction().is_sending()))
            .copied()
            .collect();
        let mut opened = false;
        for dt in &mut self.downtracks {
            if dt.state != DownTrackState::ToOpen {
                continue;
            }
            let Some(i) = free.iter().position(|(kind, _)| *kind == dt.kind) else { continue };
            let (_, mid) = free.remove(i);
            dt.state = DownTrackState::Negotiating(mid);
            if dt.negotiated().is_some() {
                opened = true;
                self.queue
                    .push_back(PeerOutput::Event(PeerEvent::Subscribed { track: dt.track, mid: mid.to_string() }));
            }
        }
        if opened {
            self.downtrack_opened = true;
            self.arm_twcc_deadline(now);
        }
    }

    /// The client's answer to our offer `id`. A stale id (an abandoned offer) is ignored.
    pub fn handle_answer(&mut self, now: Instant, id: u64, sdp: &str) -> Result<(), String> {
        if self.closed {
            return Ok(());
        }
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        match self.pending.take() {
            Some((pid, pending)) if pid == id => {
                if let Err(e) = self.rtc.sdp_api().accept_answer(pending, answer) {
                    for dt in &mut self.downtracks {
                        dt.rollback();
                    }
                    self.negotiate_if_needed();
                    return Err(e.to_string());
                }
                self.negotiated_once = true;
                // A video down-track that opens asks for its keyframe with its first packet, when it knows
                // which layer it wants.
                let mut opened = false;
                for dt in &mut self.downtracks {
                    opened |= dt.negotiated().is_some();
                }
                self.downtrack_opened |= opened;
                self.arm_twcc_deadline(now);
                self.downtracks.retain(|d| d.state != DownTrackState::Gone);
                self.drain_rtc(now);
            }
            other => {
                debug!(peer = %self.id, id, "stale answer ignored");
                self.pending = other;
            }
        }
        self.negotiate_if_needed();
        Ok(())
    }

    /// A trickled ICE candidate of the client (`candidate:` prefix optional). An empty string is accepted.
    pub fn handle_candidate(&mut self, candidate: &str) -> Result<(), String> {
        let c = candidate.trim();
        if c.is_empty() {
            return Ok(());
        }
        let c = c.strip_prefix("a=").unwrap_or(c);
        let c = if c.starts_with("candidate:") { c.to_string() } else { format!("candidate:{c}") };
        let cand = Candidate::from_sdp_string(&c).map_err(|e| e.to_string())?;
        // The server listens on UDP only. Chrome may trickle its TCP candidates first; given only those, str0m finds
        // no possible pair, reports the ICE connection disconnected and the peer would be closed.
        if cand.proto() != Protocol::Udp {
            debug!(peer = %self.id, proto = ?cand.proto(), "non-UDP candidate ignored");
            return Ok(());
        }
        self.rtc.add_remote_candidate(cand);
        Ok(())
    }

    /// Start sending `track` (published by another peer) to this client. Renegotiates.
    pub fn add_downtrack(&mut self, track: TrackId, kind: MediaKind, publisher: PeerId) {
        if self.closed || !self.config.can_subscribe {
            return;
        }
        if let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == track) {
            dt.removed = false;
            return;
        }
        let mut dt = DownTrack::new(track, kind, publisher);
        dt.relay = self.config.relay;
        self.downtracks.push(dt);
        self.next_allocation.get_or_insert(self.now);
        self.report_changes();
        self.negotiate_if_needed();
    }

    /// How important `track` is to this subscriber's allocator (a screen share before cameras).
    pub fn set_track_priority(&mut self, track: TrackId, priority: Priority) {
        if let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == track) {
            dt.priority = priority;
        }
    }

    /// Stop sending `track` to this client. Renegotiates (the m-line is stopped).
    pub fn remove_downtrack(&mut self, track: TrackId) {
        if let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == track) {
            dt.remove();
        }
        self.report_changes();
        self.downtracks.retain(|d| d.state != DownTrackState::Gone);
        self.negotiate_if_needed();
    }

    /// How the subscriber shows `track`: its render size (it never gets a larger layer than that needs) or hidden
    /// (nothing is forwarded until shown again).
    pub fn set_track_settings(&mut self, track: TrackId, settings: crate::downtrack::TrackSettings) {
        if let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == track) {
            dt.settings = settings;
        }
        // Decide at once: a hidden tile frees its share now, and the publisher learns the new need.
        let now = self.now;
        self.allocate(now);
    }

    /// Limit the spatial layer this subscriber receives of `track` (the allocator's lever).
    pub fn set_max_layer(&mut self, track: TrackId, max: u8) {
        if let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == track) {
            dt.max_layer = max.min(crate::layer::MAX_SPATIAL);
        }
    }

    /// The spatial layer currently forwarded to this subscriber for `track`.
    pub fn current_layer(&self, track: TrackId) -> Option<u8> {
        self.downtracks.iter().find(|d| d.track == track).and_then(|d| d.current_layer())
    }

    /// A packet of a track this peer subscribes to. Never blocks: str0m queues it for the pacer/socket.
    pub fn handle_forward(&mut self, pkt: &ForwardPacket) {
        // Before the subscriber is connected (ICE and DTLS; a lost handshake flight costs a second) nothing can be
        // sent: str0m would queue the packets and send them all at once on connection, seconds late. The
        // down-track starts with the first packet after, on a keyframe it asks for then.
        if self.closed || !self.connected {
            return;
        }
        if self.config.relay {
            self.relay_forward(pkt);
            return;
        }
        let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == pkt.track) else { return };
        let prepared = dt.prepare(pkt, &self.rtc);
        // A switch shows here first; a change of demand (new layer sizes) waits for the allocation pass.
        if let Some(state) = dt.take_state_change() {
            self.queue.push_back(PeerOutput::Event(PeerEvent::StreamState { track: pkt.track, state }));
        }
        if let Some(layer) = dt.take_keyframe_wish(pkt.arrival) {
            self.queue.push_back(PeerOutput::KeyframeRequest {
                track: pkt.track,
                kind: KeyframeRequestKind::Pli,
                layer,
            });
        }
        let Some((mid, write)) = prepared else { return };
        let set_rtx_cache = pkt.kind == MediaKind::Video && !std::mem::replace(&mut dt.rtx_cache_set, true);
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else { return };
        if set_rtx_cache {
            stream.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, RTX_RATIO_CAP);
        }
        if self.twcc_decided && !self.twcc {
            // Without feedback there is nothing to pace against: forward at once.
            stream.set_unpaced(true);
        }
        let payload = write.payload.unwrap_or_else(|| pkt.payload.clone());
        let rtp = RtpWrite::new(write.pt, write.seq_no.into(), write.timestamp, pkt.arrival, payload)
            .marker(pkt.marker)
            .ext_vals(pkt.ext.clone())
            .nackable(pkt.kind == MediaKind::Video);
        let rtp = match write.vp8_patch {
            Some(patch) => rtp.vp8_patch(patch),
            None => rtp,
        };
        self.stamps.note(*stream.ssrc(), write.seq_no as u16, pkt.arrival);
        stream.write_rtp(rtp);
        self.rtp_out += 1;
        self.flush_due = self.config.bwe_initial.is_some();
    }

    /// A relay's copy of a packet: on the stream of its layer, numbered as the publisher numbered it.
    fn relay_forward(&mut self, pkt: &ForwardPacket) {
        let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == pkt.track) else { return };
        let Some((mid, write)) = dt.prepare_relay(pkt, &self.rtc) else { return };
        let video = pkt.kind == MediaKind::Video;
        let rid = video.then(|| crate::relay::rid_of(pkt.layer));
        let layer_bit = 1u8 << pkt.layer.min(crate::layer::MAX_SPATIAL);
        let set_rtx_cache = video && dt.relay_rtx_set & layer_bit == 0;
        dt.relay_rtx_set |= layer_bit;
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, rid) else { return };
        if set_rtx_cache {
            stream.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, RTX_RATIO_CAP);
        }
        let payload = write.payload.unwrap_or_else(|| pkt.payload.clone());
        let rtp = RtpWrite::new(write.pt, write.seq_no.into(), write.timestamp, pkt.arrival, payload)
            .marker(pkt.marker)
            .ext_vals(pkt.ext.clone())
            .nackable(video);
        self.stamps.note(*stream.ssrc(), write.seq_no as u16, pkt.arrival);
        stream.write_rtp(rtp);
        self.rtp_out += 1;
    }

    /// The relay's edge node needs `track` up to layer `demand` (`None`: no layer, the track stays negotiated).
    /// Layers above it stop crossing; the publisher hears the demand like a local subscriber's (dynacast).
    pub fn set_relay_demand(&mut self, track: TrackId, demand: Option<u8>) {
        if let Some(dt) = self.downtracks.iter_mut().find(|d| d.track == track) {
            dt.settings.hidden = demand.is_none();
            dt.max_layer = demand.unwrap_or(0).min(crate::layer::MAX_SPATIAL);
        }
        self.report_changes();
    }

    /// A subscriber wants a keyframe of spatial `layer` of `track`, which this peer publishes.
    ///
    /// Throttled per track and layer: at most one request upstream per `keyframe_request_interval`. A request
    /// inside the interval is not dropped but deferred to its end (a subscriber that opened just after another must
    /// not wait for the publisher's next periodic keyframe), and a keyframe arriving meanwhile satisfies it.
    pub fn handle_keyframe_request(&mut self, now: Instant, track: TrackId, kind: KeyframeRequestKind, layer: u8) {
        let interval = self.config.keyframe_request_interval;
        let Some((mid, t)) = self.tracks_in.iter_mut().find(|(_, t)| t.id == track) else { return };
        if t.kind != MediaKind::Video || layer > crate::layer::MAX_SPATIAL {
            return;
        }
        let l = usize::from(layer);
        if let Some(last) = t.last_keyframe_request[l] {
            if now.saturating_duration_since(last) < interval {
                t.keyframe_pending[l] = true;
                return;
            }
        }
        let mid = *mid;
        self.request_keyframe(now, mid, kind, layer);
    }

    fn request_keyframe(&mut self, now: Instant, mid: Mid, kind: KeyframeRequestKind, layer: u8) {
        let Some(t) = self.tracks_in.get_mut(&mid) else { return };
        let l = usize::from(layer);
        t.last_keyframe_request[l] = Some(now);
        t.keyframe_pending[l] = false;
        let (track, rid) = (t.id, t.rid_of(layer));
        let mut api = self.rtc.direct_api();
        if let Some(stream) = api.stream_rx_by_mid(mid, rid) {
            stream.request_keyframe(kind);
            debug!(peer = %self.id, track = %track, layer, "keyframe requested upstream");
        }
    }

    /// When the earliest deferred keyframe request is due.
    fn keyframe_deadline(&self) -> Option<Instant> {
        let interval = self.config.keyframe_request_interval;
        self.tracks_in
            .values()
            .flat_map(|t| (0..3).filter(|l| t.keyframe_pending[*l]).filter_map(|l| t.last_keyframe_request[l]))
            .map(|last| last + interval)
            .min()
    }

    /// When a dynacast decision to stop layers is due.
    fn dynacast_deadline(&self) -> Option<Instant> {
        self.tracks_in.values().filter_map(|t| t.fewer_since).map(|t| t + DYNACAST_DELAY).min()
    }

    /// Close the peer (participant left, removed, server shutdown).
    pub fn close(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.rtc.disconnect();
        info!(peer = %self.id, ?reason, rtp_in = self.rtp_in, rtp_out = self.rtp_out, "peer closed");
        self.queue.push_back(PeerOutput::Event(PeerEvent::Closed { reason }));
    }

    /// When the packet in `datagram` (one of this peer's transmits) reached the server, if it is forwarded media
    /// seen here for the first time ([`crate::forward_delay`]).
    pub fn arrival_of_sent(&mut self, datagram: &[u8]) -> Option<Instant> {
        self.stamps.take(datagram)
    }

    /// Next output. See the module doc for the drain rule.
    pub fn poll_output(&mut self) -> PeerOutput {
        loop {
            if let Some(o) = self.queue.pop_front() {
                return o;
            }
            if self.closed {
                return PeerOutput::Timeout(far_future());
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    let t = self.keyframe_deadline().map_or(t, |k| k.min(t));
                    let t = self.next_allocation.map_or(t, |k| k.min(t));
                    let t = self.dynacast_deadline().map_or(t, |k| k.min(t));
                    let t = self.twcc_deadline.map_or(t, |k| k.min(t));
                    let t = self.next_loss_update.map_or(t, |k| k.min(t));
                    let t = if std::mem::take(&mut self.flush_due) { self.now.min(t) } else { t };
                    return PeerOutput::Timeout(t);
                }
                Ok(Output::Transmit(t)) => return PeerOutput::Transmit(t),
                Ok(Output::Event(e)) => self.handle_event(e),
                Err(e) => {
                    warn!(peer = %self.id, error = %e, "rtc failed; closing");
                    self.close(CloseReason::Disconnected);
                }
            }
        }
    }

    /// Drain str0m's events that must be seen before we continue (e.g. `MediaAdded` after accepting an offer),
    /// keeping transmits in order in our queue.
    fn drain_rtc(&mut self, _now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) => return,
                Ok(Output::Transmit(t)) => self.queue.push_back(PeerOutput::Transmit(t)),
                Ok(Output::Event(e)) => self.handle_event(e),
                Err(e) => {
                    warn!(peer = %self.id, error = %e, "rtc failed; closing");
                    self.close(CloseReason::Disconnected);
                    return;
                }
            }
        }
    }

    fn handle_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                info!(peer = %self.id, "connected");
                let now = self.now;
                self.arm_twcc_deadline(now);
                self.queue.push_back(PeerOutput::Event(PeerEvent::Connected));
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.close(CloseReason::Disconnected);
            }
            Event::Closed => self.close(CloseReason::Disconnected),
            Event::MediaAdded(m) if m.direction.is_receiving() && !self.tracks_in.contains_key(&m.mid) => {
                let id = TrackId::random();
                info!(peer = %self.id, track = %id, mid = %m.mid, kind = ?m.kind, "track published");
                let rids = m.simulcast.as_ref().map(|s| s.recv.iter().map(|l| l.rid.to_string()).collect());
                self.tracks_in.insert(m.mid, TrackIn::new(id, m.kind, rids.unwrap_or_default()));
                self.queue.push_back(PeerOutput::Event(PeerEvent::TrackPublished {
                    track: id,
                    mid: m.mid.to_string(),
                    kind: m.kind,
                }));
            }
            Event::MediaChanged(_) => self.check_unpublished(),
            Event::MediaEgressStats(stats) => {
                let kind = self.rtc.media(stats.mid).map(|m| m.kind());
                let now = self.now;
                let Some(dt) = self.downtracks.iter_mut().find(|d| d.mid() == Some(stats.mid)) else { return };
                match kind {
                    // Audio: the subscriber's loss, passed on to the publisher (see `downstream_loss`).
                    Some(MediaKind::Audio) => {
                        if let Some(loss) = dt.take_loss_report(now, stats.loss) {
                            self.queue.push_back(PeerOutput::SubscriberLoss { track: dt.track, loss });
                        }
                    }
                    // Video: loss as the subscriber sees it, the allocator's second opinion: the NACKs it sent per
                    // packet we sent since the last stats (fresh every interval, a NACK comes within a round trip of
                    // a loss), or a new receiver report's fraction.
                    Some(MediaKind::Video) => {
                        if let Some(loss) = dt.egress_loss(stats.packets, stats.nacks, stats.loss) {
                            self.allocator.report_loss(now, loss);
                        }
                    }
                    None => {}
                }
            }
            Event::PeerStats(stats) => {
                // The round trip of the latest packet the subscriber's transport feedback covered: a queue on the
                // path shows as time above its floor (the allocator's evidence before it pauses anything).
                if let Some(rtt) = stats.rtt.filter(|_| self.twcc) {
                    let now = self.now;
                    self.allocator.report_rtt(now, rtt);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, can_probe: true }) => {
                self.twcc = true;
                tracing::trace!(peer = %self.id, estimate = estimate.as_u64(), "bandwidth estimate");
                self.allocator.set_estimate(estimate.as_u64());
                if !self.downtracks.is_empty() {
                    let now = self.now;
                    self.allocate(now);
                }
            }
            Event::RtpPacket(p) => self.handle_rtp(p),
            Event::KeyframeRequest(req) => {
                if let Some(dt) = self.downtracks.iter().find(|d| d.mid() == Some(req.mid)) {
                    // A relay's edge asks per layer (RID); a subscriber for the layer it decodes.
                    let layer = match (self.config.relay, &req.rid) {
                        (true, Some(rid)) => crate::relay::layer_of(rid),
                        _ => dt.layer_for_keyframe(),
                    };
                    if let Some(layer) = layer {
                        self.queue.push_back(PeerOutput::KeyframeRequest { track: dt.track, kind: req.kind, layer });
                    }
                }
            }
            _ => {}
        }
    }

    /// Stop taking `track` from this publisher (its grant to publish was revoked): the track is unpublished (the
    /// engine drops its routes and subscribers) and the packets that still arrive on its m-line are dropped at
    /// once. The client is told by the signaling layer and should stop sending; the m-line stays negotiated.
    pub fn stop_publishing(&mut self, track: TrackId) {
        let Some(mid) = self.tracks_in.iter().find(|(_, t)| t.id == track).map(|(m, _)| *m) else { return };
        self.tracks_in.remove(&mid);
        info!(peer = %self.id, %track, %mid, "track unpublished by the server");
        self.queue.push_back(PeerOutput::Event(PeerEvent::TrackUnpublished { track }));
    }

    /// A published m-line that no longer sends (direction changed, or stopped) unpublishes its track.
    fn check_unpublished(&mut self) {
        let gone: Vec<Mid> = self
            .tracks_in
            .keys()
            .filter(|mid| match self.rtc.media(**mid) {
                Some(m) => !m.direction().is_receiving() || m.remote_pts().is_empty(),
                None => true,
            })
            .copied()
            .collect();
        for mid in gone {
            if let Some(t) = self.tracks_in.remove(&mid) {
                info!(peer = %self.id, track = %t.id, %mid, "track unpublished");
                self.queue.push_back(PeerOutput::Event(PeerEvent::TrackUnpublished { track: t.id }));
            }
        }
    }

    fn handle_rtp(&mut self, p: RtpPacket) {
        self.rtp_in += 1;
        let ssrc = p.header.ssrc;
        let Some((mid, rid)) = self.rtc.direct_api().stream_rx(&ssrc).map(|s| (s.mid(), s.rid())) else { return };
        let Some(track) = self.tracks_in.get_mut(&mid) else { return };
        // Every layer is forwarded; each down-track picks one (see `downtrack`).
        let layer = rid.map_or(0, |r| spatial_of(&r, &track.rids));
        track.layers.on_media(layer, p.timestamp, p.payload.len(), p.header.marker);
        let live_layers = track.layers.live_mask(p.timestamp);
        let pt = p.header.payload_type;
        // RED (RFC 2198) rides the stream's SSRC and sequence numbers on its own payload type, folded by str0m onto
        // the codec it carries.
        let params = match track.params {
            Some(pp) if pp.pt() == pt || pp.red() == Some(pt) => pp,
            _ => {
                let Some(pp) = self.rtc.codec_config().find(|c| c.pt() == pt || c.red() == Some(pt)).copied() else {
                    return;
                };
                track.params = Some(pp);
                pp
            }
        };
        let red = if params.red() == Some(pt) {
            let Some(primary) = crate::red::primary(&p.payload, *params.pt()) else {
                tracing::trace!(peer = %self.id, track = %track.id, "malformed RED payload dropped");
                return;
            };
            if !std::mem::replace(&mut track.red_seen, true) {
                info!(peer = %self.id, track = %track.id, "audio redundancy (RED) received");
            }
            Some(Arc::from(primary))
        } else {
            None
        };
        let keyframe = if track.kind == MediaKind::Video {
            starts_keyframe(params.spec().codec, &p.payload)
        } else {
            KeyframeStart::Unknown
        };
        if keyframe == KeyframeStart::Yes {
            // Whoever was waiting for this layer gets this one.
            track.keyframe_pending[usize::from(layer)] = false;
            if params.spec().codec == Codec::Vp8 {
                if let Some(size) = crate::keyframe::vp8_keyframe_size(&p.payload) {
                    track.sizes[usize::from(layer)] = Some(size);
                }
            }
        }
        let vp8 = if params.spec().codec == Codec::Vp8 { Vp8Descriptor::parse(&p.payload).ok() } else { None };
        let h = &p.header.ext_vals;
        if let Some(dbov) = h.audio_level {
            let now = p.timestamp;
            let (loudest, since) = match track.level {
                Some((l, since)) => (l.max(dbov), since),
                None => (dbov, now),
            };
            if now.saturating_duration_since(since) >= AUDIO_LEVEL_PERIOD {
                self.queue.push_back(PeerOutput::Event(PeerEvent::AudioLevel { track: track.id, dbov: loudest }));
                track.level = Some((i8::MIN, now));
            } else {
                track.level = Some((loudest, since));
            }
        }
        let ext = ExtensionValues {
            audio_level: h.audio_level,
            voice_activity: h.voice_activity,
            video_orientation: h.video_orientation,
            ..Default::default()
        };
        let clock_rate = p.time.denom();
        let capture = p.last_sender_info.map(|sr| {
            let ntp = sr.ntp_time.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            let ticks = p.header.timestamp.wrapping_sub(sr.rtp_time.numer() as u32) as i32;
            ntp + f64::from(ticks) / f64::from(clock_rate.max(1))
        });
        let layer_bitrates = track.layers.bitrates(p.timestamp);
        let fwd = ForwardPacket {
            track: track.id,
            kind: track.kind,
            params,
            seq_no: *p.seq_no,
            timestamp: p.header.timestamp,
            marker: p.header.marker,
            keyframe,
            layer,
            live_layers,
            layer_sizes: track.sizes,
            layer_bitrates,
            simulcast: track.rids.len() > 1,
            capture,
            clock_rate,
            vp8,
            red,
            ext,
            payload: p.payload,
            arrival: p.timestamp,
        };
        self.queue.push_back(PeerOutput::Forward(Arc::new(fwd)));
    }

    /// Offer the down-track changes, unless an offer is outstanding.
    fn negotiate_if_needed(&mut self) {
        if self.closed || self.pending.is_some() || self.config.client_offers {
            return;
        }
        if !self.downtracks.iter().any(|d| d.needs_negotiation()) {
            return;
        }
        // The first m-line carries the bundle's transport (its mid tags the BUNDLE group). Stopping it (port 0, out
        // of the group) makes Chrome move the bundle to a new transport, which it never connects: the peer is
        // lost. That m-line is made inactive instead and stays, unused.
        let rtc = &self.rtc;
        let bundle_tag: Option<Mid> = self
            .downtracks
            .iter()
            .filter_map(|d| if let DownTrackState::ToStop(mid) = d.state { Some(mid) } else { None })
            .find(|mid| rtc.media(*mid).is_some_and(|m| m.index() == 0));
        let mut api = self.rtc.sdp_api();
        let mut subscribed = Vec::new();
        for dt in &mut self.downtracks {
            match dt.state {
                DownTrackState::ToOpen => {
                    let simulcast = (dt.relay && dt.kind == MediaKind::Video).then(crate::relay::simulcast);
                    let mid = api.add_media(
                        dt.kind,
                        Direction::SendOnly,
                        Some(dt.publisher.to_string()),
                        Some(dt.track.to_string()),
                        simulcast,
                    );
                    dt.state = DownTrackState::Negotiating(mid);
                    subscribed.push((dt.track, mid));
                }
                DownTrackState::ToStop(mid) => {
                    if bundle_tag == Some(mid) {
                        api.set_direction(mid, Direction::Inactive);
                    } else {
                        api.stop_media(mid);
                    }
                    dt.state = DownTrackState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        let Some((offer, pending)) = api.apply() else { return };
        let id = self.next_offer_id;
        self.next_offer_id += 1;
        self.pending = Some((id, pending));
        for (track, mid) in subscribed {
            self.queue.push_back(PeerOutput::Event(PeerEvent::Subscribed { track, mid: mid.to_string() }));
        }
        debug!(peer = %self.id, id, "offering");
        self.queue.push_back(PeerOutput::Event(PeerEvent::Offer { id, sdp: offer.to_sdp_string() }));
    }

    /// Codec of a published track's current payload type, if known.
    pub fn track_codec(&self, track: TrackId) -> Option<Codec> {
        self.tracks_in.values().find(|t| t.id == track).and_then(|t| t.params.map(|p| p.spec().codec))
    }

    /// RTP packets received from and sent to this client so far.
    pub fn rtp_counts(&self) -> (u64, u64) {
        (self.rtp_in, self.rtp_out)
    }

    /// The latest send-side bandwidth estimate to this client (bits per second), if it gives TWCC feedback.
    pub fn bandwidth_estimate(&self) -> Option<u64> {
        self.allocator.estimate()
    }

    /// Has this peer connected (ICE + DTLS)?
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Has a negotiation completed at least once?
    pub fn has_negotiated(&self) -> bool {
        self.negotiated_once
    }
}

/// Does the offer have an m-line on which the client sends media?
fn offer_sends_media(offer: &SdpOffer) -> bool {
    let sdp = offer.to_sdp_string();
    let mut in_media = false;
    let mut media_sends = false;
    let mut port_zero = false;
    for line in sdp.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            if in_media && media_sends && !port_zero {
                return true;
            }
            in_media = !rest.starts_with("application");
            port_zero = rest.split_whitespace().nth(1) == Some("0");
            // Default direction is sendrecv.
            media_sends = true;
        } else if in_media {
            match line.trim() {
                "a=recvonly" | "a=inactive" => media_sends = false,
                "a=sendonly" | "a=sendrecv" => media_sends = true,
                _ => {}
            }
        }
    }
    in_media && media_sends && !port_zero
}

/// The m-lines of an offer on which the client receives media (`recvonly` or `sendrecv`, port not 0), in order,
/// with their kind and mid. A section without a direction takes the session's (`sendrecv` by default).
fn receiving_mlines(sdp: &str) -> Vec<(MediaKind, Mid)> {
    /// One media section: kind (`None`: not audio or video), enabled (port not 0), mid, receives.
    type Section = (Option<MediaKind>, bool, Option<Mid>, Option<bool>);
    let mut sections: Vec<Section> = Vec::new();
    let mut session_receives = true;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            let kind = match parts.next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
            sections.push((kind, parts.next() != Some("0"), None, None));
            continue;
        }
        let receives = match line {
            "a=recvonly" | "a=sendrecv" => Some(true),
            "a=sendonly" | "a=inactive" => Some(false),
            _ => None,
        };
        match (sections.last_mut(), receives) {
            (Some(s), Some(r)) => s.3 = Some(r),
            (None, Some(r)) => session_receives = r,
            (Some(s), None) => {
                if let Some(mid) = line.strip_prefix("a=mid:") {
                    s.2 = Some(Mid::from(mid.trim()));
                }
            }
            (None, None) => {}
        }
    }
    sections
        .into_iter()
        .filter_map(|(kind, enabled, mid, receives)| match (kind, mid) {
            (Some(kind), Some(mid)) if enabled && receives.unwrap_or(session_receives) => Some((kind, mid)),
            _ => None,
        })
        .collect()
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(rids: &[&str]) -> TrackIn {
        TrackIn::new(TrackId(1), MediaKind::Video, rids.iter().map(|r| r.to_string()).collect())
    }

    fn active(layers: Option<Vec<(String, bool)>>) -> Option<Vec<bool>> {
        layers.map(|l| l.into_iter().map(|(_, a)| a).collect())
    }

    #[test]
    fn dynacast_stops_unneeded_layers_late_and_resumes_them_at_once() {
        let t0 = Instant::now();
        let mut t = track(&["q", "h", "f"]);
        // Nobody needs anything: after the delay, only q keeps running.
        assert_eq!(t.dynacast(t0), None);
        assert_eq!(t.dynacast(t0 + DYNACAST_DELAY - Duration::from_millis(1)), None);
        assert_eq!(active(t.dynacast(t0 + DYNACAST_DELAY)), Some(vec![true, false, false]));
        // A subscriber wants f: at once.
        let t1 = t0 + Duration::from_secs(10);
        t.demands.insert(PeerId(7), 2);
        assert_eq!(active(t.dynacast(t1)), Some(vec![true, true, true]));
        // It shrinks its tile to h, another one wants q: f stops after the delay.
        t.demands.insert(PeerId(7), 1);
        t.demands.insert(PeerId(8), 0);
        assert_eq!(t.dynacast(t1), None);
        assert_eq!(active(t.dynacast(t1 + DYNACAST_DELAY)), Some(vec![true, true, false]));
        // A change of mind within the delay stops nothing.
        t.demands.remove(&PeerId(7));
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(t.dynacast(t2), None);
        t.demands.insert(PeerId(7), 1);
        assert_eq!(t.dynacast(t2 + DYNACAST_DELAY), None, "still needed");
    }

    #[test]
    fn dynacast_ignores_tracks_without_simulcast() {
        let mut t = track(&[]);
        assert_eq!(t.dynacast(Instant::now() + DYNACAST_DELAY * 2), None);
    }

    #[test]
    fn receiving_mlines_lists_what_the_client_receives_on() {
        let offer = |body: &str| format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{body}");
        let a = MediaKind::Audio;
        let v = MediaKind::Video;
        let cases: &[(&str, &[(MediaKind, &str)])] = &[
            ("", &[]),
            ("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n", &[(a, "0")]),
            (
                "m=audio 9 X 111\r\na=mid:a\r\na=recvonly\r\nm=video 9 X 96\r\na=recvonly\r\na=mid:v\r\n",
                &[(a, "a"), (v, "v")],
            ),
            ("m=video 9 X 96\r\na=mid:1\r\na=sendonly\r\n", &[]),
            ("m=video 9 X 96\r\na=mid:1\r\na=inactive\r\n", &[]),
            ("m=video 0 X 96\r\na=mid:1\r\na=recvonly\r\n", &[]),
            ("m=video 9 X 96\r\na=mid:1\r\n", &[(v, "1")]),
            ("m=video 9 X 96\r\na=recvonly\r\n", &[]),
            ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n", &[]),
            ("m=video 9 X 96\r\na=mid:1\r\na=sendrecv\r\n", &[(v, "1")]),
        ];
        for (body, want) in cases {
            let want: Vec<(MediaKind, Mid)> = want.iter().map(|(k, m)| (*k, Mid::from(*m))).collect();
            assert_eq!(receiving_mlines(&offer(body)), want, "{body:?}");
        }
        assert_eq!(receiving_mlines("a=sendonly\nm=video 9 X 0\na=mid:0\n"), vec![], "the session's direction");
        assert_eq!(receiving_mlines("garbage"), vec![]);
    }
}
