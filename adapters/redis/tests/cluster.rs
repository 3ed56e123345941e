//! The Redis adapters on a Redis Cluster (`redis-cluster://`), started by the tests themselves
//! (`banter_testkit::RedisCluster`: three primaries shared by the binary, or a cluster of a
//! test's own with a replica per primary when the test kills one). The ports' contracts run
//! here as they do on one server, plus what only a cluster has: a node's rooms on different
//! shards, sweeps done room by room, incarnations, and a primary failing over during traffic.
//!
//! Without `redis-server` the cases skip with a notice unless `BANTER_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use banter_adapter_redis::{RedisBroadcaster, RedisConfig, RedisPresence};
use banter_domain::ports::{
    EventBroadcaster, EventSubscription, PresenceRegistry, SubscriptionError,
};
use banter_domain::{Content, Message, PresenceChange, PresenceEvent, RoomEvent, Seq, Timestamp};
use banter_testkit::RedisCluster;
use banter_testkit::contract::presence::presence_event;
use banter_testkit::contract::{Cluster, Fixture, next, quiet, room, user};

/// Each subscriber's queue bound.
const QUEUE: usize = 256;

/// Nodes on one namespace of a Redis Cluster.
struct OnCluster {
    url: String,
    namespace: String,
    dead_after: Duration,
}

impl OnCluster {
    async fn new(tag: &str) -> Option<OnCluster> {
        let cluster = RedisCluster::shared()?;
        Some(Self::on(cluster, tag))
    }

    fn on(cluster: &RedisCluster, tag: &str) -> OnCluster {
        OnCluster {
            url: cluster.url(),
            namespace: banter_testkit::unique_namespace(tag),
            dead_after: RedisConfig::DEFAULT_DEAD_AFTER,
        }
    }

    fn config(&self) -> RedisConfig {
        RedisConfig {
            namespace: self.namespace.clone(),
            outbound_queue: QUEUE,
            dead_after: self.dead_after,
            ..RedisConfig::new(self.url.clone())
        }
    }
}

impl Fixture for OnCluster {}

impl Cluster for OnCluster {
    type Broadcaster = RedisBroadcaster;
    type Presence = RedisPresence;

    async fn node(&self) -> (RedisBroadcaster, RedisPresence) {
        banter_adapter_redis::connect(self.config()).await.unwrap()
    }

    fn queue_capacity(&self) -> usize {
        QUEUE
    }
}

banter_testkit::broadcaster_contract!(broadcaster_contract, crate::OnCluster::new("c-broadcaster"));
banter_testkit::presence_contract!(presence_contract, crate::OnCluster::new("c-presence"));
banter_testkit::announcing_presence_contract!(
    announcing_contract,
    crate::OnCluster::new("c-announced")
);

fn posted(room_name: &str, seq: u64) -> RoomEvent {
    RoomEvent::MessagePosted(Message {
        room: room(room_name),
        seq: Seq::new(seq).unwrap(),
        username: user("alice"),
        content: Some(Content::parse(&format!("message {seq}")).unwrap()),
        timestamp: Timestamp::from_unix_millis(1_795_857_302_123).unwrap(),
        client_id: None,
        edited_at: None,
    })
}

fn seq_of(event: &RoomEvent) -> Option<u64> {
    match event {
        RoomEvent::MessagePosted(message) => Some(message.seq.get()),
        _ => None,
    }
}

/// Rooms whose keys live on three different shards of a three-primary cluster.
fn rooms_on_different_shards(cluster: &RedisCluster, namespace: &str) -> Vec<String> {
    let mut seen = std::collections::HashMap::new();
    for i in 0..200 {
        let name = format!("room-{i}");
        let master = cluster.master_of(&format!("{namespace}:{{{name}}}:events"));
        seen.entry(master).or_insert(name);
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "three shards among 200 rooms");
    seen.into_values().collect()
}

#[tokio::test]
async fn a_dead_nodes_users_are_swept_from_rooms_on_every_shard() {
    let Some(shared) = RedisCluster::shared() else {
        return;
    };
    let mut fixture = OnCluster::on(shared, "c-dead-node");
    fixture.dead_after = Duration::from_secs(6);
    let rooms = rooms_on_different_shards(shared, &fixture.namespace);
    let (events, survivor) = fixture.node().await;
    let (_, doomed) = fixture.node().await;
    let mut watchers = Vec::new();
    for name in &rooms {
        watchers.push(events.subscribe(&room(name)).await.unwrap());
        doomed.connect(&room(name), &user("alice")).await.unwrap();
    }
    survivor
        .connect(&room(&rooms[0]), &user("bob"))
        .await
        .unwrap();
    doomed
        .connect(&room(&rooms[0]), &user("bob"))
        .await
        .unwrap();
    for watcher in &mut watchers {
        assert_eq!(presence_event(watcher).await.1, "alice");
    }
    assert_eq!(presence_event(&mut watchers[0]).await.1, "bob");
    assert_eq!(survivor.occupied_rooms(None, 10).await.unwrap().len(), 3);

    doomed.heartbeat().await.unwrap();
    drop(doomed);
    tokio::time::sleep(Duration::from_millis(6100)).await;
    survivor.heartbeat().await.unwrap();
    for (i, watcher) in watchers.iter_mut().enumerate() {
        let remaining = u64::from(i == 0);
        assert_eq!(
            presence_event(watcher).await,
            (PresenceEvent::Leave, "alice".to_owned(), remaining)
        );
        assert_eq!(
            next(watcher).await,
            RoomEvent::Typing {
                room: room(&rooms[i]),
                username: user("alice"),
                is_typing: false
            }
        );
        quiet(watcher).await;
    }
    let left = survivor.online(&room(&rooms[0]), None, 10).await.unwrap();
    assert_eq!(
        left.users,
        vec![user("bob")],
        "bob is still on the survivor"
    );
    // The emptied rooms are no longer listed as occupied.
    let occupied = survivor.occupied_rooms(None, 10).await.unwrap();
    assert_eq!(
        occupied.iter().map(|r| r.room.as_str()).collect::<Vec<_>>(),
        [rooms[0].as_str()]
    );
    // A second sweep finds nothing more to do.
    survivor.heartbeat().await.unwrap();
    quiet(&mut watchers[0]).await;
}

#[tokio::test]
async fn a_node_swept_while_alive_comes_back_under_a_new_incarnation() {
    let Some(shared) = RedisCluster::shared() else {
        return;
    };
    let mut fixture = OnCluster::on(shared, "c-incarnation");
    fixture.dead_after = Duration::from_secs(2);
    let (events, other) = fixture.node().await;
    let (_, paused) = fixture.node().await;
    let mut watcher = events.subscribe(&room("general")).await.unwrap();
    paused
        .connect(&room("general"), &user("alice"))
        .await
        .unwrap();
    paused
        .connect(&room("general"), &user("alice"))
        .await
        .unwrap();
    paused.connect(&room("lobby"), &user("bob")).await.unwrap();
    assert_eq!(presence_event(&mut watcher).await.1, "alice");

    // The paused node misses its heartbeats and is swept by the other.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    other.heartbeat().await.unwrap();
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Leave, "alice".to_owned(), 0)
    );
    assert_eq!(
        next(&mut watcher).await,
        RoomEvent::Typing {
            room: room("general"),
            username: user("alice"),
            is_typing: false
        }
    );
    assert_eq!(
        other
            .online(&room("lobby"), None, 10)
            .await
            .unwrap()
            .online_count,
        0
    );
    // It wakes up: its heartbeat finds it unknown, and it puts its users back.
    paused.heartbeat().await.unwrap();
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Join, "alice".to_owned(), 1)
    );
    assert_eq!(
        other.online(&room("lobby"), None, 10).await.unwrap().users,
        vec![user("bob")]
    );
    // The sweep of its old incarnation, finished by anyone, takes nothing of the new one.
    other.heartbeat().await.unwrap();
    paused.heartbeat().await.unwrap();
    // Both of alice's connections were put back.
    assert_eq!(
        paused
            .disconnect(&room("general"), &user("alice"))
            .await
            .unwrap(),
        PresenceChange::Unchanged { online_count: 1 }
    );
    assert_eq!(
        paused
            .disconnect(&room("general"), &user("alice"))
            .await
            .unwrap(),
        PresenceChange::Left { online_count: 0 }
    );
}

#[tokio::test]
async fn leaving_removes_the_nodes_users_on_every_shard() {
    let Some(shared) = RedisCluster::shared() else {
        return;
    };
    let fixture = OnCluster::on(shared, "c-leaving");
    let rooms = rooms_on_different_shards(shared, &fixture.namespace);
    let (_, staying) = fixture.node().await;
    let (_, leaving) = fixture.node().await;
    staying
        .connect(&room(&rooms[0]), &user("bob"))
        .await
        .unwrap();
    for name in &rooms {
        leaving.connect(&room(name), &user("alice")).await.unwrap();
    }
    leaving.leave_cluster().await.unwrap();
    for name in &rooms {
        let page = staying.online(&room(name), None, 10).await.unwrap();
        let expected = if name == &rooms[0] {
            vec![user("bob")]
        } else {
            vec![]
        };
        assert_eq!(page.users, expected, "{name}");
    }
    assert_eq!(
        leaving
            .disconnect(&room(&rooms[1]), &user("alice"))
            .await
            .unwrap(),
        PresenceChange::Unchanged { online_count: 0 }
    );
}

/// A slot handed to another primary (a resharding): the shard that gave it up ends the shard
/// subscriptions of its channels on its own. The node closes that room's subscriptions only (the
/// clients resume from the store); the other rooms keep flowing, and the moved room can be
/// followed again on its new shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_slot_closes_only_its_rooms_subscriptions() {
    let Some(cluster) = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap()
    else {
        return;
    };
    let fixture = OnCluster::on(&cluster, "c-moved");
    let (node, _) = fixture.node().await;
    let (other, _) = fixture.node().await;
    let mut moving = node.subscribe(&room("moving")).await.unwrap();
    let mut staying = node.subscribe(&room("staying")).await.unwrap();
    other.publish(posted("moving", 1)).await.unwrap();
    other.publish(posted("staying", 1)).await.unwrap();
    assert_eq!(seq_of(&next(&mut moving).await), Some(1));
    assert_eq!(seq_of(&next(&mut staying).await), Some(1));

    let channel = format!("{}:{{moving}}:events", fixture.namespace);
    let (from, to) = tokio::task::block_in_place(|| cluster.move_slot_of(&channel));
    let ended = tokio::time::timeout(Duration::from_secs(10), moving.next())
        .await
        .expect("the moved room's subscription ends");
    assert_eq!(
        ended.unwrap_err(),
        SubscriptionError::Closed,
        "slot moved from {from} to {to}"
    );
    other.publish(posted("staying", 2)).await.unwrap();
    assert_eq!(
        seq_of(&next(&mut staying).await),
        Some(2),
        "the other room was not touched"
    );
    let mut again = node.subscribe(&room("moving")).await.unwrap();
    other.publish(posted("moving", 2)).await.unwrap();
    assert_eq!(seq_of(&next(&mut again).await), Some(2));
    assert!(node.is_linked().await, "the link itself stayed up");
}

/// A primary killed while a node publishes a room's messages and another follows them: the
/// follower never skips a message silently. Its subscription delivers them in order with no
/// gap, and if the failover cost it events it ends instead (the transport then closes the
/// client's socket and the client resumes from the store). After the failover, publishing,
/// following and presence work again, and the messages kept while the shard was away go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failing_over_during_traffic_leaves_no_gap() {
    let Some(mut cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let fixture = OnCluster::on(&cluster, "c-failover");
    let (publisher, publisher_presence) = fixture.node().await;
    let (follower, follower_presence) = fixture.node().await;
    let general = room("general");
    let mut subscription = follower.subscribe(&general).await.unwrap();

    // Posts every 10 ms until told to stop; the follower stops it once it has seen this many,
    // several seconds past the failover.
    const ENOUGH: u64 = 700;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let publisher = publisher.clone();
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                seq += 1;
                // A failed publish is kept and sent later in order; the error is for the caller.
                let _ = publisher.publish(posted("general", seq)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut seen = 0;
    let mut subscriptions = 1;
    let mut ended_by_failover = false;
    let killed = {
        // Let traffic flow, then kill the room's primary (in a blocking task: it waits for
        // the replica to take over).
        while seen < 50 {
            let event = next(&mut subscription).await;
            let seq = seq_of(&event).unwrap();
            assert_eq!(seq, seen + 1, "in order, no gap");
            seen = seq;
        }
        let channel = format!("{}:{{general}}:events", fixture.namespace);
        tokio::task::block_in_place(|| cluster.kill_master_of(&channel))
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(20), subscription.next()).await {
            Ok(Ok(event)) => {
                let Some(seq) = seq_of(event.event()) else {
                    continue;
                };
                // A publish that timed out but arrived comes again when kept: a repeat, never a
                // gap.
                assert!(seq <= seen + 1, "gap: {seen} then {seq}");
                seen = seen.max(seq);
                if seen >= ENOUGH {
                    break;
                }
            }
            Ok(Err(SubscriptionError::Closed)) => {
                // Ended rather than skipping: a client resumes from the store here. Follow
                // again (retrying while the shard is still failing over).
                ended_by_failover = true;
                subscription = loop {
                    match follower.subscribe(&general).await {
                        Ok(again) => break again,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                subscriptions += 1;
                // What was missed is in the store; here, the next event defines the new start.
                let event = next(&mut subscription).await;
                seen = seq_of(&event).unwrap_or(seen);
            }
            Ok(Err(other)) => panic!("unexpected subscription error {other:?}"),
            Err(_) => panic!("no event for 20 s after {seen} (primary {killed} killed)"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    publishing.await.unwrap();
    assert_eq!(
        publisher.flush(Duration::from_secs(10)).await,
        0,
        "the kept messages went out"
    );
    eprintln!(
        "failover: primary {killed} killed; subscriptions used: {subscriptions}; ended by the failover: {ended_by_failover}"
    );
    // Presence works on the new primary.
    assert!(matches!(
        follower_presence
            .connect(&general, &user("alice"))
            .await
            .unwrap(),
        PresenceChange::Joined { .. }
    ));
    publisher_presence.heartbeat().await.unwrap();
    follower_presence.heartbeat().await.unwrap();
    assert_eq!(
        publisher_presence
            .online(&general, None, 10)
            .await
            .unwrap()
            .users,
        vec![user("alice")]
    );
}
