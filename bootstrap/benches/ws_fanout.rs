//! WebSocket fan-out through the real binary: deliveries per second, delivery latency, and
//! memory per idle connection.
//!
//! `cargo bench -p banter --bench ws_fanout` (add `-- --quick` for a short run). Starts
//! `banter serve` (release build) on SQLite in a temporary directory, connects `receivers`
//! WebSockets to one room, and has 10 sender connections post at a paced total rate; every
//! receiver timestamps every `chat_message`. Prints a Markdown table for docs/performance.md.
//! The load generator shares the machine's cores with the server.
//!
//! `-- --cluster N` starts N nodes instead, sharing a throwaway Postgres database and a Redis
//! namespace (`BANTER_TEST_POSTGRES_URL`, `BANTER_TEST_REDIS_URL`), with receivers and senders
//! spread over the nodes round-robin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark harness fails loudly

mod support;

use support::Server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const SENDERS: usize = 10;

/// Where the nodes keep messages and meet.
struct Backend {
    database_url: String,
    broker: String,
    namespace: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    _postgres: Option<banter_testkit::TestDatabase>,
}

impl Backend {
    fn single() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        Backend {
            database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
            broker: "memory".to_owned(),
            namespace: "banter".to_owned(),
            _sqlite_dir: Some(dir),
            _postgres: None,
        }
    }

    async fn cluster() -> Backend {
        let database = banter_testkit::TestDatabase::create()
            .await
            .expect("Postgres for --cluster");
        let broker = banter_testkit::redis_url()
            .await
            .expect("Redis for --cluster");
        Backend {
            database_url: database.url.clone(),
            broker,
            namespace: banter_testkit::unique_namespace("bench"),
            _sqlite_dir: None,
            _postgres: Some(database),
        }
    }
}

fn start_server(backend: &Backend) -> Server {
    Server::start(&[
        "--database-url",
        &backend.database_url,
        "--broker",
        &backend.broker,
        "--redis-namespace",
        &backend.namespace,
        "--outbound-queue",
        "4096",
    ])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Outcome {
    nodes: usize,
    receivers: usize,
    offered_rate: u64,
    deliveries: u64,
    seconds: f64,
    latencies: Vec<Duration>,
    closed_early: usize,
    rss_per_connection_kib: f64,
}

async fn run(nodes: usize, receivers: usize, rate: u64, seconds: u64) -> Outcome {
    let backend = if nodes > 1 {
        Backend::cluster().await
    } else {
        Backend::single()
    };
    let servers: Vec<Server> = (0..nodes).map(|_| start_server(&backend)).collect();
    let bases: Vec<String> = servers
        .iter()
        .map(|server| format!("ws://{}/ws/chat/fanout/", server.addr))
        .collect();
    let rss = || servers.iter().map(|s| rss_kib(s.child.id())).sum::<u64>();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss();

    let origin = Instant::now();
    let messages = rate * seconds;
    let delivered = Arc::new(AtomicUsize::new(0));
    let closed_early = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for i in 0..receivers {
        let base = &bases[i % nodes];
        let url = format!("{base}?username=r{i}&history=0");
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        // The welcome.
        socket.next().await.unwrap().unwrap();
        let (delivered, closed_early) = (Arc::clone(&delivered), Arc::clone(&closed_early));
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(messages as usize);
            let mut got = 0;
            while got < messages {
                match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        if let Some(sent) = text.split("\"content\":\"t=").nth(1) {
                            let nanos: u64 = sent.split('"').next().unwrap().parse().unwrap();
                            latencies
                                .push(origin.elapsed().saturating_sub(Duration::from_nanos(nanos)));
                            got += 1;
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => {
                        closed_early.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = rss();

    let started = Instant::now();
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let base = &bases[s % nodes];
        let url = format!("{base}?username=sender{s}&history=0");
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let per_sender = messages / SENDERS as u64;
        let interval = Duration::from_secs_f64(SENDERS as f64 / rate as f64);
        senders.push(tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            // Senders ignore what they receive; a task drains it so their queues stay short.
            let drain = tokio::spawn(async move { while stream.next().await.is_some() {} });
            let mut tick = tokio::time::interval(interval);
            for _ in 0..per_sender {
                tick.tick().await;
                let frame = format!(
                    "{{\"type\":\"chat_message\",\"message\":\"t={}\"}}",
                    origin.elapsed().as_nanos()
                );
                sink.send(Message::Text(frame.into())).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            drain.abort();
        }));
    }
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    for sender in senders {
        sender.abort();
    }
    latencies.sort_unstable();
    Outcome {
        nodes,
        receivers,
        offered_rate: rate,
        deliveries: delivered.load(Ordering::Relaxed) as u64,
        seconds,
        latencies,
        closed_early: closed_early.load(Ordering::Relaxed),
        rss_per_connection_kib: rss_connected.saturating_sub(rss_before) as f64 / receivers as f64,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let nodes: usize = args
        .iter()
        .position(|a| a == "--cluster")
        .and_then(|i| args.get(i + 1))
        .map_or(1, |n| n.parse().expect("--cluster takes a number of nodes"));
    let seconds = if quick { 2 } else { 5 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| nodes | receivers | posts/s offered | deliveries/s | p50 ms | p99 ms | max ms | closed early | RSS per idle connection |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (receivers, rate) in [(100, 500), (1000, 100), (1000, 200), (2000, 100)] {
        let o = runtime.block_on(run(nodes, receivers, rate, seconds));
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {:.1} KiB |",
            o.nodes,
            o.receivers,
            o.offered_rate,
            o.deliveries as f64 / o.seconds,
            percentile(&o.latencies, 0.50),
            percentile(&o.latencies, 0.99),
            o.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            o.closed_early,
            o.rss_per_connection_kib,
        );
    }
}
