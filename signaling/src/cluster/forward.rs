//! The admin API on any node of a cluster: a request about a room another node hosts is sent to that node and its
//! answer returned as it is; the room list is gathered from every node. The node that receives the request checks
//! nothing itself: the hosting node authenticates and authorizes it like any other (the bearer token is valid on
//! every node), so a forwarded request can do exactly what it could do there.
//!
//! A forwarded request carries [`FORWARDED`] (the sender's node id) and is never forwarded again, so two nodes that
//! disagree for a moment about where a room lives cannot bounce a request between them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tracing::debug;

use crate::AppState;

/// The header a forwarded admin request carries: the id of the node that forwarded it.
pub const FORWARDED: &str = "x-courier-forwarded-by";
/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The room an admin path is about: `/api/v1/rooms/{room}[/…]`, percent-decoded.
pub fn room_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v1/rooms/")?;
    let segment = rest.split('/').next().filter(|s| !s.is_empty())?;
    percent_decode(segment)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The middleware (see the module doc).
pub async fn layer(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else { return next.run(req).await };
    if req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    if path == "/api/v1/rooms" && req.method() == Method::GET {
        return gather_rooms(&cluster, req, next).await;
    }
    let Some(room) = room_of(&path) else { return next.run(req).await };
    if state.rooms.exists(&room) {
        return next.run(req).await;
    }
    match cluster.owner(&room).await {
        Ok(Some((node, url))) if node != cluster.node_id() => match forward(&cluster, &url, req).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, node = %node, "admin request not forwarded");
                unavailable()
            }
        },
        Ok(_) => next.run(req).await,
        Err(_) => unavailable(),
    }
}

fn unavailable() -> Response {
    let body =
        serde_json::json!({"code": "cluster_unavailable", "message": "the room's node cannot be reached now; retry"});
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// Send `req` to the node whose WebSocket URL is `ws_url`; its answer, as it is.
async fn forward(cluster: &super::Cluster, ws_url: &str, req: Request) -> Result<Response, String> {
    let base = super::registry::http_base(ws_url).ok_or("no HTTP base for the node")?;
    let (parts, body) = req.into_parts();
    // The body was capped by the API guard already.
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| e.to_string())?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = hyper::Request::builder().method(parts.method.clone()).uri(format!("{base}{path}"));
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    let node = HeaderValue::from_str(cluster.node_id()).map_err(|e| e.to_string())?;
    let out = out.header(FORWARDED, node).body(Full::new(bytes)).map_err(|e| e.to_string())?;
    let res = tokio::time::timeout(FORWARD_TIMEOUT, cluster.http().request(out))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = res.into_parts();
    let bytes: Bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// `GET /api/v1/rooms` on every node: this node's answer decides (authorization, errors); the other nodes' rooms
/// are added to it. A node that does not answer is left out of the list (and named in `unreachable_nodes`).
async fn gather_rooms(cluster: &Arc<super::Cluster>, req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    let local = next.run(req).await;
    if local.status() != StatusCode::OK {
        return local;
    }
    let (parts, body) = local.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else { return unavailable() };
    let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let others: Vec<_> = cluster.nodes().into_iter().filter(|n| n.id != cluster.node_id()).collect();
    let asks = others.iter().map(|n| {
        let mut req = Request::builder().method(Method::GET).uri("/api/v1/rooms");
        for (name, value) in &headers {
            req = req.header(name, value);
        }
        let req = req.body(Body::empty());
        let url = n.url.clone();
        async move {
            let req = req.map_err(|e| e.to_string())?;
            let res = forward(cluster, &url, req).await?;
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.map_err(|e| e.to_string())?;
            serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string())
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut unreachable = Vec::new();
    if let Some(rooms) = doc.get_mut("rooms").and_then(Value::as_array_mut) {
        for (node, answer) in others.iter().zip(answers) {
            match answer.ok().and_then(|v| v.get("rooms").and_then(Value::as_array).cloned()) {
                Some(more) => rooms.extend(more),
                None => unreachable.push(node.id.clone()),
            }
        }
    }
    if !unreachable.is_empty() {
        doc["unreachable_nodes"] = serde_json::json!(unreachable);
    }
    (StatusCode::OK, axum::Json(doc)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_of_an_admin_path() {
        assert_eq!(room_of("/api/v1/rooms/demo").as_deref(), Some("demo"));
        assert_eq!(room_of("/api/v1/rooms/demo/participants/bob").as_deref(), Some("demo"));
        assert_eq!(room_of("/api/v1/rooms/a%20b/messages").as_deref(), Some("a b"));
        assert_eq!(room_of("/api/v1/rooms"), None);
        assert_eq!(room_of("/api/v1/rooms/"), None);
        assert_eq!(room_of("/api/v1/nodes"), None);
        assert_eq!(room_of("/api/v1/rooms/%zz"), None, "a malformed escape is no room");
    }
}
