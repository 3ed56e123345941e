//! Every refused WebSocket handshake: status, problem+json body, code.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::json;

use crate::helpers::*;

async fn refused(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Refusal {
    match try_connect(server, path, headers).await {
        Ok(_) => panic!("{path} should have been refused"),
        Err(refusal) => {
            assert_eq!(
                refusal.content_type, "application/problem+json",
                "{refusal:?}"
            );
            assert_eq!(refusal.body["status"], refusal.status, "{refusal:?}");
            assert!(
                refusal.body["detail"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{refusal:?}"
            );
            refusal
        }
    }
}

#[tokio::test]
async fn bad_room_username_after_and_history_are_400() {
    let server = TestServer::start(&[]).await;
    for (path, code) in [
        ("/ws/chat/General/?username=alice", "invalid_room"),
        ("/ws/chat/has%20space/?username=alice", "invalid_room"),
        (
            &format!("/ws/chat/{}/?username=alice", "r".repeat(65)),
            "invalid_room",
        ),
        ("/ws/chat/general/", "invalid_username"),
        ("/ws/chat/general/?username=", "invalid_username"),
        ("/ws/chat/general/?username=a%20b", "invalid_username"),
        (
            &format!("/ws/chat/general/?username={}", "u".repeat(33)),
            "invalid_username",
        ),
        (
            "/ws/chat/general/?username=alice&after=-1",
            "invalid_parameter",
        ),
        (
            "/ws/chat/general/?username=alice&after=abc",
            "invalid_parameter",
        ),
        (
            "/ws/chat/general/?username=alice&history=201",
            "invalid_parameter",
        ),
        (
            "/ws/chat/general/?username=alice&history=-1",
            "invalid_parameter",
        ),
    ] {
        let refusal = refused(&server, path, &[]).await;
        assert_eq!(
            (refusal.status, refusal.code()),
            (400, code),
            "{path}: {refusal:?}"
        );
    }
    // The edges that are fine.
    let (_, welcome) = connect(&server, &"r".repeat(64), &"u".repeat(32), "&history=200").await;
    assert_eq!(welcome["type"], "welcome");
    let (_, welcome) = connect(&server, "general", "名前", "&after=0").await;
    assert_eq!(welcome["username"], "名前");
    // Without the trailing slash too.
    assert!(
        try_connect(&server, "/ws/chat/general?username=alice", &[])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn foreign_origins_are_403_unless_listed() {
    let server = TestServer::start(&[
        "--allowed-origins",
        "https://chat.example.com,http://localhost:3000",
    ])
    .await;
    let same = format!("http://{}", server.addr);
    let path = "/ws/chat/general/?username=alice";
    assert!(
        try_connect(&server, path, &[("origin", &same)])
            .await
            .is_ok(),
        "same host and port"
    );
    assert!(
        try_connect(&server, path, &[]).await.is_ok(),
        "no Origin: not a browser"
    );
    assert!(
        try_connect(&server, path, &[("origin", "https://chat.example.com")])
            .await
            .is_ok()
    );
    assert!(
        try_connect(&server, path, &[("origin", "http://localhost:3000")])
            .await
            .is_ok()
    );
    for origin in [
        "http://evil.example",
        "null",
        "https://chat.example.com:8443",
        "http://localhost:3001",
    ] {
        let refusal = refused(&server, path, &[("origin", origin)]).await;
        assert_eq!(
            (refusal.status, refusal.code()),
            (403, "forbidden_origin"),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn connections_are_capped_per_address_and_in_total() {
    let server =
        TestServer::start(&["--max-connections-per-ip", "2", "--max-connections", "100"]).await;
    let (_a, _) = connect(&server, "general", "a", "").await;
    let (_b, _) = connect(&server, "general", "b", "").await;
    let refusal = refused(&server, "/ws/chat/general/?username=c", &[]).await;
    assert_eq!(
        (refusal.status, refusal.code()),
        (429, "too_many_connections")
    );

    let server = TestServer::start(&["--max-connections", "2"]).await;
    let (_a, _) = connect(&server, "general", "a", "").await;
    let (b, _) = connect(&server, "general", "b", "").await;
    let refusal = refused(&server, "/ws/chat/general/?username=c", &[]).await;
    assert_eq!((refusal.status, refusal.code()), (503, "over_capacity"));
    // A closed connection frees its slot.
    drop(b);
    let deadline = std::time::Instant::now() + PROMPTLY;
    let mut admitted = false;
    while !admitted && std::time::Instant::now() < deadline {
        admitted = try_connect(&server, "/ws/chat/general/?username=c", &[])
            .await
            .is_ok();
        if !admitted {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert!(admitted, "the slot came back");
}

const SECRET: &str = "e2e-secret";

fn token(alg: Algorithm, claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn jwt_auth_refuses_missing_expired_forged_and_foreign_algorithm_tokens() {
    let database = Database::sqlite();
    let server = TestServer::start_on(
        &database,
        &["--auth", "jwt"],
        &[("BANTER_JWT_SECRET", SECRET)],
    )
    .await;
    let later = get_current_timestamp() + 3600;
    let good = token(
        Algorithm::HS256,
        json!({"sub": "alice", "exp": later}),
        SECRET,
    );
    // The token's sub is the username; a username parameter is ignored.
    let (_, welcome) = try_connect(
        &server,
        &format!("/ws/chat/general/?token={good}&username=mallory"),
        &[],
    )
    .await
    .expect("a valid token connects");
    assert_eq!(welcome["username"], "alice");
    let bearer = format!("Bearer {good}");
    assert!(
        try_connect(&server, "/ws/chat/general/", &[("authorization", &bearer)])
            .await
            .is_ok()
    );

    let expired = token(
        Algorithm::HS256,
        json!({"sub": "alice", "exp": get_current_timestamp() - 3600}),
        SECRET,
    );
    let just_expired = token(
        Algorithm::HS256,
        json!({"sub": "alice", "exp": get_current_timestamp() - 2}),
        SECRET,
    );
    let forged = token(
        Algorithm::HS256,
        json!({"sub": "alice", "exp": later}),
        "not-the-secret",
    );
    let hs512 = token(
        Algorithm::HS512,
        json!({"sub": "alice", "exp": later}),
        SECRET,
    );
    let no_exp = token(Algorithm::HS256, json!({"sub": "alice"}), SECRET);
    let bad_sub = token(
        Algorithm::HS256,
        json!({"sub": "not a name!", "exp": later}),
        SECRET,
    );
    for path in [
        "/ws/chat/general/?username=alice".to_owned(),
        format!("/ws/chat/general/?token={expired}"),
        format!("/ws/chat/general/?token={just_expired}"),
        format!("/ws/chat/general/?token={forged}"),
        format!("/ws/chat/general/?token={hs512}"),
        format!("/ws/chat/general/?token={no_exp}"),
        format!("/ws/chat/general/?token={bad_sub}"),
        "/ws/chat/general/?token=garbage".to_owned(),
    ] {
        let refusal = refused(&server, &path, &[]).await;
        assert_eq!(
            (refusal.status, refusal.code()),
            (401, "unauthorized"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_plain_get_is_not_upgraded() {
    let server = TestServer::start(&[]).await;
    let response = http()
        .get(server.url("/ws/chat/general/?username=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}
