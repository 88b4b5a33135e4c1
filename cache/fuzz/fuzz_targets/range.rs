//! Fuzz the `Range` parser and evaluation (RFC 9110 §14): arbitrary bytes
//! must never panic, and any 206 they produce must lie inside the
//! representation.
//!
//! Input layout: the first 8 bytes (little-endian) are the representation
//! length, the rest is the `Range` field value.

#![no_main]

use edge_cache::range::{RangeAnswer, parse_range, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((length, value)) = data.split_first_chunk::<8>() else {
        return;
    };
    let length = u64::from_le_bytes(*length);
    let Some(specs) = parse_range(value) else {
        return;
    };
    if let RangeAnswer::Partial(range) = resolve(&specs, length) {
        assert!(range.start <= range.end_inclusive);
        assert!(range.end_inclusive < length);
        let _ = range.content_range(length);
    }
});
