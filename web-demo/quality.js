// @ts-check
/**
 * Connection quality, per tile: what a person needs to know about a link ("excellent", "good", "poor", "lost")
 * worked out from what the browser measures. Plain state without a browser, so it can be tested with made-up
 * samples (tests/quality.test.mjs); the page feeds it `getStats()` readings every couple of seconds.
 *
 * A reading is cumulative, as getStats gives it (packets received and lost so far), or already a fraction (the
 * publisher's own link: `fractionLost` from the server's receiver reports). Quality drops at once and rises only after
 * two better readings in a row, so a tile's bars do not flicker.
 */

/** @typedef {'excellent'|'good'|'poor'|'lost'} Quality */

/** Worst first. */
export const QUALITIES = /** @type {const} */ (['lost', 'poor', 'good', 'excellent']);

/**
 * @typedef {object} Reading
 * @property {number} [packetsReceived]  cumulative (a received stream)
 * @property {number} [packetsLost]      cumulative (a received stream)
 * @property {number|null} [fractionLost]  0..1 over the last report interval (a sent stream)
 * @property {number|null} [jitterMs]
 * @property {number|null} [rttMs]
 * @property {boolean} [paused]   the server paused the video for want of bandwidth
 * @property {boolean} [limited]  the browser holds its sending back for want of bandwidth
 * @property {boolean} [expectMedia=true]  packets should be flowing (false for a muted or video-less participant)
 */

/**
 * The quality of one interval, without memory.
 * @param {{loss: number|null, jitterMs?: number|null, rttMs?: number|null, paused?: boolean, limited?: boolean, silent?: boolean}} m
 * @returns {Quality}
 */
export function score({ loss, jitterMs = null, rttMs = null, paused = false, limited = false, silent = false }) {
  if (silent) return 'lost';
  const l = loss ?? 0;
  const j = jitterMs ?? 0;
  const r = rttMs ?? 0;
  if (paused || l >= 0.08 || j >= 60 || r >= 600) return 'poor';
  if (limited || l >= 0.02 || j >= 30 || r >= 300) return 'good';
  return 'excellent';
}

export class QualityMeter {
  /** @param {{silentAfterMs?: number}} [opts] */
  constructor({ silentAfterMs = 3000 } = {}) {
    this.silentAfterMs = silentAfterMs;
    /** @type {Map<string, {received: number, lost: number, lastPacketAt: number, quality: Quality|null, better: number}>} */
    this.links = new Map();
  }

  /**
   * Feed one reading of `key` (a participant id, or 'local') taken at `nowMs`; returns the quality to show (null
   * until there is something to compare with).
   * @param {string} key
   * @param {Reading} r
   * @param {number} nowMs
   * @returns {Quality|null}
   */
  update(key, r, nowMs) {
    let link = this.links.get(key);
    const first = !link;
    if (!link) {
      link = { received: 0, lost: 0, lastPacketAt: nowMs, quality: null, better: 0 };
      this.links.set(key, link);
    }
    /** @type {number|null} */ let loss = r.fractionLost ?? null;
    let silent = false;
    if (r.packetsReceived !== undefined) {
      const received = Math.max(0, r.packetsReceived - link.received);
      // Lost can go down (late packets counted again); never below zero.
      const lost = Math.max(0, (r.packetsLost ?? 0) - link.lost);
      link.received = r.packetsReceived;
      link.lost = r.packetsLost ?? 0;
      if (received > 0) link.lastPacketAt = nowMs;
      if (first) return null;
      loss = received + lost > 0 ? lost / (received + lost) : null;
      silent = r.expectMedia !== false && !r.paused && nowMs - link.lastPacketAt >= this.silentAfterMs;
    }
    const now = score({ loss, jitterMs: r.jitterMs, rttMs: r.rttMs, paused: r.paused, limited: r.limited, silent });
    const rank = (/** @type {Quality|null} */ q) => (q ? QUALITIES.indexOf(q) : -1);
    if (link.quality === null || rank(now) <= rank(link.quality)) {
      link.quality = now;
      link.better = 0;
    } else if (++link.better >= 2) {
      link.quality = now;
      link.better = 0;
    }
    return link.quality;
  }

  /** @param {string} key */
  forget(key) {
    this.links.delete(key);
  }
}
