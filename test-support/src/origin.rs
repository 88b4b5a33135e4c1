//! A scriptable HTTP origin for edge's integration tests.
//!
//! [`Origin`] is a real hyper server (HTTP/1.1, and HTTP/2 with prior
//! knowledge via hyper-util's auto builder) on `127.0.0.1:<port from the
//! OS>`, running on its own thread and tokio runtime so it serves sync tests
//! and any `#[tokio::test]` flavour alike. Each request scripts the answer
//! through its query string, so one origin covers every case of a test:
//!
//! | key             | effect                                                          |
//! |-----------------|-----------------------------------------------------------------|
//! | `status=NNN`    | response status (default 200)                                   |
//! | `size=N`        | body of exactly N [`pattern_byte`]s, streamed in 64 KiB frames  |
//! | `delay=MS`      | wait MS milliseconds before sending the response head           |
//! | `header=N:V`    | add response header `N: V` (repeatable, any name)               |
//! | `etag=V`        | send `ETag: "V"`; a matching `If-None-Match` gets 304, no body  |
//! | `hold=NAME`     | answer only after [`Origin::release`]`(NAME)`                   |
//! | `stall_after=N` | send N body bytes of a declared `size` (> N; default N+1), hang |
//! | `resume=NAME`   | with `stall_after` and `size`: continue after [`Origin::release`]`(NAME)` |
//! | `chunked=1`     | send the body without `Content-Length` (chunked on HTTP/1.1)    |
//!
//! Values are form-urlencoded (`%XX`, `+` is a space); a value keeps any
//! `=` after the first. An unknown key or bad value gets a `400` whose body
//! names the problem. The default body is `origin <path>\n`; 204, 304 and
//! 1xx answers carry none. Path `/echo` streams the request body back as it
//! arrives (with `x-echo-method`).
//!
//! A GET for a (not held) `size=` body that would be a 200 honours a single
//! `Range: bytes=…` itself: 206 with `Content-Range`, or 416 (see
//! `origin/range.rs`); several ranges or other units get the full 200.
//!
//! Every request is recorded when its head arrives (so a test can wait for
//! a held request), and its `body_len` is filled in once the request body
//! has been read to the end. Outside `/echo`, the origin reads the whole
//! request body before answering, so `body_len` is always known by the time
//! the response head leaves. Load tests call [`Origin::forget_requests`]
//! to keep only the counts.
//!
//! The trade-off: a fixed script vocabulary rather than arbitrary handler
//! closures keeps every test's origin behaviour visible in its URL.

mod body;
mod range;
mod script;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::{Notify, oneshot};

pub use body::pattern_byte;
use body::{AfterEnd, OriginBody};
use range::OriginRange;
use script::Script;

/// Path whose response body streams the request body back.
const ECHO_PATH: &str = "/echo";

/// Worker threads for the origin's runtime: two, so a stalled or held
/// connection never starves the others even if a task blocks briefly.
const WORKER_THREADS: usize = 2;

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Request method.
    pub method: Method,
    /// Request target as received (origin-form for HTTP/1.1, absolute for h2).
    pub uri: Uri,
    /// HTTP version on the origin-side connection.
    pub version: Version,
    /// Request headers as received.
    pub headers: HeaderMap,
    /// Request-body bytes received; `None` until the body has ended cleanly.
    pub body_len: Option<u64>,
}

/// A scriptable HTTP/1.1 + h2c origin on 127.0.0.1; stops when dropped.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// State shared between the test thread and the origin's runtime.
#[derive(Default)]
struct Shared {
    log: Mutex<Log>,
    /// Signalled on every new request, for sync waiters.
    hit: Condvar,
    /// Signalled on every new request, for async waiters.
    hit_async: Notify,
    released: Mutex<HashSet<String>>,
    release: Notify,
    connections: AtomicUsize,
    /// Requests whose handling was abandoned because the connection went away.
    cancelled: AtomicUsize,
    /// When nonzero, every request is answered with this status (a sick origin).
    forced_status: std::sync::atomic::AtomicU16,
    /// Set by [`Origin::forget_requests`]: count, but keep no request.
    forget_requests: std::sync::atomic::AtomicBool,
}

/// Counts a request as cancelled if its handler is dropped before it answers.
struct CancelGuard(Option<Arc<Shared>>);

impl CancelGuard {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<RecordedRequest>,
    hits: HashMap<String, usize>,
    /// Every request received, kept or not.
    total: usize,
}

/// Locks ignoring poison: a panicking test thread must not turn every later
/// assertion into a confusing `PoisonError`.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Origin {
    /// Binds 127.0.0.1:0 and starts serving on a background thread.
    pub fn start() -> Origin {
        Self::start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// Like [`Origin::start`] on a given address, e.g. to restart an origin
    /// on the port a stopped one used.
    pub fn start_at(addr: SocketAddr) -> Origin {
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("origin: bind {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("origin: set_nonblocking");
        let addr = listener.local_addr().expect("origin: local_addr");
        let shared = Arc::new(Shared::default());
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread = thread::Builder::new()
            .name(format!("origin-{addr}"))
            .spawn({
                let shared = shared.clone();
                move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(WORKER_THREADS)
                        .thread_name("origin-worker")
                        .enable_all()
                        .build()
                        .expect("origin: build tokio runtime");
                    rt.block_on(serve(listener, shared, shutdown_rx));
                    // Dropping the runtime cancels every connection task,
                    // closing held and stalled sockets with it.
                }
            })
            .expect("origin: spawn thread");
        Origin {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The address the origin listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path_and_query>`, e.g. `origin.url("/a?size=10")`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Releases every current and future request scripted `hold=<name>`.
    pub fn release(&self, name: &str) {
        lock(&self.shared.released).insert(name.to_owned());
        self.shared.release.notify_waiters();
    }

    /// Requests received for `path` (query ignored).
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.shared.log).hits.get(path).copied().unwrap_or(0)
    }

    /// Requests received for any path.
    pub fn total_hits(&self) -> usize {
        lock(&self.shared.log).total
    }

    /// From now on counts requests ([`Origin::hits`], [`Origin::total_hits`]
    /// and the waits on them) without keeping each one for
    /// [`Origin::requests`] and [`Origin::last_request`]: under a load
    /// generator the kept heads (a few KiB each) would reach hundreds of
    /// MiB in 20 s.
    pub fn forget_requests(&self) {
        self.shared.forget_requests.store(true, Ordering::SeqCst);
    }

    /// TCP connections accepted, for keepalive-reuse checks.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Answers every request with `status` (an origin gone sick) until
    /// called with `None`.
    pub fn force_status(&self, status: Option<u16>) {
        self.shared
            .forced_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Requests the origin stopped handling before answering because the
    /// client side closed the connection (hyper dropped the handler).
    pub fn cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).requests.clone()
    }

    /// The most recent request for `path` (query ignored).
    pub fn last_request(&self, path: &str) -> Option<RecordedRequest> {
        lock(&self.shared.log)
            .requests
            .iter()
            .rev()
            .find(|r| r.uri.path() == path)
            .cloned()
    }

    /// Blocks until `hits(path) >= n` or `deadline` passes; true if reached.
    ///
    /// This blocks the calling thread: in a current-thread `#[tokio::test]`
    /// whose own tasks must make progress meanwhile, use
    /// [`Origin::wait_for_hits_async`].
    pub fn wait_for_hits(&self, path: &str, n: usize, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        let mut log = lock(&self.shared.log);
        loop {
            if log.hits.get(path).copied().unwrap_or(0) >= n {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            log = self
                .shared
                .hit
                .wait_timeout(log, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Async form of [`Origin::wait_for_hits`], for use inside tokio tests.
    pub async fn wait_for_hits_async(&self, path: &str, n: usize, deadline: Duration) -> bool {
        let reached = async {
            loop {
                let notified = self.shared.hit_async.notified();
                tokio::pin!(notified);
                // Register before checking so a hit between the check and
                // the await still wakes us.
                notified.as_mut().enable();
                if self.hits(path) >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, reached).await.is_ok()
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the origin thread was already printed; re-raising
            // it here could abort a test that is itself unwinding.
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Records a request head; returns its index for the body length update
    /// (`usize::MAX` for a request not kept).
    fn record(&self, request: RecordedRequest) -> usize {
        let forget = self.forget_requests.load(Ordering::SeqCst);
        let index = {
            let mut log = lock(&self.log);
            *log.hits.entry(request.uri.path().to_owned()).or_default() += 1;
            log.total += 1;
            if forget {
                usize::MAX
            } else {
                log.requests.push(request);
                log.requests.len() - 1
            }
        };
        self.hit.notify_all();
        self.hit_async.notify_waiters();
        index
    }

    fn set_body_len(&self, index: usize, len: u64) {
        if let Some(request) = lock(&self.log).requests.get_mut(index) {
            request.body_len = Some(len);
        }
    }

    async fn wait_released(&self, name: &str) {
        loop {
            let notified = self.release.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.released).contains(name) {
                return;
            }
            notified.await;
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("origin: register listener");
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Transient (e.g. EMFILE under a load test): keep serving.
                Err(_) => continue,
            },
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            // Connection errors (peer reset, truncated request) are the
            // point of many tests; the client side asserts on them.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Records the request, reads its body (except for `/echo`), waits as
/// scripted, then answers.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let guard = CancelGuard(Some(shared.clone()));
    let response = answer(shared, req).await;
    guard.finished();
    response
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let (parts, mut incoming) = req.into_parts();
    let index = shared.record(RecordedRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body_len: None,
    });

    let forced = shared.forced_status.load(Ordering::SeqCst);
    if let Some(status) = StatusCode::from_u16(forced).ok().filter(|_| forced != 0) {
        let _ = drain(&mut incoming).await;
        return Ok(text_response(status, format!("forced {forced}\n")));
    }
    let script = Script::parse(parts.uri.query());
    let status = script
        .as_ref()
        .map_or(StatusCode::BAD_REQUEST, |s| s.status_for(&parts.headers));
    let echo = parts.uri.path() == ECHO_PATH && script.is_ok() && !bodyless(status);
    if !echo {
        match drain(&mut incoming).await {
            Some(len) => shared.set_body_len(index, len),
            // The request body broke off, so the connection is gone and
            // whatever we answer is never seen.
            None => return Ok(text_response(StatusCode::BAD_REQUEST, String::new())),
        }
    }
    let script = match script {
        Ok(script) => script,
        Err(msg) => {
            let text = format!("origin script: {msg}\n");
            return Ok(text_response(StatusCode::BAD_REQUEST, text));
        }
    };

    if let Some(name) = &script.hold {
        shared.wait_released(name).await;
    }
    if let Some(delay) = script.delay {
        tokio::time::sleep(delay).await;
    }

    let mut status = status;
    let mut content_range = None;
    let body = if bodyless(status) {
        OriginBody::empty()
    } else if echo {
        OriginBody::Echo {
            incoming,
            received: 0,
            on_end: Some(Box::new(move |len| shared.set_body_len(index, len))),
        }
    } else if let Some(sent) = script.stall_after {
        let after = match (&script.resume, script.size) {
            (Some(name), Some(size)) => {
                let name = name.clone();
                AfterEnd::Resume {
                    resume: Box::pin(async move { shared.wait_released(&name).await }),
                    until: size,
                }
            }
            _ => AfterEnd::Stall,
        };
        OriginBody::Pattern {
            offset: 0,
            end: sent,
            after,
            chunked: script.chunked,
        }
    } else if let Some(size) = script.size {
        let ranged = parts.method == Method::GET && status == StatusCode::OK;
        let (start, end) = match ranged.then(|| range::evaluate(&parts.headers, size)) {
            Some(OriginRange::Part { start, end }) => {
                status = StatusCode::PARTIAL_CONTENT;
                content_range = Some(format!("bytes {start}-{}/{size}", end - 1));
                (start, end)
            }
            Some(OriginRange::Unsatisfiable) => {
                status = StatusCode::RANGE_NOT_SATISFIABLE;
                content_range = Some(format!("bytes */{size}"));
                (0, 0)
            }
            Some(OriginRange::Ignore) | None => (0, size),
        };
        OriginBody::Pattern {
            offset: start,
            end,
            after: AfterEnd::Finish,
            chunked: script.chunked,
        }
    } else {
        OriginBody::text(format!("origin {}\n", parts.uri.path()))
    };
    let mut response = respond(&parts.method, status, script, body);
    if let Some(value) = content_range {
        let value = HeaderValue::from_str(&value).expect("digits and punctuation");
        response.headers_mut().insert(CONTENT_RANGE, value);
    }
    Ok(response)
}

/// Builds the response around `body`: its length, ETag, echo method and
/// the scripted headers (appended last, so a test can add to ours).
fn respond(
    method: &Method,
    status: StatusCode,
    script: Script,
    body: OriginBody,
) -> Response<OriginBody> {
    let mut headers = HeaderMap::new();
    if let Some(tag) = &script.etag {
        let value = HeaderValue::from_str(&format!("\"{tag}\""));
        headers.insert(ETAG, value.expect("validated by Script::parse"));
    }
    match &body {
        OriginBody::Echo { .. } => {
            let method = HeaderValue::from_str(method.as_str());
            headers.insert("x-echo-method", method.expect("a method is a valid value"));
        }
        OriginBody::Pattern { chunked: true, .. } => {}
        OriginBody::Pattern {
            offset,
            end,
            after: AfterEnd::Finish,
            ..
        } => {
            headers.insert(CONTENT_LENGTH, (end - offset).into());
        }
        OriginBody::Pattern { end, .. } => {
            // Held: declare the full size (a stalled body never sends it
            // all; one byte more is enough when the script gave no size).
            let declared = script.size.unwrap_or(end + 1);
            headers.insert(CONTENT_LENGTH, declared.into());
        }
        OriginBody::Full(Some(text)) => {
            headers.insert(CONTENT_LENGTH, text.len().into());
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        OriginBody::Full(None) => {}
    }
    for (name, value) in script.headers {
        headers.append(name, value);
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Reads a request body to its end; `Some(bytes)` unless it broke off.
async fn drain(incoming: &mut Incoming) -> Option<u64> {
    let mut len = 0u64;
    while let Some(frame) = incoming.frame().await {
        if let Some(data) = frame.ok()?.data_ref() {
            len += data.len() as u64;
        }
    }
    Some(len)
}

/// Statuses that never carry a body (RFC 9110 §6.4.1).
fn bodyless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

fn text_response(status: StatusCode, text: String) -> Response<OriginBody> {
    let mut response = Response::new(OriginBody::text(text));
    *response.status_mut() = status;
    response
}
