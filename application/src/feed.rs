//! One connection's view of a room: every message once, in seq order, without gaps.
//!
//! A connection subscribes to the room *before* it reads its snapshot (the welcome), so no
//! message can fall between the two; the [`Sequencer`] then drops what the snapshot already
//! covered and holds back what arrives early. Messages may arrive out of order (posters answer
//! concurrently, and other nodes publish through a shared broker); a gap that the live stream
//! does not fill within a short grace is filled from the store, which has every message by the
//! time anyone could see a later one (seqs are assigned at commit, in commit order).

use std::collections::{BTreeMap, VecDeque};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use banter_domain::ports::{Clock, EventSubscription, MessageStore, StoreError, SubscriptionError};
use banter_domain::{EventEnvelope, HistoryQuery, PageLimit, RoomEvent, RoomName, Seq, Username};
use futures_util::future::{Either, select};

/// Orders one room's messages by seq from a starting point on.
#[derive(Debug)]
pub(crate) struct Sequencer {
    cursor: Seq,
    pending: BTreeMap<Seq, Arc<EventEnvelope>>,
}

impl Sequencer {
    /// Starts after `cursor`: the next message to deliver is `cursor + 1`.
    pub fn new(cursor: Seq) -> Self {
        Self {
            cursor,
            pending: BTreeMap::new(),
        }
    }

    /// The last seq delivered.
    pub fn cursor(&self) -> Seq {
        self.cursor
    }

    /// Offers a message; returns it when it is the next one. A message at or below the cursor
    /// was delivered already and is dropped; a later one waits for the gap to close.
    pub fn offer(&mut self, seq: Seq, message: Arc<EventEnvelope>) -> Option<Arc<EventEnvelope>> {
        if seq <= self.cursor {
            None
        } else if seq == self.cursor.next() {
            self.cursor = seq;
            Some(message)
        } else {
            self.pending.insert(seq, message);
            None
        }
    }

    /// The next held-back message, once its turn has come.
    pub fn pop_ready(&mut self) -> Option<Arc<EventEnvelope>> {
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq <= self.cursor {
                entry.remove();
            } else if seq == self.cursor.next() {
                self.cursor = seq;
                return Some(entry.remove());
            } else {
                return None;
            }
        }
        None
    }

    /// Whether later messages wait for a missing one.
    pub fn has_gap(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Gives up on a gap nobody can fill: continue with the first held-back message.
    pub fn skip_gap(&mut self) -> Option<(Seq, Seq)> {
        let first = *self.pending.keys().next()?;
        let skipped = (self.cursor.next(), first);
        self.cursor = Seq::new(first.get() - 1).unwrap_or(self.cursor);
        Some(skipped)
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

/// The events one connection receives, in order, with its own echoes filtered out.
#[derive(Debug)]
pub struct RoomFeed<S, Sub, C> {
    store: S,
    subscription: Sub,
    clock: C,
    room: RoomName,
    me: Username,
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
        me: Username,
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
            if let Some(envelope) = self.ready.pop_front() {
                return Ok(envelope);
            }
            if let Some(envelope) = self.sequencer.pop_ready() {
                if !self.sequencer.has_gap() {
                    self.gap_deadline = None;
                }
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
            let envelope = received.map_err(|e| match e {
                SubscriptionError::Lagged { .. } => FeedError::FellBehind,
                SubscriptionError::Closed => FeedError::Closed,
            })?;
            if let Some(envelope) = self.accept(envelope)? {
                return Ok(envelope);
            }
        }
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
                if *username == self.me =>
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
        let page = self.store.history(&self.room, query).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use banter_domain::{Content, Message, Timestamp};

    fn envelope(seq: u64) -> (Seq, Arc<EventEnvelope>) {
        let seq = Seq::new(seq).unwrap();
        let message = Message {
            room: RoomName::parse("g").unwrap(),
            seq,
            username: Username::parse("alice").unwrap(),
            content: Content::parse("hi").unwrap(),
            timestamp: Timestamp::from_unix_millis(0).unwrap(),
            client_id: None,
        };
        (seq, EventEnvelope::new(RoomEvent::MessagePosted(message)))
    }

    fn seq_of(envelope: &EventEnvelope) -> u64 {
        match envelope.event() {
            RoomEvent::MessagePosted(m) => m.seq.get(),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn delivers_in_order_and_drops_what_was_seen() {
        let mut sequencer = Sequencer::new(Seq::new(5).unwrap());
        let (s, e) = envelope(4);
        assert!(sequencer.offer(s, e).is_none(), "covered by the snapshot");
        let (s, e) = envelope(5);
        assert!(sequencer.offer(s, e).is_none());
        let (s, e) = envelope(6);
        assert_eq!(sequencer.offer(s, e).map(|e| seq_of(&e)), Some(6));
        let (s, e) = envelope(6);
        assert!(sequencer.offer(s, e).is_none(), "no duplicates");
        assert!(!sequencer.has_gap());
    }

    #[test]
    fn holds_early_messages_until_the_gap_closes() {
        let mut sequencer = Sequencer::new(Seq::ZERO);
        for seq in [3, 2, 5] {
            let (s, e) = envelope(seq);
            assert!(sequencer.offer(s, e).is_none());
        }
        assert!(sequencer.has_gap());
        assert!(sequencer.pop_ready().is_none());
        let (s, e) = envelope(1);
        assert_eq!(sequencer.offer(s, e).map(|e| seq_of(&e)), Some(1));
        assert_eq!(sequencer.pop_ready().map(|e| seq_of(&e)), Some(2));
        assert_eq!(sequencer.pop_ready().map(|e| seq_of(&e)), Some(3));
        assert!(sequencer.pop_ready().is_none(), "4 is still missing");
        assert_eq!(sequencer.cursor().get(), 3);
        assert_eq!(
            sequencer.skip_gap(),
            Some((Seq::new(4).unwrap(), Seq::new(5).unwrap()))
        );
        assert_eq!(sequencer.pop_ready().map(|e| seq_of(&e)), Some(5));
        assert!(!sequencer.has_gap());
    }
}
