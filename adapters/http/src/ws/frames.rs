//! The WebSocket protocol's frames: parsing what clients send, encoding what they receive.

use banter_application::{ChangeDraft, DraftField, PostDraft, Welcome};
use banter_domain::{ClientId, Message, PresenceEvent, RoomEvent, Seq, Username};
use serde::Serialize;
use serde_json::Value;

use crate::problem::{ErrorCode, Refusal};
use crate::wire::MessageJson;

/// A client frame that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    ChatMessage(PostDraft),
    /// An edit or a delete of message `seq`.
    Change {
        seq: Seq,
        draft: ChangeDraft,
    },
    Typing {
        is_typing: bool,
    },
    /// This user read the room up to `seq`.
    Read {
        seq: Seq,
    },
    Ping,
}

/// The `seq` of an edit or a delete: a positive integer.
fn seq_field(object: &serde_json::Map<String, Value>) -> Result<Seq, Refusal> {
    object
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|seq| *seq > 0)
        .and_then(|seq| Seq::new(seq).ok())
        .ok_or_else(|| Refusal::new(ErrorCode::InvalidMessage, "seq: must be a positive integer"))
}

/// The `seq` of a read report: an integer ≥ 0.
fn read_seq_field(object: &serde_json::Map<String, Value>) -> Result<Seq, Refusal> {
    object
        .get("seq")
        .and_then(Value::as_u64)
        .and_then(|seq| Seq::new(seq).ok())
        .ok_or_else(|| Refusal::new(ErrorCode::InvalidMessage, "seq: must be an integer ≥ 0"))
}

fn field(object: &serde_json::Map<String, Value>, name: &str) -> DraftField {
    match object.get(name) {
        None | Some(Value::Null) => DraftField::Absent,
        Some(Value::String(s)) => DraftField::Text(s.clone()),
        Some(_) => DraftField::NotText,
    }
}

/// Parses a text frame. A refusal is answered with an error frame.
///
/// # Errors
/// `invalid_json` for anything that is not a JSON object with a string `type`,
/// `unknown_type` for a type the server does not know, `invalid_message` for a `typing` frame
/// without a boolean `is_typing` and an `edit` or `delete` without a positive integer `seq`. A
/// `chat_message`'s and an `edit`'s text are checked by the application.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, Refusal> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Refusal::new(ErrorCode::InvalidJson, format!("not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(Refusal::new(
            ErrorCode::InvalidJson,
            "a frame must be a JSON object",
        ));
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => {
            return Err(Refusal::new(
                ErrorCode::InvalidJson,
                "type must be a string",
            ));
        }
        None => {
            return Err(Refusal::new(ErrorCode::InvalidJson, "a frame needs a type"));
        }
    };
    match kind {
        "chat_message" => Ok(ClientFrame::ChatMessage(PostDraft {
            content: field(&object, "message"),
            client_id: field(&object, "client_id"),
        })),
        "typing" => match object.get("is_typing") {
            Some(Value::Bool(is_typing)) => Ok(ClientFrame::Typing {
                is_typing: *is_typing,
            }),
            _ => Err(Refusal::new(
                ErrorCode::InvalidMessage,
                "is_typing must be true or false",
            )),
        },
        "edit" => Ok(ClientFrame::Change {
            seq: seq_field(&object)?,
            draft: ChangeDraft::Edit {
                content: field(&object, "message"),
            },
        }),
        "delete" => Ok(ClientFrame::Change {
            seq: seq_field(&object)?,
            draft: ChangeDraft::Delete,
        }),
        "read" => Ok(ClientFrame::Read {
            seq: read_seq_field(&object)?,
        }),
        "ping" => Ok(ClientFrame::Ping),
        other => Err(Refusal::new(
            ErrorCode::UnknownType,
            format!(
                "unknown frame type {other:?}; expected chat_message, edit, delete, typing, read or ping"
            ),
        )),
    }
}

/// What the server sends, as JSON: the wire's own types, never the domain's.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Welcome {
        room: &'a str,
        username: &'a str,
        messages: Vec<MessageJson>,
        has_more: bool,
        last_seq: u64,
        last_rev: u64,
        read_seq: u64,
        online: Vec<&'a str>,
        online_count: u64,
        typing: Vec<&'a str>,
    },
    ChatMessage {
        message: MessageJson,
    },
    MessageUpdated {
        rev: u64,
        message: MessageJson,
    },
    Typing {
        username: &'a str,
        is_typing: bool,
    },
    Presence {
        event: &'static str,
        username: &'a str,
        online_count: u64,
    },
    Duplicate {
        message: MessageJson,
    },
    Read {
        seq: u64,
    },
    Error {
        code: &'static str,
        detail: &'a str,
        client_id: Option<&'a str>,
    },
    Pong,
}

fn encode(frame: &ServerFrame<'_>) -> String {
    // Serializing these plain structs cannot fail (string keys, no maps with other keys).
    serde_json::to_string(frame).unwrap_or_default()
}

fn names(users: &[Username]) -> Vec<&str> {
    users.iter().map(Username::as_str).collect()
}

pub fn welcome(welcome: &Welcome) -> String {
    encode(&ServerFrame::Welcome {
        room: welcome.room.as_str(),
        username: welcome.username.as_str(),
        messages: welcome.messages.iter().map(MessageJson::from).collect(),
        has_more: welcome.has_more,
        last_seq: welcome.last_seq.get(),
        last_rev: welcome.last_rev.get(),
        read_seq: welcome.read_seq.get(),
        online: names(&welcome.online),
        online_count: welcome.online_count,
        typing: names(&welcome.typing),
    })
}

/// A room event as the frame every connection of the room receives.
///
/// The ends of access to a private room have no frame: a connection's feed never passes them
/// on but ends instead, and the connection closes with 4403. They encode as nothing.
pub fn event(event: &RoomEvent) -> String {
    encode(&match event {
        RoomEvent::MemberRemoved { .. } | RoomEvent::MadePrivate { .. } => return String::new(),
        RoomEvent::MessagePosted(message) => ServerFrame::ChatMessage {
            message: message.into(),
        },
        RoomEvent::MessageUpdated { rev, message } => ServerFrame::MessageUpdated {
            rev: rev.get(),
            message: message.into(),
        },
        RoomEvent::Typing {
            username,
            is_typing,
            ..
        } => ServerFrame::Typing {
            username: username.as_str(),
            is_typing: *is_typing,
        },
        RoomEvent::Presence {
            event,
            username,
            online_count,
            ..
        } => ServerFrame::Presence {
            event: match event {
                PresenceEvent::Join => "join",
                PresenceEvent::Leave => "leave",
            },
            username: username.as_str(),
            online_count: *online_count,
        },
        RoomEvent::Read { seq, .. } => ServerFrame::Read { seq: seq.get() },
    })
}

pub fn duplicate(message: &Message) -> String {
    encode(&ServerFrame::Duplicate {
        message: message.into(),
    })
}

pub fn error(code: ErrorCode, detail: &str, client_id: Option<&ClientId>) -> String {
    encode(&ServerFrame::Error {
        code: code.as_str(),
        detail,
        client_id: client_id.map(ClientId::as_str),
    })
}

pub fn pong() -> String {
    encode(&ServerFrame::Pong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banter_domain::{Content, Rev, RoomName, Timestamp};
    use serde_json::json;

    fn refusal(text: &str) -> ErrorCode {
        parse_client_frame(text).unwrap_err().code
    }

    #[test]
    fn parses_the_three_client_frames() {
        assert_eq!(
            parse_client_frame(r#"{"type":"chat_message","message":"Hello","client_id":"c-1"}"#),
            Ok(ClientFrame::ChatMessage(PostDraft {
                content: DraftField::Text("Hello".into()),
                client_id: DraftField::Text("c-1".into()),
            }))
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"chat_message","message":5,"client_id":null}"#),
            Ok(ClientFrame::ChatMessage(PostDraft {
                content: DraftField::NotText,
                client_id: DraftField::Absent,
            }))
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"typing","is_typing":false}"#),
            Ok(ClientFrame::Typing { is_typing: false })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"ping","extra":1}"#),
            Ok(ClientFrame::Ping)
        );
    }

    #[test]
    fn parses_edits_and_deletes() {
        assert_eq!(
            parse_client_frame(r#"{"type":"edit","seq":42,"message":"new text"}"#),
            Ok(ClientFrame::Change {
                seq: Seq::new(42).unwrap(),
                draft: ChangeDraft::Edit {
                    content: DraftField::Text("new text".into())
                },
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"edit","seq":1,"message":7}"#),
            Ok(ClientFrame::Change {
                seq: Seq::new(1).unwrap(),
                draft: ChangeDraft::Edit {
                    content: DraftField::NotText
                },
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"delete","seq":42}"#),
            Ok(ClientFrame::Change {
                seq: Seq::new(42).unwrap(),
                draft: ChangeDraft::Delete,
            })
        );
        for bad in [
            r#"{"type":"delete"}"#,
            r#"{"type":"delete","seq":0}"#,
            r#"{"type":"delete","seq":-3}"#,
            r#"{"type":"delete","seq":1.5}"#,
            r#"{"type":"edit","seq":"4","message":"x"}"#,
        ] {
            assert_eq!(refusal(bad), ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn parses_read_reports_and_encodes_the_read_frame() {
        assert_eq!(
            parse_client_frame(r#"{"type":"read","seq":42}"#),
            Ok(ClientFrame::Read {
                seq: Seq::new(42).unwrap()
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"read","seq":0}"#),
            Ok(ClientFrame::Read { seq: Seq::ZERO })
        );
        for bad in [
            r#"{"type":"read"}"#,
            r#"{"type":"read","seq":-1}"#,
            r#"{"type":"read","seq":2.5}"#,
            r#"{"type":"read","seq":"3"}"#,
        ] {
            assert_eq!(refusal(bad), ErrorCode::InvalidMessage, "{bad}");
        }
        let frame: Value = serde_json::from_str(&event(&RoomEvent::Read {
            room: RoomName::parse("general").unwrap(),
            username: Username::parse("alice").unwrap(),
            seq: Seq::new(42).unwrap(),
            origin: None,
        }))
        .unwrap();
        assert_eq!(frame, json!({"type": "read", "seq": 42}));
    }

    #[test]
    fn refuses_with_the_contract_codes() {
        assert_eq!(refusal("not json"), ErrorCode::InvalidJson);
        assert_eq!(refusal("[1,2]"), ErrorCode::InvalidJson);
        assert_eq!(refusal("\"text\""), ErrorCode::InvalidJson);
        assert_eq!(refusal(r#"{"message":"no type"}"#), ErrorCode::InvalidJson);
        assert_eq!(refusal(r#"{"type":7}"#), ErrorCode::InvalidJson);
        assert_eq!(refusal(r#"{"type":"shout"}"#), ErrorCode::UnknownType);
        assert_eq!(
            refusal(r#"{"type":"typing","is_typing":"yes"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(refusal(r#"{"type":"typing"}"#), ErrorCode::InvalidMessage);
    }

    #[test]
    fn encodes_the_contract_shapes() {
        let message = Message {
            room: RoomName::parse("general").unwrap(),
            seq: Seq::new(42).unwrap(),
            username: Username::parse("alice").unwrap(),
            content: Some(Content::parse("Hello").unwrap()),
            timestamp: Timestamp::from_unix_millis(1_795_857_302_123).unwrap(),
            client_id: Some(ClientId::parse("c-7f3a").unwrap()),
            edited_at: None,
        };
        let frame: Value =
            serde_json::from_str(&event(&RoomEvent::MessagePosted(message.clone()))).unwrap();
        assert_eq!(
            frame,
            json!({"type": "chat_message", "message": {"room": "general", "seq": 42, "username": "alice",
                   "content": "Hello", "timestamp": "2026-11-28T09:15:02.123Z", "client_id": "c-7f3a",
                   "edited_at": null, "deleted": false}})
        );
        let tombstone = Message {
            content: None,
            client_id: None,
            ..message.clone()
        };
        let updated: Value = serde_json::from_str(&event(&RoomEvent::MessageUpdated {
            rev: Rev::new(7).unwrap(),
            message: tombstone,
        }))
        .unwrap();
        assert_eq!(
            updated,
            json!({"type": "message_updated", "rev": 7, "message": {"room": "general", "seq": 42,
                   "username": "alice", "content": "", "timestamp": "2026-11-28T09:15:02.123Z",
                   "client_id": null, "edited_at": null, "deleted": true}})
        );
        let dup: Value = serde_json::from_str(&duplicate(&message)).unwrap();
        assert_eq!(dup["type"], "duplicate");
        assert_eq!(dup["message"]["seq"], 42);
        let presence: Value = serde_json::from_str(&event(&RoomEvent::Presence {
            room: RoomName::parse("general").unwrap(),
            event: PresenceEvent::Leave,
            username: Username::parse("bob").unwrap(),
            online_count: 3,
        }))
        .unwrap();
        assert_eq!(
            presence,
            json!({"type": "presence", "event": "leave", "username": "bob", "online_count": 3})
        );
        let err: Value =
            serde_json::from_str(&error(ErrorCode::RateLimited, "slow down", None)).unwrap();
        assert_eq!(
            err,
            json!({"type": "error", "code": "rate_limited", "detail": "slow down", "client_id": null})
        );
        assert_eq!(pong(), r#"{"type":"pong"}"#);
    }

    #[test]
    fn welcome_and_typing_frames_have_the_contract_shape() {
        let alice = Username::parse("alice").unwrap();
        let welcome_frame: Value = serde_json::from_str(&welcome(&Welcome {
            room: RoomName::parse("general").unwrap(),
            username: alice.clone(),
            messages: Vec::new(),
            has_more: false,
            last_seq: Seq::new(7).unwrap(),
            last_rev: Rev::new(3).unwrap(),
            read_seq: Seq::new(5).unwrap(),
            online: vec![alice.clone(), Username::parse("bob").unwrap()],
            online_count: 2,
            typing: vec![alice.clone()],
        }))
        .unwrap();
        assert_eq!(
            welcome_frame,
            json!({"type": "welcome", "room": "general", "username": "alice", "messages": [],
                   "has_more": false, "last_seq": 7, "last_rev": 3, "read_seq": 5, "online": ["alice", "bob"],
                   "online_count": 2, "typing": ["alice"]})
        );
        let typing: Value = serde_json::from_str(&event(&RoomEvent::Typing {
            room: RoomName::parse("general").unwrap(),
            username: alice,
            is_typing: true,
        }))
        .unwrap();
        assert_eq!(
            typing,
            json!({"type": "typing", "username": "alice", "is_typing": true})
        );
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        /// The error codes a client frame can be refused with (the contract's WebSocket codes
        /// for a frame that is not a valid request).
        const REFUSALS: [&str; 5] = [
            "invalid_json",
            "unknown_type",
            "invalid_message",
            "invalid_content",
            "invalid_client_id",
        ];

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                any::<String>().prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..4).prop_map(Value::Array),
                    vec((field(), inner), 0..4)
                        .prop_map(|fields| Value::Object(fields.into_iter().collect())),
                ]
            })
        }

        fn field() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("type".to_owned()),
                Just("message".to_owned()),
                Just("client_id".to_owned()),
                Just("is_typing".to_owned()),
                Just("seq".to_owned()),
                any::<String>(),
            ]
        }

        /// An object shaped like a request: a known (or any) type and fields of any value.
        fn request_like() -> impl Strategy<Value = Value> {
            let kind = prop_oneof![
                Just(Value::from("chat_message")),
                Just(Value::from("typing")),
                Just(Value::from("ping")),
                Just(Value::from("edit")),
                Just(Value::from("delete")),
                Just(Value::from("read")),
                any_json(),
            ];
            (kind, vec((field(), any_json()), 0..4)).prop_map(|(kind, fields)| {
                let mut object: Map<String, Value> = fields.into_iter().collect();
                object.insert("type".to_owned(), kind);
                Value::Object(object)
            })
        }

        fn refused_with_a_contract_code(text: &str) -> Result<(), TestCaseError> {
            if let Err(refusal) = parse_client_frame(text) {
                prop_assert!(
                    REFUSALS.contains(&refusal.code.as_str()),
                    "{text:?} refused with {}",
                    refusal.code.as_str()
                );
                prop_assert!(!refusal.detail.is_empty());
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn any_text_is_a_request_or_a_refusal_with_a_contract_code(text in any::<String>()) {
                refused_with_a_contract_code(&text)?;
            }

            #[test]
            fn any_json_is_a_request_or_a_refusal_with_a_contract_code(value in any_json()) {
                refused_with_a_contract_code(&value.to_string())?;
            }

            #[test]
            fn request_shaped_json_is_a_request_or_a_refusal_with_a_contract_code(
                value in request_like(),
            ) {
                refused_with_a_contract_code(&value.to_string())?;
            }
        }
    }
}
