//! # banter-adapter-redis
//!
//! The adapters that make several `banter` nodes one chat service: the [`RedisBroadcaster`]
//! (events travel between nodes over Redis pub/sub, one channel per room — a shard channel on a
//! Redis Cluster — and inside a node through the in-memory fan-out) and the [`RedisPresence`] registry (people online, counted
//! across nodes by Lua scripts that also announce joins and leaves, with per-node heartbeats so
//! the users of a node that dies are removed).
//!
//! What goes through Redis is this crate's own serde types (`wire.rs`), converted from and to
//! the domain's at this edge.
//!
//! May depend on: `banter-domain`, `banter-adapter-memory` (the in-node fan-out), the `redis`
//! client, tokio, serde and serde_json, metrics (the facade) and tracing.

mod broadcaster;
mod cluster_scripts;
mod commands;
mod keys;
mod node_book;
mod presence;
mod scripts;
mod wire;

use std::time::Duration;

pub use broadcaster::{RedisBroadcaster, RedisSubscription};
pub use presence::RedisPresence;

use commands::Commands;
use keys::{Keys, Topology};

/// What can go wrong talking to Redis. Mapped to the ports' `Unavailable` errors.
#[derive(Debug, thiserror::Error)]
pub enum RedisAdapterError {
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "the namespace {0:?} cannot be used on a Redis Cluster: it may not contain '{{' or '}}'"
    )]
    InvalidNamespace(String),
    #[error("cannot reach Redis: {0}")]
    Connect(String),
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer from Redis: {0}")]
    Protocol(String),
    #[error("cannot encode the events the presence scripts announce: {0}")]
    Templates(String),
    #[error("earlier messages are still waiting for Redis; a typing event is not kept")]
    Backlog,
}

/// How a node connects to the shared Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` for one server, or `redis-cluster://host:port[,host:port…]`
    /// for a Redis Cluster (any of its nodes; the rest are discovered).
    pub url: String,
    /// Prefix of every key and channel, so several banter services can share one Redis.
    pub namespace: String,
    /// This node's id in the presence registry; unique per process.
    pub node_id: String,
    /// How long a node may go without a heartbeat before the others remove its users.
    pub dead_after: Duration,
    /// How long one Redis command may take before it counts as a failure.
    pub command_timeout: Duration,
    /// Per-subscriber queue bound of the in-node fan-out.
    pub outbound_queue: usize,
}

impl RedisConfig {
    /// The namespace used when none is given.
    pub const DEFAULT_NAMESPACE: &'static str = "banter";
    /// A heartbeat every this often keeps a node alive.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
    /// Three missed heartbeats: a node's users are gone from `online` within
    /// `dead_after + HEARTBEAT_INTERVAL` (20 s) of its death.
    pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(15);
    /// How long one command may take when nothing else is said.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: Self::DEFAULT_NAMESPACE.to_owned(),
            node_id: new_node_id(),
            dead_after: Self::DEFAULT_DEAD_AFTER,
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            outbound_queue: banter_adapter_memory::MemoryBroadcaster::DEFAULT_CAPACITY,
        }
    }
}

/// A node id that no other process picks: the process id plus OS randomness (through the
/// standard library's randomly keyed hasher).
fn new_node_id() -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{:x}-{:016x}", std::process::id(), random)
}

/// The scheme of a Redis Cluster URL.
pub const CLUSTER_SCHEME: &str = "redis-cluster://";

/// The seed nodes of a `redis-cluster://h:p[,h:p…]` URL as `redis://h:p` URLs, or `None` for
/// a one-server URL.
fn cluster_seeds(url: &str) -> Result<Option<Vec<String>>, RedisAdapterError> {
    let Some(list) = url.strip_prefix(CLUSTER_SCHEME) else {
        return Ok(None);
    };
    let invalid = |reason: &str| RedisAdapterError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let list = list.trim_end_matches('/');
    let seeds = list
        .split(',')
        .map(|node| {
            let node = node.trim();
            let valid = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if valid {
                Ok(format!("redis://{node}"))
            } else {
                Err(invalid("expected redis-cluster://host:port[,host:port…]"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(seeds))
}

/// A cluster client; with `pushes`, speaking RESP3 and handing the servers' pushes (sharded
/// messages, unsubscribes, disconnections) to that channel.
fn cluster_client(
    seeds: &[String],
    command_timeout: Duration,
    pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<redis::cluster::ClusterClient, RedisAdapterError> {
    // A failover takes the cluster a few seconds (cluster-node-timeout plus an election):
    // commands retry with backoff across it, each within the command timeout overall.
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .retries(5)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .connection_timeout(command_timeout)
        .response_timeout(command_timeout);
    if let Some(pushes) = pushes {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes);
    }
    builder.build().map_err(|e| RedisAdapterError::InvalidUrl {
        url: seeds.join(","),
        reason: e.to_string(),
    })
}

/// Connects both adapters to one Redis or one Redis Cluster: the broadcaster and the presence
/// registry share the command connection and the namespace, so presence announcements reach
/// the broadcaster's subscribers.
///
/// # Errors
/// [`RedisAdapterError`] when the URL is invalid or Redis does not answer.
pub async fn connect(
    config: RedisConfig,
) -> Result<(RedisBroadcaster, RedisPresence), RedisAdapterError> {
    let limit = config.command_timeout;
    let (commands, link, keys) = match cluster_seeds(&config.url)? {
        Some(seeds) => {
            if config.namespace.contains(['{', '}']) {
                return Err(RedisAdapterError::InvalidNamespace(config.namespace));
            }
            let client = cluster_client(&seeds, limit, None)?;
            let commands = open_within(limit, client.get_async_connection()).await?;
            (
                Commands::Cluster(commands),
                broadcaster::LinkTo::Cluster(seeds),
                Keys::new(&config.namespace, Topology::Cluster),
            )
        }
        None => {
            let client = redis::Client::open(config.url.as_str()).map_err(|e| {
                RedisAdapterError::InvalidUrl {
                    url: config.url.clone(),
                    reason: e.to_string(),
                }
            })?;
            let manager_config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(limit));
            let commands = open_within(
                limit,
                client.get_connection_manager_with_config(manager_config),
            )
            .await?;
            (
                Commands::Single(commands),
                broadcaster::LinkTo::Single(client),
                Keys::new(&config.namespace, Topology::Single),
            )
        }
    };
    let templates =
        wire::script_templates().map_err(|e| RedisAdapterError::Templates(e.to_string()))?;
    describe_metrics();
    let broadcaster = RedisBroadcaster::new(link, commands.clone(), &config, keys.clone());
    broadcaster.connect_link().await?;
    let presence = RedisPresence::new(commands, &config, keys, templates);
    presence.heartbeat_now().await?;
    Ok((broadcaster, presence))
}

/// Registers this adapter's series, so they are exported before anything happens.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "banter_redis_link_up",
        "1 while this node's Redis pub/sub link is up, else 0."
    );
    describe_counter!(
        "banter_redis_link_losses_total",
        "Times the pub/sub link was lost (this node's WebSockets were closed with 1001)."
    );
    describe_counter!(
        "banter_redis_room_losses_total",
        "Times a Redis Cluster ended one room's shard subscription on its own (that room's local subscriptions were closed)."
    );
    describe_counter!(
        "banter_presence_swept_total",
        "Connections of dead nodes removed from presence by this node's heartbeats."
    );
    describe_gauge!(
        "banter_redis_unsent_messages",
        "Stored messages whose broadcast failed, kept to be published once Redis answers."
    );
    describe_counter!(
        "banter_redis_unsent_dropped_total",
        "Kept messages dropped unpublished because too many were waiting (clients still find them in the store)."
    );
    metrics::gauge!("banter_redis_link_up").set(0.0);
    metrics::gauge!("banter_redis_unsent_messages").set(0.0);
    metrics::counter!("banter_redis_unsent_dropped_total").increment(0);
    metrics::counter!("banter_redis_link_losses_total").increment(0);
    metrics::counter!("banter_redis_room_losses_total").increment(0);
    metrics::counter!("banter_presence_swept_total").increment(0);
}

/// Opens a connection within `limit`: [`RedisAdapterError::Timeout`] or
/// [`RedisAdapterError::Connect`] when it cannot.
async fn open_within<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, RedisAdapterError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| RedisAdapterError::Timeout(limit))?
        .map_err(|e| RedisAdapterError::Connect(e.to_string()))
}

/// Runs `future` with the command timeout.
async fn timed<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, RedisAdapterError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| RedisAdapterError::Timeout(limit))?
        .map_err(RedisAdapterError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_seed_nodes() {
        assert_eq!(cluster_seeds("redis://127.0.0.1:6379/2").ok(), Some(None));
        assert_eq!(
            cluster_seeds("redis-cluster://127.0.0.1:7000,localhost:7001/").ok(),
            Some(Some(vec![
                "redis://127.0.0.1:7000".to_owned(),
                "redis://localhost:7001".to_owned()
            ]))
        );
        for bad in [
            "redis-cluster://",
            "redis-cluster://host",
            "redis-cluster://host:port",
            "redis-cluster://:7000",
            "redis-cluster://h:7000,",
        ] {
            assert!(
                matches!(
                    cluster_seeds(bad),
                    Err(RedisAdapterError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
    }
}
