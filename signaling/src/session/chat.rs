//! The chat half of a session: what one connection sends and receives of chat.
//!
//! - **Sending**: a `chat_send` is checked here (grant, rate, size, who may use which priority), turned into a
//!   [`NewMessage`] and handed to this connection's *send pipeline*, a task that appends everything queued in one
//!   store call. The pipeline keeps the connection's messages in the order it sent them and answers `chat_ack`
//!   only after the store committed (the store published the message to every member first).
//! - **Receiving**: the hub pushes committed messages into this session's [`Inbox`]; each conversation has a
//!   [`ResumeMerge`] cursor so every sequence number is delivered once and in order, including while a resume
//!   replays a gap from the store (one chunk per turn of the session loop, so the socket keeps moving).
//! - Everything else (history, receipts, typing, recall and edit, alerts) is a request answered from the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::hook::HookVerdict;
use crate::AppState;
use courier_chat::frames::{chat_message_frame, wire_message};
use courier_chat::gate::{Sender, Submission, Verdict};
use courier_chat::hub::{Delivery, Inbox, MemberId};
use courier_chat::outbound::Class;
use courier_chat::resume::{ResumeMerge, Step};
use courier_chat::store::{
    Ack, AlertAck, Amend, ChatStore, MessageState, PageFrom, Replay, StoreError, StoredMessage, Tombstone,
};
use courier_chat::{ConversationId, Flags, NewMessage, Priority};
use courier_protocol::{
    AlertAckStatus, AlertAckView, ChatMessage, ChatSend, ClientMsg, ErrorCode, MessageState as WireState, ReceiptView,
    ResumePos, ResumeStatus, ServerMsg, Target,
};

/// Messages one connection may have waiting for the store.
pub const PIPELINE_DEPTH: usize = 256;
/// Most messages the pipeline appends in one store call.
const PIPELINE_BATCH: usize = 256;
/// How long a `chat_mute` waits for the room store to keep it.
const MUTE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages read from the store per turn of a replay.
const REPLAY_CHUNK: u64 = 500;
/// Live messages held back behind replays before the connection counts as too slow.
const HELD_MAX: usize = 20_000;
/// Inbox items taken per wake-up.
const TAKE_MAX: usize = 512;
/// Pending alerts sent per re-notification.
const ALERTS_MAX: usize = 100;

/// Something to write to the socket.
pub enum Out {
    Msg(ServerMsg),
    Frame(Utf8Bytes),
}

/// Why the session must close.
#[derive(Debug, PartialEq, Eq)]
pub enum Fatal {
    /// The outbound queue overflowed with messages that may not be shed.
    TooSlow,
}

struct Pending {
    client_id: String,
    message: NewMessage,
}

/// A replay (or hole fill) in progress: `after` is the last number read, `up_to` where to stop.
struct ReplayJob {
    conversation: ConversationId,
    after: u64,
    up_to: u64,
    /// `Some` for a resume (announced by `chat_resumed` when done), `None` for a fill.
    resume: Option<ResumeInfo>,
}

struct ResumeInfo {
    status: ResumeStatus,
    epoch: u64,
    first_seq: u64,
    replayed: u64,
}

/// See the module doc.
pub struct ChatSession {
    state: Arc<AppState>,
    identity: String,
    room: String,
    room_conv: Option<ConversationId>,
    can_chat: bool,
    room_admin: bool,
    member: MemberId,
    inbox: Arc<Inbox<Utf8Bytes>>,
    cursors: HashMap<ConversationId, ResumeMerge<Utf8Bytes>>,
    replays: VecDeque<ReplayJob>,
    pipeline: mpsc::Sender<Pending>,
    pub acks: mpsc::Receiver<ServerMsg>,
    next_alerts: Instant,
}

use courier_chat::clock::now_ms;

fn store_error(e: &StoreError) -> (ErrorCode, String) {
    match e {
        StoreError::Overloaded => (ErrorCode::Overloaded, "chat is busy, retry later".into()),
        StoreError::Invalid { source, .. } => invalid(source),
        StoreError::TooLarge { .. } => (ErrorCode::TooLarge, e.to_string()),
        _ => (ErrorCode::Internal, "chat store unavailable, retry later".into()),
    }
}

use courier_chat::gate::invalid;

impl ChatSession {
    /// Register with the hub (live messages start queuing at once) and start the send pipeline.
    pub fn start(state: Arc<AppState>, identity: &str, room: &str, can_chat: bool, room_admin: bool) -> ChatSession {
        let (member, inbox) = state.chat.hub.register(identity, room);
        let (pipeline, rx) = mpsc::channel(PIPELINE_DEPTH);
        let (ack_tx, acks) = mpsc::channel(PIPELINE_DEPTH);
        tokio::spawn(run_pipeline(state.clone(), rx, ack_tx));
        ChatSession {
            identity: identity.to_string(),
            room: room.to_string(),
            room_conv: ConversationId::room(room).ok(),
            can_chat,
            room_admin,
            member,
            inbox,
            cursors: HashMap::new(),
            replays: VecDeque::new(),
            pipeline,
            acks,
            next_alerts: Instant::now(),
            state,
        }
    }

    pub fn inbox(&self) -> Arc<Inbox<Utf8Bytes>> {
        self.inbox.clone()
    }

    /// In a cluster: make this node hear the other nodes' messages of this session's room and identity, before the
    /// resume reads the store (so nothing committed elsewhere after the read passes by). Nothing on its own.
    pub async fn follow_cluster(&self) {
        if let Some(c) = &self.state.cluster {
            c.follow(&self.identity, &self.room).await;
        }
    }

    /// Stop receiving.
    pub fn stop(&self) {
        let hub = &self.state.chat.hub;
        hub.unregister(self.member);
        if let Some(c) = &self.state.cluster {
            c.unfollow(&self.identity, &self.room);
        }
        if let Ok(mut gate) = self.state.chat.gate.lock() {
            if hub.identity_sessions(&self.identity) == 0 {
                gate.forget_identity(&self.identity);
            }
            if hub.room_size(&self.room) == 0 {
                gate.forget_room(&self.room);
            }
        }
    }

    /// Is a replay waiting for its next chunk?
    pub fn replaying(&self) -> bool {
        !self.replays.is_empty()
    }

    fn store(&self) -> &Arc<dyn ChatStore> {
        &self.state.chat.store
    }

    /// May this session read and write `c`?
    fn may_access(&self, c: &ConversationId) -> bool {
        match c.as_room() {
            Some(room) => room == self.room,
            None => c.involves(&self.identity),
        }
    }

    fn resolve(&self, target: &Target) -> Result<ConversationId, (ErrorCode, String)> {
        let c = match (&target.conversation, &target.to) {
            (Some(_), Some(_)) => return Err((ErrorCode::BadMessage, "give conversation or to, not both".into())),
            (Some(c), None) => ConversationId::parse(c).map_err(|e| (ErrorCode::BadMessage, e.to_string()))?,
            (None, Some(to)) => {
                ConversationId::direct(&self.identity, to).map_err(|e| (ErrorCode::BadMessage, e.to_string()))?
            }
            (None, None) => {
                self.room_conv.clone().ok_or((ErrorCode::BadMessage, "this room has no chat".to_string()))?
            }
        };
        if !self.may_access(&c) {
            return Err((ErrorCode::ConversationNotFound, format!("no conversation {c}")));
        }
        Ok(c)
    }

    fn conversation(&self, c: &str) -> Result<ConversationId, (ErrorCode, String)> {
        self.resolve(&Target { conversation: Some(c.to_string()), to: None })
    }

    fn sender(&self) -> Sender<'_> {
        Sender { identity: &self.identity, can_chat: self.can_chat, room_admin: self.room_admin }
    }

    async fn mute(
        &mut self,
        identity: &str,
        muted: bool,
        duration_secs: Option<u64>,
    ) -> Result<(), (ErrorCode, String)> {
        if !self.room_admin {
            return Err((ErrorCode::PermissionDenied, "muting needs the room_admin grant".into()));
        }
        courier_chat::validate_identity(identity).map_err(|e| (ErrorCode::BadMessage, e.to_string()))?;
        let Some(c) = self.room_conv.clone() else { return Err((ErrorCode::BadMessage, "no room chat".into())) };
        let duration = duration_secs.map(|s| Duration::from_secs(s.min(366 * 24 * 3600)));
        if let Ok(mut g) = self.state.chat.gate.lock() {
            g.set_muted(&self.room, identity, muted, duration.map(|d| Instant::now() + d));
        }
        // Kept, so a restart (or in a cluster, the node that takes the room over) applies it too. In force here
        // either way: a store that cannot be written within a moment costs the mute its durability, not its effect.
        let mute = crate::room_store::Mute {
            room: self.room.clone(),
            identity: identity.to_string(),
            until_ms: duration.map(|d| now_ms() + d.as_millis() as u64),
        };
        match tokio::time::timeout(MUTE_WRITE_TIMEOUT, self.state.room_store.set_mute(&mute, muted)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(room = %self.room, error = %e, "chat mute not kept"),
            Err(_) => warn!(room = %self.room, "chat mute not kept: the store did not answer in time"),
        }
        let frame = ServerMsg::ChatMuted {
            conversation: c.to_string(),
            identity: identity.to_string(),
            muted,
            until: duration.filter(|_| muted).map(|d| now_ms() + d.as_millis() as u64),
            by: self.identity.clone(),
        };
        self.state.chat.send(&c, None, Class::Droppable, frame.to_json().into());
        Ok(())
    }

    /// The admin API changed this member's grants: they apply from the next request.
    pub fn set_grants(&mut self, can_chat: bool, room_admin: bool) {
        self.can_chat = can_chat;
        self.room_admin = room_admin;
    }

    /// Handle one chat request; answers go to `out`.
    pub async fn handle(&mut self, msg: ClientMsg, out: &mut Vec<Out>) {
        let ty = msg.type_name();
        // Errors of requests with an id (history, receipts, alert status) carry it back.
        let rid = msg.request_id().unwrap_or_default();
        let err = |out: &mut Vec<Out>, (code, message): (ErrorCode, String)| {
            out.push(Out::Msg(ServerMsg::error_for(code, message, ty, &rid)));
        };
        match msg {
            ClientMsg::ChatSend(m) => {
                let client_id = m.client_id.clone();
                if let Err((code, message)) = self.send(m, out) {
                    out.push(Out::Msg(ServerMsg::chat_error(code, message, ty, &client_id)));
                }
            }
            ClientMsg::ChatRecall { client_id, target, seq } => {
                if let Err((code, message)) = self.amend(&client_id, &target, seq, None).await {
                    out.push(Out::Msg(ServerMsg::chat_error(code, message, ty, &client_id)));
                }
            }
            ClientMsg::ChatEdit { client_id, target, seq, payload } => {
                if let Err((code, message)) = self.amend(&client_id, &target, seq, Some(payload)).await {
                    out.push(Out::Msg(ServerMsg::chat_error(code, message, ty, &client_id)));
                }
            }
            ClientMsg::ChatHistory { id, target, before, after, limit } => {
                match self.history(id, &target, before, after, limit).await {
                    Ok(m) => out.push(Out::Msg(m)),
                    Err(e) => err(out, e),
                }
            }
            ClientMsg::ChatResume { conversations } => self.resume(&conversations, "chat_resume", out).await,
            ClientMsg::ChatReceipt { conversation, delivered, read } => {
                if let Err(e) = self.receipt(&conversation, delivered, read).await {
                    err(out, e);
                }
            }
            ClientMsg::ChatReceipts { id, conversation } => match self.receipts(id, &conversation).await {
                Ok(m) => out.push(Out::Msg(m)),
                Err(e) => err(out, e),
            },
            ClientMsg::ChatTyping { target, typing } => match self.resolve(&target) {
                Ok(c) => {
                    let frame =
                        ServerMsg::ChatTyping { conversation: c.to_string(), identity: self.identity.clone(), typing };
                    self.state.chat.send(&c, Some(self.member), Class::Droppable, frame.to_json().into());
                }
                Err(e) => err(out, e),
            },
            ClientMsg::ChatAlertAck { conversation, seq } => match self.alert_ack(&conversation, seq).await {
                Ok(m) => out.push(Out::Msg(m)),
                Err(e) => err(out, e),
            },
            ClientMsg::ChatMute { identity, muted, duration_secs } => {
                if let Err(e) = self.mute(&identity, muted, duration_secs).await {
                    err(out, e);
                }
            }
            ClientMsg::ChatAlertStatus { id, conversation, seq } => {
                match self.alert_status(id, &conversation, seq).await {
                    Ok(m) => out.push(Out::Msg(m)),
                    Err(e) => err(out, e),
                }
            }
            other => debug!(ty = other.type_name(), "not a chat message"),
        }
    }

    /// A `chat_send`: the gate decides (see `courier_chat::gate`), the session carries the verdict out.
    fn send(&mut self, m: ChatSend, out: &mut Vec<Out>) -> Result<(), (ErrorCode, String)> {
        let submission = Submission {
            conversation: self.resolve(&m.target),
            client_id: m.client_id.clone(),
            kind: m.kind,
            payload: m.payload,
            flags: Flags {
                must_ack: m.must_ack,
                mention_all: m.mention_all,
                mentions: m.mentions,
                priority: Priority::from(m.priority),
                counted: m.counted,
            },
            persist: m.persist,
        };
        let verdict = match self.state.chat.gate.lock() {
            Ok(mut gate) => gate.admit(self.sender(), submission, Instant::now()),
            Err(_) => return Err((ErrorCode::Internal, "chat gate unavailable".into())),
        };
        match verdict {
            Verdict::Refuse(code, why) => Err((code, why)),
            Verdict::Shed(c) => {
                out.push(Out::Msg(ServerMsg::ephemeral_ack(m.client_id, c.to_string(), now_ms(), true)));
                Ok(())
            }
            Verdict::Count(c) => {
                out.push(Out::Msg(ServerMsg::ephemeral_ack(m.client_id, c.to_string(), now_ms(), false)));
                Ok(())
            }
            Verdict::Deliver(message) => {
                // Ephemeral: passed on best-effort, never stored or numbered.
                let time = now_ms();
                let frame = ServerMsg::ChatMessage(ChatMessage {
                    conversation: message.conversation.to_string(),
                    seq: None,
                    sender: message.sender,
                    client_id: Some(message.client_id),
                    kind: message.kind,
                    payload: RawValue::from_string(message.payload).ok(),
                    time,
                    state: WireState::Normal,
                    priority: message.flags.priority.into(),
                    must_ack: false,
                    mention_all: message.flags.mention_all,
                    mentions: message.flags.mentions,
                    mentioned: false,
                    counted: false,
                    ephemeral: true,
                })
                .to_json();
                self.state.chat.send(&message.conversation, Some(self.member), Class::Droppable, frame.into());
                let c = message.conversation.to_string();
                out.push(Out::Msg(ServerMsg::ephemeral_ack(m.client_id, c, time, false)));
                Ok(())
            }
            Verdict::Store(mut message) => {
                if message.flags.must_ack {
                    message.alert_to = self.alert_audience(&message.conversation);
                }
                self.enqueue(m.client_id, message)
            }
        }
    }

    /// Who must acknowledge an alert in `c`: everyone in the room now, or the other side, but the sender.
    fn alert_audience(&self, c: &ConversationId) -> Vec<String> {
        let mut who = match (c.as_room(), c.as_direct()) {
            (Some(room), _) => self.state.chat.hub.room_identities(room),
            (None, Some((a, b))) => vec![a.to_string(), b.to_string()],
            _ => Vec::new(),
        };
        who.retain(|i| *i != self.identity);
        who
    }

    fn enqueue(&mut self, client_id: String, message: NewMessage) -> Result<(), (ErrorCode, String)> {
        self.pipeline.try_send(Pending { client_id, message }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                (ErrorCode::Overloaded, format!("more than {PIPELINE_DEPTH} messages waiting; retry later"))
            }
            mpsc::error::TrySendError::Closed(_) => (ErrorCode::Internal, "chat unavailable".to_string()),
        })
    }

    /// One stored message, if retained.
    async fn message(&self, c: &ConversationId, seq: u64) -> Result<Option<StoredMessage>, (ErrorCode, String)> {
        if seq == 0 {
            return Ok(None);
        }
        match self.store().range(c, seq - 1, seq).await {
            Ok(Replay::Messages { mut messages, .. }) => Ok(messages.pop().filter(|m| m.seq == seq)),
            Ok(_) => Ok(None),
            Err(e) => Err(store_error(&e)),
        }
    }

    /// Recall (`payload: None`) or edit message `seq`: a new sequenced message that changes the old one.
    async fn amend(
        &mut self,
        client_id: &str,
        target: &Target,
        seq: u64,
        payload: Option<String>,
    ) -> Result<(), (ErrorCode, String)> {
        let resolved = self.resolve(target);
        let (c, payload) = match self.state.chat.gate.lock() {
            Ok(mut gate) => gate.admit_amend(self.sender(), resolved, payload, Instant::now())?,
            Err(_) => return Err((ErrorCode::Internal, "chat gate unavailable".into())),
        };
        let original = self.message(&c, seq).await?;
        let mine = |m: &StoredMessage| m.sender == self.identity || (self.room_admin && c.as_room().is_some());
        let changeable = |m: &StoredMessage| {
            matches!(m.state, MessageState::Normal | MessageState::Edited) && !m.kind.starts_with("chat.")
        };
        let Some(original) = original.filter(|m| mine(m) && changeable(m)) else {
            return Err((ErrorCode::MessageNotFound, format!("no message {seq} of yours to change in {c}")));
        };
        if payload.is_some() && original.sender != self.identity {
            return Err((ErrorCode::PermissionDenied, "only the sender may edit a message".into()));
        }
        let (kind, body, change) = match payload {
            None => ("chat.recall", format!(r#"{{"seq":{seq}}}"#), Tombstone::Recall),
            Some(p) => {
                courier_chat::validate_payload(&p, &self.state.chat.limits).map_err(|e| invalid(&e))?;
                ("chat.edit", format!(r#"{{"seq":{seq},"payload":{p}}}"#), Tombstone::Edit { payload: p })
            }
        };
        let message = NewMessage {
            conversation: c,
            sender: self.identity.clone(),
            client_id: client_id.to_string(),
            kind: kind.to_string(),
            payload: body,
            flags: Flags { counted: false, priority: original.flags.priority, ..Flags::default() },
            amends: Some(Amend { seq, change }),
            alert_to: Vec::new(),
        };
        message.validate(&self.state.chat.limits).map_err(|e| invalid(&e))?;
        self.enqueue(client_id.to_string(), message)
    }

    async fn history(
        &self,
        id: serde_json::Value,
        target: &Target,
        before: Option<u64>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<ServerMsg, (ErrorCode, String)> {
        let c = self.resolve(target)?;
        let from = match (before, after) {
            (Some(b), _) => PageFrom::Before(b),
            (None, Some(a)) => PageFrom::After(a),
            (None, None) => PageFrom::Latest,
        };
        let head = self.store().head(&c).await.map_err(|e| store_error(&e))?;
        let messages = match head {
            Some(_) => self.store().page(&c, from, limit).await.map_err(|e| store_error(&e))?,
            None => Vec::new(),
        };
        let messages = messages.iter().map(|m| wire_message(m, self.mentioned(m))).collect();
        let (epoch, first_seq, last_seq) = head.map_or((0, 1, 0), |h| (h.epoch, h.first_seq, h.last_seq));
        Ok(ServerMsg::ChatHistory { id, conversation: c.to_string(), epoch, first_seq, last_seq, messages })
    }

    fn mentioned(&self, m: &StoredMessage) -> bool {
        m.flags.mention_all || m.flags.mentions.contains(&self.identity)
    }

    /// Start a resume of each conversation: replays are queued and run a chunk at a time by [`Self::step_replay`].
    /// Resume each conversation from the client's position; `req_type` (`join` or `chat_resume`) names the request
    /// in the error an entry gets when the member may not read it or the store fails — every entry is answered.
    pub async fn resume(&mut self, positions: &[ResumePos], req_type: &str, out: &mut Vec<Out>) {
        for pos in positions {
            let refuse = |code, message: String| ServerMsg::Error {
                code,
                message,
                req_type: Some(req_type.to_string()),
                id: None,
                client_id: None,
            };
            let c = match self.conversation(&pos.conversation) {
                Ok(c) => c,
                Err((code, message)) => {
                    out.push(Out::Msg(refuse(code, message)));
                    continue;
                }
            };
            let head = match self.store().head(&c).await {
                Ok(h) => h,
                Err(e) => {
                    let (code, message) = store_error(&e);
                    out.push(Out::Msg(refuse(code, message)));
                    continue;
                }
            };
            self.replays.retain(|j| j.conversation != c);
            let Some(head) = head else {
                // Nothing was ever said here: live from the first message. A client that holds numbers of it holds
                // what the server does not have: its copy is void (`reset`, nothing to replay).
                let mut cursor = ResumeMerge::new(0);
                let _ = cursor.replay_done();
                self.cursors.insert(c.clone(), cursor);
                out.push(Out::Msg(ServerMsg::ChatResumed {
                    conversation: c.to_string(),
                    status: if pos.last_seq > 0 { ResumeStatus::Reset } else { ResumeStatus::Fresh },
                    epoch: 0,
                    first_seq: 1,
                    last_seq: 0,
                    replayed: 0,
                    unread: 0,
                }));
                continue;
            };
            let same_history = pos.epoch == head.epoch || pos.epoch == 0;
            let (status, after) = if same_history && pos.last_seq <= head.last_seq {
                (ResumeStatus::Ok, pos.last_seq)
            } else {
                // History was wiped and began again, or the client holds numbers past the newest (a store restored
                // from an older backup): the client's numbers mean nothing now; it gets the retained history.
                (ResumeStatus::Reset, 0)
            };
            if after + 1 < head.first_seq {
                let mut cursor = ResumeMerge::new(head.last_seq);
                let _ = cursor.replay_done();
                self.cursors.insert(c.clone(), cursor);
                let unread = self.store().unread(&c, &self.identity).await.unwrap_or(0);
                out.push(Out::Msg(ServerMsg::ChatResumed {
                    conversation: c.to_string(),
                    status: ResumeStatus::NotRecovered,
                    epoch: head.epoch,
                    first_seq: head.first_seq,
                    last_seq: head.last_seq,
                    replayed: 0,
                    unread,
                }));
                continue;
            }
            self.cursors.insert(c.clone(), ResumeMerge::new(after));
            self.replays.push_back(ReplayJob {
                conversation: c,
                after,
                up_to: head.last_seq,
                resume: Some(ResumeInfo { status, epoch: head.epoch, first_seq: head.first_seq, replayed: 0 }),
            });
        }
    }

    /// Where the room's chat stands for a member that did not resume it: live from here on.
    pub async fn start_fresh_room(&mut self, out: &mut Vec<Out>) {
        let Some(c) = self.room_conv.clone() else { return };
        if self.cursors.contains_key(&c) {
            return;
        }
        let head = self.store().head(&c).await.ok().flatten();
        let (epoch, first_seq, last_seq) = head.map_or((0, 1, 0), |h| (h.epoch, h.first_seq, h.last_seq));
        let mut cursor = ResumeMerge::new(last_seq);
        let _ = cursor.replay_done();
        self.cursors.insert(c.clone(), cursor);
        let unread = if last_seq > 0 { self.store().unread(&c, &self.identity).await.unwrap_or(0) } else { 0 };
        out.push(Out::Msg(ServerMsg::ChatResumed {
            conversation: c.to_string(),
            status: ResumeStatus::Fresh,
            epoch,
            first_seq,
            last_seq,
            replayed: 0,
            unread,
        }));
    }

    /// Read and deliver the next chunk of the first replay.
    pub async fn step_replay(&mut self, out: &mut Vec<Out>) -> Result<(), Fatal> {
        let Some(mut job) = self.replays.pop_front() else { return Ok(()) };
        let up_to = job.up_to.min(job.after + REPLAY_CHUNK);
        let read = if up_to > job.after {
            self.store().range(&job.conversation, job.after, up_to).await
        } else {
            Ok(Replay::Messages { epoch: 0, messages: Vec::new() })
        };
        let messages = match read {
            Ok(Replay::Messages { messages, .. }) => messages,
            Ok(Replay::NotRecovered { .. }) | Ok(Replay::UnknownConversation) => {
                // Trimmed while we replayed: what is gone is gone; carry on live.
                warn!(conversation = %job.conversation, "history trimmed during a replay");
                Vec::new()
            }
            Err(e) => {
                warn!(conversation = %job.conversation, error = %e, "replay read failed; retrying");
                self.replays.push_front(job);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
        };
        let frames: Vec<(u64, Utf8Bytes)> =
            messages.iter().map(|m| (m.seq, Utf8Bytes::from(chat_message_frame(m, self.mentioned(m))))).collect();
        let cursor = self.cursors.entry(job.conversation.clone()).or_insert_with(|| ResumeMerge::new(job.after));
        let delivered = cursor.on_replay(frames);
        if let Some(info) = job.resume.as_mut() {
            info.replayed += delivered.len() as u64;
        }
        out.extend(delivered.into_iter().map(|(_, f)| Out::Frame(f)));
        job.after = up_to;
        if job.after < job.up_to {
            self.replays.push_front(job);
            return self.take_inbox(out);
        }
        // Done: release what was held; a hole behind it is filled by another job.
        if let Some(step) = self.cursors.get_mut(&job.conversation).map(|c| c.replay_done()) {
            self.apply_step(&job.conversation, step, out);
        }
        if let Some(info) = job.resume {
            let unread = self.store().unread(&job.conversation, &self.identity).await.unwrap_or(0);
            out.push(Out::Msg(ServerMsg::ChatResumed {
                conversation: job.conversation.to_string(),
                status: info.status,
                epoch: info.epoch,
                first_seq: info.first_seq,
                last_seq: job.up_to,
                replayed: info.replayed,
                unread,
            }));
        }
        self.take_inbox(out)
    }

    fn apply_step(&mut self, c: &ConversationId, step: Step<Utf8Bytes>, out: &mut Vec<Out>) {
        match step {
            Step::Deliver(v) => out.extend(v.into_iter().map(|(_, f)| Out::Frame(f))),
            Step::Fill { deliver, after, up_to } => {
                out.extend(deliver.into_iter().map(|(_, f)| Out::Frame(f)));
                debug!(conversation = %c, after, up_to, "filling a hole from the store");
                self.replays.push_back(ReplayJob { conversation: c.clone(), after, up_to, resume: None });
            }
        }
    }

    /// Move what the hub queued for this session into `out`, in order per conversation.
    pub fn take_inbox(&mut self, out: &mut Vec<Out>) -> Result<(), Fatal> {
        if self.inbox.overflowed() {
            return Err(Fatal::TooSlow);
        }
        for item in self.inbox.take(TAKE_MAX) {
            match item {
                Delivery::Frame(f) => out.push(Out::Frame(f)),
                Delivery::Sequenced { conversation, seq, frame } => {
                    let cursor = self.cursors.entry(conversation.clone()).or_insert_with(|| {
                        // First sight of this conversation in this session: live from this message on.
                        let mut c = ResumeMerge::new(seq - 1);
                        let _ = c.replay_done();
                        c
                    });
                    let step = cursor.on_live(seq, frame);
                    self.apply_step(&conversation, step, out);
                }
            }
        }
        let held: usize = self.cursors.values().map(|c| c.held()).sum();
        if held > HELD_MAX {
            return Err(Fatal::TooSlow);
        }
        Ok(())
    }

    async fn receipt(&mut self, conversation: &str, delivered: u64, read: u64) -> Result<(), (ErrorCode, String)> {
        let c = self.conversation(conversation)?;
        let Some(r) =
            self.store().set_receipt(&c, &self.identity, delivered, read).await.map_err(|e| store_error(&e))?
        else {
            return Err((ErrorCode::ConversationNotFound, format!("no messages in {c}")));
        };
        let frame: Utf8Bytes = ServerMsg::ChatReceipt {
            conversation: c.to_string(),
            identity: r.identity,
            delivered: r.delivered,
            read: r.read,
        }
        .to_json()
        .into();
        let chat = &self.state.chat;
        let everyone =
            c.as_room().is_none_or(|room| chat.hub.room_size(room) <= self.state.config.chat.receipt_fanout_max);
        if everyone {
            chat.send(&c, None, Class::Droppable, frame);
        } else {
            // A huge room: only this identity's own devices hear it (the others can ask with chat_receipts).
            chat.send_to_identity(&self.identity, Class::Droppable, frame);
        }
        Ok(())
    }

    async fn receipts(&self, id: serde_json::Value, conversation: &str) -> Result<ServerMsg, (ErrorCode, String)> {
        let c = self.conversation(conversation)?;
        let list = self.store().receipts(&c, 1000).await.map_err(|e| store_error(&e))?;
        let receipts = list
            .into_iter()
            .map(|r| ReceiptView { identity: r.identity, delivered: r.delivered, read: r.read })
            .collect();
        Ok(ServerMsg::ChatReceipts { id, conversation: c.to_string(), receipts })
    }

    async fn alert_ack(&mut self, conversation: &str, seq: u64) -> Result<ServerMsg, (ErrorCode, String)> {
        let c = self.conversation(conversation)?;
        let result = self.store().ack_alert(&c, seq, &self.identity).await.map_err(|e| store_error(&e))?;
        let (status, at) = match result {
            AlertAck::Acked { at_ms } => {
                if let Ok(Some(m)) = self.message(&c, seq).await {
                    let frame = ServerMsg::ChatAlertAcked {
                        conversation: c.to_string(),
                        seq,
                        identity: self.identity.clone(),
                        at: at_ms,
                    };
                    self.state.chat.send_to_identity(&m.sender, Class::Droppable, frame.to_json().into());
                }
                (AlertAckStatus::Acked, Some(at_ms))
            }
            AlertAck::AlreadyAcked { at_ms } => (AlertAckStatus::AlreadyAcked, Some(at_ms)),
            AlertAck::NotAsked => (AlertAckStatus::NotAsked, None),
        };
        Ok(ServerMsg::ChatAlertAck { conversation: c.to_string(), seq, status, at })
    }

    async fn alert_status(
        &self,
        id: serde_json::Value,
        conversation: &str,
        seq: u64,
    ) -> Result<ServerMsg, (ErrorCode, String)> {
        let c = self.conversation(conversation)?;
        let Some(status) = self.store().alert_status(&c, seq).await.map_err(|e| store_error(&e))? else {
            return Err((ErrorCode::MessageNotFound, format!("message {seq} of {c} is not an alert")));
        };
        Ok(ServerMsg::ChatAlertStatus {
            id,
            conversation: c.to_string(),
            seq,
            acked: status.acked.into_iter().map(|(identity, at)| AlertAckView { identity, at }).collect(),
            pending: status.pending,
        })
    }

    /// Send this identity's unacknowledged alerts again when due (and at once after joining).
    pub async fn renotify_alerts(&mut self, out: &mut Vec<Out>) {
        let now = Instant::now();
        if now < self.next_alerts {
            return;
        }
        self.next_alerts = now + self.state.config.chat.alert_renotify;
        let pending = match self.store().pending_alerts(&self.identity, ALERTS_MAX).await {
            Ok(p) => p,
            Err(e) => {
                debug!(error = %e, "pending alerts not read");
                return;
            }
        };
        for m in pending.iter().filter(|m| self.may_access(&m.conversation)) {
            out.push(Out::Msg(ServerMsg::ChatAlert {
                conversation: m.conversation.to_string(),
                seq: m.seq,
                message: wire_message(m, self.mentioned(m)),
            }));
        }
    }
}

/// Append what the connection queued, a batch per store call, and answer each in order. The pre-send hook, if
/// any, is asked about every message of the batch first (concurrently; the order is kept).
async fn run_pipeline(state: Arc<AppState>, mut rx: mpsc::Receiver<Pending>, acks: mpsc::Sender<ServerMsg>) {
    let store = state.chat.store.clone();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < PIPELINE_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // One answer slot per message, in order; refused ones are filled now, stored ones after the append.
        let mut answers: Vec<Option<ServerMsg>> = vec![None; batch.len()];
        if let Some(hook) = &state.chat.hook {
            let verdicts = futures::future::join_all(batch.iter().map(|p| hook.check(&p.message))).await;
            for ((p, verdict), answer) in batch.iter_mut().zip(verdicts).zip(answers.iter_mut()) {
                let client_id = p.client_id.clone();
                let refuse =
                    |code, message: String| Some(ServerMsg::chat_error(code, message, "chat_send", &client_id));
                *answer = match verdict {
                    HookVerdict::Pass => None,
                    HookVerdict::Modify(payload) => {
                        match courier_chat::validate_payload(&payload, &state.chat.limits) {
                            Ok(()) => {
                                p.message.payload = payload;
                                None
                            }
                            Err(e) => refuse(ErrorCode::HookUnavailable, format!("the pre-send hook's payload: {e}")),
                        }
                    }
                    HookVerdict::Drop(reason) => refuse(ErrorCode::Rejected, reason),
                    HookVerdict::Failed(e) if hook.fail_open => {
                        warn!(error = %e, "pre-send hook failed; passing the message (fail open)");
                        None
                    }
                    HookVerdict::Failed(e) => {
                        warn!(error = %e, "pre-send hook failed; refusing the message (fail closed)");
                        refuse(ErrorCode::HookUnavailable, "the pre-send hook is unavailable; retry later".into())
                    }
                };
            }
        }
        let (ids, messages): (Vec<String>, Vec<NewMessage>) =
            batch.into_iter().zip(&answers).filter(|(_, a)| a.is_none()).map(|(p, _)| (p.client_id, p.message)).unzip();
        let stored: Vec<ServerMsg> = if messages.is_empty() {
            Vec::new()
        } else {
            match store.append(messages).await {
                Ok(list) => ids.into_iter().zip(list).map(|(client_id, ack)| ack_msg(client_id, ack)).collect(),
                Err(e) => {
                    let (code, message) = store_error(&e);
                    ids.iter().map(|id| ServerMsg::chat_error(code, message.clone(), "chat_send", id)).collect()
                }
            }
        };
        let mut stored = stored.into_iter();
        for answer in answers {
            let Some(a) = answer.or_else(|| stored.next()) else { continue };
            if acks.send(a).await.is_err() {
                return;
            }
        }
    }
}

fn ack_msg(client_id: String, ack: Ack) -> ServerMsg {
    ServerMsg::ChatAck {
        client_id,
        conversation: ack.conversation.to_string(),
        seq: Some(ack.seq),
        epoch: Some(ack.epoch),
        time: ack.server_time_ms,
        duplicate: ack.duplicate,
        ephemeral: false,
        shed: false,
    }
}
