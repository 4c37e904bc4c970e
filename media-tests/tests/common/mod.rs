//! A stand-in for the Courier server, for testing the client without it.
//!
//! It speaks protocol v1 over a real WebSocket and forwards media through a webrtc-rs peer per
//! client, so the whole client pipeline (join, client offer, server offers with `subscribed`,
//! trickled candidates, receiving, assembling, decoding) runs over real sockets. It is not an
//! SFU: no ICE-lite, no munging (each subscriber gets the publisher's sequence numbers and
//! timestamps under its own SSRC), no NACK handling of its own, one room, no tokens checked.
//!
//! `glare: true` makes it send a bogus offer just before answering each client offer, which an
//! impolite client must ignore; every answer id the server received is recorded.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use media_tests::signal::{ClientMessage, Joined, MediaKind, ParticipantInfo, ServerMessage, TrackInfo, TrackSource};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    Registry,
};

/// Routes test logs (and webrtc-rs `log` records) to the test output; `RUST_LOG` filters.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
}

#[derive(Debug, Clone, Default)]
pub struct FakeOptions {
    pub glare: bool,
}

/// A published track and who receives it.
struct Published {
    id: String,
    kind: MediaKind,
    publisher: String,
    /// (subscriber participant id, local track, ssrc)
    outputs: Mutex<Vec<(String, Arc<TrackLocalStaticRTP>, u32)>>,
}

enum ToConn {
    Subscribe(Arc<Published>),
    Send(ServerMessage),
}

#[derive(Default)]
struct Room {
    participants: HashMap<String, (ParticipantInfo, mpsc::UnboundedSender<ToConn>)>,
    published: Vec<Arc<Published>>,
}

pub struct FakeServer {
    pub url: String,
    room: Arc<Mutex<Room>>,
    answers: Arc<Mutex<Vec<u64>>>,
    next_id: Arc<AtomicU64>,
}

impl FakeServer {
    pub async fn start(options: FakeOptions) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/rtc", listener.local_addr().unwrap());
        let server =
            FakeServer { url, room: Arc::default(), answers: Arc::default(), next_id: Arc::new(AtomicU64::new(1)) };
        let (room, answers, ids) = (server.room.clone(), server.answers.clone(), server.next_id.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = Conn::new(room.clone(), answers.clone(), ids.clone(), options.clone());
                tokio::spawn(async move {
                    if let Err(e) = conn.run(tcp).await {
                        tracing::warn!(error = %e, "fake server connection failed");
                    }
                });
            }
        });
        server
    }

    /// Ids of all `answer` messages received from clients.
    pub fn answers_received(&self) -> Vec<u64> {
        self.answers.lock().unwrap().clone()
    }
}

struct Handler {
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    gathered: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

struct Conn {
    room: Arc<Mutex<Room>>,
    answers: Arc<Mutex<Vec<u64>>>,
    ids: Arc<AtomicU64>,
    options: FakeOptions,
}

type Ws = WebSocketStream<TcpStream>;

async fn send(ws: &mut Ws, msg: &ServerMessage) -> anyhow::Result<()> {
    ws.send(Message::text(serde_json::to_string(msg)?)).await?;
    Ok(())
}

/// mid → kind of each m-line of an SDP.
fn mids_and_kinds(sdp: &str) -> Vec<(String, MediaKind)> {
    let mut out = Vec::new();
    let mut kind = None;
    for line in sdp.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            kind = Some(if rest.starts_with("audio") { MediaKind::Audio } else { MediaKind::Video });
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            if let Some(k) = kind {
                out.push((mid.trim().to_owned(), k));
            }
        }
    }
    out
}

impl Conn {
    fn new(room: Arc<Mutex<Room>>, answers: Arc<Mutex<Vec<u64>>>, ids: Arc<AtomicU64>, options: FakeOptions) -> Self {
        Self { room, answers, ids, options }
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.ids.fetch_add(1, Ordering::Relaxed))
    }

    fn broadcast(&self, msg: ServerMessage) {
        for (_, tx) in self.room.lock().unwrap().participants.values() {
            let _ = tx.send(ToConn::Send(msg.clone()));
        }
    }

    async fn run(self, tcp: TcpStream) -> anyhow::Result<()> {
        let mut ws = tokio_tungstenite::accept_async(tcp).await?;
        let Some(Ok(Message::Text(text))) = ws.next().await else { anyhow::bail!("no join") };
        let ClientMessage::Join { token, .. } = serde_json::from_str(&text)? else { anyhow::bail!("not join") };
        let me = self.id("PA");
        let info = ParticipantInfo {
            id: me.clone(),
            identity: token.clone(),
            name: token,
            tracks: vec![],
            metadata: String::new(),
            node: String::new(),
            region: String::new(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let existing = {
            let mut room = self.room.lock().unwrap();
            let others: Vec<ParticipantInfo> = room.participants.values().map(|(p, _)| p.clone()).collect();
            for (_, other) in room.participants.values() {
                let _ = other.send(ToConn::Send(ServerMessage::ParticipantJoined { participant: info.clone() }));
            }
            room.participants.insert(me.clone(), (info.clone(), tx.clone()));
            let published = room.published.clone();
            send_later(&tx, published);
            others
        };
        send(
            &mut ws,
            &ServerMessage::Joined(Joined {
                v: 1,
                room: "fake".into(),
                room_metadata: String::new(),
                server_version: "fake".into(),
                participant: info,
                participants: existing,
                ice_servers: Vec::new(),
            }),
        )
        .await?;

        let (track_tx, mut track_rx) = mpsc::unbounded_channel();
        let (gathered_tx, gathered_rx) = watch::channel(false);
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_media_engine(media_engine)
                .with_interceptor_registry(registry)
                .with_setting_engine(
                    SettingEngineBuilder::new()
                        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                        .build(),
                )
                .with_handler(Arc::new(Handler { tracks: track_tx, gathered: gathered_tx }))
                .with_udp_addrs(vec!["127.0.0.1:0"])
                .build()
                .await?,
        );

        let mut own_tracks: HashMap<String, (String, MediaKind)> = HashMap::new(); // mid → (track id, kind)
        let mut outstanding: Option<u64> = None;
        let mut queued: Vec<Arc<Published>> = Vec::new();
        let result: anyhow::Result<()> = async {
            loop {
                tokio::select! {
                    frame = ws.next() => {
                        let Some(Ok(frame)) = frame else { break };
                        let Message::Text(text) = frame else { continue };
                        let msg: ClientMessage = serde_json::from_str(&text)?;
                        match msg {
                            ClientMessage::Offer { id, sdp, tracks } => {
                                if self.options.glare {
                                    send(&mut ws, &ServerMessage::Offer { id: 999_000 + id, sdp: "v=0\r\n".into() }).await?;
                                }
                                pc.set_remote_description(RTCSessionDescription::offer(sdp.clone())?).await?;
                                let answer = pc.create_answer(None).await?;
                                pc.set_local_description(answer).await?;
                                wait_gathered(gathered_rx.clone()).await;
                                let sdp_out = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
                                send(&mut ws, &ServerMessage::Answer { id, sdp: sdp_out }).await?;
                                let kinds = mids_and_kinds(&sdp);
                                for t in tracks {
                                    if own_tracks.contains_key(&t.mid) {
                                        continue;
                                    }
                                    let Some((_, kind)) = kinds.iter().find(|(m, _)| *m == t.mid) else { continue };
                                    let track_id = self.id("TR");
                                    own_tracks.insert(t.mid.clone(), (track_id.clone(), *kind));
                                    let info = TrackInfo {
                                        id: track_id,
                                        kind: *kind,
                                        source: t.source.unwrap_or(TrackSource::Unknown),
                                        name: t.name.unwrap_or_default(),
                                        muted: false,
                                        mid: None,
                                    };
                                    for (pid, (_, tx)) in self.room.lock().unwrap().participants.iter() {
                                        let mut info = info.clone();
                                        if *pid == me {
                                            info.mid = Some(t.mid.clone());
                                        }
                                        let _ = tx.send(ToConn::Send(ServerMessage::TrackPublished {
                                            participant_id: me.clone(),
                                            track: info,
                                        }));
                                    }
                                }
                            }
                            ClientMessage::Answer { id, sdp } => {
                                self.answers.lock().unwrap().push(id);
                                if outstanding == Some(id) {
                                    outstanding = None;
                                    pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                                    if !queued.is_empty() {
                                        let subs = std::mem::take(&mut queued);
                                        outstanding = Some(self.offer(&mut ws, &pc, &me, subs, gathered_rx.clone()).await?);
                                    }
                                }
                            }
                            ClientMessage::Candidate { candidate, .. } if !candidate.is_empty() => {
                                let init = RTCIceCandidateInit {
                                    candidate,
                                    sdp_mid: None,
                                    sdp_mline_index: Some(0),
                                    ..Default::default()
                                };
                                if let Err(e) = pc.add_ice_candidate(init).await {
                                    tracing::warn!(error = %e, "fake server: bad candidate");
                                }
                            }
                            ClientMessage::Ping { ts } => send(&mut ws, &ServerMessage::Pong { ts: ts.into() }).await?,
                            ClientMessage::Leave => {
                                let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })).await;
                                break;
                            }
                            _ => {}
                        }
                    }
                    Some(cmd) = rx.recv() => match cmd {
                        ToConn::Send(msg) => send(&mut ws, &msg).await?,
                        ToConn::Subscribe(p) => {
                            if p.publisher == me {
                                continue;
                            }
                            if outstanding.is_some() {
                                queued.push(p);
                            } else {
                                outstanding = Some(self.offer(&mut ws, &pc, &me, vec![p], gathered_rx.clone()).await?);
                            }
                        }
                    },
                    Some(track) = track_rx.recv() => {
                        // Media from this client: find its track id by mid and start forwarding.
                        let mid = find_mid(&pc, &track).await.unwrap_or_default();
                        let Some((track_id, kind)) = own_tracks.get(&mid).cloned() else { continue };
                        let published = Arc::new(Published {
                            id: track_id,
                            kind,
                            publisher: me.clone(),
                            outputs: Mutex::new(Vec::new()),
                        });
                        {
                            let mut room = self.room.lock().unwrap();
                            room.published.push(published.clone());
                            for (_, tx) in room.participants.values() {
                                let _ = tx.send(ToConn::Subscribe(published.clone()));
                            }
                        }
                        tokio::spawn(forward(track, published));
                    }
                }
            }
            Ok(())
        }
        .await;
        self.room.lock().unwrap().participants.remove(&me);
        self.broadcast(ServerMessage::ParticipantLeft { participant_id: me.clone(), reason: "left".into() });
        let _ = pc.close().await;
        result
    }

    /// Adds send m-lines for `subs`, sends `subscribed` for each and the offer; returns its id.
    async fn offer(
        &self,
        ws: &mut Ws,
        pc: &Arc<dyn PeerConnection>,
        me: &str,
        subs: Vec<Arc<Published>>,
        gathered: watch::Receiver<bool>,
    ) -> anyhow::Result<u64> {
        let mut added = Vec::new();
        for p in subs {
            let ssrc: u32 = rand::random();
            let kind = match p.kind {
                MediaKind::Audio => RtpCodecKind::Audio,
                MediaKind::Video => RtpCodecKind::Video,
            };
            let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                format!("stream-{}", p.publisher),
                format!("{}-{}", p.id, me),
                p.id.clone(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    ..Default::default()
                }],
            )));
            let t = pc
                .add_transceiver_from_track(
                    local.clone() as Arc<dyn TrackLocal>,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )
                .await?;
            added.push((p, t, local, ssrc));
        }
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        wait_gathered(gathered).await;
        for (p, t, local, ssrc) in &added {
            let mid = t.mid().await?.unwrap_or_default();
            send(
                ws,
                &ServerMessage::Subscribed {
                    track_id: p.id.clone(),
                    participant_id: p.publisher.clone(),
                    kind: p.kind,
                    mid,
                },
            )
            .await?;
            p.outputs.lock().unwrap().push((me.to_owned(), local.clone(), *ssrc));
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        send(ws, &ServerMessage::Offer { id, sdp }).await?;
        Ok(id)
    }
}

fn send_later(tx: &mpsc::UnboundedSender<ToConn>, published: Vec<Arc<Published>>) {
    for p in published {
        let _ = tx.send(ToConn::Subscribe(p));
    }
}

async fn wait_gathered(mut rx: watch::Receiver<bool>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|g| *g)).await;
}

async fn find_mid(pc: &Arc<dyn PeerConnection>, track: &Arc<dyn TrackRemote>) -> Option<String> {
    for t in pc.get_transceivers().await {
        if let Ok(Some(r)) = t.receiver().await {
            if Arc::ptr_eq(r.track(), track) {
                return t.mid().await.ok().flatten();
            }
        }
    }
    None
}

/// Copies every RTP packet of `track` to each subscriber's local track under its SSRC.
async fn forward(track: Arc<dyn TrackRemote>, published: Arc<Published>) {
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let outputs = published.outputs.lock().unwrap().clone();
        for (_, local, ssrc) in outputs {
            let mut p = packet.clone();
            p.header.ssrc = ssrc;
            p.header.extensions.clear();
            p.header.extension = false;
            let _ = local.write_rtp(p).await;
        }
    }
}
