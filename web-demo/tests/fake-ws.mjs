// A fake WebSocket (and just enough of RTCPeerConnection) to drive the whole CourierClient in Node without a server
// or a browser: each URL has a scripted server (or none: the socket never opens and closes 1006, like a dead node).
// Events are delivered in later tasks, as a browser's are. Install with `installFakes()` before connecting.

/**
 * A scripted server behind one URL: `onJoin` answers the `join` (and whatever else arrives, via `onMessage`).
 * @typedef {object} FakeServer
 * @property {(ws: FakeWebSocket, join: any) => void} [onJoin]
 * @property {(ws: FakeWebSocket, msg: any) => void} [onMessage]
 */

const later = (/** @type {() => void} */ fn) => setTimeout(fn, 0);

export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  /** Servers by URL; a URL without one is not reachable. @type {Map<string, FakeServer>} */
  static servers = new Map();
  /** Every socket opened, in order. @type {FakeWebSocket[]} */
  static sockets = [];

  static reset() {
    FakeWebSocket.servers = new Map();
    FakeWebSocket.sockets = [];
  }

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    /** What the client sent, parsed. @type {any[]} */
    this.sent = [];
    /** @type {((ev: any) => void)|null} */ this.onopen = null;
    /** @type {((ev: any) => void)|null} */ this.onmessage = null;
    /** @type {((ev: any) => void)|null} */ this.onclose = null;
    /** @type {((ev: any) => void)|null} */ this.onerror = null;
    /** @type {((ev: any) => void)[]} */
    this.closeListeners = [];
    FakeWebSocket.sockets.push(this);
    const server = FakeWebSocket.servers.get(url);
    later(() => {
      if (this.readyState !== FakeWebSocket.CONNECTING) return;
      if (!server) {
        this.onerror?.({});
        this._closed(1006, '');
        return;
      }
      this.server = server;
      this.readyState = FakeWebSocket.OPEN;
      this.onopen?.({});
    });
  }

  /** @param {string} type @param {(ev: any) => void} fn */
  addEventListener(type, fn) {
    if (type === 'close') this.closeListeners.push(fn);
  }

  /** The client sends. @param {string} data */
  send(data) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('send on a socket that is not open');
    const msg = JSON.parse(data);
    this.sent.push(msg);
    later(() => {
      if (this.readyState !== FakeWebSocket.OPEN) return;
      if (msg.type === 'join') this.server?.onJoin?.(this, msg);
      else if (msg.type === 'leave') this.serverClose(1000, 'left');
      else this.server?.onMessage?.(this, msg);
    });
  }

  /** The client closes. @param {number} [code] */
  close(code = 1000) {
    if (this.readyState === FakeWebSocket.CLOSED || this.readyState === FakeWebSocket.CLOSING) return;
    this.readyState = FakeWebSocket.CLOSING;
    later(() => this._closed(code, ''));
  }

  /** The server sends a message. @param {object} msg */
  serverSend(msg) {
    later(() => {
      if (this.readyState === FakeWebSocket.OPEN) this.onmessage?.({ data: JSON.stringify(msg) });
    });
  }

  /** The server closes. @param {number} code @param {string} [reason] */
  serverClose(code, reason = '') {
    later(() => {
      if (this.readyState === FakeWebSocket.OPEN) this._closed(code, reason);
    });
  }

  /** @param {number} code @param {string} reason */
  _closed(code, reason) {
    if (this.readyState === FakeWebSocket.CLOSED) return;
    this.readyState = FakeWebSocket.CLOSED;
    const ev = { code, reason };
    this.onclose?.(ev);
    for (const fn of this.closeListeners) fn(ev);
  }
}

/** An RTCPeerConnection that does nothing (the tests here never publish nor receive media). */
export class FakePeerConnection {
  /** @param {any} config */
  constructor(config) {
    this.config = config;
    this.connectionState = 'new';
    this.signalingState = 'stable';
    /** @type {any} */ this.onicecandidate = null;
    /** @type {any} */ this.onconnectionstatechange = null;
    /** @type {any} */ this.ontrack = null;
  }
  getTransceivers() {
    return [];
  }
  close() {
    this.connectionState = 'closed';
  }
}

/** Put the fakes where the client looks for WebSocket and RTCPeerConnection. */
export function installFakes() {
  FakeWebSocket.reset();
  /** @type {any} */ (globalThis).WebSocket = FakeWebSocket;
  /** @type {any} */ (globalThis).RTCPeerConnection = FakePeerConnection;
}

/**
 * A `joined` answer for `identity` in `room`.
 * @param {string} room
 * @param {string} identity
 */
export function joinedMsg(room, identity) {
  return {
    type: 'joined',
    v: 1,
    room,
    server_version: 'fake',
    participant: { id: `PA_${identity}`, identity, name: identity, tracks: [] },
    participants: [],
  };
}

/** A server that answers every join with `joined`. */
export function joiningServer() {
  return {
    /** @param {FakeWebSocket} ws @param {any} join */
    onJoin(ws, join) {
      const claims = JSON.parse(Buffer.from(String(join.token).split('.')[1], 'base64url').toString());
      ws.serverSend(joinedMsg(claims.video.room, claims.sub));
    },
  };
}

/**
 * A server that answers every join with `redirect` to `url`, then closes 4012 (as a cluster node that does not host
 * the room).
 * @param {string} url
 * @param {string} node
 */
export function redirectingServer(url, node) {
  return {
    /** @param {FakeWebSocket} ws @param {any} join */
    onJoin(ws, join) {
      const claims = JSON.parse(Buffer.from(String(join.token).split('.')[1], 'base64url').toString());
      ws.serverSend({ type: 'redirect', url, node, room: claims.video.room });
      ws.serverClose(4012, 'redirect');
    },
  };
}

/** An unsigned token naming `room` and `identity` (the fake servers read it; nothing verifies it). */
export function fakeToken(room = 'demo', identity = 'alice') {
  const b64 = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256' })}.${b64({ sub: identity, video: { room } })}.sig`;
}
