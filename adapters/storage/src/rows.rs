//! Rows as stored, and their conversion to domain values.

use banter_domain::{ClientId, Content, Message, RoomName, Seq, StoredRoom, Timestamp, Username};
use diesel::prelude::*;

use crate::StorageError;
use crate::schema::{messages, rooms};

/// A `messages` row. Inserted as-is (a `None` client id is NULL, never DEFAULT), so every
/// SQLite INSERT has the same SQL and its prepared statement is reused.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = messages)]
#[diesel(treat_none_as_default_value = false)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct MessageRow {
    pub room: String,
    pub seq: i64,
    pub username: String,
    pub content: String,
    pub created_at_ms: i64,
    /// Kept after a delete: a late resend with it finds the tombstone.
    pub client_id: Option<String>,
    pub edited_at_ms: Option<i64>,
    /// The content is `""` and forgotten; the message is shown as a tombstone.
    pub deleted: bool,
}

impl MessageRow {
    pub fn into_message(self) -> Result<Message, StorageError> {
        let corrupt = |what: &str, detail: String| StorageError::Corrupt {
            what: format!("message {}#{} {what}", self.room, self.seq),
            detail,
        };
        Ok(Message {
            room: RoomName::parse(&self.room).map_err(|e| corrupt("room", e.to_string()))?,
            seq: Seq::from_i64(self.seq).map_err(|e| corrupt("seq", e.to_string()))?,
            username: Username::parse(&self.username)
                .map_err(|e| corrupt("username", e.to_string()))?,
            content: if self.deleted {
                None
            } else {
                Some(Content::parse(&self.content).map_err(|e| corrupt("content", e.to_string()))?)
            },
            timestamp: Timestamp::from_unix_millis(self.created_at_ms)
                .map_err(|e| corrupt("timestamp", e.to_string()))?,
            client_id: match &self.client_id {
                Some(_) if self.deleted => None,
                Some(raw) => {
                    Some(ClientId::parse(raw).map_err(|e| corrupt("client_id", e.to_string()))?)
                }
                None => None,
            },
            edited_at: self
                .edited_at_ms
                .map(Timestamp::from_unix_millis)
                .transpose()
                .map_err(|e| corrupt("edited_at", e.to_string()))?,
        })
    }
}

/// A `rooms` row as the listing reads it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = rooms)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct RoomRow {
    pub name: String,
    pub last_seq: i64,
    pub last_message_at_ms: Option<i64>,
    pub private: bool,
}

impl RoomRow {
    pub fn into_stored_room(self) -> Result<StoredRoom, StorageError> {
        let corrupt = |what: &str, detail: String| StorageError::Corrupt {
            what: format!("room {} {what}", self.name),
            detail,
        };
        Ok(StoredRoom {
            room: RoomName::parse(&self.name).map_err(|e| corrupt("name", e.to_string()))?,
            last_seq: Seq::from_i64(self.last_seq)
                .map_err(|e| corrupt("last_seq", e.to_string()))?,
            last_message_at: self
                .last_message_at_ms
                .map(Timestamp::from_unix_millis)
                .transpose()
                .map_err(|e| corrupt("last_message_at", e.to_string()))?,
            private: self.private,
        })
    }
}
