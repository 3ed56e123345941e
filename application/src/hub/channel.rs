//! A room hub's channel to its connections: it holds no slots until events need them.
//!
//! tokio's broadcast channel allocates all of its slots up front (1,024 × 32 B per room) and
//! keeps the last 1,024 events alive after they were read. This one (async-broadcast) starts
//! with room for a few events, doubles when a receiver falls that far behind, and stops
//! growing at the bound, where the oldest event is dropped and the receiver that missed it is
//! told it lagged. An event leaves the queue as soon as every receiver has it, so a quiet room
//! holds no event.

use std::sync::Arc;

use async_broadcast::{InactiveReceiver, Receiver, Sender, TrySendError};
use banter_domain::EventEnvelope;

/// Slots a room starts with: most rooms are read as fast as they are written.
const FIRST_CAPACITY: usize = 8;

#[derive(Debug)]
pub(crate) struct RoomChannel {
    sender: Sender<Arc<EventEnvelope>>,
    /// Keeps the channel open while no connection is attached.
    _open: InactiveReceiver<Arc<EventEnvelope>>,
    bound: usize,
}

impl RoomChannel {
    /// A channel whose receivers may fall `bound` events behind.
    pub fn new(bound: usize) -> Self {
        let bound = bound.max(1);
        let (mut sender, receiver) = async_broadcast::broadcast(FIRST_CAPACITY.min(bound));
        sender.set_overflow(sender.capacity() == bound);
        Self {
            sender,
            _open: receiver.deactivate(),
            bound,
        }
    }

    /// Sends to every attached receiver; with none attached the event goes nowhere.
    pub fn send(&mut self, event: Arc<EventEnvelope>) {
        if let Err(TrySendError::Full(event)) = self.sender.try_broadcast(event) {
            let capacity = self.sender.capacity().saturating_mul(2).min(self.bound);
            self.sender.set_capacity(capacity);
            // At the bound, the oldest event makes room and its laggard hears of it.
            self.sender.set_overflow(capacity == self.bound);
            // Full again only if another sender filled the new room first: dropped like an
            // overflow.
            let _ = self.sender.try_broadcast(event);
        }
    }

    /// A receiver of every event sent from now on.
    pub fn subscribe(&self) -> Receiver<Arc<EventEnvelope>> {
        self.sender.new_receiver()
    }

    pub fn receiver_count(&self) -> usize {
        self.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_broadcast::TryRecvError;
    use banter_domain::{RoomEvent, RoomName, Username};

    fn event(n: usize) -> Arc<EventEnvelope> {
        EventEnvelope::new(RoomEvent::Typing {
            room: RoomName::parse("r").expect("valid room"),
            username: Username::parse(&format!("u{n}")).expect("valid username"),
            is_typing: true,
        })
    }

    fn name(envelope: &EventEnvelope) -> String {
        match envelope.event() {
            RoomEvent::Typing { username, .. } => username.to_string(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn grows_up_to_its_bound_then_drops_the_oldest_for_the_laggard_only() {
        let mut channel = RoomChannel::new(20);
        let mut slow = channel.subscribe();
        let mut fast = channel.subscribe();
        for n in 0..25 {
            channel.send(event(n));
            let got = fast.try_recv().expect("the fast receiver keeps up");
            assert_eq!(name(&got), format!("u{n}"));
        }
        assert_eq!(channel.sender.capacity(), 20, "8 → 16 → 20, the bound");
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Overflowed(5))));
        let rest: Vec<String> = std::iter::from_fn(|| slow.try_recv().ok())
            .map(|e| name(&e))
            .collect();
        let expected: Vec<String> = (5..25).map(|n| format!("u{n}")).collect();
        assert_eq!(rest, expected);
    }

    #[test]
    fn stays_open_without_receivers_and_holds_nothing_sent_to_nobody() {
        let mut channel = RoomChannel::new(1024);
        drop(channel.subscribe());
        channel.send(event(1));
        assert_eq!(channel.sender.len(), 0);
        let mut late = channel.subscribe();
        channel.send(event(2));
        assert_eq!(name(&late.try_recv().expect("open channel")), "u2");
        assert_eq!(channel.sender.len(), 0, "read by every receiver, so gone");
        assert_eq!(channel.sender.capacity(), FIRST_CAPACITY);
    }
}
