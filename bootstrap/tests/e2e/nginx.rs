//! banter behind nginx, with the configuration operators use (`deploy/nginx/banter.conf`):
//! chat, presence and resume through nginx over three nodes, and per-IP limits that count each
//! client behind the proxy, not the proxy.
//!
//! nginx comes from Debian's package (`.ci/run` installs it); without it the tests skip with a
//! notice, unless `BANTER_REQUIRE_SERVICES=1` (CI), where they fail. Each test starts its own
//! nginx on a free loopback port, in a temporary prefix, and stops it.

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
