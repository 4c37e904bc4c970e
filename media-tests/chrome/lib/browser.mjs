// Headless Chromium inside a network namespace, and pages on the server's origin: what every suite of this folder
// (suite.mjs, reach.mjs) does the same way.

import fs from 'node:fs';
import path from 'node:path';

import { withTimeout } from './proc.mjs';

/**
 * Chromium's flags for these suites. `origin` is the server's http origin (treated as secure, so getUserMedia works
 * on a private address over http).
 * @param {string} origin
 */
export function chromiumArgs(origin) {
  return [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-ui-for-media-stream',
    // One fake camera and microphone; the camera at 30 fps (its default is 20).
    '--use-fake-device-for-media-stream=fps=30',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    `--unsafely-treat-insecure-origin-as-secure=${origin}`,
    // Real host candidates in SDP (no mDNS names: there is no multicast between namespaces).
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
  ];
}

/**
 * Launch Chromium inside namespace `ns` (through a wrapper script: playwright talks to it over a pipe, which crosses
 * namespaces).
 * @param {{ns: string, chromiumBin: string, scratch: string, origin: string, extraArgs?: string[]}} o
 */
export async function launchIn({ ns, chromiumBin, scratch, origin, extraArgs = [] }) {
  const wrapper = path.join(scratch, `chromium-${ns}.sh`);
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${chromiumBin} "$@"\n`, { mode: 0o755 });
  const { chromium } = await import('playwright-core');
  return withTimeout(
    chromium.launch({ executablePath: wrapper, headless: true, args: [...chromiumArgs(origin), ...extraArgs] }),
    60_000,
    `chromium in ${ns} to launch`,
  );
}

/**
 * A fresh context and a blank page of the server's origin (`/qa.html`, answered by playwright: `/courier.js` and the
 * server's HTTP API are same-origin from it), with camera, microphone and local-network-access granted, its
 * console in `<out>/<logPrefix>-<name>-console.log`.
 * @param {import('playwright-core').Browser} browser
 * @param {{origin: string, out: string, name: string, logPrefix: string, initScripts?: Function[]}} o
 */
export async function openPage(browser, { origin, out, name, logPrefix, initScripts = [] }) {
  /** @type {import('playwright-core').BrowserContext} */ let ctx;
  try {
    ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera', 'microphone', 'local-network-access'] });
  } catch {
    // An older playwright without that permission name: Chromium then needs no grant either.
    ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera', 'microphone'] });
  }
  const page = await ctx.newPage();
  for (const s of initScripts) await page.addInitScript(/** @type {any} */ (s));
  const consoleLog = fs.createWriteStream(path.join(out, `${logPrefix}-${name}-console.log`));
  page.on('console', (m) => consoleLog.writableEnded || consoleLog.write(`[${m.type()}] ${m.text()}\n`));
  page.on('pageerror', (e) => consoleLog.writableEnded || consoleLog.write(`[pageerror] ${e.stack ?? e.message}\n`));
  page.on('close', () => consoleLog.end());
  await page.route(`${origin}/qa.html`, (r) =>
    r.fulfill({ contentType: 'text/html', body: '<!doctype html><html><head><title>courier qa</title></head><body></body></html>' }),
  );
  await page.goto(`${origin}/qa.html`, { timeout: 15_000 });
  return { ctx, page };
}

/**
 * page.evaluate, bounded.
 * @template A, R
 * @param {import('playwright-core').Page} page
 * @param {(a: A) => R | Promise<R>} fn
 * @param {A} arg
 * @param {string} what
 * @param {number} [ms]
 * @returns {Promise<R>}
 */
export const evaluate = (page, fn, arg, what, ms = 30_000) =>
  withTimeout(/** @type {Promise<R>} */ (page.evaluate(/** @type {any} */ (fn), arg)), ms, what);
