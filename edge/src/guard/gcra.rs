//! GCRA, the generic cell rate algorithm (ITU-T I.371; the form Brandur
//! Leach's `redis-cell` and the `governor` crate use for HTTP): a rate
//! limit kept as one timestamp per client.
//!
//! A client's state is its theoretical arrival time (TAT): when its next
//! request would be due if it sent at exactly the sustained rate. Each
//! allowed request pushes the TAT one emission interval `T` further; a
//! request may arrive up to `τ = (burst − 1) × T` before its TAT. So an
//! idle client may send `burst` requests at once, then one per `T`.
//!
//! Why GCRA rather than a token bucket: the same behaviour, but the state
//! is a single `u64` and there is no refill step — time passing is implicit
//! in comparing `now` with the TAT. A TAT in the past is the same as no
//! state at all, which is what lets [`super::table`] drop such entries
//! freely.
//!
//! Pure: time is an argument ([`Nanos`] on the node's monotonic clock).

use std::time::Duration;

use edge_lb::Nanos;

/// One site's limit in GCRA terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval `T`: time between requests at the sustained rate, in ns.
    interval: u64,
    /// Delay variation tolerance `τ`: how far ahead of its TAT a request may come, in ns.
    tolerance: u64,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it; the client's TAT becomes `tat`.
    Allow {
        /// The client's new theoretical arrival time.
        tat: Nanos,
    },
    /// Refuse it; the client's TAT is unchanged (a refused request costs
    /// nothing, so a client that backs off is served again on time).
    Deny {
        /// Time until a request from this client would be allowed.
        wait: Duration,
    },
}

impl Gcra {
    /// A limit of one request per `interval` on average, `burst` (at least
    /// 1) at once.
    pub fn new(interval: Duration, burst: u32) -> Gcra {
        let interval = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// Decides a request arriving at `now` from a client whose TAT is `tat`
    /// (`Nanos::ZERO`, or anything not after `now`, for a client with no
    /// recent requests).
    pub fn decide(&self, tat: Nanos, now: Nanos) -> Decision {
        let tat = tat.as_nanos().max(now.as_nanos());
        // The earliest arrival that conforms: τ before the TAT.
        let allowed_at = tat.saturating_sub(self.tolerance);
        if now.as_nanos() >= allowed_at {
            Decision::Allow {
                tat: Nanos::from_nanos(tat.saturating_add(self.interval)),
            }
        } else {
            Decision::Deny {
                wait: Duration::from_nanos(allowed_at - now.as_nanos()),
            }
        }
    }
}

/// `Retry-After` in whole seconds for a wait (RFC 9110 §10.2.3 allows
/// only seconds): rounded up, so a client that obeys it is served, and at
/// least 1, because `0` invites an immediate retry that would fail again
/// whenever the wait was under a second but not zero.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(ms: u64) -> Nanos {
        Nanos::from_millis(ms)
    }

    /// Sends one request at each of `times` (ms), keeping the TAT; returns
    /// the decisions.
    fn run(gcra: &Gcra, times: &[u64]) -> Vec<Decision> {
        let mut tat = Nanos::ZERO;
        times
            .iter()
            .map(|&t| {
                let decision = gcra.decide(tat, at(t));
                if let Decision::Allow { tat: next } = decision {
                    tat = next;
                }
                decision
            })
            .collect()
    }

    fn allowed(decisions: &[Decision]) -> Vec<bool> {
        decisions
            .iter()
            .map(|d| matches!(d, Decision::Allow { .. }))
            .collect()
    }

    #[test]
    fn an_idle_client_gets_its_burst_at_once_then_waits() {
        // 10/s, burst 5: five at t=0, the sixth must wait 100 ms.
        let gcra = Gcra::new(100 * MS, 5);
        let decisions = run(&gcra, &[1000; 7]);
        assert_eq!(
            allowed(&decisions),
            [true, true, true, true, true, false, false]
        );
        assert_eq!(decisions[5], Decision::Deny { wait: 100 * MS });
        assert_eq!(decisions[6], Decision::Deny { wait: 100 * MS });
    }

    #[test]
    fn a_client_at_the_sustained_rate_is_always_served() {
        let gcra = Gcra::new(100 * MS, 1);
        let times: Vec<u64> = (0..100).map(|i| 5000 + i * 100).collect();
        assert!(allowed(&run(&gcra, &times)).iter().all(|&a| a));
        // One request early (burst 1 leaves no slack) is refused.
        let decisions = run(&gcra, &[5000, 5099]);
        assert_eq!(decisions[1], Decision::Deny { wait: MS });
    }

    #[test]
    fn a_flooding_client_gets_exactly_the_rate_over_time() {
        // 10/s, burst 5, one request every millisecond for 10 s: 5 from
        // the burst plus one per 100 ms after the first.
        let gcra = Gcra::new(100 * MS, 5);
        let times: Vec<u64> = (0..10_000).map(|i| 1000 + i).collect();
        let served = allowed(&run(&gcra, &times))
            .into_iter()
            .filter(|&a| a)
            .count();
        assert_eq!(served, 5 + 99);
    }

    #[test]
    fn refused_requests_cost_nothing() {
        let gcra = Gcra::new(100 * MS, 2);
        // Two at t=1000, then a hammering that is refused, then on time.
        let decisions = run(&gcra, &[1000, 1000, 1001, 1050, 1099, 1100]);
        assert_eq!(allowed(&decisions), [true, true, false, false, false, true]);
        assert_eq!(decisions[4], Decision::Deny { wait: MS });
    }

    #[test]
    fn the_burst_comes_back_after_idling() {
        let gcra = Gcra::new(100 * MS, 3);
        let decisions = run(&gcra, &[1000, 1000, 1000, 1000, 1300, 1300, 1300, 1300]);
        assert_eq!(
            allowed(&decisions),
            [true, true, true, false, true, true, true, false]
        );
    }

    #[test]
    fn near_the_epoch_and_with_huge_settings_nothing_overflows() {
        let gcra = Gcra::new(Duration::from_secs(3600), 1_000_000);
        assert!(matches!(
            gcra.decide(Nanos::ZERO, Nanos::ZERO),
            Decision::Allow { .. }
        ));
        let far = Nanos::from_nanos(u64::MAX - 5);
        assert!(matches!(gcra.decide(far, far), Decision::Allow { .. }));
        let zero_interval = Gcra::new(Duration::ZERO, 0);
        assert_eq!(zero_interval.interval, 1);
        assert_eq!(zero_interval.tolerance, 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let cases = [
            (Duration::ZERO, 1),
            (Duration::from_nanos(1), 1),
            (100 * MS, 1),
            (Duration::from_secs(1), 1),
            (Duration::from_secs(1) + Duration::from_nanos(1), 2),
            (Duration::from_millis(2500), 3),
            (Duration::from_secs(3600), 3600),
        ];
        for (wait, secs) in cases {
            assert_eq!(retry_after_secs(wait), secs, "{wait:?}");
        }
    }

    #[test]
    fn retry_after_is_when_the_next_request_is_allowed() {
        // 6000/m, burst 50: after 50 at once, the wait is one interval;
        // obeying a rounded-up Retry-After is always served.
        let gcra = Gcra::new(10 * MS, 50);
        let mut tat = Nanos::ZERO;
        for _ in 0..50 {
            let Decision::Allow { tat: next } = gcra.decide(tat, at(2000)) else {
                panic!("within the burst");
            };
            tat = next;
        }
        let Decision::Deny { wait } = gcra.decide(tat, at(2000)) else {
            panic!("past the burst");
        };
        assert_eq!(wait, 10 * MS);
        let retry = Duration::from_secs(retry_after_secs(wait));
        assert!(matches!(
            gcra.decide(tat, at(2000) + retry),
            Decision::Allow { .. }
        ));
    }
}
