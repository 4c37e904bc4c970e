//! The admin REST API over a real server: rooms and their lifecycle (auto-create off, caps, scheduled rooms),
//! participants (remove, run-time permission changes), messages, the error shape, and the OpenAPI document
//! against the routes actually served.

mod common;

use common::*;
use serde_json::json;

fn all_grants(r: &mut signaling::auth::TokenRequest) {
    r.room = "*".into();
    r.room_admin = true;
    r.room_create = true;
    r.room_list = true;
}

#[tokio::test]
async fn every_documented_route_is_served_and_the_document_is_openapi_3() {
    let s = server().await;
    let (status, doc) = api(&s, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    let mut n = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            n += 1;
            assert!(op["responses"].is_object(), "{method} {path}");
            // Served: a request reaches the handler (its own error shape), not the router's 404/405.
            let concrete =
                path.replace("{room}", "r").replace("{identity}", "i").replace("{track_id}", "t").replace("{seq}", "1");
            let (status, body) = api(&s, &method.to_uppercase(), &concrete, None, None).await;
            assert!(status == 200 || body["code"].is_string(), "{method} {path}: {status} {body}");
        }
    }
    assert_eq!(n, signaling::admin::documented_routes().len());
    // And a route nobody declared is the router's plain 404, so the check above can tell.
    let (status, body) = api(&s, "GET", "/api/v1/nothing", None, None).await;
    assert_eq!((status, body["code"].is_string()), (404, false));
}

#[tokio::test]
async fn rooms_created_listed_capped_and_closed() {
    let s = server_with(|raw| raw.rooms = Some(signaling::config::RawRoomsConfig { auto_create: Some(false) })).await;
    let t = api_token("*", all_grants);
    // auto_create off: an unknown room refuses the join.
    let mut ws = connect(&s).await;
    send(&mut ws, &format!(r#"{{"type":"join","v":1,"token":"{}"}}"#, token("lobby", "z"))).await;
    assert_eq!(recv_type(&mut ws, "error").await["code"], "room_not_found");
    assert_eq!(close_code(&mut ws).await, Some(4011));

    let (status, room) = api(
        &s,
        "POST",
        "/api/v1/rooms",
        Some(&t),
        Some(json!({"name": "lobby", "max_participants": 1, "metadata": "m"})),
    )
    .await;
    assert_eq!(status, 201, "{room}");
    let (status, body) = api(&s, "POST", "/api/v1/rooms", Some(&t), Some(json!({"name": "lobby"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("room_exists")));
    let (status, body) = api(&s, "POST", "/api/v1/rooms", Some(&t), Some(json!({"name": 5}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let (_, list) = api(&s, "GET", "/api/v1/rooms", Some(&t), None).await;
    assert_eq!(list["rooms"][0]["name"], "lobby");

    let (mut a, _) = join(&s, "lobby", "a").await;
    let mut b = connect(&s).await;
    send(&mut b, &format!(r#"{{"type":"join","v":1,"token":"{}"}}"#, token("lobby", "b"))).await;
    assert_eq!(recv_type(&mut b, "error").await["code"], "room_full");
    assert_eq!(close_code(&mut b).await, Some(4006));

    let (_, p) = api(&s, "GET", "/api/v1/rooms/lobby/participants/a", Some(&t), None).await;
    assert_eq!(p["identity"], "a");
    // No media connection, so no estimate yet: the key is there, null (docs/protocol.md, "Admin API").
    assert!(p.get("bandwidth_estimate_bps").is_some_and(|v| v.is_null()), "{p}");
    assert!(p.get("peer").is_none(), "{p}");
    let (_, all) = api(&s, "GET", "/api/v1/rooms/lobby/participants", Some(&t), None).await;
    assert!(all["participants"][0]["bandwidth_estimate_bps"].is_null(), "{all}");
    let (status, _) = api(&s, "DELETE", "/api/v1/rooms/lobby", Some(&t), None).await;
    assert_eq!(status, 204);
    assert_eq!(recv_type(&mut a, "leave").await["reason"], "room_closed");
    assert_eq!(close_code(&mut a).await, Some(4010));
    let (status, body) = api(&s, "GET", "/api/v1/rooms/lobby", Some(&t), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("room_not_found")));
}

#[tokio::test]
async fn permission_change_applies_at_once_and_members_are_removed() {
    let s = server().await;
    let t = api_token("*", all_grants);
    let (mut a, _) = join(&s, "p", "a").await;
    let (status, body) = api(
        &s,
        "PATCH",
        "/api/v1/rooms/p/participants/a",
        Some(&t),
        Some(json!({"permissions": {"can_publish": true, "can_subscribe": false, "can_chat": false, "room_admin": false, "hidden": false}, "name": "Ann"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let changed = recv_type(&mut a, "permissions_changed").await;
    assert_eq!(changed["permissions"]["can_chat"], false);
    send(&mut a, &json!({"type": "chat_send", "client_id": "x", "payload": {"text": "hi"}}).to_string()).await;
    assert_eq!(recv_type(&mut a, "error").await["code"], "permission_denied");
    send(&mut a, &json!({"type": "subscribe", "track_ids": ["TR_1"]}).to_string()).await;
    assert_eq!(recv_type(&mut a, "error").await["code"], "permission_denied");

    let (status, _) = api(&s, "DELETE", "/api/v1/rooms/p/participants/a", Some(&t), None).await;
    assert_eq!(status, 204);
    assert_eq!(recv_type(&mut a, "leave").await["reason"], "removed");
    assert_eq!(close_code(&mut a).await, Some(4010));
    let (status, body) = api(&s, "DELETE", "/api/v1/rooms/p/participants/a", Some(&t), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("participant_not_found")));
}

/// The crew-group story: created before departure for the crew only, a must-acknowledge push-back order, closed
/// after landing with every word kept and readable, nothing more accepted.
#[tokio::test]
async fn scheduled_crew_room_opens_closes_and_keeps_its_history() {
    let s = server().await;
    let t = api_token("*", all_grants);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (status, body) = api(
        &s,
        "POST",
        "/api/v1/rooms",
        Some(&t),
        Some(json!({"name": "fl-123", "start": now + 2, "end": now + 5, "members": ["captain", "purser"], "retention": "keep"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["phase"], "scheduled");
    let mut early = connect(&s).await;
    send(&mut early, &format!(r#"{{"type":"join","v":1,"token":"{}"}}"#, token("fl-123", "captain"))).await;
    assert_eq!(recv_type(&mut early, "error").await["code"], "room_not_open");

    // Opens at its start (the lifecycle timer ticks each second; bounded wait).
    eventually("the room's opening", std::time::Duration::from_secs(10), || async {
        let (_, r) = api(&s, "GET", "/api/v1/rooms/fl-123", Some(&t), None).await;
        if r["phase"] == "open" {
            Ok(())
        } else {
            Err(r.to_string())
        }
    })
    .await;
    let mut stowaway = connect(&s).await;
    send(&mut stowaway, &format!(r#"{{"type":"join","v":1,"token":"{}"}}"#, token("fl-123", "stowaway"))).await;
    assert_eq!(recv_type(&mut stowaway, "error").await["code"], "not_invited");
    let (mut captain, _) = join(&s, "fl-123", "captain").await;
    let (status, sent) = api(
        &s,
        "POST",
        "/api/v1/rooms/fl-123/messages",
        Some(&t),
        Some(json!({"payload": {"text": "push-back approved"}, "sender": "ops", "must_ack": true})),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let m = recv_type(&mut captain, "chat_message").await;
    assert_eq!((m["sender"].as_str(), m["priority"].as_str()), (Some("ops"), Some("high")));

    // Closed at its end: everyone removed with room_ended; history kept and readable; no more sends.
    assert_eq!(recv_type_within(&mut captain, "leave", 10).await["reason"], "room_ended");
    let (_, r) = api(&s, "GET", "/api/v1/rooms/fl-123", Some(&t), None).await;
    assert_eq!(r["phase"], "closed");
    let (_, page) = api(&s, "GET", "/api/v1/rooms/fl-123/messages", Some(&t), None).await;
    assert_eq!(page["messages"][0]["payload"]["text"], "push-back approved", "{page}");
    let (status, body) =
        api(&s, "POST", "/api/v1/rooms/fl-123/messages", Some(&t), Some(json!({"payload": {"text": "late"}}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("room_closed")));
    let mut late = connect(&s).await;
    send(&mut late, &format!(r#"{{"type":"join","v":1,"token":"{}"}}"#, token("fl-123", "captain"))).await;
    assert_eq!(recv_type(&mut late, "error").await["code"], "room_closed");
}

/// Next message of `type` within `secs` seconds.
async fn recv_type_within(ws: &mut Ws, ty: &str, secs: u64) -> serde_json::Value {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.unwrap_or_else(|_| panic!("no {ty} in {secs} s"));
        if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == ty {
                return v;
            }
        } else if !matches!(m, Some(Ok(_))) {
            panic!("socket ended before {ty}");
        }
    }
}

/// Rooms the admin API created come back after a restart with their options and phase, a room closed before the
/// restart stays gone, and a room created with `retention = "keep"` is never trimmed while the others are.
#[tokio::test]
async fn created_rooms_survive_a_restart_and_keep_means_kept() {
    let dir = data_dir();
    let cfg = |raw: &mut signaling::config::RawConfig| {
        raw.data_dir = Some(dir.clone());
        let chat = raw.chat.get_or_insert_with(Default::default);
        chat.retention_max_count = Some(1);
        chat.retention_interval_secs = Some(1);
    };
    let t = api_token("*", all_grants);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let s = server_with(cfg).await;
    let crew =
        json!({"name": "fl-9", "start": now + 3600, "end": now + 7200, "members": ["captain"], "max_participants": 3});
    for body in [
        crew,
        json!({"name": "audit", "retention": "keep", "metadata": "m1"}),
        json!({"name": "chatty"}),
        json!({"name": "short-lived"}),
    ] {
        let (status, r) = api(&s, "POST", "/api/v1/rooms", Some(&t), Some(body)).await;
        assert_eq!(status, 201, "{r}");
    }
    let (status, _) = api(&s, "DELETE", "/api/v1/rooms/short-lived", Some(&t), None).await;
    assert_eq!(status, 204);
    // Members see the room's metadata when they join and when it changes.
    let (mut alice, joined) = join(&s, "audit", "alice").await;
    assert_eq!(joined["room_metadata"], "m1", "{joined}");
    let (status, r) = api(&s, "PATCH", "/api/v1/rooms/audit", Some(&t), Some(json!({"metadata": "m2"}))).await;
    assert_eq!((status, r["options"]["metadata"].as_str()), (200, Some("m2")), "{r}");
    assert_eq!(recv_type(&mut alice, "room_updated").await["metadata"], "m2");
    drop(alice);
    for room in ["audit", "chatty"] {
        for i in 0..3 {
            let body = json!({"payload": {"text": format!("{room} {i}")}});
            let (status, r) = api(&s, "POST", &format!("/api/v1/rooms/{room}/messages"), Some(&t), Some(body)).await;
            assert_eq!(status, 201, "{r}");
        }
    }
    // Retention runs each second: "chatty" is trimmed to its last message, "audit" keeps all three.
    let trimmed = || async {
        let (_, page) = api(&s, "GET", "/api/v1/rooms/chatty/messages", Some(&t), None).await;
        if page["messages"].as_array().map(Vec::len) == Some(1) {
            Ok(())
        } else {
            Err(page.to_string())
        }
    };
    eventually("chatty's trim", std::time::Duration::from_secs(10), trimmed).await;
    let (_, page) = api(&s, "GET", "/api/v1/rooms/audit/messages", Some(&t), None).await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(3), "keep means kept: {page}");
    // A graceful stop writes what the lifecycle timer has not yet (the close of "short-lived", the new metadata).
    s.shutdown(std::time::Duration::from_secs(2)).await;

    let s = server_with(cfg).await;
    let (_, list) = api(&s, "GET", "/api/v1/rooms", Some(&t), None).await;
    let names: Vec<&str> = list["rooms"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["audit", "chatty", "fl-9"], "{list}");
    let (_, crew) = api(&s, "GET", "/api/v1/rooms/fl-9", Some(&t), None).await;
    assert_eq!(crew["phase"], "scheduled", "{crew}");
    assert_eq!(crew["options"]["max_participants"], 3);
    assert_eq!(crew["options"]["schedule"]["members"], json!(["captain"]));
    let (_, audit) = api(&s, "GET", "/api/v1/rooms/audit", Some(&t), None).await;
    assert_eq!(audit["options"]["metadata"], "m2", "the changed metadata was kept");
    // The scheduled room still refuses early joins after the restart.
    let mut early = connect(&s).await;
    send(&mut early, &format!(r#"{{"type":"join","v":1,"token":"{}"}}"#, token("fl-9", "captain"))).await;
    assert_eq!(recv_type(&mut early, "error").await["code"], "room_not_open");
    // And the kept room survives retention in the new process too: once "chatty" is trimmed again, a retention
    // run has passed over "audit" as well.
    let body = json!({"payload": {"text": "chatty again"}});
    let (status, r) = api(&s, "POST", "/api/v1/rooms/chatty/messages", Some(&t), Some(body)).await;
    assert_eq!(status, 201, "{r}");
    eventually("chatty's trim after the restart", std::time::Duration::from_secs(10), || async {
        let (_, page) = api(&s, "GET", "/api/v1/rooms/chatty/messages", Some(&t), None).await;
        match page["messages"].as_array().map(|m| m.iter().map(|m| m["payload"]["text"].clone()).collect::<Vec<_>>()) {
            Some(texts) if texts == [json!("chatty again")] => Ok(()),
            _ => Err(page.to_string()),
        }
    })
    .await;
    let (_, page) = api(&s, "GET", "/api/v1/rooms/audit/messages", Some(&t), None).await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(3), "{page}");
}
