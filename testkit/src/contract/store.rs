//! The [`MessageStore`] contract: gapless seqs under concurrency, idempotent resends, history
//! pages in both directions, byte-exact content, durable reopening, the rooms listing, and
//! edits and deletes (the rules, gapless revs across processes, the changes listing).
//!
//! What only one adapter has (group commit, failing batches, query plans, shutdown) is tested
//! beside that adapter.
//!
//! Longer than 400 lines on purpose: it is test code, one function per case, each meant to be
//! read on its own; splitting the cases across files would only scatter the contract.

use std::collections::{BTreeMap, HashSet};

use banter_domain::ports::MessageStore;
use banter_domain::{
    Appended, Change, ChangeRefusal, ChangeRequest, Changed, ChangesPage, ChangesQuery, ClientId,
    Content, HistoryQuery, Message, MessageChange, NewMessage, PageLimit, Rev, Seq,
};

use super::{StoreFixture, room, user};

// The private-room cases live in their own file and run in this suite.
pub use super::access::{
    private_rooms_are_created_once_and_keep_their_members,
    racing_creations_of_one_room_make_one_creator,
};
// The search cases live in their own file and run in this suite.
pub use super::search::{
    a_phrase_is_found_however_often_its_words_occur,
    search_follows_the_query_rules_before_and_after_indexing,
    search_pages_through_many_matches_once_each,
};
// The read-position cases live in their own file and run in this suite.
pub use super::reading::{
    a_users_rooms_come_newest_activity_first_with_unread_counts,
    racing_read_reports_from_two_processes_keep_the_highest,
    read_positions_move_forward_only_and_stop_at_the_last_seq, unread_counts_stop_at_1000,
};

/// A post of `text` by `username` to `room_name`, with an optional client id.
pub fn post(room_name: &str, username: &str, text: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        room: room(room_name),
        username: user(username),
        content: Content::parse(text).unwrap(),
        client_id: client_id.map(|c| ClientId::parse(c).unwrap()),
    }
}

pub fn limit(n: u64) -> PageLimit {
    PageLimit::history(n).unwrap()
}

pub fn seq(n: u64) -> Seq {
    Seq::new(n).unwrap()
}

pub fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq.get()).collect()
}

/// Every message of a room, oldest first, read page by page.
pub async fn all_messages(store: &impl MessageStore, room_name: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(Seq::ZERO, |m: &Message| m.seq);
        let page = store
            .history(
                &room(room_name),
                HistoryQuery::After {
                    after,
                    limit: limit(200),
                },
            )
            .await
            .unwrap();
        all.extend(page.messages);
        if !page.has_more {
            return all;
        }
    }
}

pub async fn seqs_are_gapless_with_50_concurrent_posters_in_5_rooms(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    let per_poster = 20;
    let mut tasks = Vec::new();
    for poster in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let r = format!("room-{}", poster % 5);
            let mut mine = Vec::new();
            for i in 0..per_poster {
                let appended = store
                    .append(post(
                        &r,
                        &format!("user{poster}"),
                        &format!("{poster}:{i}"),
                        None,
                    ))
                    .await
                    .unwrap();
                let Appended::Stored(m) = appended else {
                    panic!("nothing was resent")
                };
                mine.push(m.seq.get());
            }
            (r, mine)
        }));
    }
    let mut per_room: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for task in tasks {
        let (r, mine) = task.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one poster's seqs follow its order: {mine:?}"
        );
        per_room.entry(r).or_default().extend(mine);
    }
    for (r, mut acked) in per_room {
        acked.sort_unstable();
        assert_eq!(
            acked,
            (1..=200).collect::<Vec<u64>>(),
            "room {r}: acked seqs are 1..=200"
        );
        let stored = all_messages(&store, &r).await;
        assert_eq!(
            seqs(&stored),
            (1..=200).collect::<Vec<u64>>(),
            "room {r}: stored seqs"
        );
        let distinct: HashSet<&str> = stored.iter().map(|m| m.text()).collect();
        assert_eq!(distinct.len(), 200, "room {r}: each post stored once");
    }
    fixture.close(store).await;
}

pub async fn concurrent_resends_store_one_message(fixture: &impl StoreFixture) {
    // Two stores on one database stand for two processes racing on the same client id.
    let first = fixture.open().await;
    let second = fixture.open().await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            store
                .append(post(
                    "general",
                    "alice",
                    &format!("attempt {i}"),
                    Some("c-7f3a"),
                ))
                .await
                .unwrap()
        }));
    }
    let mut stored = Vec::new();
    let mut duplicates = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Appended::Stored(m) => stored.push(m),
            Appended::Duplicate(m) => duplicates.push(m),
        }
    }
    assert_eq!(stored.len(), 1, "exactly one attempt stores");
    assert_eq!(duplicates.len(), 29);
    assert!(
        duplicates.iter().all(|d| *d == stored[0]),
        "every resend gets the original"
    );
    assert_eq!(all_messages(&first, "general").await, stored);

    // The same client id from another user, or in another room, is a different post.
    let bob = first
        .append(post("general", "bob", "mine", Some("c-7f3a")))
        .await
        .unwrap();
    assert!(matches!(bob, Appended::Stored(m) if m.seq == seq(2)));
    let elsewhere = second
        .append(post("other", "alice", "there", Some("c-7f3a")))
        .await
        .unwrap();
    assert!(matches!(elsewhere, Appended::Stored(m) if m.seq == seq(1)));
    fixture.close(first).await;
    fixture.close(second).await;
}

pub async fn resends_and_repeats_among_concurrent_posts_store_all_the_others(
    fixture: &impl StoreFixture,
) {
    let store = fixture.open().await;
    let original = store
        .append(post("general", "alice", "original", Some("dup")))
        .await
        .unwrap();
    let Appended::Stored(original) = original else {
        panic!("first post is new")
    };
    // Sent together (a group-committing store gathers them into one batch): fresh posts,
    // resends of a stored message, and repeats among themselves.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let p = match i % 4 {
                0 => post("general", "alice", "resend", Some("dup")),
                1 => post("general", "bob", "twin", Some("twin")),
                _ => post(
                    "general",
                    "carol",
                    &format!("fresh {i}"),
                    Some(&format!("c{i}")),
                ),
            };
            (i, store.append(p).await.unwrap())
        }));
    }
    let mut twins = Vec::new();
    for task in tasks {
        let (i, appended) = task.await.unwrap();
        match i % 4 {
            0 => assert_eq!(appended, Appended::Duplicate(original.clone())),
            1 => twins.push(appended),
            _ => assert!(
                matches!(appended, Appended::Stored(ref m) if m.username.as_str() == "carol")
            ),
        }
    }
    assert_eq!(
        twins
            .iter()
            .filter(|a| matches!(a, Appended::Stored(_)))
            .count(),
        1
    );
    let all = all_messages(&store, "general").await;
    assert_eq!(all.len(), 1 + 1 + 20, "original, one twin, twenty fresh");
    assert_eq!(seqs(&all), (1..=22).collect::<Vec<u64>>());
    fixture.close(store).await;
}

pub async fn history_pages_latest_before_and_after(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    let empty = store
        .history(&room("general"), HistoryQuery::Latest { limit: limit(50) })
        .await
        .unwrap();
    assert!(empty.messages.is_empty());
    assert!(!empty.has_more);
    assert_eq!(empty.last_seq, Seq::ZERO);
    let after_empty = store
        .history(
            &room("general"),
            HistoryQuery::After {
                after: Seq::ZERO,
                limit: limit(50),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            after_empty.messages.len(),
            after_empty.has_more,
            after_empty.last_seq
        ),
        (0, false, Seq::ZERO)
    );

    for i in 1..=7 {
        store
            .append(post("general", "alice", &format!("m{i}"), None))
            .await
            .unwrap();
    }
    store
        .append(post("other", "alice", "elsewhere", None))
        .await
        .unwrap();
    let read = |q: HistoryQuery| {
        let store = store.clone();
        async move { store.history(&room("general"), q).await.unwrap() }
    };

    let latest = read(HistoryQuery::Latest { limit: limit(3) }).await;
    assert_eq!(
        (seqs(&latest.messages), latest.has_more, latest.last_seq),
        (vec![5, 6, 7], true, seq(7))
    );
    let all = read(HistoryQuery::Latest { limit: limit(7) }).await;
    assert_eq!(
        (seqs(&all.messages), all.has_more),
        ((1..=7).collect(), false)
    );
    let max = read(HistoryQuery::Latest { limit: limit(200) }).await;
    assert_eq!((max.messages.len(), max.has_more), (7, false));
    let one = read(HistoryQuery::Latest { limit: limit(1) }).await;
    assert_eq!((seqs(&one.messages), one.has_more), (vec![7], true));

    let before = read(HistoryQuery::Before {
        before: seq(5),
        limit: limit(3),
    })
    .await;
    assert_eq!(
        (seqs(&before.messages), before.has_more, before.last_seq),
        (vec![2, 3, 4], true, seq(7))
    );
    let first_page = read(HistoryQuery::Before {
        before: seq(4),
        limit: limit(3),
    })
    .await;
    assert_eq!(
        (seqs(&first_page.messages), first_page.has_more),
        (vec![1, 2, 3], false)
    );
    let nothing_before = read(HistoryQuery::Before {
        before: seq(1),
        limit: limit(3),
    })
    .await;
    assert_eq!(
        (nothing_before.messages.len(), nothing_before.has_more),
        (0, false)
    );
    let beyond = read(HistoryQuery::Before {
        before: seq(1000),
        limit: limit(2),
    })
    .await;
    assert_eq!(
        (seqs(&beyond.messages), beyond.has_more),
        (vec![6, 7], true)
    );

    let after = read(HistoryQuery::After {
        after: Seq::ZERO,
        limit: limit(3),
    })
    .await;
    assert_eq!(
        (seqs(&after.messages), after.has_more, after.last_seq),
        (vec![1, 2, 3], true, seq(7))
    );
    let last_page = read(HistoryQuery::After {
        after: seq(4),
        limit: limit(3),
    })
    .await;
    assert_eq!(
        (seqs(&last_page.messages), last_page.has_more),
        (vec![5, 6, 7], false)
    );
    let at_end = read(HistoryQuery::After {
        after: seq(7),
        limit: limit(3),
    })
    .await;
    assert_eq!(
        (at_end.messages.len(), at_end.has_more, at_end.last_seq),
        (0, false, seq(7))
    );
    let past_end = read(HistoryQuery::After {
        after: seq(99),
        limit: limit(3),
    })
    .await;
    assert_eq!((past_end.messages.len(), past_end.has_more), (0, false));
    assert!(latest.messages.iter().all(|m| m.room == room("general")));
    fixture.close(store).await;
}

/// Every way of paging a room's history, from every starting point and with page sizes from 1
/// up past the room's size, in either direction, yields each message exactly once and in
/// order, with `has_more` true exactly until the end (exhaustive rather than random: the room
/// is small enough to try every cursor).
pub async fn paging_either_way_yields_every_message_once(fixture: &impl StoreFixture) {
    const MESSAGES: u64 = 23;
    let store = fixture.open().await;
    for i in 1..=MESSAGES {
        store
            .append(post("paging", "alice", &format!("p{i}"), None))
            .await
            .unwrap();
        // Another room's messages in between must never show up.
        store
            .append(post("paging-other", "bob", &format!("o{i}"), None))
            .await
            .unwrap();
    }
    let paging = room("paging");
    for size in [1, 2, 3, 5, 7, 11, 22, 23, 24, 200] {
        for start in 0..=MESSAGES {
            // Forward from `start`: start+1 ..= MESSAGES.
            let mut seen = Vec::new();
            let mut after = if start == 0 { Seq::ZERO } else { seq(start) };
            loop {
                let page = store
                    .history(
                        &paging,
                        HistoryQuery::After {
                            after,
                            limit: limit(size),
                        },
                    )
                    .await
                    .unwrap();
                assert!(page.messages.len() as u64 <= size);
                seen.extend(seqs(&page.messages));
                let Some(last) = page.messages.last() else {
                    assert!(!page.has_more, "an empty page has nothing more after it");
                    break;
                };
                after = last.seq;
                let remaining = MESSAGES - after.get();
                assert_eq!(
                    page.has_more,
                    remaining > 0,
                    "forward from {start} by {size}"
                );
                if !page.has_more {
                    break;
                }
            }
            let expected: Vec<u64> = (start + 1..=MESSAGES).collect();
            assert_eq!(seen, expected, "forward from {start} by {size}");

            // Backward from before start+1: 1 ..= start (the latest page when start is the end).
            let mut pages = Vec::new();
            let mut query = if start == MESSAGES {
                HistoryQuery::Latest { limit: limit(size) }
            } else {
                HistoryQuery::Before {
                    before: seq(start + 1),
                    limit: limit(size),
                }
            };
            loop {
                let page = store.history(&paging, query).await.unwrap();
                assert!(page.messages.len() as u64 <= size);
                let page_seqs = seqs(&page.messages);
                assert!(page_seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
                let Some(first) = page.messages.first() else {
                    assert!(!page.has_more, "an empty page has nothing more before it");
                    break;
                };
                let before = first.seq;
                assert_eq!(
                    page.has_more,
                    before.get() > 1,
                    "backward from {start} by {size}"
                );
                pages.push(page_seqs);
                if !page.has_more {
                    break;
                }
                query = HistoryQuery::Before {
                    before,
                    limit: limit(size),
                };
            }
            let seen: Vec<u64> = pages.into_iter().rev().flatten().collect();
            let expected: Vec<u64> = (1..=start).collect();
            assert_eq!(seen, expected, "backward from {start} by {size}");
        }
    }
}

pub async fn content_and_names_round_trip_byte_exact(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    let texts = [
        "plain",
        "  padded \t with\r\nCRLF and trailing space  ",
        "<img src=x onerror=alert(1)> & &amp; \"quotes\" 'single'",
        "emoji 👩‍👩‍👧 flags 🇫🇷 skin 👍🏽",
        "combining e\u{301} vs precomposed \u{e9}",
        "RTL שלום مرحبا, CJK 漢字かなカナ, Hangul 한국어",
        "zero width \u{200b}\u{200d}\u{feff} nbsp\u{a0}",
        "surrogate-free max plane \u{10ffff}",
        "'; DROP TABLE messages; --",
    ];
    let long = "😀".repeat(4000);
    let mut all_texts: Vec<&str> = texts.to_vec();
    all_texts.push(&long);
    let users = ["Émile", "名前", "Алиса", "o.k_-"];
    for (i, text) in all_texts.iter().enumerate() {
        store
            .append(post(
                "unicode",
                users[i % 4],
                text,
                Some(&format!("id-{i}!~")),
            ))
            .await
            .unwrap();
    }
    let stored = all_messages(&store, "unicode").await;
    assert_eq!(stored.len(), all_texts.len());
    for (i, (message, text)) in stored.iter().zip(&all_texts).enumerate() {
        assert_eq!(message.text().as_bytes(), text.as_bytes());
        assert_eq!(message.username.as_str(), users[i % 4]);
        assert_eq!(
            message.client_id.as_ref().map(ClientId::as_str),
            Some(format!("id-{i}!~").as_str())
        );
    }
    fixture.close(store).await;
}

pub async fn reopening_keeps_everything(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    let mut written = Vec::new();
    for i in 0..25 {
        let appended = store
            .append(post(
                "general",
                "alice",
                &format!("m{i}"),
                Some(&format!("c{i}")),
            ))
            .await
            .unwrap();
        written.push(appended.into_message());
    }
    fixture.close(store).await;
    let reopened = fixture.open().await;
    assert_eq!(all_messages(&reopened, "general").await, written);
    // Seqs continue, and client ids are still remembered.
    let next = reopened
        .append(post("general", "alice", "after reopen", None))
        .await
        .unwrap();
    assert!(matches!(next, Appended::Stored(m) if m.seq == seq(26)));
    let resend = reopened
        .append(post("general", "alice", "again", Some("c3")))
        .await
        .unwrap();
    assert_eq!(resend, Appended::Duplicate(written[3].clone()));
    fixture.close(reopened).await;
}

pub async fn rooms_are_listed_by_name_in_pages(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    for name in ["c-room", "a_room", "b-room", "a-room", "z9"] {
        store
            .append(post(name, "alice", "hello", None))
            .await
            .unwrap();
    }
    store
        .append(post("b-room", "alice", "again", None))
        .await
        .unwrap();
    let page = store
        .rooms(None, PageLimit::bounded(3, 1000).unwrap())
        .await
        .unwrap();
    let names: Vec<&str> = page.rooms.iter().map(|r| r.room.as_str()).collect();
    // Code-point order: '-' (0x2d) sorts before '_' (0x5f).
    assert_eq!(names, ["a-room", "a_room", "b-room"]);
    assert!(page.has_more);
    assert_eq!(page.rooms[2].last_seq, seq(2));
    assert!(page.rooms[2].last_message_at.is_some());
    let rest = store
        .rooms(Some(&room("b-room")), PageLimit::bounded(3, 1000).unwrap())
        .await
        .unwrap();
    let names: Vec<&str> = rest.rooms.iter().map(|r| r.room.as_str()).collect();
    assert_eq!(names, ["c-room", "z9"]);
    assert!(!rest.has_more);
    fixture.close(store).await;
}

pub async fn readiness_answers(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    store.check().await.unwrap();
    fixture.close(store).await;
}

pub async fn concurrent_reads_and_writes_agree(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                store
                    .append(post("busy", "alice", &format!("m{i}"), None))
                    .await
                    .unwrap();
            }
        })
    };
    // Readers never see a gap or a page out of order while writes land.
    for _ in 0..30 {
        let page = store
            .history(&room("busy"), HistoryQuery::Latest { limit: limit(50) })
            .await
            .unwrap();
        let s = seqs(&page.messages);
        assert!(
            s.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous page: {s:?}"
        );
        if let Some(last) = s.last() {
            assert_eq!(page.last_seq.get(), *last);
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert_eq!(all_messages(&store, "busy").await.len(), 300);
    fixture.close(store).await;
}

/// An edit or a delete of `seq` in `room_name` by `author`.
pub fn change_of(room_name: &str, seq_no: u64, author: &str, change: Change) -> ChangeRequest {
    ChangeRequest {
        room: room(room_name),
        seq: seq(seq_no),
        author: user(author),
        change,
    }
}

pub fn edit(text: &str) -> Change {
    Change::Edit(Content::parse(text).unwrap())
}

pub fn rev(n: u64) -> Rev {
    Rev::new(n).unwrap()
}

/// Commits a change the case expects to be accepted and real; returns its rev and message.
async fn updated(store: &impl MessageStore, request: ChangeRequest) -> (Rev, Message) {
    match store.change(request).await.unwrap() {
        Ok(Changed::Updated(MessageChange { rev, message })) => (rev, message),
        other => panic!("expected a committed change, got {other:?}"),
    }
}

fn changes_query(after: u64, limit_n: u64) -> ChangesQuery {
    ChangesQuery {
        after: rev(after),
        through: None,
        max_seq: None,
        limit: limit(limit_n),
    }
}

pub async fn edits_and_deletes_follow_the_rules(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    let original = store
        .append(post("general", "alice", "helo", Some("c1")))
        .await
        .unwrap()
        .into_message();
    store
        .append(post("general", "bob", "hi alice", None))
        .await
        .unwrap();

    let refused = |r: Result<Result<Changed, ChangeRefusal>, _>| r.unwrap().err();
    assert_eq!(
        refused(
            store
                .change(change_of("general", 1, "bob", edit("mine")))
                .await
        ),
        Some(ChangeRefusal::Forbidden)
    );
    assert_eq!(
        refused(
            store
                .change(change_of("general", 2, "alice", Change::Delete))
                .await
        ),
        Some(ChangeRefusal::Forbidden)
    );
    assert_eq!(
        refused(
            store
                .change(change_of("general", 3, "alice", edit("x")))
                .await
        ),
        Some(ChangeRefusal::NotFound)
    );
    assert_eq!(
        refused(
            store
                .change(change_of("nowhere", 1, "alice", edit("x")))
                .await
        ),
        Some(ChangeRefusal::NotFound)
    );

    let (r1, edited) = updated(&store, change_of("general", 1, "alice", edit("hello"))).await;
    assert_eq!(r1, rev(1));
    assert_eq!(edited.text(), "hello");
    assert!(edited.edited_at.is_some_and(|t| t >= original.timestamp));
    assert_eq!(
        (edited.seq, edited.timestamp, &edited.client_id),
        (original.seq, original.timestamp, &original.client_id)
    );
    // The same content again changes nothing and takes no rev.
    let same = store
        .change(change_of("general", 1, "alice", edit("hello")))
        .await
        .unwrap();
    assert_eq!(same, Ok(Changed::Unchanged(edited.clone())));

    let (r2, tombstone) = updated(&store, change_of("general", 1, "alice", Change::Delete)).await;
    assert_eq!(r2, rev(2), "gapless: the unchanged edit took none");
    assert!(tombstone.is_deleted());
    assert_eq!(tombstone.text(), "");
    assert_eq!(tombstone.client_id, None);
    assert_eq!(
        tombstone.edited_at, edited.edited_at,
        "a delete keeps edited_at"
    );
    assert_eq!(
        store
            .change(change_of("general", 1, "alice", Change::Delete))
            .await
            .unwrap(),
        Ok(Changed::Unchanged(tombstone.clone()))
    );
    assert_eq!(
        refused(
            store
                .change(change_of("general", 1, "alice", edit("back")))
                .await
        ),
        Some(ChangeRefusal::NotFound)
    );

    // History shows the current state, and the counter read before it.
    let page = store
        .history(&room("general"), HistoryQuery::Latest { limit: limit(10) })
        .await
        .unwrap();
    assert_eq!(page.messages[0], tombstone);
    assert_eq!(page.last_rev, rev(2));
    // A late resend of the deleted message's client id gets the tombstone and stores nothing.
    let resend = store
        .append(post("general", "alice", "helo", Some("c1")))
        .await
        .unwrap();
    assert_eq!(resend, Appended::Duplicate(tombstone.clone()));
    assert_eq!(seqs(&all_messages(&store, "general").await), [1, 2]);
    fixture.close(store).await;
}

pub async fn changes_are_listed_once_each_and_every_rev_is_kept(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    for i in 1..=4 {
        store
            .append(post("general", "alice", &format!("m{i}"), None))
            .await
            .unwrap();
    }
    updated(&store, change_of("general", 1, "alice", edit("m1 v2"))).await;
    updated(&store, change_of("general", 3, "alice", edit("m3 v2"))).await;
    let (_, m1) = updated(&store, change_of("general", 1, "alice", edit("m1 v3"))).await;
    let (_, m4) = updated(&store, change_of("general", 4, "alice", Change::Delete)).await;
    let room_name = room("general");

    let listed = |page: &ChangesPage| -> Vec<(u64, u64)> {
        page.changes
            .iter()
            .map(|c| (c.rev.get(), c.message.seq.get()))
            .collect()
    };
    let all = store
        .changes(&room_name, changes_query(0, 50))
        .await
        .unwrap();
    assert_eq!(
        listed(&all),
        [(2, 3), (3, 1), (4, 4)],
        "each once, by latest rev"
    );
    assert_eq!(all.changes[1].message, m1);
    assert_eq!(all.changes[2].message, m4);
    assert_eq!((all.has_more, all.last_rev), (false, rev(4)));
    let paged = store
        .changes(&room_name, changes_query(0, 2))
        .await
        .unwrap();
    assert_eq!(
        (listed(&paged), paged.has_more),
        (vec![(2, 3), (3, 1)], true)
    );
    let after = store
        .changes(&room_name, changes_query(3, 50))
        .await
        .unwrap();
    assert_eq!(listed(&after), [(4, 4)]);
    let bounded = store
        .changes(
            &room_name,
            ChangesQuery {
                after: rev(0),
                through: Some(rev(3)),
                max_seq: Some(seq(2)),
                limit: limit(50),
            },
        )
        .await
        .unwrap();
    assert_eq!(listed(&bounded), [(3, 1)]);
    let none = store
        .changes(&room("empty"), changes_query(0, 50))
        .await
        .unwrap();
    assert_eq!((none.changes.len(), none.last_rev), (0, Rev::ZERO));

    // Every rev, gapless, each with its message as it now is.
    let revisions = store
        .revisions(&room_name, rev(0), limit(50))
        .await
        .unwrap();
    assert_eq!(listed(&revisions), [(1, 1), (2, 3), (3, 1), (4, 4)]);
    assert_eq!(
        revisions.changes[0].message, m1,
        "current state, not as of rev 1"
    );
    let tail = store.revisions(&room_name, rev(2), limit(1)).await.unwrap();
    assert_eq!((listed(&tail), tail.has_more), (vec![(3, 1)], true));
    fixture.close(store).await;
}

pub async fn revs_are_gapless_with_concurrent_changes_from_two_processes(
    fixture: &impl StoreFixture,
) {
    let first = fixture.open().await;
    let second = fixture.open().await;
    let posters = 8u64;
    for i in 0..posters {
        first
            .append(post("busy", &format!("user{i}"), "v0", None))
            .await
            .unwrap();
    }
    let edits_each = 10;
    let mut tasks = Vec::new();
    for i in 0..posters {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for n in 1..=edits_each {
                let request = change_of("busy", i + 1, &format!("user{i}"), edit(&format!("v{n}")));
                // A post in the same room interleaves with the changes.
                store
                    .append(post("busy", &format!("user{i}"), "more", None))
                    .await
                    .unwrap();
                match store.change(request).await.unwrap() {
                    Ok(Changed::Updated(change)) => revs.push(change.rev.get()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let revs = task.await.unwrap();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "in commit order: {revs:?}"
        );
        all.extend(revs);
    }
    all.sort_unstable();
    let total = posters * edits_each;
    assert_eq!(
        all,
        (1..=total).collect::<Vec<u64>>(),
        "gapless, no rev twice"
    );
    let mut logged = Vec::new();
    let mut after = Rev::ZERO;
    loop {
        let page = first
            .revisions(&room("busy"), after, limit(200))
            .await
            .unwrap();
        logged.extend(page.changes.iter().map(|c| c.rev.get()));
        after = page.changes.last().map_or(after, |c| c.rev);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(logged, (1..=total).collect::<Vec<u64>>());
    let messages = all_messages(&first, "busy").await;
    assert_eq!(messages.len() as u64, posters + posters * edits_each);
    assert!(
        messages[..posters as usize]
            .iter()
            .all(|m| m.text() == "v10")
    );
    fixture.close(second).await;
    fixture.close(first).await;
}
