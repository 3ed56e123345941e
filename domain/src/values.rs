//! Numbers the server assigns: a message's position in its room and its timestamp.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{OffsetDateTime, format_description::BorrowedFormatItem, macros::format_description};

/// A message's position in its room: 1, 2, 3, … without gaps. `Seq::ZERO` stands for "before
/// the first message" (the `last_seq` of an empty room, or `after=0`).
///
/// Bounded by `i64::MAX` so every seq fits the databases' BIGINT.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(transparent)]
pub struct Seq(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an integer from 0 to {max}", max = i64::MAX)]
pub struct SeqOutOfRange;

impl Seq {
    pub const ZERO: Seq = Seq(0);
    pub const MAX: Seq = Seq(i64::MAX as u64);

    pub fn new(value: u64) -> Result<Self, SeqOutOfRange> {
        if value > Self::MAX.0 {
            return Err(SeqOutOfRange);
        }
        Ok(Self(value))
    }

    /// From a database BIGINT.
    pub fn from_i64(value: i64) -> Result<Self, SeqOutOfRange> {
        u64::try_from(value)
            .map_err(|_| SeqOutOfRange)
            .and_then(Self::new)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// As a database BIGINT; lossless by construction.
    pub fn as_i64(self) -> i64 {
        // `new` keeps every Seq at or below i64::MAX.
        self.0 as i64
    }

    /// The seq right after this one (saturating at the maximum, which no room reaches).
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1).min(Self::MAX.0))
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Seq {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = u64::deserialize(deserializer)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

/// A room's change counter: every edit and every delete takes the next one, 1, 2, 3, …
/// without gaps. `Rev::ZERO` stands for "before the first change" (the `last_rev` of a room
/// nobody changed anything in, or `rev=0`). Bounded by `i64::MAX` like [`Seq`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rev(u64);

impl Rev {
    pub const ZERO: Rev = Rev(0);
    pub const MAX: Rev = Rev(i64::MAX as u64);

    pub fn new(value: u64) -> Result<Self, SeqOutOfRange> {
        if value > Self::MAX.0 {
            return Err(SeqOutOfRange);
        }
        Ok(Self(value))
    }

    /// From a database BIGINT.
    pub fn from_i64(value: i64) -> Result<Self, SeqOutOfRange> {
        u64::try_from(value)
            .map_err(|_| SeqOutOfRange)
            .and_then(Self::new)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// As a database BIGINT; lossless by construction.
    pub fn as_i64(self) -> i64 {
        // `new` keeps every Rev at or below i64::MAX.
        self.0 as i64
    }

    /// The rev right after this one (saturating at the maximum).
    pub fn next(self) -> Rev {
        Rev(self.0.saturating_add(1).min(Self::MAX.0))
    }
}

impl fmt::Debug for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A point in time with millisecond precision, in UTC. Shown as RFC 3339, e.g.
/// `2026-11-28T09:15:02.123Z`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("not an RFC 3339 UTC timestamp with milliseconds")]
    Format,
    #[error("outside the supported years 0000-9999")]
    OutOfRange,
}

const RFC3339_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

impl Timestamp {
    /// Milliseconds since 1970-01-01T00:00:00Z, within years 0000–9999 so it always formats.
    pub fn from_unix_millis(millis: i64) -> Result<Self, TimestampError> {
        // 0000-01-01 and 9999-12-31T23:59:59.999 as unix millis.
        const MIN: i64 = -62_167_219_200_000;
        const MAX: i64 = 253_402_300_799_999;
        if (MIN..=MAX).contains(&millis) {
            Ok(Self(millis))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(RFC3339_MILLIS).ok())
            // Unreachable: the constructor keeps the value inside the formattable range.
            .unwrap_or_else(|| String::from("invalid-timestamp"))
    }

    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = time::PrimitiveDateTime::parse(text, RFC3339_MILLIS)
            .map_err(|_| TimestampError::Format)?
            .assume_utc();
        let millis = parsed.unix_timestamp_nanos() / 1_000_000;
        let millis = i64::try_from(millis).map_err(|_| TimestampError::OutOfRange)?;
        Self::from_unix_millis(millis)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_bounded_by_bigint() {
        assert!(Seq::new(0).is_ok());
        assert!(Seq::new(i64::MAX as u64).is_ok());
        assert_eq!(Seq::new(i64::MAX as u64 + 1), Err(SeqOutOfRange));
        assert_eq!(Seq::from_i64(-1), Err(SeqOutOfRange));
        assert_eq!(Seq::from_i64(7).map(Seq::get), Ok(7));
        assert_eq!(Seq::ZERO.next().get(), 1);
        assert_eq!(Seq::MAX.next(), Seq::MAX);
    }

    #[test]
    fn rev_is_bounded_by_bigint() {
        assert_eq!(Rev::from_i64(-1), Err(SeqOutOfRange));
        assert_eq!(Rev::new(i64::MAX as u64 + 1), Err(SeqOutOfRange));
        assert_eq!(Rev::ZERO.next().get(), 1);
        assert_eq!(Rev::MAX.next(), Rev::MAX);
        assert!(Rev::new(2).unwrap() > Rev::new(1).unwrap());
    }

    #[test]
    fn timestamp_formats_rfc3339_utc_millis() {
        let t = Timestamp::from_unix_millis(1_795_857_302_123).ok();
        assert_eq!(
            t.map(Timestamp::to_rfc3339).as_deref(),
            Some("2026-11-28T09:15:02.123Z")
        );
        let epoch = Timestamp::from_unix_millis(0).ok();
        assert_eq!(
            epoch.map(Timestamp::to_rfc3339).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        let before = Timestamp::from_unix_millis(-1).ok();
        assert_eq!(
            before.map(Timestamp::to_rfc3339).as_deref(),
            Some("1969-12-31T23:59:59.999Z")
        );
    }

    #[test]
    fn timestamp_round_trips_and_bounds() {
        let t = Timestamp::from_unix_millis(1_795_857_302_123).ok();
        let back = t.map(|t| Timestamp::parse_rfc3339(&t.to_rfc3339()));
        assert_eq!(back, t.map(Ok));
        assert_eq!(
            Timestamp::from_unix_millis(i64::MAX),
            Err(TimestampError::OutOfRange)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-28 09:15:02"),
            Err(TimestampError::Format)
        );
    }
}
