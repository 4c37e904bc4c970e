// A network blip in real Chromium: alice's page reaches the server's signaling through a relay that the test cuts
// (her side dropped, the server's side left open and silent, as when a path breaks without a word, so the server
// still holds her old session) and refuses connections for a while. The page must show the reconnect banner, keep
// a message typed meanwhile in its outbox, come back by itself under the same identity (the old session replaced,
// no ghost tile on bob's page), publish its camera and microphone again, receive bob's again, and the chat must
// hold every message once, in order. And a server restart (a graceful stop, then the server back on the same address
// with the same data): both pages come back by themselves, media flows again and the chat history is whole.
// Screenshots: test-artifacts/reconnect-*.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import {
  ARTIFACTS,
  chatTexts,
  launchChromium,
  openDemoPage,
  say,
  startCourier,
  waitChatLines,
  waitForMediaFrom,
  waitUntil,
} from './harness.mjs';

const T = 30_000;

/**
 * A TCP relay on 127.0.0.1 to `target` (host:port) that can be cut: `cut()` drops the client side of every
 * connection, leaves the server side open but silent, and refuses new connections until `restore()`.
 * @param {string} target
 */
async function startRelay(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  /** @type {Set<{client: net.Socket, upstream: net.Socket, cut: boolean}>} */
  const pairs = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, host);
    const pair = { client, upstream, cut: false };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      if (pair.cut) return;
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const addr = /** @type {net.AddressInfo} */ (server.address());
  return {
    port: addr.port,
    cut() {
      refusing = true;
      for (const p of pairs) {
        p.cut = true;
        p.client.unpipe(p.upstream);
        p.upstream.unpipe(p.client);
        p.client.destroy();
      }
    },
    restore() {
      refusing = false;
    },
    close() {
      for (const p of pairs) {
        p.client.destroy();
        p.upstream.destroy();
      }
      server.close();
    },
  };
}

test('after a network blip the page reconnects by itself: media both ways again, chat whole', { timeout: 180_000 }, async () => {
  const courier = await startCourier('courier-reconnect');
  const relay = await startRelay(new URL(courier.http).host);
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  /** @type {import('playwright-core').Page|null} */ let alice = null;
  try {
    const { http, url } = courier;
    const room = 'blip';
    browser = await launchChromium();
    alice = await openDemoPage(browser, { http, url: `ws://127.0.0.1:${relay.port}/rtc`, room, identity: 'alice' });
    const bob = await openDemoPage(browser, { http, url, room, identity: 'bob' });
    await waitForMediaFrom(alice, ['bob'], 'alice before the blip', T);
    await waitForMediaFrom(bob, ['alice'], 'bob before the blip', T);
    await say(alice, 'before the blip');
    await waitChatLines(bob, (ls) => chatTexts(ls).includes('before the blip'), 'bob has the first message', T);
    const oldId = await alice.evaluate(() => /** @type {any} */ (window).courier.participantId);

    // The blip: alice's signaling path breaks; the server is not told.
    relay.cut();
    await alice.waitForFunction(() => /** @type {any} */ (window).courierApp.state === 'reconnecting', null, { timeout: T });
    assert.ok(await alice.isVisible('#banner'), 'the reconnect banner shows');
    assert.match((await alice.textContent('#banner-text')) ?? '', /Reconnecting/);
    await say(alice, 'during the blip');
    await waitChatLines(alice, (ls) => ls.some((l) => l.text === 'during the blip' && l.tick === 'sending'), 'waiting in the outbox', T);
    await alice.screenshot({ path: path.join(ARTIFACTS, 'reconnect-banner.png') });
    // Keep the path broken until the page has been refused a few times.
    await alice.waitForFunction(() => /** @type {any} */ (window).courier.reconnectAttempt >= 3, null, { timeout: T });
    relay.restore();

    await alice.waitForFunction(
      () => /** @type {any} */ (window).courierApp.state === 'joined' && /** @type {any} */ (window).courierApp.reconnects === 1,
      null,
      { timeout: T },
    );
    assert.ok(!(await alice.isVisible('#banner')), 'the banner is gone');
    const newId = await alice.evaluate(() => /** @type {any} */ (window).courier.participantId);
    assert.notEqual(newId, oldId, 'a new session');

    // Bob sees one alice: the old session was replaced, not left behind as a ghost.
    await waitUntil(
      async () =>
        bob.evaluate(
          (id) => {
            const c = /** @type {any} */ (window).courier;
            const ps = [...c.participants.values()];
            return ps.length === 1 && ps[0].id === id && document.querySelectorAll('#tiles .tile').length === 2;
          },
          newId,
        ),
      T,
      'bob sees the new alice only',
    );

    // Media both ways again, and alice's camera and microphone published once each.
    await waitForMediaFrom(alice, ['bob'], 'alice after the blip', T);
    await waitForMediaFrom(bob, ['alice'], 'bob after the blip', T);
    const locals = await alice.evaluate(() =>
      /** @type {any} */ (window).courier.localTracks.map((/** @type {any} */ l) => ({ kind: l.kind, published: !!l.trackId })),
    );
    assert.deepEqual(locals.map((l) => l.kind).sort(), ['audio', 'video'], 'the same two tracks');
    assert.ok(locals.every((l) => l.published), `published again: ${JSON.stringify(locals)}`);

    // The chat: every message once, in order, on both pages.
    await say(bob, 'after the blip');
    const expected = ['before the blip', 'during the blip', 'after the blip'];
    for (const page of [alice, bob]) {
      await waitChatLines(page, (ls) => chatTexts(ls).join('|') === expected.join('|'), 'the whole conversation once', T);
    }
    await waitChatLines(alice, (ls) => ls[1].tick !== 'sending', 'the outbox message acknowledged', T);
    await alice.screenshot({ path: path.join(ARTIFACTS, 'reconnect-after.png') });
  } catch (err) {
    await alice?.screenshot({ path: path.join(ARTIFACTS, 'reconnect-failure.png') }).catch(() => {});
    throw err;
  } finally {
    await browser?.close().catch(() => {});
    relay.close();
    await courier.stop();
  }
});

test('after a server restart both pages come back by themselves with media and the whole chat', { timeout: 180_000 }, async () => {
  const courier = await startCourier('courier-restart');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  /** @type {import('playwright-core').Page|null} */ let alice = null;
  try {
    const { http, url } = courier;
    const room = 'restart';
    browser = await launchChromium();
    const params = { capture: '640x360' };
    alice = await openDemoPage(browser, { http, url, room, identity: 'alice', params });
    const bob = await openDemoPage(browser, { http, url, room, identity: 'bob', params });
    await waitForMediaFrom(alice, ['bob'], 'alice before the restart', T);
    await say(bob, 'before the restart');
    await waitChatLines(alice, (ls) => chatTexts(ls).includes('before the restart'), 'alice has it', T);

    await courier.restart(1_500);
    for (const page of [alice, bob]) {
      await page.waitForFunction(
        () => /** @type {any} */ (window).courierApp.state === 'joined' && /** @type {any} */ (window).courierApp.reconnects === 1,
        null,
        { timeout: T },
      );
    }
    await waitForMediaFrom(alice, ['bob'], 'alice after the restart', T);
    await waitForMediaFrom(bob, ['alice'], 'bob after the restart', T);
    await say(alice, 'after the restart');
    const expected = ['before the restart', 'after the restart'];
    for (const page of [alice, bob]) {
      await waitChatLines(page, (ls) => chatTexts(ls).join('|') === expected.join('|'), 'the whole conversation once', T);
    }
  } catch (err) {
    await alice?.screenshot({ path: path.join(ARTIFACTS, 'reconnect-restart-failure.png') }).catch(() => {});
    throw err;
  } finally {
    await browser?.close().catch(() => {});
    await courier.stop();
  }
});
