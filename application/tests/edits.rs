//! Edits and deletes against fake ports: the rules at the use case, the room told in rev order
//! with gaps filled from the store, rate limits, and resuming with `rev`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod fakes;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use banter_application::{
    ChangeDraft, ChangeError, ChatSettings, DraftField, PostDraft, RateLimit, Start,
};
use banter_domain::{
    Appended, Change, ChangeRequest, Changed, Content, EventEnvelope, Message, NewMessage, Rev,
    RoomEvent,
};
use fakes::world::{TestJoined, World, room, seq, user, world, world_with};

fn edit(text: &str) -> ChangeDraft {
    ChangeDraft::Edit {
        content: DraftField::Text(text.into()),
    }
}

impl World {
    async fn join(&self, u: &str, start: Start) -> TestJoined {
        self.chat.join(room(), user(u), start).await.unwrap()
    }

    fn insert(&self, u: &str, text: &str) -> Message {
        self.store.insert(NewMessage {
            room: room(),
            username: user(u),
            content: Content::parse(text).unwrap(),
            client_id: None,
        })
    }

    /// A change committed by another node: stored, told to nobody here.
    fn change_elsewhere(&self, n: u64, u: &str, change: Change) -> u64 {
        let changed = self.store.change_now(ChangeRequest {
            room: room(),
            seq: seq(n),
            author: user(u),
            change,
        });
        match changed {
            Ok(Changed::Updated(c)) => c.rev.get(),
            other => panic!("expected a change, got {other:?}"),
        }
    }
}

async fn next_event(joined: &mut TestJoined) -> Arc<EventEnvelope> {
    tokio::time::timeout(Duration::from_secs(5), joined.feed.next())
        .await
        .expect("an event should arrive")
        .expect("the feed should not fail")
}

async fn is_quiet(joined: &mut TestJoined) -> bool {
    tokio::time::timeout(Duration::from_millis(50), joined.feed.next())
        .await
        .is_err()
}

/// What a feed said, in a form a test can compare: ("m", seq, text) for a message,
/// ("u<rev>", seq, text) for a change; presence and typing are skipped.
async fn next_told(joined: &mut TestJoined) -> (String, u64, String) {
    loop {
        let envelope = next_event(joined).await;
        match envelope.event() {
            RoomEvent::MessagePosted(m) => return ("m".into(), m.seq.get(), m.text().into()),
            RoomEvent::MessageUpdated { rev, message } => {
                return (format!("u{rev}"), message.seq.get(), message.text().into());
            }
            _ => {}
        }
    }
}

fn told(kind: &str, n: u64, text: &str) -> (String, u64, String) {
    (kind.into(), n, text.into())
}

#[tokio::test]
async fn edits_and_deletes_are_stored_then_told_to_everyone_in_rev_order() {
    let w = world();
    let mut alice = w.join("alice", Start::DEFAULT).await;
    let mut bob = w.join("bob", Start::DEFAULT).await;
    alice
        .session
        .post(PostDraft::new("helo", Some("c1".into())))
        .await
        .unwrap();
    assert_eq!(next_told(&mut bob).await, told("m", 1, "helo"));

    let edited = alice.session.change(seq(1), edit("hello")).await.unwrap();
    let Changed::Updated(change) = &edited else {
        panic!("expected a change, got {edited:?}")
    };
    assert_eq!(change.rev, Rev::new(1).unwrap());
    assert!(change.message.edited_at.is_some());
    assert_eq!(
        w.store.messages(&room())[0],
        change.message,
        "stored before told"
    );
    assert_eq!(next_told(&mut bob).await, told("u1", 1, "hello"));

    // Nothing changes: no rev, nobody told.
    let same = alice.session.change(seq(1), edit("hello")).await.unwrap();
    assert!(matches!(same, Changed::Unchanged(_)));

    let deleted = alice
        .session
        .change(seq(1), ChangeDraft::Delete)
        .await
        .unwrap();
    assert!(deleted.message().is_deleted());
    assert_eq!(next_told(&mut bob).await, told("u2", 1, ""));
    assert!(is_quiet(&mut bob).await);

    // The author's own connection is told too, in order.
    assert_eq!(next_told(&mut alice).await, told("m", 1, "helo"));
    assert_eq!(next_told(&mut alice).await, told("u1", 1, "hello"));
    assert_eq!(next_told(&mut alice).await, told("u2", 1, ""));

    // A late resend of the deleted post gets the tombstone and stores nothing.
    let resend = alice
        .session
        .post(PostDraft::new("helo", Some("c1".into())))
        .await
        .unwrap();
    assert!(matches!(&resend, Appended::Duplicate(m) if m.is_deleted() && m.seq == seq(1)));
    assert_eq!(w.store.messages(&room()).len(), 1);
    let published_changes = w
        .broadcaster
        .published
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, RoomEvent::MessageUpdated { .. }))
        .count();
    assert_eq!(published_changes, 2);
}

#[tokio::test]
async fn refusals_say_why_and_change_nothing() {
    let w = world();
    let alice = w.join("alice", Start::DEFAULT).await;
    let bob = w.join("bob", Start::DEFAULT).await;
    alice
        .session
        .post(PostDraft::new("mine", None))
        .await
        .unwrap();
    let refused = |r: Result<Changed, ChangeError>| r.unwrap_err();
    assert_eq!(
        refused(bob.session.change(seq(1), edit("yours")).await),
        ChangeError::Forbidden
    );
    assert_eq!(
        refused(bob.session.change(seq(1), ChangeDraft::Delete).await),
        ChangeError::Forbidden
    );
    assert_eq!(
        refused(alice.session.change(seq(2), edit("x")).await),
        ChangeError::NotFound
    );
    assert!(matches!(
        refused(alice.session.change(seq(1), edit("   ")).await),
        ChangeError::InvalidContent(_)
    ));
    assert_eq!(
        refused(
            alice
                .session
                .change(
                    seq(1),
                    ChangeDraft::Edit {
                        content: DraftField::NotText
                    }
                )
                .await
        ),
        ChangeError::MissingContent
    );
    alice
        .session
        .change(seq(1), ChangeDraft::Delete)
        .await
        .unwrap();
    assert_eq!(
        refused(alice.session.change(seq(1), edit("back")).await),
        ChangeError::NotFound
    );
    w.store.fail(true);
    assert_eq!(
        refused(alice.session.change(seq(1), ChangeDraft::Delete).await),
        ChangeError::Unavailable
    );
    w.store.fail(false);
    assert_eq!(w.store.messages(&room())[0].edited_at, None);
}

#[tokio::test]
async fn edits_and_deletes_take_tokens_like_posts() {
    let w = world_with(ChatSettings {
        rate_limit: Some(RateLimit {
            burst: NonZeroU32::new(3).unwrap(),
            per_second: NonZeroU32::new(1).unwrap(),
        }),
        ..ChatSettings::default()
    });
    let alice = w.join("alice", Start::DEFAULT).await;
    alice
        .session
        .post(PostDraft::new("one", None))
        .await
        .unwrap();
    alice.session.change(seq(1), edit("two")).await.unwrap();
    // A refused change takes its token too.
    alice.session.change(seq(9), edit("x")).await.unwrap_err();
    assert!(matches!(
        alice.session.change(seq(1), ChangeDraft::Delete).await,
        Err(ChangeError::RateLimited { .. })
    ));
    assert!(!w.store.messages(&room())[0].is_deleted());
}

#[tokio::test]
async fn a_change_whose_publication_is_lost_is_filled_from_the_store_in_rev_order() {
    let w = world();
    let mut carol = w.join("carol", Start::DEFAULT).await;
    let alice = w.join("alice", Start::DEFAULT).await;
    for text in ["a", "b"] {
        alice
            .session
            .post(PostDraft::new(text, None))
            .await
            .unwrap();
    }
    assert_eq!(next_told(&mut carol).await, told("m", 1, "a"));
    assert_eq!(next_told(&mut carol).await, told("m", 2, "b"));
    // The broker loses rev 1; rev 2 arrives and exposes the gap.
    w.broadcaster.swallow_next(1);
    alice.session.change(seq(1), edit("a2")).await.unwrap();
    alice.session.change(seq(2), edit("b2")).await.unwrap();
    assert_eq!(next_told(&mut carol).await, told("u1", 1, "a2"));
    assert_eq!(next_told(&mut carol).await, told("u2", 2, "b2"));
    assert!(is_quiet(&mut carol).await, "rev 2 is not told twice");
}

#[tokio::test]
async fn resuming_with_rev_replays_each_changed_message_once_then_the_missed_ones() {
    let w = world();
    for i in 1..=5 {
        w.insert("alice", &format!("m{i}"));
    }
    assert_eq!(
        w.change_elsewhere(2, "alice", Change::Edit(Content::parse("m2 v2").unwrap())),
        1
    );
    w.change_elsewhere(4, "alice", Change::Edit(Content::parse("m4 v2").unwrap()));
    w.change_elsewhere(2, "alice", Change::Edit(Content::parse("m2 v3").unwrap()));
    w.change_elsewhere(5, "alice", Change::Delete);
    w.insert("alice", "m6");
    // Message 6 changes too: the client has not seen it, so it comes as a message only.
    w.change_elsewhere(6, "alice", Change::Edit(Content::parse("m6 v2").unwrap()));

    let mut bob = w
        .join(
            "bob",
            Start::Resume {
                after: seq(5),
                rev: Rev::new(1).unwrap(),
            },
        )
        .await;
    assert_eq!(bob.welcome.last_rev, Rev::new(5).unwrap());
    assert!(bob.welcome.messages.is_empty());
    assert_eq!(next_told(&mut bob).await, told("u2", 4, "m4 v2"));
    assert_eq!(next_told(&mut bob).await, told("u3", 2, "m2 v3"));
    assert_eq!(next_told(&mut bob).await, told("u4", 5, ""));
    assert_eq!(next_told(&mut bob).await, told("m", 6, "m6 v2"));
    assert!(is_quiet(&mut bob).await);
    // Live changes continue after the welcome's last_rev.
    bob.session
        .post(PostDraft::new("live", None))
        .await
        .unwrap();
    assert_eq!(next_told(&mut bob).await, told("m", 7, "live"));
    bob.session.change(seq(7), edit("live v2")).await.unwrap();
    assert_eq!(next_told(&mut bob).await, told("u6", 7, "live v2"));
}

#[tokio::test]
async fn without_rev_or_with_the_latest_rev_nothing_is_replayed() {
    let w = world();
    for i in 1..=3 {
        w.insert("alice", &format!("m{i}"));
    }
    w.change_elsewhere(1, "alice", Change::Delete);
    for start in [
        Start::After(seq(2)),
        Start::Resume {
            after: seq(2),
            rev: Rev::new(1).unwrap(),
        },
        Start::Resume {
            after: seq(2),
            rev: Rev::new(40).unwrap(),
        },
    ] {
        let mut bob = w.join("bob", start).await;
        assert_eq!(bob.welcome.last_rev, Rev::new(1).unwrap());
        assert_eq!(next_told(&mut bob).await, told("m", 3, "m3"), "{start:?}");
        assert!(is_quiet(&mut bob).await, "{start:?}");
    }
    let mut fresh = w.join("carol", Start::DEFAULT).await;
    assert_eq!(fresh.welcome.last_rev, Rev::new(1).unwrap());
    assert!(
        fresh.welcome.messages[0].is_deleted(),
        "history shows the current state"
    );
    assert!(is_quiet(&mut fresh).await);
}

#[tokio::test]
async fn a_message_changed_while_it_waited_behind_a_gap_is_delivered_as_it_now_is() {
    let w = world();
    let mut carol = w.join("carol", Start::DEFAULT).await;
    // Committed after Carol's snapshot; message 1's publication comes late, message 2 was
    // edited meanwhile and its change flows in rev order before message 2 can be delivered.
    let first = w.insert("alice", "a");
    let second = w.insert("alice", "b");
    w.broadcaster.inject(RoomEvent::MessagePosted(second));
    let rev = w.change_elsewhere(2, "alice", Change::Edit(Content::parse("b2").unwrap()));
    let changed = w.store.messages(&room())[1].clone();
    w.broadcaster.inject(RoomEvent::MessageUpdated {
        rev: Rev::new(rev).unwrap(),
        message: changed,
    });
    w.broadcaster.inject(RoomEvent::MessagePosted(first));
    assert_eq!(next_told(&mut carol).await, told("u1", 2, "b2"));
    assert_eq!(next_told(&mut carol).await, told("m", 1, "a"));
    assert_eq!(
        next_told(&mut carol).await,
        told("m", 2, "b2"),
        "not the stale text it was posted with"
    );
    assert!(is_quiet(&mut carol).await);
}
