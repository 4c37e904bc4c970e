//! Tests of the PostgreSQL store against a real server: the shared contract ([`crate::contract`]) and what
//! is particular to this store (several servers on one database, the queue, the durability check).
//!
//! They need `COURIER_TEST_POSTGRES_URL`, the URL of a server where its user may create databases
//! (`scripts/postgres.sh start DIR` prints one; `scripts/test.sh` sets it). Each test works in a database of its
//! own with a random name, so tests run in parallel. Without the variable the tests are skipped, unless `CI` is
//! set: then they fail.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_postgres::NoTls;

use super::*;
use crate::contract::{self, all, msg, room, send, Backend, Opened, Tuning};

const URL_VAR: &str = "COURIER_TEST_POSTGRES_URL";

/// The server to test against, or `None` (after saying so) when there is none and this is not CI.
fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{URL_VAR} is not set, and CI is: the PostgreSQL tests must run in CI (scripts/test.sh starts a server)"
            );
            eprintln!("skipped: {URL_VAR} not set");
            None
        }
    }
}

/// `url` with its database replaced by `dbname`; `url` is a `postgres://` URL or libpq `key=value` pairs.
fn with_dbname(url: &str, dbname: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={dbname}");
    };
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = base[scheme_end + 3..].find('/').map_or(base.len(), |i| scheme_end + 3 + i);
    format!("{}/{dbname}{query}", &base[..authority_end])
}

async fn admin(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect to the test server");
    tokio::spawn(connection);
    client
}

/// A new database with a random name on the test server; its URL.
async fn create_database(server: &str) -> (String, String) {
    let name = format!("courier_test_{:016x}", rand::random::<u64>());
    admin(server).await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create a test database");
    (name.clone(), with_dbname(server, &name))
}

fn config(tuning: Tuning) -> PostgresConfig {
    let defaults = PostgresConfig::default();
    PostgresConfig {
        limits: tuning.limits.unwrap_or(defaults.limits),
        max_batch: tuning.max_batch.unwrap_or(defaults.max_batch),
        max_replay: tuning.max_replay.unwrap_or(defaults.max_replay),
        ..defaults
    }
}

async fn connect(url: &str, config: PostgresConfig) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::connect(url, config).await.unwrap())
}

fn opened(store: Arc<PostgresStore>) -> Opened {
    let closer = store.clone();
    Opened::new(store, move || Box::pin(async move { closer.close().await }))
}

/// A database of its own on the test server; fresh stores get another each.
struct Postgres {
    server: String,
    url: String,
    databases: Mutex<Vec<String>>,
}

impl Postgres {
    async fn new() -> Option<Postgres> {
        let server = server_url()?;
        let (name, url) = create_database(&server).await;
        Some(Postgres { server, url, databases: Mutex::new(vec![name]) })
    }
}

impl Drop for Postgres {
    /// Drop the test's databases, on a thread of its own (this may run inside the test's runtime).
    fn drop(&mut self) {
        let server = self.server.clone();
        let names = std::mem::take(&mut *self.databases.lock().unwrap());
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                let Ok((client, connection)) = tokio_postgres::connect(&server, NoTls).await else { return };
                tokio::spawn(connection);
                for name in names {
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        });
        let _ = dropper.join();
    }
}

impl Backend for Postgres {
    fn open(&self, tuning: Tuning) -> BoxFuture<'_, Opened> {
        Box::pin(async move { opened(connect(&self.url, config(tuning)).await) })
    }

    fn open_fresh(&self, tuning: Tuning) -> BoxFuture<'_, Opened> {
        Box::pin(async move {
            let (name, url) = create_database(&self.server).await;
            self.databases.lock().unwrap().push(name);
            opened(connect(&url, config(tuning)).await)
        })
    }
}

contract::contract_tests!(Postgres::new());

#[test]
fn database_names_go_into_urls_and_key_value_strings() {
    let cases = [
        ("postgres://u:p@127.0.0.1:5/postgres", "postgres://u:p@127.0.0.1:5/x"),
        ("postgresql://u@h/db?sslmode=disable", "postgresql://u@h/x?sslmode=disable"),
        ("postgres://h:5", "postgres://h:5/x"),
        ("postgres://h?connect_timeout=3", "postgres://h/x?connect_timeout=3"),
        ("host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=x"),
    ];
    for (url, want) in cases {
        assert_eq!(with_dbname(url, "x"), want);
    }
}

/// Two servers (two stores, each with its own writer, cache and connections) on one database, appending
/// concurrently to the same conversations, in batches that lock two conversations in either order, and each
/// retrying some messages on the other server: every conversation is numbered 1..=n without holes or repeats, a
/// retry anywhere gets the original acknowledgement, and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_sequence_and_one_set_of_retries() {
    let Some(backend) = Postgres::new().await else { return };
    // Both start on an empty database at once: the schema is migrated once.
    let (one, two) = tokio::join!(
        connect(&backend.url, PostgresConfig::default()),
        connect(&backend.url, PostgresConfig::default())
    );
    let servers = [one, two];
    let (a, b) = (room("shared"), room("other"));
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let here = servers[t % 2].clone();
        let there = servers[(t + 1) % 2].clone();
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let sender = format!("user{t}");
            let mut acks = Vec::new();
            for i in 0..60 {
                let batch = if i % 4 == 0 {
                    let pair = vec![msg(&a, &sender, &format!("p{i}")), msg(&b, &sender, &format!("p{i}"))];
                    if t % 2 == 0 {
                        pair
                    } else {
                        pair.into_iter().rev().collect()
                    }
                } else {
                    vec![msg(&a, &sender, &format!("m{i}"))]
                };
                let got = here.append(batch.clone()).await.unwrap();
                assert!(got.iter().all(|ack| !ack.duplicate));
                if i % 3 == 0 {
                    let again = there.append(batch).await.unwrap();
                    for (first, retry) in got.iter().zip(&again) {
                        assert_eq!(retry, &Ack { duplicate: true, ..first.clone() }, "a retry on the other server");
                    }
                }
                acks.extend(got);
            }
            acks
        }));
    }
    let mut seqs: HashMap<ConversationId, Vec<u64>> = HashMap::new();
    let mut epochs: HashMap<ConversationId, HashSet<u64>> = HashMap::new();
    for task in tasks {
        for ack in task.await.unwrap() {
            seqs.entry(ack.conversation.clone()).or_default().push(ack.seq);
            epochs.entry(ack.conversation.clone()).or_default().insert(ack.epoch);
        }
    }
    // Per sender: 60 messages to a, of which 15 in pairs, which also put 15 into b.
    for (conversation, n) in [(&a, 8 * 60), (&b, 8 * 15)] {
        let mut got = seqs.remove(conversation).unwrap();
        got.sort_unstable();
        assert_eq!(got, (1..=n as u64).collect::<Vec<_>>(), "{conversation}");
        assert_eq!(epochs[conversation].len(), 1, "{conversation}: one epoch, whoever created it");
        for server in &servers {
            let stored = all(&**server, conversation).await;
            assert_eq!(stored.len(), n, "{conversation}: stored once each, seen by both servers");
            assert!(stored.windows(2).all(|w| w[0].server_time_ms <= w[1].server_time_ms), "time never goes back");
            assert_eq!(server.head(conversation).await.unwrap().map(|h| h.last_seq), Some(n as u64));
        }
    }
    for server in servers {
        server.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_overloaded_not_unbounded() {
    let Some(backend) = Postgres::new().await else { return };
    let config = PostgresConfig { queue_capacity: 1, lock_timeout: Duration::from_secs(30), ..Default::default() };
    let store = connect(&backend.url, config).await;
    let conv = room("q");
    send(&*store, msg(&conv, "a", "first")).await;
    // Another connection holds the conversation, so the writer waits in its first transaction.
    let blocker = admin(&backend.url).await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", &[&conv.as_str()]).await.unwrap();
    let mut pending = Vec::new();
    let mut overloaded = 0;
    for i in 0..3 {
        let mut f = store.append(vec![msg(&conv, "a", &i.to_string())]);
        match futures::poll!(&mut f) {
            std::task::Poll::Ready(r) => {
                assert!(matches!(r, Err(StoreError::Overloaded)), "{r:?}");
                overloaded += 1;
            }
            std::task::Poll::Pending => pending.push(f),
        }
    }
    assert!(overloaded >= 1, "capacity 1 cannot hold 3 requests");
    blocker.batch_execute("COMMIT").await.unwrap();
    let mut acked = 0;
    for f in pending {
        acked += tokio::time::timeout(Duration::from_secs(10), f).await.unwrap().unwrap().len();
    }
    assert_eq!(acked, 3 - overloaded);
    assert_eq!(store.head(&conv).await.unwrap().unwrap().last_seq, 1 + acked as u64);
}

/// Another client locks conversations in the opposite order to the writer (no Courier server does: they all lock
/// by id), so PostgreSQL finds a deadlock and aborts one of the two transactions, usually the writer's, which
/// started waiting first. The writer runs the group again, and the append succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_aborted_by_a_deadlock_is_run_again() {
    let Some(backend) = Postgres::new().await else { return };
    let config = PostgresConfig { lock_timeout: Duration::from_secs(30), ..Default::default() };
    let store = connect(&backend.url, config).await;
    let (a, b) = (room("a"), room("b"));
    store.append(vec![msg(&a, "x", "0"), msg(&b, "x", "0")]).await.unwrap();
    let other = admin(&backend.url).await;
    let lock = "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE";
    other.batch_execute("BEGIN").await.unwrap();
    other.execute(lock, &[&b.as_str()]).await.unwrap();
    let append = tokio::spawn({
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        async move { store.append(vec![msg(&a, "x", "1"), msg(&b, "x", "1")]).await }
    });
    // Wait until the writer holds a and waits for b.
    let name = backend.databases.lock().unwrap()[0].clone();
    let watcher = admin(&backend.server).await;
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watcher.query_one(waiting, &[&name]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the writer never waited for b");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Close the cycle. Whichever transaction PostgreSQL aborts, the append must succeed.
    match other.execute(lock, &[&a.as_str()]).await {
        Ok(_) => other.batch_execute("COMMIT").await.unwrap(),
        Err(e) => {
            assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED), "{e:?}");
            other.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    let acks = tokio::time::timeout(Duration::from_secs(20), append).await.unwrap().unwrap().unwrap();
    assert_eq!(acks.iter().map(|ack| (ack.seq, ack.duplicate)).collect::<Vec<_>>(), vec![(2, false), (2, false)]);
    for c in [&a, &b] {
        assert_eq!(all(&*store, c).await.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_durable_commits_is_refused() {
    let Some(backend) = Postgres::new().await else { return };
    let name = backend.databases.lock().unwrap()[0].clone();
    let server = admin(&backend.server).await;
    server.batch_execute(&format!("ALTER DATABASE {name} SET synchronous_commit = off")).await.unwrap();
    let err = PostgresStore::connect(&backend.url, PostgresConfig::default()).await.unwrap_err();
    assert!(matches!(&err, StoreError::Backend(e) if e.to_string().contains("synchronous_commit")), "{err:?}");
    server.batch_execute(&format!("ALTER DATABASE {name} SET synchronous_commit = on")).await.unwrap();
    let store = connect(&backend.url, PostgresConfig::default()).await;
    assert_eq!(send(&*store, msg(&room("ok"), "a", "1")).await.seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_reconnects_after_losing_its_connection() {
    let Some(backend) = Postgres::new().await else { return };
    let store = connect(&backend.url, PostgresConfig::default()).await;
    let conv = room("r");
    assert_eq!(send(&*store, msg(&conv, "a", "1")).await.seq, 1);
    // Cut every connection of the store (the writer's and the readers').
    let server = admin(&backend.server).await;
    let name = backend.databases.lock().unwrap()[0].clone();
    server
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .unwrap();
    // The first request after the cut may fail (it is not acknowledged, so it is not stored); then it works.
    let mut seq = None;
    for _ in 0..3 {
        match store.append(vec![msg(&conv, "a", "2")]).await {
            Ok(acks) => {
                seq = Some(acks[0].seq);
                break;
            }
            Err(StoreError::Backend(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seq, Some(2));
    let mut head = None;
    for _ in 0..3 {
        if let Ok(h) = store.head(&conv).await {
            head = h;
            break;
        }
    }
    assert_eq!(head.map(|h| h.last_seq), Some(2));
}

/// Append throughput with group commit against the test server, for 1, 4 and 32 concurrent senders. Run it with
/// `COURIER_TEST_POSTGRES_URL=… cargo test --release -p signaling chat::postgres::tests::bench -- --ignored --nocapture`
/// (`BENCH_TASKS`, a list like `1,4,32`, and `BENCH_PER_TASK` change the load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_append_throughput() {
    let Some(backend) = Postgres::new().await else { return };
    let per_task = contract::bench_env("BENCH_PER_TASK", &[2000])[0];
    let store = connect(&backend.url, PostgresConfig::default()).await;
    for tasks in contract::bench_env("BENCH_TASKS", &[1, 4, 32]) {
        let conv = room(&format!("bench{tasks}"));
        contract::bench_append("postgres", store.clone(), &conv, tasks, per_task).await;
    }
}

/// `sslmode` in either URL form; none at all stays plain TCP (unlike libpq's default), libpq's `verify-*` modes
/// are `require`, unknown modes are a parse error. Needs no server.
#[test]
fn tls_mode_from_the_url() {
    for (url, want) in [
        ("postgres://courier@db.internal/chat", Some(TlsMode::Off)),
        ("postgres://courier@db.internal/chat?sslmode=disable", Some(TlsMode::Off)),
        ("postgresql://courier@db.internal/chat?application_name=x&sslmode=prefer", Some(TlsMode::Prefer)),
        ("postgres://courier:pw@db.internal:5433/chat?sslmode=require", Some(TlsMode::Require)),
        ("postgres://courier:sslmode@db.internal/chat", Some(TlsMode::Off)),
        ("host=db.internal user=courier dbname=chat", Some(TlsMode::Off)),
        ("host=db.internal user=courier sslmode=require", Some(TlsMode::Require)),
        ("host=db.internal sslmode=prefer user=courier", Some(TlsMode::Prefer)),
        ("host=db.internal sslmode=disable", Some(TlsMode::Off)),
        ("postgres://courier@db.internal/chat?sslmode=verify-full", Some(TlsMode::Require)),
        ("host=db.internal sslmode=verify-ca", Some(TlsMode::Require)),
        ("postgres://courier@db.internal/chat?sslmode=sometimes", None),
    ] {
        assert_eq!(TlsMode::of_url(url).ok(), want, "{url}");
    }
}

/// TLS end to end, against a server with `ssl = on` whose certificate a test CA signed: `COURIER_TEST_POSTGRES_TLS_URL`
/// (its URL, no `sslmode`) and `COURIER_TEST_POSTGRES_TLS_CA` (the CA's PEM file). Skipped without them, CI
/// included (scripts/test.sh does not start such a server). `verify-full` (taken as `require`) with the CA connects
/// over TLS; with only the Mozilla roots it fails the handshake; no `sslmode` connects in plain TCP.
#[tokio::test]
async fn tls_when_the_url_asks_for_it() {
    let (Ok(url), Ok(ca)) =
        (std::env::var("COURIER_TEST_POSTGRES_TLS_URL"), std::env::var("COURIER_TEST_POSTGRES_TLS_CA"))
    else {
        eprintln!("skipped: COURIER_TEST_POSTGRES_TLS_URL and COURIER_TEST_POSTGRES_TLS_CA not set");
        return;
    };
    use rustls::pki_types::pem::PemObject;
    let (_, url) = create_database(&url).await;
    let sep = if url.contains('?') { '&' } else { '?' };
    let require = format!("{url}{sep}sslmode=verify-full");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let with_ca = PostgresConfig { tls_roots: Some(Arc::new(roots)), ..PostgresConfig::default() };
    let uses_tls = |client: Client| async move {
        let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
        row.get::<_, bool>(0)
    };

    let client = open_client(&Dial::new(&require, &with_ca).unwrap()).await.unwrap();
    assert!(uses_tls(client).await, "sslmode=require with the CA: TLS");
    let client = open_client(&Dial::new(&url, &with_ca).unwrap()).await.unwrap();
    assert!(!uses_tls(client).await, "no sslmode: plain TCP");
    let refused = open_client(&Dial::new(&require, &PostgresConfig::default()).unwrap()).await;
    assert!(refused.is_err(), "the test CA is not a Mozilla root");
    let store = PostgresStore::connect(&require, with_ca).await.unwrap();
    store.close().await;
}
