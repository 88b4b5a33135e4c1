//! Whether a response may be stored by a *shared* cache (RFC 9111 §3), and
//! which of its header fields must be left out of the stored copy.
//!
//! The decision is pure: it reads the request method and headers, the
//! response status and headers, and the already-parsed directives (for the
//! response, the output of
//! [`shared_cache_directives`](crate::cache_control::shared_cache_directives),
//! so a targeted field such as `CDN-Cache-Control` replaces
//! `Cache-Control`). The first rule that fails names the reason
//! ([`NotStorable`]), which feeds `Cache-Status: fwd=bypass` details, logs
//! and metrics.
//!
//! Choices beyond the letter of §3, all on the conservative side:
//!
//! - **Methods.** Only GET and HEAD responses are stored. RFC 9110 §9.3.3
//!   allows caching POST responses that carry explicit freshness and a
//!   matching `Content-Location`, but almost nothing can reuse them (only a
//!   later GET of that URI), so they are not stored. A stored HEAD response
//!   has no body: the caller must never answer a GET with it.
//! - **Partial content.** 206 responses and any response carrying
//!   `Content-Range` (e.g. a 416) are not stored yet; storing ranges and
//!   combining them (§3.3, §3.4) arrives with the disk tier. 304 is never
//!   stored itself: it updates a stored response (§4.3.4).
//! - **`Set-Cookie`** (CDN-style choice). A cookie is usually one user's
//!   state, yet §3 would let a shared cache store it. We do not store such
//!   a response unless the origin explicitly addressed shared caches: with
//!   `public`, `s-maxage`, a targeted field (RFC 9213) giving freshness, or
//!   `private="set-cookie"` (which marks just the cookie as private, the RFC
//!   way of sharing the rest, §5.2.2.7). Even then `Set-Cookie` is stripped
//!   from the stored copy (listed in [`Storable::strip_fields`]), so one
//!   user's cookie is never replayed to another.
//! - **`Vary: *`** responses are storable (§3 does not forbid it), but they
//!   never match a later request (§4.1); matching is `vary`'s job.
//! - **Site default TTL.** With one configured ([`StoreOptions`]), responses
//!   without explicit freshness become storable for every understood 2xx/3xx
//!   status (a "cache extension that allows it to be cached", §3), not only
//!   the heuristically cacheable ones; 4xx/5xx errors still need explicit
//!   freshness, so an origin outage is never cached for a default TTL.

use http::{HeaderMap, Method, StatusCode, header};

use crate::cache_control::{FieldScope, RequestDirectives, ResponseDirectives};

#[cfg(test)]
mod tests;

/// Status codes cacheable by default, i.e. heuristically (RFC 9110 §15.1).
pub const HEURISTICALLY_CACHEABLE: [u16; 12] =
    [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The request side of a store decision.
#[derive(Debug, Clone, Copy)]
pub struct StoreRequest<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Request header fields (`Authorization` is looked at).
    pub headers: &'a HeaderMap,
    /// The request's parsed `Cache-Control`.
    pub directives: &'a RequestDirectives,
}

/// The response side of a store decision.
#[derive(Debug, Clone, Copy)]
pub struct StoreResponse<'a> {
    /// Response status.
    pub status: StatusCode,
    /// Response header fields (`Expires`, `Set-Cookie`, `Content-Range`).
    pub headers: &'a HeaderMap,
    /// The directives this cache obeys (targeted field or `Cache-Control`).
    pub directives: &'a ResponseDirectives,
    /// Whether `directives` came from a targeted field (RFC 9213); then
    /// `Expires` is ignored (RFC 9213 §2.2) and its freshness counts as
    /// addressed to shared caches (for the `Set-Cookie` rule).
    pub has_targeted: bool,
}

/// Per-site options that widen what may be stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// A site default TTL is configured for responses without freshness
    /// information: it makes every understood 2xx/3xx status storable.
    pub cache_default_ttl: bool,
}

/// A positive store decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storable {
    /// Lower-cased header fields to remove before storing: those named by
    /// `private="…"` (§5.2.2.7) and `set-cookie` (see the module docs).
    pub strip_fields: Vec<String>,
    /// Which §3 condition allowed storing.
    pub basis: StoreBasis,
}

/// The §3 condition ("the response contains at least one of …") that
/// allowed a response to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBasis {
    /// `Expires`, `max-age` or `s-maxage` (from `Cache-Control` or a targeted field).
    ExplicitFreshness,
    /// `public` (§5.2.2.9).
    Public,
    /// A status cacheable by default (RFC 9110 §15.1): heuristic freshness.
    HeuristicStatus,
    /// The site's default TTL (a cache extension, §3).
    SiteDefaultTtl,
}

impl StoreBasis {
    /// A short stable name for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreBasis::ExplicitFreshness => "explicit",
            StoreBasis::Public => "public",
            StoreBasis::HeuristicStatus => "heuristic",
            StoreBasis::SiteDefaultTtl => "default-ttl",
        }
    }
}

/// Why a response is not stored; the first failing rule of §3 wins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    /// The request method is not one we store (only GET and HEAD).
    #[error("request method {0} is not cached (only GET and HEAD responses are stored)")]
    Method(Method),
    /// The request carried `Cache-Control: no-store` (§5.2.1.5).
    #[error("request has Cache-Control: no-store (RFC 9111 §5.2.1.5)")]
    RequestNoStore,
    /// An informational (1xx) status is not a final response (§3).
    #[error("status {0} is not final (RFC 9111 §3)")]
    NonFinalStatus(StatusCode),
    /// 206 or a `Content-Range` response; range storage is not supported yet.
    #[error("partial content (206 or Content-Range) is not stored (RFC 9111 §3.3)")]
    PartialContent,
    /// 304 updates a stored response instead of being stored (§4.3.4).
    #[error("304 Not Modified is not stored, it only updates a stored response (RFC 9111 §4.3.4)")]
    NotModified,
    /// `must-understand` with a status code this cache does not implement (§5.2.2.3).
    #[error(
        "must-understand with status {0}, which this cache does not understand (RFC 9111 §5.2.2.3)"
    )]
    MustUnderstand(StatusCode),
    /// The response carried `no-store` (§5.2.2.5).
    #[error("response has no-store (RFC 9111 §5.2.2.5)")]
    ResponseNoStore,
    /// The response is `private` for its whole content (§5.2.2.7).
    #[error("response is private (RFC 9111 §5.2.2.7)")]
    Private,
    /// The request had `Authorization` and the response did not allow
    /// sharing with `public`, `s-maxage` or `must-revalidate` (§3.5).
    #[error(
        "request has Authorization and the response lacks public, s-maxage or must-revalidate (RFC 9111 §3.5)"
    )]
    Authorization,
    /// The response sets a cookie and was not explicitly made shareable.
    #[error(
        "response has Set-Cookie without public, s-maxage, targeted freshness or private=\"set-cookie\""
    )]
    SetCookie,
    /// No explicit freshness, not `public`, and the status is not cacheable
    /// by default (§3, RFC 9110 §15.1).
    #[error(
        "no explicit freshness and status {0} is not cacheable by default (RFC 9111 §3, RFC 9110 §15.1)"
    )]
    NoFreshness(StatusCode),
}

impl NotStorable {
    /// A short stable name for logs, metrics labels and `Cache-Status` details.
    pub fn as_str(&self) -> &'static str {
        match self {
            NotStorable::Method(_) => "method",
            NotStorable::RequestNoStore => "request-no-store",
            NotStorable::NonFinalStatus(_) => "non-final-status",
            NotStorable::PartialContent => "partial-content",
            NotStorable::NotModified => "not-modified",
            NotStorable::MustUnderstand(_) => "must-understand",
            NotStorable::ResponseNoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::NoFreshness(_) => "no-freshness",
        }
    }
}

/// Whether `status` is cacheable by default (RFC 9110 §15.1), so heuristic
/// freshness (RFC 9111 §4.2.2) may apply to it.
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    HEURISTICALLY_CACHEABLE.contains(&status.as_u16())
}

/// Whether this cache understands and conforms to `status` (§3,
/// §5.2.2.3): the codes RFC 9110 §15 defines. We understand 206 too; it is
/// refused separately until range storage exists.
pub fn is_understood_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        100 | 101 | 200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Decide whether a shared cache may store `resp` to `req` (RFC 9111 §3).
pub fn storability(
    req: &StoreRequest<'_>,
    resp: &StoreResponse<'_>,
    opts: &StoreOptions,
) -> Result<Storable, NotStorable> {
    let d = resp.directives;

    // §3: "the request method is understood by the cache" and cacheable.
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(NotStorable::Method(req.method.clone()));
    }
    // §5.2.1.5: no part of the request or any response to it may be stored.
    if req.directives.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    // §3: "the response status code is final".
    if resp.status.is_informational() {
        return Err(NotStorable::NonFinalStatus(resp.status));
    }
    if resp.status == StatusCode::PARTIAL_CONTENT
        || resp.headers.contains_key(header::CONTENT_RANGE)
    {
        return Err(NotStorable::PartialContent);
    }
    if resp.status == StatusCode::NOT_MODIFIED {
        return Err(NotStorable::NotModified);
    }
    // §3 / §5.2.2.3: with must-understand the status must be understood;
    // then no-store is ignored ("SHOULD ignore the no-store directive").
    let understood = is_understood_status(resp.status);
    if d.must_understand && !understood {
        return Err(NotStorable::MustUnderstand(resp.status));
    }
    if d.no_store && !(d.must_understand && understood) {
        return Err(NotStorable::ResponseNoStore);
    }
    // §3: "if the cache is shared: the private response directive is either
    // not present or allows a shared cache to store a modified response".
    let mut strip_fields = match &d.private {
        FieldScope::All => return Err(NotStorable::Private),
        FieldScope::Fields(fields) => fields.clone(),
        FieldScope::Absent => Vec::new(),
    };
    // §3.5: a shared cache stores a response to an authorized request only
    // with must-revalidate, public or s-maxage.
    if req.headers.contains_key(header::AUTHORIZATION)
        && !(d.must_revalidate || d.public || d.s_maxage.is_some())
    {
        return Err(NotStorable::Authorization);
    }
    if resp.headers.contains_key(header::SET_COOKIE) {
        let addressed_to_shared = d.public
            || d.s_maxage.is_some()
            || (resp.has_targeted && d.max_age.is_some())
            || d.private.covers(header::SET_COOKIE.as_str());
        if !addressed_to_shared {
            return Err(NotStorable::SetCookie);
        }
        let name = header::SET_COOKIE.as_str().to_owned();
        if !strip_fields.contains(&name) {
            strip_fields.push(name);
        }
    }
    // §3: "the response contains at least one of …" (its `private`
    // alternative is for non-shared caches only; the site default TTL is
    // our "cache extension that allows it to be cached").
    let expires = !resp.has_targeted && resp.headers.contains_key(header::EXPIRES);
    let basis = if expires || d.max_age.is_some() || d.s_maxage.is_some() {
        StoreBasis::ExplicitFreshness
    } else if d.public {
        StoreBasis::Public
    } else if is_heuristically_cacheable(resp.status) {
        StoreBasis::HeuristicStatus
    } else if opts.cache_default_ttl
        && understood
        && (resp.status.is_success() || resp.status.is_redirection())
    {
        StoreBasis::SiteDefaultTtl
    } else {
        return Err(NotStorable::NoFreshness(resp.status));
    };
    Ok(Storable {
        strip_fields,
        basis,
    })
}
