//! Protocol v1 exactly as `docs/protocol.md` says, at the edges a client written from the document alone meets:
//! every refused join says why before its close code, oversized and non-UTF-8 frames get a documented close (never
//! a bare reset), a client's close is answered, failed requests carry their `id` back, one bad `subscribe`
//! gets one error however many ids it names, and a node on its own names no node or region in participants.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Everything the server sends until it closes: its text messages, and the close code and reason (`None`: the
/// connection ended without a close frame).
async fn until_close(ws: &mut Ws) -> (Vec<Value>, Option<(u16, String)>) {
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("the server closes within 15 s") {
            Some(Ok(Message::Text(t))) => texts.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => return (texts, Some((u16::from(f.code), f.reason.to_string()))),
            Some(Ok(Message::Close(None))) => return (texts, Some((1005, String::new()))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (texts, None),
        }
    }
}

#[tokio::test]
async fn every_refused_join_says_why_before_its_close_code() {
    let s = server().await;
    let join_msg = |t: &str, v: &str| format!(r#"{{"type":"join","v":{v},"token":"{t}"}}"#);
    let good = token("r", "a");
    let cases: Vec<(&str, String, &str, u16)> = vec![
        ("garbage token", join_msg("abc", "1"), "invalid_token", 4001),
        ("unsupported version", join_msg(&good, "2"), "bad_version", 4005),
        ("v of the wrong type", join_msg(&good, "\"one\""), "bad_message", 4003),
        ("token of the wrong type", r#"{"type":"join","v":1,"token":5}"#.into(), "bad_message", 4003),
        ("no token", r#"{"type":"join","v":1}"#.into(), "bad_message", 4003),
        (
            "a chat entry without epoch",
            format!(r#"{{"type":"join","v":1,"token":"{good}","chat":[{{"conversation":"room:r","last_seq":1}}]}}"#),
            "bad_message",
            4003,
        ),
        ("first message not join", r#"{"type":"ping","ts":1}"#.into(), "not_joined", 4003),
        ("first message not json", "nope".into(), "not_joined", 4003),
    ];
    for (name, first, code, close) in cases {
        let mut ws = connect(&s).await;
        send(&mut ws, &first).await;
        let (texts, closed) = until_close(&mut ws).await;
        let (got_close, reason) = closed.unwrap_or_else(|| panic!("{name}: no close frame"));
        assert_eq!(got_close, close, "{name}");
        assert_eq!(texts.len(), 1, "{name}: one error before the close: {texts:?}");
        assert_eq!((texts[0]["type"].as_str(), texts[0]["code"].as_str()), (Some("error"), Some(code)), "{name}");
        assert_eq!(texts[0]["req_type"], "join", "{name}");
        // Close reasons are the server's words, not a parser's or a token library's.
        for leak in ["invalid type", "missing field", "expected", "line 1", "InvalidToken", "Base64"] {
            assert!(!reason.contains(leak), "{name}: close reason {reason:?} leaks {leak:?}");
        }
    }
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn oversized_and_non_utf8_frames_get_a_close_code_not_a_reset() {
    let s = server().await;
    let max = s.state.config.max_message_bytes;
    // Over the protocol cap but under the socket's: answered, the connection stays.
    let (mut ws, _) = join(&s, "big", "alice").await;
    send(&mut ws, &format!(r#"{{"type":"ping","ts":"{}"}}"#, "x".repeat(max + 10))).await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["code"], "too_large");
    send(&mut ws, r#"{"type":"ping","ts":7}"#).await;
    assert_eq!(recv_type(&mut ws, "pong").await["ts"], 7);
    // Far over (past the socket's own cap): `too_large`, then close 1009.
    send(&mut ws, &"y".repeat(max * 5)).await;
    let (texts, closed) = until_close(&mut ws).await;
    assert_eq!(closed.map(|c| c.0), Some(1009), "a close frame with 1009, not a reset");
    assert!(texts.iter().any(|t| t["code"] == "too_large"), "{texts:?}");
    // The same before join.
    let mut ws = connect(&s).await;
    send(&mut ws, &"z".repeat(max * 5)).await;
    let (_, closed) = until_close(&mut ws).await;
    assert_eq!(closed.map(|c| c.0), Some(1009));

    // A text frame that is not UTF-8: close 1007.
    let (mut ws, _) = join(&s, "big", "bob").await;
    let raw = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    ws.send(Message::Frame(raw)).await.unwrap();
    let (_, closed) = until_close(&mut ws).await;
    assert_eq!(closed.map(|c| c.0), Some(1007));

    // The server still serves.
    let (_ws, joined) = join(&s, "big", "carol").await;
    assert_eq!(joined["type"], "joined");
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_clients_close_is_answered() {
    let s = server().await;
    let (mut ws, _) = join(&s, "bye", "alice").await;
    ws.send(Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "done".into(),
    })))
    .await
    .unwrap();
    let (_, closed) = until_close(&mut ws).await;
    assert!(closed.is_some(), "the server answers the close frame (else the client reads 1006)");
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn failed_requests_carry_their_id_back_and_a_bad_subscribe_gets_one_error() {
    let s = server().await;
    let (mut ws, _) = join(&s, "ids", "alice").await;
    // Refused by the parser and by the handler: both carry the id.
    send(&mut ws, r#"{"type":"chat_history","id":"h1","limit":0}"#).await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!((e["code"].as_str(), e["id"].as_str()), (Some("bad_message"), Some("h1")), "{e}");
    send(&mut ws, r#"{"type":"chat_history","id":2,"conversation":"room:elsewhere"}"#).await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!((e["code"].as_str(), e["id"].as_u64()), (Some("conversation_not_found"), Some(2)), "{e}");
    send(&mut ws, r#"{"type":"chat_receipts","id":"r","conversation":"dm:x:y"}"#).await;
    assert_eq!(recv_type(&mut ws, "error").await["id"], "r");
    send(&mut ws, r#"{"type":"chat_alert_status","id":[1],"conversation":"room:ids","seq":99}"#).await;
    assert_eq!(recv_type(&mut ws, "error").await["id"], serde_json::json!([1]));
    send(&mut ws, r#"{"type":"offer","id":41,"sdp":"not sdp"}"#).await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!((e["req_type"].as_str(), e["id"].as_u64()), (Some("offer"), Some(41)), "{e}");

    // 3,000 unknown track ids: one error, then the connection answers at once.
    let ids: Vec<String> = (0..3000).map(|i| format!("\"TR_{i}\"")).collect();
    send(&mut ws, &format!(r#"{{"type":"subscribe","track_ids":[{}]}}"#, ids.join(","))).await;
    send(&mut ws, r#"{"type":"ping","ts":1}"#).await;
    let mut errors = 0;
    loop {
        let m = recv(&mut ws).await;
        match m["type"].as_str() {
            Some("error") => {
                errors += 1;
                assert_eq!(m["code"], "track_not_found");
                assert!(m["message"].as_str().unwrap().contains("2992 more"), "{m}");
            }
            Some("pong") => break,
            _ => {}
        }
    }
    assert_eq!(errors, 1);
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_node_on_its_own_names_no_node_or_region() {
    let s = server().await;
    let (mut alice, joined) = join(&s, "alone", "alice").await;
    let (_bob, bob_joined) = join(&s, "alone", "bob").await;
    let announced = recv_type(&mut alice, "participant_joined").await;
    for p in
        [&joined["participant"], &bob_joined["participant"], &bob_joined["participants"][0], &announced["participant"]]
    {
        assert!(p["identity"].is_string(), "a participant: {p}");
        assert!(p.get("node").is_none() && p.get("region").is_none(), "no cluster, no node: {p}");
    }
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn every_resume_entry_of_a_join_is_answered_and_a_position_ahead_is_reset() {
    let s = server().await;
    let (mut alice, _) = join(&s, "res", "alice").await;
    let mut epoch = 0;
    for i in 1..=3 {
        send(&mut alice, &format!(r#"{{"type":"chat_send","client_id":"m{i}","payload":{{"n":{i}}}}}"#)).await;
        let ack = recv_type(&mut alice, "chat_ack").await;
        assert_eq!(ack["seq"], i);
        epoch = ack["epoch"].as_u64().unwrap();
    }
    // Bob names a conversation he may not read, and holds numbers past the newest of his room's chat.
    let t = token("res", "bob");
    let mut bob = connect(&s).await;
    send(
        &mut bob,
        &format!(
            r#"{{"type":"join","v":1,"token":"{t}","chat":[{{"conversation":"room:elsewhere","epoch":1,"last_seq":1}},{{"conversation":"room:res","epoch":{epoch},"last_seq":10}},{{"conversation":"dm:bob:zed","epoch":0,"last_seq":5}}]}}"#
        ),
    )
    .await;
    recv_type(&mut bob, "joined").await;
    let mut refused = None;
    let mut resumed = std::collections::HashMap::new();
    while resumed.len() < 2 || refused.is_none() {
        let m = recv(&mut bob).await;
        match m["type"].as_str() {
            Some("error") => refused = Some(m),
            Some("chat_resumed") => {
                resumed.insert(m["conversation"].as_str().unwrap().to_string(), m);
            }
            _ => {}
        }
    }
    let refused = refused.unwrap();
    assert_eq!(
        (refused["code"].as_str(), refused["req_type"].as_str()),
        (Some("conversation_not_found"), Some("join"))
    );
    let room = &resumed["room:res"];
    assert_eq!((room["status"].as_str(), room["replayed"].as_u64()), (Some("reset"), Some(3)), "{room}");
    assert_eq!(resumed["dm:bob:zed"]["status"], "reset", "an empty conversation the client claims numbers of");
    s.shutdown(Duration::from_secs(2)).await;
}
