//! Passive outlier detection: eject an endpoint after consecutive failures.
//!
//! Modelled on Envoy's outlier detection (`consecutive_5xx`,
//! `base_ejection_time`, `max_ejection_time`, `max_ejection_percent`): every
//! response the pool sees is a free health check. After
//! `consecutive_failures` failures in a row (5xx, connect failures, resets,
//! timeouts; any success resets the streak) the endpoint is ejected for
//! `base_ejection_time × n`, where `n` counts its recent ejections, capped at
//! `max_ejection_time`. `n` drops by one for every `base_ejection_time` the
//! endpoint then spends without an ejection, so an endpoint that flaps keeps
//! being ejected for longer while one that recovered starts over. When the
//! ejection ends the endpoint gets its full share again (no probation: that
//! is the circuit breaker's job, see [`crate::breaker`]).
//!
//! The ejected fraction is capped: at most `max_ejection_percent` of the
//! pool's endpoints are ejected at once, but always at least one (Envoy's
//! rule). A failing endpoint over the cap keeps its traffic and the pool
//! reports [`crate::Event::EjectionCapped`] so operators see why. The cap
//! stops a pool-wide problem (the origin's database is down, every endpoint
//! answers 503) from ejecting every endpoint; panic mode is the second guard.
//!
//! This module holds one endpoint's state; the cap needs the whole set and is
//! checked by [`crate::Pool`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::time::{Nanos, duration_nanos};

/// Envoy's `consecutive_5xx` default: five failures in a row are rarely bad luck.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Envoy's `base_ejection_time` default.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Envoy's `max_ejection_time` default: a flapping endpoint is out 5 min at most.
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Envoy's `max_ejection_percent` default.
pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 10;

/// Passive outlier detection settings for a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint; 0 turns detection off.
    pub consecutive_failures: u32,
    /// Length of a first ejection; the n-th recent one lasts n times this.
    pub base_ejection_time: Duration,
    /// Upper bound on one ejection.
    pub max_ejection_time: Duration,
    /// Most endpoints of the pool ejected at once, in percent (at least one).
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

impl OutlierConfig {
    /// How many of `total` endpoints may be ejected at once.
    pub fn max_ejected(&self, total: usize) -> usize {
        (total * usize::from(self.max_ejection_percent.min(100)) / 100).max(1)
    }
}

/// What a recorded outcome means for ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutlierSignal {
    /// Nothing to do.
    Quiet,
    /// The failure streak is at or past the threshold: eject if the cap
    /// allows. `first` is true when the streak just reached it, so the
    /// caller reports a capped ejection once per streak.
    Eject { first: bool },
}

/// An ejection that took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ejection {
    pub(crate) until: Nanos,
    pub(crate) duration: Duration,
    /// The multiplier used: the endpoint's recent ejection count.
    pub(crate) count: u32,
}

/// One endpoint's outlier state: four atomics, no lock.
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive: AtomicU32,
    /// End of the current (or last) ejection; "ejected" is `now < until`.
    until: AtomicU64,
    /// Recent ejections, the time multiplier.
    count: AtomicU32,
    /// Set on ejection, cleared by whoever first sees it over, so the return
    /// is reported once.
    unreported: AtomicBool,
}

impl OutlierState {
    #[inline]
    pub(crate) fn is_ejected(&self, now: Nanos) -> bool {
        now.as_nanos() < self.until.load(Ordering::Relaxed)
    }

    /// The end of the current ejection, if any.
    pub(crate) fn ejected_until(&self, now: Nanos) -> Option<Nanos> {
        let until = self.until.load(Ordering::Relaxed);
        (now.as_nanos() < until).then_some(Nanos::from_nanos(until))
    }

    pub(crate) fn ejection_count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts one response.
    pub(crate) fn record(&self, failure: bool, now: Nanos, cfg: &OutlierConfig) -> OutlierSignal {
        if cfg.consecutive_failures == 0 {
            return OutlierSignal::Quiet;
        }
        if !failure {
            // Read first: a healthy endpoint's successes then never write.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return OutlierSignal::Quiet;
        }
        // While ejected (stragglers, or panic-mode traffic) failures are not
        // counted: the streak after the return starts from zero.
        if self.is_ejected(now) {
            return OutlierSignal::Quiet;
        }
        let streak = self
            .consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if streak < cfg.consecutive_failures {
            return OutlierSignal::Quiet;
        }
        OutlierSignal::Eject {
            first: streak == cfg.consecutive_failures,
        }
    }

    /// Ejects now unless already ejected (or another thread just did).
    pub(crate) fn eject(&self, now: Nanos, cfg: &OutlierConfig) -> Option<Ejection> {
        let previous_end = self.until.load(Ordering::Acquire);
        if now.as_nanos() < previous_end {
            return None;
        }
        let base = duration_nanos(cfg.base_ejection_time).max(1);
        // One step of forgiveness per base time spent without an ejection.
        let quiet_periods = if previous_end == 0 {
            u64::MAX
        } else {
            (now.as_nanos() - previous_end) / base
        };
        let recent = u64::from(self.count.load(Ordering::Relaxed)).saturating_sub(quiet_periods);
        let count = u32::try_from(recent + 1).unwrap_or(u32::MAX);
        let duration = cfg
            .base_ejection_time
            .saturating_mul(count)
            .min(cfg.max_ejection_time.max(cfg.base_ejection_time));
        let until = now + duration;
        self.until
            .compare_exchange(
                previous_end,
                until.as_nanos(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        self.count.store(count, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.unreported.store(true, Ordering::Release);
        Some(Ejection {
            until,
            duration,
            count,
        })
    }

    /// True once per ejection, for the first caller that sees it over.
    pub(crate) fn take_returned(&self, now: Nanos) -> bool {
        self.unreported.load(Ordering::Relaxed)
            && !self.is_ejected(now)
            && self
                .unreported
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(100),
            max_ejection_percent: 10,
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Ok(u64),
        Fail(u64),
        /// Eject at this second; expect the ejection's length (None: refused).
        Eject(u64, Option<u64>),
        Ejected(u64, bool),
        Returned(u64, bool),
    }
    use Step::*;

    fn run(name: &str, steps: &[Step], signals: &[OutlierSignal]) {
        let state = OutlierState::default();
        let cfg = cfg();
        let mut seen = Vec::new();
        for step in steps {
            match *step {
                Ok(t) => {
                    state.record(false, Nanos::from_secs(t), &cfg);
                }
                Fail(t) => {
                    let s = state.record(true, Nanos::from_secs(t), &cfg);
                    if s != OutlierSignal::Quiet {
                        seen.push(s);
                    }
                }
                Eject(t, expect) => {
                    let got = state
                        .eject(Nanos::from_secs(t), &cfg)
                        .map(|e| e.duration.as_secs());
                    assert_eq!(got, expect, "{name}: eject at {t}s");
                }
                Ejected(t, expect) => {
                    assert_eq!(
                        state.is_ejected(Nanos::from_secs(t)),
                        expect,
                        "{name}: ejected at {t}s"
                    )
                }
                Returned(t, expect) => {
                    assert_eq!(
                        state.take_returned(Nanos::from_secs(t)),
                        expect,
                        "{name}: returned at {t}s"
                    )
                }
            }
        }
        assert_eq!(seen, signals, "{name}: signals");
    }

    #[test]
    fn consecutive_failures_signal_once_per_streak_start() {
        let first = OutlierSignal::Eject { first: true };
        let again = OutlierSignal::Eject { first: false };
        run("three in a row", &[Fail(0), Fail(0), Fail(0)], &[first]);
        run(
            "a success breaks the streak",
            &[Fail(0), Fail(0), Ok(0), Fail(0), Fail(0)],
            &[],
        );
        run(
            "past the threshold",
            &[Fail(0), Fail(0), Fail(0), Fail(0)],
            &[first, again],
        );
        run(
            "no signal while ejected; the streak restarts after",
            &[
                Fail(0),
                Fail(0),
                Fail(0),
                Eject(0, Some(30)),
                Fail(1),
                Fail(2),
                Fail(3),
                Fail(31),
                Fail(31),
                Fail(31),
            ],
            &[first, first],
        );
    }

    #[test]
    fn ejection_time_grows_with_repeats_and_is_capped() {
        run(
            "30 s, 60 s, 90 s, then the 100 s cap",
            &[
                Eject(0, Some(30)),
                Ejected(29, true),
                Ejected(30, false),
                Eject(30, Some(60)),
                Eject(40, None),
                Eject(90, Some(90)),
                Eject(180, Some(100)),
                Eject(280, Some(100)),
            ],
            &[],
        );
    }

    #[test]
    fn quiet_time_forgives_one_step_per_base_time() {
        run(
            "ejected twice, then quiet",
            &[
                Eject(0, Some(30)),
                Eject(30, Some(60)), // count 2, ends at 90
                // 65 s quiet = two base periods: count 2 - 2 + 1 = 1.
                Eject(155, Some(30)),
            ],
            &[],
        );
    }

    #[test]
    fn return_is_reported_once() {
        run(
            "returned",
            &[
                Eject(0, Some(30)),
                Returned(10, false),
                Returned(30, true),
                Returned(31, false),
            ],
            &[],
        );
    }

    #[test]
    fn zero_threshold_disables_detection() {
        let state = OutlierState::default();
        let cfg = OutlierConfig {
            consecutive_failures: 0,
            ..cfg()
        };
        for _ in 0..100 {
            assert_eq!(state.record(true, Nanos::ZERO, &cfg), OutlierSignal::Quiet);
        }
    }

    #[test]
    fn cap_allows_at_least_one() {
        let cfg = OutlierConfig::default();
        assert_eq!(cfg.max_ejected(3), 1);
        assert_eq!(cfg.max_ejected(10), 1);
        assert_eq!(cfg.max_ejected(25), 2);
        let half = OutlierConfig {
            max_ejection_percent: 50,
            ..cfg
        };
        assert_eq!(half.max_ejected(10), 5);
    }
}
