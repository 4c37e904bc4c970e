// The decisions of the JS client's publisher that need no browser (publisher.js): how a track's send transceiver
// is set up (simulcast for the camera only), which own tracks an offer lists, and dynacast's merging of `set_layers`
// requests by rid and bringing the encodings to the latest one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SIMULCAST_ENCODINGS,
  applyWanted,
  findLocal,
  layerStates,
  mergeLayerRequest,
  offerTracks,
  transceiverInit,
} from '../publisher.js';

test('transceiver init: send only, in its stream; three layers for the camera when simulcast is on', () => {
  const stream = /** @type {any} */ ({ id: 's' });
  const camera = transceiverInit({ kind: 'video', source: 'camera' }, stream, true);
  assert.equal(camera.direction, 'sendonly');
  assert.deepEqual(camera.streams, [stream]);
  assert.deepEqual(
    camera.sendEncodings?.map((e) => [e.rid, e.scaleResolutionDownBy, e.maxBitrate]),
    [['q', 4, 150_000], ['h', 2, 500_000], ['f', 1, 1_500_000]],
  );
  /** @type {any} */ (camera.sendEncodings)[0].active = false;
  assert.equal(/** @type {any} */ (SIMULCAST_ENCODINGS[0]).active, undefined, 'a copy: the constant stays as it is');
  assert.equal(transceiverInit({ kind: 'video', source: 'screen' }, stream, true).sendEncodings, undefined, 'screen: one layer');
  assert.equal(transceiverInit({ kind: 'audio', source: 'microphone' }, stream, true).sendEncodings, undefined, 'audio');
  assert.equal(transceiverInit({ kind: 'video', source: 'camera' }, stream, false).sendEncodings, undefined, 'simulcast off');
  assert.deepEqual(transceiverInit({ kind: 'video', source: 'camera' }, undefined, false).streams, [], 'no stream');
});

test("an offer lists the own tracks with an m-line that sends", () => {
  /** @param {string|null} mid @param {string} direction @param {string} source */
  const local = (mid, direction, source = 'camera') => ({ mid, source, name: `n-${mid}`, transceiver: { direction } });
  const tracks = offerTracks(/** @type {any} */ ([
    local('0', 'sendonly', 'microphone'),
    local(null, 'sendonly'),
    local('1', 'inactive'),
    local('2', 'sendrecv', 'screen'),
    local('3', 'recvonly'),
  ]));
  assert.deepEqual(tracks, [
    { mid: '0', source: 'microphone', name: 'n-0' },
    { mid: '2', source: 'screen', name: 'n-2' },
  ]);
});

test('set_layers requests merge by rid; rids the sender lacks and malformed entries are ignored', () => {
  const rids = new Set(['q', 'h', 'f']);
  /** @type {Map<string, boolean>} */
  const want = new Map();
  assert.equal(mergeLayerRequest(want, [{ rid: 'q', active: true }, { rid: 'h', active: false }, { rid: 'f', active: false }], rids), true);
  assert.equal(mergeLayerRequest(want, [{ rid: 'f' }, { rid: 'x', active: false }, null, { rid: 3 }], rids), true);
  assert.deepEqual([...want], [['q', true], ['h', false], ['f', true]], 'f: active unless said otherwise');
  assert.equal(mergeLayerRequest(want, [{ rid: 'q', active: false }], new Set([undefined])), false, 'a sender without simulcast');
  assert.equal(mergeLayerRequest(want, [], rids), false);
  assert.equal(want.get('q'), true, 'an irrelevant request changes nothing');
});

test('encodings are brought to the wanted state; the layer states follow', () => {
  /** @type {any[]} */
  const encodings = [{ rid: 'q', active: true }, { rid: 'h', active: true }, { rid: 'f' }];
  const want = new Map([['h', false], ['f', true], ['x', false]]);
  assert.equal(applyWanted(encodings, want), true);
  assert.deepEqual(encodings, [{ rid: 'q', active: true }, { rid: 'h', active: false }, { rid: 'f', active: true }]);
  assert.equal(applyWanted(encodings, want), false, 'nothing left to change');
  assert.deepEqual(layerStates(encodings), [{ rid: 'q', active: true }, { rid: 'h', active: false }, { rid: 'f', active: true }]);
  assert.deepEqual(layerStates([{ active: false }, { rid: 'q' }]), [{ rid: 'q', active: true }], 'only encodings with a rid');
  /** @type {any[]} */
  const single = [{ active: true }];
  assert.equal(applyWanted(single, new Map([['q', false]])), false, 'an encoding without a rid is never touched');
});

test('an own track is found by track id or by itself', () => {
  const a = /** @type {any} */ ({ trackId: 'TR_a', track: {} });
  const b = /** @type {any} */ ({ trackId: null, track: {} });
  assert.equal(findLocal([a, b], 'TR_a'), a);
  assert.equal(findLocal([a, b], b), b);
  assert.equal(findLocal([a, b], 'TR_zz'), undefined);
  assert.equal(findLocal([a], b), undefined);
});
