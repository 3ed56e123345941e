//! Shutdown with `--drain-delay`: out of the load balancer first (`/readyz` 503, new
//! WebSockets refused), sockets closed with 1001 only after the delay, then exit 0.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

/// Polls `/readyz` until it answers 503; returns its problem body.
async fn until_not_ready(server: &TestServer) -> Value {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let response = http().get(server.url("/readyz")).send().await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            return response.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn readyz_fails_first_and_sockets_close_after_the_delay() {
    let mut server = TestServer::start(&["--drain-delay", "2s", "--rate-limit", "off"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    assert_eq!(
        http()
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let signalled = Instant::now();
    server.signal("TERM");
    let problem = until_not_ready(&server).await;
    let not_ready_after = signalled.elapsed();
    assert_eq!(problem["code"], "unavailable", "{problem}");
    // Well before the delay is over (generous: these machines are noisy).
    assert!(
        not_ready_after < Duration::from_millis(1500),
        "/readyz took {not_ready_after:?}"
    );

    // New WebSockets are refused; the open one still works, and so does the REST API.
    let refusal = try_connect(&server, "/ws/chat/general/?username=late", &[])
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!((refusal.status, refusal.code()), (503, "unavailable"));
    alice.post("still here", Some("drain-1")).await;
    assert_eq!(
        alice.recv_type("chat_message").await["message"]["content"],
        "still here"
    );
    assert_eq!(
        http()
            .get(server.url("/api/rooms/general/messages"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(!server.has_exited(), "the process waits out the delay");

    // The socket is closed with 1001, and not before the delay ran (a slow machine only
    // makes it later).
    let (code, _reason) = alice.expect_close().await;
    let closed_after = signalled.elapsed();
    assert_eq!(code, 1001);
    assert!(
        closed_after >= Duration::from_millis(1500),
        "closed after only {closed_after:?}"
    );
    assert!(closed_after > not_ready_after);
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_second_signal_ends_the_delay() {
    let server = TestServer::start(&["--drain-delay", "10m"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    server.signal("INT");
    until_not_ready(&server).await;
    server.signal("TERM");
    let (code, _reason) = alice.expect_close().await;
    assert_eq!(code, 1001);
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}
