//! What a participant may do: the access token's claims ([`Claims`], [`VideoGrant`]), the run-time copy of its
//! grants ([`Permissions`], sent in `permissions_changed`), and what a published track carries ([`TrackSource`]).
//!
//! These are wire types (`docs/protocol.md`, "Access tokens"): the server verifies and the app server mints tokens
//! with exactly these claims. Signing and verifying is the server's job, not this crate's.

use serde::{Deserialize, Serialize};

/// Largest participant or room metadata, bytes.
pub const MAX_METADATA: usize = 4096;

/// The room name an API token uses to mean "every room".
pub const ALL_ROOMS: &str = "*";

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
    /// Something else.
    Unknown,
}

/// The token's `video` claim: the grants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct VideoGrant {
    pub room: String,
    #[serde(default)]
    pub room_join: bool,
    #[serde(default = "yes")]
    pub can_publish: bool,
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    /// May send chat messages (reading the room's chat comes with joining).
    #[serde(default = "yes")]
    pub can_chat: bool,
    /// May moderate the room: high-priority chat, recalling others' messages, muting. On an API token, with
    /// `room: "*"`, every room.
    #[serde(default)]
    pub room_admin: bool,
    /// Which sources may be published; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub can_publish_sources: Option<Vec<TrackSource>>,
    /// Not shown to other participants, and may not publish.
    #[serde(default)]
    pub hidden: bool,
    /// API: may create rooms.
    #[serde(default)]
    pub room_create: bool,
    /// API: may list rooms.
    #[serde(default)]
    pub room_list: bool,
}

/// Access token claims (an HS256 JWT's payload).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Claims {
    /// The API key (used when the header has no `kid`).
    #[serde(default)]
    pub iss: String,
    /// The identity.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub nbf: Option<u64>,
    /// Display name (default: the identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub name: Option<String>,
    /// Opaque to the server, shown to the other participants (at most [`MAX_METADATA`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub metadata: Option<String>,
    pub video: VideoGrant,
}

/// What an admin API call needs from its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiGrant<'a> {
    /// `room_create`.
    Create,
    /// `room_list`.
    List,
    /// `room_admin` for this room (or for every room).
    Admin(&'a str),
    /// `room_admin` for every room (actions across rooms, such as erasing an identity).
    AdminAll,
}

impl VideoGrant {
    /// Whether this grant allows `need`.
    pub fn allows(&self, need: ApiGrant<'_>) -> bool {
        match need {
            ApiGrant::Create => self.room_create,
            ApiGrant::List => self.room_list,
            ApiGrant::Admin(room) => self.room_admin && (self.room == room || self.room == ALL_ROOMS),
            ApiGrant::AdminAll => self.room_admin && self.room == ALL_ROOMS,
        }
    }
}

/// A participant's permissions while it is in a room: from its token at join, changed by the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Permissions {
    pub can_publish: bool,
    /// Absent: every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub can_publish_sources: Option<Vec<TrackSource>>,
    pub can_subscribe: bool,
    pub can_chat: bool,
    pub room_admin: bool,
    pub hidden: bool,
}

impl Permissions {
    /// Whether a track of `source` may be published.
    pub fn may_publish(&self, source: TrackSource) -> bool {
        self.can_publish && !self.hidden && self.can_publish_sources.as_ref().is_none_or(|s| s.contains(&source))
    }
}

impl From<&VideoGrant> for Permissions {
    fn from(g: &VideoGrant) -> Permissions {
        Permissions {
            can_publish: g.can_publish && !g.hidden,
            can_publish_sources: g.can_publish_sources.clone(),
            can_subscribe: g.can_subscribe,
            can_chat: g.can_chat,
            room_admin: g.room_admin,
            hidden: g.hidden,
        }
    }
}

fn yes() -> bool {
    true
}
