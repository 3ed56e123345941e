//! Group commit: many posts, one transaction.
//!
//! The writer task gathers concurrent posts into a [`Batch`]. One transaction then
//! 1. finds the originals of resent client ids already in the database,
//! 2. bumps each touched room's `last_seq` by its count of new messages (an upsert that takes
//!    the room's row lock on Postgres, in room-name order so two writers cannot deadlock),
//! 3. inserts the new rows with the seqs that range gave them.
//!
//! [`Plan`] is the pure part — which post is new, a duplicate of a stored message, or a
//! duplicate of an earlier post in the same batch — and is unit-tested here. The flow is written
//! once in [`commit_batch_body!`] and expanded for each backend; only its three statements are
//! backend-specific (`crate::statements`).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use banter_domain::NewMessage;

use crate::rows::MessageRow;

/// Posts committed together, in arrival order.
#[derive(Debug)]
pub(crate) struct Batch {
    posts: Vec<NewMessage>,
    /// For a post whose (room, username, client id) an earlier post of this batch already
    /// carries: the index of that earlier post.
    earlier_twin: Vec<Option<usize>>,
}

/// The outcome of one post of a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowOutcome {
    Stored(MessageRow),
    Duplicate(MessageRow),
}

pub(crate) type IdempotencyKey<'a> = (&'a str, &'a str, &'a str);

fn key(post: &NewMessage) -> Option<IdempotencyKey<'_>> {
    post.client_id
        .as_ref()
        .map(|id| (post.room.as_str(), post.username.as_str(), id.as_str()))
}

impl Batch {
    pub fn new(posts: Vec<NewMessage>) -> Self {
        let mut first_with: HashMap<IdempotencyKey<'_>, usize> = HashMap::new();
        let earlier_twin = posts
            .iter()
            .enumerate()
            .map(|(i, post)| match first_with.entry(key(post)?) {
                Entry::Occupied(first) => Some(*first.get()),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                    None
                }
            })
            .collect();
        Self {
            posts,
            earlier_twin,
        }
    }

    /// The (room, username, client id) keys to look up: posts with a client id that are not
    /// in-batch repeats.
    pub fn client_id_lookups(&self) -> Vec<IdempotencyKey<'_>> {
        self.posts
            .iter()
            .zip(&self.earlier_twin)
            .filter(|(_, twin)| twin.is_none())
            .filter_map(|(post, _)| key(post))
            .collect()
    }

    /// Decides each post's fate given the stored originals found by the lookups.
    pub fn plan(&self, originals: Vec<MessageRow>) -> Plan<'_> {
        // Keyed by borrowed strings: a post looks itself up without allocating.
        let found: HashMap<IdempotencyKey<'_>, &MessageRow> = originals
            .iter()
            .filter_map(|row| {
                let id = row.client_id.as_deref()?;
                Some(((row.room.as_str(), row.username.as_str(), id), row))
            })
            .collect();
        let mut fates = Vec::with_capacity(self.posts.len());
        let mut new_per_room: BTreeMap<&str, i64> = BTreeMap::new();
        for (post, twin) in self.posts.iter().zip(&self.earlier_twin) {
            let fate = if let Some(first) = twin {
                Fate::SameAs(*first)
            } else if let Some(original) = key(post).and_then(|k| found.get(&k)) {
                Fate::Original((*original).clone())
            } else {
                *new_per_room.entry(post.room.as_str()).or_default() += 1;
                Fate::New
            };
            fates.push(fate);
        }
        Plan {
            batch: self,
            fates,
            new_per_room,
            next_seq: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
enum Fate {
    New,
    Original(MessageRow),
    SameAs(usize),
}

/// One attempt at committing a batch.
#[derive(Debug)]
pub(crate) struct Plan<'b> {
    batch: &'b Batch,
    fates: Vec<Fate>,
    new_per_room: BTreeMap<&'b str, i64>,
    /// Per room, the seq the next new message gets.
    next_seq: BTreeMap<&'b str, i64>,
}

impl<'b> Plan<'b> {
    /// Rooms that get new messages, in name order (the lock order), with how many.
    pub fn new_per_room(&self) -> Vec<(&'b str, i64)> {
        self.new_per_room.iter().map(|(r, n)| (*r, *n)).collect()
    }

    /// Records the room's `last_seq` after it was bumped by its count of new messages.
    pub fn assign(&mut self, room: &str, last_seq_after: i64) {
        if let Some((room, count)) = self.new_per_room.get_key_value(room) {
            self.next_seq.insert(room, last_seq_after - count + 1);
        }
    }

    /// The rows to insert (in batch order, so seqs follow arrival order within a room) and
    /// every post's outcome.
    pub fn finish(mut self, created_at_ms: i64) -> (Vec<MessageRow>, Vec<RowOutcome>) {
        let mut rows = Vec::new();
        let mut outcomes: Vec<RowOutcome> = Vec::with_capacity(self.fates.len());
        for (post, fate) in self.batch.posts.iter().zip(std::mem::take(&mut self.fates)) {
            let outcome = match fate {
                Fate::New => {
                    let seq = self.next_seq.entry(post.room.as_str()).or_insert(1);
                    let row = MessageRow {
                        room: post.room.as_str().to_owned(),
                        seq: *seq,
                        username: post.username.as_str().to_owned(),
                        content: post.content.as_str().to_owned(),
                        created_at_ms,
                        client_id: post.client_id.as_ref().map(|c| c.as_str().to_owned()),
                        edited_at_ms: None,
                        deleted: false,
                    };
                    *seq += 1;
                    rows.push(row.clone());
                    RowOutcome::Stored(row)
                }
                Fate::Original(row) => RowOutcome::Duplicate(row),
                Fate::SameAs(first) => match outcomes.get(first) {
                    Some(RowOutcome::Stored(row) | RowOutcome::Duplicate(row)) => {
                        RowOutcome::Duplicate(row.clone())
                    }
                    // A twin always comes after its first post, whose outcome is known by now.
                    None => unreachable_twin(first),
                },
            };
            outcomes.push(outcome);
        }
        (rows, outcomes)
    }
}

#[cold]
fn unreachable_twin(first: usize) -> RowOutcome {
    // Batch::new only points a post at an earlier index; reaching this is a bug in this file.
    panic!("batch twin {first} has no outcome yet")
}

/// The body of one batch transaction, written once for both backends.
///
/// `$conn` is the connection (sync `SqliteConnection` or async `AsyncPgConnection`),
/// `$statements` the module with that backend's three statements (see `statements`), and
/// `[$($await:tt)*]` is `[.await]` or `[]`, so the same flow compiles against diesel's sync API
/// and diesel-async's async one. Evaluates to `Result<Vec<RowOutcome>, diesel::result::Error>`.
macro_rules! commit_batch_body {
    ($conn:ident, $statements:path, $batch:expr, $now_ms:expr, [$($await:tt)*]) => {{
        use $statements as statements;
        let batch: &$crate::batch::Batch = $batch;
        let now_ms: i64 = $now_ms;
        let lookups = batch.client_id_lookups();
        let originals = if lookups.is_empty() {
            Vec::new()
        } else {
            statements::find_originals($conn, &lookups) $($await)*?
        };
        let mut plan = batch.plan(originals);
        let counts = plan.new_per_room();
        if !counts.is_empty() {
            for (room, last_seq) in statements::bump_rooms($conn, &counts, now_ms) $($await)*? {
                plan.assign(&room, last_seq);
            }
        }
        let (rows, outcomes) = plan.finish(now_ms);
        if !rows.is_empty() {
            statements::insert_rows($conn, rows) $($await)*?;
        }
        Ok::<_, diesel::result::Error>(outcomes)
    }};
}
pub(crate) use commit_batch_body;

#[cfg(test)]
mod tests {
    use super::*;
    use banter_domain::{ClientId, Content, RoomName, Username};

    fn post(room: &str, user: &str, text: &str, client_id: Option<&str>) -> NewMessage {
        NewMessage {
            room: RoomName::parse(room).unwrap(),
            username: Username::parse(user).unwrap(),
            content: Content::parse(text).unwrap(),
            client_id: client_id.map(|c| ClientId::parse(c).unwrap()),
        }
    }

    fn stored(room: &str, seq: i64, user: &str, client_id: &str) -> MessageRow {
        MessageRow {
            room: room.into(),
            seq,
            username: user.into(),
            content: "original".into(),
            created_at_ms: 1,
            client_id: Some(client_id.into()),
            edited_at_ms: None,
            deleted: false,
        }
    }

    #[test]
    fn new_posts_get_consecutive_seqs_per_room_in_arrival_order() {
        let batch = Batch::new(vec![
            post("b", "alice", "b1", None),
            post("a", "alice", "a1", None),
            post("b", "bob", "b2", None),
        ]);
        assert!(batch.client_id_lookups().is_empty());
        let mut plan = batch.plan(vec![]);
        assert_eq!(
            plan.new_per_room(),
            vec![("a", 1), ("b", 2)],
            "lock order is by name"
        );
        plan.assign("a", 1);
        plan.assign("b", 12);
        let (rows, outcomes) = plan.finish(99);
        let seqs: Vec<(&str, i64)> = rows.iter().map(|r| (r.room.as_str(), r.seq)).collect();
        assert_eq!(seqs, [("b", 11), ("a", 1), ("b", 12)]);
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, RowOutcome::Stored(r) if r.created_at_ms == 99))
        );
    }

    #[test]
    fn a_stored_client_id_is_a_duplicate_and_takes_no_seq() {
        let batch = Batch::new(vec![
            post("a", "alice", "resend", Some("c1")),
            post("a", "alice", "fresh", Some("c2")),
            post("a", "bob", "same id, other user", Some("c1")),
        ]);
        assert_eq!(
            batch.client_id_lookups(),
            vec![
                ("a", "alice", "c1"),
                ("a", "alice", "c2"),
                ("a", "bob", "c1")
            ]
        );
        let mut plan = batch.plan(vec![stored("a", 4, "alice", "c1")]);
        assert_eq!(plan.new_per_room(), vec![("a", 2)]);
        plan.assign("a", 6);
        let (rows, outcomes) = plan.finish(1);
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(
            outcomes[0],
            RowOutcome::Duplicate(stored("a", 4, "alice", "c1"))
        );
        assert!(matches!(&outcomes[1], RowOutcome::Stored(r) if r.seq == 5));
        assert!(matches!(&outcomes[2], RowOutcome::Stored(r) if r.seq == 6 && r.username == "bob"));
    }

    #[test]
    fn a_repeat_inside_the_batch_is_a_duplicate_of_the_first() {
        let batch = Batch::new(vec![
            post("a", "alice", "first", Some("c1")),
            post("a", "alice", "again", Some("c1")),
            post("a", "alice", "and again", Some("c1")),
        ]);
        assert_eq!(batch.client_id_lookups(), vec![("a", "alice", "c1")]);
        let mut plan = batch.plan(vec![]);
        assert_eq!(plan.new_per_room(), vec![("a", 1)]);
        plan.assign("a", 1);
        let (rows, outcomes) = plan.finish(1);
        assert_eq!(rows.len(), 1);
        let RowOutcome::Stored(first) = &outcomes[0] else {
            panic!("first must be stored")
        };
        assert_eq!(first.content, "first");
        assert_eq!(outcomes[1], RowOutcome::Duplicate(first.clone()));
        assert_eq!(outcomes[2], RowOutcome::Duplicate(first.clone()));
    }

    #[test]
    fn a_repeat_of_a_stored_original_inside_the_batch_returns_that_original() {
        let batch = Batch::new(vec![
            post("a", "alice", "x", Some("c1")),
            post("a", "alice", "y", Some("c1")),
        ]);
        let plan = batch.plan(vec![stored("a", 2, "alice", "c1")]);
        assert!(plan.new_per_room().is_empty());
        let (rows, outcomes) = plan.finish(1);
        assert!(rows.is_empty());
        assert_eq!(
            outcomes,
            vec![RowOutcome::Duplicate(stored("a", 2, "alice", "c1")); 2]
        );
    }
}
