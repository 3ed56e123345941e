//! `--database-read-url` (CONTRACT, "Behind a load balancer, and the seed's scale-out
//! answers"): two nodes on a primary, a streaming replica of it (`pg_basebackup -R`, started by
//! the test) and Redis. With the replica's replay paused, a node never shows less than it
//! has already delivered; with the replica killed, reads go on from the primary.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Database, PROMPTLY, TestServer, WsClient, connect, get_json, http, metric};

/// The node's reads answered by `server` ("replica" or "primary"), from `/metrics`.
async fn reads_from(node: &TestServer, server: &str) -> u64 {
    let series = format!("banter_store_reads_total{{server=\"{server}\"}}");
    metric(node, &series).await.map_or(0, |v| v as u64)
}

async fn contents(node: &TestServer, room: &str) -> Vec<String> {
    let page = get_json(node, &format!("/api/rooms/{room}/messages?limit=100")).await;
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {page}"))
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn post(node: &TestServer, room: &str, content: &str) {
    let response = http()
        .post(node.url(&format!("/api/rooms/{room}/messages")))
        .json(&json!({"username": "ann", "content": content}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn next_message(client: &mut WsClient) -> Value {
    client.recv_type("chat_message").await["message"].clone()
}

#[tokio::test]
async fn a_node_reads_the_replica_but_never_shows_less_than_it_delivered() {
    let Some(pair) = tokio::task::spawn_blocking(banter_testkit::PostgresPair::start)
        .await
        .unwrap()
    else {
        return;
    };
    let Some(broker) = banter_testkit::redis_url().await else {
        return;
    };
    let namespace = banter_testkit::unique_namespace("replica");
    let database = Database {
        url: pair.primary_url(),
        dir: None,
    };
    let replica_url = pair.replica_url();
    let args = [
        "--broker",
        broker.as_str(),
        "--redis-namespace",
        namespace.as_str(),
        "--rate-limit",
        "off",
        "--database-read-url",
        replica_url.as_str(),
        // Long enough that only the fence keeps reads off the paused replica.
        "--replica-max-lag",
        "60s",
        // Every read reaches the store (the cache would answer latest pages from memory).
        "--history-cache",
        "0",
    ];
    let a = TestServer::start_on(&database, &args, &[]).await;
    let b = TestServer::start_on(&database, &args, &[]).await;

    // A quiet room, posted through A: B reads it from the replica once the replica has it.
    post(&a, "quiet", "q1").await;
    let deadline = Instant::now() + PROMPTLY * 3;
    loop {
        let before = reads_from(&b, "replica").await;
        let seen = contents(&b, "quiet").await;
        // B has shown nothing of this room yet, so a replica that has not replayed q1 may
        // answer without it.
        assert!(seen.is_empty() || seen == ["q1"], "{seen:?}");
        if seen == ["q1"] && reads_from(&b, "replica").await > before {
            break;
        }
        assert!(Instant::now() < deadline, "B never read the replica");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pair.pause_replay().await;
    // A message B delivers live: B's reads of that room reflect it from then on.
    let (mut bob, _) = connect(&b, "live", "bob", "").await;
    post(&a, "live", "l1").await;
    assert_eq!(next_message(&mut bob).await["content"], "l1");
    assert_eq!(contents(&b, "live").await, ["l1"]);
    // A message B's own client posted (acknowledged to it): the same.
    bob.post("l2", None).await;
    assert_eq!(next_message(&mut bob).await["content"], "l2");
    assert_eq!(contents(&b, "live").await, ["l1", "l2"]);

    // B has shown nothing new of the quiet room, so the paused replica may answer it: its
    // answer lacks q2, which shows the read really went there.
    post(&a, "quiet", "q2").await;
    let replica_reads = reads_from(&b, "replica").await;
    assert_eq!(contents(&b, "quiet").await, ["q1"]);
    assert!(reads_from(&b, "replica").await > replica_reads);
    // A reads its own writes from the primary.
    assert_eq!(contents(&a, "quiet").await, ["q1", "q2"]);

    // A read across rooms from the primary shows every room as of now; so must every read
    // after it.
    let rooms = get_json(&b, "/api/rooms").await;
    assert_eq!(rooms["rooms"].as_array().map(Vec::len), Some(2), "{rooms}");
    assert_eq!(contents(&b, "quiet").await, ["q1", "q2"]);

    // The replica dies during traffic: reads go on from the primary, B stays ready.
    pair.resume_replay().await;
    pair.kill_replica();
    for n in 3..8 {
        post(&a, "quiet", &format!("q{n}")).await;
        let seen = contents(&b, "quiet").await;
        assert!(
            seen.len() >= 2 && seen[..2] == ["q1", "q2"],
            "never less than shown: {seen:?}"
        );
        post(&a, "live", &format!("l{n}")).await;
        assert_eq!(
            next_message(&mut bob).await["content"],
            format!("l{n}").as_str()
        );
        let live = contents(&b, "live").await;
        assert_eq!(
            live.last().map(String::as_str),
            Some(format!("l{n}").as_str())
        );
    }
    let ready = http().get(b.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a dead replica does not make a node unready"
    );
    assert!(
        b.logs()
            .iter()
            .any(|l| l.contains("reads go to the primary")
                || l.contains("a read on the replica failed")),
        "the node says the replica fails: {:?}",
        b.logs()
    );
    let everything: Vec<String> = (1..8).map(|n| format!("q{n}")).collect();
    assert_eq!(contents(&b, "quiet").await, everything);

    // Back: used again once it has caught up.
    let _pair = tokio::task::spawn_blocking(move || {
        pair.restart_replica();
        pair
    })
    .await
    .unwrap();
    let deadline = Instant::now() + PROMPTLY * 3;
    loop {
        let before = reads_from(&b, "replica").await;
        assert_eq!(contents(&b, "quiet").await, everything);
        if reads_from(&b, "replica").await > before {
            break;
        }
        assert!(Instant::now() < deadline, "B never read the replica again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
