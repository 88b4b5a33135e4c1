//! The admin API listener: liveness and readiness for orchestrators and
//! load balancers in front of the node.
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
}

impl AdminState {
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
}
