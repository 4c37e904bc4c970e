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
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB_DEMO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ARTIFACTS = path.join(WEB_DEMO, 'test-artifacts');
const COURIER_BIN = path.resolve(WEB_DEMO, process.env.COURIER_BIN || '../target/debug/courier');
const MEDIA_TESTS_BIN = path.resolve(WEB_DEMO, process.env.MEDIA_TESTS_BIN || '../target/debug/media-tests');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

const API_KEY = 'testkey';
const API_SECRET = 'testsecret';

const SERVER_READY_TIMEOUT_MS = 20_000;
const BROWSER_JOIN_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 20_000;
const NATIVE_DURATION_S = 20;
const NATIVE_EXIT_GRACE_MS = 25_000; // after its --duration, for it to leave and print the report

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];

// ------------------------------------------------------------------ helpers

/** @param {string} s */
const b64url = (s) => Buffer.from(s).toString('base64url');

/**
 * An HS256 access token as protocol.md describes it.
 * @param {{identity: string, name: string, room: string, ttlS?: number}} o
 */
function mintToken({ identity, name, room, ttlS = 600 }) {
  const header = { alg: 'HS256', typ: 'JWT', kid: API_KEY };
  const claims = {
    iss: API_KEY,
    sub: identity,
    name,
    exp: Math.floor(Date.now() / 1000) + ttlS,
    video: { room, room_join: true, can_publish: true, can_subscribe: true },
  };
  const body = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = crypto.createHmac('sha256', API_SECRET).update(body).digest('base64url');
  return `${body}.${sig}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Race a promise against a deadline.
 * @template T
 * @param {Promise<T>} p
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
function withTimeout(p, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Every child we start, so that even an abrupt exit kills them. */
const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/**
 * Spawn a process; its stdout and stderr go to test-artifacts/<name>.log, and its stdout lines are kept.
 * @param {string} name
 * @param {string} bin
 * @param {string[]} args
 */
function startProcess(name, bin, args, cwd = undefined) {
  const logStream = fs.createWriteStream(path.join(ARTIFACTS, `${name}.log`));
  const log = { write: (/** @type {string} */ s) => logStream.writableEnded || logStream.write(s) };
  log.write(`$ ${bin} ${args.join(' ')}\n`);
  const child = spawn(bin, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_BACKTRACE: '1', ...process.env } });
  children.add(child);
  /** @type {string[]} */
  const lines = [];
  /** @type {Set<(line: string) => void>} */
  const lineWatchers = new Set();
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    log.write(`[out] ${line}\n`);
    for (const w of lineWatchers) w(line);
  });
  readline.createInterface({ input: child.stderr }).on('line', (line) => log.write(`[err] ${line}\n`));
  /** @type {Promise<{code: number|null, signal: string|null}>} */
  const exited = new Promise((resolve) => {
    child.on('error', (err) => {
      log.write(`[spawn error] ${err.message}\n`);
      resolve({ code: null, signal: `spawn error: ${err.message}` });
    });
    child.on('exit', (code, signal) => {
      log.write(`[exit] code=${code} signal=${signal}\n`);
      resolve({ code, signal });
    });
  });
  exited.then(() => children.delete(child));
  child.on('close', () => logStream.end()); // stdout and stderr drained
  child.on('error', () => logStream.end());

  return {
    name,
    child,
    lines,
    exited,
    /**
     * Resolve with the first stdout line (already seen or future) matching `re`; reject on exit or timeout.
     * @param {RegExp} re
     * @param {number} ms
     * @returns {Promise<RegExpMatchArray>}
     */
    waitForLine(re, ms) {
      for (const l of lines) {
        const m = l.match(re);
        if (m) return Promise.resolve(m);
      }
      let watcher = (/** @type {string} */ _l) => {};
      const found = new Promise((resolve, reject) => {
        watcher = (l) => {
          const m = l.match(re);
          if (m) resolve(m);
        };
        lineWatchers.add(watcher);
        exited.then(({ code, signal }) =>
          reject(new Error(`${name} exited (code ${code}, signal ${signal}) before printing ${re}; see test-artifacts/${name}.log`)),
        );
      });
      return withTimeout(found, ms, `${name} to print ${re}`).finally(() => lineWatchers.delete(watcher));
    },
    /** SIGTERM, then SIGKILL after 5 s. Bounded. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      child.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)]);
      if (!done) {
        child.kill('SIGKILL');
        await Promise.race([exited, sleep(2_000)]);
      }
    },
  };
}

/**
 * @param {string} file
 * @param {string} what
 */
function requireExecutable(file, what) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    assert.fail(`${what} not found or not executable at ${file} (build it with \`cargo build\`, or set the env var)`);
  }
}

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
