// Subscribers' loss reaches the publisher's Opus encoder: with 10 % of what Courier sends to a Chrome subscriber
// dropped (nftables, only that leg; the publisher's link stays clean), the Chrome publisher switches on Opus in-band
// FEC, and the subscriber receives FEC (inbound-rtp audio fecPacketsReceived rising). Without the loss, none.
//
// RED is switched off in the publisher (setCodecPreferences without audio/red): Chrome counts RED's redundant blocks
// as FEC packets too, which would hide what this test is about.
//
// It adds nftables rules, so it runs only in a network namespace of its own: scripts/fec-check.sh (root) creates one
// with just `lo` and runs this file there with COURIER_NETNS=1. Under `npm test` it is skipped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ARTIFACTS, launchChromium, openDemoPage, sleep, startCourier, waitUntil } from './harness.mjs';

const LOSS_EVERY = 10; // one datagram in ten
const FEC_WAIT_MS = 60_000;

const NO_RED = `(() => {
  const add = RTCPeerConnection.prototype.addTransceiver;
  RTCPeerConnection.prototype.addTransceiver = function (trackOrKind, init) {
    const t = add.call(this, trackOrKind, init);
    const kind = typeof trackOrKind === 'string' ? trackOrKind : trackOrKind.kind;
    if (kind === 'audio') {
      const codecs = RTCRtpReceiver.getCapabilities('audio').codecs.filter((c) => c.mimeType.toLowerCase() !== 'audio/red');
      t.setCodecPreferences(codecs);
    }
    return t;
  };
})();`;

/** @param {import('playwright-core').Page} page */
const audioIn = (page) =>
  page.evaluate(async () => {
    const out = { packets: 0, lost: 0, fec: 0, concealed: 0, samples: 0, localPort: 0, remotePort: 0 };
    const report = await /** @type {any} */ (window).courier.pc.getStats();
    /** @type {Map<string, any>} */ const byId = new Map();
    report.forEach((/** @type {any} */ s) => byId.set(s.id, s));
    report.forEach((/** @type {any} */ s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.packets += s.packetsReceived ?? 0;
        out.lost += s.packetsLost ?? 0;
        out.fec += s.fecPacketsReceived ?? 0;
        out.concealed += s.concealedSamples ?? 0;
        out.samples += s.totalSamplesReceived ?? 0;
      }
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        out.localPort = byId.get(pair?.localCandidateId)?.port ?? 0;
        out.remotePort = byId.get(pair?.remoteCandidateId)?.port ?? 0;
      }
    });
    return out;
  });

/** @param {string[]} args */
const nft = (args) => execFileSync('nft', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

test('a subscriber losing 10 % makes the Chrome publisher send Opus FEC', { skip: process.env.COURIER_NETNS !== '1', timeout: 240_000 }, async () => {
  process.env.COURIER_LOG = 'info,str0m=warn,sfu::peer=debug';
  const courier = await startCourier('courier-fec');
  /** @type {import('playwright-core').Browser|null} */ let browser = null;
  const results = {};
  try {
    const { http, url } = courier;
    const room = 'fec';
    browser = await launchChromium();
    const pub = await openDemoPage(browser, { http, url, room, identity: 'speaker', params: { publish: 'audio' }, initScript: NO_RED });
    const sub = await openDemoPage(browser, { http, url, room, identity: 'listener', params: { publish: 'none' } });
    const answer = await pub.evaluate(() => /** @type {any} */ (window).courier.pc.remoteDescription.sdp);
    assert.ok(!/red\/48000/i.test(answer), 'RED is off for this test');
    assert.match(answer, /useinbandfec=1/, 'the answer lets Opus use in-band FEC');

    const first = await waitUntil(async () => {
      const a = await audioIn(sub);
      return a.packets > 50 && a.localPort ? a : null;
    }, 20_000, 'the subscriber receives audio');

    // Clean: no FEC.
    await sleep(10_000);
    const clean = await audioIn(sub);
    results.clean = { packets: clean.packets - first.packets, fec: clean.fec - first.fec };
    assert.equal(clean.fec - first.fec, 0, `no FEC without loss: ${JSON.stringify(results)}`);

    // 10 % of the server → subscriber datagrams dropped.
    nft(['add', 'table', 'inet', 'courier_fec']);
    nft(['add', 'chain', 'inet', 'courier_fec', 'out', '{ type filter hook output priority 0 ; }']);
    nft(['add', 'rule', 'inet', 'courier_fec', 'out', 'udp', 'sport', String(clean.remotePort), 'udp', 'dport', String(clean.localPort),
      'numgen', 'random', 'mod', String(LOSS_EVERY), '==', '0', 'drop']);
    const lossStart = Date.now();
    const atLoss = await audioIn(sub);
    const fecSeen = await waitUntil(async () => {
      const a = await audioIn(sub);
      return a.fec > atLoss.fec ? a : null;
    }, FEC_WAIT_MS, 'FEC from the publisher while the subscriber loses 10 %', 1000);
    results.firstFecAfterS = (Date.now() - lossStart) / 1000;
    await sleep(15_000);
    const lossy = await audioIn(sub);
    results.lossy = {
      seconds: (Date.now() - lossStart) / 1000,
      packets: lossy.packets - atLoss.packets,
      lost: lossy.lost - atLoss.lost,
      fec: lossy.fec - atLoss.fec,
      fecLast15s: lossy.fec - fecSeen.fec,
      concealedShare: (lossy.concealed - atLoss.concealed) / Math.max(1, lossy.samples - atLoss.samples),
    };
    const log = fs.readFileSync(path.join(ARTIFACTS, 'courier-fec.log'), 'utf8').replace(/\x1b\[[0-9;]*m/g, '');
    results.floors = [...log.matchAll(/floor=([0-9.]+)/g)].map((m) => Number(m[1]));
    assert.ok(results.lossy.fecLast15s > 0, `FEC keeps coming: ${JSON.stringify(results)}`);
  } finally {
    try {
      nft(['delete', 'table', 'inet', 'courier_fec']);
    } catch {
      // not added
    }
    fs.writeFileSync(path.join(ARTIFACTS, 'fec-results.json'), JSON.stringify(results, null, 2));
    console.log('fec results', JSON.stringify(results));
    await browser?.close().catch(() => {});
    await courier.stop();
  }
});
