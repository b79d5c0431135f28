//! The `Retry-After` header: how long an HTTP server asks a client to wait (RFC 9110 §10.2.3).
//!
//! Owns only reading the header's value; each client bounds what it honours. It does no I/O
//! and reads no clock: the caller passes `now`.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Seconds, or an HTTP date (RFC 9110 allows both); a date in the past is no wait.
pub fn parse(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        at.with_timezone(&Utc)
            .signed_duration_since(now)
            .to_std()
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_dates_are_read_and_a_past_date_is_no_wait() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse("Thu, 01 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse("Wed, 31 Dec 2025 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse("soon", now), None);
        assert_eq!(parse("99999999999999999999999", now), None);
    }
}
