//! Joining a room: subscribe, read the snapshot, register presence, and answer with the
//! welcome, the connection's feed and its session.

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{
    HistoryQuery, PageLimit, PresenceChange, PresenceEvent, RoomName, Seq, Username,
    WELCOME_ONLINE_CAP,
};

use super::Chat;
use super::session::Session;
use super::types::{JoinError, Joined, Start, Welcome};
use crate::feed::{FeedStart, RoomFeed};
use crate::rate::PostBucket;

/// What the snapshot gives a joining connection: the messages its welcome shows, and where
/// its feed picks up.
struct Opening {
    /// The welcome's messages: the latest ones, or none when resuming.
    messages: Vec<banter_domain::Message>,
    /// Older messages exist before `messages`.
    has_more: bool,
    /// The room's last seq as the snapshot saw it.
    last_seq: Seq,
    feed: FeedStart,
}

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
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
        let opening = self.read_opening(&room, start).await?;

        {
            let _ordered = self.room_lock(&room).await;
            let change = inner.presence.connect(&room, &username).await?;
            if let PresenceChange::Joined { online_count } = change {
                self.announce(&room, &username, PresenceEvent::Join, online_count)
                    .await;
            }
        }
        let bucket = PostBucket::new(inner.settings.rate_limit, inner.clock.clone());
        let session = Session::new(self.clone(), room.clone(), username.clone(), bucket);
        let online = match inner.presence.online(&room, None, WELCOME_ONLINE_CAP).await {
            Ok(online) => online,
            Err(e) => {
                session.leave().await;
                return Err(e.into());
            }
        };
        // Typing is never shown to the typer, not even in the welcome of their other tab.
        let mut typing = self.typists(&room).await;
        typing.retain(|typist| *typist != username);

        let welcome = Welcome {
            room: room.clone(),
            username: username.clone(),
            messages: opening.messages,
            has_more: opening.has_more,
            last_seq: opening.last_seq,
            online: online.users,
            online_count: online.online_count,
            typing,
        };
        let feed = RoomFeed::new(
            (inner.store.clone(), subscription, inner.clock.clone()),
            room,
            username,
            inner.settings.feed,
            opening.feed,
        );
        Ok(Joined {
            welcome,
            feed,
            session,
        })
    }

    /// Reads the snapshot a join starts from.
    async fn read_opening(&self, room: &RoomName, start: Start) -> Result<Opening, JoinError> {
        let store = &self.inner.store;
        match start {
            Start::Latest { history } => {
                // Reading one message when none are wanted still says whether any exist.
                let wanted = history.clamp(1, Start::MAX_HISTORY);
                let limit =
                    PageLimit::history(u64::from(wanted)).unwrap_or(PageLimit::DEFAULT_HISTORY);
                let page = store.history(room, HistoryQuery::Latest { limit }).await?;
                let (messages, has_more) = if history == 0 {
                    (Vec::new(), !page.messages.is_empty())
                } else {
                    (page.messages, page.has_more)
                };
                Ok(Opening {
                    messages,
                    has_more,
                    last_seq: page.last_seq,
                    feed: FeedStart {
                        cursor: page.last_seq,
                        catch_up: Vec::new(),
                        more_in_store: false,
                    },
                })
            }
            Start::After(after) => {
                let limit = PageLimit::history(u64::from(Start::MAX_HISTORY))
                    .unwrap_or(PageLimit::DEFAULT_HISTORY);
                let page = store
                    .history(room, HistoryQuery::After { after, limit })
                    .await?;
                Ok(Opening {
                    messages: Vec::new(),
                    has_more: false,
                    last_seq: page.last_seq,
                    feed: FeedStart {
                        // An `after` beyond the room's end replays nothing; live messages
                        // continue from the real end.
                        cursor: after.min(page.last_seq),
                        catch_up: page.messages,
                        more_in_store: page.has_more,
                    },
                })
            }
        }
    }
}
