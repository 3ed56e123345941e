//! The text of a message.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use validator::ValidateLength;

/// Why a message text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters long")]
    TooLong { max: usize },
    #[error("must contain something other than whitespace")]
    OnlyWhitespace,
    #[error("must not contain the control character U+{code:04X}")]
    ControlCharacter { code: u32 },
}

/// 1–4000 Unicode scalar values, not only whitespace, no control character except tab, line
/// feed and carriage return. Kept exactly as sent: no trimming, normalization or escaping.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Content(String);

impl Content {
    pub const MAX_CHARS: u64 = 4000;

    pub fn parse(value: &str) -> Result<Self, ContentError> {
        Self::check(value)?;
        Ok(Self(value.to_owned()))
    }

    fn check(value: &str) -> Result<(), ContentError> {
        if value.is_empty() {
            return Err(ContentError::Empty);
        }
        if !value.validate_length(None, Some(Self::MAX_CHARS), None) {
            return Err(ContentError::TooLong {
                max: Self::MAX_CHARS as usize,
            });
        }
        // Rust's char::is_control is exactly Unicode's Cc category.
        if let Some(c) = value
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(ContentError::ControlCharacter { code: c as u32 });
        }
        // char::is_whitespace is Unicode's White_Space property.
        if value.chars().all(char::is_whitespace) {
            return Err(ContentError::OnlyWhitespace);
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Content {
    type Error = ContentError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::check(&value)?;
        Ok(Self(value))
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::try_from(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_1_to_4000_characters() {
        assert!(Content::parse("x").is_ok());
        assert!(Content::parse(&"x".repeat(4000)).is_ok());
        // Characters, not bytes: 4000 four-byte characters are allowed.
        assert!(Content::parse(&"😀".repeat(4000)).is_ok());
    }

    #[test]
    fn refuses_empty_and_over_4000() {
        assert_eq!(Content::parse(""), Err(ContentError::Empty));
        assert_eq!(
            Content::parse(&"x".repeat(4001)),
            Err(ContentError::TooLong { max: 4000 })
        );
        assert_eq!(
            Content::parse(&"😀".repeat(4001)),
            Err(ContentError::TooLong { max: 4000 })
        );
    }

    #[test]
    fn refuses_only_whitespace_of_any_kind() {
        for blank in [
            " ",
            "\t\n\r",
            "\u{a0}",
            "\u{2003}\u{3000}",
            "\u{2028}",
            "   \n  ",
        ] {
            assert_eq!(
                Content::parse(blank),
                Err(ContentError::OnlyWhitespace),
                "{blank:?}"
            );
        }
        // Whitespace around text is kept exactly.
        let padded = Content::parse("  hi  \n").ok();
        assert_eq!(padded.as_ref().map(Content::as_str), Some("  hi  \n"));
    }

    #[test]
    fn refuses_control_characters_but_tab_lf_cr() {
        assert_eq!(
            Content::parse("a\0b"),
            Err(ContentError::ControlCharacter { code: 0 })
        );
        assert_eq!(
            Content::parse("bell\u{7}"),
            Err(ContentError::ControlCharacter { code: 7 })
        );
        assert_eq!(
            Content::parse("del\u{7f}"),
            Err(ContentError::ControlCharacter { code: 0x7f })
        );
        assert_eq!(
            Content::parse("c1\u{9f}"),
            Err(ContentError::ControlCharacter { code: 0x9f })
        );
        assert_eq!(
            Content::parse("esc\u{1b}[0m"),
            Err(ContentError::ControlCharacter { code: 0x1b })
        );
        assert!(Content::parse("tab\tline\ncr\r").is_ok());
        // U+00A0 is not Cc; format characters (Cf) like ZWJ are allowed too.
        assert!(Content::parse("a\u{a0}b\u{200d}c").is_ok());
    }

    #[test]
    fn keeps_any_script_and_markup_exactly() {
        for text in [
            "<img src=x onerror=alert(1)>",
            "日本語のテキスト",
            "e\u{301}",
            "👩‍👩‍👧",
            "&amp;",
        ] {
            let parsed = Content::parse(text).ok();
            assert_eq!(parsed.as_ref().map(Content::as_str), Some(text));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// The contract's rule, written out again independently of `Content::check`.
        fn allowed(text: &str) -> bool {
            let chars = text.chars().count();
            (1..=4000).contains(&chars)
                && !text.chars().all(char::is_whitespace)
                && text
                    .chars()
                    .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        }

        fn text_near_the_rules() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                proptest::collection::vec(
                    prop_oneof![
                        Just(' '),
                        Just('\t'),
                        Just('\n'),
                        Just('\u{0}'),
                        Just('\u{85}'),
                        Just('\u{2028}'),
                        Just('é'),
                        Just('a'),
                        any::<char>()
                    ],
                    0..8,
                )
                .prop_map(|chars| chars.into_iter().collect()),
                (3990usize..4010).prop_map(|n| "x".repeat(n)),
            ]
        }

        proptest! {
            #[test]
            fn content_is_accepted_exactly_by_the_rule_and_kept_as_sent(text in text_near_the_rules()) {
                match Content::parse(&text) {
                    Ok(content) => {
                        prop_assert!(allowed(&text), "accepted {text:?}");
                        prop_assert_eq!(content.as_str(), text.as_str());
                    }
                    Err(e) => {
                        prop_assert!(!allowed(&text), "refused {text:?}: {e}");
                        prop_assert!(!e.to_string().is_empty());
                    }
                }
            }
        }
    }
}
