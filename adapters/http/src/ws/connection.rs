//! One open WebSocket: a reader task and a writer task.
//!
//! The reader takes client frames and acts on them (post, typing, ping), sending replies to the
//! writer over a bounded queue. The writer sends the welcome, then whatever comes first: a
//! reply, the room's next event (in seq order, from the feed), a ping, or the server's
//! shutdown. Either side ending ends the connection; the session leaves the room last.

use std::sync::Arc;
use std::time::Duration;

use banter_application::{FeedError, JoinedOf, Ports, SessionOf};
use banter_domain::Appended;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::frame_cache::RoomFrames;
use super::frames::{self, ClientFrame};
use super::upgrade::Socket;
use crate::AppState;
use crate::WsSettings;
use crate::guard::SlotGuard;
use crate::problem::{ErrorCode, PostEdge, post_refusal};

/// A joined connection waiting for its upgrade. If the upgrade never happens, dropping it
/// still takes the user out of the room.
pub struct Pending<P: Ports> {
    /// Taken by the upgrade; still here on drop if it never happened.
    connection: Option<(JoinedOf<P>, SlotGuard)>,
}

impl<P: Ports> Pending<P> {
    pub fn new(joined: JoinedOf<P>, slot: SlotGuard) -> Self {
        Self {
            connection: Some((joined, slot)),
        }
    }
}

impl<P: Ports> Drop for Pending<P> {
    fn drop(&mut self) {
        if let Some((joined, slot)) = self.connection.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                joined.session.leave().await;
                drop(slot);
            });
        }
    }
}

/// What the writer listens to besides the room's feed.
struct Inbox {
    replies: mpsc::Receiver<String>,
    close: oneshot::Receiver<(CloseCode, &'static str)>,
    shutdown: watch::Receiver<bool>,
}

type Sink = SplitSink<Socket, Message>;
type Source = SplitStream<Socket>;

/// Frames written in one go before a flush; keeps a fan-out burst to few syscalls.
const FRAMES_PER_FLUSH: usize = 64;

pub async fn run<P: Ports>(socket: Socket, mut pending: Pending<P>, state: Arc<AppState<P>>) {
    let Some((joined, slot)) = pending.connection.take() else {
        return;
    };
    let settings = state.settings.ws;
    let (sink, mut source) = socket.split();
    let (replies, reply_queue) = mpsc::channel(settings.reply_queue.max(1));
    // Close requests travel apart from replies, so a full reply queue cannot swallow them.
    let (close_request, close_requested) = oneshot::channel();
    let welcome = frames::welcome(&joined.welcome);
    let room_frames = state.frames.room(&joined.welcome.room);
    let mut writer = tokio::spawn(write_loop::<P>(
        sink,
        welcome,
        joined.feed,
        room_frames,
        Inbox {
            replies: reply_queue,
            close: close_requested,
            shutdown: state.shutdown.clone(),
        },
        settings,
    ));
    let session = joined.session;
    let end = read_loop::<P>(&mut source, &session, &replies, &mut writer, settings).await;
    if !matches!(end, ReadEnd::WriterGone) {
        if let ReadEnd::Close(code, reason) = end {
            let _ = close_request.send((code, reason));
        }
        // Replies already queued are still written; then the writer sees the queue end.
        drop(replies);
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "websocket writer failed");
        }
    }
    // Give the client a moment to read our close frame before the TCP connection goes:
    // closing a socket with unread input resets it, and the client may lose the close frame.
    linger(&mut source).await;
    session.leave().await;
    drop(slot);
}

/// Reads and discards until the client closes too, for at most a couple of seconds.
async fn linger(source: &mut Source) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(message)) = source.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Why the reader stopped.
enum ReadEnd {
    /// The client closed or the connection broke.
    ClientGone,
    /// The writer should close the connection with this code.
    Close(CloseCode, &'static str),
    /// The writer already ended (and closed the connection).
    WriterGone,
}

async fn read_loop<P: Ports>(
    source: &mut Source,
    session: &SessionOf<P>,
    replies: &mpsc::Sender<String>,
    writer: &mut tokio::task::JoinHandle<()>,
    settings: WsSettings,
) -> ReadEnd {
    loop {
        // Only waiting for a frame is interrupted when the writer ends; handling one (a post
        // being stored and broadcast) always runs to completion.
        let next = tokio::select! {
            biased;
            _ = &mut *writer => return ReadEnd::WriterGone,
            next = tokio::time::timeout(settings.idle_timeout, source.next()) => next,
        };
        let message = match next {
            Err(_idle) => return ReadEnd::Close(CloseCode::Normal, "idle timeout"),
            Ok(None) => return ReadEnd::ClientGone,
            // A message (or a frame) over its limit.
            Ok(Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. })))) => {
                return ReadEnd::Close(CloseCode::Size, "message too big");
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "websocket read failed");
                return ReadEnd::ClientGone;
            }
            Ok(Some(Ok(message))) => message,
        };
        let reply = match message {
            Message::Text(text) => handle_text::<P>(&text, session).await,
            Message::Binary(_) => Some(error_frame(
                ErrorCode::InvalidJson,
                "binary frames are not supported; send JSON text",
                None,
            )),
            // Pongs (and pings, answered by the library) only prove the client is alive.
            // (Raw frames are only ever written, never read.)
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
            Message::Close(_) => return ReadEnd::ClientGone,
        };
        if let Some(reply) = reply
            && replies.try_send(reply).is_err()
        {
            // The client sends requests but does not read the answers.
            return ReadEnd::Close(CloseCode::Again, "too many unread replies");
        }
    }
}

fn error_frame(
    code: ErrorCode,
    detail: &str,
    client_id: Option<&banter_domain::ClientId>,
) -> String {
    metrics::counter!("banter_errors_total", "code" => code.as_str()).increment(1);
    frames::error(code, detail, client_id)
}

async fn handle_text<P: Ports>(text: &str, session: &SessionOf<P>) -> Option<String> {
    match frames::parse_client_frame(text) {
        Err(refusal) => Some(error_frame(refusal.code, &refusal.detail, None)),
        Ok(ClientFrame::Ping) => Some(frames::pong()),
        Ok(ClientFrame::Typing { is_typing }) => {
            session.set_typing(is_typing).await;
            None
        }
        Ok(ClientFrame::ChatMessage(draft)) => match session.post(draft).await {
            // The sender sees its own message when the room's feed delivers it, in order.
            Ok(Appended::Stored(_)) => None,
            Ok(Appended::Duplicate(original)) => Some(frames::duplicate(&original)),
            Err(e) => {
                let refusal = post_refusal(&e.refusal, PostEdge::WebSocket);
                Some(error_frame(
                    refusal.code,
                    &refusal.detail,
                    e.client_id.as_ref(),
                ))
            }
        },
    }
}

/// Why the writer stopped.
enum WriterEnd {
    Close(CloseCode, &'static str),
    /// The socket failed or the client stopped reading; nothing more can be sent.
    Dropped,
    /// The reader finished; the client closed or went away.
    ReaderDone,
}

async fn send(sink: &mut Sink, message: Message, settings: &WsSettings) -> bool {
    matches!(
        tokio::time::timeout(settings.write_timeout, sink.send(message)).await,
        Ok(Ok(()))
    )
}

async fn write_loop<P: Ports>(
    mut sink: Sink,
    welcome: String,
    mut feed: banter_application::FeedOf<P>,
    room_frames: Arc<RoomFrames>,
    inbox: Inbox,
    settings: WsSettings,
) {
    let Inbox {
        mut replies,
        mut close,
        mut shutdown,
    } = inbox;
    if !send(&mut sink, Message::Text(welcome.into()), &settings).await {
        return;
    }
    metrics::counter!("banter_frames_sent_total").increment(1);
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    let end = loop {
        if *shutdown.borrow() {
            break WriterEnd::Close(CloseCode::Away, "server shutting down");
        }
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break WriterEnd::Close(CloseCode::Away, "server shutting down");
                }
            }
            reply = replies.recv() => match reply {
                Some(text) => {
                    if !send(&mut sink, Message::Text(text.into()), &settings).await {
                        break WriterEnd::Dropped;
                    }
                    metrics::counter!("banter_frames_sent_total").increment(1);
                }
                // The reader is done; it may have asked for a close on its way out.
                None => match close.try_recv() {
                    Ok((code, reason)) => break WriterEnd::Close(code, reason),
                    Err(_) => break WriterEnd::ReaderDone,
                },
            },
            request = &mut close => match request {
                Ok((code, reason)) => break WriterEnd::Close(code, reason),
                Err(_) => break WriterEnd::ReaderDone,
            },
            event = feed.next() => match write_events::<P>(&mut sink, &mut feed, &room_frames, event, &settings).await {
                Ok(()) => {}
                Err(end) => break end,
            },
            _ = ping.tick() => {
                if !send(&mut sink, Message::Ping(Default::default()), &settings).await {
                    break WriterEnd::Dropped;
                }
            }
        }
    };
    if let WriterEnd::Close(code, reason) = end {
        // Whatever was queued before is already written; the close frame follows it.
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = send(&mut sink, Message::Close(Some(frame)), &settings).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// Writes one event and any others already waiting, then flushes once.
async fn write_events<P: Ports>(
    sink: &mut Sink,
    feed: &mut banter_application::FeedOf<P>,
    room_frames: &RoomFrames,
    first: Result<Arc<banter_domain::EventEnvelope>, FeedError>,
    settings: &WsSettings,
) -> Result<(), WriterEnd> {
    let mut next = Some(first);
    let mut written = 0;
    let mut failure = None;
    while let Some(event) = next.take() {
        match event {
            Ok(envelope) => {
                let frame = room_frames.frame(&envelope, frames::event);
                let fed = tokio::time::timeout(
                    settings.write_timeout,
                    sink.feed(Message::Text(frame.to_string().into())),
                )
                .await;
                if !matches!(fed, Ok(Ok(()))) {
                    return Err(WriterEnd::Dropped);
                }
                written += 1;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if written < FRAMES_PER_FLUSH {
            // Only what is ready now: a pending future is dropped, which the feed allows.
            next = feed.next().now_or_never();
        }
    }
    if written > 0 {
        if !matches!(
            tokio::time::timeout(settings.write_timeout, sink.flush()).await,
            Ok(Ok(()))
        ) {
            return Err(WriterEnd::Dropped);
        }
        metrics::counter!("banter_frames_sent_total").increment(written as u64);
    }
    match failure {
        None => Ok(()),
        Some(FeedError::FellBehind) => Err(WriterEnd::Close(
            CloseCode::Again,
            "fell too far behind; reconnect with after",
        )),
        Some(FeedError::Closed) => Err(WriterEnd::Close(
            CloseCode::Away,
            "the room's stream closed",
        )),
        Some(FeedError::Store(e)) => {
            tracing::warn!(error = %e, "feed could not read missed messages");
            Err(WriterEnd::Close(
                CloseCode::Error,
                "storage unavailable; reconnect with after",
            ))
        }
    }
}
