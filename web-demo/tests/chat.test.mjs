// Chat in real Chromium, through the demo page's own UI: three pages in one room; messages typed on one appear on
// the others in order, exactly once; the sender sees ✓✓ once the others have read them; a mention is marked, a
// recall shows on every page, typing is shown; a page reloaded in the middle of the conversation (while messages
// keep coming, and with a message of its own just sent) resumes with nothing missing and nothing twice.
// Screenshots go to test-artifacts/chat-*.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  ARTIFACTS,
  chatLines as lines,
  chatTexts as texts,
  launchChromium,
  openDemoPage,
  say,
  sleep,
  startCourier,
  waitChatLines,
  waitUntil,
} from './harness.mjs';

const T = 20_000;

const waitLines = (/** @type {any} */ page, /** @type {any} */ check, /** @type {string} */ what) =>
  waitChatLines(page, check, what, T);

test('chat between pages: order, receipts, mentions, recall, typing, and resume after a reload', { timeout: 150_000 }, async () => {
  const courier = await startCourier('courier-chat');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  /** @type {import('playwright-core').Page|null} */ let alice = null;
  try {
    const { http, url } = courier;
    const room = 'chat';
    browser = await launchChromium();
    const open = (/** @type {string} */ identity) =>
      openDemoPage(/** @type {any} */ (browser), { http, url, room, identity, params: { publish: 'none' } });
    alice = await open('alice');
    const bob = await open('bob');
    const carol = await open('carol');

    // Typing shows on the others.
    await alice.fill('#chat-input', 'h');
    await alice.dispatchEvent('#chat-input', 'input');
    await waitUntil(async () => (await bob.textContent('#chat-typing'))?.includes('alice is typing'), T, 'typing on bob');

    // Five messages from alice, one mentioning bob: everyone has them once, in order.
    const first = ['m1', 'm2 @bob look', 'm3', 'm4', 'm5'];
    for (const t of first) await say(alice, t);
    for (const page of [alice, bob, carol]) {
      await waitLines(page, (ls) => texts(ls).join('|') === first.join('|'), 'in order on a page');
    }
    const onBob = await lines(bob);
    assert.deepEqual(onBob.map((l) => l.seq), [1, 2, 3, 4, 5], 'numbered 1..5 without holes');
    assert.deepEqual(onBob.map((l) => l.mentioned), [false, true, false, false, false], 'the mention is marked for bob');
    assert.equal((await lines(carol))[1].mentioned, false, 'not for carol');

    // ✓✓ on alice's page once bob and carol (visible pages) have read them.
    await waitLines(alice, (ls) => ls.every((l) => l.tick === 'read'), 'read ticks on alice');

    // Recall m3 (alice's own): every page shows it recalled, in place.
    await alice.evaluate(() => /** @type {any} */ (window).courier.chat.recall(3));
    for (const page of [alice, bob, carol]) {
      await waitLines(page, (ls) => ls[2]?.text === 'message recalled', 'recall on a page');
    }

    // Bob sends a message and reloads at once, while alice keeps sending: after the reload bob holds the whole
    // conversation once, in order; bob's message was stored once (an unacknowledged one is resent from the
    // outbox with its id).
    await say(bob, 'bob before reload');
    const sending = (async () => {
      for (let i = 6; i <= 15; i++) {
        await alice.evaluate((t) => /** @type {any} */ (window).courier.chat.send(t), `m${i}`);
        await sleep(150);
      }
    })();
    await bob.reload({ timeout: 15_000 });
    await bob.waitForFunction(() => /** @type {any} */ (window).courierApp?.state === 'joined', null, { timeout: T });
    await sending;
    const expected = (/** @type {string[]} */ ls) =>
      ls.includes('m15') && ls.filter((t) => t === 'bob before reload').length === 1;
    for (const page of [alice, bob, carol]) {
      await waitLines(page, (ls) => expected(texts(ls)), 'the whole conversation');
    }
    const after = await lines(bob);
    assert.deepEqual(after.map((l) => l.seq), (await lines(alice)).map((l) => l.seq), 'the same numbered lines as alice');
    assert.deepEqual(texts(after), texts(await lines(alice)), 'bob and alice see the same conversation');
    // Underneath, bob's client holds every number once with no hole (the recall is a number too, not a line).
    const held = await bob.evaluate(() => {
      const c = /** @type {any} */ (window).courier.chat.state.conversation('room:chat');
      return { seqs: c.messages.map((/** @type {any} */ m) => m.seq), last: c.lastSeq };
    });
    assert.deepEqual(held.seqs, [...held.seqs.keys()].map((i) => i + 1), `bob holds 1..n: ${JSON.stringify(held)}`);
    assert.equal(held.last, held.seqs.length, 'and knows it has nothing missing');
    const alices = texts(after).filter((t) => /^m\d+/.test(t));
    assert.deepEqual(alices, first.filter((t) => t !== 'm3').concat([6, 7, 8, 9, 10, 11, 12, 13, 14, 15].map((i) => `m${i}`)),
      'all of alice\'s messages after the reload, in her order');

    await alice.screenshot({ path: path.join(ARTIFACTS, 'chat-alice.png') });
    await bob.screenshot({ path: path.join(ARTIFACTS, 'chat-bob-after-reload.png') });
  } catch (err) {
    await alice?.screenshot({ path: path.join(ARTIFACTS, 'chat-failure.png') }).catch(() => {});
    throw err;
  } finally {
    await browser?.close().catch(() => {});
    await courier.stop();
  }
});
