//! The benchmark origin: a small hyper HTTP/1.1 server on its own thread
//! and single-threaded runtime, answering from bodies built once at start
//! (cloning a `Bytes` is a reference count, so the origin costs little per
//! request) and counting the requests it receives per path.
//!
//! | path            | answer                                                      |
//! |-----------------|-------------------------------------------------------------|
//! | `/1k`, `/64k`, `/1m` | 1 KiB, 64 KiB, 1 MiB, `Cache-Control: public, max-age=3600` |
//! | `/nostore`      | 1 KiB, `Cache-Control: no-store` (every request reaches us) |
//! | `/slow/<any>`   | 1 KiB after [`SLOW_DELAY`], cacheable like `/1k`            |
//! | `/disk/64k/<any>`, `/disk/1m/<any>` | 64 KiB, 1 MiB, cacheable: one object per name (the disk scenarios) |
//! | anything else   | 404, `no-store`                                             |
//!
//! The counts are how the harness proves that hits were hits (they stay
//! flat while a peer serves from its cache) and how many requests a
//! coalescing storm let through.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// How long `/slow/…` waits before answering: long enough that a storm of
/// 1,000 requests all arrive while the first fetch is in flight.
pub const SLOW_DELAY: Duration = Duration::from_millis(200);

/// The cacheable answer's lifetime: far longer than any run.
const CACHEABLE: &str = "public, max-age=3600";

/// Requests received, per path.
#[derive(Default)]
pub struct Counts {
    by_path: Mutex<HashMap<String, u64>>,
}

impl Counts {
    fn record(&self, path: &str) {
        let mut map = self.by_path.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(path) {
            Some(count) => *count += 1,
            None => {
                map.insert(path.to_owned(), 1);
            }
        }
    }

    /// Requests received for `path` so far.
    pub fn get(&self, path: &str) -> u64 {
        let map = self.by_path.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(path).copied().unwrap_or(0)
    }

    /// Requests received for all paths so far.
    pub fn total(&self) -> u64 {
        let map = self.by_path.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().sum()
    }
}

/// A running origin; it lives as long as the harness process.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received per path.
    pub counts: Arc<Counts>,
}

/// The bodies, built once.
struct Bodies {
    k1: Bytes,
    k64: Bytes,
    m1: Bytes,
}

impl Bodies {
    fn new() -> Self {
        Bodies {
            k1: pattern(1024),
            k64: pattern(64 * 1024),
            m1: pattern(1024 * 1024),
        }
    }
}

fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Starts the origin on 127.0.0.1 (port from the OS). `cpu`, when given,
/// pins the origin's thread to that CPU; `nice` sets its nice value.
pub fn start(cpu: Option<usize>, nice: Option<i32>) -> anyhow::Result<Origin> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("origin: bind")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let counts = Arc::new(Counts::default());
    let bodies = Arc::new(Bodies::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread_counts = counts.clone();
    std::thread::Builder::new()
        .name("bench-origin".into())
        .spawn(move || {
            if let Some(cpu) = cpu
                && let Err(error) = crate::pin::current_thread(&[cpu])
            {
                eprintln!("origin: cannot pin to CPU {cpu}: {error}");
            }
            if let Some(nice) = nice
                && let Err(error) = crate::pin::nice_current_thread(nice)
            {
                eprintln!("origin: cannot set nice {nice}: {error}");
            }
            runtime.block_on(serve(listener, thread_counts, bodies))
        })
        .context("origin: spawning its thread")?;
    Ok(Origin { addr, counts })
}

async fn serve(listener: std::net::TcpListener, counts: Arc<Counts>, bodies: Arc<Bodies>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("origin: cannot register the listener: {error}");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends persist: pause instead of spinning.
                eprintln!("origin: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (counts, bodies) = (counts.clone(), bodies.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (counts, bodies) = (counts.clone(), bodies.clone());
                async move { Ok::<_, Infallible>(answer(&req, &counts, &bodies).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer<B>(req: &Request<B>, counts: &Counts, bodies: &Bodies) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    counts.record(path);
    let (status, cache_control, body) = match path {
        "/1k" => (StatusCode::OK, CACHEABLE, bodies.k1.clone()),
        "/64k" => (StatusCode::OK, CACHEABLE, bodies.k64.clone()),
        "/1m" => (StatusCode::OK, CACHEABLE, bodies.m1.clone()),
        "/nostore" => (StatusCode::OK, "no-store", bodies.k1.clone()),
        // Many objects of one size; the same bytes under every name is
        // fine, each name is its own cache entry (and its own file on disk).
        many if many.starts_with("/disk/64k/") => (StatusCode::OK, CACHEABLE, bodies.k64.clone()),
        many if many.starts_with("/disk/1m/") => (StatusCode::OK, CACHEABLE, bodies.m1.clone()),
        slow if slow.starts_with("/slow/") => {
            tokio::time::sleep(SLOW_DELAY).await;
            (StatusCode::OK, CACHEABLE, bodies.k1.clone())
        }
        _ => (
            StatusCode::NOT_FOUND,
            "no-store",
            Bytes::from_static(b"not found\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_path_and_in_total() {
        let counts = Counts::default();
        counts.record("/1k");
        counts.record("/1k");
        counts.record("/64k");
        assert_eq!(counts.get("/1k"), 2);
        assert_eq!(counts.get("/1m"), 0);
        assert_eq!(counts.total(), 3);
    }

    #[test]
    fn bodies_have_their_sizes() {
        let bodies = Bodies::new();
        assert_eq!(bodies.k1.len(), 1024);
        assert_eq!(bodies.k64.len(), 65536);
        assert_eq!(bodies.m1.len(), 1 << 20);
    }
}
