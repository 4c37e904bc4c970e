//! The real `courier` server for end-to-end tests ([`CourierProcess`], with the test key), and the CLI client as a
//! child process. The tests reach the server only over the network, like any client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use media_tests::server::CourierProcess;

pub const KEY: &str = "e2ekey";
pub const SECRET: &str = "e2esecret-long-enough";

/// The server binary: `COURIER_BIN`, else the workspace's debug build.
pub fn courier_bin() -> PathBuf {
    let p = std::env::var_os("COURIER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/courier"));
    assert!(p.exists(), "no courier binary at {} (run `cargo build -p signaling` or set COURIER_BIN)", p.display());
    p
}

/// The CLI of this crate.
pub fn media_tests_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_media-tests"))
}

/// The server under test: [`CourierProcess`] (fields `http`, `url`, `udp`; `pid`, `rss_kib`, `wait_empty`) with the
/// test key, panicking where a test cannot go on.
pub struct Courier(CourierProcess);

impl std::ops::Deref for Courier {
    type Target = CourierProcess;
    fn deref(&self) -> &CourierProcess {
        &self.0
    }
}

impl Courier {
    pub fn start() -> Courier {
        Courier::start_with_env(&[])
    }

    /// Started with extra environment (e.g. `COURIER_WEBHOOK_URL`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Courier {
        Courier(CourierProcess::start(&courier_bin(), KEY, SECRET, env).expect("courier starts"))
    }

    pub fn token(&self, room: &str, identity: &str) -> String {
        self.0.token(room, identity).expect("token")
    }

    /// The server's Prometheus metrics as name → value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        self.0.metrics().expect("metrics")
    }

    pub fn metric(&self, name: &str) -> f64 {
        *self.metrics().get(name).unwrap_or_else(|| panic!("metric {name}"))
    }
}

/// A `media-tests client` child process (for tests that must kill or freeze a client abruptly).
pub struct CliClient {
    pub child: Child,
}

impl CliClient {
    pub fn spawn(server: &Courier, room: &str, identity: &str, publish: &str, duration: &str) -> CliClient {
        let child = Command::new(media_tests_bin())
            .args(["client", "--url", &server.url, "--token", &server.token(room, identity), "--publish", publish])
            .args(["--duration", duration, "--report", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("media-tests client starts");
        CliClient { child }
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "kill -{sig}");
    }
}

impl Drop for CliClient {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.child.id().to_string()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client "alice" in `room` publishing three synthetic simulcast layers (q/h/f), connected, its track published,
/// and given half a second so every layer's first keyframe (and so its size) reaches the server before anyone
/// subscribes.
pub async fn simulcast_publisher(server: &Courier, room: &str, timeout: Duration) -> media_tests::client::Client {
    simulcast_publisher_at(&server.url, &server.token(room, "alice"), timeout).await
}

/// [`simulcast_publisher`] joining at `url` with `token` (a node of a cluster).
pub async fn simulcast_publisher_at(url: &str, token: &str, timeout: Duration) -> media_tests::client::Client {
    use media_tests::client::{Client, ClientEvent, ClientOptions};
    let options = ClientOptions {
        simulcast: Some(media_tests::simulcast::SimulcastConfig::default()),
        ..ClientOptions::publishing(&[media_tests::signal::MediaKind::Video])
    };
    let mut alice = Client::connect(url, token, options).await.expect("alice joins");
    alice.wait_connected(timeout).await.expect("alice connected");
    alice
        .wait_for_event(timeout, |e| matches!(e, ClientEvent::TrackPublished { own: true, .. }))
        .await
        .expect("published");
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice
}

/// Waits until `viewer` sees `identity` join and is subscribed to `tracks` of its tracks; returns who joined.
pub async fn wait_for_publisher(
    viewer: &mut media_tests::client::Client,
    identity: &str,
    tracks: usize,
    timeout: Duration,
) -> media_tests::signal::ParticipantInfo {
    use media_tests::client::ClientEvent;
    let joined = viewer
        .wait_for_event(timeout, |e| matches!(e, ClientEvent::ParticipantJoined(p) if p.identity == identity))
        .await
        .unwrap_or_else(|e| panic!("{identity} joins: {e}"));
    let ClientEvent::ParticipantJoined(who) = joined else { unreachable!("the predicate matched ParticipantJoined") };
    for _ in 0..tracks {
        viewer.wait_for_event(timeout, |e| matches!(e, ClientEvent::TrackSubscribed(_))).await.expect("subscribed");
    }
    who
}
