// From what a run recorded to its numbers, and from rows to the markdown report. Pure: no browser, no network.

/** Sum of one field over a sample's streams. @param {any[]} streams @param {string} f */
const sum = (streams, f) => streams.reduce((a, s) => a + (s[f] ?? 0), 0);

/**
 * The measured numbers of one run.
 * @param {{samples: any[], states: any[]}} rec   the subscriber page's record (200 ms samples, stream_states)
 * @param {number} t0  start of the measured window (ms since the epoch)
 * @param {number} t1  its end
 * @param {{runStart: number}} o  when the run started (stream_states from then on count for "paused")
 */
export function summarize(rec, t0, t1, { runStart }) {
  const inWin = rec.samples.filter((s) => s.t >= t0 && s.t <= t1);
  if (inWin.length < 2) return { error: `only ${inWin.length} stats samples in the measured window` };
  const a = inWin[0];
  const b = inWin[inWin.length - 1];
  const secs = (b.t - a.t) / 1000;
  const d = (/** @type {'video'|'audio'} */ k, /** @type {string} */ f) => sum(b[k], f) - sum(a[k], f);

  // Freezes by Chrome's counters; the longest one from the 200 ms steps (a freeze lasts ≥ 150 ms more than a frame
  // interval, so one step rarely closes two; if it does, their mean is what is known).
  let longestFreezeS = 0;
  // Our own view: the longest time in which framesDecoded did not move (includes a stall still going at the end).
  let longestGapS = 0;
  let lastProgress = a.t;
  for (let i = 1; i < inWin.length; i++) {
    const p = inWin[i - 1];
    const q = inWin[i];
    const dc = sum(q.video, 'freezeCount') - sum(p.video, 'freezeCount');
    const dd = sum(q.video, 'totalFreezesDuration') - sum(p.video, 'totalFreezesDuration');
    if (dc > 0) longestFreezeS = Math.max(longestFreezeS, dd / dc);
    if (sum(q.video, 'framesDecoded') > sum(p.video, 'framesDecoded')) {
      longestGapS = Math.max(longestGapS, (q.t - lastProgress) / 1000);
      lastProgress = q.t;
    }
  }
  longestGapS = Math.max(longestGapS, (b.t - lastProgress) / 1000);
  // Stalls, Chrome's counters aside (they count no pause shorter than 5 s as a freeze only once it ends, and a paused
  // stream as no freeze at all): time in runs of ≥ 0.4 s (two steps) without a decoded frame.
  let stallMs = 0;
  let gapFrom = null;
  for (let i = 1; i < inWin.length; i++) {
    const moved = sum(inWin[i].video, 'framesDecoded') > sum(inWin[i - 1].video, 'framesDecoded');
    if (!moved && gapFrom === null) gapFrom = inWin[i - 1].t;
    if ((moved || i === inWin.length - 1) && gapFrom !== null) {
      const end = moved ? inWin[i - 1].t : inWin[i].t;
      if (end - gapFrom >= 400) stallMs += end - gapFrom;
      gapFrom = null;
    }
  }

  // The width of what was decoded: samples in which frames were decoded (a stalled stream keeps its last width).
  const widths = inWin
    .filter((s, i) => i > 0 && sum(s.video, 'framesDecoded') > sum(inWin[i - 1].video, 'framesDecoded'))
    .map((s) => Math.max(0, ...s.video.map((/** @type {any} */ v) => v.frameWidth)));
  const widthCounts = new Map();
  for (const w of widths) widthCounts.set(w, (widthCounts.get(w) ?? 0) + 1);
  const widthMode = [...widthCounts.entries()].sort((x, y) => y[1] - x[1])[0]?.[0] ?? 0;

  const audioSamples = d('audio', 'totalSamplesReceived');
  const concealed = d('audio', 'concealedSamples');
  const states = rec.states.filter((s) => s.t >= runStart);
  const pausedStates = states.filter((s) => s.state === 'paused');
  return {
    seconds: round(secs, 1),
    decodedFps: round(d('video', 'framesDecoded') / secs, 2),
    freezes: d('video', 'freezeCount'),
    freezeSPerMin: round(d('video', 'totalFreezesDuration') / (secs / 60), 2),
    longestFreezeS: round(longestFreezeS, 3),
    longestDecodeGapS: round(longestGapS, 2),
    stallSPerMin: round(stallMs / 1000 / (secs / 60), 2),
    widthMode,
    widthMin: widths.length ? Math.min(...widths) : 0,
    videoPackets: d('video', 'packetsReceived'),
    videoLost: d('video', 'packetsLost'),
    nacks: d('video', 'nackCount'),
    plis: d('video', 'pliCount'),
    videoKbps: round((d('video', 'bytesReceived') * 8) / 1000 / secs, 0),
    concealedPct: audioSamples > 0 ? round((100 * concealed) / audioSamples, 2) : null,
    audioFecPackets: d('audio', 'fecPacketsReceived'),
    audioLost: d('audio', 'packetsLost'),
    pausesInRun: pausedStates.length,
    pausedInWindowS: round(pausedSeconds(states, t0, t1), 1),
  };
}

/** Seconds within [t0, t1] during which the last stream_state said paused. @param {any[]} states */
export function pausedSeconds(states, t0, t1) {
  let paused = false;
  let since = t0;
  let total = 0;
  for (const s of [...states].sort((x, y) => x.t - y.t)) {
    const t = Math.min(Math.max(s.t, t0), t1);
    if (paused) total += t - since;
    since = t;
    paused = s.state === 'paused';
  }
  if (paused) total += t1 - since;
  return total / 1000;
}

/** The layer a stream_state names, as a rank (q 0, h 1, f 2, unknown or no simulcast 3; paused -1). @param {any} s */
export const layerRank = (s) => (s.state === 'paused' ? -1 : ({ q: 0, h: 1, f: 2 })[/** @type {'q'|'h'|'f'} */ (s.layer)] ?? 3);

/**
 * Capacity step: how long after the drop the server went below the layer it had (stream_state), and how long after
 * the restore it was back on it; likewise from the decoded width.
 * @param {{samples: any[], states: any[]}} rec
 * @param {number} dropAt   ms since the epoch
 * @param {number} restoreAt
 * @param {number} endAt
 */
export function switchTimes(rec, dropAt, restoreAt, endAt) {
  const states = [...rec.states].sort((x, y) => x.t - y.t);
  const before = states.filter((s) => s.t <= dropAt).pop();
  const out = { layerBefore: before ? (before.state === 'paused' ? 'paused' : before.layer ?? before.state) : null, downS: /** @type {number|null} */ (null), upS: /** @type {number|null} */ (null), decodedDownS: /** @type {number|null} */ (null), decodedUpS: /** @type {number|null} */ (null) };
  if (before) {
    const r0 = layerRank(before);
    const down = states.find((s) => s.t > dropAt && s.t < restoreAt && layerRank(s) < r0);
    if (down) out.downS = round((down.t - dropAt) / 1000, 2);
    const up = states.find((s) => s.t > restoreAt && s.t <= endAt && layerRank(s) >= r0);
    if (up) out.upS = round((up.t - restoreAt) / 1000, 2);
  }
  const width = (/** @type {any} */ s) => Math.max(0, ...s.video.map((/** @type {any} */ v) => v.frameWidth));
  const w0s = rec.samples.filter((s) => s.t <= dropAt);
  const w0 = w0s.length ? width(w0s[w0s.length - 1]) : 0;
  if (w0 > 0) {
    const dn = rec.samples.find((s) => s.t > dropAt && s.t < restoreAt && width(s) < w0);
    if (dn) out.decodedDownS = round((dn.t - dropAt) / 1000, 2);
    const up = rec.samples.find((s) => s.t > restoreAt && s.t <= endAt && width(s) >= w0);
    if (up) out.decodedUpS = round((up.t - restoreAt) / 1000, 2);
  }
  return out;
}

/** @param {number} x @param {number} n */
export function round(x, n) {
  const f = 10 ** n;
  return Math.round(x * f) / f;
}

const fmt = (/** @type {any} */ x, /** @type {string} */ unit = '') => (x == null || Number.isNaN(x) ? '–' : `${x}${unit}`);

/** Loss in the window: the rules' drops, or for a capacity cap the queue's drops (share of what arrived). @param {any} l */
function lossText(l) {
  if (!l) return '–';
  if (l.capacityDrops > 0) return `${round((100 * l.capacityDrops) / (l.udpIn + l.capacityDrops), 1)} % (queue)`;
  return fmt(l.pct, ' %');
}

/**
 * The markdown report: per case one row relayed (single layer, and simulcast), one direct, and relay ÷ direct.
 * @param {any[]} results  [{case, mode, m, loss, switch?}]
 */
export function markdown(results) {
  const lines = [];
  lines.push(
    '| case | path | loss measured | decoded fps | fps ÷ direct | freeze s/min (Δ vs direct) | longest freeze s | stall s/min, longest | width | concealed % (direct) | audio FEC pkts | pauses (paused s) | estimate min/mean Mbit/s |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  const cases = [...new Set(results.map((r) => r.case))];
  for (const c of cases) {
    const direct = results.find((r) => r.case === c && r.mode === 'direct');
    for (const r of results.filter((x) => x.case === c)) {
      const m = r.m;
      if (!m || m.error) {
        lines.push(`| ${c} | ${r.mode} | – | failed: ${m?.error ?? r.error ?? '?'} | | | | | | | | | |`);
        continue;
      }
      const dm = direct?.m && !direct.m.error ? direct.m : null;
      const rel = r.mode !== 'direct' && dm;
      const ratio = rel && dm.decodedFps > 0 ? round(m.decodedFps / dm.decodedFps, 3) : null;
      const dFreeze = rel ? round(m.freezeSPerMin - dm.freezeSPerMin, 2) : null;
      const conceal = rel ? `${fmt(m.concealedPct)} (${fmt(dm.concealedPct)})` : fmt(m.concealedPct);
      const est = r.server ? `${fmt(r.server.estimateMinMbps)}/${fmt(r.server.estimateMeanMbps)}` : '–';
      lines.push(
        `| ${c} | ${r.mode} | ${lossText(r.loss)} | ${m.decodedFps} | ${rel ? fmt(ratio) : '–'} | ${m.freezeSPerMin}${rel ? ` (${dFreeze >= 0 ? '+' : ''}${dFreeze})` : ''} | ${m.longestFreezeS} | ${fmt(m.stallSPerMin)}, ${fmt(m.longestDecodeGapS)} | ${m.widthMode} | ${conceal} | ${m.audioFecPackets} | ${r.mode === 'direct' ? '–' : `${m.pausesInRun} (${m.pausedInWindowS} s)`} | ${est} |`,
      );
    }
  }
  const steps = results.filter((r) => r.switch);
  if (steps.length) {
    lines.push('');
    lines.push('| capacity step | path | layer before | down-switch s (server / decoded) | back up s (server / decoded) |');
    lines.push('|---|---|---|---|---|');
    for (const r of steps) {
      const s = r.switch;
      lines.push(`| ${r.case} | ${r.mode} | ${fmt(s.layerBefore)} | ${fmt(s.downS)} / ${fmt(s.decodedDownS)} | ${fmt(s.upS)} / ${fmt(s.decodedUpS)} |`);
    }
  }
  return lines.join('\n');
}
