//! Config reload (SIGHUP, `POST /reload`): re-read and validate the file,
//! build a new pipeline (sites, pools, cache policies, rate limits, fault
//! rules, DNS names) and swap it in with one `ArcSwap` store. Requests in
//! flight finish on the pipeline they started with; new ones use the new
//! one. Pools whose definition did not change carry over with their
//! endpoint state and upstream connections. Listeners are added, replaced and removed, and `[limits]` apply to
//! connections accepted from then on, without closing any open connection
//! (see `frontend`). The cache and the access log carry over. A file that
//! does not validate, or a listener that cannot be bound, is refused with
//! the same message as `edge check` or start-up, and so is a change to a
//! section that applies only at start (node, admin, cache, log): nothing
//! changes then.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use edge_config::Config;

use crate::cache::HttpCache;
use crate::discovery::{Dns, DnsStop};
use crate::frontend::Frontend;
use crate::observe::access_log::AccessLog;
use crate::proxy::{CurrentPipeline, Pipeline};
use crate::status::NodeInfo;

/// What a reload changes in place, and what carries over into the new
/// pipeline.
pub struct Live {
    /// The pipeline in force.
    pub pipeline: CurrentPipeline,
    /// Listeners, caps and connection settings.
    pub frontend: Arc<Frontend>,
    /// What `/status` reports.
    pub info: Arc<NodeInfo>,
    /// Carries over.
    pub cache: Arc<HttpCache>,
    /// Carries over.
    pub access_log: Option<AccessLog>,
    /// Stops the DNS thread of the pipeline in force.
    pub dns_stop: Arc<DnsStop>,
}

/// Rebuilds and swaps the pipeline and listeners from the config file.
pub struct ConfigReloader {
    path: Option<PathBuf>,
    /// The config in force; its lock makes reloads run one at a time.
    running: Mutex<Config>,
    current: CurrentPipeline,
    frontend: Arc<Frontend>,
    info: Arc<NodeInfo>,
    cache: Arc<HttpCache>,
    access_log: Option<AccessLog>,
    /// Stops the DNS thread of the pipeline in force when it is replaced.
    dns_stop: Mutex<Arc<DnsStop>>,
}

impl std::fmt::Debug for ConfigReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigReloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ConfigReloader {
    /// A reloader for the node started from `path` (none for the demo).
    pub fn new(path: Option<PathBuf>, running: Config, live: Live) -> Self {
        ConfigReloader {
            path,
            running: Mutex::new(running),
            current: live.pipeline,
            frontend: live.frontend,
            info: live.info,
            cache: live.cache,
            access_log: live.access_log,
            dns_stop: Mutex::new(live.dns_stop),
        }
    }

    /// Re-reads the file and swaps the pipeline, or says why not (and
    /// changes nothing).
    pub fn reload(&self) -> Result<(), String> {
        // On a thread of its own: resolving names starts (and drops) a
        // runtime, which the callers' async contexts (the admin thread, the
        // signal loop) may not do.
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(|| self.try_reload())
                .join()
                .unwrap_or_else(|_| Err("the reload panicked; the running config stays".to_owned()))
        });
        let result = if outcome.is_ok() { "ok" } else { "failed" };
        metrics::counter!("edge_config_reloads_total", "result" => result).increment(1);
        match &outcome {
            Ok(()) => tracing::info!("config reloaded; new requests use it"),
            Err(error) => {
                tracing::error!(%error, "config reload refused; the running config stays")
            }
        }
        outcome
    }

    fn try_reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Err("this node was not started from a config file".to_owned());
        };
        let config = edge_config::load(path).map_err(|e| e.to_string())?;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if *running == config {
            // Nothing to rebuild: pools keep their health and ejection state
            // (a SIGHUP for new certificate files lands here).
            return Ok(());
        }
        let fixed = restart_only_changes(&running, &config);
        if !fixed.is_empty() {
            return Err(format!(
                "{}: {} changed; these apply only at start: restart edge to apply them",
                path.display(),
                fixed.join(", ")
            ));
        }
        // Bound before anything changes: a listener that cannot be bound
        // refuses the reload, and dropping the plan closes what it bound.
        let listeners = self
            .frontend
            .prepare(&config)
            .map_err(|e| format!("{}: {e:#}", path.display()))?;
        let dns = Dns::start(&config).map_err(|e| format!("{e:#}"))?;
        let endpoints = dns.specs();
        let pipeline = Pipeline::new(
            &config,
            &endpoints,
            self.access_log.clone(),
            self.cache.clone(),
            Some(&self.current.load()),
        )
        .map_err(|e| format!("{e:#}"))?;
        let pipeline = Arc::new(pipeline);
        // Committed from here: carried-over pools take the new addresses.
        pipeline.follow_endpoints(&endpoints);
        self.current.store(pipeline.clone());
        let bound = self.frontend.apply(listeners, &config);
        self.info.update(&config, &bound);
        *running = config;
        let stop = Arc::new(DnsStop::default());
        let old = std::mem::replace(
            &mut *self.dns_stop.lock().unwrap_or_else(PoisonError::into_inner),
            stop.clone(),
        );
        old.stop();
        // The new config is in force either way; without its DNS thread
        // its names keep the addresses resolved above.
        dns.spawn(pipeline, stop)
            .map_err(|e| format!("the config is in force, but its DNS updates did not start: {e}"))
    }
}

/// Top-level sections that differ and apply only at start.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.node != new.node {
        changed.push("[node]");
    }
    if running.admin != new.admin {
        changed.push("[admin]");
    }
    if running.cache != new.cache {
        changed.push("[cache]");
    }
    if running.log != new.log {
        changed.push("[log]");
    }
    changed
}
