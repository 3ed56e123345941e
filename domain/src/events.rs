//! What happens in a room, as told to everyone in it.

use std::sync::Arc;

use crate::{ConnectionId, Message, Rev, RoomName, Seq, Username};

/// Someone's first connection to a room opened, or their last one closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// An event of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A message was committed.
    MessagePosted(Message),
    /// A message was edited or deleted; the change took `rev` and `message` is its new state.
    MessageUpdated { rev: Rev, message: Message },
    /// A user joined or left; `online_count` is the room's count right after.
    Presence {
        room: RoomName,
        event: PresenceEvent,
        username: Username,
        online_count: u64,
    },
    /// A user started (or refreshed) or stopped typing.
    Typing {
        room: RoomName,
        username: Username,
        is_typing: bool,
    },
    /// `username` read `room` up to `seq` (the stored position, after it moved). Only that
    /// user's connections are told, except `origin`, the one that moved it (`None` when it
    /// was moved over REST).
    Read {
        room: RoomName,
        username: Username,
        seq: Seq,
        origin: Option<ConnectionId>,
    },
    /// `username` is no longer a member of the private room: their connections to it end.
    MemberRemoved { room: RoomName, username: Username },
    /// The room was made private by `creator`, its only member: everyone else's connections
    /// to it end.
    MadePrivate { room: RoomName, creator: Username },
}

impl RoomEvent {
    pub fn room(&self) -> &RoomName {
        match self {
            RoomEvent::MessagePosted(message) | RoomEvent::MessageUpdated { message, .. } => {
                &message.room
            }
            RoomEvent::Presence { room, .. }
            | RoomEvent::Typing { room, .. }
            | RoomEvent::Read { room, .. }
            | RoomEvent::MemberRemoved { room, .. }
            | RoomEvent::MadePrivate { room, .. } => room,
        }
    }
}

/// An event as it travels to the many connections of a room: allocated once and shared, not
/// copied, by every receiver. Being one allocation per event also gives it an identity, which
/// is how an adapter can recognise an event it has already encoded for its transport.
#[derive(Debug)]
pub struct EventEnvelope {
    event: RoomEvent,
}

impl EventEnvelope {
    pub fn new(event: RoomEvent) -> Arc<Self> {
        Arc::new(Self { event })
    }

    pub fn event(&self) -> &RoomEvent {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_names_its_room() {
        let event = RoomEvent::Presence {
            room: RoomName::parse("g").unwrap(),
            event: PresenceEvent::Join,
            username: Username::parse("名前").unwrap(),
            online_count: 3,
        };
        assert_eq!(event.room().as_str(), "g");
    }
}
