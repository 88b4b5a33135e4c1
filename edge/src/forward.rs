//! Header rewriting for a message passing through the proxy (RFC 9110 §7.6).
//!
//! Pure functions over `HeaderMap`s: hop-by-hop fields are removed in both
//! directions, `Via` is appended in both, and requests going upstream get
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `CDN-Loop` (RFC 8586).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus `Proxy-Authorization`/`Proxy-Authenticate`, which are meant for a
/// proxy: we ask for no proxy credentials, so they must not travel further.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Removes hop-by-hop fields: the fixed set and every field named in `Connection`.
///
/// `Host` is never removed even when `Connection` names it: a client could
/// otherwise make us forward without a Host and reach the wrong origin site.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are collected first because removing
    // them while iterating the Connection values would borrow twice.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| name != header::HOST)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether an HTTP/1 request carries both `Content-Length` and
/// `Transfer-Encoding`: ambiguous framing, the shape of request smuggling,
/// refused with 400 and a closed connection (RFC 9112 §6.3).
pub fn has_ambiguous_framing(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_LENGTH) && headers.contains_key(header::TRANSFER_ENCODING)
}

/// Appends the client address to `X-Forwarded-For`, folding any earlier
/// lines into one so the origin sees a single list, and sets
/// `X-Forwarded-Proto` to the scheme the client used.
pub fn add_forwarded_for(headers: &mut HeaderMap, client: IpAddr, proto: &'static str) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let mut list = String::new();
    for value in headers.get_all(&xff) {
        if let Ok(text) = value.to_str() {
            list.push_str(text.trim());
            list.push_str(", ");
        }
    }
    // An IPv4 client on a dual-stack listener appears as ::ffff:a.b.c.d;
    // origins expect the plain IPv4 form.
    list.push_str(&client.to_canonical().to_string());
    // An IP address and the visible ASCII of earlier values are always valid.
    if let Ok(value) = HeaderValue::from_str(&list) {
        headers.insert(xff, value);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
}

/// The `Via` values this node appends, built once per configuration so the
/// request path only clones a shared buffer.
#[derive(Debug, Clone)]
pub struct ViaValues {
    http10: HeaderValue,
    http11: HeaderValue,
    http2: HeaderValue,
}

impl ViaValues {
    /// `Via` values for node `id` (a validated token).
    pub fn new(id: &str) -> Result<Self, header::InvalidHeaderValue> {
        Ok(ViaValues {
            http10: HeaderValue::from_str(&format!("1.0 {id}"))?,
            http11: HeaderValue::from_str(&format!("1.1 {id}"))?,
            http2: HeaderValue::from_str(&format!("2 {id}"))?,
        })
    }

    /// The value naming the protocol the message was received with.
    pub fn for_version(&self, version: http::Version) -> &HeaderValue {
        match version {
            http::Version::HTTP_10 | http::Version::HTTP_09 => &self.http10,
            http::Version::HTTP_2 => &self.http2,
            _ => &self.http11,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn strips_fixed_hop_by_hop_and_connection_named_fields() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("host", "example.com"),
        ]);
        strip_hop_by_hop(&mut map);
        let left: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept", "host"]);
    }

    #[test]
    fn connection_cannot_strip_host() {
        let mut map = headers(&[("connection", "host"), ("host", "example.com")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map.get("host").unwrap(), "example.com");
    }

    #[test]
    fn malformed_connection_tokens_are_ignored() {
        let mut map = headers(&[
            ("connection", " , bad name ,x-a"),
            ("x-a", "1"),
            ("x-b", "2"),
        ]);
        strip_hop_by_hop(&mut map);
        assert!(map.get("x-a").is_none());
        assert_eq!(map.get("x-b").unwrap(), "2");
    }

    #[test]
    fn forwarded_for_appends_to_earlier_hops() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut fresh = HeaderMap::new();
        add_forwarded_for(&mut fresh, ip, "http");
        assert_eq!(fresh["x-forwarded-for"], "192.0.2.7");
        assert_eq!(fresh["x-forwarded-proto"], "http");

        let mut chained = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.2 "),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarded_for(&mut chained, ip, "http");
        assert_eq!(chained.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            chained["x-forwarded-for"],
            "203.0.113.1, 198.51.100.2, 192.0.2.7"
        );
        assert_eq!(chained["x-forwarded-proto"], "http");
    }

    #[test]
    fn ambiguous_framing_needs_both_fields() {
        assert!(has_ambiguous_framing(&headers(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ])));
        assert!(!has_ambiguous_framing(&headers(&[("content-length", "5")])));
        assert!(!has_ambiguous_framing(&headers(&[(
            "transfer-encoding",
            "chunked"
        )])));
    }

    #[test]
    fn via_names_the_received_protocol() {
        let via = ViaValues::new("edge-1").unwrap();
        assert_eq!(via.for_version(http::Version::HTTP_11), "1.1 edge-1");
        assert_eq!(via.for_version(http::Version::HTTP_10), "1.0 edge-1");
        assert_eq!(via.for_version(http::Version::HTTP_2), "2 edge-1");
    }
}
