//! edge's origin pools: endpoint state, balancers and failure detection.
//!
//! Everything here is pure policy: no sockets, no DNS, no tasks, no clock.
//! Time comes in as [`Nanos`] (the binary converts `Instant`s with an
//! [`Epoch`]; `Instant::now` is banned in this crate by `lb/clippy.toml`),
//! randomness as a caller-owned [`RandomSource`], and check results and
//! request outcomes as values. The `edge` binary does the I/O — health-check
//! requests, DNS re-resolution, the upstream client and its retries — and
//! asks a [`Pool`] what to do.
//!
//! # Using a pool (what the `edge` binary calls)
//!
//! ```
//! use edge_lb::{Balance, EndpointSpec, Nanos, Outcome, PickRequest, Pool, PoolConfig, WyRand};
//!
//! let config = PoolConfig { balance: Balance::Ewma, ..PoolConfig::default() };
//! let endpoints = [
//!     EndpointSpec::new("127.0.0.1:9000".parse().unwrap()),
//!     EndpointSpec::weighted("127.0.0.1:9001".parse().unwrap(), 3),
//! ];
//! let pool = Pool::new(config, &endpoints, Nanos::ZERO);
//! let mut rng = WyRand::new(1); // one per worker thread
//!
//! // Per request: pick, send, finish.
//! let guard = pool.pick(&PickRequest::default(), Nanos::from_millis(1), &mut rng).unwrap();
//! let _send_to = guard.addr();
//! guard.finish(Outcome::from_status(200), Nanos::from_millis(12));
//!
//! // Elsewhere: health checks, DNS updates, a periodic sweep, metrics.
//! // pool.record_check(addr, CheckResult::Pass);
//! // pool.update(&new_endpoints, now);
//! pool.sweep(Nanos::from_secs(1));
//! let _status = pool.status(Nanos::from_secs(1));
//! ```
//!
//! Retries: check [`retry_allowed`] for the method, keep one [`RetryBudget`]
//! per pool (`deposit` per original request, `try_withdraw` per retry), and
//! pick again with [`PickRequest::retry`] listing the endpoints tried.
//!
//! # Modules
//!
//! - [`pool`]: [`Pool`], [`PoolConfig`], picking, the guard, panic mode.
//! - [`balance`]: the [`Balance`] choice and the eligibility rule.
//! - `set` (private): the lock-free endpoint-set snapshot.
//! - [`endpoint`]: per-endpoint atomics, [`Outcome`], counters, status.
//! - [`p2c`], [`ewma`], [`round_robin`], [`hash`]: the four balancers.
//! - [`health`], [`outlier`], [`breaker`]: failure detection.
//! - [`discovery`]: what endpoint names stand for and when to look them up.
//! - [`retry_budget`], [`limit`]: retries and the concurrency cap.
//! - [`adaptive`]: the adaptive concurrency limit (load shedding).
//! - [`event`]: state changes, reported once.
//! - [`time`], [`rng`]: the caller's clock and randomness.

#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods)]
#![warn(missing_docs)]

pub mod adaptive;
pub mod balance;
pub mod breaker;
pub mod discovery;
pub mod endpoint;
pub mod event;
pub mod ewma;
pub mod hash;
pub mod health;
pub mod limit;
pub mod outlier;
pub mod p2c;
pub mod pool;
pub mod retry_budget;
pub mod rng;
pub mod round_robin;
mod set;
pub mod time;

pub use adaptive::{AdaptiveConfig, AdaptiveLimit, Admitted};
pub use breaker::{BreakerConfig, BreakerState};
pub use discovery::{Answered, Discovered, RefreshPolicy};
pub use endpoint::{EndpointCounters, EndpointSpec, EndpointStatus, MAX_WEIGHT, Outcome};
pub use event::{Event, EventSink};
pub use ewma::EwmaConfig;
pub use health::{CheckResult, HealthCheckConfig};
pub use limit::{ConcurrencyLimit, LimitPermit};
pub use outlier::OutlierConfig;
pub use pool::{
    Balance, EndpointGuard, PickError, PickRequest, Pool, PoolConfig, PoolStatus, UnknownBalance,
};
pub use retry_budget::{RetryBudget, RetryBudgetConfig, retry_allowed, retryable_status};
pub use rng::{RandomSource, WyRand};
pub use round_robin::RoundRobin;
pub use time::{Epoch, Nanos};
