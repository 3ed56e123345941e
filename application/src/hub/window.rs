//! The latest messages of one room, as a hub has delivered them: consecutive seqs ending at the
//! hub's cursor, at most `capacity` of them, and the answers a welcome, a resume or a latest
//! page can take from them without the store.

use std::collections::VecDeque;

use banter_domain::{Message, Rev, Seq};

/// A ring of the latest messages of a room, gapless, ending at `last_seq`, each in its current
/// state as of `last_rev`.
#[derive(Debug)]
pub(crate) struct Window {
    messages: VecDeque<Message>,
    /// Every message up to this one has been delivered by the hub.
    last_seq: Seq,
    /// Every change up to this one has been delivered by the hub (and applied here).
    last_rev: Rev,
    capacity: usize,
}

/// What a window answers for "the latest `count` messages".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LatestPage {
    pub messages: Vec<Message>,
    /// Older messages exist before `messages` (for a count of zero: the room has messages).
    pub has_more: bool,
    pub last_seq: Seq,
    pub last_rev: Rev,
}

impl Window {
    /// A window seeded with the room's latest messages (oldest first, consecutive, ending at
    /// the room's last seq, which is `last_seq`; all of the room when `last_seq` is zero),
    /// read after the room's `last_rev`.
    pub fn seeded(seed: Vec<Message>, last_seq: Seq, last_rev: Rev, capacity: usize) -> Self {
        let mut window = Self {
            messages: VecDeque::with_capacity(capacity.min(seed.len())),
            last_seq,
            last_rev,
            capacity: capacity.max(1),
        };
        let consecutive = seed
            .windows(2)
            .all(|pair| pair[1].seq == pair[0].seq.next())
            && seed.last().is_none_or(|m| m.seq == last_seq);
        if consecutive {
            let skip = seed.len().saturating_sub(window.capacity);
            window.messages.extend(seed.into_iter().skip(skip));
        }
        window
    }

    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    pub fn last_rev(&self) -> Rev {
        self.last_rev
    }

    /// Takes the room's next change: the message, if held, is replaced by its new state.
    pub fn update(&mut self, rev: Rev, message: &Message) {
        self.last_rev = self.last_rev.max(rev);
        let first = self.first_seq();
        if message.seq < first || message.seq > self.last_seq {
            return;
        }
        let index = usize::try_from(message.seq.get() - first.get()).ok();
        if let Some(held) = index.and_then(|i| self.messages.get_mut(i))
            && held.seq == message.seq
        {
            *held = message.clone();
        }
    }

    /// The seq of the oldest message held (`last_seq + 1` when none is).
    pub fn first_seq(&self) -> Seq {
        self.messages
            .front()
            .map_or_else(|| self.last_seq.next(), |m| m.seq)
    }

    /// Whether every message of the room is here.
    pub fn whole_room(&self) -> bool {
        self.first_seq() == Seq::ZERO.next()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Takes the next message of the room. One that does not follow `last_seq` is ignored when
    /// it is old, and restarts the window when it is from beyond a gap (the hub orders its
    /// stream, so neither should happen).
    pub fn push(&mut self, message: &Message) {
        if message.seq <= self.last_seq {
            return;
        }
        if message.seq != self.last_seq.next() {
            self.messages.clear();
        }
        if self.messages.len() == self.capacity {
            self.messages.pop_front();
        }
        self.last_seq = message.seq;
        self.messages.push_back(message.clone());
    }

    /// The latest `count` messages, when the window holds that many or the whole room.
    pub fn latest(&self, count: usize) -> Option<LatestPage> {
        if count == 0 {
            return Some(LatestPage {
                messages: Vec::new(),
                has_more: self.last_seq > Seq::ZERO,
                last_seq: self.last_seq,
                last_rev: self.last_rev,
            });
        }
        if self.messages.len() < count && !self.whole_room() {
            return None;
        }
        let skip = self.messages.len().saturating_sub(count);
        let messages: Vec<Message> = self.messages.iter().skip(skip).cloned().collect();
        let has_more = messages.first().is_some_and(|m| m.seq > Seq::ZERO.next());
        Some(LatestPage {
            messages,
            has_more,
            last_seq: self.last_seq,
            last_rev: self.last_rev,
        })
    }

    /// The messages after `after`, when every one of them is here. `None` when some are
    /// older than the window, or when `after` is beyond what the hub delivered (the store may
    /// know more: a client resuming from another node can be ahead of this one).
    pub fn after(&self, after: Seq) -> Option<Vec<Message>> {
        if after > self.last_seq || after.next() < self.first_seq() {
            return None;
        }
        Some(
            self.messages
                .iter()
                .filter(|m| m.seq > after)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banter_domain::{Content, RoomName, Timestamp, Username};

    fn message(seq: u64) -> Message {
        Message {
            room: RoomName::parse("g").unwrap(),
            seq: Seq::new(seq).unwrap(),
            username: Username::parse("alice").unwrap(),
            content: Some(Content::parse(&format!("m{seq}")).unwrap()),
            timestamp: Timestamp::from_unix_millis(0).unwrap(),
            client_id: None,
            edited_at: None,
        }
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq.get()).collect()
    }

    fn window(range: std::ops::RangeInclusive<u64>, capacity: usize) -> Window {
        let last = Seq::new(*range.end()).unwrap();
        Window::seeded(range.map(message).collect(), last, Rev::ZERO, capacity)
    }

    #[test]
    fn an_empty_room_is_whole() {
        let w = Window::seeded(Vec::new(), Seq::ZERO, Rev::ZERO, 5);
        assert!(w.whole_room());
        let page = w.latest(50).unwrap();
        assert_eq!((page.messages.len(), page.has_more), (0, false));
        assert!(!w.latest(0).unwrap().has_more);
        assert_eq!(w.after(Seq::ZERO), Some(Vec::new()));
    }

    #[test]
    fn keeps_the_latest_capacity_messages() {
        let mut w = window(1..=3, 4);
        for seq in 4..=9 {
            w.push(&message(seq));
        }
        assert_eq!(
            (w.len(), w.first_seq().get(), w.last_seq().get()),
            (4, 6, 9)
        );
        assert!(!w.whole_room());
        w.push(&message(9));
        w.push(&message(2));
        assert_eq!(
            w.last_seq().get(),
            9,
            "old and repeated messages change nothing"
        );
    }

    #[test]
    fn a_seed_larger_than_the_capacity_keeps_its_end() {
        let w = window(1..=10, 3);
        assert_eq!(seqs(&w.latest(3).unwrap().messages), [8, 9, 10]);
        assert!(w.latest(4).is_none());
    }

    #[test]
    fn latest_answers_when_it_holds_enough_or_the_whole_room() {
        let w = window(5..=9, 10);
        let page = w.latest(3).unwrap();
        assert_eq!(seqs(&page.messages), [7, 8, 9]);
        assert!(page.has_more);
        assert!(w.latest(6).is_none(), "seqs 1–4 are only in the store");
        let page = w.latest(0).unwrap();
        assert!(page.messages.is_empty() && page.has_more);

        let whole = window(1..=3, 10);
        let page = whole.latest(50).unwrap();
        assert_eq!(seqs(&page.messages), [1, 2, 3]);
        assert!(!page.has_more);
        assert_eq!(page.last_seq.get(), 3);
    }

    #[test]
    fn after_answers_inside_the_window_only() {
        let w = window(5..=9, 10);
        assert_eq!(
            seqs(&w.after(Seq::new(4).unwrap()).unwrap()),
            [5, 6, 7, 8, 9]
        );
        assert_eq!(seqs(&w.after(Seq::new(7).unwrap()).unwrap()), [8, 9]);
        assert_eq!(w.after(Seq::new(9).unwrap()), Some(Vec::new()));
        assert!(
            w.after(Seq::new(3).unwrap()).is_none(),
            "4 is only in the store"
        );
        assert!(
            w.after(Seq::new(10).unwrap()).is_none(),
            "beyond the hub: ask the store"
        );
    }

    #[test]
    fn changes_replace_held_messages_in_place() {
        let mut w = window(3..=6, 10);
        let mut edited = message(4);
        edited.content = Some(Content::parse("edited").unwrap());
        edited.edited_at = Some(Timestamp::from_unix_millis(9).unwrap());
        w.update(Rev::new(1).unwrap(), &edited);
        let mut deleted = message(6);
        deleted.content = None;
        w.update(Rev::new(2).unwrap(), &deleted);
        // Outside the window: only the rev moves.
        let mut old = message(1);
        old.content = None;
        w.update(Rev::new(3).unwrap(), &old);
        assert_eq!(w.last_rev().get(), 3);
        let page = w.latest(4).unwrap();
        assert_eq!(seqs(&page.messages), [3, 4, 5, 6]);
        assert_eq!(page.messages[1], edited);
        assert_eq!(page.messages[3], deleted);
        assert_eq!(page.messages[0], message(3));
        assert_eq!(w.after(Seq::new(3).unwrap()).unwrap()[0], edited);
    }

    #[test]
    fn a_gap_restarts_the_window() {
        let mut w = window(1..=3, 10);
        w.push(&message(6));
        assert_eq!((w.first_seq().get(), w.last_seq().get()), (6, 6));
        assert!(w.after(Seq::new(3).unwrap()).is_none());
    }

    #[test]
    fn a_seed_with_holes_is_not_trusted() {
        let seed = vec![message(1), message(3)];
        let w = Window::seeded(seed, Seq::new(3).unwrap(), Rev::ZERO, 10);
        assert_eq!(w.len(), 0);
        assert!(w.latest(1).is_none());
        assert_eq!(w.after(Seq::new(3).unwrap()), Some(Vec::new()));
    }
}
