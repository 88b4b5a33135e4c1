//! State series, read from the node's own counters each time `/metrics`
//! is scraped: cache tiers, origin pools and their endpoints, the access
//! log. Counters the node already keeps as atomics are exported with
//! `absolute`, so the request path pays nothing for them.

use edge_lb::BreakerState;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::proxy::Pipeline;

/// Reads the node's state into the recorder and renders the text format.
pub fn render(handle: &PrometheusHandle, pipeline: &Pipeline) -> String {
    cache(pipeline);
    pools(pipeline);
    let limits = pipeline.rate_limits();
    counter!("edge_rate_limited_total").absolute(limits.limited());
    counter!("edge_rate_limit_evictions_total").absolute(limits.evictions());
    if let Some(log) = pipeline.observer().access_log() {
        counter!("edge_access_log_dropped_total").absolute(log.dropped());
    }
    handle.run_upkeep();
    handle.render()
}

/// One cache tier's figures, as the per-tier series report them.
struct Tier {
    name: &'static str,
    objects: u64,
    bytes: u64,
    hits: u64,
    misses: u64,
    inserts: u64,
    evictions: u64,
}

impl Tier {
    fn export(&self) {
        let tier = self.name;
        gauge!("edge_cache_objects", "tier" => tier).set(self.objects as f64);
        gauge!("edge_cache_bytes", "tier" => tier).set(self.bytes as f64);
        counter!("edge_cache_lookups_total", "tier" => tier, "result" => "hit").absolute(self.hits);
        counter!("edge_cache_lookups_total", "tier" => tier, "result" => "miss")
            .absolute(self.misses);
        counter!("edge_cache_inserts_total", "tier" => tier).absolute(self.inserts);
        counter!("edge_cache_evictions_total", "tier" => tier).absolute(self.evictions);
    }
}

fn cache(pipeline: &Pipeline) {
    let stats = pipeline.cache().stats();
    let memory = &stats.memory;
    Tier {
        name: "memory",
        objects: memory.objects,
        bytes: memory.bytes,
        hits: memory.hits,
        misses: memory.misses,
        inserts: memory.inserts,
        evictions: memory.evictions,
    }
    .export();
    if let Some(disk) = &stats.disk {
        let store = &disk.store;
        Tier {
            name: "disk",
            objects: store.objects,
            bytes: store.bytes,
            hits: disk.hits,
            misses: disk.misses,
            inserts: store.inserts,
            evictions: store.evictions,
        }
        .export();
        counter!("edge_cache_disk_corrupt_total").absolute(store.corrupt);
        counter!("edge_cache_disk_write_failures_total").absolute(store.write_failures);
        counter!("edge_cache_purged_total", "tier" => "disk").absolute(store.purged);
        gauge!("edge_cache_disk_writes_disabled").set(f64::from(u8::from(disk.disabled)));
        gauge!("edge_cache_disk_backend", "backend" => disk.backend).set(1.0);
    }
    let coalesce = &stats.coalesce;
    counter!("edge_cache_coalesce_total", "role" => "leader").absolute(coalesce.leaders);
    counter!("edge_cache_coalesce_total", "role" => "follower").absolute(coalesce.coalesced);
    counter!("edge_cache_coalesce_total", "role" => "bypassed").absolute(coalesce.bypassed);
}

fn pools(pipeline: &Pipeline) {
    for pool in pipeline.pools() {
        let name = pool.name.clone();
        let status = pool.lb.status(pool.now());
        gauge!("edge_upstream_endpoints", "pool" => name.clone())
            .set(status.endpoints.len() as f64);
        gauge!("edge_upstream_endpoints_available", "pool" => name.clone())
            .set(status.available as f64);
        gauge!("edge_upstream_panic", "pool" => name.clone())
            .set(f64::from(u8::from(status.panic)));
        counter!("edge_upstream_retry_budget_exhausted_total", "pool" => name.clone())
            .absolute(pool.budget.exhausted());
        if let Some(limit) = &pool.adaptive {
            gauge!("edge_upstream_concurrency_limit", "pool" => name.clone())
                .set(f64::from(limit.limit()));
            counter!("edge_shed_total", "pool" => name.clone()).absolute(limit.shed());
        }
        for endpoint in &status.endpoints {
            let labels = [
                ("pool", name.clone()),
                ("endpoint", endpoint.addr.to_string()),
            ];
            gauge!("edge_upstream_endpoint_healthy", &labels)
                .set(f64::from(u8::from(endpoint.healthy)));
            gauge!("edge_upstream_endpoint_ejected", &labels)
                .set(f64::from(u8::from(endpoint.ejected_until.is_some())));
            let breaker = match endpoint.breaker {
                BreakerState::Closed => 0.0,
                BreakerState::Open { .. } => 1.0,
                BreakerState::HalfOpen { .. } => 2.0,
            };
            gauge!("edge_upstream_endpoint_breaker", &labels).set(breaker);
            gauge!("edge_upstream_endpoint_in_flight", &labels).set(f64::from(endpoint.in_flight));
            gauge!("edge_upstream_endpoint_ewma_seconds", &labels).set(endpoint.ewma.as_secs_f64());
            let c = &endpoint.counters;
            for (outcome, value) in [
                ("success", c.successes),
                ("server_error", c.server_errors),
                ("connect_failure", c.connect_failures),
                ("reset", c.resets),
                ("timeout", c.timeouts),
                ("cancelled", c.cancelled),
            ] {
                let mut labels = labels.to_vec();
                labels.push(("outcome", outcome.to_owned()));
                counter!("edge_upstream_requests_total", &labels).absolute(value);
            }
            counter!("edge_upstream_retries_total", &labels).absolute(c.retries);
            counter!("edge_upstream_ejections_total", &labels).absolute(c.ejections);
            counter!("edge_upstream_breaker_opened_total", &labels).absolute(c.breaker_opens);
        }
    }
}
