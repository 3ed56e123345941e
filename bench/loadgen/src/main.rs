//! The load generator of the side-by-side benchmark (`bench/run`).
//!
//! It speaks the protocol subset every peer serves: connect
//! `ws://ADDR/ws/chat/{room}/?username=uN&history=0`, wait for the first frame (the welcome),
//! post `{"type":"chat_message","message":TEXT}` and receive
//! `{"type":"chat_message","message":{…,"seq":N,…,"content":TEXT,…}}` for every message of the
//! room. TEXT starts with `t=<sender>:<counter>:<nanos since the load generator started> `
//! followed by ordinary chat text, so every receiver measures post → delivery latency.
//!
//! Commands (every one prints JSON lines on stdout and a human line per run on stderr):
//!
//! - `run --shape fanout|write-heavy --rate POSTS_PER_S --seconds S`: one paced run.
//! - `max --shape … --start R --cap R --seconds S --steps N`: the highest offered rate with no
//!   loss (every post reaches every connection of its room within the run plus `--grace`) and
//!   p99 ≤ `--p99-ms` (50): doubles from `--start` until a probe fails (or `--cap`), then
//!   bisects `--steps` times. Each probe uses fresh connections and fresh rooms.
//! - `idle --connections N`: holds N connections (in child processes of at most
//!   `--per-process` connections each, so no process nears the 20,000-fd limit), ramped in
//!   batches of `--batch` concurrent handshakes, and reports the server's RSS growth per
//!   connection (`/proc/PID/status` VmRSS).
//!
//! - `probe --addrs A,B,… --members-per-node N --messages M`: one room with N members on each
//!   of several nodes (a cluster); one member posts M messages; every member must receive every
//!   one. Reports delivery latency (`bench/scale` uses it under 100,000 idle connections).
//!
//! - `slow --count N --rate R --size BYTES --seconds S`: N clients that never read, one that
//!   does, in a room with R posts/s; reports how each slow client was closed (1013 expected).
//!
//! Common options: `--addr 127.0.0.1:PORT`, `--pid PID` (the server: CPU time from
//! `/proc/PID/stat`, RSS), `--server NAME` (a label), `--sources 127.0.0.2-127.0.0.9` (local
//! addresses the connections are spread over, so ephemeral ports never run out).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool fails loudly

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A connection's socket; with `--deflate` it inflates permessage-deflate frames under
/// tungstenite, else it passes bytes through.
type Ws = WebSocketStream<inflate::Inflating<TcpStream>>;

mod inflate;

/// Typical chat lines (no quotes or backslashes: they go into JSON as they are).
const PHRASES: &[&str] = &[
    "sounds good, see you at the standup tomorrow",
    "can someone review my pull request before lunch? it is a small one",
    "the deploy finished, dashboards look normal so far",
    "I will be ten minutes late, start without me",
    "does anyone know why the staging database is read only again today",
    "thanks! that fixed it, the tests are green now",
    "let us move the retro to Thursday afternoon if that works for everyone",
    "lunch at the usual place at noon?",
    "I pushed a fix for the flaky login test, please rebase",
    "who is on call this weekend? I need to hand over the pager",
    "great work on the release everyone, the customers noticed",
    "reminder: the office is closed on Monday for the holiday",
];

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    origin().elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------------------------
// Arguments

struct Args {
    values: HashMap<String, String>,
}

impl Args {
    fn parse(argv: &[String]) -> Args {
        let mut values = HashMap::new();
        let mut i = 0;
        while i < argv.len() {
            let key = argv[i]
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("unexpected argument {:?}", argv[i]));
            match argv.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    values.insert(key.to_owned(), v.clone());
                    i += 2;
                }
                _ => {
                    values.insert(key.to_owned(), "true".to_owned());
                    i += 1;
                }
            }
        }
        Args { values }
    }

    fn get<T: FromStr>(&self, key: &str, default: T) -> T {
        match self.values.get(key) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("--{key}: cannot parse {v:?}")),
        }
    }

    fn string(&self, key: &str, default: &str) -> String {
        self.values
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }
}

/// `127.0.0.2-127.0.0.9` or `127.0.0.1,127.0.0.3`: loopback addresses only.
fn parse_sources(spec: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
        for n in u32::from(a)..=u32::from(b) {
            out.push(Ipv4Addr::from(n));
        }
    }
    assert!(!out.is_empty(), "--sources names no address");
    for a in &out {
        assert!(a.is_loopback(), "--sources: {a} is not in 127.0.0.0/8");
    }
    out
}

struct Target {
    addr: SocketAddr,
    sources: Vec<Ipv4Addr>,
    config: WebSocketConfig,
    connect_timeout: Duration,
    /// Offer permessage-deflate and inflate what the server compresses.
    deflate: bool,
    /// A small socket receive buffer (`--recv-buffer BYTES`), for clients meant to lag.
    recv_buffer: Option<u32>,
}

impl Target {
    fn from_args(args: &Args) -> Target {
        let addr: SocketAddr = args.get("addr", "127.0.0.1:8080".parse().unwrap());
        assert!(
            addr.ip().is_loopback(),
            "--addr must be a loopback address (127.0.0.0/8)"
        );
        Target {
            addr,
            sources: parse_sources(&args.string("sources", "127.0.0.2-127.0.0.9")),
            // tungstenite zero-fills its whole read buffer on every read: keep it small.
            config: WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0)
                .max_message_size(Some(1 << 20))
                .max_frame_size(Some(1 << 20)),
            connect_timeout: Duration::from_secs_f64(args.get("connect-timeout", 30.0)),
            deflate: args.get("deflate", false),
            recv_buffer: Some(args.get::<u32>("recv-buffer", 0)).filter(|b| *b > 0),
        }
    }

    /// Opens one WebSocket and waits for the welcome.
    async fn connect(&self, index: usize, room: &str, user: &str) -> Result<Ws, String> {
        let source = self.sources[index % self.sources.len()];
        let attempt = async {
            let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(source.into(), 0))
                .map_err(|e| format!("bind {source}: {e}"))?;
            if let Some(bytes) = self.recv_buffer {
                socket
                    .set_recv_buffer_size(bytes)
                    .map_err(|e| format!("recv buffer: {e}"))?;
            }
            let tcp = socket
                .connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tcp.set_nodelay(true).ok();
            let url = format!(
                "ws://{}/ws/chat/{room}/?username={user}&history=0",
                self.addr
            );
            let mut request = url
                .into_client_request()
                .map_err(|e| format!("request: {e}"))?;
            if self.deflate {
                request.headers_mut().insert(
                    "Sec-WebSocket-Extensions",
                    inflate::OFFER.parse().expect("a valid header value"),
                );
            }
            let stream = inflate::Inflating::new(tcp, self.deflate);
            let (mut ws, response) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(self.config))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            let negotiated = response
                .headers()
                .get("Sec-WebSocket-Extensions")
                .is_some_and(|v| v.to_str().unwrap_or("").contains("permessage-deflate"));
            if self.deflate && !negotiated {
                return Err("--deflate: the server did not accept permessage-deflate".to_owned());
            }
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) if text.contains("welcome") => return Ok(ws),
                    Some(Ok(Message::Text(text))) => {
                        return Err(format!("first frame is not a welcome: {text:.200}"));
                    }
                    Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("before welcome: {e}")),
                    None => return Err("closed before the welcome".to_owned()),
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err("no welcome within the connect timeout".to_owned()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server process, seen through /proc

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// utime + stime of a process (all its threads), in microseconds.
fn cpu_us(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks())
}

fn rss_kib(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Waits (at most `limit`) until the server uses under 5 % of a core, so a probe does not
/// start while the server is still working off the previous one.
async fn wait_idle(pid: u32, limit: Duration) -> bool {
    let Some(mut before) = cpu_us(pid) else {
        return true;
    };
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(now) = cpu_us(pid) else { return false };
        if now.saturating_sub(before) < 12_500 {
            return true;
        }
        before = now;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: 64 exact buckets below 64 µs, then 64 sub-buckets per power of two
// (±0.8 %), shared by every reader task.

const BUCKETS: usize = 64 + 58 * 64;

struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < 64 {
            return us as usize;
        }
        let e = 63 - us.leading_zeros() as usize; // ≥ 6
        let sub = ((us >> (e - 6)) & 63) as usize;
        64 + (e - 6) * 64 + sub
    }

    fn midpoint(index: usize) -> f64 {
        if index < 64 {
            return index as f64;
        }
        let e = (index - 64) / 64 + 6;
        let sub = ((index - 64) % 64) as u64;
        let width = 1u64 << (e - 6);
        ((64 + sub) << (e - 6)) as f64 + width as f64 / 2.0
    }

    fn record(&self, us: u64) {
        self.buckets[Self::index(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Percentile in milliseconds, `None` without samples.
    fn percentile_ms(&self, p: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let max = self.max_us.load(Ordering::Relaxed) as f64;
                return Some(Self::midpoint(i).min(max) / 1000.0);
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// One paced run

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    rooms: usize,
    clients: usize,
    senders: usize,
}

impl Shape {
    fn from_args(args: &Args) -> Shape {
        let name = args.string("shape", "fanout");
        let mut shape = match name.as_str() {
            "fanout" => Shape {
                name: "fanout",
                rooms: 10,
                clients: 100,
                senders: 2,
            },
            "write-heavy" => Shape {
                name: "write-heavy",
                rooms: 100,
                clients: 10,
                senders: 10,
            },
            other => panic!("--shape: fanout or write-heavy, not {other:?}"),
        };
        shape.rooms = args.get("rooms", shape.rooms);
        shape.clients = args.get("clients", shape.clients);
        shape.senders = args.get("senders", shape.senders).min(shape.clients);
        assert!(shape.rooms > 0 && shape.senders > 0, "empty shape");
        shape
    }
}

struct Settings {
    server: String,
    pid: u32,
    seconds: f64,
    grace: f64,
    p99_limit_ms: f64,
    idle_wait: Duration,
}

impl Settings {
    fn from_args(args: &Args) -> Settings {
        Settings {
            server: args.string("server", "server"),
            pid: args.get("pid", 0),
            seconds: args.get("seconds", 5.0),
            grace: args.get("grace", 2.0),
            p99_limit_ms: args.get("p99-ms", 50.0),
            idle_wait: Duration::from_secs_f64(args.get("idle-wait", 15.0)),
        }
    }
}

/// A run's room names must be new: rooms keep their messages between runs.
fn run_tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    format!(
        "b{:x}",
        (t ^ (u64::from(std::process::id()) << 40)) & 0xff_ffff_ffff
    )
}

fn loadgen_cpu_us() -> u64 {
    cpu_us(std::process::id()).unwrap_or(0)
}

/// Finds the send time and the seq in a `chat_message` frame of ours.
fn parse_delivery(frame: &str) -> Option<(u64, Option<u64>)> {
    let at = frame.find("\"content\":")?;
    let rest = frame[at + 10..].trim_start().strip_prefix("\"t=")?;
    let token = &rest[..rest.find(' ')?];
    let sent_ns: u64 = token.rsplit(':').next()?.parse().ok()?;
    let seq = frame.find("\"seq\":").and_then(|at| {
        let digits = frame[at + 6..].trim_start();
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        digits[..end].parse().ok()
    });
    Some((sent_ns, seq))
}

#[derive(Default)]
struct ConnStats {
    received: AtomicU64,
    out_of_order: AtomicU64,
    closed: AtomicU64,
}

struct Shared {
    histogram: Histogram,
    received: AtomicU64,
    expected: AtomicU64,
    last_delivery_ns: AtomicU64,
}

async fn probe(
    target: &Arc<Target>,
    shape: Shape,
    rate: f64,
    settings: &Settings,
    scenario: &str,
    tag: &str,
) -> Value {
    let total = shape.rooms * shape.clients;
    let shared = Arc::new(Shared {
        histogram: Histogram::new(),
        received: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
    });

    // Connect every client, at most 256 handshakes at a time (somaxconn is 4096).
    let connect_started = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let mut pending = Vec::with_capacity(total);
    for i in 0..total {
        let (target, gate) = (Arc::clone(target), Arc::clone(&gate));
        let room = format!("{tag}-r{}", i / shape.clients);
        let user = format!("u{}", i % shape.clients);
        pending.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            target.connect(i, &room, &user).await
        }));
    }
    let mut sockets = Vec::with_capacity(total);
    let mut connect_errors = 0u64;
    let mut first_error = None;
    for p in pending {
        match p.await.unwrap() {
            Ok(ws) => sockets.push(Some(ws)),
            Err(e) => {
                connect_errors += 1;
                first_error.get_or_insert(e);
                sockets.push(None);
            }
        }
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();

    let rooms_sent: Arc<Vec<AtomicU64>> =
        Arc::new((0..shape.rooms).map(|_| AtomicU64::new(0)).collect());
    let room_members: Vec<u64> = (0..shape.rooms)
        .map(|r| {
            sockets[r * shape.clients..(r + 1) * shape.clients]
                .iter()
                .filter(|s| s.is_some())
                .count() as u64
        })
        .collect();
    let room_members = Arc::new(room_members);

    let mut readers = Vec::new();
    let mut stats = Vec::new();
    let mut sender_sinks = Vec::new();
    let mut idle_sinks = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let Some(ws) = socket else { continue };
        let (sink, mut stream) = ws.split();
        let stat = Arc::new(ConnStats::default());
        stats.push((i / shape.clients, Arc::clone(&stat)));
        let shared = Arc::clone(&shared);
        readers.push(tokio::spawn(async move {
            let mut last_seq = 0u64;
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        let Some((sent_ns, seq)) = parse_delivery(&text) else {
                            continue;
                        };
                        let now = now_ns();
                        shared.histogram.record(now.saturating_sub(sent_ns) / 1000);
                        shared.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        stat.received.fetch_add(1, Ordering::Relaxed);
                        if let Some(seq) = seq {
                            if seq <= last_seq {
                                stat.out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                            last_seq = seq;
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            stat.closed.store(1, Ordering::Relaxed);
        }));
        if i % shape.clients < shape.senders {
            sender_sinks.push((i / shape.clients, sink));
        } else {
            idle_sinks.push(sink);
        }
    }

    // Let the connection storm (presence, welcomes) settle before measuring.
    wait_idle(settings.pid, settings.idle_wait.min(Duration::from_secs(5))).await;

    let posts = ((rate * settings.seconds).round() as u64).max(1);
    let interval_ns = 1e9 / rate;
    let senders = sender_sinks.len() as u64;
    let cpu_before = cpu_us(settings.pid);
    let loadgen_before = loadgen_cpu_us();
    let started = Instant::now() + Duration::from_millis(20);
    let mut sender_tasks = Vec::new();
    let send_limit = Duration::from_secs_f64(settings.seconds + settings.grace + 10.0);
    for (s, (room, mut sink)) in sender_sinks.into_iter().enumerate() {
        let (shared, rooms_sent, room_members) = (
            Arc::clone(&shared),
            Arc::clone(&rooms_sent),
            Arc::clone(&room_members),
        );
        sender_tasks.push(tokio::spawn(async move {
            let work = async {
                let mut j = s as u64;
                let mut errors = 0u64;
                while j < posts {
                    let at = started + Duration::from_nanos((j as f64 * interval_ns) as u64);
                    tokio::time::sleep_until(at.into()).await;
                    let frame = format!(
                        "{{\"type\":\"chat_message\",\"message\":\"t={s}:{j}:{} {}\"}}",
                        now_ns(),
                        PHRASES[j as usize % PHRASES.len()]
                    );
                    if sink.send(Message::Text(frame.into())).await.is_err() {
                        errors += 1;
                        break;
                    }
                    rooms_sent[room].fetch_add(1, Ordering::Relaxed);
                    shared
                        .expected
                        .fetch_add(room_members[room], Ordering::Relaxed);
                    j += senders;
                }
                errors
            };
            let errors = tokio::time::timeout(send_limit, work).await.unwrap_or(1);
            (sink, errors)
        }));
    }
    let mut send_errors = 0;
    let mut kept_sinks = Vec::new();
    for task in sender_tasks {
        let (sink, errors) = task.await.unwrap();
        send_errors += errors;
        kept_sinks.push(sink);
    }
    let send_seconds = started.elapsed().as_secs_f64().max(1e-3);
    let grace_deadline = Instant::now() + Duration::from_secs_f64(settings.grace);
    let expected = shared.expected.load(Ordering::Relaxed);
    while shared.received.load(Ordering::Relaxed) < expected && Instant::now() < grace_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu_after = cpu_us(settings.pid);
    let loadgen_after = loadgen_cpu_us();
    let wall = started.elapsed().as_secs_f64();
    let rss = rss_kib(settings.pid);
    for reader in &readers {
        reader.abort();
    }
    drop(kept_sinks);
    drop(idle_sinks);

    let received = shared.received.load(Ordering::Relaxed);
    let (mut lost, mut excess, mut out_of_order, mut closed_early) = (0u64, 0u64, 0u64, 0u64);
    for (room, stat) in &stats {
        let sent = rooms_sent[*room].load(Ordering::Relaxed);
        let got = stat.received.load(Ordering::Relaxed);
        lost += sent.saturating_sub(got);
        excess += got.saturating_sub(sent);
        out_of_order += stat.out_of_order.load(Ordering::Relaxed);
        closed_early += stat.closed.load(Ordering::Relaxed);
    }
    // A client that never connected misses every post of its room.
    for (r, sent) in rooms_sent.iter().enumerate() {
        let missing = shape.clients as u64 - room_members[r];
        lost += missing * sent.load(Ordering::Relaxed);
    }
    let posts_sent: u64 = rooms_sent.iter().map(|r| r.load(Ordering::Relaxed)).sum();
    let last_delivery = shared.last_delivery_ns.load(Ordering::Relaxed);
    let started_ns = started.duration_since(origin()).as_nanos() as u64;
    let delivery_seconds =
        (last_delivery.saturating_sub(started_ns) as f64 / 1e9).max(send_seconds);
    let p50 = shared.histogram.percentile_ms(0.50);
    let p99 = shared.histogram.percentile_ms(0.99);
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let pass = connect_errors == 0
        && send_errors == 0
        && lost == 0
        && posts_sent == posts
        && p99.is_some_and(|p| p <= settings.p99_limit_ms);
    let round = |x: f64, digits: i32| {
        let f = 10f64.powi(digits);
        (x * f).round() / f
    };
    json!({
        "kind": "run",
        "server": settings.server,
        "scenario": scenario,
        "shape": shape.name,
        "rooms": shape.rooms,
        "clients_per_room": shape.clients,
        "senders_per_room": shape.senders,
        "connections": total,
        "connect_seconds": round(connect_seconds, 2),
        "connect_errors": connect_errors,
        "first_error": first_error,
        "rate_posts_per_s": rate,
        "seconds": settings.seconds,
        "posts_planned": posts,
        "posts_sent": posts_sent,
        "send_errors": send_errors,
        "expected_deliveries": expected,
        "delivered": received,
        "lost": lost,
        "excess": excess,
        "out_of_order": out_of_order,
        "closed_early": closed_early,
        // The posts were spread over the nominal window (the last one leaves just before its end).
        "offered_deliveries_per_s": round(expected as f64 / settings.seconds.max(send_seconds), 0),
        "deliveries_per_s": round(received as f64 / delivery_seconds, 0),
        "p50_ms": p50.map(|v| round(v, 2)),
        "p90_ms": shared.histogram.percentile_ms(0.90).map(|v| round(v, 2)),
        "p99_ms": p99.map(|v| round(v, 2)),
        "max_ms": round(shared.histogram.max_us.load(Ordering::Relaxed) as f64 / 1000.0, 2),
        "server_cpu_s": cpu.map(|c| round(c as f64 / 1e6, 3)),
        "server_cpu_share": cpu.map(|c| round(c as f64 / 1e6 / wall, 3)),
        "server_cpu_us_per_delivery": cpu.filter(|_| received > 0).map(|c| round(c as f64 / received as f64, 3)),
        "server_rss_kib": rss,
        "loadgen_cpu_s": round(loadgen_after.saturating_sub(loadgen_before) as f64 / 1e6, 3),
        "p99_limit_ms": settings.p99_limit_ms,
        "pass": pass,
    })
}

fn human(line: &Value) -> String {
    let f = |k: &str| match &line[k] {
        Value::Null => "-".to_owned(),
        Value::Number(n) => {
            let v = n.as_f64().unwrap_or(0.0);
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!(
        "{:<8} {:<12} {:<11} rate {:>8}/s  offered {:>9}/s  delivered {:>9}/s  p50 {:>7} ms  p99 {:>7} ms  lost {:>6}  cpu {:>6} µs/delivery  {}",
        f("server"),
        line["scenario"].as_str().unwrap_or(""),
        line["shape"].as_str().unwrap_or(""),
        f("rate_posts_per_s"),
        f("offered_deliveries_per_s"),
        f("deliveries_per_s"),
        f("p50_ms"),
        f("p99_ms"),
        f("lost"),
        f("server_cpu_us_per_delivery"),
        if line["pass"].as_bool() == Some(true) {
            "pass"
        } else {
            "FAIL"
        },
    )
}

fn emit(line: &Value) {
    println!("{line}");
    eprintln!("{}", human(line));
}

async fn cmd_run(args: &Args) {
    let target = Arc::new(Target::from_args(args));
    let shape = Shape::from_args(args);
    let settings = Settings::from_args(args);
    let rate: f64 = args.get("rate", 100.0);
    let scenario = args.string("scenario", shape.name);
    wait_idle(settings.pid, settings.idle_wait).await;
    let tag = format!("{}-{}", run_tag(), &shape.name[..1]);
    let line = probe(&target, shape, rate, &settings, &scenario, &tag).await;
    emit(&line);
}

async fn cmd_max(args: &Args) {
    let target = Arc::new(Target::from_args(args));
    let shape = Shape::from_args(args);
    let settings = Settings::from_args(args);
    let start: f64 = args.get("start", 100.0);
    let cap: f64 = args.get("cap", 100_000.0);
    // Below a few posts per probe, a probe says little: stop halving there.
    let floor: f64 = args.get("floor", (start / 16.0).max(5.0 / settings.seconds));
    let steps: u32 = args.get("steps", 5);
    let max_probes: u32 = args.get("max-probes", 20);
    let scenario = args.string("scenario", &format!("max-{}", shape.name));
    let tag = run_tag();
    let started = Instant::now();

    let mut probes = 0u32;
    let mut best: Option<Value> = None;
    let mut lowest_fail: Option<f64> = None;
    let run_probe = async |rate: f64, probes: &mut u32| {
        *probes += 1;
        let tag = format!("{tag}-{}{}", &shape.name[..1], *probes);
        wait_idle(settings.pid, settings.idle_wait).await;
        let mut line = probe(&target, shape, rate, &settings, &scenario, &tag).await;
        line["kind"] = json!("probe");
        emit(&line);
        line
    };

    // Grow by doubling until a probe fails or the cap passes; if the start fails, halve.
    let mut rate = start.min(cap);
    for _ in 0..max_probes {
        let line = run_probe(rate, &mut probes).await;
        if line["pass"].as_bool() == Some(true) {
            best = Some(line);
            if rate >= cap {
                break;
            }
            rate = (rate * 2.0).min(cap);
        } else {
            lowest_fail = Some(rate);
            if best.is_some() || rate / 2.0 < floor {
                break;
            }
            rate /= 2.0;
        }
    }
    // Bisect between the best pass and the lowest fail above it.
    if let (Some(_), Some(_)) = (&best, lowest_fail) {
        for _ in 0..steps {
            let lo = best.as_ref().unwrap()["rate_posts_per_s"].as_f64().unwrap();
            let Some(hi) = lowest_fail else { break };
            if hi <= lo || hi / lo < 1.04 || probes >= max_probes {
                break;
            }
            let mid = ((lo + hi) / 2.0).round().max(lo + 1.0);
            if mid >= hi {
                break;
            }
            let line = run_probe(mid, &mut probes).await;
            if line["pass"].as_bool() == Some(true) {
                best = Some(line);
            } else {
                lowest_fail = Some(mid);
            }
        }
    }
    let result = match &best {
        Some(b) => json!({
            "kind": "max",
            "server": settings.server,
            "scenario": scenario,
            "shape": shape.name,
            "rooms": shape.rooms,
            "clients_per_room": shape.clients,
            "senders_per_room": shape.senders,
            "max_rate_posts_per_s": b["rate_posts_per_s"],
            "max_deliveries_per_s": b["offered_deliveries_per_s"],
            "p50_ms": b["p50_ms"],
            "p99_ms": b["p99_ms"],
            "server_cpu_us_per_delivery": b["server_cpu_us_per_delivery"],
            "server_cpu_share": b["server_cpu_share"],
            "lowest_failing_rate": lowest_fail,
            "lowest_failing_deliveries_per_s": lowest_fail.map(|r| r * shape.clients as f64),
            "capped": lowest_fail.is_none(),
            "probes": probes,
            "probe_seconds": settings.seconds,
            "search_seconds": started.elapsed().as_secs_f64().round(),
        }),
        None => json!({
            "kind": "max",
            "server": settings.server,
            "scenario": scenario,
            "shape": shape.name,
            "rooms": shape.rooms,
            "clients_per_room": shape.clients,
            "senders_per_room": shape.senders,
            "max_rate_posts_per_s": 0,
            "max_deliveries_per_s": 0,
            "lowest_failing_rate": lowest_fail,
            "lowest_failing_deliveries_per_s": lowest_fail.map(|r| r * shape.clients as f64),
            "capped": false,
            "probes": probes,
            "probe_seconds": settings.seconds,
            "search_seconds": started.elapsed().as_secs_f64().round(),
        }),
    };
    println!("{result}");
    eprintln!(
        "{:<8} {:<12} max {} posts/s = {} deliveries/s (p99 {} ms) after {} probes{}",
        settings.server,
        scenario,
        result["max_rate_posts_per_s"],
        result["max_deliveries_per_s"],
        result["p99_ms"],
        probes,
        if result["capped"].as_bool() == Some(true) {
            " (reached --cap)"
        } else {
            ""
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Idle connections

async fn cmd_idle(args: &Args) {
    let settings = Settings::from_args(args);
    let connections: usize = args.get("connections", 19_000);
    let per_process: usize = args.get("per-process", 9_500).clamp(1, 19_000);
    let batch: usize = args.get("batch", 500);
    let room_size: usize = args.get("room-size", 10);
    let settle = Duration::from_secs_f64(args.get("settle", 3.0));
    let tag = format!("{}-i", run_tag());
    let exe = std::env::current_exe().unwrap();

    wait_idle(settings.pid, settings.idle_wait).await;
    let rss_before = rss_kib(settings.pid);
    let cpu_before = cpu_us(settings.pid);
    let ramp_started = Instant::now();
    let mut workers = Vec::new();
    let (mut held, mut failed) = (0u64, 0u64);
    let mut first_error = String::new();
    let mut offset = 0;
    while offset < connections {
        let count = per_process.min(connections - offset);
        let mut child = tokio::process::Command::new(&exe)
            .arg("idle-worker")
            .args(["--addr", &args.string("addr", "127.0.0.1:8080")])
            .args(["--sources", &args.string("sources", "127.0.0.2-127.0.0.9")])
            .args(["--connect-timeout", &args.string("connect-timeout", "60")])
            .args([
                "--offset",
                &offset.to_string(),
                "--count",
                &count.to_string(),
            ])
            .args([
                "--batch",
                &batch.to_string(),
                "--room-size",
                &room_size.to_string(),
            ])
            .args(["--tag", &tag])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let limit = Duration::from_secs(60 + count as u64 / 10);
        match tokio::time::timeout(limit, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let mut parts = line.splitn(4, ' ');
                parts.next();
                held += parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                failed += parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                if first_error.is_empty() {
                    first_error = parts.next().unwrap_or("").to_owned();
                }
            }
            _ => {
                failed += count as u64;
                first_error = "a worker did not report".to_owned();
            }
        }
        workers.push(child);
        offset += count;
    }
    let ramp_seconds = ramp_started.elapsed().as_secs_f64();
    wait_idle(settings.pid, settings.idle_wait).await;
    tokio::time::sleep(settle).await;
    let rss_after = rss_kib(settings.pid);
    let cpu_after = cpu_us(settings.pid);

    // Close stdin: each worker exits, which closes its connections.
    for worker in &mut workers {
        if let Some(mut stdin) = worker.stdin.take() {
            let _ = stdin.shutdown().await;
        }
    }
    for mut worker in workers {
        if tokio::time::timeout(Duration::from_secs(20), worker.wait())
            .await
            .is_err()
        {
            let _ = worker.kill().await;
        }
    }
    let per_connection = match (rss_before, rss_after) {
        (Some(a), Some(b)) if held > 0 => {
            Some((b.saturating_sub(a) as f64 / held as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let line = json!({
        "kind": "idle",
        "server": settings.server,
        "scenario": "idle",
        "connections_target": connections,
        "connections_held": held,
        "connect_errors": failed,
        "first_error": if first_error.is_empty() { Value::Null } else { json!(first_error) },
        "room_size": room_size,
        "processes": connections.div_ceil(per_process),
        "ramp_seconds": (ramp_seconds * 10.0).round() / 10.0,
        "connects_per_s": (held as f64 / ramp_seconds).round(),
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "kib_per_connection": per_connection,
        "server_cpu_s": match (cpu_before, cpu_after) { (Some(a), Some(b)) => json!((b - a) as f64 / 1e6), _ => Value::Null },
        "pass": failed == 0 && held as usize == connections,
    });
    println!("{line}");
    eprintln!(
        "{:<8} idle         held {held}/{connections} in {ramp_seconds:.1} s, RSS {} → {} KiB: {} KiB per connection",
        settings.server,
        rss_before.unwrap_or(0),
        rss_after.unwrap_or(0),
        per_connection.map_or("-".to_owned(), |v| format!("{v:.2}")),
    );
}

async fn cmd_idle_worker(args: &Args) {
    let target = Arc::new(Target::from_args(args));
    let offset: usize = args.get("offset", 0);
    let count: usize = args.get("count", 0);
    let batch: usize = args.get("batch", 500).max(1);
    let room_size: usize = args.get("room-size", 10).max(1);
    let tag = args.string("tag", "idle");
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first_error = String::new();
    let mut holders = Vec::with_capacity(count);
    let mut start = 0;
    while start < count {
        let end = (start + batch).min(count);
        let attempts: Vec<_> = (start..end)
            .map(|k| {
                let target = Arc::clone(&target);
                let i = offset + k;
                let room = format!("{tag}-r{}", i / room_size);
                let user = format!("u{}", i % room_size);
                tokio::spawn(async move { target.connect(i, &room, &user).await })
            })
            .collect();
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(mut ws) => {
                    ok += 1;
                    // Keep reading, so pings are answered and nothing piles up.
                    holders.push(tokio::spawn(async move {
                        while let Some(Ok(_)) = ws.next().await {}
                    }));
                }
                Err(e) => {
                    failed += 1;
                    if first_error.is_empty() {
                        first_error = e.replace('\n', " ");
                    }
                }
            }
        }
        start = end;
    }
    let mut out = tokio::io::stdout();
    let _ = out
        .write_all(format!("ready {ok} {failed} {first_error}\n").as_bytes())
        .await;
    let _ = out.flush().await;
    // Hold until the parent closes our stdin (or an hour passes).
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let _ = tokio::time::timeout(Duration::from_secs(3600), stdin.next_line()).await;
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// Probe: one room with members on every node of a cluster

/// `probe --addrs A,B,… --members-per-node N --messages M`: N members of one room on each
/// node, one of them posting M messages `--interval-ms` apart; every member must receive every
/// message. Reports delivery latency (post sent → frame received, one clock: one process).
async fn cmd_probe(args: &Args) {
    let addrs: Vec<String> = args
        .string("addrs", "127.0.0.1:8080")
        .split(',')
        .map(str::to_owned)
        .collect();
    let per_node: usize = args.get("members-per-node", 10);
    let messages: u64 = args.get("messages", 50);
    let interval = Duration::from_millis(args.get("interval-ms", 200));
    let room = format!("{}-probe", run_tag());
    let sources = args.string("sources", "127.0.0.2-127.0.0.9");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    let mut sender = None;
    let mut readers = Vec::new();
    let mut member = 0;
    for addr in &addrs {
        let target = Target::from_args(&Args::parse(&[
            "--addr".to_owned(),
            addr.clone(),
            "--sources".to_owned(),
            sources.clone(),
        ]));
        for _ in 0..per_node {
            let ws = target
                .connect(member, &room, &format!("p{member}"))
                .await
                .unwrap_or_else(|e| panic!("probe member {member} on {addr}: {e}"));
            let (sink, mut stream) = ws.split();
            if sender.is_none() {
                sender = Some(sink);
            }
            let tx = tx.clone();
            let who = member;
            readers.push(tokio::spawn(async move {
                while let Some(Ok(frame)) = stream.next().await {
                    let Message::Text(text) = frame else { continue };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if value["type"] != "chat_message" {
                        continue;
                    }
                    let content = value["message"]["content"].as_str().unwrap_or_default();
                    if let Some(sent) = content
                        .strip_prefix("probe ")
                        .and_then(|rest| rest.split(' ').next())
                        .and_then(|ns| ns.parse::<u64>().ok())
                    {
                        let _ = tx.send((who, now_ns().saturating_sub(sent)));
                    }
                }
            }));
            member += 1;
        }
    }
    drop(tx);
    let mut sink = sender.expect("at least one member");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for n in 0..messages {
        let text = format!("probe {} message {n} to every node", now_ns());
        let frame = json!({"type": "chat_message", "message": text}).to_string();
        sink.send(Message::Text(frame.into()))
            .await
            .expect("the probe posts");
        tokio::time::sleep(interval).await;
    }
    let expected = messages * member as u64;
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut per_member = vec![0u64; member];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (latencies.len() as u64) < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((who, ns))) => {
                per_member[who] += 1;
                latencies.push(ns);
            }
            _ => break,
        }
    }
    latencies.sort_unstable();
    let at = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map(|ns| *ns as f64 / 1e6)
    };
    let line = json!({
        "kind": "probe",
        "nodes": addrs.len(),
        "members": member,
        "messages": messages,
        "deliveries": latencies.len(),
        "expected": expected,
        "members_missing_some": per_member.iter().filter(|c| **c < messages).count(),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": latencies.last().map(|ns| *ns as f64 / 1e6),
        "pass": latencies.len() as u64 == expected,
    });
    println!("{line}");
    eprintln!(
        "probe        {} members on {} nodes: {}/{} deliveries, p50 {:.2} ms, p99 {:.2} ms",
        member,
        addrs.len(),
        latencies.len(),
        expected,
        at(0.5).unwrap_or(f64::NAN),
        at(0.99).unwrap_or(f64::NAN)
    );
    for reader in readers {
        reader.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Slow readers

/// `slow --count N --rate R --size BYTES --seconds S`: N clients that never read and one that
/// does, in one room where one poster posts R messages/s of about BYTES for S seconds. Then
/// each slow client reads what reached it and reports how its connection ended: the server
/// must close laggards (1013) and keep everyone else.
async fn cmd_slow(args: &Args) {
    let target = Target::from_args(args);
    let mut lagging = Target::from_args(args);
    lagging.recv_buffer = Some(args.get("recv-buffer", 4096));
    let count: usize = args.get("count", 5);
    let rate: f64 = args.get("rate", 20.0);
    let size: usize = args.get("size", 2000);
    let seconds: f64 = args.get("seconds", 60.0);
    let room = format!("{}-slow", run_tag());
    let mut slow = Vec::new();
    for n in 0..count {
        let ws = lagging
            .connect(n, &room, &format!("slow{n}"))
            .await
            .unwrap_or_else(|e| panic!("slow reader {n}: {e}"));
        slow.push(ws);
    }
    let reader = target
        .connect(count, &room, "reader")
        .await
        .unwrap_or_else(|e| panic!("the reader: {e}"));
    let poster = target
        .connect(count + 1, &room, "poster")
        .await
        .unwrap_or_else(|e| panic!("the poster: {e}"));
    let (mut post_sink, mut post_stream) = poster.split();
    // The poster reads its own echoes (it is no slow reader).
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = post_stream.next().await {} });
    let received = Arc::new(AtomicU64::new(0));
    let reader_closed = Arc::new(AtomicU64::new(0));
    let reading = {
        let (received, reader_closed) = (Arc::clone(&received), Arc::clone(&reader_closed));
        tokio::spawn(async move {
            let mut reader = reader;
            while let Some(frame) = reader.next().await {
                match frame {
                    Ok(Message::Text(text)) if text.contains("\"chat_message\"") => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Message::Close(frame)) => {
                        reader_closed.store(frame.map_or(1, |f| u64::from(u16::from(f.code))), Ordering::Relaxed);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        reader_closed.store(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        })
    };
    let filler: String = PHRASES.iter().cycle().take(size / 40 + 1).copied().collect::<Vec<_>>().join(" ");
    let filler: String = filler.chars().take(size).collect();
    let total = (rate * seconds).round() as u64;
    let pace = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    for n in 0..total {
        let frame = json!({"type": "chat_message", "message": format!("{n} {filler}")}).to_string();
        if post_sink.send(Message::Text(frame.into())).await.is_err() {
            break;
        }
        let due = started + pace * (n as u32 + 1);
        tokio::time::sleep_until(due.into()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // How did each slow client's connection end? Read what is buffered, with a bound.
    let mut endings: Vec<String> = Vec::new();
    for mut ws in slow {
        let mut frames = 0u64;
        let ending = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Err(_) => break "open".to_owned(),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    break format!("close {}", frame.map_or(0, |f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => frames += 1,
                Ok(Some(Err(e))) => break format!("dropped after {frames} frames: {e}"),
                Ok(None) => break format!("dropped after {frames} frames"),
            }
        };
        endings.push(ending);
    }
    let _ = post_sink.close().await;
    drain.abort();
    reading.abort();
    let received = received.load(Ordering::Relaxed);
    let reader_closed = match reader_closed.load(Ordering::Relaxed) {
        0 => None,
        code => Some(code),
    };
    let closed_1013 = endings.iter().filter(|e| *e == "close 1013").count();
    let line = json!({
        "kind": "slow",
        "slow_readers": count,
        "posted": total,
        "slow_endings": endings,
        "slow_closed_1013": closed_1013,
        "reader_received": received,
        "reader_closed": reader_closed,
        "pass": closed_1013 == count && received >= total,
    });
    println!("{line}");
    eprintln!(
        "slow         {closed_1013}/{count} slow readers closed with 1013; the reader got {received}/{total}"
    );
}

fn main() {
    origin();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = argv.first().cloned() else {
        eprintln!("usage: loadgen run|max|idle [--option value …] (see the source's header)");
        std::process::exit(2);
    };
    let args = Args::parse(&argv[1..]);
    let threads: usize = args.get("threads", 0);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    let runtime = builder.enable_all().build().unwrap();
    runtime.block_on(async {
        match command.as_str() {
            "run" => cmd_run(&args).await,
            "max" => cmd_max(&args).await,
            "idle" => cmd_idle(&args).await,
            "idle-worker" => cmd_idle_worker(&args).await,
            "probe" => cmd_probe(&args).await,
            "slow" => cmd_slow(&args).await,
            other => {
                eprintln!("unknown command {other:?}: run, max or idle");
                std::process::exit(2);
            }
        }
    });
}
