//! Connection pools for both backends, chosen at run time from the database URL.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use diesel::{ConnectionError, ConnectionResult, SqliteConnection};
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use crate::StorageError;

/// SQLite through diesel-async: the sync connection runs on tokio's blocking pool.
pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH` (relative or absolute; `sqlite:///abs/path` works too).
    Sqlite { path: String },
    /// `postgres://…` or `postgresql://…`, passed to the driver as-is.
    Postgres { url: String },
}

impl DatabaseUrl {
    /// Parses the URL's scheme; the rest is the driver's business.
    ///
    /// # Errors
    /// [`StorageError::UnsupportedUrl`] for any other scheme or an empty SQLite path.
    pub fn parse(url: &str) -> Result<Self, StorageError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StorageError::UnsupportedUrl(url.to_owned()));
            }
            Ok(Self::Sqlite {
                path: path.to_owned(),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres {
                url: url.to_owned(),
            })
        } else {
            Err(StorageError::UnsupportedUrl(url.to_owned()))
        }
    }
}

/// The pool of whichever backend is in use.
#[derive(Clone)]
pub(crate) enum Pools {
    Sqlite(Pool<SqliteConn>),
    Postgres(Pool<AsyncPgConnection>),
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pools::Sqlite(p) => write!(f, "Pools::Sqlite({:?})", p.state()),
            Pools::Postgres(p) => write!(f, "Pools::Postgres({:?})", p.state()),
        }
    }
}

/// Per-connection SQLite settings. `busy_timeout` first, so switching to WAL waits for a lock
/// instead of failing. `synchronous = FULL` syncs the WAL on every commit: a message is on disk
/// before anyone is shown it, even across a power loss; group commit pays for it.
const SQLITE_SETUP: &str = "PRAGMA busy_timeout = 10000; \
                            PRAGMA journal_mode = WAL; \
                            PRAGMA synchronous = FULL; \
                            PRAGMA temp_store = MEMORY; \
                            PRAGMA foreign_keys = ON;";

type SetupFuture<'a, C> = Pin<Box<dyn Future<Output = ConnectionResult<C>> + Send + 'a>>;

fn establish_sqlite(path: &str) -> SetupFuture<'_, SqliteConn> {
    Box::pin(async move {
        let mut conn = SqliteConn::establish(path).await?;
        conn.batch_execute(SQLITE_SETUP)
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    })
}

const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

impl Pools {
    pub async fn open(url: &DatabaseUrl, size: u32) -> Result<Self, StorageError> {
        match url {
            DatabaseUrl::Sqlite { path } => {
                if let Some(parent) = std::path::Path::new(path)
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        StorageError::Connect(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.custom_setup = Box::new(establish_sqlite);
                // A local file cannot go stale: skip the validation query on every checkout.
                config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::new_with_config(path.as_str(), config);
                Ok(Pools::Sqlite(checked_pool(manager, size).await?))
            }
            DatabaseUrl::Postgres { url } => {
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url.as_str());
                Ok(Pools::Postgres(checked_pool(manager, size).await?))
            }
        }
    }
}

impl Pools {
    /// The read replica's pool: opened without connecting (a replica that is down must not
    /// keep the node from starting), and failing fast rather than retrying, so that reads
    /// routed to a replica that just died go to the primary at once.
    pub fn open_replica(url: &str, size: u32) -> Self {
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
        Pools::Postgres(
            Pool::builder()
                .max_size(size)
                .min_idle(Some(0))
                .retry_connection(false)
                .connection_timeout(REPLICA_CONNECTION_TIMEOUT)
                .build_unchecked(manager),
        )
    }
}

/// How long a read waits for a connection to the replica before going to the primary.
const REPLICA_CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection of its own, outside the pool, for a long-running background task.
pub(crate) enum Dedicated {
    Sqlite(SqliteConn),
    // Boxed: one per process, and it keeps the enum small.
    Postgres(Box<AsyncPgConnection>),
}

impl Pools {
    /// Opens a connection outside the pool (set up as the pool's are). The search indexer
    /// keeps one: taking it from the pool, even once, measurably slowed Postgres posting (-20 %
    /// at saturation: the writers then spread over one more backend).
    pub async fn dedicated(&self) -> Result<Dedicated, StorageError> {
        match self {
            Pools::Sqlite(pool) => pool
                .dedicated_connection()
                .await
                .map(Dedicated::Sqlite)
                .map_err(|e| StorageError::Pool(e.to_string())),
            Pools::Postgres(pool) => pool
                .dedicated_connection()
                .await
                .map(|conn| Dedicated::Postgres(Box::new(conn)))
                .map_err(|e| StorageError::Pool(e.to_string())),
        }
    }
}

/// Builds a pool and opens one connection at once, so a bad URL fails at start-up with the
/// driver's reason rather than at the first query.
async fn checked_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    size: u32,
) -> Result<Pool<C>, StorageError>
where
    C: 'static,
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = PoolError>,
{
    let pool = Pool::builder()
        .max_size(size)
        .connection_timeout(CONNECTION_TIMEOUT)
        .build(manager)
        .await
        .map_err(|e| StorageError::Connect(e.to_string()))?;
    pool.dedicated_connection()
        .await
        .map_err(|e| StorageError::Connect(e.to_string()))?;
    Ok(pool)
}

/// Runs one async diesel body against whichever backend is in use. Inside `$body`, `$conn` is
/// a `&mut` connection of the backend's type and `diesel_async::RunQueryDsl` is in scope.
macro_rules! with_connection {
    ($pools:expr, |$conn:ident| $body:expr) => {
        match $pools {
            $crate::pool::Pools::Sqlite(pool) => {
                let mut pooled = pool.get().await.map_err($crate::StorageError::from)?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::pool::Pools::Postgres(pool) => {
                let mut pooled = pool.get().await.map_err($crate::StorageError::from)?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
}
pub(crate) use with_connection;
