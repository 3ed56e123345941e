//! # banter-testkit
//!
//! Helpers for tests that need real services. Postgres tests get a fresh database each
//! ([`TestDatabase`]); whether a missing service fails the test or skips it is decided in one
//! place ([`services_required`]).
//!
//! Redis tests get a namespace of their own ([`unique_namespace`]) on the server that
//! [`redis_url`] checked, and a [`TcpProxy`] to make a broker disappear.
//!
//! [`PostgresPair`] starts a primary and a streaming replica of the test's own,
//! [`RedisCluster`] a Redis Cluster.
//!
//! The ports' contract suites live in [`contract`]: generic over the port traits, run against
//! every adapter and against the application's fakes.
//!
//! May depend on: `banter-domain` (the ports the contracts bind), diesel, diesel-async (to
//! create and drop databases), the redis client (to check that Redis answers) and tokio.
//! Dev-only.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: failing loudly is the point

pub mod contract;
mod redis_cluster;
mod redis_server;
mod replica;

pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
pub use replica::PostgresPair;

use std::sync::atomic::{AtomicU32, Ordering};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// The server used when `BANTER_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether a missing Postgres or Redis must fail the run (CI) rather than skip.
pub fn services_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("BANTER_REQUIRE_SERVICES")
}

/// Reports a missing service: panics when services are required, else prints a visible
/// skip notice and returns.
pub fn missing_service(service: &str, why: &str) {
    if services_required() {
        panic!("{service} is required (BANTER_REQUIRE_SERVICES is set) but unavailable: {why}");
    }
    eprintln!(
        "\n*** SKIPPED: {service} unavailable ({why}); set BANTER_REQUIRE_SERVICES=1 to make this fail ***\n"
    );
}

/// The Postgres server tests may create databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("BANTER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A database created for one test, dropped by [`TestDatabase::drop_now`] (or left behind for
/// the next run's sweep if the test panicked first).
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn with_database(url: &str, name: &str) -> String {
    // Replace the path of postgres://user@host:port/db?params with the new name.
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDatabase {
    /// Creates an empty database on the test server, or `None` when the server does not
    /// answer and services are not required.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = postgres_admin_url();
        let mut admin = match AsyncPgConnection::establish(&admin_url).await {
            Ok(conn) => conn,
            Err(e) => {
                missing_service("PostgreSQL", &format!("{admin_url}: {e}"));
                return None;
            }
        };
        // Once per process: leftovers of dead runs do not change while tests run.
        if !SWEPT.swap(true, Ordering::SeqCst) {
            sweep_stale(&mut admin).await;
        }
        // The process id comes first: the sweep reads it to tell abandoned databases.
        let name = format!("banter_test_{}", unique_suffix("_"));
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        Some(TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }

    /// Drops the database, disconnecting whoever still uses it.
    pub async fn drop_now(self) {
        if let Ok(mut admin) = AsyncPgConnection::establish(&self.admin_url).await {
            drop_database(&mut admin, &self.name).await;
        }
    }
}

/// The Redis server used when `BANTER_TEST_REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Redis server for tests, once it answered a `PING`; `None` when it does not answer and
/// services are not required.
pub async fn redis_url() -> Option<String> {
    let url =
        std::env::var("BANTER_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), ping).await {
        Ok(Ok(())) => Some(url),
        Ok(Err(e)) => {
            missing_service("Redis", &format!("{url}: {e}"));
            None
        }
        Err(_) => {
            missing_service("Redis", &format!("{url}: no answer within 3 s"));
            None
        }
    }
}

/// A Redis key namespace no other test (or test run) uses.
pub fn unique_namespace(tag: &str) -> String {
    format!("banter-test:{tag}:{}", unique_suffix(":"))
}

/// Process id, a per-process counter and the clock's nanoseconds, joined by `separator`.
fn unique_suffix(separator: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    [
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        nanos,
    ]
    .map(|part| part.to_string())
    .join(separator)
}

/// A TCP proxy in front of a service, whose connections a test can cut (a broker that goes
/// away), freeze (a broker that hangs) and whose listener it can stop and restart on the same
/// port.
#[derive(Debug)]
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    upstream: String,
    accepting: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// While true, nothing is relayed either way; connections stay open.
    frozen: tokio::sync::watch::Sender<bool>,
}

/// Copies `from` to `to` until either side closes, holding still while `frozen`.
async fn relay_one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // Bytes read just before a freeze are held until it thaws, like a stalled peer.
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl TcpProxy {
    /// Starts forwarding a loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = TcpProxy {
            addr: listener.local_addr().unwrap(),
            upstream: upstream.to_owned(),
            accepting: std::sync::Mutex::new(None),
            connections: Default::default(),
            frozen: tokio::sync::watch::Sender::new(false),
        };
        proxy.accept_on(listener);
        proxy
    }

    fn accept_on(&self, listener: tokio::net::TcpListener) {
        let upstream = self.upstream.clone();
        let connections = std::sync::Arc::clone(&self.connections);
        let frozen = self.frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let frozen = frozen.subscribe();
                let relay = tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        // Either direction ending ends the connection.
                        tokio::select! {
                            () = relay_one_way(client_read, server_write, frozen.clone()) => {}
                            () = relay_one_way(server_read, client_write, frozen) => {}
                        }
                    }
                });
                connections.lock().unwrap().push(relay);
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
    }

    /// Closes every open connection through the proxy; new ones are still accepted.
    pub fn cut(&self) {
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    /// Stops accepting and closes every connection: the service is gone.
    pub fn stop(&self) {
        if let Some(task) = self.accepting.lock().unwrap().take() {
            task.abort();
        }
        self.cut();
    }

    /// Stops relaying without closing anything: the service hangs.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Relays again what was held and what comes next.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Accepts again on the same port.
    pub async fn resume(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.accept_on(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(diesel::QueryableByName)]
struct DatabaseName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    datname: String,
}

/// Drops a database whoever still uses it; a failure only leaves it for the next sweep.
async fn drop_database(admin: &mut AsyncPgConnection, name: &str) {
    let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(admin)
        .await;
}

/// Drops test databases left by processes that no longer run (a test that panicked).
async fn sweep_stale(admin: &mut AsyncPgConnection) {
    let Ok(names) =
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'banter_test_%'")
            .load::<DatabaseName>(admin)
            .await
    else {
        return;
    };
    for DatabaseName { datname } in names {
        let pid = datname
            .split('_')
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            drop_database(admin, &datname).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaces_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
