//! Active health checks: the configuration and the per-endpoint state machine.
//!
//! The `edge` binary does the I/O (an HTTP GET of `path` every `interval`
//! plus jitter, bounded by `timeout`) and feeds each result to
//! [`crate::Pool::record_check`]; this module only counts. An endpoint goes
//! down after `fall` consecutive failed checks and comes back after `rise`
//! consecutive passes, as HAProxy's `rise`/`fall` do; the defaults are
//! HAProxy's (`inter 2s`, `rise 2`, `fall 3`).
//!
//! Start state, from HAProxy's `init-state up` (its default): a new endpoint
//! (at start-up, or added by DNS) takes traffic at once, but its *first*
//! failed check takes it down. A pool therefore serves before any check has
//! run, and a dead address that DNS hands us is out after one interval, not
//! `fall` intervals.
//!
//! Unhealthy endpoints get no traffic unless the pool is in panic mode (see
//! [`crate::pool`]).

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::rng::RandomSource;

/// HAProxy's default `inter`: frequent enough to notice a dead origin within
/// seconds, cheap enough at one request per endpoint per interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// A check slower than this failed. Below the interval so checks never overlap.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// HAProxy's default `rise`: one lucky answer does not bring a flapping origin back.
pub const DEFAULT_RISE: u32 = 2;
/// HAProxy's default `fall`: one lost check does not take a busy origin out.
pub const DEFAULT_FALL: u32 = 3;
/// Up to 10% of the interval added at random to every wait, so checks from
/// many workers and nodes do not arrive at an origin in lock-step (HAProxy's
/// `spread-checks`, Envoy's `interval_jitter`).
pub const DEFAULT_JITTER: Duration = Duration::from_millis(200);

/// How a pool checks its endpoints. The `edge` binary performs the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Path of the HTTP GET, e.g. `/health`.
    pub path: String,
    /// Time between two checks of one endpoint (before jitter).
    pub interval: Duration,
    /// A check with no complete answer after this failed.
    pub timeout: Duration,
    /// Status codes that pass; HAProxy's `http-check` default is 2xx and 3xx.
    pub expected_status: RangeInclusive<u16>,
    /// Consecutive passes that bring an unhealthy endpoint back.
    pub rise: u32,
    /// Consecutive failures that take a healthy endpoint out.
    pub fall: u32,
    /// A random `[0, jitter)` added to each interval.
    pub jitter: Duration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: "/".to_owned(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            expected_status: 200..=399,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            jitter: DEFAULT_JITTER,
        }
    }
}

impl HealthCheckConfig {
    /// Whether a check answered with `status` passes.
    pub fn passes(&self, status: u16) -> bool {
        self.expected_status.contains(&status)
    }

    /// The result of a check that got an answer with `status`. Timeouts,
    /// refused connections and resets are [`CheckResult::Fail`].
    pub fn classify(&self, status: u16) -> CheckResult {
        if self.passes(status) {
            CheckResult::Pass
        } else {
            CheckResult::Fail
        }
    }

    /// How long to wait before the next check of one endpoint.
    pub fn next_delay<R: RandomSource + ?Sized>(&self, rng: &mut R) -> Duration {
        self.interval + self.jitter.mul_f64(rng.unit_f64())
    }

    /// How long to wait before an endpoint's first check: uniform over one
    /// interval, so the checks of a pool (or of a freshly started node) are
    /// spread out instead of all firing at once.
    pub fn first_delay<R: RandomSource + ?Sized>(&self, rng: &mut R) -> Duration {
        self.interval.mul_f64(rng.unit_f64())
    }
}

/// The result of one active check, as the I/O layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// The endpoint answered with an expected status in time.
    Pass,
    /// Wrong status, timeout, refused or reset connection.
    Fail,
}

// Packed state: bit 31 healthy, bits 16..31 consecutive failures, bits 0..16
// consecutive passes. One word, so a check result is a single CAS and the
// pick path reads health with one load.
const HEALTHY: u32 = 1 << 31;
const COUNT_MAX: u32 = 0x7fff;
const FAIL_SHIFT: u32 = 16;

/// One endpoint's active-check state.
#[derive(Debug)]
pub(crate) struct HealthState {
    word: AtomicU32,
}

impl HealthState {
    /// Healthy, one failed check away from down (HAProxy `init-state up`).
    pub(crate) fn new(fall: u32) -> Self {
        let failures = fall.saturating_sub(1).min(COUNT_MAX);
        Self {
            word: AtomicU32::new(HEALTHY | (failures << FAIL_SHIFT)),
        }
    }

    #[inline]
    pub(crate) fn is_healthy(&self) -> bool {
        self.word.load(Ordering::Relaxed) & HEALTHY != 0
    }

    /// Counts one check; returns the new health when it flipped.
    pub(crate) fn record(&self, result: CheckResult, rise: u32, fall: u32) -> Option<bool> {
        let mut flipped = None;
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let healthy = word & HEALTHY != 0;
                let passes = word & COUNT_MAX;
                let failures = (word >> FAIL_SHIFT) & COUNT_MAX;
                let (healthy_now, passes, failures) = match result {
                    CheckResult::Pass => {
                        let passes = (passes + 1).min(COUNT_MAX);
                        (healthy || passes >= rise.max(1), passes, 0)
                    }
                    CheckResult::Fail => {
                        let failures = (failures + 1).min(COUNT_MAX);
                        (healthy && failures < fall.max(1), 0, failures)
                    }
                };
                flipped = (healthy_now != healthy).then_some(healthy_now);
                let flag = if healthy_now { HEALTHY } else { 0 };
                Some(flag | (failures << FAIL_SHIFT) | passes)
            });
        flipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::WyRand;
    use CheckResult::{Fail, Pass};

    /// A named case: checks fed in order, health after each, flips reported.
    type Case = (
        &'static str,
        &'static [CheckResult],
        &'static [bool],
        &'static [Option<bool>],
    );

    /// Rise 2, fall 3.
    #[test]
    fn rise_and_fall_table() {
        let cases: &[Case] = &[
            (
                "a new endpoint goes down on its first failure",
                &[Fail],
                &[false],
                &[Some(false)],
            ),
            (
                "one pass clears the start-up probation",
                &[Pass, Fail, Fail, Fail],
                &[true, true, true, false],
                &[None, None, None, Some(false)],
            ),
            (
                "down needs `rise` consecutive passes",
                &[Fail, Pass, Fail, Pass, Pass],
                &[false, false, false, false, true],
                &[Some(false), None, None, None, Some(true)],
            ),
            (
                "a pass resets the failure streak",
                &[Pass, Fail, Fail, Pass, Fail, Fail, Fail],
                &[true, true, true, true, true, true, false],
                &[None, None, None, None, None, None, Some(false)],
            ),
        ];
        for (name, checks, health, flips) in cases {
            let state = HealthState::new(DEFAULT_FALL);
            for (i, check) in checks.iter().enumerate() {
                let flip = state.record(*check, DEFAULT_RISE, DEFAULT_FALL);
                assert_eq!(flip, flips[i], "{name}: flip after check {i}");
                assert_eq!(
                    state.is_healthy(),
                    health[i],
                    "{name}: health after check {i}"
                );
            }
        }
    }

    #[test]
    fn rise_and_fall_of_one_flip_immediately() {
        let state = HealthState::new(1);
        assert_eq!(state.record(Fail, 1, 1), Some(false));
        assert_eq!(state.record(Pass, 1, 1), Some(true));
    }

    #[test]
    fn status_ranges_and_delays() {
        let cfg = HealthCheckConfig::default();
        assert_eq!(cfg.classify(200), Pass);
        assert_eq!(cfg.classify(302), Pass);
        assert_eq!(cfg.classify(404), Fail);
        assert_eq!(cfg.classify(503), Fail);
        let mut rng = WyRand::new(1);
        for _ in 0..100 {
            let d = cfg.next_delay(&mut rng);
            assert!(d >= cfg.interval && d < cfg.interval + cfg.jitter);
            assert!(cfg.first_delay(&mut rng) < cfg.interval);
        }
    }
}
