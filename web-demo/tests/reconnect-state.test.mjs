// The reconnect policy of the JS client without timers or sockets (reconnect.js): which close codes reconnect, the
// backoff with its jitter, the deadline, the fresh token after an expired one, and which failed attempts end it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReconnectState, backoffMs, followRedirect, normalizeUrls, reconnectTarget, shouldReconnect } from '../reconnect.js';
import { MAX_REDIRECTS, RECONNECT_CODES } from '../signal.js';

const on = { reconnect: true, canRefreshToken: false };

test('which close codes reconnect', () => {
  for (const code of RECONNECT_CODES) assert.equal(shouldReconnect(code, on), true, `code ${code}`);
  for (const code of [1000, 4001, 4003, 4004, 4009, 4010, 4011]) assert.equal(shouldReconnect(code, on), false, `code ${code}`);
  assert.equal(shouldReconnect(4002, on), false, 'an expired token without getToken is final');
  assert.equal(shouldReconnect(4002, { reconnect: true, canRefreshToken: true }), true, 'with getToken: reconnect');
  assert.equal(shouldReconnect(1006, { reconnect: false, canRefreshToken: true }), false, 'reconnect turned off');
});

test('backoff: at once, then 250 ms doubling to 5 s, ±25 %', () => {
  assert.equal(backoffMs(1, 0.9), 0, 'the first attempt goes at once');
  assert.equal(backoffMs(2, 0.5), 250);
  assert.equal(backoffMs(3, 0.5), 500);
  assert.equal(backoffMs(6, 0.5), 4000);
  assert.equal(backoffMs(7, 0.5), 5000, 'capped');
  assert.equal(backoffMs(30, 0.5), 5000);
  assert.equal(backoffMs(2, 0), 187.5, 'jitter: 0.75 ×');
  assert.ok(Math.abs(backoffMs(7, 0.999999) - 6250) < 0.01, 'jitter: up to 1.25 ×');
});

test('attempts are counted and report why the last try ended', () => {
  const r = new ReconnectState({ code: 1006, reason: 'gone', now: 1000, timeoutMs: 60_000, canRefreshToken: false });
  assert.deepEqual(r.next(0.5), { attempt: 1, delayMs: 0, code: 1006, reason: 'gone', description: 'connection lost' });
  assert.deepEqual(r.onFailure(4029, true, 'too many'), { action: 'retry' });
  assert.deepEqual(r.next(0.5), {
    attempt: 2,
    delayMs: 250,
    code: 4029,
    reason: 'too many',
    description: 'too many joins; try again shortly',
  });
  assert.equal(r.attempt, 2);
});

test('the deadline', () => {
  const r = new ReconnectState({ code: 1006, reason: '', now: 1000, timeoutMs: 5000, canRefreshToken: false });
  assert.equal(r.expired(6000), false, 'at the deadline: not yet');
  assert.equal(r.expired(6001), true);
});

test('a failure without a close code, or before the socket opened, is tried again without changing the reason', () => {
  const r = new ReconnectState({ code: 1001, reason: 'shutting down', now: 0, timeoutMs: 1000, canRefreshToken: false });
  assert.deepEqual(r.onFailure(undefined, true, 'token fetch failed'), { action: 'retry' });
  assert.deepEqual(r.onFailure(4001, false, 'cannot connect'), { action: 'retry' }, 'not reachable: even a final code');
  assert.equal(r.lastCode, 1001);
  assert.equal(r.lastReason, 'shutting down');
});

test('a final close code from the server ends the attempts', () => {
  const r = new ReconnectState({ code: 1006, reason: '', now: 0, timeoutMs: 1000, canRefreshToken: false });
  assert.deepEqual(r.onFailure(4010, true, 'removed from the room'), { action: 'give_up', code: 4010, reason: 'removed from the room' });
  const r2 = new ReconnectState({ code: 1006, reason: '', now: 0, timeoutMs: 1000, canRefreshToken: false });
  assert.deepEqual(r2.onFailure(4002, true, 'expired'), { action: 'give_up', code: 4002, reason: 'expired' }, 'no getToken');
});

test('an expired token: a fresh one before the next attempt; a failed fetch keeps the wish', () => {
  const r = new ReconnectState({ code: 4002, reason: 'expired', now: 0, timeoutMs: 1000, canRefreshToken: true });
  assert.equal(r.needsFreshToken(), true, 'the connection was lost to an expired token');
  // The fetch failed (no tokenSettled): still wanted.
  assert.deepEqual(r.onFailure(undefined, false, 'fetch failed'), { action: 'retry' });
  assert.equal(r.needsFreshToken(), true);
  r.tokenSettled();
  assert.equal(r.needsFreshToken(), false);
  assert.deepEqual(r.onFailure(4002, true, 'expired again'), { action: 'retry' });
  assert.equal(r.needsFreshToken(), true, 'refused as expired: fetch again');
  const without = new ReconnectState({ code: 4002, reason: '', now: 0, timeoutMs: 1000, canRefreshToken: false });
  assert.equal(without.needsFreshToken(), false, 'no getToken: nothing to fetch');
  const lost = new ReconnectState({ code: 1006, reason: '', now: 0, timeoutMs: 1000, canRefreshToken: true });
  assert.equal(lost.needsFreshToken(), false, 'the token still holds after a blip');
});

test('a redirect loop or a bad redirect while reconnecting is tried again (the cluster may be moving the room)', () => {
  const r = new ReconnectState({ code: 1006, reason: '', now: 0, timeoutMs: 1000, canRefreshToken: false });
  assert.deepEqual(r.onFailure(4012, true, 'too many redirects'), { action: 'retry' });
  assert.equal(r.lastCode, 4012);
});

test('URLs given: one or several, empty and repeated ones dropped', () => {
  assert.deepEqual(normalizeUrls('ws://a/rtc'), ['ws://a/rtc']);
  assert.deepEqual(normalizeUrls(['ws://a/rtc', '', 'ws://b/rtc', 'ws://a/rtc']), ['ws://a/rtc', 'ws://b/rtc']);
  assert.deepEqual(normalizeUrls([]), []);
  assert.deepEqual(normalizeUrls(''), []);
});

test('reconnect targets: the last node, then the given URLs round-robin', () => {
  const last = { url: 'ws://node-a/rtc', node: 'node-a' };
  const urls = ['ws://lb1/rtc', 'ws://lb2/rtc'];
  const order = [1, 2, 3, 4, 5, 6, 7].map((a) => reconnectTarget(a, last, urls).url);
  assert.deepEqual(order, [
    'ws://node-a/rtc',
    'ws://lb1/rtc',
    'ws://lb2/rtc',
    'ws://node-a/rtc',
    'ws://lb1/rtc',
    'ws://lb2/rtc',
    'ws://node-a/rtc',
  ]);
  assert.deepEqual(reconnectTarget(1, last, urls), last, 'the last node keeps its id');
  assert.deepEqual(reconnectTarget(2, last, urls), { url: 'ws://lb1/rtc', node: null }, 'a given URL names no node');
  const single = { url: 'ws://one/rtc', node: null };
  assert.deepEqual(
    [1, 2, 3].map((a) => reconnectTarget(a, single, ['ws://one/rtc']).url),
    ['ws://one/rtc', 'ws://one/rtc', 'ws://one/rtc'],
    'one server: always it (the last node is not listed twice)',
  );
  const onB = { url: 'ws://lb2/rtc', node: null };
  assert.deepEqual(
    [1, 2, 3].map((a) => reconnectTarget(a, onB, urls).url),
    ['ws://lb2/rtc', 'ws://lb1/rtc', 'ws://lb2/rtc'],
  );
});

test('redirects: followed up to three in a row, resolved against the current URL, ws: or wss: only', () => {
  const msg = { type: 'redirect', url: 'ws://127.0.0.1:7002/rtc', node: 'node-b', room: 'demo' };
  for (let hop = 1; hop <= MAX_REDIRECTS; hop++) {
    assert.deepEqual(followRedirect(hop, msg, 'ws://127.0.0.1:7001/rtc'), {
      action: 'follow',
      target: { url: 'ws://127.0.0.1:7002/rtc', node: 'node-b' },
      hop,
    });
  }
  const fourth = followRedirect(MAX_REDIRECTS + 1, msg, 'ws://127.0.0.1:7001/rtc');
  assert.equal(fourth.action, 'fail');
  assert.equal(fourth.action === 'fail' && fourth.code, 'too_many_redirects');
  assert.match(fourth.action === 'fail' ? fourth.message : '', /^too many redirects/);
  assert.deepEqual(followRedirect(1, { url: '/b/rtc', node: 'b' }, 'wss://lb.example/rtc'), {
    action: 'follow',
    target: { url: 'wss://lb.example/b/rtc', node: 'b' },
    hop: 1,
  });
  for (const url of ['https://x/rtc', 'javascript:alert(1)', undefined, 42]) {
    const step = followRedirect(1, { url, node: 'x' }, 'ws://a/rtc');
    assert.equal(step.action === 'fail' && step.code, 'bad_redirect', `url ${String(url)}`);
  }
  assert.deepEqual(followRedirect(1, { url: 'ws://b/rtc', node: 7 }, 'ws://a/rtc'), {
    action: 'follow',
    target: { url: 'ws://b/rtc', node: null },
    hop: 1,
  }, 'a node id that is not a string is not shown');
});
