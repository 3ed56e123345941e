//! The subscribe link: this node's one pub/sub connection, feeding the in-memory fan-out.
//!
//! The link subscribes to a room's channel when the node's first subscriber to it arrives, and
//! unsubscribes lazily, when an event arrives for a room nobody on the node follows any more.
//! On one server it is one connection (`SUBSCRIBE`); on a Redis Cluster it is a RESP3 cluster
//! connection whose shard channels (`SSUBSCRIBE`) go to the shards that own their rooms.
//!
//! When the link breaks (its stream ends, one of its connections closes, a ping goes
//! unanswered, a subscribe fails), events may have been missed and nobody would notice until
//! the next message of the room: every subscription is closed instead (the connections close
//! and the clients resume from the store with `after`), the old link's dispatcher is stopped,
//! and the next subscribe opens a new link. When a cluster ends one room's subscription on its
//! own (the room's slot moved, or its shard failed over), only that room's subscriptions close.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use banter_adapter_memory::{MemoryBroadcaster, MemorySubscription};
use banter_domain::RoomName;
use banter_domain::ports::{BroadcastError, EventBroadcaster};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use redis::{Msg, PushInfo, PushKind};

use crate::keys::Keys;
use crate::{RedisAdapterError, cluster_client, open_within, timed, wire};

/// Where the link connects.
pub(crate) enum LinkTo {
    Single(redis::Client),
    /// The cluster's seed nodes.
    Cluster(Vec<String>),
}

/// What comes up the link.
enum Incoming {
    Message(Msg),
    /// The server ended a channel's subscription on its own.
    Unsubscribed(String),
    /// A connection of the link closed.
    Lost(&'static str),
}

/// The link's command side, for subscribing and pinging.
#[derive(Clone)]
enum Upstream {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

impl Upstream {
    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.subscribe(channel).await,
            Self::Cluster(connection) => connection.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.unsubscribe(channel).await,
            Self::Cluster(connection) => connection.sunsubscribe(channel).await,
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.ping::<redis::Value>().await.map(drop),
            Self::Cluster(connection) => crate::commands::ping_one_primary(connection).await,
        }
    }
}

/// Opens a link: its command side and what comes up it, ending with [`Incoming::Lost`].
async fn open(
    to: &LinkTo,
    limit: Duration,
) -> Result<(Upstream, BoxStream<'static, Incoming>), RedisAdapterError> {
    let lost = |why| futures_util::stream::once(std::future::ready(Incoming::Lost(why)));
    match to {
        LinkTo::Single(client) => {
            let pubsub = open_within(limit, client.get_async_pubsub()).await?;
            let (sink, stream) = pubsub.split();
            let incoming = stream
                .map(Incoming::Message)
                .chain(lost("the connection closed"));
            Ok((Upstream::Single(sink), incoming.boxed()))
        }
        LinkTo::Cluster(seeds) => {
            let (pushes, received) = tokio::sync::mpsc::unbounded_channel();
            let client = cluster_client(seeds, limit, Some(pushes))?;
            let connection = open_within(limit, client.get_async_connection()).await?;
            let incoming = futures_util::stream::unfold(received, |mut received| async move {
                received.recv().await.map(|push| (push, received))
            })
            .filter_map(|push| std::future::ready(incoming_push(push)))
            .chain(lost("the cluster connection closed"));
            Ok((Upstream::Cluster(connection), incoming.boxed()))
        }
    }
}

/// A cluster's push, as the dispatcher sees it; `None` for what it ignores (confirmations).
fn incoming_push(push: PushInfo) -> Option<Incoming> {
    match push.kind {
        PushKind::SMessage | PushKind::Message => Msg::from_push_info(push).map(Incoming::Message),
        PushKind::SUnsubscribe => match push.data.first() {
            Some(redis::Value::BulkString(channel)) => Some(Incoming::Unsubscribed(
                String::from_utf8_lossy(channel).into_owned(),
            )),
            _ => None,
        },
        PushKind::Disconnection => Some(Incoming::Lost("a connection to the cluster closed")),
        _ => None,
    }
}

/// How often an idle link is pinged, so a half-open connection is noticed.
const LINK_PING_INTERVAL: Duration = Duration::from_secs(5);

/// The link and the local subscribers it feeds.
pub(super) struct SubscribeLink {
    to: LinkTo,
    keys: Keys,
    command_timeout: Duration,
    local: MemoryBroadcaster,
    /// Held while the link or its subscriptions change, and while the dispatcher decides to
    /// unsubscribe, so that a room cannot be unsubscribed under a subscriber that just came.
    link: tokio::sync::Mutex<Link>,
}

/// The subscribe connection and the rooms it follows.
#[derive(Default)]
struct Link {
    sink: Option<Upstream>,
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

impl SubscribeLink {
    pub(super) fn new(
        to: LinkTo,
        keys: Keys,
        command_timeout: Duration,
        outbound_queue: usize,
    ) -> Self {
        Self {
            to,
            keys,
            command_timeout,
            local: MemoryBroadcaster::new(outbound_queue),
            link: tokio::sync::Mutex::new(Link::default()),
        }
    }

    /// Opens the subscribe connection unless it is up.
    pub(super) async fn connect(self: &Arc<Self>) -> Result<(), RedisAdapterError> {
        let mut link = self.link.lock().await;
        self.ensure_link(&mut link).await.map(|_| ())
    }

    /// Whether the subscribe connection is up.
    pub(super) async fn is_up(&self) -> bool {
        self.link.lock().await.sink.is_some()
    }

    /// A local subscription to `room`, whose channel the link follows from now on.
    pub(super) async fn subscribe(
        self: &Arc<Self>,
        room: &RoomName,
    ) -> Result<MemorySubscription, BroadcastError> {
        // The local end first: from here on, the dispatcher sees a subscriber and keeps the
        // room's channel.
        let local = self.local.subscribe(room).await?;
        let mut link = self.link.lock().await;
        if !link.subscribed.contains(room) {
            let channel = self.keys.channel(room.as_str());
            let sink = self.ensure_link(&mut link).await?;
            if let Err(e) = timed(self.command_timeout, sink.subscribe(&channel)).await {
                // A link that cannot subscribe is broken; the next subscriber opens a new one.
                link.break_down(&self.local, "a subscribe failed");
                return Err(e.into());
            }
            link.subscribed.insert(room.clone());
        }
        Ok(local)
    }

    async fn ensure_link<'a>(
        self: &Arc<Self>,
        link: &'a mut Link,
    ) -> Result<&'a mut Upstream, RedisAdapterError> {
        if link.sink.is_none() {
            let (sink, stream) = open(&self.to, self.command_timeout).await?;
            link.generation += 1;
            link.subscribed.clear();
            link.dispatcher = Some(tokio::spawn(dispatch(
                Arc::clone(self),
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

    /// Stops following a room nobody on this node follows any more. Skipped when a subscriber
    /// is busy with the link (it may be about to follow the room again); the room's next event
    /// retries, so events of other rooms are never held up behind a slow subscribe.
    async fn unsubscribe_if_unfollowed(&self, room: &RoomName, generation: u64) {
        let Ok(mut link) = self.link.try_lock() else {
            return;
        };
        if link.generation != generation || self.local.has_subscribers(room) {
            return;
        }
        let Some(sink) = link.sink.as_mut() else {
            return;
        };
        let channel = self.keys.channel(room.as_str());
        // Forgotten whatever the outcome: an UNSUBSCRIBE that timed out may still run later, so
        // the next subscriber must send SUBSCRIBE again (which is harmless if it did not).
        let outcome = timed(self.command_timeout, sink.unsubscribe(&channel)).await;
        link.subscribed.remove(room);
        if let Err(e) = outcome {
            tracing::debug!(%room, error = %e, "unsubscribe failed");
        }
    }

    /// The server ended `room`'s subscription (a cluster whose slot moved or whose shard failed
    /// over): events may have been missed, so the room's local subscriptions close and its next
    /// subscriber subscribes again. A confirmation of this node's own unsubscribe finds the room
    /// forgotten already and changes nothing.
    async fn lost_room(&self, room: &RoomName, generation: u64) {
        let mut link = self.link.lock().await;
        if link.generation == generation && link.subscribed.remove(room) {
            self.local.close_room(room);
            metrics::counter!("banter_redis_room_losses_total").increment(1);
            tracing::warn!(%room, "Redis ended the room's subscription; closed its subscriptions here");
        }
    }
}

/// Hands events from the link to this node's subscribers until the link breaks.
async fn dispatch(
    this: Arc<SubscribeLink>,
    mut pinger: Upstream,
    mut incoming: BoxStream<'static, Incoming>,
    generation: u64,
) {
    let mut ping = tokio::time::interval(LINK_PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        let message = tokio::select! {
            next = incoming.next() => match next {
                Some(Incoming::Message(message)) => message,
                Some(Incoming::Unsubscribed(channel)) => {
                    if let Some(room) = this.keys.room_of_channel(&channel) {
                        this.lost_room(&room, generation).await;
                    }
                    continue;
                }
                Some(Incoming::Lost(why)) => break why,
                None => break "the connection closed",
            },
            _ = ping.tick() => {
                // A half-open connection never ends the stream; an unanswered ping does.
                if timed(this.command_timeout, pinger.ping()).await.is_err() {
                    break "a ping went unanswered";
                }
                continue;
            }
        };
        let Some(room) = this.keys.room_of_channel(message.get_channel_name()) else {
            continue;
        };
        if this.local.has_subscribers(&room) {
            match wire::decode(message.get_payload_bytes()) {
                Ok(event) if event.room() == &room => {
                    // The local fan-out cannot fail; it only measures.
                    let _ = this.local.publish(event).await;
                }
                Ok(_) => tracing::warn!(%room, "event for another room on this room's channel"),
                Err(e) => tracing::warn!(%room, error = %e, "undecodable event skipped"),
            }
        } else {
            this.unsubscribe_if_unfollowed(&room, generation).await;
        }
    };
    let mut link = this.link.lock().await;
    if link.generation == generation {
        // This task is the dispatcher being aborted; detach it so it finishes on its own.
        link.dispatcher = None;
        link.break_down(&this.local, why);
    }
}
