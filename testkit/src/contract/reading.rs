//! The read-position part of the [`MessageStore`] contract: positions move forward only and
//! never past the room's end (also when reports race from two processes), and a user's rooms
//! are listed newest activity first with unread counts (others' messages only, deleted ones
//! excluded, capped at 1000).

use std::time::Duration;

use banter_domain::ports::MessageStore;
use banter_domain::{
    Appended, Change, ChangeRequest, Message, ReadMark, Seq, UNREAD_CAP, UserRoom,
};

use super::store::{post, seq};
use super::{StoreFixture, room, user};

async fn stored(store: &impl MessageStore, room_name: &str, username: &str, text: &str) -> Message {
    match store
        .append(post(room_name, username, text, None))
        .await
        .unwrap()
    {
        Appended::Stored(m) => m,
        Appended::Duplicate(m) => panic!("not a resend: {m:?}"),
    }
}

async fn mark(store: &impl MessageStore, room_name: &str, username: &str, n: u64) -> ReadMark {
    store
        .mark_read(&room(room_name), &user(username), seq(n))
        .await
        .unwrap()
}

fn moved(n: u64) -> ReadMark {
    ReadMark {
        read_seq: seq(n),
        advanced: true,
    }
}

fn stays(n: u64) -> ReadMark {
    ReadMark {
        read_seq: seq(n),
        advanced: false,
    }
}

/// (room, last_seq, read_seq, unread) of each listed room, in order.
fn summary(rooms: &[UserRoom]) -> Vec<(String, u64, u64, u64)> {
    rooms
        .iter()
        .map(|r| {
            (
                r.room.as_str().to_owned(),
                r.last_seq.get(),
                r.read_seq.get(),
                r.unread,
            )
        })
        .collect()
}

pub async fn read_positions_move_forward_only_and_stop_at_the_last_seq(
    fixture: &impl StoreFixture,
) {
    let store = fixture.open().await;
    for n in 0..3 {
        stored(&store, "reads", "bob", &format!("m{n}")).await;
    }
    let position = |u: &'static str| {
        let store = store.clone();
        async move {
            store
                .read_position(&room("reads"), &user(u))
                .await
                .unwrap()
                .get()
        }
    };
    assert_eq!(position("alice").await, 0, "no position yet");
    assert_eq!(mark(&store, "reads", "alice", 2).await, moved(2));
    assert_eq!(
        mark(&store, "reads", "alice", 1).await,
        stays(2),
        "lower: ignored"
    );
    assert_eq!(
        mark(&store, "reads", "alice", 2).await,
        stays(2),
        "the same: no move"
    );
    assert_eq!(
        mark(&store, "reads", "alice", 99).await,
        moved(3),
        "clamped"
    );
    assert_eq!(mark(&store, "reads", "alice", 99).await, stays(3));
    assert_eq!(position("alice").await, 3);
    assert_eq!(position("bob").await, 0, "positions are per user");
    // A room without messages keeps no position.
    assert_eq!(mark(&store, "empty", "alice", 5).await, stays(0));
    let alice_empty = store
        .read_position(&room("empty"), &user("alice"))
        .await
        .unwrap();
    assert_eq!(alice_empty, Seq::ZERO);
    // Positions are durable.
    fixture.close(store).await;
    let reopened = fixture.open().await;
    let kept = reopened
        .read_position(&room("reads"), &user("alice"))
        .await
        .unwrap();
    assert_eq!(kept, seq(3));
    fixture.close(reopened).await;
}

pub async fn racing_read_reports_from_two_processes_keep_the_highest(fixture: &impl StoreFixture) {
    let one = fixture.open().await;
    let two = fixture.open().await;
    for n in 0..40 {
        stored(&one, "race", "bob", &format!("m{n}")).await;
    }
    let mut tasks = Vec::new();
    for n in 1..=40_u64 {
        let store = if n % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            mark(&store, "race", "alice", n).await
        }));
    }
    let mut moves = 0;
    for task in tasks {
        let mark = task.await.unwrap();
        assert!(mark.read_seq.get() <= 40);
        moves += usize::from(mark.advanced);
    }
    assert!(moves >= 1);
    for store in [&one, &two] {
        let now = store
            .read_position(&room("race"), &user("alice"))
            .await
            .unwrap();
        assert_eq!(now, seq(40), "the highest report wins, whatever the order");
    }
    fixture.close(one).await;
    fixture.close(two).await;
}

pub async fn a_users_rooms_come_newest_activity_first_with_unread_counts(
    fixture: &impl StoreFixture,
) {
    let store = fixture.open().await;
    let pause = || tokio::time::sleep(Duration::from_millis(5));
    // room-a: alice posted (1), bob posted twice (2, 3).
    stored(&store, "room-a", "alice", "hi").await;
    stored(&store, "room-a", "bob", "one").await;
    let deleted = stored(&store, "room-a", "bob", "two").await;
    pause().await;
    // room-b: only bob posted (1–3); alice read up to 1.
    for n in 0..3 {
        stored(&store, "room-b", "bob", &format!("b{n}")).await;
    }
    assert_eq!(mark(&store, "room-b", "alice", 1).await, moved(1));
    // room-c: alice neither posted nor read: not hers.
    stored(&store, "room-c", "bob", "elsewhere").await;
    // A deleted message is not unread.
    store
        .change(ChangeRequest {
            room: room("room-a"),
            seq: deleted.seq,
            author: user("bob"),
            change: Change::Delete,
        })
        .await
        .unwrap()
        .unwrap();

    let rooms = store.user_rooms(&user("alice")).await.unwrap();
    assert_eq!(
        summary(&rooms),
        [
            ("room-b".to_owned(), 3, 1, 2),
            ("room-a".to_owned(), 3, 0, 1),
        ],
        "newest activity first; own messages and deleted ones are not unread"
    );
    assert!(rooms.iter().all(|r| r.last_message_at.is_some()));
    assert!(rooms[0].last_message_at >= rooms[1].last_message_at);

    pause().await;
    let latest = stored(&store, "room-a", "carol", "back to a").await;
    let rooms = store.user_rooms(&user("alice")).await.unwrap();
    assert_eq!(
        summary(&rooms),
        [
            ("room-a".to_owned(), 4, 0, 2),
            ("room-b".to_owned(), 3, 1, 2),
        ]
    );
    assert_eq!(rooms[0].last_message_at, Some(latest.timestamp));
    assert_eq!(mark(&store, "room-a", "alice", 4).await, moved(4));
    let rooms = store.user_rooms(&user("alice")).await.unwrap();
    assert_eq!(summary(&rooms)[0], ("room-a".to_owned(), 4, 4, 0));

    // Bob's view: rooms he posted in, unread counting alice's and carol's only.
    let bobs = store.user_rooms(&user("bob")).await.unwrap();
    assert_eq!(
        summary(&bobs),
        [
            ("room-a".to_owned(), 4, 0, 2),
            ("room-c".to_owned(), 1, 0, 0),
            ("room-b".to_owned(), 3, 0, 0),
        ]
    );
    assert!(
        store.user_rooms(&user("nobody")).await.unwrap().is_empty(),
        "a user who did nothing has no rooms"
    );
    fixture.close(store).await;
}

pub async fn unread_counts_stop_at_1000(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    stored(&store, "busy-reads", "alice", "first").await;
    let total = UNREAD_CAP as usize + 5;
    let mut tasks = Vec::new();
    for n in 0..total {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(post("busy-reads", "bob", &format!("m{n}"), None))
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rooms = store.user_rooms(&user("alice")).await.unwrap();
    assert_eq!(
        summary(&rooms),
        [("busy-reads".to_owned(), total as u64 + 1, 0, UNREAD_CAP)]
    );
    assert_eq!(mark(&store, "busy-reads", "alice", 10).await, moved(10));
    let rooms = store.user_rooms(&user("alice")).await.unwrap();
    assert_eq!(
        rooms[0].unread,
        total as u64 + 1 - 10,
        "under the cap: exact"
    );
    fixture.close(store).await;
}
