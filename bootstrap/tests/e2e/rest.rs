//! The REST API, the documents and the operational endpoints.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = http().get(server.url(path)).send().await.unwrap();
    let status = response.status();
    let problem = response.headers().get("content-type").is_some_and(|v| {
        v.to_str()
            .unwrap_or_default()
            .starts_with("application/problem+json")
    });
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        assert!(problem, "{path}: errors are problem+json: {body}");
    }
    (status, body)
}

async fn post(server: &TestServer, room: &str, body: Value) -> (StatusCode, Value) {
    let response = http()
        .post(server.url(&format!("/api/rooms/{room}/messages")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asserts a problem response: its status and its contract code.
fn assert_problem(status: StatusCode, problem: &Value, expected: StatusCode, code: &str) {
    assert_eq!(
        (status, problem["code"].as_str()),
        (expected, Some(code)),
        "{problem}"
    );
}

fn seq_list(body: &Value) -> Vec<u64> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn history_pages_with_before_after_and_limit() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let (status, empty) = get(&server, "/api/rooms/general/messages").await;
    assert_eq!(
        (status, empty),
        (StatusCode::OK, json!({"messages": [], "has_more": false}))
    );
    for i in 1..=7 {
        let (status, body) = post(
            &server,
            "general",
            json!({"username": "alice", "content": format!("m{i}")}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body["seq"], i);
    }
    let page = |query: &'static str| {
        let server = &server;
        async move {
            get(server, &format!("/api/rooms/general/messages{query}"))
                .await
                .1
        }
    };
    for (query, seqs, has_more) in [
        ("?limit=3", vec![5, 6, 7], true),
        ("?before=5&limit=3", vec![2, 3, 4], true),
        ("?before=4&limit=3", vec![1, 2, 3], false),
        ("?before=1&limit=3", vec![], false),
        ("?before=1000&limit=2", vec![6, 7], true),
        ("?after=0&limit=3", vec![1, 2, 3], true),
        ("?after=4&limit=3", vec![5, 6, 7], false),
        ("?after=7&limit=3", vec![], false),
        ("", (1..=7).collect(), false),
    ] {
        let body = page(query).await;
        assert_eq!(
            (seq_list(&body), body["has_more"].as_bool()),
            (seqs, Some(has_more)),
            "{query}"
        );
    }
    let max = page("?limit=200").await;
    assert_eq!(seq_list(&max).len(), 7);

    for query in [
        "?limit=0",
        "?limit=201",
        "?limit=x",
        "?before=-1",
        "?after=-5",
        "?before=3&after=1",
        "?before=1.5",
    ] {
        let (status, problem) = get(&server, &format!("/api/rooms/general/messages{query}")).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
            "{query}: {problem}"
        );
    }
    let (status, problem) = get(&server, "/api/rooms/General/messages").await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, "invalid_room");
    let (status, problem) = get(&server, "/api/rooms/a%2Fb/messages").await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    let (status, problem) = get(&server, "/api/rooms/a/b/messages").await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn posting_stores_broadcasts_and_is_idempotent() {
    let server = TestServer::start(&[]).await;
    let (mut watcher, _) = connect(&server, "general", "watcher", "").await;
    let body = json!({"username": "bot", "content": "from REST", "client_id": "rest-1"});
    let (status, created) = post(&server, "general", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["content"], "from REST");
    assert_eq!(created["client_id"], "rest-1");
    assert_eq!(
        watcher.recv().await,
        json!({"type": "chat_message", "message": created})
    );
    let (status, again) = post(
        &server,
        "general",
        json!({"username": "bot", "content": "changed", "client_id": "rest-1"}),
    )
    .await;
    assert_eq!(
        (status, &again),
        (StatusCode::OK, &created),
        "the original, with 200"
    );
    watcher
        .assert_quiet(std::time::Duration::from_millis(300))
        .await;
    let (status, no_id) = post(
        &server,
        "general",
        json!({"username": "bot", "content": "plain"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(no_id["client_id"], Value::Null);
}

#[tokio::test]
async fn invalid_posts_are_refused_with_the_field_named() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let cases = [
        (
            json!({"username": "alice", "content": ""}),
            "invalid_content",
        ),
        (
            json!({"username": "alice", "content": " \n "}),
            "invalid_content",
        ),
        (
            json!({"username": "alice", "content": "x".repeat(4001)}),
            "invalid_content",
        ),
        (
            json!({"username": "alice", "content": "nul\u{0}"}),
            "invalid_content",
        ),
        (
            json!({"username": "a b", "content": "hi"}),
            "invalid_username",
        ),
        (json!({"content": "hi"}), "invalid_username"),
        (
            json!({"username": "alice", "content": "hi", "client_id": "sp ace"}),
            "invalid_client_id",
        ),
        (
            json!({"username": "alice", "content": "hi", "client_id": "x".repeat(65)}),
            "invalid_client_id",
        ),
        (json!({"username": "alice"}), "invalid_content"),
        (
            json!({"username": "alice", "content": 5}),
            "invalid_content",
        ),
        (
            json!({"username": "alice", "content": null}),
            "invalid_content",
        ),
        (json!({"username": 5, "content": "hi"}), "invalid_username"),
        (
            json!({"username": "alice", "content": "hi", "client_id": 5}),
            "invalid_client_id",
        ),
        (json!("just a string"), "invalid_body"),
        (json!([1, 2]), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, problem) = post(&server, "general", body.clone()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}: {problem}"
        );
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let not_json = http()
        .post(server.url("/api/rooms/general/messages"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let problem: Value = not_json.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_body");
    let (status, problem) = post(
        &server,
        "a%2Fb",
        json!({"username": "alice", "content": "hi"}),
    )
    .await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    let (status, problem) = post(
        &server,
        "Bad",
        json!({"username": "alice", "content": "hi"}),
    )
    .await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, "invalid_room");
    // Nothing of that was stored.
    let (_, history) = get(&server, "/api/rooms/general/messages").await;
    assert_eq!(history["messages"], json!([]));
}

#[tokio::test]
async fn a_missing_field_is_refused_like_a_null_one_with_the_field_named() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    for (body, code, field) in [
        (json!({"username": "alice"}), "invalid_content", "content"),
        (
            json!({"username": "alice", "content": null}),
            "invalid_content",
            "content",
        ),
        (json!({"content": "hi"}), "invalid_username", "username"),
        (
            json!({"username": null, "content": "hi"}),
            "invalid_username",
            "username",
        ),
    ] {
        let (status, problem) = post(&server, "general", body.clone()).await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, code);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with(&format!("{field}: ")),
            "{body}: the detail names {field}: {problem}"
        );
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let server = TestServer::start(&[]).await;
    let body = json!({"username": "alice", "content": "x".repeat(70_000)});
    let (status, problem) = post(&server, "general", body).await;
    assert_problem(
        status,
        &problem,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[tokio::test]
async fn rest_posts_are_rate_limited_per_address_with_retry_after() {
    let server = TestServer::start(&["--rate-limit", "3:1"]).await;
    let client = http();
    let started = std::time::Instant::now();
    for i in 0..3 {
        let response = client
            .post(server.url("/api/rooms/general/messages"))
            .json(&json!({"username": "alice", "content": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    // Every attempt takes a token: an invalid post counts too (400 while tokens last), and is
    // then refused for rate. The bucket refills by one per second, so on a slow machine a few
    // more may pass than the burst of 3; no more than the clock allowed.
    let mut invalid_passed = 0u64;
    let response = loop {
        let response = client
            .post(server.url("/api/rooms/general/messages"))
            .json(&json!({"username": "alice", "content": ""}))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::BAD_REQUEST {
            break response;
        }
        invalid_passed += 1;
        let refilled = started.elapsed().as_secs() + 1;
        assert!(
            invalid_passed <= refilled,
            "{invalid_passed} passed, never limited"
        );
    };
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    // Reads are not limited.
    let (status, _) = get(&server, "/api/rooms/general/messages").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = post(
        &server,
        "general",
        json!({"username": "alice", "content": "later"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn rooms_and_presence_listings_page() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    for room in ["b-room", "a-room", "c-room"] {
        post(&server, room, json!({"username": "alice", "content": "hi"})).await;
    }
    let (_alice, _) = connect(&server, "a0-empty", "alice", "").await;
    let (_bob, _) = connect(&server, "a0-empty", "bob", "").await;
    let (_zed, _) = connect(&server, "c-room", "Zed", "").await;
    let (_, page) = get(&server, "/api/rooms?limit=2").await;
    assert_eq!(page["has_more"], true);
    assert_eq!(
        page["rooms"][0],
        json!({"room": "a-room", "last_seq": 1, "last_message_at": page["rooms"][0]["last_message_at"], "online": 0})
    );
    assert_eq!(
        page["rooms"][1],
        json!({"room": "a0-empty", "last_seq": 0, "last_message_at": null, "online": 2})
    );
    let (_, rest) = get(&server, "/api/rooms?after=a0-empty&limit=5").await;
    let names: Vec<&str> = rest["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b-room", "c-room"]);
    assert_eq!(rest["rooms"][1]["online"], 1);
    assert_eq!(rest["has_more"], false);
    for query in ["?limit=0", "?limit=1001", "?after=BAD"] {
        let (status, problem) = get(&server, &format!("/api/rooms{query}")).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
            "{query}"
        );
    }

    let (_, presence) = get(&server, "/api/rooms/a0-empty/presence?limit=1").await;
    assert_eq!(
        presence,
        json!({"room": "a0-empty", "online": ["alice"], "online_count": 2, "typing": []})
    );
    let (_, presence) = get(&server, "/api/rooms/a0-empty/presence?after=alice").await;
    assert_eq!(presence["online"], json!(["bob"]));
    let (status, problem) = get(&server, "/api/rooms/a0-empty/presence?limit=0").await;
    assert_problem(
        status,
        &problem,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
}

#[tokio::test]
async fn with_jwt_auth_the_api_needs_a_bearer_token_and_uses_its_subject() {
    let database = Database::sqlite();
    let server = TestServer::start_on(
        &database,
        &["--auth", "jwt"],
        &[("BANTER_JWT_SECRET", "rest-secret")],
    )
    .await;
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "exp": get_current_timestamp() + 600}),
        &EncodingKey::from_secret(b"rest-secret"),
    )
    .unwrap();
    let client = http();
    for (method, path) in [
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/general/messages"),
        ("POST", "/api/rooms/general/messages"),
    ] {
        let request = if method == "GET" {
            client.get(server.url(path))
        } else {
            client.post(server.url(path)).json(&json!({"content": "x"}))
        };
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "unauthorized");
    }
    let response = client
        .post(server.url("/api/rooms/general/messages"))
        .bearer_auth(&token)
        .json(&json!({"username": "mallory", "content": "signed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let message: Value = response.json().await.unwrap();
    assert_eq!(
        message["username"], "alice",
        "the token's sub, not the body's username"
    );
    let response = client
        .get(server.url("/api/rooms/general/messages"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Operational endpoints and pages stay open.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/",
        "/client1/",
    ] {
        assert_eq!(
            client.get(server.url(path)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn health_readiness_metrics_and_documents() {
    let server = TestServer::start(&[]).await;
    let client = http();
    // A fresh server already exports every series the contract names.
    let fresh = get_text(&server, "/metrics").await;
    for name in [
        "banter_connections 0",
        "banter_connections_refused_total",
        "banter_messages_stored_total 0",
        "banter_frames_sent_total 0",
        "banter_store_seconds",
        "banter_broadcast_seconds",
        "banter_errors_total",
    ] {
        assert!(
            fresh.contains(name),
            "a fresh server's metrics lack {name:?}:\n{fresh}"
        );
    }
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    alice.post("counted", None).await;
    alice.recv().await;
    alice.send_text("nonsense").await;
    alice.recv().await;
    let _ = try_connect(&server, "/ws/chat/BAD/?username=x", &[]).await;
    let metrics = get_text(&server, "/metrics").await;
    for needle in [
        "banter_connections 1",
        "banter_connections_refused_total{reason=\"invalid_room\"} 1",
        "banter_messages_stored_total 1",
        "banter_frames_sent_total",
        "banter_store_seconds_bucket",
        "banter_broadcast_seconds_bucket",
        "banter_errors_total{code=\"invalid_json\"} 1",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle:?}:\n{metrics}"
        );
    }

    let spec = get_json(&server, "/openapi.json").await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/rooms/{room}/messages",
        "/api/rooms",
        "/api/rooms/{room}/presence",
        "/healthz",
        "/readyz",
    ] {
        assert!(spec["paths"].get(path).is_some(), "spec lacks {path}");
    }
    let post = &spec["paths"]["/api/rooms/{room}/messages"]["post"]["responses"];
    for status in ["201", "200", "400", "429"] {
        assert!(post.get(status).is_some(), "POST lacks {status}");
    }
    assert!(
        post["400"]["content"]
            .get("application/problem+json")
            .is_some()
    );
    let docs = client.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("swagger")
    );
    let asyncapi = client
        .get(server.url("/asyncapi.yaml"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        asyncapi.contains("asyncapi: 3"),
        "served AsyncAPI 3 document"
    );
    let (status, problem) = get(&server, "/no/such/page").await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_broken_database_gives_503_unavailable() {
    let database = Database::sqlite();
    let server = TestServer::start_on(&database, &[], &[]).await;
    let (status, _) = get(&server, "/api/rooms/general/messages").await;
    assert_eq!(status, StatusCode::OK);
    database.execute("DROP INDEX messages_client_id; DROP TABLE messages;");
    // A room this node keeps in memory (the history cache) still answers its latest page:
    // it is fed by the room's stream, not by reads.
    let (status, page) = get(&server, "/api/rooms/general/messages").await;
    assert_eq!(
        (status, page["messages"].clone()),
        (StatusCode::OK, json!([]))
    );
    let (status, problem) = get(&server, "/api/rooms/other/messages").await;
    assert_problem(
        status,
        &problem,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let (status, problem) = post(
        &server,
        "general",
        json!({"username": "alice", "content": "lost?"}),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    match try_connect(&server, "/ws/chat/other/?username=alice", &[]).await {
        Ok(_) => panic!("a join that cannot read history must be refused"),
        Err(refusal) => assert_eq!((refusal.status, refusal.code()), (503, "unavailable")),
    }
}
