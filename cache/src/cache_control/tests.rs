//! Table-driven cases for the Cache-Control and targeted-field parsers; each
//! row cites the RFC section it exercises.
//!
//! Tables are text so they read like the RFC examples: columns split by
//! ` | `, field lines within a cell by ` ¶ `, `\t` stands for a tab, and the
//! expected directives are written in [`summary`] form (`-` for none).

use super::*;
use http::HeaderValue;
use proptest::prelude::*;

/// input field lines | expected summary | section
const RESPONSE_CASES: &str = r#"
max-age=60                                | max-age=60                 | RFC 9111 §5.2.2.1
max-age="60"                              | max-age=60                 | RFC 9111 §5.2 (quoted form accepted)
MAX-AGE=60                                | max-age=60                 | RFC 9111 §5.2 (names case-insensitive)
max-age=-1                                | max-age=0                  | RFC 9111 §4.2.1, §1.2.2 (negative: stale)
max-age=abc                               | max-age=0                  | RFC 9111 §4.2.1 (non-integer: stale)
max-age=                                  | max-age=0                  | RFC 9111 §4.2.1 (empty: stale)
max-age                                   | max-age=0                  | RFC 9111 §5.2.2.1 (argument required)
max-age=1.5                               | max-age=0                  | RFC 9111 §1.2.2 (delta-seconds is 1*DIGIT)
max-age=5=6                               | max-age=0                  | RFC 9111 §5.2 (argument not a token)
max-age=99999999999999999999999           | max-age=2147483648         | RFC 9111 §1.2.2 (clamp to 2^31)
max-age=2147483649                        | max-age=2147483648         | RFC 9111 §1.2.2 (clamp to 2^31)
max-age=2147483647                        | max-age=2147483647         | RFC 9111 §1.2.2 (below the clamp)
max-age=60, max-age=60                    | max-age=60                 | RFC 9111 §4.2.1 (equal duplicates)
max-age=60, max-age=120                   | max-age=0                  | RFC 9111 §4.2.1 (conflicting duplicates: stale)
max-age=60 ¶ max-age=30                   | max-age=0                  | RFC 9111 §4.2.1, RFC 9110 §5.3 (lines combined)
max-age=60, max-age=x                     | max-age=0                  | RFC 9111 §4.2.1 (an invalid duplicate: stale)
public ¶ max-age=60                       | max-age=60 public          | RFC 9110 §5.3 (field lines combined)
s-maxage=600                              | s-maxage=600               | RFC 9111 §5.2.2.10
s-maxage=soon                             | s-maxage=0                 | RFC 9111 §5.2.2.10, §4.2.1 (invalid: stale)
s-maxage=10, s-maxage=20                  | s-maxage=0                 | RFC 9111 §4.2.1 (conflicting duplicates: stale)
no-cache                                  | no-cache                   | RFC 9111 §5.2.2.4
no-cache="Set-Cookie, X-Foo"              | no-cache=[set-cookie,x-foo] | RFC 9111 §5.2.2.4 (field list, lower-cased)
no-cache="a b"                            | no-cache                   | RFC 9111 §5.2.2.4 (malformed list: bare)
no-cache, no-cache="x"                    | no-cache                   | RFC 9111 §4.2.1 (most restrictive wins)
private                                   | private                    | RFC 9111 §5.2.2.7
private="Set-Cookie"                      | private=[set-cookie]       | RFC 9111 §5.2.2.7 (qualified)
private=Set-Cookie                        | private=[set-cookie]       | RFC 9111 §5.2.2.7 (token form accepted)
private=""                                | private                    | RFC 9111 §5.2.2.7 (empty list: bare)
private="a", private="b, A"               | private=[a,b]              | RFC 9111 §5.2.2.7 (lists united)
private="a,,  b,"                         | private=[a,b]              | RFC 9110 §5.6.1 (empty list elements)
private="set\-cookie"                     | private=[set-cookie]       | RFC 9110 §5.6.4 (quoted-pair)
max-age="6\0"                             | max-age=60                 | RFC 9110 §5.6.4 (quoted-pair in an argument)
private="a, b", max-age=5                 | max-age=5 private=[a,b]    | RFC 9111 §5.2 (comma inside quoted-string)
max-age="60                               | max-age=0                  | RFC 9110 §5.6.4 (unterminated: invalid)
private="x, no-store                      | private                    | RFC 9110 §5.6.4 (unterminated swallows the line)
max-age="60"x, public                     | max-age=0 public           | RFC 9111 §5.2 (text after the quote: invalid)
max-age=x"\                               | max-age=0                  | RFC 9110 §5.6.4 (regression: escape at end of line)
no-store                                  | no-store                   | RFC 9111 §5.2.2.5
no-store=1                                | no-store                   | RFC 9111 §5.2.2.5 (argument ignored: restrictive)
public                                    | public                     | RFC 9111 §5.2.2.9
must-revalidate, proxy-revalidate         | must-revalidate proxy-revalidate | RFC 9111 §5.2.2.2, §5.2.2.8
must-understand, no-store                 | no-store must-understand   | RFC 9111 §5.2.2.3
no-transform                              | no-transform               | RFC 9111 §5.2.2.6
max-age=31536000, immutable               | max-age=31536000 immutable | RFC 8246 §2
max-age=1, stale-while-revalidate=30      | max-age=1 swr=30           | RFC 5861 §3
stale-if-error=300                        | sie=300                    | RFC 5861 §4
stale-while-revalidate=abc                | -                          | RFC 5861 §3, RFC 9111 §4.2.1 (invalid grant dropped)
stale-if-error=10, stale-if-error=5       | sie=5                      | RFC 5861 §4, RFC 9111 §4.2.1 (most restrictive)
foo, max-age=10, bar="baz, qux"           | max-age=10                 | RFC 9111 §5.2.3 (unknown directives ignored)
, ,max-age=5,,                            | max-age=5                  | RFC 9110 §5.6.1 (empty list elements)
max-age = 5                               | max-age=5                  | RFC 9111 §5.2 (OWS around = tolerated)
\tmax-age=5 ,\tpublic\t                   | max-age=5 public           | RFC 9110 §5.6.3 (OWS)
max age=5                                 | -                          | RFC 9111 §5.2.3 (name not a token: ignored)
                                          | -                          | RFC 9110 §5.6.1 (empty field value)
"#;

/// input field lines | expected summary | section
const REQUEST_CASES: &str = r#"
max-age=0                                 | max-age=0                  | RFC 9111 §5.2.1.1
max-age="30"                              | max-age=30                 | RFC 9111 §5.2 (quoted form accepted)
max-age=abc                               | max-age=0                  | RFC 9111 §5.2.1.1 (invalid: 0, revalidate)
max-age=10, max-age=5                     | max-age=5                  | RFC 9111 §5.2.1.1 (duplicates: most restrictive)
max-stale                                 | max-stale                  | RFC 9111 §5.2.1.2 (bare: any staleness)
max-stale=30                              | max-stale=30               | RFC 9111 §5.2.1.2
max-stale, max-stale=30                   | max-stale=30               | RFC 9111 §5.2.1.2 (a bound beats none)
max-stale=x                               | -                          | RFC 9111 §5.2.1.2 (invalid grants nothing)
max-stale=99999999999                     | max-stale=2147483648       | RFC 9111 §1.2.2 (clamp)
min-fresh=20                              | min-fresh=20               | RFC 9111 §5.2.1.3
min-fresh=20 ¶ min-fresh=40               | min-fresh=40               | RFC 9111 §5.2.1.3 (duplicates: most restrictive)
min-fresh=oops                            | -                          | RFC 9111 §5.2.1.3 (invalid ignored)
no-cache                                  | no-cache                   | RFC 9111 §5.2.1.4
no-store                                  | no-store                   | RFC 9111 §5.2.1.5
no-transform                              | no-transform               | RFC 9111 §5.2.1.6
only-if-cached                            | only-if-cached             | RFC 9111 §5.2.1.7
NO-CACHE, Only-If-Cached                  | no-cache only-if-cached    | RFC 9111 §5.2 (names case-insensitive)
stale-if-error=60                         | sie=60                     | RFC 5861 §4
stale-if-error=-1                         | -                          | RFC 5861 §4 (invalid grant dropped)
public, s-maxage=5, private               | -                          | RFC 9111 §5.2.3 (response directives ignored)
no-cache="x", max-age="5, 6"              | max-age=0 no-cache         | RFC 9111 §5.2 (quoted comma, invalid delta)
"#;

/// response headers | expected summary | source | section
///
/// The cache's targeted fields are `edge-cache-control` then
/// `cdn-cache-control`; source is `edge`, `cdn`, `cc` (Cache-Control) or `none`.
const TARGETED_CASES: &str = r#"
cdn-cache-control: max-age=60 ¶ cache-control: max-age=5         | max-age=60        | cdn  | RFC 9213 §2.2 (targeted overrides Cache-Control)
cdn-cache-control: max-age=60 ¶ edge-cache-control: max-age=10   | max-age=10        | edge | RFC 9213 §2.2 (first in the cache's order wins)
edge-cache-control: max-age=10, ¶ cdn-cache-control: max-age=60  | max-age=60        | cdn  | RFC 9213 §2.1 (invalid field ignored: trailing comma)
cdn-cache-control: max-age=60,,public ¶ cache-control: no-store  | no-store          | cc   | RFC 9213 §2.1, RFC 8941 §4.2.2 (empty member)
cdn-cache-control: ¶ cache-control: max-age=5                    | max-age=5         | cc   | RFC 9213 §2.1 (empty field ignored)
cdn-cache-control: Max-Age=60 ¶ cache-control: max-age=5         | max-age=5         | cc   | RFC 8941 §3.2 (keys are lower-case)
cdn-cache-control: max-age=60 public                             | -                 | none | RFC 8941 §4.2.2 (missing comma)
cdn-cache-control: no-store=?0, max-age=60                       | max-age=60        | cdn  | RFC 9213 §2.1, RFC 8941 §3.3.6 (false Boolean)
cdn-cache-control: no-store=?1                                   | no-store          | cdn  | RFC 9213 §2.1 (true Boolean)
cdn-cache-control: a=?2                                          | -                 | none | RFC 8941 §4.2.8 (invalid Boolean)
cdn-cache-control: max-age=60;foo=bar, public;x                  | max-age=60 public | cdn  | RFC 8941 §3.1.2 (parameters ignored)
cdn-cache-control: private="Set-Cookie, X-A"                     | private=[set-cookie,x-a] | cdn | RFC 9213 §2.1 (String value, quoted comma)
cdn-cache-control: no-cache=x-a                                  | no-cache=[x-a]    | cdn  | RFC 9213 §2.1 (Token value)
cdn-cache-control: max-age=60, max-age=120                       | max-age=120       | cdn  | RFC 8941 §4.2.2 (last duplicate key wins)
cdn-cache-control: max-age=1234567890123456 ¶ cache-control: max-age=5 | max-age=5   | cc   | RFC 8941 §4.2.4 (Integer over 15 digits)
cdn-cache-control: max-age=999999999999999                       | max-age=2147483648 | cdn | RFC 9111 §1.2.2 (clamp)
cdn-cache-control: max-age="60"                                  | max-age=60        | cdn  | RFC 9111 §5.2 (quoted delta accepted)
cdn-cache-control: max-age=-1                                    | max-age=0         | cdn  | RFC 9111 §4.2.1 (negative: stale)
cdn-cache-control: max-age=1.5                                   | max-age=0         | cdn  | RFC 9111 §4.2.1 (Decimal: stale)
cdn-cache-control: max-age=:aGk=:                                | max-age=0         | cdn  | RFC 9111 §4.2.1 (Byte Sequence: stale)
cdn-cache-control: max-age=60 ¶ cdn-cache-control: stale-if-error=30 | max-age=60 sie=30 | cdn | RFC 8941 §4.2 (field lines combined)
cdn-cache-control: x=(a "b");p, s-maxage=5                       | s-maxage=5        | cdn  | RFC 8941 §4.2.1.2 (Inner List is valid)
cdn-cache-control: x=(a,b) ¶ cache-control: public               | public            | cc   | RFC 8941 §4.2.1.2 (malformed Inner List)
cdn-cache-control: max-age=60 ¶ cache-control: private           | max-age=60        | cdn  | RFC 9213 §2.2 (Cache-Control ignored)
cdn-cache-control: unknown-thing ¶ cache-control: no-store       | -                 | cdn  | RFC 9213 §2.2 (a valid field wins even if it says nothing)
cache-control: max-age=5                                         | max-age=5         | cc   | RFC 9213 §2.2 (no targeted field)
-                                                                | -                 | none | RFC 9111 §5.2 (no directives at all)
"#;

/// The rows of a text table: trimmed cells, blank lines skipped.
fn rows(table: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(" | ").map(str::trim).collect())
}

/// A cell's field lines as header values (`\t` becomes a tab).
fn lines(cell: &str) -> Vec<HeaderValue> {
    cell.split(" ¶ ")
        .map(|v| {
            let v = v.trim().replace("\\t", "\t");
            HeaderValue::from_str(&v).expect("test header value")
        })
        .collect()
}

fn push_delta(out: &mut Vec<String>, name: &str, v: Option<DeltaSeconds>) {
    if let Some(v) = v {
        out.push(format!("{name}={v}"));
    }
}

fn push_flag(out: &mut Vec<String>, name: &str, set: bool) {
    if set {
        out.push(name.to_owned());
    }
}

fn push_scope(out: &mut Vec<String>, name: &str, scope: &FieldScope) {
    match scope {
        FieldScope::Absent => {}
        FieldScope::All => out.push(name.to_owned()),
        FieldScope::Fields(f) => out.push(format!("{name}=[{}]", f.join(","))),
    }
}

fn finish(out: Vec<String>) -> String {
    if out.is_empty() {
        "-".to_owned()
    } else {
        out.join(" ")
    }
}

/// The set directives, in declaration order (`swr`/`sie` abbreviate the
/// RFC 5861 windows).
fn summary(d: &ResponseDirectives) -> String {
    let mut out = Vec::new();
    push_delta(&mut out, "max-age", d.max_age);
    push_delta(&mut out, "s-maxage", d.s_maxage);
    push_scope(&mut out, "no-cache", &d.no_cache);
    push_flag(&mut out, "no-store", d.no_store);
    push_scope(&mut out, "private", &d.private);
    push_flag(&mut out, "public", d.public);
    push_flag(&mut out, "must-revalidate", d.must_revalidate);
    push_flag(&mut out, "proxy-revalidate", d.proxy_revalidate);
    push_flag(&mut out, "must-understand", d.must_understand);
    push_flag(&mut out, "no-transform", d.no_transform);
    push_flag(&mut out, "immutable", d.immutable);
    push_delta(&mut out, "swr", d.stale_while_revalidate);
    push_delta(&mut out, "sie", d.stale_if_error);
    finish(out)
}

fn request_summary(d: &RequestDirectives) -> String {
    let mut out = Vec::new();
    push_delta(&mut out, "max-age", d.max_age);
    match d.max_stale {
        Some(MaxStale::Any) => out.push("max-stale".to_owned()),
        Some(MaxStale::Seconds(n)) => out.push(format!("max-stale={n}")),
        None => {}
    }
    push_delta(&mut out, "min-fresh", d.min_fresh);
    push_flag(&mut out, "no-cache", d.no_cache);
    push_flag(&mut out, "no-store", d.no_store);
    push_flag(&mut out, "no-transform", d.no_transform);
    push_flag(&mut out, "only-if-cached", d.only_if_cached);
    push_delta(&mut out, "sie", d.stale_if_error);
    finish(out)
}

#[test]
fn response_directives() {
    let mut count = 0;
    for row in rows(RESPONSE_CASES) {
        let [input, want, section] = row[..] else {
            panic!("bad row {row:?}")
        };
        let got = summary(&parse_response(&lines(input)));
        assert_eq!(got, want, "{input:?} ({section})");
        count += 1;
    }
    assert!(count >= 50, "{count} rows");
}

#[test]
fn request_directives() {
    let mut count = 0;
    for row in rows(REQUEST_CASES) {
        let [input, want, section] = row[..] else {
            panic!("bad row {row:?}")
        };
        let got = request_summary(&parse_request(&lines(input)));
        assert_eq!(got, want, "{input:?} ({section})");
        count += 1;
    }
    assert!(count >= 20, "{count} rows");
}

#[test]
fn targeted_fields() {
    let edge = HeaderName::from_static("edge-cache-control");
    let targets = [edge.clone(), CDN_CACHE_CONTROL];
    let mut count = 0;
    for row in rows(TARGETED_CASES) {
        let [input, want, source, section] = row[..] else {
            panic!("bad row {row:?}")
        };
        let mut headers = HeaderMap::new();
        for field in input.split(" ¶ ").filter(|f| *f != "-") {
            let (name, value) = field.split_once(':').expect("name: value");
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
                HeaderValue::from_str(value.trim()).expect("value"),
            );
        }
        let want_source = match source {
            "edge" => DirectiveSource::Targeted(edge.clone()),
            "cdn" => DirectiveSource::Targeted(CDN_CACHE_CONTROL),
            "cc" => DirectiveSource::CacheControl,
            "none" => DirectiveSource::None,
            other => panic!("bad source {other}"),
        };
        let (directives, got_source) = shared_cache_directives(&headers, &targets);
        assert_eq!(
            (summary(&directives).as_str(), got_source),
            (want, want_source),
            "{input:?} ({section})"
        );
        count += 1;
    }
    assert!(count >= 25, "{count} rows");
}

#[test]
fn field_scope_covers() {
    // RFC 9111 §5.2.2.4 / §5.2.2.7: field names compare case-insensitively.
    let scope = FieldScope::Fields(vec!["set-cookie".to_owned()]);
    assert!(scope.covers("Set-Cookie"));
    assert!(!scope.covers("x-a"));
    assert!(FieldScope::All.covers("set-cookie"));
    assert!(!FieldScope::Absent.covers("set-cookie"));
}

/// Large hostile fields (tens of thousands of names or keys) parse in one
/// pass: duplicates are removed with sets, not by rescanning (the
/// algorithms are linear; this checks the results, not the time).
#[test]
fn large_fields_parse() {
    let names: Vec<String> = (0..20_000).map(|i| format!("x-{i}")).collect();
    let list = format!("private=\"{}\"", names.join(", "));
    let d = parse_response(&lines(&format!("{list}, {list}")));
    assert_eq!(d.private, FieldScope::Fields(names));

    let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}=1")).collect();
    let field = format!("{}, max-age=5, max-age=7", keys.join(", "));
    assert_eq!(
        parse_targeted(&lines(&field)).and_then(|d| d.max_age),
        Some(7)
    );
}

/// Every string of up to five characters over an alphabet of the bytes the
/// parsers treat specially: none panics, and every delta stays clamped.
#[test]
fn exhaustive_small_alphabet_never_panics() {
    const ALPHABET: &[u8] = b"m=\"\\, 1-?;(:";
    let n = ALPHABET.len();
    for len in 0..=5u32 {
        for mut index in 0..n.pow(len) {
            let mut bytes = Vec::with_capacity(len as usize);
            for _ in 0..len {
                bytes.push(ALPHABET[index % n]);
                index /= n;
            }
            for prefix in [&b"max-age"[..], b"private", b""] {
                let mut line = prefix.to_vec();
                line.extend_from_slice(&bytes);
                check_never_panics(&line);
            }
        }
    }
}

fn check_never_panics(bytes: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        return;
    };
    let values = [value.clone(), value.clone()];
    let resp = parse_response(&values);
    let req = parse_request(&values);
    let _ = parse_targeted(&values);
    let mut headers = HeaderMap::new();
    headers.append(CDN_CACHE_CONTROL, value.clone());
    headers.append(CACHE_CONTROL, value);
    let (targeted, _) = shared_cache_directives(&headers, &[CDN_CACHE_CONTROL]);
    for d in [&resp, &targeted] {
        for v in [
            d.max_age,
            d.s_maxage,
            d.stale_while_revalidate,
            d.stale_if_error,
        ] {
            assert!(v.unwrap_or(0) <= MAX_DELTA_SECONDS, "{bytes:?}");
        }
    }
    for v in [req.max_age, req.min_fresh, req.stale_if_error] {
        assert!(v.unwrap_or(0) <= MAX_DELTA_SECONDS, "{bytes:?}");
    }
}

proptest! {
    /// Arbitrary bytes never panic the parsers (STYLE.md §2: never panic on
    /// network input).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_never_panics(&bytes);
    }

    /// Directive-shaped input, likelier to reach deep parser states.
    #[test]
    fn directive_shaped_input_never_panics(
        s in "([a-zA-Z-]{0,12}(=(\"([^\"\\\\]|\\\\.){0,8}\"?|[0-9a-z-]{0,20}|\\?[01]|:[a-z=]{0,4}:?))?(;[a-z]=1)?[ ,]{0,2}){0,6}"
    ) {
        check_never_panics(s.as_bytes());
    }

    /// A valid max-age always round-trips, clamped at 2^31 (RFC 9111 §1.2.2).
    #[test]
    fn max_age_round_trips(n in any::<u64>()) {
        let values = lines(&format!("max-age={n}"));
        prop_assert_eq!(parse_response(&values).max_age, Some(n.min(MAX_DELTA_SECONDS)));
    }
}
