//! One connection's view of a room: every message once, in seq order, without gaps.
//!
//! A connection subscribes to the room *before* it reads its snapshot (the welcome), so no
//! message can fall between the two; the sequencer then drops what the snapshot already
//! covered and holds back what arrives early. Messages may arrive out of order (posters answer
//! concurrently, and other nodes publish through a shared broker); a gap that the live stream
//! does not fill within a short grace is filled from the store, which has every message by the
//! time anyone could see a later one (seqs are assigned at commit, in commit order).

use std::collections::{BTreeMap, VecDeque};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use banter_domain::ports::{Clock, EventSubscription, MessageStore, StoreError, SubscriptionError};
use banter_domain::{
    ChangesQuery, ConnectionId, EventEnvelope, HistoryQuery, Message, MessageChange, PageLimit,
    Rev, RoomEvent, RoomName, Seq, Username,
};
use futures_util::FutureExt;
use futures_util::future::{Either, select};

use crate::sequencer::Sequencer;

fn lost(e: SubscriptionError) -> FeedError {
    match e {
        SubscriptionError::Lagged { .. } => FeedError::FellBehind,
        SubscriptionError::Closed => FeedError::Closed,
    }
}

/// Why a feed stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The connection read too slowly; it should reconnect and resume with `after`.
    #[error("the connection fell too far behind")]
    FellBehind,
    /// The broadcaster closed (shutting down, or its broker is gone).
    #[error("the room's event stream closed")]
    Closed,
    /// Missing messages could not be read from the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The user may no longer see the room (removed from a private room, or the room was
    /// made private by someone else).
    #[error("no longer a member of the room")]
    Revoked,
}

/// How a feed waits and fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// How long a gap may stay open before the store is asked for the missing messages.
    pub gap_grace: Duration,
    /// How many early messages a feed holds before it gives up on the connection.
    pub max_pending: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            gap_grace: Duration::from_millis(250),
            max_pending: 4096,
        }
    }
}

/// Where a feed starts: after `cursor` (and, for changes, after `rev_cursor`), with the missed
/// messages already read from the store, whether more of them wait there, and the past changes
/// to replay first.
#[derive(Debug)]
pub(crate) struct FeedStart {
    pub cursor: Seq,
    pub catch_up: Vec<banter_domain::Message>,
    pub more_in_store: bool,
    pub rev_cursor: Rev,
    pub replay: Option<Replay>,
}

/// The past changes a resuming connection is told first: each message of a seq at most
/// `max_seq` whose latest change is in (`after`, `through`], once, in its current state, in
/// ascending rev. Changes after `through` come live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replay {
    pub after: Rev,
    pub through: Rev,
    pub max_seq: Seq,
}

fn store_page() -> PageLimit {
    PageLimit::history(u64::from(PageLimit::MAX_HISTORY)).unwrap_or(PageLimit::DEFAULT_HISTORY)
}

fn updated(change: MessageChange) -> Arc<EventEnvelope> {
    EventEnvelope::new(RoomEvent::MessageUpdated {
        rev: change.rev,
        message: change.message,
    })
}

/// The events one connection receives, in order, with its own echoes filtered out; or, for a
/// room hub (no user), every event of the room in order.
#[derive(Debug)]
pub struct RoomFeed<S, Sub, C> {
    store: S,
    subscription: Sub,
    clock: C,
    room: RoomName,
    /// The connection's user, whose own presence and typing it is not told; `None` for a
    /// room hub, which passes everything on.
    me: Option<Username>,
    /// The connection this feed serves, whose own read reports it is not told back.
    connection: Option<ConnectionId>,
    /// The highest read position this connection knows of: older ones that arrive late are
    /// not passed on.
    read_cursor: Seq,
    settings: FeedSettings,
    sequencer: Sequencer,
    /// Changes, by rev.
    revs: Sequencer<Rev>,
    /// Messages read from the store, already in order.
    ready: VecDeque<Arc<EventEnvelope>>,
    /// More missed messages wait in the store (resuming with `after`).
    catching_up: bool,
    /// More changes wait in the store (a gap in the changes was longer than a page).
    revs_catching_up: bool,
    /// Past changes still to read, and where in `ready` the next one goes (before the
    /// missed messages).
    replay: Option<Replay>,
    replay_at: usize,
    /// When the current gap must be filled from the store (monotonic).
    gap_deadline: Option<Duration>,
    /// Changes delivered for messages not delivered yet (the seqs wait behind a gap while the
    /// revs flowed on): such a message is delivered in its changed state, not as posted.
    changed_ahead: BTreeMap<Seq, Message>,
}

impl<S, Sub, C> RoomFeed<S, Sub, C>
where
    S: MessageStore,
    Sub: EventSubscription,
    C: Clock,
{
    pub(crate) fn new(
        ports: (S, Sub, C),
        room: RoomName,
        me: Option<Username>,
        settings: FeedSettings,
        start: FeedStart,
    ) -> Self {
        let (store, subscription, clock) = ports;
        let mut feed = Self {
            store,
            subscription,
            clock,
            room,
            me,
            connection: None,
            read_cursor: Seq::ZERO,
            settings,
            sequencer: Sequencer::new(start.cursor),
            revs: Sequencer::new(start.rev_cursor),
            ready: VecDeque::new(),
            catching_up: start.more_in_store,
            revs_catching_up: false,
            replay: start.replay.filter(|r| r.after < r.through),
            replay_at: 0,
            gap_deadline: None,
            changed_ahead: BTreeMap::new(),
        };
        feed.take_from_store(start.catch_up);
        feed
    }

    /// Makes this the feed of `connection`, whose user's position in the room was `read_seq`
    /// at join: it passes on that user's read positions from their other connections.
    pub(crate) fn reading(mut self, connection: ConnectionId, read_seq: Seq) -> Self {
        self.connection = Some(connection);
        self.read_cursor = read_seq;
        self
    }

    /// The next event for this connection.
    ///
    /// Cancel-safe as long as the subscription is: an event taken from it is either returned
    /// or kept in the feed.
    ///
    /// # Errors
    /// [`FeedError::FellBehind`] when the connection's queue overflowed, [`FeedError::Closed`]
    /// when no event can come any more, [`FeedError::Store`] when missing messages could not be
    /// read.
    pub async fn next(&mut self) -> Result<Arc<EventEnvelope>, FeedError> {
        let envelope = self.next_in_order().await?;
        Ok(self.current_state(envelope))
    }

    async fn next_in_order(&mut self) -> Result<Arc<EventEnvelope>, FeedError> {
        loop {
            if let Some(replay) = self.replay {
                self.replay_from_store(replay).await?;
                continue;
            }
            if let Some(envelope) = self.take_ready() {
                return Ok(envelope);
            }
            if self.catching_up || self.revs_catching_up {
                self.fill_from_store().await?;
                continue;
            }
            let received = if self.has_gap() {
                let now = self.clock.monotonic();
                let deadline = *self
                    .gap_deadline
                    .get_or_insert(now + self.settings.gap_grace);
                if now >= deadline {
                    self.fill_from_store().await?;
                    continue;
                }
                let raced = {
                    let live = pin!(self.subscription.next());
                    let timer = pin!(self.clock.sleep(deadline - now));
                    match select(live, timer).await {
                        Either::Left((received, _)) => Some(received),
                        Either::Right(((), _)) => None,
                    }
                };
                match raced {
                    Some(received) => received,
                    None => {
                        self.fill_from_store().await?;
                        continue;
                    }
                }
            } else {
                self.subscription.next().await
            };
            if let Some(envelope) = self.accept(received.map_err(lost)?)? {
                return Ok(envelope);
            }
        }
    }

    /// The next event that is here already: no waiting, no store read. `None` when there is
    /// none, or when the store must be read first ([`Self::wants_store`]).
    ///
    /// # Errors
    /// As [`Self::next`], except [`FeedError::Store`].
    pub(crate) fn try_next(&mut self) -> Option<Result<Arc<EventEnvelope>, FeedError>> {
        self.try_next_in_order()
            .map(|next| next.map(|envelope| self.current_state(envelope)))
    }

    /// Seqs and revs are ordered apart, so a change can be delivered before the message it
    /// changed (that message waits behind a gap): the message then goes out as it now is.
    fn current_state(&mut self, envelope: Arc<EventEnvelope>) -> Arc<EventEnvelope> {
        match envelope.event() {
            RoomEvent::MessageUpdated { message, .. } if message.seq > self.sequencer.cursor() => {
                if self.changed_ahead.len() < self.settings.max_pending {
                    self.changed_ahead.insert(message.seq, message.clone());
                }
                envelope
            }
            RoomEvent::MessagePosted(message) if !self.changed_ahead.is_empty() => {
                let seq = message.seq;
                let changed = self.changed_ahead.remove(&seq);
                // Anything at or below the cursor was delivered (or skipped) by now.
                self.changed_ahead.retain(|ahead, _| *ahead > seq);
                match changed {
                    Some(changed) => EventEnvelope::new(RoomEvent::MessagePosted(changed)),
                    None => envelope,
                }
            }
            _ => envelope,
        }
    }

    fn try_next_in_order(&mut self) -> Option<Result<Arc<EventEnvelope>, FeedError>> {
        loop {
            if self.replay.is_some() {
                return None;
            }
            if let Some(envelope) = self.take_ready() {
                return Some(Ok(envelope));
            }
            if self.catching_up || self.revs_catching_up {
                return None;
            }
            let received = self.subscription.next().now_or_never()?;
            match received.map_err(lost).and_then(|e| self.accept(e)) {
                Ok(Some(envelope)) => return Some(Ok(envelope)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Whether the next step is a store read: missed messages wait there, or a gap outlived
    /// its grace.
    pub(crate) fn wants_store(&self) -> bool {
        self.replay.is_some()
            || self.catching_up
            || self.revs_catching_up
            || (self.has_gap()
                && self
                    .gap_deadline
                    .is_some_and(|deadline| self.clock.monotonic() >= deadline))
    }

    /// Whether later messages or changes wait for a missing one.
    fn has_gap(&self) -> bool {
        self.sequencer.has_gap() || self.revs.has_gap()
    }

    /// A message read from the store or released by a sequencer, in order.
    fn take_ready(&mut self) -> Option<Arc<EventEnvelope>> {
        if let Some(envelope) = self.ready.pop_front() {
            return Some(envelope);
        }
        let envelope = self
            .sequencer
            .pop_ready()
            .or_else(|| self.revs.pop_ready())?;
        if !self.has_gap() {
            self.gap_deadline = None;
        }
        Some(envelope)
    }

    /// Decides what a live event means for this connection.
    fn accept(
        &mut self,
        envelope: Arc<EventEnvelope>,
    ) -> Result<Option<Arc<EventEnvelope>>, FeedError> {
        match envelope.event() {
            RoomEvent::MessagePosted(message) => {
                let seq = message.seq;
                let delivered = self.sequencer.offer(seq, envelope);
                self.after_offer(delivered)
            }
            RoomEvent::MessageUpdated { rev, .. } => {
                let rev = *rev;
                let delivered = self.revs.offer(rev, envelope);
                self.after_offer(delivered)
            }
            // A connection is told about others, not about its own user: its welcome already
            // counts it online, and typing is never echoed to the typer.
            RoomEvent::Presence { username, .. } | RoomEvent::Typing { username, .. }
                if self.me.as_ref() == Some(username) =>
            {
                Ok(None)
            }
            RoomEvent::Presence { .. } | RoomEvent::Typing { .. } => Ok(Some(envelope)),
            // Access ends for the removed user's connections, or for everyone but the creator
            // of a room made private. A room hub (no user) passes it on.
            RoomEvent::MemberRemoved { username, .. } => match &self.me {
                Some(me) if me == username => Err(FeedError::Revoked),
                _ => Ok(self.me.is_none().then_some(envelope)),
            },
            RoomEvent::MadePrivate { creator, .. } => match &self.me {
                Some(me) if me != creator => Err(FeedError::Revoked),
                _ => Ok(self.me.is_none().then_some(envelope)),
            },
            // A read position is told to its user's other connections only, and only forward.
            RoomEvent::Read {
                username,
                seq,
                origin,
                ..
            } => {
                let Some(me) = &self.me else {
                    return Ok(Some(envelope));
                };
                let mine =
                    me == username && self.connection.is_some() && *origin != self.connection;
                if mine && *seq > self.read_cursor {
                    self.read_cursor = *seq;
                    Ok(Some(envelope))
                } else {
                    Ok(None)
                }
            }
        }
    }

    fn after_offer(
        &mut self,
        delivered: Option<Arc<EventEnvelope>>,
    ) -> Result<Option<Arc<EventEnvelope>>, FeedError> {
        if delivered.is_some() && !self.has_gap() {
            self.gap_deadline = None;
        }
        if self.sequencer.pending_len() + self.revs.pending_len() > self.settings.max_pending {
            return Err(FeedError::FellBehind);
        }
        Ok(delivered)
    }

    /// Reads the next page of past changes to replay; they go before the missed messages.
    async fn replay_from_store(&mut self, replay: Replay) -> Result<(), FeedError> {
        let query = ChangesQuery {
            after: replay.after,
            through: Some(replay.through),
            max_seq: Some(replay.max_seq),
            limit: store_page(),
        };
        let page = Box::pin(self.store.changes(&self.room, query)).await?;
        let mut next = replay;
        for change in page.changes {
            next.after = next.after.max(change.rev);
            let at = self.replay_at.min(self.ready.len());
            self.ready.insert(at, updated(change));
            self.replay_at = at + 1;
        }
        self.replay = (page.has_more && next.after > replay.after).then_some(next);
        Ok(())
    }

    async fn fill_from_store(&mut self) -> Result<(), FeedError> {
        if self.catching_up || self.sequencer.has_gap() {
            self.fill_messages_from_store().await?;
        }
        if self.revs_catching_up || self.revs.has_gap() {
            self.fill_changes_from_store().await?;
        }
        self.gap_deadline = None;
        Ok(())
    }

    /// Every change after the rev cursor, rev by rev, each with its message as it now is.
    async fn fill_changes_from_store(&mut self) -> Result<(), FeedError> {
        let page = Box::pin(
            self.store
                .revisions(&self.room, self.revs.cursor(), store_page()),
        )
        .await?;
        let fetched = page.changes.len();
        self.revs_catching_up = page.has_more;
        for change in page.changes {
            let rev = change.rev;
            if let Some(envelope) = self.revs.offer(rev, updated(change)) {
                self.ready.push_back(envelope);
            }
        }
        while let Some(envelope) = self.revs.pop_ready() {
            self.ready.push_back(envelope);
        }
        if self.revs.has_gap()
            && fetched == 0
            && !self.revs_catching_up
            && let Some((from, to)) = self.revs.skip_gap()
        {
            tracing::error!(room = %self.room, %from, %to, "changes missing from the store; skipping");
        }
        Ok(())
    }

    async fn fill_messages_from_store(&mut self) -> Result<(), FeedError> {
        let query = HistoryQuery::After {
            after: self.sequencer.cursor(),
            limit: store_page(),
        };
        // Boxed: a store read is a large future and a rare one, and inlined it would make every
        // waiting connection's `next` (and so its task) that much larger.
        let page = Box::pin(self.store.history(&self.room, query)).await?;
        let fetched = page.messages.len();
        self.catching_up = page.has_more;
        self.take_from_store(page.messages);
        if self.sequencer.has_gap() && fetched == 0 && !self.catching_up {
            // The store has nothing after the cursor yet later messages were seen: they cannot
            // be filled, so deliver what there is rather than stall the connection.
            if let Some((from, to)) = self.sequencer.skip_gap() {
                tracing::error!(room = %self.room, %from, %to, "messages missing from the store; skipping");
            }
        }
        Ok(())
    }

    fn take_from_store(&mut self, messages: Vec<banter_domain::Message>) {
        for message in messages {
            let seq = message.seq;
            let envelope = EventEnvelope::new(RoomEvent::MessagePosted(message));
            if let Some(envelope) = self.sequencer.offer(seq, envelope) {
                self.ready.push_back(envelope);
            }
        }
        while let Some(envelope) = self.sequencer.pop_ready() {
            self.ready.push_back(envelope);
        }
    }
}
