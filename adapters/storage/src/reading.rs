//! Read positions and a user's rooms with their unread counts.
//!
//! A position moves by one upsert that updates only to a higher `read_seq`, so two reports
//! racing (two tabs, two nodes) never move it back, on either backend, without a transaction.
//! Like the other reads, each query is a backend-neutral function that `crate::explain`
//! plans as well.

use std::collections::BTreeMap;

use banter_domain::{ReadMark, RoomName, Seq, UNREAD_CAP, UserRoom, Username, advance_read};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

use crate::StorageError;
use crate::pool::{Pools, with_connection};
use crate::rows::RoomRow;
use crate::schema::{messages, read_positions, rooms};

/// A room's counters and last message time, by its name.
#[diesel::dsl::auto_type]
pub(crate) fn room_by_name<'a>(room: &'a str) -> _ {
    rooms::table.filter(rooms::name.eq(room))
}

/// One user's read position in one room.
#[diesel::dsl::auto_type]
pub(crate) fn position_of<'a>(user: &'a str, room: &'a str) -> _ {
    read_positions::table
        .filter(read_positions::username.eq(user))
        .filter(read_positions::room.eq(room))
        .select(read_positions::read_seq)
}

/// Every read position of one user.
#[diesel::dsl::auto_type]
pub(crate) fn positions_of<'a>(user: &'a str) -> _ {
    read_positions::table
        .filter(read_positions::username.eq(user))
        .select((read_positions::room, read_positions::read_seq))
}

/// The rooms one user posted in.
#[diesel::dsl::auto_type]
pub(crate) fn rooms_posted_in<'a>(user: &'a str) -> _ {
    messages::table
        .filter(messages::username.eq(user))
        .select(messages::room)
        .distinct()
}

/// Up to `cap` messages of `room` after `after` by someone other than `user`, not deleted.
#[diesel::dsl::auto_type]
pub(crate) fn unread_of<'a>(room: &'a str, after: i64, user: &'a str, cap: i64) -> _ {
    messages::table
        .filter(messages::room.eq(room))
        .filter(messages::seq.gt(after))
        .filter(messages::username.ne(user))
        .filter(messages::deleted.eq(false))
        .select(messages::seq)
        .limit(cap)
}

fn seq_of(what: &str, value: i64) -> Result<Seq, StorageError> {
    Seq::from_i64(value).map_err(|e| StorageError::Corrupt {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

pub(crate) async fn mark_read(
    pools: &Pools,
    room: &RoomName,
    user: &Username,
    requested: Seq,
) -> Result<ReadMark, StorageError> {
    let (room, user) = (room.as_str(), user.as_str());
    with_connection!(pools, |conn| {
        let last_seq: Option<i64> = room_by_name(room)
            .select(rooms::last_seq)
            .first(conn)
            .await
            .optional()?;
        let stored: Option<i64> = position_of(user, room).first(conn).await.optional()?;
        let stored = seq_of("read position", stored.unwrap_or(0))?;
        let last_seq = seq_of("room last_seq", last_seq.unwrap_or(0))?;
        let Some(target) = advance_read(stored, requested, last_seq) else {
            return Ok(ReadMark {
                read_seq: stored,
                advanced: false,
            });
        };
        // Only ever upwards: a concurrent report of a higher seq wins whatever the order.
        let upsert = diesel::insert_into(read_positions::table)
            .values((
                read_positions::username.eq(user),
                read_positions::room.eq(room),
                read_positions::read_seq.eq(target.as_i64()),
            ))
            .on_conflict((read_positions::username, read_positions::room))
            .do_update()
            .set(read_positions::read_seq.eq(excluded(read_positions::read_seq)));
        // `ON CONFLICT … DO UPDATE … WHERE`: the query DSL's own `filter` does not apply here.
        let moved: Option<i64> = diesel::query_dsl::methods::FilterDsl::filter(
            upsert,
            read_positions::read_seq.lt(excluded(read_positions::read_seq)),
        )
        .returning(read_positions::read_seq)
        .get_result(conn)
        .await
        .optional()?;
        match moved {
            Some(seq) => Ok(ReadMark {
                read_seq: seq_of("read position", seq)?,
                advanced: true,
            }),
            None => {
                // Someone else moved it at least as far meanwhile.
                let now: Option<i64> = position_of(user, room).first(conn).await.optional()?;
                Ok(ReadMark {
                    read_seq: seq_of("read position", now.unwrap_or(0))?,
                    advanced: false,
                })
            }
        }
    })
}

pub(crate) async fn read_position(
    pools: &Pools,
    room: &RoomName,
    user: &Username,
) -> Result<Seq, StorageError> {
    let (room, user) = (room.as_str(), user.as_str());
    with_connection!(pools, |conn| {
        let stored: Option<i64> = position_of(user, room).first(conn).await.optional()?;
        seq_of("read position", stored.unwrap_or(0))
    })
}

pub(crate) async fn user_rooms(
    pools: &Pools,
    user: &Username,
) -> Result<Vec<UserRoom>, StorageError> {
    let user = user.as_str();
    let cap = i64::try_from(UNREAD_CAP).unwrap_or(i64::MAX);
    with_connection!(pools, |conn| {
        let positions: Vec<(String, i64)> = positions_of(user).load(conn).await?;
        let posted: Vec<String> = rooms_posted_in(user).load(conn).await?;
        let mut read: BTreeMap<String, i64> = posted.into_iter().map(|r| (r, 0)).collect();
        read.extend(positions);
        let mut listed = Vec::with_capacity(read.len());
        for (name, read_seq) in read {
            let row: Option<RoomRow> = room_by_name(&name)
                .select(RoomRow::as_select())
                .first(conn)
                .await
                .optional()?;
            let Some(row) = row else { continue };
            let unread: Vec<i64> = unread_of(&name, read_seq, user, cap).load(conn).await?;
            let stored = row.into_stored_room()?;
            listed.push(UserRoom {
                room: stored.room,
                last_seq: stored.last_seq,
                read_seq: seq_of("read position", read_seq)?,
                unread: unread.len() as u64,
                last_message_at: stored.last_message_at,
                private: stored.private,
            });
        }
        listed.sort_by(UserRoom::by_activity);
        Ok::<_, StorageError>(listed)
    })
}
