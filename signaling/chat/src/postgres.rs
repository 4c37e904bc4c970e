//! The PostgreSQL chat store: the same history as the [SQLite store](super::sqlite), in a database that several
//! Courier servers share, so a cluster of servers keeps one order per conversation.
//!
//! # Concurrency
//!
//! Within one server it works like the SQLite store. One writer task owns the only write connection. Callers send
//! it requests through a bounded channel; a full channel is [`StoreError::Overloaded`] at once, never an unbounded
//! queue. The writer takes the first request, drains whatever else is already queued (up to
//! [`PostgresConfig::max_group_messages`]) and runs all of it in one transaction: it looks up retries in the unique
//! index, numbers new messages with the [`Sequencer`], inserts them, writes the conversations' new heads, commits,
//! hands the newly stored messages to the [`CommitListener`], and only then answers every request through its
//! oneshot. This is group commit: one WAL flush covers every message of the group. If anything in the group fails,
//! the transaction rolls back, the sequencer forgets the group and every request of the group gets the error.
//!
//! Across servers, a conversation's row is its lock. Before it sequences anything, a group locks every conversation
//! it will touch, in one order for everyone (by id): `INSERT … ON CONFLICT DO NOTHING` for conversations an append
//! may create, then `SELECT … FOR UPDATE`, which waits for any other server's transaction holding the row and then
//! reads the head that transaction committed. Every row the group writes afterwards (messages, receipts, alerts)
//! belongs to a conversation it holds. So servers appending to one conversation take turns, each continuing from
//! the number the last one committed: numbers stay contiguous and follow commit order, and the retry lookup, made
//! under the lock, sees every committed message. Because everyone locks in the same order, two groups never wait
//! for each other in a cycle; should PostgreSQL still report a deadlock or a serialization failure, the group is
//! rolled back and run again from the start. The idempotency cache stays a shortcut that is right with several
//! servers too, because a committed acknowledgement never changes; the unique index on
//! `(conversation, sender, client_id)` remains the truth.
//!
//! A group costs three round trips, however many messages it holds: `BEGIN`, the locks and the retry lookup go
//! out as one pipeline; then the inserts (one `unnest` statement per table) and the new heads; then `COMMIT`.
//!
//! Reads (head, pages, replay, receipts, unread counts, alerts) never wait for the writer: they run on a small pool
//! of connections of their own, with prepared statements. A replay runs in one `REPEATABLE READ` read-only
//! transaction, so the head it is checked against and its rows come from the same snapshot.
//!
//! # Durability
//!
//! A commit is durable once PostgreSQL answers it, given `synchronous_commit` is not `off` and `fsync` is on: the
//! store refuses to connect otherwise, as the SQLite store refuses anything but `synchronous=FULL`. The schema is
//! versioned in `schema_version` and migrated at connect, under a transaction-scoped advisory lock so that servers
//! starting together migrate once.
//!
//! The listener hears the messages this server committed; members connected to other servers learn of them through
//! replay (or a cross-server fan-out, which is not this module's business).
//!
//! # TLS
//!
//! The URL's `sslmode` decides ([`TlsMode`]): `disable` or none at all, plain TCP (keep the database on a trusted
//! network); `prefer`, TLS when the server offers it; `require` (or libpq's `verify-ca`, `verify-full`), TLS or no
//! connection. TLS is rustls on the `ring`
//! provider, and the server's certificate must chain to [`PostgresConfig::tls_roots`] and name the host, as
//! libpq's `verify-full` would check (so `prefer` against a server with an untrusted certificate fails rather than
//! falling back to plain TCP).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::future::{BoxFuture, MaybeDone};
use futures::TryStreamExt;
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sequencer::{epoch_from_random, ConversationState, DedupKey, Group, SequenceError, Sequencer};
use super::store::{
    Ack, AlertAck, AlertStatus, ChatStore, CommitListener, Head, MessageState, PageFrom, Receipt, Replay, Retention,
    StoreError, StoredMessage, Tombstone, Trimmed,
};
use super::writer::{now_ms, publish, writes_through_queue, Command, ListenerSlot, Outcome, Request, WriterQueue};
use super::{ConversationId, Flags, Limits, NewMessage, Priority};

/// Tuning of the PostgreSQL store. The fields shared with [`super::sqlite::SqliteConfig`] mean the same.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
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
    /// The read pool: at most this many read connections at once, kept open once made.
    pub read_connections: usize,
    /// How long the writer waits for a conversation another server holds before its group fails (zero: no limit).
    pub lock_timeout: Duration,
    /// How long opening a connection may take, unless the URL sets `connect_timeout`.
    pub connect_timeout: Duration,
    /// The certificates TLS to the database trusts (`sslmode=prefer|require`); `None`: the Mozilla roots.
    pub tls_roots: Option<Arc<rustls::RootCertStore>>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            limits: Limits::default(),
            queue_capacity: 1024,
            max_batch: 1000,
            max_group_messages: 4096,
            dedup_cache: 16 * 1024,
            max_page: 1000,
            max_replay: 10_000,
            read_connections: 4,
            lock_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            tls_roots: None,
        }
    }
}

/// Whether the store's connections use TLS: the URL's `sslmode` (see the module doc, "TLS").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// `sslmode=disable`, or no `sslmode`: plain TCP.
    Off,
    /// `sslmode=prefer`: TLS if the server offers it, plain TCP if it does not.
    Prefer,
    /// `sslmode=require`: TLS, or no connection.
    Require,
}

impl TlsMode {
    /// The mode `url` asks for (either form: `postgres://…?sslmode=require` or `host=… sslmode=require`). A URL
    /// without `sslmode` is [`TlsMode::Off`], unlike libpq (which prefers TLS): a URL that worked before TLS
    /// support keeps working the same way. libpq's `verify-ca` and `verify-full` are taken as `require`, whose
    /// check is already `verify-full`'s.
    pub fn of_url(url: &str) -> Result<TlsMode, StoreError> {
        let url = libpq_sslmodes(url);
        let pg = tokio_postgres::Config::from_str(&url).map_err(db("parsing the PostgreSQL URL"))?;
        Ok(Self::of(&url, &pg))
    }

    fn of(url: &str, pg: &tokio_postgres::Config) -> TlsMode {
        let names_sslmode = if let Some(rest) = url.strip_prefix("postgres://").or(url.strip_prefix("postgresql://")) {
            rest.split_once('?')
                .is_some_and(|(_, query)| query.split('&').any(|kv| kv.split('=').next() == Some("sslmode")))
        } else {
            url.split_whitespace().any(|kv| kv == "sslmode" || kv.starts_with("sslmode="))
        };
        match pg.get_ssl_mode() {
            _ if !names_sslmode => TlsMode::Off,
            SslMode::Disable => TlsMode::Off,
            SslMode::Prefer => TlsMode::Prefer,
            _ => TlsMode::Require,
        }
    }
}

/// `url` with libpq's `sslmode=verify-ca|verify-full`, which tokio-postgres does not parse, as `sslmode=require`
/// (the store verifies the certificate and the host name in every TLS mode).
fn libpq_sslmodes(url: &str) -> std::borrow::Cow<'_, str> {
    if url.contains("sslmode=verify-") {
        url.replace("sslmode=verify-full", "sslmode=require").replace("sslmode=verify-ca", "sslmode=require").into()
    } else {
        url.into()
    }
}

/// How to open a connection: the parsed URL, and the TLS connector when the mode is not [`TlsMode::Off`].
struct Dial {
    pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Dial {
    fn new(url: &str, config: &PostgresConfig) -> Result<Dial, StoreError> {
        let url = libpq_sslmodes(url);
        let mut pg = tokio_postgres::Config::from_str(&url).map_err(db("parsing the PostgreSQL URL"))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("courier-chat");
        }
        let tls = match TlsMode::of(&url, &pg) {
            TlsMode::Off => {
                pg.ssl_mode(SslMode::Disable);
                None
            }
            TlsMode::Prefer | TlsMode::Require => {
                let roots = config.tls_roots.clone().unwrap_or_else(|| {
                    Arc::new(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
                });
                let tls =
                    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .expect("the ring provider supports the default protocol versions")
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                Some(MakeRustlsConnect::new(tls))
            }
        };
        Ok(Dial { pg, tls })
    }
}

/// The schema, one entry per version; entry `i` takes the database from version `i` to `i + 1`. The tables are the
/// SQLite store's, with `BIGINT` numbers and byte-order (`"C"`) text, so ordering by identity or conversation is the
/// same in both stores.
const MIGRATIONS: &[&str] = &[
    // 1: conversations and messages.
    r#"CREATE TABLE conversations (
        id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        epoch BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        first_seq BIGINT NOT NULL,
        last_time_ms BIGINT NOT NULL
    );
    CREATE TABLE messages (
        conversation TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL,
        sender TEXT COLLATE "C" NOT NULL,
        client_id TEXT COLLATE "C" NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT,
        flags BIGINT NOT NULL,
        mentions TEXT,
        priority BIGINT NOT NULL,
        server_time_ms BIGINT NOT NULL,
        state BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (conversation, seq)
    );
    CREATE UNIQUE INDEX messages_client_id ON messages (conversation, sender, client_id);
    CREATE INDEX messages_sender ON messages (sender);"#,
    // 2: receipts and must-acknowledge alerts.
    r#"CREATE TABLE receipts (
        conversation TEXT COLLATE "C" NOT NULL,
        identity TEXT COLLATE "C" NOT NULL,
        delivered_seq BIGINT NOT NULL,
        read_seq BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (conversation, identity)
    );
    CREATE INDEX receipts_identity ON receipts (identity);
    CREATE TABLE alerts (
        conversation TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL,
        identity TEXT COLLATE "C" NOT NULL,
        acked_ms BIGINT,
        PRIMARY KEY (conversation, seq, identity)
    );
    CREATE INDEX alerts_pending ON alerts (identity, conversation, seq) WHERE acked_ms IS NULL;"#,
];

/// The advisory lock that serializes migrations (any fixed number; this is "courier\0\0" as bytes).
const MIGRATION_LOCK: i64 = 0x636f_7572_6965_7200;

/// How often one group is run when PostgreSQL reports a deadlock or a serialization failure.
const MAX_ATTEMPTS: u32 = 3;

const FLAG_MUST_ACK: i64 = 1;
const FLAG_MENTION_ALL: i64 = 2;
/// Set when a message does not count toward unread (so rows from before the flag existed count).
const FLAG_NOT_COUNTED: i64 = 4;

const MESSAGE_COLUMNS: &str = "seq, sender, client_id, kind, payload, flags, mentions, priority, server_time_ms, state";

const NORMAL: u8 = 0;
const EDITED: u8 = 1;
const RECALLED: u8 = 2;
const ERASED: u8 = 3;

/// A database error and what the store was doing when it happened.
#[derive(Debug, thiserror::Error)]
#[error("{doing}")]
struct PgError {
    doing: &'static str,
    #[source]
    source: tokio_postgres::Error,
}

/// The database is not set up for durable acknowledgements.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Map a database error, saying what failed.
fn db(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Backend(Arc::new(PgError { doing, source }))
}

/// A deadlock or serialization failure: nothing happened, and the same transaction may succeed when run again.
fn retryable(e: &StoreError) -> bool {
    let StoreError::Backend(inner) = e else {
        return false;
    };
    let code = inner.downcast_ref::<PgError>().and_then(|e| e.source.code());
    code == Some(&SqlState::T_R_DEADLOCK_DETECTED) || code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
}

/// A `u64` as a `BIGINT`; values past `i64::MAX` (only ever bounds from callers) saturate.
fn sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `BIGINT` that must be a `u64`.
fn unsql(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Inconsistent(format!("negative {what}")))
}

/// Column `idx` of `row`.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize, what: &str) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| StoreError::Inconsistent(format!("column {what}: {e}")))
}

/// Column `idx` of `row`, a `BIGINT` that must be a `u64`.
fn col_u64(row: &Row, idx: usize, what: &str) -> Result<u64, StoreError> {
    unsql(col::<i64>(row, idx, what)?, what)
}

/// The PostgreSQL [`ChatStore`]. Cheap to share behind an `Arc`; dropping it lets the writer finish what is queued
/// and stop. [`PostgresStore::close`] does the same and waits for it.
pub struct PostgresStore {
    queue: WriterQueue,
    readers: Arc<ReadPool>,
    config: PostgresConfig,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("PostgresStore").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connect to the database at `url` (`postgres://user:password@host:port/database`, or libpq's `key=value`
    /// form), check that commits are durable, create or migrate the schema, and start the writer task on the
    /// current Tokio runtime.
    pub async fn connect(url: &str, config: PostgresConfig) -> Result<PostgresStore, StoreError> {
        let pg = Arc::new(Dial::new(url, &config)?);
        let writer = Writer::open(&pg, &config, true).await?;
        let (queue, rx) = WriterQueue::new(config.queue_capacity, config.limits, config.max_batch);
        let handle = tokio::spawn(run_writer(Some(writer), rx, pg.clone(), config.clone(), queue.listener.clone()));
        let readers = Arc::new(ReadPool {
            pg,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(config.read_connections.max(1)),
        });
        Ok(PostgresStore { queue, readers, config, writer: Mutex::new(Some(handle)) })
    }

    /// Finish what is queued, stop the writer, wait for it and close the read connections. Later calls fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        self.queue.close().await;
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        self.readers.close();
    }
}

/// Run `$body` with `$reader` bound to a pooled read connection; the connection goes back to the pool unless the
/// database failed.
macro_rules! with_reader {
    ($store:expr, $reader:ident => $body:expr) => {{
        let mut lease = $store.readers.get().await?;
        let $reader = lease.reader();
        let result = $body.await;
        lease.done(&result);
        result
    }};
}

impl ChatStore for PostgresStore {
    writes_through_queue!();

    fn head(&self, conversation: &ConversationId) -> BoxFuture<'_, Result<Option<Head>, StoreError>> {
        let conversation = conversation.clone();
        Box::pin(async move { with_reader!(self, r => read_head(&r.client, &r.st, &conversation)) })
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
            with_reader!(self, r => read_page(r, &conversation, from, limit))
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
        Box::pin(async move { with_reader!(self, r => read_range(r, &conversation, after_seq, up_to_seq, max)) })
    }

    fn receipts(&self, conversation: &ConversationId, limit: usize) -> BoxFuture<'_, Result<Vec<Receipt>, StoreError>> {
        let conversation = conversation.clone();
        let limit = limit.min(self.config.max_page);
        Box::pin(async move { with_reader!(self, r => read_receipts(r, &conversation, limit)) })
    }

    fn unread(&self, conversation: &ConversationId, identity: &str) -> BoxFuture<'_, Result<u64, StoreError>> {
        let (conversation, identity) = (conversation.clone(), identity.to_string());
        Box::pin(async move { with_reader!(self, r => read_unread(r, &conversation, &identity)) })
    }

    fn alert_status(
        &self,
        conversation: &ConversationId,
        seq: u64,
    ) -> BoxFuture<'_, Result<Option<AlertStatus>, StoreError>> {
        let conversation = conversation.clone();
        Box::pin(async move { with_reader!(self, r => read_alert_status(r, &conversation, seq)) })
    }

    fn conversations(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ConversationId>, StoreError>> {
        let after = after.map(|c| c.as_str().to_string()).unwrap_or_default();
        let limit = limit.min(self.config.max_page);
        Box::pin(async move { with_reader!(self, r => read_conversations(r, &after, limit)) })
    }

    fn pending_alerts(&self, identity: &str, limit: usize) -> BoxFuture<'_, Result<Vec<StoredMessage>, StoreError>> {
        let identity = identity.to_string();
        let limit = limit.min(self.config.max_page);
        Box::pin(async move { with_reader!(self, r => read_pending_alerts(r, &identity, limit)) })
    }
}

// ---- connections ----

/// Declares a set of prepared statements: a struct with one [`Statement`] per field, and `prepare`, which prepares
/// them all in one pipeline.
macro_rules! statements {
    ($name:ident { $($field:ident = $sql:expr,)* }) => {
        struct $name {
            $($field: Statement,)*
        }

        impl $name {
            async fn prepare(client: &Client) -> Result<$name, StoreError> {
                $(let $field: String = $sql.into();)*
                let ($($field,)*) = futures::try_join!($(client.prepare(&$field),)*)
                    .map_err(db("preparing statements"))?;
                Ok($name { $($field,)* })
            }
        }
    };
}

/// Open one connection; its I/O runs on its own task until the client is dropped.
///
/// Its prepared statements are planned for their parameters at every execution (`force_custom_plan`). Otherwise
/// PostgreSQL may settle on a generic plan while the tables are still nearly empty (a sequential scan is cheapest
/// then) and keep it as they grow until the next `ANALYZE`: measured, a retry lookup went from well under a
/// millisecond to 55 ms at 200,000 messages. Planning these small statements costs some tens of microseconds.
async fn open_client(dial: &Dial) -> Result<Client, StoreError> {
    let client = match &dial.tls {
        None => {
            let (client, connection) = dial.pg.connect(NoTls).await.map_err(db("connecting to PostgreSQL"))?;
            tokio::spawn(drive(connection));
            client
        }
        Some(tls) => {
            let (client, connection) =
                dial.pg.connect(tls.clone()).await.map_err(db("connecting to PostgreSQL over TLS"))?;
            tokio::spawn(drive(connection));
            client
        }
    };
    client.batch_execute("SET plan_cache_mode = force_custom_plan").await.map_err(db("configuring a connection"))?;
    Ok(client)
}

/// One connection to the database at `url`, dialled as the store dials its own (TLS by `sslmode` and
/// [`PostgresConfig::tls_roots`], [`PostgresConfig::connect_timeout`]), its driver running on the current runtime. For
/// a neighbour that keeps a few tables of its own in the same database: a cluster's room definitions.
pub async fn connect_client(url: &str, config: &PostgresConfig) -> Result<Client, StoreError> {
    open_client(&Dial::new(url, config)?).await
}

/// Run a connection until it ends.
async fn drive<C: Future<Output = Result<(), tokio_postgres::Error>>>(connection: C) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "chat database connection ended");
    }
}

/// Refuse a database whose commits are not durable when it answers them.
async fn check_durable(client: &Client) -> Result<(), StoreError> {
    for (setting, why) in [
        ("synchronous_commit", "a commit would be answered before it is on disk"),
        ("fsync", "commits would not be flushed to disk"),
    ] {
        let row = client
            .query_one("SELECT current_setting($1)", &[&setting])
            .await
            .map_err(db("reading the durability settings"))?;
        let value: String = col(&row, 0, setting)?;
        if value.eq_ignore_ascii_case("off") {
            return Err(StoreError::Backend(Arc::new(Refused(format!(
                "PostgreSQL has {setting} = off: {why}; the chat store needs it on"
            )))));
        }
    }
    Ok(())
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db("migrating the schema"))?;
    // Held until commit: a server starting at the same time waits here, then finds the schema up to date.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db("locking the schema"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL PRIMARY KEY, applied_ms BIGINT NOT NULL)",
    )
    .await
    .map_err(db("creating schema_version"))?;
    let row = tx
        .query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version", &[])
        .await
        .map_err(db("reading the schema version"))?;
    let current = col::<i64>(&row, 0, "version")?;
    let current = usize::try_from(current).map_err(|_| StoreError::Inconsistent("negative schema version".into()))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Inconsistent(format!(
            "database schema version {current} is newer than this server's {}",
            MIGRATIONS.len()
        )));
    }
    for (i, sql_text) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql_text).await.map_err(db("migrating the schema"))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_ms) VALUES ($1, $2)",
            &[&sql(i as u64 + 1), &sql(now_ms())],
        )
        .await
        .map_err(db("recording the schema version"))?;
    }
    tx.commit().await.map_err(db("committing the schema"))?;
    Ok(())
}

// ---- pipelines ----

/// What one pipelined statement answered.
enum Answer {
    Rows(Vec<Row>),
    Count(u64),
}

/// One statement of a pipeline.
type Step<'a> = BoxFuture<'a, Result<Answer, StoreError>>;

/// Statement parameters, owned by the step so it can be stored until the pipeline runs.
type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

fn query<'a>(c: &'a Client, statement: &'a Statement, params: Params<'a>, doing: &'static str) -> Step<'a> {
    Box::pin(async move {
        let rows = c.query_raw(statement, params).await.map_err(db(doing))?.try_collect().await.map_err(db(doing))?;
        Ok(Answer::Rows(rows))
    })
}

fn execute<'a>(c: &'a Client, statement: &'a Statement, params: Params<'a>, doing: &'static str) -> Step<'a> {
    Box::pin(async move { Ok(Answer::Count(c.execute_raw(statement, params).await.map_err(db(doing))?)) })
}

fn simple<'a>(c: &'a Client, text: &'static str) -> Step<'a> {
    Box::pin(async move {
        c.batch_execute(text).await.map_err(db(text))?;
        Ok(Answer::Count(0))
    })
}

/// Run `steps` as one pipeline: each is polled once, in order, which sends its statement (tokio-postgres sends a
/// request when its future is first polled, and the server runs them in the order sent), then all are awaited. One
/// round trip for all of them, in their order. Every step has finished when this returns.
async fn pipeline(steps: Vec<Step<'_>>) -> Vec<Result<Answer, StoreError>> {
    let mut steps: Vec<MaybeDone<Step<'_>>> = steps.into_iter().map(futures::future::maybe_done).collect();
    futures::future::poll_fn(|cx| {
        for step in steps.iter_mut() {
            let _ = Pin::new(step).poll(cx);
        }
        Poll::Ready(())
    })
    .await;
    for step in steps.iter_mut() {
        step.await;
    }
    steps
        .iter_mut()
        .map(|step| {
            Pin::new(step)
                .take_output()
                .unwrap_or_else(|| Err(StoreError::Inconsistent("a pipelined statement did not finish".into())))
        })
        .collect()
}

fn rows(answer: Result<Answer, StoreError>) -> Result<Vec<Row>, StoreError> {
    match answer? {
        Answer::Rows(rows) => Ok(rows),
        Answer::Count(_) => Err(StoreError::Inconsistent("a statement answered no rows".into())),
    }
}

fn count(answer: Result<Answer, StoreError>) -> Result<u64, StoreError> {
    match answer? {
        Answer::Count(n) => Ok(n),
        Answer::Rows(rows) => Ok(rows.len() as u64),
    }
}

// ---- the writer ----

statements!(WriteStatements {
    create = "INSERT INTO conversations (id, epoch, last_seq, first_seq, last_time_ms) VALUES ($1, $2, 0, 1, 0)
              ON CONFLICT (id) DO NOTHING",
    lock = "SELECT epoch, last_seq, first_seq, last_time_ms FROM conversations WHERE id = $1 FOR UPDATE",
    lookup = "SELECT m.conversation, m.sender, m.client_id, m.seq, m.server_time_ms
              FROM unnest($1::text[], $2::text[], $3::text[]) AS k (conversation, sender, client_id)
              JOIN messages m ON m.conversation = k.conversation AND m.sender = k.sender
                  AND m.client_id = k.client_id",
    insert_messages = "INSERT INTO messages (conversation, seq, sender, client_id, kind, payload, flags, mentions,
                           priority, server_time_ms)
                       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[])",
    insert_alerts = "INSERT INTO alerts (conversation, seq, identity)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING",
    write_heads = "UPDATE conversations AS c SET epoch = h.epoch, last_seq = h.last_seq, first_seq = h.first_seq,
                       last_time_ms = h.last_time_ms
                   FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
                       AS h (id, epoch, last_seq, first_seq, last_time_ms)
                   WHERE c.id = h.id",
    drop_conversations = "DELETE FROM conversations WHERE id = ANY($1::text[])",
    recall = format!(
        "UPDATE messages SET payload = NULL, state = {RECALLED}
         WHERE conversation = $1 AND seq = $2 AND state IN ({NORMAL}, {EDITED})"
    ),
    edit = format!(
        "UPDATE messages SET payload = $3, state = {EDITED}
         WHERE conversation = $1 AND seq = $2 AND state IN ({NORMAL}, {EDITED})"
    ),
    erase_one = format!(
        "UPDATE messages SET payload = NULL, state = {ERASED} WHERE conversation = $1 AND seq = $2 AND state <> {ERASED}"
    ),
    oldest_kept = "SELECT seq FROM messages WHERE conversation = $1 AND server_time_ms >= $2 ORDER BY seq LIMIT 1",
    trim_messages = "DELETE FROM messages WHERE conversation = $1 AND seq < $2",
    trim_alerts = "DELETE FROM alerts WHERE conversation = $1 AND seq < $2",
    erase_scope = "SELECT conversation FROM messages WHERE sender = $1
                   UNION SELECT conversation FROM receipts WHERE identity = $1
                   UNION SELECT conversation FROM alerts WHERE identity = $1",
    erase_messages = format!("UPDATE messages SET payload = NULL, state = {ERASED} WHERE sender = $1 AND state <> {ERASED}"),
    erase_receipts = "DELETE FROM receipts WHERE identity = $1",
    erase_alerts = "DELETE FROM alerts WHERE identity = $1",
    receipt = "INSERT INTO receipts (conversation, identity, delivered_seq, read_seq, updated_ms)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (conversation, identity) DO UPDATE SET
                   delivered_seq = GREATEST(receipts.delivered_seq, excluded.delivered_seq),
                   read_seq = GREATEST(receipts.read_seq, excluded.read_seq),
                   updated_ms = excluded.updated_ms
               RETURNING delivered_seq, read_seq",
    alert_get = "SELECT acked_ms FROM alerts WHERE conversation = $1 AND seq = $2 AND identity = $3",
    alert_set = "UPDATE alerts SET acked_ms = $4 WHERE conversation = $1 AND seq = $2 AND identity = $3",
});

/// The write connection and its statements.
struct Writer {
    client: Client,
    st: WriteStatements,
}

impl Writer {
    async fn open(pg: &Dial, config: &PostgresConfig, migrate_schema: bool) -> Result<Writer, StoreError> {
        let mut client = open_client(pg).await?;
        check_durable(&client).await?;
        client
            .batch_execute(&format!("SET lock_timeout = {}", config.lock_timeout.as_millis()))
            .await
            .map_err(db("setting lock_timeout"))?;
        if migrate_schema {
            migrate(&mut client).await?;
        }
        let st = WriteStatements::prepare(&client).await?;
        Ok(Writer { client, st })
    }
}

async fn run_writer(
    mut writer: Option<Writer>,
    mut rx: mpsc::Receiver<Command>,
    pg: Arc<Dial>,
    config: PostgresConfig,
    listener: ListenerSlot,
) {
    let mut sequencer = Sequencer::new(config.dedup_cache);
    while let Some(first) = rx.recv().await {
        let mut messages = first.request.messages();
        let mut closing = matches!(first.request, Request::Close);
        let mut group = vec![first];
        // Let the senders just answered queue their next requests before draining: otherwise groups alternate
        // between the one request that came first and all the rest (measured with 4 and 32 senders: 1.7x and 1.45x
        // the throughput with this, and lower latency).
        tokio::task::yield_now().await;
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
        match run_group(&mut writer, &mut sequencer, &requests, &pg, &config).await {
            Ok((outcomes, committed)) => {
                publish(&listener, &committed);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), requests = replies.len(),
                    "chat write group failed");
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

/// Run one group, reconnecting first if the write connection was lost, and again if PostgreSQL asks for it.
async fn run_group(
    writer: &mut Option<Writer>,
    sequencer: &mut Sequencer,
    requests: &[Request],
    pg: &Dial,
    config: &PostgresConfig,
) -> Result<(Vec<Outcome>, Vec<StoredMessage>), StoreError> {
    if requests.iter().all(|r| matches!(r, Request::Close)) {
        return Ok((requests.iter().map(|_| Outcome::Closed).collect(), Vec::new()));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let w = match writer.take() {
            Some(w) if !w.client.is_closed() => writer.insert(w),
            _ => writer.insert(Writer::open(pg, config, false).await?),
        };
        match execute_group(w, sequencer, requests, now_ms()).await {
            Ok(done) => return Ok(done),
            Err(e) => {
                if w.client.batch_execute("ROLLBACK").await.is_err() {
                    *writer = None;
                }
                if attempt < MAX_ATTEMPTS && retryable(&e) {
                    tracing::debug!(error = %e, attempt, "chat write group runs again");
                    continue;
                }
                return Err(e);
            }
        }
    }
}

fn sequence_error(e: SequenceError) -> StoreError {
    match e {
        SequenceError::Exhausted(c) => StoreError::SequenceExhausted(c),
        e @ SequenceError::NotLoaded(_) => StoreError::Inconsistent(e.to_string()),
    }
}

fn dedup_key(m: &NewMessage) -> DedupKey {
    DedupKey { conversation: m.conversation.clone(), sender: m.sender.clone(), client_id: m.client_id.clone() }
}

/// Where the retry lookup found a message: its number and server time.
type Found = HashMap<DedupKey, (u64, u64)>;

fn found_rows(rows: Vec<Row>) -> Result<Found, StoreError> {
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        let conversation: String = col(&row, 0, "conversation")?;
        let conversation = ConversationId::parse(&conversation)
            .map_err(|_| StoreError::Inconsistent(format!("bad conversation id {conversation:?}")))?;
        let key = DedupKey { conversation, sender: col(&row, 1, "sender")?, client_id: col(&row, 2, "client_id")? };
        found.insert(key, (col_u64(&row, 3, "seq")?, col_u64(&row, 4, "server_time_ms")?));
    }
    Ok(found)
}

/// The retry lookup of `messages` in the unique index, as one statement.
async fn lookup(c: &Client, st: &WriteStatements, messages: &[&NewMessage]) -> Result<Found, StoreError> {
    if messages.is_empty() {
        return Ok(HashMap::new());
    }
    let conversations: Vec<&str> = messages.iter().map(|m| m.conversation.as_str()).collect();
    let senders: Vec<&str> = messages.iter().map(|m| m.sender.as_str()).collect();
    let client_ids: Vec<&str> = messages.iter().map(|m| m.client_id.as_str()).collect();
    let rows = c.query(&st.lookup, &[&conversations, &senders, &client_ids]).await.map_err(db("looking up retries"))?;
    found_rows(rows)
}

/// Rows to write, gathered while a group is sequenced and written in one pipeline before anything reads them.
#[derive(Default)]
struct Pending<'r> {
    conversation: Vec<&'r str>,
    seq: Vec<i64>,
    sender: Vec<&'r str>,
    client_id: Vec<&'r str>,
    kind: Vec<&'r str>,
    payload: Vec<&'r str>,
    flags: Vec<i64>,
    mentions: Vec<Option<String>>,
    priority: Vec<i64>,
    time: Vec<i64>,
    alert_conversation: Vec<&'r str>,
    alert_seq: Vec<i64>,
    alert_identity: Vec<&'r str>,
    /// Recalls and edits carried by the messages, applied in order after the messages are inserted.
    amends: Vec<(&'r str, i64, &'r Tombstone)>,
}

impl<'r> Pending<'r> {
    fn is_empty(&self) -> bool {
        self.seq.is_empty() && self.amends.is_empty()
    }

    fn add(&mut self, m: &'r NewMessage, ack: &Ack) -> Result<(), StoreError> {
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
            Some(serde_json::to_string(&m.flags.mentions).map_err(|e| StoreError::Backend(Arc::new(e)))?)
        };
        let conversation = m.conversation.as_str();
        self.conversation.push(conversation);
        self.seq.push(sql(ack.seq));
        self.sender.push(&m.sender);
        self.client_id.push(&m.client_id);
        self.kind.push(&m.kind);
        self.payload.push(&m.payload);
        self.flags.push(flags);
        self.mentions.push(mentions);
        self.priority.push(i64::from(m.flags.priority.code()));
        self.time.push(sql(ack.server_time_ms));
        if let Some(amend) = &m.amends {
            if amend.seq < ack.seq {
                self.amends.push((conversation, sql(amend.seq), &amend.change));
            }
        }
        for identity in &m.alert_to {
            self.alert_conversation.push(conversation);
            self.alert_seq.push(sql(ack.seq));
            self.alert_identity.push(identity);
        }
        Ok(())
    }

    /// The statements that write everything gathered, in order; their answers are checked by [`Pending::check`].
    fn steps<'a>(&'a self, c: &'a Client, st: &'a WriteStatements, steps: &mut Vec<Step<'a>>) {
        if !self.seq.is_empty() {
            let params: Params<'a> = vec![
                &self.conversation,
                &self.seq,
                &self.sender,
                &self.client_id,
                &self.kind,
                &self.payload,
                &self.flags,
                &self.mentions,
                &self.priority,
                &self.time,
            ];
            steps.push(execute(c, &st.insert_messages, params, "inserting messages"));
        }
        if !self.alert_seq.is_empty() {
            let params: Params<'a> = vec![&self.alert_conversation, &self.alert_seq, &self.alert_identity];
            steps.push(execute(c, &st.insert_alerts, params, "inserting alerts"));
        }
        for (conversation, seq, change) in &self.amends {
            steps.push(tombstone_step(c, st, conversation, seq, change));
        }
    }

    /// Check the answers to [`Pending::steps`] (taken from the front of `answers`).
    fn check(&self, answers: &mut impl Iterator<Item = Result<Answer, StoreError>>) -> Result<(), StoreError> {
        let mut next = || answers.next().unwrap_or_else(|| Err(StoreError::Inconsistent("missing answer".into())));
        if !self.seq.is_empty() {
            let inserted = count(next())?;
            if inserted != self.seq.len() as u64 {
                return Err(StoreError::Inconsistent(format!("inserted {inserted} of {} messages", self.seq.len())));
            }
        }
        if !self.alert_seq.is_empty() {
            count(next())?;
        }
        for _ in &self.amends {
            count(next())?;
        }
        Ok(())
    }

    /// Write everything gathered now (before a statement that may read it).
    async fn flush(&mut self, c: &Client, st: &WriteStatements) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let mut steps = Vec::new();
        self.steps(c, st, &mut steps);
        let answers = pipeline(steps).await;
        self.check(&mut answers.into_iter())?;
        *self = Pending::default();
        Ok(())
    }
}

fn tombstone_step<'a>(
    c: &'a Client,
    st: &'a WriteStatements,
    conversation: &'a &'a str,
    seq: &'a i64,
    change: &'a Tombstone,
) -> Step<'a> {
    match change {
        Tombstone::Recall => execute(c, &st.recall, vec![conversation, seq], "recalling a message"),
        Tombstone::Edit { payload } => execute(c, &st.edit, vec![conversation, seq, payload], "editing a message"),
        Tombstone::Erase => execute(c, &st.erase_one, vec![conversation, seq], "erasing a message"),
    }
}

/// Run one group in one transaction; on success the outcomes match `requests` one to one, followed by the newly
/// stored messages in commit order.
async fn execute_group(
    w: &Writer,
    sequencer: &mut Sequencer,
    requests: &[Request],
    now_ms: u64,
) -> Result<(Vec<Outcome>, Vec<StoredMessage>), StoreError> {
    let (c, st) = (&w.client, &w.st);

    // What the group touches: conversations to lock (and whether an append may create them, with the epoch it
    // would get), and the messages to look for in the unique index (those the cache does not answer).
    let mut locks: BTreeMap<ConversationId, Option<i64>> = BTreeMap::new();
    let mut to_look_up: Vec<&NewMessage> = Vec::new();
    for request in requests {
        match request {
            Request::Append(batch) => {
                for m in batch {
                    if sequencer.cached(&dedup_key(m)).is_none() {
                        let epoch = locks.entry(m.conversation.clone()).or_insert(None);
                        epoch.get_or_insert_with(|| sql(epoch_from_random(rand::random())));
                        to_look_up.push(m);
                    }
                }
            }
            Request::Tombstone { conversation, .. }
            | Request::Trim { conversation, .. }
            | Request::Receipt { conversation, .. }
            | Request::AckAlert { conversation, .. } => {
                locks.entry(conversation.clone()).or_insert(None);
            }
            Request::EraseIdentity(identity) => {
                let rows = c.query(&st.erase_scope, &[identity]).await.map_err(db("finding what to erase"))?;
                for row in rows {
                    let id: String = col(&row, 0, "conversation")?;
                    let id = ConversationId::parse(&id)
                        .map_err(|_| StoreError::Inconsistent(format!("bad conversation id {id:?}")))?;
                    locks.entry(id).or_insert(None);
                }
            }
            Request::Close => {}
        }
    }

    // One pipeline: BEGIN, every lock in id order, the retry lookup (run under the locks, so it sees whatever
    // another server committed to these conversations).
    let ids: Vec<(&str, Option<i64>)> = locks.iter().map(|(id, epoch)| (id.as_str(), *epoch)).collect();
    let look_up = (
        to_look_up.iter().map(|m| m.conversation.as_str()).collect::<Vec<_>>(),
        to_look_up.iter().map(|m| m.sender.as_str()).collect::<Vec<_>>(),
        to_look_up.iter().map(|m| m.client_id.as_str()).collect::<Vec<_>>(),
    );
    let mut steps = vec![simple(c, "BEGIN ISOLATION LEVEL READ COMMITTED")];
    for (id, epoch) in &ids {
        if let Some(epoch) = epoch {
            steps.push(execute(c, &st.create, vec![id, epoch], "creating a conversation"));
        }
        steps.push(query(c, &st.lock, vec![id], "locking a conversation"));
    }
    if !to_look_up.is_empty() {
        steps.push(query(c, &st.lookup, vec![&look_up.0, &look_up.1, &look_up.2], "looking up retries"));
    }
    let mut answers = pipeline(steps).await.into_iter();
    let mut next = || answers.next().unwrap_or_else(|| Err(StoreError::Inconsistent("missing answer".into())));
    next()?;
    let mut group = sequencer.begin();
    // Conversations this group created and no append has given a message yet: to every other request they do not
    // exist, as in the SQLite store where only an append creates one.
    let mut unborn: HashSet<&ConversationId> = HashSet::new();
    for (id, epoch) in &locks {
        if epoch.is_some() && count(next())? > 0 {
            unborn.insert(id);
        }
        let row = rows(next())?;
        if let Some(row) = row.first() {
            let state = ConversationState {
                epoch: col_u64(row, 0, "epoch")?,
                last_seq: col_u64(row, 1, "last_seq")?,
                first_seq: col_u64(row, 2, "first_seq")?,
                last_time_ms: col_u64(row, 3, "last_time_ms")?,
            };
            group.load(id.clone(), state, false);
        }
    }
    let mut found = if to_look_up.is_empty() { HashMap::new() } else { found_rows(rows(next())?)? };

    let mut outcomes = Vec::with_capacity(requests.len());
    let mut committed = Vec::new();
    let mut pending = Pending::default();
    // A trim may delete a message the lookup found; appends after it look up again.
    let mut found_is_stale = false;
    for request in requests {
        let outcome = match request {
            Request::Append(batch) => {
                if found_is_stale {
                    let batch_refs: Vec<&NewMessage> = batch.iter().collect();
                    found = lookup(c, st, &batch_refs).await?;
                }
                let mut acks = Vec::with_capacity(batch.len());
                for m in batch {
                    let key = dedup_key(m);
                    if let Some(ack) = group.duplicate(&key) {
                        acks.push(ack);
                        continue;
                    }
                    let Some(state) = group.state(&key.conversation) else {
                        return Err(StoreError::Inconsistent(format!("conversation {} not locked", key.conversation)));
                    };
                    if let Some(&(seq, server_time_ms)) = found.get(&key) {
                        let ack = Ack {
                            conversation: key.conversation.clone(),
                            seq,
                            epoch: state.epoch,
                            server_time_ms,
                            duplicate: true,
                        };
                        group.remember(key, ack.clone());
                        acks.push(ack);
                        continue;
                    }
                    unborn.remove(&m.conversation);
                    let ack = group.assign(key, now_ms).map_err(sequence_error)?;
                    pending.add(m, &ack)?;
                    committed.push(StoredMessage {
                        conversation: m.conversation.clone(),
                        seq: ack.seq,
                        sender: m.sender.clone(),
                        client_id: m.client_id.clone(),
                        kind: m.kind.clone(),
                        payload: Some(m.payload.clone()),
                        flags: m.flags.clone(),
                        server_time_ms: ack.server_time_ms,
                        state: MessageState::Normal,
                    });
                    acks.push(ack);
                }
                Outcome::Acks(acks)
            }
            Request::Receipt { conversation, identity, delivered, read } => {
                pending.flush(c, st).await?;
                let exists = !unborn.contains(conversation);
                Outcome::Receipt(
                    set_receipt(c, st, &group, exists, conversation, identity, *delivered, *read, now_ms).await?,
                )
            }
            Request::AckAlert { conversation, seq, identity } => {
                pending.flush(c, st).await?;
                Outcome::AlertAck(ack_alert(c, st, conversation, *seq, identity, now_ms).await?)
            }
            Request::Tombstone { conversation, seq, change } => {
                pending.flush(c, st).await?;
                let (conversation, seq) = (conversation.as_str(), sql(*seq));
                Outcome::Changed(count(tombstone_step(c, st, &conversation, &seq, change).await)? > 0)
            }
            Request::Trim { conversation, retention, now_ms } => {
                pending.flush(c, st).await?;
                found_is_stale = true;
                let exists = !unborn.contains(conversation);
                Outcome::Trimmed(trim(c, st, &mut group, exists, conversation, *retention, *now_ms).await?)
            }
            Request::EraseIdentity(identity) => {
                pending.flush(c, st).await?;
                Outcome::Count(erase_identity(c, st, identity).await?)
            }
            Request::Close => Outcome::Closed,
        };
        outcomes.push(outcome);
    }

    // One pipeline: whatever is left to write, the new heads, and the removal of conversations created for
    // nothing (never expected: an append that creates a conversation always stores a message in it).
    let changed: Vec<(&ConversationId, ConversationState)> = group.changed().map(|(id, s)| (id, *s)).collect();
    let heads = (
        changed.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        changed.iter().map(|(_, s)| sql(s.epoch)).collect::<Vec<_>>(),
        changed.iter().map(|(_, s)| sql(s.last_seq)).collect::<Vec<_>>(),
        changed.iter().map(|(_, s)| sql(s.first_seq)).collect::<Vec<_>>(),
        changed.iter().map(|(_, s)| sql(s.last_time_ms)).collect::<Vec<_>>(),
    );
    let unborn: Vec<&str> = unborn.iter().map(|id| id.as_str()).collect();
    let mut steps = Vec::new();
    pending.steps(c, st, &mut steps);
    if !changed.is_empty() {
        let params: Params<'_> = vec![&heads.0, &heads.1, &heads.2, &heads.3, &heads.4];
        steps.push(execute(c, &st.write_heads, params, "writing conversation heads"));
    }
    if !unborn.is_empty() {
        steps.push(execute(c, &st.drop_conversations, vec![&unborn], "removing empty conversations"));
    }
    let mut answers = pipeline(steps).await.into_iter();
    pending.check(&mut answers)?;
    if !changed.is_empty() {
        let written = count(answers.next().unwrap_or_else(|| Err(StoreError::Inconsistent("missing answer".into()))))?;
        if written != changed.len() as u64 {
            return Err(StoreError::Inconsistent(format!("wrote {written} of {} conversation heads", changed.len())));
        }
    }
    for answer in answers {
        answer?;
    }
    c.batch_execute("COMMIT").await.map_err(db("committing"))?;
    group.commit();
    Ok((outcomes, committed))
}

#[allow(clippy::too_many_arguments)]
async fn set_receipt(
    c: &Client,
    st: &WriteStatements,
    group: &Group<'_>,
    exists: bool,
    conversation: &ConversationId,
    identity: &str,
    delivered: u64,
    read: u64,
    now_ms: u64,
) -> Result<Option<Receipt>, StoreError> {
    let Some(state) = group.state(conversation).filter(|_| exists) else {
        return Ok(None);
    };
    let last = state.last_seq;
    let read = read.min(last);
    let delivered = delivered.min(last).max(read);
    let row = c
        .query_one(&st.receipt, &[&conversation.as_str(), &identity, &sql(delivered), &sql(read), &sql(now_ms)])
        .await
        .map_err(db("writing a receipt"))?;
    Ok(Some(Receipt {
        identity: identity.to_string(),
        delivered: col_u64(&row, 0, "delivered_seq")?,
        read: col_u64(&row, 1, "read_seq")?,
    }))
}

async fn ack_alert(
    c: &Client,
    st: &WriteStatements,
    conversation: &ConversationId,
    seq: u64,
    identity: &str,
    now_ms: u64,
) -> Result<AlertAck, StoreError> {
    let params: [&(dyn ToSql + Sync); 3] = [&conversation.as_str(), &sql(seq), &identity];
    let row = c.query_opt(&st.alert_get, &params).await.map_err(db("reading an alert"))?;
    let Some(row) = row else {
        return Ok(AlertAck::NotAsked);
    };
    match col::<Option<i64>>(&row, 0, "acked_ms")? {
        Some(at) => Ok(AlertAck::AlreadyAcked { at_ms: unsql(at, "acked_ms")? }),
        None => {
            c.execute(&st.alert_set, &[&conversation.as_str(), &sql(seq), &identity, &sql(now_ms)])
                .await
                .map_err(db("acknowledging an alert"))?;
            Ok(AlertAck::Acked { at_ms: now_ms })
        }
    }
}

async fn trim(
    c: &Client,
    st: &WriteStatements,
    group: &mut Group<'_>,
    exists: bool,
    conversation: &ConversationId,
    retention: Retention,
    now_ms: u64,
) -> Result<Option<Trimmed>, StoreError> {
    let Some(&state) = group.state(conversation).filter(|_| exists) else {
        return Ok(None);
    };
    let id = conversation.as_str();
    let mut cutoff = state.first_seq;
    if let Some(max_count) = retention.max_count {
        cutoff = cutoff.max(state.last_seq.saturating_sub(max_count) + 1);
    }
    if let Some(max_age) = retention.max_age_ms {
        // Server time never decreases along the sequence, so the old messages are a prefix.
        let oldest_kept = c
            .query_opt(&st.oldest_kept, &[&id, &sql(now_ms.saturating_sub(max_age))])
            .await
            .map_err(db("finding what to trim"))?;
        let age_cutoff = match oldest_kept {
            Some(row) => col_u64(&row, 0, "seq")?,
            None => state.last_seq + 1,
        };
        cutoff = cutoff.max(age_cutoff);
    }
    let mut removed = 0;
    if cutoff > state.first_seq {
        let cut = sql(cutoff);
        let answers = pipeline(vec![
            execute(c, &st.trim_messages, vec![&id, &cut], "trimming messages"),
            execute(c, &st.trim_alerts, vec![&id, &cut], "trimming alerts"),
        ])
        .await;
        let mut answers = answers.into_iter();
        removed = count(answers.next().unwrap_or_else(|| Err(StoreError::Inconsistent("missing answer".into()))))?;
        for answer in answers {
            answer?;
        }
        if let Some(s) = group.state_mut(conversation) {
            s.first_seq = cutoff;
        }
    }
    Ok(Some(Trimmed { removed, first_seq: cutoff }))
}

async fn erase_identity(c: &Client, st: &WriteStatements, identity: &str) -> Result<u64, StoreError> {
    let answers = pipeline(vec![
        execute(c, &st.erase_messages, vec![&identity], "erasing messages"),
        execute(c, &st.erase_receipts, vec![&identity], "erasing receipts"),
        execute(c, &st.erase_alerts, vec![&identity], "erasing alerts"),
    ])
    .await;
    let mut answers = answers.into_iter();
    let n = count(answers.next().unwrap_or_else(|| Err(StoreError::Inconsistent("missing answer".into()))))?;
    for answer in answers {
        answer?;
    }
    Ok(n)
}

// ---- reads ----

statements!(ReadStatements {
    head = "SELECT epoch, last_seq, first_seq FROM conversations WHERE id = $1",
    page_before = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
    ),
    page_after =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
    page_latest = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = $1 ORDER BY seq DESC LIMIT $2"),
    range = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation = $1 AND seq > $2 AND seq <= $3 ORDER BY seq"
    ),
    receipts = "SELECT identity, delivered_seq, read_seq FROM receipts WHERE conversation = $1
                ORDER BY identity LIMIT $2",
    unread = format!(
        "SELECT COUNT(*) FROM messages WHERE conversation = $1 AND sender <> $2 AND (flags & {FLAG_NOT_COUNTED}) = 0
             AND state IN ({NORMAL}, {EDITED})
             AND seq > COALESCE((SELECT read_seq FROM receipts WHERE conversation = $1 AND identity = $2), 0)"
    ),
    alert_status = "SELECT identity, acked_ms FROM alerts WHERE conversation = $1 AND seq = $2 ORDER BY identity",
    conversations = "SELECT id FROM conversations WHERE id > $1 ORDER BY id LIMIT $2",
    pending_alerts = format!(
        "SELECT {MESSAGE_COLUMNS}, conversation FROM messages
         WHERE (conversation, seq) IN (SELECT conversation, seq FROM alerts WHERE identity = $1 AND acked_ms IS NULL
                                       ORDER BY conversation, seq LIMIT $2)
         ORDER BY conversation, seq"
    ),
});

/// A read connection and its statements.
struct Reader {
    client: Client,
    st: ReadStatements,
}

/// Read connections: at most `permits` in use at once; idle ones are kept.
struct ReadPool {
    pg: Arc<Dial>,
    idle: Mutex<Vec<Reader>>,
    permits: Semaphore,
}

/// A read connection taken from the pool.
struct Lease<'p> {
    pool: &'p ReadPool,
    reader: Reader,
    _permit: SemaphorePermit<'p>,
}

impl ReadPool {
    async fn get(&self) -> Result<Lease<'_>, StoreError> {
        let permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        loop {
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            match idle {
                Some(reader) if !reader.client.is_closed() => {
                    return Ok(Lease { pool: self, reader, _permit: permit });
                }
                Some(_) => continue,
                None => break,
            }
        }
        let client = open_client(&self.pg).await?;
        let st = ReadStatements::prepare(&client).await?;
        Ok(Lease { pool: self, reader: Reader { client, st }, _permit: permit })
    }

    /// No more reads: later ones fail with [`StoreError::Closed`].
    fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

impl Lease<'_> {
    fn reader(&mut self) -> &mut Reader {
        &mut self.reader
    }

    /// Put the connection back, unless the database failed on it.
    fn done<T>(self, result: &Result<T, StoreError>) {
        if matches!(result, Err(StoreError::Backend(_))) || self.pool.permits.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.push(self.reader);
        }
    }
}

async fn read_head(c: &Client, st: &ReadStatements, conversation: &ConversationId) -> Result<Option<Head>, StoreError> {
    let row = c.query_opt(&st.head, &[&conversation.as_str()]).await.map_err(db("reading a head"))?;
    row.map(|row| {
        Ok(Head {
            epoch: col_u64(&row, 0, "epoch")?,
            last_seq: col_u64(&row, 1, "last_seq")?,
            first_seq: col_u64(&row, 2, "first_seq")?,
        })
    })
    .transpose()
}

/// A message from columns `MESSAGE_COLUMNS` of `row`.
fn decode(conversation: &ConversationId, row: &Row) -> Result<StoredMessage, StoreError> {
    let mentions = match col::<Option<String>>(row, 6, "mentions")? {
        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Inconsistent("bad mentions".into()))?,
        None => Vec::new(),
    };
    let flags = col::<i64>(row, 5, "flags")?;
    let priority = col::<i64>(row, 7, "priority")?;
    let priority = u8::try_from(priority)
        .ok()
        .and_then(Priority::from_code)
        .ok_or_else(|| StoreError::Inconsistent(format!("bad priority {priority}")))?;
    let state = col::<i64>(row, 9, "state")?;
    let state = u8::try_from(state)
        .ok()
        .and_then(MessageState::from_code)
        .ok_or_else(|| StoreError::Inconsistent(format!("bad state {state}")))?;
    Ok(StoredMessage {
        conversation: conversation.clone(),
        seq: col_u64(row, 0, "seq")?,
        sender: col(row, 1, "sender")?,
        client_id: col(row, 2, "client_id")?,
        kind: col(row, 3, "kind")?,
        payload: col(row, 4, "payload")?,
        flags: Flags {
            must_ack: flags & FLAG_MUST_ACK != 0,
            mention_all: flags & FLAG_MENTION_ALL != 0,
            mentions,
            priority,
            counted: flags & FLAG_NOT_COUNTED == 0,
        },
        server_time_ms: col_u64(row, 8, "server_time_ms")?,
        state,
    })
}

fn decode_all(conversation: &ConversationId, rows: &[Row]) -> Result<Vec<StoredMessage>, StoreError> {
    rows.iter().map(|row| decode(conversation, row)).collect()
}

async fn read_page(
    r: &mut Reader,
    conversation: &ConversationId,
    from: PageFrom,
    limit: usize,
) -> Result<Vec<StoredMessage>, StoreError> {
    let (c, st) = (&r.client, &r.st);
    let id = conversation.as_str();
    let limit = sql(limit as u64);
    let doing = "reading a page";
    let mut messages = match from {
        PageFrom::Before(seq) => {
            decode_all(conversation, &c.query(&st.page_before, &[&id, &sql(seq), &limit]).await.map_err(db(doing))?)?
        }
        PageFrom::After(seq) => {
            return decode_all(
                conversation,
                &c.query(&st.page_after, &[&id, &sql(seq), &limit]).await.map_err(db(doing))?,
            )
        }
        PageFrom::Latest => {
            decode_all(conversation, &c.query(&st.page_latest, &[&id, &limit]).await.map_err(db(doing))?)?
        }
    };
    messages.reverse();
    Ok(messages)
}

async fn read_range(
    r: &mut Reader,
    conversation: &ConversationId,
    after_seq: u64,
    up_to_seq: u64,
    max_replay: u64,
) -> Result<Replay, StoreError> {
    // One read-only snapshot: the head and the rows come from the same one.
    r.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(db("starting a replay"))?;
    let result = range_in_snapshot(r, conversation, after_seq, up_to_seq, max_replay).await;
    if !matches!(result, Err(StoreError::Backend(_))) {
        r.client.batch_execute("COMMIT").await.map_err(db("ending a replay"))?;
    }
    result
}

async fn range_in_snapshot(
    r: &Reader,
    conversation: &ConversationId,
    after_seq: u64,
    up_to_seq: u64,
    max_replay: u64,
) -> Result<Replay, StoreError> {
    let Some(head) = read_head(&r.client, &r.st, conversation).await? else {
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
    let rows = r
        .client
        .query(&r.st.range, &[&conversation.as_str(), &sql(after_seq), &sql(up_to)])
        .await
        .map_err(db("reading a replay"))?;
    let messages = decode_all(conversation, &rows)?;
    let contiguous = messages.iter().zip(after_seq + 1..).all(|(m, expected)| m.seq == expected);
    if messages.len() as u64 != want || !contiguous {
        return Err(StoreError::Inconsistent(format!(
            "{conversation}: replay of {}..={up_to} found {} messages",
            after_seq + 1,
            messages.len()
        )));
    }
    Ok(Replay::Messages { epoch: head.epoch, messages })
}

async fn read_conversations(r: &mut Reader, after: &str, limit: usize) -> Result<Vec<ConversationId>, StoreError> {
    let rows = r
        .client
        .query(&r.st.conversations, &[&after, &sql(limit as u64)])
        .await
        .map_err(db("listing conversations"))?;
    rows.iter()
        .map(|row| {
            let id: String = col(row, 0, "id")?;
            ConversationId::parse(&id).map_err(|_| StoreError::Inconsistent(format!("bad conversation id {id:?}")))
        })
        .collect()
}

async fn read_receipts(
    r: &mut Reader,
    conversation: &ConversationId,
    limit: usize,
) -> Result<Vec<Receipt>, StoreError> {
    let rows = r
        .client
        .query(&r.st.receipts, &[&conversation.as_str(), &sql(limit as u64)])
        .await
        .map_err(db("reading receipts"))?;
    rows.iter()
        .map(|row| {
            Ok(Receipt {
                identity: col(row, 0, "identity")?,
                delivered: col_u64(row, 1, "delivered_seq")?,
                read: col_u64(row, 2, "read_seq")?,
            })
        })
        .collect()
}

async fn read_unread(r: &mut Reader, conversation: &ConversationId, identity: &str) -> Result<u64, StoreError> {
    let row =
        r.client.query_one(&r.st.unread, &[&conversation.as_str(), &identity]).await.map_err(db("counting unread"))?;
    col_u64(&row, 0, "count")
}

async fn read_alert_status(
    r: &mut Reader,
    conversation: &ConversationId,
    seq: u64,
) -> Result<Option<AlertStatus>, StoreError> {
    let rows = r
        .client
        .query(&r.st.alert_status, &[&conversation.as_str(), &sql(seq)])
        .await
        .map_err(db("reading an alert"))?;
    let mut status = AlertStatus::default();
    for row in &rows {
        let identity: String = col(row, 0, "identity")?;
        match col::<Option<i64>>(row, 1, "acked_ms")? {
            Some(at) => status.acked.push((identity, unsql(at, "acked_ms")?)),
            None => status.pending.push(identity),
        }
    }
    Ok((!rows.is_empty()).then_some(status))
}

async fn read_pending_alerts(r: &mut Reader, identity: &str, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
    let rows = r
        .client
        .query(&r.st.pending_alerts, &[&identity, &sql(limit as u64)])
        .await
        .map_err(db("reading pending alerts"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let conversation: String = col(row, 10, "conversation")?;
        let conversation = ConversationId::parse(&conversation)
            .map_err(|_| StoreError::Inconsistent(format!("bad conversation id {conversation:?}")))?;
        out.push(decode(&conversation, row)?);
    }
    out.sort_by_key(|m| m.server_time_ms);
    Ok(out)
}

#[cfg(test)]
mod tests;
