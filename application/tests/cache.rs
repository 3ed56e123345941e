//! The recent-history cache against fake ports: what it answers without the store (counted by
//! the fake store's reads), that joins racing posts still see every message once, the
//! window's edges, the linger, and that `0` leaves every read to the store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod fakes;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use banter_application::{
    Chat, ChatSettings, FeedError, HistoryCache, HistoryCacheStats, Joined, PostDraft, Start,
};
use banter_domain::{
    Content, EventEnvelope, HistoryQuery, NewMessage, PageLimit, RoomEvent, RoomName, Seq, Username,
};
use fakes::{FakeBroadcaster, FakeClock, FakePresence, FakeStore};

type TestChat = Chat<FakeStore, FakeBroadcaster, FakePresence, FakeClock>;
type TestJoined = Joined<FakeStore, FakeBroadcaster, FakePresence, FakeClock>;

struct World {
    chat: TestChat,
    store: FakeStore,
    broadcaster: FakeBroadcaster,
    clock: FakeClock,
}

/// A chat whose cache keeps `messages` per room, with its hubs running.
fn world(messages: usize) -> World {
    let clock = FakeClock::default();
    let store = FakeStore::new(clock.clone());
    let broadcaster = FakeBroadcaster::default();
    let settings = ChatSettings {
        rate_limit: None,
        history_cache: HistoryCache {
            messages,
            ..HistoryCache::default()
        },
        ..ChatSettings::default()
    };
    let chat = Chat::new(
        store.clone(),
        broadcaster.clone(),
        FakePresence::default(),
        clock.clone(),
        settings,
    );
    tokio::spawn(chat.run_history_cache(|pump| {
        tokio::spawn(pump);
    }));
    World {
        chat,
        store,
        broadcaster,
        clock,
    }
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

fn seq(n: u64) -> Seq {
    Seq::new(n).unwrap()
}

fn seqs(messages: &[banter_domain::Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq.get()).collect()
}

impl World {
    async fn join(&self, u: &str, start: Start) -> TestJoined {
        self.chat
            .join(room("general"), user(u), start)
            .await
            .unwrap()
    }

    async fn post(&self, u: &str, text: &str) -> u64 {
        let appended = self
            .chat
            .post(&room("general"), &user(u), PostDraft::new(text, None))
            .await
            .unwrap();
        appended.into_message().seq.get()
    }

    /// Stores without publishing, as before this node was up.
    fn stored_earlier(&self, count: usize) {
        for i in 0..count {
            self.store.insert(NewMessage {
                room: room("general"),
                username: user("old"),
                content: Content::parse(&format!("old {i}")).unwrap(),
                client_id: None,
            });
        }
    }

    async fn latest(&self, limit: u64) -> (Vec<u64>, bool) {
        let limit = PageLimit::history(limit).unwrap();
        let page = self
            .chat
            .history(&room("general"), HistoryQuery::Latest { limit })
            .await
            .unwrap();
        (seqs(&page.messages), page.has_more)
    }

    fn reads(&self) -> usize {
        self.store.history_reads.load(Ordering::SeqCst)
    }

    fn stats(&self) -> (u64, u64) {
        let HistoryCacheStats { hits, misses, .. } = self.chat.history_cache_stats();
        (hits, misses)
    }
}

/// The next message's seq on a feed, skipping presence and typing.
async fn next_seq(joined: &mut TestJoined) -> u64 {
    loop {
        let envelope: Arc<EventEnvelope> =
            tokio::time::timeout(Duration::from_secs(10), joined.feed.next())
                .await
                .expect("an event should arrive")
                .expect("the feed should not fail");
        if let RoomEvent::MessagePosted(m) = envelope.event() {
            return m.seq.get();
        }
    }
}

async fn leave(joined: TestJoined) {
    let Joined { feed, session, .. } = joined;
    drop(feed);
    session.leave().await;
}

#[tokio::test]
async fn a_warm_room_answers_welcomes_and_latest_pages_from_memory() {
    let w = world(200);
    let mut alice = w.join("alice", Start::DEFAULT).await;
    assert_eq!(
        (w.reads(), w.stats()),
        (1, (0, 1)),
        "opening the hub reads once"
    );
    for n in 1..=3 {
        assert_eq!(w.post("alice", &format!("m{n}")).await, n);
        assert_eq!(next_seq(&mut alice).await, n, "through the hub, in order");
    }
    let bob = w.join("bob", Start::Latest { history: 50 }).await;
    assert_eq!(seqs(&bob.welcome.messages), [1, 2, 3]);
    assert!(!bob.welcome.has_more);
    assert_eq!(bob.welcome.last_seq, seq(3));
    let zed = w.join("zed", Start::Latest { history: 0 }).await;
    assert!(zed.welcome.messages.is_empty() && zed.welcome.has_more);
    assert_eq!(w.latest(2).await, (vec![2, 3], true));
    assert_eq!(w.latest(50).await, (vec![1, 2, 3], false));
    assert_eq!(w.reads(), 1, "no store read after the first");
    assert_eq!(w.stats(), (4, 1));
}

#[tokio::test]
async fn a_resume_inside_the_window_is_answered_from_memory_and_one_beyond_it_from_the_store() {
    let w = world(5);
    w.stored_earlier(10);
    let mut host = w.join("host", Start::Latest { history: 3 }).await;
    assert_eq!(seqs(&host.welcome.messages), [8, 9, 10]);
    assert!(host.welcome.has_more);
    let reads = w.reads();
    let mut near = w.join("near", Start::After(seq(7))).await;
    assert!(near.welcome.messages.is_empty() && !near.welcome.has_more);
    assert_eq!(near.welcome.last_seq, seq(10));
    for expected in 8..=10 {
        assert_eq!(next_seq(&mut near).await, expected);
    }
    assert_eq!(
        (w.reads(), w.stats()),
        (reads, (1, 1)),
        "seqs 6–10 are in memory"
    );

    let mut far = w.join("far", Start::After(seq(3))).await;
    for expected in 4..=10 {
        assert_eq!(next_seq(&mut far).await, expected);
    }
    assert!(w.reads() > reads, "seqs 4 and 5 only the store has");
    assert_eq!(w.stats(), (1, 2));
    // Six messages asked for; five kept: the store answers.
    w.join("six", Start::Latest { history: 6 }).await;
    assert_eq!(w.stats(), (1, 3));

    assert_eq!(w.post("host", "live").await, 11);
    for feed in [&mut host, &mut near, &mut far] {
        assert_eq!(next_seq(feed).await, 11);
    }
}

#[tokio::test]
async fn a_resume_ahead_of_the_hub_asks_the_store() {
    // A client that saw a message through another node may be ahead of this node's hub; the
    // store, not the hub, says where the room ends.
    let w = world(200);
    let _host = w.join("host", Start::DEFAULT).await;
    w.stored_earlier(2);
    let ahead = w.join("ahead", Start::After(seq(2))).await;
    assert_eq!(ahead.welcome.last_seq, seq(2));
    assert_eq!(w.stats(), (0, 2));
}

#[tokio::test]
async fn with_the_cache_off_every_read_goes_to_the_store() {
    let w = world(0);
    let mut alice = w.join("alice", Start::DEFAULT).await;
    w.post("alice", "one").await;
    assert_eq!(next_seq(&mut alice).await, 1);
    w.join("bob", Start::DEFAULT).await;
    w.join("carol", Start::After(Seq::ZERO)).await;
    assert_eq!(w.latest(50).await, (vec![1], false));
    assert_eq!(w.reads(), 4);
    let stats = w.chat.history_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.rooms), (0, 4, 0));
}

#[tokio::test]
async fn a_latest_page_never_misses_a_post_this_node_answered() {
    let w = world(200);
    let _alice = w.join("alice", Start::DEFAULT).await;
    // The broker loses the publication: the hub never hears of seq 1, but its poster was told
    // it is stored, so a latest page must show it.
    w.broadcaster.swallow_next(1);
    w.post("alice", "lost on the way").await;
    assert_eq!(w.latest(50).await, (vec![1], false));
    assert_eq!(w.stats(), (0, 2));
}

#[tokio::test]
async fn a_post_through_this_node_opens_a_hub_for_its_room() {
    let w = world(200);
    w.post("bot", "hello").await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while w.chat.history_cache_stats().rooms == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a hub opens beside the post");
    assert_eq!(w.latest(10).await, (vec![1], false));
    assert_eq!(w.stats(), (1, 0));
}

#[tokio::test]
async fn a_connection_attaching_is_not_told_what_happened_before_it_joined() {
    let w = world(200);
    let mut alice = w.join("alice", Start::DEFAULT).await;
    // Bob's join is published; carol joins before the hub's pump had a turn to pass it on.
    let _bob = w.join("bob", Start::DEFAULT).await;
    let mut carol = w.join("carol", Start::DEFAULT).await;
    assert_eq!(carol.welcome.online_count, 3);
    assert!(matches!(
        alice.feed.next().await.unwrap().event(),
        RoomEvent::Presence { username, .. } if username.as_str() == "bob"
    ));
    let quiet = tokio::time::timeout(Duration::from_millis(50), carol.feed.next()).await;
    assert!(
        quiet.is_err(),
        "bob's join is in carol's welcome, not her feed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_posts_see_every_message_exactly_once() {
    const POSTS: u64 = 400;
    const JOINERS: usize = 40;
    let w = world(100);
    let _host = w.join("host", Start::DEFAULT).await;
    let mut posters = Vec::new();
    for p in 0..2 {
        let chat = w.chat.clone();
        posters.push(tokio::spawn(async move {
            for n in 0..POSTS / 2 {
                let draft = PostDraft::new(format!("{p}:{n}"), None);
                chat.post(&room("general"), &user("poster"), draft)
                    .await
                    .unwrap();
                // Spread over the joins (the timer ticks in milliseconds).
                if n % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    let mut joiners = Vec::new();
    for j in 0..JOINERS {
        let chat = w.chat.clone();
        joiners.push(tokio::spawn(async move {
            let start = match j % 3 {
                0 => Start::After(Seq::ZERO),
                1 => Start::Latest { history: 0 },
                _ => Start::Latest { history: 50 },
            };
            let mut joined = chat
                .join(room("general"), user(&format!("j{j}")), start)
                .await
                .unwrap();
            let welcome = &joined.welcome;
            let mut seen = seqs(&welcome.messages);
            let from = match start {
                Start::After(after) | Start::Resume { after, .. } => after.get() + 1,
                Start::Latest { .. } => seen.first().copied().unwrap_or(welcome.last_seq.get() + 1),
            };
            while seen.last().copied().unwrap_or(from - 1) < POSTS {
                seen.push(next_seq(&mut joined).await);
            }
            assert_eq!(seen, (from..=POSTS).collect::<Vec<_>>(), "joiner {j}");
            joined.welcome.last_seq.get()
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for task in posters {
        task.await.unwrap();
    }
    let mut mid_stream = 0;
    for task in joiners {
        let joined_at = task.await.unwrap();
        mid_stream += usize::from(joined_at > 0 && joined_at < POSTS);
    }
    assert!(
        mid_stream > JOINERS / 4,
        "joins raced the posts ({mid_stream} of {JOINERS})"
    );
    let (hits, misses) = w.stats();
    assert_eq!(hits + misses, JOINERS as u64 + 1);
    assert!(hits > 0, "most joins are answered from memory");
}

#[tokio::test]
async fn a_slow_connection_behind_its_hub_falls_behind_alone() {
    let w = world(200);
    let mut fast = w.join("fast", Start::DEFAULT).await;
    let mut slow = w.join("slow", Start::DEFAULT).await;
    for n in 1..=1100 {
        w.post("fast", &format!("m{n}")).await;
        assert_eq!(next_seq(&mut fast).await, n);
    }
    let outcome = loop {
        match slow.feed.next().await {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(outcome, FeedError::FellBehind);
    w.post("fast", "still here").await;
    assert_eq!(next_seq(&mut fast).await, 1101);
}

#[tokio::test]
async fn a_closed_stream_ends_the_hubs_connections_and_the_next_join_opens_a_new_hub() {
    let w = world(200);
    let mut alice = w.join("alice", Start::DEFAULT).await;
    w.broadcaster.close_all();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(e) = alice.feed.next().await {
                break e;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, FeedError::Closed);
    let mut bob = w.join("bob", Start::DEFAULT).await;
    assert_eq!(w.stats(), (0, 2), "a new hub, read from the store");
    w.post("bob", "after").await;
    assert_eq!(next_seq(&mut bob).await, 1);
}

#[tokio::test]
async fn a_hub_lingers_after_its_last_use_then_goes() {
    let w = world(200);
    let alice = w.join("alice", Start::DEFAULT).await;
    w.clock.advance(Duration::from_secs(600));
    assert_eq!(w.chat.sweep_history_cache(), 1, "kept while connected");
    leave(alice).await;
    w.clock.advance(Duration::from_secs(59));
    assert_eq!(
        w.chat.sweep_history_cache(),
        1,
        "lingers after the last one left"
    );
    let bob = w.join("bob", Start::DEFAULT).await;
    assert_eq!(w.stats(), (1, 1));
    leave(bob).await;
    w.clock.advance(Duration::from_secs(61));
    assert_eq!(w.chat.sweep_history_cache(), 0, "gone after the linger");

    // A read keeps the room warm too, from its last use.
    w.latest(10).await;
    w.clock.advance(Duration::from_secs(40));
    w.latest(10).await;
    w.clock.advance(Duration::from_secs(40));
    assert_eq!(w.chat.sweep_history_cache(), 1);
    w.clock.advance(Duration::from_secs(21));
    assert_eq!(w.chat.sweep_history_cache(), 0);
    assert_eq!(w.stats(), (2, 2));
}

#[tokio::test]
async fn the_window_serves_edited_and_deleted_messages_in_their_current_state() {
    use banter_application::{ChangeDraft, DraftField};
    use banter_domain::Rev;
    let w = world(200);
    let mut alice = w.join("alice", Start::DEFAULT).await;
    for n in 1..=3 {
        w.post("alice", &format!("m{n}")).await;
        assert_eq!(next_seq(&mut alice).await, n);
    }
    let change = |n: u64, draft: ChangeDraft| {
        let chat = w.chat.clone();
        async move {
            chat.change(&room("general"), &user("alice"), seq(n), draft)
                .await
                .unwrap()
        }
    };
    change(
        2,
        ChangeDraft::Edit {
            content: DraftField::Text("m2 edited".into()),
        },
    )
    .await;
    change(3, ChangeDraft::Delete).await;
    let reads = w.reads();
    // The latest page read right after this node's own change shows it (the hub waits for
    // its rev, or the store answers).
    let page = w
        .chat
        .history(
            &room("general"),
            HistoryQuery::Latest {
                limit: PageLimit::history(10).unwrap(),
            },
        )
        .await
        .unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text()).collect();
    assert_eq!(texts, ["m1", "m2 edited", ""]);
    assert_eq!(page.last_rev, Rev::new(2).unwrap());
    // Once the hub has the changes, a welcome from memory shows them and their rev.
    let mut told = 0;
    while told < 2 {
        let envelope = tokio::time::timeout(Duration::from_secs(10), alice.feed.next())
            .await
            .unwrap()
            .unwrap();
        if matches!(envelope.event(), RoomEvent::MessageUpdated { .. }) {
            told += 1;
        }
    }
    let bob = w.join("bob", Start::Latest { history: 50 }).await;
    let texts: Vec<&str> = bob.welcome.messages.iter().map(|m| m.text()).collect();
    assert_eq!(texts, ["m1", "m2 edited", ""]);
    assert!(bob.welcome.messages[2].is_deleted());
    assert_eq!(bob.welcome.last_rev, Rev::new(2).unwrap());
    let mut resumed = w.join("carol", Start::After(seq(1))).await;
    assert_eq!(resumed.welcome.last_rev, Rev::new(2).unwrap());
    let mut missed = Vec::new();
    while missed.len() < 2 {
        let envelope = resumed.feed.next().await.unwrap();
        if let RoomEvent::MessagePosted(m) = envelope.event() {
            missed.push(m.text().to_owned());
        }
    }
    assert_eq!(
        missed,
        ["m2 edited", ""],
        "missed messages in their current state"
    );
    assert!(w.reads() <= reads + 1, "the welcomes came from memory");
}
