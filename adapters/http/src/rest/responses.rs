//! Each REST operation's responses: its success and the problem+json refusals, as poem-openapi
//! documents them. Anything poem-openapi cannot parse is answered by [`bad_request`].

use poem_openapi::ApiResponse;
use poem_openapi::payload::{Json, PlainText};

use super::bodies::{
    ChangesBody, CreatedRoomBody, HistoryBody, MembersBody, PresenceBody, ReadPositionBody,
    RoomsBody, SearchBody, UserRoomsBody,
};
use crate::problem::{Problem, parse_failure};
use crate::wire::MessageJson;

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
            /// No such resource: a room name containing `/`, or a private room the caller is
            /// not a member of (`not_found`).
            #[oai(status = 404, content_type = "application/problem+json")]
            NotFound(Json<Problem>),
            /// Storage or broker unavailable.
            #[oai(status = 503, content_type = "application/problem+json")]
            Unavailable(Json<Problem>),
        }

        impl From<Problem> for $name {
            fn from(problem: Problem) -> Self {
                match problem.status().as_u16() {
                    401 => Self::Unauthorized(Json(problem)),
                    404 => Self::NotFound(Json(problem)),
                    503 => Self::Unavailable(Json(problem)),
                    _ => Self::BadRequest(Json(problem)),
                }
            }
        }
    };
}

/// poem-openapi's hook for a request it could not parse.
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
    Created(Json<MessageJson>),
    /// The client_id was already used: nothing new was stored; this is the original.
    #[oai(status = 200)]
    Duplicate(Json<MessageJson>),
    /// Too many posts from this address; see Retry-After.
    #[oai(status = 429, content_type = "application/problem+json")]
    RateLimited(Json<Problem>, #[oai(header = "Retry-After")] u64),
});

problem_responses!(SearchResponse {
    /// Messages found, newest first.
    #[oai(status = 200)]
    Ok(Json<SearchBody>),
});

problem_responses!(ChangesResponse {
    /// Changed messages, each once in its current state, ascending by its latest rev.
    #[oai(status = 200)]
    Ok(Json<ChangesBody>),
});

/// The answers to an edit or a delete.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ChangeResponse {
    /// The message as it now is (also when nothing changed: the same text, or a delete of a
    /// deleted message).
    #[oai(status = 200)]
    Ok(Json<MessageJson>),
    /// A parameter (`seq` not a positive integer), the body or the text is invalid.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing or invalid bearer token (auth `jwt`).
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// Not the author of the message (`forbidden`).
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No message with this seq, an edit of a deleted message, or a private room the caller
    /// is not a member of (`not_found`).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Too many posts, edits and deletes from this address; see Retry-After.
    #[oai(status = 429, content_type = "application/problem+json")]
    RateLimited(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// Storage unavailable: nothing was changed.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

impl From<Problem> for ChangeResponse {
    fn from(problem: Problem) -> Self {
        match problem.status().as_u16() {
            401 => Self::Unauthorized(Json(problem)),
            403 => Self::Forbidden(Json(problem)),
            404 => Self::NotFound(Json(problem)),
            // Per-address limits answer in the request checks; a 429 here has no wait.
            429 => Self::RateLimited(Json(problem), 1),
            503 => Self::Unavailable(Json(problem)),
            _ => Self::BadRequest(Json(problem)),
        }
    }
}

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

/// The answers of the endpoints under `/api/users/{username}/`, which act for one user.
macro_rules! user_responses {
    ($name:ident { $($ok:tt)* }) => {
        #[derive(Debug, ApiResponse)]
        #[oai(bad_request_handler = "bad_request")]
        pub enum $name {
            $($ok)*
            /// An invalid username, room or body.
            #[oai(status = 400, content_type = "application/problem+json")]
            BadRequest(Json<Problem>),
            /// Missing or invalid bearer token (auth `jwt`).
            #[oai(status = 401, content_type = "application/problem+json")]
            Unauthorized(Json<Problem>),
            /// With auth `jwt`, the path names another user than the token's `sub`
            /// (`forbidden`).
            #[oai(status = 403, content_type = "application/problem+json")]
            Forbidden(Json<Problem>),
            /// No such resource: a room name containing `/`, or a private room the caller is
            /// not a member of (`not_found`).
            #[oai(status = 404, content_type = "application/problem+json")]
            NotFound(Json<Problem>),
            /// Storage unavailable.
            #[oai(status = 503, content_type = "application/problem+json")]
            Unavailable(Json<Problem>),
        }

        impl From<Problem> for $name {
            fn from(problem: Problem) -> Self {
                match problem.status().as_u16() {
                    401 => Self::Unauthorized(Json(problem)),
                    403 => Self::Forbidden(Json(problem)),
                    404 => Self::NotFound(Json(problem)),
                    503 => Self::Unavailable(Json(problem)),
                    _ => Self::BadRequest(Json(problem)),
                }
            }
        }
    };
}

user_responses!(UserRoomsResponse {
    /// The user's rooms, newest activity first.
    #[oai(status = 200)]
    Ok(Json<UserRoomsBody>),
});

user_responses!(ReadPositionResponse {
    /// The stored read position (after the update).
    #[oai(status = 200)]
    Ok(Json<ReadPositionBody>),
});

/// The answers of a private room's creation and its members endpoints.
macro_rules! membership_responses {
    ($name:ident { $($ok:tt)* }) => {
        #[derive(Debug, ApiResponse)]
        #[oai(bad_request_handler = "bad_request")]
        pub enum $name {
            $($ok)*
            /// An invalid room, username or body; `auth_required` under auth `none`.
            #[oai(status = 400, content_type = "application/problem+json")]
            BadRequest(Json<Problem>),
            /// Missing or invalid bearer token (auth `jwt`).
            #[oai(status = 401, content_type = "application/problem+json")]
            Unauthorized(Json<Problem>),
            /// A member who is not the creator removing someone else (`forbidden`).
            #[oai(status = 403, content_type = "application/problem+json")]
            Forbidden(Json<Problem>),
            /// A public room, a private room the caller is not a member of, or a username who
            /// is not a member (`not_found`).
            #[oai(status = 404, content_type = "application/problem+json")]
            NotFound(Json<Problem>),
            /// The room already has messages or was created before (`conflict`).
            #[oai(status = 409, content_type = "application/problem+json")]
            Conflict(Json<Problem>),
            /// Storage unavailable.
            #[oai(status = 503, content_type = "application/problem+json")]
            Unavailable(Json<Problem>),
        }

        impl From<Problem> for $name {
            fn from(problem: Problem) -> Self {
                match problem.status().as_u16() {
                    401 => Self::Unauthorized(Json(problem)),
                    403 => Self::Forbidden(Json(problem)),
                    404 => Self::NotFound(Json(problem)),
                    409 => Self::Conflict(Json(problem)),
                    503 => Self::Unavailable(Json(problem)),
                    _ => Self::BadRequest(Json(problem)),
                }
            }
        }
    };
}

membership_responses!(CreateRoomResponse {
    /// Created: the creator is its only member.
    #[oai(status = 201)]
    Created(Json<CreatedRoomBody>),
});

membership_responses!(MembersResponse {
    /// The room's members, sorted.
    #[oai(status = 200)]
    Ok(Json<MembersBody>),
});
