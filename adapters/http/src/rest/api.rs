//! The REST operations (poem-openapi): history, posting, rooms, presence, health and
//! readiness. Each parses its parameters, asks the application, and answers with its bodies.

use std::sync::Arc;

use banter_application::{ChangeDraft, DraftField, Ports, PostDraft};
use banter_domain::{Appended, HistoryQuery, RoomName, Seq, Username};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{OpenApi, Tags};

use super::bodies::{
    ChangeBody, ChangesBody, CreateRoomBody, CreatedRoomBody, EditBody, HistoryBody, MembersBody,
    PostBody, PresenceBody, ReadPositionBody, ReadRequestBody, RoomBody, RoomsBody, SearchBody,
    StringField, UserRoomBody, UserRoomsBody,
};
use super::request_checks::Caller;
use super::responses::{
    ChangeResponse, ChangesResponse, CreateRoomResponse, HistoryResponse, MembersResponse,
    PostResponse, PresenceResponse, ReadPositionResponse, ReadyResponse, RoomsResponse,
    SearchResponse, UserRoomsResponse,
};
use crate::AppState;
use crate::params::{
    CHANGES_PAGE, HISTORY_PAGE, PRESENCE_PAGE, ROOMS_PAGE, SEARCH_PAGE, name_cursor, page_limit,
    rev_cursor, search_query, seq_cursor, seq_in_path,
};
use crate::problem::{
    ErrorCode, PostEdge, Problem, Refusal, change_refusal, membership_problem, not_found_room,
    not_ready_problem, post_refusal, read_problem, room_from_path, username_from_client,
};

/// Who a request acts as: the token's `sub` with auth `jwt`, else the username it names.
fn acting_user(req: &Request, named: Option<StringField>) -> Result<Username, Problem> {
    match (req.extensions().get::<Caller>(), named) {
        (Some(Caller(username)), _) => Ok(username.clone()),
        (None, Some(StringField::Text(raw))) => username_from_client(Some(&raw)),
        (None, Some(StringField::NotText)) => Err(Problem::new(
            ErrorCode::InvalidUsername,
            "username: must be a string",
        )),
        (None, None | Some(StringField::Missing)) => username_from_client(None),
    }
}

/// The user an `/api/users/{username}/…` request names, who must be the caller under auth
/// `jwt`: nobody reads or moves another user's read positions.
fn user_in_path(req: &Request, raw: &str) -> Result<Username, Problem> {
    let named = Username::parse(raw)
        .map_err(|e| Problem::from(Refusal::of_field(ErrorCode::InvalidUsername, "username", e)))?;
    match req.extensions().get::<Caller>() {
        Some(Caller(caller)) if *caller != named => Err(Problem::new(
            ErrorCode::Forbidden,
            "username: only the token's own user may use this",
        )),
        _ => Ok(named),
    }
}

#[derive(Tags)]
enum ApiTags {
    /// Messages and rooms.
    Chat,
    /// Liveness and readiness probes.
    Health,
}

#[derive(Debug)]
pub struct ChatApi<P: Ports> {
    state: Arc<AppState<P>>,
}

impl<P: Ports> ChatApi<P> {
    pub fn new(state: Arc<AppState<P>>) -> Self {
        Self { state }
    }
}

/// The user a request acts as under auth `jwt`; `None` under auth `none`, who sees public
/// rooms only.
fn viewer(req: &Request) -> Option<&Username> {
    req.extensions().get::<Caller>().map(|Caller(user)| user)
}

/// A member's name in a members path.
fn member_in_path(raw: &str) -> Result<Username, Problem> {
    Username::parse(raw)
        .map_err(|e| Refusal::of_field(ErrorCode::InvalidUsername, "username", e).into())
}

impl<P: Ports> ChatApi<P> {
    /// The room a request names, if the caller may see it: a private room the caller is not a
    /// member of is answered exactly as a room that is not there (404 `not_found`).
    async fn visible_room(&self, req: &Request, raw: &str) -> Result<RoomName, Problem> {
        let room = room_from_path(raw)?;
        match self.state.chat.readable(&room, viewer(req)).await {
            Ok(true) => Ok(room),
            Ok(false) => Err(not_found_room()),
            Err(e) => Err(read_problem(&e)),
        }
    }

    /// The caller of a members endpoint: under auth `none` nobody is a member of anything.
    fn member_caller(req: &Request) -> Result<&Username, Problem> {
        viewer(req).ok_or_else(not_found_room)
    }

    /// Runs an edit or a delete in its own task (a committed change is broadcast even if the
    /// client hangs up) and answers with the message as it now is.
    async fn change(
        &self,
        room: RoomName,
        username: Username,
        seq: Seq,
        draft: ChangeDraft,
    ) -> Result<ChangeResponse, Problem> {
        let chat = self.state.chat.clone();
        let changed = tokio::spawn(async move { chat.change(&room, &username, seq, draft).await })
            .await
            .map_err(|e| Problem::new(ErrorCode::Unavailable, format!("the change failed: {e}")))?
            .map_err(|e| Problem::from(change_refusal(&e, PostEdge::Rest)))?;
        Ok(ChangeResponse::Ok(Json(changed.into_message().into())))
    }
}

// The page sizes in the attributes below are literals (poem-openapi takes no constants there);
// a test holds them to `crate::params`.
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
        req: &Request,
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
            let room = self.visible_room(req, &room).await?;
            let limit = page_limit(limit.0, HISTORY_PAGE)?;
            let query = match (
                seq_cursor("before", before.0)?,
                seq_cursor("after", after.0)?,
            ) {
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
                messages: page.messages.into_iter().map(Into::into).collect(),
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
            let room = self.visible_room(req, &room).await?;
            let body = body.0;
            let username = acting_user(req, body.username)?;
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
                .map_err(|e| Problem::from(post_refusal(&e.refusal, PostEdge::Rest)))
        };
        match run.await {
            Ok(Appended::Stored(message)) => PostResponse::Created(Json(message.into())),
            Ok(Appended::Duplicate(message)) => PostResponse::Duplicate(Json(message.into())),
            Err(problem) => problem.into(),
        }
    }

    /// Edit a message.
    ///
    /// Only its author may (`forbidden` otherwise); the new text follows a post's rules. A
    /// real change takes the room's next `rev` and reaches the room's WebSocket clients as
    /// `message_updated`; the same text again changes nothing. Edits take a token from the
    /// address's bucket, like posts. With auth `jwt` the author is the bearer token's `sub`.
    #[oai(
        path = "/api/rooms/:room/messages/:seq",
        method = "patch",
        tag = "ApiTags::Chat"
    )]
    async fn edit(
        &self,
        req: &Request,
        /// The room.
        room: Path<String>,
        /// The message's seq (a positive integer).
        seq: Path<String>,
        body: Json<EditBody>,
    ) -> ChangeResponse {
        let run = async {
            let room = self.visible_room(req, &room).await?;
            let seq = seq_in_path(&seq)?;
            let body = body.0;
            let username = acting_user(req, body.username)?;
            let draft = ChangeDraft::Edit {
                content: body.content.into_draft(),
            };
            self.change(room, username, seq, draft).await
        };
        run.await.unwrap_or_else(ChangeResponse::from)
    }

    /// Delete a message.
    ///
    /// Only its author may. The message stays as a tombstone: same room, seq, username and
    /// timestamp, `content` `""`, `client_id` null, `deleted` true. Deleting it again changes
    /// nothing. With auth `jwt` the author is the bearer token's `sub` and `username` is
    /// ignored.
    #[oai(
        path = "/api/rooms/:room/messages/:seq",
        method = "delete",
        tag = "ApiTags::Chat"
    )]
    async fn delete(
        &self,
        req: &Request,
        /// The room.
        room: Path<String>,
        /// The message's seq (a positive integer).
        seq: Path<String>,
        /// Who deletes (auth `none`; must be the author).
        username: Query<Option<String>>,
    ) -> ChangeResponse {
        let run = async {
            let room = self.visible_room(req, &room).await?;
            let seq = seq_in_path(&seq)?;
            let username = acting_user(req, username.0.map(StringField::Text))?;
            self.change(room, username, seq, ChangeDraft::Delete).await
        };
        run.await.unwrap_or_else(ChangeResponse::from)
    }

    /// Read a room's changes.
    ///
    /// Messages edited or deleted after `after_rev`, each once in its current state,
    /// ascending by the rev of its latest change. Page with the last rev of a page.
    #[oai(
        path = "/api/rooms/:room/changes",
        method = "get",
        tag = "ApiTags::Chat"
    )]
    async fn changes(
        &self,
        req: &Request,
        /// The room.
        room: Path<String>,
        /// Only changes after this rev (integer ≥ 0, default 0).
        #[oai(validator(minimum(value = "0")))]
        after_rev: Query<Option<i64>>,
        /// Page size, 1–200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<i64>>,
    ) -> ChangesResponse {
        let run = async {
            let room = self.visible_room(req, &room).await?;
            let after = rev_cursor("after_rev", after_rev.0)?;
            let limit = page_limit(limit.0, CHANGES_PAGE)?;
            let page = self
                .state
                .chat
                .changes(&room, after, limit)
                .await
                .map_err(|e| read_problem(&e))?;
            Ok::<_, Problem>(ChangesBody {
                changes: page
                    .changes
                    .into_iter()
                    .map(|c| ChangeBody {
                        rev: c.rev.get(),
                        message: c.message.into(),
                    })
                    .collect(),
                has_more: page.has_more,
            })
        };
        match run.await {
            Ok(body) => ChangesResponse::Ok(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// Search a room.
    ///
    /// Messages whose current content has every word of `q` (whole words, case-insensitive,
    /// the last unquoted word also as a prefix) and every `"quoted phrase"`, newest first.
    /// Deleted messages are never found. Page with `before` = the last result's seq.
    #[oai(
        path = "/api/rooms/:room/search",
        method = "get",
        tag = "ApiTags::Chat"
    )]
    async fn search_room(
        &self,
        req: &Request,
        /// The room.
        room: Path<String>,
        /// 1–200 characters with at least one word (a run of letters or digits).
        q: Query<Option<String>>,
        /// Only messages with a smaller seq (integer ≥ 0).
        #[oai(validator(minimum(value = "0")))]
        before: Query<Option<i64>>,
        /// Page size, 1–100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
    ) -> SearchResponse {
        let run = async {
            let room = self.visible_room(req, &room).await?;
            let query = search_query(q.0)?;
            let before = seq_cursor("before", before.0)?;
            let limit = page_limit(limit.0, SEARCH_PAGE)?;
            let page = self
                .state
                .chat
                .search_room(&room, &query, before, limit)
                .await
                .map_err(|e| read_problem(&e))?;
            Ok::<_, Problem>(SearchBody::from(page))
        };
        match run.await {
            Ok(body) => SearchResponse::Ok(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// Search every room the caller may read.
    ///
    /// As a room's search, across public rooms and the private rooms the caller is a member
    /// of, newest first by timestamp (ties in any order).
    #[oai(path = "/api/search", method = "get", tag = "ApiTags::Chat")]
    async fn search_readable(
        &self,
        req: &Request,
        /// 1–200 characters with at least one word (a run of letters or digits).
        q: Query<Option<String>>,
        /// Page size, 1–100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<i64>>,
    ) -> SearchResponse {
        let run = async {
            let query = search_query(q.0)?;
            let limit = page_limit(limit.0, SEARCH_PAGE)?;
            let page = self
                .state
                .chat
                .search_readable(&query, limit, viewer(req))
                .await
                .map_err(|e| read_problem(&e))?;
            Ok::<_, Problem>(SearchBody::from(page))
        };
        match run.await {
            Ok(body) => SearchResponse::Ok(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// List rooms that have messages or people online, sorted by name.
    #[oai(path = "/api/rooms", method = "get", tag = "ApiTags::Chat")]
    async fn rooms(
        &self,
        req: &Request,
        /// Page size, 1–1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
        /// Start after this room name.
        after: Query<Option<String>>,
    ) -> RoomsResponse {
        let run = async {
            let limit = page_limit(limit.0, ROOMS_PAGE)?;
            let after = name_cursor(after.0, RoomName::parse)?;
            let page = self
                .state
                .chat
                .rooms(after.as_ref(), limit, viewer(req))
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
        req: &Request,
        room: Path<String>,
        /// Page size, 1–1000 (default 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
        /// Start after this username.
        after: Query<Option<String>>,
    ) -> PresenceResponse {
        let run = async {
            let room = self.visible_room(req, &room).await?;
            let limit = page_limit(limit.0, PRESENCE_PAGE)?;
            let after = name_cursor(after.0, Username::parse)?;
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

    /// List a user's rooms with read positions and unread counts.
    ///
    /// Every room the user posted in or has a read position in, newest activity first.
    /// `unread` counts messages after `read_seq` by other users, deleted ones excluded, capped
    /// at 1000. With auth `jwt` only the token's `sub` may ask for itself (`forbidden`).
    #[oai(
        path = "/api/users/:username/rooms",
        method = "get",
        tag = "ApiTags::Chat"
    )]
    async fn user_rooms(
        &self,
        req: &Request,
        /// The user.
        username: Path<String>,
    ) -> UserRoomsResponse {
        let run = async {
            let user = user_in_path(req, &username)?;
            let mut rooms = self
                .state
                .chat
                .user_rooms(&user)
                .await
                .map_err(|e| read_problem(&e))?;
            // Private rooms exist under auth `jwt` only (where the caller is the user).
            if viewer(req).is_none() {
                rooms.retain(|r| !r.private);
            }
            Ok::<_, Problem>(UserRoomsBody {
                rooms: rooms
                    .into_iter()
                    .map(|r| UserRoomBody {
                        room: r.room.into_inner(),
                        last_seq: r.last_seq.get(),
                        read_seq: r.read_seq.get(),
                        unread: r.unread,
                        last_message_at: r.last_message_at.map(|t| t.to_rfc3339()),
                    })
                    .collect(),
            })
        };
        match run.await {
            Ok(body) => UserRoomsResponse::Ok(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// Set how far a user has read a room.
    ///
    /// A lower seq than the stored one is ignored and one beyond the room's last seq is
    /// clamped; the answer is the stored position. When it moved, the user's WebSocket
    /// connections to the room get a `read` frame. Takes no rate-limit token. With auth `jwt`
    /// only the token's `sub` may set its own (`forbidden`).
    #[oai(
        path = "/api/users/:username/rooms/:room/read",
        method = "put",
        tag = "ApiTags::Chat"
    )]
    async fn mark_read(
        &self,
        req: &Request,
        /// The user.
        username: Path<String>,
        /// The room.
        room: Path<String>,
        body: Json<ReadRequestBody>,
    ) -> ReadPositionResponse {
        let run = async {
            let user = user_in_path(req, &username)?;
            let room = self.visible_room(req, &room).await?;
            let seq = Seq::new(body.0.seq).map_err(|_| {
                Problem::new(
                    ErrorCode::InvalidBody,
                    "seq: must be an integer ≥ 0 and < 2^63",
                )
            })?;
            let mark = self
                .state
                .chat
                .mark_read(&room, &user, seq)
                .await
                .map_err(|e| read_problem(&e))?;
            Ok::<_, Problem>(ReadPositionBody {
                room: room.into_inner(),
                read_seq: mark.read_seq.get(),
            })
        };
        match run.await {
            Ok(body) => ReadPositionResponse::Ok(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// Create a private room (auth `jwt` only).
    ///
    /// Body `{"room": "team-x", "private": true}`. The caller becomes its creator and only
    /// member. Rooms are public without creation; one that already has messages, or was
    /// created before, cannot be created (`conflict`).
    #[oai(path = "/api/rooms", method = "post", tag = "ApiTags::Chat")]
    async fn create_room(&self, req: &Request, body: Json<CreateRoomBody>) -> CreateRoomResponse {
        let run = async {
            let Some(creator) = viewer(req) else {
                return Err(Problem::new(
                    ErrorCode::AuthRequired,
                    "private rooms need auth jwt",
                ));
            };
            let body = body.0;
            let StringField::Text(raw) = body.room else {
                return Err(Problem::new(
                    ErrorCode::InvalidBody,
                    "room: must be a string",
                ));
            };
            if body.private != Some(true) {
                return Err(Problem::new(
                    ErrorCode::InvalidBody,
                    "private: must be true",
                ));
            }
            let room = RoomName::parse(&raw)
                .map_err(|e| Problem::from(Refusal::of_field(ErrorCode::InvalidRoom, "room", e)))?;
            let members = self
                .state
                .chat
                .create_private_room(&room, creator)
                .await
                .map_err(|e| membership_problem(&e))?;
            Ok(CreatedRoomBody {
                room: room.into_inner(),
                private: true,
                members: members.into_iter().map(Username::into_inner).collect(),
            })
        };
        match run.await {
            Ok(body) => CreateRoomResponse::Created(Json(body)),
            Err(problem) => problem.into(),
        }
    }

    /// List a private room's members (members only).
    #[oai(
        path = "/api/rooms/:room/members",
        method = "get",
        tag = "ApiTags::Chat"
    )]
    async fn members(&self, req: &Request, room: Path<String>) -> MembersResponse {
        let run = async {
            let caller = Self::member_caller(req)?;
            let room = room_from_path(&room)?;
            let members = self.state.chat.members(&room, caller).await;
            Ok::<_, Problem>((room, members.map_err(|e| membership_problem(&e))?))
        };
        members_answer(run.await)
    }

    /// Add a member to a private room (any member may).
    ///
    /// Adding a member again changes nothing. Answers the members after the change.
    #[oai(
        path = "/api/rooms/:room/members/:username",
        method = "put",
        tag = "ApiTags::Chat"
    )]
    async fn add_member(
        &self,
        req: &Request,
        room: Path<String>,
        /// Who to add.
        username: Path<String>,
    ) -> MembersResponse {
        let run = async {
            let caller = Self::member_caller(req)?;
            let room = room_from_path(&room)?;
            let target = member_in_path(&username)?;
            let members = self.state.chat.add_member(&room, caller, &target).await;
            Ok::<_, Problem>((room, members.map_err(|e| membership_problem(&e))?))
        };
        members_answer(run.await)
    }

    /// Remove a member from a private room.
    ///
    /// A member may remove themself, the creator anyone (`forbidden` otherwise). The removed
    /// user's open connections to the room, on every node, are closed with code 4403.
    /// Answers the members after the change.
    #[oai(
        path = "/api/rooms/:room/members/:username",
        method = "delete",
        tag = "ApiTags::Chat"
    )]
    async fn remove_member(
        &self,
        req: &Request,
        room: Path<String>,
        /// Who to remove.
        username: Path<String>,
    ) -> MembersResponse {
        let run = async {
            let caller = Self::member_caller(req)?;
            let room = room_from_path(&room)?;
            let target = member_in_path(&username)?;
            let members = self.state.chat.remove_member(&room, caller, &target).await;
            Ok::<_, Problem>((room, members.map_err(|e| membership_problem(&e))?))
        };
        members_answer(run.await)
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
            return ReadyResponse::NotReady(Json(not_ready_problem(None)));
        }
        match self.state.chat.check_ready().await {
            Ok(()) => ReadyResponse::Ready(PlainText("ready".to_owned())),
            Err(e) => ReadyResponse::NotReady(Json(not_ready_problem(Some(&e)))),
        }
    }
}

fn members_answer(outcome: Result<(RoomName, Vec<Username>), Problem>) -> MembersResponse {
    match outcome {
        Ok((room, members)) => MembersResponse::Ok(Json(MembersBody {
            room: room.into_inner(),
            members: members.into_iter().map(Username::into_inner).collect(),
        })),
        Err(problem) => problem.into(),
    }
}
