//! An origin pool as the request path uses it: edge-lb's [`Pool`] (endpoint
//! state and every balancing decision), the pool's retry budget, and its
//! connection settings.
//!
//! The endpoints come resolved (`discovery.rs` looks names up at start and
//! keeps them current): every address a name resolves to is an endpoint.

use std::sync::Arc;
use std::time::Instant;

use edge_lb::{
    AdaptiveConfig, AdaptiveLimit, Balance, EndpointSpec, Epoch, Event, EventSink,
    HealthCheckConfig, Pool, PoolConfig, RetryBudget, RetryBudgetConfig,
};

use crate::observe::metrics::UpstreamDurations;
use crate::upstream::PoolSettings;

/// One origin pool, shared by every worker.
#[derive(Debug)]
pub struct OriginPool {
    /// The pool's name in the config.
    pub name: String,
    /// `[pools.<name>]` as configured: a reload that leaves it equal keeps
    /// this pool, with its endpoint state.
    pub definition: edge_config::Pool,
    /// Endpoint state and selection.
    pub lb: Pool,
    /// Bounds retries to a share of recent requests.
    pub budget: RetryBudget,
    /// Extra attempts an idempotent bodiless request may make.
    pub retries: u32,
    /// Connection settings.
    pub settings: PoolSettings,
    /// Active health check settings, when the pool has `health`.
    pub health: Option<HealthCheckConfig>,
    /// The clock origin the pool's decisions are measured from.
    pub epoch: Epoch,
    /// Whether picks need a placement key (`balance = "hash"`).
    pub hashed: bool,
    /// `hash_header`: the request header that places requests in a hash pool.
    pub hash_header: Option<http::HeaderName>,
    /// `retry_unsafe_idempotent`: PUT and DELETE may be retried too.
    pub retry_unsafe_idempotent: bool,
    /// `adaptive_concurrency`: the load-shedding limit, when configured.
    pub adaptive: Option<AdaptiveLimit>,
    /// `edge_upstream_duration_seconds` of each endpoint.
    pub upstream_durations: UpstreamDurations,
}

impl OriginPool {
    /// Builds the state of `[pools.<name>]` over its resolved endpoints.
    pub fn new(
        name: &str,
        pool: &edge_config::Pool,
        specs: &[EndpointSpec],
        epoch: Epoch,
    ) -> anyhow::Result<Self> {
        let balance = match pool.balance {
            edge_config::Balance::P2c => Balance::P2c,
            edge_config::Balance::Ewma => Balance::Ewma,
            edge_config::Balance::RoundRobin => Balance::RoundRobin,
            edge_config::Balance::Hash => Balance::hash_bounded(),
        };
        let health = pool.health.as_ref().map(|h| HealthCheckConfig {
            path: h.path.clone(),
            interval: h.interval,
            timeout: h.timeout,
            expected_status: h.status[0]..=h.status[1],
            rise: h.rise,
            fall: h.fall,
            ..HealthCheckConfig::default()
        });
        let mut outlier = edge_lb::OutlierConfig::default();
        if let Some(o) = &pool.outlier {
            outlier.consecutive_failures = o.failures.unwrap_or(outlier.consecutive_failures);
            outlier.base_ejection_time = o.base_ejection.unwrap_or(outlier.base_ejection_time);
            outlier.max_ejection_percent = o
                .max_ejection_percent
                .unwrap_or(outlier.max_ejection_percent);
        }
        let mut breaker = edge_lb::BreakerConfig::default();
        if let Some(b) = &pool.breaker {
            breaker.failure_threshold = b.failures.unwrap_or(breaker.failure_threshold);
            breaker.open_for = b.open.unwrap_or(breaker.open_for);
            breaker.max_open_for = b.max_open.unwrap_or(breaker.max_open_for);
            breaker.half_open_probes = b.probes.unwrap_or(breaker.half_open_probes);
        }
        let mut budget = RetryBudgetConfig::default();
        if let Some(b) = &pool.retry_budget {
            budget.ratio = b.ratio.unwrap_or(budget.ratio);
            budget.min_per_sec = b.min_per_sec.unwrap_or(budget.min_per_sec);
        }
        let hash_header = pool
            .hash_header
            .as_deref()
            .map(|name| http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()))
            .transpose()?;
        let config = PoolConfig {
            balance,
            outlier,
            breaker,
            panic_threshold_percent: pool.panic_threshold,
            max_requests: pool.max_requests,
            health: health.clone(),
            ..PoolConfig::default()
        };
        let sink: EventSink = Arc::new({
            let name = name.to_owned();
            move |event: &Event| tracing::info!(pool = %name, ?event, "pool state changed")
        });
        Ok(OriginPool {
            name: name.to_owned(),
            definition: pool.clone(),
            lb: Pool::with_events(config, specs, epoch.at(Instant::now()), sink),
            budget: RetryBudget::new(budget),
            retries: pool.retries,
            settings: PoolSettings::new(name, pool)?,
            health,
            epoch,
            hashed: pool.balance == edge_config::Balance::Hash,
            hash_header,
            retry_unsafe_idempotent: pool.retry_unsafe_idempotent,
            adaptive: pool.adaptive_concurrency.as_ref().map(|a| {
                AdaptiveLimit::new(AdaptiveConfig {
                    initial: a.initial,
                    min: a.min,
                    max: a.max,
                    tolerance: a.tolerance,
                    window: a.window,
                    ..AdaptiveConfig::default()
                })
            }),
            upstream_durations: UpstreamDurations::new(name),
        })
    }

    /// The pool's clock now.
    pub fn now(&self) -> edge_lb::Nanos {
        self.epoch.at(Instant::now())
    }
}
