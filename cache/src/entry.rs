//! The stored response: what the memory tier keeps for one variant of one URL
//! and hands to readers as an `Arc<StoredResponse>`.
//!
//! Serving a hit clones the `Arc` and the body's [`Bytes`] handles, never the
//! bytes themselves. The caller builds the entry: it has already removed the
//! fields that must not be stored (RFC 9111 §3.1: hop-by-hop fields,
//! `no-cache="field"` / `private="field"` members) and computed the freshness
//! lifetime, so the store itself applies no HTTP rules beyond Vary matching.

use std::mem::size_of;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::age::ResponseTimes;
use crate::cache_control::ResponseDirectives;
use crate::freshness::Lifetime;
use crate::vary::{SecondaryKey, VarySpec};

/// Per header field line overhead counted by [`StoredResponse::size_bytes`]:
/// 32 bytes, the same allowance HPACK makes for an entry's bookkeeping
/// (RFC 7541 §4.1). `HeaderMap` spends a similar amount per field on its
/// index and `HeaderValue`/`HeaderName` representations.
pub const HEADER_FIELD_OVERHEAD: u64 = 32;

/// One stored response (RFC 9111 §3): status, header section, body and the
/// times and lifetime needed to compute its age and freshness later.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// The stored status code.
    pub status: StatusCode,
    /// The stored header section, with the fields not to store already removed.
    pub headers: HeaderMap,
    /// The body as received, chunk by chunk; a hit shares these `Bytes`.
    pub body: Vec<Bytes>,
    /// Request/response times and the received `Date`/`Age` (RFC 9111 §4.2.3).
    pub times: ResponseTimes,
    /// The freshness lifetime computed when the response was stored (§4.2.1).
    pub lifetime: Lifetime,
    /// The cache directives that applied (targeted field or Cache-Control),
    /// kept for reuse decisions (§4.2.4, RFC 5861).
    pub directives: ResponseDirectives,
    /// The response's `Vary` (§4.1).
    pub vary: VarySpec,
    /// The secondary key of the request that produced it; `None` for
    /// `Vary: *`, which never matches a later request.
    pub secondary: Option<SecondaryKey>,
}

/// A response without its body: what a streaming store needs before the
/// first body byte arrives (the disk tier's
/// [`begin_write`](crate::disk::DiskStore::begin_write)). Same fields and
/// meaning as in [`StoredResponse`].
#[derive(Debug, Clone)]
pub struct ObjectHead {
    /// The stored status code.
    pub status: StatusCode,
    /// The stored header section, with the fields not to store already removed.
    pub headers: HeaderMap,
    /// Request/response times and the received `Date`/`Age` (RFC 9111 §4.2.3).
    pub times: ResponseTimes,
    /// The freshness lifetime computed when the response was stored (§4.2.1).
    pub lifetime: Lifetime,
    /// The cache directives that applied.
    pub directives: ResponseDirectives,
    /// The response's `Vary` (§4.1).
    pub vary: VarySpec,
    /// The secondary key of the request that produced it; `None` for `Vary: *`.
    pub secondary: Option<SecondaryKey>,
}

impl StoredResponse {
    /// Everything but the body (clones the header map).
    pub fn head(&self) -> ObjectHead {
        ObjectHead {
            status: self.status,
            headers: self.headers.clone(),
            times: self.times,
            lifetime: self.lifetime,
            directives: self.directives.clone(),
            vary: self.vary.clone(),
            secondary: self.secondary.clone(),
        }
    }

    /// Total body length in bytes.
    pub fn body_len(&self) -> u64 {
        self.body.iter().map(|b| b.len() as u64).sum()
    }

    /// Approximate memory footprint, used as the memory tier's weight:
    /// - body: the chunk lengths plus one `Bytes` handle per chunk;
    /// - headers: name + value length plus [`HEADER_FIELD_OVERHEAD`] per line;
    /// - the secondary key's bytes;
    /// - fixed: `size_of::<StoredResponse>()` plus 16 bytes for the `Arc`
    ///   counters around it.
    ///
    /// Allocator slack and the `Bytes` of a chunk that shares a larger buffer
    /// are not counted: the figure is what the entry *holds*, not what the
    /// process paid to hold it.
    pub fn size_bytes(&self) -> u64 {
        let body: u64 = self
            .body
            .iter()
            .map(|b| b.len() as u64 + size_of::<Bytes>() as u64)
            .sum();
        let headers: u64 = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() as u64 + v.len() as u64 + HEADER_FIELD_OVERHEAD)
            .sum();
        let secondary = self
            .secondary
            .as_ref()
            .map_or(0, |s| s.as_bytes().len() as u64);
        let fixed = size_of::<StoredResponse>() as u64 + 16;
        body + headers + secondary + fixed
    }
}
