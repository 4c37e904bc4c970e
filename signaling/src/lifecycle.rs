//! Room lifecycle decisions: when a room may be joined, when it opens, and when it closes.
//!
//! A room is created by the admin API (with [`RoomOptions`]) or on first join (when `[rooms] auto_create` is on);
//! it closes after `empty_timeout_secs` with nobody in it, and a scheduled room opens at its `start` and closes at
//! its `end`, after which it stays in the registry, closed and read-only, so its history can be audited. Every
//! decision here is a plain function of the room's definition, its occupancy and `now` (milliseconds since the
//! Unix epoch, because schedules are wall-clock times); the room registry applies them and a timer task in the
//! server calls [`due`] once a second.

use serde::{Deserialize, Serialize};

use courier_protocol::ErrorCode;

/// Empty timeout of rooms the admin API creates without one, seconds.
pub const DEFAULT_EMPTY_TIMEOUT_SECS: u64 = 300;

/// A room's own options (admin API `POST /api/v1/rooms`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RoomOptions {
    /// Members at most (`None`: no cap of the room's own; a server-wide cap may still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    /// Close the room after this long with nobody in it (default 300 s for created rooms, 0 for rooms created on
    /// first join; scheduled rooms close at their end instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_timeout_secs: Option<u64>,
    /// Opaque, shown to the API.
    #[serde(default)]
    pub metadata: String,
    /// `keep`: the room's chat history is never trimmed. Absent: the configured retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// Scheduled room: open from `start` to `end`, for `members` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// A time window and the identities invited to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Opens at, ms since the Unix epoch.
    pub start_ms: u64,
    /// Closes at, ms since the Unix epoch.
    pub end_ms: u64,
    /// The identities that may join.
    pub members: Vec<String>,
}

/// Where a room is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RoomPhase {
    /// Scheduled, before its start.
    Scheduled,
    Open,
    /// Closed: nobody may join or send; the history is kept read-only.
    Closed,
}

/// What the registry must do with a room now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A scheduled room reached its start.
    Open,
    /// A scheduled room reached its end: remove everyone (`room_ended`), keep the room closed.
    End,
    /// Nobody was in the room for its empty timeout: forget it.
    Expire,
}

/// The facts about one room a decision needs.
#[derive(Debug, Clone, Copy)]
pub struct RoomView<'a> {
    pub options: &'a RoomOptions,
    pub phase: RoomPhase,
    /// Created on first join rather than by the API.
    pub auto: bool,
    pub members: usize,
    /// Since when nobody is in it (ms), if nobody is.
    pub empty_since_ms: Option<u64>,
}

impl RoomView<'_> {
    fn empty_timeout_ms(&self) -> u64 {
        let default = if self.auto { 0 } else { DEFAULT_EMPTY_TIMEOUT_SECS };
        self.options.empty_timeout_secs.unwrap_or(default).saturating_mul(1000)
    }
}

/// The transition due for a room at `now_ms`, if any.
pub fn due(room: RoomView<'_>, now_ms: u64) -> Option<Transition> {
    match (room.phase, &room.options.schedule) {
        (RoomPhase::Closed, _) => None,
        (RoomPhase::Scheduled, Some(s)) if now_ms >= s.end_ms => Some(Transition::End),
        (RoomPhase::Scheduled, Some(s)) if now_ms >= s.start_ms => Some(Transition::Open),
        (RoomPhase::Scheduled, _) => None,
        (RoomPhase::Open, Some(s)) if now_ms >= s.end_ms => Some(Transition::End),
        // A scheduled room lives until its end, empty or not.
        (RoomPhase::Open, Some(_)) => None,
        (RoomPhase::Open, None) => match room.empty_since_ms {
            Some(since) if room.members == 0 && now_ms >= since.saturating_add(room.empty_timeout_ms()) => {
                Some(Transition::Expire)
            }
            _ => None,
        },
    }
}

/// Whether `identity` may join a room in this state; `hidden` joiners do not count toward the cap.
pub fn may_join(room: RoomView<'_>, identity: &str, hidden: bool) -> Result<(), ErrorCode> {
    match room.phase {
        RoomPhase::Scheduled => return Err(ErrorCode::RoomNotOpen),
        RoomPhase::Closed => return Err(ErrorCode::RoomClosed),
        RoomPhase::Open => {}
    }
    if let Some(s) = &room.options.schedule {
        if !s.members.iter().any(|m| m == identity) {
            return Err(ErrorCode::NotInvited);
        }
    }
    if let Some(max) = room.options.max_participants {
        if !hidden && room.members >= max as usize {
            return Err(ErrorCode::RoomFull);
        }
    }
    Ok(())
}

/// The phase a new room starts in.
pub fn initial_phase(options: &RoomOptions, now_ms: u64) -> RoomPhase {
    match &options.schedule {
        Some(s) if now_ms >= s.end_ms => RoomPhase::Closed,
        Some(s) if now_ms < s.start_ms => RoomPhase::Scheduled,
        _ => RoomPhase::Open,
    }
}

/// Why options are refused.
pub fn validate(options: &RoomOptions) -> Result<(), String> {
    if options.metadata.len() > crate::auth::MAX_METADATA {
        return Err(format!("metadata over {} bytes", crate::auth::MAX_METADATA));
    }
    if let Some(r) = &options.retention {
        if r != "keep" {
            return Err("retention must be \"keep\" or absent".into());
        }
    }
    if options.max_participants == Some(0) {
        return Err("max_participants must be at least 1".into());
    }
    if let Some(s) = &options.schedule {
        if s.end_ms <= s.start_ms {
            return Err("end must be after start".into());
        }
        if s.members.is_empty() || s.members.len() > 10_000 {
            return Err("members must list 1..=10000 identities".into());
        }
        if s.members.iter().any(|m| m.is_empty() || m.len() > 256) {
            return Err("each member must be 1..=256 bytes".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(options: &RoomOptions, phase: RoomPhase, members: usize, empty_since_ms: Option<u64>) -> RoomView<'_> {
        RoomView { options, phase, auto: false, members, empty_since_ms }
    }

    #[test]
    fn scheduled_room_opens_at_start_and_ends_at_end() {
        let o = RoomOptions {
            schedule: Some(Schedule { start_ms: 1_000, end_ms: 5_000, members: vec!["pilot".into()] }),
            ..Default::default()
        };
        assert_eq!(initial_phase(&o, 0), RoomPhase::Scheduled);
        assert_eq!(may_join(view(&o, RoomPhase::Scheduled, 0, None), "pilot", false), Err(ErrorCode::RoomNotOpen));
        assert_eq!(due(view(&o, RoomPhase::Scheduled, 0, None), 999), None);
        assert_eq!(due(view(&o, RoomPhase::Scheduled, 0, None), 1_000), Some(Transition::Open));
        assert_eq!(may_join(view(&o, RoomPhase::Open, 0, None), "pilot", false), Ok(()));
        assert_eq!(may_join(view(&o, RoomPhase::Open, 0, None), "stowaway", false), Err(ErrorCode::NotInvited));
        assert_eq!(due(view(&o, RoomPhase::Open, 0, Some(1_000)), 4_999), None, "empty is fine until the end");
        assert_eq!(due(view(&o, RoomPhase::Open, 3, None), 5_000), Some(Transition::End));
        assert_eq!(due(view(&o, RoomPhase::Closed, 0, None), 9_000), None, "closed rooms stay");
        assert_eq!(may_join(view(&o, RoomPhase::Closed, 0, None), "pilot", false), Err(ErrorCode::RoomClosed));
        assert_eq!(due(view(&o, RoomPhase::Scheduled, 0, None), 6_000), Some(Transition::End), "missed window");
        assert_eq!(initial_phase(&o, 6_000), RoomPhase::Closed);
    }

    #[test]
    fn empty_timeout_and_cap() {
        let o = RoomOptions { empty_timeout_secs: Some(10), max_participants: Some(2), ..Default::default() };
        assert_eq!(due(view(&o, RoomPhase::Open, 0, Some(1_000)), 10_999), None);
        assert_eq!(due(view(&o, RoomPhase::Open, 0, Some(1_000)), 11_000), Some(Transition::Expire));
        assert_eq!(due(view(&o, RoomPhase::Open, 1, None), 99_000), None, "occupied");
        assert_eq!(may_join(view(&o, RoomPhase::Open, 2, None), "x", false), Err(ErrorCode::RoomFull));
        assert_eq!(may_join(view(&o, RoomPhase::Open, 2, None), "x", true), Ok(()), "hidden joiners do not count");
        let d = RoomOptions::default();
        let auto = RoomView { auto: true, ..view(&d, RoomPhase::Open, 0, Some(1_000)) };
        assert_eq!(due(auto, 1_000), Some(Transition::Expire), "auto rooms go when empty");
        assert_eq!(due(view(&d, RoomPhase::Open, 0, Some(0)), 299_999), None, "created rooms wait 300 s");
    }

    #[test]
    fn options_are_checked() {
        let bad = |o: RoomOptions| validate(&o).is_err();
        assert!(bad(RoomOptions { max_participants: Some(0), ..Default::default() }));
        assert!(bad(RoomOptions { retention: Some("forever".into()), ..Default::default() }));
        assert!(bad(RoomOptions {
            schedule: Some(Schedule { start_ms: 5, end_ms: 5, members: vec!["a".into()] }),
            ..Default::default()
        }));
        assert!(validate(&RoomOptions { retention: Some("keep".into()), ..Default::default() }).is_ok());
    }
}
