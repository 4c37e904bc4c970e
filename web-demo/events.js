// @ts-check
/**
 * Every event a `CourierClient` emits, in one place: the names ({@link EVENT_NAMES}) and what each carries
 * ({@link CourierEventMap}). The client's `_emit` takes only these names (others throw), so an app can read here
 * the whole list of what it may listen to, and the pure state modules (room-state.js, …) return events typed by this
 * map instead of emitting them.
 *
 * Listen with `client.on(name, detail => …)`, or `client.addEventListener(name, e => …)` with the detail in
 * `e.detail`.
 *
 * @module events
 */

/**
 * @typedef {import('./room-state.js').Participant} Participant
 * @typedef {import('./room-state.js').TrackInfo} TrackInfo
 * @typedef {import('./room-state.js').RemoteTrack} RemoteTrack
 * @typedef {import('./room-state.js').StreamState} StreamState
 * @typedef {import('./publisher.js').LocalTrack} LocalTrack
 * @typedef {import('./publisher.js').LayerState} LayerState
 * @typedef {import('./chat.js').ChatMessage} ChatMessage
 * @typedef {import('./protocol').ServerMsg} ServerMsg
 * @typedef {import('./protocol').SpeakerInfo} SpeakerInfo
 */
/**
 * The server message of one `type` (protocol.d.ts, generated from the server's types).
 * @template {ServerMsg['type']} T
 * @typedef {Extract<ServerMsg, {type: T}>} ServerMsgOf
 */

/**
 * The detail of each event, by name.
 *
 * @typedef {object} CourierEventMap
 * @property {{room: string, participant: Participant, participants: Participant[], reconnected: boolean}} joined
 *           joined the room (again after a reconnect: `reconnected: true`); `participants` are the others
 * @property {{participant: Participant}} participant_joined
 *           someone joined (also after a reconnect, for who came while this client was away)
 * @property {{participantId: string, reason: string, participant: Participant|undefined}} participant_left
 *           someone left (reason `gone` after a reconnect: they were no longer in the room's list)
 * @property {{participantId: string, track: TrackInfo}} track_published
 *           a track was published (also for own tracks; see `local_track_published`)
 * @property {{participantId: string, trackId: string}} track_unpublished
 * @property {{participantId: string, trackId: string, muted: boolean}} track_muted
 * @property {{speakers: SpeakerInfo[]}} active_speakers
 *           who is talking, loudest first (also kept in `client.activeSpeakers`)
 * @property {{localTrack: LocalTrack}} local_track_published   the server confirmed an own track
 * @property {{localTrack: LocalTrack}} local_track_unpublished
 *           an own track stopped (`unpublishTrack`, `stopScreenShare`)
 * @property {{localTrack: LocalTrack, previous: MediaStreamTrack}} local_track_replaced
 *           `switchDevice` put another capture on the sender
 * @property {{trackId: string|null, localTrack: LocalTrack, layers: LayerState[]}} layers
 *           the server asked (`set_layers`) to pause or resume simulcast layers of an own track, and the sender's
 *           encodings now match
 * @property {StreamState & {previous: StreamState|null}} stream_state
 *           the server changed what it forwards of a received track: another layer, or paused
 *           (`reason: 'bandwidth'`), or active again
 * @property {RemoteTrack} remote_track_added
 * @property {RemoteTrack & {reason: string}} remote_track_removed
 *           reason: `participant_left`, `unpublished`, the server's `unsubscribed` reason (default `unsubscribed`),
 *           `renegotiated`, `reconnecting`, `closed`
 * @property {{state: string}} connection_state   `RTCPeerConnection.connectionState` (`closed` when dropped)
 * @property {{code: string, message: string, reqType: string|undefined}} error
 *           the server's `error` messages and client-side failures
 * @property {{attempt: number, code: number, reason: string, description: string}} reconnecting
 *           the connection dropped and the client is joining again (remote tracks were removed; they come back
 *           after `reconnected`)
 * @property {{attempt: number, participantId: string|null}} reconnected
 *           joined again; own tracks are being published again
 * @property {{url: string, node: string|null, room: string, hop: number}} redirected
 *           informational, no error: in a cluster, the node a join reached said the room lives on node `node`, and
 *           the client is joining there at `url` with the same `join` (`hop`: 1–3 redirects in a row; a fourth
 *           fails the join with `too_many_redirects`). `client.node` / `client.url` say where it ended
 * @property {{code: number, reason: string, description: string, leaveReason: string|null, wasJoined: boolean}} closed
 *           the client is done (left, refused, removed, or not reconnected in time); emitted once
 * @property {{conversation: string}} chat_changed   the messages or receipts of a conversation changed (chat.js)
 * @property {{message: ChatMessage}} chat_message   a new stored or ephemeral message from the server
 * @property {{conversation: string, identity: string, typing: boolean}} chat_typing
 * @property {{clientId: string, code: string, message: string}} chat_failed
 *           a message the server refused for good (it left the outbox)
 * @property {ServerMsgOf<'chat_muted'>} chat_muted the server's message as is (docs/protocol.md)
 * @property {ServerMsgOf<'chat_aggregate'>} chat_aggregate the server's message as is
 * @property {ServerMsgOf<'chat_alert'>} chat_alert the server's message as is
 * @property {ServerMsgOf<'chat_alert_ack'>} chat_alert_ack the server's message as is
 * @property {ServerMsgOf<'chat_alert_acked'>} chat_alert_acked the server's message as is
 * @property {ServerMsgOf<'chat_alert_status'>} chat_alert_status the server's message as is
 */

/** @typedef {keyof CourierEventMap} EventName */

/**
 * One event as the pure state modules return it, for the client to emit in order.
 * @typedef {{[K in EventName]: {type: K, detail: CourierEventMap[K]}}[EventName]} CourierEvent
 */

/** Every event name, in the order of {@link CourierEventMap}. @type {readonly EventName[]} */
export const EVENT_NAMES = Object.freeze([
  'joined',
  'participant_joined',
  'participant_left',
  'track_published',
  'track_unpublished',
  'track_muted',
  'active_speakers',
  'local_track_published',
  'local_track_unpublished',
  'local_track_replaced',
  'layers',
  'stream_state',
  'remote_track_added',
  'remote_track_removed',
  'connection_state',
  'error',
  'reconnecting',
  'reconnected',
  'redirected',
  'closed',
  'chat_changed',
  'chat_message',
  'chat_typing',
  'chat_failed',
  'chat_muted',
  'chat_aggregate',
  'chat_alert',
  'chat_alert_ack',
  'chat_alert_acked',
  'chat_alert_status',
]);

const NAMES = new Set(/** @type {readonly string[]} */ (EVENT_NAMES));

/**
 * Whether `name` is an event the client emits.
 * @param {unknown} name
 * @returns {name is EventName}
 */
export function isEventName(name) {
  return typeof name === 'string' && NAMES.has(name);
}

/**
 * An event, typed by its name (for the pure state modules' return values).
 * @template {EventName} K
 * @param {K} type
 * @param {CourierEventMap[K]} detail
 * @returns {CourierEvent}
 */
export function event(type, detail) {
  return /** @type {CourierEvent} */ ({ type, detail });
}
