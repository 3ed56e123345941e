//! Presence kept in this process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use banter_domain::ports::{PresenceError, PresenceRegistry};
use banter_domain::{OccupiedRoom, OnlinePage, PresenceBook, PresenceChange, RoomName, Username};

/// A [`PresenceBook`] and the typists behind a mutex: every operation is a few map lookups.
#[derive(Debug, Clone, Default)]
pub struct MemoryPresence {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    book: PresenceBook,
    typing: BTreeMap<RoomName, BTreeSet<Username>>,
}

impl MemoryPresence {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update completes before the lock is released; poisoning cannot leave it torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PresenceRegistry for MemoryPresence {
    async fn connect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        Ok(self.state().book.connect(room, user))
    }

    async fn disconnect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        Ok(self.state().book.disconnect(room, user))
    }

    async fn online(
        &self,
        room: &RoomName,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<OnlinePage, PresenceError> {
        Ok(self.state().book.online(room, after, limit))
    }

    async fn occupied_rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<Vec<OccupiedRoom>, PresenceError> {
        Ok(self.state().book.occupied_rooms(after, limit))
    }

    /// The bound is not needed: the typists' node is this process, which ends their typing.
    async fn set_typing(
        &self,
        room: &RoomName,
        user: &Username,
        at_most: Option<Duration>,
    ) -> Result<bool, PresenceError> {
        let mut state = self.state();
        let was_listed = if at_most.is_some() {
            !state
                .typing
                .entry(room.clone())
                .or_default()
                .insert(user.clone())
        } else if let Some(typists) = state.typing.get_mut(room) {
            let removed = typists.remove(user);
            if typists.is_empty() {
                state.typing.remove(room);
            }
            removed
        } else {
            false
        };
        Ok(was_listed)
    }

    async fn typing(&self, room: &RoomName) -> Result<Vec<Username>, PresenceError> {
        Ok(self
            .state()
            .typing
            .get(room)
            .map(|typists| typists.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// Nothing to refresh: this registry lives and dies with the process it counts.
    async fn heartbeat(&self) -> Result<(), PresenceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_people_across_clones() {
        let presence = MemoryPresence::default();
        let other = presence.clone();
        let room = RoomName::parse("general").unwrap();
        let alice = Username::parse("alice").unwrap();
        assert_eq!(
            presence.connect(&room, &alice).await.unwrap(),
            PresenceChange::Joined { online_count: 1 }
        );
        assert_eq!(
            other.connect(&room, &alice).await.unwrap(),
            PresenceChange::Unchanged { online_count: 1 }
        );
        assert_eq!(
            other.online(&room, None, 10).await.unwrap().users,
            vec![alice.clone()]
        );
        presence.disconnect(&room, &alice).await.unwrap();
        assert_eq!(
            other.disconnect(&room, &alice).await.unwrap(),
            PresenceChange::Left { online_count: 0 }
        );
        assert!(presence.occupied_rooms(None, 10).await.unwrap().is_empty());
    }
}
