//! What one connection can do once it joined a room.

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{Appended, ClientId, RoomName, Username};

use crate::chat::{Chat, DraftField, PostDraft, PostError, PostRefusal};
use crate::rate::PostBucket;

/// One connection in one room. Call [`Session::leave`] when the connection ends: presence
/// counts the connection until then.
#[derive(Debug)]
pub struct Session<S, B, P, C: Clock> {
    chat: Chat<S, B, P, C>,
    room: RoomName,
    username: Username,
    bucket: PostBucket<C>,
}

impl<S, B, P, C> Session<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    pub(crate) fn new(
        chat: Chat<S, B, P, C>,
        room: RoomName,
        username: Username,
        bucket: PostBucket<C>,
    ) -> Self {
        Self {
            chat,
            room,
            username,
            bucket,
        }
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

    /// Starts, refreshes or stops this user's typing indicator.
    pub async fn set_typing(&self, is_typing: bool) {
        self.chat
            .set_typing(&self.room, &self.username, is_typing)
            .await;
    }

    /// Ends the connection: the user leaves the room if this was their last connection.
    pub async fn leave(self) {
        self.chat.disconnect(&self.room, &self.username).await;
    }
}

fn valid_client_id(field: &DraftField) -> Option<ClientId> {
    match field {
        DraftField::Text(raw) => ClientId::parse(raw).ok(),
        DraftField::Absent | DraftField::NotText => None,
    }
}
