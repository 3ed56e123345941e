//! What travels between nodes through Redis: the JSON published on a room's channel.
//!
//! [`RedisEvent`] is the one definition of that payload, kept apart from the domain types (their
//! shape is not a wire format) and converted from and to a [`RoomEvent`] at this edge; what
//! comes off a channel is input, so decoding checks every field with the domain's constructors.
//!
//! The presence scripts announce joins and leaves from inside Redis, in the same atomic step as
//! the change, so they cannot call Rust to encode. They get [`script_templates`] instead: the
//! JSON of those events as made by [`RedisEvent`], cut at the values the script fills in. So the
//! payload's shape is written down here alone; the scripts only paste values into holes.

use banter_domain::{
    ClientId, ConnectionId, Content, Message, PresenceEvent, Rev, RoomEvent, RoomName, Seq,
    Timestamp, Username,
};
use serde::{Deserialize, Serialize};

/// An event on a room's channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum RedisEvent {
    MessagePosted(MessagePayload),
    /// A message was edited or deleted; the change took `rev`.
    MessageUpdated {
        rev: u64,
        message: MessagePayload,
    },
    Presence(PresencePayload),
    Typing(TypingPayload),
    Read(ReadPayload),
    /// `username` is no longer a member of the private room.
    MemberRemoved {
        room: String,
        username: String,
    },
    /// The room was made private by `creator`.
    MadePrivate {
        room: String,
        creator: String,
    },
}

/// A user's read position moved; `origin` is the connection that moved it (`[node, local]`),
/// absent when it was moved over REST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReadPayload {
    pub room: String,
    pub username: String,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<(u64, u64)>,
}

/// A stored message; the timestamp in unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MessagePayload {
    pub room: String,
    pub seq: u64,
    pub username: String,
    pub content: String,
    pub timestamp_ms: i64,
    pub client_id: Option<String>,
    /// Absent from the payloads of nodes that predate edits: never edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at_ms: Option<i64>,
    /// A tombstone: `content` is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl From<&Message> for MessagePayload {
    fn from(message: &Message) -> Self {
        Self {
            room: message.room.as_str().to_owned(),
            seq: message.seq.get(),
            username: message.username.as_str().to_owned(),
            content: message
                .content
                .as_ref()
                .map_or_else(String::new, |c| c.as_str().to_owned()),
            timestamp_ms: message.timestamp.unix_millis(),
            client_id: message.client_id.as_ref().map(|c| c.as_str().to_owned()),
            edited_at_ms: message.edited_at.map(Timestamp::unix_millis),
            deleted: message.is_deleted(),
        }
    }
}

impl TryFrom<MessagePayload> for Message {
    type Error = WireError;

    fn try_from(m: MessagePayload) -> Result<Self, WireError> {
        Ok(Message {
            room: field("room", RoomName::try_from(m.room))?,
            seq: field("seq", Seq::new(m.seq))?,
            username: field("username", Username::try_from(m.username))?,
            content: if m.deleted {
                None
            } else {
                Some(field("content", Content::try_from(m.content))?)
            },
            timestamp: field("timestamp_ms", Timestamp::from_unix_millis(m.timestamp_ms))?,
            client_id: m
                .client_id
                .filter(|_| !m.deleted)
                .map(|c| field("client_id", ClientId::try_from(c)))
                .transpose()?,
            edited_at: m
                .edited_at_ms
                .map(|ms| field("edited_at_ms", Timestamp::from_unix_millis(ms)))
                .transpose()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PresencePayload {
    pub room: String,
    pub event: PresenceKind,
    pub username: String,
    pub online_count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PresenceKind {
    Join,
    Leave,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TypingPayload {
    pub room: String,
    pub username: String,
    pub is_typing: bool,
}

/// Why a payload could not be made or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("not a Redis event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid {field} in a Redis event: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("cannot cut the script template at {hole:?}: found {found} times")]
    Template { hole: &'static str, found: usize },
}

impl From<&RoomEvent> for RedisEvent {
    fn from(event: &RoomEvent) -> Self {
        match event {
            RoomEvent::MessagePosted(message) => RedisEvent::MessagePosted(message.into()),
            RoomEvent::MessageUpdated { rev, message } => RedisEvent::MessageUpdated {
                rev: rev.get(),
                message: message.into(),
            },
            RoomEvent::Presence {
                room,
                event,
                username,
                online_count,
            } => RedisEvent::Presence(PresencePayload {
                room: room.as_str().to_owned(),
                event: match event {
                    PresenceEvent::Join => PresenceKind::Join,
                    PresenceEvent::Leave => PresenceKind::Leave,
                },
                username: username.as_str().to_owned(),
                online_count: *online_count,
            }),
            RoomEvent::Typing {
                room,
                username,
                is_typing,
            } => RedisEvent::Typing(TypingPayload {
                room: room.as_str().to_owned(),
                username: username.as_str().to_owned(),
                is_typing: *is_typing,
            }),
            RoomEvent::Read {
                room,
                username,
                seq,
                origin,
            } => RedisEvent::Read(ReadPayload {
                room: room.as_str().to_owned(),
                username: username.as_str().to_owned(),
                seq: seq.get(),
                origin: origin.map(|o| (o.node, o.local)),
            }),
            RoomEvent::MemberRemoved { room, username } => RedisEvent::MemberRemoved {
                room: room.as_str().to_owned(),
                username: username.as_str().to_owned(),
            },
            RoomEvent::MadePrivate { room, creator } => RedisEvent::MadePrivate {
                room: room.as_str().to_owned(),
                creator: creator.as_str().to_owned(),
            },
        }
    }
}

/// A field checked by its domain constructor.
fn field<T, E: std::fmt::Display>(
    name: &'static str,
    parsed: Result<T, E>,
) -> Result<T, WireError> {
    parsed.map_err(|e| WireError::Field {
        field: name,
        reason: e.to_string(),
    })
}

impl TryFrom<RedisEvent> for RoomEvent {
    type Error = WireError;

    fn try_from(event: RedisEvent) -> Result<Self, WireError> {
        Ok(match event {
            RedisEvent::MessagePosted(m) => RoomEvent::MessagePosted(Message::try_from(m)?),
            RedisEvent::MessageUpdated { rev, message } => RoomEvent::MessageUpdated {
                rev: field("rev", Rev::new(rev))?,
                message: Message::try_from(message)?,
            },
            RedisEvent::Presence(p) => RoomEvent::Presence {
                room: field("room", RoomName::try_from(p.room))?,
                event: match p.event {
                    PresenceKind::Join => PresenceEvent::Join,
                    PresenceKind::Leave => PresenceEvent::Leave,
                },
                username: field("username", Username::try_from(p.username))?,
                online_count: p.online_count,
            },
            RedisEvent::Typing(t) => RoomEvent::Typing {
                room: field("room", RoomName::try_from(t.room))?,
                username: field("username", Username::try_from(t.username))?,
                is_typing: t.is_typing,
            },
            RedisEvent::Read(r) => RoomEvent::Read {
                room: field("room", RoomName::try_from(r.room))?,
                username: field("username", Username::try_from(r.username))?,
                seq: field("seq", Seq::new(r.seq))?,
                origin: r.origin.map(|(node, local)| ConnectionId { node, local }),
            },
            RedisEvent::MemberRemoved { room, username } => RoomEvent::MemberRemoved {
                room: field("room", RoomName::try_from(room))?,
                username: field("username", Username::try_from(username))?,
            },
            RedisEvent::MadePrivate { room, creator } => RoomEvent::MadePrivate {
                room: field("room", RoomName::try_from(room))?,
                creator: field("creator", Username::try_from(creator))?,
            },
        })
    }
}

/// The payload to publish for `event`.
pub(crate) fn encode(event: &RoomEvent) -> Result<Vec<u8>, WireError> {
    Ok(serde_json::to_vec(&RedisEvent::from(event))?)
}

/// The event in a payload taken off a channel.
pub(crate) fn decode(payload: &[u8]) -> Result<RoomEvent, WireError> {
    RoomEvent::try_from(serde_json::from_slice::<RedisEvent>(payload)?)
}

/// Placeholders put where a script fills in a value; the names are what the scripts call the
/// holes. Room and user names cannot contain a control character, so a marker cannot be taken
/// for a value, nor a value for a marker.
const ROOM_HOLE: (&str, &str) = ("\u{1}room", "room");
const USER_HOLE: (&str, &str) = ("\u{1}user", "user");
/// The online count's placeholder: no room holds this many people.
const COUNT_HOLE: (u64, &str) = (u64::MAX, "count");

/// The events the presence scripts publish, as a JSON object the scripts decode:
/// `{"join": parts, "leave": parts, "typing_stopped": parts}`, where `parts` alternates JSON
/// text and hole names (`room`, `user` for JSON strings, `count` for an integer), text first
/// and last. Pasting the values into the holes gives exactly what [`encode`] makes.
///
/// # Errors
/// [`WireError`] if the payload's encoding changed so that a hole cannot be found once.
pub(crate) fn script_templates() -> Result<String, WireError> {
    let presence = |event| {
        RedisEvent::Presence(PresencePayload {
            room: ROOM_HOLE.0.to_owned(),
            event,
            username: USER_HOLE.0.to_owned(),
            online_count: COUNT_HOLE.0,
        })
    };
    let typing_stopped = RedisEvent::Typing(TypingPayload {
        room: ROOM_HOLE.0.to_owned(),
        username: USER_HOLE.0.to_owned(),
        is_typing: false,
    });
    let templates = serde_json::json!({
        "join": cut_at_holes(&presence(PresenceKind::Join), true)?,
        "leave": cut_at_holes(&presence(PresenceKind::Leave), true)?,
        "typing_stopped": cut_at_holes(&typing_stopped, false)?,
    });
    Ok(templates.to_string())
}

/// The JSON of `event` cut at its holes: text, hole name, text, …, text.
fn cut_at_holes(event: &RedisEvent, with_count: bool) -> Result<Vec<String>, WireError> {
    let text = serde_json::to_string(event)?;
    let mut holes = vec![
        (serde_json::to_string(ROOM_HOLE.0)?, ROOM_HOLE.1),
        (serde_json::to_string(USER_HOLE.0)?, USER_HOLE.1),
    ];
    if with_count {
        holes.push((COUNT_HOLE.0.to_string(), COUNT_HOLE.1));
    }
    let mut found = Vec::new();
    for (marker, name) in &holes {
        let at: Vec<usize> = text
            .match_indices(marker.as_str())
            .map(|(i, _)| i)
            .collect();
        match at.as_slice() {
            [i] => found.push((*i, marker.len(), *name)),
            _ => {
                return Err(WireError::Template {
                    hole: name,
                    found: at.len(),
                });
            }
        }
    }
    found.sort_unstable();
    let mut parts = Vec::with_capacity(found.len() * 2 + 1);
    let mut from = 0;
    for (at, len, name) in found {
        parts.push(text[from..at].to_owned());
        parts.push(name.to_owned());
        from = at + len;
    }
    parts.push(text[from..].to_owned());
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(client_id: Option<&str>) -> RoomEvent {
        RoomEvent::MessagePosted(Message {
            room: RoomName::parse("general").unwrap(),
            seq: Seq::new(42).unwrap(),
            username: Username::parse("名前").unwrap(),
            content: Some(Content::parse("hello \"there\" 👋").unwrap()),
            timestamp: Timestamp::from_unix_millis(1_764_000_000_123).unwrap(),
            client_id: client_id.map(|c| ClientId::parse(c).unwrap()),
            edited_at: None,
        })
    }

    fn updated(rev: u64, deleted: bool) -> RoomEvent {
        let RoomEvent::MessagePosted(mut message) = message(Some("c-1")) else {
            unreachable!()
        };
        message.edited_at = Some(Timestamp::from_unix_millis(1_764_000_000_999).unwrap());
        if deleted {
            message.content = None;
            message.client_id = None;
        }
        RoomEvent::MessageUpdated {
            rev: Rev::new(rev).unwrap(),
            message,
        }
    }

    fn presence(event: PresenceEvent) -> RoomEvent {
        RoomEvent::Presence {
            room: RoomName::parse("g").unwrap(),
            event,
            username: Username::parse("bob").unwrap(),
            online_count: 3,
        }
    }

    #[test]
    fn every_event_round_trips() {
        let events = [
            message(Some("c-1")),
            message(None),
            updated(7, false),
            updated(8, true),
            presence(PresenceEvent::Join),
            presence(PresenceEvent::Leave),
            RoomEvent::Typing {
                room: RoomName::parse("g").unwrap(),
                username: Username::parse("bob").unwrap(),
                is_typing: true,
            },
            RoomEvent::Read {
                room: RoomName::parse("g").unwrap(),
                username: Username::parse("bob").unwrap(),
                seq: Seq::new(9).unwrap(),
                origin: Some(ConnectionId {
                    node: u64::MAX,
                    local: 3,
                }),
            },
            RoomEvent::Read {
                room: RoomName::parse("g").unwrap(),
                username: Username::parse("bob").unwrap(),
                seq: Seq::new(9).unwrap(),
                origin: None,
            },
            RoomEvent::MemberRemoved {
                room: RoomName::parse("team").unwrap(),
                username: Username::parse("bob").unwrap(),
            },
            RoomEvent::MadePrivate {
                room: RoomName::parse("team").unwrap(),
                creator: Username::parse("名前").unwrap(),
            },
        ];
        for event in events {
            let payload = encode(&event).unwrap();
            assert_eq!(decode(&payload).unwrap(), event);
        }
    }

    #[test]
    fn the_payload_has_its_own_shape() {
        let payload = encode(&message(None)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "message_posted", "room": "general", "seq": 42, "username": "名前",
                "content": "hello \"there\" 👋", "timestamp_ms": 1_764_000_000_123_i64,
                "client_id": null
            })
        );
    }

    #[test]
    fn a_change_has_its_own_kind_and_a_tombstone_no_content() {
        let json: serde_json::Value =
            serde_json::from_slice(&encode(&updated(8, true)).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "message_updated", "rev": 8,
                "message": {"room": "general", "seq": 42, "username": "名前", "content": "",
                    "timestamp_ms": 1_764_000_000_123_i64, "client_id": null,
                    "edited_at_ms": 1_764_000_000_999_i64, "deleted": true}
            })
        );
    }

    #[test]
    fn a_payload_breaking_a_domain_rule_is_refused() {
        let bad_room =
            br#"{"kind":"typing","room":"Not A Room","username":"bob","is_typing":true}"#;
        assert!(matches!(
            decode(bad_room),
            Err(WireError::Field { field: "room", .. })
        ));
        let bad_seq = serde_json::to_vec(&RedisEvent::MessagePosted(MessagePayload {
            room: "g".to_owned(),
            seq: u64::MAX,
            username: "bob".to_owned(),
            content: "hi".to_owned(),
            timestamp_ms: 0,
            client_id: None,
            edited_at_ms: None,
            deleted: false,
        }))
        .unwrap();
        assert!(matches!(
            decode(&bad_seq),
            Err(WireError::Field { field: "seq", .. })
        ));
        assert!(matches!(
            decode(b"{\"kind\":\"other\"}"),
            Err(WireError::Json(_))
        ));
    }

    /// Does what the scripts' `fill` does: text stays, holes get their values.
    fn fill(parts: &[String], room: &str, user: &str, count: u64) -> String {
        parts
            .iter()
            .enumerate()
            .map(|(i, part)| match (i % 2, part.as_str()) {
                (0, text) => text.to_owned(),
                (_, "room") => serde_json::to_string(room).unwrap(),
                (_, "user") => serde_json::to_string(user).unwrap(),
                (_, "count") => count.to_string(),
                (_, other) => panic!("unknown hole {other}"),
            })
            .collect()
    }

    #[test]
    fn filled_script_templates_decode_to_the_events_they_announce() {
        let templates: std::collections::HashMap<String, Vec<String>> =
            serde_json::from_str(&script_templates().unwrap()).unwrap();
        let filled = |name: &str| {
            let text = fill(&templates[name], "g", "bob", 3);
            decode(text.as_bytes()).unwrap()
        };
        assert_eq!(filled("join"), presence(PresenceEvent::Join));
        assert_eq!(filled("leave"), presence(PresenceEvent::Leave));
        assert_eq!(
            filled("typing_stopped"),
            RoomEvent::Typing {
                room: RoomName::parse("g").unwrap(),
                username: Username::parse("bob").unwrap(),
                is_typing: false,
            }
        );
        // A name that needs escaping stays one JSON string.
        let text = fill(&templates["join"], "g", "名\"前", 1);
        let RedisEvent::Presence(p) = serde_json::from_str(&text).unwrap() else {
            panic!("not a presence event: {text}");
        };
        assert_eq!(p.username, "名\"前");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever arrives on a room's channel decodes to an event or an error, never a
            /// panic: another process, or another program, may publish there.
            #[test]
            fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode(&payload);
            }

            /// Payloads with a message's or a typing event's fields but any values decode only
            /// to valid events, which encode and decode to themselves.
            #[test]
            fn decoded_events_round_trip(
                kind in prop_oneof![
                    Just("message_posted".to_owned()),
                    Just("typing".to_owned()),
                    any::<String>(),
                ],
                room in prop_oneof![Just("general".to_owned()), any::<String>()],
                user in prop_oneof![Just("ann".to_owned()), any::<String>()],
                seq in any::<u64>(),
                content in any::<String>(),
                timestamp_ms in any::<i64>(),
                deleted in any::<bool>(),
            ) {
                let payload = serde_json::json!({
                    "kind": kind, "room": room, "username": user, "seq": seq,
                    "content": content, "timestamp_ms": timestamp_ms, "client_id": null,
                    "deleted": deleted, "is_typing": true,
                });
                if let Ok(event) = decode(payload.to_string().as_bytes()) {
                    let again = decode(&encode(&event).expect("encodable")).expect("decodable");
                    prop_assert_eq!(again, event);
                }
            }
        }
    }
}
