//! Times as the tables keep them: UTC, RFC 3339 with milliseconds and `Z`
//! (`2026-12-06T06:00:00.000Z`), so that they sort and compare as text in
//! SQLite and PostgreSQL alike.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn now() -> String {
    format(Utc::now())
}

/// The stored form of "`d` ago".
pub fn ago(d: Duration) -> String {
    format(Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
}

pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_times_sort_as_text() {
        let a = super::format(super::parse("2026-12-06T06:00:00Z").unwrap());
        let b = super::format(super::parse("2026-12-06T06:00:00.5+00:00").unwrap());
        assert_eq!(a, "2026-12-06T06:00:00.000Z");
        assert!(a < b);
        assert!(super::ago(std::time::Duration::from_secs(60)) < super::now());
    }
}
