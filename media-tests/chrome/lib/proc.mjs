// Child processes (logged to the artifacts folder, always killed), tokens and bounded waits. Small helpers in the
// manner of web-demo/tests/harness.mjs, copied rather than imported so that this folder stands alone.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

export const API_KEY = 'qakey';
export const API_SECRET = 'qa-secret-of-the-chrome-loss-suite';

export const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Race a promise against a deadline.
 * @template T
 * @param {Promise<T>} p
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
export function withTimeout(p, ms, what) {
  /** @type {any} */ let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * Poll `fn` until it returns a truthy value (returned) or `ms` pass (throws with `what` and the last value).
 * @template T
 * @param {() => Promise<T>} fn
 * @param {number} ms
 * @param {string} what
 * @param {number} [everyMs]
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
  throw new Error(`${what}: not within ${ms} ms (last: ${JSON.stringify(last)})`);
}

const b64url = (/** @type {string} */ s) => Buffer.from(s).toString('base64url');

/**
 * An HS256 access token as docs/protocol.md describes it.
 * @param {{identity: string, room: string, admin?: boolean, ttlS?: number}} o
 */
export function mintToken({ identity, room, admin = false, ttlS = 3600 }) {
  const header = { alg: 'HS256', typ: 'JWT', kid: API_KEY };
  const video = admin
    ? { room, room_join: false, room_admin: true }
    : { room, room_join: true, can_publish: true, can_subscribe: true };
  const claims = { iss: API_KEY, sub: identity, name: identity, exp: Math.floor(Date.now() / 1000) + ttlS, video };
  const body = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = crypto.createHmac('sha256', API_SECRET).update(body).digest('base64url');
  return `${body}.${sig}`;
}

/** Every child we start, so that even an abrupt exit kills them. */
export const children = new Set();

export function killChildren() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/**
 * Spawn a process; its stdout and stderr go to `<dir>/<name>.log`, and its stdout lines are kept.
 * @param {string} dir
 * @param {string} name
 * @param {string} bin
 * @param {string[]} args
 * @param {Record<string, string>} [env]
 */
export function startProcess(dir, name, bin, args, env = {}) {
  const logStream = fs.createWriteStream(path.join(dir, `${name}.log`));
  const log = (/** @type {string} */ s) => logStream.writableEnded || logStream.write(s);
  log(`$ ${bin} ${args.join(' ')}\n`);
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_BACKTRACE: '1', ...process.env, ...env } });
  children.add(child);
  /** @type {string[]} */
  const lines = [];
  /** @type {Set<(line: string) => void>} */
  const watchers = new Set();
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    log(`[out] ${line}\n`);
    for (const w of watchers) w(line);
  });
  readline.createInterface({ input: child.stderr }).on('line', (line) => log(`[err] ${line}\n`));
  /** @type {Promise<{code: number|null, signal: string|null}>} */
  const exited = new Promise((resolve) => {
    child.on('error', (err) => resolve({ code: null, signal: `spawn error: ${err.message}` }));
    child.on('exit', (code, signal) => {
      log(`[exit] code=${code} signal=${signal}\n`);
      resolve({ code, signal });
    });
  });
  exited.then(() => children.delete(child));
  child.on('close', () => logStream.end());
  return {
    child,
    exited,
    /**
     * The first stdout line (seen or future) matching `re`; rejects on exit or timeout.
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
        watchers.add(watcher);
        exited.then(({ code, signal }) => reject(new Error(`${name} exited (code ${code}, signal ${signal}) before printing ${re}; see ${name}.log`)));
      });
      return withTimeout(/** @type {Promise<RegExpMatchArray>} */ (found), ms, `${name} to print ${re}`).finally(() =>
        watchers.delete(watcher),
      );
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
