//! Operations at the HTTP edge: readiness (`/readyz`), and the guard in front of the HTTP API (rate limits per IP
//! address and per identity, the request body cap).
//!
//! Load balancers and orchestrators ask `/readyz` whether to send new participants here: it says no while the
//! server drains (see [`crate::Server::drain`]) or when the chat store does not answer, and says why. `/healthz`
//! only says the process serves HTTP.
//!
//! The guard ([`limited`]) wraps every HTTP route a client may call often or with a body, except the WebSocket
//! (joins have their own limits, in the session), health, readiness, metrics and static files. Refusals use the
//! API's JSON error shape `{"code": …, "message": …}`: `429 rate_limited` with `Retry-After`, `413 too_large`.
//! The decisions are [`crate::limits`]'s; this module only reads the request and writes the response.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::admin::ApiError;
use crate::limits::{Refusals, Refused};
use crate::AppState;
use courier_chat::ConversationId;

/// How long `/readyz` waits for the chat store.
pub const READY_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// `429 rate_limited` with `Retry-After`.
fn rate_limited(refused: Refused, what: &'static str) -> Response {
    ApiError::RateLimited { what, retry_after_secs: refused.retry_after_secs() }.into_response()
}

/// `GET /readyz`: 200 `{"ready":true}` when the server takes joins; 503 `{"ready":false,"reason":…}` while it
/// drains or when the chat store does not answer within [`READY_STORE_TIMEOUT`].
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let not_ready = |reason: &str| {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "ready": false, "reason": reason }))).into_response()
    };
    if state.draining.load(Ordering::SeqCst) {
        return not_ready("draining");
    }
    let probe = match ConversationId::room("readyz") {
        Ok(c) => c,
        Err(_) => return not_ready("internal"),
    };
    match tokio::time::timeout(READY_STORE_TIMEOUT, state.chat.store.head(&probe)).await {
        Ok(Ok(_)) => Json(serde_json::json!({ "ready": true })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: chat store failed");
            not_ready("chat_store_unavailable")
        }
        Err(_) => not_ready("chat_store_unavailable"),
    }
}

/// `router` behind the HTTP API guard: rate limits and the body cap.
pub fn limited(router: Router<Arc<AppState>>, state: &Arc<AppState>) -> Router<Arc<AppState>> {
    router
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
}

/// The guard: per-IP limit, per-identity limit (the subject of a bearer token that is signed by one of our keys),
/// a declared body over the cap; and any 413 from a body extractor (a body that turned out too long) rewritten to
/// the JSON shape.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        if let Err(refused) = state.limiters.api_ip(addr.ip(), now) {
            Refusals::add(&state.refusals.http_rate_limited);
            return rate_limited(refused, "from this address");
        }
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(identity) = bearer.and_then(|t| state.keys.signed_subject(t)) {
        if let Err(refused) = state.limiters.api_identity(&identity, now) {
            Refusals::add(&state.refusals.http_rate_limited);
            return rate_limited(refused, "for this identity");
        }
    }
    let max = state.config.limits.max_body_bytes;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        Refusals::add(&state.refusals.http_too_large);
        return ApiError::TooLarge(max).into_response();
    }
    let response = next.run(req).await;
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        Refusals::add(&state.refusals.http_too_large);
        return ApiError::TooLarge(max).into_response();
    }
    response
}
