//! Private rooms: creating one, its members, and who may see what.
//!
//! Creating a private room inserts its row (and its creator as the first member) in one
//! transaction, and only when no row exists: a room gets its row at its first message or at
//! its creation, so "no row" is "no messages, never created".

use banter_domain::{RoomAccess, RoomName, Username};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};

use crate::pool::{Pools, with_connection};
use crate::schema::{room_members, rooms};
use crate::{StorageError, now_ms};

/// A room's privacy, creator and last seq.
#[diesel::dsl::auto_type]
pub(crate) fn privacy_of<'a>(room: &'a str) -> _ {
    rooms::table.filter(rooms::name.eq(room)).select((
        rooms::private,
        rooms::creator,
        rooms::last_seq,
    ))
}

/// Rooms known to be public for good: a public room with messages can never be made private
/// (creation needs a room without a row), so once seen it needs no query again, in any
/// process. Every access check of a busy public room (each join, each REST call) would
/// otherwise read the database. Bounded: forgotten wholesale when full.
#[derive(Debug, Default)]
pub(crate) struct SettledPublic {
    rooms: std::sync::Mutex<std::collections::HashSet<RoomName>>,
}

const SETTLED_PUBLIC_MAX: usize = 100_000;

impl SettledPublic {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<RoomName>> {
        // A set of names, each update complete: a poisoned lock is still usable.
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, room: &RoomName) -> bool {
        self.lock().contains(room)
    }

    fn insert(&self, room: &RoomName) {
        let mut rooms = self.lock();
        if rooms.len() >= SETTLED_PUBLIC_MAX {
            rooms.clear();
        }
        rooms.insert(room.clone());
    }
}

/// A room's members, sorted.
#[diesel::dsl::auto_type]
pub(crate) fn members_of<'a>(room: &'a str) -> _ {
    room_members::table
        .filter(room_members::room.eq(room))
        .order(room_members::username.asc())
        .select(room_members::username)
}

/// The rooms a user is a member of, sorted.
#[diesel::dsl::auto_type]
pub(crate) fn rooms_of_member<'a>(user: &'a str) -> _ {
    room_members::table
        .filter(room_members::username.eq(user))
        .order(room_members::room.asc())
        .select(room_members::room)
}

/// The body of the creating transaction, for both backends (see `crate::change` for the
/// `$run`/`$await` convention). Evaluates to `Result<bool, diesel::result::Error>`.
macro_rules! create_body {
    ($conn:ident, $run:path, $room:expr, $creator:expr, $now:expr, [$($await:tt)*]) => {{
        use $run as _;
        use diesel::{ExpressionMethods, OptionalExtension};
        use $crate::schema::{room_members, rooms};
        let (room, creator, now): (&str, &str, i64) = ($room, $creator, $now);
        let created: Option<String> = diesel::insert_into(rooms::table)
            .values((
                rooms::name.eq(room),
                rooms::last_seq.eq(0_i64),
                rooms::created_at_ms.eq(now),
                rooms::private.eq(true),
                rooms::creator.eq(Some(creator)),
            ))
            .on_conflict_do_nothing()
            .returning(rooms::name)
            .get_result($conn)
            $($await)*
            .optional()?;
        if created.is_some() {
            diesel::insert_into(room_members::table)
                .values((room_members::room.eq(room), room_members::username.eq(creator)))
                .execute($conn)
                $($await)*?;
        }
        Ok::<bool, diesel::result::Error>(created.is_some())
    }};
}

pub(crate) async fn create_private_room(
    pools: &Pools,
    room: &RoomName,
    creator: &Username,
) -> Result<bool, StorageError> {
    let now = now_ms();
    let (room, creator) = (room.as_str().to_owned(), creator.as_str().to_owned());
    let created = match pools {
        Pools::Sqlite(pool) => {
            let mut pooled = pool.get().await?;
            pooled
                .spawn_blocking(move |conn| {
                    conn.immediate_transaction(|conn| {
                        create_body!(conn, diesel::RunQueryDsl, &room, &creator, now, [])
                    })
                })
                .await?
        }
        Pools::Postgres(pool) => {
            use diesel_async::AsyncConnection;
            let mut pooled = pool.get().await?;
            let conn = &mut *pooled;
            let (room, creator) = (&room, &creator);
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                create_body!(conn, diesel_async::RunQueryDsl, room, creator, now, [.await])
            })
            .await?
        }
    };
    Ok(created)
}

fn username(raw: String) -> Result<Username, StorageError> {
    Username::parse(&raw).map_err(|e| StorageError::Corrupt {
        what: format!("member {raw:?}"),
        detail: e.to_string(),
    })
}

pub(crate) async fn room_access(
    pools: &Pools,
    settled: &SettledPublic,
    name: &RoomName,
) -> Result<RoomAccess, StorageError> {
    use diesel_async::RunQueryDsl;
    if settled.contains(name) {
        return Ok(RoomAccess::Public);
    }
    let room = name.as_str();
    with_connection!(pools, |conn| {
        let privacy: Option<(bool, Option<String>, i64)> =
            privacy_of(room).first(conn).await.optional()?;
        let creator = match privacy {
            None => return Ok(RoomAccess::Public),
            Some((false, _, last_seq)) => {
                if last_seq > 0 {
                    settled.insert(name);
                }
                return Ok(RoomAccess::Public);
            }
            Some((true, creator, _)) => creator,
        };
        let members: Vec<String> = members_of(room).load(conn).await?;
        let creator = creator.ok_or_else(|| StorageError::Corrupt {
            what: format!("room {room}"),
            detail: "private without a creator".into(),
        })?;
        Ok(RoomAccess::Private {
            creator: username(creator)?,
            members: members
                .into_iter()
                .map(username)
                .collect::<Result<_, _>>()?,
        })
    })
}

pub(crate) async fn set_member(
    pools: &Pools,
    room: &RoomName,
    user: &Username,
    member: bool,
) -> Result<bool, StorageError> {
    let (room, user) = (room.as_str(), user.as_str());
    use diesel_async::RunQueryDsl;
    with_connection!(pools, |conn| {
        let changed = if member {
            diesel::insert_into(room_members::table)
                .values((room_members::room.eq(room), room_members::username.eq(user)))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?
        } else {
            diesel::delete(
                room_members::table
                    .filter(room_members::room.eq(room))
                    .filter(room_members::username.eq(user)),
            )
            .execute(conn)
            .await?
        };
        Ok(changed > 0)
    })
}

pub(crate) async fn member_rooms(
    pools: &Pools,
    user: &Username,
) -> Result<Vec<RoomName>, StorageError> {
    use diesel_async::RunQueryDsl;
    let user = user.as_str();
    with_connection!(pools, |conn| {
        let rooms: Vec<String> = rooms_of_member(user).load(conn).await?;
        rooms
            .into_iter()
            .map(|r| {
                RoomName::parse(&r).map_err(|e| StorageError::Corrupt {
                    what: format!("member room {r:?}"),
                    detail: e.to_string(),
                })
            })
            .collect()
    })
}
