//! Query parameters shared by the REST operations and the WebSocket handshake: page sizes and
//! the cursors (`before`/`after`) that page through history, rooms and people online.

use banter_domain::{PageLimit, Rev, Seq};

use crate::problem::{ErrorCode, Problem, Refusal};

/// A page size's default and largest value, as the contract gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageBounds {
    pub default: u16,
    pub max: u16,
}

/// `GET /api/rooms/{room}/messages`: 1–200, default 50.
pub const HISTORY_PAGE: PageBounds = PageBounds {
    default: 50,
    max: PageLimit::MAX_HISTORY,
};

/// `GET /api/rooms/{room}/changes`: 1–200, default 50.
pub const CHANGES_PAGE: PageBounds = PageBounds {
    default: 50,
    max: PageLimit::MAX_HISTORY,
};

/// `GET /api/rooms/{room}/search` and `GET /api/search`: 1–100, default 20.
pub const SEARCH_PAGE: PageBounds = PageBounds {
    default: banter_domain::SEARCH_DEFAULT_LIMIT,
    max: banter_domain::SEARCH_MAX_LIMIT,
};

/// A search's `q`, parsed by the contract's rules.
pub fn search_query(value: Option<String>) -> Result<banter_domain::SearchQuery, Problem> {
    banter_domain::SearchQuery::parse(value.as_deref().unwrap_or(""))
        .map_err(|e| Refusal::of_field(ErrorCode::InvalidParameter, "q", e).into())
}

/// `GET /api/rooms`: 1–1000, default 100.
pub const ROOMS_PAGE: PageBounds = PageBounds {
    default: 100,
    max: 1000,
};

/// `GET /api/rooms/{room}/presence`: 1–1000, default 1000.
pub const PRESENCE_PAGE: PageBounds = PageBounds {
    default: 1000,
    max: 1000,
};

/// The `limit` parameter within `bounds`, or its default when not given.
pub fn page_limit(value: Option<i64>, bounds: PageBounds) -> Result<PageLimit, Problem> {
    let value = value.unwrap_or(i64::from(bounds.default));
    u64::try_from(value)
        .ok()
        .and_then(|v| PageLimit::bounded(v, bounds.max).ok())
        .ok_or_else(|| {
            let reason = format!("must be an integer from 1 to {}, got {value}", bounds.max);
            Refusal::of_field(ErrorCode::InvalidParameter, "limit", reason).into()
        })
}

fn not_a_seq(name: &str, got: impl std::fmt::Display) -> Problem {
    let reason = format!("must be an integer ≥ 0, got {got}");
    Refusal::of_field(ErrorCode::InvalidParameter, name, reason).into()
}

/// A seq cursor (`before`, `after`) given as a number.
pub fn seq_cursor(name: &str, value: Option<i64>) -> Result<Option<Seq>, Problem> {
    value
        .map(|v| Seq::from_i64(v).map_err(|_| not_a_seq(name, v)))
        .transpose()
}

/// A seq cursor given as text (the handshake's query string).
pub fn seq_cursor_from_text(name: &str, raw: &str) -> Result<Seq, Problem> {
    raw.parse::<i64>()
        .ok()
        .and_then(|v| Seq::from_i64(v).ok())
        .ok_or_else(|| not_a_seq(name, format!("{raw:?}")))
}

/// A rev cursor given as text (the handshake's `rev`).
pub fn rev_cursor_from_text(name: &str, raw: &str) -> Result<Rev, Problem> {
    raw.parse::<i64>()
        .ok()
        .and_then(|v| Rev::from_i64(v).ok())
        .ok_or_else(|| not_a_seq(name, format!("{raw:?}")))
}

/// A rev cursor (`after_rev`) given as a number.
pub fn rev_cursor(name: &str, value: Option<i64>) -> Result<Rev, Problem> {
    value.map_or(Ok(Rev::ZERO), |v| {
        Rev::from_i64(v).map_err(|_| not_a_seq(name, v))
    })
}

/// A message's seq in a path: a positive integer.
pub fn seq_in_path(raw: &str) -> Result<Seq, Problem> {
    raw.parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .and_then(|v| Seq::new(v).ok())
        .ok_or_else(|| {
            let reason = format!("must be a positive integer, got {raw:?}");
            Refusal::of_field(ErrorCode::InvalidParameter, "seq", reason).into()
        })
}

/// A name cursor (`after=<room>`, `after=<username>`): the name it starts after, which must be
/// one that could exist.
pub fn name_cursor<T, E: std::fmt::Display>(
    raw: Option<String>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, Problem> {
    raw.map(|raw| {
        parse(&raw).map_err(|e| Refusal::of_field(ErrorCode::InvalidParameter, "after", e).into())
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(problem: Problem) -> String {
        assert_eq!(problem.code, "invalid_parameter");
        problem.detail
    }

    #[test]
    fn limits_default_and_stay_within_their_bounds() {
        assert_eq!(page_limit(None, HISTORY_PAGE).unwrap().get(), 50);
        assert_eq!(page_limit(None, ROOMS_PAGE).unwrap().get(), 100);
        assert_eq!(page_limit(Some(200), HISTORY_PAGE).unwrap().get(), 200);
        assert_eq!(
            detail(page_limit(Some(201), HISTORY_PAGE).unwrap_err()),
            "limit: must be an integer from 1 to 200, got 201"
        );
        assert!(page_limit(Some(0), PRESENCE_PAGE).is_err());
        assert!(page_limit(Some(-1), ROOMS_PAGE).is_err());
    }

    #[test]
    fn seq_cursors_refuse_negatives_and_non_numbers_naming_the_parameter() {
        assert_eq!(seq_cursor("before", Some(3)).unwrap(), Seq::new(3).ok());
        assert_eq!(seq_cursor("before", None).unwrap(), None);
        assert_eq!(
            detail(seq_cursor("before", Some(-1)).unwrap_err()),
            "before: must be an integer ≥ 0, got -1"
        );
        assert_eq!(seq_cursor_from_text("after", "0").unwrap(), Seq::ZERO);
        assert_eq!(
            detail(seq_cursor_from_text("after", "x").unwrap_err()),
            "after: must be an integer ≥ 0, got \"x\""
        );
        assert!(seq_cursor_from_text("after", "-2").is_err());
    }

    #[test]
    fn rev_cursors_and_path_seqs() {
        assert_eq!(rev_cursor_from_text("rev", "0").unwrap(), Rev::ZERO);
        assert_eq!(rev_cursor_from_text("rev", "12").unwrap().get(), 12);
        assert_eq!(
            detail(rev_cursor_from_text("rev", "-1").unwrap_err()),
            "rev: must be an integer ≥ 0, got \"-1\""
        );
        assert!(rev_cursor_from_text("rev", "1.5").is_err());
        assert_eq!(rev_cursor("after_rev", None).unwrap(), Rev::ZERO);
        assert!(rev_cursor("after_rev", Some(-1)).is_err());
        assert_eq!(seq_in_path("42").unwrap().get(), 42);
        for bad in ["0", "-1", "x", "1.0", ""] {
            assert!(
                detail(seq_in_path(bad).unwrap_err()).starts_with("seq: "),
                "{bad}"
            );
        }
    }

    #[test]
    fn name_cursors_must_be_valid_names() {
        let parse = banter_domain::RoomName::parse;
        assert!(name_cursor(None, parse).unwrap().is_none());
        assert!(
            name_cursor(Some("general".into()), parse)
                .unwrap()
                .is_some()
        );
        assert!(detail(name_cursor(Some("Bad".into()), parse).unwrap_err()).starts_with("after: "));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn number_like() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| format!(" {n}")),
                any::<i64>().prop_map(|n| format!("{n}.0")),
                any::<i64>().prop_map(|n| format!("+{n}")),
            ]
        }

        proptest! {
            /// A cursor in a query string is an integer ≥ 0 (within the seq range), or
            /// `invalid_parameter`, never a panic.
            #[test]
            fn a_text_cursor_is_a_seq_or_invalid_parameter(raw in number_like()) {
                let expected = raw.parse::<i64>().ok().and_then(|n| Seq::from_i64(n).ok());
                match seq_cursor_from_text("after", &raw) {
                    Ok(seq) => prop_assert_eq!(Some(seq), expected),
                    Err(problem) => {
                        prop_assert!(expected.is_none(), "{raw:?} refused");
                        prop_assert_eq!(problem.code.as_str(), "invalid_parameter");
                    }
                }
            }

            /// A seq in a path is a positive integer, or `invalid_parameter`.
            #[test]
            fn a_path_seq_is_positive_or_invalid_parameter(raw in number_like()) {
                let positive = raw.parse::<u64>().ok().filter(|n| *n > 0);
                match seq_in_path(&raw) {
                    Ok(seq) => prop_assert_eq!(Some(seq.get()), positive),
                    Err(problem) => prop_assert_eq!(problem.code.as_str(), "invalid_parameter"),
                }
            }

            /// A page limit is within its bounds or `invalid_parameter`.
            #[test]
            fn a_limit_is_within_bounds_or_invalid_parameter(value in proptest::option::of(any::<i64>())) {
                match page_limit(value, HISTORY_PAGE) {
                    Ok(limit) => prop_assert!((1..=200).contains(&limit.get())),
                    Err(problem) => {
                        prop_assert!(value.is_some_and(|v| !(1..=200).contains(&v)));
                        prop_assert_eq!(problem.code.as_str(), "invalid_parameter");
                    }
                }
            }
        }
    }
}
