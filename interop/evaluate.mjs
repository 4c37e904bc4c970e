// The interop matrix's verdicts (interop/README.md), kept pure so evaluate.test.mjs can check them: the collected
// client reports and the admin API's bandwidth-estimate polls in, per-stack and per-cell verdicts out, plus the
// docs/interop.md text. No I/O here; run.mjs gathers the input and writes the output.

/** Stacks that negotiate TWCC, so the server must have a bandwidth estimate for them. */
export const TWCC_STACKS = ['chromium', 'webrtc-rs', 'pion'];
export const STACKS = ['chromium', 'webrtc-rs', 'pion', 'aiortc', 'gstreamer'];
export const KINDS = ['video', 'audio'];
/** A subscriber's window units may differ from the publisher's by this fraction. */
export const TOLERANCE = 0.01;

/**
 * @typedef {object} StackRun
 * @property {boolean} available          false: no client for it (setup script missing) — not a failure
 * @property {string} [reason]             why not available, or setup error
 * @property {boolean} [setup_failed]
 * @property {number|null} [exit_code]
 * @property {boolean} [timed_out]
 * @property {any} [report]                the client's report (contract JSON), or null
 *
 * @typedef {object} Input
 * @property {Record<string, StackRun>} stacks
 * @property {{start_ms: number, end_ms: number}} window
 * @property {{at_ms: number, participants: {id: string, identity: string, bandwidth_estimate_bps: number|null}[]}[]} bwe_polls
 * @property {Record<string, number>} [udp_drops]   per stack (and courier): datagrams its own UDP sockets dropped in
 *                                                 the window (receive buffer full); shown with a short cell, never
 *                                                 an excuse for one
 */

/** The participant's estimate in a poll, matched by id, else by identity (= stack name). */
function estimateIn(poll, participantId, identity) {
  const p =
    poll.participants.find((x) => participantId && x.id === participantId) ??
    poll.participants.find((x) => x.identity === identity);
  return p ? p.bandwidth_estimate_bps ?? null : undefined;
}

/**
 * Whether a client stayed connected for the whole run: it reached `connected`, never left it before the window ended
 * (its own leave comes after), and the session did not end early.
 * @returns {{ok: boolean, why: string[]}}
 */
export function connectedWholeRun(run, window) {
  const why = [];
  const r = run.report;
  if (!r) return { ok: false, why: ['no report'] };
  if (r.closed_early != null) why.push(`closed early: ${r.closed_early}`);
  const states = Array.isArray(r.states) ? r.states : [];
  const firstUp = states.findIndex(([, s]) => s === 'connected');
  if (firstUp < 0 || r.connected_ms == null) why.push('never connected');
  else {
    for (const [at, s] of states.slice(firstUp + 1)) {
      if (s === 'connected') continue;
      if ((s === 'closed' || s === 'ice-closed') && at >= window.end_ms) continue; // its own leave (Pion records both)
      why.push(`left connected: ${s} at ${at}${at < window.end_ms ? ' (before the window ended)' : ''}`);
    }
    if (r.connected_ms > window.start_ms) why.push('connected only after the window started');
  }
  if (run.timed_out) why.push('did not exit in time (killed)');
  else if (run.exit_code != null && run.exit_code !== 0) why.push(`exit code ${run.exit_code}`);
  return { ok: why.length === 0, why };
}

/**
 * @param {Input} input
 */
export function evaluate(input) {
  const names = Object.keys(input.stacks);
  const pollsInWindow = input.bwe_polls.filter((p) => p.at_ms >= input.window.start_ms && p.at_ms <= input.window.end_ms + 1000);
  /** @type {Record<string, any>} */
  const stacks = {};
  const failures = [];
  for (const name of names) {
    const run = input.stacks[name];
    if (!run.available) {
      stacks[name] = { available: false, reason: run.reason ?? 'not available', ok: !run.setup_failed, why: run.setup_failed ? [run.reason] : [] };
      if (run.setup_failed) failures.push(`${name}: setup failed: ${run.reason}`);
      continue;
    }
    const r = run.report;
    const connected = connectedWholeRun(run, input.window);
    const pid = r?.participant_id ?? null;
    const estimates = pollsInWindow.map((p) => estimateIn(p, pid, name)).filter((e) => e !== undefined);
    const atEnd = estimates.length ? estimates[estimates.length - 1] : null;
    const seen = estimates.filter((e) => e != null);
    const twcc = TWCC_STACKS.includes(name);
    // Time to first frame: per received video track, from when both ends were in the room (the later join) to its
    // first frame; the worst over the tracks. Counting from the subscriber's own join alone would charge it with
    // the slowest publisher's start-up (a browser launching).
    let ttff = null;
    if (r && Array.isArray(r.received) && r.received.length && r.joined_ms != null) {
      const joinedOf = (pid) => Object.values(input.stacks).find((s) => s.report?.participant_id === pid)?.report?.joined_ms;
      const t = r.received
        .filter((x) => x.kind === 'video')
        .map((x) => (x.first_ms == null ? null : x.first_ms - Math.max(r.joined_ms, joinedOf(x.participant_id) ?? r.joined_ms)));
      ttff = t.length === 0 || t.includes(null) ? null : Math.max(...t);
    }
    const why = [...connected.why];
    if (twcc && atEnd == null) why.push(`no bandwidth estimate at window end (seen in ${seen.length}/${estimates.length} polls)`);
    for (const e of r?.errors ?? []) why.push(`client error: ${e}`);
    stacks[name] = {
      available: true,
      version: r?.stack_version ?? null,
      participant_id: pid,
      connected_whole_run: connected.ok,
      bwe_required: twcc,
      bwe_at_window_end_bps: atEnd ?? null,
      bwe_polls_with_estimate: seen.length,
      bwe_polls: estimates.length,
      time_to_first_frame_ms: ttff,
      udp_drops_in_window: input.udp_drops?.[name] ?? null,
      ok: connected.ok && (!twcc || atEnd != null),
      why,
    };
    if (!stacks[name].ok) failures.push(`${name}: ${why.join('; ')}`);
  }
  /** @type {any[]} */
  const cells = [];
  for (const pub of names) {
    for (const sub of names) {
      if (pub === sub) continue;
      const pr = input.stacks[pub];
      const sr = input.stacks[sub];
      for (const kind of KINDS) {
        const cell = { publisher: pub, subscriber: sub, kind, sent: null, received: null, ok: null, why: null };
        if (!pr.available || !sr.available) {
          cell.why = 'not available';
          cells.push(cell);
          continue;
        }
        const sent = (pr.report?.sent ?? []).find((s) => s.kind === kind);
        if (!sent) {
          cell.ok = false;
          cell.why = `${pub} reports no ${kind} track sent`;
        } else {
          cell.sent = sent.window;
          const recv =
            (sr.report?.received ?? []).find((x) => sent.track_id && x.track_id === sent.track_id) ??
            (sr.report?.received ?? []).find((x) => x.kind === kind && x.participant_id && x.participant_id === pr.report?.participant_id);
          cell.received = recv ? recv.window : 0;
          if (!(sent.window > 0)) {
            cell.ok = false;
            cell.why = `${pub} sent no ${kind} in the window`;
          } else if (!recv) {
            cell.ok = false;
            cell.why = `${sub} did not receive ${pub}'s ${kind} (${sent.track_id ?? 'no track id'})`;
          } else {
            cell.ok = Math.abs(recv.window - sent.window) <= TOLERANCE * sent.window;
            if (!cell.ok) {
              cell.why = `${sub} received ${recv.window} of ${sent.window} ${sent.units ?? 'units'} (more than ${TOLERANCE * 100} % off)`;
              const drops = input.udp_drops?.[sub];
              if (drops > 0) cell.why += `; ${sub}'s own UDP sockets dropped ${drops} datagrams in the window (not read in time)`;
            }
          }
        }
        if (cell.ok === false) failures.push(`${pub} → ${sub} ${kind}: ${cell.why}`);
        cells.push(cell);
      }
    }
  }
  return { ok: failures.length === 0, stacks, cells, failures };
}

const fmtBps = (b) => (b == null ? 'none' : b >= 1e6 ? `${(b / 1e6).toFixed(2)} Mbit/s` : `${Math.round(b / 1e3)} kbit/s`);

/**
 * docs/interop.md from a verdict.
 * @param {ReturnType<typeof evaluate>} verdict
 * @param {{date: string, window_secs: number, courier_version: string}} meta
 */
export function renderDocs(verdict, meta) {
  const names = Object.keys(verdict.stacks);
  const lines = [];
  lines.push('<!-- Generated by interop/run.sh --write-docs (interop/run.mjs, evaluate.mjs): the interop matrix\'s latest table. Do not edit by hand. -->');
  lines.push('# Interop matrix', '');
  lines.push(
    'Generated by `interop/run.sh --write-docs` (see `interop/README.md`): every stack joins one Courier room in a network',
    'namespace, publishes Opus audio and VP8 video, and receives every other stack. A cell is the subscriber\'s units',
    'in the measuring window over the publisher\'s (video frames, audio packets); ✓ when within 1 %.',
    '',
    `Run: ${meta.date}, ${meta.window_secs} s window, ${meta.courier_version}. Overall: ${verdict.ok ? 'pass' : 'FAIL'}.`,
    '',
  );
  lines.push('Rows publish, columns subscribe.', '');
  lines.push(`| publisher ↓ / subscriber → | ${names.join(' | ')} |`);
  lines.push(`|---|${names.map(() => '---').join('|')}|`);
  for (const pub of names) {
    const row = names.map((sub) => {
      if (pub === sub) return '—';
      const cs = verdict.cells.filter((c) => c.publisher === pub && c.subscriber === sub);
      if (cs.every((c) => c.why === 'not available')) return 'not available';
      return cs
        .map((c) => `${c.kind} ${c.received ?? '–'}/${c.sent ?? '–'} ${c.ok ? '✓' : '✗'}`)
        .join(' · ');
    });
    lines.push(`| **${pub}** | ${row.join(' | ')} |`);
  }
  lines.push('', '| stack | version | time to first frame (worst, from both joined) | BWE on (estimate at window end) | connected whole run |');
  lines.push('|---|---|---|---|---|');
  for (const name of names) {
    const s = verdict.stacks[name];
    if (!s.available) {
      lines.push(`| ${name} | ${s.reason} | | | |`);
      continue;
    }
    const bwe = s.bwe_at_window_end_bps != null ? `yes, ${fmtBps(s.bwe_at_window_end_bps)}` : s.bwe_required ? 'no ✗' : 'no';
    lines.push(
      `| ${name} | ${s.version ?? '?'} | ${s.time_to_first_frame_ms == null ? '–' : `${s.time_to_first_frame_ms} ms`} | ${bwe} | ${s.connected_whole_run ? 'yes ✓' : 'no ✗'} |`,
    );
  }
  if (verdict.failures.length) {
    lines.push('', 'Failures:', '');
    for (const f of verdict.failures) lines.push(`- ${f}`);
  }
  lines.push('');
  return lines.join('\n');
}
