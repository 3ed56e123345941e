//! Reads from a real streaming replica (a primary and a `pg_basebackup -R` standby of the
//! test's own, see `banter_testkit::PostgresPair`): a read never shows less than the node
//! has shown, a lagging replica is left for the primary, and a dead one costs no read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use banter_adapter_storage::{DatabaseUrl, ReadReplicaConfig, Store, StoreConfig};
use banter_domain::ports::MessageStore;
use banter_domain::{
    Content, HistoryQuery, NewMessage, PageLimit, RoomName, SearchQuery, SearchScope, Username,
};
use banter_testkit::PostgresPair;

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

async fn open(pair: &PostgresPair, max_lag: Duration, migrate: bool) -> Store {
    let mut config = StoreConfig::new(DatabaseUrl::parse(&pair.primary_url()).unwrap());
    config.search_index_interval = None;
    config.read_replica = Some(ReadReplicaConfig {
        url: pair.replica_url(),
        max_lag,
    });
    let store = Store::open(config).await.unwrap();
    if migrate {
        store.migrate().await.unwrap();
    }
    store
}

async fn post(store: &Store, room_name: &str, text: &str) {
    store
        .append(NewMessage {
            room: room(room_name),
            username: Username::parse("ann").unwrap(),
            content: Content::parse(text).unwrap(),
            client_id: None,
        })
        .await
        .unwrap();
}

async fn contents(store: &Store, room_name: &str) -> Vec<String> {
    store
        .history(
            &room(room_name),
            HistoryQuery::Latest {
                limit: PageLimit::history(100).unwrap(),
            },
        )
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.content.map(|c| c.as_str().to_owned()).unwrap_or_default())
        .collect()
}

/// Waits (bounded) until `condition` holds; the replica's state changes asynchronously.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_use_a_fresh_replica_and_never_show_less_than_was_shown() {
    let Some(pair) = PostgresPair::start() else {
        return;
    };
    // Node A writes; node B only reads (it has shown nothing until it fences a room).
    let a = open(&pair, Duration::from_secs(60), true).await;
    let b = open(&pair, Duration::from_secs(60), false).await;
    post(&a, "quiet", "before the pause").await;
    post(&a, "busy", "before the pause").await;

    // Caught up: B's reads go to the replica, and see everything.
    eventually("B reads a quiet room from the replica", || {
        b.reads_from_replica(Some(&room("quiet")))
    })
    .await;
    eventually("the replica has caught up", || b.reads_from_replica(None)).await;
    let mut caught_up = false;
    for _ in 0..500 {
        if contents(&b, "quiet").await == ["before the pause"] {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "the replica never showed the first message");

    // The replica stops replaying: within the allowed lag (60 s) B still reads it.
    pair.pause_replay().await;
    post(&a, "quiet", "after the pause").await;
    post(&a, "busy", "after the pause").await;
    assert!(b.reads_from_replica(Some(&room("quiet"))));
    assert_eq!(
        contents(&b, "quiet").await,
        ["before the pause"],
        "B has shown nothing of room quiet, so the stale replica is a valid answer (and proves reads use it)"
    );
    // A wrote both rooms: its own reads must show its writes, so they go to the primary.
    assert!(!a.reads_from_replica(Some(&room("busy"))));
    assert_eq!(
        contents(&a, "busy").await,
        ["before the pause", "after the pause"]
    );
    // B delivers "busy"'s new message (its broadcaster passes it through the fence): from
    // then on B's reads of "busy", and across rooms, reflect it.
    b.read_fence().unwrap().touch(&room("busy"));
    assert!(!b.reads_from_replica(Some(&room("busy"))));
    assert!(!b.reads_from_replica(None));
    assert_eq!(
        contents(&b, "busy").await,
        ["before the pause", "after the pause"]
    );
    let found = b
        .search(
            &SearchScope::Room {
                room: room("busy"),
                before: None,
            },
            &SearchQuery::parse("after").unwrap(),
            PageLimit::history(10).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        found.hits.len(),
        1,
        "search of a fenced room reads the primary"
    );
    // The quiet room is still read from the paused replica…
    assert!(b.reads_from_replica(Some(&room("quiet"))));
    // …until a read across rooms is answered by the primary (fenced by "busy"): it showed
    // every room as of now, so every room's reads must reflect that from then on.
    let listed = b
        .rooms(None, PageLimit::history(10).unwrap())
        .await
        .unwrap();
    assert_eq!(listed.rooms.len(), 2);
    assert!(!b.reads_from_replica(Some(&room("quiet"))));
    assert_eq!(
        contents(&b, "quiet").await,
        ["before the pause", "after the pause"]
    );

    // Replay resumes: the replica catches up past the fence and is used again.
    pair.resume_replay().await;
    eventually("B reads room busy from the replica again", || {
        b.reads_from_replica(Some(&room("busy")))
    })
    .await;
    assert_eq!(
        contents(&b, "busy").await,
        ["before the pause", "after the pause"]
    );
    assert_eq!(
        contents(&b, "quiet").await,
        ["before the pause", "after the pause"]
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_or_dead_replica_is_left_for_the_primary() {
    let Some(pair) = PostgresPair::start() else {
        return;
    };
    let writer = open(&pair, Duration::from_millis(300), true).await;
    let reader = open(&pair, Duration::from_millis(300), false).await;
    post(&writer, "r", "one").await;
    eventually("the replica is used", || {
        reader.reads_from_replica(Some(&room("r")))
    })
    .await;

    // Lag beyond --replica-max-lag: every read goes to the primary, fenced or not.
    pair.pause_replay().await;
    post(&writer, "r", "two").await;
    eventually("a replica lagging past 300 ms is not read", || {
        !reader.reads_from_replica(Some(&room("r")))
    })
    .await;
    assert_eq!(contents(&reader, "r").await, ["one", "two"]);
    pair.resume_replay().await;
    eventually("the caught-up replica is read again", || {
        reader.reads_from_replica(Some(&room("r")))
    })
    .await;

    // Killed: reads keep working, from the primary; the monitor marks it unusable.
    pair.kill_replica();
    post(&writer, "r", "three").await;
    for _ in 0..20 {
        assert_eq!(contents(&reader, "r").await, ["one", "two", "three"]);
    }
    eventually("a dead replica is not read", || {
        !reader.reads_from_replica(None)
    })
    .await;
    assert_eq!(contents(&reader, "r").await, ["one", "two", "three"]);

    // Back: used again once it has caught up.
    pair.restart_replica();
    eventually("the restarted replica is read again", || {
        reader.reads_from_replica(Some(&room("r")))
    })
    .await;
    assert_eq!(contents(&reader, "r").await, ["one", "two", "three"]);
    writer.close().await;
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_url_that_is_not_a_standby_is_refused_at_start() {
    let Some(pair) = PostgresPair::start() else {
        return;
    };
    let mut config = StoreConfig::new(DatabaseUrl::parse(&pair.primary_url()).unwrap());
    config.read_replica = Some(ReadReplicaConfig {
        url: pair.primary_url(),
        max_lag: Duration::from_secs(1),
    });
    let refused = Store::open(config).await.unwrap_err().to_string();
    assert!(refused.contains("not a standby"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_down_at_start_is_read_once_it_answers() {
    let Some(pair) = PostgresPair::start() else {
        return;
    };
    let writer = open(&pair, Duration::from_secs(1), true).await;
    post(&writer, "r", "one").await;
    pair.kill_replica();
    // The node starts; every read goes to the primary meanwhile.
    let reader = open(&pair, Duration::from_secs(1), false).await;
    assert!(!reader.reads_from_replica(None));
    assert_eq!(contents(&reader, "r").await, ["one"]);
    pair.restart_replica();
    eventually("the replica is read once it answers", || {
        reader.reads_from_replica(Some(&room("r")))
    })
    .await;
    assert_eq!(contents(&reader, "r").await, ["one"]);
    writer.close().await;
    reader.close().await;
}
