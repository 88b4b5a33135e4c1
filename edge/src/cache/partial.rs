//! What a cache answer becomes under the request's `Range` (decided by
//! `edge_cache::range`): the full 200 advertising `Accept-Ranges`, a 206 of
//! one range cut from the full body, or a 416.

use edge_cache::range::{self, RangeAnswer};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::range_body::RangeBody;
use crate::body::{self, ProxyBody};

/// Builds the response for `answer` from a full answer of `status`,
/// `headers` and `body`, which streams all `length` bytes from offset 0
/// (or nothing, for HEAD, whose answer is always [`RangeAnswer::Full`]).
pub(super) fn respond(
    answer: RangeAnswer,
    status: StatusCode,
    mut headers: HeaderMap,
    body: ProxyBody,
    length: u64,
) -> Response<ProxyBody> {
    let (status, body) = match answer {
        RangeAnswer::Full => {
            if status == StatusCode::OK {
                advertise_ranges(&mut headers);
            }
            (status, body)
        }
        RangeAnswer::Partial(part) => {
            advertise_ranges(&mut headers);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
            headers.insert(header::CONTENT_RANGE, value(&part.content_range(length)));
            let body = RangeBody::new(body, part).boxed_unsync();
            (StatusCode::PARTIAL_CONTENT, body)
        }
        RangeAnswer::Unsatisfiable => {
            // Nothing of the representation goes with a 416: no Content-Type
            // or validators that would describe a body it does not have, and
            // no Cache-Control that would let a downstream cache keep it.
            headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_RANGE,
                value(&range::unsatisfied_content_range(length)),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            (StatusCode::RANGE_NOT_SATISFIABLE, body::empty())
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Body bytes the answer sends, for the site's served-bytes counter.
pub(super) fn served_bytes(answer: RangeAnswer, length: u64) -> u64 {
    match answer {
        RangeAnswer::Full => length,
        RangeAnswer::Partial(part) => part.len(),
        RangeAnswer::Unsatisfiable => 0,
    }
}

/// `Accept-Ranges: bytes` (RFC 9110 §14.3) unless the origin already said
/// something: we can cut any range from a stored 200, whatever the origin
/// supports.
fn advertise_ranges(headers: &mut HeaderMap) {
    if !headers.contains_key(header::ACCEPT_RANGES) {
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
}

/// A `Content-Range` value: digits, spaces, `-`, `/` and `*` only.
fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("Content-Range values are visible ASCII")
}
