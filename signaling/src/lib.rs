//! Courier's signaling server: the HTTP and WebSocket front of the `courier` binary, driving the `sfu` engine.
//!
//! A participant opens one WebSocket (`/rtc`, protocol v1 in `docs/protocol.md`), joins a room with an access
//! token, and negotiates one WebRTC connection with the engine through it. This crate owns everything around the
//! media: tokens, rooms and their events, the wire protocol, configuration, metrics and the development helpers.
//!
//! # Layout
//!
//! - [`config`]: file, environment and flags merged into a validated [`config::Config`].
//! - [`auth`]: access tokens (verify and mint).
//! - [`protocol`]: the wire messages; parse and encode only.
//! - [`room`]: membership, published tracks and the events a room fans out.
//! - [`session`]: one WebSocket connection.
//! - [`chat`]: sequenced, durable chat history (the store so far; not yet on the wire).
//! - [`api`]: the HTTP routes.

pub mod api;
pub mod auth;
pub mod chat;
pub mod config;
pub mod protocol;
pub mod room;
pub mod session;

use std::sync::Arc;

use sfu::{Sfu, SfuConfig};
use tokio::sync::watch;

use crate::auth::Keys;
use crate::config::Config;
use crate::room::Rooms;

/// What every request and session shares.
pub struct AppState {
    pub config: Config,
    pub keys: Keys,
    pub sfu: Sfu,
    pub rooms: Rooms,
    /// Flips to `true` when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
}

/// A running server: its addresses and the means to stop it.
pub struct Server {
    pub http_addr: std::net::SocketAddr,
    pub udp_addr: std::net::SocketAddr,
    pub state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Bind the HTTP listener and the UDP socket and start serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        use anyhow::Context;
        let sfu = Sfu::start(SfuConfig {
            udp_addr: config.udp_addr,
            public_ip: config.public_ip,
            workers: config.workers,
            bwe_initial_kbps: config.bwe_initial_kbps,
            ..SfuConfig::default()
        })
        .await
        .context("starting the media engine")?;
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP {}", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = Arc::new(AppState {
            keys: Keys(config.keys.clone()),
            config,
            sfu: sfu.clone(),
            rooms: Rooms::default(),
            shutdown: shutdown_rx.clone(),
        });
        let app = api::app(state.clone());
        let mut rx = shutdown_rx;
        let task = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
        });
        Ok(Server { http_addr, udp_addr: sfu.local_addr(), state, shutdown_tx, task })
    }

    /// Tell every participant, close the sessions, stop the engine. Waits at most `grace` for sessions to end.
    pub async fn shutdown(self, grace: std::time::Duration) {
        let _ = self.shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.state.rooms.counts().1 > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.state.sfu.shutdown().await;
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}
