//! A site's cache policy: its `cache = { … }` table turned into the option
//! structs of edge-cache, plus the site's counters.

use edge_cache::counters::SiteCounters;
use edge_cache::freshness::FreshnessOptions;
use edge_cache::key::KeyOptions;
use edge_cache::reuse::ReuseOptions;
use edge_cache::storable::StoreOptions;
use http::Method;
use http::header::HeaderName;

/// A site's cache policy, derived once from its `cache = { … }` table.
#[derive(Debug)]
pub struct SitePolicy {
    enabled: bool,
    pub(super) key: KeyOptions,
    pub(super) freshness: FreshnessOptions,
    pub(super) reuse: ReuseOptions,
    pub(super) store: StoreOptions,
    bypass_paths: Vec<String>,
    bypass_methods: Vec<Method>,
    /// What the cache did for this site's requests.
    pub counters: SiteCounters,
}

impl SitePolicy {
    /// How this site's cache keys are built.
    pub fn key_options(&self) -> &KeyOptions {
        &self.key
    }

    /// The policy of one site.
    pub fn new(site: &edge_config::SiteCache, cache: &edge_config::Cache) -> anyhow::Result<Self> {
        let key_headers = site
            .key_headers
            .iter()
            .map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()))
            .collect::<Result<_, _>>()?;
        let bypass_methods = site
            .bypass_methods
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()))
            .collect::<Result<_, _>>()?;
        Ok(SitePolicy {
            enabled: site.enabled,
            key: KeyOptions {
                ignore_query: site.ignore_query,
                keep_params: site.keep_params.clone(),
                sort_params: site.sort_params,
                add_headers: key_headers,
            },
            freshness: FreshnessOptions {
                heuristic_max: cache.heuristic_max,
                default_ttl: site.default_ttl,
                max_ttl: site.max_ttl,
                ..FreshnessOptions::default()
            },
            reuse: ReuseOptions {
                ignore_client_no_cache: site.ignore_client_no_cache,
            },
            store: StoreOptions {
                cache_default_ttl: site.default_ttl.is_some(),
            },
            bypass_paths: site.bypass_paths.clone(),
            bypass_methods,
            counters: SiteCounters::default(),
        })
    }

    /// Whether this request may be answered from, or stored in, the cache.
    pub fn applies_to(&self, method: &Method, path: &str) -> bool {
        self.enabled
            && (method == Method::GET || method == Method::HEAD)
            && !self.bypass_methods.contains(method)
            && !self
                .bypass_paths
                .iter()
                .any(|p| path.starts_with(p.as_str()))
    }
}
