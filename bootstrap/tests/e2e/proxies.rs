//! `--trusted-proxies`: behind a trusted proxy the per-address limits and the logs count the
//! forwarded client address; from any other peer the forwarding headers are ignored.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

const PATH: &str = "/ws/chat/general/?username=someone";

/// A handshake from 127.0.0.1 with extra headers: admitted (kept open) or refused.
async fn handshake(
    server: &TestServer,
    headers: &[(&str, &str)],
) -> Result<WsClient, (u16, String)> {
    try_connect(server, PATH, headers)
        .await
        .map(|(client, _welcome)| client)
        .map_err(|refusal| (refusal.status, refusal.code().to_owned()))
}

fn too_many() -> Result<(), (u16, String)> {
    Err((429, "too_many_connections".to_owned()))
}

#[tokio::test]
async fn connection_limit_counts_the_forwarded_address() {
    let server = TestServer::start(&[
        "--trusted-proxies",
        "10.0.0.0/8,127.0.0.1/32",
        "--max-connections-per-ip",
        "1",
    ])
    .await;
    let xff = |value| [("x-forwarded-for", value)];
    // Two forwarded addresses from the one peer are two clients.
    let _a = handshake(&server, &xff("203.0.113.1")).await.unwrap();
    let _b = handshake(&server, &xff("203.0.113.2")).await.unwrap();
    // The same address again is over its limit, whatever the client put on the left, and
    // whatever trusted proxies stand on the right.
    for value in [
        "203.0.113.1",
        "6.6.6.6, 203.0.113.1",
        "203.0.113.1, 10.1.2.3",
        "203.0.113.1:4711",
    ] {
        assert_eq!(
            handshake(&server, &xff(value)).await.map(drop),
            too_many(),
            "{value}"
        );
    }
    // `Forwarded` (RFC 7239), IPv6 quoted with a port.
    let forwarded = |value| [("forwarded", value)];
    let _c = handshake(
        &server,
        &forwarded("for=\"[2001:db8::7]:4711\";proto=https"),
    )
    .await
    .unwrap();
    assert_eq!(
        handshake(&server, &forwarded("for=6.6.6.6, for=\"[2001:db8::7]\""))
            .await
            .map(drop),
        too_many()
    );
    assert_eq!(
        handshake(&server, &forwarded("for=203.0.113.2"))
            .await
            .map(drop),
        too_many()
    );
    // No header: the proxy's own address, a client of its own.
    let _d = handshake(&server, &[]).await.unwrap();
    // A malformed entry: the peer's address, which is now full.
    assert_eq!(
        handshake(&server, &xff("unknown")).await.map(drop),
        too_many()
    );
    // The request log names the client, and the proxy it came through.
    let logs = server.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("remote_addr=203.0.113.2") && l.contains("proxy=127.0.0.1")),
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("remote_addr=2001:db8::7")),
        "{logs:#?}"
    );
}

#[tokio::test]
async fn spoofed_headers_from_untrusted_peers_are_ignored() {
    for trusted in [&["--trusted-proxies", "10.0.0.0/8"][..], &[]] {
        let server = TestServer::start(
            &[
                trusted,
                &["--max-connections-per-ip", "1", "--rate-limit", "1:1"],
            ]
            .concat(),
        )
        .await;
        let _a = handshake(&server, &[("x-forwarded-for", "1.1.1.1")])
            .await
            .unwrap();
        for headers in [
            [("x-forwarded-for", "2.2.2.2")],
            [("forwarded", "for=3.3.3.3")],
            [("x-real-ip", "4.4.4.4")],
        ] {
            assert_eq!(
                handshake(&server, &headers).await.map(drop),
                too_many(),
                "{trusted:?} {headers:?}"
            );
        }
        // REST: one bucket for 127.0.0.1, whatever the headers say.
        let post = |from: &'static str| {
            http()
                .post(server.url("/api/rooms/general/messages"))
                .header("x-forwarded-for", from)
                .json(&json!({"username": "alice", "content": "hi"}))
                .send()
        };
        assert_eq!(post("5.5.5.5").await.unwrap().status(), StatusCode::CREATED);
        assert_eq!(
            post("6.6.6.6").await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{trusted:?}"
        );
        let logs = server.logs();
        assert!(
            !logs
                .iter()
                .any(|l| ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5"]
                    .iter()
                    .any(|spoofed| l.contains(spoofed))),
            "no log line believes a spoofed address: {logs:#?}"
        );
        assert!(
            logs.iter().any(|l| l.contains("remote_addr=127.0.0.1")),
            "{logs:#?}"
        );
    }
}

#[tokio::test]
async fn rest_rate_limit_follows_the_forwarded_address() {
    let server =
        TestServer::start(&["--trusted-proxies", "127.0.0.1", "--rate-limit", "2:1"]).await;
    let post = |headers: &[(&'static str, &'static str)]| {
        let mut request = http()
            .post(server.url("/api/rooms/general/messages"))
            .json(&json!({"username": "alice", "content": "hi"}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status() }
    };
    let a = [("x-forwarded-for", "198.51.100.1")];
    assert_eq!(post(&a).await, StatusCode::CREATED);
    assert_eq!(post(&a).await, StatusCode::CREATED);
    // The bucket refills one token a second: a slow machine may let one more through.
    let mut limited = false;
    for _ in 0..3 {
        if post(&a).await == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "198.51.100.1 was never limited");
    // Other clients behind the same proxy have buckets of their own.
    assert_eq!(
        post(&[("x-forwarded-for", "198.51.100.2")]).await,
        StatusCode::CREATED
    );
    assert_eq!(
        post(&[("forwarded", "for=198.51.100.3")]).await,
        StatusCode::CREATED
    );
    assert_eq!(post(&[]).await, StatusCode::CREATED, "the proxy's own");
}
