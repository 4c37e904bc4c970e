// The room state of the JS client without a browser or a server (room-state.js is plain state): participants
// joining, leaving and replaced, publications, mute, subscriptions labelled by mid after a negotiation, stream states,
// speakers, and what a dropped session keeps. Each server message gives the events the client emits, in order.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomState, toParticipant } from '../room-state.js';

const SELF = 'PA_self';

/** @param {string} id @param {any[]} [tracks] */
const raw = (id, tracks = []) => ({ id, identity: id.toLowerCase(), name: '', tracks });
/** @param {string} id @param {'audio'|'video'} [kind] */
const trackInfo = (id, kind = 'video') => ({ id, kind, source: kind === 'video' ? 'camera' : 'microphone', name: '', muted: false });

/** A joined room with the given others. @param {any[]} others */
function joined(others) {
  const room = new RoomState();
  const events = room.onJoined({ type: 'joined', participant: raw(SELF), participants: [raw(SELF), ...others] }, false);
  assert.deepEqual(events, [], 'the first join reports no diff');
  return room;
}

/** A transceiver as the peer connection lists it. @param {string} mid @param {string|null} dir @param {string} kind */
const tr = (mid, dir = 'recvonly', kind = 'video') => ({ mid, currentDirection: dir, receiver: { track: { kind, id: `mst-${mid}` } } });

/** @param {any[]} events */
const types = (events) => events.map((e) => e.type);

test('joined: the others, without self; the name falls back to the identity', () => {
  const room = joined([raw('PA_a', [trackInfo('TR_1')]), { id: 'PA_b', identity: 'bob', name: 'Bob' }]);
  assert.equal(room.selfId, SELF);
  assert.deepEqual([...room.participants.keys()], ['PA_a', 'PA_b']);
  assert.equal(room.participants.get('PA_a')?.name, 'pa_a');
  assert.equal(room.participants.get('PA_b')?.name, 'Bob');
  assert.deepEqual([...(room.participants.get('PA_a')?.tracks.keys() ?? [])], ['TR_1']);
  assert.deepEqual(toParticipant(undefined), { id: '', identity: '', name: '', tracks: new Map(), node: '', region: '' });
});

test('a participant names the cluster node that serves it, and its region (empty outside a cluster)', () => {
  const room = joined([{ ...raw('PA_a'), node: 'node-a', region: 'eu-west' }, raw('PA_b')]);
  assert.deepEqual([room.participants.get('PA_a')?.node, room.participants.get('PA_a')?.region], ['node-a', 'eu-west']);
  assert.deepEqual([room.participants.get('PA_b')?.node, room.participants.get('PA_b')?.region], ['', '']);
  room.apply({ type: 'participant_joined', participant: { ...raw('PA_c'), node: 'node-b', region: 'us-east' } });
  assert.equal(room.participants.get('PA_c')?.node, 'node-b');
});

test('a rejoin reports who left and who came while away', () => {
  const room = joined([raw('PA_a'), raw('PA_b')]);
  const before = room.participants.get('PA_a');
  const events = room.onJoined({ participant: raw(SELF), participants: [raw('PA_b'), raw('PA_c'), raw(SELF)] }, true);
  assert.deepEqual(events, [
    { type: 'participant_left', detail: { participantId: 'PA_a', reason: 'gone', participant: before } },
    { type: 'participant_joined', detail: { participant: room.participants.get('PA_c') } },
  ]);
  assert.deepEqual([...room.participants.keys()], ['PA_b', 'PA_c']);
});

test('participant_joined: added and reported; self ignored; the same id again replaces the entry', () => {
  const room = joined([]);
  assert.deepEqual(room.apply({ type: 'participant_joined', participant: raw(SELF) }), [], 'self');
  assert.equal(room.participants.size, 0);
  const events = room.apply({ type: 'participant_joined', participant: raw('PA_a', [trackInfo('TR_1')]) });
  assert.deepEqual(types(events), ['participant_joined']);
  assert.equal(/** @type {any} */ (events[0].detail).participant, room.participants.get('PA_a'));
  room.apply({ type: 'participant_joined', participant: { ...raw('PA_a'), name: 'Again' } });
  assert.equal(room.participants.size, 1);
  assert.equal(room.participants.get('PA_a')?.name, 'Again');
  assert.equal(room.participants.get('PA_a')?.tracks.size, 0, 'the new entry, not a merge');
});

test('participant_left: their received tracks and subscriptions go first, then the participant', () => {
  const room = joined([raw('PA_a', [trackInfo('TR_a1'), trackInfo('TR_a2', 'audio')]), raw('PA_b', [trackInfo('TR_b1')])]);
  room.apply({ type: 'subscribed', mid: 1, track_id: 'TR_a1', participant_id: 'PA_a', kind: 'video' });
  room.apply({ type: 'subscribed', mid: 2, track_id: 'TR_a2', participant_id: 'PA_a', kind: 'audio' });
  room.apply({ type: 'subscribed', mid: 3, track_id: 'TR_b1', participant_id: 'PA_b', kind: 'video' });
  room.apply({ type: 'stream_state', track_id: 'TR_a1', state: 'active', layer: 'f' });
  room.reconcile([tr('1'), tr('2', 'recvonly', 'audio'), tr('3')]);
  const a = room.participants.get('PA_a');
  const events = room.apply({ type: 'participant_left', participant_id: 'PA_a', reason: 'left' });
  assert.deepEqual(types(events), ['remote_track_removed', 'remote_track_removed', 'participant_left']);
  assert.deepEqual(
    events.slice(0, 2).map((e) => [/** @type {any} */ (e.detail).trackId, /** @type {any} */ (e.detail).reason]),
    [['TR_a1', 'participant_left'], ['TR_a2', 'participant_left']],
  );
  assert.deepEqual(events[2].detail, { participantId: 'PA_a', reason: 'left', participant: a });
  assert.deepEqual([...room.participants.keys()], ['PA_b']);
  assert.deepEqual([...room.remoteTracks.keys()], ['TR_b1'], "the other participant's track stays");
  assert.deepEqual([...room.subsByMid.keys()], ['3']);
  assert.equal(room.streamStates.has('TR_a1'), false);
  const unknown = room.apply({ type: 'participant_left', participant_id: 'PA_zz', reason: 'left' });
  assert.deepEqual(unknown, [{ type: 'participant_left', detail: { participantId: 'PA_zz', reason: 'left', participant: undefined } }]);
});

test('track_published and track_unpublished update the participant; own publications are not kept here', () => {
  const room = joined([raw('PA_a')]);
  const events = room.apply({ type: 'track_published', participant_id: 'PA_a', track: trackInfo('TR_1') });
  assert.deepEqual(events, [{ type: 'track_published', detail: { participantId: 'PA_a', track: trackInfo('TR_1') } }]);
  assert.equal(room.participants.get('PA_a')?.tracks.get('TR_1'), /** @type {any} */ (events[0].detail).track, 'the same object');
  const own = room.apply({ type: 'track_published', participant_id: SELF, track: { ...trackInfo('TR_own'), mid: '0' } });
  assert.deepEqual(types(own), ['track_published'], 'reported for own tracks too');
  assert.equal(room.participants.has(SELF), false);
  assert.deepEqual(types(room.apply({ type: 'track_published', participant_id: 'PA_nobody', track: trackInfo('TR_x') })), ['track_published']);

  room.apply({ type: 'subscribed', mid: '4', track_id: 'TR_1', participant_id: 'PA_a', kind: 'video' });
  room.apply({ type: 'stream_state', track_id: 'TR_1', state: 'active', layer: null });
  room.reconcile([tr('4')]);
  const gone = room.apply({ type: 'track_unpublished', participant_id: 'PA_a', track_id: 'TR_1' });
  assert.deepEqual(types(gone), ['remote_track_removed', 'track_unpublished']);
  assert.equal(/** @type {any} */ (gone[0].detail).reason, 'unpublished');
  assert.deepEqual(gone[1].detail, { participantId: 'PA_a', trackId: 'TR_1' });
  assert.equal(room.participants.get('PA_a')?.tracks.size, 0);
  assert.equal(room.streamStates.has('TR_1'), false);
  assert.deepEqual(types(room.apply({ type: 'track_unpublished', participant_id: 'PA_a', track_id: 'TR_1' })), ['track_unpublished'], 'again: nothing to remove');
});

test('track_muted updates the publication', () => {
  const room = joined([raw('PA_a', [trackInfo('TR_1', 'audio')])]);
  assert.deepEqual(room.apply({ type: 'track_muted', participant_id: 'PA_a', track_id: 'TR_1', muted: 1 }), [
    { type: 'track_muted', detail: { participantId: 'PA_a', trackId: 'TR_1', muted: true } },
  ]);
  assert.equal(room.participants.get('PA_a')?.tracks.get('TR_1')?.muted, true);
  room.apply({ type: 'track_muted', participant_id: 'PA_a', track_id: 'TR_1' });
  assert.equal(room.participants.get('PA_a')?.tracks.get('TR_1')?.muted, false);
  assert.equal(room.apply({ type: 'track_muted', participant_id: 'PA_q', track_id: 'TR_q', muted: true }).length, 1, 'unknown: reported');
});

test('reconcile: subscribed m-lines that receive become remote tracks, once', () => {
  const room = joined([raw('PA_a')]);
  assert.deepEqual(room.apply({ type: 'subscribed', mid: 1, track_id: 'TR_1', participant_id: 'PA_a', kind: 'video' }), []);
  room.apply({ type: 'subscribed', mid: 2, track_id: 'TR_2', participant_id: 'PA_a', kind: 'audio' });
  assert.deepEqual(room.reconcile([tr('1', null), tr('2', 'inactive', 'audio')]), [], 'not negotiated to receive yet');
  const transceivers = [tr('0', 'sendonly'), tr('1'), tr('2', 'sendrecv', 'audio')];
  const events = room.reconcile(transceivers);
  assert.deepEqual(types(events), ['remote_track_added', 'remote_track_added']);
  assert.deepEqual(events[0].detail, {
    trackId: 'TR_1',
    participantId: 'PA_a',
    kind: 'video',
    mid: '1',
    track: transceivers[1].receiver.track,
    receiver: transceivers[1].receiver,
    streamState: null,
  });
  assert.equal(/** @type {any} */ (events[1].detail).kind, 'audio', "the kind is the receiver track's");
  assert.deepEqual(room.reconcile(transceivers), [], 'already received: not added again');
});

test('reconcile: a track whose m-line stopped receiving or now carries another track is removed', () => {
  const room = joined([raw('PA_a'), raw('PA_b')]);
  room.apply({ type: 'subscribed', mid: 1, track_id: 'TR_1', participant_id: 'PA_a', kind: 'video' });
  room.apply({ type: 'subscribed', mid: 2, track_id: 'TR_2', participant_id: 'PA_a', kind: 'video' });
  room.reconcile([tr('1'), tr('2')]);
  // The server reuses mid 1 for another track; mid 2 became inactive.
  room.apply({ type: 'subscribed', mid: 1, track_id: 'TR_3', participant_id: 'PA_b', kind: 'video' });
  const events = room.reconcile([tr('1'), tr('2', 'inactive')]);
  assert.deepEqual(
    events.map((e) => [e.type, /** @type {any} */ (e.detail).trackId, /** @type {any} */ (e.detail).reason]),
    [
      ['remote_track_removed', 'TR_1', 'renegotiated'],
      ['remote_track_removed', 'TR_2', 'renegotiated'],
      ['remote_track_added', 'TR_3', undefined],
    ],
  );
  assert.deepEqual([...room.remoteTracks.keys()], ['TR_3']);
  const noLine = room.reconcile([]);
  assert.deepEqual(noLine.map((e) => [e.type, /** @type {any} */ (e.detail).trackId]), [['remote_track_removed', 'TR_3']], 'its m-line is gone');
  assert.equal(room.remoteTracks.size, 0);
});

test('unsubscribed: the subscription, its stream state and the received track go', () => {
  const room = joined([raw('PA_a')]);
  room.apply({ type: 'subscribed', mid: 1, track_id: 'TR_1', participant_id: 'PA_a', kind: 'video' });
  room.apply({ type: 'subscribed', mid: 2, track_id: 'TR_2', participant_id: 'PA_a', kind: 'video' });
  room.apply({ type: 'stream_state', track_id: 'TR_1', state: 'paused', reason: 'bandwidth' });
  room.reconcile([tr('1'), tr('2')]);
  const events = room.apply({ type: 'unsubscribed', track_id: 'TR_1', reason: 'permission_revoked' });
  assert.deepEqual(types(events), ['remote_track_removed']);
  assert.equal(/** @type {any} */ (events[0].detail).reason, 'permission_revoked');
  assert.equal(room.subsByMid.has('1'), false);
  assert.equal(room.streamStates.has('TR_1'), false);
  const plain = room.apply({ type: 'unsubscribed', track_id: 'TR_2' });
  assert.equal(/** @type {any} */ (plain[0].detail).reason, 'unsubscribed', 'default reason');
  assert.deepEqual(room.apply({ type: 'unsubscribed', track_id: 'TR_2' }), [], 'nothing left to remove');
});

test('stream_state: kept per track (also before it is received), with the previous state', () => {
  const room = joined([raw('PA_a')]);
  assert.deepEqual(room.apply({ type: 'stream_state', state: 'active' }), [], 'malformed: no track id');
  assert.deepEqual(room.apply({ type: 'stream_state', track_id: 'TR_1', state: 3 }), [], 'malformed: state');
  assert.equal(room.streamStates.size, 0);

  const unknown = room.apply({ type: 'stream_state', track_id: 'TR_9', state: 'active', layer: 'q' });
  assert.equal(/** @type {any} */ (unknown[0].detail).participantId, null, 'no subscription: no participant');

  room.apply({ type: 'subscribed', mid: 1, track_id: 'TR_1', participant_id: 'PA_a', kind: 'video' });
  const first = room.apply({ type: 'stream_state', track_id: 'TR_1', state: 'active', layer: 'h', reason: 7 });
  const st1 = { trackId: 'TR_1', participantId: 'PA_a', state: 'active', layer: 'h', reason: null };
  assert.deepEqual(first, [{ type: 'stream_state', detail: { ...st1, previous: null } }]);
  assert.deepEqual(room.streamStates.get('TR_1'), st1);

  const [added] = room.reconcile([tr('1')]);
  assert.deepEqual(/** @type {any} */ (added.detail).streamState, st1, 'a track received later starts with the kept state');

  const second = room.apply({ type: 'stream_state', track_id: 'TR_1', state: 'paused', layer: 'h', reason: 'bandwidth' });
  const st2 = { trackId: 'TR_1', participantId: 'PA_a', state: 'paused', layer: 'h', reason: 'bandwidth' };
  assert.deepEqual(second[0].detail, { ...st2, previous: st1 });
  assert.deepEqual(room.remoteTracks.get('TR_1')?.streamState, st2, 'the received track carries it too');
});

test('active_speakers', () => {
  const room = joined([]);
  const speakers = [{ participant_id: 'PA_a', level: 0.5 }];
  assert.deepEqual(room.apply({ type: 'active_speakers', speakers }), [{ type: 'active_speakers', detail: { speakers } }]);
  assert.deepEqual(room.activeSpeakers, speakers);
  assert.deepEqual(room.apply({ type: 'active_speakers', speakers: 'x' }), [{ type: 'active_speakers', detail: { speakers: [] } }]);
});

test('a dropped session: received tracks, subscriptions, stream states and speakers go; participants stay', () => {
  const room = joined([raw('PA_a', [trackInfo('TR_1')])]);
  room.apply({ type: 'subscribed', mid: 1, track_id: 'TR_1', participant_id: 'PA_a', kind: 'video' });
  room.apply({ type: 'stream_state', track_id: 'TR_1', state: 'active', layer: 'f' });
  room.apply({ type: 'active_speakers', speakers: [{ participant_id: 'PA_a', level: 1 }] });
  room.reconcile([tr('1')]);
  const events = room.dropSession();
  assert.deepEqual(events.map((e) => [e.type, /** @type {any} */ (e.detail).reason]), [['remote_track_removed', 'reconnecting']]);
  assert.equal(room.remoteTracks.size, 0);
  assert.equal(room.subsByMid.size, 0);
  assert.equal(room.streamStates.size, 0);
  assert.deepEqual(room.activeSpeakers, []);
  assert.deepEqual([...room.participants.keys()], ['PA_a']);
  assert.deepEqual(room.removeAllRemote('closed'), [], 'nothing left');
});

test('messages that are not about the room change nothing', () => {
  const room = joined([raw('PA_a')]);
  for (const type of ['offer', 'answer', 'pong', 'chat_message', 'set_layers', 'room_updated']) {
    assert.deepEqual(room.apply({ type, participant_id: 'PA_a', track_id: 'TR_1' }), [], type);
  }
  assert.deepEqual([...room.participants.keys()], ['PA_a']);
});
