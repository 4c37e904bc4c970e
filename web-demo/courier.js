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
 * This module is the entry point and the shell: {@link CourierClient} owns the socket, the peer connection, the
 * timers and the queue that serializes message handling and negotiation, and asks the parts that decide:
 * signal.js (the socket and close codes), negotiation.js (offer ids, glare, candidates; pure state),
 * room-state.js (participants, subscriptions, received tracks, stream states; pure state), publisher.js (own
 * tracks, simulcast, dynacast), reconnect.js (when and how often to join again; pure state), stats.js (getStats rows
 * labelled with track ids) and chat.js. Every event it emits is listed, with its detail, in events.js.
 *
 * Negotiation rules (protocol.md, "Glare"): the client is the impolite side. While its own offer is outstanding
 * (sent, no answer with the same `id` yet) it ignores server offers; the server answers the client's offer and then
 * sends a fresh offer of its own.
 *
 * @module courier
 */

import { Chat } from './chat.js';
import { isEventName } from './events.js';
import { NegotiationState } from './negotiation.js';
import { Publisher, offerTracks } from './publisher.js';
import { ReconnectState, followRedirect, normalizeUrls, reconnectTarget, shouldReconnect } from './reconnect.js';
import { RoomState, toParticipant } from './room-state.js';
import { CourierError, PROTOCOL_VERSION, SignalSocket, describeCloseCode, tokenClaims } from './signal.js';
import { inboundRows, outboundRows } from './stats.js';

export { Chat, ChatState, directConversation, roomConversation } from './chat.js';
export {
  CLOSE_CODES,
  CourierError,
  MAX_REDIRECTS,
  PROTOCOL_VERSION,
  RECONNECT_CODES,
  describeCloseCode,
  tokenClaims,
} from './signal.js';

/**
 * @typedef {import('./room-state.js').Kind} Kind
 * @typedef {import('./room-state.js').Source} Source
 * @typedef {import('./room-state.js').TrackInfo} TrackInfo
 * @typedef {import('./room-state.js').Participant} Participant
 * @typedef {import('./room-state.js').StreamState} StreamState
 * @typedef {import('./room-state.js').RemoteTrack} RemoteTrack
 * @typedef {import('./publisher.js').LocalTrack} LocalTrack
 * @typedef {import('./publisher.js').LayerState} LayerState
 * @typedef {import('./publisher.js').LayerJob} LayerJob
 * @typedef {import('./events.js').EventName} EventName
 * @typedef {import('./events.js').CourierEventMap} CourierEventMap
 * @typedef {import('./events.js').CourierEvent} CourierEvent
 * @typedef {import('./reconnect.js').JoinTarget} JoinTarget
 * @typedef {import('./protocol').ServerMsg} ServerMsg
 * @typedef {import('./protocol').ClientMsg} ClientMsg
 */
/**
 * The server message of one `type`.
 * @template {ServerMsg['type']} T
 * @typedef {Extract<ServerMsg, {type: T}>} ServerMsgOf
 */
/**
 *
 * @typedef {object} JoinOptions
 * @property {boolean|{audio?: boolean, video?: boolean}} [publish=true]  publish camera and/or microphone
 * @property {MediaStream} [localStream]       publish these tracks instead of calling getUserMedia
 * @property {MediaTrackConstraints} [videoConstraints]  default 1280×720 @ 30 fps
 * @property {MediaTrackConstraints} [audioConstraints]
 * @property {string|null} [preferVideoCodec='video/VP8']  moved to the front of the send codec list
 * @property {boolean} [simulcast=false]  send camera video as three layers, rids q/h/f at 1/4, 1/2 and full size
 * @property {boolean} [autoSubscribe=true]
 * @property {RTCIceServer[]} [iceServers=[]]  the server is ICE-lite and its candidate is in its SDP; the TURN
 *                           servers `joined` offers (`ice_servers`, with fresh credentials) are added to these
 * @property {RTCIceTransportPolicy} [iceTransportPolicy='all']  `'relay'`: media only through a TURN relay
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
 * Events: see events.js (`EVENT_NAMES`, `CourierEventMap`); listen with `client.on(name, fn)` (`fn` gets the
 * detail) or `addEventListener` (detail in `e.detail`).
 */

/**
 * Connect to a Courier server, join the room the token names, and (by default) publish camera and microphone.
 * Resolves once joined and the local media is captured and offered; the server's confirmation of each published
 * track arrives later as `local_track_published`. Rejects if the socket closes or `joined` does not arrive in time
 * (`CourierError` with `code` and, for a close, `closeCode`).
 *
 * In a cluster, a `redirect` answering the join is followed by itself (`redirected` event, at most three in a row,
 * then `too_many_redirects`).
 *
 * @param {string|string[]} url  `ws://host/rtc`, or several (a load balancer, every node of a cluster): the first
 *                         that can be reached is joined, and a reconnect tries the last node, then these in turn
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
      iceTransportPolicy: /** @type {RTCIceTransportPolicy} */ ('all'),
      pingIntervalMs: 10_000,
      joinTimeoutMs: 10_000,
      publishTimeoutMs: 10_000,
      preferVideoCodec: 'video/VP8',
      reconnect: true,
      reconnectTimeoutMs: 60_000,
      getToken: null,
      ...options,
    };
    const log = this.options.log;
    /** @type {(...args:any[]) => void} */
    this._log = typeof log === 'function' ? log : log ? (...a) => console.debug('[courier]', ...a) : () => {};
    /** @type {'new'|'connecting'|'joined'|'reconnecting'|'closed'} */
    this.state = 'new';
    /** The signaling socket of the current session. @type {SignalSocket|null} */
    this._signal = null;
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** The signaling URL of the node this client is on (or joining): where a redirect led, else a given URL. */
    this.url = '';
    /** The URLs given to `connect` (a reconnect tries them in turn after the last node). @type {string[]} */
    this.urls = [];
    /** The cluster node this client is on, as the last `redirect` named it; null when no redirect led here. @type {string|null} */
    this.node = null;
    this.room = '';
    this.serverVersion = '';
    /** @type {string|null} own `PA_…` id */
    this.participantId = null;
    this.identity = '';
    this.name = '';
    /** The cluster node that serves this participant and its region, as `joined` said; '' outside a cluster. */
    this.servedBy = { node: '', region: '' };
    /** Participants, subscriptions, received tracks, stream states, speakers (pure state; room-state.js). */
    this._roomState = new RoomState((...a) => this._log(...a));
    /** Own tracks (publisher.js). */
    this._publisher = new Publisher(this);
    /** Offer ids, glare, candidates (pure state; negotiation.js). */
    this._negotiation = new NegotiationState();
    /** Last measured signaling round trip (ping → pong), ms. @type {number|null} */
    this.rttMs = null;
    /** @type {{code:number, reason:string, leaveReason:string|null}|null} */
    this.closeInfo = null;
    /** Chat on this connection (send, history, receipts; see chat.js). Usable once joined. */
    this.chat = new Chat(this);

    // --- internals ---
    /** @type {Promise<void>} serializes message handling and negotiation */
    this._chain = Promise.resolve();
    /** @type {ReturnType<typeof setInterval>|null} */
    this._pingTimer = null;
    /** @type {string|null} */
    this._leaveReason = null;
    /** @type {{resolve:(v:any)=>void, reject:(e:any)=>void}|null} */
    this._joinWaiter = null;
    /** The token of the current session (replaced by `getToken` when it expired). */
    this._token = '';
    /** Bumped each time the session is dropped: queued work of an older session is skipped. */
    this._session = 0;
    /** When the socket last delivered anything (liveness). */
    this._lastHeardAt = 0;
    /** Reconnect attempts since the connection dropped (0 while connected). */
    this.reconnectAttempt = 0;
  }

  // ------------------------------------------------------------------ state (kept by the parts)

  /** The signaling WebSocket of the current session, if any. @returns {WebSocket|null} */
  get ws() {
    return this._signal?.ws ?? null;
  }

  /** Other participants, by id. @returns {Map<string, Participant>} */
  get participants() {
    return this._roomState.participants;
  }

  /** Tracks being received, by track id. @returns {Map<string, RemoteTrack>} */
  get remoteTracks() {
    return this._roomState.remoteTracks;
  }

  /**
   * Latest `stream_state` of each subscribed track, by track id (may arrive before the track is in
   * `remoteTracks`). @returns {Map<string, StreamState>}
   */
  get streamStates() {
    return this._roomState.streamStates;
  }

  /** Who is talking, loudest first (`active_speakers`). @returns {{participant_id: string, level: number}[]} */
  get activeSpeakers() {
    return this._roomState.activeSpeakers;
  }

  /** Own published (or being published) tracks, in publish order. @returns {LocalTrack[]} */
  get localTracks() {
    return this._publisher.tracks;
  }

  /** The MediaStream of the captured camera/microphone (for a local preview). @returns {MediaStream|null} */
  get localStream() {
    return this._publisher.localStream;
  }

  /** Whether an own screen share is published (or being published). */
  get sharingScreen() {
    return this._publisher.tracks.some((l) => l.source === 'screen');
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
   * Emit one of the events of events.js; any other name throws.
   * @template {EventName} K
   * @param {K} type
   * @param {CourierEventMap[K]} detail
   */
  _emit(type, detail) {
    if (!isEventName(type)) throw new TypeError(`not a CourierClient event: ${type}`);
    this._log('event', type, detail);
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @param {CourierEvent[]} events  in order (as the pure state returns them) */
  _emitAll(events) {
    for (const e of events) this._emit(/** @type {EventName} */ (e.type), e.detail);
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
   * Open the socket, send `join`, wait for `joined` (following redirects), then publish the local media (unless
   * `publish: false`).
   * @param {string|string[]} url  one URL, or several: tried in order while they cannot be reached
   * @param {string} token
   * @returns {Promise<void>}
   */
  async connect(url, token) {
    if (this.state !== 'new') throw new CourierError('bad_state', `connect() called in state ${this.state}`);
    this.urls = normalizeUrls(url);
    if (this.urls.length === 0) throw new CourierError('bad_url', 'no URL to connect to');
    this.state = 'connecting';
    this._token = token;
    const claims = tokenClaims(token);
    const storage =
      this.options.chatStorage !== undefined ? this.options.chatStorage : (globalThis.sessionStorage ?? null);
    this.chat.prepare(claims.room, claims.identity, storage);
    for (let i = 0; ; i++) {
      try {
        await this._joinAt({ url: this.urls[i], node: null }, token);
        break;
      } catch (err) {
        const e = /** @type {CourierError & {opened?: boolean}} */ (err);
        // Not reachable (the socket never opened): the next given URL, if any.
        if (this.state === 'connecting' && e.opened === false && i + 1 < this.urls.length) {
          this._log('cannot reach', this.url, 'trying the next URL');
          this._signal?.detach();
          this._signal = null;
          continue;
        }
        this._teardown(e.closeCode ?? 4000, e.closeCode === 4012 ? e.message : 'join failed');
        throw err;
      }
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
   * Join at `target`, following the cluster's `redirect`s (reconnect.js, `followRedirect`): each one drops the
   * socket and sends the same `join` at the URL it names, without an error or a disconnect for the app (only a
   * `redirected` event). Resolves on `joined`, with `url` and `node` saying where; rejects like
   * {@link CourierClient#_openSession}, or with `too_many_redirects` (close code 4012) after more than three in a row.
   * @param {JoinTarget} target
   * @param {string} token
   * @returns {Promise<void>}
   */
  async _joinAt(target, token) {
    for (let hop = 1; ; hop++) {
      this.url = target.url;
      this.node = target.node;
      try {
        await this._openSession(token);
        return;
      } catch (err) {
        const redirect = /** @type {any} */ (err).redirect;
        if (!redirect) throw err;
        this._signal?.detach();
        this._signal = null;
        const step = followRedirect(hop, redirect, this.url);
        if (step.action === 'fail') {
          throw new CourierError(step.code, step.message, { closeCode: 4012, opened: true });
        }
        this._log('redirected to', step.target.url, 'node', step.target.node);
        this._emit('redirected', { url: step.target.url, node: step.target.node, room: String(redirect.room ?? ''), hop });
        target = step.target;
      }
    }
  }

  /**
   * Open a socket at `this.url` and send `join` (with the chat positions this client holds); resolves on `joined`.
   * Rejects with a CourierError (`closeCode` when the server closed the socket, `opened`: whether the socket had
   * opened) on a close or after `joinTimeoutMs`, or with one carrying the server's `redirect` message.
   * @param {string} token
   * @returns {Promise<void>}
   */
  _openSession(token) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._joinWaiter?.reject(
          new CourierError('timeout', `no "joined" within ${this.options.joinTimeoutMs} ms`, {
            closeCode: 4000,
            opened: this._signal?.opened ?? false,
          }),
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
      /** @type {SignalSocket} */
      let signal;
      try {
        signal = new SignalSocket(this.url, {
          onOpen: () => {
            this._lastHeardAt = Date.now();
            /** @type {Extract<ClientMsg, {type: 'join'}>} */
            const join = { type: 'join', v: PROTOCOL_VERSION, token, auto_subscribe: this.options.autoSubscribe };
            const positions = this.chat.resumeEntries();
            if (positions.length) join.chat = positions;
            this._send(join);
          },
          onMessage: (msg) => this._onSocketMessage(msg),
          onInvalid: () => this._emitError('bad_message', 'server sent invalid JSON'),
          onClose: (code, reason) => this._onSocketClose(signal, code, reason),
          log: (...a) => this._log(...a),
        });
      } catch (err) {
        this._joinWaiter.reject(new CourierError('bad_url', `cannot open ${this.url}: ${/** @type {Error} */ (err).message}`));
        return;
      }
      this._signal = signal;
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
    const canRefreshToken = typeof this.options.getToken === 'function';
    if (!shouldReconnect(code, { reconnect: !!this.options.reconnect, canRefreshToken })) {
      this._teardown(code, reason);
      return;
    }
    this.state = 'reconnecting';
    this._stopPing();
    this._dropSession();
    this.reconnectAttempt = 0;
    const timeoutMs = this.options.reconnectTimeoutMs;
    const last = { url: this.url, node: this.node };
    this._reconnectLoop(new ReconnectState({ code, reason, now: Date.now(), timeoutMs, canRefreshToken }), last);
  }

  /**
   * Forget everything tied to the lost socket and peer connection; keep what the app owns: the local tracks (they
   * are published again), the participants (compared with the room on rejoin) and the chat (resumed).
   */
  _dropSession() {
    this._session++;
    this._chain = Promise.resolve();
    if (this._signal) {
      this._signal.detach();
      this._signal = null;
    }
    if (this.pc) {
      this.pc.onicecandidate = null;
      this.pc.onconnectionstatechange = null;
      this.pc.ontrack = null;
      this.pc.close();
      this.pc = null;
      this._emit('connection_state', { state: 'closed' });
    }
    this._emitAll(this._roomState.dropSession());
    this._publisher.dropSession();
    this._negotiation.reset();
  }

  /**
   * Join again with growing pauses (reconnect.js) until joined, refused for good, left, or `reconnectTimeoutMs` is
   * over. Each attempt tries the next URL (`reconnectTarget`): the node the client was on, then the given URLs.
   * @param {ReconnectState} r
   * @param {JoinTarget} last  where the client was when the connection dropped
   */
  async _reconnectLoop(r, last) {
    while (this.state === 'reconnecting') {
      const step = r.next(Math.random());
      this.reconnectAttempt = step.attempt;
      const { attempt } = step;
      this._emit('reconnecting', { attempt, code: step.code, reason: step.reason, description: step.description });
      if (step.delayMs > 0) await new Promise((res) => setTimeout(res, step.delayMs));
      if (this.state !== 'reconnecting') return;
      if (r.expired(Date.now())) {
        this._teardown(r.lastCode, `not reconnected within ${this.options.reconnectTimeoutMs} ms`);
        return;
      }
      try {
        if (r.needsFreshToken() && this.options.getToken) this._token = await this.options.getToken();
        r.tokenSettled();
        await this._joinAt(reconnectTarget(attempt, last, this.urls), this._token);
      } catch (err) {
        if (this.state !== 'reconnecting') return;
        const e = /** @type {CourierError} */ (err);
        this._log('reconnect attempt failed', attempt, e.message);
        const opened = /** @type {any} */ (e).opened ?? this._signal?.opened ?? false;
        if (this._signal) {
          this._signal.detach();
          this._signal = null;
        }
        const verdict = r.onFailure(/** @type {any} */ (e).closeCode, opened, e.message);
        if (verdict.action === 'give_up') {
          this._teardown(verdict.code, verdict.reason);
          return;
        }
        continue;
      }
      // Joined again.
      this._startPing();
      this._emit('reconnected', { attempt, participantId: this.participantId });
      this.reconnectAttempt = 0;
      this._publisher.republish();
      return;
    }
  }

  // ------------------------------------------------------------------ publishing (publisher.js)

  /**
   * Capture camera and/or microphone (or take `options.localStream`) and publish them.
   * Resolves when the offer is sent; the server's confirmation comes as `local_track_published` (and is what the
   * promises in the returned array wait for).
   * @param {{audio?: boolean, video?: boolean}} [want]
   * @returns {Promise<Promise<LocalTrack>[]>}
   */
  publishMedia(want = { audio: true, video: true }) {
    return this._publisher.publishMedia(want);
  }

  /**
   * Publish one track. Resolves with the LocalTrack once the server confirms it with `track_published`.
   * @param {MediaStreamTrack} track
   * @param {{source?: Source, name?: string, stream?: MediaStream}} [opts]
   * @returns {Promise<LocalTrack>}
   */
  publishTrack(track, opts = {}) {
    return this._publisher.publishTracks([{ track, ...opts }])[0];
  }

  /**
   * Switch the camera (`video`) or microphone (`audio`) to another device, without renegotiating: the new capture
   * replaces the old one on the same sender, so subscribers keep their track (and the muted state is kept).
   * @param {Kind} kind
   * @param {string} deviceId  from `navigator.mediaDevices.enumerateDevices()`
   * @returns {Promise<LocalTrack>}
   */
  switchDevice(kind, deviceId) {
    return this._publisher.switchDevice(kind, deviceId);
  }

  /**
   * Share the screen (a window or a tab): asks the browser (`getDisplayMedia`) and publishes it as source `screen`
   * (and its sound as `screen_audio` when `audio` is asked and given). Ends by itself when the user stops sharing
   * from the browser's own control. Resolves once the server confirms the video.
   * @param {{audio?: boolean}} [opts]
   * @returns {Promise<LocalTrack>}
   */
  shareScreen(opts = {}) {
    return this._publisher.shareScreen(opts);
  }

  /** Stop sharing the screen (unpublish `screen` and `screen_audio`, release the capture). */
  stopScreenShare() {
    return this._publisher.stopScreenShare();
  }

  /**
   * Stop publishing a track (its m-line becomes `inactive`, which unpublishes it).
   * @param {string|MediaStreamTrack|LocalTrack} which  track id, the MediaStreamTrack, or the LocalTrack
   * @returns {Promise<void>}
   */
  unpublishTrack(which) {
    return this._publisher.unpublish(which);
  }

  /**
   * Mute or unmute an own track: disables the MediaStreamTrack (black frames / silence) and tells the room.
   * @param {string|MediaStreamTrack|LocalTrack|Kind} which  track id, track, LocalTrack, or 'audio'/'video' (the
   *        microphone / the camera)
   * @param {boolean} muted
   */
  setMuted(which, muted) {
    this._publisher.setMuted(which, muted);
  }

  // ------------------------------------------------------------------ receiving

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
    /** @type {Extract<ClientMsg, {type: 'track_settings'}>} */
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
    const signal = this._signal;
    if (signal && signal.isOpen) {
      this._send({ type: 'leave' });
      await signal.closed(timeoutMs);
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
      node: this.node,
      room: this.room,
      serverVersion: this.serverVersion,
      participantId: this.participantId,
      identity: this.identity,
      name: this.name,
      servedBy: { ...this.servedBy },
      connectionState: this.pc?.connectionState ?? null,
      signalingState: this.pc?.signalingState ?? null,
      rttMs: this.rttMs,
      participants: [...this.participants.values()].map((p) => ({
        id: p.id,
        identity: p.identity,
        name: p.name,
        tracks: [...p.tracks.values()],
        node: p.node,
        region: p.region,
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
    const report = this.pc ? await this.pc.getStats() : null;
    return inboundRows(report, (mid) => this._roomState.subscriptionByMid(mid));
  }

  /** Send-side statistics from `pc.getStats()` (outbound-rtp), labelled with own track ids. */
  async outboundStats() {
    const report = this.pc ? await this.pc.getStats() : null;
    return outboundRows(report, this.localTracks);
  }

  // ------------------------------------------------------------------ internals: socket

  /**
   * Send a message on the current socket; false (nothing sent) when there is none or it is not open.
   * @param {ClientMsg} msg
   */
  _send(msg) {
    const signal = this._signal;
    if (!signal) {
      this._log('not sent (socket not open)', msg);
      return false;
    }
    return signal.send(msg);
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

  /** @param {ServerMsg} msg  a server message (parsed, with a `type`) */
  _onSocketMessage(msg) {
    this._log('←', msg);
    this._lastHeardAt = Date.now();
    if (msg.type === 'pong') {
      if (typeof msg.ts === 'number') this.rttMs = Date.now() - msg.ts;
      return;
    }
    if (msg.type === 'redirect') {
      // The answer to our join in a cluster: join at the node it names (`_joinAt`), at once, without waiting for the
      // close (4012) that follows. A redirect outside a join is not in the protocol.
      if (this._joinWaiter && this.state !== 'joined') {
        this._joinWaiter.reject(
          new CourierError('redirect', `redirected to ${msg.node}`, { closeCode: 4012, opened: true, redirect: msg }),
        );
      } else this._log('ignoring a redirect outside a join');
      return;
    }
    this._enqueue(() => this._handle(msg));
  }

  /**
   * @param {SignalSocket} signal
   * @param {number} code
   * @param {string} reason
   */
  _onSocketClose(signal, code, reason) {
    if (signal !== this._signal) return;
    this._log('socket closed', code, reason);
    if (this._joinWaiter) {
      // Joining (first connect or a reconnect attempt): whoever waits decides what happens next.
      const text = signal.opened ? `${describeCloseCode(code)}${reason ? `: ${reason}` : ''}` : `cannot connect to ${this.url}`;
      this._joinWaiter.reject(new CourierError('closed', text, { closeCode: code, opened: signal.opened }));
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
    this._publisher.rejectWaiters((local) => new CourierError('closed', `closed before the ${local.kind} track was published`));
    this._emitAll(this._roomState.removeAllRemote('closed'));
    this._signal?.detach({ onlyIfOpen: true });
    if (this.pc) {
      this.pc.onicecandidate = null;
      this.pc.onconnectionstatechange = null;
      this.pc.ontrack = null;
      this.pc.close();
    }
    this._publisher.releaseCapture();
    this._emit('closed', {
      code,
      reason,
      description: describeCloseCode(code),
      leaveReason: this._leaveReason,
      wasJoined,
    });
  }

  // ------------------------------------------------------------------ internals: messages

  /** @param {ServerMsg} msg */
  async _handle(msg) {
    if (msg.type.startsWith('chat_') || (msg.type === 'error' && msg.client_id)) {
      this.chat.handle(msg);
      if (msg.type !== 'error') return;
    }
    switch (msg.type) {
      case 'joined':
        return this._onJoined(msg);
      case 'participant_joined':
      case 'participant_left':
      case 'track_muted':
      case 'subscribed':
      case 'unsubscribed':
      case 'active_speakers':
        this._emitAll(this._roomState.apply(msg));
        return;
      case 'track_published':
        if (msg.participant_id === this.participantId) this._publisher.onOwnTrackPublished({ ...msg.track });
        this._emitAll(this._roomState.apply(msg));
        return;
      case 'track_unpublished':
        this._publisher.forgetTrack(msg.track_id);
        this._emitAll(this._roomState.apply(msg));
        return;
      case 'offer':
        return this._onServerOffer(msg);
      case 'answer':
        return this._onServerAnswer(msg);
      case 'error':
        return this._onServerError(msg);
      case 'leave':
        this._leaveReason = msg.reason ?? null;
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

  /** @param {ServerMsgOf<'joined'>} msg */
  _onJoined(msg) {
    if (this.state !== 'connecting' && this.state !== 'reconnecting') return;
    const rejoin = this.state === 'reconnecting';
    this.state = 'joined';
    this.room = msg.room ?? '';
    this.serverVersion = msg.server_version ?? '';
    this.participantId = msg.participant?.id ?? null;
    this.identity = msg.participant?.identity ?? '';
    this.name = msg.participant?.name ?? this.identity;
    this.servedBy = { node: msg.participant?.node ?? '', region: msg.participant?.region ?? '' };
    // What changed in the room while this client was away (on a rejoin).
    this._emitAll(this._roomState.onJoined(msg, rejoin));
    this._createPeerConnection(msg.ice_servers ?? []);
    this._emit('joined', {
      room: this.room,
      participant: toParticipant(msg.participant ?? {}),
      participants: [...this.participants.values()],
      reconnected: rejoin,
    });
    this._joinWaiter?.resolve(undefined);
    this.chat.onJoined();
  }

  /**
   * Dynacast (`set_layers`): see {@link Publisher#onSetLayers}.
   * @param {ServerMsgOf<'set_layers'>} msg
   * @returns {Promise<void>}
   */
  _onSetLayers(msg) {
    return this._publisher.onSetLayers(msg);
  }

  /**
   * The server says what it forwards of a received track: which simulcast layer, or that it is paused.
   * @param {ServerMsgOf<'stream_state'>} msg
   */
  _onStreamState(msg) {
    this._emitAll(this._roomState.onStreamState(msg));
  }

  /** @param {ServerMsgOf<'error'>} msg */
  async _onServerError(msg) {
    const { code, message, req_type: reqType } = msg;
    this._emitError(code ?? 'unknown', message ?? '', reqType);
    const pc = this.pc;
    if (reqType === 'offer' && pc && this._negotiation.onOfferRefused(pc.signalingState)) {
      // The server will not answer this offer (permission_denied, sdp_rejected): roll it back so that negotiation
      // can go on, and give up on the tracks it was adding (offering them again would only fail again).
      this._log('own offer refused, rolling back', code);
      await pc.setLocalDescription({ type: 'rollback' });
      this._publisher.refuseUnconfirmed(code, message);
      if (this._negotiation.shouldRenegotiate) await this._negotiate();
    }
  }

  // ------------------------------------------------------------------ internals: negotiation (negotiation.js)

  /**
   * A new peer connection (each join, rejoins included, makes one, so a reconnect uses its new TURN credentials).
   * @param {RTCIceServer[]} serverIceServers  `joined.ice_servers`
   */
  _createPeerConnection(serverIceServers) {
    const pc = new RTCPeerConnection({
      iceServers: [...this.options.iceServers, ...serverIceServers],
      iceTransportPolicy: this.options.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc = pc;
    pc.onicecandidate = (e) => {
      const frame = this._negotiation.onLocalCandidate(e.candidate);
      if (frame) this._send(frame);
    };
    pc.onconnectionstatechange = () => {
      this._emit('connection_state', { state: pc.connectionState });
      // ICE gave up (the path broke and consent checks failed): start over with a new connection.
      if (pc.connectionState === 'failed' && this.pc === pc) this._connectionLost(1006, 'media connection failed');
    };
    pc.ontrack = (e) => this._log('ontrack', e.track.kind, 'mid', e.transceiver.mid);
  }

  /** @param {ClientMsg[]} frames */
  _sendAll(frames) {
    for (const f of frames) this._send(f);
  }

  /** Send an offer for the client's current send m-lines, unless one is already outstanding. Runs in the queue. */
  async _negotiate() {
    const pc = this.pc;
    if (!pc || this.state !== 'joined') return;
    const step = this._negotiation.wantOffer(pc.signalingState);
    if (step.action === 'wait') return;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this._publisher.assignMids();
    const tracks = offerTracks(this.localTracks);
    const sdp = /** @type {RTCSessionDescription} */ (pc.localDescription).sdp;
    const candidates = this._negotiation.offerSent(step.id);
    this._send({ type: 'offer', id: step.id, sdp, tracks });
    this._sendAll(candidates);
  }

  /** @param {ServerMsgOf<'offer'>} msg */
  async _onServerOffer(msg) {
    const pc = this.pc;
    if (!pc) return;
    const step = this._negotiation.onServerOffer(msg.id);
    if (step.action === 'ignore') {
      // Impolite side: our offer wins; the server will send a fresh offer after answering ours.
      this._log(step.reason);
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
    this._sendAll(this._negotiation.answerSent());
    this._emitAll(this._roomState.reconcile(pc.getTransceivers()));
    if (this._negotiation.shouldRenegotiate) await this._negotiate();
  }

  /** @param {ServerMsgOf<'answer'>} msg */
  async _onServerAnswer(msg) {
    const pc = this.pc;
    if (!pc) return;
    const step = this._negotiation.onServerAnswer(msg.id);
    if (step.action === 'ignore') {
      this._log(step.reason);
      return;
    }
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    } catch (err) {
      await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      throw new CourierError('sdp_rejected', `cannot apply server answer ${msg.id}: ${/** @type {Error} */ (err).message}`);
    }
    this._emitAll(this._roomState.reconcile(pc.getTransceivers()));
    if (this._negotiation.shouldRenegotiate) await this._negotiate();
  }
}
