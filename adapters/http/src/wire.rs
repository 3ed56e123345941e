//! A message as clients see it, in REST bodies and WebSocket frames alike. It is built from
//! the domain's `Message` here, so the domain type is never the wire format.

use banter_domain::Message;
use poem_openapi::Object;
use poem_openapi::types::Example;
use serde::Serialize;

/// A stored message in its current state. (Serialized by serde in WebSocket frames, by poem-openapi in REST
/// bodies: both produce the same JSON.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Object)]
#[oai(example, rename = "MessageBody")]
pub struct MessageJson {
    /// The room (1–64 of `a-z`, `0-9`, `-`, `_`).
    room: String,
    /// Position in the room: 1, 2, 3, … without gaps.
    seq: u64,
    username: String,
    /// Exactly as sent (or as last edited); `""` once deleted.
    content: String,
    /// RFC 3339, UTC, milliseconds; set by the server at commit.
    timestamp: String,
    /// The sender's idempotency key, or null (always null once deleted).
    client_id: Option<String>,
    /// When the content was last edited (RFC 3339, UTC, milliseconds), or null if never.
    edited_at: Option<String>,
    /// Whether the message was deleted: its content is then gone.
    deleted: bool,
}

impl Example for MessageJson {
    fn example() -> Self {
        Self {
            room: "general".into(),
            seq: 42,
            username: "alice".into(),
            content: "Hello".into(),
            timestamp: "2026-11-28T09:15:02.123Z".into(),
            client_id: Some("c-7f3a".into()),
            edited_at: Some("2026-11-28T09:16:40.000Z".into()),
            deleted: false,
        }
    }
}

impl From<Message> for MessageJson {
    fn from(m: Message) -> Self {
        Self {
            room: m.room.into_inner(),
            seq: m.seq.get(),
            username: m.username.into_inner(),
            deleted: m.content.is_none(),
            content: m.content.map(|c| c.into_inner()).unwrap_or_default(),
            timestamp: m.timestamp.to_rfc3339(),
            client_id: m.client_id.map(|c| c.into_inner()),
            edited_at: m.edited_at.map(|t| t.to_rfc3339()),
        }
    }
}

impl From<&Message> for MessageJson {
    fn from(m: &Message) -> Self {
        Self::from(m.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banter_domain::{ClientId, Content, RoomName, Seq, Timestamp, Username};
    use poem_openapi::types::ToJSON;
    use serde_json::json;

    fn message(client_id: Option<&str>) -> Message {
        Message {
            room: RoomName::parse("general").unwrap(),
            seq: Seq::new(42).unwrap(),
            username: Username::parse("alice").unwrap(),
            content: Some(Content::parse("Hello").unwrap()),
            timestamp: Timestamp::from_unix_millis(1_795_857_302_123).unwrap(),
            client_id: client_id.map(|c| ClientId::parse(c).unwrap()),
            edited_at: None,
        }
    }

    #[test]
    fn serde_and_openapi_write_the_contract_shape() {
        for (client_id, expected_id) in [(Some("c-7f3a"), json!("c-7f3a")), (None, json!(null))] {
            let wire = MessageJson::from(message(client_id));
            let expected = json!({"room": "general", "seq": 42, "username": "alice",
                "content": "Hello", "timestamp": "2026-11-28T09:15:02.123Z",
                "client_id": expected_id, "edited_at": null, "deleted": false});
            assert_eq!(serde_json::to_value(&wire).unwrap(), expected, "serde");
            assert_eq!(wire.to_json(), Some(expected), "poem-openapi");
        }
    }

    #[test]
    fn edited_and_deleted_messages_say_so() {
        let mut edited = message(Some("c-1"));
        edited.edited_at = Some(Timestamp::from_unix_millis(1_795_857_303_000).unwrap());
        let json = serde_json::to_value(MessageJson::from(edited.clone())).unwrap();
        assert_eq!(json["edited_at"], "2026-11-28T09:15:03.000Z");
        assert_eq!(json["deleted"], false);
        let tombstone = Message {
            content: None,
            client_id: None,
            ..edited
        };
        let wire = MessageJson::from(tombstone);
        let expected = json!({"room": "general", "seq": 42, "username": "alice",
            "content": "", "timestamp": "2026-11-28T09:15:02.123Z", "client_id": null,
            "edited_at": "2026-11-28T09:15:03.000Z", "deleted": true});
        assert_eq!(serde_json::to_value(&wire).unwrap(), expected, "serde");
        assert_eq!(wire.to_json(), Some(expected), "poem-openapi");
    }
}
