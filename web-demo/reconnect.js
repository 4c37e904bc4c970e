// @ts-check
/**
 * When and how the Courier browser client joins again after losing its connection (web-demo/README.md,
 * "Reconnecting"), as plain state with no timers and no sockets: the client asks it and does the waiting and the
 * joining.
 *
 * The policy: a joined client reconnects after a close code in {@link RECONNECT_CODES} (or an expired token, `4002`,
 * when it can get a fresh one), unless reconnecting is turned off. Attempts follow at once, then after 0.25 s
 * doubling to 5 s (±25 % jitter), until the deadline. An attempt refused with a final close code ends it; one that
 * failed with an expired token fetches a fresh token first next time; anything else (no answer, server not
 * reachable) is simply tried again.
 *
 * In a cluster (several nodes, a room on one of them at a time) a join may be answered with `redirect`: the client
 * joins again at the URL it names, at most {@link MAX_REDIRECTS} times in a row ({@link followRedirect}). Each
 * reconnect attempt picks its URL in turn ({@link reconnectTarget}): the node the client was last on, then the URLs
 * it was given, round-robin — a dead node refuses fast, and a surviving one redirects to the room's new node.
 *
 * @module reconnect
 */

import { MAX_REDIRECTS, REDIRECT_CLOSE_CODE, RECONNECT_CODES, describeCloseCode } from './signal.js';

/**
 * Where a client joins: a signaling URL, and the cluster node behind it when a `redirect` named it (null otherwise).
 * @typedef {{url: string, node: string|null}} JoinTarget
 */

/**
 * The URLs a client was given (`connect(url | urls, …)`): a non-empty list without duplicates, in the given order.
 * @param {string|string[]} url
 * @returns {string[]} empty when nothing usable was given
 */
export function normalizeUrls(url) {
  const list = Array.isArray(url) ? url : [url];
  return [...new Set(list.filter((u) => typeof u === 'string' && u !== ''))];
}

/**
 * Which URL reconnect attempt `attempt` (1, 2, …) tries: the node the client was last on, then each given URL in
 * turn, round-robin over that list (the last node is not repeated when it is one of the given URLs).
 * @param {number} attempt
 * @param {JoinTarget} last  where the client was joined when the connection dropped
 * @param {string[]} urls    the URLs it was given
 * @returns {JoinTarget}
 */
export function reconnectTarget(attempt, last, urls) {
  /** @type {JoinTarget[]} */
  const order = [last, ...urls.filter((u) => u !== last.url).map((url) => ({ url, node: null }))];
  return order[(Math.max(1, attempt) - 1) % order.length];
}

/**
 * @typedef {{action: 'follow', target: JoinTarget, hop: number}
 *   | {action: 'fail', code: 'too_many_redirects'|'bad_redirect', message: string}} RedirectStep
 */

/**
 * What to do with the `hop`-th `redirect` in a row (1, 2, …) that answered a join at `currentUrl`: follow it to
 * its URL (resolved against the current one, so a relative path works; only `ws:`/`wss:`), or fail because there
 * were too many or the URL is unusable (the message is untrusted input).
 * @param {number} hop
 * @param {{url?: unknown, node?: unknown}} msg  the server's `redirect`
 * @param {string} currentUrl
 * @returns {RedirectStep}
 */
export function followRedirect(hop, msg, currentUrl) {
  if (hop > MAX_REDIRECTS) {
    return { action: 'fail', code: 'too_many_redirects', message: `too many redirects (more than ${MAX_REDIRECTS} in a row, the last to ${String(msg.url)})` };
  }
  /** @type {URL} */
  let url;
  try {
    if (typeof msg.url !== 'string' || msg.url === '') throw new TypeError('no url');
    url = new URL(msg.url, currentUrl);
  } catch {
    return { action: 'fail', code: 'bad_redirect', message: `redirect to an invalid URL: ${String(msg.url)}` };
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    return { action: 'fail', code: 'bad_redirect', message: `redirect to a URL that is not ws: or wss:: ${url.href}` };
  }
  const node = typeof msg.node === 'string' && msg.node !== '' ? msg.node : null;
  return { action: 'follow', target: { url: url.href, node }, hop };
}

/**
 * Whether a joined client whose connection ended with `code` tries to join again.
 * @param {number} code
 * @param {{reconnect: boolean, canRefreshToken: boolean}} opts
 * @returns {boolean}
 */
export function shouldReconnect(code, { reconnect, canRefreshToken }) {
  return !!reconnect && (RECONNECT_CODES.includes(code) || (code === 4002 && canRefreshToken));
}

/**
 * The pause before reconnect attempt `attempt` (1, 2, …): none before the first, then 250 ms doubling to 5 s, times
 * 0.75–1.25.
 * @param {number} attempt
 * @param {number} random  in [0, 1)
 * @returns {number} ms
 */
export function backoffMs(attempt, random) {
  if (attempt <= 1) return 0;
  const base = Math.min(5000, 250 * 2 ** (attempt - 2));
  return base * (0.75 + random * 0.5);
}

/**
 * @typedef {{attempt: number, delayMs: number, code: number, reason: string, description: string}} AttemptStep
 * @typedef {{action: 'retry'} | {action: 'give_up', code: number, reason: string}} FailureStep
 */

/** One run of reconnect attempts, from the lost connection until joined again or given up. */
export class ReconnectState {
  /**
   * @param {{code: number, reason: string, now: number, timeoutMs: number, canRefreshToken: boolean}} init
   *        `code`/`reason`: why the connection was lost
   */
  constructor({ code, reason, now, timeoutMs, canRefreshToken }) {
    this.timeoutMs = timeoutMs;
    this.deadline = now + timeoutMs;
    this.canRefreshToken = canRefreshToken;
    /** Attempts started so far. */
    this.attempt = 0;
    /** Why the last try (or the connection) ended. */
    this.lastCode = code;
    this.lastReason = reason;
    /** The token expired: fetch a fresh one before the next attempt. */
    this.freshToken = code === 4002;
  }

  /**
   * Start the next attempt: its number, the pause before it, and what to report (`reconnecting`).
   * @param {number} random  in [0, 1), for the jitter
   * @returns {AttemptStep}
   */
  next(random) {
    const attempt = ++this.attempt;
    return {
      attempt,
      delayMs: backoffMs(attempt, random),
      code: this.lastCode,
      reason: this.lastReason,
      description: describeCloseCode(this.lastCode),
    };
  }

  /**
   * Whether the time to reconnect is over (checked after the pause, before trying).
   * @param {number} now
   */
  expired(now) {
    return now > this.deadline;
  }

  /** Whether this attempt fetches a fresh token first (then call {@link ReconnectState#tokenSettled}). */
  needsFreshToken() {
    return this.freshToken && this.canRefreshToken;
  }

  /** The attempt got past the token fetch (or needed none); a failed fetch leaves the wish for the next one. */
  tokenSettled() {
    this.freshToken = false;
  }

  /**
   * An attempt failed.
   * @param {number|undefined} closeCode  the socket's close code when the server closed it (or the client gave up
   *        on it), undefined when it failed otherwise (token fetch, bad URL)
   * @param {boolean} opened  whether the socket had opened (a close before that is "not reachable": try again)
   * @param {string} message
   * @returns {FailureStep}
   */
  onFailure(closeCode, opened, message) {
    if (typeof closeCode !== 'number' || !opened) return { action: 'retry' };
    this.lastCode = closeCode;
    this.lastReason = message;
    if (closeCode === 4002 && this.canRefreshToken) this.freshToken = true;
    // Redirected too often (or to a bad URL): the cluster may be moving the room; the next attempt starts over.
    else if (closeCode === REDIRECT_CLOSE_CODE) return { action: 'retry' };
    else if (!RECONNECT_CODES.includes(closeCode)) return { action: 'give_up', code: closeCode, reason: message };
    return { action: 'retry' };
  }
}
