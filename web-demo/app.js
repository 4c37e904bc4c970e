// @ts-check
/**
 * The Courier demo page: a join form, a local preview and one tile per remote participant.
 *
 * Query parameters (so that a test can skip the form):
 *   ?url=ws://host/rtc   signaling URL (default: `rtc` next to this page, ws: or wss:); several, separated by
 *                        commas or spaces (a cluster's nodes), are all given to the client
 *   &token=JWT           use this token; otherwise one is fetched from the dev endpoint `dev/token`
 *   &room=R&identity=I&name=N
 *   &publish=audio,video publish what (`none` for nothing; default both)
 *   &simulcast=1         send the camera as three simulcast layers (q/h/f)
 *   &capture=640x360     camera capture size (default 1280x720)
 *   &autojoin=1          join at once
 *
 * For tests: `window.courier` is the current CourierClient (see courier.js; `snapshot()`, `inboundStats()`),
 * `window.courierApp` holds the page's state: {state: 'idle'|'connecting'|'joined'|'reconnecting'|'closed'|'error',
 * error, reconnects} (`reconnects`: how many times the page came back after losing the connection).
 */
import { CourierClient } from './courier.js';
import { QualityMeter } from './quality.js';

/** @template {HTMLElement} T @param {string} id @returns {T} */
const $ = (id) => /** @type {T} */ (document.getElementById(id));

const params = new URLSearchParams(location.search);

const els = {
  status: $('status'),
  joinPanel: $('join-panel'),
  form: /** @type {HTMLFormElement} */ ($('join-form')),
  url: /** @type {HTMLInputElement} */ ($('url')),
  room: /** @type {HTMLInputElement} */ ($('room')),
  name: /** @type {HTMLInputElement} */ ($('name')),
  token: /** @type {HTMLTextAreaElement} */ ($('token')),
  tokenDetails: /** @type {HTMLDetailsElement} */ ($('token-details')),
  pubVideo: /** @type {HTMLInputElement} */ ($('pub-video')),
  pubAudio: /** @type {HTMLInputElement} */ ($('pub-audio')),
  joinButton: /** @type {HTMLButtonElement} */ ($('join-button')),
  formError: $('form-error'),
  call: $('call'),
  roomName: $('room-name'),
  participantCount: $('participant-count'),
  nodeId: $('node-id'),
  toggleMic: /** @type {HTMLButtonElement} */ ($('toggle-mic')),
  toggleCam: /** @type {HTMLButtonElement} */ ($('toggle-cam')),
  enableAudio: /** @type {HTMLButtonElement} */ ($('enable-audio')),
  leaveButton: /** @type {HTMLButtonElement} */ ($('leave-button')),
  shareScreen: /** @type {HTMLButtonElement} */ ($('share-screen')),
  cameraSelect: /** @type {HTMLSelectElement} */ ($('camera-select')),
  micSelect: /** @type {HTMLSelectElement} */ ($('mic-select')),
  tiles: $('tiles'),
  callError: $('call-error'),
  tileTemplate: /** @type {HTMLTemplateElement} */ ($('tile-template')),
  chatList: $('chat-list'),
  chatForm: /** @type {HTMLFormElement} */ ($('chat-form')),
  chatInput: /** @type {HTMLInputElement} */ ($('chat-input')),
  chatTyping: $('chat-typing'),
  banner: $('banner'),
  bannerText: $('banner-text'),
};

/** @type {{state: string, error: string|null, reconnects: number}} */
const app = { state: 'idle', error: null, reconnects: 0 };
/** @type {any} */ (window).courierApp = app;
/** @type {any} */ (window).courier = null;

// ---------------------------------------------------------------- form defaults

/** The signaling URL next to this page: http://host/x/ → ws://host/x/rtc. */
function defaultSignalingUrl() {
  const u = new URL('rtc', document.baseURI);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return 'ws://127.0.0.1:7880/rtc';
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = '';
  u.hash = '';
  return u.toString();
}

els.url.value = params.get('url') ?? defaultSignalingUrl();
if (params.has('room')) els.room.value = params.get('room') ?? '';
els.name.value = params.get('name') ?? params.get('identity') ?? '';
if (params.get('token')) {
  els.token.value = params.get('token') ?? '';
  els.tokenDetails.open = true;
}
if (params.has('publish')) {
  const what = (params.get('publish') ?? '').split(',').map((s) => s.trim());
  els.pubAudio.checked = what.includes('audio');
  els.pubVideo.checked = what.includes('video');
}

// ---------------------------------------------------------------- status helpers

/**
 * @param {string} state
 * @param {string} text
 */
function setStatus(state, text) {
  app.state = state;
  els.status.dataset.state = state;
  els.status.textContent = text;
}

/**
 * @param {HTMLElement} el
 * @param {string|null} text
 */
function showError(el, text) {
  el.hidden = !text;
  el.textContent = text ?? '';
  if (text) app.error = text;
}

/**
 * The banner over the call (reconnecting, or why media is missing); null hides it.
 * @param {'reconnecting'|'warning'|null} kind
 * @param {string} [text]
 */
function showBanner(kind, text = '') {
  els.banner.hidden = !kind;
  els.banner.dataset.kind = kind ?? '';
  els.bannerText.textContent = text;
}

/**
 * What went wrong, said for people: the client's error codes and close codes turned into a sentence and a hint.
 * @param {any} err  a CourierError (code, closeCode) or an Error
 */
function explain(err) {
  const code = err?.code;
  const close = err?.closeCode;
  const url = els.url.value.trim();
  if (code === 'closed' && !String(err.message).startsWith('cannot connect')) {
    if ([4001, 4002, 4004].includes(close)) return `Permission denied: ${err.message}. Ask for a new invitation (token).`;
    if ([4006, 4007, 4011, 4029, 1013].includes(close)) return `The server turned the join down: ${err.message}.`;
    return `Disconnected: ${err.message}.`;
  }
  if (code === 'closed' || code === 'bad_url' || code === 'timeout') {
    return `Cannot reach the server at ${url}. Is courier running there (courier serve --dev)?`;
  }
  return err?.message ?? String(err);
}

/**
 * Camera or microphone refused or missing: say so in words, the call goes on without them.
 * @param {string} message  the client's `media_unavailable` message (`getUserMedia failed: NotAllowedError: …`)
 */
function explainMedia(message) {
  if (/NotAllowedError|Permission/i.test(message)) {
    return 'Camera and microphone are blocked for this page. Allow them in the browser to be seen and heard; you can still watch and chat.';
  }
  if (/NotFoundError|OverconstrainedError/i.test(message)) {
    return 'No camera or microphone was found. You can still watch and chat.';
  }
  if (/NotReadableError/i.test(message)) {
    return 'The camera or microphone is in use by another program. You can still watch and chat.';
  }
  return `Camera or microphone unavailable (${message}). You can still watch and chat.`;
}

// ---------------------------------------------------------------- tiles

/**
 * @typedef {object} Tile
 * @property {HTMLElement} el
 * @property {HTMLVideoElement} video
 * @property {MediaStream} videoStream
 * @property {Map<string, HTMLAudioElement>} audios  by track id
 * @property {Set<string>} mutedKinds
 * @property {string|null} videoTrackId  the remote video track shown (its `stream_state` drives the badge/overlay)
 * @property {boolean} visible   on screen (IntersectionObserver); off screen it is reported hidden
 */

/** Simulcast rids as people say them. */
const LAYER_LABELS = /** @type {Record<string, string>} */ ({ q: 'low', h: 'medium', f: 'high' });

/** @param {string} rid */
const layerLabel = (rid) => LAYER_LABELS[rid] ?? rid;

/** @type {Map<string, Tile>} by participant id ('local' for the preview) */
const tiles = new Map();

/**
 * @param {string} key
 * @param {string} label
 * @param {boolean} local
 * @returns {Tile}
 */
function ensureTile(key, label, local = false) {
  let tile = tiles.get(key);
  if (tile) return tile;
  const frag = /** @type {DocumentFragment} */ (els.tileTemplate.content.cloneNode(true));
  const el = /** @type {HTMLElement} */ (frag.querySelector('.tile'));
  el.classList.add(local ? 'local' : 'remote', 'no-video');
  el.dataset.participantId = key;
  /** @type {HTMLElement} */ (el.querySelector('.tile-name')).textContent = label;
  /** @type {HTMLElement} */ (el.querySelector('.avatar')).textContent = initials(label);
  const video = /** @type {HTMLVideoElement} */ (el.querySelector('video'));
  tile = {
    el,
    video,
    videoStream: new MediaStream(),
    audios: new Map(),
    mutedKinds: new Set(),
    videoTrackId: null,
    visible: true,
  };
  tiles.set(key, tile);
  if (!local) {
    resizeObserver?.observe(video);
    visibilityObserver?.observe(el);
  }
  if (local) els.tiles.prepend(el);
  else els.tiles.append(el);
  updateCount();
  return tile;
}

/**
 * A remote participant's tile, with its name and the node that serves it.
 * @param {import('./courier.js').Participant} p
 */
function participantTile(p) {
  const tile = ensureTile(p.id, p.name);
  renderServedBy(tile, p);
  return tile;
}

/**
 * The badge beside a name, only in a cluster: the node that serves the participant and its region
 * (`node-a · eu-west`), with `data-node` for tests; hidden outside a cluster.
 * @param {Tile} tile
 * @param {{node: string, region: string}} served
 */
function renderServedBy(tile, { node, region }) {
  const badge = /** @type {HTMLElement} */ (tile.el.querySelector('.node-badge'));
  badge.hidden = !node;
  badge.textContent = node ? [node, region].filter(Boolean).join(' · ') : '';
  badge.title = node ? `served by cluster node ${node}${region ? ` (region ${region})` : ''}` : '';
  if (node) badge.dataset.node = node;
  else delete badge.dataset.node;
}

/** @param {string} key */
function removeTile(key) {
  const tile = tiles.get(key);
  if (!tile) return;
  tile.video.srcObject = null;
  for (const a of tile.audios.values()) a.srcObject = null;
  resizeObserver?.unobserve(tile.video);
  visibilityObserver?.unobserve(tile.el);
  if (tile.videoTrackId) reportedSizes.delete(tile.videoTrackId);
  tile.el.remove();
  tiles.delete(key);
  updateCount();
}

/** @param {Tile} tile */
function refreshTile(tile) {
  const hasVideo = tile.videoStream.getVideoTracks().length > 0 && !tile.mutedKinds.has('video');
  tile.el.classList.toggle('no-video', !hasVideo);
  const badges = /** @type {HTMLElement} */ (tile.el.querySelector('.badges'));
  badges.replaceChildren();
  for (const kind of ['audio', 'video']) {
    if (!tile.mutedKinds.has(kind)) continue;
    const b = document.createElement('span');
    b.className = 'badge off';
    b.textContent = kind === 'audio' ? 'mic off' : 'cam off';
    badges.append(b);
  }
  renderStreamState(tile);
}

/**
 * A remote tile: which simulcast layer the server forwards (badge), or that it paused the video (overlay).
 * @param {Tile} tile
 */
function renderStreamState(tile) {
  if (tile.el.classList.contains('local')) return;
  const badge = /** @type {HTMLElement} */ (tile.el.querySelector('.layer-badge'));
  const overlay = /** @type {HTMLElement} */ (tile.el.querySelector('.paused-overlay'));
  const st = tile.videoTrackId ? client?.getStreamState(tile.videoTrackId) ?? null : null;
  const paused = st?.state === 'paused';
  const layer = !paused && st?.layer ? st.layer : null;
  badge.hidden = !layer;
  if (layer) {
    badge.dataset.layer = layer;
    badge.textContent = layerLabel(layer);
    badge.title = `Receiving the ${layerLabel(layer)} quality layer`;
  } else {
    delete badge.dataset.layer;
    badge.textContent = '';
  }
  overlay.hidden = !paused;
  tile.el.classList.toggle('paused', paused);
  tile.el.dataset.streamState = st?.state ?? '';
  if (paused) {
    const bandwidth = st?.reason === 'bandwidth';
    /** @type {HTMLElement} */ (overlay.querySelector('.paused-title')).textContent = bandwidth
      ? 'Paused — low bandwidth'
      : 'Video paused';
    /** @type {HTMLElement} */ (overlay.querySelector('.paused-hint')).textContent = bandwidth
      ? 'Video resumes when your connection improves'
      : st?.reason ?? '';
  }
}

/**
 * The own tile: which simulcast layers this browser encodes, as the server asked (dynacast `set_layers`).
 * @param {import('./courier.js').LayerState[]} layers
 */
function renderLocalLayers(layers) {
  const tile = tiles.get('local');
  if (!tile) return;
  const badge = /** @type {HTMLElement} */ (tile.el.querySelector('.layer-badge'));
  const active = layers.filter((l) => l.active).map((l) => l.rid);
  badge.hidden = layers.length === 0;
  badge.dataset.layer = active.length === 0 ? 'none' : active[active.length - 1];
  badge.textContent = active.length === 0 ? 'not sending — nobody watching' : `sending ${active.map(layerLabel).join(' · ')}`;
  badge.title = 'Simulcast layers encoded: the server pauses those no viewer needs';
}

/** @param {HTMLMediaElement} media */
function play(media) {
  media.play().catch((err) => {
    if (err && err.name === 'NotAllowedError') els.enableAudio.hidden = false; // autoplay policy: needs a click
  });
}

/** The tile key of a participant's screen share. @param {string} participantId */
const screenKey = (participantId) => `${participantId}#screen`;

/** @param {string} label */
function initials(label) {
  return (
    label
      .split(/[\s._-]+/)
      .filter(Boolean)
      .slice(0, 2)
      .map((w) => w[0].toUpperCase())
      .join('') || '?'
  );
}

function updateCount() {
  const n = [...tiles.keys()].filter((k) => !k.endsWith('#screen')).length;
  els.participantCount.textContent = n === 1 ? '1 participant' : `${n} participants`;
}

function clearTiles() {
  for (const key of [...tiles.keys()]) removeTile(key);
}

// ---------------------------------------------------------------- joining

/**
 * The token to join with: the one pasted (or given in the URL), or one from the dev endpoint.
 * @param {string|null} [identity]  ask the dev endpoint for this identity (a reconnect keeps the first one)
 * @returns {Promise<{token: string, url: string, minted: boolean, identity: string}>}
 */
async function obtainToken(identity = null) {
  const url = els.url.value.trim();
  const token = els.token.value.trim();
  if (token) return { token, url, minted: false, identity: '' };
  const room = els.room.value.trim();
  if (!room) throw new Error('enter a room name (or a token)');
  const name = els.name.value.trim();
  identity = identity || params.get('identity') || `${slug(name) || 'guest'}-${Math.random().toString(36).slice(2, 6)}`;
  const endpoint = new URL('dev/token', document.baseURI);
  endpoint.search = new URLSearchParams({ room, identity, name: name || identity }).toString();
  let res;
  try {
    res = await fetch(endpoint);
  } catch (err) {
    throw new Error(`cannot reach ${endpoint.pathname}: ${/** @type {Error} */ (err).message}`);
  }
  if (!res.ok) {
    let body = (await res.text().catch(() => '')).trim();
    body = body.startsWith('<') ? '' : body.slice(0, 200); // not an HTML error page
    throw new Error(`${endpoint.pathname} answered ${res.status}${body ? `: ${body}` : ''} (is the server in --dev mode?)`);
  }
  const data = await res.json();
  if (!data || typeof data.token !== 'string') throw new Error(`${endpoint.pathname} sent no token`);
  return { token: data.token, url: url || data.url, minted: true, identity };
}

/** @param {string} s */
function slug(s) {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 32);
}

/** @type {CourierClient|null} */
let client = null;
let leaving = false;

async function doJoin() {
  if (client) return;
  showError(els.formError, null);
  showError(els.callError, null);
  app.error = null;
  els.joinButton.disabled = true;
  setStatus('connecting', 'connecting…');
  try {
    const { token, url, minted, identity } = await obtainToken();
    const publish = { audio: els.pubAudio.checked, video: els.pubVideo.checked };
    const simulcast = params.get('simulcast') === '1';
    const capture = /^(\d+)x(\d+)$/.exec(params.get('capture') ?? '');
    const c = new CourierClient({
      publish: publish.audio || publish.video ? publish : false,
      simulcast,
      videoConstraints: capture ? { width: { ideal: Number(capture[1]) }, height: { ideal: Number(capture[2]) } } : undefined,
      // A reconnect after the token expired asks the dev endpoint again, for the same identity.
      getToken: minted ? async () => (await obtainToken(identity)).token : null,
    });
    client = c;
    /** @type {any} */ (window).courier = c;
    wireClient(c);
    leaving = false;
    const urls = url.split(/[\s,]+/).filter(Boolean);
    await c.connect(urls.length > 1 ? urls : url, token);
    if (client !== c) return;
    renderNode(c);
    setStatus('joined', `joined ${c.room} as ${c.name}`);
    els.joinPanel.hidden = true;
    els.call.hidden = false;
    els.roomName.textContent = c.room;
    // Fill in whatever arrived before the listeners' first chance to render.
    for (const p of c.participants.values()) participantTile(p);
    for (const r of c.remoteTracks.values()) attachRemote(r);
    showLocalPreview(c);
    fillDevicePickers(c);
    renderShareButton(c);
  } catch (err) {
    client = null;
    const msg = explain(err);
    setStatus('error', 'not connected');
    showError(els.formError, msg);
    app.error = msg;
  } finally {
    els.joinButton.disabled = false;
  }
}

/** @param {CourierClient} c */
function showLocalPreview(c) {
  // The own tile always: the camera, or the initials when there is none.
  const tile = ensureTile('local', `${c.name || 'You'} (you)`, true);
  renderServedBy(tile, c.servedBy);
  if (!c.localStream) {
    els.toggleMic.disabled = true;
    els.toggleCam.disabled = true;
    refreshTile(tile);
    return;
  }
  tile.videoStream = new MediaStream(c.localStream.getVideoTracks());
  tile.video.srcObject = tile.videoStream;
  play(tile.video);
  refreshTile(tile);
  const cam = c.localTracks.find((l) => l.kind === 'video' && l.layers);
  if (cam?.layers) renderLocalLayers(cam.layers);
  els.toggleMic.disabled = c.localStream.getAudioTracks().length === 0;
  els.toggleCam.disabled = c.localStream.getVideoTracks().length === 0;
}

/** @param {import('./courier.js').RemoteTrack} r */
function attachRemote(r) {
  const p = client?.participants.get(r.participantId);
  const source = p?.tracks.get(r.trackId)?.source ?? (r.kind === 'audio' ? 'microphone' : 'camera');
  if (source === 'screen') {
    // A screen share gets a tile of its own, wide.
    const tile = ensureTile(screenKey(r.participantId), `${p?.name ?? r.participantId} — screen`);
    tile.el.classList.add('screen');
    els.tiles.prepend(tile.el); // a shared screen leads the grid
    for (const t of tile.videoStream.getVideoTracks()) tile.videoStream.removeTrack(t);
    tile.videoStream.addTrack(r.track);
    tile.videoTrackId = r.trackId;
    tile.video.srcObject = tile.videoStream;
    play(tile.video);
    refreshTile(tile);
    reportTileSizes();
    return;
  }
  const tile = ensureTile(r.participantId, p?.name ?? r.participantId);
  if (r.kind === 'video') {
    // One video per tile: the camera wins over other video sources.
    const current = tile.videoStream.getVideoTracks();
    const isCamera = (p?.tracks.get(r.trackId)?.source ?? 'camera') === 'camera';
    if (current.length === 0 || isCamera) {
      for (const t of current) tile.videoStream.removeTrack(t);
      tile.videoStream.addTrack(r.track);
      tile.videoTrackId = r.trackId;
      tile.video.srcObject = tile.videoStream;
      play(tile.video);
      reportTileSizes();
    }
  } else if (!tile.audios.has(r.trackId)) {
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.dataset.trackId = r.trackId;
    audio.srcObject = new MediaStream([r.track]);
    tile.el.append(audio);
    tile.audios.set(r.trackId, audio);
    play(audio);
  }
  const info = p?.tracks.get(r.trackId);
  if (info?.muted) tile.mutedKinds.add(r.kind);
  refreshTile(tile);
}

// ---------------------------------------------------------------- adaptive stream

/**
 * Adaptive stream: each remote video tells the server how large it is shown (its element's size in device pixels),
 * and that it is hidden while off screen, so the server sends the simulcast layer that fits. `?adaptive=0` turns
 * it off (the tests that drive the sizes themselves use it).
 */
const ADAPTIVE = params.get('adaptive') !== '0';
/** Last size reported per track id, to report only changes. @type {Map<string, string>} */
const reportedSizes = new Map();
/** @type {ReturnType<typeof setTimeout>|undefined} */
let sizeTimer;

/** Report every remote video's size (debounced, changes only). */
function reportTileSizes() {
  if (!ADAPTIVE) return;
  clearTimeout(sizeTimer);
  sizeTimer = setTimeout(() => {
    const c = client;
    if (!c || c.state !== 'joined') return;
    const dpr = window.devicePixelRatio || 1;
    for (const tile of tiles.values()) {
      const id = tile.videoTrackId;
      if (!id) continue;
      const r = tile.video.getBoundingClientRect();
      const hidden = r.width === 0 || r.height === 0 || !tile.visible;
      const width = Math.round(r.width * dpr);
      const height = Math.round(r.height * dpr);
      const key = hidden ? 'hidden' : `${width}x${height}`;
      if (reportedSizes.get(id) === key) continue;
      reportedSizes.set(id, key);
      c.setTrackSettings(id, hidden ? { hidden: true } : { width, height });
    }
  }, 150);
}

const resizeObserver = typeof ResizeObserver === 'function' ? new ResizeObserver(() => reportTileSizes()) : null;
const visibilityObserver =
  typeof IntersectionObserver === 'function'
    ? new IntersectionObserver((entries) => {
        for (const e of entries) {
          for (const tile of tiles.values()) if (tile.el === e.target) tile.visible = e.isIntersecting;
        }
        reportTileSizes();
      })
    : null;
window.addEventListener('resize', () => reportTileSizes());
/** @type {any} */ (app).tileSizes = reportedSizes;

/** @param {CourierClient} c */
function wireClient(c) {
  c.on('joined', ({ participants }) => {
    for (const p of participants) participantTile(p);
  });
  c.on('participant_joined', ({ participant }) => participantTile(participant));
  c.on('participant_left', ({ participantId }) => {
    removeTile(participantId);
    removeTile(screenKey(participantId));
    quality.forget(participantId);
  });
  c.on('remote_track_added', (r) => attachRemote(r));
  c.on('remote_track_removed', (r) => {
    if (tiles.get(screenKey(r.participantId))?.videoTrackId === r.trackId) {
      removeTile(screenKey(r.participantId));
      return;
    }
    const tile = tiles.get(r.participantId);
    if (!tile) return;
    if (r.kind === 'video') {
      for (const t of tile.videoStream.getVideoTracks()) if (t === r.track) tile.videoStream.removeTrack(t);
      if (tile.videoTrackId === r.trackId) tile.videoTrackId = null;
    } else {
      const audio = tile.audios.get(r.trackId);
      if (audio) {
        audio.srcObject = null;
        audio.remove();
        tile.audios.delete(r.trackId);
      }
    }
    refreshTile(tile);
  });
  c.on('track_muted', ({ participantId, trackId, muted }) => {
    const tile = tiles.get(participantId);
    const info = c.participants.get(participantId)?.tracks.get(trackId);
    if (!tile || !info) return;
    if (muted) tile.mutedKinds.add(info.kind);
    else tile.mutedKinds.delete(info.kind);
    refreshTile(tile);
  });
  c.on('stream_state', ({ trackId }) => {
    for (const tile of tiles.values()) if (tile.videoTrackId === trackId) renderStreamState(tile);
  });
  c.on('layers', ({ localTrack, layers }) => {
    if (localTrack.kind === 'video' && localTrack.source === 'camera') renderLocalLayers(layers);
  });
  c.on('error', ({ code, message }) => {
    console.warn('courier error', code, message);
    if (code === 'media_unavailable') showBanner('warning', explainMedia(message));
    else if (code === 'permission_denied') showError(els.callError, `Not allowed: ${message}`);
    else if (c.state === 'joined') showError(els.callError, `${code}: ${message}`);
  });
  c.on('reconnecting', ({ attempt, description }) => {
    if (client !== c) return;
    setStatus('reconnecting', 'reconnecting…');
    const why = description === 'connection lost' ? '' : ` (${description})`;
    showBanner('reconnecting', `Connection lost${why}. Reconnecting${attempt > 1 ? ` — attempt ${attempt}` : ''}…`);
    reportedSizes.clear();
    renderSpeakers(c, []);
  });
  c.on('active_speakers', ({ speakers }) => renderSpeakers(c, speakers));
  c.on('local_track_unpublished', ({ localTrack }) => {
    if (localTrack.source === 'screen') {
      removeTile(screenKey('local'));
      renderShareButton(c);
    }
  });
  c.on('local_track_replaced', () => {
    showLocalPreview(c);
    fillDevicePickers(c);
  });
  c.on('redirected', () => renderNode(c));
  c.on('reconnected', () => {
    if (client !== c) return;
    app.reconnects++;
    renderNode(c);
    setStatus('joined', `joined ${c.room} as ${c.name}`);
    showBanner(null);
    for (const p of c.participants.values()) participantTile(p);
    // The new session may be served by another node.
    const own = tiles.get('local');
    if (own) renderServedBy(own, c.servedBy);
  });
  c.on('chat_changed', () => renderChat(c));
  c.on('chat_typing', ({ identity, typing }) => showTyping(c, identity, typing));
  c.on('chat_failed', ({ code, message }) => showError(els.callError, `message not sent: ${code}: ${message}`));
  c.on('closed', ({ description, code, leaveReason }) => {
    if (client !== c) return;
    client = null;
    clearTiles();
    showBanner(null);
    els.chatList.replaceChildren();
    els.call.hidden = true;
    els.joinPanel.hidden = false;
    if (leaving) {
      setStatus('closed', 'left');
    } else {
      const msg = `disconnected: ${description}${leaveReason ? ` (${leaveReason})` : ''}`;
      setStatus(code === 1000 ? 'closed' : 'error', 'not connected');
      showError(els.formError, msg);
    }
  });
}

/**
 * "node: <id>" beside the room name, only in a cluster: the node the last redirect named (none without one).
 * @param {CourierClient} c
 */
function renderNode(c) {
  els.nodeId.hidden = !c.node;
  els.nodeId.textContent = c.node ? `node: ${c.node}` : '';
}

// ---------------------------------------------------------------- active speaker, connection quality

/**
 * Highlight who is talking (`speaking`), the loudest most (`active-speaker`).
 * @param {CourierClient} c
 * @param {{participant_id: string, level: number}[]} speakers  loudest first
 */
function renderSpeakers(c, speakers) {
  const keyOf = (/** @type {string} */ id) => (id === c.participantId ? 'local' : id);
  const talking = new Set(speakers.map((s) => keyOf(s.participant_id)));
  const loudest = speakers.length ? keyOf(speakers[0].participant_id) : null;
  for (const [key, tile] of tiles) {
    tile.el.classList.toggle('speaking', talking.has(key));
    tile.el.classList.toggle('active-speaker', key === loudest);
  }
}

const quality = new QualityMeter();
const QUALITY_TEXT = /** @type {Record<string, string>} */ ({
  excellent: 'Connection: excellent',
  good: 'Connection: good',
  poor: 'Connection: poor',
  lost: 'Connection: lost — nothing arrives',
});

/**
 * Every 2 s: each remote tile's quality from what this browser receives of that participant (loss, audio jitter,
 * silence, a paused video); the own tile's from the server's receiver reports on what this browser sends (loss,
 * round trip) and whether the browser holds its sending back for bandwidth.
 */
async function measureQuality() {
  const c = client;
  if (!c || c.state !== 'joined') return;
  const now = performance.now();
  const [inbound, outbound] = await Promise.all([c.inboundStats(), c.outboundStats()]);
  if (client !== c) return;
  /** @type {Map<string, {packetsReceived: number, packetsLost: number, jitterMs: number|null}>} */
  const per = new Map();
  for (const s of [...inbound.video, ...inbound.audio]) {
    if (!s.participantId) continue;
    const a = per.get(s.participantId) ?? { packetsReceived: 0, packetsLost: 0, jitterMs: null };
    a.packetsReceived += s.packetsReceived;
    a.packetsLost += s.packetsLost;
    per.set(s.participantId, a);
  }
  for (const s of inbound.audio) {
    const a = s.participantId ? per.get(s.participantId) : null;
    if (a && s.jitter != null) a.jitterMs = Math.max(a.jitterMs ?? 0, s.jitter * 1000);
  }
  for (const [key, tile] of tiles) {
    if (key.endsWith('#screen')) continue;
    if (key === 'local') {
      const sent = outbound.filter((o) => o.remote);
      const q = sent.length
        ? quality.update(
            'local',
            {
              fractionLost: Math.max(...sent.map((o) => o.remote.fractionLost ?? 0)),
              rttMs: Math.max(...sent.map((o) => o.remote.rttMs ?? 0)),
              limited: outbound.some((o) => o.qualityLimitationReason === 'bandwidth'),
            },
            now,
          )
        : null;
      renderQuality(tile, q);
      continue;
    }
    const a = per.get(key);
    const st = tile.videoTrackId ? c.getStreamState(tile.videoTrackId) : null;
    const q = quality.update(
      key,
      { ...(a ?? { packetsReceived: 0, packetsLost: 0, jitterMs: null }), paused: st?.state === 'paused', expectMedia: !!a },
      now,
    );
    renderQuality(tile, q);
  }
}

/** @param {Tile} tile @param {string|null} q */
function renderQuality(tile, q) {
  const el = /** @type {HTMLElement} */ (tile.el.querySelector('.quality'));
  el.hidden = !q;
  el.dataset.quality = q ?? '';
  el.title = q ? QUALITY_TEXT[q] : '';
  tile.el.dataset.quality = q ?? '';
}
setInterval(() => {
  measureQuality().catch((err) => console.warn('quality', err));
}, 2000);

// ---------------------------------------------------------------- devices, screen share

/**
 * The camera and microphone pickers: the devices the browser lists (labels once a capture was allowed), the one in
 * use selected. Picking another switches without renegotiating (`switchDevice`).
 * @param {CourierClient} c
 */
async function fillDevicePickers(c) {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select, deviceKind, label] of /** @type {const} */ ([
    ['video', els.cameraSelect, 'videoinput', 'Camera'],
    ['audio', els.micSelect, 'audioinput', 'Microphone'],
  ])) {
    const local = c.localTracks.find((l) => l.kind === kind && l.source === (kind === 'audio' ? 'microphone' : 'camera'));
    const current = local?.track.getSettings().deviceId ?? '';
    const list = devices.filter((d) => d.kind === deviceKind && d.deviceId);
    select.replaceChildren(
      ...list.map((d, i) => {
        const o = document.createElement('option');
        o.value = d.deviceId;
        o.textContent = d.label || `${label} ${i + 1}`;
        o.selected = d.deviceId === current;
        return o;
      }),
    );
    select.disabled = !local || list.length < 2;
  }
}

/** @param {'video'|'audio'} kind @param {HTMLSelectElement} select */
async function switchDevice(kind, select) {
  const c = client;
  if (!c) return;
  select.disabled = true;
  try {
    await c.switchDevice(kind, select.value);
  } catch (err) {
    showBanner('warning', explainMedia(/** @type {Error} */ (err).message));
  } finally {
    select.disabled = false;
  }
}
els.cameraSelect.addEventListener('change', () => switchDevice('video', els.cameraSelect));
els.micSelect.addEventListener('change', () => switchDevice('audio', els.micSelect));
navigator.mediaDevices?.addEventListener?.('devicechange', () => client && fillDevicePickers(client));

/** @param {CourierClient} c */
function renderShareButton(c) {
  els.shareScreen.textContent = c.sharingScreen ? 'Stop sharing' : 'Share screen';
  els.shareScreen.setAttribute('aria-pressed', String(c.sharingScreen));
  els.shareScreen.hidden = !navigator.mediaDevices?.getDisplayMedia;
}

els.shareScreen.addEventListener('click', async () => {
  const c = client;
  if (!c || c.state !== 'joined') return;
  if (c.sharingScreen) {
    await c.stopScreenShare().catch(() => {});
    renderShareButton(c);
    return;
  }
  els.shareScreen.disabled = true;
  try {
    const pending = c.shareScreen();
    // The preview as soon as the capture is there (the promise resolves when the server confirms).
    const local = await pending;
    const tile = ensureTile(screenKey('local'), 'Your screen', true);
    tile.el.classList.add('screen');
    tile.videoStream = new MediaStream([local.track]);
    tile.video.srcObject = tile.videoStream;
    play(tile.video);
    refreshTile(tile);
  } catch (err) {
    const e = /** @type {any} */ (err);
    if (!/NotAllowedError|AbortError/.test(e.message ?? '')) showError(els.callError, `Cannot share the screen: ${e.message}`);
  } finally {
    els.shareScreen.disabled = false;
    renderShareButton(c);
  }
});

// ---------------------------------------------------------------- chat

const TICKS = /** @type {Record<string, string>} */ ({ sending: '🕓', sent: '✓', delivered: '✓', read: '✓✓' });
const TICK_TITLES = /** @type {Record<string, string>} */ ({
  sending: 'sending',
  sent: 'sent',
  delivered: 'delivered',
  read: 'read',
});

/** Display name of an identity: a participant's name if present. @param {CourierClient} c @param {string} identity */
function displayName(c, identity) {
  if (identity === c.identity) return 'You';
  for (const p of c.participants.values()) if (p.identity === identity) return p.name || identity;
  return identity;
}

/** A message's text, with @mentions marked. @param {any} m @param {HTMLElement} into */
function renderText(m, into) {
  if (m.state === 'recalled') {
    into.textContent = 'message recalled';
    into.classList.add('recalled');
    return;
  }
  const text = typeof m.payload?.text === 'string' ? m.payload.text : JSON.stringify(m.payload ?? null);
  for (const part of text.split(/(@[A-Za-z0-9._-]{1,64})/)) {
    if (part.startsWith('@')) {
      const b = document.createElement('b');
      b.className = 'mention';
      b.textContent = part;
      into.append(b);
    } else if (part) {
      into.append(part);
    }
  }
  if (m.state === 'edited') {
    const e = document.createElement('span');
    e.className = 'edited';
    e.textContent = ' (edited)';
    into.append(e);
  }
}

/** The whole room chat, newest at the bottom; marks it read while the page is visible. @param {CourierClient} c */
function renderChat(c) {
  if (client !== c || !c.chat.state) return;
  const list = els.chatList;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const items = [];
  for (const m of c.chat.messages()) {
    if (m.kind !== 'text' && m.state !== 'recalled') continue; // recalls, edits and app kinds are not lines
    const li = document.createElement('li');
    const own = m.sender === c.identity;
    li.className = `msg${own ? ' own' : ''}${m.mentioned ? ' mentioned' : ''}`;
    if (m.seq !== undefined) li.dataset.seq = String(m.seq);
    li.dataset.clientId = m.client_id;
    const head = document.createElement('div');
    head.className = 'msg-head';
    const who = document.createElement('span');
    who.className = 'msg-sender';
    who.textContent = displayName(c, m.sender);
    const when = document.createElement('time');
    when.className = 'msg-time';
    when.dateTime = new Date(m.time).toISOString();
    when.textContent = new Date(m.time).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    head.append(who, when);
    const body = document.createElement('div');
    body.className = 'msg-text';
    renderText(m, body);
    li.append(head, body);
    if (own) {
      const status = /** @type {any} */ (m).pending ? 'sending' : c.chat.status(m);
      const tick = document.createElement('span');
      tick.className = 'tick';
      tick.dataset.status = status;
      tick.title = TICK_TITLES[status];
      tick.textContent = TICKS[status];
      head.append(tick);
      if (m.seq !== undefined && m.state !== 'recalled') {
        const recall = document.createElement('button');
        recall.type = 'button';
        recall.className = 'msg-recall';
        recall.textContent = 'Recall';
        recall.addEventListener('click', () => c.chat.recall(/** @type {number} */ (m.seq)));
        head.append(recall);
      }
    }
    items.push(li);
  }
  list.replaceChildren(...items);
  if (atBottom) list.scrollTop = list.scrollHeight;
  if (document.visibilityState === 'visible') c.chat.markRead();
}

/** @type {Map<string, ReturnType<typeof setTimeout>>} */
const typingTimers = new Map();

/** @param {CourierClient} c @param {string} identity @param {boolean} typing */
function showTyping(c, identity, typing) {
  clearTimeout(typingTimers.get(identity));
  typingTimers.delete(identity);
  if (typing) typingTimers.set(identity, setTimeout(() => showTyping(c, identity, false), 4000));
  const names = [...typingTimers.keys()].map((i) => displayName(c, i));
  els.chatTyping.textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
}

els.chatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = els.chatInput.value.trim();
  // While reconnecting the message waits in the outbox (shown 🕓) and is sent once joined again.
  if (!text || !client || (client.state !== 'joined' && client.state !== 'reconnecting')) return;
  client.chat.send(text);
  if (client.state === 'joined') client.chat.typing(false);
  els.chatInput.value = '';
});
els.chatInput.addEventListener('input', () => {
  if (client?.state === 'joined' && els.chatInput.value) client.chat.typing(true);
});
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && client?.state === 'joined') client.chat.markRead();
});

// ---------------------------------------------------------------- controls

els.form.addEventListener('submit', (e) => {
  e.preventDefault();
  doJoin();
});

els.leaveButton.addEventListener('click', async () => {
  if (!client) return;
  leaving = true;
  await client.leave();
});

els.toggleMic.addEventListener('click', () => {
  if (!client) return;
  const muted = els.toggleMic.getAttribute('aria-pressed') !== 'true';
  client.setMuted('audio', muted);
  els.toggleMic.setAttribute('aria-pressed', String(muted));
  els.toggleMic.textContent = muted ? 'Unmute mic' : 'Mute mic';
  const local = tiles.get('local');
  if (local) {
    if (muted) local.mutedKinds.add('audio');
    else local.mutedKinds.delete('audio');
    refreshTile(local);
  }
});

els.toggleCam.addEventListener('click', () => {
  if (!client) return;
  const muted = els.toggleCam.getAttribute('aria-pressed') !== 'true';
  client.setMuted('video', muted);
  els.toggleCam.setAttribute('aria-pressed', String(muted));
  els.toggleCam.textContent = muted ? 'Start camera' : 'Stop camera';
  const local = tiles.get('local');
  if (local) {
    if (muted) local.mutedKinds.add('video');
    else local.mutedKinds.delete('video');
    refreshTile(local);
  }
});

els.enableAudio.addEventListener('click', () => {
  els.enableAudio.hidden = true;
  for (const tile of tiles.values()) {
    play(tile.video);
    for (const a of tile.audios.values()) play(a);
  }
});

window.addEventListener('pagehide', () => {
  client?.chat.flush();
  leaving = true;
  client?.leave(0);
});

if (params.get('autojoin') === '1') doJoin();
