//! WHIP (RFC 9725) publish and WHEP play: a participant driven over HTTP instead of a WebSocket, for OBS,
//! GStreamer, ffmpeg and any player that speaks the two standard protocols.
//!
//! `POST /whip` with an SDP offer and the access token as `Bearer` joins the token's room and publishes what the
//! offer sends; `POST /whep` joins it and plays one publisher (its audio and video on the m-lines the offer
//! receives on). Both answer `201 Created` with the SDP answer and a `Location`, the *resource*: `PATCH` on it adds
//! trickled candidates, `DELETE` leaves. The participant goes through the same admission as a WebSocket join
//! ([`crate::session::admit`]) and is the same kind of member: the room announces it, its tracks (simulcast
//! layers included) are subscribed to as usual, webhooks and the admin API see it, and a kick ends the resource.
//!
//! One task per resource drives the shared [`Session`] (the WebSocket session's room and engine handling) with the
//! room's events, the engine's events and the resource's HTTP commands; what the session would say to a client
//! has nobody to go to and is dropped. The resource ends on `DELETE`, when the media connection ends (ICE consent
//! or DTLS gone: the engine closes the peer), when it never connects, when the admin API removes the participant
//! or a newer session of the same identity replaces it, and at server shutdown.
//!
//! The pure parts — request checks, the error mapping, the `Link` header, the trickle fragment — are functions at
//! the bottom, unit-tested.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{options, post};
use axum::Router;
use courier_protocol::{ClientMsg, ErrorCode, IceServer, ServerMsg, VERSION};
use serde::Deserialize;
use sfu::downtrack::TrackSettings;
use sfu::{PeerEvent, PeerOptions, TrackId};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::admission;
use crate::cluster::Placement;
use crate::room::RoomEvent;
use crate::session::{Membership, Out, Session};
use crate::AppState;

/// Largest SDP offer or trickle fragment accepted (413 above).
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// WHIP and WHEP resources one identity may hold at once, over all rooms (429 above).
pub const MAX_RESOURCES_PER_IDENTITY: usize = 4;
/// How long the engine has to answer an offer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A resource whose media has not connected (ICE + DTLS) this long after its answer ends.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a resource does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// WHIP: the client publishes.
    Publish,
    /// WHEP: the client plays one publisher.
    Play,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Publish => "whip",
            Kind::Play => "whep",
        }
    }
}

/// A request to a running resource.
enum Command {
    /// Remote candidates to add (already checked).
    Candidates(Vec<String>),
    /// Leave; answered when the member has left.
    Delete(oneshot::Sender<()>),
}

struct Entry {
    identity: String,
    kind: Kind,
    etag: String,
    /// The ICE username of the client's offer (a PATCH with another one is an ICE restart).
    offer_ufrag: Option<String>,
    commands: mpsc::Sender<Command>,
}

/// The live WHIP and WHEP resources, by id.
#[derive(Default)]
pub struct Resources {
    map: Mutex<HashMap<String, Entry>>,
}

impl Resources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().expect("resources lock")
    }

    /// How many resources are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Are there none?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn held_by(&self, identity: &str) -> usize {
        self.lock().values().filter(|e| e.identity == identity).count()
    }
}

/// The routes: `POST /whip`, `POST /whep`, and `PATCH`/`DELETE` on the resources, all with CORS.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/whip", post(publish).options(preflight))
        .route("/whep", post(play).options(preflight))
        .route("/whip/{id}", options(preflight).patch(patch_resource).delete(delete_resource))
        .route("/whep/{id}", options(preflight).patch(patch_resource).delete(delete_resource))
        .layer(axum::middleware::map_response(cors))
}

/// Every answer may be read by a page of any origin: the token is a bearer token, never a cookie.
async fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, Link, ETag"));
    r
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, PATCH, DELETE, OPTIONS"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "Authorization, Content-Type, If-Match"),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response()
}

/// A refused request: its status and a JSON body `{code, message}` like the admin API's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError { status, code, message: message.into(), retry_after: None }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        debug!(status = self.status.as_u16(), code = self.code, message = %self.message, "whip/whep refused");
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        r
    }
}

/// `POST /whip`: publish.
async fn publish(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, HttpError> {
    let query = req.uri().query().map(str::to_string);
    let (headers, body) = read_request(req, "application/sdp").await?;
    create(state, addr, &headers, body, Kind::Publish, PlayQuery::default(), query).await
}

/// What a WHEP URL may say: whom to play and the largest layer wanted.
#[derive(Debug, Default, Deserialize)]
pub struct PlayQuery {
    /// The identity of the publisher to play; default the first (by identity) that publishes video.
    pub participant: Option<String>,
    /// `q`, `h` or `f`: the largest simulcast layer wanted (default: whatever the bandwidth allows).
    pub layer: Option<String>,
}

/// `POST /whep`: play.
async fn play(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(q): Query<PlayQuery>,
    req: Request,
) -> Result<Response, HttpError> {
    let query = req.uri().query().map(str::to_string);
    let (headers, body) = read_request(req, "application/sdp").await?;
    create(state, addr, &headers, body, Kind::Play, q, query).await
}

/// The headers and the UTF-8 body of a request that must be of `content_type`, at most [`MAX_SDP_BYTES`].
async fn read_request(req: Request, content_type: &str) -> Result<(HeaderMap, String), HttpError> {
    let (parts, body) = req.into_parts();
    check_content_type(&parts.headers, content_type)?;
    let bytes = axum::body::to_bytes(body, MAX_SDP_BYTES).await.map_err(|_| {
        HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("body over {MAX_SDP_BYTES} bytes"))
    })?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| HttpError::new(StatusCode::BAD_REQUEST, "bad_request", "the body is not UTF-8"))?;
    Ok((parts.headers, text))
}

async fn create(
    state: Arc<AppState>,
    addr: SocketAddr,
    headers: &HeaderMap,
    offer: String,
    kind: Kind,
    q: PlayQuery,
    query: Option<String>,
) -> Result<Response, HttpError> {
    check_offer(&offer)?;
    let max_layer = q.layer.as_deref().map(layer_size).transpose()?;
    let token = bearer(headers)?;
    let claims = crate::session::admit(&state, VERSION, token, addr.ip()).map_err(|r| {
        crate::session::count_refusal(&state, &r);
        refusal_error(&r)
    })?;
    let grants = &claims.video;
    match kind {
        Kind::Publish if !grants.can_publish || grants.hidden => {
            return Err(HttpError::new(StatusCode::FORBIDDEN, "permission_denied", "the token may not publish"));
        }
        Kind::Play if !grants.can_subscribe => {
            return Err(HttpError::new(StatusCode::FORBIDDEN, "permission_denied", "the token may not subscribe"));
        }
        _ => {}
    }
    // In a cluster the room lives on one node: send the client there (RFC 9725 allows a redirect of the POST).
    if let Some(cluster) = &state.cluster {
        match cluster.place_join(&state, &claims.video.room).await {
            Placement::Here => {}
            Placement::There { node, url } => {
                let base = crate::cluster::registry::http_base(&url).unwrap_or(url);
                let location = match &query {
                    Some(q) => format!("{base}/{}?{q}", kind.path()),
                    None => format!("{base}/{}", kind.path()),
                };
                debug!(node = %node, location = %location, "redirecting a WHIP/WHEP request to the room's node");
                let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                return Ok(r);
            }
            Placement::Unavailable => {
                let mut e = HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    "the cluster cannot place the room now; retry",
                );
                e.retry_after = Some(1);
                return Err(e);
            }
        }
    }
    let identity = claims.sub.clone();
    if state.whip.held_by(&identity) >= MAX_RESOURCES_PER_IDENTITY {
        let mut e = HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_resources",
            format!("this identity holds {MAX_RESOURCES_PER_IDENTITY} WHIP/WHEP resources already"),
        );
        e.retry_after = Some(5);
        return Err(e);
    }
    let room = claims.video.room.clone();
    // WHEP: whom to play, before joining (a viewer of nobody is refused without a trace in the room).
    let tracks = match kind {
        Kind::Publish => Vec::new(),
        Kind::Play => playable(&state, &room, &identity, q.participant.as_deref())?,
    };
    let name = claims.name.clone().unwrap_or_else(|| identity.clone());
    let span =
        info_span!("whip", kind = kind.path(), room = %room, identity = %identity, participant = tracing::field::Empty);
    let opts = PeerOptions {
        can_publish: kind == Kind::Publish,
        can_subscribe: kind == Kind::Play,
        label: format!("{room}/{identity}"),
        client_offers: kind == Kind::Play,
        relay: false,
    };
    let (peer, mut peer_events) = state.sfu.create_peer(opts).await.map_err(|e| {
        warn!(error = %e, "cannot create peer");
        internal()
    })?;
    let Membership { joined, permissions, events: ev_rx, close: close_rx } =
        match crate::session::join_room(&state, &claims, &name, peer) {
            Ok(m) => m,
            Err(code) => {
                let _ = state.sfu.close_peer(peer).await;
                let r = admission::room_refusal(code);
                crate::session::count_refusal(&state, &r);
                return Err(refusal_error(&r));
            }
        };
    span.record("participant", joined.me.id.as_str());
    let mut s = Session::new(state.clone(), room.clone(), joined.me.clone(), peer, permissions, false);
    // From here on a failure must leave the room again.
    let answer = async {
        match kind {
            Kind::Publish => {
                // The WebSocket session's own offer handling: the track cap and the sources the token allows.
                s.handle_client(ClientMsg::Offer { id: 1, sdp: offer.clone(), tracks: Vec::new() }).await;
                if let Some(e) = refused_offer(&s.out) {
                    return Err(e);
                }
            }
            Kind::Play => {
                for (track, _) in &tracks {
                    s.subscribe(*track).await;
                }
                if let Some(size) = max_layer.flatten() {
                    for (track, kind) in &tracks {
                        if *kind == sfu::MediaKind::Video {
                            let settings = TrackSettings { size: Some(size), hidden: false };
                            let _ = state.sfu.track_settings(peer, *track, settings).await;
                        }
                    }
                }
                let _ = state.sfu.offer(peer, 1, offer.clone()).await;
            }
        }
        s.out.clear();
        wait_answer(&mut s, &mut peer_events).await
    }
    .instrument(span.clone())
    .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            state.rooms.leave(&room, &s.me.id, "disconnected");
            let _ = state.sfu.close_peer(peer).await;
            return Err(e);
        }
    };
    let id = crate::room::random_token(16);
    let etag = format!("\"{}\"", crate::room::random_token(12));
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    state.whip.lock().insert(
        id.clone(),
        Entry {
            identity: identity.clone(),
            kind,
            etag: etag.clone(),
            offer_ufrag: ice_ufrag(&offer),
            commands: cmd_tx,
        },
    );
    span.in_scope(|| info!("resource created"));
    let driver = Driver { s, peer_events, room_events: ev_rx, close: close_rx, commands: cmd_rx, id: id.clone() };
    let tracker = state.clone();
    tokio::spawn(async move { tracker.sessions.track(driver.run().instrument(span)).await });

    let location = format!("/{}/{id}", kind.path());
    let mut r = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp".to_string()), (header::LOCATION, location), (header::ETAG, etag)],
        answer,
    )
        .into_response();
    // The TURN relay (built in or external) with this participant's credentials, as `joined.ice_servers` gives them.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(crate::turn::host_of);
    for link in ice_server_links(&state.turn.ice_servers(&identity, host)) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            r.headers_mut().append(header::LINK, v);
        }
    }
    Ok(r)
}

/// The engine tracks of the publisher a WHEP viewer plays, with their kinds.
fn playable(
    state: &AppState,
    room: &str,
    viewer: &str,
    wanted: Option<&str>,
) -> Result<Vec<(TrackId, sfu::MediaKind)>, HttpError> {
    let members = state.rooms.participants(room).unwrap_or_default();
    let tracks_of = |info: &courier_protocol::ParticipantInfo| -> Vec<(TrackId, sfu::MediaKind)> {
        info.tracks.iter().filter_map(|t| state.rooms.track(room, &t.id)).map(|t| (t.sfu_track, t.kind)).collect()
    };
    let publisher = match wanted {
        Some(identity) => members.iter().find(|(m, _)| m.info.identity == identity && !m.permissions.hidden),
        None => members.iter().find(|(m, _)| {
            m.info.identity != viewer
                && !m.permissions.hidden
                && tracks_of(&m.info).iter().any(|(_, k)| *k == sfu::MediaKind::Video)
        }),
    };
    let Some((p, _)) = publisher else {
        let what = wanted.map_or("no participant publishes video".to_string(), |w| format!("no participant {w}"));
        return Err(HttpError::new(StatusCode::NOT_FOUND, "participant_not_found", what));
    };
    let tracks = tracks_of(&p.info);
    if tracks.is_empty() {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "track_not_found",
            format!("{} publishes nothing", p.info.identity),
        ));
    }
    Ok(tracks)
}

/// The first refusal the session said about the offer, as an HTTP error.
fn refused_offer(out: &[Out]) -> Option<HttpError> {
    out.iter().find_map(|o| match o {
        Out::Msg(ServerMsg::Error { code, message, .. }) => Some(match code {
            ErrorCode::PermissionDenied | ErrorCode::SourceNotAllowed => {
                HttpError::new(StatusCode::FORBIDDEN, "permission_denied", message.clone())
            }
            _ => HttpError::new(StatusCode::BAD_REQUEST, "sdp_rejected", message.clone()),
        }),
        _ => None,
    })
}

/// The engine's answer to offer 1 (its other events meanwhile go through the session).
async fn wait_answer(s: &mut Session, events: &mut mpsc::UnboundedReceiver<PeerEvent>) -> Result<String, HttpError> {
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(PeerEvent::Answer { sdp, .. })) => return Ok(sdp),
            Ok(Some(PeerEvent::OfferRejected { why, reason, .. })) => {
                return Err(match why {
                    sfu::peer::OfferRejection::NotAllowed => {
                        HttpError::new(StatusCode::FORBIDDEN, "permission_denied", reason)
                    }
                    _ => HttpError::new(StatusCode::BAD_REQUEST, "sdp_rejected", reason),
                })
            }
            Ok(Some(ev)) => {
                s.handle_peer(ev).await;
                s.out.clear();
            }
            Ok(None) => return Err(internal()),
            Err(_) => {
                warn!("no answer from the engine");
                return Err(internal());
            }
        }
    }
}

fn internal() -> HttpError {
    HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
}

/// One resource's task: see the module doc.
struct Driver {
    s: Session,
    peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    room_events: mpsc::Receiver<RoomEvent>,
    close: mpsc::Receiver<crate::room::CloseSignal>,
    commands: mpsc::Receiver<Command>,
    id: String,
}

impl Driver {
    async fn run(mut self) {
        let state = self.s.state.clone();
        let mut shutdown = state.shutdown.clone();
        let connect_deadline = tokio::time::sleep(CONNECT_TIMEOUT);
        tokio::pin!(connect_deadline);
        let mut connected = false;
        let mut deleted = None;
        let reason: &'static str = loop {
            // Nobody reads what the session would tell a WebSocket client.
            self.s.out.clear();
            tokio::select! {
                ev = self.peer_events.recv() => match ev {
                    Some(PeerEvent::Closed { reason }) => {
                        info!(?reason, "media connection closed");
                        break "disconnected";
                    }
                    Some(PeerEvent::Connected) => connected = true,
                    Some(ev) => self.s.handle_peer(ev).await,
                    None => break "disconnected",
                },
                ev = self.room_events.recv() => {
                    if let Some(ev) = ev { self.s.handle_room(ev).await; }
                }
                sig = self.close.recv() => {
                    let (code, why) = sig.unwrap_or((courier_protocol::close::GOING_AWAY, "server_shutdown"));
                    break crate::session::leave_reason(code, why);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Candidates(list)) => {
                        for c in list {
                            let _ = state.sfu.candidate(self.s.peer, c).await;
                        }
                    }
                    Some(Command::Delete(done)) => {
                        deleted = Some(done);
                        break "left";
                    }
                    None => break "left",
                },
                _ = shutdown.changed() => break "server_shutdown",
                _ = &mut connect_deadline, if !connected => {
                    info!("media never connected");
                    break "disconnected";
                }
            }
        };
        state.whip.lock().remove(&self.id);
        info!(reason, "left");
        state.rooms.leave(&self.s.room, &self.s.me.id, reason);
        let _ = state.sfu.close_peer(self.s.peer).await;
        if let Some(done) = deleted {
            let _ = done.send(());
        }
    }
}

/// `PATCH` on a resource: trickled candidates (RFC 8840 fragment). An ICE restart is refused with 422.
async fn patch_resource(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Result<Response, HttpError> {
    let kind = kind_of(req.uri());
    let (headers, body) = read_request(req, "application/trickle-ice-sdpfrag").await?;
    let (etag, offer_ufrag, commands) = {
        let map = state.whip.lock();
        let e = map.get(&id).filter(|e| e.kind == kind).ok_or_else(not_found)?;
        (e.etag.clone(), e.offer_ufrag.clone(), e.commands.clone())
    };
    let frag = parse_sdpfrag(&body)?;
    let if_match = headers.get(header::IF_MATCH).map(|m| m.to_str().unwrap_or(""));
    if restarts_ice(if_match, &frag, offer_ufrag.as_deref()) {
        return Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ice_restart_unsupported",
            "ICE restart is not supported: DELETE this resource and POST a new offer",
        ));
    }
    if if_match.is_some_and(|m| m.trim() != etag) {
        return Err(HttpError::new(StatusCode::PRECONDITION_FAILED, "etag_mismatch", "If-Match does not match"));
    }
    if !frag.candidates.is_empty() && commands.send(Command::Candidates(frag.candidates)).await.is_err() {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE` on a resource: the participant leaves; 200 once it has.
async fn delete_resource(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Result<Response, HttpError> {
    let kind = kind_of(&uri);
    let commands =
        state.whip.lock().get(&id).filter(|e| e.kind == kind).map(|e| e.commands.clone()).ok_or_else(not_found)?;
    let (done_tx, done_rx) = oneshot::channel();
    if commands.send(Command::Delete(done_tx)).await.is_err() {
        return Err(not_found());
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
    Ok(StatusCode::OK.into_response())
}

/// Which kind of resource a path names (`/whip/…` or `/whep/…`).
fn kind_of(uri: &axum::http::Uri) -> Kind {
    if uri.path().starts_with("/whep") {
        Kind::Play
    } else {
        Kind::Publish
    }
}

fn not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

// --- pure parts ---

/// The `Content-Type` must be `want` (parameters allowed); 415 if not.
fn check_content_type(headers: &HeaderMap, want: &str) -> Result<(), HttpError> {
    let got = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be {want}"),
        ))
    }
}

/// The token of an `Authorization: Bearer` header; 401 if there is none.
fn bearer(headers: &HeaderMap) -> Result<&str, HttpError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            HttpError::new(StatusCode::UNAUTHORIZED, "invalid_token", "an Authorization: Bearer token is required")
        })
}

/// A cheap look at the offer before the engine parses it: an SDP session with at least one media section.
fn check_offer(sdp: &str) -> Result<(), HttpError> {
    let t = sdp.trim_start();
    if !t.starts_with("v=0") || !t.lines().any(|l| l.starts_with("m=")) {
        return Err(HttpError::new(StatusCode::BAD_REQUEST, "sdp_rejected", "the body is not an SDP offer"));
    }
    Ok(())
}

/// The render size that makes the allocator stop at simulcast layer `q`, `h` or `f` (`None`: no limit).
fn layer_size(layer: &str) -> Result<Option<(u16, u16)>, HttpError> {
    match layer {
        "q" => Ok(Some((320, 180))),
        "h" => Ok(Some((640, 360))),
        "f" => Ok(None),
        _ => Err(HttpError::new(StatusCode::BAD_REQUEST, "bad_request", "layer must be q, h or f")),
    }
}

/// The HTTP answer to a refused join. Bad tokens are 401, a token that does not allow the room 403, the server's
/// and the room's limits 429/503, rooms that do not take this participant 403/404.
pub fn refusal_error(r: &admission::Refusal) -> HttpError {
    let retry_after = |s| if r.code == ErrorCode::RateLimited { Some(s) } else { None };
    let (status, code) = match r.code {
        ErrorCode::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
        ErrorCode::TokenExpired => (StatusCode::UNAUTHORIZED, "token_expired"),
        ErrorCode::NotAllowed => (StatusCode::FORBIDDEN, "not_allowed"),
        ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ErrorCode::ServerDraining => (StatusCode::SERVICE_UNAVAILABLE, "server_draining"),
        ErrorCode::RoomFull => (StatusCode::SERVICE_UNAVAILABLE, "room_full"),
        ErrorCode::TooManyRooms => (StatusCode::SERVICE_UNAVAILABLE, "too_many_rooms"),
        ErrorCode::RoomNotFound => (StatusCode::NOT_FOUND, "room_not_found"),
        ErrorCode::RoomNotOpen => (StatusCode::FORBIDDEN, "room_not_open"),
        ErrorCode::RoomClosed => (StatusCode::FORBIDDEN, "room_closed"),
        ErrorCode::NotInvited => (StatusCode::FORBIDDEN, "not_invited"),
        _ => (StatusCode::FORBIDDEN, "join_refused"),
    };
    let mut e = HttpError::new(status, code, r.message.clone());
    e.retry_after = retry_after(1).or(match r.code {
        ErrorCode::ServerDraining | ErrorCode::RoomFull | ErrorCode::TooManyRooms => Some(5),
        _ => None,
    });
    e
}

/// The `Link` header values announcing `servers` (RFC 9725 section 4.6), one per URL.
pub fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    servers
        .iter()
        .flat_map(|s| {
            s.urls.iter().map(move |url| {
                if url.starts_with("stun:") {
                    format!("<{url}>; rel=\"ice-server\"")
                } else {
                    format!(
                        "<{url}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        quote(&s.username),
                        quote(&s.credential)
                    )
                }
            })
        })
        .collect()
}

/// A trickle-ice-sdpfrag (RFC 8840): the ICE credentials it carries, if any, and its candidates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SdpFrag {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    pub candidates: Vec<String>,
}

/// Candidates per fragment at most (a client gathers a handful).
const MAX_FRAG_CANDIDATES: usize = 64;

/// Does a PATCH ask for an ICE restart? `If-Match: *` is the RFC's marker; a fragment carrying an ICE username
/// other than the offer's is one too.
pub fn restarts_ice(if_match: Option<&str>, frag: &SdpFrag, offer_ufrag: Option<&str>) -> bool {
    if_match.is_some_and(|m| m.trim() == "*") || frag.ufrag.as_deref().is_some_and(|u| Some(u) != offer_ufrag)
}

/// The ICE username fragment of an SDP (its first `a=ice-ufrag`).
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:")).map(|u| u.trim().to_string())
}

/// Parse a trickle fragment; 400 on a line that is not one.
pub fn parse_sdpfrag(body: &str) -> Result<SdpFrag, HttpError> {
    let bad = |why: &str| HttpError::new(StatusCode::BAD_REQUEST, "bad_candidate", why.to_string());
    let mut f = SdpFrag::default();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            f.ufrag = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            f.pwd = Some(v.to_string());
        } else if let Some(c) = line.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                if c.len() > 1024 || crate::session::str0m_candidate_invalid(c) {
                    return Err(bad("cannot parse candidate"));
                }
                if f.candidates.len() >= MAX_FRAG_CANDIDATES {
                    return Err(bad("too many candidates"));
                }
                f.candidates.push(c.to_string());
            }
            // a=mid, a=ice-options, a=end-of-candidates, a=group: nothing to do for an ICE-lite server.
        } else if line.starts_with("m=") || line.starts_with("c=") {
            // The media line the candidates belong to: one bundled transport, so all are the same.
        } else {
            return Err(bad("not a trickle-ice-sdpfrag line"));
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn content_type_and_bearer() {
        let ok = headers(&[("content-type", "application/sdp"), ("authorization", "Bearer abc")]);
        assert!(check_content_type(&ok, "application/sdp").is_ok());
        assert!(check_content_type(&headers(&[("content-type", "Application/SDP; charset=utf-8")]), "application/sdp")
            .is_ok());
        for h in [headers(&[]), headers(&[("content-type", "text/plain")])] {
            assert_eq!(check_content_type(&h, "application/sdp").unwrap_err().status, 415);
        }
        assert_eq!(bearer(&ok).unwrap(), "abc");
        for h in [headers(&[]), headers(&[("authorization", "Basic abc")]), headers(&[("authorization", "Bearer ")])] {
            assert_eq!(bearer(&h).unwrap_err().status, 401);
        }
    }

    #[test]
    fn offers_and_layers() {
        assert!(check_offer("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio 9 X 111\r\n").is_ok());
        for bad in ["", "hello", "v=0\r\ns=-\r\n"] {
            assert_eq!(check_offer(bad).unwrap_err().status, 400, "{bad:?}");
        }
        assert_eq!(layer_size("q").unwrap(), Some((320, 180)));
        assert_eq!(layer_size("h").unwrap(), Some((640, 360)));
        assert_eq!(layer_size("f").unwrap(), None);
        assert_eq!(layer_size("x").unwrap_err().status, 400);
    }

    #[test]
    fn every_join_refusal_has_its_status() {
        let cases = [
            (ErrorCode::InvalidToken, 401),
            (ErrorCode::TokenExpired, 401),
            (ErrorCode::NotAllowed, 403),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::ServerDraining, 503),
            (ErrorCode::RoomFull, 503),
            (ErrorCode::TooManyRooms, 503),
            (ErrorCode::RoomNotFound, 404),
            (ErrorCode::RoomNotOpen, 403),
            (ErrorCode::RoomClosed, 403),
            (ErrorCode::NotInvited, 403),
        ];
        for (code, status) in cases {
            let r = admission::Refusal { code, close: 0, message: "m".into(), counter: None };
            let e = refusal_error(&r);
            assert_eq!(e.status.as_u16(), status, "{code:?}");
            assert_eq!(e.message, "m");
            if status == 503 || status == 429 {
                assert!(e.retry_after.is_some(), "{code:?} says when to retry");
            }
        }
    }

    #[test]
    fn link_headers() {
        assert!(ice_server_links(&[]).is_empty());
        let servers = [
            IceServer { urls: vec!["stun:a.example:3478".into()], username: String::new(), credential: String::new() },
            IceServer {
                urls: vec!["turn:a.example:3478?transport=udp".into(), "turns:a.example:5349".into()],
                username: "1700000000:PA_x".into(),
                credential: "s\"ecret".into(),
            },
        ];
        assert_eq!(
            ice_server_links(&servers),
            vec![
                "<stun:a.example:3478>; rel=\"ice-server\"".to_string(),
                "<turn:a.example:3478?transport=udp>; rel=\"ice-server\"; username=\"1700000000:PA_x\"; \
                 credential=\"s\\\"ecret\"; credential-type=\"password\""
                    .to_string(),
                "<turns:a.example:5349>; rel=\"ice-server\"; username=\"1700000000:PA_x\"; \
                 credential=\"s\\\"ecret\"; credential-type=\"password\""
                    .to_string(),
            ]
        );
    }

    #[test]
    fn trickle_fragments() {
        let frag = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw\r\n\
                    a=end-of-candidates\r\n";
        let f = parse_sdpfrag(frag).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.candidates[0].starts_with("candidate:1387637174"));
        assert_eq!(parse_sdpfrag("").unwrap(), SdpFrag::default());
        for bad in ["a=candidate:garbage\r\n", "hello\r\n"] {
            assert_eq!(parse_sdpfrag(bad).unwrap_err().status, 400, "{bad:?}");
        }
        let restart = |m: Option<&str>, u: Option<&str>| {
            restarts_ice(m, &SdpFrag { ufrag: u.map(String::from), ..SdpFrag::default() }, Some("EsAw"))
        };
        assert!(!restart(None, None));
        assert!(!restart(Some("\"etag\""), Some("EsAw")), "the offer's credentials again");
        assert!(restart(Some("*"), None));
        assert!(restart(None, Some("new")));
        assert_eq!(ice_ufrag("v=0\r\na=ice-ufrag:abc\r\n").as_deref(), Some("abc"));
        let many = "a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n".repeat(MAX_FRAG_CANDIDATES + 1);
        assert_eq!(parse_sdpfrag(&many).unwrap_err().status, 400);
    }
}
