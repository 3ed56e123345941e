//! This node's hubs by room: finding or opening one (one opener per room at a time), the
//! linger that keeps recently used rooms warm, the sweep that drops the rest, the hand-off of
//! each hub's pump to whoever runs them, and the hit and miss counts.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use banter_domain::RoomName;
use futures_util::lock::Mutex as AsyncMutex;
use tokio::sync::mpsc;

use super::{HubEnd, RoomHub};

/// How long a room's hub stays after its last connection left, or after a REST read or post
/// of the room went through this node.
pub(crate) const LINGER: Duration = Duration::from_secs(60);

/// Stripes of the locks that let one opener per room subscribe and read the seed.
const OPEN_STRIPES: usize = 64;

/// Hubs held before the map is swept on the way (then each time it has doubled), so that
/// rooms that nobody sweeps periodically cannot pile up.
const FIRST_SWEEP_AT: usize = 256;

/// One hub's pump, for the executor: it runs until the hub stops.
pub struct HubTask(Pin<Box<dyn Future<Output = ()> + Send>>);

impl HubTask {
    pub(crate) fn new(pump: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Box::pin(pump))
    }
}

impl Future for HubTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for HubTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubTask")
    }
}

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryCacheStats {
    /// Welcomes, resumes and latest pages answered from memory.
    pub hits: u64,
    /// Welcomes, resumes and latest pages that read the store.
    pub misses: u64,
    /// Rooms with a hub on this node.
    pub rooms: usize,
}

struct Rooms {
    by_name: HashMap<RoomName, Arc<RoomHub>>,
    sweep_at: usize,
}

/// A hub handed out by [`Hubs::find`] or opened by its caller.
#[derive(Debug)]
pub(crate) struct Opened {
    pub hub: Arc<RoomHub>,
    /// The caller read the store to open it.
    pub fresh: bool,
}

/// This node's hubs.
pub(crate) struct Hubs {
    /// Messages kept per room; zero turns the cache off.
    pub capacity: usize,
    /// Each connection's queue behind its hub.
    pub queue: usize,
    rooms: Mutex<Rooms>,
    opening: Vec<AsyncMutex<()>>,
    tasks: mpsc::UnboundedSender<HubTask>,
    runner: Arc<RunnerSlot>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Hubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hubs")
            .field("capacity", &self.capacity)
            .field("rooms", &self.rooms().by_name.len())
            .finish_non_exhaustive()
    }
}

impl Hubs {
    pub fn new(capacity: usize, queue: usize) -> Self {
        let (tasks, receiver) = mpsc::unbounded_channel();
        Self {
            capacity,
            queue,
            rooms: Mutex::new(Rooms {
                by_name: HashMap::new(),
                sweep_at: FIRST_SWEEP_AT,
            }),
            opening: (0..OPEN_STRIPES).map(|_| AsyncMutex::new(())).collect(),
            tasks,
            runner: Arc::new(RunnerSlot {
                receiver: Mutex::new(Some(receiver)),
                running: AtomicBool::new(false),
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn rooms(&self) -> MutexGuard<'_, Rooms> {
        // Map operations complete under the lock; a poisoned lock still holds a consistent map.
        lock(&self.rooms)
    }

    /// Whether hubs are opened at all: the cache is on and a runner takes their pumps.
    pub fn enabled(&self) -> bool {
        self.capacity > 0 && self.runner.running.load(Ordering::SeqCst)
    }

    /// The room's running hub, if any, marked as used at `now`.
    pub fn find(&self, room: &RoomName, now: Duration) -> Option<Arc<RoomHub>> {
        let rooms = self.rooms();
        let hub = rooms.by_name.get(room)?;
        hub.is_live(now, LINGER).then(|| Arc::clone(hub))
    }

    /// Held while a room's hub is opened, so that two openers do not subscribe twice.
    pub async fn opening(&self, room: &RoomName) -> futures_util::lock::MutexGuard<'_, ()> {
        self.opening[room.shard(self.opening.len())].lock().await
    }

    /// Registers a newly opened hub and hands its pump to the runner.
    pub fn insert(&self, room: RoomName, hub: Arc<RoomHub>, pump: HubTask, now: Duration) {
        if self.tasks.send(pump).is_err() {
            // The runner is gone (shutting down): a hub without its pump must not be found.
            hub.stop(HubEnd::Closed);
            return;
        }
        let mut rooms = self.rooms();
        if let Some(old) = rooms.by_name.insert(room, hub) {
            old.stop(HubEnd::Expired);
        }
        if rooms.by_name.len() >= rooms.sweep_at {
            Self::sweep_rooms(&mut rooms, now);
            rooms.sweep_at = (rooms.by_name.len() * 2).max(FIRST_SWEEP_AT);
        }
    }

    /// Hands `task` to the runner (nothing happens when it is gone).
    pub fn launch(&self, task: HubTask) {
        let _ = self.tasks.send(task);
    }

    /// Drops the hubs that stopped, and those past their linger with nobody attached.
    /// Returns how many remain.
    pub fn sweep(&self, now: Duration) -> usize {
        let mut rooms = self.rooms();
        Self::sweep_rooms(&mut rooms, now);
        rooms.by_name.len()
    }

    fn sweep_rooms(rooms: &mut Rooms, now: Duration) {
        rooms.by_name.retain(|_, hub| {
            let live = hub.is_live(now, LINGER);
            if !live {
                hub.stop(HubEnd::Expired);
            }
            live
        });
    }

    /// Becomes the runner (hubs open from now on), unless another one is. The runner hands
    /// each hub's pump to `spawn` for as long as [`Runner::run`] runs, and gives the role back
    /// when dropped.
    pub fn claim_runner(&self) -> Option<Runner> {
        let receiver = lock(&self.runner.receiver).take()?;
        self.runner.running.store(true, Ordering::SeqCst);
        Some(Runner {
            receiver: Some(receiver),
            slot: Arc::clone(&self.runner),
        })
    }

    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> HistoryCacheStats {
        HistoryCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rooms: self.rooms().by_name.len(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whoever runs the hubs' pumps: without a runner no hub is opened, since a hub nobody pumps
/// would leave its connections waiting forever.
#[derive(Debug)]
struct RunnerSlot {
    receiver: Mutex<Option<mpsc::UnboundedReceiver<HubTask>>>,
    running: AtomicBool,
}

/// The claimed runner role (see [`Hubs::claim_runner`]).
#[derive(Debug)]
pub(crate) struct Runner {
    receiver: Option<mpsc::UnboundedReceiver<HubTask>>,
    slot: Arc<RunnerSlot>,
}

impl Runner {
    pub async fn run(mut self, mut spawn: impl FnMut(HubTask)) {
        let Some(receiver) = self.receiver.as_mut() else {
            return;
        };
        while let Some(task) = receiver.recv().await {
            spawn(task);
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.slot.running.store(false, Ordering::SeqCst);
        *lock(&self.slot.receiver) = self.receiver.take();
    }
}
