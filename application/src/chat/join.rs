//! Joining a room: subscribe, read the snapshot, register presence, and answer with the
//! welcome, the connection's feed and its session. With the history cache on, the subscription
//! and the snapshot come from the room's hub, taken together under its lock.

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{
    HistoryQuery, PageLimit, PresenceChange, PresenceEvent, Rev, RoomName, Seq, Username,
    WELCOME_ONLINE_CAP,
};

use super::Chat;
use super::session::Session;
use super::types::{JoinError, Joined, ReadError, Start, Welcome};
use crate::feed::{FeedStart, Replay, RoomFeed};
use crate::hub::{RoomSubscription, Window};
use crate::rate::PostBucket;

/// Attempts to attach to a room's hub before joining without it: a hub can stop between
/// being found and being attached to (its stream closed), and the next one is opened afresh.
const HUB_ATTEMPTS: usize = 2;

/// What the snapshot gives a joining connection: the messages its welcome shows, and where
/// its feed picks up.
struct Opening {
    /// The welcome's messages: the latest ones, or none when resuming.
    messages: Vec<banter_domain::Message>,
    /// Older messages exist before `messages`.
    has_more: bool,
    /// The room's last seq as the snapshot saw it.
    last_seq: Seq,
    /// The room's last rev, read before the snapshot's messages.
    last_rev: Rev,
    feed: FeedStart,
}

impl Opening {
    /// A welcome showing the room's latest messages: the feed picks up right after them.
    fn latest(
        messages: Vec<banter_domain::Message>,
        has_more: bool,
        last_seq: Seq,
        last_rev: Rev,
    ) -> Self {
        Self {
            messages,
            has_more,
            last_seq,
            last_rev,
            feed: FeedStart {
                cursor: last_seq,
                catch_up: Vec::new(),
                more_in_store: false,
                rev_cursor: last_rev,
                replay: None,
            },
        }
    }

    /// A resume after `after`: no messages in the welcome, the missed ones follow, preceded
    /// by the changes since `rev` when it was given.
    fn resume(
        (after, rev): (Seq, Option<Rev>),
        last_seq: Seq,
        last_rev: Rev,
        missed: Vec<banter_domain::Message>,
        more_in_store: bool,
    ) -> Self {
        Self {
            messages: Vec::new(),
            has_more: false,
            last_seq,
            last_rev,
            feed: FeedStart {
                // An `after` beyond the room's end replays nothing; live messages continue
                // from the real end.
                cursor: after.min(last_seq),
                catch_up: missed,
                more_in_store,
                rev_cursor: last_rev,
                replay: rev.map(|rev| Replay {
                    after: rev,
                    through: last_rev,
                    max_seq: after,
                }),
            },
        }
    }
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
        let (subscription, opening) = self.subscribe_and_snapshot(&room, start).await?;
        // After subscribing: a removal committed from now on reaches the feed and ends it.
        if !self
            .readable(&room, Some(&username))
            .await
            .map_err(|e| match e {
                ReadError::Store(e) => JoinError::Store(e),
                ReadError::Presence(e) => JoinError::Presence(e),
            })?
        {
            return Err(JoinError::NotFound);
        }
        // After subscribing: a position moved from now on reaches the feed.
        let read_seq = inner.store.read_position(&room, &username).await?;
        let connection = self.next_connection();

        {
            let _ordered = self.room_lock(&room).await;
            let change = inner.presence.connect(&room, &username).await?;
            if let PresenceChange::Joined { online_count } = change {
                self.announce(&room, &username, PresenceEvent::Join, online_count)
                    .await;
            }
        }
        let bucket = PostBucket::new(inner.settings.rate_limit, inner.clock.clone());
        let session = Session::new(
            self.clone(),
            (room.clone(), username.clone(), connection),
            bucket,
        );
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
            last_rev: opening.last_rev,
            read_seq,
            online: online.users,
            online_count: online.online_count,
            typing,
        };
        let feed = RoomFeed::new(
            (inner.store.clone(), subscription, inner.clock.clone()),
            room,
            Some(username),
            inner.settings.feed,
            opening.feed,
        )
        .reading(connection, read_seq);
        Ok(Joined {
            welcome,
            feed,
            session,
        })
    }

    /// The connection's subscription and the snapshot it starts from: from the room's hub
    /// when the history cache is on (its window, or the store when the window does not reach
    /// back far enough), else straight from the broadcaster and the store.
    async fn subscribe_and_snapshot(
        &self,
        room: &RoomName,
        start: Start,
    ) -> Result<(RoomSubscription<B::Subscription, C>, Opening), JoinError> {
        for _ in 0..HUB_ATTEMPTS {
            let Some(opened) = self.room_hub(room).await? else {
                break;
            };
            // A hub opened just now has forwarded nothing from before this join.
            if !opened.fresh && opened.hub.sync().await.is_err() {
                continue;
            }
            let Ok((receiver, cached)) = opened
                .hub
                .attach(&self.inner.clock, |window| opening_from(window, start))
            else {
                continue;
            };
            let subscription = RoomSubscription::hub(receiver);
            if let Some(opening) = cached {
                self.count_cache_read(!opened.fresh);
                return Ok((subscription, opening));
            }
            // The receiver was taken first, so the store's snapshot is read after it, as a
            // join without the cache does.
            self.count_cache_read(false);
            let opening = self.read_opening(room, start).await?;
            return Ok((subscription, opening));
        }
        let subscription = RoomSubscription::direct(self.inner.broadcaster.subscribe(room).await?);
        self.count_cache_read(false);
        let opening = self.read_opening(room, start).await?;
        Ok((subscription, opening))
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
                Ok(Opening::latest(
                    messages,
                    has_more,
                    page.last_seq,
                    page.last_rev,
                ))
            }
            Start::After(_) | Start::Resume { .. } => {
                let resume = start.resume().unwrap_or((Seq::ZERO, None));
                let limit = PageLimit::history(u64::from(Start::MAX_HISTORY))
                    .unwrap_or(PageLimit::DEFAULT_HISTORY);
                let page = store
                    .history(
                        room,
                        HistoryQuery::After {
                            after: resume.0,
                            limit,
                        },
                    )
                    .await?;
                Ok(Opening::resume(
                    resume,
                    page.last_seq,
                    page.last_rev,
                    page.messages,
                    page.has_more,
                ))
            }
        }
    }
}

/// What a hub's window can answer for a join, if it holds every message the join needs.
fn opening_from(window: &Window, start: Start) -> Option<Opening> {
    match start {
        Start::Latest { history } => {
            let page = window.latest(usize::from(history))?;
            Some(Opening::latest(
                page.messages,
                page.has_more,
                page.last_seq,
                page.last_rev,
            ))
        }
        Start::After(_) | Start::Resume { .. } => {
            let resume = start.resume()?;
            let missed = window.after(resume.0)?;
            Some(Opening::resume(
                resume,
                window.last_seq(),
                window.last_rev(),
                missed,
                false,
            ))
        }
    }
}
