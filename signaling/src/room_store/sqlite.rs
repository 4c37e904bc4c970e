//! The definitions on one node: `rooms.sqlite3` in the data directory (SQLite, WAL, `synchronous=FULL`, so a write
//! is on disk when it returns). Calls block: the [`super::RoomStore`] runs them on `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{decode, phase_name, Mute, RoomStoreError, StoredRoom};

/// The file in the data directory.
pub const FILE_NAME: &str = "rooms.sqlite3";

pub(super) struct SqliteRooms {
    conn: Mutex<Connection>,
}

impl SqliteRooms {
    /// The store's path in a data directory.
    pub(super) fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Open (creating if needed) the store at `path`.
    pub(super) fn open(path: &Path) -> Result<SqliteRooms, RoomStoreError> {
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
            );
            CREATE TABLE IF NOT EXISTS mutes (
                room TEXT NOT NULL,
                identity TEXT NOT NULL,
                until_ms INTEGER,
                PRIMARY KEY (room, identity)
            )",
        )?;
        Ok(SqliteRooms { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every kept room, by name.
    pub(super) fn load(&self) -> Result<Vec<StoredRoom>, RoomStoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, options, phase, created_ms FROM rooms ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, options, phase, created_ms) = row?;
            out.push(decode(name, &options, phase, created_ms)?);
        }
        Ok(out)
    }

    pub(super) fn get(&self, name: &str) -> Result<Option<StoredRoom>, RoomStoreError> {
        let row = self
            .conn()
            .query_row("SELECT name, options, phase, created_ms FROM rooms WHERE name = ?1", params![name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })
            .optional()?;
        row.map(|(name, options, phase, created_ms)| decode(name, &options, phase, created_ms)).transpose()
    }

    pub(super) fn put(&self, room: &StoredRoom) -> Result<(), RoomStoreError> {
        let options = serde_json::to_string(&room.options).expect("room options serialize");
        self.conn().execute(
            "INSERT INTO rooms (name, options, phase, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET options = ?2, phase = ?3, created_ms = ?4",
            params![room.name, options, phase_name(room.phase), room.created_ms as i64],
        )?;
        Ok(())
    }

    pub(super) fn delete(&self, name: &str) -> Result<(), RoomStoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM rooms WHERE name = ?1", params![name])?;
        conn.execute("DELETE FROM mutes WHERE room = ?1", params![name])?;
        Ok(())
    }

    pub(super) fn set_mute(&self, mute: &Mute, muted: bool) -> Result<(), RoomStoreError> {
        let conn = self.conn();
        if muted {
            conn.execute(
                "INSERT INTO mutes (room, identity, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(room, identity) DO UPDATE SET until_ms = ?3",
                params![mute.room, mute.identity, mute.until_ms.map(|u| u as i64)],
            )?;
        } else {
            conn.execute("DELETE FROM mutes WHERE room = ?1 AND identity = ?2", params![mute.room, mute.identity])?;
        }
        Ok(())
    }

    /// The mutes in force at `now_ms` (of `room`, or of every room); expired ones are deleted.
    pub(super) fn mutes(&self, room: Option<&str>, now_ms: u64) -> Result<Vec<Mute>, RoomStoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM mutes WHERE until_ms IS NOT NULL AND until_ms <= ?1", params![now_ms as i64])?;
        let mut stmt = conn.prepare(
            "SELECT room, identity, until_ms FROM mutes WHERE ?1 IS NULL OR room = ?1 ORDER BY room, identity",
        )?;
        let rows = stmt.query_map(params![room], |r| {
            Ok(Mute {
                room: r.get(0)?,
                identity: r.get(1)?,
                until_ms: r.get::<_, Option<i64>>(2)?.map(|u| u.max(0) as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
