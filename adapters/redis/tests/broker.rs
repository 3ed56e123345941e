//! The Redis broadcaster and presence registry: the ports' contracts (`banter_testkit::contract`,
//! shared with the in-memory adapters and the application's fakes; each "node" here a separate
//! connection to the same Redis namespace), plus what only a shared broker has: dead nodes, a
//! forgetful Redis, a lost link, a hanging one.
//!
//! Redis comes from `BANTER_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); without it the
//! Redis cases skip with a notice unless `BANTER_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use banter_adapter_redis::{RedisBroadcaster, RedisConfig, RedisPresence};
use banter_domain::ports::{
    EventBroadcaster, EventSubscription, PresenceRegistry, SubscriptionError,
};
use banter_domain::{Content, Message, PresenceChange, PresenceEvent, RoomEvent, Seq, Timestamp};
use banter_testkit::contract::presence::presence_event;
use banter_testkit::contract::{Cluster, Fixture, PROMPTLY, next, quiet, room, typing, user};

/// Each subscriber's queue bound.
const QUEUE: usize = 256;

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

/// Several nodes on one Redis namespace, each with connections of its own.
struct Redis {
    url: String,
    namespace: String,
    outbound_queue: usize,
    dead_after: Duration,
}

impl Redis {
    async fn new(tag: &str) -> Option<Redis> {
        Some(Redis {
            url: banter_testkit::redis_url().await?,
            namespace: banter_testkit::unique_namespace(tag),
            outbound_queue: QUEUE,
            dead_after: RedisConfig::DEFAULT_DEAD_AFTER,
        })
    }

    fn config(&self) -> RedisConfig {
        RedisConfig {
            namespace: self.namespace.clone(),
            outbound_queue: self.outbound_queue,
            dead_after: self.dead_after,
            ..RedisConfig::new(self.url.clone())
        }
    }
}

impl Redis {
    /// A node whose connections to Redis go through a proxy the test can cut.
    async fn node_through_proxy(
        &self,
    ) -> (banter_testkit::TcpProxy, RedisBroadcaster, RedisPresence) {
        let upstream = self.url.trim_start_matches("redis://").to_owned();
        let proxy = banter_testkit::TcpProxy::start(&upstream).await;
        let config = RedisConfig {
            url: format!("redis://{}", proxy.addr),
            ..self.config()
        };
        let (broadcaster, presence) = banter_adapter_redis::connect(config).await.unwrap();
        (proxy, broadcaster, presence)
    }

    /// Deletes every key of the namespace, as a Redis restart (it keeps nothing on disk)
    /// would. Returns how many there were.
    async fn forget_everything(&self) -> usize {
        let client = ::redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}:*", self.namespace))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = ::redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        keys.len()
    }
}

/// Whether `check` holds within 5 s, asking every 100 ms.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..50 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

impl Fixture for Redis {}

impl Cluster for Redis {
    type Broadcaster = RedisBroadcaster;
    type Presence = RedisPresence;

    async fn node(&self) -> (RedisBroadcaster, RedisPresence) {
        banter_adapter_redis::connect(self.config()).await.unwrap()
    }

    fn queue_capacity(&self) -> usize {
        self.outbound_queue
    }
}

banter_testkit::broadcaster_contract!(broadcaster_contract, crate::Redis::new("broadcaster"));
banter_testkit::presence_contract!(presence_contract, crate::Redis::new("presence"));
banter_testkit::announcing_presence_contract!(announcing_contract, crate::Redis::new("announced"));

// ---------- only a shared broker ----------

#[tokio::test]
async fn the_users_of_a_silent_node_are_removed_by_the_others() {
    let Some(mut cluster) = Redis::new("dead-node").await else {
        return;
    };
    // Long enough that a stalled test machine does not make "not dead yet" false.
    cluster.dead_after = Duration::from_secs(6);
    let (events, survivor) = cluster.node().await;
    let (_, doomed) = cluster.node().await;
    let mut watcher = events.subscribe(&room("general")).await.unwrap();
    survivor
        .connect(&room("general"), &user("bob"))
        .await
        .unwrap();
    doomed
        .connect(&room("general"), &user("alice"))
        .await
        .unwrap();
    doomed
        .connect(&room("general"), &user("bob"))
        .await
        .unwrap();
    assert_eq!(presence_event(&mut watcher).await.1, "bob");
    assert_eq!(presence_event(&mut watcher).await.1, "alice");
    // The doomed node's last heartbeat; then it stops, and the survivor keeps going.
    doomed.heartbeat().await.unwrap();
    drop(doomed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    survivor.heartbeat().await.unwrap();
    let still = survivor.online(&room("general"), None, 10).await.unwrap();
    assert_eq!(still.online_count, 2, "not dead yet");
    tokio::time::sleep(Duration::from_millis(6100)).await;
    survivor.heartbeat().await.unwrap();
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Leave, "alice".to_owned(), 1)
    );
    // A dead node cannot end its users' typing; the sweep does, for whoever left.
    assert_eq!(
        next(&mut watcher).await,
        RoomEvent::Typing {
            room: room("general"),
            username: user("alice"),
            is_typing: false
        }
    );
    let left = survivor.online(&room("general"), None, 10).await.unwrap();
    assert_eq!(
        left.users,
        vec![user("bob")],
        "bob is still on the survivor"
    );
    quiet(&mut watcher).await;
}

#[tokio::test]
async fn a_node_puts_its_users_back_when_redis_forgot_them() {
    let Some(cluster) = Redis::new("forgotten").await else {
        return;
    };
    let (events, node) = cluster.node().await;
    node.connect(&room("general"), &user("alice"))
        .await
        .unwrap();
    node.connect(&room("general"), &user("alice"))
        .await
        .unwrap();
    node.connect(&room("lobby"), &user("bob")).await.unwrap();
    // Redis restarts empty: every key of the namespace is gone.
    assert!(cluster.forget_everything().await > 0);
    assert_eq!(
        node.online(&room("general"), None, 10)
            .await
            .unwrap()
            .online_count,
        0
    );
    let mut watcher = events.subscribe(&room("general")).await.unwrap();
    node.heartbeat().await.unwrap();
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Join, "alice".to_owned(), 1)
    );
    let rooms = node.occupied_rooms(None, 10).await.unwrap();
    assert_eq!(rooms.len(), 2);
    // Both of alice's connections were put back: one disconnect does not make her leave.
    assert_eq!(
        node.disconnect(&room("general"), &user("alice"))
            .await
            .unwrap(),
        PresenceChange::Unchanged { online_count: 1 }
    );
    assert_eq!(
        node.disconnect(&room("general"), &user("alice"))
            .await
            .unwrap(),
        PresenceChange::Left { online_count: 0 }
    );
}

#[tokio::test]
async fn leaving_the_cluster_removes_the_nodes_users() {
    let Some(cluster) = Redis::new("leaving").await else {
        return;
    };
    let (_, staying) = cluster.node().await;
    let (_, leaving) = cluster.node().await;
    staying
        .connect(&room("general"), &user("bob"))
        .await
        .unwrap();
    leaving
        .connect(&room("general"), &user("alice"))
        .await
        .unwrap();
    leaving.leave_cluster().await.unwrap();
    let page = staying.online(&room("general"), None, 10).await.unwrap();
    assert_eq!(page.users, vec![user("bob")]);
    // The connection closing afterwards was already removed: it changes nothing, and above
    // all does not take away someone else's count.
    staying
        .connect(&room("general"), &user("alice"))
        .await
        .unwrap();
    assert_eq!(
        leaving
            .disconnect(&room("general"), &user("alice"))
            .await
            .unwrap(),
        PresenceChange::Unchanged { online_count: 2 }
    );
}

#[tokio::test]
async fn losing_the_link_closes_subscriptions_and_a_new_link_follows() {
    let Some(cluster) = Redis::new("link").await else {
        return;
    };
    let (proxy, node, _) = cluster.node_through_proxy().await;
    let (other, _) = banter_adapter_redis::connect(cluster.config())
        .await
        .unwrap();
    let mut subscription = node.subscribe(&room("general")).await.unwrap();
    other.publish(typing("general", 1)).await.unwrap();
    assert_eq!(next(&mut subscription).await, typing("general", 1));

    // The broker goes away: the subscription ends rather than silently missing events.
    proxy.stop();
    let ended = tokio::time::timeout(PROMPTLY, subscription.next())
        .await
        .unwrap();
    assert_eq!(ended.unwrap_err(), SubscriptionError::Closed);
    assert!(node.check().await.is_err(), "not ready without a broker");
    assert!(node.subscribe(&room("general")).await.is_err());

    // It comes back: readiness returns and new subscriptions work.
    proxy.resume().await;
    assert!(
        eventually(async || node.check().await.is_ok()).await,
        "ready again once Redis is back"
    );
    let mut again = node.subscribe(&room("general")).await.unwrap();
    other.publish(typing("general", 2)).await.unwrap();
    assert_eq!(next(&mut again).await, typing("general", 2));
}

#[tokio::test]
async fn messages_published_while_redis_is_away_go_out_in_order_once_it_is_back() {
    let Some(cluster) = Redis::new("unsent").await else {
        return;
    };
    let (proxy, node, _) = cluster.node_through_proxy().await;
    let (other, _) = banter_adapter_redis::connect(cluster.config())
        .await
        .unwrap();
    let mut watcher = other.subscribe(&room("general")).await.unwrap();

    proxy.stop();
    // Stored elsewhere already; the broadcast fails now and the message is kept.
    assert!(node.publish(posted("general", 1)).await.is_err());
    // Later messages queue behind it at once, in order; a typing event is not kept.
    assert!(node.publish(typing("general", 1)).await.is_err());
    for seq in 2..=30 {
        node.publish(posted("general", seq)).await.unwrap();
    }
    assert!(node.check().await.is_err(), "not ready without Redis");
    assert_eq!(
        node.flush(Duration::from_millis(300)).await,
        30,
        "nothing goes while Redis is away"
    );
    quiet(&mut watcher).await;

    // Nobody publishes and nobody asks: the node's own retry sends them, oldest first (a
    // retry already under way when Redis came back first waits out its timeout).
    proxy.resume().await;
    let first = tokio::time::timeout(Duration::from_secs(15), watcher.next())
        .await
        .expect("published again within 15 s")
        .unwrap();
    assert_eq!(first.event(), &posted("general", 1));
    for seq in 2..=30 {
        assert_eq!(next(&mut watcher).await, posted("general", seq));
    }
    // Typing is not replayed late, nothing goes out twice, and new messages go straight out.
    node.publish(posted("general", 31)).await.unwrap();
    assert_eq!(next(&mut watcher).await, posted("general", 31));
    quiet(&mut watcher).await;
    assert_eq!(node.flush(Duration::ZERO).await, 0, "nothing left");
}

#[tokio::test]
async fn while_redis_hangs_only_the_first_typing_update_waits_for_it() {
    let Some(cluster) = Redis::new("hang").await else {
        return;
    };
    let (proxy, _, node) = cluster.node_through_proxy().await;
    let general = room("general");
    assert!(!node.set_typing(&general, &user("bob"), None).await.unwrap());

    proxy.freeze();
    // The first finds out the hard way: it waits out the command timeout.
    assert!(node.set_typing(&general, &user("bob"), None).await.is_err());
    // The next ones (a post ends its poster's typing) do not wait for Redis at all.
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert!(node.set_typing(&general, &user("bob"), None).await.is_err());
    }
    let waited = started.elapsed();
    let timeout = cluster.config().command_timeout;
    assert!(
        waited < timeout,
        "5 refusals took {waited:?}, one timeout is {timeout:?}"
    );

    // Once a heartbeat gets through again, so do typing updates.
    proxy.thaw();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while node.heartbeat().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "a heartbeat got through"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!node.set_typing(&general, &user("bob"), None).await.unwrap());
}

#[tokio::test]
async fn a_disconnect_while_redis_is_away_is_sent_again_by_the_next_heartbeat() {
    let Some(cluster) = Redis::new("unsynced").await else {
        return;
    };
    let (proxy, _, node) = cluster.node_through_proxy().await;
    let (events, observer) = banter_adapter_redis::connect(cluster.config())
        .await
        .unwrap();
    let mut watcher = events.subscribe(&room("general")).await.unwrap();
    node.connect(&room("general"), &user("alice"))
        .await
        .unwrap();
    assert_eq!(presence_event(&mut watcher).await.0, PresenceEvent::Join);

    proxy.stop();
    assert!(
        node.disconnect(&room("general"), &user("alice"))
            .await
            .is_err(),
        "Redis is away"
    );
    assert_eq!(
        observer
            .online(&room("general"), None, 10)
            .await
            .unwrap()
            .online_count,
        1,
        "Redis never heard of the disconnect"
    );
    proxy.resume().await;
    assert!(
        eventually(async || node.heartbeat().await.is_ok()).await,
        "a heartbeat got through once Redis was back"
    );
    assert_eq!(
        presence_event(&mut watcher).await,
        (PresenceEvent::Leave, "alice".to_owned(), 0)
    );
    assert!(observer.occupied_rooms(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_node_stops_following_a_room_nobody_there_follows() {
    let Some(cluster) = Redis::new("unfollow").await else {
        return;
    };
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    let channel = format!("{}:room:quiet", cluster.namespace);
    let client = ::redis::Client::open(cluster.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut subscribers = async || -> i64 {
        let counts: Vec<(String, i64)> = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        counts[0].1
    };
    let first = b.subscribe(&room("quiet")).await.unwrap();
    assert_eq!(subscribers().await, 1);
    drop(first);
    // The next event for the room finds nobody on b following it: b unsubscribes.
    a.publish(typing("quiet", 1)).await.unwrap();
    assert!(
        eventually(async || subscribers().await == 0).await,
        "b still subscribed to a room nobody there follows"
    );
    // Following it again subscribes again.
    let mut again = b.subscribe(&room("quiet")).await.unwrap();
    assert_eq!(subscribers().await, 1);
    a.publish(typing("quiet", 2)).await.unwrap();
    assert_eq!(next(&mut again).await, typing("quiet", 2));
}

#[tokio::test]
async fn an_idle_link_stays_up_across_its_pings() {
    let Some(cluster) = Redis::new("pings").await else {
        return;
    };
    let (a, _) = cluster.node().await;
    let (b, _) = cluster.node().await;
    let mut subscription = b.subscribe(&room("idle")).await.unwrap();
    // Longer than the link's ping interval (5 s): the pings are answered, the link stays.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(b.is_linked().await);
    a.publish(typing("idle", 1)).await.unwrap();
    assert_eq!(next(&mut subscription).await, typing("idle", 1));
}

#[tokio::test]
async fn a_connect_whose_caller_gave_up_is_still_booked() {
    let Some(cluster) = Redis::new("cancelled").await else {
        return;
    };
    let (_, node) = cluster.node().await;
    // Polled once, then dropped: the script runs anyway, and the node books it, so the count
    // can be taken back and is restored like any other.
    let (general, alice) = (room("general"), user("alice"));
    let mut connecting = Box::pin(node.connect(&general, &alice));
    let first_poll =
        std::future::poll_fn(|cx| std::task::Poll::Ready(connecting.as_mut().poll(cx))).await;
    assert!(first_poll.is_pending(), "Redis cannot have answered yet");
    drop(connecting);
    let counted = async || {
        let page = node.online(&room("general"), None, 10).await.unwrap();
        page.online_count == 1
    };
    assert!(eventually(counted).await, "Redis counted the connect");
    // Redis forgets everything; the node's copy includes the cancelled connect.
    cluster.forget_everything().await;
    node.heartbeat().await.unwrap();
    assert_eq!(
        node.online(&room("general"), None, 10).await.unwrap().users,
        vec![user("alice")]
    );
}

#[tokio::test]
async fn a_node_that_left_takes_no_more_connections() {
    let Some(cluster) = Redis::new("left").await else {
        return;
    };
    let (_, node) = cluster.node().await;
    node.leave_cluster().await.unwrap();
    assert!(node.connect(&room("general"), &user("late")).await.is_err());
    assert_eq!(
        node.online(&room("general"), None, 10)
            .await
            .unwrap()
            .online_count,
        0
    );
}

#[tokio::test]
async fn a_typist_nobody_refreshes_lapses() {
    let Some(cluster) = Redis::new("typing-lapses").await else {
        return;
    };
    let (_, node) = cluster.node().await;
    node.set_typing(
        &room("general"),
        &user("ghost"),
        Some(Duration::from_secs(4)),
    )
    .await
    .unwrap();
    assert_eq!(
        node.typing(&room("general")).await.unwrap(),
        vec![user("ghost")]
    );
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert!(
        node.typing(&room("general")).await.unwrap().is_empty(),
        "a dead node's typist is not listed for ever"
    );
    assert!(
        !node
            .set_typing(&room("general"), &user("ghost"), None)
            .await
            .unwrap(),
        "a lapsed entry does not count as listed"
    );
}

#[tokio::test]
async fn someone_who_left_is_not_listed_as_typing() {
    let Some(cluster) = Redis::new("left-typing").await else {
        return;
    };
    let (_, a) = cluster.node().await;
    let (_, b) = cluster.node().await;
    let general = room("general");
    // Bob types on b, and his last connection (on a) closes: whichever node reports the
    // leave, he drops off the typing list with it.
    a.connect(&general, &user("bob")).await.unwrap();
    b.set_typing(&general, &user("bob"), Some(Duration::from_secs(8)))
        .await
        .unwrap();
    assert_eq!(b.typing(&general).await.unwrap(), vec![user("bob")]);
    assert_eq!(
        a.disconnect(&general, &user("bob")).await.unwrap(),
        PresenceChange::Left { online_count: 0 }
    );
    assert!(b.typing(&general).await.unwrap().is_empty());
}

#[tokio::test]
async fn ends_of_access_published_while_redis_is_away_are_kept_and_read_positions_are_not() {
    let Some(cluster) = Redis::new("revoked").await else {
        return;
    };
    let (proxy, node, _) = cluster.node_through_proxy().await;
    let (other, _) = banter_adapter_redis::connect(cluster.config())
        .await
        .unwrap();
    let mut watcher = other.subscribe(&room("team-x")).await.unwrap();
    let removed = RoomEvent::MemberRemoved {
        room: room("team-x"),
        username: user("bob"),
    };
    let read = RoomEvent::Read {
        room: room("team-x"),
        username: user("alice"),
        seq: Seq::new(3).unwrap(),
        origin: None,
    };

    proxy.stop();
    // Committed already: the removal must still reach every node, so it is kept; a read
    // position is stored and not worth retrying late.
    assert!(node.publish(removed.clone()).await.is_err());
    assert!(node.publish(read).await.is_err());
    assert_eq!(
        node.flush(Duration::from_millis(300)).await,
        1,
        "only the removal waits"
    );
    quiet(&mut watcher).await;
    proxy.resume().await;
    let first = tokio::time::timeout(Duration::from_secs(15), watcher.next())
        .await
        .expect("published again within 15 s")
        .unwrap();
    assert_eq!(first.event(), &removed);
    quiet(&mut watcher).await;
}

/// Two tabs of one user on two nodes are one typer: the node that refreshed the listing last
/// ends it and announces the end; the other stays silent, and an end already made (a post, a
/// stop) is nobody's to announce again.
#[tokio::test]
async fn the_node_that_refreshed_a_typist_last_ends_it() {
    let Some(cluster) = Redis::new("typing-owner").await else {
        return;
    };
    let ((_, a), (_, b)) = (cluster.node().await, cluster.node().await);
    let (general, bob) = (room("general"), user("bob"));
    let listed = Some(Duration::from_secs(8));
    assert!(!a.set_typing(&general, &bob, listed).await.unwrap());
    assert!(
        b.set_typing(&general, &bob, listed).await.unwrap(),
        "a's listing"
    );
    // b refreshed last: a's lapse is not the end.
    assert!(!a.end_typing(&general, &bob).await.unwrap());
    assert_eq!(a.typing(&general).await.unwrap(), vec![bob.clone()]);
    assert!(b.end_typing(&general, &bob).await.unwrap());
    assert!(a.typing(&general).await.unwrap().is_empty());
    // Ended by a post (a plain removal): a later lapse anywhere announces nothing.
    assert!(!a.set_typing(&general, &bob, listed).await.unwrap());
    assert!(b.set_typing(&general, &bob, None).await.unwrap());
    assert!(!a.end_typing(&general, &bob).await.unwrap());
    assert!(!b.end_typing(&general, &bob).await.unwrap());
}
