// Shared by the browser tests: paths, tokens, child processes (logged to test-artifacts/, always killed) and
// Chromium's flags. Every wait is bounded.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
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
  '--use-fake-device-for-media-stream',
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
 */
export function startProcess(name, bin, args, cwd = undefined) {
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
export function requireExecutable(file, what) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    assert.fail(`${what} not found or not executable at ${file} (build it with \`cargo build\`, or set the env var)`);
  }
}

