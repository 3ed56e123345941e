//! What one node knows of its own presence, as plain state: no Redis in it.
//!
//! [`crate::RedisPresence`] books here the outcome of every connect, disconnect, heartbeat and
//! typing update, and asks it what to send Redis again: the node's connections per (room,
//! user), the changes whose outcome it never heard, whether Redis may have forgotten the node,
//! and whether Redis failed so recently that typing updates should not wait for it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use banter_domain::{RoomName, Username};

use crate::RedisConfig;

/// A user in a room.
pub(crate) type Key = (RoomName, Username);

/// How long typing updates are refused at once after Redis failed. Longer than the heartbeat
/// interval, so that while Redis is away the heartbeats alone keep finding out, and posts (a
/// post ends its poster's typing) never wait out a command timeout for a typing list.
pub(crate) const TYPING_PAUSE_AFTER_FAILURE: Duration =
    RedisConfig::HEARTBEAT_INTERVAL.saturating_add(Duration::from_secs(1));

/// This node's own connections and what Redis may not know of them.
#[derive(Debug, Default)]
pub(crate) struct NodeBook {
    counts: HashMap<Key, u32>,
    /// Keys whose last change may not have reached Redis.
    unsynced: HashSet<Key>,
    /// Redis may have forgotten this node: send every count again, until that succeeds.
    forgotten: bool,
    /// The node left the cluster (shutting down): it takes no more connections.
    left: bool,
    /// When a heartbeat or typing update last failed; cleared by the next that succeeds.
    failed_at: Option<Instant>,
}

/// What a heartbeat that reached Redis calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resync {
    /// Redis knows all this node's counts.
    Nothing,
    /// Send the counts whose last change may not have arrived.
    Unsynced,
    /// Redis may have forgotten the node: send every count.
    Everything,
}

/// Counts taken out to be sent as absolute values; handed back with the outcome.
#[derive(Debug)]
#[must_use = "hand it back to `resend_finished`, or the unsynced keys are lost"]
pub(crate) struct Resend {
    entries: Vec<(Key, u32)>,
    everything: bool,
    unsynced: HashSet<Key>,
}

impl Resend {
    /// (room, user) → connections of this node; zero for a user whose last connection closed.
    pub(crate) fn entries(&self) -> &[(Key, u32)] {
        &self.entries
    }

    pub(crate) fn is_everything(&self) -> bool {
        self.everything
    }
}

impl NodeBook {
    /// Whether the node left the cluster and takes no more connections.
    pub(crate) fn has_left(&self) -> bool {
        self.left
    }

    /// A connect Redis answered; `node_registered` when the answer says it had to register the
    /// node again (Redis restarted, or swept it), so the node's other connections follow.
    pub(crate) fn connect_heard(&mut self, key: Key, node_registered: bool) {
        *self.counts.entry(key).or_insert(0) += 1;
        self.forgotten |= node_registered;
    }

    /// A connect whose outcome never came: the connection is refused, yet Redis may have
    /// counted it, so the key's count (without it) is sent again.
    pub(crate) fn connect_unheard(&mut self, key: Key) {
        self.unsynced.insert(key);
    }

    /// A connection closed; unless Redis `heard` it, its count is sent again: a connection
    /// that closed while Redis was away must not stay online forever.
    pub(crate) fn disconnected(&mut self, key: Key, heard: bool) {
        if let Some(count) = self.counts.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&key);
            }
        }
        if !heard {
            self.unsynced.insert(key);
        }
    }

    /// A heartbeat got no answer: whether Redis still knows the node is unknown now, and counts
    /// are absolute, so all of them go again.
    pub(crate) fn heartbeat_failed(&mut self, now: Instant) {
        self.forgotten = true;
        self.failed_at = Some(now);
    }

    /// A heartbeat reached Redis, which did or did not know the node.
    pub(crate) fn heartbeat_answered(&mut self, node_known: bool) -> Resync {
        self.failed_at = None;
        self.forgotten |= !node_known;
        if self.forgotten {
            Resync::Everything
        } else if self.unsynced.is_empty() {
            Resync::Nothing
        } else {
            Resync::Unsynced
        }
    }

    /// Takes out the counts to send: the unsynced ones, and with `everything` all the others.
    pub(crate) fn take_resend(&mut self, everything: bool) -> Resend {
        let unsynced = std::mem::take(&mut self.unsynced);
        let mut entries: Vec<_> = unsynced
            .iter()
            .map(|key| (key.clone(), self.counts.get(key).copied().unwrap_or(0)))
            .collect();
        if everything {
            entries.extend(
                self.counts
                    .iter()
                    .filter(|(key, _)| !unsynced.contains(*key))
                    .map(|(key, count)| (key.clone(), *count)),
            );
        }
        Resend {
            entries,
            everything,
            unsynced,
        }
    }

    /// Books whether the counts of `resend` reached Redis; those that did not go again at the
    /// next heartbeat.
    pub(crate) fn resend_finished(&mut self, resend: Resend, sent: bool) {
        if !sent {
            self.unsynced.extend(resend.unsynced);
        } else if resend.everything {
            self.forgotten = false;
        }
    }

    /// The node removed itself from Redis with all its connections.
    pub(crate) fn left_cluster(&mut self) {
        self.counts.clear();
        self.unsynced.clear();
        self.left = true;
    }

    /// Whether typing updates are refused at once because Redis failed moments ago.
    pub(crate) fn typing_paused(&self, now: Instant) -> bool {
        self.failed_at
            .is_some_and(|at| now.saturating_duration_since(at) < TYPING_PAUSE_AFTER_FAILURE)
    }

    /// Books a typing update's outcome: a failure pauses the next ones.
    pub(crate) fn typing_answered(&mut self, ok: bool, now: Instant) {
        self.failed_at = (!ok).then_some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str, user: &str) -> Key {
        (
            RoomName::parse(room).unwrap(),
            Username::parse(user).unwrap(),
        )
    }

    fn sorted(resend: &Resend) -> Vec<(Key, u32)> {
        let mut entries = resend.entries().to_vec();
        entries.sort();
        entries
    }

    #[test]
    fn nothing_is_sent_again_while_redis_hears_everything() {
        let mut book = NodeBook::default();
        book.connect_heard(key("g", "ann"), false);
        book.connect_heard(key("g", "ann"), false);
        book.disconnected(key("g", "ann"), true);
        assert_eq!(book.heartbeat_answered(true), Resync::Nothing);
        let resend = book.take_resend(false);
        assert!(resend.entries().is_empty());
        book.resend_finished(resend, true);
    }

    #[test]
    fn an_unheard_change_is_sent_again_as_the_absolute_count() {
        let mut book = NodeBook::default();
        book.connect_heard(key("g", "ann"), false);
        book.connect_heard(key("g", "ann"), false);
        book.disconnected(key("g", "ann"), false);
        book.connect_unheard(key("g", "bob"));
        book.connect_heard(key("h", "cat"), false);
        assert_eq!(book.heartbeat_answered(true), Resync::Unsynced);
        let resend = book.take_resend(false);
        // The refused connection of bob counts zero; cat's heard connect is not sent.
        assert_eq!(
            sorted(&resend),
            [(key("g", "ann"), 1), (key("g", "bob"), 0)]
        );
        book.resend_finished(resend, true);
        assert_eq!(book.heartbeat_answered(true), Resync::Nothing);
    }

    #[test]
    fn a_last_connection_closed_unheard_is_sent_as_zero() {
        let mut book = NodeBook::default();
        book.connect_heard(key("g", "ann"), false);
        book.disconnected(key("g", "ann"), false);
        let resend = book.take_resend(false);
        assert_eq!(sorted(&resend), [(key("g", "ann"), 0)]);
        book.resend_finished(resend, true);
        // Once Redis has it, the zero is not kept around.
        assert!(book.take_resend(true).entries().is_empty());
    }

    #[test]
    fn a_resend_that_failed_goes_again() {
        let mut book = NodeBook::default();
        book.connect_heard(key("g", "ann"), false);
        book.disconnected(key("g", "ann"), false);
        let resend = book.take_resend(false);
        book.resend_finished(resend, false);
        assert_eq!(book.heartbeat_answered(true), Resync::Unsynced);
        assert_eq!(sorted(&book.take_resend(false)), [(key("g", "ann"), 0)]);
    }

    #[test]
    fn a_forgotten_node_sends_everything_until_it_succeeds() {
        let mut book = NodeBook::default();
        book.connect_heard(key("g", "ann"), false);
        book.connect_heard(key("h", "bob"), false);
        book.disconnected(key("h", "bob"), false);
        assert_eq!(book.heartbeat_answered(false), Resync::Everything);
        let resend = book.take_resend(true);
        assert!(resend.is_everything());
        assert_eq!(
            sorted(&resend),
            [(key("g", "ann"), 1), (key("h", "bob"), 0)]
        );
        book.resend_finished(resend, false);
        // Redis knows the node again (the heartbeat registered it), but not its connections.
        assert_eq!(book.heartbeat_answered(true), Resync::Everything);
        let resend = book.take_resend(true);
        book.resend_finished(resend, true);
        assert_eq!(book.heartbeat_answered(true), Resync::Nothing);
    }

    #[test]
    fn a_connect_that_registered_the_node_again_brings_the_others_back() {
        let mut book = NodeBook::default();
        book.connect_heard(key("g", "ann"), false);
        book.connect_heard(key("g", "bob"), true);
        assert_eq!(book.heartbeat_answered(true), Resync::Everything);
        assert_eq!(
            sorted(&book.take_resend(true)),
            [(key("g", "ann"), 1), (key("g", "bob"), 1)]
        );
    }

    #[test]
    fn a_failed_heartbeat_sends_everything_and_pauses_typing_for_a_while() {
        let mut book = NodeBook::default();
        let t0 = Instant::now();
        assert!(!book.typing_paused(t0));
        book.heartbeat_failed(t0);
        assert!(book.typing_paused(t0 + Duration::from_secs(1)));
        assert!(!book.typing_paused(t0 + TYPING_PAUSE_AFTER_FAILURE));
        assert_eq!(book.heartbeat_answered(true), Resync::Everything);
        assert!(
            !book.typing_paused(t0 + Duration::from_secs(1)),
            "an answered heartbeat ends the pause"
        );
    }

    #[test]
    fn a_failed_typing_update_pauses_the_next_and_a_good_one_ends_it() {
        let mut book = NodeBook::default();
        let t0 = Instant::now();
        book.typing_answered(false, t0);
        assert!(book.typing_paused(t0 + Duration::from_millis(10)));
        book.typing_answered(true, t0);
        assert!(!book.typing_paused(t0 + Duration::from_millis(10)));
    }

    #[test]
    fn a_node_that_left_refuses_connections_and_forgets_its_counts() {
        let mut book = NodeBook::default();
        book.connect_heard(key("g", "ann"), false);
        book.connect_unheard(key("g", "bob"));
        assert!(!book.has_left());
        book.left_cluster();
        assert!(book.has_left());
        assert!(book.take_resend(true).entries().is_empty());
    }
}
