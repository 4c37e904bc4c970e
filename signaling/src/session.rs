//! One participant's WebSocket: join, then a loop that turns client messages into room and engine commands, and
//! room and engine events into server messages.
//!
//! One task per connection selects over four inputs: the socket, the room's events for this member (a bounded
//! queue the room pushes into without waiting), the engine's events for this member's peer, and a close channel
//! (replaced, too slow, shutdown). Writing to this socket only ever waits for this client; the room never waits for
//! it. Bad input gets an `error` reply and the session goes on; only a bad token, a protocol version we do not
//! speak, silence, or slowness closes it, each with its documented close code. A join the server will not take
//! (draining, over a join rate, room full, too many rooms) gets an `error` naming the cause, then its close code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use sfu::allocator::Priority;
use sfu::downtrack::StreamState;
use sfu::peer::OfferRejection;
use sfu::{MediaKind, PeerEvent, PeerId, PeerOptions, TrackId};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::admission;
use crate::auth::Permissions;
use crate::cluster::Placement;
use crate::limits::{Rate, Refusals, TokenBucket};
use crate::room::{wire_track_id, Joiner, MemberHandles, RoomCaps, RoomEvent, MEMBER_QUEUE};
use crate::AppState;
use courier_protocol::{
    close, ClientMsg, ErrorCode, Joined, LayerActive, OfferTrack, ParticipantInfo, ServerMsg, SpeakerInfo,
    StreamStateKind, TrackInfo, TrackSource, VERSION,
};

mod chat;

use chat::ChatSession;
pub(crate) use chat::Out;

/// How long a client has to send `join`.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection silent for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages per second one connection may send (burst of the same size).
pub const RATE_PER_SEC: f64 = 50.0;

/// The server's caps on rooms and their members, from the configuration.
pub(crate) fn room_caps(state: &AppState) -> RoomCaps {
    RoomCaps { max_rooms: state.config.limits.max_rooms, max_participants: state.config.limits.max_participants }
}

/// Run join admission ([`admission::admit`]) against the server's state: every participant, WebSocket or WHIP/WHEP,
/// gets in through here.
pub(crate) fn admit(
    state: &AppState,
    version: u32,
    token: &str,
    peer_ip: std::net::IpAddr,
) -> Result<courier_protocol::Claims, admission::Refusal> {
    let caps = room_caps(state);
    admission::admit(admission::Checks {
        version,
        draining: state.draining.load(std::sync::atomic::Ordering::SeqCst),
        ip_rate: || state.limiters.join_ip(peer_ip, Instant::now()),
        token: || state.keys.verify_with_leeway(token, state.config.limits.token_leeway_secs),
        identity_rate: |identity| state.limiters.join_identity(identity, Instant::now()),
        room: |room, identity| state.rooms.admits(room, identity, caps),
    })
}

/// Count a refused join in `/metrics`.
pub(crate) fn count_refusal(state: &AppState, refusal: &admission::Refusal) {
    let r = &state.refusals;
    if let Some(counter) = refusal.counter {
        Refusals::add(match counter {
            admission::Counter::Draining => &r.join_draining,
            admission::Counter::RateLimited => &r.join_rate_limited,
            admission::Counter::RoomFull => &r.join_room_full,
            admission::Counter::TooManyRooms => &r.join_too_many_rooms,
            admission::Counter::RoomUnavailable => &r.join_room_unavailable,
        });
    }
}

/// The leave reason (webhooks, `participant_left`) for a close signal from the room: replaced by a newer session,
/// server shutdown, removed by the admin API (its own reason), or else disconnected.
pub(crate) fn leave_reason(code: u16, reason: &'static str) -> &'static str {
    match code {
        close::REPLACED => "replaced",
        close::GOING_AWAY => "server_shutdown",
        close::REMOVED => reason,
        _ => "disconnected",
    }
}

/// A member's place in its room: the room's snapshot at the join, the grants in force, and the two queues the
/// room talks to its session through.
pub(crate) struct Membership {
    pub(crate) joined: crate::room::Joined,
    pub(crate) permissions: Permissions,
    pub(crate) events: mpsc::Receiver<RoomEvent>,
    pub(crate) close: mpsc::Receiver<crate::room::CloseSignal>,
}

/// Join the admitted `claims`' room as `name` with the engine peer `peer`, under the server's caps (the room's
/// rules are checked again under its lock: the last place may have gone since admission).
pub(crate) fn join_room(
    state: &AppState,
    claims: &courier_protocol::Claims,
    name: &str,
    peer: PeerId,
) -> Result<Membership, ErrorCode> {
    let (ev_tx, events) = mpsc::channel(MEMBER_QUEUE);
    let (close_tx, close) = mpsc::channel(1);
    let permissions = Permissions::from(&claims.video);
    // In a cluster, the participant says which node serves it; a node on its own has nothing to tell.
    let (node, region) = match &state.cluster {
        Some(c) => (c.config.node_id.as_str(), c.config.region.as_str()),
        None => ("", ""),
    };
    let who = Joiner {
        identity: &claims.sub,
        name,
        metadata: claims.metadata.as_deref().unwrap_or(""),
        permissions: permissions.clone(),
        node,
        region,
    };
    let handles = MemberHandles { events: ev_tx, close: close_tx };
    let joined = state.rooms.join(room_caps(state), &claims.video.room, who, peer, handles)?;
    Ok(Membership { joined, permissions, events, close })
}

/// Serve one upgraded WebSocket until it ends.
/// `host` is the host part of the request's `Host` header (for the TURN URLs in `joined`).
pub async fn run(socket: WebSocket, state: Arc<AppState>, peer_ip: std::net::IpAddr, host: Option<String>) {
    let (mut tx, mut rx) = socket.split();
    let max = state.config.max_message_bytes;

    // --- join ---
    // Every refusal sends an `error` (`req_type` join) before its close code: browsers cannot read close reasons
    // reliably, and close reasons never carry parser or token-library text.
    let first = tokio::time::timeout(JOIN_TIMEOUT, rx.next()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(Message::Close(_)))) => {
            let _ = tx.close().await;
            return;
        }
        Ok(None) => return,
        Ok(Some(Err(e))) => {
            if let Some((code, close, why)) = socket_error(&e) {
                refuse(&mut tx, code, close, why).await;
            }
            return;
        }
        Ok(Some(Ok(_))) => {
            refuse(&mut tx, ErrorCode::BadMessage, close::NO_JOIN, "the first message must be a join text frame").await;
            return;
        }
        Err(_) => {
            refuse(&mut tx, ErrorCode::NotJoined, close::NO_JOIN, "no join within 10 s").await;
            return;
        }
    };
    if text.len() > max {
        refuse(&mut tx, ErrorCode::TooLarge, close::NO_JOIN, &format!("join over {max} bytes")).await;
        return;
    }
    let (version, token, auto_subscribe, chat_positions) = match ClientMsg::parse(&text) {
        Ok(ClientMsg::Join { v, token, auto_subscribe, chat }) => (v, token, auto_subscribe, chat),
        Err(e) if e.req_type.as_deref() == Some("join") => {
            // A join with missing or mistyped fields: the error says which; the close reason stays generic.
            debug!(error = %e.message, "malformed join");
            let _ = tx.send(text_msg(&ServerMsg::error(ErrorCode::BadMessage, e.message, Some("join")))).await;
            let _ = tx.send(close_msg(close::NO_JOIN, "malformed join")).await;
            return;
        }
        _ => {
            refuse(&mut tx, ErrorCode::NotJoined, close::NO_JOIN, "the first message must be join").await;
            return;
        }
    };
    let claims = match admit(&state, version, &token, peer_ip) {
        Ok(c) => c,
        Err(r) => {
            refuse_join(&state, &mut tx, r).await;
            return;
        }
    };
    let room = claims.video.room.clone();
    // In a cluster the room lives on one node: a join that reached another is sent there (nothing happened here).
    if let Some(cluster) = &state.cluster {
        match cluster.place_join(&state, &room).await {
            Placement::Here => {}
            Placement::There { node, url } => {
                debug!(room = %room, node = %node, "redirecting the join to the room's node");
                let _ = tx.send(text_msg(&ServerMsg::Redirect { url, node, room: room.clone() })).await;
                let _ = tx.send(close_msg(close::REDIRECT, "redirect")).await;
                return;
            }
            Placement::Unavailable => {
                let why = "the cluster cannot place the room now; retry";
                refuse(&mut tx, ErrorCode::ClusterUnavailable, close::TRY_AGAIN_LATER, why).await;
                return;
            }
        }
    }
    let identity = claims.sub.clone();
    let name = claims.name.clone().unwrap_or_else(|| identity.clone());
    // `participant` is filled in once the room gives the id: every log line of the session carries all three.
    let span = info_span!("session", room = %room, identity = %identity, participant = tracing::field::Empty);
    // Shutdown waits for admitted sessions to leave.
    let sessions = state.clone();

    let session = async move {
        let opts = PeerOptions {
            can_publish: claims.video.can_publish,
            can_subscribe: claims.video.can_subscribe,
            label: format!("{room}/{identity}"),
            client_offers: false,
            relay: false,
        };
        let (peer, mut peer_events) = match state.sfu.create_peer(opts).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot create peer");
                let _ =
                    tx.send(text_msg(&ServerMsg::error(ErrorCode::Internal, "cannot create peer", Some("join")))).await;
                let _ = tx.send(close_msg(close::GOING_AWAY, "internal error")).await;
                return;
            }
        };
        // Chat first: live messages queue from here on, so nothing committed after the resume reads can be missed.
        let mut chat =
            ChatSession::start(state.clone(), &identity, &room, claims.video.can_chat, claims.video.room_admin);
        chat.follow_cluster().await;
        let inbox = chat.inbox();
        let Membership { joined, permissions, events: mut ev_rx, close: mut close_rx } =
            match join_room(&state, &claims, &name, peer) {
                Ok(m) => m,
                Err(code) => {
                    // The room's own rules, or a race for the last place since `admits`.
                    chat.stop();
                    let _ = state.sfu.close_peer(peer).await;
                    refuse_join(&state, &mut tx, admission::room_refusal(code)).await;
                    return;
                }
            };
        let me = joined.me.clone();
        tracing::Span::current().record("participant", me.id.as_str());
        info!("joined");
        let mut s = Session::new(state.clone(), room.clone(), me.clone(), peer, permissions, auto_subscribe);
        s.out.push(Out::Msg(ServerMsg::Joined(Joined {
            v: VERSION,
            room: room.clone(),
            room_metadata: joined.room_metadata.clone(),
            server_version: env!("CARGO_PKG_VERSION").into(),
            participant: me.clone(),
            participants: joined.others.clone(),
            ice_servers: state.turn.ice_servers(&identity, host.as_deref()),
        })));
        chat.resume(&chat_positions, "join", &mut s.out).await;
        chat.start_fresh_room(&mut s.out).await;
        chat.renotify_alerts(&mut s.out).await;
        if s.auto_subscribe && s.perms.can_subscribe {
            for t in joined.tracks {
                s.subscribe(t).await;
            }
        }

        let mut leave_reason = "left";
        let mut last_heard = Instant::now();
        let conn_rate = Rate::new(RATE_PER_SEC, RATE_PER_SEC);
        let mut bucket = TokenBucket::full(conn_rate, Instant::now());
        let mut idle = tokio::time::interval(Duration::from_secs(1));
        let mut shutdown = state.shutdown.clone();
        'outer: loop {
            // Flush what this session has to say, in order.
            let mut failed = false;
            for m in s.out.drain(..) {
                let frame = match m {
                    Out::Msg(m) => text_msg(&m),
                    Out::Frame(f) => Message::Text(f),
                };
                if tx.feed(frame).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed || tx.flush().await.is_err() {
                leave_reason = "disconnected";
                break 'outer;
            }
            if chat.replaying() && chat.step_replay(&mut s.out).await.is_err() {
                leave_reason = "disconnected";
                let _ = tx.send(close_msg(close::TIMEOUT_OR_SLOW, "too slow")).await;
                break 'outer;
            }
            let more = chat.replaying() || !s.out.is_empty();
            let mut take_inbox = false;
            tokio::select! {
                biased;
                // Acks first: a sender waits on each, and in a busy room the inbox is never empty. Every ack
                // ready is taken at once, and the inbox with them: a fast sender's stream of acks must not starve
                // its own deliveries until the queue overflows (a flooder was closed so in CI, on a busy machine).
                Some(ack) = chat.acks.recv() => {
                    s.out.push(Out::Msg(ack));
                    while let Ok(more) = chat.acks.try_recv() {
                        s.out.push(Out::Msg(more));
                    }
                    take_inbox = true;
                }
                _ = inbox.wait() => take_inbox = true,
                frame = rx.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            last_heard = Instant::now();
                            s.out.push(Out::Msg(ServerMsg::error(ErrorCode::BadMessage, "binary frames are not part of the protocol", None)));
                            continue;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => { last_heard = Instant::now(); continue; }
                        Some(Ok(Message::Close(_))) => {
                            // Answer the client's close (else it reads the end as 1006, abnormal).
                            let _ = tx.close().await;
                            break;
                        }
                        None => break,
                        Some(Err(e)) => {
                            // Frames over the socket's own cap (a safety net above ours) and text that is not UTF-8
                            // surface here: say why and close with the matching code, never a bare reset.
                            debug!(error = %e, "socket error");
                            leave_reason = "disconnected";
                            if let Some((code, close, why)) = socket_error(&e) {
                                let _ = tx.send(text_msg(&ServerMsg::error(code, why, None))).await;
                                let _ = tx.send(close_msg(close, why)).await;
                            }
                            break;
                        }
                    };
                    last_heard = Instant::now();
                    if text.len() > max {
                        s.out.push(Out::Msg(ServerMsg::error(ErrorCode::TooLarge, format!("message over {max} bytes"), None)));
                        continue;
                    }
                    let parsed = ClientMsg::parse(&text);
                    // Chat messages have their own rate limit (per identity, and per room); everything else, chat
                    // requests such as history and receipts included, shares this bucket.
                    if !parsed.as_ref().is_ok_and(ClientMsg::is_chat_message)
                        && bucket.take(conn_rate, Instant::now()).is_err() {
                            s.out.push(Out::Msg(ServerMsg::error(ErrorCode::RateLimited, "too many messages", None)));
                            continue;
                        }
                    match parsed {
                        Ok(ClientMsg::Leave) => { leave_reason = "left"; let _ = tx.send(close_msg(close::NORMAL, "left")).await; break; }
                        Ok(msg) if msg.is_chat() => chat.handle(msg, &mut s.out).await,
                        Ok(msg) => s.handle_client(msg).await,
                        Err(e) => s.out.push(Out::Msg(ServerMsg::Error { code: e.code, message: e.message, req_type: e.req_type, id: e.id, client_id: None })),
                    }
                }
                ev = ev_rx.recv() => {
                    if let Some(RoomEvent::PermissionsChanged(p)) = &ev {
                        chat.set_grants(p.can_chat, p.room_admin);
                    }
                    if let Some(ev) = ev { s.handle_room(ev).await; }
                }
                pev = peer_events.recv() => {
                    match pev {
                        Some(PeerEvent::Closed { reason }) => {
                            info!(?reason, "media connection closed");
                            leave_reason = "disconnected";
                            let _ = tx.send(close_msg(close::GOING_AWAY, "media connection closed")).await;
                            break;
                        }
                        Some(ev) => s.handle_peer(ev).await,
                        None => { leave_reason = "disconnected"; break; }
                    }
                }
                sig = close_rx.recv() => {
                    let (code, reason) = sig.unwrap_or((close::GOING_AWAY, "server_shutdown"));
                    leave_reason = self::leave_reason(code, reason);
                    let wire_reason = if code == close::REPLACED { "replaced" } else if code == close::GOING_AWAY { "server_shutdown" } else if code == close::REMOVED { reason } else { "removed" };
                    let _ = tx.send(text_msg(&ServerMsg::Leave { reason: wire_reason.into() })).await;
                    let _ = tx.send(close_msg(code, reason)).await;
                    break;
                }
                _ = shutdown.changed() => {
                    leave_reason = "server_shutdown";
                    let _ = tx.send(text_msg(&ServerMsg::Leave { reason: "server_shutdown".into() })).await;
                    let _ = tx.send(close_msg(close::GOING_AWAY, "server shutdown")).await;
                    break;
                }
                _ = idle.tick() => {
                    chat.renotify_alerts(&mut s.out).await;
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        leave_reason = "disconnected";
                        let _ = tx.send(close_msg(close::TIMEOUT_OR_SLOW, "idle")).await;
                        break;
                    }
                }
                // Output still to flush (a replay's last chunk), or a replay to go on with: round the loop at once
                // when nothing else is ready. The branches above come first, so a long replay never holds up the
                // client's requests or its acks.
                _ = std::future::ready(()), if more => {}
            }
            if take_inbox && chat.take_inbox(&mut s.out).is_err() {
                info!("chat queue overflowed; closing");
                leave_reason = "disconnected";
                let _ = tx.send(close_msg(close::TIMEOUT_OR_SLOW, "too slow")).await;
                break;
            }
        }
        info!(reason = leave_reason, "left");
        chat.stop();
        state.rooms.leave(&room, &me.id, leave_reason);
        let _ = state.sfu.close_peer(peer).await;
    };
    sessions.sessions.track(session.instrument(span)).await
}

/// What one participant's session knows, whatever carries it: the WebSocket loop above and the HTTP-driven
/// WHIP/WHEP resources ([`crate::whip`]) feed it client requests, room events and engine events alike.
pub(crate) struct Session {
    pub(crate) state: Arc<AppState>,
    pub(crate) room: String,
    pub(crate) me: ParticipantInfo,
    pub(crate) peer: PeerId,
    /// The grants in force (from the token, changed by the admin API).
    pub(crate) perms: Permissions,
    pub(crate) auto_subscribe: bool,
    pub(crate) subscriptions: HashSet<TrackId>,
    /// `mid` → what the client said the track is, from its offers.
    pub(crate) offered_tracks: HashMap<String, OfferTrack>,
    /// Messages to send, in order, before the next wait.
    pub(crate) out: Vec<Out>,
}

impl Session {
    /// A session for the member `me` of `room`, with the engine peer `peer`.
    pub(crate) fn new(
        state: Arc<AppState>,
        room: String,
        me: ParticipantInfo,
        peer: PeerId,
        perms: Permissions,
        auto_subscribe: bool,
    ) -> Session {
        Session {
            state,
            room,
            me,
            peer,
            perms,
            auto_subscribe,
            subscriptions: HashSet::new(),
            offered_tracks: HashMap::new(),
            out: Vec::new(),
        }
    }

    fn say(&mut self, m: ServerMsg) {
        self.out.push(Out::Msg(m));
    }

    pub(crate) async fn handle_client(&mut self, msg: ClientMsg) {
        let ty = msg.type_name();
        let rid = msg.request_id().unwrap_or_default();
        match msg {
            ClientMsg::Join { .. } => self.say(ServerMsg::error(ErrorCode::AlreadyJoined, "already joined", Some(ty))),
            ClientMsg::Offer { id, sdp, tracks } => {
                let max = self.state.config.limits.max_tracks_per_participant;
                let sending = sending_media_sections(&sdp);
                if sending > max {
                    Refusals::add(&self.state.refusals.too_many_tracks);
                    self.say(ServerMsg::error_for(
                        ErrorCode::TooManyTracks,
                        format!("the offer publishes {sending} tracks; at most {max}"),
                        ty,
                        &rid,
                    ));
                    return;
                }
                if let Some(t) = tracks.iter().find(|t| t.source.is_some_and(|src| !self.perms.may_publish(src))) {
                    let (code, why) = self.publish_refusal();
                    self.say(ServerMsg::error_for(code, format!("{why} (track {})", t.mid), ty, &rid));
                    return;
                }
                for t in tracks {
                    self.offered_tracks.insert(t.mid.clone(), t);
                }
                let _ = self.state.sfu.offer(self.peer, id, sdp).await;
            }
            ClientMsg::Answer { id, sdp } => {
                let _ = self.state.sfu.answer(self.peer, id, sdp).await;
            }
            ClientMsg::Candidate { candidate, .. } => {
                if candidate.len() > 1024 || (!candidate.trim().is_empty() && str0m_candidate_invalid(&candidate)) {
                    self.say(ServerMsg::error(ErrorCode::BadCandidate, "cannot parse candidate", Some(ty)));
                } else {
                    let _ = self.state.sfu.candidate(self.peer, candidate).await;
                }
            }
            ClientMsg::Subscribe { track_ids } => {
                if !self.perms.can_subscribe {
                    self.say(ServerMsg::error(ErrorCode::PermissionDenied, "this token may not subscribe", Some(ty)));
                    return;
                }
                let mut unknown = Vec::new();
                for id in track_ids {
                    match self.state.rooms.track(&self.room, &id) {
                        Some(t) if t.participant_id != self.me.id => self.subscribe(t.sfu_track).await,
                        _ => unknown.push(id),
                    }
                }
                if let Some(e) = tracks_not_found(&unknown, ty) {
                    self.say(e);
                }
            }
            ClientMsg::Unsubscribe { track_ids } => {
                let mut unknown = Vec::new();
                for id in track_ids {
                    match self.state.rooms.track(&self.room, &id) {
                        Some(t) if self.subscriptions.contains(&t.sfu_track) => {
                            self.unsubscribe(t.sfu_track, "requested").await;
                        }
                        _ => unknown.push(id),
                    }
                }
                if let Some(e) = tracks_not_found(&unknown, ty) {
                    self.say(e);
                }
            }
            ClientMsg::Mute { track_id, muted } => {
                if !self.state.rooms.mute(&self.room, &self.me.id, &track_id, muted) {
                    self.say(ServerMsg::error(
                        ErrorCode::TrackNotFound,
                        format!("you publish no track {track_id}"),
                        Some(ty),
                    ));
                }
            }
            ClientMsg::TrackSettings { track_id, width, height, hidden } => {
                match self.state.rooms.track(&self.room, &track_id) {
                    Some(t) if self.subscriptions.contains(&t.sfu_track) => {
                        let settings = sfu::TrackSettings { size: width.zip(height), hidden };
                        let _ = self.state.sfu.track_settings(self.peer, t.sfu_track, settings).await;
                    }
                    _ => self.say(ServerMsg::error(
                        ErrorCode::TrackNotFound,
                        format!("not subscribed to {track_id}"),
                        Some(ty),
                    )),
                }
            }
            ClientMsg::Ping { ts } => self.say(ServerMsg::Pong { ts }),
            ClientMsg::Leave => {}
            other => debug!(ty = other.type_name(), "chat request outside the chat half"),
        }
    }

    pub(crate) async fn handle_room(&mut self, ev: RoomEvent) {
        match ev {
            RoomEvent::ParticipantJoined(p) => {
                if p.id != self.me.id {
                    self.say(ServerMsg::ParticipantJoined { participant: p });
                }
            }
            RoomEvent::ParticipantLeft { participant_id, reason } => {
                self.say(ServerMsg::ParticipantLeft { participant_id, reason: reason.into() });
            }
            RoomEvent::TrackPublished { participant_id, track, sfu_track } => {
                let theirs = participant_id != self.me.id;
                self.say(ServerMsg::TrackPublished { participant_id, track });
                if theirs && self.auto_subscribe && self.perms.can_subscribe {
                    self.subscribe(sfu_track).await;
                }
            }
            RoomEvent::TrackUnpublished { participant_id, track_id, sfu_track } => {
                if self.subscriptions.contains(&sfu_track) {
                    self.unsubscribe(sfu_track, "unpublished").await;
                }
                if participant_id == self.me.id {
                    // One of ours, unpublished by the room (a revoked grant): the engine stops taking it too. For
                    // a track the client stopped itself, the engine has dropped it already and this does nothing.
                    if let Err(e) = self.state.sfu.unpublish(self.peer, sfu_track).await {
                        debug!(error = %e, "engine unpublish");
                    }
                }
                self.say(ServerMsg::TrackUnpublished { participant_id, track_id });
            }
            RoomEvent::ActiveSpeakers(list) => {
                let speakers = list
                    .into_iter()
                    .map(|(participant_id, level)| SpeakerInfo {
                        participant_id,
                        level: (level * 100.0).round() / 100.0,
                    })
                    .collect();
                self.say(ServerMsg::ActiveSpeakers { speakers });
            }
            RoomEvent::TrackMuted { participant_id, track_id, muted } => {
                self.say(ServerMsg::TrackMuted { participant_id, track_id, muted });
            }
            RoomEvent::PermissionsChanged(p) => {
                if !p.can_subscribe {
                    for t in self.subscriptions.clone() {
                        self.unsubscribe(t, "permission_revoked").await;
                    }
                }
                self.perms = p.clone();
                self.say(ServerMsg::PermissionsChanged { permissions: p });
            }
            RoomEvent::RoomUpdated { metadata } => {
                self.say(ServerMsg::RoomUpdated { metadata });
            }
            RoomEvent::ParticipantUpdated(p) => {
                self.say(ServerMsg::ParticipantUpdated { participant: p });
            }
        }
    }

    pub(crate) async fn handle_peer(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Answer { id, sdp } => self.say(ServerMsg::Answer { id, sdp }),
            PeerEvent::Offer { id, sdp } => self.say(ServerMsg::Offer { id, sdp }),
            PeerEvent::OfferRejected { id, why, reason } => {
                let code = match why {
                    OfferRejection::NotAllowed => ErrorCode::PermissionDenied,
                    _ => ErrorCode::SdpRejected,
                };
                self.say(ServerMsg::error_for(code, reason, "offer", &id.into()));
            }
            PeerEvent::TrackPublished { track, mid, kind } => {
                let offered = self.offered_tracks.get(&mid);
                let source = offered.and_then(|t| t.source).unwrap_or(match kind {
                    MediaKind::Audio => TrackSource::Microphone,
                    MediaKind::Video => TrackSource::Camera,
                });
                let info = TrackInfo {
                    id: wire_track_id(track),
                    kind: kind_name(kind),
                    source,
                    name: offered.and_then(|t| t.name.clone()).unwrap_or_default(),
                    muted: false,
                    mid: Some(mid),
                };
                if !self.perms.may_publish(source) {
                    // The engine holds the track, but the room never hears of it: nobody can subscribe.
                    let (code, why) = self.publish_refusal();
                    self.say(ServerMsg::error(code, format!("{why} (track {})", info.id), Some("offer")));
                    return;
                }
                let priority = match source {
                    TrackSource::Screen => Priority::Screen,
                    _ if kind == MediaKind::Audio => Priority::Audio,
                    _ => Priority::Camera,
                };
                if let Err(e) = self.state.sfu.set_track_priority(track, priority) {
                    debug!(error = %e, "track priority not set");
                }
                self.state.rooms.publish(&self.room, &self.me.id, info, track, kind);
            }
            PeerEvent::TrackUnpublished { track } => self.state.rooms.unpublish(&self.room, &self.me.id, track),
            PeerEvent::Subscribed { track, mid } => {
                if let Some((wire, t)) = self.state.rooms.track_by_sfu(track) {
                    self.say(ServerMsg::Subscribed {
                        track_id: wire,
                        participant_id: t.participant_id,
                        kind: kind_name(t.kind),
                        mid,
                    });
                }
            }
            PeerEvent::AudioLevel { dbov, .. } => {
                self.state.rooms.audio_level(&self.room, &self.me.id, dbov, Instant::now());
            }
            PeerEvent::StreamState { track, state } => {
                let track_id = wire_track_id(track);
                self.say(match state {
                    StreamState::Active { layer } => ServerMsg::StreamState {
                        track_id,
                        state: StreamStateKind::Active,
                        layer: Some(layer.map(|l| ["q", "h", "f"][usize::from(l.min(2))].into())),
                        reason: None,
                    },
                    StreamState::Paused => ServerMsg::StreamState {
                        track_id,
                        state: StreamStateKind::Paused,
                        layer: None,
                        reason: Some("bandwidth".into()),
                    },
                });
            }
            PeerEvent::PublishLayers { track, layers } => {
                let layers = layers.into_iter().map(|(rid, active)| LayerActive { rid, active }).collect();
                self.say(ServerMsg::SetLayers { track_id: wire_track_id(track), layers });
            }
            PeerEvent::Connected => debug!("media connected"),
            PeerEvent::Closed { .. } => {}
        }
    }

    /// Why a publish is refused: no publish grant at all, or not this source.
    fn publish_refusal(&self) -> (ErrorCode, &'static str) {
        if !self.perms.can_publish || self.perms.hidden {
            (ErrorCode::PermissionDenied, "this participant may not publish")
        } else {
            (ErrorCode::SourceNotAllowed, "this participant may not publish this source")
        }
    }

    pub(crate) async fn subscribe(&mut self, track: TrackId) {
        if self.subscriptions.insert(track) {
            if let Err(e) = self.state.sfu.subscribe(self.peer, track).await {
                debug!(error = %e, "subscribe failed");
                self.subscriptions.remove(&track);
            }
        }
    }

    pub(crate) async fn unsubscribe(&mut self, track: TrackId, reason: &'static str) {
        if self.subscriptions.remove(&track) {
            let _ = self.state.sfu.unsubscribe(self.peer, track).await;
            self.say(ServerMsg::Unsubscribed { track_id: wire_track_id(track), reason: reason.into() });
        }
    }
}

fn kind_name(k: MediaKind) -> courier_protocol::MediaKind {
    match k {
        MediaKind::Audio => courier_protocol::MediaKind::Audio,
        MediaKind::Video => courier_protocol::MediaKind::Video,
    }
}

/// Cheap syntactic check so a garbage candidate gets `bad_candidate` here rather than being dropped in the engine.
pub(crate) fn str0m_candidate_invalid(c: &str) -> bool {
    let c = c.trim().strip_prefix("a=").unwrap_or(c.trim());
    let c = c.strip_prefix("candidate:").unwrap_or(c);
    // foundation component transport priority address port "typ" type
    let parts: Vec<&str> = c.split_whitespace().collect();
    parts.len() < 8
        || parts[1].parse::<u16>().is_err()
        || parts[3].parse::<u32>().is_err()
        || parts[5].parse::<u16>().is_err()
        || parts[6] != "typ"
}

/// How many media sections of an SDP offer send (publish): not disabled (port 0) and `sendrecv` or `sendonly`,
/// by their own direction or else the session's (`sendrecv` when none is given). A browser's full offer lists every
/// track it publishes, so this is the number of tracks the participant would publish after it.
fn sending_media_sections(sdp: &str) -> usize {
    fn direction(line: &str) -> Option<bool> {
        match line {
            "a=sendrecv" | "a=sendonly" => Some(true),
            "a=recvonly" | "a=inactive" => Some(false),
            _ => None,
        }
    }
    let mut session_sends = true;
    // Per media section: (enabled, its own direction).
    let mut sections: Vec<(bool, Option<bool>)> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let port = m.split_whitespace().nth(1).unwrap_or("0");
            let is_media = m.starts_with("audio ") || m.starts_with("video ");
            sections.push((is_media && port != "0", None));
        } else if let Some(d) = direction(line) {
            match sections.last_mut() {
                Some(s) => s.1 = Some(d),
                None => session_sends = d,
            }
        }
    }
    sections.iter().filter(|(enabled, dir)| *enabled && dir.unwrap_or(session_sends)).count()
}

/// Refuse a join: an `error` naming the cause, then the close code.
async fn refuse(tx: &mut futures::stream::SplitSink<WebSocket, Message>, code: ErrorCode, close: u16, message: &str) {
    debug!(?code, message, "join refused");
    let _ = tx.send(text_msg(&ServerMsg::error(code, message, Some("join")))).await;
    let _ = tx.send(close_msg(close, message)).await;
}

/// Refuse a join: count it, send the `error`, close.
async fn refuse_join(
    state: &AppState,
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    refusal: admission::Refusal,
) {
    count_refusal(state, &refusal);
    refuse(tx, refusal.code, refusal.close, &refusal.message).await;
}

fn text_msg(m: &ServerMsg) -> Message {
    Message::Text(Utf8Bytes::from(m.to_json()))
}

/// One `track_not_found` for every id of a `subscribe` or `unsubscribe` that named no track (the first few ids
/// listed), however many there were.
fn tracks_not_found(unknown: &[String], ty: &str) -> Option<ServerMsg> {
    const LISTED: usize = 8;
    let first = unknown.first()?;
    let message = match unknown.len() {
        1 => format!("no track {first}"),
        n if n <= LISTED => format!("no tracks {}", unknown.join(", ")),
        n => format!("no tracks {} and {} more", unknown[..LISTED].join(", "), n - LISTED),
    };
    Some(ServerMsg::error(ErrorCode::TrackNotFound, message, Some(ty)))
}

/// The error, close code and reason for a socket read error a client caused: a frame over the socket's cap
/// (`too_large`, 1009) or a text frame that is not UTF-8 (`bad_message`, 1007). `None`: the connection failed.
fn socket_error(e: &axum::Error) -> Option<(ErrorCode, u16, &'static str)> {
    // tungstenite's errors as axum passes them on: `Error::Capacity` and `Error::Utf8`.
    let text = e.to_string();
    if text.contains("Space limit exceeded") {
        Some((ErrorCode::TooLarge, close::MESSAGE_TOO_BIG, "frame over the size cap"))
    } else if text.contains("UTF-8 encoding error") {
        Some((ErrorCode::BadMessage, close::INVALID_PAYLOAD, "text frame is not UTF-8"))
    } else {
        None
    }
}

fn close_msg(code: u16, reason: &str) -> Message {
    let mut r = reason.to_string();
    r.truncate(120);
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(r) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sending_media_sections_counts_what_would_be_published() {
        let offer = |body: &str| format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{body}");
        let cases: &[(&str, usize)] = &[
            ("", 0),
            ("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n", 1),
            ("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n", 2),
            ("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n", 0),
            ("m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n", 0),
            ("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n", 1),
            ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", 0),
            ("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=inactive\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", 1),
        ];
        for (body, want) in cases {
            assert_eq!(sending_media_sections(&offer(body)), *want, "{body:?}");
        }
        assert_eq!(sending_media_sections("a=recvonly\nm=audio 9 X 0\n"), 0, "the session's direction");
        assert_eq!(sending_media_sections("garbage"), 0);
    }
}
