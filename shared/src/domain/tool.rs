//! Tool calls: what is sent to a connector and how its answer is classified.
//!
//! 2xx succeeds; 408, 429 (honouring Retry-After), 5xx, timeouts and connection errors are
//! retryable and unhealthy for the breaker; any other 4xx is not retried (the execution blocks)
//! but is healthy for the breaker, since the connector answered.

use serde::{Deserialize, Serialize};

use super::connector::BreakerSignal;
use super::ids::{ConnectorId, ToolName};
use super::time::Timestamp;

/// One HTTP call to a connector, fully rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRequest {
    pub connector: ConnectorId,
    pub tool: ToolName,
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    pub url: String,
    /// Extra headers (auth). Values may be secrets: never log them.
    #[serde(skip_serializing)]
    pub headers: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
    /// Sent as `Idempotency-Key`: `{execution_id}:{stage}`, stable across retries.
    pub idempotency_key: String,
    pub timeout_ms: u64,
}

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFailure {
    /// An HTTP status that is retried (408, 429, 5xx).
    RetryableStatus,
    /// An HTTP 4xx that is not retried.
    RejectedStatus,
    Timeout,
    Connection,
    /// The answer could not be read (over the size cap, broken body).
    BadResponse,
}

/// How a call went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToolOutcome {
    /// 2xx; the body as JSON (`null` when empty or not JSON).
    Succeeded {
        status: u16,
        body: serde_json::Value,
        latency_ms: u64,
    },
    /// Failed; `retry_after_secs` from the server's Retry-After when it sent one.
    Failed {
        status: Option<u16>,
        failure: ToolFailure,
        retry_after_secs: Option<u64>,
        latency_ms: u64,
        /// The first bytes of the answer, for the ledger (never request headers).
        excerpt: String,
    },
}

impl ToolOutcome {
    /// Whether the call may be retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ToolOutcome::Succeeded { .. } => false,
            ToolOutcome::Failed { failure, .. } => *failure != ToolFailure::RejectedStatus,
        }
    }

    /// What the breaker should learn from the call.
    pub fn breaker_signal(&self) -> BreakerSignal {
        match self {
            ToolOutcome::Succeeded { .. } => BreakerSignal::Healthy,
            ToolOutcome::Failed {
                failure: ToolFailure::RejectedStatus,
                ..
            } => BreakerSignal::Healthy,
            ToolOutcome::Failed { .. } => BreakerSignal::Unhealthy,
        }
    }

    /// Milliseconds the call took.
    pub fn latency_ms(&self) -> u64 {
        match self {
            ToolOutcome::Succeeded { latency_ms, .. } | ToolOutcome::Failed { latency_ms, .. } => {
                *latency_ms
            }
        }
    }
}

/// What an HTTP status says about a call, before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// Anything else, with the server's Retry-After hint in seconds when it gave a usable one.
    Failure {
        failure: ToolFailure,
        retry_after_secs: Option<u64>,
    },
}

/// Classifies `status`: 2xx succeeds; 408, 429 and 5xx are [`ToolFailure::RetryableStatus`];
/// other 4xx are [`ToolFailure::RejectedStatus`] unless `retry_on_4xx`; 1xx, 3xx (redirects
/// are not followed) and anything outside 100..=599 are [`ToolFailure::BadResponse`].
///
/// `retry_after` is the raw `Retry-After` header: delta-seconds or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), turned into seconds from `now` (0 for a past date);
/// anything else is ignored.
pub fn classify_status(
    status: u16,
    retry_after: Option<&str>,
    now: Timestamp,
    retry_on_4xx: bool,
) -> StatusClass {
    let failure = match status {
        200..=299 => return StatusClass::Success,
        408 | 429 | 500..=599 => ToolFailure::RetryableStatus,
        400..=499 if retry_on_4xx => ToolFailure::RetryableStatus,
        400..=499 => ToolFailure::RejectedStatus,
        _ => ToolFailure::BadResponse,
    };
    StatusClass::Failure {
        failure,
        retry_after_secs: retry_after.and_then(|value| retry_after_secs(value, now)),
    }
}

/// Seconds to wait according to a `Retry-After` value, or `None` when it is unreadable.
pub fn retry_after_secs(value: &str, now: Timestamp) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // An absurdly long number still means "a long time".
        return Some(value.parse().unwrap_or(u64::MAX));
    }
    parse_imf_fixdate(value).map(|secs| now.secs_until(Timestamp::from_secs(secs)))
}

/// Epoch seconds of an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 5.6.7). The day
/// name is checked for shape, not against the date, as RFC 9110 lets recipients do.
fn parse_imf_fixdate(value: &str) -> Option<i64> {
    const DAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = value.split(' ');
    let (day_name, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || !DAYS.contains(&day_name) || zone != "GMT" {
        return None;
    }
    let day = fixed_digits(day, 2)?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let year = fixed_digits(year, 4)?;
    let mut clock = time.split(':');
    let (hour, minute, second) = (
        fixed_digits(clock.next()?, 2)?,
        fixed_digits(clock.next()?, 2)?,
        fixed_digits(clock.next()?, 2)?,
    );
    let valid = clock.next().is_none()
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60; // 60: a leap second
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// `text` as a number when it is exactly `len` ASCII digits.
fn fixed_digits(text: &str, len: usize) -> Option<i64> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, the RFC's example instant.
    const RFC_EXAMPLE_SECS: i64 = 784_111_777;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn failure(status: u16, retry_on_4xx: bool) -> Option<ToolFailure> {
        match classify_status(status, None, at(0), retry_on_4xx) {
            StatusClass::Success => None,
            StatusClass::Failure { failure, .. } => Some(failure),
        }
    }

    #[test]
    fn statuses_map_to_the_documented_classes() {
        for ok in [200, 201, 204, 299] {
            assert_eq!(failure(ok, false), None, "{ok}");
        }
        for retryable in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                failure(retryable, false),
                Some(ToolFailure::RetryableStatus),
                "{retryable}"
            );
        }
        for rejected in [400, 401, 403, 404, 409, 422, 499] {
            assert_eq!(
                failure(rejected, false),
                Some(ToolFailure::RejectedStatus),
                "{rejected}"
            );
            assert_eq!(
                failure(rejected, true),
                Some(ToolFailure::RetryableStatus),
                "{rejected}"
            );
        }
        for odd in [0, 100, 101, 199, 300, 301, 304, 307, 399, 600, 999] {
            assert_eq!(failure(odd, false), Some(ToolFailure::BadResponse), "{odd}");
        }
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(
            classify_status(429, Some("7"), at(1_000), false),
            StatusClass::Failure {
                failure: ToolFailure::RetryableStatus,
                retry_after_secs: Some(7)
            }
        );
        assert_eq!(retry_after_secs(" 0 ", at(0)), Some(0));
        assert_eq!(
            retry_after_secs("99999999999999999999999", at(0)),
            Some(u64::MAX)
        );
        for junk in ["", "-5", "1.5", "7s", "soon", "+3"] {
            assert_eq!(retry_after_secs(junk, at(0)), None, "{junk:?}");
        }
    }

    #[test]
    fn retry_after_http_date() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_imf_fixdate(date), Some(RFC_EXAMPLE_SECS));
        assert_eq!(
            retry_after_secs(date, at(RFC_EXAMPLE_SECS - 120)),
            Some(120)
        );
        // Half a second before the date still waits a whole second.
        let almost = Timestamp::from_millis(RFC_EXAMPLE_SECS * 1000 - 500);
        assert_eq!(retry_after_secs(date, almost), Some(1));
        // A date in the past means "now".
        assert_eq!(retry_after_secs(date, at(RFC_EXAMPLE_SECS + 60)), Some(0));
        assert_eq!(
            classify_status(503, Some(date), at(RFC_EXAMPLE_SECS - 30), false),
            StatusClass::Failure {
                failure: ToolFailure::RetryableStatus,
                retry_after_secs: Some(30)
            }
        );
    }

    #[test]
    fn imf_fixdate_calendar_edges() {
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_imf_fixdate("Tue, 29 Feb 2000 23:59:59 GMT"),
            Some(951_868_799)
        );
        assert_eq!(
            parse_imf_fixdate("Fri, 31 Dec 2038 12:00:00 GMT"),
            Some(2_177_409_600)
        );
        assert_eq!(
            parse_imf_fixdate("Mon, 01 Mar 2100 00:00:00 GMT"),
            Some(4_107_542_400)
        );
    }

    #[test]
    fn malformed_http_dates_are_ignored() {
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun,  06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_imf_fixdate(bad), None, "{bad:?}");
            assert_eq!(retry_after_secs(bad, at(0)), None, "{bad:?}");
        }
    }

    #[test]
    fn rejected_and_odd_statuses_keep_the_hint() {
        assert_eq!(
            classify_status(404, Some("5"), at(0), false),
            StatusClass::Failure {
                failure: ToolFailure::RejectedStatus,
                retry_after_secs: Some(5)
            }
        );
        assert_eq!(
            classify_status(302, Some("garbage"), at(0), false),
            StatusClass::Failure {
                failure: ToolFailure::BadResponse,
                retry_after_secs: None
            }
        );
    }
}
