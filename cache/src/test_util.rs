//! Helpers shared by the policy modules' unit tests.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The fake clock: 2022-06-06T00:00:00Z (RFC 9111's publication week) plus
/// an offset in seconds, negative for the past.
pub fn t(offset_secs: i64) -> SystemTime {
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_654_473_600);
    if offset_secs >= 0 {
        epoch + Duration::from_secs(offset_secs.unsigned_abs())
    } else {
        epoch - Duration::from_secs(offset_secs.unsigned_abs())
    }
}

/// A header map from `(name, value)` pairs, repeated names appended.
pub fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}
