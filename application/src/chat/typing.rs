//! Typing indicators: start, refresh and stop, their expiry, the end of typing on a post, and
//! the registry's shared list of who is typing.

use std::time::Duration;

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{RoomEvent, RoomName, TypingChange, Username};

use super::Chat;

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    /// Starts (or refreshes) or stops `username`'s typing indicator in `room`.
    pub async fn set_typing(&self, room: &RoomName, username: &Username, is_typing: bool) {
        let _ordered = self.room_lock(room).await;
        let (change, new_here) = {
            let mut book = self.typing_book();
            if is_typing {
                let new_here = !book.is_typing(room, username);
                (
                    book.start(room, username, self.inner.clock.monotonic()),
                    new_here,
                )
            } else {
                (book.stop(room, username), false)
            }
        };
        self.publish_typing(change, new_here).await;
    }

    /// Ends the typing indicators not refreshed in time. Returns how long until the next one
    /// may expire, for [`Chat::run_typing_expiry`].
    pub async fn expire_typing(&self) -> Option<Duration> {
        let now = self.inner.clock.monotonic();
        let due = self.typing_book().due_rooms(now);
        for room in due {
            // Decided and published under the room's lock, like a start or stop, so an expiry
            // cannot overtake a refresh that happened after it.
            let _ordered = self.room_lock(&room).await;
            let ended = self.typing_book().expire_in(&room, now);
            for change in ended {
                self.end_lapsed_typing(change).await;
            }
        }
        let book = self.typing_book();
        book.next_expiry()
            .map(|at| at.saturating_sub(self.inner.clock.monotonic()))
    }

    /// Expires typing indicators for as long as the returned future runs.
    pub async fn run_typing_expiry(&self) {
        // Never sleep longer than this, so a new indicator is not missed for long; a new one
        // always expires later than those already known.
        const LONGEST_NAP: Duration = Duration::from_secs(1);
        loop {
            let wait = self
                .expire_typing()
                .await
                .unwrap_or(LONGEST_NAP)
                .min(LONGEST_NAP);
            self.inner
                .clock
                .sleep(wait.max(Duration::from_millis(10)))
                .await;
        }
    }

    /// Who is typing in `room`, on every node; this node's own typists if the registry
    /// cannot be read (a list is worth more than a refusal here).
    pub(super) async fn typists(&self, room: &RoomName) -> Vec<Username> {
        match self.inner.presence.typing(room).await {
            Ok(typists) => typists,
            Err(e) => {
                tracing::warn!(%room, error = %e, "typing list not read; showing this node's");
                self.typing_book().typing(room)
            }
        }
    }

    /// Posting ends the poster's typing indicator: one started here, and one a tab on another
    /// node started (two tabs of one user are one typer), which only the shared list knows of.
    /// The listing goes, so that node's own expiry later finds it ended and stays silent.
    pub(super) async fn end_typing_on_post(&self, room: &RoomName, username: &Username) {
        let ended_here = self.typing_book().stop(room, username).is_some();
        let listed = match self.inner.presence.set_typing(room, username, None).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(%room, %username, error = %e, "typing list not updated");
                false
            }
        };
        if ended_here || listed {
            self.publish(RoomEvent::Typing {
                room: room.clone(),
                username: username.clone(),
                is_typing: false,
            })
            .await;
        }
    }

    /// Records a typing change in the registry (for the lists) and tells the room, except a
    /// start that is new here while the registry already listed the user: a tab of theirs on
    /// another node is typing, and the room was told (two tabs are one typer).
    pub(super) async fn publish_typing(&self, change: Option<TypingChange>, new_here: bool) {
        let Some(TypingChange {
            room,
            username,
            is_typing,
        }) = change
        else {
            return;
        };
        // Listed a little longer than the indicator lives: a refresh may come up to one
        // rebroadcast interval after the last change that reached the registry.
        let rules = self.inner.settings.typing;
        let at_most = is_typing.then_some(rules.expires_after + rules.rebroadcast_after);
        let listed = match self
            .inner
            .presence
            .set_typing(&room, &username, at_most)
            .await
        {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(%room, %username, error = %e, "typing list not updated");
                false
            }
        };
        if is_typing && new_here && listed {
            return;
        }
        self.publish(RoomEvent::Typing {
            room,
            username,
            is_typing,
        })
        .await;
    }

    /// An indicator lapsed here: the room is told it ended only if this node refreshed it
    /// last (or the registry cannot say).
    async fn end_lapsed_typing(&self, change: TypingChange) {
        let announce = match self
            .inner
            .presence
            .end_typing(&change.room, &change.username)
            .await
        {
            Ok(announce) => announce,
            Err(e) => {
                tracing::warn!(room = %change.room, username = %change.username, error = %e,
                    "typing list not updated");
                true
            }
        };
        if announce {
            self.publish(RoomEvent::Typing {
                room: change.room,
                username: change.username,
                is_typing: false,
            })
            .await;
        }
    }
}
