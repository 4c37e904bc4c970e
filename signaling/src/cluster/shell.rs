//! The cluster's async side: the Redis connections and the node's background tasks (heartbeat, publisher,
//! subscriber, head check). The decisions are [`super::placement`] and [`super::bus`]; this moves bytes.
//!
//! Two connections to Redis: a multiplexed command connection ([`ConnectionManager`], reconnects by itself) for the
//! heartbeat, placement, presence and publishing, and a pub/sub connection owned by the subscriber task. Every
//! command has a timeout ([`REDIS_TIMEOUT`]); a failure marks Redis unreachable until the next heartbeat succeeds.
//! Nothing here waits on Redis while holding a lock, and nothing on a session's path waits longer than the timeout.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use courier_chat::hub::Hub;
use courier_chat::outbound::Class;
use courier_chat::store::{ChatStore, CommitListener, Replay, StoredMessage};
use courier_chat::ConversationId;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::bus::{self, BusMsg, Catchup, Subscriptions, Unpublished, WireMessage};
use super::placement::{self, Placement};
use super::registry::{self, NodeInfo, NodeLoad, PresenceEntry, HEARTBEAT, NODE_TTL};
use super::ClusterConfig;
use crate::AppState;

/// The longest any single Redis command may take before it counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// Publications waiting for the publisher; beyond, committed messages become head notices and frames are dropped.
const PUBLISH_QUEUE: usize = 16_384;
/// Most publications sent in one pipeline.
const PUBLISH_BATCH: usize = 256;
/// How many heartbeats a head notice is published on after an outage.
const NOTICE_REPEATS: u32 = 5;
/// A room this node placed but does not have (yet) keeps its placement this long before it is released.
const PLACEMENT_GRACE: Duration = Duration::from_secs(10);
/// How often a node looks for defined rooms whose node is gone (and adopts them).
const ADOPT_PERIOD: Duration = Duration::from_secs(2);
/// How long adoption holds off after this node starts, or sees Redis back or emptied: long enough for every live
/// node's next heartbeat, which writes its rooms again ([`HEARTBEAT`] plus the time a busy node may lag behind).
const ADOPT_HOLD: Duration = Duration::from_secs(3);

/// Record `ARGV[1]` as the room's node unless a live node (one with a heartbeat key) holds it; answer the holder.
const PLACE_SCRIPT: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[2] .. owner) == 1 then return owner end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";
/// Delete the room's placement if it is still ours.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";
/// Remove a gone node's presence entries (its identity set names them), then the set.
const FORGET_NODE_SCRIPT: &str = r"
local ids = redis.call('SMEMBERS', KEYS[1])
for _, i in ipairs(ids) do redis.call('HDEL', ARGV[2] .. i, ARGV[1]) end
redis.call('DEL', KEYS[1])
return #ids
";

/// The set of identities a node wrote presence for.
fn node_identities_key(node: &str) -> String {
    format!("{}node-identities:{node}", registry::PREFIX)
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub published: AtomicU64,
    pub publish_failures: AtomicU64,
    pub received: AtomicU64,
    pub delivered_remote: AtomicU64,
    pub head_fills: AtomicU64,
    pub redirects: AtomicU64,
    pub unavailable: AtomicU64,
    pub redis_errors: AtomicU64,
    pub subscription_breaks: AtomicU64,
    /// Defined rooms restored here because their node was gone.
    pub adopted: AtomicU64,
}

struct Outgoing {
    channel: String,
    payload: String,
    /// A committed message (conversation, number): if it cannot be published, a head notice follows later.
    committed: Option<(ConversationId, u64)>,
}

enum SubCmd {
    Follow { channels: Vec<String>, done: oneshot::Sender<()> },
    Unfollow { channels: Vec<String> },
}

/// One node's membership of the cluster. See the module doc.
pub struct Cluster {
    pub config: ClusterConfig,
    client: redis::Client,
    conn: ConnectionManager,
    started_ms: u64,
    nodes: Mutex<Vec<NodeInfo>>,
    reachable: AtomicBool,
    leaving: AtomicBool,
    /// Rooms this node recorded as its own in Redis, and since when.
    placed: Mutex<HashMap<String, Instant>>,
    /// Identities whose presence changed since the last heartbeat wrote it.
    presence_dirty: Mutex<HashSet<String>>,
    /// Redis lost what this node wrote (it restarted empty): write everything again.
    rewrite_all: AtomicBool,
    /// Adoption waits until then: after Redis comes back (or comes back empty) every live node must have written its
    /// rooms again before a room nobody seems to hold can be told from one whose node has not rewritten it yet.
    adopt_after: Mutex<Instant>,
    catchup: Mutex<Catchup>,
    unpublished: Mutex<Unpublished>,
    publish_tx: mpsc::Sender<Outgoing>,
    publish_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    sub_tx: mpsc::UnboundedSender<SubCmd>,
    sub_rx: Mutex<Option<mpsc::UnboundedReceiver<SubCmd>>>,
    hub: Arc<Hub<Utf8Bytes>>,
    store: Arc<dyn ChatStore>,
    /// For admin requests forwarded to other nodes.
    http: crate::outbound::HttpClient,
    pub stats: ClusterStats,
    /// The rooms-that-span-nodes task's queue (set when the tasks start).
    span: std::sync::OnceLock<mpsc::UnboundedSender<super::span::SpanIn>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.config.node_id).finish_non_exhaustive()
    }
}

pub(super) fn now_ms() -> u64 {
    crate::room::now_ms()
}

async fn timed<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())),
    }
}

impl Cluster {
    /// Connect to Redis (waiting at most `connect_for` for it to answer: a node does not start without its
    /// cluster). Tasks start with [`Cluster::start_tasks`], once the server state exists.
    pub async fn connect(
        config: ClusterConfig,
        hub: Arc<Hub<Utf8Bytes>>,
        store: Arc<dyn ChatStore>,
        http: crate::outbound::HttpClient,
        connect_for: Duration,
    ) -> anyhow::Result<Arc<Cluster>> {
        use anyhow::Context;
        let client = redis::Client::open(config.redis_url.as_str()).context("the cluster's redis_url")?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let deadline = Instant::now() + connect_for;
        let conn = loop {
            match ConnectionManager::new_with_config(client.clone(), manager_config.clone()).await {
                Ok(c) => break c,
                Err(e) if Instant::now() >= deadline => {
                    anyhow::bail!("cannot reach Redis for the cluster ({e}); is redis_url right and Redis up?")
                }
                Err(e) => {
                    debug!(error = %e, "Redis not answering yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        info!(node = %config.node_id, region = %config.region, url = %config.advertise_url, "joining the cluster");
        Ok(Arc::new(Cluster {
            config,
            client,
            conn,
            started_ms: now_ms(),
            nodes: Mutex::new(Vec::new()),
            reachable: AtomicBool::new(true),
            leaving: AtomicBool::new(false),
            placed: Mutex::new(HashMap::new()),
            presence_dirty: Mutex::new(HashSet::new()),
            rewrite_all: AtomicBool::new(false),
            adopt_after: Mutex::new(Instant::now() + ADOPT_HOLD),
            catchup: Mutex::new(Catchup::default()),
            unpublished: Mutex::new(Unpublished::default()),
            publish_tx,
            publish_rx: Mutex::new(Some(publish_rx)),
            sub_tx,
            sub_rx: Mutex::new(Some(sub_rx)),
            hub,
            store,
            http,
            stats: ClusterStats::default(),
            span: std::sync::OnceLock::new(),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// Did the last Redis command succeed?
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Hold adoption off for [`ADOPT_HOLD`] from now (Redis was unreachable or lost its keys).
    fn hold_adoption(&self) {
        if let Ok(mut at) = self.adopt_after.lock() {
            *at = (*at).max(Instant::now() + ADOPT_HOLD);
        }
    }

    /// A Redis command succeeded: reachable again, if it was not (and adoption waits for the others to rewrite).
    fn reached(&self) {
        if !self.reachable.swap(true, Ordering::Relaxed) {
            info!("Redis reachable again");
            self.hold_adoption();
        }
    }

    fn failed(&self, doing: &str, e: &str) {
        self.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
        if self.reachable.swap(false, Ordering::Relaxed) {
            warn!(error = %e, doing, "Redis unreachable; serving the rooms this node hosts, refusing what needs the cluster");
        }
    }

    /// Start the heartbeat, publisher, subscriber and head-check tasks (on the server's jobs, so shutdown stops them).
    pub fn start_tasks(self: &Arc<Self>, state: &Arc<AppState>) {
        let weak = Arc::downgrade(state);
        let me = self.clone();
        let jobs = &state.jobs;
        tokio::spawn(jobs.track(heartbeat_task(me.clone(), weak.clone())));
        if let Some(rx) = self.publish_rx.lock().ok().and_then(|mut r| r.take()) {
            tokio::spawn(jobs.track(publisher_task(me.clone(), rx, state.shutdown.clone())));
        }
        if let Some(rx) = self.sub_rx.lock().ok().and_then(|mut r| r.take()) {
            tokio::spawn(jobs.track(subscriber_task(me.clone(), rx, state.shutdown.clone())));
        }
        tokio::spawn(jobs.track(head_check_task(me.clone(), state.shutdown.clone())));
        // Rooms that span nodes: the registry's changes and this node's channel feed one task.
        let (span_tx, span_rx) = mpsc::unbounded_channel();
        let _ = self.span.set(span_tx.clone());
        let observer = span_tx.clone();
        state.rooms.on_change(Box::new(move |room, change| {
            let _ = observer.send(super::span::SpanIn::Local { room: room.to_string(), change });
        }));
        let (done, _) = oneshot::channel();
        let _ =
            self.sub_tx.send(SubCmd::Follow { channels: vec![super::span::node_channel(&self.config.node_id)], done });
        let span = super::span::run(self.clone(), weak.clone(), span_tx, span_rx, state.shutdown.clone());
        tokio::spawn(jobs.track(span));
        if state.room_store.shared() {
            tokio::spawn(jobs.track(adoption_task(me, weak, state.shutdown.clone())));
        }
    }

    /// The live nodes as of the last heartbeat (this one included once it has written one).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn node_url(&self, id: &str) -> Option<String> {
        self.nodes.lock().ok()?.iter().find(|n| n.id == id).map(|n| n.url.clone())
    }

    /// Where a join of `room` goes. `hosted`: the room exists on this node now (its members keep it here even when
    /// Redis cannot be asked).
    pub async fn place(&self, room: &str, hosted: bool) -> Placement {
        let me = self.config.node_id.as_str();
        let candidate = if hosted {
            me.to_string()
        } else {
            // Chosen and counted under one lock: the room counts on its node until the next heartbeat brings real
            // numbers, so a burst of new rooms within one heartbeat spreads instead of all going where the load
            // looked lowest a second ago.
            let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let chosen = placement::choose(&nodes, me, &self.config.region).map(|n| n.id.clone());
            if let Some(n) = chosen.as_ref().and_then(|id| nodes.iter_mut().find(|n| n.id == *id)) {
                n.load.participants += placement::NEW_ROOM_WEIGHT;
            }
            chosen.unwrap_or_else(|| me.to_string())
        };
        self.place_on(room, candidate, hosted).await
    }

    /// Where a join of `room` goes ([`Cluster::place`]); placed here but not in memory, a room the admin API defined
    /// (on a node that is gone) is restored from the shared definitions first. When they cannot be read the join is
    /// refused for now: joining without its definition would open a plain room in place of a scheduled one.
    pub async fn place_join(&self, state: &AppState, room: &str) -> Placement {
        let placement = self.place(room, state.rooms.exists(room)).await;
        let me = self.config.node_id.as_str();
        match &placement {
            // The room lives elsewhere: served here instead when this node serves a part of it already, or when
            // the room's node is full or not of this node's region (the room spans nodes).
            Placement::There { node: home, .. } => {
                let home = home.clone();
                let nodes = self.nodes_now(state);
                if state.rooms.is_part(room) {
                    return self.unless_full(state, room, &home, &nodes).await.unwrap_or(Placement::Here);
                }
                if !nodes.iter().any(|n| n.id == home) {
                    // Not in this node's view yet (it joined since the last heartbeat): nothing to compare.
                    return placement;
                }
                let full = self.config.full_participants;
                let chosen = placement::serve(&nodes, &home, &[], &self.config.region, full).map(|n| n.id.clone());
                let fits = nodes.iter().any(|n| n.id == me && n.load.participants < full);
                // The room's node sent this join here because it is full, which this node's view may not show yet.
                let spilled = fits && chosen.as_deref() == Some(home.as_str()) && self.spilled_here(room).await;
                match chosen {
                    // Chosen, or another node than the room's is (and this one has room): served here, which
                    // saves the client a hop; views of the load a heartbeat old would otherwise send it around.
                    Some(id) if id == me || (id != home && fits) || spilled => {
                        if state.rooms.open_part(room) {
                            debug!(room, home = %home, "serving a part of a room that lives on another node");
                            return Placement::Here;
                        }
                    }
                    Some(id) if id != home => {
                        if let Some(url) = nodes.iter().find(|n| n.id == id).map(|n| n.url.clone()) {
                            return Placement::There { node: id, url };
                        }
                    }
                    _ => {}
                }
                return placement;
            }
            // Its node is gone and this node holds it now: the part it served becomes the room.
            Placement::Here if state.rooms.is_part(room) => state.rooms.make_home(room),
            // The room lives here and this node is full: the join goes to another node, the room spanning nodes.
            Placement::Here if state.rooms.exists(room) => {
                let nodes = self.nodes_now(state);
                if let Some(there) = self.unless_full(state, room, me, &nodes).await {
                    return there;
                }
            }
            _ => {}
        }
        if matches!(placement, Placement::Here) && !state.rooms.exists(room) && state.room_store.shared() {
            if let Err(e) = restore_here(state, room).await {
                warn!(room, error = %e, "the room's definition could not be read; join refused for now");
                self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                return Placement::Unavailable;
            }
            // Defined or not (a room made by its first join keeps its mutes too).
            state.load_mutes(Some(room)).await;
        }
        placement
    }

    /// The live nodes as of the last heartbeat, with this node's participants as they are now (its own heartbeat
    /// may be a second old, and whether it is full must not lag behind the joins it takes).
    fn nodes_now(&self, state: &AppState) -> Vec<NodeInfo> {
        let mut nodes = self.nodes();
        if let Some(n) = nodes.iter_mut().find(|n| n.id == self.config.node_id) {
            n.load.participants = state.rooms.counts().1;
        }
        nodes
    }

    /// When this node is full: where a join of `room` (living on `home`) goes instead, if another node has room
    /// ([`placement::serve`], preferring the nodes that serve the room already). `None`: served here.
    async fn unless_full(&self, state: &AppState, room: &str, home: &str, nodes: &[NodeInfo]) -> Option<Placement> {
        let me = self.config.node_id.as_str();
        let full = self.config.full_participants;
        if !nodes.iter().any(|n| n.id == me && n.load.participants >= full) {
            return None;
        }
        let serving = state.rooms.remote_nodes(room);
        let chosen = placement::serve(nodes, home, &serving, &self.config.region, full)?;
        if chosen.id == me {
            return None;
        }
        debug!(room, to = %chosen.id, "this node is full: the join goes to another node of the room");
        self.stats.redirects.fetch_add(1, Ordering::Relaxed);
        if home == me {
            // Best effort: without it the other node sends the join back until it sees this one full.
            let mut conn = self.conn.clone();
            let ttl = registry::SPILL_TTL.as_millis() as u64;
            let set = redis::cmd("SET").arg(registry::spill_key(room)).arg(&chosen.id).arg("PX").arg(ttl).clone();
            if let Err(e) = timed(set.query_async::<()>(&mut conn)).await {
                self.failed("marking a room's joins as spilled", &e);
            }
        }
        Some(Placement::There { node: chosen.id.clone(), url: chosen.url.clone() })
    }

    /// The room's node, full, sent joins of `room` to this node within [`registry::SPILL_TTL`].
    async fn spilled_here(&self, room: &str) -> bool {
        if self.config.full_participants == usize::MAX {
            return false;
        }
        let mut conn = self.conn.clone();
        let to: Result<Option<String>, String> =
            timed(redis::cmd("GET").arg(registry::spill_key(room)).query_async(&mut conn)).await;
        to.ok().flatten().as_deref() == Some(self.config.node_id.as_str())
    }

    /// Place `room` on this node unless a live node holds it (the admin API creating a room here). Refused when
    /// Redis cannot be asked.
    pub async fn claim(&self, room: &str) -> Placement {
        self.place_on(room, self.config.node_id.clone(), false).await
    }

    async fn place_on(&self, room: &str, candidate: String, hosted: bool) -> Placement {
        if self.leaving.load(Ordering::Relaxed) {
            return Placement::Unavailable;
        }
        let me = self.config.node_id.as_str();
        let mut conn = self.conn.clone();
        let script = redis::Script::new(PLACE_SCRIPT);
        let mut invocation = script.key(registry::room_key(room));
        invocation.arg(&candidate).arg(registry::node_key(""));
        let owner: Result<String, String> = timed(invocation.invoke_async(&mut conn)).await;
        match owner {
            Ok(owner) if owner == me => {
                self.reached();
                if let Ok(mut p) = self.placed.lock() {
                    p.insert(room.to_string(), Instant::now());
                }
                Placement::Here
            }
            Ok(owner) => {
                self.reached();
                match self.url_of(&owner).await {
                    Some(url) => {
                        self.stats.redirects.fetch_add(1, Ordering::Relaxed);
                        Placement::There { node: owner, url }
                    }
                    None => {
                        self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                        Placement::Unavailable
                    }
                }
            }
            Err(e) => {
                self.failed("placing a room", &e);
                if hosted {
                    Placement::Here
                } else {
                    self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    Placement::Unavailable
                }
            }
        }
    }

    /// The HTTP client for requests to other nodes.
    pub fn http(&self) -> &crate::outbound::HttpClient {
        &self.http
    }

    /// The live node `room` lives on, as (id, WebSocket URL); `None` when it is not placed or its node is gone.
    pub async fn owner(&self, room: &str) -> Result<Option<(String, String)>, String> {
        let mut conn = self.conn.clone();
        let owner: Option<String> =
            timed(redis::cmd("GET").arg(registry::room_key(room)).query_async(&mut conn)).await.inspect_err(|e| {
                self.failed("reading a room's node", e);
            })?;
        let Some(owner) = owner else { return Ok(None) };
        Ok(self.url_of(&owner).await.map(|u| (owner, u)))
    }

    /// A node's WebSocket URL: from the last heartbeat's list, else from its registry key (a node that joined since).
    async fn url_of(&self, id: &str) -> Option<String> {
        match self.node_url(id) {
            Some(u) => Some(u),
            None => self.read_node(id).await.map(|n| n.url),
        }
    }

    async fn read_node(&self, id: &str) -> Option<NodeInfo> {
        let mut conn = self.conn.clone();
        let json: Option<String> =
            timed(redis::cmd("GET").arg(registry::node_key(id)).query_async(&mut conn)).await.ok()?;
        serde_json::from_str(&json?).ok()
    }

    /// The sessions of `identity` on every live node.
    pub async fn presence(&self, identity: &str) -> Result<Vec<PresenceEntry>, String> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> =
            timed(redis::cmd("HGETALL").arg(registry::presence_key(identity)).query_async(&mut conn)).await?;
        let live: HashSet<String> = self.nodes().into_iter().map(|n| n.id).collect();
        let mut out = Vec::new();
        for (node, json) in all {
            if !live.contains(&node) {
                continue;
            }
            if let Ok(entries) = serde_json::from_str::<Vec<PresenceEntry>>(&json) {
                out.extend(entries);
            }
        }
        out.sort_by(|a, b| (a.since_ms, &a.participant_id).cmp(&(b.since_ms, &b.participant_id)));
        Ok(out)
    }

    /// An identity's membership changed on this node: its presence is written by the next heartbeat (at most one
    /// second later), as one value per node computed from the room registry, so a lost write is repaired by the next.
    pub fn presence_changed(&self, identity: &str) {
        if let Ok(mut d) = self.presence_dirty.lock() {
            d.insert(identity.to_string());
        }
    }

    /// A chat session of `identity` in `room` starts: make sure this node hears the room's and the identity's
    /// channels before the session reads its replay. Waits at most [`REDIS_TIMEOUT`]; when Redis is unreachable the
    /// subscription is made when it is back (and the head check fills what passed meanwhile).
    pub async fn follow(&self, identity: &str, room: &str) {
        let (done, wait) = oneshot::channel();
        let channels = vec![bus::room_channel(room), bus::identity_channel(identity)];
        if self.sub_tx.send(SubCmd::Follow { channels, done }).is_ok() {
            let _ = tokio::time::timeout(REDIS_TIMEOUT, wait).await;
        }
    }

    /// The chat session of [`Cluster::follow`] ended.
    pub fn unfollow(&self, identity: &str, room: &str) {
        let channels = vec![bus::room_channel(room), bus::identity_channel(identity)];
        let _ = self.sub_tx.send(SubCmd::Unfollow { channels });
    }

    /// A rooms-that-span-nodes message on `channel` ([`super::span`]).
    pub(super) fn publish_span(&self, channel: String, msg: super::span::SpanMsg) {
        let payload = BusMsg::Span { o: self.config.node_id.clone(), s: msg }.encode();
        self.enqueue(Outgoing { channel, payload, committed: None });
    }

    fn enqueue(&self, out: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(out) | mpsc::error::TrySendError::Closed(out)) =
            self.publish_tx.try_send(out)
        {
            self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
            if let Some((c, seq)) = out.committed {
                self.remember_unpublished(&c, seq);
            }
        }
    }

    fn remember_unpublished(&self, c: &ConversationId, seq: u64) {
        let kept = self.unpublished.lock().map(|mut u| u.add(c, seq)).unwrap_or(false);
        if !kept {
            warn!(conversation = %c, seq, "unpublished table full; other nodes' members get this at their head check or resume");
        }
    }

    /// An ephemeral frame for the members of `conversation` on other nodes.
    pub fn publish_frame(&self, conversation: &ConversationId, droppable: bool, frame: &str) {
        let msg = BusMsg::Frame {
            o: self.config.node_id.clone(),
            c: conversation.to_string(),
            drop: droppable,
            f: frame.into(),
        };
        let payload = msg.encode();
        for channel in bus::channels_of(conversation) {
            self.enqueue(Outgoing { channel, payload: payload.clone(), committed: None });
        }
    }

    /// A frame for the sessions of `identity` on other nodes.
    pub fn publish_to_identity(&self, identity: &str, frame: &str) {
        let msg = BusMsg::ToIdentity { o: self.config.node_id.clone(), i: identity.into(), f: frame.into() };
        self.enqueue(Outgoing { channel: bus::identity_channel(identity), payload: msg.encode(), committed: None });
    }

    /// Deliver messages read from the store (a head check or notice) into this node's hub.
    fn deliver_stored(&self, messages: &[StoredMessage]) {
        if messages.is_empty() {
            return;
        }
        self.stats.delivered_remote.fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.hub.deliver(messages);
    }

    async fn fill(&self, gap: bus::Gap) {
        match self.store.range(&gap.conversation, gap.after, gap.up_to).await {
            Ok(Replay::Messages { messages, .. }) => {
                self.stats.head_fills.fetch_add(1, Ordering::Relaxed);
                self.deliver_stored(&messages);
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, conversation = %gap.conversation, "head fill not read; the sessions' resume covers it")
            }
        }
    }

    /// A publication from another node.
    async fn on_publication(&self, payload: &[u8]) {
        let Some(msg) = BusMsg::decode(payload) else {
            debug!("an undecodable publication on the chat bus; dropped");
            return;
        };
        if msg.origin() == self.config.node_id {
            return;
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match msg {
            BusMsg::Message { m, .. } => {
                let Some(stored) = m.to_stored() else { return };
                let fresh = self
                    .catchup
                    .lock()
                    .map(|mut c| c.on_message(&stored.conversation, stored.seq, Instant::now()))
                    .unwrap_or(true);
                if fresh {
                    self.deliver_stored(std::slice::from_ref(&stored));
                }
            }
            BusMsg::Head { c, first, last, .. } => {
                let Ok(c) = ConversationId::parse(&c) else { return };
                let gap = self.catchup.lock().ok().and_then(|mut k| k.on_head(&c, first, last, Instant::now()));
                if let Some(gap) = gap {
                    self.fill(gap).await;
                }
            }
            BusMsg::Frame { c, drop, f, .. } => {
                let Ok(c) = ConversationId::parse(&c) else { return };
                let class = if drop { Class::Droppable } else { Class::Kept };
                self.hub.send(&c, None, class, Utf8Bytes::from(f));
            }
            BusMsg::ToIdentity { i, f, .. } => {
                self.hub.send_to_identity(&i, Class::Droppable, Utf8Bytes::from(f));
            }
            BusMsg::Span { o, s } => {
                if let Some(tx) = self.span.get() {
                    let _ = tx.send(super::span::SpanIn::Bus { from: o, msg: s });
                }
            }
        }
    }

    /// Leave the cluster first when draining: the heartbeat key and every placement go, so new joins are placed on
    /// other nodes at once while this node's members are told to leave.
    pub async fn leave(&self) {
        if self.leaving.swap(true, Ordering::SeqCst) {
            return;
        }
        let rooms: Vec<String> = self.placed.lock().map(|p| p.keys().cloned().collect()).unwrap_or_default();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(registry::node_key(&self.config.node_id)).ignore();
        pipe.cmd("ZREM").arg(registry::nodes_key()).arg(&self.config.node_id).ignore();
        for room in &rooms {
            pipe.cmd("EVAL")
                .arg(RELEASE_SCRIPT)
                .arg(1)
                .arg(registry::room_key(room))
                .arg(&self.config.node_id)
                .ignore();
        }
        match timed(pipe.query_async::<()>(&mut conn)).await {
            Ok(()) => info!(rooms = rooms.len(), "left the cluster (draining)"),
            Err(e) => warn!(error = %e, "could not leave the cluster cleanly; its heartbeat expires by itself"),
        }
    }
}

/// Every committed message goes to the other nodes after its commit (in commit order: the store calls listeners in
/// that order, and the publisher keeps it).
impl CommitListener for Cluster {
    fn committed(&self, messages: &[StoredMessage]) {
        let now = Instant::now();
        if let Ok(mut c) = self.catchup.lock() {
            for m in messages {
                c.on_message(&m.conversation, m.seq, now);
            }
        }
        for m in messages {
            let payload = BusMsg::Message { o: self.config.node_id.clone(), m: WireMessage::from(m) }.encode();
            for channel in bus::channels_of(&m.conversation) {
                self.enqueue(Outgoing {
                    channel,
                    payload: payload.clone(),
                    committed: Some((m.conversation.clone(), m.seq)),
                });
            }
        }
    }
}

/// CPU time of this process, seconds (from `/proc/self/stat`, clock ticks at the usual 100 Hz).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

struct LoadMeter {
    at: Instant,
    cpu: Option<f64>,
    cpu_avg: f64,
    bytes_out: u64,
}

impl LoadMeter {
    fn read(&mut self, state: &AppState) -> NodeLoad {
        let (rooms, participants, tracks) = state.rooms.counts();
        let now = Instant::now();
        let secs = now.saturating_duration_since(self.at).as_secs_f64().max(0.001);
        let cpu_now = cpu_seconds();
        let sample = match (self.cpu, cpu_now) {
            (Some(a), Some(b)) => ((b - a) / secs).max(0.0),
            _ => 0.0,
        };
        // Smoothed over a few heartbeats: one busy second (a start-up, a burst of joins) should not send every new
        // room elsewhere.
        let cpu = 0.7 * self.cpu_avg + 0.3 * sample;
        let bytes_out = state.sfu.stats().bytes_out;
        let send_bps = ((bytes_out.saturating_sub(self.bytes_out)) as f64 * 8.0 / secs) as u64;
        *self = LoadMeter { at: now, cpu: cpu_now, cpu_avg: cpu, bytes_out };
        NodeLoad { rooms, participants, tracks, cpu: (cpu * 100.0).round() / 100.0, send_bps }
    }
}

/// Restore `room`, placed on this node, from the shared definitions if one is kept and the room is not here yet.
/// `true` if it was restored.
async fn restore_here(state: &AppState, room: &str) -> Result<bool, crate::room_store::RoomStoreError> {
    let Some(kept) = state.room_store.get(room).await? else { return Ok(false) };
    if state.rooms.exists(room) {
        return Ok(false);
    }
    state.room_store.restored(&kept).await;
    state.rooms.restore(kept, now_ms());
    info!(room, "room restored from the shared definitions");
    Ok(true)
}

/// Every [`ADOPT_PERIOD`]: rooms the shared store defines that no live node hosts (their node died, or left) are
/// claimed (the placement script lets one node win) and restored here, so their lifecycle goes on: a scheduled room
/// opens and closes on time, once, with its webhooks, whichever node created it.
async fn adoption_task(cluster: Arc<Cluster>, state: Weak<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ADOPT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        let Some(state) = state.upgrade() else { return };
        let held = cluster.adopt_after.lock().map_or(true, |at| Instant::now() < *at);
        if cluster.leaving.load(Ordering::Relaxed) || !cluster.reachable() || held {
            continue;
        }
        adopt(&cluster, &state).await;
    }
}

async fn adopt(cluster: &Cluster, state: &AppState) {
    let names = match state.room_store.names().await {
        Ok(names) => names,
        Err(e) => {
            debug!(error = %e, "room definitions not readable; adoption waits");
            return;
        }
    };
    let mut missing = Vec::new();
    for name in names {
        // A room this node wrote and no longer has is being deleted by its lifecycle job: not an orphan.
        if !state.rooms.exists(&name) && !state.room_store.wrote(&name).await {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return;
    }
    // This node's own heartbeat key first: without it Redis restarted empty since the last heartbeat, and a room
    // without a node may only be one whose node has not written it again yet.
    let mut pipe = redis::pipe();
    pipe.cmd("EXISTS").arg(registry::node_key(&cluster.config.node_id));
    for room in &missing {
        pipe.cmd("GET").arg(registry::room_key(room));
    }
    let mut conn = cluster.conn.clone();
    let mut replies: Vec<redis::Value> = match timed(pipe.query_async(&mut conn)).await {
        Ok(replies) => replies,
        Err(e) => return cluster.failed("reading rooms' nodes", &e),
    };
    if replies.is_empty() || !matches!(replies.remove(0), redis::Value::Int(1)) {
        return cluster.hold_adoption();
    }
    let owners: Vec<Option<String>> = match replies.into_iter().map(redis::from_redis_value).collect() {
        Ok(owners) => owners,
        Err(e) => return warn!(error = %e, "rooms' nodes unreadable"),
    };
    let me = cluster.config.node_id.as_str();
    let live: HashSet<String> = cluster.nodes().into_iter().map(|n| n.id).collect();
    for (room, owner) in missing.iter().zip(owners) {
        let ours = match owner.as_deref() {
            // Placed here by another node's choice, and the join never came: ours to host all the same.
            Some(o) if o == me => true,
            Some(o) if live.contains(o) => false,
            _ => matches!(cluster.claim(room).await, Placement::Here),
        };
        if !ours {
            continue;
        }
        match restore_here(state, room).await {
            Ok(true) => {
                state.load_mutes(Some(room)).await;
                cluster.stats.adopted.fetch_add(1, Ordering::Relaxed);
                info!(room = %room, from = ?owner, "adopted a room whose node is gone");
            }
            Ok(false) => {}
            Err(e) => warn!(room = %room, error = %e, "an adopted room's definition could not be read"),
        }
    }
}

async fn heartbeat_task(cluster: Arc<Cluster>, state: Weak<AppState>) {
    let mut meter = LoadMeter { at: Instant::now(), cpu: cpu_seconds(), cpu_avg: 0.0, bytes_out: 0 };
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        if *state.shutdown.borrow() || cluster.leaving.load(Ordering::Relaxed) {
            return;
        }
        let load = meter.read(&state);
        match heartbeat(&cluster, &state, load, first).await {
            Ok(()) => {
                cluster.reached();
                first = false;
            }
            Err(e) => cluster.failed("writing the heartbeat", &e),
        }
    }
}

/// One heartbeat: write this node, list the others, forget gone ones, keep the placements and presence right.
async fn heartbeat(cluster: &Cluster, state: &AppState, load: NodeLoad, first: bool) -> Result<(), String> {
    let c = &cluster.config;
    let now = now_ms();
    let info = NodeInfo {
        id: c.node_id.clone(),
        url: c.advertise_url.clone(),
        region: c.region.clone(),
        udp: state.config.public_ip.map_or_else(
            || state.sfu.local_addr().to_string(),
            |ip| std::net::SocketAddr::new(ip, state.sfu.local_addr().port()).to_string(),
        ),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_ms: cluster.started_ms,
        heartbeat_ms: now,
        load,
    };
    let json = serde_json::to_string(&info).map_err(|e| e.to_string())?;
    let ttl = NODE_TTL.as_millis() as u64;
    let mut conn = cluster.conn.clone();
    let (previous, expired, ids): (Option<String>, Vec<String>, Vec<String>) = timed(
        redis::pipe()
            .cmd("SET")
            .arg(registry::node_key(&c.node_id))
            .arg(&json)
            .arg("PX")
            .arg(ttl)
            .arg("GET")
            .cmd("ZADD")
            .arg(registry::nodes_key())
            .arg(now + ttl)
            .arg(&c.node_id)
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(registry::nodes_key())
            .arg("-inf")
            .arg(now)
            .cmd("ZRANGEBYSCORE")
            .arg(registry::nodes_key())
            .arg(now)
            .arg("+inf")
            .query_async(&mut conn),
    )
    .await?;
    if previous.is_none() && !first {
        warn!("this node's heartbeat was gone from Redis (restarted or flushed): writing rooms and presence again");
        cluster.rewrite_all.store(true, Ordering::Relaxed);
        cluster.hold_adoption();
    }
    // Gone nodes: forget their presence, and them.
    if !expired.is_empty() {
        let mut pipe = redis::pipe();
        for id in &expired {
            pipe.cmd("EVAL")
                .arg(FORGET_NODE_SCRIPT)
                .arg(1)
                .arg(node_identities_key(id))
                .arg(id)
                .arg(registry::presence_key(""))
                .ignore();
            pipe.cmd("ZREM").arg(registry::nodes_key()).arg(id).ignore();
        }
        timed(pipe.query_async::<()>(&mut conn)).await?;
        info!(nodes = ?expired, "nodes left the cluster (heartbeat expired)");
    }
    let keys: Vec<String> = ids.iter().map(|id| registry::node_key(id)).collect();
    let values: Vec<Option<String>> =
        if keys.is_empty() { Vec::new() } else { timed(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await? };
    let mut nodes: Vec<NodeInfo> = values.into_iter().flatten().filter_map(|v| serde_json::from_str(&v).ok()).collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    if let Ok(mut n) = cluster.nodes.lock() {
        *n = nodes;
    }
    sync_rooms(cluster, state, &mut conn).await?;
    sync_presence(cluster, state, &mut conn).await
}

/// Claim the rooms this node hosts that Redis does not know as ours (after a Redis restart), release the ones it
/// placed but no longer hosts.
async fn sync_rooms(cluster: &Cluster, state: &AppState, conn: &mut ConnectionManager) -> Result<(), String> {
    let me = cluster.config.node_id.clone();
    let hosted: HashSet<String> = state.rooms.homed_names().into_iter().collect();
    let rewrite = cluster.rewrite_all.load(Ordering::Relaxed);
    let (claim, release): (Vec<String>, Vec<String>) = {
        let Ok(mut placed) = cluster.placed.lock() else { return Ok(()) };
        let claim: Vec<String> = hosted.iter().filter(|r| rewrite || !placed.contains_key(*r)).cloned().collect();
        let now = Instant::now();
        let release: Vec<String> = placed
            .iter()
            .filter(|(r, at)| !hosted.contains(*r) && now.saturating_duration_since(**at) >= PLACEMENT_GRACE)
            .map(|(r, _)| r.clone())
            .collect();
        for r in &release {
            placed.remove(r);
        }
        for r in &claim {
            placed.insert(r.clone(), now);
        }
        (claim, release)
    };
    if claim.is_empty() && release.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for room in &claim {
        pipe.cmd("SET").arg(registry::room_key(room)).arg(&me).arg("NX");
    }
    for room in &release {
        pipe.cmd("EVAL").arg(RELEASE_SCRIPT).arg(1).arg(registry::room_key(room)).arg(&me).ignore();
    }
    let claimed: Vec<Option<String>> = timed(pipe.query_async(conn)).await?;
    for (room, ok) in claim.iter().zip(claimed) {
        if ok.is_none() {
            warn!(room = %room, "another node holds a room this node hosts; new joins go there, members here stay");
        }
    }
    Ok(())
}

/// Write the presence of identities whose sessions on this node changed: one JSON list per (identity, node).
async fn sync_presence(cluster: &Cluster, state: &AppState, conn: &mut ConnectionManager) -> Result<(), String> {
    let me = &cluster.config.node_id;
    let rewrite = cluster.rewrite_all.swap(false, Ordering::Relaxed);
    let changed: Vec<String> = match cluster.presence_dirty.lock() {
        Ok(mut d) => d.drain().collect(),
        Err(_) => return Ok(()),
    };
    // Most heartbeats have nothing to write: the registry is not walked for them.
    if !rewrite && changed.is_empty() {
        return Ok(());
    }
    let members = state.rooms.members();
    let mut by_identity: HashMap<&str, Vec<PresenceEntry>> = HashMap::new();
    for m in &members {
        by_identity.entry(m.identity.as_str()).or_default().push(PresenceEntry {
            node: me.clone(),
            room: m.room.clone(),
            participant_id: m.participant_id.clone(),
            since_ms: m.joined_ms,
        });
    }
    let dirty: Vec<String> = if rewrite { by_identity.keys().map(|s| s.to_string()).collect() } else { changed };
    if dirty.is_empty() {
        return Ok(());
    }
    let set = node_identities_key(me);
    let mut pipe = redis::pipe();
    for identity in &dirty {
        match by_identity.get(identity.as_str()) {
            Some(entries) => {
                let json = serde_json::to_string(entries).unwrap_or_default();
                pipe.cmd("HSET").arg(registry::presence_key(identity)).arg(me).arg(json).ignore();
                pipe.cmd("SADD").arg(&set).arg(identity).ignore();
            }
            None => {
                pipe.cmd("HDEL").arg(registry::presence_key(identity)).arg(me).ignore();
                pipe.cmd("SREM").arg(&set).arg(identity).ignore();
            }
        }
    }
    if let Err(e) = timed(pipe.query_async::<()>(conn)).await {
        // Written again at the next heartbeat.
        if let Ok(mut d) = cluster.presence_dirty.lock() {
            d.extend(dirty);
        }
        return Err(e);
    }
    Ok(())
}

/// Resolves when the server starts shutting down (the watch's guard is dropped inside, so callers stay `Send`).
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn publisher_task(
    cluster: Arc<Cluster>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut conn = cluster.conn.clone();
    let mut batch: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    let mut retry = tokio::time::interval(HEARTBEAT);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Head notices still to be repeated: (conversation, payload, last number, repeats left).
    let mut repeat: Vec<(ConversationId, String, u64, u32)> = Vec::new();
    loop {
        let mut retried = false;
        tokio::select! {
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => {
                if n == 0 {
                    return;
                }
            }
            _ = retry.tick() => retried = true,
            _ = stopped(&mut shutdown) => {
                // Publish what is queued (the last commits before the drain), then stop.
                while let Ok(o) = rx.try_recv() {
                    batch.push(o);
                }
                publish(&cluster, &mut conn, &mut batch).await;
                return;
            }
        }
        // Head notices for what could not be published while Redis was away. Each is published again on the next
        // few heartbeats: the other nodes' subscriptions come back at their own pace after an outage, and a notice
        // heard twice costs nothing (the catch-up drops what a node has).
        if cluster.reachable() {
            let notices = cluster.unpublished.lock().map(|mut u| u.take(&cluster.config.node_id)).unwrap_or_default();
            for (c, msg) in notices {
                let BusMsg::Head { last, .. } = msg else { continue };
                repeat.push((c, msg.encode(), last, NOTICE_REPEATS));
            }
        }
        if retried {
            for (c, payload, last, left) in repeat.iter_mut() {
                for channel in bus::channels_of(c) {
                    batch.push(Outgoing { channel, payload: payload.clone(), committed: Some((c.clone(), *last)) });
                }
                *left -= 1;
            }
            repeat.retain(|r| r.3 > 0);
        }
        publish(&cluster, &mut conn, &mut batch).await;
    }
}

async fn publish(cluster: &Cluster, conn: &mut ConnectionManager, batch: &mut Vec<Outgoing>) {
    if batch.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for o in batch.iter() {
        pipe.cmd("PUBLISH").arg(&o.channel).arg(&o.payload).ignore();
    }
    match timed(pipe.query_async::<()>(conn)).await {
        Ok(()) => {
            cluster.stats.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            cluster.failed("publishing chat", &e);
            cluster.stats.publish_failures.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for o in batch.iter() {
                if let Some((c, seq)) = &o.committed {
                    cluster.remember_unpublished(c, *seq);
                }
            }
        }
    }
    batch.clear();
}

async fn subscriber_task(
    cluster: Arc<Cluster>,
    mut cmds: mpsc::UnboundedReceiver<SubCmd>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut subs = Subscriptions::default();
    let mut connected_once = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Connect; meanwhile keep counting what sessions need, and let them go on.
        let pubsub = tokio::select! {
            r = tokio::time::timeout(REDIS_TIMEOUT, cluster.client.get_async_pubsub()) => r,
            _ = stopped(&mut shutdown) => return,
        };
        let pubsub = match pubsub {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                wait_apart(&mut cmds, &mut subs, backoff, &cluster, &e.to_string()).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(_) => {
                wait_apart(&mut cmds, &mut subs, backoff, &cluster, "connect timed out").await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let all = subs.channels();
        if !all.is_empty() {
            if let Err(e) = timed(sink.subscribe(all)).await {
                wait_apart(&mut cmds, &mut subs, backoff, &cluster, &e).await;
                continue;
            }
        }
        backoff = Duration::from_millis(100);
        if connected_once {
            // Anything published while the subscription was broken is missed: check every watched head now.
            info!(channels = subs.len(), "chat bus subscription restored");
            if let Ok(mut c) = cluster.catchup.lock() {
                c.check_all(Instant::now());
            }
        }
        connected_once = true;
        let mut ping = tokio::time::interval(HEARTBEAT);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => return,
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else { return };
                    let ok = match cmd {
                        SubCmd::Follow { channels, done } => {
                            let new: Vec<String> = channels.into_iter().filter(|c| subs.add(c)).collect();
                            let r = if new.is_empty() { Ok(()) } else { timed(sink.subscribe(new)).await };
                            let _ = done.send(());
                            r
                        }
                        SubCmd::Unfollow { channels } => {
                            let gone: Vec<String> = channels.into_iter().filter(|c| subs.remove(c)).collect();
                            if gone.is_empty() { Ok(()) } else { timed(sink.unsubscribe(gone)).await }
                        }
                    };
                    if let Err(e) = ok {
                        cluster.stats.subscription_breaks.fetch_add(1, Ordering::Relaxed);
                        cluster.failed("subscribing to the chat bus", &e);
                        break;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        cluster.stats.subscription_breaks.fetch_add(1, Ordering::Relaxed);
                        cluster.failed("reading the chat bus", "subscription closed");
                        break;
                    };
                    cluster.on_publication(msg.get_payload_bytes()).await;
                }
                _ = ping.tick() => {
                    // A link cut without a reset never ends the stream: a ping that goes unanswered does.
                    if let Err(e) = timed(sink.ping::<redis::Value>()).await {
                        cluster.stats.subscription_breaks.fetch_add(1, Ordering::Relaxed);
                        cluster.failed("pinging the chat bus", &e);
                        break;
                    }
                }
            }
        }
    }
}

/// While the bus is disconnected: wait `backoff`, still answering sessions (their channels are counted and
/// subscribed on reconnect).
async fn wait_apart(
    cmds: &mut mpsc::UnboundedReceiver<SubCmd>,
    subs: &mut Subscriptions,
    backoff: Duration,
    cluster: &Cluster,
    error: &str,
) {
    cluster.failed("connecting the chat bus", error);
    let until = tokio::time::Instant::now() + backoff;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return,
            cmd = cmds.recv() => match cmd {
                Some(SubCmd::Follow { channels, done }) => {
                    for c in &channels {
                        subs.add(c);
                    }
                    let _ = done.send(());
                }
                Some(SubCmd::Unfollow { channels }) => {
                    for c in &channels {
                        subs.remove(c);
                    }
                }
                None => return,
            },
        }
    }
}

async fn head_check_task(cluster: Arc<Cluster>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(bus::HEAD_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        let due = cluster.catchup.lock().map(|mut c| c.due(Instant::now(), bus::HEADS_PER_CHECK)).unwrap_or_default();
        for c in due {
            let head = match cluster.store.head(&c).await {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => {
                    debug!(error = %e, "head check read failed");
                    break;
                }
            };
            let gap = cluster.catchup.lock().ok().and_then(|mut k| k.on_head(&c, 1, head.last_seq, Instant::now()));
            if let Some(gap) = gap {
                debug!(conversation = %c, after = gap.after, up_to = gap.up_to, "head check found messages the bus lost");
                cluster.fill(gap).await;
            }
        }
    }
}
