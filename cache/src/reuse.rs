//! May a stored response answer this request, and how (RFC 9111 §4, §4.2,
//! §4.2.4, §5.2; RFC 5861)?
//!
//! [`decide`] applies, in order:
//!
//! 1. Response `no-cache` (§5.2.2.4): validate every time. The field-named
//!    form (`no-cache="set-cookie"`) is treated like the bare one, as the RFC
//!    notes most caches do; stripping the named fields instead is a
//!    possible later refinement.
//! 2. Request `no-cache` (§5.2.1.4) and request `max-age` (§5.2.1.1, the age
//!    must be `<=` it): validate. A per-site option ignores request
//!    `no-cache` and `max-age=0` — the browser reload — as CDNs commonly
//!    do, so a reload storm does not reach the origin. A non-zero request
//!    `max-age` is always honoured.
//! 3. Request `min-fresh` (§5.2.1.3): the remaining freshness must be at
//!    least that; otherwise validate (this also refuses stale responses,
//!    whatever `max-stale` says: conflicting directives resolve to the most
//!    restrictive, §4.2.1).
//! 4. Fresh (`lifetime > age`, §4.2): serve.
//! 5. Stale. A shared cache must not serve it without validation when the
//!    response has `must-revalidate` (§5.2.2.2), `proxy-revalidate`
//!    (§5.2.2.8) or `s-maxage` (§5.2.2.10, which implies
//!    `proxy-revalidate`), per §4.2.4. Otherwise, in order:
//!    `stale-while-revalidate` within its window (RFC 5861 §3): serve now
//!    and refresh in the background; the request's `max-stale` (§5.2.1.2)
//!    within its bound: serve without refreshing; else validate.
//!
//! Request `only-if-cached` (§5.2.1.7) turns every "validate" into "answer
//! 504": the client forbade contacting the origin. On a miss the caller
//! answers 504 too ([`only_if_cached`]).
//!
//! [`may_serve_stale_on_error`] is the separate question asked when the
//! origin fails (5xx, connect error, timeout) during validation or refresh.
//!
//! Trade-off: RFC 5861 says `stale-if-error` applies "regardless of other
//! freshness information", but the later RFC 9111 §4.2.4 forbids
//! generating a stale response whenever `no-cache`, `must-revalidate`,
//! `proxy-revalidate` or an applicable `s-maxage` is present, and §5.2.2.2
//! says a cache must never ignore `must-revalidate`, even when
//! disconnected. We follow RFC 9111: those directives disable both
//! `stale-while-revalidate` and `stale-if-error`, so origins that combine
//! `s-maxage` with them (common in CDN setups) get strict revalidation. Use
//! `CDN-Cache-Control: max-age=…` (RFC 9213) to get a shared-cache lifetime
//! with stale serving.

use std::time::Duration;

use crate::cache_control::{MaxStale, RequestDirectives, ResponseDirectives};

/// Per-site reuse knobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReuseOptions {
    /// Ignore request `no-cache` and `max-age=0` (default `false`: follow
    /// RFC 9111 §5.2.1.1 and §5.2.1.4).
    pub ignore_client_no_cache: bool,
}

/// The freshness state of one stored response at the time of the request.
#[derive(Debug, Clone, Copy)]
pub struct StoredFreshness<'a> {
    /// Its freshness lifetime ([`crate::freshness::Lifetime::ttl`]).
    pub freshness_lifetime: Duration,
    /// Its current age ([`crate::age::current_age`]).
    pub current_age: Duration,
    /// The directives in force for it (targeted field or Cache-Control).
    pub directives: &'a ResponseDirectives,
}

impl StoredFreshness<'_> {
    /// How far past its lifetime the response is; `None` while fresh (§4.2).
    pub fn staleness(&self) -> Option<Duration> {
        (self.current_age >= self.freshness_lifetime)
            .then(|| self.current_age - self.freshness_lifetime)
    }

    /// Whether §4.2.4 forbids serving it stale without validation.
    fn revalidation_required(&self) -> bool {
        let d = self.directives;
        d.must_revalidate || d.proxy_revalidate || d.s_maxage.is_some() || d.no_cache.is_present()
    }
}

/// The decision for one request against one stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Fresh and acceptable to the request: serve it.
    Fresh,
    /// Stale within `stale-while-revalidate`: serve it now and refresh it
    /// in the background (RFC 5861 §3).
    StaleWhileRevalidate {
        /// How far past its lifetime it is.
        staleness: Duration,
    },
    /// Stale, but the request's `max-stale` accepts it (§5.2.1.2): serve it
    /// without contacting the origin.
    StaleAccepted {
        /// How far past its lifetime it is.
        staleness: Duration,
    },
    /// Send a conditional request upstream before using it (§4.3).
    MustValidate {
        /// Why it cannot be served as is.
        reason: ValidateReason,
    },
    /// The request said `only-if-cached` and the stored response cannot be
    /// used without the origin: answer 504 (§5.2.1.7).
    GatewayTimeout,
}

/// Why a stored response must be validated before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidateReason {
    /// Stale, and no directive permits serving it stale.
    Stale,
    /// Stale, and `must-revalidate`, `proxy-revalidate` or `s-maxage`
    /// forbids serving it stale (§4.2.4).
    RevalidationRequired,
    /// The response carries `no-cache` (§5.2.2.4).
    ResponseNoCache,
    /// The request carries `no-cache` (§5.2.1.4).
    RequestNoCache,
    /// The response is older than the request's `max-age` (§5.2.1.1).
    RequestMaxAge,
    /// The response is not fresh for the request's `min-fresh` (§5.2.1.3).
    RequestMinFresh,
}

impl ValidateReason {
    /// The `fwd` parameter of `Cache-Status` (RFC 9211 §2.2): `request` when
    /// the request's directives refused a usable response, else `stale`.
    pub fn cache_status_fwd(self) -> &'static str {
        match self {
            Self::RequestNoCache | Self::RequestMaxAge | Self::RequestMinFresh => "request",
            Self::Stale | Self::RevalidationRequired | Self::ResponseNoCache => "stale",
        }
    }
}

/// Decides whether and how `stored` may answer a request with `request`'s
/// directives (RFC 9111 §4.2, §4.2.4, §5.2; RFC 5861 §3).
pub fn decide(
    stored: &StoredFreshness<'_>,
    request: &RequestDirectives,
    options: &ReuseOptions,
) -> Reuse {
    let decision = decide_ignoring_only_if_cached(stored, request, options);
    match decision {
        Reuse::MustValidate { .. } if request.only_if_cached => Reuse::GatewayTimeout,
        other => other,
    }
}

/// Whether a request must be answered 504 when nothing usable is stored
/// (`only-if-cached`, RFC 9111 §5.2.1.7).
pub fn only_if_cached(request: &RequestDirectives) -> bool {
    request.only_if_cached
}

/// Whether `stored` may be served because the origin failed (5xx,
/// connect failure, timeout) while validating or refreshing it.
///
/// - Never with response `no-cache` (§5.2.2.4: no use without validation).
/// - A still-fresh response (the trip upstream was the client's
///   `no-cache`/`max-age`/`min-fresh` preference) may be served: those
///   request directives state preferences, and nothing is stale.
/// - Never a stale one with `must-revalidate`, `proxy-revalidate` or
///   `s-maxage` (RFC 9111 §4.2.4, §5.2.2.2: the caller answers 504 or the
///   origin's error instead).
/// - A stale one otherwise only within `stale-if-error` (RFC 5861 §4) of either the
///   response or the request; either party's permission suffices
///   (§4.2.4: "explicitly permitted by the client or origin server"), so
///   the larger window applies. The window is inclusive ("up to").
pub fn may_serve_stale_on_error(stored: &StoredFreshness<'_>, request: &RequestDirectives) -> bool {
    if stored.directives.no_cache.is_present() {
        return false;
    }
    let Some(staleness) = stored.staleness() else {
        return true;
    };
    if stored.revalidation_required() {
        return false;
    }
    let window = stored.directives.stale_if_error.max(request.stale_if_error);
    window.is_some_and(|secs| staleness <= Duration::from_secs(secs))
}

fn decide_ignoring_only_if_cached(
    stored: &StoredFreshness<'_>,
    request: &RequestDirectives,
    options: &ReuseOptions,
) -> Reuse {
    let must_validate = |reason| Reuse::MustValidate { reason };
    if stored.directives.no_cache.is_present() {
        return must_validate(ValidateReason::ResponseNoCache);
    }
    let ignore_client = options.ignore_client_no_cache;
    if request.no_cache && !ignore_client {
        return must_validate(ValidateReason::RequestNoCache);
    }
    if let Some(max_age) = request.max_age {
        let ignored = ignore_client && max_age == 0;
        if !ignored && stored.current_age > Duration::from_secs(max_age) {
            return must_validate(ValidateReason::RequestMaxAge);
        }
    }
    if let Some(min_fresh) = request.min_fresh {
        let needed = stored
            .current_age
            .saturating_add(Duration::from_secs(min_fresh));
        if stored.freshness_lifetime < needed {
            return must_validate(ValidateReason::RequestMinFresh);
        }
    }
    let Some(staleness) = stored.staleness() else {
        return Reuse::Fresh;
    };
    if stored.revalidation_required() {
        return must_validate(ValidateReason::RevalidationRequired);
    }
    let within = |secs: u64| staleness <= Duration::from_secs(secs);
    if stored.directives.stale_while_revalidate.is_some_and(within) {
        return Reuse::StaleWhileRevalidate { staleness };
    }
    let accepted = match request.max_stale {
        Some(MaxStale::Any) => true,
        Some(MaxStale::Seconds(secs)) => within(secs),
        None => false,
    };
    if accepted {
        return Reuse::StaleAccepted { staleness };
    }
    must_validate(ValidateReason::Stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_control::FieldScope;

    fn resp(f: impl FnOnce(&mut ResponseDirectives)) -> ResponseDirectives {
        let mut d = ResponseDirectives::default();
        f(&mut d);
        d
    }

    fn req(f: impl FnOnce(&mut RequestDirectives)) -> RequestDirectives {
        let mut d = RequestDirectives::default();
        f(&mut d);
        d
    }

    /// One row: lifetime and age in seconds (ages come from the fake clock
    /// of `age::current_age`; here they are given directly).
    struct Case {
        name: &'static str,
        section: &'static str,
        lifetime: u64,
        age: u64,
        response: ResponseDirectives,
        request: RequestDirectives,
        ignore_client_no_cache: bool,
        expect: Reuse,
    }

    impl Default for Case {
        fn default() -> Self {
            Self {
                name: "",
                section: "",
                lifetime: 60,
                age: 0,
                response: ResponseDirectives::default(),
                request: RequestDirectives::default(),
                ignore_client_no_cache: false,
                expect: Reuse::Fresh,
            }
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn decide_table() {
        use ValidateReason as V;
        let validate = |reason| Reuse::MustValidate { reason };
        let swr = |s| Reuse::StaleWhileRevalidate { staleness: secs(s) };
        let accepted = |s| Reuse::StaleAccepted { staleness: secs(s) };
        #[rustfmt::skip]
        let cases = [
            Case { name: "fresh", section: "RFC 9111 §4.2",
                age: 59, ..Case::default() },
            Case { name: "stale at age == lifetime", section: "RFC 9111 §4.2",
                age: 60, expect: validate(V::Stale), ..Case::default() },
            Case { name: "zero lifetime is always stale", section: "RFC 9111 §4.2.1",
                lifetime: 0, age: 0, expect: validate(V::Stale), ..Case::default() },
            Case { name: "response no-cache validates even when fresh", section: "RFC 9111 §5.2.2.4",
                response: resp(|d| d.no_cache = FieldScope::All), expect: validate(V::ResponseNoCache),
                ..Case::default() },
            Case { name: "field-named no-cache treated as bare", section: "RFC 9111 §5.2.2.4",
                response: resp(|d| d.no_cache = FieldScope::Fields(vec!["set-cookie".into()])),
                expect: validate(V::ResponseNoCache), ..Case::default() },
            Case { name: "response no-cache is not overridden by the site option", section: "RFC 9111 §5.2.2.4",
                response: resp(|d| d.no_cache = FieldScope::All), ignore_client_no_cache: true,
                expect: validate(V::ResponseNoCache), ..Case::default() },
            Case { name: "request no-cache validates a fresh response", section: "RFC 9111 §5.2.1.4",
                request: req(|r| r.no_cache = true), expect: validate(V::RequestNoCache), ..Case::default() },
            Case { name: "request no-cache ignored by site option", section: "RFC 9111 §5.2.1.4",
                request: req(|r| r.no_cache = true), ignore_client_no_cache: true, ..Case::default() },
            Case { name: "request max-age=0 validates an aged response", section: "RFC 9111 §5.2.1.1",
                age: 1, request: req(|r| r.max_age = Some(0)), expect: validate(V::RequestMaxAge),
                ..Case::default() },
            Case { name: "request max-age=0 ignored by site option", section: "RFC 9111 §5.2.1.1",
                age: 1, request: req(|r| r.max_age = Some(0)), ignore_client_no_cache: true, ..Case::default() },
            Case { name: "request max-age=10 honoured despite site option", section: "RFC 9111 §5.2.1.1",
                age: 11, request: req(|r| r.max_age = Some(10)), ignore_client_no_cache: true,
                expect: validate(V::RequestMaxAge), ..Case::default() },
            Case { name: "request max-age: age equal to it is acceptable", section: "RFC 9111 §5.2.1.1",
                age: 10, request: req(|r| r.max_age = Some(10)), ..Case::default() },
            Case { name: "request max-age with max-stale still bounds the age", section: "RFC 9111 §5.2.1.1",
                age: 90, request: req(|r| { r.max_age = Some(80); r.max_stale = Some(MaxStale::Any) }),
                expect: validate(V::RequestMaxAge), ..Case::default() },
            Case { name: "request max-age with max-stale accepts stale within both", section: "RFC 9111 §5.2.1.1",
                age: 70, request: req(|r| { r.max_age = Some(80); r.max_stale = Some(MaxStale::Any) }),
                expect: accepted(10), ..Case::default() },
            Case { name: "min-fresh satisfied", section: "RFC 9111 §5.2.1.3",
                age: 30, request: req(|r| r.min_fresh = Some(30)), ..Case::default() },
            Case { name: "min-fresh not satisfied", section: "RFC 9111 §5.2.1.3",
                age: 31, request: req(|r| r.min_fresh = Some(30)), expect: validate(V::RequestMinFresh),
                ..Case::default() },
            Case { name: "min-fresh beats max-stale (most restrictive wins)", section: "RFC 9111 §4.2.1",
                age: 70, request: req(|r| { r.min_fresh = Some(1); r.max_stale = Some(MaxStale::Any) }),
                expect: validate(V::RequestMinFresh), ..Case::default() },
            Case { name: "max-stale (any) serves stale", section: "RFC 9111 §5.2.1.2",
                age: 1_000, request: req(|r| r.max_stale = Some(MaxStale::Any)), expect: accepted(940),
                ..Case::default() },
            Case { name: "max-stale=30 within bound", section: "RFC 9111 §5.2.1.2",
                age: 90, request: req(|r| r.max_stale = Some(MaxStale::Seconds(30))), expect: accepted(30),
                ..Case::default() },
            Case { name: "max-stale=30 exceeded", section: "RFC 9111 §5.2.1.2",
                age: 91, request: req(|r| r.max_stale = Some(MaxStale::Seconds(30))), expect: validate(V::Stale),
                ..Case::default() },
            Case { name: "max-stale cannot override must-revalidate", section: "RFC 9111 §5.2.2.2",
                age: 61, response: resp(|d| d.must_revalidate = true),
                request: req(|r| r.max_stale = Some(MaxStale::Any)), expect: validate(V::RevalidationRequired),
                ..Case::default() },
            Case { name: "max-stale cannot override proxy-revalidate in a shared cache", section: "RFC 9111 §5.2.2.8",
                age: 61, response: resp(|d| d.proxy_revalidate = true),
                request: req(|r| r.max_stale = Some(MaxStale::Any)), expect: validate(V::RevalidationRequired),
                ..Case::default() },
            Case { name: "s-maxage implies proxy-revalidate", section: "RFC 9111 §5.2.2.10",
                age: 61, response: resp(|d| d.s_maxage = Some(60)),
                request: req(|r| r.max_stale = Some(MaxStale::Any)), expect: validate(V::RevalidationRequired),
                ..Case::default() },
            Case { name: "must-revalidate does not affect a fresh response", section: "RFC 9111 §5.2.2.2",
                age: 59, response: resp(|d| d.must_revalidate = true), ..Case::default() },
            Case { name: "SWR within window", section: "RFC 5861 §3",
                age: 70, response: resp(|d| d.stale_while_revalidate = Some(30)), expect: swr(10),
                ..Case::default() },
            Case { name: "SWR window is inclusive", section: "RFC 5861 §3",
                age: 90, response: resp(|d| d.stale_while_revalidate = Some(30)), expect: swr(30),
                ..Case::default() },
            Case { name: "SWR window exceeded", section: "RFC 5861 §3",
                age: 91, response: resp(|d| d.stale_while_revalidate = Some(30)), expect: validate(V::Stale),
                ..Case::default() },
            Case { name: "SWR window exceeded but max-stale accepts", section: "RFC 9111 §5.2.1.2",
                age: 91, response: resp(|d| d.stale_while_revalidate = Some(30)),
                request: req(|r| r.max_stale = Some(MaxStale::Any)), expect: accepted(31), ..Case::default() },
            Case { name: "SWR preferred over max-stale so the entry gets refreshed", section: "RFC 5861 §3",
                age: 70, response: resp(|d| d.stale_while_revalidate = Some(30)),
                request: req(|r| r.max_stale = Some(MaxStale::Any)), expect: swr(10), ..Case::default() },
            Case { name: "SWR disabled by must-revalidate", section: "RFC 9111 §4.2.4",
                age: 70, response: resp(|d| { d.stale_while_revalidate = Some(30); d.must_revalidate = true }),
                expect: validate(V::RevalidationRequired), ..Case::default() },
            Case { name: "SWR disabled by s-maxage", section: "RFC 9111 §4.2.4",
                age: 70, response: resp(|d| { d.stale_while_revalidate = Some(30); d.s_maxage = Some(60) }),
                expect: validate(V::RevalidationRequired), ..Case::default() },
            Case { name: "SWR disabled by response no-cache", section: "RFC 9111 §4.2.4",
                age: 70, response: resp(|d| { d.stale_while_revalidate = Some(30); d.no_cache = FieldScope::All }),
                expect: validate(V::ResponseNoCache), ..Case::default() },
            Case { name: "SWR does not override request no-cache", section: "RFC 9111 §5.2.1.4",
                age: 70, response: resp(|d| d.stale_while_revalidate = Some(30)),
                request: req(|r| r.no_cache = true), expect: validate(V::RequestNoCache), ..Case::default() },
            Case { name: "only-if-cached with a fresh response serves it", section: "RFC 9111 §5.2.1.7",
                request: req(|r| r.only_if_cached = true), ..Case::default() },
            Case { name: "only-if-cached with a stale response answers 504", section: "RFC 9111 §5.2.1.7",
                age: 61, request: req(|r| r.only_if_cached = true), expect: Reuse::GatewayTimeout,
                ..Case::default() },
            Case { name: "only-if-cached with max-stale serves stale", section: "RFC 9111 §5.2.1.7",
                age: 61, request: req(|r| { r.only_if_cached = true; r.max_stale = Some(MaxStale::Any) }),
                expect: accepted(1), ..Case::default() },
            Case { name: "only-if-cached and must-revalidate answers 504", section: "RFC 9111 §5.2.2.2",
                age: 61, response: resp(|d| d.must_revalidate = true),
                request: req(|r| { r.only_if_cached = true; r.max_stale = Some(MaxStale::Any) }),
                expect: Reuse::GatewayTimeout, ..Case::default() },
            Case { name: "huge ages and bounds saturate", section: "RFC 9111 §1.2.2",
                lifetime: u64::MAX, age: u64::MAX,
                request: req(|r| { r.min_fresh = Some(u64::MAX); r.max_stale = Some(MaxStale::Seconds(u64::MAX)) }),
                expect: validate(V::RequestMinFresh), ..Case::default() },
        ];
        for c in cases {
            let stored = StoredFreshness {
                freshness_lifetime: secs(c.lifetime),
                current_age: secs(c.age),
                directives: &c.response,
            };
            let options = ReuseOptions {
                ignore_client_no_cache: c.ignore_client_no_cache,
            };
            assert_eq!(
                decide(&stored, &c.request, &options),
                c.expect,
                "{} ({})",
                c.name,
                c.section
            );
        }
    }

    #[test]
    fn stale_on_error_table() {
        #[rustfmt::skip]
        let cases: [(&str, &str, u64, ResponseDirectives, RequestDirectives, bool); 14] = [
            ("stale without any permission", "RFC 9111 §4.2.4",
                61, resp(|_| {}), req(|_| {}), false),
            ("response stale-if-error within window", "RFC 5861 §4",
                90, resp(|d| d.stale_if_error = Some(30)), req(|_| {}), true),
            ("response stale-if-error past window", "RFC 5861 §4",
                91, resp(|d| d.stale_if_error = Some(30)), req(|_| {}), false),
            ("request stale-if-error grants a window", "RFC 5861 §4",
                90, resp(|_| {}), req(|r| r.stale_if_error = Some(60)), true),
            ("larger of request and response windows applies", "RFC 9111 §4.2.4",
                100, resp(|d| d.stale_if_error = Some(60)), req(|r| r.stale_if_error = Some(10)), true),
            ("stale-if-error=0 allows only staleness 0", "RFC 5861 §4",
                60, resp(|d| d.stale_if_error = Some(0)), req(|_| {}), true),
            ("SWR alone does not permit serving on error", "RFC 5861 §3",
                70, resp(|d| d.stale_while_revalidate = Some(30)), req(|_| {}), false),
            ("must-revalidate forbids stale-if-error", "RFC 9111 §5.2.2.2",
                61, resp(|d| { d.stale_if_error = Some(300); d.must_revalidate = true }), req(|_| {}), false),
            ("proxy-revalidate forbids stale-if-error", "RFC 9111 §5.2.2.8",
                61, resp(|d| { d.stale_if_error = Some(300); d.proxy_revalidate = true }),
                req(|r| r.stale_if_error = Some(300)), false),
            ("s-maxage forbids stale-if-error", "RFC 9111 §5.2.2.10",
                61, resp(|d| { d.stale_if_error = Some(300); d.s_maxage = Some(60) }), req(|_| {}), false),
            ("no-cache forbids stale-if-error", "RFC 9111 §4.2.4",
                61, resp(|d| { d.stale_if_error = Some(300); d.no_cache = FieldScope::All }), req(|_| {}), false),
            ("a fresh response may be served when the client's no-cache trip fails", "RFC 9111 §5.2.1.4",
                10, resp(|_| {}), req(|r| r.no_cache = true), true),
            ("must-revalidate does not restrict a fresh response", "RFC 9111 §5.2.2.2",
                10, resp(|d| d.must_revalidate = true), req(|r| r.max_age = Some(0)), true),
            ("no-cache forbids serving even a fresh response on error", "RFC 9111 §5.2.2.4",
                10, resp(|d| d.no_cache = FieldScope::All), req(|_| {}), false),
        ];
        for (name, section, age, response, request, expect) in cases {
            let stored = StoredFreshness {
                freshness_lifetime: secs(60),
                current_age: secs(age),
                directives: &response,
            };
            assert_eq!(
                may_serve_stale_on_error(&stored, &request),
                expect,
                "{name} ({section})"
            );
        }
    }

    #[test]
    fn only_if_cached_on_miss_and_fwd_mapping() {
        // RFC 9111 §5.2.1.7: no stored response → 504.
        assert!(only_if_cached(&req(|r| r.only_if_cached = true)));
        assert!(!only_if_cached(&RequestDirectives::default()));
        // RFC 9211 §2.2: fwd=request vs fwd=stale.
        assert_eq!(ValidateReason::RequestMaxAge.cache_status_fwd(), "request");
        assert_eq!(
            ValidateReason::RevalidationRequired.cache_status_fwd(),
            "stale"
        );
    }
}
