//! The chat service's vocabulary: its settings, what a join starts from and answers, a post as
//! it comes in, and the typed errors of every use case.

use std::time::Duration;

use banter_domain::ports::{BroadcastError, Clock, EventBroadcaster, PresenceError, StoreError};
use banter_domain::{
    ClientId, ContentError, NameError, OnlinePage, PageLimit, Rev, RoomName, Seq, Timestamp,
    TypingRules, Username,
};

use super::session::Session;
use crate::feed::{FeedSettings, RoomFeed};
use crate::hub::RoomSubscription;
use crate::rate::RateLimit;

/// Settings of the chat rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSettings {
    /// Per-connection post limit; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    pub typing: TypingRules,
    pub feed: FeedSettings,
    pub history_cache: HistoryCache,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            rate_limit: Some(RateLimit::DEFAULT),
            typing: TypingRules::default(),
            feed: FeedSettings::default(),
            history_cache: HistoryCache::default(),
        }
    }
}

/// The recent-history cache (`--history-cache`): each room with a hub on this node keeps its
/// latest `messages` in memory, so welcomes, resumes and latest pages need no store read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCache {
    /// Messages kept per room; zero turns the cache off.
    pub messages: usize,
    /// Events a connection may have waiting behind its room's hub before it is told it fell
    /// behind (with the cache off, the broadcaster's own bound applies).
    pub queue: usize,
}

impl HistoryCache {
    pub const DEFAULT_MESSAGES: usize = 200;
    pub const MAX_MESSAGES: usize = 10_000;
    pub const OFF: HistoryCache = HistoryCache {
        messages: 0,
        queue: 1024,
    };
}

impl Default for HistoryCache {
    fn default() -> Self {
        Self {
            messages: Self::DEFAULT_MESSAGES,
            ..Self::OFF
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
    /// As [`Start::After`], and first replay the changes since `rev` (the last rev the client
    /// saw) of the messages up to `after`, each once, in its current state.
    Resume { after: Seq, rev: Rev },
}

impl Start {
    /// The seq a resume starts after, and the rev its replay starts after.
    pub(crate) fn resume(self) -> Option<(Seq, Option<Rev>)> {
        match self {
            Start::Latest { .. } => None,
            Start::After(after) => Some((after, None)),
            Start::Resume { after, rev } => Some((after, Some(rev))),
        }
    }
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
    /// The room's newest rev: changes after it follow as `MessageUpdated` events.
    pub last_rev: Rev,
    /// This user's read position in the room (zero if none).
    pub read_seq: Seq,
    /// At most [`banter_domain::WELCOME_ONLINE_CAP`] names, sorted; includes the joining user.
    pub online: Vec<Username>,
    pub online_count: u64,
    pub typing: Vec<Username>,
}

/// A joined connection: what to tell it first, the events that follow, and what it can do.
#[derive(Debug)]
pub struct Joined<S, B: EventBroadcaster, P, C: Clock> {
    pub welcome: Welcome,
    pub feed: RoomFeed<S, RoomSubscription<B::Subscription, C>, C>,
    pub session: Session<S, B, P, C>,
}

/// Why a join failed, by the port that failed. Nothing was registered: the user is not
/// counted online.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// A private room the user is not a member of: for them it does not exist.
    #[error("no such room")]
    NotFound,
}

/// Why creating a private room or changing its members was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// A public room (members endpoints), a private room the actor may not see, or a target
    /// who is not a member.
    #[error("no such room or member")]
    NotFound,
    /// Only the creator may remove another member.
    #[error("only the room's creator may remove another member")]
    Forbidden,
    /// The room already exists (it has messages or was created before).
    #[error("the room already exists")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// A post as it came in: validated by [`super::Chat::post`], so that a refusal still counts as
/// an attempt for the rate limit.
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

/// An edit or a delete as it came in, validated by [`super::Chat::change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeDraft {
    Edit { content: DraftField },
    Delete,
}

/// Why an edit or a delete was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("too many changes: wait {retry_after:?} before trying again")]
    RateLimited { retry_after: Duration },
    #[error("the message is missing or is not a string")]
    MissingContent,
    #[error("the message {0}")]
    InvalidContent(ContentError),
    /// No message has this seq, or an edit names a deleted message.
    #[error("no such message")]
    NotFound,
    /// Only the author may edit or delete a message.
    #[error("only the author may edit or delete a message")]
    Forbidden,
    /// Nothing was changed; trying again is safe.
    #[error("the change could not be stored; try again")]
    Unavailable,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// Which dependency did not answer a readiness check (the first one asked that failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Broadcast(BroadcastError),
}

/// A room in the listing: it has messages, people online, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOverview {
    pub room: RoomName,
    pub last_seq: Seq,
    pub last_message_at: Option<Timestamp>,
    pub online: u64,
}

/// One page of the room listing.
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
