// Adaptive stream from the page itself: the demo page reports each remote video's size as laid out (and hidden
// when off screen), and the server sends the simulcast layer that fits: a phone-sized window gets the 320×180
// layer; a large one a larger layer; a tile scrolled out of view receives nothing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  ARTIFACTS,
  inboundVideo,
  launchChromium,
  openDemoPage,
  sleep,
  startCourier,
  waitForEncoding,
  waitForWidth,
  waitUntil,
} from './harness.mjs';

const SWITCH_TIMEOUT_MS = 15_000;
const ENCODE_TIMEOUT_MS = 45_000;

test('the page reports its tile sizes and receives the layer that fits', { timeout: 200_000 }, async () => {
  const courier = await startCourier('courier-adaptive');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  try {
    const { http, url } = courier;
    const room = 'adaptive';
    browser = await launchChromium();
    const pub = await openDemoPage(browser, { http, url, room, identity: 'publisher', params: { simulcast: '1', publish: 'video', adaptive: '0' } });
    const sub = await openDemoPage(browser, { http, url, room, identity: 'viewer', params: { publish: 'none' } });
    const reported = () => sub.evaluate(() => [.../** @type {any} */ (window).courierApp.tileSizes.values()]);

    // A phone-sized window: the tile is at most 320 px wide, so the low layer (the server sends the smallest layer
    // that covers the tile).
    await sub.setViewportSize({ width: 360, height: 640 });
    await waitUntil(async () => {
      const r = await reported();
      return r.length === 1 && r[0] !== 'hidden' && Number(r[0].split('x')[0]) <= 320;
    }, SWITCH_TIMEOUT_MS, 'the page reports a small tile');
    await waitForWidth(sub, 320, 'a small tile: the low layer', SWITCH_TIMEOUT_MS);
    await sub.screenshot({ path: path.join(ARTIFACTS, 'adaptive-small.png') });

    // A large window: the tile is wider than 320 px, so at least the middle layer (once Chrome encodes it).
    await sub.setViewportSize({ width: 1920, height: 1080 });
    await waitUntil(async () => {
      const r = await reported();
      return r.length === 1 && r[0] !== 'hidden' && Number(r[0].split('x')[0]) > 360;
    }, SWITCH_TIMEOUT_MS, 'the page reports a large tile');
    await waitForEncoding(pub, 'h', ENCODE_TIMEOUT_MS);
    await waitUntil(async () => ((await inboundVideo(sub))?.width ?? 0) >= 640, SWITCH_TIMEOUT_MS + ENCODE_TIMEOUT_MS,
      'a large tile: a layer at least 640 wide');

    // The tile out of view: reported hidden, and nothing more is decoded.
    await sub.evaluate(() => {
      const tiles = /** @type {HTMLElement} */ (document.getElementById('tiles'));
      tiles.style.marginTop = '5000px';
    });
    await waitUntil(async () => (await reported())[0] === 'hidden', SWITCH_TIMEOUT_MS, 'the page reports the tile hidden');
    await sleep(1500);
    const before = await inboundVideo(sub);
    await sleep(2000);
    const after = await inboundVideo(sub);
    assert.ok(before && after && after.decoded - before.decoded <= 2, `nothing decoded while hidden: ${JSON.stringify({ before, after })}`);
  } finally {
    await browser?.close().catch(() => {});
    await courier.stop();
  }
});
