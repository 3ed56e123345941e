//! Private rooms against fake ports: created once, members add and remove by the rules, for a
//! non-member the room does not exist (joins, listings), and removal ends the removed user's
//! connections.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod fakes;

use std::time::Duration;

use banter_application::{
    Chat, ChatSettings, FeedError, JoinError, Joined, MembershipError, Start,
};
use banter_domain::{Content, NewMessage, PageLimit, RoomEvent, RoomName, Seq, Username};
use fakes::{FakeBroadcaster, FakeClock, FakePresence, FakeStore};

type TestChat = Chat<FakeStore, FakeBroadcaster, FakePresence, FakeClock>;
type TestJoined = Joined<FakeStore, FakeBroadcaster, FakePresence, FakeClock>;

struct World {
    chat: TestChat,
    store: FakeStore,
}

fn world() -> World {
    let clock = FakeClock::default();
    let store = FakeStore::new(clock.clone());
    let chat = Chat::new(
        store.clone(),
        FakeBroadcaster::default(),
        FakePresence::default(),
        clock,
        ChatSettings::default(),
    );
    World { chat, store }
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

fn users(names: &[&str]) -> Vec<Username> {
    names.iter().map(|n| user(n)).collect()
}

impl World {
    async fn join(&self, r: &str, u: &str) -> Result<TestJoined, JoinError> {
        self.chat.join(room(r), user(u), Start::DEFAULT).await
    }

    fn insert(&self, r: &str, u: &str, text: &str) {
        self.store.insert(NewMessage {
            room: room(r),
            username: user(u),
            content: Content::parse(text).unwrap(),
            client_id: None,
        });
    }
}

/// How the feed ends within a second: `Some(error)`, or `None` when it keeps going.
async fn ends_with(joined: &mut TestJoined) -> Option<FeedError> {
    loop {
        match tokio::time::timeout(Duration::from_millis(200), joined.feed.next()).await {
            Err(_) => return None,
            Ok(Err(e)) => return Some(e),
            Ok(Ok(envelope)) => {
                assert!(
                    !matches!(
                        envelope.event(),
                        RoomEvent::MemberRemoved { .. } | RoomEvent::MadePrivate { .. }
                    ),
                    "never passed on to a connection"
                );
            }
        }
    }
}

#[tokio::test]
async fn members_add_anyone_remove_themselves_and_the_creator_removes_anyone() {
    let w = world();
    let team = room("team-x");
    assert_eq!(
        w.chat
            .create_private_room(&team, &user("alice"))
            .await
            .unwrap(),
        users(&["alice"])
    );
    assert_eq!(
        w.chat.create_private_room(&team, &user("bob")).await,
        Err(MembershipError::Conflict)
    );
    w.insert("public", "bob", "hi");
    assert_eq!(
        w.chat
            .create_private_room(&room("public"), &user("bob"))
            .await,
        Err(MembershipError::Conflict),
        "a room with messages"
    );
    assert_eq!(
        w.chat.members(&room("public"), &user("bob")).await,
        Err(MembershipError::NotFound),
        "a public room has no members"
    );

    assert_eq!(
        w.chat.add_member(&team, &user("bob"), &user("carol")).await,
        Err(MembershipError::NotFound),
        "a non-member cannot see the room"
    );
    assert_eq!(
        w.chat
            .add_member(&team, &user("alice"), &user("bob"))
            .await
            .unwrap(),
        users(&["alice", "bob"])
    );
    assert_eq!(
        w.chat
            .add_member(&team, &user("bob"), &user("carol"))
            .await
            .unwrap(),
        users(&["alice", "bob", "carol"]),
        "any member adds"
    );
    assert_eq!(
        w.chat
            .add_member(&team, &user("bob"), &user("carol"))
            .await
            .unwrap(),
        users(&["alice", "bob", "carol"]),
        "again: nothing changes"
    );
    assert_eq!(
        w.chat
            .remove_member(&team, &user("bob"), &user("carol"))
            .await,
        Err(MembershipError::Forbidden)
    );
    assert_eq!(
        w.chat
            .remove_member(&team, &user("alice"), &user("dave"))
            .await,
        Err(MembershipError::NotFound)
    );
    assert_eq!(
        w.chat
            .remove_member(&team, &user("carol"), &user("carol"))
            .await
            .unwrap(),
        users(&["alice", "bob"])
    );
    assert_eq!(
        w.chat
            .remove_member(&team, &user("alice"), &user("bob"))
            .await
            .unwrap(),
        users(&["alice"])
    );
    assert!(w.chat.readable(&team, Some(&user("alice"))).await.unwrap());
    assert!(!w.chat.readable(&team, Some(&user("bob"))).await.unwrap());
    assert!(!w.chat.readable(&team, None).await.unwrap());
    assert!(w.chat.readable(&room("public"), None).await.unwrap());
    assert_eq!(
        w.chat.member_rooms(&user("alice")).await.unwrap(),
        [room("team-x")]
    );
    assert!(w.chat.member_rooms(&user("bob")).await.unwrap().is_empty());
}

#[tokio::test]
async fn for_a_non_member_a_private_room_does_not_exist() {
    let w = world();
    w.chat
        .create_private_room(&room("team-x"), &user("alice"))
        .await
        .unwrap();
    w.insert("team-x", "alice", "secret");
    w.insert("lobby", "bob", "open");
    assert!(matches!(
        w.join("team-x", "bob").await,
        Err(JoinError::NotFound)
    ));
    let alice = w.join("team-x", "alice").await.unwrap();
    assert_eq!(alice.welcome.messages.len(), 1);

    let limit = PageLimit::history(100).unwrap();
    let names = |page: banter_application::RoomsPage| -> Vec<String> {
        page.rooms.into_iter().map(|r| r.room.to_string()).collect()
    };
    let for_bob = w.chat.rooms(None, limit, Some(&user("bob"))).await.unwrap();
    assert_eq!(names(for_bob), ["lobby"]);
    let anonymous = w.chat.rooms(None, limit, None).await.unwrap();
    assert_eq!(names(anonymous), ["lobby"]);
    let for_alice = w
        .chat
        .rooms(None, limit, Some(&user("alice")))
        .await
        .unwrap();
    assert_eq!(names(for_alice), ["lobby", "team-x"]);

    // Alice posted there; once removed, it leaves her rooms.
    let listed = |rooms: Vec<banter_domain::UserRoom>| -> Vec<String> {
        rooms.into_iter().map(|r| r.room.to_string()).collect()
    };
    assert_eq!(
        listed(w.chat.user_rooms(&user("alice")).await.unwrap()),
        ["team-x"]
    );
    w.chat
        .remove_member(&room("team-x"), &user("alice"), &user("alice"))
        .await
        .unwrap();
    assert!(w.chat.user_rooms(&user("alice")).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_private_room_with_people_online_hides_them_from_the_listing() {
    let w = world();
    let _alice = w.join("quiet", "alice").await.unwrap();
    w.chat
        .create_private_room(&room("quiet"), &user("alice"))
        .await
        .unwrap();
    let limit = PageLimit::history(100).unwrap();
    let for_bob = w.chat.rooms(None, limit, Some(&user("bob"))).await.unwrap();
    assert!(for_bob.rooms.is_empty(), "{for_bob:?}");
    let for_alice = w
        .chat
        .rooms(None, limit, Some(&user("alice")))
        .await
        .unwrap();
    assert_eq!(for_alice.rooms.len(), 1);
    assert_eq!(for_alice.rooms[0].online, 1);
}

#[tokio::test]
async fn removal_ends_the_removed_users_connections_only() {
    let w = world();
    let team = room("team-x");
    w.chat
        .create_private_room(&team, &user("alice"))
        .await
        .unwrap();
    w.chat
        .add_member(&team, &user("alice"), &user("bob"))
        .await
        .unwrap();
    let mut alice = w.join("team-x", "alice").await.unwrap();
    let mut bob1 = w.join("team-x", "bob").await.unwrap();
    let mut bob2 = w.join("team-x", "bob").await.unwrap();
    w.chat
        .remove_member(&team, &user("alice"), &user("bob"))
        .await
        .unwrap();
    assert_eq!(ends_with(&mut bob1).await, Some(FeedError::Revoked));
    assert_eq!(ends_with(&mut bob2).await, Some(FeedError::Revoked));
    assert_eq!(ends_with(&mut alice).await, None, "the others stay");
    assert!(matches!(
        w.join("team-x", "bob").await,
        Err(JoinError::NotFound)
    ));
    assert_eq!(alice.welcome.last_seq, Seq::ZERO);
}

#[tokio::test]
async fn making_a_room_private_ends_everyone_elses_connections() {
    let w = world();
    let mut alice = w.join("hideout", "alice").await.unwrap();
    let mut bob = w.join("hideout", "bob").await.unwrap();
    w.chat
        .create_private_room(&room("hideout"), &user("alice"))
        .await
        .unwrap();
    assert_eq!(ends_with(&mut bob).await, Some(FeedError::Revoked));
    assert_eq!(ends_with(&mut alice).await, None);
}
