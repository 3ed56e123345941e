//! Edits and deletes (CONTRACT, "Additions of 2026-11-30"): the WebSocket `edit`, `delete` and
//! `message_updated` frames and their refusals, `welcome.last_rev` and resuming with `rev`, the
//! REST `PATCH`/`DELETE` of a message and the changes listing, on one node and across two.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(300);

/// The next frame that is not presence or typing noise.
async fn next_frame(client: &mut WsClient) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] != "presence" && frame["type"] != "typing" {
            return frame;
        }
    }
}

/// Asserts the next meaningful frame is `message_updated` with `rev`; returns its message.
async fn updated(client: &mut WsClient, rev: u64) -> Value {
    let frame = next_frame(client).await;
    assert_eq!(frame["type"], "message_updated", "{frame}");
    assert_eq!(frame["rev"], rev, "{frame}");
    frame["message"].clone()
}

async fn error_code(client: &mut WsClient) -> String {
    let frame = next_frame(client).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["client_id"], Value::Null);
    frame["code"].as_str().unwrap().to_owned()
}

async fn edit(client: &mut WsClient, seq: Value, text: &str) {
    client
        .send(json!({"type": "edit", "seq": seq, "message": text}))
        .await;
}

async fn delete(client: &mut WsClient, seq: Value) {
    client.send(json!({"type": "delete", "seq": seq})).await;
}

fn patch(server: &TestServer, room: &str, seq: &str, body: Value) -> reqwest::RequestBuilder {
    http()
        .patch(server.url(&format!("/api/rooms/{room}/messages/{seq}")))
        .json(&body)
}

fn delete_rest(server: &TestServer, room: &str, seq: &str, user: &str) -> reqwest::RequestBuilder {
    http().delete(server.url(&format!("/api/rooms/{room}/messages/{seq}?username={user}")))
}

#[tokio::test]
async fn edits_and_deletes_over_websocket_reach_everyone_in_rev_order() {
    edits_and_deletes_over_websocket(&[]).await;
}

#[tokio::test]
async fn edits_and_deletes_over_websocket_without_the_history_cache() {
    edits_and_deletes_over_websocket(&["--history-cache", "0"]).await;
}

async fn edits_and_deletes_over_websocket(extra: &[&str]) {
    let mut args = vec!["--rate-limit", "off"];
    args.extend_from_slice(extra);
    let server = TestServer::start(&args).await;
    let (mut alice, welcome) = connect(&server, "general", "alice", "").await;
    assert_eq!(welcome["last_rev"], 0, "a room without changes");
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    alice.post("helo", Some("c1")).await;
    let posted = next_frame(&mut alice).await;
    assert_eq!(posted["message"]["edited_at"], Value::Null);
    assert_eq!(posted["message"]["deleted"], false);
    next_frame(&mut bob).await;

    edit(&mut alice, json!(1), "hello").await;
    for client in [&mut alice, &mut bob] {
        let message = updated(client, 1).await;
        assert_eq!(message["content"], "hello");
        assert_eq!(message["seq"], 1);
        assert_eq!(message["client_id"], "c1");
        assert_eq!(message["timestamp"], posted["message"]["timestamp"]);
        assert!(message["edited_at"].is_string(), "{message}");
        assert_eq!(message["deleted"], false);
    }

    // Refusals: someone else's message, no such seq, bad text, bad frames.
    edit(&mut bob, json!(1), "mine now").await;
    assert_eq!(error_code(&mut bob).await, "forbidden");
    delete(&mut bob, json!(1)).await;
    assert_eq!(error_code(&mut bob).await, "forbidden");
    edit(&mut alice, json!(99), "nothing there").await;
    assert_eq!(error_code(&mut alice).await, "not_found");
    edit(&mut alice, json!(1), "   ").await;
    assert_eq!(error_code(&mut alice).await, "invalid_message");
    alice
        .send(json!({"type": "edit", "seq": 1, "message": 5}))
        .await;
    assert_eq!(error_code(&mut alice).await, "invalid_message");
    for bad_seq in [json!(0), json!(-1), json!("1"), json!(1.5), Value::Null] {
        delete(&mut alice, bad_seq.clone()).await;
        assert_eq!(error_code(&mut alice).await, "invalid_message", "{bad_seq}");
    }

    // The same text again changes nothing: no frame, no rev.
    edit(&mut alice, json!(1), "hello").await;
    alice.assert_quiet(QUIET).await;

    delete(&mut alice, json!(1)).await;
    let tombstone = updated(&mut alice, 2).await;
    assert_eq!(updated(&mut bob, 2).await, tombstone);
    assert_eq!(
        (
            &tombstone["content"],
            &tombstone["client_id"],
            &tombstone["deleted"]
        ),
        (&json!(""), &Value::Null, &json!(true))
    );
    assert!(
        tombstone["edited_at"].is_string(),
        "a delete keeps edited_at"
    );
    assert_eq!(tombstone["username"], "alice");
    delete(&mut alice, json!(1)).await;
    alice.assert_quiet(QUIET).await;
    edit(&mut alice, json!(1), "back").await;
    assert_eq!(error_code(&mut alice).await, "not_found");
    bob.assert_quiet(QUIET).await;

    // A late resend gets the tombstone back and stores nothing.
    alice.post("helo", Some("c1")).await;
    let duplicate = next_frame(&mut alice).await;
    assert_eq!(duplicate["type"], "duplicate");
    assert_eq!(duplicate["message"], tombstone);
    bob.assert_quiet(QUIET).await;

    // History and welcomes show the current state, and the room's last rev.
    let history = get_json(&server, "/api/rooms/general/messages").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    assert_eq!(history["messages"][0], tombstone);
    let (_, welcome) = connect(&server, "general", "carol", "").await;
    assert_eq!(welcome["last_rev"], 2);
    assert_eq!(welcome["last_seq"], 1);
    assert_eq!(welcome["messages"][0], tombstone);
    let (_, cold) = connect(&server, "general", "dave", "&history=0").await;
    assert_eq!(cold["last_rev"], 2);
}

#[tokio::test]
async fn edits_and_deletes_take_tokens_like_posts() {
    let server = TestServer::start(&["--rate-limit", "3:1"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    alice.post("one", None).await;
    next_frame(&mut alice).await;
    edit(&mut alice, json!(1), "two").await;
    updated(&mut alice, 1).await;
    // A refused change takes its token too.
    edit(&mut alice, json!(7), "x").await;
    assert_eq!(error_code(&mut alice).await, "not_found");
    delete(&mut alice, json!(1)).await;
    assert_eq!(error_code(&mut alice).await, "rate_limited");
    // Reading positions is not part of this; a ping is free.
    alice.send(json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut alice).await["type"], "pong");
}

#[tokio::test]
async fn resuming_with_rev_replays_each_changed_message_once_before_the_missed_ones() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    for n in 1..=4 {
        alice.post(&format!("m{n}"), None).await;
        next_frame(&mut alice).await;
    }
    // The client saw up to seq 4 and rev 1, then went away.
    edit(&mut alice, json!(1), "m1 v2").await;
    updated(&mut alice, 1).await;
    edit(&mut alice, json!(2), "m2 v2").await;
    updated(&mut alice, 2).await;
    edit(&mut alice, json!(1), "m1 v3").await;
    updated(&mut alice, 3).await;
    delete(&mut alice, json!(3)).await;
    updated(&mut alice, 4).await;
    alice.post("m5", None).await;
    next_frame(&mut alice).await;
    edit(&mut alice, json!(5), "m5 v2").await;
    updated(&mut alice, 5).await;

    let (mut back, welcome) = connect(&server, "general", "bob", "&after=4&rev=1").await;
    assert_eq!(welcome["last_rev"], 5);
    assert_eq!(welcome["messages"], json!([]));
    // Changed since rev 1, seq ≤ 4, once each, ascending by latest rev, current state.
    let replayed: Vec<(u64, u64, String)> = {
        let mut got = Vec::new();
        for _ in 0..3 {
            let frame = next_frame(&mut back).await;
            assert_eq!(frame["type"], "message_updated", "{frame}");
            got.push((
                frame["rev"].as_u64().unwrap(),
                frame["message"]["seq"].as_u64().unwrap(),
                frame["message"]["content"].as_str().unwrap().to_owned(),
            ));
        }
        got
    };
    assert_eq!(
        replayed,
        [
            (2, 2, "m2 v2".to_owned()),
            (3, 1, "m1 v3".to_owned()),
            (4, 3, String::new())
        ]
    );
    // Then the missed message, in its current state.
    let missed = next_frame(&mut back).await;
    assert_eq!(missed["type"], "chat_message");
    assert_eq!(missed["message"]["content"], "m5 v2");
    back.assert_quiet(QUIET).await;
    // Live changes continue after last_rev.
    edit(&mut alice, json!(4), "m4 v2").await;
    assert_eq!(updated(&mut back, 6).await["seq"], 4);

    // No replay: without rev, with rev at or beyond last_rev, or rev without after.
    for query in ["&after=4", "&after=4&rev=6", "&after=4&rev=90", "&rev=0"] {
        let (mut client, welcome) = connect(&server, "general", "carol", query).await;
        assert_eq!(welcome["last_rev"], 6, "{query}");
        if query.contains("after") {
            assert_eq!(next_frame(&mut client).await["type"], "chat_message");
        }
        client.assert_quiet(QUIET).await;
    }

    // A rev that is not an integer ≥ 0 refuses the handshake.
    for bad in ["-1", "x", "1.5"] {
        let refusal = try_connect(
            &server,
            &format!("/ws/chat/general/?username=eve&after=1&rev={bad}"),
            &[],
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("rev={bad} must be refused"));
        assert_eq!(refusal.status, 400);
        assert_eq!(refusal.code(), "invalid_parameter");
    }
}

#[tokio::test]
async fn rest_edits_deletes_and_the_changes_listing() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let (mut watcher, _) = connect(&server, "general", "watcher", "").await;
    for n in 1..=3 {
        let (status, _) = call(http().post(server.url("/api/rooms/general/messages")).json(
            &json!({"username": "alice", "content": format!("m{n}"), "client_id": format!("c{n}")}),
        ))
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    for _ in 0..3 {
        next_frame(&mut watcher).await;
    }

    let edited = call(patch(
        &server,
        "general",
        "2",
        json!({"username": "alice", "content": "m2 v2"}),
    ))
    .await;
    assert_eq!(edited.0, StatusCode::OK);
    assert_eq!(edited.1["content"], "m2 v2");
    assert_eq!(edited.1["seq"], 2);
    assert_eq!(edited.1["client_id"], "c2");
    assert!(edited.1["edited_at"].is_string());
    assert_eq!(updated(&mut watcher, 1).await, edited.1);
    // The same text again: 200, unchanged, nobody told.
    let same = call(patch(
        &server,
        "general",
        "2",
        json!({"username": "alice", "content": "m2 v2"}),
    ))
    .await;
    assert_eq!(same, edited);

    let deleted = call(delete_rest(&server, "general", "3", "alice")).await;
    assert_eq!(deleted.0, StatusCode::OK);
    assert_eq!(
        (
            &deleted.1["content"],
            &deleted.1["deleted"],
            &deleted.1["client_id"]
        ),
        (&json!(""), &json!(true), &Value::Null)
    );
    assert_eq!(updated(&mut watcher, 2).await, deleted.1);
    assert_eq!(
        call(delete_rest(&server, "general", "3", "alice")).await,
        deleted
    );
    watcher.assert_quiet(QUIET).await;

    // Refusals.
    assert_problem(
        &call(patch(
            &server,
            "general",
            "1",
            json!({"username": "bob", "content": "x"}),
        ))
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &call(delete_rest(&server, "general", "1", "bob")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &call(patch(
            &server,
            "general",
            "3",
            json!({"username": "alice", "content": "back"}),
        ))
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &call(patch(
            &server,
            "general",
            "9",
            json!({"username": "alice", "content": "x"}),
        ))
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &call(delete_rest(&server, "empty-room", "1", "alice")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for bad in ["0", "-2", "abc", "1.0"] {
        assert_problem(
            &call(patch(
                &server,
                "general",
                bad,
                json!({"username": "alice", "content": "x"}),
            ))
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        );
        assert_problem(
            &call(delete_rest(&server, "general", bad, "alice")).await,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        );
    }
    assert_problem(
        &call(patch(
            &server,
            "general",
            "1",
            json!({"username": "alice", "content": ""}),
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_content",
    );
    assert_problem(
        &call(patch(&server, "general", "1", json!({"username": "alice"}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_content",
    );
    assert_problem(
        &call(patch(&server, "general", "1", json!({"content": "x"}))).await,
        StatusCode::BAD_REQUEST,
        "invalid_username",
    );
    assert_problem(
        &call(http().delete(server.url("/api/rooms/general/messages/1"))).await,
        StatusCode::BAD_REQUEST,
        "invalid_username",
    );
    assert_problem(
        &call(patch(
            &server,
            "Bad",
            "1",
            json!({"username": "alice", "content": "x"}),
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_room",
    );
    watcher.assert_quiet(QUIET).await;

    // The changes listing: each message once, by its latest rev, in its current state.
    call(patch(
        &server,
        "general",
        "2",
        json!({"username": "alice", "content": "m2 v3"}),
    ))
    .await;
    updated(&mut watcher, 3).await;
    let (status, changes) = call(http().get(server.url("/api/rooms/general/changes"))).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<(u64, u64)> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["rev"].as_u64().unwrap(),
                c["message"]["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(2, 3), (3, 2)]);
    assert_eq!(changes["changes"][1]["message"]["content"], "m2 v3");
    assert_eq!(changes["has_more"], false);
    let (_, page) =
        call(http().get(server.url("/api/rooms/general/changes?after_rev=0&limit=1"))).await;
    assert_eq!(
        (page["changes"].as_array().unwrap().len(), &page["has_more"]),
        (1, &json!(true))
    );
    let (_, rest) = call(http().get(server.url("/api/rooms/general/changes?after_rev=2"))).await;
    assert_eq!(rest["changes"][0]["rev"], 3);
    assert_eq!(rest["changes"].as_array().unwrap().len(), 1);
    let (_, none) = call(http().get(server.url("/api/rooms/nothing-here/changes"))).await;
    assert_eq!(none, json!({"changes": [], "has_more": false}));
    for bad in ["after_rev=-1", "after_rev=x", "limit=0", "limit=201"] {
        assert_problem(
            &call(http().get(server.url(&format!("/api/rooms/general/changes?{bad}")))).await,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        );
    }
    // History pages show the current state.
    let history = get_json(&server, "/api/rooms/general/messages?after=1").await;
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["m2 v3", ""]);
}

#[tokio::test]
async fn rest_edits_and_deletes_take_tokens_from_the_address_bucket() {
    let server = TestServer::start(&["--rate-limit", "3:1"]).await;
    let (status, _) = call(
        http()
            .post(server.url("/api/rooms/general/messages"))
            .json(&json!({"username": "alice", "content": "one"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let edited = call(patch(
        &server,
        "general",
        "1",
        json!({"username": "alice", "content": "two"}),
    ))
    .await;
    assert_eq!(edited.0, StatusCode::OK);
    // Refused for its seq, but it took a token.
    let refused = call(patch(
        &server,
        "general",
        "0",
        json!({"username": "alice", "content": "x"}),
    ))
    .await;
    assert_eq!(refused.0, StatusCode::BAD_REQUEST);
    let response = delete_rest(&server, "general", "1", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    // Reads take none.
    let (status, _) = call(http().get(server.url("/api/rooms/general/changes"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn with_jwt_auth_the_author_is_the_token_subject() {
    let database = Database::sqlite();
    let server = TestServer::start_on(
        &database,
        &["--auth", "jwt", "--rate-limit", "off"],
        &[("BANTER_JWT_SECRET", "edit-secret")],
    )
    .await;
    let token = |sub: &str| jwt("edit-secret", sub);
    let (alice, bob) = (token("alice"), token("bob"));
    let (status, _) = call(
        http()
            .post(server.url("/api/rooms/general/messages"))
            .bearer_auth(&alice)
            .json(&json!({"content": "signed"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // The body's username is ignored: bob's token cannot edit alice's message as "alice".
    assert_problem(
        &call(
            patch(
                &server,
                "general",
                "1",
                json!({"username": "alice", "content": "x"}),
            )
            .bearer_auth(&bob),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_problem(
        &call(patch(&server, "general", "1", json!({"content": "x"}))).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let edited = call(
        patch(
            &server,
            "general",
            "1",
            json!({"username": "bob", "content": "signed v2"}),
        )
        .bearer_auth(&alice),
    )
    .await;
    assert_eq!(
        (edited.0, &edited.1["content"]),
        (StatusCode::OK, &json!("signed v2"))
    );
    // Over the WebSocket the author is the token's sub as well.
    let (mut ws_bob, _) = try_connect(&server, &format!("/ws/chat/general/?token={bob}"), &[])
        .await
        .unwrap();
    delete(&mut ws_bob, json!(1)).await;
    assert_eq!(error_code(&mut ws_bob).await, "forbidden");
    let (mut ws_alice, _) = try_connect(
        &server,
        &format!("/ws/chat/general/?token={alice}&username=bob"),
        &[],
    )
    .await
    .unwrap();
    delete(&mut ws_alice, json!(1)).await;
    assert_eq!(updated(&mut ws_alice, 2).await["deleted"], true);
    let deleted = call(
        http()
            .delete(server.url("/api/rooms/general/messages/1?username=bob"))
            .bearer_auth(&alice),
    )
    .await;
    assert_eq!(
        (deleted.0, &deleted.1["deleted"]),
        (StatusCode::OK, &json!(true))
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_new_operations_with_examples() {
    let server = TestServer::start(&[]).await;
    let spec = get_json(&server, "/openapi.json").await;
    let paths = &spec["paths"];
    let one = &paths["/api/rooms/{room}/messages/{seq}"];
    for method in ["patch", "delete"] {
        let responses = &one[method]["responses"];
        for status in ["200", "400", "403", "404", "429"] {
            assert!(responses[status].is_object(), "{method} {status}");
        }
    }
    assert!(paths["/api/rooms/{room}/changes"]["get"].is_object());
    let text = spec.to_string();
    for needle in ["\"edited_at\"", "\"deleted\"", "\"rev\"", "Hello, everyone"] {
        assert!(text.contains(needle), "{needle} in the document");
    }
}

#[tokio::test]
async fn changes_reach_every_node_in_rev_order_and_resume_on_another_node() {
    let Some(cluster) = Cluster::new("edits").await else {
        return;
    };
    let a = cluster.node().await;
    let b = cluster.node().await;
    let (mut on_a, _) = connect(&a, "general", "alice", "").await;
    let (mut on_b, _) = connect(&b, "general", "listener", "").await;
    const MESSAGES: u64 = 10;
    for n in 1..=2 * MESSAGES {
        on_a.post(&format!("m{n}"), None).await;
    }
    for _ in 0..2 * MESSAGES {
        assert_eq!(next_frame(&mut on_b).await["type"], "chat_message");
        next_frame(&mut on_a).await;
    }
    // Changes from both nodes at once: edits of 1–10 over WebSocket on a, deletes of 11–20
    // over REST on b.
    for n in 1..=MESSAGES {
        edit(&mut on_a, json!(n), &format!("m{n} v2")).await;
    }
    for n in MESSAGES + 1..=2 * MESSAGES {
        let (status, _) = call(delete_rest(&b, "general", &n.to_string(), "alice")).await;
        assert_eq!(status, StatusCode::OK);
    }
    for client in [&mut on_a, &mut on_b] {
        let mut revs = Vec::new();
        let mut deleted = 0;
        while revs.len() < 2 * MESSAGES as usize {
            let frame = next_frame(client).await;
            assert_eq!(frame["type"], "message_updated", "{frame}");
            revs.push(frame["rev"].as_u64().unwrap());
            if frame["message"]["deleted"] == true {
                deleted += 1;
            }
        }
        assert_eq!(
            revs,
            (1..=2 * MESSAGES).collect::<Vec<_>>(),
            "gapless, in rev order"
        );
        assert_eq!(deleted, MESSAGES);
        client.assert_quiet(QUIET).await;
    }
    // Resuming on the other node replays what changed since rev 5 (of seqs up to 15), once
    // per message, in rev order, then the missed messages 16–20 as tombstones.
    let (status, changes) = call(http().get(b.url("/api/rooms/general/changes?limit=200"))).await;
    assert_eq!(status, StatusCode::OK);
    let expected: Vec<(u64, u64)> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["rev"].as_u64().unwrap(),
                c["message"]["seq"].as_u64().unwrap(),
            )
        })
        .filter(|(rev, seq)| *rev > 5 && *seq <= 15)
        .collect();
    let (mut back, welcome) = connect(&a, "general", "listener", "&after=15&rev=5").await;
    assert_eq!(welcome["last_rev"], 2 * MESSAGES);
    let mut replayed = Vec::new();
    for _ in 0..expected.len() {
        let frame = next_frame(&mut back).await;
        assert_eq!(frame["type"], "message_updated", "{frame}");
        replayed.push((
            frame["rev"].as_u64().unwrap(),
            frame["message"]["seq"].as_u64().unwrap(),
        ));
    }
    assert_eq!(replayed, expected);
    for seq in 16..=20 {
        let frame = next_frame(&mut back).await;
        assert_eq!(frame["type"], "chat_message");
        assert_eq!(
            (&frame["message"]["seq"], &frame["message"]["deleted"]),
            (&json!(seq), &json!(true))
        );
    }
    back.assert_quiet(QUIET).await;
    assert_eq!(
        changes["changes"].as_array().unwrap().len() as u64,
        2 * MESSAGES,
        "every message changed once"
    );
}
