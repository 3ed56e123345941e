//! What every `/api/` request passes before an operation parses it: the per-address post rate
//! limit (429, every attempt counts), the body size limit (413) and, with JWT auth, the bearer
//! token (401), whose subject the operations then act as.

use std::sync::Arc;

use banter_application::Ports;
use banter_domain::Username;
use poem::http::Method;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response};

use crate::AppState;
use crate::auth::{self, AuthMode};
use crate::problem::{ErrorCode, Problem, retry_after_seconds};

/// The username a request acts as with JWT auth, from its verified bearer token.
#[derive(Debug, Clone)]
pub struct Caller(pub Username);

/// Posts, edits and deletes of messages take a token from the address's bucket.
fn takes_a_token(req: &Request) -> bool {
    let path = req.uri().path().trim_end_matches('/');
    let method = req.method();
    if *method == Method::POST {
        return path.ends_with("/messages");
    }
    (*method == Method::PATCH || *method == Method::DELETE)
        && path
            .rsplit_once('/')
            .is_some_and(|(parent, _seq)| parent.ends_with("/messages"))
}

/// `api` behind the rate limit, the body size limit and the bearer token check.
pub fn with_request_checks<P: Ports, E: Endpoint + 'static>(
    state: Arc<AppState<P>>,
    api: E,
) -> impl Endpoint + 'static {
    api.around(move |api, mut req| {
        let state = Arc::clone(&state);
        async move {
            if let Some(limiter) = state.rest_limiter.as_ref().filter(|_| takes_a_token(&req))
                && let Err(wait) = limiter.take(crate::client_address::client_address(&req))
            {
                return Ok(Problem::new(
                    ErrorCode::RateLimited,
                    "too many posts, edits or deletes from this address",
                )
                .into_response_retry_after(retry_after_seconds(wait)));
            }
            let max = state.settings.max_body_bytes;
            let too_large = || {
                Problem::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the body is over {max} bytes"),
                )
                .into_response()
            };
            if req
                .headers()
                .get(poem::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|length| length > max)
            {
                return Ok(too_large());
            }
            match req.take_body().into_bytes_limit(max).await {
                Ok(bytes) => req.set_body(bytes),
                Err(poem::error::ReadBodyError::PayloadTooLarge) => return Ok(too_large()),
                Err(e) => return Err(e.into()),
            }
            if let AuthMode::Jwt { key } = &state.settings.auth {
                let verified = auth::bearer_token(req.headers())
                    .ok_or(auth::AuthError::Missing)
                    .and_then(|token| auth::verify(key, token));
                match verified {
                    Ok(username) => {
                        req.extensions_mut().insert(Caller(username));
                    }
                    Err(e) => {
                        return Ok(
                            Problem::new(ErrorCode::Unauthorized, e.to_string()).into_response()
                        );
                    }
                }
            }
            Ok::<Response, poem::Error>(api.call(req).await?.into_response())
        }
    })
}
