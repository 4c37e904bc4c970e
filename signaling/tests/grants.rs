//! The grant matrix: every operation, with each grant it depends on present or absent, over a real server
//! (WebSocket and admin API) — allowed, or refused with its documented code. And bad tokens: forged, expired,
//! unknown key, wrong room, not yet valid — refused on join and on the API.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use signaling::auth::TokenRequest;

/// The `error` code the server answers `msg` with (`None`: an answer that is not a refusal of that kind).
async fn refusal(ws: &mut Ws, msg: serde_json::Value) -> Option<String> {
    send(ws, &msg.to_string()).await;
    let m = recv_type(ws, "error").await;
    m["code"].as_str().map(str::to_string)
}

/// A WebSocket operation and the code it gets when the grant is absent; `allowed` is the code (or answer) when
/// present, proving the check was passed.
struct WsCase {
    name: &'static str,
    grant: fn(&mut TokenRequest, bool),
    msg: serde_json::Value,
    denied: &'static str,
    allowed: &'static str,
}

fn offer(source: &str) -> serde_json::Value {
    json!({"type": "offer", "id": 1, "sdp": "v=0 not really", "tracks": [{"mid": "0", "source": source}]})
}

#[tokio::test]
async fn websocket_grant_matrix() {
    let s = server().await;
    let cases = [
        WsCase {
            name: "publish camera",
            grant: |r, on| r.can_publish = on,
            msg: offer("camera"),
            denied: "permission_denied",
            allowed: "sdp_rejected",
        },
        WsCase {
            name: "publish microphone (sources)",
            grant: |r, on| {
                r.can_publish_sources = Some(if on {
                    vec![courier_protocol::TrackSource::Microphone]
                } else {
                    vec![courier_protocol::TrackSource::Camera]
                })
            },
            msg: offer("microphone"),
            denied: "source_not_allowed",
            allowed: "sdp_rejected",
        },
        WsCase {
            name: "publish screen (sources)",
            grant: |r, on| {
                r.can_publish_sources = Some(if on { vec![courier_protocol::TrackSource::Screen] } else { vec![] })
            },
            msg: offer("screen"),
            denied: "source_not_allowed",
            allowed: "sdp_rejected",
        },
        WsCase {
            name: "publish while hidden",
            grant: |r, on| r.hidden = !on,
            msg: offer("camera"),
            denied: "permission_denied",
            allowed: "sdp_rejected",
        },
        WsCase {
            name: "subscribe",
            grant: |r, on| r.can_subscribe = on,
            msg: json!({"type": "subscribe", "track_ids": ["TR_404"]}),
            denied: "permission_denied",
            allowed: "track_not_found",
        },
        WsCase {
            name: "chat send",
            grant: |r, on| r.can_chat = on,
            msg: json!({"type": "chat_send", "client_id": "c1", "payload": {"text": "hi"}}),
            denied: "permission_denied",
            allowed: "none",
        },
        WsCase {
            name: "high-priority send",
            grant: |r, on| r.room_admin = on,
            msg: json!({"type": "chat_send", "client_id": "c2", "payload": {"text": "hi"}, "priority": "high"}),
            denied: "permission_denied",
            allowed: "none",
        },
        WsCase {
            name: "recall another's message",
            grant: |r, on| r.room_admin = on,
            msg: json!({"type": "chat_recall", "client_id": "c3", "seq": 1}),
            denied: "message_not_found",
            allowed: "none",
        },
        WsCase {
            name: "mute a member",
            grant: |r, on| r.room_admin = on,
            msg: json!({"type": "chat_mute", "identity": "other", "muted": true}),
            denied: "permission_denied",
            allowed: "none",
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let room = format!("m{i}");
        // Someone else's message, for the recall case.
        let (mut other, _) = join(&s, &room, "other").await;
        send(&mut other, &json!({"type": "chat_send", "client_id": "o1", "payload": {"text": "x"}}).to_string()).await;
        recv_type(&mut other, "chat_ack").await;
        for on in [false, true] {
            let t = token_with(&room, if on { "with" } else { "without" }, |r| (c.grant)(r, on));
            let (mut ws, _) = join_token(&s, &t).await;
            let want = if on { c.allowed } else { c.denied };
            if want == "none" {
                // Allowed and silent on success: the next answer is the pong, not an error.
                send(&mut ws, &c.msg.to_string()).await;
                send(&mut ws, r#"{"type":"ping","ts":1}"#).await;
                loop {
                    let m = recv(&mut ws).await;
                    assert_ne!(m["type"], "error", "{} with grant: {m}", c.name);
                    if m["type"] == "pong" {
                        break;
                    }
                }
            } else {
                assert_eq!(refusal(&mut ws, c.msg.clone()).await.as_deref(), Some(want), "{} grant={on}", c.name);
            }
        }
    }
}

/// An admin API route and the grant that opens it.
struct ApiCase {
    /// The route's `operationId` in `/openapi.json`.
    op: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<serde_json::Value>,
    grant: fn(&mut TokenRequest),
}

#[tokio::test]
async fn api_grant_matrix() {
    let s = server().await;
    let (_alice, _) = join(&s, "g", "alice").await;
    let admin_g = |r: &mut TokenRequest| r.room_admin = true;
    let cases = [
        ApiCase {
            op: "createRoom",
            method: "POST",
            path: "/api/v1/rooms",
            body: Some(json!({"name": "new"})),
            grant: |r| r.room_create = true,
        },
        ApiCase { op: "listRooms", method: "GET", path: "/api/v1/rooms", body: None, grant: |r| r.room_list = true },
        ApiCase { op: "listNodes", method: "GET", path: "/api/v1/nodes", body: None, grant: |r| r.room_list = true },
        ApiCase {
            op: "getPresence",
            method: "GET",
            path: "/api/v1/identities/alice/presence",
            body: None,
            grant: |r| r.room_list = true,
        },
        ApiCase { op: "getRoom", method: "GET", path: "/api/v1/rooms/g", body: None, grant: |r| r.room_list = true },
        ApiCase {
            op: "listParticipants",
            method: "GET",
            path: "/api/v1/rooms/g/participants",
            body: None,
            grant: admin_g,
        },
        ApiCase {
            op: "getParticipant",
            method: "GET",
            path: "/api/v1/rooms/g/participants/alice",
            body: None,
            grant: admin_g,
        },
        ApiCase {
            op: "updateParticipant",
            method: "PATCH",
            path: "/api/v1/rooms/g/participants/alice",
            body: Some(json!({"metadata": "m"})),
            grant: admin_g,
        },
        ApiCase {
            op: "muteTrack",
            method: "PATCH",
            path: "/api/v1/rooms/g/tracks/TR_404",
            body: Some(json!({"muted": true})),
            grant: admin_g,
        },
        ApiCase {
            op: "sendMessage",
            method: "POST",
            path: "/api/v1/rooms/g/messages",
            body: Some(json!({"payload": {"text": "notice"}})),
            grant: admin_g,
        },
        ApiCase {
            op: "listMessages",
            method: "GET",
            path: "/api/v1/rooms/g/messages?limit=5",
            body: None,
            grant: admin_g,
        },
        ApiCase {
            op: "recallMessage",
            method: "DELETE",
            path: "/api/v1/rooms/g/messages/999",
            body: None,
            grant: admin_g,
        },
        ApiCase {
            op: "eraseIdentity",
            method: "DELETE",
            path: "/api/v1/identities/nobody",
            body: None,
            grant: |r| {
                r.room_admin = true;
                r.room = "*".into();
            },
        },
        ApiCase {
            op: "updateRoom",
            method: "PATCH",
            path: "/api/v1/rooms/g",
            body: Some(json!({"metadata": "m"})),
            grant: admin_g,
        },
        ApiCase {
            op: "removeParticipant",
            method: "DELETE",
            path: "/api/v1/rooms/g/participants/alice",
            body: None,
            grant: admin_g,
        },
        ApiCase {
            op: "closeRoom",
            method: "DELETE",
            path: "/api/v1/rooms/new",
            body: None,
            grant: |r| r.room_create = true,
        },
    ];
    // Every route that needs a grant is in the matrix.
    let (_, doc) = api(&s, "GET", "/openapi.json", None, None).await;
    let mut documented: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .filter(|op| op.get("security").is_some())
        .map(|op| op["operationId"].as_str().unwrap().to_string())
        .collect();
    documented.sort();
    let mut covered: Vec<String> = cases.iter().map(|c| c.op.to_string()).collect();
    covered.sort();
    assert_eq!(covered, documented, "the grant matrix covers every route that needs a grant");
    for c in &cases {
        let (status, body) = api(&s, c.method, c.path, Some(&api_token("g", |_| {})), c.body.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("permission_denied")),
            "{} {} without",
            c.method,
            c.path
        );
        let (status, body) = api(&s, c.method, c.path, Some(&api_token("g", c.grant)), c.body.clone()).await;
        let expected_miss = c.path.contains("TR_404") || c.path.ends_with("/999");
        if expected_miss {
            assert_eq!(status, 404, "{} {} with: {body}", c.method, c.path);
        } else {
            assert!((200..300).contains(&status), "{} {} with: {status} {body}", c.method, c.path);
        }
    }
    // room_admin for another room is no grant for this one.
    let (status, body) = api(&s, "GET", "/api/v1/rooms/g/participants", Some(&api_token("h", admin_g)), None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("permission_denied")), "wrong room");
}

#[tokio::test]
async fn bad_tokens_are_refused_on_join_and_api() {
    let s = server().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sign = |claims: serde_json::Value, kid: &str, secret: &str| {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.to_string());
        encode(&h, &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    };
    let grant = json!({"room": "r", "room_join": true, "room_list": true});
    let cases = [
        (
            "forged",
            sign(json!({"sub": "a", "exp": now + 60, "video": grant}), KEY, "not-the-secret"),
            4001,
            "invalid_token",
        ),
        ("expired", sign(json!({"sub": "a", "exp": now - 600, "video": grant}), KEY, SECRET), 4002, "token_expired"),
        (
            "unknown key",
            sign(json!({"sub": "a", "exp": now + 60, "video": grant}), "nokey", SECRET),
            4001,
            "invalid_token",
        ),
        (
            "not yet valid",
            sign(json!({"sub": "a", "exp": now + 6000, "nbf": now + 3000, "video": grant}), KEY, SECRET),
            4002,
            "token_expired",
        ),
        ("garbage", "x.y.z".to_string(), 4001, "invalid_token"),
    ];
    for (name, t, close, code) in cases {
        let mut ws = connect(&s).await;
        send(&mut ws, &format!(r#"{{"type":"join","v":1,"token":"{t}"}}"#)).await;
        assert_eq!(close_code(&mut ws).await, Some(close), "{name} on join");
        let (status, body) = api(&s, "GET", "/api/v1/rooms", Some(&t), None).await;
        assert_eq!((status, body["code"].as_str()), (401, Some(code)), "{name} on the API");
    }
    let (status, body) = api(&s, "GET", "/api/v1/rooms", None, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
}
