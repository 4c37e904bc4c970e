// The simulated network: three network namespaces made by this suite and removed by it, and the impairment of the
// subscriber's downlink (nftables for loss, tc tbf through an ifb device for capacity).
//
//     pub ns                     srv ns (router + courier)                      sub ns
//   10.78.N.2 ── veth ── 10.78.N.1 | 10.78.N.9 (lo: courier) | 10.78.N.5 ── veth ── 10.78.N.6
//                                  | 10.78.N.10, .11 (lo: the two nodes of the spanning mode) |
//                                                                              ^ impairment on what arrives here
//
// Courier runs in the middle namespace, which also forwards between the two hosts (ip_forward is set in that
// namespace only, never on the machine): the direct P2P run then crosses exactly the same two links and the same
// impairment as the relayed one, and nothing of the host's own network is touched. Every address is inside
// namespaces this suite creates. Needs root (CAP_NET_ADMIN).

import { execFileSync } from 'node:child_process';

/** Runs a command, failing with its stderr. @param {string} bin @param {string[]} args @param {string} [input] */
export function run(bin, args, input) {
  try {
    return execFileSync(bin, args, { input, stdio: ['pipe', 'pipe', 'pipe'], timeout: 15_000 }).toString();
  } catch (e) {
    const err = /** @type {any} */ (e);
    throw new Error(`${bin} ${args.join(' ')}: ${err.stderr?.toString().trim() || err.message}`);
  }
}

/** Like run(), but a failure is ignored (cleanup). @param {string} bin @param {string[]} args */
function tryRun(bin, args) {
  try {
    run(bin, args);
  } catch {
    /* already gone */
  }
}

/**
 * The three namespaces. `subnet` is the third octet of 10.78.X.0/28 (one per concurrent run; derived from the pid by
 * default so that two runs on one machine do not collide).
 */
export class Topology {
  /** @param {{prefix?: string, subnet?: number}} [o] */
  constructor({ prefix = `cq${process.pid % 100000}`, subnet = (process.pid % 250) + 1 } = {}) {
    this.pub = `${prefix}-pub`;
    this.srv = `${prefix}-srv`;
    this.sub = `${prefix}-sub`;
    const a = (/** @type {number} */ last) => `10.78.${subnet}.${last}`;
    // `spanA`, `spanB`: the two nodes of the spanning mode (a cluster of two), beside the single `server`.
    this.addr = { srvPub: a(1), pub: a(2), srvSub: a(5), sub: a(6), server: a(9), spanA: a(10), spanB: a(11) };
    /** The subscriber's interface towards the server (where the impairment acts). */
    // Not `veth…`: libnice (GStreamer's ICE) skips interfaces named like virtual ones (docker*, veth*, virbr*,
    // vnet*), and would gather no candidate in a client namespace.
    this.upIf = 'uplink';
    this.subIf = this.upIf;
    this.ifb = 'ifb-down';
    this.created = false;
    /** What capacity qdiscs replaced since create() had dropped. */
    this.capacityDropsBefore = 0;
    this.capacityDropsBefore = 0;
  }

  /** Creates everything; leftovers of the same names (a killed run) are removed first. */
  create() {
    this.destroy();
    this.created = true;
    for (const ns of [this.pub, this.srv, this.sub]) {
      run('ip', ['netns', 'add', ns]);
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    // pub <-> srv
    run('ip', ['-n', this.srv, 'link', 'add', 'to-pub', 'type', 'veth', 'peer', 'name', this.upIf, 'netns', this.pub]);
    // srv <-> sub
    run('ip', ['-n', this.srv, 'link', 'add', 'to-sub', 'type', 'veth', 'peer', 'name', this.subIf, 'netns', this.sub]);
    run('ip', ['-n', this.srv, 'addr', 'add', `${this.addr.srvPub}/30`, 'dev', 'to-pub']);
    run('ip', ['-n', this.srv, 'addr', 'add', `${this.addr.srvSub}/30`, 'dev', 'to-sub']);
    for (const addr of [this.addr.server, this.addr.spanA, this.addr.spanB]) {
      run('ip', ['-n', this.srv, 'addr', 'add', `${addr}/32`, 'dev', 'lo']);
    }
    run('ip', ['-n', this.pub, 'addr', 'add', `${this.addr.pub}/30`, 'dev', this.upIf]);
    run('ip', ['-n', this.sub, 'addr', 'add', `${this.addr.sub}/30`, 'dev', this.subIf]);
    for (const [ns, dev] of [
      [this.srv, 'to-pub'],
      [this.srv, 'to-sub'],
      [this.pub, this.upIf],
      [this.sub, this.subIf],
    ]) {
      run('ip', ['-n', ns, 'link', 'set', dev, 'up']);
    }
    run('ip', ['-n', this.pub, 'route', 'add', 'default', 'via', this.addr.srvPub]);
    run('ip', ['-n', this.sub, 'route', 'add', 'default', 'via', this.addr.srvSub]);
    // Forwarding inside the middle namespace only (a per-namespace sysctl).
    run('ip', ['netns', 'exec', this.srv, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    // The subscriber's ingress passes an ifb device, where a tbf qdisc can cap its capacity (there is no netem in
    // every kernel; tbf, ingress and mirred are in this one). Without a cap the ifb has the default qdisc.
    run('ip', ['-n', this.sub, 'link', 'add', this.ifb, 'type', 'ifb']);
    run('ip', ['-n', this.sub, 'link', 'set', this.ifb, 'up']);
    this.nsExec(this.sub, 'tc', ['qdisc', 'add', 'dev', this.subIf, 'handle', 'ffff:', 'ingress']);
    this.nsExec(this.sub, 'tc', [
      'filter', 'add', 'dev', this.subIf, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0',
      'action', 'mirred', 'egress', 'redirect', 'dev', this.ifb,
    ]);
    this.clearImpairment();
  }

  /** Removes the namespaces (and with them every interface, rule and qdisc). Safe to call twice. */
  destroy() {
    for (const ns of [this.pub, this.srv, this.sub]) tryRun('ip', ['netns', 'del', ns]);
    this.created = false;
  }

  /** @param {string} ns @param {string} bin @param {string[]} args @param {string} [input] */
  nsExec(ns, bin, args, input) {
    return run('ip', ['netns', 'exec', ns, bin, ...args], input);
  }

  /**
   * The subscriber's downlink impairment; replaces the previous one. Only what arrives at the subscriber is
   * impaired: its feedback (RTCP, TWCC, NACK) leaves untouched.
   * @param {Impairment} imp
   */
  setImpairment(imp) {
    const iif = this.subIf;
    /** @type {string[]} */
    const rules = [];
    if (imp.kind === 'random' && imp.lossPct > 0) {
      // Per datagram, independently: numgen random mod 10000 < pct × 100.
      rules.push(`iifname "${iif}" meta l4proto udp numgen random mod 10000 < ${Math.round(imp.lossPct * 100)} counter name dropped drop`);
    } else if (imp.kind === 'burst') {
      // Gilbert–Elliott-like, from nft alone: in the good state each datagram starts a bad period with probability
      // `startPer10k`/10000; the bad state is an element of the set `bad` that expires after `badMs`, and every
      // datagram that arrives while it is there is dropped.
      rules.push(`iifname "${iif}" meta l4proto udp meta l4proto @bad counter name dropped drop`);
      rules.push(
        `iifname "${iif}" meta l4proto udp numgen random mod 10000 < ${imp.startPer10k} update @bad { meta l4proto timeout ${imp.badMs}ms } counter name dropped drop`,
      );
    }
    const ruleset = `
table inet courier_qa {
  counter udp_in {}
  counter dropped {}
  set bad { type inet_proto; flags timeout; }
  chain input {
    type filter hook input priority -10; policy accept;
    iifname "${iif}" meta l4proto udp counter name udp_in
${rules.map((r) => `    ${r}`).join('\n')}
  }
}
`;
    // Flush and replace atomically.
    try {
      this.nsExec(this.sub, 'nft', ['delete', 'table', 'inet', 'courier_qa']);
    } catch {
      /* first time */
    }
    this.nsExec(this.sub, 'nft', ['-f', '-'], ruleset);
    this.setCapacity(imp.kind === 'capacity' ? imp.steps[0].kbps : null);
  }

  clearImpairment() {
    this.setImpairment({ kind: 'random', lossPct: 0 });
  }

  /**
   * Caps the subscriber's downlink (all of it, TCP included, as a real access link would) with a token bucket and a
   * queue of `queueMs` at that rate; null lifts the cap.
   * @param {number|null} kbps
   * @param {number} [queueMs]
   */
  setCapacity(kbps, queueMs = 150) {
    const dev = this.ifb;
    // The qdisc is replaced, and its counters with it: keep what it dropped.
    this.capacityDropsBefore += this.qdiscDrops();
    tryRun('ip', ['netns', 'exec', this.sub, 'tc', 'qdisc', 'del', 'dev', dev, 'root']);
    if (kbps == null) return;
    // burst: at least one MTU and 4 ms at the rate; the queue (latency) is what a delay-based estimator sees grow.
    const burst = Math.max(3000, Math.round((kbps * 1000 * 0.004) / 8));
    this.nsExec(this.sub, 'tc', ['qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${kbps}kbit`, 'burst', `${burst}`, 'latency', `${queueMs}ms`]);
  }

  /** Datagrams (UDP) that reached the subscriber's interface and those the rules dropped, so far. */
  counters() {
    const out = { udpIn: 0, dropped: 0 };
    try {
      const j = JSON.parse(this.nsExec(this.sub, 'nft', ['-j', 'list', 'counters', 'table', 'inet', 'courier_qa']));
      for (const item of j.nftables ?? []) {
        const c = item.counter;
        if (!c) continue;
        if (c.name === 'udp_in') out.udpIn = c.packets;
        if (c.name === 'dropped') out.dropped = c.packets;
      }
    } catch {
      /* no table */
    }
    return out;
  }

  /** Packets the capacity caps dropped so far (tbf's queue overflow), over every qdisc set since create(). */
  capacityDrops() {
    return this.capacityDropsBefore + this.qdiscDrops();
  }

  /** Drops of the tbf qdisc now in place. */
  qdiscDrops() {
    try {
      const s = this.nsExec(this.sub, 'tc', ['-s', 'qdisc', 'show', 'dev', this.ifb]);
      const m = s.match(/tbf[\s\S]*?dropped (\d+)/);
      return m ? Number(m[1]) : 0;
    } catch {
      return 0;
    }
  }
}

/**
 * @typedef {{kind: 'random', lossPct: number}
 *   | {kind: 'burst', startPer10k: number, badMs: number}
 *   | {kind: 'capacity', steps: {atS: number, kbps: number}[]}} Impairment
 */
