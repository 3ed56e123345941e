//! The ceiling of the side-by-side benchmark: a tokio-tungstenite fan-out server that speaks
//! the benchmark's protocol subset and stores nothing.
//!
//! `bare [LISTEN]` (default `127.0.0.1:8090`). `GET /ws/chat/{room}/?username=NAME` upgrades;
//! the first frame is a minimal welcome; each `{"type":"chat_message","message":TEXT}` gets the
//! room's next seq and is encoded once, then the same bytes go to every connection of the
//! room (the sender's included) through a tokio broadcast channel. A connection that falls
//! more than `QUEUE` frames behind is closed with 1013, as banter does.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const QUEUE: usize = 512;

struct Room {
    seq: u64,
    tx: broadcast::Sender<Utf8Bytes>,
}

type Rooms = Arc<Mutex<HashMap<String, Arc<Mutex<Room>>>>>;

fn valid_room(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `/ws/chat/{room}/?username=NAME` → (room, username).
fn parse_target(uri: &str) -> Option<(String, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let room = path.strip_prefix("/ws/chat/")?;
    let room = room.strip_suffix('/').unwrap_or(room);
    if !valid_room(room) {
        return None;
    }
    let username = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("username="))?;
    let valid = (1..=32).contains(&username.chars().count())
        && username
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    valid.then(|| (room.to_owned(), username.to_owned()))
}

/// RFC 3339, UTC, milliseconds.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (now.as_secs() as i64, now.subsec_millis());
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn serve(stream: TcpStream, rooms: Rooms) {
    stream.set_nodelay(true).ok();
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(65_536))
        .max_frame_size(Some(65_536));
    let mut target = None;
    let callback =
        |request: &Request, response: Response| match parse_target(&request.uri().to_string()) {
            Some(t) => {
                target = Some(t);
                Ok(response)
            }
            None => {
                let mut refusal = ErrorResponse::new(Some("bad room or username".to_owned()));
                *refusal.status_mut() = StatusCode::BAD_REQUEST;
                Err(refusal)
            }
        };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let Some((room_name, username)) = target else {
        return;
    };
    let room = Arc::clone(
        rooms
            .lock()
            .unwrap()
            .entry(room_name.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Room {
                    seq: 0,
                    tx: broadcast::channel(QUEUE).0,
                }))
            }),
    );
    let (mut rx, last_seq) = {
        let room = room.lock().unwrap();
        (room.tx.subscribe(), room.seq)
    };
    let welcome = json!({
        "type": "welcome", "room": room_name, "username": username, "messages": [],
        "has_more": last_seq > 0, "last_seq": last_seq, "online": [], "online_count": 0,
        "typing": [],
    })
    .to_string();
    let (mut sink, mut stream) = ws.split();
    if sink.send(Message::Text(welcome.into())).await.is_err() {
        return;
    }

    let writer = tokio::spawn(async move {
        loop {
            let frame = match rx.recv().await {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let close = CloseFrame {
                        code: CloseCode::Again,
                        reason: "too far behind".into(),
                    };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if sink.feed(Message::Text(frame)).await.is_err() {
                return;
            }
            // Whatever else is already waiting goes out with the same flush.
            while let Ok(frame) = rx.try_recv() {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if frame["type"] != "chat_message" {
            continue;
        }
        let Some(content) = frame["message"].as_str() else {
            continue;
        };
        let mut room = room.lock().unwrap();
        room.seq += 1;
        let out = json!({
            "type": "chat_message",
            "message": {
                "room": room_name, "seq": room.seq, "username": username, "content": content,
                "timestamp": timestamp(), "client_id": frame.get("client_id").cloned().unwrap_or(Value::Null),
            },
        })
        .to_string();
        let _ = room.tx.send(out.into());
    }
    writer.abort();
    let _ = writer.await;
    // Forget a room nobody is in any more.
    let mut rooms = rooms.lock().unwrap();
    if room.lock().unwrap().tx.receiver_count() == 0 {
        rooms.remove(&room_name);
    }
}

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let listener = TcpListener::bind(&listen).await.expect("bind");
    eprintln!(
        "bare listening on http://{}",
        listener.local_addr().unwrap()
    );
    let rooms: Rooms = Arc::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, Arc::clone(&rooms)));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
