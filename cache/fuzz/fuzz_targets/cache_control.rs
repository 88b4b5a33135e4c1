//! Fuzz the Cache-Control and targeted-field parsers (RFC 9111 §5.2,
//! RFC 9213) on arbitrary bytes: they must never panic, and every parsed
//! delta-seconds must stay within the RFC 9111 §1.2.2 clamp.
//!
//! Input layout: bytes split on `\n` into field lines; lines that are not
//! valid header values (control characters) are skipped, as `http` would
//! reject them before the cache sees them.

#![no_main]

use edge_cache::cache_control::{
    CDN_CACHE_CONTROL, MAX_DELTA_SECONDS, ResponseDirectives, parse_request, parse_response,
    parse_targeted, shared_cache_directives,
};
use http::{HeaderMap, HeaderName, HeaderValue, header::CACHE_CONTROL};
use libfuzzer_sys::fuzz_target;

fn check(d: &ResponseDirectives) {
    for v in [
        d.max_age,
        d.s_maxage,
        d.stale_while_revalidate,
        d.stale_if_error,
    ] {
        assert!(v.unwrap_or(0) <= MAX_DELTA_SECONDS);
    }
}

fuzz_target!(|data: &[u8]| {
    let values: Vec<HeaderValue> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
        .collect();

    check(&parse_response(&values));
    let req = parse_request(&values);
    for v in [req.max_age, req.min_fresh, req.stale_if_error] {
        assert!(v.unwrap_or(0) <= MAX_DELTA_SECONDS);
    }
    if let Some(d) = parse_targeted(&values) {
        check(&d);
    }

    // Alternate lines between a custom targeted field, CDN-Cache-Control
    // and Cache-Control so precedence and fallback paths are exercised.
    let edge = HeaderName::from_static("edge-cache-control");
    let mut headers = HeaderMap::new();
    for (i, value) in values.into_iter().enumerate() {
        let name = match i % 3 {
            0 => edge.clone(),
            1 => CDN_CACHE_CONTROL,
            _ => CACHE_CONTROL,
        };
        headers.append(name, value);
    }
    let (d, _source) = shared_cache_directives(&headers, &[edge, CDN_CACHE_CONTROL]);
    check(&d);
});
