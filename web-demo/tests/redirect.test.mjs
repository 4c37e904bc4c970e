// The whole CourierClient in a cluster, over a fake WebSocket (fake-ws.mjs; no server, no browser): a `redirect`
// answering the join is followed without an error or a disconnect, at most three in a row; a client given several
// URLs tries the first reachable one; after losing its node it tries that node, then the given URLs in turn; and a
// `cluster_unavailable` refusal is retried with the backoff.

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { CourierClient, MAX_REDIRECTS } from '../courier.js';
import { EVENT_NAMES } from '../events.js';
import { FakeWebSocket, fakeToken, installFakes, joiningServer, redirectingServer } from './fake-ws.mjs';

beforeEach(() => installFakes());

/** A Storage holding chat positions for alice in demo, so the join carries `chat`. */
function storageWithPositions() {
  const data = new Map([
    [
      'courier-chat:demo:alice',
      JSON.stringify({
        conversations: { 'room:demo': { epoch: 'E1', lastSeq: 7, messages: [], receipts: {}, readSent: 0 } },
        outbox: [],
      }),
    ],
  ]);
  return /** @type {Storage} */ (
    /** @type {unknown} */ ({
      getItem: (/** @type {string} */ k) => data.get(k) ?? null,
      setItem: (/** @type {string} */ k, /** @type {string} */ v) => data.set(k, v),
      removeItem: (/** @type {string} */ k) => data.delete(k),
    })
  );
}

/**
 * A client that records every event it emits, by name.
 * @param {object} [options]
 */
function recordingClient(options = {}) {
  const client = new CourierClient({ publish: false, chatStorage: null, joinTimeoutMs: 2000, ...options });
  /** @type {{type: string, detail: any}[]} */
  const events = [];
  for (const type of EVENT_NAMES) client.on(type, (detail) => events.push({ type, detail }));
  const of = (/** @type {string} */ type) => events.filter((e) => e.type === type).map((e) => e.detail);
  return { client, events, of };
}

/** Wait until `cond()` holds, up to `ms`. */
async function until(/** @type {() => boolean} */ cond, ms, /** @type {string} */ what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const urlsOpened = () => FakeWebSocket.sockets.map((s) => s.url);
const joinsSent = () => FakeWebSocket.sockets.flatMap((s) => s.sent.filter((m) => m.type === 'join'));

test('a redirect is followed: the same join on the second URL, one `joined`, no error, node and url remembered', async () => {
  FakeWebSocket.servers.set('ws://a.test/rtc', redirectingServer('ws://b.test/rtc', 'node-b'));
  FakeWebSocket.servers.set('ws://b.test/rtc', joiningServer());
  const { client, of } = recordingClient({ chatStorage: storageWithPositions() });
  await client.connect('ws://a.test/rtc', fakeToken());

  assert.equal(client.state, 'joined');
  assert.deepEqual(urlsOpened(), ['ws://a.test/rtc', 'ws://b.test/rtc']);
  const [first, second] = joinsSent();
  assert.deepEqual(first.chat, [{ conversation: 'room:demo', epoch: 'E1', last_seq: 7 }], 'the join resumes the chat');
  assert.deepEqual(second, first, 'the same join (token, chat positions) at the node named');
  assert.equal(of('joined').length, 1);
  assert.deepEqual(of('redirected'), [{ url: 'ws://b.test/rtc', node: 'node-b', room: 'demo', hop: 1 }]);
  assert.deepEqual(of('error'), [], 'a redirect is no error');
  assert.deepEqual(of('closed'), []);
  assert.deepEqual(of('reconnecting'), [], 'nor a disconnect');
  assert.equal(client.url, 'ws://b.test/rtc');
  assert.equal(client.node, 'node-b');
  assert.equal(client.snapshot().node, 'node-b');
  assert.equal(FakeWebSocket.sockets[0].readyState, FakeWebSocket.CLOSED, 'the first socket was dropped');
  await client.leave(500);
  assert.equal(of('closed').length, 1);
});

test('three redirects in a row are followed; a fourth fails the join with `too_many_redirects`', async () => {
  const hosts = ['a', 'b', 'c', 'd', 'e'];
  hosts.slice(0, 4).forEach((h, i) => {
    FakeWebSocket.servers.set(`ws://${h}.test/rtc`, redirectingServer(`ws://${hosts[i + 1]}.test/rtc`, `node-${hosts[i + 1]}`));
  });
  FakeWebSocket.servers.set('ws://e.test/rtc', joiningServer());
  const three = { ...recordingClient() };
  // Three hops end on d, which redirects once more: the fourth.
  const started = Date.now();
  await assert.rejects(three.client.connect('ws://a.test/rtc', fakeToken()), (/** @type {any} */ err) => {
    assert.equal(err.code, 'too_many_redirects');
    assert.match(err.message, /too many redirects/);
    assert.equal(err.closeCode, 4012);
    return true;
  });
  assert.ok(Date.now() - started < 1000, 'fails at once, without waiting for a timeout');
  assert.equal(MAX_REDIRECTS, 3);
  assert.deepEqual(
    three.of('redirected').map((r) => r.hop),
    [1, 2, 3],
  );
  assert.deepEqual(urlsOpened(), ['ws://a.test/rtc', 'ws://b.test/rtc', 'ws://c.test/rtc', 'ws://d.test/rtc'], 'e never tried');
  assert.equal(three.of('joined').length, 0);
  assert.equal(three.client.state, 'closed');
  const [closed] = three.of('closed');
  assert.equal(closed.code, 4012);
  assert.match(closed.reason, /too many redirects/);

  // From b, three hops reach e, which hosts the room.
  FakeWebSocket.sockets = [];
  const ok = recordingClient();
  await ok.client.connect('ws://b.test/rtc', fakeToken());
  assert.equal(ok.client.node, 'node-e');
  assert.equal(ok.of('redirected').length, 3);
  assert.equal(ok.of('joined').length, 1);
  await ok.client.leave(500);
});

test('a redirect loop (a node naming itself) ends in `too_many_redirects` within a bounded time', async () => {
  FakeWebSocket.servers.set('ws://a.test/rtc', redirectingServer('ws://a.test/rtc', 'node-a'));
  const { client } = recordingClient();
  const started = Date.now();
  await assert.rejects(client.connect('ws://a.test/rtc', fakeToken()), { code: 'too_many_redirects' });
  assert.ok(Date.now() - started < 1000);
  assert.equal(FakeWebSocket.sockets.length, MAX_REDIRECTS + 1);
});

test('a redirect to a URL that is not a WebSocket URL fails the join (`bad_redirect`)', async () => {
  FakeWebSocket.servers.set('ws://a.test/rtc', redirectingServer('https://evil.test/x', 'node-x'));
  const { client } = recordingClient();
  await assert.rejects(client.connect('ws://a.test/rtc', fakeToken()), { code: 'bad_redirect' });
  assert.deepEqual(urlsOpened(), ['ws://a.test/rtc']);
});

test('a relative redirect URL is resolved against the node that sent it', async () => {
  FakeWebSocket.servers.set('ws://a.test/rtc', redirectingServer('/node-b/rtc', 'node-b'));
  FakeWebSocket.servers.set('ws://a.test/node-b/rtc', joiningServer());
  const { client } = recordingClient();
  await client.connect('ws://a.test/rtc', fakeToken());
  assert.equal(client.url, 'ws://a.test/node-b/rtc');
  await client.leave(500);
});

test('several URLs: the first that can be reached is joined', async () => {
  FakeWebSocket.servers.set('ws://b.test/rtc', joiningServer());
  const { client, of } = recordingClient();
  await client.connect(['ws://dead.test/rtc', 'ws://b.test/rtc'], fakeToken());
  assert.deepEqual(urlsOpened(), ['ws://dead.test/rtc', 'ws://b.test/rtc']);
  assert.equal(client.url, 'ws://b.test/rtc');
  assert.equal(client.node, null, 'no redirect: no node to show');
  assert.deepEqual(client.urls, ['ws://dead.test/rtc', 'ws://b.test/rtc']);
  assert.equal(of('joined').length, 1);
  await client.leave(500);
});

test('reconnect: the last node first, then the given URLs in turn; a survivor redirects to the room\'s new node', async () => {
  // Joined through lb1 on node-a.
  FakeWebSocket.servers.set('ws://lb1.test/rtc', redirectingServer('ws://na.test/rtc', 'node-a'));
  FakeWebSocket.servers.set('ws://lb2.test/rtc', redirectingServer('ws://nb.test/rtc', 'node-b'));
  FakeWebSocket.servers.set('ws://na.test/rtc', joiningServer());
  FakeWebSocket.servers.set('ws://nb.test/rtc', joiningServer());
  const { client, of } = recordingClient();
  await client.connect(['ws://lb1.test/rtc', 'ws://lb2.test/rtc'], fakeToken());
  assert.equal(client.node, 'node-a');

  // node-a dies, and so does lb1: the room moves to node-b.
  FakeWebSocket.servers.delete('ws://na.test/rtc');
  FakeWebSocket.servers.delete('ws://lb1.test/rtc');
  const before = FakeWebSocket.sockets.length;
  FakeWebSocket.sockets[before - 1].serverClose(1006);
  await until(() => of('reconnected').length === 1, 5000, 'reconnected');

  assert.deepEqual(
    urlsOpened().slice(before),
    ['ws://na.test/rtc', 'ws://lb1.test/rtc', 'ws://lb2.test/rtc', 'ws://nb.test/rtc'],
    'attempt 1: the last node; 2: the first given URL; 3: the second, which redirects',
  );
  assert.deepEqual(
    of('reconnecting').map((r) => r.attempt),
    [1, 2, 3],
  );
  assert.equal(client.url, 'ws://nb.test/rtc');
  assert.equal(client.node, 'node-b');
  assert.deepEqual(of('error'), []);
  assert.deepEqual(
    of('joined').map((j) => j.reconnected),
    [false, true],
  );
  await client.leave(500);
});

test('reconnect: `cluster_unavailable` (close 1013) is tried again after the backoff', async () => {
  let refusals = 1;
  FakeWebSocket.servers.set('ws://a.test/rtc', {
    onJoin(ws, join) {
      if (FakeWebSocket.sockets.length > 1 && refusals > 0) {
        refusals--;
        ws.serverSend({ type: 'error', code: 'cluster_unavailable', message: 'no cluster', req_type: 'join' });
        ws.serverClose(1013, 'cluster_unavailable');
        return;
      }
      joiningServer().onJoin(ws, join);
    },
  });
  const { client, of } = recordingClient();
  await client.connect('ws://a.test/rtc', fakeToken());
  FakeWebSocket.sockets[0].serverClose(1006);
  const started = Date.now();
  await until(() => of('reconnected').length === 1, 5000, 'reconnected');
  const reconnecting = of('reconnecting');
  assert.deepEqual(
    reconnecting.map((r) => [r.attempt, r.code]),
    [
      [1, 1006],
      [2, 1013],
    ],
  );
  assert.ok(Date.now() - started >= 150, 'the second attempt waited for the backoff (≥ 187 ms)');
  assert.equal(client.state, 'joined');
  await client.leave(500);
});

test('a redirect on a joined session is ignored (the protocol sends it only in answer to a join)', async () => {
  FakeWebSocket.servers.set('ws://a.test/rtc', joiningServer());
  const { client, of } = recordingClient();
  await client.connect('ws://a.test/rtc', fakeToken());
  FakeWebSocket.sockets[0].serverSend({ type: 'redirect', url: 'ws://b.test/rtc', node: 'node-b', room: 'demo' });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(client.state, 'joined');
  assert.equal(FakeWebSocket.sockets.length, 1);
  assert.deepEqual(of('redirected'), []);
  await client.leave(500);
});
