//! The origin's own, deliberately small, `Range` support for `size=` bodies,
//! so tests can tell a range the origin cut (forwarded by the edge) from one
//! the edge cut out of a full object.
//!
//! One `bytes=a-b`, `bytes=a-` or `bytes=-n` only; anything else (several
//! ranges, other units, bad syntax) is ignored and the full body sent, as
//! RFC 9110 §14.2 allows. `If-Range` is not evaluated. It is written apart
//! from edge-cache's parser on purpose: the origin must not share the code
//! under test.

use http::HeaderMap;
use http::header::RANGE;

/// What the origin makes of a request's `Range` for a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginRange {
    /// No usable `Range`: send the whole body.
    Ignore,
    /// Send bytes `start..end` (end exclusive) as a 206.
    Part { start: u64, end: u64 },
    /// Send a 416.
    Unsatisfiable,
}

/// Evaluates the request's single `Range` against `size`.
pub(crate) fn evaluate(headers: &HeaderMap, size: u64) -> OriginRange {
    let mut values = headers.get_all(RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return OriginRange::Ignore;
    };
    let Some(spec) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return OriginRange::Ignore;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return OriginRange::Ignore;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.is_empty(), number(first), number(last)) {
        (true, _, Some(0)) => OriginRange::Unsatisfiable,
        (true, _, Some(n)) if size > 0 => OriginRange::Part {
            start: size - n.min(size),
            end: size,
        },
        (false, Some(start), _) if start >= size => OriginRange::Unsatisfiable,
        (false, Some(start), None) if last.is_empty() => OriginRange::Part { start, end: size },
        (false, Some(start), Some(last)) if last >= start => OriginRange::Part {
            start,
            end: last.saturating_add(1).min(size),
        },
        _ => OriginRange::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn eval(range: &str, size: u64) -> OriginRange {
        let mut headers = HeaderMap::new();
        headers.insert(RANGE, HeaderValue::from_str(range).unwrap());
        evaluate(&headers, size)
    }

    #[test]
    fn single_ranges() {
        use OriginRange::*;
        assert_eq!(eval("bytes=0-99", 1000), Part { start: 0, end: 100 });
        assert_eq!(
            eval("bytes=900-", 1000),
            Part {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            eval("bytes=-100", 1000),
            Part {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            eval("bytes=-5000", 1000),
            Part {
                start: 0,
                end: 1000
            }
        );
        assert_eq!(
            eval("bytes=990-2000", 1000),
            Part {
                start: 990,
                end: 1000
            }
        );
        assert_eq!(eval("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(eval("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(eval("bytes=0-1,5-6", 1000), Ignore);
        assert_eq!(eval("bytes=5-1", 1000), Ignore);
        assert_eq!(eval("items=0-1", 1000), Ignore);
        assert_eq!(evaluate(&HeaderMap::new(), 1000), Ignore);
    }
}
