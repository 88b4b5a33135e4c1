//! `X-Request-Id`: one id per request, the client's when it sent a sane
//! one, otherwise made here; it travels upstream, comes back to the client
//! and names the request's access-log line, so one id finds a request in
//! the logs of the client, the edge and the origin.
//!
//! Ids are made without a lock: 128 bits from the worker's own generator
//! (WyRand, seeded per thread from the OS's randomness), as 32 lowercase
//! hex digits, the shape of a W3C trace id. Not cryptographic: an id names
//! a request, it grants nothing, so being guessable costs nothing.

use std::cell::RefCell;

use edge_lb::{RandomSource, WyRand};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id accepted: longer ones are replaced, so a
/// client cannot make every log line carry a kilobyte of its choosing.
pub const MAX_ID_LEN: usize = 128;

/// Whether a client's id may be kept: 1 to [`MAX_ID_LEN`] visible ASCII
/// characters (no spaces or controls, which would break log parsers that
/// split on whitespace).
pub fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_ID_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// The client's id if [`acceptable`], otherwise a new one; either way
/// `headers` then carries exactly that one value, for the upstream request.
pub fn assign(headers: &mut HeaderMap) -> HeaderValue {
    let id = match headers.get(&X_REQUEST_ID) {
        Some(value) if acceptable(value) => value.clone(),
        _ => generate(),
    };
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// The client's id when it is [`acceptable`], without changing anything
/// (`request_id = false`: the log still names what the client sent).
pub fn client_id(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(&X_REQUEST_ID)
        .filter(|v| acceptable(v))
        .cloned()
}

thread_local! {
    /// Each worker's id generator, seeded per thread.
    static IDS: RefCell<WyRand> = RefCell::new(WyRand::new({
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    }));
}

/// A new id: 32 lowercase hex digits.
pub fn generate() -> HeaderValue {
    let (high, low) = IDS.with_borrow_mut(|rng| (rng.next_u64(), rng.next_u64()));
    let mut text = [0u8; 32];
    hex(high, &mut text[..16]);
    hex(low, &mut text[16..]);
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

/// Writes `n` as 16 lowercase hex digits into `out`.
fn hex(mut n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
            assert!(acceptable(id));
        }
    }

    #[test]
    fn hex_is_fixed_width() {
        let mut out = [0u8; 16];
        hex(0xab, &mut out);
        assert_eq!(&out, b"00000000000000ab");
        hex(u64::MAX, &mut out);
        assert_eq!(&out, b"ffffffffffffffff");
    }

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        let long = "a".repeat(MAX_ID_LEN);
        let too_long = "a".repeat(MAX_ID_LEN + 1);
        let cases: [(&[u8], bool); 7] = [
            (b"abc-123", true),
            (b"0f8e2a3c-4b1d-4c2e-9a7f-123456789abc", true),
            (long.as_bytes(), true),
            (too_long.as_bytes(), false),
            (b"", false),
            (b"has space", false),
            (b"caf\xc3\xa9", false),
        ];
        for (value, keep) in cases {
            let value = HeaderValue::from_bytes(value).unwrap();
            assert_eq!(acceptable(&value), keep, "{value:?}");
            let mut headers = HeaderMap::new();
            headers.append(X_REQUEST_ID, value.clone());
            headers.append(X_REQUEST_ID, HeaderValue::from_static("second"));
            let id = assign(&mut headers);
            assert_eq!(id == value, keep, "{value:?}");
            let sent: Vec<_> = headers.get_all(X_REQUEST_ID).iter().collect();
            assert_eq!(sent, [&id], "exactly one id travels upstream");
        }
    }

    #[test]
    fn a_missing_id_is_generated_and_set() {
        let mut headers = HeaderMap::new();
        let id = assign(&mut headers);
        assert_eq!(headers[X_REQUEST_ID], id);
        assert_eq!(client_id(&headers), Some(id));
        assert_eq!(client_id(&HeaderMap::new()), None);
    }
}
