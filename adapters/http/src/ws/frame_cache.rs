//! Each room event's client frame, encoded once and shared by every connection of the room.
//!
//! The broadcaster hands the same `Arc<EventEnvelope>` to every subscriber, so the envelope's
//! address identifies the event. The connections of one room share a small ring of the latest
//! frames keyed by that address: whichever connection meets an event first encodes it, the
//! others clone the `Arc<SharedFrame>`: the frame's bytes, header included, written as they are
//! to every receiver (and deflated once, for those that negotiated permessage-deflate). Each key is a `Weak`, which keeps its allocation from being
//! reused for another event while it is in the ring. The lock is held for a lookup (and the
//! one encode), never across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use banter_domain::{EventEnvelope, RoomEvent, RoomName};
use bytes::Bytes;

use super::codec;

/// A text frame built once and written as it is to many connections: the plain frame, and
/// its deflated twin made on first demand (only if some receiver negotiated compression).
#[derive(Debug)]
pub struct SharedFrame {
    plain: Bytes,
    payload_at: usize,
    deflated: OnceLock<Option<Bytes>>,
}

impl SharedFrame {
    pub fn text(json: &str) -> Self {
        let plain = codec::text(json);
        Self {
            payload_at: plain.len() - json.len(),
            plain,
            deflated: OnceLock::new(),
        }
    }

    /// The JSON the frame carries.
    pub fn payload(&self) -> &[u8] {
        self.plain.get(self.payload_at..).unwrap_or_default()
    }

    /// The bytes to write: deflated when the receiver negotiated it and compressing helps.
    pub fn bytes(&self, deflate: bool) -> &Bytes {
        if deflate
            && let Some(deflated) = self
                .deflated
                .get_or_init(|| codec::deflated_text(self.payload()))
        {
            return deflated;
        }
        &self.plain
    }
}

/// Frames kept per room. Connections of a room read the same events at slightly different
/// times (each writes a batch of up to 64 before it reads on), so the ring covers that spread.
const RECENT_FRAMES: usize = 64;

/// Rooms kept before forgotten ones are swept out of the map (the sweep then runs each time
/// the map has doubled, so opening rooms stays cheap however many there are).
const FIRST_SWEEP_AT: usize = 64;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The per-room frame rings of one server, each alive while a connection of its room is.
#[derive(Debug)]
pub struct FrameCaches {
    rooms: Mutex<Rooms>,
}

#[derive(Debug)]
struct Rooms {
    by_name: HashMap<RoomName, Weak<RoomFrames>>,
    sweep_at: usize,
}

impl Default for FrameCaches {
    fn default() -> Self {
        Self {
            rooms: Mutex::new(Rooms {
                by_name: HashMap::new(),
                sweep_at: FIRST_SWEEP_AT,
            }),
        }
    }
}

impl FrameCaches {
    /// The ring shared by the connections of `room`; a connection holds it while it is open.
    pub fn room(&self, room: &RoomName) -> Arc<RoomFrames> {
        let mut rooms = lock(&self.rooms);
        if let Some(frames) = rooms.by_name.get(room).and_then(Weak::upgrade) {
            return frames;
        }
        if rooms.by_name.len() >= rooms.sweep_at {
            rooms.by_name.retain(|_, frames| frames.strong_count() > 0);
            rooms.sweep_at = (rooms.by_name.len() * 2).max(FIRST_SWEEP_AT);
        }
        let frames = Arc::new(RoomFrames::default());
        rooms.by_name.insert(room.clone(), Arc::downgrade(&frames));
        frames
    }

    #[cfg(test)]
    fn rooms_held(&self) -> usize {
        lock(&self.rooms).by_name.len()
    }
}

/// The latest frames of one room, keyed by the identity of their envelope.
#[derive(Debug, Default)]
pub struct RoomFrames {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    slots: Vec<(Weak<EventEnvelope>, Arc<SharedFrame>)>,
    next: usize,
}

impl Ring {
    fn find(&self, envelope: &Arc<EventEnvelope>) -> Option<Arc<SharedFrame>> {
        self.slots
            .iter()
            .find(|(key, _)| std::ptr::eq(key.as_ptr(), Arc::as_ptr(envelope)))
            .map(|(_, frame)| Arc::clone(frame))
    }

    fn insert(&mut self, envelope: &Arc<EventEnvelope>, frame: Arc<SharedFrame>) {
        let entry = (Arc::downgrade(envelope), frame);
        if self.slots.len() < RECENT_FRAMES {
            self.slots.push(entry);
        } else if let Some(slot) = self.slots.get_mut(self.next) {
            *slot = entry;
        }
        self.next = (self.next + 1) % RECENT_FRAMES;
    }
}

impl RoomFrames {
    /// The event's client frame: the one already encoded for this envelope, or `encode`'s.
    pub fn frame(
        &self,
        envelope: &Arc<EventEnvelope>,
        encode: impl FnOnce(&RoomEvent) -> String,
    ) -> Arc<SharedFrame> {
        let mut ring = lock(&self.ring);
        if let Some(frame) = ring.find(envelope) {
            return frame;
        }
        // Encoded under the lock: the connections that wait for it would encode the same.
        let frame = Arc::new(SharedFrame::text(&encode(envelope.event())));
        // An envelope nobody else holds (history read back for this connection alone) will
        // not be asked for again; keeping it would only push out frames others still need.
        if Arc::strong_count(envelope) > 1 {
            ring.insert(envelope, Arc::clone(&frame));
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banter_domain::Username;

    fn typing(name: &str) -> Arc<EventEnvelope> {
        EventEnvelope::new(RoomEvent::Typing {
            room: RoomName::parse("general").unwrap(),
            username: Username::parse(name).unwrap(),
            is_typing: true,
        })
    }

    fn general() -> RoomName {
        RoomName::parse("general").unwrap()
    }

    #[test]
    fn a_shared_event_is_encoded_once_for_every_connection_of_the_room() {
        let caches = FrameCaches::default();
        let (first_connection, second_connection) =
            (caches.room(&general()), caches.room(&general()));
        let event = typing("bob");
        let received = Arc::clone(&event); // the broadcaster's copy for the other receiver
        let mut encodes = 0;
        let mut encode = |_: &RoomEvent| {
            encodes += 1;
            format!("frame {encodes}")
        };
        let first = first_connection.frame(&event, &mut encode);
        let second = second_connection.frame(&received, &mut encode);
        assert_eq!(encodes, 1);
        assert_eq!(first.payload(), b"frame 1");
        assert!(Arc::ptr_eq(&first, &second), "the bytes are shared");
    }

    #[test]
    fn a_shared_frame_is_deflated_once_and_only_when_it_helps() {
        let json = format!(
            r#"{{"type":"chat_message","message":{{"content":"{}"}}}}"#,
            "hi ".repeat(40)
        );
        let frame = SharedFrame::text(&json);
        assert_eq!(frame.payload(), json.as_bytes());
        assert_eq!(frame.bytes(false)[0], 0x81);
        let deflated = frame.bytes(true);
        assert_eq!(deflated[0], 0xC1, "RSV1 marks a compressed message");
        assert!(deflated.len() < json.len() / 2);
        assert!(std::ptr::eq(deflated, frame.bytes(true)), "compressed once");
        let short = SharedFrame::text(r#"{"type":"pong"}"#);
        assert_eq!(short.bytes(true), short.bytes(false));
    }

    #[test]
    fn events_are_told_apart_by_identity_not_by_content() {
        let frames = FrameCaches::default().room(&general());
        let (one, other) = (typing("bob"), typing("bob"));
        let _held = (Arc::clone(&one), Arc::clone(&other));
        let first = frames.frame(&one, |_| "one".to_owned());
        let second = frames.frame(&other, |_| "other".to_owned());
        assert_eq!(
            (first.payload(), second.payload()),
            (&b"one"[..], &b"other"[..])
        );
    }

    #[test]
    fn an_event_held_by_one_connection_only_is_not_kept() {
        let frames = FrameCaches::default().room(&general());
        let alone = typing("bob");
        frames.frame(&alone, |_| "first".to_owned());
        assert_eq!(
            frames.frame(&alone, |_| "again".to_owned()).payload(),
            b"again"
        );
    }

    #[test]
    fn the_ring_keeps_the_latest_frames() {
        let frames = FrameCaches::default().room(&general());
        let events: Vec<_> = (0..=RECENT_FRAMES).map(|_| typing("bob")).collect();
        let _held: Vec<_> = events.iter().map(Arc::clone).collect();
        for (i, event) in events.iter().enumerate() {
            frames.frame(event, |_| i.to_string());
        }
        let last = RECENT_FRAMES.to_string();
        assert_eq!(
            frames
                .frame(&events[RECENT_FRAMES], |_| "new".into())
                .payload(),
            last.as_bytes()
        );
        assert_eq!(frames.frame(&events[1], |_| "new".into()).payload(), b"1");
        assert_eq!(
            frames.frame(&events[0], |_| "new".into()).payload(),
            b"new",
            "the oldest was pushed out"
        );
    }

    #[test]
    fn rooms_are_separate_and_forgotten_when_no_connection_holds_them() {
        let caches = FrameCaches::default();
        let general_frames = caches.room(&general());
        let other = caches.room(&RoomName::parse("other").unwrap());
        assert!(!Arc::ptr_eq(&general_frames, &other));
        drop((general_frames, other));
        for i in 0..FIRST_SWEEP_AT {
            drop(caches.room(&RoomName::parse(&format!("room-{i}")).unwrap()));
        }
        // 66 rooms were opened and closed; without the sweep all would still be held.
        assert!(
            caches.rooms_held() < FIRST_SWEEP_AT,
            "closed rooms are swept, {} held",
            caches.rooms_held()
        );
    }
}
