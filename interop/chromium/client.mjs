#!/usr/bin/env node
// The interop matrix's Chromium client (interop/README.md): the contract's command line around headless Chromium
// (playwright-core from web-demo/node_modules, /usr/bin/chromium or CHROMIUM_BIN). Serves client.html, page.js and
// web-demo's courier.js from a small HTTP server on 127.0.0.1, opened as http://localhost (a secure context, which
// getUserMedia needs; the page then reaches the server's private address, hence local-network-access), runs window.runInterop in the page, writes its report. Every wait is bounded.
//
//   node interop/chromium/client.mjs --url ws://10.203.0.1:PORT/rtc --token T --duration S \
//        --window-start MS --window-end MS --report PATH

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { CHROMIUM_ARGS, CHROMIUM_BIN } from '../../web-demo/tests/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');
const WEB_DEMO = path.join(REPO, 'web-demo');
// The same headless Chromium as the web demo's tests (flags and binary).

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    o[a.slice(2)] = argv[++i];
  }
  for (const k of ['url', 'token', 'duration', 'window-start', 'window-end', 'report']) {
    if (o[k] == null) throw new Error(`--${k} is required`);
  }
  return {
    url: o.url,
    token: o.token,
    durationS: Number(o.duration),
    windowStart: Number(o['window-start']),
    windowEnd: Number(o['window-end']),
    report: o.report,
  };
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript' };

/** Serves /client.html, /page.js (this folder) and /web-demo/*.js. */
function serve(host) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    let file = null;
    if (url.pathname.startsWith('/web-demo/')) file = path.join(WEB_DEMO, path.basename(url.pathname));
    else if (['/client.html', '/page.js'].includes(url.pathname)) file = path.join(HERE, url.pathname.slice(1));
    if (!file || !fs.existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve(server));
  });
}

const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms))]);

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const fallback = (err) => ({
    stack: 'chromium',
    stack_version: 'chromium',
    participant_id: null,
    joined_ms: null,
    connected_ms: null,
    states: [],
    closed_early: `client failed: ${err}`,
    sent: [],
    received: [],
    errors: [String(err)],
  });
  let report;
  let browser;
  let server;
  try {
    server = await serve('127.0.0.1');
    const origin = `http://localhost:${server.address().port}`;
    const { chromium } = createRequire(path.join(WEB_DEMO, 'package.json'))('playwright-core');
    browser = await withTimeout(chromium.launch({ executablePath: CHROMIUM_BIN, headless: true, args: CHROMIUM_ARGS }), 30_000, 'chromium to launch');
    let ctx;
    try {
      ctx = await browser.newContext({ permissions: ['camera', 'microphone', 'local-network-access'] });
    } catch {
      ctx = await browser.newContext({ permissions: ['camera', 'microphone'] }); // an older playwright without LNA
    }
    const page = await ctx.newPage();
    page.on('console', (m) => console.log(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => console.log(`[pageerror] ${e.stack ?? e.message}`));
    await page.goto(`${origin}/client.html`, { timeout: 20_000 });
    await page.waitForFunction(() => /** @type {any} */ (window).interopReady === true, null, { timeout: 20_000 });
    const budget = Math.max(o.windowEnd - Date.now(), 0) + o.durationS * 1000 + 30_000;
    report = await withTimeout(
      page.evaluate((args) => /** @type {any} */ (window).runInterop(args), { ...o, stackVersion: `Chromium ${browser.version()}` }),
      budget,
      'the page to finish',
    );
  } catch (e) {
    console.error(e);
    report = { ...(report ?? fallback(e?.message ?? e)) };
  } finally {
    await browser?.close().catch(() => {});
    server?.close();
  }
  fs.writeFileSync(o.report, JSON.stringify(report, null, 2));
  console.log(`report written to ${o.report} after ${Date.now() - started} ms`);
  const ok = report.closed_early == null && report.errors.length === 0;
  process.exit(ok ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
