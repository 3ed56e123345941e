//! What the server does with each client frame: parse it, act on it through the session, and
//! answer (an error, a duplicate, a pong) or stay silent (a post's echo comes from the feed).

use banter_application::{Ports, SessionOf};
use banter_domain::Appended;

use super::frames::{self, ClientFrame};
use crate::problem::{ErrorCode, PostEdge, change_refusal, post_refusal};

/// An error frame, counted by its code.
pub fn error_frame(
    code: ErrorCode,
    detail: &str,
    client_id: Option<&banter_domain::ClientId>,
) -> String {
    metrics::counter!("banter_errors_total", "code" => code.as_str()).increment(1);
    frames::error(code, detail, client_id)
}

pub async fn handle_text<P: Ports>(text: &str, session: &SessionOf<P>) -> Option<String> {
    match frames::parse_client_frame(text) {
        Err(refusal) => Some(error_frame(refusal.code, &refusal.detail, None)),
        Ok(ClientFrame::Ping) => Some(frames::pong()),
        // The user's other connections are told through the room's feed; this one is silent.
        Ok(ClientFrame::Read { seq }) => match session.mark_read(seq).await {
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "read position not stored");
                Some(error_frame(
                    ErrorCode::Unavailable,
                    "the read position could not be stored; send it again",
                    None,
                ))
            }
        },
        Ok(ClientFrame::Typing { is_typing }) => {
            session.set_typing(is_typing).await;
            None
        }
        // A real change reaches everyone, this connection included, as `message_updated`
        // through the room's feed; a change that changes nothing is silent.
        Ok(ClientFrame::Change { seq, draft }) => match session.change(seq, draft).await {
            Ok(_) => None,
            Err(e) => {
                let refusal = change_refusal(&e, PostEdge::WebSocket);
                Some(error_frame(refusal.code, &refusal.detail, None))
            }
        },
        Ok(ClientFrame::ChatMessage(draft)) => match session.post(draft).await {
            // The sender sees its own message when the room's feed delivers it, in order.
            Ok(Appended::Stored(_)) => None,
            Ok(Appended::Duplicate(original)) => Some(frames::duplicate(&original)),
            Err(e) => {
                let refusal = post_refusal(&e.refusal, PostEdge::WebSocket);
                Some(error_frame(
                    refusal.code,
                    &refusal.detail,
                    e.client_id.as_ref(),
                ))
            }
        },
    }
}
