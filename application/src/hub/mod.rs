//! The history cache: one hub per room on this node, the node's one subscription to the room.
//!
//! A hub's pump runs the room's events through a [`RoomFeed`](crate::RoomFeed) (ordered,
//! gapless, gaps filled from the store) and hands each one to [`RoomHub::forward`], which, under
//! one lock, adds a message to the hub's [`Window`] of latest messages and sends the event to
//! the room's local connections. A joining connection first lets the pump catch up with what
//! already reached the node ([`RoomHub::sync`]), then takes its receiver and its snapshot of
//! the window under the same lock ([`RoomHub::attach`]), so every event is either in the
//! snapshot or arrives on the receiver, never both and never neither — the rule "subscribe
//! before the snapshot" by construction, with no store read.

mod channel;
mod registry;
mod window;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use banter_domain::ports::{Clock, EventSubscription, SubscriptionError};
use banter_domain::{EventEnvelope, Rev, RoomEvent, Seq};
use futures_util::future::AbortHandle;
use tokio::sync::{mpsc, oneshot};

use channel::RoomChannel;

pub use registry::{HistoryCacheStats, HubTask};
pub(crate) use registry::{Hubs, Opened};
pub(crate) use window::{LatestPage, Window};

/// Why a hub stopped: its connections end the way a direct subscription would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HubEnd {
    /// The pump fell behind the room's stream: its connections should resume with `after`.
    FellBehind,
    /// The stream closed (the broker went away) or missing messages could not be read.
    Closed,
    /// Dropped after its linger, with nobody attached.
    Expired,
}

/// The hub was stopped before the caller could attach; open a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room's hub stopped")]
pub(crate) struct HubStopped;

#[derive(Debug)]
struct HubState {
    window: Window,
    /// `None` once the hub stopped: receivers then drain what was sent and see the end.
    sender: Option<RoomChannel>,
    end: Option<HubEnd>,
    /// The highest seq this node knows was committed (its own posts are noted before the hub
    /// hears of them): a latest page answered from a window behind it would miss a message
    /// its poster was already told is stored.
    known: Seq,
    /// Likewise, the highest rev this node knows was committed (its own edits and deletes).
    known_rev: Rev,
    /// When the hub was last attached to, read or written through, or left by its last
    /// connection (monotonic clock).
    last_used: Duration,
}

/// Asks the pump to forward what already arrived and then answer.
pub(crate) type SyncRequests = mpsc::UnboundedReceiver<oneshot::Sender<()>>;

/// One room's hub on this node.
#[derive(Debug)]
pub(crate) struct RoomHub {
    state: Mutex<HubState>,
    /// Stops the pump.
    pump: AbortHandle,
    syncs: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl RoomHub {
    /// A hub and the sync requests its pump answers.
    pub fn new(
        window: Window,
        queue: usize,
        pump: AbortHandle,
        now: Duration,
    ) -> (Self, SyncRequests) {
        let sender = RoomChannel::new(queue);
        let (syncs, requests) = mpsc::unbounded_channel();
        let hub = Self {
            state: Mutex::new(HubState {
                known: window.last_seq(),
                known_rev: window.last_rev(),
                window,
                sender: Some(sender),
                end: None,
                last_used: now,
            }),
            pump,
            syncs,
        };
        (hub, requests)
    }

    /// Returns once the pump has forwarded every event that reached this node's subscription
    /// before the call. A connection attaching afterwards is not told of events from before
    /// it joined (a presence change already in its welcome's `online`, say), exactly as with
    /// a subscription of its own.
    ///
    /// # Errors
    /// [`HubStopped`] when the hub stopped.
    pub async fn sync(&self) -> Result<(), HubStopped> {
        let (done, synced) = oneshot::channel();
        self.syncs.send(done).map_err(|_| HubStopped)?;
        synced.await.map_err(|_| HubStopped)
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        // Every update under the lock completes without panicking code in between; a poisoned
        // lock still holds a consistent hub.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the room's next event and sends it to the local connections. Returns false
    /// once the hub stopped.
    pub fn forward(&self, envelope: Arc<EventEnvelope>) -> bool {
        let mut state = self.state();
        let state = &mut *state;
        let Some(sender) = state.sender.as_mut() else {
            return false;
        };
        match envelope.event() {
            RoomEvent::MessagePosted(message) => {
                state.window.push(message);
                state.known = state.known.max(message.seq);
            }
            // Served in its current state from now on.
            RoomEvent::MessageUpdated { rev, message } => state.window.update(*rev, message),
            RoomEvent::Presence { .. }
            | RoomEvent::Typing { .. }
            | RoomEvent::Read { .. }
            | RoomEvent::MemberRemoved { .. }
            | RoomEvent::MadePrivate { .. } => {}
        }
        sender.send(envelope);
        true
    }

    /// A receiver of every event forwarded from now on, and what `view` makes of the window
    /// at this very moment.
    ///
    /// # Errors
    /// [`HubStopped`] when the hub stopped; the caller opens a new one.
    pub fn attach<C: Clock, T>(
        self: &Arc<Self>,
        clock: &C,
        view: impl FnOnce(&Window) -> T,
    ) -> Result<(HubReceiver<C>, T), HubStopped> {
        let mut state = self.state();
        let Some(sender) = &state.sender else {
            return Err(HubStopped);
        };
        let receiver = sender.subscribe();
        state.last_used = clock.monotonic();
        let viewed = view(&state.window);
        Ok((
            HubReceiver {
                receiver: Some(receiver),
                hub: Arc::clone(self),
                clock: clock.clone(),
            },
            viewed,
        ))
    }

    /// The latest `count` messages for a read that must not miss a message this node knows
    /// was committed; `None` when the window cannot say.
    pub fn latest_page(&self, count: usize, now: Duration) -> Option<LatestPage> {
        let mut state = self.state();
        state.sender.as_ref()?;
        state.last_used = now;
        if state.window.last_seq() < state.known || state.window.last_rev() < state.known_rev {
            return None;
        }
        state.window.latest(count)
    }

    /// Notes that `seq` is committed, and that the room was written through this node.
    pub fn note_committed(&self, seq: Seq, now: Duration) {
        let mut state = self.state();
        state.known = state.known.max(seq);
        state.last_used = now;
    }

    /// Notes that `rev` is committed, and that the room was written through this node.
    pub fn note_changed(&self, rev: Rev, now: Duration) {
        let mut state = self.state();
        state.known_rev = state.known_rev.max(rev);
        state.last_used = now;
    }

    /// Whether the hub still runs and is worth keeping at `now`.
    pub fn is_live(&self, now: Duration, linger: Duration) -> bool {
        let state = self.state();
        match &state.sender {
            None => false,
            Some(sender) => sender.receiver_count() > 0 || now < state.last_used + linger,
        }
    }

    /// Stops the hub: the pump ends, the connections get what was sent, then `end`.
    pub fn stop(&self, end: HubEnd) {
        let mut state = self.state();
        if state.end.is_none() {
            state.end = Some(end);
        }
        state.sender = None;
        drop(state);
        self.pump.abort();
    }

    fn end(&self) -> HubEnd {
        self.state().end.unwrap_or(HubEnd::Closed)
    }

    /// Called when a receiver went away: the linger of the last one starts now.
    fn released(&self, now: Duration) {
        let mut state = self.state();
        if state
            .sender
            .as_ref()
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            state.last_used = now;
        }
    }
}

/// One connection's end of a hub: the room's events in the hub's order.
#[derive(Debug)]
pub struct HubReceiver<C: Clock> {
    receiver: Option<async_broadcast::Receiver<Arc<EventEnvelope>>>,
    hub: Arc<RoomHub>,
    clock: C,
}

impl<C: Clock> HubReceiver<C> {
    async fn next(&mut self) -> Result<Arc<EventEnvelope>, SubscriptionError> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Err(SubscriptionError::Closed);
        };
        // Receiver::recv is cancel-safe, as EventSubscription requires: an event is taken only
        // when the future completes.
        match receiver.recv_direct().await {
            Ok(envelope) => Ok(envelope),
            Err(async_broadcast::RecvError::Overflowed(missed)) => {
                Err(SubscriptionError::Lagged { missed })
            }
            Err(async_broadcast::RecvError::Closed) => match self.hub.end() {
                // The hub, not this connection, fell behind: the connection resumes the same way.
                HubEnd::FellBehind => Err(SubscriptionError::Lagged { missed: 0 }),
                HubEnd::Closed | HubEnd::Expired => Err(SubscriptionError::Closed),
            },
        }
    }
}

impl<C: Clock> Drop for HubReceiver<C> {
    fn drop(&mut self) {
        drop(self.receiver.take());
        self.hub.released(self.clock.monotonic());
    }
}

/// A connection's stream of its room's events: straight from the broadcaster (history cache
/// off) or through the room's hub on this node.
#[derive(Debug)]
pub struct RoomSubscription<Sub, C: Clock>(Source<Sub, C>);

#[derive(Debug)]
enum Source<Sub, C: Clock> {
    Direct(Sub),
    Hub(HubReceiver<C>),
}

impl<Sub, C: Clock> RoomSubscription<Sub, C> {
    pub(crate) fn direct(subscription: Sub) -> Self {
        Self(Source::Direct(subscription))
    }

    pub(crate) fn hub(receiver: HubReceiver<C>) -> Self {
        Self(Source::Hub(receiver))
    }
}

impl<Sub: EventSubscription, C: Clock> EventSubscription for RoomSubscription<Sub, C> {
    async fn next(&mut self) -> Result<Arc<EventEnvelope>, SubscriptionError> {
        match &mut self.0 {
            Source::Direct(subscription) => subscription.next().await,
            Source::Hub(receiver) => receiver.next().await,
        }
    }
}
