//! Bodies of the admin API (`docs/protocol.md`, "Admin API") that carry protocol records: participants as the
//! API shows them, and the error body. Routes and grants are the server's; these are what goes over the wire.

use serde::{Deserialize, Serialize};

use crate::grants::Permissions;
use crate::server::ParticipantInfo;

/// A participant as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ParticipantSummary {
    #[serde(flatten)]
    pub info: ParticipantInfo,
    pub permissions: Permissions,
    /// ms since the Unix epoch.
    pub joined_ms: u64,
    /// The server's send-side bandwidth estimate towards this participant, bits per second (at most a second old);
    /// `None` (JSON `null`) while it has none (it receives nothing, or gives no TWCC feedback).
    pub bandwidth_estimate_bps: Option<u64>,
}

/// `GET /api/v1/rooms/{room}/participants`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ParticipantList {
    pub participants: Vec<ParticipantSummary>,
}

/// Every failed API call: a stable code and a message for humans.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
}
