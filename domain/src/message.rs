//! Messages, the input of a post, and the shapes of history and room listings.

use crate::{ClientId, Content, RoomName, Seq, Timestamp, Username};

/// A stored message. Only a store creates one: `seq` and `timestamp` are assigned at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub room: RoomName,
    pub seq: Seq,
    pub username: Username,
    pub content: Content,
    pub timestamp: Timestamp,
    pub client_id: Option<ClientId>,
}

/// What a poster asks to store; already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub room: RoomName,
    pub username: Username,
    pub content: Content,
    pub client_id: Option<ClientId>,
}

impl NewMessage {
    /// Whether `stored` is the original of this post under the idempotency rule: same room,
    /// username and client id.
    pub fn is_resend_of(&self, stored: &Message) -> bool {
        self.client_id.is_some()
            && self.client_id == stored.client_id
            && self.room == stored.room
            && self.username == stored.username
    }
}

/// The outcome of storing a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Newly committed with the next seq of its room.
    Stored(Message),
    /// The `client_id` was already used in this room by this user: nothing new was stored and
    /// this is the original.
    Duplicate(Message),
}

impl Appended {
    pub fn into_message(self) -> Message {
        match self {
            Appended::Stored(m) | Appended::Duplicate(m) => m,
        }
    }
}

/// A page size for history: 1 to [`PageLimit::MAX_HISTORY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageLimit(u16);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an integer from 1 to {max}")]
pub struct PageLimitOutOfRange {
    pub max: u16,
}

impl PageLimit {
    pub const MAX_HISTORY: u16 = 200;
    pub const DEFAULT_HISTORY: PageLimit = PageLimit(50);

    /// A history page size, 1–200.
    pub fn history(value: u64) -> Result<Self, PageLimitOutOfRange> {
        Self::bounded(value, Self::MAX_HISTORY)
    }

    /// A page size between 1 and `max`.
    pub fn bounded(value: u64, max: u16) -> Result<Self, PageLimitOutOfRange> {
        match u16::try_from(value) {
            Ok(v) if (1..=max).contains(&v) => Ok(Self(v)),
            _ => Err(PageLimitOutOfRange { max }),
        }
    }

    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

/// Which slice of a room's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The newest `limit` messages.
    Latest { limit: PageLimit },
    /// The newest `limit` messages with seq < `before`.
    Before { before: Seq, limit: PageLimit },
    /// The oldest `limit` messages with seq > `after`.
    After { after: Seq, limit: PageLimit },
}

/// A page of history, always oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    /// More messages exist beyond this page in the direction of travel (older for `Latest`
    /// and `Before`, newer for `After`).
    pub has_more: bool,
    /// The room's newest seq when the page was read (`Seq::ZERO` for a room without messages).
    pub last_seq: Seq,
}

/// A room that has messages, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    pub room: RoomName,
    pub last_seq: Seq,
    pub last_message_at: Option<Timestamp>,
}

/// A page of rooms, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredRoomsPage {
    pub rooms: Vec<StoredRoom>,
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(client_id: Option<&str>) -> Option<Message> {
        Some(Message {
            room: RoomName::parse("general").ok()?,
            seq: Seq::new(1).ok()?,
            username: Username::parse("alice").ok()?,
            content: Content::parse("hi").ok()?,
            timestamp: Timestamp::from_unix_millis(0).ok()?,
            client_id: match client_id {
                Some(c) => Some(ClientId::parse(c).ok()?),
                None => None,
            },
        })
    }

    #[test]
    fn resend_needs_the_same_room_user_and_client_id() {
        let stored = message(Some("c1"));
        let post = |room: &str, user: &str, cid: Option<&str>| -> Option<NewMessage> {
            Some(NewMessage {
                room: RoomName::parse(room).ok()?,
                username: Username::parse(user).ok()?,
                content: Content::parse("other text").ok()?,
                client_id: match cid {
                    Some(c) => Some(ClientId::parse(c).ok()?),
                    None => None,
                },
            })
        };
        let Some(stored) = stored else {
            panic!("fixture")
        };
        let check = |p: Option<NewMessage>| p.map(|p| p.is_resend_of(&stored));
        assert_eq!(check(post("general", "alice", Some("c1"))), Some(true));
        assert_eq!(check(post("general", "bob", Some("c1"))), Some(false));
        assert_eq!(check(post("other", "alice", Some("c1"))), Some(false));
        assert_eq!(check(post("general", "alice", Some("c2"))), Some(false));
        assert_eq!(check(post("general", "alice", None)), Some(false));
        let without = message(None);
        let p = post("general", "alice", None);
        assert_eq!(p.zip(without).map(|(p, m)| p.is_resend_of(&m)), Some(false));
    }

    #[test]
    fn page_limit_bounds() {
        assert!(PageLimit::history(1).is_ok());
        assert!(PageLimit::history(200).is_ok());
        assert_eq!(PageLimit::history(0), Err(PageLimitOutOfRange { max: 200 }));
        assert_eq!(
            PageLimit::history(201),
            Err(PageLimitOutOfRange { max: 200 })
        );
        assert_eq!(PageLimit::bounded(1000, 1000).map(PageLimit::get), Ok(1000));
        assert!(PageLimit::bounded(70_000, 1000).is_err());
    }
}
