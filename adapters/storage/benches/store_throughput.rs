//! Acknowledged posts per second through the store, with and without group commit.
//!
//! `cargo bench -p banter-adapter-storage --bench store_throughput` (add `-- --quick` for a
//! short run, `-- --only sqlite/on/100` for one configuration, `-- --writers N` to override the
//! store's number of writer tasks, `-- --search-indexer off` to run without the background
//! search indexer, which is on by default as in `banter serve`). Each configuration gets a fresh database: SQLite in a
//! temporary directory, Postgres as a throwaway database on `BANTER_TEST_POSTGRES_URL` (default: the local server).
//! Prints a Markdown table for docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark harness fails loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use banter_adapter_storage::{DatabaseUrl, Store, StoreConfig};
use banter_domain::ports::MessageStore;
use banter_domain::{ClientId, Content, NewMessage, RoomName, Username};

const ROOMS: usize = 10;

struct Outcome {
    acked: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn run(config: StoreConfig, posters: usize, duration: Duration) -> Outcome {
    let store = Store::open(config).await.unwrap();
    store.migrate().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for poster in 0..posters {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let room = RoomName::parse(&format!("bench-{}", poster % ROOMS)).unwrap();
            let user = Username::parse(&format!("poster{poster}")).unwrap();
            let content =
                Content::parse("a benchmark message of a typical chat length, about sixty bytes")
                    .unwrap();
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let post = NewMessage {
                    room: room.clone(),
                    username: user.clone(),
                    content: content.clone(),
                    client_id: Some(ClientId::parse(&format!("b{poster}-{i}")).unwrap()),
                };
                let sent = Instant::now();
                store.append(post).await.unwrap();
                latencies.push(sent.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    store.close().await;
    latencies.sort_unstable();
    Outcome {
        acked: latencies.len(),
        elapsed,
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only sqlite/on/100` runs one configuration (for profiling).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let writers: Option<usize> = args
        .iter()
        .position(|a| a == "--writers")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--writers takes a number"));
    let search_indexer = match args
        .iter()
        .position(|a| a == "--search-indexer")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => panic!("--search-indexer takes on or off, not {other}"),
    };
    let duration = Duration::from_secs(if quick { 1 } else { 4 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| backend | group commit | writers | posters | acked msgs/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for backend in ["sqlite", "postgres"] {
        for group_commit in [true, false] {
            for posters in [1, 10, 100] {
                let name = format!(
                    "{backend}/{}/{posters}",
                    if group_commit { "on" } else { "off" }
                );
                if only.as_ref().is_some_and(|o| *o != name) {
                    continue;
                }
                let dir = tempfile::tempdir().unwrap();
                let (url, database) = if backend == "sqlite" {
                    let path = dir.path().join("bench.db").display().to_string();
                    (DatabaseUrl::Sqlite { path }, None)
                } else {
                    let Some(db) = runtime.block_on(banter_testkit::TestDatabase::create()) else {
                        continue;
                    };
                    (
                        DatabaseUrl::Postgres {
                            url: db.url.clone(),
                        },
                        Some(db),
                    )
                };
                let defaults = StoreConfig::new(url);
                let config = StoreConfig {
                    max_batch: if group_commit { 512 } else { 1 },
                    writers: writers.unwrap_or(defaults.writers),
                    search_index_interval: if search_indexer {
                        defaults.search_index_interval
                    } else {
                        None
                    },
                    ..defaults
                };
                let writer_count = config.writers;
                let outcome = runtime.block_on(run(config, posters, duration));
                let rate = outcome.acked as f64 / outcome.elapsed.as_secs_f64();
                println!(
                    "| {backend} | {} | {writer_count} | {posters} | {rate:.0} | {:.2} | {:.2} |",
                    if group_commit { "on" } else { "off" },
                    percentile(&outcome.latencies, 0.50).as_secs_f64() * 1000.0,
                    percentile(&outcome.latencies, 0.99).as_secs_f64() * 1000.0,
                );
                if let Some(db) = database {
                    runtime.block_on(db.drop_now());
                }
            }
        }
    }
}
