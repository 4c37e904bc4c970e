// The client's events are enumerated in one place (events.js): every name the sources emit is listed and documented
// there, and the client refuses to emit any other.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EVENT_NAMES, isEventName } from '../events.js';
import { CourierClient } from '../courier.js';

const WEB_DEMO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SOURCES = ['courier.js', 'chat.js', 'publisher.js', 'room-state.js', 'negotiation.js', 'reconnect.js', 'signal.js'];

test('every event name emitted in the sources is in EVENT_NAMES, and every listed name is documented', () => {
  assert.equal(new Set(EVENT_NAMES).size, EVENT_NAMES.length, 'no name twice');
  const emitted = new Set();
  for (const file of SOURCES) {
    const text = fs.readFileSync(path.join(WEB_DEMO, file), 'utf8');
    for (const m of text.matchAll(/(?:_emit|\bevent)\('([a-z_]+)'/g)) emitted.add(m[1]);
  }
  assert.ok(emitted.size >= 20, `found the emits (${emitted.size})`);
  for (const name of emitted) assert.ok(isEventName(name), `${name} is emitted but not in events.js`);
  const doc = fs.readFileSync(path.join(WEB_DEMO, 'events.js'), 'utf8');
  for (const name of EVENT_NAMES) {
    assert.match(doc, new RegExp(`@property \\{.*\\} ${name}\\b`), `${name} has a documented detail in CourierEventMap`);
  }
});

test('isEventName', () => {
  assert.equal(isEventName('joined'), true);
  assert.equal(isEventName('chat_alert'), true);
  assert.equal(isEventName('chat_send'), false, 'a client → server message is no event');
  assert.equal(isEventName('toString'), false);
  assert.equal(isEventName(undefined), false);
});

test('the client emits only the listed events', () => {
  const client = new CourierClient({ chatStorage: null });
  /** @type {any[]} */
  const seen = [];
  const off = client.on('reconnected', (d) => seen.push(d));
  client._emit('reconnected', { attempt: 2, participantId: 'PA_x' });
  off();
  client._emit('reconnected', { attempt: 3, participantId: 'PA_x' });
  assert.deepEqual(seen, [{ attempt: 2, participantId: 'PA_x' }], 'delivered to `on` until unsubscribed');
  assert.throws(() => client._emit(/** @type {any} */ ('remote_track'), {}), /not a CourierClient event: remote_track/);
});
