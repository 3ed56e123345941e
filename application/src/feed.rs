//! One connection's view of a room: every message once, in seq order, without gaps.
//!
//! A connection subscribes to the room *before* it reads its snapshot (the welcome), so no
//! message can fall between the two; the sequencer then drops what the snapshot already
//! covered and holds back what arrives early. Messages may arrive out of order (posters answer
//! concurrently, and other nodes publish through a shared broker); a gap that the live stream
//! does not fill within a short grace is filled from the store, which has every message by the
//! time anyone could see a later one (seqs are assigned at commit, in commit order).

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use banter_domain::ports::{Clock, EventSubscription, MessageStore, StoreError, SubscriptionError};
use banter_domain::{EventEnvelope, HistoryQuery, PageLimit, RoomEvent, RoomName, Seq, Username};
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

/// Where a feed starts: after `cursor`, with the missed messages already read from the store,
/// and whether more of them wait there.
#[derive(Debug)]
pub(crate) struct FeedStart {
    pub cursor: Seq,
    pub catch_up: Vec<banter_domain::Message>,
    pub more_in_store: bool,
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
    settings: FeedSettings,
    sequencer: Sequencer,
    /// Messages read from the store, already in order.
    ready: VecDeque<Arc<EventEnvelope>>,
    /// More missed messages wait in the store (resuming with `after`).
    catching_up: bool,
    /// When the current gap must be filled from the store (monotonic).
    gap_deadline: Option<Duration>,
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
            settings,
            sequencer: Sequencer::new(start.cursor),
            ready: VecDeque::new(),
            catching_up: start.more_in_store,
            gap_deadline: None,
        };
        feed.take_from_store(start.catch_up);
        feed
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
        loop {
            if let Some(envelope) = self.take_ready() {
                return Ok(envelope);
            }
            if self.catching_up {
                self.fill_from_store().await?;
                continue;
            }
            let received = if self.sequencer.has_gap() {
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
        loop {
            if let Some(envelope) = self.take_ready() {
                return Some(Ok(envelope));
            }
            if self.catching_up {
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
        self.catching_up
            || (self.sequencer.has_gap()
                && self
                    .gap_deadline
                    .is_some_and(|deadline| self.clock.monotonic() >= deadline))
    }

    /// A message read from the store or released by the sequencer, in order.
    fn take_ready(&mut self) -> Option<Arc<EventEnvelope>> {
        if let Some(envelope) = self.ready.pop_front() {
            return Some(envelope);
        }
        let envelope = self.sequencer.pop_ready()?;
        if !self.sequencer.has_gap() {
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
                if delivered.is_some() && !self.sequencer.has_gap() {
                    self.gap_deadline = None;
                }
                if self.sequencer.pending_len() > self.settings.max_pending {
                    return Err(FeedError::FellBehind);
                }
                Ok(delivered)
            }
            // A connection is told about others, not about its own user: its welcome already
            // counts it online, and typing is never echoed to the typer.
            RoomEvent::Presence { username, .. } | RoomEvent::Typing { username, .. }
                if self.me.as_ref() == Some(username) =>
            {
                Ok(None)
            }
            RoomEvent::Presence { .. } | RoomEvent::Typing { .. } => Ok(Some(envelope)),
        }
    }

    async fn fill_from_store(&mut self) -> Result<(), FeedError> {
        let query = HistoryQuery::After {
            after: self.sequencer.cursor(),
            limit: PageLimit::history(u64::from(PageLimit::MAX_HISTORY))
                .unwrap_or(PageLimit::DEFAULT_HISTORY),
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
        self.gap_deadline = None;
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
