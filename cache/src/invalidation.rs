//! Invalidation (RFC 9111 §4.4): which URIs lose their stored responses
//! after a state-changing request.
//!
//! After a non-error response (2xx or 3xx) to an unsafe method — anything
//! but GET, HEAD, OPTIONS and TRACE (RFC 9110 §9.2.1), unknown methods
//! included — the target URI is invalidated (MUST), and so are the URIs in
//! `Location` and `Content-Location` (MAY; we do) when they have the **same
//! origin** as the target: scheme, host and port (RFC 9110 §4.3.1). §4.4
//! forbids invalidating another origin, so one site cannot flush another.
//!
//! Targets are returned as [`Target`] (scheme, host, path and query) rather
//! than as keys: one URL maps to many stored entries (every Vary variant,
//! and every value of a site's key headers), so the caller drops all entries
//! whose [`CacheKey::url`](crate::key::CacheKey::url) equals
//! [`Target::cache_url`] under the site's key options.
//!
//! Trade-offs: the request's own target is kept as sent (like the key);
//! references in `Location` / `Content-Location` are resolved against it by
//! RFC 3986 §5.2, which removes dot segments from the result. A field that
//! is repeated, not UTF-8, or not a URI reference is ignored.

use http::{HeaderMap, HeaderName, Method, StatusCode, header};

use crate::key::{KeyOptions, cache_url, normalize_host, normalize_scheme};

/// A URI whose stored responses are to be invalidated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-case scheme.
    pub scheme: String,
    /// Lower-case host, default port removed (as in the cache key).
    pub host: String,
    /// Path and query as sent (target URI) or as resolved (RFC 3986 §5.2).
    pub path_and_query: String,
}

impl Target {
    /// The URL part of the cache keys this target covers under `opts`.
    pub fn cache_url(&self, opts: &KeyOptions) -> String {
        cache_url(&self.scheme, &self.host, &self.path_and_query, opts)
    }
}

/// Whether a method is not known to be safe (RFC 9110 §9.2.1).
pub fn is_unsafe(method: &Method) -> bool {
    ![Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method)
}

/// The URIs to invalidate after a response (RFC 9111 §4.4): empty unless the
/// method is unsafe and the status is 2xx or 3xx; else the target URI, then
/// same-origin `Location` and `Content-Location` URIs, without duplicates.
pub fn invalidation_targets(
    method: &Method,
    status: StatusCode,
    scheme: &str,
    host: &str,
    path_and_query: &str,
    response_headers: &HeaderMap,
) -> Vec<Target> {
    if !is_unsafe(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let scheme = normalize_scheme(scheme);
    let host = normalize_host(&scheme, host);
    let base = Target {
        scheme,
        host,
        path_and_query: path_and_query.to_owned(),
    };
    let mut targets = vec![base.clone()];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(target) = referenced(&base, response_headers, &name)
            && target.scheme == base.scheme
            && target.host == base.host
            && !targets.contains(&target)
        {
            targets.push(target);
        }
    }
    targets
}

/// The URI in a singleton `Location`-like field, resolved against `base`.
fn referenced(base: &Target, headers: &HeaderMap, name: &HeaderName) -> Option<Target> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?.trim();
    if text.is_empty() || text.bytes().any(|b| b <= b' ' || b == 0x7F) {
        return None;
    }
    resolve(base, text)
}

/// The parts of a URI reference (RFC 3986 §4.1), fragment dropped.
struct Reference<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
}

fn parse_reference(s: &str) -> Reference<'_> {
    let s = s.split_once('#').map_or(s, |(before, _)| before);
    // A scheme is `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` before the
    // first ':' that precedes any '/', '?' (RFC 3986 §3.1, §4.2).
    let (scheme, rest) = match s.find([':', '/', '?']) {
        Some(i)
            if s.as_bytes()[i] == b':'
                && s.as_bytes()[0].is_ascii_alphabetic()
                && s[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            (Some(&s[..i]), &s[i + 1..])
        }
        _ => (None, s),
    };
    let (authority, rest) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    Reference {
        scheme,
        authority,
        path,
        query,
    }
}

/// Resolves a reference against the target URI (RFC 3986 §5.2.2, strict).
fn resolve(base: &Target, reference: &str) -> Option<Target> {
    let r = parse_reference(reference);
    let (base_path, base_query) = match base.path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (base.path_and_query.as_str(), None),
    };
    let (scheme, host, path, query) = if let Some(s) = r.scheme {
        let scheme = normalize_scheme(s);
        let host = authority_host(&scheme, r.authority?);
        (scheme, host, remove_dot_segments(r.path), r.query)
    } else if let Some(authority) = r.authority {
        let host = authority_host(&base.scheme, authority);
        (
            base.scheme.clone(),
            host,
            remove_dot_segments(r.path),
            r.query,
        )
    } else if r.path.is_empty() {
        let query = r.query.or(base_query);
        (
            base.scheme.clone(),
            base.host.clone(),
            base_path.to_owned(),
            query,
        )
    } else if r.path.starts_with('/') {
        (
            base.scheme.clone(),
            base.host.clone(),
            remove_dot_segments(r.path),
            r.query,
        )
    } else {
        // merge (§5.2.3): the base path up to its last '/', then the reference.
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        let merged = format!("{dir}{}", r.path);
        (
            base.scheme.clone(),
            base.host.clone(),
            remove_dot_segments(&merged),
            r.query,
        )
    };
    let mut path_and_query = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Some(Target {
        scheme,
        host,
        path_and_query,
    })
}

/// The normalised `host[:port]` of an authority, userinfo dropped (RFC 3986 §3.2).
fn authority_host(scheme: &str, authority: &str) -> String {
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    normalize_host(scheme, host)
}

/// RFC 3986 §5.2.4: removes `.` and `..` segments.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input
            .strip_prefix("../")
            .or_else(|| input.strip_prefix("./"))
        {
            input = rest; // A
        } else if input.starts_with("/./") {
            input = &input[2..]; // B
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            // C: drop the last output segment
            input = if input == "/.." { "/" } else { &input[3..] };
            let cut = output.rfind('/').unwrap_or(0);
            output.truncate(cut);
        } else if input == "." || input == ".." {
            input = ""; // D
        } else {
            // E: move the first segment (with its leading '/') to the output
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::h;

    /// Header field lines of one test case.
    type Pairs = &'static [(&'static str, &'static str)];
    use http::HeaderValue;

    fn urls(targets: &[Target]) -> Vec<String> {
        targets
            .iter()
            .map(|t| t.cache_url(&KeyOptions::default()))
            .collect()
    }

    #[test]
    fn targets() {
        let post = Method::POST;
        let ok = StatusCode::OK;
        // (section, method, status, response fields, expected URLs); request is
        // https://Example.com:443/a/b?x=1
        #[rustfmt::skip]
        let cases: &[(&str, &Method, StatusCode, Pairs, &[&str])] = &[
            ("RFC 9111 §4.4: unsafe method invalidates the target", &post, ok, &[], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: PUT", &Method::PUT, StatusCode::NO_CONTENT, &[], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: DELETE", &Method::DELETE, ok, &[], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: unknown method counts as unsafe", &Method::from_bytes(b"PURGE").unwrap(), ok, &[], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: 3xx is a non-error status", &post, StatusCode::SEE_OTHER, &[], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: 4xx does not invalidate", &post, StatusCode::NOT_FOUND, &[], &[]),
            ("RFC 9111 §4.4: 5xx does not invalidate", &post, StatusCode::BAD_GATEWAY, &[], &[]),
            ("RFC 9110 §9.2.1: GET is safe", &Method::GET, ok, &[], &[]),
            ("RFC 9110 §9.2.1: OPTIONS is safe", &Method::OPTIONS, ok, &[], &[]),
            ("RFC 9111 §4.4: same-origin absolute Location", &post, StatusCode::CREATED, &[("location", "https://EXAMPLE.com/items/7")], &["https://example.com/a/b?x=1", "https://example.com/items/7"]),
            ("RFC 9111 §4.4: absolute-path Content-Location", &post, ok, &[("content-location", "/c")], &["https://example.com/a/b?x=1", "https://example.com/c"]),
            ("RFC 3986 §5.2.3: relative path merged with the base", &post, ok, &[("location", "c?y=2")], &["https://example.com/a/b?x=1", "https://example.com/a/c?y=2"]),
            ("RFC 3986 §5.2.4: dot segments resolved", &post, ok, &[("location", "../d/./e")], &["https://example.com/a/b?x=1", "https://example.com/d/e"]),
            ("RFC 3986 §5.2.2: query-only reference", &post, ok, &[("location", "?z")], &["https://example.com/a/b?x=1", "https://example.com/a/b?z"]),
            ("RFC 3986 §5.2.2: fragment dropped, same URI once", &post, ok, &[("location", "#top")], &["https://example.com/a/b?x=1"]),
            ("RFC 3986 §6.2.3: explicit default port is the same origin", &post, ok, &[("location", "https://example.com:443/f")], &["https://example.com/a/b?x=1", "https://example.com/f"]),
            ("RFC 3986 §4.2: network-path reference", &post, ok, &[("location", "//example.com/g")], &["https://example.com/a/b?x=1", "https://example.com/g"]),
            ("RFC 9111 §4.4: other host MUST NOT be invalidated", &post, ok, &[("location", "https://other.com/x")], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: other scheme is another origin", &post, ok, &[("location", "http://example.com/x")], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: other port is another origin", &post, ok, &[("location", "https://example.com:8443/x")], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: userinfo cannot disguise a host", &post, ok, &[("location", "https://example.com@evil.com/x")], &["https://example.com/a/b?x=1"]),
            ("RFC 9111 §4.4: both fields, deduplicated", &post, ok, &[("location", "/n"), ("content-location", "https://example.com/n")], &["https://example.com/a/b?x=1", "https://example.com/n"]),
            ("RFC 9110 §10.2.2: repeated Location ignored", &post, ok, &[("location", "/p"), ("location", "/q")], &["https://example.com/a/b?x=1"]),
            ("RFC 3986 §4.1: non-URI Location ignored", &post, ok, &[("location", "a b")], &["https://example.com/a/b?x=1"]),
        ];
        for (section, method, status, response, want) in cases {
            let got = invalidation_targets(
                method,
                *status,
                "https",
                "Example.com:443",
                "/a/b?x=1",
                &h(response),
            );
            assert_eq!(urls(&got), *want, "{section}");
        }
    }

    #[test]
    fn dot_segments() {
        // RFC 3986 §5.2.4 and the examples of §5.4.
        #[rustfmt::skip]
        let cases = [
            ("/a/b/c/./../../g", "/a/g"),
            ("mid/content=5/../6", "mid/6"),
            ("/../g", "/g"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(remove_dot_segments(input), want, "RFC 3986 §5.2.4: {input}");
        }
    }

    #[test]
    fn target_keys_follow_site_options() {
        // RFC 9111 §4.4 with site key options: the invalidated URL is shaped like the key.
        let got = invalidation_targets(
            &Method::POST,
            StatusCode::OK,
            "http",
            "h",
            "/p?b=2&a=1",
            &HeaderMap::new(),
        );
        let o = KeyOptions {
            sort_params: true,
            ..KeyOptions::default()
        };
        assert_eq!(got[0].cache_url(&o), "http://h/p?a=1&b=2");
    }

    proptest::proptest! {
        /// RFC 9111 §4.4: any Location yields the target first and never another origin.
        #[test]
        fn never_panics_nor_leaves_the_origin(pq in "/\\PC{0,20}", location in "[ -~]{0,30}") {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&location) {
                headers.insert(header::LOCATION, v);
            }
            let got = invalidation_targets(&Method::POST, StatusCode::OK, "http", "h", &pq, &headers);
            proptest::prop_assert_eq!(&got[0].path_and_query, &pq);
            for t in &got {
                proptest::prop_assert_eq!((t.scheme.as_str(), t.host.as_str()), ("http", "h"));
                proptest::prop_assert!(t.path_and_query.starts_with('/'));
            }
        }
    }
}
