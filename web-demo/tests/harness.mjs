// Shared by the browser tests: paths, tokens, child processes (logged to test-artifacts/, always killed) and
// Chromium's flags. Every wait is bounded.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

export const WEB_DEMO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ARTIFACTS = path.join(WEB_DEMO, 'test-artifacts');
export const COURIER_BIN = path.resolve(WEB_DEMO, process.env.COURIER_BIN || '../target/debug/courier');
export const MEDIA_TESTS_BIN = path.resolve(WEB_DEMO, process.env.MEDIA_TESTS_BIN || '../target/debug/media-tests');
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const API_KEY = 'testkey';
export const API_SECRET = 'testsecret';

export const SERVER_READY_TIMEOUT_MS = 20_000;
export const BROWSER_JOIN_TIMEOUT_MS = 20_000;
export const MEDIA_TIMEOUT_MS = 20_000;
export const NATIVE_DURATION_S = 20;
export const NATIVE_EXIT_GRACE_MS = 25_000; // after its --duration, for it to leave and print the report

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream', // one camera (a second fake one is a Y16 depth camera); three microphones
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];

// ------------------------------------------------------------------ helpers

/** @param {string} s */
export const b64url = (s) => Buffer.from(s).toString('base64url');

/**
 * An HS256 access token as protocol.md describes it.
 * @param {{identity: string, name: string, room: string, ttlS?: number}} o
 */
export function mintToken({ identity, name, room, ttlS = 600 }) {
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Race a promise against a deadline.
 * @template T
 * @param {Promise<T>} p
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
export function withTimeout(p, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Every child we start, so that even an abrupt exit kills them. */
export const children = new Set();
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
 * @param {string} [cwd]
 * @param {Record<string, string>} [env]  added to this process's environment
 */
export function startProcess(name, bin, args, cwd = undefined, env = {}) {
  const logStream = fs.createWriteStream(path.join(ARTIFACTS, `${name}.log`));
  const log = { write: (/** @type {string} */ s) => logStream.writableEnded || logStream.write(s) };
  log.write(`$ ${bin} ${args.join(' ')}\n`);
  const child = spawn(bin, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_BACKTRACE: '1', ...process.env, ...env } });
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
export function requireExecutable(file, what) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    assert.fail(`${what} not found or not executable at ${file} (build it with \`cargo build\`, or set the env var)`);
  }
}


// ------------------------------------------------------------------ server + browser pages (simulcast, dynacast)

/**
 * `courier serve` on ephemeral ports in a scratch directory, serving this web-demo, with the test API key.
 * Resolves once it prints COURIER_READY.
 * @param {string} name  log file name in test-artifacts/
 * @param {Record<string, string>} [env]  extra environment (e.g. a cluster's COURIER_CLUSTER_*)
 */
export async function startCourier(name, env = {}) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  requireExecutable(COURIER_BIN, 'COURIER_BIN');
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`));
  const launch = (/** @type {string} */ httpAddr, /** @type {string} */ logName) =>
    startProcess(
      logName,
      COURIER_BIN,
      ['serve', '--http-addr', httpAddr, '--udp-addr', '127.0.0.1:0', '--keys', `${API_KEY}:${API_SECRET}`]
        .concat(['--web-root', WEB_DEMO, '--data-dir', path.join(scratch, 'data')]),
      scratch,
      env,
    );
  let server = launch('127.0.0.1:0', name);
  const stop = async () => {
    await server.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
  };
  try {
    const ready = await server.waitForLine(/COURIER_READY http=(\S+) udp=(\S+)/, SERVER_READY_TIMEOUT_MS);
    const httpAddr = ready[1];
    return {
      get server() {
        return server;
      },
      http: `http://${httpAddr}`,
      url: `ws://${httpAddr}/rtc`,
      stop,
      /**
       * Stop the server (SIGTERM: a graceful stop) and start it again on the same HTTP address with the same data
       * directory, after `downMs`. Resolves once it is ready again.
       * @param {number} [downMs=0]
       */
      async restart(downMs = 0) {
        await server.stop();
        await sleep(downMs);
        server = launch(httpAddr, `${name}-restarted`);
        await server.waitForLine(/COURIER_READY/, SERVER_READY_TIMEOUT_MS);
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Headless Chromium with the flags above (bounded). */
export async function launchChromium() {
  requireExecutable(CHROMIUM_BIN, 'Chromium (run scripts/install-browser-deps.sh)');
  const { chromium } = await import('playwright-core');
  return withTimeout(chromium.launch({ executablePath: CHROMIUM_BIN, headless: true, args: CHROMIUM_ARGS }), 30_000, 'chromium to launch');
}

/**
 * Open the demo page in its own context, join `room` as `identity` (autojoin), wait until joined. The page's
 * console goes to test-artifacts/<logName>-<identity>-console.log. `initScript` runs in the page before its own
 * scripts (e.g. to change what the browser negotiates).
 * @param {import('playwright-core').Browser} browser
 * @param {{http: string, url: string, room: string, identity: string, logName?: string, params?: Record<string, string>, initScript?: string}} o
 */
export async function openDemoPage(browser, { http, url, room, identity, logName = room, params = {}, initScript }) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  const consoleStream = fs.createWriteStream(path.join(ARTIFACTS, `${logName}-${identity}-console.log`));
  const write = (/** @type {string} */ s) => consoleStream.writableEnded || consoleStream.write(s);
  page.on('console', (m) => write(`[${m.type()}] ${m.text()}\n`));
  page.on('pageerror', (e) => write(`[pageerror] ${e.stack ?? e.message}\n`));
  page.on('close', () => consoleStream.end());
  const token = mintToken({ identity, name: identity, room });
  await page.goto(`${http}/?` + new URLSearchParams({ room, identity, token, url, autojoin: '1', ...params }), {
    timeout: 15_000,
  });
  await page.waitForFunction(() => /** @type {any} */ (window).courierApp?.state === 'joined', null, {
    timeout: BROWSER_JOIN_TIMEOUT_MS,
    polling: 100,
  });
  return page;
}

/**
 * Poll `fn` until it returns a truthy value (returned) or `ms` pass (fails with `what` and the last value).
 * @template T
 * @param {() => Promise<T>} fn
 * @param {number} ms
 * @param {string|(() => string)} what
 * @param {number} [everyMs=250]
 * @returns {Promise<T>}
 */
export async function waitUntil(fn, ms, what, everyMs = 250) {
  const deadline = Date.now() + ms;
  /** @type {any} */ let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() >= deadline) break;
    await sleep(everyMs);
  }
  assert.fail(`${typeof what === 'function' ? what() : what}: not within ${ms} ms (last: ${JSON.stringify(last)})`);
}

/**
 * The first inbound video stream of a page's client: width, frames decoded, packets lost, track id.
 * @param {import('playwright-core').Page} page
 */
export const inboundVideo = (page) =>
  page.evaluate(async () => {
    const s = await /** @type {any} */ (window).courier.inboundStats();
    const v = s.video[0];
    return v ? { width: v.frameWidth, decoded: v.framesDecoded, lost: v.packetsLost, trackId: v.trackId } : null;
  });

/**
 * Wait until the publishing `page` encodes simulcast layer `rid` (its frames encoded rising). What the server can
 * forward depends on it: Chrome leaves a layer out while its own uplink estimate or the CPU does not allow it
 * (qualityLimitationReason), which on a loaded 2-core machine can take longer than a switch is given.
 * @param {import('playwright-core').Page} page
 * @param {string} rid
 * @param {number} ms
 */
export async function waitForEncoding(page, rid, ms) {
  const encoded = () =>
    page.evaluate(async (r) => {
      let out = null;
      (await /** @type {any} */ (window).courier.pc.getStats()).forEach((/** @type {any} */ s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid === r) {
          out = { frames: s.framesEncoded ?? 0, width: s.frameWidth ?? 0, limitation: s.qualityLimitationReason };
        }
      });
      return out;
    }, rid);
  /** @type {any} */ let last = null;
  return waitUntil(
    async () => {
      const v = await encoded();
      const ok = v && last && v.frames > last.frames;
      last = v;
      return ok ? v : null;
    },
    ms,
    () => `the publisher encoding rid ${rid} (last: ${JSON.stringify(last)})`,
    500,
  );
}

/**
 * Wait (bounded) until `page` decodes frames `width` wide, and more of them than at the previous poll.
 * @param {import('playwright-core').Page} page
 * @param {number} width
 * @param {string} what
 * @param {number} ms
 */
export async function waitForWidth(page, width, what, ms) {
  /** @type {any} */ let last = null;
  return waitUntil(
    async () => {
      const v = await inboundVideo(page);
      const ok = v && v.width === width && last && last.width === width && v.decoded > last.decoded;
      last = v;
      return ok ? v : null;
    },
    ms,
    () => `${what}: ${width}-wide frames (last stats: ${JSON.stringify(last)})`,
    500,
  );
}

/**
 * Tell the server how big every remote track of the page's client is shown (`setTrackSettings`).
 * @param {import('playwright-core').Page} page
 * @param {Record<string, unknown>} settings
 */
export const setTrackSettings = (page, settings) =>
  page.evaluate((s) => {
    const c = /** @type {any} */ (window).courier;
    for (const id of c.remoteTracks.keys()) c.setTrackSettings(id, s);
  }, settings);

// ------------------------------------------------------------------ the chat panel

/** The chat lines of a page: [{seq, sender, text, tick, mentioned}]. @param {import('playwright-core').Page} page */
export const chatLines = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('#chat-list li.msg')].map((li) => ({
      seq: li.getAttribute('data-seq') ? Number(li.getAttribute('data-seq')) : null,
      sender: li.querySelector('.msg-sender')?.textContent ?? '',
      text: li.querySelector('.msg-text')?.textContent ?? '',
      tick: li.querySelector('.tick')?.getAttribute('data-status') ?? null,
      mentioned: li.classList.contains('mentioned'),
    })),
  );

/** Texts of the lines, in order. @param {Awaited<ReturnType<typeof chatLines>>} ls */
export const chatTexts = (ls) => ls.map((l) => l.text);

/** Type `text` into the page's chat box and send it with Enter. @param {import('playwright-core').Page} page @param {string} text */
export async function say(page, text) {
  await page.fill('#chat-input', text);
  await page.press('#chat-input', 'Enter');
}

/**
 * Wait until `check(lines of page)` holds; the failure shows the page's lines.
 * @param {import('playwright-core').Page} page
 * @param {(ls: Awaited<ReturnType<typeof chatLines>>) => boolean} check
 * @param {string} what
 * @param {number} ms
 */
export async function waitChatLines(page, check, what, ms) {
  /** @type {any} */ let last = null;
  await waitUntil(
    async () => check((last = await chatLines(page))),
    ms,
    () => `${what}: ${JSON.stringify(last)}`,
  );
}

// ------------------------------------------------------------------ media on a page

/**
 * Per remote participant (by identity), what a page receives: video frames decoded and audio samples received,
 * summed over its tracks, from getStats.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<Record<string, {frames: number, width: number, audioPackets: number, audioEnergy: number}>>}
 */
export const receivedFrom = (page) =>
  page.evaluate(async () => {
    const c = /** @type {any} */ (window).courier;
    /** @type {Record<string, any>} */ const out = {};
    if (!c?.pc) return out;
    const s = await c.inboundStats();
    const who = (/** @type {string} */ pid) => c.participants.get(pid)?.identity ?? pid;
    for (const v of s.video) {
      const o = (out[who(v.participantId)] ??= { frames: 0, width: 0, audioPackets: 0, audioEnergy: 0 });
      o.frames += v.framesDecoded ?? 0;
      o.width = Math.max(o.width, v.frameWidth ?? 0);
    }
    for (const a of s.audio) {
      const o = (out[who(a.participantId)] ??= { frames: 0, width: 0, audioPackets: 0, audioEnergy: 0 });
      o.audioPackets += a.packetsReceived ?? 0;
      o.audioEnergy += a.totalAudioEnergy ?? 0;
    }
    return out;
  });

/**
 * Wait until `page` decodes video frames from each of `identities` and receives audio from each (frames and audio
 * packets rising between two polls) with sound in it (energy above zero: Chrome's fake microphone beeps).
 * @param {import('playwright-core').Page} page
 * @param {string[]} identities
 * @param {string} what
 * @param {number} ms
 */
export async function waitForMediaFrom(page, identities, what, ms) {
  /** @type {any} */ let last = null;
  /** @type {any} */ let now = null;
  return waitUntil(
    async () => {
      now = await receivedFrom(page);
      const ok =
        last &&
        identities.every((id) => {
          const a = now[id];
          const b = last[id];
          return a && b && a.frames > b.frames && a.audioPackets > b.audioPackets && a.audioEnergy > 0;
        });
      last = now;
      return ok ? now : null;
    },
    ms,
    () => `${what}: video and audio from ${identities.join(', ')} (last: ${JSON.stringify(now)})`,
    500,
  );
}
