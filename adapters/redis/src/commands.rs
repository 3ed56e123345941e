//! The command connection: to one server, a [`ConnectionManager`] (it reconnects on its own);
//! to a Redis Cluster, a [`ClusterConnection`] (it routes each command by its first key's slot,
//! follows `MOVED`/`ASK`, and finds the new primary after a failover). Both are multiplexed
//! and cheap to clone.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

#[derive(Clone)]
pub(crate) enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Commands {
    /// `PING`. On a cluster, one primary at random: the client library would ask every node,
    /// and one shard failing over must not make every banter node unready at once.
    pub(crate) async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Self::Single(connection) => redis::cmd("PING")
                .query_async::<redis::Value>(connection)
                .await
                .map(drop),
            Self::Cluster(connection) => ping_one_primary(connection).await,
        }
    }
}

/// `PING` to one primary of the cluster, at random.
pub(crate) async fn ping_one_primary(connection: &mut ClusterConnection) -> redis::RedisResult<()> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    connection
        .route_command(
            redis::cmd("PING"),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
        )
        .await
        .map(drop)
}
