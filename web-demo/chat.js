// @ts-check
/**
 * Chat for the Courier browser client (docs/protocol.md, "Chat"): an outbox that survives a reload, exact resume
 * after a reconnect or a reload, receipts (✓ delivered, ✓✓ read), typing, recall and edit, mentions.
 *
 * Two parts. {@link ChatState} is plain state with no I/O: it takes the server's messages and the app's requests
 * and says what to send; it keeps, per conversation, the epoch, the last number held with nothing missing before
 * it, the messages (the newest {@link MAX_KEPT}) and everyone's receipts, and the outbox of messages not yet
 * acknowledged — all saved to a `Storage` (the page's `sessionStorage`) so that a reloaded page resumes where it
 * was. {@link Chat} is the thin shell on the client's WebSocket: it sends, batches delivered-receipts, retries
 * what the server said to retry, and emits events on the client.
 *
 * Events (on the `CourierClient`, `client.on(type, handler)`):
 * - `chat_changed` `{conversation}`: the messages or receipts of a conversation changed; re-render it.
 * - `chat_message` `{message}`: a new stored or ephemeral message from the server (not replays of known numbers).
 * - `chat_typing` `{conversation, identity, typing}`.
 * - `chat_failed` `{clientId, code, message}`: a message the server refused for good (it left the outbox).
 *
 * @module chat
 */

import { isEventName } from './events.js';

/** Messages kept per conversation (older ones are paged with `history()`). */
export const MAX_KEPT = 500;
/** Error codes after which a send is worth trying again (docs/protocol.md, "Sending: the client outbox"). */
export const RETRYABLE = new Set(['overloaded', 'quota_exceeded', 'rate_limited', 'internal', 'hook_unavailable']);

/**
 * @typedef {import('./protocol').ServerMsg} ServerMsg
 * @typedef {import('./protocol').ReceiptView} ReceiptView
 * @typedef {import('./protocol').ClientMsg} ClientMsg
 * @typedef {Extract<ClientMsg, {type: 'chat_send'|'chat_recall'|'chat_edit'}>} ChatFrame  a message the outbox keeps
 *
 * A message as the server sends it (`chat_message` without `type`; the wire type, generated from the server's), and
 * `pending`: an own message still in the outbox (not acknowledged yet).
 * @typedef {import('./protocol').ChatMessage & {pending?: boolean}} ChatMessage
 *
 * @typedef {object} Conversation
 * @property {number|null} epoch
 * @property {number} lastSeq          the last number held with nothing missing before it (0: none)
 * @property {ChatMessage[]} messages  ascending by seq
 * @property {Record<string, {delivered:number, read:number}>} receipts  by identity
 * @property {number} readSent         own read receipt last sent
 *
 * @typedef {object} OutboxItem
 * @property {string} client_id
 * @property {ChatFrame} frame   the `chat_send` (or `chat_recall`/`chat_edit`) to send, `client_id` included
 * @property {number} queuedAt
 */
/**
 * The server message of one `type`.
 * @template {ServerMsg['type']} T
 * @typedef {Extract<ServerMsg, {type: T}>} ServerMsgOf
 */

/** A fresh id for a message: unique per sender and device. */
export function newClientId() {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

/** The chat of a room. @param {string} room */
export const roomConversation = (room) => `room:${room}`;

/**
 * The direct conversation of two identities (byte order, as the server names it).
 * @param {string} a
 * @param {string} b
 */
export function directConversation(a, b) {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

/**
 * `@identity` and `@all` in a text, among the identities given.
 * @param {string} text
 * @param {Iterable<string>} identities
 * @returns {{mentions: string[], mention_all: boolean}}
 */
export function parseMentions(text, identities) {
  const known = new Set(identities);
  const mentions = new Set();
  let all = false;
  for (const m of text.matchAll(/(^|\s)@([A-Za-z0-9._-]{1,64})/g)) {
    if (m[2] === 'all') all = true;
    else if (known.has(m[2])) mentions.add(m[2]);
  }
  return { mentions: [...mentions], mention_all: all };
}

/** Chat state without I/O; see the module doc. */
export class ChatState {
  /**
   * @param {string} identity  own identity (receipts of others, ✓/✓✓ of own messages)
   * @param {Storage|null} [storage]
   * @param {string} [key]      where in `storage`
   */
  constructor(identity, storage = null, key = 'courier-chat') {
    this.identity = identity;
    this.storage = storage;
    this.key = key;
    /** @type {Map<string, Conversation>} */
    this.conversations = new Map();
    /** @type {OutboxItem[]} */
    this.outbox = [];
    /**
     * Numbers replayed since the resume of each conversation began (until its `chat_resumed`): after a `reset`
     * they are the conversation's new history, and everything older is void.
     * @type {Map<string, Set<number>>}
     */
    this.replaying = new Map();
    this._load();
  }

  /** @param {string} c @returns {Conversation} */
  conversation(c) {
    let conv = this.conversations.get(c);
    if (!conv) {
      conv = { epoch: null, lastSeq: 0, messages: [], receipts: {}, readSent: 0 };
      this.conversations.set(c, conv);
    }
    return conv;
  }

  /**
   * Positions for `join.chat` / `chat_resume`: every conversation held with an epoch. Starts tracking the replay
   * of each.
   */
  resumeEntries() {
    const out = [];
    for (const [conversation, c] of this.conversations) {
      if (c.epoch === null) continue;
      out.push({ conversation, epoch: c.epoch, last_seq: c.lastSeq });
      this.replaying.set(conversation, new Set());
    }
    return out;
  }

  /**
   * Put a frame in the outbox (saved at once: a reload before the ack sends it again, with the same id).
   * @param {Record<string, any>} frame without `client_id`
   * @returns {OutboxItem}
   */
  enqueue(frame) {
    const client_id = newClientId();
    const item = { client_id, frame: /** @type {ChatFrame} */ ({ ...frame, client_id }), queuedAt: Date.now() };
    this.outbox.push(item);
    this.save(true);
    return item;
  }

  /**
   * `chat_ack`: the message left the outbox. Returns the item, if it was ours.
   * @param {ServerMsgOf<'chat_ack'>} ack
   */
  onAck(ack) {
    const i = this.outbox.findIndex((o) => o.client_id === ack.client_id);
    if (i < 0) return null;
    const [item] = this.outbox.splice(i, 1);
    // A conversation first met empty (`fresh` with epoch 0) learns its epoch from the first ack.
    const c = this.conversation(ack.conversation);
    if (!c.epoch && ack.epoch) c.epoch = ack.epoch;
    this.save(true);
    return item;
  }

  /**
   * An `error` for one of ours: `retry` (stays in the outbox) or `failed` (removed).
   * @param {string} clientId
   * @param {string} code
   * @returns {'retry'|'failed'|null}
   */
  onSendError(clientId, code) {
    const i = this.outbox.findIndex((o) => o.client_id === clientId);
    if (i < 0) return null;
    if (RETRYABLE.has(code)) return 'retry';
    this.outbox.splice(i, 1);
    this.save(true);
    return 'failed';
  }

  /**
   * A `chat_message`, live or replayed. Returns whether it is new (not a number already held).
   * @param {ChatMessage} m
   * @returns {boolean}
   */
  onMessage(m) {
    if (m.seq === undefined) return true; // ephemeral: shown, not kept
    const replay = this.replaying.get(m.conversation);
    replay?.add(m.seq);
    const c = this.conversation(m.conversation);
    const held = c.messages.findIndex((x) => x.seq === m.seq);
    if (held >= 0) {
      // During a resume a held number may come again from a new epoch (a reset): the server's copy wins.
      if (!replay) return false;
      c.messages[held] = { ...m };
      this.save(false);
      return true;
    }
    if (c.epoch === null && c.lastSeq === 0) c.lastSeq = m.seq - 1; // first contact: start here
    if (m.seq === c.lastSeq + 1) c.lastSeq = m.seq;
    this._insert(c, m);
    this._applyAmend(c, m);
    this.save(false);
    return true;
  }

  /**
   * `chat_resumed`: adopt the epoch; `reset` and `not_recovered` void the local copy.
   * @param {ServerMsgOf<'chat_resumed'>} r
   */
  onResumed(r) {
    const c = this.conversation(r.conversation);
    const replayed = this.replaying.get(r.conversation) ?? new Set();
    this.replaying.delete(r.conversation);
    if (r.status === 'reset') {
      // The history began again (or this device only knew it empty): what was just replayed is all of it.
      c.messages = c.messages.filter((x) => x.seq !== undefined && replayed.has(x.seq));
      c.receipts = {};
      c.lastSeq = r.last_seq ?? 0;
    } else if (r.status === 'not_recovered') {
      c.messages = [];
      c.receipts = {};
      c.lastSeq = r.last_seq ?? 0;
    } else {
      c.lastSeq = Math.max(c.lastSeq, r.last_seq ?? 0);
    }
    if (r.epoch) c.epoch = r.epoch;
    else if (c.epoch === null) c.epoch = 0;
    this.save(false);
  }

  /**
   * A `chat_history` page: its messages join the conversation (older ones may come before the kept window).
   * @param {ServerMsgOf<'chat_history'>} h
   */
  onHistory(h) {
    const c = this.conversation(h.conversation);
    if (c.epoch && h.epoch && h.epoch !== c.epoch) c.messages = []; // the history began again
    if (h.epoch) c.epoch = h.epoch;
    for (const m of h.messages ?? []) {
      if (!c.messages.some((x) => x.seq === m.seq)) this._insert(c, m);
    }
    // A page that reaches the newest number fills everything up to it.
    const seqs = new Set(c.messages.map((x) => x.seq));
    while (seqs.has(c.lastSeq + 1)) c.lastSeq += 1;
    if (h.last_seq !== undefined && c.lastSeq < h.last_seq && seqs.has(h.last_seq) && this._contiguous(c, h)) {
      c.lastSeq = h.last_seq;
    }
    this.save(false);
  }

  /** @param {Conversation} c @param {ServerMsgOf<'chat_history'>} h */
  _contiguous(c, h) {
    const first = (h.messages ?? [])[0]?.seq;
    return first !== undefined && first <= c.lastSeq + 1;
  }

  /**
   * A `chat_receipt` (or one entry of `chat_receipts`).
   * @param {string} conversation
   * @param {ReceiptView} r
   */
  onReceipt(conversation, r) {
    const c = this.conversation(conversation);
    const prev = c.receipts[r.identity] ?? { delivered: 0, read: 0 };
    c.receipts[r.identity] = { delivered: Math.max(prev.delivered, r.delivered), read: Math.max(prev.read, r.read) };
    this.save(false);
  }

  /**
   * The tick of one of own messages: `sending` (in the outbox), `sent` (stored, no one else has it yet),
   * `delivered` (✓: someone else's device has it), `read` (✓✓: someone else read it).
   * @param {string} conversation
   * @param {ChatMessage} m
   * @returns {'sending'|'sent'|'delivered'|'read'}
   */
  status(conversation, m) {
    if (m.seq === undefined) return 'sending';
    const c = this.conversation(conversation);
    let best = 'sent';
    for (const [who, r] of Object.entries(c.receipts)) {
      if (who === this.identity) continue;
      if (r.read >= m.seq) return 'read';
      if (r.delivered >= m.seq) best = 'delivered';
    }
    return /** @type {'sent'|'delivered'} */ (best);
  }

  /** Messages waiting for their ack in `conversation` (to show as "sending"). @param {string} conversation */
  pending(conversation) {
    return this.outbox.filter((o) => (o.frame.conversation ?? '') === conversation && o.frame.type === 'chat_send');
  }

  /** @param {Conversation} c @param {ChatMessage} m */
  _insert(c, m) {
    const list = c.messages;
    let i = list.length;
    while (i > 0 && (list[i - 1].seq ?? 0) > (m.seq ?? 0)) i--;
    list.splice(i, 0, { ...m });
    if (list.length > MAX_KEPT) list.splice(0, list.length - MAX_KEPT);
  }

  /** A recall or edit changes the message it names. @param {Conversation} c @param {ChatMessage} m */
  _applyAmend(c, m) {
    if (m.kind !== 'chat.recall' && m.kind !== 'chat.edit') return;
    // A notice's payload names the message (`seq`) and, for an edit, carries the new `payload`.
    const notice = /** @type {{seq?: number, payload?: unknown}|undefined} */ (m.payload);
    const target = c.messages.find((x) => x.seq === notice?.seq);
    if (!target || target.state === 'recalled') return;
    if (m.kind === 'chat.recall') {
      target.state = 'recalled';
      delete target.payload;
    } else {
      target.state = 'edited';
      target.payload = notice?.payload;
    }
  }

  _load() {
    if (!this.storage) return;
    try {
      const raw = this.storage.getItem(this.key);
      if (!raw) return;
      const saved = JSON.parse(raw);
      for (const [k, v] of Object.entries(saved.conversations ?? {})) this.conversations.set(k, v);
      this.outbox = saved.outbox ?? [];
    } catch {
      /* a corrupt copy is dropped: the server has the history */
    }
  }

  /**
   * Save to the storage: at once (`now`, for the outbox) or within 200 ms.
   * @param {boolean} now
   */
  save(now) {
    if (!this.storage) return;
    if (!now) {
      if (!this._saveTimer) this._saveTimer = setTimeout(() => this.save(true), 200);
      return;
    }
    clearTimeout(this._saveTimer);
    this._saveTimer = undefined;
    try {
      const conversations = Object.fromEntries(this.conversations);
      this.storage.setItem(this.key, JSON.stringify({ conversations, outbox: this.outbox }));
    } catch {
      /* storage full or unavailable: chat still works, a reload resumes from the server's history */
    }
  }
}

/** The shell on a `CourierClient`; `client.chat`. */
export class Chat {
  /**
   * @param {import('./courier.js').CourierClient} client the CourierClient (its `_send`, `_emit`)
   */
  constructor(client) {
    this.client = client;
    /** @type {ChatState|null} */
    this.state = null;
    /** The room's conversation. */
    this.room = '';
    /** @type {Map<string, number>} delivered receipts to send, by conversation */
    this._deliveredDue = new Map();
    this._receiptTimer = undefined;
    this._retryTimer = undefined;
    this._typingSentAt = 0;
    this._nextHistoryId = 1;
    /** `chat_history` answers awaited, by request id. @type {Map<unknown, (h: ServerMsgOf<'chat_history'>) => void>} */
    this._historyWaiters = new Map();
    /** Conversations whose epoch was asked for. @type {Set<string>} */
    this._epochAsked = new Set();
  }

  /**
   * Before `join`: load what this device holds for (room, identity). Returns the `join.chat` positions.
   * @param {string} room
   * @param {string} identity
   * @param {Storage|null} storage
   */
  prepare(room, identity, storage) {
    this.room = roomConversation(room);
    this.state = new ChatState(identity, storage, `courier-chat:${room}:${identity}`);
    return this.state.resumeEntries();
  }

  /** Where this device's copy of each conversation stands: the `join.chat` positions (also on a reconnect). */
  resumeEntries() {
    return this.state?.resumeEntries() ?? [];
  }

  /** After `joined`: send what the outbox holds (same ids: the server answers duplicates with the original ack). */
  onJoined() {
    if (!this.state) return;
    for (const item of this.state.outbox) this.client._send(item.frame);
    // The room's chat follows with `chat_resumed`: the gap replayed, or `fresh` (then the recent history is fetched).
  }

  /**
   * Send a text (or a payload) to the room's chat or `opts.to` (an identity). Returns the outbox id.
   * @param {string|object} content
   * @param {{to?: string, conversation?: string, kind?: string, mentions?: string[], mention_all?: boolean,
   *   priority?: 'low'|'normal'|'high', persist?: boolean, must_ack?: boolean}} [opts]
   */
  send(content, opts = {}) {
    const state = this._need();
    const payload = typeof content === 'string' ? { text: content } : content;
    const conversation = opts.conversation ?? (opts.to ? directConversation(state.identity, opts.to) : this.room);
    const frame = { type: 'chat_send', conversation, kind: opts.kind ?? 'text', payload };
    if (typeof content === 'string' && !opts.mentions) {
      const ids = [...this.client.participants.values()].map((p) => p.identity);
      Object.assign(frame, parseMentions(content, ids));
    }
    for (const k of ['mentions', 'mention_all', 'priority', 'persist', 'must_ack']) {
      if (/** @type {any} */ (opts)[k] !== undefined) /** @type {any} */ (frame)[k] = /** @type {any} */ (opts)[k];
    }
    if (Array.isArray(/** @type {any} */ (frame).mentions) && !(/** @type {any} */ (frame).mentions.length)) {
      delete (/** @type {any} */ (frame).mentions);
    }
    if (!(/** @type {any} */ (frame).mention_all)) delete (/** @type {any} */ (frame).mention_all);
    const item = state.enqueue(frame);
    this.client._send(item.frame);
    this.client._emit('chat_changed', { conversation });
    return item.client_id;
  }

  /** Recall own message `seq`. @param {number} seq @param {string} [conversation] */
  recall(seq, conversation = this.room) {
    const item = this._need().enqueue({ type: 'chat_recall', conversation, seq });
    this.client._send(item.frame);
  }

  /** Change own message `seq`. @param {number} seq @param {string|object} content @param {string} [conversation] */
  edit(seq, content, conversation = this.room) {
    const payload = typeof content === 'string' ? { text: content } : content;
    const item = this._need().enqueue({ type: 'chat_edit', conversation, seq, payload });
    this.client._send(item.frame);
  }

  /** Tell the others this member is typing (at most every 2 s while true). @param {boolean} typing */
  typing(typing, conversation = this.room) {
    const now = Date.now();
    if (typing && now - this._typingSentAt < 2000) return;
    this._typingSentAt = typing ? now : 0;
    this.client._send({ type: 'chat_typing', conversation, typing });
  }

  /** ✓✓: everything held in `conversation` is read. @param {string} [conversation] */
  markRead(conversation = this.room) {
    const c = this._need().conversation(conversation);
    if (c.lastSeq > c.readSent) {
      c.readSent = c.lastSeq;
      this.client._send({ type: 'chat_receipt', conversation, read: c.lastSeq });
    }
  }

  /**
   * A page of history before `before` (or the newest); its messages join the conversation.
   * @param {string} [conversation]
   * @param {number} [before]
   * @returns {Promise<ServerMsgOf<'chat_history'>>}
   */
  history(conversation = this.room, before) {
    const id = this._nextHistoryId++;
    /** @type {Extract<ClientMsg, {type: 'chat_history'}>} */
    const req = { type: 'chat_history', id, conversation, limit: 50 };
    if (before !== undefined) req.before = before;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._historyWaiters.delete(id);
        reject(new Error('no chat_history within 10 s'));
      }, 10_000);
      this._historyWaiters.set(id, (h) => {
        clearTimeout(timer);
        resolve(h);
      });
      this.client._send(req);
    });
  }

  /** Messages of a conversation, ascending, with the pending ones of this device last. @param {string} [conversation] */
  /** @returns {ChatMessage[]} held messages in order, then own messages not acknowledged yet */
  messages(conversation = this.room) {
    const state = this._need();
    const held = state.conversation(conversation).messages;
    /** @type {ChatMessage[]} */
    const pending = state.pending(conversation).map((o) => {
      const frame = /** @type {Extract<ChatFrame, {type: 'chat_send'}>} */ (o.frame); // pending() keeps sends only
      return {
        conversation,
        sender: state.identity,
        client_id: o.client_id,
        kind: frame.kind ?? 'text',
        payload: frame.payload,
        time: o.queuedAt,
        pending: true,
      };
    });
    return [...held, ...pending];
  }

  /** ✓ state of one of own messages (see {@link ChatState.status}). @param {ChatMessage} m */
  status(m) {
    return this._need().status(m.conversation, m);
  }

  /**
   * A message from the server whose `type` starts with `chat_`, or an `error` naming a `client_id`.
   * @param {ServerMsg} msg
   */
  handle(msg) {
    const state = this.state;
    if (!state) return;
    switch (msg.type) {
      case 'chat_ack': {
        state.onAck(msg);
        this.client._emit('chat_changed', { conversation: msg.conversation });
        return;
      }
      case 'chat_message': {
        const { type: _t, ...m } = msg;
        if (state.onMessage(m)) {
          this.client._emit('chat_message', { message: m });
          this.client._emit('chat_changed', { conversation: m.conversation });
          if (m.seq !== undefined && m.sender !== state.identity) this._deliveredLater(m.conversation);
          // A conversation met empty (epoch 0) learns its epoch from a one-message page, so that a later resume
          // replays the gap only (not the whole history).
          if (m.seq !== undefined && state.conversation(m.conversation).epoch === 0 && !this._epochAsked.has(m.conversation)) {
            this._epochAsked.add(m.conversation);
            this.client._send({ type: 'chat_history', id: `epoch-${m.conversation}`, conversation: m.conversation, after: m.seq - 1, limit: 1 });
          }
        }
        return;
      }
      case 'chat_resumed': {
        state.onResumed(msg);
        // Everyone's receipts, for ✓/✓✓ of what was sent while away.
        this.client._send({ type: 'chat_receipts', id: `r-${msg.conversation}`, conversation: msg.conversation });
        if (msg.status === 'not_recovered' || msg.status === 'fresh') this.history(msg.conversation).catch(() => {});
        this.client._emit('chat_changed', { conversation: msg.conversation });
        this._deliveredLater(msg.conversation);
        return;
      }
      case 'chat_history': {
        state.onHistory(msg);
        this._historyWaiters.get(msg.id)?.(msg);
        this._historyWaiters.delete(msg.id);
        this.client._emit('chat_changed', { conversation: msg.conversation });
        return;
      }
      case 'chat_receipt': {
        state.onReceipt(msg.conversation, msg);
        this.client._emit('chat_changed', { conversation: msg.conversation });
        return;
      }
      case 'chat_receipts': {
        for (const r of msg.receipts ?? []) state.onReceipt(msg.conversation, r);
        this.client._emit('chat_changed', { conversation: msg.conversation });
        return;
      }
      case 'chat_typing': {
        this.client._emit('chat_typing', { conversation: msg.conversation, identity: msg.identity, typing: msg.typing });
        return;
      }
      case 'error': {
        if (msg.client_id === undefined) return;
        const verdict = state.onSendError(msg.client_id, msg.code);
        if (verdict === 'failed') {
          this.client._emit('chat_failed', { clientId: msg.client_id, code: msg.code, message: msg.message });
          this.client._emit('chat_changed', { conversation: this.room });
        } else if (verdict === 'retry') {
          this._retryLater();
        }
        return;
      }
      default:
        // The server's other chat messages (chat_muted, chat_alert, …) are passed on as they are (events.js).
        if (isEventName(msg.type)) this.client._emit(msg.type, /** @type {any} */ (msg));
        else this.client._log('ignoring unknown chat message', msg.type);
    }
  }

  /** Flush saved state (page hiding). */
  flush() {
    this.state?.save(true);
  }

  _need() {
    if (!this.state) throw new Error('chat is available once the client joins');
    return this.state;
  }

  /** @param {string} conversation */
  _deliveredLater(conversation) {
    const c = this.state?.conversation(conversation);
    if (!c || !c.lastSeq) return;
    this._deliveredDue.set(conversation, c.lastSeq);
    if (this._receiptTimer) return;
    this._receiptTimer = setTimeout(() => {
      this._receiptTimer = undefined;
      for (const [conversation, delivered] of this._deliveredDue) {
        this.client._send({ type: 'chat_receipt', conversation, delivered });
      }
      this._deliveredDue.clear();
    }, 300);
  }

  _retryLater() {
    if (this._retryTimer) return;
    this._retryTimer = setTimeout(() => {
      this._retryTimer = undefined;
      for (const item of this.state?.outbox ?? []) this.client._send(item.frame);
    }, 1000);
  }
}
