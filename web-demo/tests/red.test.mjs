// Opus RED (RFC 2198) end to end: a Chrome publisher and a Chrome subscriber through Courier negotiate RED, the
// publisher sends it (Courier's answer lists red/48000/2 before Opus with the fmtp "111/111": the condition under
// which libwebrtc sends RED) and the subscriber's audio plays; a native subscriber without RED (media-tests
// client, webrtc-rs) still decodes the Opus Courier takes out of the RED packets for it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  ARTIFACTS,
  MEDIA_TESTS_BIN,
  NATIVE_EXIT_GRACE_MS,
  launchChromium,
  mintToken,
  openDemoPage,
  requireExecutable,
  sleep,
  startCourier,
  startProcess,
  waitUntil,
  withTimeout,
} from './harness.mjs';

const MEDIA_MS = 20_000;
const NATIVE_S = 12;

/**
 * The payload types of the audio m-line of an SDP, in order, and the RED payload type with its fmtp.
 * @param {string} sdp
 */
function audioCodecs(sdp) {
  const section = sdp.split(/\r?\nm=/).find((s) => s.startsWith('audio') || s.startsWith('m=audio')) ?? '';
  const pts = section.split(/\r?\n/)[0].split(' ').slice(3);
  const red = section.match(/a=rtpmap:(\d+) red\/48000\/2/i)?.[1] ?? null;
  const opus = section.match(/a=rtpmap:(\d+) opus\/48000\/2/i)?.[1] ?? null;
  const redFmtp = red ? (section.match(new RegExp(`a=fmtp:${red} (\\S+)`))?.[1] ?? null) : null;
  return { pts, red, opus, redFmtp };
}

/** Inbound audio of a page: packets and samples received. @param {import('playwright-core').Page} page */
const inboundAudio = (page) =>
  page.evaluate(async () => {
    const report = await /** @type {any} */ (window).courier.pc.getStats();
    let packets = 0;
    let samples = 0;
    report.forEach((/** @type {any} */ s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        packets += s.packetsReceived ?? 0;
        samples += s.totalSamplesReceived ?? 0;
      }
    });
    return { packets, samples };
  });

test('Chrome publisher and subscriber negotiate RED through courier; a native subscriber still decodes Opus', { timeout: 180_000 }, async () => {
  requireExecutable(MEDIA_TESTS_BIN, 'MEDIA_TESTS_BIN');
  const courier = await startCourier('courier-red');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  /** @type {ReturnType<typeof startProcess>|null} */ let native = null;
  try {
    const { http, url } = courier;
    const room = 'red';
    browser = await launchChromium();
    const pub = await openDemoPage(browser, { http, url, room, identity: 'speaker', params: { publish: 'audio' } });
    const sub = await openDemoPage(browser, { http, url, room, identity: 'listener', params: { publish: 'none' } });

    // The publisher: Chrome offered RED; Courier's answer puts it first, linked to Opus.
    const offered = audioCodecs(await pub.evaluate(() => /** @type {any} */ (window).courier.pc.localDescription.sdp));
    assert.ok(offered.red, `Chrome offers red/48000/2: ${JSON.stringify(offered)}`);
    const answered = audioCodecs(await pub.evaluate(() => /** @type {any} */ (window).courier.pc.remoteDescription.sdp));
    assert.ok(answered.red && answered.opus, `the answer keeps RED and Opus: ${JSON.stringify(answered)}`);
    assert.ok(answered.pts.indexOf(answered.red) < answered.pts.indexOf(answered.opus), `RED before Opus: ${JSON.stringify(answered)}`);
    assert.equal(answered.redFmtp, `${answered.opus}/${answered.opus}`);

    // Courier receives RED from it.
    const logFile = path.join(ARTIFACTS, 'courier-red.log');
    await waitUntil(async () => fs.readFileSync(logFile, 'utf8').includes('audio redundancy (RED) received'), MEDIA_MS,
      'courier logs RED from the Chrome publisher');

    // The Chrome subscriber negotiated RED on its down-track and its audio plays.
    await waitUntil(async () => (await inboundAudio(sub)).packets > 0, MEDIA_MS, 'the subscriber receives audio');
    for (const which of ['currentLocalDescription', 'currentRemoteDescription']) {
      const down = audioCodecs(await sub.evaluate((w) => /** @type {any} */ (window).courier.pc[w].sdp, which));
      assert.ok(down.red, `the subscriber's ${which} has RED: ${JSON.stringify(down)}`);
    }
    const before = await inboundAudio(sub);
    await sleep(3000);
    const after = await inboundAudio(sub);
    assert.ok(after.packets - before.packets > 100, `about 50 packets/s: ${JSON.stringify({ before, after })}`);
    assert.ok(after.samples - before.samples > 48_000 * 2, `samples played: ${JSON.stringify({ before, after })}`);

    // A native subscriber without RED decodes the Opus primary blocks.
    native = startProcess('media-tests-red', MEDIA_TESTS_BIN, [
      'client',
      '--url',
      url,
      '--token',
      mintToken({ identity: 'native', name: 'native', room }),
      '--duration',
      `${NATIVE_S}s`,
      '--report',
      'json',
    ]);
    const exit = await withTimeout(native.exited, NATIVE_S * 1000 + NATIVE_EXIT_GRACE_MS, 'media-tests client to finish');
    const lastLine = [...native.lines].reverse().find((l) => l.trim().length > 0);
    assert.ok(lastLine, `media-tests printed nothing (exit ${JSON.stringify(exit)})`);
    const report = JSON.parse(lastLine);
    fs.writeFileSync(path.join(ARTIFACTS, 'red-native-report.json'), JSON.stringify(report, null, 2));
    const audio = (report.tracks ?? []).filter((/** @type {any} */ t) => t.kind === 'audio');
    assert.ok(audio.some((/** @type {any} */ t) => t.packets_decoded > 100), `the native client decodes Opus: ${JSON.stringify(audio)}`);
  } finally {
    await browser?.close().catch(() => {});
    if (native) await native.stop();
    await courier.stop();
  }
});
