//! The embedded SQLite chat store: durable history with no set-up, in one file under the data directory.
//!
//! # Concurrency
//!
//! SQLite allows one writer at a time, so one thread owns the only write connection. Callers send it requests
//! through a bounded channel; a full channel is [`StoreError::Overloaded`] at once, never an unbounded queue. The
//! writer takes the first request, drains whatever else is already queued (up to
//! [`SqliteConfig::max_group_messages`]) and runs all of it in one `BEGIN IMMEDIATE` transaction: it looks up
//! retries in the unique index, numbers new messages with the [`Sequencer`], inserts them, writes the conversations'
//! new heads, commits, and only then answers every request through its oneshot. This is group commit: one `fsync`
//! covers every message of the group, so throughput grows with load while every acknowledgement still follows a
//! durable commit. If anything in the group fails, the transaction rolls back, the sequencer forgets the group and
//! every request of the group gets the error; nothing of it was acknowledged.
//!
//! Reads (head, pages, replay) never wait for the writer: WAL mode lets them run on their own connections, kept in a
//! small pool and used from `spawn_blocking`. Each read runs in one read transaction, so a replay and the head it is
//! checked against come from the same snapshot.
//!
//! # Durability
//!
//! `journal_mode=WAL` with `synchronous=FULL`: a commit has reached the disk (the WAL is synced) before the
//! writer answers. The schema is versioned in `schema_version` and migrated at open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::sequencer::{ConversationState, DedupKey, Group, SequenceError, Sequencer};
use super::store::{
    Ack, AlertAck, AlertStatus, ChatStore, CommitListener, Head, MessageState, PageFrom, Receipt, Replay, Retention,
    StoreError, StoredMessage, Tombstone, Trimmed,
};
use super::writer::{now_ms, publish, writes_through_queue, Command, ListenerSlot, Outcome, Request, WriterQueue};
use super::{ConversationId, Flags, Limits, NewMessage, Priority};

/// The file name of the database inside the data directory.
pub const FILE_NAME: &str = "chat.sqlite3";

/// Tuning of the SQLite store. The defaults suit one server.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub limits: Limits,
    /// Requests waiting for the writer before callers get [`StoreError::Overloaded`].
    pub queue_capacity: usize,
    /// Most messages in one [`ChatStore::append`] call.
    pub max_batch: usize,
    /// The writer stops draining the queue into one transaction at this many messages.
    pub max_group_messages: usize,
    /// Recent acknowledgements kept to answer retries without a lookup.
    pub dedup_cache: usize,
    /// Largest page.
    pub max_page: usize,
    /// Largest replay ([`ChatStore::range`]).
    pub max_replay: u64,
    /// Idle read connections kept open.
    pub read_connections: usize,
    /// How long a connection waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            limits: Limits::default(),
            queue_capacity: 1024,
            max_batch: 1000,
            max_group_messages: 4096,
            dedup_cache: 16 * 1024,
            max_page: 1000,
            max_replay: 10_000,
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The schema, one entry per version; entry `i` takes the database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: conversations and messages.
    "CREATE TABLE conversations (
        id TEXT NOT NULL PRIMARY KEY,
        epoch INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_time_ms INTEGER NOT NULL
    );
    CREATE TABLE messages (
        conversation TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sender TEXT NOT NULL,
        client_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT,
        flags INTEGER NOT NULL,
        mentions TEXT,
        priority INTEGER NOT NULL,
        server_time_ms INTEGER NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (conversation, seq)
    );
    CREATE UNIQUE INDEX messages_client_id ON messages (conversation, sender, client_id);
    CREATE INDEX messages_sender ON messages (sender);",
    // 2: receipts and must-acknowledge alerts.
    "CREATE TABLE receipts (
        conversation TEXT NOT NULL,
        identity TEXT NOT NULL,
        delivered_seq INTEGER NOT NULL,
        read_seq INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (conversation, identity)
    );
    CREATE INDEX receipts_identity ON receipts (identity);
    CREATE TABLE alerts (
        conversation TEXT NOT NULL,
        seq INTEGER NOT NULL,
        identity TEXT NOT NULL,
        acked_ms INTEGER,
        PRIMARY KEY (conversation, seq, identity)
    );
    CREATE INDEX alerts_pending ON alerts (identity, conversation, seq) WHERE acked_ms IS NULL;",
];

const FLAG_MUST_ACK: i64 = 1;
const FLAG_MENTION_ALL: i64 = 2;
/// Set when a message does not count toward unread (so rows from before the flag existed count).
const FLAG_NOT_COUNTED: i64 = 4;

const MESSAGE_COLUMNS: &str = "seq, sender, client_id, kind, payload, flags, mentions, priority, server_time_ms, state";

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Arc::new(e))
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

/// A `u64` as an SQLite integer; values past `i64::MAX` (only ever bounds from callers) saturate.
fn sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An SQLite integer that must be a `u64`.
fn unsql(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Inconsistent(format!("negative {what}")))
}

/// The SQLite [`ChatStore`]. Cheap to share behind an `Arc`; dropping it lets the writer finish what is queued and
/// stop. [`SqliteStore::close`] does the same and waits for it.
pub struct SqliteStore {
    queue: WriterQueue,
    readers: Arc<ReadPool>,
    config: SqliteConfig,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.readers.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The database path inside `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Open (creating and migrating if needed) the database at `path` and start its writer thread.
    pub async fn open(path: impl Into<PathBuf>, config: SqliteConfig) -> Result<SqliteStore, StoreError> {
        let path = path.into();
        let (queue, rx) = WriterQueue::new(config.queue_capacity, config.limits, config.max_batch);
        let (ready_tx, ready_rx) = oneshot::channel();
        let writer_path = path.clone();
        let writer_config = config.clone();
        let writer_listener = queue.listener.clone();
        let handle = std::thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || {
                let conn = match open_writer(&writer_path, &writer_config) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run_writer(conn, rx, &writer_config, &writer_listener);
            })
            .map_err(backend)?;
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StoreError::Closed),
        }
        let readers = Arc::new(ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: config.read_connections,
            busy_timeout: config.busy_timeout,
        });
        Ok(SqliteStore { queue, readers, config, writer: Mutex::new(Some(handle)) })
    }

    /// Finish what is queued, stop the writer and wait for it. Later calls fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.queue.close().await;
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            let result = f(&mut conn);
            if !matches!(result, Err(StoreError::Backend(_))) {
                pool.put(conn);
            }
            result
        })
        .await
        .map_err(backend)?
    }
}

impl ChatStore for SqliteStore {
    writes_through_queue!();

    fn head(&self, conversation: &ConversationId) -> BoxFuture<'_, Result<Option<Head>, StoreError>> {
        let conversation = conversation.clone();
        Box::pin(self.read(move |conn| read_head(conn, &conversation)))
    }

    fn page(
        &self,
        conversation: &ConversationId,
        from: PageFrom,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredMessage>, StoreError>> {
        let conversation = conversation.clone();
        let max = self.config.max_page;
        Box::pin(async move {
            if limit > max {
                return Err(StoreError::TooLarge { what: "page", len: limit as u64, max: max as u64 });
            }
            if limit == 0 {
                return Ok(Vec::new());
            }
            self.read(move |conn| read_page(conn, &conversation, from, limit)).await
        })
    }

    fn range(
        &self,
        conversation: &ConversationId,
        after_seq: u64,
        up_to_seq: u64,
    ) -> BoxFuture<'_, Result<Replay, StoreError>> {
        let conversation = conversation.clone();
        let max = self.config.max_replay;
        Box::pin(self.read(move |conn| read_range(conn, &conversation, after_seq, up_to_seq, max)))
    }

    fn receipts(&self, conversation: &ConversationId, limit: usize) -> BoxFuture<'_, Result<Vec<Receipt>, StoreError>> {
        let conversation = conversation.clone();
        let limit = limit.min(self.config.max_page);
        Box::pin(self.read(move |conn| read_receipts(conn, &conversation, limit)))
    }

    fn unread(&self, conversation: &ConversationId, identity: &str) -> BoxFuture<'_, Result<u64, StoreError>> {
        let (conversation, identity) = (conversation.clone(), identity.to_string());
        Box::pin(self.read(move |conn| read_unread(conn, &conversation, &identity)))
    }

    fn alert_status(
        &self,
        conversation: &ConversationId,
        seq: u64,
    ) -> BoxFuture<'_, Result<Option<AlertStatus>, StoreError>> {
        let conversation = conversation.clone();
        Box::pin(self.read(move |conn| read_alert_status(conn, &conversation, seq)))
    }

    fn conversations(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ConversationId>, StoreError>> {
        let after = after.map(|c| c.as_str().to_string()).unwrap_or_default();
        let limit = limit.min(self.config.max_page);
        Box::pin(self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT id FROM conversations WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows = stmt.query_map(params![after, sql(limit as u64)], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for id in rows {
                let id = id?;
                out.push(
                    ConversationId::parse(&id)
                        .map_err(|_| StoreError::Inconsistent(format!("bad conversation id {id:?}")))?,
                );
            }
            Ok(out)
        }))
    }

    fn pending_alerts(&self, identity: &str, limit: usize) -> BoxFuture<'_, Result<Vec<StoredMessage>, StoreError>> {
        let identity = identity.to_string();
        let limit = limit.min(self.config.max_page);
        Box::pin(self.read(move |conn| read_pending_alerts(conn, &identity, limit)))
    }
}

// ---- opening ----

fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!("journal_mode is {mode}, WAL is required")));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if synchronous != 2 {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "synchronous is {synchronous}, FULL (2) is required"
        )));
    }
    Ok(())
}

fn open_writer(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(backend)?;
    }
    let mut conn = Connection::open(path)?;
    configure(&conn, config.busy_timeout)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_ms INTEGER NOT NULL)",
    )?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).map_err(|_| StoreError::Inconsistent("negative schema version".into()))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Inconsistent(format!(
            "database schema version {current} is newer than this server's {}",
            MIGRATIONS.len()
        )));
    }
    for (i, sql_text) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql_text)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_ms) VALUES (?1, ?2)",
            params![sql(i as u64 + 1), sql(now_ms())],
        )?;
    }
    tx.commit()?;
    Ok(())
}

// ---- the writer ----

fn run_writer(mut conn: Connection, mut rx: mpsc::Receiver<Command>, config: &SqliteConfig, listener: &ListenerSlot) {
    let mut sequencer = Sequencer::new(config.dedup_cache);
    while let Some(first) = rx.blocking_recv() {
        let mut messages = first.request.messages();
        let mut closing = matches!(first.request, Request::Close);
        let mut group = vec![first];
        while messages < config.max_group_messages && !closing {
            match rx.try_recv() {
                Ok(cmd) => {
                    messages += cmd.request.messages();
                    closing = matches!(cmd.request, Request::Close);
                    group.push(cmd);
                }
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<Request>, Vec<_>) = group.into_iter().map(|c| (c.request, c.reply)).unzip();
        match execute(&mut conn, &mut sequencer, requests, now_ms()) {
            Ok((outcomes, committed)) => {
                publish(listener, &committed);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, requests = replies.len(), "chat write group failed");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        if closing {
            break;
        }
    }
}

/// Run one group in one transaction; on success the outcomes match `requests` one to one, followed by the newly
/// stored messages in commit order.
fn execute(
    conn: &mut Connection,
    sequencer: &mut Sequencer,
    requests: Vec<Request>,
    now_ms: u64,
) -> Result<(Vec<Outcome>, Vec<StoredMessage>), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut group = sequencer.begin();
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut committed = Vec::new();
    for request in requests {
        let outcome = match request {
            Request::Append(batch) => Outcome::Acks(append(&tx, &mut group, batch, now_ms, &mut committed)?),
            Request::Receipt { conversation, identity, delivered, read } => {
                Outcome::Receipt(set_receipt(&tx, &mut group, &conversation, &identity, delivered, read, now_ms)?)
            }
            Request::AckAlert { conversation, seq, identity } => {
                Outcome::AlertAck(ack_alert(&tx, &conversation, seq, &identity, now_ms)?)
            }
            Request::Tombstone { conversation, seq, change } => {
                Outcome::Changed(tombstone(&tx, &conversation, seq, change)?)
            }
            Request::Trim { conversation, retention, now_ms } => {
                Outcome::Trimmed(trim(&tx, &mut group, &conversation, retention, now_ms)?)
            }
            Request::EraseIdentity(identity) => Outcome::Count(erase_identity(&tx, &identity)?),
            Request::Close => Outcome::Closed,
        };
        outcomes.push(outcome);
    }
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO conversations (id, epoch, last_seq, first_seq, last_time_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, last_seq = excluded.last_seq,
                 first_seq = excluded.first_seq, last_time_ms = excluded.last_time_ms",
        )?;
        for (id, s) in group.changed() {
            stmt.execute(params![id.as_str(), sql(s.epoch), sql(s.last_seq), sql(s.first_seq), sql(s.last_time_ms)])?;
        }
    }
    tx.commit()?;
    group.commit();
    Ok((outcomes, committed))
}

fn sequence_error(e: SequenceError) -> StoreError {
    match e {
        SequenceError::Exhausted(c) => StoreError::SequenceExhausted(c),
        e @ SequenceError::NotLoaded(_) => StoreError::Inconsistent(e.to_string()),
    }
}

fn select_state(tx: &Transaction<'_>, conversation: &ConversationId) -> Result<Option<ConversationState>, StoreError> {
    let row = tx
        .prepare_cached("SELECT epoch, last_seq, first_seq, last_time_ms FROM conversations WHERE id = ?1")?
        .query_row([conversation.as_str()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
        })
        .optional()?;
    row.map(|(epoch, last_seq, first_seq, last_time_ms)| {
        Ok(ConversationState {
            epoch: unsql(epoch, "epoch")?,
            last_seq: unsql(last_seq, "last_seq")?,
            first_seq: unsql(first_seq, "first_seq")?,
            last_time_ms: unsql(last_time_ms, "last_time_ms")?,
        })
    })
    .transpose()
}

/// Load `conversation` into the group, creating it (with a new random epoch) if it does not exist.
fn load_or_create(
    tx: &Transaction<'_>,
    group: &mut Group<'_>,
    conversation: &ConversationId,
) -> Result<(), StoreError> {
    if !group.is_loaded(conversation) {
        match select_state(tx, conversation)? {
            Some(state) => group.load(conversation.clone(), state, false),
            None => group.load(conversation.clone(), ConversationState::new(rand::random()), true),
        }
    }
    Ok(())
}

fn append(
    tx: &Transaction<'_>,
    group: &mut Group<'_>,
    batch: Vec<NewMessage>,
    now_ms: u64,
    committed: &mut Vec<StoredMessage>,
) -> Result<Vec<Ack>, StoreError> {
    let mut acks = Vec::with_capacity(batch.len());
    let mut lookup = tx.prepare_cached(
        "SELECT seq, server_time_ms FROM messages WHERE conversation = ?1 AND sender = ?2 AND client_id = ?3",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO messages (conversation, seq, sender, client_id, kind, payload, flags, mentions, priority,
             server_time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for m in batch {
        let key = DedupKey { conversation: m.conversation, sender: m.sender, client_id: m.client_id };
        if let Some(ack) = group.duplicate(&key) {
            acks.push(ack);
            continue;
        }
        load_or_create(tx, group, &key.conversation)?;
        let found = lookup
            .query_row(params![key.conversation.as_str(), key.sender, key.client_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?;
        if let Some((seq, time)) = found {
            let epoch = group
                .state(&key.conversation)
                .map(|s| s.epoch)
                .ok_or_else(|| StoreError::Inconsistent(format!("conversation {} not loaded", key.conversation)))?;
            let ack = Ack {
                conversation: key.conversation.clone(),
                seq: unsql(seq, "seq")?,
                epoch,
                server_time_ms: unsql(time, "server_time_ms")?,
                duplicate: true,
            };
            group.remember(key, ack.clone());
            acks.push(ack);
            continue;
        }
        let mut flags = 0;
        if m.flags.must_ack {
            flags |= FLAG_MUST_ACK;
        }
        if m.flags.mention_all {
            flags |= FLAG_MENTION_ALL;
        }
        if !m.flags.counted {
            flags |= FLAG_NOT_COUNTED;
        }
        let mentions = if m.flags.mentions.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&m.flags.mentions).map_err(backend)?)
        };
        let conversation = key.conversation.clone();
        let (sender, client_id) = (key.sender.clone(), key.client_id.clone());
        let ack = group.assign(key, now_ms).map_err(sequence_error)?;
        insert.execute(params![
            conversation.as_str(),
            sql(ack.seq),
            sender,
            client_id,
            m.kind,
            m.payload,
            flags,
            mentions,
            m.flags.priority.code(),
            sql(ack.server_time_ms),
        ])?;
        if let Some(amend) = m.amends {
            if amend.seq < ack.seq {
                tombstone(tx, &conversation, amend.seq, amend.change)?;
            }
        }
        if !m.alert_to.is_empty() {
            let mut alert = tx.prepare_cached(
                "INSERT OR IGNORE INTO alerts (conversation, seq, identity, acked_ms) VALUES (?1, ?2, ?3, NULL)",
            )?;
            for identity in &m.alert_to {
                alert.execute(params![conversation.as_str(), sql(ack.seq), identity])?;
            }
        }
        committed.push(StoredMessage {
            conversation,
            seq: ack.seq,
            sender,
            client_id,
            kind: m.kind,
            payload: Some(m.payload),
            flags: m.flags,
            server_time_ms: ack.server_time_ms,
            state: MessageState::Normal,
        });
        acks.push(ack);
    }
    Ok(acks)
}

fn tombstone(
    tx: &Transaction<'_>,
    conversation: &ConversationId,
    seq: u64,
    change: Tombstone,
) -> Result<bool, StoreError> {
    let (normal, edited) = (MessageState::Normal.code(), MessageState::Edited.code());
    let changed = match change {
        Tombstone::Recall => tx.execute(
            "UPDATE messages SET payload = NULL, state = ?3 WHERE conversation = ?1 AND seq = ?2 AND state IN (?4, ?5)",
            params![conversation.as_str(), sql(seq), MessageState::Recalled.code(), normal, edited],
        )?,
        Tombstone::Edit { payload } => tx.execute(
            "UPDATE messages SET payload = ?3, state = ?4 WHERE conversation = ?1 AND seq = ?2 AND state IN (?5, ?6)",
            params![conversation.as_str(), sql(seq), payload, edited, normal, edited],
        )?,
        Tombstone::Erase => tx.execute(
            "UPDATE messages SET payload = NULL, state = ?3 WHERE conversation = ?1 AND seq = ?2 AND state != ?3",
            params![conversation.as_str(), sql(seq), MessageState::Erased.code()],
        )?,
    };
    Ok(changed > 0)
}

fn trim(
    tx: &Transaction<'_>,
    group: &mut Group<'_>,
    conversation: &ConversationId,
    retention: Retention,
    now_ms: u64,
) -> Result<Option<Trimmed>, StoreError> {
    if !group.is_loaded(conversation) {
        match select_state(tx, conversation)? {
            Some(state) => group.load(conversation.clone(), state, false),
            None => return Ok(None),
        }
    }
    let Some(&state) = group.state(conversation) else {
        return Err(StoreError::Inconsistent(format!("conversation {conversation} not loaded")));
    };
    let mut cutoff = state.first_seq;
    if let Some(max_count) = retention.max_count {
        cutoff = cutoff.max(state.last_seq.saturating_sub(max_count) + 1);
    }
    if let Some(max_age) = retention.max_age_ms {
        // Server time never decreases along the sequence, so the old messages are a prefix.
        let oldest_kept: Option<i64> = tx
            .prepare_cached(
                "SELECT seq FROM messages WHERE conversation = ?1 AND server_time_ms >= ?2 ORDER BY seq LIMIT 1",
            )?
            .query_row(params![conversation.as_str(), sql(now_ms.saturating_sub(max_age))], |r| r.get(0))
            .optional()?;
        let age_cutoff = match oldest_kept {
            Some(seq) => unsql(seq, "seq")?,
            None => state.last_seq + 1,
        };
        cutoff = cutoff.max(age_cutoff);
    }
    let mut removed = 0;
    if cutoff > state.first_seq {
        removed = tx.execute(
            "DELETE FROM messages WHERE conversation = ?1 AND seq < ?2",
            params![conversation.as_str(), sql(cutoff)],
        )? as u64;
        tx.execute(
            "DELETE FROM alerts WHERE conversation = ?1 AND seq < ?2",
            params![conversation.as_str(), sql(cutoff)],
        )?;
        if let Some(s) = group.state_mut(conversation) {
            s.first_seq = cutoff;
        }
    }
    Ok(Some(Trimmed { removed, first_seq: cutoff }))
}

fn erase_identity(tx: &Transaction<'_>, identity: &str) -> Result<u64, StoreError> {
    let n = tx.execute(
        "UPDATE messages SET payload = NULL, state = ?2 WHERE sender = ?1 AND state != ?2",
        params![identity, MessageState::Erased.code()],
    )?;
    tx.execute("DELETE FROM receipts WHERE identity = ?1", [identity])?;
    tx.execute("DELETE FROM alerts WHERE identity = ?1", [identity])?;
    Ok(n as u64)
}

fn set_receipt(
    tx: &Transaction<'_>,
    group: &mut Group<'_>,
    conversation: &ConversationId,
    identity: &str,
    delivered: u64,
    read: u64,
    now_ms: u64,
) -> Result<Option<Receipt>, StoreError> {
    if !group.is_loaded(conversation) {
        match select_state(tx, conversation)? {
            Some(state) => group.load(conversation.clone(), state, false),
            None => return Ok(None),
        }
    }
    let last = group.state(conversation).map_or(0, |s| s.last_seq);
    let read = read.min(last);
    let delivered = delivered.min(last).max(read);
    let (delivered, read): (i64, i64) = tx
        .prepare_cached(
            "INSERT INTO receipts (conversation, identity, delivered_seq, read_seq, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (conversation, identity) DO UPDATE SET
                 delivered_seq = MAX(delivered_seq, excluded.delivered_seq),
                 read_seq = MAX(read_seq, excluded.read_seq),
                 updated_ms = excluded.updated_ms
             RETURNING delivered_seq, read_seq",
        )?
        .query_row(params![conversation.as_str(), identity, sql(delivered), sql(read), sql(now_ms)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(Some(Receipt {
        identity: identity.to_string(),
        delivered: unsql(delivered, "delivered_seq")?,
        read: unsql(read, "read_seq")?,
    }))
}

fn ack_alert(
    tx: &Transaction<'_>,
    conversation: &ConversationId,
    seq: u64,
    identity: &str,
    now_ms: u64,
) -> Result<AlertAck, StoreError> {
    let row: Option<Option<i64>> = tx
        .prepare_cached("SELECT acked_ms FROM alerts WHERE conversation = ?1 AND seq = ?2 AND identity = ?3")?
        .query_row(params![conversation.as_str(), sql(seq), identity], |r| r.get(0))
        .optional()?;
    match row {
        None => Ok(AlertAck::NotAsked),
        Some(Some(at)) => Ok(AlertAck::AlreadyAcked { at_ms: unsql(at, "acked_ms")? }),
        Some(None) => {
            tx.prepare_cached(
                "UPDATE alerts SET acked_ms = ?4 WHERE conversation = ?1 AND seq = ?2 AND identity = ?3",
            )?
            .execute(params![conversation.as_str(), sql(seq), identity, sql(now_ms)])?;
            Ok(AlertAck::Acked { at_ms: now_ms })
        }
    }
}

// ---- reads ----

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    busy_timeout: Duration,
}

impl ReadPool {
    fn get(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
    }
}

fn read_head(conn: &Connection, conversation: &ConversationId) -> Result<Option<Head>, StoreError> {
    let row = conn
        .prepare_cached("SELECT epoch, last_seq, first_seq FROM conversations WHERE id = ?1")?
        .query_row([conversation.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
        .optional()?;
    row.map(|(epoch, last_seq, first_seq)| {
        Ok(Head {
            epoch: unsql(epoch, "epoch")?,
            last_seq: unsql(last_seq, "last_seq")?,
            first_seq: unsql(first_seq, "first_seq")?,
        })
    })
    .transpose()
}

type RawRow = (i64, String, String, String, Option<String>, i64, Option<String>, i64, i64, i64);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

fn decode(conversation: &ConversationId, row: RawRow) -> Result<StoredMessage, StoreError> {
    let (seq, sender, client_id, kind, payload, flags, mentions, priority, time, state) = row;
    let mentions = match mentions {
        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Inconsistent("bad mentions".into()))?,
        None => Vec::new(),
    };
    let priority = u8::try_from(priority)
        .ok()
        .and_then(Priority::from_code)
        .ok_or_else(|| StoreError::Inconsistent(format!("bad priority {priority}")))?;
    let state = u8::try_from(state)
        .ok()
        .and_then(MessageState::from_code)
        .ok_or_else(|| StoreError::Inconsistent(format!("bad state {state}")))?;
    Ok(StoredMessage {
        conversation: conversation.clone(),
        seq: unsql(seq, "seq")?,
        sender,
        client_id,
        kind,
        payload,
        flags: Flags {
            must_ack: flags & FLAG_MUST_ACK != 0,
            mention_all: flags & FLAG_MENTION_ALL != 0,
            mentions,
            priority,
            counted: flags & FLAG_NOT_COUNTED == 0,
        },
        server_time_ms: unsql(time, "server_time_ms")?,
        state,
    })
}

fn query_messages(
    conn: &Connection,
    conversation: &ConversationId,
    sql_text: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(sql_text)?;
    let rows = stmt.query_map(params, raw_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(conversation, row?)?);
    }
    Ok(out)
}

fn read_page(
    conn: &mut Connection,
    conversation: &ConversationId,
    from: PageFrom,
    limit: usize,
) -> Result<Vec<StoredMessage>, StoreError> {
    let c = conversation.as_str();
    let limit = sql(limit as u64);
    let mut messages = match from {
        PageFrom::Before(seq) => query_messages(
            conn,
            conversation,
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ),
            params![c, sql(seq), limit],
        )?,
        PageFrom::After(seq) => {
            return query_messages(
                conn,
                conversation,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ),
                params![c, sql(seq), limit],
            )
        }
        PageFrom::Latest => query_messages(
            conn,
            conversation,
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 ORDER BY seq DESC LIMIT ?2"),
            params![c, limit],
        )?,
    };
    messages.reverse();
    Ok(messages)
}

fn read_range(
    conn: &mut Connection,
    conversation: &ConversationId,
    after_seq: u64,
    up_to_seq: u64,
    max_replay: u64,
) -> Result<Replay, StoreError> {
    // One read transaction: the head and the rows come from the same snapshot.
    let tx = conn.transaction()?;
    let Some(head) = read_head(&tx, conversation)? else {
        return Ok(Replay::UnknownConversation);
    };
    let up_to = up_to_seq.min(head.last_seq);
    if after_seq >= up_to {
        return Ok(Replay::Messages { epoch: head.epoch, messages: Vec::new() });
    }
    if after_seq + 1 < head.first_seq {
        return Ok(Replay::NotRecovered { epoch: head.epoch, first_seq: head.first_seq });
    }
    let want = up_to - after_seq;
    if want > max_replay {
        return Err(StoreError::TooLarge { what: "replay", len: want, max: max_replay });
    }
    let messages = query_messages(
        &tx,
        conversation,
        &format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq"
        ),
        params![conversation.as_str(), sql(after_seq), sql(up_to)],
    )?;
    let contiguous = messages.iter().zip(after_seq + 1..).all(|(m, expected)| m.seq == expected);
    if messages.len() as u64 != want || !contiguous {
        return Err(StoreError::Inconsistent(format!(
            "{conversation}: replay of {}..={up_to} found {} messages",
            after_seq + 1,
            messages.len()
        )));
    }
    tx.finish()?;
    Ok(Replay::Messages { epoch: head.epoch, messages })
}

fn read_receipts(
    conn: &mut Connection,
    conversation: &ConversationId,
    limit: usize,
) -> Result<Vec<Receipt>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT identity, delivered_seq, read_seq FROM receipts WHERE conversation = ?1 ORDER BY identity LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![conversation.as_str(), sql(limit as u64)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (identity, delivered, read) = row?;
        out.push(Receipt { identity, delivered: unsql(delivered, "delivered_seq")?, read: unsql(read, "read_seq")? });
    }
    Ok(out)
}

fn read_unread(conn: &mut Connection, conversation: &ConversationId, identity: &str) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM messages WHERE conversation = ?1 AND sender != ?2 AND (flags & ?3) = 0
                 AND state IN (?4, ?5)
                 AND seq > COALESCE((SELECT read_seq FROM receipts WHERE conversation = ?1 AND identity = ?2), 0)",
        )?
        .query_row(
            params![
                conversation.as_str(),
                identity,
                FLAG_NOT_COUNTED,
                MessageState::Normal.code(),
                MessageState::Edited.code()
            ],
            |r| r.get(0),
        )?;
    unsql(n, "count")
}

fn read_alert_status(
    conn: &mut Connection,
    conversation: &ConversationId,
    seq: u64,
) -> Result<Option<AlertStatus>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT identity, acked_ms FROM alerts WHERE conversation = ?1 AND seq = ?2 ORDER BY identity",
    )?;
    let rows = stmt.query_map(params![conversation.as_str(), sql(seq)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
    })?;
    let mut status = AlertStatus::default();
    let mut any = false;
    for row in rows {
        any = true;
        match row? {
            (identity, Some(at)) => status.acked.push((identity, unsql(at, "acked_ms")?)),
            (identity, None) => status.pending.push(identity),
        }
    }
    Ok(any.then_some(status))
}

fn read_pending_alerts(conn: &mut Connection, identity: &str, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
    let tx = conn.transaction()?;
    let keys: Vec<(String, i64)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT conversation, seq FROM alerts WHERE identity = ?1 AND acked_ms IS NULL
                 ORDER BY conversation, seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![identity, sql(limit as u64)], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(keys.len());
    for (conversation, seq) in keys {
        let conversation = ConversationId::parse(&conversation)
            .map_err(|_| StoreError::Inconsistent(format!("bad conversation id {conversation:?}")))?;
        out.extend(query_messages(
            &tx,
            &conversation,
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = ?1 AND seq = ?2"),
            params![conversation.as_str(), seq],
        )?);
    }
    out.sort_by_key(|m| m.server_time_ms);
    tx.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests;
