// The interop matrix's Chromium client, in the page (interop/README.md): joins with web-demo/courier.js (served at
// /web-demo/ by client.mjs), publishes camera (one layer, VP8) and microphone, receives everyone, and counts units
// from getStats: outbound-rtp framesSent (video) / packetsSent (audio) and inbound-rtp framesReceived (video) /
// packetsReceived (audio). Window counts are the counters sampled at window end minus at window start.
// client.mjs calls window.runInterop(opts) and writes what it resolves to as the report.

import { CourierClient } from '/web-demo/courier.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/**
 * @param {{url: string, token: string, durationS: number, windowStart: number, windowEnd: number, stackVersion: string}} o
 */
async function runInterop(o) {
  const report = {
    stack: 'chromium',
    stack_version: o.stackVersion,
    participant_id: null,
    joined_ms: null,
    connected_ms: null,
    states: /** @type {[number, string][]} */ ([]),
    closed_early: /** @type {string|null} */ (null),
    sent: /** @type {any[]} */ ([]),
    received: /** @type {any[]} */ ([]),
    errors: /** @type {string[]} */ ([]),
  };
  let leaving = false;
  /** mid → {trackId, participantId, kind}, from `subscribed` (via remote tracks and the client's own map). */
  const subs = new Map();
  /** track id → {trackId, participantId, kind}: every track ever subscribed (a mid may carry several in turn). */
  const tracks = new Map();
  const client = new CourierClient({
    publish: { audio: true, video: true },
    simulcast: false,
    preferVideoCodec: 'video/VP8',
    videoConstraints: { width: 640, height: 360, frameRate: 30 },
    reconnect: false, // a drop must show, not be papered over
    log: (...a) => console.log('[courier]', ...a.map((x) => (typeof x === 'string' ? x : JSON.stringify(x)))),
  });
  let closedResolve;
  const closed = new Promise((r) => (closedResolve = r));
  client.on('joined', (d) => {
    report.joined_ms = Date.now();
    report.participant_id = d.participant?.id ?? null;
  });
  client.on('connection_state', ({ state }) => {
    report.states.push([Date.now(), state]);
    if (state === 'connected' && report.connected_ms == null) report.connected_ms = Date.now();
  });
  client.on('error', (e) => report.errors.push(`${e.code}: ${e.message}${e.reqType ? ` (${e.reqType})` : ''}`));
  client.on('closed', (d) => {
    if (!leaving) report.closed_early = `closed ${d.code} ${d.reason ?? ''}${d.leaveReason ? ` leave ${d.leaveReason}` : ''}`;
    closedResolve(undefined);
  });
  client.on('remote_track_added', (rt) => {
    subs.set(String(rt.mid), { trackId: rt.trackId, participantId: rt.participantId, kind: rt.kind });
    tracks.set(rt.trackId, { trackId: rt.trackId, participantId: rt.participantId, kind: rt.kind });
    // A sink, so that Chrome runs the receive pipeline as an app would.
    const el = document.createElement(rt.kind === 'video' ? 'video' : 'audio');
    el.autoplay = true;
    el.muted = true;
    /** @type {any} */ (el).playsInline = true;
    el.srcObject = new MediaStream([rt.track]);
    document.getElementById('media')?.appendChild(el);
    el.play().catch(() => {});
  });

  // Received units per Courier track. The server reuses m-lines (a mid, and maybe its receiver and SSRC, carries
  // another track after an unsubscribe), so each inbound-rtp stats object is bound to the track its mid named when
  // the binding was made; when the mid's track changes, what it counted so far stays with the old track and the new
  // one counts from there. Polled every 100 ms, so a change costs at most that much of a count.
  /** @type {Map<string, {trackId: string, base: number, last: number}>} inbound-rtp id → binding */
  const segs = new Map();
  /** @type {Map<string, number>} track id → units of bindings that moved on */
  const done = new Map();

  /** Current counters: sent by mid, received by track id. */
  async function sample() {
    const at = Date.now();
    const sent = new Map();
    const received = new Map();
    const pc = client.pc;
    if (!pc) return { at, sent, received };
    const current = /** @type {any} */ (client)._subsByMid ?? new Map();
    for (const [mid, sub] of current) {
      const t = { trackId: sub.trackId, participantId: sub.participantId, kind: sub.kind };
      subs.set(String(mid), t);
      tracks.set(t.trackId, t);
    }
    const stats = await pc.getStats();
    stats.forEach((s) => {
      const kind = s.kind ?? s.mediaType;
      if (s.type === 'outbound-rtp') {
        const units = kind === 'video' ? s.framesSent ?? 0 : s.packetsSent ?? 0;
        const mid = String(s.mid);
        sent.set(mid, (sent.get(mid) ?? 0) + units); // summed over rids (one without simulcast)
      } else if (s.type === 'inbound-rtp') {
        const sub = current.get(String(s.mid)) ?? subs.get(String(s.mid));
        if (!sub) return;
        const units = kind === 'video' ? s.framesReceived ?? 0 : s.packetsReceived ?? 0;
        const seg = segs.get(s.id);
        if (!seg) segs.set(s.id, { trackId: sub.trackId, base: 0, last: units });
        else if (seg.trackId !== sub.trackId) {
          done.set(seg.trackId, (done.get(seg.trackId) ?? 0) + seg.last - seg.base);
          segs.set(s.id, { trackId: sub.trackId, base: seg.last, last: units });
        } else seg.last = units;
      }
    });
    for (const [id, n] of done) received.set(id, n);
    for (const seg of segs.values()) received.set(seg.trackId, (received.get(seg.trackId) ?? 0) + seg.last - seg.base);
    return { at, sent, received };
  }

  try {
    await client.connect(o.url, o.token);
  } catch (e) {
    report.closed_early = `join failed: ${e?.message ?? e}`;
    report.errors.push(String(e?.message ?? e));
    return report;
  }
  if (report.joined_ms == null) report.joined_ms = Date.now();
  const end = report.joined_ms + o.durationS * 1000;

  /** first_ms per received track id: the first poll that saw a unit (polled every 100 ms). */
  const first = new Map();
  let startSample = null;
  let endSample = null;
  let last = await sample();
  const pollFirst = async () => {
    while (!leaving && client.state === 'joined') {
      const s = await sample();
      last = s;
      for (const [id, n] of s.received) if (n > 0 && !first.has(id)) first.set(id, s.at);
      await sleep(100);
    }
  };
  const polling = pollFirst();
  const windowSamples = (async () => {
    await Promise.race([sleep(o.windowStart - Date.now()), closed]);
    if (client.state === 'joined') startSample = await sample();
    await Promise.race([sleep(o.windowEnd - Date.now()), closed]);
    if (client.state === 'joined') endSample = await sample();
  })();
  await Promise.race([sleep(end - Date.now()), closed]);
  if (client.state === 'joined') last = await sample();
  const locals = client.localTracks.map((l) => ({ mid: l.mid, kind: l.kind, trackId: l.trackId }));
  leaving = true;
  await polling.catch(() => {});
  if (client.state === 'joined') await client.leave().catch((e) => report.errors.push(`leave: ${e?.message ?? e}`));
  await Promise.race([windowSamples, sleep(100)]);
  if (!endSample && Date.now() < o.windowEnd) report.errors.push('the session ended before the window did');

  const win = (map, key) => {
    if (!endSample) return 0;
    return (endSample[map].get(key) ?? 0) - ((startSample && startSample[map].get(key)) ?? 0);
  };
  for (const lt of locals) {
    if (lt.mid == null) continue;
    const units = lt.kind === 'video' ? 'frames' : 'packets';
    report.sent.push({
      mid: lt.mid,
      kind: lt.kind,
      track_id: lt.trackId,
      units,
      window: win('sent', String(lt.mid)),
      total: last.sent.get(String(lt.mid)) ?? 0,
    });
  }
  for (const sub of tracks.values()) {
    report.received.push({
      track_id: sub.trackId,
      participant_id: sub.participantId,
      kind: sub.kind,
      units: sub.kind === 'video' ? 'frames' : 'packets',
      first_ms: first.get(sub.trackId) ?? null,
      window: win('received', sub.trackId),
      total: last.received.get(sub.trackId) ?? 0,
    });
  }
  return report;
}

/** @type {any} */ (window).runInterop = runInterop;
/** @type {any} */ (window).interopReady = true;
