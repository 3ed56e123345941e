//! Search (CONTRACT, "Additions of 2026-11-30"): a room's search and the search across rooms
//! over REST, their answers, paging and refusals, edits and deletes, private rooms, and a
//! message posted on one node found at once on another.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::helpers::*;

async fn post(server: &TestServer, room: &str, user: &str, content: &str) -> u64 {
    let (status, body) = call(
        http()
            .post(server.url(&format!("/api/rooms/{room}/messages")))
            .json(&json!({"username": user, "content": content})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["seq"].as_u64().unwrap()
}

async fn search(server: &TestServer, path: &str) -> (StatusCode, Value) {
    call(http().get(server.url(path))).await
}

/// The (room, seq) of each result, in order.
fn found(body: &Value) -> Vec<(String, u64)> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results in {body}"))
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_owned(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The results as a sorted set, after checking they come newest first by timestamp (ties, in
/// the same millisecond, in any order).
fn newest_first(body: &Value) -> Vec<(String, u64)> {
    let times: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let mut all = found(body);
    all.sort();
    all
}

fn at(room: &str, seqs: &[u64]) -> Vec<(String, u64)> {
    seqs.iter().map(|s| (room.to_owned(), *s)).collect()
}

#[tokio::test]
async fn searching_a_room_and_every_room_over_rest() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    post(&server, "general", "alice", "Hello big World").await;
    post(&server, "general", "bob", "😀 hello, worldwide friends").await;
    post(&server, "general", "alice", "nothing here").await;
    post(&server, "random", "bob", "HELLO from random").await;

    let (status, body) = search(&server, "/api/rooms/general/search?q=hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found(&body), at("general", &[2, 1]), "newest first");
    assert_eq!(body["has_more"], false);
    // Each result is the message as stored, with where the query matched, in scalar values
    // (the emoji is one).
    let first = &body["results"][0];
    for field in [
        "username",
        "content",
        "timestamp",
        "client_id",
        "edited_at",
        "deleted",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert_eq!(first["content"], "😀 hello, worldwide friends");
    assert_eq!(first["highlights"], json!([[2, 7]]));

    // The last word is a prefix; quoted words are whole; phrases are consecutive words.
    let (_, body) = search(&server, "/api/rooms/general/search?q=%22hello%22%20world").await;
    assert_eq!(found(&body), at("general", &[2, 1]));
    assert_eq!(body["results"][0]["highlights"], json!([[2, 7], [9, 18]]));
    let (_, body) = search(&server, "/api/rooms/general/search?q=%22big%20world%22").await;
    assert_eq!(found(&body), at("general", &[1]));
    assert_eq!(body["results"][0]["highlights"], json!([[6, 15]]));

    // Pages.
    let (_, page) = search(&server, "/api/rooms/general/search?q=hello&limit=1").await;
    assert_eq!(
        (found(&page), &page["has_more"]),
        (at("general", &[2]), &json!(true))
    );
    let (_, page) = search(
        &server,
        "/api/rooms/general/search?q=hello&limit=1&before=2",
    )
    .await;
    assert_eq!(
        (found(&page), &page["has_more"]),
        (at("general", &[1]), &json!(false))
    );

    // Every room, newest first by timestamp.
    let (status, body) = search(&server, "/api/search?q=hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        newest_first(&body),
        vec![
            ("general".to_owned(), 1),
            ("general".to_owned(), 2),
            ("random".to_owned(), 1)
        ]
    );

    // Edited messages are found by their current content, deleted ones never.
    let (status, _) = call(
        http()
            .patch(server.url("/api/rooms/general/messages/1"))
            .json(&json!({"username": "alice", "content": "goodbye moon"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        call(http().delete(server.url("/api/rooms/general/messages/2?username=bob"))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = search(&server, "/api/rooms/general/search?q=hello").await;
    assert_eq!(found(&body), vec![]);
    let (_, body) = search(&server, "/api/search?q=moon").await;
    assert_eq!(found(&body), at("general", &[1]));
    let (_, body) = search(&server, "/api/search?q=worldwide").await;
    assert_eq!(found(&body), vec![]);
}

#[tokio::test]
async fn search_refusals_are_400_invalid_parameter() {
    let server = TestServer::start(&[]).await;
    let long = "a".repeat(201);
    for path in [
        "/api/rooms/general/search".to_owned(),
        "/api/rooms/general/search?q=".to_owned(),
        format!("/api/rooms/general/search?q={long}"),
        "/api/rooms/general/search?q=%21%21%21".to_owned(),
        "/api/rooms/general/search?q=%22%22".to_owned(),
        "/api/rooms/general/search?q=hi&limit=0".to_owned(),
        "/api/rooms/general/search?q=hi&limit=101".to_owned(),
        "/api/rooms/general/search?q=hi&limit=ten".to_owned(),
        "/api/rooms/general/search?q=hi&before=-1".to_owned(),
        "/api/rooms/general/search?q=hi&before=x".to_owned(),
        "/api/search".to_owned(),
        "/api/search?q=%20%2C".to_owned(),
        format!("/api/search?q={long}"),
        "/api/search?q=hi&limit=101".to_owned(),
    ] {
        let got = search(&server, &path).await;
        assert_problem(&got, StatusCode::BAD_REQUEST, "invalid_parameter");
        assert!(
            got.1["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{path}"
        );
    }
    let (_, body) = search(&server, "/api/rooms/general/search?q=").await;
    assert_eq!(body["detail"], "q: must not be empty");
    // 200 characters is fine, counted as characters.
    let (status, _) = search(
        &server,
        &format!("/api/search?q={}", urlencode(&"é".repeat(200))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let got = search(&server, "/api/rooms/No%20Such/search?q=hi").await;
    assert_problem(&got, StatusCode::BAD_REQUEST, "invalid_room");
}

#[tokio::test]
async fn a_private_room_is_searched_by_its_members_only() {
    const SECRET: &str = "search-secret";
    let database = Database::sqlite();
    let server = TestServer::start_on(
        &database,
        &["--auth", "jwt", "--rate-limit", "off"],
        &[("BANTER_JWT_SECRET", SECRET)],
    )
    .await;
    let as_user = |who: &str, method: Method, path: &str| {
        http()
            .request(method, server.url(path))
            .bearer_auth(jwt(SECRET, who))
    };
    let (status, _) = call(
        as_user("alice", Method::POST, "/api/rooms")
            .json(&json!({"room": "team", "private": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for (room, text) in [("team", "the secret plan"), ("general", "a public plan")] {
        let (status, body) = call(
            as_user(
                "alice",
                Method::POST,
                &format!("/api/rooms/{room}/messages"),
            )
            .json(&json!({"content": text})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let got = call(as_user(
        "mallory",
        Method::GET,
        "/api/rooms/team/search?q=plan",
    ))
    .await;
    assert_problem(&got, StatusCode::NOT_FOUND, "not_found");
    let (_, body) = call(as_user("mallory", Method::GET, "/api/search?q=plan")).await;
    assert_eq!(found(&body), at("general", &[1]));
    let (_, body) = call(as_user(
        "alice",
        Method::GET,
        "/api/rooms/team/search?q=plan",
    ))
    .await;
    assert_eq!(found(&body), at("team", &[1]));
    let (_, body) = call(as_user("alice", Method::GET, "/api/search?q=plan")).await;
    let mut rooms: Vec<String> = found(&body).into_iter().map(|(room, _)| room).collect();
    rooms.sort();
    assert_eq!(rooms, vec!["general".to_owned(), "team".to_owned()]);
}

#[tokio::test]
async fn a_message_posted_on_one_node_is_found_at_once_on_another() {
    let Some(cluster) = Cluster::new("search").await else {
        return;
    };
    let a = cluster.node().await;
    let b = cluster.node().await;
    for n in 1..=30 {
        post(
            &a,
            "general",
            "alice",
            &format!("stored message number {n}"),
        )
        .await;
        // Whatever either node's indexer has taken by now, the newest is found everywhere.
        for node in [&a, &b] {
            let (status, body) = search(
                node,
                &format!("/api/rooms/general/search?q=%22number%20{n}%22"),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(found(&body), at("general", &[n]), "{body}");
        }
    }
    let (_, body) = search(&b, "/api/search?q=stored&limit=100").await;
    assert_eq!(
        newest_first(&body),
        at("general", &(1..=30).collect::<Vec<u64>>())
    );
}

#[tokio::test]
async fn the_openapi_document_describes_search() {
    let server = TestServer::start(&[]).await;
    let spec = get_json(&server, "/openapi.json").await;
    for path in ["/api/rooms/{room}/search", "/api/search"] {
        let operation = &spec["paths"][path]["get"];
        for status in ["200", "400"] {
            assert!(
                operation["responses"][status].is_object(),
                "{path} {status}"
            );
        }
        let names: Vec<&str> = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            names.contains(&"q") && names.contains(&"limit"),
            "{path}: {names:?}"
        );
    }
    assert!(spec.to_string().contains("\"highlights\""));
}
