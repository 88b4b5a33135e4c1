//! Range requests through the real binary (RFC 9110 §14, §13.1.5): 206 cut
//! from a stored object, 416, `If-Range` with entity-tags and dates, the
//! multiple-range choice, HEAD, the single full fetch behind a range miss,
//! the range sent on to the origin when the answer cannot be stored, and a
//! range of a cold 100 MiB object answered while the origin still holds
//! the rest.
//!
//! Bodies come from the test origin's `size=` pattern, so every byte of a
//! 206 is checked against `pattern_byte(offset)`. Nothing waits on the
//! clock: held origin bodies are released by the test, and every wait is a
//! condition with a deadline.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::*;
use edge_test_support::{EdgeProcess, Origin};

/// The node id of every config here; it names our `Cache-Status` member.
const NODE: &str = "edge-test";

/// How long any one exchange may take before the test fails: it only
/// bounds a hang on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// A cacheable response for a minute (the common script suffix).
const FRESH_60: &str = "header=Cache-Control:max-age%3D60";

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

/// A config with one listener, one `*` site, a `[cache]` table of
/// `cache_table` lines and one pool holding `endpoint` plus `pool_extra`.
fn range_config(endpoint: SocketAddr, cache_table: &str, pool_extra: &str) -> String {
    config_with(&[endpoint], &format!("[cache]\n{cache_table}"), pool_extra)
}

/// An origin and an edge with the given `[cache]` lines in front of it.
fn start(cache_table: &str) -> (Origin, EdgeProcess) {
    let origin = Origin::start();
    let edge = EdgeProcess::start(edge_bin(), &range_config(origin.addr(), cache_table, ""));
    (origin, edge)
}

/// `method path` with Host `example.com` and `headers`, within `deadline`.
async fn exchange_within(
    edge: &EdgeProcess,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    deadline: Duration,
) -> Answer {
    let mut builder = request(method, path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder.body(empty()).expect("valid request");
    tokio::time::timeout(deadline, send(edge.addr(), req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} {headers:?}: no answer within {deadline:?}"))
}

/// `GET path` with `headers`.
async fn get_with(edge: &EdgeProcess, path: &str, headers: &[(&str, &str)]) -> Answer {
    exchange_within(edge, "GET", path, headers, DEADLINE).await
}

/// `GET path` with `Range: range`.
async fn get_range(edge: &EdgeProcess, path: &str, range: &str) -> Answer {
    get_with(edge, path, &[("range", range)]).await
}

/// The parameters of this node's `Cache-Status` member, e.g.
/// `["hit", "ttl=59"]` or `["fwd=uri-miss", "stored"]`.
fn cache_status(answer: &Answer) -> Vec<String> {
    let raw = answer
        .header("cache-status")
        .unwrap_or_else(|| panic!("no Cache-Status: {:?}", answer.head.headers));
    let member = raw
        .split(',')
        .map(str::trim)
        .find(|m| m.split(';').next().map(str::trim) == Some(NODE))
        .unwrap_or_else(|| panic!("no {NODE} member in Cache-Status {raw:?}"));
    member
        .split(';')
        .skip(1)
        .map(|p| p.trim().to_owned())
        .collect()
}

fn is_hit(answer: &Answer) -> bool {
    cache_status(answer).iter().any(|p| p == "hit")
}

/// Asserts a fresh hit with an `Age`.
fn assert_hit(answer: &Answer) {
    assert!(is_hit(answer), "expected a hit: {:?}", cache_status(answer));
    assert!(answer.header("age").is_some(), "a hit carries Age");
}

/// Asserts the object was fetched and stored by this request.
fn assert_stored_miss(answer: &Answer) {
    let params = cache_status(answer);
    assert!(
        params.iter().any(|p| p == "fwd=uri-miss") && params.iter().any(|p| p == "stored"),
        "expected fwd=uri-miss; stored, got {params:?}"
    );
}

/// Asserts a 206 holding bytes `start..=end` of a `len`-byte pattern body.
fn assert_partial(answer: &Answer, start: u64, end: u64, len: u64) {
    assert_eq!(
        answer.status(),
        206,
        "headers {:?}, body {:?}",
        answer.head.headers,
        answer.text()
    );
    assert_eq!(
        answer.header("content-range"),
        Some(format!("bytes {start}-{end}/{len}").as_str())
    );
    let count = end - start + 1;
    assert_eq!(
        answer.header("content-length"),
        Some(count.to_string().as_str())
    );
    assert_eq!(answer.body.len() as u64, count, "206 body length");
    assert_pattern(&answer.body, start);
}

/// Asserts a full 200 of a `len`-byte pattern body.
fn assert_full(answer: &Answer, len: u64) {
    assert_eq!(answer.status(), 200, "headers {:?}", answer.head.headers);
    assert!(answer.header("content-range").is_none());
    assert_eq!(answer.body.len() as u64, len);
    assert_pattern(&answer.body, 0);
}

/// Whether the origin's most recent request for `path` carried `Range`.
fn origin_saw_range(origin: &Origin, path: &str) -> bool {
    origin
        .last_request(path)
        .unwrap_or_else(|| panic!("no request for {path} reached the origin"))
        .headers
        .contains_key("range")
}

// ---------------------------------------------------------------------------
// 206 from the cache
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ranges_are_cut_from_one_full_fetch_and_then_from_the_stored_object() {
    let (origin, edge) = start("");
    let path = format!("/obj?size=1000&etag=v1&{FRESH_60}");

    // The miss: the range is answered from the flight of a full fetch.
    let first = get_range(&edge, &path, "bytes=0-99").await;
    assert_partial(&first, 0, 99, 1000);
    assert_stored_miss(&first);
    assert_eq!(first.header("accept-ranges"), Some("bytes"));
    assert_eq!(origin.hits("/obj"), 1);
    assert!(
        !origin_saw_range(&origin, "/obj"),
        "a fill asks the origin for the whole object"
    );

    // Every later range is a hit: last bytes, open-ended, middle.
    for (range, start, end) in [
        ("bytes=-100", 900, 999),
        ("bytes=100-", 100, 999),
        ("bytes=400-599", 400, 599),
        ("bytes=999-999", 999, 999),
    ] {
        let answer = get_range(&edge, &path, range).await;
        assert_partial(&answer, start, end, 1000);
        assert_hit(&answer);
        assert_eq!(answer.header("etag"), Some("\"v1\""), "{range}");
    }

    // And a plain GET gets the whole object, advertising ranges.
    let full = get_with(&edge, &path, &[]).await;
    assert_full(&full, 1000);
    assert_hit(&full);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(origin.hits("/obj"), 1, "one origin request in all");
}

#[tokio::test]
async fn an_unsatisfiable_range_gets_416_with_the_length() {
    let (origin, edge) = start("");
    let path = format!("/small?size=1000&{FRESH_60}");
    // A 416 needs no body byte, so it can be answered before the fill has
    // stored the object: later requests join that fill until it is stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for n in 1.. {
        let answer = get_range(&edge, &path, "bytes=5000-").await;
        assert_eq!(answer.status(), 416, "request {n}");
        assert_eq!(answer.header("content-range"), Some("bytes */1000"));
        assert!(answer.body.is_empty(), "a 416 has no body");
        if n == 1 {
            assert_stored_miss(&answer);
        } else if is_hit(&answer) {
            assert_hit(&answer);
            break;
        } else {
            assert!(
                cache_status(&answer).iter().any(|p| p == "collapsed"),
                "joins the fill until stored: {:?}",
                cache_status(&answer)
            );
            assert!(std::time::Instant::now() < deadline, "the object is stored");
        }
    }
    assert_eq!(origin.hits("/small"), 1);
    assert_full(&get_with(&edge, &path, &[]).await, 1000);
}

#[tokio::test]
async fn multiple_ranges_are_one_part_when_they_touch_and_the_full_object_otherwise() {
    let (origin, edge) = start("");
    let path = format!("/multi?size=1000&{FRESH_60}");
    assert_full(&get_with(&edge, &path, &[]).await, 1000);

    // Disjoint ranges: our choice is the full 200, never multipart.
    let disjoint = get_range(&edge, &path, "bytes=0-9,20-29").await;
    assert_full(&disjoint, 1000);
    assert_hit(&disjoint);
    // Adjacent or overlapping ranges coalesce into one part (§15.3.7.2).
    assert_partial(
        &get_range(&edge, &path, "bytes=0-9,10-19").await,
        0,
        19,
        1000,
    );
    assert_partial(
        &get_range(&edge, &path, "bytes=50-59, 0-99").await,
        0,
        99,
        1000,
    );
    // An invalid or foreign Range is ignored.
    assert_full(&get_range(&edge, &path, "bytes=9-0").await, 1000);
    assert_full(&get_range(&edge, &path, "lines=1-2").await, 1000);
    assert_eq!(origin.hits("/multi"), 1);
}

#[tokio::test]
async fn head_with_a_range_is_a_head_of_the_whole_object() {
    let (origin, edge) = start("");
    let path = format!("/head?size=1000&{FRESH_60}");

    // A HEAD miss goes to the origin without the Range.
    let miss = exchange_within(&edge, "HEAD", &path, &[("range", "bytes=0-9")], DEADLINE).await;
    assert_eq!(miss.status(), 200);
    assert_eq!(miss.header("content-length"), Some("1000"));
    assert!(!origin_saw_range(&origin, "/head"));

    // A HEAD hit ignores it too.
    get_with(&edge, &path, &[]).await;
    let hit = exchange_within(&edge, "HEAD", &path, &[("range", "bytes=0-9")], DEADLINE).await;
    assert_eq!(hit.status(), 200);
    assert_hit(&hit);
    assert_eq!(hit.header("content-length"), Some("1000"));
    assert!(hit.header("content-range").is_none());
    assert_eq!(hit.header("accept-ranges"), Some("bytes"));
    assert!(hit.body.is_empty());
    assert_eq!(origin.hits("/head"), 2, "the HEAD miss and the GET");
}

// ---------------------------------------------------------------------------
// If-Range (RFC 9110 §13.1.5)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn if_range_with_an_entity_tag_needs_a_strong_match() {
    let (origin, edge) = start("");
    let tagged = format!("/tagged?size=1000&etag=v1&{FRESH_60}");

    // Evaluated on the miss's flight as well as on hits.
    let matching = [("range", "bytes=0-99"), ("if-range", "\"v1\"")];
    let miss = get_with(&edge, &tagged, &matching).await;
    assert_partial(&miss, 0, 99, 1000);
    assert_stored_miss(&miss);
    let hit = get_with(&edge, &tagged, &matching).await;
    assert_partial(&hit, 0, 99, 1000);
    assert_hit(&hit);

    // A different tag: the representation changed, so the whole of it.
    let changed = get_with(
        &edge,
        &tagged,
        &[("range", "bytes=0-99"), ("if-range", "\"v2\"")],
    )
    .await;
    assert_full(&changed, 1000);
    assert_hit(&changed);
    assert_eq!(origin.hits("/tagged"), 1);

    // A weak stored ETag never matches (strong comparison, §8.8.3.2).
    let weak = format!("/weak?size=1000&header=ETag:W/%22w1%22&{FRESH_60}");
    assert_full(&get_with(&edge, &weak, &[]).await, 1000);
    for if_range in ["W/\"w1\"", "\"w1\""] {
        let answer = get_with(
            &edge,
            &weak,
            &[("range", "bytes=0-99"), ("if-range", if_range)],
        )
        .await;
        assert_full(&answer, 1000);
        assert_hit(&answer);
    }
}

#[tokio::test]
async fn if_range_with_a_date_needs_the_exact_strong_last_modified() {
    let (origin, edge) = start("");
    let now = SystemTime::now();
    let hour_ago = httpdate::fmt_http_date(now - Duration::from_secs(3600));
    let later = httpdate::fmt_http_date(now - Duration::from_secs(3599));
    let encode = |date: &str| date.replace(' ', "+");

    // Last-Modified an hour before the Date the origin sends: strong.
    let dated = format!(
        "/dated?size=1000&header=Last-Modified:{}&{FRESH_60}",
        encode(&hour_ago)
    );
    assert_full(&get_with(&edge, &dated, &[]).await, 1000);
    let same = get_with(
        &edge,
        &dated,
        &[("range", "bytes=10-19"), ("if-range", hour_ago.as_str())],
    )
    .await;
    assert_partial(&same, 10, 19, 1000);
    assert_hit(&same);
    let other = get_with(
        &edge,
        &dated,
        &[("range", "bytes=10-19"), ("if-range", later.as_str())],
    )
    .await;
    assert_full(&other, 1000);

    // Last-Modified equal to Date: weak (§8.8.2.2), so never a match.
    let now_text = httpdate::fmt_http_date(now);
    let weak = format!(
        "/same-second?size=1000&header=Last-Modified:{0}&header=Date:{0}&{FRESH_60}",
        encode(&now_text)
    );
    assert_full(&get_with(&edge, &weak, &[]).await, 1000);
    let answer = get_with(
        &edge,
        &weak,
        &[("range", "bytes=10-19"), ("if-range", now_text.as_str())],
    )
    .await;
    assert_full(&answer, 1000);
    assert_hit(&answer);
    assert_eq!(origin.hits("/dated") + origin.hits("/same-second"), 2);
}

// ---------------------------------------------------------------------------
// Answers that cannot be stored: the origin cuts the range
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_range_of_an_answer_that_cannot_be_stored_is_sent_on_to_the_origin() {
    // 8 MiB of memory: the default per-object limit is 1 MiB.
    let (origin, edge) = start("memory = \"8MiB\"");
    let cases = [
        (
            "/too-large",
            format!("size={}&{FRESH_60}", 2 * MIB),
            2 * MIB,
        ),
        (
            "/no-store",
            "size=1000&header=Cache-Control:no-store".to_owned(),
            1000,
        ),
        // No Content-Length: the length is unknown until the end.
        ("/chunked", format!("size=1000&chunked=1&{FRESH_60}"), 1000),
    ];
    for (route, script, len) in cases {
        let path = format!("{route}?{script}");
        let answer = get_range(&edge, &path, "bytes=100-199").await;
        assert_eq!(answer.status(), 206, "{route}: {:?}", answer.head.headers);
        assert_eq!(
            answer.header("content-range"),
            Some(format!("bytes 100-199/{len}").as_str()),
            "{route}: the origin's own Content-Range"
        );
        assert_eq!(answer.body.len(), 100, "{route}");
        assert_pattern(&answer.body, 100);
        let params = cache_status(&answer);
        assert!(
            params == ["fwd=uri-miss"],
            "{route}: fetched, not stored: {params:?}"
        );
        // The full fetch first (its answer showed it cannot be stored),
        // then the client's range.
        let requests: Vec<bool> = origin
            .requests()
            .iter()
            .filter(|r| r.uri.path() == route)
            .map(|r| r.headers.contains_key("range"))
            .collect();
        assert_eq!(
            requests,
            [false, true],
            "{route}: Range on each origin request"
        );
    }

    // An answer a range does not apply to is relayed as it is: no second request.
    let path = "/missing?status=404&header=Cache-Control:no-store";
    let answer = get_range(&edge, path, "bytes=0-9").await;
    assert_eq!(answer.status(), 404);
    assert_eq!(origin.hits("/missing"), 1);
}

// ---------------------------------------------------------------------------
// A cold 100 MiB object
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_range_of_a_cold_100mib_object_is_answered_before_the_object_arrives() {
    const SIZE: u64 = 100 * MIB;
    const SENT_FIRST: u64 = 64 * 1024;
    // Room to store the object, so the coalesced fill path is the one
    // exercised (the default limit would stream it through uncached); a
    // long body timeout, since the origin holds the body as long as the
    // test needs.
    let origin = Origin::start();
    let edge = EdgeProcess::start(
        edge_bin(),
        &range_config(
            origin.addr(),
            "memory = \"256MiB\"\nmax_object_size = \"128MiB\"",
            "body_timeout = \"300s\"",
        ),
    );
    // The origin sends the first 64 KiB, then holds the rest until released.
    let path = format!("/movie?size={SIZE}&stall_after={SENT_FIRST}&resume=movie&{FRESH_60}");

    let first = get_range(&edge, &path, "bytes=0-1023").await;
    assert_partial(&first, 0, 1023, SIZE);
    assert_stored_miss(&first);
    // A second client joins the same fetch and is answered too.
    let second = get_range(&edge, &path, "bytes=1024-2047").await;
    assert_partial(&second, 1024, 2047, SIZE);
    assert!(
        cache_status(&second).iter().any(|p| p == "collapsed"),
        "shares the held fetch: {:?}",
        cache_status(&second)
    );
    // Both answered while the origin still holds all but 64 KiB.
    assert_eq!(origin.hits("/movie"), 1, "one origin request");
    assert!(!origin_saw_range(&origin, "/movie"));

    // Once released, the same fetch completes and stores the object: the
    // last KiB is served (by the flight, then from memory) without another
    // origin request. 100 MiB through a debug build: a longer bound.
    origin.release("movie");
    let until = tokio::time::Instant::now() + 10 * DEADLINE;
    loop {
        let last = exchange_within(
            &edge,
            "GET",
            &path,
            &[("range", "bytes=-1024")],
            10 * DEADLINE,
        )
        .await;
        assert_partial(&last, SIZE - 1024, SIZE - 1, SIZE);
        if is_hit(&last) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the object was never stored: {:?}",
            cache_status(&last)
        );
    }
    assert_eq!(origin.hits("/movie"), 1, "still one origin request");
}
