//! The endpoint set: an immutable snapshot swapped atomically on change.
//!
//! Picks read the current [`Snapshot`] through `arc_swap::ArcSwap::load`,
//! which takes no lock and does not touch a shared reference count (it
//! borrows through a per-thread debt slot). A change — DNS adding or removing
//! addresses, a weight change, a config reload — builds a whole new snapshot
//! (endpoint list, address index, weight table, round-robin cycle, hash ring)
//! off to the side and publishes it with one atomic store. Writers are
//! serialised by a mutex that pickers never see.
//!
//! Endpoint state is per-address, not per-snapshot: an address present
//! before and after an update keeps its `Arc<Endpoint>`, so its in-flight
//! count, latency estimate, health, ejection and breaker survive (the lesson
//! of cloudflare/pingora#821: counters must survive backend-set rebuilds). An
//! address that leaves is marked removed and simply dropped from the new
//! snapshot; requests already running hold their own `Arc` and finish
//! normally — that is the drain — and the last one reports
//! [`Event::Drained`]. An address that comes back while its old requests
//! still run starts with fresh state; the old incarnation drains on its own
//! (so its Drained may arrive after the new Joined).
//!
//! The snapshot also caches the pool's [`Availability`] (panic mode, and the
//! available weight for bounded-load hashing) in one atomic word, so a pick
//! does not scan every endpoint. The cache is exact: it is invalidated by a
//! generation counter bumped on every state change, and it expires at the
//! earliest time-driven change it saw (an ejection or open breaker ending).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use crate::endpoint::{Endpoint, EndpointSpec};
use crate::event::Event;
use crate::hash::Ring;
use crate::health::DEFAULT_FALL;
use crate::p2c::WeightTable;
use crate::pool::{Balance, PoolConfig, PoolShared};
use crate::round_robin::SmoothWeighted;
use crate::time::Nanos;

/// What a pick needs to know about the whole pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Availability {
    /// Spread over all endpoints (see [`crate::pool`]).
    pub(crate) panic: bool,
    /// Total weight of the available endpoints (bounded-load hashing).
    pub(crate) available_weight: u64,
}

/// The counts behind a fresh [`Availability`], for events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    pub(crate) available: usize,
    pub(crate) total: usize,
}

// The cache is one word, so a reader gets a consistent view with one load:
// bits 24..64 the time it is good until, in whole milliseconds (rounded
// down, so it errs toward rescanning; 2^40 ms is 34 years), bit 16 panic,
// bits 0..16 the low bits of the pool generation it was computed for (a
// stale word would need exactly 65 536 state changes in between to pass).
const GEN_MASK: u64 = 0xffff;
const PANIC_BIT: u64 = 1 << 16;
const UNTIL_SHIFT: u32 = 24;
const UNTIL_MAX_MS: u64 = (1 << 40) - 1;

/// One immutable version of the endpoint set and its lookup tables.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) config: Arc<PoolConfig>,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) index: HashMap<SocketAddr, usize>,
    pub(crate) weights: WeightTable,
    pub(crate) round_robin: Option<SmoothWeighted>,
    pub(crate) ring: Option<Ring>,
    /// Cached [`Availability`] (see the word layout above); 0 is stale.
    availability: AtomicU64,
    available_weight: AtomicU64,
}

impl Snapshot {
    fn build(config: Arc<PoolConfig>, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let weights: Vec<u32> = endpoints
            .iter()
            .map(|e| e.weight.load(Ordering::Relaxed))
            .collect();
        let index = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.addr, i))
            .collect();
        let round_robin =
            matches!(config.balance, Balance::RoundRobin).then(|| SmoothWeighted::new(&weights));
        let ring = matches!(config.balance, Balance::Hash { .. }).then(|| {
            let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
            Ring::new(&addrs, &weights)
        });
        Self {
            config,
            endpoints,
            index,
            weights: WeightTable::new(weights),
            round_robin,
            ring,
            availability: AtomicU64::new(0),
            available_weight: AtomicU64::new(0),
        }
    }

    /// The pool's availability at `now`: from the cache when it is current
    /// (one atomic load and a compare), else by scanning every endpoint, in
    /// which case the scan's counts come back too. `on_return` is called
    /// once for each endpoint whose ejection the scan finds over.
    pub(crate) fn availability(
        &self,
        now: Nanos,
        generation: &AtomicU64,
        mut on_return: impl FnMut(&Endpoint),
    ) -> (Availability, Option<Scan>) {
        let generation = generation.load(Ordering::Acquire);
        let word = self.availability.load(Ordering::Acquire);
        let now_ms = now.as_nanos() / 1_000_000;
        if word & GEN_MASK == generation & GEN_MASK && now_ms < word >> UNTIL_SHIFT {
            let cached = Availability {
                panic: word & PANIC_BIT != 0,
                available_weight: self.available_weight.load(Ordering::Relaxed),
            };
            return (cached, None);
        }
        let mut valid_until = u64::MAX;
        let mut available = 0;
        let mut available_weight = 0;
        for (i, ep) in self.endpoints.iter().enumerate() {
            if ep.outlier.take_returned(now) {
                on_return(ep);
            }
            let changes_at = [ep.outlier.ejected_until(now), ep.breaker.open_deadline(now)];
            for t in changes_at.into_iter().flatten() {
                valid_until = valid_until.min(t.as_nanos());
            }
            if ep.is_available(now) {
                available += 1;
                available_weight += u64::from(self.weights.weight(i));
            }
        }
        let total = self.endpoints.len();
        // Panic when available / total < threshold / 100 (integers, no rounding).
        let threshold = usize::from(self.config.panic_threshold_percent.min(100));
        let panic = available * 100 < threshold * total;
        let until_ms = (valid_until / 1_000_000).min(UNTIL_MAX_MS);
        let word =
            (until_ms << UNTIL_SHIFT) | if panic { PANIC_BIT } else { 0 } | (generation & GEN_MASK);
        // A racing scan from an older generation may overwrite this; its
        // generation then mismatches and the next reader rescans.
        self.available_weight
            .store(available_weight, Ordering::Relaxed);
        self.availability.store(word, Ordering::Release);
        let fresh = Availability {
            panic,
            available_weight,
        };
        (fresh, Some(Scan { available, total }))
    }
}

/// The current snapshot and the writer side that replaces it.
#[derive(Debug)]
pub(crate) struct EndpointSet {
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
}

impl EndpointSet {
    pub(crate) fn new(config: Arc<PoolConfig>) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::build(config, Vec::new())),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot; lock-free, never blocks on writers.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    #[cfg(test)]
    pub(crate) fn load_full_for_tests(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the endpoint list, keeping the state of addresses that stay.
    /// Returns the changes as events, in order: joins and weight changes,
    /// then removals (and drains of removed endpoints with nothing running).
    pub(crate) fn update(
        &self,
        pool: &Arc<PoolShared>,
        specs: &[EndpointSpec],
        now: Nanos,
    ) -> Vec<Event> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.current.load_full();
        let config = Arc::clone(&old.config);
        let fall = config.health.as_ref().map_or(DEFAULT_FALL, |h| h.fall);
        let mut events = Vec::new();
        let mut seen = HashSet::with_capacity(specs.len());
        let mut endpoints = Vec::with_capacity(specs.len());
        for spec in specs {
            if !seen.insert(spec.addr) {
                continue; // the first mention of an address wins
            }
            let weight = spec.clamped_weight();
            let ep = match old.index.get(&spec.addr) {
                Some(&i) => {
                    let ep = Arc::clone(&old.endpoints[i]);
                    let from = ep.weight.swap(weight, Ordering::Relaxed);
                    if from != weight {
                        events.push(Event::Reweighted {
                            addr: spec.addr,
                            from,
                            to: weight,
                        });
                    }
                    ep
                }
                None => {
                    events.push(Event::Joined {
                        addr: spec.addr,
                        weight,
                    });
                    Arc::new(Endpoint::new(
                        spec,
                        config.ewma.default_rtt,
                        fall,
                        now,
                        Arc::clone(pool),
                    ))
                }
            };
            endpoints.push(ep);
        }
        if events.is_empty() && endpoints.len() == old.endpoints.len() {
            // Same addresses and weights (DNS answers often differ only in
            // order): keep the snapshot and its tables rather than rebuild.
            return events;
        }
        self.current
            .store(Arc::new(Snapshot::build(config, endpoints)));
        // Marked only after the new snapshot is live: a pick still holding
        // the old one may choose a removed endpoint, which is harmless (the
        // request runs and the endpoint drains after it).
        for ep in old.endpoints.iter().filter(|e| !seen.contains(&e.addr)) {
            let drained = ep.mark_removed();
            events.push(Event::Removed {
                addr: ep.addr,
                in_flight: ep.in_flight(),
            });
            if drained {
                events.push(Event::Drained { addr: ep.addr });
            }
        }
        events
    }

    /// Empties the set: endpoints refer back to the pool, so the pool's last
    /// handle calls this to break the cycle. Running requests still finish.
    pub(crate) fn clear(&self) {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let config = Arc::clone(&self.current.load().config);
        self.current
            .store(Arc::new(Snapshot::build(config, Vec::new())));
    }

    /// Publishes `config` with the same endpoints (tables rebuilt for it).
    pub(crate) fn reconfigure(&self, config: Arc<PoolConfig>) {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let endpoints = self.current.load().endpoints.clone();
        self.current
            .store(Arc::new(Snapshot::build(config, endpoints)));
    }
}
