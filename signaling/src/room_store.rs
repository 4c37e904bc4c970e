//! Durable definitions of the rooms the admin API created, so that a restart keeps them.
//!
//! A flight's crew room is created hours before its start, with its members invited; a server restart in between
//! must not forget it, nor reopen a room that ended, nor let its audit history be trimmed. The registry
//! ([`crate::room::Rooms`]) is the live state and stays in memory; this store keeps, per API-created room, its
//! options, phase and creation time in `rooms.sqlite3` in the data directory (SQLite, WAL, `synchronous=FULL`:
//! `201 Created` is answered after the definition is on disk). Rooms created on first join are not kept: they
//! live while someone is in them.
//!
//! Writes are whole-row upserts and deletes. Creation writes through before the API answers; the lifecycle timer
//! writes phase changes and forgotten rooms once a second by comparing the registry with what it wrote last
//! ([`Sync`]), so a crash loses at most a second of transitions — which the lifecycle rules redo from the clock on
//! restart (a room past its end closes again).
//!
//! The definitions are per server: with several servers sharing a PostgreSQL chat store, each keeps its own rooms.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::lifecycle::{RoomOptions, RoomPhase};

/// The file in the data directory.
pub const FILE_NAME: &str = "rooms.sqlite3";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum RoomStoreError {
    #[error("room store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("room store: room {room}: {error}")]
    Decode { room: String, error: String },
}

/// One kept room.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRoom {
    pub name: String,
    pub options: RoomOptions,
    pub phase: RoomPhase,
    pub created_ms: u64,
}

/// The store. Calls block on SQLite (a few ms with the fsync): call from `spawn_blocking` or a maintenance CLI.
pub struct RoomStore {
    conn: Mutex<Connection>,
    /// What the store holds, as far as [`RoomStore::sync`] needs to know.
    sync: Mutex<Sync>,
}

impl std::fmt::Debug for RoomStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomStore")
    }
}

impl RoomStore {
    /// The store's path in a data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Open (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<RoomStore, RoomStoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS rooms (
                name TEXT PRIMARY KEY,
                options TEXT NOT NULL,
                phase TEXT NOT NULL,
                created_ms INTEGER NOT NULL
            )",
        )?;
        let store = RoomStore { conn: Mutex::new(conn), sync: Mutex::default() };
        let loaded = store.load()?;
        *store.sync.lock().unwrap_or_else(|e| e.into_inner()) = Sync::new(&loaded);
        Ok(store)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every kept room, by name.
    pub fn load(&self) -> Result<Vec<StoredRoom>, RoomStoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, options, phase, created_ms FROM rooms ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, options, phase, created_ms) = row?;
            let decode = |e: serde_json::Error| RoomStoreError::Decode { room: name.clone(), error: e.to_string() };
            let options: RoomOptions = serde_json::from_str(&options).map_err(decode)?;
            let phase: RoomPhase = serde_json::from_value(serde_json::Value::String(phase)).map_err(decode)?;
            out.push(StoredRoom { name, options, phase, created_ms: created_ms.max(0) as u64 });
        }
        Ok(out)
    }

    /// Keep `room` (insert or replace).
    pub fn put(&self, room: &StoredRoom) -> Result<(), RoomStoreError> {
        self.write_put(room)?;
        self.sync.lock().unwrap_or_else(|e| e.into_inner()).done(&Write::Put(room.clone()));
        Ok(())
    }

    /// Forget `name`.
    pub fn delete(&self, name: &str) -> Result<(), RoomStoreError> {
        self.write_delete(name)?;
        self.sync.lock().unwrap_or_else(|e| e.into_inner()).done(&Write::Delete(name.to_string()));
        Ok(())
    }

    fn write_put(&self, room: &StoredRoom) -> Result<(), RoomStoreError> {
        let options = serde_json::to_string(&room.options).expect("room options serialize");
        self.conn().execute(
            "INSERT INTO rooms (name, options, phase, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET options = ?2, phase = ?3, created_ms = ?4",
            params![room.name, options, phase_name(room.phase), room.created_ms as i64],
        )?;
        Ok(())
    }

    fn write_delete(&self, name: &str) -> Result<(), RoomStoreError> {
        self.conn().execute("DELETE FROM rooms WHERE name = ?1", params![name])?;
        Ok(())
    }

    /// Bring the store to `snapshot()` (the registry's API-created rooms), writing only what changed. The snapshot
    /// is taken under the same lock that [`RoomStore::put`] records its write under, so a room created (registry
    /// first, then `put`) while a sync runs is either in the snapshot or not yet recorded — never deleted as
    /// gone. Returns the writes made; a failed write is tried again on the next call.
    pub fn sync(&self, snapshot: impl FnOnce() -> Vec<StoredRoom>) -> Result<usize, RoomStoreError> {
        let mut sync = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        let writes = sync.diff(&snapshot());
        for w in &writes {
            match w {
                Write::Put(room) => self.write_put(room)?,
                Write::Delete(name) => self.write_delete(name)?,
            }
            sync.done(w);
        }
        Ok(writes.len())
    }

    /// Whether the kept room `name` keeps its chat history whatever the retention (`retention = "keep"`).
    pub fn keeps_history(&self, name: &str) -> Result<bool, RoomStoreError> {
        let options: Option<String> = self
            .conn()
            .query_row("SELECT options FROM rooms WHERE name = ?1", params![name], |r| r.get(0))
            .optional()?;
        Ok(options
            .and_then(|o| serde_json::from_str::<RoomOptions>(&o).ok())
            .is_some_and(|o| o.retention.as_deref() == Some("keep")))
    }
}

fn phase_name(p: RoomPhase) -> &'static str {
    match p {
        RoomPhase::Scheduled => "scheduled",
        RoomPhase::Open => "open",
        RoomPhase::Closed => "closed",
    }
}

/// What the store holds, to write only what changed (sans-I/O: it takes the registry's
/// definitions and returns the writes).
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
    /// Start from what the store holds.
    pub fn new(loaded: &[StoredRoom]) -> Sync {
        Sync { written: loaded.iter().map(|r| (r.name.clone(), r.clone())).collect() }
    }

    /// The writes that bring the store to `now` (the registry's API-created rooms). Call [`Sync::done`] with each
    /// write that succeeded.
    pub fn diff(&self, now: &[StoredRoom]) -> Vec<Write> {
        let mut writes: Vec<Write> =
            now.iter().filter(|r| self.written.get(&r.name) != Some(r)).map(|r| Write::Put(r.clone())).collect();
        let live: std::collections::HashSet<&str> = now.iter().map(|r| r.name.as_str()).collect();
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
mod tests {
    use super::*;
    use crate::lifecycle::Schedule;

    fn room(name: &str, phase: RoomPhase) -> StoredRoom {
        StoredRoom {
            name: name.into(),
            options: RoomOptions {
                retention: Some("keep".into()),
                schedule: Some(Schedule { start_ms: 1, end_ms: 2, members: vec!["captain".into()] }),
                ..Default::default()
            },
            phase,
            created_ms: 7,
        }
    }

    #[test]
    fn rooms_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = RoomStore::path_in(dir.path());
        {
            let s = RoomStore::open(&path).unwrap();
            s.put(&room("a", RoomPhase::Scheduled)).unwrap();
            s.put(&room("b", RoomPhase::Open)).unwrap();
            s.put(&room("a", RoomPhase::Closed)).unwrap();
            s.delete("b").unwrap();
        }
        let s = RoomStore::open(&path).unwrap();
        assert_eq!(s.load().unwrap(), vec![room("a", RoomPhase::Closed)]);
        assert!(s.keeps_history("a").unwrap());
        assert!(!s.keeps_history("b").unwrap());
        // Sync knows what the store holds, including what was written before it opened.
        assert_eq!(s.sync(|| vec![room("a", RoomPhase::Closed)]).unwrap(), 0);
        s.put(&room("c", RoomPhase::Open)).unwrap();
        assert_eq!(s.sync(|| vec![room("a", RoomPhase::Closed)]).unwrap(), 1, "c deleted");
        assert_eq!(s.load().unwrap(), vec![room("a", RoomPhase::Closed)]);
    }

    #[test]
    fn sync_writes_only_changes() {
        let mut sync = Sync::new(&[room("a", RoomPhase::Scheduled), room("gone", RoomPhase::Open)]);
        let now = vec![room("a", RoomPhase::Scheduled), room("new", RoomPhase::Open)];
        let writes = sync.diff(&now);
        assert_eq!(writes, vec![Write::Put(room("new", RoomPhase::Open)), Write::Delete("gone".into())]);
        // Only the put succeeded: the delete is asked again.
        sync.done(&writes[0]);
        assert_eq!(sync.diff(&now), vec![Write::Delete("gone".into())]);
        sync.done(&Write::Delete("gone".into()));
        assert!(sync.diff(&now).is_empty());
        let later = vec![room("a", RoomPhase::Open), room("new", RoomPhase::Open)];
        assert_eq!(sync.diff(&later), vec![Write::Put(room("a", RoomPhase::Open))]);
    }
}
