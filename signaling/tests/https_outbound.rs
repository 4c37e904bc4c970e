//! Outbound HTTPS: webhooks and the chat pre-send hook reach receivers over TLS. A test CA (made here with
//! rcgen) signs a certificate for 127.0.0.1 and localhost; the receivers serve it on loopback. With the CA in
//! `outbound_ca_file` the server trusts them; without it (only the built-in Mozilla roots) every connection fails
//! its handshake, and nothing is delivered.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use common::*;
use courier_protocol::webhooks::{EventKind, Facts};
use serde_json::{json, Value};

const HOOK_SECRET: &str = "https-webhook-secret";

/// A test CA and a server certificate it signed, for 127.0.0.1 and localhost.
struct Pki {
    /// The CA certificate, PEM, in a file (for `outbound_ca_file`).
    ca_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "courier test CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "courier test receiver");
    let cert = params.signed_by(&server_key, &ca).unwrap();

    let ca_file = data_dir().join("test-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    Pki { ca_file, server: Arc::new(server) }
}

/// TLS over a loopback listener, for `axum::serve`. Handshakes run one at a time (enough for a test) and a failed
/// or stalled one is skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    handshakes_failed: Arc<Mutex<u32>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            match tokio::time::timeout(Duration::from_secs(5), self.tls.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                _ => *self.handshakes_failed.lock().unwrap() += 1,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Serve `app` over TLS on 127.0.0.1:0: its address and the count of failed handshakes.
async fn https_receiver(pki: &Pki, app: Router) -> (SocketAddr, Arc<Mutex<u32>>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let handshakes_failed = Arc::new(Mutex::new(0));
    let listener = TlsListener {
        tcp,
        tls: tokio_rustls::TlsAcceptor::from(pki.server.clone()),
        handshakes_failed: handshakes_failed.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, handshakes_failed)
}

/// A webhook receiver over HTTPS that accepts (and keeps) the bodies whose signature checks.
async fn webhook_receiver(pki: &Pki) -> (SocketAddr, Arc<Mutex<Vec<Value>>>, Arc<Mutex<u32>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/hooks",
            axum::routing::post(
                |State(got): State<Arc<Mutex<Vec<Value>>>>, headers: HeaderMap, body: Bytes| async move {
                    if check_webhook_signature(HOOK_SECRET, &headers, &body).is_err() {
                        // Not accepted: the test waiting for a delivery fails.
                        return StatusCode::BAD_REQUEST;
                    }
                    got.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(got.clone());
    let (addr, failed) = https_receiver(pki, app).await;
    (addr, got, failed)
}

fn endpoint(url: String, ca_file: Option<PathBuf>) -> impl FnOnce(&mut signaling::config::RawConfig) {
    move |raw| {
        raw.outbound_ca_file = ca_file;
        raw.webhooks = Some(webhook_endpoint(&url, HOOK_SECRET));
    }
}

#[tokio::test]
async fn webhooks_reach_an_https_receiver_the_ca_file_vouches_for() {
    let pki = pki();
    let (addr, got, _) = webhook_receiver(&pki).await;
    for host in [addr.to_string(), format!("localhost:{}", addr.port())] {
        let s = server_with(endpoint(format!("https://{host}/hooks"), Some(pki.ca_file.clone()))).await;
        s.state.webhooks.emit(EventKind::RoomStarted, Facts::room("tls"));
        eventually("the event delivered", Duration::from_secs(10), || async {
            match s.state.webhooks.stats().delivered {
                1 => Ok(()),
                n => Err(format!("{n} delivered, {:?}", s.state.webhooks.stats())),
            }
        })
        .await;
        s.shutdown(Duration::from_secs(2)).await;
    }
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2, "one event per server: {got:?}");
    assert!(got.iter().all(|v| v["event"] == "room_started" && v["room"]["name"] == "tls"), "{got:?}");
}

#[tokio::test]
async fn without_the_ca_file_an_https_receiver_is_not_trusted() {
    let pki = pki();
    let (addr, got, handshakes_failed) = webhook_receiver(&pki).await;
    let s = server_with(endpoint(format!("https://{addr}/hooks"), None)).await;
    s.state.webhooks.emit(EventKind::RoomStarted, Facts::room("tls"));
    eventually("failed attempts", Duration::from_secs(10), || async {
        match s.state.webhooks.stats().failed_attempts {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} failed attempts")),
        }
    })
    .await;
    let stats = s.state.webhooks.stats();
    assert_eq!(stats.delivered, 0, "{stats:?}");
    assert_eq!(stats.queued, 1, "still retrying: {stats:?}");
    assert!(got.lock().unwrap().is_empty(), "nothing reached the receiver's handler");
    eventually("a failed handshake at the receiver", Duration::from_secs(5), || async {
        match *handshakes_failed.lock().unwrap() {
            0 => Err("none".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    s.shutdown(Duration::from_millis(200)).await;
}

/// The pre-send hook of `tests/chat.rs`, over HTTPS: drops "drop", rewrites "modify", passes the rest.
async fn hook_receiver(pki: &Pki) -> SocketAddr {
    async fn hook(axum::Json(req): axum::Json<Value>) -> axum::Json<Value> {
        axum::Json(match req["payload"]["text"].as_str().unwrap_or_default() {
            "drop" => json!({"action": "drop", "reason": "no dropping"}),
            "modify" => json!({"action": "modify", "payload": {"text": "modified", "by": req["sender"]}}),
            _ => json!({"action": "pass"}),
        })
    }
    https_receiver(pki, Router::new().route("/hook", axum::routing::post(hook))).await.0
}

/// Send `texts` as alice in room "r"; the answers (`ack` or the error code) in order, and the texts stored.
async fn chat_through(s: &signaling::Server, texts: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut alice, _) = join(s, "r", "alice").await;
    for (i, text) in texts.iter().enumerate() {
        let m = json!({"type": "chat_send", "client_id": format!("h{i}"), "payload": {"text": text}});
        send(&mut alice, &m.to_string()).await;
    }
    let mut answers = Vec::new();
    while answers.len() < texts.len() {
        let m = recv(&mut alice).await;
        match m["type"].as_str() {
            Some("chat_ack") => answers.push("ack".to_string()),
            Some("error") => answers.push(m["code"].as_str().unwrap().to_string()),
            _ => {}
        }
    }
    send(&mut alice, r#"{"type":"chat_history"}"#).await;
    let h = recv_type(&mut alice, "chat_history").await;
    let stored =
        h["messages"].as_array().unwrap().iter().map(|m| m["payload"]["text"].as_str().unwrap().to_string()).collect();
    (answers, stored)
}

#[tokio::test]
async fn the_pre_send_hook_over_https() {
    let pki = pki();
    let addr = hook_receiver(&pki).await;
    let hooked = |ca_file: Option<PathBuf>| {
        move |raw: &mut signaling::config::RawConfig| {
            raw.outbound_ca_file = ca_file;
            raw.chat = Some(signaling::config::RawChatConfig {
                hook_url: Some(format!("https://{addr}/hook")),
                hook_timeout_ms: Some(2000),
                hook_fail_open: Some(false),
                ..Default::default()
            })
        }
    };

    let s = server_with(hooked(Some(pki.ca_file.clone()))).await;
    let (answers, stored) = chat_through(&s, &["fine", "drop", "modify"]).await;
    assert_eq!(answers, ["ack", "rejected", "ack"]);
    assert_eq!(stored, ["fine", "modified"]);
    s.shutdown(Duration::from_secs(2)).await;

    // Without the CA the hook cannot be asked: fail closed refuses every message.
    let s = server_with(hooked(None)).await;
    let (answers, stored) = chat_through(&s, &["fine", "modify"]).await;
    assert_eq!(answers, ["hook_unavailable", "hook_unavailable"]);
    assert!(stored.is_empty(), "{stored:?}");
    s.shutdown(Duration::from_secs(2)).await;
}
