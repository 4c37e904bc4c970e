//! Courier's signaling server: the HTTP and WebSocket front of the `courier` binary, driving the `sfu` engine.
//!
//! A participant opens one WebSocket (`/rtc`, protocol v1 in `docs/protocol.md`), joins a room with an access
//! token, and negotiates one WebRTC connection with the engine through it. This crate owns everything around the
//! media: tokens, rooms and their events, configuration, metrics and the development helpers. The wire types are
//! `courier_protocol`'s and the IM core is `courier_chat`; this crate is the shell that drives them.
//!
//! # Layout
//!
//! - [`config`]: file, environment and flags merged into a validated [`config::Config`].
//! - [`auth`]: access tokens (verify and mint).
//! - [`cluster`]: many nodes as one service on Redis: node registry, room placement, presence, the chat bus.
//! - [`admission`]: whether a join gets in, or its refusal (code, close code, counter); no socket in it.
//! - [`room`]: the room registry: membership, published tracks and the events a room fans out.
//! - [`lifecycle`]: when a room may be joined, opens and closes (empty timeout, schedules); decisions only.
//! - [`admin`]: the admin REST API (`/api/v1`) and its OpenAPI document.
//! - [`session`]: one WebSocket connection, and the participant state it shares with WHIP/WHEP.
//! - [`whip`]: WHIP publish and WHEP play: a participant driven over HTTP (`/whip`, `/whep`).
//! - [`hook`]: the chat pre-send HTTP hook.
//! - [`outbound`]: the HTTP(S) client the hook and the webhooks share, and the roots outbound TLS trusts.
//! - [`jobs`]: the background jobs (lifecycle tick, retention, words file, aggregates) and their shutdown.
//! - [`room_store`]: the durable definitions of API-created rooms, so a restart keeps them.
//! - [`api`]: the HTTP routes.
//! - [`limits`]: rate limits (keyed token buckets) and refusal counters.
//! - [`ops`]: operations at the HTTP edge: readiness, drain, the API's rate and body limits.
//! - [`tls`]: HTTPS/WSS from certificate files, re-read when they change.
//! - [`turn`]: the built-in TURN server (the shell of `courier-turn`) or an external one, and the `ice_servers`
//!   with credentials each participant gets.
//! - [`webhook`]: signed outbound events (rooms, participants, tracks, chat, alerts) with retries; never blocks.
//! - [`web_demo`]: the web demo embedded in the binary at build time, served from memory at `/`.

pub mod admin;
pub mod admission;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod hook;
pub mod jobs;
pub mod lifecycle;
pub mod limits;
pub mod ops;
pub mod outbound;
pub mod room;
pub mod room_store;
pub mod session;
pub mod tls;
pub mod turn;
pub mod web_demo;
pub mod webhook;
pub mod whip;

use std::sync::Arc;

use sfu::{Sfu, SfuConfig};
use tokio::sync::watch;

use crate::auth::Keys;
use crate::config::{ChatStoreKind, Config};
use crate::room::Rooms;
use courier_chat::hub::Hub;
use courier_chat::postgres::{PostgresConfig, PostgresStore};
use courier_chat::sqlite::{SqliteConfig, SqliteStore};
use courier_chat::store::ChatStore;
use courier_chat::Limits;

/// Chat's shared parts: the durable store, the fan-out hub listening to it, room quotas and aggregated counts.
pub struct ChatService {
    pub store: Arc<dyn ChatStore>,
    /// The chat fan-out; frames are the WebSocket's shared text, so a member's copy is a reference count.
    pub hub: Arc<Hub<axum::extract::ws::Utf8Bytes>>,
    pub limits: Limits,
    /// The admission gate: per-identity rates, room quotas, mutes, keyword lists and aggregated counts, as one
    /// sans-I/O state behind one lock.
    pub gate: std::sync::Mutex<courier_chat::gate::Gate>,
    pub hook: Option<crate::hook::PreSendHook>,
    /// The cluster's chat bus, when in a cluster: ephemeral frames go to the other nodes too.
    pub cluster: Option<Arc<cluster::Cluster>>,
}

/// The word filter from the configured lists plus the words file (if it reads).
pub fn word_filter(config: &crate::config::ChatConfig) -> courier_chat::moderation::WordFilter {
    let mut blocked = config.blocked_words.clone();
    let mut replaced = config.replaced_words.clone();
    if let Some(path) = &config.words_file {
        match courier_chat::moderation::WordLists::load(path) {
            Ok(lists) => {
                blocked.extend(lists.blocked);
                replaced.extend(lists.replaced);
            }
            Err(e) => tracing::warn!(error = %e, "words file not reloaded; keeping the configured lists"),
        }
    }
    courier_chat::moderation::WordFilter::new(&blocked, &replaced)
}

/// What the chat gate is told from the configuration.
fn gate_config(config: &Config, limits: courier_chat::Limits) -> courier_chat::gate::GateConfig {
    let chat = &config.chat;
    courier_chat::gate::GateConfig {
        rate_per_sec: chat.rate_per_sec,
        quota: chat.quota,
        low_priority_kinds: chat.low_priority_kinds.clone(),
        high_priority_kinds: chat.high_priority_kinds.clone(),
        high_priority_identities: chat.high_priority_identities.clone(),
        aggregate_kinds: chat.aggregate_kinds.clone(),
        limits,
    }
}

/// How often aggregated counts (likes) are sent.
pub const AGGREGATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl ChatService {
    /// An ephemeral frame (typing, receipts, aggregates, mutes) for every session that sees `conversation` but
    /// `except`, on this node and, in a cluster, on the others.
    pub fn send(
        &self,
        conversation: &courier_chat::ConversationId,
        except: Option<courier_chat::hub::MemberId>,
        class: courier_chat::outbound::Class,
        frame: axum::extract::ws::Utf8Bytes,
    ) {
        if let Some(c) = &self.cluster {
            c.publish_frame(conversation, class == courier_chat::outbound::Class::Droppable, frame.as_str());
        }
        self.hub.send(conversation, except, class, frame);
    }

    /// A frame for every session of `identity`, on every node.
    pub fn send_to_identity(
        &self,
        identity: &str,
        class: courier_chat::outbound::Class,
        frame: axum::extract::ws::Utf8Bytes,
    ) {
        if let Some(c) = &self.cluster {
            c.publish_to_identity(identity, frame.as_str());
        }
        self.hub.send_to_identity(identity, class, frame);
    }

    /// Send the counts gathered since the last call.
    pub fn flush_aggregates(&self) {
        let counts = match self.gate.lock() {
            Ok(mut g) => g.take_counts(),
            Err(_) => return,
        };
        for (conversation, kind, count) in counts {
            let frame = courier_protocol::ServerMsg::ChatAggregate {
                conversation: conversation.to_string(),
                kind,
                count,
                window_ms: AGGREGATE_INTERVAL.as_millis() as u64,
            };
            self.send(&conversation, None, courier_chat::outbound::Class::Droppable, frame.to_json().into());
        }
    }
}

/// What every request and session shares.
pub struct AppState {
    pub config: Config,
    pub keys: Keys,
    pub sfu: Sfu,
    pub rooms: Rooms,
    /// The kept definitions of API-created rooms.
    pub room_store: Arc<room_store::RoomStore>,
    pub chat: ChatService,
    /// Outbound events; `emit` never waits.
    pub webhooks: webhook::Webhooks,
    /// Flips to `true` when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Set when the server starts draining: no new joins, `/readyz` answers 503.
    pub draining: std::sync::atomic::AtomicBool,
    /// Join and API rate limits.
    pub limiters: crate::limits::Limiters,
    /// What the limits refused, for `/metrics`.
    pub refusals: crate::limits::Refusals,
    /// The background jobs ([`jobs::start`]); stopped at shutdown.
    pub jobs: jobs::Jobs,
    /// The joined sessions, so shutdown can wait for them to leave.
    pub sessions: jobs::Jobs,
    /// The certificate HTTPS presents (`None`: plain HTTP).
    pub tls: Option<Arc<tls::CertFiles>>,
    /// TURN: the credentials participants get, and the built-in server when it runs.
    pub turn: turn::Turn,
    /// The live WHIP and WHEP resources.
    pub whip: whip::Resources,
    /// This node's membership of a cluster (`[cluster]`); `None`: a node on its own.
    pub cluster: Option<Arc<cluster::Cluster>>,
}

impl AppState {
    /// Apply the kept chat mutes (of `room`, or of every room) in the gate: at start on one node, and in a cluster
    /// when a room comes to this node. A store that cannot be read leaves the mutes out, with a warning.
    pub async fn load_mutes(&self, room: Option<&str>) {
        let now_ms = crate::room::now_ms();
        let mutes = match self.room_store.mutes(room, now_ms).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(room, error = %e, "chat mutes not loaded");
                return;
            }
        };
        if mutes.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        if let Ok(mut g) = self.chat.gate.lock() {
            for m in &mutes {
                let until = m.until_ms.map(|u| now + std::time::Duration::from_millis(u.saturating_sub(now_ms)));
                g.set_muted(&m.room, &m.identity, true, until);
            }
        }
        tracing::debug!(room, mutes = mutes.len(), "chat mutes loaded");
    }
}

/// Serve `app` on `listener` until `stop`, with each request knowing its client's address.
async fn serve_http<L>(
    listener: L,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    L::Io: Unpin,
{
    // `tap_io` gives any listener whose address is a `SocketAddr` axum's `ConnectInfo<SocketAddr>`.
    let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(stop)
        .await
}

/// A running server: its addresses and the means to stop it.
pub struct Server {
    pub http_addr: std::net::SocketAddr,
    pub udp_addr: std::net::SocketAddr,
    pub state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
    /// Stops the HTTP listener (after the drain).
    stop_http_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    store: StoreHandle,
}

/// The concrete store, to close it on shutdown.
pub enum StoreHandle {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl StoreHandle {
    /// Finish what is queued and stop.
    pub async fn close(self) {
        match self {
            StoreHandle::Sqlite(s) => s.close().await,
            StoreHandle::Postgres(s) => s.close().await,
        }
    }
}

/// Open the chat store the configuration names (SQLite in the data directory, or PostgreSQL).
/// Open the store of API-created room definitions: the data directory's on one node, the shared PostgreSQL in a
/// cluster ([`room_store`]).
pub async fn open_room_store(config: &Config) -> anyhow::Result<room_store::RoomStore> {
    use anyhow::Context;
    match (&config.cluster, &config.chat.store) {
        (Some(_), ChatStoreKind::Postgres { url }) => {
            let pg = PostgresConfig { tls_roots: Some(config.outbound_roots.clone()), ..PostgresConfig::default() };
            room_store::RoomStore::open_shared(url, pg).await.context("opening the shared room definitions")
        }
        _ => {
            let path = room_store::RoomStore::path_in(&config.data_dir);
            room_store::RoomStore::open_local(path.clone())
                .await
                .with_context(|| format!("opening the room store {}", path.display()))
        }
    }
}

pub async fn open_chat_store(config: &Config) -> anyhow::Result<(Arc<dyn ChatStore>, StoreHandle)> {
    use anyhow::Context;
    let limits = Limits { max_payload_bytes: config.chat.max_payload_bytes };
    Ok(match &config.chat.store {
        ChatStoreKind::Sqlite => {
            let path = SqliteStore::path_in(&config.data_dir);
            let store = SqliteStore::open(&path, SqliteConfig { limits, ..SqliteConfig::default() })
                .await
                .with_context(|| format!("opening the chat store {}", path.display()))?;
            let store = Arc::new(store);
            (store.clone(), StoreHandle::Sqlite(store))
        }
        ChatStoreKind::Postgres { url } => {
            let tls_roots = Some(config.outbound_roots.clone());
            let store = PostgresStore::connect(url, PostgresConfig { limits, tls_roots, ..PostgresConfig::default() })
                .await
                .context("connecting to the PostgreSQL chat store")?;
            let store = Arc::new(store);
            (store.clone(), StoreHandle::Postgres(store))
        }
    })
}

impl Server {
    /// Bind the HTTP listener and the UDP socket and start serving.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        use anyhow::Context;
        let sfu = Sfu::start(SfuConfig {
            udp_addr: config.udp_addr,
            tcp_addr: config.ice_tcp_addr,
            public_ip: config.public_ip,
            workers: config.workers,
            bwe_initial_kbps: config.bwe_initial_kbps,
            udp_gso: config.udp_gso,
            ..SfuConfig::default()
        })
        .await
        .context("starting the media engine")?;
        let limits = Limits { max_payload_bytes: config.chat.max_payload_bytes };
        let (store, handle) = open_chat_store(&config).await?;
        let hub = Arc::new(Hub::new(config.chat.queue_capacity));
        let gate = std::sync::Mutex::new(courier_chat::gate::Gate::new(
            gate_config(&config, limits),
            word_filter(&config.chat),
        ));
        // One outbound client (and connection pool) for the pre-send hook and every webhook endpoint.
        let outbound = outbound::client(&config.outbound_roots);
        let hook = match &config.chat.hook {
            Some((url, timeout, fail_open)) => Some(
                crate::hook::PreSendHook::new(url, *timeout, *fail_open, outbound.clone())
                    .map_err(|e| anyhow::anyhow!(e))?,
            ),
            None => None,
        };
        let webhooks = webhook::Webhooks::start(&config.webhooks, store.clone(), &outbound)?;
        // The hub fans messages out first; then the cluster's bus publishes them to the other nodes; then the
        // webhooks queue message_sent / message_recalled (once in a cluster: only the committing node hears it).
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP {}", config.http_addr))?;
        let http_addr = listener.local_addr()?;
        let cluster = match &config.cluster {
            Some(c) => {
                let c = c.clone().bound(http_addr, config.tls.is_some());
                let wait = std::time::Duration::from_secs(10);
                Some(cluster::Cluster::connect(c, hub.clone(), store.clone(), outbound.clone(), wait).await?)
            }
            None => None,
        };
        let mut listeners: Vec<Arc<dyn courier_chat::store::CommitListener>> = vec![hub.clone()];
        if let Some(c) = &cluster {
            listeners.push(c.clone());
        }
        if webhooks.enabled() {
            listeners.push(Arc::new(webhooks.clone()));
        }
        if listeners.len() == 1 {
            store.set_listener(hub.clone());
        } else {
            store.set_listener(Arc::new(listeners));
        }
        let tls = match &config.tls {
            Some(t) => Some(tls::CertFiles::load(&t.cert_file, &t.key_file).context("loading the TLS certificate")?),
            None => None,
        };
        let turn = turn::Turn::start(&config.turn, sfu.local_addr(), config.public_ip, tls.clone()).await?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (stop_http_tx, mut stop_http_rx) = watch::channel(false);
        let limiters = crate::limits::Limiters::new(&config.limits, std::time::Instant::now());
        let room_store = open_room_store(&config).await?;
        // One node restores every kept room now; a cluster node restores a room when it is placed here.
        let kept = if room_store.shared() { Vec::new() } else { room_store.load().await? };
        let state = Arc::new(AppState {
            keys: Keys(config.keys.clone()),
            sfu: sfu.clone(),
            rooms: Rooms::new(config.rooms.auto_create, webhooks.clone()),
            room_store: Arc::new(room_store),
            chat: ChatService { store, hub, limits, gate, hook, cluster: cluster.clone() },
            webhooks,
            shutdown: shutdown_rx.clone(),
            draining: Default::default(),
            limiters,
            refusals: Default::default(),
            jobs: jobs::Jobs::new(),
            sessions: jobs::Jobs::new(),
            tls,
            turn,
            whip: Default::default(),
            cluster,
            config,
        });
        let now = crate::room::now_ms();
        if !kept.is_empty() {
            tracing::info!(rooms = kept.len(), "restoring the rooms the admin API created");
        }
        for r in &kept {
            state.rooms.restore(r.clone(), now);
        }
        if !state.room_store.shared() {
            state.load_mutes(None).await;
        }
        let app = api::app(state.clone());
        jobs::start(&state);
        if let Some(c) = &state.cluster {
            c.start_tasks(&state);
            let c = c.clone();
            state.rooms.on_membership(Box::new(move |identity: &str| c.presence_changed(identity)));
        }
        let stop_http = async move {
            let _ = stop_http_rx.wait_for(|v| *v).await;
        };
        let task = match &state.tls {
            Some(files) => {
                let listener = tls::TlsListener::new(listener, files.server_config());
                tokio::spawn(serve_http(listener, app, stop_http))
            }
            None => {
                // Small frames (acks, chat messages, signaling) go out at once: without TCP_NODELAY a reply waits
                // for the peer's delayed ACK of the previous one (40 ms on Linux).
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                });
                tokio::spawn(serve_http(listener, app, stop_http))
            }
        };
        Ok(Server { http_addr, udp_addr: sfu.local_addr(), state, shutdown_tx, stop_http_tx, task, store: handle })
    }

    /// Start draining: new joins are refused with `server_draining`, `/readyz` answers 503, and every session is
    /// told to leave (`leave` with `server_shutdown`, then close `1001`). HTTP keeps serving (health, metrics, the
    /// API) until [`Server::shutdown`]. Calling it again changes nothing.
    pub fn drain(&self) {
        if !self.state.draining.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::info!(participants = self.state.rooms.counts().1, "draining");
            if let Some(c) = self.state.cluster.clone() {
                // Shutdown has left already; a drain on its own leaves now (new joins go to other nodes).
                tokio::spawn(async move { c.leave().await });
            }
        }
        let _ = self.shutdown_tx.send(true);
    }

    /// Drain, wait at most `grace` for the sessions to end, then stop HTTP, the engine and the store.
    pub async fn shutdown(self, grace: std::time::Duration) {
        // In a cluster, leave the registry (and give up this node's rooms) before telling anyone to go, so their
        // reconnects are placed on other nodes.
        if let Some(c) = &self.state.cluster {
            c.leave().await;
        }
        self.drain();
        let deadline = tokio::time::Instant::now() + grace;
        let left = |d: tokio::time::Instant| d.saturating_duration_since(tokio::time::Instant::now());
        if !self.state.sessions.wait(grace).await {
            let left = self.state.sessions.len();
            tracing::warn!(sessions = left, "drain timeout; closing the remaining sessions");
        }
        // The lifecycle tick may be writing the room store; its run ends before the final write below.
        if !self.state.jobs.stop(left(deadline).max(std::time::Duration::from_secs(1))).await {
            tracing::warn!(jobs = self.state.jobs.len(), "background jobs still running at shutdown");
        }
        let _ = self.stop_http_tx.send(true);
        self.state.turn.shutdown().await;
        self.state.sfu.shutdown().await;
        // The kept rooms as they are now (the lifecycle job wrote once a second; this writes the rest).
        if let Err(e) = self.state.room_store.sync(|| self.state.rooms.definitions()).await {
            tracing::warn!(error = %e, "room store not synced at shutdown");
        }
        // Events of the last leaves (room_finished…) get the rest of the grace to be delivered.
        self.state.webhooks.drain(left(deadline)).await;
        let _ = tokio::time::timeout(grace, self.task).await;
        self.store.close().await;
    }
}
