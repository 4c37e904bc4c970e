//! Who receives which chat message: every live session, by room and by identity, and the fan-out into their
//! bounded outbound queues.
//!
//! The hub is the store's [`CommitListener`]: the store's writer hands it each committed message in commit order,
//! and the hub pushes that message, encoded once, into the queue of every session that should see it — the
//! members of the room for a room chat, every session of either identity for a direct conversation. Pushing never
//! waits (see [`super::outbound`]), so the writer is never held up by a slow member, and because it happens before
//! the sender's acknowledgement is released, a message is in its members' queues no later than its sender learns
//! it is stored. Ephemeral messages (typing, low-priority danmaku, likes) take the same paths as droppable items
//! and are never stored.
//!
//! A session drains its [`Inbox`] when woken. If its queue overflows with messages that must not be shed, the inbox
//! is marked overflowed and the session closes the connection; the client resumes from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::frame::Frame;
use tokio::sync::Notify;

use super::frames::chat_message_frame;
use super::outbound::{Class, OutQueue, Push};
use super::store::{CommitListener, StoredMessage};
use super::ConversationId;

/// A registered session.
pub type MemberId = u64;

/// One item for a session.
#[derive(Debug, Clone)]
pub enum Delivery<F> {
    /// A stored message: the session delivers it in sequence order (merging it with any replay).
    Sequenced { conversation: ConversationId, seq: u64, frame: F },
    /// Anything else, sent as it is.
    Frame(F),
}

/// A session's end of the fan-out.
#[derive(Debug)]
pub struct Inbox<F> {
    queue: Mutex<OutQueue<Delivery<F>>>,
    notify: Notify,
    overflowed: AtomicBool,
}

impl<F> Inbox<F> {
    fn new(capacity: usize) -> Inbox<F> {
        Inbox { queue: Mutex::new(OutQueue::new(capacity)), notify: Notify::new(), overflowed: AtomicBool::new(false) }
    }

    fn push(&self, class: Class, item: Delivery<F>) -> Push {
        let result = match self.queue.lock() {
            Ok(mut q) => q.push(class, item),
            Err(_) => Push::Overflow,
        };
        match result {
            Push::Overflow => {
                self.overflowed.store(true, Ordering::Relaxed);
                self.notify.notify_one();
            }
            Push::Shed => {}
            Push::Queued | Push::QueuedShedOlder => self.notify.notify_one(),
        }
        result
    }

    /// Wait until something was pushed (or the inbox overflowed) since the last wait.
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Take up to `max` items, oldest first.
    pub fn take(&self, max: usize) -> Vec<Delivery<F>> {
        let Ok(mut q) = self.queue.lock() else { return Vec::new() };
        let mut out = Vec::with_capacity(q.len().min(max));
        while out.len() < max {
            match q.pop() {
                Some(d) => out.push(d),
                None => break,
            }
        }
        if !q.is_empty() {
            // More to do: make sure the next wait returns at once.
            self.notify.notify_one();
        }
        out
    }

    /// The queue overflowed with items that may not be shed: the session must close.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Droppable items shed from this inbox.
    pub fn shed(&self) -> u64 {
        self.queue.lock().map(|q| q.shed()).unwrap_or(0)
    }
}

#[derive(Debug)]
struct Member<F> {
    identity: String,
    room: String,
    inbox: Arc<Inbox<F>>,
}

#[derive(Debug)]
struct State<F> {
    next_id: MemberId,
    members: HashMap<MemberId, Member<F>>,
    rooms: HashMap<String, Vec<MemberId>>,
    identities: HashMap<String, Vec<MemberId>>,
}

impl<F> Default for State<F> {
    fn default() -> Self {
        State { next_id: 0, members: HashMap::new(), rooms: HashMap::new(), identities: HashMap::new() }
    }
}

impl<F> State<F> {
    /// The sessions that see `conversation`.
    fn audience(&self, conversation: &ConversationId) -> Vec<MemberId> {
        if let Some(room) = conversation.as_room() {
            return self.rooms.get(room).cloned().unwrap_or_default();
        }
        let Some((a, b)) = conversation.as_direct() else { return Vec::new() };
        let mut ids: Vec<MemberId> = Vec::new();
        for identity in [a, b] {
            ids.extend(self.identities.get(identity).into_iter().flatten());
        }
        ids
    }
}

/// Fan-out counters, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Messages committed by the store.
    pub committed: AtomicU64,
    /// Items pushed into inboxes.
    pub delivered: AtomicU64,
    /// Droppable items shed.
    pub shed: AtomicU64,
    /// Sessions that overflowed.
    pub overflows: AtomicU64,
}

/// See the module doc.
#[derive(Debug)]
pub struct Hub<F> {
    state: Mutex<State<F>>,
    queue_capacity: usize,
    pub stats: HubStats,
}

impl<F: Frame> Hub<F> {
    /// A hub giving every session a queue of `queue_capacity` items.
    pub fn new(queue_capacity: usize) -> Hub<F> {
        Hub { state: Mutex::new(State::default()), queue_capacity, stats: HubStats::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<F>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `identity` in `room` starts receiving.
    pub fn register(&self, identity: &str, room: &str) -> (MemberId, Arc<Inbox<F>>) {
        let inbox = Arc::new(Inbox::new(self.queue_capacity));
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        st.rooms.entry(room.to_string()).or_default().push(id);
        st.identities.entry(identity.to_string()).or_default().push(id);
        st.members.insert(id, Member { identity: identity.to_string(), room: room.to_string(), inbox: inbox.clone() });
        (id, inbox)
    }

    /// The session stops receiving.
    pub fn unregister(&self, id: MemberId) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(m) = st.members.remove(&id) else { return };
        for (map, key) in [(&mut st.rooms, &m.room), (&mut st.identities, &m.identity)] {
            if let Some(ids) = map.get_mut(key) {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    /// The distinct identities with a session in `room`.
    pub fn room_identities(&self, room: &str) -> Vec<String> {
        let st = self.lock();
        let mut out: Vec<String> = st
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|id| st.members.get(id).map(|m| m.identity.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Sessions of `identity`, in any room.
    pub fn identity_sessions(&self, identity: &str) -> usize {
        self.lock().identities.get(identity).map_or(0, Vec::len)
    }

    /// Sessions in `room`.
    pub fn room_size(&self, room: &str) -> usize {
        self.lock().rooms.get(room).map_or(0, Vec::len)
    }

    /// Push `frame` to every session that sees `conversation` but `except`.
    pub fn send(&self, conversation: &ConversationId, except: Option<MemberId>, class: Class, frame: F) {
        let st = self.lock();
        for id in st.audience(conversation) {
            if Some(id) == except {
                continue;
            }
            if let Some(m) = st.members.get(&id) {
                self.push(&m.inbox, class, Delivery::Frame(frame.clone()));
            }
        }
    }

    /// Push `frame` to every session of `identity`.
    pub fn send_to_identity(&self, identity: &str, class: Class, frame: F) {
        let st = self.lock();
        for id in st.identities.get(identity).into_iter().flatten() {
            if let Some(m) = st.members.get(id) {
                self.push(&m.inbox, class, Delivery::Frame(frame.clone()));
            }
        }
    }

    fn push(&self, inbox: &Inbox<F>, class: Class, item: Delivery<F>) {
        match inbox.push(class, item) {
            Push::Queued => {}
            Push::QueuedShedOlder | Push::Shed => {
                self.stats.shed.fetch_add(1, Ordering::Relaxed);
            }
            Push::Overflow => {
                self.stats.overflows.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

impl<F: Frame> Hub<F> {
    /// Push stored messages to every session that sees their conversation, as [`Delivery::Sequenced`] items: what
    /// this server committed ([`CommitListener::committed`]), and what another server of a cluster committed (heard
    /// on the cluster's bus, or read from the store when the bus lost it). Sessions deliver each number once, in
    /// order, so a message pushed twice or out of order costs nothing but the push.
    pub fn deliver(&self, messages: &[StoredMessage]) {
        let st = self.lock();
        for m in messages {
            let audience = st.audience(&m.conversation);
            if audience.is_empty() {
                continue;
            }
            let plain = F::from(chat_message_frame(m, m.flags.mention_all));
            let mentioned =
                (!m.flags.mentions.is_empty() && !m.flags.mention_all).then(|| F::from(chat_message_frame(m, true)));
            for id in audience {
                let Some(member) = st.members.get(&id) else { continue };
                let frame = match &mentioned {
                    Some(f) if m.flags.mentions.contains(&member.identity) => f.clone(),
                    _ => plain.clone(),
                };
                let item = Delivery::Sequenced { conversation: m.conversation.clone(), seq: m.seq, frame };
                self.push(&member.inbox, Class::Kept, item);
            }
        }
    }
}

impl<F: Frame> CommitListener for Hub<F> {
    fn committed(&self, messages: &[StoredMessage]) {
        self.stats.committed.fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.deliver(messages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageState;
    use crate::Flags;

    fn stored(conversation: &ConversationId, seq: u64, mentions: &[&str]) -> StoredMessage {
        StoredMessage {
            conversation: conversation.clone(),
            seq,
            sender: "alice".into(),
            client_id: format!("c{seq}"),
            kind: "text".into(),
            payload: Some(r#"{"text":"hi"}"#.into()),
            flags: Flags { mentions: mentions.iter().map(|s| s.to_string()).collect(), ..Flags::default() },
            server_time_ms: 1,
            state: MessageState::Normal,
        }
    }

    fn seqs(inbox: &Inbox<String>) -> Vec<(String, u64, bool)> {
        inbox
            .take(100)
            .into_iter()
            .filter_map(|d| match d {
                Delivery::Sequenced { conversation, seq, frame } => {
                    Some((conversation.to_string(), seq, frame.as_str().contains(r#""mentioned":true"#)))
                }
                Delivery::Frame(_) => None,
            })
            .collect()
    }

    #[test]
    fn room_messages_reach_the_room_and_direct_messages_both_identities() {
        let hub = Hub::<String>::new(16);
        let (_, a1) = hub.register("alice", "r1");
        let (_, a2) = hub.register("alice", "r2");
        let (_, b) = hub.register("bob", "r1");
        let (carol_id, c) = hub.register("carol", "r2");
        let room = ConversationId::room("r1").unwrap();
        let dm = ConversationId::direct("bob", "alice").unwrap();
        hub.committed(&[stored(&room, 1, &["bob"]), stored(&dm, 1, &[]), stored(&room, 2, &[])]);
        assert_eq!(
            seqs(&a1),
            vec![("room:r1".into(), 1, false), ("dm:alice:bob".into(), 1, false), ("room:r1".into(), 2, false)]
        );
        assert_eq!(
            seqs(&a2),
            vec![("dm:alice:bob".into(), 1, false)],
            "alice's other session: only the direct message"
        );
        assert_eq!(
            seqs(&b),
            vec![("room:r1".into(), 1, true), ("dm:alice:bob".into(), 1, false), ("room:r1".into(), 2, false)]
        );
        assert!(seqs(&c).is_empty());
        assert_eq!(hub.room_identities("r1"), vec!["alice".to_string(), "bob".to_string()]);
        hub.unregister(carol_id);
        assert_eq!(hub.room_size("r2"), 1);
    }

    #[test]
    fn a_full_inbox_of_kept_messages_overflows_and_droppables_are_shed() {
        let hub = Hub::<String>::new(2);
        let (_, slow) = hub.register("slow", "r");
        let room = ConversationId::room("r").unwrap();
        hub.send(&room, None, Class::Droppable, "typing".to_string());
        hub.committed(&[stored(&room, 1, &[]), stored(&room, 2, &[])]);
        assert!(!slow.overflowed(), "the typing item made room");
        assert_eq!(hub.stats.shed.load(Ordering::Relaxed), 1);
        hub.committed(&[stored(&room, 3, &[])]);
        assert!(slow.overflowed());
        assert_eq!(seqs(&slow).iter().map(|x| x.1).collect::<Vec<_>>(), vec![1, 2]);
    }
}
