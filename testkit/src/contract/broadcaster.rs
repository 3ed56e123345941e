//! The [`EventBroadcaster`] contract: every node's subscribers get a room's events in
//! publication order (changes of messages, with every field, among the other events), nothing
//! from before they subscribed, and a slow subscriber lags alone.

use std::time::Duration;

use banter_domain::ports::{EventBroadcaster, EventSubscription, SubscriptionError};
use banter_domain::{ClientId, Content, Message, Rev, RoomEvent, Seq, Timestamp};

use super::{Cluster, PROMPTLY, next, quiet, room, typing};

pub async fn events_reach_every_node_in_order(cluster: &impl Cluster) {
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    let mut on_a = a.subscribe(&room("general")).await.unwrap();
    let mut on_b = b.subscribe(&room("general")).await.unwrap();
    let mut other_room = b.subscribe(&room("other")).await.unwrap();
    // Published right after the subscriptions returned, from both nodes in turn: all arrive,
    // in the order they were published.
    for n in 0..100 {
        let publisher = if n % 2 == 0 { &a } else { &b };
        publisher.publish(typing("general", n)).await.unwrap();
    }
    for n in 0..100 {
        assert_eq!(next(&mut on_a).await, typing("general", n));
        assert_eq!(next(&mut on_b).await, typing("general", n));
    }
    quiet(&mut other_room).await;
    // And the other way round.
    b.publish(typing("other", 7)).await.unwrap();
    assert_eq!(next(&mut other_room).await, typing("other", 7));
    quiet(&mut on_a).await;
}

pub async fn events_before_subscribing_are_not_received(cluster: &impl Cluster) {
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    a.publish(typing("early", 1)).await.unwrap();
    let mut late = b.subscribe(&room("early")).await.unwrap();
    a.publish(typing("early", 2)).await.unwrap();
    assert_eq!(next(&mut late).await, typing("early", 2));
}

pub async fn a_room_can_be_left_and_followed_again(cluster: &impl Cluster) {
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    let first = b.subscribe(&room("again")).await.unwrap();
    drop(first);
    // An event for a room nobody on b follows any more (b may unsubscribe lazily now).
    a.publish(typing("again", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = b.subscribe(&room("again")).await.unwrap();
    a.publish(typing("again", 2)).await.unwrap();
    assert_eq!(next(&mut second).await, typing("again", 2));
    assert!(a.check().await.is_ok() && b.check().await.is_ok());
}

pub async fn a_slow_subscriber_lags_alone(cluster: &impl Cluster) {
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    let queue = cluster.queue_capacity();
    let mut slow = b.subscribe(&room("busy")).await.unwrap();
    let mut fast = b.subscribe(&room("busy")).await.unwrap();
    // The queue holds `queue` events; the slow one reads none of these.
    for n in 0..queue + 10 {
        a.publish(typing("busy", n)).await.unwrap();
        assert_eq!(next(&mut fast).await, typing("busy", n));
    }
    let lagged = tokio::time::timeout(PROMPTLY, slow.next()).await.unwrap();
    assert!(
        matches!(lagged, Err(SubscriptionError::Lagged { missed: 10 })),
        "{lagged:?}"
    );
}

/// A message's state after the `n`th change (edits, and a tombstone every fifth), as the
/// broker must carry it: every field, deleted or not.
fn changed(room_name: &str, n: u64) -> RoomEvent {
    let mut message = Message {
        room: room(room_name),
        seq: Seq::new(n % 7 + 1).unwrap(),
        username: super::user("名前"),
        content: Some(Content::parse(&format!("edit \"{n}\" 👋")).unwrap()),
        timestamp: Timestamp::from_unix_millis(1_795_857_302_123).unwrap(),
        client_id: Some(ClientId::parse("c-1").unwrap()),
        edited_at: Some(Timestamp::from_unix_millis(1_795_857_302_123 + n as i64).unwrap()),
    };
    if n.is_multiple_of(5) {
        message.content = None;
        message.client_id = None;
    }
    RoomEvent::MessageUpdated {
        rev: Rev::new(n + 1).unwrap(),
        message,
    }
}

pub async fn changes_reach_every_node_in_order_among_other_events(cluster: &impl Cluster) {
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    let mut on_a = a.subscribe(&room("edits")).await.unwrap();
    let mut on_b = b.subscribe(&room("edits")).await.unwrap();
    let events: Vec<RoomEvent> = (0..60u64)
        .map(|n| {
            if n.is_multiple_of(3) {
                typing("edits", n as usize)
            } else {
                changed("edits", n)
            }
        })
        .collect();
    for (n, event) in events.iter().enumerate() {
        let publisher = if n % 2 == 0 { &a } else { &b };
        publisher.publish(event.clone()).await.unwrap();
    }
    for event in &events {
        assert_eq!(&next(&mut on_a).await, event);
        assert_eq!(&next(&mut on_b).await, event);
    }
    quiet(&mut on_a).await;
}

/// A read position travels to every node with its user, seq and origin connection intact
/// (feeds decide who sees it from those), in order among the room's other events.
pub async fn read_positions_reach_every_node_with_their_origin(cluster: &impl Cluster) {
    use banter_domain::ConnectionId;
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    let mut on_a = a.subscribe(&room("reads")).await.unwrap();
    let mut on_b = b.subscribe(&room("reads")).await.unwrap();
    let read = |n: u64, origin: Option<ConnectionId>| RoomEvent::Read {
        room: room("reads"),
        username: super::user("名前.x"),
        seq: Seq::new(n).unwrap(),
        origin,
    };
    let events = [
        read(
            3,
            Some(ConnectionId {
                node: u64::MAX,
                local: 7,
            }),
        ),
        typing("reads", 1),
        read(9, None),
    ];
    for event in &events {
        a.publish(event.clone()).await.unwrap();
    }
    for event in &events {
        assert_eq!(&next(&mut on_a).await, event);
        assert_eq!(&next(&mut on_b).await, event);
    }
}

/// The ends of access to a private room reach every node, in order with the room's other
/// events, with every field: feeds close connections from them.
pub async fn ends_of_access_reach_every_node(cluster: &impl Cluster) {
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    let mut on_a = a.subscribe(&room("team-x")).await.unwrap();
    let mut on_b = b.subscribe(&room("team-x")).await.unwrap();
    let events = [
        RoomEvent::MadePrivate {
            room: room("team-x"),
            creator: super::user("alice"),
        },
        typing("team-x", 1),
        RoomEvent::MemberRemoved {
            room: room("team-x"),
            username: super::user("名前"),
        },
    ];
    for event in &events {
        b.publish(event.clone()).await.unwrap();
    }
    for event in &events {
        assert_eq!(&next(&mut on_a).await, event);
        assert_eq!(&next(&mut on_b).await, event);
    }
}
