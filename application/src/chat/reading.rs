//! Read positions: a user tells how far they read a room; their other connections are told,
//! and their rooms list with unread counts.

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{ConnectionId, ReadMark, RoomEvent, RoomName, Seq, UserRoom, Username};

use super::Chat;
use super::types::ReadError;

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    /// Moves `user`'s read position in `room` to `seq` (clamped to the room's last seq, never
    /// backwards) and, when it moved, tells every connection of the user to the room.
    ///
    /// # Errors
    /// [`ReadError::Store`] when the position could not be stored.
    pub async fn mark_read(
        &self,
        room: &RoomName,
        user: &Username,
        seq: Seq,
    ) -> Result<ReadMark, ReadError> {
        self.mark_read_from(room, user, seq, None).await
    }

    /// As [`Chat::mark_read`], from `origin`, which is not told.
    pub(super) async fn mark_read_from(
        &self,
        room: &RoomName,
        user: &Username,
        seq: Seq,
        origin: Option<ConnectionId>,
    ) -> Result<ReadMark, ReadError> {
        let mark = self.inner.store.mark_read(room, user, seq).await?;
        if mark.advanced {
            self.publish(RoomEvent::Read {
                room: room.clone(),
                username: user.clone(),
                seq: mark.read_seq,
                origin,
            })
            .await;
        }
        Ok(mark)
    }

    /// Every room `user` posted in or has a read position in, newest activity first, with how
    /// far they read and how much is unread.
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    /// A private room is listed only while the user is a member.
    pub async fn user_rooms(&self, user: &Username) -> Result<Vec<UserRoom>, ReadError> {
        let mut rooms = self.inner.store.user_rooms(user).await?;
        if rooms.iter().any(|r| r.private) {
            let member_of = self.inner.store.member_rooms(user).await?;
            rooms.retain(|r| !r.private || member_of.contains(&r.room));
        }
        Ok(rooms)
    }
}
