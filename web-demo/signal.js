// @ts-check
/**
 * The signaling socket of the Courier browser client (docs/protocol.md): one WebSocket to `/rtc` that carries JSON
 * messages both ways, and the protocol's close codes.
 *
 * It exists so that the client never touches a WebSocket itself: {@link SignalSocket} opens it, says when it is
 * open, hands over each message parsed (or says it was not JSON), sends objects as JSON (only while open), and
 * reports the close code once. Once {@link SignalSocket#detach detached} it reports nothing more, so a socket the
 * client gave up on cannot disturb the session that replaced it. The protocol's close codes, which of them are worth
 * a reconnect, and its errors ({@link CourierError}) are here too.
 *
 * @module signal
 */

/**
 * The wire messages, generated from the server's own types (protocol.d.ts, courier-protocol).
 * @typedef {import('./protocol').ServerMsg} ServerMsg
 * @typedef {import('./protocol').ClientMsg} ClientMsg
 */

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
  4012: 'redirected: the room lives on another node of the cluster',
  4029: 'too many joins; try again shortly',
  1013: 'the server is restarting or the cluster is busy; try again shortly',
});

/**
 * Close codes after which a joined client reconnects by itself (the network or the server went away for a while,
 * or asked to come back later). Every other code is final: left, refused, removed, replaced, or a bad token.
 * `4000` is the client's own: the socket stopped carrying anything (no pong) and was given up.
 */
export const RECONNECT_CODES = Object.freeze([1001, 1005, 1006, 1011, 1012, 1013, 1014, 4000, 4008, 4029]);

/** Close code after a `redirect`: the room lives on another node of the cluster (join there). */
export const REDIRECT_CLOSE_CODE = 4012;

/** How many `redirect`s in a row a join follows before it fails (docs/protocol.md, `redirect`). */
export const MAX_REDIRECTS = 3;

/**
 * @param {number} code WebSocket close code
 * @returns {string}
 */
export function describeCloseCode(code) {
  return /** @type {Record<number,string>} */ (CLOSE_CODES)[code] ?? `closed (code ${code})`;
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

/**
 * What a text frame from the server is: a message with a `type`, not JSON at all, or JSON without a `type`
 * (ignored). The message is typed as the server's messages are; a `type` this client does not know (a newer
 * server) passes too, and is ignored where it is handled.
 * @param {unknown} data  `MessageEvent.data`
 * @returns {{kind: 'message', msg: ServerMsg} | {kind: 'invalid'} | {kind: 'ignored'}}
 */
export function parseFrame(data) {
  if (typeof data !== 'string') return { kind: 'ignored' };
  /** @type {any} */
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return { kind: 'invalid' };
  }
  if (!msg || typeof msg.type !== 'string') return { kind: 'ignored' };
  return { kind: 'message', msg };
}

/**
 * @typedef {object} SignalHandlers
 * @property {() => void} onOpen
 * @property {(msg: ServerMsg) => void} onMessage     a server message (parsed, with a string `type`)
 * @property {() => void} onInvalid                   a frame that was not JSON
 * @property {(code: number, reason: string) => void} onClose
 * @property {(...args: any[]) => void} log
 */

/** One signaling WebSocket. */
export class SignalSocket {
  /**
   * Opens the socket at once; throws what `new WebSocket` throws (a bad URL).
   * @param {string} url
   * @param {SignalHandlers} handlers
   */
  constructor(url, handlers) {
    this.handlers = handlers;
    /** Whether the socket ever opened (a close before that means the server could not be reached). */
    this.opened = false;
    this.ws = new WebSocket(url);
    const ws = this.ws;
    ws.onopen = () => {
      this.opened = true;
      handlers.onOpen();
    };
    ws.onmessage = (ev) => {
      const frame = parseFrame(ev.data);
      if (frame.kind === 'invalid') handlers.onInvalid();
      else if (frame.kind === 'message') handlers.onMessage(frame.msg);
    };
    ws.onclose = (ev) => handlers.onClose(ev.code, ev.reason);
    ws.onerror = () => handlers.log('websocket error'); // a close event follows
  }

  /** Whether messages can be sent now. */
  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Send a message as JSON; false (and nothing sent) unless the socket is open.
   * @param {ClientMsg} msg
   * @returns {boolean}
   */
  send(msg) {
    if (this.ws.readyState !== WebSocket.OPEN) {
      this.handlers.log('not sent (socket not open)', msg);
      return false;
    }
    this.handlers.log('→', msg);
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Resolves when the socket closes, or after `timeoutMs`.
   * @param {number} timeoutMs
   * @returns {Promise<void>}
   */
  closed(timeoutMs) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.ws.addEventListener('close', () => {
        clearTimeout(t);
        resolve(undefined);
      });
    });
  }

  /**
   * Stop reporting anything (messages, close) and close the socket with 1000.
   * @param {{onlyIfOpen?: boolean}} [opts]  `onlyIfOpen`: leave a socket that is already closing alone
   */
  detach({ onlyIfOpen = false } = {}) {
    const ws = this.ws;
    ws.onmessage = null;
    ws.onclose = null;
    if (!onlyIfOpen) ws.onopen = null;
    if (onlyIfOpen && ws.readyState !== WebSocket.OPEN && ws.readyState !== WebSocket.CONNECTING) return;
    try {
      ws.close(1000);
    } catch {
      /* ignore */
    }
  }
}
