//! The memory tier: stored responses held in RAM, weighted by bytes.
//!
//! One moka entry per primary [`CacheKey`] holds the variants of that URL
//! (RFC 9111 §4.1): up to [`MAX_VARIANTS_PER_URL`] `Arc<StoredResponse>`s
//! with different secondary keys, all under one `Vary` spec. A response whose
//! `Vary` differs from the stored one replaces every variant: the origin
//! changed what it varies on, so the old secondary keys mean nothing. When a
//! new variant would exceed the limit, the oldest variant is dropped (and
//! counted as an eviction).
//!
//! Sizing: the moka weight of an entry is the sum of its variants'
//! [`StoredResponse::size_bytes`], checked against
//! [`MemoryOptions::capacity_bytes`]. moka's weigher returns `u32`; the
//! per-object limit is capped at `u32::MAX / MAX_VARIANTS_PER_URL` (~512 MiB)
//! so the sum of a full variant list always fits and the clamp to `u32::MAX`
//! in the weigher can never undercount. moka admits new entries with
//! TinyLFU (on by default): when the tier is full, a newcomer that is less
//! popular than the entries it would evict is refused, so a scan of
//! one-hit wonders does not flush the hot set. A refused or evicted entry is
//! reported through the eviction listener like any other.
//!
//! Flavour: `moka::sync::Cache`, not the `future` cache the issue mentions.
//! Nothing here waits on I/O: a lookup is a hash-map read plus a Vary
//! comparison, so an async API would only add a future per hit on the
//! hottest path. The sync cache is safe to call from async tasks because it
//! never blocks for long (housekeeping is amortised, bounded batches).
//!
//! Invalidation by URL (purge, RFC 9111 §4.4): a key without appended
//! request headers is exactly its URL, so [`MemoryTier::remove_url`] removes
//! it directly (O(1)). Keys with appended headers (a per-site key option)
//! are dropped with moka's `invalidate_entries_if`: the predicate is
//! registered at once (moka never returns an entry it matches from then on)
//! and applied to every entry during housekeeping, an O(entries) scan per
//! call. The tier only registers predicates once it has stored such a key,
//! so sites with default keys never pay for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::HeaderMap;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::entry::StoredResponse;
use crate::key::CacheKey;
#[cfg(test)]
use crate::vary::secondary_key;
use crate::vary::{SecondaryKey, VarySpec, secondary_bytes};

/// Variants kept per URL. Real Vary fan-out is small (`Accept-Encoding`
/// gives 2–4); 8 leaves room for `Accept-Language` without letting a
/// `Vary: User-Agent` origin fill the tier with one URL.
pub const MAX_VARIANTS_PER_URL: usize = 8;

/// Largest default per-object limit: objects above 64 MiB go to the disk
/// tier or stream through, so one video cannot flush a RAM tier (issue 3).
pub const DEFAULT_MAX_OBJECT_CAP: u64 = 64 * 1024 * 1024;

/// Hard ceiling on the per-object limit, so a full variant list still fits
/// moka's `u32` weight.
pub const MAX_OBJECT_CEILING: u64 = u32::MAX as u64 / MAX_VARIANTS_PER_URL as u64;

/// Size limits of the memory tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Total weight of stored responses (`[cache].memory`).
    pub capacity_bytes: u64,
    /// Largest single response stored; larger ones are refused with
    /// [`Inserted::TooLarge`]. Capped at [`MAX_OBJECT_CEILING`].
    pub max_object_bytes: u64,
}

impl MemoryOptions {
    /// Defaults for a capacity: the per-object limit is `capacity / 8`
    /// (one object never takes more than an eighth of the tier) capped at
    /// [`DEFAULT_MAX_OBJECT_CAP`].
    pub fn for_capacity(capacity_bytes: u64) -> MemoryOptions {
        MemoryOptions {
            capacity_bytes,
            max_object_bytes: (capacity_bytes / 8).min(DEFAULT_MAX_OBJECT_CAP),
        }
    }
}

/// The result of a lookup; the two misses feed `Cache-Status` (RFC 9211 §2.2).
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A stored variant matches the request (freshness is the caller's call).
    Hit(Arc<StoredResponse>),
    /// The URL is stored but no variant matches the request: `fwd=vary-miss`.
    VaryMiss,
    /// Nothing is stored for the key: `fwd=uri-miss`.
    UriMiss,
}

/// The result of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored (TinyLFU may still refuse it at admission when the tier is full).
    Stored,
    /// Larger than [`MemoryOptions::max_object_bytes`]; not stored.
    TooLarge,
}

/// A snapshot of the tier's counters. Objects are variants, not URLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Lookups answered with a variant.
    pub hits: u64,
    /// Lookups without one (`UriMiss` and `VaryMiss`).
    pub misses: u64,
    /// Responses stored (including replacements and 304 merges).
    pub inserts: u64,
    /// Variants removed for space: size eviction, refused admission, or the
    /// per-URL variant limit. Explicit invalidation is not counted.
    pub evictions: u64,
    /// Weight of the variants currently held (sum of `size_bytes`).
    pub bytes: u64,
    /// Variants currently held.
    pub objects: u64,
}

/// What one moka entry holds: the variants of one URL, oldest first.
#[derive(Debug)]
struct Variants {
    list: Vec<Arc<StoredResponse>>,
    /// Sum of `size_bytes` over `list`, fixed at construction.
    bytes: u64,
}

impl Variants {
    fn new(list: Vec<Arc<StoredResponse>>) -> Arc<Variants> {
        let bytes = list.iter().map(|r| r.size_bytes()).sum();
        Arc::new(Variants { list, bytes })
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    bytes: AtomicU64,
    objects: AtomicU64,
}

impl Counters {
    fn add_held(&self, v: &Variants) {
        self.bytes.fetch_add(v.bytes, Ordering::Relaxed);
        self.objects
            .fetch_add(v.list.len() as u64, Ordering::Relaxed);
    }
}

/// The in-memory store of responses, keyed by [`CacheKey`] with variants
/// per URL. Share it behind an `Arc`; all methods take `&self`.
pub struct MemoryTier {
    cache: Cache<CacheKey, Arc<Variants>>,
    counters: Arc<Counters>,
    options: MemoryOptions,
    /// Set once a key with appended headers is stored (see the module docs).
    header_keys: AtomicBool,
}

impl MemoryTier {
    /// Builds an empty tier.
    pub fn new(options: MemoryOptions) -> MemoryTier {
        let options = MemoryOptions {
            max_object_bytes: options.max_object_bytes.min(MAX_OBJECT_CEILING),
            ..options
        };
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let cache = Cache::builder()
            .max_capacity(options.capacity_bytes)
            // Cannot clamp in practice: see MAX_OBJECT_CEILING.
            .weigher(|_key: &CacheKey, v: &Arc<Variants>| {
                u32::try_from(v.bytes).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, v: Arc<Variants>, cause| {
                let c = &listener_counters;
                c.bytes.fetch_sub(v.bytes, Ordering::Relaxed);
                c.objects.fetch_sub(v.list.len() as u64, Ordering::Relaxed);
                if cause.was_evicted() {
                    c.evictions
                        .fetch_add(v.list.len() as u64, Ordering::Relaxed);
                }
                debug_assert!(cause != RemovalCause::Expired, "no TTL is configured");
            })
            .support_invalidation_closures()
            .build();
        MemoryTier {
            cache,
            counters,
            options,
            header_keys: AtomicBool::new(false),
        }
    }

    /// The options in force (after the per-object ceiling).
    pub fn options(&self) -> MemoryOptions {
        self.options
    }

    /// Finds the variant of `key` that `request` selects (RFC 9111 §4.1).
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Lookup {
        let Some(variants) = self.cache.get(key) else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::UriMiss;
        };
        // All variants share one spec (insert enforces it), so the request's
        // secondary key is built once; `Vary: *` yields none and never matches.
        let wanted = variants
            .list
            .first()
            .and_then(|r| secondary_bytes(&r.vary, request));
        let found = wanted.and_then(|w| {
            variants
                .list
                .iter()
                .rev()
                .find(|r| r.secondary.as_ref().map(SecondaryKey::as_bytes) == Some(&w[..]))
        });
        match found {
            Some(r) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(Arc::clone(r))
            }
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::VaryMiss
            }
        }
    }

    /// Stores `response` as a variant of `key`, replacing the variant with
    /// the same secondary key, or all variants when its `Vary` differs.
    pub fn insert(&self, key: CacheKey, response: Arc<StoredResponse>) -> Inserted {
        if response.size_bytes() > self.options.max_object_bytes {
            return Inserted::TooLarge;
        }
        if key.as_str().len() != key.url().len() {
            self.header_keys.store(true, Ordering::Relaxed);
        }
        let counters = &self.counters;
        self.cache.entry(key).and_compute_with(|current| {
            let mut list = match current {
                // `Vary: *` variants never match, so keeping one is enough.
                Some(e)
                    if e.value().list.first().map(|r| &r.vary) == Some(&response.vary)
                        && response.vary != VarySpec::Any =>
                {
                    e.value().list.clone()
                }
                _ => Vec::new(),
            };
            list.retain(|r| r.secondary != response.secondary);
            if list.len() >= MAX_VARIANTS_PER_URL {
                let dropped = list.len() + 1 - MAX_VARIANTS_PER_URL;
                list.drain(..dropped);
                counters
                    .evictions
                    .fetch_add(dropped as u64, Ordering::Relaxed);
            }
            list.push(response);
            let new = Variants::new(list);
            // Counted before moka inserts, so the listener's subtraction for
            // the replaced value never runs ahead of this addition.
            counters.add_held(&new);
            counters.inserts.fetch_add(1, Ordering::Relaxed);
            Op::Put(new)
        });
        // moka applies evictions in batches (after hundreds of writes or a
        // timer); until then replaced and over-budget entries stay alive.
        // Objects are large, so apply them now whenever we hold more than
        // the budget: the store never holds much beyond `capacity_bytes`.
        if counters.bytes.load(Ordering::Relaxed) > self.options.capacity_bytes {
            self.cache.run_pending_tasks();
        }
        Inserted::Stored
    }

    /// Swaps `old` for `new` after a 304 merge (RFC 9111 §3.2, §4.3.4).
    /// Only replaces if `old` (same `Arc`) is still stored: a purge or a
    /// newer 200 that landed during revalidation wins. Returns whether the
    /// swap happened; `false` also when `new` is too large.
    pub fn replace_variant(
        &self,
        key: &CacheKey,
        old: &Arc<StoredResponse>,
        new: Arc<StoredResponse>,
    ) -> bool {
        if new.size_bytes() > self.options.max_object_bytes {
            return false;
        }
        let counters = &self.counters;
        let mut replaced = false;
        self.cache.entry(key.clone()).and_compute_with(|current| {
            let Some(e) = current else { return Op::Nop };
            let Some(i) = e.value().list.iter().position(|r| Arc::ptr_eq(r, old)) else {
                return Op::Nop;
            };
            let mut list = e.value().list.clone();
            if new.vary == old.vary {
                list[i] = new;
            } else {
                // The 304 changed Vary: the siblings' keys no longer apply.
                list = vec![new];
            }
            let v = Variants::new(list);
            counters.add_held(&v);
            counters.inserts.fetch_add(1, Ordering::Relaxed);
            replaced = true;
            Op::Put(v)
        });
        replaced
    }

    /// Drops every variant stored under `key`.
    pub fn invalidate(&self, key: &CacheKey) {
        self.cache.invalidate(key);
    }

    /// Drops every key whose [`CacheKey::url`] is `url` (purge, and RFC 9111
    /// §4.4 invalidation after an unsafe method), with all their variants.
    /// `url` is the text form from [`crate::key::cache_url`].
    pub fn remove_url(&self, url: &str) {
        self.cache.invalidate(&CacheKey::from_text(url));
        if self.header_keys.load(Ordering::Relaxed) {
            let url = url.to_owned();
            // Cannot fail: invalidation closures are enabled in `new`.
            let _ = self
                .cache
                .invalidate_entries_if(move |k: &CacheKey, _| k.url() == url);
        }
    }

    /// Purges the variants of `url` (the text form from
    /// [`crate::key::cache_url`]): removes them, or with `soft` keeps them
    /// marked stale so they are served only after revalidation (or within
    /// `stale-while-revalidate` / `stale-if-error`). Returns how many
    /// variants were affected.
    pub fn purge_url(&self, url: &str, soft: bool) -> usize {
        let key = CacheKey::from_text(url);
        let mut affected = self.purge_key(key, soft, &|_| true);
        if self.header_keys.load(Ordering::Relaxed) {
            affected += self.purge_matching(soft, &|k, _| k.url() == url);
        }
        affected
    }

    /// Purges every variant for which `matches` holds (e.g. one carrying a
    /// cache tag), as [`MemoryTier::purge_url`] does. Walks the whole tier:
    /// an admin operation, not a request-path one.
    pub fn purge_matching(
        &self,
        soft: bool,
        matches: &dyn Fn(&CacheKey, &StoredResponse) -> bool,
    ) -> usize {
        let keys: Vec<CacheKey> = self
            .cache
            .iter()
            .filter(|(k, v)| v.list.iter().any(|r| matches(k, r)))
            .map(|(k, _)| CacheKey::clone(&k))
            .collect();
        keys.into_iter()
            .map(|key| {
                let probe = key.clone();
                self.purge_key(key, soft, &|r| matches(&probe, r))
            })
            .sum()
    }

    /// Purges the variants of `key` that `matches`; see [`MemoryTier::purge_url`].
    fn purge_key(
        &self,
        key: CacheKey,
        soft: bool,
        matches: &dyn Fn(&StoredResponse) -> bool,
    ) -> usize {
        let counters = &self.counters;
        let mut affected = 0;
        self.cache.entry(key).and_compute_with(|current| {
            let Some(e) = current else { return Op::Nop };
            let list = &e.value().list;
            affected = list.iter().filter(|r| matches(r)).count();
            if affected == 0 {
                return Op::Nop;
            }
            let kept: Vec<Arc<StoredResponse>> = if soft {
                list.iter()
                    .map(|r| {
                        if matches(r) {
                            Arc::new(marked_stale(r))
                        } else {
                            Arc::clone(r)
                        }
                    })
                    .collect()
            } else {
                list.iter().filter(|r| !matches(r)).cloned().collect()
            };
            if kept.is_empty() {
                return Op::Remove;
            }
            let v = Variants::new(kept);
            counters.add_held(&v);
            Op::Put(v)
        });
        affected
    }

    /// Runs moka's pending housekeeping (admission, eviction, invalidation
    /// closures) now; moka otherwise amortises it over later calls.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// A snapshot of the counters (eventually consistent with moka).
    pub fn stats(&self) -> MemoryStats {
        let c = &self.counters;
        MemoryStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            objects: c.objects.load(Ordering::Relaxed),
        }
    }

    /// moka's current total weight (for tests and diagnostics).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A copy of `r` whose freshness lifetime is zero: stale from now on, so
/// it is served only as a stale response may be (a soft purge).
fn marked_stale(r: &StoredResponse) -> StoredResponse {
    let mut stale = r.clone();
    stale.lifetime.ttl = std::time::Duration::ZERO;
    stale
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use http::header::{ACCEPT_ENCODING, VARY};
    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;
    use crate::age::ResponseTimes;
    use crate::freshness::{Lifetime, LifetimeSource};
    use crate::vary::vary_fields;

    const KIB: u64 = 1024;

    fn request(accept_encoding: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = accept_encoding {
            h.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// A 200 with `Vary: vary` (none when empty) stored for `req`.
    fn response(vary: &str, req: &HeaderMap, body: Bytes) -> Arc<StoredResponse> {
        let mut headers = HeaderMap::new();
        if !vary.is_empty() {
            headers.insert(VARY, HeaderValue::from_str(vary).unwrap());
        }
        let spec = vary_fields(&headers);
        let secondary = secondary_key(&spec, req);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        Arc::new(StoredResponse {
            status: StatusCode::OK,
            headers,
            body: vec![body],
            times: ResponseTimes {
                request_time: t,
                response_time: t,
                date: Some(t),
                age_header: None,
            },
            lifetime: Lifetime {
                ttl: Duration::from_secs(60),
                source: LifetimeSource::MaxAge,
            },
            directives: Default::default(),
            vary: spec,
            secondary,
        })
    }

    fn tier(capacity: u64) -> MemoryTier {
        MemoryTier::new(MemoryOptions::for_capacity(capacity))
    }

    fn key(text: &str) -> CacheKey {
        CacheKey::from_text(text)
    }

    fn hit(l: Lookup) -> Arc<StoredResponse> {
        match l {
            Lookup::Hit(r) => r,
            other => panic!("expected a hit, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_an_eighth_capped_at_64_mib() {
        assert_eq!(MemoryOptions::for_capacity(800).max_object_bytes, 100);
        assert_eq!(
            MemoryOptions::for_capacity(4 << 30).max_object_bytes,
            DEFAULT_MAX_OBJECT_CAP
        );
        let t = MemoryTier::new(MemoryOptions {
            capacity_bytes: u64::MAX,
            max_object_bytes: u64::MAX,
        });
        assert_eq!(t.options().max_object_bytes, MAX_OBJECT_CEILING);
    }

    #[test]
    fn purges_remove_or_mark_stale_and_count() {
        let t = tier(1 << 20);
        let req = request(None);
        let body = Bytes::from_static(b"hello");
        t.insert(key("http://a/x"), response("", &req, body.clone()));
        t.insert(key("http://a/y"), response("", &req, body.clone()));
        t.insert(key("http://a/z"), response("", &req, body));

        // Soft: still stored, now stale; the count says what was touched.
        assert_eq!(t.purge_url("http://a/x", true), 1);
        let soft = hit(t.lookup(&key("http://a/x"), &req));
        assert_eq!(soft.lifetime.ttl, Duration::ZERO);
        assert_eq!(soft.body, vec![Bytes::from_static(b"hello")]);

        // Hard: gone; purging again finds nothing.
        assert_eq!(t.purge_url("http://a/y", false), 1);
        assert!(matches!(
            t.lookup(&key("http://a/y"), &req),
            Lookup::UriMiss
        ));
        assert_eq!(t.purge_url("http://a/y", false), 0);

        // By predicate (a tag, say): only matching entries.
        let purged = t.purge_matching(false, &|k, _| k.url().ends_with("/z"));
        assert_eq!(purged, 1);
        assert!(matches!(
            t.lookup(&key("http://a/z"), &req),
            Lookup::UriMiss
        ));
        assert!(matches!(t.lookup(&key("http://a/x"), &req), Lookup::Hit(_)));
        t.run_pending_tasks();
        assert_eq!(t.stats().objects, 1, "held counters follow purges");
        assert_eq!(t.stats().bytes, soft.size_bytes());
    }

    #[test]
    fn uri_miss_then_hit() {
        let t = tier(1 << 20);
        let req = request(None);
        assert!(matches!(
            t.lookup(&key("http://a/x"), &req),
            Lookup::UriMiss
        ));
        let r = response("", &req, Bytes::from_static(b"hello"));
        assert_eq!(
            t.insert(key("http://a/x"), Arc::clone(&r)),
            Inserted::Stored
        );
        assert!(Arc::ptr_eq(&hit(t.lookup(&key("http://a/x"), &req)), &r));
        assert!(matches!(
            t.lookup(&key("http://a/y"), &req),
            Lookup::UriMiss
        ));
        let s = t.stats();
        assert_eq!((s.hits, s.misses, s.inserts, s.objects), (1, 2, 1, 1));
        assert_eq!(s.bytes, r.size_bytes());
    }

    /// RFC 9111 §4.1: a stored URL whose variant does not match is a vary-miss.
    #[test]
    fn unmatched_variant_is_vary_miss() {
        let t = tier(1 << 20);
        let gzip = request(Some("gzip"));
        t.insert(
            key("http://a/x"),
            response("Accept-Encoding", &gzip, Bytes::new()),
        );
        assert!(matches!(
            t.lookup(&key("http://a/x"), &request(Some("br"))),
            Lookup::VaryMiss
        ));
        // Absent differs from present (vary.rs rules), still the same URL.
        assert!(matches!(
            t.lookup(&key("http://a/x"), &request(None)),
            Lookup::VaryMiss
        ));
        hit(t.lookup(&key("http://a/x"), &request(Some("GZIP"))));
    }

    #[test]
    fn variants_live_side_by_side() {
        let t = tier(1 << 20);
        let (gzip, br) = (request(Some("gzip")), request(Some("br")));
        let rg = response("Accept-Encoding", &gzip, Bytes::from_static(b"g"));
        let rb = response("Accept-Encoding", &br, Bytes::from_static(b"b"));
        t.insert(key("http://a/x"), Arc::clone(&rg));
        t.insert(key("http://a/x"), Arc::clone(&rb));
        assert!(Arc::ptr_eq(&hit(t.lookup(&key("http://a/x"), &gzip)), &rg));
        assert!(Arc::ptr_eq(&hit(t.lookup(&key("http://a/x"), &br)), &rb));
        assert_eq!(t.stats().objects, 2);
        assert_eq!(t.stats().bytes, rg.size_bytes() + rb.size_bytes());
        // Same secondary key replaces rather than adds.
        let rg2 = response("Accept-Encoding", &gzip, Bytes::from_static(b"g2"));
        t.insert(key("http://a/x"), Arc::clone(&rg2));
        assert!(Arc::ptr_eq(&hit(t.lookup(&key("http://a/x"), &gzip)), &rg2));
        assert_eq!(t.stats().objects, 2);
        assert_eq!(t.stats().bytes, rg2.size_bytes() + rb.size_bytes());
    }

    /// RFC 9111 §4.1: `Vary: *` always fails to match.
    #[test]
    fn vary_star_never_matches() {
        let t = tier(1 << 20);
        let req = request(Some("gzip"));
        t.insert(key("http://a/x"), response("*", &req, Bytes::new()));
        assert!(matches!(
            t.lookup(&key("http://a/x"), &req),
            Lookup::VaryMiss
        ));
        assert!(matches!(
            t.lookup(&key("http://a/x"), &request(None)),
            Lookup::VaryMiss
        ));
    }

    #[test]
    fn vary_change_replaces_all_variants() {
        let t = tier(1 << 20);
        let (gzip, br) = (request(Some("gzip")), request(Some("br")));
        t.insert(
            key("http://a/x"),
            response("Accept-Encoding", &gzip, Bytes::new()),
        );
        t.insert(
            key("http://a/x"),
            response("Accept-Encoding", &br, Bytes::new()),
        );
        let plain = response("", &gzip, Bytes::new());
        t.insert(key("http://a/x"), Arc::clone(&plain));
        assert_eq!(t.stats().objects, 1);
        assert!(Arc::ptr_eq(&hit(t.lookup(&key("http://a/x"), &br)), &plain));
        assert_eq!(t.stats().evictions, 0);
    }

    #[test]
    fn variant_limit_drops_the_oldest() {
        let t = tier(1 << 20);
        let reqs: Vec<HeaderMap> = (0..=MAX_VARIANTS_PER_URL)
            .map(|i| request(Some(&format!("x{i}"))))
            .collect();
        for r in &reqs {
            t.insert(
                key("http://a/x"),
                response("Accept-Encoding", r, Bytes::new()),
            );
        }
        assert!(matches!(
            t.lookup(&key("http://a/x"), &reqs[0]),
            Lookup::VaryMiss
        ));
        for r in &reqs[1..] {
            hit(t.lookup(&key("http://a/x"), r));
        }
        let s = t.stats();
        assert_eq!(s.objects, MAX_VARIANTS_PER_URL as u64);
        assert_eq!(s.evictions, 1);
    }

    #[test]
    fn too_large_objects_are_refused() {
        let t = tier(80 * KIB); // max object 10 KiB
        let req = request(None);
        let big = response("", &req, Bytes::from(vec![0u8; 10 * KIB as usize]));
        assert!(big.size_bytes() > t.options().max_object_bytes);
        assert_eq!(t.insert(key("http://a/big"), big), Inserted::TooLarge);
        assert!(matches!(
            t.lookup(&key("http://a/big"), &req),
            Lookup::UriMiss
        ));
        let s = t.stats();
        assert_eq!((s.inserts, s.objects, s.bytes), (0, 0, 0));
    }

    /// Issue 3 acceptance 3, at the store level: 3x capacity stays within it.
    #[test]
    fn weight_stays_within_capacity_after_three_times_capacity() {
        let cap = 256 * KIB;
        let t = tier(cap);
        let req = request(None);
        let body = Bytes::from(vec![7u8; KIB as usize]);
        let per = response("", &req, body.clone()).size_bytes();
        let n = 3 * cap / per + 1;
        for i in 0..n {
            t.insert(
                key(&format!("http://a/{i}")),
                response("", &req, body.clone()),
            );
        }
        t.run_pending_tasks();
        let s = t.stats();
        assert_eq!(s.inserts, n);
        assert!(t.weighted_size() <= cap, "{} > {cap}", t.weighted_size());
        assert!(s.bytes <= cap, "{} > {cap}", s.bytes);
        assert_eq!(s.bytes, t.weighted_size());
        assert_eq!(s.bytes, s.objects * per);
        // Every object not held was evicted or refused admission.
        assert_eq!(s.evictions + s.objects, n);
        assert!(s.evictions >= n - cap / per);
    }

    #[test]
    fn remove_url_drops_all_variants_and_header_keys() {
        let t = tier(1 << 20);
        let (gzip, br) = (request(Some("gzip")), request(Some("br")));
        let plain = key("http://a/x");
        let mobile = key("http://a/x\nx-device: mobile");
        let other = key("http://a/x?q=1\nx-device: mobile");
        for k in [&plain, &mobile, &other] {
            t.insert(k.clone(), response("Accept-Encoding", &gzip, Bytes::new()));
            t.insert(k.clone(), response("Accept-Encoding", &br, Bytes::new()));
        }
        t.remove_url("http://a/x");
        for req in [&gzip, &br] {
            assert!(matches!(t.lookup(&plain, req), Lookup::UriMiss));
            assert!(matches!(t.lookup(&mobile, req), Lookup::UriMiss));
            hit(t.lookup(&other, req));
        }
        // A variant stored after the purge does not bring the old ones back.
        let fresh = response("Accept-Encoding", &gzip, Bytes::new());
        t.insert(mobile.clone(), Arc::clone(&fresh));
        assert!(Arc::ptr_eq(&hit(t.lookup(&mobile, &gzip)), &fresh));
        assert!(matches!(t.lookup(&mobile, &br), Lookup::VaryMiss));
        t.run_pending_tasks();
        let s = t.stats();
        assert_eq!((s.objects, s.evictions), (3, 0));
    }

    #[test]
    fn invalidate_drops_one_key() {
        let t = tier(1 << 20);
        let req = request(None);
        t.insert(key("http://a/x"), response("", &req, Bytes::new()));
        t.insert(key("http://a/y"), response("", &req, Bytes::new()));
        t.invalidate(&key("http://a/x"));
        assert!(matches!(
            t.lookup(&key("http://a/x"), &req),
            Lookup::UriMiss
        ));
        hit(t.lookup(&key("http://a/y"), &req));
        assert_eq!(t.stats().objects, 1);
    }

    #[test]
    fn eviction_counter_counts_size_evictions() {
        let t = tier(16 * KIB); // max object 2 KiB
        let req = request(None);
        let body = Bytes::from(vec![1u8; KIB as usize]);
        for i in 0..64 {
            t.insert(
                key(&format!("http://a/{i}")),
                response("", &req, body.clone()),
            );
        }
        t.run_pending_tasks();
        assert!(t.stats().evictions > 0);
        assert!(t.stats().bytes <= 16 * KIB);
    }

    #[test]
    fn hits_share_body_bytes() {
        let t = tier(1 << 20);
        let req = request(None);
        let body = Bytes::from(vec![9u8; 4096]);
        t.insert(key("http://a/x"), response("", &req, body.clone()));
        let a = hit(t.lookup(&key("http://a/x"), &req));
        let b = hit(t.lookup(&key("http://a/x"), &req));
        // Serving clones the handle: same buffer, no copy.
        let served = a.body[0].clone();
        assert_eq!(served.as_ptr(), body.as_ptr());
        assert_eq!(b.body[0].as_ptr(), body.as_ptr());
    }

    /// RFC 9111 §4.3.4: a 304 merge swaps the stored variant in place.
    #[test]
    fn replace_variant_swaps_only_the_stored_one() {
        let t = tier(1 << 20);
        let (gzip, br) = (request(Some("gzip")), request(Some("br")));
        let old = response("Accept-Encoding", &gzip, Bytes::from_static(b"old"));
        let sibling = response("Accept-Encoding", &br, Bytes::new());
        t.insert(key("http://a/x"), Arc::clone(&old));
        t.insert(key("http://a/x"), Arc::clone(&sibling));
        let merged = response("Accept-Encoding", &gzip, Bytes::from_static(b"old"));
        assert!(t.replace_variant(&key("http://a/x"), &old, Arc::clone(&merged)));
        assert!(Arc::ptr_eq(
            &hit(t.lookup(&key("http://a/x"), &gzip)),
            &merged
        ));
        assert!(Arc::ptr_eq(
            &hit(t.lookup(&key("http://a/x"), &br)),
            &sibling
        ));
        assert_eq!(t.stats().bytes, merged.size_bytes() + sibling.size_bytes());
        // `old` is gone now, so a second merge based on it is refused.
        let late = response("Accept-Encoding", &gzip, Bytes::new());
        assert!(!t.replace_variant(&key("http://a/x"), &old, late));
        // A purge during revalidation wins.
        t.remove_url("http://a/x");
        let again = response("Accept-Encoding", &gzip, Bytes::new());
        assert!(!t.replace_variant(&key("http://a/x"), &merged, again));
        assert!(matches!(
            t.lookup(&key("http://a/x"), &gzip),
            Lookup::UriMiss
        ));
    }
}
