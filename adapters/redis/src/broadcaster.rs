//! The [`EventBroadcaster`] port over Redis pub/sub.
//!
//! Every event, also one for this node's own subscribers, goes out with `PUBLISH` (`SPUBLISH`
//! on a Redis Cluster, to the shard that owns the room) on the room's channel (as a [`crate::wire::RedisEvent`]) and comes back through this node's one
//! subscribe connection ([`link`]), which hands it to the in-memory fan-out. So all nodes see
//! a room's events in the one order Redis delivered them, and an event is encoded to a client
//! frame once per node.
//!
//! A message whose `PUBLISH` failed is kept and published in order later ([`kept`]). Typing
//! events are not kept: late, they would be wrong.

mod kept;
mod link;

use std::sync::Arc;
use std::time::Duration;

use self::kept::KeptMessages;
pub(crate) use self::link::LinkTo;
use self::link::SubscribeLink;
use crate::commands::Commands;
use crate::keys::{Keys, Topology};
use crate::{RedisAdapterError, RedisConfig, timed, wire};
use banter_adapter_memory::MemorySubscription;
use banter_domain::ports::{
    BroadcastError, EventBroadcaster, EventSubscription, SubscriptionError,
};
use banter_domain::{EventEnvelope, RoomEvent, RoomName};

impl From<RedisAdapterError> for BroadcastError {
    fn from(e: RedisAdapterError) -> Self {
        BroadcastError::Unavailable {
            reason: e.to_string(),
        }
    }
}

/// The command connection, for `PUBLISH` (or `SPUBLISH`) and `PING`.
#[derive(Clone)]
struct Publisher {
    commands: Commands,
    command_timeout: Duration,
    topology: Topology,
}

impl Publisher {
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), RedisAdapterError> {
        let mut commands = self.commands.clone();
        let _receivers: i64 = timed(
            self.command_timeout,
            redis::cmd(match self.topology {
                Topology::Single => "PUBLISH",
                Topology::Cluster => "SPUBLISH",
            })
            .arg(channel)
            .arg(payload)
            .query_async(&mut commands),
        )
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), RedisAdapterError> {
        let mut commands = self.commands.clone();
        timed(self.command_timeout, commands.ping()).await
    }
}

/// The [`EventBroadcaster`] for several nodes. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroadcaster {
    keys: Arc<Keys>,
    publisher: Publisher,
    link: Arc<SubscribeLink>,
    kept: Arc<KeptMessages>,
}

impl std::fmt::Debug for RedisBroadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroadcaster")
            .field("namespace", &self.keys.namespace())
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
    pub(crate) fn new(link: LinkTo, commands: Commands, config: &RedisConfig, keys: Keys) -> Self {
        let publisher = Publisher {
            commands,
            command_timeout: config.command_timeout,
            topology: keys.topology(),
        };
        Self {
            keys: Arc::new(keys.clone()),
            link: Arc::new(SubscribeLink::new(
                link,
                keys,
                config.command_timeout,
                config.outbound_queue,
            )),
            kept: KeptMessages::start(publisher.clone()),
            publisher,
        }
    }

    /// Opens the subscribe connection now, so start-up fails early when Redis is missing.
    pub(crate) async fn connect_link(&self) -> Result<(), RedisAdapterError> {
        self.link.connect().await
    }

    /// Gives kept messages (stored while Redis was away) up to `within` to be published, for a
    /// node that is stopping. Returns how many are still unpublished.
    pub async fn flush(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let waiting = self.kept.len();
            if waiting == 0 || tokio::time::Instant::now() >= deadline {
                return waiting;
            }
            self.kept.wake();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the subscribe connection is up (for tests and diagnostics).
    pub async fn is_linked(&self) -> bool {
        self.link.is_up().await
    }
}

impl EventBroadcaster for RedisBroadcaster {
    type Subscription = RedisSubscription;

    async fn subscribe(&self, room: &RoomName) -> Result<RedisSubscription, BroadcastError> {
        let local = self.link.subscribe(room).await?;
        Ok(RedisSubscription { local })
    }

    async fn publish(&self, event: RoomEvent) -> Result<(), BroadcastError> {
        let started = std::time::Instant::now();
        let payload = wire::encode(&event).map_err(|e| BroadcastError::Unavailable {
            reason: format!("cannot encode the event: {e}"),
        })?;
        let channel = self.keys.channel(event.room().as_str());
        // Changes are kept like messages: both are stored, ordered and filled by the feeds.
        // So are the ends of access to a private room: they must reach every node (a repeat
        // only closes what is closed already).
        let is_message = matches!(
            event,
            RoomEvent::MessagePosted(_)
                | RoomEvent::MessageUpdated { .. }
                | RoomEvent::MemberRemoved { .. }
                | RoomEvent::MadePrivate { .. }
        );
        // While messages wait, a new one queues behind them (it must not overtake an older
        // one of its room) and goes out with them; a typing event is dropped.
        if !self.kept.is_empty() {
            if !is_message {
                return Err(RedisAdapterError::Backlog.into());
            }
            self.kept.keep(&channel, &payload);
            return Ok(());
        }
        if let Err(e) = self.publisher.publish(&channel, &payload).await {
            if is_message {
                tracing::warn!(error = %e, "a message's broadcast failed; kept to publish once Redis answers");
                self.kept.keep(&channel, &payload);
            }
            return Err(e.into());
        }
        metrics::histogram!("banter_broadcast_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn check(&self) -> Result<(), BroadcastError> {
        self.publisher.ping().await?;
        if !self.link.is_up().await {
            self.link.connect().await?;
        }
        // Redis answers: kept messages can go now (the task publishes them, not the probe).
        if !self.kept.is_empty() {
            self.kept.wake();
        }
        Ok(())
    }
}
