//! Durable definitions of the rooms the admin API created, so that a restart, or in a cluster the loss of the node
//! that hosted them, keeps them.
//!
//! A flight's crew room is created hours before its start, with its members invited; a server restart in between
//! must not forget it, nor reopen a room that ended, nor let its audit history be trimmed. The registry
//! ([`crate::room::Rooms`]) is the live state and stays in memory; this store keeps, per API-created room, its
//! options, phase and creation time. Rooms created on first join are not kept: they live while someone is in them.
//!
//! Two backends, one contract:
//! - **one node** ([`sqlite`]): `rooms.sqlite3` in the data directory; every kept room is restored at start.
//! - **a cluster** ([`postgres`]): table `room_definitions` in the shared PostgreSQL. A node restores nothing at
//!   start; it restores a room when the room is placed on it and not in its memory (a join, or the adoption of a
//!   room whose node is gone, see `cluster`), so each definition is live on at most the one node Redis places it on.
//!
//! Writes are whole-row upserts and deletes. Creation writes through before the API answers `201 Created`; the
//! lifecycle job writes phase changes and forgotten rooms right after each tick by comparing the registry with what
//! this node wrote ([`Sync`]), so a crash loses at most one tick of transitions, which the lifecycle rules redo from
//! the clock when the room is restored (a room past its end closes again). [`Sync`] deletes only rooms this node
//! wrote or restored: in a cluster the table also holds the rooms of every other node.

mod postgres;
pub mod sqlite;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use courier_chat::postgres::PostgresConfig;

use crate::lifecycle::{RoomOptions, RoomPhase};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum RoomStoreError {
    #[error("room store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("room store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("room store: {0}")]
    Connect(#[from] courier_chat::store::StoreError),
    #[error("room store: room {room}: {error}")]
    Decode { room: String, error: String },
    #[error("room store: task failed: {0}")]
    Task(String),
}

/// One kept room.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRoom {
    pub name: String,
    pub options: RoomOptions,
    pub phase: RoomPhase,
    pub created_ms: u64,
}

impl StoredRoom {
    /// Its chat history is kept whatever the retention (`retention = "keep"`).
    pub fn keeps_history(&self) -> bool {
        self.options.retention.as_deref() == Some("keep")
    }
}

/// A member muted in a room's chat, until `until_ms` (ms since the epoch) or until unmuted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mute {
    pub room: String,
    pub identity: String,
    pub until_ms: Option<u64>,
}

enum Backend {
    Local(Arc<sqlite::SqliteRooms>),
    Shared(postgres::PostgresRooms),
}

/// The store: see the module doc. Every call may wait for the disk or the database.
pub struct RoomStore {
    backend: Backend,
    /// What this node wrote, as far as [`RoomStore::sync`] needs to know. Held across a sync's writes.
    sync: tokio::sync::Mutex<Sync>,
}

impl std::fmt::Debug for RoomStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.shared() { "RoomStore(shared)" } else { "RoomStore(local)" })
    }
}

/// Run a blocking SQLite call off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RoomStoreError> + Send + 'static,
) -> Result<T, RoomStoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| RoomStoreError::Task(e.to_string()))?
}

impl RoomStore {
    /// The local store's path in a data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        sqlite::SqliteRooms::path_in(data_dir)
    }

    /// Open (creating if needed) the local store at `path`.
    pub async fn open_local(path: PathBuf) -> Result<RoomStore, RoomStoreError> {
        let rooms = Arc::new(blocking(move || sqlite::SqliteRooms::open(&path)).await?);
        let loaded = {
            let rooms = rooms.clone();
            blocking(move || rooms.load()).await?
        };
        Ok(RoomStore { backend: Backend::Local(rooms), sync: tokio::sync::Mutex::new(Sync::new(&loaded)) })
    }

    /// Connect to the shared store in the PostgreSQL database at `url` (creating its table if needed).
    pub async fn open_shared(url: &str, config: PostgresConfig) -> Result<RoomStore, RoomStoreError> {
        let rooms = postgres::PostgresRooms::connect(url, config).await?;
        Ok(RoomStore { backend: Backend::Shared(rooms), sync: Default::default() })
    }

    /// Whether this is a cluster's shared store (a node restores its rooms on demand, not all at start).
    pub fn shared(&self) -> bool {
        matches!(self.backend, Backend::Shared(_))
    }

    /// Every kept room, by name.
    pub async fn load(&self) -> Result<Vec<StoredRoom>, RoomStoreError> {
        match &self.backend {
            Backend::Local(s) => {
                let s = s.clone();
                blocking(move || s.load()).await
            }
            Backend::Shared(p) => p.load().await,
        }
    }

    /// The names of every kept room.
    pub async fn names(&self) -> Result<Vec<String>, RoomStoreError> {
        match &self.backend {
            Backend::Local(_) => Ok(self.load().await?.into_iter().map(|r| r.name).collect()),
            Backend::Shared(p) => p.names().await,
        }
    }

    /// One kept room.
    pub async fn get(&self, name: &str) -> Result<Option<StoredRoom>, RoomStoreError> {
        match &self.backend {
            Backend::Local(s) => {
                let (s, name) = (s.clone(), name.to_string());
                blocking(move || s.get(&name)).await
            }
            Backend::Shared(p) => p.get(name).await,
        }
    }

    /// Keep a room the admin API just created (the registry has it). `false`: the shared store holds a room of that
    /// name already (one defined on another node, not live anywhere now); nothing was written.
    pub async fn create(&self, room: &StoredRoom) -> Result<bool, RoomStoreError> {
        let created = match &self.backend {
            Backend::Local(s) => {
                let (s, r) = (s.clone(), room.clone());
                blocking(move || s.put(&r)).await?;
                true
            }
            Backend::Shared(p) => p.insert(room).await?,
        };
        if created {
            self.sync.lock().await.done(&Write::Put(room.clone()));
        }
        Ok(created)
    }

    /// Keep `room` (insert or replace).
    pub async fn put(&self, room: &StoredRoom) -> Result<(), RoomStoreError> {
        self.write(&Write::Put(room.clone())).await?;
        self.sync.lock().await.done(&Write::Put(room.clone()));
        Ok(())
    }

    /// Forget `name`.
    pub async fn delete(&self, name: &str) -> Result<(), RoomStoreError> {
        self.write(&Write::Delete(name.to_string())).await?;
        self.sync.lock().await.done(&Write::Delete(name.to_string()));
        Ok(())
    }

    /// This node restored `room` as it is stored: it is now this node's to write (and to delete when it goes).
    pub async fn restored(&self, room: &StoredRoom) {
        self.sync.lock().await.done(&Write::Put(room.clone()));
    }

    /// Whether this node wrote (or restored) `name` and has not deleted it.
    pub async fn wrote(&self, name: &str) -> bool {
        self.sync.lock().await.written.contains_key(name)
    }

    async fn write(&self, w: &Write) -> Result<(), RoomStoreError> {
        match (&self.backend, w) {
            (Backend::Local(s), w) => {
                let (s, w) = (s.clone(), w.clone());
                blocking(move || match &w {
                    Write::Put(r) => s.put(r),
                    Write::Delete(n) => s.delete(n),
                })
                .await
            }
            (Backend::Shared(p), Write::Put(r)) => p.put(r).await,
            (Backend::Shared(p), Write::Delete(n)) => p.delete(n).await,
        }
    }

    /// Bring the store to `snapshot()` (the registry's API-created rooms), writing only what changed since this
    /// node last wrote. The snapshot is taken under the lock that [`RoomStore::create`] records its write under, so
    /// a room created (registry first, then the store) while a sync runs is either in the snapshot or not yet
    /// recorded, never deleted as gone. Returns the writes made; a failed write is tried again on the next call.
    pub async fn sync(&self, snapshot: impl FnOnce() -> Vec<StoredRoom>) -> Result<usize, RoomStoreError> {
        let mut sync = self.sync.lock().await;
        let writes = sync.diff(&snapshot());
        for w in &writes {
            self.write(w).await?;
            sync.done(w);
        }
        Ok(writes.len())
    }

    /// Keep (`muted`) or forget a chat mute.
    pub async fn set_mute(&self, mute: &Mute, muted: bool) -> Result<(), RoomStoreError> {
        match &self.backend {
            Backend::Local(s) => {
                let (s, m) = (s.clone(), mute.clone());
                blocking(move || s.set_mute(&m, muted)).await
            }
            Backend::Shared(p) => p.set_mute(mute, muted).await,
        }
    }

    /// The chat mutes in force at `now_ms`, of `room` or of every room.
    pub async fn mutes(&self, room: Option<&str>, now_ms: u64) -> Result<Vec<Mute>, RoomStoreError> {
        match &self.backend {
            Backend::Local(s) => {
                let (s, room) = (s.clone(), room.map(str::to_string));
                blocking(move || s.mutes(room.as_deref(), now_ms)).await
            }
            Backend::Shared(p) => p.mutes(room, now_ms).await,
        }
    }

    /// The rooms whose chat history is kept whatever the retention (`retention = "keep"`).
    pub async fn kept_history(&self) -> Result<HashSet<String>, RoomStoreError> {
        Ok(self.load().await?.into_iter().filter(StoredRoom::keeps_history).map(|r| r.name).collect())
    }
}

fn phase_name(p: RoomPhase) -> &'static str {
    match p {
        RoomPhase::Scheduled => "scheduled",
        RoomPhase::Open => "open",
        RoomPhase::Closed => "closed",
    }
}

/// A stored row back into a room.
fn decode(name: String, options: &str, phase: String, created_ms: i64) -> Result<StoredRoom, RoomStoreError> {
    let bad = |e: serde_json::Error| RoomStoreError::Decode { room: name.clone(), error: e.to_string() };
    let options: RoomOptions = serde_json::from_str(options).map_err(bad)?;
    let phase: RoomPhase = serde_json::from_value(serde_json::Value::String(phase)).map_err(bad)?;
    Ok(StoredRoom { name, options, phase, created_ms: created_ms.max(0) as u64 })
}

/// What this node wrote, to write only what changed (sans-I/O: it takes the registry's definitions and returns the
/// writes).
#[derive(Debug, Default)]
pub struct Sync {
    written: HashMap<String, StoredRoom>,
}

/// One write [`Sync::diff`] asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put(StoredRoom),
    Delete(String),
}

impl Sync {
    /// Start from what the store holds (one node: all of it is this node's).
    pub fn new(loaded: &[StoredRoom]) -> Sync {
        Sync { written: loaded.iter().map(|r| (r.name.clone(), r.clone())).collect() }
    }

    /// The writes that bring the store to `now` (the registry's API-created rooms). Call [`Sync::done`] with each
    /// write that succeeded.
    pub fn diff(&self, now: &[StoredRoom]) -> Vec<Write> {
        let mut writes: Vec<Write> =
            now.iter().filter(|r| self.written.get(&r.name) != Some(r)).map(|r| Write::Put(r.clone())).collect();
        let live: HashSet<&str> = now.iter().map(|r| r.name.as_str()).collect();
        let mut gone: Vec<&String> = self.written.keys().filter(|n| !live.contains(n.as_str())).collect();
        gone.sort();
        writes.extend(gone.into_iter().map(|n| Write::Delete(n.clone())));
        writes
    }

    /// `w` reached the store.
    pub fn done(&mut self, w: &Write) {
        match w {
            Write::Put(r) => {
                self.written.insert(r.name.clone(), r.clone());
            }
            Write::Delete(n) => {
                self.written.remove(n);
            }
        }
    }
}

#[cfg(test)]
mod tests;
