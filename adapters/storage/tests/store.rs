//! The message store on SQLite and Postgres: the port's contract (`banter_testkit::contract`,
//! shared with the application's fake) and what only this adapter has — failing batches,
//! query plans, its backend's name and shutdown.
//!
//! Every case runs once per backend (`for_each_backend!`); Postgres cases get a fresh database
//! each. Without a server they skip visibly, unless `BANTER_REQUIRE_SERVICES` is set (as in
//! CI), where they fail. Group commit is observed through its metrics in `group_commit.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use banter_adapter_storage::{DatabaseUrl, Store, StoreConfig};
use banter_domain::Appended;
use banter_domain::ports::MessageStore;
use banter_testkit::TestDatabase;
use banter_testkit::contract::store::{all_messages, post, seqs};
use banter_testkit::contract::{Fixture, StoreFixture};
use diesel::Connection;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// A database for one test, on one backend.
enum TestBackend {
    Sqlite {
        dir: tempfile::TempDir,
        path: String,
    },
    Postgres {
        db: TestDatabase,
    },
}

impl TestBackend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banter.db").display().to_string();
        TestBackend::Sqlite { dir, path }
    }

    async fn postgres() -> Option<Self> {
        TestDatabase::create()
            .await
            .map(|db| TestBackend::Postgres { db })
    }

    fn url(&self) -> DatabaseUrl {
        match self {
            TestBackend::Sqlite { path, .. } => DatabaseUrl::Sqlite { path: path.clone() },
            TestBackend::Postgres { db } => DatabaseUrl::Postgres {
                url: db.url.clone(),
            },
        }
    }

    fn config(&self) -> StoreConfig {
        StoreConfig::new(self.url())
    }

    async fn open(&self) -> Store {
        let store = Store::open(self.config()).await.expect("open the store");
        store.migrate().await.expect("migrate");
        store
    }

    /// Runs SQL on the database behind the store's back (to inject failures).
    async fn execute_raw(&self, sql: &str) {
        match self {
            TestBackend::Sqlite { path, .. } => {
                let mut conn = diesel::SqliteConnection::establish(path).unwrap();
                // The store's search indexer may hold the write lock for a moment.
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    "PRAGMA busy_timeout = 10000",
                )
                .unwrap();
                diesel::connection::SimpleConnection::batch_execute(&mut conn, sql).unwrap();
            }
            TestBackend::Postgres { db } => {
                let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
                diesel::sql_query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// A single count, read behind the store's back.
    async fn count_raw(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let sql = format!("SELECT ({sql}) AS n");
        match self {
            TestBackend::Sqlite { path, .. } => {
                let mut conn = diesel::SqliteConnection::establish(path).unwrap();
                diesel::RunQueryDsl::get_result::<Count>(diesel::sql_query(sql), &mut conn)
                    .unwrap()
                    .n
            }
            TestBackend::Postgres { db } => {
                let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
                diesel::sql_query(sql)
                    .get_result::<Count>(&mut conn)
                    .await
                    .unwrap()
                    .n
            }
        }
    }

    fn is_sqlite(&self) -> bool {
        matches!(self, TestBackend::Sqlite { .. })
    }
}

impl Fixture for TestBackend {
    async fn finish(self) {
        match self {
            TestBackend::Sqlite { dir, .. } => drop(dir),
            TestBackend::Postgres { db } => db.drop_now().await,
        }
    }
}

impl StoreFixture for TestBackend {
    type Store = Store;

    async fn open(&self) -> Store {
        TestBackend::open(self).await
    }

    async fn close(&self, store: Store) {
        store.close().await;
    }

    async fn index_search(&self, store: &Store) {
        store.index_search_now().await.expect("index for search");
    }
}

/// The migrations as released, to build a database of an older release: only the first
/// `count` of them are applied.
mod released {
    use diesel::Connection;
    use diesel_async::{AsyncConnection, AsyncPgConnection};
    use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

    const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
    const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

    pub async fn apply_first(backend: &super::TestBackend, count: usize) {
        match backend {
            super::TestBackend::Sqlite { path, .. } => {
                let mut conn = diesel::SqliteConnection::establish(path).unwrap();
                for _ in 0..count {
                    conn.run_next_migration(SQLITE).unwrap();
                }
            }
            super::TestBackend::Postgres { db } => {
                let conn = AsyncPgConnection::establish(&db.url).await.unwrap();
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let _entered = runtime.enter();
                    let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
                    for _ in 0..count {
                        harness.run_next_migration(POSTGRES).unwrap();
                    }
                })
                .await
                .unwrap();
            }
        }
    }
}

mod cases {
    use super::*;
    use banter_domain::{Change, ChangeRequest, Changed, Content};
    use banter_testkit::contract::{room, user};

    /// A database of the release before edits (its one migration, and messages written with
    /// its schema) keeps every message through the upgrade, and takes edits afterwards.
    pub async fn an_upgraded_database_keeps_every_message(backend: &TestBackend) {
        released::apply_first(backend, 1).await;
        let mut rows = Vec::new();
        for seq in 1..=30_u32 {
            let client_id = if seq.is_multiple_of(3) {
                format!("'c{seq}'")
            } else {
                "NULL".to_owned()
            };
            rows.push(format!(
                "('general', {seq}, 'alice', 'old message {seq}', {}, {client_id})",
                1_795_857_302_000_i64 + i64::from(seq)
            ));
        }
        backend
            .execute_raw(
                "INSERT INTO rooms (name, last_seq, last_message_at_ms, created_at_ms) \
                 VALUES ('general', 30, 1795857302030, 1795857302001)",
            )
            .await;
        backend
            .execute_raw(&format!(
                "INSERT INTO messages (room, seq, username, content, created_at_ms, client_id) \
                 VALUES {}",
                rows.join(", ")
            ))
            .await;

        let store = backend.open().await;
        let all = all_messages(&store, "general").await;
        assert_eq!(seqs(&all), (1..=30).collect::<Vec<u64>>());
        for m in &all {
            let n = m.seq.get();
            assert_eq!(m.text(), format!("old message {n}"));
            assert_eq!(m.timestamp.unix_millis(), 1_795_857_302_000 + n as i64);
            assert_eq!(
                m.client_id.as_ref().map(|c| c.as_str().to_owned()),
                n.is_multiple_of(3).then(|| format!("c{n}"))
            );
            assert_eq!((m.edited_at, m.is_deleted()), (None, false));
        }
        // The old rows take part in the new rules: resends, seqs, edits with the first rev.
        let resend = store
            .append(post("general", "alice", "again", Some("c3")))
            .await
            .unwrap();
        assert_eq!(resend, Appended::Duplicate(all[2].clone()));
        let next = store
            .append(post("general", "alice", "new", None))
            .await
            .unwrap();
        assert_eq!(next.into_message().seq.get(), 31);
        let edited = store
            .change(ChangeRequest {
                room: room("general"),
                seq: all[0].seq,
                author: user("alice"),
                change: Change::Edit(Content::parse("edited").unwrap()),
            })
            .await
            .unwrap();
        assert!(matches!(edited, Ok(Changed::Updated(c)) if c.rev.get() == 1));
        // The old messages are found by search, before the index has them and after.
        let query = banter_domain::SearchQuery::parse("\"old message 7\"").unwrap();
        let scope = banter_domain::SearchScope::Room {
            room: room("general"),
            before: None,
        };
        let limit = banter_domain::PageLimit::history(10).unwrap();
        for _ in 0..2 {
            let page = store.search(&scope, &query, limit).await.unwrap();
            let found: Vec<u64> = page.hits.iter().map(|h| h.message.seq.get()).collect();
            assert_eq!(found, vec![7]);
            store.index_search_now().await.unwrap();
        }
        store.close().await;
    }

    /// Nobody asks: the store's own indexer takes every message, in the background, and a
    /// post's transaction writes nothing to the index.
    pub async fn the_search_indexer_catches_up_by_itself(backend: &TestBackend) {
        let mut config = backend.config();
        config.search_index_interval = Some(std::time::Duration::from_millis(20));
        let store = Store::open(config).await.unwrap();
        store.migrate().await.unwrap();
        for n in 0..50 {
            store
                .append(post("general", "alice", &format!("message {n}"), None))
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let indexed = backend.count_raw("SELECT count(*) FROM search_docs").await;
            let progress = backend
                .count_raw("SELECT COALESCE(MAX(indexed_seq), 0) FROM search_progress")
                .await;
            if indexed == 50 && progress == 50 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "indexed {indexed}, progress {progress}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        store.close().await;

        // Without an indexer, posts leave the index alone; searches still find them.
        let mut config = backend.config();
        config.search_index_interval = None;
        let store = Store::open(config).await.unwrap();
        store.migrate().await.unwrap();
        store
            .append(post("general", "alice", "unindexed words", None))
            .await
            .unwrap();
        assert_eq!(
            backend.count_raw("SELECT count(*) FROM search_docs").await,
            50
        );
        let query = banter_domain::SearchQuery::parse("unindexed").unwrap();
        let page = store
            .search(
                &banter_domain::SearchScope::Readable { member_of: vec![] },
                &query,
                banter_domain::PageLimit::history(10).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(page.hits.len(), 1);
        store.close().await;
    }

    /// A database of the release with edits (its two migrations, and rows written with that
    /// schema: an edited message, a tombstone) keeps every message through the upgrade to read
    /// positions, lists its authors' rooms, and takes read positions afterwards.
    /// A database of the release before search (its four migrations, rows written with that
    /// schema: an edited message, a tombstone, a private room with members) keeps every message
    /// through the upgrade, and every live message is found by search — before the indexer
    /// has taken the old messages and after — deleted ones never, private ones for members only.
    pub async fn a_database_of_the_release_before_search_is_searchable(backend: &TestBackend) {
        released::apply_first(backend, 4).await;
        backend
            .execute_raw(
                "INSERT INTO rooms (name, last_seq, last_message_at_ms, created_at_ms, last_rev, \
                 private, creator) VALUES ('general', 3, 1795857302003, 1795857302001, 2, FALSE, \
                 NULL), ('team', 1, 1795857302004, 1795857302000, 0, TRUE, 'alice')",
            )
            .await;
        backend
            .execute_raw(
                "INSERT INTO messages (room, seq, username, content, created_at_ms, client_id, \
                 edited_at_ms, deleted, rev) VALUES \
                 ('general', 1, 'alice', 'the old plan, edited', 1795857302001, NULL, \
                  1795857309000, FALSE, 1), \
                 ('general', 2, 'bob', '', 1795857302002, 'c2', NULL, TRUE, 2), \
                 ('general', 3, 'bob', 'another plan entirely', 1795857302003, NULL, NULL, \
                  FALSE, NULL), \
                 ('team', 1, 'alice', 'the secret plan', 1795857302004, NULL, NULL, FALSE, NULL)",
            )
            .await;
        backend
            .execute_raw(
                "INSERT INTO revisions (room, rev, seq) VALUES ('general', 1, 1), ('general', 2, 2)",
            )
            .await;
        backend
            .execute_raw(
                "INSERT INTO room_members (room, username) VALUES ('team', 'alice'), ('team', 'bob')",
            )
            .await;
        let mut config = backend.config();
        config.search_index_interval = None;
        let store = Store::open(config).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(seqs(&all_messages(&store, "general").await), vec![1, 2, 3]);
        let limit = banter_domain::PageLimit::history(10).unwrap();
        let found = async |scope: banter_domain::SearchScope, q: &str| {
            let query = banter_domain::SearchQuery::parse(q).unwrap();
            let mut hits: Vec<(String, u64)> = store
                .search(&scope, &query, limit)
                .await
                .unwrap()
                .hits
                .into_iter()
                .map(|h| (h.message.room.as_str().to_owned(), h.message.seq.get()))
                .collect();
            hits.sort();
            hits
        };
        let public = || banter_domain::SearchScope::Readable { member_of: vec![] };
        let member = || banter_domain::SearchScope::Readable {
            member_of: vec![room("team")],
        };
        for round in 0..2 {
            assert_eq!(
                found(public(), "plan").await,
                vec![("general".to_owned(), 1), ("general".to_owned(), 3)]
            );
            assert_eq!(
                found(member(), "secret").await,
                vec![("team".to_owned(), 1)]
            );
            assert_eq!(found(public(), "secret").await, vec![]);
            assert_eq!(
                found(public(), "edited").await,
                vec![("general".to_owned(), 1)]
            );
            // The old messages, the tombstone included, go through the indexer once.
            let taken = store.index_search_now().await.unwrap();
            assert_eq!(taken, if round == 0 { 4 } else { 0 });
        }
        store.close().await;
    }

    pub async fn a_database_of_the_edits_release_keeps_every_message(backend: &TestBackend) {
        released::apply_first(backend, 2).await;
        let mut rows = Vec::new();
        for seq in 1..=20_u32 {
            let author = if seq % 2 == 0 { "alice" } else { "bob" };
            let (content, edited, deleted, rev) = match seq {
                4 => ("edited 4", "1795857309000", "FALSE", "1"),
                5 => ("", "NULL", "TRUE", "2"),
                _ => ("", "NULL", "FALSE", "NULL"),
            };
            let content = if content.is_empty() && deleted == "FALSE" {
                format!("old message {seq}")
            } else {
                content.to_owned()
            };
            rows.push(format!(
                "('general', {seq}, '{author}', '{content}', {}, NULL, {edited}, {deleted}, {rev})",
                1_795_857_302_000_i64 + i64::from(seq)
            ));
        }
        backend
            .execute_raw(
                "INSERT INTO rooms (name, last_seq, last_message_at_ms, created_at_ms, last_rev) \
                 VALUES ('general', 20, 1795857302020, 1795857302001, 2)",
            )
            .await;
        backend
            .execute_raw(&format!(
                "INSERT INTO messages (room, seq, username, content, created_at_ms, client_id, \
                 edited_at_ms, deleted, rev) VALUES {}",
                rows.join(", ")
            ))
            .await;
        backend
            .execute_raw(
                "INSERT INTO revisions (room, rev, seq) VALUES ('general', 1, 4), ('general', 2, 5)",
            )
            .await;

        let store = backend.open().await;
        let all = all_messages(&store, "general").await;
        assert_eq!(seqs(&all), (1..=20).collect::<Vec<u64>>());
        for m in &all {
            let n = m.seq.get();
            match n {
                4 => assert_eq!(m.text(), "edited 4"),
                5 => assert!(m.is_deleted()),
                _ => assert_eq!(m.text(), format!("old message {n}")),
            }
            assert_eq!(m.timestamp.unix_millis(), 1_795_857_302_000 + n as i64);
        }
        // Alice posted there before the upgrade: the room is hers, all of bob's messages but
        // the deleted one unread.
        let rooms = store.user_rooms(&user("alice")).await.unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!(
            (rooms[0].room.as_str(), rooms[0].last_seq.get()),
            ("general", 20)
        );
        assert_eq!((rooms[0].read_seq.get(), rooms[0].unread), (0, 9));
        let mark = store
            .mark_read(
                &room("general"),
                &user("alice"),
                banter_domain::Seq::new(11).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!((mark.read_seq.get(), mark.advanced), (11, true));
        let rooms = store.user_rooms(&user("alice")).await.unwrap();
        assert_eq!((rooms[0].read_seq.get(), rooms[0].unread), (11, 4));
        // Every room of the old database is public, and stays so.
        assert_eq!(
            store.room_access(&room("general")).await.unwrap(),
            banter_domain::RoomAccess::Public
        );
        assert!(
            !store
                .create_private_room(&room("general"), &user("alice"))
                .await
                .unwrap()
        );
        store.close().await;
    }

    /// A public room with messages is public for good, so a store asks the database about it
    /// once: shown here by changing the row behind its back (which banter never does), which
    /// the store that saw the room ignores and a fresh one reads. A room without messages, or
    /// a private one, is read every time.
    pub async fn a_public_room_with_messages_is_checked_once(backend: &TestBackend) {
        let store = backend.open().await;
        store
            .append(post("open", "alice", "hi", None))
            .await
            .unwrap();
        let public = banter_domain::RoomAccess::Public;
        assert_eq!(store.room_access(&room("open")).await.unwrap(), public);
        assert_eq!(store.room_access(&room("empty")).await.unwrap(), public);
        assert!(
            store
                .create_private_room(&room("closed"), &user("alice"))
                .await
                .unwrap()
        );
        backend
            .execute_raw("UPDATE rooms SET private = TRUE, creator = 'mallory' WHERE name = 'open'")
            .await;
        backend
            .execute_raw("INSERT INTO room_members (room, username) VALUES ('closed', 'bob')")
            .await;
        assert_eq!(
            store.room_access(&room("open")).await.unwrap(),
            public,
            "settled"
        );
        assert!(
            matches!(
                store.room_access(&room("closed")).await.unwrap(),
                banter_domain::RoomAccess::Private { members, .. } if members.len() == 2
            ),
            "a private room is read every time"
        );
        let fresh = backend.open().await;
        assert!(fresh.room_access(&room("open")).await.unwrap().is_private());
        fresh.close().await;
        store.close().await;
    }

    pub async fn a_failed_commit_fails_its_whole_batch_and_stores_nothing_of_it(
        backend: &TestBackend,
    ) {
        let store = backend.open().await;
        store
            .append(post("general", "alice", "before", None))
            .await
            .unwrap();
        // A trigger makes any batch containing "boom" fail at insert time.
        if backend.is_sqlite() {
            backend
                .execute_raw(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT ON messages \
                     WHEN NEW.content = 'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END;",
                )
                .await;
        } else {
            backend
                .execute_raw(
                    "CREATE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN \
                     IF NEW.content = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF; \
                     RETURN NEW; END $$ LANGUAGE plpgsql",
                )
                .await;
            backend
                .execute_raw(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT ON messages \
                     FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
                )
                .await;
        }
        let refused = store
            .append(post("general", "alice", "boom", Some("b")))
            .await;
        assert!(refused.is_err(), "the failing post is refused");

        // Now a batch where the bad post rides with good ones: every caller in the failing
        // batch gets an error, and nothing of that batch is stored.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let text = if i == 10 {
                    "boom".to_owned()
                } else {
                    format!("good {i}")
                };
                store
                    .append(post("general", "bob", &text, Some(&format!("k{i}"))))
                    .await
            }));
        }
        let mut acked = Vec::new();
        let mut failed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(Appended::Stored(m)) => acked.push(m),
                Ok(Appended::Duplicate(_)) => panic!("no resend here"),
                Err(_) => failed += 1,
            }
        }
        assert!(failed >= 1, "at least the bad post failed");
        let all = all_messages(&store, "general").await;
        assert_eq!(
            all.len(),
            1 + acked.len(),
            "exactly the acknowledged posts are stored"
        );
        for m in &acked {
            assert!(all.contains(m), "acknowledged {m:?} is stored");
        }
        assert!(all.iter().all(|m| m.text() != "boom"));
        assert_eq!(
            seqs(&all),
            (1..=all.len() as u64).collect::<Vec<u64>>(),
            "still gapless"
        );

        store.close().await;
    }

    pub async fn queries_use_their_indexes(backend: &TestBackend) {
        let store = backend.open().await;
        let (search_plans, plans): (Vec<_>, Vec<_>) = store
            .explain_history_queries()
            .await
            .unwrap()
            .into_iter()
            .partition(|plan| plan.query.starts_with("search"));
        assert_eq!(plans.len(), 16);
        search_queries_use_the_index(backend, &search_plans);
        for plan in &plans {
            let text = plan.plan.join(" | ");
            println!("{} plan, {}: {text}", store.backend(), plan.query);
            if backend.is_sqlite() {
                assert!(
                    text.contains("USING PRIMARY KEY")
                        || text.contains("USING INDEX")
                        || text.contains("USING COVERING INDEX"),
                    "{}: {text}",
                    plan.query
                );
                assert!(
                    !text.contains("SCAN messages")
                        && !text.contains("SCAN rooms")
                        && !text.contains("SCAN revisions")
                        && !text.contains("SCAN read_positions")
                        && !text.contains("SCAN room_members"),
                    "{}: {text}",
                    plan.query
                );
                assert!(
                    !text.contains("TEMP B-TREE"),
                    "{}: sorted by the index: {text}",
                    plan.query
                );
            } else {
                assert!(text.contains("Index"), "{}: {text}", plan.query);
                assert!(
                    !text.contains("Seq Scan") && !text.contains("Sort"),
                    "{}: {text}",
                    plan.query
                );
            }
        }
        let lookup = plans
            .iter()
            .find(|p| p.query == "client_id lookup")
            .unwrap()
            .plan
            .join(" ");
        assert!(
            lookup.contains("messages_client_id"),
            "resends are found through their index: {lookup}"
        );
        let changes = plans
            .iter()
            .find(|p| p.query == "changes by rev")
            .unwrap()
            .plan
            .join(" ");
        assert!(
            changes.contains("messages_rev"),
            "changes are listed through the rev index: {changes}"
        );
        let revisions = plans
            .iter()
            .find(|p| p.query == "revisions after")
            .unwrap()
            .plan
            .join(" ");
        assert!(
            revisions.contains("revisions_pkey")
                || revisions.contains("revisions USING PRIMARY KEY"),
            "a rev gap is filled through the log's key: {revisions}"
        );
        let plan_of = |query: &str| {
            plans
                .iter()
                .find(|p| p.query == query)
                .unwrap()
                .plan
                .join(" ")
        };
        let posted = plan_of("rooms a user posted in");
        assert!(
            posted.contains("messages_author"),
            "a user's rooms are found through the author index: {posted}"
        );
        for query in ["read position", "user's read positions"] {
            let plan = plan_of(query);
            assert!(
                plan.contains("read_positions_pkey")
                    || plan.contains("read_positions USING PRIMARY KEY"),
                "{query}: through the positions' key: {plan}"
            );
        }
        let members = plan_of("room members");
        assert!(
            members.contains("room_members_pkey")
                || members.contains("room_members USING PRIMARY KEY"),
            "a room's members through their key: {members}"
        );
        let member_of = plan_of("member's rooms");
        assert!(
            member_of.contains("room_members_by_user"),
            "a member's rooms through the by-user index: {member_of}"
        );
        let unread = plan_of("unread count");
        assert!(
            unread.contains("messages_pkey") || unread.contains("messages USING PRIMARY KEY"),
            "unread messages are one range of the messages' key: {unread}"
        );
        store.close().await;
    }

    /// The search reads: the full-text index (FTS5's, walked by rowid so "newest first"
    /// needs no sort; Postgres's GIN index, or a key walked newest first for common words).
    fn search_queries_use_the_index(
        backend: &TestBackend,
        plans: &[banter_adapter_storage::QueryPlan],
    ) {
        let plan_of = |query: &str| {
            plans
                .iter()
                .find(|p| p.query == query)
                .unwrap_or_else(|| panic!("no plan for {query}"))
                .plan
                .join(" | ")
        };
        for query in ["search: a room", "search: readable rooms"] {
            let plan = plan_of(query);
            println!("search plan, {query}: {plan}");
            if backend.is_sqlite() {
                assert!(
                    plan.contains("search_index VIRTUAL TABLE INDEX"),
                    "{query}: {plan}"
                );
                assert!(
                    plan.contains("USING INTEGER PRIMARY KEY"),
                    "{query}: {plan}"
                );
                assert!(!plan.contains("TEMP B-TREE"), "{query}: no sort: {plan}");
            } else {
                assert!(!plan.contains("Seq Scan"), "{query}: {plan}");
                assert!(
                    plan.contains("search_docs_words")
                        || plan.contains("search_docs_pkey")
                        || plan.contains("search_docs_newest"),
                    "{query}: {plan}"
                );
            }
        }
        if backend.is_sqlite() {
            let bound = plan_of("search: a room's bound");
            assert!(bound.contains("search_docs_message"), "{bound}");
        }
    }

    pub async fn names_its_backend(backend: &TestBackend) {
        let store = backend.open().await;
        assert_eq!(
            store.backend(),
            if backend.is_sqlite() {
                "sqlite"
            } else {
                "postgres"
            }
        );
        store.close().await;
    }

    pub async fn a_closed_store_is_not_ready_and_refuses_posts(backend: &TestBackend) {
        let store = backend.open().await;
        store.check().await.unwrap();
        store.close().await;
        // Without its writers the store is not ready, and says so.
        assert!(store.check().await.is_err());
        // A closed store refuses posts instead of losing them silently.
        assert!(
            store
                .append(post("general", "alice", "late", None))
                .await
                .is_err()
        );
    }
}

/// The shared contract in `<backend>::contract`, and this file's cases in `<backend>`.
macro_rules! for_each_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            banter_testkit::store_contract!(contract, async { Some(crate::TestBackend::sqlite()) });
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::TestBackend::sqlite();
                    crate::cases::$case(&backend).await;
                    banter_testkit::contract::Fixture::finish(backend).await;
                }
            )*
        }
        mod postgres {
            banter_testkit::store_contract!(contract, crate::TestBackend::postgres());
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = crate::TestBackend::postgres().await else { return };
                    crate::cases::$case(&backend).await;
                    banter_testkit::contract::Fixture::finish(backend).await;
                }
            )*
        }
    };
}

for_each_backend!(
    an_upgraded_database_keeps_every_message,
    a_database_of_the_edits_release_keeps_every_message,
    a_database_of_the_release_before_search_is_searchable,
    a_public_room_with_messages_is_checked_once,
    a_failed_commit_fails_its_whole_batch_and_stores_nothing_of_it,
    queries_use_their_indexes,
    names_its_backend,
    a_closed_store_is_not_ready_and_refuses_posts,
    the_search_indexer_catches_up_by_itself,
);
