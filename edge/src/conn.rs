//! The socket backend: tokio (epoll) sockets served by hyper, HTTP/1.1 and
//! HTTP/2 — in clear (h2 by prior knowledge, detected from the connection
//! preface) or over TLS (chosen by ALPN).
//!
//! Everything above the socket is in [`crate::proxy`]; this module only
//! turns bytes into `http::Request`s and back, enforces the protocol-level
//! limits (including the TLS handshake timeout, and the slow-client
//! timeouts of [`crate::conn_clock`]), applies the per-site HTTPS rules of
//! [`crate::https`], and shuts connections down gracefully when asked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use http::{Request, Version, header};
use hyper::body::Incoming;

use crate::body::{self, RateRule};
use crate::conn_clock::{ClockedIo, ConnClock, Expiry, Timeouts, Tracked, Watchdog};
use crate::framing::{FramingWatch, Verdicts};
use crate::https::{self, Decision, HttpsPolicy};
use crate::observe::metrics::slow_clients_closed;
use crate::proxy::{AmbiguousFraming, ClientInfo, Proxy};
use crate::send_stall::{self, SendDeadline};
use crate::tls::{ALPN_H2, TlsListener};
use crate::upstream::ResetConnection;

/// hyper refuses read buffers under 8 KiB, so that is the smallest header
/// limit we can enforce; edge-config rejects smaller settings.
const MIN_HEADER_LIMIT: usize = 8 * 1024;

/// Protocol settings shared by every connection of a worker.
pub struct HttpServer {
    /// Clear-text connections: HTTP/1.1, or h2 with prior knowledge.
    builder: auto::Builder<TokioExecutor>,
    /// TLS connections that negotiated `h2` by ALPN.
    h2_only: auto::Builder<TokioExecutor>,
    /// TLS connections that negotiated `http/1.1`, or no ALPN at all
    /// (RFC 9113 §3.2: h2 over TLS requires ALPN).
    http1_only: auto::Builder<TokioExecutor>,
    https: Option<Arc<HttpsPolicy>>,
    /// Header and keep-alive timeouts.
    timeouts: Timeouts,
    /// Minimum request body rate, when on.
    body_rate: Option<RateRule>,
    /// `edge_slow_clients_closed_total` for the watchdog's two reasons.
    closed_header: metrics::Counter,
    closed_idle: metrics::Counter,
    /// `[limits] send_timeout`, and its count of closed connections.
    send_timeout: Duration,
    closed_send: metrics::Counter,
    _closed_body: metrics::Counter,
}

impl HttpServer {
    /// Applies the configured downstream limits and per-site HTTPS rules.
    pub fn new(limits: &edge_config::Limits, https: Option<Arc<HttpsPolicy>>) -> Self {
        let max_header_size = usize::try_from(limits.max_header_size).unwrap_or(usize::MAX);
        let u32_of = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            // hyper's auto builder bounds the head by its read buffer: a head
            // that does not fit is answered with 431.
            .timer(TokioTimer::new())
            // Off: hyper's timer would also cut idle keep-alive connections
            // at the header timeout; the connection clock does both apart.
            .header_read_timeout(None)
            .max_buf_size(max_header_size.max(MIN_HEADER_LIMIT));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32_of(limits.max_header_size))
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .initial_stream_window_size(u32_of(limits.h2_stream_window))
            .initial_connection_window_size(u32_of(limits.h2_connection_window))
            .max_frame_size(u32_of(limits.h2_max_frame_size));
        HttpServer {
            h2_only: builder.clone().http2_only(),
            http1_only: builder.clone().http1_only(),
            builder,
            https,
            timeouts: Timeouts {
                header: limits.header_timeout,
                keepalive: limits.keepalive_timeout,
            },
            body_rate: RateRule::from_limits(limits),
            closed_header: slow_clients_closed(Expiry::Header.label()),
            closed_idle: slow_clients_closed(Expiry::Keepalive.label()),
            send_timeout: limits.send_timeout,
            closed_send: slow_clients_closed(send_stall::SEND_TIMEOUT),
            // Registered now so the series shows (at 0) before the first event.
            _closed_body: slow_clients_closed(body::BODY_RATE),
        }
    }

    /// Serves one accepted clear-text connection until it closes, or until
    /// `shutdown` flips, after which in-flight requests finish and the
    /// connection closes.
    pub async fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        proxy: Arc<Proxy>,
        shutdown: watch::Receiver<bool>,
    ) {
        let client = ClientInfo {
            addr: peer,
            proto: "http",
        };
        self.serve_http(&self.builder, stream, client, proxy, shutdown)
            .await;
    }

    /// Completes the TLS handshake (within the listener's handshake
    /// timeout; a client that has not finished by then is dropped, as is
    /// one mid-handshake when draining starts), then serves HTTP/2 or
    /// HTTP/1.1 as ALPN decided, through the same pipeline.
    pub async fn serve_tls(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        proxy: Arc<Proxy>,
        tls: Arc<TlsListener>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let timeout = tls.handshake_timeout();
        let handshake = tokio::time::timeout(timeout, tls.acceptor().accept(stream));
        let stream = tokio::select! {
            finished = handshake => match finished {
                Ok(Ok(stream)) => {
                    metrics::counter!("edge_tls_handshakes_total", "result" => "ok").increment(1);
                    stream
                }
                Ok(Err(error)) => {
                    metrics::counter!("edge_tls_handshakes_total", "result" => "failed").increment(1);
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics::counter!("edge_tls_handshakes_total", "result" => "timeout").increment(1);
                    tracing::debug!(%peer, ?timeout, "TLS handshake timed out; closing");
                    return;
                }
            },
            () = stopping(&mut shutdown) => return,
        };
        drop(tls);
        let builder = if stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
            &self.h2_only
        } else {
            &self.http1_only
        };
        let client = ClientInfo {
            addr: peer,
            proto: "https",
        };
        self.serve_http(builder, stream, client, proxy, shutdown)
            .await;
    }

    /// Serves HTTP on a clear-text stream (a socket, or TLS's plaintext
    /// side) with `builder`'s protocol choice.
    async fn serve_http<S>(
        &self,
        builder: &auto::Builder<TokioExecutor>,
        stream: S,
        client: ClientInfo,
        proxy: Arc<Proxy>,
        mut shutdown: watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let tls = client.proto == "https";
        let _open = OpenConnection::new(client.proto);
        let https = self.https.clone();
        let verdicts = Verdicts::default();
        let clock = ConnClock::new();
        let stream = SendDeadline::new(stream, self.send_timeout, self.closed_send.clone());
        let stream = ClockedIo::new(FramingWatch::new(stream, verdicts.clone()), clock.clone());
        let body_rate = self.body_rate;
        let requests = clock.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let in_flight = requests.request_started(req.version() == Version::HTTP_2);
            if req.version() < Version::HTTP_2
                && req.headers().contains_key(header::TRANSFER_ENCODING)
                && verdicts.next_is_ambiguous()
            {
                req.extensions_mut().insert(AmbiguousFraming);
            }
            let proxy = proxy.clone();
            let decision = https.as_ref().map(|policy| policy.decide(&req, tls));
            async move {
                let hsts = match decision {
                    Some(Decision::Redirect(response)) => {
                        let response = proxy.answered_by_backend(req, client, response);
                        return Ok::<_, InjectedReset>(
                            response.map(|b| Tracked::new(b, in_flight)),
                        );
                    }
                    Some(Decision::Serve(hsts)) => hsts,
                    None => None,
                };
                let response = match body_rate {
                    Some(rule) => {
                        let req = req.map(|b| body::with_min_rate(b, rule));
                        proxy.handle(req, client).await
                    }
                    None => proxy.handle(req, client).await,
                };
                if response.extensions().get::<ResetConnection>().is_some() {
                    // An injected reset: hyper closes the connection unanswered.
                    return Err(InjectedReset);
                }
                let response = https::with_hsts(response, hsts);
                Ok(response.map(|b| Tracked::new(b, in_flight)))
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut watchdog = Watchdog::new(clock, self.timeouts);
        let (mut closing, mut draining) = (false, false);
        let result = loop {
            tokio::select! {
                // The connection first, so the watchdog sees what this
                // wake-up did to the clock.
                biased;
                result = conn.as_mut() => break result,
                expiry = std::future::poll_fn(|cx| watchdog.poll_expired(cx)) => {
                    if closing {
                        // Told to go and still here: close it.
                        break Ok(());
                    }
                    match expiry {
                        Expiry::Header => {
                            self.closed_header.increment(1);
                            tracing::debug!(peer = %client.addr, "no complete request head in time; closing");
                            break Ok(());
                        }
                        Expiry::Keepalive => {
                            self.closed_idle.increment(1);
                            tracing::debug!(peer = %client.addr, "idle past the keep-alive timeout; closing");
                            closing = true;
                            watchdog.closing();
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
                () = stopping(&mut shutdown), if !draining => {
                    draining = true;
                    closing = true;
                    watchdog.closing();
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(error) = result {
            // Client-side trouble (resets, bad framing already answered by
            // hyper with 400/431): worth a debug line, not a warning.
            tracing::debug!(peer = %client.addr, %error, "connection ended with an error");
        }
    }
}

/// The service error that makes hyper drop a connection (injected reset).
#[derive(Debug)]
struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault injection")
    }
}

impl std::error::Error for InjectedReset {}

/// Counts a connection in `edge_connections_open` while it lives.
struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    fn new(scheme: &'static str) -> Self {
        metrics::counter!("edge_connections_total", "scheme" => scheme).increment(1);
        let open = metrics::gauge!("edge_connections_open", "scheme" => scheme);
        open.increment(1.0);
        OpenConnection(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Resolves once `shutdown` flips to true (or its sender is gone).
pub async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not in a select.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
