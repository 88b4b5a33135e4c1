//! Cache-Control (RFC 9111 §5.2) and targeted cache-control fields
//! (RFC 9213, `CDN-Cache-Control`) parsed into typed directives.
//!
//! The parser is lenient where the RFC asks caches to be (§4.2.1: invalid
//! or conflicting values are treated so the response is *less* reusable,
//! e.g. a `max-age` that is not a non-negative integer counts as stale)
//! and never panics on any input.
//!
//! Trade-offs, each chosen so a malformed header can only make a response
//! *less* reusable, never more:
//!
//! - **Syntax.** `Cache-Control` is read with a forgiving `#cache-directive`
//!   tokenizer (§5.2): names are case-insensitive, arguments may be tokens or
//!   quoted strings (quoted-pairs unescaped; `max-age="60"` is 60, as §5.2
//!   asks recipients to accept both forms), OWS around `=` is tolerated,
//!   commas inside quoted strings do not split directives, and empty list
//!   elements are skipped (RFC 9110 §5.6.1). A directive whose name is not a
//!   token, and every unknown directive, is ignored (§5.2.3). Field lines are
//!   combined as one list (RFC 9110 §5.3), but a quoted string never spans
//!   two lines: an unterminated one makes the rest of its line one invalid
//!   argument.
//! - **Invalid freshness** (§4.2.1, §1.2.2): a `max-age` / `s-maxage` that is
//!   absent, empty, negative, fractional or non-numeric counts as `0`
//!   (stale). An invalid `stale-while-revalidate` / `stale-if-error`
//!   (RFC 5861) is dropped, so no stale serving is granted. Values above
//!   2^31 clamp to 2^31 ([`MAX_DELTA_SECONDS`], §1.2.2).
//! - **Duplicates** (§4.2.1: "either the first occurrence should be used or
//!   the response should be considered stale"): we take the second option
//!   for `max-age` and `s-maxage` — equal duplicates are harmless, differing
//!   ones give `0`. The RFC 5861 windows keep the lowest value ("the most
//!   restrictive directive should be honored"). In requests, duplicated
//!   `max-age` / `max-stale` keep the lowest and `min-fresh` the highest;
//!   an invalid `max-age` counts as `0`, an invalid `max-stale` /
//!   `stale-if-error` is dropped and an invalid `min-fresh` is ignored.
//! - **Field lists** of `no-cache` / `private` (§5.2.2.4, §5.2.2.7) are
//!   lower-cased; the token form (`private=set-cookie`) is accepted. An
//!   empty or malformed list counts as the bare directive (whole response),
//!   and the bare form absorbs any qualified one.
//! - **Directives without arguments** (`no-store`, `public`, …) count as
//!   present even when an argument is attached (`no-store=1`): ignoring the
//!   argument is the restrictive reading for every restrictive directive.
//! - **Targeted fields** (RFC 9213) are Structured Field Dictionaries
//!   (RFC 8941 §3.2), validated as such: a field that is empty or fails to
//!   parse is ignored and the next targeted field, then `Cache-Control`, is
//!   used instead (RFC 9213 §2.1). Valid members then go through the same
//!   directive mapping as `Cache-Control`, except that SF rules decide the
//!   syntax: keys are lower-case, the last duplicate key wins (RFC 8941
//!   §4.2.2), `?0` means the directive is absent, parameters are ignored,
//!   and integers longer than 15 digits make the field invalid.

use std::collections::HashSet;

use http::{HeaderMap, HeaderName, HeaderValue, header::CACHE_CONTROL};

use syntax::{Arg, RawDirective, is_token, tokenize_line, trim_ows};

mod structured;
pub(crate) mod syntax;
#[cfg(test)]
mod tests;

/// Delta-seconds (RFC 9111 §1.2.2); values beyond 2^31 clamp to 2^31.
pub type DeltaSeconds = u64;

/// Clamp for delta-seconds: RFC 9111 §1.2.2 says a cache MUST treat a value
/// it cannot represent (or an overflowing calculation) as 2^31 seconds
/// (about 68 years); we clamp every larger value to it so downstream
/// arithmetic can never overflow.
pub const MAX_DELTA_SECONDS: DeltaSeconds = 1 << 31;

/// `CDN-Cache-Control`, the targeted field for CDN caches (RFC 9213 §3).
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// `no-cache` / `private` on a response: bare, or naming fields (§5.2.2.4, §5.2.2.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FieldScope {
    /// Directive absent.
    #[default]
    Absent,
    /// Directive present without arguments: applies to the whole response.
    All,
    /// Directive present with a quoted list of field names (lower-cased).
    Fields(Vec<String>),
}

impl FieldScope {
    /// Whether the directive is present in any form.
    pub fn is_present(&self) -> bool {
        !matches!(self, FieldScope::Absent)
    }

    /// Whether the directive applies to the field `name` (case-insensitive):
    /// always for the bare form, never when absent.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            FieldScope::Absent => false,
            FieldScope::All => true,
            FieldScope::Fields(fields) => fields.iter().any(|f| f.eq_ignore_ascii_case(name)),
        }
    }
}

/// Directives of a response's Cache-Control (or targeted field), §5.2.2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `max-age=N`; `Some(0)` also for an invalid value (§4.2.1: treat as stale).
    pub max_age: Option<DeltaSeconds>,
    /// `s-maxage=N` (shared caches only).
    pub s_maxage: Option<DeltaSeconds>,
    /// `no-cache` (bare or with field names).
    pub no_cache: FieldScope,
    /// `no-store`.
    pub no_store: bool,
    /// `private` (bare or with field names).
    pub private: FieldScope,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `must-understand`.
    pub must_understand: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `stale-while-revalidate=N` (RFC 5861 §3).
    pub stale_while_revalidate: Option<DeltaSeconds>,
    /// `stale-if-error=N` (RFC 5861 §4).
    pub stale_if_error: Option<DeltaSeconds>,
}

/// Directives of a request's Cache-Control, §5.2.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `max-age=N`.
    pub max_age: Option<DeltaSeconds>,
    /// `max-stale` or `max-stale=N`.
    pub max_stale: Option<MaxStale>,
    /// `min-fresh=N`.
    pub min_fresh: Option<DeltaSeconds>,
    /// `no-cache`.
    pub no_cache: bool,
    /// `no-store`.
    pub no_store: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `only-if-cached`.
    pub only_if_cached: bool,
    /// `stale-if-error=N` (RFC 5861 §4).
    pub stale_if_error: Option<DeltaSeconds>,
}

/// The argument of a request's `max-stale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// Bare `max-stale`: any staleness is acceptable.
    Any,
    /// `max-stale=N`.
    Seconds(DeltaSeconds),
}

impl MaxStale {
    /// The more restrictive of two `max-stale` values (a bound beats none).
    fn min(self, other: MaxStale) -> MaxStale {
        match (self, other) {
            (MaxStale::Any, x) | (x, MaxStale::Any) => x,
            (MaxStale::Seconds(a), MaxStale::Seconds(b)) => MaxStale::Seconds(a.min(b)),
        }
    }
}

/// Where the directives that govern a shared cache came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectiveSource {
    /// A targeted field (RFC 9213), named here; `Cache-Control` and
    /// `Expires` are then ignored for caching policy (RFC 9213 §2.2).
    Targeted(HeaderName),
    /// `Cache-Control` (no valid targeted field was present).
    CacheControl,
    /// Neither a valid targeted field nor `Cache-Control` was present.
    None,
}

/// Parse a response's `Cache-Control` field lines (pass
/// `headers.get_all(CACHE_CONTROL)`) into directives; never fails.
pub fn parse_response<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> ResponseDirectives {
    let mut raw = Vec::new();
    for value in values {
        tokenize_line(value.as_bytes(), &mut raw);
    }
    apply_response(&raw)
}

/// Parse a request's `Cache-Control` field lines into directives; never fails.
pub fn parse_request<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> RequestDirectives {
    let mut raw = Vec::new();
    for value in values {
        tokenize_line(value.as_bytes(), &mut raw);
    }
    apply_request(&raw)
}

/// Parse the field lines of one targeted field (RFC 9213 §2.1) as a
/// Structured Field Dictionary; `None` when absent, empty or invalid, in
/// which case the cache must behave as if the field were not there.
pub fn parse_targeted<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Option<ResponseDirectives> {
    // RFC 8941 §4.2: field lines are combined with ", " before parsing.
    let mut combined: Vec<u8> = Vec::new();
    let mut lines = 0usize;
    for value in values {
        if lines > 0 {
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(value.as_bytes());
        lines += 1;
    }
    if lines == 0 {
        return None;
    }
    let members = structured::parse_dictionary(&combined)?;
    if members.is_empty() {
        // RFC 9213 §2.1: an empty targeted field is ignored.
        return None;
    }
    // RFC 8941 §4.2.2: of repeated keys, only the last instance counts.
    let mut seen = HashSet::new();
    let mut last: Vec<(String, structured::Member)> = members
        .into_iter()
        .rev()
        .filter(|(key, _)| seen.insert(key.clone()))
        .collect();
    last.reverse();
    let raw: Vec<RawDirective> = last
        .into_iter()
        .filter_map(|(key, value)| {
            let arg = match value {
                structured::Member::True => Arg::Absent,
                // `?0`: the directive is explicitly not set.
                structured::Member::False => return None,
                structured::Member::Text(text) => Arg::Value(text),
                structured::Member::Other => Arg::Invalid,
            };
            Some(RawDirective {
                name: key.into_bytes(),
                arg,
            })
        })
        .collect();
    Some(apply_response(&raw))
}

/// The directives a shared cache obeys: those of the first targeted field in
/// `targeted` (the cache's ordered list, e.g. `[edge-cache-control,
/// cdn-cache-control]`) that is present and valid, else `Cache-Control`
/// (RFC 9213 §2.2).
///
/// A targeted field that is empty or not a valid Structured Field
/// Dictionary is ignored as if absent (RFC 9213 §2.1), so the next one, then
/// `Cache-Control`, applies. When a targeted field wins, RFC 9213 §2.2 says
/// the cache MUST ignore `Cache-Control` *and `Expires`* for its caching
/// policy; callers computing freshness check the returned source for that.
pub fn shared_cache_directives(
    headers: &HeaderMap,
    targeted: &[HeaderName],
) -> (ResponseDirectives, DirectiveSource) {
    for name in targeted {
        if let Some(directives) = parse_targeted(headers.get_all(name)) {
            return (directives, DirectiveSource::Targeted(name.clone()));
        }
    }
    if headers.contains_key(CACHE_CONTROL) {
        (
            parse_response(headers.get_all(CACHE_CONTROL)),
            DirectiveSource::CacheControl,
        )
    } else {
        (ResponseDirectives::default(), DirectiveSource::None)
    }
}

/// `delta-seconds = 1*DIGIT` (§1.2.2), clamped to [`MAX_DELTA_SECONDS`].
fn parse_delta(text: &str) -> Option<DeltaSeconds> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: DeltaSeconds = 0;
    for b in text.bytes() {
        value = (value * 10 + DeltaSeconds::from(b - b'0')).min(MAX_DELTA_SECONDS);
    }
    Some(value)
}

fn delta_arg(arg: &Arg) -> Option<DeltaSeconds> {
    match arg {
        Arg::Value(text) => parse_delta(text),
        Arg::Absent | Arg::Invalid => None,
    }
}

/// The field names of a qualified `no-cache` / `private` (§5.2.2.4,
/// §5.2.2.7), lower-cased; `None` for the bare form and for an empty or
/// malformed list, both read as the whole response (the restrictive choice).
fn field_names(arg: &Arg) -> Option<Vec<String>> {
    let Arg::Value(text) = arg else {
        return None;
    };
    let mut names = Vec::new();
    for element in text.split(',') {
        let element = trim_ows(element.as_bytes());
        if element.is_empty() {
            continue; // empty list elements are allowed (RFC 9110 §5.6.1)
        }
        if !is_token(element) {
            return None;
        }
        names.push(String::from_utf8_lossy(element).to_ascii_lowercase());
    }
    if names.is_empty() { None } else { Some(names) }
}

/// Occurrences of `no-cache` or `private`: the bare form absorbs any
/// qualified one (most restrictive, §4.2.1) and field lists are united. A
/// set keeps hostile input (thousands of names) linear.
#[derive(Default)]
struct ScopeSlot {
    present: bool,
    all: bool,
    fields: Vec<String>,
    seen: HashSet<String>,
}

impl ScopeSlot {
    fn push(&mut self, arg: &Arg) {
        self.present = true;
        if self.all {
            return;
        }
        match field_names(arg) {
            Some(names) => {
                for name in names {
                    if self.seen.insert(name.clone()) {
                        self.fields.push(name);
                    }
                }
            }
            None => self.all = true,
        }
    }

    fn finish(self) -> FieldScope {
        match (self.present, self.all) {
            (false, _) => FieldScope::Absent,
            (true, true) => FieldScope::All,
            (true, false) => FieldScope::Fields(self.fields),
        }
    }
}

/// Occurrences of one delta-seconds directive.
#[derive(Default)]
struct DeltaSlot {
    lowest: Option<DeltaSeconds>,
    highest: Option<DeltaSeconds>,
    invalid: bool,
}

impl DeltaSlot {
    fn push(&mut self, arg: &Arg) {
        match delta_arg(arg) {
            Some(v) => {
                self.lowest = Some(self.lowest.map_or(v, |old| old.min(v)));
                self.highest = Some(self.highest.map_or(v, |old| old.max(v)));
            }
            None => self.invalid = true,
        }
    }

    /// Response freshness (§4.2.1): invalid or conflicting values mean stale.
    fn stale_if_bad(&self) -> Option<DeltaSeconds> {
        if self.invalid || self.lowest != self.highest {
            Some(0)
        } else {
            self.lowest
        }
    }

    /// A grant (stale windows, `max-stale`): invalid drops it, duplicates
    /// keep the most restrictive (lowest).
    fn lowest_unless_invalid(&self) -> Option<DeltaSeconds> {
        if self.invalid { None } else { self.lowest }
    }
}

fn apply_response(raw: &[RawDirective]) -> ResponseDirectives {
    let mut d = ResponseDirectives::default();
    let (mut max_age, mut s_maxage) = (DeltaSlot::default(), DeltaSlot::default());
    let (mut swr, mut sie) = (DeltaSlot::default(), DeltaSlot::default());
    let (mut no_cache, mut private) = (ScopeSlot::default(), ScopeSlot::default());
    let (mut seen_max_age, mut seen_s_maxage, mut seen_swr, mut seen_sie) =
        (false, false, false, false);
    for RawDirective { name, arg } in raw {
        match name.as_slice() {
            b"max-age" => {
                seen_max_age = true;
                max_age.push(arg);
            }
            b"s-maxage" => {
                seen_s_maxage = true;
                s_maxage.push(arg);
            }
            b"stale-while-revalidate" => {
                seen_swr = true;
                swr.push(arg);
            }
            b"stale-if-error" => {
                seen_sie = true;
                sie.push(arg);
            }
            b"no-cache" => no_cache.push(arg),
            b"private" => private.push(arg),
            b"no-store" => d.no_store = true,
            b"public" => d.public = true,
            b"must-revalidate" => d.must_revalidate = true,
            b"proxy-revalidate" => d.proxy_revalidate = true,
            b"must-understand" => d.must_understand = true,
            b"no-transform" => d.no_transform = true,
            b"immutable" => d.immutable = true,
            _ => {} // §5.2.3: unknown extensions are ignored.
        }
    }
    if seen_max_age {
        d.max_age = max_age.stale_if_bad();
    }
    if seen_s_maxage {
        d.s_maxage = s_maxage.stale_if_bad();
    }
    d.no_cache = no_cache.finish();
    d.private = private.finish();
    if seen_swr {
        d.stale_while_revalidate = swr.lowest_unless_invalid();
    }
    if seen_sie {
        d.stale_if_error = sie.lowest_unless_invalid();
    }
    d
}

fn apply_request(raw: &[RawDirective]) -> RequestDirectives {
    let mut d = RequestDirectives::default();
    let mut max_age = DeltaSlot::default();
    let mut min_fresh = DeltaSlot::default();
    let mut sie = DeltaSlot::default();
    let mut max_stale: Option<MaxStale> = None;
    let mut max_stale_invalid = false;
    let (mut seen_max_age, mut seen_sie) = (false, false);
    for RawDirective { name, arg } in raw {
        match name.as_slice() {
            b"max-age" => {
                seen_max_age = true;
                max_age.push(arg);
            }
            b"min-fresh" => min_fresh.push(arg),
            b"stale-if-error" => {
                seen_sie = true;
                sie.push(arg);
            }
            b"max-stale" => {
                let this = match arg {
                    Arg::Absent => Some(MaxStale::Any),
                    _ => delta_arg(arg).map(MaxStale::Seconds),
                };
                match this {
                    Some(v) => max_stale = Some(max_stale.map_or(v, |old| old.min(v))),
                    None => max_stale_invalid = true,
                }
            }
            b"no-cache" => d.no_cache = true,
            b"no-store" => d.no_store = true,
            b"no-transform" => d.no_transform = true,
            b"only-if-cached" => d.only_if_cached = true,
            _ => {} // §5.2.3
        }
    }
    if seen_max_age {
        // §5.2.1.1: the client wants a response no older than N; an invalid
        // N is read as 0 (revalidate), the restrictive choice.
        d.max_age = if max_age.invalid {
            Some(0)
        } else {
            max_age.lowest
        };
    }
    // §5.2.1.3: the client wants at least N seconds of freshness left; an
    // invalid value gives no number to honour, so it is ignored.
    d.min_fresh = min_fresh.highest;
    // §5.2.1.2: an invalid max-stale grants no staleness at all.
    d.max_stale = if max_stale_invalid { None } else { max_stale };
    if seen_sie {
        d.stale_if_error = sie.lowest_unless_invalid();
    }
    d
}
