//! Presence counts people, not sockets.
//!
//! A [`PresenceBook`] counts open connections per user per room. A user joins a room when their
//! first connection to it opens and leaves when their last one closes; the online list is sorted
//! in code-point order and read in pages.

use std::collections::BTreeMap;

use crate::{RoomName, Username};

/// At most this many names go into a welcome's `online` list; `online_count` is always true.
pub const WELCOME_ONLINE_CAP: usize = 1000;

/// What a connect or disconnect did to the room's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's first connection to the room: others should see a `join`.
    Joined { online_count: u64 },
    /// The user's last connection closed: others should see a `leave`.
    Left { online_count: u64 },
    /// Another tab of a user already online, or one of several closed: nobody needs telling.
    Unchanged { online_count: u64 },
}

/// A page of a room's online users.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OnlinePage {
    /// Sorted in code-point order, starting after the requested name.
    pub users: Vec<Username>,
    /// Everyone online in the room, whatever the page.
    pub online_count: u64,
    /// More names follow this page.
    pub has_more: bool,
}

/// A room with people in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccupiedRoom {
    pub room: RoomName,
    pub online_count: u64,
}

/// Connections per user per room. Pure state: the registry adapters decide where it lives.
#[derive(Debug, Default, Clone)]
pub struct PresenceBook {
    rooms: BTreeMap<RoomName, BTreeMap<Username, u32>>,
}

impl PresenceBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more connection of `user` to `room`.
    pub fn connect(&mut self, room: &RoomName, user: &Username) -> PresenceChange {
        let users = self.rooms.entry(room.clone()).or_default();
        let connections = users.entry(user.clone()).or_insert(0);
        *connections += 1;
        let first = *connections == 1;
        let online_count = users.len() as u64;
        if first {
            PresenceChange::Joined { online_count }
        } else {
            PresenceChange::Unchanged { online_count }
        }
    }

    /// Counts one connection of `user` to `room` fewer. Disconnecting a connection that was
    /// never counted changes nothing.
    pub fn disconnect(&mut self, room: &RoomName, user: &Username) -> PresenceChange {
        let Some(users) = self.rooms.get_mut(room) else {
            return PresenceChange::Unchanged { online_count: 0 };
        };
        let change = match users.get_mut(user) {
            None => PresenceChange::Unchanged {
                online_count: users.len() as u64,
            },
            Some(connections) if *connections > 1 => {
                *connections -= 1;
                PresenceChange::Unchanged {
                    online_count: users.len() as u64,
                }
            }
            Some(_) => {
                users.remove(user);
                PresenceChange::Left {
                    online_count: users.len() as u64,
                }
            }
        };
        if users.is_empty() {
            self.rooms.remove(room);
        }
        change
    }

    pub fn online_count(&self, room: &RoomName) -> u64 {
        self.rooms.get(room).map_or(0, |users| users.len() as u64)
    }

    pub fn is_online(&self, room: &RoomName, user: &Username) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|users| users.contains_key(user))
    }

    /// Up to `limit` online users of `room` in code-point order, starting after `after`.
    pub fn online(&self, room: &RoomName, after: Option<&Username>, limit: usize) -> OnlinePage {
        let Some(users) = self.rooms.get(room) else {
            return OnlinePage::default();
        };
        let mut names = match after {
            Some(after) => users.range::<Username, _>((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Unbounded,
            )),
            None => users.range::<Username, _>(..),
        }
        .map(|(name, _)| name.clone());
        let page: Vec<Username> = names.by_ref().take(limit).collect();
        OnlinePage {
            users: page,
            online_count: users.len() as u64,
            has_more: names.next().is_some(),
        }
    }

    /// Rooms with someone online, sorted by name, starting after `after`; at most `limit`.
    pub fn occupied_rooms(&self, after: Option<&RoomName>, limit: usize) -> Vec<OccupiedRoom> {
        let rooms = match after {
            Some(after) => self.rooms.range::<RoomName, _>((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Unbounded,
            )),
            None => self.rooms.range::<RoomName, _>(..),
        };
        rooms
            .take(limit)
            .map(|(room, users)| OccupiedRoom {
                room: room.clone(),
                online_count: users.len() as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
    fn user(name: &str) -> Username {
        Username::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn two_tabs_are_one_person() {
        let mut book = PresenceBook::new();
        let (general, alice) = (room("general"), user("alice"));
        assert_eq!(
            book.connect(&general, &alice),
            PresenceChange::Joined { online_count: 1 }
        );
        assert_eq!(
            book.connect(&general, &alice),
            PresenceChange::Unchanged { online_count: 1 }
        );
        assert_eq!(book.online_count(&general), 1);
        assert_eq!(
            book.disconnect(&general, &alice),
            PresenceChange::Unchanged { online_count: 1 }
        );
        assert!(book.is_online(&general, &alice));
        assert_eq!(
            book.disconnect(&general, &alice),
            PresenceChange::Left { online_count: 0 }
        );
        assert!(!book.is_online(&general, &alice));
        // Extra disconnects are harmless and do not go negative.
        assert_eq!(
            book.disconnect(&general, &alice),
            PresenceChange::Unchanged { online_count: 0 }
        );
        assert!(book.occupied_rooms(None, 10).is_empty());
    }

    #[test]
    fn rooms_are_independent() {
        let mut book = PresenceBook::new();
        let alice = user("alice");
        book.connect(&room("a"), &alice);
        assert_eq!(
            book.connect(&room("b"), &alice),
            PresenceChange::Joined { online_count: 1 }
        );
        assert_eq!(
            book.disconnect(&room("a"), &alice),
            PresenceChange::Left { online_count: 0 }
        );
        assert!(book.is_online(&room("b"), &alice));
    }

    #[test]
    fn online_is_sorted_paged_and_counted() {
        let mut book = PresenceBook::new();
        let general = room("general");
        for name in ["bob", "alice", "Zed", "名前", "carol"] {
            book.connect(&general, &user(name));
        }
        let first = book.online(&general, None, 2);
        assert_eq!(first.users, vec![user("Zed"), user("alice")]);
        assert_eq!(first.online_count, 5);
        assert!(first.has_more);
        let second = book.online(&general, Some(&user("alice")), 10);
        assert_eq!(second.users, vec![user("bob"), user("carol"), user("名前")]);
        assert!(!second.has_more);
        let exact = book.online(&general, Some(&user("bob")), 2);
        assert!(
            !exact.has_more,
            "a page that ends at the last name has no more"
        );
        assert_eq!(book.online(&room("empty"), None, 10), OnlinePage::default());
    }

    #[test]
    fn occupied_rooms_page_by_name() {
        let mut book = PresenceBook::new();
        let alice = user("alice");
        for name in ["c", "a", "b"] {
            book.connect(&room(name), &alice);
        }
        let names = |rooms: Vec<OccupiedRoom>| -> Vec<String> {
            rooms.into_iter().map(|r| r.room.into_inner()).collect()
        };
        assert_eq!(names(book.occupied_rooms(None, 2)), ["a", "b"]);
        assert_eq!(names(book.occupied_rooms(Some(&room("a")), 5)), ["b", "c"]);
    }
}
