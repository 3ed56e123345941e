//! Fan-out inside one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_broadcast::{InactiveReceiver, Receiver, Sender, TrySendError};
use banter_domain::ports::{
    BroadcastError, EventBroadcaster, EventSubscription, SubscriptionError,
};
use banter_domain::{EventEnvelope, RoomEvent, RoomName};

type Rooms = Arc<Mutex<HashMap<RoomName, Arc<RoomChannel>>>>;

/// Slots a room's channel starts with; it doubles when a subscriber falls that far behind.
const FIRST_CAPACITY: usize = 8;

/// One room's channel (async-broadcast): it starts with a few slots and grows to the bound
/// only when a subscriber falls behind, and an event leaves it once every subscriber has it,
/// so a quiet room holds no slots and no events (tokio's broadcast channel allocates every
/// slot up front and keeps the last events alive).
#[derive(Debug)]
struct RoomChannel {
    sender: Sender<Arc<EventEnvelope>>,
    /// Keeps the channel open between one subscriber leaving and the map forgetting it.
    _open: InactiveReceiver<Arc<EventEnvelope>>,
    bound: usize,
}

impl RoomChannel {
    fn new(bound: usize) -> Self {
        let (mut sender, receiver) = async_broadcast::broadcast(FIRST_CAPACITY.min(bound));
        sender.set_overflow(sender.capacity() == bound);
        Self {
            sender,
            _open: receiver.deactivate(),
            bound,
        }
    }

    fn send(&self, event: Arc<EventEnvelope>) {
        if let Err(TrySendError::Full(event)) = self.sender.try_broadcast(event) {
            // The capacity is the channel's, shared by every clone of the sender.
            let mut sender = self.sender.clone();
            let capacity = sender.capacity().saturating_mul(2).min(self.bound);
            sender.set_capacity(capacity);
            // At the bound, the oldest event makes room and its laggard hears of it.
            sender.set_overflow(capacity == self.bound);
            // Full again only if a concurrent publish took the new room: dropped like an
            // overflow.
            let _ = sender.try_broadcast(event);
        }
    }
}

/// One channel per room with subscribers. An event is wrapped once in an [`EventEnvelope`] and
/// the same `Arc` reaches every subscriber: its identity lets a transport encode the event
/// once for all of them. Each subscriber may fall at most `capacity` events behind; past that
/// it gets [`SubscriptionError::Lagged`] and the others are not slowed down.
#[derive(Debug, Clone)]
pub struct MemoryBroadcaster {
    rooms: Rooms,
    capacity: usize,
}

impl MemoryBroadcaster {
    /// The per-subscriber queue bound used by `banter serve`.
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn new(capacity: usize) -> Self {
        Self {
            rooms: Rooms::default(),
            capacity: capacity.max(1),
        }
    }

    /// Rooms that currently have a channel (that is, subscribers).
    pub fn active_rooms(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Whether anyone in this process is subscribed to `room`.
    pub fn has_subscribers(&self, room: &RoomName) -> bool {
        lock(&self.rooms)
            .get(room)
            .is_some_and(|channel| channel.sender.receiver_count() > 0)
    }

    /// Ends every subscription: each gets what was already queued for it, then
    /// [`SubscriptionError::Closed`]. Later subscriptions start afresh. For a broker that lost
    /// its upstream: subscribers must start again from the store.
    pub fn close_all(&self) {
        lock(&self.rooms).clear();
    }

    /// Ends every subscription to `room`, as [`close_all`](Self::close_all) does for all rooms:
    /// for a broker that lost that one room's upstream.
    pub fn close_room(&self, room: &RoomName) {
        lock(&self.rooms).remove(room);
    }
}

impl Default for MemoryBroadcaster {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

fn lock(rooms: &Rooms) -> MutexGuard<'_, HashMap<RoomName, Arc<RoomChannel>>> {
    // Map operations complete under the lock; a poisoned lock still holds a consistent map.
    rooms.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A subscriber's end of a room channel. Dropping the last one removes the room's channel.
#[derive(Debug)]
pub struct MemorySubscription {
    receiver: Option<Receiver<Arc<EventEnvelope>>>,
    rooms: Rooms,
    room: RoomName,
}

impl EventSubscription for MemorySubscription {
    async fn next(&mut self) -> Result<Arc<EventEnvelope>, SubscriptionError> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Err(SubscriptionError::Closed);
        };
        // Receiver::recv is cancel-safe, as the port requires: an event is taken only when
        // the future completes.
        match receiver.recv_direct().await {
            Ok(envelope) => Ok(envelope),
            Err(async_broadcast::RecvError::Overflowed(missed)) => {
                Err(SubscriptionError::Lagged { missed })
            }
            Err(async_broadcast::RecvError::Closed) => Err(SubscriptionError::Closed),
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut rooms = lock(&self.rooms);
        if rooms
            .get(&self.room)
            .is_some_and(|channel| channel.sender.receiver_count() == 0)
        {
            rooms.remove(&self.room);
        }
    }
}

impl EventBroadcaster for MemoryBroadcaster {
    type Subscription = MemorySubscription;

    async fn subscribe(&self, room: &RoomName) -> Result<MemorySubscription, BroadcastError> {
        let receiver = lock(&self.rooms)
            .entry(room.clone())
            .or_insert_with(|| Arc::new(RoomChannel::new(self.capacity)))
            .sender
            .new_receiver();
        Ok(MemorySubscription {
            receiver: Some(receiver),
            rooms: Arc::clone(&self.rooms),
            room: room.clone(),
        })
    }

    async fn publish(&self, event: RoomEvent) -> Result<(), BroadcastError> {
        let started = std::time::Instant::now();
        let channel = lock(&self.rooms).get(event.room()).cloned();
        if let Some(channel) = channel {
            channel.send(EventEnvelope::new(event));
        }
        metrics::histogram!("banter_broadcast_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn check(&self) -> Result<(), BroadcastError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banter_domain::Username;

    fn typing(room: &str, n: usize) -> RoomEvent {
        RoomEvent::Typing {
            room: RoomName::parse(room).unwrap(),
            username: Username::parse(&format!("user{n}")).unwrap(),
            is_typing: true,
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_the_same_shared_envelope() {
        let broadcaster = MemoryBroadcaster::new(8);
        let room = RoomName::parse("general").unwrap();
        let mut a = broadcaster.subscribe(&room).await.unwrap();
        let mut b = broadcaster.subscribe(&room).await.unwrap();
        let mut other = broadcaster
            .subscribe(&RoomName::parse("other").unwrap())
            .await
            .unwrap();
        broadcaster.publish(typing("general", 1)).await.unwrap();
        let (ea, eb) = (a.next().await.unwrap(), b.next().await.unwrap());
        assert!(Arc::ptr_eq(&ea, &eb), "one envelope, shared");
        assert_eq!(ea.event(), &typing("general", 1));
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), other.next()).await;
        assert!(quiet.is_err(), "rooms are separate");
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_alone() {
        let broadcaster = MemoryBroadcaster::new(4);
        let room = RoomName::parse("general").unwrap();
        let mut slow = broadcaster.subscribe(&room).await.unwrap();
        let mut fast = broadcaster.subscribe(&room).await.unwrap();
        for n in 0..10 {
            broadcaster.publish(typing("general", n)).await.unwrap();
            fast.next().await.unwrap();
        }
        assert_eq!(
            slow.next().await.unwrap_err(),
            SubscriptionError::Lagged { missed: 6 }
        );
    }

    #[tokio::test]
    async fn the_last_subscriber_leaving_removes_the_room() {
        let broadcaster = MemoryBroadcaster::default();
        let room = RoomName::parse("general").unwrap();
        let first = broadcaster.subscribe(&room).await.unwrap();
        let second = broadcaster.subscribe(&room).await.unwrap();
        assert_eq!(broadcaster.active_rooms(), 1);
        drop(first);
        assert_eq!(broadcaster.active_rooms(), 1);
        drop(second);
        assert_eq!(broadcaster.active_rooms(), 0);
        // Publishing to a room nobody listens to is fine.
        broadcaster.publish(typing("general", 1)).await.unwrap();
    }

    #[tokio::test]
    async fn close_all_delivers_what_was_queued_then_closes() {
        let broadcaster = MemoryBroadcaster::default();
        let room = RoomName::parse("general").unwrap();
        let mut old = broadcaster.subscribe(&room).await.unwrap();
        broadcaster.publish(typing("general", 1)).await.unwrap();
        assert!(broadcaster.has_subscribers(&room));
        broadcaster.close_all();
        assert!(!broadcaster.has_subscribers(&room));
        assert_eq!(old.next().await.unwrap().event(), &typing("general", 1));
        assert_eq!(old.next().await.unwrap_err(), SubscriptionError::Closed);
        // A new subscription works as before.
        let mut new = broadcaster.subscribe(&room).await.unwrap();
        broadcaster.publish(typing("general", 2)).await.unwrap();
        assert_eq!(new.next().await.unwrap().event(), &typing("general", 2));
    }
}
