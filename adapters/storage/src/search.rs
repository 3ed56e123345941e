//! Search: the index, kept off the posting path, and the reads that use it.
//!
//! A post's transaction never touches the index: an indexer (one background task per process,
//! [`index_pending`]) takes each room's messages in seq order, in batches, and records how far
//! it got in `search_progress`. A search reads the index up to there and scans the room's tail
//! after it directly (short: the indexer runs every few hundred milliseconds), so it finds
//! everything committed. Edits and deletes update an indexed message's entry inside their own
//! transaction ([`reindex_sqlite`], [`reindex_postgres`]); a message not indexed yet is taken
//! in its current state when its turn comes.
//!
//! Both backends index the words of [`banter_domain::index_words`] (the contract's rules), not
//! their own tokenizer's, and every candidate is confirmed by
//! [`banter_domain::SearchQuery::matches`], which also yields the highlights:
//! - SQLite: FTS5 with the `ascii` tokenizer over those words joined by spaces, rowids in
//!   commit order (`search_docs`), so "newest first" walks the index down and stops early.
//! - Postgres: a `tsvector` built from them (a GIN index), next to `created_at_ms` and the
//!   primary key for "newest first" when a word is common.

use std::collections::{BTreeMap, HashSet};

use banter_domain::{
    INDEXED_WORD_MAX_CHARS, Message, PageLimit, RoomName, SearchHit, SearchPage, SearchQuery,
    SearchScope, Term, hit, index_words,
};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::RunQueryDsl;

use crate::StorageError;
use crate::explain::{PostgresPlanLine, QueryPlan, SqlitePlanLine};
use crate::pool::{Dedicated, Pools, with_connection};
use crate::rows::MessageRow;
use crate::schema::{messages, rooms, search_progress};

/// Most messages one indexing transaction takes.
pub(crate) const INDEX_BATCH: usize = 2000;

/// Rows per INSERT statement of the SQLite indexer (3 parameters each, under SQLite's 32,766).
const INSERT_ROWS: usize = 1000;

/// Rows of the tail read at a time.
const TAIL_PAGE: i64 = 500;

#[derive(Debug, QueryableByName)]
struct Pending {
    #[diesel(sql_type = Text)]
    room: String,
    #[diesel(sql_type = BigInt)]
    indexed_seq: i64,
}

#[derive(Debug, QueryableByName)]
struct Candidate {
    #[diesel(sql_type = Text)]
    room: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

#[derive(Debug, QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Rooms with messages the index does not have yet, and how far it has each.
const PENDING: &str = "SELECT r.name AS room, COALESCE(p.indexed_seq, 0) AS indexed_seq \
     FROM rooms r LEFT JOIN search_progress p ON p.room = r.name \
     WHERE r.last_seq > COALESCE(p.indexed_seq, 0)";

const SQLITE_ROOM_BOUND: &str =
    "SELECT id FROM search_docs WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT 1";
// CROSS JOIN keeps the index as the outer loop, so its rowid order serves ORDER BY.
const SQLITE_ROOM_HITS: &str = "SELECT d.room AS room, d.seq AS seq \
     FROM search_index CROSS JOIN search_docs AS d ON d.id = search_index.rowid \
     WHERE search_index MATCH ?1 AND search_index.rowid <= ?2 \
     ORDER BY search_index.rowid DESC LIMIT ?3";
const SQLITE_READABLE_HITS: &str = "SELECT d.room AS room, d.seq AS seq \
     FROM search_index CROSS JOIN search_docs AS d ON d.id = search_index.rowid \
     WHERE search_index MATCH ?1 AND d.room NOT IN (SELECT value FROM json_each(?2)) \
     ORDER BY search_index.rowid DESC LIMIT ?3";
const POSTGRES_ROOM_HITS: &str = "SELECT room, seq FROM search_docs \
     WHERE room = $1 AND seq < $2 AND words @@ $3::tsquery ORDER BY seq DESC LIMIT $4";
const POSTGRES_READABLE_HITS: &str = "SELECT room, seq FROM search_docs \
     WHERE words @@ $1::tsquery AND room <> ALL($2) ORDER BY created_at_ms DESC LIMIT $3";
// (A phrase of two common words that seldom stand together is Postgres's slow case: GIN keeps
// no positions, so adjacency is checked row by row, whichever way the planner goes. FTS5 keeps
// positions in its index. docs/performance.md has the figures.)

/// Words as the index keeps them: no query word is longer (see [`INDEXED_WORD_MAX_CHARS`]).
fn cut(word: &str) -> String {
    word.chars().take(INDEXED_WORD_MAX_CHARS).collect()
}

fn hex(room: &str) -> String {
    room.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The FTS5 query for `query`, narrowed to `room`. Words hold letters and digits only, so
/// quoting them needs no escaping.
fn fts5_query(room: Option<&str>, query: &SearchQuery) -> String {
    let mut parts: Vec<String> = room
        .map(|room| format!("room : \"{}\"", hex(room)))
        .into_iter()
        .collect();
    parts.extend(query.terms().iter().map(|term| match term {
        Term::Word(w) => format!("words : \"{}\"", cut(w)),
        Term::Prefix(p) => format!("words : \"{}\" *", cut(p)),
        Term::Phrase(ws) => {
            let ws: Vec<String> = ws.iter().map(|w| cut(w)).collect();
            format!("words : \"{}\"", ws.join(" "))
        }
    }));
    parts.join(" AND ")
}

/// A tsquery or tsvector lexeme, quoted.
fn lexeme(word: &str) -> String {
    format!("'{}'", cut(word).replace('\\', "\\\\").replace('\'', "''"))
}

/// Marks a tsvector that could not keep every position of some word (Postgres keeps 256 per
/// word): a phrase may then stand where the index cannot see it, so such messages (rare: a
/// word said 256 times in one message) are asked for apart ([`tsquery_positions_dropped`])
/// and the confirmation decides. It holds a space, so it is never a word.
const POSITIONS_DROPPED: &str = "~ positions dropped";

fn tsquery(query: &SearchQuery) -> String {
    tsquery_joining_phrases(query, " <-> ")
}

/// For a query with a phrase: the messages that hold its words but whose tsvector dropped
/// positions, where the phrase may stand unseen. A separate statement on purpose: the marker's
/// GIN list is short, and an OR inside the main query changed its plans for the worse (the
/// phrase across rooms went from 120 to 536 ms p99 at a million messages).
fn tsquery_positions_dropped(query: &SearchQuery) -> Option<String> {
    let phrase = query.terms().iter().any(|t| matches!(t, Term::Phrase(_)));
    phrase.then(|| {
        format!(
            "{} & {}",
            tsquery_joining_phrases(query, " & "),
            lexeme(POSITIONS_DROPPED)
        )
    })
}

/// The tsquery of `query`, a phrase's words joined by `phrase_join` (`<->`: adjacent).
fn tsquery_joining_phrases(query: &SearchQuery, phrase_join: &str) -> String {
    let parts: Vec<String> = query
        .terms()
        .iter()
        .map(|term| match term {
            Term::Word(w) => lexeme(w),
            Term::Prefix(p) => format!("{}:*", lexeme(p)),
            Term::Phrase(ws) => {
                let ws: Vec<String> = ws.iter().map(|w| lexeme(w)).collect();
                format!("( {} )", ws.join(phrase_join))
            }
        })
        .collect();
    parts.join(" & ")
}

/// The tsvector of `content`: each word with its positions (Postgres keeps positions up to
/// 16383 and 256 of them per word).
fn tsvector(content: &str) -> String {
    let mut positions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut dropped = false;
    for (at, word) in index_words(content).into_iter().enumerate() {
        let list = positions.entry(word).or_default();
        if list.len() < 256 {
            list.push((at + 1).min(16383));
        } else {
            dropped = true;
        }
    }
    if dropped {
        positions.insert(POSITIONS_DROPPED.to_owned(), vec![1]);
    }
    let mut out = String::new();
    for (word, list) in positions {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&lexeme(&word));
        out.push(':');
        let list: Vec<String> = list.iter().map(usize::to_string).collect();
        out.push_str(&list.join(","));
    }
    out
}

fn fts5_words(content: &str) -> String {
    index_words(content).join(" ")
}

fn limit_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Answers a search.
pub(crate) async fn search(
    pools: &Pools,
    scope: &SearchScope,
    query: &SearchQuery,
    limit: PageLimit,
) -> Result<SearchPage, StorageError> {
    // One more than the page says whether more exist.
    let wanted = limit.get() + 1;
    let mut hits = match scope {
        SearchScope::Room { room, before } => {
            let before = before.map_or(i64::MAX, banter_domain::Seq::as_i64);
            search_room(pools, room.as_str(), before, query, wanted).await?
        }
        SearchScope::Readable { member_of } => {
            search_readable(pools, member_of, query, wanted).await?
        }
    };
    let has_more = hits.len() > limit.get();
    hits.truncate(limit.get());
    Ok(SearchPage { hits, has_more })
}

async fn search_room(
    pools: &Pools,
    room: &str,
    before: i64,
    query: &SearchQuery,
    wanted: usize,
) -> Result<Vec<SearchHit>, StorageError> {
    let indexed = indexed_seq(pools, room).await?;
    // The tail first: it is newer than anything indexed.
    let mut hits = tail(pools, room, indexed, before, query, wanted).await?;
    // Entries past `indexed` may have been added since it was read: the tail had them.
    let mut below = before.min(indexed.saturating_add(1));
    while hits.len() < wanted {
        let asked = wanted - hits.len();
        let candidates = room_candidates(pools, room, below, query, asked).await?;
        let Some(lowest) = candidates.last().map(|c| c.seq) else {
            break;
        };
        let full = candidates.len() == asked;
        // A candidate edited or deleted since it was indexed drops out here: ask again below
        // the lowest one, so a page is not short and `has_more` stays true.
        for found in confirm(pools, candidates, query).await? {
            if hits.iter().all(|h| h.message.seq != found.message.seq) {
                hits.push(found);
            }
        }
        if !full {
            break;
        }
        below = lowest;
    }
    hits.truncate(wanted);
    Ok(hits)
}

/// The private rooms of the store that are not in `member_of`.
async fn hidden_rooms(pools: &Pools, member_of: &[RoomName]) -> Result<Vec<String>, StorageError> {
    let private: Vec<String> = with_connection!(pools, |conn| {
        rooms::table
            .filter(rooms::private.eq(true))
            .select(rooms::name)
            .load(conn)
            .await
    })?;
    Ok(private
        .into_iter()
        .filter(|name| !member_of.iter().any(|m| m.as_str() == name))
        .collect())
}

async fn search_readable(
    pools: &Pools,
    member_of: &[RoomName],
    query: &SearchQuery,
    wanted: usize,
) -> Result<Vec<SearchHit>, StorageError> {
    let hidden = hidden_rooms(pools, member_of).await?;
    let pending: Vec<Pending> =
        with_connection!(pools, |conn| diesel::sql_query(PENDING).load(conn).await)?;
    let mut hits = Vec::new();
    for room in pending.iter().filter(|p| !hidden.contains(&p.room)) {
        hits.extend(tail(pools, &room.room, room.indexed_seq, i64::MAX, query, wanted).await?);
    }
    let candidates = readable_candidates(pools, &hidden, query, wanted).await?;
    let seen: HashSet<(String, u64)> = hits
        .iter()
        .map(|h: &SearchHit| (h.message.room.as_str().to_owned(), h.message.seq.get()))
        .collect();
    let candidates = candidates
        .into_iter()
        .filter(|c| !seen.contains(&(c.room.clone(), u64::try_from(c.seq).unwrap_or(0))))
        .collect();
    hits.extend(confirm(pools, candidates, query).await?);
    // A room created private (with its first messages) while this search ran was not in the
    // list read first: the list read again now has it. (A room is private from its first row.)
    let hidden = hidden_rooms(pools, member_of).await?;
    hits.retain(|h| !hidden.iter().any(|name| name == h.message.room.as_str()));
    hits.sort_by(SearchHit::newest_first);
    hits.truncate(wanted);
    Ok(hits)
}

async fn indexed_seq(pools: &Pools, room: &str) -> Result<i64, StorageError> {
    with_connection!(pools, |conn| {
        let indexed: Option<i64> = search_progress::table
            .filter(search_progress::room.eq(room))
            .select(search_progress::indexed_seq)
            .first(conn)
            .await
            .optional()?;
        Ok::<_, StorageError>(indexed.unwrap_or(0))
    })
}

/// Messages of `room` after `indexed` and before `before` that match, newest first, at most
/// `wanted`, read in pages.
async fn tail(
    pools: &Pools,
    room: &str,
    indexed: i64,
    mut before: i64,
    query: &SearchQuery,
    wanted: usize,
) -> Result<Vec<SearchHit>, StorageError> {
    let mut hits = Vec::new();
    loop {
        let rows: Vec<MessageRow> = with_connection!(pools, |conn| {
            messages::table
                .filter(messages::room.eq(room))
                .filter(messages::seq.gt(indexed))
                .filter(messages::seq.lt(before))
                .filter(messages::deleted.eq(false))
                .order(messages::seq.desc())
                .limit(TAIL_PAGE)
                .select(MessageRow::as_select())
                .load(conn)
                .await
        })?;
        let full = rows.len() == TAIL_PAGE as usize;
        for row in rows {
            before = row.seq;
            hits.extend(hit(query, row.into_message()?));
            if hits.len() >= wanted {
                return Ok(hits);
            }
        }
        if !full {
            return Ok(hits);
        }
    }
}

/// Candidates of the index in `room` with a seq below `below`, newest first.
async fn room_candidates(
    pools: &Pools,
    room: &str,
    below: i64,
    query: &SearchQuery,
    wanted: usize,
) -> Result<Vec<Candidate>, StorageError> {
    let limit = limit_i64(wanted);
    match pools {
        Pools::Sqlite(pool) => {
            let mut pooled = pool.get().await?;
            let conn = &mut *pooled;
            let bound: Option<Id> = diesel::sql_query(SQLITE_ROOM_BOUND)
                .bind::<Text, _>(room)
                .bind::<BigInt, _>(below)
                .get_result(conn)
                .await
                .optional()?;
            let Some(bound) = bound else {
                return Ok(Vec::new());
            };
            Ok(diesel::sql_query(SQLITE_ROOM_HITS)
                .bind::<Text, _>(fts5_query(Some(room), query))
                .bind::<BigInt, _>(bound.id)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await?)
        }
        Pools::Postgres(pool) => {
            let mut pooled = pool.get().await?;
            let conn = &mut *pooled;
            let hits = async |conn: &mut diesel_async::AsyncPgConnection, tsquery: String| {
                diesel::sql_query(POSTGRES_ROOM_HITS)
                    .bind::<Text, _>(room)
                    .bind::<BigInt, _>(below)
                    .bind::<Text, _>(tsquery)
                    .bind::<BigInt, _>(limit)
                    .load::<Candidate>(conn)
                    .await
            };
            let mut candidates = hits(conn, tsquery(query)).await?;
            if let Some(dropped) = tsquery_positions_dropped(query) {
                candidates.extend(hits(conn, dropped).await?);
                candidates.sort_by_key(|c| std::cmp::Reverse(c.seq));
                candidates.dedup_by(|a, b| a.seq == b.seq);
                candidates.truncate(wanted);
            }
            Ok(candidates)
        }
    }
}

/// Candidates of the index outside the `hidden` rooms, newest first.
async fn readable_candidates(
    pools: &Pools,
    hidden: &[String],
    query: &SearchQuery,
    wanted: usize,
) -> Result<Vec<Candidate>, StorageError> {
    let limit = limit_i64(wanted);
    match pools {
        Pools::Sqlite(pool) => {
            let mut pooled = pool.get().await?;
            let hidden = format!(
                "[{}]",
                hidden
                    .iter()
                    .map(|name| format!("\"{name}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            Ok(diesel::sql_query(SQLITE_READABLE_HITS)
                .bind::<Text, _>(fts5_query(None, query))
                .bind::<Text, _>(hidden)
                .bind::<BigInt, _>(limit)
                .load(&mut *pooled)
                .await?)
        }
        Pools::Postgres(pool) => {
            let mut pooled = pool.get().await?;
            let conn = &mut *pooled;
            let hits = async |conn: &mut diesel_async::AsyncPgConnection, tsquery: String| {
                diesel::sql_query(POSTGRES_READABLE_HITS)
                    .bind::<Text, _>(tsquery)
                    .bind::<Array<Text>, _>(hidden)
                    .bind::<BigInt, _>(limit)
                    .load::<Candidate>(conn)
                    .await
            };
            let mut candidates = hits(conn, tsquery(query)).await?;
            // Ordered by time with the rest by the caller, after confirmation.
            if let Some(dropped) = tsquery_positions_dropped(query) {
                for c in hits(conn, dropped).await? {
                    if !candidates
                        .iter()
                        .any(|k| k.room == c.room && k.seq == c.seq)
                    {
                        candidates.push(c);
                    }
                }
            }
            Ok(candidates)
        }
    }
}

/// The candidates' messages in their current state, confirmed by the query, in the
/// candidates' order. A candidate deleted or edited away meanwhile drops out.
async fn confirm(
    pools: &Pools,
    candidates: Vec<Candidate>,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>, StorageError> {
    let mut by_room: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in &candidates {
        by_room.entry(c.room.clone()).or_default().push(c.seq);
    }
    let mut found: BTreeMap<(String, i64), Message> = BTreeMap::new();
    for (room, seqs) in by_room {
        let rows: Vec<MessageRow> = with_connection!(pools, |conn| {
            messages::table
                .filter(messages::room.eq(&room))
                .filter(messages::seq.eq_any(&seqs))
                .select(MessageRow::as_select())
                .load(conn)
                .await
        })?;
        for row in rows {
            let key = (row.room.clone(), row.seq);
            found.insert(key, row.into_message()?);
        }
    }
    Ok(candidates
        .into_iter()
        .filter_map(|c| found.remove(&(c.room, c.seq)))
        .filter_map(|message| hit(query, message))
        .collect())
}

/// What one indexing step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Indexed {
    /// Messages taken (deleted ones included: they are skipped, not indexed).
    pub taken: usize,
    /// Nothing was left waiting when the step began.
    pub caught_up: bool,
}

/// One indexing step: takes up to [`INDEX_BATCH`] messages not indexed yet and indexes them.
pub(crate) async fn index_pending(connection: &mut Dedicated) -> Result<Indexed, StorageError> {
    match connection {
        Dedicated::Sqlite(conn) => Ok(conn
            .spawn_blocking(|conn| conn.immediate_transaction(index_sqlite))
            .await?),
        Dedicated::Postgres(conn) => {
            let conn = &mut **conn;
            let pending: Vec<Pending> = diesel::sql_query(PENDING).load(conn).await?;
            let mut taken = 0;
            for room in pending {
                if taken >= INDEX_BATCH {
                    break;
                }
                taken += index_postgres_room(conn, &room.room, INDEX_BATCH - taken).await?;
            }
            Ok(Indexed {
                taken,
                caught_up: taken < INDEX_BATCH,
            })
        }
    }
}

/// Postgres: one room, in a transaction holding the room's progress row, so indexers of other
/// processes skip it and an edit waits for it (see [`reindex_postgres`]).
async fn index_postgres_room(
    conn: &mut diesel_async::AsyncPgConnection,
    room: &str,
    most: usize,
) -> Result<usize, StorageError> {
    use diesel_async::AsyncConnection;
    let taken = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::sql_query(
                "INSERT INTO search_progress (room, indexed_seq) VALUES ($1, 0) \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(room)
            .execute(conn)
            .await?;
            let indexed: Option<i64> = search_progress::table
                .filter(search_progress::room.eq(room))
                .select(search_progress::indexed_seq)
                .for_update()
                .skip_locked()
                .first(conn)
                .await
                .optional()?;
            let Some(indexed) = indexed else {
                return Ok(0);
            };
            let rows: Vec<MessageRow> = messages::table
                .filter(messages::room.eq(room))
                .filter(messages::seq.gt(indexed))
                .order(messages::seq.asc())
                .limit(limit_i64(most))
                .select(MessageRow::as_select())
                .load(conn)
                .await?;
            let Some(reached) = rows.last().map(|row| row.seq) else {
                return Ok(0);
            };
            let live: Vec<&MessageRow> = rows.iter().filter(|row| !row.deleted).collect();
            diesel::sql_query(
                "INSERT INTO search_docs (room, seq, created_at_ms, words) \
                 SELECT $1, s, t, w::tsvector FROM unnest($2::bigint[], $3::bigint[], $4::text[]) \
                 AS u(s, t, w) ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(room)
            .bind::<Array<BigInt>, _>(live.iter().map(|row| row.seq).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(live.iter().map(|row| row.created_at_ms).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(
                live.iter()
                    .map(|row| tsvector(&row.content))
                    .collect::<Vec<_>>(),
            )
            .execute(conn)
            .await?;
            diesel::update(search_progress::table.filter(search_progress::room.eq(room)))
                .set(search_progress::indexed_seq.eq(reached))
                .execute(conn)
                .await?;
            Ok(rows.len())
        })
        .await?;
    Ok(taken)
}

/// Inside an edit's or delete's Postgres transaction: as [`reindex_sqlite`]. It first takes
/// the room's progress row in share mode, so an indexer that read the message before this
/// change committed has finished (and this update sees its entry), or starts after it.
pub(crate) async fn reindex_postgres(
    conn: &mut diesel_async::AsyncPgConnection,
    room: &str,
    seq: i64,
    message: &Message,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO search_progress (room, indexed_seq) VALUES ($1, 0) ON CONFLICT DO NOTHING",
    )
    .bind::<Text, _>(room)
    .execute(conn)
    .await?;
    search_progress::table
        .filter(search_progress::room.eq(room))
        .select(search_progress::indexed_seq)
        .for_share()
        .first::<i64>(conn)
        .await?;
    match &message.content {
        Some(content) => {
            diesel::sql_query(
                "UPDATE search_docs SET words = $3::tsvector WHERE room = $1 AND seq = $2",
            )
            .bind::<Text, _>(room)
            .bind::<BigInt, _>(seq)
            .bind::<Text, _>(tsvector(content.as_str()))
            .execute(conn)
            .await?;
        }
        None => {
            diesel::sql_query("DELETE FROM search_docs WHERE room = $1 AND seq = $2")
                .bind::<Text, _>(room)
                .bind::<BigInt, _>(seq)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// The SQLite side, run on the connection's blocking thread with diesel's sync API.
mod blocking {
    use std::collections::BTreeMap;

    use banter_domain::Message;
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};

    use super::{
        INDEX_BATCH, INSERT_ROWS, Id, Indexed, PENDING, Pending, fts5_words, hex, limit_i64,
    };
    use crate::rows::MessageRow;
    use crate::schema::{messages, search_progress};

    /// SQLite: the oldest pending messages of every room, by commit time, so rowids follow it.
    pub(crate) fn index_sqlite(conn: &mut diesel::SqliteConnection) -> QueryResult<Indexed> {
        let pending: Vec<Pending> = diesel::sql_query(PENDING).load(conn)?;
        // A share of the batch from each room; a room with more waiting bounds the batch by
        // its last row's time, so rooms left behind have nothing older than what is taken
        // (rowids keep following time across batches; equal times may go either way).
        let share = (INDEX_BATCH / pending.len().max(1)).max(64);
        // Each row's time is the latest commit time of its room up to it, so times never go
        // back within a room (a wall clock stepping back would otherwise cut a room's run).
        let mut rows: Vec<(i64, MessageRow)> = Vec::new();
        let mut until = i64::MAX;
        for room in &pending {
            let some: Vec<MessageRow> = messages::table
                .filter(messages::room.eq(&room.room))
                .filter(messages::seq.gt(room.indexed_seq))
                .order(messages::seq.asc())
                .limit(limit_i64(share))
                .select(MessageRow::as_select())
                .load(conn)?;
            let full = some.len() == share;
            let mut time = i64::MIN;
            for row in some {
                time = time.max(row.created_at_ms);
                rows.push((time, row));
            }
            if full {
                until = until.min(time);
            }
        }
        let loaded = rows.len();
        rows.retain(|(time, _)| *time <= until);
        rows.sort_by(|(ta, a), (tb, b)| (ta, &a.room, a.seq).cmp(&(tb, &b.room, b.seq)));
        rows.truncate(INDEX_BATCH);
        let rows: Vec<MessageRow> = rows.into_iter().map(|(_, row)| row).collect();
        let mut caught_up = until == i64::MAX && rows.len() == loaded;
        // Each room's progress moves over a gapless run of its seqs only (a clock stepping back
        // could otherwise leave a hole behind it).
        let mut next: BTreeMap<String, i64> = pending
            .iter()
            .map(|p| (p.room.clone(), p.indexed_seq + 1))
            .collect();
        let mut taken = 0;
        let mut live: Vec<&MessageRow> = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(expected) = next.get_mut(&row.room) else {
                continue;
            };
            if row.seq != *expected {
                caught_up = false;
                continue;
            }
            *expected += 1;
            taken += 1;
            if !row.deleted {
                live.push(row);
            }
        }
        // One statement per table for the whole batch, ids given here (this transaction is
        // the only writer): FTS5 flushes its pending terms to disk at every statement's
        // savepoint, so a row at a time (interleaved with `search_docs`) made a segment per
        // message and spent most of its time merging them.
        // AUTOINCREMENT's counter, not MAX(id): an id freed by a delete is never given again,
        // so a search's bound read before the delete cannot reach a newer message.
        let base: Id = diesel::sql_query(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'search_docs'), 0) AS id",
        )
        .get_result(conn)?;
        for (chunk_no, chunk) in live.chunks(INSERT_ROWS).enumerate() {
            let first = base.id + 1 + (chunk_no * INSERT_ROWS) as i64;
            let ids = first..first + chunk.len() as i64;
            let mut docs = diesel::sql_query(format!(
                "INSERT INTO search_docs (id, room, seq) VALUES {}",
                vec!["(?, ?, ?)"; chunk.len()].join(", ")
            ))
            .into_boxed::<diesel::sqlite::Sqlite>();
            let mut index = diesel::sql_query(format!(
                "INSERT INTO search_index (rowid, room, words) VALUES {}",
                vec!["(?, ?, ?)"; chunk.len()].join(", ")
            ))
            .into_boxed::<diesel::sqlite::Sqlite>();
            for (id, row) in ids.zip(chunk) {
                docs = docs
                    .bind::<BigInt, _>(id)
                    .bind::<Text, _>(row.room.clone())
                    .bind::<BigInt, _>(row.seq);
                index = index
                    .bind::<BigInt, _>(id)
                    .bind::<Text, _>(hex(&row.room))
                    .bind::<Text, _>(fts5_words(&row.content));
            }
            docs.execute(conn)?;
            index.execute(conn)?;
        }
        for room in &pending {
            let Some(reached) = next.get(&room.room).map(|next| next - 1) else {
                continue;
            };
            if reached > room.indexed_seq {
                diesel::insert_into(search_progress::table)
                    .values((
                        search_progress::room.eq(&room.room),
                        search_progress::indexed_seq.eq(reached),
                    ))
                    .on_conflict(search_progress::room)
                    .do_update()
                    .set(search_progress::indexed_seq.eq(reached))
                    .execute(conn)?;
            }
        }
        Ok(Indexed { taken, caught_up })
    }

    /// Inside an edit's or delete's SQLite transaction: brings the message's index entry, if it
    /// has one yet, to its new state.
    pub(crate) fn reindex_sqlite(
        conn: &mut diesel::SqliteConnection,
        room: &str,
        seq: i64,
        message: &Message,
    ) -> QueryResult<()> {
        let id: Option<Id> =
            diesel::sql_query("SELECT id FROM search_docs WHERE room = ?1 AND seq = ?2")
                .bind::<Text, _>(room)
                .bind::<BigInt, _>(seq)
                .get_result(conn)
                .optional()?;
        let Some(Id { id }) = id else {
            return Ok(());
        };
        match &message.content {
            Some(content) => {
                diesel::sql_query("UPDATE search_index SET words = ?1 WHERE rowid = ?2")
                    .bind::<Text, _>(fts5_words(content.as_str()))
                    .bind::<BigInt, _>(id)
                    .execute(conn)?;
            }
            None => {
                diesel::sql_query("DELETE FROM search_index WHERE rowid = ?1")
                    .bind::<BigInt, _>(id)
                    .execute(conn)?;
                diesel::sql_query("DELETE FROM search_docs WHERE id = ?1")
                    .bind::<BigInt, _>(id)
                    .execute(conn)?;
            }
        }
        Ok(())
    }
}

use blocking::index_sqlite;
pub(crate) use blocking::reindex_sqlite;

/// The plans of the search queries, as [`crate::explain`] gives those of the other reads.
pub(crate) async fn explain(pools: &Pools) -> Result<Vec<QueryPlan>, StorageError> {
    let query = SearchQuery::parse("hello \"big world\" wor")
        .map_err(|e| StorageError::Commit(e.to_string()))?;
    let mut plans = Vec::new();
    match pools {
        Pools::Sqlite(pool) => {
            let mut pooled = pool.get().await?;
            let conn = &mut *pooled;
            let bound: Vec<SqlitePlanLine> =
                diesel::sql_query(format!("EXPLAIN QUERY PLAN {SQLITE_ROOM_BOUND}"))
                    .bind::<Text, _>("general")
                    .bind::<BigInt, _>(100)
                    .load(conn)
                    .await?;
            let room: Vec<SqlitePlanLine> =
                diesel::sql_query(format!("EXPLAIN QUERY PLAN {SQLITE_ROOM_HITS}"))
                    .bind::<Text, _>(fts5_query(Some("general"), &query))
                    .bind::<BigInt, _>(100)
                    .bind::<BigInt, _>(21)
                    .load(conn)
                    .await?;
            let readable: Vec<SqlitePlanLine> =
                diesel::sql_query(format!("EXPLAIN QUERY PLAN {SQLITE_READABLE_HITS}"))
                    .bind::<Text, _>(fts5_query(None, &query))
                    .bind::<Text, _>("[\"team\"]")
                    .bind::<BigInt, _>(21)
                    .load(conn)
                    .await?;
            for (name, lines) in [
                ("search: a room's bound", bound),
                ("search: a room", room),
                ("search: readable rooms", readable),
            ] {
                plans.push(QueryPlan {
                    query: name,
                    plan: lines.into_iter().map(|l| l.detail).collect(),
                });
            }
        }
        Pools::Postgres(pool) => {
            let mut conn = pool
                .dedicated_connection()
                .await
                .map_err(|e| StorageError::Pool(e.to_string()))?;
            let conn = &mut conn;
            // Tiny test tables make a sequential scan cheapest; ask whether an index can serve.
            diesel::sql_query("SET enable_seqscan = off")
                .execute(conn)
                .await?;
            let room: Vec<PostgresPlanLine> =
                diesel::sql_query(format!("EXPLAIN {POSTGRES_ROOM_HITS}"))
                    .bind::<Text, _>("general")
                    .bind::<BigInt, _>(100)
                    .bind::<Text, _>(tsquery(&query))
                    .bind::<BigInt, _>(21)
                    .load(conn)
                    .await?;
            plans.push(QueryPlan {
                query: "search: a room",
                plan: room.into_iter().map(|l| l.line).collect(),
            });
            let readable: Vec<PostgresPlanLine> =
                diesel::sql_query(format!("EXPLAIN {POSTGRES_READABLE_HITS}"))
                    .bind::<Text, _>(tsquery(&query))
                    .bind::<Array<Text>, _>(vec!["team".to_owned()])
                    .bind::<BigInt, _>(21)
                    .load(conn)
                    .await?;
            plans.push(QueryPlan {
                query: "search: readable rooms",
                plan: readable.into_iter().map(|l| l.line).collect(),
            });
        }
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> SearchQuery {
        SearchQuery::parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"))
    }

    #[test]
    fn fts5_queries_narrow_to_the_room_and_quote_every_term() {
        assert_eq!(
            fts5_query(Some("ab"), &query("Hello \"big world\" wor")),
            "room : \"6162\" AND words : \"big world\" AND words : \"hello\" AND words : \"wor\" *"
        );
    }

    #[test]
    fn tsqueries_and_tsvectors_use_banters_words() {
        assert_eq!(
            tsquery(&query("Hello \"big world\" wor")),
            "( 'big' <-> 'world' ) & 'hello' & 'wor':*"
        );
        assert_eq!(tsvector("Big big, WORLD"), "'big':1,2 'world':3");
        assert_eq!(tsvector("!!"), "");
        let many = format!("{}b a", "a ".repeat(300));
        assert!(
            tsvector(&many).contains("'~ positions dropped':1"),
            "a word past 256 positions"
        );
    }
}
