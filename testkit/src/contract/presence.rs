//! The [`PresenceRegistry`] contract: people (not connections) counted across nodes, sorted
//! and paged lists, typists seen from every node; and, for a registry that announces its
//! changes, the joins and leaves it tells the room.

use std::time::Duration;

use banter_domain::ports::{EventBroadcaster, EventSubscription, PresenceRegistry};
use banter_domain::{PresenceChange, PresenceEvent, RoomEvent};

use super::{Cluster, next, quiet, room, user};

pub async fn presence_counts_people_across_nodes(cluster: &impl Cluster) {
    let (_, a) = cluster.node().await;
    let (_, b) = cluster.node().await;
    let general = room("general");
    let (alice, bob) = (user("alice"), user("bob"));
    assert_eq!(
        a.connect(&general, &alice).await.unwrap(),
        PresenceChange::Joined { online_count: 1 }
    );
    assert_eq!(
        b.connect(&general, &alice).await.unwrap(),
        PresenceChange::Unchanged { online_count: 1 },
        "a second tab on another node is the same person"
    );
    assert_eq!(
        b.connect(&general, &bob).await.unwrap(),
        PresenceChange::Joined { online_count: 2 }
    );
    assert_eq!(
        a.disconnect(&general, &alice).await.unwrap(),
        PresenceChange::Unchanged { online_count: 2 }
    );
    let page = a.online(&general, None, 10).await.unwrap();
    assert_eq!(page.users, vec![alice.clone(), bob.clone()]);
    assert_eq!(
        b.disconnect(&general, &alice).await.unwrap(),
        PresenceChange::Left { online_count: 1 }
    );
    assert_eq!(
        b.disconnect(&general, &bob).await.unwrap(),
        PresenceChange::Left { online_count: 0 }
    );
    assert!(a.occupied_rooms(None, 10).await.unwrap().is_empty());
}

pub async fn online_lists_are_sorted_and_paged(cluster: &impl Cluster) {
    let (_, a) = cluster.node().await;
    let (_, b) = cluster.node().await;
    let names = ["zoe", "Émile", "bob", "alice", "名前", "carol"];
    for (i, name) in names.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        node.connect(&room("paged"), &user(name)).await.unwrap();
    }
    b.connect(&room("another"), &user("x")).await.unwrap();
    let first = a.online(&room("paged"), None, 4).await.unwrap();
    assert_eq!(first.online_count, 6);
    assert_eq!(
        first.users,
        ["alice", "bob", "carol", "zoe"].map(user).to_vec(),
        "code-point order"
    );
    assert!(first.has_more);
    let rest = b
        .online(&room("paged"), Some(&user("zoe")), 4)
        .await
        .unwrap();
    assert_eq!(rest.users, ["Émile", "名前"].map(user).to_vec());
    assert!(!rest.has_more);
    let empty = a.online(&room("nobody"), None, 4).await.unwrap();
    assert_eq!((empty.users.len(), empty.online_count), (0, 0));

    let rooms = a.occupied_rooms(None, 10).await.unwrap();
    let listed: Vec<(&str, u64)> = rooms
        .iter()
        .map(|r| (r.room.as_str(), r.online_count))
        .collect();
    assert_eq!(listed, vec![("another", 1), ("paged", 6)]);
    let after = a.occupied_rooms(Some(&room("another")), 1).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].room, room("paged"));
}

pub async fn typists_are_listed_on_every_node(cluster: &impl Cluster) {
    let (_, a) = cluster.node().await;
    let (_, b) = cluster.node().await;
    let general = room("general");
    let listed = Some(Duration::from_secs(8));
    assert!(
        !a.set_typing(&general, &user("zoe"), listed).await.unwrap(),
        "not listed before"
    );
    assert!(!b.set_typing(&general, &user("bob"), listed).await.unwrap());
    assert!(
        !a.set_typing(&room("other"), &user("x"), listed)
            .await
            .unwrap()
    );
    assert_eq!(
        b.typing(&general).await.unwrap(),
        vec![user("bob"), user("zoe")],
        "sorted, from both nodes"
    );
    // A refresh is one entry; every node knows who was listed, whoever listed them.
    assert!(a.set_typing(&general, &user("zoe"), listed).await.unwrap());
    assert!(b.set_typing(&general, &user("zoe"), None).await.unwrap());
    assert!(!b.set_typing(&general, &user("zoe"), None).await.unwrap());
    assert_eq!(a.typing(&general).await.unwrap(), vec![user("bob")]);
    assert!(a.typing(&room("nobody")).await.unwrap().is_empty());
}

/// The next event on `subscription`, which must be a presence event: (what, who, count).
pub async fn presence_event(
    subscription: &mut impl EventSubscription,
) -> (PresenceEvent, String, u64) {
    match next(subscription).await {
        RoomEvent::Presence {
            event,
            username,
            online_count,
            ..
        } => (event, username.as_str().to_owned(), online_count),
        other => panic!("expected a presence event, got {other:?}"),
    }
}

pub async fn joins_and_leaves_are_announced_by_the_registry<C: Cluster>(cluster: &C) {
    // Only a registry that announces its changes is held to this; others do not compile here.
    const { assert!(<C::Presence as PresenceRegistry>::ANNOUNCES_CHANGES) };
    let (a_events, a) = cluster.node().await;
    let (_, b) = cluster.node().await;
    let mut watcher = a_events.subscribe(&room("general")).await.unwrap();
    // Names pass through whatever encoding the registry uses intact.
    a.connect(&room("general"), &user("Zoë_名前"))
        .await
        .unwrap();
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Join, "Zoë_名前".to_owned(), 1)
    );
    a.disconnect(&room("general"), &user("Zoë_名前"))
        .await
        .unwrap();
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Leave, "Zoë_名前".to_owned(), 0)
    );
    a.connect(&room("general"), &user("alice")).await.unwrap();
    b.connect(&room("general"), &user("alice")).await.unwrap();
    b.connect(&room("general"), &user("bob")).await.unwrap();
    a.disconnect(&room("general"), &user("alice"))
        .await
        .unwrap();
    b.disconnect(&room("general"), &user("alice"))
        .await
        .unwrap();
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Join, "alice".to_owned(), 1)
    );
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Join, "bob".to_owned(), 2)
    );
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Leave, "alice".to_owned(), 1)
    );
    quiet(&mut watcher).await;
}
