//! HTTP routes: the signaling WebSocket, health and readiness, metrics, the development token endpoint, and the
//! static files at `/` (the built-in web demo, a directory, or none: [`crate::config::WebRoot`]).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::{mint, TokenRequest};
use crate::config::WebRoot;
use crate::AppState;

/// The whole application, so tests can serve it on their own listener.
pub fn app(state: Arc<AppState>) -> Router {
    let mut r =
        Router::new().route("/rtc", get(rtc)).route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics));
    r = r.route("/readyz", get(crate::ops::readyz));
    // WHIP and WHEP: joins over HTTP, limited like WebSocket joins (in admission), with CORS for pages elsewhere.
    r = r.merge(crate::whip::router());
    // Routes behind the HTTP API guard (rate limits per IP and identity, body cap): all but the WebSocket (joins
    // are limited in the session), health, readiness, metrics and static files.
    let mut limited = Router::new();
    if state.config.dev {
        limited = limited.route("/dev/token", get(dev_token));
    }
    // In a cluster, requests about a room another node hosts go there (after this node's rate limits).
    let admin = crate::admin::router()
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::cluster::forward::layer));
    limited = limited.merge(admin);
    r = r.merge(crate::ops::limited(limited, &state));
    match &state.config.web_root {
        WebRoot::Embedded => r = r.fallback(crate::web_demo::serve),
        WebRoot::Dir(root) => r = r.fallback_service(tower_http::services::ServeDir::new(root)),
        WebRoot::Off => {}
    }
    r.with_state(state)
}

/// Initial WebSocket read buffer, and how much output is gathered before it is written.
const WS_BUFFER_BYTES: usize = 16 * 1024;

async fn rtc(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer_addr): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    // The host the client used: the TURN URLs in `joined` name it when no TURN host or public IP is configured.
    let host =
        headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).map(|h| crate::turn::host_of(h).to_owned());
    // The socket's own frame cap sits above the protocol's, so an oversized message gets a `too_large` reply
    // rather than a dropped connection; far larger frames are cut off by the socket.
    let cap = state.config.max_message_bytes * 4;
    // Buffers start small and grow with the messages (tungstenite reserves 128 KiB each way by default: with
    // thousands of members in a live room that is most of a session's memory). 16 KiB of output is still one
    // syscall for a batch of chat frames.
    ws.max_message_size(cap)
        .max_frame_size(cap)
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .on_upgrade(move |socket| crate::session::run(socket, state, peer_addr.ip(), host))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let (rooms, participants, tracks) = state.rooms.counts();
    let s = state.sfu.stats();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge("courier_rooms", "Rooms with at least one participant.", rooms as u64);
    gauge("courier_participants", "Participants joined.", participants as u64);
    gauge("courier_tracks", "Published tracks (signaling view).", tracks as u64);
    gauge("courier_sfu_peers", "WebRTC peers alive in the engine.", s.peers);
    gauge("courier_sfu_tracks", "Published tracks alive in the engine.", s.tracks);
    gauge("courier_sfu_downtracks", "Subscriptions alive in the engine.", s.downtracks);
    gauge("courier_bwe_peers", "Subscribers with a send-side bandwidth estimate.", s.bwe_peers);
    gauge("courier_bwe_estimate_sum_bps", "Sum of the subscribers' bandwidth estimates, bit/s.", s.bwe_sum_bps);
    gauge("courier_bwe_estimate_min_bps", "Lowest subscriber bandwidth estimate, bit/s (0: none).", s.bwe_min_bps);
    gauge(
        "courier_draining",
        "1 while the server drains (refuses joins) before stopping.",
        u64::from(state.draining.load(std::sync::atomic::Ordering::Relaxed)),
    );
    let turn = state.turn.shell().map(|t| t.stats());
    if let Some(t) = turn {
        gauge("courier_turn_allocations", "TURN allocations (relays) alive.", t.allocations as u64);
    }
    if let Some(c) = &state.cluster {
        gauge(
            "courier_cluster_nodes",
            "Live nodes in this node's view of the registry (itself included).",
            c.nodes().len() as u64,
        );
    }
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    if let Some(t) = turn {
        counter(
            "courier_turn_auth_failures_total",
            "TURN requests refused for credentials (401).",
            t.core.auth_failures,
        );
        counter(
            "courier_turn_forbidden_peers_total",
            "TURN relays refused to a peer other than the SFU.",
            t.core.forbidden_peers,
        );
        counter("courier_turn_quota_refusals_total", "TURN allocations refused by a cap (486).", t.core.quota_refusals);
        counter("courier_turn_bytes_to_peers_total", "Bytes relayed from TURN clients.", t.core.bytes_to_peers);
        counter("courier_turn_bytes_to_clients_total", "Bytes relayed to TURN clients.", t.core.bytes_to_clients);
        counter(
            "courier_turn_connections_refused_total",
            "TURN TCP/TLS connections refused at max_connections.",
            t.connections_refused,
        );
    }
    if let Some(c) = &state.cluster {
        let k = &c.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        counter("courier_cluster_published_total", "Chat publications sent to other nodes.", load(&k.published));
        counter(
            "courier_cluster_publish_failures_total",
            "Chat publications not sent (queue full or Redis down; messages follow as head notices).",
            load(&k.publish_failures),
        );
        counter("courier_cluster_received_total", "Chat publications heard from other nodes.", load(&k.received));
        counter(
            "courier_cluster_delivered_total",
            "Messages of other nodes delivered to this node's sessions.",
            load(&k.delivered_remote),
        );
        counter(
            "courier_cluster_head_fills_total",
            "Gaps the bus left, read from the store (head checks and notices).",
            load(&k.head_fills),
        );
        counter("courier_cluster_redirects_total", "Joins sent to the room's node.", load(&k.redirects));
        counter(
            "courier_cluster_rooms_adopted_total",
            "Defined rooms restored on this node because their node was gone.",
            load(&k.adopted),
        );
        counter("courier_cluster_unavailable_total", "Joins refused with cluster_unavailable.", load(&k.unavailable));
        counter(
            "courier_cluster_redis_errors_total",
            "Redis commands that failed or timed out.",
            load(&k.redis_errors),
        );
        counter(
            "courier_cluster_subscription_breaks_total",
            "Times the chat bus subscription broke and was made again.",
            load(&k.subscription_breaks),
        );
    }
    counter("courier_udp_datagrams_in_total", "Datagrams received.", s.datagrams_in);
    counter("courier_udp_datagrams_out_total", "Datagrams sent.", s.datagrams_out);
    counter("courier_udp_bytes_in_total", "Bytes received.", s.bytes_in);
    counter("courier_udp_bytes_out_total", "Bytes sent.", s.bytes_out);
    counter("courier_udp_unrouted_total", "Datagrams that matched no peer.", s.datagrams_unrouted);
    counter("courier_forward_drops_total", "Packets dropped on a full queue.", s.forward_drops);
    counter("courier_peer_faults_total", "Peers closed by a fault in their state machine.", s.peer_faults);
    let chat = &state.chat.hub.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    counter("courier_chat_messages_total", "Chat messages stored.", load(&chat.committed));
    counter("courier_chat_deliveries_total", "Chat items queued to connections.", load(&chat.delivered));
    counter("courier_chat_shed_total", "Droppable chat items shed from full connection queues.", load(&chat.shed));
    counter(
        "courier_chat_overflows_total",
        "Connections closed because their chat queue overflowed.",
        load(&chat.overflows),
    );
    counter("courier_rtp_packets_in_total", "RTP packets received from publishers.", s.rtp_in);
    counter("courier_rtp_packets_out_total", "RTP packets sent to subscribers.", s.rtp_out);
    let hooks = state.webhooks.stats();
    counter("courier_webhook_sent_total", "Webhook events delivered (answered 2xx).", hooks.delivered);
    counter(
        "courier_webhook_failed_attempts_total",
        "Webhook attempts that failed (each retry counts).",
        hooks.failed_attempts,
    );
    let _ = writeln!(
        out,
        "# HELP courier_webhook_dropped_total Webhook events given up.\n# TYPE courier_webhook_dropped_total counter\n\
         courier_webhook_dropped_total{{reason=\"queue_full\"}} {}\ncourier_webhook_dropped_total{{reason=\"exhausted\"}} {}",
        hooks.dropped_overflow, hooks.dropped_exhausted
    );
    let _ = writeln!(
        out,
        "# HELP courier_webhook_queued Webhook events waiting or in flight.\n# TYPE courier_webhook_queued gauge\n\
         courier_webhook_queued {}",
        hooks.queued
    );
    let r = &state.refusals;
    let mut labelled = |name: &str, help: &str, label: &str, values: &[(&str, &std::sync::atomic::AtomicU64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, c) in values {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", load(c));
        }
    };
    labelled(
        "courier_joins_refused_total",
        "Joins refused by a limit, cap, the room or drain.",
        "cause",
        &[
            ("rate_limited", &r.join_rate_limited),
            ("room_full", &r.join_room_full),
            ("too_many_rooms", &r.join_too_many_rooms),
            ("room_unavailable", &r.join_room_unavailable),
            ("server_draining", &r.join_draining),
        ],
    );
    labelled(
        "courier_offers_refused_total",
        "Offers refused by a cap.",
        "cause",
        &[("too_many_tracks", &r.too_many_tracks)],
    );
    labelled(
        "courier_http_refused_total",
        "HTTP API requests refused by a limit.",
        "cause",
        &[("rate_limited", &r.http_rate_limited), ("too_large", &r.http_too_large)],
    );
    write_forward_delay(&mut out, &s.forward_delay);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// The forwarding-delay histogram (`sfu::forward_delay`) as a Prometheus histogram: cumulative buckets in seconds.
fn write_forward_delay(out: &mut String, h: &sfu::forward_delay::DelayBuckets) {
    let name = "courier_forward_delay_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time a forwarded packet spent in the server: kernel arrival to the send system call.\n\
         # TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (bound_us, n) in sfu::forward_delay::BUCKET_BOUNDS_US.iter().zip(h.counts.iter()) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound_us as f64 / 1e6);
    }
    let count = h.count();
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {}\n{name}_count {count}",
        h.sum_us as f64 / 1e6
    );
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: Option<String>,
    identity: Option<String>,
    name: Option<String>,
}

/// Development only: mint a token with the first configured key.
async fn dev_token(State(state): State<Arc<AppState>>, Query(q): Query<DevTokenQuery>) -> Response {
    let Some((key, secret)) = state.config.keys.iter().min_by_key(|(k, _)| k.as_str()) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no API key").into_response();
    };
    let room = q.room.filter(|r| !r.is_empty() && r.len() <= 256).unwrap_or_else(|| "demo".into());
    let identity = q
        .identity
        .filter(|i| !i.is_empty() && i.len() <= 256)
        .unwrap_or_else(|| format!("guest-{}", crate::room::random_token(6)));
    let token = mint(
        key,
        secret,
        &TokenRequest {
            room: room.clone(),
            identity: identity.clone(),
            name: q.name.filter(|n| n.len() <= 128),
            ttl: Duration::from_secs(6 * 3600),
            can_publish: true,
            can_subscribe: true,
            can_chat: true,
            room_admin: false,
            ..TokenRequest::new("", "")
        },
    );
    Json(serde_json::json!({ "token": token, "room": room, "identity": identity })).into_response()
}
