//! The WebSocket upgrade itself (RFC 6455 §4.2): the `101 Switching Protocols` answer, the
//! permessage-deflate negotiation (RFC 7692), and the raw connection behind it.

use std::future::Future;

use poem::http::{HeaderMap, Method, StatusCode, header};
use poem::{Body, OnUpgrade, Request, Response, Upgraded};
use tungstenite::handshake::derive_accept_key;

/// What the server answers to an acceptable permessage-deflate offer: each message is
/// compressed on its own in both directions, so a broadcast frame can be compressed once for
/// every receiver and no connection keeps a compression window.
const DEFLATE_RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A request to switch to WebSocket, with the connection it will take over.
pub struct Upgrade {
    key: String,
    deflate_offered: bool,
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

/// Whether one extension offer is a permessage-deflate that banter can accept: known
/// parameters, each at most once, and no `server_max_window_bits` below the 15 bits that
/// banter's compressor uses.
fn acceptable_deflate_offer(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
    {
        return false;
    }
    let mut seen: Vec<String> = Vec::new();
    for param in parts.filter(|p| !p.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return false;
        }
        let valid_bits = |v: Option<&str>| {
            v.and_then(|v| v.parse::<u8>().ok())
                .is_some_and(|bits| (8..=15).contains(&bits))
        };
        let ok = match name.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            "client_max_window_bits" => value.is_none() || valid_bits(value),
            "server_max_window_bits" => valid_bits(value) && value == Some("15"),
            _ => false,
        };
        if !ok {
            return false;
        }
        seen.push(name);
    }
    true
}

fn deflate_offered(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(acceptable_deflate_offer)
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
        let deflate_offered = deflate_offered(headers);
        let on_upgrade = req.take_upgrade().ok()?;
        Some(Self {
            key,
            deflate_offered,
            on_upgrade,
        })
    }

    /// The `101` answer, with permessage-deflate when offered and `compression` allows it.
    /// Once the client has it, `run` gets the connection and whether messages may be
    /// compressed; if the connection goes before that, `run` is dropped unrun.
    pub fn accept<F, Fut>(self, compression: bool, run: F) -> Response
    where
        F: FnOnce(Upgraded, bool) -> Option<Fut> + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let deflate = compression && self.deflate_offered;
        let on_upgrade = self.on_upgrade;
        // This task waits for the switch and hands the connection to a task of its own, which
        // then holds only what serving needs: a task's future keeps room for everything its
        // async block ever held (here the closure and the switch), for as long as it runs.
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            if let Ok(upgraded) = on_upgrade.await
                && let Some(serving) = run(upgraded, deflate)
            {
                tokio::spawn(tracing::Instrument::in_current_span(serving));
            }
        }));
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept);
        if deflate {
            response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, DEFLATE_RESPONSE);
        }
        response.body(Body::empty())
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

    #[test]
    fn deflate_offers_of_browsers_are_accepted() {
        for offer in [
            "permessage-deflate; client_max_window_bits", // Chromium
            "permessage-deflate",                         // Firefox
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits=12; server_max_window_bits=15",
            "x-webkit-deflate-frame, permessage-deflate",
        ] {
            let h = headers(&[("sec-websocket-extensions", offer)]);
            assert!(deflate_offered(&h), "{offer}");
        }
    }

    #[test]
    fn deflate_offers_banter_cannot_honour_are_declined() {
        for offer in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=20",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-snappy",
        ] {
            let h = headers(&[("sec-websocket-extensions", offer)]);
            assert!(!deflate_offered(&h), "{offer}");
        }
        assert!(!deflate_offered(&headers(&[])));
    }
}
