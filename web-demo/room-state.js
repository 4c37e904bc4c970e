// @ts-check
/**
 * The room as the Courier browser client sees it (docs/protocol.md, "Server → client"): the other participants
 * and their tracks, what this client is subscribed to (by `mid`), the tracks it receives, what the server forwards
 * of each (`stream_state`), and who is talking.
 *
 * Plain state with no I/O: {@link RoomState} takes the server's messages and returns the events they cause, in the
 * order the client emits them. The one input from the browser is the list of transceivers after a negotiation
 * ({@link RoomState#reconcile}), from which it decides which received tracks exist; the receivers in it are only
 * carried along, never called.
 *
 * @module room-state
 */

import { event } from './events.js';

/**
 * @typedef {import('./events.js').CourierEvent} CourierEvent
 *
 * @typedef {import('./protocol').ServerMsg} ServerMsg
 * @typedef {import('./protocol').ParticipantInfo} ParticipantInfo
 * @typedef {import('./protocol').SpeakerInfo} SpeakerInfo
 * @typedef {import('./protocol').MediaKind} Kind
 * @typedef {import('./protocol').TrackSource} Source
 * @typedef {import('./protocol').TrackInfo} TrackInfo   A published track as the server describes it (`mid`: only
 *                                                        on the publisher's own copy).
 *
 * @typedef {object} Participant
 * @property {string} id             `PA_…`
 * @property {string} identity
 * @property {string} name
 * @property {Map<string, TrackInfo>} tracks   by track id
 * @property {string} node           the cluster node that serves it; '' outside a cluster
 * @property {string} region         that node's region; '' outside a cluster
 *
 * @typedef {object} StreamState      What the server forwards of a received track (`stream_state`).
 * @property {string} trackId
 * @property {string|null} participantId
 * @property {'active'|'paused'|string} state
 * @property {string|null} layer     rid of the simulcast layer forwarded (`q`/`h`/`f`); null if not simulcast
 * @property {'bandwidth'|string|null} reason  why paused (`bandwidth`: the subscriber's downlink is too small)
 *
 * @typedef {object} RemoteTrack      A track this client receives.
 * @property {string} trackId
 * @property {string} participantId
 * @property {Kind} kind
 * @property {string} mid
 * @property {MediaStreamTrack} track
 * @property {RTCRtpReceiver} receiver
 * @property {StreamState|null} streamState  latest `stream_state` from the server (also in `client.streamStates`)
 *
 * @typedef {object} Subscription     A track the server sends on an m-line of this client (`subscribed`).
 * @property {string} trackId
 * @property {string} participantId
 * @property {Kind} kind
 * @property {string} mid
 *
 * @typedef {Pick<RTCRtpTransceiver, 'mid'|'currentDirection'|'receiver'>} TransceiverView
 */
/**
 * The server message of one `type`.
 * @template {ServerMsg['type']} T
 * @typedef {Extract<ServerMsg, {type: T}>} ServerMsgOf
 */

/**
 * @param {Partial<ParticipantInfo>|undefined} raw  a participant as the server sends it
 * @returns {Participant}
 */
export function toParticipant(raw) {
  const tracks = new Map();
  for (const t of raw?.tracks ?? []) tracks.set(t.id, { ...t });
  return {
    id: raw?.id ?? '',
    identity: raw?.identity ?? '',
    name: raw?.name || raw?.identity || '',
    tracks,
    node: raw?.node ?? '',
    region: raw?.region ?? '',
  };
}

/**
 * Whether a transceiver currently receives media.
 * @param {TransceiverView|undefined} tr
 */
const receiving = (tr) =>
  !!tr && tr.currentDirection !== 'stopped' && (tr.currentDirection === 'recvonly' || tr.currentDirection === 'sendrecv');

export class RoomState {
  /** @param {(...args: any[]) => void} [log] */
  constructor(log = () => {}) {
    this._log = log;
    /** Own `PA_…` id (from `joined`); own tracks are not kept here. @type {string|null} */
    this.selfId = null;
    /** Other participants, by id. @type {Map<string, Participant>} */
    this.participants = new Map();
    /** Subscriptions announced by `subscribed`, by mid. @type {Map<string, Subscription>} */
    this.subsByMid = new Map();
    /** Latest `stream_state` of each subscribed track, by track id. @type {Map<string, StreamState>} */
    this.streamStates = new Map();
    /** Tracks being received, by track id. @type {Map<string, RemoteTrack>} */
    this.remoteTracks = new Map();
    /** Who is talking, loudest first. @type {SpeakerInfo[]} */
    this.activeSpeakers = [];
  }

  /**
   * `joined`: the room's participants replace the list. After a reconnect (`rejoin`) the events say who left and
   * who came meanwhile (`joined` itself is the client's to emit).
   * @param {ServerMsgOf<'joined'>} msg
   * @param {boolean} rejoin
   * @returns {CourierEvent[]}
   */
  onJoined(msg, rejoin) {
    this.selfId = msg.participant?.id ?? null;
    const before = this.participants;
    this.participants = new Map();
    for (const raw of msg.participants ?? []) {
      const p = toParticipant(raw);
      if (p.id !== this.selfId) this.participants.set(p.id, p);
    }
    /** @type {CourierEvent[]} */
    const events = [];
    if (rejoin) {
      for (const [id, p] of before) {
        if (!this.participants.has(id)) {
          events.push(event('participant_left', { participantId: id, reason: 'gone', participant: p }));
        }
      }
      for (const [id, p] of this.participants) {
        if (!before.has(id)) events.push(event('participant_joined', { participant: p }));
      }
    }
    return events;
  }

  /**
   * A server message about the room. Messages of other types return no events.
   * @param {ServerMsg} msg
   * @returns {CourierEvent[]}
   */
  apply(msg) {
    switch (msg.type) {
      case 'participant_joined': {
        const p = toParticipant(msg.participant);
        if (p.id === this.selfId) return [];
        this.participants.set(p.id, p);
        return [event('participant_joined', { participant: p })];
      }
      case 'participant_left': {
        const p = this.participants.get(msg.participant_id);
        this.participants.delete(msg.participant_id);
        /** @type {CourierEvent[]} */
        const events = [];
        for (const [mid, sub] of [...this.subsByMid]) {
          if (sub.participantId === msg.participant_id) {
            this.subsByMid.delete(mid);
            this.streamStates.delete(sub.trackId);
            events.push(...this.removeRemote(sub.trackId, 'participant_left'));
          }
        }
        events.push(event('participant_left', { participantId: msg.participant_id, reason: msg.reason, participant: p }));
        return events;
      }
      case 'track_published': {
        const info = /** @type {TrackInfo} */ ({ ...msg.track });
        if (msg.participant_id !== this.selfId) this.participants.get(msg.participant_id)?.tracks.set(info.id, info);
        return [event('track_published', { participantId: msg.participant_id, track: info })];
      }
      case 'track_unpublished': {
        this.participants.get(msg.participant_id)?.tracks.delete(msg.track_id);
        this.streamStates.delete(msg.track_id);
        const events = this.removeRemote(msg.track_id, 'unpublished');
        events.push(event('track_unpublished', { participantId: msg.participant_id, trackId: msg.track_id }));
        return events;
      }
      case 'track_muted': {
        const t = this.participants.get(msg.participant_id)?.tracks.get(msg.track_id);
        if (t) t.muted = !!msg.muted;
        return [event('track_muted', { participantId: msg.participant_id, trackId: msg.track_id, muted: !!msg.muted })];
      }
      case 'subscribed':
        this.subsByMid.set(String(msg.mid), {
          trackId: msg.track_id,
          participantId: msg.participant_id,
          kind: msg.kind,
          mid: String(msg.mid),
        });
        return [];
      case 'unsubscribed': {
        this.streamStates.delete(msg.track_id);
        for (const [mid, sub] of [...this.subsByMid]) {
          if (sub.trackId === msg.track_id) this.subsByMid.delete(mid);
        }
        return this.removeRemote(msg.track_id, msg.reason ?? 'unsubscribed');
      }
      case 'active_speakers':
        this.activeSpeakers = Array.isArray(msg.speakers) ? msg.speakers : [];
        return [event('active_speakers', { speakers: this.activeSpeakers })];
      case 'stream_state':
        return this.onStreamState(msg);
      default:
        return [];
    }
  }

  /**
   * `stream_state`: what the server forwards of a received track (which simulcast layer, or that it is paused).
   * Kept even before the track is received.
   * @param {ServerMsgOf<'stream_state'>} msg
   * @returns {CourierEvent[]}
   */
  onStreamState(msg) {
    if (typeof msg.track_id !== 'string' || typeof msg.state !== 'string') {
      this._log('ignoring malformed stream_state', msg);
      return [];
    }
    const remote = this.remoteTracks.get(msg.track_id);
    const sub = [...this.subsByMid.values()].find((x) => x.trackId === msg.track_id);
    /** @type {StreamState} */
    const st = {
      trackId: msg.track_id,
      participantId: remote?.participantId ?? sub?.participantId ?? null,
      state: msg.state,
      layer: typeof msg.layer === 'string' ? msg.layer : null,
      reason: typeof msg.reason === 'string' ? msg.reason : null,
    };
    const previous = this.streamStates.get(msg.track_id) ?? null;
    this.streamStates.set(msg.track_id, st);
    if (remote) remote.streamState = st;
    return [event('stream_state', { ...st, previous })];
  }

  /**
   * After every completed negotiation: label receiving transceivers with the track ids announced by `subscribed`,
   * and drop received tracks whose m-line no longer receives (or now carries another track).
   * @param {TransceiverView[]} transceivers  the peer connection's, after the negotiation
   * @returns {CourierEvent[]}
   */
  reconcile(transceivers) {
    /** @type {Map<string, TransceiverView>} */
    const byMid = new Map();
    for (const tr of transceivers) if (tr.mid != null) byMid.set(tr.mid, tr);
    /** @type {CourierEvent[]} */
    const events = [];
    for (const remote of [...this.remoteTracks.values()]) {
      const sub = this.subsByMid.get(remote.mid);
      if (!sub || sub.trackId !== remote.trackId || !receiving(byMid.get(remote.mid))) {
        events.push(...this.removeRemote(remote.trackId, 'renegotiated'));
      }
    }
    for (const [mid, sub] of this.subsByMid) {
      const tr = byMid.get(mid);
      if (!tr || !receiving(tr) || this.remoteTracks.has(sub.trackId)) continue;
      /** @type {RemoteTrack} */
      const remote = {
        trackId: sub.trackId,
        participantId: sub.participantId,
        kind: /** @type {Kind} */ (tr.receiver.track.kind),
        mid,
        track: tr.receiver.track,
        receiver: tr.receiver,
        streamState: this.streamStates.get(sub.trackId) ?? null,
      };
      this.remoteTracks.set(sub.trackId, remote);
      events.push(event('remote_track_added', remote));
    }
    return events;
  }

  /**
   * Stop receiving a track (if it is received).
   * @param {string} trackId
   * @param {string} reason
   * @returns {CourierEvent[]}
   */
  removeRemote(trackId, reason) {
    const remote = this.remoteTracks.get(trackId);
    if (!remote) return [];
    this.remoteTracks.delete(trackId);
    return [event('remote_track_removed', { ...remote, reason })];
  }

  /**
   * Every received track is gone (`closed`, or `reconnecting`).
   * @param {string} reason
   * @returns {CourierEvent[]}
   */
  removeAllRemote(reason) {
    return [...this.remoteTracks.keys()].flatMap((id) => this.removeRemote(id, reason));
  }

  /**
   * The connection dropped and the client joins again: received tracks, subscriptions, stream states and speakers
   * belong to the old session and go; the participants stay (compared with the room's list on return).
   * @returns {CourierEvent[]}
   */
  dropSession() {
    const events = this.removeAllRemote('reconnecting');
    this.subsByMid.clear();
    this.streamStates.clear();
    this.activeSpeakers = [];
    return events;
  }

  /**
   * The subscription on an m-line, if any.
   * @param {string} mid
   * @returns {Subscription|undefined}
   */
  subscriptionByMid(mid) {
    return this.subsByMid.get(mid);
  }
}
