//! The callers' side of a store's single writer, shared by every backend: the requests, their checks, the bounded
//! queue and the commit listener's slot.
//!
//! Both stores serialise every write through one writer (a thread for SQLite, a task for PostgreSQL) so group
//! commit and sequencing stay simple. What callers see of it is the same whatever the backend: input is checked
//! before it is queued, a full queue is [`StoreError::Overloaded`] at once, and each request gets one [`Outcome`].
//! A backend's writer takes [`Command`]s from the receiver [`WriterQueue::new`] returns.

use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use super::store::{Ack, AlertAck, CommitListener, Receipt, Retention, StoreError, Tombstone, Trimmed};
use super::{validate_identity, validate_payload, ConversationId, Limits, NewMessage};

/// One request to the writer.
pub(crate) enum Request {
    Append(Vec<NewMessage>),
    Tombstone {
        conversation: ConversationId,
        seq: u64,
        change: Tombstone,
    },
    Trim {
        conversation: ConversationId,
        retention: Retention,
        now_ms: u64,
    },
    EraseIdentity(String),
    Receipt {
        conversation: ConversationId,
        identity: String,
        delivered: u64,
        read: u64,
    },
    AckAlert {
        conversation: ConversationId,
        seq: u64,
        identity: String,
    },
    /// Finish the current group and stop.
    Close,
}

impl Request {
    /// How many messages it counts for in a group.
    pub(crate) fn messages(&self) -> usize {
        match self {
            Request::Append(batch) => batch.len(),
            _ => 1,
        }
    }
}

/// The writer's answer to one [`Request`], variant for variant.
pub(crate) enum Outcome {
    Acks(Vec<Ack>),
    Changed(bool),
    Trimmed(Option<Trimmed>),
    Count(u64),
    Receipt(Option<Receipt>),
    AlertAck(AlertAck),
    Closed,
}

/// A request and where to answer it.
pub(crate) struct Command {
    pub request: Request,
    pub reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// Where the writer publishes committed messages.
pub(crate) type ListenerSlot = Arc<RwLock<Option<Arc<dyn CommitListener>>>>;

/// Hand `messages` to the listener, if one is set (the writer calls this after each commit, before the acks).
pub(crate) fn publish(slot: &ListenerSlot, messages: &[super::store::StoredMessage]) {
    if messages.is_empty() {
        return;
    }
    let listener = slot.read().ok().and_then(|l| l.clone());
    if let Some(listener) = listener {
        listener.committed(messages);
    }
}

pub(crate) use crate::clock::now_ms;

fn unexpected() -> StoreError {
    StoreError::Inconsistent("writer answered a different request".into())
}

/// See the module doc.
pub(crate) struct WriterQueue {
    tx: mpsc::Sender<Command>,
    limits: Limits,
    max_batch: usize,
    pub listener: ListenerSlot,
}

impl WriterQueue {
    /// A queue of `capacity` requests; the writer reads the receiver.
    pub(crate) fn new(capacity: usize, limits: Limits, max_batch: usize) -> (WriterQueue, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (WriterQueue { tx, limits, max_batch, listener: Arc::new(RwLock::new(None)) }, rx)
    }

    async fn call(&self, request: Request) -> Result<Outcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Command { request, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Ask the writer to finish what is queued and stop; waits for its answer (not for the writer to end).
    pub(crate) async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command { request: Request::Close, reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        if let Ok(mut slot) = self.listener.write() {
            *slot = Some(listener);
        }
    }

    pub(crate) async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Ack>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if batch.len() > self.max_batch {
            return Err(StoreError::TooLarge { what: "batch", len: batch.len() as u64, max: self.max_batch as u64 });
        }
        for (index, m) in batch.iter().enumerate() {
            m.validate(&self.limits).map_err(|source| StoreError::Invalid { index, source })?;
        }
        match self.call(Request::Append(batch)).await? {
            Outcome::Acks(acks) => Ok(acks),
            _ => Err(unexpected()),
        }
    }

    pub(crate) async fn tombstone(
        &self,
        conversation: ConversationId,
        seq: u64,
        change: Tombstone,
    ) -> Result<bool, StoreError> {
        if let Tombstone::Edit { payload } = &change {
            validate_payload(payload, &self.limits).map_err(|source| StoreError::Invalid { index: 0, source })?;
        }
        match self.call(Request::Tombstone { conversation, seq, change }).await? {
            Outcome::Changed(changed) => Ok(changed),
            _ => Err(unexpected()),
        }
    }

    pub(crate) async fn trim(
        &self,
        conversation: ConversationId,
        retention: Retention,
        now_ms: u64,
    ) -> Result<Option<Trimmed>, StoreError> {
        match self.call(Request::Trim { conversation, retention, now_ms }).await? {
            Outcome::Trimmed(t) => Ok(t),
            _ => Err(unexpected()),
        }
    }

    pub(crate) async fn erase_identity(&self, identity: String) -> Result<u64, StoreError> {
        validate_identity(&identity).map_err(|source| StoreError::Invalid { index: 0, source })?;
        match self.call(Request::EraseIdentity(identity)).await? {
            Outcome::Count(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    pub(crate) async fn set_receipt(
        &self,
        conversation: ConversationId,
        identity: String,
        delivered: u64,
        read: u64,
    ) -> Result<Option<Receipt>, StoreError> {
        validate_identity(&identity).map_err(|source| StoreError::Invalid { index: 0, source })?;
        match self.call(Request::Receipt { conversation, identity, delivered, read }).await? {
            Outcome::Receipt(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    pub(crate) async fn ack_alert(
        &self,
        conversation: ConversationId,
        seq: u64,
        identity: String,
    ) -> Result<AlertAck, StoreError> {
        match self.call(Request::AckAlert { conversation, seq, identity }).await? {
            Outcome::AlertAck(a) => Ok(a),
            _ => Err(unexpected()),
        }
    }
}

/// The write half of [`super::store::ChatStore`], the same for every backend: each method hands its request to the
/// backend's `queue: WriterQueue` field. Used inside `impl ChatStore for …` blocks.
macro_rules! writes_through_queue {
    () => {
        fn append(&self, batch: Vec<NewMessage>) -> BoxFuture<'_, Result<Vec<Ack>, StoreError>> {
            Box::pin(self.queue.append(batch))
        }
        fn tombstone(
            &self,
            conversation: &ConversationId,
            seq: u64,
            change: Tombstone,
        ) -> BoxFuture<'_, Result<bool, StoreError>> {
            Box::pin(self.queue.tombstone(conversation.clone(), seq, change))
        }
        fn trim(
            &self,
            conversation: &ConversationId,
            retention: Retention,
            now_ms: u64,
        ) -> BoxFuture<'_, Result<Option<Trimmed>, StoreError>> {
            Box::pin(self.queue.trim(conversation.clone(), retention, now_ms))
        }
        fn erase_identity(&self, identity: &str) -> BoxFuture<'_, Result<u64, StoreError>> {
            Box::pin(self.queue.erase_identity(identity.to_string()))
        }
        fn set_listener(&self, listener: Arc<dyn CommitListener>) {
            self.queue.set_listener(listener);
        }
        fn set_receipt(
            &self,
            conversation: &ConversationId,
            identity: &str,
            delivered: u64,
            read: u64,
        ) -> BoxFuture<'_, Result<Option<Receipt>, StoreError>> {
            Box::pin(self.queue.set_receipt(conversation.clone(), identity.to_string(), delivered, read))
        }
        fn ack_alert(
            &self,
            conversation: &ConversationId,
            seq: u64,
            identity: &str,
        ) -> BoxFuture<'_, Result<AlertAck, StoreError>> {
            Box::pin(self.queue.ack_alert(conversation.clone(), seq, identity.to_string()))
        }
    };
}
pub(crate) use writes_through_queue;
