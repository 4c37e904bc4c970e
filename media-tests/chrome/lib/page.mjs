// What runs inside the pages. Each export is a self-contained function handed to `page.evaluate` (playwright sends
// its source), so none may use anything from this module's scope.

/** The capture both publishers use (relayed and direct): Chromium's fake 1280×720 camera at 30 fps, fake mic. */
export const CAPTURE = {
  video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
};

/**
 * An init script for the relayed pages: the client library trickles every candidate Chrome gathers, and Chrome
 * sometimes gathers its TCP host candidates first. Courier has no ICE-TCP, and its ICE agent, given only TCP
 * candidates so far, finds "no possible pairs", goes Disconnected and closes the peer before the UDP candidates
 * arrive (seen here: the subscriber's media never started). Until the server ignores TCP candidates, the pages
 * do not send them (`--keep-tcp-candidates` on the suite shows the failure).
 */
export function udpCandidatesOnly() {
  const Orig = window.RTCPeerConnection;
  class UdpOnly extends Orig {
    set onicecandidate(h) {
      super.onicecandidate = h
        ? (/** @type {RTCPeerConnectionIceEvent} */ e) => {
            if (e.candidate && / tcp /i.test(e.candidate.candidate)) return;
            h.call(this, e);
          }
        : h;
    }
    get onicecandidate() {
      return super.onicecandidate;
    }
  }
  window.RTCPeerConnection = UdpOnly;
}

/**
 * Installs `window.qa`: a 200 ms sampler of the receiving connection's inbound-rtp stats (what the measurement
 * is computed from), the `stream_state`s heard, and elements that play every received track (Chrome counts
 * freezes on rendered frames and conceals audio only while it is played out).
 * @param {{}} _
 */
export function installReceiver(_) {
  const w = /** @type {any} */ (window);
  w.qa = { samples: [], states: [], pcOf: () => w.client?.pc ?? w.pc ?? null };
  w.qa.attach = (/** @type {MediaStreamTrack} */ track) => {
    const el = document.createElement(track.kind === 'video' ? 'video' : 'audio');
    el.autoplay = true;
    /** @type {any} */ (el).playsInline = true;
    if (track.kind === 'video') {
      el.style.width = '640px';
      el.style.height = '360px';
      el.muted = true;
    }
    el.srcObject = new MediaStream([track]);
    document.body.appendChild(el);
    el.play().catch(() => {});
  };
  const sample = async () => {
    const pc = w.qa.pcOf();
    if (!pc) return;
    const report = await pc.getStats();
    const s = { t: Date.now(), video: /** @type {any[]} */ ([]), audio: /** @type {any[]} */ ([]) };
    report.forEach((/** @type {any} */ r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') {
        s.video.push({
          ssrc: r.ssrc,
          framesDecoded: r.framesDecoded ?? 0,
          framesReceived: r.framesReceived ?? 0,
          freezeCount: r.freezeCount ?? 0,
          totalFreezesDuration: r.totalFreezesDuration ?? 0,
          pauseCount: r.pauseCount ?? 0,
          totalPausesDuration: r.totalPausesDuration ?? 0,
          frameWidth: r.frameWidth ?? 0,
          packetsReceived: r.packetsReceived ?? 0,
          packetsLost: r.packetsLost ?? 0,
          nackCount: r.nackCount ?? 0,
          pliCount: r.pliCount ?? 0,
          bytesReceived: r.bytesReceived ?? 0,
        });
      } else if (r.kind === 'audio') {
        s.audio.push({
          ssrc: r.ssrc,
          totalSamplesReceived: r.totalSamplesReceived ?? 0,
          concealedSamples: r.concealedSamples ?? 0,
          fecPacketsReceived: r.fecPacketsReceived ?? 0,
          packetsReceived: r.packetsReceived ?? 0,
          packetsLost: r.packetsLost ?? 0,
        });
      }
    });
    w.qa.samples.push(s);
  };
  w.qa.timer = setInterval(() => sample().catch(() => {}), 200);
}

/**
 * Relayed: join Courier with the project's client library (served at `/courier.js`), publishing or subscribing.
 * @param {{url: string, token: string, publish: boolean, simulcast: boolean, capture: any}} o
 */
export async function courierJoin({ url, token, publish, simulcast, capture }) {
  const w = /** @type {any} */ (window);
  const m = await import('/courier.js');
  const client = await m.join(url, token, {
    publish: publish ? { audio: true, video: true } : false,
    simulcast,
    reconnect: false,
    log: true,
    videoConstraints: capture.video,
    audioConstraints: capture.audio,
  });
  w.client = client;
  if (w.qa) {
    const note = (/** @type {any} */ d) =>
      w.qa.states.push({ t: Date.now(), trackId: d.trackId, state: d.state, layer: d.layer, reason: d.reason });
    for (const st of client.streamStates.values()) note(st);
    client.on('stream_state', note);
    client.on('remote_track_added', (/** @type {any} */ r) => w.qa.attach(r.track));
    for (const r of client.remoteTracks.values()) w.qa.attach(r.track);
  }
  return client.participantId;
}

/** The publisher's own view once a second: per outbound video encoding, frames encoded, width, limitation. */
export async function outboundSnapshot() {
  const w = /** @type {any} */ (window);
  const pc = w.client?.pc ?? w.pc;
  /** @type {any[]} */ const out = [];
  if (!pc) return out;
  (await pc.getStats()).forEach((/** @type {any} */ s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.push({
        rid: s.rid ?? null,
        framesEncoded: s.framesEncoded ?? 0,
        frameWidth: s.frameWidth ?? 0,
        bytesSent: s.bytesSent ?? 0,
        targetBitrate: s.targetBitrate ?? null,
        limitation: s.qualityLimitationReason ?? null,
        active: s.active ?? null,
      });
    }
  });
  return out;
}

/**
 * The server's view, fetched from the publisher's page (same origin as the server; the publisher's link is never
 * impaired): the admin API's participants (with `bandwidth_estimate_bps`) and the engine's gauges in /metrics.
 * @param {{room: string, adminToken: string}} o
 */
export async function serverView({ room, adminToken }) {
  const out = { participants: /** @type {any} */ (null), bweMinBps: /** @type {number|null} */ (null), error: /** @type {string|null} */ (null) };
  try {
    const r = await fetch(`/api/v1/rooms/${encodeURIComponent(room)}/participants`, {
      headers: { Authorization: `Bearer ${adminToken}` },
    });
    out.participants = r.ok ? (await r.json()).participants : null;
    if (!r.ok) out.error = `participants: HTTP ${r.status}`;
    const m = await fetch('/metrics');
    const text = await m.text();
    const line = text.split('\n').find((l) => l.startsWith('courier_bwe_estimate_min_bps'));
    if (line) out.bweMinBps = Number(line.split(/\s+/)[1]);
  } catch (e) {
    out.error = String(e);
  }
  return out;
}

/**
 * Direct P2P, publisher side: capture, one sendonly transceiver per track (one VP8 encoding), offer with every
 * candidate gathered (no trickle). Returns the offer SDP.
 * @param {{capture: any}} o
 */
export async function p2pOffer({ capture }) {
  const w = /** @type {any} */ (window);
  const stream = await navigator.mediaDevices.getUserMedia(capture);
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
  w.pc = pc;
  pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
  const v = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly', streams: [stream] });
  const caps = RTCRtpSender.getCapabilities('video')?.codecs ?? [];
  const vp8 = caps.filter((c) => c.mimeType.toLowerCase() === 'video/vp8');
  v.setCodecPreferences([...vp8, ...caps.filter((c) => c.mimeType.toLowerCase() !== 'video/vp8')]);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve(null);
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve(null));
    setTimeout(resolve, 5000);
  });
  return /** @type {RTCSessionDescription} */ (pc.localDescription).sdp;
}

/**
 * Direct P2P, subscriber side: answer the offer, play what arrives. Returns the answer SDP.
 * @param {{sdp: string}} o
 */
export async function p2pAnswer({ sdp }) {
  const w = /** @type {any} */ (window);
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
  w.pc = pc;
  pc.ontrack = (e) => w.qa.attach(e.track);
  await pc.setRemoteDescription({ type: 'offer', sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve(null);
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve(null));
    setTimeout(resolve, 5000);
  });
  return /** @type {RTCSessionDescription} */ (pc.localDescription).sdp;
}

/** @param {{sdp: string}} o */
export async function p2pAccept({ sdp }) {
  await /** @type {any} */ (window).pc.setRemoteDescription({ type: 'answer', sdp });
}

/** Video frames decoded so far on the receiving page (0 before any). */
export function framesDecodedNow() {
  const s = /** @type {any} */ (window).qa?.samples ?? [];
  const last = s[s.length - 1];
  return last ? last.video.reduce((/** @type {number} */ a, /** @type {any} */ v) => a + v.framesDecoded, 0) : 0;
}

/** Everything the receiving page recorded. */
export function receiverRecord() {
  const w = /** @type {any} */ (window);
  clearInterval(w.qa.timer);
  return { samples: w.qa.samples, states: w.qa.states };
}
