//! The WebSocket protocol against the real binary.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn welcome_carries_history_presence_and_typing() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let (mut alice, welcome) = connect(&server, "general", "alice", "").await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "room": "general", "username": "alice", "messages": [],
               "has_more": false, "last_seq": 0, "last_rev": 0, "read_seq": 0, "online": ["alice"], "online_count": 1,
               "typing": []})
    );
    for i in 1..=3 {
        alice.post(&format!("m{i}"), None).await;
        alice.recv_type("chat_message").await;
    }
    alice
        .send(json!({"type": "typing", "is_typing": true}))
        .await;
    // Frames are handled in order: the pong proves the typing frame was recorded.
    alice.send(json!({"type": "ping"})).await;
    alice.recv_type("pong").await;
    let (_bob, welcome) = connect(&server, "general", "bob", "&history=2").await;
    assert_eq!(welcome["last_seq"], 3);
    assert_eq!(welcome["has_more"], true);
    let contents: Vec<&str> = welcome["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["m2", "m3"], "the latest, oldest first");
    assert_eq!(welcome["online"], json!(["alice", "bob"]));
    assert_eq!(welcome["online_count"], 2);
    assert_eq!(welcome["typing"], json!(["alice"]));
    let (_carol, welcome) = connect(&server, "general", "carol", "&history=0").await;
    assert_eq!(welcome["messages"], json!([]));
    assert_eq!(
        welcome["has_more"], true,
        "history=0 says whether the room has messages"
    );
}

#[tokio::test]
async fn a_post_reaches_everyone_including_the_sender_after_it_is_stored() {
    let server = TestServer::start(&[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    alice.recv_type("presence").await;
    alice.post("Hello <b>bob</b>", Some("c-7f3a")).await;
    let echo = alice.recv().await;
    let delivered = bob.recv().await;
    assert_eq!(echo, delivered);
    assert_eq!(echo["type"], "chat_message");
    let message = &echo["message"];
    assert_eq!(message["room"], "general");
    assert_eq!(message["seq"], 1);
    assert_eq!(message["username"], "alice");
    assert_eq!(message["content"], "Hello <b>bob</b>");
    assert_eq!(message["client_id"], "c-7f3a");
    let timestamp = message["timestamp"].as_str().unwrap();
    assert_eq!(
        timestamp.len(),
        24,
        "RFC 3339 with milliseconds: {timestamp}"
    );
    assert!(timestamp.ends_with('Z'));
    // Stored before shown: the REST API has it.
    let history = get_json(&server, "/api/rooms/general/messages").await;
    assert_eq!(history["messages"][0], *message);
    bob.post("no id", None).await;
    assert_eq!(alice.recv().await["message"]["client_id"], Value::Null);
}

#[tokio::test]
async fn a_resend_gets_a_duplicate_frame_and_nobody_sees_it_twice() {
    let server = TestServer::start(&[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    alice.recv_type("presence").await;
    alice.post("once", Some("same")).await;
    let original = alice.recv().await;
    assert_eq!(bob.recv().await, original);
    alice.post("once (again)", Some("same")).await;
    let duplicate = alice.recv().await;
    assert_eq!(
        duplicate,
        json!({"type": "duplicate", "message": original["message"]})
    );
    bob.assert_quiet(Duration::from_millis(300)).await;
    // The REST API agrees: one message.
    let history = get_json(&server, "/api/rooms/general/messages").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn presence_counts_people_not_tabs() {
    let server = TestServer::start(&[]).await;
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    let (mut tab1, _) = connect(&server, "general", "alice", "").await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "presence", "event": "join", "username": "alice", "online_count": 2})
    );
    let (tab2, welcome) = connect(&server, "general", "alice", "").await;
    assert_eq!(
        welcome["online"],
        json!(["alice", "bob"]),
        "two tabs, one entry"
    );
    bob.assert_quiet(Duration::from_millis(300)).await;
    tab1.assert_quiet(Duration::from_millis(100)).await;
    drop(tab2);
    bob.assert_quiet(Duration::from_millis(300)).await;
    tab1.stream.close(None).await.unwrap();
    assert_eq!(
        bob.recv().await,
        json!({"type": "presence", "event": "leave", "username": "alice", "online_count": 1})
    );
    let presence = get_json(&server, "/api/rooms/general/presence").await;
    assert_eq!(
        presence,
        json!({"room": "general", "online": ["bob"], "online_count": 1, "typing": []})
    );
}

#[tokio::test]
async fn typing_is_shown_to_others_and_expires_after_six_seconds() {
    let server = TestServer::start(&[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    alice.recv_type("presence").await;
    bob.send(json!({"type": "typing", "is_typing": true})).await;
    assert_eq!(
        alice.recv().await,
        json!({"type": "typing", "username": "bob", "is_typing": true})
    );
    bob.assert_quiet(Duration::from_millis(200)).await;
    // Others see bob typing from their welcome on; bob's own second tab does not.
    let (_carol, welcome) = connect(&server, "general", "carol", "").await;
    assert_eq!(welcome["typing"], json!(["bob"]));
    let (_bob_tab2, welcome) = connect(&server, "general", "bob", "").await;
    assert_eq!(
        welcome["typing"],
        json!([]),
        "typing is never shown to the typer"
    );
    alice.recv_type("presence").await; // carol's join
    // Start afresh, so that the throttle window below does not include the handshakes above.
    bob.send(json!({"type": "typing", "is_typing": false}))
        .await;
    assert_eq!(alice.recv_type("typing").await["is_typing"], false);
    bob.send(json!({"type": "typing", "is_typing": true})).await;
    assert_eq!(alice.recv_type("typing").await["is_typing"], true);
    // A refresh inside 2 s is not broadcast again.
    let refreshed = std::time::Instant::now();
    bob.send(json!({"type": "typing", "is_typing": true})).await;
    alice.assert_quiet(Duration::from_millis(500)).await;
    let ended = alice
        .recv_within(Duration::from_secs(12))
        .await
        .expect("typing should expire");
    assert_eq!(
        ended,
        json!({"type": "typing", "username": "bob", "is_typing": false})
    );
    // The server saw the refresh no earlier than `refreshed`, and expires 6 s after it.
    let waited = refreshed.elapsed();
    assert!(
        waited >= Duration::from_millis(5900),
        "expired too early: {waited:?} after the last refresh"
    );
    // Stopping explicitly, and posting, also end it.
    bob.send(json!({"type": "typing", "is_typing": true})).await;
    alice.recv().await;
    bob.send(json!({"type": "typing", "is_typing": false}))
        .await;
    assert_eq!(alice.recv().await["is_typing"], false);
    bob.send(json!({"type": "typing", "is_typing": true})).await;
    alice.recv().await;
    bob.post("sent", None).await;
    assert_eq!(alice.recv().await["type"], "chat_message");
    assert_eq!(
        alice.recv().await,
        json!({"type": "typing", "username": "bob", "is_typing": false})
    );
}

#[tokio::test]
async fn ping_gets_pong() {
    let server = TestServer::start(&[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    alice.send(json!({"type": "ping"})).await;
    assert_eq!(alice.recv().await, json!({"type": "pong"}));
}

async fn expect_error(client: &mut WsClient, code: &str, client_id: Value) {
    let frame = client.recv().await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], code, "{frame}");
    assert_eq!(frame["client_id"], client_id, "{frame}");
    assert!(
        frame["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{frame}"
    );
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_connection_stays_open() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    for bad in [
        "not json",
        "[1,2]",
        "\"string\"",
        "{\"message\":\"no type\"}",
        "{\"type\":5}",
    ] {
        alice.send_text(bad).await;
        expect_error(&mut alice, "invalid_json", Value::Null).await;
    }
    alice.stream.send_binary(vec![1, 2, 3]).await;
    expect_error(&mut alice, "invalid_json", Value::Null).await;
    alice.send(json!({"type": "shout"})).await;
    expect_error(&mut alice, "unknown_type", Value::Null).await;

    alice
        .send(json!({"type": "chat_message", "client_id": "k1"}))
        .await;
    expect_error(&mut alice, "invalid_message", json!("k1")).await;
    alice
        .send(json!({"type": "chat_message", "message": 42, "client_id": "k2"}))
        .await;
    expect_error(&mut alice, "invalid_message", json!("k2")).await;
    alice
        .send(json!({"type": "chat_message", "message": "   \n\t ", "client_id": "k3"}))
        .await;
    expect_error(&mut alice, "invalid_message", json!("k3")).await;
    alice
        .send(json!({"type": "chat_message", "message": "x".repeat(4001), "client_id": "k4"}))
        .await;
    expect_error(&mut alice, "invalid_message", json!("k4")).await;
    alice
        .send(json!({"type": "chat_message", "message": "bell\u{7}"}))
        .await;
    expect_error(&mut alice, "invalid_message", Value::Null).await;
    alice
        .send(json!({"type": "chat_message", "message": "fine", "client_id": "has space"}))
        .await;
    expect_error(&mut alice, "invalid_message", Value::Null).await;
    alice
        .send(json!({"type": "chat_message", "message": "fine", "client_id": 7}))
        .await;
    expect_error(&mut alice, "invalid_message", Value::Null).await;
    alice
        .send(json!({"type": "typing", "is_typing": "yes"}))
        .await;
    expect_error(&mut alice, "invalid_message", Value::Null).await;

    // Nothing was stored, and the connection still works.
    alice.send(json!({"type": "ping"})).await;
    assert_eq!(alice.recv().await, json!({"type": "pong"}));
    alice.post("x".repeat(4000).as_str(), Some("max")).await;
    assert_eq!(alice.recv().await["message"]["seq"], 1);
}

trait SendBinary {
    async fn send_binary(&mut self, bytes: Vec<u8>);
}

impl SendBinary
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn send_binary(&mut self, bytes: Vec<u8>) {
        use futures_util::SinkExt;
        self.send(Message::Binary(bytes.into())).await.unwrap();
    }
}

#[tokio::test]
async fn refused_posts_name_the_offending_field() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    for (frame, field) in [
        (json!({"type": "chat_message"}), "message"),
        (json!({"type": "chat_message", "message": ""}), "message"),
        (
            json!({"type": "chat_message", "message": "hi", "client_id": 5}),
            "client_id",
        ),
        (
            json!({"type": "chat_message", "message": "hi", "client_id": "sp ace"}),
            "client_id",
        ),
    ] {
        alice.send(frame.clone()).await;
        let error = alice.recv().await;
        assert_eq!(error["code"], "invalid_message", "{frame}: {error}");
        let detail = error["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with(&format!("{field}: ")),
            "{frame}: the detail names {field}: {error}"
        );
    }
}

#[tokio::test]
async fn posting_is_rate_limited_per_connection() {
    let server = TestServer::start(&["--rate-limit", "5:1"]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    // A burst of 5, then refused. On a slow machine the bucket may refill by one per second
    // while the burst is stored, so count what the clock allowed rather than assume 5.
    let started = std::time::Instant::now();
    let mut accepted = 0u64;
    let refused = loop {
        let client_id = format!("r-{accepted}");
        alice.post(&format!("m{accepted}"), Some(&client_id)).await;
        let frame = alice.recv().await;
        if frame["type"] == "error" {
            assert_eq!(frame["client_id"], client_id.as_str());
            break frame;
        }
        assert_eq!(frame["type"], "chat_message");
        accepted += 1;
        let allowed = 5 + started.elapsed().as_secs() + 1;
        assert!(accepted <= allowed, "{accepted} posts and never limited");
    };
    assert!(accepted >= 5, "the burst is 5, refused after {accepted}");
    assert_eq!(refused["code"], "rate_limited");
    // Another connection of the same user has its own bucket.
    let (mut tab2, _) = connect(&server, "general", "alice", "").await;
    tab2.post("from tab 2", None).await;
    assert_eq!(tab2.recv().await["message"]["content"], "from tab 2");
    // The bucket refills at 1 per second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    alice.recv_type("chat_message").await; // tab 2's message
    alice.post("after the refill", Some("refill")).await;
    assert_eq!(alice.recv().await["message"]["client_id"], "refill");
}

#[tokio::test]
async fn a_store_failure_is_reported_as_unavailable_and_delivers_nothing() {
    let database = Database::sqlite();
    let server = TestServer::start_on(&database, &[], &[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    alice.recv_type("presence").await;
    // Make the database refuse this one message, behind the server's back.
    database.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.content = 'doomed' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    );
    alice.post("doomed", Some("u-1")).await;
    expect_error(&mut alice, "unavailable", json!("u-1")).await;
    bob.assert_quiet(Duration::from_millis(300)).await;
    alice.post("fine", Some("u-2")).await;
    assert_eq!(bob.recv().await["message"]["seq"], 1, "seqs stay gapless");
}

#[tokio::test]
async fn a_message_over_64_kib_closes_with_1009() {
    let server = TestServer::start(&[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    let big = json!({"type": "chat_message", "message": "x".repeat(70_000)}).to_string();
    alice.send_text(&big).await;
    let (code, _) = alice.expect_close().await;
    assert_eq!(code, 1009);
    // Exactly 64 KiB is still accepted (it is refused for its content, not its size).
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    let mut frame = json!({"type": "chat_message", "message": ""}).to_string();
    let padding = 65_536 - frame.len();
    frame = json!({"type": "chat_message", "message": "y".repeat(padding)}).to_string();
    assert_eq!(frame.len(), 65_536);
    bob.send_text(&frame).await;
    // Alice's departure may reach bob first: her close and his join race.
    assert_eq!(bob.recv_type("error").await["code"], "invalid_message");
}

/// A masked client text frame, written by hand (a client library would refuse to send it).
fn raw_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81u8];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xffff {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Opens a WebSocket by hand and returns the raw TCP stream (after sending the handshake).
async fn raw_socket(
    server: &TestServer,
    username: &str,
    recv_buffer: Option<u32>,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut tcp = socket.connect(server.addr).await.unwrap();
    let handshake = format!(
        "GET /ws/chat/general/?username={username} HTTP/1.1\r\nHost: {}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    tcp
}

/// Whether raw server bytes hold a close frame with `code` (no mask, payload code first).
fn has_close_frame(bytes: &[u8], code: u16) -> bool {
    let [high, low] = code.to_be_bytes();
    bytes
        .windows(4)
        .any(|w| w[0] == 0x88 && w[1] >= 2 && w[1] < 126 && w[2] == high && w[3] == low)
}

#[tokio::test]
async fn a_single_oversized_frame_gets_the_1009_close_frame_not_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[]).await;
    let mut tcp = raw_socket(&server, "raw", None).await;
    tcp.write_all(&raw_text_frame(&vec![b'x'; 65_537]))
        .await
        .unwrap();
    // Everything the server sends until it closes: the 101, the welcome, then the close frame.
    let mut received = Vec::new();
    let read = tokio::time::timeout(PROMPTLY, tcp.read_to_end(&mut received))
        .await
        .unwrap();
    assert!(
        read.is_ok(),
        "the connection was reset instead of closed: {read:?}"
    );
    assert!(
        has_close_frame(&received, 1009),
        "no 1009 close frame in {} bytes",
        received.len()
    );
}

#[tokio::test]
async fn a_client_that_sends_without_reading_is_closed_with_1013() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[]).await;
    let mut tcp = raw_socket(&server, "pinger", Some(4096)).await;
    // Requests whose answers are never read: pings of the protocol (125-byte payloads, the
    // most a control frame carries) and of the application. Their ~8 MB of answers overflow
    // what the kernel buffers (4 MB here), then the server's bound on unread replies.
    let mut ping = vec![0x89u8, 0x80 | 125, 0x12, 0x34, 0x56, 0x78];
    ping.extend(std::iter::repeat_n(b'p', 125));
    let app_ping = raw_text_frame(br#"{"type":"ping"}"#);
    let writing = tokio::spawn(async move {
        for i in 0..64_000 {
            let frame = if i % 64 == 0 { &app_ping } else { &ping };
            if tcp.write_all(frame).await.is_err() {
                break;
            }
        }
        tcp
    });
    let mut tcp = tokio::time::timeout(PROMPTLY, writing)
        .await
        .unwrap()
        .unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(PROMPTLY, tcp.read_to_end(&mut received)).await;
    assert!(
        has_close_frame(&received, 1013),
        "no 1013 close frame among {} bytes",
        received.len()
    );
}

#[tokio::test]
async fn a_client_that_falls_behind_is_closed_with_1013_and_resumes_without_gaps() {
    const TOTAL: u64 = 1000;
    let server = TestServer::start(&["--rate-limit", "off", "--outbound-queue", "8"]).await;
    // A reader with a tiny receive window, which reads nothing for a while.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (stream, _) = tokio_tungstenite::client_async(
        server.ws_url("/ws/chat/flood/?username=slow&history=0"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    let mut slow = WsClient { stream };
    assert_eq!(slow.recv().await["type"], "welcome");
    // Post more than every buffer between the server and the slow reader can hold (kernel
    // send buffers grow to a few MiB): 1,000 messages of ~12 KB.
    // 32 at a time: enough for group commit, few enough that no request waits long in line.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let body = "€".repeat(3990);
    let statuses: Vec<_> = futures_util::stream::iter(0..TOTAL)
        .map(|i| {
            let request = client
                .post(server.url("/api/rooms/flood/messages"))
                .json(&json!({"username": "fast", "content": format!("{i} {body}")}));
            async move { request.send().await.unwrap().status() }
        })
        .buffered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
    // Now read: frames already queued arrive in order, then the close frame.
    let mut seen = Vec::new();
    let code = loop {
        match tokio::time::timeout(PROMPTLY, futures_util::StreamExt::next(&mut slow.stream))
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "chat_message" {
                    seen.push(frame["message"]["seq"].as_u64().unwrap());
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("expected frames then a close, got {other:?}"),
        }
    };
    assert_eq!(code, 1013);
    // The feed may have caught up from the store before its live queue overflowed, so how
    // much arrived varies; what arrived is always a gapless prefix.
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "what arrived is in order without gaps"
    );
    // Resuming with `after` delivers the rest, once each.
    let after = seen.last().copied().unwrap_or(0);
    let (mut again, welcome) = connect(&server, "flood", "slow", &format!("&after={after}")).await;
    assert_eq!(welcome["messages"], json!([]));
    assert_eq!(welcome["last_seq"], TOTAL);
    let mut rest = Vec::new();
    while rest.len() < (TOTAL - after) as usize {
        rest.push(again.recv_type("chat_message").await);
    }
    assert_eq!(seqs(&rest), ((after + 1)..=TOTAL).collect::<Vec<_>>());
    again.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_idle_timeout() {
    let server = TestServer::start(&["--ws-ping-interval", "1", "--ws-idle-timeout", "4"]).await;
    let (mut quiet, _) = connect(&server, "general", "quiet", "").await;
    // Not reading means not answering pings: after 4 s of silence the server closes.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let (code, reason) = quiet.expect_close().await;
    assert!(code == 1000 || code == 1001, "close code {code}");
    assert!(reason.contains("idle"), "{reason}");
    // A client that reads (and so answers pings) stays connected.
    let (mut lively, _) = connect(&server, "other", "lively", "").await;
    lively.assert_quiet(Duration::from_secs(7)).await;
    lively.send(json!({"type": "ping"})).await;
    assert_eq!(lively.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn resume_with_after_across_a_server_restart() {
    let database = Database::sqlite();
    let server = TestServer::start_on(&database, &["--rate-limit", "off"], &[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    for i in 1..=5 {
        alice
            .post(&format!("before {i}"), Some(&format!("b{i}")))
            .await;
    }
    // All five are stored before the server stops (a frame the server never read would be
    // the client's to resend); the client pretends it saw only the first three.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(alice.recv_type("chat_message").await);
    }
    let last_seen = seen[2]["message"]["seq"].as_u64().unwrap();
    // The server goes away; the client is told with 1001.
    let terminate = tokio::spawn(server.terminate());
    let mut code = None;
    while code.is_none() {
        match tokio::time::timeout(PROMPTLY, futures_util::StreamExt::next(&mut alice.stream))
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(frame)))) => code = Some(u16::from(frame.code)),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    assert_eq!(code, Some(1001));
    assert!(
        terminate.await.unwrap().success(),
        "graceful shutdown exits 0"
    );

    let server = TestServer::start_on(&database, &["--rate-limit", "off"], &[]).await;
    // Another client posts while Alice is away.
    let (mut bob, _) = connect(&server, "general", "bob", "").await;
    bob.post("while away", None).await;
    bob.recv_type("chat_message").await;
    let (mut alice, welcome) =
        connect(&server, "general", "alice", &format!("&after={last_seen}")).await;
    assert_eq!(welcome["last_seq"], 6);
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(alice.recv_type("chat_message").await);
    }
    assert_eq!(seqs(&missed), [4, 5, 6], "no gap, no duplicate");
    // A resend of an unacknowledged post is recognised after the restart.
    alice.post("before 5", Some("b5")).await;
    assert_eq!(alice.recv_type("duplicate").await["message"]["seq"], 5);
    bob.post("live again", None).await;
    assert_eq!(alice.recv_type("chat_message").await["message"]["seq"], 7);
}

#[tokio::test]
async fn the_largest_welcome_fits() {
    let server = TestServer::start(&["--rate-limit", "off"]).await;
    let client = http();
    let content = "😀".repeat(4000);
    for _ in 0..200 {
        let response = client
            .post(server.url("/api/rooms/big/messages"))
            .json(&json!({"username": "alice", "content": content}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let (_, welcome) = connect(&server, "big", "bob", "&history=200").await;
    let messages = welcome["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 200);
    assert!(messages.iter().all(|m| m["content"] == content.as_str()));
}

#[tokio::test]
async fn every_message_shown_before_a_sigkill_survives_it() {
    let database = Database::sqlite();
    let server = TestServer::start_on(&database, &["--rate-limit", "off"], &[]).await;
    let (mut writer, _) = connect(&server, "durable", "writer", "").await;
    let (mut reader, _) = connect(&server, "durable", "reader", "").await;
    writer.recv_type("presence").await;
    // Posts stream in without waiting; the reader records everything it is shown.
    for i in 0..2000 {
        writer
            .post(&format!("message {i}"), Some(&format!("k{i}")))
            .await;
    }
    let mut shown = Vec::new();
    while shown.len() < 300 {
        shown.push(reader.recv_type("chat_message").await["message"].clone());
    }
    server.kill();
    // Whatever else was already in the reader's socket was shown too.
    while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(
        Duration::from_millis(200),
        futures_util::StreamExt::next(&mut reader.stream),
    )
    .await
    {
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "chat_message" {
            shown.push(frame["message"].clone());
        }
    }

    let server = TestServer::start_on(&database, &[], &[]).await;
    let mut stored = Vec::new();
    loop {
        let after = stored.len();
        let page = get_json(
            &server,
            &format!("/api/rooms/durable/messages?after={after}&limit=200"),
        )
        .await;
        stored.extend(page["messages"].as_array().unwrap().iter().cloned());
        if page["has_more"] == false {
            break;
        }
    }
    let stored_seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        stored_seqs,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "gapless after the kill"
    );
    for message in &shown {
        let seq = message["seq"].as_u64().unwrap() as usize;
        assert_eq!(
            &stored[seq - 1],
            message,
            "a message that was shown survived, unchanged"
        );
    }
    assert!(stored.len() >= shown.len());
}

#[tokio::test]
async fn resuming_after_the_end_replays_nothing() {
    let server = TestServer::start(&[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    alice.post("one", None).await;
    alice.recv().await;
    let (mut bob, welcome) = connect(&server, "general", "bob", "&after=50").await;
    assert_eq!(
        welcome["last_seq"], 1,
        "the client sees last_seq < after and should reload"
    );
    assert_eq!(welcome["has_more"], false);
    bob.assert_quiet(Duration::from_millis(300)).await;
    alice.post("two", None).await;
    assert_eq!(bob.recv_type("chat_message").await["message"]["seq"], 2);
}

#[tokio::test]
async fn unicode_content_round_trips_byte_exact() {
    let server = TestServer::start(&[]).await;
    let (mut alice, _) = connect(
        &server,
        "général-room".replace('é', "e").as_str(),
        "Émile",
        "",
    )
    .await;
    let text = "emoji 👩‍👩‍👧, RTL שלום, combining e\u{301}, CRLF\r\n, tab\t, <script>alert(1)</script>";
    alice
        .post(text, Some("ü-is-not-ascii".replace('ü', "u").as_str()))
        .await;
    let frame = alice.recv().await;
    assert_eq!(frame["message"]["content"], text);
    assert_eq!(frame["message"]["username"], "Émile");
}

/// A gauge from `/metrics`.
async fn gauge(server: &TestServer, name: &str) -> u64 {
    metric(server, name)
        .await
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Opens `count` connections to `room`, posts from some, then closes them all: half with a
/// close frame, half by dropping the TCP connection; waits until the server counts none.
async fn churn(server: &TestServer, room: &str, count: usize) {
    let mut clients = Vec::new();
    for i in 0..count {
        let (mut client, _) = connect(server, room, &format!("churn{i}"), "").await;
        if i % 10 == 0 {
            client.post(&format!("churn {i}"), None).await;
        }
        clients.push(client);
    }
    for (i, client) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            let mut client = client;
            let _ = client.stream.close(None).await;
        } else {
            drop(client);
        }
    }
    let deadline = std::time::Instant::now() + PROMPTLY;
    while gauge(server, "banter_connections").await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn closed_connections_leave_no_task_behind() {
    let server =
        TestServer::start(&["--rate-limit", "off", "--max-connections-per-ip", "1000"]).await;
    // Warm up: the room's hub and every lazily started background task exist after this.
    churn(&server, "churn", 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = gauge(&server, "banter_runtime_alive_tasks").await;
    churn(&server, "churn", 200).await;
    // Each connection ran two tasks (the upgrade's and its own); once closed, none may stay.
    let deadline = std::time::Instant::now() + PROMPTLY;
    loop {
        let alive = gauge(&server, "banter_runtime_alive_tasks").await;
        if alive <= settled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{alive} tasks alive after 200 connections closed, {settled} before"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
