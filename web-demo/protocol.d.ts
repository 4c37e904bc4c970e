// Generated from the Rust crate courier-protocol (signaling/protocol) by ts-rs: protocol v1's wire types,
// as JSON (docs/protocol.md). Do not edit; regenerate with
//   UPDATE_PROTOCOL_DTS=1 cargo test -p courier-protocol --features ts --test dts
// A field with `?` is left out when it holds its default; `unknown` is any JSON value.

// Messages a client sends (courier_protocol::client)
/**
 * Messages a client sends.
 */
export type ClientMsg =
  | {
    "type": "join",
    v: number,
    token: string,
    auto_subscribe?: boolean,
    chat?: Array<ResumePos>,
  }
  | {
    "type": "offer",
    id: number,
    sdp: string,
    tracks: Array<OfferTrack>,
  }
  | { "type": "answer", id: number, sdp: string, }
  | { "type": "candidate", candidate: string, sdp_mid?: string, }
  | { "type": "subscribe", track_ids: Array<string>, }
  | { "type": "unsubscribe", track_ids: Array<string>, }
  | { "type": "mute", track_id: string, muted: boolean, }
  | {
    "type": "track_settings",
    track_id: string,
    width?: number,
    height?: number,
    hidden?: boolean,
  }
  | { "type": "ping", ts?: unknown, }
  | { "type": "leave" }
  | { "type": "chat_send" } & ChatSend
  | {
    "type": "chat_history",
    id?: unknown,
    before?: number,
    after?: number,
    limit?: number,
    conversation?: string,
    to?: string,
  }
  | { "type": "chat_resume", conversations: Array<ResumePos>, }
  | {
    "type": "chat_receipt",
    conversation: string,
    delivered?: number,
    read?: number,
  }
  | {
    "type": "chat_receipts",
    id?: unknown,
    conversation: string,
  }
  | {
    "type": "chat_typing",
    typing: boolean,
    conversation?: string,
    to?: string,
  }
  | {
    "type": "chat_recall",
    client_id: string,
    seq: number,
    conversation?: string,
    to?: string,
  }
  | {
    "type": "chat_edit",
    client_id: string,
    seq: number,
    /**
     * The payload's JSON text (on the wire, the JSON value it holds).
     */
    payload: unknown,
    conversation?: string,
    to?: string,
  }
  | {
    "type": "chat_alert_ack",
    conversation: string,
    seq: number,
  }
  | {
    "type": "chat_alert_status",
    id?: unknown,
    conversation: string,
    seq: number,
  }
  | {
    "type": "chat_mute",
    identity: string,
    muted: boolean,
    duration_secs?: number,
  };
/**
 * `chat_send`.
 */
export type ChatSend = {
  client_id: string,
  kind?: string,
  /**
   * The payload's JSON text (on the wire, the JSON value it holds).
   */
  payload: unknown,
  persist?: boolean,
  counted?: boolean,
  priority?: Priority,
  must_ack?: boolean,
  mentions?: Array<string>,
  mention_all?: boolean,
  conversation?: string,
  to?: string,
};
/**
 * A track description in an offer's `tracks`.
 */
export type OfferTrack = {
  mid: string,
  /**
   * What it carries; the server defaults by kind when absent.
   */
  source?: TrackSource,
  /**
   * Free text, at most [`MAX_TRACK_NAME`] bytes.
   */
  name?: string,
};

// Messages the server sends (courier_protocol::server)
/**
 * Messages the server sends.
 */
export type ServerMsg =
  | { "type": "joined" } & Joined
  | {
    "type": "redirect",
    /**
     * The WebSocket URL of the node that hosts the room.
     */
    url: string,
    /**
     * That node's id (for logs and the demo's display).
     */
    node: string,
    room: string,
  }
  | {
    "type": "participant_joined",
    participant: ParticipantInfo,
  }
  | {
    "type": "participant_left",
    participant_id: string,
    /**
     * `left`, `disconnected`, `replaced`, `removed`, `room_closed`, `room_ended`, `server_shutdown`.
     */
    reason: string,
  }
  | {
    "type": "track_published",
    participant_id: string,
    track: TrackInfo,
  }
  | {
    "type": "track_unpublished",
    participant_id: string,
    track_id: string,
  }
  | {
    "type": "track_muted",
    participant_id: string,
    track_id: string,
    muted: boolean,
  }
  | { "type": "permissions_changed", permissions: Permissions, }
  | {
    "type": "participant_updated",
    participant: ParticipantInfo,
  }
  | { "type": "room_updated", metadata: string, }
  | {
    "type": "subscribed",
    track_id: string,
    participant_id: string,
    kind: MediaKind,
    mid: string,
  }
  | {
    "type": "unsubscribed",
    track_id: string,
    /**
     * `requested`, `unpublished`, `participant_left`, `permission`.
     */
    reason: string,
  }
  | { "type": "active_speakers", speakers: Array<SpeakerInfo>, }
  | {
    "type": "stream_state",
    track_id: string,
    state: StreamStateKind,
    /**
     * The layer forwarded (`q`, `h`, `f`, lowest to highest), `null` without simulcast; only when active.
     */
    layer?: string | null,
    /**
     * Why it is paused (`bandwidth`); only when paused.
     */
    reason?: string,
  }
  | {
    "type": "set_layers",
    track_id: string,
    layers: Array<LayerActive>,
  }
  | { "type": "offer", id: number, sdp: string, }
  | { "type": "answer", id: number, sdp: string, }
  | { "type": "candidate", candidate: string, sdp_mid?: string, }
  | { "type": "pong", ts: unknown, }
  | {
    "type": "error",
    code: ErrorCode,
    message: string,
    /**
     * The `type` of the message that failed, when it had one.
     */
    req_type?: string,
    /**
     * The `id` of the request that failed, when it had one.
     */
    id?: unknown,
    /**
     * The `client_id` of the refused chat message, so the client's outbox knows which.
     */
    client_id?: string,
  }
  | {
    "type": "chat_ack",
    client_id: string,
    conversation: string,
    seq?: number,
    epoch?: number,
    time: number,
    duplicate?: boolean,
    ephemeral?: boolean,
    /**
     * A low-priority message the room's quota shed: it reached no one.
     */
    shed?: boolean,
  }
  | { "type": "chat_message" } & ChatMessage
  | {
    "type": "chat_history",
    id?: unknown,
    conversation: string,
    epoch: number,
    first_seq: number,
    last_seq: number,
    messages: Array<ChatMessage>,
  }
  | {
    "type": "chat_resumed",
    conversation: string,
    status: ResumeStatus,
    epoch: number,
    first_seq: number,
    last_seq: number,
    replayed: number,
    unread: number,
  }
  | {
    "type": "chat_receipt",
    conversation: string,
    identity: string,
    delivered: number,
    read: number,
  }
  | {
    "type": "chat_receipts",
    id?: unknown,
    conversation: string,
    receipts: Array<ReceiptView>,
  }
  | {
    "type": "chat_typing",
    conversation: string,
    identity: string,
    typing: boolean,
  }
  | {
    "type": "chat_muted",
    conversation: string,
    identity: string,
    muted: boolean,
    until?: number,
    by: string,
  }
  | {
    "type": "chat_aggregate",
    conversation: string,
    kind: string,
    count: number,
    window_ms: number,
  }
  | {
    "type": "chat_alert",
    conversation: string,
    seq: number,
    message: ChatMessage,
  }
  | {
    "type": "chat_alert_ack",
    conversation: string,
    seq: number,
    status: AlertAckStatus,
    at?: number,
  }
  | {
    "type": "chat_alert_acked",
    conversation: string,
    seq: number,
    identity: string,
    at: number,
  }
  | {
    "type": "chat_alert_status",
    id?: unknown,
    conversation: string,
    seq: number,
    acked: Array<AlertAckView>,
    pending: Array<string>,
  }
  | { "type": "leave", reason: string, };
/**
 * The room snapshot in `joined`.
 */
export type Joined = {
  v: number,
  room: string,
  /**
   * The room's metadata (set by the admin API; empty if none).
   */
  room_metadata: string,
  server_version: string,
  /**
   * This participant.
   */
  participant: ParticipantInfo,
  /**
   * Everyone else already in the room (hidden participants are not shown).
   */
  participants: Array<ParticipantInfo>,
  /**
   * TURN servers for this participant's peer connection (the built-in TURN server or an external one), with
   * short-lived credentials; empty when the server offers none. Shaped like WebRTC's `RTCIceServer`.
   */
  ice_servers?: Array<IceServer>,
};
/**
 * One entry of `joined.ice_servers`: what a browser passes to `RTCPeerConnection` as an `RTCIceServer`.
 */
export type IceServer = {
  /**
   * `turn:host:3478?transport=udp`, `turn:host:3478?transport=tcp`, `turns:host:5349?transport=tcp`.
   */
  urls: Array<string>,
  /**
   * `<expiry unix seconds>:<identity>` (the TURN REST convention).
   */
  username: string,
  /**
   * base64(HMAC-SHA1(secret, username)).
   */
  credential: string,
};
/**
 * A participant as the room sees it.
 */
export type ParticipantInfo = {
  id: string,
  identity: string,
  name: string,
  tracks: Array<TrackInfo>,
  /**
   * Opaque, from the token or the admin API.
   */
  metadata?: string,
  /**
   * The id of the cluster node that serves this participant (`[cluster] node_id`); absent outside a cluster.
   */
  node?: string,
  /**
   * The region of that node (`[cluster] region`); absent outside a cluster.
   */
  region?: string,
};
/**
 * A published track as the room sees it.
 */
export type TrackInfo = {
  id: string,
  kind: MediaKind,
  source: TrackSource,
  name: string,
  muted: boolean,
  /**
   * Only in the publisher's own `track_published`.
   */
  mid?: string,
};
/**
 * Audio or video.
 */
export type MediaKind = "audio" | "video";
/**
 * One entry of `active_speakers`.
 */
export type SpeakerInfo = {
  participant_id: string,
  /**
   * Smoothed loudness, 0 (silence) to 1 (0 dBov).
   */
  level: number,
};
/**
 * One simulcast layer in `set_layers`.
 */
export type LayerActive = { rid: string, active: boolean, };
/**
 * What a subscriber receives of a video track (`stream_state.state`).
 */
export type StreamStateKind = "active" | "paused";

// Error codes (courier_protocol::codes)
/**
 * Stable error codes sent in `error` messages.
 */
export type ErrorCode =
  | "bad_message"
  | "unknown_type"
  | "too_large"
  | "not_joined"
  | "already_joined"
  | "permission_denied"
  | "track_not_found"
  | "sdp_rejected"
  | "bad_candidate"
  | "rate_limited"
  | "internal"
  | "conversation_not_found"
  | "message_not_found"
  | "overloaded"
  | "quota_exceeded"
  | "muted"
  | "blocked"
  | "rejected"
  | "hook_unavailable"
  | "room_full"
  | "too_many_rooms"
  | "too_many_tracks"
  | "server_draining"
  | "room_not_found"
  | "room_not_open"
  | "not_invited"
  | "room_closed"
  | "source_not_allowed"
  | "invalid_token"
  | "token_expired"
  | "not_allowed"
  | "bad_version"
  | "cluster_unavailable";

// Chat (courier_protocol::chat)
/**
 * One chat message as sent in `chat_message`, and inside `chat_history` and `chat_alert`.
 */
export type ChatMessage = {
  conversation: string,
  /**
   * Absent for ephemeral messages.
   */
  seq?: number,
  sender: string,
  client_id?: string,
  kind: string,
  /**
   * Any JSON value; absent once recalled or erased.
   */
  payload?: unknown,
  /**
   * Server time, Unix milliseconds.
   */
  time: number,
  state?: MessageState,
  priority?: Priority,
  must_ack?: boolean,
  mention_all?: boolean,
  mentions?: Array<string>,
  /**
   * The receiving member is mentioned (by name or `@all`).
   */
  mentioned?: boolean,
  /**
   * Counts toward unread (`false` for control messages such as a recall notice).
   */
  counted?: boolean,
  /**
   * Passed on without being stored (no `seq`).
   */
  ephemeral?: boolean,
};
/**
 * How urgently a message must get through when a room is over its quota (`priority`). High is never shed.
 */
export type Priority = "low" | "normal" | "high";
/**
 * What happened to a stored message after it was sent (`state`).
 */
export type MessageState = "normal" | "edited" | "recalled" | "erased";
/**
 * Where a client's copy of a conversation stands, for a resume (`join.chat`, `chat_resume`).
 */
export type ResumePos = {
  conversation: string,
  /**
   * The epoch the client holds (0: it holds nothing).
   */
  epoch: number,
  /**
   * The last number held with nothing missing before it (0: none).
   */
  last_seq: number,
};
/**
 * Which conversation a chat request is about: `conversation` by id, or `to` an identity (a direct
 * conversation), or neither (the chat of the session's room).
 */
export type Target = { conversation?: string, to?: string, };
/**
 * How a resume of one conversation ended (`chat_resumed.status`).
 */
export type ResumeStatus = "ok" | "fresh" | "not_recovered" | "reset";
/**
 * One receipt in `chat_receipts`.
 */
export type ReceiptView = { identity: string, delivered: number, read: number, };
/**
 * One acknowledgement in `chat_alert_status`.
 */
export type AlertAckView = {
  identity: string,
  /**
   * Unix milliseconds.
   */
  at: number,
};
/**
 * The answer to `chat_alert_ack` (`status`).
 */
export type AlertAckStatus = "acked" | "already_acked" | "not_asked";

// Access tokens and permissions (courier_protocol::grants)
/**
 * Access token claims (an HS256 JWT's payload).
 */
export type Claims = {
  /**
   * The API key (used when the header has no `kid`).
   */
  iss: string,
  /**
   * The identity.
   */
  sub: string,
  /**
   * Expiry, seconds since the epoch.
   */
  exp: number,
  /**
   * Not before, seconds since the epoch.
   */
  nbf?: number,
  /**
   * Display name (default: the identity).
   */
  name?: string,
  /**
   * Opaque to the server, shown to the other participants (at most [`MAX_METADATA`] bytes).
   */
  metadata?: string,
  video: VideoGrant,
};
/**
 * The token's `video` claim: the grants.
 */
export type VideoGrant = {
  room: string,
  room_join: boolean,
  can_publish: boolean,
  can_subscribe: boolean,
  /**
   * May send chat messages (reading the room's chat comes with joining).
   */
  can_chat: boolean,
  /**
   * May moderate the room: high-priority chat, recalling others' messages, muting. On an API token, with
   * `room: "*"`, every room.
   */
  room_admin: boolean,
  /**
   * Which sources may be published; absent means all.
   */
  can_publish_sources?: Array<TrackSource>,
  /**
   * Not shown to other participants, and may not publish.
   */
  hidden: boolean,
  /**
   * API: may create rooms.
   */
  room_create: boolean,
  /**
   * API: may list rooms.
   */
  room_list: boolean,
};
/**
 * A participant's permissions while it is in a room: from its token at join, changed by the admin API.
 */
export type Permissions = {
  can_publish: boolean,
  /**
   * Absent: every source.
   */
  can_publish_sources?: Array<TrackSource>,
  can_subscribe: boolean,
  can_chat: boolean,
  room_admin: boolean,
  hidden: boolean,
};
/**
 * What a track carries.
 */
export type TrackSource = "camera" | "microphone" | "screen" | "screen_audio" | "unknown";

// Pre-send hook (courier_protocol::hooks)
/**
 * What the server POSTs to the hook.
 */
export type HookRequest = {
  conversation: string,
  sender: string,
  client_id: string,
  kind: string,
  payload: unknown,
};
/**
 * What the hook answers (`200` with JSON).
 */
export type HookAnswer =
  | { "action": "pass" }
  | { "action": "modify", payload: unknown, }
  | { "action": "drop", reason?: string, };

// Admin API bodies (courier_protocol::admin)
/**
 * `GET /api/v1/rooms/{room}/participants`.
 */
export type ParticipantList = { participants: Array<ParticipantSummary>, };
/**
 * A participant as the admin API shows it.
 */
export type ParticipantSummary = {
  permissions: Permissions,
  /**
   * ms since the Unix epoch.
   */
  joined_ms: number,
  /**
   * The server's send-side bandwidth estimate towards this participant, bits per second (at most a second old);
   * `None` (JSON `null`) while it has none (it receives nothing, or gives no TWCC feedback).
   */
  bandwidth_estimate_bps: number | null,
  id: string,
  identity: string,
  name: string,
  tracks: Array<TrackInfo>,
  /**
   * Opaque, from the token or the admin API.
   */
  metadata?: string,
  /**
   * The id of the cluster node that serves this participant (`[cluster] node_id`); absent outside a cluster.
   */
  node?: string,
  /**
   * The region of that node (`[cluster] region`); absent outside a cluster.
   */
  region?: string,
};
/**
 * Every failed API call: a stable code and a message for humans.
 */
export type ApiErrorBody = { code: string, message: string, };

// Webhook event bodies (courier_protocol::webhooks)
/**
 * One event body.
 */
export type WebhookEvent = {
  /**
   * `EV_` and 20 characters; the same on every retry.
   */
  id: string,
  event: EventKind,
  /**
   * Unix milliseconds.
   */
  created_at: number,
  room?: RoomView,
  participant?: ParticipantView,
  track?: TrackInfo,
  message?: MessageView,
  recall?: RecallView,
  alert?: AlertView,
  /**
   * Why a participant left: `left`, `disconnected`, `replaced`, `removed`, `server_shutdown`.
   */
  reason?: string,
};
/**
 * What happened. The wire name is the `event` field of the body.
 */
export type EventKind =
  | "room_started"
  | "room_finished"
  | "participant_joined"
  | "participant_left"
  | "track_published"
  | "track_unpublished"
  | "message_sent"
  | "message_recalled"
  | "alert_unacknowledged";
/**
 * The objects of an event (each present when it applies).
 */
export type Facts = {
  room?: RoomView,
  participant?: ParticipantView,
  track?: TrackInfo,
  message?: MessageView,
  recall?: RecallView,
  alert?: AlertView,
  /**
   * Why a participant left: `left`, `disconnected`, `replaced`, `removed`, `server_shutdown`.
   */
  reason?: string,
};
/**
 * The room an event is about.
 */
export type RoomView = { name: string, };
/**
 * The participant an event is about.
 */
export type ParticipantView = { id: string, identity: string, name: string, };
/**
 * The chat message an event is about.
 */
export type MessageView = {
  conversation: string,
  seq: number,
  sender?: string,
  kind?: string,
  /**
   * When it was stored, Unix milliseconds.
   */
  time?: number,
  /**
   * The payload, when it is at most `webhooks.payload_max_bytes`.
   */
  payload?: unknown,
  /**
   * Size of the payload's JSON text (also when it is left out).
   */
  payload_bytes?: number,
  must_ack?: boolean,
};
/**
 * Who recalled a message, and the sequenced message that announced it.
 */
export type RecallView = { by: string, seq: number, time: number, };
/**
 * Who has and has not acknowledged an alert.
 */
export type AlertView = { pending: Array<string>, acked: Array<string>, };
