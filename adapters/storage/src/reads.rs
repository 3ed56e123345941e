//! Reads: history pages, the rooms listing and the readiness ping.
//!
//! Each query is built once by a backend-neutral function and run on either backend through
//! [`with_connection!`]; `crate::explain` plans exactly these functions, so the EXPLAIN checks
//! look at the queries that serve reads.

use banter_domain::{
    ChangesPage, ChangesQuery, HistoryPage, HistoryQuery, MessageChange, PageLimit, Rev, RoomName,
    Seq, StoredRoomsPage,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::StorageError;
use crate::pool::{Pools, with_connection};
use crate::rows::{MessageRow, RoomRow};
use crate::schema::{messages, revisions, rooms};

#[diesel::dsl::auto_type]
pub(crate) fn newest_first<'a>(room: &'a str, limit: i64) -> _ {
    messages::table
        .filter(messages::room.eq(room))
        .order(messages::seq.desc())
        .limit(limit)
}

#[diesel::dsl::auto_type]
pub(crate) fn newest_before<'a>(room: &'a str, before: i64, limit: i64) -> _ {
    messages::table
        .filter(messages::room.eq(room))
        .filter(messages::seq.lt(before))
        .order(messages::seq.desc())
        .limit(limit)
}

#[diesel::dsl::auto_type]
pub(crate) fn oldest_after<'a>(room: &'a str, after: i64, limit: i64) -> _ {
    messages::table
        .filter(messages::room.eq(room))
        .filter(messages::seq.gt(after))
        .order(messages::seq.asc())
        .limit(limit)
}

/// The room's counters: its last seq and its last rev.
#[diesel::dsl::auto_type]
pub(crate) fn room_last_seq<'a>(room: &'a str) -> _ {
    rooms::table
        .filter(rooms::name.eq(room))
        .select((rooms::last_seq, rooms::last_rev))
}

/// Messages by their latest rev, in (`after`, `through`], of a seq at most `max_seq`.
#[diesel::dsl::auto_type]
pub(crate) fn changed_after<'a>(
    room: &'a str,
    after: i64,
    through: i64,
    max_seq: i64,
    limit: i64,
) -> _ {
    messages::table
        .filter(messages::room.eq(room))
        .filter(messages::rev.gt(after))
        .filter(messages::rev.le(through))
        .filter(messages::seq.le(max_seq))
        .order(messages::rev.asc())
        .limit(limit)
}

/// Every rev after `after`, with the message it changed.
#[diesel::dsl::auto_type]
pub(crate) fn revisions_after<'a>(room: &'a str, after: i64, limit: i64) -> _ {
    revisions::table
        .inner_join(
            messages::table.on(messages::room
                .eq(revisions::room)
                .and(messages::seq.eq(revisions::seq))),
        )
        .filter(revisions::room.eq(room))
        .filter(revisions::rev.gt(after))
        .order(revisions::rev.asc())
        .limit(limit)
}

#[diesel::dsl::auto_type]
pub(crate) fn rooms_after<'a>(after: &'a str, limit: i64) -> _ {
    rooms::table
        .filter(rooms::name.gt(after))
        .order(rooms::name.asc())
        .limit(limit)
}

/// One more than the page, to learn whether more exist.
fn probe(limit: PageLimit) -> i64 {
    limit.get() as i64 + 1
}

/// Queries read one row past the page (`probe`); that row only says whether more exist.
fn split_page<T>(rows: &mut Vec<T>, limit: PageLimit) -> bool {
    let has_more = rows.len() > limit.get();
    rows.truncate(limit.get());
    has_more
}

fn into_page(
    mut rows: Vec<MessageRow>,
    limit: PageLimit,
    newest_first: bool,
) -> Result<(Vec<banter_domain::Message>, bool), StorageError> {
    let has_more = split_page(&mut rows, limit);
    if newest_first {
        rows.reverse();
    }
    let messages = rows
        .into_iter()
        .map(MessageRow::into_message)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((messages, has_more))
}

pub(crate) async fn history(
    pools: &Pools,
    room: &RoomName,
    query: HistoryQuery,
) -> Result<HistoryPage, StorageError> {
    let room = room.as_str();
    with_connection!(pools, |conn| {
        // The counters first: every change up to `last_rev` is in the rows read after them.
        let counters: Option<(i64, i64)> = room_last_seq(room).first(conn).await.optional()?;
        let (counted_seq, last_rev) = counters.unwrap_or((0, 0));
        let (rows, limit, newest, last_seq) = match query {
            HistoryQuery::Latest { limit } => {
                let rows: Vec<MessageRow> = newest_first(room, probe(limit))
                    .select(MessageRow::as_select())
                    .load(conn)
                    .await?;
                // The newest message's seq is the room's last seq.
                // `<[_]>::first`, not diesel's `first` (RunQueryDsl is implemented for every type).
                let last_seq = <[MessageRow]>::first(&rows).map_or(0, |r| r.seq);
                (rows, limit, true, last_seq)
            }
            HistoryQuery::Before { before, limit } => {
                let rows: Vec<MessageRow> = newest_before(room, before.as_i64(), probe(limit))
                    .select(MessageRow::as_select())
                    .load(conn)
                    .await?;
                (rows, limit, true, counted_seq)
            }
            HistoryQuery::After { after, limit } => {
                let rows: Vec<MessageRow> = oldest_after(room, after.as_i64(), probe(limit))
                    .select(MessageRow::as_select())
                    .load(conn)
                    .await?;
                (rows, limit, false, counted_seq)
            }
        };
        let (messages, has_more) = into_page(rows, limit, newest)?;
        let last_seq = Seq::from_i64(last_seq).map_err(|e| StorageError::Corrupt {
            what: format!("room {room} last_seq"),
            detail: e.to_string(),
        })?;
        Ok(HistoryPage {
            messages,
            has_more,
            last_seq,
            last_rev: rev_of(room, last_rev)?,
        })
    })
}

fn rev_of(room: &str, rev: i64) -> Result<Rev, StorageError> {
    Rev::from_i64(rev).map_err(|e| StorageError::Corrupt {
        what: format!("room {room} rev"),
        detail: e.to_string(),
    })
}

fn into_changes(
    room: &str,
    mut rows: Vec<(i64, MessageRow)>,
    limit: PageLimit,
    last_rev: i64,
) -> Result<ChangesPage, StorageError> {
    let has_more = split_page(&mut rows, limit);
    let changes = rows
        .into_iter()
        .map(|(rev, row)| {
            Ok(MessageChange {
                rev: rev_of(room, rev)?,
                message: row.into_message()?,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(ChangesPage {
        changes,
        has_more,
        last_rev: rev_of(room, last_rev)?,
    })
}

pub(crate) async fn changes(
    pools: &Pools,
    room: &RoomName,
    query: ChangesQuery,
) -> Result<ChangesPage, StorageError> {
    let room = room.as_str();
    let through = query.through.map_or(i64::MAX, Rev::as_i64);
    let max_seq = query.max_seq.map_or(i64::MAX, Seq::as_i64);
    with_connection!(pools, |conn| {
        let counters: Option<(i64, i64)> = room_last_seq(room).first(conn).await.optional()?;
        let last_rev = counters.map_or(0, |c| c.1);
        let rows: Vec<(Option<i64>, MessageRow)> = changed_after(
            room,
            query.after.as_i64(),
            through,
            max_seq,
            probe(query.limit),
        )
        .select((messages::rev, MessageRow::as_select()))
        .load(conn)
        .await?;
        // `rev > after` holds only for rows that have one.
        let rows = rows
            .into_iter()
            .filter_map(|(rev, row)| Some((rev?, row)))
            .collect();
        into_changes(room, rows, query.limit, last_rev)
    })
}

pub(crate) async fn revisions(
    pools: &Pools,
    room: &RoomName,
    after: Rev,
    limit: PageLimit,
) -> Result<ChangesPage, StorageError> {
    let room = room.as_str();
    with_connection!(pools, |conn| {
        let counters: Option<(i64, i64)> = room_last_seq(room).first(conn).await.optional()?;
        let last_rev = counters.map_or(0, |c| c.1);
        let rows: Vec<(i64, MessageRow)> = revisions_after(room, after.as_i64(), probe(limit))
            .select((revisions::rev, MessageRow::as_select()))
            .load(conn)
            .await?;
        into_changes(room, rows, limit, last_rev)
    })
}

pub(crate) async fn rooms(
    pools: &Pools,
    after: Option<&RoomName>,
    limit: PageLimit,
) -> Result<StoredRoomsPage, StorageError> {
    // Every room name is non-empty, so "after the empty string" is the first page.
    let after = after.map_or("", RoomName::as_str);
    with_connection!(pools, |conn| {
        let mut rows: Vec<RoomRow> = rooms_after(after, probe(limit))
            .select(RoomRow::as_select())
            .load(conn)
            .await?;
        let has_more = split_page(&mut rows, limit);
        let rooms = rows
            .into_iter()
            .map(RoomRow::into_stored_room)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StoredRoomsPage { rooms, has_more })
    })
}

pub(crate) async fn ping(pools: &Pools) -> Result<(), StorageError> {
    with_connection!(pools, |conn| {
        diesel::sql_query("SELECT 1").execute(conn).await?;
        Ok(())
    })
}
