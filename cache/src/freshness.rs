//! Freshness lifetime of a response in a shared cache (RFC 9111 §4.2.1,
//! §4.2.2, RFC 9213).
//!
//! The first rule that applies wins:
//!
//! 1. A targeted field (`CDN-Cache-Control` or a configured name, RFC 9213
//!    §2.1): when the caller chose one, its directives replace
//!    `Cache-Control` *and* `Expires` entirely. Inside it, `s-maxage` then
//!    `max-age` count, with the same semantics as in `Cache-Control`.
//! 2. `s-maxage` (§5.2.2.10; a shared cache then ignores `Expires`, §5.3).
//! 3. `max-age` (§5.2.2.1; `Expires` is then ignored, §5.3).
//! 4. `Expires` − `Date` (§4.2.1), with the receipt time standing in for a
//!    missing `Date` (RFC 9110 §6.6.1). An invalid `Expires`, notably `0`,
//!    means "already expired" (§5.3): lifetime zero.
//! 5. Otherwise no explicit expiration time exists, and a heuristic may be
//!    used (§4.2.2), but only for heuristically cacheable status codes
//!    (RFC 9110 §15.1) or responses marked `public`:
//!    - the site's default TTL if one is configured (an operator's choice
//!      of heuristic; it obeys the same status rule so a `500` without
//!      freshness information is never kept for the default TTL), else
//!    - a fraction (10% by default, the RFC's "typical setting") of
//!      `Date` − `Last-Modified`, capped at [`DEFAULT_HEURISTIC_MAX`].
//!
//! A site's maximum TTL finally caps whatever was chosen, explicit or not;
//! it only shortens lifetimes, which §4.2.1 allows a cache to do.
//!
//! Duplicate directives or `Expires` lines are the parser's business: it
//! keeps the first occurrence (§4.2.1), and [`parse_expires`] does the same.
//! `no-cache`, `must-revalidate` and friends do not change the lifetime;
//! they decide reuse (see [`crate::reuse`]).

use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::age::parse_http_date;
use crate::cache_control::ResponseDirectives;

/// "A typical setting of this fraction might be 10%" (RFC 9111 §4.2.2).
pub const DEFAULT_HEURISTIC_PERCENT: u32 = 10;

/// One day: the heuristic cap Apache Traffic Server ships with
/// (`heuristic_max_lifetime`), and the point past which RFC 7234 §4.2.2
/// required a warning for heuristic freshness. A file unchanged for a year
/// should not be served unvalidated for 36 days.
pub const DEFAULT_HEURISTIC_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// Where a freshness lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifetimeSource {
    /// `s-maxage` or `max-age` of a targeted field (RFC 9213).
    Targeted,
    /// `s-maxage` of Cache-Control (§5.2.2.10).
    SMaxAge,
    /// `max-age` of Cache-Control (§5.2.2.1).
    MaxAge,
    /// `Expires` − `Date` (§5.3); zero for an invalid `Expires`.
    Expires,
    /// A fraction of `Date` − `Last-Modified` (§4.2.2).
    Heuristic,
    /// The site's configured default TTL, used in place of the heuristic.
    DefaultTtl,
    /// No freshness information and no heuristic applies: always stale.
    None,
}

impl LifetimeSource {
    /// Whether the response carried an explicit expiration time (§4.2.1).
    pub fn is_explicit(self) -> bool {
        matches!(
            self,
            Self::Targeted | Self::SMaxAge | Self::MaxAge | Self::Expires
        )
    }
}

/// A freshness lifetime and the rule that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// The freshness lifetime, after the site's maximum TTL cap.
    pub ttl: Duration,
    /// The rule that produced it.
    pub source: LifetimeSource,
}

impl Lifetime {
    /// `freshness_lifetime > current_age` (§4.2).
    pub fn is_fresh(&self, current_age: Duration) -> bool {
        self.ttl > current_age
    }

    /// Remaining freshness in whole seconds, negative once stale: the `ttl`
    /// parameter of `Cache-Status` (RFC 9211 §2.5).
    pub fn remaining_secs(&self, current_age: Duration) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        secs(self.ttl).saturating_sub(secs(current_age))
    }
}

/// What the freshness rules read from a stored response.
#[derive(Debug, Clone, Copy)]
pub struct FreshnessInput<'a> {
    /// The response's status code.
    pub status: StatusCode,
    /// The directives in force: the targeted field's if one was chosen,
    /// otherwise Cache-Control's.
    pub directives: &'a ResponseDirectives,
    /// Whether `directives` came from a targeted field (RFC 9213), in which
    /// case `Expires` is ignored.
    pub targeted: bool,
    /// The parsed `Date`; `None` when absent or invalid.
    pub date: Option<SystemTime>,
    /// `None`: no `Expires`; `Some(None)`: present but invalid (e.g. `0`);
    /// `Some(Some(t))`: a valid date. See [`parse_expires`].
    pub expires: Option<Option<SystemTime>>,
    /// The parsed `Last-Modified`; `None` when absent or invalid.
    pub last_modified: Option<SystemTime>,
    /// Our clock when the response was received.
    pub response_time: SystemTime,
}

/// Per-site knobs for the lifetime computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshnessOptions {
    /// Heuristic lifetime as a percentage of `Date` − `Last-Modified`.
    pub heuristic_percent: u32,
    /// Upper bound on a heuristic lifetime.
    pub heuristic_max: Duration,
    /// Lifetime for responses without explicit freshness, used instead of
    /// the Last-Modified heuristic when set (off by default).
    pub default_ttl: Option<Duration>,
    /// Cap on every lifetime, explicit or heuristic (off by default).
    pub max_ttl: Option<Duration>,
}

impl Default for FreshnessOptions {
    fn default() -> Self {
        Self {
            heuristic_percent: DEFAULT_HEURISTIC_PERCENT,
            heuristic_max: DEFAULT_HEURISTIC_MAX,
            default_ttl: None,
            max_ttl: None,
        }
    }
}

/// Status codes a cache may assign heuristic freshness to (RFC 9110 §15.1).
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Parses `Expires` field values for [`FreshnessInput::expires`]: `None`
/// when absent, else the first line, invalid ones as `Some(None)` (§5.3).
pub fn parse_expires<I>(values: I) -> Option<Option<SystemTime>>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    values.into_iter().next().map(parse_http_date)
}

/// The freshness lifetime of a response in a shared cache (§4.2.1).
pub fn freshness_lifetime(input: &FreshnessInput<'_>, options: &FreshnessOptions) -> Lifetime {
    let (ttl, source) = explicit_lifetime(input)
        .or_else(|| heuristic_lifetime(input, options))
        .unwrap_or((Duration::ZERO, LifetimeSource::None));
    let ttl = match options.max_ttl {
        Some(cap) => ttl.min(cap),
        None => ttl,
    };
    Lifetime { ttl, source }
}

/// Rules 1–4: a lifetime the response states itself.
fn explicit_lifetime(input: &FreshnessInput<'_>) -> Option<(Duration, LifetimeSource)> {
    let d = input.directives;
    if input.targeted {
        // RFC 9213 §2.1: the targeted field replaces Cache-Control and Expires.
        return d
            .s_maxage
            .or(d.max_age)
            .map(|secs| (Duration::from_secs(secs), LifetimeSource::Targeted));
    }
    if let Some(secs) = d.s_maxage {
        return Some((Duration::from_secs(secs), LifetimeSource::SMaxAge));
    }
    if let Some(secs) = d.max_age {
        return Some((Duration::from_secs(secs), LifetimeSource::MaxAge));
    }
    let expires = input.expires?;
    // §5.3: an invalid Expires is a time in the past; §4.2.1: an Expires at
    // or before Date gives no freshness at all.
    let ttl = expires.map_or(Duration::ZERO, |expires| {
        let date = input.date.unwrap_or(input.response_time);
        expires.duration_since(date).unwrap_or(Duration::ZERO)
    });
    Some((ttl, LifetimeSource::Expires))
}

/// Rule 5: the default TTL or the Last-Modified heuristic, where allowed.
fn heuristic_lifetime(
    input: &FreshnessInput<'_>,
    options: &FreshnessOptions,
) -> Option<(Duration, LifetimeSource)> {
    // §4.2.2: only for heuristically cacheable statuses, unless `public`.
    if !is_heuristically_cacheable(input.status) && !input.directives.public {
        return None;
    }
    if let Some(ttl) = options.default_ttl {
        return Some((ttl, LifetimeSource::DefaultTtl));
    }
    let last_modified = input.last_modified?;
    let date = input.date.unwrap_or(input.response_time);
    // A Last-Modified after Date (clock skew or a lying origin) means the
    // resource just changed: no heuristic freshness.
    let unchanged_for = date.duration_since(last_modified).unwrap_or(Duration::ZERO);
    let secs = unchanged_for
        .as_secs()
        .saturating_mul(u64::from(options.heuristic_percent))
        / 100;
    let ttl = Duration::from_secs(secs).min(options.heuristic_max);
    Some((ttl, LifetimeSource::Heuristic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::t;

    const DAY: u64 = 86_400;

    /// One row: a response description and the expected lifetime.
    struct Case {
        name: &'static str,
        section: &'static str,
        status: u16,
        directives: ResponseDirectives,
        targeted: bool,
        date: Option<i64>,
        expires: Option<Option<i64>>,
        last_modified: Option<i64>,
        options: FreshnessOptions,
        expect_secs: u64,
        expect_source: LifetimeSource,
    }

    impl Default for Case {
        fn default() -> Self {
            Self {
                name: "",
                section: "",
                status: 200,
                directives: ResponseDirectives::default(),
                targeted: false,
                date: Some(0),
                expires: None,
                last_modified: None,
                options: FreshnessOptions::default(),
                expect_secs: 0,
                expect_source: LifetimeSource::None,
            }
        }
    }

    fn cc(f: impl FnOnce(&mut ResponseDirectives)) -> ResponseDirectives {
        let mut d = ResponseDirectives::default();
        f(&mut d);
        d
    }

    fn opts(f: impl FnOnce(&mut FreshnessOptions)) -> FreshnessOptions {
        let mut o = FreshnessOptions::default();
        f(&mut o);
        o
    }

    #[test]
    fn freshness_lifetime_table() {
        use LifetimeSource as S;
        #[rustfmt::skip]
        let cases = [
            Case { name: "targeted max-age beats s-maxage, max-age and Expires", section: "RFC 9213 §2.1",
                targeted: true, directives: cc(|d| d.max_age = Some(600)), expires: Some(Some(10)), expect_secs: 600,
                expect_source: S::Targeted, ..Case::default() },
            Case { name: "targeted s-maxage beats targeted max-age", section: "RFC 9213 §2.1",
                targeted: true, directives: cc(|d| { d.max_age = Some(600); d.s_maxage = Some(60) }), expect_secs: 60,
                expect_source: S::Targeted, ..Case::default() },
            Case { name: "targeted without max-age: Expires ignored, heuristic", section: "RFC 9213 §2.1",
                targeted: true, directives: cc(|d| d.public = true), expires: Some(Some(3_600)),
                last_modified: Some(-1_000), expect_secs: 100, expect_source: S::Heuristic, ..Case::default() },
            Case { name: "s-maxage beats max-age in a shared cache", section: "RFC 9111 §5.2.2.10",
                directives: cc(|d| { d.max_age = Some(600); d.s_maxage = Some(30) }), expect_secs: 30,
                expect_source: S::SMaxAge, ..Case::default() },
            Case { name: "s-maxage=0 is explicit: no heuristic", section: "RFC 9111 §5.2.2.10",
                directives: cc(|d| d.s_maxage = Some(0)), last_modified: Some(-100 * DAY as i64), expect_secs: 0,
                expect_source: S::SMaxAge, ..Case::default() },
            Case { name: "s-maxage overrides Expires", section: "RFC 9111 §5.3",
                directives: cc(|d| d.s_maxage = Some(5)), expires: Some(Some(3_600)), expect_secs: 5,
                expect_source: S::SMaxAge, ..Case::default() },
            Case { name: "max-age overrides a later Expires", section: "RFC 9111 §5.3",
                directives: cc(|d| d.max_age = Some(60)), expires: Some(Some(3_600)), expect_secs: 60,
                expect_source: S::MaxAge, ..Case::default() },
            Case { name: "max-age overrides an invalid Expires", section: "RFC 9111 §5.3",
                directives: cc(|d| d.max_age = Some(60)), expires: Some(None), expect_secs: 60,
                expect_source: S::MaxAge, ..Case::default() },
            Case { name: "max-age=0 (also the parser's value for an invalid max-age)", section: "RFC 9111 §4.2.1",
                directives: cc(|d| d.max_age = Some(0)), last_modified: Some(-1_000), expect_secs: 0,
                expect_source: S::MaxAge, ..Case::default() },
            Case { name: "Expires minus Date", section: "RFC 9111 §4.2.1",
                expires: Some(Some(3_600)), expect_secs: 3_600, expect_source: S::Expires, ..Case::default() },
            Case { name: "Expires minus Date is immune to the origin's clock skew", section: "RFC 9111 §4.2.1",
                date: Some(-7_200), expires: Some(Some(-7_200 + 300)), expect_secs: 300, expect_source: S::Expires,
                ..Case::default() },
            Case { name: "Expires without Date uses the receipt time", section: "RFC 9110 §6.6.1",
                date: None, expires: Some(Some(120)), expect_secs: 120, expect_source: S::Expires,
                ..Case::default() },
            Case { name: "Expires before Date: already stale", section: "RFC 9111 §4.2.1",
                expires: Some(Some(-60)), expect_secs: 0, expect_source: S::Expires, ..Case::default() },
            Case { name: "invalid Expires (\"0\") means already expired, no heuristic", section: "RFC 9111 §5.3",
                expires: Some(None), last_modified: Some(-100 * DAY as i64), expect_secs: 0,
                expect_source: S::Expires, ..Case::default() },
            Case { name: "heuristic: 10% of Date - Last-Modified", section: "RFC 9111 §4.2.2",
                last_modified: Some(-10_000), expect_secs: 1_000, expect_source: S::Heuristic, ..Case::default() },
            Case { name: "heuristic capped by the configured maximum", section: "RFC 9111 §4.2.2",
                last_modified: Some(-365 * DAY as i64), expect_secs: DAY, expect_source: S::Heuristic,
                ..Case::default() },
            Case { name: "heuristic with a custom fraction and cap", section: "RFC 9111 §4.2.2",
                last_modified: Some(-10_000),
                options: opts(|o| { o.heuristic_percent = 20; o.heuristic_max = Duration::from_secs(1_500) }),
                expect_secs: 1_500, expect_source: S::Heuristic, ..Case::default() },
            Case { name: "heuristic uses receipt time when Date is missing", section: "RFC 9110 §6.6.1",
                date: None, last_modified: Some(-500), expect_secs: 50, expect_source: S::Heuristic,
                ..Case::default() },
            Case { name: "Last-Modified after Date: zero heuristic", section: "RFC 9111 §4.2.2",
                last_modified: Some(60), expect_secs: 0, expect_source: S::Heuristic, ..Case::default() },
            Case { name: "no Last-Modified: no heuristic", section: "RFC 9111 §4.2.2",
                expect_secs: 0, expect_source: S::None, ..Case::default() },
            Case { name: "404 is heuristically cacheable", section: "RFC 9110 §15.1",
                status: 404, last_modified: Some(-1_000), expect_secs: 100, expect_source: S::Heuristic,
                ..Case::default() },
            Case { name: "308 is heuristically cacheable", section: "RFC 9110 §15.1",
                status: 308, last_modified: Some(-1_000), expect_secs: 100, expect_source: S::Heuristic,
                ..Case::default() },
            Case { name: "302 is not heuristically cacheable", section: "RFC 9111 §4.2.2",
                status: 302, last_modified: Some(-1_000), expect_secs: 0, expect_source: S::None, ..Case::default() },
            Case { name: "500 is not heuristically cacheable", section: "RFC 9111 §4.2.2",
                status: 500, last_modified: Some(-1_000), expect_secs: 0, expect_source: S::None, ..Case::default() },
            Case { name: "public makes a 302 heuristically cacheable", section: "RFC 9111 §4.2.2",
                status: 302, directives: cc(|d| d.public = true), last_modified: Some(-1_000), expect_secs: 100,
                expect_source: S::Heuristic, ..Case::default() },
            Case { name: "default TTL replaces the heuristic", section: "RFC 9111 §4.2.2",
                last_modified: Some(-10_000), options: opts(|o| o.default_ttl = Some(Duration::from_secs(300))),
                expect_secs: 300, expect_source: S::DefaultTtl, ..Case::default() },
            Case { name: "default TTL applies without Last-Modified", section: "RFC 9111 §4.2.2",
                options: opts(|o| o.default_ttl = Some(Duration::from_secs(300))), expect_secs: 300,
                expect_source: S::DefaultTtl, ..Case::default() },
            Case { name: "default TTL never overrides explicit freshness", section: "RFC 9111 §4.2.2",
                directives: cc(|d| d.max_age = Some(10)),
                options: opts(|o| o.default_ttl = Some(Duration::from_secs(300))), expect_secs: 10,
                expect_source: S::MaxAge, ..Case::default() },
            Case { name: "default TTL obeys the heuristic status rule", section: "RFC 9111 §4.2.2",
                status: 503, options: opts(|o| o.default_ttl = Some(Duration::from_secs(300))), expect_secs: 0,
                expect_source: S::None, ..Case::default() },
            Case { name: "max TTL caps an explicit lifetime", section: "RFC 9111 §4.2.1",
                directives: cc(|d| d.max_age = Some(31_536_000)),
                options: opts(|o| o.max_ttl = Some(Duration::from_secs(3_600))), expect_secs: 3_600,
                expect_source: S::MaxAge, ..Case::default() },
            Case { name: "max TTL caps the default TTL", section: "RFC 9111 §4.2.1",
                options: opts(|o| {
                    o.default_ttl = Some(Duration::from_secs(7_200));
                    o.max_ttl = Some(Duration::from_secs(60));
                }),
                expect_secs: 60, expect_source: S::DefaultTtl, ..Case::default() },
            Case { name: "max TTL leaves shorter lifetimes alone", section: "RFC 9111 §4.2.1",
                expires: Some(Some(30)), options: opts(|o| o.max_ttl = Some(Duration::from_secs(60))),
                expect_secs: 30, expect_source: S::Expires, ..Case::default() },
            Case { name: "absurd heuristic percentage saturates, then is capped", section: "RFC 9111 §4.2.2",
                last_modified: Some(-1_000_000_000), options: opts(|o| o.heuristic_percent = u32::MAX),
                expect_secs: DAY, expect_source: S::Heuristic, ..Case::default() },
        ];
        for c in cases {
            let input = FreshnessInput {
                status: StatusCode::from_u16(c.status).unwrap(),
                directives: &c.directives,
                targeted: c.targeted,
                date: c.date.map(t),
                expires: c.expires.map(|e| e.map(t)),
                last_modified: c.last_modified.map(t),
                response_time: t(0),
            };
            let got = freshness_lifetime(&input, &c.options);
            assert_eq!(
                (got.ttl.as_secs(), got.source),
                (c.expect_secs, c.expect_source),
                "{} ({})",
                c.name,
                c.section
            );
        }
    }

    #[test]
    fn heuristically_cacheable_statuses() {
        // RFC 9110 §15.1 lists exactly these.
        let listed = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];
        for code in 100..=999u16 {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                is_heuristically_cacheable(status),
                listed.contains(&code),
                "{code}"
            );
        }
    }

    #[test]
    fn parse_expires_table() {
        type Parsed = Option<Option<SystemTime>>;
        #[rustfmt::skip]
        let cases: [(&[&str], Parsed, &str); 4] = [
            (&[], None, "RFC 9111 §5.3"),
            (&["0"], Some(None), "RFC 9111 §5.3"),
            (&["Sun, 06 Nov 1994 08:49:37 GMT", "0"],
                Some(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))), "RFC 9111 §4.2.1"),
            (&["-1", "Sun, 06 Nov 1994 08:49:37 GMT"], Some(None), "RFC 9111 §4.2.1"),
        ];
        for (values, expect, section) in cases {
            assert_eq!(
                parse_expires(values.iter()),
                expect,
                "{values:?} ({section})"
            );
        }
    }

    #[test]
    fn lifetime_helpers() {
        let l = Lifetime {
            ttl: Duration::from_secs(60),
            source: LifetimeSource::MaxAge,
        };
        // RFC 9111 §4.2: fresh while lifetime > age; stale at equality.
        assert!(l.is_fresh(Duration::from_secs(59)));
        assert!(!l.is_fresh(Duration::from_secs(60)));
        // RFC 9211 §2.5: ttl goes negative once stale.
        assert_eq!(l.remaining_secs(Duration::from_secs(90)), -30);
        assert_eq!(l.remaining_secs(Duration::MAX), 60 - i64::MAX);
        assert!(LifetimeSource::Expires.is_explicit());
        assert!(!LifetimeSource::DefaultTtl.is_explicit());
    }
}
