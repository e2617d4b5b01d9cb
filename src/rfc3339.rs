//! The one RFC 3339 formatter: every timestamp parachute writes to a file, the wire or the
//! terminal goes through here (UTC, `2025-01-02T03:04:05.5Z`).

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `t` as RFC 3339. A time RFC 3339 cannot express (a year past 9999) falls back to the
/// `time` crate's own text rather than failing.
pub fn format(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The current time (UTC).
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// Parses RFC 3339 text (what [`format`] writes); `None` when it is not.
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// A file-system or `/proc` time.
pub fn of_system(t: SystemTime) -> String {
    format(OffsetDateTime::from(t))
}

/// `#[serde(with = "crate::rfc3339::serde")]` for an [`OffsetDateTime`] field.
pub mod serde {
    use serde::Deserialize;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    /// Serializes as RFC 3339 text.
    pub fn serialize<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format(&Rfc3339).map_err(serde::ser::Error::custom)?)
    }

    /// Parses RFC 3339 text.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        OffsetDateTime::parse(&s, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_utc_and_parses_back() {
        assert_eq!(format(datetime!(2025-01-02 03:04:05.5 UTC)), "2025-01-02T03:04:05.5Z");
        assert!(OffsetDateTime::parse(&now(), &Rfc3339).is_ok());
        assert_eq!(of_system(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
