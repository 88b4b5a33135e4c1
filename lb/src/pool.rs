//! A pool of endpoints: the one type the `edge` binary holds per origin pool.
//!
//! [`Pool::pick`] chooses an endpoint with the pool's balancer and returns an
//! [`EndpointGuard`]; the caller sends the request there and reports how it
//! went with [`EndpointGuard::finish`]. Everything else (health checks,
//! DNS updates, status for metrics) is a method on the same `Pool`.
//!
//! # What a pick touches — no global lock, no shared write
//!
//! 1. `ArcSwap::load` of the endpoint-set snapshot: no lock, and no shared
//!    reference count (arc-swap borrows through a per-thread debt slot).
//! 2. The cached availability (panic mode): one atomic load and a compare;
//!    the endpoints are scanned only after a state change or when a timed
//!    state (ejection, open breaker) expires.
//! 3. The balancer: loads of the candidates' atomics (`p2c`, `ewma`: two
//!    endpoints; `hash`: a binary search, then usually one endpoint;
//!    `round-robin`: one `fetch_add` on the cycle cursor, its only shared write).
//! 4. The chosen endpoint: its breaker word (a CAS only when half-open), a
//!    `fetch_add` on its in-flight count and an `Arc` clone of it — which
//!    is all the guard holds (the endpoint points back to the pool).
//! 5. Only if the pool has `max_requests` or bounded-load hashing: one CAS
//!    on the pool's in-flight counter.
//!
//! So a `p2c`, `ewma` or plain `hash` pick writes no cache line shared by
//! the whole pool: two workers contend only when they pick the same
//! endpoint. Finishing touches that endpoint's atomics (and the pool
//! counter when it was taken). Writers (endpoint updates, reconfiguration)
//! take a mutex among themselves and publish a new snapshot; pickers never
//! wait for them.
//!
//! # Availability and panic mode
//!
//! An endpoint is *available* when active checks say healthy, it is not
//! ejected, and its breaker is not open. Picks skip unavailable endpoints —
//! except in **panic mode**: when fewer than `panic_threshold_percent` of
//! the pool's endpoints are available, the pool stops trusting its failure
//! detection and spreads picks over **all** endpoints, available or not,
//! ignoring health, ejection and breakers. Some requests will then hit bad
//! endpoints and fail (retries help), but the alternative — pushing the
//! whole load onto the few that look healthy — tends to knock those over
//! too, and when *every* endpoint looks down the checks themselves are the
//! likelier culprit (sozu-proxy/sozu#1204 asked for exactly this fail-open).
//! This is Envoy's `healthy_panic_threshold`, default 50%, and the reason
//! Envoy users report "my ejected host still gets traffic" (envoy#2671,
//! istio#20135): the pool is in panic. It is reported once per change as
//! [`Event::PanicEntered`] / [`Event::PanicExited`], shown by
//! [`Pool::status`] and by [`EndpointGuard::in_panic`]. Set the threshold to
//! 0 to turn panic mode off: a pool with nothing available then fails picks
//! with [`PickError::NoneAvailable`] (a 503). Worked example: 10 endpoints,
//! threshold 50%: with 5 available, picks go to those 5; with 4 available,
//! picks go to all 10.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::balance::select;
pub use crate::balance::{Balance, UnknownBalance};
use crate::breaker::{Admission, BreakerConfig, Transition};
use crate::endpoint::{Endpoint, EndpointSpec, EndpointStatus, Outcome};
use crate::event::{Event, EventSink};
use crate::ewma::EwmaConfig;
use crate::health::{CheckResult, DEFAULT_FALL, DEFAULT_RISE, HealthCheckConfig};
use crate::limit::ConcurrencyLimit;
use crate::outlier::{OutlierConfig, OutlierSignal};
use crate::rng::RandomSource;
use crate::set::{Availability, EndpointSet, Scan, Snapshot};
use crate::time::Nanos;

/// Envoy's `healthy_panic_threshold` default: below half available, spread over all.
pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u8 = 50;

/// Selections tried when a chosen endpoint's half-open breaker has no probe
/// slot left (another worker took it between the check and the CAS). Each
/// retry sees the slot taken and chooses elsewhere, so 4 is plenty.
const MAX_PICK_ATTEMPTS: usize = 4;

/// Everything that decides how a pool behaves. Defaults are cited in each module.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The balancer.
    pub balance: Balance,
    /// Below this percentage of available endpoints the pool panics and
    /// spreads over all of them (see the module docs); 0 disables.
    pub panic_threshold_percent: u8,
    /// Requests in flight at once before picks fail fast with
    /// [`PickError::Saturated`]; `None` is no cap.
    pub max_requests: Option<usize>,
    /// Peak-EWMA settings (used by every balancer for status; decisive for `ewma`).
    pub ewma: EwmaConfig,
    /// Passive outlier detection.
    pub outlier: OutlierConfig,
    /// Per-endpoint circuit breaker.
    pub breaker: BreakerConfig,
    /// Active health checks, if the pool has them (`rise`/`fall` are used here,
    /// the rest by the `edge` binary's checker).
    pub health: Option<HealthCheckConfig>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            balance: Balance::default(),
            panic_threshold_percent: DEFAULT_PANIC_THRESHOLD_PERCENT,
            max_requests: None,
            ewma: EwmaConfig::default(),
            outlier: OutlierConfig::default(),
            breaker: BreakerConfig::default(),
            health: None,
        }
    }
}

/// What the caller knows about the request being placed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickRequest<'a> {
    /// The 64-bit hash of what should stick to one endpoint (cache key,
    /// header) for `hash` pools; ignored by the other balancers. Without
    /// one a `hash` pool picks a random point on the ring.
    pub key: Option<u64>,
    /// Endpoints to avoid, e.g. the ones a retry already tried. Soft: if
    /// nothing else can be picked, they may be.
    pub avoid: &'a [SocketAddr],
    /// This pick is a retry (counted in the endpoint's `retries`).
    pub retry: bool,
}

impl<'a> PickRequest<'a> {
    /// A first attempt with a hash key.
    pub fn keyed(key: u64) -> Self {
        Self {
            key: Some(key),
            ..Self::default()
        }
    }

    /// A retry of `self` that avoids the endpoints already tried.
    pub fn retry(self, tried: &'a [SocketAddr]) -> Self {
        Self {
            avoid: tried,
            retry: true,
            ..self
        }
    }
}

/// Why a pick found no endpoint. Every variant means "answer 503".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// The pool has no endpoints at all (empty config, or DNS returned none).
    #[error("the pool has no endpoints; check its `endpoints` and their DNS names")]
    NoEndpoints,
    /// Every endpoint is unhealthy, ejected or behind an open breaker, and
    /// panic mode is off (or every candidate's probe slots are taken).
    #[error("no endpoint of the pool is available (unhealthy, ejected or breaker open)")]
    NoneAvailable,
    /// The pool's `max_requests` cap is reached; failing fast protects the origin.
    #[error("the pool is at its cap of {max} requests in flight")]
    Saturated {
        /// The cap.
        max: usize,
    },
}

/// A pool's state at one moment, for the admin API and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    /// Every endpoint in the current set.
    pub endpoints: Vec<EndpointStatus>,
    /// How many are available.
    pub available: usize,
    /// Picks are spreading over all endpoints (see the module docs).
    pub panic: bool,
    /// Requests in flight on the current endpoints (not on draining ones).
    pub in_flight: usize,
}

/// The shared part of a pool. Every endpoint holds it, so a guard (which
/// holds only its endpoint) can record outcomes and emit events.
pub(crate) struct PoolShared {
    pub(crate) set: EndpointSet,
    limit: ConcurrencyLimit,
    /// Bumped on every state change that can alter availability.
    generation: AtomicU64,
    in_panic: AtomicBool,
    sink: Option<EventSink>,
}

impl std::fmt::Debug for PoolShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolShared")
            .field("limit", &self.limit)
            .field("in_panic", &self.in_panic)
            .finish_non_exhaustive()
    }
}

/// The owner of a pool's shared part. Endpoints point back to the shared
/// part (so guards are one `Arc`), which makes a cycle through the set; when
/// the last [`Pool`] handle goes, this empties the set to break it.
#[derive(Debug)]
struct Owner {
    shared: Arc<PoolShared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.set.clear();
    }
}

/// An origin pool: endpoint set, balancer, failure detection and limits.
/// Cheap to clone (one `Arc`); share one per pool across all workers.
#[derive(Debug, Clone)]
pub struct Pool {
    owner: Arc<Owner>,
}

impl Pool {
    /// A pool of `endpoints` configured by `config`, with no event sink.
    pub fn new(config: PoolConfig, endpoints: &[EndpointSpec], now: Nanos) -> Self {
        Self::build(config, endpoints, now, None)
    }

    /// Like [`Pool::new`], reporting every state change to `sink` (the
    /// initial endpoints arrive as [`Event::Joined`]).
    pub fn with_events(
        config: PoolConfig,
        endpoints: &[EndpointSpec],
        now: Nanos,
        sink: EventSink,
    ) -> Self {
        Self::build(config, endpoints, now, Some(sink))
    }

    fn build(
        config: PoolConfig,
        endpoints: &[EndpointSpec],
        now: Nanos,
        sink: Option<EventSink>,
    ) -> Self {
        let limit = ConcurrencyLimit::new(config.max_requests);
        let pool = Self {
            owner: Arc::new(Owner {
                shared: Arc::new(PoolShared {
                    set: EndpointSet::new(Arc::new(config)),
                    limit,
                    generation: AtomicU64::new(1),
                    in_panic: AtomicBool::new(false),
                    sink,
                }),
            }),
        };
        pool.update(endpoints, now);
        pool
    }

    fn shared(&self) -> &Arc<PoolShared> {
        &self.owner.shared
    }

    /// Chooses an endpoint for one request (or one retry).
    ///
    /// Hold the returned guard while the request runs — through the whole
    /// response body if in-flight should count streaming — and call
    /// [`EndpointGuard::finish`] with the outcome. `now` is the caller's
    /// clock; `rng` is the caller's (one per worker thread).
    pub fn pick<R: RandomSource + ?Sized>(
        &self,
        request: &PickRequest<'_>,
        now: Nanos,
        rng: &mut R,
    ) -> Result<EndpointGuard, PickError> {
        let shared = &**self.shared();
        let snap = shared.set.load();
        if snap.endpoints.is_empty() {
            return Err(PickError::NoEndpoints);
        }
        let cfg = &*snap.config;
        // The pool-wide counter is a write every worker shares: only taken
        // when something needs it.
        let counted = cfg.max_requests.is_some()
            || matches!(
                cfg.balance,
                Balance::Hash {
                    bounded_load: Some(_)
                }
            );
        if counted && !shared.limit.acquire_raw() {
            return Err(PickError::Saturated {
                max: shared.limit.max().unwrap_or(0),
            });
        }
        let availability = shared.availability(&snap, now);
        for _ in 0..MAX_PICK_ATTEMPTS {
            let Some(i) = select(
                &snap,
                &availability,
                request,
                now,
                rng,
                shared.limit.in_use(),
            ) else {
                break;
            };
            let ep = &snap.endpoints[i];
            let admission = if availability.panic {
                Admission::Normal
            } else {
                let (admission, transition) = ep.breaker.try_acquire(now, &cfg.breaker);
                if let Some(t) = transition {
                    shared.breaker_changed(ep, t);
                }
                admission
            };
            if admission == Admission::Denied {
                continue;
            }
            ep.in_flight.fetch_add(1, Ordering::AcqRel);
            ep.counters.picked(request.retry);
            return Ok(EndpointGuard {
                endpoint: Arc::clone(ep),
                started: now,
                admission,
                panic: availability.panic,
                counted,
                finished: false,
            });
        }
        if counted {
            shared.limit.release_raw();
        }
        Err(PickError::NoneAvailable)
    }

    /// Replaces the endpoint list (from config or DNS). Addresses that stay
    /// keep their state, new ones join, missing ones drain. Returns the
    /// changes, which also go to the event sink.
    pub fn update(&self, endpoints: &[EndpointSpec], now: Nanos) -> Vec<Event> {
        let shared = self.shared();
        let events = shared.set.update(shared, endpoints, now);
        if !events.is_empty() {
            shared.changed();
        }
        for e in &events {
            shared.emit(e);
        }
        events
    }

    /// Applies a reloaded config, keeping endpoints and their state.
    pub fn reconfigure(&self, config: PoolConfig) {
        let shared = self.shared();
        shared.limit.set_max(config.max_requests);
        shared.set.reconfigure(Arc::new(config));
        shared.changed();
    }

    /// Feeds one active health check result; returns the new health if it flipped.
    /// Results for addresses no longer in the pool are ignored.
    pub fn record_check(&self, addr: SocketAddr, result: CheckResult) -> Option<bool> {
        let shared = self.shared();
        let snap = shared.set.load();
        let &i = snap.index.get(&addr)?;
        let (rise, fall) = snap
            .config
            .health
            .as_ref()
            .map_or((DEFAULT_RISE, DEFAULT_FALL), |h| (h.rise, h.fall));
        let healthy = snap.endpoints[i].health.record(result, rise, fall)?;
        shared.changed();
        shared.emit(&Event::HealthChanged { addr, healthy });
        Some(healthy)
    }

    /// Brings time-driven state up to date (ejections ending, panic mode)
    /// and reports it; call it on a timer (e.g. every second) so changes are
    /// logged on an idle pool too. Picks do the same as a side effect.
    pub fn sweep(&self, now: Nanos) {
        let snap = self.shared().set.load();
        self.shared().availability(&snap, now);
    }

    /// The current endpoint addresses, e.g. for the health checker.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.shared()
            .set
            .load()
            .endpoints
            .iter()
            .map(|e| e.addr)
            .collect()
    }

    /// Number of endpoints in the current set.
    pub fn len(&self) -> usize {
        self.shared().set.load().endpoints.len()
    }

    /// True when the pool has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The config in force.
    pub fn config(&self) -> Arc<PoolConfig> {
        Arc::clone(&self.shared().set.load().config)
    }

    /// Every endpoint's state and counters, and the pool's, at `now`.
    pub fn status(&self, now: Nanos) -> PoolStatus {
        let snap = self.shared().set.load();
        let availability = self.shared().availability(&snap, now);
        let endpoints: Vec<EndpointStatus> = snap
            .endpoints
            .iter()
            .map(|e| e.status(now, snap.config.ewma.decay))
            .collect();
        PoolStatus {
            in_flight: endpoints.iter().map(|e| e.in_flight as usize).sum(),
            available: endpoints.iter().filter(|e| e.available).count(),
            endpoints,
            panic: availability.panic,
        }
    }
}

impl PoolShared {
    fn emit(&self, event: &Event) {
        if let Some(sink) = &self.sink {
            sink(event);
        }
    }

    /// Invalidates the cached availability.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn availability(&self, snap: &Snapshot, now: Nanos) -> Availability {
        let (availability, scan) = snap.availability(now, &self.generation, |ep| {
            self.emit(&Event::Returned { addr: ep.addr });
        });
        if let Some(Scan { available, total }) = scan
            && self.in_panic.swap(availability.panic, Ordering::AcqRel) != availability.panic
        {
            self.emit(&if availability.panic {
                Event::PanicEntered { available, total }
            } else {
                Event::PanicExited { available, total }
            });
        }
        availability
    }

    fn breaker_changed(&self, ep: &Endpoint, transition: Transition) {
        self.changed();
        let addr = ep.addr;
        self.emit(&match transition {
            Transition::Opened { until, open_for } => {
                ep.counters.breaker_opens.fetch_add(1, Ordering::Relaxed);
                Event::BreakerOpened {
                    addr,
                    open_for,
                    until,
                }
            }
            Transition::HalfOpened => Event::BreakerHalfOpen { addr },
            Transition::Closed => Event::BreakerClosed { addr },
        });
    }

    fn record(
        &self,
        ep: &Endpoint,
        outcome: Outcome,
        started: Nanos,
        admission: Admission,
        now: Nanos,
    ) {
        let snap = self.set.load();
        let cfg = &*snap.config;
        let latency = now.saturating_since(started);
        let sample = match outcome {
            Outcome::ConnectFailure | Outcome::Reset => latency.max(cfg.ewma.failure_penalty),
            _ => latency,
        };
        ep.ewma.observe(sample, now, cfg.ewma.decay);
        ep.counters.finished(outcome);
        let failure = outcome.is_failure();
        if let Some(t) = ep.breaker.record(failure, admission, now, &cfg.breaker) {
            self.breaker_changed(ep, t);
        }
        // A removed endpoint is draining; ejecting it would only skew the cap.
        if let OutlierSignal::Eject { first } = ep.outlier.record(failure, now, &cfg.outlier)
            && !ep.removed.load(Ordering::Relaxed)
        {
            self.try_eject(&snap, ep, outcome, first, now);
        }
    }

    /// Ejects `ep` unless the pool is at `max_ejection_percent`. Scans the
    /// set, but only on a failure that completes a streak.
    fn try_eject(&self, snap: &Snapshot, ep: &Endpoint, last: Outcome, first: bool, now: Nanos) {
        let cfg = &snap.config.outlier;
        let max = cfg.max_ejected(snap.endpoints.len());
        let ejected = snap
            .endpoints
            .iter()
            .filter(|e| e.outlier.is_ejected(now))
            .count();
        if ejected >= max {
            if first {
                self.emit(&Event::EjectionCapped {
                    addr: ep.addr,
                    ejected,
                    max,
                });
            }
            return;
        }
        if let Some(ejection) = ep.outlier.eject(now, cfg) {
            ep.counters.ejections.fetch_add(1, Ordering::Relaxed);
            self.changed();
            self.emit(&Event::Ejected {
                addr: ep.addr,
                last,
                duration: ejection.duration,
                until: ejection.until,
                ejections: ejection.count,
            });
        }
    }
}

/// One request's hold on an endpoint.
///
/// While it lives the endpoint counts the request as in flight (and the pool
/// toward `max_requests`). It is one `Arc` and `Send`: move it into the task
/// that streams the response body if in-flight should cover the body. [`finish`](Self::finish) records the outcome and
/// latency; dropping it unfinished (the client went away, the task was
/// cancelled) only releases it and counts a cancellation — no outcome, so a
/// cancelled request neither helps nor hurts the endpoint. A guard keeps its
/// endpoint alive after the endpoint leaves the pool: that is the drain.
#[derive(Debug)]
#[must_use = "dropping the guard at once ends the request; hold it and call finish()"]
pub struct EndpointGuard {
    endpoint: Arc<Endpoint>,
    started: Nanos,
    admission: Admission,
    panic: bool,
    /// Took a slot of the pool's in-flight counter.
    counted: bool,
    finished: bool,
}

impl EndpointGuard {
    /// Where to send the request.
    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// The request is a half-open breaker's probe: its outcome decides
    /// whether the endpoint gets traffic again.
    pub fn is_probe(&self) -> bool {
        matches!(self.admission, Admission::Probe { .. })
    }

    /// The pool was in panic mode: the endpoint may be unhealthy or ejected.
    pub fn in_panic(&self) -> bool {
        self.panic
    }

    /// When the pick happened (the `now` it was given).
    pub fn started(&self) -> Nanos {
        self.started
    }

    /// Records how the request ended at `now`; latency is `now - started`.
    pub fn finish(mut self, outcome: Outcome, now: Nanos) {
        self.finished = true;
        self.endpoint
            .pool
            .record(&self.endpoint, outcome, self.started, self.admission, now);
        // Drop releases the in-flight counts.
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.endpoint.counters.cancelled();
            if let Admission::Probe { round } = self.admission {
                self.endpoint.breaker.release_probe(round);
            }
        }
        if self.endpoint.request_ended() {
            self.endpoint.pool.emit(&Event::Drained {
                addr: self.endpoint.addr,
            });
        }
        if self.counted {
            self.endpoint.pool.limit.release_raw();
        }
    }
}

#[cfg(test)]
mod tests;
