//! Messages, the input of a post, and the shapes of history and room listings.

use crate::{ClientId, Content, Rev, RoomName, Seq, Timestamp, Username};

/// A stored message, in its current state. Only a store creates one: `seq` and `timestamp`
/// are assigned at commit.
///
/// A deleted message is a tombstone: it keeps its room, seq, username, timestamp and
/// `edited_at`, and has no content and no client id (the store still remembers the client
/// id, so a late resend finds the tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub room: RoomName,
    pub seq: Seq,
    pub username: Username,
    /// `None` once the message was deleted.
    pub content: Option<Content>,
    pub timestamp: Timestamp,
    pub client_id: Option<ClientId>,
    /// When the content was last edited; `None` if never.
    pub edited_at: Option<Timestamp>,
}

/// What the author asks to do to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replace the content.
    Edit(Content),
    /// Delete the message, leaving a tombstone.
    Delete,
}

/// A change of one message, asked by `author` (who must be the message's author).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub room: RoomName,
    pub seq: Seq,
    pub author: Username,
    pub change: Change,
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefusal {
    /// No message has this seq, or an edit names a deleted message.
    #[error("no such message")]
    NotFound,
    /// Only the author may edit or delete a message.
    #[error("only the author may edit or delete a message")]
    Forbidden,
}

/// The outcome of a change the store accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Committed with the room's next rev; `message` is its new state.
    Updated(MessageChange),
    /// Nothing to change (the same content, or a delete of a deleted message): no rev was
    /// taken; `message` is as it is.
    Unchanged(Message),
}

impl Changed {
    pub fn message(&self) -> &Message {
        match self {
            Changed::Updated(change) => &change.message,
            Changed::Unchanged(message) => message,
        }
    }

    pub fn into_message(self) -> Message {
        match self {
            Changed::Updated(change) => change.message,
            Changed::Unchanged(message) => message,
        }
    }
}

/// A message as it is after the change that took `rev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChange {
    pub rev: Rev,
    pub message: Message,
}

impl Message {
    pub fn is_deleted(&self) -> bool {
        self.content.is_none()
    }

    /// The content as shown: empty once deleted.
    pub fn text(&self) -> &str {
        self.content.as_ref().map_or("", Content::as_str)
    }

    /// The message after `by` applied `change` at `at`, by the rules of edits and deletes;
    /// `Ok(None)` when nothing changes (an edit to the same content, a delete of a deleted
    /// message), which takes no rev.
    ///
    /// # Errors
    /// [`ChangeRefusal::NotFound`] for an edit of a deleted message,
    /// [`ChangeRefusal::Forbidden`] when `by` is not the author.
    pub fn changed_by(
        &self,
        by: &Username,
        change: &Change,
        at: Timestamp,
    ) -> Result<Option<Message>, ChangeRefusal> {
        if self.is_deleted() && matches!(change, Change::Edit(_)) {
            return Err(ChangeRefusal::NotFound);
        }
        if *by != self.username {
            return Err(ChangeRefusal::Forbidden);
        }
        match change {
            Change::Edit(content) if self.content.as_ref() == Some(content) => Ok(None),
            Change::Edit(content) => Ok(Some(Message {
                content: Some(content.clone()),
                edited_at: Some(at),
                ..self.clone()
            })),
            Change::Delete if self.is_deleted() => Ok(None),
            Change::Delete => Ok(Some(Message {
                content: None,
                client_id: None,
                ..self.clone()
            })),
        }
    }
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
    /// The room's newest rev, read before the page's messages: every change up to it is
    /// reflected in them (`Rev::ZERO` when nothing was ever changed).
    pub last_rev: Rev,
}

/// Which changes of a room to read: messages whose latest change is after `after` (and at
/// most `through`, and of a seq at most `max_seq`), ascending by that rev, each once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesQuery {
    pub after: Rev,
    pub through: Option<Rev>,
    pub max_seq: Option<Seq>,
    pub limit: PageLimit,
}

/// A page of changes, ascending by rev.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangesPage {
    pub changes: Vec<MessageChange>,
    /// More exist after this page.
    pub has_more: bool,
    /// The room's newest rev when the page was read.
    pub last_rev: Rev,
}

/// A room that has messages, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    pub room: RoomName,
    pub last_seq: Seq,
    pub last_message_at: Option<Timestamp>,
    /// Created private: only its members may see it.
    pub private: bool,
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
            content: Some(Content::parse("hi").ok()?),
            timestamp: Timestamp::from_unix_millis(0).ok()?,
            client_id: match client_id {
                Some(c) => Some(ClientId::parse(c).ok()?),
                None => None,
            },
            edited_at: None,
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

    fn fixture() -> (Message, Username, Username, Timestamp) {
        let Some(m) = message(Some("c1")) else {
            panic!("fixture")
        };
        let alice = m.username.clone();
        let bob = Username::parse("bob").unwrap();
        (m, alice, bob, Timestamp::from_unix_millis(5_000).unwrap())
    }

    fn edit(text: &str) -> Change {
        Change::Edit(Content::parse(text).unwrap())
    }

    #[test]
    fn the_author_edits_and_the_edit_is_dated() {
        let (m, alice, _, at) = fixture();
        let edited = m.changed_by(&alice, &edit("fixed"), at).unwrap().unwrap();
        assert_eq!(edited.content.as_ref().map(Content::as_str), Some("fixed"));
        assert_eq!(edited.edited_at, Some(at));
        assert_eq!((edited.seq, edited.timestamp), (m.seq, m.timestamp));
        assert_eq!(edited.client_id, m.client_id, "an edit keeps the client id");
        assert!(!edited.is_deleted());
    }

    #[test]
    fn the_same_content_changes_nothing() {
        let (m, alice, _, at) = fixture();
        assert_eq!(m.changed_by(&alice, &edit("hi"), at), Ok(None));
    }

    #[test]
    fn only_the_author_may_change_a_message() {
        let (m, _, bob, at) = fixture();
        assert_eq!(
            m.changed_by(&bob, &edit("mine now"), at),
            Err(ChangeRefusal::Forbidden)
        );
        assert_eq!(
            m.changed_by(&bob, &Change::Delete, at),
            Err(ChangeRefusal::Forbidden)
        );
    }

    #[test]
    fn a_delete_leaves_a_tombstone_that_cannot_be_edited() {
        let (m, alice, bob, at) = fixture();
        let edited = m.changed_by(&alice, &edit("v2"), at).unwrap().unwrap();
        let later = Timestamp::from_unix_millis(9_000).unwrap();
        let tombstone = edited
            .changed_by(&alice, &Change::Delete, later)
            .unwrap()
            .unwrap();
        assert!(tombstone.is_deleted());
        assert_eq!(tombstone.content, None);
        assert_eq!(tombstone.client_id, None);
        assert_eq!(tombstone.edited_at, Some(at), "a delete keeps edited_at");
        assert_eq!(
            (
                &tombstone.room,
                tombstone.seq,
                &tombstone.username,
                tombstone.timestamp
            ),
            (&m.room, m.seq, &m.username, m.timestamp)
        );
        assert_eq!(
            tombstone.changed_by(&alice, &Change::Delete, later),
            Ok(None)
        );
        assert_eq!(
            tombstone.changed_by(&alice, &edit("back"), later),
            Err(ChangeRefusal::NotFound)
        );
        assert_eq!(
            tombstone.changed_by(&bob, &edit("back"), later),
            Err(ChangeRefusal::NotFound)
        );
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
