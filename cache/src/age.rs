//! The age of a stored response, exactly as RFC 9111 §4.2.3 computes it.
//!
//! ```text
//! apparent_age          = max(0, response_time - date_value)
//! response_delay        = response_time - request_time
//! corrected_age_value   = age_value + response_delay
//! corrected_initial_age = max(apparent_age, corrected_age_value)
//! resident_time         = now - response_time
//! current_age           = corrected_initial_age + resident_time
//! ```
//!
//! Trade-offs, all in the conservative direction the RFC takes (an older
//! estimate only costs a revalidation; a younger one serves stale content):
//!
//! - The two estimates are combined with `max`, so an origin whose clock is
//!   behind ours (Date far in the past) makes responses look old, while one
//!   whose clock is ahead (Date in the future) contributes nothing: the
//!   apparent age clamps at zero (§4.2.3).
//! - A missing or invalid `Date` is replaced by `response_time`: a recipient
//!   with a clock assigns one on receipt (RFC 9110 §6.6.1), so the apparent
//!   age is zero and only `Age` plus the response delay count.
//! - Every subtraction that would go negative (a clock stepping backwards
//!   between request and response, `now` before `response_time`) clamps at
//!   zero, and every addition saturates: no input panics.
//! - Time is an argument (`now`); this module never reads the system clock.

use std::time::{Duration, SystemTime};

/// The largest Age a cache transmits: values that overflow become 2^31
/// (RFC 9111 §1.2.2 and §5.1).
pub const MAX_AGE_VALUE: u64 = 1 << 31;

/// What §4.2.3 needs to know about one received response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseTimes {
    /// Our clock when the request that produced this response was sent.
    pub request_time: SystemTime,
    /// Our clock when the response (its header section) was received.
    pub response_time: SystemTime,
    /// The parsed `Date` header; `None` when absent or invalid.
    pub date: Option<SystemTime>,
    /// The parsed `Age` header (see [`parse_age`]); `None` when absent or invalid.
    pub age_header: Option<u64>,
}

/// The current age of a stored response at `now` (RFC 9111 §4.2.3).
pub fn current_age(times: &ResponseTimes, now: SystemTime) -> Duration {
    // RFC 9110 §6.6.1: without a Date, the receipt time stands in for it.
    let date_value = times.date.unwrap_or(times.response_time);
    let apparent_age = elapsed(date_value, times.response_time);
    let response_delay = elapsed(times.request_time, times.response_time);
    // "age_value ... or 0, if not available" (§4.2.3).
    let age_value = Duration::from_secs(times.age_header.unwrap_or(0));
    let corrected_age_value = age_value.saturating_add(response_delay);
    let corrected_initial_age = apparent_age.max(corrected_age_value);
    let resident_time = elapsed(times.response_time, now);
    corrected_initial_age.saturating_add(resident_time)
}

/// The value to send in an `Age` header for `age`: whole seconds, clamped
/// to 2^31 (RFC 9111 §5.1: an overflowing age is transmitted as 2147483648).
pub fn age_header_value(age: Duration) -> u64 {
    age.as_secs().min(MAX_AGE_VALUE)
}

/// Parses `Age` field values: the first element that is a valid
/// delta-seconds (§1.2.2: `1*DIGIT`), clamped to 2^31. Invalid elements
/// (`-1`, `1.5`, `+3`, empty) are ignored (§5.1); `None` if none is valid.
///
/// Accepts anything byte-like, so both `headers.get_all(AGE)` and
/// `["5"]` work. Age is a singleton field; a comma-separated list is
/// tolerated by taking its first valid element, which is what a lenient
/// reader of a folded duplicate would see.
pub fn parse_age<I>(values: I) -> Option<u64>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    values.into_iter().find_map(|value| {
        value
            .as_ref()
            .split(|&b| b == b',')
            .find_map(parse_delta_seconds)
    })
}

/// Parses an HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, and the obsolete
/// RFC 850 and asctime forms recipients must accept) surrounded by optional
/// whitespace. Anything else, including non-UTF-8 bytes, is `None`.
pub fn parse_http_date(value: impl AsRef<[u8]>) -> Option<SystemTime> {
    let text = std::str::from_utf8(value.as_ref()).ok()?;
    httpdate::parse_http_date(text.trim_matches([' ', '\t'])).ok()
}

/// `later - earlier`, or zero when `later` is not after `earlier`.
fn elapsed(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// One delta-seconds element with surrounding OWS; oversized values clamp
/// to 2^31 rather than being rejected (§1.2.2).
fn parse_delta_seconds(element: &[u8]) -> Option<u64> {
    let digits = element.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(d - b'0'))
            .min(MAX_AGE_VALUE)
    });
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::t;

    struct AgeCase {
        name: &'static str,
        section: &'static str,
        request: i64,
        response: i64,
        date: Option<i64>,
        age: Option<u64>,
        now: i64,
        expect: u64,
    }

    #[test]
    fn current_age_table() {
        #[rustfmt::skip]
        let cases = [
            AgeCase { name: "fresh from origin, no delay", section: "RFC 9111 §4.2.3",
                request: 0, response: 0, date: Some(0), age: None, now: 0, expect: 0 },
            AgeCase { name: "resident time adds", section: "RFC 9111 §4.2.3",
                request: 0, response: 0, date: Some(0), age: None, now: 30, expect: 30 },
            AgeCase { name: "response delay counts even with synced clocks", section: "RFC 9111 §4.2.3",
                request: 0, response: 2, date: Some(1), age: None, now: 2, expect: 2 },
            AgeCase { name: "upstream Age plus delay plus residence", section: "RFC 9111 §4.2.3",
                request: 0, response: 1, date: Some(1), age: Some(100), now: 11, expect: 111 },
            AgeCase { name: "apparent age wins over smaller upstream Age", section: "RFC 9111 §4.2.3",
                request: 0, response: 0, date: Some(-50), age: Some(10), now: 0, expect: 50 },
            AgeCase { name: "upstream Age wins over smaller apparent age", section: "RFC 9111 §4.2.3",
                request: 0, response: 0, date: Some(-5), age: Some(60), now: 0, expect: 60 },
            AgeCase { name: "clock skew: Date in the future clamps apparent age to 0", section: "RFC 9111 §4.2.3",
                request: 0, response: 0, date: Some(3_600), age: None, now: 10, expect: 10 },
            AgeCase { name: "clock skew: Date in the future, upstream Age still counts", section: "RFC 9111 §4.2.3",
                request: 0, response: 1, date: Some(3_600), age: Some(20), now: 1, expect: 21 },
            AgeCase { name: "clock skew: Date a day in the past makes it a day old", section: "RFC 9111 §4.2.3",
                request: 0, response: 0, date: Some(-86_400), age: None, now: 0, expect: 86_400 },
            AgeCase { name: "missing Date uses response_time", section: "RFC 9110 §6.6.1",
                request: 0, response: 3, date: None, age: None, now: 10, expect: 10 },
            AgeCase { name: "missing Date, upstream Age", section: "RFC 9110 §6.6.1",
                request: 0, response: 0, date: None, age: Some(42), now: 8, expect: 50 },
            AgeCase { name: "now before response_time: no negative residence", section: "RFC 9111 §4.2.3",
                request: 0, response: 10, date: Some(10), age: None, now: 5, expect: 10 },
            AgeCase { name: "response before request (clock stepped back): no negative delay", section: "RFC 9111 §4.2.3",
                request: 10, response: 0, date: Some(0), age: Some(5), now: 0, expect: 5 },
            AgeCase { name: "Age clamped to 2^31 still adds without overflow", section: "RFC 9111 §1.2.2",
                request: 0, response: 0, date: Some(0), age: Some(MAX_AGE_VALUE), now: 1, expect: MAX_AGE_VALUE + 1 },
            AgeCase { name: "absurd Age saturates instead of panicking", section: "RFC 9111 §1.2.2",
                request: 0, response: 0, date: Some(0), age: Some(u64::MAX), now: 100, expect: u64::MAX },
        ];
        for c in cases {
            let times = ResponseTimes {
                request_time: t(c.request),
                response_time: t(c.response),
                date: c.date.map(t),
                age_header: c.age,
            };
            let got = current_age(&times, t(c.now));
            assert_eq!(got.as_secs(), c.expect, "{} ({})", c.name, c.section);
        }
    }

    #[test]
    fn parse_age_table() {
        #[rustfmt::skip]
        let cases: [(&[&str], Option<u64>, &str); 12] = [
            (&["60"], Some(60), "RFC 9111 §5.1"),
            (&["0"], Some(0), "RFC 9111 §5.1"),
            (&[" 7 "], Some(7), "RFC 9110 §5.5"),
            (&[], None, "RFC 9111 §4.2.3"),
            (&["-1"], None, "RFC 9111 §1.2.2"),
            (&["1.5"], None, "RFC 9111 §1.2.2"),
            (&["+3"], None, "RFC 9111 §1.2.2"),
            (&["abc", "12"], Some(12), "RFC 9111 §5.1"),
            (&["bogus, 9"], Some(9), "RFC 9111 §5.1"),
            (&["5", "6"], Some(5), "RFC 9111 §5.1"),
            (&["99999999999999999999999999"], Some(MAX_AGE_VALUE), "RFC 9111 §1.2.2"),
            (&["2147483649"], Some(MAX_AGE_VALUE), "RFC 9111 §1.2.2"),
        ];
        for (values, expect, section) in cases {
            assert_eq!(parse_age(values.iter()), expect, "{values:?} ({section})");
        }
    }

    #[test]
    fn parse_age_accepts_header_values() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::AGE, http::HeaderValue::from_static("x"));
        headers.append(http::header::AGE, http::HeaderValue::from_static("17"));
        // RFC 9111 §5.1: the invalid line is ignored.
        assert_eq!(parse_age(headers.get_all(http::header::AGE)), Some(17));
        let junk = http::HeaderValue::from_bytes(b"\xff3").unwrap();
        assert_eq!(parse_age([&junk]), None);
    }

    #[test]
    fn parse_http_date_table() {
        let sunday = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777));
        #[rustfmt::skip]
        let cases: [(&str, Option<SystemTime>, &str); 7] = [
            ("Sun, 06 Nov 1994 08:49:37 GMT", sunday, "RFC 9110 §5.6.7 IMF-fixdate"),
            ("Sunday, 06-Nov-94 08:49:37 GMT", sunday, "RFC 9110 §5.6.7 rfc850-date"),
            ("Sun Nov  6 08:49:37 1994", sunday, "RFC 9110 §5.6.7 asctime-date"),
            ("  Sun, 06 Nov 1994 08:49:37 GMT\t", sunday, "RFC 9110 §5.5 OWS"),
            ("0", None, "RFC 9111 §5.3"),
            ("", None, "RFC 9110 §5.6.7"),
            ("Sun, 06 Nov 1994 25:49:37 GMT", None, "RFC 9110 §5.6.7"),
        ];
        for (value, expect, section) in cases {
            assert_eq!(parse_http_date(value), expect, "{value:?} ({section})");
        }
        assert_eq!(parse_http_date(b"\xff\xfe"), None);
    }

    #[test]
    fn age_header_value_clamps() {
        // RFC 9111 §5.1: overflowing ages are transmitted as 2^31.
        assert_eq!(age_header_value(Duration::from_millis(1_999)), 1);
        assert_eq!(age_header_value(Duration::MAX), MAX_AGE_VALUE);
    }

    #[test]
    fn current_age_never_panics_and_grows_with_now() {
        // A deterministic sweep (fixed LCG seed) over extreme and skewed inputs.
        let mut seed: u64 = 0x5eed;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as i64 % 4_000_000_000 - 2_000_000_000
        };
        for _ in 0..2_000 {
            let times = ResponseTimes {
                request_time: t(next()),
                response_time: t(next()),
                date: Some(t(next())),
                age_header: Some(next().unsigned_abs()),
            };
            let now = t(next());
            let a = current_age(&times, now);
            let b = current_age(&times, now + Duration::from_secs(1));
            assert!(
                b >= a,
                "RFC 9111 §4.2.3: age never decreases as time passes"
            );
        }
    }
}
