//! A running node: loads every certificate, opens the access log and binds
//! every socket up front (so a bad file or address fails start-up, not a
//! worker later), starts the workers and the admin thread, reloads the
//! config and certificates on SIGHUP, reopens the access log on SIGUSR1, and on
//! SIGTERM/SIGINT drains the workers and flushes the log.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use edge_config::Config;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::admin::{self, AdminState, Phase};
use crate::cache::HttpCache;
use crate::discovery::{Dns, DnsStop};
use crate::frontend::{BoundListener, Frontend};
use crate::health;
use crate::listen;
use crate::observe::access_log::AccessLogWriter;
use crate::proxy::{CurrentPipeline, Pipeline};
use crate::reload::{ConfigReloader, Live};
use crate::status::NodeInfo;
use crate::tls::reload::ReloadReport;
use crate::worker::{self, WorkerSpec};

/// How long the exit waits for the access log's last lines to be written:
/// a disk that hangs must not keep a stopped node alive.
const LOG_CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGTERM and SIGINT (drain), SIGHUP (reload) and SIGUSR1 (reopen logs),
/// caught from process start so that a signal arriving while we start up
/// is handled instead of killing the process (SIGUSR1's default action
/// would kill it too).
pub struct StopSignals {
    runtime: tokio::runtime::Runtime,
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
}

/// A signal that asks a running node to do something other than stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGHUP: re-read the config file and certificates.
    Reload,
    /// SIGUSR1: reopen the access log file (after logrotate moved it).
    ReopenLogs,
}

impl StopSignals {
    /// Installs the handlers.
    pub fn install() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _guard = runtime.enter();
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            usr1: signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?,
            runtime,
        })
    }

    /// Blocks until SIGTERM or SIGINT arrives, calling `on_control` for
    /// every SIGHUP and SIGUSR1 meanwhile.
    pub fn wait(&mut self, mut on_control: impl FnMut(Control)) {
        let StopSignals {
            runtime,
            term,
            int,
            hup,
            usr1,
        } = self;
        runtime.block_on(async {
            loop {
                tokio::select! {
                    _ = term.recv() => break tracing::info!("SIGTERM received: draining"),
                    _ = int.recv() => break tracing::info!("SIGINT received: draining"),
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP received: reloading the config and certificates");
                        on_control(Control::Reload);
                    }
                    _ = usr1.recv() => {
                        tracing::info!("SIGUSR1 received: reopening the access log");
                        on_control(Control::ReopenLogs);
                    }
                }
            }
        });
    }
}

/// The node after start-up: workers serving, admin answering.
pub struct Node {
    /// The data listeners open at start.
    listeners: Vec<BoundListener>,
    /// Listeners, caps and connection settings.
    frontend: Arc<Frontend>,
    admin: SocketAddr,
    admin_state: Arc<AdminState>,
    workers: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    drain_timeout: std::time::Duration,
    /// The access log's writer, when the log is on.
    access_log: Option<AccessLogWriter>,
    /// The pipeline in force, for its totals at exit.
    current: CurrentPipeline,
    /// Re-reads the config file (SIGHUP, `POST /reload`).
    reloader: Arc<ConfigReloader>,
}

impl Node {
    /// Binds every listener and starts serving `config`, read from
    /// `config_path` (which reloads re-read; none for the demo).
    pub fn start(config: &Config, config_path: Option<&Path>) -> anyhow::Result<Node> {
        let metrics = crate::observe::metrics::recorder()?;
        let dns = Dns::start(config)?;
        let access_log = AccessLogWriter::start(&config.log.access, config.log.access_buffer)
            .context("log.access: cannot start the access log")?;
        let cache = Arc::new(HttpCache::new(config)?);
        let pipeline = Arc::new(Pipeline::new(
            config,
            &dns.specs(),
            access_log.as_ref().map(AccessLogWriter::log),
            cache.clone(),
            None,
        )?);
        let current: CurrentPipeline = Arc::new(ArcSwap::new(pipeline.clone()));
        health::spawn(current.clone())?;
        let dns_stop = Arc::new(DnsStop::default());
        dns.spawn(pipeline.clone(), dns_stop.clone())?;
        let workers = config.workers();
        let (frontend, commands) = Frontend::start(config, workers)?;
        let frontend = Arc::new(frontend);
        let listeners = frontend.listeners();
        let info = Arc::new(NodeInfo::new(config, &listeners));
        let reloader = Arc::new(ConfigReloader::new(
            config_path.map(Path::to_path_buf),
            config.clone(),
            Live {
                pipeline: current.clone(),
                frontend: frontend.clone(),
                info: info.clone(),
                cache,
                access_log: access_log.as_ref().map(AccessLogWriter::log),
                dns_stop,
            },
        ));

        let admin_socket = listen::bind_single(config.admin.listen)
            .with_context(|| format!("admin.listen: cannot listen on {}", config.admin.listen))?;
        let admin = admin_socket.local_addr()?;
        let admin_state = Arc::new(
            AdminState::new(config.admin.token.clone(), frontend.certs())
                .with_pipeline(current.clone())
                .with_reloader(reloader.clone())
                .with_metrics(metrics)
                .with_info(info),
        );
        admin::spawn(admin_socket, admin_state.clone())?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut handles = Vec::with_capacity(workers);
        for (index, commands) in commands.into_iter().enumerate() {
            handles.push(worker::spawn(WorkerSpec {
                index,
                commands,
                server: frontend.server(),
                pipeline: current.clone(),
                shutdown: shutdown_rx.clone(),
                drain_timeout: config.node.drain_timeout,
            })?);
        }
        admin_state.set_phase(Phase::Ready);
        tracing::info!(workers, node = %config.node.id, "edge started");
        Ok(Node {
            frontend,
            listeners,
            admin,
            admin_state,
            workers: handles,
            shutdown,
            drain_timeout: config.node.drain_timeout,
            access_log,
            current,
            reloader,
        })
    }

    /// Data listeners bound at start, in config order (port 0 resolved).
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// Bound admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Prints the bound addresses and `ready` on stdout: the line protocol
    /// tests and scripts wait on.
    pub fn announce(&self) {
        for (index, listener) in self.listeners.iter().enumerate() {
            println!("listener {index}: {}", listener.url());
        }
        println!("admin: http://{}", self.admin);
        println!("ready");
    }

    /// Re-reads the config file and swaps the pipeline (or keeps the
    /// running one, logged), then every TLS listener's certificates
    /// (SIGHUP; `POST /reload` does the same from the admin thread).
    pub fn reload(&self) -> ReloadReport {
        let _ = self.reloader.reload();
        self.frontend.certs().reload()
    }

    /// Reopens the access log file by its path (SIGUSR1).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout), writes the access log's last lines and returns. A second
    /// signal abandons the drain.
    pub fn drain(self, signals: &mut StopSignals) {
        self.admin_state.set_phase(Phase::Draining);
        let _ = self.shutdown.send(true);
        let workers = self.workers;
        let StopSignals {
            runtime, term, int, ..
        } = signals;
        runtime.block_on(async {
            let joined = tokio::task::spawn_blocking(move || {
                for worker in workers {
                    let _ = worker.join();
                }
            });
            tokio::select! {
                _ = joined => tracing::info!("drained; exiting"),
                _ = term.recv() => tracing::warn!("second signal: exiting without finishing the drain"),
                _ = int.recv() => tracing::warn!("second signal: exiting without finishing the drain"),
            }
        });
        tracing::debug!(timeout = ?self.drain_timeout, "drain finished");
        let pipeline = self.current.load_full();
        let limits = pipeline.rate_limits();
        if limits.enabled() {
            // Until the metrics endpoint exports them, the totals at least
            // reach the log once.
            tracing::info!(
                rate_limited = limits.limited(),
                evictions = limits.evictions(),
                "rate limiting totals"
            );
        }
        // After the workers: their last responses' records are queued by now.
        if let Some(log) = self.access_log {
            log.close(LOG_CLOSE_DEADLINE);
        }
    }
}
