//! One open WebSocket: a reader task and a writer task.
//!
//! The reader takes client frames and acts on them (post, typing, ping), sending replies to the
//! writer over a bounded queue. The writer sends the welcome, then whatever comes first: a
//! reply, the room's next event (in seq order, from the feed), a ping, or the server's
//! shutdown. Either side ending ends the connection; the session leaves the room last.

use std::sync::Arc;
use std::time::Duration;

use banter_application::{FeedError, JoinedOf, Ports, PostRefusal, SessionOf};
use banter_domain::Appended;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use tokio::sync::{mpsc, watch};

use super::frames::{self, ClientFrame};
use crate::AppState;
use crate::WsSettings;
use crate::guard::SlotGuard;
use crate::problem::ErrorCode;

/// A joined connection waiting for its upgrade. If the upgrade never happens, dropping it
/// still takes the user out of the room.
pub struct Pending<P: Ports> {
    joined: Option<JoinedOf<P>>,
    slot: Option<SlotGuard>,
}

impl<P: Ports> Pending<P> {
    pub fn new(joined: JoinedOf<P>, slot: SlotGuard) -> Self {
        Self {
            joined: Some(joined),
            slot: Some(slot),
        }
    }
}

impl<P: Ports> Drop for Pending<P> {
    fn drop(&mut self) {
        if let Some(joined) = self.joined.take() {
            let slot = self.slot.take();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    joined.session.leave().await;
                    drop(slot);
                });
            }
        }
    }
}

/// What the reader asks the writer to send.
enum Outbound {
    Text(String),
    Close(CloseCode, &'static str),
}

type Sink = SplitSink<WebSocketStream, Message>;
type Source = SplitStream<WebSocketStream>;

/// Frames written in one go before a flush; keeps a fan-out burst to few syscalls.
const FRAMES_PER_FLUSH: usize = 64;

pub async fn run<P: Ports>(
    socket: WebSocketStream,
    mut pending: Pending<P>,
    state: Arc<AppState<P>>,
) {
    let (Some(joined), Some(slot)) = (pending.joined.take(), pending.slot.take()) else {
        return;
    };
    let settings = state.settings.ws;
    let (sink, source) = socket.split();
    let (replies, reply_queue) = mpsc::channel(settings.reply_queue.max(1));
    let welcome = frames::welcome(&joined.welcome);
    let mut writer = tokio::spawn(write_loop::<P>(
        sink,
        welcome,
        joined.feed,
        reply_queue,
        state.shutdown.clone(),
        settings,
    ));
    let session = joined.session;
    let mut source = source;
    let reading = read_loop::<P>(&mut source, &session, replies, settings);
    tokio::select! {
        () = reading => {
            // The reader dropped its end of the reply queue: the writer flushes and stops.
            if let Err(e) = (&mut writer).await {
                tracing::error!(error = %e, "websocket writer failed");
            }
        }
        result = &mut writer => {
            // The writer ended first (closed the socket, or the client stopped reading); the
            // reader is dropped with the select.
            if let Err(e) = result {
                tracing::error!(error = %e, "websocket writer failed");
            }
        }
    }
    // Give the client a moment to answer our close frame before the TCP connection goes:
    // closing at once can reset it while the client still writes (a pong, say).
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

async fn read_loop<P: Ports>(
    source: &mut Source,
    session: &SessionOf<P>,
    replies: mpsc::Sender<Outbound>,
    settings: WsSettings,
) {
    loop {
        let next = tokio::time::timeout(settings.idle_timeout, source.next()).await;
        let message = match next {
            Err(_idle) => {
                let _ = replies.try_send(Outbound::Close(CloseCode::Normal, "idle timeout"));
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                // tungstenite reports an oversized message as a capacity error, by text only.
                if e.to_string().contains("too long") || e.to_string().contains("Space limit") {
                    let _ = replies.try_send(Outbound::Close(CloseCode::Size, "message too big"));
                } else {
                    tracing::debug!(error = %e, "websocket read failed");
                }
                return;
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
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => return,
        };
        if let Some(reply) = reply
            && replies.try_send(Outbound::Text(reply)).is_err()
        {
            // The writer cannot keep up with this client's requests: it does not read.
            let _ = replies.try_send(Outbound::Close(CloseCode::Again, "too many unread replies"));
            return;
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
                let code = match e.refusal {
                    PostRefusal::RateLimited { .. } => ErrorCode::RateLimited,
                    PostRefusal::Unavailable => ErrorCode::Unavailable,
                    PostRefusal::MissingContent
                    | PostRefusal::InvalidContent(_)
                    | PostRefusal::ClientIdNotText
                    | PostRefusal::InvalidClientId(_) => ErrorCode::InvalidMessage,
                };
                let detail = match &e.refusal {
                    PostRefusal::MissingContent => "message: must be a string".to_owned(),
                    PostRefusal::InvalidContent(reason) => format!("message: {reason}"),
                    other => other.to_string(),
                };
                Some(error_frame(code, &detail, e.client_id.as_ref()))
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
    mut replies: mpsc::Receiver<Outbound>,
    mut shutdown: watch::Receiver<bool>,
    settings: WsSettings,
) {
    if !send(&mut sink, Message::Text(welcome), &settings).await {
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
                Some(Outbound::Text(text)) => {
                    if !send(&mut sink, Message::Text(text), &settings).await {
                        break WriterEnd::Dropped;
                    }
                    metrics::counter!("banter_frames_sent_total").increment(1);
                }
                Some(Outbound::Close(code, reason)) => break WriterEnd::Close(code, reason),
                None => break WriterEnd::ReaderDone,
            },
            event = feed.next() => match write_events(&mut sink, &mut feed, event, &settings).await {
                Ok(()) => {}
                Err(end) => break end,
            },
            _ = ping.tick() => {
                if !send(&mut sink, Message::Ping(Vec::new()), &settings).await {
                    break WriterEnd::Dropped;
                }
            }
        }
    };
    if let WriterEnd::Close(code, reason) = end {
        // Whatever was queued before is already written; the close frame follows it.
        let _ = send(
            &mut sink,
            Message::Close(Some((code, reason.to_owned()))),
            &settings,
        )
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// Writes one event and any others already waiting, then flushes once.
async fn write_events<S, Sub, C>(
    sink: &mut Sink,
    feed: &mut banter_application::RoomFeed<S, Sub, C>,
    first: Result<Arc<banter_domain::EventEnvelope>, FeedError>,
    settings: &WsSettings,
) -> Result<(), WriterEnd>
where
    S: banter_domain::ports::MessageStore,
    Sub: banter_domain::ports::EventSubscription,
    C: banter_domain::ports::Clock,
{
    let mut next = Some(first);
    let mut written = 0;
    let mut failure = None;
    while let Some(event) = next.take() {
        match event {
            Ok(envelope) => {
                let frame = envelope.client_frame(frames::event);
                let fed = tokio::time::timeout(
                    settings.write_timeout,
                    sink.feed(Message::Text(frame.to_string())),
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
