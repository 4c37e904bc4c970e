//! A smoke run against the real `courier` binary: two clients, audio and video, unpublish and
//! republish. Ignored by default (it needs a built server); run it with
//!
//! ```text
//! COURIER_BIN=target/debug/courier cargo test -p media-tests --test courier_smoke -- --ignored --nocapture
//! ```
//!
//! It asserts only what must hold for any working server (media flows, nothing corrupt, ids
//! consistent) and prints both reports for a human to read.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::init_tracing;
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::signal::MediaKind;
use media_tests::token::{mint_token, TokenRequest};

const T: Duration = Duration::from_secs(15);

struct Courier {
    child: Child,
    url: String,
    _data: std::path::PathBuf,
}

impl Drop for Courier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_courier() -> Courier {
    let bin = std::env::var("COURIER_BIN").expect("set COURIER_BIN to the courier binary");
    let data = std::env::temp_dir().join(format!("courier-smoke-{}", std::process::id()));
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--dev",
            "--http-addr",
            "127.0.0.1:0",
            "--udp-addr",
            "127.0.0.1:0",
            "--keys",
            "k:s",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("courier starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("COURIER_READY")))
        .expect("COURIER_READY line");
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let http = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .expect("http= in the ready line");
    Courier {
        child,
        url: format!("ws://{http}/rtc"),
        _data: data,
    }
}

fn token(identity: &str) -> String {
    mint_token(&TokenRequest::new("k", "s", "smoke", identity)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs COURIER_BIN"]
async fn two_clients_through_courier() {
    init_tracing();
    let server = start_courier();
    let alice = Client::connect(
        &server.url,
        &token("alice"),
        ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video]),
    )
    .await
    .unwrap();
    alice.wait_connected(T).await.unwrap();
    let mut bob = Client::connect(&server.url, &token("bob"), ClientOptions::default())
        .await
        .unwrap();
    bob.wait_connected(T).await.unwrap();
    for _ in 0..2 {
        bob.wait_for_event(T, |e| matches!(e, ClientEvent::MediaReceived { .. }))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    alice.unpublish(MediaKind::Video).await.unwrap();
    let gone = bob
        .wait_for_event(T, |e| matches!(e, ClientEvent::TrackUnpublished { .. }))
        .await
        .unwrap();
    println!("bob saw {gone:?}");
    alice.republish(MediaKind::Video).await.unwrap();
    let again = bob
        .wait_for_event(T, |e| {
            matches!(
                e,
                ClientEvent::MediaReceived {
                    kind: MediaKind::Video,
                    ..
                }
            )
        })
        .await;
    if again.is_err() {
        println!("alice: {}", serde_json::to_string(&alice.stats()).unwrap());
        println!("bob: {}", serde_json::to_string(&bob.stats()).unwrap());
    }
    let again = again.expect("the republished video reaches bob");
    println!("bob saw {again:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let bob_report = bob.leave().await.unwrap();
    let alice_report = alice.leave().await.unwrap();
    println!("{}", serde_json::to_string(&alice_report).unwrap());
    println!("{}", serde_json::to_string(&bob_report).unwrap());

    assert_eq!(
        bob_report.video().count(),
        2,
        "the first and the republished video track"
    );
    for v in bob_report.video() {
        assert!(v.frames_complete > 0, "{v:?}");
        assert_eq!(
            (v.frames_corrupt, v.frames_foreign, v.frames_duplicate),
            (0, 0, 0),
            "{v:?}"
        );
        assert!(v.participant_id == alice_report.participant_id, "{v:?}");
    }
    let a = bob_report.audio().next().expect("audio received");
    assert!(a.packets_decoded > 100, "{a:?}");
    assert_eq!(a.decode_errors, 0, "{a:?}");
}
