//! Hand-written fakes of the ports: real state, plus switches to inject failures and races.

#![allow(dead_code)]

pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banter_domain::ports::{
    BroadcastError, Clock, EventBroadcaster, EventSubscription, MessageStore, PresenceError,
    PresenceRegistry, StoreError, SubscriptionError,
};
use banter_domain::{
    Appended, ChangeRefusal, ChangeRequest, Changed, ChangesPage, ChangesQuery, ClientId,
    EventEnvelope, HistoryPage, HistoryQuery, Message, MessageChange, NewMessage, OccupiedRoom,
    OnlinePage, PageLimit, PresenceBook, PresenceChange, PresenceEvent, ReadMark, Rev, RoomAccess,
    RoomEvent, RoomName, SearchPage, SearchQuery, SearchScope, Seq, StoredRoom, StoredRoomsPage,
    Timestamp, UNREAD_CAP, UserRoom, Username, advance_read, hit,
};
use tokio::sync::broadcast;

/// A clock that only moves when told to (or when something sleeps on it).
#[derive(Clone, Debug, Default)]
pub struct FakeClock {
    elapsed: Arc<Mutex<Duration>>,
}

impl FakeClock {
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap() += by;
    }

    /// Wall time for the fake store's timestamps, moving with the fake time.
    pub fn now(&self) -> Timestamp {
        let base = 1_795_857_302_000_i64;
        let ms = self.elapsed.lock().unwrap().as_millis() as i64;
        Timestamp::from_unix_millis(base + ms).unwrap()
    }
}

impl Clock for FakeClock {
    fn monotonic(&self) -> Duration {
        *self.elapsed.lock().unwrap()
    }

    // Sleeping moves the fake time forward at once, like a paused runtime that auto-advances.
    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
        tokio::task::yield_now().await;
    }
}

/// One room as the fake keeps it: messages in their current state, the client id each was
/// posted with (kept after a delete), each message's latest rev, and the log of revs.
#[derive(Default)]
struct RoomState {
    messages: Vec<Message>,
    client_ids: Vec<Option<ClientId>>,
    latest_rev: Vec<Option<Rev>>,
    /// The seq each rev changed: rev n is at index n − 1.
    log: Vec<Seq>,
    /// When the room's last message was stored, in the store's count of appends: the fake
    /// clock may not move between posts, so timestamps alone cannot order activity.
    last_append: u64,
    /// A private room's creator and members.
    private: Option<(Username, std::collections::BTreeSet<Username>)>,
}

impl RoomState {
    fn last_rev(&self) -> Rev {
        Rev::new(self.log.len() as u64).unwrap()
    }

    fn index(seq: Seq) -> Option<usize> {
        usize::try_from(seq.get()).ok()?.checked_sub(1)
    }
}

#[derive(Default)]
struct StoreState {
    rooms: BTreeMap<RoomName, RoomState>,
    /// Read positions by user and room.
    read: BTreeMap<(Username, RoomName), Seq>,
    appends: u64,
}

/// Hook run inside `history`, before the read: lets a test commit a message "concurrently".
pub type HistoryHook = Box<dyn FnMut(&FakeStore) + Send>;

/// A store that keeps messages in memory with gapless seqs and idempotent client ids.
#[derive(Clone)]
pub struct FakeStore {
    state: Arc<Mutex<StoreState>>,
    clock: FakeClock,
    pub failing: Arc<AtomicBool>,
    pub history_reads: Arc<AtomicUsize>,
    before_history: Arc<Mutex<Option<HistoryHook>>>,
    after_history: Arc<Mutex<Option<HistoryHook>>>,
}

impl FakeStore {
    pub fn new(clock: FakeClock) -> Self {
        Self {
            state: Arc::default(),
            clock,
            failing: Arc::default(),
            history_reads: Arc::default(),
            before_history: Arc::default(),
            after_history: Arc::default(),
        }
    }

    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Runs `hook` once, at the start of the next history read.
    pub fn before_next_history(&self, hook: impl FnMut(&FakeStore) + Send + 'static) {
        *self.before_history.lock().unwrap() = Some(Box::new(hook));
    }

    /// Runs `hook` once, right after the next history read.
    pub fn after_next_history(&self, hook: impl FnMut(&FakeStore) + Send + 'static) {
        *self.after_history.lock().unwrap() = Some(Box::new(hook));
    }

    /// Stores directly, as another node would; nothing is published.
    pub fn insert(&self, post: NewMessage) -> Message {
        match self.append_now(post) {
            Appended::Stored(m) | Appended::Duplicate(m) => m,
        }
    }

    /// A user's stored read position (zero if none).
    pub fn read_position(&self, room: &RoomName, user: &Username) -> Seq {
        let state = self.state.lock().unwrap();
        let key = (user.clone(), room.clone());
        state.read.get(&key).copied().unwrap_or(Seq::ZERO)
    }

    pub fn messages(&self, room: &RoomName) -> Vec<Message> {
        self.state
            .lock()
            .unwrap()
            .rooms
            .get(room)
            .map(|r| r.messages.clone())
            .unwrap_or_default()
    }

    fn last_rev(&self, room: &RoomName) -> Rev {
        self.state
            .lock()
            .unwrap()
            .rooms
            .get(room)
            .map_or(Rev::ZERO, RoomState::last_rev)
    }

    /// Changes directly, as another node would; nothing is published.
    pub fn change_now(&self, request: ChangeRequest) -> Result<Changed, ChangeRefusal> {
        let mut state = self.state.lock().unwrap();
        let at = self.clock.now();
        let Some(room) = state.rooms.get_mut(&request.room) else {
            return Err(ChangeRefusal::NotFound);
        };
        let Some(i) = RoomState::index(request.seq).filter(|i| *i < room.messages.len()) else {
            return Err(ChangeRefusal::NotFound);
        };
        let current = room.messages[i].clone();
        match current.changed_by(&request.author, &request.change, at)? {
            None => Ok(Changed::Unchanged(current)),
            Some(new) => {
                room.log.push(new.seq);
                let rev = room.last_rev();
                room.latest_rev[i] = Some(rev);
                room.messages[i] = new.clone();
                Ok(Changed::Updated(MessageChange { rev, message: new }))
            }
        }
    }

    fn append_now(&self, post: NewMessage) -> Appended {
        let mut state = self.state.lock().unwrap();
        state.appends += 1;
        let append = state.appends;
        let room = state.rooms.entry(post.room.clone()).or_default();
        if post.client_id.is_some()
            && let Some(i) = room
                .messages
                .iter()
                .zip(&room.client_ids)
                .position(|(m, id)| m.username == post.username && *id == post.client_id)
        {
            return Appended::Duplicate(room.messages[i].clone());
        }
        let message = Message {
            room: post.room,
            seq: Seq::new(room.messages.len() as u64 + 1).unwrap(),
            username: post.username,
            content: Some(post.content),
            timestamp: self.clock.now(),
            client_id: post.client_id.clone(),
            edited_at: None,
        };
        room.messages.push(message.clone());
        room.client_ids.push(post.client_id);
        room.latest_rev.push(None);
        room.last_append = append;
        Appended::Stored(message)
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                reason: "switched off by the test".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl MessageStore for FakeStore {
    async fn mark_read(
        &self,
        room: &RoomName,
        user: &Username,
        seq: Seq,
    ) -> Result<ReadMark, StoreError> {
        self.check_up()?;
        let mut state = self.state.lock().unwrap();
        let last_seq = state
            .rooms
            .get(room)
            .and_then(|r| r.messages.last())
            .map_or(Seq::ZERO, |m| m.seq);
        let key = (user.clone(), room.clone());
        let stored = state.read.get(&key).copied().unwrap_or(Seq::ZERO);
        Ok(match advance_read(stored, seq, last_seq) {
            Some(read_seq) => {
                state.read.insert(key, read_seq);
                ReadMark {
                    read_seq,
                    advanced: true,
                }
            }
            None => ReadMark {
                read_seq: stored,
                advanced: false,
            },
        })
    }

    async fn read_position(&self, room: &RoomName, user: &Username) -> Result<Seq, StoreError> {
        self.check_up()?;
        let state = self.state.lock().unwrap();
        let key = (user.clone(), room.clone());
        Ok(state.read.get(&key).copied().unwrap_or(Seq::ZERO))
    }

    async fn user_rooms(&self, user: &Username) -> Result<Vec<UserRoom>, StoreError> {
        self.check_up()?;
        let state = self.state.lock().unwrap();
        let mut rooms: Vec<(u64, UserRoom)> = state
            .rooms
            .iter()
            .filter_map(|(name, r)| {
                let read = state.read.get(&(user.clone(), name.clone())).copied();
                let posted = r.messages.iter().any(|m| m.username == *user);
                if read.is_none() && !posted {
                    return None;
                }
                let read_seq = read.unwrap_or(Seq::ZERO);
                let unread = r
                    .messages
                    .iter()
                    .filter(|m| m.seq > read_seq && m.username != *user && !m.is_deleted())
                    .count() as u64;
                let last = r.messages.last()?;
                Some((
                    r.last_append,
                    UserRoom {
                        room: name.clone(),
                        last_seq: last.seq,
                        read_seq,
                        unread: unread.min(UNREAD_CAP),
                        last_message_at: Some(last.timestamp),
                        private: r.private.is_some(),
                    },
                ))
            })
            .collect();
        // Newest activity first, as `UserRoom::by_activity` orders by the real timestamps.
        rooms.sort_by(|(a, ra), (b, rb)| b.cmp(a).then_with(|| ra.room.cmp(&rb.room)));
        Ok(rooms.into_iter().map(|(_, room)| room).collect())
    }

    async fn append(&self, post: NewMessage) -> Result<Appended, StoreError> {
        self.check_up()?;
        Ok(self.append_now(post))
    }

    // The definition itself: every message in its current state, confirmed by the query.
    async fn search(
        &self,
        scope: &SearchScope,
        query: &SearchQuery,
        limit: PageLimit,
    ) -> Result<SearchPage, StoreError> {
        self.check_up()?;
        let state = self.state.lock().unwrap();
        let mut hits: Vec<_> = state
            .rooms
            .iter()
            .filter(|(name, r)| match scope {
                SearchScope::Room { room, .. } => *name == room,
                SearchScope::Readable { member_of } => {
                    r.private.is_none() || member_of.contains(name)
                }
            })
            .flat_map(|(_, r)| r.messages.iter().cloned())
            .filter(|m| match scope {
                SearchScope::Room {
                    before: Some(before),
                    ..
                } => m.seq < *before,
                _ => true,
            })
            .filter_map(|m| hit(query, m))
            .collect();
        hits.sort_by(banter_domain::SearchHit::newest_first);
        let has_more = hits.len() > limit.get();
        hits.truncate(limit.get());
        Ok(SearchPage { hits, has_more })
    }

    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        let hook = self.before_history.lock().unwrap().take();
        if let Some(mut hook) = hook {
            hook(self);
        }
        self.check_up()?;
        self.history_reads.fetch_add(1, Ordering::SeqCst);
        // The counter before the messages, as the real store reads them.
        let last_rev = self.last_rev(room);
        let all = self.messages(room);
        let last_seq = all.last().map_or(Seq::ZERO, |m| m.seq);
        let (page, has_more): (Vec<Message>, bool) = match query {
            HistoryQuery::Latest { limit } => {
                let start = all.len().saturating_sub(limit.get());
                (all[start..].to_vec(), start > 0)
            }
            HistoryQuery::Before { before, limit } => {
                let older: Vec<Message> = all.into_iter().filter(|m| m.seq < before).collect();
                let start = older.len().saturating_sub(limit.get());
                (older[start..].to_vec(), start > 0)
            }
            HistoryQuery::After { after, limit } => {
                let newer: Vec<Message> = all.into_iter().filter(|m| m.seq > after).collect();
                let more = newer.len() > limit.get();
                (newer.into_iter().take(limit.get()).collect(), more)
            }
        };
        let last_seq = match query {
            HistoryQuery::Latest { .. } => page.last().map_or(Seq::ZERO, |m| m.seq),
            _ => last_seq,
        };
        let hook = self.after_history.lock().unwrap().take();
        if let Some(mut hook) = hook {
            hook(self);
        }
        Ok(HistoryPage {
            messages: page,
            has_more,
            last_seq,
            last_rev,
        })
    }

    async fn change(
        &self,
        request: ChangeRequest,
    ) -> Result<Result<Changed, ChangeRefusal>, StoreError> {
        self.check_up()?;
        Ok(self.change_now(request))
    }

    async fn changes(
        &self,
        room: &RoomName,
        query: ChangesQuery,
    ) -> Result<ChangesPage, StoreError> {
        self.check_up()?;
        let state = self.state.lock().unwrap();
        let Some(r) = state.rooms.get(room) else {
            return Ok(ChangesPage::default());
        };
        let mut changed: Vec<MessageChange> = r
            .messages
            .iter()
            .zip(&r.latest_rev)
            .filter_map(|(m, rev)| Some((m, (*rev)?)))
            .filter(|(m, rev)| {
                *rev > query.after
                    && query.through.is_none_or(|t| *rev <= t)
                    && query.max_seq.is_none_or(|s| m.seq <= s)
            })
            .map(|(m, rev)| MessageChange {
                rev,
                message: m.clone(),
            })
            .collect();
        changed.sort_by_key(|c| c.rev);
        let has_more = changed.len() > query.limit.get();
        changed.truncate(query.limit.get());
        Ok(ChangesPage {
            changes: changed,
            has_more,
            last_rev: r.last_rev(),
        })
    }

    async fn revisions(
        &self,
        room: &RoomName,
        after: Rev,
        limit: PageLimit,
    ) -> Result<ChangesPage, StoreError> {
        self.check_up()?;
        let state = self.state.lock().unwrap();
        let Some(r) = state.rooms.get(room) else {
            return Ok(ChangesPage::default());
        };
        let mut changes: Vec<MessageChange> = r
            .log
            .iter()
            .enumerate()
            .skip(usize::try_from(after.get()).unwrap_or(usize::MAX))
            .filter_map(|(i, seq)| {
                Some(MessageChange {
                    rev: Rev::new(i as u64 + 1).ok()?,
                    message: r.messages.get(RoomState::index(*seq)?)?.clone(),
                })
            })
            .collect();
        let has_more = changes.len() > limit.get();
        changes.truncate(limit.get());
        Ok(ChangesPage {
            changes,
            has_more,
            last_rev: r.last_rev(),
        })
    }

    async fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: PageLimit,
    ) -> Result<StoredRoomsPage, StoreError> {
        self.check_up()?;
        let state = self.state.lock().unwrap();
        let mut rooms = state
            .rooms
            .iter()
            .filter(|(name, _)| after.is_none_or(|a| *name > a))
            .map(|(name, r)| StoredRoom {
                room: name.clone(),
                last_seq: r.messages.last().map_or(Seq::ZERO, |m| m.seq),
                last_message_at: r.messages.last().map(|m| m.timestamp),
                private: r.private.is_some(),
            });
        let page: Vec<StoredRoom> = rooms.by_ref().take(limit.get()).collect();
        Ok(StoredRoomsPage {
            rooms: page,
            has_more: rooms.next().is_some(),
        })
    }

    async fn create_private_room(
        &self,
        room: &RoomName,
        creator: &Username,
    ) -> Result<bool, StoreError> {
        self.check_up()?;
        let mut state = self.state.lock().unwrap();
        if state.rooms.contains_key(room) {
            return Ok(false);
        }
        let members = std::iter::once(creator.clone()).collect();
        state.rooms.entry(room.clone()).or_default().private = Some((creator.clone(), members));
        Ok(true)
    }

    async fn room_access(&self, room: &RoomName) -> Result<RoomAccess, StoreError> {
        self.check_up()?;
        let state = self.state.lock().unwrap();
        Ok(
            match state.rooms.get(room).and_then(|r| r.private.as_ref()) {
                None => RoomAccess::Public,
                Some((creator, members)) => RoomAccess::Private {
                    creator: creator.clone(),
                    members: members.iter().cloned().collect(),
                },
            },
        )
    }

    async fn set_member(
        &self,
        room: &RoomName,
        user: &Username,
        member: bool,
    ) -> Result<bool, StoreError> {
        self.check_up()?;
        let mut state = self.state.lock().unwrap();
        let Some((_, members)) = state.rooms.get_mut(room).and_then(|r| r.private.as_mut()) else {
            return Err(StoreError::Unavailable {
                reason: "not a private room".into(),
            });
        };
        Ok(if member {
            members.insert(user.clone())
        } else {
            members.remove(user)
        })
    }

    async fn member_rooms(&self, user: &Username) -> Result<Vec<RoomName>, StoreError> {
        self.check_up()?;
        let state = self.state.lock().unwrap();
        Ok(state
            .rooms
            .iter()
            .filter(|(_, r)| r.private.as_ref().is_some_and(|(_, m)| m.contains(user)))
            .map(|(name, _)| name.clone())
            .collect())
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.check_up()
    }
}

type RoomChannels = Arc<Mutex<HashMap<RoomName, broadcast::Sender<Arc<EventEnvelope>>>>>;

/// A broadcaster with a bounded queue per subscriber (past it, the subscriber lags, as with
/// the real adapters), a log of what was published, and a switch that swallows the next
/// publications (as a lost broker message would).
#[derive(Clone)]
pub struct FakeBroadcaster {
    rooms: RoomChannels,
    capacity: usize,
    pub published: Arc<Mutex<Vec<RoomEvent>>>,
    swallow_next: Arc<AtomicUsize>,
}

impl Default for FakeBroadcaster {
    fn default() -> Self {
        // The in-memory adapter's default bound.
        Self::with_capacity(1024)
    }
}

impl FakeBroadcaster {
    /// A broadcaster whose subscribers lag once `capacity` events wait for them.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            rooms: RoomChannels::default(),
            capacity,
            published: Arc::default(),
            swallow_next: Arc::default(),
        }
    }

    pub fn swallow_next(&self, count: usize) {
        self.swallow_next.store(count, Ordering::SeqCst);
    }

    /// Ends every subscription, as a broker that lost its upstream does: each gets what was
    /// queued for it, then `Closed`.
    pub fn close_all(&self) {
        self.rooms.lock().unwrap().clear();
    }

    pub fn published(&self) -> Vec<RoomEvent> {
        self.published.lock().unwrap().clone()
    }

    /// Delivers an event to the room's subscribers as if it came from the broker.
    pub fn inject(&self, event: RoomEvent) {
        let envelope = EventEnvelope::new(event);
        let rooms = self.rooms.lock().unwrap();
        if let Some(channel) = rooms.get(envelope.event().room()) {
            // Nobody subscribed any more is not a failure.
            let _ = channel.send(envelope);
        }
    }
}

pub struct FakeSubscription {
    rx: broadcast::Receiver<Arc<EventEnvelope>>,
}

impl EventSubscription for FakeSubscription {
    async fn next(&mut self) -> Result<Arc<EventEnvelope>, SubscriptionError> {
        match self.rx.recv().await {
            Ok(envelope) => Ok(envelope),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Err(SubscriptionError::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => Err(SubscriptionError::Closed),
        }
    }
}

impl FakeSubscription {
    /// An event already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Arc<EventEnvelope>> {
        self.rx.try_recv().ok()
    }
}

impl EventBroadcaster for FakeBroadcaster {
    type Subscription = FakeSubscription;

    async fn subscribe(&self, room: &RoomName) -> Result<FakeSubscription, BroadcastError> {
        let rx = self
            .rooms
            .lock()
            .unwrap()
            .entry(room.clone())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe();
        Ok(FakeSubscription { rx })
    }

    async fn publish(&self, event: RoomEvent) -> Result<(), BroadcastError> {
        self.published.lock().unwrap().push(event.clone());
        let swallowed = self
            .swallow_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !swallowed {
            self.inject(event);
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BroadcastError> {
        Ok(())
    }
}

/// Presence in a [`PresenceBook`], with a failure switch and a gate that holds a disconnect
/// between its decision and its return (as a slow registry would).
#[derive(Clone, Default)]
pub struct FakePresence {
    book: Arc<Mutex<PresenceBook>>,
    typing: Arc<Mutex<BTreeMap<RoomName, std::collections::BTreeSet<Username>>>>,
    pub failing: Arc<AtomicBool>,
    disconnect_gate: Arc<Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
}

impl FakePresence {
    fn check_up(&self) -> Result<(), PresenceError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(PresenceError::Unavailable {
                reason: "switched off by the test".into(),
            })
        } else {
            Ok(())
        }
    }

    /// The next disconnect decides, then waits until the returned sender fires (or drops).
    pub fn hold_next_disconnect(&self) -> tokio::sync::oneshot::Sender<()> {
        let (release, gate) = tokio::sync::oneshot::channel();
        *self.disconnect_gate.lock().unwrap() = Some(gate);
        release
    }

    pub fn is_online(&self, room: &RoomName, user: &Username) -> bool {
        self.book.lock().unwrap().is_online(room, user)
    }
}

impl PresenceRegistry for FakePresence {
    async fn connect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        self.check_up()?;
        Ok(self.book.lock().unwrap().connect(room, user))
    }

    async fn disconnect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        self.check_up()?;
        let change = self.book.lock().unwrap().disconnect(room, user);
        let gate = self.disconnect_gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        Ok(change)
    }

    async fn online(
        &self,
        room: &RoomName,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<OnlinePage, PresenceError> {
        self.check_up()?;
        Ok(self.book.lock().unwrap().online(room, after, limit))
    }

    async fn occupied_rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<Vec<OccupiedRoom>, PresenceError> {
        self.check_up()?;
        Ok(self.book.lock().unwrap().occupied_rooms(after, limit))
    }

    async fn set_typing(
        &self,
        room: &RoomName,
        user: &Username,
        at_most: Option<Duration>,
    ) -> Result<bool, PresenceError> {
        self.check_up()?;
        let mut typing = self.typing.lock().unwrap();
        let typists = typing.entry(room.clone()).or_default();
        Ok(if at_most.is_some() {
            !typists.insert(user.clone())
        } else {
            typists.remove(user)
        })
    }

    async fn typing(&self, room: &RoomName) -> Result<Vec<Username>, PresenceError> {
        self.check_up()?;
        let typing = self.typing.lock().unwrap();
        Ok(typing
            .get(room)
            .map(|typists| typists.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn heartbeat(&self) -> Result<(), PresenceError> {
        self.check_up()
    }
}

/// A registry that tells the room itself, as a registry shared by several nodes does
/// ([`PresenceRegistry::ANNOUNCES_CHANGES`]): it publishes joins and leaves on the broadcaster.
#[derive(Clone, Default)]
pub struct AnnouncingPresence {
    pub inner: FakePresence,
    pub broadcaster: FakeBroadcaster,
}

impl AnnouncingPresence {
    async fn announce(&self, room: &RoomName, user: &Username, change: PresenceChange) {
        let (event, online_count) = match change {
            PresenceChange::Joined { online_count } => (PresenceEvent::Join, online_count),
            PresenceChange::Left { online_count } => (PresenceEvent::Leave, online_count),
            PresenceChange::Unchanged { .. } => return,
        };
        self.broadcaster
            .publish(RoomEvent::Presence {
                room: room.clone(),
                event,
                username: user.clone(),
                online_count,
            })
            .await
            .unwrap();
    }
}

impl PresenceRegistry for AnnouncingPresence {
    const ANNOUNCES_CHANGES: bool = true;

    async fn connect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        let change = self.inner.connect(room, user).await?;
        self.announce(room, user, change).await;
        Ok(change)
    }

    async fn disconnect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        let change = self.inner.disconnect(room, user).await?;
        self.announce(room, user, change).await;
        Ok(change)
    }

    async fn online(
        &self,
        room: &RoomName,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<OnlinePage, PresenceError> {
        self.inner.online(room, after, limit).await
    }

    async fn occupied_rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<Vec<OccupiedRoom>, PresenceError> {
        self.inner.occupied_rooms(after, limit).await
    }

    async fn set_typing(
        &self,
        room: &RoomName,
        user: &Username,
        at_most: Option<Duration>,
    ) -> Result<bool, PresenceError> {
        self.inner.set_typing(room, user, at_most).await
    }

    async fn typing(&self, room: &RoomName) -> Result<Vec<Username>, PresenceError> {
        self.inner.typing(room).await
    }

    async fn heartbeat(&self) -> Result<(), PresenceError> {
        self.inner.heartbeat().await
    }
}
