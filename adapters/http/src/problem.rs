//! Errors as clients see them: the contract's codes, their HTTP statuses, RFC 9457
//! `application/problem+json` bodies, and each application error mapped to them once, for
//! REST problems and WebSocket error frames alike.

use poem::http::StatusCode;
use poem_openapi::Object;
use serde::Serialize;

use banter_application::{
    ChangeError, JoinError, MembershipError, NotReady, PostRefusal, ReadError,
};
use poem_openapi::error::{
    AuthorizationError, ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
};

/// The contract's error codes, for HTTP problems and WebSocket error frames alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRoom,
    InvalidUsername,
    InvalidContent,
    InvalidClientId,
    InvalidParameter,
    InvalidBody,
    Unauthorized,
    ForbiddenOrigin,
    /// Not allowed for this user (another user's message).
    Forbidden,
    NotFound,
    /// The resource exists already (a room created private after it had messages).
    Conflict,
    /// Private rooms need auth `jwt`.
    AuthRequired,
    PayloadTooLarge,
    RateLimited,
    TooManyConnections,
    OverCapacity,
    Unavailable,
    // Codes of WebSocket error frames only.
    InvalidJson,
    UnknownType,
    InvalidMessage,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::InvalidContent => "invalid_content",
            ErrorCode::InvalidClientId => "invalid_client_id",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ForbiddenOrigin => "forbidden_origin",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::AuthRequired => "auth_required",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::OverCapacity => "over_capacity",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRoom
            | ErrorCode::InvalidUsername
            | ErrorCode::InvalidContent
            | ErrorCode::InvalidClientId
            | ErrorCode::InvalidParameter
            | ErrorCode::InvalidBody
            | ErrorCode::AuthRequired
            | ErrorCode::InvalidJson
            | ErrorCode::UnknownType
            | ErrorCode::InvalidMessage => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::ForbiddenOrigin | ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited | ErrorCode::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::OverCapacity | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An RFC 9457 problem with the contract's `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Object)]
#[oai(example)]
pub struct Problem {
    /// Always `about:blank`: the `code` member identifies the problem.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The HTTP status phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What was wrong, naming the offending field or parameter.
    pub detail: String,
    /// The contract's error code, e.g. `invalid_room`.
    pub code: String,
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        Problem::new(ErrorCode::InvalidRoom, "room: must not contain 'G'")
    }
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let status = code.status();
        Self {
            problem_type: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A plain poem response (for refusals outside poem-openapi operations).
    pub fn into_response(self) -> poem::Response {
        let body = serde_json::to_string(&self).unwrap_or_default();
        metrics::counter!("banter_http_problems_total", "code" => self.code.clone()).increment(1);
        poem::Response::builder()
            .status(self.status())
            .content_type("application/problem+json")
            .body(body)
    }

    /// As [`Problem::into_response`], with a `Retry-After` header in whole seconds.
    pub fn into_response_retry_after(self, seconds: u64) -> poem::Response {
        let mut response = self.into_response();
        response.headers_mut().insert(
            poem::http::header::RETRY_AFTER,
            poem::http::HeaderValue::from(seconds),
        );
        response
    }
}

/// The room named in a path. A `/` in it (sent percent-encoded) means the path names no
/// resource: 404, as for any unknown path.
pub fn room_from_path(raw: &str) -> Result<banter_domain::RoomName, Problem> {
    if raw.contains('/') {
        return Err(Problem::new(
            ErrorCode::NotFound,
            "no such resource: a room name has no '/'",
        ));
    }
    banter_domain::RoomName::parse(raw)
        .map_err(|e| Refusal::of_field(ErrorCode::InvalidRoom, "room", e).into())
}

/// The username a client names itself by (auth `none`): required, and valid.
pub fn username_from_client(raw: Option<&str>) -> Result<banter_domain::Username, Problem> {
    let raw = raw.ok_or_else(|| Problem::new(ErrorCode::InvalidUsername, "username: required"))?;
    banter_domain::Username::parse(raw)
        .map_err(|e| Refusal::of_field(ErrorCode::InvalidUsername, "username", e).into())
}

/// Seconds to wait, rounded up, and at least one.
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A refusal as the contract tells it: its code and a detail naming the offending field.
/// A WebSocket error frame carries it as is; REST sends it as a [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub detail: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// The detail `"{field}: {reason}"`, which names the field as the contract asks.
    pub fn of_field(code: ErrorCode, field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(code, format!("{field}: {reason}"))
    }
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Self {
        Problem::new(refusal.code, refusal.detail)
    }
}

/// Where a post was refused: the two edges name the text field and its codes differently
/// (REST `content` with `invalid_content`/`invalid_client_id`, WebSocket `message` with
/// `invalid_message` for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostEdge {
    Rest,
    WebSocket,
}

/// A refused post as the contract tells it on `edge`.
pub fn post_refusal(refusal: &PostRefusal, edge: PostEdge) -> Refusal {
    let (text_field, invalid_text, invalid_client_id) = match edge {
        PostEdge::Rest => (
            "content",
            ErrorCode::InvalidContent,
            ErrorCode::InvalidClientId,
        ),
        PostEdge::WebSocket => (
            "message",
            ErrorCode::InvalidMessage,
            ErrorCode::InvalidMessage,
        ),
    };
    match refusal {
        PostRefusal::RateLimited { .. } => {
            Refusal::new(ErrorCode::RateLimited, refusal.to_string())
        }
        PostRefusal::MissingContent => {
            Refusal::of_field(invalid_text, text_field, "must be a string")
        }
        PostRefusal::InvalidContent(e) => Refusal::of_field(invalid_text, text_field, e),
        PostRefusal::ClientIdNotText => {
            Refusal::of_field(invalid_client_id, "client_id", "must be a string")
        }
        PostRefusal::InvalidClientId(e) => Refusal::of_field(invalid_client_id, "client_id", e),
        PostRefusal::Unavailable => Refusal::new(ErrorCode::Unavailable, refusal.to_string()),
    }
}

/// A refused edit or delete as the contract tells it on `edge` (the new text is `content` on
/// REST, `message` on the WebSocket, as for posts).
pub fn change_refusal(error: &ChangeError, edge: PostEdge) -> Refusal {
    let (text_field, invalid_text) = match edge {
        PostEdge::Rest => ("content", ErrorCode::InvalidContent),
        PostEdge::WebSocket => ("message", ErrorCode::InvalidMessage),
    };
    match error {
        ChangeError::RateLimited { .. } => Refusal::new(ErrorCode::RateLimited, error.to_string()),
        ChangeError::MissingContent => {
            Refusal::of_field(invalid_text, text_field, "must be a string")
        }
        ChangeError::InvalidContent(e) => Refusal::of_field(invalid_text, text_field, e),
        ChangeError::NotFound => Refusal::of_field(
            ErrorCode::NotFound,
            "seq",
            "no such message (or it was deleted)",
        ),
        ChangeError::Forbidden => Refusal::new(ErrorCode::Forbidden, error.to_string()),
        ChangeError::Unavailable => Refusal::new(ErrorCode::Unavailable, error.to_string()),
    }
}

/// A WebSocket join that could not be completed: a port did not answer, or the task doing
/// the join failed.
pub fn join_problem(error: &JoinFailure) -> Problem {
    if let JoinFailure::Port(JoinError::NotFound) = error {
        return not_found_room();
    }
    Problem::new(
        ErrorCode::Unavailable,
        format!("cannot join the room now: {error}"),
    )
}

/// Why a join failed, as the handshake sees it.
#[derive(Debug, thiserror::Error)]
pub enum JoinFailure {
    #[error(transparent)]
    Port(#[from] JoinError),
    #[error("the join task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A readiness check that failed, or a server that is shutting down (`None`).
pub fn not_ready_problem(error: Option<&NotReady>) -> Problem {
    match error {
        Some(e) => Problem::new(ErrorCode::Unavailable, e.to_string()),
        None => Problem::new(ErrorCode::Unavailable, "shutting down"),
    }
}

/// A private room seen by someone who is not a member: exactly as a room that is not there.
pub fn not_found_room() -> Problem {
    Problem::new(ErrorCode::NotFound, "room: no such room")
}

/// A membership change or a private room's creation that was refused.
pub fn membership_problem(error: &MembershipError) -> Problem {
    match error {
        MembershipError::NotFound => Problem::new(ErrorCode::NotFound, "no such room or member"),
        MembershipError::Forbidden => Problem::new(ErrorCode::Forbidden, error.to_string()),
        MembershipError::Conflict => Problem::new(
            ErrorCode::Conflict,
            "room: it already exists (it has messages, or was created before)",
        ),
        MembershipError::Store(e) => Problem::new(ErrorCode::Unavailable, e.to_string()),
    }
}

/// A history, rooms or presence read that failed: storage or broker does not answer.
pub fn read_problem(error: &ReadError) -> Problem {
    Problem::new(ErrorCode::Unavailable, error.to_string())
}

/// A request poem-openapi could not parse (path, query, body, content type, security), as
/// problem+json: the same for every operation.
pub fn parse_failure(err: &poem::Error) -> Problem {
    if let Some(e) = err.downcast_ref::<ParsePathError>() {
        Refusal::of_field(ErrorCode::NotFound, e.name, &e.reason).into()
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        Refusal::of_field(ErrorCode::InvalidParameter, e.name, &e.reason).into()
    } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        Refusal::of_field(ErrorCode::InvalidBody, "body", &e.reason).into()
    } else if err.is::<ContentTypeError>() {
        Problem::new(
            ErrorCode::InvalidBody,
            format!("body: {err}; send application/json"),
        )
    } else if err.is::<AuthorizationError>() {
        Problem::new(ErrorCode::Unauthorized, err.to_string())
    } else {
        Problem::new(ErrorCode::InvalidParameter, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_contract_statuses() {
        assert_eq!(ErrorCode::InvalidRoom.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ErrorCode::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ErrorCode::ForbiddenOrigin.status(), StatusCode::FORBIDDEN);
        assert_eq!(ErrorCode::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            ErrorCode::PayloadTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ErrorCode::TooManyConnections.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ErrorCode::OverCapacity.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ErrorCode::Unavailable.as_str(), "unavailable");
        assert_eq!(ErrorCode::Forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(ErrorCode::Forbidden.as_str(), "forbidden");
    }

    #[test]
    fn change_refusals_have_the_contract_codes() {
        let ws = |e: &ChangeError| change_refusal(e, PostEdge::WebSocket).code;
        assert_eq!(ws(&ChangeError::NotFound), ErrorCode::NotFound);
        assert_eq!(ws(&ChangeError::Forbidden), ErrorCode::Forbidden);
        assert_eq!(ws(&ChangeError::MissingContent), ErrorCode::InvalidMessage);
        assert_eq!(
            change_refusal(&ChangeError::MissingContent, PostEdge::Rest),
            Refusal::new(ErrorCode::InvalidContent, "content: must be a string")
        );
        let limited = ChangeError::RateLimited {
            retry_after: std::time::Duration::from_secs(1),
        };
        assert_eq!(ws(&limited), ErrorCode::RateLimited);
        assert_eq!(ws(&ChangeError::Unavailable), ErrorCode::Unavailable);
    }

    #[test]
    fn problem_serializes_per_rfc_9457_with_code() {
        let json = serde_json::to_value(Problem::new(ErrorCode::InvalidRoom, "room: bad")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "about:blank", "title": "Bad Request", "status": 400,
                               "detail": "room: bad", "code": "invalid_room"})
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        use std::time::Duration;
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn post_refusals_name_each_edges_field_and_code() {
        let missing = PostRefusal::MissingContent;
        assert_eq!(
            post_refusal(&missing, PostEdge::Rest),
            Refusal::new(ErrorCode::InvalidContent, "content: must be a string")
        );
        assert_eq!(
            post_refusal(&missing, PostEdge::WebSocket),
            Refusal::new(ErrorCode::InvalidMessage, "message: must be a string")
        );
        let not_text = PostRefusal::ClientIdNotText;
        assert_eq!(
            post_refusal(&not_text, PostEdge::Rest).code,
            ErrorCode::InvalidClientId
        );
        assert_eq!(
            post_refusal(&not_text, PostEdge::WebSocket),
            Refusal::new(ErrorCode::InvalidMessage, "client_id: must be a string")
        );
        for edge in [PostEdge::Rest, PostEdge::WebSocket] {
            let limited = PostRefusal::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
            };
            assert_eq!(post_refusal(&limited, edge).code, ErrorCode::RateLimited);
            assert_eq!(
                post_refusal(&PostRefusal::Unavailable, edge).code,
                ErrorCode::Unavailable
            );
        }
    }

    #[test]
    fn client_usernames_are_required_and_checked_by_name() {
        let refused = |raw| username_from_client(raw).unwrap_err();
        assert_eq!(refused(None).detail, "username: required");
        let bad = refused(Some("a b"));
        assert_eq!(bad.code, "invalid_username");
        assert!(bad.detail.starts_with("username: "), "{}", bad.detail);
        assert_eq!(
            username_from_client(Some("alice")).unwrap().as_str(),
            "alice"
        );
    }
}
