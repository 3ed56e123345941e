//! Private rooms: creating one, its members, and the one rule every read and write of a room
//! goes through — [`Chat::readable`]: for anyone who is not a member, a private room does not
//! exist.

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{MembershipRefusal, RoomAccess, RoomEvent, RoomName, Username};

use super::Chat;
use super::types::{MembershipError, ReadError};

impl From<MembershipRefusal> for MembershipError {
    fn from(refusal: MembershipRefusal) -> Self {
        match refusal {
            MembershipRefusal::NotFound => MembershipError::NotFound,
            MembershipRefusal::Forbidden => MembershipError::Forbidden,
        }
    }
}

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    /// Whether `room` is public or private (with its creator and members).
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    pub async fn room_access(&self, room: &RoomName) -> Result<RoomAccess, ReadError> {
        Ok(self.inner.store.room_access(room).await?)
    }

    /// **The access rule.** Whether `viewer` may see `room` at all: every public room, and a
    /// private one only when a member (`None`, an anonymous viewer under auth `none`, sees
    /// public rooms only). Every edge answers `false` exactly as for a room that does not
    /// exist (404 `not_found`); joins check it themselves ([`super::JoinError::NotFound`]).
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    pub async fn readable(
        &self,
        room: &RoomName,
        viewer: Option<&Username>,
    ) -> Result<bool, ReadError> {
        Ok(self.room_access(room).await?.admits(viewer))
    }

    /// The private rooms `user` is a member of, sorted: with [`Chat::readable`], what a read
    /// across rooms needs (every public room, and these).
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    pub async fn member_rooms(&self, user: &Username) -> Result<Vec<RoomName>, ReadError> {
        Ok(self.inner.store.member_rooms(user).await?)
    }

    /// Creates `room` as a private room of `creator`, its first member. Connections already
    /// open to the room (it had no messages, but people may have been in it) end, but the
    /// creator's.
    ///
    /// # Errors
    /// [`MembershipError::Conflict`] when the room has messages or was created before;
    /// [`MembershipError::Store`] when the store fails.
    pub async fn create_private_room(
        &self,
        room: &RoomName,
        creator: &Username,
    ) -> Result<Vec<Username>, MembershipError> {
        if !self.inner.store.create_private_room(room, creator).await? {
            return Err(MembershipError::Conflict);
        }
        tracing::info!(%room, %creator, "private room created");
        self.publish(RoomEvent::MadePrivate {
            room: room.clone(),
            creator: creator.clone(),
        })
        .await;
        Ok(vec![creator.clone()])
    }

    /// The members of the private `room`, sorted, as `viewer` (a member) sees them.
    ///
    /// # Errors
    /// [`MembershipError::NotFound`] for a public room or a viewer who is not a member.
    pub async fn members(
        &self,
        room: &RoomName,
        viewer: &Username,
    ) -> Result<Vec<Username>, MembershipError> {
        let access = self.inner.store.room_access(room).await?;
        Ok(access.members_for(viewer)?.to_vec())
    }

    /// `actor`, a member, adds `target` to the private `room`; adding a member again changes
    /// nothing. Answers the members after the change.
    ///
    /// # Errors
    /// [`MembershipError::NotFound`] for a public room or an actor who is not a member.
    pub async fn add_member(
        &self,
        room: &RoomName,
        actor: &Username,
        target: &Username,
    ) -> Result<Vec<Username>, MembershipError> {
        let access = self.inner.store.room_access(room).await?;
        access.may_add(actor)?;
        self.inner.store.set_member(room, target, true).await?;
        self.members(room, actor).await
    }

    /// `actor` removes `target` from the private `room` (themself, or anyone when the
    /// creator). The target's open connections to the room, on every node, are ended. Answers
    /// the members after the change (also to an actor who removed themself).
    ///
    /// # Errors
    /// [`MembershipError::NotFound`] for a public room, an actor or a target who is not a
    /// member; [`MembershipError::Forbidden`] for a member who is not the creator removing
    /// someone else.
    pub async fn remove_member(
        &self,
        room: &RoomName,
        actor: &Username,
        target: &Username,
    ) -> Result<Vec<Username>, MembershipError> {
        let access = self.inner.store.room_access(room).await?;
        access.may_remove(actor, target)?;
        self.inner.store.set_member(room, target, false).await?;
        tracing::info!(%room, %actor, %target, "member removed");
        self.publish(RoomEvent::MemberRemoved {
            room: room.clone(),
            username: target.clone(),
        })
        .await;
        let RoomAccess::Private { members, .. } = self.inner.store.room_access(room).await? else {
            return Ok(Vec::new());
        };
        Ok(members)
    }
}
