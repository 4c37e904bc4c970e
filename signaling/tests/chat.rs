//! Chat over the real WebSocket against a real server with its SQLite store: send and acknowledge, fan-out,
//! retries, history, resume, direct conversations, receipts, typing, recall and edit, alerts, bad input, restart.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn chat_send(client_id: &str, text: &str) -> String {
    json!({"type": "chat_send", "client_id": client_id, "payload": {"text": text}}).to_string()
}

/// Next `chat_message`, within 5 s.
async fn next_message(ws: &mut Ws) -> Value {
    recv_type(ws, "chat_message").await
}

/// Messages until `chat_resumed` for `conversation`; returns (messages, the chat_resumed).
async fn until_resumed(ws: &mut Ws, conversation: &str) -> (Vec<Value>, Value) {
    let mut got = Vec::new();
    loop {
        let m = recv(ws).await;
        if m["type"] == "chat_message" {
            got.push(m);
        } else if m["type"] == "chat_resumed" && m["conversation"] == conversation {
            return (got, m);
        }
    }
}

/// Everything that arrives within `d`.
async fn drain_for(ws: &mut Ws, d: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    use futures::StreamExt;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            got.push(serde_json::from_str(&t).unwrap());
        }
    }
    got
}

fn seqs(msgs: &[Value]) -> Vec<u64> {
    msgs.iter().filter(|m| m["type"] == "chat_message").map(|m| m["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn send_ack_fanout_and_retries() {
    let s = server().await;
    let (mut alice, _) = join(&s, "r", "alice").await;
    let fresh = recv_type(&mut alice, "chat_resumed").await;
    assert_eq!((fresh["status"].as_str(), fresh["last_seq"].as_u64()), (Some("fresh"), Some(0)));
    let (mut bob, _) = join(&s, "r", "bob").await;

    send(&mut alice, &chat_send("a-1", "hello")).await;
    let ack = recv_type(&mut alice, "chat_ack").await;
    assert_eq!(ack["client_id"], "a-1");
    assert_eq!(ack["conversation"], "room:r");
    assert_eq!(ack["seq"], 1);
    assert!(ack["epoch"].as_u64().unwrap() > 0);
    assert!(ack.get("duplicate").is_none());

    let m = next_message(&mut bob).await;
    assert_eq!(
        (m["seq"].as_u64(), m["sender"].as_str(), m["payload"]["text"].as_str()),
        (Some(1), Some("alice"), Some("hello"))
    );
    assert_eq!(m["client_id"], "a-1");

    // A retry (the ack was lost on the way, say) gets the original acknowledgement and no second message.
    send(&mut alice, &chat_send("a-1", "hello")).await;
    let again = recv_type(&mut alice, "chat_ack").await;
    assert_eq!((again["seq"].as_u64(), again["duplicate"].as_bool()), (Some(1), Some(true)));
    assert_eq!(again["epoch"], ack["epoch"]);
    send(&mut alice, &chat_send("a-2", "second")).await;
    assert_eq!(next_message(&mut bob).await["seq"], 2, "the retry was not delivered again");

    // Pipelined sends keep their order.
    for i in 3..=40 {
        send(&mut bob, &chat_send(&format!("b-{i}"), &format!("n{i}"))).await;
    }
    let mut got = Vec::new();
    while got.len() < 38 {
        let m = next_message(&mut alice).await;
        if m["sender"] == "bob" {
            got.push((m["seq"].as_u64().unwrap(), m["client_id"].as_str().unwrap().to_string()));
        }
    }
    let expected: Vec<(u64, String)> = (3..=40).map(|i| (i, format!("b-{i}"))).collect();
    assert_eq!(got, expected, "in the order sent, numbered in that order");

    // The counters show it.
    let metrics = http_get(s.http_addr, "/metrics").await;
    let stored: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("courier_chat_messages_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("courier_chat_messages_total");
    assert_eq!(stored, 40);
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn history_pages_and_resume_replays_exactly_the_gap() {
    let s = server_with(|raw| {
        raw.chat = Some(signaling::config::RawChatConfig { rate_per_sec: Some(1000.0), ..Default::default() })
    })
    .await;
    let (mut alice, _) = join(&s, "r", "alice").await;
    for i in 1..=30 {
        send(&mut alice, &chat_send(&format!("a{i}"), &format!("m{i}"))).await;
    }
    let mut last = json!(null);
    for _ in 0..30 {
        last = recv_type(&mut alice, "chat_ack").await;
    }
    assert_eq!(last["seq"], 30);
    let epoch = last["epoch"].as_u64().unwrap();

    send(&mut alice, r#"{"type":"chat_history","id":7,"before":31,"limit":10}"#).await;
    let h = recv_type(&mut alice, "chat_history").await;
    assert_eq!(h["id"], 7);
    assert_eq!(
        (h["epoch"].as_u64(), h["first_seq"].as_u64(), h["last_seq"].as_u64()),
        (Some(epoch), Some(1), Some(30))
    );
    let page: Vec<u64> = h["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(page, (21..=30).collect::<Vec<_>>());
    send(&mut alice, r#"{"type":"chat_history","after":5,"limit":3}"#).await;
    let h = recv_type(&mut alice, "chat_history").await;
    assert_eq!(h["messages"][0]["payload"]["text"], "m6");
    assert_eq!(h["messages"].as_array().unwrap().len(), 3);
    send(&mut alice, r#"{"type":"chat_history","after":5,"before":9}"#).await;
    assert_eq!(recv_type(&mut alice, "error").await["code"], "bad_message");

    // Bob saw up to 12 and reconnects while alice keeps talking.
    let join_bob = json!({"type": "join", "v": 1, "token": token("r", "bob"),
        "chat": [{"conversation": "room:r", "epoch": epoch, "last_seq": 12}]})
    .to_string();
    let talker = {
        let addr = s.http_addr;
        tokio::spawn(async move {
            for i in 31..=60 {
                send(&mut alice, &chat_send(&format!("a{i}"), &format!("m{i}"))).await;
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let _ = addr;
            alice
        })
    };
    let mut bob = connect(&s).await;
    send(&mut bob, &join_bob).await;
    let (replayed, resumed) = until_resumed(&mut bob, "room:r").await;
    assert_eq!(resumed["status"], "ok");
    assert_eq!(resumed["epoch"], epoch);
    let mut all = seqs(&replayed);
    assert_eq!(all.first(), Some(&13), "the gap starts right after what bob saw");
    let mut alice = talker.await.unwrap();
    while all.last().copied() < Some(60) {
        all.push(next_message(&mut bob).await["seq"].as_u64().unwrap());
    }
    assert_eq!(all, (13..=60).collect::<Vec<_>>(), "every number once, in order");
    assert!(seqs(&drain_for(&mut bob, Duration::from_millis(300)).await).is_empty(), "nothing twice");

    // A gap beyond retention is not recovered, never replayed in part.
    let conv = courier_chat::ConversationId::room("r").unwrap();
    let retention = courier_chat::store::Retention { max_age_ms: None, max_count: Some(10) };
    s.state.chat.store.trim(&conv, retention, 0).await.unwrap();
    let join_carol = json!({"type": "join", "v": 1, "token": token("r", "carol"),
        "chat": [{"conversation": "room:r", "epoch": epoch, "last_seq": 20}]})
    .to_string();
    let mut carol = connect(&s).await;
    send(&mut carol, &join_carol).await;
    let (replayed, resumed) = until_resumed(&mut carol, "room:r").await;
    assert!(replayed.is_empty());
    assert_eq!((resumed["status"].as_str(), resumed["first_seq"].as_u64()), (Some("not_recovered"), Some(51)));
    send(&mut alice, &chat_send("after", "after the trim")).await;
    assert_eq!(next_message(&mut carol).await["seq"], 61, "live messages continue");
    s.shutdown(Duration::from_secs(2)).await;
}

/// A gap of several replay chunks (500 messages each) goes out chunk after chunk, and the last chunk and
/// `chat_resumed` are not left waiting for some other event (the session's 1 s housekeeping tick once let them
/// wait for it: a 1,000-message resume took a second instead of milliseconds).
#[tokio::test]
async fn a_gap_of_several_chunks_is_replayed_without_a_stall() {
    let s = server_with(|raw| {
        raw.chat = Some(signaling::config::RawChatConfig {
            rate_per_sec: Some(10_000.0),
            room_rate_per_sec: Some(10_000.0),
            ..Default::default()
        })
    })
    .await;
    let (mut alice, _) = join(&s, "big", "alice").await;
    let mut epoch = 0;
    for batch in 0..6 {
        for i in 0..200 {
            send(&mut alice, &chat_send(&format!("b{batch}-{i}"), "x")).await;
        }
        for _ in 0..200 {
            epoch = recv_type(&mut alice, "chat_ack").await["epoch"].as_u64().unwrap();
        }
    }
    let join_bob = json!({"type": "join", "v": 1, "token": token("big", "bob"),
        "chat": [{"conversation": "room:big", "epoch": epoch, "last_seq": 0}]})
    .to_string();
    let mut bob = connect(&s).await;
    let start = std::time::Instant::now();
    send(&mut bob, &join_bob).await;
    let (replayed, resumed) = until_resumed(&mut bob, "room:big").await;
    let took = start.elapsed();
    assert_eq!((resumed["status"].as_str(), resumed["replayed"].as_u64()), (Some("ok"), Some(1200)));
    assert_eq!(seqs(&replayed), (1..=1200).collect::<Vec<_>>());
    assert!(took < Duration::from_millis(900), "the replay stalled: {took:?} for 1,200 messages");
    s.shutdown(Duration::from_secs(2)).await;
}

/// One message at a time, each sent when the previous one is acknowledged (a client with an outbox of one): the
/// acks go out at once. Without TCP_NODELAY on the server's sockets each waited for the client's delayed ACK
/// (40 ms on Linux), so 20 round trips took 800 ms or more.
#[tokio::test]
async fn acks_are_not_held_back_by_the_socket() {
    let s = server().await;
    let (mut alice, _) = join(&s, "quick", "alice").await;
    let start = std::time::Instant::now();
    for i in 0..20 {
        send(&mut alice, &chat_send(&format!("q{i}"), "x")).await;
        assert_eq!(recv_type(&mut alice, "chat_ack").await["seq"], i + 1);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(600), "20 send→ack round trips took {took:?}");
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn direct_messages_reach_the_other_identity_in_any_room() {
    let s = server().await;
    let (mut alice, _) = join(&s, "r1", "alice").await;
    let (mut bob, _) = join(&s, "r2", "bob").await;
    let (mut carol, _) = join(&s, "r2", "carol").await;
    send(
        &mut alice,
        &json!({"type": "chat_send", "client_id": "d1", "to": "bob", "payload": {"text": "psst"}}).to_string(),
    )
    .await;
    let ack = recv_type(&mut alice, "chat_ack").await;
    assert_eq!((ack["conversation"].as_str(), ack["seq"].as_u64()), (Some("dm:alice:bob"), Some(1)));
    let m = next_message(&mut bob).await;
    assert_eq!((m["conversation"].as_str(), m["payload"]["text"].as_str()), (Some("dm:alice:bob"), Some("psst")));
    // Bob answers by conversation id.
    send(
        &mut bob,
        &json!({"type": "chat_send", "client_id": "d2", "conversation": "dm:alice:bob", "payload": 1}).to_string(),
    )
    .await;
    assert_eq!(next_message(&mut alice).await["sender"], "bob");
    // Carol can neither read nor write it.
    send(&mut carol, r#"{"type":"chat_history","conversation":"dm:alice:bob"}"#).await;
    assert_eq!(recv_type(&mut carol, "error").await["code"], "conversation_not_found");
    send(
        &mut carol,
        &json!({"type": "chat_send", "client_id": "x", "conversation": "room:r1", "payload": 1}).to_string(),
    )
    .await;
    let e = recv_type(&mut carol, "error").await;
    assert_eq!((e["code"].as_str(), e["client_id"].as_str()), (Some("conversation_not_found"), Some("x")));
    assert!(seqs(&drain_for(&mut carol, Duration::from_millis(200)).await).is_empty(), "carol saw nothing");
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn receipts_typing_recall_and_edit() {
    let s = server().await;
    let (mut alice, _) = join(&s, "r", "alice").await;
    let (mut bob, _) = join(&s, "r", "bob").await;
    for i in 1..=3 {
        send(&mut alice, &chat_send(&format!("a{i}"), &format!("m{i}"))).await;
        next_message(&mut bob).await;
    }
    // ✓ delivered, then ✓✓ read.
    send(&mut bob, r#"{"type":"chat_receipt","conversation":"room:r","delivered":3}"#).await;
    let r = recv_type(&mut alice, "chat_receipt").await;
    assert_eq!((r["identity"].as_str(), r["delivered"].as_u64(), r["read"].as_u64()), (Some("bob"), Some(3), Some(0)));
    send(&mut bob, r#"{"type":"chat_receipt","conversation":"room:r","read":2}"#).await;
    let r = recv_type(&mut alice, "chat_receipt").await;
    assert_eq!((r["delivered"].as_u64(), r["read"].as_u64()), (Some(3), Some(2)));
    send(&mut bob, r#"{"type":"chat_receipt","conversation":"room:r","read":1}"#).await;
    assert_eq!(recv_type(&mut alice, "chat_receipt").await["read"], 2, "never backwards");
    send(&mut alice, r#"{"type":"chat_receipts","id":"q","conversation":"room:r"}"#).await;
    let list = recv_type(&mut alice, "chat_receipts").await;
    assert_eq!(list["receipts"], json!([{"identity": "bob", "delivered": 3, "read": 2}]));

    // Typing is passed on and never stored.
    send(&mut alice, r#"{"type":"chat_typing","typing":true}"#).await;
    let t = recv_type(&mut bob, "chat_typing").await;
    assert_eq!((t["identity"].as_str(), t["typing"].as_bool()), (Some("alice"), Some(true)));
    // So is an ephemeral message.
    send(
        &mut alice,
        &json!({"type": "chat_send", "client_id": "e1", "kind": "reaction", "persist": false, "payload": {}})
            .to_string(),
    )
    .await;
    let e = next_message(&mut bob).await;
    assert_eq!((e["ephemeral"].as_bool(), e.get("seq")), (Some(true), None));
    assert_eq!(recv_type(&mut alice, "chat_ack").await["ephemeral"], true);
    // Likes (low priority by default) arrive as a count per second.
    for i in 0..3 {
        send(
            &mut alice,
            &json!({"type": "chat_send", "client_id": format!("l{i}"), "kind": "like", "payload": {}}).to_string(),
        )
        .await;
        assert_eq!(recv_type(&mut alice, "chat_ack").await["ephemeral"], true);
    }
    let mut likes = 0;
    while likes < 3 {
        let agg = recv_type(&mut bob, "chat_aggregate").await;
        assert_eq!(agg["kind"], "like");
        likes += agg["count"].as_u64().unwrap();
    }
    assert_eq!(likes, 3);

    // Recall and edit are sequenced events; only the sender may change a message.
    send(&mut bob, r#"{"type":"chat_recall","client_id":"r1","seq":1}"#).await;
    assert_eq!(recv_type(&mut bob, "error").await["code"], "message_not_found");
    send(&mut alice, r#"{"type":"chat_recall","client_id":"r1","seq":1}"#).await;
    let ev = next_message(&mut bob).await;
    assert_eq!(
        (ev["kind"].as_str(), ev["payload"]["seq"].as_u64(), ev["seq"].as_u64()),
        (Some("chat.recall"), Some(1), Some(4))
    );
    send(&mut alice, r#"{"type":"chat_edit","client_id":"e2","seq":2,"payload":{"text":"m2 (fixed)"}}"#).await;
    let ev = next_message(&mut bob).await;
    assert_eq!(
        (ev["kind"].as_str(), ev["payload"]["payload"]["text"].as_str()),
        (Some("chat.edit"), Some("m2 (fixed)"))
    );
    send(&mut alice, r#"{"type":"chat_recall","client_id":"r2","seq":1}"#).await;
    assert_eq!(recv_type(&mut alice, "error").await["code"], "message_not_found", "already recalled");
    send(&mut bob, r#"{"type":"chat_history","limit":10}"#).await;
    let h = recv_type(&mut bob, "chat_history").await;
    let msgs = h["messages"].as_array().unwrap();
    assert_eq!((msgs[0]["state"].as_str(), msgs[0].get("payload")), (Some("recalled"), None));
    assert_eq!((msgs[1]["state"].as_str(), msgs[1]["payload"]["text"].as_str()), (Some("edited"), Some("m2 (fixed)")));
    assert_eq!(msgs.len(), 5, "3 messages, a recall and an edit; nothing ephemeral");
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn mentions_and_must_acknowledge_alerts() {
    let s = server_with(|raw| {
        raw.chat = Some(signaling::config::RawChatConfig { alert_renotify_secs: Some(1), ..Default::default() })
    })
    .await;
    let (mut captain, _) = join(&s, "crew", "captain").await;
    let (mut fo, _) = join(&s, "crew", "fo").await;
    let (mut purser, _) = join(&s, "crew", "purser").await;

    send(
        &mut captain,
        &json!({"type": "chat_send", "client_id": "m", "mentions": ["fo"], "payload": {"text": "@fo"}}).to_string(),
    )
    .await;
    assert_eq!(next_message(&mut fo).await["mentioned"], true);
    assert!(next_message(&mut purser).await.get("mentioned").is_none());
    recv_type(&mut captain, "chat_ack").await;

    send(
        &mut captain,
        &json!({"type": "chat_send", "client_id": "pb", "must_ack": true, "payload": {"text": "push back"}})
            .to_string(),
    )
    .await;
    let seq = recv_type(&mut captain, "chat_ack").await["seq"].as_u64().unwrap();
    let m = next_message(&mut fo).await;
    assert_eq!((m["seq"].as_u64(), m["must_ack"].as_bool()), (Some(seq), Some(true)));
    send(&mut fo, &json!({"type": "chat_alert_ack", "conversation": "room:crew", "seq": seq}).to_string()).await;
    assert_eq!(recv_type(&mut fo, "chat_alert_ack").await["status"], "acked");
    let acked = recv_type(&mut captain, "chat_alert_acked").await;
    assert_eq!((acked["identity"].as_str(), acked["seq"].as_u64()), (Some("fo"), Some(seq)));
    send(&mut captain, &json!({"type": "chat_alert_status", "conversation": "room:crew", "seq": seq}).to_string())
        .await;
    let st = recv_type(&mut captain, "chat_alert_status").await;
    assert_eq!(st["pending"], json!(["purser"]));
    assert_eq!(st["acked"][0]["identity"], "fo");

    // The purser has not acknowledged: reminded until they do, and again after reconnecting.
    let again = recv_type(&mut purser, "chat_alert").await;
    assert_eq!((again["seq"].as_u64(), again["message"]["payload"]["text"].as_str()), (Some(seq), Some("push back")));
    drop(purser);
    let (mut purser, _) = join(&s, "crew", "purser").await;
    assert_eq!(recv_type(&mut purser, "chat_alert").await["seq"], seq, "at once after joining");
    send(&mut purser, &json!({"type": "chat_alert_ack", "conversation": "room:crew", "seq": seq}).to_string()).await;
    assert_eq!(recv_type(&mut purser, "chat_alert_ack").await["status"], "acked");
    let later = drain_for(&mut purser, Duration::from_millis(2500)).await;
    assert!(later.iter().all(|m| m["type"] != "chat_alert"), "no reminders once acknowledged");
    // The fo never was reminded after acknowledging.
    let fo_later = drain_for(&mut fo, Duration::from_millis(100)).await;
    assert!(fo_later.iter().all(|m| m["type"] != "chat_alert"));
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn bad_chat_input_gets_codes_and_the_session_survives() {
    let s = server_with(|raw| {
        raw.chat = Some(signaling::config::RawChatConfig {
            max_payload_bytes: Some(100),
            rate_per_sec: Some(5.0),
            ..Default::default()
        })
    })
    .await;
    let (mut alice, _) = join(&s, "r", "alice").await;
    let cases: &[(Value, &str)] = &[
        (json!({"type": "chat_send", "client_id": "big", "payload": {"t": "x".repeat(200)}}), "too_large"),
        (json!({"type": "chat_send", "client_id": "k", "kind": "chat.recall", "payload": 1}), "bad_message"),
        (json!({"type": "chat_send", "client_id": "k2", "kind": "bad kind", "payload": 1}), "bad_message"),
        (json!({"type": "chat_send", "client_id": "has space", "payload": 1}), "bad_message"),
        (json!({"type": "chat_send", "client_id": "p", "priority": "high", "payload": 1}), "permission_denied"),
        (json!({"type": "chat_send", "client_id": "me", "to": "alice", "payload": 1}), "bad_message"),
        (
            json!({"type": "chat_send", "client_id": "both", "to": "bob", "conversation": "room:r", "payload": 1}),
            "bad_message",
        ),
    ];
    for (msg, code) in cases {
        send(&mut alice, &msg.to_string()).await;
        let e = recv_type(&mut alice, "error").await;
        assert_eq!(e["code"], *code, "{msg}");
        assert_eq!(e["client_id"], msg["client_id"], "{msg}");
    }
    send(&mut alice, r#"{"type":"chat_send","client_id":"nopayload"}"#).await;
    assert_eq!(recv_type(&mut alice, "error").await["code"], "bad_message");
    // Too fast: the chat rate limit (5/s, burst 10) refuses, and nothing refused was stored. A fresh identity has a
    // full bucket, whatever alice's requests above took from hers.
    let (mut flooder, _) = join(&s, "r", "flooder").await;
    for i in 0..20 {
        send(&mut flooder, &chat_send(&format!("f{i}"), "flood")).await;
    }
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < 20 {
        let m = recv(&mut flooder).await;
        match m["type"].as_str() {
            Some("chat_ack") => acked += 1,
            Some("error") if m["code"] == "rate_limited" => limited += 1,
            _ => {}
        }
    }
    assert!(limited > 0 && acked >= 10, "acked {acked}, limited {limited}");
    send(&mut alice, r#"{"type":"chat_history","limit":50}"#).await;
    let h = recv_type(&mut alice, "chat_history").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), acked);

    // A token without the chat grant reads but does not write.
    let (mut quiet, _) = join_token(&s, &token_with("r", "quiet", |t| t.can_chat = false)).await;
    send(&mut quiet, &chat_send("q1", "hi")).await;
    assert_eq!(recv_type(&mut quiet, "error").await["code"], "permission_denied");
    send(&mut quiet, r#"{"type":"chat_history"}"#).await;
    assert_eq!(recv_type(&mut quiet, "chat_history").await["last_seq"], acked);
    // An admin may send high priority.
    let (mut admin, _) = join_token(&s, &token_with("r", "admin", |t| t.room_admin = true)).await;
    send(&mut admin, &json!({"type": "chat_send", "client_id": "h", "priority": "high", "payload": 1}).to_string())
        .await;
    assert!(recv_type(&mut admin, "chat_ack").await["seq"].as_u64().is_some());
    assert_eq!(recv_type(&mut quiet, "chat_message").await["priority"], "high");
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn history_survives_a_restart_and_the_sequence_continues() {
    let dir = data_dir();
    let cfg = |dir: &std::path::Path| {
        let dir = dir.to_path_buf();
        config(move |raw| raw.data_dir = Some(dir))
    };
    let s = signaling::Server::start(cfg(&dir)).await.unwrap();
    let (mut alice, _) = join(&s, "r", "alice").await;
    for i in 1..=5 {
        send(&mut alice, &chat_send(&format!("a{i}"), "before")).await;
    }
    let mut ack = json!(null);
    for _ in 0..5 {
        ack = recv_type(&mut alice, "chat_ack").await;
    }
    s.shutdown(Duration::from_secs(2)).await;

    let s = signaling::Server::start(cfg(&dir)).await.unwrap();
    let (mut alice, _) = join(&s, "r", "alice").await;
    let fresh = recv_type(&mut alice, "chat_resumed").await;
    assert_eq!((fresh["epoch"].clone(), fresh["last_seq"].as_u64()), (ack["epoch"].clone(), Some(5)));
    send(&mut alice, &chat_send("a5", "retry after restart")).await;
    let dup = recv_type(&mut alice, "chat_ack").await;
    assert_eq!((dup["seq"].as_u64(), dup["duplicate"].as_bool()), (Some(5), Some(true)), "idempotent across restarts");
    send(&mut alice, &chat_send("a6", "after")).await;
    assert_eq!(recv_type(&mut alice, "chat_ack").await["seq"], 6);
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn keyword_lists_reload_at_run_time_and_admins_mute() {
    let words = data_dir().join("words.toml");
    std::fs::write(&words, "blocked = [\"spam\"]\nreplaced = [\"darn\"]\n").unwrap();
    let words_cfg = words.clone();
    let s = server_with(move |raw| {
        raw.chat = Some(signaling::config::RawChatConfig {
            replaced_words: Some(vec!["heck".into()]),
            words_file: Some(words_cfg),
            rate_per_sec: Some(5.0),
            ..Default::default()
        })
    })
    .await;
    let (mut alice, _) = join(&s, "r", "alice").await;
    let (mut bob, _) = join(&s, "r", "bob").await;
    send(&mut alice, &chat_send("w1", "buy SPAM")).await;
    let e = recv_type(&mut alice, "error").await;
    assert_eq!((e["code"].as_str(), e["client_id"].as_str()), (Some("blocked"), Some("w1")));
    send(&mut alice, &chat_send("w2", "darn, what the heck")).await;
    assert_eq!(next_message(&mut bob).await["payload"]["text"], "****, what the ****");
    // The operator edits the file: the new lists apply without a restart.
    std::fs::write(&words, "blocked = [\"darn\"]\n").unwrap();
    // The words file is polled every 2 s: send until the new list refuses (a condition, bounded in time).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut i = 0;
    loop {
        i += 1;
        send(&mut alice, &chat_send(&format!("w3-{i}"), "darn")).await;
        let m = recv(&mut alice).await;
        let m = if m["type"] == "chat_message" { recv(&mut alice).await } else { m };
        if m["type"] == "error" && m["code"] == "blocked" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the words file was not reloaded: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send(&mut alice, &chat_send("w4", "spam is fine now")).await;
    assert_eq!(recv_type(&mut alice, "chat_ack").await["client_id"], "w4");

    // Muting needs room_admin; a muted member reads but cannot send until unmuted.
    send(&mut bob, r#"{"type":"chat_mute","identity":"alice","muted":true}"#).await;
    assert_eq!(recv_type(&mut bob, "error").await["code"], "permission_denied");
    let (mut admin, _) = join_token(&s, &token_with("r", "mod", |t| t.room_admin = true)).await;
    send(&mut admin, r#"{"type":"chat_mute","identity":"alice","muted":true,"duration_secs":600}"#).await;
    let muted = recv_type(&mut alice, "chat_muted").await;
    assert_eq!(
        (muted["identity"].as_str(), muted["muted"].as_bool(), muted["by"].as_str()),
        (Some("alice"), Some(true), Some("mod"))
    );
    assert!(muted["until"].as_u64().is_some());
    send(&mut alice, &chat_send("m1", "hello?")).await;
    assert_eq!(recv_type(&mut alice, "error").await["code"], "muted");
    send(&mut alice, &json!({"type": "chat_send", "client_id": "m2", "to": "bob", "payload": 1}).to_string()).await;
    assert_eq!(recv_type(&mut alice, "chat_ack").await["client_id"], "m2", "direct messages are not the room's");
    send(&mut admin, r#"{"type":"chat_mute","identity":"alice","muted":false}"#).await;
    recv_type(&mut alice, "chat_muted").await;
    send(&mut alice, &chat_send("m3", "back")).await;
    assert_eq!(recv_type(&mut alice, "chat_ack").await["client_id"], "m3");

    // The rate limit is per identity: a second connection of carol (another room) shares her one bucket.
    let (mut carol, _) = join(&s, "r", "carol").await;
    let (mut carol2, _) = join(&s, "other", "carol").await;
    for i in 0..10 {
        send(&mut carol, &chat_send(&format!("ra{i}"), "x")).await;
        send(&mut carol2, &chat_send(&format!("rb{i}"), "x")).await;
    }
    let mut acked = 0;
    for ws in [&mut carol, &mut carol2] {
        for _ in 0..10 {
            loop {
                let m = recv(ws).await;
                match m["type"].as_str() {
                    Some("chat_ack") => {
                        acked += 1;
                        break;
                    }
                    Some("error") => break,
                    _ => {}
                }
            }
        }
    }
    assert!((10..=12).contains(&acked), "one bucket of 10 (+ refill) for both connections: {acked}");
    s.shutdown(Duration::from_secs(2)).await;
}

/// A pre-send hook on 127.0.0.1: drops "drop", rewrites "modify", answers "slow" after 2 s, fails on "500".
async fn hook_server() -> std::net::SocketAddr {
    use axum::{routing::post, Json, Router};
    async fn hook(Json(req): Json<Value>) -> Result<Json<Value>, axum::http::StatusCode> {
        let text = req["payload"]["text"].as_str().unwrap_or_default().to_string();
        Ok(Json(match text.as_str() {
            "drop" => json!({"action": "drop", "reason": "no dropping"}),
            "modify" => json!({"action": "modify", "payload": {"text": "modified", "by": req["sender"]}}),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                json!({"action": "pass"})
            }
            "500" => return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
            _ => json!({"action": "pass"}),
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/hook", post(hook))).await });
    addr
}

#[tokio::test]
async fn the_pre_send_hook_passes_modifies_drops_and_fails_open_or_closed() {
    let addr = hook_server().await;
    for fail_open in [true, false] {
        let s = server_with(|raw| {
            raw.chat = Some(signaling::config::RawChatConfig {
                hook_url: Some(format!("http://{addr}/hook")),
                hook_timeout_ms: Some(300),
                hook_fail_open: Some(fail_open),
                ..Default::default()
            })
        })
        .await;
        let (mut alice, _) = join(&s, "r", "alice").await;
        for (i, text) in ["fine", "drop", "modify", "slow", "500", "after"].iter().enumerate() {
            send(&mut alice, &chat_send(&format!("h{i}"), text)).await;
        }
        let mut answers = Vec::new();
        while answers.len() < 6 {
            let m = recv(&mut alice).await;
            match m["type"].as_str() {
                Some("chat_ack") => answers.push(("ack".to_string(), m["client_id"].as_str().unwrap().to_string())),
                Some("error") => answers
                    .push((m["code"].as_str().unwrap().to_string(), m["client_id"].as_str().unwrap().to_string())),
                _ => {}
            }
        }
        let failed = if fail_open { "ack" } else { "hook_unavailable" };
        let expected: Vec<(String, String)> =
            [("ack", "h0"), ("rejected", "h1"), ("ack", "h2"), (failed, "h3"), (failed, "h4"), ("ack", "h5")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        assert_eq!(answers, expected, "fail_open = {fail_open}: answers in the order sent");
        send(&mut alice, r#"{"type":"chat_history"}"#).await;
        let h = recv_type(&mut alice, "chat_history").await;
        let texts: Vec<&str> =
            h["messages"].as_array().unwrap().iter().map(|m| m["payload"]["text"].as_str().unwrap()).collect();
        let want: Vec<&str> = if fail_open {
            vec!["fine", "modified", "slow", "500", "after"]
        } else {
            vec!["fine", "modified", "after"]
        };
        assert_eq!(texts, want);
        s.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn retention_trims_per_room_and_erasure_keeps_the_sequence() {
    let dir = data_dir();
    let data = dir.clone();
    let s = server_with(move |raw| {
        raw.data_dir = Some(data);
        let mut rooms = std::collections::HashMap::new();
        rooms.insert("r".to_string(), signaling::config::RawRetention { max_age_secs: None, max_count: Some(5) });
        raw.chat = Some(signaling::config::RawChatConfig {
            room_retention: Some(rooms),
            retention_interval_secs: Some(1),
            ..Default::default()
        })
    })
    .await;
    let (mut alice, _) = join(&s, "r", "alice").await;
    let (mut bob, _) = join(&s, "r", "bob").await;
    let (mut elsewhere, _) = join(&s, "kept", "alice").await;
    let mut epoch = json!(null);
    for i in 1..=10 {
        let (ws, who) = if i % 2 == 0 { (&mut bob, "b") } else { (&mut alice, "a") };
        send(ws, &chat_send(&format!("{who}{i}"), &format!("m{i}"))).await;
        epoch = recv_type(ws, "chat_ack").await["epoch"].clone();
        send(&mut elsewhere, &chat_send(&format!("k{i}"), "kept")).await;
        recv_type(&mut elsewhere, "chat_ack").await;
    }
    // Within a few retention runs only the newest 5 of room r remain; the other room keeps everything.
    // Retention runs each second: ask until the trim shows (a condition, bounded in time).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        send(&mut bob, r#"{"type":"chat_history","limit":50}"#).await;
        let h = recv_type(&mut bob, "chat_history").await;
        if h["first_seq"] == 6 {
            assert_eq!(seqs_of(&h), vec![6, 7, 8, 9, 10]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not trimmed: {h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send(&mut elsewhere, r#"{"type":"chat_history","limit":50}"#).await;
    assert_eq!(seqs_of(&recv_type(&mut elsewhere, "chat_history").await).len(), 10);
    // A resume from before the retained history is not recovered.
    let mut carol = connect(&s).await;
    let resume = json!({"type": "join", "v": 1, "token": token("r", "carol"),
        "chat": [{"conversation": "room:r", "epoch": epoch, "last_seq": 2}]});
    send(&mut carol, &resume.to_string()).await;
    assert_eq!(recv_type(&mut carol, "chat_resumed").await["status"], "not_recovered");

    // The operator erases alice with the CLI while the server runs.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["chat", "erase-identity", "--identity", "alice", "--data-dir"])
        .arg(&dir)
        .env_remove("COURIER_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("erased 12 messages"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    send(&mut bob, r#"{"type":"chat_history","limit":50}"#).await;
    let h = recv_type(&mut bob, "chat_history").await;
    let view: Vec<(u64, String, bool)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["state"].as_str().unwrap_or("normal").to_string(),
                m.get("payload").is_some(),
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            (6, "normal".into(), true),
            (7, "erased".into(), false),
            (8, "normal".into(), true),
            (9, "erased".into(), false),
            (10, "normal".into(), true)
        ]
    );
    s.shutdown(Duration::from_secs(2)).await;
}

fn seqs_of(history: &Value) -> Vec<u64> {
    history["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn the_server_keeps_its_promises_on_postgresql() {
    let Some(url) = postgres_database().await else { return };
    let dir = data_dir();
    let cfg = |url: &str| {
        let (url, dir) = (url.to_string(), dir.clone());
        config(move |raw| {
            raw.data_dir = Some(dir);
            raw.chat = Some(signaling::config::RawChatConfig {
                store: Some("postgres".into()),
                postgres_url: Some(url),
                rate_per_sec: Some(1000.0),
                ..Default::default()
            })
        })
    };
    let s = signaling::Server::start(cfg(&url)).await.unwrap();
    let (mut alice, _) = join(&s, "r", "alice").await;
    let (mut bob, _) = join(&s, "r", "bob").await;
    for i in 1..=20 {
        send(&mut alice, &chat_send(&format!("a{i}"), &format!("m{i}"))).await;
    }
    let mut epoch = json!(null);
    for i in 1..=20u64 {
        let ack = recv_type(&mut alice, "chat_ack").await;
        assert_eq!(ack["seq"], i);
        epoch = ack["epoch"].clone();
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        seen.push(next_message(&mut bob).await["seq"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    s.shutdown(Duration::from_secs(2)).await;
    // After a restart: retries are duplicates, a resume replays exactly the gap.
    let s = signaling::Server::start(cfg(&url)).await.unwrap();
    let (mut alice, _) = join(&s, "r", "alice").await;
    send(&mut alice, &chat_send("a20", "m20")).await;
    let dup = recv_type(&mut alice, "chat_ack").await;
    assert_eq!((dup["seq"].as_u64(), dup["duplicate"].as_bool(), &dup["epoch"]), (Some(20), Some(true), &epoch));
    let mut bob = connect(&s).await;
    let resume = json!({"type": "join", "v": 1, "token": token("r", "bob"),
        "chat": [{"conversation": "room:r", "epoch": epoch, "last_seq": 15}]});
    send(&mut bob, &resume.to_string()).await;
    let (replayed, resumed) = until_resumed(&mut bob, "room:r").await;
    assert_eq!(resumed["status"], "ok");
    assert_eq!(seqs(&replayed), vec![16, 17, 18, 19, 20]);
    s.shutdown(Duration::from_secs(2)).await;
}

/// The body of `GET path` (HTTP/1.0, so the server closes when done).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut text)).await.unwrap().unwrap();
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}
