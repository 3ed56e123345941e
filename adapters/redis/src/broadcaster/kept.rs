//! Messages whose `PUBLISH` failed, kept and published in order once Redis answers.
//!
//! Such a message is already stored (the post was answered), but other nodes would only learn
//! of it from the room's next message. It is kept ([`Unsent`], bounded), and messages published
//! while any wait queue behind them, so a room's messages keep their order. One background task
//! publishes the queue, oldest first, when woken (by a new kept message or a readiness check
//! that reached Redis), or at least every [`REDELIVERY_INTERVAL`]. Changes of messages (edits
//! and deletes) are kept the same way. Receivers drop what they already have by seq (by rev for
//! changes), so a `PUBLISH` that timed out but did arrive costs nothing twice.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Publisher;
use crate::RedisAdapterError;

/// How long the redelivery task waits before trying kept messages again when nobody woke it
/// (and after a failed try, so a Redis that is down is not hammered).
const REDELIVERY_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many bytes of unpublished messages are kept (a few thousand messages); the
/// oldest go first. Clients still find them in the store when they resume.
const UNSENT_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// The kept messages and the task that publishes them.
pub(super) struct KeptMessages {
    /// Published in order by the redelivery task alone.
    unsent: std::sync::Mutex<Unsent>,
    /// Wakes the redelivery task.
    wake: Arc<Notify>,
}

impl KeptMessages {
    /// An empty queue, with its redelivery task running until the queue is dropped.
    pub(super) fn start(publisher: Publisher) -> Arc<Self> {
        let kept = Arc::new(Self {
            unsent: std::sync::Mutex::new(Unsent::new(UNSENT_LIMIT_BYTES)),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(redeliver_in_background(
            Arc::downgrade(&kept),
            Arc::clone(&kept.wake),
            publisher,
        ));
        kept
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, Unsent> {
        // Every method leaves the queue consistent, so a panic elsewhere cannot have left it
        // half-changed.
        self.unsent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many messages wait.
    pub(super) fn len(&self) -> usize {
        self.unsent().events.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.unsent().is_empty()
    }

    /// Queues a message for the redelivery task.
    pub(super) fn keep(&self, channel: &str, payload: &[u8]) {
        self.unsent().push_back(channel, payload);
        self.wake();
    }

    /// Asks the redelivery task to try now. It stays the only publisher of kept messages, so
    /// they go out once each and in order.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes the kept messages, oldest first, each removed only once Redis took it. Stops
    /// at the first failure, so nothing newer overtakes what is left.
    async fn redeliver(&self, publisher: &Publisher) -> Result<usize, RedisAdapterError> {
        let mut sent = 0;
        loop {
            let Some((id, channel, payload)) = self.unsent().front() else {
                return Ok(sent);
            };
            publisher.publish(&channel, &payload).await?;
            self.unsent().remove_front(id);
            sent += 1;
        }
    }
}

/// Publishes kept messages whenever woken (or every [`REDELIVERY_INTERVAL`]), until the
/// queue is dropped. Never cancelled mid-message, so none is lost on the way.
async fn redeliver_in_background(
    kept: Weak<KeptMessages>,
    wake: Arc<Notify>,
    publisher: Publisher,
) {
    loop {
        // A lost wake-up costs at most one interval.
        let _ = tokio::time::timeout(REDELIVERY_INTERVAL, wake.notified()).await;
        let Some(kept) = kept.upgrade() else {
            return;
        };
        match kept.redeliver(&publisher).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(sent, "published the messages kept while Redis was away"),
            Err(e) => {
                let waiting = kept.len();
                tracing::debug!(error = %e, waiting, "kept messages not published yet");
                drop(kept);
                tokio::time::sleep(REDELIVERY_INTERVAL).await;
            }
        }
    }
}

/// A kept message: its place in line, channel and payload (shared, so a retry copies nothing).
type Kept = (u64, Arc<str>, Arc<[u8]>);

/// Messages not yet published, oldest first. A message leaves the queue only once Redis took
/// it, so an interrupted retry loses nothing.
struct Unsent {
    events: VecDeque<Kept>,
    bytes: usize,
    limit_bytes: usize,
    next_id: u64,
}

impl Unsent {
    fn new(limit_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            limit_bytes,
            next_id: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Queues a message at the back; drops the oldest ones beyond the limit.
    fn push_back(&mut self, channel: &str, payload: &[u8]) {
        self.bytes += payload.len();
        self.events
            .push_back((self.next_id, Arc::from(channel), Arc::from(payload)));
        self.next_id += 1;
        while self.bytes > self.limit_bytes {
            let Some((_, _, dropped)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= dropped.len();
            metrics::counter!("banter_redis_unsent_dropped_total").increment(1);
        }
        self.report();
    }

    /// The oldest message, left in place.
    fn front(&self) -> Option<Kept> {
        self.events.front().cloned()
    }

    /// Removes the message `id` once it was published, unless the limit dropped it meanwhile.
    fn remove_front(&mut self, id: u64) {
        if self
            .events
            .front()
            .is_some_and(|(front, _, _)| *front == id)
        {
            if let Some((_, _, payload)) = self.events.pop_front() {
                self.bytes -= payload.len();
            }
            self.report();
        }
    }

    fn report(&self) {
        metrics::gauge!("banter_redis_unsent_messages").set(self.events.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::Unsent;

    fn payloads(unsent: &Unsent) -> Vec<&[u8]> {
        unsent.events.iter().map(|(_, _, p)| &**p).collect()
    }

    #[test]
    fn a_message_leaves_the_queue_only_once_published() {
        let mut unsent = Unsent::new(100);
        unsent.push_back("c", b"one");
        unsent.push_back("c", b"two");
        let (id, _, first) = unsent.front().unwrap();
        assert_eq!(&*first, b"one");
        // A retry that fails (or is interrupted) leaves everything in place.
        assert_eq!(payloads(&unsent), [b"one".as_slice(), b"two"]);
        unsent.remove_front(id);
        assert_eq!(payloads(&unsent), [b"two".as_slice()]);
        assert_eq!(unsent.bytes, 3);
    }

    #[test]
    fn beyond_the_limit_the_oldest_are_dropped() {
        let mut unsent = Unsent::new(10);
        unsent.push_back("c", b"aaaa");
        let (in_flight, _, _) = unsent.front().unwrap();
        unsent.push_back("c", b"bbbb");
        unsent.push_back("c", b"cccc");
        assert_eq!(payloads(&unsent), [b"bbbb".as_slice(), b"cccc"]);
        assert_eq!(unsent.bytes, 8);
        // The message dropped while it was being published does not take another with it.
        unsent.remove_front(in_flight);
        assert_eq!(payloads(&unsent), [b"bbbb".as_slice(), b"cccc"]);
        while let Some((id, _, _)) = unsent.front() {
            unsent.remove_front(id);
        }
        assert_eq!(unsent.bytes, 0);
        assert!(unsent.is_empty());
    }
}
