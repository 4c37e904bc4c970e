//! Shared helpers for the signaling integration tests: a server on ephemeral loopback ports and a WebSocket client.

#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use signaling::auth::{mint, TokenRequest};
use signaling::config::{Config, RawConfig};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

pub const KEY: &str = "testkey";
pub const SECRET: &str = "testsecret";

pub async fn server() -> signaling::Server {
    server_with(|_| {}).await
}

/// A fresh data directory for one test (kept: the process is short-lived and /tmp is the test machine's).
pub fn data_dir() -> std::path::PathBuf {
    tempfile::tempdir().unwrap().keep()
}

/// The test configuration: loopback, ephemeral ports, a fresh data directory, the built-in web demo at `/`; `f`
/// changes what a test needs.
pub fn config(f: impl FnOnce(&mut RawConfig)) -> Config {
    let mut raw = RawConfig {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        udp_addr: Some("127.0.0.1:0".parse().unwrap()),
        workers: Some(2),
        keys: Some([(KEY.to_string(), SECRET.to_string())].into()),
        data_dir: Some(data_dir()),
        ..Default::default()
    };
    f(&mut raw);
    Config::resolve(raw, false).unwrap()
}

/// Join rate limits off: for tests that join thousands of members from one address.
pub fn no_join_limits(raw: &mut RawConfig) {
    let limits = raw.limits.get_or_insert_with(Default::default);
    limits.join_per_ip_per_sec = Some(0.0);
    limits.join_per_identity_per_sec = Some(0.0);
}

pub async fn server_with(f: impl FnOnce(&mut RawConfig)) -> signaling::Server {
    signaling::Server::start(config(f)).await.unwrap()
}

pub fn token(room: &str, identity: &str) -> String {
    token_with(room, identity, |_| {})
}

/// A token whose grants `f` changes.
pub fn token_with(room: &str, identity: &str, f: impl FnOnce(&mut TokenRequest)) -> String {
    let mut req = token_request(room, identity);
    f(&mut req);
    mint(KEY, SECRET, &req)
}

/// What [`token`] grants: everything but `room_admin`, for 10 minutes.
pub fn token_request(room: &str, identity: &str) -> TokenRequest {
    TokenRequest {
        room: room.into(),
        identity: identity.into(),
        name: None,
        ttl: Duration::from_secs(600),
        can_publish: true,
        can_subscribe: true,
        can_chat: true,
        room_admin: false,
        ..TokenRequest::new("", "")
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(s: &signaling::Server) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/rtc", s.http_addr)).await.unwrap();
    ws
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// Next text message as JSON, within 5 s.
pub async fn recv(ws: &mut Ws) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a message within 5 s");
        match m.expect("socket open").expect("no socket error") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Next message of `type`, skipping others, within 5 s.
pub async fn recv_type(ws: &mut Ws, ty: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = tokio::time::timeout_at(deadline, recv(ws)).await.unwrap_or_else(|_| panic!("no {ty} within 5 s"));
        if m["type"] == ty {
            return m;
        }
    }
}

/// The close code the server closes with, within 15 s.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return Some(u16::from(f.code)),
            Ok(Some(Ok(Message::Close(None)))) => return Some(u16::from(CloseCode::Status)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
            Err(_) => panic!("no close within 15 s"),
        }
    }
}

pub async fn join(s: &signaling::Server, room: &str, identity: &str) -> (Ws, serde_json::Value) {
    join_token(s, &token(room, identity)).await
}

pub async fn join_token(s: &signaling::Server, token: &str) -> (Ws, serde_json::Value) {
    let mut ws = connect(s).await;
    send(&mut ws, &format!(r#"{{"type":"join","v":1,"token":"{token}"}}"#)).await;
    let joined = recv_type(&mut ws, "joined").await;
    (ws, joined)
}

/// A fresh database on the test PostgreSQL server (`COURIER_TEST_POSTGRES_URL`, started by scripts/test.sh), or
/// `None` outside CI when there is none.
pub async fn postgres_database() -> Option<String> {
    let Ok(url) = std::env::var("COURIER_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL tests: COURIER_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipped: COURIER_TEST_POSTGRES_URL not set");
        return None;
    };
    let (client, conn) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("the test PostgreSQL server");
    tokio::spawn(conn);
    let name = format!("courier_e2e_{}", rand::random::<u32>());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let base = url.rsplit_once('/').map(|(base, _)| base).expect("a URL with a database");
    Some(format!("{base}/{name}"))
}

/// An admin API token: no join, `f` sets the grants.
pub fn api_token(room: &str, f: impl FnOnce(&mut TokenRequest)) -> String {
    let mut req = TokenRequest {
        room_join: false,
        can_publish: false,
        can_subscribe: false,
        can_chat: false,
        ..TokenRequest::new(room, "backend")
    };
    f(&mut req);
    mint(KEY, SECRET, &req)
}

/// One admin API call over a real connection: (status, JSON body or `null`), within 5 s.
pub async fn api(
    s: &signaling::Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<axum::body::Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(format!("http://{}{path}", s.http_addr));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req.header("content-type", "application/json").body(Full::new(axum::body::Bytes::from(body))).unwrap();
    let res =
        tokio::time::timeout(Duration::from_secs(5), client.request(req)).await.expect("answer within 5 s").unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// Check `check` every 50 ms until it gives a value, for at most `within`; panics with `what` and the last answer.
/// For outcomes a background job brings about (a lifecycle tick, a retention run, a reload): the test waits for
/// the outcome, never for a fixed time.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() >= deadline => panic!("{what} not within {within:?}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The webhook signature check a receiver would write, independent of the server's code: HMAC-SHA256 with `secret`
/// over "<t>." + body, `t` within five minutes of now.
pub fn check_webhook_signature(secret: &str, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = headers.get("courier-signature").and_then(|v| v.to_str().ok()).ok_or("no signature header")?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or("no t")?, v1.ok_or("no v1")?);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let want: String = ring::hmac::sign(&key, &signed).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    if want != v1 {
        return Err(format!("bad signature {header}"));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if now.abs_diff(t) > 300 {
        return Err(format!("signature time {t} is not now ({now})"));
    }
    Ok(())
}

/// One webhook endpoint at `url` signed with `secret`, retrying quickly and for long (tests bound their own waits).
pub fn webhook_endpoint(url: &str, secret: &str) -> signaling::config::RawWebhooks {
    toml::from_str(&format!(
        r#"
[[endpoints]]
url = "{url}"
secret = "{secret}"
timeout_ms = 2000
backoff_initial_ms = 20
backoff_max_ms = 100
max_attempts = 1000
"#
    ))
    .expect("a valid [webhooks] table")
}

/// A test CA and what it signs.
pub struct Ca {
    pub issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Courier test CA");
        Ca { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    /// A server certificate for localhost and 127.0.0.1: (chain PEM, key PEM, leaf DER).
    pub fn server_cert(&self) -> (String, String, rustls::pki_types::CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    pub fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    }
}
