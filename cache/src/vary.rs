//! Vary (RFC 9111 §4.1): which request headers select among the stored
//! variants of one URL.
//!
//! A stored response carries a [`VarySpec`] (from its `Vary` field) and the
//! [`SecondaryKey`] built from the request that produced it; variants live
//! side by side under `(CacheKey, SecondaryKey)`. A later request matches a
//! variant when its own secondary key, built under the stored spec, is equal.
//!
//! Rules and trade-offs:
//! - `Vary: *` (anywhere in the list) never matches (§4.1). A `Vary` member
//!   that is not a valid field name is treated as `*` too: we cannot tell
//!   what it nominates, and a miss is safe where a wrong variant is not.
//! - Multiple `Vary` lines and comma lists are combined; names are
//!   lower-cased, sorted and deduplicated (field names are case-insensitive,
//!   RFC 9110 §5.1), so `Vary: Accept, accept-encoding` equals
//!   `Vary: Accept-Encoding` + `Vary: Accept`.
//! - An absent request header is distinct from an empty one.
//! - Request values are normalised only in the ways §4.1 allows:
//!   multiple field lines are combined (`", "`; `"; "` for `Cookie`,
//!   RFC 9113 §8.2.3 / RFC 6265 §5.4) and whitespace is removed around
//!   commas and at the ends, outside quoted strings. For fields we know:
//!   - `Accept-Encoding`, `Accept-Charset`, `Accept-Language`: lower-cased
//!     (codings, charsets and language tags are case-insensitive, RFC 9110
//!     §8.4.1, §8.3.2, §8.5.1), empty list members dropped (§5.6.1) and
//!     whitespace around `;` removed (§5.6.6);
//!   - `Accept`: the same list rules, but only the media range and
//!     parameter names are lower-cased; parameter values keep their case
//!     (RFC 9110 §8.3.1: they may be case-sensitive);
//!   - every other field (`Cookie`, `User-Agent`, `Origin`, …) keeps its
//!     case and its empty members.
//!
//!   Members are never reordered: order can carry preference among equal
//!   weights, and the gain (fewer variants) is small.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, header};
use xxhash_rust::xxh3::xxh3_64;

use crate::cache_control::syntax::trim_ows;

/// The request fields a stored response varies on (RFC 9111 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarySpec {
    /// `Vary: *` (or an unusable member): the response never matches a later request.
    Any,
    /// Sorted, deduplicated, lower-case field names; empty when there is no `Vary`.
    Fields(Vec<HeaderName>),
}

impl VarySpec {
    /// Whether the response varies on nothing (no `Vary`, or an empty one).
    pub fn is_empty(&self) -> bool {
        matches!(self, VarySpec::Fields(f) if f.is_empty())
    }
}

/// Parses the `Vary` field lines of a response (RFC 9111 §4.1, RFC 9110 §12.5.5).
pub fn vary_fields(response_headers: &HeaderMap) -> VarySpec {
    let mut names = Vec::new();
    for value in response_headers.get_all(header::VARY) {
        for member in value.as_bytes().split(|&b| b == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue; // empty list members are ignored (RFC 9110 §5.6.1)
            }
            if member == b"*" {
                return VarySpec::Any;
            }
            match HeaderName::from_bytes(member) {
                Ok(name) => names.push(name),
                Err(_) => return VarySpec::Any,
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    VarySpec::Fields(names)
}

/// The nominated request headers of one variant, normalised (RFC 9111 §4.1).
///
/// Cheap to clone (an `Arc`) and to compare: a precomputed 64-bit hash is
/// checked before the bytes. The byte form includes each field name, so
/// keys built under different specs never collide.
#[derive(Clone)]
pub struct SecondaryKey {
    hash: u64,
    bytes: Arc<[u8]>,
}

impl SecondaryKey {
    /// Rebuilds a key from [`SecondaryKey::as_bytes`] (e.g. a disk index).
    pub fn from_bytes(bytes: &[u8]) -> SecondaryKey {
        SecondaryKey {
            hash: xxh3_64(bytes),
            bytes: Arc::from(bytes),
        }
    }

    /// The byte form: per field `name:value\n`, or `name\0\n` when absent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Stable XXH3-64 (seed 0) of [`as_bytes`](Self::as_bytes).
    pub fn digest(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for SecondaryKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.bytes == other.bytes
    }
}

impl Eq for SecondaryKey {}

impl Hash for SecondaryKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for SecondaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecondaryKey({:?})",
            String::from_utf8_lossy(&self.bytes)
        )
    }
}

/// Builds the secondary key of a request under `spec`; `None` for `Vary: *`.
pub fn secondary_key(spec: &VarySpec, request_headers: &HeaderMap) -> Option<SecondaryKey> {
    secondary_bytes(spec, request_headers).map(|bytes| SecondaryKey::from_bytes(&bytes))
}

/// The byte form ([`SecondaryKey::as_bytes`]) of the secondary key that
/// `request_headers` select under `spec`, without building the key; `None`
/// for `Vary: *`. An empty spec allocates nothing.
pub fn secondary_bytes(spec: &VarySpec, request_headers: &HeaderMap) -> Option<Vec<u8>> {
    let VarySpec::Fields(fields) = spec else {
        return None;
    };
    let mut bytes = Vec::new();
    for name in fields {
        bytes.extend_from_slice(name.as_str().as_bytes());
        match normalized_value(name, request_headers) {
            // NUL and ':' never occur in a field name and NUL/LF never in a
            // field value (RFC 9110 §5.1, §5.5), so the encoding is unambiguous.
            None => bytes.push(0),
            Some(v) => {
                bytes.push(b':');
                bytes.extend_from_slice(&v);
            }
        }
        bytes.push(b'\n');
    }
    Some(bytes)
}

/// Whether a request selects the stored variant (RFC 9111 §4.1); never for `Vary: *`.
pub fn matches(spec: &VarySpec, stored: &SecondaryKey, request_headers: &HeaderMap) -> bool {
    secondary_bytes(spec, request_headers).is_some_and(|b| stored.as_bytes() == b.as_slice())
}

/// The normalised value of request field `name` (see the module docs);
/// `None` when the request has no such field.
pub fn normalized_value(name: &HeaderName, request_headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut lines = request_headers.get_all(name).iter().peekable();
    lines.peek()?;
    let separator: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
    let mut combined = Vec::new();
    for (i, line) in lines.enumerate() {
        if i > 0 {
            combined.extend_from_slice(separator);
        }
        combined.extend_from_slice(line.as_bytes());
    }
    let class = match name.as_str() {
        "accept-encoding" | "accept-charset" | "accept-language" => Class::CaseInsensitiveList,
        "accept" => Class::MediaRangeList,
        _ => Class::Opaque,
    };
    Some(normalize(&combined, class))
}

#[derive(Clone, Copy, PartialEq)]
enum Class {
    /// Keep case and empty members; trim around commas and at the ends.
    Opaque,
    /// A list of case-insensitive tokens with parameters.
    CaseInsensitiveList,
    /// `Accept`: case-insensitive ranges and parameter names, values as sent.
    MediaRangeList,
}

fn normalize(value: &[u8], class: Class) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut member_out = Vec::new();
    for (i, member) in split_unquoted(value, b',').into_iter().enumerate() {
        let member = trim_ows(member);
        member_out.clear();
        if class == Class::Opaque {
            member_out.extend_from_slice(member);
        } else {
            normalize_list_member(member, class, &mut member_out);
            if member_out.is_empty() {
                continue; // empty list members are ignored (RFC 9110 §5.6.1)
            }
        }
        if i > 0 && (class == Class::Opaque || !out.is_empty()) {
            out.push(b',');
        }
        out.extend_from_slice(&member_out);
    }
    out
}

/// `token *( OWS ";" OWS [ parameter ] )` with the case rules of `class`.
fn normalize_list_member(member: &[u8], class: Class, out: &mut Vec<u8>) {
    let mut first_part = true;
    for part in split_unquoted(member, b';') {
        let part = trim_ows(part);
        if part.is_empty() {
            continue; // empty parameters are allowed and meaningless (RFC 9110 §5.6.6)
        }
        if !first_part {
            out.push(b';');
        }
        let lower_up_to = match class {
            Class::MediaRangeList if !first_part => {
                part.iter().position(|&b| b == b'=').unwrap_or(part.len())
            }
            _ => part.len(),
        };
        first_part = false;
        push_lower_unquoted(&part[..lower_up_to], out);
        out.extend_from_slice(&part[lower_up_to..]);
    }
}

/// Tracks whether bytes lie inside a quoted-string (RFC 9110 §5.6.4),
/// backslash quoted-pairs included.
#[derive(Default)]
struct Quotes {
    quoted: bool,
    escaped: bool,
}

impl Quotes {
    /// Feeds the next byte; true when it is outside every quoted string
    /// (the quote marks themselves count as inside).
    fn outside(&mut self, b: u8) -> bool {
        if self.quoted {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.quoted = false;
            }
            false
        } else if b == b'"' {
            self.quoted = true;
            false
        } else {
            true
        }
    }
}

/// Appends `s`, ASCII-lower-casing bytes outside quoted strings.
fn push_lower_unquoted(s: &[u8], out: &mut Vec<u8>) {
    let mut quotes = Quotes::default();
    out.extend(s.iter().map(|&b| {
        if quotes.outside(b) {
            b.to_ascii_lowercase()
        } else {
            b
        }
    }));
}

/// Splits on `sep` outside quoted strings (RFC 9110 §5.6.4).
fn split_unquoted(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut quotes = Quotes::default();
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        if quotes.outside(b) && b == sep {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(list: &[&'static str]) -> VarySpec {
        VarySpec::Fields(list.iter().map(|n| HeaderName::from_static(n)).collect())
    }

    #[test]
    fn parse_vary() {
        // (section, Vary field lines, expected spec)
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], VarySpec)] = &[
            ("RFC 9111 §4.1: no Vary", &[], names(&[])),
            ("RFC 9111 §4.1: Vary: * never matches", &["*"], VarySpec::Any),
            ("RFC 9111 §4.1: * inside a list", &["accept, *"], VarySpec::Any),
            ("RFC 9110 §12.5.5: names case-insensitive, sorted", &["User-Agent, Accept"], names(&["accept", "user-agent"])),
            ("RFC 9110 §5.3: multiple lines combined, deduplicated", &["Accept", "accept-encoding, ACCEPT"], names(&["accept", "accept-encoding"])),
            ("RFC 9110 §5.6.1: empty members ignored", &[" , accept ,,"], names(&["accept"])),
            ("RFC 9111 §4.1: unusable member treated as *", &["accept, a b"], VarySpec::Any),
            ("RFC 9110 §12.5.5: empty Vary varies on nothing", &[""], names(&[])),
        ];
        for (section, lines, want) in cases {
            let h = headers(&lines.iter().map(|l| ("vary", *l)).collect::<Vec<_>>());
            assert_eq!(&vary_fields(&h), want, "{section}");
        }
    }

    #[test]
    fn normalisation() {
        // (section, field, request field lines, expected normalised value; None = absent)
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[&str], Option<&str>)] = &[
            ("RFC 9111 §4.1: absent header", "accept", &[], None),
            ("RFC 9111 §4.1: empty header is not absent", "accept", &[""], Some("")),
            ("RFC 9111 §4.1: whitespace around commas", "accept-encoding", &[" gzip ,  br "], Some("gzip,br")),
            ("RFC 9111 §4.1: lines combined", "accept-encoding", &["gzip", "br"], Some("gzip,br")),
            ("RFC 9110 §8.4.1: codings case-insensitive", "accept-encoding", &["GZip;Q=0.5, BR"], Some("gzip;q=0.5,br")),
            ("RFC 9110 §5.6.6: whitespace around ;", "accept-encoding", &["gzip ; q=1"], Some("gzip;q=1")),
            ("RFC 9110 §5.6.1: empty list members dropped", "accept-encoding", &["gzip,,br,"], Some("gzip,br")),
            ("RFC 9110 §8.5.1: language tags case-insensitive", "accept-language", &["en-US, DE;q=0.5"], Some("en-us,de;q=0.5")),
            ("RFC 9110 §8.3.2: charsets case-insensitive", "accept-charset", &["UTF-8"], Some("utf-8")),
            ("RFC 9110 §8.3.1: media range lower, param value kept", "accept", &["Text/HTML; Level=A, */*"], Some("text/html;level=A,*/*")),
            ("RFC 9110 §8.3.1: quoted param value kept", "accept", &["a/b;p=\"X, Y\""], Some("a/b;p=\"X, Y\"")),
            ("RFC 9111 §4.1: other fields keep case", "user-agent", &["Mozilla/5.0 (X11)"], Some("Mozilla/5.0 (X11)")),
            ("RFC 9111 §4.1: other fields trimmed around commas", "x-thing", &[" A ,B "], Some("A,B")),
            ("RFC 9110 §5.6.4: quoted strings untouched", "x-thing", &["\"a , b\" , c"], Some("\"a , b\",c")),
            ("RFC 9113 §8.2.3: cookie crumbs joined with ; ", "cookie", &["a=1", "b=2"], Some("a=1; b=2")),
            ("RFC 9111 §4.1: other fields keep empty members", "x-thing", &["a,,b"], Some("a,,b")),
        ];
        for (section, field, lines, want) in cases {
            let name = HeaderName::from_bytes(field.as_bytes()).unwrap();
            let h = headers(&lines.iter().map(|l| (*field, *l)).collect::<Vec<_>>());
            let got = normalized_value(&name, &h);
            assert_eq!(got.as_deref(), want.map(str::as_bytes), "{section}");
        }
    }

    #[test]
    fn matching() {
        let enc = names(&["accept-encoding"]);
        let stored = secondary_key(&enc, &headers(&[("accept-encoding", "gzip, br")])).unwrap();
        // (section, spec, request headers, expected match)
        #[rustfmt::skip]
        let cases: &[(&str, &VarySpec, HeaderMap, bool)] = &[
            ("RFC 9111 §4.1: same value matches", &enc, headers(&[("accept-encoding", "gzip, br")]), true),
            ("RFC 9111 §4.1: normalised value matches", &enc, headers(&[("accept-encoding", "GZIP"), ("accept-encoding", "br")]), true),
            ("RFC 9111 §4.1: different value misses", &enc, headers(&[("accept-encoding", "br")]), false),
            ("RFC 9111 §4.1: absent header misses", &enc, headers(&[]), false),
            ("RFC 9111 §4.1: Vary: * never matches", &VarySpec::Any, headers(&[("accept-encoding", "gzip, br")]), false),
            ("RFC 9111 §4.1: unrelated headers ignored", &enc, headers(&[("accept-encoding", "gzip,br"), ("accept", "x/y")]), true),
        ];
        for (section, spec, req, want) in cases {
            assert_eq!(matches(spec, &stored, req), *want, "{section}");
        }
        // RFC 9111 §4.1: absent-vs-absent matches, absent-vs-empty does not
        let ua = names(&["user-agent"]);
        let none = secondary_key(&ua, &HeaderMap::new()).unwrap();
        assert!(matches(&ua, &none, &HeaderMap::new()));
        assert!(!matches(&ua, &none, &headers(&[("user-agent", "")])));
        // RFC 9111 §4.1: a key from another spec never collides
        let other = secondary_key(&names(&["accept"]), &headers(&[("accept", "gzip, br")]));
        assert_ne!(other.as_ref(), Some(&stored));
        // RFC 9111 §4.1: no Vary: every request matches the single variant
        let empty = secondary_key(&names(&[]), &HeaderMap::new()).unwrap();
        assert!(matches(&names(&[]), &empty, &headers(&[("accept", "x")])));
        assert_eq!(SecondaryKey::from_bytes(stored.as_bytes()), stored);
    }

    fn field_value() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ \\ta-zA-Z0-9,;=\"\\\\/*.-]{0,24}").unwrap()
    }

    proptest! {
        /// RFC 9111 §4.1: normalising an already-normalised value changes nothing.
        #[test]
        fn normalisation_is_idempotent(
            field in prop::sample::select(vec!["accept", "accept-encoding", "accept-language", "cookie", "user-agent"]),
            lines in prop::collection::vec(field_value(), 1..3),
        ) {
            let name = HeaderName::from_static(field);
            let h = headers(&lines.iter().map(|l| (field, l.as_str())).collect::<Vec<_>>());
            let once = normalized_value(&name, &h).unwrap();
            let mut again = HeaderMap::new();
            again.insert(name.clone(), HeaderValue::from_bytes(&once).unwrap());
            let twice = normalized_value(&name, &again).unwrap();
            prop_assert_eq!(&once, &twice);
            let spec = VarySpec::Fields(vec![name]);
            prop_assert_eq!(secondary_key(&spec, &h), secondary_key(&spec, &again));
        }
    }
}
