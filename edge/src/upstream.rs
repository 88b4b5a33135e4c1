//! The upstream client: one keepalive connection pool per origin pool, per
//! worker.
//!
//! Each worker owns its clients, so a pooled connection is only ever used
//! by the thread that opened it (no cross-thread hand-off on the hot path);
//! reuse stays high because every worker keeps its own idle connections,
//! as nginx workers do. Errors are classified once here so the pipeline
//! can answer with one `match`: a failed connect is 502, a missing answer
//! 504, anything else that broke before the response head 502.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;

/// Timeouts and pooling of one origin pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// From sending the request to receiving the response head.
    pub response_timeout: Duration,
    /// Longest pause between body chunks, either direction.
    pub body_timeout: Duration,
    /// Idle keepalive connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl From<&edge_config::Pool> for PoolSettings {
    fn from(pool: &edge_config::Pool) -> Self {
        PoolSettings {
            connect_timeout: pool.connect_timeout,
            response_timeout: pool.response_timeout,
            body_timeout: pool.body_timeout,
            max_idle_per_endpoint: pool.max_idle_per_endpoint,
            idle_timeout: pool.idle_timeout,
        }
    }
}

/// Why an upstream exchange failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No TCP connection could be made (refused, unreachable, connect timeout).
    #[error("connect failed: {0}")]
    Connect(String),
    /// Connected, but no response head within the response timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection broke or the origin spoke invalid HTTP.
    #[error("exchange failed: {0}")]
    Exchange(String),
    /// The pool has no endpoint to send to.
    #[error("no endpoint available")]
    NoEndpoint,
}

impl UpstreamError {
    /// The status the client receives, and the cause written in its body.
    pub fn client_answer(&self) -> (http::StatusCode, &'static str) {
        match self {
            UpstreamError::Connect(_) => (
                http::StatusCode::BAD_GATEWAY,
                "edge: could not connect to the origin\n",
            ),
            UpstreamError::Timeout(_) => (
                http::StatusCode::GATEWAY_TIMEOUT,
                "edge: the origin did not answer in time\n",
            ),
            UpstreamError::Exchange(_) => (
                http::StatusCode::BAD_GATEWAY,
                "edge: the origin closed the connection or sent an invalid response\n",
            ),
            UpstreamError::NoEndpoint => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "edge: no origin server is available\n",
            ),
        }
    }
}

/// A keepalive HTTP/1.1 client for one origin pool.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, ProxyBody>,
    response_timeout: Duration,
}

impl UpstreamClient {
    /// A client with the pool's timeouts and idle-connection bounds.
    pub fn new(settings: &PoolSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(settings.max_idle_per_endpoint)
            // The pipeline always sets Host (the client's, by default).
            .set_host(false)
            .build(connector);
        UpstreamClient {
            client,
            response_timeout: settings.response_timeout,
        }
    }

    /// Sends `req` (absolute URI naming the endpoint) and waits for the head.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(self.response_timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamError::Exchange(error_chain(&e))),
        }
    }
}

/// An error with its sources, "outer: inner: root", for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
