//! Events between nodes over Redis pub/sub.
//!
//! Every event, also one for this node's own subscribers, goes out with `PUBLISH` on the
//! room's channel and comes back through this node's one subscribe connection (the link),
//! whose dispatcher hands it to the in-memory fan-out. So all nodes see a room's events in the
//! one order Redis delivered them, and an event is encoded to a client frame once per node.
//!
//! The link subscribes to a room's channel when the node's first subscriber to it arrives, and
//! unsubscribes lazily, when an event arrives for a room nobody on the node follows any more.
//!
//! When the link breaks (its stream ends, a ping goes unanswered, a subscribe fails), events
//! may have been missed and nobody would notice until the next message of the room: every
//! subscription is closed instead (the connections close and the clients resume from the store
//! with `after`), the old link's dispatcher is stopped, and the next subscribe opens a new link.
//!
//! A message whose `PUBLISH` failed is already stored (the post was answered), but other nodes
//! would only learn of it from the room's next message. It is kept ([`Unsent`], bounded), and
//! messages published while any wait queue behind them, so a room's messages keep their order.
//! One background task publishes the queue, oldest first, when woken (by a new kept message or
//! a readiness check that reached Redis), or at least every 2 s. Receivers drop what they already
//! have by seq, so a `PUBLISH` that timed out but did arrive costs nothing twice. Typing
//! events are not kept: late, they would be wrong.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use banter_adapter_memory::{MemoryBroadcaster, MemorySubscription};
use banter_domain::ports::{
    BroadcastError, EventBroadcaster, EventSubscription, SubscriptionError,
};
use banter_domain::{EventEnvelope, RoomEvent, RoomName};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};

use crate::{RedisAdapterError, RedisConfig, room_channel, timed};

impl From<RedisAdapterError> for BroadcastError {
    fn from(e: RedisAdapterError) -> Self {
        BroadcastError::Unavailable {
            reason: e.to_string(),
        }
    }
}

/// How often an idle link is pinged, so a half-open connection is noticed.
const LINK_PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long the redelivery task waits before trying kept messages again when nobody woke it
/// (and after a failed try, so a Redis that is down is not hammered).
const REDELIVERY_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many bytes of unpublished messages are kept (a few thousand messages); the
/// oldest go first. Clients still find them in the store when they resume.
const UNSENT_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// A kept message: its place in line, channel and payload (shared, so a retry copies nothing).
type Kept = (u64, Arc<str>, Arc<[u8]>);

/// Messages not yet published, oldest first. A message leaves the queue only once Redis took
/// it, so an interrupted retry loses nothing.
struct Unsent {
    events: VecDeque<Kept>,
    bytes: usize,
    limit_bytes: usize,
    next_id: u64,
}

impl Unsent {
    fn new(limit_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            limit_bytes,
            next_id: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Queues a message at the back; drops the oldest ones beyond the limit.
    fn push_back(&mut self, channel: &str, payload: &[u8]) {
        self.bytes += payload.len();
        self.events
            .push_back((self.next_id, Arc::from(channel), Arc::from(payload)));
        self.next_id += 1;
        while self.bytes > self.limit_bytes {
            let Some((_, _, dropped)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= dropped.len();
            metrics::counter!("banter_redis_unsent_dropped_total").increment(1);
        }
        self.report();
    }

    /// The oldest message, left in place.
    fn front(&self) -> Option<Kept> {
        self.events.front().cloned()
    }

    /// Removes the message `id` once it was published, unless the limit dropped it meanwhile.
    fn remove_front(&mut self, id: u64) {
        if self
            .events
            .front()
            .is_some_and(|(front, _, _)| *front == id)
        {
            if let Some((_, _, payload)) = self.events.pop_front() {
                self.bytes -= payload.len();
            }
            self.report();
        }
    }

    fn report(&self) {
        metrics::gauge!("banter_redis_unsent_messages").set(self.events.len() as f64);
    }
}

/// The subscribe connection and the rooms it follows.
#[derive(Default)]
struct Link {
    sink: Option<PubSubSink>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
    subscribed: HashSet<RoomName>,
    /// Counts links, so a dispatcher of a broken link cannot tear down its successor.
    generation: u64,
}

impl Link {
    /// Drops the link: stops its dispatcher (which owns the connection) and ends every local
    /// subscription, since events may have been lost.
    fn break_down(&mut self, local: &MemoryBroadcaster, why: &str) {
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.abort();
        }
        self.sink = None;
        self.subscribed.clear();
        self.generation += 1;
        local.close_all();
        metrics::gauge!("banter_redis_link_up").set(0.0);
        metrics::counter!("banter_redis_link_losses_total").increment(1);
        tracing::warn!(
            why,
            "Redis pub/sub link lost; closed this node's subscriptions"
        );
    }
}

struct Shared {
    client: redis::Client,
    /// The command connection, for `PUBLISH` and `PING`.
    commands: ConnectionManager,
    namespace: String,
    command_timeout: Duration,
    local: MemoryBroadcaster,
    /// Held while the link or its subscriptions change, and while the dispatcher decides to
    /// unsubscribe, so that a room cannot be unsubscribed under a subscriber that just came.
    link: tokio::sync::Mutex<Link>,
    /// Messages waiting for Redis, published in order by the redelivery task alone.
    unsent: std::sync::Mutex<Unsent>,
    /// Wakes the redelivery task.
    wake_redelivery: Arc<tokio::sync::Notify>,
}

impl Shared {
    fn unsent(&self) -> std::sync::MutexGuard<'_, Unsent> {
        // Every method leaves the queue consistent, so a panic elsewhere cannot have left it
        // half-changed.
        self.unsent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn publish_now(&self, channel: &str, payload: &[u8]) -> Result<(), RedisAdapterError> {
        let mut commands = self.commands.clone();
        let _receivers: i64 = timed(
            self.command_timeout,
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut commands),
        )
        .await?;
        Ok(())
    }

    /// Queues a message for the redelivery task.
    fn keep(&self, channel: &str, payload: &[u8]) {
        self.unsent().push_back(channel, payload);
        self.wake_redelivery.notify_one();
    }

    /// Publishes the kept messages, oldest first, each removed only once Redis took it. Stops
    /// at the first failure, so nothing newer overtakes what is left.
    async fn redeliver(&self) -> Result<usize, RedisAdapterError> {
        let mut sent = 0;
        loop {
            let Some((id, channel, payload)) = self.unsent().front() else {
                return Ok(sent);
            };
            self.publish_now(&channel, &payload).await?;
            self.unsent().remove_front(id);
            sent += 1;
        }
    }
}

/// Publishes kept messages whenever woken (or every [`REDELIVERY_INTERVAL`]), until the
/// broadcaster is dropped. The only publisher of kept messages, so they go out once each and
/// in order; it is never cancelled mid-message, so none is lost on the way.
async fn redeliver_in_background(shared: Weak<Shared>, wake: Arc<tokio::sync::Notify>) {
    loop {
        // A lost wake-up costs at most one interval.
        let _ = tokio::time::timeout(REDELIVERY_INTERVAL, wake.notified()).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.redeliver().await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(sent, "published the messages kept while Redis was away"),
            Err(e) => {
                let waiting = shared.unsent().events.len();
                tracing::debug!(error = %e, waiting, "kept messages not published yet");
                drop(shared);
                tokio::time::sleep(REDELIVERY_INTERVAL).await;
            }
        }
    }
}

/// The [`EventBroadcaster`] for several nodes. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroadcaster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisBroadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroadcaster")
            .field("namespace", &self.shared.namespace)
            .finish_non_exhaustive()
    }
}

/// A subscriber's end: the in-memory subscription the link feeds.
#[derive(Debug)]
pub struct RedisSubscription {
    local: MemorySubscription,
}

impl EventSubscription for RedisSubscription {
    async fn next(&mut self) -> Result<Arc<EventEnvelope>, SubscriptionError> {
        self.local.next().await
    }
}

impl RedisBroadcaster {
    pub(crate) fn new(
        client: redis::Client,
        commands: ConnectionManager,
        config: &RedisConfig,
    ) -> Self {
        let shared = Arc::new(Shared {
            client,
            commands,
            namespace: config.namespace.clone(),
            command_timeout: config.command_timeout,
            local: MemoryBroadcaster::new(config.outbound_queue),
            link: tokio::sync::Mutex::new(Link::default()),
            unsent: std::sync::Mutex::new(Unsent::new(UNSENT_LIMIT_BYTES)),
            wake_redelivery: Arc::new(tokio::sync::Notify::new()),
        });
        tokio::spawn(redeliver_in_background(
            Arc::downgrade(&shared),
            Arc::clone(&shared.wake_redelivery),
        ));
        Self { shared }
    }

    /// Opens the subscribe connection now, so start-up fails early when Redis is missing.
    pub(crate) async fn connect_link(&self) -> Result<(), RedisAdapterError> {
        let mut link = self.shared.link.lock().await;
        self.ensure_link(&mut link).await.map(|_| ())
    }

    /// Gives kept messages (stored while Redis was away) up to `within` to be published, for a
    /// node that is stopping. Returns how many are still unpublished.
    pub async fn flush(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let waiting = self.shared.unsent().events.len();
            if waiting == 0 || tokio::time::Instant::now() >= deadline {
                return waiting;
            }
            // The background task stays the only publisher of kept messages (their order).
            self.shared.wake_redelivery.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the subscribe connection is up (for tests and diagnostics).
    pub async fn is_linked(&self) -> bool {
        self.shared.link.lock().await.sink.is_some()
    }

    async fn ensure_link<'a>(
        &self,
        link: &'a mut Link,
    ) -> Result<&'a mut PubSubSink, RedisAdapterError> {
        if link.sink.is_none() {
            let pubsub = timed(
                self.shared.command_timeout,
                self.shared.client.get_async_pubsub(),
            )
            .await?;
            let (sink, stream) = pubsub.split();
            link.generation += 1;
            link.subscribed.clear();
            link.dispatcher = Some(tokio::spawn(dispatch(
                Arc::clone(&self.shared),
                sink.clone(),
                stream,
                link.generation,
            )));
            link.sink = Some(sink);
            metrics::gauge!("banter_redis_link_up").set(1.0);
            tracing::info!("Redis pub/sub link up");
        }
        link.sink
            .as_mut()
            .ok_or_else(|| RedisAdapterError::Connect("the link closed".to_owned()))
    }
}

/// Hands events from the link to this node's subscribers until the link breaks.
async fn dispatch(
    shared: Arc<Shared>,
    mut pinger: PubSubSink,
    mut stream: PubSubStream,
    generation: u64,
) {
    let prefix = room_channel(&shared.namespace, "");
    let mut ping = tokio::time::interval(LINK_PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        let message = tokio::select! {
            message = stream.next() => match message {
                Some(message) => message,
                None => break "the connection closed",
            },
            _ = ping.tick() => {
                // A half-open connection never ends the stream; an unanswered ping does.
                let answered: Result<redis::Value, _> =
                    timed(shared.command_timeout, pinger.ping()).await;
                if answered.is_err() {
                    break "a ping went unanswered";
                }
                continue;
            }
        };
        let Some(room) = message
            .get_channel_name()
            .strip_prefix(&prefix)
            .and_then(|name| RoomName::parse(name).ok())
        else {
            continue;
        };
        if shared.local.has_subscribers(&room) {
            match serde_json::from_slice::<RoomEvent>(message.get_payload_bytes()) {
                Ok(event) if event.room() == &room => {
                    // The local fan-out cannot fail; it only measures.
                    let _ = shared.local.publish(event).await;
                }
                Ok(_) => tracing::warn!(%room, "event for another room on this room's channel"),
                Err(e) => tracing::warn!(%room, error = %e, "undecodable event skipped"),
            }
        } else {
            unsubscribe_if_unfollowed(&shared, &room, generation).await;
        }
    };
    let mut link = shared.link.lock().await;
    if link.generation == generation {
        // This task is the dispatcher being aborted; detach it so it finishes on its own.
        link.dispatcher = None;
        link.break_down(&shared.local, why);
    }
}

/// Stops following a room nobody on this node follows any more. Skipped when a subscriber is
/// busy with the link (it may be about to follow the room again); the room's next event
/// retries, so events of other rooms are never held up behind a slow subscribe.
async fn unsubscribe_if_unfollowed(shared: &Shared, room: &RoomName, generation: u64) {
    let Ok(mut link) = shared.link.try_lock() else {
        return;
    };
    if link.generation != generation || shared.local.has_subscribers(room) {
        return;
    }
    let Some(sink) = link.sink.as_mut() else {
        return;
    };
    let channel = room_channel(&shared.namespace, room.as_str());
    // Forgotten whatever the outcome: an UNSUBSCRIBE that timed out may still run later, so
    // the next subscriber must send SUBSCRIBE again (which is harmless if it did not).
    let outcome = timed(shared.command_timeout, sink.unsubscribe(&channel)).await;
    link.subscribed.remove(room);
    if let Err(e) = outcome {
        tracing::debug!(%room, error = %e, "unsubscribe failed");
    }
}

impl EventBroadcaster for RedisBroadcaster {
    type Subscription = RedisSubscription;

    async fn subscribe(&self, room: &RoomName) -> Result<RedisSubscription, BroadcastError> {
        // The local end first: from here on, the dispatcher sees a subscriber and keeps the
        // room's channel.
        let local = self.shared.local.subscribe(room).await?;
        let mut link = self.shared.link.lock().await;
        if !link.subscribed.contains(room) {
            let channel = room_channel(&self.shared.namespace, room.as_str());
            let timeout = self.shared.command_timeout;
            let sink = self.ensure_link(&mut link).await?;
            if let Err(e) = timed(timeout, sink.subscribe(&channel)).await {
                // A link that cannot subscribe is broken; the next subscriber opens a new one.
                link.break_down(&self.shared.local, "a subscribe failed");
                return Err(e.into());
            }
            link.subscribed.insert(room.clone());
        }
        Ok(RedisSubscription { local })
    }

    async fn publish(&self, event: RoomEvent) -> Result<(), BroadcastError> {
        let started = std::time::Instant::now();
        let payload = serde_json::to_vec(&event).map_err(|e| BroadcastError::Unavailable {
            reason: format!("cannot encode the event: {e}"),
        })?;
        let channel = room_channel(&self.shared.namespace, event.room().as_str());
        let is_message = matches!(event, RoomEvent::MessagePosted(_));
        // While messages wait, a new one queues behind them (it must not overtake an older
        // one of its room) and goes out with them; a typing event is dropped.
        let waiting = !self.shared.unsent().is_empty();
        if waiting {
            if !is_message {
                return Err(RedisAdapterError::Backlog.into());
            }
            self.shared.keep(&channel, &payload);
            return Ok(());
        }
        if let Err(e) = self.shared.publish_now(&channel, &payload).await {
            if is_message {
                tracing::warn!(error = %e, "a message's broadcast failed; kept to publish once Redis answers");
                self.shared.keep(&channel, &payload);
            }
            return Err(e.into());
        }
        metrics::histogram!("banter_broadcast_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn check(&self) -> Result<(), BroadcastError> {
        let mut commands = self.shared.commands.clone();
        let _: String = timed(
            self.shared.command_timeout,
            redis::cmd("PING").query_async(&mut commands),
        )
        .await?;
        if !self.is_linked().await {
            self.connect_link().await?;
        }
        // Redis answers: kept messages can go now (the task publishes them, not the probe).
        if !self.shared.unsent().is_empty() {
            self.shared.wake_redelivery.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Unsent;

    fn payloads(unsent: &Unsent) -> Vec<&[u8]> {
        unsent.events.iter().map(|(_, _, p)| &**p).collect()
    }

    #[test]
    fn a_message_leaves_the_queue_only_once_published() {
        let mut unsent = Unsent::new(100);
        unsent.push_back("c", b"one");
        unsent.push_back("c", b"two");
        let (id, _, first) = unsent.front().unwrap();
        assert_eq!(&*first, b"one");
        // A retry that fails (or is interrupted) leaves everything in place.
        assert_eq!(payloads(&unsent), [b"one".as_slice(), b"two"]);
        unsent.remove_front(id);
        assert_eq!(payloads(&unsent), [b"two".as_slice()]);
        assert_eq!(unsent.bytes, 3);
    }

    #[test]
    fn beyond_the_limit_the_oldest_are_dropped() {
        let mut unsent = Unsent::new(10);
        unsent.push_back("c", b"aaaa");
        let (in_flight, _, _) = unsent.front().unwrap();
        unsent.push_back("c", b"bbbb");
        unsent.push_back("c", b"cccc");
        assert_eq!(payloads(&unsent), [b"bbbb".as_slice(), b"cccc"]);
        assert_eq!(unsent.bytes, 8);
        // The message dropped while it was being published does not take another with it.
        unsent.remove_front(in_flight);
        assert_eq!(payloads(&unsent), [b"bbbb".as_slice(), b"cccc"]);
        while let Some((id, _, _)) = unsent.front() {
            unsent.remove_front(id);
        }
        assert_eq!(unsent.bytes, 0);
        assert!(unsent.is_empty());
    }
}
