//! Per-pool concurrency cap: fail fast instead of queueing.
//!
//! A pool that already has `max` requests in flight answers the next one at
//! once (the caller sends a 503) rather than piling more onto a struggling
//! origin: Envoy's `max_requests` circuit-breaker threshold, and
//! linkerd2-proxy's fail-fast. One atomic counter, incremented with a CAS
//! that never passes the cap; no lock, no queue.
//!
//! [`crate::Pool::pick`] applies the cap itself (`PoolConfig::max_requests`).
//! [`ConcurrencyLimit`] is public so the `edge` binary can put the same kind
//! of cap on pending upstream connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A counter of in-flight work with an optional cap (0 = no cap).
#[derive(Debug, Default)]
pub struct ConcurrencyLimit {
    max: AtomicUsize,
    current: AtomicUsize,
}

impl ConcurrencyLimit {
    /// A limit of `max` at once; `None` counts without capping.
    pub fn new(max: Option<usize>) -> Self {
        Self {
            max: AtomicUsize::new(max.unwrap_or(0)),
            current: AtomicUsize::new(0),
        }
    }

    /// Changes the cap (on config reload); work already admitted stays.
    pub fn set_max(&self, max: Option<usize>) {
        self.max.store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// The cap, if any.
    pub fn max(&self) -> Option<usize> {
        match self.max.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Work in flight now.
    pub fn in_use(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Admits one unit of work, or returns `None` at the cap.
    pub fn try_acquire(self: &Arc<Self>) -> Option<LimitPermit> {
        self.acquire_raw().then(|| LimitPermit {
            limit: Arc::clone(self),
        })
    }

    /// Admission without a permit; the caller must call `release_raw` once.
    pub(crate) fn acquire_raw(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            self.current.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn release_raw(&self) {
        self.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One admitted unit of work; dropping it frees the slot.
#[derive(Debug)]
pub struct LimitPermit {
    limit: Arc<ConcurrencyLimit>,
}

impl Drop for LimitPermit {
    fn drop(&mut self) {
        self.limit.release_raw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_frees() {
        let limit = Arc::new(ConcurrencyLimit::new(Some(2)));
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.in_use(), 2);
        drop(a);
        assert!(limit.try_acquire().is_some());
    }

    #[test]
    fn no_cap_only_counts() {
        let limit = Arc::new(ConcurrencyLimit::new(None));
        let permits: Vec<_> = (0..1000).map(|_| limit.try_acquire().unwrap()).collect();
        assert_eq!(limit.in_use(), 1000);
        drop(permits);
        assert_eq!(limit.in_use(), 0);
    }

    #[test]
    fn concurrent_acquirers_never_pass_the_cap() {
        let limit = Arc::new(ConcurrencyLimit::new(Some(3)));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let limit = Arc::clone(&limit);
                s.spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(p) = limit.try_acquire() {
                            assert!(limit.in_use() <= 3);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert_eq!(limit.in_use(), 0);
    }
}
