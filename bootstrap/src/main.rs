//! # banter
//!
//! The one binary: reads the configuration (flags and `BANTER_*` environment variables),
//! wires one adapter into each port, and runs the service until SIGINT or SIGTERM. Nothing
//! here decides chat behaviour; it only chooses and connects parts.
//!
//! May depend on every banter crate, clap, humantime (durations in flags), tracing-subscriber,
//! tokio, anyhow, metrics (the heap gauges) and jemalloc (the allocator).

mod config;
mod heap;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use banter_adapter_http::{app_state, install_metrics, router};
use banter_adapter_memory::{MemoryBroadcaster, MemoryPresence, SystemClock};
use banter_adapter_redis::{RedisBroadcaster, RedisConfig, RedisPresence};
use banter_adapter_storage::{FencedBroadcaster, ReadReplicaConfig, Store, StoreConfig};
use banter_application::{Chat, ChatOf, ChatSettings, Ports};
use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;
use poem::listener::{Acceptor, Listener, TcpListener};

use config::{Broker, Cli, Command, LogFormat, ServeArgs};

/// One node: messages in SQL, events and presence in this process.
struct SingleNode;

impl Ports for SingleNode {
    type Store = Store;
    type Broadcaster = FencedBroadcaster<MemoryBroadcaster>;
    type Presence = MemoryPresence;
    type Clock = SystemClock;
}

/// One of several nodes: messages in the shared database, events and presence in Redis.
struct ClusterNode;

impl Ports for ClusterNode {
    type Store = Store;
    type Broadcaster = FencedBroadcaster<RedisBroadcaster>;
    type Presence = RedisPresence;
    type Clock = SystemClock;
}

/// How long shutdown waits for open WebSockets to close and in-flight requests to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping node tries to publish messages kept while Redis was away.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format, &cli.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Migrate(args) => migrate(&args.database_url).await,
        }
    })
}

fn init_tracing(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn open_store(
    database_url: &str,
    search_index_interval: Option<Duration>,
    read_replica: Option<ReadReplicaConfig>,
) -> anyhow::Result<Store> {
    let url = banter_adapter_storage::DatabaseUrl::parse(database_url)?;
    let mut config = StoreConfig::new(url);
    config.search_index_interval = search_index_interval;
    let replica_lag = read_replica.as_ref().map(|r| r.max_lag);
    config.read_replica = read_replica;
    let store = Store::open(config)
        .await
        .with_context(|| format!("cannot open the database {database_url}"))?;
    let applied = store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    if applied.is_empty() {
        tracing::info!(backend = store.backend(), "database is up to date");
    } else {
        tracing::info!(backend = store.backend(), migrations = ?applied, "database migrated");
    }
    if let Some(max_lag) = replica_lag {
        tracing::info!(
            ?max_lag,
            "reads may go to the replica when it is fresh enough"
        );
    }
    Ok(store)
}

async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let store = open_store(database_url, None, None).await?;
    store.close().await;
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Bad settings fail before anything is opened or created.
    let settings = args.http_settings()?;
    let read_replica = args.read_replica()?;
    let metrics = match install_metrics() {
        Ok(handle) => {
            heap::spawn_heap_gauges();
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics are off");
            None
        }
    };
    let store = open_store(
        &args.database.database_url,
        args.search_indexer(),
        read_replica,
    )
    .await?;
    let fence = store.read_fence();
    let chat_settings = ChatSettings {
        rate_limit: args.rate_limit.limit(),
        history_cache: args.history_cache(),
        ..ChatSettings::default()
    };
    let served = match &args.broker {
        Broker::Memory => {
            let chat = Chat::new(
                store.clone(),
                FencedBroadcaster::new(MemoryBroadcaster::new(args.broadcast_queue()), fence),
                MemoryPresence::default(),
                SystemClock::default(),
                chat_settings,
            );
            run::<SingleNode>(chat, &args, settings, metrics).await
        }
        Broker::Redis(url) => {
            let config = RedisConfig {
                namespace: args.redis_namespace.clone(),
                outbound_queue: args.broadcast_queue(),
                command_timeout: Duration::from_secs(args.redis_timeout),
                ..RedisConfig::new(url.clone())
            };
            let node_id = config.node_id.clone();
            let (broadcaster, presence) = banter_adapter_redis::connect(config)
                .await
                .with_context(|| format!("cannot use the Redis broker at {url}"))?;
            tracing::info!(node = %node_id, namespace = %args.redis_namespace, "joined the cluster through Redis");
            let chat = Chat::new(
                store.clone(),
                FencedBroadcaster::new(broadcaster.clone(), fence),
                presence.clone(),
                SystemClock::default(),
                chat_settings,
            );
            let served = run::<ClusterNode>(chat, &args, settings, metrics).await;
            // Messages stored while Redis was away and not yet published: a last chance, so
            // other nodes' clients see them live (they are in the store either way).
            let unpublished = broadcaster.flush(FLUSH_TIMEOUT).await;
            if unpublished > 0 {
                tracing::warn!(
                    unpublished,
                    "stopping with messages not broadcast; clients get them from the store when they resume"
                );
            }
            // The sockets are closed by now; anything left (a drain that timed out) goes too,
            // so the other nodes need not wait for this node's heartbeat to lapse.
            if let Err(e) = presence.leave_cluster().await {
                tracing::warn!(error = %e, "could not leave the cluster cleanly");
            }
            served
        }
    };
    store.close().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves HTTP and WebSockets with `chat` until a signal, then drains.
async fn run<P: Ports>(
    chat: ChatOf<P>,
    args: &ServeArgs,
    settings: banter_adapter_http::HttpSettings,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    let (state, shutdown) = app_state::<P>(chat.clone(), settings, metrics);
    let background = spawn_background::<P>(chat, Arc::clone(&state));

    let acceptor = TcpListener::bind(args.listen)
        .into_acceptor()
        .await
        .map(banter_adapter_http::NoDelayAcceptor::new)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .map_or_else(|| args.listen.to_string(), |a| a.to_string());
    tracing::info!("listening on http://{local}");
    if !args.trusted_proxies.is_empty() {
        tracing::info!(trusted_proxies = %args.trusted_proxies, "client addresses forwarded by these proxies are believed");
    }

    let drain_delay = args.drain_delay;
    let signal = async move {
        wait_for_signal().await;
        // Out of the load balancer first: /readyz 503, new WebSockets refused.
        shutdown.drain();
        if !drain_delay.is_zero() {
            tracing::info!(
                delay = ?drain_delay,
                "draining: /readyz answers 503 and new WebSockets are refused; open ones close after the drain delay (a second signal ends it)"
            );
            tokio::select! {
                () = tokio::time::sleep(drain_delay) => {}
                () = wait_for_signal() => tracing::info!("second signal: ending the drain delay"),
            }
        }
        tracing::info!("shutting down: closing WebSockets with 1001, finishing requests");
        shutdown.begin();
    };
    let served = poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(router(Arc::clone(&state)), signal, Some(DRAIN_TIMEOUT))
        .await
        .context("the HTTP server failed");

    let left = state.wait_until_disconnected(DRAIN_TIMEOUT).await;
    if left > 0 {
        tracing::warn!(
            connections = left,
            "WebSockets still open after the drain timeout"
        );
    }
    background.abort();
    served
}

/// How often presence is refreshed in a shared registry: three missed beats and the other
/// nodes remove this node's users.
const HEARTBEAT_INTERVAL: Duration = RedisConfig::HEARTBEAT_INTERVAL;

/// Typing expiry, the history cache's room hubs, presence heartbeats and housekeeping, for as
/// long as the server runs.
fn spawn_background<P: Ports>(
    chat: ChatOf<P>,
    state: Arc<banter_adapter_http::AppState<P>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let expiry = chat.run_typing_expiry();
        // Each room hub's pump is a task of its own, so busy rooms spread over the cores.
        let hubs = chat.run_history_cache(|pump| {
            tokio::spawn(pump);
        });
        let periodic = async {
            let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = chat.heartbeat().await {
                    tracing::warn!(error = %e, "presence heartbeat failed");
                }
                chat.sweep_history_cache();
                state.housekeeping();
            }
        };
        tokio::join!(expiry, hubs, periodic);
    })
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
