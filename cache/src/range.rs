//! Range requests (RFC 9110 §14) answered from a complete stored
//! representation: parsing `Range`, evaluating `If-Range` (§13.1.5),
//! choosing between 200, 206 and 416, and formatting `Content-Range`.
//!
//! Pure arithmetic on lengths and offsets; the `edge` binary slices the
//! bytes. Choices, all within what the RFC allows:
//!
//! - **Only `bytes`.** Another range unit, or a `Range` that is not valid
//!   `bytes` syntax, is ignored and the full 200 is served (§14.2: a server
//!   MAY ignore `Range`; it MUST ignore units it does not understand).
//!   Syntax is the recipient's list grammar (§5.6.1.2): optional whitespace
//!   around commas and empty list elements are accepted, whitespace inside a
//!   range-spec or next to `=` is not. More than one `Range` field line is
//!   invalid (the field is a singleton).
//! - **Only GET and a stored 200.** Range handling is defined for GET alone
//!   (§14.2), so HEAD and other methods get the full answer; a stored
//!   non-200 (404, 301, …) ignores `Range` too (§14.2: only a response that
//!   would be 200 becomes 206).
//! - **Multiple ranges.** We never send `multipart/byteranges`: real clients
//!   (browsers, video players, download managers) ask for one range, and
//!   multipart costs a boundary generator, a second body framing and its
//!   length arithmetic for almost no use. Ranges that overlap or touch are
//!   coalesced (§15.3.7.2 allows a server to) and, when they make one
//!   contiguous range, served as a single-part 206 of it; otherwise the full
//!   200 is served (§14.2: a server MAY ignore `Range`). More than
//!   [`MAX_RANGES`] ranges are ignored outright. If no range is satisfiable
//!   the answer is 416, whatever their number.
//! - **Zero-length representations** get the full (empty) 200: a 206 cannot
//!   describe an empty range in `Content-Range`, so even a suffix range,
//!   which §14.1.1 calls satisfiable there, is ignored.
//! - **Huge numbers** saturate at `u64::MAX` instead of overflowing: a
//!   first-pos beyond it is past any real length (unsatisfiable), a last-pos
//!   or suffix-length beyond it covers the whole representation. The
//!   `last-pos < first-pos` validity check compares the digits exactly, so
//!   saturation never turns an invalid range into a valid one.

use std::cmp::Ordering;
use std::ops::Range;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, header};

use crate::age::parse_http_date;
use crate::validation::{parse_entity_tag, single, single_date};

/// Most ranges evaluated in one `Range` field: more are ignored (full 200).
/// §14.2 names "many small ranges" as a sign of a broken client or a
/// denial-of-service attempt; 32 is far above what players and download
/// managers send (one, rarely two) and keeps the sort-and-merge trivial.
pub const MAX_RANGES: usize = 32;

/// A `Last-Modified` is a strong validator for a cache only when the stored
/// `Date` is at least one second later (RFC 9110 §8.8.2.2): within the same
/// second the representation could have changed twice.
const STRONG_DATE_GAP: Duration = Duration::from_secs(1);

/// An inclusive byte range of a representation, both ends within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// Offset of the first byte.
    pub start: u64,
    /// Offset of the last byte (inclusive, as `Content-Range` writes it).
    pub end_inclusive: u64,
}

impl ByteRange {
    /// Number of bytes in the range (never zero).
    pub fn len(&self) -> u64 {
        // end_inclusive < representation length <= u64::MAX, so no overflow.
        self.end_inclusive - self.start + 1
    }

    /// Always false: a range holds at least one byte (for clippy's `len`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The part of a chunk holding bytes `offset .. offset + chunk_len` of
    /// the representation that lies in this range, as indices into the
    /// chunk; `None` when they do not overlap.
    pub fn within_chunk(&self, offset: u64, chunk_len: usize) -> Option<Range<usize>> {
        let chunk_end = offset.saturating_add(chunk_len as u64); // exclusive
        let from = self.start.max(offset);
        let to = self.end_inclusive.saturating_add(1).min(chunk_end); // exclusive
        if from >= to {
            return None;
        }
        // Both lie within the chunk, so they fit its usize length.
        Some((from - offset) as usize..(to - offset) as usize)
    }

    /// The `Content-Range` value of a 206 for this range (RFC 9110 §14.4):
    /// `bytes <start>-<end>/<complete length>`.
    pub fn content_range(&self, complete_length: u64) -> String {
        format!(
            "bytes {}-{}/{complete_length}",
            self.start, self.end_inclusive
        )
    }
}

/// The `Content-Range` value of a 416 (RFC 9110 §14.4, §15.5.17):
/// `bytes */<complete length>`.
pub fn unsatisfied_content_range(complete_length: u64) -> String {
    format!("bytes */{complete_length}")
}

/// One `range-spec` of a `bytes` range set (RFC 9110 §14.1.1, §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-` or `first-last` (an int-range); numbers saturate at `u64::MAX`.
    Int {
        /// first-pos.
        first: u64,
        /// last-pos, when given.
        last: Option<u64>,
    },
    /// `-length`: the last `length` bytes (a suffix-range).
    Suffix {
        /// suffix-length.
        length: u64,
    },
}

impl RangeSpec {
    /// The bytes this spec selects from a representation of `length`
    /// bytes, or `None` when it is unsatisfiable there (§14.1.1).
    pub fn resolve(&self, length: u64) -> Option<ByteRange> {
        if length == 0 {
            return None;
        }
        match *self {
            RangeSpec::Int { first, last } => (first < length).then(|| ByteRange {
                start: first,
                end_inclusive: last.map_or(length - 1, |last| last.min(length - 1)),
            }),
            // "If the selected representation is shorter than the specified
            // suffix-length, the entire representation is used." (§14.1.2)
            RangeSpec::Suffix { length: suffix } => (suffix > 0).then(|| ByteRange {
                start: length - suffix.min(length),
                end_inclusive: length - 1,
            }),
        }
    }
}

/// Parses a `Range` field value (RFC 9110 §14.2, §14.1.1). `None` means the
/// value is not a valid `bytes` ranges-specifier and must be ignored.
pub fn parse_range(value: &[u8]) -> Option<Vec<RangeSpec>> {
    let value = value.trim_ascii();
    let eq = value.iter().position(|&b| b == b'=')?;
    let (unit, set) = (&value[..eq], &value[eq + 1..]);
    // Range unit names are case-insensitive (§14.1).
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    if set.first().is_some_and(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let mut specs = Vec::new();
    for element in set.split(|&b| b == b',') {
        // OWS around commas; empty elements are skipped (§5.6.1.2).
        let element = element.trim_ascii();
        if element.is_empty() {
            continue;
        }
        specs.push(parse_spec(element)?);
    }
    // range-set = 1#range-spec: at least one.
    (!specs.is_empty()).then_some(specs)
}

/// One `int-range` or `suffix-range`; anything else is invalid for `bytes`.
fn parse_spec(spec: &[u8]) -> Option<RangeSpec> {
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        return Some(RangeSpec::Suffix {
            length: digits(last)?,
        });
    }
    let first_pos = digits(first)?;
    if last.is_empty() {
        return Some(RangeSpec::Int {
            first: first_pos,
            last: None,
        });
    }
    let last_pos = digits(last)?;
    // "An int-range is invalid if the last-pos value is present and less
    // than the first-pos" (§14.1.1), compared exactly, not saturated.
    if compare_decimal(last, first) == Ordering::Less {
        return None;
    }
    Some(RangeSpec::Int {
        first: first_pos,
        last: Some(last_pos),
    })
}

/// `1*DIGIT` as a number saturating at `u64::MAX`; `None` if not all digits.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Compares two digit strings by value, whatever their length.
fn compare_decimal(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&d| d == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// What a range request gets from a complete representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 with the whole representation: no `Range`, or one that is
    /// ignored (invalid, another unit, failed `If-Range`, not GET, not a
    /// 200, or ranges we do not serve as one part).
    Full,
    /// 206 with these bytes.
    Partial(ByteRange),
    /// 416: no range of the set is satisfiable.
    Unsatisfiable,
}

/// Evaluates a parsed range set against a representation of `length` bytes.
pub fn resolve(specs: &[RangeSpec], length: u64) -> RangeAnswer {
    if length == 0 || specs.len() > MAX_RANGES {
        return RangeAnswer::Full;
    }
    let mut ranges: Vec<ByteRange> = specs.iter().filter_map(|s| s.resolve(length)).collect();
    if ranges.is_empty() {
        return RangeAnswer::Unsatisfiable;
    }
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged = ranges[0];
    for next in &ranges[1..] {
        // Overlapping or adjacent (no gap byte between them).
        if next.start > merged.end_inclusive.saturating_add(1) {
            return RangeAnswer::Full;
        }
        merged.end_inclusive = merged.end_inclusive.max(next.end_inclusive);
    }
    RangeAnswer::Partial(merged)
}

/// Whether `If-Range` lets the range apply (RFC 9110 §13.1.5), given the
/// stored response's header fields. True when the request has no
/// `If-Range`. An entity-tag matches only by strong comparison (a weak
/// stored `ETag` never matches); an HTTP-date matches only if it equals the
/// stored `Last-Modified` and that date is strong (§8.8.2.2: the stored
/// `Date` is at least one second later). Anything else, including an
/// invalid or repeated `If-Range`, is false: the full 200 is served.
pub fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut values = request.get_all(header::IF_RANGE).iter();
    let Some(value) = values.next() else {
        return true;
    };
    if values.next().is_some() {
        return false;
    }
    let value = value.as_bytes().trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        let Some(tag) = parse_entity_tag(value) else {
            return false;
        };
        let stored_tag = single(stored, &header::ETAG).and_then(|v| parse_entity_tag(v.as_bytes()));
        return stored_tag.is_some_and(|s| s.strong_eq(&tag));
    }
    let Some(date) = parse_http_date(value) else {
        return false;
    };
    let Some(last_modified) = single_date(stored, &header::LAST_MODIFIED) else {
        return false;
    };
    let strong = single_date(stored, &header::DATE)
        .and_then(|d| d.duration_since(last_modified).ok())
        .is_some_and(|gap| gap >= STRONG_DATE_GAP);
    strong && date == last_modified
}

/// Whether the request asks for a range this module would act on: a GET
/// with one valid `bytes` `Range` field.
pub fn requests_range(method: &Method, request: &HeaderMap) -> bool {
    method == Method::GET && single_range_field(request).is_some()
}

/// The answer to `method` with `request` headers from a stored response of
/// `status`, `stored` header fields and a body of `length` bytes, in the
/// order of RFC 9110 §13.2.2 step 5 (the caller has already answered any
/// `If-None-Match` / `If-Modified-Since` with 304).
pub fn answer(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    stored: &HeaderMap,
    length: u64,
) -> RangeAnswer {
    if method != Method::GET || status != StatusCode::OK {
        return RangeAnswer::Full;
    }
    let Some(specs) = single_range_field(request) else {
        return RangeAnswer::Full;
    };
    // If-Range is evaluated only with a Range (§13.1.5), before it.
    if !if_range_holds(request, stored) {
        return RangeAnswer::Full;
    }
    resolve(&specs, length)
}

/// The parsed `Range`, when there is exactly one valid field line.
fn single_range_field(request: &HeaderMap) -> Option<Vec<RangeSpec>> {
    single(request, &header::RANGE).and_then(|v| parse_range(v.as_bytes()))
}

#[cfg(test)]
mod tests;
