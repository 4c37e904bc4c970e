//! The plain types chat frames share (`docs/protocol.md`, "Chat"): one message as the server shows it
//! ([`ChatMessage`]), its [`Priority`] and [`MessageState`], where a client stands in a conversation
//! ([`ResumePos`]), which conversation a request is about ([`Target`]), and the small records of receipts and alerts.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How urgently a message must get through when a room is over its quota (`priority`). High is never shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// What happened to a stored message after it was sent (`state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    #[default]
    Normal,
    /// The payload was replaced.
    Edited,
    /// The sender took it back; no payload.
    Recalled,
    /// Erased (e.g. on the sender's request to forget them); no payload.
    Erased,
}

/// One chat message as sent in `chat_message`, and inside `chat_history` and `chat_alert`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChatMessage {
    pub conversation: String,
    /// Absent for ephemeral messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub seq: Option<u64>,
    pub sender: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub client_id: Option<String>,
    pub kind: String,
    /// Any JSON value; absent once recalled or erased.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "raw_json")]
    #[cfg_attr(feature = "ts", ts(optional, type = "unknown"))]
    pub payload: Option<Box<RawValue>>,
    /// Server time, Unix milliseconds.
    pub time: u64,
    #[serde(default, skip_serializing_if = "is_default")]
    pub state: MessageState,
    #[serde(default, skip_serializing_if = "is_default")]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "is_default")]
    pub must_ack: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub mention_all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// The receiving member is mentioned (by name or `@all`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub mentioned: bool,
    /// Counts toward unread (`false` for control messages such as a recall notice).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub counted: bool,
    /// Passed on without being stored (no `seq`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub ephemeral: bool,
}

/// Where a client's copy of a conversation stands, for a resume (`join.chat`, `chat_resume`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ResumePos {
    pub conversation: String,
    /// The epoch the client holds (0: it holds nothing).
    pub epoch: u64,
    /// The last number held with nothing missing before it (0: none).
    pub last_seq: u64,
}

/// Which conversation a chat request is about: `conversation` by id, or `to` an identity (a direct
/// conversation), or neither (the chat of the session's room).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub conversation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub to: Option<String>,
}

/// How a resume of one conversation ended (`chat_resumed.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ResumeStatus {
    /// The gap was replayed; live messages follow.
    Ok,
    /// No history yet, or the client starts here (live messages follow `last_seq`).
    Fresh,
    /// Part of the gap is beyond retention: nothing was replayed; drop the local copy, page history back.
    NotRecovered,
    /// The epoch differs: the client's copy is void and the whole retained history was replayed.
    Reset,
}

/// One receipt in `chat_receipts`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ReceiptView {
    pub identity: String,
    pub delivered: u64,
    pub read: u64,
}

/// One acknowledgement in `chat_alert_status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct AlertAckView {
    pub identity: String,
    /// Unix milliseconds.
    pub at: u64,
}

/// The answer to `chat_alert_ack` (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum AlertAckStatus {
    Acked,
    AlreadyAcked,
    NotAsked,
}

/// Any JSON value as raw text. Goes through [`serde_json::Value`] because a message inside a tagged enum is
/// buffered before it is read, and raw values cannot be read from the buffer.
pub(crate) fn raw_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    v.map(|v| serde_json::value::to_raw_value(&v).map_err(serde::de::Error::custom)).transpose()
}

/// Like [`raw_json`], for a field that must be there.
pub(crate) fn raw_json_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    serde_json::value::to_raw_value(&v).map_err(serde::de::Error::custom)
}

pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

pub(crate) fn is_true(b: &bool) -> bool {
    *b
}

pub(crate) fn yes() -> bool {
    true
}
