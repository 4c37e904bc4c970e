#!/usr/bin/env node
// The interop matrix's orchestrator (interop/README.md; started by interop/run.sh, as root). Outside the namespace it
// sets every stack's client up (a stack whose setup script is missing is "not available"), creates the namespace,
// runs itself inside it (`--inner`: courier, tokens, every client at once, the admin API's bandwidth estimates every
// 5 s), then evaluates (evaluate.mjs), writes target/interop/results.json and, with --write-docs, docs/interop.md.
// Exits 1 when a cell or stack check fails. Every wait is bounded; children are killed and the namespace deleted at
// exit.
//
//   interop/run.sh [--window-secs 60] [--ci] [--write-docs] [--stacks chromium,webrtc-rs,…] [--stack-dir NAME=DIR]

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { STACKS, evaluate, renderDocs } from './evaluate.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const OUT = path.join(REPO, 'target', 'interop');
const NS = 'courier-interop';
const IP = '10.203.0.1';
const HTTP_PORT = 7880;
const UDP_PORT = 7882;
const LEAD_MS = 15_000; // window start after the clients are started
const TAIL_MS = 5_000; // clients stay after the window end (a client behind by seconds still gets its units)
const POLL_MS = 5_000;

const log = (...a) => console.log(`[interop ${new Date().toISOString().slice(11, 23)}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function parseArgs(argv) {
  const o = { windowSecs: 60, writeDocs: false, stacks: STACKS, stackDirs: {}, inner: false, plan: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--window-secs') o.windowSecs = Number(argv[++i]);
    else if (a === '--ci') o.windowSecs = 60; // the CI preset: the default, spelled out
    else if (a === '--write-docs') o.writeDocs = true;
    else if (a === '--stacks') o.stacks = argv[++i].split(',').filter(Boolean);
    else if (a === '--stack-dir') {
      const [k, v] = argv[++i].split('=');
      o.stackDirs[k] = path.resolve(v);
    } else if (a === '--inner') o.inner = true;
    else if (a === '--plan') o.plan = argv[++i];
    else throw new Error(`unknown argument ${a}`);
  }
  if (!(o.windowSecs > 0)) throw new Error('--window-secs must be positive');
  for (const s of o.stacks) if (!STACKS.includes(s)) throw new Error(`unknown stack ${s} (known: ${STACKS.join(', ')})`);
  return o;
}

// ------------------------------------------------------------------ children (always killed)

/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();

/** Spawns in its own process group, output to `logFile`. */
function start(cmd, args, logFile, env = {}) {
  const fd = logFile ? fs.openSync(logFile, 'a') : null;
  const stdio = fd == null ? ['ignore', 'inherit', 'inherit'] : ['ignore', fd, fd];
  const child = spawn(cmd, args, { stdio, detached: true, env: { ...process.env, ...env } });
  if (fd != null) fs.closeSync(fd);
  children.add(child);
  child.exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? (signal ? 128 : 1));
    }),
  );
  child.on('error', (e) => (logFile ? fs.appendFileSync(logFile, `spawn failed: ${e.message}\n`) : log(`spawn failed: ${e.message}`)));
  return child;
}

function killGroup(child, signal = 'SIGKILL') {
  try {
    process.kill(-child.pid, signal);
  } catch {
    /* gone */
  }
}

function killAll() {
  for (const c of children) killGroup(c);
}

/** Waits for a child's exit, up to `ms`; then kills it. Resolves to {code, timedOut}. */
async function waitExit(child, ms) {
  let timer;
  const code = await Promise.race([child.exited, new Promise((r) => (timer = setTimeout(() => r(null), ms)))]);
  clearTimeout(timer);
  if (code !== null) return { code, timedOut: false };
  killGroup(child, 'SIGTERM');
  await Promise.race([child.exited, sleep(3000)]);
  killGroup(child);
  return { code: null, timedOut: true };
}

/** Runs a setup command to completion (bounded); the last non-empty stdout line is its answer. */
function runSetup(cmd, args, logFile, timeoutMs) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 << 20 });
  fs.appendFileSync(logFile, `$ ${cmd} ${args.join(' ')}\n${r.stdout ?? ''}${r.stderr ?? ''}\n`);
  if (r.error) return { error: r.error.message };
  if (r.status !== 0) return { error: `${path.basename(cmd)} exited ${r.status}` };
  const line = (r.stdout ?? '').trim().split('\n').filter(Boolean).pop();
  return line ? { value: line.trim() } : { error: `${path.basename(cmd)} printed nothing` };
}

// ------------------------------------------------------------------ outer: setup, namespace, evaluate

/** How to start each stack's client: {available, reason, cmd, args} (contract flags appended later). */
function prepareStacks(o) {
  const plan = {};
  const mediaTests = path.resolve(process.env.MEDIA_TESTS_BIN || path.join(REPO, 'target/debug/media-tests'));
  const dir = (name) => o.stackDirs[name] ?? path.join(REPO, 'interop', name);
  for (const name of o.stacks) {
    const logFile = path.join(OUT, `${name}.log`);
    fs.writeFileSync(logFile, '');
    let p;
    if (name === 'webrtc-rs') {
      p = fs.existsSync(mediaTests)
        ? { available: true, cmd: mediaTests, args: ['client', '--publish', 'audio,video', '--twcc'] }
        : { available: false, reason: `not available (no ${mediaTests}; cargo build -p media-tests)` };
    } else if (name === 'chromium') {
      const client = path.join(HERE, 'chromium', 'client.mjs');
      const chromium = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
      const pw = path.join(REPO, 'web-demo', 'node_modules', 'playwright-core');
      if (!fs.existsSync(chromium)) p = { available: false, reason: `not available (no ${chromium})` };
      else if (!fs.existsSync(pw)) p = { available: false, reason: 'not available (cd web-demo && npm ci)' };
      else p = { available: true, cmd: process.execPath, args: [client] };
    } else if (name === 'pion') {
      const build = path.join(dir(name), 'build.sh');
      if (!fs.existsSync(build)) p = { available: false, reason: 'not available (no interop/pion/build.sh)' };
      else {
        log(`building pion (${build})`);
        const r = runSetup(build, [path.join(OUT, 'pion')], logFile, 600_000); // its build cache under our target/
        p = r.error ? { available: false, setup_failed: true, reason: `build failed: ${r.error}` } : { available: true, cmd: r.value, args: [] };
      }
    } else {
      const setup = path.join(dir(name), 'setup.sh');
      const client = path.join(dir(name), 'client.py');
      if (!fs.existsSync(setup) || !fs.existsSync(client)) p = { available: false, reason: `not available (no interop/${name}/setup.sh)` };
      else {
        log(`setting up ${name} (${setup})`);
        const r = runSetup(setup, [], logFile, 600_000);
        p = r.error ? { available: false, setup_failed: true, reason: `setup failed: ${r.error}` } : { available: true, cmd: r.value, args: [client] };
      }
    }
    log(`${name}: ${p.available ? `${p.cmd} ${p.args.join(' ')}` : p.reason}`);
    plan[name] = p;
  }
  return plan;
}

function ip(args, check = true) {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (check && r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
  return r;
}

function createNamespace() {
  ip(['netns', 'del', NS], false);
  ip(['netns', 'add', NS]);
  ip(['-n', NS, 'link', 'set', 'lo', 'up']);
  // A dummy interface; where the kernel has no dummy driver (containers), a veth pair with both ends in the namespace
  // does the same: ci0 is an ordinary, non-loopback interface holding the address.
  if (ip(['-n', NS, 'link', 'add', 'ci0', 'type', 'dummy'], false).status !== 0) {
    ip(['-n', NS, 'link', 'add', 'ci0', 'type', 'veth', 'peer', 'name', 'ci0-peer']);
    ip(['-n', NS, 'link', 'set', 'ci0-peer', 'up']);
    log('no dummy interface driver: ci0 is one end of a veth pair inside the namespace');
  }
  // IPv4 only: no link-local IPv6 candidates on ci0.
  spawnSync('ip', ['netns', 'exec', NS, 'sh', '-c', 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'], { timeout: 5000 });
  ip(['-n', NS, 'addr', 'add', `${IP}/24`, 'dev', 'ci0']);
  ip(['-n', NS, 'link', 'set', 'ci0', 'up']);
}

function deleteNamespace() {
  // Anything still running in it first (only ours live there).
  const pids = spawnSync('ip', ['netns', 'pids', NS], { encoding: 'utf8', timeout: 5000 }).stdout ?? '';
  for (const pid of pids.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  ip(['netns', 'del', NS], false);
}

async function outer(o) {
  if (process.getuid?.() !== 0) throw new Error('run as root (interop/run.sh): the matrix runs in a network namespace');
  fs.mkdirSync(OUT, { recursive: true });
  const courier = path.resolve(process.env.COURIER_BIN || path.join(REPO, 'target/debug/courier'));
  if (!fs.existsSync(courier)) throw new Error(`no courier binary at ${courier} (cargo build, or COURIER_BIN)`);
  const plan = { courier, window_secs: o.windowSecs, stacks: prepareStacks(o) };
  const planFile = path.join(OUT, 'plan.json');
  fs.writeFileSync(planFile, JSON.stringify(plan, null, 2));

  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    killAll();
    deleteNamespace();
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { cleanup(); process.exit(130); });

  createNamespace();
  log(`namespace ${NS} up (${IP})`);
  const rawFile = path.join(OUT, 'raw.json');
  fs.rmSync(rawFile, { force: true });
  const inner = start('ip', ['netns', 'exec', NS, process.execPath, fileURLToPath(import.meta.url), '--inner', '--plan', planFile], null);
  const budget = LEAD_MS + o.windowSecs * 1000 + TAIL_MS + 120_000;
  const { code, timedOut } = await waitExit(inner, budget);
  cleanup();
  if (timedOut || !fs.existsSync(rawFile)) throw new Error(`the run inside the namespace failed (exit ${code}${timedOut ? ', timed out' : ''})`);

  const raw = JSON.parse(fs.readFileSync(rawFile, 'utf8'));
  const verdict = evaluate(raw);
  const results = { generated: new Date().toISOString(), courier_version: raw.courier_version, window: raw.window, window_secs: o.windowSecs, ...verdict, bwe_polls: raw.bwe_polls, udp_drops: raw.udp_drops };
  fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(results, null, 2));
  const docs = renderDocs(verdict, { date: results.generated.slice(0, 16).replace('T', ' ') + ' UTC', window_secs: o.windowSecs, courier_version: raw.courier_version });
  console.log(`\n${docs}`);
  if (o.writeDocs) {
    fs.writeFileSync(path.join(REPO, 'docs', 'interop.md'), docs);
    log('wrote docs/interop.md');
  }
  log(`wrote ${path.relative(REPO, path.join(OUT, 'results.json'))}`);
  if (!verdict.ok) {
    console.log('\nFAILED:');
    for (const f of verdict.failures) console.log(`  - ${f}`);
    return 1;
  }
  console.log('\nall cells and stacks pass');
  return 0;
}

// ------------------------------------------------------------------ inner: inside the namespace

/**
 * Datagrams the kernel dropped at each process group's UDP sockets (receive buffer full: the process did not read in
 * time), from this namespace's /proc/net/udp{,6} (the last column) and each process's socket descriptors.
 * @param {Record<string, number>} groups name -> process group id (each child leads its own group)
 * @returns {Record<string, number>} name -> drops summed over the group's open UDP sockets
 */
function udpDropsByGroup(groups) {
  const dropsOf = new Map(); // socket inode -> drops
  for (const f of ['/proc/net/udp', '/proc/net/udp6']) {
    let text = '';
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length >= 13) dropsOf.set(cols[9], Number(cols[cols.length - 1]) || 0);
    }
  }
  const nameOf = new Map(Object.entries(groups).map(([n, g]) => [g, n]));
  const out = Object.fromEntries(Object.keys(groups).map((n) => [n, 0]));
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const name = nameOf.get(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]));
      if (name == null) continue;
      for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m && dropsOf.has(m[1])) out[name] += dropsOf.get(m[1]);
      }
    } catch {
      // the process or descriptor went away while we looked
    }
  }
  return out;
}

async function fetchJson(url, opts = {}, ms = 3000) {
  const res = await fetch(url, { ...opts, signal: AbortSignal.timeout(ms) });
  const body = await res.text();
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${body.slice(0, 200)}`);
  return JSON.parse(body);
}

async function inner(o) {
  const plan = JSON.parse(fs.readFileSync(o.plan, 'utf8'));
  const base = `http://${IP}:${HTTP_PORT}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'courier-interop-'));
  const courierLog = path.join(OUT, 'courier.log');
  fs.writeFileSync(courierLog, '');
  process.on('exit', () => {
    killAll();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

  const version = spawnSync(plan.courier, ['--version'], { encoding: 'utf8', timeout: 5000 }).stdout?.trim() || 'courier';
  const server = start(plan.courier, ['serve', '--dev', '--http-addr', `${IP}:${HTTP_PORT}`, '--udp-addr', `${IP}:${UDP_PORT}`, '--data-dir', dataDir], courierLog, {
    RUST_LOG: process.env.RUST_LOG || 'info',
  });
  log(`courier (${version}) starting: ${base}`);
  const tokens = {};
  const ready = Date.now() + 20_000;
  for (;;) {
    try {
      tokens._probe = (await fetchJson(`${base}/dev/token?room=interop&identity=probe`)).token;
      break;
    } catch (e) {
      if (Date.now() > ready) throw new Error(`courier not ready in 20 s: ${e.message} (see target/interop/courier.log)`);
      if (server.exitCode != null) throw new Error('courier exited (see target/interop/courier.log)');
      await sleep(200);
    }
  }
  const available = Object.entries(plan.stacks).filter(([, p]) => p.available).map(([n]) => n);
  for (const name of available) tokens[name] = (await fetchJson(`${base}/dev/token?room=interop&identity=${encodeURIComponent(name)}`)).token;
  const admin = spawnSync(plan.courier, ['token', 'create', '--room', 'interop', '--identity', 'interop-admin', '--grant', 'room_admin', '--data-dir', dataDir], { encoding: 'utf8', timeout: 10_000 });
  const adminToken = admin.stdout.trim().split('\n').pop();
  if (admin.status !== 0 || !adminToken) throw new Error(`courier token create failed: ${admin.stderr}`);

  const now = Date.now();
  const window = { start_ms: now + LEAD_MS, end_ms: now + LEAD_MS + plan.window_secs * 1000 };
  const durationS = Math.ceil((window.end_ms + TAIL_MS - now) / 1000);
  log(`window ${new Date(window.start_ms).toISOString()} → ${new Date(window.end_ms).toISOString()} (${plan.window_secs} s); clients stay ${durationS} s`);
  const running = {};
  for (const name of available) {
    const p = plan.stacks[name];
    const report = path.join(OUT, `${name}.json`);
    fs.rmSync(report, { force: true });
    const args = [...p.args, '--url', `ws://${IP}:${HTTP_PORT}/rtc`, '--token', tokens[name], '--duration', String(durationS), '--window-start', String(window.start_ms), '--window-end', String(window.end_ms), '--report', report];
    running[name] = { child: start(p.cmd, args, path.join(OUT, `${name}.log`), { RUST_LOG: process.env.CLIENT_RUST_LOG || 'info' }), report };
    log(`started ${name} (pid ${running[name].child.pid})`);
  }

  // The server's bandwidth estimate per participant, every 5 s from the window start to its end.
  const polls = [];
  const polling = (async () => {
    const times = [];
    for (let t = window.start_ms; t < window.end_ms - 1000; t += POLL_MS) times.push(t);
    times.push(window.end_ms - 300); // the estimate at window end
    for (const t of times) {
      await sleep(t - Date.now());
      const at = Date.now();
      try {
        const body = await fetchJson(`${base}/api/v1/rooms/interop/participants`, { headers: { authorization: `Bearer ${adminToken}` } });
        const participants = (body.participants ?? []).map((p) => ({ id: p.id, identity: p.identity, bandwidth_estimate_bps: p.bandwidth_estimate_bps ?? null }));
        polls.push({ at_ms: at, participants });
        log(`bwe: ${participants.map((p) => `${p.identity}=${p.bandwidth_estimate_bps == null ? 'none' : Math.round(p.bandwidth_estimate_bps / 1000) + 'k'}`).join(' ')}`);
      } catch (e) {
        polls.push({ at_ms: at, participants: [], error: e.message });
        log(`bwe poll failed: ${e.message}`);
      }
    }
  })();

  // Each process's own UDP socket drops at the window's start and end: a subscriber short of units whose socket
  // dropped datagrams did not read them in time (the kernel has them as delivered to it).
  const groups = { courier: server.pid, ...Object.fromEntries(Object.entries(running).map(([n, r]) => [n, r.child.pid])) };
  const udpDrops = {};
  const dropSampling = (async () => {
    await sleep(window.start_ms - Date.now());
    const atStart = udpDropsByGroup(groups);
    await sleep(window.end_ms - Date.now());
    const atEnd = udpDropsByGroup(groups);
    for (const n of Object.keys(groups)) udpDrops[n] = Math.max(0, atEnd[n] - atStart[n]);
    log(`UDP receive drops in the window: ${Object.entries(udpDrops).map(([n, d]) => `${n}=${d}`).join(' ')}`);
  })();

  const stacks = {};
  for (const [name, p] of Object.entries(plan.stacks)) if (!p.available) stacks[name] = { available: false, reason: p.reason, setup_failed: !!p.setup_failed };
  await Promise.all(
    Object.entries(running).map(async ([name, r]) => {
      const { code, timedOut } = await waitExit(r.child, durationS * 1000 + 45_000);
      let report = null;
      try {
        report = JSON.parse(fs.readFileSync(r.report, 'utf8'));
      } catch (e) {
        log(`${name}: no report (${e.message})`);
      }
      log(`${name} exited ${timedOut ? '(killed: timed out)' : code}`);
      stacks[name] = { available: true, exit_code: code, timed_out: timedOut, report };
    }),
  );
  await polling;
  await dropSampling;
  killGroup(server, 'SIGTERM');
  await waitExit(server, 5000);
  const ordered = Object.fromEntries(Object.keys(plan.stacks).map((n) => [n, stacks[n]]));
  fs.writeFileSync(path.join(OUT, 'raw.json'), JSON.stringify({ courier_version: version, window, bwe_polls: polls, udp_drops: udpDrops, stacks: ordered }, null, 2));
  return 0;
}

const o = parseArgs(process.argv.slice(2));
(o.inner ? inner(o) : outer(o)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`interop: ${e.stack ?? e.message}`);
    process.exit(2);
  },
);
