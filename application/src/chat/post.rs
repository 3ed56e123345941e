//! Posting: validate a draft, store it, tell the room, and end the poster's typing.

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{Appended, ClientId, Content, NewMessage, RoomEvent, RoomName, Username};

use super::Chat;
use super::types::{DraftField, PostDraft, PostError, PostRefusal};

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    /// Validates and stores a post, then tells the room. A resend of a stored post returns
    /// the original as [`Appended::Duplicate`] and tells nobody. Rate limits are the caller's:
    /// a [`super::Session`] applies its own, the REST edge limits per client address.
    ///
    /// # Errors
    /// [`PostError`] says what was wrong with the draft, or that it could not be stored.
    pub async fn post(
        &self,
        room: &RoomName,
        username: &Username,
        draft: PostDraft,
    ) -> Result<Appended, PostError> {
        let post = validate(room, username, draft)?;
        let client_id = post.client_id.clone();
        let stored_at = self.inner.clock.monotonic();
        let appended = self.inner.store.append(post).await.map_err(|e| {
            tracing::warn!(%room, error = %e, "post not stored");
            PostError {
                refusal: PostRefusal::Unavailable,
                client_id: client_id.clone(),
            }
        })?;
        if let Appended::Stored(message) = &appended {
            tracing::debug!(
                %room, seq = %message.seq,
                store_ms = (self.inner.clock.monotonic() - stored_at).as_secs_f64() * 1000.0,
                "message stored"
            );
            self.publish(RoomEvent::MessagePosted(message.clone()))
                .await;
            let _ordered = self.room_lock(room).await;
            self.end_typing_on_post(room, username).await;
        }
        // Stored or found: either way committed, and a latest page read here must show it.
        let (Appended::Stored(message) | Appended::Duplicate(message)) = &appended;
        self.note_posted(room, message.seq);
        Ok(appended)
    }
}

/// Turns a draft into a message to store, or says what is wrong with it.
fn validate(
    room: &RoomName,
    username: &Username,
    draft: PostDraft,
) -> Result<NewMessage, PostError> {
    // The client id first, so a refusal of the content can still name the post.
    let client_id = match draft.client_id {
        DraftField::Absent => None,
        DraftField::NotText => {
            return Err(PostError {
                refusal: PostRefusal::ClientIdNotText,
                client_id: None,
            });
        }
        DraftField::Text(raw) => Some(ClientId::try_from(raw).map_err(|e| PostError {
            refusal: PostRefusal::InvalidClientId(e),
            client_id: None,
        })?),
    };
    let content = match draft.content {
        DraftField::Text(raw) => Content::try_from(raw).map_err(|e| PostError {
            refusal: PostRefusal::InvalidContent(e),
            client_id: client_id.clone(),
        })?,
        DraftField::Absent | DraftField::NotText => {
            return Err(PostError {
                refusal: PostRefusal::MissingContent,
                client_id,
            });
        }
    };
    Ok(NewMessage {
        room: room.clone(),
        username: username.clone(),
        content,
        client_id,
    })
}
