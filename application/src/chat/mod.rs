//! The chat service: [`Chat`], its state, and the plumbing its use cases share (the room
//! locks, the typing book, telling the room). Each use case lives in its own file:
//!
//! - `types`: settings, what a join starts from and answers, drafts, and the typed errors;
//! - `join`: opening a connection (subscribe, snapshot, presence, welcome);
//! - `session`: what a joined connection does — post, type, leave;
//! - `post`: validating, storing and announcing a message;
//! - `typing`: indicators, their expiry, and the shared typing list;
//! - `reads`: history, the room listing, presence, heartbeat and readiness;
//! - `cache`: the recent-history cache's side of these (room hubs, latest pages from memory).

mod access;
mod cache;
mod change;
mod join;
mod post;
mod reading;
mod reads;
mod session;
mod types;
mod typing;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{ConnectionId, PresenceEvent, RoomEvent, RoomName, TypingBook, Username};

use crate::hub::Hubs;

pub use session::Session;
pub use types::{
    ChangeDraft, ChangeError, ChatSettings, DraftField, HistoryCache, JoinError, Joined,
    MembershipError, NotReady, PostDraft, PostError, PostRefusal, ReadError, RoomOverview,
    RoomPresence, RoomsPage, Start, Welcome,
};

/// Stripes of per-room locks (a room always maps to the same one): bounded memory, nothing to
/// clean up, and rooms rarely wait for each other.
const ROOM_LOCK_STRIPES: usize = 64;

struct Inner<S, B, P, C> {
    store: S,
    broadcaster: B,
    presence: P,
    clock: C,
    settings: ChatSettings,
    typing: Mutex<TypingBook>,
    /// Held while a presence or typing change is decided and published, so that the room is
    /// told about changes in the order they happened (a leave of one tab and a join of another
    /// must not swap on the way out).
    room_locks: Vec<futures_util::lock::Mutex<()>>,
    /// The recent-history cache: this node's room hubs.
    hubs: Hubs,
    /// This process among the nodes, chosen at random, and its count of connections: together
    /// they tell every connection apart.
    node: u64,
    connections: AtomicU64,
}

/// The chat service. Cheap to clone: every connection holds one.
pub struct Chat<S, B, P, C> {
    inner: Arc<Inner<S, B, P, C>>,
}

impl<S, B, P, C> Clone for Chat<S, B, P, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, B, P, C> std::fmt::Debug for Chat<S, B, P, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    pub fn new(store: S, broadcaster: B, presence: P, clock: C, settings: ChatSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                broadcaster,
                presence,
                clock,
                settings,
                typing: Mutex::new(TypingBook::new(settings.typing)),
                room_locks: (0..ROOM_LOCK_STRIPES)
                    .map(|_| futures_util::lock::Mutex::new(()))
                    .collect(),
                hubs: Hubs::new(
                    settings.history_cache.messages,
                    settings.history_cache.queue,
                ),
                node: random_node_id(),
                connections: AtomicU64::new(0),
            }),
        }
    }

    /// A new connection's identity, unique across the nodes.
    fn next_connection(&self) -> ConnectionId {
        ConnectionId {
            node: self.inner.node,
            local: self.inner.connections.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Tells the room that `username` joined or left, unless the registry already did.
    async fn announce(
        &self,
        room: &RoomName,
        username: &Username,
        event: PresenceEvent,
        online_count: u64,
    ) {
        if P::ANNOUNCES_CHANGES {
            return;
        }
        self.publish(RoomEvent::Presence {
            room: room.clone(),
            event,
            username: username.clone(),
            online_count,
        })
        .await;
    }

    /// Tells the room. A failure is logged, not returned: the event's cause (a committed
    /// message, a presence change) already happened, and feeds recover missed messages from
    /// the store.
    async fn publish(&self, event: RoomEvent) {
        if let Err(e) = self.inner.broadcaster.publish(event).await {
            tracing::warn!(error = %e, "event not broadcast");
        }
    }

    async fn room_lock(&self, room: &RoomName) -> futures_util::lock::MutexGuard<'_, ()> {
        let stripe = room.shard(self.inner.room_locks.len());
        self.inner.room_locks[stripe].lock().await
    }

    fn typing_book(&self) -> MutexGuard<'_, TypingBook> {
        // The book is plain data whose every update completes; a panic elsewhere cannot leave
        // it half-written, so a poisoned lock is still usable.
        self.inner
            .typing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A random number for this process: the standard library seeds its hashers from the operating
/// system's randomness, so hashing anything with a fresh one gives an unpredictable value.
fn random_node_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}
