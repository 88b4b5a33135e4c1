//! Cache tags: the names an origin gives a response so that a group of
//! objects can be purged at once (`POST /purge?tag=TAG`).
//!
//! Tags come from two response headers, both read if present:
//! `Surrogate-Key` (Fastly's convention, space separated) and `Cache-Tag`
//! (Cloudflare's, comma separated). Either separator is accepted in both,
//! every field line is read, tokens are trimmed and empty ones dropped.
//!
//! Rules and trade-offs:
//! - Tags compare **byte for byte** (case-sensitive, as Akamai's cache tags
//!   are): `Product` and `product` are two tags. Folding case would merge
//!   tags an origin meant to keep apart; a purge that misses is visible,
//!   one that hits too much is not.
//! - A tag longer than [`MAX_TAG_LEN`] bytes, or not valid UTF-8, is
//!   dropped, never truncated: two long tags truncated to the same prefix
//!   would purge each other's objects.
//! - Duplicates are dropped (first occurrence kept), and at most
//!   [`MAX_TAGS_PER_OBJECT`] tags are kept per response, in header order
//!   (`Surrogate-Key` first); further tags are ignored, as CDNs do
//!   (CloudFront keeps 50, Akamai 128). The bound keeps the purge index
//!   proportional to the number of objects whatever an origin sends.

use http::{HeaderMap, HeaderName};

/// `Surrogate-Key`: space-separated tags (Fastly's convention).
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// `Cache-Tag`: comma-separated tags (Cloudflare's convention).
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Tags kept per response; later ones are ignored.
pub const MAX_TAGS_PER_OBJECT: usize = 64;
/// Longest tag kept, in bytes (CloudFront's limit); longer ones are dropped.
pub const MAX_TAG_LEN: usize = 256;

/// The cache tags of a response, from its `Surrogate-Key` and `Cache-Tag`
/// headers (see the module docs for the rules). Pure; no allocation when
/// neither header is present.
pub fn cache_tags(headers: &HeaderMap) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let values = headers
        .get_all(SURROGATE_KEY)
        .iter()
        .chain(headers.get_all(CACHE_TAG).iter());
    for value in values {
        let tokens = value
            .as_bytes()
            .split(|&b| is_separator(b))
            .filter(|t| !t.is_empty() && t.len() <= MAX_TAG_LEN);
        for token in tokens {
            if tags.len() == MAX_TAGS_PER_OBJECT {
                return tags;
            }
            let Ok(tag) = std::str::from_utf8(token) else {
                continue;
            };
            // A linear scan: at most 64 short strings, cheaper than a set.
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
        }
    }
    tags
}

/// Space and comma separate tags; tab is optional whitespace (RFC 9110
/// §5.6.3) and separates too. Splitting on every separator trims as well.
fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::h;

    fn tags(pairs: &[(&str, &str)]) -> Vec<String> {
        cache_tags(&h(pairs))
    }

    /// `(case, response header lines, expected tags)`.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

    #[test]
    fn table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("no header", &[("content-type", "text/html")], &[]),
            ("Surrogate-Key, runs of spaces", &[("surrogate-key", "a b  c")], &["a", "b", "c"]),
            ("Cache-Tag, commas and spaces", &[("cache-tag", "a,b, c")], &["a", "b", "c"]),
            ("both headers, Surrogate-Key first", &[("cache-tag", "y,z"), ("surrogate-key", "x")], &["x", "y", "z"]),
            ("duplicates across headers", &[("surrogate-key", "a b a"), ("cache-tag", "b,c")], &["a", "b", "c"]),
            ("every field line", &[("cache-tag", "a"), ("cache-tag", "b")], &["a", "b"]),
            ("empty tokens and tabs", &[("cache-tag", " ,, a ,\tb,")], &["a", "b"]),
            ("only separators", &[("surrogate-key", " , ")], &[]),
            ("case-sensitive", &[("surrogate-key", "Product product")], &["Product", "product"]),
            ("either separator in either header", &[("surrogate-key", "a,b"), ("cache-tag", "c d")], &["a", "b", "c", "d"]),
        ];
        for (name, headers, want) in cases {
            assert_eq!(tags(headers), *want, "{name}");
        }
    }

    #[test]
    fn tag_length_limit_drops_long_tags() {
        let ok = "t".repeat(MAX_TAG_LEN);
        let long = "u".repeat(MAX_TAG_LEN + 1);
        let value = format!("a {long} {ok} b");
        assert_eq!(tags(&[("surrogate-key", &value)]), ["a", ok.as_str(), "b"]);
    }

    #[test]
    fn tag_count_limit_keeps_the_first() {
        let value: Vec<String> = (0..MAX_TAGS_PER_OBJECT + 10)
            .map(|i| format!("t{i}"))
            .collect();
        let got = tags(&[("cache-tag", &value.join(","))]);
        assert_eq!(got.len(), MAX_TAGS_PER_OBJECT);
        assert_eq!(got[..], value[..MAX_TAGS_PER_OBJECT]);
        // Duplicates do not use up the budget.
        let dup = format!("a a a {}", value.join(" "));
        let got = tags(&[("surrogate-key", &dup)]);
        assert_eq!(got.len(), MAX_TAGS_PER_OBJECT);
        assert_eq!(got[0], "a");
        assert_eq!(got[1], "t0");
    }

    #[test]
    fn non_utf8_tokens_dropped() {
        let mut map = HeaderMap::new();
        map.insert(
            CACHE_TAG,
            http::HeaderValue::from_bytes(b"ok,\xff\xfe,caf\xc3\xa9").unwrap(),
        );
        assert_eq!(cache_tags(&map), ["ok", "café"]);
    }
}
