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

use std::collections::HashSet;
use std::sync::Arc;
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
    namespace: String,
    command_timeout: Duration,
    local: MemoryBroadcaster,
    /// Held while the link or its subscriptions change, and while the dispatcher decides to
    /// unsubscribe, so that a room cannot be unsubscribed under a subscriber that just came.
    link: tokio::sync::Mutex<Link>,
}

/// The [`EventBroadcaster`] for several nodes. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroadcaster {
    shared: Arc<Shared>,
    commands: ConnectionManager,
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
        Self {
            shared: Arc::new(Shared {
                client,
                namespace: config.namespace.clone(),
                command_timeout: config.command_timeout,
                local: MemoryBroadcaster::new(config.outbound_queue),
                link: tokio::sync::Mutex::new(Link::default()),
            }),
            commands,
        }
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
        let mut commands = self.commands.clone();
        let _receivers: i64 = timed(
            self.shared.command_timeout,
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async(&mut commands),
        )
        .await?;
        metrics::histogram!("banter_broadcast_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn check(&self) -> Result<(), BroadcastError> {
        let mut commands = self.commands.clone();
        let _: String = timed(
            self.shared.command_timeout,
            redis::cmd("PING").query_async(&mut commands),
        )
        .await?;
        if !self.is_linked().await {
            self.connect_link().await?;
        }
        Ok(())
    }
}
