//! Names chosen by clients: rooms, usernames and client ids.
//!
//! Each is a newtype with a private field: the only way to get one is `parse`, so a value that
//! breaks the contract's rules cannot exist past the edge that parsed it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use validator::ValidateLength;

/// Why a name was refused. `Display` is the sentence a client sees in `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters long")]
    TooLong { max: usize },
    #[error("must not contain {found:?}: {allowed}")]
    ForbiddenCharacter { found: char, allowed: &'static str },
}

/// Checks a name's length in Unicode scalar values, then each character against `allowed`.
fn check_name(
    value: &str,
    max: u64,
    allowed: fn(char) -> bool,
    rule: &'static str,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty);
    }
    if !value.validate_length(None, Some(max), None) {
        return Err(NameError::TooLong { max: max as usize });
    }
    match value.chars().find(|c| !allowed(*c)) {
        Some(found) => Err(NameError::ForbiddenCharacter {
            found,
            allowed: rule,
        }),
        None => Ok(()),
    }
}

macro_rules! string_newtype {
    (
        $(#[$doc:meta])*
        $name:ident, max: $max:expr, allowed: $allowed:expr, rule: $rule:expr
    ) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: u64 = $max;

            /// Checks `value` against the rule and copies it.
            pub fn parse(value: &str) -> Result<Self, NameError> {
                Self::check(value)?;
                Ok(Self(value.to_owned()))
            }

            fn check(value: &str) -> Result<(), NameError> {
                check_name(value, Self::MAX_CHARS, $allowed, $rule)
            }

            /// The name as the client sent it.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Gives the inner string back.
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::check(&value)?;
                Ok(Self(value))
            }
        }

        // Deserializing re-checks the rules: data from a broker or a file is input too.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A room: 1–64 characters of `a-z`, `0-9`, `-`, `_`.
    RoomName,
    max: 64,
    allowed: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_',
    rule: "a room name is lowercase a-z, digits, '-' and '_'"
);

impl RoomName {
    /// Which of `shards` buckets (locks, writers) this room belongs to: always the same one
    /// within a process, spread evenly over rooms. `shards` must not be zero.
    pub fn shard(&self, shards: usize) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(self.as_str());
        (hash % shards.max(1) as u64) as usize
    }
}

string_newtype!(
    /// A username: 1–32 Unicode scalar values, each alphanumeric (any script), `_`, `-` or `.`.
    /// Compared exactly: no case folding, no normalization.
    Username,
    max: 32,
    allowed: |c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.',
    rule: "a username is letters or digits of any script, '_', '-' and '.'"
);

string_newtype!(
    /// A client id: 1–64 printable ASCII characters (U+0021–U+007E), chosen by the client so
    /// that a resend of the same post is recognised.
    ClientId,
    max: 64,
    allowed: |c| ('\u{21}'..='\u{7e}').contains(&c),
    rule: "a client_id is printable ASCII without spaces (U+0021-U+007E)"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_accepts_1_to_64_allowed_characters() {
        assert!(RoomName::parse("a").is_ok());
        assert!(RoomName::parse("general").is_ok());
        assert!(RoomName::parse("room-1_b").is_ok());
        assert!(RoomName::parse(&"r".repeat(64)).is_ok());
    }

    #[test]
    fn room_refuses_empty_long_and_foreign_characters() {
        assert_eq!(RoomName::parse(""), Err(NameError::Empty));
        assert_eq!(
            RoomName::parse(&"r".repeat(65)),
            Err(NameError::TooLong { max: 64 })
        );
        for bad in [
            "General",
            "with space",
            "a/b",
            "é",
            "dot.ted",
            "tab\t",
            "ünï",
        ] {
            assert!(
                matches!(
                    RoomName::parse(bad),
                    Err(NameError::ForbiddenCharacter { .. })
                ),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn username_accepts_any_script_letters_and_digits() {
        for good in [
            "alice",
            "Bob",
            "o.k_-",
            "Émile",
            "名前",
            "Алиса",
            "٣٤",
            "ǅ",
            &"x".repeat(32),
        ] {
            assert!(Username::parse(good).is_ok(), "{good:?} must be accepted");
        }
        // 32 multi-byte characters are 32 characters, not 96 bytes.
        assert!(Username::parse(&"名".repeat(32)).is_ok());
    }

    #[test]
    fn username_refuses_empty_long_and_symbols() {
        assert_eq!(Username::parse(""), Err(NameError::Empty));
        assert_eq!(
            Username::parse(&"x".repeat(33)),
            Err(NameError::TooLong { max: 32 })
        );
        assert_eq!(
            Username::parse(&"名".repeat(33)),
            Err(NameError::TooLong { max: 32 })
        );
        for bad in [
            "a b",
            "a@b",
            "<b>",
            "emoji😀",
            "nul\0",
            "a\u{301}",
            "tab\t",
            "a+b",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn username_is_case_sensitive_and_not_normalized() {
        let upper = Username::parse("Alice").ok();
        let lower = Username::parse("alice").ok();
        assert!(upper.is_some() && lower.is_some());
        assert_ne!(upper, lower);
        // "é" precomposed is one letter; "e" + combining acute is a letter and a mark (refused).
        assert!(Username::parse("\u{e9}").is_ok());
        assert!(Username::parse("e\u{301}").is_err());
    }

    #[test]
    fn client_id_is_printable_ascii_up_to_64() {
        assert!(ClientId::parse("c-7f3a").is_ok());
        assert!(ClientId::parse("!~{}[]").is_ok());
        assert!(ClientId::parse(&"k".repeat(64)).is_ok());
        assert_eq!(
            ClientId::parse(&"k".repeat(65)),
            Err(NameError::TooLong { max: 64 })
        );
        assert_eq!(ClientId::parse(""), Err(NameError::Empty));
        for bad in ["has space", "tab\t", "é", "\u{7f}", "new\nline"] {
            assert!(ClientId::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn deserializing_applies_the_rules() {
        let ok: Result<RoomName, _> = serde_json::from_str("\"general\"");
        assert!(ok.is_ok());
        let bad: Result<RoomName, _> = serde_json::from_str("\"General\"");
        assert!(bad.is_err());
    }

    #[test]
    fn names_sort_in_code_point_order() {
        let mut names: Vec<Username> = ["bob", "Zed", "alice", "Émile", "名前"]
            .into_iter()
            .filter_map(|n| Username::parse(n).ok())
            .collect();
        names.sort();
        let sorted: Vec<&str> = names.iter().map(Username::as_str).collect();
        assert_eq!(sorted, ["Zed", "alice", "bob", "Émile", "名前"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn room_names_are_accepted_exactly_by_the_rule(text in any::<String>()) {
                let rule = !text.is_empty()
                    && text.chars().count() <= 64
                    && text
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
                match RoomName::parse(&text) {
                    Ok(room) => {
                        prop_assert!(rule);
                        prop_assert_eq!(room.as_str(), text.as_str());
                    }
                    Err(_) => prop_assert!(!rule),
                }
            }

            #[test]
            fn room_names_made_of_allowed_characters_round_trip(
                text in proptest::collection::vec(
                    prop_oneof![Just('a'), Just('z'), Just('0'), Just('-'), Just('_')],
                    1..=64,
                ).prop_map(|chars| chars.into_iter().collect::<String>()),
            ) {
                let room = RoomName::parse(&text).expect("allowed characters");
                prop_assert_eq!(room.into_inner(), text);
            }

            #[test]
            fn usernames_never_exceed_32_characters_and_round_trip(text in any::<String>()) {
                if let Ok(name) = Username::parse(&text) {
                    prop_assert!((1..=32).contains(&text.chars().count()));
                    prop_assert_eq!(name.as_str(), text.as_str());
                }
            }
        }
    }
}
