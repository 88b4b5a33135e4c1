//! Config reload (SIGHUP, `POST /reload`): re-read and validate the file,
//! build a new pipeline (sites, pools, cache policies, rate limits, fault
//! rules, DNS names) and swap it in with one `ArcSwap` store. Requests in
//! flight finish on the pipeline they started with; new ones use the new
//! one. The cache and the access log carry over. A file that does not
//! validate is refused with the same message as `edge check`, and so is a
//! change to a section that applies only at start (listeners, node, admin,
//! cache sizes, log, limits): nothing changes then.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use edge_config::Config;

use crate::cache::HttpCache;
use crate::discovery::Dns;
use crate::observe::access_log::AccessLog;
use crate::proxy::{CurrentPipeline, Pipeline};

/// Rebuilds and swaps the pipeline from the config file.
pub struct ConfigReloader {
    path: Option<PathBuf>,
    running: Mutex<Config>,
    current: CurrentPipeline,
    cache: Arc<HttpCache>,
    access_log: Option<AccessLog>,
    /// Stops the DNS thread of the pipeline in force when it is replaced.
    dns_stop: Mutex<Arc<AtomicBool>>,
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
    pub fn new(
        path: Option<PathBuf>,
        running: Config,
        current: CurrentPipeline,
        cache: Arc<HttpCache>,
        access_log: Option<AccessLog>,
        dns_stop: Arc<AtomicBool>,
    ) -> Self {
        ConfigReloader {
            path,
            running: Mutex::new(running),
            current,
            cache,
            access_log,
            dns_stop: Mutex::new(dns_stop),
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
        let dns = Dns::start(&config).map_err(|e| format!("{e:#}"))?;
        let pipeline = Pipeline::new(
            &config,
            &dns.specs(),
            self.access_log.clone(),
            self.cache.clone(),
        )
        .map_err(|e| format!("{e:#}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let pipeline = Arc::new(pipeline);
        self.current.store(pipeline.clone());
        dns.spawn(pipeline, stop.clone())
            .map_err(|e| e.to_string())?;
        let old = std::mem::replace(
            &mut *self.dns_stop.lock().unwrap_or_else(PoisonError::into_inner),
            stop,
        );
        old.store(true, Ordering::Release);
        *running = config;
        Ok(())
    }
}

/// Top-level sections that differ and apply only at start.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.listeners != new.listeners {
        changed.push("listeners");
    }
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
    if running.limits != new.limits {
        changed.push("[limits]");
    }
    changed
}
