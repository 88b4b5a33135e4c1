//! A running node: loads every certificate, opens the access log and binds
//! every socket up front (so a bad file or address fails start-up, not a
//! worker later), starts the workers and the admin thread, reloads
//! certificates on SIGHUP, reopens the access log on SIGUSR1, and on
//! SIGTERM/SIGINT drains the workers and flushes the log.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use edge_config::Config;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::admin::{self, AdminState, Phase};
use crate::cache::HttpCache;
use crate::caps::{self, Caps, ListenerCap, PerIp};
use crate::discovery::Dns;
use crate::health;
use crate::https::HttpsPolicy;
use crate::listen;
use crate::observe::access_log::AccessLogWriter;
use crate::proxy::{CurrentPipeline, Pipeline};
use crate::reload::ConfigReloader;
use crate::status::NodeInfo;
use crate::tls::TlsListener;
use crate::tls::reload::{CertReloader, ReloadReport};
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
    /// SIGHUP: re-read certificates.
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
                        tracing::info!("SIGHUP received: reloading certificates");
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
    listeners: Vec<SocketAddr>,
    /// Whether each listener terminates TLS.
    tls: Vec<bool>,
    certs: Arc<CertReloader>,
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
        refuse_unbuilt_features(config)?;
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
        )?);
        let current: CurrentPipeline = Arc::new(ArcSwap::new(pipeline.clone()));
        health::spawn(current.clone())?;
        let dns_stop = Arc::new(AtomicBool::new(false));
        dns.spawn(pipeline.clone(), dns_stop.clone())?;
        let reloader = Arc::new(ConfigReloader::new(
            config_path.map(Path::to_path_buf),
            config.clone(),
            current.clone(),
            cache,
            access_log.as_ref().map(AccessLogWriter::log),
            dns_stop,
        ));
        let workers = config.workers();
        let tls = config
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                listener
                    .tls
                    .as_ref()
                    .map(|tls| TlsListener::new(index, tls).map(Arc::new))
                    .transpose()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        let caps = connection_caps(config);

        let mut sockets_per_listener = Vec::with_capacity(config.listeners.len());
        for (index, listener) in config.listeners.iter().enumerate() {
            let sockets = listen::bind_reuseport(listener.addr, workers).with_context(|| {
                format!("listeners[{index}]: cannot listen on {}", listener.addr)
            })?;
            sockets_per_listener.push(sockets);
        }
        let listeners = sockets_per_listener
            .iter()
            .map(|sockets| sockets[0].local_addr())
            .collect::<Result<Vec<_>, _>>()?;

        let https_port = listeners
            .iter()
            .zip(&tls)
            .find_map(|(addr, tls)| tls.as_ref().map(|_| addr.port()));
        let https = HttpsPolicy::new(config, https_port).map(Arc::new);
        let certs = Arc::new(CertReloader::new(
            tls.iter()
                .zip(&listeners)
                .enumerate()
                .filter_map(|(index, (tls, addr))| Some((index, *addr, tls.clone()?)))
                .collect(),
        ));

        let admin_socket = listen::bind_single(config.admin.listen)
            .with_context(|| format!("admin.listen: cannot listen on {}", config.admin.listen))?;
        let admin = admin_socket.local_addr()?;
        let admin_state = Arc::new(
            AdminState::new(config.admin.token.clone(), certs.clone())
                .with_pipeline(current.clone())
                .with_reloader(reloader.clone())
                .with_metrics(metrics)
                .with_info(NodeInfo::new(
                    config,
                    &listeners,
                    &tls.iter().map(Option::is_some).collect::<Vec<_>>(),
                )),
        );
        admin::spawn(admin_socket, admin_state.clone())?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut handles = Vec::with_capacity(workers);
        for index in (0..workers).rev() {
            let listeners = sockets_per_listener
                .iter_mut()
                .map(|sockets| sockets.pop().expect("one socket per worker"))
                .collect();
            handles.push(worker::spawn(WorkerSpec {
                index,
                listeners,
                tls: tls.clone(),
                caps: caps.clone(),
                https: https.clone(),
                pipeline: current.clone(),
                limits: config.limits.clone(),
                shutdown: shutdown_rx.clone(),
                drain_timeout: config.node.drain_timeout,
            })?);
        }
        admin_state.set_phase(Phase::Ready);
        tracing::info!(workers, node = %config.node.id, "edge started");
        Ok(Node {
            tls: tls.iter().map(Option::is_some).collect(),
            certs,
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

    /// Bound data-listener addresses, in config order (port 0 resolved).
    pub fn listeners(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// Bound admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Prints the bound addresses and `ready` on stdout: the line protocol
    /// tests and scripts wait on.
    pub fn announce(&self) {
        for (index, (addr, tls)) in self.listeners.iter().zip(&self.tls).enumerate() {
            let scheme = if *tls { "https" } else { "http" };
            println!("listener {index}: {scheme}://{addr}");
        }
        println!("admin: http://{}", self.admin);
        println!("ready");
    }

    /// Re-reads the config file and swaps the pipeline (or keeps the
    /// running one, logged), then every TLS listener's certificates
    /// (SIGHUP; `POST /reload` does the same from the admin thread).
    pub fn reload(&self) -> ReloadReport {
        let _ = self.reloader.reload();
        self.certs.reload()
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

/// Raises the open-file limit and builds each listener's connection caps,
/// lowering `max_connections` where the limit could not hold it.
fn connection_caps(config: &Config) -> Vec<Caps> {
    let limits = &config.limits;
    let listeners = config.listeners.len();
    let max = match caps::raise_fd_limit() {
        Ok(fd_limit) => {
            let max = caps::effective_max_connections(limits.max_connections, listeners, fd_limit);
            tracing::info!(
                nofile = fd_limit,
                max_connections = max,
                "open-file limit raised to the hard limit"
            );
            if max < limits.max_connections {
                tracing::warn!(
                    nofile = fd_limit,
                    configured = limits.max_connections,
                    max_connections = max,
                    "limits.max_connections lowered to fit the open-file limit (each connection may need two descriptors); raise LimitNOFILE to allow more"
                );
            }
            max
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit; keeping max_connections as configured");
            limits.max_connections
        }
    };
    let per_ip = (limits.max_connections_per_ip > 0)
        .then(|| Arc::new(PerIp::new(limits.max_connections_per_ip)));
    (0..listeners)
        .map(|_| Caps {
            listener: Arc::new(ListenerCap::new(max)),
            per_ip: per_ip.clone(),
        })
        .collect()
}

/// Config sections that parse (they are public contract) but whose
/// behaviour has not been built yet: fail loudly or warn, never pretend.
fn refuse_unbuilt_features(config: &Config) -> anyhow::Result<()> {
    if config.sites.iter().any(|s| s.shield.is_some()) {
        tracing::warn!(
            "shield routing is not built yet; sites fetch from their origin pool directly"
        );
    }
    Ok(())
}
