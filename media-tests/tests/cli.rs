//! The `media-tests` binary: `token` prints a JWT, `client` joins, runs and prints the report
//! as the last line of stdout.

mod common;

use std::process::Command;

use common::{FakeOptions, FakeServer};
use media_tests::report::Report;

const BIN: &str = env!("CARGO_BIN_EXE_media-tests");

#[test]
fn token_prints_a_jwt() {
    let out = Command::new(BIN)
        .args([
            "token",
            "--key",
            "k",
            "--secret",
            "s",
            "--room",
            "r",
            "--identity",
            "alice",
            "--name",
            "Alice",
            "--no-subscribe",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("k"));
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_issuer(&["k"]);
    let claims =
        jsonwebtoken::decode::<media_tests::token::Claims>(token, &jsonwebtoken::DecodingKey::from_secret(b"s"), &v)
            .unwrap()
            .claims;
    assert_eq!(claims.sub, "alice");
    assert!(claims.video.can_publish && !claims.video.can_subscribe);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_prints_its_report_last() {
    let server = FakeServer::start(FakeOptions::default()).await;
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "client",
                "--url",
                &url,
                "--token",
                "carol",
                "--publish",
                "audio,video",
                "--duration",
                "2s",
                "--report",
                "json",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report = Report::from_stdout(&stdout).unwrap();
    assert_eq!(report.identity, "carol");
    assert!(report.duration_s >= 2.0);
    assert!(report.published.video_frames_sent > 20, "{report:?}");
    assert!(report.published.audio_packets_sent > 30, "{report:?}");
}

#[test]
fn client_fails_cleanly_without_a_server() {
    let out = Command::new(BIN)
        .args(["client", "--url", "ws://127.0.0.1:1/rtc", "--token", "x", "--duration", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: joining via ws://127.0.0.1:1/rtc"), "{stderr}");
}
