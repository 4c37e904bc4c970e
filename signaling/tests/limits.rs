//! Limits, caps and operations end to end, over real loopback sockets: join rate limits, room and track caps, the
//! HTTP API guard (rate limit, body cap), readiness while draining, and `/metrics` as valid Prometheus text.
//!
//! Every client here is 127.0.0.1, so the per-address join limit is tested once end to end and the rest of the
//! keyed behaviour (many addresses, the bounded table) in `signaling::limits`'s unit tests. Rates are tiny (one
//! token per 1000 s) so that no bucket refills while a test runs: the outcomes do not depend on timing.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use signaling::config::{RawConfig, RawLimitsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Effectively no refill during a test.
const SLOW: f64 = 0.001;

fn limits(raw: &mut RawConfig, f: impl FnOnce(&mut RawLimitsConfig)) {
    f(raw.limits.get_or_insert_with(Default::default));
}

/// Send `join` with `token`; expect an `error` with `code`, then the close `close`.
async fn refused_join(s: &signaling::Server, token: &str, code: &str, close: u16) {
    let mut ws = connect(s).await;
    send(&mut ws, &format!(r#"{{"type":"join","v":1,"token":"{token}"}}"#)).await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["req_type"], "join", "{e}");
    assert_eq!(close_code(&mut ws).await, Some(close));
}

/// One HTTP/1.1 request over a fresh connection: (status, lower-cased headers, body).
async fn http(s: &signaling::Server, request: &str) -> (u16, HashMap<String, String>, String) {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(s.http_addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        // The server may close before reading a body it refused; what it wrote is still there to read.
        let _ = tcp.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("an HTTP answer within 10 s");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

async fn get(s: &signaling::Server, path: &str) -> (u16, HashMap<String, String>, String) {
    http(s, &format!("GET {path} HTTP/1.1\r\nHost: courier\r\nConnection: close\r\n\r\n")).await
}

/// The JSON in a body that may be chunked (take from the first `{` to the last `}`).
fn json_of(body: &str) -> serde_json::Value {
    let (Some(a), Some(b)) = (body.find('{'), body.rfind('}')) else { panic!("no JSON in {body:?}") };
    serde_json::from_str(&body[a..=b]).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

async fn dev_server(f: impl FnOnce(&mut RawConfig)) -> signaling::Server {
    let mut c = config(f);
    c.dev = true;
    signaling::Server::start(c).await.unwrap()
}

#[tokio::test]
async fn joins_from_one_address_are_rate_limited() {
    let s = server_with(|raw| {
        limits(raw, |l| {
            l.join_per_ip_per_sec = Some(SLOW);
            l.join_burst_per_ip = Some(3.0);
            l.join_per_identity_per_sec = Some(0.0);
        })
    })
    .await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(join(&s, "r", &format!("u{i}")).await);
    }
    refused_join(&s, &token("r", "u3"), "rate_limited", 4029).await;
    refused_join(&s, &token("other-room", "u4"), "rate_limited", 4029).await;
    // The members who got in are not affected.
    let (ws, _) = &mut kept[0];
    send(ws, r#"{"type":"ping","ts":1}"#).await;
    assert_eq!(recv_type(ws, "pong").await["ts"], 1);
}

#[tokio::test]
async fn joins_of_one_identity_are_rate_limited() {
    let s = server_with(|raw| {
        limits(raw, |l| {
            l.join_per_ip_per_sec = Some(0.0);
            l.join_per_identity_per_sec = Some(SLOW);
            l.join_burst_per_identity = Some(2.0);
        })
    })
    .await;
    let _a = join(&s, "r", "alice").await;
    let _b = join(&s, "r", "alice").await; // replaces the first
    refused_join(&s, &token("r", "alice"), "rate_limited", 4029).await;
    // Another identity from the same address still joins.
    let _c = join(&s, "r", "bob").await;
}

#[tokio::test]
async fn room_and_participant_caps() {
    let s = server_with(|raw| {
        limits(raw, |l| {
            l.max_rooms = Some(1);
            l.max_participants = Some(2);
        })
    })
    .await;
    let _a = join(&s, "r", "a").await;
    refused_join(&s, &token("another", "x"), "too_many_rooms", 4007).await;
    let _b = join(&s, "r", "b").await;
    refused_join(&s, &token("r", "c"), "room_full", 4006).await;
    // The same identity joining again replaces itself: it does not need a free place.
    let (mut b2, _) = join(&s, "r", "b").await;
    send(&mut b2, r#"{"type":"ping","ts":2}"#).await;
    assert_eq!(recv_type(&mut b2, "pong").await["ts"], 2);
}

/// A real (str0m) offer sending `kinds`.
fn offer_sending(kinds: &[str0m::media::MediaKind]) -> String {
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut change = rtc.sdp_api();
    for kind in kinds {
        change.add_media(*kind, str0m::media::Direction::SendOnly, None, None, None);
    }
    let (offer, _pending) = change.apply().expect("an offer");
    offer.to_sdp_string()
}

#[tokio::test]
async fn an_offer_over_the_track_cap_is_refused_and_the_session_goes_on() {
    use str0m::media::MediaKind::{Audio, Video};
    let s = server_with(|raw| limits(raw, |l| l.max_tracks_per_participant = Some(1))).await;
    let (mut ws, _) = join(&s, "r", "pub").await;
    // Two tracks: over the cap, refused before the engine sees it.
    let offer = serde_json::json!({"type": "offer", "id": 1, "sdp": offer_sending(&[Audio, Video])});
    send(&mut ws, &offer.to_string()).await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["code"], "too_many_tracks", "{e}");
    assert_eq!(e["req_type"], "offer");
    send(&mut ws, r#"{"type":"ping","ts":3}"#).await;
    assert_eq!(recv_type(&mut ws, "pong").await["ts"], 3);
    // One track: at the cap, negotiated.
    let offer = serde_json::json!({"type": "offer", "id": 2, "sdp": offer_sending(&[Audio])});
    send(&mut ws, &offer.to_string()).await;
    let answer = recv_type(&mut ws, "answer").await;
    assert_eq!(answer["id"], 2, "{answer}");
}

#[tokio::test]
async fn the_http_api_is_rate_limited_per_address_but_health_is_not() {
    let s = dev_server(|raw| {
        limits(raw, |l| {
            l.api_per_ip_per_sec = Some(SLOW);
            l.api_burst_per_ip = Some(2.0);
        })
    })
    .await;
    for _ in 0..2 {
        assert_eq!(get(&s, "/dev/token?room=r").await.0, 200);
    }
    let (status, headers, body) = get(&s, "/dev/token?room=r").await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = headers.get("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry >= 1, "{retry}");
    assert_eq!(json_of(&body)["code"], "rate_limited");
    for path in ["/healthz", "/readyz", "/metrics"] {
        for _ in 0..5 {
            assert_eq!(get(&s, path).await.0, 200, "{path} is not limited");
        }
    }
}

#[tokio::test]
async fn the_http_api_is_rate_limited_per_identity() {
    let s = dev_server(|raw| {
        limits(raw, |l| {
            l.api_per_identity_per_sec = Some(SLOW);
            l.api_burst_per_identity = Some(1.0);
        })
    })
    .await;
    let req = |t: &str| {
        format!("GET /dev/token HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n")
    };
    assert_eq!(http(&s, &req(&token("r", "ops"))).await.0, 200);
    let (status, _, body) = http(&s, &req(&token("r", "ops"))).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(json_of(&body)["code"], "rate_limited");
    // A token not signed by our keys names no identity: it cannot spend ops's budget, nor is it limited as ops.
    let forged = signaling::auth::mint(KEY, "not-the-secret", &token_request("r", "ops"));
    assert_eq!(http(&s, &req(&forged)).await.0, 200);
    assert_eq!(http(&s, &req(&token("r", "someone-else"))).await.0, 200);
}

#[tokio::test]
async fn a_body_over_the_cap_gets_413_too_large() {
    let s = dev_server(|raw| limits(raw, |l| l.max_body_bytes = Some(4096))).await;
    let body = "x".repeat(8192);
    let req = format!(
        "POST /dev/token HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, text) = http(&s, &req).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(json_of(&text)["code"], "too_large");
}

#[tokio::test]
async fn draining_refuses_joins_fails_readiness_and_sends_members_away() {
    let s = server().await;
    let (status, _, body) = get(&s, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["ready"], true);
    let (mut member, _) = join(&s, "r", "m").await;

    s.drain();
    let left = recv_type(&mut member, "leave").await;
    assert_eq!(left["reason"], "server_shutdown");
    assert_eq!(close_code(&mut member).await, Some(1001));
    let (status, _, body) = get(&s, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(json_of(&body)["reason"], "draining");
    assert_eq!(get(&s, "/healthz").await.0, 200, "alive while draining");
    refused_join(&s, &token("r", "late"), "server_draining", 1013).await;
    let (_, _, metrics) = get(&s, "/metrics").await;
    assert!(metrics.contains("courier_draining 1"), "{metrics}");
    assert!(metrics.contains("courier_joins_refused_total{cause=\"server_draining\"} 1"), "{metrics}");

    tokio::time::timeout(Duration::from_secs(20), s.shutdown(Duration::from_secs(5))).await.expect("stops");
}

/// `/metrics` is valid Prometheus text: every sample belongs to a declared family, every family has HELP and TYPE,
/// names and labels are well formed, values are numbers; and the families operators rely on are there.
#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let s = server_with(|raw| limits(raw, |l| l.max_rooms = Some(1))).await;
    let _a = join(&s, "r", "a").await;
    refused_join(&s, &token("second", "b"), "too_many_rooms", 4007).await;
    let (status, headers, body) = get(&s, "/metrics").await;
    assert_eq!(status, 200);
    assert!(headers.get("content-type").is_some_and(|c| c.starts_with("text/plain")), "{headers:?}");
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let (mut help, mut types) = (HashSet::new(), HashMap::new());
    let mut samples: HashMap<String, f64> = HashMap::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(name_ok(name) && help.insert(name.to_string()), "HELP once per family: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, ty) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty), "{line}");
            assert!(types.insert(name.to_string(), ty.to_string()).is_none(), "TYPE once per family: {line}");
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    for pair in labels.split(',') {
                        let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
                        assert!(name_ok(k) && v.starts_with('"') && v.ends_with('"') && v.len() >= 2, "{line}");
                    }
                    name
                }
                None => series,
            };
            // A histogram's samples are its family's name with _bucket, _sum or _count.
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix).filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(name) && help.contains(name), "sample of an undeclared family: {line}");
            if types[name] == "counter" {
                assert!(name.ends_with("_total") && value >= 0.0, "{line}");
            }
            assert!(samples.insert(series.to_string(), value).is_none(), "duplicate series {series}");
        }
    }
    for family in [
        "courier_rooms",
        "courier_participants",
        "courier_tracks",
        "courier_udp_bytes_in_total",
        "courier_udp_bytes_out_total",
        "courier_udp_datagrams_in_total",
        "courier_udp_datagrams_out_total",
        "courier_rtp_packets_in_total",
        "courier_rtp_packets_out_total",
        "courier_forward_drops_total",
        "courier_chat_messages_total",
        "courier_bwe_peers",
        "courier_bwe_estimate_sum_bps",
        "courier_bwe_estimate_min_bps",
        "courier_draining",
        "courier_joins_refused_total",
        "courier_offers_refused_total",
        "courier_http_refused_total",
        "courier_forward_delay_seconds",
    ] {
        assert!(types.contains_key(family), "missing {family}");
    }
    // The forwarding-delay histogram: cumulative buckets in increasing bounds, the last (+Inf) equal to the count.
    let buckets: Vec<(f64, f64)> = body
        .lines()
        .filter_map(|l| l.strip_prefix("courier_forward_delay_seconds_bucket{le=\""))
        .map(|rest| {
            let (le, v) = rest.split_once("\"} ").unwrap();
            (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, v.parse().unwrap())
        })
        .collect();
    assert!(buckets.len() > 5 && buckets.last().unwrap().0 == f64::INFINITY, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap().1, samples["courier_forward_delay_seconds_count"]);
    assert!(samples.contains_key("courier_forward_delay_seconds_sum"));
    assert_eq!(samples["courier_participants"], 1.0);
    assert_eq!(samples["courier_joins_refused_total{cause=\"too_many_rooms\"}"], 1.0);
    assert_eq!(samples["courier_draining"], 0.0);
}
