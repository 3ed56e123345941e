//! Reads: history pages, the rooms listing and the readiness ping.
//!
//! Each query is built once by a backend-neutral function and run on either backend through
//! [`with_connection!`]; `crate::explain` plans exactly these functions, so the EXPLAIN checks
//! look at the queries that serve reads.

use banter_domain::{HistoryPage, HistoryQuery, PageLimit, RoomName, Seq, StoredRoomsPage};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::StorageError;
use crate::pool::{Pools, with_connection};
use crate::rows::{MessageRow, RoomRow};
use crate::schema::{messages, rooms};

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

#[diesel::dsl::auto_type]
pub(crate) fn room_last_seq<'a>(room: &'a str) -> _ {
    rooms::table
        .filter(rooms::name.eq(room))
        .select(rooms::last_seq)
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
                let last_seq: Option<i64> = room_last_seq(room).first(conn).await.optional()?;
                let rows: Vec<MessageRow> = newest_before(room, before.as_i64(), probe(limit))
                    .select(MessageRow::as_select())
                    .load(conn)
                    .await?;
                (rows, limit, true, last_seq.unwrap_or(0))
            }
            HistoryQuery::After { after, limit } => {
                let last_seq: Option<i64> = room_last_seq(room).first(conn).await.optional()?;
                let rows: Vec<MessageRow> = oldest_after(room, after.as_i64(), probe(limit))
                    .select(MessageRow::as_select())
                    .load(conn)
                    .await?;
                (rows, limit, false, last_seq.unwrap_or(0))
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
        })
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
