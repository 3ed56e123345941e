//! Putting one room's messages in seq order (and its changes in rev order) from a starting
//! point on: what arrives early waits for the gap before it to close, what was seen already is
//! dropped.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use banter_domain::{EventEnvelope, Rev, Seq};

/// A gapless counter a sequencer orders by: a message's seq, or a change's rev.
pub(crate) trait Position: Copy + Ord + Debug + std::fmt::Display {
    fn next(self) -> Self;
    /// The position right before this one (this one for the lowest).
    fn previous(self) -> Self;
}

impl Position for Seq {
    fn next(self) -> Self {
        Seq::next(self)
    }

    fn previous(self) -> Self {
        Seq::new(self.get().saturating_sub(1)).unwrap_or(self)
    }
}

impl Position for Rev {
    fn next(self) -> Self {
        Rev::next(self)
    }

    fn previous(self) -> Self {
        Rev::new(self.get().saturating_sub(1)).unwrap_or(self)
    }
}

/// Orders one room's messages by seq (or its changes by rev) from a starting point on.
#[derive(Debug)]
pub(crate) struct Sequencer<P = Seq> {
    cursor: P,
    pending: BTreeMap<P, Arc<EventEnvelope>>,
}

impl<P: Position> Sequencer<P> {
    /// Starts after `cursor`: the next message to deliver is `cursor + 1`.
    pub fn new(cursor: P) -> Self {
        Self {
            cursor,
            pending: BTreeMap::new(),
        }
    }

    /// The last seq delivered.
    pub fn cursor(&self) -> P {
        self.cursor
    }

    /// Offers a message; returns it when it is the next one. A message at or below the cursor
    /// was delivered already and is dropped; a later one waits for the gap to close.
    pub fn offer(&mut self, seq: P, message: Arc<EventEnvelope>) -> Option<Arc<EventEnvelope>> {
        if seq <= self.cursor {
            None
        } else if seq == self.cursor.next() {
            self.cursor = seq;
            Some(message)
        } else {
            self.pending.insert(seq, message);
            None
        }
    }

    /// The next held-back message, once its turn has come.
    pub fn pop_ready(&mut self) -> Option<Arc<EventEnvelope>> {
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq <= self.cursor {
                entry.remove();
            } else if seq == self.cursor.next() {
                self.cursor = seq;
                return Some(entry.remove());
            } else {
                return None;
            }
        }
        None
    }

    /// Whether later messages wait for a missing one.
    pub fn has_gap(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Gives up on a gap nobody can fill: continue with the first held-back message.
    pub fn skip_gap(&mut self) -> Option<(P, P)> {
        let first = *self.pending.keys().next()?;
        let skipped = (self.cursor.next(), first);
        self.cursor = first.previous();
        Some(skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banter_domain::{Content, Message, RoomEvent, RoomName, Timestamp, Username};

    fn envelope(seq: u64) -> (Seq, Arc<EventEnvelope>) {
        let seq = Seq::new(seq).unwrap();
        let message = Message {
            room: RoomName::parse("g").unwrap(),
            seq,
            username: Username::parse("alice").unwrap(),
            content: Some(Content::parse("hi").unwrap()),
            timestamp: Timestamp::from_unix_millis(0).unwrap(),
            client_id: None,
            edited_at: None,
        };
        (seq, EventEnvelope::new(RoomEvent::MessagePosted(message)))
    }

    fn seq_of(envelope: &EventEnvelope) -> u64 {
        match envelope.event() {
            RoomEvent::MessagePosted(m) => m.seq.get(),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn delivers_in_order_and_drops_what_was_seen() {
        let mut sequencer: Sequencer = Sequencer::new(Seq::new(5).unwrap());
        let (s, e) = envelope(4);
        assert!(sequencer.offer(s, e).is_none(), "covered by the snapshot");
        let (s, e) = envelope(5);
        assert!(sequencer.offer(s, e).is_none());
        let (s, e) = envelope(6);
        assert_eq!(sequencer.offer(s, e).map(|e| seq_of(&e)), Some(6));
        let (s, e) = envelope(6);
        assert!(sequencer.offer(s, e).is_none(), "no duplicates");
        assert!(!sequencer.has_gap());
    }

    #[test]
    fn holds_early_messages_until_the_gap_closes() {
        let mut sequencer: Sequencer = Sequencer::new(Seq::ZERO);
        for seq in [3, 2, 5] {
            let (s, e) = envelope(seq);
            assert!(sequencer.offer(s, e).is_none());
        }
        assert!(sequencer.has_gap());
        assert!(sequencer.pop_ready().is_none());
        let (s, e) = envelope(1);
        assert_eq!(sequencer.offer(s, e).map(|e| seq_of(&e)), Some(1));
        assert_eq!(sequencer.pop_ready().map(|e| seq_of(&e)), Some(2));
        assert_eq!(sequencer.pop_ready().map(|e| seq_of(&e)), Some(3));
        assert!(sequencer.pop_ready().is_none(), "4 is still missing");
        assert_eq!(sequencer.cursor().get(), 3);
        assert_eq!(
            sequencer.skip_gap(),
            Some((Seq::new(4).unwrap(), Seq::new(5).unwrap()))
        );
        assert_eq!(sequencer.pop_ready().map(|e| seq_of(&e)), Some(5));
        assert!(!sequencer.has_gap());
    }
}
