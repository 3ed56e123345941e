//! The REST API's request and response bodies (the wire's own types; messages are
//! [`MessageJson`]).

use banter_application::DraftField;
use poem_openapi::Object;
use poem_openapi::types::Example;

use crate::wire::MessageJson;

/// A page of history, oldest first.
#[derive(Debug, Object)]
pub struct HistoryBody {
    pub messages: Vec<MessageJson>,
    /// More messages exist beyond this page in the direction of travel.
    pub has_more: bool,
}

/// A string field of a request body as sent. The schema says string; any JSON value parses, so
/// a value of the wrong type, or none, is refused against its field (`content: must be a
/// string`) rather than as an unreadable body. (poem-openapi's own `String` would even accept
/// `5` as `"5"`, storing what the client did not send.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringField {
    Text(String),
    NotText,
    /// Not in the body at all: the same mistake as `null`.
    Missing,
}

impl StringField {
    pub fn into_draft(self) -> DraftField {
        match self {
            StringField::Text(text) => DraftField::Text(text),
            StringField::NotText => DraftField::NotText,
            StringField::Missing => DraftField::Absent,
        }
    }
}

impl poem_openapi::types::Type for StringField {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> std::borrow::Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        <String as poem_openapi::types::Type>::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        match self {
            StringField::Text(text) => Some(text),
            StringField::NotText | StringField::Missing => None,
        }
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ParseFromJSON for StringField {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        Ok(match value {
            Some(serde_json::Value::String(text)) => StringField::Text(text),
            Some(_) => StringField::NotText,
            // A required field that is absent: the application refuses it by name.
            None => StringField::Missing,
        })
    }
}

impl poem_openapi::types::ToJSON for StringField {
    fn to_json(&self) -> Option<serde_json::Value> {
        poem_openapi::types::Type::as_raw_value(self)
            .cloned()
            .map(serde_json::Value::String)
    }
}

/// A message to post.
#[derive(Debug, Object)]
#[oai(example)]
pub struct PostBody {
    /// Who posts (auth `none`); ignored with auth `jwt`, where the token's `sub` is used.
    pub username: Option<StringField>,
    /// 1–4000 characters, not only whitespace, no control characters but tab, LF, CR.
    pub content: StringField,
    /// Optional idempotency key: 1–64 printable ASCII characters. A resend with the same
    /// room, username and client_id returns the original with 200.
    pub client_id: Option<StringField>,
}

impl Example for PostBody {
    fn example() -> Self {
        Self {
            username: Some(StringField::Text("alice".into())),
            content: StringField::Text("Hello".into()),
            client_id: Some(StringField::Text("c-7f3a".into())),
        }
    }
}

/// A new text for a message.
#[derive(Debug, Object)]
#[oai(example)]
pub struct EditBody {
    /// Who edits (auth `none`; must be the author); ignored with auth `jwt`, where the token's
    /// `sub` is used.
    pub username: Option<StringField>,
    /// The new text: 1–4000 characters, the same rules as a post's.
    pub content: StringField,
}

impl Example for EditBody {
    fn example() -> Self {
        Self {
            username: Some(StringField::Text("alice".into())),
            content: StringField::Text("Hello, everyone".into()),
        }
    }
}

/// A message as it is after the change that took `rev`.
#[derive(Debug, Object)]
#[oai(example)]
pub struct ChangeBody {
    /// The room's change counter: 1, 2, 3, … without gaps.
    pub rev: u64,
    pub message: MessageJson,
}

impl Example for ChangeBody {
    fn example() -> Self {
        Self {
            rev: 7,
            message: MessageJson::example(),
        }
    }
}

/// Messages changed after `after_rev`, each once, ascending by its latest rev.
#[derive(Debug, Object)]
#[oai(example)]
pub struct ChangesBody {
    pub changes: Vec<ChangeBody>,
    /// More changes exist after this page.
    pub has_more: bool,
}

impl Example for ChangesBody {
    fn example() -> Self {
        Self {
            changes: vec![ChangeBody::example()],
            has_more: false,
        }
    }
}

/// A room with messages or people online.
#[derive(Debug, Object)]
pub struct RoomBody {
    pub room: String,
    pub last_seq: u64,
    /// When the last message was stored; null for a room without messages.
    pub last_message_at: Option<String>,
    /// People online now.
    pub online: u64,
}

#[derive(Debug, Object)]
pub struct RoomsBody {
    pub rooms: Vec<RoomBody>,
    pub has_more: bool,
}

#[derive(Debug, Object)]
pub struct PresenceBody {
    pub room: String,
    /// A page of online usernames in code-point order.
    pub online: Vec<String>,
    /// Everyone online, whatever the page.
    pub online_count: u64,
    /// Who is typing, in code-point order.
    pub typing: Vec<String>,
}

/// A room as one user sees it.
#[derive(Debug, Object)]
#[oai(example)]
pub struct UserRoomBody {
    pub room: String,
    /// The room's newest seq.
    pub last_seq: u64,
    /// How far this user has read (0 if never).
    pub read_seq: u64,
    /// Messages after `read_seq` by other users, deleted ones excluded; 1000 means "1000 or
    /// more".
    pub unread: u64,
    /// When the room's last message was stored.
    pub last_message_at: Option<String>,
}

impl Example for UserRoomBody {
    fn example() -> Self {
        Self {
            room: "general".into(),
            last_seq: 42,
            read_seq: 40,
            unread: 1,
            last_message_at: Some("2026-11-28T09:15:02.123Z".into()),
        }
    }
}

/// Every room the user posted in or has a read position in, newest activity first.
#[derive(Debug, Object)]
#[oai(example)]
pub struct UserRoomsBody {
    pub rooms: Vec<UserRoomBody>,
}

impl Example for UserRoomsBody {
    fn example() -> Self {
        Self {
            rooms: vec![UserRoomBody::example()],
        }
    }
}

/// How far the user has read the room.
#[derive(Debug, Object)]
#[oai(example)]
pub struct ReadRequestBody {
    /// The seq read up to (integer ≥ 0). A lower value than the stored one is ignored; one
    /// beyond the room's last seq is clamped to it.
    pub seq: u64,
}

impl Example for ReadRequestBody {
    fn example() -> Self {
        Self { seq: 42 }
    }
}

/// The user's stored read position in the room.
#[derive(Debug, Object)]
#[oai(example)]
pub struct ReadPositionBody {
    pub room: String,
    pub read_seq: u64,
}

impl Example for ReadPositionBody {
    fn example() -> Self {
        Self {
            room: "general".into(),
            read_seq: 42,
        }
    }
}

/// A private room to create (auth `jwt` only).
#[derive(Debug, Object)]
#[oai(example)]
pub struct CreateRoomBody {
    /// The room's name (the room rules).
    pub room: StringField,
    /// Must be `true`: rooms that are not private need no creation.
    pub private: Option<bool>,
}

impl Example for CreateRoomBody {
    fn example() -> Self {
        Self {
            room: StringField::Text("team-x".into()),
            private: Some(true),
        }
    }
}

/// A private room just created: its creator is its only member.
#[derive(Debug, Object)]
#[oai(example)]
pub struct CreatedRoomBody {
    pub room: String,
    pub private: bool,
    pub members: Vec<String>,
}

impl Example for CreatedRoomBody {
    fn example() -> Self {
        Self {
            room: "team-x".into(),
            private: true,
            members: vec!["alice".into()],
        }
    }
}

/// A private room's members, in code-point order.
#[derive(Debug, Object)]
#[oai(example)]
pub struct MembersBody {
    pub room: String,
    pub members: Vec<String>,
}

impl Example for MembersBody {
    fn example() -> Self {
        Self {
            room: "team-x".into(),
            members: vec!["alice".into(), "bob".into()],
        }
    }
}

/// A message found by a search: the message, and where the query matched its content.
#[derive(Debug, Object)]
#[oai(example)]
pub struct SearchResultBody {
    #[oai(flatten)]
    pub message: MessageJson,
    /// Each match as `[start, end)`, in Unicode scalar values of `content`, in order. A prefix
    /// match covers the whole word; a phrase, its words and what lies between them.
    pub highlights: Vec<Vec<u64>>,
}

impl poem_openapi::types::Example for SearchResultBody {
    fn example() -> Self {
        Self {
            message: <MessageJson as poem_openapi::types::Example>::example(),
            highlights: vec![vec![0, 5]],
        }
    }
}

impl From<banter_domain::SearchHit> for SearchResultBody {
    fn from(hit: banter_domain::SearchHit) -> Self {
        Self {
            highlights: hit
                .highlights
                .iter()
                .map(|h| vec![h.start as u64, h.end as u64])
                .collect(),
            message: hit.message.into(),
        }
    }
}

/// Search results, newest first.
#[derive(Debug, Object)]
pub struct SearchBody {
    pub results: Vec<SearchResultBody>,
    /// More results exist: in a room, page on with `before` = the last result's seq.
    pub has_more: bool,
}

impl From<banter_domain::SearchPage> for SearchBody {
    fn from(page: banter_domain::SearchPage) -> Self {
        Self {
            results: page.hits.into_iter().map(Into::into).collect(),
            has_more: page.has_more,
        }
    }
}
