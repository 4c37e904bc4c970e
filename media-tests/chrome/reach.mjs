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
//   ice-tcp   every UDP datagram (and TCP to the TURN ports) dropped in both clients' namespaces (nftables): media over
//             ICE-TCP (RFC 6544 passive candidate on the server, RFC 4571 framing; on by default, on the UDP port's number)
//   turn-udp  the subscriber relay-only (iceTransportPolicy "relay"): through the built-in TURN server over UDP (its TCP
//             to the TURN ports dropped: with both open, which relay Chrome nominates first is a race, and one run
//             in a CI sitting took TCP)
//   turn-tcp  the same with the subscriber's UDP dropped: TURN over TCP
//   turn-tls  the same with UDP and TCP to 3478 dropped: TURN over TLS on 5349 (the server's certificate)
//   whip-gstreamer  GStreamer's webrtcbin (interop/gstreamer/client.py, an independent WebRTC stack) publishes VP8 and
//             Opus with WHIP over https from the publisher's namespace; a Chromium WebSocket viewer decodes it
//   whip-whep a fetch-only WHIP publisher (three simulcast encodings) seen by a WebSocket viewer, then played by a
//             fetch-only WHEP page; DELETE ends the publisher
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
 * What a page's selected candidate pair must look like: the transport of its local candidate, the candidate types
 * allowed at each end, and for a relayed one the protocol between the page and the TURN server.
 * @typedef {{protocol: 'udp'|'tcp', local: string[], remote: string[], relayProtocol?: 'udp'|'tcp'|'tls'}} PathExpect
 */
/**
 * @typedef {{
 *   label: string,
 *   firewall: {pub?: Firewall, sub?: Firewall},
 *   sub?: {iceTransportPolicy?: 'relay'},
 *   whip?: boolean,
 *   gstreamer?: boolean,
 *   expect: {pub: PathExpect|null, sub: PathExpect},
 * }} Case
 * @typedef {'udp' | 'udp+turn-tcp' | 'udp+turn' | 'turn-stream'} Firewall  what a page's namespace drops: every UDP
 *   datagram; and TCP to 3478 (TURN over TCP); or TCP to 3478 and 5349 (any TURN); `turn-stream`: only TCP to 3478
 *   and 5349 (TURN over TCP and TLS), UDP open
 */
const HOST_UDP = /** @type {PathExpect} */ ({ protocol: 'udp', local: ['host'], remote: ['host'] });
// An active TCP candidate (port 9 in the SDP) shows up as prflx once connected: its real port is learned then.
const HOST_TCP = /** @type {PathExpect} */ ({ protocol: 'tcp', local: ['host', 'prflx'], remote: ['host'] });
/** @param {'udp'|'tcp'|'tls'} relayProtocol */
const RELAY = (relayProtocol) => /** @type {PathExpect} */ ({ protocol: 'udp', local: ['relay'], remote: ['host', 'prflx'], relayProtocol });
/** @type {Record<string, Case>} */
const CASES = {
  udp: { label: 'UDP (no firewall)', firewall: {}, expect: { pub: HOST_UDP, sub: HOST_UDP } },
  // TURN blocked too: a UDP-blocked browser otherwise connects through TURN over TCP about as often as over ICE-TCP
  // (both work; this case is about the second).
  'ice-tcp': { label: 'ICE-TCP (UDP and TURN blocked)', firewall: { pub: 'udp+turn', sub: 'udp+turn' }, expect: { pub: HOST_TCP, sub: HOST_TCP } },
  'turn-udp': { label: 'TURN over UDP (relay only, TCP to TURN blocked)', firewall: { sub: 'turn-stream' }, sub: { iceTransportPolicy: 'relay' }, expect: { pub: HOST_UDP, sub: RELAY('udp') } },
  'turn-tcp': { label: 'TURN over TCP (relay only, UDP blocked)', firewall: { sub: 'udp' }, sub: { iceTransportPolicy: 'relay' }, expect: { pub: HOST_UDP, sub: RELAY('tcp') } },
  'turn-tls': {
    label: 'TURN over TLS (relay only, UDP and TCP 3478 blocked)',
    firewall: { sub: 'udp+turn-tcp' },
    sub: { iceTransportPolicy: 'relay' },
    expect: { pub: HOST_UDP, sub: RELAY('tls') },
  },
  'whip-gstreamer': {
    label: 'WHIP publish from GStreamer webrtcbin, WebSocket viewer',
    firewall: {},
    gstreamer: true,
    expect: { pub: null, sub: HOST_UDP },
  },
  'whip-whep': { label: 'WHIP publish (simulcast), WebSocket and WHEP viewers', firewall: {}, whip: true, expect: { pub: HOST_UDP, sub: HOST_UDP } },
};

/** The run's certificate (makeCertificate), and the Python with GStreamer (interop/gstreamer/setup.sh). */
/** @type {{ca: string, cert: string, key: string, spki: string}} */ let tls;
/** @type {string} */ let gstPython = '';

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
 * The firewall of namespace `ns` (its loopback included): drops every UDP datagram in and out, and with
 * `udp+turn-tcp` TCP to port 3478 too (TURN over TCP), counting what it drops.
 * @param {string} ns
 * @param {Firewall} what
 */
function firewall(ns, what) {
  const anyTurn = 'tcp dport { 3478, 5349 } counter name dropped drop;';
  const tcp = { udp: '', 'udp+turn-tcp': 'tcp dport 3478 counter name dropped drop;', 'udp+turn': anyTurn, 'turn-stream': anyTurn }[what];
  const udp = what.startsWith('udp') ? 'meta l4proto udp counter name dropped drop;' : '';
  const rules = `
table inet courier_reach {
  counter dropped {}
  chain input { type filter hook input priority -10; policy accept; ${udp} }
  chain output { type filter hook output priority -10; policy accept; ${udp} ${tcp} }
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

/** Packets the firewall of `ns` dropped. @param {string} ns */
function firewallDropped(ns) {
  try {
    const j = JSON.parse(topo.nsExec(ns, 'nft', ['-j', 'list', 'counters', 'table', 'inet', 'courier_reach']));
    for (const item of j.nftables ?? []) if (item.counter?.name === 'dropped') return item.counter.packets;
  } catch {
    /* no table */
  }
  return 0;
}

// ------------------------------------------------------------------ in the pages (self-contained functions)

/**
 * Joins with the client library, publishing the fake camera and microphone or subscribing, and resolves when a
 * subscriber has its first video frame on screen. Returns the milliseconds from the join() call to that frame
 * (null for a publisher) and the wall-clock time of that frame.
 * @param {{url: string, token: string, publish: boolean, rtc?: any}} o
 */
async function joinRoom({ url, token, publish, rtc = {} }) {
  const w = /** @type {any} */ (window);
  const m = await import('/courier.js');
  const t0 = performance.now();
  const client = await m.join(url, token, {
    publish: publish ? { audio: true, video: true } : false,
    simulcast: false,
    reconnect: false,
    log: true,
    videoConstraints: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    ...rtc,
  });
  w.client = client;
  w.pc = client.pc;
  if (publish) return { ttffMs: null, firstFrameAt: null };
  return await new Promise((resolve) => {
    const attach = (/** @type {MediaStreamTrack} */ track) => {
      if (track.kind !== 'video') return;
      const el = document.createElement('video');
      el.autoplay = true;
      el.muted = true;
      el.playsInline = true;
      el.srcObject = new MediaStream([track]);
      document.body.appendChild(el);
      el.play().catch(() => {});
      el.requestVideoFrameCallback(() => resolve({ ttffMs: performance.now() - t0, firstFrameAt: Date.now() }));
    };
    client.on('remote_track_added', (/** @type {any} */ r) => attach(r.track));
    for (const r of client.remoteTracks.values()) attach(r.track);
  });
}

/**
 * WHIP (RFC 9725) with nothing but fetch: the fake camera in three simulcast encodings and the microphone, one
 * offer with every candidate (no trickle), `POST /whip`. Returns when the answer is applied, with the time of the
 * POST (wall clock), the resource URL and the Link header.
 * @param {{token: string}} o
 */
async function whipPublish({ token }) {
  const w = /** @type {any} */ (window);
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    audio: true,
  });
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  w.pc = pc;
  pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
  pc.addTransceiver(stream.getVideoTracks()[0], {
    direction: 'sendonly',
    streams: [stream],
    sendEncodings: [
      { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
      { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
      { rid: 'f', maxBitrate: 1_500_000 },
    ],
  });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve(null);
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve(null));
    setTimeout(resolve, 3000);
  });
  const postedAt = Date.now();
  const r = await fetch('/whip', {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: /** @type {RTCSessionDescription} */ (pc.localDescription).sdp,
  });
  if (r.status !== 201) throw new Error(`WHIP: HTTP ${r.status}: ${await r.text()}`);
  const location = new URL(/** @type {string} */ (r.headers.get('Location')), window.location.href).href;
  w.whipResource = location;
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  return { postedAt, location, link: r.headers.get('Link') };
}

/**
 * WHEP with nothing but fetch: receive-only audio and video, one offer, `POST /whep?participant=…`; resolves at the
 * first video frame on screen with the milliseconds since the POST.
 * @param {{token: string, participant: string, layer?: string}} o
 */
async function whepPlay({ token, participant, layer }) {
  const w = /** @type {any} */ (window);
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  w.pc = pc;
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addTransceiver('video', { direction: 'recvonly' });
  const t0 = performance.now();
  const frame = new Promise((resolve) => {
    pc.ontrack = (e) => {
      if (e.track.kind !== 'video') return;
      const el = document.createElement('video');
      el.autoplay = true;
      el.muted = true;
      el.playsInline = true;
      el.srcObject = new MediaStream([e.track]);
      document.body.appendChild(el);
      el.play().catch(() => {});
      el.requestVideoFrameCallback(() => resolve(performance.now() - t0));
    };
  });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve(null);
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve(null));
    setTimeout(resolve, 3000);
  });
  const r = await fetch(`/whep?participant=${encodeURIComponent(participant)}${layer ? `&layer=${layer}` : ''}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: /** @type {RTCSessionDescription} */ (pc.localDescription).sdp,
  });
  if (r.status !== 201) throw new Error(`WHEP: HTTP ${r.status}: ${await r.text()}`);
  w.whepResource = new URL(/** @type {string} */ (r.headers.get('Location')), window.location.href).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  return { ttffMs: await frame };
}

/** The page's outbound video encodings that have sent something: rid, bytes, width. */
async function sendingEncodings() {
  const pc = /** @type {any} */ (window).pc;
  /** @type {{rid: string|null, bytesSent: number, frameWidth: number}[]} */ const out = [];
  (await pc.getStats()).forEach((/** @type {any} */ s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video' && (s.bytesSent ?? 0) > 0) {
      out.push({ rid: s.rid ?? null, bytesSent: s.bytesSent, frameWidth: s.frameWidth ?? 0 });
    }
  });
  return out;
}

/** The widest video frame the page's peer connection has decoded. */
async function decodedWidth() {
  const pc = /** @type {any} */ (window).pc;
  let w = 0;
  (await pc.getStats()).forEach((/** @type {any} */ s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') w = Math.max(w, s.frameWidth ?? 0);
  });
  return w;
}

/** `DELETE` on the page's WHIP resource; the HTTP status. */
async function whipDelete() {
  const w = /** @type {any} */ (window);
  const r = await fetch(w.whipResource, { method: 'DELETE' });
  w.pc?.close();
  return r.status;
}

/**
 * The room's participants by the admin API (identities, and per participant its tracks' simulcast layers).
 * @param {{room: string, adminToken: string}} o
 */
async function participants({ room, adminToken }) {
  const r = await fetch(`/api/v1/rooms/${encodeURIComponent(room)}/participants`, { headers: { Authorization: `Bearer ${adminToken}` } });
  if (!r.ok) return { error: `HTTP ${r.status}` };
  return await r.json();
}

/** The selected ICE candidate pair of the page's peer connection, and video frames decoded so far. */
async function pathNow() {
  const w = /** @type {any} */ (window);
  const pc = w.pc ?? w.client?.pc;
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
 * Waits until the page's peer connection has decoded 30 video frames; its selected path then.
 * @param {import('playwright-core').Page} page
 * @param {string} what
 */
const decoding = (page, what) =>
  waitUntil(
    async () => {
      const p = await B.evaluate(page, pathNow, undefined, `${what}: stats`);
      return p && p.framesDecoded >= 30 && p.local ? p : null;
    },
    20_000,
    `${what} decoding 30 frames`,
    250,
  );

/**
 * One case: a publisher in the `pub` namespace, a subscriber in `sub`, behind the case's firewalls.
 * @param {Record<string, import('playwright-core').Browser>} browsers
 * @param {string} name
 * @param {number} courierPid
 */
async function runCase(browsers, name, courierPid) {
  const c = CASES[name];
  const room = `reach-${name}-${Date.now() % 1_000_000}`;
  for (const who of /** @type {const} */ (['pub', 'sub'])) {
    const f = c.firewall[who];
    if (f) firewall(topo[who], f);
  }
  /** @type {{ctx: import('playwright-core').BrowserContext}[]} */ const opened = [];
  /** @param {'pub'|'sub'} ns @param {string} label */
  const open = async (ns, label) => {
    const p = await B.openPage(browsers[ns], { origin, out: OUT, name: label, logPrefix: name });
    opened.push(p);
    return p.page;
  };
  try {
    /** @type {any} */ const r = { case: name, label: c.label };
    const pub = await open('pub', 'pub');
    const sub = await open('sub', 'sub');
    if (c.gstreamer) {
      // The viewer first, then webrtcbin publishes for 12 s (it DELETEs its resource at the end).
      const viewer = B.evaluate(sub, joinRoom, { url: wsUrl, token: mintToken({ identity: 'viewer', room }), publish: false }, 'the WebSocket viewer joins and shows a frame', 60_000);
      await waitUntil(() => B.evaluate(sub, () => Boolean(/** @type {any} */ (window).client), undefined, 'viewer joined'), 15_000, 'the viewer joined', 50);
      const report = path.join(OUT, `${name}-gstreamer-report.json`);
      const startedAt = Date.now();
      const gst = startProcess(OUT, `${name}-gstreamer`, 'ip', [
        'netns', 'exec', topo.pub, gstPython, path.join(REPO, 'interop/gstreamer/client.py'),
        '--url', `${origin}/whip`, '--token', mintToken({ identity: 'gst', room }), '--duration', '12', '--report', report,
        '--window-start', String(startedAt), '--window-end', String(startedAt + 12_000),
      ], { SSL_CERT_FILE: tls.ca });
      const seen = await Promise.race([
        viewer,
        gst.exited.then(async () => {
          await new Promise((res) => setTimeout(res, 1000));
          const g = fs.existsSync(report) ? fs.readFileSync(report, 'utf8') : '(no report)';
          throw new Error(`the GStreamer publisher ended before the viewer saw a frame: ${g.slice(0, 1500)}`);
        }),
      ]);
      r.ttffMs = Math.round(seen.ttffMs);
      r.gstStartToViewerMs = seen.firstFrameAt - startedAt;
      r.sub = await decoding(sub, 'the WebSocket viewer');
      r.pub = null;
      await withTimeout(gst.exited, 60_000, 'the GStreamer publisher to finish');
      r.gst = JSON.parse(fs.readFileSync(report, 'utf8'));
    } else if (c.whip) {
      // A WebSocket viewer first, then the WHIP publisher: the time from the POST to the viewer's first frame.
      const viewer = B.evaluate(sub, joinRoom, { url: wsUrl, token: mintToken({ identity: 'viewer', room }), publish: false }, 'the WebSocket viewer joins and shows a frame', 45_000);
      await waitUntil(() => B.evaluate(sub, () => Boolean(/** @type {any} */ (window).client), undefined, 'viewer joined'), 15_000, 'the viewer joined', 50);
      const published = await B.evaluate(pub, whipPublish, { token: mintToken({ identity: 'whip-pub', room }) }, 'WHIP publish');
      const seen = await viewer;
      r.whip = { link: published.link, location: published.location };
      r.publishToViewerMs = seen.firstFrameAt - published.postedAt;
      r.sub = await decoding(sub, 'the WebSocket viewer');
      r.pub = await B.evaluate(pub, pathNow, undefined, 'publisher stats');
      const adminToken = mintToken({ identity: 'qa-admin', room, admin: true });
      const listed = await B.evaluate(pub, participants, { room, adminToken }, 'participants');
      r.whip.listed = listed.participants?.find((/** @type {any} */ p) => p.identity === 'whip-pub') ?? null;
      // Simulcast accepted: Chrome sends every encoding only when the answer takes all three rids.
      r.whip.encodings = await waitUntil(
        async () => {
          const e = await B.evaluate(pub, sendingEncodings, undefined, 'encodings');
          return new Set(e.map((x) => x.rid)).size >= 3 ? e : null;
        },
        10_000,
        'the WHIP page sending three encodings',
      ).catch(() => B.evaluate(pub, sendingEncodings, undefined, 'encodings'));
      // WHEP: a fetch-only player in a second page of the subscriber's namespace.
      const player = await open('sub', 'whep');
      const played = await B.evaluate(player, whepPlay, { token: mintToken({ identity: 'whep-viewer', room }), participant: 'whip-pub' }, 'WHEP play', 45_000);
      r.whepTtffMs = Math.round(played.ttffMs);
      r.whep = await decoding(player, 'the WHEP player');
      // A second WHEP player capped at the quarter layer (`layer=q`): the server has the layers apart.
      const small = await open('sub', 'whep-q');
      await B.evaluate(small, whepPlay, { token: mintToken({ identity: 'whep-q', room }), participant: 'whip-pub', layer: 'q' }, 'WHEP play, layer q', 45_000);
      await decoding(small, 'the WHEP player of layer q');
      r.whepQWidth = await B.evaluate(small, decodedWidth, undefined, 'width');
      r.whip.deleteStatus = await B.evaluate(pub, whipDelete, undefined, 'WHIP DELETE');
      r.whip.goneAfterDelete = await waitUntil(
        async () => {
          const l = await B.evaluate(sub, participants, { room, adminToken }, 'participants');
          return l.participants && !l.participants.some((/** @type {any} */ p) => p.identity === 'whip-pub');
        },
        10_000,
        'the WHIP publisher gone after DELETE',
      ).catch(() => false);
      r.ttffMs = Math.round(seen.ttffMs);
    } else {
      await B.evaluate(pub, joinRoom, { url: wsUrl, token: mintToken({ identity: 'pub', room }), publish: true }, 'publisher joins');
      const seen = await B.evaluate(
        sub,
        joinRoom,
        { url: wsUrl, token: mintToken({ identity: 'sub', room }), publish: false, rtc: c.sub ?? {} },
        'subscriber joins and shows a frame',
        45_000,
      );
      r.ttffMs = Math.round(seen.ttffMs);
      r.sub = await decoding(sub, 'the subscriber');
      r.pub = await B.evaluate(pub, pathNow, undefined, 'publisher stats');
    }
    r.dropped = { pub: firewallDropped(topo.pub), sub: firewallDropped(topo.sub) };
    if (holdS > 0 && !c.whip && !c.gstreamer) {
      const m0 = await B.evaluate(pub, serverCounters, undefined, 'metrics');
      const c0 = cpuSeconds(courierPid);
      await new Promise((res) => setTimeout(res, holdS * 1000));
      const m1 = await B.evaluate(pub, serverCounters, undefined, 'metrics');
      const c1 = cpuSeconds(courierPid);
      const out = m1.courier_rtp_packets_out_total - m0.courier_rtp_packets_out_total;
      const inn = m1.courier_rtp_packets_in_total - m0.courier_rtp_packets_in_total;
      r.cpu = { seconds: holdS, cpuS: c1 - c0, packetsOut: out, packetsIn: inn, usPerPacketOut: out > 0 ? Math.round(((c1 - c0) * 1e6) / out) : null };
    }
    return r;
  } finally {
    await Promise.all(opened.map((o) => o.ctx.close().catch(() => {})));
    unblock(topo.pub);
    unblock(topo.sub);
  }
}

/**
 * What is wrong with one page's path (empty: nothing).
 * @param {string} who
 * @param {any} path
 * @param {PathExpect} want
 */
function pathProblems(who, path, want) {
  const l = path?.local;
  if (!l) return [`${who}: no selected candidate pair`];
  /** @type {string[]} */ const out = [];
  if (l.protocol !== want.protocol) out.push(`${who}: media over ${l.protocol}, want ${want.protocol}`);
  if (!want.local.includes(l.candidateType)) out.push(`${who}: local candidate ${l.candidateType}, want ${want.local.join(' or ')}`);
  if (want.relayProtocol && l.relayProtocol !== want.relayProtocol) out.push(`${who}: relayed over ${l.relayProtocol}, want ${want.relayProtocol}`);
  const rc = path?.remote;
  if (!rc || !want.remote.includes(rc.candidateType)) out.push(`${who}: remote candidate ${rc?.candidateType}, want ${want.remote.join(' or ')}`);
  return out;
}

/**
 * What is wrong with a case's result (empty: nothing).
 * @param {any} r
 */
function problemsOf(r) {
  const c = CASES[r.case];
  /** @type {string[]} */ const out = [...(c.expect.pub ? pathProblems('pub', r.pub, c.expect.pub) : []), ...pathProblems('sub', r.sub, c.expect.sub)];
  if (c.gstreamer) {
    if (r.gst?.errors?.length) out.push(`GStreamer: ${r.gst.errors.join('; ')}`);
    if (!r.gst?.connected_ms) out.push('GStreamer: webrtcbin never connected');
    if (!(r.gst?.notes ?? []).some((/** @type {string} */ n) => n.includes('WHIP DELETE answered 200'))) out.push(`GStreamer: no DELETE answered 200 (${JSON.stringify(r.gst?.notes)})`);
  }
  for (const who of /** @type {const} */ (['pub', 'sub'])) {
    if (c.firewall[who] && !(r.dropped[who] > 0)) out.push(`${who}: the firewall dropped nothing (was it in place?)`);
  }
  if (c.whip) {
    out.push(...pathProblems('whep', r.whep, HOST_UDP));
    if (!/rel="ice-server"/.test(r.whip.link ?? '')) out.push(`WHIP: no ICE server in the Link header (${r.whip.link})`);
    const video = (r.whip.listed?.tracks ?? []).filter((/** @type {any} */ t) => t.kind === 'video');
    if (!video.length) out.push(`WHIP: the admin API lists no video track of the publisher (${JSON.stringify(r.whip.listed)})`);
    const rids = new Set((r.whip.encodings ?? []).map((/** @type {any} */ e) => e.rid));
    if (!(rids.has('q') && rids.has('h') && rids.has('f'))) out.push(`WHIP: the page does not send all three encodings (${JSON.stringify(r.whip.encodings)})`);
    if (!(r.whepQWidth > 0 && r.whepQWidth <= 320)) out.push(`WHEP with layer=q decoded ${r.whepQWidth} px wide, want the quarter layer (≤ 320)`);
    if (r.whip.deleteStatus !== 200) out.push(`WHIP: DELETE answered ${r.whip.deleteStatus}, want 200`);
    if (!r.whip.goneAfterDelete) out.push('WHIP: the publisher still listed 10 s after DELETE');
  }
  return out;
}

/** A selected path in words: `udp host`, `tcp prflx`, `udp relay/tls`. @param {any} l */
const pathName = (l) => (l ? `${l.protocol} ${l.candidateType}${l.relayProtocol ? `/${l.relayProtocol}` : ''}` : '?');

async function main() {
  log(`namespaces ${topo.pub}, ${topo.srv}, ${topo.sub}; server ${topo.addr.server}; artifacts in ${OUT}`);
  topo.create();
  tls = makeCertificate(scratch, topo.addr.server);
  if (caseNames.some((n) => CASES[n].gstreamer)) {
    const out = execFileSync('bash', [path.join(REPO, 'interop/gstreamer/setup.sh')], { stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000 });
    gstPython = out.toString().trim().split('\n').pop() ?? '';
  }
  const courier = startProcess(OUT, 'courier', 'ip', [
    'netns', 'exec', topo.srv, COURIER_BIN, 'serve',
    '--http-addr', `${topo.addr.server}:${HTTP_PORT}`,
    '--udp-addr', `${topo.addr.server}:${UDP_PORT}`,
    '--keys', `${API_KEY}:${API_SECRET}`,
    '--web-root', path.join(REPO, 'web-demo'),
    '--tls-cert', tls.cert,
    '--tls-key', tls.key,
    // The built-in TURN server: UDP and TCP on 3478, TLS on 5349 with the same certificate.
    '--turn',
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
        log(`  ${name}: first frame after ${r.ttffMs} ms${r.gstStartToViewerMs != null ? ` (${r.gstStartToViewerMs} ms after starting GStreamer)` : ''}${r.publishToViewerMs != null ? ` (WHIP POST to the viewer's first frame ${r.publishToViewerMs} ms, WHEP ${r.whepTtffMs} ms)` : ''}; subscriber over ${pathName(r.sub?.local)}, publisher over ${pathName(r.pub?.local)}; firewalls dropped pub ${r.dropped.pub}, sub ${r.dropped.sub}${r.cpu ? `; courier ${r.cpu.usPerPacketOut} µs CPU per RTP packet out (${r.cpu.packetsOut} out, ${r.cpu.packetsIn} in, ${r.cpu.cpuS.toFixed(2)} s CPU in ${holdS} s)` : ''}${r.problems.length ? `; PROBLEMS: ${r.problems.join('; ')}` : ''}`);
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
      return `| ${CASES[name].label} | ${ok.length}/${rs.length} | ${med} ms (${t[0]}–${t[t.length - 1]}) | ${pathName(r.sub?.local)} | ${pathName(r.pub?.local)} | ${us.length ? `${us[Math.floor((us.length - 1) / 2)]} µs` : '—'} |`;
    }),
  ].join('\n');
  const whip = results.filter((r) => r.publishToViewerMs != null);
  const median = (/** @type {number[]} */ xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const whipTable = whip.length
    ? `\n\n| WHIP runs | POST → first frame at a WebSocket viewer, median (min–max) | WHEP POST → first frame, median (min–max) |\n|---|---|---|\n| ${whip.length} | ${median(whip.map((r) => r.publishToViewerMs))} ms (${Math.min(...whip.map((r) => r.publishToViewerMs))}–${Math.max(...whip.map((r) => r.publishToViewerMs))}) | ${median(whip.map((r) => r.whepTtffMs))} ms (${Math.min(...whip.map((r) => r.whepTtffMs))}–${Math.max(...whip.map((r) => r.whepTtffMs))}) |`
    : '';
  fs.writeFileSync(path.join(OUT, 'report.md'), `${table}${whipTable}\n`);
  console.log(`\n${table}${whipTable}\n`);
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
