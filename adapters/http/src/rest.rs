//! The REST API (poem-openapi): history, posting, rooms, presence, health and readiness.
//!
//! Admission runs before any operation parses its request, in [`guard`]: the body size limit
//! (413), the per-address post rate limit (429, every attempt counts) and, with JWT auth, the
//! bearer token (401). Operations then parse parameters and bodies; anything that does not
//! parse is answered by [`bad_request`] as problem+json.

use std::sync::Arc;

use banter_application::{DraftField, Ports, PostDraft, ReadError};
use banter_domain::{Appended, HistoryQuery, Message, PageLimit, RoomName, Seq, Username};
use poem::http::{Method, StatusCode};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response};
use poem_openapi::error::{
    AuthorizationError, ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi, OpenApiService, Tags};

use crate::AppState;
use crate::auth::{self, AuthMode};
use crate::problem::{ErrorCode, Problem, post_problem, retry_after_seconds};

#[derive(Tags)]
enum ApiTags {
    /// Messages and rooms.
    Chat,
    /// Liveness and readiness probes.
    Health,
}

/// A stored message.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct MessageBody {
    /// The room (1–64 of `a-z`, `0-9`, `-`, `_`).
    room: String,
    /// Position in the room: 1, 2, 3, … without gaps.
    seq: u64,
    username: String,
    /// Exactly as sent.
    content: String,
    /// RFC 3339, UTC, milliseconds; set by the server at commit.
    timestamp: String,
    /// The sender's idempotency key, or null.
    client_id: Option<String>,
}

impl Example for MessageBody {
    fn example() -> Self {
        Self {
            room: "general".into(),
            seq: 42,
            username: "alice".into(),
            content: "Hello".into(),
            timestamp: "2026-11-28T09:15:02.123Z".into(),
            client_id: Some("c-7f3a".into()),
        }
    }
}

impl From<Message> for MessageBody {
    fn from(m: Message) -> Self {
        Self {
            room: m.room.into_inner(),
            seq: m.seq.get(),
            username: m.username.into_inner(),
            content: m.content.into_inner(),
            timestamp: m.timestamp.to_rfc3339(),
            client_id: m.client_id.map(|c| c.into_inner()),
        }
    }
}

/// A page of history, oldest first.
#[derive(Debug, Object)]
pub struct HistoryBody {
    messages: Vec<MessageBody>,
    /// More messages exist beyond this page in the direction of travel.
    has_more: bool,
}

/// A string field of a request body as sent. The schema says string; any JSON value parses, so
/// a value of the wrong type is refused against its field (`content: must be a string`)
/// rather than as an unreadable body. (poem-openapi's own `String` would even accept `5` as
/// `"5"`, storing what the client did not send.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringField {
    Text(String),
    NotText,
}

impl StringField {
    fn into_draft(self) -> DraftField {
        match self {
            StringField::Text(text) => DraftField::Text(text),
            StringField::NotText => DraftField::NotText,
        }
    }
}

impl poem_openapi::types::Type for StringField {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> std::borrow::Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        <String as poem_openapi::types::Type>::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        match self {
            StringField::Text(text) => Some(text),
            StringField::NotText => None,
        }
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ParseFromJSON for StringField {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(text)) => Ok(StringField::Text(text)),
            Some(_) => Ok(StringField::NotText),
            None => Err(poem_openapi::types::ParseError::expected_input()),
        }
    }
}

impl poem_openapi::types::ToJSON for StringField {
    fn to_json(&self) -> Option<serde_json::Value> {
        match self {
            StringField::Text(text) => Some(serde_json::Value::String(text.clone())),
            StringField::NotText => None,
        }
    }
}

/// A message to post.
#[derive(Debug, Object)]
#[oai(example)]
pub struct PostBody {
    /// Who posts (auth `none`); ignored with auth `jwt`, where the token's `sub` is used.
    username: Option<StringField>,
    /// 1–4000 characters, not only whitespace, no control characters but tab, LF, CR.
    content: StringField,
    /// Optional idempotency key: 1–64 printable ASCII characters. A resend with the same
    /// room, username and client_id returns the original with 200.
    client_id: Option<StringField>,
}

impl Example for PostBody {
    fn example() -> Self {
        Self {
            username: Some(StringField::Text("alice".into())),
            content: StringField::Text("Hello".into()),
            client_id: Some(StringField::Text("c-7f3a".into())),
        }
    }
}

/// A room with messages or people online.
#[derive(Debug, Object)]
pub struct RoomBody {
    room: String,
    last_seq: u64,
    /// When the last message was stored; null for a room without messages.
    last_message_at: Option<String>,
    /// People online now.
    online: u64,
}

#[derive(Debug, Object)]
pub struct RoomsBody {
    rooms: Vec<RoomBody>,
    has_more: bool,
}

#[derive(Debug, Object)]
pub struct PresenceBody {
    room: String,
    /// A page of online usernames in code-point order.
    online: Vec<String>,
    /// Everyone online, whatever the page.
    online_count: u64,
    /// Who is typing, in code-point order.
    typing: Vec<String>,
}

/// Turns request parsing failures into problem+json (the same for every operation).
fn parse_failure(err: &poem::Error) -> Problem {
    if let Some(e) = err.downcast_ref::<ParsePathError>() {
        Problem::new(ErrorCode::NotFound, format!("{}: {}", e.name, e.reason))
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        Problem::new(
            ErrorCode::InvalidParameter,
            format!("{}: {}", e.name, e.reason),
        )
    } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        Problem::new(ErrorCode::InvalidBody, format!("body: {}", e.reason))
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

macro_rules! problem_responses {
    ($name:ident { $($ok:tt)* }) => {
        #[derive(Debug, ApiResponse)]
        #[oai(bad_request_handler = "bad_request")]
        pub enum $name {
            $($ok)*
            /// A parameter, path or body is invalid.
            #[oai(status = 400, content_type = "application/problem+json")]
            BadRequest(Json<Problem>),
            /// Missing or invalid bearer token (auth `jwt`).
            #[oai(status = 401, content_type = "application/problem+json")]
            Unauthorized(Json<Problem>),
            /// No such resource (a room name containing `/`).
            #[oai(status = 404, content_type = "application/problem+json")]
            NotFound(Json<Problem>),
            /// Storage or broker unavailable.
            #[oai(status = 503, content_type = "application/problem+json")]
            Unavailable(Json<Problem>),
        }

        impl $name {
            fn problem(problem: Problem) -> Self {
                match problem.status().as_u16() {
                    401 => Self::Unauthorized(Json(problem)),
                    404 => Self::NotFound(Json(problem)),
                    503 => Self::Unavailable(Json(problem)),
                    _ => Self::BadRequest(Json(problem)),
                }
            }
        }

        impl From<Problem> for $name {
            fn from(problem: Problem) -> Self {
                Self::problem(problem)
            }
        }
    };
}

fn bad_request<T: From<Problem>>(err: poem::Error) -> T {
    T::from(parse_failure(&err))
}

problem_responses!(HistoryResponse {
    /// A page of messages, oldest first.
    #[oai(status = 200)]
    Ok(Json<HistoryBody>),
});

problem_responses!(PostResponse {
    /// Stored and broadcast to the room.
    #[oai(status = 201)]
    Created(Json<MessageBody>),
    /// The client_id was already used: nothing new was stored; this is the original.
    #[oai(status = 200)]
    Duplicate(Json<MessageBody>),
    /// Too many posts from this address; see Retry-After.
    #[oai(status = 429, content_type = "application/problem+json")]
    RateLimited(Json<Problem>, #[oai(header = "Retry-After")] u64),
});

problem_responses!(RoomsResponse {
    #[oai(status = 200)]
    Ok(Json<RoomsBody>),
});

problem_responses!(PresenceResponse {
    #[oai(status = 200)]
    Ok(Json<PresenceBody>),
});

#[derive(Debug, ApiResponse)]
pub enum ReadyResponse {
    /// Storage and broker answer.
    #[oai(status = 200)]
    Ready(PlainText<String>),
    /// Storage or broker does not answer.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>),
}

fn seq_param(name: &str, value: Option<i64>) -> Result<Option<Seq>, Problem> {
    value
        .map(|v| {
            Seq::from_i64(v).map_err(|_| {
                Problem::new(
                    ErrorCode::InvalidParameter,
                    format!("{name}: must be an integer ≥ 0, got {v}"),
                )
            })
        })
        .transpose()
}

fn limit_param(value: Option<i64>, default: u16, max: u16) -> Result<PageLimit, Problem> {
    let value = value.unwrap_or(i64::from(default));
    u64::try_from(value)
        .ok()
        .and_then(|v| PageLimit::bounded(v, max).ok())
        .ok_or_else(|| {
            Problem::new(
                ErrorCode::InvalidParameter,
                format!("limit: must be an integer from 1 to {max}, got {value}"),
            )
        })
}

fn read_problem(e: &ReadError) -> Problem {
    Problem::new(ErrorCode::Unavailable, e.to_string())
}

/// The username a request acts as with JWT auth, put there by [`guard`].
#[derive(Debug, Clone)]
struct Caller(Username);

#[derive(Debug)]
pub struct ChatApi<P: Ports> {
    state: Arc<AppState<P>>,
}

#[OpenApi]
impl<P: Ports> ChatApi<P> {
    /// Read a room's history.
    ///
    /// With `before`, the latest `limit` messages with seq < before; with `after`, the earliest
    /// `limit` with seq > after; with neither, the latest `limit`. Always oldest first.
    #[oai(
        path = "/api/rooms/:room/messages",
        method = "get",
        tag = "ApiTags::Chat"
    )]
    async fn history(
        &self,
        /// The room.
        room: Path<String>,
        /// Only messages with a smaller seq (integer ≥ 0).
        #[oai(validator(minimum(value = "0")))]
        before: Query<Option<i64>>,
        /// Only messages with a greater seq (integer ≥ 0).
        #[oai(validator(minimum(value = "0")))]
        after: Query<Option<i64>>,
        /// Page size, 1–200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<i64>>,
    ) -> HistoryResponse {
        let run = async {
            let room = crate::problem::room_from_path(&room)?;
            let limit = limit_param(limit.0, 50, PageLimit::MAX_HISTORY)?;
            let query = match (seq_param("before", before.0)?, seq_param("after", after.0)?) {
                (Some(_), Some(_)) => {
                    return Err(Problem::new(
                        ErrorCode::InvalidParameter,
                        "before and after: give one, not both",
                    ));
                }
                (Some(before), None) => HistoryQuery::Before { before, limit },
                (None, Some(after)) => HistoryQuery::After { after, limit },
                (None, None) => HistoryQuery::Latest { limit },
            };
            let page = self
                .state
                .chat
                .history(&room, query)
                .await
                .map_err(|e| read_problem(&e))?;
            Ok(HistoryBody {
                messages: page.messages.into_iter().map(MessageBody::from).collect(),
                has_more: page.has_more,
            })
        };
        match run.await {
            Ok(body) => HistoryResponse::Ok(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// Post a message.
    ///
    /// Stored, then broadcast to the room like a WebSocket post. Posts are rate limited per
    /// client address (token bucket, burst 20, 2 per second by default); every attempt counts.
    /// With auth `jwt` the username is the bearer token's `sub`.
    #[oai(
        path = "/api/rooms/:room/messages",
        method = "post",
        tag = "ApiTags::Chat"
    )]
    async fn post(&self, req: &Request, room: Path<String>, body: Json<PostBody>) -> PostResponse {
        let run = async {
            let room = crate::problem::room_from_path(&room)?;
            let body = body.0;
            let username = match req.extensions().get::<Caller>() {
                Some(Caller(username)) => username.clone(),
                None => match body.username {
                    Some(StringField::Text(raw)) => Username::parse(&raw).map_err(|e| {
                        Problem::new(ErrorCode::InvalidUsername, format!("username: {e}"))
                    })?,
                    Some(StringField::NotText) => {
                        return Err(Problem::new(
                            ErrorCode::InvalidUsername,
                            "username: must be a string",
                        ));
                    }
                    None => {
                        return Err(Problem::new(
                            ErrorCode::InvalidUsername,
                            "username: required",
                        ));
                    }
                },
            };
            let draft = PostDraft {
                content: body.content.into_draft(),
                client_id: body
                    .client_id
                    .map_or(DraftField::Absent, StringField::into_draft),
            };
            // The post runs in its own task: if the client hangs up mid-request, a message
            // that was committed is still broadcast (nobody would see it live otherwise).
            let chat = self.state.chat.clone();
            tokio::spawn(async move { chat.post(&room, &username, draft).await })
                .await
                .map_err(|e| Problem::new(ErrorCode::Unavailable, format!("the post failed: {e}")))?
                .map_err(|e| post_problem(&e))
        };
        match run.await {
            Ok(Appended::Stored(message)) => PostResponse::Created(Json(message.into())),
            Ok(Appended::Duplicate(message)) => PostResponse::Duplicate(Json(message.into())),
            Err(problem) => problem.into(),
        }
    }

    /// List rooms that have messages or people online, sorted by name.
    #[oai(path = "/api/rooms", method = "get", tag = "ApiTags::Chat")]
    async fn rooms(
        &self,
        /// Page size, 1–1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
        /// Start after this room name.
        after: Query<Option<String>>,
    ) -> RoomsResponse {
        let run = async {
            let limit = limit_param(limit.0, 100, 1000)?;
            let after = after
                .0
                .map(|a| {
                    RoomName::parse(&a).map_err(|e| {
                        Problem::new(ErrorCode::InvalidParameter, format!("after: {e}"))
                    })
                })
                .transpose()?;
            let page = self
                .state
                .chat
                .rooms(after.as_ref(), limit)
                .await
                .map_err(|e| read_problem(&e))?;
            Ok::<_, Problem>(RoomsBody {
                rooms: page
                    .rooms
                    .into_iter()
                    .map(|r| RoomBody {
                        room: r.room.into_inner(),
                        last_seq: r.last_seq.get(),
                        last_message_at: r.last_message_at.map(|t| t.to_rfc3339()),
                        online: r.online,
                    })
                    .collect(),
                has_more: page.has_more,
            })
        };
        match run.await {
            Ok(body) => RoomsResponse::Ok(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// Who is online in a room (paged) and who is typing.
    #[oai(
        path = "/api/rooms/:room/presence",
        method = "get",
        tag = "ApiTags::Chat"
    )]
    async fn presence(
        &self,
        room: Path<String>,
        /// Page size, 1–1000 (default 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
        /// Start after this username.
        after: Query<Option<String>>,
    ) -> PresenceResponse {
        let run = async {
            let room = crate::problem::room_from_path(&room)?;
            let limit = limit_param(limit.0, 1000, 1000)?;
            let after = after
                .0
                .map(|a| {
                    Username::parse(&a).map_err(|e| {
                        Problem::new(ErrorCode::InvalidParameter, format!("after: {e}"))
                    })
                })
                .transpose()?;
            let presence = self
                .state
                .chat
                .presence(&room, after.as_ref(), limit.get())
                .await
                .map_err(|e| read_problem(&e))?;
            Ok::<_, Problem>(PresenceBody {
                room: presence.room.into_inner(),
                online: presence
                    .online
                    .users
                    .into_iter()
                    .map(Username::into_inner)
                    .collect(),
                online_count: presence.online.online_count,
                typing: presence
                    .typing
                    .into_iter()
                    .map(Username::into_inner)
                    .collect(),
            })
        };
        match run.await {
            Ok(body) => PresenceResponse::Ok(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// Liveness: 200 while the process serves.
    #[oai(path = "/healthz", method = "get", tag = "ApiTags::Health")]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok")
    }

    /// Readiness: 200 when storage and broker answer, else 503.
    #[oai(path = "/readyz", method = "get", tag = "ApiTags::Health")]
    async fn readyz(&self) -> ReadyResponse {
        if self.state.is_shutting_down() {
            return ReadyResponse::NotReady(Json(Problem::new(
                ErrorCode::Unavailable,
                "shutting down",
            )));
        }
        match self.state.chat.check_ready().await {
            Ok(()) => ReadyResponse::Ready(PlainText("ready".to_owned())),
            Err(e) => {
                ReadyResponse::NotReady(Json(Problem::new(ErrorCode::Unavailable, e.to_string())))
            }
        }
    }
}

/// The OpenAPI service, its Swagger UI page and its document (JSON).
pub fn service<P: Ports>(
    state: Arc<AppState<P>>,
) -> (OpenApiService<ChatApi<P>, ()>, String, String) {
    let service = OpenApiService::new(ChatApi { state }, "banter", env!("CARGO_PKG_VERSION"))
        .description(
            "banter's REST API: read history, post messages, list rooms and presence. Errors are \
         application/problem+json (RFC 9457) with a `code` member. With auth `jwt`, every /api/ \
         endpoint needs `Authorization: Bearer <token>`. The WebSocket protocol is described \
         in /asyncapi.yaml.",
        );
    let docs = service.swagger_ui_html();
    let spec = service.spec();
    (service, docs, spec)
}

fn is_post_of_message(req: &Request) -> bool {
    req.method() == Method::POST
        && req
            .uri()
            .path()
            .trim_end_matches('/')
            .ends_with("/messages")
}

/// Admission for `/api/`: rate limit (POST messages), body size, bearer token.
pub fn guard<P: Ports, E: Endpoint + 'static>(
    state: Arc<AppState<P>>,
    api: E,
) -> impl Endpoint + 'static {
    api.around(move |api, mut req| {
        let state = Arc::clone(&state);
        async move {
            if let Some(limiter) = state
                .rest_limiter
                .as_ref()
                .filter(|_| is_post_of_message(&req))
                && let Err(wait) = limiter.take(crate::guard::client_address(&req))
            {
                return Ok(Problem::new(
                    ErrorCode::RateLimited,
                    "too many posts from this address",
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

/// Serves a fixed document (the OpenAPI JSON, the Swagger UI page).
#[derive(Debug)]
pub struct Document {
    body: String,
    content_type: &'static str,
}

impl Document {
    pub fn new(body: String, content_type: &'static str) -> Self {
        Self { body, content_type }
    }
}

impl Endpoint for Document {
    type Output = Response;

    async fn call(&self, _req: Request) -> poem::Result<Response> {
        Ok(Response::builder()
            .content_type(self.content_type)
            .body(self.body.clone()))
    }
}

/// `GET /metrics`: Prometheus text format.
#[derive(Debug)]
pub struct Metrics<P: Ports> {
    state: Arc<AppState<P>>,
}

impl<P: Ports> Metrics<P> {
    pub fn new(state: Arc<AppState<P>>) -> Self {
        Self { state }
    }
}

impl<P: Ports> Endpoint for Metrics<P> {
    type Output = Response;

    async fn call(&self, _req: Request) -> poem::Result<Response> {
        let body = self
            .state
            .metrics
            .as_ref()
            .map(|h| h.render())
            .unwrap_or_default();
        Ok(Response::builder()
            .status(StatusCode::OK)
            .content_type("text/plain; version=0.0.4")
            .body(body))
    }
}
