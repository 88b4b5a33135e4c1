//! An origin pool as the request path uses it: edge-lb's [`Pool`] (endpoint
//! state and every balancing decision), the pool's retry budget, and its
//! connection settings.
//!
//! Endpoint names are resolved once at start with the system resolver
//! (so `/etc/hosts` applies); every address a name resolves to becomes an
//! endpoint. Re-resolving on the record's TTL is not built yet.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use edge_lb::{
    Balance, EndpointSpec, Epoch, Event, EventSink, HealthCheckConfig, Pool, PoolConfig,
    RetryBudget, RetryBudgetConfig,
};

use crate::upstream::PoolSettings;

/// One origin pool, shared by every worker.
#[derive(Debug)]
pub struct OriginPool {
    /// The pool's name in the config.
    pub name: String,
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
}

impl OriginPool {
    /// Resolves the endpoints of `[pools.<name>]` and builds its state.
    pub fn new(name: &str, pool: &edge_config::Pool, epoch: Epoch) -> anyhow::Result<Self> {
        let specs = resolve(name, &pool.endpoints)?;
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
        let config = PoolConfig {
            balance,
            outlier,
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
            lb: Pool::with_events(config, &specs, epoch.at(Instant::now()), sink),
            budget: RetryBudget::new(RetryBudgetConfig::default()),
            retries: pool.retries,
            settings: PoolSettings::new(name, pool)?,
            health,
            epoch,
            hashed: pool.balance == edge_config::Balance::Hash,
        })
    }

    /// The pool's clock now.
    pub fn now(&self) -> edge_lb::Nanos {
        self.epoch.at(Instant::now())
    }
}

/// Every address of every endpoint name, in config order, each with its
/// entry's weight.
fn resolve(pool: &str, endpoints: &[edge_config::Endpoint]) -> anyhow::Result<Vec<EndpointSpec>> {
    let mut specs = Vec::new();
    for edge_config::Endpoint {
        addr: endpoint,
        weight,
    } in endpoints
    {
        let addrs: Vec<SocketAddr> = endpoint
            .as_str()
            .to_socket_addrs()
            .with_context(|| format!("pools.{pool}.endpoints: cannot resolve {endpoint:?}"))?
            .collect();
        anyhow::ensure!(
            !addrs.is_empty(),
            "pools.{pool}.endpoints: {endpoint:?} resolves to no address"
        );
        specs.extend(
            addrs
                .into_iter()
                .map(|addr| EndpointSpec::weighted(addr, *weight)),
        );
    }
    Ok(specs)
}
