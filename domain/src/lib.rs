//! # banter-domain
//!
//! The pure core of banter: the value types of the chat (rooms, usernames, message content,
//! client ids, seqs, timestamps), the rules of presence and typing as plain state, the domain
//! events, and the ports — the traits through which the core reaches storage, the broadcaster,
//! the presence registry and the clock.
//!
//! May depend on: `serde`, `thiserror`, `time` (formatting only) and `validator`. Never on an
//! executor or anything that does I/O (no tokio, poem, diesel, bb8 or Redis client): adapters
//! implement the ports, the application drives them.

mod access;
mod content;
mod events;
mod message;
mod names;
pub mod ports;
mod presence;
mod reading;
mod search;
mod typing;
mod values;

pub use access::{MembershipRefusal, RoomAccess};
pub use content::{Content, ContentError};
pub use events::{EventEnvelope, PresenceEvent, RoomEvent};
pub use message::{
    Appended, Change, ChangeRefusal, ChangeRequest, Changed, ChangesPage, ChangesQuery,
    HistoryPage, HistoryQuery, Message, MessageChange, NewMessage, PageLimit, PageLimitOutOfRange,
    StoredRoom, StoredRoomsPage,
};
pub use names::{ClientId, NameError, RoomName, Username};
pub use presence::{OccupiedRoom, OnlinePage, PresenceBook, PresenceChange, WELCOME_ONLINE_CAP};
pub use reading::{ConnectionId, ReadMark, UNREAD_CAP, UserRoom, advance_read};
pub use search::{
    Highlight, INDEXED_WORD_MAX_CHARS, QUERY_MAX_CHARS, QueryError, SEARCH_DEFAULT_LIMIT,
    SEARCH_MAX_LIMIT, SearchHit, SearchPage, SearchQuery, SearchScope, Term, Word, hit,
    index_words, search_limit, words,
};
pub use typing::{TypingBook, TypingChange, TypingRules};
pub use values::{Rev, Seq, SeqOutOfRange, Timestamp, TimestampError};
