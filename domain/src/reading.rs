//! Read positions: how far a user has read a room, and what is unread.

use std::cmp::Ordering;

use crate::{RoomName, Seq, Timestamp};

/// Unread counts stop here: `UNREAD_CAP` means "this many or more".
pub const UNREAD_CAP: u64 = 1000;

/// One connection, told apart from every other on every node: a user's read position goes to
/// their other connections to the room, not back to the one that moved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    /// Chosen at random when the process starts.
    pub node: u64,
    /// Counted up by the process.
    pub local: u64,
}

/// Where a read position moves when the user says they read up to `requested`: a value beyond
/// the room's `last_seq` is clamped to it, and a position never moves back. `None` when it
/// stays where it is.
pub fn advance_read(stored: Seq, requested: Seq, last_seq: Seq) -> Option<Seq> {
    let target = requested.min(last_seq);
    (target > stored).then_some(target)
}

/// A user's read position after they reported one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMark {
    /// The stored position now.
    pub read_seq: Seq,
    /// Whether this report moved it.
    pub advanced: bool,
}

/// A room as one user sees it: how far it goes, how far they read, what is unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRoom {
    pub room: RoomName,
    pub last_seq: Seq,
    pub read_seq: Seq,
    /// Messages after `read_seq` by other users, deleted ones excluded, at most
    /// [`UNREAD_CAP`].
    pub unread: u64,
    pub last_message_at: Option<Timestamp>,
    /// Created private: listed only while the user is a member.
    pub private: bool,
}

impl UserRoom {
    /// Newest activity first (the room's latest message), then by name.
    pub fn by_activity(a: &UserRoom, b: &UserRoom) -> Ordering {
        b.last_message_at
            .cmp(&a.last_message_at)
            .then_with(|| a.room.cmp(&b.room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> Seq {
        Seq::new(n).unwrap()
    }

    #[test]
    fn a_position_moves_forward_only_and_never_past_the_last_seq() {
        assert_eq!(advance_read(seq(0), seq(3), seq(10)), Some(seq(3)));
        assert_eq!(
            advance_read(seq(3), seq(2), seq(10)),
            None,
            "lower: ignored"
        );
        assert_eq!(
            advance_read(seq(3), seq(3), seq(10)),
            None,
            "the same: no move"
        );
        assert_eq!(
            advance_read(seq(3), seq(99), seq(10)),
            Some(seq(10)),
            "clamped"
        );
        assert_eq!(advance_read(seq(10), seq(99), seq(10)), None);
        assert_eq!(advance_read(seq(0), seq(5), seq(0)), None, "an empty room");
    }

    #[test]
    fn rooms_sort_by_newest_activity_then_name() {
        let at = |ms| Some(Timestamp::from_unix_millis(ms).unwrap());
        let room = |name: &str, when| UserRoom {
            room: RoomName::parse(name).unwrap(),
            last_seq: seq(1),
            read_seq: seq(0),
            unread: 1,
            last_message_at: when,
            private: false,
        };
        let mut rooms = [
            room("b", at(1_000)),
            room("none", None),
            room("c", at(5_000)),
            room("a", at(1_000)),
        ];
        rooms.sort_by(UserRoom::by_activity);
        let names: Vec<&str> = rooms.iter().map(|r| r.room.as_str()).collect();
        assert_eq!(names, ["c", "a", "b", "none"]);
    }
}
