//! The primary cache key (RFC 9111 §2): which stored responses a request
//! may be answered from, before Vary (§4.1, see [`crate::vary`]) picks a
//! variant.
//!
//! By default the key is the target URI: scheme + host + path + query.
//! Per-site [`KeyOptions`] may drop the query, keep only listed query
//! parameters, sort the parameters, or append request headers.
//!
//! Rules and trade-offs:
//! - The scheme and host are lower-cased and the scheme's default port is
//!   removed (`http` 80, `https` 443; an empty port counts as default,
//!   RFC 3986 §6.2.3), so `HTTP://Example.COM:80/` and
//!   `http://example.com/` share entries. A trailing dot on the host is
//!   kept: it names the same site in practice but we do not guess.
//! - The path and query are kept **as sent**: no percent-decoding, no
//!   dot-segment removal, no case folding. Two spellings of one resource
//!   (`/a%2Fb` and `/a/b`) are two entries: a duplicate costs memory,
//!   whereas a wrong merge serves one resource's bytes for another.
//! - Query options split the query on `&` only (not `;`) and compare
//!   parameter names byte for byte as sent. Sorting is stable, so repeated
//!   names keep their relative order (`a=2&a=1` is not `a=1&a=2`). When a
//!   query option rewrites the query, empty parameters are dropped and an
//!   empty result drops the `?` too.
//! - Bytes that can never appear in a valid request target (C0 controls,
//!   DEL) are written `%XX`, so the text form stays unambiguous: the URL
//!   part never contains `\n`, which separates the appended headers.
//!
//! Text form (also the disk tier's on-disk identity, so a change here is a
//! format change): `scheme://host/path?query`, then for each configured
//! header `\n<name>: <value>` (multiple field lines joined with `", "`) or
//! `\n<name>` when the request lacks it. Header value bytes that are not
//! printable ASCII, and `%` itself, are written `%XX`.
//!
//! The digest is XXH3-128 (seed 0, default secret) of the text form.
//! XXH3's output is frozen by its specification since xxHash 0.8.0, so the
//! digest is identical across processes, machines, restarts and Rust
//! versions (unlike `std`'s `DefaultHasher`, whose algorithm may change).
//! The disk tier names files by it and origin-shield routing hashes it.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use xxhash_rust::xxh3::xxh3_128;

/// Per-site options that shape the primary key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOptions {
    /// Drop the whole query (takes precedence over the other query options).
    pub ignore_query: bool,
    /// Keep only query parameters with these names (compared as sent).
    pub keep_params: Option<Vec<String>>,
    /// Sort query parameters by name (stable for repeated names).
    pub sort_params: bool,
    /// Request headers whose values are appended to the key, in this order.
    pub add_headers: Vec<HeaderName>,
}

/// A primary cache key: cheap to clone (an `Arc<str>`), hash and compare
/// (a precomputed 128-bit digest is checked before the text).
#[derive(Clone)]
pub struct CacheKey {
    text: Arc<str>,
    digest: u128,
}

impl CacheKey {
    /// Rebuilds a key from its text form (as returned by [`CacheKey::as_str`]),
    /// e.g. when the disk tier reloads its index.
    pub fn from_text(text: &str) -> CacheKey {
        CacheKey {
            text: Arc::from(text),
            digest: xxh3_128(text.as_bytes()),
        }
    }

    /// The canonical text form (see the module docs for its layout).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The URL part of the key (without appended headers); equals
    /// [`cache_url`] for the same request and options.
    pub fn url(&self) -> &str {
        match self.text.find('\n') {
            Some(i) => &self.text[..i],
            None => &self.text,
        }
    }

    /// Stable 128-bit digest: XXH3-128 (seed 0) of [`as_str`](Self::as_str), big-endian.
    pub fn digest(&self) -> [u8; 16] {
        self.digest.to_be_bytes()
    }

    /// The first 8 bytes of [`digest`](Self::digest) as a big-endian `u64`,
    /// for rendezvous hashing and shard selection.
    pub fn digest64(&self) -> u64 {
        (self.digest >> 64) as u64
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.text == other.text
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Consistent with Eq: equal texts have equal digests.
        state.write_u64(self.digest as u64);
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CacheKey").field(&self.text).finish()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Builds the primary key for a request (RFC 9111 §2; options per site).
pub fn cache_key(
    scheme: &str,
    host: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    opts: &KeyOptions,
) -> CacheKey {
    let mut text = cache_url(scheme, host, path_and_query, opts);
    for name in &opts.add_headers {
        text.push('\n');
        text.push_str(name.as_str());
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            continue; // absent: no colon, distinct from an empty value
        }
        text.push_str(": ");
        for (i, value) in values.enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            escape_header_value(value.as_bytes(), &mut text);
        }
    }
    CacheKey::from_text(&text)
}

/// The URL part of the key: normalised scheme and host, the path as sent
/// and the query shaped by `opts` (see the module docs).
pub fn cache_url(scheme: &str, host: &str, path_and_query: &str, opts: &KeyOptions) -> String {
    let mut out = String::with_capacity(scheme.len() + host.len() + path_and_query.len() + 4);
    let scheme_start = out.len();
    push_normalized_scheme(scheme, &mut out);
    let scheme_end = out.len();
    out.push_str("://");
    // `out` holds the lower-case scheme, which the host's default port needs.
    let default = default_port(&out[scheme_start..scheme_end]);
    push_normalized_host(default, host, &mut out);
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    // An empty path in an http(s) URI means "/" (RFC 9110 §4.2.3).
    if !path.starts_with('/') && path != "*" {
        out.push('/');
    }
    escape_controls(path, &mut out);
    let Some(query) = query else { return out };
    if opts.ignore_query {
        return out;
    }
    if opts.keep_params.is_none() && !opts.sort_params {
        out.push('?');
        escape_controls(query, &mut out);
        return out;
    }
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if let Some(keep) = &opts.keep_params {
        params.retain(|p| keep.iter().any(|k| k == param_name(p)));
    }
    if opts.sort_params {
        params.sort_by(|a, b| param_name(a).cmp(param_name(b)));
    }
    for (i, p) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        escape_controls(p, &mut out);
    }
    out
}

/// Lower-cases the scheme; bytes outside `[a-z0-9+.-]` are written `%XX`.
pub fn normalize_scheme(scheme: &str) -> String {
    let mut out = String::with_capacity(scheme.len());
    push_normalized_scheme(scheme, &mut out);
    out
}

fn push_normalized_scheme(scheme: &str, out: &mut String) {
    for b in scheme.bytes() {
        let b = b.to_ascii_lowercase();
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-') {
            out.push(b as char);
        } else {
            push_pct(b, out);
        }
    }
}

/// Lower-cases a host (`name[:port]` or `[v6][:port]`) and removes the
/// scheme's default port (RFC 3986 §6.2.3); leading zeros in a port are
/// dropped. Bytes that cannot appear in an authority are written `%XX`.
/// `scheme` is expected lower-case.
pub fn normalize_host(scheme: &str, host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    push_normalized_host(default_port(scheme), host, &mut out);
    out
}

/// [`normalize_host`] appending to `out`, given the scheme's default port.
fn push_normalized_host(default: Option<u16>, host: &str, out: &mut String) {
    let (name, port) = split_port(host);
    if name
        .bytes()
        .all(|b| is_authority_byte(b) && !b.is_ascii_uppercase())
    {
        // Common case: already in normal form.
        out.push_str(name);
    } else {
        push_host_name(name, out);
    }
    match port {
        None | Some("") => {}
        Some(p) => match p.parse::<u16>() {
            Ok(n) if Some(n) == default => {}
            Ok(n) => {
                out.push(':');
                out.push_str(&n.to_string());
            }
            // Not a port after all (e.g. an unbracketed IPv6 literal): keep it.
            Err(_) => {
                out.push(':');
                for b in p.bytes() {
                    if is_authority_byte(b) {
                        out.push(b.to_ascii_lowercase() as char);
                    } else {
                        push_pct(b, out);
                    }
                }
            }
        },
    }
}

/// Lower-cases a host name, writing bytes outside an authority `%XX`.
fn push_host_name(name: &str, out: &mut String) {
    for b in name.bytes() {
        let b = b.to_ascii_lowercase();
        if is_authority_byte(b) {
            out.push(b as char);
        } else {
            push_pct(b, out);
        }
    }
}

/// The default port of a scheme (RFC 9110 §4.2.1, §4.2.2).
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Splits `host:port`; `port` is `Some` only when everything after the
/// last colon is digits (or empty) and the name is not an unbracketed IPv6.
fn split_port(host: &str) -> (&str, Option<&str>) {
    let search_from = if host.starts_with('[') {
        match host.find(']') {
            Some(i) => i + 1,
            None => return (host, None),
        }
    } else {
        0
    };
    match host[search_from..].rfind(':') {
        Some(rel) => {
            let i = search_from + rel;
            let (name, port) = (&host[..i], &host[i + 1..]);
            let unbracketed_v6 = search_from == 0 && name.contains(':');
            if unbracketed_v6 || !port.bytes().all(|b| b.is_ascii_digit()) {
                (host, None)
            } else {
                (name, Some(port))
            }
        }
        None => (host, None),
    }
}

/// Bytes allowed in an authority: unreserved, sub-delims, `%`, `:`, `[`, `]`
/// (RFC 3986 §3.2). `@`, `/`, `?` and `#` are not, so a host can never
/// smuggle a path into the key.
fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
                | b':'
                | b'['
                | b']'
        )
}

fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

fn push_pct(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xF)] as char);
}

/// Copies `s`, writing C0 controls and DEL as `%XX` (they are never valid in
/// a request target, RFC 3986 §2; everything else is kept as sent).
fn escape_controls(s: &str, out: &mut String) {
    // Common case: nothing to escape (a UTF-8 byte >= 0x80 is never a control).
    if !s.bytes().any(|b| b.is_ascii_control()) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_ascii_control() {
            push_pct(c as u8, out);
        } else {
            out.push(c);
        }
    }
}

/// Copies a header value, writing `%`, controls and non-ASCII bytes `%XX`
/// so the mapping stays injective and the text stays UTF-8.
fn escape_header_value(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if (0x20..0x7F).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            push_pct(b, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn opts() -> KeyOptions {
        KeyOptions::default()
    }

    fn keep(names: &[&str]) -> KeyOptions {
        KeyOptions {
            keep_params: Some(names.iter().map(|s| s.to_string()).collect()),
            ..KeyOptions::default()
        }
    }

    #[test]
    fn url_cases() {
        let sorted = KeyOptions {
            sort_params: true,
            ..opts()
        };
        let ignore = KeyOptions {
            ignore_query: true,
            sort_params: true,
            ..keep(&["a"])
        };
        let keep_sorted = KeyOptions {
            sort_params: true,
            ..keep(&["b", "a"])
        };
        // (section, scheme, host, path_and_query, options, expected)
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, &str, &KeyOptions, &str)] = &[
            ("RFC 9111 §2: default key is the target URI", "https", "example.com", "/a?x=1", &opts(), "https://example.com/a?x=1"),
            ("RFC 3986 §6.2.2.1: scheme and host are case-insensitive", "HTTPS", "Example.COM", "/A", &opts(), "https://example.com/A"),
            ("RFC 3986 §6.2.3: default http port removed", "http", "example.com:80", "/", &opts(), "http://example.com/"),
            ("RFC 3986 §6.2.3: default https port removed", "https", "example.com:443", "/", &opts(), "https://example.com/"),
            ("RFC 3986 §6.2.3: non-default port kept", "http", "example.com:8080", "/", &opts(), "http://example.com:8080/"),
            ("RFC 3986 §6.2.3: 443 is not default for http", "http", "example.com:443", "/", &opts(), "http://example.com:443/"),
            ("RFC 3986 §6.2.3: empty port is the default", "http", "example.com:", "/", &opts(), "http://example.com/"),
            ("RFC 3986 §6.2.3: leading zeros in port", "http", "example.com:0080", "/", &opts(), "http://example.com/"),
            ("RFC 3986 §3.2.2: IPv6 literal with default port", "http", "[::1]:80", "/", &opts(), "http://[::1]/"),
            ("RFC 3986 §3.2.2: IPv6 literal with port", "http", "[::1]:81", "/", &opts(), "http://[::1]:81/"),
            ("RFC 3986 §3.2.2: host cannot inject a path", "http", "a/b", "/c", &opts(), "http://a%2Fb/c"),
            ("RFC 9110 §4.2.3: empty path is /", "http", "h", "", &opts(), "http://h/"),
            ("RFC 9110 §4.2.3: query without path", "http", "h", "?q", &opts(), "http://h/?q"),
            ("RFC 3986 §6.2.2.2: percent-encoding kept as sent", "http", "h", "/a%2fb%2F?q=%20", &opts(), "http://h/a%2fb%2F?q=%20"),
            ("RFC 3986 §6.2.2.3: dot segments kept as sent", "http", "h", "/a/../b", &opts(), "http://h/a/../b"),
            ("RFC 3986 §2: controls escaped", "http", "h", "/a\nb", &opts(), "http://h/a%0Ab"),
            ("RFC 3986 §6.2.3: empty query kept without options", "http", "h", "/p?", &opts(), "http://h/p?"),
            ("site option: ignore query wins", "http", "h", "/p?a=1&b=2", &ignore, "http://h/p"),
            ("site option: keep listed params", "http", "h", "/p?utm=x&a=1&b=2", &keep(&["a"]), "http://h/p?a=1"),
            ("site option: keep, none left drops ?", "http", "h", "/p?utm=x", &keep(&["a"]), "http://h/p"),
            ("site option: keep compares names as sent", "http", "h", "/p?A=1&a%20=2&a=3", &keep(&["a"]), "http://h/p?a=3"),
            ("site option: keep bare param", "http", "h", "/p?a&b", &keep(&["a"]), "http://h/p?a"),
            ("site option: sort params by name, stable", "http", "h", "/p?b=1&a=2&a=1", &sorted, "http://h/p?a=2&a=1&b=1"),
            ("site option: sort drops empty params", "http", "h", "/p?b=1&&a=2&", &sorted, "http://h/p?a=2&b=1"),
            ("site option: keep then sort", "http", "h", "/p?c=3&b=2&a=1", &keep_sorted, "http://h/p?a=1&b=2"),
            ("site option: no query, sort is a no-op", "http", "h", "/p", &sorted, "http://h/p"),
        ];
        for (section, scheme, host, pq, o, want) in cases {
            let key = cache_key(scheme, host, pq, &HeaderMap::new(), o);
            assert_eq!(key.as_str(), *want, "{section}");
            assert_eq!(key.url(), *want, "{section}");
        }
    }

    #[test]
    fn added_headers() {
        let o = KeyOptions {
            add_headers: vec![
                HeaderName::from_static("x-device"),
                HeaderName::from_static("accept-language"),
            ],
            ..opts()
        };
        let mut h = HeaderMap::new();
        h.append("x-device", HeaderValue::from_static("mobile"));
        h.append("accept-language", HeaderValue::from_static("en"));
        h.append("accept-language", HeaderValue::from_static("de"));
        let key = cache_key("http", "h", "/", &h, &o);
        // site option: headers appended in configured order, lines joined with ", "
        assert_eq!(
            key.as_str(),
            "http://h/\nx-device: mobile\naccept-language: en, de"
        );
        assert_eq!(key.url(), "http://h/");

        // site option: absent header is distinct from an empty one
        let absent = cache_key("http", "h", "/", &HeaderMap::new(), &o);
        let mut e = HeaderMap::new();
        e.insert("x-device", HeaderValue::from_static(""));
        let empty = cache_key("http", "h", "/", &e, &o);
        assert_eq!(absent.as_str(), "http://h/\nx-device\naccept-language");
        assert_eq!(empty.as_str(), "http://h/\nx-device: \naccept-language");
        assert_ne!(absent, empty);

        // site option: opaque bytes and % escaped injectively
        let mut b = HeaderMap::new();
        b.insert("x-device", HeaderValue::from_bytes(b"a%\xffb").unwrap());
        let k = cache_key("http", "h", "/", &b, &o);
        assert_eq!(k.as_str(), "http://h/\nx-device: a%25%FFb\naccept-language");
    }

    #[test]
    fn digest_is_pinned() {
        // XXH3 reference vectors: if these move, the crate no longer
        // implements XXH3 as specified and every stored digest is invalid.
        assert_eq!(xxh3_128(b""), 0x99aa06d3014798d86001c324468d497f);
        // A known key: a change of hash or of the text form breaks this test
        // (and would orphan the disk tier and reshuffle shields).
        let key = cache_key(
            "https",
            "Example.com:443",
            "/a?b=1",
            &HeaderMap::new(),
            &opts(),
        );
        assert_eq!(key.as_str(), "https://example.com/a?b=1");
        assert_eq!(u128::from_be_bytes(key.digest()), PINNED_DIGEST);
        assert_eq!(key.digest64(), (PINNED_DIGEST >> 64) as u64);
        assert_eq!(CacheKey::from_text(key.as_str()), key);
    }

    /// XXH3-128 of `https://example.com/a?b=1`.
    const PINNED_DIGEST: u128 = 0xcbae4e0ca9540fd5_f179c8b714009c72;

    proptest! {
        #[test]
        fn digest_is_deterministic(scheme in "[a-zA-Z]{1,6}", host in "\\PC{0,20}", pq in "\\PC{0,40}") {
            let a = cache_key(&scheme, &host, &pq, &HeaderMap::new(), &opts());
            let b = cache_key(&scheme, &host, &pq, &HeaderMap::new(), &opts());
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert_eq!(a.digest(), xxh3_128(a.as_str().as_bytes()).to_be_bytes());
            prop_assert!(!a.url().contains('\n'));
        }

        #[test]
        fn url_normalisation_is_idempotent(host in "[a-zA-Z0-9.:\\[\\]]{0,20}", pq in "/[a-z0-9=&?%]{0,30}") {
            let o = KeyOptions { sort_params: true, ..keep(&["a", "b"]) };
            let once = cache_url("HTTP", &host, &pq, &o);
            let rest = once.strip_prefix("http://").unwrap();
            let split = rest.find('/').unwrap_or(rest.len());
            let twice = cache_url("http", &rest[..split], &rest[split..], &o);
            prop_assert_eq!(once, twice);
        }
    }
}
