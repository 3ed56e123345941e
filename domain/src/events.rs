//! What happens in a room, as told to everyone in it.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::{Message, RoomName, Username};

/// Someone's first connection to a room opened, or their last one closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// An event of one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoomEvent {
    /// A message was committed.
    MessagePosted(Message),
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
}

impl RoomEvent {
    pub fn room(&self) -> &RoomName {
        match self {
            RoomEvent::MessagePosted(message) => &message.room,
            RoomEvent::Presence { room, .. } | RoomEvent::Typing { room, .. } => room,
        }
    }
}

/// An event as it travels to the many connections of a room: the event plus its client frame,
/// encoded once by whichever connection gets to it first and shared by all the others.
#[derive(Debug)]
pub struct EventEnvelope {
    event: RoomEvent,
    client_frame: OnceLock<Arc<str>>,
}

impl EventEnvelope {
    pub fn new(event: RoomEvent) -> Arc<Self> {
        Arc::new(Self {
            event,
            client_frame: OnceLock::new(),
        })
    }

    pub fn event(&self) -> &RoomEvent {
        &self.event
    }

    /// The event's client frame, encoding it with `encode` on first use only.
    pub fn client_frame(&self, encode: impl FnOnce(&RoomEvent) -> String) -> Arc<str> {
        Arc::clone(
            self.client_frame
                .get_or_init(|| Arc::from(encode(&self.event))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frame_is_encoded_once() {
        let envelope = EventEnvelope::new(RoomEvent::Typing {
            room: RoomName::parse("g").unwrap(),
            username: Username::parse("bob").unwrap(),
            is_typing: true,
        });
        let mut calls = 0;
        let first = envelope.client_frame(|_| {
            calls += 1;
            "frame".to_owned()
        });
        let second = envelope.client_frame(|_| {
            calls += 1;
            "other".to_owned()
        });
        assert_eq!(calls, 1);
        assert_eq!(&*first, "frame");
        assert!(
            Arc::ptr_eq(&first, &second),
            "the bytes are shared, not copied"
        );
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = RoomEvent::Presence {
            room: RoomName::parse("g").unwrap(),
            event: PresenceEvent::Join,
            username: Username::parse("名前").unwrap(),
            online_count: 3,
        };
        let json = serde_json::to_string(&event).unwrap();
        let back: RoomEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.room().as_str(), "g");
    }
}
