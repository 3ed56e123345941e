//! Edits and deletes: one transaction per change, deciding on the committed state.
//!
//! The transaction first takes the room's row lock (a no-op update of `rooms`, as the writer's
//! `last_seq` upsert takes it for posts), then reads the message, lets the domain decide
//! (`Message::changed_by`), and only for a real change bumps `last_rev` by one, updates the
//! message and logs the rev in `revisions`. So revs are gapless and in commit order: on Postgres
//! a second process changing the same room waits for the lock and continues from the committed
//! `last_rev`; on SQLite `BEGIN IMMEDIATE` serialises writers. A change that changes nothing, or
//! is refused, writes nothing and takes no rev.
//!
//! The flow is written once in [`change_body!`] and expanded for SQLite (sync diesel on the
//! blocking thread, inside an immediate transaction) and Postgres (diesel-async).

use banter_domain::{ChangeRefusal, ChangeRequest, Changed, MessageChange, Rev, Timestamp};

use crate::pool::Pools;
use crate::{StorageError, now_ms};

/// What a change transaction decided.
pub(crate) type Decided = Result<Changed, ChangeRefusal>;

/// A row that is not a valid message aborts the transaction.
pub(crate) fn corrupt(e: StorageError) -> diesel::result::Error {
    diesel::result::Error::DeserializationError(Box::new(e))
}

/// The domain's decision on the committed state, at the commit's time.
pub(crate) fn decide(
    current: &banter_domain::Message,
    request: &ChangeRequest,
    now_ms: i64,
) -> Result<Result<Option<banter_domain::Message>, ChangeRefusal>, diesel::result::Error> {
    let at = Timestamp::from_unix_millis(now_ms).map_err(|e| {
        corrupt(StorageError::Corrupt {
            what: "clock".into(),
            detail: e.to_string(),
        })
    })?;
    Ok(current.changed_by(&request.author, &request.change, at))
}

/// The body of one change transaction, for both backends.
///
/// `$run` is the `RunQueryDsl` of the backend's API (`diesel::RunQueryDsl` or
/// `diesel_async::RunQueryDsl`), `$reindex` the backend's search index update (see
/// `crate::search`), and `[$($await:tt)*]` is `[.await]` or `[]`. Evaluates to
/// `Result<Decided, diesel::result::Error>`.
macro_rules! change_body {
    ($conn:ident, $run:path, $request:expr, $now_ms:expr, $reindex:path, [$($await:tt)*]) => {{
        use $run as _;
        use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper};
        use $crate::schema::{messages, revisions, rooms};
        let request: &banter_domain::ChangeRequest = $request;
        let now_ms: i64 = $now_ms;
        let room = request.room.as_str();
        let seq = request.seq.as_i64();
        // The room's row lock first, as a batch of posts takes it: changes of one room, and
        // its posts, commit one after the other.
        let locked: Option<i64> = diesel::update(rooms::table.filter(rooms::name.eq(room)))
            .set(rooms::last_rev.eq(rooms::last_rev))
            .returning(rooms::last_rev)
            .get_result($conn)
            $($await)*
            .optional()?;
        let row: Option<$crate::rows::MessageRow> = if locked.is_none() {
            None
        } else {
            messages::table
                .filter(messages::room.eq(room))
                .filter(messages::seq.eq(seq))
                .select($crate::rows::MessageRow::as_select())
                .first($conn)
                $($await)*
                .optional()?
        };
        match row {
            None => Ok::<_, diesel::result::Error>(Err(banter_domain::ChangeRefusal::NotFound)),
            Some(row) => {
                let current = row.into_message().map_err($crate::change::corrupt)?;
                match $crate::change::decide(&current, request, now_ms)? {
                    Err(refusal) => Ok(Err(refusal)),
                    Ok(None) => Ok(Ok(banter_domain::Changed::Unchanged(current))),
                    Ok(Some(new)) => {
                        let rev: i64 =
                            diesel::update(rooms::table.filter(rooms::name.eq(room)))
                                .set(rooms::last_rev.eq(rooms::last_rev + 1))
                                .returning(rooms::last_rev)
                                .get_result($conn)
                                $($await)*?;
                        diesel::update(
                            messages::table
                                .filter(messages::room.eq(room))
                                .filter(messages::seq.eq(seq)),
                        )
                        .set((
                            messages::content
                                .eq(new.content.as_ref().map_or("", |c| c.as_str())),
                            messages::edited_at_ms
                                .eq(new.edited_at.map(banter_domain::Timestamp::unix_millis)),
                            messages::deleted.eq(new.is_deleted()),
                            messages::rev.eq(Some(rev)),
                        ))
                        .execute($conn)
                        $($await)*?;
                        diesel::insert_into(revisions::table)
                            .values((
                                revisions::room.eq(room),
                                revisions::rev.eq(rev),
                                revisions::seq.eq(seq),
                            ))
                            .execute($conn)
                            $($await)*?;
                        $reindex($conn, room, seq, &new)$($await)*?;
                        let rev = banter_domain::Rev::from_i64(rev).map_err(|e| {
                            $crate::change::corrupt($crate::StorageError::Corrupt {
                                what: format!("room {room} last_rev"),
                                detail: e.to_string(),
                            })
                        })?;
                        Ok(Ok(banter_domain::Changed::Updated(banter_domain::MessageChange {
                            rev,
                            message: new,
                        })))
                    }
                }
            }
        }
    }};
}

/// Commits one change.
pub(crate) async fn change(pools: &Pools, request: ChangeRequest) -> Result<Decided, StorageError> {
    let now = now_ms();
    let decided = match pools {
        Pools::Sqlite(pool) => {
            let mut pooled = pool.get().await?;
            pooled
                .spawn_blocking(move |conn| {
                    conn.immediate_transaction(|conn| {
                        change_body!(
                            conn,
                            diesel::RunQueryDsl,
                            &request,
                            now,
                            crate::search::reindex_sqlite,
                            []
                        )
                    })
                })
                .await?
        }
        Pools::Postgres(pool) => {
            use diesel_async::AsyncConnection;
            let mut pooled = pool.get().await?;
            let conn = &mut *pooled;
            let request = &request;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                change_body!(
                    conn,
                    diesel_async::RunQueryDsl,
                    request,
                    now,
                    crate::search::reindex_postgres,
                    [.await]
                )
            })
            .await?
        }
    };
    if let Ok(Changed::Updated(MessageChange { rev, .. })) = &decided {
        debug_assert!(*rev > Rev::ZERO);
        metrics::counter!("banter_messages_changed_total").increment(1);
    }
    Ok(decided)
}
