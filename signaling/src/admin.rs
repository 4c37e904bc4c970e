//! The admin REST API (`/api/v1`): rooms, participants, tracks, messages and identities, for the application's
//! backend, authenticated with tokens signed by an API key (`Authorization: Bearer …`).
//!
//! Every route is declared once, through [`Api::route`], with its method, path, summary and the grant it needs;
//! the axum router and the OpenAPI 3 document served at `/openapi.json` are both built from those declarations, so
//! a route cannot exist undocumented. Every failure is an [`ApiError`], answered as `{"code", "message"}` with a
//! stable snake_case code and its HTTP status. Room state lives in [`crate::room::Rooms`], history in the chat
//! store: handlers only check, call them, and shape the answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{ApiGrant, Claims, Permissions, TokenError};
use crate::lifecycle::{RoomOptions, RoomPhase, Schedule};
use crate::room::{CreateError, ParticipantUpdate};
use crate::AppState;
use courier_chat::store::{Amend, MessageState, PageFrom, Replay, StoreError, Tombstone};
use courier_chat::{ConversationId, Flags, NewMessage, Priority};
use courier_protocol::admin::{ParticipantList, ParticipantSummary};

/// Why an API call failed. Each variant has one stable code and one HTTP status (see `docs/protocol.md`, "Admin
/// API").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Unauthorized,
    /// Bad signature, unknown key, malformed.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// Expired or not yet valid (beyond the allowed clock skew).
    #[error("token expired or not yet valid")]
    TokenExpired,
    /// The token lacks the grant this call needs.
    #[error("the token lacks the {0} grant")]
    PermissionDenied(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("no room {0}")]
    RoomNotFound(String),
    #[error("a room {0} exists")]
    RoomExists(String),
    #[error("no participant {0}")]
    ParticipantNotFound(String),
    #[error("no track {0}")]
    TrackNotFound(String),
    #[error("no message {0} to recall")]
    MessageNotFound(u64),
    /// The room is closed; its history is read-only.
    #[error("room {0} is closed")]
    RoomClosed(String),
    /// The server has `limits.max_rooms` rooms.
    #[error("the server has as many rooms as it may")]
    TooManyRooms,
    /// Too many requests from this address or identity (`[limits] api_*`); retry after `retry_after_secs`
    /// (also in `Retry-After`).
    #[error("too many requests {what}; retry in {retry_after_secs} s")]
    RateLimited { what: &'static str, retry_after_secs: u64 },
    /// The request body is over `limits.max_body_bytes`.
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    /// The chat store is busy; retry later.
    #[error("busy, retry later")]
    Overloaded,
    /// In a cluster: Redis cannot be asked now; retry.
    #[error("the cluster cannot answer now; retry")]
    ClusterUnavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::TokenExpired => "token_expired",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::RoomNotFound(_) => "room_not_found",
            ApiError::RoomExists(_) => "room_exists",
            ApiError::ParticipantNotFound(_) => "participant_not_found",
            ApiError::TrackNotFound(_) => "track_not_found",
            ApiError::MessageNotFound(_) => "message_not_found",
            ApiError::RoomClosed(_) => "room_closed",
            ApiError::TooManyRooms => "too_many_rooms",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Overloaded => "overloaded",
            ApiError::ClusterUnavailable => "cluster_unavailable",
            ApiError::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::InvalidToken(_) | ApiError::TokenExpired => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::RoomNotFound(_)
            | ApiError::ParticipantNotFound(_)
            | ApiError::TrackNotFound(_)
            | ApiError::MessageNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::RoomExists(_) | ApiError::RoomClosed(_) => StatusCode::CONFLICT,
            ApiError::TooManyRooms | ApiError::Overloaded | ApiError::ClusterUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code, for the OpenAPI document.
    pub const CODES: &'static [&'static str] = &[
        "unauthorized",
        "invalid_token",
        "token_expired",
        "permission_denied",
        "bad_request",
        "room_not_found",
        "room_exists",
        "participant_not_found",
        "track_not_found",
        "message_not_found",
        "room_closed",
        "too_many_rooms",
        "rate_limited",
        "too_large",
        "overloaded",
        "cluster_unavailable",
        "internal",
    ];
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        match e {
            TokenError::Expired => ApiError::TokenExpired,
            other => ApiError::InvalidToken(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Overloaded => ApiError::Overloaded,
            StoreError::Invalid { .. } | StoreError::TooLarge { .. } => ApiError::BadRequest(e.to_string()),
            other => {
                tracing::warn!(error = %other, "admin API: chat store failed");
                ApiError::Internal
            }
        }
    }
}

/// The error body.
#[derive(Debug, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), Json(ErrorBody { code: self.code(), message: self.to_string() })).into_response();
        if let ApiError::RateLimited { retry_after_secs, .. } = self {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A verified admin token.
pub struct Admin(pub Claims);

impl Admin {
    fn need(&self, grant: ApiGrant<'_>) -> ApiResult<()> {
        if self.0.video.allows(grant) {
            return Ok(());
        }
        Err(ApiError::PermissionDenied(match grant {
            ApiGrant::Create => "room_create",
            ApiGrant::List => "room_list",
            ApiGrant::Admin(_) => "room_admin",
            ApiGrant::AdminAll => "room_admin (room \"*\")",
        }))
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> ApiResult<Admin> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or(ApiError::Unauthorized)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or(ApiError::Unauthorized)?;
        Ok(Admin(state.keys.verify_api(token.trim(), state.config.limits.token_leeway_secs)?))
    }
}

/// A JSON body, refused as `bad_request` in the API's own error shape.
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

/// One documented route.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    pub method: Method,
    /// axum syntax (`/api/v1/rooms/{room}`), which is also OpenAPI's.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    /// The grant it needs (`None`: no token).
    pub grant: Option<&'static str>,
    /// JSON schema of the request body, if it takes one.
    pub body: Option<Value>,
    /// Query parameters.
    pub query: &'static [&'static str],
}

/// The routes and their documentation, built together.
pub struct Api {
    router: Router<Arc<AppState>>,
    docs: Vec<RouteDoc>,
}

impl Api {
    fn new() -> Api {
        Api { router: Router::new(), docs: Vec::new() }
    }

    /// Declare one route: served by `handler`, documented by `doc`.
    fn route(mut self, doc: RouteDoc, handler: MethodRouter<Arc<AppState>>) -> Api {
        self.router = self.router.route(doc.path, handler);
        self.docs.push(doc);
        self
    }
}

fn doc(method: Method, path: &'static str, operation_id: &'static str, summary: &'static str) -> RouteDoc {
    RouteDoc { method, path, operation_id, summary, grant: None, body: None, query: &[] }
}

impl RouteDoc {
    fn grant(mut self, g: &'static str) -> RouteDoc {
        self.grant = Some(g);
        self
    }
    fn body(mut self, schema: Value) -> RouteDoc {
        self.body = Some(schema);
        self
    }
    fn query(mut self, q: &'static [&'static str]) -> RouteDoc {
        self.query = q;
        self
    }
}

/// Every admin route, and `/openapi.json`.
pub fn api() -> Api {
    use axum::routing::{delete, patch, post};
    let rooms = "/api/v1/rooms";
    let room = "/api/v1/rooms/{room}";
    let participants = "/api/v1/rooms/{room}/participants";
    let participant = "/api/v1/rooms/{room}/participants/{identity}";
    let track = "/api/v1/rooms/{room}/tracks/{track_id}";
    let messages = "/api/v1/rooms/{room}/messages";
    let message = "/api/v1/rooms/{room}/messages/{seq}";
    let identity = "/api/v1/identities/{identity}";
    let create_schema = json!({"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "max_participants": {"type": "integer"},
        "empty_timeout_secs": {"type": "integer"}, "metadata": {"type": "string"},
        "retention": {"type": "string", "enum": ["keep"]},
        "start": {"description": "unix seconds or RFC 3339", "oneOf": [{"type": "integer"}, {"type": "string"}]},
        "end": {"description": "unix seconds or RFC 3339", "oneOf": [{"type": "integer"}, {"type": "string"}]},
        "members": {"type": "array", "items": {"type": "string"}}}});
    let update_schema = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "metadata": {"type": "string"},
        "permissions": {"type": "object", "properties": {
            "can_publish": {"type": "boolean"}, "can_subscribe": {"type": "boolean"},
            "can_chat": {"type": "boolean"}, "room_admin": {"type": "boolean"}, "hidden": {"type": "boolean"},
            "can_publish_sources": {"type": "array", "items": {"type": "string",
                "enum": ["camera", "microphone", "screen", "screen_audio"]}}}}}});
    let message_schema = json!({"type": "object", "required": ["payload"], "properties": {
        "payload": {}, "kind": {"type": "string"}, "sender": {"type": "string"},
        "client_id": {"type": "string"}, "must_ack": {"type": "boolean"}}});
    Api::new()
        .route(doc(Method::GET, "/openapi.json", "openapi", "This document."), get(openapi))
        .route(
            doc(Method::POST, rooms, "createRoom", "Create a room (optionally scheduled).")
                .grant("room_create")
                .body(create_schema),
            post(create_room),
        )
        .route(doc(Method::GET, rooms, "listRooms", "List rooms.").grant("room_list"), get(list_rooms))
        .route(doc(Method::GET, room, "getRoom", "One room.").grant("room_list or room_admin"), get(get_room))
        .route(
            doc(Method::DELETE, room, "closeRoom", "Close a room: everyone is removed.").grant("room_create"),
            delete(close_room),
        )
        .route(
            doc(Method::PATCH, room, "updateRoom", "Change the room's metadata; members hear room_updated.")
                .grant("room_admin")
                .body(
                    json!({"type": "object", "required": ["metadata"], "properties": {"metadata": {"type": "string"}}}),
                ),
            patch(update_room),
        )
        .route(
            doc(Method::GET, participants, "listParticipants", "The room's participants.").grant("room_admin"),
            get(list_participants),
        )
        .route(
            doc(Method::GET, participant, "getParticipant", "One participant.").grant("room_admin"),
            get(get_participant),
        )
        .route(
            doc(Method::DELETE, participant, "removeParticipant", "Remove a participant.").grant("room_admin"),
            delete(remove_participant),
        )
        .route(
            doc(Method::PATCH, participant, "updateParticipant", "Change permissions, name or metadata; at once.")
                .grant("room_admin")
                .body(update_schema),
            patch(update_participant),
        )
        .route(
            doc(Method::PATCH, track, "muteTrack", "Mute or unmute a published track.")
                .grant("room_admin")
                .body(json!({"type": "object", "required": ["muted"], "properties": {"muted": {"type": "boolean"}}})),
            patch(mute_track),
        )
        .route(
            doc(Method::POST, messages, "sendMessage", "Send a high-priority system message to the room's chat.")
                .grant("room_admin")
                .body(message_schema),
            post(send_message),
        )
        .route(
            doc(Method::GET, messages, "listMessages", "A page of the room's chat history.")
                .grant("room_admin")
                .query(&["before", "after", "limit"]),
            get(list_messages),
        )
        .route(
            doc(Method::DELETE, message, "recallMessage", "Recall a message of the room's chat.").grant("room_admin"),
            delete(recall_message),
        )
        .route(
            doc(Method::DELETE, identity, "eraseIdentity", "Erase every message and receipt of an identity.")
                .grant("room_admin (room \"*\")"),
            delete(erase_identity),
        )
        .route(
            doc(Method::GET, "/api/v1/identities/{identity}/presence", "getPresence", "Where an identity is online.")
                .grant("room_list"),
            get(get_presence),
        )
        .route(
            doc(Method::GET, "/api/v1/nodes", "listNodes", "The nodes of the cluster (this node alone without one).")
                .grant("room_list"),
            get(list_nodes),
        )
}

/// `GET /api/v1/nodes`: the live nodes as of this node's last heartbeat; a node on its own lists itself.
async fn list_nodes(State(state): State<Arc<AppState>>, admin: Admin) -> ApiResult<Response> {
    admin.need(ApiGrant::List)?;
    let nodes = match &state.cluster {
        Some(c) => {
            json!({ "cluster": true, "node": c.node_id(), "redis_reachable": c.reachable(), "nodes": c.nodes() })
        }
        None => {
            let (rooms, participants, tracks) = state.rooms.counts();
            json!({ "cluster": false, "node": null, "nodes": [{
                "id": null, "url": null, "region": null, "udp": state.sfu.local_addr().to_string(),
                "version": env!("CARGO_PKG_VERSION"),
                "load": { "rooms": rooms, "participants": participants, "tracks": tracks }
            }]})
        }
    };
    Ok(Json(nodes).into_response())
}

/// `GET /api/v1/identities/{identity}/presence`: the identity's sessions, on every node.
async fn get_presence(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(identity): Path<String>,
) -> ApiResult<Response> {
    admin.need(ApiGrant::List)?;
    let sessions: Vec<crate::cluster::registry::PresenceEntry> = match &state.cluster {
        Some(c) => c.presence(&identity).await.map_err(|e| {
            tracing::debug!(error = %e, "presence not read");
            ApiError::ClusterUnavailable
        })?,
        None => state
            .rooms
            .members()
            .into_iter()
            .filter(|m| m.identity == identity)
            .map(|m| crate::cluster::registry::PresenceEntry {
                node: String::new(),
                room: m.room,
                participant_id: m.participant_id,
                since_ms: m.joined_ms,
            })
            .collect(),
    };
    Ok(Json(json!({ "identity": identity, "online": !sessions.is_empty(), "sessions": sessions })).into_response())
}

/// The admin routes as a router (merged into [`crate::api::app`]).
pub fn router() -> Router<Arc<AppState>> {
    api().router
}

/// The OpenAPI 3 document of every route [`api`] declares.
pub fn openapi_document() -> Value {
    let docs = api().docs;
    let mut paths = serde_json::Map::new();
    for d in &docs {
        let mut params: Vec<Value> = path_params(d.path)
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(d.query.iter().map(|q| json!({"name": q, "in": "query", "schema": {"type": "integer"}})));
        let mut op = json!({
            "operationId": d.operation_id,
            "summary": d.summary,
            "parameters": params,
            "responses": {
                "200": {"description": "Success", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if let Some(g) = d.grant {
            op["security"] = json!([{"bearer": []}]);
            op["description"] = json!(format!("Needs the {g} grant."));
        }
        if let Some(b) = &d.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": b}}});
        }
        let entry = paths.entry(d.path.to_string()).or_insert_with(|| json!({}));
        entry[d.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Courier admin API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "enum": ApiError::CODES}, "message": {"type": "string"}}}}
        }
    })
}

/// The `{name}` segments of a path.
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// The documented routes (method, path), for tests and tools.
pub fn documented_routes() -> Vec<(Method, &'static str)> {
    api().docs.into_iter().map(|d| (d.method, d.path)).collect()
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// `POST /api/v1/rooms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: String,
    #[serde(default)]
    max_participants: Option<u32>,
    #[serde(default)]
    empty_timeout_secs: Option<u64>,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    retention: Option<String>,
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    end: Option<Value>,
    #[serde(default)]
    members: Option<Vec<String>>,
}

/// A time given as unix seconds or RFC 3339, in ms since the epoch.
pub fn parse_time(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => n.as_u64().map(|s| s.saturating_mul(1000)).ok_or_else(|| format!("bad time {n}")),
        Value::String(s) => parse_rfc3339(s).ok_or_else(|| format!("bad RFC 3339 time {s:?}")),
        other => Err(format!("bad time {other}")),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → ms since the epoch.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        ms = format!("{:0<3}", &f[..f.len().min(3)]).parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    u64::try_from(secs * 1000 + ms).ok()
}

fn check_room_name(room: &str) -> ApiResult<()> {
    if room.is_empty() || room.len() > 256 || room == crate::auth::ALL_ROOMS {
        return Err(ApiError::BadRequest("room name must be 1..=256 bytes and not \"*\"".into()));
    }
    Ok(())
}

async fn create_room(State(state): State<Arc<AppState>>, admin: Admin, bytes: Bytes) -> ApiResult<Response> {
    admin.need(ApiGrant::Create)?;
    let req: CreateRoom = body(&bytes)?;
    check_room_name(&req.name)?;
    let schedule = match (req.start, req.end, req.members) {
        (None, None, None) => None,
        (Some(start), Some(end), Some(members)) => Some(Schedule {
            start_ms: parse_time(&start).map_err(ApiError::BadRequest)?,
            end_ms: parse_time(&end).map_err(ApiError::BadRequest)?,
            members,
        }),
        _ => return Err(ApiError::BadRequest("a scheduled room needs start, end and members".into())),
    };
    let options = RoomOptions {
        max_participants: req.max_participants,
        empty_timeout_secs: req.empty_timeout_secs,
        metadata: req.metadata,
        retention: req.retention,
        schedule,
    };
    crate::lifecycle::validate(&options).map_err(ApiError::BadRequest)?;
    // In a cluster the room is placed on this node (its definition lives here), unless another node holds it.
    if let Some(c) = &state.cluster {
        match c.claim(&req.name).await {
            crate::cluster::Placement::Here => {}
            crate::cluster::Placement::There { .. } => return Err(ApiError::RoomExists(req.name.clone())),
            crate::cluster::Placement::Unavailable => return Err(ApiError::ClusterUnavailable),
        }
    }
    let summary = state.rooms.create(&req.name, options, state.config.limits.max_rooms).map_err(|e| match e {
        CreateError::TooManyRooms => ApiError::TooManyRooms,
        CreateError::Exists => ApiError::RoomExists(req.name.clone()),
    })?;
    // Created means kept: the definition is on disk before the answer (a restart brings the room back).
    let kept = crate::room_store::StoredRoom {
        name: summary.name.clone(),
        options: summary.options.clone(),
        phase: summary.phase,
        created_ms: summary.created_ms,
    };
    match state.room_store.create(&kept).await {
        Ok(true) => {}
        Ok(false) => {
            // Defined on a node that is gone, and not restored anywhere yet.
            state.rooms.discard(&summary.name);
            return Err(ApiError::RoomExists(summary.name));
        }
        Err(e) => {
            tracing::warn!(error = %e, room = %summary.name, "room not kept; creation undone");
            state.rooms.discard(&summary.name);
            return Err(ApiError::Internal);
        }
    }
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}

async fn list_rooms(State(state): State<Arc<AppState>>, admin: Admin) -> ApiResult<Response> {
    admin.need(ApiGrant::List)?;
    Ok(Json(json!({ "rooms": state.rooms.list() })).into_response())
}

async fn get_room(State(state): State<Arc<AppState>>, admin: Admin, Path(room): Path<String>) -> ApiResult<Response> {
    if admin.need(ApiGrant::List).is_err() {
        admin.need(ApiGrant::Admin(&room))?;
    }
    let r = state.rooms.get(&room).ok_or(ApiError::RoomNotFound(room))?;
    Ok(Json(r).into_response())
}

async fn close_room(State(state): State<Arc<AppState>>, admin: Admin, Path(room): Path<String>) -> ApiResult<Response> {
    admin.need(ApiGrant::Create)?;
    if !state.rooms.close(&room, "room_closed") {
        return Err(ApiError::RoomNotFound(room));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRoom {
    metadata: String,
}

async fn update_room(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(room): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    let u: UpdateRoom = body(&bytes)?;
    if u.metadata.len() > crate::auth::MAX_METADATA {
        return Err(ApiError::BadRequest(format!("metadata over {} bytes", crate::auth::MAX_METADATA)));
    }
    let r = state.rooms.set_metadata(&room, u.metadata).ok_or(ApiError::RoomNotFound(room))?;
    Ok(Json(r).into_response())
}

async fn list_participants(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(room): Path<String>,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    let all = state.rooms.participants(&room).ok_or(ApiError::RoomNotFound(room))?;
    let participants = all.into_iter().map(|(p, peer)| with_estimate(&state, p, peer)).collect();
    Ok(Json(ParticipantList { participants }).into_response())
}

/// A participant as the API shows it, with the engine's bandwidth estimate towards it.
fn with_estimate(state: &AppState, mut p: ParticipantSummary, peer: sfu::PeerId) -> ParticipantSummary {
    p.bandwidth_estimate_bps = state.sfu.bandwidth_estimate(peer);
    p
}

async fn get_participant(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path((room, identity)): Path<(String, String)>,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    let (p, peer) = state.rooms.participant(&room, &identity).ok_or(ApiError::ParticipantNotFound(identity))?;
    Ok(Json(with_estimate(&state, p, peer)).into_response())
}

async fn remove_participant(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path((room, identity)): Path<(String, String)>,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    if !state.rooms.remove(&room, &identity) {
        return Err(ApiError::ParticipantNotFound(identity));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PATCH …/participants/{identity}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateParticipant {
    #[serde(default)]
    permissions: Option<Permissions>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
}

async fn update_participant(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path((room, identity)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    let u: UpdateParticipant = body(&bytes)?;
    if u.name.as_ref().is_some_and(|n| n.len() > 128) {
        return Err(ApiError::BadRequest("name over 128 bytes".into()));
    }
    if u.metadata.as_ref().is_some_and(|m| m.len() > crate::auth::MAX_METADATA) {
        return Err(ApiError::BadRequest(format!("metadata over {} bytes", crate::auth::MAX_METADATA)));
    }
    let update = ParticipantUpdate { permissions: u.permissions, name: u.name, metadata: u.metadata };
    let (p, peer) = state.rooms.update(&room, &identity, update).ok_or(ApiError::ParticipantNotFound(identity))?;
    Ok(Json(with_estimate(&state, p, peer)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteTrack {
    muted: bool,
}

async fn mute_track(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path((room, track_id)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    let m: MuteTrack = body(&bytes)?;
    if !state.rooms.mute_track(&room, &track_id, m.muted) {
        return Err(ApiError::TrackNotFound(track_id));
    }
    Ok(Json(json!({ "track_id": track_id, "muted": m.muted })).into_response())
}

/// `POST …/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    payload: Box<serde_json::value::RawValue>,
    #[serde(default = "text_kind")]
    kind: String,
    #[serde(default = "system_sender")]
    sender: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    must_ack: bool,
}

fn text_kind() -> String {
    "text".into()
}

fn system_sender() -> String {
    "system".into()
}

fn room_conversation(state: &AppState, room: &str) -> ApiResult<ConversationId> {
    if state.rooms.phase(room).is_none() {
        // Rooms that were forgotten may still have history; the store answers for it.
        tracing::debug!(room, "admin API: chat of a room not in the registry");
    }
    ConversationId::room(room).map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn send_message(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(room): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    let m: SendMessage = body(&bytes)?;
    match state.rooms.phase(&room) {
        None => return Err(ApiError::RoomNotFound(room)),
        Some(RoomPhase::Closed) => return Err(ApiError::RoomClosed(room)),
        Some(_) => {}
    }
    if m.kind.starts_with("chat.") {
        return Err(ApiError::BadRequest("message types starting with \"chat.\" are the server's".into()));
    }
    courier_chat::validate_identity(&m.sender).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let conversation = room_conversation(&state, &room)?;
    let alert_to = if m.must_ack {
        let mut who = state.chat.hub.room_identities(&room);
        who.retain(|i| *i != m.sender);
        who
    } else {
        Vec::new()
    };
    let message = NewMessage {
        conversation,
        sender: m.sender,
        client_id: m.client_id.unwrap_or_else(|| format!("api-{}", crate::room::random_token(16))),
        kind: m.kind,
        payload: m.payload.get().to_string(),
        flags: Flags { must_ack: m.must_ack, priority: Priority::High, ..Flags::default() },
        amends: None,
        alert_to,
    };
    message.validate(&state.chat.limits).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let acks = state.chat.store.append(vec![message]).await?;
    let ack = acks.into_iter().next().ok_or(ApiError::Internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "conversation": ack.conversation.to_string(), "seq": ack.seq, "time": ack.server_time_ms })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list_messages(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(room): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    let c = room_conversation(&state, &room)?;
    let limit = q.limit.unwrap_or(courier_protocol::HISTORY_DEFAULT_LIMIT);
    if limit == 0 || limit > courier_protocol::HISTORY_MAX_LIMIT {
        return Err(ApiError::BadRequest(format!("limit must be 1..={}", courier_protocol::HISTORY_MAX_LIMIT)));
    }
    let from = match (q.before, q.after) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give before or after, not both".into())),
        (Some(b), None) => PageFrom::Before(b),
        (None, Some(a)) => PageFrom::After(a),
        (None, None) => PageFrom::Latest,
    };
    let head = state.chat.store.head(&c).await?;
    let messages = match head {
        Some(_) => state.chat.store.page(&c, from, limit).await?,
        None => Vec::new(),
    };
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::to_value(courier_chat::frames::wire_message(m, false)).unwrap_or(Value::Null))
        .collect();
    let (epoch, first_seq, last_seq) = head.map_or((0, 1, 0), |h| (h.epoch, h.first_seq, h.last_seq));
    Ok(Json(json!({
        "conversation": c.to_string(), "epoch": epoch, "first_seq": first_seq, "last_seq": last_seq,
        "messages": messages
    }))
    .into_response())
}

async fn recall_message(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path((room, seq)): Path<(String, u64)>,
) -> ApiResult<Response> {
    admin.need(ApiGrant::Admin(&room))?;
    if state.rooms.phase(&room) == Some(RoomPhase::Closed) {
        return Err(ApiError::RoomClosed(room));
    }
    let c = room_conversation(&state, &room)?;
    let original = match seq {
        0 => None,
        _ => match state.chat.store.range(&c, seq - 1, seq).await? {
            Replay::Messages { mut messages, .. } => messages.pop().filter(|m| m.seq == seq),
            _ => None,
        },
    };
    let Some(original) = original
        .filter(|m| matches!(m.state, MessageState::Normal | MessageState::Edited) && !m.kind.starts_with("chat."))
    else {
        return Err(ApiError::MessageNotFound(seq));
    };
    let message = NewMessage {
        conversation: c,
        sender: system_sender(),
        client_id: format!("api-recall-{seq}"),
        kind: "chat.recall".into(),
        payload: format!(r#"{{"seq":{seq}}}"#),
        flags: Flags { counted: false, priority: original.flags.priority, ..Flags::default() },
        amends: Some(Amend { seq, change: Tombstone::Recall }),
        alert_to: Vec::new(),
    };
    state.chat.store.append(vec![message]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn erase_identity(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    Path(identity): Path<String>,
) -> ApiResult<Response> {
    admin.need(ApiGrant::AdminAll)?;
    courier_chat::validate_identity(&identity).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let n = state.chat.store.erase_identity(&identity).await?;
    Ok(Json(json!({ "identity": identity, "erased": n })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time(&json!(1_700_000_000)), Ok(1_700_000_000_000));
        assert_eq!(parse_time(&json!("2023-11-14T22:13:20Z")), Ok(1_700_000_000_000));
        assert_eq!(parse_time(&json!("2023-11-15T00:13:20.5+02:00")), Ok(1_700_000_000_500));
        assert_eq!(parse_time(&json!("1970-01-01T00:00:00Z")), Ok(0));
        for bad in
            [json!("yesterday"), json!("2023-13-01T00:00:00Z"), json!(-5), json!(true), json!("2023-11-14T22:13:20")]
        {
            assert!(parse_time(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_declared_route_is_in_the_document_with_its_parameters() {
        let doc = openapi_document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for (method, path) in documented_routes() {
            let op = &doc["paths"][path][method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path}");
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(params, path_params(path).collect::<Vec<_>>(), "{method} {path}");
        }
    }
}
