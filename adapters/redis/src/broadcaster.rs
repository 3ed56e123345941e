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
//! would only learn of it from the room's next message. It is kept ([`Unsent`], bounded) and
//! published again, in order, once Redis answers: before the next event, on a readiness check,
//! and every second by a small task. Receivers drop what they already have by seq, so a
//! `PUBLISH` that timed out but did arrive costs nothing twice. Typing events are not kept:
//! late, they would be wrong.

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

/// How often kept messages are tried again when nothing else publishes.
const REDELIVERY_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many bytes of unpublished messages are kept (a few thousand messages); the
/// oldest go first. Clients still find them in the store when they resume.
const UNSENT_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// Messages whose `PUBLISH` failed, oldest first, as (channel, payload).
struct Unsent {
    events: VecDeque<(String, Vec<u8>)>,
    bytes: usize,
    limit_bytes: usize,
    /// When publishing failed last (every message is kept because of a failure).
    failed_at: Option<std::time::Instant>,
}

impl Unsent {
    fn new(limit_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            limit_bytes,
            failed_at: None,
        }
    }

    /// Keeps a message whose publishing just failed at the back; drops the oldest ones beyond
    /// the limit.
    fn push_back(&mut self, channel: String, payload: Vec<u8>) {
        self.failed_at = Some(std::time::Instant::now());
        self.bytes += payload.len();
        self.events.push_back((channel, payload));
        while self.bytes > self.limit_bytes {
            let Some((_, dropped)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= dropped.len();
            metrics::counter!("banter_redis_unsent_dropped_total").increment(1);
        }
        self.report();
    }

    /// Puts back a message whose retry just failed, ahead of the rest.
    fn push_front(&mut self, channel: String, payload: Vec<u8>) {
        self.failed_at = Some(std::time::Instant::now());
        self.bytes += payload.len();
        self.events.push_front((channel, payload));
        self.report();
    }

    fn pop_front(&mut self) -> Option<(String, Vec<u8>)> {
        let popped = self.events.pop_front();
        if let Some((_, payload)) = &popped {
            self.bytes -= payload.len();
            self.report();
        }
        popped
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
    unsent: std::sync::Mutex<Unsent>,
    /// Held while kept messages are published again, so they go out once and in order.
    redelivering: tokio::sync::Mutex<()>,
}

impl Shared {
    fn unsent(&self) -> std::sync::MutexGuard<'_, Unsent> {
        // The queue is consistent after every single call, so a panic elsewhere cannot have
        // left it half-changed.
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

    /// Whether messages are waiting and Redis was found away moments ago (or is being retried
    /// right now): a new event then queues behind them at once instead of waiting out another
    /// command timeout, so posts stay quick while Redis is down.
    fn redelivery_pending(&self) -> bool {
        let unsent = self.unsent();
        !unsent.events.is_empty()
            && (unsent
                .failed_at
                .is_some_and(|at| at.elapsed() < REDELIVERY_INTERVAL)
                || self.redelivering.try_lock().is_err())
    }

    /// Publishes the kept messages, oldest first. Fails (keeping the rest) at the first that
    /// Redis refuses, so nothing newer overtakes them.
    async fn redeliver(&self) -> Result<(), RedisAdapterError> {
        if self.unsent().events.is_empty() {
            return Ok(());
        }
        let _one_at_a_time = self.redelivering.lock().await;
        let mut sent = 0usize;
        loop {
            let Some((channel, payload)) = self.unsent().pop_front() else {
                break;
            };
            if let Err(e) = self.publish_now(&channel, &payload).await {
                self.unsent().push_front(channel, payload);
                return Err(e);
            }
            sent += 1;
        }
        if sent > 0 {
            tracing::info!(sent, "published the messages kept while Redis was away");
        }
        Ok(())
    }
}

/// Retries kept messages every [`REDELIVERY_INTERVAL`] for as long as the broadcaster lives.
async fn redeliver_periodically(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(REDELIVERY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.redeliver().await {
            tracing::debug!(error = %e, "kept messages not published yet");
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
            redelivering: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(redeliver_periodically(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// Opens the subscribe connection now, so start-up fails early when Redis is missing.
    pub(crate) async fn connect_link(&self) -> Result<(), RedisAdapterError> {
        let mut link = self.shared.link.lock().await;
        self.ensure_link(&mut link).await.map(|_| ())
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
        // Kept messages first: a message must not overtake an older one of its room.
        let outcome = if self.shared.redelivery_pending() {
            Err(RedisAdapterError::Backlog)
        } else {
            match self.shared.redeliver().await {
                Ok(()) => self.shared.publish_now(&channel, &payload).await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = outcome {
            if matches!(event, RoomEvent::MessagePosted(_)) {
                self.shared.unsent().push_back(channel, payload);
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
        self.shared.redeliver().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Unsent;

    fn payloads(unsent: &Unsent) -> Vec<&[u8]> {
        unsent.events.iter().map(|(_, p)| p.as_slice()).collect()
    }

    #[test]
    fn kept_messages_stay_in_order_and_a_failed_retry_goes_back_first() {
        let mut unsent = Unsent::new(100);
        assert!(unsent.failed_at.is_none());
        unsent.push_back("c".into(), b"one".to_vec());
        assert!(unsent.failed_at.is_some(), "kept because publishing failed");
        unsent.push_back("c".into(), b"two".to_vec());
        let (channel, first) = unsent.pop_front().unwrap();
        assert_eq!(first, b"one");
        unsent.push_front(channel, first);
        assert_eq!(payloads(&unsent), [b"one".as_slice(), b"two"]);
        assert_eq!(unsent.bytes, 6);
    }

    #[test]
    fn beyond_the_limit_the_oldest_are_dropped() {
        let mut unsent = Unsent::new(10);
        for payload in ["aaaa", "bbbb", "cccc"] {
            unsent.push_back("c".into(), payload.as_bytes().to_vec());
        }
        assert_eq!(payloads(&unsent), [b"bbbb".as_slice(), b"cccc"]);
        assert_eq!(unsent.bytes, 8);
        while unsent.pop_front().is_some() {}
        assert_eq!(unsent.bytes, 0);
    }
}
