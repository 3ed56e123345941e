//! The private-room part of the [`MessageStore`] contract: a room is created private only when
//! it has no row yet (no messages, never created), its creator is its first member, members
//! come and go, and the listings say which rooms are private.

use banter_domain::ports::MessageStore;
use banter_domain::{PageLimit, RoomAccess};

use super::store::post;
use super::{StoreFixture, room, user};

fn private(creator: &str, members: &[&str]) -> RoomAccess {
    RoomAccess::Private {
        creator: user(creator),
        members: members.iter().map(|m| user(m)).collect(),
    }
}

pub async fn private_rooms_are_created_once_and_keep_their_members(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    assert_eq!(
        store.room_access(&room("team-x")).await.unwrap(),
        RoomAccess::Public,
        "a room never created nor posted in"
    );
    assert!(
        store
            .create_private_room(&room("team-x"), &user("alice"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.room_access(&room("team-x")).await.unwrap(),
        private("alice", &["alice"])
    );
    assert!(
        !store
            .create_private_room(&room("team-x"), &user("bob"))
            .await
            .unwrap(),
        "created before: a conflict"
    );
    store
        .append(post("public", "bob", "hi", None))
        .await
        .unwrap();
    assert!(
        !store
            .create_private_room(&room("public"), &user("bob"))
            .await
            .unwrap(),
        "a room with messages: a conflict"
    );
    assert_eq!(
        store.room_access(&room("public")).await.unwrap(),
        RoomAccess::Public
    );

    assert!(
        store
            .set_member(&room("team-x"), &user("名前"), true)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_member(&room("team-x"), &user("bob"), true)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_member(&room("team-x"), &user("bob"), true)
            .await
            .unwrap(),
        "again"
    );
    assert_eq!(
        store.room_access(&room("team-x")).await.unwrap(),
        private("alice", &["alice", "bob", "名前"]),
        "members in code-point order"
    );
    assert!(
        store
            .set_member(&room("team-x"), &user("alice"), false)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_member(&room("team-x"), &user("alice"), false)
            .await
            .unwrap()
    );
    assert_eq!(
        store.room_access(&room("team-x")).await.unwrap(),
        private("alice", &["bob", "名前"]),
        "the creator stays the creator after leaving"
    );

    // A private room takes posts like any other, and the listings say it is private.
    let first = store
        .append(post("team-x", "bob", "inside", None))
        .await
        .unwrap();
    assert_eq!(first.into_message().seq.get(), 1);
    assert!(
        store
            .create_private_room(&room("team-y"), &user("bob"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.member_rooms(&user("bob")).await.unwrap(),
        [room("team-x"), room("team-y")]
    );
    assert!(store.member_rooms(&user("alice")).await.unwrap().is_empty());
    let listed = store
        .rooms(None, PageLimit::history(100).unwrap())
        .await
        .unwrap();
    let flags: Vec<(&str, bool)> = listed
        .rooms
        .iter()
        .map(|r| (r.room.as_str(), r.private))
        .collect();
    assert_eq!(
        flags,
        [("public", false), ("team-x", true), ("team-y", true)]
    );
    let bobs = store.user_rooms(&user("bob")).await.unwrap();
    let flags: Vec<(&str, bool)> = bobs.iter().map(|r| (r.room.as_str(), r.private)).collect();
    assert_eq!(flags, [("team-x", true), ("public", false)]);

    // Durable.
    fixture.close(store).await;
    let reopened = fixture.open().await;
    assert_eq!(
        reopened.room_access(&room("team-x")).await.unwrap(),
        private("alice", &["bob", "名前"])
    );
    fixture.close(reopened).await;
}

pub async fn racing_creations_of_one_room_make_one_creator(fixture: &impl StoreFixture) {
    let one = fixture.open().await;
    let two = fixture.open().await;
    let mut tasks = Vec::new();
    for n in 0..10 {
        let store = if n % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            let creator = format!("user{n}");
            let created = store
                .create_private_room(&room("contested"), &user(&creator))
                .await
                .unwrap();
            created.then_some(creator)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        one.room_access(&room("contested")).await.unwrap(),
        private(&winners[0], &[&winners[0]])
    );
    fixture.close(one).await;
    fixture.close(two).await;
}
