//! banter behind nginx, with the configuration operators use (`deploy/nginx/banter.conf`):
//! chat, presence and resume through nginx over three nodes, per-IP limits that count each
//! client behind the proxy, not the proxy, and a rolling restart of every node while clients
//! chat, losing and doubling nothing.
//!
//! nginx comes from Debian's package (`.ci/run` installs it); without it the tests skip with a
//! notice, unless `BANTER_REQUIRE_SERVICES=1` (CI), where they fail. Each test starts its own
//! nginx on a free loopback port, in a temporary prefix, and stops it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::cluster::Cluster;
use crate::helpers::{PROMPTLY, TestServer, WsClient};

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _prefix: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Nginx {
    /// nginx in front of `nodes`, or `None` (after the skip notice) when it is not installed.
    async fn start(nodes: &[&TestServer]) -> Option<Nginx> {
        let Some(binary) = nginx_binary() else {
            banter_testkit::missing_service(
                "nginx",
                "no nginx binary (Debian package nginx-light)",
            );
            return None;
        };
        let prefix = tempfile::tempdir().expect("a temporary directory");
        let dir = prefix.path();
        let port = free_port();
        let upstreams: String = nodes
            .iter()
            .map(|n| format!("server {} max_fails=2 fail_timeout=5s;\n", n.addr))
            .collect();
        std::fs::write(dir.join("upstreams.conf"), upstreams).expect("upstreams.conf");
        std::fs::write(
            dir.join("listen.conf"),
            format!("listen 127.0.0.1:{port};\n"),
        )
        .expect("listen.conf");
        let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/banter.conf");
        let temp = |name: &str| dir.join(name).display().to_string();
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {log} warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {body};\n  proxy_temp_path {proxy};\n\
             fastcgi_temp_path {fcgi};\n  uwsgi_temp_path {uwsgi};\n  scgi_temp_path {scgi};\n\
             include {site};\n}}\n",
            pid = temp("nginx.pid"),
            log = temp("error.log"),
            body = temp("body"),
            proxy = temp("proxy"),
            fcgi = temp("fastcgi"),
            uwsgi = temp("uwsgi"),
            scgi = temp("scgi"),
            site = site.display(),
        );
        std::fs::write(dir.join("nginx.conf"), main).expect("nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut nginx = Nginx {
            child,
            addr,
            _prefix: prefix,
        };
        let deadline = Instant::now() + PROMPTLY;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx._prefix.path().join("error.log"))
                    .unwrap_or_default();
                panic!("nginx exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(nginx)
    }

    /// A WebSocket through nginx from the loopback address `source`; the welcome, or the
    /// refusal's status.
    async fn connect(
        &self,
        source: Ipv4Addr,
        path_and_query: &str,
    ) -> Result<(WsClient, serde_json::Value), u16> {
        self.connect_from_page(source, path_and_query, None).await
    }

    /// As [`Nginx::connect`], with the `Origin` a browser's page would send.
    async fn connect_from_page(
        &self,
        source: Ipv4Addr,
        path_and_query: &str,
        origin: Option<&str>,
    ) -> Result<(WsClient, serde_json::Value), u16> {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("a loopback source address");
        let tcp = socket.connect(self.addr).await.expect("nginx accepts");
        let mut request = format!("ws://{}{}", self.addr, path_and_query)
            .into_client_request()
            .expect("a request");
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().expect("an origin header"));
        }
        let connecting = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp));
        match tokio::time::timeout(PROMPTLY, connecting).await {
            Err(_) => panic!("handshake through nginx timed out"),
            Ok(Ok((stream, _))) => {
                let mut client = WsClient { stream };
                let welcome = client.recv().await;
                assert_eq!(welcome["type"], "welcome");
                Ok((client, welcome))
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                Err(response.status().as_u16())
            }
            Ok(Err(e)) => panic!("handshake through nginx failed: {e}"),
        }
    }
}

const ALICE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BOB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const CAROL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

async fn chat_message(client: &mut WsClient) -> serde_json::Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == "chat_message" {
            return frame["message"].clone();
        }
    }
}

#[tokio::test]
async fn chat_presence_and_resume_work_through_nginx_over_three_nodes() {
    let Some(cluster) = Cluster::new("nginx").await else {
        return;
    };
    let trusted = ["--trusted-proxies", "127.0.0.1/32"];
    let broker = cluster.broker().to_owned();
    let (n0, n1, n2) = (
        cluster.node_with(&broker, &trusted, &[]).await,
        cluster.node_with(&broker, &trusted, &[]).await,
        cluster.node_with(&broker, &trusted, &[]).await,
    );
    let Some(nginx) = Nginx::start(&[&n0, &n1, &n2]).await else {
        return;
    };
    let (mut alice, _) = nginx
        .connect(ALICE, "/ws/chat/general/?username=alice")
        .await
        .expect("alice joins");
    let (mut bob, _) = nginx
        .connect(BOB, "/ws/chat/general/?username=bob")
        .await
        .expect("bob joins");
    // Carol's browser opened the page from nginx's address: the same origin, port included.
    let page = format!("http://{}", nginx.addr);
    let (mut carol, welcome) = nginx
        .connect_from_page(CAROL, "/ws/chat/general/?username=carol", Some(&page))
        .await
        .expect("carol joins from the page nginx served");
    // Round robin put the three on three nodes; presence still sees all of them.
    assert_eq!(welcome["online"], json!(["alice", "bob", "carol"]));

    alice.post("hello through nginx", Some("n-1")).await;
    let first = chat_message(&mut bob).await;
    assert_eq!(first["content"], "hello through nginx");
    assert_eq!(chat_message(&mut carol).await, first);
    assert_eq!(chat_message(&mut alice).await, first);

    // Bob drops; two more messages; he resumes through nginx (likely on another node).
    drop(bob);
    alice.post("while bob was away", None).await;
    alice.post("and another", None).await;
    let after = first["seq"].as_u64().expect("a seq");
    let (mut bob, welcome) = nginx
        .connect(
            BOB,
            &format!("/ws/chat/general/?username=bob&after={after}"),
        )
        .await
        .expect("bob resumes");
    assert_eq!(welcome["messages"], json!([]));
    let missed = [chat_message(&mut bob).await, chat_message(&mut bob).await];
    let contents: Vec<&str> = missed
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["while bob was away", "and another"]);
    assert_eq!(missed[0]["seq"].as_u64(), Some(after + 1));
    assert_eq!(missed[1]["seq"].as_u64(), Some(after + 2));
}

#[tokio::test]
async fn per_ip_limits_count_each_client_behind_nginx() {
    let Some(cluster) = Cluster::new("nginx-limits").await else {
        return;
    };
    let broker = cluster.broker().to_owned();
    // One node, so that its per-address count sees every connection.
    let node = cluster
        .node_with(
            &broker,
            &[
                "--trusted-proxies",
                "127.0.0.1/32",
                "--max-connections-per-ip",
                "2",
            ],
            &[],
        )
        .await;
    let Some(nginx) = Nginx::start(&[&node]).await else {
        return;
    };
    let mut held = Vec::new();
    for n in 0..2 {
        let path = format!("/ws/chat/general/?username=a{n}");
        held.push(
            nginx
                .connect(ALICE, &path)
                .await
                .expect("within alice's limit"),
        );
    }
    let refused = nginx.connect(ALICE, "/ws/chat/general/?username=a2").await;
    assert_eq!(refused.err(), Some(429), "alice's third connection");
    // Bob comes through the same nginx, from his own address: his own count.
    for n in 0..2 {
        let path = format!("/ws/chat/general/?username=b{n}");
        held.push(
            nginx
                .connect(BOB, &path)
                .await
                .expect("bob is counted apart"),
        );
    }
}

/// What one chatting client was shown, and what went wrong for it.
#[derive(Debug, Default)]
struct Shown {
    /// seq → (client id, content), every chat message in the order shown.
    messages: BTreeMap<u64, (String, String)>,
    /// Gaps, messages shown twice or out of order, refusals.
    anomalies: Vec<String>,
    connections: usize,
}

/// A WebSocket through nginx, or `None` while no node takes it (a restart under way).
async fn try_through(nginx: SocketAddr, source: Ipv4Addr, path: &str) -> Option<WsClient> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::from((source, 0))).ok()?;
    let tcp = socket.connect(nginx).await.ok()?;
    let request = format!("ws://{nginx}{path}").into_client_request().ok()?;
    let connecting = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp));
    match tokio::time::timeout(PROMPTLY, connecting).await {
        Ok(Ok((stream, _))) => Some(WsClient { stream }),
        _ => None,
    }
}

/// A client that chats across restarts as the web app does: it posts `posts` messages with
/// client ids; when its connection is lost it reconnects through nginx with `after=<the last
/// seq it was shown>` and resends what was not acknowledged (its own message not shown back
/// yet). It stops once it was shown all `total` messages of the room.
async fn chat_through_restarts(
    nginx: SocketAddr,
    source: Ipv4Addr,
    name: String,
    posts: usize,
    total: u64,
) -> Shown {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut shown = Shown::default();
    let mut last = 0_u64;
    let mut unacknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut posted = 0;
    while last < total || !unacknowledged.is_empty() || posted < posts {
        assert!(
            Instant::now() < deadline,
            "{name}: shown up to {last} of {total}, unacknowledged {unacknowledged:?}"
        );
        let path = format!("/ws/chat/rolling/?username={name}&after={last}");
        let Some(mut ws) = try_through(nginx, source, &path).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        shown.connections += 1;
        let frame = |id: &str, content: &str| {
            Message::Text(
                json!({"type": "chat_message", "message": content, "client_id": id})
                    .to_string()
                    .into(),
            )
        };
        let mut alive = true;
        for (id, content) in &unacknowledged {
            alive &= ws.stream.send(frame(id, content)).await.is_ok();
        }
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while alive && (last < total || !unacknowledged.is_empty() || posted < posts) {
            tokio::select! {
                _ = tick.tick(), if posted < posts => {
                    let id = format!("{name}-{posted}");
                    let content = format!("{name} says {posted}");
                    alive = ws.stream.send(frame(&id, &content)).await.is_ok();
                    unacknowledged.insert(id, content);
                    posted += 1;
                }
                next = ws.stream.next() => match next {
                    Some(Ok(Message::Text(text))) => {
                        let value: serde_json::Value =
                            serde_json::from_str(&text).expect("frames are JSON");
                        match value["type"].as_str() {
                            Some("chat_message") => {
                                let m = &value["message"];
                                let seq = m["seq"].as_u64().expect("a seq");
                                let id = m["client_id"].as_str().unwrap_or_default().to_owned();
                                let content = m["content"].as_str().unwrap_or_default().to_owned();
                                if seq != last + 1 {
                                    shown.anomalies.push(format!("{name}: seq {seq} after {last}"));
                                }
                                last = last.max(seq);
                                if m["username"] == name.as_str() {
                                    unacknowledged.remove(&id);
                                }
                                if let Some(before) = shown.messages.insert(seq, (id, content)) {
                                    shown.anomalies.push(format!("{name}: seq {seq} shown twice ({before:?})"));
                                }
                            }
                            // A resend of a post stored before the connection was lost.
                            Some("duplicate") => {
                                let id = value["message"]["client_id"].as_str().unwrap_or_default();
                                unacknowledged.remove(id);
                            }
                            Some("error") => shown.anomalies.push(format!("{name}: {value}")),
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => alive = false,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    shown
}

#[tokio::test]
async fn a_rolling_restart_behind_nginx_loses_no_message_and_doubles_none() {
    let Some(cluster) = Cluster::new("rolling").await else {
        return;
    };
    let broker = cluster.broker().to_owned();
    let args = ["--trusted-proxies", "127.0.0.1/32", "--drain-delay", "1s"];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(cluster.node_with(&broker, &args, &[]).await);
    }
    let Some(nginx) = Nginx::start(&nodes.iter().collect::<Vec<_>>()).await else {
        return;
    };
    const CLIENTS: usize = 4;
    const POSTS: usize = 120;
    let total = (CLIENTS * POSTS) as u64;
    let chatters: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let source = Ipv4Addr::new(127, 0, 1, 1 + n as u8);
            tokio::spawn(chat_through_restarts(
                nginx.addr,
                source,
                format!("user{n}"),
                POSTS,
                total,
            ))
        })
        .collect();

    // One node after the other: SIGTERM (out of nginx's rotation at once, sockets closed with
    // 1001 after the drain delay), exit, and a new process on the same address.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for _ in 0..3 {
        let node = nodes.remove(0);
        let addr = node.addr.to_string();
        let status = node.terminate().await;
        assert!(status.success(), "a drained node exits cleanly: {status}");
        nodes.push(cluster.node_listening(&addr, &broker, &args, &[]).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut everyone = Vec::new();
    for chatter in chatters {
        everyone.push(chatter.await.expect("a chatter finished"));
    }
    // The store, read through nginx: every post once, under its client id.
    let mut stored: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = crate::helpers::http()
            .get(format!(
                "http://{}/api/rooms/rolling/messages?after={after}&limit=200",
                nginx.addr
            ))
            .send()
            .await
            .expect("history through nginx")
            .json::<serde_json::Value>()
            .await
            .expect("a page");
        for m in page["messages"].as_array().expect("messages") {
            let seq = m["seq"].as_u64().expect("a seq");
            let id = m["client_id"].as_str().unwrap_or_default().to_owned();
            let content = m["content"].as_str().unwrap_or_default().to_owned();
            stored.insert(seq, (id, content));
            after = seq;
        }
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "every post stored, gapless"
    );
    let ids: std::collections::BTreeSet<&String> = stored.values().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), total as usize, "no post stored twice");
    for shown in &everyone {
        eprintln!(
            "a client: {} connections, {} messages shown",
            shown.connections,
            shown.messages.len()
        );
        assert_eq!(shown.anomalies, Vec::<String>::new());
        assert_eq!(
            shown.messages, stored,
            "each client was shown the store, in order"
        );
        assert!(
            shown.connections >= 2,
            "every node restarted, so every client resumed at least once"
        );
    }
}
