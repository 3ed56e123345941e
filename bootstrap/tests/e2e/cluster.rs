//! Several `banter serve` processes sharing one Postgres database and one Redis broker are one
//! chat service (CONTRACT, "Command line"): guarantees 1–4 across nodes, and the users of a
//! node that dies disappear from `online` within 30 seconds.
//!
//! Every test gets its own Postgres database and Redis namespace. The tests marked
//! `on_both_brokers!` run twice: on one Redis and on a Redis Cluster (`redis-cluster://`, three
//! primaries started by the test binary). Without Postgres or Redis the tests skip with a
//! notice, unless `BANTER_REQUIRE_SERVICES=1` (CI), where they fail.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Database, TestServer, WsClient, connect, get_json, get_text, http};

/// The shared services of one test cluster.
pub(crate) struct Cluster {
    database: banter_testkit::TestDatabase,
    broker: String,
    namespace: String,
}

impl Cluster {
    pub(crate) async fn new(tag: &str) -> Option<Cluster> {
        let broker = banter_testkit::redis_url().await?;
        Self::with_broker(broker, tag).await
    }

    /// The nodes share a Redis Cluster (the test binary's, three primaries).
    pub(crate) async fn on_redis_cluster(tag: &str) -> Option<Cluster> {
        let broker = tokio::task::block_in_place(banter_testkit::RedisCluster::shared)?.url();
        Self::with_broker(broker, tag).await
    }

    async fn with_broker(broker: String, tag: &str) -> Option<Cluster> {
        let database = banter_testkit::TestDatabase::create().await?;
        Some(Cluster {
            database,
            broker,
            namespace: banter_testkit::unique_namespace(tag),
        })
    }

    /// Starts one more node, talking to Redis at `broker` (the real one unless a test puts
    /// a proxy in between).
    async fn node_via(&self, broker: &str) -> TestServer {
        self.node_with(broker, &[], &[]).await
    }

    /// Starts one more node with extra flags and environment (auth `jwt`, say).
    pub(crate) async fn node_with(
        &self,
        broker: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> TestServer {
        self.node_listening("127.0.0.1:0", broker, extra, envs)
            .await
    }

    /// As [`Cluster::node_with`], listening on `listen` (a node restarted in its place).
    pub(crate) async fn node_listening(
        &self,
        listen: &str,
        broker: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> TestServer {
        let database = Database {
            url: self.database.url.clone(),
            dir: None,
        };
        let mut args = vec![
            "--broker",
            broker,
            "--redis-namespace",
            &self.namespace,
            // Generous on a loaded test machine; the cut-link test does not wait for it
            // (a cut closes the socket, which the node sees at once).
            "--redis-timeout",
            "10",
            "--rate-limit",
            "off",
        ];
        args.extend_from_slice(extra);
        TestServer::start_listening(&database, listen, &args, envs).await
    }

    /// The Redis URL the nodes use.
    pub(crate) fn broker(&self) -> &str {
        &self.broker
    }

    pub(crate) async fn node(&self) -> TestServer {
        self.node_via(&self.broker).await
    }
}

/// Declares tests `$name::on_redis` and `$name::on_redis_cluster`, each running the body
/// `async fn $name(cluster: Cluster)` on nodes sharing that broker.
macro_rules! on_both_brokers {
    ($name:ident, $tag:literal) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redis() {
                if let Some(cluster) = super::Cluster::new($tag).await {
                    super::$name(cluster).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redis_cluster() {
                if let Some(cluster) = super::Cluster::on_redis_cluster($tag).await {
                    super::$name(cluster).await;
                }
            }
        }
    };
}

/// Chat messages until `count` arrived, skipping presence and typing frames.
async fn messages(client: &mut WsClient, count: usize) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    while got.len() < count {
        let Some(frame) = client.recv_within(crate::helpers::PROMPTLY).await else {
            let seqs: Vec<&Value> = got.iter().map(|m| &m["seq"]).collect();
            panic!("{} of {count} messages arrived: seqs {seqs:?}", got.len());
        };
        if frame["type"] == "chat_message" {
            got.push(frame["message"].clone());
        }
    }
    got
}

/// The next presence frame, skipping typing frames.
async fn presence_frame(client: &mut WsClient) -> Value {
    client.recv_type("presence").await
}

on_both_brokers!(
    messages_posted_on_every_node_reach_every_node_in_order_without_gaps,
    "order"
);
async fn messages_posted_on_every_node_reach_every_node_in_order_without_gaps(cluster: Cluster) {
    let nodes = [
        cluster.node().await,
        cluster.node().await,
        cluster.node().await,
    ];
    let mut listeners = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        listeners.push(
            connect(node, "general", &format!("listener{i}"), "")
                .await
                .0,
        );
    }
    const PER_NODE: usize = 40;
    // Everyone is connected before anyone posts: a later connection would get the first
    // messages in its welcome instead of as frames.
    let mut connected = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        connected.push(connect(node, "general", &format!("poster{i}"), "").await.0);
    }
    let mut posters = Vec::new();
    for (i, mut poster) in connected.into_iter().enumerate() {
        posters.push(tokio::spawn(async move {
            // Fired without waiting for the echoes: the three nodes commit concurrently.
            for n in 0..PER_NODE {
                poster
                    .post(&format!("{i}:{n}"), Some(&format!("p{i}-{n}")))
                    .await;
            }
            poster
        }));
    }
    let total = PER_NODE * nodes.len();
    for listener in &mut listeners {
        let got = messages(listener, total).await;
        let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=total as u64).collect::<Vec<_>>(),
            "every node delivers every message once, in seq order, without gaps"
        );
        // Each poster's messages keep their order.
        for i in 0..nodes.len() {
            let own: Vec<String> = got
                .iter()
                .filter(|m| m["username"] == format!("poster{i}"))
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect();
            let expected: Vec<String> = (0..PER_NODE).map(|n| format!("{i}:{n}")).collect();
            assert_eq!(own, expected);
        }
        listener.assert_quiet(Duration::from_millis(200)).await;
    }
    for poster in posters {
        let mut poster = poster.await.unwrap();
        assert_eq!(messages(&mut poster, total).await.len(), total);
    }
    // Stored before shown: any node's history has all of them.
    let history = get_json(
        &nodes[2],
        &format!("/api/rooms/general/messages?limit={}", 200.min(total)),
    )
    .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), total);
}

on_both_brokers!(presence_counts_people_across_nodes, "presence");
async fn presence_counts_people_across_nodes(cluster: Cluster) {
    let (n0, n1, n2) = (
        cluster.node().await,
        cluster.node().await,
        cluster.node().await,
    );
    let (mut bob, _) = connect(&n0, "general", "bob", "").await;
    let (mut tab1, _) = connect(&n1, "general", "alice", "").await;
    assert_eq!(
        presence_frame(&mut bob).await,
        json!({"type": "presence", "event": "join", "username": "alice", "online_count": 2})
    );
    let (tab2, welcome) = connect(&n2, "general", "alice", "").await;
    assert_eq!(
        welcome["online"],
        json!(["alice", "bob"]),
        "two tabs, one entry"
    );
    assert_eq!(welcome["online_count"], 2);
    bob.assert_quiet(Duration::from_millis(300)).await;
    let rooms = get_json(&n1, "/api/rooms").await;
    assert_eq!(rooms["rooms"][0]["room"], "general");
    assert_eq!(rooms["rooms"][0]["online"], 2);

    tab1.stream.close(None).await.unwrap();
    bob.assert_quiet(Duration::from_millis(300)).await;
    let presence = get_json(&n2, "/api/rooms/general/presence").await;
    assert_eq!(presence["online"], json!(["alice", "bob"]));
    drop(tab2);
    assert_eq!(
        presence_frame(&mut bob).await,
        json!({"type": "presence", "event": "leave", "username": "alice", "online_count": 1})
    );
    let presence = get_json(&n1, "/api/rooms/general/presence").await;
    assert_eq!(presence["online"], json!(["bob"]));
}

on_both_brokers!(a_resend_to_another_node_is_recognised, "resend");
async fn a_resend_to_another_node_is_recognised(cluster: Cluster) {
    let (n0, n1, n2) = (
        cluster.node().await,
        cluster.node().await,
        cluster.node().await,
    );
    let (mut watcher, _) = connect(&n2, "general", "carol", "").await;
    let (mut first, _) = connect(&n0, "general", "alice", "").await;
    first.post("only once", Some("c-1")).await;
    let original = first.recv_type("chat_message").await["message"].clone();
    // The first connection dropped before it saw the echo; the client resends on another node.
    drop(first);
    let (mut second, _) = connect(&n1, "general", "alice", "").await;
    second.post("only once", Some("c-1")).await;
    let duplicate = second.recv_type("duplicate").await;
    assert_eq!(duplicate["message"], original);
    let seen = messages(&mut watcher, 1).await;
    assert_eq!(seen[0], original);
    // Nobody sees it twice (presence noise aside).
    let deadline = Instant::now() + Duration::from_millis(500);
    while let Some(frame) = watcher
        .recv_within(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        assert_ne!(frame["type"], "chat_message", "a second copy: {frame}");
    }
}

#[tokio::test]
async fn typing_reaches_other_nodes_and_expires() {
    let Some(cluster) = Cluster::new("typing").await else {
        return;
    };
    let (n0, n1) = (cluster.node().await, cluster.node().await);
    let (mut alice, _) = connect(&n0, "general", "alice", "").await;
    let (mut bob, _) = connect(&n1, "general", "bob", "").await;
    presence_frame(&mut alice).await; // bob's join
    // Taken before sending: bob's node saw the typing no earlier than this.
    let started = Instant::now();
    bob.send(json!({"type": "typing", "is_typing": true})).await;
    assert_eq!(
        alice.recv().await,
        json!({"type": "typing", "username": "bob", "is_typing": true})
    );
    // Typists on another node are listed too: in a welcome and in a presence read.
    let (_carol, welcome) = connect(&n0, "general", "carol", "").await;
    assert_eq!(welcome["typing"], json!(["bob"]));
    let presence = get_json(&n0, "/api/rooms/general/presence").await;
    assert_eq!(presence["typing"], json!(["bob"]));
    presence_frame(&mut alice).await; // carol's join
    let ended = alice.recv_within(Duration::from_secs(12)).await.unwrap();
    assert_eq!(
        ended,
        json!({"type": "typing", "username": "bob", "is_typing": false})
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(5900),
        "expired after {waited:?}"
    );
    let presence = get_json(&n0, "/api/rooms/general/presence").await;
    assert_eq!(presence["typing"], json!([]));
}

on_both_brokers!(
    a_post_from_one_tab_ends_typing_in_a_tab_on_another_node,
    "typing-tabs"
);
async fn a_post_from_one_tab_ends_typing_in_a_tab_on_another_node(cluster: Cluster) {
    let (n0, n1) = (cluster.node().await, cluster.node().await);
    let (mut alice, _) = connect(&n0, "general", "alice", "").await;
    let (mut bob_typing, _) = connect(&n1, "general", "bob", "").await;
    presence_frame(&mut alice).await; // bob's join
    // Bob's second tab, on the other node: one person, so no second join.
    let (mut bob_posting, _) = connect(&n0, "general", "bob", "").await;
    bob_typing
        .send(json!({"type": "typing", "is_typing": true}))
        .await;
    assert_eq!(
        alice.recv().await,
        json!({"type": "typing", "username": "bob", "is_typing": true})
    );
    // A refresh (inside the throttle, so not broadcast) pushes expiry to 6 s after this.
    let refreshed = Instant::now();
    bob_typing
        .send(json!({"type": "typing", "is_typing": true}))
        .await;
    bob_posting.post("from the other tab", None).await;
    assert_eq!(
        messages(&mut alice, 1).await[0]["content"],
        "from the other tab"
    );
    let ended = alice.recv_within(Duration::from_secs(12)).await.unwrap();
    assert_eq!(
        ended,
        json!({"type": "typing", "username": "bob", "is_typing": false})
    );
    // Expiry would have come 6 s after the refresh at the earliest; the post ended it.
    let waited = refreshed.elapsed();
    assert!(
        waited < Duration::from_millis(5900),
        "ended by expiry, not by the post: {waited:?}"
    );
    let presence = get_json(&n1, "/api/rooms/general/presence").await;
    assert_eq!(presence["typing"], json!([]));
}

on_both_brokers!(two_tabs_on_two_nodes_are_one_typer, "typing-one");
/// Two tabs of one user are one typer (guarantee 4's rule for presence, applied to typing by
/// the contract): with the tabs on two nodes, the second tab's typing announces nothing new,
/// and a post ends it with exactly one `false` — no second one when the other node's entry
/// would have lapsed.
async fn two_tabs_on_two_nodes_are_one_typer(cluster: Cluster) {
    let (n0, n1) = (cluster.node().await, cluster.node().await);
    let (mut alice, _) = connect(&n0, "general", "alice", "").await;
    let (mut bob_one, _) = connect(&n1, "general", "bob", "").await;
    presence_frame(&mut alice).await; // bob's join
    let (mut bob_two, _) = connect(&n0, "general", "bob", "").await;
    bob_one
        .send(json!({"type": "typing", "is_typing": true}))
        .await;
    assert_eq!(
        alice.recv().await,
        json!({"type": "typing", "username": "bob", "is_typing": true})
    );
    bob_two
        .send(json!({"type": "typing", "is_typing": true}))
        .await;
    let unexpected = alice.recv_within(Duration::from_millis(1500)).await;
    assert_eq!(unexpected, None, "bob was already typing");
    bob_two.post("done typing", None).await;
    assert_eq!(messages(&mut alice, 1).await[0]["content"], "done typing");
    assert_eq!(
        alice.recv_within(Duration::from_secs(3)).await,
        Some(json!({"type": "typing", "username": "bob", "is_typing": false}))
    );
    // Past both tabs' expiry (6 s): nothing more about bob's typing.
    let unexpected = alice.recv_within(Duration::from_secs(7)).await;
    assert_eq!(unexpected, None, "bob's typing had already ended");
}

on_both_brokers!(
    the_users_of_a_killed_node_disappear_within_30_seconds,
    "killed"
);
async fn the_users_of_a_killed_node_disappear_within_30_seconds(cluster: Cluster) {
    let survivor = cluster.node().await;
    let doomed = cluster.node().await;
    let (mut bob, _) = connect(&survivor, "general", "bob", "").await;
    let (_alice, _) = connect(&doomed, "general", "alice", "").await;
    assert_eq!(presence_frame(&mut bob).await["username"], "alice");

    let killed_at = Instant::now();
    doomed.kill();
    let left = bob
        .recv_within(Duration::from_secs(30))
        .await
        .expect("alice's leave within 30 s");
    let waited = killed_at.elapsed();
    assert_eq!(
        left,
        json!({"type": "presence", "event": "leave", "username": "alice", "online_count": 1}),
        "after {waited:?}"
    );
    assert!(waited < Duration::from_secs(30), "took {waited:?}");
    let presence = get_json(&survivor, "/api/rooms/general/presence").await;
    assert_eq!(presence["online"], json!(["bob"]));
}

#[tokio::test]
async fn a_node_that_loses_redis_closes_its_sockets_and_recovers() {
    let Some(cluster) = Cluster::new("broker-loss").await else {
        return;
    };
    let upstream = cluster.broker.trim_start_matches("redis://").to_owned();
    let proxy = banter_testkit::TcpProxy::start(&upstream).await;
    let cut_off = cluster.node_via(&format!("redis://{}", proxy.addr)).await;
    let healthy = cluster.node().await;
    let (mut alice, _) = connect(&cut_off, "general", "alice", "").await;
    let (mut bob, _) = connect(&healthy, "general", "bob", "").await;
    bob.post("before", None).await;
    assert_eq!(messages(&mut alice, 1).await[0]["seq"], 1);

    proxy.stop();
    // Events may be lost with the link: the socket is closed so the client resumes.
    let (code, _) = alice.expect_close().await;
    assert_eq!(code, 1001);
    let ready = http().get(cut_off.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without its broker");
    bob.post("while away", None).await;
    let seen_by_bob = messages(&mut bob, 2).await;
    assert_eq!(seen_by_bob[1]["content"], "while away");
    // A post on the cut-off node is stored; its broadcast fails and is kept.
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stored = patient
        .post(cut_off.url("/api/rooms/general/messages"))
        .json(&json!({"username": "carol", "content": "sent from the cut-off node"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 201);

    proxy.resume().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = http().get(cut_off.url("/readyz")).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "ready again once Redis is back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once Redis is back, the kept broadcast reaches the other node's client live, with
    // nobody posting after it.
    let late = messages(&mut bob, 1).await;
    assert_eq!(late[0]["content"], "sent from the cut-off node");
    assert_eq!(late[0]["seq"], 3);
    // The client resumes where it was: nothing lost, nothing twice.
    let (mut alice, welcome) = connect(&cut_off, "general", "alice", "&after=1").await;
    assert_eq!(welcome["messages"], json!([]));
    let missed = messages(&mut alice, 2).await;
    assert_eq!(missed[0]["content"], "while away");
    let missed_seqs: Vec<&Value> = missed.iter().map(|m| &m["seq"]).collect();
    assert_eq!(missed_seqs, [2, 3]);
    bob.post("after", None).await;
    assert_eq!(messages(&mut alice, 1).await[0]["seq"], 4);
    // Operators see it happen.
    let metrics = get_text(&cut_off, "/metrics").await;
    assert!(metrics.contains("banter_redis_link_up 1"), "{metrics}");
    assert!(
        metrics.contains("banter_redis_link_losses_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("banter_redis_unsent_messages 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_node_without_redis_does_not_start() {
    let Some(cluster) = Cluster::new("no-redis").await else {
        return;
    };
    let output = std::process::Command::new(crate::helpers::BANTER)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(&cluster.database.url)
        .args(["--broker", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot use the Redis broker at redis://127.0.0.1:1"),
        "{stderr}"
    );
}
