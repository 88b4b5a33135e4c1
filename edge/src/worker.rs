//! Workers: one OS thread per core, each with its own single-threaded tokio
//! runtime, its own listening sockets and its own upstream pools, so a
//! request never crosses threads.
//!
//! A worker learns its listeners through a command channel: start-up sends
//! every listener's socket, and a config reload sends the sockets of added
//! listeners and closes removed ones. Closing a listener stops its accept
//! loop only; the connections it accepted carry on until they end.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::caps::{Caps, Rejected};
use crate::conn::stopping;
use crate::frontend::CurrentServer;
use crate::observe::metrics::connections_rejected;
use crate::proxy::{CurrentPipeline, Proxy};
use crate::tls::TlsListener;

/// What the node asks of a running worker.
pub enum WorkerCommand {
    /// Start accepting on this worker's socket of a listener.
    Listen(ListenerSocket),
    /// Stop accepting on listener `id`; its open connections carry on.
    Close(u64),
}

/// One worker's share of a listener.
pub struct ListenerSocket {
    /// The listener's id, unique for the node's lifetime.
    pub id: u64,
    /// This worker's `SO_REUSEPORT` socket.
    pub socket: StdListener,
    /// The listener's TLS, shared by all workers.
    pub tls: Option<Arc<TlsListener>>,
    /// The listener's connection caps, shared by all workers.
    pub caps: Caps,
}

/// What one worker thread needs to run.
pub struct WorkerSpec {
    /// Worker number, for thread names and logs.
    pub index: usize,
    /// Listeners to open and close, from start-up and reloads.
    pub commands: mpsc::UnboundedReceiver<WorkerCommand>,
    /// Protocol settings and limits for new connections.
    pub server: CurrentServer,
    /// The shared pipeline tables.
    pub pipeline: CurrentPipeline,
    /// Flips to `true` when the node starts draining.
    pub shutdown: watch::Receiver<bool>,
    /// How long in-flight requests may take once draining starts.
    pub drain_timeout: Duration,
}

/// Starts the worker thread.
pub fn spawn(spec: WorkerSpec) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("edge-worker-{}", spec.index))
        .spawn(move || runtime.block_on(run(spec)))
}

async fn run(spec: WorkerSpec) {
    let WorkerSpec {
        index,
        mut commands,
        server,
        pipeline,
        mut shutdown,
        drain_timeout,
    } = spec;
    let proxy = Arc::new(Proxy::new(pipeline));
    // Every accept loop and connection holds a sender; when the last one
    // is dropped, `recv` returns None: the worker has drained.
    let (alive, mut drained) = mpsc::channel::<()>(1);
    // Dropping a listener's sender ends its accept loop.
    let mut open: HashMap<u64, oneshot::Sender<()>> = HashMap::new();
    loop {
        let command = tokio::select! {
            command = commands.recv() => command,
            () = stopping(&mut shutdown) => break,
        };
        match command {
            Some(WorkerCommand::Listen(listener)) => {
                let id = listener.id;
                let socket = match TcpListener::from_std(listener.socket) {
                    Ok(socket) => socket,
                    Err(error) => {
                        tracing::error!(worker = index, %error, "cannot register listener");
                        continue;
                    }
                };
                let (close, closed) = oneshot::channel();
                open.insert(id, close);
                tokio::spawn(accept_loop(
                    Accepting {
                        socket,
                        tls: listener.tls,
                        caps: listener.caps,
                        server: server.clone(),
                        proxy: proxy.clone(),
                        shutdown: shutdown.clone(),
                        alive: alive.clone(),
                    },
                    closed,
                ));
            }
            Some(WorkerCommand::Close(id)) => {
                open.remove(&id);
            }
            // The node dropped its command channels: nothing more will
            // come; serve what is open until the drain.
            None => {
                stopping(&mut shutdown).await;
                break;
            }
        }
    }
    drop(alive);
    if tokio::time::timeout(drain_timeout, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = index,
            timeout = ?drain_timeout,
            "drain timeout reached; closing remaining connections"
        );
    }
}

/// One accept loop's listener and what its connections are served with.
struct Accepting {
    socket: TcpListener,
    tls: Option<Arc<TlsListener>>,
    caps: Caps,
    server: CurrentServer,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

async fn accept_loop(mut accepting: Accepting, mut closed: oneshot::Receiver<()>) {
    // Resolved once: a flood of refusals costs an atomic add each.
    let refused_listener = connections_rejected(Rejected::ListenerCap.label());
    let refused_ip = connections_rejected(Rejected::IpCap.label());
    let refused = |rejected: Rejected| match rejected {
        Rejected::ListenerCap => refused_listener.increment(1),
        Rejected::IpCap => refused_ip.increment(1),
    };
    loop {
        let accepted = tokio::select! {
            accepted = accepting.socket.accept() => accepted,
            () = stopping(&mut accepting.shutdown) => return,
            _ = &mut closed => {
                // Removed by a reload: connections the kernel already
                // completed sit in this socket's queue and would be reset
                // when it closes, so take them first.
                while let Some(Ok((stream, peer))) = accept_ready(&accepting.socket).await {
                    accepting.serve(stream, peer, &refused);
                }
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => accepting.serve(stream, peer, &refused),
            Err(error) => {
                // EMFILE/ENFILE/ENOBUFS: the condition persists while we
                // retry at full speed, so pause briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A connection already waiting in `socket`'s queue, without waiting for
/// one.
async fn accept_ready(
    socket: &TcpListener,
) -> Option<std::io::Result<(TcpStream, std::net::SocketAddr)>> {
    std::future::poll_fn(|cx| match socket.poll_accept(cx) {
        Poll::Ready(accepted) => Poll::Ready(Some(accepted)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

impl Accepting {
    /// Admits the connection past the caps (or resets it) and serves it on
    /// a task of its own with the server settings in force now.
    fn serve(&self, stream: TcpStream, peer: std::net::SocketAddr, refused: &impl Fn(Rejected)) {
        let admission = match self.caps.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(rejected) => {
                refused(rejected);
                tracing::debug!(%peer, reason = rejected.label(), "connection refused");
                // A reset, not a FIN: no TIME_WAIT socket per refused
                // connection when a flood hits the cap.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = self.server.load_full();
        let (proxy, tls, shutdown, alive) = (
            self.proxy.clone(),
            self.tls.clone(),
            self.shutdown.clone(),
            self.alive.clone(),
        );
        tokio::spawn(async move {
            match tls {
                Some(tls) => server.serve_tls(stream, peer, proxy, tls, shutdown).await,
                None => server.serve(stream, peer, proxy, shutdown).await,
            }
            drop(admission);
            drop(alive);
        });
    }
}
