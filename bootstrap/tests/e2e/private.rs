//! Private rooms (CONTRACT, "Additions of 2026-11-30"): creation, the members endpoints and
//! their rules, "for anyone who is not a member a private room does not exist" on the
//! handshake and every REST call, the listings, and removal closing connections with 4403 on
//! one node and across two.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::helpers::*;

const SECRET: &str = "private-secret";

fn token(sub: &str) -> String {
    jwt(SECRET, sub)
}

async fn jwt_server() -> TestServer {
    let database = Database::sqlite();
    TestServer::start_on(
        &database,
        &["--auth", "jwt", "--rate-limit", "off"],
        &[("BANTER_JWT_SECRET", SECRET)],
    )
    .await
}

/// A REST call as `who` (a bearer token), its status and JSON body.
async fn call_as(
    server: &TestServer,
    who: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http()
        .request(method, server.url(path))
        .bearer_auth(token(who));
    if let Some(body) = body {
        request = request.json(&body);
    }
    call(request).await
}

async fn create(server: &TestServer, who: &str, room: &str) -> (StatusCode, Value) {
    call_as(
        server,
        who,
        Method::POST,
        "/api/rooms",
        Some(json!({"room": room, "private": true})),
    )
    .await
}

async fn members(
    server: &TestServer,
    who: &str,
    method: Method,
    room: &str,
    target: Option<&str>,
) -> (StatusCode, Value) {
    let path = match target {
        Some(t) => format!("/api/rooms/{room}/members/{t}"),
        None => format!("/api/rooms/{room}/members"),
    };
    call_as(server, who, method, &path, None).await
}

fn listed(body: &Value) -> Vec<String> {
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

async fn ws(server: &TestServer, room: &str, who: &str) -> Result<(WsClient, Value), Refusal> {
    try_connect(
        server,
        &format!("/ws/chat/{room}/?token={}", token(who)),
        &[],
    )
    .await
}

/// Asserts the server closes `client` with 4403 within 2 seconds.
async fn closed_with_4403(client: &mut WsClient) {
    let started = Instant::now();
    let (code, _) = client.expect_close_within(Duration::from_secs(2)).await;
    assert_eq!(code, 4403);
    assert!(started.elapsed() <= Duration::from_secs(2));
}

async fn room_names(server: &TestServer, who: &str) -> Vec<String> {
    let (status, body) = call_as(server, who, Method::GET, "/api/rooms", None).await;
    assert_eq!(status, StatusCode::OK);
    body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn creating_a_private_room_and_its_refusals() {
    let server = jwt_server().await;
    let created = create(&server, "alice", "team-x").await;
    assert_eq!(
        created,
        (
            StatusCode::CREATED,
            json!({"room": "team-x", "private": true, "members": ["alice"]})
        )
    );
    assert_problem(
        &create(&server, "bob", "team-x").await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let posted = call_as(
        &server,
        "bob",
        Method::POST,
        "/api/rooms/lobby/messages",
        Some(json!({"content": "hi"})),
    )
    .await;
    assert_eq!(posted.0, StatusCode::CREATED);
    assert_problem(
        &create(&server, "bob", "lobby").await,
        StatusCode::CONFLICT,
        "conflict",
    );
    for body in [
        json!({"room": "team-y"}),
        json!({"room": "team-y", "private": false}),
        json!({"room": "team-y", "private": "yes"}),
        json!({"private": true}),
        json!({"room": 7, "private": true}),
    ] {
        assert_problem(
            &call_as(&server, "alice", Method::POST, "/api/rooms", Some(body)).await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        );
    }
    assert_problem(
        &create(&server, "alice", "Team Y").await,
        StatusCode::BAD_REQUEST,
        "invalid_room",
    );
    let anonymous = http()
        .post(server.url("/api/rooms"))
        .json(&json!({"room": "team-z", "private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Members endpoints on a public room: 404.
    assert_problem(
        &members(&server, "bob", Method::GET, "lobby", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_problem(
        &members(&server, "bob", Method::PUT, "lobby", Some("carol")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn under_auth_none_private_rooms_need_auth() {
    let server = TestServer::start(&[]).await;
    let response = http()
        .post(server.url("/api/rooms"))
        .json(&json!({"room": "team-x", "private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "auth_required");
    let members = get_json(&server, "/api/rooms/team-x/members").await;
    assert_eq!(
        members["code"], "not_found",
        "nobody is a member of anything"
    );
}

#[tokio::test]
async fn for_a_non_member_a_private_room_does_not_exist() {
    let server = jwt_server().await;
    create(&server, "alice", "team-x").await;
    let (mut alice, welcome) = ws(&server, "team-x", "alice").await.unwrap();
    assert_eq!(welcome["room"], "team-x");
    alice.post("secret", None).await;
    alice.recv_type("chat_message").await;

    let refused = ws(&server, "team-x", "bob").await.err().expect("refused");
    assert_eq!((refused.status, refused.code()), (404, "not_found"));
    // The handshake of a room that does not exist at all is not told apart.
    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/api/rooms/team-x/messages", None),
        (
            Method::POST,
            "/api/rooms/team-x/messages",
            Some(json!({"content": "let me in"})),
        ),
        (
            Method::PATCH,
            "/api/rooms/team-x/messages/1",
            Some(json!({"content": "x"})),
        ),
        (Method::DELETE, "/api/rooms/team-x/messages/1", None),
        (Method::GET, "/api/rooms/team-x/changes", None),
        (Method::GET, "/api/rooms/team-x/presence", None),
        (Method::GET, "/api/rooms/team-x/members", None),
        (Method::PUT, "/api/rooms/team-x/members/bob", None),
        (Method::DELETE, "/api/rooms/team-x/members/alice", None),
        (
            Method::PUT,
            "/api/users/bob/rooms/team-x/read",
            Some(json!({"seq": 1})),
        ),
    ];
    for (method, path, body) in calls {
        let got = call_as(&server, "bob", method.clone(), path, body).await;
        assert_problem(&got, StatusCode::NOT_FOUND, "not_found");
        assert!(
            !got.1["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("private"),
            "{method} {path}: nothing says it exists: {}",
            got.1
        );
    }
    assert_eq!(room_names(&server, "bob").await, Vec::<String>::new());
    assert_eq!(room_names(&server, "alice").await, ["team-x"]);

    // A member sees everything.
    let added = members(&server, "alice", Method::PUT, "team-x", Some("bob")).await;
    assert_eq!(
        (added.0, listed(&added.1)),
        (StatusCode::OK, vec!["alice".into(), "bob".into()])
    );
    let (mut bob, welcome) = ws(&server, "team-x", "bob").await.unwrap();
    assert_eq!(welcome["last_seq"], 1);
    let history = call_as(
        &server,
        "bob",
        Method::GET,
        "/api/rooms/team-x/messages",
        None,
    )
    .await;
    assert_eq!(history.1["messages"][0]["content"], "secret");
    bob.post("hello", None).await;
    bob.recv_type("chat_message").await;
    assert_eq!(room_names(&server, "bob").await, ["team-x"]);
    let (_, rooms) = call_as(&server, "bob", Method::GET, "/api/users/bob/rooms", None).await;
    assert_eq!(rooms["rooms"][0]["room"], "team-x");
}

#[tokio::test]
async fn members_add_remove_themselves_and_the_creator_removes_anyone() {
    let server = jwt_server().await;
    create(&server, "alice", "team-x").await;
    let get = members(&server, "alice", Method::GET, "team-x", None).await;
    assert_eq!(
        get,
        (
            StatusCode::OK,
            json!({"room": "team-x", "members": ["alice"]})
        )
    );
    assert_problem(
        &members(&server, "carol", Method::PUT, "team-x", Some("carol")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    members(&server, "alice", Method::PUT, "team-x", Some("bob")).await;
    let added = members(&server, "bob", Method::PUT, "team-x", Some("名前")).await;
    assert_eq!(
        added,
        (
            StatusCode::OK,
            json!({"room": "team-x", "members": ["alice", "bob", "名前"]})
        )
    );
    let again = members(&server, "bob", Method::PUT, "team-x", Some("名前")).await;
    assert_eq!(again, added, "adding a member again changes nothing");
    assert_problem(
        &members(&server, "bob", Method::PUT, "team-x", Some("bad%20name")).await,
        StatusCode::BAD_REQUEST,
        "invalid_username",
    );
    for target in ["名前", "alice"] {
        assert_problem(
            &members(&server, "bob", Method::DELETE, "team-x", Some(target)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    assert_problem(
        &members(&server, "alice", Method::DELETE, "team-x", Some("dave")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // The removed user's connections close with 4403; the others stay.
    let (mut bob1, _) = ws(&server, "team-x", "bob").await.unwrap();
    let (mut bob2, _) = ws(&server, "team-x", "bob").await.unwrap();
    let (mut alice, _) = ws(&server, "team-x", "alice").await.unwrap();
    let removed = members(&server, "alice", Method::DELETE, "team-x", Some("bob")).await;
    assert_eq!(
        removed,
        (
            StatusCode::OK,
            json!({"room": "team-x", "members": ["alice", "名前"]})
        )
    );
    closed_with_4403(&mut bob1).await;
    closed_with_4403(&mut bob2).await;
    alice.send(json!({"type": "ping"})).await;
    assert_eq!(alice.recv_type("pong").await["type"], "pong");
    let refused = ws(&server, "team-x", "bob").await.err().expect("refused");
    assert_eq!(refused.code(), "not_found");

    // A member leaves on their own.
    let (mut named, _) = ws(&server, "team-x", "名前").await.unwrap();
    let left = members(
        &server,
        "名前",
        Method::DELETE,
        "team-x",
        Some(&urlencode("名前")),
    )
    .await;
    assert_eq!(
        left,
        (
            StatusCode::OK,
            json!({"room": "team-x", "members": ["alice"]})
        )
    );
    closed_with_4403(&mut named).await;
}

#[tokio::test]
async fn making_a_room_with_people_in_it_private_closes_everyone_elses_connections() {
    let server = jwt_server().await;
    let (mut bob, _) = ws(&server, "hideout", "bob").await.unwrap();
    let (mut alice, _) = ws(&server, "hideout", "alice").await.unwrap();
    let created = create(&server, "alice", "hideout").await;
    assert_eq!(created.0, StatusCode::CREATED);
    closed_with_4403(&mut bob).await;
    alice.send(json!({"type": "ping"})).await;
    assert_eq!(alice.recv_type("pong").await["type"], "pong");
}

#[tokio::test]
async fn the_openapi_document_describes_private_rooms_with_examples() {
    let server = TestServer::start(&[]).await;
    let spec = get_json(&server, "/openapi.json").await;
    let paths = &spec["paths"];
    let create = &paths["/api/rooms"]["post"]["responses"];
    for status in ["201", "400", "401", "409"] {
        assert!(create[status].is_object(), "POST /api/rooms {status}");
    }
    let one = &paths["/api/rooms/{room}/members/{username}"];
    for method in ["put", "delete"] {
        for status in ["200", "400", "403", "404"] {
            assert!(
                one[method]["responses"][status].is_object(),
                "{method} {status}"
            );
        }
    }
    assert!(paths["/api/rooms/{room}/members"]["get"].is_object());
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["CreateRoomBody"]["example"]["private"], true,
        "{schemas}"
    );
    assert_eq!(schemas["MembersBody"]["example"]["members"][1], "bob");
}

#[tokio::test]
async fn removal_closes_the_removed_users_connections_on_every_node() {
    let Some(cluster) = Cluster::new("private").await else {
        return;
    };
    let jwt = ["--auth", "jwt"];
    let envs = [("BANTER_JWT_SECRET", SECRET)];
    let a = cluster.node_with(cluster.broker(), &jwt, &envs).await;
    let b = cluster.node_with(cluster.broker(), &jwt, &envs).await;
    create(&a, "alice", "team-x").await;
    members(&a, "alice", Method::PUT, "team-x", Some("bob")).await;
    let (mut bob_a, _) = ws(&a, "team-x", "bob").await.unwrap();
    let (mut bob_b, _) = ws(&b, "team-x", "bob").await.unwrap();
    let (mut alice_b, _) = ws(&b, "team-x", "alice").await.unwrap();
    assert_problem(
        &members(&b, "carol", Method::GET, "team-x", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let removed = members(&a, "alice", Method::DELETE, "team-x", Some("bob")).await;
    assert_eq!(removed.0, StatusCode::OK);
    closed_with_4403(&mut bob_a).await;
    closed_with_4403(&mut bob_b).await;
    alice_b.send(json!({"type": "ping"})).await;
    assert_eq!(alice_b.recv_type("pong").await["type"], "pong");
    let refused = ws(&b, "team-x", "bob").await.err().expect("refused");
    assert_eq!((refused.status, refused.code()), (404, "not_found"));

    // Made private on one node while someone is in the room on the other.
    let (mut carol_b, _) = ws(&b, "hideout", "carol").await.unwrap();
    assert_eq!(create(&a, "alice", "hideout").await.0, StatusCode::CREATED);
    closed_with_4403(&mut carol_b).await;
}
