//! `edge demo`: two sample origins and an edge in front of them, on
//! loopback, with a printed tour of things to try.
//!
//! The origins serve a small catalogue with the cache headers real sites
//! send (long-lived static files, no-store API answers, a private page, a
//! slow page, a large download), each tagged `X-Origin` so round-robin
//! balancing is visible.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Port of the demo edge on 127.0.0.1.
pub const DEFAULT_PORT: u16 = 8080;

/// Size of `/large.bin`: big enough to see streaming at work.
const LARGE_OBJECT: u64 = 64 * 1024 * 1024;

/// Starts the origins and the edge, prints the tour, runs until Ctrl-C.
pub fn run(port: u16) -> anyhow::Result<()> {
    let origin_a = start_origin("a")?;
    let origin_b = start_origin("b")?;
    let toml = format!(
        r#"
[node]
id = "edge-demo"
workers = 2
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
addr = "127.0.0.1:{port}"

[[sites]]
hosts = ["*"]
pool = "origin"

[pools.origin]
endpoints = ["{origin_a}", "{origin_b}"]
balance = "round-robin"
response_timeout = "10s"
"#
    );
    let config = edge_config::parse(&toml, Path::new("<demo config>"))?;
    crate::serve(&config, |node| {
        print_tour(node.listeners()[0], node.admin())
    })
}

fn print_tour(edge: SocketAddr, admin: SocketAddr) {
    println!(
        r#"
edge demo is running: an edge on http://{edge} in front of two origins (a, b).

Try:
  curl -i http://{edge}/hello.txt                      # miss then hit: see Cache-Status and Age
  curl -i http://{edge}/api/time                       # no-store: X-Origin alternates a/b
  curl -i --http2-prior-knowledge http://{edge}/hello.txt
  curl -s http://{edge}/ | head                        # the catalogue
  curl -o /dev/null -w '%{{size_download}} bytes in %{{time_total}}s\n' http://{edge}/large.bin
  curl -i -H 'CDN-Loop: edge-demo' http://{edge}/hello.txt   # 508 loop detected
  curl -i http://{admin}/readyz
  oha -z 10s -c 64 http://{edge}/hello.txt             # cargo install oha

Ctrl-C stops everything (in-flight requests finish first).
"#
    );
}

/// Starts one sample origin on its own thread; returns its address.
fn start_origin(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("demo-origin-{name}"))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                loop {
                    let (stream, _) = listener.accept().await?;
                    tokio::spawn(async move {
                        let service = service_fn(move |req| async move {
                            Ok::<_, Infallible>(sample(name, &req).await)
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                #[allow(unreachable_code)]
                Ok::<_, std::io::Error>(())
            })
        })?;
    Ok(addr)
}

/// The catalogue: one answer per path, with realistic cache headers.
async fn sample<B>(origin: &'static str, req: &Request<B>) -> Response<DemoBody> {
    let (status, cache_control, content_type, body) = match req.uri().path() {
        "/" => (
            StatusCode::OK,
            "public, max-age=60",
            "text/plain",
            DemoBody::text(CATALOGUE),
        ),
        "/hello.txt" => (
            StatusCode::OK,
            "public, max-age=60",
            "text/plain",
            DemoBody::text(format!("Hello from origin {origin}\n")),
        ),
        "/logo.svg" => (
            StatusCode::OK,
            "public, max-age=86400, immutable",
            "image/svg+xml",
            DemoBody::text(LOGO),
        ),
        "/api/time" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            (
                StatusCode::OK,
                "no-store",
                "application/json",
                DemoBody::text(format!("{{\"unix\":{}}}\n", now.as_secs())),
            )
        }
        "/account" => (
            StatusCode::OK,
            "private, max-age=0",
            "text/plain",
            DemoBody::text("your account page (never shared through a cache)\n"),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (
                StatusCode::OK,
                "public, max-age=30",
                "text/plain",
                DemoBody::text("this page took 2 s at the origin\n"),
            )
        }
        "/large.bin" => (
            StatusCode::OK,
            "public, max-age=3600",
            "application/octet-stream",
            DemoBody::pattern(LARGE_OBJECT),
        ),
        "/health" => (
            StatusCode::OK,
            "no-store",
            "text/plain",
            DemoBody::text("ok\n"),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "public, max-age=10",
            "text/plain",
            DemoBody::text("not found\n"),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-origin", HeaderValue::from_static(origin));
    if req.uri().path() == "/account" {
        headers.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("session=demo; HttpOnly"),
        );
    }
    response
}

const CATALOGUE: &str = "\
/hello.txt   public, max-age=60
/logo.svg    public, max-age=86400, immutable
/api/time    no-store
/account     private, with Set-Cookie
/slow        2 s at the origin, max-age=30
/large.bin   64 MiB, streamed, max-age=3600
";

const LOGO: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"64\" height=\"64\">\
<circle cx=\"32\" cy=\"32\" r=\"30\" fill=\"#f60\"/></svg>\n";

/// A sample body: a short text, or a long byte pattern produced in chunks
/// so the origin never holds the whole object either.
enum DemoBody {
    Text(Option<Bytes>),
    Pattern { remaining: u64, chunk: Bytes },
}

impl DemoBody {
    fn text(text: impl Into<Bytes>) -> Self {
        DemoBody::Text(Some(text.into()))
    }

    fn pattern(len: u64) -> Self {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        DemoBody::Pattern {
            remaining: len,
            chunk: chunk.into(),
        }
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            DemoBody::Text(text) => text.take(),
            DemoBody::Pattern { remaining, chunk } => (*remaining > 0).then(|| {
                let n = (*remaining).min(chunk.len() as u64);
                *remaining -= n;
                chunk.slice(..n as usize)
            }),
        };
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DemoBody::Text(text) => text.is_none(),
            DemoBody::Pattern { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DemoBody::Text(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
            DemoBody::Pattern { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}
