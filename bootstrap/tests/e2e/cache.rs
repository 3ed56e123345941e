//! The recent-history cache (CONTRACT, "Behind a load balancer…", `--history-cache N`): a
//! welcome, a resume inside the window and a latest page need no database read once the room
//! is warm, counted by `banter_history_cache_hits_total` and `…_misses_total`; `0` turns it
//! off; across nodes, a message posted on one node is in a welcome another node serves from
//! memory.

use serde_json::Value;

use crate::cluster::Cluster;
use crate::helpers::{TestServer, WsClient, connect, get_json, get_text, seqs};

/// The cache's hit and miss counts, from `/metrics`.
async fn cache_counts(server: &TestServer) -> (u64, u64) {
    let metrics = get_text(server, "/metrics").await;
    let count = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    (
        count("banter_history_cache_hits_total "),
        count("banter_history_cache_misses_total "),
    )
}

/// Posts `count` messages and waits for their echoes (the room's hub has them then).
async fn post_and_see(client: &mut WsClient, count: usize) -> Vec<Value> {
    let mut echoes = Vec::new();
    for n in 0..count {
        client.post(&format!("message {n}"), None).await;
        echoes.push(client.recv_type("chat_message").await);
    }
    echoes
}

async fn latest_page(server: &TestServer, room: &str) -> Vec<u64> {
    let page = get_json(server, &format!("/api/rooms/{room}/messages?limit=2")).await;
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_warm_room_serves_welcomes_resumes_and_latest_pages_from_memory() {
    let server = TestServer::start(&[]).await;
    assert_eq!(
        cache_counts(&server).await,
        (0, 0),
        "exported from the start"
    );
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    post_and_see(&mut alice, 3).await;
    assert_eq!(
        cache_counts(&server).await,
        (0, 1),
        "the first join opened the room"
    );

    let (_bob, welcome) = connect(&server, "general", "bob", "").await;
    let messages = welcome["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        (welcome["last_seq"].as_u64(), welcome["has_more"].as_bool()),
        (Some(3), Some(false))
    );
    let (mut carol, welcome) = connect(&server, "general", "carol", "&after=1").await;
    assert_eq!(welcome["messages"], serde_json::json!([]));
    let replayed = vec![
        carol.recv_type("chat_message").await,
        carol.recv_type("chat_message").await,
    ];
    assert_eq!(seqs(&replayed), [2, 3]);
    assert_eq!(latest_page(&server, "general").await, [2, 3]);
    assert_eq!(
        cache_counts(&server).await,
        (3, 1),
        "welcome, resume, page: hits"
    );

    // A REST post opens its room's hub beside it: the page read after it is a hit too.
    let posted = crate::helpers::http()
        .post(server.url("/api/rooms/quiet/messages"))
        .json(&serde_json::json!({"username": "bot", "content": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let deadline = tokio::time::Instant::now() + crate::helpers::PROMPTLY;
    while !get_text(&server, "/metrics")
        .await
        .contains("banter_history_cache_rooms 2")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hub for the posted room"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(latest_page(&server, "quiet").await, [1]);
    assert_eq!(cache_counts(&server).await, (4, 1));
}

#[tokio::test]
async fn with_history_cache_0_every_read_goes_to_the_database() {
    let server = TestServer::start(&["--history-cache", "0"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    post_and_see(&mut alice, 3).await;
    let (_bob, welcome) = connect(&server, "general", "bob", "").await;
    assert_eq!(welcome["messages"].as_array().unwrap().len(), 3);
    let (mut carol, _) = connect(&server, "general", "carol", "&after=2").await;
    assert_eq!(carol.recv_type("chat_message").await["message"]["seq"], 3);
    assert_eq!(latest_page(&server, "general").await, [2, 3]);
    assert_eq!(cache_counts(&server).await, (0, 4));
    assert!(
        get_text(&server, "/metrics")
            .await
            .contains("banter_history_cache_rooms 0")
    );
}

#[tokio::test]
async fn a_message_posted_on_one_node_is_in_a_welcome_another_node_serves_from_memory() {
    let Some(cluster) = Cluster::new("cache").await else {
        return;
    };
    let (a, b) = (cluster.node().await, cluster.node().await);
    // B's hub for the room opens with B's first client.
    let (mut watcher, _) = connect(&b, "general", "watcher", "").await;
    let (mut poster, _) = connect(&a, "general", "poster", "").await;
    let posted = post_and_see(&mut poster, 2).await;
    for echo in &posted {
        assert_eq!(watcher.recv_type("chat_message").await, *echo);
    }
    let before = cache_counts(&b).await;
    let (_late, welcome) = connect(&b, "general", "late", "").await;
    let shown: Vec<Value> = welcome["messages"].as_array().unwrap().clone();
    let sent: Vec<Value> = posted.iter().map(|e| e["message"].clone()).collect();
    assert_eq!(shown, sent, "A's messages, as A stored them");
    assert_eq!(latest_page(&b, "general").await, [1, 2]);
    let after = cache_counts(&b).await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2, 0),
        "from B's memory"
    );
}
