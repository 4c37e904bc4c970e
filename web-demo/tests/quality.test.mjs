// Connection quality per tile (quality.js) from made-up getStats readings: loss, jitter, round trip, silence,
// a paused video, and the hysteresis that keeps the bars from flickering.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QualityMeter, score } from '../quality.js';

test('score: thresholds on loss, jitter, round trip, and the pause and limitation flags', () => {
  assert.equal(score({ loss: 0 }), 'excellent');
  assert.equal(score({ loss: 0.03 }), 'good');
  assert.equal(score({ loss: 0.1 }), 'poor');
  assert.equal(score({ loss: 0, jitterMs: 40 }), 'good');
  assert.equal(score({ loss: 0, rttMs: 700 }), 'poor');
  assert.equal(score({ loss: 0, limited: true }), 'good');
  assert.equal(score({ loss: 0, paused: true }), 'poor');
  assert.equal(score({ loss: null, silent: true }), 'lost');
});

test('a received stream: loss from the counters between readings, silence is lost, recovery needs two readings', () => {
  const m = new QualityMeter({ silentAfterMs: 3000 });
  assert.equal(m.update('p', { packetsReceived: 100, packetsLost: 0 }, 0), null, 'nothing to compare yet');
  assert.equal(m.update('p', { packetsReceived: 200, packetsLost: 0 }, 2000), 'excellent');
  // 20 lost of 120 in this interval: poor at once.
  assert.equal(m.update('p', { packetsReceived: 300, packetsLost: 20 }, 4000), 'poor');
  // Clean again: still poor after one reading, excellent after two.
  assert.equal(m.update('p', { packetsReceived: 400, packetsLost: 20 }, 6000), 'poor');
  assert.equal(m.update('p', { packetsReceived: 500, packetsLost: 20 }, 8000), 'excellent');
  // Nothing arrives: lost once the silence is long enough.
  assert.equal(m.update('p', { packetsReceived: 500, packetsLost: 20 }, 10000), 'excellent');
  assert.equal(m.update('p', { packetsReceived: 500, packetsLost: 20 }, 11000), 'lost');
  // A video the server paused for bandwidth is poor, not lost.
  m.forget('p');
  m.update('p', { packetsReceived: 0, packetsLost: 0 }, 0);
  assert.equal(m.update('p', { packetsReceived: 0, packetsLost: 0, paused: true }, 5000), 'poor');
  // A participant who sends nothing (muted, no camera) is not lost.
  m.forget('q');
  m.update('q', { packetsReceived: 0, packetsLost: 0, expectMedia: false }, 0);
  assert.equal(m.update('q', { packetsReceived: 0, packetsLost: 0, expectMedia: false }, 5000), 'excellent');
});

test('the own link: fraction lost and round trip from the receiver reports', () => {
  const m = new QualityMeter();
  assert.equal(m.update('local', { fractionLost: 0, rttMs: 20 }, 0), 'excellent');
  assert.equal(m.update('local', { fractionLost: 0.01, rttMs: 350 }, 2000), 'good');
  assert.equal(m.update('local', { fractionLost: 0, rttMs: 20, limited: true }, 4000), 'good');
});
