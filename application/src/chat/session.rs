//! What one connection can do once it joined a room: post, type, and leave.

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{
    Appended, Changed, ClientId, ConnectionId, PresenceChange, PresenceEvent, ReadMark, RoomName,
    Seq, Username,
};

use super::Chat;
use super::types::{
    ChangeDraft, ChangeError, DraftField, PostDraft, PostError, PostRefusal, ReadError,
};
use crate::rate::PostBucket;

/// One connection in one room. Call [`Session::leave`] when the connection ends: presence
/// counts the connection until then.
#[derive(Debug)]
pub struct Session<S, B, P, C: Clock> {
    chat: Chat<S, B, P, C>,
    room: RoomName,
    username: Username,
    connection: ConnectionId,
    bucket: PostBucket<C>,
}

impl<S, B, P, C> Session<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    /// A session for a connection whose presence [`Chat::join`] has just registered.
    pub(super) fn new(
        chat: Chat<S, B, P, C>,
        (room, username, connection): (RoomName, Username, ConnectionId),
        bucket: PostBucket<C>,
    ) -> Self {
        Self {
            chat,
            room,
            username,
            connection,
            bucket,
        }
    }

    /// Reports that this user read the room up to `seq`. Takes no rate-limit token. A position
    /// that moved is told to the user's other connections to the room, on every node.
    ///
    /// # Errors
    /// [`ReadError::Store`] when the position could not be stored.
    pub async fn mark_read(&self, seq: Seq) -> Result<ReadMark, ReadError> {
        self.chat
            .mark_read_from(&self.room, &self.username, seq, Some(self.connection))
            .await
    }

    /// Posts a message from this connection. Every attempt takes a token from the
    /// connection's bucket, whatever its outcome; the sender sees its own message when the
    /// room's feed delivers it, or gets the original back for a resend.
    ///
    /// # Errors
    /// [`PostError`] with [`PostRefusal::RateLimited`] when the bucket is empty, or whatever
    /// [`Chat::post`] refuses.
    pub async fn post(&self, draft: PostDraft) -> Result<Appended, PostError> {
        if let Err(retry_after) = self.bucket.take() {
            return Err(PostError {
                refusal: PostRefusal::RateLimited { retry_after },
                client_id: valid_client_id(&draft.client_id),
            });
        }
        self.chat.post(&self.room, &self.username, draft).await
    }

    /// Edits or deletes one of this user's messages. Every attempt takes a token from the
    /// connection's bucket, like a post; the room is told of a real change through its feed.
    ///
    /// # Errors
    /// [`ChangeError::RateLimited`] when the bucket is empty, or whatever [`Chat::change`]
    /// refuses.
    pub async fn change(&self, seq: Seq, draft: ChangeDraft) -> Result<Changed, ChangeError> {
        self.bucket
            .take()
            .map_err(|retry_after| ChangeError::RateLimited { retry_after })?;
        self.chat
            .change(&self.room, &self.username, seq, draft)
            .await
    }

    /// Starts, refreshes or stops this user's typing indicator.
    pub async fn set_typing(&self, is_typing: bool) {
        self.chat
            .set_typing(&self.room, &self.username, is_typing)
            .await;
    }

    /// Ends the connection: when it was the user's last one in the room, their typing ends
    /// and the room is told they left.
    pub async fn leave(self) {
        let Self {
            chat,
            room,
            username,
            ..
        } = self;
        let _ordered = chat.room_lock(&room).await;
        match chat.inner.presence.disconnect(&room, &username).await {
            Ok(PresenceChange::Left { online_count }) => {
                let ended = chat.typing_book().stop(&room, &username);
                chat.publish_typing(ended, false).await;
                chat.announce(&room, &username, PresenceEvent::Leave, online_count)
                    .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%room, %username, error = %e, "presence not updated on leave"),
        }
    }
}

fn valid_client_id(field: &DraftField) -> Option<ClientId> {
    match field {
        DraftField::Text(raw) => ClientId::parse(raw).ok(),
        DraftField::Absent | DraftField::NotText => None,
    }
}
