//! # banter-adapter-storage
//!
//! The [`MessageStore`] port on diesel + diesel-async, pooled by bb8, for SQLite (through
//! `SyncConnectionWrapper`, with the bundled libsqlite3) or Postgres (`AsyncPgConnection`),
//! picked at run time from the database URL. One code path serves both: queries are written
//! once and expanded per backend by a macro.
//!
//! Posts go through writer tasks, each owning a share of the rooms, that gather concurrent
//! posts into a single transaction (group commit) and answer each caller only after its batch
//! committed. Seqs are assigned inside that transaction by bumping the room's `last_seq`, so
//! they are gapless and in commit order, also with several processes on one Postgres database.
//!
//! May depend on: `banter-domain`, diesel, diesel-async, diesel_migrations, bb8, tokio,
//! metrics (the facade only) and tracing.

mod access;
mod batch;
mod change;
mod explain;
mod indexer;
mod migrate;
mod pool;
mod reading;
mod reads;
mod replica;
mod rows;
mod schema;
mod search;
mod statements;
mod writer;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use banter_domain::ports::{MessageStore, StoreError};
use banter_domain::{
    Appended, ChangeRefusal, ChangeRequest, Changed, ChangesPage, ChangesQuery, HistoryPage,
    HistoryQuery, NewMessage, PageLimit, ReadMark, Rev, RoomAccess, RoomName, SearchPage,
    SearchQuery, SearchScope, Seq, StoredRoomsPage, UserRoom, Username,
};
use tokio::sync::{mpsc, oneshot};

pub use explain::QueryPlan;
pub use pool::DatabaseUrl;
use pool::Pools;
pub use replica::{FencedBroadcaster, FencedSubscription, ReadFence};
use writer::{Job, Writer};

/// What can go wrong in this adapter. Turned into [`StoreError::Unavailable`] at the port.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("cannot migrate the database: {0}")]
    Migration(String),
    #[error("no database connection became available: {0}")]
    Pool(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("the batch was not committed: {0}")]
    Commit(String),
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("the store is shut down")]
    Closed,
    #[error("the read replica: {0}")]
    Replica(String),
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for StorageError {
    fn from(e: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        StorageError::Pool(e.to_string())
    }
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        StoreError::Unavailable {
            reason: e.to_string(),
        }
    }
}

/// How the store connects and commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub url: DatabaseUrl,
    /// Pooled connections (the writer uses one of them while it commits).
    pub pool_size: u32,
    /// Most posts per transaction; 1 turns group commit off.
    pub max_batch: usize,
    /// Posts waiting for a writer before callers wait for room in the queue.
    pub queue_capacity: usize,
    /// Writer tasks committing batches concurrently, each owning a share of the rooms (by a
    /// hash of the name). SQLite has one writer at a time anyway; on Postgres writers with
    /// disjoint rooms overlap their commits, which the server flushes together.
    pub writers: usize,
    /// How long a writer may wait to fill a batch when the previous one was bigger.
    pub max_linger: Duration,
    /// How often the search indexer looks for new messages; `None`: no indexer in this
    /// process (searches then scan what is not indexed, which stays correct but gets slow).
    pub search_index_interval: Option<Duration>,
    /// A Postgres streaming replica for reads (history, changes, rooms, search, unread).
    pub read_replica: Option<ReadReplicaConfig>,
}

/// Where reads may go besides the primary, and how stale they may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReplicaConfig {
    /// `postgres://…` of a hot standby of the primary.
    pub url: String,
    /// Beyond this lag every read goes to the primary.
    pub max_lag: Duration,
}

impl StoreConfig {
    pub fn new(url: DatabaseUrl) -> Self {
        let writers = match url {
            DatabaseUrl::Sqlite { .. } => 1,
            DatabaseUrl::Postgres { .. } => DEFAULT_POSTGRES_WRITERS,
        };
        Self {
            url,
            pool_size: 8,
            max_batch: 512,
            queue_capacity: 8192,
            writers,
            max_linger: Duration::from_millis(1),
            search_index_interval: Some(DEFAULT_SEARCH_INDEX_INTERVAL),
            read_replica: None,
        }
    }
}

/// Writers on Postgres: enough to overlap one batch's commit with the next one's statements.
const DEFAULT_POSTGRES_WRITERS: usize = 2;

/// The search indexer's pause between batches once it has caught up: what a search may have
/// to scan without the index is about this much of traffic.
pub const DEFAULT_SEARCH_INDEX_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Inner {
    pools: Pools,
    /// One queue per writer; a room's posts always go to the same one, in order.
    queues: Vec<mpsc::Sender<Job>>,
    writers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    search_index_interval: Option<Duration>,
    /// Nanoseconds the writers spent committing (see [`Store::start_indexer`]).
    writers_busy: Arc<AtomicU64>,
    indexer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    settled_public: access::SettledPublic,
    /// What this node has shown, per room; reads on the replica must reflect it.
    fence: ReadFence,
    replica: Option<Arc<replica::Replica>>,
    replica_monitor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The message store. Cheap to clone; every clone feeds the same writer.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Connects (failing fast if the database cannot be reached) and starts the writer task.
    /// Does not migrate: call [`Store::migrate`].
    ///
    /// # Errors
    /// [`StorageError::Connect`] when the database cannot be opened.
    pub async fn open(config: StoreConfig) -> Result<Self, StorageError> {
        let writers = config.writers.max(1);
        // Each writer holds a connection while it commits; readers need some too.
        let pool_size = config.pool_size.max(writers as u32 + 2);
        let pools = Pools::open(&config.url, pool_size).await?;
        let capacity = (config.queue_capacity / writers).max(1);
        let fence = ReadFence::default();
        let (replica, replica_monitor) = match (&config.read_replica, &config.url) {
            (None, _) => (None, None),
            (Some(read), DatabaseUrl::Postgres { url }) => {
                let replica =
                    replica::Replica::open(&read.url, pool_size, read.max_lag, fence.clone())
                        .await?;
                let monitor = tokio::spawn(replica::monitor(
                    Arc::downgrade(&replica),
                    url.clone(),
                    read.url.clone(),
                ));
                (Some(replica), Some(monitor))
            }
            (Some(_), DatabaseUrl::Sqlite { .. }) => {
                return Err(StorageError::Replica(
                    "a read replica needs a postgres:// primary".to_owned(),
                ));
            }
        };
        let writers_busy = Arc::new(AtomicU64::new(0));
        let (queues, handles) = (0..writers)
            .map(|_| {
                let (jobs, queue) = mpsc::channel(capacity);
                let writer = Writer::new(
                    pools.clone(),
                    config.max_batch.max(1),
                    config.max_linger,
                    Arc::clone(&writers_busy),
                );
                (jobs, tokio::spawn(writer.run(queue)))
            })
            .unzip();
        Ok(Self {
            inner: Arc::new(Inner {
                pools,
                queues,
                writers: std::sync::Mutex::new(handles),
                search_index_interval: config.search_index_interval,
                writers_busy,
                indexer: std::sync::Mutex::new(None),
                settled_public: access::SettledPublic::default(),
                fence,
                replica,
                replica_monitor: std::sync::Mutex::new(replica_monitor),
            }),
        })
    }

    /// Applies the embedded migrations of the backend in use. Safe to run from several
    /// processes at once on Postgres (they take turns on an advisory lock).
    ///
    /// # Errors
    /// [`StorageError::Migration`] when a migration fails.
    pub async fn migrate(&self) -> Result<Vec<String>, StorageError> {
        let applied = migrate::migrate(&self.inner.pools).await?;
        self.start_indexer();
        Ok(applied)
    }

    /// Starts the search indexer (once the schema is there, so from [`Store::migrate`]).
    fn start_indexer(&self) {
        let Some(interval) = self.inner.search_index_interval else {
            return;
        };
        let mut slot = self
            .inner
            .indexer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_some() {
            return;
        }
        let load = indexer::WriterLoad::new(
            Arc::clone(&self.inner.writers_busy),
            self.inner.queues.len(),
        );
        // Weak: a store dropped without `close` still lets go of its connections.
        let store = Arc::downgrade(&self.inner);
        *slot = Some(tokio::spawn(indexer::run(store, interval, load)));
    }

    /// Indexes what is waiting, now, until the index has caught up; returns how many messages
    /// it took. For tests and tools: the background indexer does this on its own.
    ///
    /// # Errors
    /// [`StorageError`] when the database fails.
    pub async fn index_search_now(&self) -> Result<usize, StorageError> {
        let mut total = 0;
        let mut connection = self.inner.pools.dedicated().await?;
        loop {
            let step = search::index_pending(&mut connection).await?;
            total += step.taken;
            if step.caught_up {
                return Ok(total);
            }
        }
    }

    /// Which backend this store uses: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.inner.pools {
            Pools::Sqlite(_) => "sqlite",
            Pools::Postgres(_) => "postgres",
        }
    }

    /// The query plans of the history and listing queries, for checking index use.
    ///
    /// # Errors
    /// [`StorageError::Query`] when EXPLAIN fails.
    pub async fn explain_history_queries(&self) -> Result<Vec<QueryPlan>, StorageError> {
        explain::explain(&self.inner.pools).await
    }

    /// The fence of what this node has shown: give it to [`FencedBroadcaster`] so that
    /// delivered events keep reads on a lagging replica from going back in time.
    pub fn read_fence(&self) -> Option<ReadFence> {
        self.inner
            .replica
            .as_ref()
            .map(|_| self.inner.fence.clone())
    }

    /// Whether a read of `room` (`None`: across rooms) would go to the replica now.
    pub fn reads_from_replica(&self, room: Option<&RoomName>) -> bool {
        self.inner
            .replica
            .as_ref()
            .is_some_and(|replica| replica.usable_for(room))
    }

    /// Stops taking posts, commits those already queued and waits for the writers to finish.
    pub async fn close(&self) {
        if let Some(monitor) = self
            .inner
            .replica_monitor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            monitor.abort();
        }
        if let Some(indexer) = self
            .inner
            .indexer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            indexer.abort();
        }
        for queue in &self.inner.queues {
            let _ = queue.send(Job::Close).await;
        }
        let handles = std::mem::take(
            &mut *self
                .inner
                .writers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for handle in handles {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "a store writer task failed");
            }
        }
    }
}

/// Runs a read on the replica when [`replica::Replica::usable_for`] allows it, else (or when
/// the replica fails or hangs) on the primary. `$pools` is bound to the chosen pools in `$read`.
macro_rules! routed_read {
    ($store:expr, $room:expr, |$pools:ident| $read:expr) => {{
        let store: &Store = $store;
        let on_replica = match &store.inner.replica {
            Some(replica) if replica.usable_for($room) => {
                let $pools = &replica.pools;
                match tokio::time::timeout(replica::READ_TIMEOUT, $read).await {
                    Ok(Ok(answer)) => Some(answer),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "a read on the replica failed; reading the primary");
                        replica.failed();
                        None
                    }
                    Err(_) => {
                        tracing::warn!("a read on the replica timed out; reading the primary");
                        replica.failed();
                        None
                    }
                }
            }
            _ => None,
        };
        match on_replica {
            Some(answer) => {
                metrics::counter!("banter_store_reads_total", "server" => "replica").increment(1);
                Ok(answer)
            }
            None => {
                let $pools = &store.inner.pools;
                let answer = $read.await;
                if store.inner.replica.is_some() {
                    metrics::counter!("banter_store_reads_total", "server" => "primary")
                        .increment(1);
                    // What the primary showed, later replica reads must show too.
                    if answer.is_ok() {
                        store.inner.fence.shown($room);
                    }
                }
                answer
            }
        }
    }};
}

impl Store {
    /// Records what a committed write or a read answered by the primary showed (`None`: every
    /// room), so that no later read of this node from the replica shows less. Only needed
    /// with a replica.
    fn shown(&self, room: Option<&RoomName>) {
        if self.inner.replica.is_some() {
            self.inner.fence.shown(room);
        }
    }

    /// The queue of the writer that owns `room`.
    fn queue_of(&self, room: &RoomName) -> &mpsc::Sender<Job> {
        // `open` starts at least one writer, and `shard` stays below the count.
        &self.inner.queues[room.shard(self.inner.queues.len())]
    }
}

/// The wall clock in Unix milliseconds, for `created_at`.
pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

impl MessageStore for Store {
    async fn append(&self, post: NewMessage) -> Result<Appended, StoreError> {
        let started = std::time::Instant::now();
        let (reply, answer) = oneshot::channel();
        let post_room = self.inner.replica.as_ref().map(|_| post.room.clone());
        self.queue_of(&post.room)
            .send(Job::Append { post, reply })
            .await
            .map_err(|_| StorageError::Closed)?;
        let appended = answer.await.map_err(|_| StorageError::Closed)??;
        if let Some(room) = &post_room {
            self.inner.fence.touch(room);
        }
        metrics::histogram!("banter_store_seconds").record(started.elapsed().as_secs_f64());
        Ok(appended)
    }

    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        Ok(routed_read!(self, Some(room), |pools| reads::history(
            pools, room, query
        ))?)
    }

    async fn change(
        &self,
        request: ChangeRequest,
    ) -> Result<Result<Changed, ChangeRefusal>, StoreError> {
        let started = std::time::Instant::now();
        let room = self.inner.replica.as_ref().map(|_| request.room.clone());
        let decided = change::change(&self.inner.pools, request).await?;
        if let Some(room) = &room {
            self.shown(Some(room));
        }
        metrics::histogram!("banter_store_seconds").record(started.elapsed().as_secs_f64());
        Ok(decided)
    }

    async fn changes(
        &self,
        room: &RoomName,
        query: ChangesQuery,
    ) -> Result<ChangesPage, StoreError> {
        Ok(routed_read!(self, Some(room), |pools| reads::changes(
            pools, room, query
        ))?)
    }

    async fn revisions(
        &self,
        room: &RoomName,
        after: Rev,
        limit: PageLimit,
    ) -> Result<ChangesPage, StoreError> {
        Ok(routed_read!(self, Some(room), |pools| reads::revisions(
            pools, room, after, limit
        ))?)
    }

    async fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: PageLimit,
    ) -> Result<StoredRoomsPage, StoreError> {
        Ok(routed_read!(self, None, |pools| reads::rooms(
            pools, after, limit
        ))?)
    }

    async fn mark_read(
        &self,
        room: &RoomName,
        user: &Username,
        seq: Seq,
    ) -> Result<ReadMark, StoreError> {
        let mark = reading::mark_read(&self.inner.pools, room, user, seq).await?;
        self.shown(Some(room));
        Ok(mark)
    }

    async fn read_position(&self, room: &RoomName, user: &Username) -> Result<Seq, StoreError> {
        let seq = reading::read_position(&self.inner.pools, room, user).await?;
        self.shown(Some(room));
        Ok(seq)
    }

    async fn user_rooms(&self, user: &Username) -> Result<Vec<UserRoom>, StoreError> {
        Ok(routed_read!(self, None, |pools| reading::user_rooms(
            pools, user
        ))?)
    }

    async fn create_private_room(
        &self,
        room: &RoomName,
        creator: &Username,
    ) -> Result<bool, StoreError> {
        let created = access::create_private_room(&self.inner.pools, room, creator).await?;
        self.shown(Some(room));
        Ok(created)
    }

    async fn room_access(&self, room: &RoomName) -> Result<RoomAccess, StoreError> {
        // Not fenced: every read of a room checks its access first, and fencing here would
        // send each of them to the primary.
        Ok(access::room_access(&self.inner.pools, &self.inner.settled_public, room).await?)
    }

    async fn set_member(
        &self,
        room: &RoomName,
        user: &Username,
        member: bool,
    ) -> Result<bool, StoreError> {
        let changed = access::set_member(&self.inner.pools, room, user, member).await?;
        self.shown(Some(room));
        Ok(changed)
    }

    async fn member_rooms(&self, user: &Username) -> Result<Vec<RoomName>, StoreError> {
        // Not fenced: it filters other reads rather than being shown, and fencing every room
        // here would send every read across rooms that follows it to the primary.
        Ok(access::member_rooms(&self.inner.pools, user).await?)
    }

    async fn search(
        &self,
        scope: &SearchScope,
        query: &SearchQuery,
        limit: PageLimit,
    ) -> Result<SearchPage, StoreError> {
        let room = match scope {
            SearchScope::Room { room, .. } => Some(room),
            SearchScope::Readable { .. } => None,
        };
        Ok(routed_read!(self, room, |pools| search::search(
            pools, scope, query, limit
        ))?)
    }

    async fn check(&self) -> Result<(), StoreError> {
        // A writer that stopped (it cannot, short of a panic) leaves its rooms unable to post.
        if self.inner.queues.iter().any(mpsc::Sender::is_closed) {
            return Err(StorageError::Closed.into());
        }
        Ok(reads::ping(&self.inner.pools).await?)
    }
}
