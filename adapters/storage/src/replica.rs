//! Reads from a Postgres streaming replica, never staler than what this node has shown.
//!
//! The rule (contract: `--database-read-url`, `--replica-max-lag`): a read may go to the
//! replica only when the replica holds every commit this node has already delivered or
//! acknowledged for what is read, and lags the primary by at most the allowed lag; otherwise,
//! or when the replica fails, it goes to the primary.
//!
//! How the node knows, without comparing data:
//! - A monitor samples the primary's WAL insert position `L` at time `t` (taken *before* the
//!   query, so every commit finished before `t` ends at or below `L`), then the replica's
//!   replay position `R`. Once `R ≥ L`, every commit finished before `t` is visible on the
//!   replica: `t` is the replica's *safe time*. Lag is now minus the safe time.
//! - The [`ReadFence`] remembers, per room, when this node last delivered an event that
//!   changes what a read returns (a message, an edit, a read position, a membership),
//!   committed a write, or answered a read from the primary. What those showed was committed
//!   before that instant. A read across rooms answered by the primary fences every room.
//! - A read of a room may use the replica when its safe time is at or after the room's
//!   fence; a read across rooms (room list, search everywhere, unread counts) when it is at
//!   or after the newest fence of all.
//!
//! So a busy room is read from the primary and a quiet one from the replica; both are exact.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use banter_domain::ports::{
    BroadcastError, EventBroadcaster, EventSubscription, SubscriptionError,
};
use banter_domain::{EventEnvelope, RoomEvent, RoomName};
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::StorageError;
use crate::pool::Pools;

/// How often the monitor compares the primary's and the replica's WAL positions: the lag is
/// known to this resolution, so a room is read from the replica once it has been quiet for
/// about this long plus the replication delay.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// A read sent to the replica that takes longer is abandoned and sent to the primary (a
/// replica that hangs rather than refusing must not hang the reads).
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Primary positions kept while the replica is behind; older ones are dropped, which only
/// makes the safe time older (conservative).
const MAX_SAMPLES: usize = 1024;

/// Instants as nanoseconds since the fence was made, so they fit in atomics.
#[derive(Debug)]
struct Clock {
    base: Instant,
}

impl Clock {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug)]
struct FenceState {
    clock: Clock,
    /// Per room: the last delivery or write that a read of it must reflect.
    rooms: Mutex<HashMap<RoomName, u64>>,
    /// The newest of all of them, for reads across rooms.
    newest: AtomicU64,
    /// Every room's fence is at least this: a read across rooms answered by the primary
    /// showed every room as of then.
    floor: AtomicU64,
}

/// What this node has shown, per room, as instants. Cheap to clone; all clones share it.
#[derive(Debug, Clone)]
pub struct ReadFence {
    state: Arc<FenceState>,
}

impl Default for ReadFence {
    fn default() -> Self {
        Self {
            state: Arc::new(FenceState {
                clock: Clock {
                    base: Instant::now(),
                },
                rooms: Mutex::new(HashMap::new()),
                newest: AtomicU64::new(0),
                floor: AtomicU64::new(0),
            }),
        }
    }
}

impl ReadFence {
    /// Records that `room`'s state as of now has been (or is about to be) shown.
    pub fn touch(&self, room: &RoomName) {
        // +1: "at or after" must hold for a sample taken in the same nanosecond tick.
        let now = self.state.clock.nanos(Instant::now()) + 1;
        {
            let mut rooms = self
                .state
                .rooms
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match rooms.get_mut(room) {
                Some(at) => *at = (*at).max(now),
                None => {
                    rooms.insert(room.clone(), now);
                }
            }
        }
        self.state.newest.fetch_max(now, Ordering::AcqRel);
    }

    /// Records that every room's state as of now has been shown (a read across rooms).
    pub fn touch_all(&self) {
        let now = self.state.clock.nanos(Instant::now()) + 1;
        self.state.floor.fetch_max(now, Ordering::AcqRel);
        self.state.newest.fetch_max(now, Ordering::AcqRel);
    }

    /// Records what a read of `room` (`None`: across rooms) showed.
    pub(crate) fn shown(&self, room: Option<&RoomName>) {
        match room {
            Some(room) => self.touch(room),
            None => self.touch_all(),
        }
    }

    /// What a read of `room` (or, for `None`, of every room) must reflect.
    fn required(&self, room: Option<&RoomName>) -> u64 {
        match room {
            Some(room) => self
                .state
                .rooms
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(room)
                .copied()
                .unwrap_or(0)
                .max(self.state.floor.load(Ordering::Acquire)),
            None => self.state.newest.load(Ordering::Acquire),
        }
    }

    /// Forgets rooms whose fence is older than `before`: a replica that may be used at all
    /// (lag within bounds) is past them anyway.
    fn prune(&self, before: u64) {
        self.state
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, at| *at >= before);
    }

    fn now(&self) -> u64 {
        self.state.clock.nanos(Instant::now())
    }

    #[cfg(test)]
    fn tracked_rooms(&self) -> usize {
        self.state
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Whether a room event changes what a read returns (presence and typing do not).
fn changes_reads(event: &RoomEvent) -> bool {
    !matches!(event, RoomEvent::Presence { .. } | RoomEvent::Typing { .. })
}

/// The replica's pools and what the monitor last learnt about it.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) pools: Pools,
    fence: ReadFence,
    max_lag_nanos: u64,
    /// The replica's safe time (see the module doc), in the fence's clock; 0 until a sample
    /// has shown the replica past a primary position.
    safe_at: AtomicU64,
    /// False after the replica failed a sample or a read, until a sample succeeds.
    healthy: AtomicBool,
}

impl Replica {
    /// Opens the replica's pool and checks that it is a standby.
    pub(crate) async fn open(
        url: &str,
        pool_size: u32,
        max_lag: Duration,
        fence: ReadFence,
    ) -> Result<Arc<Self>, StorageError> {
        let pools = Pools::open_replica(url, pool_size);
        // A replica that answers must be a standby (a primary here would be a configuration
        // mistake); one that does not answer yet is only not read until it does.
        match AsyncPgConnection::establish(url).await {
            Ok(mut probe) => {
                if replay_position(&mut probe).await?.is_none() {
                    return Err(StorageError::Replica(
                        "the read URL names a server that is not a standby \
                         (pg_is_in_recovery() is false)"
                            .to_owned(),
                    ));
                }
            }
            Err(e) => tracing::warn!(
                error = %e,
                "the read replica does not answer; reads go to the primary until it does"
            ),
        }
        Ok(Arc::new(Self {
            pools,
            fence,
            max_lag_nanos: u64::try_from(max_lag.as_nanos()).unwrap_or(u64::MAX),
            safe_at: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
        }))
    }

    /// Whether a read of `room` (`None`: across rooms) may go to the replica now.
    pub(crate) fn usable_for(&self, room: Option<&RoomName>) -> bool {
        if !self.healthy.load(Ordering::Acquire) {
            return false;
        }
        let safe_at = self.safe_at.load(Ordering::Acquire);
        if safe_at == 0 {
            // No sample has shown the replica past anything yet: it may lack even the schema.
            return false;
        }
        let lag = self.fence.now().saturating_sub(safe_at);
        lag <= self.max_lag_nanos && safe_at >= self.fence.required(room)
    }

    /// A read on the replica failed: use the primary until the next good sample.
    pub(crate) fn failed(&self) {
        self.healthy.store(false, Ordering::Release);
    }
}

#[derive(diesel::QueryableByName)]
struct Position {
    #[diesel(sql_type = Nullable<BigInt>)]
    lsn: Option<i64>,
}

/// The primary's WAL insert position: at or past the end of every commit finished before the
/// call.
async fn insert_position(conn: &mut AsyncPgConnection) -> Result<i64, StorageError> {
    // Scoped here: the trait is implemented for every type and would shadow `AtomicU64::load`.
    use diesel_async::RunQueryDsl;
    let position: Position =
        diesel::sql_query("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8 AS lsn")
            .get_result(conn)
            .await?;
    position.lsn.ok_or_else(|| StorageError::Corrupt {
        what: "WAL position".to_owned(),
        detail: "the primary gave none".to_owned(),
    })
}

/// The replica's replayed WAL position; `None` when the server is not a standby.
async fn replay_position(conn: &mut AsyncPgConnection) -> Result<Option<i64>, StorageError> {
    use diesel_async::RunQueryDsl;
    let position: Position =
        diesel::sql_query("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8 AS lsn")
            .get_result(conn)
            .await?;
    Ok(position.lsn)
}

/// Keeps a connection of its own to one server, reconnecting after a failure.
struct Link {
    url: String,
    connection: Option<AsyncPgConnection>,
}

impl Link {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            connection: None,
        }
    }

    async fn get(&mut self) -> Result<&mut AsyncPgConnection, StorageError> {
        if self.connection.is_none() {
            let connection = AsyncPgConnection::establish(&self.url)
                .await
                .map_err(|e| StorageError::Connect(e.to_string()))?;
            self.connection = Some(connection);
        }
        self.connection.as_mut().ok_or(StorageError::Closed)
    }
}

/// Samples both servers every [`SAMPLE_INTERVAL`] until the replica is dropped.
pub(crate) async fn monitor(replica: Weak<Replica>, primary_url: String, replica_url: String) {
    let mut primary = Link::new(&primary_url);
    let mut standby = Link::new(&replica_url);
    let mut samples: VecDeque<(u64, i64)> = VecDeque::new();
    // The highest replay position seen: a replica that restarts may come back behind it.
    let mut replayed_before = i64::MIN;
    let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(replica) = replica.upgrade() else {
            return;
        };
        // Each probe gets the allowed lag at most (and a second at least): a server that
        // hangs must not stop the monitor from marking the replica unusable.
        let budget = Duration::from_nanos(replica.max_lag_nanos).max(Duration::from_secs(1));
        // At least 1: 0 means "no safe time yet".
        let taken_at = replica.fence.now().max(1);
        match tokio::time::timeout(budget, async {
            insert_position(primary.get().await?).await
        })
        .await
        {
            Ok(Ok(lsn)) => {
                samples.push_back((taken_at, lsn));
                if samples.len() > MAX_SAMPLES {
                    samples.pop_front();
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the primary's WAL position");
                primary.connection = None;
            }
            Err(_) => primary.connection = None,
        }
        let replayed = tokio::time::timeout(budget, async {
            replay_position(standby.get().await?).await
        })
        .await;
        match replayed {
            Ok(Ok(Some(replayed))) => {
                if replayed < replayed_before {
                    // Back behind what it had replayed (a restart, or a new replica at the
                    // same address): its old safe time no longer holds.
                    replica.safe_at.store(0, Ordering::Release);
                    tracing::warn!(
                        "the read replica went back in the WAL; not read until it catches up"
                    );
                }
                replayed_before = replayed;
                let mut safe_at = None;
                while let Some(&(at, lsn)) = samples.front() {
                    if lsn > replayed {
                        break;
                    }
                    safe_at = Some(at);
                    samples.pop_front();
                }
                if let Some(at) = safe_at {
                    replica.safe_at.fetch_max(at, Ordering::AcqRel);
                }
                if replica.safe_at.load(Ordering::Acquire) == 0 {
                    // After a reset, the samples it has passed were popped already: a fresh
                    // one will do on the next round.
                    samples.retain(|&(_, lsn)| lsn > replayed);
                }
                if !replica.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("the read replica answers; reads may use it");
                }
            }
            other => {
                match other {
                    Ok(Ok(None)) => tracing::warn!("the read replica is no longer a standby"),
                    Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the replica's position"),
                    _ => tracing::debug!("the read replica did not answer in time"),
                }
                standby.connection = None;
                if replica.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!("the read replica fails; reads go to the primary");
                }
            }
        }
        let now = replica.fence.now();
        let lag = now.saturating_sub(replica.safe_at.load(Ordering::Acquire));
        #[allow(
            clippy::cast_precision_loss,
            reason = "a gauge in seconds; nanosecond precision is not needed"
        )]
        metrics::gauge!("banter_replica_lag_seconds").set(lag as f64 / 1e9);
        // A room fenced before (now - max lag) cannot keep a usable replica away.
        replica
            .fence
            .prune(now.saturating_sub(replica.max_lag_nanos));
    }
}

/// Any broadcaster, with every event that changes reads recorded in a [`ReadFence`] as it
/// arrives, before the application delivers it to anyone. Without a fence it adds nothing.
#[derive(Debug, Clone)]
pub struct FencedBroadcaster<B> {
    inner: B,
    fence: Option<ReadFence>,
}

impl<B> FencedBroadcaster<B> {
    pub fn new(inner: B, fence: Option<ReadFence>) -> Self {
        Self { inner, fence }
    }
}

/// A subscription whose events pass through a [`ReadFence`].
#[derive(Debug)]
pub struct FencedSubscription<S> {
    inner: S,
    fence: Option<ReadFence>,
}

impl<S: EventSubscription> EventSubscription for FencedSubscription<S> {
    async fn next(&mut self) -> Result<Arc<EventEnvelope>, SubscriptionError> {
        let envelope = self.inner.next().await?;
        if let Some(fence) = &self.fence
            && changes_reads(envelope.event())
        {
            fence.touch(envelope.event().room());
        }
        Ok(envelope)
    }
}

impl<B: EventBroadcaster> EventBroadcaster for FencedBroadcaster<B> {
    type Subscription = FencedSubscription<B::Subscription>;

    async fn subscribe(&self, room: &RoomName) -> Result<Self::Subscription, BroadcastError> {
        let inner = self.inner.subscribe(room).await?;
        // The application reads its snapshot after subscribing, relying on every earlier
        // commit being in it (later ones arrive live): that read must not come from a
        // replica that lacks what was published just before the subscription.
        if let Some(fence) = &self.fence {
            fence.touch(room);
        }
        Ok(FencedSubscription {
            inner,
            fence: self.fence.clone(),
        })
    }

    async fn publish(&self, event: RoomEvent) -> Result<(), BroadcastError> {
        self.inner.publish(event).await
    }

    async fn check(&self) -> Result<(), BroadcastError> {
        self.inner.check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn a_touch_raises_the_room_and_the_newest_fence() {
        let fence = ReadFence::default();
        assert_eq!(fence.required(Some(&room("a"))), 0);
        assert_eq!(fence.required(None), 0);
        fence.touch(&room("a"));
        let a = fence.required(Some(&room("a")));
        assert!(a > 0);
        assert_eq!(fence.required(Some(&room("b"))), 0);
        assert_eq!(fence.required(None), a);
        fence.touch(&room("b"));
        assert!(fence.required(None) >= fence.required(Some(&room("b"))));
        assert!(fence.required(Some(&room("b"))) >= a);
    }

    #[test]
    fn pruning_forgets_only_rooms_older_than_the_cut() {
        let fence = ReadFence::default();
        fence.touch(&room("old"));
        let cut = fence.now() + 1;
        std::thread::sleep(Duration::from_millis(2));
        fence.touch(&room("new"));
        fence.prune(cut);
        assert_eq!(fence.tracked_rooms(), 1);
        assert_eq!(fence.required(Some(&room("old"))), 0);
        assert!(fence.required(Some(&room("new"))) >= cut);
    }

    /// A broker with no events: enough to see what subscribing does to the fence.
    #[derive(Debug, Clone)]
    struct Silent;

    #[derive(Debug)]
    struct Never;

    impl EventSubscription for Never {
        async fn next(&mut self) -> Result<Arc<EventEnvelope>, SubscriptionError> {
            std::future::pending().await
        }
    }

    impl EventBroadcaster for Silent {
        type Subscription = Never;

        async fn subscribe(&self, _room: &RoomName) -> Result<Never, BroadcastError> {
            Ok(Never)
        }

        async fn publish(&self, _event: RoomEvent) -> Result<(), BroadcastError> {
            Ok(())
        }

        async fn check(&self) -> Result<(), BroadcastError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn subscribing_fences_the_room_for_the_snapshot_read_after_it() {
        let fence = ReadFence::default();
        let broadcaster = FencedBroadcaster::new(Silent, Some(fence.clone()));
        assert_eq!(fence.required(Some(&room("a"))), 0);
        let _subscription = broadcaster.subscribe(&room("a")).await.unwrap();
        assert!(fence.required(Some(&room("a"))) > 0);
        assert_eq!(fence.required(Some(&room("b"))), 0);
    }

    #[test]
    fn presence_and_typing_do_not_fence_reads() {
        use banter_domain::{PresenceEvent, Username};
        let username = Username::parse("ann").unwrap();
        assert!(!changes_reads(&RoomEvent::Typing {
            room: room("a"),
            username: username.clone(),
            is_typing: true,
        }));
        assert!(!changes_reads(&RoomEvent::Presence {
            room: room("a"),
            event: PresenceEvent::Join,
            username: username.clone(),
            online_count: 1,
        }));
        assert!(changes_reads(&RoomEvent::MemberRemoved {
            room: room("a"),
            username,
        }));
    }
}
