//! The node's listening side, built at start and changed by config
//! reloads: the data listeners (one `SO_REUSEPORT` socket per worker
//! each), their connection caps, and the settings new connections are
//! served with (`[limits]`, per-site HTTPS rules).
//!
//! A change happens in two steps. [`Frontend::prepare`] binds every added
//! listener and loads its certificates; if anything fails the reload is
//! refused and the plan is dropped, closing what it bound. Only then does
//! [`Frontend::apply`] make it live: new connections get the new settings,
//! workers start accepting on added listeners, then stop accepting on
//! removed ones, whose open connections carry on until they end.
//!
//! Listeners are matched by their configured address. One whose settings
//! changed (TLS added, say) is replaced: its new sockets join the old ones'
//! `SO_REUSEPORT` group before the old ones close, so the port never stops
//! answering; a listener configured with port 0 keeps the port it was
//! given. Connections the kernel has completed but a closing socket has not
//! accepted yet are taken and served before it closes (see `worker`); one
//! that completes in the instant between that sweep and the close is reset
//! by the kernel, a window `net.ipv4.tcp_migrate_req` closes on kernels
//! that have it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use edge_config::{Config, Limits, Listener};
use tokio::sync::mpsc;

use crate::caps::{self, Caps, ListenerCap, PerIp};
use crate::conn::HttpServer;
use crate::https::HttpsPolicy;
use crate::listen;
use crate::tls::TlsListener;
use crate::tls::reload::CertReloader;
use crate::worker::{ListenerSocket, WorkerCommand};

/// The server settings new connections are served with; a reload stores
/// new ones, open connections keep theirs.
pub type CurrentServer = Arc<ArcSwap<HttpServer>>;

/// The listeners, caps and connection settings in force.
pub struct Frontend {
    /// Each worker's command channel.
    workers: Vec<mpsc::UnboundedSender<WorkerCommand>>,
    /// The open-file limit raised at start, which bounds the caps.
    fd_limit: Option<u64>,
    /// The node-wide per-client connection count.
    per_ip: Arc<PerIp>,
    server: CurrentServer,
    certs: Arc<CertReloader>,
    /// Changed by one reload at a time (the config reloader's lock).
    open: Mutex<OpenListeners>,
}

#[derive(Default)]
struct OpenListeners {
    listeners: Vec<OpenListener>,
    next_id: u64,
}

/// A listener the workers accept on.
struct OpenListener {
    id: u64,
    config: Listener,
    /// Bound address (port 0 resolved).
    addr: SocketAddr,
    tls: Option<Arc<TlsListener>>,
    cap: Arc<ListenerCap>,
}

/// The listeners of a config, bound and loaded but not serving yet.
pub struct ListenerPlan {
    /// In config order.
    listeners: Vec<Planned>,
}

enum Planned {
    /// An open listener whose settings did not change.
    Keep(u64),
    /// A listener to open (added, or replacing one at the same address).
    Open {
        config: Listener,
        addr: SocketAddr,
        tls: Option<Arc<TlsListener>>,
        /// One per worker, bound but not listening until applied.
        sockets: Vec<socket2::Socket>,
        /// The cap of the listener it replaces: connections open there
        /// still count against the port.
        cap: Option<Arc<ListenerCap>>,
    },
}

/// A data listener as announced and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundListener {
    /// Bound address.
    pub addr: SocketAddr,
    /// Whether it terminates TLS.
    pub tls: bool,
}

impl BoundListener {
    /// The listener as a URL: `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Frontend {
    /// Binds every listener of `config` for `workers` workers; the
    /// receivers, one per worker, already hold their sockets.
    pub fn start(
        config: &Config,
        workers: usize,
    ) -> anyhow::Result<(Frontend, Vec<mpsc::UnboundedReceiver<WorkerCommand>>)> {
        let fd_limit = match caps::raise_fd_limit() {
            Ok(limit) => {
                tracing::info!(nofile = limit, "open-file limit raised to the hard limit");
                Some(limit)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read or raise the open-file limit; keeping max_connections as configured");
                None
            }
        };
        let (senders, receivers) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let frontend = Frontend {
            workers: senders,
            fd_limit,
            per_ip: Arc::new(PerIp::new(config.limits.max_connections_per_ip)),
            server: Arc::new(ArcSwap::from_pointee(HttpServer::new(&config.limits, None))),
            certs: Arc::new(CertReloader::default()),
            open: Mutex::default(),
        };
        let plan = frontend.prepare(config)?;
        frontend.apply(plan, config);
        Ok((frontend, receivers))
    }

    /// The server settings workers serve new connections with.
    pub fn server(&self) -> CurrentServer {
        self.server.clone()
    }

    /// Every TLS listener's certificates, for reloading.
    pub fn certs(&self) -> Arc<CertReloader> {
        self.certs.clone()
    }

    /// Binds the listeners `config` adds or changes and loads their
    /// certificates, without serving them yet. The error names the
    /// listener (`listeners[N]`), as `edge check` would.
    pub fn prepare(&self, config: &Config) -> anyhow::Result<ListenerPlan> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let running: Vec<&Listener> = open.listeners.iter().map(|l| &l.config).collect();
        let matches = match_listeners(&running, &config.listeners);
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for (index, (listener, matched)) in config.listeners.iter().zip(matches).enumerate() {
            let (addr, cap) = match matched {
                Match::Unchanged(at) => {
                    listeners.push(Planned::Keep(open.listeners[at].id));
                    continue;
                }
                // A replaced listener keeps the port it was given.
                Match::Replaces(at) => (
                    open.listeners[at].addr,
                    Some(open.listeners[at].cap.clone()),
                ),
                Match::New => (listener.addr, None),
            };
            let tls = listener
                .tls
                .as_ref()
                .map(|tls| TlsListener::new(index, tls).map(Arc::new))
                .transpose()?;
            let sockets = listen::bind_reuseport(addr, self.workers.len()).with_context(|| {
                format!("listeners[{index}]: cannot listen on {}", listener.addr)
            })?;
            listeners.push(Planned::Open {
                config: listener.clone(),
                addr: listen::local_addr(&sockets[0])?,
                tls,
                sockets,
                cap,
            });
        }
        Ok(ListenerPlan { listeners })
    }

    /// Makes `plan` (prepared from `config`) and `config`'s limits and
    /// HTTPS rules live, and returns the listeners now open, config order.
    pub fn apply(&self, plan: ListenerPlan, config: &Config) -> Vec<BoundListener> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let max = self.listener_cap(&config.limits, plan.listeners.len());
        self.per_ip.set_max(config.limits.max_connections_per_ip);
        let mut closing = std::mem::take(&mut open.listeners);
        let mut listeners = Vec::with_capacity(plan.listeners.len());
        for planned in plan.listeners {
            let listener = match planned {
                Planned::Keep(id) => {
                    let at = closing
                        .iter()
                        .position(|open| open.id == id)
                        .expect("a kept listener is open: reloads run one at a time");
                    closing.swap_remove(at)
                }
                Planned::Open {
                    config,
                    addr,
                    tls,
                    sockets,
                    cap,
                } => {
                    let id = open.next_id;
                    open.next_id += 1;
                    let cap = cap.unwrap_or_else(|| Arc::new(ListenerCap::new(max)));
                    for (worker, socket) in self.workers.iter().zip(sockets) {
                        let socket = match listen::listen(socket) {
                            Ok(socket) => socket,
                            Err(error) => {
                                tracing::error!(%addr, %error, "cannot listen; this worker skips the listener");
                                continue;
                            }
                        };
                        let caps = Caps {
                            listener: cap.clone(),
                            per_ip: self.per_ip.clone(),
                        };
                        let socket = ListenerSocket {
                            id,
                            socket,
                            tls: tls.clone(),
                            caps,
                        };
                        // A worker that has exited is draining: nothing to tell it.
                        let _ = worker.send(WorkerCommand::Listen(socket));
                    }
                    tracing::info!(%addr, tls = tls.is_some(), "listening");
                    OpenListener {
                        id,
                        config,
                        addr,
                        tls,
                        cap,
                    }
                }
            };
            listener.cap.set_max(max);
            listeners.push(listener);
        }
        // After the new ones opened: a replaced listener's port never
        // stops answering.
        for closed in closing {
            for worker in &self.workers {
                let _ = worker.send(WorkerCommand::Close(closed.id));
            }
            tracing::info!(addr = %closed.addr, "listener closed; its open connections carry on");
        }
        let https_port = listeners
            .iter()
            .find_map(|l| l.tls.as_ref().map(|_| l.addr.port()));
        let https = HttpsPolicy::new(config, https_port).map(Arc::new);
        self.server
            .store(Arc::new(HttpServer::new(&config.limits, https)));
        self.certs.replace(
            listeners
                .iter()
                .enumerate()
                .filter_map(|(index, l)| Some((index, l.addr, l.tls.clone()?)))
                .collect(),
        );
        open.listeners = listeners;
        bound(&open.listeners)
    }

    /// The listeners open now, config order.
    pub fn listeners(&self) -> Vec<BoundListener> {
        bound(
            &self
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .listeners,
        )
    }

    /// The per-listener cap for `listeners` listeners: `max_connections`,
    /// lowered (and said so) where the open-file limit could not hold it.
    fn listener_cap(&self, limits: &Limits, listeners: usize) -> u64 {
        let Some(fd_limit) = self.fd_limit else {
            return limits.max_connections;
        };
        let max = caps::effective_max_connections(limits.max_connections, listeners, fd_limit);
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
}

/// How one listener of a new config relates to the open ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// The open listener at this index has the same settings: keep it.
    Unchanged(usize),
    /// The open listener at this index has the same address but other
    /// settings: replace it on its port.
    Replaces(usize),
    /// Nothing open matches: bind it.
    New,
}

/// Matches each of `new`'s listeners to one of `running` (in config
/// order). Several listeners may share a configured address (port 0), so
/// each running listener is matched at most once: unchanged ones first,
/// then changed ones at the same address. Running listeners no entry names
/// are the ones to close.
fn match_listeners(running: &[&Listener], new: &[Listener]) -> Vec<Match> {
    let mut claimed = vec![false; running.len()];
    let mut claim = |wanted: &dyn Fn(&Listener) -> bool| {
        let at = (0..running.len()).find(|&i| !claimed[i] && wanted(running[i]))?;
        claimed[at] = true;
        Some(at)
    };
    let unchanged: Vec<Option<usize>> = new
        .iter()
        .map(|listener| claim(&|open| open == listener))
        .collect();
    new.iter()
        .zip(unchanged)
        .map(|(listener, unchanged)| match unchanged {
            Some(at) => Match::Unchanged(at),
            None => claim(&|open| open.addr == listener.addr).map_or(Match::New, Match::Replaces),
        })
        .collect()
}

fn bound(listeners: &[OpenListener]) -> Vec<BoundListener> {
    listeners
        .iter()
        .map(|l| BoundListener {
            addr: l.addr,
            tls: l.tls.is_some(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(addr: &str, tls: bool) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            tls: tls.then(|| edge_config::ListenerTls {
                certs: Vec::new(),
                ticket_key_file: None,
                session_cache: 0,
                handshake_timeout: std::time::Duration::from_secs(1),
            }),
        }
    }

    #[test]
    fn unchanged_listeners_are_kept_changed_ones_replaced_others_new() {
        let running = [listener("0.0.0.0:80", false), listener("0.0.0.0:443", true)];
        let running: Vec<&Listener> = running.iter().collect();
        let new = [
            listener("0.0.0.0:443", true),
            listener("0.0.0.0:80", true),
            listener("0.0.0.0:8080", false),
        ];
        assert_eq!(
            match_listeners(&running, &new),
            [Match::Unchanged(1), Match::Replaces(0), Match::New]
        );
    }

    #[test]
    fn listeners_sharing_port_zero_are_matched_once_each() {
        // Two listeners configured on 127.0.0.1:0, the second with TLS.
        let running = [
            listener("127.0.0.1:0", false),
            listener("127.0.0.1:0", true),
        ];
        let running: Vec<&Listener> = running.iter().collect();
        let same = [
            listener("127.0.0.1:0", false),
            listener("127.0.0.1:0", true),
        ];
        assert_eq!(
            match_listeners(&running, &same),
            [Match::Unchanged(0), Match::Unchanged(1)]
        );
        // The TLS one turns plain: the first keeps its listener, the second
        // replaces the TLS one, not the first.
        let plain = [
            listener("127.0.0.1:0", false),
            listener("127.0.0.1:0", false),
        ];
        assert_eq!(
            match_listeners(&running, &plain),
            [Match::Unchanged(0), Match::Replaces(1)]
        );
        // A third one on port 0 is new; dropping one leaves the other open.
        let three = [
            listener("127.0.0.1:0", false),
            listener("127.0.0.1:0", true),
            listener("127.0.0.1:0", false),
        ];
        assert_eq!(
            match_listeners(&running, &three),
            [Match::Unchanged(0), Match::Unchanged(1), Match::New]
        );
        assert_eq!(
            match_listeners(&running, &[listener("127.0.0.1:0", true)]),
            [Match::Unchanged(1)]
        );
    }
}
