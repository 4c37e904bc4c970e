//! The pre-send hook's HTTP exchange (`docs/protocol.md`, "Moderation of content"): the server POSTs a
//! [`HookRequest`] for each message and reads a [`HookAnswer`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What the server POSTs to the hook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct HookRequest {
    pub conversation: String,
    pub sender: String,
    pub client_id: String,
    pub kind: String,
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub payload: Box<RawValue>,
}

/// What the hook answers (`200` with JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum HookAnswer {
    /// Store and deliver the message unchanged.
    Pass,
    /// Store and deliver this payload instead.
    Modify {
        #[serde(deserialize_with = "crate::chat::raw_json_required")]
        #[cfg_attr(feature = "ts", ts(type = "unknown"))]
        payload: Box<RawValue>,
    },
    /// Refuse the message with `rejected` and this reason.
    Drop {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        reason: Option<String>,
    },
}
