//! Tests of the SQLite store on temporary databases: the shared contract ([`crate::contract`]) and what is
//! particular to this store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::*;
use crate::contract::{self, msg, room, Backend, Opened, Tuning};

/// SQLite databases in one temporary directory: `chat.sqlite3` is the store's data, fresh ones get a file each.
struct Sqlite {
    dir: tempfile::TempDir,
    fresh: AtomicUsize,
}

impl Sqlite {
    async fn new() -> Option<Sqlite> {
        Some(Sqlite { dir: tempfile::tempdir().unwrap(), fresh: AtomicUsize::new(0) })
    }

    async fn open_at(path: PathBuf, tuning: Tuning) -> Opened {
        let defaults = SqliteConfig::default();
        let config = SqliteConfig {
            limits: tuning.limits.unwrap_or(defaults.limits),
            max_batch: tuning.max_batch.unwrap_or(defaults.max_batch),
            max_replay: tuning.max_replay.unwrap_or(defaults.max_replay),
            ..defaults
        };
        let store = Arc::new(SqliteStore::open(path, config).await.unwrap());
        let closer = store.clone();
        Opened::new(store, move || Box::pin(async move { closer.close().await }))
    }
}

impl Backend for Sqlite {
    fn open(&self, tuning: Tuning) -> BoxFuture<'_, Opened> {
        Box::pin(Sqlite::open_at(SqliteStore::path_in(self.dir.path()), tuning))
    }

    fn open_fresh(&self, tuning: Tuning) -> BoxFuture<'_, Opened> {
        let n = self.fresh.fetch_add(1, Ordering::Relaxed);
        Box::pin(Sqlite::open_at(self.dir.path().join(format!("fresh{n}.sqlite3")), tuning))
    }
}

contract::contract_tests!(Sqlite::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_overloaded_not_unbounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite3");
    let config = SqliteConfig { queue_capacity: 1, busy_timeout: Duration::from_secs(30), ..Default::default() };
    let store = SqliteStore::open(&path, config).await.unwrap();
    let conv = room("q");
    // Another connection holds the write lock, so the writer blocks in its first transaction.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
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
    blocker.execute_batch("COMMIT").unwrap();
    let mut acked = 0;
    for f in pending {
        acked += tokio::time::timeout(Duration::from_secs(10), f).await.unwrap().unwrap().len();
    }
    assert_eq!(acked, 3 - overloaded);
    assert_eq!(store.head(&conv).await.unwrap().unwrap().last_seq, acked as u64);
}

/// Append throughput with group commit. Run it with
/// `cargo test --release -p signaling chat::sqlite::tests::bench -- --ignored --nocapture`
/// (`BENCH_TASKS`, a number or a list like `1,4,32`, and `BENCH_PER_TASK` change the load; `BENCH_DIR` picks the
/// disk, default the temporary directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_append_throughput() {
    let per_task = contract::bench_env("BENCH_PER_TASK", &[5000])[0];
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = Arc::new(SqliteStore::open(SqliteStore::path_in(dir.path()), SqliteConfig::default()).await.unwrap());
    for tasks in contract::bench_env("BENCH_TASKS", &[4]) {
        let conv = room(&format!("bench{tasks}"));
        contract::bench_append("sqlite", store.clone(), &conv, tasks, per_task).await;
    }
}
