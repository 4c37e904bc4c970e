// @ts-check
/**
 * The WHIP/WHEP page (`whip.html`): publish the camera and microphone with WHIP, or play a publisher with WHEP,
 * with nothing but `fetch` and an `RTCPeerConnection` — what any WHIP/WHEP client does, and what the Chromium
 * tests drive. Query parameters:
 *
 *   ?mode=publish|play      publish (WHIP, default) or play (WHEP)
 *   &token=JWT              the bearer token; otherwise one is fetched from the dev endpoint `dev/token`
 *   &room=R&identity=I      for that dev token (room default `demo`)
 *   &participant=ID         play: whom (default: the first that publishes video)
 *   &layer=q|h|f            play: the largest simulcast layer
 *   &simulcast=0            publish: one layer instead of q/h/f
 *   &autostart=1            start at once
 *
 * The state is on `window.whip` for tests: `state` (`idle`, `connecting`, `connected`, `failed`, `stopped`),
 * `status` (of the POST), `resource` (its Location), `error`, `stats()` (packets and frames sent or received) and
 * `stop()` (DELETE, then close).
 */
import { DEFAULT_AUDIO, DEFAULT_VIDEO, SIMULCAST_ENCODINGS } from './publisher.js';

const params = new URLSearchParams(location.search);
const mode = params.get('mode') === 'play' ? 'play' : 'publish';

/**
 * @typedef {object} WhipState
 * @property {'idle'|'connecting'|'connected'|'failed'|'stopped'} state
 * @property {number} status             the POST's status (0 before)
 * @property {string} resource           the resource URL
 * @property {string} error
 * @property {() => Promise<Record<string, number>>} stats
 * @property {() => Promise<number>} stop   the DELETE's status
 */

/** @type {RTCPeerConnection | null} */
let pc = null;

/** @type {WhipState} */
const whip = {
  state: 'idle',
  status: 0,
  resource: '',
  error: '',
  stats: async () => collect(),
  stop,
};
/** @type {any} */ (window).whip = whip;

const els = {
  start: /** @type {HTMLButtonElement} */ (document.getElementById('start')),
  stop: /** @type {HTMLButtonElement} */ (document.getElementById('stop')),
  state: /** @type {HTMLElement} */ (document.getElementById('state')),
  video: /** @type {HTMLVideoElement} */ (document.getElementById('video')),
};

/** @param {WhipState['state']} s @param {string} [error] */
function set(s, error) {
  whip.state = s;
  if (error) whip.error = error;
  els.state.textContent = error ? `${s}: ${error}` : s;
  els.state.dataset.state = s;
}

/** The bearer token: `token=`, or a development token for `room` and `identity`. */
async function token() {
  const t = params.get('token');
  if (t) return t;
  const endpoint = new URL('dev/token', document.baseURI);
  const room = params.get('room') || 'demo';
  const identity = params.get('identity') || `${mode === 'play' ? 'whep' : 'whip'}-${Math.random().toString(36).slice(2, 6)}`;
  endpoint.search = new URLSearchParams({ room, identity }).toString();
  const res = await fetch(endpoint);
  if (!res.ok) throw new Error(`${endpoint.pathname} answered ${res.status} (is the server in --dev mode?)`);
  return (await res.json()).token;
}

async function start() {
  if (whip.state === 'connecting' || whip.state === 'connected') return;
  set('connecting');
  try {
    const bearer = await token();
    pc = new RTCPeerConnection();
    const conn = pc;
    conn.onconnectionstatechange = () => {
      if (conn.connectionState === 'connected') set('connected');
      if (conn.connectionState === 'failed') set('failed', 'the media connection failed');
    };
    if (mode === 'publish') {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: DEFAULT_AUDIO, video: DEFAULT_VIDEO });
      els.video.srcObject = stream;
      for (const track of stream.getTracks()) {
        /** @type {RTCRtpTransceiverInit} */
        const init = { direction: 'sendonly', streams: [stream] };
        if (track.kind === 'video' && params.get('simulcast') !== '0') {
          init.sendEncodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
        }
        conn.addTransceiver(track, init);
      }
    } else {
      const stream = new MediaStream();
      els.video.srcObject = stream;
      conn.ontrack = (e) => stream.addTrack(e.track);
      conn.addTransceiver('audio', { direction: 'recvonly' });
      conn.addTransceiver('video', { direction: 'recvonly' });
    }
    await conn.setLocalDescription(await conn.createOffer());
    // All candidates in the offer (loopback and LAN gather at once): nothing to trickle.
    await new Promise((resolve) => {
      if (conn.iceGatheringState === 'complete') return resolve(undefined);
      conn.onicegatheringstatechange = () => conn.iceGatheringState === 'complete' && resolve(undefined);
      setTimeout(resolve, 2000);
    });
    const endpoint = new URL(mode === 'publish' ? 'whip' : 'whep', document.baseURI);
    for (const k of mode === 'play' ? ['participant', 'layer'] : []) {
      const v = params.get(k);
      if (v) endpoint.searchParams.set(k, v);
    }
    const res = await fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${bearer}` },
      body: conn.localDescription?.sdp ?? '',
    });
    whip.status = res.status;
    const body = await res.text();
    if (res.status !== 201) throw new Error(`${endpoint.pathname} answered ${res.status}: ${body.slice(0, 200)}`);
    whip.resource = new URL(res.headers.get('Location') ?? '', endpoint).toString();
    await conn.setRemoteDescription({ type: 'answer', sdp: body });
  } catch (err) {
    set('failed', /** @type {Error} */ (err).message);
    pc?.close();
  }
}

async function stop() {
  let status = 0;
  if (whip.resource) {
    status = (await fetch(whip.resource, { method: 'DELETE' }).catch(() => ({ status: 0 }))).status;
  }
  pc?.close();
  pc = null;
  set('stopped');
  return status;
}

/** Packets and frames sent (publish) or received (play), summed over the tracks and layers. */
async function collect() {
  /** @type {Record<string, number>} */
  const out = { audioPackets: 0, videoPackets: 0, videoFrames: 0, layers: 0 };
  if (!pc) return out;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === (mode === 'publish' ? 'outbound-rtp' : 'inbound-rtp')) {
      const key = s.kind === 'audio' ? 'audioPackets' : 'videoPackets';
      out[key] += mode === 'publish' ? s.packetsSent ?? 0 : s.packetsReceived ?? 0;
      if (s.kind === 'video') {
        out.videoFrames += (mode === 'publish' ? s.framesEncoded : s.framesDecoded) ?? 0;
        out.layers += 1;
        if (mode === 'play') out.frameWidth = Math.max(out.frameWidth ?? 0, s.frameWidth ?? 0);
      }
    }
  });
  return out;
}

els.start.textContent = mode === 'publish' ? 'Publish (WHIP)' : 'Play (WHEP)';
els.start.onclick = () => void start();
els.stop.onclick = () => void stop();
set('idle');
if (params.get('autostart') === '1') void start();
