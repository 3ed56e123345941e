//! The REST API: `/api/…`, `/healthz` and `/readyz`, with its OpenAPI document.
//!
//! A request passes [`request_checks`] (rate limit, body size, bearer token) before an
//! operation in [`api`] parses it; the operations answer with the bodies of [`bodies`] and the
//! responses of [`responses`]. Refusals are built in [`crate::problem`].

mod api;
mod bodies;
mod documents;
mod request_checks;
mod responses;

pub use documents::{Document, service};
pub use request_checks::with_request_checks;
