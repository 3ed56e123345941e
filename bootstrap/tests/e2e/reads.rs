//! Read positions and unread counts (CONTRACT, "Additions of 2026-11-30"): the WebSocket
//! `read` frames both ways, `welcome.read_seq`, the REST user rooms listing and `PUT …/read`,
//! their refusals and the JWT rule, on one node and across two.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(400);

/// The next `read` or `error` frame, skipping messages, presence and typing.
async fn next_read(client: &mut WsClient) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == "read" || frame["type"] == "error" {
            return frame;
        }
    }
}

/// Asserts no `read` (or `error`) frame arrives for a while; other frames are skipped.
async fn no_read(client: &mut WsClient) {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(frame) = client.recv_within(left).await else {
            return;
        };
        assert!(
            frame["type"] != "read" && frame["type"] != "error",
            "expected no read frame, got {frame}"
        );
    }
}

async fn read(client: &mut WsClient, seq: Value) {
    client.send(json!({"type": "read", "seq": seq})).await;
}

fn put_read(server: &TestServer, user: &str, room: &str, body: Value) -> reqwest::RequestBuilder {
    http()
        .put(server.url(&format!("/api/users/{user}/rooms/{room}/read")))
        .json(&body)
}

fn user_rooms(server: &TestServer, user: &str) -> reqwest::RequestBuilder {
    http().get(server.url(&format!("/api/users/{user}/rooms")))
}

/// (room, last_seq, read_seq, unread) of each listed room, in order.
fn summary(body: &Value) -> Vec<(String, u64, u64, u64)> {
    body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_owned(),
                r["last_seq"].as_u64().unwrap(),
                r["read_seq"].as_u64().unwrap(),
                r["unread"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(room: &str, last_seq: u64, read_seq: u64, unread: u64) -> (String, u64, u64, u64) {
    (room.to_owned(), last_seq, read_seq, unread)
}

async fn post_messages(client: &mut WsClient, count: usize) {
    for n in 0..count {
        client.post(&format!("m{n}"), None).await;
        client.recv_type("chat_message").await;
    }
}

#[tokio::test]
async fn read_frames_reach_the_users_other_connections_only() {
    read_frames(&[]).await;
}

#[tokio::test]
async fn read_frames_without_the_history_cache() {
    read_frames(&["--history-cache", "0"]).await;
}

async fn read_frames(extra: &[&str]) {
    let mut args = vec!["--rate-limit", "off"];
    args.extend_from_slice(extra);
    let server = TestServer::start(&args).await;
    let (mut bob, welcome) = connect(&server, "general", "bob", "").await;
    assert_eq!(welcome["read_seq"], 0);
    post_messages(&mut bob, 3).await;
    let (mut tab1, welcome) = connect(&server, "general", "alice", "").await;
    assert_eq!(welcome["read_seq"], 0, "no position yet");
    let (mut tab2, _) = connect(&server, "general", "alice", "").await;

    read(&mut tab1, json!(2)).await;
    assert_eq!(
        next_read(&mut tab2).await,
        json!({"type": "read", "seq": 2})
    );
    no_read(&mut tab1).await;
    no_read(&mut bob).await;

    // Lower than stored: ignored, nobody told. Beyond the last seq: clamped.
    read(&mut tab1, json!(1)).await;
    read(&mut tab2, json!(99)).await;
    assert_eq!(
        next_read(&mut tab1).await,
        json!({"type": "read", "seq": 3})
    );
    no_read(&mut tab2).await;
    no_read(&mut bob).await;

    let (_tab3, welcome) = connect(&server, "general", "alice", "").await;
    assert_eq!(welcome["read_seq"], 3, "the stored position");
    let (_bob2, welcome) = connect(&server, "general", "bob", "").await;
    assert_eq!(welcome["read_seq"], 0, "positions are per user");

    // Refusals: the connection stays open.
    for bad in [
        json!({"type": "read"}),
        json!({"type": "read", "seq": -1}),
        json!({"type": "read", "seq": "3"}),
        json!({"type": "read", "seq": 1.5}),
    ] {
        tab1.send(bad.clone()).await;
        let frame = next_read(&mut tab1).await;
        assert_eq!(
            (&frame["type"], &frame["code"], &frame["client_id"]),
            (&json!("error"), &json!("invalid_message"), &Value::Null),
            "{bad}: {frame}"
        );
    }
    tab1.send(json!({"type": "ping"})).await;
    assert_eq!(tab1.recv_type("pong").await, json!({"type": "pong"}));

    // The listing agrees: alice read everything, bob's own messages are never unread.
    let (status, body) = call(user_rooms(&server, "alice")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary(&body), [row("general", 3, 3, 0)]);
    assert!(body["rooms"][0]["last_message_at"].is_string(), "{body}");
    let (_, body) = call(user_rooms(&server, "bob")).await;
    assert_eq!(summary(&body), [row("general", 3, 0, 0)]);
}

#[tokio::test]
async fn read_frames_take_no_rate_limit_token() {
    let server = TestServer::start(&["--rate-limit", "2:1"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    for _ in 0..10 {
        read(&mut alice, json!(0)).await;
    }
    alice.post("one", None).await;
    alice.post("two", None).await;
    alice.post("three", None).await;
    // The refusal is a reply and may come before the echoes, which come through the feed.
    let (mut posted, mut refused) = (0, 0);
    while posted + refused < 3 {
        let frame = alice.recv().await;
        match frame["type"].as_str() {
            Some("chat_message") => posted += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited", "{frame}");
                refused += 1;
            }
            _ => {}
        }
    }
    assert_eq!(posted, 2, "the burst was whole after ten read frames");
    // And over REST: a position update is not a post.
    for _ in 0..5 {
        let (status, _) = call(put_read(&server, "alice", "general", json!({"seq": 1}))).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn rest_read_positions_and_the_user_rooms_listing() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let (mut bob, _) = connect(&server, "room-a", "bob", "").await;
    post_messages(&mut bob, 3).await;
    let (mut alice_a, _) = connect(&server, "room-a", "alice", "").await;
    alice_a.post("mine", None).await;
    alice_a.recv_type("chat_message").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (mut carol, _) = connect(&server, "room-b", "carol", "").await;
    post_messages(&mut carol, 2).await;

    // Setting a position over REST tells every connection of the user to the room.
    let put = call(put_read(&server, "alice", "room-a", json!({"seq": 2}))).await;
    assert_eq!(
        put,
        (StatusCode::OK, json!({"room": "room-a", "read_seq": 2}))
    );
    assert_eq!(
        next_read(&mut alice_a).await,
        json!({"type": "read", "seq": 2})
    );
    no_read(&mut bob).await;
    let lower = call(put_read(&server, "alice", "room-a", json!({"seq": 1}))).await;
    assert_eq!(
        lower,
        (StatusCode::OK, json!({"room": "room-a", "read_seq": 2}))
    );
    no_read(&mut alice_a).await;
    // Alice read room-b though she never posted there: it is hers now. Clamped to 2.
    let clamped = call(put_read(&server, "alice", "room-b", json!({"seq": 1000}))).await;
    assert_eq!(
        clamped,
        (StatusCode::OK, json!({"room": "room-b", "read_seq": 2}))
    );
    // A room without messages keeps no position and is not listed.
    let empty = call(put_read(&server, "alice", "empty", json!({"seq": 5}))).await;
    assert_eq!(
        empty,
        (StatusCode::OK, json!({"room": "empty", "read_seq": 0}))
    );

    // Newest activity first; bob's message 3 unread; after a delete it is not.
    let (_, body) = call(user_rooms(&server, "alice")).await;
    assert_eq!(
        summary(&body),
        [row("room-b", 2, 2, 0), row("room-a", 4, 2, 1)]
    );
    let deleted =
        call(http().delete(server.url("/api/rooms/room-a/messages/3?username=bob"))).await;
    assert_eq!(deleted.0, StatusCode::OK);
    let (_, body) = call(user_rooms(&server, "alice")).await;
    assert_eq!(
        summary(&body),
        [row("room-b", 2, 2, 0), row("room-a", 4, 2, 0)]
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    post_messages(&mut bob, 1).await;
    let (_, body) = call(user_rooms(&server, "alice")).await;
    assert_eq!(
        summary(&body),
        [row("room-a", 5, 2, 1), row("room-b", 2, 2, 0)]
    );
    let (status, body) = call(user_rooms(&server, "nobody")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"rooms": []})));
    // Any name the contract allows, in the path too.
    let (status, _) = call(user_rooms(&server, &urlencode("名前.x"))).await;
    assert_eq!(status, StatusCode::OK);

    // Refusals.
    for body in [
        json!({"seq": -1}),
        json!({"seq": "2"}),
        json!({}),
        json!({"seq": 1.5}),
        json!([2]),
    ] {
        assert_problem(
            &call(put_read(&server, "alice", "room-a", body)).await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        );
    }
    let not_json = http()
        .put(server.url("/api/users/alice/rooms/room-a/read"))
        .header("content-type", "application/json")
        .body("{");
    assert_problem(
        &call(not_json).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_problem(
        &call(put_read(&server, "al%20ice", "room-a", json!({"seq": 1}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_username",
    );
    assert_problem(
        &call(user_rooms(&server, "al%20ice")).await,
        StatusCode::BAD_REQUEST,
        "invalid_username",
    );
    assert_problem(
        &call(put_read(&server, "alice", "Room-A", json!({"seq": 1}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_room",
    );
    assert_problem(
        &call(put_read(&server, "alice", "a%2Fb", json!({"seq": 1}))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn with_jwt_auth_only_the_token_subject_uses_its_own_positions() {
    let database = Database::sqlite();
    let server = TestServer::start_on(
        &database,
        &["--auth", "jwt", "--rate-limit", "off"],
        &[("BANTER_JWT_SECRET", "read-secret")],
    )
    .await;
    let token = |sub: &str| jwt("read-secret", sub);
    let (alice, bob) = (token("alice"), token("bob"));
    let (mut ws_bob, _) = try_connect(&server, &format!("/ws/chat/general/?token={bob}"), &[])
        .await
        .unwrap();
    post_messages(&mut ws_bob, 2).await;
    let (mut ws_alice, welcome) =
        try_connect(&server, &format!("/ws/chat/general/?token={alice}"), &[])
            .await
            .unwrap();
    assert_eq!(welcome["read_seq"], 0);

    for request in [
        user_rooms(&server, "bob").bearer_auth(&alice),
        put_read(&server, "bob", "general", json!({"seq": 1})).bearer_auth(&alice),
    ] {
        assert_problem(&call(request).await, StatusCode::FORBIDDEN, "forbidden");
    }
    for request in [
        user_rooms(&server, "alice"),
        put_read(&server, "alice", "general", json!({"seq": 1})),
    ] {
        assert_problem(
            &call(request).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }
    let put =
        call(put_read(&server, "alice", "general", json!({"seq": 1})).bearer_auth(&alice)).await;
    assert_eq!(
        put,
        (StatusCode::OK, json!({"room": "general", "read_seq": 1}))
    );
    assert_eq!(
        next_read(&mut ws_alice).await,
        json!({"type": "read", "seq": 1})
    );
    no_read(&mut ws_bob).await;
    // Over the WebSocket the user is the token's sub.
    read(&mut ws_alice, json!(2)).await;
    no_read(&mut ws_alice).await;
    let (status, body) = call(user_rooms(&server, "alice").bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary(&body), [row("general", 2, 2, 0)]);
    let (_, body) = call(user_rooms(&server, "bob").bearer_auth(&bob)).await;
    assert_eq!(summary(&body), [row("general", 2, 0, 0)]);
}

#[tokio::test]
async fn the_openapi_document_describes_the_read_operations_with_examples() {
    let server = TestServer::start(&[]).await;
    let spec = get_json(&server, "/openapi.json").await;
    let paths = &spec["paths"];
    let listing = &paths["/api/users/{username}/rooms"]["get"]["responses"];
    let put = &paths["/api/users/{username}/rooms/{room}/read"]["put"]["responses"];
    for status in ["200", "400", "401", "403", "503"] {
        assert!(listing[status].is_object(), "GET {status}");
        assert!(put[status].is_object(), "PUT {status}");
    }
    let text = spec.to_string();
    for needle in ["\"read_seq\"", "\"unread\"", "\"last_message_at\""] {
        assert!(text.contains(needle), "{needle} in the document");
    }
    let schemas = &spec["components"]["schemas"];
    assert_eq!(schemas["UserRoomBody"]["example"]["unread"], 1, "{schemas}");
    assert_eq!(schemas["ReadRequestBody"]["example"]["seq"], 42);
}

#[tokio::test]
async fn read_positions_reach_the_users_connections_on_every_node() {
    let Some(cluster) = Cluster::new("reads").await else {
        return;
    };
    let a = cluster.node().await;
    let b = cluster.node().await;
    let (mut bob, _) = connect(&b, "general", "bob", "").await;
    post_messages(&mut bob, 4).await;
    let (mut on_a, _) = connect(&a, "general", "alice", "").await;
    let (mut on_b, _) = connect(&b, "general", "alice", "").await;
    let (mut bob_on_a, _) = connect(&a, "general", "bob", "").await;

    read(&mut on_a, json!(2)).await;
    assert_eq!(
        next_read(&mut on_b).await,
        json!({"type": "read", "seq": 2})
    );
    read(&mut on_b, json!(3)).await;
    assert_eq!(
        next_read(&mut on_a).await,
        json!({"type": "read", "seq": 3})
    );
    // REST on either node reaches both tabs.
    let put = call(put_read(&a, "alice", "general", json!({"seq": 4}))).await;
    assert_eq!(
        put,
        (StatusCode::OK, json!({"room": "general", "read_seq": 4}))
    );
    assert_eq!(
        next_read(&mut on_a).await,
        json!({"type": "read", "seq": 4})
    );
    assert_eq!(
        next_read(&mut on_b).await,
        json!({"type": "read", "seq": 4})
    );
    for client in [&mut on_a, &mut on_b, &mut bob, &mut bob_on_a] {
        no_read(client).await;
    }
    for node in [&a, &b] {
        let (_, body) = call(user_rooms(node, "alice")).await;
        assert_eq!(summary(&body), [row("general", 4, 4, 0)]);
    }
    let (_, welcome) = connect(&b, "general", "alice", "").await;
    assert_eq!(welcome["read_seq"], 4);
}
