//! A fault campaign (Jepsen's shape, bounded): clients over three nodes (Postgres + Redis,
//! both of the test's own so that they can be restarted) post with client ids, resend on
//! failure and reconnect with `after`, while faults are injected at random — a node killed
//! (SIGKILL) and restarted, a node paused (SIGSTOP) past its heartbeat and resumed, Redis
//! frozen behind a proxy, one node cut off from Redis (its proxy frozen past the command
//! timeout), Redis restarted (losing every key), Postgres crashed and restarted, the nodes'
//! read replica killed and restarted, a client's TCP connection cut in the middle of a frame. (Delay and loss with `tc netem` between hosts
//! in network namespaces are not here: network namespaces work on these machines, but the
//! kernel has no `netem` queueing discipline.) Every frame each client saw is recorded; a checker then holds the
//! whole history and the final database to the contract's guarantees and prints a summary of
//! operations, faults and anomalies by kind. On an anomaly the history is saved as JSON for
//! replay and the test fails.
//!
//! A second campaign runs the same workload and checker on a Redis Cluster with a replica per
//! primary, killing the primary that serves a room so that its replica takes over.
//!
//! `BANTER_CAMPAIGN_SECONDS` (default 30, 20 on the cluster) sets the length of the faulty
//! phase and `BANTER_CAMPAIGN_SEED` replays a schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Database, TestServer, get_json};

const NODES: usize = 3;
const ROOMS: [&str; 3] = ["alpha", "beta", "gamma"];
const CLIENTS: usize = 6;
/// A post not acknowledged within this is resent (after a reconnect).
const ACK_WAIT: Duration = Duration::from_secs(4);
/// A message acknowledged this long before a connection closed must have reached it.
const COMPLETENESS_MARGIN: Duration = Duration::from_secs(5);

/// A small deterministic generator (xorshift64*): the schedule is replayable from its seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One connection's view: where it started and every message it was shown, in order.
#[derive(Debug, Clone)]
struct Session {
    client: usize,
    room: &'static str,
    node: usize,
    after: u64,
    shown: Vec<(u64, String)>,
    ended: String,
    ended_at: Instant,
}

/// What one client did and saw.
#[derive(Debug, Default)]
struct ClientHistory {
    sessions: Vec<Session>,
    /// client_id → (seq, content) as acknowledged (the echo or a `duplicate` frame).
    acked: BTreeMap<String, (u64, String, Instant)>,
    /// Acknowledgements whose content differs from what was sent.
    altered: Vec<String>,
    /// Posts sent again after a failure, by client_id.
    resends: BTreeMap<String, u32>,
    refused_connects: u32,
}

#[derive(Debug, Default)]
struct Faults {
    killed: u32,
    paused: u32,
    redis_frozen: u32,
    partitioned: u32,
    redis_restarted: u32,
    postgres_restarted: u32,
    replica_restarted: u32,
    cut_mid_frame: u32,
    primaries_failed_over: u32,
    log: Vec<String>,
}

/// Runs one client until `stop`: posts one message at a time with a client id, waits for
/// its acknowledgement, and on any failure reconnects (to the next node) with `after` and
/// resends the same client id.
async fn client_loop(
    client: usize,
    nodes: Arc<Vec<std::net::SocketAddr>>,
    stop: Arc<tokio::sync::Notify>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) -> ClientHistory {
    let room = ROOMS[client % ROOMS.len()];
    let username = format!("user{client}");
    let mut history = ClientHistory::default();
    let mut last_seen = 0u64;
    let mut posted = 0u32;
    // The post in flight: (client_id, content, sent on this connection).
    let mut pending: Option<(String, String, bool)> = None;
    let mut attempt = client;
    let stopped = || stopping.load(std::sync::atomic::Ordering::SeqCst);
    while !(stopped() && pending.is_none()) {
        let node = attempt % NODES;
        attempt += 1;
        let url = format!(
            "ws://{}/ws/chat/{room}/?username={username}&after={last_seen}",
            nodes[node]
        );
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await;
        let Ok(Ok((mut stream, _))) = connected else {
            history.refused_connects += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut session = Session {
            client,
            room,
            node,
            after: last_seen,
            shown: Vec::new(),
            ended: String::new(),
            ended_at: Instant::now(),
        };
        // A post not acknowledged on the last connection goes again, with its client id.
        if let Some((client_id, _, sent)) = &mut pending {
            if *sent {
                *history.resends.entry(client_id.clone()).or_default() += 1;
            }
            *sent = false;
        }
        let ended = loop {
            if stopped() && pending.is_none() {
                break "stopped".to_owned();
            }
            if pending.is_none() && !stopped() {
                posted += 1;
                pending = Some((
                    format!("c{client}-{posted}"),
                    format!("{username} #{posted}"),
                    false,
                ));
            }
            if let Some((client_id, content, sent)) = &mut pending
                && !*sent
            {
                let frame =
                    json!({"type": "chat_message", "message": content, "client_id": client_id});
                if stream
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    break "send failed".to_owned();
                }
                *sent = true;
            }
            let frame = tokio::select! {
                frame = tokio::time::timeout(ACK_WAIT, stream.next()) => frame,
                () = stop.notified() => continue,
            };
            let text = match frame {
                Err(_) => break "nothing within the ack wait".to_owned(),
                Ok(None) => break "closed".to_owned(),
                Ok(Some(Err(e))) => break format!("read failed: {e}"),
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    break format!("close {:?}", frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
            };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                break format!("not JSON: {text}");
            };
            let message = &frame["message"];
            let acknowledges = |pending: &Option<(String, String, bool)>| {
                pending.as_ref().is_some_and(|(client_id, _, _)| {
                    message["client_id"].as_str() == Some(client_id.as_str())
                        && message["username"].as_str() == Some(username.as_str())
                })
            };
            match frame["type"].as_str() {
                Some("chat_message") => {
                    let seq = message["seq"].as_u64().unwrap_or(0);
                    let content = message["content"].as_str().unwrap_or_default().to_owned();
                    session.shown.push((seq, content.clone()));
                    last_seen = last_seen.max(seq);
                    if acknowledges(&pending)
                        && let Some((client_id, sent, _)) = pending.take()
                    {
                        if sent != content {
                            history
                                .altered
                                .push(format!("{client_id}: sent {sent:?}, echoed {content:?}"));
                        }
                        history.acked.insert(client_id, (seq, sent, Instant::now()));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Some("duplicate") => {
                    if acknowledges(&pending)
                        && let Some((client_id, sent, _)) = pending.take()
                    {
                        let seq = message["seq"].as_u64().unwrap_or(0);
                        let content = message["content"].as_str().unwrap_or_default().to_owned();
                        if sent != content {
                            history
                                .altered
                                .push(format!("{client_id}: sent {sent:?}, original {content:?}"));
                        }
                        history.acked.insert(client_id, (seq, sent, Instant::now()));
                    }
                }
                // `unavailable`: not stored; the same client id goes again shortly.
                Some("error") if frame["code"] == "unavailable" => {
                    if let Some((_, _, sent)) = &mut pending {
                        *sent = false;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => {}
            }
        };
        session.ended = ended;
        session.ended_at = Instant::now();
        history.sessions.push(session);
    }
    history
}

impl Session {
    fn to_json(&self) -> Value {
        json!({"client": self.client, "room": self.room, "node": self.node, "after": self.after,
               "shown": self.shown, "ended": self.ended})
    }
}

impl ClientHistory {
    fn to_json(&self) -> Value {
        json!({"sessions": self.sessions.iter().map(Session::to_json).collect::<Vec<_>>(),
               "acked": self.acked.iter().map(|(id, (seq, content, _))| (id.clone(), (*seq, content.clone()))).collect::<BTreeMap<_, _>>(),
               "resends": self.resends,
               "refused_connects": self.refused_connects, "altered": self.altered})
    }
}

/// Opens a WebSocket through the raw socket, sends half of a post's frame and drops the
/// connection: the server must store nothing of it.
async fn cut_mid_frame(node: std::net::SocketAddr, marker: &str) {
    use tokio::io::AsyncBufReadExt;
    let Ok(stream) = tokio::net::TcpStream::connect(node).await else {
        return;
    };
    let mut stream = tokio::io::BufReader::new(stream);
    let handshake = format!(
        "GET /ws/chat/{}/?username=cutter HTTP/1.1\r\nHost: {node}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        ROOMS[0]
    );
    if stream
        .get_mut()
        .write_all(handshake.as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut line = String::new();
    while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
        if line == "\r\n" {
            break;
        }
        line.clear();
    }
    let payload =
        json!({"type": "chat_message", "message": marker, "client_id": marker}).to_string();
    let payload = payload.as_bytes();
    // A masked text frame, of which only the header and half the payload are sent.
    let mut frame = vec![0x81, 0x80 | 126];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&payload[..payload.len() / 2]);
    let _ = stream.get_mut().write_all(&frame).await;
    drop(stream);
}

/// Every message of `room` in the database, by seq, read with SQL (not through banter):
/// `seq → (content, username, client_id)`.
async fn stored(
    pair: &banter_testkit::PostgresPair,
    room: &str,
) -> BTreeMap<u64, (String, String, String)> {
    pair.stored_messages(room)
        .await
        .into_iter()
        .map(|(seq, username, content, client_id)| (seq, (content, username, client_id)))
        .collect()
}

/// The room a client id was posted in: ids are `c<client>-<n>` and client `c` posts in
/// `ROOMS[c % 3]`.
fn room_of(client_id: &str) -> &'static str {
    let client = client_id
        .get(1..)
        .and_then(|rest| rest.split('-').next())
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    ROOMS[client % ROOMS.len()]
}

/// The checker: every anomaly found, by kind.
fn check(
    histories: &[ClientHistory],
    store: &BTreeMap<&str, BTreeMap<u64, (String, String, String)>>,
    cut_markers: &[String],
) -> BTreeMap<&'static str, Vec<String>> {
    let mut anomalies: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut report =
        |kind: &'static str, what: String| anomalies.entry(kind).or_default().push(what);
    for (room, messages) in store {
        // Seqs in the store are 1..=n without gaps.
        for (i, seq) in messages.keys().enumerate() {
            if *seq != i as u64 + 1 {
                report(
                    "store gap",
                    format!("{room}: seq {seq} at position {}", i + 1),
                );
                break;
            }
        }
        // A client id is stored once per user and room.
        let mut ids = BTreeSet::new();
        for (seq, (_, username, client_id)) in messages {
            if !client_id.is_empty() && !ids.insert((username.clone(), client_id.clone())) {
                report(
                    "duplicate stored",
                    format!("{room}: {client_id} again at {seq}"),
                );
            }
        }
        for (seq, (content, _, _)) in messages {
            if cut_markers.iter().any(|m| m == content) {
                report("half frame stored", format!("{room}: {content} at {seq}"));
            }
        }
    }
    for history in histories {
        for altered in &history.altered {
            report("acknowledged with other content", altered.clone());
        }
        for (client_id, (seq, content, _)) in &history.acked {
            let room = room_of(client_id);
            match store.get(room).and_then(|m| m.get(seq)) {
                Some((stored, _, stored_id)) if stored == content && stored_id == client_id => {}
                other => report(
                    "acknowledged but not stored",
                    format!("{client_id} acked at {room}/{seq}, store has {other:?}"),
                ),
            }
        }
        // A connection open to the end saw everything acknowledged in its room well before
        // the end (a feed that silently stalled would otherwise pass as a reconnect-free run).
        for session in history.sessions.iter().filter(|s| s.ended == "stopped") {
            let seen = session
                .shown
                .iter()
                .map(|(seq, _)| *seq)
                .max()
                .unwrap_or(0)
                .max(session.after);
            for other in histories {
                for (client_id, (seq, _, at)) in &other.acked {
                    let room = room_of(client_id);
                    if room == session.room
                        && *at + COMPLETENESS_MARGIN <= session.ended_at
                        && *seq > seen
                    {
                        report(
                            "not delivered to an open connection",
                            format!(
                                "client {} on node {} in {room} never saw {client_id} at seq {seq}",
                                session.client, session.node
                            ),
                        );
                    }
                }
            }
        }
        for session in &history.sessions {
            let room = store.get(session.room);
            let mut expected = session.after + 1;
            for (seq, content) in &session.shown {
                if *seq != expected {
                    report(
                        if *seq < expected {
                            "duplicate or reordered"
                        } else {
                            "gap"
                        },
                        format!(
                            "client {} on node {} in {}: expected seq {expected}, got {seq}",
                            session.client, session.node, session.room
                        ),
                    );
                }
                expected = expected.max(seq + 1);
                match room.and_then(|m| m.get(seq)) {
                    Some((stored, _, _)) if stored == content => {}
                    other => report(
                        "shown but not stored as shown",
                        format!(
                            "{}/{seq}: shown {content:?}, store has {other:?}",
                            session.room
                        ),
                    ),
                }
            }
        }
    }
    anomalies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_workload_under_faults_keeps_every_promise() {
    let Some(pair) = tokio::task::spawn_blocking(banter_testkit::PostgresPair::start)
        .await
        .unwrap()
    else {
        return;
    };
    let pair = Arc::new(pair);
    let Some(mut redis) = banter_testkit::RedisServer::start().await else {
        return;
    };
    let database = Database {
        url: pair.primary_url(),
        dir: None,
    };
    let (seconds, seed) = settings(30);
    let mut dice = Dice(seed);
    // Each node reaches Redis through a proxy of its own, so Redis can hang for everyone
    // (all frozen) or one node can be cut off from it (a partition) while the others are not.
    let mut proxies = Vec::new();
    let mut brokers = Vec::new();
    for _ in 0..NODES {
        let proxy = banter_testkit::TcpProxy::start(&format!("127.0.0.1:{}", redis.port)).await;
        brokers.push(format!("redis://{}", proxy.addr));
        proxies.push(proxy);
    }
    // Reads go to the pair's replica when it is fresh enough; a fault kills it for a while.
    let replica_url = pair.replica_url();
    let args = |node: usize| {
        [
            "--broker",
            brokers[node].as_str(),
            "--rate-limit",
            "off",
            "--database-read-url",
            replica_url.as_str(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let mut fleet = Fleet::start(&database, (0..NODES).map(args).collect()).await;
    let addresses = Arc::clone(&fleet.addresses);

    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = start_clients(&addresses, &stop, &stopping);

    // The faults: each kind at least once, in a random order, at random moments.
    let faults = Arc::new(Mutex::new(Faults::default()));
    let mut schedule: Vec<u8> = vec![0, 1, 2, 3, 4, 5, 6, 7];
    while schedule.len() < (seconds / 5).max(8) as usize {
        schedule.push(dice.below(8) as u8);
    }
    shuffle(&mut schedule, &mut dice);
    let started = Instant::now();
    let slot = Duration::from_secs(seconds) / schedule.len() as u32;
    let mut cut_markers = Vec::new();
    for (i, kind) in schedule.iter().enumerate() {
        let node = dice.below(NODES as u64) as usize;
        tokio::time::sleep(Duration::from_millis(300 + dice.below(700))).await;
        let at = started.elapsed().as_secs_f32();
        match kind {
            0 => {
                fleet.kill_and_restart(node, &mut dice).await;
                record(
                    &faults,
                    at,
                    |f| &mut f.killed,
                    format!("node {node} killed and restarted"),
                );
            }
            1 => {
                fleet.pause(node, &mut dice).await;
                record(
                    &faults,
                    at,
                    |f| &mut f.paused,
                    format!("node {node} paused past a heartbeat"),
                );
            }
            2 => {
                proxies.iter().for_each(banter_testkit::TcpProxy::freeze);
                tokio::time::sleep(Duration::from_millis(1_000 + dice.below(2000))).await;
                proxies.iter().for_each(banter_testkit::TcpProxy::thaw);
                record(&faults, at, |f| &mut f.redis_frozen, "Redis frozen");
            }
            4 => {
                redis.restart().await;
                record(
                    &faults,
                    at,
                    |f| &mut f.redis_restarted,
                    "Redis restarted, every key lost",
                );
            }
            5 => {
                let pair = Arc::clone(&pair);
                tokio::task::spawn_blocking(move || pair.restart_primary())
                    .await
                    .unwrap();
                record(
                    &faults,
                    at,
                    |f| &mut f.postgres_restarted,
                    "Postgres crashed and restarted",
                );
            }
            6 => {
                // Longer than --redis-timeout (3 s): the node counts its link as lost.
                proxies[node].freeze();
                tokio::time::sleep(Duration::from_millis(3_500 + dice.below(3000))).await;
                proxies[node].thaw();
                record(
                    &faults,
                    at,
                    |f| &mut f.partitioned,
                    format!("node {node} cut off from Redis"),
                );
            }
            7 => {
                let pair = Arc::clone(&pair);
                let pause = Duration::from_millis(1_000 + dice.below(2000));
                tokio::task::spawn_blocking(move || {
                    pair.kill_replica();
                    std::thread::sleep(pause);
                    pair.restart_replica();
                })
                .await
                .unwrap();
                record(
                    &faults,
                    at,
                    |f| &mut f.replica_restarted,
                    "the read replica killed and restarted",
                );
            }
            _ => {
                let marker = format!("cut-{i}");
                cut_mid_frame(addresses[node], &marker).await;
                cut_markers.push(marker);
                record(
                    &faults,
                    at,
                    |f| &mut f.cut_mid_frame,
                    format!("a client's TCP cut mid-frame on node {node}"),
                );
            }
        }
        let next = slot * (i as u32 + 1);
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let reader = fleet.reader();
    let run = Run {
        seed,
        seconds,
        clients,
        stop,
        stopping,
        reader,
        pair: &pair,
        cut_markers,
    };
    let posts = finish(run, &faults).await;
    let faults = faults.lock().unwrap();
    assert!(posts > 0, "the workload posted nothing");
    assert!(
        faults.killed > 0
            && faults.paused > 0
            && faults.redis_frozen > 0
            && faults.partitioned > 0
            && faults.redis_restarted > 0
            && faults.postgres_restarted > 0
            && faults.replica_restarted > 0
            && faults.cut_mid_frame > 0,
        "every kind of fault was injected"
    );
}

/// The campaign's banter nodes, each restarted on its own address with its own flags.
struct Fleet<'a> {
    database: &'a Database,
    args: Vec<Vec<String>>,
    servers: Vec<Option<TestServer>>,
    addresses: Arc<Vec<std::net::SocketAddr>>,
}

impl<'a> Fleet<'a> {
    /// Starts one node per entry of `args`.
    async fn start(database: &'a Database, args: Vec<Vec<String>>) -> Fleet<'a> {
        let mut servers = Vec::new();
        for flags in &args {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            servers.push(Some(TestServer::start_on(database, &flags, &[]).await));
        }
        let addresses = Arc::new(
            servers
                .iter()
                .map(|s| s.as_ref().map(|s| s.addr).expect("started"))
                .collect(),
        );
        Fleet {
            database,
            args,
            servers,
            addresses,
        }
    }

    fn server(&self, node: usize) -> &TestServer {
        self.servers[node].as_ref().expect("running")
    }

    /// The node that answers the checker's reads.
    fn reader(&self) -> &TestServer {
        self.server(0)
    }

    /// SIGKILL, and a new process on the same address 0.5–1.5 s later.
    async fn kill_and_restart(&mut self, node: usize, dice: &mut Dice) {
        self.servers[node].take().expect("running").kill();
        tokio::time::sleep(Duration::from_millis(500 + dice.below(1000))).await;
        let flags: Vec<&str> = self.args[node].iter().map(String::as_str).collect();
        let address = self.addresses[node].to_string();
        self.servers[node] =
            Some(TestServer::start_listening(self.database, &address, &flags, &[]).await);
    }

    /// SIGSTOP for 5.5–7 s, longer than a heartbeat, then SIGCONT.
    async fn pause(&self, node: usize, dice: &mut Dice) {
        self.server(node).signal("STOP");
        tokio::time::sleep(Duration::from_millis(5_500 + dice.below(1500))).await;
        self.server(node).signal("CONT");
    }
}

/// Shuffles a fault schedule (Fisher–Yates, from the seed).
fn shuffle(schedule: &mut [u8], dice: &mut Dice) {
    for i in (1..schedule.len()).rev() {
        let j = dice.below(i as u64 + 1) as usize;
        schedule.swap(i, j);
    }
}

/// Counts a fault of one kind and logs it with its moment.
fn record(
    faults: &Mutex<Faults>,
    at: f32,
    kind: impl FnOnce(&mut Faults) -> &mut u32,
    what: impl std::fmt::Display,
) {
    let mut f = faults.lock().unwrap();
    *kind(&mut f) += 1;
    f.log.push(format!("{at:.1}s: {what}"));
}

/// The faulty phase's length (`BANTER_CAMPAIGN_SECONDS`, else `default_seconds`) and the seed
/// (`BANTER_CAMPAIGN_SEED`, else from the clock).
fn settings(default_seconds: u64) -> (u64, u64) {
    let seconds: u64 = std::env::var("BANTER_CAMPAIGN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seconds);
    let seed: u64 = std::env::var("BANTER_CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    (seconds, seed)
}

/// Starts the clients, each on its own task.
fn start_clients(
    addresses: &Arc<Vec<std::net::SocketAddr>>,
    stop: &Arc<tokio::sync::Notify>,
    stopping: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<ClientHistory>> {
    (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client_loop(
                c,
                Arc::clone(addresses),
                Arc::clone(stop),
                Arc::clone(stopping),
            ))
        })
        .collect()
}

/// The same workload on a Redis Cluster with a replica per primary (`redis-cluster://`): the
/// primary serving a room is killed and its replica takes over while clients post (twice when
/// the rooms span two shards), besides a node killed and restarted, a node paused past its
/// heartbeat and a client cut mid-frame. The checker holds the histories to the same promises:
/// no client is shown a gap, whatever the failover cost its node's subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_primary_failing_over_under_the_workload_keeps_every_promise() {
    let Some(pair) = tokio::task::spawn_blocking(banter_testkit::PostgresPair::start)
        .await
        .unwrap()
    else {
        return;
    };
    let Some(redis) = tokio::task::spawn_blocking(|| banter_testkit::RedisCluster::start(3, 1))
        .await
        .unwrap()
    else {
        return;
    };
    let broker = redis.url();
    let redis = Arc::new(Mutex::new(redis));
    let database = Database {
        url: pair.primary_url(),
        dir: None,
    };
    let (seconds, seed) = settings(20);
    let mut dice = Dice(seed);
    let args: Vec<String> = ["--broker", &broker, "--rate-limit", "off"]
        .map(str::to_owned)
        .to_vec();
    let mut fleet = Fleet::start(&database, vec![args; NODES]).await;
    let addresses = Arc::clone(&fleet.addresses);
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = start_clients(&addresses, &stop, &stopping);

    let faults = Arc::new(Mutex::new(Faults::default()));
    // 0 failover, 1 node killed, 2 node paused, 3 cut mid-frame; two failovers.
    let mut schedule: Vec<u8> = vec![0, 0, 1, 2, 3];
    shuffle(&mut schedule, &mut dice);
    // Shards whose replica was promoted have none left to fail over to.
    let mut promoted = BTreeSet::new();
    let started = Instant::now();
    let slot = Duration::from_secs(seconds) / schedule.len() as u32;
    let mut cut_markers = Vec::new();
    for (i, kind) in schedule.iter().enumerate() {
        let node = dice.below(NODES as u64) as usize;
        tokio::time::sleep(Duration::from_millis(300 + dice.below(700))).await;
        let at = started.elapsed().as_secs_f32();
        match kind {
            0 => {
                let redis = Arc::clone(&redis);
                let first = dice.below(ROOMS.len() as u64) as usize;
                let promoted_now = promoted.clone();
                let failed_over = tokio::task::spawn_blocking(move || {
                    let mut redis = redis.lock().unwrap();
                    let room = (0..ROOMS.len())
                        .map(|k| ROOMS[(first + k) % ROOMS.len()])
                        .find(|room| {
                            !promoted_now
                                .contains(&redis.master_of(&format!("banter:{{{room}}}:events")))
                        })?;
                    let key = format!("banter:{{{room}}}:events");
                    let killed = redis.kill_master_of(&key);
                    Some((room, killed, redis.master_of(&key)))
                })
                .await
                .unwrap();
                let mut f = faults.lock().unwrap();
                match failed_over {
                    Some((room, killed, now)) => {
                        promoted.insert(now);
                        f.primaries_failed_over += 1;
                        f.log.push(format!(
                            "{at:.1}s: the Redis primary of {room} (port {killed}) killed; port {now} took over"
                        ));
                    }
                    None => f.log.push(format!(
                        "{at:.1}s: no shard with a replica left to fail over"
                    )),
                }
            }
            1 => {
                fleet.kill_and_restart(node, &mut dice).await;
                record(
                    &faults,
                    at,
                    |f| &mut f.killed,
                    format!("node {node} killed and restarted"),
                );
            }
            2 => {
                fleet.pause(node, &mut dice).await;
                record(
                    &faults,
                    at,
                    |f| &mut f.paused,
                    format!("node {node} paused past a heartbeat"),
                );
            }
            _ => {
                let marker = format!("cut-{i}");
                cut_mid_frame(addresses[node], &marker).await;
                cut_markers.push(marker);
                record(
                    &faults,
                    at,
                    |f| &mut f.cut_mid_frame,
                    format!("a client's TCP cut mid-frame on node {node}"),
                );
            }
        }
        let next = slot * (i as u32 + 1);
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let reader = fleet.reader();
    let run = Run {
        seed,
        seconds,
        clients,
        stop,
        stopping,
        reader,
        pair: &pair,
        cut_markers,
    };
    let posts = finish(run, &faults).await;
    let faults = faults.lock().unwrap();
    assert!(posts > 0, "the workload posted nothing");
    assert!(
        faults.primaries_failed_over > 0
            && faults.killed > 0
            && faults.paused > 0
            && faults.cut_mid_frame > 0,
        "every kind of fault was injected"
    );
}

/// What a campaign run hands its checker.
struct Run<'a> {
    seed: u64,
    seconds: u64,
    clients: Vec<tokio::task::JoinHandle<ClientHistory>>,
    stop: Arc<tokio::sync::Notify>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    reader: &'a TestServer,
    pair: &'a banter_testkit::PostgresPair,
    cut_markers: Vec<String>,
}

/// Lets the clients finish their last posts and stops them, checks every history against the
/// store, waits for presence to heal, prints the summary and the fault log, and fails on any
/// anomaly (saving the history for replay). Returns how many posts were acknowledged.
async fn finish(run: Run<'_>, faults: &Mutex<Faults>) -> usize {
    let Run {
        seed,
        seconds,
        clients,
        stop,
        stopping,
        reader,
        pair,
        cut_markers,
    } = run;
    // Heal, let the clients finish their last posts, and stop them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    stop.notify_waiters();
    let mut histories = Vec::new();
    for client in clients {
        match tokio::time::timeout(Duration::from_secs(60), client).await {
            Ok(Ok(history)) => histories.push(history),
            other => panic!("a client did not finish: {other:?}"),
        }
    }

    let mut store = BTreeMap::new();
    for room in ROOMS {
        store.insert(room, stored(pair, room).await);
    }
    let anomalies = check(&histories, &store, &cut_markers);

    // Presence heals: nobody is left online once every client has gone (a killed node's
    // users are swept within 30 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut presence_left = Vec::new();
    loop {
        presence_left.clear();
        for room in ROOMS {
            let presence = get_json(reader, &format!("/api/rooms/{room}/presence")).await;
            if presence["online_count"] != 0 {
                presence_left.push(format!("{room}: {presence}"));
            }
        }
        if presence_left.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let faults = faults.lock().unwrap();
    let posts: usize = histories.iter().map(|h| h.acked.len()).sum();
    let resends: u32 = histories.iter().flat_map(|h| h.resends.values()).sum();
    let sessions: usize = histories.iter().map(|h| h.sessions.len()).sum();
    let shown: usize = histories
        .iter()
        .flat_map(|h| &h.sessions)
        .map(|s| s.shown.len())
        .sum();
    let stored_total: usize = store.values().map(BTreeMap::len).sum();
    eprintln!(
        "campaign seed {seed}, {seconds} s: {posts} posts acknowledged ({resends} resends), \
         {stored_total} stored, {shown} deliveries over {sessions} connections; faults: \
         {} kills, {} pauses, {} Redis freezes, {} partitions from Redis, {} Redis restarts, \
         {} Postgres restarts, {} replica restarts, {} cuts mid-frame, {} Redis Cluster \
         primaries failed over; anomalies: {}",
        faults.killed,
        faults.paused,
        faults.redis_frozen,
        faults.partitioned,
        faults.redis_restarted,
        faults.postgres_restarted,
        faults.replica_restarted,
        faults.cut_mid_frame,
        faults.primaries_failed_over,
        if anomalies.is_empty() && presence_left.is_empty() {
            "none".to_owned()
        } else {
            anomalies
                .iter()
                .map(|(kind, list)| format!("{kind} × {}", list.len()))
                .chain((!presence_left.is_empty()).then(|| "presence not healed".to_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for line in &faults.log {
        eprintln!("  {line}");
    }
    if !anomalies.is_empty() || !presence_left.is_empty() {
        let path = std::env::temp_dir().join(format!("banter-campaign-{seed}.json"));
        let saved = json!({
            "seed": seed,
            "faults": faults.log,
            "clients": histories.iter().map(ClientHistory::to_json).collect::<Vec<_>>(),
            "anomalies": anomalies,
            "presence_left": presence_left,
        });
        let _ = std::fs::write(&path, serde_json::to_vec_pretty(&saved).unwrap_or_default());
        panic!(
            "the campaign found anomalies (history saved to {}): {anomalies:#?} {presence_left:?}",
            path.display()
        );
    }
    posts
}
