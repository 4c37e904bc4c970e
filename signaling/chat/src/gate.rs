//! The admission gate: whether a chat message may go, and how — one verdict from everything the server knows.
//!
//! A message a member sends passes, in this order: the sender's grant (`can_chat`); its identity's rate (a token
//! bucket across all its connections); the conversation it names (resolved by the session, which knows what the
//! member may read); the room's mute list; the keyword lists (blocked words refuse, replaced words are masked);
//! the `chat.` prefix, reserved for the server's own messages; its priority (allowlists, and `high` only with the
//! `room_admin` grant); the room's quota (a droppable message over it is shed, a normal one refused); and the input
//! checks (sizes, ids, types). What passes is stored and sequenced, or — not persisted, or low priority — passed on
//! ephemeral, or — an aggregated kind such as likes — counted for the next `chat_aggregate`.
//!
//! Sans-I/O: [`Gate`] is plain state (buckets, quotas, mutes, word lists, counts) that takes the time as an input
//! and returns a [`Verdict`]; the server holds one behind one lock, and the pre-send HTTP hook, which needs the
//! network, stays in the server after the gate. The table test at the bottom walks every branch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use courier_protocol::ErrorCode;

use crate::moderation::{Mutes, Verdict as WordVerdict, WordFilter};
use crate::quota::{QuotaConfig, RoomQuota};
use crate::rate::{Rate, TokenBucket};
use crate::{ConversationId, Flags, InvalidInput, Limits, NewMessage, Priority};

/// What the gate is told once.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Chat messages per second one identity may send (burst: two seconds' worth).
    pub rate_per_sec: f64,
    /// Every room's quota.
    pub quota: QuotaConfig,
    /// Kinds that are always low priority (likes, danmaku).
    pub low_priority_kinds: Vec<String>,
    /// Kinds that are always high priority.
    pub high_priority_kinds: Vec<String>,
    /// Identities whose messages are always high priority.
    pub high_priority_identities: Vec<String>,
    /// Low-priority kinds that are counted, not delivered one by one.
    pub aggregate_kinds: Vec<String>,
    /// The input checks.
    pub limits: Limits,
}

/// Who sends.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub identity: &'a str,
    /// The token's `can_chat`.
    pub can_chat: bool,
    /// The token's `room_admin`.
    pub room_admin: bool,
}

/// What the client asked to send, and where the session resolved it to.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The conversation, or why the target named none the member may write to.
    pub conversation: Result<ConversationId, (ErrorCode, String)>,
    pub client_id: String,
    pub kind: String,
    /// JSON text.
    pub payload: String,
    /// As requested (`flags.priority` is the requested priority; the gate decides the one it gets).
    pub flags: Flags,
    /// `persist: false` asks for an ephemeral message.
    pub persist: bool,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Store it: sequenced and durable, then delivered (the pre-send hook, if any, is asked first).
    Store(NewMessage),
    /// Pass it on to the conversation's members without storing it (no number, droppable).
    Deliver(NewMessage),
    /// Counted for the next `chat_aggregate` of its kind in this conversation; acknowledged, delivered only as a
    /// count.
    Count(ConversationId),
    /// Over the quota of this conversation's room and droppable: acknowledged as shed, it reaches no one.
    Shed(ConversationId),
    /// Refused with this code.
    Refuse(ErrorCode, String),
}

/// See the module doc.
#[derive(Debug)]
pub struct Gate {
    config: GateConfig,
    rate: Rate,
    /// Identity → its chat bucket (forgotten when its last session ends).
    rates: HashMap<String, TokenBucket>,
    /// Room → its quota (forgotten when the room's last session ends).
    quotas: HashMap<String, RoomQuota>,
    mutes: Mutes,
    words: Arc<WordFilter>,
    /// (conversation, kind) → count since the last [`Gate::take_counts`].
    counts: HashMap<(ConversationId, String), u64>,
}

impl WordVerdict {
    /// The payload to send (`sent`, or its masked copy), or `Err` when a blocked word refuses it.
    fn into_payload(self, sent: String) -> Result<String, ()> {
        match self {
            WordVerdict::Pass => Ok(sent),
            WordVerdict::Replaced(p) => Ok(p),
            WordVerdict::Blocked(_) => Err(()),
        }
    }
}

fn refuse(code: ErrorCode, message: &str) -> Verdict {
    Verdict::Refuse(code, message.to_string())
}

/// The error of an input check.
pub fn invalid(e: &InvalidInput) -> (ErrorCode, String) {
    match e {
        InvalidInput::PayloadTooLarge { .. } => (ErrorCode::TooLarge, e.to_string()),
        _ => (ErrorCode::BadMessage, e.to_string()),
    }
}

impl Gate {
    pub fn new(config: GateConfig, words: WordFilter) -> Gate {
        let rate = Rate::new(config.rate_per_sec, config.rate_per_sec * 2.0);
        Gate {
            config,
            rate,
            rates: HashMap::new(),
            quotas: HashMap::new(),
            mutes: Mutes::default(),
            words: Arc::new(words),
            counts: HashMap::new(),
        }
    }

    /// The verdict on one message at `now`. See the module doc for the order of the checks.
    pub fn admit(&mut self, sender: Sender<'_>, submission: Submission, now: Instant) -> Verdict {
        let Submission { conversation, client_id, kind, mut payload, mut flags, persist } = submission;
        if !sender.can_chat {
            return refuse(ErrorCode::PermissionDenied, "this token may not chat");
        }
        if !self.take_token(sender.identity, now) {
            return refuse(ErrorCode::RateLimited, "too many chat messages");
        }
        let conversation = match conversation {
            Ok(c) => c,
            Err((code, why)) => return Verdict::Refuse(code, why),
        };
        let room = conversation.as_room().map(str::to_string);
        if room.as_deref().is_some_and(|r| self.mutes.is_muted(r, sender.identity, now)) {
            return refuse(ErrorCode::Muted, "a room admin muted your chat");
        }
        payload = match self.words.check(&payload).into_payload(payload) {
            Ok(p) => p,
            Err(()) => return refuse(ErrorCode::Blocked, "the message holds a blocked word"),
        };
        if kind.starts_with("chat.") {
            return refuse(ErrorCode::BadMessage, "message types starting with \"chat.\" are the server's");
        }
        let cfg = &self.config;
        let allowlisted = cfg.high_priority_kinds.contains(&kind)
            || cfg.high_priority_identities.iter().any(|i| i == sender.identity);
        let priority = if allowlisted {
            Priority::High
        } else if cfg.low_priority_kinds.contains(&kind) {
            Priority::Low
        } else {
            flags.priority
        };
        if priority == Priority::High && !sender.room_admin && !allowlisted {
            return refuse(ErrorCode::PermissionDenied, "high priority needs the room_admin grant");
        }
        flags.priority = priority;
        let ephemeral = !persist || priority == Priority::Low;
        if let Some(room) = &room {
            let quota = self.quotas.entry(room.clone()).or_default();
            if !quota.admit(&cfg.quota, priority, now) {
                if ephemeral {
                    return Verdict::Shed(conversation);
                }
                return refuse(ErrorCode::QuotaExceeded, "the room is over its chat quota; retry later");
            }
        }
        let message = NewMessage {
            conversation,
            sender: sender.identity.to_string(),
            client_id,
            kind,
            payload,
            flags,
            amends: None,
            alert_to: Vec::new(),
        };
        if let Err(e) = message.validate(&cfg.limits) {
            let (code, why) = invalid(&e);
            return Verdict::Refuse(code, why);
        }
        if !ephemeral {
            return Verdict::Store(message);
        }
        if priority == Priority::Low && cfg.aggregate_kinds.contains(&message.kind) {
            *self.counts.entry((message.conversation.clone(), message.kind)).or_default() += 1;
            return Verdict::Count(message.conversation);
        }
        Verdict::Deliver(message)
    }

    /// The gate of a recall (`payload: None`) or an edit: the grant, the rate, the conversation, the mute and the
    /// keyword lists, as for a message. Returns the conversation and the payload to store (masked).
    pub fn admit_amend(
        &mut self,
        sender: Sender<'_>,
        conversation: Result<ConversationId, (ErrorCode, String)>,
        payload: Option<String>,
        now: Instant,
    ) -> Result<(ConversationId, Option<String>), (ErrorCode, String)> {
        let no = |code, why: &str| Err((code, why.to_string()));
        if !sender.can_chat {
            return no(ErrorCode::PermissionDenied, "this token may not chat");
        }
        if !self.take_token(sender.identity, now) {
            return no(ErrorCode::RateLimited, "too many chat messages");
        }
        let conversation = conversation?;
        if conversation.as_room().is_some_and(|r| self.mutes.is_muted(r, sender.identity, now)) {
            return no(ErrorCode::Muted, "a room admin muted your chat");
        }
        let payload = match payload.map(|p| self.words.check(&p).into_payload(p)) {
            Some(Err(())) => return no(ErrorCode::Blocked, "the message holds a blocked word"),
            Some(Ok(p)) => Some(p),
            None => None,
        };
        Ok((conversation, payload))
    }

    /// Take a token of `identity`'s chat rate.
    pub fn take_token(&mut self, identity: &str, now: Instant) -> bool {
        let rate = self.rate;
        let bucket = self.rates.entry(identity.to_string()).or_insert_with(|| TokenBucket::full(rate, now));
        bucket.take(rate, now).is_ok()
    }

    /// Is `identity` muted in `room` at `now`?
    pub fn is_muted(&mut self, room: &str, identity: &str, now: Instant) -> bool {
        self.mutes.is_muted(room, identity, now)
    }

    /// Mute or unmute `identity` in `room` (until `until`, or until unmuted).
    pub fn set_muted(&mut self, room: &str, identity: &str, muted: bool, until: Option<Instant>) {
        self.mutes.set(room, identity, muted, until);
    }

    /// Use new keyword lists from now on.
    pub fn set_words(&mut self, words: WordFilter) {
        self.words = Arc::new(words);
    }

    /// The counts gathered since the last call, by conversation and kind.
    pub fn take_counts(&mut self) -> Vec<(ConversationId, String, u64)> {
        self.counts.drain().map(|((c, k), n)| (c, k, n)).collect()
    }

    /// The identity's last session ended: its bucket goes (a new session starts full anyway).
    pub fn forget_identity(&mut self, identity: &str) {
        self.rates.remove(identity);
    }

    /// The room's last session ended: its quota goes.
    pub fn forget_room(&mut self, room: &str) {
        self.quotas.remove(room);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> GateConfig {
        GateConfig {
            rate_per_sec: 5.0,
            quota: QuotaConfig { rate: 10.0, high_reserve: 0.2, low_floor: 0.5 },
            low_priority_kinds: vec!["like".into(), "danmaku".into()],
            high_priority_kinds: vec!["notice".into()],
            high_priority_identities: vec!["host".into()],
            aggregate_kinds: vec!["like".into()],
            limits: Limits { max_payload_bytes: 64 },
        }
    }

    fn gate() -> Gate {
        Gate::new(config(), WordFilter::new(&["spam".into()], &["darn".into()]))
    }

    fn room() -> ConversationId {
        ConversationId::room("live").unwrap()
    }

    fn submission(kind: &str, payload: &str) -> Submission {
        Submission {
            conversation: Ok(room()),
            client_id: "c1".into(),
            kind: kind.into(),
            payload: payload.into(),
            flags: Flags::default(),
            persist: true,
        }
    }

    const MEMBER: Sender<'static> = Sender { identity: "alice", can_chat: true, room_admin: false };

    /// What a verdict is, without the message: the table compares these.
    #[derive(Debug, PartialEq)]
    enum Is {
        Store(Priority, &'static str),
        Deliver(Priority),
        Count,
        Shed,
        Refused(ErrorCode),
    }

    fn is(v: &Verdict) -> Is {
        match v {
            Verdict::Store(m) => {
                Is::Store(m.flags.priority, if m.payload.contains("****") { "masked" } else { "as sent" })
            }
            Verdict::Deliver(m) => Is::Deliver(m.flags.priority),
            Verdict::Count(_) => Is::Count,
            Verdict::Shed(_) => Is::Shed,
            Verdict::Refuse(code, _) => Is::Refused(*code),
        }
    }

    /// Every branch of [`Gate::admit`]: a fresh gate, an optional set-up, one message.
    #[test]
    fn every_branch_of_the_gate() {
        type Setup = fn(&mut Gate, Instant);
        let none: Setup = |_, _| {};
        let cases: Vec<(&str, Setup, Sender<'static>, Submission, Is)> = vec![
            (
                "a plain message is stored",
                none,
                MEMBER,
                submission("text", r#"{"t":"hi"}"#),
                Is::Store(Priority::Normal, "as sent"),
            ),
            (
                "no can_chat grant",
                none,
                Sender { can_chat: false, ..MEMBER },
                submission("text", "{}"),
                Is::Refused(ErrorCode::PermissionDenied),
            ),
            (
                "the identity's rate is spent",
                |g, now| {
                    while g.take_token("alice", now) {}
                },
                MEMBER,
                submission("text", "{}"),
                Is::Refused(ErrorCode::RateLimited),
            ),
            (
                "a conversation the member may not write to",
                none,
                MEMBER,
                Submission {
                    conversation: Err((ErrorCode::ConversationNotFound, "no".into())),
                    ..submission("text", "{}")
                },
                Is::Refused(ErrorCode::ConversationNotFound),
            ),
            (
                "muted in the room",
                |g, now| g.set_muted("live", "alice", true, Some(now + Duration::from_secs(60))),
                MEMBER,
                submission("text", "{}"),
                Is::Refused(ErrorCode::Muted),
            ),
            (
                "a mute that has run out",
                |g, now| g.set_muted("live", "alice", true, Some(now)),
                MEMBER,
                submission("text", "{}"),
                Is::Store(Priority::Normal, "as sent"),
            ),
            (
                "a room's mute does not reach direct conversations",
                |g, now| g.set_muted("live", "alice", true, Some(now + Duration::from_secs(60))),
                MEMBER,
                Submission {
                    conversation: Ok(ConversationId::direct("alice", "bob").unwrap()),
                    ..submission("text", "{}")
                },
                Is::Store(Priority::Normal, "as sent"),
            ),
            (
                "a blocked word",
                none,
                MEMBER,
                submission("text", r#"{"t":"buy SPAM"}"#),
                Is::Refused(ErrorCode::Blocked),
            ),
            (
                "a replaced word is masked",
                none,
                MEMBER,
                submission("text", r#"{"t":"darn"}"#),
                Is::Store(Priority::Normal, "masked"),
            ),
            (
                "the server's chat. prefix",
                none,
                MEMBER,
                submission("chat.recall", "{}"),
                Is::Refused(ErrorCode::BadMessage),
            ),
            (
                "high priority without room_admin",
                none,
                MEMBER,
                Submission {
                    flags: Flags { priority: Priority::High, ..Flags::default() },
                    ..submission("text", "{}")
                },
                Is::Refused(ErrorCode::PermissionDenied),
            ),
            (
                "high priority with room_admin",
                none,
                Sender { room_admin: true, ..MEMBER },
                Submission {
                    flags: Flags { priority: Priority::High, ..Flags::default() },
                    ..submission("text", "{}")
                },
                Is::Store(Priority::High, "as sent"),
            ),
            (
                "an allowlisted kind is high",
                none,
                MEMBER,
                submission("notice", "{}"),
                Is::Store(Priority::High, "as sent"),
            ),
            (
                "an allowlisted identity is high",
                none,
                Sender { identity: "host", ..MEMBER },
                submission("text", "{}"),
                Is::Store(Priority::High, "as sent"),
            ),
            (
                "a low kind is passed on, not stored",
                none,
                MEMBER,
                submission("danmaku", "{}"),
                Is::Deliver(Priority::Low),
            ),
            (
                "asked low is passed on",
                none,
                MEMBER,
                Submission { flags: Flags { priority: Priority::Low, ..Flags::default() }, ..submission("text", "{}") },
                Is::Deliver(Priority::Low),
            ),
            (
                "persist: false is passed on",
                none,
                MEMBER,
                Submission { persist: false, ..submission("text", "{}") },
                Is::Deliver(Priority::Normal),
            ),
            ("an aggregated kind is counted", none, MEMBER, submission("like", "{}"), Is::Count),
            (
                "over the quota: a normal message is refused",
                |g, now| {
                    while g.quotas.entry("live".into()).or_default().admit(&config().quota, Priority::Normal, now) {}
                },
                MEMBER,
                submission("text", "{}"),
                Is::Refused(ErrorCode::QuotaExceeded),
            ),
            (
                "over the quota: a low one is shed",
                |g, now| {
                    while g.quotas.entry("live".into()).or_default().admit(&config().quota, Priority::Low, now) {}
                },
                MEMBER,
                submission("danmaku", "{}"),
                Is::Shed,
            ),
            (
                "over the quota: an ephemeral one is shed",
                |g, now| {
                    while g.quotas.entry("live".into()).or_default().admit(&config().quota, Priority::Normal, now) {}
                },
                MEMBER,
                Submission { persist: false, ..submission("text", "{}") },
                Is::Shed,
            ),
            (
                "over the quota: high priority still goes",
                |g, now| {
                    while g.quotas.entry("live".into()).or_default().admit(&config().quota, Priority::Normal, now) {}
                },
                MEMBER,
                submission("notice", "{}"),
                Is::Store(Priority::High, "as sent"),
            ),
            (
                "a direct conversation has no room quota",
                |g, now| {
                    while g.quotas.entry("live".into()).or_default().admit(&config().quota, Priority::Normal, now) {}
                },
                MEMBER,
                Submission {
                    conversation: Ok(ConversationId::direct("alice", "bob").unwrap()),
                    ..submission("text", "{}")
                },
                Is::Store(Priority::Normal, "as sent"),
            ),
            (
                "a payload over the cap",
                none,
                MEMBER,
                submission("text", &format!(r#"{{"t":"{}"}}"#, "x".repeat(100))),
                Is::Refused(ErrorCode::TooLarge),
            ),
            (
                "a payload that is not JSON",
                none,
                MEMBER,
                submission("text", "{nope"),
                Is::Refused(ErrorCode::BadMessage),
            ),
            (
                "a kind that is not a kind",
                none,
                MEMBER,
                submission("no spaces", "{}"),
                Is::Refused(ErrorCode::BadMessage),
            ),
            (
                "an ephemeral message is checked like any other",
                none,
                MEMBER,
                Submission { persist: false, ..submission("text", "{nope") },
                Is::Refused(ErrorCode::BadMessage),
            ),
        ];
        let now = Instant::now();
        for (name, setup, sender, sub, want) in cases {
            let mut g = gate();
            setup(&mut g, now);
            assert_eq!(is(&g.admit(sender, sub, now)), want, "{name}");
        }
    }

    #[test]
    fn counts_are_taken_once_and_rates_refill_with_time() {
        let mut g = gate();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(g.admit(MEMBER, submission("like", "{}"), t0), Verdict::Count(room()));
        }
        assert_eq!(g.take_counts(), vec![(room(), "like".to_string(), 3)]);
        assert!(g.take_counts().is_empty(), "taken once");
        // Burst of two seconds' worth (10), then refused, then one more token 200 ms later (a direct conversation:
        // no room quota in the way).
        let mut g = gate();
        let dm = || Submission {
            conversation: Ok(ConversationId::direct("alice", "bob").unwrap()),
            ..submission("text", "{}")
        };
        let passed = (0..20).filter(|_| !matches!(g.admit(MEMBER, dm(), t0), Verdict::Refuse(..))).count();
        assert_eq!(passed, 10);
        let later = |ms| t0 + Duration::from_millis(ms);
        assert!(matches!(g.admit(MEMBER, dm(), later(100)), Verdict::Refuse(ErrorCode::RateLimited, _)));
        assert!(matches!(g.admit(MEMBER, dm(), later(200)), Verdict::Store(_)));
        // Another identity has its own bucket; a forgotten identity starts full again.
        assert!(matches!(g.admit(Sender { identity: "bob", ..MEMBER }, dm(), t0), Verdict::Store(_)));
        assert!(matches!(g.admit(MEMBER, dm(), later(200)), Verdict::Refuse(ErrorCode::RateLimited, _)));
        g.forget_identity("alice");
        assert!(matches!(g.admit(MEMBER, dm(), later(200)), Verdict::Store(_)));
    }

    #[test]
    fn recalls_and_edits_pass_the_same_first_checks() {
        let now = Instant::now();
        let mut g = gate();
        let amend = |g: &mut Gate, sender, payload: Option<&str>| {
            g.admit_amend(sender, Ok(room()), payload.map(str::to_string), now).map(|(_, p)| p).map_err(|e| e.0)
        };
        assert_eq!(amend(&mut g, MEMBER, None), Ok(None));
        assert_eq!(amend(&mut g, MEMBER, Some(r#"{"t":"darn"}"#)), Ok(Some(r#"{"t":"****"}"#.to_string())));
        assert_eq!(amend(&mut g, MEMBER, Some(r#"{"t":"spam"}"#)), Err(ErrorCode::Blocked));
        assert_eq!(amend(&mut g, Sender { can_chat: false, ..MEMBER }, None), Err(ErrorCode::PermissionDenied));
        let gone = g.admit_amend(MEMBER, Err((ErrorCode::ConversationNotFound, "no".into())), None, now);
        assert_eq!(gone.map_err(|e| e.0), Err(ErrorCode::ConversationNotFound));
        g.set_muted("live", "alice", true, None);
        assert_eq!(amend(&mut g, MEMBER, None), Err(ErrorCode::Muted));
        while g.take_token("alice", now) {}
        assert_eq!(amend(&mut g, MEMBER, None), Err(ErrorCode::RateLimited));
    }

    #[test]
    fn new_word_lists_apply_at_once() {
        let mut g = gate();
        let now = Instant::now();
        assert!(matches!(g.admit(MEMBER, submission("text", r#"{"t":"gosh"}"#), now), Verdict::Store(_)));
        g.set_words(WordFilter::new(&["gosh".into()], &[]));
        assert!(matches!(
            g.admit(MEMBER, submission("text", r#"{"t":"gosh"}"#), now),
            Verdict::Refuse(ErrorCode::Blocked, _)
        ));
    }
}
