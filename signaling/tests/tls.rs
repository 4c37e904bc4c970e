//! HTTPS and WSS on the server's listener: a client that trusts a test CA joins a room over `wss://` and reads
//! `/healthz` over `https://`; a client that does not speak TLS is closed without harming anyone; a renewed
//! certificate written over the files is presented to the next connections without a restart.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(s: &signaling::Server, ca: &Ca) -> Tls {
    let tcp = tokio::net::TcpStream::connect(s.http_addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(10), ca.client().connect(name, tcp)).await.unwrap().unwrap()
}

/// The leaf certificate the server presented.
fn presented(tls: &Tls) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

#[tokio::test]
async fn wss_and_https_with_a_certificate_renewed_in_place() {
    let ca = Ca::new();
    let dir = data_dir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (chain, key, first) = ca.server_cert();
    std::fs::write(&cert_path, &chain).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let (c, k) = (cert_path.clone(), key_path.clone());
    let s = server_with(move |raw| {
        raw.tls = Some(signaling::config::RawTlsConfig { cert_file: Some(c), key_file: Some(k) });
    })
    .await;

    // https://…/healthz
    let mut tls = tls_connect(&s, &ca).await;
    assert_eq!(presented(&tls), first);
    assert_eq!(tls.get_ref().1.alpn_protocol(), None, "the client asked for no ALPN");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A client that does not speak TLS is closed; the listener goes on.
    let mut plain = tokio::net::TcpStream::connect(s.http_addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a plain-text client must be closed, not left hanging");
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"), "no plain-text answer on the TLS port");

    // wss://…/rtc: a join and its answer.
    let tls = tls_connect(&s, &ca).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/rtc", tls).await.unwrap();
    let join = serde_json::json!({"type": "join", "v": 1, "token": token("secure", "alice")}).to_string();
    ws.send(Message::Text(join.into())).await.unwrap();
    let joined = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "joined" {
                break v;
            }
            panic!("expected joined, got {v}");
        }
    };
    assert_eq!(joined["room"], "secure");

    // Renewal in place: the chain first, then the key (a moment where they disagree is survived).
    let (chain2, key2, second) = ca.server_cert();
    assert_ne!(first, second);
    std::fs::write(&cert_path, &chain2).unwrap();
    std::fs::write(&key_path, &key2).unwrap();
    eventually("the renewed certificate", Duration::from_secs(15), || async {
        let tls = tls_connect(&s, &ca).await;
        if presented(&tls) == second {
            Ok(())
        } else {
            Err("still the first certificate".to_string())
        }
    })
    .await;
    // The session opened before the renewal is untouched.
    ws.send(Message::Text(r#"{"type":"chat_send","client_id":"c1","payload":{"text":"still here"}}"#.into()))
        .await
        .unwrap();
    let ack = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "chat_ack" {
                break v;
            }
        }
    };
    assert_eq!(ack["client_id"], "c1");
    s.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_bad_certificate_fails_the_start_with_the_file_named() {
    let dir = data_dir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, "not a certificate").unwrap();
    std::fs::write(&key_path, "").unwrap();
    let cfg = config(|raw| {
        raw.tls =
            Some(signaling::config::RawTlsConfig { cert_file: Some(cert_path.clone()), key_file: Some(key_path) });
    });
    let err = match signaling::Server::start(cfg).await {
        Ok(_) => panic!("started with a bad certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("cert.pem") && err.contains("no certificate"), "{err}");
    // Half a [tls] table is refused at configuration time.
    let raw = signaling::config::RawConfig {
        keys: Some([(KEY.to_string(), SECRET.to_string())].into()),
        tls: Some(signaling::config::RawTlsConfig { cert_file: Some(cert_path), key_file: None }),
        ..Default::default()
    };
    let err = signaling::config::Config::resolve(raw, false).unwrap_err().to_string();
    assert!(err.contains("both cert_file and key_file"), "{err}");
}
