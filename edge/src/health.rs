//! Active health checks: one thread for the whole node sends `GET <path>`
//! to every endpoint of every pool that has `health`, on the pool's
//! interval plus jitter, and feeds the results to edge-lb, which applies
//! the rise/fall thresholds and stops picking unhealthy endpoints.
//!
//! One thread rather than one checker per worker: the origin sees one check
//! per interval per edge node, not one per core. Every sweep (1 s) the
//! checker follows the pools' membership, so endpoints that DNS discovery
//! adds get checked and removed ones stop being checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use edge_lb::{CheckResult, HealthCheckConfig, WyRand};
use http::{HeaderValue, Request, header};
use http_body_util::BodyExt;

use crate::body;
use crate::origin_pool::OriginPool;
use crate::proxy::CurrentPipeline;
use crate::upstream::{PoolSettings, UpstreamClient};

/// How often idle pools re-evaluate ejections and breakers, so an endpoint
/// whose ejection ended is reported back even without traffic.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the health-check thread; it runs until the process exits and
/// follows the pipeline in force (a reload brings new pools).
pub fn spawn(current: CurrentPipeline) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("edge-health".into())
        .spawn(move || runtime.block_on(run(current)))?;
    Ok(())
}

async fn run(current: CurrentPipeline) {
    let mut pipeline = current.load_full();
    let mut checkers: Vec<Checkers> = pipeline.pools().iter().map(Checkers::new).collect();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        let now_current = current.load_full();
        if !Arc::ptr_eq(&now_current, &pipeline) {
            // A reload: pools it carried over keep their checks; the loops
            // of pools it dropped are aborted when their `Checkers` drop.
            pipeline = now_current;
            let mut old = std::mem::take(&mut checkers);
            checkers = pipeline
                .pools()
                .iter()
                .map(
                    |pool| match old.iter().position(|c| Arc::ptr_eq(&c.pool, pool)) {
                        Some(at) => old.swap_remove(at),
                        None => Checkers::new(pool),
                    },
                )
                .collect();
        }
        // Membership first: DNS discovery may have added or removed endpoints.
        for checkers in &mut checkers {
            checkers.reconcile();
        }
        for pool in pipeline.pools() {
            pool.lb.sweep(pool.now());
        }
        sweep.tick().await;
    }
}

/// The check loops of one pool, one per endpoint address; dropping it
/// stops them.
struct Checkers {
    pool: Arc<OriginPool>,
    config: Option<(HealthCheckConfig, UpstreamClient)>,
    running: HashMap<SocketAddr, AbortHandle>,
}

impl Drop for Checkers {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.abort();
        }
    }
}

impl Checkers {
    fn new(pool: &Arc<OriginPool>) -> Self {
        let config = pool.health.clone().map(|config| {
            let settings = PoolSettings {
                response_timeout: config.timeout,
                ..pool.settings.clone()
            };
            (config, UpstreamClient::new(&settings))
        });
        Checkers {
            pool: pool.clone(),
            config,
            running: HashMap::new(),
        }
    }

    /// Starts a check loop for each new endpoint and stops those of
    /// endpoints that left the pool.
    fn reconcile(&mut self) {
        let Some((config, client)) = &self.config else {
            return;
        };
        let addrs = self.pool.lb.addrs();
        self.running.retain(|addr, task| {
            let keep = addrs.contains(addr);
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in addrs {
            if self.running.contains_key(&addr) {
                continue;
            }
            let (pool, client, config) = (self.pool.clone(), client.clone(), config.clone());
            let task = tokio::spawn(async move {
                // Any seed that differs between endpoints spreads their checks.
                let mut rng =
                    WyRand::new(u64::from(addr.port()) ^ ((pool.name.len() as u64) << 16));
                tokio::time::sleep(config.first_delay(&mut rng)).await;
                loop {
                    let result = check(&pool, &client, &config, addr).await;
                    if let Some(healthy) = pool.lb.record_check(addr, result) {
                        tracing::debug!(pool = %pool.name, %addr, healthy, "health check");
                    }
                    tokio::time::sleep(config.next_delay(&mut rng)).await;
                }
            });
            self.running.insert(addr, task.abort_handle());
        }
    }
}

/// One check: a complete answer with an expected status passes; anything
/// else (refused, reset, timeout, wrong status) fails.
async fn check(
    pool: &OriginPool,
    client: &UpstreamClient,
    config: &HealthCheckConfig,
    addr: SocketAddr,
) -> CheckResult {
    let uri = format!("{}://{addr}{}", pool.settings.scheme(), config.path);
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return CheckResult::Fail;
    };
    let mut request = Request::new(body::empty());
    *request.uri_mut() = uri;
    if let Ok(host) = HeaderValue::from_str(&addr.to_string()) {
        request.headers_mut().insert(header::HOST, host);
    }
    let answer = async {
        let response = client.send(request).await.ok()?;
        let status = response.status().as_u16();
        // Read the body so the connection is reusable and the answer complete.
        response.into_body().collect().await.ok()?;
        Some(status)
    };
    match tokio::time::timeout(config.timeout, answer).await {
        Ok(Some(status)) => config.classify(status),
        _ => CheckResult::Fail,
    }
}
