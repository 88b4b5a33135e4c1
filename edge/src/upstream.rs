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

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

use crate::body::ProxyBody;
use crate::faults::Abort;

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
    /// TLS towards the endpoints, when the pool has `tls = true`.
    pub tls: Option<UpstreamTls>,
}

/// TLS settings of a pool.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Verification roots, client certificate and versions.
    pub config: Arc<rustls::ClientConfig>,
    /// A fixed SNI name; by default the endpoint's host.
    pub sni: Option<ServerName<'static>>,
    /// Offer HTTP/2 via ALPN.
    pub h2: bool,
}

impl PoolSettings {
    /// The settings of pool `name`; builds its TLS client configuration.
    pub fn new(name: &str, pool: &edge_config::Pool) -> anyhow::Result<Self> {
        let tls = if pool.tls {
            // Connections go to resolved addresses, so the name to send and
            // verify is the configured `sni`, else the endpoints' host name.
            let sni = match pool.sni.clone().or_else(|| host_name(&pool.endpoints)) {
                Some(name) => Some(ServerName::try_from(name)?),
                None => None,
            };
            Some(UpstreamTls {
                config: Arc::new(crate::tls::client::pool_config(name, pool)?),
                sni,
                h2: pool.h2,
            })
        } else {
            None
        };
        Ok(PoolSettings {
            connect_timeout: pool.connect_timeout,
            response_timeout: pool.response_timeout,
            body_timeout: pool.body_timeout,
            max_idle_per_endpoint: pool.max_idle_per_endpoint,
            idle_timeout: pool.idle_timeout,
            tls,
        })
    }

    /// The URI scheme for this pool's endpoints.
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
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
    /// Fault injection aborted the request (`faults` on the site).
    #[error("fault injected: {0:?}")]
    Injected(Abort),
    /// Over the pool's adaptive concurrency limit: shed (load shedding).
    #[error("shed: the pool is at its adaptive concurrency limit")]
    Shed,
    /// The client's request body arrived too slowly (below
    /// `[limits] body_min_rate`) or stalled: the client's fault, not the
    /// origin's.
    #[error("request body from the client: {0}")]
    ClientBody(String),
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
            UpstreamError::Injected(Abort::Status(status)) => (*status, "edge: injected fault\n"),
            UpstreamError::Shed => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "edge: the origin is overloaded; try again shortly\n",
            ),
            UpstreamError::Injected(Abort::Reset) => (
                http::StatusCode::BAD_GATEWAY,
                "edge: injected fault (connection reset)\n",
            ),
            UpstreamError::ClientBody(_) => (
                http::StatusCode::REQUEST_TIMEOUT,
                "edge: the request body arrived too slowly\n",
            ),
        }
    }

    /// The RFC 9209 `error` type of a gateway error edge generates, for
    /// its `Proxy-Status`; `None` for answers that are not about reaching
    /// the next hop (shedding, a slow client body).
    pub fn proxy_status_error(&self) -> Option<&'static str> {
        match self {
            UpstreamError::Connect(_) => Some("connection_refused"),
            UpstreamError::Timeout(_) => Some("http_response_timeout"),
            UpstreamError::Exchange(_) => Some("http_response_incomplete"),
            UpstreamError::NoEndpoint => Some("destination_unavailable"),
            UpstreamError::Injected(_) => Some("proxy_internal_error"),
            UpstreamError::Shed | UpstreamError::ClientBody(_) => None,
        }
    }

    /// The answer the client receives. An injected reset is marked
    /// [`ResetConnection`]: the connection closes without sending it.
    pub fn client_response(&self) -> http::Response<crate::body::ProxyBody> {
        let (status, text) = self.client_answer();
        let mut response = crate::proxy::local(status, text);
        match self {
            UpstreamError::Injected(Abort::Reset) => {
                response.extensions_mut().insert(ResetConnection);
            }
            UpstreamError::Shed => {
                // One second: the limit adapts within a few origin round trips.
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
            }
            _ => {}
        }
        response
    }
}

/// Marks a response that must not be sent: the connection is closed
/// instead (an injected connection reset).
#[derive(Debug, Clone, Copy)]
pub struct ResetConnection;

/// A keepalive HTTP/1.1 client for one origin pool.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    response_timeout: Duration,
}

impl UpstreamClient {
    /// A client with the pool's timeouts and idle-connection bounds.
    pub fn new(settings: &PoolSettings) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        // https:// URIs must reach the TLS layer wrapped around it.
        http.enforce_http(false);
        let connector = match &settings.tls {
            Some(tls) => {
                let builder = HttpsConnectorBuilder::new()
                    .with_tls_config((*tls.config).clone())
                    .https_only();
                let builder = match &tls.sni {
                    Some(name) => builder
                        .with_server_name_resolver(FixedServerNameResolver::new(name.clone())),
                    None => builder,
                };
                if tls.h2 {
                    builder.enable_all_versions().wrap_connector(http)
                } else {
                    builder.enable_http1().wrap_connector(http)
                }
            }
            None => HttpsConnectorBuilder::new()
                .with_tls_config(crate::tls::client::unused_config())
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        };
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
            Ok(Err(e)) if client_body_failed(&e) => Err(UpstreamError::ClientBody(error_chain(&e))),
            Ok(Err(e)) => Err(UpstreamError::Exchange(error_chain(&e))),
        }
    }
}

/// The host of the first endpoint when it is a name rather than an address.
fn host_name(endpoints: &[edge_config::Endpoint]) -> Option<String> {
    let (host, _port) = endpoints.first()?.addr.rsplit_once(':')?;
    let is_address = host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok();
    (!is_address).then(|| host.to_owned())
}

/// Whether the exchange failed because the client's request body did:
/// too slow, or stalled past the pool's body timeout.
fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(error) = source {
        if error.is::<crate::body::BodyTooSlow>() || error.is::<crate::body::BodyStalled>() {
            return true;
        }
        source = error.source();
    }
    false
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
