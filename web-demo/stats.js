// @ts-check
/**
 * The statistics the Courier browser client offers (`client.inboundStats()`, `client.outboundStats()`): the rows of
 * `RTCPeerConnection.getStats()` for what it receives and sends, labelled with the protocol's track and participant
 * ids (by `mid`), with defaults for the fields a browser leaves out.
 *
 * Plain functions of a stats report, so that the labelling is the same whatever the report came from (and can be
 * checked in Node with a report made by hand).
 *
 * @module stats
 */

/**
 * @typedef {import('./room-state.js').Subscription} Subscription
 * @typedef {import('./publisher.js').LocalTrack} LocalTrack
 * @typedef {{forEach(fn: (s: any) => void): void, get(id: string): any}} StatsReport  an `RTCStatsReport`
 */

/**
 * Receive-side rows (inbound-rtp), labelled with track and participant ids. `totals.framesDecoded` and
 * `totals.audioPacketsReceived` sum over all streams.
 * @param {StatsReport|null} report  null: no peer connection
 * @param {(mid: string) => Subscription|undefined} subscriptionByMid
 */
export function inboundRows(report, subscriptionByMid) {
  /** @type {any[]} */ const video = [];
  /** @type {any[]} */ const audio = [];
  const totals = { framesDecoded: 0, videoPacketsReceived: 0, audioPacketsReceived: 0 };
  if (!report) return { video, audio, totals };
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    const kind = s.kind ?? s.mediaType;
    const sub = s.mid != null ? subscriptionByMid(String(s.mid)) : undefined;
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

/**
 * Send-side rows (outbound-rtp), labelled with own track ids, with what the server reports back about each stream
 * (RTCP receiver reports: `remote.fractionLost`, `remote.rttMs`).
 * @param {StatsReport|null} report  null: no peer connection
 * @param {Pick<LocalTrack, 'mid'|'trackId'>[]} localTracks
 */
export function outboundRows(report, localTracks) {
  /** @type {any[]} */ const streams = [];
  if (!report) return streams;
  report.forEach((s) => {
    if (s.type !== 'outbound-rtp') return;
    const local = localTracks.find((l) => l.mid != null && l.mid === s.mid);
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
