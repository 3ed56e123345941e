//! Query plans of the reads, so tests can check that an index serves each of them.
//!
//! The plans are taken of the very functions `crate::reads` runs (and of the batch's client id
//! lookup), through an `EXPLAIN` wrapper that keeps their bind parameters.

use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel_async::RunQueryDsl;

use crate::StorageError;
use crate::access::{members_of, privacy_of, rooms_of_member};
use crate::pool::Pools;
use crate::reading::{position_of, positions_of, room_by_name, rooms_posted_in, unread_of};
use crate::reads::{
    changed_after, newest_before, newest_first, oldest_after, revisions_after, room_last_seq,
    rooms_after,
};
use crate::rows::{MessageRow, RoomRow};
use crate::statements;

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

/// A line of SQLite's `EXPLAIN QUERY PLAN`.
#[derive(Debug, QueryableByName)]
pub(crate) struct SqlitePlanLine {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub detail: String,
}

/// A line of Postgres's `EXPLAIN`.
#[derive(Debug, QueryableByName)]
pub(crate) struct PostgresPlanLine {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    pub line: String,
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
        plan!(
            "changes by rev",
            changed_after("general", 7, i64::MAX, i64::MAX, 51)
                .select((crate::schema::messages::rev, MessageRow::as_select()))
        );
        plan!(
            "revisions after",
            revisions_after("general", 7, 201)
                .select((crate::schema::revisions::rev, MessageRow::as_select()))
        );
        plan!("read position", position_of("alice", "general"));
        plan!("user's read positions", positions_of("alice"));
        plan!("rooms a user posted in", rooms_posted_in("alice"));
        plan!(
            "room by name",
            room_by_name("general").select(RoomRow::as_select())
        );
        plan!("unread count", unread_of("general", 7, "alice", 1000));
        plan!("room privacy", privacy_of("general"));
        plan!("room members", members_of("general"));
        plan!("member's rooms", rooms_of_member("alice"));
        Ok(plans)
    }};
}

/// Two keys, so the plan shows how a batch's lookup of several client ids is served.
const LOOKUP_KEYS: &[crate::batch::IdempotencyKey<'static>] =
    &[("general", "alice", "c-1"), ("general", "bob", "c-2")];

pub(crate) async fn explain(pools: &Pools) -> Result<Vec<QueryPlan>, StorageError> {
    let mut plans = explain_reads(pools).await?;
    plans.extend(crate::search::explain(pools).await?);
    Ok(plans)
}

async fn explain_reads(pools: &Pools) -> Result<Vec<QueryPlan>, StorageError> {
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
