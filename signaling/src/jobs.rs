//! The server's background jobs in one place: the room lifecycle tick, chat retention, the word-file poll, the
//! aggregate flush and the TLS certificate reload. Each runs on the server's [`Jobs`] (one task tracker, one cancellation token); shutdown cancels
//! them and waits for the runs in progress to end, instead of polling or leaving tasks behind.
//!
//! A run is never cut in the middle: cancellation is looked at between runs, so a lifecycle transition or a
//! retention trim either happens whole or not at all, and the final room-store write at shutdown never races the
//! tick's. Jobs hold the server state weakly: a server dropped without a shutdown (tests) ends them too.
//!
//! The webhook senders and the alert checker are the [`crate::webhook`] module's own tasks, stopped after these so
//! the events of the last runs still go out.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::AppState;
use courier_chat::store::ChatStore;

/// How often room lifecycles are checked (and kept room definitions written).
pub const LIFECYCLE_TICK: Duration = Duration::from_secs(1);
/// How often the words file is checked for changes.
pub const WORDS_FILE_POLL: Duration = Duration::from_secs(2);
/// Conversations visited per page of a retention run.
const RETENTION_PAGE: usize = 500;

/// When a job runs: a tokio interval, or (in tests) whenever the test says.
enum Ticks {
    Every(tokio::time::Interval),
    #[cfg(test)]
    Sent(tokio::sync::mpsc::UnboundedReceiver<()>),
}

impl Ticks {
    /// The next tick; `false` when there will be none.
    async fn next(&mut self) -> bool {
        match self {
            Ticks::Every(i) => {
                i.tick().await;
                true
            }
            #[cfg(test)]
            Ticks::Sent(rx) => rx.recv().await.is_some(),
        }
    }
}

/// A set of background tasks that stop together.
#[derive(Debug, Default)]
pub struct Jobs {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Jobs {
    pub fn new() -> Jobs {
        Jobs::default()
    }

    /// Run `job` now and then every `period` (missed periods are not made up) until [`Jobs::stop`] or until it
    /// answers [`ControlFlow::Break`]. Needs a tokio runtime.
    pub fn every<F, Fut>(&self, name: &'static str, period: Duration, job: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ControlFlow<()>> + Send,
    {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.on_ticks(name, Ticks::Every(interval), job);
    }

    fn on_ticks<F, Fut>(&self, name: &'static str, mut ticks: Ticks, mut job: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ControlFlow<()>> + Send,
    {
        let cancel = self.cancel.clone();
        let task = async move {
            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    more = ticks.next() => if !more { break },
                }
                if job().await.is_break() {
                    break;
                }
            }
            tracing::debug!("job stopped");
        };
        self.tracker.spawn(task.instrument(tracing::info_span!("job", name)));
    }

    /// Track a future that ends by itself (a session, say), so [`Jobs::stop`] waits for it too; it is not cancelled.
    pub fn track<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        self.tracker.track_future(future)
    }

    /// Tasks and tracked futures still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Cancel the periodic jobs and wait at most `grace` for every task to end. `true` if all ended.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.wait(grace).await
    }

    /// Wait at most `grace` for every task to end, cancelling nothing. `true` if all ended.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

/// Start the server's periodic jobs on `state.jobs`.
pub fn start(state: &Arc<AppState>) {
    lifecycle(state);
    retention(state);
    words_file(state);
    aggregates(state);
    tls_files(state);
}

/// Run `job` with the state while the server lives.
fn with_state<Fut>(
    state: &Arc<AppState>,
    mut job: impl FnMut(Arc<AppState>) -> Fut + Send + 'static,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = ControlFlow<()>> + Send>> + Send + 'static
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let weak: Weak<AppState> = Arc::downgrade(state);
    move || {
        let run = weak.upgrade().map(&mut job);
        Box::pin(async move {
            match run {
                Some(run) => {
                    run.await;
                    ControlFlow::Continue(())
                }
                None => ControlFlow::Break(()),
            }
        })
    }
}

/// Open, close and finish rooms on time; write the kept room definitions.
fn lifecycle(state: &Arc<AppState>) {
    state.jobs.every(
        "lifecycle",
        LIFECYCLE_TICK,
        with_state(state, |state| async move {
            for (room, t) in state.rooms.tick(crate::room::now_ms()) {
                tracing::info!(room, transition = ?t, "room lifecycle");
            }
            if let Err(e) = state.room_store.sync(|| state.rooms.definitions()).await {
                tracing::warn!(error = %e, "room store write failed; retried next tick");
            }
        }),
    );
}

/// Trim chat history to each conversation's retention rule.
fn retention(state: &Arc<AppState>) {
    let period = state.config.chat.retention_interval;
    state.jobs.every(
        "retention",
        period,
        with_state(state, |state| async move {
            // From the store, which in a cluster also knows the kept rooms other nodes host.
            let kept = match state.room_store.kept_history().await {
                Ok(kept) => kept,
                Err(e) => {
                    tracing::warn!(error = %e, "chat retention skipped: the kept rooms could not be read");
                    return;
                }
            };
            let keep = |c: &courier_chat::ConversationId| c.as_room().is_some_and(|r| kept.contains(r));
            let now = courier_chat::clock::now_ms();
            match apply_retention(&*state.chat.store, &state.config.chat, &keep, now).await {
                Ok((_, 0)) => {}
                Ok((visited, removed)) => tracing::info!(visited, removed, "chat retention applied"),
                Err(e) => tracing::warn!(error = %e, "chat retention failed; next run retries"),
            }
        }),
    );
}

/// Reload the word lists when the words file changes.
fn words_file(state: &Arc<AppState>) {
    let Some(path) = state.config.chat.words_file.clone() else { return };
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = modified(&path);
    state.jobs.every(
        "words_file",
        WORDS_FILE_POLL,
        with_state(state, move |state| {
            let now = modified(&path);
            if now != seen {
                seen = now;
                let filter = crate::word_filter(&state.config.chat);
                if let Ok(mut g) = state.chat.gate.lock() {
                    g.set_words(filter);
                }
                tracing::info!(file = %path.display(), "chat word lists reloaded");
            }
            std::future::ready(())
        }),
    );
}

/// Present a renewed certificate once its files change.
fn tls_files(state: &Arc<AppState>) {
    if state.tls.is_none() {
        return;
    }
    state.jobs.every(
        "tls_reload",
        crate::tls::RELOAD_POLL,
        with_state(state, |state| {
            if let Some(files) = &state.tls {
                match files.reload_if_changed() {
                    Ok(true) => tracing::info!(?files, "TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; keeping the previous one"),
                }
            }
            std::future::ready(())
        }),
    );
}

/// Send the aggregated counts (likes) of the last interval.
fn aggregates(state: &Arc<AppState>) {
    state.jobs.every(
        "aggregates",
        crate::AGGREGATE_INTERVAL,
        with_state(state, |state| {
            state.chat.flush_aggregates();
            std::future::ready(())
        }),
    );
}

/// Apply each conversation's retention rule at `now_ms`. Returns (conversations visited, messages removed).
/// Conversations for which `keep` is true (rooms created with `retention = "keep"`) are left whole.
pub async fn apply_retention(
    store: &dyn ChatStore,
    config: &crate::config::ChatConfig,
    keep: &(dyn Fn(&courier_chat::ConversationId) -> bool + Sync),
    now_ms: u64,
) -> Result<(u64, u64), courier_chat::store::StoreError> {
    let (mut visited, mut removed) = (0, 0);
    let mut after: Option<courier_chat::ConversationId> = None;
    loop {
        let page = store.conversations(after.as_ref(), RETENTION_PAGE).await?;
        let Some(last) = page.last().cloned() else { break };
        for c in &page {
            visited += 1;
            let rule = config.retention_of(c);
            if (rule.max_age_ms.is_none() && rule.max_count.is_none()) || keep(c) {
                continue;
            }
            if let Some(t) = store.trim(c, rule, now_ms).await? {
                removed += t.removed;
            }
        }
        after = Some(last);
    }
    Ok((visited, removed))
}

#[cfg(test)]
mod tests {
    //! The scheduler with ticks the test sends, so nothing here depends on how fast this machine is.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::{mpsc, Semaphore};

    /// Yield until `done` or 1,000 times (a current-thread runtime runs every ready task in between).
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..1_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_job_runs_on_each_tick_and_stop_waits_for_the_run_in_progress() {
        let jobs = Arc::new(Jobs::new());
        let (tick, ticks) = mpsc::unbounded_channel();
        let runs = Arc::new(AtomicUsize::new(0));
        // Each run takes a permit: the test decides when a run may finish.
        let gate = Arc::new(Semaphore::new(0));
        let (r, g) = (runs.clone(), gate.clone());
        jobs.on_ticks("count", Ticks::Sent(ticks), move || {
            let (r, g) = (r.clone(), g.clone());
            async move {
                g.acquire().await.unwrap().forget();
                r.fetch_add(1, Ordering::SeqCst);
                ControlFlow::Continue(())
            }
        });
        gate.add_permits(1);
        tick.send(()).unwrap();
        settle(|| runs.load(Ordering::SeqCst) == 1).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one tick, one run");

        // A run starts and holds; stop is asked meanwhile and must wait for it.
        tick.send(()).unwrap();
        tokio::task::yield_now().await;
        let stopping = tokio::spawn({
            let jobs = jobs.clone();
            async move { jobs.stop(Duration::from_secs(30)).await }
        });
        settle(|| false).await;
        assert!(!stopping.is_finished(), "stop waits for the run in progress");
        gate.add_permits(1);
        assert!(stopping.await.unwrap(), "every task ended");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the run in progress finished, not cut");
        // After stop nothing runs, whatever ticks come.
        gate.add_permits(10);
        let _ = tick.send(());
        settle(|| false).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(jobs.is_empty());
    }

    #[tokio::test]
    async fn a_job_that_breaks_ends_and_stop_waits_for_tracked_futures() {
        let jobs = Jobs::new();
        let (tick, ticks) = mpsc::unbounded_channel();
        jobs.on_ticks("once", Ticks::Sent(ticks), || async { ControlFlow::Break(()) });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tracked = tokio::spawn(jobs.track(async move {
            let _ = rx.await;
        }));
        tick.send(()).unwrap();
        settle(|| jobs.len() == 1).await;
        assert_eq!(jobs.len(), 1, "the job ended by itself; the tracked future runs");
        assert!(!jobs.stop(Duration::from_millis(50)).await, "a tracked future is waited for, not cancelled");
        tx.send(()).unwrap();
        assert!(jobs.wait(Duration::from_secs(30)).await);
        tracked.await.unwrap();
    }

    #[tokio::test]
    async fn every_runs_at_once() {
        let jobs = Jobs::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        jobs.every("first", Duration::from_secs(3600), move || {
            let _ = tx.send(());
            async { ControlFlow::Continue(()) }
        });
        // The first run does not wait a period (an hour here).
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
        assert!(jobs.stop(Duration::from_secs(30)).await);
    }
}
