//! The ports: what the core needs from the outside world, as traits.
//!
//! Every port is `Send + Sync + Clone + 'static` so one value can be shared by every connection
//! task, and every method returns `impl Future<Output = …> + Send` (async functions in traits,
//! with the `Send` bound spelled out so the futures can run on a multi-threaded executor). The
//! core is generic over the ports: no boxing, no `dyn`, and fakes in tests are plain structs.
//! Nothing here names an executor; adapters bring their own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Appended, ChangeRefusal, ChangeRequest, Changed, ChangesPage, ChangesQuery, EventEnvelope,
    HistoryPage, HistoryQuery, NewMessage, OccupiedRoom, OnlinePage, PageLimit, PresenceChange,
    ReadMark, Rev, RoomAccess, RoomEvent, RoomName, SearchPage, SearchQuery, SearchScope, Seq,
    StoredRoomsPage, UserRoom, Username,
};

/// The store could not do what was asked; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, refused the statement or failed to commit.
    #[error("storage unavailable: {reason}")]
    Unavailable { reason: String },
}

/// Where messages are kept.
pub trait MessageStore: Send + Sync + Clone + 'static {
    /// Stores `post` as the next message of its room, or finds the original of a resend.
    ///
    /// The store assigns `seq` (the room's previous last seq + 1, without gaps, in commit
    /// order, also when several processes share the database) and `timestamp` (at commit),
    /// and answers only once the message is durably committed.
    ///
    /// A post with a `client_id` that this user already used in this room returns
    /// [`Appended::Duplicate`] with the stored original, and stores nothing — also when the two
    /// posts race.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the message could not be committed; then
    /// nothing of it is stored, and resending it is safe.
    fn append(&self, post: NewMessage)
    -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Reads a page of `room`'s history, oldest first, with `has_more` in the direction of
    /// travel. A room without messages gives an empty page with `last_seq` zero. For
    /// [`HistoryQuery::Latest`], `last_seq` is the seq of the page's last message.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send;

    /// Edits or deletes a message by the rules of [`crate::Message::changed_by`], decided on
    /// the committed state inside the committing transaction.
    ///
    /// A change takes the room's next rev (the previous `last_rev` + 1, without gaps, in
    /// commit order, also when several processes share the database) and is answered only once
    /// durably committed. A change that changes nothing takes no rev. A deleted message's
    /// content is forgotten; its client id is kept for the idempotency rule (a resend gets the
    /// tombstone as [`Appended::Duplicate`]).
    ///
    /// # Errors
    /// The inner `Err` is the refusal; the outer one [`StoreError::Unavailable`] when nothing
    /// could be committed.
    fn change(
        &self,
        request: ChangeRequest,
    ) -> impl Future<Output = Result<Result<Changed, ChangeRefusal>, StoreError>> + Send;

    /// Messages of `room` changed after `query.after`, each once at its latest rev, ascending
    /// by that rev, in their current state (see [`ChangesQuery`]).
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn changes(
        &self,
        room: &RoomName,
        query: ChangesQuery,
    ) -> impl Future<Output = Result<ChangesPage, StoreError>> + Send;

    /// Every rev of `room` after `after`, in order and without gaps, at most `limit`, each with
    /// its message in its current state: what fills a gap in a live stream of changes.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn revisions(
        &self,
        room: &RoomName,
        after: Rev,
        limit: PageLimit,
    ) -> impl Future<Output = Result<ChangesPage, StoreError>> + Send;

    /// Rooms that have messages, sorted by name, starting after `after`.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: PageLimit,
    ) -> impl Future<Output = Result<StoredRoomsPage, StoreError>> + Send;

    /// Moves `user`'s read position in `room` to `seq` by [`crate::advance_read`]: clamped to
    /// the room's last seq, never backwards (also when two calls race). A room without
    /// messages keeps no position.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the position could not be stored.
    fn mark_read(
        &self,
        room: &RoomName,
        user: &Username,
        seq: Seq,
    ) -> impl Future<Output = Result<ReadMark, StoreError>> + Send;

    /// `user`'s read position in `room`; zero if none.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn read_position(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> impl Future<Output = Result<Seq, StoreError>> + Send;

    /// Every room `user` posted in or has a read position in, newest activity first (see
    /// [`UserRoom::by_activity`]), with its unread count.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn user_rooms(
        &self,
        user: &Username,
    ) -> impl Future<Output = Result<Vec<UserRoom>, StoreError>> + Send;

    /// Creates `room` as a private room whose only member is `creator`. Returns `false`, and
    /// changes nothing, when the room already exists: it has messages, or was created before.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when nothing could be committed.
    fn create_private_room(
        &self,
        room: &RoomName,
        creator: &Username,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Whether `room` is public or private, and a private room's creator and members (sorted).
    /// A room never created nor posted in is public.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn room_access(
        &self,
        room: &RoomName,
    ) -> impl Future<Output = Result<RoomAccess, StoreError>> + Send;

    /// Makes `user` a member of the private `room` (`member` true) or no longer one. Returns
    /// whether that changed anything. The caller has checked that the room is private.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when nothing could be committed.
    fn set_member(
        &self,
        room: &RoomName,
        user: &Username,
        member: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The private rooms `user` is a member of, sorted.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn member_rooms(
        &self,
        user: &Username,
    ) -> impl Future<Output = Result<Vec<RoomName>, StoreError>> + Send;

    /// Messages of `scope` that `query` matches ([`SearchQuery::matches`] on their current
    /// content; deleted ones never), newest first: by seq in a room (below `before` when
    /// given), by timestamp across rooms. Every message committed before the call is found.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when the database cannot be read.
    fn search(
        &self,
        scope: &SearchScope,
        query: &SearchQuery,
        limit: PageLimit,
    ) -> impl Future<Output = Result<SearchPage, StoreError>> + Send;

    /// Whether the store answers at all (readiness).
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when it does not.
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The broker could not take or deliver an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    #[error("broadcast unavailable: {reason}")]
    Unavailable { reason: String },
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber read too slowly and its bounded queue overflowed; `missed` events were
    /// dropped for it alone. It should start again from the store.
    #[error("fell behind by {missed} events")]
    Lagged { missed: u64 },
    /// The broadcaster shut down or lost its broker.
    #[error("subscription closed")]
    Closed,
}

/// One subscriber's stream of a room's events.
pub trait EventSubscription: Send + 'static {
    /// The next event, in the order the broadcaster received them from this process.
    ///
    /// MUST be cancel-safe: dropping the future before it completes loses no event, so the
    /// caller can race it against a timer.
    ///
    /// # Errors
    /// MUST return [`SubscriptionError::Lagged`] once the subscriber fell further behind than
    /// its queue holds, and [`SubscriptionError::Closed`] when no event can come any more.
    fn next(
        &mut self,
    ) -> impl Future<Output = Result<Arc<EventEnvelope>, SubscriptionError>> + Send;
}

/// Fans events out to everyone in a room, on this process and, for shared brokers, on others.
pub trait EventBroadcaster: Send + Sync + Clone + 'static {
    type Subscription: EventSubscription;

    /// Starts receiving `room`'s events; events published after this returns are received.
    ///
    /// # Errors
    /// MUST return [`BroadcastError::Unavailable`] when the broker cannot be reached.
    fn subscribe(
        &self,
        room: &RoomName,
    ) -> impl Future<Output = Result<Self::Subscription, BroadcastError>> + Send;

    /// Sends `event` to every subscriber of its room. A room without subscribers is fine.
    ///
    /// # Errors
    /// MUST return [`BroadcastError::Unavailable`] when the broker cannot be reached.
    fn publish(&self, event: RoomEvent) -> impl Future<Output = Result<(), BroadcastError>> + Send;

    /// Whether the broker answers (readiness).
    ///
    /// # Errors
    /// MUST return [`BroadcastError::Unavailable`] when it does not.
    fn check(&self) -> impl Future<Output = Result<(), BroadcastError>> + Send;
}

/// The presence registry could not be read or updated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("presence unavailable: {reason}")]
    Unavailable { reason: String },
}

/// Who is online where, counted in people (see [`crate::PresenceBook`]).
pub trait PresenceRegistry: Send + Sync + Clone + 'static {
    /// Whether [`connect`](Self::connect) and [`disconnect`](Self::disconnect) also tell the
    /// room (publish its `join` or `leave` to the broadcaster's subscribers) atomically with
    /// the change. A registry shared by several nodes must: two nodes could otherwise decide a
    /// leave and a join in one order and publish them in the other. When `false`, the caller
    /// publishes the change, under its own per-room ordering.
    const ANNOUNCES_CHANGES: bool = false;

    /// Counts a new connection of `user` to `room`.
    ///
    /// # Errors
    /// MUST return [`PresenceError::Unavailable`] when the registry cannot be updated. The
    /// caller then does not open the connection; a shared registry that cannot tell whether
    /// the count arrived (a timeout) corrects it later, by its next heartbeat.
    fn connect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> impl Future<Output = Result<PresenceChange, PresenceError>> + Send;

    /// Counts one connection of `user` to `room` fewer.
    ///
    /// # Errors
    /// MUST return [`PresenceError::Unavailable`] when the registry cannot be updated.
    fn disconnect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> impl Future<Output = Result<PresenceChange, PresenceError>> + Send;

    /// A page of `room`'s online users in code-point order, after `after`.
    ///
    /// # Errors
    /// MUST return [`PresenceError::Unavailable`] when the registry cannot be read.
    fn online(
        &self,
        room: &RoomName,
        after: Option<&Username>,
        limit: usize,
    ) -> impl Future<Output = Result<OnlinePage, PresenceError>> + Send;

    /// Rooms with someone online, sorted by name, after `after`, at most `limit`.
    ///
    /// # Errors
    /// MUST return [`PresenceError::Unavailable`] when the registry cannot be read.
    fn occupied_rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OccupiedRoom>, PresenceError>> + Send;

    /// Records whether `user` is typing in `room`, for the `typing` lists of welcomes and
    /// presence reads; `None` when they stopped. The caller decides when typing starts and
    /// ends and tells the room; this only keeps the list. `Some(at_most)` bounds how long a
    /// shared registry lists the typist if nobody says otherwise (their node died); a
    /// registry inside the process may ignore it.
    ///
    /// Returns whether `user` was listed (and not lapsed) before the call: a node that did not
    /// see someone start typing (they typed in a tab on another node) learns so when they
    /// post, and can end the indicator for them.
    ///
    /// # Errors
    /// MUST return [`PresenceError::Unavailable`] when the registry cannot be updated.
    fn set_typing(
        &self,
        room: &RoomName,
        user: &Username,
        at_most: Option<Duration>,
    ) -> impl Future<Output = Result<bool, PresenceError>> + Send;

    /// Ends `user`'s listing as a typist in `room` because this process's indicator for them
    /// lapsed. Two tabs of one user are one typer, also on two nodes: the node that refreshed
    /// the listing last ends it, and only it announces `is_typing:false`. Returns whether the
    /// end is this process's to announce: it refreshed the listing last (and nobody ended it
    /// already, by a post or a stop).
    ///
    /// The default suits a registry inside one process, which is always the last to refresh.
    ///
    /// # Errors
    /// MUST return [`PresenceError::Unavailable`] when the registry cannot be updated.
    fn end_typing(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> impl Future<Output = Result<bool, PresenceError>> + Send {
        self.set_typing(room, user, None)
    }

    /// Who is typing in `room`, in code-point order.
    ///
    /// # Errors
    /// MUST return [`PresenceError::Unavailable`] when the registry cannot be read.
    fn typing(
        &self,
        room: &RoomName,
    ) -> impl Future<Output = Result<Vec<Username>, PresenceError>> + Send;

    /// Keeps this process's share of presence alive. A registry shared by several processes
    /// drops the users of a process that stopped calling this; one that lives inside the
    /// process has nothing to refresh.
    ///
    /// # Errors
    /// MUST return [`PresenceError::Unavailable`] when the registry cannot be reached.
    fn heartbeat(&self) -> impl Future<Output = Result<(), PresenceError>> + Send;
}

/// Time, injected so rules that depend on it are tested without waiting. There is no wall
/// clock here: a message's timestamp is the store's, taken at commit.
pub trait Clock: Send + Sync + Clone + 'static {
    /// A monotonic reading since an arbitrary origin, for durations and deadlines.
    fn monotonic(&self) -> Duration;

    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}
