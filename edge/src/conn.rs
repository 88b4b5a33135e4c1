//! The socket backend: tokio (epoll) sockets served by hyper, HTTP/1.1 and
//! HTTP/2 (prior knowledge, detected from the connection preface).
//!
//! Everything above the socket is in [`crate::proxy`]; this module only
//! turns bytes into `http::Request`s and back, enforces the protocol-level
//! limits, and shuts connections down gracefully when asked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use http::{Request, Version, header};
use hyper::body::Incoming;

use crate::framing::{FramingWatch, Verdicts};
use crate::proxy::{AmbiguousFraming, ClientInfo, Proxy};

/// hyper refuses read buffers under 8 KiB, so that is the smallest header
/// limit we can enforce; edge-config rejects smaller settings.
const MIN_HEADER_LIMIT: usize = 8 * 1024;

/// Protocol settings shared by every connection of a worker.
pub struct HttpServer {
    builder: auto::Builder<TokioExecutor>,
}

impl HttpServer {
    /// Applies the configured downstream limits.
    pub fn new(limits: &edge_config::Limits) -> Self {
        let max_header_size = usize::try_from(limits.max_header_size).unwrap_or(usize::MAX);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            // hyper's auto builder bounds the head by its read buffer: a head
            // that does not fit is answered with 431.
            // The timer enables hyper's header read timeout (30 s default),
            // which closes slowloris connections that never finish a head.
            .timer(TokioTimer::new())
            .max_buf_size(max_header_size.max(MIN_HEADER_LIMIT));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX));
        HttpServer { builder }
    }

    /// Serves one accepted connection until it closes, or until `shutdown`
    /// flips, after which in-flight requests finish and the connection closes.
    pub async fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        proxy: Arc<Proxy>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let client = ClientInfo {
            addr: peer,
            proto: "http",
        };
        let verdicts = Verdicts::default();
        let stream = FramingWatch::new(stream, verdicts.clone());
        let service = service_fn(move |mut req: Request<Incoming>| {
            if req.version() < Version::HTTP_2
                && req.headers().contains_key(header::TRANSFER_ENCODING)
                && verdicts.next_is_ambiguous()
            {
                req.extensions_mut().insert(AmbiguousFraming);
            }
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, client).await) }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = stopping(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            // Client-side trouble (resets, bad framing already answered by
            // hyper with 400/431): worth a debug line, not a warning.
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

/// Resolves once `shutdown` flips to true (or its sender is gone).
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not in a select.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
