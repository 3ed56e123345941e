//! One open WebSocket, served by one task: it reads the client's frames and acts on them
//! (post, typing, ping), writes the welcome, the room's events (in seq order, from the feed)
//! and the replies, pings a quiet client, and closes.
//!
//! The task never blocks on the socket: what is to be sent waits in one output buffer that
//! the socket drains as the client reads, while the task goes on reading the client. Nothing
//! is held while the connection is idle: reads go through a stack buffer and only an
//! unfinished frame is kept, and the output buffer is freed once written. A room event is
//! copied from the bytes every receiver shares, several of them into one write.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use banter_application::{FeedError, FeedOf, JoinedOf, Ports, SessionOf};
use banter_domain::EventEnvelope;
use futures_util::FutureExt;
use poem::Upgraded;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::codec::{self, CloseCode, Decoder, Incoming};
use super::frame_cache::RoomFrames;
use super::frames;
use super::requests::{error_frame, handle_text};
use crate::AppState;
use crate::WsSettings;
use crate::guard::SlotGuard;
use crate::problem::ErrorCode;

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

/// Room events taken from the feed at a time; keeps a fan-out burst to few syscalls.
const FRAMES_PER_WRITE: usize = 64;

/// The feed is read only while less than this waits to be written: a client that does not
/// keep up leaves its events in the room's channel, where falling too far behind ends in 1013.
const EVENTS_WHEN_BELOW: usize = 16 * 1024;

/// Replies (errors, duplicates, pongs) a client may leave unread, in bytes, before it is
/// closed with 1013: it sends requests but does not read the answers.
const MAX_UNREAD_REPLIES: usize = 64 * 1024;

/// Bytes read from the socket at a time, on the stack of the task's poll only.
const READ_CHUNK: usize = 4096;

/// How long a closing connection waits for the client's own close.
const LINGER: Duration = Duration::from_secs(2);

/// How a connection ends.
enum End {
    /// Send this close frame after what is pending, then wait briefly for the client's.
    Close(CloseCode, &'static str),
    /// The client closed (its close is answered already): write what is pending, then go.
    Closed,
    /// The socket broke or stopped taking bytes; nothing more can be sent.
    Gone,
}

/// What the socket did.
enum Io {
    /// Some pending output was written.
    Wrote(usize),
    /// Complete messages (possibly none: a frame is still arriving).
    Read(Vec<Incoming>),
    /// The client broke the protocol; close with this code.
    Invalid(CloseCode, &'static str),
    /// End of stream or a socket error.
    Gone,
}

struct Connection {
    io: Upgraded,
    decoder: Decoder,
    deflate: bool,
    settings: WsSettings,
    /// Frames waiting to be written, oldest first; unallocated when nothing waits.
    out: Vec<u8>,
    /// Bytes of replies queued since the output was last written out in full.
    unread_replies: usize,
}

/// Serves an upgraded connection until it ends.
///
/// The set-up runs before the returned future exists, and that future owns each part once:
/// a task's future holds every local it may need across an await, moved-from ones included,
/// so doing this set-up inside an `async fn` cost each idle connection ~3.4 KiB more (the
/// join result in three copies, as taken, as destructured and as moved on).
pub fn run<P: Ports>(
    io: Upgraded,
    deflate: bool,
    mut pending: Pending<P>,
    state: &AppState<P>,
) -> Option<impl Future<Output = ()> + Send + use<P>> {
    let (joined, slot) = pending.connection.take()?;
    let settings = state.settings.ws;
    let mut connection = Connection {
        io,
        decoder: Decoder::new(settings.max_message_bytes, deflate),
        deflate,
        settings,
        out: Vec::new(),
        unread_replies: 0,
    };
    let banter_application::Joined {
        welcome,
        feed,
        session,
    } = joined;
    let room_frames = state.frames.room(&welcome.room);
    // The welcome (up to 200 messages) is queued as bytes and not kept past that.
    connection.push_text(&frames::welcome(&welcome));
    drop(welcome);
    let serving = Serving {
        feed,
        session,
        room_frames,
        shutdown: state.shutdown.clone(),
        slot,
    };
    Some(connection.run::<P>(serving))
}

/// What a running connection owns besides its socket.
struct Serving<P: Ports> {
    feed: FeedOf<P>,
    session: SessionOf<P>,
    room_frames: Arc<RoomFrames>,
    shutdown: watch::Receiver<bool>,
    slot: SlotGuard,
}

impl Connection {
    async fn run<P: Ports>(mut self, serving: Serving<P>) {
        let Serving {
            mut feed,
            session,
            room_frames,
            shutdown,
            slot,
        } = serving;
        let end = self
            .serve::<P>(&mut feed, &session, &room_frames, shutdown)
            .await;
        // Boxed, like the handling of a client frame below: a task's future is as large as
        // its largest state, and these (a post's store and broadcast, a leave) would otherwise
        // make every idle connection carry several KiB for states it is not in.
        Box::pin(self.finish(end)).await;
        drop(feed);
        Box::pin(session.leave()).await;
        drop(slot);
    }

    async fn serve<P: Ports>(
        &mut self,
        feed: &mut FeedOf<P>,
        session: &SessionOf<P>,
        room_frames: &RoomFrames,
        mut shutdown: watch::Receiver<bool>,
    ) -> End {
        if *shutdown.borrow() {
            return End::Close(CloseCode::Away, "server shutting down");
        }
        // Shutdown only ever turns on, so one wait serves the whole connection.
        let mut shutting_down = pin!(shutdown.changed());
        let mut clock = Deadlines::new(Instant::now(), self.settings);
        let timer = tokio::time::sleep_until(clock.next());
        let mut timer = pin!(timer);
        loop {
            let was_waiting = !self.out.is_empty();
            let take_events = self.out.len() < EVENTS_WHEN_BELOW;
            tokio::select! {
                biased;
                _ = &mut shutting_down => {
                    return End::Close(CloseCode::Away, "server shutting down");
                }
                io = io_ready(&mut self.io, &self.out, Some(&mut self.decoder)) => match io {
                    Io::Wrote(n) => {
                        self.wrote(n);
                        clock.wrote(Instant::now());
                    }
                    Io::Read(messages) => {
                        clock.read(Instant::now());
                        let before = self.out.len();
                        for message in messages {
                            if let Some(end) = self.on_message::<P>(message, session).await {
                                return end;
                            }
                        }
                        self.unread_replies += self.out.len().saturating_sub(before);
                        if self.unread_replies > MAX_UNREAD_REPLIES {
                            return End::Close(CloseCode::Again, "too many unread replies");
                        }
                    }
                    Io::Invalid(code, reason) => return End::Close(code, reason),
                    Io::Gone => return End::Gone,
                },
                event = feed.next(), if take_events => {
                    if let Err(end) = self.push_events::<P>(feed, room_frames, event) {
                        return end;
                    }
                }
                () = &mut timer => {
                    match clock.fired(Instant::now(), !self.out.is_empty()) {
                        Fired::Nothing => {}
                        Fired::Ping => self.out.extend_from_slice(&codec::ping()),
                        Fired::Idle => return End::Close(CloseCode::Normal, "idle timeout"),
                        Fired::Stalled => return End::Gone,
                    }
                    timer.as_mut().reset(clock.next());
                }
            }
            if !was_waiting && !self.out.is_empty() && clock.output_waits(Instant::now()) {
                timer.as_mut().reset(clock.next());
            }
            if self.out.is_empty() {
                clock.output_done();
            }
        }
    }

    /// Acts on one client message; `Some` when the connection ends with it.
    async fn on_message<P: Ports>(
        &mut self,
        message: Incoming,
        session: &SessionOf<P>,
    ) -> Option<End> {
        let reply = match message {
            Incoming::Text(text) => Box::pin(handle_text::<P>(&text, session)).await,
            Incoming::Binary => Some(error_frame(
                ErrorCode::InvalidJson,
                "binary frames are not supported; send JSON text",
                None,
            )),
            Incoming::Ping(payload) => {
                self.out.extend_from_slice(&codec::pong(&payload));
                None
            }
            // A pong only proves the client is alive, which the read itself recorded.
            Incoming::Pong => None,
            Incoming::Close(code) => {
                self.out.extend_from_slice(&codec::close_reply(code));
                return Some(End::Closed);
            }
        };
        if let Some(reply) = reply {
            self.push_text(&reply);
        }
        None
    }

    /// Queues a frame of this connection's own (welcome, reply), compressed if negotiated.
    fn push_text(&mut self, json: &str) {
        let frame = self
            .deflate
            .then(|| codec::deflated_text(json.as_bytes()))
            .flatten()
            .unwrap_or_else(|| codec::text(json));
        self.out.extend_from_slice(&frame);
        count_sent(1, frame.len());
    }

    /// Queues one room event and any others already waiting.
    fn push_events<P: Ports>(
        &mut self,
        feed: &mut FeedOf<P>,
        room_frames: &RoomFrames,
        first: Result<Arc<EventEnvelope>, FeedError>,
    ) -> Result<(), End> {
        let mut next = Some(first);
        let (mut frames, mut bytes) = (0, 0);
        let mut failure = None;
        while let Some(event) = next.take() {
            match event {
                Ok(envelope) => {
                    let frame = room_frames.frame(&envelope, frames::event);
                    let frame = frame.bytes(self.deflate);
                    self.out.extend_from_slice(frame);
                    frames += 1;
                    bytes += frame.len();
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            if frames < FRAMES_PER_WRITE {
                // Only what is ready now: a pending future is dropped, which the feed allows.
                next = feed.next().now_or_never();
            }
        }
        if frames > 0 {
            count_sent(frames, bytes);
        }
        match failure {
            None => Ok(()),
            Some(FeedError::FellBehind) => Err(End::Close(
                CloseCode::Again,
                "fell too far behind; reconnect with after",
            )),
            Some(FeedError::Closed) => Err(End::Close(CloseCode::Away, "the room's stream closed")),
            Some(FeedError::Revoked) => Err(End::Close(
                CloseCode::Revoked,
                "no longer a member of the room",
            )),
            Some(FeedError::Store(e)) => {
                tracing::warn!(error = %e, "feed could not read missed messages");
                Err(End::Close(
                    CloseCode::Error,
                    "storage unavailable; reconnect with after",
                ))
            }
        }
    }

    /// Forgets what was written; gives the memory back once nothing waits.
    fn wrote(&mut self, n: usize) {
        if n >= self.out.len() {
            self.out = Vec::new();
            self.unread_replies = 0;
        } else {
            self.out.drain(..n);
        }
    }

    /// Writes what is pending (and the close frame, if the server closes), reading and
    /// discarding meanwhile, then waits briefly for the client's close: closing a socket with
    /// unread input resets it, and the client could lose the close frame.
    async fn finish(&mut self, end: End) {
        if let End::Close(code, reason) = end {
            self.out.extend_from_slice(&codec::close(code, reason));
        }
        if !matches!(end, End::Gone) {
            let settings = self.settings;
            let _ = tokio::time::timeout(settings.write_timeout + LINGER, async {
                // Frames are looked at for the client's close until one cannot be decoded
                // (the refused one, say); from then on bytes are only drained.
                let mut decoding = true;
                let mut client_closed = matches!(end, End::Closed);
                let mut lingering_since = None;
                loop {
                    if self.out.is_empty() {
                        let since = *lingering_since.get_or_insert_with(Instant::now);
                        if client_closed || since.elapsed() >= LINGER {
                            return;
                        }
                    }
                    let decoder = decoding.then_some(&mut self.decoder);
                    let io =
                        tokio::time::timeout(LINGER, io_ready(&mut self.io, &self.out, decoder));
                    match io.await {
                        Ok(Io::Wrote(n)) => self.wrote(n),
                        Ok(Io::Read(messages)) => {
                            client_closed |=
                                messages.iter().any(|m| matches!(m, Incoming::Close(_)));
                        }
                        Ok(Io::Invalid(..)) => decoding = false,
                        Ok(Io::Gone) => return,
                        Err(_) if self.out.is_empty() => return,
                        Err(_) => {}
                    }
                }
            })
            .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}

/// What the connection's one timer stands for: the next ping, the idle timeout (no byte from
/// the client) and the write timeout (output waiting without progress). Reads and writes only
/// note the time; the timer is re-armed when it fires, or earlier when output starts waiting,
/// so busy connections do not reset a timer for every frame.
struct Deadlines {
    settings: WsSettings,
    next_ping: Instant,
    last_read: Instant,
    /// When waiting output last made progress (or started waiting); `None` when none waits.
    waiting_since: Option<Instant>,
    /// Where the timer is set.
    armed: Instant,
}

/// Why the timer fired.
#[derive(Debug, PartialEq, Eq)]
enum Fired {
    /// Early for a deadline that moved: re-armed.
    Nothing,
    Ping,
    Idle,
    Stalled,
}

impl Deadlines {
    fn new(now: Instant, settings: WsSettings) -> Self {
        let mut deadlines = Self {
            settings,
            next_ping: now + settings.ping_interval,
            last_read: now,
            waiting_since: None,
            armed: now,
        };
        deadlines.armed = deadlines.earliest();
        deadlines
    }

    fn earliest(&self) -> Instant {
        let idle = self.last_read + self.settings.idle_timeout;
        let stalled = self
            .waiting_since
            .map(|since| since + self.settings.write_timeout);
        stalled.map_or(idle, |s| s.min(idle)).min(self.next_ping)
    }

    /// The deadline to arm the timer at; remembered as armed.
    fn next(&mut self) -> Instant {
        self.armed = self.earliest();
        self.armed
    }

    fn read(&mut self, now: Instant) {
        self.last_read = now;
    }

    fn wrote(&mut self, now: Instant) {
        if self.waiting_since.is_some() {
            self.waiting_since = Some(now);
        }
    }

    /// Output started waiting at `now`; true when the timer must be re-armed earlier.
    fn output_waits(&mut self, now: Instant) -> bool {
        self.waiting_since = Some(now);
        self.earliest() < self.armed
    }

    fn output_done(&mut self) {
        self.waiting_since = None;
    }

    fn fired(&mut self, now: Instant, waiting: bool) -> Fired {
        if now >= self.last_read + self.settings.idle_timeout {
            return Fired::Idle;
        }
        if waiting
            && self
                .waiting_since
                .is_some_and(|since| now >= since + self.settings.write_timeout)
        {
            return Fired::Stalled;
        }
        if now >= self.next_ping {
            // A late tick pings once and keeps the period from now on.
            self.next_ping = (self.next_ping + self.settings.ping_interval)
                .max(now + self.settings.ping_interval / 2);
            return Fired::Ping;
        }
        Fired::Nothing
    }
}

/// Waits until the socket takes some of `out` or has bytes to read, whichever comes first.
/// Reads go into a buffer that lives only during this poll and are decoded at once (or
/// dropped, without a decoder): a connection waiting for its client holds no read buffer.
async fn io_ready(io: &mut Upgraded, out: &[u8], mut decoder: Option<&mut Decoder>) -> Io {
    poll_fn(|cx| {
        if !out.is_empty() {
            match Pin::new(&mut *io).poll_write(cx, out) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Io::Gone),
                Poll::Ready(Ok(n)) => return Poll::Ready(Io::Wrote(n)),
                Poll::Pending => {}
            }
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut buffer = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *io).poll_read(cx, &mut buffer) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "websocket read failed");
                Poll::Ready(Io::Gone)
            }
            Poll::Ready(Ok(())) if buffer.filled().is_empty() => Poll::Ready(Io::Gone),
            Poll::Ready(Ok(())) => {
                let mut messages = Vec::new();
                let Some(decoder) = decoder.as_deref_mut() else {
                    return Poll::Ready(Io::Read(messages));
                };
                Poll::Ready(match decoder.decode(buffer.filled(), &mut messages) {
                    Ok(()) => Io::Read(messages),
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket frame refused");
                        Io::Invalid(e.close_code(), close_reason(&e))
                    }
                })
            }
        }
    })
    .await
}

fn close_reason(error: &codec::DecodeError) -> &'static str {
    match error {
        codec::DecodeError::TooBig(_) => "message too big",
        codec::DecodeError::Protocol(reason) => reason,
        codec::DecodeError::InvalidUtf8 => "text is not UTF-8",
        codec::DecodeError::Inflate => "compressed message does not inflate",
    }
}

fn count_sent(frames: usize, bytes: usize) {
    metrics::counter!("banter_frames_sent_total").increment(frames as u64);
    metrics::counter!("banter_ws_bytes_sent_total").increment(bytes as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WsSettings {
        WsSettings {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(20),
            max_message_bytes: 1024,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn pings_every_interval_and_times_out_a_silent_client() {
        let start = Instant::now();
        let mut clock = Deadlines::new(start, settings());
        assert_eq!(clock.next(), start + secs(30));
        assert_eq!(clock.fired(start + secs(30), false), Fired::Ping);
        assert_eq!(clock.next(), start + secs(60));
        assert_eq!(clock.fired(start + secs(60), false), Fired::Ping);
        assert_eq!(clock.next(), start + secs(90));
        assert_eq!(clock.fired(start + secs(90), false), Fired::Idle);
    }

    #[test]
    fn a_read_moves_the_idle_deadline_without_rearming_the_timer() {
        let start = Instant::now();
        let mut clock = Deadlines::new(start, settings());
        clock.next();
        clock.fired(start + secs(30), false);
        clock.fired(start + secs(60), false);
        clock.read(start + secs(70));
        assert_eq!(clock.next(), start + secs(90), "the next ping comes first");
        assert_eq!(clock.fired(start + secs(90), false), Fired::Ping);
        assert_eq!(clock.next(), start + secs(120));
        assert_eq!(clock.fired(start + secs(120), false), Fired::Ping);
        assert_eq!(clock.next(), start + secs(150));
        clock.read(start + secs(140));
        assert_eq!(clock.fired(start + secs(150), false), Fired::Ping);
        assert_eq!(clock.next(), start + secs(180));
    }

    #[test]
    fn waiting_output_without_progress_is_a_stall_and_progress_postpones_it() {
        let start = Instant::now();
        let mut clock = Deadlines::new(start, settings());
        clock.next();
        // Output starts waiting at 15 s: its deadline (35 s) is after the armed ping (30 s).
        assert!(!clock.output_waits(start + secs(15)));
        assert_eq!(clock.fired(start + secs(30), true), Fired::Ping);
        assert_eq!(clock.next(), start + secs(35));
        clock.wrote(start + secs(34));
        assert_eq!(clock.fired(start + secs(35), true), Fired::Nothing);
        assert_eq!(clock.next(), start + secs(54));
        assert_eq!(clock.fired(start + secs(54), true), Fired::Stalled);
    }

    #[test]
    fn output_that_waits_before_the_armed_deadline_rearms_the_timer() {
        let start = Instant::now();
        let mut clock = Deadlines::new(
            start,
            WsSettings {
                write_timeout: secs(5),
                ..settings()
            },
        );
        assert_eq!(clock.next(), start + secs(30));
        assert!(clock.output_waits(start + secs(1)));
        assert_eq!(clock.next(), start + secs(6));
        clock.output_done();
        assert_eq!(clock.fired(start + secs(6), false), Fired::Nothing);
        assert_eq!(clock.next(), start + secs(30));
    }
}
