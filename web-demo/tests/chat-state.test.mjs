// The chat state of the JS client without a browser or a server (chat.js's ChatState is plain state): numbers kept
// once and in order, the outbox kept across a "reload" (a new state on the same storage), resume statuses, ticks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatState, parseMentions, directConversation } from '../chat.js';

/** A Storage stand-in (the page uses sessionStorage). */
class MemoryStorage {
  constructor() {
    /** @type {Map<string,string>} */ this.m = new Map();
  }
  getItem(/** @type {string} */ k) {
    return this.m.get(k) ?? null;
  }
  setItem(/** @type {string} */ k, /** @type {string} */ v) {
    this.m.set(k, v);
  }
}

const msg = (seq, sender = 'bob', text = `m${seq}`) => ({
  conversation: 'room:r', seq, sender, client_id: `c${seq}`, kind: 'text', payload: { text }, time: seq,
});

test('numbers are held once, in order, and the position only moves over a contiguous run', () => {
  const s = new ChatState('alice');
  s.onResumed({ conversation: 'room:r', status: 'fresh', epoch: 7, last_seq: 0 });
  for (const n of [1, 2, 2, 4, 3]) s.onMessage(msg(n));
  const c = s.conversation('room:r');
  assert.deepEqual(c.messages.map((m) => m.seq), [1, 2, 3, 4]);
  assert.equal(c.lastSeq, 3, 'the late 3 fills the hole, but 4 came before it');
  assert.deepEqual(s.resumeEntries(), [{ conversation: 'room:r', epoch: 7, last_seq: 3 }]);
});

test('the outbox and the position survive a reload; an ack empties the outbox and teaches the epoch', () => {
  const storage = new MemoryStorage();
  const a = new ChatState('alice', storage, 'k');
  a.onResumed({ conversation: 'room:r', status: 'fresh', epoch: 0, last_seq: 0 });
  const item = a.enqueue({ type: 'chat_send', conversation: 'room:r', kind: 'text', payload: { text: 'hi' } });
  const b = new ChatState('alice', storage, 'k');
  assert.deepEqual(b.outbox.map((o) => o.client_id), [item.client_id], 'kept before the ack');
  b.onAck({ client_id: item.client_id, conversation: 'room:r', seq: 1, epoch: 99 });
  assert.equal(b.outbox.length, 0);
  assert.equal(b.conversation('room:r').epoch, 99);
  b.save(true);
  const c = new ChatState('alice', storage, 'k');
  assert.equal(c.outbox.length, 0);
  assert.equal(c.conversation('room:r').epoch, 99);
});

test('a reset keeps exactly what was replayed; not_recovered drops the copy', () => {
  const s = new ChatState('alice');
  s.onResumed({ conversation: 'room:r', status: 'fresh', epoch: 1, last_seq: 0 });
  for (const n of [1, 2, 3]) s.onMessage(msg(n, 'bob', `old${n}`));
  s.resumeEntries(); // a reconnect resumes room:r at (1, 3)
  for (const n of [1, 2]) s.onMessage(msg(n, 'bob', `new${n}`)); // the server replays the new epoch's history
  s.onResumed({ conversation: 'room:r', status: 'reset', epoch: 2, last_seq: 2 });
  const c = s.conversation('room:r');
  assert.deepEqual(c.messages.map((m) => m.payload.text), ['new1', 'new2'], 'the new epoch\'s messages, not the old');
  assert.deepEqual(c.messages.map((m) => m.seq), [1, 2]);
  assert.equal(c.lastSeq, 2);
  assert.equal(c.epoch, 2);
  s.resumeEntries();
  s.onResumed({ conversation: 'room:r', status: 'not_recovered', epoch: 2, first_seq: 50, last_seq: 80 });
  assert.deepEqual(c.messages, []);
  assert.equal(c.lastSeq, 80);
});

test('ticks: sent, delivered by someone else, read by someone else; recall and edit apply to the original', () => {
  const s = new ChatState('alice');
  s.onResumed({ conversation: 'room:r', status: 'fresh', epoch: 1, last_seq: 0 });
  s.onMessage(msg(1, 'alice'));
  s.onMessage(msg(2, 'alice'));
  const [m1, m2] = s.conversation('room:r').messages;
  assert.equal(s.status('room:r', m1), 'sent');
  s.onReceipt('room:r', { identity: 'alice', delivered: 2, read: 2 });
  assert.equal(s.status('room:r', m1), 'sent', 'own receipts do not count');
  s.onReceipt('room:r', { identity: 'bob', delivered: 2, read: 1 });
  assert.equal(s.status('room:r', m1), 'read');
  assert.equal(s.status('room:r', m2), 'delivered');
  s.onMessage({ ...msg(3, 'alice'), kind: 'chat.recall', payload: { seq: 1 } });
  s.onMessage({ ...msg(4, 'alice'), kind: 'chat.edit', payload: { seq: 2, payload: { text: 'fixed' } } });
  const held = s.conversation('room:r').messages;
  assert.equal(held[0].state, 'recalled');
  assert.equal(held[0].payload, undefined);
  assert.deepEqual([held[1].state, held[1].payload.text], ['edited', 'fixed']);
});

test('mentions and direct conversation names', () => {
  assert.deepEqual(parseMentions('hi @bob and @zed, @all', ['bob', 'carol']), { mentions: ['bob'], mention_all: true });
  assert.equal(directConversation('bob', 'alice'), 'dm:alice:bob');
});
