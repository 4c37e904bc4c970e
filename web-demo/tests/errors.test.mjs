// The page's error states in real Chromium: the server not reachable, a token refused, and the camera and
// microphone refused (the refusal is made by replacing getUserMedia in the page with one that fails as a browser's
// permission prompt does; headless Chromium has no prompt to click). Each says in words what happened and what to
// do; with media refused the page still joins, to watch and chat. Screenshots: test-artifacts/errors-*.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { ARTIFACTS, launchChromium, mintToken, startCourier } from './harness.mjs';

const T = 20_000;

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
async function closedPort() {
  const s = net.createServer();
  await new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(undefined)));
  const port = /** @type {net.AddressInfo} */ (s.address()).port;
  await new Promise((resolve) => s.close(() => resolve(undefined)));
  return port;
}

test('error states: server down, token refused, camera refused', { timeout: 120_000 }, async () => {
  const courier = await startCourier('courier-errors');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  try {
    const { http, url } = courier;
    browser = await launchChromium();
    const page = async (/** @type {Record<string, string>} */ params, /** @type {string|null} */ initScript = null) => {
      const p = await (await /** @type {any} */ (browser).newContext({ viewport: { width: 1280, height: 800 } })).newPage();
      if (initScript) await p.addInitScript(initScript);
      await p.goto(`${http}/?` + new URLSearchParams({ autojoin: '1', ...params }), { timeout: 15_000 });
      await p.waitForFunction(() => ['error', 'joined'].includes(/** @type {any} */ (window).courierApp?.state), null, { timeout: T });
      return p;
    };

    // The server is not there.
    const down = await page({ url: `ws://127.0.0.1:${await closedPort()}/rtc`, token: mintToken({ identity: 'a', name: 'a', room: 'r' }) });
    assert.equal(await down.evaluate(() => /** @type {any} */ (window).courierApp.state), 'error');
    assert.match((await down.textContent('#form-error')) ?? '', /Cannot reach the server at ws:\/\/127\.0\.0\.1:\d+\/rtc/);
    assert.ok(await down.isVisible('#join-panel'), 'the join form stays, to try again');
    await down.screenshot({ path: path.join(ARTIFACTS, 'errors-server-down.png') });

    // A token that expired an hour ago.
    const expired = await page({ url, token: mintToken({ identity: 'b', name: 'b', room: 'r', ttlS: -3600 }) });
    assert.equal(await expired.evaluate(() => /** @type {any} */ (window).courierApp.state), 'error');
    assert.match((await expired.textContent('#form-error')) ?? '', /Permission denied: token expired/);
    await expired.screenshot({ path: path.join(ARTIFACTS, 'errors-token.png') });

    // Camera and microphone refused: joined all the same, told why nobody sees them.
    const refuse = `navigator.mediaDevices.getUserMedia = () =>
      Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));`;
    const noCam = await page({ url, token: mintToken({ identity: 'c', name: 'c', room: 'r' }) }, refuse);
    assert.equal(await noCam.evaluate(() => /** @type {any} */ (window).courierApp.state), 'joined');
    await noCam.waitForSelector('#banner:not([hidden])', { timeout: T });
    assert.match((await noCam.textContent('#banner-text')) ?? '', /Camera and microphone are blocked/);
    assert.equal(await noCam.evaluate(() => /** @type {any} */ (window).courier.localTracks.length), 0, 'nothing published');
    await noCam.screenshot({ path: path.join(ARTIFACTS, 'errors-camera-refused.png') });
  } finally {
    await browser?.close().catch(() => {});
    await courier.stop();
  }
});
