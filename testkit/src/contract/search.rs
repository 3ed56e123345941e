//! The search cases of the [`MessageStore`] contract: the query rules on stored messages, in a
//! room and across the rooms a caller may read, paging, and edits and deletes — each checked
//! before the store's index has caught up, after it has, and with a tail of newer messages
//! (whatever a store keeps off its posting path, every committed message is found).

use banter_domain::ports::MessageStore;
use banter_domain::{Change, Highlight, SearchPage, SearchQuery, SearchScope};

use super::store::{change_of, edit, limit, post, seq};
use super::{StoreFixture, room, user};

async fn search(store: &impl MessageStore, scope: SearchScope, q: &str, page: u64) -> SearchPage {
    let query = SearchQuery::parse(q).unwrap();
    store.search(&scope, &query, limit(page)).await.unwrap()
}

fn in_room(name: &str, before: Option<u64>) -> SearchScope {
    SearchScope::Room {
        room: room(name),
        before: before.map(seq),
    }
}

fn readable(member_of: &[&str]) -> SearchScope {
    SearchScope::Readable {
        member_of: member_of.iter().map(|r| room(r)).collect(),
    }
}

/// The (room, seq) of each hit, in order.
fn found(page: &SearchPage) -> Vec<(String, u64)> {
    page.hits
        .iter()
        .map(|h| (h.message.room.as_str().to_owned(), h.message.seq.get()))
        .collect()
}

fn at(room_name: &str, seqs: &[u64]) -> Vec<(String, u64)> {
    seqs.iter().map(|s| (room_name.to_owned(), *s)).collect()
}

fn spans(page: &SearchPage) -> Vec<Vec<(usize, usize)>> {
    page.hits
        .iter()
        .map(|h| {
            h.highlights
                .iter()
                .map(|Highlight { start, end }| (*start, *end))
                .collect()
        })
        .collect()
}

/// What every state of the index must answer the same way.
async fn check_the_rules(store: &impl MessageStore) {
    let hello = search(store, in_room("general", None), "hello", 20).await;
    assert_eq!(found(&hello), at("general", &[4, 2, 1]), "newest first");
    assert_eq!(
        spans(&hello),
        vec![vec![(21, 26)], vec![(0, 5)], vec![(0, 5)]]
    );
    assert!(!hello.has_more);

    // The last word as a prefix highlights the whole word; a quoted word is whole only.
    let world = search(store, in_room("general", None), "\"hello\" world", 20).await;
    assert_eq!(found(&world), at("general", &[2, 1]));
    assert_eq!(
        spans(&world),
        vec![vec![(0, 5), (13, 22)], vec![(0, 5), (10, 15)]]
    );
    let whole = search(store, in_room("general", None), "\"world\" hello", 20).await;
    assert_eq!(found(&whole), at("general", &[1]));

    let phrase = search(store, in_room("general", None), "\"big world\"", 20).await;
    assert_eq!(found(&phrase), at("general", &[1]));
    assert_eq!(spans(&phrase), vec![vec![(6, 15)]]);
    assert!(found(&search(store, in_room("general", None), "\"world big\"", 20).await).is_empty());

    // Case-insensitive beyond ASCII; offsets in scalar values.
    let koeln = search(store, in_room("general", None), "KÖLN", 20).await;
    assert_eq!(found(&koeln), at("general", &[4]));
    assert_eq!(spans(&koeln), vec![vec![(10, 14)]]);

    // Pages: older results below `before`.
    let first = search(store, in_room("general", None), "hello", 2).await;
    assert_eq!(found(&first), at("general", &[4, 2]));
    assert!(first.has_more);
    let next = search(store, in_room("general", Some(2)), "hello", 2).await;
    assert_eq!(found(&next), at("general", &[1]));
    assert!(!next.has_more);

    // Across rooms: public ones, and private ones only for members.
    let mut public = found(&search(store, readable(&[]), "hello", 20).await);
    public.sort();
    let mut expected = at("general", &[1, 2, 4]);
    expected.extend(at("random", &[1]));
    assert_eq!(public, expected);
    let mut member = found(&search(store, readable(&["team"]), "hello", 20).await);
    member.sort();
    expected.extend(at("team", &[1]));
    expected.sort();
    assert_eq!(member, expected);
    let newest_first = search(store, readable(&["team"]), "hello", 20).await;
    assert!(
        newest_first
            .hits
            .windows(2)
            .all(|w| w[0].message.timestamp >= w[1].message.timestamp),
        "newest first by timestamp"
    );
    let two = search(store, readable(&["team"]), "hello", 2).await;
    assert_eq!(two.hits.len(), 2);
    assert!(two.has_more);
}

pub async fn search_follows_the_query_rules_before_and_after_indexing(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    assert!(
        store
            .create_private_room(&room("team"), &user("alice"))
            .await
            .unwrap()
    );
    for (room_name, author, text) in [
        ("general", "alice", "Hello big World"),
        ("general", "bob", "hello there, worldwide friends"),
        ("general", "alice", "nothing to see"),
        ("random", "bob", "HELLO from random"),
        ("team", "alice", "hello team secret"),
        ("general", "carol", "Grüße aus Köln — ünï hello"),
    ] {
        store
            .append(post(room_name, author, text, None))
            .await
            .unwrap();
    }
    check_the_rules(&store).await;
    fixture.index_search(&store).await;
    check_the_rules(&store).await;

    // Edits and deletes, of indexed messages and of a tail not indexed yet.
    store
        .append(post("general", "dave", "a tail message about zebras", None))
        .await
        .unwrap();
    for (seq_no, author, change) in [
        (1, "alice", edit("goodbye moon")),
        (2, "bob", Change::Delete),
        (5, "dave", edit("a tail message about giraffes")),
    ] {
        store
            .change(change_of("general", seq_no, author, change))
            .await
            .unwrap()
            .unwrap();
    }
    let expect_after_changes = async |store: &_| {
        let hello = search(store, in_room("general", None), "hello", 20).await;
        assert_eq!(
            found(&hello),
            at("general", &[4]),
            "edited away and deleted"
        );
        let moon = search(store, in_room("general", None), "moon", 20).await;
        assert_eq!(
            found(&moon),
            at("general", &[1]),
            "found by its current content"
        );
        assert!(found(&search(store, in_room("general", None), "worldwide", 20).await).is_empty());
        assert!(found(&search(store, in_room("general", None), "zebras", 20).await).is_empty());
        let giraffes = search(store, in_room("general", None), "giraffes", 20).await;
        assert_eq!(found(&giraffes), at("general", &[5]));
        assert_eq!(
            found(&search(store, readable(&[]), "giraffes", 20).await),
            at("general", &[5])
        );
    };
    expect_after_changes(&store).await;
    fixture.index_search(&store).await;
    expect_after_changes(&store).await;
    fixture.close(store).await;
}

/// Many matches, some indexed and some not: pages of a room, newest first, meet without a
/// gap or a double, and a search across rooms takes the newest.
pub async fn search_pages_through_many_matches_once_each(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    for n in 1..=30_u64 {
        let text = if n % 3 == 0 {
            format!("note {n}")
        } else {
            format!("noted {n} other")
        };
        store
            .append(post("busy", "alice", &text, None))
            .await
            .unwrap();
        if n == 20 {
            fixture.index_search(&store).await;
        }
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = search(&store, in_room("busy", before), "not", 4).await;
        seen.extend(page.hits.iter().map(|h| h.message.seq.get()));
        before = page.hits.last().map(|h| h.message.seq.get());
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, (1..=30).rev().collect::<Vec<_>>());
    let notes = search(&store, in_room("busy", None), "\"note\"", 100).await;
    assert_eq!(
        found(&notes),
        at("busy", &(1..=10).rev().map(|n| n * 3).collect::<Vec<_>>())
    );
    // Nothing beyond a room's last seq, nothing in a room without messages.
    assert!(found(&search(&store, in_room("empty", None), "not", 5).await).is_empty());
    fixture.close(store).await;
}

/// A phrase is found wherever it stands, also after the 256th occurrence of a word (Postgres
/// keeps 256 positions of a word), before and after indexing.
pub async fn a_phrase_is_found_however_often_its_words_occur(fixture: &impl StoreFixture) {
    let store = fixture.open().await;
    let long = format!("{}b a", "a ".repeat(300));
    store
        .append(post("long", "alice", &long, None))
        .await
        .unwrap();
    store
        .append(post("long", "alice", "a b but not the other way", None))
        .await
        .unwrap();
    for _ in 0..2 {
        let found = search(&store, in_room("long", None), "\"b a\"", 20).await;
        assert_eq!(found.hits.len(), 1, "only the long message has b then a");
        assert_eq!(found.hits[0].message.seq.get(), 1);
        assert_eq!(
            found.hits[0].highlights,
            vec![Highlight {
                start: 600,
                end: 603
            }]
        );
        fixture.index_search(&store).await;
    }
    fixture.close(store).await;
}
