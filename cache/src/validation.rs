//! Validation (RFC 9111 §4.3): conditional requests to the origin, applying
//! its 304 to stored responses, and answering a client's own conditional
//! request from a fresh entry.
//!
//! Rules and trade-offs:
//! - Outgoing validation (§4.3.1) sends the stored `ETag` as `If-None-Match`
//!   (MUST) and the stored `Last-Modified` as `If-Modified-Since` (SHOULD,
//!   full requests only). The stored `Date` is never sent in its place: a
//!   response without validators is refetched in full rather than validated
//!   against a date the origin did not offer as a validator.
//! - A 304 updates stored header fields per §3.2 (see [`merge_304`]).
//! - Choosing which stored variants a 304 applies to follows §4.3.4. A
//!   `Last-Modified` in the 304 is treated as a *weak* validator there (we do
//!   not try to prove it strong by RFC 9110 §8.8.2.2), so it updates only the
//!   most recent matching variant; updating fewer variants is always safe,
//!   the others are just revalidated later. A 304 carrying an `ETag` or
//!   `Last-Modified` we cannot parse updates nothing.
//! - A client's `If-None-Match` / `If-Modified-Since` is evaluated against a
//!   stored response per RFC 9110 §13.1.2, §13.1.3 and the precedence of
//!   §13.2.2 (see [`client_conditional_matches`]). `If-Match` and
//!   `If-Unmodified-Since` are not evaluated: they are not applicable to a
//!   cache (§4.3.2), so the caller forwards such requests.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

use crate::age::parse_http_date;
use crate::cache_control::{FieldScope, parse_response};

/// An entity tag (RFC 9110 §8.8.3), borrowing its opaque part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// Whether the tag has the `W/` weakness indicator.
    pub weak: bool,
    /// The opaque tag without its quotes.
    pub opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// Strong comparison: both strong and opaque tags equal (RFC 9110 §8.8.3.2).
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: opaque tags equal, weakness ignored (RFC 9110 §8.8.3.2).
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// Parses one `entity-tag` (`[W/] DQUOTE *etagc DQUOTE`) with surrounding OWS.
pub fn parse_entity_tag(value: &[u8]) -> Option<EntityTag<'_>> {
    let (tag, rest) = parse_tag_at(value.trim_ascii())?;
    rest.is_empty().then_some(tag)
}

/// Builds the conditional header fields for validating a stored response
/// with its origin (RFC 9111 §4.3.1): `If-None-Match` from the `ETag` and
/// `If-Modified-Since` from `Last-Modified` (re-sent as IMF-fixdate,
/// RFC 9110 §5.6.7). Invalid or repeated validators are not sent.
pub fn conditional_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(etag) = single(stored, &header::ETAG)
        && parse_entity_tag(etag.as_bytes()).is_some()
    {
        out.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(time) = single_date(stored, &header::LAST_MODIFIED)
        && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(time))
    {
        out.insert(header::IF_MODIFIED_SINCE, value);
    }
    out
}

/// Header fields of a 304 that never update a stored response (RFC 9111 §3.2):
/// hop-by-hop fields (§3.1, RFC 9110 §7.6.1), proxy-specific fields (§3.1),
/// `Content-Length` (§3.2) and `Content-Range`, which the HTTP layer
/// processes (§3.2 MAY).
const NOT_UPDATED: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "content-length",
    "content-range",
];

/// Updates stored header fields from a 304 (RFC 9111 §3.2, used by §4.3.4):
/// each field in the 304 replaces all stored lines of that name, except the
/// fields in `NOT_UPDATED` and those the 304's `Connection` lists. Fields
/// named by `private="…"` or `no-cache="…"` in the resulting Cache-Control
/// are then dropped: a shared cache must not store them (§3.1, §5.2.2.4,
/// §5.2.2.7).
///
/// A stored `Age` is dropped unless the 304 carries one: age counts from
/// the last successful validation (§5.1), and keeping an old upstream Age
/// would leave the entry stale after every revalidation.
///
/// We store responses as received (no decoding), so no field is kept back
/// as "depended upon" (§3.2). The caller adds `Date` to a 304 lacking one
/// before merging (RFC 9110 §6.6.1), restarts the entry's age clock (§4.2.3)
/// from the 304's request and response times, and rebuilds the variant's
/// secondary key if `Vary` changed.
pub fn merge_304(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(not_modified);
    let mut out = stored.clone();
    for name in not_modified.keys() {
        if NOT_UPDATED.contains(&name.as_str()) || listed.contains(name) {
            continue;
        }
        out.remove(name);
        for value in not_modified.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    if !not_modified.contains_key(header::AGE) {
        // Age counts from generation or successful validation (§5.1): the
        // old upstream Age no longer describes the refreshed response.
        out.remove(header::AGE);
    }
    let cc = parse_response(out.get_all(header::CACHE_CONTROL));
    for scope in [cc.private, cc.no_cache] {
        if let FieldScope::Fields(fields) = scope {
            for field in fields {
                if let Ok(name) = HeaderName::from_bytes(field.as_bytes()) {
                    out.remove(name);
                }
            }
        }
    }
    out
}

/// Field names listed in `Connection` (RFC 9110 §7.6.1).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect()
}

/// The validators a 304 carries, classified for §4.3.4.
enum NewValidator<'a> {
    /// An ETag without `W/`.
    Strong(EntityTag<'a>),
    /// A weak ETag, or (our choice) only a `Last-Modified`.
    Weak(Option<EntityTag<'a>>, Option<SystemTime>),
    /// No validator at all.
    None,
    /// A validator we cannot parse: update nothing.
    Invalid,
}

fn classify(not_modified: &HeaderMap) -> NewValidator<'_> {
    let etag = match not_modified.get_all(header::ETAG).iter().count() {
        0 => None,
        _ => match single(not_modified, &header::ETAG).and_then(|v| parse_entity_tag(v.as_bytes()))
        {
            Some(tag) => Some(tag),
            None => return NewValidator::Invalid,
        },
    };
    let last_modified = match not_modified.get_all(header::LAST_MODIFIED).iter().count() {
        0 => None,
        _ => match single_date(not_modified, &header::LAST_MODIFIED) {
            Some(t) => Some(t),
            None => return NewValidator::Invalid,
        },
    };
    match (etag, last_modified) {
        (Some(tag), _) if !tag.weak => NewValidator::Strong(tag),
        (None, None) => NewValidator::None,
        (tag, lm) => NewValidator::Weak(tag, lm),
    }
}

/// Whether a 304 applies to one stored response with these validators
/// (RFC 9111 §4.3.4): a strong ETag must match strongly; a weak ETag must
/// match weakly (or, when the stored response has no ETag, `Last-Modified`
/// must be equal); a 304 with only `Last-Modified` needs an equal stored
/// `Last-Modified`; a 304 without validators applies only to a stored
/// response without validators. When several variants are candidates use
/// [`select_stored_for_304`], which also applies the "most recent" and
/// "only one stored response" rules.
pub fn select_for_304(
    stored_etag: Option<&HeaderValue>,
    stored_last_modified: Option<&HeaderValue>,
    not_modified: &HeaderMap,
) -> bool {
    let stored_tag = stored_etag.and_then(|v| parse_entity_tag(v.as_bytes()));
    let stored_lm = stored_last_modified.and_then(parse_http_date);
    match classify(not_modified) {
        NewValidator::Strong(tag) => stored_tag.is_some_and(|s| s.strong_eq(&tag)),
        NewValidator::Weak(tag, lm) => match (stored_tag, tag) {
            (Some(s), Some(t)) => s.weak_eq(&t),
            // A stored ETag the 304 omits, or a 304 ETag for a response
            // stored without one: fall back to the modification date.
            _ => lm.is_some() && stored_lm == lm,
        },
        NewValidator::None => stored_etag.is_none() && stored_last_modified.is_none(),
        NewValidator::Invalid => false,
    }
}

/// Which of the candidate stored responses (the variants that could have
/// answered the request, **most recent first**) a 304 updates, as indices
/// (RFC 9111 §4.3.4): every strong match; else the most recent weak match;
/// else, for a 304 without validators, the only candidate if it also has none.
pub fn select_stored_for_304(candidates: &[&HeaderMap], not_modified: &HeaderMap) -> Vec<usize> {
    let applies = |stored: &HeaderMap| {
        select_for_304(
            stored.get(header::ETAG),
            stored.get(header::LAST_MODIFIED),
            not_modified,
        )
    };
    match classify(not_modified) {
        NewValidator::Strong(_) => (0..candidates.len())
            .filter(|&i| applies(candidates[i]))
            .collect(),
        NewValidator::Weak(..) => candidates
            .iter()
            .position(|s| applies(s))
            .into_iter()
            .collect(),
        NewValidator::None if candidates.len() == 1 && applies(candidates[0]) => vec![0],
        NewValidator::None | NewValidator::Invalid => Vec::new(),
    }
}

/// Whether a client's conditional GET/HEAD is answered with 304 from a
/// stored response (RFC 9111 §4.3.2; RFC 9110 §13.1.2, §13.1.3, §13.2.2).
///
/// `If-None-Match` takes precedence: `*` matches any stored response, a list
/// matches by weak comparison with the stored `ETag`, and an invalid list
/// matches nothing. Only without it, `If-Modified-Since` (GET/HEAD only; a
/// single valid HTTP-date, otherwise ignored) matches when the stored
/// `Last-Modified` — or, lacking one, the stored `Date` (§4.3.2) — is not
/// later than it. Other methods never get a 304 here.
pub fn client_conditional_matches(
    method: &Method,
    request: &HeaderMap,
    stored: &HeaderMap,
) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    if request.contains_key(header::IF_NONE_MATCH) {
        let stored_tag = single(stored, &header::ETAG).and_then(|v| parse_entity_tag(v.as_bytes()));
        return match parse_if_none_match(request) {
            // `*` is false exactly when a current representation exists: ours.
            Some(IfNoneMatch::Any) => true,
            Some(IfNoneMatch::Tags(tags)) => {
                stored_tag.is_some_and(|s| tags.iter().any(|t| t.weak_eq(&s)))
            }
            None => false,
        };
    }
    let Some(since) = single_date(request, &header::IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified =
        single_date(stored, &header::LAST_MODIFIED).or_else(|| single_date(stored, &header::DATE));
    modified.is_some_and(|m| m <= since)
}

/// Header fields of a 304 answering a client from a stored response
/// (RFC 9110 §15.4.5): `Cache-Control`, `Content-Location`, `Date`, `ETag`,
/// `Expires` and `Vary`, plus `Last-Modified` when there is no `ETag`.
/// The caller adds `Age` and its own fields.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut names = vec![
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
    ];
    if !stored.contains_key(header::ETAG) {
        names.push(header::LAST_MODIFIED);
    }
    for name in names {
        for value in stored.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A parsed `If-None-Match` (RFC 9110 §13.1.2).
enum IfNoneMatch<'a> {
    /// `*`.
    Any,
    /// A list of entity tags.
    Tags(Vec<EntityTag<'a>>),
}

/// `If-None-Match` across its field lines; `None` when invalid.
fn parse_if_none_match(request: &HeaderMap) -> Option<IfNoneMatch<'_>> {
    let mut tags = Vec::new();
    let mut any = false;
    for value in request.get_all(header::IF_NONE_MATCH) {
        let mut rest = value.as_bytes();
        if rest.trim_ascii() == b"*" {
            any = true;
            continue;
        }
        loop {
            rest = rest.trim_ascii_start();
            while let [b',', tail @ ..] = rest {
                rest = tail.trim_ascii_start();
            }
            if rest.is_empty() {
                break;
            }
            let (tag, tail) = parse_tag_at(rest)?;
            tags.push(tag);
            rest = tail.trim_ascii_start();
            if !rest.is_empty() && rest[0] != b',' {
                return None;
            }
        }
    }
    // `*` combined with tags is not valid syntax (RFC 9110 §13.1.2).
    match (any, tags.is_empty()) {
        (true, true) => Some(IfNoneMatch::Any),
        (true, false) => None,
        (false, _) => Some(IfNoneMatch::Tags(tags)),
    }
}

/// Parses an entity-tag at the start of `s`, returning it and the rest.
fn parse_tag_at(s: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, s) = match s {
        [b'W', b'/', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    let [b'"', rest @ ..] = s else { return None };
    let end = rest.iter().position(|&b| b == b'"')?;
    let opaque = &rest[..end];
    // etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3)
    if !opaque
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7E).contains(&b) || b >= 0x80)
    {
        return None;
    }
    Some((EntityTag { weak, opaque }, &rest[end + 1..]))
}

/// The value of a singleton field, `None` when absent or repeated.
pub(crate) fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// A singleton HTTP-date field (RFC 9110 §5.6.7), `None` when absent,
/// repeated or invalid.
pub(crate) fn single_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    single(headers, name).and_then(parse_http_date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::h;

    /// Header field lines of one test case.
    type Pairs = &'static [(&'static str, &'static str)];
    /// (weak, opaque) of a parsed entity tag.
    type Tag = (bool, &'static str);
    /// A stored response's ETag and Last-Modified.
    type Validators = (Option<&'static str>, Option<&'static str>);

    const T0: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const T1: &str = "Sun, 06 Nov 1994 08:49:38 GMT";
    const T_850: &str = "Sunday, 06-Nov-94 08:49:37 GMT";

    fn lines(map: &HeaderMap, name: &str) -> Vec<String> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn entity_tags() {
        // (section, input, expected (weak, opaque))
        #[rustfmt::skip]
        let cases: &[(&str, &str, Option<Tag>)] = &[
            ("RFC 9110 §8.8.3: strong tag", "\"xyzzy\"", Some((false, "xyzzy"))),
            ("RFC 9110 §8.8.3: weak tag", "W/\"xyzzy\"", Some((true, "xyzzy"))),
            ("RFC 9110 §8.8.3: empty opaque tag", "\"\"", Some((false, ""))),
            ("RFC 9110 §8.8.3: unquoted is invalid", "xyzzy", None),
            ("RFC 9110 §8.8.3: lower-case w/ is invalid", "w/\"x\"", None),
            ("RFC 9110 §8.8.3: trailing junk is invalid", "\"x\" y", None),
        ];
        for (section, input, want) in cases {
            let got = parse_entity_tag(input.as_bytes())
                .map(|t| (t.weak, std::str::from_utf8(t.opaque).unwrap()));
            assert_eq!(got, *want, "{section}");
        }
    }

    #[test]
    fn outgoing_conditionals() {
        // (section, stored fields, expected If-None-Match, expected If-Modified-Since)
        #[rustfmt::skip]
        let cases: &[(&str, Pairs, Option<&str>, Option<&str>)] = &[
            ("RFC 9111 §4.3.1: MUST send the ETag", &[("etag", "\"a\"")], Some("\"a\""), None),
            ("RFC 9111 §4.3.1: weak ETag sent as is", &[("etag", "W/\"a\"")], Some("W/\"a\""), None),
            ("RFC 9111 §4.3.1: SHOULD send Last-Modified", &[("last-modified", T0)], None, Some(T0)),
            ("RFC 9111 §4.3.1: both validators", &[("etag", "\"a\""), ("last-modified", T0)], Some("\"a\""), Some(T0)),
            ("RFC 9111 §4.3.1: Date is not a validator", &[("date", T0)], None, None),
            ("RFC 9110 §8.8.3: invalid ETag not sent", &[("etag", "a")], None, None),
            ("RFC 9110 §5.6.7: obsolete date re-sent as IMF-fixdate", &[("last-modified", T_850)], None, Some(T0)),
            ("RFC 9110 §5.6.7: invalid date not sent", &[("last-modified", "yesterday")], None, None),
        ];
        for (section, stored, inm, ims) in cases {
            let out = conditional_headers(&h(stored));
            assert_eq!(
                out.get("if-none-match").map(|v| v.to_str().unwrap()),
                *inm,
                "{section}"
            );
            assert_eq!(
                out.get("if-modified-since").map(|v| v.to_str().unwrap()),
                *ims,
                "{section}"
            );
        }
    }

    #[test]
    fn merge_not_modified() {
        let stored = h(&[
            ("cache-control", "max-age=60"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("content-encoding", "gzip"),
            ("link", "</a>"),
            ("link", "</b>"),
            ("etag", "\"a\""),
            ("date", T0),
            ("age", "3000"),
        ]);
        // (section, 304 fields, field checked, expected lines after merge)
        #[rustfmt::skip]
        let cases: &[(&str, Pairs, &str, &[&str])] = &[
            ("RFC 9111 §3.2: field in 304 replaces stored", &[("cache-control", "max-age=120")], "cache-control", &["max-age=120"]),
            ("RFC 9111 §3.2: new field added", &[("x-new", "1")], "x-new", &["1"]),
            ("RFC 9111 §3.2: all stored lines replaced", &[("link", "</c>")], "link", &["</c>"]),
            ("RFC 9111 §3.2: fields absent from 304 kept", &[("date", T1)], "content-type", &["text/plain"]),
            ("RFC 9111 §3.2: Date updated", &[("date", T1)], "date", &[T1]),
            ("RFC 9111 §5.1: Age restarts at validation", &[("date", T1)], "age", &[]),
            ("RFC 9111 §5.1: Age of the 304 kept", &[("age", "3")], "age", &["3"]),
            ("RFC 9111 §3.2: Content-Length never updated", &[("content-length", "0")], "content-length", &["5"]),
            ("RFC 9111 §3.2: Content-* is not a signal to skip", &[("content-encoding", "br")], "content-encoding", &["br"]),
            ("RFC 9111 §3.2: Content-Range processed by HTTP layer", &[("content-range", "bytes 0-1/5")], "content-range", &[]),
            ("RFC 9111 §3.1: Connection not stored", &[("connection", "close")], "connection", &[]),
            ("RFC 9111 §3.1: Connection-listed field not stored", &[("connection", "x-hop"), ("x-hop", "1")], "x-hop", &[]),
            ("RFC 9110 §7.6.1: Keep-Alive not stored", &[("keep-alive", "timeout=5")], "keep-alive", &[]),
            ("RFC 9110 §7.6.1: Transfer-Encoding not stored", &[("transfer-encoding", "chunked")], "transfer-encoding", &[]),
            ("RFC 9111 §3.1: Proxy-Authenticate not stored", &[("proxy-authenticate", "Basic")], "proxy-authenticate", &[]),
            ("RFC 9111 §5.2.2.7: private=\"f\" field not stored", &[("cache-control", "max-age=60, private=\"x-user\""), ("x-user", "bob")], "x-user", &[]),
            ("RFC 9111 §5.2.2.4: no-cache=\"f\" removes stored field", &[("cache-control", "no-cache=\"link\"")], "link", &[]),
        ];
        for (section, not_modified, field, want) in cases {
            let merged = merge_304(&stored, &h(not_modified));
            assert_eq!(lines(&merged, field), *want, "{section}");
        }
    }

    #[test]
    fn select_one() {
        // (section, stored ETag, stored Last-Modified, 304 fields, applies)
        #[rustfmt::skip]
        let cases: &[(&str, Validators, Pairs, bool)] = &[
            ("RFC 9111 §4.3.4: strong validator matches", (Some("\"a\""), None), &[("etag", "\"a\"")], true),
            ("RFC 9111 §4.3.4: strong validator differs: MUST NOT update", (Some("\"a\""), Some(T0)), &[("etag", "\"b\""), ("last-modified", T0)], false),
            ("RFC 9110 §8.8.3.2: strong comparison rejects stored weak tag", (Some("W/\"a\""), None), &[("etag", "\"a\"")], false),
            ("RFC 9111 §4.3.4: weak validator matches weakly", (Some("\"a\""), None), &[("etag", "W/\"a\"")], true),
            ("RFC 9111 §4.3.4: weak validator differs", (Some("W/\"a\""), None), &[("etag", "W/\"b\"")], false),
            ("RFC 9111 §4.3.4: Last-Modified equal", (None, Some(T0)), &[("last-modified", T0)], true),
            ("RFC 9111 §4.3.4: Last-Modified equal across date formats", (None, Some(T_850)), &[("last-modified", T0)], true),
            ("RFC 9111 §4.3.4: Last-Modified differs", (None, Some(T0)), &[("last-modified", T1)], false),
            ("RFC 9111 §4.3.4: 304 omits stored ETag, LM equal", (Some("\"a\""), Some(T0)), &[("last-modified", T0)], true),
            ("RFC 9111 §4.3.4: weak ETag, stored has none, LM equal", (None, Some(T0)), &[("etag", "W/\"a\""), ("last-modified", T0)], true),
            ("RFC 9111 §4.3.4: no validators on either side", (None, None), &[("date", T0)], true),
            ("RFC 9111 §4.3.4: no validator in 304, stored has one", (Some("\"a\""), None), &[], false),
            ("RFC 9111 §4.3.4: unparseable 304 ETag updates nothing", (Some("\"a\""), None), &[("etag", "a")], false),
        ];
        for (section, (etag, lm), not_modified, want) in cases {
            let etag = etag.map(HeaderValue::from_static);
            let lm = lm.map(HeaderValue::from_static);
            assert_eq!(
                select_for_304(etag.as_ref(), lm.as_ref(), &h(not_modified)),
                *want,
                "{section}"
            );
        }
    }

    #[test]
    fn select_among_variants() {
        let a = h(&[("etag", "\"a\""), ("last-modified", T0)]);
        let a_too = h(&[("etag", "\"a\""), ("last-modified", T0)]);
        let b = h(&[("etag", "\"b\"")]);
        let bare = h(&[]);
        // (section, candidates most recent first, 304 fields, selected)
        #[rustfmt::skip]
        let cases: &[(&str, Vec<&HeaderMap>, Pairs, Vec<usize>)] = &[
            ("RFC 9111 §4.3.4: every strong match updated", vec![&a, &b, &a_too], &[("etag", "\"a\"")], vec![0, 2]),
            ("RFC 9111 §4.3.4: only the most recent weak match", vec![&b, &a, &a_too], &[("etag", "W/\"a\"")], vec![1]),
            ("RFC 9111 §4.3.4: Last-Modified treated as weak", vec![&a, &a_too], &[("last-modified", T0)], vec![0]),
            ("RFC 9111 §4.3.4: no validators, one bare candidate", vec![&bare], &[], vec![0]),
            ("RFC 9111 §4.3.4: no validators, several candidates", vec![&bare, &bare], &[], vec![]),
            ("RFC 9111 §4.3.4: no strong match, none updated", vec![&b], &[("etag", "\"a\"")], vec![]),
        ];
        for (section, candidates, not_modified, want) in cases {
            assert_eq!(
                &select_stored_for_304(candidates, &h(not_modified)),
                want,
                "{section}"
            );
        }
    }

    #[test]
    fn client_conditionals() {
        let stored = h(&[("etag", "\"a\""), ("last-modified", T0), ("date", T1)]);
        let dated = h(&[("date", T0)]);
        let get = Method::GET;
        // (section, method, request fields, stored, answer 304)
        #[rustfmt::skip]
        let cases: &[(&str, &Method, Pairs, &HeaderMap, bool)] = &[
            ("RFC 9110 §13.1.2: If-None-Match matches", &get, &[("if-none-match", "\"a\"")], &stored, true),
            ("RFC 9110 §13.1.2: weak comparison", &get, &[("if-none-match", "W/\"a\"")], &stored, true),
            ("RFC 9110 §13.1.2: match anywhere in the list", &get, &[("if-none-match", "\"x\", \"a\"")], &stored, true),
            ("RFC 9110 §13.1.2: list across field lines", &get, &[("if-none-match", "\"x\""), ("if-none-match", "\"a\"")], &stored, true),
            ("RFC 9110 §13.1.2: no match", &get, &[("if-none-match", "\"x\"")], &stored, false),
            ("RFC 9110 §13.1.2: * matches a stored response", &get, &[("if-none-match", "*")], &dated, true),
            ("RFC 9110 §13.1.2: invalid list matches nothing", &get, &[("if-none-match", "a")], &stored, false),
            ("RFC 9110 §8.8.3: comma inside an opaque tag", &get, &[("if-none-match", "\"a,b\"")], &h(&[("etag", "\"a,b\"")]), true),
            ("RFC 9110 §13.1.2: HEAD answered too", &Method::HEAD, &[("if-none-match", "\"a\"")], &stored, true),
            ("RFC 9110 §13.1.2: other methods never get 304 here", &Method::POST, &[("if-none-match", "\"a\"")], &stored, false),
            ("RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since", &get, &[("if-none-match", "\"x\""), ("if-modified-since", T1)], &stored, false),
            ("RFC 9110 §13.1.3: not modified since later date", &get, &[("if-modified-since", T1)], &stored, true),
            ("RFC 9110 §13.1.3: equal date is not modified", &get, &[("if-modified-since", T0)], &stored, true),
            ("RFC 9110 §13.1.3: modified after the date", &get, &[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")], &stored, false),
            ("RFC 9110 §13.1.3: invalid date ignored", &get, &[("if-modified-since", "yesterday")], &stored, false),
            ("RFC 9110 §13.1.3: more than one member ignored", &get, &[("if-modified-since", T1), ("if-modified-since", T1)], &stored, false),
            ("RFC 9110 §13.1.3: ignored for other methods", &Method::POST, &[("if-modified-since", T1)], &stored, false),
            ("RFC 9111 §4.3.2: stored Date stands in for Last-Modified", &get, &[("if-modified-since", T0)], &dated, true),
            ("RFC 9111 §4.3.2: no date to compare", &get, &[("if-modified-since", T0)], &h(&[]), false),
            ("RFC 9110 §13.1: unconditional request", &get, &[], &stored, false),
        ];
        for (section, method, request, stored, want) in cases {
            assert_eq!(
                client_conditional_matches(method, &h(request), stored),
                *want,
                "{section}"
            );
        }
    }

    #[test]
    fn headers_of_a_304() {
        // RFC 9110 §15.4.5: the fields a 304 must carry; no representation metadata.
        let stored = h(&[
            ("etag", "\"a\""),
            ("last-modified", T0),
            ("date", T1),
            ("vary", "accept"),
            ("content-type", "x/y"),
            ("cache-control", "max-age=1"),
        ]);
        let out = not_modified_headers(&stored);
        let mut names: Vec<&str> = out.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["cache-control", "date", "etag", "vary"]);
        // RFC 9110 §15.4.5: Last-Modified guides updates when there is no ETag.
        assert!(not_modified_headers(&h(&[("last-modified", T0)])).contains_key("last-modified"));
    }
}
