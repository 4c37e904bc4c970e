// @ts-check
/**
 * What the Courier browser client publishes: the camera and microphone (optionally the camera as three simulcast
 * layers), a screen share, device switches, mute, and dynacast (`set_layers`: the server pauses the simulcast
 * layers nobody needs).
 *
 * It exists to keep the own tracks' life apart from the connection's: {@link Publisher} owns the `LocalTrack`s, the
 * captured stream, the promises waiting for `track_published`, and the per-sender `setParameters()` queue, and it
 * works through the client (its peer connection, queue, `_negotiate`, `_send`, `_emit`). The decisions with no
 * browser call in them are plain functions here ({@link transceiverInit}, {@link offerTracks},
 * {@link mergeLayerRequest}, {@link applyWanted}, {@link layerStates}), unit-tested in Node.
 *
 * @module publisher
 */

import { CourierError } from './signal.js';

/**
 * @typedef {import('./room-state.js').Kind} Kind
 * @typedef {import('./room-state.js').Source} Source
 * @typedef {import('./room-state.js').TrackInfo} TrackInfo
 * @typedef {import('./courier.js').CourierClient} CourierClient
 * @typedef {import('./protocol').OfferTrack} OfferTrack
 * @typedef {Extract<import('./protocol').ServerMsg, {type: 'set_layers'}>} SetLayersMsg
 *
 * @typedef {object} LocalTrack       A track this client publishes.
 * @property {MediaStreamTrack} track
 * @property {Kind} kind
 * @property {Source} source
 * @property {string} name
 * @property {RTCRtpTransceiver} transceiver
 * @property {string|null} mid       set once the offer carrying it is created
 * @property {string|null} trackId   set when the server confirms with `track_published`
 * @property {boolean} muted
 * @property {LayerState[]|null} layers  simulcast encodings as last applied (after `set_layers`); null before any
 *
 * @typedef {object} LayerState       One simulcast encoding of a published track (dynacast, `set_layers`).
 * @property {string} rid            `q`, `h` or `f`
 * @property {boolean} active        false: the browser does not encode this layer
 *
 * @typedef {object} LayerJob         (internal) dynacast state of one sender
 * @property {Map<string, boolean>} want    latest `active` asked for, by rid
 * @property {boolean} busy                 a setParameters() run is in progress
 * @property {Promise<void>} running        resolves when the current (or last) run is done
 *
 * @typedef {{track: MediaStreamTrack, source?: Source, name?: string, stream?: MediaStream, local?: LocalTrack}} PublishSpec
 *   `local`: an own track published again after a reconnect (keeps its muted state)
 */

export const DEFAULT_VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
export const DEFAULT_AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** The camera's simulcast layers: rids q/h/f at ¼, ½ and full size. */
export const SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 }),
]);

/**
 * How to add the send transceiver of a track: send only, in its stream, and the camera as simulcast layers when
 * asked (never a screen share, never audio).
 * @param {{kind: Kind, source: Source}} local
 * @param {MediaStream|undefined} stream
 * @param {boolean} simulcast
 * @returns {RTCRtpTransceiverInit}
 */
export function transceiverInit(local, stream, simulcast) {
  /** @type {RTCRtpTransceiverInit} */
  const init = { direction: 'sendonly', streams: stream ? [stream] : [] };
  if (local.kind === 'video' && local.source !== 'screen' && simulcast) {
    init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
  }
  return init;
}

/**
 * The `tracks` of an offer: every own track with an m-line that sends.
 * @param {Pick<LocalTrack, 'mid'|'source'|'name'|'transceiver'>[]} locals
 * @returns {OfferTrack[]}
 */
export function offerTracks(locals) {
  return locals
    .filter((l) => l.mid != null && (l.transceiver.direction === 'sendonly' || l.transceiver.direction === 'sendrecv'))
    .map((l) => ({ mid: /** @type {string} */ (l.mid), source: l.source, name: l.name }));
}

/**
 * Merge a `set_layers` request into the latest wanted state of a sender, by rid. Rids the sender lacks are ignored.
 * @param {Map<string, boolean>} want   updated in place
 * @param {unknown[]} layers            the message's `layers`
 * @param {Set<string|undefined>} rids  the sender's encodings
 * @returns {boolean} whether anything in the request concerned this sender
 */
export function mergeLayerRequest(want, layers, rids) {
  let relevant = false;
  for (const raw of layers) {
    const l = /** @type {any} */ (raw);
    if (!l || typeof l.rid !== 'string' || !rids.has(l.rid)) continue;
    want.set(l.rid, l.active !== false);
    relevant = true;
  }
  return relevant;
}

/**
 * Set `active` on the encodings that differ from what is wanted.
 * @param {RTCRtpEncodingParameters[]} encodings  updated in place
 * @param {Map<string, boolean>} want
 * @returns {boolean} whether any changed
 */
export function applyWanted(encodings, want) {
  let changed = false;
  for (const e of encodings) {
    const w = e.rid != null ? want.get(e.rid) : undefined;
    if (w !== undefined && e.active !== w) {
      e.active = w;
      changed = true;
    }
  }
  return changed;
}

/**
 * The layer states of a sender's encodings (those with a rid).
 * @param {RTCRtpEncodingParameters[]} encodings
 * @returns {LayerState[]}
 */
export function layerStates(encodings) {
  return encodings
    .filter((e) => e.rid != null)
    .map((e) => ({ rid: /** @type {string} */ (e.rid), active: e.active !== false }));
}

/**
 * The own track `which` names: a track id, the MediaStreamTrack, or the LocalTrack itself.
 * @param {LocalTrack[]} locals
 * @param {string|MediaStreamTrack|LocalTrack} which
 * @returns {LocalTrack|undefined}
 */
export function findLocal(locals, which) {
  if (typeof which === 'string') return locals.find((l) => l.trackId === which);
  if (typeof MediaStreamTrack !== 'undefined' && which instanceof MediaStreamTrack) {
    return locals.find((l) => l.track === which);
  }
  return locals.find((l) => l === which);
}

/**
 * Move one codec (e.g. 'video/VP8') to the front of a transceiver's codec list. Best effort.
 * @param {RTCRtpTransceiver} transceiver
 * @param {string} mimeType
 */
export function preferCodec(transceiver, mimeType) {
  try {
    if (typeof transceiver.setCodecPreferences !== 'function') return;
    const caps = RTCRtpSender.getCapabilities('video');
    if (!caps) return;
    const want = mimeType.toLowerCase();
    const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === want);
    if (first.length === 0) return;
    const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== want);
    transceiver.setCodecPreferences([...first, ...rest]);
  } catch {
    // Some browsers only accept receiver capabilities here; the default order is fine too.
  }
}

/** The own tracks of a client (`client.localTracks`, `client.localStream`). */
export class Publisher {
  /** @param {CourierClient} client */
  constructor(client) {
    this.client = client;
    /** Own published (or being published) tracks, in publish order. @type {LocalTrack[]} */
    this.tracks = [];
    /** The MediaStream of the captured camera/microphone (for a local preview). @type {MediaStream|null} */
    this.localStream = null;
    this.ownsLocalStream = false;
    /** @type {Map<LocalTrack, {resolve:(v:any)=>void, reject:(e:any)=>void, timer:any}>} */
    this.waiters = new Map();
    /**
     * Dynacast, per own track: the layer states the server last asked for (merged by rid) and the sender update
     * in progress. Only one setParameters() runs per sender; whatever arrives meanwhile is applied after it.
     * @type {Map<LocalTrack, LayerJob>}
     */
    this.layerJobs = new Map();
    /** `set_layers` for own tracks not yet confirmed by `track_published`, by track id @type {Map<string, SetLayersMsg>} */
    this.earlySetLayers = new Map();
  }

  /**
   * Capture camera and/or microphone (or take `options.localStream`) and publish them.
   * @param {{audio?: boolean, video?: boolean}} want
   * @returns {Promise<Promise<LocalTrack>[]>}
   */
  async publishMedia(want) {
    const client = this.client;
    let stream = client.options.localStream ?? null;
    if (!stream) {
      if (!want.audio && !want.video) return [];
      if (!navigator.mediaDevices?.getUserMedia) {
        throw new CourierError('media_unavailable', 'getUserMedia is not available (insecure context?)');
      }
      try {
        stream = await navigator.mediaDevices.getUserMedia({
          audio: want.audio ? { ...DEFAULT_AUDIO, ...client.options.audioConstraints } : false,
          video: want.video ? { ...DEFAULT_VIDEO, ...client.options.videoConstraints } : false,
        });
      } catch (err) {
        const e = /** @type {Error} */ (err);
        throw new CourierError('media_unavailable', `getUserMedia failed: ${e.name}: ${e.message}`);
      }
      this.ownsLocalStream = true;
    }
    if (client.state !== 'joined') {
      if (this.ownsLocalStream) stream.getTracks().forEach((t) => t.stop());
      throw new CourierError('closed', 'left before the media was captured');
    }
    this.localStream = stream;
    const tracks = [...stream.getAudioTracks(), ...stream.getVideoTracks()];
    // All tracks in one offer.
    const confirmations = this.publishTracks(
      tracks.map((track) => ({ track, source: track.kind === 'audio' ? 'microphone' : 'camera', stream })),
    );
    // Keep the rejections from being unhandled; errors are also emitted as `error` events.
    confirmations.forEach((p) => p.catch(() => {}));
    return confirmations;
  }

  /**
   * Add send transceivers for several tracks and negotiate once.
   * @param {PublishSpec[]} specs
   * @returns {Promise<LocalTrack>[]}
   */
  publishTracks(specs) {
    const client = this.client;
    if (client.state !== 'joined' || !client.pc) {
      return specs.map(() => Promise.reject(new CourierError('bad_state', `cannot publish in state ${client.state}`)));
    }
    /** @type {LocalTrack[]} */
    const locals = [];
    const confirmations = specs.map(({ track, source, name, local: again }) => {
      const kind = /** @type {Kind} */ (track.kind);
      /** @type {LocalTrack} */
      const local = again ?? {
        track,
        kind,
        source: source ?? (kind === 'audio' ? 'microphone' : 'camera'),
        name: name ?? '',
        transceiver: /** @type {any} */ (null),
        mid: null,
        trackId: null,
        muted: false,
        layers: null,
      };
      locals.push(local);
      return /** @type {Promise<LocalTrack>} */ (
        new Promise((resolve, reject) => {
          const timer = setTimeout(() => {
            this.waiters.delete(local);
            reject(new CourierError('timeout', `no track_published for the ${kind} track`));
          }, client.options.publishTimeoutMs);
          this.waiters.set(local, { resolve, reject, timer });
        })
      );
    });
    client._enqueue(async () => {
      const pc = /** @type {RTCPeerConnection} */ (client.pc);
      if (client.state !== 'joined') return;
      locals.forEach((local, i) => {
        const stream = specs[i].stream ?? (this.localStream?.getTracks().includes(local.track) ? this.localStream : undefined);
        local.transceiver = pc.addTransceiver(local.track, transceiverInit(local, stream, !!client.options.simulcast));
        if (local.kind === 'video' && client.options.preferVideoCodec) {
          preferCodec(local.transceiver, client.options.preferVideoCodec);
        }
        this.tracks.push(local);
      });
      await client._negotiate();
    });
    return confirmations;
  }

  /**
   * After a reconnect: publish again every own track still live, in one negotiation (they keep their
   * MediaStreamTracks and mute state).
   */
  republish() {
    const again = this.tracks.filter((l) => l.track.readyState === 'live');
    this.tracks = [];
    if (again.length) {
      const specs = again.map((l) => ({ track: l.track, source: l.source, name: l.name, local: l }));
      const confirmations = this.publishTracks(specs);
      confirmations.forEach((p) => p.catch(() => {}));
    }
  }

  /**
   * Put another device's capture on the camera's or microphone's sender (no renegotiation).
   * @param {Kind} kind
   * @param {string} deviceId
   * @returns {Promise<LocalTrack>}
   */
  async switchDevice(kind, deviceId) {
    const client = this.client;
    const source = kind === 'audio' ? 'microphone' : 'camera';
    const local = this.tracks.find((l) => l.kind === kind && l.source === source);
    if (!local) throw new CourierError('track_not_found', `no ${source} is published`);
    const base =
      kind === 'audio'
        ? { ...DEFAULT_AUDIO, ...client.options.audioConstraints }
        : { ...DEFAULT_VIDEO, ...client.options.videoConstraints };
    /** @type {MediaStream} */
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ [kind]: { ...base, deviceId: { exact: deviceId } } });
    } catch (err) {
      const e = /** @type {Error} */ (err);
      throw new CourierError('media_unavailable', `getUserMedia failed: ${e.name}: ${e.message}`);
    }
    const track = stream.getTracks()[0];
    track.enabled = !local.muted;
    const old = local.track;
    // Without a sender (reconnecting) the next publish takes `local.track`.
    if (local.transceiver) await local.transceiver.sender.replaceTrack(track);
    local.track = track;
    if (this.localStream?.getTracks().includes(old)) {
      this.localStream.removeTrack(old);
      this.localStream.addTrack(track);
    }
    old.stop();
    client._emit('local_track_replaced', { localTrack: local, previous: old });
    return local;
  }

  /**
   * Ask for a screen (`getDisplayMedia`) and publish it as `screen` (and its sound as `screen_audio`).
   * @param {{audio?: boolean}} opts
   * @returns {Promise<LocalTrack>}
   */
  async shareScreen({ audio = false }) {
    const client = this.client;
    if (client.state !== 'joined') throw new CourierError('bad_state', `cannot share the screen in state ${client.state}`);
    if (this.tracks.some((l) => l.source === 'screen')) throw new CourierError('bad_state', 'already sharing the screen');
    if (!navigator.mediaDevices?.getDisplayMedia) {
      throw new CourierError('media_unavailable', 'screen sharing is not available in this browser');
    }
    /** @type {MediaStream} */
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15, max: 30 } }, audio });
    } catch (err) {
      const e = /** @type {Error} */ (err);
      throw new CourierError('media_unavailable', `getDisplayMedia failed: ${e.name}: ${e.message}`);
    }
    const [video] = stream.getVideoTracks();
    if ('contentHint' in video) video.contentHint = 'detail'; // text stays sharp; the frame rate gives way first
    /** @type {PublishSpec[]} */
    const specs = [{ track: video, source: 'screen', stream }];
    for (const a of stream.getAudioTracks()) specs.push({ track: a, source: 'screen_audio', stream });
    video.addEventListener('ended', () => {
      this.stopScreenShare().catch(() => {});
    });
    const [confirmed, ...rest] = this.publishTracks(specs);
    rest.forEach((p) => p.catch(() => {}));
    return confirmed;
  }

  /** Unpublish `screen` and `screen_audio` and release the capture. */
  async stopScreenShare() {
    const sharing = this.tracks.filter(
      (t) => (t.source === 'screen' || t.source === 'screen_audio') && !(/** @type {any} */ (t)._stopping),
    );
    for (const l of sharing) /** @type {any} */ (l)._stopping = true;
    for (const l of sharing) await this.unpublish(l);
  }

  /**
   * Stop publishing a track (its m-line becomes `inactive`). Runs in the client's queue.
   * @param {string|MediaStreamTrack|LocalTrack} which
   * @returns {Promise<void>}
   */
  unpublish(which) {
    const client = this.client;
    return client._enqueue(async () => {
      const local = findLocal(this.tracks, which);
      if (!local) throw new CourierError('track_not_found', 'no such local track');
      this.tracks = this.tracks.filter((l) => l !== local);
      this.layerJobs.delete(local);
      if (local.transceiver && local.transceiver.currentDirection !== 'stopped') {
        await local.transceiver.sender.replaceTrack(null);
        local.transceiver.direction = 'inactive';
      }
      local.track.stop();
      client._emit('local_track_unpublished', { localTrack: local });
      await client._negotiate();
    });
  }

  /**
   * @param {string|MediaStreamTrack|LocalTrack|Kind} which
   * @param {boolean} muted
   */
  setMuted(which, muted) {
    const targets =
      which === 'audio' || which === 'video'
        ? this.tracks.filter((l) => l.source === (which === 'audio' ? 'microphone' : 'camera'))
        : [findLocal(this.tracks, which)].filter(Boolean);
    for (const local of /** @type {LocalTrack[]} */ (targets)) {
      local.track.enabled = !muted;
      local.muted = muted;
      if (local.trackId) this.client._send({ type: 'mute', track_id: local.trackId, muted });
    }
  }

  /** An offer was set locally: every own track learns its m-line. */
  assignMids() {
    for (const l of this.tracks) if (l.transceiver) l.mid = l.transceiver.mid;
  }

  /**
   * The server confirmed an own track (`track_published` with this client's id): match it by mid.
   * @param {TrackInfo} info
   */
  onOwnTrackPublished(info) {
    const client = this.client;
    const mid = info.mid != null ? String(info.mid) : null;
    const local = this.tracks.find((l) => l.mid != null && l.mid === mid);
    if (!local) return;
    local.trackId = info.id;
    if (local.muted) client._send({ type: 'mute', track_id: info.id, muted: true });
    const w = this.waiters.get(local);
    if (w) {
      clearTimeout(w.timer);
      this.waiters.delete(local);
      w.resolve(local);
    }
    client._emit('local_track_published', { localTrack: local });
    const early = this.earlySetLayers.get(info.id);
    if (early) {
      this.earlySetLayers.delete(info.id);
      this.onSetLayers(early);
    }
  }

  /**
   * An own track was unpublished (`track_unpublished`): a `set_layers` kept for it is moot.
   * @param {string} trackId
   */
  forgetTrack(trackId) {
    this.earlySetLayers.delete(trackId);
  }

  /**
   * The server will not answer the offer carrying the tracks not confirmed yet: give up on them (offering them again
   * would only fail again).
   * @param {string} code
   * @param {string} message
   */
  refuseUnconfirmed(code, message) {
    for (const local of this.tracks.filter((l) => !l.trackId)) {
      this.tracks = this.tracks.filter((l) => l !== local);
      try {
        local.transceiver.stop();
      } catch {
        /* already stopped */
      }
      const w = this.waiters.get(local);
      if (w) {
        clearTimeout(w.timer);
        this.waiters.delete(local);
        w.reject(new CourierError(code, message));
      }
    }
  }

  /**
   * Reject every publish still waiting for its `track_published`.
   * @param {(local: LocalTrack) => CourierError} error
   */
  rejectWaiters(error) {
    for (const [local, w] of this.waiters) {
      clearTimeout(w.timer);
      w.reject(error(local));
    }
    this.waiters.clear();
  }

  /** The peer connection is gone: own tracks keep their MediaStreamTracks and mute state, and lose the rest. */
  dropSession() {
    this.rejectWaiters(
      (local) => new CourierError('reconnecting', `the connection dropped before the ${local.kind} track was published`),
    );
    this.layerJobs.clear();
    this.earlySetLayers.clear();
    for (const local of this.tracks) {
      local.transceiver = /** @type {any} */ (null);
      local.mid = null;
      local.trackId = null;
      local.layers = null;
    }
  }

  /** Stop the camera and microphone this client captured itself. */
  releaseCapture() {
    if (this.ownsLocalStream && this.localStream) this.localStream.getTracks().forEach((t) => t.stop());
  }

  /**
   * Dynacast: the server asks to pause (`active: false`) or resume simulcast layers of an own track, because no
   * subscriber needs them (or one does again). Layers are matched to the sender's encodings by `rid`; rids the
   * sender does not have (a track sent without simulcast) are ignored. Returns when the sender's encodings match the
   * latest state asked for (also when called again meanwhile: updates are serialized per sender, and only the
   * latest state is applied).
   * @param {SetLayersMsg} msg
   * @returns {Promise<void>}
   */
  onSetLayers(msg) {
    const client = this.client;
    const trackId = typeof msg.track_id === 'string' ? msg.track_id : null;
    if (!trackId || !Array.isArray(msg.layers)) {
      client._log('ignoring malformed set_layers', msg);
      return Promise.resolve();
    }
    const local = this.tracks.find((l) => l.trackId === trackId);
    if (!local) {
      // Possibly ahead of our own `track_published` (or for a track already gone): keep the latest, bounded.
      const oldest = this.earlySetLayers.keys().next().value;
      if (this.earlySetLayers.size >= 16 && oldest !== undefined) this.earlySetLayers.delete(oldest);
      this.earlySetLayers.set(trackId, msg);
      client._log('set_layers for a track not (yet) published here', trackId);
      return Promise.resolve();
    }
    const sender = local.transceiver?.sender;
    if (!sender) return Promise.resolve();
    const rids = new Set((sender.getParameters().encodings ?? []).map((e) => e.rid).filter(Boolean));
    let job = this.layerJobs.get(local);
    if (!job) {
      job = { want: new Map(), busy: false, running: Promise.resolve() };
      this.layerJobs.set(local, job);
    }
    if (!mergeLayerRequest(job.want, msg.layers, rids)) {
      client._log('set_layers names no encoding of this sender; ignored', trackId, msg.layers);
      return job.running;
    }
    if (!job.busy) {
      // `busy` is cleared by applyLayers in the same step in which it finds nothing left to do, so a state merged
      // into `want` after that starts a new run instead of being left behind.
      job.busy = true;
      job.running = this.applyLayers(local, job);
    }
    return job.running;
  }

  /**
   * Bring the sender's encodings to `job.want`, repeating until a pass finds nothing left to change (so a state
   * that arrived during setParameters() is applied next; intermediate states are skipped).
   * @param {LocalTrack} local
   * @param {LayerJob} job
   */
  async applyLayers(local, job) {
    const client = this.client;
    const sender = local.transceiver.sender;
    try {
      for (let pass = 0; pass < 10; pass++) {
        const params = sender.getParameters();
        const encodings = params.encodings ?? [];
        if (!applyWanted(encodings, job.want)) {
          const layers = layerStates(encodings);
          const before = JSON.stringify(local.layers);
          local.layers = layers;
          if (before !== JSON.stringify(layers)) {
            client._emit('layers', { trackId: local.trackId, localTrack: local, layers });
          }
          return;
        }
        try {
          await sender.setParameters(params);
        } catch (err) {
          if (!this.tracks.includes(local) || client.state !== 'joined') return; // unpublished or closed meanwhile
          const text = /** @type {Error} */ (err).message;
          client._emitError('set_layers_failed', `cannot update the layers of ${local.trackId}: ${text}`);
          return;
        }
      }
    } finally {
      // In the same step as the last check: a state merged into `want` after this starts a new run.
      job.busy = false;
    }
  }
}
