// Simulcast and adaptive stream in real Chrome: a page publishes its 1280×720 fake camera as three layers (q/h/f);
// a second page receives the full layer, drops to the 320×180 layer when it says its tile is that small, receives
// nothing while the tile is hidden, and gets the full layer back when shown — each switch within a bounded time,
// with no packet lost.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  ARTIFACTS,
  API_KEY,
  API_SECRET,
  BROWSER_JOIN_TIMEOUT_MS,
  CHROMIUM_ARGS,
  CHROMIUM_BIN,
  COURIER_BIN,
  SERVER_READY_TIMEOUT_MS,
  WEB_DEMO,
  mintToken,
  requireExecutable,
  sleep,
  startProcess,
  withTimeout,
} from './harness.mjs';

const SWITCH_TIMEOUT_MS = 15_000;

test('a subscriber gets the simulcast layer its tile needs', { timeout: 150_000 }, async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  requireExecutable(COURIER_BIN, 'COURIER_BIN');
  requireExecutable(CHROMIUM_BIN, 'Chromium (run scripts/install-browser-deps.sh)');
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'courier-simulcast-'));
  const server = startProcess(
    'courier-simulcast',
    COURIER_BIN,
    ['serve', '--http-addr', '127.0.0.1:0', '--udp-addr', '127.0.0.1:0', '--keys', `${API_KEY}:${API_SECRET}`]
      .concat(['--web-root', WEB_DEMO, '--data-dir', path.join(scratch, 'data')]),
    scratch,
  );
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  try {
    const ready = await server.waitForLine(/COURIER_READY http=(\S+) udp=(\S+)/, SERVER_READY_TIMEOUT_MS);
    const http = `http://${ready[1]}`;
    const url = `ws://${ready[1]}/rtc`;
    const room = 'simulcast';
    browser = await withTimeout(
      chromium.launch({ executablePath: CHROMIUM_BIN, headless: true, args: CHROMIUM_ARGS }),
      30_000,
      'chromium to launch',
    );
    /** @param {string} identity @param {Record<string, string>} extra */
    const open = async (identity, extra) => {
      const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
      const token = mintToken({ identity, name: identity, room });
      await page.goto(`${http}/?` + new URLSearchParams({ room, identity, token, url, autojoin: '1', ...extra }));
      await page.waitForFunction(() => /** @type {any} */ (window).courierApp?.state === 'joined', null, {
        timeout: BROWSER_JOIN_TIMEOUT_MS,
        polling: 100,
      });
      return page;
    };
    const pub = await open('publisher', { simulcast: '1', publish: 'video' });
    const sub = await open('subscriber', { publish: 'none' });

    /** The subscriber's inbound video: width and frames decoded, and packets lost. */
    const video = () =>
      sub.evaluate(async () => {
        const s = await /** @type {any} */ (window).courier.inboundStats();
        const v = s.video[0];
        return v ? { width: v.frameWidth, decoded: v.framesDecoded, lost: v.packetsLost, trackId: v.trackId } : null;
      });
    /** Wait (bounded) until the subscriber decodes frames of `width`, rising. */
    const waitForWidth = async (/** @type {number} */ width, /** @type {string} */ what) => {
      const deadline = Date.now() + SWITCH_TIMEOUT_MS;
      let last = null;
      while (Date.now() < deadline) {
        const v = await video();
        if (v && v.width === width && last && last.width === width && v.decoded > last.decoded) return v;
        last = v;
        await sleep(500);
      }
      assert.fail(`${what}: no ${width}-wide frames within ${SWITCH_TIMEOUT_MS} ms (last: ${JSON.stringify(last)})`);
    };
    /** @param {Record<string, unknown>} settings */
    const setSettings = (settings) =>
      sub.evaluate((s) => {
        const c = /** @type {any} */ (window).courier;
        for (const id of c.remoteTracks.keys()) c.setTrackSettings(id, s);
      }, settings);

    // The publisher sends three layers.
    const layers = await pub.evaluate(async () => {
      const out = [];
      (await /** @type {any} */ (window).courier.pc.getStats()).forEach((/** @type {any} */ s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') out.push(s.rid);
      });
      return out.sort();
    });
    assert.deepEqual(layers, ['f', 'h', 'q'], 'three simulcast encodings');

    await waitForWidth(1280, 'no size given: the full layer');
    await setSettings({ width: 320, height: 180 });
    await waitForWidth(320, 'a 320×180 tile: the low layer');
    // It stays there (never the full layer) while the tile is small.
    for (let i = 0; i < 4; i++) {
      await sleep(500);
      assert.equal((await video())?.width, 320, 'still the low layer');
    }
    await setSettings({ hidden: true });
    await sleep(1_000);
    const hiddenAt = await video();
    await sleep(2_000);
    const hiddenLater = await video();
    assert.ok(hiddenLater && hiddenAt && hiddenLater.decoded - hiddenAt.decoded <= 2, 'nothing decoded while hidden');
    await setSettings({});
    const back = await waitForWidth(1280, 'shown again without a size: the full layer');
    assert.equal(back.lost, 0, 'no packet lost across the switches');
    await sub.screenshot({ path: path.join(ARTIFACTS, 'simulcast-subscriber.png') });
  } finally {
    if (browser) await browser.close().catch(() => {});
    await server.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
});
