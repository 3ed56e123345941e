//! The history cache as the use cases see it: finding or opening a room's hub (subscribe, then
//! seed its window from the store, then pump), the latest page answered from memory, posts
//! noted in the hub, and the runner, sweep and counts that the binary drives.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use banter_domain::ports::{
    Clock, EventBroadcaster, EventSubscription, MessageStore, PresenceRegistry,
};
use banter_domain::{EventEnvelope, HistoryPage, HistoryQuery, PageLimit, Rev, RoomName, Seq};
use futures_util::FutureExt;
use futures_util::future::{AbortHandle, Abortable, Either, select};

use super::Chat;
use super::types::{JoinError, ReadError};
use crate::feed::{FeedError, FeedStart, RoomFeed};
use crate::hub::{HistoryCacheStats, HubEnd, HubTask, Opened, RoomHub, SyncRequests, Window};

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    /// Turns the history cache on from this call until the returned future is dropped: every
    /// room hub's pump is handed to `spawn` (the binary starts each on its executor). Without
    /// a runner no hub is opened and every welcome, resume and latest page reads the store;
    /// a second runner beside the first returns at once.
    pub fn run_history_cache<F>(&self, spawn: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: FnMut(HubTask) + Send + 'static,
    {
        let runner = self.inner.hubs.claim_runner();
        async move {
            if let Some(runner) = runner {
                runner.run(spawn).await;
            }
        }
    }

    /// Drops the hubs of rooms nobody on this node joined, read or wrote for a while (the
    /// linger, 60 s). Call it now and then; returns how many rooms keep a hub.
    pub fn sweep_history_cache(&self) -> usize {
        self.inner.hubs.sweep(self.inner.clock.monotonic())
    }

    /// Hits and misses so far, and the rooms held.
    pub fn history_cache_stats(&self) -> HistoryCacheStats {
        self.inner.hubs.stats()
    }

    pub(super) fn count_cache_read(&self, from_memory: bool) {
        if from_memory {
            self.inner.hubs.hit();
        } else {
            self.inner.hubs.miss();
        }
    }

    /// The room's hub on this node, opened if there is none; `None` when the cache is off.
    ///
    /// Opening subscribes first and reads the seed second, like a join: a message committed
    /// in between is in the seed or on the stream, and the pump's feed drops the repeat.
    ///
    /// # Errors
    /// [`JoinError`] when the broker or the store cannot be reached to open the hub.
    pub(super) async fn room_hub(&self, room: &RoomName) -> Result<Option<Opened>, JoinError> {
        let inner = &self.inner;
        let hubs = &inner.hubs;
        if !hubs.enabled() {
            return Ok(None);
        }
        if let Some(hub) = hubs.find(room, inner.clock.monotonic()) {
            return Ok(Some(Opened { hub, fresh: false }));
        }
        let _one_opener = hubs.opening(room).await;
        if let Some(hub) = hubs.find(room, inner.clock.monotonic()) {
            return Ok(Some(Opened { hub, fresh: false }));
        }
        let subscription = inner.broadcaster.subscribe(room).await?;
        let seed_size = hubs.capacity.min(usize::from(PageLimit::MAX_HISTORY));
        let limit = PageLimit::history(seed_size as u64).unwrap_or(PageLimit::DEFAULT_HISTORY);
        let seed = inner
            .store
            .history(room, HistoryQuery::Latest { limit })
            .await?;
        let cursor = seed.last_seq;
        let rev_cursor = seed.last_rev;
        let window = Window::seeded(seed.messages, cursor, rev_cursor, hubs.capacity);
        let (abort, registration) = AbortHandle::new_pair();
        let now = inner.clock.monotonic();
        let (hub, syncs) = RoomHub::new(window, hubs.queue, abort, now);
        let hub = Arc::new(hub);
        let feed = RoomFeed::new(
            (inner.store.clone(), subscription, inner.clock.clone()),
            room.clone(),
            None,
            inner.settings.feed,
            FeedStart {
                cursor,
                catch_up: Vec::new(),
                more_in_store: false,
                rev_cursor,
                replay: None,
            },
        );
        let pump = Abortable::new(
            pump(feed, Arc::clone(&hub), syncs, room.clone()),
            registration,
        );
        hubs.insert(
            room.clone(),
            Arc::clone(&hub),
            HubTask::new(pump.map(drop)),
            now,
        );
        tracing::debug!(%room, %cursor, "history cache: hub opened");
        Ok(Some(Opened { hub, fresh: true }))
    }

    /// The latest `limit` messages of `room`, from the room's hub when it holds them.
    pub(super) async fn latest_page(
        &self,
        room: &RoomName,
        limit: PageLimit,
    ) -> Result<HistoryPage, ReadError> {
        match self.room_hub(room).await {
            Ok(Some(opened)) => {
                let now = self.inner.clock.monotonic();
                if let Some(page) = opened.hub.latest_page(limit.get(), now) {
                    self.count_cache_read(!opened.fresh);
                    return Ok(HistoryPage {
                        messages: page.messages,
                        has_more: page.has_more,
                        last_seq: page.last_seq,
                        last_rev: page.last_rev,
                    });
                }
            }
            Ok(None) => {}
            // The store answers on its own; it says whether it can.
            Err(e) => tracing::debug!(%room, error = %e, "history cache: no hub for a read"),
        }
        self.count_cache_read(false);
        Ok(self
            .inner
            .store
            .history(room, HistoryQuery::Latest { limit })
            .await?)
    }

    /// Tells the room's hub, if there is one, that this node committed change `rev`: a latest
    /// page read here must show it.
    pub(super) fn note_changed(&self, room: &RoomName, rev: Rev) {
        let hubs = &self.inner.hubs;
        if !hubs.enabled() {
            return;
        }
        let now = self.inner.clock.monotonic();
        if let Some(hub) = hubs.find(room, now) {
            hub.note_changed(rev, now);
        }
    }

    /// Tells the room's hub that this node committed `seq` (a read from memory must not miss
    /// it), or opens one: the room was written through this node.
    pub(super) fn note_posted(&self, room: &RoomName, seq: Seq) {
        let hubs = &self.inner.hubs;
        if !hubs.enabled() {
            return;
        }
        let now = self.inner.clock.monotonic();
        if let Some(hub) = hubs.find(room, now) {
            hub.note_committed(seq, now);
            return;
        }
        // Opened beside the post, not in its way: the poster is answered at once.
        let chat = self.clone();
        let room = room.clone();
        hubs.launch(HubTask::new(async move {
            if let Err(e) = chat.room_hub(&room).await {
                tracing::debug!(%room, error = %e, "history cache: no hub after a post");
            }
        }));
    }
}

/// Runs a room's events through the hub until the stream ends or the hub is stopped, and
/// answers sync requests in between.
async fn pump<S, Sub, C>(
    mut feed: RoomFeed<S, Sub, C>,
    hub: Arc<RoomHub>,
    mut syncs: SyncRequests,
    room: RoomName,
) where
    S: MessageStore,
    Sub: EventSubscription,
    C: Clock,
{
    loop {
        // A store read is not raced: a stream of joins must not keep cancelling it.
        let step = if feed.wants_store() {
            Either::Left(feed.next().await)
        } else {
            let next = pin!(feed.next());
            let asked = pin!(syncs.recv());
            match select(next, asked).await {
                Either::Left((event, _)) => Either::Left(event),
                Either::Right((asked, _)) => Either::Right(asked),
            }
        };
        match step {
            Either::Left(event) => {
                if !deliver(&hub, event, &room) {
                    return;
                }
            }
            // The hub holds the sender: this pump outlived it.
            Either::Right(None) => return,
            Either::Right(Some(first)) => {
                while let Some(event) = feed.try_next() {
                    if !deliver(&hub, event, &room) {
                        return;
                    }
                }
                let _ = first.send(());
                while let Ok(more) = syncs.try_recv() {
                    let _ = more.send(());
                }
            }
        }
    }
}

/// Forwards one outcome of the room's feed; false once the hub stopped.
fn deliver(hub: &RoomHub, event: Result<Arc<EventEnvelope>, FeedError>, room: &RoomName) -> bool {
    match event {
        Ok(envelope) => hub.forward(envelope),
        Err(e) => {
            let end = match e {
                FeedError::FellBehind => HubEnd::FellBehind,
                // A hub has no user, so its feed is never revoked.
                FeedError::Closed | FeedError::Store(_) | FeedError::Revoked => HubEnd::Closed,
            };
            tracing::info!(%room, error = %e, "history cache: hub stopped; its connections resume");
            hub.stop(end);
            false
        }
    }
}
