//! Search latency over a large store: 1,000,000 messages in 100 rooms, on SQLite and Postgres.
//!
//! `cargo bench -p banter-adapter-storage --bench search_latency` (add `-- --messages N` for
//! another size, `-- --only sqlite` or `-- --only postgres` for one backend, `-- --samples N`
//! for the queries per kind). Messages are synthetic chat: 3–20 words each from a vocabulary
//! of 20,000 made-up words with Zipf-distributed frequencies (a few words in most messages,
//! most words rare), so common words, rare words, prefixes and phrases all occur. They are
//! written straight into the tables (what the store's writer would have stored), then the
//! store's own indexer catches up, timed; then every kind of query is run through the port
//! (`MessageStore::search`: index, tail, confirmation and highlights) and its latency taken.
//! Prints Markdown tables for docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark harness fails loudly

use std::time::{Duration, Instant};

use banter_adapter_storage::{DatabaseUrl, Store, StoreConfig};
use banter_domain::ports::MessageStore;
use banter_domain::{PageLimit, RoomName, SearchQuery, SearchScope};

const ROOMS: usize = 100;
const VOCABULARY: usize = 20_000;
const SYLLABLES: [&str; 24] = [
    "ba", "ko", "ri", "mu", "te", "sa", "lo", "ni", "pe", "du", "ga", "vi", "zo", "he", "ju", "ra",
    "mi", "no", "fe", "ta", "ki", "su", "wo", "ly",
];

/// xorshift64*: deterministic, good enough to pick words.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Corpus {
    words: Vec<String>,
    /// Cumulative Zipf weights, for sampling by rank.
    cumulative: Vec<f64>,
}

impl Corpus {
    fn new() -> Self {
        let words = (0..VOCABULARY)
            .map(|i| {
                // Two to four syllables, distinct by construction (the index in base 24).
                let mut n = i;
                let mut word = String::new();
                loop {
                    word.push_str(SYLLABLES[n % SYLLABLES.len()]);
                    n /= SYLLABLES.len();
                    if n == 0 {
                        break;
                    }
                }
                if word.len() < 4 {
                    word.push_str("an");
                }
                word
            })
            .collect();
        let mut total = 0.0;
        let cumulative = (1..=VOCABULARY)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn word(&self, rng: &mut Rng) -> &str {
        let target = rng.unit() * self.cumulative[VOCABULARY - 1];
        let rank = self.cumulative.partition_point(|c| *c < target);
        &self.words[rank.min(VOCABULARY - 1)]
    }

    fn message(&self, rng: &mut Rng) -> String {
        let count = 3 + rng.below(18);
        let words: Vec<&str> = (0..count).map(|_| self.word(rng)).collect();
        words.join(" ")
    }
}

/// `VALUES` rows for messages `from..to` (round-robin over the rooms, one millisecond apart).
fn values(corpus: &Corpus, rng: &mut Rng, from: usize, to: usize) -> String {
    let base_ms = 1_795_000_000_000_i64;
    (from..to)
        .map(|i| {
            let room = i % ROOMS;
            let seq = i / ROOMS + 1;
            format!(
                "('room-{room}', {seq}, 'user{}', '{}', {}, NULL)",
                rng.below(50),
                corpus.message(rng),
                base_ms + i as i64
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn rooms_sql(messages: usize) -> String {
    let last = messages / ROOMS;
    (0..ROOMS)
        .map(|room| format!("('room-{room}', {last}, 1795000000000, 1795000000000)"))
        .collect::<Vec<_>>()
        .join(",")
}

const INSERT: &str =
    "INSERT INTO messages (room, seq, username, content, created_at_ms, client_id) VALUES ";
const ROOMS_INSERT: &str =
    "INSERT INTO rooms (name, last_seq, last_message_at_ms, created_at_ms) VALUES ";
const CHUNK: usize = 5_000;

async fn fill(url: &DatabaseUrl, corpus: &Corpus, messages: usize) {
    let mut rng = Rng(0x5eed);
    match url {
        DatabaseUrl::Sqlite { path } => {
            use diesel::Connection;
            use diesel::connection::SimpleConnection;
            let mut conn = diesel::SqliteConnection::establish(path).unwrap();
            conn.batch_execute("BEGIN").unwrap();
            conn.batch_execute(&format!("{ROOMS_INSERT}{}", rooms_sql(messages)))
                .unwrap();
            for from in (0..messages).step_by(CHUNK) {
                let to = (from + CHUNK).min(messages);
                conn.batch_execute(&format!("{INSERT}{}", values(corpus, &mut rng, from, to)))
                    .unwrap();
            }
            conn.batch_execute("COMMIT").unwrap();
        }
        DatabaseUrl::Postgres { url } => {
            use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
            let mut conn = AsyncPgConnection::establish(url).await.unwrap();
            conn.batch_execute(&format!("{ROOMS_INSERT}{}", rooms_sql(messages)))
                .await
                .unwrap();
            for from in (0..messages).step_by(CHUNK) {
                let to = (from + CHUNK).min(messages);
                conn.batch_execute(&format!("{INSERT}{}", values(corpus, &mut rng, from, to)))
                    .await
                    .unwrap();
            }
            // What autovacuum would do soon after: statistics for the planner.
            conn.batch_execute("ANALYZE").await.unwrap();
        }
    }
}

/// A query of each kind, drawn afresh per sample.
fn query_of(kind: &str, corpus: &Corpus, rng: &mut Rng) -> String {
    let ranked =
        |rng: &mut Rng, from: usize, to: usize| corpus.words[from + rng.below(to - from)].clone();
    match kind {
        "common word" => format!("\"{}\"", ranked(rng, 0, 20)),
        "mid word" => format!("\"{}\"", ranked(rng, 200, 2_000)),
        "rare word" => format!("\"{}\"", ranked(rng, 10_000, VOCABULARY)),
        "prefix" => ranked(rng, 200, 2_000).chars().take(3).collect(),
        "two words" => format!("{} {}", ranked(rng, 0, 50), ranked(rng, 200, 2_000)),
        "phrase" => {
            let message = corpus.message(rng);
            let words: Vec<&str> = message.split(' ').collect();
            let at = rng.below(words.len() - 1);
            format!("\"{} {}\"", words[at], words[at + 1])
        }
        other => panic!("unknown kind {other}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn measure(store: &Store, corpus: &Corpus, samples: usize) -> Vec<Duration> {
    let mut rng = Rng(0xcafe);
    let limit = PageLimit::bounded(20, 100).unwrap();
    let mut all = Vec::new();
    println!("| scope | query | p50 ms | p99 ms | max ms | mean results |");
    println!("|---|---|---:|---:|---:|---:|");
    for scope_kind in ["room", "every room"] {
        for kind in [
            "common word",
            "mid word",
            "rare word",
            "prefix",
            "two words",
            "phrase",
        ] {
            let mut times = Vec::with_capacity(samples);
            let mut results = 0;
            for _ in 0..samples {
                let q = query_of(kind, corpus, &mut rng);
                let query = SearchQuery::parse(&q).unwrap();
                let scope = if scope_kind == "room" {
                    SearchScope::Room {
                        room: RoomName::parse(&format!("room-{}", rng.below(ROOMS))).unwrap(),
                        before: None,
                    }
                } else {
                    SearchScope::Readable { member_of: vec![] }
                };
                let started = Instant::now();
                let page = store.search(&scope, &query, limit).await.unwrap();
                times.push(started.elapsed());
                results += page.hits.len();
            }
            times.sort();
            println!(
                "| {scope_kind} | {kind} | {} | {} | {} | {:.1} |",
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.99)),
                ms(*times.last().unwrap()),
                results as f64 / samples as f64
            );
            all.extend(times);
        }
    }
    all.sort();
    all
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().ok().expect("a number"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let messages: usize = arg(&args, "--messages").unwrap_or(1_000_000);
    let samples: usize = arg(&args, "--samples").unwrap_or(200);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let corpus = Corpus::new();
    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let (url, database) = if backend == "sqlite" {
            let path = dir.path().join("search.db").display().to_string();
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
        runtime.block_on(async {
            let mut config = StoreConfig::new(url.clone());
            // The bench drives the indexer itself, to time it.
            config.search_index_interval = None;
            let store = Store::open(config).await.unwrap();
            store.migrate().await.unwrap();
            let started = Instant::now();
            fill(&url, &corpus, messages).await;
            let filled = started.elapsed();
            let started = Instant::now();
            let indexed = store.index_search_now().await.unwrap();
            let indexing = started.elapsed();
            assert_eq!(indexed, messages);
            println!(
                "\n### {backend}: {messages} messages in {ROOMS} rooms (loaded in {:.1} s; indexed by the store's indexer in {:.1} s, {:.0} messages/s)\n",
                filled.as_secs_f64(),
                indexing.as_secs_f64(),
                messages as f64 / indexing.as_secs_f64()
            );
            if backend == "postgres" {
                use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
                if let DatabaseUrl::Postgres { url } = &url {
                    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
                    conn.batch_execute("ANALYZE search_docs").await.unwrap();
                }
            }
            let all = measure(&store, &corpus, samples).await;
            println!(
                "\nAll {} queries: p50 {} ms, p99 {} ms, max {} ms.",
                all.len(),
                ms(percentile(&all, 0.5)),
                ms(percentile(&all, 0.99)),
                ms(*all.last().unwrap())
            );
            store.close().await;
        });
        if let Some(db) = database {
            runtime.block_on(db.drop_now());
        }
    }
}
