//! The real `courier` server for end-to-end tests: started as a child process on ephemeral loopback ports, read
//! through its `COURIER_READY` line and its `/metrics`, killed when dropped. The tests reach it only over the
//! network, like any client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use media_tests::token::{mint_token, TokenRequest};

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

pub struct Courier {
    child: Child,
    pub http: String,
    pub url: String,
    /// The server's UDP (media) address, its ICE host candidate.
    pub udp: std::net::SocketAddr,
    data: PathBuf,
}

impl Courier {
    pub fn start() -> Courier {
        Courier::start_with_env(&[])
    }

    /// Started with extra environment (e.g. `COURIER_WEBHOOK_URL`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Courier {
        let data = std::env::temp_dir().join(format!("courier-e2e-{}-{}", std::process::id(), rand_suffix()));
        let mut child = Command::new(courier_bin())
            .args(["serve", "--http-addr", "127.0.0.1:0", "--udp-addr", "127.0.0.1:0", "--workers", "2"])
            .arg("--keys")
            .arg(format!("{KEY}:{SECRET}"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--web-root")
            .arg(&data)
            .env("COURIER_LOG", std::env::var("COURIER_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("courier starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for l in lines.by_ref().map_while(Result::ok) {
                if l.starts_with("COURIER_READY") {
                    let _ = tx.send(l);
                    break;
                }
            }
            for _ in lines {}
        });
        let ready = rx.recv_timeout(Duration::from_secs(30)).expect("COURIER_READY within 30 s");
        let http = ready.split_whitespace().find_map(|w| w.strip_prefix("http=")).expect("http=").to_string();
        let udp = ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("udp="))
            .and_then(|a| a.parse().ok())
            .expect("udp= with an address");
        Courier { child, url: format!("ws://{http}/rtc"), http, udp, data }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn token(&self, room: &str, identity: &str) -> String {
        mint_token(&TokenRequest::new(KEY, SECRET, room, identity)).expect("token")
    }

    /// The server's Prometheus metrics as name → value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        let mut s = std::net::TcpStream::connect(&self.http).expect("metrics connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    pub fn metric(&self, name: &str) -> f64 {
        *self.metrics().get(name).unwrap_or_else(|| panic!("metric {name}"))
    }

    /// Resident memory of the server process, KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Wait (bounded) until the engine and the rooms are empty; returns the metrics it saw last.
    pub fn wait_empty(&self, within: Duration) -> HashMap<String, f64> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.metrics();
            let empty = [
                "courier_participants",
                "courier_tracks",
                "courier_sfu_peers",
                "courier_sfu_tracks",
                "courier_sfu_downtracks",
            ]
            .iter()
            .all(|k| m.get(*k) == Some(&0.0));
            if empty || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
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
    use media_tests::client::{Client, ClientEvent, ClientOptions};
    let options = ClientOptions {
        simulcast: Some(media_tests::simulcast::SimulcastConfig::default()),
        ..ClientOptions::publishing(&[media_tests::signal::MediaKind::Video])
    };
    let mut alice = Client::connect(&server.url, &server.token(room, "alice"), options).await.expect("alice joins");
    alice.wait_connected(timeout).await.expect("alice connected");
    alice
        .wait_for_event(timeout, |e| matches!(e, ClientEvent::TrackPublished { own: true, .. }))
        .await
        .expect("published");
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice
}
