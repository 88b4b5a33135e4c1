//! One origin endpoint's shared state, read and written without locks.
//!
//! An `Endpoint` is created when its address joins a pool and lives in an
//! `Arc` for as long as the address stays, across every snapshot of the
//! endpoint set (the `set` module); requests still running when it leaves keep
//! it alive through their guards (it *drains*). Each piece of state is its
//! own atomic (in-flight count, peak-EWMA, health, outlier and breaker
//! words, counters), so a pick only loads and a response only touches this
//! endpoint's cache lines — no lock, nothing shared between endpoints. The
//! endpoint also holds the pool's shared part, so a request's guard needs
//! nothing but this endpoint's `Arc`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::ewma::PeakEwma;
use crate::health::HealthState;
use crate::outlier::OutlierState;
use crate::pool::PoolShared;
use crate::time::Nanos;

/// Largest endpoint weight: HAProxy's server weight range is 0–256. It
/// bounds the round-robin cycle and the hash ring (see their modules).
pub const MAX_WEIGHT: u32 = 256;

/// An address and its weight, as configuration or DNS gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative share of traffic, 1 ..= [`MAX_WEIGHT`] (0 counts as 1,
    /// larger values as [`MAX_WEIGHT`]; config validation should reject them).
    pub weight: u32,
}

impl EndpointSpec {
    /// An endpoint of weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, weight: 1 }
    }

    /// An endpoint with a weight.
    pub fn weighted(addr: SocketAddr, weight: u32) -> Self {
        Self { addr, weight }
    }

    pub(crate) fn clamped_weight(&self) -> u32 {
        self.weight.clamp(1, MAX_WEIGHT)
    }
}

impl From<SocketAddr> for EndpointSpec {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr)
    }
}

/// How a request to an endpoint ended, as the upstream client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A response that is not 5xx (a 4xx is the client's problem, not the endpoint's).
    Success,
    /// A 5xx response.
    ServerError,
    /// The connection could not be made (refused, unreachable, TLS failure).
    ConnectFailure,
    /// The connection broke before a complete response head.
    Reset,
    /// No response within the timeout.
    Timeout,
}

impl Outcome {
    /// The outcome of a request answered with `status`.
    pub fn from_status(status: u16) -> Self {
        if (500..600).contains(&status) {
            Outcome::ServerError
        } else {
            Outcome::Success
        }
    }

    /// Everything but [`Outcome::Success`] counts toward ejection and the breaker.
    pub fn is_failure(self) -> bool {
        self != Outcome::Success
    }

    /// A stable lowercase name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ServerError => "server_error",
            Outcome::ConnectFailure => "connect_failure",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Monotonic per-endpoint counters, for metrics (`edge_upstream_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Requests sent (picks), including retries: the outcomes below, the
    /// cancellations and those in flight.
    pub requests: u64,
    /// Of those, retries (picks made with `PickRequest::retry`).
    pub retries: u64,
    /// Finished with [`Outcome::Success`].
    pub successes: u64,
    /// Finished with [`Outcome::ServerError`].
    pub server_errors: u64,
    /// Finished with [`Outcome::ConnectFailure`].
    pub connect_failures: u64,
    /// Finished with [`Outcome::Reset`].
    pub resets: u64,
    /// Finished with [`Outcome::Timeout`].
    pub timeouts: u64,
    /// Guards dropped without an outcome (the client went away).
    pub cancelled: u64,
    /// Outlier ejections.
    pub ejections: u64,
    /// Times the breaker opened.
    pub breaker_opens: u64,
}

/// The live counters. There is no request counter: requests are derived
/// (outcomes + cancellations + in flight), which saves a write per pick.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    retries: AtomicU64,
    successes: AtomicU64,
    server_errors: AtomicU64,
    connect_failures: AtomicU64,
    resets: AtomicU64,
    timeouts: AtomicU64,
    cancelled: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) breaker_opens: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn picked(&self, retry: bool) {
        if retry {
            bump(&self.retries);
        }
    }

    pub(crate) fn finished(&self, outcome: Outcome) {
        bump(match outcome {
            Outcome::Success => &self.successes,
            Outcome::ServerError => &self.server_errors,
            Outcome::ConnectFailure => &self.connect_failures,
            Outcome::Reset => &self.resets,
            Outcome::Timeout => &self.timeouts,
        });
    }

    pub(crate) fn cancelled(&self) {
        bump(&self.cancelled);
    }

    fn snapshot(&self, in_flight: u32) -> EndpointCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let ended = [
            &self.successes,
            &self.server_errors,
            &self.connect_failures,
            &self.resets,
            &self.timeouts,
            &self.cancelled,
        ];
        EndpointCounters {
            requests: ended.iter().map(|c| get(c)).sum::<u64>() + u64::from(in_flight),
            retries: get(&self.retries),
            successes: get(&self.successes),
            server_errors: get(&self.server_errors),
            connect_failures: get(&self.connect_failures),
            resets: get(&self.resets),
            timeouts: get(&self.timeouts),
            cancelled: get(&self.cancelled),
            ejections: get(&self.ejections),
            breaker_opens: get(&self.breaker_opens),
        }
    }
}

/// A point-in-time view of one endpoint, for status pages and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// Its weight.
    pub weight: u32,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Peak-EWMA latency estimate now.
    pub ewma: Duration,
    /// Active health checks say it is up.
    pub healthy: bool,
    /// End of the current outlier ejection, if ejected.
    pub ejected_until: Option<Nanos>,
    /// Recent ejections (the ejection-time multiplier).
    pub ejections: u32,
    /// Circuit-breaker state.
    pub breaker: BreakerState,
    /// Would a pick outside panic mode consider it (healthy, not ejected, breaker not open)?
    pub available: bool,
    /// Counters since it joined.
    pub counters: EndpointCounters,
}

/// One endpoint's state; shared by every snapshot and guard that holds it.
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: AtomicU32,
    pub(crate) in_flight: AtomicU32,
    pub(crate) ewma: PeakEwma,
    pub(crate) health: HealthState,
    pub(crate) outlier: OutlierState,
    pub(crate) breaker: Breaker,
    pub(crate) counters: Counters,
    /// Left the set; finishing requests drain it.
    pub(crate) removed: AtomicBool,
    drained_reported: AtomicBool,
    /// The pool's shared part: config, events, the concurrency counter.
    pub(crate) pool: Arc<PoolShared>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the pool: it lists its endpoints, which would recurse.
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("weight", &self.weight)
            .field("in_flight", &self.in_flight)
            .field("health", &self.health)
            .field("outlier", &self.outlier)
            .field("breaker", &self.breaker)
            .field("removed", &self.removed)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub(crate) fn new(
        spec: &EndpointSpec,
        default_rtt: Duration,
        fall: u32,
        now: Nanos,
        pool: Arc<PoolShared>,
    ) -> Self {
        Self {
            addr: spec.addr,
            weight: AtomicU32::new(spec.clamped_weight()),
            in_flight: AtomicU32::new(0),
            ewma: PeakEwma::new(default_rtt, now),
            health: HealthState::new(fall),
            outlier: OutlierState::default(),
            breaker: Breaker::default(),
            counters: Counters::default(),
            removed: AtomicBool::new(false),
            drained_reported: AtomicBool::new(false),
            pool,
        }
    }

    /// May a pick outside panic mode choose it now? Three to four loads.
    #[inline]
    pub(crate) fn is_eligible(&self, now: Nanos, breaker: &BreakerConfig) -> bool {
        self.health.is_healthy()
            && !self.outlier.is_ejected(now)
            && self.breaker.admits(now, breaker)
    }

    /// Counted as available for panic mode: healthy, not ejected, breaker
    /// not open. A half-open breaker counts as available (it is recovering)
    /// even while all its probe slots are taken.
    pub(crate) fn is_available(&self, now: Nanos) -> bool {
        self.health.is_healthy() && !self.outlier.is_ejected(now) && !self.breaker.is_open(now)
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks the endpoint removed; true if it is already drained (the caller
    /// reports it), false if requests are still running (the last one reports).
    pub(crate) fn mark_removed(&self) -> bool {
        self.removed.store(true, Ordering::SeqCst);
        self.in_flight.load(Ordering::SeqCst) == 0 && self.take_drained()
    }

    /// A request ended; true if that drained a removed endpoint.
    pub(crate) fn request_ended(&self) -> bool {
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        before == 1 && self.removed.load(Ordering::SeqCst) && self.take_drained()
    }

    fn take_drained(&self) -> bool {
        !self.drained_reported.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn status(&self, now: Nanos, decay: Duration) -> EndpointStatus {
        let in_flight = self.in_flight();
        EndpointStatus {
            addr: self.addr,
            weight: self.weight.load(Ordering::Relaxed),
            in_flight,
            ewma: Duration::from_nanos(self.ewma.estimate(now, decay) as u64),
            healthy: self.health.is_healthy(),
            ejected_until: self.outlier.ejected_until(now),
            ejections: self.outlier.ejection_count(),
            breaker: self.breaker.state(),
            available: self.is_available(now),
            counters: self.counters.snapshot(in_flight),
        }
    }
}
