//! Shared plumbing for edge's end-to-end tests: start the real binary in
//! front of a real origin, and talk to it with a real hyper client or raw
//! bytes.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_test_support::{EdgeProcess, Origin, pattern_byte};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The edge binary cargo built for these tests.
pub fn edge_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edge"))
}

/// The `[node] id` of the configs built here: it names this node in `Via`,
/// `CDN-Loop` and its `Cache-Status` member.
pub const NODE_ID: &str = "edge-test";

/// A config with one listener on a free port, one `*` site and one pool
/// holding `endpoints`; `extra_pool` lines are appended to the pool table.
pub fn config(endpoints: &[SocketAddr], extra_pool: &str) -> String {
    config_with(endpoints, "", extra_pool)
}

/// [`config`] with `tables` (whole tables such as `[cache]` or `[dns]`)
/// placed before the site, and `extra_pool` lines appended to the pool.
pub fn config_with(endpoints: &[SocketAddr], tables: &str, extra_pool: &str) -> String {
    config_sites(endpoints, tables, &site(&["*"], ""), extra_pool)
}

/// [`config_with`] over endpoints written as TOML strings (names allowed).
pub fn config_named(endpoints: &str, tables: &str, extra_pool: &str) -> String {
    config_document(endpoints, tables, &site(&["*"], ""), extra_pool)
}

/// [`config_with`] with `sites` (one or more [`site`] tables) in place of
/// the plain `*` site.
pub fn config_sites(
    endpoints: &[SocketAddr],
    tables: &str,
    sites: &str,
    extra_pool: &str,
) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    config_document(&endpoints.join(", "), tables, sites, extra_pool)
}

/// A `[[sites]]` table serving `hosts` from the pool of these configs, with
/// `extra` lines (such as `cache = { ... }` or `rate_limit = { ... }`).
pub fn site(hosts: &[&str], extra: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "[[sites]]\nhosts = [{}]\npool = \"origin\"\n{extra}\n",
        hosts.join(", ")
    )
}

/// `[node]`, `[admin]` and one listener on a free port: the start of every
/// config built here.
fn preamble() -> String {
    format!(
        r#"
[node]
id = "{NODE_ID}"
workers = 2
drain_timeout = "20s"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
addr = "127.0.0.1:0"
"#
    )
}

fn config_document(endpoints: &str, tables: &str, sites: &str, extra_pool: &str) -> String {
    format!(
        "{}
{tables}

{sites}[pools.origin]
endpoints = [{endpoints}]
{extra_pool}
",
        preamble()
    )
}

/// A config like [`config`]'s but with no `*` site: one site per
/// `(host, pool, endpoints)` entry, each on a pool of its own, so a Host
/// no entry names gets 421 (tests that add and remove sites need that).
pub fn config_site_pools(sites: &[(&str, &str, &[SocketAddr])]) -> String {
    let mut text = preamble();
    for (host, pool, endpoints) in sites {
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        text.push_str(&format!(
            "\n[[sites]]\nhosts = [\"{host}\"]\npool = \"{pool}\"\n\n[pools.{pool}]\nendpoints = [{}]\n",
            endpoints.join(", ")
        ));
    }
    text
}

/// Writes `text` as `edge`'s config file and asks for a reload (`POST
/// /reload`); returns the admin's answer.
pub async fn reload(edge: &EdgeProcess, text: &str) -> Answer {
    std::fs::write(edge.config_path(), text).unwrap();
    send(
        edge.admin(),
        request("POST", "/reload").body(empty()).unwrap(),
    )
    .await
}

/// The sum of the `/metrics` samples of series `name` whose labels include
/// every `(key, value)` of `labels`; `None` when no such series is exported.
pub async fn metric(edge: &EdgeProcess, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = get(edge.admin(), "/metrics").await.text();
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, "}"));
        let series_labels: Vec<&str> = series_labels.trim_end_matches('}').split(',').collect();
        let wanted = labels
            .iter()
            .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"").as_str()));
        if series_name == name && wanted {
            *sum.get_or_insert(0.0) += value.parse::<f64>().expect("a sample value");
        }
    }
    sum
}

/// An origin and an edge in front of it with the default test config.
pub fn edge_with_origin(extra_pool: &str) -> (Origin, EdgeProcess) {
    let origin = Origin::start();
    let edge = EdgeProcess::start(edge_bin(), &config(&[origin.addr()], extra_pool));
    (origin, edge)
}

/// A full response: head and collected body (for small bodies only).
pub struct Answer {
    pub head: http::response::Parts,
    pub body: Bytes,
}

impl Answer {
    pub fn status(&self) -> u16 {
        self.head.status.as_u16()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Opens an HTTP/1.1 connection to `addr`.
pub async fn http1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to edge");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    sender
}

/// Opens an HTTP/2 prior-knowledge connection to `addr`.
pub async fn http2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to edge");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("http2 handshake");
    tokio::spawn(conn);
    sender
}

/// Sends one request on a fresh HTTP/1.1 connection and collects the answer.
pub async fn send(addr: SocketAddr, req: Request<TestBody>) -> Answer {
    let mut sender = http1(addr).await;
    let response = sender.send_request(req).await.expect("response from edge");
    collect(response).await
}

/// `GET path` with Host `example.com`.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, request("GET", path).body(empty()).unwrap()).await
}

/// `GET path` with the given Host.
pub async fn get_host(addr: SocketAddr, path: &str, host: &str) -> Answer {
    let req = Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap();
    send(addr, req).await
}

/// A request builder with Host `example.com`.
pub fn request(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "example.com")
}

/// Collects a response body (small bodies only).
pub async fn collect(response: Response<Incoming>) -> Answer {
    let (head, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Answer { head, body }
}

/// Checks that `data`, found at `offset` of a body, is the origin's pattern.
pub fn assert_pattern(data: &[u8], offset: u64) {
    for (i, byte) in data.iter().enumerate() {
        let at = offset + i as u64;
        assert_eq!(*byte, pattern_byte(at), "byte {at}");
    }
}

/// Reads a body to its end, checking every byte against the origin's
/// pattern without keeping it; returns the length.
pub async fn drain_pattern(mut body: Incoming) -> u64 {
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Ok(data) = frame.into_data() {
            assert_pattern(&data, offset);
            offset += data.len() as u64;
        }
    }
    offset
}

/// Reads a body to its end without keeping it; returns the length.
pub async fn drain_len(mut body: Incoming) -> u64 {
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            len += data.len() as u64;
        }
    }
    len
}

/// The client-side request body of these tests.
pub type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// An empty request body.
pub fn empty() -> TestBody {
    Empty::new().boxed_unsync()
}

/// A small request body.
pub fn text(body: &'static str) -> TestBody {
    http_body_util::Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync()
}

/// `len` bytes of the origin's pattern, produced 64 KiB at a time so the
/// test never holds the whole body either.
pub fn pattern(len: u64) -> TestBody {
    PatternBody { offset: 0, len }.boxed_unsync()
}

struct PatternBody {
    offset: u64,
    len: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.offset).min(64 * 1024);
        let chunk: Vec<u8> = (self.offset..self.offset + n).map(pattern_byte).collect();
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.offset)
    }
}

/// Peak resident memory of a process (VmHWM), in KiB: a body buffered whole
/// shows here even after it has been freed.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

/// Writes raw bytes on a new connection and reads until the peer closes or
/// `deadline` passes; returns what was read.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], deadline: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to edge");
    stream.write_all(bytes).expect("write request");
    read_until_close(&mut stream, deadline)
}

/// Reads until EOF (or a reset) or the deadline.
pub fn read_until_close(stream: &mut TcpStream, deadline: Duration) -> String {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "connection still open after {deadline:?}; read so far: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
