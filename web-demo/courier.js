// @ts-check
/**
 * Courier browser client — signaling protocol v1 (docs/protocol.md).
 *
 * One WebSocket to `/rtc` for signaling, one RTCPeerConnection for everything this participant publishes and
 * receives. No build step: import it as an ES module.
 *
 * ```js
 * import { join } from './courier.js';
 * const client = await join('ws://127.0.0.1:7880/rtc', token);
 * client.on('remote_track_added', ({ track, participantId }) => { ... });
 * ```
 *
 * Negotiation rules (protocol.md, "Glare"): the client is the impolite side. While its own offer is outstanding
 * (sent, no answer with the same `id` yet) it ignores server offers; the server answers the client's offer and then
 * sends a fresh offer of its own.
 *
 * @module courier
 */

import { Chat } from './chat.js';

export { Chat, ChatState, directConversation, roomConversation } from './chat.js';

export const PROTOCOL_VERSION = 1;

/** Close codes of protocol v1, with a short human description. */
export const CLOSE_CODES = Object.freeze({
  1000: 'left the room',
  1001: 'server shutting down',
  1006: 'connection lost',
  4001: 'invalid token',
  4002: 'token expired or not yet valid',
  4003: 'no join within 10 s, or first message was not join',
  4004: 'token does not allow joining this room',
  4005: 'unsupported protocol version',
  4008: 'no traffic for 30 s, or send queue overflow',
  4009: 'replaced: the same identity joined again elsewhere',
  4006: 'the room is full',
  4007: 'the server has as many rooms as it may',
  4010: 'removed from the room',
  4011: 'the room is not available (not found, not open yet, closed, or not invited)',
  4029: 'too many joins; try again shortly',
  1013: 'the server is restarting; try again shortly',
});

/**
 * Close codes after which a joined client reconnects by itself (the network or the server went away for a while,
 * or asked to come back later). Every other code is final: left, refused, removed, replaced, or a bad token.
 * `4000` is the client's own: the socket stopped carrying anything (no pong) and was given up.
 */
export const RECONNECT_CODES = Object.freeze([1001, 1005, 1006, 1011, 1012, 1013, 1014, 4000, 4008, 4029]);

/**
 * @param {number} code WebSocket close code
 * @returns {string}
 */
export function describeCloseCode(code) {
  return /** @type {Record<number,string>} */ (CLOSE_CODES)[code] ?? `closed (code ${code})`;
}

/**
 * @typedef {'audio'|'video'} Kind
 * @typedef {'camera'|'microphone'|'screen'|'screen_audio'|'unknown'} Source
 *
 * @typedef {object} TrackInfo        A published track as the server describes it.
 * @property {string} id             `TR_…`
 * @property {Kind} kind
 * @property {Source} source
 * @property {string} name
 * @property {boolean} muted
 * @property {string} [mid]          only on the publisher's own copy
 *
 * @typedef {object} Participant
 * @property {string} id             `PA_…`
 * @property {string} identity
 * @property {string} name
 * @property {Map<string, TrackInfo>} tracks   by track id
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
 * @typedef {object} JoinOptions
 * @property {boolean|{audio?: boolean, video?: boolean}} [publish=true]  publish camera and/or microphone
 * @property {MediaStream} [localStream]       publish these tracks instead of calling getUserMedia
 * @property {MediaTrackConstraints} [videoConstraints]  default 1280×720 @ 30 fps
 * @property {MediaTrackConstraints} [audioConstraints]
 * @property {string|null} [preferVideoCodec='video/VP8']  moved to the front of the send codec list
 * @property {boolean} [simulcast=false]  send camera video as three layers, rids q/h/f at 1/4, 1/2 and full size
 * @property {boolean} [autoSubscribe=true]
 * @property {RTCIceServer[]} [iceServers=[]]  the server is ICE-lite and its candidate is in its SDP
 * @property {number} [pingIntervalMs=10000]
 * @property {number} [joinTimeoutMs=10000]    connect + `joined`
 * @property {number} [publishTimeoutMs=10000] offer → `track_published`
 * @property {boolean|((...args: any[]) => void)} [log=false]  true logs to console.debug
 * @property {boolean} [reconnect=true]  after a network blip (socket lost, nothing heard for too long, or the media
 *                           connection failed) join again by itself: same identity, own tracks published again, chat
 *                           resumed where it stood; `reconnecting` / `reconnected` events meanwhile
 * @property {number} [reconnectTimeoutMs=60000]  give up (`closed`) when not back within this
 * @property {(() => Promise<string>)|null} [getToken]  a fresh token for a reconnect once the first one expired
 * @property {number} [livenessTimeoutMs]  nothing received for this long means the socket is dead (default 2.5 ×
 *                           the ping interval)
 * @property {Storage|null} [chatStorage]  where chat state and the outbox are kept across reloads (default
 *                           `sessionStorage`; null keeps them in memory only)
 *
 * Events (listen with `client.on(name, fn)`, `fn` gets the detail; or `addEventListener`, detail in `e.detail`):
 * - `joined`                {room, participant, participants}
 * - `participant_joined`    {participant}
 * - `participant_left`      {participantId, reason, participant}
 * - `track_published`       {participantId, track}          (also for own tracks; see `local_track_published`)
 * - `track_unpublished`     {participantId, trackId}
 * - `track_muted`           {participantId, trackId, muted}
 * - `active_speakers`       {speakers: [{participant_id, level}]}, loudest first (also kept in `activeSpeakers`)
 * - `local_track_published` {localTrack}
 * - `local_track_unpublished` {localTrack}                     an own track stopped (unpublishTrack, stopScreenShare)
 * - `local_track_replaced`  {localTrack, previous}            `switchDevice` put another capture on the sender
 * - `layers`                {trackId, localTrack, layers: LayerState[]}  the server asked (`set_layers`) to pause or
 *                           resume simulcast layers of an own track, and the sender's encodings now match
 * - `stream_state`          StreamState & {previous: StreamState|null}  the server changed what it forwards of a
 *                           received track: another layer, or paused (`reason: 'bandwidth'`), or active again
 * - `remote_track_added`    RemoteTrack
 * - `remote_track_removed`  RemoteTrack & {reason}
 * - `connection_state`      {state}                          RTCPeerConnection.connectionState
 * - `error`                 {code, message, reqType?}        server `error` messages and client-side failures
 * - `reconnecting`          {attempt, code, reason, description}  the connection dropped and the client is joining
 *                           again (remote tracks were removed; they come back after `reconnected`)
 * - `reconnected`           {attempt, participantId}           joined again; own tracks are being published again
 * - `closed`                {code, reason, description, leaveReason}
 * - `chat_changed`, `chat_message`, `chat_typing`, `chat_failed`: see `chat.js` (`client.chat`)
 */

/**
 * The room and identity a token names (its payload, not verified: the server verifies it).
 * @param {string} token
 * @returns {{room: string, identity: string}}
 */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1] ?? '';
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
    const c = JSON.parse(decodeURIComponent(escape(json)));
    return { room: String(c?.video?.room ?? ''), identity: String(c?.sub ?? '') };
  } catch {
    return { room: '', identity: '' };
  }
}

/** An error with a protocol error code (or a client-side one: `timeout`, `closed`, `media_unavailable`, …). */
export class CourierError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {object} [extra]
   */
  constructor(code, message, extra) {
    super(message);
    this.name = 'CourierError';
    this.code = code;
    /** @type {number|undefined} the WebSocket close code, when the server closed the socket */
    this.closeCode = undefined;
    Object.assign(this, extra);
  }
}

const DEFAULT_VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
const DEFAULT_AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/**
 * Connect to a Courier server, join the room the token names, and (by default) publish camera and microphone.
 * Resolves once joined and the local media is captured and offered; the server's confirmation of each published
 * track arrives later as `local_track_published`. Rejects if the socket closes or `joined` does not arrive in time
 * (`CourierError` with `code` and, for a close, `closeCode`).
 *
 * @param {string} url     `ws://host/rtc`
 * @param {string} token   JWT access token
 * @param {JoinOptions} [options]
 * @returns {Promise<CourierClient>}
 */
export async function join(url, token, options = {}) {
  const client = new CourierClient(options);
  await client.connect(url, token);
  return client;
}

export class CourierClient extends EventTarget {
  /** @param {JoinOptions} [options] */
  constructor(options = {}) {
    super();
    this.options = {
      publish: true,
      autoSubscribe: true,
      iceServers: [],
      pingIntervalMs: 10_000,
      joinTimeoutMs: 10_000,
      publishTimeoutMs: 10_000,
      preferVideoCodec: 'video/VP8',
      reconnect: true,
      reconnectTimeoutMs: 60_000,
      getToken: null,
      ...options,
    };
    /** @type {'new'|'connecting'|'joined'|'reconnecting'|'closed'} */
    this.state = 'new';
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    this.url = '';
    this.room = '';
    this.serverVersion = '';
    /** @type {string|null} own `PA_…` id */
    this.participantId = null;
    this.identity = '';
    this.name = '';
    /** Other participants, by id. @type {Map<string, Participant>} */
    this.participants = new Map();
    /** Own published (or being published) tracks, in publish order. @type {LocalTrack[]} */
    this.localTracks = [];
    /** The MediaStream of the captured camera/microphone (for a local preview). @type {MediaStream|null} */
    this.localStream = null;
    /** Tracks being received, by track id. @type {Map<string, RemoteTrack>} */
    this.remoteTracks = new Map();
    /**
     * Latest `stream_state` of each subscribed track, by track id (may arrive before the track is in
     * `remoteTracks`). @type {Map<string, StreamState>}
     */
    this.streamStates = new Map();
    /** Who is talking, loudest first (`active_speakers`). @type {{participant_id: string, level: number}[]} */
    this.activeSpeakers = [];
    /** Last measured signaling round trip (ping → pong), ms. @type {number|null} */
    this.rttMs = null;
    /** @type {{code:number, reason:string, leaveReason:string|null}|null} */
    this.closeInfo = null;
    /** Chat on this connection (send, history, receipts; see chat.js). Usable once joined. */
    this.chat = new Chat(this);

    // --- internals ---
    /** subscriptions announced by `subscribed`, by mid @type {Map<string, {trackId:string, participantId:string, kind:Kind, mid:string}>} */
    this._subsByMid = new Map();
    /** @type {Promise<void>} serializes message handling and negotiation */
    this._chain = Promise.resolve();
    this._nextOfferId = 1;
    /** @type {{id:number}|null} own offer waiting for its answer */
    this._pendingOffer = null;
    this._needsNegotiation = false;
    this._descriptionSent = false;
    /** @type {object[]} */
    this._pendingCandidates = [];
    this._lastCandidateWasEnd = false;
    /** @type {ReturnType<typeof setInterval>|null} */
    this._pingTimer = null;
    /** @type {string|null} */
    this._leaveReason = null;
    /** @type {{resolve:(v:any)=>void, reject:(e:any)=>void}|null} */
    this._joinWaiter = null;
    /** @type {Map<LocalTrack, {resolve:(v:any)=>void, reject:(e:any)=>void, timer:any}>} */
    this._publishWaiters = new Map();
    this._ownsLocalStream = false;
    this._opened = false;
    /** The token of the current session (replaced by `getToken` when it expired). */
    this._token = '';
    /** Bumped each time the session is dropped: queued work of an older session is skipped. */
    this._session = 0;
    /** When the socket last delivered anything (liveness). */
    this._lastHeardAt = 0;
    /** Reconnect attempts since the connection dropped (0 while connected). */
    this.reconnectAttempt = 0;
    /**
     * Dynacast, per own track: the layer states the server last asked for (merged by rid) and the sender update
     * in progress. Only one setParameters() runs per sender; whatever arrives meanwhile is applied after it.
     * @type {Map<LocalTrack, LayerJob>}
     */
    this._layerJobs = new Map();
    /** `set_layers` for own tracks not yet confirmed by `track_published`, by track id @type {Map<string, any>} */
    this._earlySetLayers = new Map();
    const log = this.options.log;
    /** @type {(...args:any[]) => void} */
    this._log = typeof log === 'function' ? log : log ? (...a) => console.debug('[courier]', ...a) : () => {};
  }

  // ------------------------------------------------------------------ events

  /**
   * Subscribe to an event; the handler receives the event's detail. Returns a function that unsubscribes.
   * @param {string} type
   * @param {(detail: any) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    /** @param {Event} e */
    const listener = (e) => handler(/** @type {CustomEvent} */ (e).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * @param {string} type
   * @param {any} detail
   */
  _emit(type, detail) {
    this._log('event', type, detail);
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * @param {string} code
   * @param {string} message
   * @param {string} [reqType]
   */
  _emitError(code, message, reqType) {
    this._emit('error', { code, message, reqType });
  }

  // ------------------------------------------------------------------ connection

  /**
   * Open the socket, send `join`, wait for `joined`, then publish the local media (unless `publish: false`).
   * @param {string} url
   * @param {string} token
   * @returns {Promise<void>}
   */
  async connect(url, token) {
    if (this.state !== 'new') throw new CourierError('bad_state', `connect() called in state ${this.state}`);
    this.state = 'connecting';
    this.url = url;
    this._token = token;
    const claims = tokenClaims(token);
    const storage =
      this.options.chatStorage !== undefined ? this.options.chatStorage : (globalThis.sessionStorage ?? null);
    this.chat.prepare(claims.room, claims.identity, storage);
    try {
      await this._openSession(token);
    } catch (err) {
      this._teardown(/** @type {CourierError} */ (err).closeCode ?? 4000, 'join failed');
      throw err;
    }
    this._startPing();

    const publish = this.options.publish;
    if (publish !== false) {
      const want = publish === true ? { audio: true, video: true } : { audio: !!publish.audio, video: !!publish.video };
      try {
        await this.publishMedia(want);
      } catch (err) {
        // Joined anyway: the participant can still receive.
        const e = /** @type {CourierError} */ (err);
        this._emitError(e.code ?? 'media_unavailable', e.message);
      }
    }
  }

  /**
   * Open a socket and send `join` (with the chat positions this client holds); resolves on `joined`. Rejects with a
   * CourierError (`closeCode` when the server closed the socket) on a close or after `joinTimeoutMs`.
   * @param {string} token
   * @returns {Promise<void>}
   */
  _openSession(token) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._joinWaiter?.reject(
          new CourierError('timeout', `no "joined" within ${this.options.joinTimeoutMs} ms`, { closeCode: 4000 }),
        );
      }, this.options.joinTimeoutMs);
      this._joinWaiter = {
        resolve: (v) => {
          clearTimeout(timer);
          this._joinWaiter = null;
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          this._joinWaiter = null;
          reject(e);
        },
      };
      /** @type {WebSocket} */
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (err) {
        this._joinWaiter.reject(new CourierError('bad_url', `cannot open ${this.url}: ${/** @type {Error} */ (err).message}`));
        return;
      }
      this.ws = ws;
      this._opened = false;
      ws.onopen = () => {
        this._opened = true;
        this._lastHeardAt = Date.now();
        /** @type {Record<string, any>} */
        const join = { type: 'join', v: PROTOCOL_VERSION, token, auto_subscribe: this.options.autoSubscribe };
        const positions = this.chat.resumeEntries();
        if (positions.length) join.chat = positions;
        this._send(join);
      };
      ws.onmessage = (ev) => this._onSocketMessage(ev);
      ws.onclose = (ev) => this._onSocketClose(ws, ev.code, ev.reason);
      ws.onerror = () => this._log('websocket error'); // a close event follows
    });
  }

  /** Ping every `pingIntervalMs`; a socket that delivered nothing for `livenessTimeoutMs` is given up (code 4000). */
  _startPing() {
    this._stopPing();
    this._lastHeardAt = Date.now();
    const interval = this.options.pingIntervalMs;
    const liveness = this.options.livenessTimeoutMs ?? Math.round(interval * 2.5);
    this._pingTimer = setInterval(() => {
      if (this.state !== 'joined') return;
      if (Date.now() - this._lastHeardAt > liveness) {
        this._log(`nothing heard for ${liveness} ms: the connection is dead`);
        this._connectionLost(4000, 'no response from the server');
        return;
      }
      this._send({ type: 'ping', ts: Date.now() });
    }, Math.min(interval, Math.max(250, Math.round(liveness / 2))));
  }

  _stopPing() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  /**
   * The joined connection is gone (socket closed, silent, or the media connection failed): reconnect if the code
   * allows it and `reconnect` is on, otherwise close.
   * @param {number} code
   * @param {string} reason
   */
  _connectionLost(code, reason) {
    if (this.state !== 'joined') return;
    const retry =
      this.options.reconnect &&
      (RECONNECT_CODES.includes(code) || (code === 4002 && typeof this.options.getToken === 'function'));
    if (!retry) {
      this._teardown(code, reason);
      return;
    }
    this.state = 'reconnecting';
    this._stopPing();
    this._dropSession();
    this.reconnectAttempt = 0;
    this._reconnectLoop(code, reason);
  }

  /**
   * Forget everything tied to the lost socket and peer connection; keep what the app owns: the local tracks (they
   * are published again), the participants (compared with the room on rejoin) and the chat (resumed).
   */
  _dropSession() {
    this._session++;
    this._chain = Promise.resolve();
    if (this.ws) {
      this.ws.onmessage = null;
      this.ws.onclose = null;
      this.ws.onopen = null;
      try {
        this.ws.close(1000);
      } catch {
        /* ignore */
      }
      this.ws = null;
    }
    if (this.pc) {
      this.pc.onicecandidate = null;
      this.pc.onconnectionstatechange = null;
      this.pc.ontrack = null;
      this.pc.close();
      this.pc = null;
      this._emit('connection_state', { state: 'closed' });
    }
    for (const remote of [...this.remoteTracks.values()]) this._removeRemote(remote, 'reconnecting');
    this._subsByMid.clear();
    this.streamStates.clear();
    for (const [local, w] of this._publishWaiters) {
      clearTimeout(w.timer);
      w.reject(new CourierError('reconnecting', `the connection dropped before the ${local.kind} track was published`));
    }
    this._publishWaiters.clear();
    this._pendingOffer = null;
    this._needsNegotiation = false;
    this._descriptionSent = false;
    this._pendingCandidates = [];
    this._lastCandidateWasEnd = false;
    this._layerJobs.clear();
    this._earlySetLayers.clear();
    for (const local of this.localTracks) {
      local.transceiver = /** @type {any} */ (null);
      local.mid = null;
      local.trackId = null;
      local.layers = null;
    }
    this.activeSpeakers = [];
  }

  /**
   * Join again with growing pauses (0.25 s doubling to 5 s, with jitter) until joined, refused for good, left, or
   * `reconnectTimeoutMs` is over.
   * @param {number} code
   * @param {string} reason
   */
  async _reconnectLoop(code, reason) {
    const deadline = Date.now() + this.options.reconnectTimeoutMs;
    let lastCode = code;
    let lastReason = reason;
    let freshToken = code === 4002;
    while (this.state === 'reconnecting') {
      const attempt = ++this.reconnectAttempt;
      this._emit('reconnecting', { attempt, code: lastCode, reason: lastReason, description: describeCloseCode(lastCode) });
      if (attempt > 1) {
        const base = Math.min(5000, 250 * 2 ** (attempt - 2));
        await new Promise((r) => setTimeout(r, base * (0.75 + Math.random() * 0.5)));
      }
      if (this.state !== 'reconnecting') return;
      if (Date.now() > deadline) {
        this._teardown(lastCode, `not reconnected within ${this.options.reconnectTimeoutMs} ms`);
        return;
      }
      try {
        if (freshToken && this.options.getToken) this._token = await this.options.getToken();
        freshToken = false;
        await this._openSession(this._token);
      } catch (err) {
        if (this.state !== 'reconnecting') return;
        const e = /** @type {CourierError} */ (err);
        this._log('reconnect attempt failed', attempt, e.message);
        if (this.ws) {
          this.ws.onclose = null;
          this.ws.onmessage = null;
          try {
            this.ws.close(1000);
          } catch {
            /* ignore */
          }
          this.ws = null;
        }
        const closeCode = /** @type {any} */ (e).closeCode;
        if (typeof closeCode === 'number' && this._opened) {
          lastCode = closeCode;
          lastReason = e.message;
          if (closeCode === 4002 && this.options.getToken) freshToken = true;
          else if (!RECONNECT_CODES.includes(closeCode)) {
            this._teardown(closeCode, e.message);
            return;
          }
        }
        continue;
      }
      // Joined again.
      this._startPing();
      this._emit('reconnected', { attempt, participantId: this.participantId });
      this.reconnectAttempt = 0;
      const again = this.localTracks.filter((l) => l.track.readyState === 'live');
      this.localTracks = [];
      if (again.length) {
        const confirmations = this._publishTracks(
          again.map((l) => ({ track: l.track, source: l.source, name: l.name, local: l })),
        );
        confirmations.forEach((p) => p.catch(() => {}));
      }
      return;
    }
  }

  /**
   * Capture camera and/or microphone (or take `options.localStream`) and publish them.
   * Resolves when the offer is sent; the server's confirmation comes as `local_track_published` (and is what the
   * promises in the returned array wait for).
   * @param {{audio?: boolean, video?: boolean}} [want]
   * @returns {Promise<Promise<LocalTrack>[]>}
   */
  async publishMedia(want = { audio: true, video: true }) {
    let stream = this.options.localStream ?? null;
    if (!stream) {
      if (!want.audio && !want.video) return [];
      if (!navigator.mediaDevices?.getUserMedia) {
        throw new CourierError('media_unavailable', 'getUserMedia is not available (insecure context?)');
      }
      try {
        stream = await navigator.mediaDevices.getUserMedia({
          audio: want.audio ? { ...DEFAULT_AUDIO, ...this.options.audioConstraints } : false,
          video: want.video ? { ...DEFAULT_VIDEO, ...this.options.videoConstraints } : false,
        });
      } catch (err) {
        const e = /** @type {Error} */ (err);
        throw new CourierError('media_unavailable', `getUserMedia failed: ${e.name}: ${e.message}`);
      }
      this._ownsLocalStream = true;
    }
    if (this.state !== 'joined') {
      if (this._ownsLocalStream) stream.getTracks().forEach((t) => t.stop());
      throw new CourierError('closed', 'left before the media was captured');
    }
    this.localStream = stream;
    const tracks = [...stream.getAudioTracks(), ...stream.getVideoTracks()];
    // All tracks in one offer.
    const confirmations = this._publishTracks(
      tracks.map((track) => ({ track, source: track.kind === 'audio' ? 'microphone' : 'camera', stream })),
    );
    // Keep the rejections from being unhandled; errors are also emitted as `error` events.
    confirmations.forEach((p) => p.catch(() => {}));
    return confirmations;
  }

  /**
   * Publish one track. Resolves with the LocalTrack once the server confirms it with `track_published`.
   * @param {MediaStreamTrack} track
   * @param {{source?: Source, name?: string, stream?: MediaStream}} [opts]
   * @returns {Promise<LocalTrack>}
   */
  publishTrack(track, opts = {}) {
    return this._publishTracks([{ track, ...opts }])[0];
  }

  /**
   * Add send transceivers for several tracks and negotiate once.
   * @param {{track: MediaStreamTrack, source?: Source, name?: string, stream?: MediaStream, local?: LocalTrack}[]} specs
   *        `local`: an own track published again after a reconnect (keeps its muted state)
   * @returns {Promise<LocalTrack>[]}
   */
  _publishTracks(specs) {
    if (this.state !== 'joined' || !this.pc) {
      return specs.map(() => Promise.reject(new CourierError('bad_state', `cannot publish in state ${this.state}`)));
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
            this._publishWaiters.delete(local);
            reject(new CourierError('timeout', `no track_published for the ${kind} track`));
          }, this.options.publishTimeoutMs);
          this._publishWaiters.set(local, { resolve, reject, timer });
        })
      );
    });
    this._enqueue(async () => {
      const pc = /** @type {RTCPeerConnection} */ (this.pc);
      if (this.state !== 'joined') return;
      locals.forEach((local, i) => {
        const stream = specs[i].stream ?? (this.localStream?.getTracks().includes(local.track) ? this.localStream : undefined);
        /** @type {RTCRtpTransceiverInit} */
        const init = { direction: 'sendonly', streams: stream ? [stream] : [] };
        if (local.kind === 'video' && local.source !== 'screen' && this.options.simulcast) {
          init.sendEncodings = [
            { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
            { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
            { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
          ];
        }
        local.transceiver = pc.addTransceiver(local.track, init);
        if (local.kind === 'video' && this.options.preferVideoCodec) {
          preferCodec(local.transceiver, this.options.preferVideoCodec);
        }
        this.localTracks.push(local);
      });
      await this._negotiate();
    });
    return confirmations;
  }

  /**
   * Switch the camera (`video`) or microphone (`audio`) to another device, without renegotiating: the new capture
   * replaces the old one on the same sender, so subscribers keep their track (and the muted state is kept).
   * @param {Kind} kind
   * @param {string} deviceId  from `navigator.mediaDevices.enumerateDevices()`
   * @returns {Promise<LocalTrack>}
   */
  async switchDevice(kind, deviceId) {
    const source = kind === 'audio' ? 'microphone' : 'camera';
    const local = this.localTracks.find((l) => l.kind === kind && l.source === source);
    if (!local) throw new CourierError('track_not_found', `no ${source} is published`);
    const base =
      kind === 'audio' ? { ...DEFAULT_AUDIO, ...this.options.audioConstraints } : { ...DEFAULT_VIDEO, ...this.options.videoConstraints };
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
    this._emit('local_track_replaced', { localTrack: local, previous: old });
    return local;
  }

  /**
   * Share the screen (a window or a tab): asks the browser (`getDisplayMedia`) and publishes it as source `screen`
   * (and its sound as `screen_audio` when `audio` is asked and given). Ends by itself when the user stops sharing
   * from the browser's own control. Resolves once the server confirms the video.
   * @param {{audio?: boolean}} [opts]
   * @returns {Promise<LocalTrack>}
   */
  async shareScreen({ audio = false } = {}) {
    if (this.state !== 'joined') throw new CourierError('bad_state', `cannot share the screen in state ${this.state}`);
    if (this.localTracks.some((l) => l.source === 'screen')) throw new CourierError('bad_state', 'already sharing the screen');
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
    /** @type {{track: MediaStreamTrack, source: Source, stream: MediaStream}[]} */
    const specs = [{ track: video, source: 'screen', stream }];
    for (const a of stream.getAudioTracks()) specs.push({ track: a, source: 'screen_audio', stream });
    video.addEventListener('ended', () => {
      this.stopScreenShare().catch(() => {});
    });
    const [confirmed, ...rest] = this._publishTracks(specs);
    rest.forEach((p) => p.catch(() => {}));
    return confirmed;
  }

  /** Stop sharing the screen (unpublish `screen` and `screen_audio`, release the capture). */
  async stopScreenShare() {
    const sharing = this.localTracks.filter(
      (t) => (t.source === 'screen' || t.source === 'screen_audio') && !(/** @type {any} */ (t)._stopping),
    );
    for (const l of sharing) /** @type {any} */ (l)._stopping = true;
    for (const l of sharing) await this.unpublishTrack(l);
  }

  /** Whether an own screen share is published (or being published). */
  get sharingScreen() {
    return this.localTracks.some((l) => l.source === 'screen');
  }

  /**
   * Stop publishing a track (its m-line becomes `inactive`, which unpublishes it).
   * @param {string|MediaStreamTrack|LocalTrack} which  track id, the MediaStreamTrack, or the LocalTrack
   * @returns {Promise<void>}
   */
  unpublishTrack(which) {
    return this._enqueue(async () => {
      const local = this._findLocal(which);
      if (!local) throw new CourierError('track_not_found', 'no such local track');
      this.localTracks = this.localTracks.filter((l) => l !== local);
      this._layerJobs.delete(local);
      if (local.transceiver && local.transceiver.currentDirection !== 'stopped') {
        await local.transceiver.sender.replaceTrack(null);
        local.transceiver.direction = 'inactive';
      }
      local.track.stop();
      this._emit('local_track_unpublished', { localTrack: local });
      await this._negotiate();
    });
  }

  /**
   * Mute or unmute an own track: disables the MediaStreamTrack (black frames / silence) and tells the room.
   * @param {string|MediaStreamTrack|LocalTrack|Kind} which  track id, track, LocalTrack, or 'audio'/'video' (the
   *        microphone / the camera)
   * @param {boolean} muted
   */
  setMuted(which, muted) {
    const targets =
      which === 'audio' || which === 'video'
        ? this.localTracks.filter((l) => l.source === (which === 'audio' ? 'microphone' : 'camera'))
        : [this._findLocal(which)].filter(Boolean);
    for (const local of /** @type {LocalTrack[]} */ (targets)) {
      local.track.enabled = !muted;
      local.muted = muted;
      if (local.trackId) this._send({ type: 'mute', track_id: local.trackId, muted });
    }
  }

  /** @param {string[]} trackIds */
  subscribe(trackIds) {
    this._send({ type: 'subscribe', track_ids: trackIds });
  }

  /** @param {string[]} trackIds */
  unsubscribe(trackIds) {
    this._send({ type: 'unsubscribe', track_ids: trackIds });
  }

  /**
   * Adaptive stream: tell the server how a received video track is shown, so it never sends a larger simulcast
   * layer than that size needs, and nothing while hidden.
   * @param {string} trackId
   * @param {{width?: number, height?: number, hidden?: boolean}} settings  width and height in device pixels
   */
  setTrackSettings(trackId, { width, height, hidden = false } = {}) {
    /** @type {Record<string, unknown>} */
    const msg = { type: 'track_settings', track_id: trackId, hidden };
    if (width && height) {
      msg.width = Math.round(width);
      msg.height = Math.round(height);
    }
    this._send(msg);
  }

  /**
   * What the server currently forwards of a received track (latest `stream_state`), or null if it has not said.
   * @param {string} trackId
   * @returns {StreamState|null}
   */
  getStreamState(trackId) {
    return this.streamStates.get(trackId) ?? null;
  }

  /**
   * Leave the room: sends `leave`, waits (briefly) for the server to close the socket, releases media.
   * @param {number} [timeoutMs=2000]
   * @returns {Promise<void>}
   */
  async leave(timeoutMs = 2000) {
    if (this.state === 'closed') return;
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      this._send({ type: 'leave' });
      await new Promise((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        ws.addEventListener('close', () => {
          clearTimeout(t);
          resolve(undefined);
        });
      });
    }
    this._teardown(1000, 'left');
  }

  // ------------------------------------------------------------------ state for apps and tests

  /**
   * A JSON-serializable view of the client's state.
   */
  snapshot() {
    return {
      state: this.state,
      url: this.url,
      room: this.room,
      serverVersion: this.serverVersion,
      participantId: this.participantId,
      identity: this.identity,
      name: this.name,
      connectionState: this.pc?.connectionState ?? null,
      signalingState: this.pc?.signalingState ?? null,
      rttMs: this.rttMs,
      participants: [...this.participants.values()].map((p) => ({
        id: p.id,
        identity: p.identity,
        name: p.name,
        tracks: [...p.tracks.values()],
      })),
      localTracks: this.localTracks.map((l) => ({
        trackId: l.trackId,
        kind: l.kind,
        source: l.source,
        mid: l.mid,
        muted: l.muted,
        layers: l.layers,
      })),
      remoteTracks: [...this.remoteTracks.values()].map((r) => ({
        trackId: r.trackId,
        participantId: r.participantId,
        kind: r.kind,
        mid: r.mid,
        readyState: r.track.readyState,
        muted: r.track.muted,
        streamState: r.streamState,
      })),
      closeInfo: this.closeInfo,
    };
  }

  /**
   * Receive-side statistics from `pc.getStats()` (inbound-rtp), labelled with track and participant ids.
   * `totals.framesDecoded` and `totals.audioPacketsReceived` sum over all streams.
   */
  async inboundStats() {
    /** @type {any[]} */ const video = [];
    /** @type {any[]} */ const audio = [];
    const totals = { framesDecoded: 0, videoPacketsReceived: 0, audioPacketsReceived: 0 };
    if (!this.pc) return { video, audio, totals };
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const kind = s.kind ?? s.mediaType;
      const sub = s.mid != null ? this._subsByMid.get(String(s.mid)) : undefined;
      const codec = s.codecId ? report.get(s.codecId)?.mimeType ?? null : null;
      const base = {
        trackId: sub?.trackId ?? null,
        participantId: sub?.participantId ?? null,
        mid: s.mid ?? null,
        ssrc: s.ssrc,
        codec,
        packetsReceived: s.packetsReceived ?? 0,
        packetsLost: s.packetsLost ?? 0,
        bytesReceived: s.bytesReceived ?? 0,
        jitter: s.jitter ?? null,
      };
      if (kind === 'video') {
        video.push({
          ...base,
          framesReceived: s.framesReceived ?? 0,
          framesDecoded: s.framesDecoded ?? 0,
          framesDropped: s.framesDropped ?? 0,
          keyFramesDecoded: s.keyFramesDecoded ?? 0,
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          framesPerSecond: s.framesPerSecond ?? 0,
          nackCount: s.nackCount ?? 0,
          pliCount: s.pliCount ?? 0,
        });
        totals.framesDecoded += s.framesDecoded ?? 0;
        totals.videoPacketsReceived += s.packetsReceived ?? 0;
      } else if (kind === 'audio') {
        audio.push({
          ...base,
          totalSamplesReceived: s.totalSamplesReceived ?? 0,
          concealedSamples: s.concealedSamples ?? 0,
          audioLevel: s.audioLevel ?? null,
          totalAudioEnergy: s.totalAudioEnergy ?? 0,
        });
        totals.audioPacketsReceived += s.packetsReceived ?? 0;
      }
    });
    return { video, audio, totals };
  }

  /** Send-side statistics from `pc.getStats()` (outbound-rtp), labelled with own track ids. */
  async outboundStats() {
    /** @type {any[]} */ const streams = [];
    if (!this.pc) return streams;
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      const local = this.localTracks.find((l) => l.mid != null && l.mid === s.mid);
      // What the server reports back about this stream (RTCP receiver reports).
      const rr = s.remoteId ? report.get(s.remoteId) : null;
      streams.push({
        trackId: local?.trackId ?? null,
        kind: s.kind ?? s.mediaType,
        mid: s.mid ?? null,
        rid: s.rid ?? null,
        ssrc: s.ssrc,
        codec: s.codecId ? report.get(s.codecId)?.mimeType ?? null : null,
        packetsSent: s.packetsSent ?? 0,
        bytesSent: s.bytesSent ?? 0,
        framesEncoded: s.framesEncoded ?? null,
        frameWidth: s.frameWidth ?? null,
        frameHeight: s.frameHeight ?? null,
        framesPerSecond: s.framesPerSecond ?? null,
        qualityLimitationReason: s.qualityLimitationReason ?? null,
        remote: rr
          ? { fractionLost: rr.fractionLost ?? null, rttMs: rr.roundTripTime != null ? rr.roundTripTime * 1000 : null }
          : null,
      });
    });
    return streams;
  }

  // ------------------------------------------------------------------ internals: socket

  /** @param {object} msg */
  _send(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      this._log('not sent (socket not open)', msg);
      return false;
    }
    this._log('→', msg);
    ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Run `fn` after everything queued before it. Failures become `error` events (and reject the returned promise).
   * @template T
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  _enqueue(fn) {
    const session = this._session;
    const p = this._chain.then(() => (session === this._session ? fn() : /** @type {any} */ (undefined)));
    this._chain = p.then(
      () => {},
      (err) => {
        const e = /** @type {CourierError} */ (err);
        this._emitError(e.code ?? 'client_error', e.message ?? String(err));
      },
    );
    return p;
  }

  /** @param {MessageEvent} ev */
  _onSocketMessage(ev) {
    if (typeof ev.data !== 'string') return;
    /** @type {any} */
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      this._emitError('bad_message', 'server sent invalid JSON');
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    this._log('←', msg);
    this._lastHeardAt = Date.now();
    if (msg.type === 'pong') {
      if (typeof msg.ts === 'number') this.rttMs = Date.now() - msg.ts;
      return;
    }
    this._enqueue(() => this._handle(msg));
  }

  /**
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  _onSocketClose(ws, code, reason) {
    if (ws !== this.ws) return;
    this._log('socket closed', code, reason);
    if (this._joinWaiter) {
      // Joining (first connect or a reconnect attempt): whoever waits decides what happens next.
      const text = this._opened
        ? `${describeCloseCode(code)}${reason ? `: ${reason}` : ''}`
        : `cannot connect to ${this.url}`;
      this._joinWaiter.reject(new CourierError('closed', text, { closeCode: code }));
      return;
    }
    if (this.state === 'joined') this._connectionLost(code, reason);
    else this._teardown(code, reason);
  }

  /**
   * Release everything; emits `closed` once.
   * @param {number} code
   * @param {string} reason
   */
  _teardown(code, reason) {
    if (this.state === 'closed') return;
    const wasJoined = this.state === 'joined' || this.state === 'reconnecting';
    this.state = 'closed';
    this.closeInfo = { code, reason, leaveReason: this._leaveReason };
    this._stopPing();
    this._joinWaiter?.reject(new CourierError('closed', reason, { closeCode: code }));
    for (const [local, w] of this._publishWaiters) {
      clearTimeout(w.timer);
      w.reject(new CourierError('closed', `closed before the ${local.kind} track was published`));
    }
    this._publishWaiters.clear();
    for (const remote of [...this.remoteTracks.values()]) this._removeRemote(remote, 'closed');
    if (this.ws) {
      this.ws.onmessage = null;
      this.ws.onclose = null;
      if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
        try {
          this.ws.close(1000);
        } catch {
          /* ignore */
        }
      }
    }
    if (this.pc) {
      this.pc.onicecandidate = null;
      this.pc.onconnectionstatechange = null;
      this.pc.ontrack = null;
      this.pc.close();
    }
    if (this._ownsLocalStream && this.localStream) this.localStream.getTracks().forEach((t) => t.stop());
    this._emit('closed', {
      code,
      reason,
      description: describeCloseCode(code),
      leaveReason: this._leaveReason,
      wasJoined,
    });
  }

  // ------------------------------------------------------------------ internals: messages

  /** @param {any} msg */
  async _handle(msg) {
    if (msg.type.startsWith('chat_') || (msg.type === 'error' && msg.client_id)) {
      this.chat.handle(msg);
      if (msg.type !== 'error') return;
    }
    switch (msg.type) {
      case 'joined':
        return this._onJoined(msg);
      case 'participant_joined': {
        const p = toParticipant(msg.participant);
        if (p.id === this.participantId) return;
        this.participants.set(p.id, p);
        this._emit('participant_joined', { participant: p });
        return;
      }
      case 'participant_left': {
        const p = this.participants.get(msg.participant_id);
        this.participants.delete(msg.participant_id);
        for (const [mid, sub] of [...this._subsByMid]) {
          if (sub.participantId === msg.participant_id) {
            this._subsByMid.delete(mid);
            this.streamStates.delete(sub.trackId);
            const remote = this.remoteTracks.get(sub.trackId);
            if (remote) this._removeRemote(remote, 'participant_left');
          }
        }
        this._emit('participant_left', { participantId: msg.participant_id, reason: msg.reason, participant: p });
        return;
      }
      case 'track_published':
        return this._onTrackPublished(msg);
      case 'track_unpublished': {
        this.participants.get(msg.participant_id)?.tracks.delete(msg.track_id);
        this.streamStates.delete(msg.track_id);
        this._earlySetLayers.delete(msg.track_id);
        const remote = this.remoteTracks.get(msg.track_id);
        if (remote) this._removeRemote(remote, 'unpublished');
        this._emit('track_unpublished', { participantId: msg.participant_id, trackId: msg.track_id });
        return;
      }
      case 'track_muted': {
        const t = this.participants.get(msg.participant_id)?.tracks.get(msg.track_id);
        if (t) t.muted = !!msg.muted;
        this._emit('track_muted', { participantId: msg.participant_id, trackId: msg.track_id, muted: !!msg.muted });
        return;
      }
      case 'subscribed':
        this._subsByMid.set(String(msg.mid), {
          trackId: msg.track_id,
          participantId: msg.participant_id,
          kind: msg.kind,
          mid: String(msg.mid),
        });
        return;
      case 'unsubscribed': {
        this.streamStates.delete(msg.track_id);
        for (const [mid, sub] of [...this._subsByMid]) {
          if (sub.trackId === msg.track_id) this._subsByMid.delete(mid);
        }
        const remote = this.remoteTracks.get(msg.track_id);
        if (remote) this._removeRemote(remote, msg.reason ?? 'unsubscribed');
        return;
      }
      case 'offer':
        return this._onServerOffer(msg);
      case 'answer':
        return this._onServerAnswer(msg);
      case 'error':
        return this._onServerError(msg);
      case 'leave':
        this._leaveReason = msg.reason ?? null;
        return;
      case 'active_speakers':
        this.activeSpeakers = Array.isArray(msg.speakers) ? msg.speakers : [];
        this._emit('active_speakers', { speakers: this.activeSpeakers });
        return;
      case 'set_layers':
        // Not awaited: a sender update must not hold up negotiation; updates are serialized per sender.
        this._onSetLayers(msg);
        return;
      case 'stream_state':
        return this._onStreamState(msg);
      default:
        this._log('ignoring unknown server message', msg.type);
    }
  }

  /** @param {any} msg */
  _onJoined(msg) {
    if (this.state !== 'connecting' && this.state !== 'reconnecting') return;
    const rejoin = this.state === 'reconnecting';
    this.state = 'joined';
    this.room = msg.room ?? '';
    this.serverVersion = msg.server_version ?? '';
    this.participantId = msg.participant?.id ?? null;
    this.identity = msg.participant?.identity ?? '';
    this.name = msg.participant?.name ?? this.identity;
    const before = this.participants;
    this.participants = new Map();
    for (const raw of msg.participants ?? []) {
      const p = toParticipant(raw);
      if (p.id !== this.participantId) this.participants.set(p.id, p);
    }
    if (rejoin) {
      // What changed in the room while this client was away.
      for (const [id, p] of before) {
        if (!this.participants.has(id)) this._emit('participant_left', { participantId: id, reason: 'gone', participant: p });
      }
      for (const [id, p] of this.participants) {
        if (!before.has(id)) this._emit('participant_joined', { participant: p });
      }
    }
    this._createPeerConnection();
    this._emit('joined', {
      room: this.room,
      participant: toParticipant(msg.participant ?? {}),
      participants: [...this.participants.values()],
      reconnected: rejoin,
    });
    this._joinWaiter?.resolve(undefined);
    this.chat.onJoined();
  }

  /** @param {any} msg */
  _onTrackPublished(msg) {
    const info = /** @type {TrackInfo} */ ({ ...msg.track });
    if (msg.participant_id === this.participantId) {
      const mid = info.mid != null ? String(info.mid) : null;
      const local = this.localTracks.find((l) => l.mid != null && l.mid === mid);
      if (local) {
        local.trackId = info.id;
        if (local.muted) this._send({ type: 'mute', track_id: info.id, muted: true });
        const w = this._publishWaiters.get(local);
        if (w) {
          clearTimeout(w.timer);
          this._publishWaiters.delete(local);
          w.resolve(local);
        }
        this._emit('local_track_published', { localTrack: local });
        const early = this._earlySetLayers.get(info.id);
        if (early) {
          this._earlySetLayers.delete(info.id);
          this._onSetLayers(early);
        }
      }
    } else {
      const p = this.participants.get(msg.participant_id);
      if (p) p.tracks.set(info.id, info);
    }
    this._emit('track_published', { participantId: msg.participant_id, track: info });
  }

  /**
   * Dynacast: the server asks to pause (`active: false`) or resume simulcast layers of an own track, because no
   * subscriber needs them (or one does again). Layers are matched to the sender's encodings by `rid`; rids the
   * sender does not have (a track sent without simulcast) are ignored. Returns when the sender's encodings match the
   * latest state asked for (also when called again meanwhile: updates are serialized per sender, and only the
   * latest state is applied).
   * @param {any} msg  `{type: 'set_layers', track_id, layers: [{rid, active}]}`
   * @returns {Promise<void>}
   */
  _onSetLayers(msg) {
    const trackId = typeof msg.track_id === 'string' ? msg.track_id : null;
    if (!trackId || !Array.isArray(msg.layers)) {
      this._log('ignoring malformed set_layers', msg);
      return Promise.resolve();
    }
    const local = this.localTracks.find((l) => l.trackId === trackId);
    if (!local) {
      // Possibly ahead of our own `track_published` (or for a track already gone): keep the latest, bounded.
      const oldest = this._earlySetLayers.keys().next().value;
      if (this._earlySetLayers.size >= 16 && oldest !== undefined) this._earlySetLayers.delete(oldest);
      this._earlySetLayers.set(trackId, msg);
      this._log('set_layers for a track not (yet) published here', trackId);
      return Promise.resolve();
    }
    const sender = local.transceiver?.sender;
    if (!sender) return Promise.resolve();
    const rids = new Set((sender.getParameters().encodings ?? []).map((e) => e.rid).filter(Boolean));
    let job = this._layerJobs.get(local);
    if (!job) {
      job = { want: new Map(), busy: false, running: Promise.resolve() };
      this._layerJobs.set(local, job);
    }
    let relevant = false;
    for (const l of msg.layers) {
      if (!l || typeof l.rid !== 'string' || !rids.has(l.rid)) continue;
      job.want.set(l.rid, l.active !== false);
      relevant = true;
    }
    if (!relevant) {
      this._log('set_layers names no encoding of this sender; ignored', trackId, msg.layers);
      return job.running;
    }
    if (!job.busy) {
      // `busy` is cleared by _applyLayers in the same step in which it finds nothing left to do, so a state merged
      // into `want` after that starts a new run instead of being left behind.
      job.busy = true;
      job.running = this._applyLayers(local, job);
    }
    return job.running;
  }

  /**
   * Bring the sender's encodings to `job.want`, repeating until a pass finds nothing left to change (so a state
   * that arrived during setParameters() is applied next; intermediate states are skipped).
   * @param {LocalTrack} local
   * @param {LayerJob} job
   */
  async _applyLayers(local, job) {
    const sender = local.transceiver.sender;
    try {
      for (let pass = 0; pass < 10; pass++) {
        const params = sender.getParameters();
        const encodings = params.encodings ?? [];
        let changed = false;
        for (const e of encodings) {
          const want = e.rid != null ? job.want.get(e.rid) : undefined;
          if (want !== undefined && e.active !== want) {
            e.active = want;
            changed = true;
          }
        }
        if (!changed) {
          /** @type {LayerState[]} */
          const layers = encodings
            .filter((e) => e.rid != null)
            .map((e) => ({ rid: /** @type {string} */ (e.rid), active: e.active !== false }));
          const before = JSON.stringify(local.layers);
          local.layers = layers;
          if (before !== JSON.stringify(layers)) {
            this._emit('layers', { trackId: local.trackId, localTrack: local, layers });
          }
          return;
        }
        try {
          await sender.setParameters(params);
        } catch (err) {
          if (!this.localTracks.includes(local) || this.state !== 'joined') return; // unpublished or closed meanwhile
          const text = /** @type {Error} */ (err).message;
          this._emitError('set_layers_failed', `cannot update the layers of ${local.trackId}: ${text}`);
          return;
        }
      }
    } finally {
      // In the same step as the last check: a state merged into `want` after this starts a new run.
      job.busy = false;
    }
  }

  /**
   * The server says what it forwards of a received track: which simulcast layer, or that it is paused.
   * @param {any} msg  `{type: 'stream_state', track_id, state, layer?, reason?}`
   */
  _onStreamState(msg) {
    if (typeof msg.track_id !== 'string' || typeof msg.state !== 'string') {
      this._log('ignoring malformed stream_state', msg);
      return;
    }
    const remote = this.remoteTracks.get(msg.track_id);
    const sub = [...this._subsByMid.values()].find((x) => x.trackId === msg.track_id);
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
    this._emit('stream_state', { ...st, previous });
  }

  /** @param {any} msg */
  async _onServerError(msg) {
    const { code, message, req_type: reqType } = msg;
    this._emitError(code ?? 'unknown', message ?? '', reqType);
    const pc = this.pc;
    if (reqType === 'offer' && this._pendingOffer && pc?.signalingState === 'have-local-offer') {
      // The server will not answer this offer (permission_denied, sdp_rejected): roll it back so that negotiation
      // can go on, and give up on the tracks it was adding (offering them again would only fail again).
      this._log('own offer refused, rolling back', code);
      this._pendingOffer = null;
      await pc.setLocalDescription({ type: 'rollback' });
      for (const local of this.localTracks.filter((l) => !l.trackId)) {
        this.localTracks = this.localTracks.filter((l) => l !== local);
        try {
          local.transceiver.stop();
        } catch {
          /* already stopped */
        }
        const w = this._publishWaiters.get(local);
        if (w) {
          clearTimeout(w.timer);
          this._publishWaiters.delete(local);
          w.reject(new CourierError(code, message));
        }
      }
      if (this._needsNegotiation) await this._negotiate();
    }
  }

  // ------------------------------------------------------------------ internals: negotiation

  _createPeerConnection() {
    const pc = new RTCPeerConnection({
      iceServers: this.options.iceServers,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc = pc;
    pc.onicecandidate = (e) => {
      const c = e.candidate;
      if (!c || !c.candidate) {
        if (this._lastCandidateWasEnd) return;
        this._lastCandidateWasEnd = true;
        this._sendCandidate({ type: 'candidate', candidate: '', ...(c?.sdpMid != null ? { sdp_mid: c.sdpMid } : {}) });
        return;
      }
      this._lastCandidateWasEnd = false;
      this._sendCandidate({ type: 'candidate', candidate: c.candidate, ...(c.sdpMid != null ? { sdp_mid: c.sdpMid } : {}) });
    };
    pc.onconnectionstatechange = () => {
      this._emit('connection_state', { state: pc.connectionState });
      // ICE gave up (the path broke and consent checks failed): start over with a new connection.
      if (pc.connectionState === 'failed' && this.pc === pc) this._connectionLost(1006, 'media connection failed');
    };
    pc.ontrack = (e) => this._log('ontrack', e.track.kind, 'mid', e.transceiver.mid);
  }

  /** @param {object} msg */
  _sendCandidate(msg) {
    if (!this._descriptionSent) this._pendingCandidates.push(msg);
    else this._send(msg);
  }

  _flushCandidates() {
    this._descriptionSent = true;
    const queued = this._pendingCandidates;
    this._pendingCandidates = [];
    for (const m of queued) this._send(m);
  }

  /** Send an offer for the client's current send m-lines, unless one is already outstanding. Runs in the queue. */
  async _negotiate() {
    const pc = this.pc;
    if (!pc || this.state !== 'joined') return;
    if (this._pendingOffer || pc.signalingState !== 'stable') {
      this._needsNegotiation = true;
      return;
    }
    this._needsNegotiation = false;
    const id = this._nextOfferId++;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    for (const l of this.localTracks) if (l.transceiver) l.mid = l.transceiver.mid;
    const tracks = this.localTracks
      .filter((l) => l.mid != null && (l.transceiver.direction === 'sendonly' || l.transceiver.direction === 'sendrecv'))
      .map((l) => ({ mid: l.mid, source: l.source, name: l.name }));
    this._pendingOffer = { id };
    this._send({ type: 'offer', id, sdp: /** @type {RTCSessionDescription} */ (pc.localDescription).sdp, tracks });
    this._flushCandidates();
  }

  /** @param {any} msg */
  async _onServerOffer(msg) {
    const pc = this.pc;
    if (!pc) return;
    if (this._pendingOffer) {
      // Impolite side: our offer wins; the server will send a fresh offer after answering ours.
      this._log(`ignoring server offer ${msg.id}: own offer ${this._pendingOffer.id} outstanding`);
      return;
    }
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
    } catch (err) {
      if (pc.signalingState === 'have-remote-offer') {
        await pc.setRemoteDescription({ type: 'rollback' }).catch(() => {});
      }
      throw new CourierError('sdp_rejected', `cannot apply server offer ${msg.id}: ${/** @type {Error} */ (err).message}`);
    }
    this._send({ type: 'answer', id: msg.id, sdp: /** @type {RTCSessionDescription} */ (pc.localDescription).sdp });
    this._flushCandidates();
    this._reconcileRemoteTracks();
    if (this._needsNegotiation) await this._negotiate();
  }

  /** @param {any} msg */
  async _onServerAnswer(msg) {
    const pc = this.pc;
    if (!pc) return;
    if (!this._pendingOffer || msg.id !== this._pendingOffer.id) {
      this._log(`ignoring answer ${msg.id}: not for the outstanding offer`);
      return;
    }
    this._pendingOffer = null;
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    } catch (err) {
      await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      throw new CourierError('sdp_rejected', `cannot apply server answer ${msg.id}: ${/** @type {Error} */ (err).message}`);
    }
    this._reconcileRemoteTracks();
    if (this._needsNegotiation) await this._negotiate();
  }

  /**
   * After every completed negotiation: label receiving transceivers with the track ids announced by `subscribed`,
   * and drop remote tracks whose m-line no longer receives (or now carries another track).
   */
  _reconcileRemoteTracks() {
    const pc = this.pc;
    if (!pc) return;
    /** @type {Map<string, RTCRtpTransceiver>} */
    const byMid = new Map();
    for (const tr of pc.getTransceivers()) if (tr.mid != null) byMid.set(tr.mid, tr);
    const receiving = (/** @type {RTCRtpTransceiver|undefined} */ tr) =>
      !!tr && tr.currentDirection !== 'stopped' && (tr.currentDirection === 'recvonly' || tr.currentDirection === 'sendrecv');

    for (const remote of [...this.remoteTracks.values()]) {
      const sub = this._subsByMid.get(remote.mid);
      if (!sub || sub.trackId !== remote.trackId || !receiving(byMid.get(remote.mid))) {
        this._removeRemote(remote, 'renegotiated');
      }
    }
    for (const [mid, sub] of this._subsByMid) {
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
      this._emit('remote_track_added', remote);
    }
  }

  /**
   * @param {RemoteTrack} remote
   * @param {string} reason
   */
  _removeRemote(remote, reason) {
    if (this.remoteTracks.get(remote.trackId) !== remote) return;
    this.remoteTracks.delete(remote.trackId);
    this._emit('remote_track_removed', { ...remote, reason });
  }

  /**
   * @param {string|MediaStreamTrack|LocalTrack} which
   * @returns {LocalTrack|undefined}
   */
  _findLocal(which) {
    if (typeof which === 'string') return this.localTracks.find((l) => l.trackId === which);
    if (typeof MediaStreamTrack !== 'undefined' && which instanceof MediaStreamTrack) {
      return this.localTracks.find((l) => l.track === which);
    }
    return this.localTracks.find((l) => l === which);
  }
}

/**
 * @param {any} raw
 * @returns {Participant}
 */
function toParticipant(raw) {
  const tracks = new Map();
  for (const t of raw?.tracks ?? []) tracks.set(t.id, { ...t });
  return { id: raw?.id ?? '', identity: raw?.identity ?? '', name: raw?.name || raw?.identity || '', tracks };
}

/**
 * Move one codec (e.g. 'video/VP8') to the front of a transceiver's codec list. Best effort.
 * @param {RTCRtpTransceiver} transceiver
 * @param {string} mimeType
 */
function preferCodec(transceiver, mimeType) {
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
