// The arithmetic of lib/measure.mjs on made-up records (no browser, no root): node --test
import assert from 'node:assert/strict';
import test from 'node:test';

import { markdown, pausedSeconds, summarize, switchTimes } from './lib/measure.mjs';

/**
 * A 200 ms sample stream: `fps` frames per second, width `w(t)`, with freezes and audio as given.
 * @param {{from: number, to: number, fps?: (t: number) => number, width?: (t: number) => number, freezes?: {at: number, s: number}[], concealPct?: number}} o
 */
function samples({ from, to, fps = () => 30, width = () => 1280, freezes = [], concealPct = 0 }) {
  const out = [];
  let frames = 0;
  let audio = 0;
  for (let t = from; t <= to; t += 200) {
    frames += (fps(t) * 200) / 1000;
    audio += 9600;
    const done = freezes.filter((f) => f.at <= t);
    out.push({
      t,
      video: [{ framesDecoded: Math.floor(frames), freezeCount: done.length, totalFreezesDuration: done.reduce((a, f) => a + f.s, 0), frameWidth: width(t), packetsReceived: 0, packetsLost: 0, nackCount: 0, pliCount: 0, bytesReceived: 0 }],
      audio: [{ totalSamplesReceived: audio, concealedSamples: (audio * concealPct) / 100, fecPacketsReceived: 0, packetsLost: 0 }],
    });
  }
  return out;
}

test('steady 30 fps, no freeze, concealment from the audio counters', () => {
  const rec = { samples: samples({ from: 0, to: 40_000, concealPct: 2 }), states: [] };
  const m = summarize(rec, 10_000, 35_000, { runStart: 0 });
  assert.ok(Math.abs(m.decodedFps - 30) < 0.3, `${m.decodedFps}`);
  assert.equal(m.freezes, 0);
  assert.equal(m.freezeSPerMin, 0);
  assert.equal(m.widthMode, 1280);
  assert.equal(m.concealedPct, 2);
  assert.equal(m.pausesInRun, 0);
});

test('freezes: s/min, the longest, and a stall that is still going at the end', () => {
  const fps = (/** @type {number} */ t) => (t > 30_000 ? 0 : 30);
  const rec = { samples: samples({ from: 0, to: 40_000, fps, freezes: [{ at: 15_000, s: 0.3 }, { at: 20_000, s: 0.7 }] }), states: [] };
  const m = summarize(rec, 10_000, 40_000, { runStart: 0 });
  assert.equal(m.freezes, 2);
  assert.equal(m.freezeSPerMin, 2);
  assert.equal(m.longestFreezeS, 0.7);
  assert.ok(m.longestDecodeGapS >= 9.8, `${m.longestDecodeGapS}`);
  // 10 s of 30 without a frame: 20 s/min.
  assert.ok(Math.abs(m.stallSPerMin - 20) < 0.5, `${m.stallSPerMin}`);
});

test('paused seconds and pauses counted from the stream_states', () => {
  const states = [
    { t: 1_000, state: 'active', layer: 'f' },
    { t: 12_000, state: 'paused', reason: 'bandwidth' },
    { t: 17_000, state: 'active', layer: 'q' },
  ];
  assert.equal(pausedSeconds(states, 10_000, 20_000), 5);
  assert.equal(pausedSeconds(states, 13_000, 16_000), 3);
  const m = summarize({ samples: samples({ from: 0, to: 20_000 }), states }, 10_000, 20_000, { runStart: 0 });
  assert.equal(m.pausesInRun, 1);
  assert.equal(m.pausedInWindowS, 5);
});

test('capacity step: down-switch and back-up times, by stream_state and by decoded width', () => {
  const width = (/** @type {number} */ t) => (t >= 10_800 && t < 22_000 ? 320 : 1280);
  const states = [
    { t: 1_000, state: 'active', layer: 'f' },
    { t: 10_600, state: 'active', layer: 'q' },
    { t: 21_500, state: 'active', layer: 'h' },
    { t: 23_000, state: 'active', layer: 'f' },
  ];
  const s = switchTimes({ samples: samples({ from: 0, to: 30_000, width }), states }, 10_000, 20_000, 30_000);
  assert.equal(s.layerBefore, 'f');
  assert.equal(s.downS, 0.6);
  assert.equal(s.upS, 3);
  assert.equal(s.decodedDownS, 0.8);
  assert.equal(s.decodedUpS, 2);
});

test('the report has relay ÷ direct', () => {
  const m = (/** @type {number} */ fps) => ({ decodedFps: fps, freezeSPerMin: 1, longestFreezeS: 0.2, widthMode: 1280, concealedPct: 1, audioFecPackets: 0, pausesInRun: 0, pausedInWindowS: 0 });
  const table = markdown([
    { case: 'loss-5', mode: 'direct', m: m(30), loss: { pct: 5 } },
    { case: 'loss-5', mode: 'relay', m: m(15), loss: { pct: 5 }, server: { estimateMinMbps: 0.4, estimateMeanMbps: 0.9 } },
  ]);
  assert.match(table, /\| loss-5 \| relay \| 5 % \| 15 \| 0\.5 \|/);
  assert.ok(table.split('\n').every((l) => l.split('|').length === 15), table);
  assert.match(table, /0\.4\/0\.9/);
});
