//! The per-request script an [`Origin`](super::Origin) follows, parsed from
//! the request's query string.
//!
//! Parsing is strict: an unknown key or a malformed value is an error the
//! origin answers with `400`, so a typo in a test fails loudly instead of
//! silently testing the default behaviour.

use std::time::Duration;

use http::header::IF_NONE_MATCH;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// What one request asked the origin to do.
#[derive(Debug, Default)]
pub(crate) struct Script {
    /// `status=NNN`; `None` means 200.
    pub(crate) status: Option<StatusCode>,
    /// `size=N`: a streamed body of exactly N pattern bytes.
    pub(crate) size: Option<u64>,
    /// `delay=MS`: wait before sending the response head.
    pub(crate) delay: Option<Duration>,
    /// `header=Name:Value`, repeatable, appended in order.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// `etag=V`: the opaque tag, without quotes.
    pub(crate) etag: Option<String>,
    /// `hold=NAME`: wait for `Origin::release(NAME)`.
    pub(crate) hold: Option<String>,
    /// `stall_after=N`: send N body bytes, then stall forever.
    pub(crate) stall_after: Option<u64>,
    /// `resume=NAME`: with `stall_after`, continue to `size` once
    /// `Origin::release(NAME)` is called instead of stalling forever.
    pub(crate) resume: Option<String>,
    /// `chunked=1`: send the `size` body without `Content-Length`.
    pub(crate) chunked: bool,
}

impl Script {
    /// Parses a query string (without the `?`); `None` is the empty script.
    pub(crate) fn parse(query: Option<&str>) -> Result<Script, String> {
        let mut script = Script::default();
        let Some(query) = query else {
            return Ok(script);
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            // Split on the first '=' only so values such as
            // `header=Keep-Alive:timeout=5` keep their own '='.
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)?;
            let value = percent_decode(value)?;
            match key.as_str() {
                "status" => {
                    let code: u16 = number(&key, &value)?;
                    let status =
                        StatusCode::from_u16(code).map_err(|e| format!("status={value}: {e}"))?;
                    script.status = Some(status);
                }
                "size" => script.size = Some(number(&key, &value)?),
                "delay" => script.delay = Some(Duration::from_millis(number(&key, &value)?)),
                "header" => {
                    let (name, val) = value
                        .split_once(':')
                        .ok_or_else(|| format!("header={value}: expected Name:Value"))?;
                    let name = HeaderName::from_bytes(name.trim().as_bytes())
                        .map_err(|e| format!("header name {name:?}: {e}"))?;
                    let val = HeaderValue::from_str(val.trim())
                        .map_err(|e| format!("header value {val:?}: {e}"))?;
                    script.headers.push((name, val));
                }
                "etag" => {
                    // The tag goes inside quotes (RFC 9110 §8.8.3), so it may
                    // not hold one itself.
                    if value.contains('"') || HeaderValue::from_str(&value).is_err() {
                        return Err(format!("etag={value:?}: not a valid opaque tag"));
                    }
                    script.etag = Some(value);
                }
                "hold" => script.hold = Some(value),
                "stall_after" => script.stall_after = Some(number(&key, &value)?),
                "resume" => script.resume = Some(value),
                "chunked" => script.chunked = number::<u8>(&key, &value)? != 0,
                _ => return Err(format!("unknown origin script key {key:?}")),
            }
        }
        if let (Some(sent), Some(size)) = (script.stall_after, script.size)
            && size <= sent
        {
            return Err(format!(
                "stall_after={sent} needs size > {sent}, got {size}"
            ));
        }
        if script.resume.is_some() && (script.stall_after.is_none() || script.size.is_none()) {
            return Err("resume=NAME needs stall_after=N and size=M".to_owned());
        }
        Ok(script)
    }

    /// The status to answer `request_headers` with: 304 when `etag` matches
    /// `If-None-Match`, else `status`, else 200.
    pub(crate) fn status_for(&self, request_headers: &HeaderMap) -> StatusCode {
        match &self.etag {
            Some(tag) if if_none_match(request_headers, tag) => StatusCode::NOT_MODIFIED,
            _ => self.status.unwrap_or(StatusCode::OK),
        }
    }
}

/// Weak comparison of `If-None-Match` against `"tag"` (RFC 9110 §13.1.2):
/// `*`, or any listed tag whose opaque part equals ours, `W/` or not.
fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| {
            let opaque = candidate.strip_prefix("W/").unwrap_or(candidate);
            candidate == "*"
                || opaque.strip_prefix('"').and_then(|o| o.strip_suffix('"')) == Some(tag)
        })
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("{key}={value}: {e}"))
}

/// Decodes `application/x-www-form-urlencoded` text: `%XX` escapes and `+`
/// as space (WHATWG URL §5.1), so tests can put spaces in header values.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_query_is_default_script() {
        let s = Script::parse(None).unwrap();
        assert!(s.status.is_none() && s.size.is_none() && s.headers.is_empty());
        let s = Script::parse(Some("")).unwrap();
        assert!(s.hold.is_none());
    }

    #[test]
    fn parses_every_key() {
        let s = Script::parse(Some(
            "status=404&size=10&delay=25&header=Connection:x-foo&header=X-Foo:1\
             &header=Keep-Alive:timeout=5&etag=v1&hold=a&stall_after=3&resume=r&chunked=1",
        ))
        .unwrap();
        assert_eq!(s.status, Some(StatusCode::NOT_FOUND));
        assert_eq!(s.size, Some(10));
        assert_eq!(s.delay, Some(Duration::from_millis(25)));
        let headers: Vec<_> = s
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("connection", "x-foo"),
                ("x-foo", "1"),
                ("keep-alive", "timeout=5")
            ]
        );
        assert_eq!(s.etag.as_deref(), Some("v1"));
        assert_eq!(s.hold.as_deref(), Some("a"));
        assert_eq!(s.stall_after, Some(3));
        assert_eq!(s.resume.as_deref(), Some("r"));
        assert!(s.chunked);
    }

    #[test]
    fn decodes_escapes_and_plus() {
        let s = Script::parse(Some("header=Cache-Control:max-age%3D60,+public")).unwrap();
        assert_eq!(s.headers[0].1, "max-age=60, public");
    }

    #[test]
    fn etag_match_gives_304_else_scripted_status() {
        let cases = [
            ("\"v1\"", true),
            ("W/\"v1\"", true),
            ("\"v0\", \"v1\"", true),
            ("*", true),
            ("\"v2\"", false),
            ("v1", false),
        ];
        let script = Script::parse(Some("etag=v1&status=203")).unwrap();
        for (header, matches) in cases {
            let mut h = HeaderMap::new();
            h.insert(IF_NONE_MATCH, HeaderValue::from_str(header).unwrap());
            let want = if matches {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::NON_AUTHORITATIVE_INFORMATION
            };
            assert_eq!(script.status_for(&h), want, "{header}");
        }
        assert_eq!(
            script.status_for(&HeaderMap::new()),
            StatusCode::NON_AUTHORITATIVE_INFORMATION
        );
        let untagged = Script::parse(Some("status=404")).unwrap();
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(untagged.status_for(&h), StatusCode::NOT_FOUND);
    }

    #[test]
    fn rejects_bad_input() {
        for q in [
            "status=abc",
            "status=1000",
            "size=-1",
            "header=NoColon",
            "header=Bad%20Name:1",
            "bogus=1",
            "etag=%zz",
            "etag=a%22b",
            "stall_after=10&size=10",
            "resume=a&size=10",
            "resume=a&stall_after=3",
            "chunked=yes",
        ] {
            assert!(Script::parse(Some(q)).is_err(), "{q} should be rejected");
        }
    }
}
