//! Edits and deletes: validate, let the store decide and commit (it takes the room's next rev),
//! tell the room.

use banter_domain::ports::{Clock, EventBroadcaster, MessageStore, PresenceRegistry};
use banter_domain::{
    Change, ChangeRefusal, ChangeRequest, Changed, Content, RoomEvent, RoomName, Seq, Username,
};

use super::Chat;
use super::types::{ChangeDraft, ChangeError, DraftField};

impl<S, B, P, C> Chat<S, B, P, C>
where
    S: MessageStore,
    B: EventBroadcaster,
    P: PresenceRegistry,
    C: Clock,
{
    /// Edits or deletes message `seq` of `room` as `author`. A real change is committed with
    /// the room's next rev and then told to the room (`MessageUpdated`); a change that changes
    /// nothing returns [`Changed::Unchanged`] and tells nobody. Rate limits are the caller's,
    /// as for posts.
    ///
    /// # Errors
    /// [`ChangeError`] says what was wrong with the draft, why the store refused it, or that
    /// it could not be stored.
    pub async fn change(
        &self,
        room: &RoomName,
        author: &Username,
        seq: Seq,
        draft: ChangeDraft,
    ) -> Result<Changed, ChangeError> {
        let change = match draft {
            ChangeDraft::Delete => Change::Delete,
            ChangeDraft::Edit { content } => match content {
                DraftField::Text(raw) => {
                    Change::Edit(Content::try_from(raw).map_err(ChangeError::InvalidContent)?)
                }
                DraftField::Absent | DraftField::NotText => {
                    return Err(ChangeError::MissingContent);
                }
            },
        };
        if seq == Seq::ZERO {
            return Err(ChangeError::NotFound);
        }
        let request = ChangeRequest {
            room: room.clone(),
            seq,
            author: author.clone(),
            change,
        };
        let decided = self.inner.store.change(request).await.map_err(|e| {
            tracing::warn!(%room, %seq, error = %e, "change not stored");
            ChangeError::Unavailable
        })?;
        let changed = decided.map_err(|refusal| match refusal {
            ChangeRefusal::NotFound => ChangeError::NotFound,
            ChangeRefusal::Forbidden => ChangeError::Forbidden,
        })?;
        if let Changed::Updated(update) = &changed {
            tracing::debug!(%room, %seq, rev = %update.rev, "message changed");
            self.note_changed(room, update.rev);
            self.publish(RoomEvent::MessageUpdated {
                rev: update.rev,
                message: update.message.clone(),
            })
            .await;
        }
        Ok(changed)
    }
}
