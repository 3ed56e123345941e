//! Starting the real `banter` binary, and speaking to it over WebSocket and HTTP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const BANTER: &str = env!("CARGO_BIN_EXE_banter");

/// The binary servers are started from: this build's, unless `BANTER_TEST_BIN` names
/// another (the fault campaign's demonstration runs it against a deliberately broken build).
pub fn banter_binary() -> String {
    std::env::var("BANTER_TEST_BIN").unwrap_or_else(|_| BANTER.to_owned())
}

/// How long a test waits for something that should happen promptly.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// A running `banter serve` with its own database.
pub struct TestServer {
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    // Keeps the SQLite directory alive for the server's lifetime.
    _dir: Option<Arc<tempfile::TempDir>>,
}

/// Where a test server keeps its data.
#[derive(Clone)]
pub struct Database {
    pub url: String,
    pub dir: Option<Arc<tempfile::TempDir>>,
}

impl Database {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("banter.db").display());
        Self {
            url,
            dir: Some(Arc::new(dir)),
        }
    }

    pub fn path(&self) -> String {
        self.url.trim_start_matches("sqlite://").to_owned()
    }

    /// Runs SQL on the SQLite database behind the server's back (to break it on purpose).
    pub fn execute(&self, sql: &str) {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        let mut conn =
            diesel::SqliteConnection::establish(&self.path()).expect("open the database");
        // The server's search indexer may hold the write lock for a moment.
        conn.batch_execute("PRAGMA busy_timeout = 10000")
            .expect("set a busy timeout");
        conn.batch_execute(sql).expect("run SQL");
    }
}

impl TestServer {
    /// `banter serve` on a fresh SQLite database, with extra flags.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_on(&Database::sqlite(), args, &[]).await
    }

    pub async fn start_on(database: &Database, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_listening(database, "127.0.0.1:0", args, envs).await
    }

    /// As [`TestServer::start_on`], on a given address (a node restarted where a proxy
    /// expects it).
    pub async fn start_listening(
        database: &Database,
        listen: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(banter_binary());
        command
            .arg("serve")
            .args(["--listen", listen, "--database-url", &database.url])
            .args(args)
            .env_remove("BANTER_JWT_SECRET")
            .env("BANTER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start banter");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening on http://").nth(1) {
                        let addr = addr
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(PROMPTLY))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("banter did not start; logs: {:?}", logs.lock().unwrap()));
        Self {
            addr: addr.parse().expect("listen address"),
            child,
            logs,
            _dir: database.dir.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(self) -> ExitStatus {
        self.signal("TERM");
        self.wait_for_exit(Duration::from_secs(20)).await
    }

    /// Sends a signal (`TERM`, `INT`) and leaves the process running.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_some()
    }

    /// Waits for the process to exit by itself within `limit`.
    pub async fn wait_for_exit(mut self, limit: Duration) -> ExitStatus {
        let mut child =
            std::mem::replace(&mut self.child, Command::new("true").spawn().expect("true"));
        let logs = Arc::clone(&self.logs);
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + limit;
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    return status;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "banter did not exit within {limit:?}; logs: {:?}",
                        logs.lock().map(|l| l.clone()).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap()
    }

    /// The server's log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The server's side of a failing test.
            for line in self.logs.lock().map(|l| l.clone()).unwrap_or_default() {
                eprintln!("banter: {line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket client that reads frames as JSON.
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A refused handshake: status and problem body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl Refusal {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// Opens a WebSocket at `path_and_query` with extra headers; returns the client and its
/// welcome frame, or the refusal.
pub async fn try_connect(
    server: &TestServer,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<(WsClient, Value), Refusal> {
    let mut request = server
        .ws_url(path_and_query)
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match tokio::time::timeout(PROMPTLY, tokio_tungstenite::connect_async(request)).await {
        Err(_) => panic!("handshake timed out"),
        Ok(Ok((stream, _response))) => {
            let mut client = WsClient { stream };
            let welcome = client.recv().await;
            assert_eq!(welcome["type"], "welcome", "the first frame is the welcome");
            Ok((client, welcome))
        }
        Ok(Err(WsError::Http(response))) => {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err(Refusal {
                status,
                content_type,
                body,
            })
        }
        Ok(Err(e)) => panic!("handshake failed: {e}"),
    }
}

/// Opens a WebSocket to `room` as `username`, with extra query parameters.
pub async fn connect(
    server: &TestServer,
    room: &str,
    username: &str,
    query: &str,
) -> (WsClient, Value) {
    let path = format!("/ws/chat/{room}/?username={}{}", urlencode(username), query);
    match try_connect(server, &path, &[]).await {
        Ok(ok) => ok,
        Err(refusal) => panic!("connect refused: {refusal:?}"),
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl WsClient {
    /// The next text frame as JSON; pings and pongs are skipped.
    pub async fn recv(&mut self) -> Value {
        match self.recv_within(PROMPTLY).await {
            Some(value) => value,
            None => panic!("no frame arrived"),
        }
    }

    /// The next text frame within `limit`, if any.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("expected a text frame, got {other:?}"),
                Some(Err(e)) => panic!("read failed: {e}"),
                None => panic!("the connection closed"),
            }
        }
    }

    /// Asserts nothing but pings arrives for `limit`.
    pub async fn assert_quiet(&mut self, limit: Duration) {
        if let Some(frame) = self.recv_within(limit).await {
            panic!("expected no frame, got {frame}");
        }
    }

    /// Frames until one of type `kind`, skipping others (presence and typing noise).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn post(&mut self, message: &str, client_id: Option<&str>) {
        self.send(
            serde_json::json!({"type": "chat_message", "message": message, "client_id": client_id}),
        )
        .await;
    }

    /// Reads until the server's close frame (skipping other frames) and returns its code and
    /// reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        self.expect_close_within(PROMPTLY).await
    }

    pub async fn expect_close_within(&mut self, limit: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no close frame within {limit:?}"));
            match next {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (u16::from(code), reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("read failed before the close frame: {e}"),
                None => panic!("closed without a close frame"),
            }
        }
    }
}

/// Messages' seqs from a list of `chat_message` frames.
pub fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f["message"]["seq"].as_u64().expect("seq"))
        .collect()
}

/// One sample of `/metrics`: the value of the series named exactly `series` (labels
/// included, e.g. `banter_store_reads_total{server="replica"}`), if exported.
pub async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let metrics = get_text(server, "/metrics").await;
    let prefix = format!("{series} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
}

/// The body of a GET as text (the metrics page, documents).
pub async fn get_text(server: &TestServer, path: &str) -> String {
    http()
        .get(server.url(path))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("a text body")
}

pub async fn get_json(server: &TestServer, path: &str) -> Value {
    http()
        .get(server.url(path))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON body")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PROMPTLY)
        .build()
        .expect("http client")
}

/// A REST call's status and JSON body; an error must come as problem+json.
pub async fn call(request: reqwest::RequestBuilder) -> (reqwest::StatusCode, Value) {
    let response = request.send().await.expect("a response");
    let status = response.status();
    if !status.is_success() {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{status}: {content_type}"
        );
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asserts that a [`call`]'s answer is the problem `code` with `status`.
pub fn assert_problem(got: &(reqwest::StatusCode, Value), status: reqwest::StatusCode, code: &str) {
    assert_eq!(
        (got.0, got.1["code"].as_str()),
        (status, Some(code)),
        "{}",
        got.1
    );
}

/// An HS256 token for `sub` signed with `secret`, valid for ten minutes.
pub fn jwt(secret: &str, sub: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
    encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": sub, "exp": get_current_timestamp() + 600}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("an encodable token")
}
