#!/usr/bin/env node
// Reachable from real networks: headless Chromium pages in network namespaces whose firewalls block what corporate,
// hotel and mobile networks block, joining Courier with the project's client library (the path browser apps take).
// Each case asserts that the subscriber decodes video, and over which path (the selected ICE candidate pair), and
// measures the time from join() to the first video frame on screen.
//
//   node reach.mjs [--cases udp,ice-tcp] [--out DIR] [--repeat N] [--hold S]
//
// --repeat runs every case N times (the report gives the median, min and max time to first frame); --hold keeps the
// call up S seconds after the first frame and reports Courier's CPU time per RTP packet it sent in that window
// (docs/benchmarks.md). CI runs each case once, without hold.
//
// Cases (the publisher and the subscriber each in their own namespace, Courier in a third; lib/net.mjs):
//   udp       no firewall: the reference (UDP host candidates)
//   ice-tcp   every UDP datagram dropped in both clients' namespaces (nftables): media over ICE-TCP (RFC 6544 passive
//             candidate on the server, RFC 4571 framing; on by default, on the UDP port's number)
//
// Needs root (network namespaces, nftables). Every wait is bounded; namespaces and processes are removed on every
// exit path.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import * as B from './lib/browser.mjs';
import { Topology } from './lib/net.mjs';
import { API_KEY, API_SECRET, killChildren, mintToken, startProcess, waitUntil, withTimeout } from './lib/proc.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');

/**
 * @typedef {{
 *   label: string,
 *   blockUdp: ('pub'|'sub')[],
 *   expect: {protocol: 'udp'|'tcp', local: string[], remote: string[]},
 * }} Case
 */
/** @type {Record<string, Case>} */
const CASES = {
  udp: { label: 'UDP (no firewall)', blockUdp: [], expect: { protocol: 'udp', local: ['host'], remote: ['host'] } },
  'ice-tcp': { label: 'ICE-TCP (UDP blocked)', blockUdp: ['pub', 'sub'], expect: { protocol: 'tcp', local: ['host', 'prflx'], remote: ['host'] } },
};

const { values: opt } = parseArgs({
  options: {
    cases: { type: 'string' },
    out: { type: 'string' },
    ci: { type: 'boolean', default: false },
    repeat: { type: 'string' },
    hold: { type: 'string' },
    courier: { type: 'string' },
    chromium: { type: 'string' },
  },
});
const caseNames = (opt.cases ?? Object.keys(CASES).join(',')).split(',');
const repeat = Number(opt.repeat ?? 1);
const holdS = Number(opt.hold ?? 0);
if (!(Number.isInteger(repeat) && repeat >= 1 && repeat <= 50)) fail('--repeat must be 1..50');
if (!(holdS >= 0 && holdS <= 300)) fail('--hold must be 0..300 seconds');
for (const c of caseNames) if (!CASES[c]) fail(`unknown case ${c} (known: ${Object.keys(CASES).join(', ')})`);

const COURIER_BIN = path.resolve(opt.courier ?? process.env.COURIER_BIN ?? path.join(REPO, 'target/debug/courier'));
const CHROMIUM_BIN = opt.chromium ?? process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const OUT = path.resolve(opt.out ?? path.join(HERE, 'artifacts', `reach-${new Date().toISOString().replace(/[:.]/g, '-')}`));

/** @param {string} msg */
function fail(msg) {
  console.error(`reach: ${msg}`);
  process.exit(2);
}
const log = (/** @type {string} */ s) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

if (process.getuid?.() !== 0) fail('needs root (network namespaces, nftables); run it through reach.sh as root');
for (const [bin, what] of [
  [COURIER_BIN, 'courier (cargo build --bin courier, or --courier / COURIER_BIN)'],
  [CHROMIUM_BIN, 'chromium (scripts/install-browser-deps.sh)'],
]) {
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    fail(`${what}: not found at ${bin}`);
  }
}

fs.mkdirSync(OUT, { recursive: true });
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'courier-reach-'));
const topo = new Topology({ prefix: `cr${process.pid % 100000}` });
let cleaned = false;
function cleanup() {
  if (cleaned) return;
  cleaned = true;
  killChildren();
  topo.destroy();
  fs.rmSync(scratch, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
  process.on(sig, () => {
    console.error(`reach: ${sig}, cleaning up`);
    cleanup();
    process.exit(130);
  });
}

const HTTP_PORT = 7880;
const UDP_PORT = 7881;
// Over TLS, as in the field: https and wss with a certificate for the server's address from a CA made for the run.
const origin = `https://${topo.addr.server}:${HTTP_PORT}`;
const wsUrl = `wss://${topo.addr.server}:${HTTP_PORT}/rtc`;

/**
 * A CA and a certificate for `ip` signed by it (openssl), in `dir`. Returns the paths.
 * @param {string} dir
 * @param {string} ip
 */
function makeCertificate(dir, ip) {
  const f = (/** @type {string} */ n) => path.join(dir, n);
  const ssl = (/** @type {string[]} */ args) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=courier reach test CA',
    '-keyout', f('ca.key'), '-out', f('ca.pem')]);
  ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${ip}`, '-keyout', f('server.key'), '-out', f('server.csr')]);
  fs.writeFileSync(f('ext.cnf'), `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
  ssl(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('ext.cnf'), '-out', f('server.pem')]);
  // Chromium trusts exactly this key (the SHA-256 of its SubjectPublicKeyInfo), not any certificate.
  const pub = execFileSync('openssl', ['x509', '-in', f('server.pem'), '-pubkey', '-noout'], { timeout: 30_000 });
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: pub, timeout: 30_000 });
  const spki = crypto.createHash('sha256').update(der).digest('base64');
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key'), spki };
}

/**
 * Drops every UDP datagram in and out of namespace `ns` (its loopback included), counting them.
 * @param {string} ns
 */
function blockUdp(ns) {
  const rules = `
table inet courier_reach {
  counter udp_dropped {}
  chain input { type filter hook input priority -10; policy accept; meta l4proto udp counter name udp_dropped drop; }
  chain output { type filter hook output priority -10; policy accept; meta l4proto udp counter name udp_dropped drop; }
}
`;
  topo.nsExec(ns, 'nft', ['-f', '-'], rules);
}

/** @param {string} ns */
function unblock(ns) {
  try {
    topo.nsExec(ns, 'nft', ['delete', 'table', 'inet', 'courier_reach']);
  } catch {
    /* not there */
  }
}

/** UDP datagrams the firewall of `ns` dropped. @param {string} ns */
function udpDropped(ns) {
  try {
    const j = JSON.parse(topo.nsExec(ns, 'nft', ['-j', 'list', 'counters', 'table', 'inet', 'courier_reach']));
    for (const item of j.nftables ?? []) if (item.counter?.name === 'udp_dropped') return item.counter.packets;
  } catch {
    /* no table */
  }
  return 0;
}

// ------------------------------------------------------------------ in the pages (self-contained functions)

/**
 * Joins with the client library, publishing the fake camera and microphone or subscribing, and resolves when a
 * subscriber has its first video frame on screen. Returns the milliseconds from the join() call to that frame
 * (null for a publisher).
 * @param {{url: string, token: string, publish: boolean, rtc?: any}} o
 */
async function joinRoom({ url, token, publish, rtc = {} }) {
  const w = /** @type {any} */ (window);
  const m = await import('/courier.js');
  const t0 = performance.now();
  /** @type {Promise<number>|null} */
  let firstFrame = null;
  const client = await m.join(url, token, {
    publish: publish ? { audio: true, video: true } : false,
    simulcast: false,
    reconnect: false,
    log: true,
    videoConstraints: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    ...rtc,
  });
  w.client = client;
  if (publish) return null;
  firstFrame = new Promise((resolve) => {
    const attach = (/** @type {MediaStreamTrack} */ track) => {
      if (track.kind !== 'video') return;
      const el = document.createElement('video');
      el.autoplay = true;
      el.muted = true;
      el.playsInline = true;
      el.srcObject = new MediaStream([track]);
      document.body.appendChild(el);
      el.play().catch(() => {});
      el.requestVideoFrameCallback(() => resolve(performance.now() - t0));
    };
    client.on('remote_track_added', (/** @type {any} */ r) => attach(r.track));
    for (const r of client.remoteTracks.values()) attach(r.track);
  });
  return await firstFrame;
}

/** The selected ICE candidate pair of the page's peer connection, and video frames decoded so far. */
async function pathNow() {
  const w = /** @type {any} */ (window);
  const pc = w.client?.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  /** @type {Map<string, any>} */ const byId = new Map();
  stats.forEach((/** @type {any} */ s) => byId.set(s.id, s));
  let pair = null;
  for (const s of byId.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
  }
  let framesDecoded = 0;
  for (const s of byId.values()) if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded += s.framesDecoded ?? 0;
  const local = pair ? byId.get(pair.localCandidateId) : null;
  const remote = pair ? byId.get(pair.remoteCandidateId) : null;
  return {
    framesDecoded,
    local: local ? { protocol: local.protocol, candidateType: local.candidateType, relayProtocol: local.relayProtocol ?? null, address: local.address, port: local.port } : null,
    remote: remote ? { protocol: remote.protocol, candidateType: remote.candidateType, address: remote.address, port: remote.port } : null,
  };
}

/** Courier's counters, fetched from a page of its origin. */
async function serverCounters() {
  const text = await (await fetch('/metrics')).text();
  /** @type {Record<string, number>} */ const out = {};
  for (const line of text.split('\n')) {
    const m = line.match(/^(courier_rtp_packets_(?:in|out)_total) (\d+)/);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** CPU seconds (user + system) process `pid` has used. @param {number} pid */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5); here, after "pid (comm) ", at 11 and 12.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}
const CLK_TCK = 100;

// ------------------------------------------------------------------ one case

/**
 * @param {Record<string, import('playwright-core').Browser>} browsers
 * @param {string} name
 * @param {number} courierPid
 */
async function runCase(browsers, name, courierPid) {
  const c = CASES[name];
  const room = `reach-${name}-${Date.now() % 1_000_000}`;
  for (const who of c.blockUdp) blockUdp(topo[who]);
  const opened = [];
  try {
    const pub = await B.openPage(browsers.pub, { origin, out: OUT, name: 'pub', logPrefix: name });
    opened.push(pub);
    const sub = await B.openPage(browsers.sub, { origin, out: OUT, name: 'sub', logPrefix: name });
    opened.push(sub);
    await B.evaluate(pub.page, joinRoom, { url: wsUrl, token: mintToken({ identity: 'pub', room }), publish: true }, 'publisher joins');
    const ttff = await B.evaluate(sub.page, joinRoom, { url: wsUrl, token: mintToken({ identity: 'sub', room }), publish: false }, 'subscriber joins and shows a frame', 45_000);
    const subPath = await waitUntil(
      async () => {
        const p = await B.evaluate(sub.page, pathNow, undefined, 'subscriber stats');
        return p && p.framesDecoded >= 30 && p.local ? p : null;
      },
      20_000,
      `${name}: the subscriber decoding 30 frames`,
      250,
    );
    const pubPath = await B.evaluate(pub.page, pathNow, undefined, 'publisher stats');
    const dropped = { pub: udpDropped(topo.pub), sub: udpDropped(topo.sub) };
    /** @type {any} */ let cpu = null;
    if (holdS > 0) {
      const m0 = await B.evaluate(pub.page, serverCounters, undefined, 'metrics');
      const c0 = cpuSeconds(courierPid);
      await new Promise((r) => setTimeout(r, holdS * 1000));
      const m1 = await B.evaluate(pub.page, serverCounters, undefined, 'metrics');
      const c1 = cpuSeconds(courierPid);
      const out = m1.courier_rtp_packets_out_total - m0.courier_rtp_packets_out_total;
      const inn = m1.courier_rtp_packets_in_total - m0.courier_rtp_packets_in_total;
      cpu = { seconds: holdS, cpuS: c1 - c0, packetsOut: out, packetsIn: inn, usPerPacketOut: out > 0 ? Math.round(((c1 - c0) * 1e6) / out) : null };
    }
    return { case: name, label: c.label, ttffMs: Math.round(/** @type {number} */ (ttff)), sub: subPath, pub: pubPath, udpDropped: dropped, cpu };
  } finally {
    await Promise.all(opened.map((o) => o.ctx.close().catch(() => {})));
    for (const who of c.blockUdp) unblock(topo[who]);
  }
}

/**
 * What is wrong with a case's result (empty: nothing).
 * @param {any} r
 */
function problemsOf(r) {
  const c = CASES[r.case];
  /** @type {string[]} */ const out = [];
  for (const who of ['pub', 'sub']) {
    const l = r[who]?.local;
    if (!l) {
      out.push(`${who}: no selected candidate pair`);
      continue;
    }
    if (l.protocol !== c.expect.protocol) out.push(`${who}: media over ${l.protocol}, want ${c.expect.protocol}`);
    // An active TCP candidate (port 9 in the SDP) shows up as prflx once connected: its real port is learned then.
    if (!c.expect.local.includes(l.candidateType)) out.push(`${who}: local candidate ${l.candidateType}, want ${c.expect.local.join(' or ')}`);
    const rc = r[who]?.remote;
    if (!rc || !c.expect.remote.includes(rc.candidateType)) out.push(`${who}: remote candidate ${rc?.candidateType}, want ${c.expect.remote.join(' or ')}`);
  }
  for (const who of c.blockUdp) {
    if (!(r.udpDropped[who] > 0)) out.push(`${who}: the firewall dropped no UDP datagram (was it in place?)`);
  }
  return out;
}

async function main() {
  log(`namespaces ${topo.pub}, ${topo.srv}, ${topo.sub}; server ${topo.addr.server}; artifacts in ${OUT}`);
  topo.create();
  const tls = makeCertificate(scratch, topo.addr.server);
  const courier = startProcess(OUT, 'courier', 'ip', [
    'netns', 'exec', topo.srv, COURIER_BIN, 'serve',
    '--http-addr', `${topo.addr.server}:${HTTP_PORT}`,
    '--udp-addr', `${topo.addr.server}:${UDP_PORT}`,
    '--keys', `${API_KEY}:${API_SECRET}`,
    '--web-root', path.join(REPO, 'web-demo'),
    '--tls-cert', tls.cert,
    '--tls-key', tls.key,
    '--data-dir', path.join(scratch, 'data'),
  ]);
  await courier.waitForLine(/COURIER_READY/, 30_000);
  const [pubB, subB] = await Promise.all([
    B.launchIn({ ns: topo.pub, chromiumBin: CHROMIUM_BIN, scratch, origin, extraArgs: [`--ignore-certificate-errors-spki-list=${tls.spki}`] }),
    B.launchIn({ ns: topo.sub, chromiumBin: CHROMIUM_BIN, scratch, origin, extraArgs: [`--ignore-certificate-errors-spki-list=${tls.spki}`] }),
  ]);
  /** @type {any[]} */ const results = [];
  try {
    for (const name of caseNames.flatMap((n) => Array(repeat).fill(n))) {
      log(`${name}: ${CASES[name].label}`);
      try {
        const r = await withTimeout(runCase({ pub: pubB, sub: subB }, name, /** @type {number} */ (courier.child.pid)), 120_000 + holdS * 1000, name);
        r.problems = problemsOf(r);
        results.push(r);
        log(`  ${name}: first frame after ${r.ttffMs} ms; subscriber over ${r.sub.local.protocol} ${r.sub.local.candidateType}${r.sub.local.relayProtocol ? `/${r.sub.local.relayProtocol}` : ''}, publisher over ${r.pub?.local?.protocol} ${r.pub?.local?.candidateType}; UDP dropped pub ${r.udpDropped.pub}, sub ${r.udpDropped.sub}${r.cpu ? `; courier ${r.cpu.usPerPacketOut} µs CPU per RTP packet out (${r.cpu.packetsOut} out, ${r.cpu.packetsIn} in, ${r.cpu.cpuS.toFixed(2)} s CPU in ${holdS} s)` : ''}${r.problems.length ? `; PROBLEMS: ${r.problems.join('; ')}` : ''}`);
      } catch (e) {
        const err = /** @type {Error} */ (e);
        log(`  ${name}: FAILED: ${err.message}`);
        results.push({ case: name, label: CASES[name].label, error: err.message, problems: [err.message] });
      }
      fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(results, null, 1));
    }
  } finally {
    await Promise.all([pubB.close().catch(() => {}), subB.close().catch(() => {})]);
    await courier.stop();
  }
  const table = [
    '| case | runs | time to first frame, median (min–max) | subscriber path | publisher path | courier CPU per RTP packet out |',
    '|---|---|---|---|---|---|',
    ...caseNames.map((name) => {
      const rs = results.filter((r) => r.case === name);
      const ok = rs.filter((r) => !r.error);
      if (!ok.length) return `| ${CASES[name].label} | ${rs.length} | failed: ${rs[0]?.error} | | | |`;
      const t = ok.map((r) => r.ttffMs).sort((a, b) => a - b);
      const med = t[Math.floor((t.length - 1) / 2)];
      const us = ok.map((r) => r.cpu?.usPerPacketOut).filter((x) => typeof x === 'number').sort((a, b) => a - b);
      const r = ok[0];
      const path = (/** @type {any} */ l) => (l ? `${l.protocol} ${l.candidateType}${l.relayProtocol ? `/${l.relayProtocol}` : ''}` : '?');
      return `| ${CASES[name].label} | ${ok.length}/${rs.length} | ${med} ms (${t[0]}–${t[t.length - 1]}) | ${path(r.sub.local)} | ${path(r.pub?.local)} | ${us.length ? `${us[Math.floor((us.length - 1) / 2)]} µs` : '—'} |`;
    }),
  ].join('\n');
  fs.writeFileSync(path.join(OUT, 'report.md'), `${table}\n`);
  console.log(`\n${table}\n`);
  const bad = results.filter((r) => r.problems.length);
  if (bad.length) {
    console.error(`reach FAILED:\n  ${bad.map((r) => `${r.case}: ${r.problems.join('; ')}`).join('\n  ')}\n(logs in ${OUT})`);
    return 1;
  }
  console.log(`reach passed: ${results.map((r) => r.case).join(', ')}`);
  return 0;
}

const totalBoundS = caseNames.length * repeat * (130 + holdS) + 120;
setTimeout(() => {
  console.error(`reach: exceeded its bound of ${totalBoundS} s; stopping`);
  cleanup();
  process.exit(1);
}, totalBoundS * 1000).unref();

main().then(
  (code) => {
    cleanup();
    process.exit(code);
  },
  (e) => {
    console.error('reach:', e);
    cleanup();
    process.exit(1);
  },
);
