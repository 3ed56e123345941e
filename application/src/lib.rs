//! # banter-application
//!
//! The use cases of banter — join a room, post, type, leave, read history, list rooms, read
//! presence — written once against the domain's ports. [`Chat`] is generic over the store,
//! the broadcaster, the presence registry and the clock; the binary picks the adapters.
//!
//! The subtle rule of the service lives here: a connection subscribes to its room before it
//! reads its snapshot, and its [`RoomFeed`] orders and de-duplicates by seq, so that no message
//! falls between the snapshot and the live stream and none arrives twice.
//!
//! May depend on: `banter-domain`, `futures-util` (combinators, no executor), `governor` (the
//! token bucket), tokio's `sync` channels and async-broadcast (both run on any executor; the
//! room hubs of the history cache fan out through the latter) and `tracing`. Never on an adapter or an executor: the
//! hubs' pumps are handed to the binary to run ([`Chat::run_history_cache`]).
//!
//! Tests use hand-written fakes of the ports (in `tests/fakes`) rather than a mocking
//! library: the fakes keep real state (a store that assigns seqs, a broadcaster that fans
//! out), so tests assert outcomes instead of call sequences, and can inject failures and
//! reorderings that the real adapters only show under load.

mod chat;
mod feed;
mod hub;
mod rate;
mod sequencer;

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};

/// One choice of adapter for every port, so code outside the core can name a whole wiring
/// with a single type parameter (`Chat<P::Store, …>` is [`ChatOf<P>`]).
pub trait Ports: Send + Sync + 'static {
    type Store: MessageStore;
    type Broadcaster: EventBroadcaster;
    type Presence: PresenceRegistry;
    type Clock: Clock;
}

/// The chat service wired with the adapters of `P`.
pub type ChatOf<P> = Chat<
    <P as Ports>::Store,
    <P as Ports>::Broadcaster,
    <P as Ports>::Presence,
    <P as Ports>::Clock,
>;
/// A joined connection wired with the adapters of `P`.
pub type JoinedOf<P> = Joined<
    <P as Ports>::Store,
    <P as Ports>::Broadcaster,
    <P as Ports>::Presence,
    <P as Ports>::Clock,
>;
/// A connection's session wired with the adapters of `P`.
pub type SessionOf<P> = Session<
    <P as Ports>::Store,
    <P as Ports>::Broadcaster,
    <P as Ports>::Presence,
    <P as Ports>::Clock,
>;
/// A connection's feed wired with the adapters of `P`.
pub type FeedOf<P> = RoomFeed<
    <P as Ports>::Store,
    RoomSubscription<
        <<P as Ports>::Broadcaster as EventBroadcaster>::Subscription,
        <P as Ports>::Clock,
    >,
    <P as Ports>::Clock,
>;

pub use chat::{
    ChangeDraft, ChangeError, Chat, ChatSettings, DraftField, HistoryCache, JoinError, Joined,
    MembershipError, NotReady, PostDraft, PostError, PostRefusal, ReadError, RoomOverview,
    RoomPresence, RoomsPage, Session, Start, Welcome,
};
pub use feed::{FeedError, FeedSettings, RoomFeed};
pub use hub::{HistoryCacheStats, HubReceiver, HubTask, RoomSubscription};
pub use rate::RateLimit;
