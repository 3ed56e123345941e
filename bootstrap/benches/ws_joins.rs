//! Joins per second into a warm room, and database reads per join, with the history cache on
//! (`--history-cache 200`) and off (`0`), alternated within one run.
//!
//! `cargo bench -p banter --bench ws_joins` (add `-- --quick` for a short run, `-- --postgres`
//! to store in a throwaway Postgres database from `BANTER_TEST_POSTGRES_URL` instead of SQLite).
//! Each round starts the release `banter serve` once per setting, posts 300 messages into one
//! room, keeps one client in it (so the room's hub stays), then opens `JOINS` WebSockets with
//! `history=50`, `CONCURRENCY` at a time: each reads its welcome and closes. The database reads
//! are counted by the server's own `banter_history_cache_misses_total` (every welcome that is
//! not answered from memory reads the store once). Prints a Markdown table for
//! docs/performance.md. The load generator shares the machine's cores with the server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark harness fails loudly

mod support;

use support::Server;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const WARM_MESSAGES: usize = 300;
const CONCURRENCY: usize = 32;

fn start_server(database_url: &str, history_cache: usize) -> Server {
    Server::start(&[
        "--database-url",
        database_url,
        "--history-cache",
        &history_cache.to_string(),
    ])
}

/// A counter's value from `/metrics`.
async fn counter(client: &reqwest::Client, server: &Server, name: &str) -> u64 {
    let metrics = client
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

struct Outcome {
    joins_per_second: f64,
    reads_per_join: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run(database_url: &str, history_cache: usize, joins: usize, room: &str) -> Outcome {
    let server = start_server(database_url, history_cache);
    let client = reqwest::Client::new();
    let base = format!("ws://{}/ws/chat/{room}/", server.addr);
    // The room's one resident client: it keeps the room's hub alive, and hears every join.
    let (mut host, _) = tokio_tungstenite::connect_async(format!("{base}?username=host"))
        .await
        .unwrap();
    host.next().await.unwrap().unwrap();
    let (mut host_sink, mut host_stream) = host.split();
    let listening = tokio::spawn(async move { while host_stream.next().await.is_some() {} });
    for n in 0..WARM_MESSAGES {
        let frame = format!("{{\"type\":\"chat_message\",\"message\":\"warm {n}\"}}");
        host_sink.send(Message::Text(frame.into())).await.unwrap();
    }
    // Every warm-up message is stored (and through the room's hub) before the joins start.
    let stored = format!("http://{}/api/rooms/{room}/messages?limit=1", server.addr);
    loop {
        let page: serde_json::Value = client
            .get(&stored)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["messages"][0]["seq"].as_u64() == Some(WARM_MESSAGES as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let misses = "banter_history_cache_misses_total ";
    let misses_before = counter(&client, &server, misses).await;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures_util::stream::iter(0..joins)
        .map(|i| {
            let url = format!("{base}?username=j{i}&history=50");
            async move {
                let began = Instant::now();
                let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                let welcome = socket.next().await.unwrap().unwrap();
                let took = began.elapsed();
                assert!(welcome.to_text().unwrap().contains("\"type\":\"welcome\""));
                let _ = socket.close(None).await;
                took
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let misses_after = counter(&client, &server, misses).await;
    listening.abort();
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Outcome {
        joins_per_second: joins as f64 / seconds,
        reads_per_join: (misses_after - misses_before) as f64 / joins as f64,
        p50_ms: at(0.50).as_secs_f64() * 1000.0,
        p99_ms: at(0.99).as_secs_f64() * 1000.0,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let postgres = args.iter().any(|a| a == "--postgres");
    let (rounds, joins) = if quick { (2, 500) } else { (5, 3000) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sqlite_dir = tempfile::tempdir().unwrap();
    let pg = postgres.then(|| {
        runtime
            .block_on(banter_testkit::TestDatabase::create())
            .expect("Postgres for --postgres")
    });
    let (backend, database_url) = match &pg {
        Some(database) => ("postgres", database.url.clone()),
        None => (
            "sqlite",
            format!("sqlite://{}", sqlite_dir.path().join("bench.db").display()),
        ),
    };
    println!("| round | backend | cache | joins/s | DB reads per join | p50 ms | p99 ms |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternated, so both settings see the same machine; a fresh room per run.
        for cache in [200, 0] {
            let room = format!("r{round}c{cache}");
            let o = runtime.block_on(run(&database_url, cache, joins, &room));
            println!(
                "| {round} | {backend} | {} | {:.0} | {:.2} | {:.1} | {:.1} |",
                if cache > 0 { "on" } else { "off" },
                o.joins_per_second,
                o.reads_per_join,
                o.p50_ms,
                o.p99_ms,
            );
            if cache > 0 { &mut on } else { &mut off }.push(o.joins_per_second);
        }
    }
    let ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    println!(
        "\nmedian joins/s: on {:.0}, off {:.0}; per-round on/off ratios {:?}",
        median(&mut on),
        median(&mut off),
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>()
    );
}
