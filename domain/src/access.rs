//! Private rooms: who may see a room, and who may change its members.
//!
//! Rooms are public unless created private. For anyone who is not a member, a private room
//! does not exist: every refusal that would tell them otherwise is [`MembershipRefusal::NotFound`].

use crate::Username;

/// Who may read and write a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAccess {
    Public,
    /// Only `members` (sorted in code-point order) may see it; `creator` may remove anyone.
    Private {
        creator: Username,
        members: Vec<Username>,
    },
}

/// Why a membership change or read was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MembershipRefusal {
    /// A public room (it has no members), or a private one the actor cannot see, or a target
    /// who is not a member.
    #[error("no such room or member")]
    NotFound,
    /// A member who is not the creator removing someone else.
    #[error("only the room's creator may remove another member")]
    Forbidden,
}

impl RoomAccess {
    /// Whether `viewer` may see the room at all (`None`: an anonymous viewer, who sees public
    /// rooms only).
    pub fn admits(&self, viewer: Option<&Username>) -> bool {
        match self {
            RoomAccess::Public => true,
            RoomAccess::Private { members, .. } => viewer.is_some_and(|v| members.contains(v)),
        }
    }

    pub fn is_private(&self) -> bool {
        matches!(self, RoomAccess::Private { .. })
    }

    /// The members `viewer` may list: a private room's, to its members.
    ///
    /// # Errors
    /// [`MembershipRefusal::NotFound`] for a public room or a viewer who is not a member.
    pub fn members_for(&self, viewer: &Username) -> Result<&[Username], MembershipRefusal> {
        match self {
            RoomAccess::Private { members, .. } if members.contains(viewer) => Ok(members),
            _ => Err(MembershipRefusal::NotFound),
        }
    }

    /// Whether `actor` may add someone: any member may.
    ///
    /// # Errors
    /// [`MembershipRefusal::NotFound`] for a public room or an actor who is not a member.
    pub fn may_add(&self, actor: &Username) -> Result<(), MembershipRefusal> {
        self.members_for(actor).map(|_| ())
    }

    /// Whether `actor` may remove `target`: a member removes themself, the creator anyone.
    ///
    /// # Errors
    /// [`MembershipRefusal::NotFound`] for a public room, an actor or a target who is not a
    /// member; [`MembershipRefusal::Forbidden`] for a member who is not the creator removing
    /// someone else.
    pub fn may_remove(&self, actor: &Username, target: &Username) -> Result<(), MembershipRefusal> {
        let members = self.members_for(actor)?;
        if !members.contains(target) {
            return Err(MembershipRefusal::NotFound);
        }
        match self {
            RoomAccess::Private { creator, .. } if actor == target || actor == creator => Ok(()),
            _ => Err(MembershipRefusal::Forbidden),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn team() -> RoomAccess {
        RoomAccess::Private {
            creator: user("alice"),
            members: vec![user("alice"), user("bob"), user("carol")],
        }
    }

    #[test]
    fn a_private_room_is_seen_by_its_members_only() {
        assert!(RoomAccess::Public.admits(None));
        assert!(RoomAccess::Public.admits(Some(&user("anyone"))));
        assert!(team().admits(Some(&user("bob"))));
        assert!(!team().admits(Some(&user("dave"))));
        assert!(!team().admits(None));
        assert_eq!(team().members_for(&user("bob")).unwrap().len(), 3);
        assert_eq!(
            team().members_for(&user("dave")),
            Err(MembershipRefusal::NotFound)
        );
        assert_eq!(
            RoomAccess::Public.members_for(&user("bob")),
            Err(MembershipRefusal::NotFound),
            "a public room has no members"
        );
    }

    #[test]
    fn members_add_anyone_remove_themselves_and_the_creator_removes_anyone() {
        assert_eq!(team().may_add(&user("carol")), Ok(()));
        assert_eq!(
            team().may_add(&user("dave")),
            Err(MembershipRefusal::NotFound)
        );
        assert_eq!(
            RoomAccess::Public.may_add(&user("bob")),
            Err(MembershipRefusal::NotFound)
        );
        assert_eq!(team().may_remove(&user("bob"), &user("bob")), Ok(()));
        assert_eq!(team().may_remove(&user("alice"), &user("bob")), Ok(()));
        assert_eq!(team().may_remove(&user("alice"), &user("alice")), Ok(()));
        assert_eq!(
            team().may_remove(&user("bob"), &user("carol")),
            Err(MembershipRefusal::Forbidden)
        );
        assert_eq!(
            team().may_remove(&user("bob"), &user("alice")),
            Err(MembershipRefusal::Forbidden)
        );
        assert_eq!(
            team().may_remove(&user("alice"), &user("dave")),
            Err(MembershipRefusal::NotFound),
            "not a member"
        );
        assert_eq!(
            team().may_remove(&user("dave"), &user("dave")),
            Err(MembershipRefusal::NotFound)
        );
    }
}
