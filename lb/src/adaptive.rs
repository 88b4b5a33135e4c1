//! Adaptive concurrency limit (load shedding): how many requests a pool
//! may have waiting on its origin at once, learned from the latency the
//! origin shows, so an origin that slows down gets less work instead of a
//! growing queue, and the requests over the limit fail fast (503) instead
//! of piling up.
//!
//! # The controller: AIMD on latency
//!
//! - The **baseline** is the lowest response time seen in the current
//!   window (`window`, 10 s by default), carried over from the previous
//!   window when the current one has no sample yet: what the origin does
//!   when it is not queueing.
//! - A response slower than `tolerance` × baseline (2×), or a failure
//!   (5xx, timeout, refused), is a sign of queueing: the limit is
//!   multiplied by `backoff` (0.9), at most once per baseline RTT so a
//!   burst of slow answers to the same queue counts once.
//! - Any other response grows the limit by `1 / limit`, about +1 per
//!   limit's worth of answers (one "round"), as TCP's congestion avoidance.
//! - The limit stays within `min..=max`.
//!
//! Netflix's concurrency-limits (Gradient2) and Envoy's adaptive
//! concurrency filter do the same thing with a gradient; AIMD is simpler to
//! reason about and converges as well for a proxy that sees every answer.
//!
//! Once the origin is slow for good, the window's minimum rises with it and
//! the limit grows back to what the slower origin sustains, so a permanent
//! change is accepted within a window or two. Pure: time comes in as
//! [`Nanos`]; the state is a few atomics (a CAS loop on the limit), no lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::time::Nanos;

/// Settings of an adaptive limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// Starting limit.
    pub initial: u32,
    /// Lower bound: always let this many through.
    pub min: u32,
    /// Upper bound.
    pub max: u32,
    /// A response slower than this multiple of the baseline counts as queueing.
    pub tolerance: f64,
    /// Multiplier applied on queueing or failure.
    pub backoff: f64,
    /// How long one baseline (minimum RTT) window lasts.
    pub window: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        // Netflix concurrency-limits' defaults: start at 20, at least 1..
        AdaptiveConfig {
            initial: 20,
            min: 1,
            max: 1000,
            tolerance: 2.0,
            backoff: 0.9,
            window: Duration::from_secs(10),
        }
    }
}

/// One pool's adaptive limit.
#[derive(Debug)]
pub struct AdaptiveLimit {
    config: AdaptiveConfig,
    /// The limit as f64 bits (fractional growth accumulates).
    limit: AtomicU64,
    in_flight: AtomicU32,
    /// Minimum RTT (ns) of the current window, and of the previous one.
    window_min: AtomicU64,
    previous_min: AtomicU64,
    window_start: AtomicU64,
    /// Time of the last decrease, so one queue counts once per RTT.
    last_decrease: AtomicU64,
    shed: AtomicU64,
}

/// A request admitted under the limit; report how it went with
/// [`AdaptiveLimit::complete`].
#[derive(Debug)]
#[must_use = "complete the permit, or the slot stays taken"]
pub struct Admitted {
    started: Nanos,
}

impl Admitted {
    /// When the request was admitted.
    pub fn started(&self) -> Nanos {
        self.started
    }
}

impl AdaptiveLimit {
    /// A limit starting at `config.initial`.
    pub fn new(config: AdaptiveConfig) -> Self {
        let config = AdaptiveConfig {
            min: config.min.max(1),
            max: config.max.max(config.min.max(1)),
            ..config
        };
        let initial = f64::from(config.initial.clamp(config.min, config.max));
        AdaptiveLimit {
            config,
            limit: AtomicU64::new(initial.to_bits()),
            in_flight: AtomicU32::new(0),
            window_min: AtomicU64::new(u64::MAX),
            previous_min: AtomicU64::new(u64::MAX),
            window_start: AtomicU64::new(0),
            last_decrease: AtomicU64::new(0),
            shed: AtomicU64::new(0),
        }
    }

    /// The current limit (whole requests).
    pub fn limit(&self) -> u32 {
        f64::from_bits(self.limit.load(Ordering::Relaxed)) as u32
    }

    /// Requests admitted and not completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests refused since creation.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Admits a request if fewer than the limit are in flight.
    pub fn try_acquire(&self, now: Nanos) -> Option<Admitted> {
        let limit = self.limit();
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(Admitted { started: now })
        } else {
            self.shed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Reports how an admitted request went: `ok` when the origin answered
    /// without a server error, at `now`.
    pub fn complete(&self, admitted: Admitted, ok: bool, now: Nanos) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let rtt = now
            .as_nanos()
            .saturating_sub(admitted.started.as_nanos())
            .max(1);
        let baseline = self.observe_rtt(rtt, now);
        let queueing = !ok || (rtt as f64) > baseline as f64 * self.config.tolerance;
        if queueing {
            // Once per baseline RTT: the answers of one queue count once.
            let last = self.last_decrease.load(Ordering::Relaxed);
            if now.as_nanos().saturating_sub(last) < baseline {
                return;
            }
            if self
                .last_decrease
                .compare_exchange(last, now.as_nanos(), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            self.update(|limit| limit * self.config.backoff);
        } else {
            self.update(|limit| limit + 1.0 / limit);
        }
    }

    /// Releases an admitted request that says nothing about the origin (the
    /// client's own body was too slow): no latency sample, no change.
    pub fn release(&self, admitted: Admitted) {
        drop(admitted);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records `rtt` in the window and returns the baseline to compare with.
    fn observe_rtt(&self, rtt: u64, now: Nanos) -> u64 {
        let start = self.window_start.load(Ordering::Relaxed);
        let window = u64::try_from(self.config.window.as_nanos()).unwrap_or(u64::MAX);
        if now.as_nanos().saturating_sub(start) >= window
            && self
                .window_start
                .compare_exchange(start, now.as_nanos(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let ended = self.window_min.swap(u64::MAX, Ordering::AcqRel);
            if ended != u64::MAX {
                self.previous_min.store(ended, Ordering::Relaxed);
            }
        }
        let current = self.window_min.fetch_min(rtt, Ordering::AcqRel).min(rtt);
        let previous = self.previous_min.load(Ordering::Relaxed);
        // Early in a window the previous window's minimum is the better guide.
        if previous != u64::MAX {
            current.min(previous.max(current / 2))
        } else {
            current
        }
    }

    fn update(&self, f: impl Fn(f64) -> f64) {
        let (min, max) = (f64::from(self.config.min), f64::from(self.config.max));
        let _ = self
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).clamp(min, max).to_bits())
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Runs `rounds` rounds of `limit` concurrent requests each taking `rtt`.
    fn run(limit: &AdaptiveLimit, start: &mut u64, rounds: usize, rtt: u64, ok: bool) {
        for _ in 0..rounds {
            let now = Nanos::from_nanos(*start);
            let admitted: Vec<_> = (0..limit.limit())
                .filter_map(|_| limit.try_acquire(now))
                .collect();
            *start += rtt;
            for a in admitted {
                limit.complete(a, ok, Nanos::from_nanos(*start));
            }
        }
    }

    #[test]
    fn grows_while_fast_and_backs_off_when_the_origin_queues() {
        let limit = AdaptiveLimit::new(AdaptiveConfig::default());
        let mut t = MS;
        run(&limit, &mut t, 50, 2 * MS, true);
        let grown = limit.limit();
        assert!(grown > 60, "about +1 per round: {grown}");

        // The origin slows 500x: every round of answers backs off (all of a
        // round arrive at once here, so each round counts once).
        run(&limit, &mut t, 8, 1000 * MS, true);
        let slowed = limit.limit();
        assert!(slowed < grown / 2, "{grown} -> {slowed} after slowing");

        // Slow for good: the next window's baseline is the slow origin's,
        // and the limit grows back to what it sustains.
        run(&limit, &mut t, 100, 1000 * MS, true);
        assert!(limit.limit() > slowed, "the new normal is accepted");

        // Failures back off too.
        let before = limit.limit();
        run(&limit, &mut t, 3, 2 * MS, false);
        assert!(limit.limit() <= before);
    }

    #[test]
    fn sheds_over_the_limit_and_recovers_with_the_origin() {
        let limit = AdaptiveLimit::new(AdaptiveConfig {
            initial: 4,
            ..AdaptiveConfig::default()
        });
        let now = Nanos::from_nanos(MS);
        let admitted: Vec<_> = (0..4).map(|_| limit.try_acquire(now).unwrap()).collect();
        assert!(limit.try_acquire(now).is_none(), "the fifth is shed");
        assert_eq!(limit.shed(), 1);
        for a in admitted {
            limit.complete(a, true, Nanos::from_nanos(2 * MS));
        }
        assert_eq!(limit.in_flight(), 0);
        let mut t = 2 * MS;
        run(&limit, &mut t, 20, 1000 * MS, true);
        let low = limit.limit();
        // A new window with a fast origin: the limit climbs back.
        run(&limit, &mut t, 200, MS, true);
        assert!(limit.limit() > low + 10, "{low} -> {}", limit.limit());
    }

    #[test]
    fn stays_within_bounds() {
        let limit = AdaptiveLimit::new(AdaptiveConfig {
            initial: 5,
            min: 3,
            max: 8,
            ..AdaptiveConfig::default()
        });
        let mut t = MS;
        run(&limit, &mut t, 100, MS, true);
        assert_eq!(limit.limit(), 8);
        run(&limit, &mut t, 100, 1000 * MS, false);
        assert_eq!(limit.limit(), 3);
    }
}
