//! The WebSocket transport: `GET /ws/chat/{room}/`.
//!
//! The handshake checks everything the contract lists and refuses with problem+json before
//! upgrading; the room is joined (presence, snapshot) before the upgrade too, so a store that
//! is down gives a 503 rather than a socket that dies at once.

mod codec;
mod connection;
mod deflate;
mod frame_cache;
mod frames;
mod requests;
mod upgrade;

pub use frame_cache::FrameCaches;

use std::collections::HashMap;
use std::sync::Arc;

use banter_application::{Ports, Start};
use banter_domain::{RoomName, Username};
use poem::http::header;
use poem::{Endpoint, Request, Response};

use crate::AppState;
use crate::auth::{self, AuthMode};
use crate::guard::{SlotRefusal, origin_allowed};
use crate::params::{rev_cursor_from_text, seq_cursor_from_text};
use crate::problem::{
    ErrorCode, JoinFailure, Problem, join_problem, room_from_path, username_from_client,
};
use upgrade::Upgrade;

/// The handshake endpoint.
#[derive(Debug)]
pub struct Handshake<P: Ports> {
    state: Arc<AppState<P>>,
}

impl<P: Ports> Handshake<P> {
    pub fn new(state: Arc<AppState<P>>) -> Self {
        Self { state }
    }
}

/// The refused handshake's response, counted by its code.
fn refusal_response(problem: Problem) -> Response {
    metrics::counter!("banter_connections_refused_total", "reason" => problem.code.clone())
        .increment(1);
    problem.into_response()
}

/// The query parameters of a handshake, validated.
struct Handshaking {
    room: RoomName,
    username: Username,
    start: Start,
}

fn parse_start(query: &HashMap<String, String>) -> Result<Start, Problem> {
    // Checked whenever given, though it only matters beside `after`.
    let rev = query
        .get("rev")
        .map(|raw| rev_cursor_from_text("rev", raw))
        .transpose()?;
    if let Some(raw) = query.get("after") {
        let after = seq_cursor_from_text("after", raw)?;
        return Ok(match rev {
            Some(rev) => Start::Resume { after, rev },
            None => Start::After(after),
        });
    }
    match query.get("history") {
        None => Ok(Start::DEFAULT),
        Some(raw) => match raw.parse::<u16>() {
            Ok(history) if history <= Start::MAX_HISTORY => Ok(Start::Latest { history }),
            _ => Err(Problem::new(
                ErrorCode::InvalidParameter,
                format!(
                    "history: must be an integer from 0 to {}, got {raw:?}",
                    Start::MAX_HISTORY
                ),
            )),
        },
    }
}

impl<P: Ports> Handshake<P> {
    fn check(
        &self,
        req: &Request,
        query: &HashMap<String, String>,
    ) -> Result<Handshaking, Problem> {
        let state = &self.state;
        if state.is_shutting_down() {
            return Err(Problem::new(
                ErrorCode::Unavailable,
                "the server is shutting down",
            ));
        }
        let raw_room = req.raw_path_param("room").unwrap_or_default();
        let room = room_from_path(raw_room)?;
        let headers = req.headers();
        let origin = headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("null"));
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !origin_allowed(origin, host, &state.settings.allowed_origins) {
            return Err(Problem::new(
                ErrorCode::ForbiddenOrigin,
                format!("origin {} is not allowed", origin.unwrap_or_default()),
            ));
        }
        let username = match &state.settings.auth {
            AuthMode::None => username_from_client(query.get("username").map(String::as_str))?,
            AuthMode::Jwt { key } => {
                let token = query
                    .get("token")
                    .map(String::as_str)
                    .or_else(|| auth::bearer_token(headers))
                    .ok_or_else(|| {
                        Problem::new(
                            ErrorCode::Unauthorized,
                            auth::AuthError::Missing.to_string(),
                        )
                    })?;
                auth::verify(key, token)
                    .map_err(|e| Problem::new(ErrorCode::Unauthorized, e.to_string()))?
            }
        };
        let start = parse_start(query)?;
        Ok(Handshaking {
            room,
            username,
            start,
        })
    }
}

impl<P: Ports> Endpoint for Handshake<P> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .map(|pairs| pairs.into_iter().collect())
            .unwrap_or_default();
        let Handshaking {
            room,
            username,
            start,
        } = match self.check(&req, &query) {
            Ok(ok) => ok,
            Err(problem) => return Ok(refusal_response(problem)),
        };
        let Some(upgrade) = Upgrade::from_request(&req) else {
            return Ok(refusal_response(Problem::new(
                ErrorCode::InvalidParameter,
                "this endpoint speaks WebSocket: send an Upgrade: websocket handshake",
            )));
        };
        let address = crate::client_address::client_address(&req);
        let state = Arc::clone(&self.state);
        let slot = match state.slots.acquire(address) {
            Ok(slot) => slot,
            Err(SlotRefusal::OverCapacity) => {
                return Ok(refusal_response(Problem::new(
                    ErrorCode::OverCapacity,
                    "the server is at its connection capacity",
                )));
            }
            Err(SlotRefusal::TooManyFromAddress) => {
                return Ok(refusal_response(Problem::new(
                    ErrorCode::TooManyConnections,
                    format!(
                        "at most {} connections per address",
                        state.settings.max_connections_per_ip
                    ),
                )));
            }
        };
        // The join runs in its own task and hands back a guard that leaves the room when
        // dropped: a client that hangs up mid-handshake cancels this handler, and the user
        // must not stay counted online because their join was cut off halfway.
        let joining = {
            let (chat, room, username) = (state.chat.clone(), room.clone(), username.clone());
            let joining = async move {
                chat.join(room, username, start)
                    .await
                    .map(|joined| connection::Pending::new(joined, slot))
            };
            tokio::spawn(tracing::Instrument::in_current_span(joining))
        };
        let joined = match joining.await {
            Ok(joined) => joined.map_err(JoinFailure::from),
            Err(task) => Err(JoinFailure::from(task)),
        };
        let pending = match joined {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(%room, error = %e, "join failed");
                return Ok(refusal_response(join_problem(&e)));
            }
        };
        tracing::debug!(%room, %username, %address, "websocket joined");
        let compression = state.settings.compression;
        Ok(upgrade.accept(compression, move |io, deflate| {
            if deflate {
                metrics::counter!("banter_ws_deflate_connections_total").increment(1);
            }
            connection::run(io, deflate, pending, &state)
        }))
    }
}
