//! Per-endpoint circuit breaker: closed → open → half-open → closed.
//!
//! - **Closed**: traffic flows; `failure_threshold` failures in a row open it.
//! - **Open**: no traffic for `open_for × 2^k` (capped at `max_open_for`),
//!   where `k` counts failed half-open rounds since the breaker last closed.
//! - **Half-open**: once the open time is over, at most `half_open_probes`
//!   requests at a time are let through as probes. `successes_to_close`
//!   successful probes close the breaker; one failed probe opens it again
//!   with the doubled time.
//!
//! This is linkerd2-proxy's consecutive-failures breaker (gate open → shut →
//! probation with one request, backoff doubling up to a maximum; its default
//! failure accrual is 7 failures, 1 s to 60 s) with the vocabulary of the
//! classic pattern (Nygard, *Release It!*), where "open" means no traffic.
//!
//! How it differs from outlier ejection ([`crate::outlier`]): ejection is the
//! gentle first line, bounded by `max_ejection_percent`, and an ejected
//! endpoint returns with full traffic. The breaker is the per-endpoint hard
//! stop that is *not* bounded by the ejection cap and lets an endpoint back
//! only through a few probes. With the defaults an endpoint is ejected after
//! 5 failures; if it fails twice more after its return (7 in a row overall)
//! the breaker opens and it must pass a probe.
//!
//! Lock-free: the state is one packed `AtomicU64` changed by CAS, plus the
//! open deadline in a second atomic that is written before the state that
//! refers to it. Outcomes of requests sent before the breaker opened
//! ("stragglers") are ignored, and a probe carries the half-open round it was
//! admitted in, so a late probe cannot count toward a later round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::time::Nanos;

/// linkerd2-proxy's default failure accrual: 7 consecutive failures.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 7;
/// linkerd2-proxy's minimum failure-accrual penalty: short, because the
/// first opening is often a blip and a probe is cheap.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(1);
/// linkerd2-proxy's maximum penalty: a dead endpoint is probed once a minute.
pub const DEFAULT_MAX_OPEN_FOR: Duration = Duration::from_secs(60);
/// One probe at a time, as linkerd2-proxy's probation admits one request:
/// a still-broken endpoint costs one failed request per round.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;
/// One successful probe closes the breaker (linkerd2-proxy).
pub const DEFAULT_SUCCESSES_TO_CLOSE: u32 = 1;

/// Circuit-breaker settings for every endpoint of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 turns it off.
    pub failure_threshold: u32,
    /// How long the first opening lasts.
    pub open_for: Duration,
    /// Upper bound of the doubling open time.
    pub max_open_for: Duration,
    /// Probes allowed at once while half-open (at least 1).
    pub half_open_probes: u32,
    /// Successful probes that close the breaker (at least 1).
    pub successes_to_close: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            open_for: DEFAULT_OPEN_FOR,
            max_open_for: DEFAULT_MAX_OPEN_FOR,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
            successes_to_close: DEFAULT_SUCCESSES_TO_CLOSE,
        }
    }
}

/// A breaker's state, for status pages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// No traffic until `until` (then half-open).
    Open {
        /// When probing may start.
        until: Nanos,
    },
    /// Only probes flow.
    HalfOpen {
        /// Probes currently in flight.
        probes: u32,
    },
}

/// Whether a picked endpoint may take the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed breaker: an ordinary request.
    Normal,
    /// Half-open: the request is a probe of this round.
    Probe { round: u8 },
    /// Open, or every probe slot is taken.
    Denied,
}

/// A state change worth logging once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened { until: Nanos, open_for: Duration },
    HalfOpened,
    Closed,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The unpacked state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Word {
    state: u8,
    /// Consecutive failures (closed).
    failures: u16,
    /// Probes in flight (half-open).
    probes: u16,
    /// Successful probes this round (half-open).
    successes: u16,
    /// Failed half-open rounds since the last close: the backoff exponent.
    reopens: u8,
    /// Half-open round number, wrapping.
    round: u8,
}

impl Word {
    fn unpack(w: u64) -> Self {
        Self {
            state: (w & 0b11) as u8,
            failures: (w >> 2) as u16,
            probes: (w >> 18) as u16,
            successes: (w >> 34) as u16,
            reopens: ((w >> 50) & 0x3f) as u8,
            round: (w >> 56) as u8,
        }
    }

    fn pack(self) -> u64 {
        u64::from(self.state & 0b11)
            | u64::from(self.failures) << 2
            | u64::from(self.probes) << 18
            | u64::from(self.successes) << 34
            | u64::from(self.reopens & 0x3f) << 50
            | u64::from(self.round) << 56
    }
}

fn clamp16(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// One endpoint's breaker.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    word: AtomicU64,
    open_until: AtomicU64,
}

impl Breaker {
    pub(crate) fn state(&self) -> BreakerState {
        let w = Word::unpack(self.word.load(Ordering::Acquire));
        match w.state {
            OPEN => BreakerState::Open {
                until: Nanos::from_nanos(self.open_until.load(Ordering::Acquire)),
            },
            HALF_OPEN => BreakerState::HalfOpen {
                probes: u32::from(w.probes),
            },
            _ => BreakerState::Closed,
        }
    }

    /// Whether a pick may choose this endpoint (one or two loads).
    #[inline]
    pub(crate) fn admits(&self, now: Nanos, cfg: &BreakerConfig) -> bool {
        let w = Word::unpack(self.word.load(Ordering::Acquire));
        match w.state {
            CLOSED => true,
            OPEN => now.as_nanos() >= self.open_until.load(Ordering::Acquire),
            _ => w.probes < clamp16(cfg.half_open_probes.max(1)),
        }
    }

    /// Open and not yet due for probing: counted as unavailable for panic mode.
    pub(crate) fn is_open(&self, now: Nanos) -> bool {
        self.open_deadline(now).is_some()
    }

    /// When an open breaker starts probing, if it is open now.
    pub(crate) fn open_deadline(&self, now: Nanos) -> Option<Nanos> {
        let w = Word::unpack(self.word.load(Ordering::Acquire));
        if w.state != OPEN {
            return None;
        }
        let until = self.open_until.load(Ordering::Acquire);
        (now.as_nanos() < until).then_some(Nanos::from_nanos(until))
    }

    /// Admits a request that a balancer picked, taking a probe slot when half-open.
    pub(crate) fn try_acquire(
        &self,
        now: Nanos,
        cfg: &BreakerConfig,
    ) -> (Admission, Option<Transition>) {
        if cfg.failure_threshold == 0 {
            return (Admission::Normal, None);
        }
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let w = Word::unpack(current);
            let (next, admission, transition) = match w.state {
                CLOSED => return (Admission::Normal, None),
                OPEN => {
                    if now.as_nanos() < self.open_until.load(Ordering::Acquire) {
                        return (Admission::Denied, None);
                    }
                    let round = w.round.wrapping_add(1);
                    let next = Word {
                        state: HALF_OPEN,
                        probes: 1,
                        successes: 0,
                        failures: 0,
                        round,
                        ..w
                    };
                    (
                        next,
                        Admission::Probe { round },
                        Some(Transition::HalfOpened),
                    )
                }
                _ => {
                    if w.probes >= clamp16(cfg.half_open_probes.max(1)) {
                        return (Admission::Denied, None);
                    }
                    let next = Word {
                        probes: w.probes + 1,
                        ..w
                    };
                    (next, Admission::Probe { round: w.round }, None)
                }
            };
            match self.word.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return (admission, transition),
                Err(actual) => current = actual,
            }
        }
    }

    /// Records the outcome of a request admitted as `admission`.
    pub(crate) fn record(
        &self,
        failure: bool,
        admission: Admission,
        now: Nanos,
        cfg: &BreakerConfig,
    ) -> Option<Transition> {
        if cfg.failure_threshold == 0 {
            return None;
        }
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let w = Word::unpack(current);
            let (next, transition) = match (w.state, admission) {
                (CLOSED, _) if !failure => {
                    if w.failures == 0 {
                        return None; // the common case writes nothing
                    }
                    (Word { failures: 0, ..w }, None)
                }
                (CLOSED, _) => {
                    let failures = w.failures.saturating_add(1);
                    if u32::from(failures) >= cfg.failure_threshold {
                        self.open(w, 0, now, cfg)
                    } else {
                        (Word { failures, ..w }, None)
                    }
                }
                (HALF_OPEN, Admission::Probe { round }) if round == w.round => {
                    let probes = w.probes.saturating_sub(1);
                    if failure {
                        self.open(w, w.reopens.saturating_add(1).min(63), now, cfg)
                    } else {
                        let successes = w.successes.saturating_add(1);
                        if u32::from(successes) >= cfg.successes_to_close.max(1) {
                            let closed = Word {
                                state: CLOSED,
                                round: w.round,
                                ..Word::default()
                            };
                            (closed, Some(Transition::Closed))
                        } else {
                            (
                                Word {
                                    probes,
                                    successes,
                                    ..w
                                },
                                None,
                            )
                        }
                    }
                }
                // Open, or a straggler from before the breaker opened, or a
                // probe of an earlier round: ignored.
                _ => return None,
            };
            if let Some(Transition::Opened { until, .. }) = transition {
                // Written before the state that refers to it; a racing
                // writer would store an almost equal deadline.
                self.open_until.store(until.as_nanos(), Ordering::Release);
            }
            match self.word.compare_exchange_weak(
                current,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return transition,
                Err(actual) => current = actual,
            }
        }
    }

    /// Frees the probe slot of a request that ended without an outcome.
    pub(crate) fn release_probe(&self, round: u8) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                let w = Word::unpack(current);
                (w.state == HALF_OPEN && w.round == round && w.probes > 0).then(|| {
                    Word {
                        probes: w.probes - 1,
                        ..w
                    }
                    .pack()
                })
            });
    }

    fn open(
        &self,
        w: Word,
        reopens: u8,
        now: Nanos,
        cfg: &BreakerConfig,
    ) -> (Word, Option<Transition>) {
        let open_for = cfg
            .open_for
            .saturating_mul(1u32 << reopens.min(31))
            .min(cfg.max_open_for.max(cfg.open_for));
        let until = now + open_for;
        let next = Word {
            state: OPEN,
            reopens,
            round: w.round,
            ..Word::default()
        };
        (next, Some(Transition::Opened { until, open_for }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(4),
            half_open_probes: 2,
            successes_to_close: 2,
        }
    }

    /// One step of a scripted run; times are virtual milliseconds.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// A request asking for admission at `t`, expecting this answer; each
        /// is appended to the list of admitted requests.
        Acquire(u64, Admission),
        /// Outcome at `t` of the n-th request of that list.
        Ok(u64, usize),
        Fail(u64, usize),
        Release(usize),
        Expect(BreakerStateAt),
    }

    #[derive(Debug, Clone, Copy)]
    enum BreakerStateAt {
        Closed,
        Open(u64),
        HalfOpen(u32),
    }

    use Admission::{Denied, Normal, Probe};
    use Step::*;
    use Transition::{Closed as TClosed, HalfOpened};

    fn opened(at_ms: u64, for_ms: u64) -> Transition {
        Transition::Opened {
            until: Nanos::from_millis(at_ms + for_ms),
            open_for: Duration::from_millis(for_ms),
        }
    }

    fn run(name: &str, steps: &[Step], transitions: &[Transition]) {
        let breaker = Breaker::default();
        let cfg = cfg();
        let mut admitted = Vec::new();
        let mut seen = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Acquire(t, expect) => {
                    let (a, tr) = breaker.try_acquire(Nanos::from_millis(t), &cfg);
                    assert_eq!(a, expect, "{name}: step {i}");
                    seen.extend(tr);
                    admitted.push(a);
                }
                Ok(t, n) | Fail(t, n) => {
                    let failure = matches!(step, Fail(..));
                    seen.extend(breaker.record(failure, admitted[n], Nanos::from_millis(t), &cfg));
                }
                Release(n) => {
                    if let Probe { round } = admitted[n] {
                        breaker.release_probe(round);
                    }
                }
                Expect(state) => {
                    let want = match state {
                        BreakerStateAt::Closed => BreakerState::Closed,
                        BreakerStateAt::Open(ms) => BreakerState::Open {
                            until: Nanos::from_millis(ms),
                        },
                        BreakerStateAt::HalfOpen(p) => BreakerState::HalfOpen { probes: p },
                    };
                    assert_eq!(breaker.state(), want, "{name}: step {i}");
                }
            }
        }
        assert_eq!(seen, transitions, "{name}: transitions");
    }

    #[test]
    fn closed_opens_after_consecutive_failures() {
        run(
            "success resets the count",
            &[
                Acquire(0, Normal),
                Fail(0, 0),
                Fail(0, 0),
                Ok(0, 0),
                Fail(0, 0),
                Fail(0, 0),
                Expect(BreakerStateAt::Closed),
                Fail(10, 0),
                Expect(BreakerStateAt::Open(1010)),
                Acquire(500, Denied),
                Acquire(1009, Denied),
            ],
            &[opened(10, 1000)],
        );
    }

    #[test]
    fn half_open_limits_probes_and_closes_after_successes() {
        run(
            "probe, probe, denied, two successes close",
            &[
                Acquire(0, Normal),
                Fail(0, 0),
                Fail(0, 0),
                Fail(0, 0),
                Acquire(1000, Probe { round: 1 }),
                Acquire(1000, Probe { round: 1 }),
                Acquire(1000, Denied),
                Expect(BreakerStateAt::HalfOpen(2)),
                Ok(1100, 1),
                Expect(BreakerStateAt::HalfOpen(1)),
                Acquire(1100, Probe { round: 1 }),
                Ok(1200, 2),
                Expect(BreakerStateAt::Closed),
                Acquire(1200, Normal),
            ],
            &[opened(0, 1000), HalfOpened, TClosed],
        );
    }

    #[test]
    fn failed_probe_reopens_with_doubling_capped_time() {
        run(
            "1 s, 2 s, 4 s, 4 s",
            &[
                Acquire(0, Normal),
                Fail(0, 0),
                Fail(0, 0),
                Fail(0, 0),
                Acquire(1000, Probe { round: 1 }),
                Fail(1000, 1),
                Expect(BreakerStateAt::Open(3000)),
                Acquire(3000, Probe { round: 2 }),
                Fail(3000, 2),
                Acquire(7000, Probe { round: 3 }),
                Fail(7000, 3),
                Expect(BreakerStateAt::Open(11000)),
                // Closing resets the backoff: the next opening is 1 s again.
                Acquire(11000, Probe { round: 4 }),
                Ok(11000, 4),
                Ok(11000, 4), // a duplicate report of a closed round is a plain success
                Acquire(11000, Normal),
                Fail(12000, 5),
                Fail(12000, 5),
                Fail(12000, 5),
                Expect(BreakerStateAt::Open(13000)),
            ],
            &[
                opened(0, 1000),
                HalfOpened,
                opened(1000, 2000),
                HalfOpened,
                opened(3000, 4000),
                HalfOpened,
                opened(7000, 4000),
                HalfOpened,
                TClosed,
                opened(12000, 1000),
            ],
        );
    }

    #[test]
    fn stragglers_and_stale_probes_are_ignored() {
        run(
            "outcomes from before the opening and from an old round",
            &[
                Acquire(0, Normal), // 0: straggler, still in flight
                Acquire(0, Normal),
                Fail(0, 1),
                Fail(0, 1),
                Fail(0, 1),
                Ok(500, 0), // straggler success while open: ignored
                Expect(BreakerStateAt::Open(1000)),
                Acquire(1000, Probe { round: 1 }), // 2
                Acquire(1000, Probe { round: 1 }), // 3
                Fail(1000, 2),                     // reopens for 2 s, round 1 over
                Acquire(3000, Probe { round: 2 }), // 4
                Ok(3000, 3),                       // late probe of round 1: ignored, no slot freed
                Expect(BreakerStateAt::HalfOpen(1)),
                Release(4),
                Expect(BreakerStateAt::HalfOpen(0)),
            ],
            &[opened(0, 1000), HalfOpened, opened(1000, 2000), HalfOpened],
        );
    }

    #[test]
    fn zero_threshold_disables_the_breaker() {
        let breaker = Breaker::default();
        let cfg = BreakerConfig {
            failure_threshold: 0,
            ..cfg()
        };
        for _ in 0..10 {
            assert_eq!(breaker.record(true, Normal, Nanos::ZERO, &cfg), None);
        }
        assert_eq!(breaker.try_acquire(Nanos::ZERO, &cfg).0, Normal);
    }

    #[test]
    fn word_round_trips() {
        let w = Word {
            state: HALF_OPEN,
            failures: 65535,
            probes: 3,
            successes: 65535,
            reopens: 63,
            round: 255,
        };
        assert_eq!(Word::unpack(w.pack()), w);
    }
}
