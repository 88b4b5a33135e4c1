//! The scriptable origin, exercised over real sockets with hyper clients
//! (and raw TCP where the exact wire bytes matter).

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_test_support::{Origin, pattern_byte, wait_until};
use http::header::{CONTENT_LENGTH, ETAG, IF_NONE_MATCH};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// Generous: only a broken origin takes this long.
const DEADLINE: Duration = Duration::from_secs(10);

/// A request body fed chunk by chunk from the test.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// An HTTP/1.1 connection to `addr`; requests on it share one TCP connection.
async fn h1<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(addr: SocketAddr, path: &str) -> Response<Incoming> {
    let mut sender = h1(addr).await;
    sender
        .send_request(request(Method::GET, path, Empty::<Bytes>::new()))
        .await
        .unwrap()
}

fn request<B>(method: Method, path: &str, body: B) -> Request<B> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "origin.test")
        .body(body)
        .unwrap()
}

async fn body_bytes(response: Response<Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Sends raw HTTP/1.1 (which must ask for `Connection: close`) and returns
/// everything the origin wrote.
fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn default_response_names_the_path_and_is_recorded() {
    let origin = Origin::start();
    let response = get(origin.addr(), "/a/b").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_LENGTH], "12");
    assert_eq!(body_bytes(response).await, "origin /a/b\n");

    assert_eq!(origin.hits("/a/b"), 1);
    assert_eq!(origin.hits("/other"), 0);
    assert_eq!(origin.total_hits(), 1);
    let seen = origin.last_request("/a/b").unwrap();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["host"], "origin.test");
    assert_eq!(seen.body_len, Some(0));
    assert!(origin.last_request("/other").is_none());
}

#[tokio::test]
async fn hits_ignore_the_query_and_requests_keep_order() {
    let origin = Origin::start();
    for path in ["/p?status=201", "/q", "/p?size=3"] {
        body_bytes(get(origin.addr(), path).await).await;
    }
    assert_eq!(origin.hits("/p"), 2);
    assert_eq!(origin.total_hits(), 3);
    let uris: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(uris, ["/p?status=201", "/q", "/p?size=3"]);
    assert_eq!(
        origin.last_request("/p").unwrap().uri.query(),
        Some("size=3")
    );
}

#[test]
fn status_and_arbitrary_headers_reach_the_wire() {
    let origin = Origin::start();
    let out = raw_exchange(
        origin.addr(),
        "GET /h?status=404&header=Connection:x-foo&header=X-Foo:1&header=Keep-Alive:timeout=5\
         &header=X-Foo:2&header=X-Space:a+b%2Cc HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n",
    );
    let head = out.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 404"), "{out}");
    for line in [
        "x-foo: 1",
        "x-foo: 2",
        "keep-alive: timeout=5",
        "x-space: a b,c",
    ] {
        assert!(
            head.lines().any(|l| l == line),
            "missing {line:?} in\n{out}"
        );
    }
    assert!(
        head.contains("x-foo"),
        "connection header names x-foo:\n{out}"
    );
    assert!(out.ends_with("origin /h\n"), "{out}");
}

#[tokio::test]
async fn bad_script_is_a_400_naming_the_problem() {
    let origin = Origin::start();
    let response = get(origin.addr(), "/x?sise=10").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = body_bytes(response).await;
    assert!(String::from_utf8_lossy(&body).contains("sise"), "{body:?}");
}

#[tokio::test]
async fn size_streams_the_pattern_with_content_length() {
    let origin = Origin::start();
    let len = 1_000_003u64;
    let response = get(origin.addr(), &format!("/big?size={len}")).await;
    assert_eq!(response.headers()[CONTENT_LENGTH], len.to_string().as_str());
    let mut body = response.into_body();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        for (i, b) in data.iter().enumerate() {
            assert_eq!(
                *b,
                pattern_byte(seen + i as u64),
                "byte {}",
                seen + i as u64
            );
        }
        seen += data.len() as u64;
    }
    assert_eq!(seen, len);

    let empty = get(origin.addr(), "/big?size=0").await;
    assert_eq!(empty.headers()[CONTENT_LENGTH], "0");
    assert!(body_bytes(empty).await.is_empty());
}

#[tokio::test]
async fn etag_answers_304_to_a_matching_if_none_match() {
    let origin = Origin::start();
    let first = get(origin.addr(), "/e?etag=v1").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()[ETAG], "\"v1\"");

    let mut sender = h1(origin.addr()).await;
    let mut req = request(Method::GET, "/e?etag=v1", Empty::<Bytes>::new());
    req.headers_mut()
        .insert(IF_NONE_MATCH, "\"v1\"".parse().unwrap());
    let revalidated = sender.send_request(req).await.unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()[ETAG], "\"v1\"");
    assert!(body_bytes(revalidated).await.is_empty());

    let mut req = request(Method::GET, "/e?etag=v2", Empty::<Bytes>::new());
    req.headers_mut()
        .insert(IF_NONE_MATCH, "\"v1\"".parse().unwrap());
    let changed = sender.send_request(req).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(changed.headers()[ETAG], "\"v2\"");
}

#[tokio::test]
async fn delay_holds_back_the_head() {
    let origin = Origin::start();
    let started = Instant::now();
    let response = get(origin.addr(), "/slow?delay=200").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn hold_waits_for_release_then_lets_later_requests_through() {
    let origin = Origin::start();
    let addr = origin.addr();
    let held = tokio::spawn(async move { body_bytes(get(addr, "/held?hold=h1").await).await });
    let other = tokio::spawn(async move { get(addr, "/held?hold=h2").await.status() });
    assert!(origin.wait_for_hits_async("/held", 2, DEADLINE).await);
    assert!(!held.is_finished() && !other.is_finished());

    origin.release("h1");
    let body = tokio::time::timeout(DEADLINE, held).await.unwrap().unwrap();
    assert_eq!(body, "origin /held\n");
    assert!(!other.is_finished(), "h2 must stay held");

    // A released name stays released for later requests.
    let again = tokio::time::timeout(DEADLINE, get(addr, "/held?hold=h1"))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    origin.release("h2");
    assert_eq!(
        tokio::time::timeout(DEADLINE, other)
            .await
            .unwrap()
            .unwrap(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn stall_after_sends_part_of_a_declared_body_then_hangs() {
    let origin = Origin::start();
    let response = get(origin.addr(), "/stall?stall_after=100000&size=300000").await;
    assert_eq!(response.headers()[CONTENT_LENGTH], "300000");
    let mut body = response.into_body();
    let mut seen = 0;
    while seen < 100_000 {
        let frame = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap();
        seen += frame.unwrap().unwrap().into_data().unwrap().len();
    }
    assert_eq!(seen, 100_000);
    // Negative check: no more bytes and no end within a short window.
    let next = tokio::time::timeout(Duration::from_millis(200), body.frame()).await;
    assert!(next.is_err(), "body should stall, got {next:?}");

    let short = get(origin.addr(), "/stall?stall_after=10").await;
    assert_eq!(short.headers()[CONTENT_LENGTH], "11");
}

#[tokio::test]
async fn echo_streams_the_request_body_back_as_it_arrives() {
    let origin = Origin::start();
    let (tx, rx) = mpsc::channel(1);
    let mut sender = h1(origin.addr()).await;
    let response = sender
        .send_request(request(Method::PUT, "/echo", ChannelBody(rx)))
        .await;
    // hyper answers the head before the request body ends, so the echo of
    // each chunk must arrive before the next is sent.
    let response = response.unwrap();
    assert_eq!(response.headers()["x-echo-method"], "PUT");
    let mut body = response.into_body();
    for chunk in ["hello ", "streaming ", "world"] {
        tx.send(Bytes::from(chunk)).await.unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < chunk.len() {
            let frame = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap();
            echoed.extend_from_slice(&frame.unwrap().unwrap().into_data().unwrap());
        }
        assert_eq!(echoed, chunk.as_bytes());
        assert_eq!(origin.last_request("/echo").unwrap().body_len, None);
    }
    drop(tx);
    assert!(
        tokio::time::timeout(DEADLINE, body.frame())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(origin.last_request("/echo").unwrap().body_len, Some(21));
}

#[tokio::test]
async fn echo_returns_a_large_body_intact() {
    let origin = Origin::start();
    let payload: Bytes = (0..1_048_576u64).map(|i| (i * 7 % 251) as u8).collect();
    let mut sender = h1(origin.addr()).await;
    let response = sender
        .send_request(request(Method::POST, "/echo", Full::new(payload.clone())))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-echo-method"], "POST");
    assert!(body_bytes(response).await == payload);
    assert_eq!(
        origin.last_request("/echo").unwrap().body_len,
        Some(1_048_576)
    );
}

#[tokio::test]
async fn request_body_length_is_known_when_the_response_arrives() {
    let origin = Origin::start();
    let mut sender = h1(origin.addr()).await;
    let response = sender
        .send_request(request(
            Method::POST,
            "/upload?status=201",
            Full::new(Bytes::from(vec![b'x'; 5000])),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(origin.last_request("/upload").unwrap().body_len, Some(5000));
}

#[tokio::test]
async fn forgotten_requests_still_count() {
    let origin = Origin::start();
    body_bytes(get(origin.addr(), "/kept").await).await;
    origin.forget_requests();
    body_bytes(get(origin.addr(), "/p").await).await;
    let mut sender = h1(origin.addr()).await;
    let upload = request(Method::POST, "/p", Full::new(Bytes::from_static(b"xyz")));
    let response = sender.send_request(upload).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_bytes(response).await;
    assert_eq!((origin.hits("/p"), origin.total_hits()), (2, 3));
    assert!(origin.wait_for_hits_async("/p", 2, DEADLINE).await);
    let paths: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(paths, ["/kept"], "only the request before forgetting");
    assert!(origin.last_request("/p").is_none());
}

#[tokio::test]
async fn connections_count_tcp_accepts_not_requests() {
    let origin = Origin::start();
    let mut sender = h1(origin.addr()).await;
    for _ in 0..3 {
        let response = sender
            .send_request(request(Method::GET, "/k", Empty::<Bytes>::new()))
            .await
            .unwrap();
        body_bytes(response).await;
    }
    assert_eq!(origin.hits("/k"), 3);
    assert_eq!(origin.connections(), 1);
    body_bytes(get(origin.addr(), "/k").await).await;
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn serves_h2_with_prior_knowledge() {
    let origin = Origin::start();
    let stream = tokio::net::TcpStream::connect(origin.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{}/two?size=70000", origin.addr()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(body_bytes(response).await.len(), 70_000);
    assert_eq!(
        origin.last_request("/two").unwrap().version,
        Version::HTTP_2
    );
}

#[test]
fn wait_for_hits_works_from_sync_tests() {
    let origin = Origin::start();
    let addr = origin.addr();
    let client = std::thread::spawn(move || {
        raw_exchange(
            addr,
            "GET /sync HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n",
        )
    });
    assert!(origin.wait_for_hits("/sync", 1, DEADLINE));
    assert!(client.join().unwrap().starts_with("HTTP/1.1 200"));
    assert!(!origin.wait_for_hits("/sync", 2, Duration::from_millis(50)));
    assert!(
        origin
            .url("/sync?x=1")
            .ends_with(&format!("{addr}/sync?x=1"))
    );
}

#[test]
fn drop_closes_held_connections_and_the_listener() {
    let origin = Origin::start();
    let addr = origin.addr();
    let mut held = TcpStream::connect(addr).unwrap();
    held.set_read_timeout(Some(DEADLINE)).unwrap();
    held.write_all(b"GET /held?hold=never HTTP/1.1\r\nHost: o\r\n\r\n")
        .unwrap();
    assert!(origin.wait_for_hits("/held", 1, DEADLINE));

    drop(origin);
    let mut out = Vec::new();
    // EOF or reset, but never a response, and never the full read timeout.
    let read = held.read_to_end(&mut out);
    assert!(out.is_empty(), "{read:?} {out:?}");
    assert!(wait_until(DEADLINE, || TcpStream::connect(addr).is_err()));
}
