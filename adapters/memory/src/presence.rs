//! Presence kept in this process.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use banter_domain::ports::{PresenceError, PresenceRegistry};
use banter_domain::{OccupiedRoom, OnlinePage, PresenceBook, PresenceChange, RoomName, Username};

/// A [`PresenceBook`] behind a mutex: every operation is a few map lookups.
#[derive(Debug, Clone, Default)]
pub struct MemoryPresence {
    book: Arc<Mutex<PresenceBook>>,
}

impl MemoryPresence {
    fn book(&self) -> MutexGuard<'_, PresenceBook> {
        // Every update completes before the lock is released; poisoning cannot leave it torn.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PresenceRegistry for MemoryPresence {
    async fn connect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        Ok(self.book().connect(room, user))
    }

    async fn disconnect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        Ok(self.book().disconnect(room, user))
    }

    async fn online(
        &self,
        room: &RoomName,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<OnlinePage, PresenceError> {
        Ok(self.book().online(room, after, limit))
    }

    async fn occupied_rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<Vec<OccupiedRoom>, PresenceError> {
        Ok(self.book().occupied_rooms(after, limit))
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
