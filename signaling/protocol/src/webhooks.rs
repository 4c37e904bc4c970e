//! Webhook event bodies (`docs/protocol.md`, "Webhooks"): what the server POSTs to an app's endpoint when
//! something happens in a room. Signing and delivery are the server's; this is the JSON.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::chat::is_default;
use crate::server::{ParticipantInfo, TrackInfo};

/// What happened. The wire name is the `event` field of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RoomStarted,
    RoomFinished,
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
    TrackUnpublished,
    MessageSent,
    MessageRecalled,
    AlertUnacknowledged,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::RoomStarted,
        EventKind::RoomFinished,
        EventKind::ParticipantJoined,
        EventKind::ParticipantLeft,
        EventKind::TrackPublished,
        EventKind::TrackUnpublished,
        EventKind::MessageSent,
        EventKind::MessageRecalled,
        EventKind::AlertUnacknowledged,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::RoomStarted => "room_started",
            EventKind::RoomFinished => "room_finished",
            EventKind::ParticipantJoined => "participant_joined",
            EventKind::ParticipantLeft => "participant_left",
            EventKind::TrackPublished => "track_published",
            EventKind::TrackUnpublished => "track_unpublished",
            EventKind::MessageSent => "message_sent",
            EventKind::MessageRecalled => "message_recalled",
            EventKind::AlertUnacknowledged => "alert_unacknowledged",
        }
    }

    /// The kind of a wire name.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The room an event is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RoomView {
    pub name: String,
}

/// The participant an event is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ParticipantView {
    pub id: String,
    pub identity: String,
    pub name: String,
}

impl From<&ParticipantInfo> for ParticipantView {
    fn from(p: &ParticipantInfo) -> Self {
        ParticipantView { id: p.id.clone(), identity: p.identity.clone(), name: p.name.clone() }
    }
}

/// The chat message an event is about.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct MessageView {
    pub conversation: String,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub kind: Option<String>,
    /// When it was stored, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub time: Option<u64>,
    /// The payload, when it is at most `webhooks.payload_max_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::chat::raw_json")]
    #[cfg_attr(feature = "ts", ts(optional, type = "unknown"))]
    pub payload: Option<Box<RawValue>>,
    /// Size of the payload's JSON text (also when it is left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub payload_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub must_ack: bool,
}

/// Who recalled a message, and the sequenced message that announced it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RecallView {
    pub by: String,
    pub seq: u64,
    pub time: u64,
}

/// Who has and has not acknowledged an alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct AlertView {
    pub pending: Vec<String>,
    pub acked: Vec<String>,
}

/// The objects of an event (each present when it applies).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Facts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub room: Option<RoomView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub participant: Option<ParticipantView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub track: Option<TrackInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub message: Option<MessageView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub recall: Option<RecallView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub alert: Option<AlertView>,
    /// Why a participant left: `left`, `disconnected`, `replaced`, `removed`, `server_shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub reason: Option<String>,
}

impl Facts {
    /// About a room.
    pub fn room(room: &str) -> Facts {
        Facts { room: Some(RoomView { name: room.to_string() }), ..Facts::default() }
    }

    /// About a participant of a room.
    pub fn participant(room: &str, p: &ParticipantInfo) -> Facts {
        Facts { participant: Some(p.into()), ..Facts::room(room) }
    }

    /// About a participant's track (its `mid` is the publisher's business and left out).
    pub fn track(room: &str, p: &ParticipantInfo, track: &TrackInfo) -> Facts {
        let mut track = track.clone();
        track.mid = None;
        Facts { track: Some(track), ..Facts::participant(room, p) }
    }
}

/// One event body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct WebhookEvent {
    /// `EV_` and 20 characters; the same on every retry.
    pub id: String,
    pub event: EventKind,
    /// Unix milliseconds.
    pub created_at: u64,
    #[serde(flatten)]
    pub facts: Facts,
}
