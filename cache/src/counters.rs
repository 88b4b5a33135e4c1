//! Per-site cache counters: what the cache did for each request, kept as
//! relaxed atomics so recording costs no lock on the hit path. The metrics
//! exporter reads [`SiteCounters::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

/// What the cache step did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the store without contacting the origin (fresh, or stale
    /// under stale-while-revalidate / max-stale).
    Hit,
    /// Served from the store while stale, because the origin failed
    /// (stale-if-error).
    StaleOnError,
    /// Revalidated with the origin (304 or a new 200).
    Revalidated,
    /// Fetched from the origin (uri-miss or vary-miss), shared or not.
    Miss,
    /// Went around the cache (bypass rules, uncacheable method, no-store request).
    Bypass,
}

/// Counters of one site.
#[derive(Debug, Default)]
pub struct SiteCounters {
    hits: AtomicU64,
    stale_on_error: AtomicU64,
    revalidated: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    hit_bytes: AtomicU64,
}

/// A copy of a site's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Requests served from the store without the origin.
    pub hits: u64,
    /// Stale copies served because the origin failed.
    pub stale_on_error: u64,
    /// Entries revalidated with the origin.
    pub revalidated: u64,
    /// Requests fetched from the origin through the cache.
    pub misses: u64,
    /// Requests that went around the cache.
    pub bypasses: u64,
    /// Body bytes served from the store (hits and stale).
    pub hit_bytes: u64,
}

impl SiteCounters {
    /// Counts one request; `body_bytes` is what the store served (0 for
    /// answers that came from the origin).
    pub fn record(&self, outcome: Outcome, body_bytes: u64) {
        let counter = match outcome {
            Outcome::Hit => &self.hits,
            Outcome::StaleOnError => &self.stale_on_error,
            Outcome::Revalidated => &self.revalidated,
            Outcome::Miss => &self.misses,
            Outcome::Bypass => &self.bypasses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if body_bytes > 0 {
            self.hit_bytes.fetch_add(body_bytes, Ordering::Relaxed);
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            hits: self.hits.load(Ordering::Relaxed),
            stale_on_error: self.stale_on_error.load(Ordering::Relaxed),
            revalidated: self.revalidated.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bypasses: self.bypasses.load(Ordering::Relaxed),
            hit_bytes: self.hit_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_counts_in_its_own_counter() {
        let counters = SiteCounters::default();
        counters.record(Outcome::Hit, 100);
        counters.record(Outcome::Hit, 50);
        counters.record(Outcome::StaleOnError, 10);
        counters.record(Outcome::Revalidated, 0);
        counters.record(Outcome::Miss, 0);
        counters.record(Outcome::Bypass, 0);
        counters.record(Outcome::Bypass, 0);
        assert_eq!(
            counters.snapshot(),
            CounterSnapshot {
                hits: 2,
                stale_on_error: 1,
                revalidated: 1,
                misses: 1,
                bypasses: 2,
                hit_bytes: 160,
            }
        );
    }
}
