// The negotiation state of the JS client without a browser (negotiation.js has no RTCPeerConnection inside): offer
// ids, one offer outstanding at a time, glare (the client is impolite), stale answers, a refused offer, and the ICE
// candidates held back until a description is sent.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NegotiationState } from '../negotiation.js';

test('offers are numbered; a wish to negotiate while one is outstanding waits for its answer', () => {
  const n = new NegotiationState();
  assert.deepEqual(n.wantOffer('stable'), { action: 'offer', id: 1 });
  n.offerSent(1);
  assert.deepEqual(n.pendingOffer, { id: 1 });
  assert.deepEqual(n.wantOffer('have-local-offer'), { action: 'wait' });
  assert.equal(n.shouldRenegotiate, true, 'remembered');
  assert.deepEqual(n.onServerAnswer(1), { action: 'apply' });
  assert.equal(n.pendingOffer, null);
  assert.equal(n.shouldRenegotiate, true, 'still wanted once the answer is in');
  assert.deepEqual(n.wantOffer('stable'), { action: 'offer', id: 2 });
  assert.equal(n.shouldRenegotiate, false, 'taken care of by the new offer');
});

test('no offer unless the connection is stable; the id is not used up by waiting', () => {
  const n = new NegotiationState();
  assert.deepEqual(n.wantOffer('have-remote-offer'), { action: 'wait' });
  assert.equal(n.shouldRenegotiate, true);
  assert.equal(n.pendingOffer, null, 'nothing outstanding');
  assert.deepEqual(n.wantOffer('stable'), { action: 'offer', id: 1 });
});

test('glare: a server offer is ignored while the own offer is outstanding, answered otherwise', () => {
  const n = new NegotiationState();
  assert.deepEqual(n.onServerOffer(7), { action: 'answer' }, 'nothing outstanding: answer');
  n.answerSent();
  const { id } = /** @type {{action: 'offer', id: number}} */ (n.wantOffer('stable'));
  n.offerSent(id);
  const step = n.onServerOffer(8);
  assert.equal(step.action, 'ignore');
  assert.match(/** @type {{reason: string}} */ (step).reason, /server offer 8: own offer 1 outstanding/);
  assert.deepEqual(n.pendingOffer, { id: 1 }, 'the own offer stays outstanding');
  assert.deepEqual(n.onServerAnswer(1), { action: 'apply' });
  assert.deepEqual(n.onServerOffer(9), { action: 'answer' }, "the server's fresh offer after the answer");
});

test('stale answers: none outstanding, another id, or a repeat', () => {
  const n = new NegotiationState();
  assert.equal(n.onServerAnswer(1).action, 'ignore', 'no offer outstanding');
  n.offerSent(/** @type {{id: number}} */ (n.wantOffer('stable')).id); // 1
  assert.deepEqual(n.onServerAnswer(1), { action: 'apply' });
  n.offerSent(/** @type {{id: number}} */ (n.wantOffer('stable')).id); // 2
  const stale = n.onServerAnswer(1);
  assert.equal(stale.action, 'ignore');
  assert.match(/** @type {{reason: string}} */ (stale).reason, /answer 1: not for the outstanding offer/);
  assert.deepEqual(n.pendingOffer, { id: 2 }, 'a stale answer leaves the outstanding offer alone');
  assert.deepEqual(n.onServerAnswer(2), { action: 'apply' });
  assert.equal(n.onServerAnswer(2).action, 'ignore', 'the same answer twice');
});

test('a refused offer is rolled back only when it is the outstanding one and still set locally', () => {
  const n = new NegotiationState();
  assert.equal(n.onOfferRefused('have-local-offer'), false, 'no offer outstanding');
  n.offerSent(/** @type {{id: number}} */ (n.wantOffer('stable')).id);
  assert.equal(n.onOfferRefused('stable'), false, 'not in have-local-offer: nothing to roll back');
  assert.deepEqual(n.pendingOffer, { id: 1 });
  assert.equal(n.wantOffer('have-local-offer').action, 'wait');
  assert.equal(n.onOfferRefused('have-local-offer'), true);
  assert.equal(n.pendingOffer, null, 'no longer outstanding');
  assert.equal(n.shouldRenegotiate, true, 'the wish that waited is acted on after the rollback');
  assert.equal(n.onServerAnswer(1).action, 'ignore', 'a late answer to the refused offer is stale');
});

test('candidates wait for the first description, in order; afterwards they go at once', () => {
  const n = new NegotiationState();
  assert.equal(n.onLocalCandidate({ candidate: 'candidate:1', sdpMid: '0' }), null);
  assert.equal(n.onLocalCandidate({ candidate: 'candidate:2', sdpMid: null }), null);
  const flushed = n.offerSent(1);
  assert.deepEqual(flushed, [
    { type: 'candidate', candidate: 'candidate:1', sdp_mid: '0' },
    { type: 'candidate', candidate: 'candidate:2' },
  ]);
  assert.deepEqual(n.pendingCandidates, []);
  assert.deepEqual(n.onLocalCandidate({ candidate: 'candidate:3', sdpMid: '1' }), {
    type: 'candidate',
    candidate: 'candidate:3',
    sdp_mid: '1',
  });
});

test('an answer to a server offer also releases the held candidates', () => {
  const n = new NegotiationState();
  n.onLocalCandidate({ candidate: 'candidate:1', sdpMid: '0' });
  assert.deepEqual(n.answerSent(), [{ type: 'candidate', candidate: 'candidate:1', sdp_mid: '0' }]);
  assert.deepEqual(n.answerSent(), [], 'flushed once');
});

test('end of candidates is sent once per run of candidates', () => {
  const n = new NegotiationState();
  n.offerSent(1);
  assert.deepEqual(n.onLocalCandidate(null), { type: 'candidate', candidate: '' });
  assert.equal(n.onLocalCandidate(null), null, 'a repeated end');
  assert.equal(n.onLocalCandidate({ candidate: '', sdpMid: '0' }), null, 'an empty candidate is an end too');
  n.onLocalCandidate({ candidate: 'candidate:9', sdpMid: '0' });
  assert.deepEqual(n.onLocalCandidate({ candidate: '', sdpMid: '0' }), { type: 'candidate', candidate: '', sdp_mid: '0' });
});

test('reset: a new peer connection starts over, offer ids keep counting', () => {
  const n = new NegotiationState();
  n.offerSent(/** @type {{id: number}} */ (n.wantOffer('stable')).id);
  n.wantOffer('have-local-offer');
  n.onLocalCandidate(null);
  n.reset();
  assert.equal(n.pendingOffer, null);
  assert.equal(n.shouldRenegotiate, false);
  assert.equal(n.onLocalCandidate({ candidate: 'candidate:1', sdpMid: '0' }), null, 'held again until a description');
  assert.deepEqual(n.onLocalCandidate(null), null, 'an end is not a repeat after the reset (held, too)');
  assert.equal(n.pendingCandidates.length, 2);
  assert.deepEqual(n.wantOffer('stable'), { action: 'offer', id: 2 });
});
