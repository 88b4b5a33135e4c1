//! `GET /status` on the admin listener: one JSON document with what an
//! operator checks first: version, uptime, which configuration is running
//! (its digest), the listeners, every pool's endpoints and their state,
//! and cache usage per tier.

use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use edge_lb::BreakerState;
use serde_json::{Value, json};

use crate::frontend::BoundListener;
use crate::proxy::Pipeline;

/// What the node knows about itself: fixed at start, and what the last
/// config reload changed.
#[derive(Debug)]
pub struct NodeInfo {
    /// `[node] id`.
    id: String,
    /// `[node] role`: `edge` or `shield`.
    role: &'static str,
    /// When the node started.
    started: Instant,
    running: Mutex<Running>,
}

/// The configuration in force.
#[derive(Debug)]
struct Running {
    /// Digest of the parsed configuration.
    config_digest: String,
    /// Bound data listeners, as URLs.
    listeners: Vec<String>,
}

impl Running {
    fn new(config: &edge_config::Config, listeners: &[BoundListener]) -> Self {
        Running {
            config_digest: digest(config),
            listeners: listeners.iter().map(BoundListener::url).collect(),
        }
    }
}

impl NodeInfo {
    /// Info for a node running `config` on these listeners.
    pub fn new(config: &edge_config::Config, listeners: &[BoundListener]) -> Self {
        NodeInfo {
            id: config.node.id.clone(),
            role: match config.node.role {
                edge_config::Role::Edge => "edge",
                edge_config::Role::Shield => "shield",
            },
            started: Instant::now(),
            running: Mutex::new(Running::new(config, listeners)),
        }
    }

    /// Records a reloaded configuration and the listeners it left open.
    pub fn update(&self, config: &edge_config::Config, listeners: &[BoundListener]) {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) =
            Running::new(config, listeners);
    }
}

/// A digest of the parsed configuration: equal on two nodes running the
/// same settings, whatever the file's comments or layout. `DefaultHasher::new`
/// has fixed keys, so it is stable for a given build.
fn digest(config: &edge_config::Config) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    format!("{config:?}").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The status document.
pub fn render(info: &NodeInfo, pipeline: &Pipeline) -> String {
    let pools: Vec<Value> = pipeline
        .pools()
        .iter()
        .map(|pool| {
            let status = pool.lb.status(pool.now());
            let endpoints: Vec<Value> = status
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "addr": e.addr.to_string(),
                        "weight": e.weight,
                        "available": e.available,
                        "healthy": e.healthy,
                        "ejected": e.ejected_until.is_some(),
                        "breaker": match e.breaker {
                            BreakerState::Closed => "closed",
                            BreakerState::Open { .. } => "open",
                            BreakerState::HalfOpen { .. } => "half-open",
                        },
                        "in_flight": e.in_flight,
                        "ewma_ms": e.ewma.as_secs_f64() * 1000.0,
                    })
                })
                .collect();
            json!({
                "name": pool.name,
                "available": status.available,
                "panic": status.panic,
                "in_flight": status.in_flight,
                "endpoints": endpoints,
            })
        })
        .collect();
    let stats = pipeline.cache().stats();
    let disk = stats.disk.map(|d| {
        json!({
            "objects": d.store.objects,
            "bytes": d.store.bytes,
            "backend": d.backend,
            "writes_disabled": d.disabled,
        })
    });
    let running = info.running.lock().unwrap_or_else(PoisonError::into_inner);
    let document = json!({
        "node": info.id,
        "role": info.role,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": info.started.elapsed().as_secs(),
        "config_digest": running.config_digest,
        "listeners": running.listeners,
        "pools": pools,
        "cache": {
            "memory": {
                "objects": stats.memory.objects,
                "bytes": stats.memory.bytes,
                "capacity": pipeline.cache().memory_capacity(),
            },
            "disk": disk,
        },
    });
    let mut text = document.to_string();
    text.push('\n');
    text
}
