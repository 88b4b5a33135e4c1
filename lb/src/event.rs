//! State changes, reported once each so the caller logs transitions, not requests.
//!
//! A [`Pool`](crate::Pool) built with [`Pool::with_events`](crate::Pool::with_events)
//! calls its sink with an [`Event`] whenever an endpoint joins, leaves,
//! drains, changes health, is ejected or returns, or its breaker changes
//! state, and when the pool enters or leaves panic mode. Each transition is
//! reported by the one thread whose CAS made it, so it appears once however
//! many workers race. The sink runs inline on that thread (on the request
//! path for outcome-driven events): keep it cheap — a `tracing` call and a
//! counter.
//!
//! Transitions that happen by the clock alone (an ejection ending, a breaker
//! becoming due for probing) are noticed at the next pick or by
//! [`Pool::sweep`](crate::Pool::sweep), which the `edge` binary calls on a
//! timer so they are logged even on an idle pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::Outcome;
use crate::time::Nanos;

/// Receives a pool's events.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// A state change in a pool.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An address joined the pool.
    Joined {
        /// The endpoint.
        addr: SocketAddr,
        /// Its weight.
        weight: u32,
    },
    /// An address left the pool; its running requests finish (drain).
    Removed {
        /// The endpoint.
        addr: SocketAddr,
        /// Requests still running on it.
        in_flight: u32,
    },
    /// The last request on a removed endpoint finished.
    Drained {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// An endpoint's weight changed.
    Reweighted {
        /// The endpoint.
        addr: SocketAddr,
        /// The old weight.
        from: u32,
        /// The new weight.
        to: u32,
    },
    /// Active health checks flipped an endpoint.
    HealthChanged {
        /// The endpoint.
        addr: SocketAddr,
        /// Its new health.
        healthy: bool,
    },
    /// Passive outlier detection ejected an endpoint.
    Ejected {
        /// The endpoint.
        addr: SocketAddr,
        /// The failure that completed the streak.
        last: Outcome,
        /// How long.
        duration: Duration,
        /// Until when.
        until: Nanos,
        /// Its recent ejections including this one (the time multiplier).
        ejections: u32,
    },
    /// An endpoint reached the failure threshold but was not ejected because
    /// `max_ejection_percent` of the pool already is. Reported once per streak.
    EjectionCapped {
        /// The endpoint.
        addr: SocketAddr,
        /// Endpoints ejected now.
        ejected: usize,
        /// The cap.
        max: usize,
    },
    /// An ejection ended; the endpoint takes traffic again.
    Returned {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// An endpoint's circuit breaker opened.
    BreakerOpened {
        /// The endpoint.
        addr: SocketAddr,
        /// How long before probing.
        open_for: Duration,
        /// Until when.
        until: Nanos,
    },
    /// A breaker let its first probe through.
    BreakerHalfOpen {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// A breaker closed after successful probes.
    BreakerClosed {
        /// The endpoint.
        addr: SocketAddr,
    },
    /// Fewer than `panic_threshold` percent of endpoints are available: picks
    /// now spread over *all* endpoints, including unhealthy and ejected ones.
    PanicEntered {
        /// Endpoints available.
        available: usize,
        /// Endpoints in the pool.
        total: usize,
    },
    /// Enough endpoints are available again; picks skip unavailable ones.
    PanicExited {
        /// Endpoints available.
        available: usize,
        /// Endpoints in the pool.
        total: usize,
    },
}
