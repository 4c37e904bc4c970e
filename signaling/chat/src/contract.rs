//! The [`ChatStore`] contract as tests that every backend runs.
//!
//! A backend's test module implements [`Backend`] (how to open its store, again on the same data or on new data)
//! and calls [`contract_tests!`], which makes one `#[tokio::test]` per test of this module, under the same name. The
//! tests only see `dyn ChatStore`, so what they check is the contract of `store.rs`, not one implementation.
//! Tests of one backend's own machinery (its queue, several servers on one database, benchmarks) stay beside it.

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;

use super::store::{
    Ack, AlertAck, Amend, ChatStore, CommitListener, Head, MessageState, PageFrom, Receipt, Replay, Retention,
    StoreError, StoredMessage, Tombstone, Trimmed,
};
use super::{ConversationId, Flags, InvalidInput, Limits, NewMessage, Priority};

/// What a test changes in a backend's configuration; `None` keeps the backend's default.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tuning {
    pub limits: Option<Limits>,
    pub max_batch: Option<usize>,
    pub max_replay: Option<u64>,
}

/// An open store, and how to close it.
pub(crate) struct Opened {
    store: Arc<dyn ChatStore>,
    close: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>,
}

impl Opened {
    /// `close` finishes what is queued and stops the store (the backend's own `close`).
    pub(crate) fn new(
        store: Arc<dyn ChatStore>,
        close: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
    ) -> Opened {
        Opened { store, close: Box::new(close) }
    }

    /// The store, to share with tasks.
    pub(crate) fn shared(&self) -> Arc<dyn ChatStore> {
        self.store.clone()
    }

    pub(crate) async fn close(self) {
        (self.close)().await;
    }
}

impl Deref for Opened {
    type Target = dyn ChatStore;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// A backend under test. Each test makes its own, so tests run in parallel on separate data.
pub(crate) trait Backend: Send + Sync {
    /// Open the store on this backend's data; every call opens the same data, so a second call is a restart.
    fn open(&self, tuning: Tuning) -> BoxFuture<'_, Opened>;
    /// Open a store on new, empty data of its own.
    fn open_fresh(&self, tuning: Tuning) -> BoxFuture<'_, Opened>;
}

/// One `#[tokio::test]` per contract test, for the backend that `$backend` makes: an expression giving a future of
/// `Option<impl Backend>` (`None` skips the tests, e.g. when no server is available).
macro_rules! contract_tests {
    ($backend:expr) => {
        $crate::contract::contract_tests!(@each $backend;
            concurrent_appends_get_contiguous_distinct_numbers,
            a_retry_returns_the_original_ack_and_stores_one_row,
            reopening_continues_the_sequence_with_the_same_epoch,
            pages_before_after_and_latest,
            range_replays_exactly_and_never_partially,
            tombstones_keep_the_sequence,
            flags_and_direct_conversations_round_trip,
            invalid_input_is_refused_and_nothing_is_stored,
            committed_messages_are_published_in_order_before_their_ack,
            recall_and_edit_are_sequenced_and_applied_to_their_target,
            receipts_only_move_forward_and_unread_counts_follow_them,
            alerts_track_who_has_acknowledged,
            conversations_are_listed_in_pages,
        );
    };
    (@each $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(backend) = $backend.await {
                    $crate::contract::$name(&backend).await;
                }
            }
        )*
    };
}
pub(crate) use contract_tests;

pub(crate) fn room(name: &str) -> ConversationId {
    ConversationId::room(name).unwrap()
}

pub(crate) fn msg(conversation: &ConversationId, sender: &str, client_id: &str) -> NewMessage {
    NewMessage {
        conversation: conversation.clone(),
        sender: sender.into(),
        client_id: client_id.into(),
        kind: "text".into(),
        payload: format!(r#"{{"text":"{client_id}"}}"#),
        flags: Flags::default(),
        amends: None,
        alert_to: Vec::new(),
    }
}

pub(crate) use crate::clock::now_ms;

pub(crate) async fn send(store: &dyn ChatStore, m: NewMessage) -> Ack {
    let mut acks = store.append(vec![m]).await.unwrap();
    assert_eq!(acks.len(), 1);
    acks.remove(0)
}

/// Every message of `conversation`, checked to be numbered `first..=last` without holes.
pub(crate) async fn all(store: &dyn ChatStore, conversation: &ConversationId) -> Vec<StoredMessage> {
    let mut out: Vec<StoredMessage> = Vec::new();
    loop {
        let after = out.last().map_or(0, |m| m.seq);
        let page = store.page(conversation, PageFrom::After(after), 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    assert!(out.windows(2).all(|w| w[1].seq == w[0].seq + 1), "holes in {conversation}");
    out
}

/// The benchmark knob `name`: a comma-separated list of numbers, or `default`.
pub(crate) fn bench_env(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect::<Vec<usize>>())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// `tasks` senders each append `per_task` messages to `conversation`, one at a time, as fast as acknowledged;
/// prints the throughput and acknowledgement latencies, and checks the count.
pub(crate) async fn bench_append(
    label: &str,
    store: Arc<dyn ChatStore>,
    conversation: &ConversationId,
    tasks: usize,
    per_task: usize,
) {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, conv) = (store.clone(), conversation.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let sent = Instant::now();
                    send(&*store, msg(&conv, &format!("u{t}"), &format!("m{i}"))).await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let n = latencies.len();
    println!(
        "bench {label}: {tasks} tasks x {per_task} = {n} msgs in {elapsed:.2?}: {:.0} msgs/s, ack latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        n as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies[n - 1],
    );
    assert_eq!(store.head(conversation).await.unwrap().unwrap().last_seq, n as u64);
}

// ---- the contract ----

pub(crate) async fn concurrent_appends_get_contiguous_distinct_numbers(backend: &dyn Backend) {
    let opened = backend.open(Tuning::default()).await;
    let store = opened.shared();
    let conv = room("lobby");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (store, conv) = (store.clone(), conv.clone());
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..500 {
                acks.push(send(&*store, msg(&conv, &format!("user{t}"), &format!("m{i}"))).await);
            }
            acks
        }));
    }
    let mut seqs = Vec::new();
    let mut epochs = HashSet::new();
    for task in tasks {
        let acks = task.await.unwrap();
        assert!(acks.windows(2).all(|w| w[0].seq < w[1].seq), "one sender's messages keep their order");
        assert!(acks.iter().all(|a| !a.duplicate));
        seqs.extend(acks.iter().map(|a| a.seq));
        epochs.extend(acks.iter().map(|a| a.epoch));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=4000).collect::<Vec<u64>>());
    assert_eq!(epochs.len(), 1);
    let head = store.head(&conv).await.unwrap().unwrap();
    assert_eq!((head.last_seq, head.first_seq, Some(&head.epoch)), (4000, 1, epochs.iter().next()));
    let stored = all(&*store, &conv).await;
    assert_eq!(stored.len(), 4000);
    assert!(stored.windows(2).all(|w| w[0].server_time_ms <= w[1].server_time_ms), "time never goes back");
}

pub(crate) async fn a_retry_returns_the_original_ack_and_stores_one_row(backend: &dyn Backend) {
    let conv = room("r");
    let original;
    {
        let store = backend.open(Tuning::default()).await;
        original = send(&*store, msg(&conv, "alice", "c1")).await;
        assert!(!original.duplicate);
        // Cached retry, retry in the same batch, and a concurrent pair.
        let again = send(&*store, msg(&conv, "alice", "c1")).await;
        assert_eq!(again, Ack { duplicate: true, ..original.clone() });
        let batch = store.append(vec![msg(&conv, "alice", "c2"), msg(&conv, "alice", "c2")]).await.unwrap();
        assert_eq!((batch[0].seq, batch[0].duplicate), (2, false));
        assert_eq!(batch[1], Ack { duplicate: true, ..batch[0].clone() });
        let (x, y) = tokio::join!(send(&*store, msg(&conv, "alice", "c3")), send(&*store, msg(&conv, "alice", "c3")));
        assert_eq!(x.seq, y.seq);
        assert!(x.duplicate != y.duplicate);
        // The same client id from another sender is another message.
        assert_eq!(send(&*store, msg(&conv, "bob", "c1")).await.seq, 4);
        assert_eq!(all(&*store, &conv).await.len(), 4);
        store.close().await;
    }
    // After a restart the cache is empty: the unique index answers.
    let store = backend.open(Tuning::default()).await;
    assert_eq!(send(&*store, msg(&conv, "alice", "c1")).await, Ack { duplicate: true, ..original });
    assert_eq!(all(&*store, &conv).await.len(), 4);
    assert_eq!(store.head(&conv).await.unwrap().unwrap().last_seq, 4);
}

pub(crate) async fn reopening_continues_the_sequence_with_the_same_epoch(backend: &dyn Backend) {
    let (a, b) = (room("a"), ConversationId::direct("zoe", "adam").unwrap());
    let mut acked = Vec::new();
    let epoch_a;
    {
        let store = backend.open(Tuning::default()).await;
        for i in 0..10 {
            acked.push(send(&*store, msg(&a, "alice", &format!("a{i}"))).await);
        }
        acked.push(send(&*store, msg(&b, "zoe", "b0")).await);
        epoch_a = acked[0].epoch;
        store.close().await;
    }
    {
        let store = backend.open(Tuning::default()).await;
        assert_eq!(store.head(&a).await.unwrap(), Some(Head { epoch: epoch_a, last_seq: 10, first_seq: 1 }));
        let next = send(&*store, msg(&a, "alice", "a10")).await;
        assert_eq!((next.seq, next.epoch), (11, epoch_a));
        acked.push(next);
        // Dropped without close: everything acknowledged is committed already.
        drop(store);
    }
    let store = backend.open(Tuning::default()).await;
    assert_eq!(send(&*store, msg(&a, "alice", "a11")).await.seq, 12);
    let stored = all(&*store, &a).await;
    for ack in acked.iter().filter(|x| x.conversation == a) {
        assert_eq!(stored[ack.seq as usize - 1].seq, ack.seq);
        assert_eq!(stored[ack.seq as usize - 1].server_time_ms, ack.server_time_ms);
    }
    let head_b = store.head(&b).await.unwrap().unwrap();
    assert_eq!((head_b.epoch, head_b.last_seq), (acked[10].epoch, 1));
    assert_ne!(head_b.epoch, epoch_a, "each conversation has its own epoch");
}

pub(crate) async fn pages_before_after_and_latest(backend: &dyn Backend) {
    let store = backend.open(Tuning::default()).await;
    let conv = room("p");
    let batch: Vec<_> = (1..=25).map(|i| msg(&conv, "alice", &format!("m{i}"))).collect();
    store.append(batch).await.unwrap();
    let seqs = |page: Vec<StoredMessage>| page.iter().map(|m| m.seq).collect::<Vec<_>>();
    let cases: &[(PageFrom, usize, (u64, u64))] = &[
        // (from, limit, (first, last) expected; first > last is none)
        (PageFrom::Latest, 5, (21, 25)),
        (PageFrom::Latest, 100, (1, 25)),
        (PageFrom::Before(10), 3, (7, 9)),
        (PageFrom::Before(3), 10, (1, 2)),
        (PageFrom::Before(1), 10, (1, 0)),
        (PageFrom::After(0), 4, (1, 4)),
        (PageFrom::After(22), 10, (23, 25)),
        (PageFrom::After(25), 10, (1, 0)),
        (PageFrom::Latest, 0, (1, 0)),
    ];
    for (from, limit, want) in cases {
        let got = seqs(store.page(&conv, *from, *limit).await.unwrap());
        assert_eq!(got, (want.0..=want.1).collect::<Vec<_>>(), "{from:?} limit {limit}");
    }
    let page = store.page(&conv, PageFrom::After(4), 1).await.unwrap();
    assert_eq!((page[0].client_id.as_str(), page[0].payload.as_deref()), ("m5", Some(r#"{"text":"m5"}"#)));
    assert!(store.page(&room("none"), PageFrom::Latest, 10).await.unwrap().is_empty());
    assert!(matches!(store.page(&conv, PageFrom::Latest, 1001).await, Err(StoreError::TooLarge { .. })));
}

pub(crate) async fn range_replays_exactly_and_never_partially(backend: &dyn Backend) {
    let store = backend.open(Tuning::default()).await;
    let conv = room("g");
    let acks = store.append((1..=20).map(|i| msg(&conv, "alice", &format!("m{i}"))).collect()).await.unwrap();
    let epoch = acks[0].epoch;
    let replay = |after, up_to| {
        let (store, conv) = (&store, &conv);
        async move {
            match store.range(conv, after, up_to).await.unwrap() {
                Replay::Messages { epoch: e, messages } => {
                    assert_eq!(e, epoch);
                    Ok(messages.iter().map(|m| m.seq).collect::<Vec<_>>())
                }
                Replay::NotRecovered { first_seq, .. } => Err(first_seq),
                Replay::UnknownConversation => panic!("unknown"),
            }
        }
    };
    assert_eq!(replay(5, 9).await, Ok((6..=9).collect()));
    assert_eq!(replay(0, 20).await, Ok((1..=20).collect()));
    assert_eq!(replay(15, 999).await, Ok((16..=20).collect()), "capped at the last issued number");
    assert_eq!(replay(20, 20).await, Ok(vec![]));
    // Retention keeps the newest 12: first_seq becomes 9.
    let trimmed = store.trim(&conv, Retention { max_count: Some(12), max_age_ms: None }, 0).await.unwrap();
    assert_eq!(trimmed, Some(Trimmed { removed: 8, first_seq: 9 }));
    assert_eq!(store.head(&conv).await.unwrap(), Some(Head { epoch, last_seq: 20, first_seq: 9 }));
    assert_eq!(replay(8, 20).await, Ok((9..=20).collect()), "the gap starts at the first retained message");
    assert_eq!(replay(7, 20).await, Err(9), "message 8 is gone: nothing is replayed");
    assert_eq!(replay(0, 3).await, Err(9));
    assert_eq!(store.range(&room("nope"), 0, 5).await.unwrap(), Replay::UnknownConversation);
    // Sequencing goes on after a trim; trimming by age takes everything older.
    assert_eq!(send(&*store, msg(&conv, "alice", "m21")).await.seq, 21);
    let far_future = now_ms() + 3_600_000;
    let trimmed = store.trim(&conv, Retention { max_age_ms: Some(1000), max_count: None }, far_future).await.unwrap();
    assert_eq!(trimmed, Some(Trimmed { removed: 13, first_seq: 22 }));
    assert_eq!(store.head(&conv).await.unwrap(), Some(Head { epoch, last_seq: 21, first_seq: 22 }));
    assert_eq!(replay(21, 21).await, Ok(vec![]));
    assert_eq!(replay(20, 21).await, Err(22));
    assert_eq!(store.trim(&room("nope"), Retention::default(), 0).await.unwrap(), None);
    // Replays are bounded.
    let small = backend.open_fresh(Tuning { max_replay: Some(3), ..Default::default() }).await;
    small.append((1..=5).map(|i| msg(&conv, "a", &format!("{i}"))).collect()).await.unwrap();
    assert!(matches!(small.range(&conv, 0, 5).await, Err(StoreError::TooLarge { .. })));
}

pub(crate) async fn tombstones_keep_the_sequence(backend: &dyn Backend) {
    let store = backend.open(Tuning::default()).await;
    let (conv, other) = (room("t"), room("t2"));
    store
        .append(vec![
            msg(&conv, "alice", "1"),
            msg(&conv, "bob", "2"),
            msg(&conv, "alice", "3"),
            msg(&conv, "bob", "4"),
            msg(&other, "alice", "5"),
        ])
        .await
        .unwrap();
    assert!(store.tombstone(&conv, 1, Tombstone::Recall).await.unwrap());
    assert!(!store.tombstone(&conv, 1, Tombstone::Recall).await.unwrap(), "already recalled");
    assert!(!store.tombstone(&conv, 1, Tombstone::Edit { payload: "2".into() }).await.unwrap(), "recalled stays");
    assert!(store.tombstone(&conv, 2, Tombstone::Edit { payload: r#"{"text":"fixed"}"#.into() }).await.unwrap());
    assert!(!store.tombstone(&conv, 99, Tombstone::Erase).await.unwrap(), "no such message");
    let bad = store.tombstone(&conv, 2, Tombstone::Edit { payload: "{".into() }).await;
    assert!(matches!(bad, Err(StoreError::Invalid { source: InvalidInput::PayloadNotJson, .. })));
    assert_eq!(store.erase_identity("alice").await.unwrap(), 3, "1 (recalled), 3 and the one in t2");
    assert_eq!(store.erase_identity("alice").await.unwrap(), 0);
    let stored = all(&*store, &conv).await;
    let view: Vec<_> = stored.iter().map(|m| (m.seq, m.state, m.payload.as_deref())).collect();
    assert_eq!(
        view,
        vec![
            (1, MessageState::Erased, None),
            (2, MessageState::Edited, Some(r#"{"text":"fixed"}"#)),
            (3, MessageState::Erased, None),
            (4, MessageState::Normal, Some(r#"{"text":"4"}"#)),
        ]
    );
    assert_eq!(all(&*store, &other).await[0].state, MessageState::Erased);
    assert_eq!(store.head(&conv).await.unwrap().map(|h| (h.first_seq, h.last_seq)), Some((1, 4)));
    // A retry of an erased message is still a duplicate, not a new message.
    assert!(send(&*store, msg(&conv, "alice", "3")).await.duplicate);
}

pub(crate) async fn conversations_are_listed_in_pages(backend: &dyn Backend) {
    let store = backend.open_fresh(Tuning::default()).await;
    assert!(store.conversations(None, 10).await.unwrap().is_empty());
    let mut ids = [room("b"), room("a"), ConversationId::direct("x", "y").unwrap(), room("c")];
    for (i, c) in ids.iter().enumerate() {
        send(&*store, msg(c, "alice", &format!("m{i}"))).await;
    }
    ids.sort();
    let first = store.conversations(None, 3).await.unwrap();
    assert_eq!(first, ids[..3]);
    let rest = store.conversations(first.last(), 3).await.unwrap();
    assert_eq!(rest, ids[3..]);
    assert!(store.conversations(rest.last(), 3).await.unwrap().is_empty());
}

pub(crate) async fn flags_and_direct_conversations_round_trip(backend: &dyn Backend) {
    let store = backend.open(Tuning::default()).await;
    let ab = ConversationId::direct("bob", "alice").unwrap();
    let mut m = msg(&ab, "bob", "x");
    m.kind = "app.poll".into();
    m.flags = Flags {
        must_ack: true,
        mention_all: true,
        mentions: vec!["alice".into()],
        priority: Priority::High,
        counted: false,
    };
    send(&*store, m.clone()).await;
    let reply = msg(&ConversationId::direct("alice", "bob").unwrap(), "alice", "y");
    assert_eq!(send(&*store, reply).await.seq, 2, "both sides write the same conversation");
    let stored = all(&*store, &ab).await;
    assert_eq!((stored[0].kind.as_str(), &stored[0].flags), ("app.poll", &m.flags));
    assert_eq!(stored[1].flags, Flags::default());
}

pub(crate) async fn invalid_input_is_refused_and_nothing_is_stored(backend: &dyn Backend) {
    let limits = Limits { max_payload_bytes: 64 };
    let store = backend.open_fresh(Tuning { limits: Some(limits), max_batch: Some(3), ..Default::default() }).await;
    let conv = room("big");
    let mut big = msg(&conv, "alice", "2");
    big.payload = format!(r#"{{"text":"{}"}}"#, "x".repeat(100));
    let err = store.append(vec![msg(&conv, "alice", "1"), big]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { index: 1, source: InvalidInput::PayloadTooLarge { max: 64, .. } }),
        "{err:?}"
    );
    let too_many = (0..4).map(|i| msg(&conv, "alice", &i.to_string())).collect();
    assert!(matches!(store.append(too_many).await, Err(StoreError::TooLarge { what: "batch", .. })));
    assert!(matches!(store.erase_identity("a:b").await, Err(StoreError::Invalid { .. })));
    assert_eq!(store.head(&conv).await.unwrap(), None, "nothing of the batch was stored");
    assert_eq!(store.append(vec![]).await.unwrap(), vec![]);
}

/// Records what the writer publishes.
#[derive(Default)]
pub(crate) struct Recorder(pub Mutex<Vec<(ConversationId, u64)>>);

impl CommitListener for Recorder {
    fn committed(&self, messages: &[StoredMessage]) {
        self.0.lock().unwrap().extend(messages.iter().map(|m| (m.conversation.clone(), m.seq)));
    }
}

pub(crate) async fn committed_messages_are_published_in_order_before_their_ack(backend: &dyn Backend) {
    let opened = backend.open(Tuning::default()).await;
    let store = opened.shared();
    let recorder = Arc::new(Recorder::default());
    store.set_listener(recorder.clone());
    let (a, b) = (room("a"), room("b"));
    let mut tasks = Vec::new();
    for sender in 0..8 {
        let (store, recorder, a, b) = (store.clone(), recorder.clone(), a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let c = if i % 2 == 0 { &a } else { &b };
                let ack = send(&*store, msg(c, &format!("s{sender}"), &format!("m{i}"))).await;
                let seen = recorder.0.lock().unwrap().contains(&(c.clone(), ack.seq));
                assert!(seen, "published before acknowledged");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A retry is not published again.
    let dup = send(&*store, msg(&a, "s0", "m0")).await;
    assert!(dup.duplicate);
    let published = recorder.0.lock().unwrap().clone();
    assert_eq!(published.len(), 400);
    for c in [&a, &b] {
        let seqs: Vec<u64> = published.iter().filter(|(x, _)| x == c).map(|(_, s)| *s).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "{c}: published in sequence order, once each");
    }
}

pub(crate) async fn recall_and_edit_are_sequenced_and_applied_to_their_target(backend: &dyn Backend) {
    let store = backend.open(Tuning::default()).await;
    let c = room("r");
    send(&*store, msg(&c, "alice", "m1")).await;
    send(&*store, msg(&c, "alice", "m2")).await;
    let mut edit = msg(&c, "alice", "e1");
    edit.kind = "chat.edit".into();
    edit.payload = r#"{"seq":1,"payload":{"text":"fixed"}}"#.into();
    edit.amends = Some(Amend { seq: 1, change: Tombstone::Edit { payload: r#"{"text":"fixed"}"#.into() } });
    assert_eq!(send(&*store, edit.clone()).await.seq, 3);
    let mut recall = msg(&c, "alice", "r1");
    recall.kind = "chat.recall".into();
    recall.payload = r#"{"seq":2}"#.into();
    recall.amends = Some(Amend { seq: 2, change: Tombstone::Recall });
    assert_eq!(send(&*store, recall.clone()).await.seq, 4);
    // Retries change nothing.
    assert!(send(&*store, recall).await.duplicate);
    let msgs = all(&*store, &c).await;
    assert_eq!(msgs.len(), 4);
    assert_eq!((msgs[0].state, msgs[0].payload.as_deref()), (MessageState::Edited, Some(r#"{"text":"fixed"}"#)));
    assert_eq!((msgs[1].state, msgs[1].payload.as_deref()), (MessageState::Recalled, None));
    assert_eq!(msgs[2].kind, "chat.edit");
    assert_eq!(msgs[3].kind, "chat.recall");
    // An edit of a recalled message is stored as an event but does not bring the payload back.
    let mut late = msg(&c, "alice", "e2");
    late.kind = "chat.edit".into();
    late.amends = Some(Amend { seq: 2, change: Tombstone::Edit { payload: "1".into() } });
    send(&*store, late).await;
    let msgs = all(&*store, &c).await;
    assert_eq!((msgs[1].state, msgs[1].payload.as_deref()), (MessageState::Recalled, None));
}

pub(crate) async fn receipts_only_move_forward_and_unread_counts_follow_them(backend: &dyn Backend) {
    let store = backend.open(Tuning::default()).await;
    let c = ConversationId::direct("alice", "bob").unwrap();
    assert_eq!(store.set_receipt(&c, "bob", 1, 0).await.unwrap(), None, "unknown conversation");
    for i in 0..5 {
        send(&*store, msg(&c, "alice", &format!("m{i}"))).await;
    }
    let mut quiet = msg(&c, "alice", "notice");
    quiet.flags.counted = false;
    send(&*store, quiet).await;
    send(&*store, msg(&c, "bob", "reply")).await;
    assert_eq!(store.unread(&c, "bob").await.unwrap(), 5, "counted messages from others");
    assert_eq!(store.unread(&c, "alice").await.unwrap(), 1);
    let r = store.set_receipt(&c, "bob", 4, 2).await.unwrap().unwrap();
    assert_eq!((r.delivered, r.read), (4, 2));
    let r = store.set_receipt(&c, "bob", 1, 1).await.unwrap().unwrap();
    assert_eq!((r.delivered, r.read), (4, 2), "never backwards");
    let r = store.set_receipt(&c, "bob", 0, 100).await.unwrap().unwrap();
    assert_eq!((r.delivered, r.read), (7, 7), "read raises delivered; clamped to the last number");
    assert_eq!(store.unread(&c, "bob").await.unwrap(), 0);
    drop(store);
    let store = backend.open(Tuning::default()).await;
    let all_receipts = store.receipts(&c, 10).await.unwrap();
    assert_eq!(all_receipts, vec![Receipt { identity: "bob".into(), delivered: 7, read: 7 }]);
    store.erase_identity("bob").await.unwrap();
    assert!(store.receipts(&c, 10).await.unwrap().is_empty(), "erasure removes receipts");
}

pub(crate) async fn alerts_track_who_has_acknowledged(backend: &dyn Backend) {
    let store = backend.open(Tuning::default()).await;
    let c = room("crew");
    send(&*store, msg(&c, "captain", "hello")).await;
    let mut alert = msg(&c, "captain", "pushback");
    alert.flags.must_ack = true;
    alert.alert_to = vec!["fo".into(), "purser".into()];
    let seq = send(&*store, alert.clone()).await.seq;
    // The retry does not ask again.
    assert!(send(&*store, alert).await.duplicate);
    assert_eq!(store.alert_status(&c, 1).await.unwrap(), None);
    let pending = store.pending_alerts("fo", 10).await.unwrap();
    assert_eq!(pending.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![seq]);
    assert!(pending[0].flags.must_ack);
    assert!(matches!(store.ack_alert(&c, seq, "fo").await.unwrap(), AlertAck::Acked { .. }));
    assert!(matches!(store.ack_alert(&c, seq, "fo").await.unwrap(), AlertAck::AlreadyAcked { .. }));
    assert_eq!(store.ack_alert(&c, seq, "stranger").await.unwrap(), AlertAck::NotAsked);
    assert!(store.pending_alerts("fo", 10).await.unwrap().is_empty());
    let status = store.alert_status(&c, seq).await.unwrap().unwrap();
    assert_eq!(status.acked.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), vec!["fo"]);
    assert_eq!(status.pending, vec!["purser".to_string()]);
}
