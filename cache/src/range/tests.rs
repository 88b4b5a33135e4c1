//! Table-driven range cases, each citing the RFC section it exercises,
//! and property tests of the range arithmetic.

use super::*;
use crate::test_util::h;
use proptest::prelude::*;

/// Header field lines of one test case.
type Pairs = &'static [(&'static str, &'static str)];

const T0: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const T0_PLUS_1: &str = "Sun, 06 Nov 1994 08:49:38 GMT";
const T0_RFC850: &str = "Sunday, 06-Nov-94 08:49:37 GMT";
const T_LATER: &str = "Mon, 07 Nov 1994 08:49:37 GMT";

fn int(first: u64, last: Option<u64>) -> RangeSpec {
    RangeSpec::Int { first, last }
}

fn suffix(length: u64) -> RangeSpec {
    RangeSpec::Suffix { length }
}

fn part(start: u64, end_inclusive: u64) -> RangeAnswer {
    RangeAnswer::Partial(ByteRange {
        start,
        end_inclusive,
    })
}

#[test]
fn parsing() {
    use RangeSpec as S;
    // (section, field value, parsed specs or None = ignored)
    #[rustfmt::skip]
    let cases: &[(&str, &str, Option<Vec<S>>)] = &[
        ("RFC 9110 §14.1.2: first and last", "bytes=0-499", Some(vec![int(0, Some(499))])),
        ("RFC 9110 §14.1.2: open-ended", "bytes=9500-", Some(vec![int(9500, None)])),
        ("RFC 9110 §14.1.2: suffix", "bytes=-500", Some(vec![suffix(500)])),
        ("RFC 9110 §14.1.2: several", "bytes=500-600,601-999", Some(vec![int(500, Some(600)), int(601, Some(999))])),
        ("RFC 9110 §14.1.2: single byte", "bytes=0-0", Some(vec![int(0, Some(0))])),
        ("RFC 9110 §14.1: unit is case-insensitive", "Bytes=1-2", Some(vec![int(1, Some(2))])),
        ("RFC 9110 §5.6.1.2: OWS around commas", "bytes=0-1 ,\t2-3", Some(vec![int(0, Some(1)), int(2, Some(3))])),
        ("RFC 9110 §5.6.1.2: empty list elements ignored", "bytes=,0-1,,", Some(vec![int(0, Some(1))])),
        ("RFC 9110 §5.5: field value OWS trimmed", "  bytes=0-1  ", Some(vec![int(0, Some(1))])),
        ("RFC 9110 §14.1.1: leading zeros are digits", "bytes=007-010", Some(vec![int(7, Some(10))])),
        ("RFC 9110 §14.1.1: huge last-pos saturates", "bytes=5-99999999999999999999999", Some(vec![int(5, Some(u64::MAX))])),
        ("RFC 9110 §14.1.1: huge first-pos saturates", "bytes=99999999999999999999999-", Some(vec![int(u64::MAX, None)])),
        ("RFC 9110 §14.1.1: huge suffix saturates", "bytes=-99999999999999999999999", Some(vec![suffix(u64::MAX)])),
        ("RFC 9110 §14.1.1: suffix-length zero parses", "bytes=-0", Some(vec![suffix(0)])),
        ("RFC 9110 §14.1.1: last < first is invalid", "bytes=5-4", None),
        ("RFC 9110 §14.1.1: last < first, exact beyond u64", "bytes=99999999999999999999999-99999999999999999999998", None),
        ("RFC 9110 §14.1.1: one invalid spec spoils the set", "bytes=0-1,5-4", None),
        ("RFC 9110 §14.2: unknown unit ignored", "items=0-5", None),
        ("RFC 9110 §14.1.1: range-set needs a spec", "bytes=", None),
        ("RFC 9110 §14.1.1: only empty elements", "bytes=, ,", None),
        ("RFC 9110 §14.1.1: no '='", "bytes 0-5", None),
        ("RFC 9110 §14.1.1: no whitespace after '='", "bytes= 0-5", None),
        ("RFC 9110 §14.1.1: no whitespace before '='", "bytes =0-5", None),
        ("RFC 9110 §14.1.1: no whitespace inside a spec", "bytes=0 -5", None),
        ("RFC 9110 §14.1.1: dash required", "bytes=5", None),
        ("RFC 9110 §14.1.1: bare dash", "bytes=-", None),
        ("RFC 9110 §14.1.1: negative numbers are not digits", "bytes=--5", None),
        ("RFC 9110 §14.1.1: two dashes", "bytes=1-2-3", None),
        ("RFC 9110 §14.1.1: signs are not digits", "bytes=+1-2", None),
        ("RFC 9110 §14.1.1: hex is not digits", "bytes=0x10-20", None),
    ];
    for (section, value, want) in cases {
        assert_eq!(parse_range(value.as_bytes()), *want, "{section}: {value:?}");
    }
}

#[test]
fn resolving() {
    // (section, field value, representation length, answer)
    #[rustfmt::skip]
    let cases: &[(&str, &str, u64, RangeAnswer)] = &[
        ("RFC 9110 §14.1.2: first 500 bytes", "bytes=0-499", 10_000, part(0, 499)),
        ("RFC 9110 §14.1.2: second 500 bytes", "bytes=500-999", 10_000, part(500, 999)),
        ("RFC 9110 §14.1.2: last 500 bytes (suffix)", "bytes=-500", 10_000, part(9500, 9999)),
        ("RFC 9110 §14.1.2: last 500 bytes (open)", "bytes=9500-", 10_000, part(9500, 9999)),
        ("RFC 9110 §14.1.2: first and last byte only: not one part", "bytes=0-0,-1", 10_000, RangeAnswer::Full),
        ("RFC 9110 §14.1.2: last-pos past the end is clamped", "bytes=500-20000", 1000, part(500, 999)),
        ("RFC 9110 §14.1.2: suffix longer than the representation", "bytes=-5000", 1000, part(0, 999)),
        ("RFC 9110 §14.1.1: first-pos at the length is unsatisfiable", "bytes=1000-", 1000, RangeAnswer::Unsatisfiable),
        ("RFC 9110 §15.5.17: first-pos past the length", "bytes=5000-", 1000, RangeAnswer::Unsatisfiable),
        ("RFC 9110 §14.1.1: zero suffix-length is unsatisfiable", "bytes=-0", 1000, RangeAnswer::Unsatisfiable),
        ("RFC 9110 §14.1.1: huge first-pos is unsatisfiable", "bytes=99999999999999999999999-", u64::MAX, RangeAnswer::Unsatisfiable),
        ("RFC 9110 §14.1.1: huge last-pos covers the rest", "bytes=10-99999999999999999999999", u64::MAX, part(10, u64::MAX - 1)),
        ("RFC 9110 §14.1.1: huge suffix is the whole", "bytes=-99999999999999999999999", 1000, part(0, 999)),
        ("RFC 9110 §14.1.1: one satisfiable spec is enough", "bytes=5000-,0-9", 1000, part(0, 9)),
        ("RFC 9110 §15.5.17: none satisfiable among several", "bytes=5000-,6000-6001", 1000, RangeAnswer::Unsatisfiable),
        ("RFC 9110 §15.3.7.2: overlapping ranges coalesced", "bytes=0-99,50-149", 1000, part(0, 149)),
        ("RFC 9110 §15.3.7.2: adjacent ranges coalesced", "bytes=0-99,100-199", 1000, part(0, 199)),
        ("RFC 9110 §15.3.7.2: coalesced regardless of order", "bytes=100-199,0-99", 1000, part(0, 199)),
        ("RFC 9110 §15.3.7.2: contained range coalesced", "bytes=0-499,10-20", 1000, part(0, 499)),
        ("RFC 9110 §14.2: disjoint ranges ignored (our choice: 200)", "bytes=0-9,20-29", 1000, RangeAnswer::Full),
        ("RFC 9110 §14.2: suffix overlapping an int-range", "bytes=900-949,-100", 1000, part(900, 999)),
        ("RFC 9110 §14.1.1: zero length: our choice is 200", "bytes=-5", 0, RangeAnswer::Full),
        ("RFC 9110 §14.1.1: zero length, int-range too", "bytes=0-", 0, RangeAnswer::Full),
    ];
    for (section, value, length, want) in cases {
        let specs = parse_range(value.as_bytes()).expect(section);
        assert_eq!(resolve(&specs, *length), *want, "{section}: {value:?}");
    }
}

#[test]
fn too_many_ranges_are_ignored() {
    // RFC 9110 §14.2: many small ranges may be ignored.
    let many: Vec<String> = (0..=MAX_RANGES as u64)
        .map(|i| format!("{i}-{i}"))
        .collect();
    let value = format!("bytes={}", many.join(","));
    let specs = parse_range(value.as_bytes()).unwrap();
    assert_eq!(resolve(&specs, 1000), RangeAnswer::Full);
    let value = format!("bytes={}", many[..MAX_RANGES].join(","));
    let specs = parse_range(value.as_bytes()).unwrap();
    assert_eq!(resolve(&specs, 1000), part(0, MAX_RANGES as u64 - 1));
}

#[test]
fn if_range() {
    let strong = h(&[("etag", "\"v1\""), ("last-modified", T0), ("date", T_LATER)]);
    let weak_tag = h(&[("etag", "W/\"v1\""), ("date", T_LATER)]);
    let same_second = h(&[("last-modified", T0), ("date", T0)]);
    let one_second = h(&[("last-modified", T0), ("date", T0_PLUS_1)]);
    let no_date = h(&[("last-modified", T0)]);
    // (section, If-Range lines, stored fields, condition holds)
    #[rustfmt::skip]
    let cases: &[(&str, &[&str], &HeaderMap, bool)] = &[
        ("RFC 9110 §13.1.5: no If-Range", &[], &strong, true),
        ("RFC 9110 §13.1.5: entity-tag matches strongly", &["\"v1\""], &strong, true),
        ("RFC 9110 §13.1.5: entity-tag differs", &["\"v2\""], &strong, false),
        ("RFC 9110 §13.1.5: weak If-Range tag never matches", &["W/\"v1\""], &strong, false),
        ("RFC 9110 §8.8.3.2: weak stored tag never matches", &["\"v1\""], &weak_tag, false),
        ("RFC 9110 §8.8.3.2: weak both sides still no match", &["W/\"v1\""], &weak_tag, false),
        ("RFC 9110 §13.1.5: entity-tag but nothing stored", &["\"v1\""], &no_date, false),
        ("RFC 9110 §13.1.5: invalid entity-tag", &["\"v1"], &strong, false),
        ("RFC 9110 §13.1.5: date equals strong Last-Modified", &[T0], &strong, true),
        ("RFC 9110 §13.1.5: date equal in another format", &[T0_RFC850], &strong, true),
        ("RFC 9110 §13.1.5: date must match exactly, later fails", &[T_LATER], &strong, false),
        ("RFC 9110 §13.1.5: date must match exactly, earlier fails", &["Sat, 05 Nov 1994 08:49:37 GMT"], &strong, false),
        ("RFC 9110 §8.8.2.2: Date one second later is strong", &[T0], &one_second, true),
        ("RFC 9110 §8.8.2.2: same second is weak", &[T0], &same_second, false),
        ("RFC 9110 §8.8.2.2: no stored Date, not provably strong", &[T0], &no_date, false),
        ("RFC 9110 §13.1.5: date but no Last-Modified", &[T0], &weak_tag, false),
        ("RFC 9110 §13.1.5: neither tag nor date", &["yesterday"], &strong, false),
        ("RFC 9110 §13.1.5: If-Range is a singleton", &["\"v1\"", "\"v1\""], &strong, false),
    ];
    for (section, lines, stored, want) in cases {
        let request: Vec<(&str, &str)> = lines.iter().map(|v| ("if-range", *v)).collect();
        assert_eq!(if_range_holds(&h(&request), stored), *want, "{section}");
    }
}

#[test]
fn answers() {
    let stored = h(&[("etag", "\"v1\""), ("last-modified", T0), ("date", T_LATER)]);
    let ok = StatusCode::OK;
    let get = Method::GET;
    // (section, method, request fields, stored status, answer)
    #[rustfmt::skip]
    let cases: &[(&str, &Method, Pairs, StatusCode, RangeAnswer)] = &[
        ("RFC 9110 §14.2: GET with a range", &get, &[("range", "bytes=0-9")], ok, part(0, 9)),
        ("RFC 9110 §14.2: no Range is a full answer", &get, &[], ok, RangeAnswer::Full),
        ("RFC 9110 §14.2: HEAD ignores Range", &Method::HEAD, &[("range", "bytes=0-9")], ok, RangeAnswer::Full),
        ("RFC 9110 §14.2: only a 200 becomes 206", &get, &[("range", "bytes=0-9")], StatusCode::NOT_FOUND, RangeAnswer::Full),
        ("RFC 9110 §14.2: invalid Range ignored", &get, &[("range", "bytes=9-0")], ok, RangeAnswer::Full),
        ("RFC 9110 §14.2: Range is a singleton", &get, &[("range", "bytes=0-9"), ("range", "bytes=0-9")], ok, RangeAnswer::Full),
        ("RFC 9110 §15.5.17: unsatisfiable", &get, &[("range", "bytes=100-")], ok, RangeAnswer::Unsatisfiable),
        ("RFC 9110 §13.1.5: If-Range holds", &get, &[("range", "bytes=0-9"), ("if-range", "\"v1\"")], ok, part(0, 9)),
        ("RFC 9110 §13.1.5: failed If-Range gives 200", &get, &[("range", "bytes=0-9"), ("if-range", "\"v0\"")], ok, RangeAnswer::Full),
        ("RFC 9110 §13.2.2: failed If-Range wins over 416", &get, &[("range", "bytes=100-"), ("if-range", "\"v0\"")], ok, RangeAnswer::Full),
        ("RFC 9110 §13.1.5: If-Range without Range is ignored", &get, &[("if-range", "\"v0\"")], ok, RangeAnswer::Full),
    ];
    for (section, method, request, status, want) in cases {
        assert_eq!(
            answer(method, &h(request), *status, &stored, 100),
            *want,
            "{section}"
        );
    }
    assert!(requests_range(&get, &h(&[("range", "bytes=0-9")])));
    assert!(!requests_range(&get, &h(&[("range", "lines=0-9")])));
    assert!(!requests_range(
        &Method::HEAD,
        &h(&[("range", "bytes=0-9")])
    ));
}

#[test]
fn content_range_values() {
    // RFC 9110 §14.4: range-resp and unsatisfied-range.
    let range = ByteRange {
        start: 0,
        end_inclusive: 499,
    };
    assert_eq!(range.content_range(1234), "bytes 0-499/1234");
    assert_eq!(range.len(), 500);
    assert_eq!(unsatisfied_content_range(1000), "bytes */1000");
    let last = ByteRange {
        start: u64::MAX - 1,
        end_inclusive: u64::MAX - 1,
    };
    assert_eq!(last.len(), 1);
    assert_eq!(
        last.content_range(u64::MAX),
        format!("bytes {0}-{0}/{1}", u64::MAX - 1, u64::MAX)
    );
}

#[test]
fn chunk_overlap() {
    let range = ByteRange {
        start: 10,
        end_inclusive: 19,
    };
    // (chunk offset, chunk length, indices in the range)
    #[rustfmt::skip]
    let cases: &[(u64, usize, Option<Range<usize>>)] = &[
        (0, 10, None),           // just before
        (0, 11, Some(10..11)),   // first byte
        (0, 100, Some(10..20)),  // covers it all
        (12, 3, Some(0..3)),     // inside
        (15, 10, Some(0..5)),    // runs past the end
        (20, 5, None),           // just after
        (0, 0, None),            // empty chunk
    ];
    for (offset, len, want) in cases {
        assert_eq!(range.within_chunk(*offset, *len), *want, "{offset}+{len}");
    }
    let at_the_top = ByteRange {
        start: u64::MAX - 2,
        end_inclusive: u64::MAX - 1,
    };
    assert_eq!(at_the_top.within_chunk(u64::MAX - 4, 10), Some(2..4));
}

proptest! {
    #[test]
    fn arbitrary_values_never_panic(value in proptest::collection::vec(any::<u8>(), 0..64), length in any::<u64>()) {
        if let Some(specs) = parse_range(&value) {
            let _ = resolve(&specs, length);
        }
    }

    #[test]
    fn partial_lies_within_the_representation(
        specs in proptest::collection::vec(
            prop_oneof![
                (any::<u64>(), proptest::option::of(any::<u64>()))
                    .prop_map(|(a, b)| int(a, b.map(|b| b.max(a)))),
                any::<u64>().prop_map(suffix),
                (0u64..2000, proptest::option::of(0u64..2000))
                    .prop_map(|(a, b)| int(a, b.map(|b| b.max(a)))),
                (0u64..2000).prop_map(suffix),
            ],
            1..6,
        ),
        length in prop_oneof![0u64..3000, any::<u64>()],
    ) {
        match resolve(&specs, length) {
            RangeAnswer::Partial(r) => {
                prop_assert!(r.start <= r.end_inclusive);
                prop_assert!(r.end_inclusive < length);
                prop_assert!(r.len() <= length);
                // Every satisfiable spec lies inside the served range.
                for spec in &specs {
                    if let Some(s) = spec.resolve(length) {
                        prop_assert!(r.start <= s.start && s.end_inclusive <= r.end_inclusive);
                    }
                }
            }
            RangeAnswer::Unsatisfiable => {
                prop_assert!(specs.iter().all(|s| s.resolve(length).is_none()));
            }
            RangeAnswer::Full => {}
        }
    }

    #[test]
    fn printed_ranges_parse_back(first in any::<u64>(), len in 1u64..1_000_000) {
        let last = first.saturating_add(len - 1);
        let value = format!("bytes={first}-{last}");
        prop_assert_eq!(parse_range(value.as_bytes()), Some(vec![int(first, Some(last))]));
    }

    #[test]
    fn chunks_tile_the_range(
        chunk_lens in proptest::collection::vec(0usize..50, 0..40),
        start in 0u64..600,
        span in 0u64..600,
    ) {
        let total: u64 = chunk_lens.iter().map(|&l| l as u64).sum();
        let range = ByteRange { start, end_inclusive: start + span };
        let mut offset = 0u64;
        let mut taken = Vec::new();
        for len in chunk_lens {
            if let Some(r) = range.within_chunk(offset, len) {
                prop_assert!(r.start < r.end && r.end <= len);
                taken.extend((r.start as u64 + offset)..(r.end as u64 + offset));
            }
            offset += len as u64;
        }
        let want: Vec<u64> = (start..=(start + span).min(total.saturating_sub(1)))
            .filter(|&i| i < total)
            .collect();
        prop_assert_eq!(taken, want);
    }
}
