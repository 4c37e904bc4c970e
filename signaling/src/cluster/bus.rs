//! The chat bus between nodes: what crosses Redis pub/sub, on which channels, and how a node makes sure that a lost
//! or late publication only delays a message. Pure: the shell publishes, subscribes and reads the store.
//!
//! **Channels.** A room's chat and ephemeral frames go to `courier:chat:room:<room>`; a direct conversation's to
//! `courier:chat:id:<identity>` of both identities; frames for one identity (its receipts, acknowledged alerts) to
//! that identity's channel. A node subscribes to the channel of every room and identity it has a chat session of
//! ([`Subscriptions`] counts them), and does so *before* the session reads its replay from the store, so that
//! nothing committed after the read can pass it by — the same order as the hub's own.
//!
//! **Order and gaps.** The store hands a node's commits to its listener in commit order, and the node publishes them
//! in that order on one connection, so one node's messages of a conversation arrive in order. Two nodes writing one
//! conversation publish independently, so a receiver can see 7 before 6; it delivers 7, and every session's
//! [`courier_chat::resume::ResumeMerge`] sees the hole and fills 6 from the store before delivering 7. What a
//! merge cannot see is a lost *last* message: [`Catchup`] remembers, per conversation recently active on this node,
//! the highest number delivered, and the shell checks those conversations' heads in the store every
//! [`HEAD_CHECK`]; a head beyond it is read from the store and delivered (sessions drop what they already have). A
//! node that could not publish (Redis down) publishes [`BusMsg::Head`] notices for what it committed meanwhile once
//! Redis is back, and a node whose subscription broke checks every watched conversation when it is back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use courier_chat::store::{MessageState, StoredMessage};
use courier_chat::{ConversationId, Flags, Priority};
use serde::{Deserialize, Serialize};

use super::registry::PREFIX;

/// How often recently active conversations' heads are compared with what this node delivered.
pub const HEAD_CHECK: Duration = Duration::from_secs(1);
/// A conversation is watched this long after its last message on this node.
pub const WATCH_FOR: Duration = Duration::from_secs(60);
/// Most conversations whose head is read in one check.
pub const HEADS_PER_CHECK: usize = 256;

/// The channel of a room's chat.
pub fn room_channel(room: &str) -> String {
    format!("{PREFIX}chat:room:{room}")
}

/// The channel of an identity: its direct conversations and frames meant for it.
pub fn identity_channel(identity: &str) -> String {
    format!("{PREFIX}chat:id:{identity}")
}

/// The channels a publication about `conversation` goes to.
pub fn channels_of(conversation: &ConversationId) -> Vec<String> {
    if let Some(room) = conversation.as_room() {
        return vec![room_channel(room)];
    }
    match conversation.as_direct() {
        Some((a, b)) => vec![identity_channel(a), identity_channel(b)],
        None => Vec::new(),
    }
}

/// A stored message as it crosses the bus (short field names: it goes to every interested node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    pub c: String,
    pub s: u64,
    pub from: String,
    pub cid: String,
    pub k: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    pub t: u64,
    pub st: u8,
    #[serde(default)]
    pub ack: bool,
    #[serde(default)]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub men: Vec<String>,
    pub pri: u8,
    pub cnt: bool,
}

impl From<&StoredMessage> for WireMessage {
    fn from(m: &StoredMessage) -> Self {
        WireMessage {
            c: m.conversation.to_string(),
            s: m.seq,
            from: m.sender.clone(),
            cid: m.client_id.clone(),
            k: m.kind.clone(),
            p: m.payload.clone(),
            t: m.server_time_ms,
            st: m.state.code(),
            ack: m.flags.must_ack,
            all: m.flags.mention_all,
            men: m.flags.mentions.clone(),
            pri: m.flags.priority.code(),
            cnt: m.flags.counted,
        }
    }
}

impl WireMessage {
    /// The stored message, if the publication is well formed.
    pub fn to_stored(&self) -> Option<StoredMessage> {
        Some(StoredMessage {
            conversation: ConversationId::parse(&self.c).ok()?,
            seq: self.s,
            sender: self.from.clone(),
            client_id: self.cid.clone(),
            kind: self.k.clone(),
            payload: self.p.clone(),
            flags: Flags {
                must_ack: self.ack,
                mention_all: self.all,
                mentions: self.men.clone(),
                priority: Priority::from_code(self.pri)?,
                counted: self.cnt,
            },
            server_time_ms: self.t,
            state: MessageState::from_code(self.st)?,
        })
    }
}

/// One publication. `o` is the node that published it: a node ignores its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusMsg {
    /// A committed message.
    Message { o: String, m: WireMessage },
    /// Messages `first..=last` of `c` were committed but not published (Redis was unreachable): read them.
    Head { o: String, c: String, first: u64, last: u64 },
    /// An ephemeral frame (typing, receipts, aggregates) for every member of `c`; `drop`: sheddable.
    Frame { o: String, c: String, drop: bool, f: String },
    /// A frame for every session of identity `i`.
    ToIdentity { o: String, i: String, f: String },
    /// Rooms that span nodes: a change of a node's part of a room, a snapshot, or a relay message
    /// ([`super::span`]).
    Span { o: String, s: super::span::SpanMsg },
}

impl BusMsg {
    pub fn origin(&self) -> &str {
        match self {
            BusMsg::Message { o, .. }
            | BusMsg::Head { o, .. }
            | BusMsg::Frame { o, .. }
            | BusMsg::ToIdentity { o, .. }
            | BusMsg::Span { o, .. } => o,
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &[u8]) -> Option<BusMsg> {
        serde_json::from_slice(text).ok()
    }
}

/// How many chat sessions of this node need each channel. Adding the first need means "subscribe", removing the
/// last "unsubscribe".
#[derive(Debug, Default)]
pub struct Subscriptions {
    counts: HashMap<String, usize>,
}

impl Subscriptions {
    /// One more session needs `channel`; `true` if it is newly needed.
    pub fn add(&mut self, channel: &str) -> bool {
        let n = self.counts.entry(channel.to_string()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// One session less needs `channel`; `true` if no session needs it any more.
    pub fn remove(&mut self, channel: &str) -> bool {
        match self.counts.get_mut(channel) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.counts.remove(channel);
                true
            }
            None => false,
        }
    }

    pub fn channels(&self) -> Vec<String> {
        self.counts.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[derive(Debug)]
struct Watched {
    /// The highest number delivered into this node's hub.
    upto: u64,
    active: Instant,
    checked: Instant,
}

/// What to read from the store and deliver: numbers `after + 1 ..= up_to` of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub conversation: ConversationId,
    pub after: u64,
    pub up_to: u64,
}

/// See the module doc: per conversation recently active here, the highest number delivered.
#[derive(Debug, Default)]
pub struct Catchup {
    watched: HashMap<ConversationId, Watched>,
}

impl Catchup {
    /// A message is about to be delivered into the hub (committed here, or heard on the bus). `false`: this node
    /// already delivered it or a later one — skip it (any session missing it fills the hole from the store).
    pub fn on_message(&mut self, c: &ConversationId, seq: u64, now: Instant) -> bool {
        match self.watched.get_mut(c) {
            Some(w) => {
                w.active = now;
                if seq <= w.upto {
                    return false;
                }
                w.upto = seq;
                true
            }
            None => {
                self.watched.insert(c.clone(), Watched { upto: seq, active: now, checked: now });
                true
            }
        }
    }

    /// The store's head (or a head notice) says `c` reached `last`, having started at `first` (the notice's first
    /// unpublished number; 1 for a head read). Returns what to read and deliver, if this node is behind.
    pub fn on_head(&mut self, c: &ConversationId, first: u64, last: u64, now: Instant) -> Option<Gap> {
        let after = match self.watched.get_mut(c) {
            Some(w) => {
                if last <= w.upto {
                    return None;
                }
                let after = w.upto;
                w.upto = last;
                w.active = now;
                after
            }
            None => {
                // Never seen here: deliver from the notice's first number (a head read of an unwatched
                // conversation does not happen: only watched ones are checked).
                self.watched.insert(c.clone(), Watched { upto: last, active: now, checked: now });
                first.saturating_sub(1)
            }
        };
        Some(Gap { conversation: c.clone(), after, up_to: last })
    }

    /// The conversations whose head should be read now (at most `limit`, the least recently checked first); they
    /// count as checked. Conversations idle for [`WATCH_FOR`] are forgotten.
    pub fn due(&mut self, now: Instant, limit: usize) -> Vec<ConversationId> {
        self.watched.retain(|_, w| now.saturating_duration_since(w.active) < WATCH_FOR);
        let mut due: Vec<(&ConversationId, Instant)> = self
            .watched
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.checked) >= HEAD_CHECK)
            .map(|(c, w)| (c, w.checked))
            .collect();
        due.sort_by_key(|(_, at)| *at);
        let out: Vec<ConversationId> = due.into_iter().take(limit).map(|(c, _)| c.clone()).collect();
        for c in &out {
            if let Some(w) = self.watched.get_mut(c) {
                w.checked = now;
            }
        }
        out
    }

    /// Check everything at the next [`Catchup::due`] (the subscription was broken: anything may have been missed).
    pub fn check_all(&mut self, now: Instant) {
        for w in self.watched.values_mut() {
            w.checked = now.checked_sub(HEAD_CHECK).unwrap_or(now);
            w.active = now;
        }
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

/// What a node committed but could not publish yet: per conversation, the first and last number.
#[derive(Debug, Default)]
pub struct Unpublished {
    heads: HashMap<ConversationId, (u64, u64)>,
}

/// Unpublished conversations remembered at most; beyond, the oldest numbers are kept per conversation anyway, so
/// the bound is on distinct conversations (each entry is two numbers).
pub const UNPUBLISHED_MAX: usize = 100_000;

impl Unpublished {
    /// `seq` of `c` was not published. `false` when the table is full (the caller logs it; members still get the
    /// message by the head check of nodes watching `c`, or at their next resume).
    pub fn add(&mut self, c: &ConversationId, seq: u64) -> bool {
        if let Some((first, last)) = self.heads.get_mut(c) {
            *first = (*first).min(seq);
            *last = (*last).max(seq);
            return true;
        }
        if self.heads.len() >= UNPUBLISHED_MAX {
            return false;
        }
        self.heads.insert(c.clone(), (seq, seq));
        true
    }

    /// Head notices for everything remembered, and forget it.
    pub fn take(&mut self, origin: &str) -> Vec<(ConversationId, BusMsg)> {
        self.heads
            .drain()
            .map(|(c, (first, last))| {
                let msg = BusMsg::Head { o: origin.to_string(), c: c.to_string(), first, last };
                (c, msg)
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(s: &str) -> ConversationId {
        ConversationId::parse(s).unwrap()
    }

    fn msg(c: &str, seq: u64) -> StoredMessage {
        StoredMessage {
            conversation: conv(c),
            seq,
            sender: "alice".into(),
            client_id: format!("c{seq}"),
            kind: "text".into(),
            payload: Some(r#"{"text":"hi"}"#.into()),
            flags: Flags { mentions: vec!["bob".into()], priority: Priority::High, ..Flags::default() },
            server_time_ms: 5,
            state: MessageState::Edited,
        }
    }

    #[test]
    fn a_message_crosses_the_bus_unchanged() {
        let m = msg("dm:alice:bob", 3);
        let bus = BusMsg::Message { o: "n1".into(), m: WireMessage::from(&m) };
        let back = BusMsg::decode(bus.encode().as_bytes()).unwrap();
        assert_eq!(back.origin(), "n1");
        match back {
            BusMsg::Message { m: w, .. } => assert_eq!(w.to_stored().unwrap(), m),
            other => panic!("{other:?}"),
        }
        assert!(BusMsg::decode(b"{\"t\":\"nope\"}").is_none());
        let mut bad = WireMessage::from(&m);
        bad.c = "nonsense".into();
        assert!(bad.to_stored().is_none(), "a malformed publication is dropped, not delivered");
    }

    #[test]
    fn channels_of_rooms_and_direct_conversations() {
        assert_eq!(channels_of(&conv("room:r1")), vec!["courier:chat:room:r1".to_string()]);
        assert_eq!(
            channels_of(&conv("dm:alice:bob")),
            vec!["courier:chat:id:alice".to_string(), "courier:chat:id:bob".to_string()]
        );
    }

    #[test]
    fn subscriptions_count_sessions() {
        let mut s = Subscriptions::default();
        assert!(s.add("a"));
        assert!(!s.add("a"));
        assert!(!s.remove("a"));
        assert!(s.remove("a"), "the last session left");
        assert!(!s.remove("a"), "removing what is not there changes nothing");
        assert!(s.is_empty());
    }

    #[test]
    fn duplicates_and_late_messages_are_skipped() {
        let t = Instant::now();
        let mut c = Catchup::default();
        let dm = conv("dm:alice:bob");
        assert!(c.on_message(&dm, 6, t));
        assert!(!c.on_message(&dm, 6, t), "the second channel's copy");
        assert!(c.on_message(&dm, 8, t), "7 was lost or is late: sessions fill the hole");
        assert!(!c.on_message(&dm, 7, t), "late: sessions already filled it");
    }

    #[test]
    fn a_lost_last_message_is_found_by_the_head_check() {
        let t = Instant::now();
        let mut c = Catchup::default();
        let room = conv("room:r");
        c.on_message(&room, 4, t);
        assert!(c.due(t, 10).is_empty(), "just delivered: not due");
        let later = t + HEAD_CHECK;
        assert_eq!(c.due(later, 10), vec![room.clone()]);
        assert!(c.due(later, 10).is_empty(), "checked");
        assert_eq!(c.on_head(&room, 1, 4, later), None, "not behind");
        assert_eq!(c.on_head(&room, 1, 6, later), Some(Gap { conversation: room.clone(), after: 4, up_to: 6 }));
        assert!(!c.on_message(&room, 5, later), "the late copy of 5 is not delivered twice");
    }

    #[test]
    fn idle_conversations_are_forgotten_and_a_broken_subscription_checks_all() {
        let t = Instant::now();
        let mut c = Catchup::default();
        c.on_message(&conv("room:a"), 1, t);
        c.on_message(&conv("room:b"), 1, t + WATCH_FOR / 2);
        assert_eq!(c.due(t + WATCH_FOR, 10), vec![conv("room:b")]);
        assert_eq!(c.len(), 1);
        let now = t + WATCH_FOR + Duration::from_millis(10);
        c.check_all(now);
        assert_eq!(c.due(now, 10), vec![conv("room:b")]);
    }

    #[test]
    fn due_is_bounded_and_oldest_first() {
        let t = Instant::now();
        let mut c = Catchup::default();
        for i in 0..5u64 {
            c.on_message(&conv(&format!("room:r{i}")), 1, t + Duration::from_millis(i));
        }
        let later = t + HEAD_CHECK * 2;
        assert_eq!(c.due(later, 2), vec![conv("room:r0"), conv("room:r1")]);
        assert_eq!(c.due(later, 10).len(), 3);
    }

    #[test]
    fn a_head_notice_of_an_unseen_conversation_reads_from_its_first_number() {
        let t = Instant::now();
        let mut c = Catchup::default();
        let dm = conv("dm:alice:bob");
        assert_eq!(c.on_head(&dm, 3, 5, t), Some(Gap { conversation: dm.clone(), after: 2, up_to: 5 }));
        assert_eq!(c.on_head(&dm, 3, 5, t), None);
    }

    #[test]
    fn unpublished_heads_become_notices() {
        let mut u = Unpublished::default();
        let dm = conv("dm:alice:bob");
        assert!(u.add(&dm, 4));
        assert!(u.add(&dm, 5));
        let out = u.take("n1");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, BusMsg::Head { o: "n1".into(), c: "dm:alice:bob".into(), first: 4, last: 5 });
        assert!(u.is_empty());
    }
}
