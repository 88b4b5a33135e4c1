//! Peak-EWMA latency per endpoint, and the `ewma` balancer's cost.
//!
//! The estimate follows Finagle's `PeakEwma` (ported to tower as
//! `tower::load::PeakEwma`, which linkerd2-proxy balances on): a sample above
//! the estimate replaces it at once (the *peak*: react to a slowdown in one
//! response), a sample below blends in with weight `1 - e^(-Δt/τ)` where Δt
//! is the time since the previous sample (recover only cautiously), and with
//! no samples the estimate decays toward zero with time constant τ so an
//! endpoint that was slow once is eventually tried again.
//!
//! The `ewma` balancer is P2C ([`crate::p2c`]) on
//! `estimate × (in_flight + 1) / weight`: latency times queue depth, the
//! expected wait of a new request there.
//!
//! Trade-off and our deviation: Finagle and tower write the decayed value back
//! on every *read*, i.e. on every pick. Here reads are pure (`estimate` at
//! `now` is computed from the stored value and its timestamp) so a pick never
//! writes the endpoint's cache line; only a response does, with two atomic
//! operations and no lock. The result is the same as tower's under load,
//! where reads happen between almost every pair of samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::time::{Nanos, duration_nanos};

/// τ, the decay time constant: after τ without samples the estimate has
/// fallen to 1/e (37%). 10 s is linkerd2-proxy's `EWMA_DECAY` and Finagle's
/// default `decayTime`: long enough that one fast response does not erase a
/// slowdown, short enough that a recovered endpoint is back within a minute.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// The estimate an endpoint starts with before its first response.
/// linkerd2-proxy's `EWMA_DEFAULT_RTT` is 30 ms: low enough that a new
/// endpoint is tried soon (and its in-flight count then limits how much it
/// gets before it is measured), high enough that it does not take a burst.
/// It decays like any estimate, so a new endpoint that is never picked still
/// becomes attractive within ~τ.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The latency a connect failure or reset is recorded as, at least. Such
/// failures answer in microseconds, so unpenalised they would make a broken
/// endpoint look like the fastest one and attract traffic (the "black hole").
/// 1 s is far above a healthy origin's time to first byte; with τ = 10 s the
/// penalty fades below 30 ms in ~35 s unless failures continue. Answers with
/// a 5xx keep their measured latency: an origin's 5xx is as often about the
/// request as about the host, and outlier detection handles repeated ones.
pub const DEFAULT_FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Peak-EWMA settings for a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EwmaConfig {
    /// τ: how fast old samples are forgotten ([`DEFAULT_DECAY`]).
    pub decay: Duration,
    /// Starting estimate of a never-measured endpoint ([`DEFAULT_RTT`]).
    pub default_rtt: Duration,
    /// Floor recorded for connect failures and resets ([`DEFAULT_FAILURE_PENALTY`]).
    pub failure_penalty: Duration,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        Self {
            decay: DEFAULT_DECAY,
            default_rtt: DEFAULT_RTT,
            failure_penalty: DEFAULT_FAILURE_PENALTY,
        }
    }
}

/// One endpoint's latency estimate: two atomics, no lock.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    /// The estimate at `stamp`, in nanoseconds, as `f64` bits.
    cost: AtomicU64,
    /// When `cost` was last updated by a sample (or created).
    stamp: AtomicU64,
}

impl PeakEwma {
    pub(crate) fn new(initial: Duration, now: Nanos) -> Self {
        Self {
            cost: AtomicU64::new((duration_nanos(initial) as f64).to_bits()),
            stamp: AtomicU64::new(now.as_nanos()),
        }
    }

    /// The estimate at `now` in nanoseconds: the stored value decayed toward
    /// zero for the time since the last sample. Reads only.
    #[inline]
    pub(crate) fn estimate(&self, now: Nanos, decay: Duration) -> f64 {
        let cost = f64::from_bits(self.cost.load(Ordering::Relaxed));
        let elapsed = now
            .as_nanos()
            .saturating_sub(self.stamp.load(Ordering::Relaxed));
        if elapsed == 0 {
            return cost;
        }
        cost * (-(elapsed as f64) / tau_nanos(decay)).exp()
    }

    /// Records a response latency observed at `now`.
    pub(crate) fn observe(&self, rtt: Duration, now: Nanos, decay: Duration) {
        // `fetch_max` hands each concurrent recorder a disjoint slice of the
        // elapsed time (and ignores clocks read slightly out of order), so
        // the total weight given to samples stays right without a lock.
        let previous = self.stamp.fetch_max(now.as_nanos(), Ordering::AcqRel);
        let elapsed = now.as_nanos().saturating_sub(previous) as f64;
        let keep = (-elapsed / tau_nanos(decay)).exp();
        let rtt = duration_nanos(rtt) as f64;
        let _ = self
            .cost
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| {
                let cost = f64::from_bits(bits);
                let next = if rtt > cost {
                    rtt
                } else {
                    cost * keep + rtt * (1.0 - keep)
                };
                Some(next.to_bits())
            });
    }
}

fn tau_nanos(decay: Duration) -> f64 {
    // A zero τ would divide by zero; 1 ns means "no memory".
    (duration_nanos(decay) as f64).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = DEFAULT_DECAY;

    fn ms(ns: f64) -> f64 {
        ns / 1e6
    }

    #[test]
    fn starts_at_the_default_and_decays_toward_zero() {
        let e = PeakEwma::new(DEFAULT_RTT, Nanos::ZERO);
        assert_eq!(ms(e.estimate(Nanos::ZERO, TAU)), 30.0);
        // After one τ without samples: 30 ms / e.
        let after_tau = ms(e.estimate(Nanos::from_secs(10), TAU));
        assert!(
            (after_tau - 30.0 / std::f64::consts::E).abs() < 1e-9,
            "{after_tau}"
        );
    }

    #[test]
    fn a_slow_sample_is_taken_at_once() {
        let e = PeakEwma::new(DEFAULT_RTT, Nanos::ZERO);
        e.observe(Duration::from_millis(500), Nanos::from_millis(1), TAU);
        assert_eq!(ms(e.estimate(Nanos::from_millis(1), TAU)), 500.0);
    }

    #[test]
    fn fast_samples_pull_the_estimate_down_by_elapsed_time() {
        let e = PeakEwma::new(Duration::from_millis(100), Nanos::ZERO);
        // One sample one τ later: weight 1 - 1/e on the new value.
        e.observe(Duration::from_millis(10), Nanos::from_secs(10), TAU);
        let expected = 100.0 / std::f64::consts::E + 10.0 * (1.0 - 1.0 / std::f64::consts::E);
        let got = ms(e.estimate(Nanos::from_secs(10), TAU));
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn samples_with_no_elapsed_time_below_the_peak_change_nothing() {
        let e = PeakEwma::new(Duration::from_millis(100), Nanos::ZERO);
        e.observe(Duration::from_millis(1), Nanos::ZERO, TAU);
        assert_eq!(ms(e.estimate(Nanos::ZERO, TAU)), 100.0);
    }

    #[test]
    fn out_of_order_clocks_do_not_move_the_stamp_back() {
        let e = PeakEwma::new(Duration::from_millis(10), Nanos::from_secs(5));
        e.observe(Duration::from_millis(1), Nanos::from_secs(4), TAU);
        assert_eq!(
            e.stamp.load(Ordering::Relaxed),
            Nanos::from_secs(5).as_nanos()
        );
    }
}
