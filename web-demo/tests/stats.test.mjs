// The client's getStats rows without a browser (stats.js): inbound rows labelled by the subscription on their mid,
// outbound rows by the own track on theirs, the server's receiver report attached, defaults for missing fields.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inboundRows, outboundRows } from '../stats.js';

/** An RTCStatsReport stand-in. @param {any[]} rows */
const report = (rows) => new Map(rows.map((r) => [r.id, r]));

test('inbound rows: labelled by mid, split by kind, summed', () => {
  const r = report([
    { id: 'c1', type: 'codec', mimeType: 'video/VP8' },
    { id: 'v1', type: 'inbound-rtp', kind: 'video', mid: '1', ssrc: 11, codecId: 'c1', framesDecoded: 30, packetsReceived: 100, frameWidth: 640 },
    { id: 'v2', type: 'inbound-rtp', mediaType: 'video', mid: 7, ssrc: 12, framesDecoded: 5 },
    { id: 'a1', type: 'inbound-rtp', kind: 'audio', mid: '2', ssrc: 21, packetsReceived: 50, audioLevel: 0.1 },
    { id: 'o1', type: 'outbound-rtp', kind: 'video', mid: '0' },
  ]);
  const subs = new Map([
    ['1', { trackId: 'TR_v', participantId: 'PA_a', kind: 'video', mid: '1' }],
    ['2', { trackId: 'TR_a', participantId: 'PA_a', kind: 'audio', mid: '2' }],
  ]);
  const { video, audio, totals } = inboundRows(r, (mid) => /** @type {any} */ (subs.get(mid)));
  assert.deepEqual(video.map((v) => [v.trackId, v.participantId, v.codec, v.framesDecoded, v.frameWidth, v.frameHeight]), [
    ['TR_v', 'PA_a', 'video/VP8', 30, 640, 0],
    [null, null, null, 5, 0, 0],
  ]);
  assert.equal(video[1].mid, 7, 'a mid that labels nothing is kept as given');
  assert.deepEqual(audio.map((a) => [a.trackId, a.packetsReceived, a.audioLevel, a.totalAudioEnergy, a.jitter]), [['TR_a', 50, 0.1, 0, null]]);
  assert.deepEqual(totals, { framesDecoded: 35, videoPacketsReceived: 100, audioPacketsReceived: 50 });
  assert.deepEqual(inboundRows(null, () => undefined), {
    video: [],
    audio: [],
    totals: { framesDecoded: 0, videoPacketsReceived: 0, audioPacketsReceived: 0 },
  });
});

test("outbound rows: labelled by the own track's mid, with the server's receiver report", () => {
  const r = report([
    { id: 'o1', type: 'outbound-rtp', kind: 'video', mid: '1', rid: 'h', ssrc: 1, packetsSent: 9, remoteId: 'rr1', qualityLimitationReason: 'bandwidth' },
    { id: 'o2', type: 'outbound-rtp', kind: 'audio', mid: '0', ssrc: 2 },
    { id: 'rr1', type: 'remote-inbound-rtp', fractionLost: 0.02, roundTripTime: 0.045 },
    { id: 'i1', type: 'inbound-rtp', kind: 'video', mid: '3' },
  ]);
  const rows = outboundRows(r, [{ mid: '1', trackId: 'TR_cam' }, { mid: null, trackId: 'TR_unsent' }]);
  assert.equal(rows.length, 2);
  assert.deepEqual(
    [rows[0].trackId, rows[0].rid, rows[0].packetsSent, rows[0].framesEncoded, rows[0].qualityLimitationReason],
    ['TR_cam', 'h', 9, null, 'bandwidth'],
  );
  assert.deepEqual(rows[0].remote, { fractionLost: 0.02, rttMs: 45 });
  assert.deepEqual([rows[1].trackId, rows[1].rid, rows[1].remote], [null, null, null], 'no own track on mid 0, no report');
  assert.deepEqual(outboundRows(null, []), []);
});
