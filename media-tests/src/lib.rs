//! Media-level test tools for Courier: a native WebRTC client that reaches the server only
//! over the network, like any participant, and tells exactly what media it received.
//!
//! Browser tests show that media plays; they cannot say that frame 1234 arrived intact 3 ms
//! after it was sent, or that no packet of another track slipped into it. This crate can: its
//! client publishes real VP8 video (a committed clip, so that browsers decode it) whose every
//! frame carries a self-checking trailer, and real Opus audio that is decoded on arrival, and
//! reports per-track counters as JSON. Scenario tests start the `courier` binary, run clients
//! (in-process or through the `media-tests` CLI) and assert on those reports.
//!
//! # Layout
//!
//! - [`frame`]: the VP8 clip, the frame format (clip frame + filler + integrity trailer), its
//!   RTP packetizer, the frame assembler and the per-track video counters. Sans-I/O.
//! - [`ivf`]: the IVF container reader the clip is stored in. Sans-I/O.
//! - [`audio`]: the speech-like Opus source and the decoding receiver with packet loss
//!   concealment. Sans-I/O.
//! - [`signal`]: protocol v1 messages, the glare rules, the mid → track map, and the WebSocket.
//! - [`simulcast`]: synthetic simulcast layers (q/h/f) of the same frames. Sans-I/O.
//! - [`client`]: [`client::Client`], the webrtc-rs participant tying it all together.
//! - [`whip`]: WHIP publish and WHEP play with the same peer, senders and receivers, over HTTP.
//! - [`relay`]: the impairment relay between one client and the server (bandwidth cap with a
//!   tail-drop queue, delay, jitter, loss, outages, on a schedule): a sans-I/O link and a tokio shell.
//! - [`tcp_relay`]: the same link on the signaling WebSocket's TCP path (delay, rate with backpressure,
//!   outages that hold bytes; a byte stream is never dropped, reordered or duplicated): a tokio shell.
//! - [`load`]: the load generator (`media-tests load`): cheap str0m peers, the servers under test (Courier, Janus,
//!   Pion's broadcast example), CPU/RSS from `/proc`, forwarded packets per CPU-second, added delay.
//! - [`report`]: the JSON report.
//! - [`interop_report`]: the interop matrix's report of this client (one cell beside Chromium, Pion, …).
//! - [`scenario`]: scenario files (who joins, publishes, how each link is impaired, what must hold). Sans-I/O.
//! - [`plot`]: the SVG timeline of a scenario report.
//! - [`server`]: the real `courier` binary as a child process on ephemeral loopback ports.
//! - [`recovery`]: loss episodes and recovery times from the frames as shown. Sans-I/O.
//! - [`series`]: received bitrate, loss and frame delay per 500 ms bin, for the scenario plot. Sans-I/O.
//! - [`token`]: minting HS256 access tokens for tests.
//! - [`seq`], [`delay`]: RTP counter unwrapping and delay percentiles.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use media_tests::client::{Client, ClientOptions};
//! use media_tests::signal::MediaKind;
//! use media_tests::token::{mint_token, TokenRequest};
//!
//! let token = mint_token(&TokenRequest::new("k", "s", "demo", "alice"))?;
//! let options = ClientOptions::publishing(&[MediaKind::Audio, MediaKind::Video]);
//! let client = Client::connect("ws://127.0.0.1:7880/rtc", &token, options).await?;
//! tokio::time::sleep(std::time::Duration::from_secs(5)).await;
//! let report = client.leave().await?;
//! println!("{}", serde_json::to_string(&report)?);
//! # Ok(())
//! # }
//! ```

pub mod audio;
pub mod client;
pub mod delay;
pub mod frame;
pub mod interop_report;
pub mod ivf;
pub mod load;
pub mod plot;
pub mod recovery;
pub mod relay;
pub mod report;
pub mod scenario;
pub mod seq;
pub mod series;
pub mod server;
pub mod signal;
pub mod simulcast;
pub mod tcp_relay;
pub mod token;
pub mod whip;
