// Dynacast and stream state in real Chrome.
//
// 1. The client side alone, with synthetic server messages (the real ones of these two types are dropped in the
//    pages, so that the server cannot interfere): `set_layers` turns the simulcast sender's encodings on and off
//    (serialized, latest state wins, the encoder really stops), is ignored for a track sent without simulcast, and
//    `stream_state` drives the layer badge and the "paused — low bandwidth" overlay of the demo page.
// 2. End to end: a publisher sends its 1280×720 fake camera as three layers (q/h/f). When the only subscriber's tile
//    is 320×180, the server tells the publisher to stop encoding h and f, and tells the subscriber it gets q; back at
//    1280×720, f is encoded and forwarded again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  ARTIFACTS,
  inboundVideo,
  launchChromium,
  openDemoPage,
  setTrackSettings,
  sleep,
  startCourier,
  waitForEncoding,
  waitForWidth,
  waitUntil,
} from './harness.mjs';

/** Which simulcast layer a frame width is, for the 1280×720 fake camera (q = 1/4, h = 1/2, f = full). */
const LAYER_OF_WIDTH = /** @type {Record<number, string>} */ ({ 320: 'q', 640: 'h', 1280: 'f' });
const PAUSE_TIMEOUT_MS = 8_000; // subscriber's tile made small → publisher stops encoding the unneeded layers
const RESUME_TIMEOUT_MS = 10_000; // tile made large again → full layer encoded and decoded again

/**
 * The publisher's camera sender: `active` of each encoding by rid ('-' when it has none), bytes sent per rid, the
 * track id and the layer state the client last applied.
 * @param {import('playwright-core').Page} page
 */
const senderState = (page) =>
  page.evaluate(async () => {
    const c = /** @type {any} */ (window).courier;
    const local = c.localTracks.find((/** @type {any} */ l) => l.kind === 'video');
    /** @type {Record<string, boolean>} */ const active = {};
    for (const e of local.transceiver.sender.getParameters().encodings) active[e.rid ?? '-'] = e.active;
    /** @type {Record<string, number>} */ const bytes = {};
    (await c.pc.getStats()).forEach((/** @type {any} */ s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') bytes[s.rid ?? '-'] = s.bytesSent ?? 0;
    });
    return { trackId: local.trackId, active, bytes, layers: local.layers };
  });

/**
 * Record the client's events of these types in `window.__events` (from now on).
 * @param {import('playwright-core').Page} page
 * @param {string[]} types
 */
const recordEvents = (page, types) =>
  page.evaluate((types) => {
    const w = /** @type {any} */ (window);
    w.__events = [];
    for (const type of types) {
      w.courier.on(type, (/** @type {any} */ d) =>
        w.__events.push({ type, at: Date.now(), ...JSON.parse(JSON.stringify({ ...d, localTrack: undefined })) }),
      );
    }
  }, types);

/** @param {import('playwright-core').Page} page @returns {Promise<any[]>} */
const events = (page) => page.evaluate(() => /** @type {any} */ (window).__events);

/**
 * Drop the server's messages of these types in the page, so that only synthetic ones reach the handlers.
 * @param {import('playwright-core').Page} page
 * @param {string[]} types
 */
const dropServerMessages = (page, types) =>
  page.evaluate((types) => {
    const c = /** @type {any} */ (window).courier;
    const handle = Object.getPrototypeOf(c)._handle;
    c._handle = function (/** @type {any} */ m) {
      return types.includes(m.type) ? Promise.resolve() : handle.call(this, m);
    };
  }, types);

/**
 * The subscriber's remote video track of `participantId`, waited for.
 * @param {import('playwright-core').Page} page
 * @param {string} participantId
 * @returns {Promise<string>}
 */
const remoteVideoTrackId = (page, participantId) =>
  waitUntil(
    () =>
      page.evaluate((pid) => {
        const c = /** @type {any} */ (window).courier;
        for (const r of c.remoteTracks.values()) if (r.kind === 'video' && r.participantId === pid) return r.trackId;
        return null;
      }, participantId),
    15_000,
    `the subscriber to receive the video of ${participantId}`,
  );

/**
 * The demo page's remote tile of `participantId`: its layer badge and paused overlay as a user sees them.
 * @param {import('playwright-core').Page} page
 * @param {string} participantId
 */
async function tileView(page, participantId) {
  const tile = page.locator(`.tile.remote[data-participant-id="${participantId}"]`);
  const badge = tile.locator('.layer-badge');
  const overlay = tile.locator('.paused-overlay');
  return {
    badge: (await badge.isVisible()) ? (await badge.textContent())?.trim() : null,
    overlay: (await overlay.isVisible()) ? (await overlay.innerText()).replace(/\s+/g, ' ').trim() : null,
  };
}

test('set_layers and stream_state are applied by the client and shown by the page (synthetic messages)', { timeout: 150_000 }, async () => {
  const courier = await startCourier('courier-dynacast-synthetic');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  try {
    const { http, url } = courier;
    const room = 'dynacast-synthetic';
    browser = await launchChromium();
    const pub = await openDemoPage(browser, { http, url, room, identity: 'publisher', params: { simulcast: '1', publish: 'video', adaptive: '0' } });
    const plain = await openDemoPage(browser, { http, url, room, identity: 'plain', params: { publish: 'video', adaptive: '0' } });
    const sub = await openDemoPage(browser, { http, url, room, identity: 'subscriber', params: { publish: 'none', adaptive: '0' } });
    for (const page of [pub, plain, sub]) await dropServerMessages(page, ['set_layers', 'stream_state']);
    await waitUntil(async () => (await senderState(pub)).trackId, 10_000, 'the publisher to get its track id');
    await waitUntil(async () => (await senderState(plain)).trackId, 10_000, 'the plain publisher to get its track id');
    // Start from all layers on (the server may have paused some before its messages were dropped).
    await pub.evaluate(() => {
      const c = /** @type {any} */ (window).courier;
      const local = c.localTracks.find((/** @type {any} */ l) => l.kind === 'video');
      return c._onSetLayers({ type: 'set_layers', track_id: local.trackId, layers: ['q', 'h', 'f'].map((rid) => ({ rid, active: true })) });
    });
    assert.deepEqual((await senderState(pub)).active, { q: true, h: true, f: true }, 'three active encodings');

    // A burst of set_layers: one setParameters at a time, and the latest state (merged by rid) wins.
    const burst = await pub.evaluate(async () => {
      const c = /** @type {any} */ (window).courier;
      const local = c.localTracks.find((/** @type {any} */ l) => l.kind === 'video');
      const sender = local.transceiver.sender;
      const msg = (/** @type {any[]} */ layers) => ({ type: 'set_layers', track_id: local.trackId, layers });
      /** @type {any[]} */ const layerEvents = [];
      const off = c.on('layers', (/** @type {any} */ d) => layerEvents.push({ trackId: d.trackId, layers: d.layers }));
      let calls = 0;
      let inFlight = 0;
      let maxInFlight = 0;
      const setParameters = sender.setParameters.bind(sender);
      sender.setParameters = async (/** @type {any} */ p) => {
        calls++;
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        try {
          return await setParameters(p);
        } finally {
          inFlight--;
        }
      };
      await Promise.all([
        c._onSetLayers(msg([{ rid: 'q', active: true }, { rid: 'h', active: false }, { rid: 'f', active: false }])),
        c._onSetLayers(msg([{ rid: 'f', active: true }])),
        c._onSetLayers(msg([{ rid: 'h', active: true }, { rid: 'f', active: false }, { rid: 'x', active: false }])),
      ]);
      delete sender.setParameters;
      off();
      return { calls, maxInFlight, layerEvents, layers: local.layers, trackId: local.trackId };
    });
    const want = [{ rid: 'q', active: true }, { rid: 'h', active: true }, { rid: 'f', active: false }];
    assert.equal(burst.maxInFlight, 1, 'setParameters calls on one sender never overlap');
    assert.equal(burst.calls, 2, 'the first state, then only the latest (the one in between is skipped)');
    assert.deepEqual((await senderState(pub)).active, { q: true, h: true, f: false }, 'encodings after the burst');
    assert.deepEqual(burst.layers, want, 'localTrack.layers');
    assert.deepEqual(burst.layerEvents, [{ trackId: burst.trackId, layers: want }], 'one `layers` event, with the final state');

    // The browser really stops encoding f, and starts again when it is active.
    await sleep(1_000);
    const a = await senderState(pub);
    await sleep(2_000);
    const b = await senderState(pub);
    assert.equal(b.bytes.f, a.bytes.f, `no bytes sent on the inactive f layer (${a.bytes.f} → ${b.bytes.f})`);
    assert.ok(b.bytes.q > a.bytes.q && b.bytes.h > a.bytes.h, `q and h still sent: ${JSON.stringify([a.bytes, b.bytes])}`);
    await pub.evaluate(() => {
      const c = /** @type {any} */ (window).courier;
      const local = c.localTracks.find((/** @type {any} */ l) => l.kind === 'video');
      return c._onSetLayers({ type: 'set_layers', track_id: local.trackId, layers: [{ rid: 'f', active: true }] });
    });
    assert.deepEqual((await senderState(pub)).active, { q: true, h: true, f: true }, 'f active again');
    await waitUntil(async () => (await senderState(pub)).bytes.f > b.bytes.f, 8_000, 'bytes sent on f again');

    // A track sent without simulcast has no such rids: ignored, nothing changes, no error.
    const plainResult = await plain.evaluate(async () => {
      const c = /** @type {any} */ (window).courier;
      const local = c.localTracks.find((/** @type {any} */ l) => l.kind === 'video');
      /** @type {any[]} */ const seen = [];
      const offs = ['layers', 'error'].map((t) => c.on(t, (/** @type {any} */ d) => seen.push({ t, code: d.code })));
      await c._onSetLayers({ type: 'set_layers', track_id: local.trackId, layers: ['q', 'h', 'f'].map((rid) => ({ rid, active: false })) });
      await new Promise((r) => setTimeout(r, 300));
      offs.forEach((f) => f());
      return { seen, layers: local.layers };
    });
    assert.deepEqual(plainResult, { seen: [], layers: null }, 'no event, no layer state for a non-simulcast track');
    assert.deepEqual((await senderState(plain)).active, { '-': true }, 'its one encoding stays active');
    const plainBytes = (await senderState(plain)).bytes['-'];
    await waitUntil(async () => (await senderState(plain)).bytes['-'] > plainBytes, 5_000, 'the plain track still sent');

    // stream_state on the subscriber: kept per track, emitted, and shown on the tile.
    const pubId = await pub.evaluate(() => /** @type {any} */ (window).courier.participantId);
    const trackId = await remoteVideoTrackId(sub, pubId);
    await recordEvents(sub, ['stream_state']);
    /** @param {Record<string, unknown>} m */
    const inject = (m) =>
      sub.evaluate((m) => /** @type {any} */ (window).courier._onStreamState(m), { type: 'stream_state', track_id: trackId, ...m });
    const latest = () => sub.evaluate((id) => /** @type {any} */ (window).courier.getStreamState(id), trackId);

    const before = await latest(); // the server may have spoken before its messages were dropped
    await inject({ state: 'active', layer: 'q' });
    assert.deepEqual(await latest(), { trackId, participantId: pubId, state: 'active', layer: 'q', reason: null });
    assert.deepEqual(await tileView(sub, pubId), { badge: 'low', overlay: null }, 'layer q: "low" badge');

    await inject({ state: 'paused', reason: 'bandwidth' });
    assert.deepEqual(await latest(), { trackId, participantId: pubId, state: 'paused', layer: null, reason: 'bandwidth' });
    const paused = await tileView(sub, pubId);
    assert.equal(paused.badge, null, 'no layer badge while paused');
    assert.match(paused.overlay ?? '', /^Paused — low bandwidth/, 'paused overlay shown');
    await sub.screenshot({ path: path.join(ARTIFACTS, 'dynacast-paused.png') });

    await inject({ state: 'active', layer: 'f' });
    assert.deepEqual(await tileView(sub, pubId), { badge: 'high', overlay: null }, 'layer f: "high" badge, no overlay');
    await inject({ state: 'active', layer: 'h' });
    assert.deepEqual(await tileView(sub, pubId), { badge: 'medium', overlay: null }, 'layer h: "medium" badge');
    await inject({ state: 'active', layer: null });
    assert.deepEqual(await tileView(sub, pubId), { badge: null, overlay: null }, 'no layer (not simulcast): no badge');
    assert.deepEqual(
      (await sub.evaluate(() => /** @type {any} */ (window).courier.snapshot())).remoteTracks.find((/** @type {any} */ r) => r.trackId === trackId)
        .streamState,
      { trackId, participantId: pubId, state: 'active', layer: null, reason: null },
      'snapshot().remoteTracks[].streamState',
    );
    const seen = (await events(sub)).map((e) => [e.state, e.layer, e.reason, e.previous?.layer ?? e.previous?.state ?? null]);
    assert.deepEqual(seen, [
      ['active', 'q', null, before?.layer ?? before?.state ?? null],
      ['paused', null, 'bandwidth', 'q'],
      ['active', 'f', null, 'paused'],
      ['active', 'h', null, 'f'],
      ['active', null, null, 'h'],
    ], '`stream_state` events with the previous state');
  } finally {
    if (browser) await browser.close().catch(() => {});
    await courier.stop();
  }
});

test('dynacast: the publisher encodes only the layers its one subscriber needs', { timeout: 200_000 }, async () => {
  for (const stale of ['dynacast-failure.png', 'dynacast-failure-events.json']) fs.rmSync(path.join(ARTIFACTS, stale), { force: true });
  const courier = await startCourier('courier-dynacast');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  /** @type {import('playwright-core').Page|null} */ let sub = null;
  /** @type {import('playwright-core').Page|null} */ let pubPage = null;
  try {
    const { http, url } = courier;
    const room = 'dynacast';
    browser = await launchChromium();
    const pub = await openDemoPage(browser, { http, url, room, identity: 'publisher', params: { simulcast: '1', publish: 'video', adaptive: '0' } });
    pubPage = pub;
    await recordEvents(pub, ['layers']);
    sub = await openDemoPage(browser, { http, url, room, identity: 'subscriber', params: { publish: 'none', adaptive: '0' } });
    const s = sub;
    await recordEvents(s, ['stream_state']);
    const pubId = await pub.evaluate(() => /** @type {any} */ (window).courier.participantId);
    const trackId = await remoteVideoTrackId(s, pubId);
    const latest = () => s.evaluate((id) => /** @type {any} */ (window).courier.getStreamState(id), trackId);
    /** The layer the subscriber decodes (by frame width) and the one `stream_state` says, once they agree. */
    const agreed = async (/** @type {string} */ layer, /** @type {number} */ ms) =>
      waitUntil(
        async () => {
          const [v, st] = [await inboundVideo(s), await latest()];
          const got = { decoding: v ? LAYER_OF_WIDTH[v.width] ?? v.width : null, streamState: st };
          return got.decoding === layer && st?.state === 'active' && st?.layer === layer ? got : null;
        },
        ms,
        `the subscriber to decode layer ${layer} and be told so by stream_state`,
      );

    // No size given: the full layer, and f is encoded (timed from when Chrome first encodes it; see
    // waitForEncoding).
    await waitForEncoding(pub, 'f', 45_000);
    await waitForWidth(s, 1280, 'no size given: the full layer', 15_000);
    await agreed('f', 5_000);
    assert.equal((await senderState(pub)).active.f, true, 'f encoded while the subscriber shows it large');

    // A 320×180 tile needs only q: the publisher stops encoding h and f.
    await setTrackSettings(s, { width: 320, height: 180 });
    const small = await waitUntil(
      async () => {
        const st = await senderState(pub);
        return st.active.q === true && st.active.h === false && st.active.f === false ? st : null;
      },
      PAUSE_TIMEOUT_MS,
      'the publisher to stop encoding h and f',
    );
    assert.deepEqual(small.layers, [{ rid: 'q', active: true }, { rid: 'h', active: false }, { rid: 'f', active: false }], 'localTrack.layers');
    await sleep(1_000);
    const a = await senderState(pub);
    await sleep(2_000);
    const b = await senderState(pub);
    assert.equal(b.bytes.f, a.bytes.f, 'no bytes sent on f while nobody needs it');
    assert.equal(b.bytes.h, a.bytes.h, 'no bytes sent on h while nobody needs it');
    assert.ok(b.bytes.q > a.bytes.q, 'q still sent');
    await waitForWidth(s, 320, 'a 320×180 tile: the low layer', PAUSE_TIMEOUT_MS);
    await agreed('q', 5_000);
    assert.deepEqual(await tileView(s, pubId), { badge: 'low', overlay: null }, 'the tile shows "low"');

    // Back to 1280×720: f is encoded, forwarded and decoded again.
    await setTrackSettings(s, { width: 1280, height: 720 });
    const t0 = Date.now();
    await waitUntil(async () => (await senderState(pub)).active.f === true, RESUME_TIMEOUT_MS, 'the publisher to encode f again');
    // Timed, like the first switch, from when Chrome encodes f again: its encoder restarts the layer and ramps its
    // bitrate by itself (slowly on a loaded machine), which is not the server's switch.
    await waitForEncoding(pub, 'f', 45_000);
    await waitForWidth(s, 1280, 'a 1280×720 tile: the full layer', Math.max(15_000, RESUME_TIMEOUT_MS - (Date.now() - t0)));
    await agreed('f', 5_000);
    assert.deepEqual(await tileView(s, pubId), { badge: 'high', overlay: null }, 'the tile shows "high"');

    const layerEvents = (await events(pub)).map((e) => e.layers.filter((/** @type {any} */ l) => l.active).map((/** @type {any} */ l) => l.rid).join(''));
    assert.ok(layerEvents.includes('q'), `a \`layers\` event with only q active (${JSON.stringify(layerEvents)})`);
    assert.ok(layerEvents.at(-1)?.includes('f'), `the last \`layers\` event has f active (${JSON.stringify(layerEvents)})`);
    const states = (await events(s)).filter((e) => e.trackId === trackId).map((e) => e.layer);
    assert.ok(states.includes('q') && states.at(-1) === 'f', `stream_state layers received: ${JSON.stringify(states)}`);
    await s.screenshot({ path: path.join(ARTIFACTS, 'dynacast-subscriber.png') });
    await pub.screenshot({ path: path.join(ARTIFACTS, 'dynacast-publisher.png') });
  } catch (err) {
    // What each side was told, with times, for the post-mortem.
    const dump = async (/** @type {import('playwright-core').Page|null} */ p) => (p ? events(p).catch(() => null) : null);
    const told = { publisher: await dump(pubPage), subscriber: await dump(sub) };
    fs.writeFileSync(path.join(ARTIFACTS, 'dynacast-failure-events.json'), JSON.stringify(told, null, 1));
    if (sub) await sub.screenshot({ path: path.join(ARTIFACTS, 'dynacast-failure.png') }).catch(() => {});
    throw err;
  } finally {
    if (browser) await browser.close().catch(() => {});
    await courier.stop();
  }
});
