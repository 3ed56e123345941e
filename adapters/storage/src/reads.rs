//! Reads (history, rooms, readiness), migrations and query plans.
//!
//! Each query is built once by a backend-neutral function and run on either backend through
//! [`with_connection!`], so the EXPLAIN checks look at exactly the queries that serve reads.

use banter_domain::{HistoryPage, HistoryQuery, PageLimit, RoomName, Seq, StoredRoomsPage};
use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel_async::RunQueryDsl;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::StorageError;
use crate::pool::{Pools, with_connection};
use crate::rows::{MessageRow, RoomRow};
use crate::schema::{messages, rooms};
use crate::statements;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Postgres advisory lock key serialising migrations of several starting processes.
const MIGRATION_LOCK: i64 = 0x6261_6e74_6572; // "banter"

#[diesel::dsl::auto_type]
fn newest_first<'a>(room: &'a str, limit: i64) -> _ {
    messages::table
        .filter(messages::room.eq(room))
        .order(messages::seq.desc())
        .limit(limit)
}

#[diesel::dsl::auto_type]
fn newest_before<'a>(room: &'a str, before: i64, limit: i64) -> _ {
    messages::table
        .filter(messages::room.eq(room))
        .filter(messages::seq.lt(before))
        .order(messages::seq.desc())
        .limit(limit)
}

#[diesel::dsl::auto_type]
fn oldest_after<'a>(room: &'a str, after: i64, limit: i64) -> _ {
    messages::table
        .filter(messages::room.eq(room))
        .filter(messages::seq.gt(after))
        .order(messages::seq.asc())
        .limit(limit)
}

#[diesel::dsl::auto_type]
fn room_last_seq<'a>(room: &'a str) -> _ {
    rooms::table
        .filter(rooms::name.eq(room))
        .select(rooms::last_seq)
}

#[diesel::dsl::auto_type]
fn rooms_after<'a>(after: &'a str, limit: i64) -> _ {
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

pub(crate) async fn migrate(pools: &Pools) -> Result<Vec<String>, StorageError> {
    let failed = |e: &dyn std::fmt::Display| StorageError::Migration(e.to_string());
    match pools {
        Pools::Sqlite(pool) => {
            let mut pooled = pool.get().await?;
            pooled
                .spawn_blocking(|conn| {
                    let applied = conn
                        .run_pending_migrations(SQLITE_MIGRATIONS)
                        .map_err(diesel::result::Error::QueryBuilderError)?;
                    Ok(applied.iter().map(ToString::to_string).collect())
                })
                .await
                .map_err(|e| failed(&e))
        }
        Pools::Postgres(pool) => {
            let mut conn = pool.dedicated_connection().await.map_err(|e| failed(&e))?;
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .execute(&mut conn)
                .await?;
            // The harness blocks on the async connection; run it off the async workers.
            let runtime = tokio::runtime::Handle::current();
            let (result, mut conn) = tokio::task::spawn_blocking(move || {
                let _entered = runtime.enter();
                let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
                let result = harness
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|applied| applied.iter().map(ToString::to_string).collect::<Vec<_>>())
                    .map_err(|e| e.to_string());
                (result, harness.into_inner())
            })
            .await
            .map_err(|e| failed(&e))?;
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .execute(&mut conn)
                .await?;
            result.map_err(|e| failed(&e))
        }
    }
}

/// `EXPLAIN` (Postgres) or `EXPLAIN QUERY PLAN` (SQLite) in front of any query, keeping its
/// bind parameters.
#[derive(Debug, Clone)]
struct Explain<Q> {
    prefix: &'static str,
    query: Q,
}

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Explain<Q> {
    type SqlType = Untyped;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(self.prefix);
        self.query.walk_ast(out.reborrow())
    }
}

#[derive(Debug, QueryableByName)]
struct SqlitePlanLine {
    #[diesel(sql_type = diesel::sql_types::Text)]
    detail: String,
}

#[derive(Debug, QueryableByName)]
struct PostgresPlanLine {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    line: String,
}

/// A read query and the plan the database chose for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    pub query: &'static str,
    pub plan: Vec<String>,
}

macro_rules! explain_all {
    ($conn:ident, $lookup:expr, $prefix:expr, $line:ty, |$row:ident| $text:expr) => {{
        let mut plans = Vec::new();
        macro_rules! plan {
            ($name:expr, $query:expr) => {{
                let lines: Vec<$line> = Explain {
                    prefix: $prefix,
                    query: $query,
                }
                .load($conn)
                .await?;
                plans.push(QueryPlan {
                    query: $name,
                    plan: lines.into_iter().map(|$row| $text).collect(),
                });
            }};
        }
        plan!(
            "history latest",
            newest_first("general", 51).select(MessageRow::as_select())
        );
        plan!(
            "history before",
            newest_before("general", 100, 51).select(MessageRow::as_select())
        );
        plan!(
            "history after",
            oldest_after("general", 100, 51).select(MessageRow::as_select())
        );
        plan!("room last_seq", room_last_seq("general"));
        plan!(
            "rooms listing",
            rooms_after("general", 101).select(RoomRow::as_select())
        );
        plan!("client_id lookup", $lookup);
        Ok(plans)
    }};
}

/// Two keys, so the plan shows how a batch's lookup of several client ids is served.
const LOOKUP_KEYS: &[crate::batch::IdempotencyKey<'static>] =
    &[("general", "alice", "c-1"), ("general", "bob", "c-2")];

pub(crate) async fn explain(pools: &Pools) -> Result<Vec<QueryPlan>, StorageError> {
    match pools {
        Pools::Sqlite(pool) => {
            let mut pooled = pool.get().await?;
            let conn = &mut *pooled;
            explain_all!(
                conn,
                statements::sqlite::originals_query(LOOKUP_KEYS).select(MessageRow::as_select()),
                "EXPLAIN QUERY PLAN ",
                SqlitePlanLine,
                |row| row.detail
            )
        }
        Pools::Postgres(pool) => {
            // A dedicated connection: the planner setting below must not leak into the pool.
            let mut conn = pool
                .dedicated_connection()
                .await
                .map_err(|e| StorageError::Pool(e.to_string()))?;
            let conn = &mut conn;
            // Test tables are tiny, where a sequential scan is cheapest; what matters is that
            // an index *can* serve each query, as it will once the table is large.
            diesel::sql_query("SET enable_seqscan = off")
                .execute(conn)
                .await?;
            diesel::sql_query("SET enable_bitmapscan = off")
                .execute(conn)
                .await?;
            explain_all!(
                conn,
                statements::postgres::originals_query(LOOKUP_KEYS),
                "EXPLAIN ",
                PostgresPlanLine,
                |row| row.line
            )
        }
    }
}
