//! Which balancer a pool uses, and the dispatch from a pick to it.
//!
//! The four balancers live in their own modules ([`crate::p2c`],
//! [`crate::ewma`], [`crate::round_robin`], [`crate::hash`]); this module
//! gives each the same *eligibility* rule — outside panic mode only healthy,
//! non-ejected endpoints whose breaker admits a request, minus the ones a
//! retry asked to avoid — and the load or key it compares. If avoiding the
//! already-tried endpoints leaves nothing, the pick runs again without that
//! wish: a retry on the same endpoint beats no retry.

use std::str::FromStr;

use crate::hash::DEFAULT_BALANCE_FACTOR;
use crate::p2c;
use crate::pool::PickRequest;
use crate::rng::RandomSource;
use crate::set::{Availability, Snapshot};
use crate::time::Nanos;

/// How a pool chooses among its endpoints (`balance` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Balance {
    /// Power of two choices on in-flight requests per weight ([`crate::p2c`]). The default.
    #[default]
    P2c,
    /// Power of two choices on peak-EWMA latency × (in-flight + 1) ([`crate::ewma`]).
    Ewma,
    /// Smooth weighted round-robin ([`crate::round_robin`]).
    RoundRobin,
    /// Consistent hashing on the request's key ([`crate::hash`]).
    Hash {
        /// Bounded-load factor `c ≥ 1`; `None` for plain consistent hashing.
        bounded_load: Option<f64>,
    },
}

impl Balance {
    /// The config spelling: `p2c`, `ewma`, `round-robin` or `hash`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Balance::P2c => "p2c",
            Balance::Ewma => "ewma",
            Balance::RoundRobin => "round-robin",
            Balance::Hash { .. } => "hash",
        }
    }

    /// Consistent hashing with the default bounded-load factor (1.25).
    pub fn hash_bounded() -> Self {
        Balance::Hash {
            bounded_load: Some(DEFAULT_BALANCE_FACTOR),
        }
    }
}

/// A `balance` value that is not one of the four names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown balance {0:?}: expected one of p2c, ewma, round-robin, hash")]
pub struct UnknownBalance(pub String);

impl FromStr for Balance {
    type Err = UnknownBalance;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "p2c" => Ok(Balance::P2c),
            "ewma" => Ok(Balance::Ewma),
            "round-robin" => Ok(Balance::RoundRobin),
            "hash" => Ok(Balance::Hash { bounded_load: None }),
            other => Err(UnknownBalance(other.to_owned())),
        }
    }
}

/// Runs the pool's balancer; a second pass ignores `avoid` if the first found nothing.
pub(crate) fn select<R: RandomSource + ?Sized>(
    snap: &Snapshot,
    availability: &Availability,
    request: &PickRequest<'_>,
    now: Nanos,
    rng: &mut R,
    pool_in_flight: usize,
) -> Option<usize> {
    let first = choose(snap, availability, request, true, now, rng, pool_in_flight);
    if first.is_some() || request.avoid.is_empty() {
        return first;
    }
    choose(snap, availability, request, false, now, rng, pool_in_flight)
}

fn choose<R: RandomSource + ?Sized>(
    snap: &Snapshot,
    availability: &Availability,
    request: &PickRequest<'_>,
    honour_avoid: bool,
    now: Nanos,
    rng: &mut R,
    pool_in_flight: usize,
) -> Option<usize> {
    let cfg = &*snap.config;
    let eps = &snap.endpoints;
    let panic = availability.panic;
    let eligible = |i: usize| {
        let ep = &eps[i];
        (panic || ep.is_eligible(now, &cfg.breaker))
            && !(honour_avoid && request.avoid.contains(&ep.addr))
    };
    match cfg.balance {
        Balance::P2c => {
            p2c::pick_least_loaded(&snap.weights, rng, &eligible, |i| eps[i].in_flight())
        }
        Balance::Ewma => {
            let decay = cfg.ewma.decay;
            p2c::pick_by(&snap.weights, rng, &eligible, |i| {
                let ep = &eps[i];
                ep.ewma.estimate(now, decay) * f64::from(ep.in_flight() + 1)
                    / f64::from(snap.weights.weight(i))
            })
        }
        Balance::RoundRobin => snap.round_robin.as_ref()?.pick(&eligible),
        Balance::Hash { bounded_load } => {
            let ring = snap.ring.as_ref()?;
            let key = request.key.unwrap_or_else(|| rng.next_u64());
            match bounded_load {
                None => ring.pick(key, &eligible, |_| true),
                Some(factor) => {
                    // cap_i = c × (pool in-flight, this request included) × w_i / W.
                    let weight = if panic {
                        snap.weights.total()
                    } else {
                        availability.available_weight
                    };
                    let per_weight = factor.max(1.0) * pool_in_flight as f64 / weight.max(1) as f64;
                    ring.pick(key, &eligible, |i| {
                        f64::from(eps[i].in_flight() + 1)
                            <= (per_weight * f64::from(snap.weights.weight(i))).ceil()
                    })
                }
            }
        }
    }
}
