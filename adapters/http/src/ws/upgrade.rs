//! The WebSocket upgrade itself: the `101 Switching Protocols` answer and the socket behind it.
//!
//! Done here rather than by poem's `WebSocket`, whose stream turns tungstenite's errors into
//! text: the connection reads tungstenite's own, and tells an oversized message by its type.

use std::future::Future;

use poem::http::{HeaderMap, Method, StatusCode, header};
use poem::{Body, OnUpgrade, Request, Response, Upgraded};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// An upgraded connection speaking WebSocket.
pub type Socket = WebSocketStream<Upgraded>;

/// A request to switch to WebSocket (RFC 6455 §4.2.1), with the connection it will take over.
pub struct Upgrade {
    key: String,
    on_upgrade: OnUpgrade,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

impl Upgrade {
    /// The request's WebSocket upgrade, or `None` when it is not a WebSocket handshake (or
    /// its connection cannot be taken over, as for an in-process test request).
    pub fn from_request(req: &Request) -> Option<Self> {
        let headers = req.headers();
        let is_handshake = req.method() == Method::GET
            && has_token(headers, header::UPGRADE, "websocket")
            && has_token(headers, header::CONNECTION, "upgrade")
            && headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|_| is_handshake)?
            .to_owned();
        let on_upgrade = req.take_upgrade().ok()?;
        Some(Self { key, on_upgrade })
    }

    /// The `101` answer. Once the client has it, `run` gets the socket; if the connection
    /// goes before that, `run` is dropped unrun.
    pub fn accept<F, Fut>(self, config: WebSocketConfig, run: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let socket =
                    WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config)).await;
                run(socket).await;
            }
        }));
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    header::HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn header_tokens_match_in_lists_and_in_any_case() {
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        assert!(has_token(&h, header::UPGRADE, "websocket"));
        assert!(!has_token(&h, header::CONNECTION, "close"));
        assert!(!has_token(&headers(&[]), header::UPGRADE, "websocket"));
    }
}
