//! Failure handling end to end: dead and silent origins, stalled bodies,
//! malformed requests (acceptance 3 and 6 of the foundation issue).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use edge_test_support::{EdgeProcess, Origin};
use http_body_util::BodyExt;

/// An address nothing listens on: bound to learn a free port, then closed.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Two sites: `down.test` goes to a dead endpoint, everything else to `origin`.
fn edge_with_dead_site(origin: &Origin, extra_pool: &str) -> EdgeProcess {
    let config = format!(
        r#"
[node]
id = "edge-test"
workers = 1
[admin]
listen = "127.0.0.1:0"
[[listeners]]
addr = "127.0.0.1:0"
[[sites]]
hosts = ["down.test"]
pool = "dead"
[[sites]]
hosts = ["*"]
pool = "origin"
[pools.dead]
endpoints = ["{dead}"]
connect_timeout = "1s"
[pools.origin]
endpoints = ["{live}"]
{extra_pool}
"#,
        dead = closed_port(),
        live = origin.addr()
    );
    EdgeProcess::start(edge_bin(), &config)
}

#[tokio::test]
async fn dead_origin_gives_502_and_other_sites_keep_working() {
    let origin = Origin::start();
    let edge = edge_with_dead_site(&origin, "");
    let down = get_host(edge.addr(), "/x", "down.test").await;
    assert_eq!(down.status(), 502);
    assert_eq!(down.text(), "edge: could not connect to the origin\n");
    assert!(!down.text().contains(&origin.addr().port().to_string()));

    assert_eq!(get(edge.addr(), "/fine").await.status(), 200);
}

#[tokio::test]
async fn silent_origin_gives_504_while_others_are_served() {
    let origin = Origin::start();
    let edge = edge_with_dead_site(&origin, "response_timeout = \"400ms\"");
    let started = Instant::now();
    let silent = tokio::spawn(get(edge.addr(), "/silent?hold=never"));
    assert!(
        origin
            .wait_for_hits_async("/silent", 1, Duration::from_secs(10))
            .await
    );
    // While that request waits, the edge answers others.
    assert_eq!(get(edge.addr(), "/meanwhile").await.status(), 200);

    let silent = silent.await.unwrap();
    assert_eq!(silent.status(), 504);
    assert_eq!(silent.text(), "edge: the origin did not answer in time\n");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "504 came before the timeout"
    );
    assert_eq!(get(edge.addr(), "/after").await.status(), 200);
}

#[tokio::test]
async fn stalled_origin_body_is_cut_off_at_the_body_timeout() {
    let (_origin, edge) = edge_with_origin("body_timeout = \"300ms\"");
    let mut sender = http1(edge.addr()).await;
    let response = sender
        .send_request(
            request("GET", "/stall?size=100000&stall_after=1000")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let result = response.into_body().collect().await;
    assert!(
        result.is_err(),
        "a stalled body must not end as if complete"
    );
    assert_eq!(get(edge.addr(), "/after").await.status(), 200);
}

/// Sends `bad` raw on one connection while a well-formed keepalive client
/// holds another; the bad one is answered `expected` and closed, the good
/// one keeps working.
async fn refused_without_harm(bad: &'static [u8], expected: &str) {
    let (origin, edge) = edge_with_origin("");
    let mut good = http1(edge.addr()).await;
    let first = good
        .send_request(request("GET", "/good").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(collect(first).await.status(), 200);

    let addr = edge.addr();
    let answer =
        tokio::task::spawn_blocking(move || raw_exchange(addr, bad, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(
        answer.starts_with(expected),
        "expected {expected:?}, got {answer:?}"
    );

    let again = good
        .send_request(request("GET", "/good").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(collect(again).await.status(), 200);
    assert_eq!(origin.hits("/good"), 2);
    assert_eq!(
        origin.total_hits(),
        2,
        "the bad request never reached the origin"
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    refused_without_harm(
        b"POST /smuggle HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
}

#[tokio::test]
async fn invalid_header_bytes_are_refused() {
    refused_without_harm(
        b"GET /bad HTTP/1.1\r\nHost: example.com\r\nX-Bad\x01Name: v\r\n\r\n",
        "HTTP/1.1 400",
    )
    .await;
}

#[tokio::test]
async fn oversized_header_sections_are_refused() {
    static HUGE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let mut req = b"GET /huge HTTP/1.1\r\nHost: example.com\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 40 * 1024));
        req.extend_from_slice(b"\r\n\r\n");
        req
    });
    refused_without_harm(HUGE.as_slice(), "HTTP/1.1 431").await;
}

#[tokio::test]
async fn http11_without_host_is_refused() {
    refused_without_harm(b"GET /nohost HTTP/1.1\r\n\r\n", "HTTP/1.1 400").await;
}

#[test]
fn client_disconnect_cancels_the_upstream_request() {
    let (origin, edge) = edge_with_origin("");
    let mut stream = TcpStream::connect(edge.addr()).unwrap();
    stream
        .write_all(b"GET /abandoned?hold=forever HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .unwrap();
    assert!(origin.wait_for_hits("/abandoned", 1, Duration::from_secs(10)));
    drop(stream);
    assert!(
        edge_test_support::wait_until(Duration::from_secs(10), || origin.cancelled() >= 1),
        "the origin still serves a request whose client left"
    );
}
