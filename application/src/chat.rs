//! The chat service: every use case, generic over the ports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use banter_domain::ports::{
    BroadcastError, Clock, EventBroadcaster, MessageStore, PresenceError, PresenceRegistry,
    StoreError,
};
use banter_domain::{
    Appended, ClientId, Content, ContentError, HistoryPage, HistoryQuery, NameError, NewMessage,
    OnlinePage, PageLimit, PresenceChange, PresenceEvent, RoomEvent, RoomName, Seq, Timestamp,
    TypingBook, TypingChange, TypingRules, Username, WELCOME_ONLINE_CAP,
};

use crate::feed::{FeedSettings, FeedStart, RoomFeed};
use crate::rate::{PostBucket, RateLimit};
use crate::session::Session;

/// Settings of the chat rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSettings {
    /// Per-connection post limit; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    pub typing: TypingRules,
    pub feed: FeedSettings,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            rate_limit: Some(RateLimit::DEFAULT),
            typing: TypingRules::default(),
            feed: FeedSettings::default(),
        }
    }
}

/// Where a joining connection starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Show the latest `history` messages (0–200) in the welcome.
    Latest { history: u16 },
    /// Resume after this seq: the welcome carries no messages, the missed ones follow.
    After(Seq),
}

impl Start {
    pub const MAX_HISTORY: u16 = PageLimit::MAX_HISTORY;
    pub const DEFAULT: Start = Start::Latest { history: 50 };
}

/// The first thing a connection is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub room: RoomName,
    pub username: Username,
    pub messages: Vec<banter_domain::Message>,
    pub has_more: bool,
    pub last_seq: Seq,
    /// At most [`WELCOME_ONLINE_CAP`] names, sorted; includes the joining user.
    pub online: Vec<Username>,
    pub online_count: u64,
    pub typing: Vec<Username>,
}

/// A joined connection: what to tell it first, the events that follow, and what it can do.
#[derive(Debug)]
pub struct Joined<S, B: EventBroadcaster, P, C: Clock> {
    pub welcome: Welcome,
    pub feed: RoomFeed<S, B::Subscription, C>,
    pub session: Session<S, B, P, C>,
}

/// Why a join failed. Nothing was registered: the user is not counted online.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// A field of a post as the transport found it, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DraftField {
    /// Not given (or `null`).
    #[default]
    Absent,
    Text(String),
    /// Given, but not a string.
    NotText,
}

/// A post as it came in: validated by [`Chat::post`], so that a refusal still counts as an
/// attempt for the rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostDraft {
    pub content: DraftField,
    pub client_id: DraftField,
}

impl PostDraft {
    pub fn new(content: impl Into<String>, client_id: Option<String>) -> Self {
        Self {
            content: DraftField::Text(content.into()),
            client_id: client_id.map_or(DraftField::Absent, DraftField::Text),
        }
    }
}

/// Why a post was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostRefusal {
    #[error("too many messages: wait {retry_after:?} before posting again")]
    RateLimited { retry_after: Duration },
    #[error("the message is missing or is not a string")]
    MissingContent,
    #[error("the message {0}")]
    InvalidContent(ContentError),
    #[error("client_id must be a string")]
    ClientIdNotText,
    #[error("client_id {0}")]
    InvalidClientId(NameError),
    /// Not stored and not delivered to anyone; resending with the same client id is safe.
    #[error("the message could not be stored; resend it")]
    Unavailable,
}

/// A refused post, with the post's own client id when that id was valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{refusal}")]
pub struct PostError {
    pub refusal: PostRefusal,
    pub client_id: Option<ClientId>,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// A room in the listing: it has messages, people online, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOverview {
    pub room: RoomName,
    pub last_seq: Seq,
    pub last_message_at: Option<Timestamp>,
    pub online: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomsPage {
    pub rooms: Vec<RoomOverview>,
    pub has_more: bool,
}

/// A room's presence as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPresence {
    pub room: RoomName,
    pub online: OnlinePage,
    pub typing: Vec<Username>,
}

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
            }),
        }
    }

    /// Opens a connection to `room` as `username`.
    ///
    /// The order matters: subscribe first, then read the snapshot, so that a message committed
    /// in between reaches the connection through the live stream, where the feed's sequencer
    /// drops it if the snapshot already had it. Presence is registered last, once nothing else
    /// can fail, so a failed join leaves nobody counted online.
    ///
    /// # Errors
    /// [`JoinError`] when the broker, the store or the registry cannot be reached.
    pub async fn join(
        &self,
        room: RoomName,
        username: Username,
        start: Start,
    ) -> Result<Joined<S, B, P, C>, JoinError> {
        let inner = &self.inner;
        let subscription = inner.broadcaster.subscribe(&room).await?;

        let (messages, has_more, last_seq, cursor, catch_up, catching_up) = match start {
            Start::Latest { history } => {
                // Reading one message when none are wanted still says whether any exist.
                let wanted = history.clamp(1, Start::MAX_HISTORY);
                let limit =
                    PageLimit::history(u64::from(wanted)).unwrap_or(PageLimit::DEFAULT_HISTORY);
                let page = inner
                    .store
                    .history(&room, HistoryQuery::Latest { limit })
                    .await?;
                let last_seq = page.last_seq;
                let (messages, has_more) = if history == 0 {
                    (Vec::new(), !page.messages.is_empty())
                } else {
                    (page.messages, page.has_more)
                };
                (messages, has_more, last_seq, last_seq, Vec::new(), false)
            }
            Start::After(after) => {
                let limit = PageLimit::history(u64::from(Start::MAX_HISTORY))
                    .unwrap_or(PageLimit::DEFAULT_HISTORY);
                let page = inner
                    .store
                    .history(&room, HistoryQuery::After { after, limit })
                    .await?;
                // An `after` beyond the room's end replays nothing; live messages continue
                // from the real end.
                let cursor = after.min(page.last_seq);
                (
                    Vec::new(),
                    false,
                    page.last_seq,
                    cursor,
                    page.messages,
                    page.has_more,
                )
            }
        };

        {
            let _ordered = self.room_lock(&room).await;
            let change = inner.presence.connect(&room, &username).await?;
            if let PresenceChange::Joined { online_count } = change {
                self.announce(&room, &username, PresenceEvent::Join, online_count)
                    .await;
            }
        }
        let online = match inner.presence.online(&room, None, WELCOME_ONLINE_CAP).await {
            Ok(online) => online,
            Err(e) => {
                self.disconnect(&room, &username).await;
                return Err(e.into());
            }
        };
        // Typing is never shown to the typer, not even in the welcome of their other tab.
        let mut typing = self.typists(&room).await;
        typing.retain(|typist| *typist != username);

        let welcome = Welcome {
            room: room.clone(),
            username: username.clone(),
            messages,
            has_more,
            last_seq,
            online: online.users,
            online_count: online.online_count,
            typing,
        };
        let feed = RoomFeed::new(
            (inner.store.clone(), subscription, inner.clock.clone()),
            room.clone(),
            username.clone(),
            inner.settings.feed,
            FeedStart {
                cursor,
                catch_up,
                more_in_store: catching_up,
            },
        );
        let bucket = PostBucket::new(inner.settings.rate_limit, inner.clock.clone());
        let session = Session::new(self.clone(), room, username, bucket);
        Ok(Joined {
            welcome,
            feed,
            session,
        })
    }

    /// Validates and stores a post, then tells the room. A resend of a stored post returns
    /// the original as [`Appended::Duplicate`] and tells nobody. Rate limits are the caller's:
    /// a [`Session`] applies its own, the REST edge limits per client address.
    ///
    /// # Errors
    /// [`PostError`] says what was wrong with the draft, or that it could not be stored.
    pub async fn post(
        &self,
        room: &RoomName,
        username: &Username,
        draft: PostDraft,
    ) -> Result<Appended, PostError> {
        let post = Self::validate(room, username, draft)?;
        let client_id = post.client_id.clone();
        let stored_at = self.inner.clock.monotonic();
        let appended = self.inner.store.append(post).await.map_err(|e| {
            tracing::warn!(%room, error = %e, "post not stored");
            PostError {
                refusal: PostRefusal::Unavailable,
                client_id: client_id.clone(),
            }
        })?;
        if let Appended::Stored(message) = &appended {
            tracing::debug!(
                %room, seq = %message.seq,
                store_ms = (self.inner.clock.monotonic() - stored_at).as_secs_f64() * 1000.0,
                "message stored"
            );
            self.publish(RoomEvent::MessagePosted(message.clone()))
                .await;
            let _ordered = self.room_lock(room).await;
            self.end_typing_on_post(room, username).await;
        }
        Ok(appended)
    }

    fn validate(
        room: &RoomName,
        username: &Username,
        draft: PostDraft,
    ) -> Result<NewMessage, PostError> {
        // The client id first, so a refusal of the content can still name the post.
        let client_id = match draft.client_id {
            DraftField::Absent => None,
            DraftField::NotText => {
                return Err(PostError {
                    refusal: PostRefusal::ClientIdNotText,
                    client_id: None,
                });
            }
            DraftField::Text(raw) => Some(ClientId::try_from(raw).map_err(|e| PostError {
                refusal: PostRefusal::InvalidClientId(e),
                client_id: None,
            })?),
        };
        let content = match draft.content {
            DraftField::Text(raw) => Content::try_from(raw).map_err(|e| PostError {
                refusal: PostRefusal::InvalidContent(e),
                client_id: client_id.clone(),
            })?,
            DraftField::Absent | DraftField::NotText => {
                return Err(PostError {
                    refusal: PostRefusal::MissingContent,
                    client_id,
                });
            }
        };
        Ok(NewMessage {
            room: room.clone(),
            username: username.clone(),
            content,
            client_id,
        })
    }

    /// Starts (or refreshes) or stops `username`'s typing indicator in `room`.
    pub async fn set_typing(&self, room: &RoomName, username: &Username, is_typing: bool) {
        let _ordered = self.room_lock(room).await;
        let change = {
            let mut book = self.typing_book();
            if is_typing {
                book.start(room, username, self.inner.clock.monotonic())
            } else {
                book.stop(room, username)
            }
        };
        self.publish_typing(change).await;
    }

    /// Ends the typing indicators not refreshed in time. Returns how long until the next one
    /// may expire, for [`Chat::run_typing_expiry`].
    pub async fn expire_typing(&self) -> Option<Duration> {
        let now = self.inner.clock.monotonic();
        let due = self.typing_book().due_rooms(now);
        for room in due {
            // Decided and published under the room's lock, like a start or stop, so an expiry
            // cannot overtake a refresh that happened after it.
            let _ordered = self.room_lock(&room).await;
            let ended = self.typing_book().expire_in(&room, now);
            for change in ended {
                self.publish_typing(Some(change)).await;
            }
        }
        let book = self.typing_book();
        book.next_expiry()
            .map(|at| at.saturating_sub(self.inner.clock.monotonic()))
    }

    /// Expires typing indicators for as long as the returned future runs.
    pub async fn run_typing_expiry(&self) {
        // Never sleep longer than this, so a new indicator is not missed for long; a new one
        // always expires later than those already known.
        const LONGEST_NAP: Duration = Duration::from_secs(1);
        loop {
            let wait = self
                .expire_typing()
                .await
                .unwrap_or(LONGEST_NAP)
                .min(LONGEST_NAP);
            self.inner
                .clock
                .sleep(wait.max(Duration::from_millis(10)))
                .await;
        }
    }

    /// Reads a page of history.
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    pub async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ReadError> {
        Ok(self.inner.store.history(room, query).await?)
    }

    /// Lists rooms with messages or people online, sorted by name, after `after`.
    ///
    /// # Errors
    /// [`ReadError`] when the store or the registry cannot be read.
    pub async fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: PageLimit,
    ) -> Result<RoomsPage, ReadError> {
        let stored = self.inner.store.rooms(after, limit).await?;
        let occupied = self
            .inner
            .presence
            .occupied_rooms(after, limit.get() + 1)
            .await?;
        // Any room among the first `limit` of the union is among the first `limit` of its own
        // list, so one page of each is enough.
        let mut union: BTreeMap<RoomName, RoomOverview> = stored
            .rooms
            .into_iter()
            .map(|s| {
                let overview = RoomOverview {
                    room: s.room.clone(),
                    last_seq: s.last_seq,
                    last_message_at: s.last_message_at,
                    online: 0,
                };
                (s.room, overview)
            })
            .collect();
        for o in occupied {
            union
                .entry(o.room.clone())
                .or_insert_with(|| RoomOverview {
                    room: o.room,
                    last_seq: Seq::ZERO,
                    last_message_at: None,
                    online: 0,
                })
                .online = o.online_count;
        }
        let has_more = union.len() > limit.get() || stored.has_more;
        let merged: Vec<RoomOverview> = union.into_values().take(limit.get()).collect();
        Ok(RoomsPage {
            rooms: merged,
            has_more,
        })
    }

    /// Who is online in `room` (a page of names after `after`) and who is typing.
    ///
    /// # Errors
    /// [`ReadError::Presence`] when the registry cannot be read.
    pub async fn presence(
        &self,
        room: &RoomName,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<RoomPresence, ReadError> {
        let online = self.inner.presence.online(room, after, limit).await?;
        let typing = self.typists(room).await;
        Ok(RoomPresence {
            room: room.clone(),
            online,
            typing,
        })
    }

    /// Keeps this node's presence alive in a shared registry.
    ///
    /// # Errors
    /// [`PresenceError`] when the registry cannot be reached.
    pub async fn heartbeat(&self) -> Result<(), PresenceError> {
        self.inner.presence.heartbeat().await
    }

    /// Whether storage and the broker answer.
    ///
    /// # Errors
    /// The first component that does not answer.
    pub async fn check_ready(&self) -> Result<(), String> {
        self.inner.store.check().await.map_err(|e| e.to_string())?;
        self.inner
            .broadcaster
            .check()
            .await
            .map_err(|e| e.to_string())
    }

    /// Closes one connection of `username` in `room`: when it was their last, their typing
    /// ends and the room is told they left.
    pub(crate) async fn disconnect(&self, room: &RoomName, username: &Username) {
        let _ordered = self.room_lock(room).await;
        match self.inner.presence.disconnect(room, username).await {
            Ok(PresenceChange::Left { online_count }) => {
                let ended = self.typing_book().stop(room, username);
                self.publish_typing(ended).await;
                self.announce(room, username, PresenceEvent::Leave, online_count)
                    .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%room, %username, error = %e, "presence not updated on leave"),
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

    /// Who is typing in `room`, on every node; this node's own typists if the registry
    /// cannot be read (a list is worth more than a refusal here).
    async fn typists(&self, room: &RoomName) -> Vec<Username> {
        match self.inner.presence.typing(room).await {
            Ok(typists) => typists,
            Err(e) => {
                tracing::warn!(%room, error = %e, "typing list not read; showing this node's");
                self.typing_book().typing(room)
            }
        }
    }

    /// Posting ends the poster's typing indicator: one started here, and one a tab on another
    /// node started (two tabs of one user are one typer), which only the shared list knows of;
    /// that node's own expiry later sends a second, harmless `is_typing:false`.
    async fn end_typing_on_post(&self, room: &RoomName, username: &Username) {
        let ended_here = self.typing_book().stop(room, username).is_some();
        let listed = match self.inner.presence.set_typing(room, username, None).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(%room, %username, error = %e, "typing list not updated");
                false
            }
        };
        if ended_here || listed {
            self.publish(RoomEvent::Typing {
                room: room.clone(),
                username: username.clone(),
                is_typing: false,
            })
            .await;
        }
    }

    /// Records a typing change in the registry (for the lists) and tells the room.
    async fn publish_typing(&self, change: Option<TypingChange>) {
        if let Some(TypingChange {
            room,
            username,
            is_typing,
        }) = change
        {
            // Listed a little longer than the indicator lives: a refresh may come up to one
            // rebroadcast interval after the last change that reached the registry.
            let rules = self.inner.settings.typing;
            let at_most = is_typing.then_some(rules.expires_after + rules.rebroadcast_after);
            if let Err(e) = self
                .inner
                .presence
                .set_typing(&room, &username, at_most)
                .await
            {
                tracing::warn!(%room, %username, error = %e, "typing list not updated");
            }
            self.publish(RoomEvent::Typing {
                room,
                username,
                is_typing,
            })
            .await;
        }
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
