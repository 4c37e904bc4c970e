//! Janus 1.1 (Debian's `janus`, videoroom plugin, multistream API) as a load target, driven over its HTTP REST API.
//! `bench/janus.sh CONFDIR` installs it and writes the config; [`Janus::start`] runs it inside a [`Netns`] (Janus
//! gathers no ICE candidate on 127.0.0.1) and talks to `http://NS_ADDR:8088/janus`.
//!
//! The API sequence (one Janus session, one handle per peer, every reply matched by its `transaction`):
//! - `POST /janus {"janus":"create"}` → `{"janus":"success","data":{"id":SESSION}}`; one task long-polls
//!   `GET /janus/SESSION?maxev=N` (an array of events; a pending poll is the keepalive).
//! - `POST /janus/SESSION {"janus":"attach","plugin":"janus.plugin.videoroom"}` → `data.id` = HANDLE.
//! - `POST /janus/SESSION/HANDLE {"janus":"message","body":{...},"jsep":{...}}` → `success` with `plugindata` for
//!   synchronous requests (`create`), else `ack`, then an `event` with the same transaction on the long poll.
//! - Room: `{"request":"create","publishers":N,"bitrate":0,"videocodec":"vp8","audiocodec":"opus",...}` → `room`.
//! - Publisher: `{"request":"joinandconfigure","ptype":"publisher","room":R}` with our offer (`"trickle":false`:
//!   our host candidate is in the SDP and nothing is trickled) → event `joined` with `id` (the feed), `streams`
//!   (type, mid) and the answer, Janus's candidates inside (half-trickle). The feed can be subscribed to only once
//!   its PeerConnection is up: we wait for the handle's `webrtcup`.
//! - Subscriber: `{"request":"join","ptype":"subscriber","room":R,"streams":[{"feed":F,"mid":M},...]}` → event
//!   `attached` with Janus's offer → `{"request":"start"}` with our answer → event `started`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, OnceCell};

use super::netns::Netns;
use super::peer::PeerHandle;
use super::target::{Media, Session, Target};

/// Every wait on Janus (a reply, an event) ends after this.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_PORT: u16 = 8088;

/// A running Janus, killed on drop.
pub struct Janus {
    child: Child,
    api: Api,
    conn: OnceCell<Arc<Conn>>,
    rooms: tokio::sync::Mutex<HashMap<usize, Room>>,
}

/// One room: its Janus id and its publishers' feeds with their streams (kind, mid).
struct Room {
    id: u64,
    feeds: Vec<Feed>,
}

struct Feed {
    id: u64,
    /// (`"audio"`/`"video"`, mid)
    streams: Vec<(String, String)>,
}

/// Runs `media-tests/bench/janus.sh DIR` (installs Janus when missing, writes its config into `dir`); returns the
/// config directory it printed last.
pub fn write_config(dir: &Path) -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/janus.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().ok_or_else(|| anyhow!("{} printed nothing", script.display()))?;
    Ok(PathBuf::from(last.trim()))
}

impl Janus {
    /// Runs `bin` (`janus`) with the config `bench/janus.sh` wrote into `confdir`, inside `netns` (pinned to `cpu`),
    /// logging to `confdir/janus.log`, and waits until its API answers `GET /janus/info` (20 s at most).
    pub async fn start(bin: &Path, confdir: &Path, netns: &Netns, cpu: Option<usize>) -> anyhow::Result<Janus> {
        let log_path = confdir.join("janus.log");
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let prefix = netns.exec_prefix(cpu);
        let confdir = std::fs::canonicalize(confdir).with_context(|| format!("{}", confdir.display()))?;
        // Foreground (no --daemon), logs on stdout (janus.jcfg: log_to_stdout), no colors.
        let child = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(bin)
            .arg("-F")
            .arg(&confdir)
            .arg("-C")
            .arg(confdir.join("janus.jcfg"))
            .arg("--disable-colors")
            // The SDP's c= line; without it Janus finds no address with a route out and says 127.0.0.1.
            .arg("--interface")
            .arg(netns.ns_addr.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut janus = Janus {
            child,
            api: Api { addr: SocketAddr::new(netns.ns_addr.into(), HTTP_PORT) },
            conn: OnceCell::new(),
            rooms: tokio::sync::Mutex::new(HashMap::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = janus.child.try_wait()? {
                bail!("janus exited ({status}) before answering; see {}", log_path.display());
            }
            let info = janus.api.request("GET", "/janus/info", None).await;
            if info.is_ok_and(|v| v.get("janus").and_then(Value::as_str) == Some("server_info")) {
                return Ok(janus);
            }
            if Instant::now() > deadline {
                bail!("janus did not answer GET /janus/info within 20 s; see {}", log_path.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The one Janus session every handle lives in, created (with its long-poll task) on first use.
    async fn conn(&self) -> anyhow::Result<Arc<Conn>> {
        self.conn.get_or_try_init(|| Conn::open(self.api.clone())).await.cloned()
    }

    /// The room `index`, created on first use.
    async fn room_id(&self, conn: &Conn, rooms: &mut HashMap<usize, Room>, index: usize) -> anyhow::Result<u64> {
        if let Some(r) = rooms.get(&index) {
            return Ok(r.id);
        }
        let handle = conn.attach().await?;
        let body = json!({
            "request": "create", "description": format!("load {index}"), "publishers": 1000, "bitrate": 0,
            "videocodec": "vp8", "audiocodec": "opus", "notify_joining": false, "permanent": false,
        });
        let (data, _) = conn.message(handle, body, None).await.with_context(|| format!("creating room {index}"))?;
        let id = data["room"].as_u64().ok_or_else(|| anyhow!("creating room {index}: no room id in {data}"))?;
        conn.detach(handle).await;
        rooms.insert(index, Room { id, feeds: Vec::new() });
        Ok(id)
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get() {
            conn.poller.abort();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps a peer's handle (and the session's long poll) alive.
struct HandleGuard {
    _conn: Arc<Conn>,
    _handle: u64,
}

#[async_trait]
impl Target for Janus {
    fn name(&self) -> &'static str {
        "janus"
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn supports(&self, _rooms: usize, _publishers: usize, media: Media) -> anyhow::Result<()> {
        if !media.audio && !media.video {
            bail!("nothing to publish");
        }
        Ok(())
    }

    async fn publish(&self, room: usize, index: usize, media: Media, peer: &PeerHandle) -> anyhow::Result<Session> {
        let conn = self.conn().await?;
        let room_id = {
            let mut rooms = self.rooms.lock().await;
            self.room_id(&conn, &mut rooms, room).await?
        };
        let handle = conn.attach().await?;
        let mut events = conn.subscribe_handle(handle);
        let offer = peer.offer(media, true).await.context("publisher offer")?;
        tracing::debug!("janus publisher offer:\n{offer}");
        let body = json!({
            "request": "joinandconfigure", "ptype": "publisher", "room": room_id,
            "display": format!("pub-{room}-{index}"),
        });
        let jsep = json!({ "type": "offer", "sdp": offer, "trickle": false });
        let step = format!("publisher {index} of room {room}: joinandconfigure");
        let (data, jsep) = conn.message(handle, body, Some(jsep)).await.context(step.clone())?;
        if data["videoroom"] != "joined" {
            bail!("{step}: unexpected reply {data}");
        }
        let feed = data["id"].as_u64().ok_or_else(|| anyhow!("{step}: no feed id in {data}"))?;
        let streams = data["streams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| Some((s["type"].as_str()?.to_string(), s["mid"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let answer =
            jsep.and_then(|j| j["sdp"].as_str().map(String::from)).ok_or_else(|| anyhow!("{step}: no answer"))?;
        tracing::debug!("janus publisher answer:\n{answer}");
        peer.accept_answer(answer).await.context("applying Janus's answer")?;
        // Subscribing to a feed whose PeerConnection is not up yet fails with 428 "No such feed".
        let step = format!("publisher {index} of room {room}: waiting for webrtcup");
        tokio::time::timeout(STEP_TIMEOUT, async {
            while let Some(ev) = events.recv().await {
                match ev["janus"].as_str() {
                    Some("webrtcup") => return Ok(()),
                    Some("hangup") => bail!("hangup: {ev}"),
                    _ => {}
                }
            }
            bail!("the session ended")
        })
        .await
        .map_err(|_| anyhow!("{step}: timed out after {STEP_TIMEOUT:?}"))?
        .context(step)?;
        conn.unsubscribe_handle(handle);
        let mut rooms = self.rooms.lock().await;
        rooms.get_mut(&room).expect("room created above").feeds.push(Feed { id: feed, streams });
        Ok(Box::new(HandleGuard { _conn: conn, _handle: handle }))
    }

    async fn subscribe(&self, room: usize, index: usize, media: Media, peer: &PeerHandle) -> anyhow::Result<Session> {
        let conn = self.conn().await?;
        let (room_id, streams) = {
            let rooms = self.rooms.lock().await;
            let r = rooms.get(&room).ok_or_else(|| anyhow!("room {room} has no publisher"))?;
            let streams: Vec<Value> = r
                .feeds
                .iter()
                .flat_map(|f| {
                    f.streams
                        .iter()
                        .filter(|(kind, _)| (kind == "audio" && media.audio) || (kind == "video" && media.video))
                        .map(move |(_, mid)| json!({ "feed": f.id, "mid": mid }))
                })
                .collect();
            (r.id, streams)
        };
        if streams.is_empty() {
            bail!("room {room} has no {media:?} stream to subscribe to");
        }
        let handle = conn.attach().await?;
        let step = format!("subscriber {index} of room {room}: join");
        let body = json!({ "request": "join", "ptype": "subscriber", "room": room_id, "streams": streams });
        let (data, jsep) = conn.message(handle, body, None).await.context(step.clone())?;
        if data["videoroom"] != "attached" {
            bail!("{step}: unexpected reply {data}");
        }
        let offer =
            jsep.and_then(|j| j["sdp"].as_str().map(String::from)).ok_or_else(|| anyhow!("{step}: no offer"))?;
        tracing::debug!("janus subscriber offer:\n{offer}");
        let answer = peer.answer(offer).await.context("answering Janus's offer")?;
        tracing::debug!("janus subscriber answer:\n{answer}");
        let step = format!("subscriber {index} of room {room}: start");
        let jsep = json!({ "type": "answer", "sdp": answer, "trickle": false });
        let (data, _) = conn
            .message(handle, json!({ "request": "start", "room": room_id }), Some(jsep))
            .await
            .context(step.clone())?;
        if data["started"] != "ok" {
            bail!("{step}: unexpected reply {data}");
        }
        Ok(Box::new(HandleGuard { _conn: conn, _handle: handle }))
    }
}

/// Where Janus's HTTP API is.
#[derive(Clone)]
struct Api {
    addr: SocketAddr,
}

impl Api {
    /// One request on its own connection; the JSON body of a 200 reply.
    async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(|b| b.to_string());
        let (status, text) =
            super::http::request(self.addr, method, path, body.as_deref().map(|b| ("application/json", b))).await?;
        if status != 200 {
            bail!("{method} {path}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }
}

/// A Janus session and the task long-polling its events.
struct Conn {
    api: Api,
    session: u64,
    next_tx: AtomicU64,
    routes: Arc<Routes>,
    poller: tokio::task::JoinHandle<()>,
}

/// Where the long poll sends what it reads: a waiting request (by transaction), else the handle's listener.
#[derive(Default)]
struct Routes {
    by_transaction: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    by_handle: Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>,
}

impl Routes {
    fn dispatch(&self, ev: Value) {
        if let Some(tx) = ev["transaction"].as_str() {
            if let Some(w) = self.by_transaction.lock().unwrap().remove(tx) {
                let _ = w.send(ev);
                return;
            }
        }
        if let Some(h) = ev["sender"].as_u64() {
            if let Some(l) = self.by_handle.lock().unwrap().get(&h) {
                let _ = l.send(ev);
            }
        }
    }
}

impl Conn {
    async fn open(api: Api) -> anyhow::Result<Arc<Conn>> {
        let reply = timeout(
            "creating a Janus session",
            api.request("POST", "/janus", Some(&json!({"janus": "create", "transaction": "s0"}))),
        )
        .await?;
        let session = reply["data"]["id"].as_u64().ok_or_else(|| anyhow!("creating a Janus session: {reply}"))?;
        let routes = Arc::new(Routes::default());
        let poller = tokio::spawn(poll(api.clone(), session, routes.clone()));
        Ok(Arc::new(Conn { api, session, next_tx: AtomicU64::new(1), routes, poller }))
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next_tx.fetch_add(1, Ordering::Relaxed))
    }

    async fn attach(&self) -> anyhow::Result<u64> {
        let body = json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": self.transaction()});
        let reply = timeout(
            "attaching to the videoroom plugin",
            self.api.request("POST", &format!("/janus/{}", self.session), Some(&body)),
        )
        .await?;
        reply["data"]["id"].as_u64().ok_or_else(|| anyhow!("attaching to the videoroom plugin: {reply}"))
    }

    async fn detach(&self, handle: u64) {
        let body = json!({"janus": "detach", "transaction": self.transaction()});
        let _ = timeout("detach", self.api.request("POST", &format!("/janus/{}/{handle}", self.session), Some(&body)))
            .await;
    }

    /// Events of `handle` that no request waits for (`webrtcup`, `media`, `hangup`…).
    fn subscribe_handle(&self, handle: u64) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.by_handle.lock().unwrap().insert(handle, tx);
        rx
    }

    fn unsubscribe_handle(&self, handle: u64) {
        self.routes.by_handle.lock().unwrap().remove(&handle);
    }

    /// Sends a plugin message; returns the plugin's data and the JSEP, synchronous or from the event that follows the
    /// `ack`. A plugin error (`error_code`) is an error.
    async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> anyhow::Result<(Value, Option<Value>)> {
        let tx = self.transaction();
        let mut msg = json!({"janus": "message", "transaction": tx, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let (w, event) = oneshot::channel();
        self.routes.by_transaction.lock().unwrap().insert(tx.clone(), w);
        let path = format!("/janus/{}/{handle}", self.session);
        let reply = timeout("the plugin's reply", self.api.request("POST", &path, Some(&msg))).await;
        let reply = match reply {
            Ok(r) if r["janus"] == "ack" => {
                timeout("the plugin's event", async { event.await.map_err(|_| anyhow!("the long poll stopped")) }).await
            }
            other => other,
        };
        self.routes.by_transaction.lock().unwrap().remove(&tx);
        let reply = reply?;
        match reply["janus"].as_str() {
            Some("success") | Some("event") => {}
            _ => bail!("Janus error: {}", reply["error"]),
        }
        let data = reply["plugindata"]["data"].clone();
        if !data["error_code"].is_null() {
            bail!("videoroom error {}: {}", data["error_code"], data["error"]);
        }
        Ok((data, reply.get("jsep").cloned()))
    }
}

/// The session's long poll: up to 100 events a reply; Janus answers a `keepalive` after 30 s without any.
async fn poll(api: Api, session: u64, routes: Arc<Routes>) {
    let path = format!("/janus/{session}?maxev=100");
    loop {
        match tokio::time::timeout(Duration::from_secs(40), api.request("GET", &path, None)).await {
            Ok(Ok(Value::Array(events))) => events.into_iter().for_each(|e| routes.dispatch(e)),
            Ok(Ok(e)) => routes.dispatch(e),
            Ok(Err(e)) => {
                tracing::warn!("janus long poll: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => tracing::warn!("janus long poll: no reply within 40 s"),
        }
    }
}

async fn timeout<T>(step: &str, f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| anyhow!("{step}: no answer from Janus within {STEP_TIMEOUT:?}"))?
        .with_context(|| step.to_string())
}
