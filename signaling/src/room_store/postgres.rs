//! The definitions a cluster shares: table `room_definitions` in the PostgreSQL database the chat store uses, so
//! any node can restore a room whose node is gone. One connection (these are a few small writes a second at most),
//! opened again on the next call after an error; a call fails while PostgreSQL is away, and the caller retries
//! (the lifecycle job on its next tick, the admin API by answering 500 before `201 Created`).

use tokio::sync::Mutex;
use tokio_postgres::Client;

use courier_chat::postgres::{connect_client, PostgresConfig};

use super::{decode, phase_name, Mute, RoomStoreError, StoredRoom};

/// Created at first use, under an advisory lock so that nodes starting together create it once.
const SCHEMA: &str = r#"BEGIN;
SELECT pg_advisory_xact_lock(7165812693641520385);
CREATE TABLE IF NOT EXISTS room_definitions (
    name TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    options TEXT NOT NULL,
    phase TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_mutes (
    room TEXT COLLATE "C" NOT NULL,
    identity TEXT COLLATE "C" NOT NULL,
    until_ms BIGINT,
    PRIMARY KEY (room, identity)
);
COMMIT;"#;

const COLUMNS: &str = "name, options, phase, created_ms";

pub(super) struct PostgresRooms {
    url: String,
    config: PostgresConfig,
    client: Mutex<Option<Client>>,
}

impl PostgresRooms {
    /// Connect and create the table if needed.
    pub(super) async fn connect(url: &str, config: PostgresConfig) -> Result<PostgresRooms, RoomStoreError> {
        let rooms = PostgresRooms { url: url.to_string(), config, client: Mutex::new(None) };
        drop(rooms.client().await?);
        Ok(rooms)
    }

    /// The connection, opened (with the table) if there is none or it broke. Hold it for one statement and pass
    /// the result through [`done`], which drops a connection that failed.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, RoomStoreError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = None;
            let client = connect_client(&self.url, &self.config).await?;
            client.batch_execute(SCHEMA).await?;
            *slot = Some(client);
        }
        Ok(slot)
    }

    pub(super) async fn load(&self) -> Result<Vec<StoredRoom>, RoomStoreError> {
        let sql = format!("SELECT {COLUMNS} FROM room_definitions ORDER BY name");
        let mut c = self.client().await?;
        let rows = connected(&c).query(sql.as_str(), &[]).await;
        let rows = done(&mut c, rows)?;
        rows.iter().map(row).collect()
    }

    pub(super) async fn names(&self) -> Result<Vec<String>, RoomStoreError> {
        let mut c = self.client().await?;
        let rows = connected(&c).query("SELECT name FROM room_definitions ORDER BY name", &[]).await;
        let rows = done(&mut c, rows)?;
        Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    pub(super) async fn get(&self, name: &str) -> Result<Option<StoredRoom>, RoomStoreError> {
        let sql = format!("SELECT {COLUMNS} FROM room_definitions WHERE name = $1");
        let mut c = self.client().await?;
        let found = connected(&c).query_opt(sql.as_str(), &[&name]).await;
        let found = done(&mut c, found)?;
        found.as_ref().map(row).transpose()
    }

    pub(super) async fn put(&self, room: &StoredRoom) -> Result<(), RoomStoreError> {
        self.write(room, "DO UPDATE SET options = $2, phase = $3, created_ms = $4").await?;
        Ok(())
    }

    /// Insert `room` unless a room of that name is defined; `false` if one is.
    pub(super) async fn insert(&self, room: &StoredRoom) -> Result<bool, RoomStoreError> {
        Ok(self.write(room, "DO NOTHING").await? == 1)
    }

    /// Insert `room`, doing `on_conflict` if its name is defined; the rows written.
    async fn write(&self, room: &StoredRoom, on_conflict: &str) -> Result<u64, RoomStoreError> {
        let options = serde_json::to_string(&room.options).expect("room options serialize");
        let (phase, created) = (phase_name(room.phase).to_string(), room.created_ms as i64);
        let sql = format!(
            "INSERT INTO room_definitions (name, options, phase, created_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) {on_conflict}"
        );
        let mut c = self.client().await?;
        let written = connected(&c).execute(sql.as_str(), &[&room.name, &options, &phase, &created]).await;
        done(&mut c, written)
    }

    pub(super) async fn delete(&self, name: &str) -> Result<(), RoomStoreError> {
        let mut c = self.client().await?;
        let deleted = connected(&c).execute("DELETE FROM room_definitions WHERE name = $1", &[&name]).await;
        done(&mut c, deleted)?;
        let deleted = connected(&c).execute("DELETE FROM room_mutes WHERE room = $1", &[&name]).await;
        done(&mut c, deleted)?;
        Ok(())
    }

    pub(super) async fn set_mute(&self, mute: &Mute, muted: bool) -> Result<(), RoomStoreError> {
        let mut c = self.client().await?;
        let until = mute.until_ms.map(|u| u as i64);
        let written = if muted {
            connected(&c)
                .execute(
                    "INSERT INTO room_mutes (room, identity, until_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (room, identity) DO UPDATE SET until_ms = $3",
                    &[&mute.room, &mute.identity, &until],
                )
                .await
        } else {
            connected(&c)
                .execute("DELETE FROM room_mutes WHERE room = $1 AND identity = $2", &[&mute.room, &mute.identity])
                .await
        };
        done(&mut c, written)?;
        Ok(())
    }

    /// The mutes in force at `now_ms` (of `room`, or of every room).
    pub(super) async fn mutes(&self, room: Option<&str>, now_ms: u64) -> Result<Vec<Mute>, RoomStoreError> {
        let mut c = self.client().await?;
        let now = now_ms as i64;
        let rows = connected(&c)
            .query(
                "SELECT room, identity, until_ms FROM room_mutes
                 WHERE ($1::text IS NULL OR room = $1) AND (until_ms IS NULL OR until_ms > $2) ORDER BY room, identity",
                &[&room, &now],
            )
            .await;
        let rows = done(&mut c, rows)?;
        rows.iter()
            .map(|r| {
                Ok(Mute {
                    room: r.try_get(0)?,
                    identity: r.try_get(1)?,
                    until_ms: r.try_get::<_, Option<i64>>(2)?.map(|u| u.max(0) as u64),
                })
            })
            .collect()
    }
}

fn connected<'a>(slot: &'a Option<Client>) -> &'a Client {
    slot.as_ref().expect("PostgresRooms::client opened it")
}

/// A statement's result; a failed statement drops the connection (the next call opens another).
fn done<T>(slot: &mut Option<Client>, result: Result<T, tokio_postgres::Error>) -> Result<T, RoomStoreError> {
    if result.is_err() {
        *slot = None;
    }
    Ok(result?)
}

fn row(r: &tokio_postgres::Row) -> Result<StoredRoom, RoomStoreError> {
    decode(r.try_get(0)?, r.try_get::<_, &str>(1)?, r.try_get(2)?, r.try_get(3)?)
}
