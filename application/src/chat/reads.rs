//! Reads that change nothing: history, the room listing, a room's presence, and the health of
//! the dependencies (heartbeat, readiness).

use std::collections::{BTreeMap, BTreeSet};

use banter_domain::ports::{
    Clock, EventBroadcaster, MessageStore, PresenceError, PresenceRegistry,
};
use banter_domain::{
    ChangesPage, ChangesQuery, HistoryPage, HistoryQuery, PageLimit, Rev, RoomName, SearchPage,
    SearchQuery, SearchScope, Seq, StoredRoomsPage, Username,
};

use super::Chat;
use super::types::{NotReady, ReadError, RoomOverview, RoomPresence, RoomsPage};

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    /// Reads a page of history. The latest page comes from the room's hub when the history
    /// cache holds it; pages before or after a seq always come from the store.
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    pub async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ReadError> {
        if let HistoryQuery::Latest { limit } = query {
            return self.latest_page(room, limit).await;
        }
        Ok(self.inner.store.history(room, query).await?)
    }

    /// Messages of `room` changed after `after`, each once at its latest rev, ascending by
    /// that rev, in their current state.
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    pub async fn changes(
        &self,
        room: &RoomName,
        after: Rev,
        limit: PageLimit,
    ) -> Result<ChangesPage, ReadError> {
        let query = ChangesQuery {
            after,
            through: None,
            max_seq: None,
            limit,
        };
        Ok(self.inner.store.changes(room, query).await?)
    }

    /// Searches `room` (which the caller checked with [`Chat::readable`]), newest first,
    /// below `before` when given.
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    pub async fn search_room(
        &self,
        room: &RoomName,
        query: &SearchQuery,
        before: Option<Seq>,
        limit: PageLimit,
    ) -> Result<SearchPage, ReadError> {
        let scope = SearchScope::Room {
            room: room.clone(),
            before,
        };
        Ok(self.inner.store.search(&scope, query, limit).await?)
    }

    /// Searches every room `viewer` may read (public rooms, and the private ones it is a
    /// member of), newest first by timestamp.
    ///
    /// # Errors
    /// [`ReadError::Store`] when the store cannot be read.
    pub async fn search_readable(
        &self,
        query: &SearchQuery,
        limit: PageLimit,
        viewer: Option<&Username>,
    ) -> Result<SearchPage, ReadError> {
        let member_of = match viewer {
            Some(viewer) => self.inner.store.member_rooms(viewer).await?,
            None => Vec::new(),
        };
        let scope = SearchScope::Readable { member_of };
        Ok(self.inner.store.search(&scope, query, limit).await?)
    }

    /// Lists rooms with messages or people online, sorted by name, after `after`: public
    /// rooms, and the private rooms `viewer` is a member of.
    ///
    /// # Errors
    /// [`ReadError`] when the store or the registry cannot be read.
    pub async fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: PageLimit,
        viewer: Option<&Username>,
    ) -> Result<RoomsPage, ReadError> {
        let member_of: BTreeSet<RoomName> = match viewer {
            Some(viewer) => self
                .inner
                .store
                .member_rooms(viewer)
                .await?
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        };
        let stored = self.visible_stored_rooms(after, limit, &member_of).await?;
        let mut occupied = self
            .inner
            .presence
            .occupied_rooms(after, limit.get() + 1)
            .await?;
        // People online in a private room do not reveal it to others.
        let mut visible = Vec::with_capacity(occupied.len());
        for o in occupied.drain(..) {
            let known =
                member_of.contains(&o.room) || stored.rooms.iter().any(|s| s.room == o.room);
            if known || !self.inner.store.room_access(&o.room).await?.is_private() {
                visible.push(o);
            }
        }
        let occupied = visible;
        // Any room among the first `limit` of the union is among the first `limit` of its own
        // list, so one page of each is enough.
        let mut union: BTreeMap<RoomName, RoomOverview> = stored
            .rooms
            .into_iter()
            .map(|s| {
                let overview = RoomOverview {
                    room: s.room.clone(),
                    last_seq: s.last_seq,
                    last_message_at: s.last_message_at,
                    online: 0,
                };
                (s.room, overview)
            })
            .collect();
        for o in occupied {
            union
                .entry(o.room.clone())
                .or_insert_with(|| RoomOverview {
                    room: o.room,
                    last_seq: Seq::ZERO,
                    last_message_at: None,
                    online: 0,
                })
                .online = o.online_count;
        }
        let has_more = union.len() > limit.get() || stored.has_more;
        let merged: Vec<RoomOverview> = union.into_values().take(limit.get()).collect();
        Ok(RoomsPage {
            rooms: merged,
            has_more,
        })
    }

    /// Stored rooms after `after` that the member of `member_of` may see, page after page until
    /// `limit` of them are found or the store has no more.
    async fn visible_stored_rooms(
        &self,
        after: Option<&RoomName>,
        limit: PageLimit,
        member_of: &BTreeSet<RoomName>,
    ) -> Result<StoredRoomsPage, ReadError> {
        let mut cursor = after.cloned();
        let mut rooms = Vec::new();
        loop {
            let page = self.inner.store.rooms(cursor.as_ref(), limit).await?;
            cursor = page.rooms.last().map(|r| r.room.clone());
            rooms.extend(
                page.rooms
                    .into_iter()
                    .filter(|r| !r.private || member_of.contains(&r.room)),
            );
            if rooms.len() >= limit.get() || !page.has_more {
                let has_more = page.has_more || rooms.len() > limit.get();
                rooms.truncate(limit.get());
                return Ok(StoredRoomsPage { rooms, has_more });
            }
        }
    }

    /// Who is online in `room` (a page of names after `after`) and who is typing.
    ///
    /// # Errors
    /// [`ReadError::Presence`] when the registry cannot be read.
    pub async fn presence(
        &self,
        room: &RoomName,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<RoomPresence, ReadError> {
        let online = self.inner.presence.online(room, after, limit).await?;
        let typing = self.typists(room).await;
        Ok(RoomPresence {
            room: room.clone(),
            online,
            typing,
        })
    }

    /// Keeps this node's presence alive in a shared registry.
    ///
    /// # Errors
    /// [`PresenceError`] when the registry cannot be reached.
    pub async fn heartbeat(&self) -> Result<(), PresenceError> {
        self.inner.presence.heartbeat().await
    }

    /// Whether storage and the broker answer, asked in that order.
    ///
    /// # Errors
    /// [`NotReady`] names the first one that does not answer.
    pub async fn check_ready(&self) -> Result<(), NotReady> {
        self.inner.store.check().await.map_err(NotReady::Store)?;
        self.inner
            .broadcaster
            .check()
            .await
            .map_err(NotReady::Broadcast)
    }
}
