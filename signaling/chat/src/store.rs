//! The durable chat history behind one interface, so the server runs on embedded SQLite out of the box and on
//! PostgreSQL in a cluster without the rest of chat knowing which.
//!
//! The contract every implementation keeps:
//!
//! - **Acknowledged means durable.** [`ChatStore::append`] returns an [`Ack`] only after the transaction that stored
//!   the message (and advanced the conversation's sequence) is committed durably.
//! - **Never twice.** A retry with the same `(conversation, sender, client_id)` returns the original [`Ack`] with
//!   `duplicate: true` and stores nothing. A durable unique index is the source of truth; caches only shortcut it.
//!   The key is forgotten when retention trims the original message, which must be long after any client retries.
//! - **Never out of order.** Sequence numbers of a conversation are contiguous from 1 and follow commit order.
//!   Rows are never deleted except from the front by [`ChatStore::trim`], which moves `first_seq` forward; recall,
//!   edit and erasure keep the row and its number ([`Tombstone`]).
//! - **Never a partial replay.** [`ChatStore::range`] returns the whole gap or [`Replay::NotRecovered`].
//! - **Published in commit order.** Every newly stored message is handed to the [`CommitListener`], in commit
//!   order, after its transaction committed and before its sender's [`Ack`] is released. This is how chat fans out:
//!   a message that reaches anyone is durable, and members see each conversation in sequence order.
//! - **Receipts and alert acknowledgements only move forward** and survive restarts like messages do.
//!
//! [`ChatStore`] is an object-safe trait whose methods return boxed futures, used as `Arc<dyn ChatStore>`: the
//! backend is picked by configuration at run time, tests can put a fault-injecting store in its place, and the one
//! allocation per call is nothing next to a commit. (Native `async fn` in traits would not be object-safe; an enum
//! of backends would tie this module to every backend and leave no room for test doubles.)

use futures::future::BoxFuture;

use super::{ConversationId, Flags, InvalidInput, NewMessage};

/// What [`ChatStore::append`] answers for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub conversation: ConversationId,
    pub seq: u64,
    pub epoch: u64,
    /// When the message was sequenced, Unix milliseconds; never decreases within a conversation.
    pub server_time_ms: u64,
    /// This was a retry: the message was already stored, and this is its original acknowledgement.
    pub duplicate: bool,
}

/// Where a conversation's history stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Chosen at random when the conversation is created; changes only if its history is wiped.
    pub epoch: u64,
    /// The last sequence number issued; 0 before the first message.
    pub last_seq: u64,
    /// The lowest sequence number still retained; `last_seq + 1` when nothing is.
    pub first_seq: u64,
}

/// What happened to a stored message after it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    Normal,
    /// The payload was replaced.
    Edited,
    /// The sender took it back; no payload.
    Recalled,
    /// Erased (e.g. on the sender's request to forget them); no payload.
    Erased,
}

impl MessageState {
    /// The stored code.
    pub fn code(self) -> u8 {
        match self {
            MessageState::Normal => 0,
            MessageState::Edited => 1,
            MessageState::Recalled => 2,
            MessageState::Erased => 3,
        }
    }

    /// From the stored code.
    pub fn from_code(code: u8) -> Option<MessageState> {
        match code {
            0 => Some(MessageState::Normal),
            1 => Some(MessageState::Edited),
            2 => Some(MessageState::Recalled),
            3 => Some(MessageState::Erased),
            _ => None,
        }
    }
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub conversation: ConversationId,
    pub seq: u64,
    pub sender: String,
    pub client_id: String,
    pub kind: String,
    /// JSON text; `None` once recalled or erased.
    pub payload: Option<String>,
    pub flags: Flags,
    pub server_time_ms: u64,
    pub state: MessageState,
}

/// Which page of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFrom {
    /// The `limit` messages just before this sequence number.
    Before(u64),
    /// The `limit` messages just after this sequence number.
    After(u64),
    /// The newest `limit` messages.
    Latest,
}

/// The answer to [`ChatStore::range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Every message of the gap, in order (possibly none), read in the same snapshot as `epoch`.
    Messages { epoch: u64, messages: Vec<StoredMessage> },
    /// The gap starts before the first retained message: nothing is replayed.
    NotRecovered { epoch: u64, first_seq: u64 },
    /// The conversation does not exist (never created, or wiped).
    UnknownConversation,
}

/// A change to a stored message that keeps its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tombstone {
    /// The sender takes the message back: payload cleared.
    Recall,
    /// New payload (JSON text, checked against the payload cap).
    Edit { payload: String },
    /// Erased: payload cleared.
    Erase,
}

/// A recall or edit of an earlier message, carried by the (sequenced) message that announces it. The store applies
/// it to message `seq` in the same transaction, if that message is still retained and not recalled or erased;
/// either way the announcing message is stored, so every member sees the change in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amend {
    pub seq: u64,
    pub change: Tombstone,
}

/// How far one member of a conversation has got: delivered up to, read up to. Both only move forward and
/// `read <= delivered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub identity: String,
    pub delivered: u64,
    pub read: u64,
}

/// What acknowledging a must-acknowledge alert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertAck {
    /// Recorded now, at this Unix millisecond time.
    Acked { at_ms: u64 },
    /// Recorded before.
    AlreadyAcked { at_ms: u64 },
    /// This identity was not asked to acknowledge that message (or there is no such alert).
    NotAsked,
}

/// Who has and has not acknowledged one alert.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertStatus {
    /// (identity, Unix milliseconds), by identity.
    pub acked: Vec<(String, u64)>,
    /// By identity.
    pub pending: Vec<String>,
}

/// Told about every newly stored message, in commit order (see the module doc). Called on the store's writer, so
/// it must not block: push into bounded queues and return.
pub trait CommitListener: Send + Sync + 'static {
    fn committed(&self, messages: &[StoredMessage]);
}

/// Several listeners in the store's one slot, told in this order.
impl CommitListener for Vec<std::sync::Arc<dyn CommitListener>> {
    fn committed(&self, messages: &[StoredMessage]) {
        for l in self {
            l.committed(messages);
        }
    }
}

/// How much history a conversation keeps. `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Messages older than this (by server time) go.
    pub max_age_ms: Option<u64>,
    /// Only the newest this many stay.
    pub max_count: Option<u64>,
}

/// What [`ChatStore::trim`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Rows deleted.
    pub removed: u64,
    /// The new first retained sequence number.
    pub first_seq: u64,
}

/// Why a store call failed. `Clone`, so one failed transaction can answer every request it carried.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Message `index` of the batch (or the only input) was refused; nothing of the batch was stored.
    #[error("message {index}: {source}")]
    Invalid {
        index: usize,
        #[source]
        source: InvalidInput,
    },
    /// A batch, page or replay larger than the store allows.
    #[error("{what} of {len} is larger than {max}")]
    TooLarge { what: &'static str, len: u64, max: u64 },
    /// The write queue is full: the caller should shed load or retry later. Nothing was stored.
    #[error("chat store overloaded")]
    Overloaded,
    /// The store was closed.
    #[error("chat store closed")]
    Closed,
    /// The sequence space of a conversation is exhausted (2^63 messages).
    #[error("sequence numbers exhausted in {0}")]
    SequenceExhausted(ConversationId),
    /// Stored data violates an invariant (e.g. a hole in the retained sequence). A bug or a damaged database.
    #[error("chat store inconsistent: {0}")]
    Inconsistent(String),
    /// The database failed (I/O, full disk, locked, …). Whatever was in flight was not acknowledged.
    #[error("chat database")]
    Backend(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

/// The durable history. See the module doc for the contract.
pub trait ChatStore: Send + Sync + 'static {
    /// Store `batch`, sequencing each message in its conversation, and answer one [`Ack`] per message, in order.
    /// The whole batch is checked first: one invalid message refuses all of it.
    fn append(&self, batch: Vec<NewMessage>) -> BoxFuture<'_, Result<Vec<Ack>, StoreError>>;

    /// Where `conversation` stands; `None` if it has never had a message.
    fn head(&self, conversation: &ConversationId) -> BoxFuture<'_, Result<Option<Head>, StoreError>>;

    /// Up to `limit` messages, ascending by sequence number, tombstones included.
    fn page(
        &self,
        conversation: &ConversationId,
        from: PageFrom,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredMessage>, StoreError>>;

    /// Exactly the messages with `after_seq < seq <= up_to_seq` (capped at the last issued number), or
    /// [`Replay::NotRecovered`] if any of them was trimmed.
    fn range(
        &self,
        conversation: &ConversationId,
        after_seq: u64,
        up_to_seq: u64,
    ) -> BoxFuture<'_, Result<Replay, StoreError>>;

    /// Mark message `seq`; `Ok(false)` if there is no such retained message or it is already recalled or erased.
    fn tombstone(
        &self,
        conversation: &ConversationId,
        seq: u64,
        change: Tombstone,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Apply `retention` at `now_ms` (Unix milliseconds), moving `first_seq` forward. `None` for an unknown
    /// conversation.
    fn trim(
        &self,
        conversation: &ConversationId,
        retention: Retention,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<Trimmed>, StoreError>>;

    /// Erase every message `identity` sent, in every conversation (tombstones: the sequence stays intact), and
    /// its receipts and alert records. Returns how many messages changed.
    fn erase_identity(&self, identity: &str) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Set where the listener of committed messages is; call it before the first append.
    fn set_listener(&self, listener: std::sync::Arc<dyn CommitListener>);

    /// Move `identity`'s receipt in `conversation` forward to at least (`delivered`, `read`), clamped to the last
    /// issued number, `read` raising `delivered` too. Answers the receipt as it now stands, or `None` for an unknown
    /// conversation.
    fn set_receipt(
        &self,
        conversation: &ConversationId,
        identity: &str,
        delivered: u64,
        read: u64,
    ) -> BoxFuture<'_, Result<Option<Receipt>, StoreError>>;

    /// The receipts of `conversation`, by identity, at most `limit`.
    fn receipts(&self, conversation: &ConversationId, limit: usize) -> BoxFuture<'_, Result<Vec<Receipt>, StoreError>>;

    /// Messages of `conversation` after `identity`'s read position that count toward unread and that someone else
    /// sent (not recalled or erased).
    fn unread(&self, conversation: &ConversationId, identity: &str) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// `identity` acknowledges the must-acknowledge message `seq` of `conversation`.
    fn ack_alert(
        &self,
        conversation: &ConversationId,
        seq: u64,
        identity: &str,
    ) -> BoxFuture<'_, Result<AlertAck, StoreError>>;

    /// Who was asked to acknowledge message `seq`, and who has; `None` if it asked no one.
    fn alert_status(
        &self,
        conversation: &ConversationId,
        seq: u64,
    ) -> BoxFuture<'_, Result<Option<AlertStatus>, StoreError>>;

    /// Conversation ids after `after` (all from the start with `None`), in byte order, at most `limit`: for
    /// retention runs that visit every conversation.
    fn conversations(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ConversationId>, StoreError>>;

    /// The must-acknowledge messages `identity` has not acknowledged yet, oldest first, at most `limit`.
    fn pending_alerts(&self, identity: &str, limit: usize) -> BoxFuture<'_, Result<Vec<StoredMessage>, StoreError>>;
}
