//! Read positions against fake ports: stored before told, told only to the user's other
//! connections and only forwards, clamped, free of rate-limit tokens, shown in the welcome,
//! and the user's rooms with unread counts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod fakes;

use std::num::NonZeroU32;
use std::time::Duration;

use banter_application::{ChatSettings, PostDraft, RateLimit, ReadError, Start};
use banter_domain::{ChangeRequest, ConnectionId, Content, NewMessage, ReadMark, RoomEvent, Seq};
use fakes::world::{TestJoined, World, room, seq, user, world, world_with};

impl World {
    async fn join(&self, u: &str) -> TestJoined {
        self.chat
            .join(room(), user(u), Start::DEFAULT)
            .await
            .unwrap()
    }

    fn insert(&self, u: &str, text: &str) {
        self.store.insert(NewMessage {
            room: room(),
            username: user(u),
            content: Content::parse(text).unwrap(),
            client_id: None,
        });
    }

    fn published_reads(&self) -> Vec<(String, u64)> {
        self.broadcaster
            .published()
            .into_iter()
            .filter_map(|e| match e {
                RoomEvent::Read { username, seq, .. } => Some((username.to_string(), seq.get())),
                _ => None,
            })
            .collect()
    }
}

/// The next read position the feed passes on, skipping messages, presence and typing;
/// `None` when none comes within 100 ms.
async fn next_read(joined: &mut TestJoined) -> Option<u64> {
    loop {
        let next = tokio::time::timeout(Duration::from_millis(100), joined.feed.next()).await;
        let envelope = next.ok()?.expect("the feed should not fail");
        if let RoomEvent::Read { seq, .. } = envelope.event() {
            return Some(seq.get());
        }
    }
}

fn moved(n: u64) -> ReadMark {
    ReadMark {
        read_seq: seq(n),
        advanced: true,
    }
}

#[tokio::test]
async fn a_read_report_is_stored_and_told_to_the_users_other_connections_only() {
    let w = world();
    for n in 0..3 {
        w.insert("bob", &format!("m{n}"));
    }
    let mut tab1 = w.join("alice").await;
    let mut tab2 = w.join("alice").await;
    let mut bob = w.join("bob").await;
    assert_eq!(tab1.welcome.read_seq, Seq::ZERO);

    assert_eq!(tab1.session.mark_read(seq(2)).await.unwrap(), moved(2));
    assert_eq!(
        w.store.read_position(&room(), &user("alice")),
        seq(2),
        "stored before told"
    );
    assert_eq!(next_read(&mut tab2).await, Some(2));
    assert_eq!(
        next_read(&mut tab1).await,
        None,
        "not echoed to the reporter"
    );
    assert_eq!(next_read(&mut bob).await, None, "nobody else sees it");

    // Lower: ignored, nobody told. Beyond the last seq: clamped.
    let lower = tab2.session.mark_read(seq(1)).await.unwrap();
    assert_eq!((lower.read_seq, lower.advanced), (seq(2), false));
    assert_eq!(tab2.session.mark_read(seq(50)).await.unwrap(), moved(3));
    assert_eq!(next_read(&mut tab1).await, Some(3));
    assert_eq!(next_read(&mut tab2).await, None);
    assert_eq!(
        w.published_reads(),
        [("alice".into(), 2), ("alice".into(), 3)]
    );

    // A new connection starts from the stored position.
    let tab3 = w.join("alice").await;
    assert_eq!(tab3.welcome.read_seq, seq(3));
    assert_eq!(w.join("bob").await.welcome.read_seq, Seq::ZERO);
}

#[tokio::test]
async fn a_position_set_without_a_connection_reaches_every_connection_of_the_user() {
    let w = world();
    w.insert("bob", "hello");
    let mut tab1 = w.join("alice").await;
    let mut tab2 = w.join("alice").await;
    assert_eq!(
        w.chat
            .mark_read(&room(), &user("alice"), seq(1))
            .await
            .unwrap(),
        moved(1)
    );
    assert_eq!(next_read(&mut tab1).await, Some(1));
    assert_eq!(next_read(&mut tab2).await, Some(1));
}

#[tokio::test]
async fn late_or_foreign_positions_from_the_broker_are_not_passed_on() {
    let w = world();
    for n in 0..5 {
        w.insert("bob", &format!("m{n}"));
    }
    w.chat
        .mark_read(&room(), &user("alice"), seq(3))
        .await
        .unwrap();
    let mut tab = w.join("alice").await;
    assert_eq!(tab.welcome.read_seq, seq(3));
    let read = |u: &str, n: u64| RoomEvent::Read {
        room: room(),
        username: user(u),
        seq: seq(n),
        origin: Some(ConnectionId { node: 1, local: 1 }),
    };
    // Published before a later one but delivered after it (two nodes): not a step back.
    w.broadcaster.inject(read("alice", 2));
    w.broadcaster.inject(read("bob", 5));
    assert_eq!(next_read(&mut tab).await, None);
    w.broadcaster.inject(read("alice", 5));
    w.broadcaster.inject(read("alice", 4));
    assert_eq!(next_read(&mut tab).await, Some(5));
    assert_eq!(next_read(&mut tab).await, None);
}

#[tokio::test]
async fn read_reports_take_no_rate_limit_token() {
    let w = world_with(ChatSettings {
        rate_limit: Some(RateLimit {
            burst: NonZeroU32::new(2).unwrap(),
            per_second: NonZeroU32::new(1).unwrap(),
        }),
        ..ChatSettings::default()
    });
    w.insert("bob", "hello");
    let tab = w.join("alice").await;
    for _ in 0..10 {
        tab.session.mark_read(seq(1)).await.unwrap();
    }
    for n in 0..2 {
        tab.session
            .post(PostDraft::new(format!("post {n}"), None))
            .await
            .expect("the bucket is still full");
    }
    assert!(
        tab.session
            .post(PostDraft::new("third", None))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_position_that_cannot_be_stored_is_refused_and_told_to_nobody() {
    let w = world();
    w.insert("bob", "hello");
    let tab = w.join("alice").await;
    w.store.fail(true);
    assert!(matches!(
        tab.session.mark_read(seq(1)).await,
        Err(ReadError::Store(_))
    ));
    assert!(w.published_reads().is_empty());
    assert!(matches!(
        w.chat.user_rooms(&user("alice")).await,
        Err(ReadError::Store(_))
    ));
}

#[tokio::test]
async fn a_users_rooms_count_others_unread_messages() {
    let w = world();
    w.insert("alice", "mine");
    w.insert("bob", "one");
    w.insert("bob", "two");
    w.chat
        .mark_read(&room(), &user("alice"), seq(2))
        .await
        .unwrap();
    w.store
        .change_now(ChangeRequest {
            room: room(),
            seq: seq(3),
            author: user("bob"),
            change: banter_domain::Change::Delete,
        })
        .unwrap();
    w.insert("carol", "three");
    let rooms = w.chat.user_rooms(&user("alice")).await.unwrap();
    assert_eq!(rooms.len(), 1);
    let general = &rooms[0];
    assert_eq!(
        (general.last_seq, general.read_seq, general.unread),
        (seq(4), seq(2), 1),
        "bob's deleted message is not unread, carol's is"
    );
    assert!(w.chat.user_rooms(&user("dave")).await.unwrap().is_empty());
}
