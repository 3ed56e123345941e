//! Typing indicators: per user per room, throttled and self-expiring.
//!
//! Time is whatever monotonic clock the caller reads (a `Duration` since its own origin), so
//! the rules are tested by passing instants, without sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::{RoomName, Username};

/// The timing rules of typing indicators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypingRules {
    /// An indicator that is not refreshed for this long ends.
    pub expires_after: Duration,
    /// A refresh sooner than this after the last broadcast one is not broadcast again.
    pub rebroadcast_after: Duration,
}

impl Default for TypingRules {
    fn default() -> Self {
        Self {
            expires_after: Duration::from_secs(6),
            rebroadcast_after: Duration::from_secs(2),
        }
    }
}

/// A change the room should be told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingChange {
    pub room: RoomName,
    pub username: Username,
    pub is_typing: bool,
}

#[derive(Debug, Clone, Copy)]
struct Typist {
    last_broadcast: Duration,
    expires_at: Duration,
}

/// Who is typing where.
#[derive(Debug, Clone, Default)]
pub struct TypingBook {
    rules: TypingRules,
    rooms: BTreeMap<RoomName, BTreeMap<Username, Typist>>,
    /// Expiry instants, so finding what expired does not scan every room.
    deadlines: BTreeSet<(Duration, RoomName, Username)>,
}

impl TypingBook {
    pub fn new(rules: TypingRules) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// `user` is typing in `room` at `now`. Returns the change to broadcast, if any: the start
    /// of typing, or a refresh at least `rebroadcast_after` after the last broadcast one.
    pub fn start(
        &mut self,
        room: &RoomName,
        user: &Username,
        now: Duration,
    ) -> Option<TypingChange> {
        let expires_at = now + self.rules.expires_after;
        let typists = self.rooms.entry(room.clone()).or_default();
        let (broadcast, previous_deadline) = match typists.get_mut(user) {
            Some(typist) => {
                let previous = typist.expires_at;
                typist.expires_at = expires_at;
                let due = now.saturating_sub(typist.last_broadcast) >= self.rules.rebroadcast_after;
                if due {
                    typist.last_broadcast = now;
                }
                (due, Some(previous))
            }
            None => {
                typists.insert(
                    user.clone(),
                    Typist {
                        last_broadcast: now,
                        expires_at,
                    },
                );
                (true, None)
            }
        };
        if let Some(previous) = previous_deadline {
            self.deadlines
                .remove(&(previous, room.clone(), user.clone()));
        }
        self.deadlines
            .insert((expires_at, room.clone(), user.clone()));
        broadcast.then(|| TypingChange {
            room: room.clone(),
            username: user.clone(),
            is_typing: true,
        })
    }

    /// `user` stopped typing in `room` (said so, posted a message, or left). Returns the change
    /// to broadcast if they were typing.
    pub fn stop(&mut self, room: &RoomName, user: &Username) -> Option<TypingChange> {
        let typists = self.rooms.get_mut(room)?;
        let typist = typists.remove(user)?;
        if typists.is_empty() {
            self.rooms.remove(room);
        }
        self.deadlines
            .remove(&(typist.expires_at, room.clone(), user.clone()));
        Some(TypingChange {
            room: room.clone(),
            username: user.clone(),
            is_typing: false,
        })
    }

    /// Rooms with an indicator due to expire at `now`.
    pub fn due_rooms(&self, now: Duration) -> Vec<RoomName> {
        let rooms: BTreeSet<&RoomName> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _, _)| *deadline <= now)
            .map(|(_, room, _)| room)
            .collect();
        rooms.into_iter().cloned().collect()
    }

    /// Ends the indicators of `room` not refreshed in time, oldest first.
    pub fn expire_in(&mut self, room: &RoomName, now: Duration) -> Vec<TypingChange> {
        let due: Vec<Username> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _, _)| *deadline <= now)
            .filter(|(_, r, _)| r == room)
            .map(|(_, _, user)| user.clone())
            .collect();
        due.iter()
            .filter_map(|user| self.stop(room, user))
            .collect()
    }

    /// Ends every indicator not refreshed in time, room by room (what the tests check the
    /// rules with; the service expires a room at a time, under the room's lock).
    #[cfg(test)]
    fn expire(&mut self, now: Duration) -> Vec<TypingChange> {
        self.due_rooms(now)
            .iter()
            .flat_map(|room| self.expire_in(room, now))
            .collect()
    }

    /// The next instant at which an indicator expires.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.deadlines.first().map(|(deadline, _, _)| *deadline)
    }

    /// Who is typing in `room`, in code-point order.
    /// Whether `user` has an indicator in `room` here.
    pub fn is_typing(&self, room: &RoomName, user: &Username) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|typists| typists.contains_key(user))
    }

    pub fn typing(&self, room: &RoomName) -> Vec<Username> {
        self.rooms
            .get(room)
            .map(|typists| typists.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }
    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }
    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }
    fn change(r: &str, u: &str, is_typing: bool) -> TypingChange {
        TypingChange {
            room: room(r),
            username: user(u),
            is_typing,
        }
    }

    #[test]
    fn start_broadcasts_then_throttles_refreshes_for_two_seconds() {
        let mut book = TypingBook::new(TypingRules::default());
        let (g, bob) = (room("g"), user("bob"));
        assert_eq!(
            book.start(&g, &bob, secs(10.0)),
            Some(change("g", "bob", true))
        );
        assert_eq!(book.start(&g, &bob, secs(10.5)), None);
        assert_eq!(book.start(&g, &bob, secs(11.99)), None);
        assert_eq!(
            book.start(&g, &bob, secs(12.0)),
            Some(change("g", "bob", true))
        );
        assert_eq!(book.start(&g, &bob, secs(13.0)), None);
        assert_eq!(book.typing(&g), vec![bob]);
    }

    #[test]
    fn expires_six_seconds_after_the_last_refresh_even_unbroadcast() {
        let mut book = TypingBook::new(TypingRules::default());
        let (g, bob) = (room("g"), user("bob"));
        book.start(&g, &bob, secs(0.0));
        // This refresh is not broadcast but still pushes the expiry to 7.0.
        assert_eq!(book.start(&g, &bob, secs(1.0)), None);
        assert_eq!(book.next_expiry(), Some(secs(7.0)));
        assert!(book.expire(secs(6.5)).is_empty());
        assert_eq!(book.expire(secs(7.0)), vec![change("g", "bob", false)]);
        assert!(book.typing(&g).is_empty());
        assert_eq!(book.next_expiry(), None);
        // Nothing more to expire, and a stop after expiry says nothing.
        assert!(book.expire(secs(100.0)).is_empty());
        assert_eq!(book.stop(&g, &bob), None);
    }

    #[test]
    fn stop_ends_once_and_only_for_typists() {
        let mut book = TypingBook::new(TypingRules::default());
        let (g, bob) = (room("g"), user("bob"));
        assert_eq!(book.stop(&g, &bob), None);
        book.start(&g, &bob, secs(0.0));
        assert_eq!(book.stop(&g, &bob), Some(change("g", "bob", false)));
        assert_eq!(book.stop(&g, &bob), None);
        assert!(
            book.expire(secs(60.0)).is_empty(),
            "a stopped typist has no deadline"
        );
        // Starting again after a stop broadcasts at once, whatever the throttle.
        assert_eq!(
            book.start(&g, &bob, secs(0.5)),
            Some(change("g", "bob", true))
        );
    }

    #[test]
    fn typists_are_sorted_and_expire_in_order() {
        let mut book = TypingBook::new(TypingRules::default());
        let g = room("g");
        book.start(&g, &user("zoe"), secs(0.0));
        book.start(&g, &user("Bob"), secs(1.0));
        book.start(&room("h"), &user("amy"), secs(2.0));
        assert_eq!(book.typing(&g), vec![user("Bob"), user("zoe")]);
        assert_eq!(
            book.expire(secs(7.5)),
            vec![change("g", "zoe", false), change("g", "Bob", false)]
        );
        assert_eq!(book.typing(&room("h")), vec![user("amy")]);
    }

    #[test]
    fn expiry_can_be_taken_room_by_room() {
        let mut book = TypingBook::new(TypingRules::default());
        book.start(&room("a"), &user("ann"), secs(0.0));
        book.start(&room("b"), &user("ben"), secs(1.0));
        book.start(&room("a"), &user("amy"), secs(5.0));
        assert_eq!(book.due_rooms(secs(6.5)), vec![room("a")]);
        assert_eq!(book.due_rooms(secs(7.0)), vec![room("a"), room("b")]);
        assert_eq!(
            book.expire_in(&room("a"), secs(7.0)),
            vec![change("a", "ann", false)]
        );
        assert_eq!(book.typing(&room("a")), vec![user("amy")]);
        assert_eq!(
            book.typing(&room("b")),
            vec![user("ben")],
            "other rooms wait their turn"
        );
        assert_eq!(book.due_rooms(secs(7.0)), vec![room("b")]);
    }

    #[test]
    fn custom_rules_apply() {
        let rules = TypingRules {
            expires_after: secs(1.0),
            rebroadcast_after: secs(0.1),
        };
        let mut book = TypingBook::new(rules);
        let (g, bob) = (room("g"), user("bob"));
        book.start(&g, &bob, secs(0.0));
        assert!(book.start(&g, &bob, secs(0.2)).is_some());
        assert_eq!(book.expire(secs(1.2)).len(), 1);
    }
}
