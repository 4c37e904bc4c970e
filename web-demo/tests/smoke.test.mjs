// End-to-end smoke test: the Courier server, the native test client (media-tests) and headless Chromium running
// the demo page, all in one room. The browser must decode the native client's video and receive its audio; the
// native client must receive the browser's video and decode its audio.
//
//   npm test                       (from web-demo/, after `cargo build` and scripts/install-browser-deps.sh)
//
// Environment:
//   COURIER_BIN      server binary      (default ../target/debug/courier, relative to web-demo/)
//   MEDIA_TESTS_BIN  native client      (default ../target/debug/media-tests)
//   CHROMIUM_BIN     browser            (default /usr/bin/chromium)
//
// Logs of every process and the browser console go to web-demo/test-artifacts/, with the screenshot smoke.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  WEB_DEMO,
  ARTIFACTS,
  COURIER_BIN,
  MEDIA_TESTS_BIN,
  CHROMIUM_BIN,
  API_KEY,
  API_SECRET,
  SERVER_READY_TIMEOUT_MS,
  BROWSER_JOIN_TIMEOUT_MS,
  MEDIA_TIMEOUT_MS,
  NATIVE_DURATION_S,
  NATIVE_EXIT_GRACE_MS,
  CHROMIUM_ARGS,
  b64url,
  mintToken,
  sleep,
  withTimeout,
  children,
  startProcess,
  requireExecutable,
} from './harness.mjs';

// ------------------------------------------------------------------ the test

test('browser and native client exchange audio and video through courier', { timeout: 180_000 }, async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const stale of ['smoke.png', 'smoke-failure.png', 'native-report.json', 'browser-inbound-stats.json']) {
    fs.rmSync(path.join(ARTIFACTS, stale), { force: true });
  }
  requireExecutable(COURIER_BIN, 'COURIER_BIN');
  requireExecutable(MEDIA_TESTS_BIN, 'MEDIA_TESTS_BIN');
  requireExecutable(CHROMIUM_BIN, 'Chromium (run scripts/install-browser-deps.sh)');

  /** @type {ReturnType<typeof startProcess>|null} */ let server = null;
  /** @type {ReturnType<typeof startProcess>|null} */ let native = null;
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  /** @type {import('playwright-core').Page|null} */ let page = null;
  const consoleStream = fs.createWriteStream(path.join(ARTIFACTS, 'browser-console.log'));
  const consoleLog = { write: (/** @type {string} */ s) => consoleStream.writableEnded || consoleStream.write(s) };
  let ok = false;
  /** @type {string|null} */ let scratch = null;

  try {
    // 1. The server, in a scratch directory (its --dev data dir defaults to ./courier-data), serving this web-demo.
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'courier-smoke-'));
    server = startProcess(
      'courier',
      COURIER_BIN,
      [
        'serve',
        '--dev',
        '--http-addr',
        '127.0.0.1:0',
        '--udp-addr',
        '127.0.0.1:0',
        '--keys',
        `${API_KEY}:${API_SECRET}`,
        '--web-root',
        WEB_DEMO,
        '--data-dir',
        path.join(scratch, 'courier-data'),
      ],
      scratch,
    );
    const ready = await server.waitForLine(/COURIER_READY http=(\S+) udp=(\S+)/, SERVER_READY_TIMEOUT_MS);
    const httpAddr = ready[1];
    const httpBase = `http://${httpAddr}`;
    const wsUrl = `ws://${httpAddr}/rtc`;

    const room = `smoke-${crypto.randomBytes(4).toString('hex')}`;
    const browserToken = mintToken({ identity: 'browser', name: 'Browser', room });
    const nativeToken = mintToken({ identity: 'native', name: 'Native', room });

    // 2. The browser joins first, so that the native client's whole --duration overlaps with it.
    browser = await withTimeout(
      chromium.launch({ executablePath: CHROMIUM_BIN, headless: true, args: CHROMIUM_ARGS }),
      30_000,
      'chromium to launch',
    );
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.grantPermissions(['camera', 'microphone'], { origin: httpBase }).catch(() => {});
    page = await context.newPage();
    page.on('console', (m) => consoleLog.write(`[${m.type()}] ${m.text()}\n`));
    page.on('pageerror', (e) => consoleLog.write(`[pageerror] ${e.stack ?? e.message}\n`));
    const pageUrl =
      `${httpBase}/?` +
      new URLSearchParams({ room, identity: 'browser', name: 'Browser', token: browserToken, url: wsUrl, autojoin: '1' });
    await page.goto(pageUrl, { timeout: 15_000 });
    await page.waitForFunction(
      () => ['joined', 'error', 'closed'].includes(/** @type {any} */ (window).courierApp?.state),
      null,
      { timeout: BROWSER_JOIN_TIMEOUT_MS, polling: 100 },
    );
    const joinState = await page.evaluate(() => /** @type {any} */ (window).courierApp);
    assert.equal(joinState.state, 'joined', `browser did not join: ${joinState.error}`);

    // The browser's own tracks confirmed by the server.
    await page.waitForFunction(
      () => {
        const c = /** @type {any} */ (window).courier;
        return c && c.localTracks.length === 2 && c.localTracks.every((/** @type {any} */ l) => l.trackId);
      },
      null,
      { timeout: 10_000, polling: 100 },
    );

    // 3. The native client.
    native = startProcess('media-tests', MEDIA_TESTS_BIN, [
      'client',
      '--url',
      wsUrl,
      '--token',
      nativeToken,
      '--publish',
      'audio,video',
      '--duration',
      `${NATIVE_DURATION_S}s`,
      '--report',
      'json',
    ]);
    const nativeStarted = Date.now();

    // 4. The browser decodes the native client's video (framesDecoded rising) and receives its audio.
    const deadline = Date.now() + MEDIA_TIMEOUT_MS;
    let firstFrames = -1;
    let stats = null;
    let nativeId = null;
    let mediaOk = false;
    while (Date.now() < deadline) {
      const snap = await page.evaluate(() => /** @type {any} */ (window).courier?.snapshot());
      nativeId = snap?.participants.find((/** @type {any} */ p) => p.identity === 'native')?.id ?? null;
      stats = await page.evaluate(() => /** @type {any} */ (window).courier?.inboundStats());
      if (nativeId && stats) {
        const video = stats.video.filter((/** @type {any} */ s) => s.participantId === nativeId);
        const audio = stats.audio.filter((/** @type {any} */ s) => s.participantId === nativeId);
        const frames = video.reduce((n, /** @type {any} */ s) => n + s.framesDecoded, 0);
        const audioPackets = audio.reduce((n, /** @type {any} */ s) => n + s.packetsReceived, 0);
        if (frames > 0 && firstFrames < 0) firstFrames = frames;
        if (firstFrames > 0 && frames > firstFrames && audioPackets > 0) {
          mediaOk = true;
          break;
        }
      }
      if (native.child.exitCode !== null) break;
      await sleep(500);
    }
    fs.writeFileSync(path.join(ARTIFACTS, 'browser-inbound-stats.json'), JSON.stringify({ nativeId, stats }, null, 2));
    assert.ok(nativeId, 'the browser never saw the native participant join');
    assert.ok(
      mediaOk,
      `browser did not decode the native client's video and receive its audio within ${MEDIA_TIMEOUT_MS} ms: ` +
        JSON.stringify(stats),
    );

    // The remote tile shows the video.
    await page.waitForFunction(
      (id) => {
        const v = /** @type {HTMLVideoElement|null} */ (
          document.querySelector(`.tile.remote[data-participant-id="${id}"] video`)
        );
        return !!v && v.videoWidth > 0 && v.readyState >= 2;
      },
      nativeId,
      { timeout: 10_000, polling: 200 },
    );
    await sleep(1_000); // let a few more frames paint
    await page.screenshot({ path: path.join(ARTIFACTS, 'smoke.png') });

    // 5. The native client's report: it received the browser's video and decoded its audio.
    const remaining = NATIVE_DURATION_S * 1000 - (Date.now() - nativeStarted) + NATIVE_EXIT_GRACE_MS;
    const exit = await withTimeout(native.exited, Math.max(remaining, 5_000), 'media-tests client to finish');
    const lastLine = [...native.lines].reverse().find((l) => l.trim().length > 0);
    assert.ok(lastLine, `media-tests printed nothing (exit ${JSON.stringify(exit)}); see test-artifacts/media-tests.log`);
    /** @type {any} */
    let report;
    try {
      report = JSON.parse(lastLine);
    } catch {
      assert.fail(`media-tests' last stdout line is not JSON: ${lastLine}`);
    }
    fs.writeFileSync(path.join(ARTIFACTS, 'native-report.json'), JSON.stringify(report, null, 2));
    const tracks = Array.isArray(report.tracks) ? report.tracks : [];
    const videoIn = tracks.filter((/** @type {any} */ t) => t.kind === 'video');
    const audioIn = tracks.filter((/** @type {any} */ t) => t.kind === 'audio');
    assert.ok(
      videoIn.some((/** @type {any} */ t) => t.frames_received > 0),
      `native client received no video frames from the browser: ${JSON.stringify(videoIn)}`,
    );
    assert.ok(
      audioIn.some((/** @type {any} */ t) => t.packets_decoded > 0),
      `native client decoded no audio from the browser: ${JSON.stringify(audioIn)}`,
    );
    ok = true;
  } finally {
    if (!ok && page) {
      await withTimeout(page.screenshot({ path: path.join(ARTIFACTS, 'smoke-failure.png') }), 5_000, 'screenshot').catch(
        () => {},
      );
    }
    // (playwright-core also kills the browsers it launched when this process exits)
    if (browser) await withTimeout(browser.close(), 10_000, 'browser.close()').catch(() => {});
    consoleStream.end();
    if (native) await native.stop();
    if (server) await server.stop();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
    if (!ok) {
      for (const p of [server, native]) {
        if (!p) continue;
        const tail = fs.readFileSync(path.join(ARTIFACTS, `${p.name}.log`), 'utf8').split('\n').slice(-30).join('\n');
        console.error(`--- last lines of test-artifacts/${p.name}.log ---\n${tail}`);
      }
    }
  }
});
