//! The command line: every setting is a flag with a `BANTER_*` environment variable.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use anyhow::Context;
use std::time::Duration;

use banter_adapter_http::{AllowedOrigin, AuthMode, HttpSettings, TrustedProxies, WsSettings};
use banter_adapter_redis::RedisConfig;
use banter_adapter_storage::ReadReplicaConfig;
use banter_application::{HistoryCache, RateLimit};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "banter",
    version,
    about = "A real-time chat service: rooms, WebSocket messages, typing, history, presence.",
    long_about = "A real-time chat service: rooms, WebSocket messages, typing indicators, stored \
                  history and presence. `banter serve` runs it with embedded defaults (SQLite in \
                  ./banter.db, in-memory broadcasting, no auth) at http://127.0.0.1:8080/."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, env = "BANTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `banter=debug,poem=info`.
    #[arg(long, env = "BANTER_LOG", default_value = "info", global = true)]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start and moved once: boxing buys nothing"
)]
pub enum Command {
    /// Run the service (migrates the database first).
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (created if missing) or `postgres://user@host:port/db`.
    #[arg(
        long,
        env = "BANTER_DATABASE_URL",
        default_value = "sqlite://banter.db"
    )]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the log says which).
    #[arg(long, env = "BANTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// A PostgreSQL hot standby of `--database-url` (`postgres://…`) for history, changes,
    /// rooms, search and unread reads; writes stay on the primary. A read never shows less
    /// than this node has already delivered; a lagging or failing replica is not read.
    #[arg(long, env = "BANTER_DATABASE_READ_URL")]
    pub database_read_url: Option<String>,

    /// With `--database-read-url`: beyond this replication lag (e.g. `1s`, `500ms`) every
    /// read goes to the primary.
    #[arg(long, env = "BANTER_REPLICA_MAX_LAG", default_value = "1s", value_parser = parse_duration)]
    pub replica_max_lag: Duration,

    /// Where events and presence live: `memory` (one node), `redis://host:port[/db]` (several
    /// nodes sharing one Redis and one Postgres database are one service) or
    /// `redis-cluster://host:port[,host:port…]` (the same on a Redis Cluster, any of its nodes).
    #[arg(long, env = "BANTER_BROKER", default_value = "memory", value_parser = Broker::parse)]
    pub broker: Broker,

    /// Prefix of banter's Redis keys and channels, so several services can share one Redis.
    #[arg(long, env = "BANTER_REDIS_NAMESPACE", default_value = RedisConfig::DEFAULT_NAMESPACE, value_parser = parse_namespace)]
    pub redis_namespace: String,

    /// Seconds a Redis command may take before it counts as failed (a link ping or subscribe
    /// that fails so counts the pub/sub link as lost). At most 10, so that a node notices a
    /// hung link (pinged every 5 s) no later than the others would sweep it (15 s).
    #[arg(long, env = "BANTER_REDIS_TIMEOUT", default_value_t = RedisConfig::DEFAULT_COMMAND_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=10))]
    pub redis_timeout: u64,

    /// `none` (clients say who they are) or `jwt` (HS256 bearer tokens; `sub` is the username).
    #[arg(long, env = "BANTER_AUTH", value_enum, default_value_t = Auth::None)]
    pub auth: Auth,

    /// The HS256 secret for `--auth jwt`.
    #[arg(long, env = "BANTER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Extra origins allowed to open WebSockets, comma-separated `scheme://host[:port]`.
    /// Pages served by banter itself are always allowed.
    #[arg(long, env = "BANTER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Most WebSocket connections in total.
    #[arg(long, env = "BANTER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most WebSocket connections from one client address.
    #[arg(long, env = "BANTER_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    pub max_connections_per_ip: usize,

    /// Post rate limit as `BURST:PER_SECOND` (per WebSocket connection, and per client
    /// address for REST), or `off`.
    #[arg(long, env = "BANTER_RATE_LIMIT", default_value = "20:2", value_parser = RateLimitArg::parse)]
    pub rate_limit: RateLimitArg,

    /// Events a WebSocket may have queued (unsent) before it is closed with 1013.
    #[arg(long, env = "BANTER_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Latest messages kept in memory per room that has clients on this node (or was read or
    /// written through it in the last minute), so welcomes, resumes and latest pages need no
    /// database read; 0 turns the cache off.
    #[arg(long, env = "BANTER_HISTORY_CACHE", default_value_t = HistoryCache::DEFAULT_MESSAGES as u64, value_parser = clap::value_parser!(u64).range(0..=HistoryCache::MAX_MESSAGES as u64))]
    pub history_cache: u64,

    /// Seconds between server pings on a WebSocket.
    #[arg(long, env = "BANTER_WS_PING_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_ping_interval: u64,

    /// Seconds a WebSocket may stay silent (no frame, no pong) before it is closed.
    #[arg(long, env = "BANTER_WS_IDLE_TIMEOUT", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_idle_timeout: u64,

    /// `on`: permessage-deflate for WebSocket clients that offer it, gzip/br for HTTP responses
    /// and the web app's files when the request accepts them. `off`: neither.
    #[arg(long, env = "BANTER_COMPRESSION", value_enum, default_value_t = Switch::On)]
    pub compression: Switch,

    /// Proxies (comma-separated CIDR blocks or addresses, e.g. `10.0.0.0/8,::1`) whose
    /// `X-Forwarded-For` / `Forwarded` headers name the client's address for the per-address
    /// limits and the logs. From any other peer those headers are ignored. Default: none.
    #[arg(long, env = "BANTER_TRUSTED_PROXIES", default_value = "", hide_default_value = true, value_parser = parse_trusted_proxies)]
    pub trusted_proxies: TrustedProxies,

    /// On SIGTERM or SIGINT, how long `/readyz` answers 503 and new WebSockets are refused
    /// while open ones stay, before they are closed with 1001 (e.g. `5s`, `500ms`), so a load
    /// balancer stops routing here first.
    #[arg(long, env = "BANTER_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// How often this process's search indexer looks for messages to index (`0s`: no indexer
    /// here — searches still find everything, scanning what is not indexed, so at least one
    /// node of a cluster should index). Posts never wait for it.
    #[arg(long, env = "BANTER_SEARCH_INDEX_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub search_index_interval: Duration,
}

impl ServeArgs {
    /// The read replica's settings, if one is named.
    pub fn read_replica(&self) -> anyhow::Result<Option<ReadReplicaConfig>> {
        let Some(url) = self
            .database_read_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        else {
            return Ok(None);
        };
        let is_postgres = |url: &str| {
            matches!(
                banter_adapter_storage::DatabaseUrl::parse(url),
                Ok(banter_adapter_storage::DatabaseUrl::Postgres { .. })
            )
        };
        anyhow::ensure!(
            is_postgres(url),
            "--database-read-url must be a postgres:// URL"
        );
        anyhow::ensure!(
            is_postgres(&self.database.database_url),
            "--database-read-url needs a postgres:// --database-url (a replica of it)"
        );
        Ok(Some(ReadReplicaConfig {
            url: url.to_owned(),
            max_lag: self.replica_max_lag,
        }))
    }

    /// The search indexer's pause, or `None` for no indexer.
    pub fn search_indexer(&self) -> Option<Duration> {
        (!self.search_index_interval.is_zero()).then_some(self.search_index_interval)
    }
}

fn parse_trusted_proxies(raw: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(raw).map_err(|e| e.to_string())
}

/// A duration such as `0s`, `5s`, `500ms`, `1m 30s`.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("expected a duration such as 5s or 500ms, got {raw:?}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Auth {
    None,
    Jwt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    Memory,
    Redis(String),
}

impl Broker {
    fn parse(raw: &str) -> Result<Self, String> {
        if raw == "memory" {
            Ok(Broker::Memory)
        } else if raw.starts_with("redis://")
            || raw.starts_with(banter_adapter_redis::CLUSTER_SCHEME)
        {
            Ok(Broker::Redis(raw.to_owned()))
        } else if raw.starts_with("rediss://") {
            Err("TLS to Redis (rediss://) is not built in; use redis:// on a trusted network or a TLS tunnel".to_owned())
        } else {
            Err(format!(
                "expected `memory`, `redis://…` or `redis-cluster://…`, got {raw:?}"
            ))
        }
    }
}

fn parse_namespace(raw: &str) -> Result<String, String> {
    let valid = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "expected 1–64 ASCII letters, digits or `-_.:`, got {raw:?}"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitArg(Option<RateLimit>);

impl RateLimitArg {
    fn parse(raw: &str) -> Result<Self, String> {
        if raw == "off" {
            return Ok(Self(None));
        }
        let usage = || format!("expected BURST:PER_SECOND (e.g. 20:2) or off, got {raw:?}");
        let (burst, per_second) = raw.split_once(':').ok_or_else(usage)?;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(usage)
        };
        Ok(Self(Some(RateLimit {
            burst: number(burst)?,
            per_second: number(per_second)?,
        })))
    }

    pub fn limit(self) -> Option<RateLimit> {
        self.0
    }
}

impl ServeArgs {
    /// The history cache's settings: each connection behind its room's hub keeps the
    /// `--outbound-queue` bound.
    pub fn history_cache(&self) -> HistoryCache {
        HistoryCache {
            // The flag's range (0–10,000) fits every usize.
            messages: usize::try_from(self.history_cache).unwrap_or(HistoryCache::MAX_MESSAGES),
            queue: self.outbound_queue,
        }
    }

    /// Each subscriber's bound in the broadcaster. With the cache on, its subscribers are the
    /// room hubs, one per room, which must not lag when a connection may: they get at least
    /// the default bound.
    pub fn broadcast_queue(&self) -> usize {
        if self.history_cache > 0 {
            self.outbound_queue
                .max(banter_adapter_memory::MemoryBroadcaster::DEFAULT_CAPACITY)
        } else {
            self.outbound_queue
        }
    }

    pub fn http_settings(&self) -> anyhow::Result<HttpSettings> {
        let auth = match self.auth {
            Auth::None => AuthMode::None,
            Auth::Jwt => {
                let secret = self
                    .jwt_secret
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .context("--auth jwt needs a secret in BANTER_JWT_SECRET")?;
                AuthMode::jwt(secret.as_bytes())
            }
        };
        let allowed_origins = self
            .allowed_origins
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| AllowedOrigin::parse(o))
            .collect::<Result<Vec<_>, _>>()
            .context("--allowed-origins")?;
        anyhow::ensure!(
            self.max_connections > 0,
            "--max-connections must be at least 1"
        );
        anyhow::ensure!(
            self.max_connections_per_ip > 0,
            "--max-connections-per-ip must be at least 1"
        );
        anyhow::ensure!(
            self.outbound_queue > 0,
            "--outbound-queue must be at least 1"
        );
        let defaults = HttpSettings::default();
        Ok(HttpSettings {
            auth,
            allowed_origins,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            rest_rate_limit: self.rate_limit.limit(),
            compression: self.compression == Switch::On,
            trusted_proxies: self.trusted_proxies.clone(),
            ws: WsSettings {
                ping_interval: Duration::from_secs(self.ws_ping_interval),
                idle_timeout: Duration::from_secs(self.ws_idle_timeout),
                ..defaults.ws
            },
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_argument() {
        assert_eq!(RateLimitArg::parse("off").unwrap().limit(), None);
        let limit = RateLimitArg::parse("20:2").unwrap().limit().unwrap();
        assert_eq!((limit.burst.get(), limit.per_second.get()), (20, 2));
        for bad in ["20", "0:2", "20:0", "a:b", "20:2:1", ""] {
            let error = RateLimitArg::parse(bad).unwrap_err();
            assert!(
                error.contains("expected BURST:PER_SECOND"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["banter", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(args.database.database_url, "sqlite://banter.db");
        assert_eq!(args.broker, Broker::Memory);
        assert_eq!(args.auth, Auth::None);
        assert_eq!(args.max_connections, 10_000);
        assert_eq!(args.max_connections_per_ip, 100);
        assert_eq!(args.rate_limit.limit(), Some(RateLimit::DEFAULT));
        assert_eq!(args.history_cache().messages, 200);
        assert!(args.trusted_proxies.is_empty());
        assert_eq!(args.drain_delay, Duration::ZERO);
        assert_eq!(args.search_indexer(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn trusted_proxies_and_drain_delay_arguments() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(["banter", "serve"].iter().chain(extra)).map(|cli| {
                match cli.command {
                    Command::Serve(args) => args,
                    Command::Migrate(_) => panic!("serve"),
                }
            })
        };
        let args = parse(&[
            "--trusted-proxies",
            "10.0.0.0/8,::1",
            "--drain-delay",
            "500ms",
        ])
        .unwrap();
        assert!(args.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(args.trusted_proxies.contains("::1".parse().unwrap()));
        assert!(!args.trusted_proxies.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(args.drain_delay, Duration::from_millis(500));
        assert_eq!(
            parse(&["--drain-delay", "5s"]).unwrap().drain_delay,
            Duration::from_secs(5)
        );
        assert_eq!(
            parse(&["--search-index-interval", "0s"])
                .unwrap()
                .search_indexer(),
            None
        );
        let error = parse(&["--trusted-proxies", "10.0.0.0/8,nonsense"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"nonsense\" is not a CIDR block"),
            "{error}"
        );
        for bad in ["5", "soon", "-1s"] {
            assert!(parse(&["--drain-delay", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn history_cache_argument() {
        let parse = |raw: &str| {
            Cli::try_parse_from([
                "banter",
                "serve",
                "--history-cache",
                raw,
                "--outbound-queue",
                "8",
            ])
            .map(|cli| match cli.command {
                Command::Serve(args) => (args.history_cache(), args.broadcast_queue()),
                Command::Migrate(_) => panic!("serve"),
            })
        };
        let (off, queue) = parse("0").unwrap();
        assert_eq!(
            (off.messages, off.queue, queue),
            (0, 8, 8),
            "off: as before"
        );
        let (on, queue) = parse("10000").unwrap();
        assert_eq!((on.messages, on.queue), (10_000, 8));
        assert_eq!(
            queue, 1024,
            "the hubs' own subscriptions keep the default bound"
        );
        for bad in ["10001", "-1", "x"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jwt_needs_a_secret_and_origins_must_parse() {
        let cli = Cli::try_parse_from(["banter", "serve", "--auth", "jwt"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        if std::env::var("BANTER_JWT_SECRET").is_err() {
            assert!(args.http_settings().is_err());
        }
        let cli = Cli::try_parse_from([
            "banter",
            "serve",
            "--allowed-origins",
            "https://a.example,bad",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert!(args.http_settings().is_err());
        assert!(Cli::try_parse_from(["banter", "serve", "--broker", "kafka://x"]).is_err());
    }

    #[test]
    fn broker_and_namespace_arguments() {
        let cli = Cli::try_parse_from([
            "banter",
            "serve",
            "--broker",
            "redis://127.0.0.1:6379/2",
            "--redis-namespace",
            "chat-eu:1",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(
            args.broker,
            Broker::Redis("redis://127.0.0.1:6379/2".to_owned())
        );
        assert_eq!(args.redis_namespace, "chat-eu:1");
        assert_eq!(args.redis_timeout, 3, "the default");
        for (raw, ok) in [("1", true), ("10", true), ("0", false), ("11", false)] {
            let parsed = Cli::try_parse_from(["banter", "serve", "--redis-timeout", raw]);
            assert_eq!(parsed.is_ok(), ok, "--redis-timeout {raw}");
        }
        assert!(Cli::try_parse_from(["banter", "serve", "--broker", "rediss://x"]).is_err());
        let cluster = "redis-cluster://127.0.0.1:7000,127.0.0.1:7001";
        let cli = Cli::try_parse_from(["banter", "serve", "--broker", cluster]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.broker, Broker::Redis(cluster.to_owned()));
        for bad in ["", "has space", "ünï", &"x".repeat(65)] {
            assert!(
                Cli::try_parse_from(["banter", "serve", "--redis-namespace", bad]).is_err(),
                "{bad:?}"
            );
        }
    }
}
