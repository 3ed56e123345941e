//! The use cases against fake ports.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod fakes;

use std::sync::Arc;
use std::time::Duration;

use banter_application::{
    Chat, ChatSettings, DraftField, FeedError, Joined, PostDraft, PostRefusal, RateLimit, Start,
};
use banter_domain::ports::Clock;
use banter_domain::{
    Appended, Content, EventEnvelope, HistoryQuery, NewMessage, PageLimit, PresenceEvent,
    RoomEvent, RoomName, Seq, Username,
};
use fakes::{AnnouncingPresence, FakeBroadcaster, FakeClock, FakePresence, FakeStore};

type TestChat = Chat<FakeStore, FakeBroadcaster, FakePresence, FakeClock>;
type TestJoined = Joined<FakeStore, FakeBroadcaster, FakePresence, FakeClock>;

struct World {
    chat: TestChat,
    store: FakeStore,
    broadcaster: FakeBroadcaster,
    presence: FakePresence,
    clock: FakeClock,
}

fn world_with(settings: ChatSettings) -> World {
    let clock = FakeClock::default();
    let store = FakeStore::new(clock.clone());
    let broadcaster = FakeBroadcaster::default();
    let presence = FakePresence::default();
    let chat = Chat::new(
        store.clone(),
        broadcaster.clone(),
        presence.clone(),
        clock.clone(),
        settings,
    );
    World {
        chat,
        store,
        broadcaster,
        presence,
        clock,
    }
}

fn world() -> World {
    world_with(ChatSettings::default())
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

fn new_message(r: &str, u: &str, text: &str) -> NewMessage {
    NewMessage {
        room: room(r),
        username: user(u),
        content: Content::parse(text).unwrap(),
        client_id: None,
    }
}

impl World {
    async fn join(&self, r: &str, u: &str, start: Start) -> TestJoined {
        self.chat.join(room(r), user(u), start).await.unwrap()
    }
}

/// The next event of a feed, failing the test if none comes soon.
async fn next_event(joined: &mut TestJoined) -> Arc<EventEnvelope> {
    tokio::time::timeout(Duration::from_secs(5), joined.feed.next())
        .await
        .expect("an event should arrive")
        .expect("the feed should not fail")
}

/// Whether the feed has nothing to hand out right now.
async fn is_quiet(joined: &mut TestJoined) -> bool {
    tokio::time::timeout(Duration::from_millis(50), joined.feed.next())
        .await
        .is_err()
}

fn message_seq(envelope: &Arc<EventEnvelope>) -> u64 {
    match envelope.event() {
        RoomEvent::MessagePosted(m) => m.seq.get(),
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn next_message_seqs(joined: &mut TestJoined, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < count {
        let envelope = next_event(joined).await;
        if let RoomEvent::MessagePosted(m) = envelope.event() {
            seqs.push(m.seq.get());
        }
    }
    seqs
}

#[tokio::test]
async fn a_post_is_stored_then_delivered_to_everyone_including_the_sender() {
    let w = world();
    let mut alice = w.join("general", "alice", Start::DEFAULT).await;
    let mut bob = w.join("general", "bob", Start::DEFAULT).await;
    // Alice hears Bob join.
    let joined = next_event(&mut alice).await;
    assert!(
        matches!(joined.event(), RoomEvent::Presence { event: PresenceEvent::Join, username, online_count: 2, .. } if username.as_str() == "bob")
    );

    let posted = alice
        .session
        .post(PostDraft::new("Hello", None))
        .await
        .unwrap();
    let Appended::Stored(message) = posted else {
        panic!("expected a new message")
    };
    assert_eq!(message.seq, seq(1));
    assert_eq!(w.store.messages(&room("general")).len(), 1);

    assert_eq!(
        message_seq(&next_event(&mut alice).await),
        1,
        "the sender's own echo"
    );
    assert_eq!(message_seq(&next_event(&mut bob).await), 1);
}

#[tokio::test]
async fn a_resend_with_the_same_client_id_stores_nothing_and_tells_only_the_sender() {
    let w = world();
    let mut alice = w.join("general", "alice", Start::DEFAULT).await;
    let mut bob = w.join("general", "bob", Start::DEFAULT).await;
    next_event(&mut alice).await; // bob's join

    let first = alice
        .session
        .post(PostDraft::new("once", Some("c-1".into())))
        .await
        .unwrap();
    let again = alice
        .session
        .post(PostDraft::new("once, again", Some("c-1".into())))
        .await
        .unwrap();
    let Appended::Stored(original) = first else {
        panic!("first post must be stored")
    };
    assert_eq!(
        again,
        Appended::Duplicate(original.clone()),
        "the original comes back, not the resend"
    );
    assert_eq!(w.store.messages(&room("general")).len(), 1);
    let published_messages = w
        .broadcaster
        .published()
        .into_iter()
        .filter(|e| matches!(e, RoomEvent::MessagePosted(_)))
        .count();
    assert_eq!(published_messages, 1, "nobody sees a second chat_message");
    assert_eq!(next_message_seqs(&mut bob, 1).await, [1]);
    assert!(is_quiet(&mut bob).await);

    // Another user may use the same client id: idempotency is per room and username.
    let bobs = bob
        .session
        .post(PostDraft::new("mine", Some("c-1".into())))
        .await
        .unwrap();
    assert!(matches!(bobs, Appended::Stored(m) if m.seq == seq(2)));
}

#[tokio::test]
async fn a_message_committed_between_subscribing_and_the_snapshot_is_delivered_once() {
    let w = world();
    let alice = w.join("general", "alice", Start::DEFAULT).await;
    // While Carol's join reads its snapshot, another connection's post commits and is
    // published: it is both in her welcome and in her live stream.
    let (chat, store) = (w.chat.clone(), w.store.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    store.before_next_history(move |store| {
        let message = store.insert(new_message("general", "alice", "racing"));
        tx.send(message).unwrap();
    });
    let mut carol = w.join("general", "carol", Start::DEFAULT).await;
    let racing = rx.recv().unwrap();
    // Publish the racing message now, as its poster would after commit.
    drop(chat);
    w.broadcaster
        .inject(RoomEvent::MessagePosted(racing.clone()));

    assert_eq!(carol.welcome.messages, vec![racing.clone()]);
    assert_eq!(carol.welcome.last_seq, seq(1));
    // Then a normal post: Carol gets seq 2 next, never seq 1 a second time.
    alice
        .session
        .post(PostDraft::new("after", None))
        .await
        .unwrap();
    assert_eq!(next_message_seqs(&mut carol, 1).await, [2]);
    assert!(is_quiet(&mut carol).await);
}

#[tokio::test]
async fn a_message_committed_and_published_right_after_the_snapshot_is_delivered_live() {
    let w = world();
    // A post commits and is published just after Carol's snapshot was read: only a
    // subscription opened before the snapshot can catch it, and no later message will come
    // to reveal a gap.
    let broadcaster = w.broadcaster.clone();
    w.store.after_next_history(move |store| {
        let message = store.insert(new_message("general", "alice", "just after"));
        broadcaster.inject(RoomEvent::MessagePosted(message));
    });
    let mut carol = w.join("general", "carol", Start::DEFAULT).await;
    assert!(carol.welcome.messages.is_empty());
    assert_eq!(carol.welcome.last_seq, Seq::ZERO);
    assert_eq!(next_message_seqs(&mut carol, 1).await, [1]);
    assert_eq!(
        w.store
            .history_reads
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "live, not from the store"
    );
}

#[tokio::test]
async fn a_message_committed_after_the_snapshot_but_published_late_is_not_lost() {
    let w = world();
    let mut carol = w.join("general", "carol", Start::DEFAULT).await;
    assert_eq!(carol.welcome.last_seq, Seq::ZERO);
    // Committed after Carol's snapshot; its publication arrives after a later one.
    let first = w.store.insert(new_message("general", "alice", "one"));
    let second = w.store.insert(new_message("general", "bob", "two"));
    w.broadcaster.inject(RoomEvent::MessagePosted(second));
    w.broadcaster.inject(RoomEvent::MessagePosted(first));
    assert_eq!(next_message_seqs(&mut carol, 2).await, [1, 2]);
}

#[tokio::test]
async fn a_publication_that_never_comes_is_filled_from_the_store() {
    let w = world();
    let mut carol = w.join("general", "carol", Start::DEFAULT).await;
    let alice = w.join("general", "alice", Start::DEFAULT).await;
    next_event(&mut carol).await; // alice's join
    // The broker loses seq 1's publication; seq 2 arrives and exposes the gap.
    w.broadcaster.swallow_next(1);
    alice
        .session
        .post(PostDraft::new("lost", None))
        .await
        .unwrap();
    alice
        .session
        .post(PostDraft::new("seen", None))
        .await
        .unwrap();
    let reads_before = w
        .store
        .history_reads
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(next_message_seqs(&mut carol, 2).await, [1, 2]);
    assert!(
        w.store
            .history_reads
            .load(std::sync::atomic::Ordering::SeqCst)
            > reads_before,
        "the gap was filled from the store"
    );
    assert!(
        w.clock.monotonic() >= Duration::from_millis(250),
        "after the grace period"
    );
}

#[tokio::test]
async fn resuming_after_a_seq_replays_every_missed_message_in_order_then_goes_live() {
    let w = world();
    for i in 0..450 {
        w.store
            .insert(new_message("general", "alice", &format!("m{i}")));
    }
    let mut bob = w.join("general", "bob", Start::After(seq(10))).await;
    assert!(bob.welcome.messages.is_empty());
    assert!(!bob.welcome.has_more);
    assert_eq!(bob.welcome.last_seq, seq(450));
    let replayed = next_message_seqs(&mut bob, 440).await;
    assert_eq!(replayed, (11..=450).collect::<Vec<_>>());
    bob.session
        .post(PostDraft::new("live", None))
        .await
        .unwrap();
    assert_eq!(next_message_seqs(&mut bob, 1).await, [451]);
}

#[tokio::test]
async fn resuming_after_the_end_replays_nothing_and_continues_from_the_real_end() {
    let w = world();
    for i in 0..3 {
        w.store
            .insert(new_message("general", "alice", &format!("m{i}")));
    }
    let mut bob = w.join("general", "bob", Start::After(seq(99))).await;
    assert_eq!(
        bob.welcome.last_seq,
        seq(3),
        "the client sees last_seq < after"
    );
    bob.session
        .post(PostDraft::new("next", None))
        .await
        .unwrap();
    assert_eq!(next_message_seqs(&mut bob, 1).await, [4]);
}

#[tokio::test]
async fn welcome_history_size_and_has_more() {
    let w = world();
    let empty = w.join("general", "zed", Start::Latest { history: 0 }).await;
    assert!(!empty.welcome.has_more, "an empty room has no message");
    for i in 0..5 {
        w.store
            .insert(new_message("general", "alice", &format!("m{i}")));
    }
    let none = w.join("general", "bob", Start::Latest { history: 0 }).await;
    assert!(none.welcome.messages.is_empty());
    assert!(
        none.welcome.has_more,
        "history=0 still says the room has messages"
    );
    assert_eq!(none.welcome.last_seq, seq(5));
    let three = w
        .join("general", "carol", Start::Latest { history: 3 })
        .await;
    let seqs: Vec<u64> = three.welcome.messages.iter().map(|m| m.seq.get()).collect();
    assert_eq!(seqs, [3, 4, 5], "the latest, oldest first");
    assert!(three.welcome.has_more);
    let all = w.join("general", "dan", Start::Latest { history: 5 }).await;
    assert!(!all.welcome.has_more);
}

#[tokio::test]
async fn two_tabs_of_one_user_are_one_person() {
    let w = world();
    let mut bob = w.join("general", "bob", Start::DEFAULT).await;
    let mut tab1 = w.join("general", "alice", Start::DEFAULT).await;
    let tab2 = w.join("general", "alice", Start::DEFAULT).await;
    assert_eq!(tab2.welcome.online, vec![user("alice"), user("bob")]);
    assert_eq!(tab2.welcome.online_count, 2);
    // Bob hears one join; the first tab does not hear its own user join again.
    let heard = next_event(&mut bob).await;
    assert!(
        matches!(heard.event(), RoomEvent::Presence { event: PresenceEvent::Join, username, .. } if username.as_str() == "alice")
    );
    assert!(
        is_quiet(&mut bob).await,
        "the second tab is not a second join"
    );
    assert!(
        is_quiet(&mut tab1).await,
        "a connection never receives its own user's join"
    );

    tab1.session.leave().await;
    assert!(is_quiet(&mut bob).await, "one tab closing is not a leave");
    assert!(w.presence.is_online(&room("general"), &user("alice")));
    tab2.session.leave().await;
    let left = next_event(&mut bob).await;
    assert!(
        matches!(left.event(), RoomEvent::Presence { event: PresenceEvent::Leave, username, online_count: 1, .. } if username.as_str() == "alice")
    );
    assert!(!w.presence.is_online(&room("general"), &user("alice")));
    drop(tab2.feed);
}

#[tokio::test]
async fn a_leave_and_a_rejoin_are_told_in_the_order_they_happened() {
    let w = world();
    let mut bob = w.join("general", "bob", Start::DEFAULT).await;
    let tab1 = w.join("general", "alice", Start::DEFAULT).await;
    next_event(&mut bob).await; // alice's join
    // Alice's only tab closes; the registry has decided "left" but not yet returned when her
    // new tab opens.
    let release = w.presence.hold_next_disconnect();
    let leaving = tokio::spawn(async move { tab1.session.leave().await });
    tokio::time::timeout(Duration::from_secs(5), async {
        while w.presence.is_online(&room("general"), &user("alice")) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the leave reaches the registry");
    // The rejoin's snapshot is its last step before it asks for the room; the test runtime
    // has one thread, so by the time this test runs again the rejoin has either stopped at
    // the room's lock (right) or registered and announced its join already (the race lost).
    let (snapshot_read, snapshot_was_read) = tokio::sync::oneshot::channel();
    let mut snapshot_read = Some(snapshot_read);
    w.store.after_next_history(move |_| {
        if let Some(tx) = snapshot_read.take() {
            let _ = tx.send(());
        }
    });
    let chat = w.chat.clone();
    let rejoining = tokio::spawn(async move {
        chat.join(room("general"), user("alice"), Start::DEFAULT)
            .await
    });
    snapshot_was_read.await.unwrap();
    assert!(
        !leaving.is_finished(),
        "the leave is still held by the registry while the rejoin runs"
    );
    release.send(()).unwrap();
    leaving.await.unwrap();
    let _tab2 = rejoining.await.unwrap().unwrap();
    let first = next_event(&mut bob).await;
    let second = next_event(&mut bob).await;
    assert!(
        matches!(
            first.event(),
            RoomEvent::Presence {
                event: PresenceEvent::Leave,
                ..
            }
        ),
        "{first:?}"
    );
    assert!(
        matches!(
            second.event(),
            RoomEvent::Presence {
                event: PresenceEvent::Join,
                ..
            }
        ),
        "{second:?}"
    );
    assert!(
        w.presence.is_online(&room("general"), &user("alice")),
        "she is online in the end"
    );
}

#[tokio::test]
async fn typing_is_shown_to_others_throttled_and_expires() {
    let w = world();
    let mut alice = w.join("general", "alice", Start::DEFAULT).await;
    let mut bob = w.join("general", "bob", Start::DEFAULT).await;
    next_event(&mut alice).await; // bob's join

    bob.session.set_typing(true).await;
    let started = next_event(&mut alice).await;
    assert!(
        matches!(started.event(), RoomEvent::Typing { username, is_typing: true, .. } if username.as_str() == "bob")
    );
    assert!(
        is_quiet(&mut bob).await,
        "typing is never echoed to the typer"
    );
    let carol = w.join("general", "carol", Start::DEFAULT).await;
    assert_eq!(carol.welcome.typing, vec![user("bob")]);
    next_event(&mut alice).await; // carol's join

    // A refresh inside 2 s is not broadcast again; one after 2 s is.
    w.clock.advance(Duration::from_millis(1500));
    bob.session.set_typing(true).await;
    assert!(is_quiet(&mut alice).await);
    w.clock.advance(Duration::from_millis(600));
    bob.session.set_typing(true).await;
    assert!(matches!(
        next_event(&mut alice).await.event(),
        RoomEvent::Typing {
            is_typing: true,
            ..
        }
    ));

    // Not refreshed for 6 s: it ends and everyone else is told.
    w.clock.advance(Duration::from_millis(5999));
    w.chat.expire_typing().await;
    assert!(is_quiet(&mut alice).await);
    w.clock.advance(Duration::from_millis(1));
    w.chat.expire_typing().await;
    assert!(
        matches!(next_event(&mut alice).await.event(), RoomEvent::Typing { username, is_typing: false, .. } if username.as_str() == "bob")
    );
    let presence = w.chat.presence(&room("general"), None, 10).await.unwrap();
    assert!(presence.typing.is_empty());
}

#[tokio::test]
async fn posting_and_leaving_end_typing() {
    let w = world();
    let mut alice = w.join("general", "alice", Start::DEFAULT).await;
    let bob = w.join("general", "bob", Start::DEFAULT).await;
    next_event(&mut alice).await; // bob's join
    bob.session.set_typing(true).await;
    next_event(&mut alice).await; // typing true
    bob.session
        .post(PostDraft::new("done typing", None))
        .await
        .unwrap();
    assert_eq!(message_seq(&next_event(&mut alice).await), 1);
    assert!(matches!(
        next_event(&mut alice).await.event(),
        RoomEvent::Typing {
            is_typing: false,
            ..
        }
    ));

    bob.session.set_typing(true).await;
    next_event(&mut alice).await; // typing true
    bob.session.leave().await;
    assert!(matches!(
        next_event(&mut alice).await.event(),
        RoomEvent::Typing {
            is_typing: false,
            ..
        }
    ));
    assert!(matches!(
        next_event(&mut alice).await.event(),
        RoomEvent::Presence {
            event: PresenceEvent::Leave,
            ..
        }
    ));
}

#[tokio::test]
async fn a_store_failure_refuses_the_post_as_unavailable_and_publishes_nothing() {
    let w = world();
    let mut alice = w.join("general", "alice", Start::DEFAULT).await;
    let published_before = w.broadcaster.published().len();
    w.store.fail(true);
    let refused = alice
        .session
        .post(PostDraft::new("lost?", Some("c-9".into())))
        .await
        .unwrap_err();
    assert_eq!(refused.refusal, PostRefusal::Unavailable);
    assert_eq!(refused.client_id.as_ref().map(|c| c.as_str()), Some("c-9"));
    assert_eq!(w.broadcaster.published().len(), published_before);
    assert!(is_quiet(&mut alice).await);

    // The resend is safe once the store is back.
    w.store.fail(false);
    let resent = alice
        .session
        .post(PostDraft::new("lost?", Some("c-9".into())))
        .await
        .unwrap();
    assert!(matches!(resent, Appended::Stored(m) if m.seq == seq(1)));
}

#[tokio::test]
async fn a_join_that_cannot_read_the_store_counts_nobody() {
    let w = world();
    w.store.fail(true);
    assert!(
        w.chat
            .join(room("general"), user("alice"), Start::DEFAULT)
            .await
            .is_err()
    );
    assert!(!w.presence.is_online(&room("general"), &user("alice")));
    assert!(
        w.broadcaster.published().is_empty(),
        "no join was announced"
    );
}

#[tokio::test]
async fn posts_are_rate_limited_per_connection_with_a_token_bucket() {
    let w = world();
    let alice = w.join("general", "alice", Start::DEFAULT).await;
    let other_tab = w.join("general", "alice", Start::DEFAULT).await;
    for i in 0..19 {
        alice
            .session
            .post(PostDraft::new(format!("m{i}"), None))
            .await
            .unwrap();
    }
    // An invalid post still takes a token.
    let invalid = alice
        .session
        .post(PostDraft::new("   ", None))
        .await
        .unwrap_err();
    assert!(matches!(invalid.refusal, PostRefusal::InvalidContent(_)));
    let limited = alice
        .session
        .post(PostDraft::new("one too many", Some("c-21".into())))
        .await
        .unwrap_err();
    let PostRefusal::RateLimited { retry_after } = limited.refusal else {
        panic!("expected rate limiting, got {limited:?}")
    };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500));
    assert_eq!(limited.client_id.as_ref().map(|c| c.as_str()), Some("c-21"));
    assert_eq!(
        w.store.messages(&room("general")).len(),
        19,
        "the refused post was not stored"
    );

    // Another connection has its own bucket.
    other_tab
        .session
        .post(PostDraft::new("from tab 2", None))
        .await
        .unwrap();
    // The bucket refills at 2 per second.
    w.clock.advance(Duration::from_millis(500));
    alice
        .session
        .post(PostDraft::new("refilled", None))
        .await
        .unwrap();
    let again = alice
        .session
        .post(PostDraft::new("again", None))
        .await
        .unwrap_err();
    assert!(
        matches!(again.refusal, PostRefusal::RateLimited { .. }),
        "{again:?}"
    );
}

#[tokio::test]
async fn rate_limits_can_be_turned_off_or_tuned() {
    let off = world_with(ChatSettings {
        rate_limit: None,
        ..ChatSettings::default()
    });
    let alice = off.join("general", "alice", Start::DEFAULT).await;
    for i in 0..50 {
        alice
            .session
            .post(PostDraft::new(format!("m{i}"), None))
            .await
            .unwrap();
    }
    let tight = RateLimit {
        burst: 1.try_into().unwrap(),
        per_second: 1.try_into().unwrap(),
    };
    let tuned = world_with(ChatSettings {
        rate_limit: Some(tight),
        ..ChatSettings::default()
    });
    let bob = tuned.join("general", "bob", Start::DEFAULT).await;
    bob.session.post(PostDraft::new("one", None)).await.unwrap();
    let second = bob
        .session
        .post(PostDraft::new("two", None))
        .await
        .unwrap_err();
    let PostRefusal::RateLimited { retry_after } = second.refusal else {
        panic!("expected a rate limit, got {second:?}");
    };
    // One token per second: the next one is at most a second away.
    assert!(
        retry_after > std::time::Duration::ZERO && retry_after <= std::time::Duration::from_secs(1),
        "{retry_after:?}"
    );
}

#[tokio::test]
async fn invalid_posts_say_what_is_wrong_and_keep_a_valid_client_id() {
    let w = world();
    let alice = w.join("general", "alice", Start::DEFAULT).await;
    let missing = PostDraft {
        content: DraftField::Absent,
        client_id: DraftField::Text("c-1".into()),
    };
    let err = alice.session.post(missing).await.unwrap_err();
    assert_eq!(err.refusal, PostRefusal::MissingContent);
    assert_eq!(err.client_id.as_ref().map(|c| c.as_str()), Some("c-1"));

    let not_text = PostDraft {
        content: DraftField::NotText,
        client_id: DraftField::Absent,
    };
    assert_eq!(
        alice.session.post(not_text).await.unwrap_err().refusal,
        PostRefusal::MissingContent
    );

    let long = alice
        .session
        .post(PostDraft::new("x".repeat(4001), Some("c-2".into())))
        .await
        .unwrap_err();
    assert!(matches!(long.refusal, PostRefusal::InvalidContent(_)));
    assert_eq!(long.client_id.as_ref().map(|c| c.as_str()), Some("c-2"));

    let bad_id = alice
        .session
        .post(PostDraft::new("fine", Some("has space".into())))
        .await
        .unwrap_err();
    assert!(matches!(bad_id.refusal, PostRefusal::InvalidClientId(_)));
    assert_eq!(bad_id.client_id, None);

    let id_not_text = PostDraft {
        content: DraftField::Text("fine".into()),
        client_id: DraftField::NotText,
    };
    assert_eq!(
        alice.session.post(id_not_text).await.unwrap_err().refusal,
        PostRefusal::ClientIdNotText
    );
    assert!(w.store.messages(&room("general")).is_empty());
}

#[tokio::test]
async fn a_feed_that_falls_behind_says_so() {
    let settings = ChatSettings {
        feed: banter_application::FeedSettings {
            max_pending: 3,
            ..Default::default()
        },
        ..ChatSettings::default()
    };
    let w = world_with(settings);
    let mut bob = w.join("general", "bob", Start::DEFAULT).await;
    // Seq 1 never arrives live and the early ones pile up past the bound.
    let first = w.store.insert(new_message("general", "alice", "missing"));
    drop(first);
    for i in 0..4 {
        let m = w
            .store
            .insert(new_message("general", "alice", &format!("m{i}")));
        w.broadcaster.inject(RoomEvent::MessagePosted(m));
    }
    let outcome = tokio::time::timeout(Duration::from_secs(5), bob.feed.next())
        .await
        .unwrap();
    assert_eq!(outcome.unwrap_err(), FeedError::FellBehind);
}

#[tokio::test]
async fn history_and_rooms_listing() {
    let w = world();
    for r in ["b-room", "d-room"] {
        for i in 0..3 {
            w.store.insert(new_message(r, "alice", &format!("m{i}")));
        }
    }
    // Rooms with people but no messages are listed too.
    let _a = w.join("a-room", "alice", Start::DEFAULT).await;
    let _d = w.join("d-room", "bob", Start::DEFAULT).await;
    let limit = |n| PageLimit::bounded(n, 1000).unwrap();

    let page = w.chat.rooms(None, limit(2), None).await.unwrap();
    let names: Vec<&str> = page.rooms.iter().map(|r| r.room.as_str()).collect();
    assert_eq!(names, ["a-room", "b-room"]);
    assert!(page.has_more);
    assert_eq!(page.rooms[0].last_seq, Seq::ZERO);
    assert_eq!(page.rooms[0].last_message_at, None);
    assert_eq!(page.rooms[0].online, 1);
    assert_eq!(page.rooms[1].last_seq, seq(3));
    assert_eq!(page.rooms[1].online, 0);

    let rest = w
        .chat
        .rooms(Some(&room("b-room")), limit(2), None)
        .await
        .unwrap();
    let names: Vec<&str> = rest.rooms.iter().map(|r| r.room.as_str()).collect();
    assert_eq!(names, ["d-room"]);
    assert!(!rest.has_more);
    assert_eq!(rest.rooms[0].online, 1);
    assert_eq!(rest.rooms[0].last_seq, seq(3));

    let before = w
        .chat
        .history(
            &room("b-room"),
            HistoryQuery::Before {
                before: seq(3),
                limit: PageLimit::history(1).unwrap(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        before
            .messages
            .iter()
            .map(|m| m.seq.get())
            .collect::<Vec<_>>(),
        [2]
    );
    assert!(before.has_more);
}

#[tokio::test]
async fn a_registry_that_announces_changes_is_not_echoed() {
    // A registry shared by several nodes publishes joins and leaves itself, atomically with
    // the change; the chat must not publish them a second time.
    let clock = FakeClock::default();
    let store = FakeStore::new(clock.clone());
    let broadcaster = FakeBroadcaster::default();
    let presence = AnnouncingPresence {
        inner: FakePresence::default(),
        broadcaster: broadcaster.clone(),
    };
    let chat = Chat::new(
        store,
        broadcaster.clone(),
        presence,
        clock,
        ChatSettings::default(),
    );
    let bob = chat
        .join(room("general"), user("bob"), Start::DEFAULT)
        .await
        .unwrap();
    let alice = chat
        .join(room("general"), user("alice"), Start::DEFAULT)
        .await
        .unwrap();
    assert_eq!(alice.welcome.online, vec![user("alice"), user("bob")]);
    chat.set_typing(&room("general"), &user("alice"), true)
        .await;
    alice.session.leave().await;
    let told: Vec<(PresenceEvent, String)> = broadcaster
        .published
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            RoomEvent::Presence {
                event, username, ..
            } => Some((*event, username.as_str().to_owned())),
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        vec![
            (PresenceEvent::Join, "bob".to_owned()),
            (PresenceEvent::Join, "alice".to_owned()),
            (PresenceEvent::Leave, "alice".to_owned()),
        ],
        "each change told once, by the registry"
    );
    // The chat still ends the leaver's typing itself: typing is not the registry's.
    let typing_ended = broadcaster.published.lock().unwrap().iter().any(|event| {
        matches!(event, RoomEvent::Typing { username, is_typing: false, .. } if username.as_str() == "alice")
    });
    assert!(typing_ended);
    drop(bob);
}

#[tokio::test]
async fn a_post_ends_typing_that_a_tab_on_another_node_started() {
    use banter_domain::ports::PresenceRegistry;
    let w = world();
    let mut alice = w.join("general", "alice", Start::DEFAULT).await;
    let bob = w.join("general", "bob", Start::DEFAULT).await;
    next_event(&mut alice).await; // bob's join
    // Bob types in a tab on another node: this node's book never saw it, the shared list did.
    w.presence
        .set_typing(&room("general"), &user("bob"), Some(Duration::from_secs(8)))
        .await
        .unwrap();
    bob.session
        .post(PostDraft::new("sent from this tab", None))
        .await
        .unwrap();
    assert_eq!(message_seq(&next_event(&mut alice).await), 1);
    assert_eq!(
        next_event(&mut alice).await.event(),
        &RoomEvent::Typing {
            room: room("general"),
            username: user("bob"),
            is_typing: false,
        },
        "two tabs are one typer: the post ends it"
    );
    assert!(
        w.presence
            .typing(&room("general"))
            .await
            .unwrap()
            .is_empty()
    );
    // Someone typing nowhere is not told to stop.
    let published = w.broadcaster.published().len();
    bob.session
        .post(PostDraft::new("again", None))
        .await
        .unwrap();
    assert_eq!(message_seq(&next_event(&mut alice).await), 2);
    assert_eq!(
        w.broadcaster.published().len(),
        published + 1,
        "only the message"
    );
}

#[tokio::test]
async fn typists_on_other_nodes_are_listed_from_the_registry() {
    use banter_domain::ports::PresenceRegistry;
    let w = world();
    // Another node's typist: only the shared registry knows of them.
    w.presence
        .set_typing(
            &room("general"),
            &user("remote"),
            Some(Duration::from_secs(8)),
        )
        .await
        .unwrap();
    let joined = w.join("general", "alice", Start::DEFAULT).await;
    assert_eq!(joined.welcome.typing, vec![user("remote")]);
    let read = w.chat.presence(&room("general"), None, 10).await.unwrap();
    assert_eq!(read.typing, vec![user("remote")]);
    // This node's typists go into the registry too, and out again when they stop.
    w.chat
        .set_typing(&room("general"), &user("alice"), true)
        .await;
    assert_eq!(
        w.presence.typing(&room("general")).await.unwrap(),
        vec![user("alice"), user("remote")]
    );
    w.chat
        .set_typing(&room("general"), &user("alice"), false)
        .await;
    assert_eq!(
        w.presence.typing(&room("general")).await.unwrap(),
        vec![user("remote")]
    );
}
