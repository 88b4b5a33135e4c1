//! Prometheus metrics through the `metrics` facade, rendered by
//! metrics-exporter-prometheus on the admin listener's `GET /metrics`.
//!
//! Four kinds of series:
//!
//! - **Per request**, recorded when a request completes ([`RequestMetrics`]):
//!   `edge_requests_total{site,status,cache,protocol}`,
//!   `edge_request_duration_seconds{site}` (arrival to the end of the
//!   response body) and `edge_response_bytes_total{site}`. The handles are
//!   resolved once per label combination (a `OnceLock` per slot), so a
//!   request costs a few atomic adds, no registry lookup.
//! - **Per upstream attempt**: `edge_upstream_duration_seconds{pool,endpoint}`
//!   ([`UpstreamDurations`]), one handle per endpoint of a pool, resolved
//!   the first time the endpoint is tried, so an attempt costs a map lookup
//!   and an atomic add.
//! - **State**, read from the node's own counters when `/metrics` is
//!   scraped ([`super::scrape`]): cache tiers, pools and endpoints, the
//!   access log. Nothing on the request path pays for them.
//! - **Events** of the connection layer, counted where they happen:
//!   connections refused by the caps
//!   ([`connections_rejected`]) and slow clients cut off
//!   ([`slow_clients_closed`]).
//!
//! Cardinality is bounded by configuration: labels are sites (their first
//! host), pools, endpoint addresses, listeners, status classes and fixed
//! enumerations; never URLs or clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use edge_cache::counters::Outcome;
use http::{StatusCode, Version};
use metrics::{Counter, Histogram, counter, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Upper bounds of the latency histograms, in seconds: from a memory hit
/// (well under a millisecond) to a slow origin's minute.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The process-wide recorder, installed on first use (before anything
/// records, so every handle registers with it).
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .context("metrics histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// `edge_connections_rejected_total{reason}`: connections reset at accept
/// by a connection cap (`listener_cap`, `ip_cap`).
pub fn connections_rejected(reason: &'static str) -> Counter {
    counter!("edge_connections_rejected_total", "reason" => reason)
}

/// `edge_slow_clients_closed_total{reason}`: connections closed for an
/// unfinished head (`header_timeout`) or idleness (`keepalive`), and request
/// bodies failed for their rate (`body_rate`).
pub fn slow_clients_closed(reason: &'static str) -> Counter {
    counter!("edge_slow_clients_closed_total", "reason" => reason)
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
const CACHE_LABELS: [&str; 6] = ["hit", "stale", "revalidated", "miss", "bypass", "none"];
const PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2"];
const SLOTS: usize = STATUS_CLASSES.len() * CACHE_LABELS.len() * PROTOCOLS.len();

/// The site label of requests that matched no site.
pub const UNROUTED: &str = "-";

/// Per-request series, one set per site.
pub struct RequestMetrics {
    sites: Vec<SiteMetrics>,
}

struct SiteMetrics {
    name: String,
    requests: Box<[OnceLock<Counter>]>,
    duration: Histogram,
    bytes: Counter,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("sites", &self.sites.len())
            .finish()
    }
}

/// What a finished request contributes.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// The site index, `None` when no site matched.
    pub site: Option<usize>,
    /// The response status; `None` when the client left before one existed.
    pub status: Option<StatusCode>,
    /// What the cache step did, if the request went through it.
    pub cache: Option<Outcome>,
    /// The client's protocol.
    pub version: Version,
    /// Arrival to the end (or abandonment) of the response body.
    pub duration: Duration,
    /// Response body bytes handed to the connection.
    pub bytes: u64,
}

impl RequestMetrics {
    /// Series for these sites (named by their first host), plus one for
    /// requests no site matched.
    pub fn new<'a>(site_names: impl IntoIterator<Item = &'a str>) -> Self {
        let sites = site_names
            .into_iter()
            .chain([UNROUTED])
            .map(|name| SiteMetrics {
                name: name.to_owned(),
                requests: (0..SLOTS).map(|_| OnceLock::new()).collect(),
                duration: histogram!("edge_request_duration_seconds", "site" => name.to_owned()),
                bytes: counter!("edge_response_bytes_total", "site" => name.to_owned()),
            })
            .collect();
        RequestMetrics { sites }
    }

    /// Records one finished request.
    pub fn record(&self, done: &Finished) {
        let site = done
            .site
            .and_then(|i| self.sites.get(i))
            .unwrap_or_else(|| self.sites.last().expect("the unrouted site always exists"));
        let status = done
            .status
            .map_or(5, |s| usize::from(s.as_u16() / 100).clamp(1, 5) - 1);
        let cache = match done.cache {
            Some(Outcome::Hit) => 0,
            Some(Outcome::StaleOnError) => 1,
            Some(Outcome::Revalidated) => 2,
            Some(Outcome::Miss) => 3,
            Some(Outcome::Bypass) => 4,
            None => 5,
        };
        let protocol = match done.version {
            Version::HTTP_2 => 2,
            Version::HTTP_10 | Version::HTTP_09 => 0,
            _ => 1,
        };
        let slot = (status * CACHE_LABELS.len() + cache) * PROTOCOLS.len() + protocol;
        site.requests[slot]
            .get_or_init(|| {
                counter!(
                    "edge_requests_total",
                    "site" => site.name.clone(),
                    "status" => STATUS_CLASSES[status],
                    "cache" => CACHE_LABELS[cache],
                    "protocol" => PROTOCOLS[protocol],
                )
            })
            .increment(1);
        site.duration.record(done.duration.as_secs_f64());
        site.bytes.increment(done.bytes);
    }
}

/// `edge_upstream_duration_seconds{pool,endpoint}` for one pool: send to
/// response head (or failure) of every upstream attempt.
///
/// Endpoints come and go at run time (DNS discovery), so the handles cannot
/// be slots fixed at start like [`RequestMetrics`]'s: they live in a map
/// from endpoint address to handle, read on every attempt without a lock
/// (an `ArcSwap` load) and copied only when an endpoint is tried for the
/// first time. That copy also drops the endpoints that have left the pool,
/// so the map stays the size of the pool; their series stay in the registry.
pub struct UpstreamDurations {
    pool: String,
    endpoints: ArcSwap<HashMap<SocketAddr, Histogram>>,
}

impl std::fmt::Debug for UpstreamDurations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamDurations")
            .field("pool", &self.pool)
            .field("endpoints", &self.endpoints.load().len())
            .finish()
    }
}

impl UpstreamDurations {
    /// Series for the pool named `pool`; no endpoint resolved yet.
    pub fn new(pool: &str) -> Self {
        UpstreamDurations {
            pool: pool.to_owned(),
            endpoints: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Records one attempt on `endpoint`. `in_pool` lists the pool's
    /// endpoints now; it is called only when `endpoint` has no handle yet.
    pub fn record(
        &self,
        endpoint: SocketAddr,
        elapsed: Duration,
        in_pool: impl FnOnce() -> Vec<SocketAddr>,
    ) {
        if let Some(histogram) = self.endpoints.load().get(&endpoint) {
            histogram.record(elapsed.as_secs_f64());
            return;
        }
        let histogram = histogram!(
            "edge_upstream_duration_seconds",
            "pool" => self.pool.clone(),
            "endpoint" => endpoint.to_string(),
        );
        histogram.record(elapsed.as_secs_f64());
        let in_pool = in_pool();
        self.endpoints.rcu(|current| {
            let mut next: HashMap<SocketAddr, Histogram> = in_pool
                .iter()
                .filter_map(|addr| Some((*addr, current.get(addr)?.clone())))
                .collect();
            next.insert(endpoint, histogram.clone());
            Arc::new(next)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_durations_follow_the_pool_endpoints() {
        // No recorder installed: the handles are no-ops; this checks which
        // endpoints keep one.
        let durations = UpstreamDurations::new("origin");
        let [a, b, c]: [SocketAddr; 3] =
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(|e| e.parse().unwrap());
        let kept = || {
            let mut kept: Vec<SocketAddr> = durations.endpoints.load().keys().copied().collect();
            kept.sort();
            kept
        };
        let ms = Duration::from_millis(1);
        durations.record(a, ms, || vec![a, b]);
        durations.record(b, ms, || vec![a, b]);
        assert_eq!(kept(), [a, b]);
        durations.record(a, ms, || unreachable!("a already has its handle"));
        // DNS replaced a with c: the first attempt on c forgets a.
        durations.record(c, ms, || vec![b, c]);
        assert_eq!(kept(), [b, c]);
    }

    #[test]
    fn every_combination_has_its_own_slot() {
        // With no recorder installed the handles are no-ops; this checks the
        // slot arithmetic stays in bounds for every label combination.
        let metrics = RequestMetrics::new(["a.example"]);
        for status in [
            None,
            Some(StatusCode::OK),
            Some(StatusCode::from_u16(599).unwrap()),
        ] {
            for cache in [None, Some(Outcome::Hit), Some(Outcome::Bypass)] {
                for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
                    for site in [None, Some(0), Some(7)] {
                        metrics.record(&Finished {
                            site,
                            status,
                            cache,
                            version,
                            duration: Duration::from_millis(3),
                            bytes: 10,
                        });
                    }
                }
            }
        }
        let filled = metrics.sites[0]
            .requests
            .iter()
            .filter(|s| s.get().is_some())
            .count();
        assert_eq!(filled, 3 * 3 * 3);
    }
}
