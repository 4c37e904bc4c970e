// @ts-check
/**
 * Negotiation state of the Courier browser client (docs/protocol.md, "Glare" and "ICE"), with no
 * RTCPeerConnection inside: the client asks it what to do and does it.
 *
 * The rules it keeps: own offers are numbered 1, 2, …; only one is outstanding at a time, and a wish to negotiate
 * meanwhile (or while the connection is not `stable`) is remembered and acted on once the answer is in. The client
 * is the impolite side: while its own offer is unanswered it ignores server offers (the server answers the client's
 * offer and then offers again). An answer counts only if it carries the outstanding offer's id; any other is stale.
 * A server `error` about the outstanding offer means it will never be answered: it is rolled back. Local ICE
 * candidates wait until the first description (offer or answer) has been sent, and a repeated end-of-candidates is
 * sent once.
 *
 * @module negotiation
 */

/**
 * @typedef {Extract<import('./protocol').ClientMsg, {type: 'candidate'}>} CandidateFrame
 *
 * @typedef {{action: 'wait'} | {action: 'offer', id: number}} OfferStep
 *   `wait`: an offer is outstanding or the connection is not stable; negotiation happens after it settles.
 *   `offer`: create and send an offer with this id (then call {@link NegotiationState#offerSent}).
 *
 * @typedef {{action: 'ignore', reason: string} | {action: 'answer'}} ServerOfferStep
 * @typedef {{action: 'ignore', reason: string} | {action: 'apply'}} ServerAnswerStep
 */

export class NegotiationState {
  constructor() {
    this.nextOfferId = 1;
    /** Own offer waiting for its answer. @type {{id: number}|null} */
    this.pendingOffer = null;
    /** Something changed while an offer was outstanding: offer again once it is answered. */
    this.needsNegotiation = false;
    /** An offer or answer has been sent on this connection (candidates may follow it). */
    this.descriptionSent = false;
    /** @type {CandidateFrame[]} candidates gathered before any description was sent */
    this.pendingCandidates = [];
    this.lastCandidateWasEnd = false;
  }

  /** Forget everything: a new peer connection starts from scratch (offer ids keep counting). */
  reset() {
    this.pendingOffer = null;
    this.needsNegotiation = false;
    this.descriptionSent = false;
    this.pendingCandidates = [];
    this.lastCandidateWasEnd = false;
  }

  /**
   * The client wants to (re)negotiate: its send m-lines changed.
   * @param {RTCSignalingState|string} signalingState
   * @returns {OfferStep}
   */
  wantOffer(signalingState) {
    if (this.pendingOffer || signalingState !== 'stable') {
      this.needsNegotiation = true;
      return { action: 'wait' };
    }
    this.needsNegotiation = false;
    return { action: 'offer', id: this.nextOfferId++ };
  }

  /**
   * The offer with this id was set locally and sent: it is outstanding now. Returns the candidates to send after
   * it.
   * @param {number} id
   * @returns {CandidateFrame[]}
   */
  offerSent(id) {
    this.pendingOffer = { id };
    return this.descriptionWasSent();
  }

  /**
   * A server offer arrived.
   * @param {number} id
   * @returns {ServerOfferStep}
   */
  onServerOffer(id) {
    if (this.pendingOffer) {
      return { action: 'ignore', reason: `ignoring server offer ${id}: own offer ${this.pendingOffer.id} outstanding` };
    }
    return { action: 'answer' };
  }

  /**
   * The answer to a server offer was sent. Returns the candidates to send after it.
   * @returns {CandidateFrame[]}
   */
  answerSent() {
    return this.descriptionWasSent();
  }

  /**
   * A server answer arrived. `apply`: it answers the outstanding offer, which is no longer outstanding.
   * @param {number} id
   * @returns {ServerAnswerStep}
   */
  onServerAnswer(id) {
    if (!this.pendingOffer || id !== this.pendingOffer.id) {
      return { action: 'ignore', reason: `ignoring answer ${id}: not for the outstanding offer` };
    }
    this.pendingOffer = null;
    return { action: 'apply' };
  }

  /**
   * The server refused an offer (`error` with `req_type: 'offer'`). True when the own outstanding offer is the one
   * refused and must be rolled back (it is no longer outstanding).
   * @param {RTCSignalingState|string|undefined} signalingState
   * @returns {boolean}
   */
  onOfferRefused(signalingState) {
    if (!this.pendingOffer || signalingState !== 'have-local-offer') return false;
    this.pendingOffer = null;
    return true;
  }

  /**
   * A negotiation settled (an answer applied, a server offer answered, an own offer rolled back): whether to offer
   * again now.
   * @returns {boolean}
   */
  get shouldRenegotiate() {
    return this.needsNegotiation;
  }

  /**
   * A local ICE candidate (`null` or an empty candidate: the end of candidates). Returns the frame to send now, or
   * null (kept until a description is sent, or a repeated end).
   * @param {{candidate?: string|null, sdpMid?: string|null}|null} c
   * @returns {CandidateFrame|null}
   */
  onLocalCandidate(c) {
    /** @type {CandidateFrame} */
    let frame;
    if (!c || !c.candidate) {
      if (this.lastCandidateWasEnd) return null;
      this.lastCandidateWasEnd = true;
      frame = { type: 'candidate', candidate: '', ...(c?.sdpMid != null ? { sdp_mid: c.sdpMid } : {}) };
    } else {
      this.lastCandidateWasEnd = false;
      frame = { type: 'candidate', candidate: c.candidate, ...(c.sdpMid != null ? { sdp_mid: c.sdpMid } : {}) };
    }
    if (!this.descriptionSent) {
      this.pendingCandidates.push(frame);
      return null;
    }
    return frame;
  }

  /** @returns {CandidateFrame[]} */
  descriptionWasSent() {
    this.descriptionSent = true;
    const queued = this.pendingCandidates;
    this.pendingCandidates = [];
    return queued;
  }
}
