//! The router in-process (poem's TestClient), for what the real binary cannot show on demand:
//! the refusals while shutting down, and the OpenAPI document against what the API enforces.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use banter_adapter_http::{HttpSettings, app_state, router};
use banter_adapter_memory::{MemoryBroadcaster, MemoryPresence, SystemClock};
use banter_adapter_storage::{DatabaseUrl, Store, StoreConfig};
use banter_application::{Chat, ChatSettings, Ports};
use poem::http::StatusCode;
use poem::test::TestClient;

struct TestPorts;

impl Ports for TestPorts {
    type Store = Store;
    type Broadcaster = MemoryBroadcaster;
    type Presence = MemoryPresence;
    type Clock = SystemClock;
}

fn handshake<'a, E: poem::Endpoint>(
    client: &'a TestClient<E>,
    path: &str,
) -> poem::test::TestRequestBuilder<'a, E> {
    client
        .get(path)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
}

/// The whole router over a fresh SQLite store (kept while the returned directory lives).
async fn test_router() -> (
    TestClient<impl poem::Endpoint>,
    banter_adapter_http::Shutdown,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite {
        path: dir.path().join("router.db").display().to_string(),
    };
    let store = Store::open(StoreConfig::new(url)).await.unwrap();
    store.migrate().await.unwrap();
    let chat = Chat::new(
        store,
        MemoryBroadcaster::default(),
        MemoryPresence::default(),
        SystemClock::default(),
        ChatSettings::default(),
    );
    let (state, shutdown) = app_state::<TestPorts>(chat, HttpSettings::default(), None);
    (TestClient::new(router(state)), shutdown, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_refuses_handshakes_and_readiness_with_503() {
    let (client, shutdown, _dir) = test_router().await;

    // In-process requests cannot be upgraded, so before shutdown the handshake gets as far as
    // the upgrade itself (every check passed) and is refused there.
    let before = handshake(&client, "/ws/chat/general/?username=alice")
        .send()
        .await;
    before.assert_status(StatusCode::BAD_REQUEST);
    before
        .json()
        .await
        .value()
        .object()
        .get("detail")
        .assert_string("this endpoint speaks WebSocket: send an Upgrade: websocket handshake");
    client.get("/readyz").send().await.assert_status_is_ok();

    shutdown.begin();
    let refused = handshake(&client, "/ws/chat/general/?username=alice")
        .send()
        .await;
    refused.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    refused.assert_content_type("application/problem+json");
    let body = refused.json().await;
    body.value()
        .object()
        .get("code")
        .assert_string("unavailable");
    client
        .get("/readyz")
        .send()
        .await
        .assert_status(StatusCode::SERVICE_UNAVAILABLE);
    // Liveness is unaffected: the process still serves.
    client.get("/healthz").send().await.assert_status_is_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_documented_page_limit_is_the_one_enforced() {
    let (client, _shutdown, _dir) = test_router().await;
    let spec: serde_json::Value = serde_json::from_str(
        &client
            .get("/openapi.json")
            .send()
            .await
            .0
            .into_body()
            .into_string()
            .await
            .unwrap(),
    )
    .unwrap();
    for (path, spec_path, contract_max) in [
        (
            "/api/rooms/general/messages",
            "/api/rooms/{room}/messages",
            200,
        ),
        ("/api/rooms", "/api/rooms", 1000),
        (
            "/api/rooms/general/changes",
            "/api/rooms/{room}/changes",
            200,
        ),
        (
            "/api/rooms/general/presence",
            "/api/rooms/{room}/presence",
            1000,
        ),
        (
            "/api/rooms/general/search?q=hello",
            "/api/rooms/{room}/search",
            100,
        ),
        ("/api/search?q=hello", "/api/search", 100),
    ] {
        let join = if path.contains('?') { '&' } else { '?' };
        let limit = spec["paths"][spec_path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(
            limit["schema"]["maximum"].as_f64(),
            Some(f64::from(contract_max)),
            "{spec_path}"
        );
        client
            .get(format!("{path}{join}limit={contract_max}"))
            .send()
            .await
            .assert_status_is_ok();
        let over = client
            .get(format!("{path}{join}limit={}", contract_max + 1))
            .send()
            .await;
        over.assert_status(StatusCode::BAD_REQUEST);
        over.assert_content_type("application/problem+json");
    }
}
