// A room of real Chromium pages, through the demo page's own controls: two pages, then a third, each decode the
// others' video and receive their audio; with two microphones muted the third speaker is highlighted on every page;
// every tile shows its connection quality; a microphone switched to another device keeps reaching the others on the
// same track (no renegotiation); a screen share appears as its own tile on the others and goes away when stopped.
// Screenshots: test-artifacts/room-*.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ARTIFACTS, launchChromium, openDemoPage, receivedFrom, startCourier, waitForMediaFrom, waitUntil } from './harness.mjs';

const T = 30_000;

/** @param {import('playwright-core').Page} page @param {string} selector */
const count = (page, selector) => page.evaluate((s) => document.querySelectorAll(s).length, selector);

/** The tile of `identity` on `page`, by the participant id the page knows it under. */
const tileOf = (/** @type {import('playwright-core').Page} */ page, /** @type {string} */ identity) =>
  page.evaluate((who) => {
    const c = /** @type {any} */ (window).courier;
    const p = [...c.participants.values()].find((x) => x.identity === who);
    const el = p && document.querySelector(`#tiles .tile[data-participant-id="${p.id}"]`);
    return el ? { classes: [...el.classList], quality: el.getAttribute('data-quality') } : null;
  }, identity);

test('three pages in a room: video and audio each way, quality, device switch, active speaker, screen share', { timeout: 240_000 }, async () => {
  const courier = await startCourier('courier-room');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  /** @type {import('playwright-core').Page[]} */ const pages = [];
  try {
    const { http, url } = courier;
    const room = 'room3';
    browser = await launchChromium();
    // 640×360 capture: three encoders and six decoders on a 2-core machine.
    const open = async (/** @type {string} */ identity) => {
      const page = await openDemoPage(/** @type {any} */ (browser), { http, url, room, identity, params: { capture: '640x360' } });
      pages.push(page);
      return page;
    };
    const alice = await open('alice');
    const bob = await open('bob');
    await waitForMediaFrom(alice, ['bob'], 'two pages: alice', T);
    await waitForMediaFrom(bob, ['alice'], 'two pages: bob', T);
    const carol = await open('carol');
    await waitForMediaFrom(alice, ['bob', 'carol'], 'three pages: alice', T);
    await waitForMediaFrom(bob, ['alice', 'carol'], 'three pages: bob', T);
    await waitForMediaFrom(carol, ['alice', 'bob'], 'three pages: carol', T);
    for (const page of pages) assert.equal(await count(page, '#tiles .tile'), 3, 'three tiles on each page');

    // Every tile shows a connection quality, and on loopback it is not lost.
    for (const page of pages) {
      await waitUntil(
        () => page.evaluate(() => [...document.querySelectorAll('#tiles .tile')].every((t) => ['excellent', 'good', 'poor'].includes(t.getAttribute('data-quality') ?? ''))),
        T,
        'a quality on every tile',
      );
    }

    // Alice switches to another microphone from the picker: the same published track, another device, and bob
    // keeps receiving her sound.
    const micOf = () =>
      alice.evaluate(() => {
        const l = /** @type {any} */ (window).courier.localTracks.find((/** @type {any} */ t) => t.source === 'microphone');
        return { trackId: l.trackId, label: l.track.label };
      });
    const before = await micOf();
    const other = await alice.evaluate(() => {
      const s = /** @type {HTMLSelectElement} */ (document.querySelector('#mic-select'));
      return [...s.options].find((o) => !o.selected && o.value !== 'default')?.value ?? '';
    });
    assert.ok(other, 'another microphone to pick');
    const heard = (await receivedFrom(bob)).alice;
    await alice.selectOption('#mic-select', other);
    await waitUntil(async () => (await micOf()).label !== before.label, T, 'alice captures from the other microphone');
    const after = await micOf();
    assert.equal(after.trackId, before.trackId, `the same published track (${before.label} → ${after.label})`);
    await waitUntil(
      async () => {
        const now = (await receivedFrom(bob)).alice;
        return now.audioPackets > heard.audioPackets + 100 && now.audioEnergy > heard.audioEnergy;
      },
      T,
      'bob keeps hearing alice',
    );

    // Alice and bob mute their microphones with the toolbar: carol, the one still talking (the fake microphone
    // beeps), is the active speaker on every page; alice is not.
    await alice.click('#toggle-mic');
    await bob.click('#toggle-mic');
    for (const [page, name] of /** @type {const} */ ([[alice, 'alice'], [bob, 'bob']])) {
      await waitUntil(async () => (await tileOf(page, 'carol'))?.classes.includes('active-speaker'), T, `carol highlighted on ${name}'s page`);
    }
    await waitUntil(
      () => carol.evaluate(() => document.querySelector('#tiles .tile.local')?.classList.contains('active-speaker')),
      T,
      'carol highlighted on her own page',
    );
    const aliceOnBob = await waitUntil(
      async () => {
        const t = await tileOf(bob, 'alice');
        return t && !t.classes.includes('speaking') ? t : null;
      },
      T,
      'alice, muted, not highlighted on bob\'s page',
    );
    assert.ok(aliceOnBob.classes.includes('remote'));
    await bob.screenshot({ path: path.join(ARTIFACTS, 'room-3-pages.png') });

    // Bob shares his screen: a screen tile on alice's and carol's pages, decoding; gone once he stops.
    await bob.click('#share-screen');
    await waitUntil(async () => (await bob.textContent('#share-screen')) === 'Stop sharing', T, 'bob is sharing');
    for (const [page, name] of /** @type {const} */ ([[alice, 'alice'], [carol, 'carol']])) {
      await waitUntil(
        () =>
          page.evaluate(() => {
            const v = /** @type {HTMLVideoElement|null} */ (document.querySelector('#tiles .tile.screen.remote video'));
            return !!v && v.videoWidth > 0 && (v.getVideoPlaybackQuality?.().totalVideoFrames ?? 0) > 10;
          }),
        T,
        `bob's screen plays on ${name}'s page`,
      );
    }
    await alice.screenshot({ path: path.join(ARTIFACTS, 'room-screen-share.png') });
    await bob.click('#share-screen');
    for (const page of [alice, carol]) {
      await waitUntil(async () => (await count(page, '#tiles .tile.screen')) === 0, T, 'the screen tile goes away');
    }
    assert.equal(await count(alice, '#tiles .tile'), 3, 'three tiles again');
  } catch (err) {
    for (const [i, page] of pages.entries()) {
      await page.screenshot({ path: path.join(ARTIFACTS, `room-failure-${i}.png`) }).catch(() => {});
    }
    throw err;
  } finally {
    await browser?.close().catch(() => {});
    await courier.stop();
  }
});
