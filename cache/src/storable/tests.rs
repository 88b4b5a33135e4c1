//! Table-driven storability cases for a shared cache; each row cites the RFC
//! section it exercises. Directives are parsed from the headers with the
//! real parsers, `CDN-Cache-Control` being the cache's targeted field.
//!
//! Columns are split by ` | `, header fields within a cell by ` ¶ ` (`-` for
//! none). `opts` is `ttl` when a site default TTL is configured. The
//! expectation is the [`StoreBasis`] name plus ` strip=a,b` when fields are
//! stripped, or `!` and the [`NotStorable`] name.

use super::*;
use crate::cache_control::{
    CDN_CACHE_CONTROL, DirectiveSource, parse_request, shared_cache_directives,
};
use http::{HeaderName, HeaderValue, header::CACHE_CONTROL};

/// method | request headers | status | response headers | opts | expected | section
const CASES: &str = r#"
GET     | -                        | 200 | cache-control: max-age=60                                  | -   | explicit          | RFC 9111 §3, §5.2.2.1
HEAD    | -                        | 200 | cache-control: max-age=60                                  | -   | explicit          | RFC 9111 §3, RFC 9110 §9.3.2 (HEAD is cacheable)
POST    | -                        | 200 | cache-control: max-age=60                                  | -   | !method           | RFC 9110 §9.3.3 (POST not stored: our choice)
PUT     | -                        | 200 | cache-control: max-age=60                                  | -   | !method           | RFC 9110 §9.3.4 (PUT is not cacheable)
OPTIONS | -                        | 200 | cache-control: max-age=60                                  | -   | !method           | RFC 9110 §9.3.7 (OPTIONS is not cacheable)
GET     | cache-control: no-store  | 200 | cache-control: max-age=60                                  | -   | !request-no-store | RFC 9111 §5.2.1.5
GET     | cache-control: no-cache  | 200 | cache-control: max-age=60                                  | -   | explicit          | RFC 9111 §5.2.1.4 (request no-cache still stores)
GET     | -                        | 103 | cache-control: max-age=60                                  | -   | !non-final-status | RFC 9111 §3 (status must be final)
GET     | -                        | 206 | cache-control: max-age=60 ¶ content-range: bytes 0-9/100   | -   | !partial-content  | RFC 9111 §3.3 (ranges not stored yet)
GET     | -                        | 200 | cache-control: max-age=60 ¶ content-range: bytes 0-9/100   | -   | !partial-content  | RFC 9111 §3.3 (Content-Range on a 200)
GET     | -                        | 416 | cache-control: max-age=60 ¶ content-range: bytes */100     | -   | !partial-content  | RFC 9110 §15.5.17 (416 carries Content-Range)
GET     | -                        | 304 | cache-control: max-age=60                                  | -   | !not-modified     | RFC 9111 §4.3.4 (304 only updates)
GET     | -                        | 200 | cache-control: no-store, max-age=60                        | -   | !no-store         | RFC 9111 §5.2.2.5
GET     | -                        | 200 | cache-control: must-understand, no-store, max-age=60       | -   | explicit          | RFC 9111 §5.2.2.3 (overrides no-store)
GET     | -                        | 299 | cache-control: must-understand, no-store, max-age=60       | -   | !must-understand  | RFC 9111 §5.2.2.3 (status not understood)
GET     | -                        | 200 | cache-control: must-understand                             | -   | heuristic         | RFC 9111 §5.2.2.3 (understood, no no-store)
GET     | -                        | 299 | cache-control: max-age=60                                  | -   | explicit          | RFC 9111 §3 (unknown status, explicit freshness)
GET     | -                        | 200 | cache-control: private, max-age=60                         | -   | !private          | RFC 9111 §5.2.2.7
GET     | -                        | 200 | cache-control: private="", max-age=60                      | -   | !private          | RFC 9111 §5.2.2.7 (empty list read as bare)
GET     | -                        | 200 | cache-control: private="X-User, X-Session", max-age=60     | -   | explicit strip=x-user,x-session | RFC 9111 §5.2.2.7 (qualified: strip the fields)
GET     | -                        | 200 | cache-control: no-cache                                    | -   | heuristic         | RFC 9111 §5.2.2.4 (no-cache is still storable)
GET     | authorization: Bearer t  | 200 | cache-control: max-age=60                                  | -   | !authorization    | RFC 9111 §3.5
GET     | authorization: Bearer t  | 200 | cache-control: public                                      | -   | public            | RFC 9111 §3.5 (public)
GET     | authorization: Bearer t  | 200 | cache-control: s-maxage=60                                 | -   | explicit          | RFC 9111 §3.5 (s-maxage)
GET     | authorization: Bearer t  | 200 | cache-control: must-revalidate, max-age=60                 | -   | explicit          | RFC 9111 §3.5 (must-revalidate)
GET     | authorization: Bearer t  | 200 | cache-control: proxy-revalidate, max-age=60                | -   | !authorization    | RFC 9111 §3.5 (proxy-revalidate is not listed)
GET     | authorization: Bearer t  | 200 | cdn-cache-control: public ¶ cache-control: max-age=60      | -   | public            | RFC 9111 §3.5, RFC 9213 §2.2 (targeted public)
GET     | -                        | 200 | cache-control: max-age=60 ¶ set-cookie: id=1               | -   | !set-cookie       | RFC 9111 §3 + CDN choice (cookies not shared by default)
GET     | -                        | 200 | set-cookie: id=1                                           | -   | !set-cookie       | RFC 9111 §3 + CDN choice (heuristic freshness is not enough)
GET     | -                        | 200 | cache-control: public, max-age=60 ¶ set-cookie: id=1       | -   | explicit strip=set-cookie | RFC 9111 §5.2.2.9 (public: stored without the cookie)
GET     | -                        | 200 | cache-control: s-maxage=60 ¶ set-cookie: id=1              | -   | explicit strip=set-cookie | RFC 9111 §5.2.2.10 (s-maxage addresses shared caches)
GET     | -                        | 200 | cdn-cache-control: max-age=60 ¶ set-cookie: id=1           | -   | explicit strip=set-cookie | RFC 9213 §2.2 (targeted freshness)
GET     | -                        | 200 | cache-control: private="Set-Cookie", max-age=60 ¶ set-cookie: id=1 | - | explicit strip=set-cookie | RFC 9111 §5.2.2.7 (cookie marked private)
GET     | -                        | 200 | -                                                          | -   | heuristic         | RFC 9110 §15.1 (200 cacheable by default)
GET     | -                        | 404 | -                                                          | -   | heuristic         | RFC 9110 §15.1 (404 cacheable by default)
GET     | -                        | 301 | -                                                          | -   | heuristic         | RFC 9110 §15.1 (301 cacheable by default)
GET     | -                        | 501 | -                                                          | -   | heuristic         | RFC 9110 §15.1 (501 cacheable by default)
GET     | -                        | 302 | -                                                          | -   | !no-freshness     | RFC 9110 §15.1 (302 is not)
GET     | -                        | 503 | -                                                          | -   | !no-freshness     | RFC 9110 §15.1 (503 is not)
GET     | -                        | 302 | -                                                          | ttl | default-ttl       | RFC 9111 §3 (site default TTL as a cache extension)
GET     | -                        | 503 | -                                                          | ttl | !no-freshness     | RFC 9111 §3 (default TTL never caches 5xx)
GET     | -                        | 299 | -                                                          | ttl | !no-freshness     | RFC 9111 §3 (default TTL needs an understood status)
GET     | -                        | 500 | cache-control: max-age=60                                  | -   | explicit          | RFC 9111 §5.2.2.1 (explicit freshness on a 500)
GET     | -                        | 302 | expires: Thu, 01 Dec 2094 16:00:00 GMT                     | -   | explicit          | RFC 9111 §5.3 (Expires)
GET     | -                        | 302 | expires: 0                                                 | -   | explicit          | RFC 9111 §5.3 (invalid Expires counts, stored stale)
GET     | -                        | 302 | cache-control: public                                      | -   | public            | RFC 9111 §5.2.2.9 (public without freshness)
GET     | -                        | 201 | cdn-cache-control: max-age=5                               | -   | explicit          | RFC 9213 §2.2 (targeted freshness)
GET     | -                        | 302 | cdn-cache-control: must-revalidate ¶ expires: Thu, 01 Dec 2094 16:00:00 GMT | - | !no-freshness | RFC 9213 §2.2 (Expires ignored with a targeted field)
GET     | -                        | 200 | cdn-cache-control: max-age=60 ¶ cache-control: no-store    | -   | explicit          | RFC 9213 §2.2 (Cache-Control ignored)
GET     | -                        | 200 | cdn-cache-control: no-store ¶ cache-control: max-age=60    | -   | !no-store         | RFC 9213 §2.2 (targeted no-store)
GET     | -                        | 200 | cdn-cache-control: max-age=60, ¶ cache-control: no-store   | -   | !no-store         | RFC 9213 §2.1 (invalid targeted field: Cache-Control)
GET     | -                        | 200 | cache-control: max-age=60 ¶ vary: *                        | -   | explicit          | RFC 9111 §4.1 (Vary: * storable, never matches)
"#;

fn header_map(cell: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for field in cell.split(" ¶ ").filter(|f| f.trim() != "-") {
        let (name, value) = field.split_once(':').expect("name: value");
        map.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
            HeaderValue::from_str(value.trim()).expect("value"),
        );
    }
    map
}

/// The expectation column's form of a decision.
fn outcome(decision: Result<Storable, NotStorable>) -> String {
    match decision {
        Ok(s) if s.strip_fields.is_empty() => s.basis.as_str().to_owned(),
        Ok(s) => format!("{} strip={}", s.basis.as_str(), s.strip_fields.join(",")),
        Err(reason) => format!("!{}", reason.as_str()),
    }
}

#[test]
fn shared_cache_storability() {
    let mut count = 0;
    for line in CASES.lines().filter(|l| !l.trim().is_empty()) {
        let row: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let [method, req, status, resp, opts, want, section] = row[..] else {
            panic!("bad row {row:?}")
        };
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let req_headers = header_map(req);
        let resp_headers = header_map(resp);
        let req_directives = parse_request(req_headers.get_all(CACHE_CONTROL));
        let (directives, source) = shared_cache_directives(&resp_headers, &[CDN_CACHE_CONTROL]);
        let decision = storability(
            &StoreRequest {
                method: &method,
                headers: &req_headers,
                directives: &req_directives,
            },
            &StoreResponse {
                status: StatusCode::from_bytes(status.as_bytes()).expect("status"),
                headers: &resp_headers,
                directives: &directives,
                has_targeted: matches!(source, DirectiveSource::Targeted(_)),
            },
            &StoreOptions {
                cache_default_ttl: opts == "ttl",
            },
        );
        assert_eq!(outcome(decision), want, "{line} ({section})");
        count += 1;
    }
    assert!(count >= 50, "{count} rows");
}

#[test]
fn heuristic_statuses_match_rfc_9110_15_1() {
    // RFC 9110 §15.1: "200, 203, 204, 206, 300, 301, 308, 404, 405, 410,
    // 414, and 501" are cacheable by default.
    let cacheable: Vec<u16> = (100..=599u16)
        .filter(|&c| is_heuristically_cacheable(StatusCode::from_u16(c).expect("status")))
        .collect();
    assert_eq!(cacheable, HEURISTICALLY_CACHEABLE);
    // Every heuristically cacheable status is one we understand (RFC 9111 §3).
    assert!(
        HEURISTICALLY_CACHEABLE
            .iter()
            .all(|&c| is_understood_status(StatusCode::from_u16(c).expect("status")))
    );
}

#[test]
fn reasons_have_distinct_names() {
    // Used as Cache-Status details and metric labels: they must not collide.
    let s = StatusCode::OK;
    let all = [
        NotStorable::Method(Method::POST),
        NotStorable::RequestNoStore,
        NotStorable::NonFinalStatus(s),
        NotStorable::PartialContent,
        NotStorable::NotModified,
        NotStorable::MustUnderstand(s),
        NotStorable::ResponseNoStore,
        NotStorable::Private,
        NotStorable::Authorization,
        NotStorable::SetCookie,
        NotStorable::NoFreshness(s),
    ];
    let mut names: Vec<&str> = all.iter().map(NotStorable::as_str).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len());
    assert!(all.iter().all(|r| !r.to_string().is_empty()));
}
