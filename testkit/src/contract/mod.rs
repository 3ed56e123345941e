//! The ports' contracts, written once and run against every implementation of each port.
//!
//! A contract case is a generic async function over a fixture: [`StoreFixture`] for the
//! message store, [`Cluster`] for the broadcaster and the presence registry (several nodes on
//! one broker). Each adapter's tests, and the application's fakes, instantiate the cases with
//! [`store_contract!`](crate::store_contract), [`broadcaster_contract!`](crate::broadcaster_contract),
//! [`presence_contract!`](crate::presence_contract) and
//! [`announcing_presence_contract!`](crate::announcing_presence_contract): one `#[tokio::test]`
//! per case in a module named after the backend, so a failure names both. A fake that drifts
//! from the real adapters fails the same cases they pass.

pub mod access;
pub mod broadcaster;
pub mod presence;
pub mod reading;
pub mod search;
pub mod store;

use std::future::Future;
use std::time::Duration;

use banter_domain::ports::{EventBroadcaster, EventSubscription, PresenceRegistry};
use banter_domain::{RoomEvent, RoomName, Username};

/// What a contract case runs on; `finish` cleans up after a case that passed.
pub trait Fixture: Sized {
    /// Releases what the fixture holds (a test database, say).
    fn finish(self) -> impl Future<Output = ()> {
        async {}
    }
}

/// One database, seen by as many stores as a case opens: two open stores stand for two
/// processes sharing it, and a store opened after another was closed must find its data.
pub trait StoreFixture: Fixture {
    type Store: banter_domain::ports::MessageStore;

    /// A store on this fixture's data, ready to use.
    fn open(&self) -> impl Future<Output = Self::Store> + Send;

    /// Stops `store` as a clean shutdown would: what it acknowledged stays.
    fn close(&self, store: Self::Store) -> impl Future<Output = ()> + Send;

    /// Lets `store` bring its search index up to date, if it keeps one apart (the search
    /// cases search before and after this, and must get the same answers).
    fn index_search(&self, store: &Self::Store) -> impl Future<Output = ()> + Send {
        let _ = store;
        async {}
    }
}

/// One broker seen from several nodes: each `node` is another process's broadcaster and
/// presence registry on it (for an in-process broker, the same ones again).
pub trait Cluster: Fixture {
    type Broadcaster: EventBroadcaster;
    type Presence: PresenceRegistry;

    fn node(&self) -> impl Future<Output = (Self::Broadcaster, Self::Presence)> + Send;

    /// How many events a subscriber's queue holds before it lags.
    fn queue_capacity(&self) -> usize;
}

/// How long a case waits for an event that must come.
pub const PROMPTLY: Duration = Duration::from_secs(5);

pub fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

pub fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

/// A typing event of `user{n}`: cheap, distinct events to count and order.
pub fn typing(room_name: &str, n: usize) -> RoomEvent {
    RoomEvent::Typing {
        room: room(room_name),
        username: user(&format!("user{n}")),
        is_typing: true,
    }
}

/// The subscription's next event, which must come within [`PROMPTLY`].
pub async fn next<S: EventSubscription>(subscription: &mut S) -> RoomEvent {
    tokio::time::timeout(PROMPTLY, subscription.next())
        .await
        .expect("an event within 5 s")
        .expect("an event, not an error")
        .event()
        .clone()
}

/// Panics if the subscription hands out anything within 200 ms.
pub async fn quiet<S: EventSubscription>(subscription: &mut S) {
    if let Ok(result) = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
    {
        panic!("expected nothing, got {result:?}");
    }
}

/// One `#[tokio::test]` per case of a suite, in a module named after the backend. The
/// fixture expression is evaluated afresh by each test and yields `Option<fixture>`: `None`
/// skips (a service that is absent and not required).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($suite:ident, $backend:ident, $fixture:expr, #[$runtime:meta], [$($case:ident),* $(,)?]) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[$runtime]
                async fn $case() {
                    let Some(fixture) = $fixture.await else {
                        return;
                    };
                    $crate::contract::$suite::$case(&fixture).await;
                    $crate::contract::Fixture::finish(fixture).await;
                }
            )*
        }
    };
}

/// The message store contract: `store_contract!(sqlite, async { Some(fixture) })`.
#[macro_export]
macro_rules! store_contract {
    ($backend:ident, $fixture:expr) => {
        $crate::__contract_tests!(
            store,
            $backend,
            $fixture,
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
            [
                seqs_are_gapless_with_50_concurrent_posters_in_5_rooms,
                concurrent_resends_store_one_message,
                resends_and_repeats_among_concurrent_posts_store_all_the_others,
                history_pages_latest_before_and_after,
                paging_either_way_yields_every_message_once,
                content_and_names_round_trip_byte_exact,
                reopening_keeps_everything,
                rooms_are_listed_by_name_in_pages,
                readiness_answers,
                concurrent_reads_and_writes_agree,
                edits_and_deletes_follow_the_rules,
                changes_are_listed_once_each_and_every_rev_is_kept,
                revs_are_gapless_with_concurrent_changes_from_two_processes,
                read_positions_move_forward_only_and_stop_at_the_last_seq,
                racing_read_reports_from_two_processes_keep_the_highest,
                a_users_rooms_come_newest_activity_first_with_unread_counts,
                unread_counts_stop_at_1000,
                private_rooms_are_created_once_and_keep_their_members,
                racing_creations_of_one_room_make_one_creator,
                search_follows_the_query_rules_before_and_after_indexing,
                search_pages_through_many_matches_once_each,
                a_phrase_is_found_however_often_its_words_occur,
            ]
        );
    };
}

/// The broadcaster contract: `broadcaster_contract!(redis, async { Some(cluster) })`.
#[macro_export]
macro_rules! broadcaster_contract {
    ($backend:ident, $fixture:expr) => {
        $crate::__contract_tests!(
            broadcaster,
            $backend,
            $fixture,
            #[tokio::test],
            [
                events_reach_every_node_in_order,
                events_before_subscribing_are_not_received,
                a_room_can_be_left_and_followed_again,
                a_slow_subscriber_lags_alone,
                changes_reach_every_node_in_order_among_other_events,
                read_positions_reach_every_node_with_their_origin,
                ends_of_access_reach_every_node,
            ]
        );
    };
}

/// The presence contract: `presence_contract!(redis, async { Some(cluster) })`.
#[macro_export]
macro_rules! presence_contract {
    ($backend:ident, $fixture:expr) => {
        $crate::__contract_tests!(
            presence,
            $backend,
            $fixture,
            #[tokio::test],
            [
                presence_counts_people_across_nodes,
                online_lists_are_sorted_and_paged,
                typists_are_listed_on_every_node,
            ]
        );
    };
}

/// What a registry with [`PresenceRegistry::ANNOUNCES_CHANGES`] adds to the presence
/// contract: it tells the room of joins and leaves itself, in the order it decided them.
#[macro_export]
macro_rules! announcing_presence_contract {
    ($backend:ident, $fixture:expr) => {
        $crate::__contract_tests!(
            presence,
            $backend,
            $fixture,
            #[tokio::test],
            [joins_and_leaves_are_announced_by_the_registry]
        );
    };
}
