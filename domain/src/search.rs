//! Search: the contract's query language, the words of a text, and where a query matches.
//!
//! A word is a run of Unicode letters and digits (`char::is_alphanumeric`); everything else
//! separates words. Matching is case-insensitive (each character lowercased on its own, with
//! final sigma, dotted capital I and a few symbol variants made equal to their letters: see
//! `fold`), the same on every backend. A query is words that must all occur as whole words, the last
//! unquoted one also as a prefix, and `"quoted phrases"` of consecutive words.
//!
//! [`SearchQuery::matches`] is the definition every store must agree with: stores find
//! candidates with an index of [`index_words`] and confirm each with it, which also yields the
//! highlights.

use crate::{Message, PageLimit, RoomName, Seq};

/// The longest query, in Unicode scalar values.
pub const QUERY_MAX_CHARS: usize = 200;

/// Words are indexed by their first this many characters: no query word can be longer, so a
/// longer indexed word still matches by prefix, and equality is confirmed on the content.
pub const INDEXED_WORD_MAX_CHARS: usize = QUERY_MAX_CHARS;

/// The largest search page.
pub const SEARCH_MAX_LIMIT: u16 = 100;
/// The search page when none is asked for.
pub const SEARCH_DEFAULT_LIMIT: u16 = 20;

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {QUERY_MAX_CHARS} characters")]
    TooLong,
    #[error("must contain a word (letters or digits)")]
    NoWord,
}

/// One condition of a query; every word is lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// The word occurs as a whole word.
    Word(String),
    /// Some word is this one or starts with it (the last unquoted word of a query).
    Prefix(String),
    /// These words occur one after the other (two or more).
    Phrase(Vec<String>),
}

/// A parsed, valid query: at least one term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    terms: Vec<Term>,
}

/// A match in a content: `[start, end)` in Unicode scalar values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Highlight {
    pub start: usize,
    pub end: usize,
}

/// A word of a text: its place in scalar values, and its lowercased form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub start: usize,
    pub end: usize,
    pub folded: String,
}

/// The words of `text`, in order.
pub fn words(text: &str) -> Vec<Word> {
    let mut found = Vec::new();
    let mut current: Option<Word> = None;
    for (at, c) in text.chars().enumerate() {
        if c.is_alphanumeric() {
            let word = current.get_or_insert_with(|| Word {
                start: at,
                end: at,
                folded: String::new(),
            });
            word.end = at + 1;
            fold(c, &mut word.folded);
        } else if let Some(word) = current.take() {
            found.push(word);
        }
    }
    found.extend(current);
    found
}

/// Appends `c` lowercased, with the few letters whose lowercase form is not the one other
/// forms of the same letter lowercase to made equal: final sigma is sigma, the Turkish dotted
/// capital I is i (not i and a combining dot), long s is s, the Greek symbol variants are
/// their letters. Each character alone, so a word's folding never depends on its neighbours.
fn fold(c: char, out: &mut String) {
    match c {
        'ς' => out.push('σ'),
        'İ' => out.push('i'),
        'ſ' => out.push('s'),
        'µ' => out.push('μ'),
        'ϐ' => out.push('β'),
        'ϑ' => out.push('θ'),
        'ϕ' => out.push('φ'),
        'ϖ' => out.push('π'),
        'ϰ' => out.push('κ'),
        'ϱ' => out.push('ρ'),
        'ϵ' => out.push('ε'),
        _ => out.extend(c.to_lowercase()),
    }
}

/// What a store indexes for `text`: its lowercased words in order, each cut to
/// [`INDEXED_WORD_MAX_CHARS`].
pub fn index_words(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .map(|word| {
            if word.folded.chars().count() > INDEXED_WORD_MAX_CHARS {
                word.folded.chars().take(INDEXED_WORD_MAX_CHARS).collect()
            } else {
                word.folded
            }
        })
        .collect()
}

impl SearchQuery {
    /// Parses `q` by the contract's rules. Quotes pair up left to right; an unpaired one is
    /// ignored (it separates words like any other sign). A quoted single word is a whole word,
    /// never a prefix.
    ///
    /// # Errors
    /// [`QueryError`] when `q` is empty, longer than [`QUERY_MAX_CHARS`] or has no word.
    pub fn parse(q: &str) -> Result<Self, QueryError> {
        if q.is_empty() {
            return Err(QueryError::Empty);
        }
        if q.chars().count() > QUERY_MAX_CHARS {
            return Err(QueryError::TooLong);
        }
        let quotes = q.matches('"').count();
        // Quotes beyond the last pair are unpaired: the text after them is unquoted.
        let paired = quotes - quotes % 2;
        let mut terms = Vec::new();
        let mut unquoted: Vec<String> = Vec::new();
        for (i, part) in q.split('"').enumerate() {
            let inside = i % 2 == 1 && i < paired;
            let mut found: Vec<String> = words(part).into_iter().map(|w| w.folded).collect();
            if !inside {
                unquoted.append(&mut found);
            } else if found.len() == 1 {
                terms.extend(found.pop().map(Term::Word));
            } else if !found.is_empty() {
                terms.push(Term::Phrase(found));
            }
        }
        if let Some(last) = unquoted.pop() {
            terms.extend(unquoted.into_iter().map(Term::Word));
            terms.push(Term::Prefix(last));
        }
        if terms.is_empty() {
            return Err(QueryError::NoWord);
        }
        Ok(Self { terms })
    }

    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Where this query matches `content`, sorted and with overlaps merged; `None` unless
    /// every term occurs. A prefix match highlights the whole word; a phrase, its words and
    /// what lies between them.
    pub fn matches(&self, content: &str) -> Option<Vec<Highlight>> {
        let words = words(content);
        let mut found = Vec::new();
        for term in &self.terms {
            let before = found.len();
            match term {
                Term::Word(w) => found.extend(
                    words
                        .iter()
                        .filter(|word| &word.folded == w)
                        .map(Word::highlight),
                ),
                Term::Prefix(p) => found.extend(
                    words
                        .iter()
                        .filter(|word| word.folded.starts_with(p.as_str()))
                        .map(Word::highlight),
                ),
                Term::Phrase(phrase) => {
                    found.extend(words.windows(phrase.len()).filter_map(|run| {
                        let same = run.iter().zip(phrase).all(|(word, w)| &word.folded == w);
                        match (same, run.first(), run.last()) {
                            (true, Some(first), Some(last)) => Some(Highlight {
                                start: first.start,
                                end: last.end,
                            }),
                            _ => None,
                        }
                    }));
                }
            }
            if found.len() == before {
                return None;
            }
        }
        found.sort_unstable();
        let mut merged: Vec<Highlight> = Vec::with_capacity(found.len());
        for h in found {
            match merged.last_mut() {
                Some(last) if h.start < last.end => last.end = last.end.max(h.end),
                _ => merged.push(h),
            }
        }
        Some(merged)
    }
}

impl Word {
    fn highlight(&self) -> Highlight {
        Highlight {
            start: self.start,
            end: self.end,
        }
    }
}

/// Where to search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchScope {
    /// One room, newest first, older than `before` when given.
    Room { room: RoomName, before: Option<Seq> },
    /// Every public room and these private ones, newest first by timestamp.
    Readable { member_of: Vec<RoomName> },
}

/// A message found, in its current state, with where the query matched its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub message: Message,
    pub highlights: Vec<Highlight>,
}

impl SearchHit {
    /// The order of a search across rooms: newest first by timestamp; ties by room and seq,
    /// so a page is stable.
    pub fn newest_first(a: &SearchHit, b: &SearchHit) -> std::cmp::Ordering {
        (b.message.timestamp, b.message.room.as_str(), b.message.seq).cmp(&(
            a.message.timestamp,
            a.message.room.as_str(),
            a.message.seq,
        ))
    }
}

/// A page of results, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// More results exist beyond this page.
    pub has_more: bool,
}

/// A search page size: 1 to [`SEARCH_MAX_LIMIT`].
pub fn search_limit(value: Option<u64>) -> Result<PageLimit, crate::PageLimitOutOfRange> {
    PageLimit::bounded(
        value.unwrap_or(u64::from(SEARCH_DEFAULT_LIMIT)),
        SEARCH_MAX_LIMIT,
    )
}

/// A hit for `message` if it is not deleted and `query` matches its current content.
pub fn hit(query: &SearchQuery, message: Message) -> Option<SearchHit> {
    let highlights = query.matches(message.content.as_ref()?.as_str())?;
    Some(SearchHit {
        message,
        highlights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(text: &str) -> SearchQuery {
        match SearchQuery::parse(text) {
            Ok(query) => query,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn spans(query: &str, content: &str) -> Option<Vec<(usize, usize)>> {
        q(query)
            .matches(content)
            .map(|hs| hs.into_iter().map(|h| (h.start, h.end)).collect())
    }

    #[test]
    fn words_are_runs_of_letters_and_digits_lowercased() {
        let found: Vec<_> = words("Héllo, WORLD-42 ünïcode_x")
            .into_iter()
            .map(|w| (w.start, w.end, w.folded))
            .collect();
        assert_eq!(
            found,
            vec![
                (0, 5, "héllo".to_owned()),
                (7, 12, "world".to_owned()),
                (13, 15, "42".to_owned()),
                (16, 23, "ünïcode".to_owned()),
                (24, 25, "x".to_owned()),
            ]
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(SearchQuery::parse(""), Err(QueryError::Empty));
        assert_eq!(SearchQuery::parse("  ,.!"), Err(QueryError::NoWord));
        assert_eq!(SearchQuery::parse("\"\""), Err(QueryError::NoWord));
        assert_eq!(
            SearchQuery::parse(&"a".repeat(201)),
            Err(QueryError::TooLong)
        );
        assert!(
            SearchQuery::parse(&"é".repeat(200)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn the_last_unquoted_word_is_a_prefix_and_quotes_make_phrases() {
        assert_eq!(
            q("Hello \"big WORLD\" wor").terms(),
            &[
                Term::Phrase(vec!["big".into(), "world".into()]),
                Term::Word("hello".into()),
                Term::Prefix("wor".into()),
            ]
        );
        // A quoted single word is whole; an unpaired quote is ignored.
        assert_eq!(q("\"cat\"").terms(), &[Term::Word("cat".into())]);
        assert_eq!(
            q("say \"hi there").terms(),
            &[
                Term::Word("say".into()),
                Term::Word("hi".into()),
                Term::Prefix("there".into())
            ]
        );
    }

    #[test]
    fn every_term_must_occur_as_a_whole_word() {
        assert_eq!(spans("cat", "the cat sat"), Some(vec![(4, 7)]));
        assert_eq!(spans("\"cat\"", "concatenate"), None);
        assert_eq!(spans("\"cat\"", "cats"), None);
        assert_eq!(spans("cat dog", "a cat"), None);
        assert_eq!(spans("CAT", "Cat and cAt"), Some(vec![(0, 3), (8, 11)]));
    }

    #[test]
    fn letters_with_several_lowercase_forms_match_each_other() {
        assert_eq!(spans("ΛΌΓΟΣ", "ο λόγος"), Some(vec![(2, 7)]));
        assert_eq!(spans("\"λόγοσ\"", "ο λόγος"), Some(vec![(2, 7)]));
        assert_eq!(spans("istanbul", "İstanbul'da"), Some(vec![(0, 8)]));
        assert_eq!(spans("µm", "5 μm"), Some(vec![(2, 4)]));
    }

    #[test]
    fn a_prefix_highlights_the_whole_word() {
        assert_eq!(spans("hel", "say hello!"), Some(vec![(4, 9)]));
        assert_eq!(spans("\"hel\"", "say hello!"), None);
    }

    #[test]
    fn a_phrase_needs_consecutive_words_and_highlights_the_run() {
        assert_eq!(spans("\"big world\"", "a big, world"), Some(vec![(2, 12)]));
        assert_eq!(spans("\"big world\"", "a big bad world"), None);
    }

    #[test]
    fn offsets_count_scalar_values_and_overlaps_merge() {
        // "😀" is one scalar value (two UTF-16 units, four bytes).
        assert_eq!(spans("ok", "😀 ok"), Some(vec![(2, 4)]));
        assert_eq!(
            spans("\"hello world\" hello", "hello world"),
            Some(vec![(0, 11)])
        );
    }

    #[test]
    fn long_words_are_indexed_by_their_start() {
        let long = "x".repeat(INDEXED_WORD_MAX_CHARS + 5);
        assert_eq!(
            index_words(&format!("a {long}")),
            vec!["a".to_owned(), "x".repeat(INDEXED_WORD_MAX_CHARS)]
        );
    }

    proptest! {
        #[test]
        fn every_word_of_a_content_finds_it(content in "\\PC{0,60}") {
            for word in words(&content) {
                let text: String = content.chars().skip(word.start).take(word.end - word.start).collect();
                let query = SearchQuery::parse(&format!("\"{text}\""));
                prop_assume!(query.is_ok());
                let highlights = query.ok().and_then(|query| query.matches(&content));
                prop_assert!(
                    highlights.is_some_and(|hs| hs.iter().any(|h| h.start <= word.start && word.end <= h.end)),
                    "{:?} in {:?}", text, content
                );
            }
        }

        #[test]
        fn parsing_never_panics_and_highlights_lie_inside_words(
            query in "\\PC{0,40}",
            content in "\\PC{0,80}",
        ) {
            if let Ok(query) = SearchQuery::parse(&query) {
                let length = content.chars().count();
                for h in query.matches(&content).unwrap_or_default() {
                    prop_assert!(h.start < h.end && h.end <= length);
                }
            }
        }
    }
}
