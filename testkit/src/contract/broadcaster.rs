//! The [`EventBroadcaster`] contract: every node's subscribers get a room's events in
//! publication order, nothing from before they subscribed, and a slow subscriber lags alone.

use std::time::Duration;

use banter_domain::ports::{EventBroadcaster, EventSubscription, SubscriptionError};

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
