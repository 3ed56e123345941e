//! Stored before shown, under SIGKILL.
//!
//! This test binary plays two roles. As the parent it starts itself again as a child writer,
//! which posts from 16 concurrent tasks and prints every acknowledged message; the parent kills
//! it with SIGKILL mid-stream, reopens the database and requires every acknowledged message to
//! be there, with every room's seqs still gapless. It runs against SQLite and Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banter_adapter_storage::{DatabaseUrl, Store, StoreConfig};
use banter_domain::ports::MessageStore;
use banter_domain::{
    ClientId, Content, HistoryQuery, NewMessage, PageLimit, RoomName, Seq, Username,
};

const CHILD_ENV: &str = "BANTER_DURABILITY_CHILD_URL";
const ROOMS: usize = 4;
const WRITERS: usize = 16;
/// Kill the child once this many posts were acknowledged (or after the time limit).
const KILL_AFTER_ACKS: usize = 3000;
const TIME_LIMIT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn url_of(raw: &str) -> DatabaseUrl {
    DatabaseUrl::parse(raw).unwrap()
}

fn main() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        runtime().block_on(child(url));
        return;
    }
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("durable.db").display());
    rt.block_on(parent("sqlite", &sqlite));
    match rt.block_on(banter_testkit::TestDatabase::create()) {
        Some(db) => {
            rt.block_on(parent("postgres", &db.url));
            rt.block_on(db.drop_now());
        }
        None => eprintln!("durability: postgres case skipped"),
    }
}

/// Posts forever, printing `ACK <room> <seq> <client_id>` after each acknowledged post.
async fn child(url: String) {
    let store = Store::open(StoreConfig::new(url_of(&url))).await.unwrap();
    store.migrate().await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let room = format!("durable-{}", (writer + i) % ROOMS);
                let client_id = format!("w{writer}-{i}");
                let post = NewMessage {
                    room: RoomName::parse(&room).unwrap(),
                    username: Username::parse(&format!("writer{writer}")).unwrap(),
                    content: Content::parse(&format!("message {i} from {writer}")).unwrap(),
                    client_id: Some(ClientId::parse(&client_id).unwrap()),
                };
                let message = store.append(post).await.unwrap().into_message();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {} {} {}", room, message.seq, client_id).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn parent(backend: &str, url: &str) {
    // Migrate first so the child starts writing at once.
    let store = Store::open(StoreConfig::new(url_of(url))).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    drop(store);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut acks = Vec::new();
    while acks.len() < KILL_AFTER_ACKS && started.elapsed() < TIME_LIMIT {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            acks.push(line);
        }
    }
    // SIGKILL: no destructor, no flush, no graceful anything.
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    // Acknowledgements printed before the kill are still in the pipe.
    acks.extend(rx.try_iter());
    assert!(
        acks.len() >= 100,
        "{backend}: the child acknowledged only {} posts",
        acks.len()
    );

    let mut acked: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for line in &acks {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 4, "malformed line {line:?}");
        let seq: u64 = parts[2].parse().unwrap();
        let previous = acked
            .entry(parts[1].to_owned())
            .or_default()
            .insert(seq, parts[3].to_owned());
        assert!(
            previous.is_none(),
            "{backend}: seq {seq} acknowledged twice in {}",
            parts[1]
        );
    }

    let store = Store::open(StoreConfig::new(url_of(url))).await.unwrap();
    let mut stored_total = 0;
    for (room, acked_in_room) in &acked {
        let room_name = RoomName::parse(room).unwrap();
        let mut stored: BTreeMap<u64, String> = BTreeMap::new();
        let mut after = Seq::ZERO;
        loop {
            let page = store
                .history(
                    &room_name,
                    HistoryQuery::After {
                        after,
                        limit: PageLimit::history(200).unwrap(),
                    },
                )
                .await
                .unwrap();
            for m in &page.messages {
                stored.insert(
                    m.seq.get(),
                    m.client_id
                        .as_ref()
                        .map(|c| c.as_str().to_owned())
                        .unwrap_or_default(),
                );
                after = m.seq;
            }
            if !page.has_more {
                break;
            }
        }
        let expected: Vec<u64> = (1..=stored.len() as u64).collect();
        assert_eq!(
            stored.keys().copied().collect::<Vec<_>>(),
            expected,
            "{backend}: {room} is gapless"
        );
        for (seq, client_id) in acked_in_room {
            assert_eq!(
                stored.get(seq),
                Some(client_id),
                "{backend}: acknowledged {room}#{seq} survived"
            );
        }
        stored_total += stored.len();
    }
    store.close().await;
    println!(
        "durability {backend}: {} acknowledged before SIGKILL, {} stored (committed but unacknowledged: {}), all present and gapless",
        acks.len(),
        stored_total,
        stored_total - acks.len()
    );
}
