//! The admin API listener: liveness and readiness for orchestrators and
//! load balancers in front of the node, `POST /reload` (certificates) and
//! `POST /purge` (cache objects by URL or tag); the `POST` endpoints are
//! guarded by `[admin] token` as a Bearer token when one is set.
//!
//! It runs on its own thread so a saturated data plane cannot starve the
//! health checks that would tell an orchestrator about it.

use std::convert::Infallible;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::proxy::{CurrentPipeline, Pipeline};
use crate::purge::PurgeRequest;
use crate::reload::ConfigReloader;
use crate::status::NodeInfo;
use crate::tls::reload::{CertReloader, ReloadReport};

/// Lifecycle phase reported by `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Listeners are being bound.
    Starting = 0,
    /// Listeners up, config loaded: traffic welcome.
    Ready = 1,
    /// Shutting down: finishing in-flight requests, accepting none.
    Draining = 2,
}

/// The node state the admin API reports, shared with the main thread.
#[derive(Debug, Default)]
pub struct AdminState {
    phase: AtomicU8,
    /// `[admin] token`: required as `Authorization: Bearer` on mutating
    /// endpoints when set.
    token: Option<String>,
    certs: Arc<CertReloader>,
    /// The pipeline in force: `/purge` acts on its cache, `/metrics`,
    /// `/status` and `/faults` report it.
    pipeline: Option<CurrentPipeline>,
    /// Re-reads the config file on `POST /reload`.
    reloader: Option<Arc<ConfigReloader>>,
    /// Renders `/metrics`.
    metrics: Option<PrometheusHandle>,
    /// What `/status` reports about the node itself.
    info: Option<Arc<NodeInfo>>,
}

impl AdminState {
    /// State for a node with this admin `token` and these TLS listeners.
    pub fn new(token: Option<String>, certs: Arc<CertReloader>) -> Self {
        AdminState {
            phase: AtomicU8::new(Phase::Starting as u8),
            token,
            certs,
            pipeline: None,
            reloader: None,
            metrics: None,
            info: None,
        }
    }

    /// The same state, reporting `info` on `/status`.
    pub fn with_info(self, info: Arc<NodeInfo>) -> Self {
        AdminState {
            info: Some(info),
            ..self
        }
    }

    /// The same state, serving `/metrics` from `handle`.
    pub fn with_metrics(self, handle: PrometheusHandle) -> Self {
        AdminState {
            metrics: Some(handle),
            ..self
        }
    }

    /// The same state, reporting on the pipeline in force.
    pub fn with_pipeline(self, pipeline: CurrentPipeline) -> Self {
        AdminState {
            pipeline: Some(pipeline),
            ..self
        }
    }

    /// The same state, reloading the config file on `POST /reload`.
    pub fn with_reloader(self, reloader: Arc<ConfigReloader>) -> Self {
        AdminState {
            reloader: Some(reloader),
            ..self
        }
    }

    /// The pipeline in force, once the node has one.
    fn current(&self) -> Option<Arc<Pipeline>> {
        self.pipeline.as_ref().map(|p| p.load_full())
    }

    /// Whether `req` may call a mutating endpoint.
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
    }
    /// Records a lifecycle change.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }
}

/// Starts the admin thread on an already bound listener.
pub fn spawn(listener: StdListener, state: Arc<AdminState>) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("edge-admin".into())
        .spawn(move || runtime.block_on(serve(listener, state)))
}

async fn serve(listener: StdListener, state: Arc<AdminState>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "admin listener unusable");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = answer(&req, &state);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer<B>(req: &Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    let (status, text) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => (StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => match state.phase() {
            Phase::Ready => (StatusCode::OK, "ready\n"),
            Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        },
        (_, "/healthz" | "/readyz") => (StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        (&Method::GET | &Method::HEAD, "/metrics") => return metrics(state),
        (&Method::GET | &Method::HEAD, "/status") => return status(state),
        (_, "/status") => (StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        (&Method::POST, "/reload") => return reload(req, state),
        (&Method::POST, "/purge") => return purge(req, state),
        (_, "/reload" | "/purge") => (StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        (&Method::GET | &Method::POST | &Method::DELETE, "/faults") => return faults(req, state),
        (_, "/faults") => (StatusCode::METHOD_NOT_ALLOWED, "use GET, POST or DELETE\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `POST /reload`: re-reads every TLS listener's certificates. 200 when
/// all took the new files, 422 when some kept their old ones (the JSON
/// says which and why). Reading a few PEM files blocks this thread for
/// well under a millisecond each; the admin thread serves nothing else
/// that is latency-critical.
fn reload<B>(req: &Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    if !state.authorized(req) {
        return unauthorized();
    }
    let config = state.reloader.as_ref().map(|r| r.reload());
    let report = state.certs.reload();
    let config_ok = !matches!(config, Some(Err(_)));
    let status = if report.ok() && config_ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let answer = ReloadAnswer {
        config: config.as_ref().map(|outcome| ConfigReload {
            ok: outcome.is_ok(),
            error: outcome.as_ref().err().map(String::as_str),
        }),
        certificates: &report,
    };
    json(status, &answer)
}

/// The answer of `POST /reload`: `config` is `null` when the node has no
/// config file to re-read.
#[derive(Serialize)]
struct ReloadAnswer<'a> {
    config: Option<ConfigReload<'a>>,
    certificates: &'a ReloadReport,
}

/// `{"ok":true}`, or `{"ok":false,"error":"..."}` when the running config stays.
#[derive(Serialize)]
struct ConfigReload<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `POST /purge?url=URL` or `?tag=TAG`, optionally `&soft=1`: 200 with
/// the counts as JSON; 400 for a malformed query or a URL no site serves.
fn purge<B>(req: &Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    if !state.authorized(req) {
        return unauthorized();
    }
    let Some(pipeline) = &state.current() else {
        return starting();
    };
    let purge = match PurgeRequest::parse(req.uri().query().unwrap_or("")) {
        Ok(purge) => purge,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    match purge.apply(pipeline) {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(why) => error(StatusCode::BAD_REQUEST, &why),
    }
}

/// `GET /status`: the node, its pools and its cache as JSON.
fn status(state: &AdminState) -> Response<Full<Bytes>> {
    let (Some(info), Some(pipeline)) = (&state.info, &state.current()) else {
        return starting();
    };
    json_text(StatusCode::OK, crate::status::render(info, pipeline))
}

/// `GET /metrics`: the Prometheus text format (version 0.0.4).
fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let (Some(handle), Some(pipeline)) = (&state.metrics, &state.current()) else {
        return starting();
    };
    let text = crate::observe::scrape::render(handle, pipeline);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `/faults`: `GET` lists each site's rule in force; `POST ?site=HOST&...`
/// sets a runtime rule (parameters in `faults.rs`, `ttl` default 5 min);
/// `DELETE ?site=HOST` removes it (the configured rule, if any, applies
/// again). Changing rules needs the token.
fn faults<B>(req: &Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    let Some(pipeline) = &state.current() else {
        return starting();
    };
    let now = std::time::Instant::now();
    if req.method() == Method::GET {
        /// `{"sites":[...]}`, one [`RuleInForce`](crate::faults::RuleInForce) a
        /// site; a struct, not `json!`, so each rule keeps its field order.
        #[derive(Serialize)]
        struct Sites<'a> {
            sites: Vec<crate::faults::RuleInForce<'a>>,
        }
        let sites = pipeline
            .all_faults()
            .map(|(site, faults)| {
                crate::faults::describe(site, faults.current(now).as_deref(), now)
            })
            .collect();
        return json(StatusCode::OK, &Sites { sites });
    }
    if !state.authorized(req) {
        return unauthorized();
    }
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let bad = |why: String| error(StatusCode::BAD_REQUEST, &why);
    let Some((_, host)) = pairs.iter().find(|(k, _)| k == "site") else {
        return bad("missing site=HOST".into());
    };
    let Some((site, faults)) = pipeline.site_faults(host) else {
        return bad(format!("no site is configured for host {host:?}"));
    };
    if req.method() == Method::DELETE {
        faults.set_runtime(None);
        tracing::info!(site, "runtime fault rule removed");
    } else {
        match crate::faults::FaultRule::from_query(&pairs, now) {
            Ok(rule) => {
                tracing::warn!(site, ?rule, "runtime fault rule set");
                faults.set_runtime(Some(rule));
            }
            Err(why) => return bad(why),
        }
    }
    let current = faults.current(now);
    json(
        StatusCode::OK,
        &crate::faults::describe(site, current.as_deref(), now),
    )
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs Authorization: Bearer <[admin] token>",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"edge admin\""),
    );
    response
}

/// 503 `{"error":"starting"}`: the node has no pipeline yet.
fn starting() -> Response<Full<Bytes>> {
    error(StatusCode::SERVICE_UNAVAILABLE, "starting")
}

/// `{"error":"..."}` with `status`.
fn error(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": why }))
}

/// `body` as one line of JSON, fields in the order its type declares them.
fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string(body).expect("admin answers serialise to JSON");
    text.push('\n');
    json_text(status, text)
}

/// A JSON document already rendered (`/status`).
fn json_text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, state: &AdminState) -> StatusCode {
        let req = Request::get(path).body(()).unwrap();
        answer(&req, state).status()
    }

    #[test]
    fn readiness_follows_the_lifecycle() {
        let state = AdminState::default();
        assert_eq!(get("/readyz", &state), StatusCode::SERVICE_UNAVAILABLE);
        state.set_phase(Phase::Ready);
        assert_eq!(get("/readyz", &state), StatusCode::OK);
        state.set_phase(Phase::Draining);
        assert_eq!(get("/readyz", &state), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/healthz", &state), StatusCode::OK);
        assert_eq!(get("/nope", &state), StatusCode::NOT_FOUND);
    }

    #[test]
    fn reload_needs_post_and_the_token_when_set() {
        let post = |auth: Option<&str>, state: &AdminState| {
            let mut req = Request::post("/reload");
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            answer(&req.body(()).unwrap(), state).status()
        };
        let open = AdminState::default();
        assert_eq!(post(None, &open), StatusCode::OK);
        assert_eq!(get("/reload", &open), StatusCode::METHOD_NOT_ALLOWED);

        let guarded = AdminState::new(Some("s3cret".into()), Arc::default());
        assert_eq!(post(None, &guarded), StatusCode::UNAUTHORIZED);
        assert_eq!(
            post(Some("Bearer nope"), &guarded),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(Some("Basic s3cret"), &guarded),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(post(Some("Bearer s3cret"), &guarded), StatusCode::OK);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
