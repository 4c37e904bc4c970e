//! The chat frames of protocol v1 built from the store's records: a stored message as the wire shows it
//! ([`wire_message`], [`chat_message_frame`]), and the wire names of priorities and states.
//!
//! The wire types are `courier_protocol`'s; the store keeps its own enums (with their stored codes), so the two
//! meet here and nowhere else.

use courier_protocol as wire;

use super::store::{MessageState, StoredMessage};
use super::Priority;

impl From<wire::Priority> for Priority {
    fn from(p: wire::Priority) -> Priority {
        match p {
            wire::Priority::Low => Priority::Low,
            wire::Priority::Normal => Priority::Normal,
            wire::Priority::High => Priority::High,
        }
    }
}

impl From<Priority> for wire::Priority {
    fn from(p: Priority) -> wire::Priority {
        match p {
            Priority::Low => wire::Priority::Low,
            Priority::Normal => wire::Priority::Normal,
            Priority::High => wire::Priority::High,
        }
    }
}

impl From<MessageState> for wire::MessageState {
    fn from(s: MessageState) -> wire::MessageState {
        match s {
            MessageState::Normal => wire::MessageState::Normal,
            MessageState::Edited => wire::MessageState::Edited,
            MessageState::Recalled => wire::MessageState::Recalled,
            MessageState::Erased => wire::MessageState::Erased,
        }
    }
}

/// A stored message as a member sees it (`mentioned`: that member is mentioned).
pub fn wire_message(m: &StoredMessage, mentioned: bool) -> wire::ChatMessage {
    wire::ChatMessage {
        conversation: m.conversation.to_string(),
        seq: Some(m.seq),
        sender: m.sender.clone(),
        client_id: Some(m.client_id.clone()),
        kind: m.kind.clone(),
        payload: m.payload.as_deref().and_then(|p| serde_json::value::RawValue::from_string(p.to_string()).ok()),
        time: m.server_time_ms,
        state: m.state.into(),
        priority: m.flags.priority.into(),
        must_ack: m.flags.must_ack,
        mention_all: m.flags.mention_all,
        mentions: m.flags.mentions.clone(),
        mentioned,
        counted: m.flags.counted,
        ephemeral: false,
    }
}

/// The `chat_message` frame of a stored message for a member (`mentioned`: that member is mentioned).
pub fn chat_message_frame(m: &StoredMessage, mentioned: bool) -> String {
    wire::ServerMsg::ChatMessage(wire_message(m, mentioned)).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConversationId, Flags};

    #[test]
    fn chat_message_frames_leave_defaults_out() {
        let m = StoredMessage {
            conversation: ConversationId::room("demo").unwrap(),
            seq: 42,
            sender: "alice".into(),
            client_id: "7b0c-01".into(),
            kind: "text".into(),
            payload: Some(r#"{"text":"hello @bob"}"#.into()),
            flags: Flags { mentions: vec!["bob".into()], ..Flags::default() },
            server_time_ms: 1764000000123,
            state: MessageState::Normal,
        };
        assert_eq!(
            chat_message_frame(&m, true),
            r#"{"type":"chat_message","conversation":"room:demo","seq":42,"sender":"alice","client_id":"7b0c-01","kind":"text","payload":{"text":"hello @bob"},"time":1764000000123,"mentions":["bob"],"mentioned":true}"#
        );
        let recalled = StoredMessage { payload: None, state: MessageState::Recalled, ..m };
        let text = serde_json::to_string(&wire_message(&recalled, false)).unwrap();
        assert!(text.starts_with(r#"{"conversation":"room:demo","seq":42"#) && text.contains(r#""state":"recalled""#));
        assert!(!text.contains("payload"));
    }
}
