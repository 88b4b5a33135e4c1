//! Workers: one OS thread per core, each with its own single-threaded tokio
//! runtime, its own listening sockets and its own upstream pools, so a
//! request never crosses threads.

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::caps::{Caps, Rejected};
use crate::conn::{HttpServer, stopping};
use crate::https::HttpsPolicy;
use crate::observe::metrics::connections_rejected;
use crate::proxy::{CurrentPipeline, Proxy};
use crate::tls::TlsListener;

/// What one worker thread needs to run.
pub struct WorkerSpec {
    /// Worker number, for thread names and logs.
    pub index: usize,
    /// This worker's socket of every listener.
    pub listeners: Vec<StdListener>,
    /// TLS of each listener (same order), shared by all workers.
    pub tls: Vec<Option<Arc<TlsListener>>>,
    /// Connection caps of each listener (same order), shared by all workers.
    pub caps: Vec<Caps>,
    /// Per-site redirect and HSTS rules, when any site has them.
    pub https: Option<Arc<HttpsPolicy>>,
    /// The shared pipeline tables.
    pub pipeline: CurrentPipeline,
    /// Downstream limits.
    pub limits: edge_config::Limits,
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
    let proxy = Arc::new(Proxy::new(spec.pipeline));
    let server = Arc::new(HttpServer::new(&spec.limits, spec.https));
    // Every accept loop and connection holds a sender; when the last one
    // is dropped, `recv` returns None: the worker has drained.
    let (alive, mut drained) = mpsc::channel::<()>(1);
    for ((listener, tls), caps) in spec.listeners.into_iter().zip(spec.tls).zip(spec.caps) {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(worker = spec.index, %error, "cannot register listener");
                continue;
            }
        };
        tokio::spawn(accept_loop(
            listener,
            tls,
            caps,
            server.clone(),
            proxy.clone(),
            spec.shutdown.clone(),
            alive.clone(),
        ));
    }
    drop(alive);

    let mut shutdown = spec.shutdown;
    stopping(&mut shutdown).await;
    if tokio::time::timeout(spec.drain_timeout, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = spec.index,
            timeout = ?spec.drain_timeout,
            "drain timeout reached; closing remaining connections"
        );
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsListener>>,
    caps: Caps,
    server: Arc<HttpServer>,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    // Resolved once: a flood of refusals costs an atomic add each.
    let refused_listener = connections_rejected(Rejected::ListenerCap.label());
    let refused_ip = connections_rejected(Rejected::IpCap.label());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let admission = match caps.admit(peer.ip()) {
                    Ok(admission) => admission,
                    Err(rejected) => {
                        match rejected {
                            Rejected::ListenerCap => refused_listener.increment(1),
                            Rejected::IpCap => refused_ip.increment(1),
                        }
                        tracing::debug!(%peer, reason = rejected.label(), "connection refused");
                        // A reset, not a FIN: no TIME_WAIT socket per
                        // refused connection when a flood hits the cap.
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        drop(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (server, proxy, tls, shutdown, alive) = (
                    server.clone(),
                    proxy.clone(),
                    tls.clone(),
                    shutdown.clone(),
                    alive.clone(),
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
            Err(error) => {
                // EMFILE/ENFILE/ENOBUFS: the condition persists while we
                // retry at full speed, so pause briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
