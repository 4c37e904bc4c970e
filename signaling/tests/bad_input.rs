//! Malformed, unknown, oversized and unauthorized signaling input: each gets its documented error code or close
//! code, and a joined session survives every bad message.

mod common;

use common::*;
use std::time::{SystemTime, UNIX_EPOCH};

#[tokio::test]
async fn malformed_messages_get_codes_and_the_session_survives() {
    let s = server().await;
    let (mut ws, joined) = join(&s, "r1", "alice").await;
    assert_eq!(joined["v"], 1);
    assert_eq!(joined["room"], "r1");
    assert!(joined["participant"]["id"].as_str().unwrap().starts_with("PA_"));

    let big = format!(r#"{{"type":"ping","ts":"{}"}}"#, "x".repeat(70 * 1024));
    let cases: Vec<(&str, String, &str)> = vec![
        ("not json", "hello".into(), "bad_message"),
        ("json array", "[1,2,3]".into(), "bad_message"),
        ("no type", r#"{"v":1}"#.into(), "bad_message"),
        ("type not a string", r#"{"type":7}"#.into(), "bad_message"),
        ("unknown type", r#"{"type":"dance"}"#.into(), "unknown_type"),
        ("offer without id", r#"{"type":"offer","sdp":"v=0"}"#.into(), "bad_message"),
        ("answer wrong types", r#"{"type":"answer","id":"x","sdp":1}"#.into(), "bad_message"),
        ("second join", format!(r#"{{"type":"join","v":1,"token":"{}"}}"#, token("r1", "alice")), "already_joined"),
        ("subscribe to unknown track", r#"{"type":"subscribe","track_ids":["TR_nope"]}"#.into(), "track_not_found"),
        ("unsubscribe unknown", r#"{"type":"unsubscribe","track_ids":["TR_nope"]}"#.into(), "track_not_found"),
        ("mute a track not ours", r#"{"type":"mute","track_id":"TR_nope","muted":true}"#.into(), "track_not_found"),
        (
            "settings of a track not received",
            r#"{"type":"track_settings","track_id":"TR_x","hidden":true}"#.into(),
            "track_not_found",
        ),
        ("settings with half a size", r#"{"type":"track_settings","track_id":"TR_x","width":5}"#.into(), "bad_message"),
        ("garbage candidate", r#"{"type":"candidate","candidate":"candidate:garbage"}"#.into(), "bad_candidate"),
        ("garbage sdp offer", r#"{"type":"offer","id":1,"sdp":"not sdp"}"#.into(), "sdp_rejected"),
        ("oversized", big, "too_large"),
    ];
    for (name, text, code) in cases {
        send(&mut ws, &text).await;
        let m = recv_type(&mut ws, "error").await;
        assert_eq!(m["code"], code, "{name}: {m}");
        // Still alive: ping answered.
        send(&mut ws, r#"{"type":"ping","ts":42}"#).await;
        let pong = recv_type(&mut ws, "pong").await;
        assert_eq!(pong["ts"], 42, "{name}: session survives");
    }
    // An empty candidate (end of candidates) is fine: no error, next ping answered first.
    send(&mut ws, r#"{"type":"candidate","candidate":""}"#).await;
    send(&mut ws, r#"{"type":"ping","ts":1}"#).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    s.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test]
async fn bad_joins_close_with_documented_codes() {
    let s = server().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let sign = |claims: serde_json::Value, secret: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(KEY.into());
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    };
    let expired = sign(serde_json::json!({"sub":"a","exp":now-600,"video":{"room":"r","room_join":true}}), SECRET);
    let forged =
        sign(serde_json::json!({"sub":"a","exp":now+600,"video":{"room":"r","room_join":true}}), "wrong-secret");
    let no_join = sign(serde_json::json!({"sub":"a","exp":now+600,"video":{"room":"r"}}), SECRET);
    let join_msg = |t: &str, v: u32| format!(r#"{{"type":"join","v":{v},"token":"{t}"}}"#);
    let cases: Vec<(&str, String, u16)> = vec![
        ("garbage token", join_msg("abc", 1), 4001),
        ("forged signature", join_msg(&forged, 1), 4001),
        ("expired", join_msg(&expired, 1), 4002),
        ("no room_join grant", join_msg(&no_join, 1), 4004),
        ("unsupported version", join_msg(&token("r", "a"), 2), 4005),
        ("first message not join", r#"{"type":"ping","ts":1}"#.into(), 4003),
        ("first message not json", "nope".into(), 4003),
    ];
    for (name, first, code) in cases {
        let mut ws = connect(&s).await;
        send(&mut ws, &first).await;
        // The error comes first (protocol_v1.rs checks each code), then the close.
        assert_eq!(recv(&mut ws).await["req_type"], "join", "{name}");
        assert_eq!(close_code(&mut ws).await, Some(code), "{name}");
    }
    // The server is still serving.
    let (_ws, joined) = join(&s, "r", "still-ok").await;
    assert_eq!(joined["type"], "joined");
    s.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test]
async fn room_events_replace_and_shutdown() {
    let s = server().await;
    let (mut a, _) = join(&s, "r2", "alice").await;
    let (mut b, jb) = join(&s, "r2", "bob").await;
    assert_eq!(jb["participants"].as_array().unwrap().len(), 1, "bob sees alice in the snapshot");
    let pj = recv_type(&mut a, "participant_joined").await;
    assert_eq!(pj["participant"]["identity"], "bob");

    // Bob joins again elsewhere: the old session is replaced.
    let (mut b2, jb2) = join(&s, "r2", "bob").await;
    assert_eq!(recv_type(&mut b, "leave").await["reason"], "replaced");
    assert_eq!(close_code(&mut b).await, Some(4009));
    let left = recv_type(&mut a, "participant_left").await;
    assert_eq!(left["participant_id"], jb["participant"]["id"]);
    assert_eq!(left["reason"], "replaced");
    assert_ne!(jb2["participant"]["id"], jb["participant"]["id"]);

    // Leave: closed with 1000, others told.
    send(&mut b2, r#"{"type":"leave"}"#).await;
    assert_eq!(close_code(&mut b2).await, Some(1000));
    assert_eq!(recv_type(&mut a, "participant_left").await["reason"], "left");

    // Shutdown: participants are told, sockets closed with 1001.
    let state = s.state.clone();
    let stop = tokio::spawn(s.shutdown(std::time::Duration::from_secs(3)));
    assert_eq!(recv_type(&mut a, "leave").await["reason"], "server_shutdown");
    assert_eq!(close_code(&mut a).await, Some(1001));
    stop.await.unwrap();
    assert_eq!(state.rooms.counts(), (0, 0, 0));
}

#[tokio::test]
async fn publishing_without_the_grant_is_refused() {
    use signaling::auth::{mint, TokenRequest};
    use str0m::media::{Direction, MediaKind};
    let s = server().await;
    let token = mint(
        KEY,
        SECRET,
        &TokenRequest {
            room: "p".into(),
            identity: "viewer".into(),
            name: None,
            ttl: std::time::Duration::from_secs(60),
            can_publish: false,
            can_subscribe: true,
            can_chat: true,
            room_admin: false,
            ..TokenRequest::new("", "")
        },
    );
    let mut ws = connect(&s).await;
    send(&mut ws, &format!(r#"{{"type":"join","v":1,"token":"{token}"}}"#)).await;
    recv_type(&mut ws, "joined").await;
    // A real offer that sends audio.
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _pending) = change.apply().unwrap();
    let msg = serde_json::json!({"type": "offer", "id": 1, "sdp": offer.to_sdp_string()});
    send(&mut ws, &msg.to_string()).await;
    let err = recv_type(&mut ws, "error").await;
    assert_eq!(err["code"], "permission_denied", "{err}");
    assert_eq!(err["req_type"], "offer");
    send(&mut ws, r#"{"type":"ping","ts":3}"#).await;
    assert_eq!(recv_type(&mut ws, "pong").await["ts"], 3);
    assert_eq!(s.state.sfu.stats().tracks, 0, "nothing was published");
    s.shutdown(std::time::Duration::from_secs(2)).await;
}
