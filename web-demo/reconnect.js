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
 * @module reconnect
 */

import { RECONNECT_CODES, describeCloseCode } from './signal.js';

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
    else if (!RECONNECT_CODES.includes(closeCode)) return { action: 'give_up', code: closeCode, reason: message };
    return { action: 'retry' };
  }
}
