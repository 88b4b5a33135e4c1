//! Slow clients and connection caps, end to end ("stability and
//! operations" issue): slowloris heads are cut at `header_timeout` while
//! normal clients are served, idle keep-alive connections close at
//! `keepalive_timeout`, uploads below `body_min_rate` are refused with 408,
//! connections beyond the per-IP and per-listener caps are closed at once,
//! and the HTTP/2 limits are what SETTINGS advertises.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use edge_test_support::{EdgeProcess, Origin};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// An edge in front of `origin` with these `[limits]` lines.
fn edge_with_limits(origin: &Origin, limits: &str) -> EdgeProcess {
    let config = format!("{}\n[limits]\n{limits}\n", config(&[origin.addr()], ""));
    EdgeProcess::start(edge_bin(), &config)
}

/// Raises this test process's open-file limit to its hard limit: 2,000
/// sockets exceed the common soft default of 1024.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct we pass, nothing else.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// The sum of the samples of counter `name` with label `reason`.
async fn counter(edge: &EdgeProcess, name: &str, reason: &str) -> f64 {
    metric(edge, name, &[("reason", reason)])
        .await
        .unwrap_or(0.0)
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes.
async fn eventually(deadline: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the peer has closed `stream` (EOF or reset); data is an error:
/// edge closes slow connections without answering.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!(
            "edge answered a slow connection: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// One slowloris connection: when it opened, and when edge closed it.
struct Slow {
    stream: TcpStream,
    opened: Instant,
    closed: Option<Instant>,
}

/// Keeps `conns` trickling one header byte per second each, checking every
/// 100 ms whether edge closed them; returns when all are closed or `until`.
async fn trickle(mut conns: Vec<Slow>, open: Arc<AtomicUsize>, until: Instant) -> Vec<Slow> {
    let mut next_byte = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until && conns.iter().any(|c| c.closed.is_none()) {
        let send_byte = Instant::now() >= next_byte;
        if send_byte {
            next_byte += Duration::from_secs(1);
        }
        for conn in conns.iter_mut().filter(|c| c.closed.is_none()) {
            let gone = peer_closed(&conn.stream)
                || (send_byte
                    && conn
                        .stream
                        .try_write(b"X")
                        .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock));
            if gone {
                conn.closed = Some(Instant::now());
                open.fetch_sub(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    conns
}

/// Acceptance: 2,000 connections each sending one header byte per second
/// do not stop a normal client from being served; they are closed at the
/// header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_at_the_header_timeout_while_others_are_served() {
    const SLOW: usize = 2000;
    const TASKS: usize = 8;
    let header_timeout = Duration::from_secs(2);
    let fds = raise_fd_limit();
    assert!(fds > 2 * SLOW as u64 + 256, "open-file limit {fds} too low");
    let origin = Origin::start();
    // Everything else at its default: 500 connections from each of four
    // loopback addresses stay within the default per-IP cap.
    let edge = edge_with_limits(&origin, "header_timeout = \"2s\"");
    let addr = edge.addr();
    let test_started = Instant::now();

    let mut conns = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8));
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(addr).await.expect("connect");
        let opened = Instant::now();
        stream
            .try_write(b"GET / HTTP/1.1\r\n")
            .expect("request line");
        conns.push(Slow {
            stream,
            opened,
            closed: None,
        });
    }
    let opened_in = test_started.elapsed();
    let open = Arc::new(AtomicUsize::new(SLOW));
    let until = Instant::now() + header_timeout + Duration::from_secs(15);
    let mut tricklers = Vec::new();
    while !conns.is_empty() {
        let rest = conns.split_off(conns.len().saturating_sub(SLOW / TASKS));
        tricklers.push(tokio::spawn(trickle(rest, open.clone(), until)));
    }

    // A normal client, on new and on kept-alive connections, meanwhile.
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        let answer = get(addr, &format!("/normal/{i}")).await;
        assert_eq!(answer.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    let mut kept = http1(addr).await;
    for i in 0..10 {
        let started = Instant::now();
        kept.ready().await.expect("kept-alive connection open");
        let response = kept
            .send_request(request("GET", &format!("/kept/{i}")).body(empty()).unwrap())
            .await
            .expect("response on the kept-alive connection");
        assert_eq!(collect(response).await.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    let still_open = open.load(Ordering::SeqCst);
    assert_eq!(
        still_open, SLOW,
        "the normal requests were served while every slow connection was open"
    );

    let mut conns = Vec::new();
    for trickler in tricklers {
        conns.extend(trickler.await.unwrap());
    }
    let lifetimes: Vec<Duration> = conns
        .iter()
        .map(|c| {
            c.closed
                .expect("every slow connection is closed by edge")
                .duration_since(c.opened)
        })
        .collect();
    let shortest = *lifetimes.iter().min().unwrap();
    let longest = *lifetimes.iter().max().unwrap();
    eprintln!(
        "{SLOW} slow connections opened in {opened_in:?}; normal requests took at most {slowest:?}; \
         slow connections lived {shortest:?}..{longest:?}; test ran {:?}",
        test_started.elapsed()
    );
    // Edge counts from accept, which is after our connect returned; we
    // notice a close up to 100 ms late.
    assert!(
        shortest >= header_timeout - Duration::from_millis(50),
        "closed before the header timeout: {shortest:?}"
    );
    assert!(
        longest <= header_timeout + Duration::from_secs(3),
        "closed long after the header timeout: {longest:?}"
    );
    assert!(
        counter(&edge, "edge_slow_clients_closed_total", "header_timeout").await >= SLOW as f64
    );
    // The kept-alive normal connection is still fine afterwards.
    kept.ready().await.expect("kept-alive connection open");
    let response = kept
        .send_request(request("GET", "/after").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(collect(response).await.status(), 200);
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; returns its
/// status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if data.len() >= end + 4 + length {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
        let n = stream.read(&mut buf).await.expect("read response");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    }
}

/// Waits for edge to close `stream` (EOF or reset, with no data before
/// it); returns how long that took.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
        Err(_) => panic!("still open after {deadline:?}"),
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("unexpected data: {:?}", String::from_utf8_lossy(&buf[..n])),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_close_at_the_keepalive_timeout() {
    let origin = Origin::start();
    let header = Duration::from_secs(1);
    let keepalive = Duration::from_secs(2);
    let edge = edge_with_limits(
        &origin,
        "header_timeout = \"1s\"\nkeepalive_timeout = \"2s\"",
    );
    let addr = edge.addr();
    let request_bytes = b"GET /ka HTTP/1.1\r\nHost: example.com\r\n\r\n";
    // Three connections side by side, each idling as it is told (the
    // pauses are what is tested, not a synchronisation).

    // HTTP/1.1: an idle pause longer than the header timeout is fine.
    let h1_idle = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request_bytes).await.unwrap();
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(header + Duration::from_millis(500)).await;
        stream.write_all(request_bytes).await.unwrap();
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
        let idle = closed_within(&mut stream, Duration::from_secs(10)).await;
        assert!(
            idle >= keepalive - Duration::from_millis(50)
                && idle <= keepalive + Duration::from_secs(2),
            "HTTP/1.1 idle connection closed after {idle:?}"
        );
    };

    // A later request's head is timed from its own first byte: idle for
    // longer than the header timeout, then a head that never finishes.
    let h1_slow_head = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request_bytes).await.unwrap();
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(header + Duration::from_millis(200)).await;
        stream.write_all(b"GET /slow HTTP/1.1\r\nHo").await.unwrap();
        let head = closed_within(&mut stream, Duration::from_secs(10)).await;
        assert!(
            head >= header - Duration::from_millis(50) && head <= header + Duration::from_secs(2),
            "a slow head on a kept-alive connection closed after {head:?}"
        );
    };

    // HTTP/2: a connection with no open stream is sent GOAWAY and closed.
    let h2_idle = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let response = sender
            .send_request(request("GET", "/h2").body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(collect(response).await.status(), 200);
        let idle_from = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("the idle h2 connection is closed")
            .unwrap()
            .expect("closed gracefully (GOAWAY), not broken");
        let idle = idle_from.elapsed();
        assert!(
            idle >= keepalive - Duration::from_millis(50)
                && idle <= keepalive + Duration::from_secs(2),
            "h2 idle connection closed after {idle:?}"
        );
    };
    tokio::join!(h1_idle, h1_slow_head, h2_idle);
    assert!(counter(&edge, "edge_slow_clients_closed_total", "keepalive").await >= 2.0);
    assert!(counter(&edge, "edge_slow_clients_closed_total", "header_timeout").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_below_the_minimum_rate_get_408_while_normal_ones_pass() {
    let origin = Origin::start();
    let window = Duration::from_secs(1);
    let edge = edge_with_limits(
        &origin,
        "body_min_rate = \"10KiB\"\nbody_rate_window = \"1s\"",
    );

    // 1 MiB at loopback speed.
    let answer = send(
        edge.addr(),
        request("POST", "/fast").body(pattern(1 << 20)).unwrap(),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        origin.last_request("/fast").unwrap().body_len,
        Some(1 << 20)
    );

    // 200 bytes every 100 ms: 2 KB/s, a fifth of the minimum.
    let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
    stream
        .write_all(b"POST /slow HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickler = tokio::spawn(async move {
        while writer.write_all(&[b'x'; 200]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer))
        .await
        .expect("edge answers and closes")
        .ok();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        answer.contains("the request body arrived too slowly"),
        "{answer:?}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );
    assert!(
        took >= window && took <= window + Duration::from_secs(3),
        "cut after {took:?}"
    );
    trickler.abort();
    // The origin saw the request start, never a complete body.
    assert!(
        origin
            .wait_for_hits_async("/slow", 1, Duration::from_secs(5))
            .await
    );
    assert_eq!(origin.last_request("/slow").unwrap().body_len, None);
    assert!(counter(&edge, "edge_slow_clients_closed_total", "body_rate").await >= 1.0);
    // Still serving.
    assert_eq!(get(edge.addr(), "/after").await.status(), 200);
}

/// A request body fed by the test, one chunk at a time.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A body that sends 200 bytes every 100 ms until the request is gone.
fn trickling_body() -> TestBody {
    use http_body_util::BodyExt;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while tx
            .send(bytes::Bytes::from_static(&[b'x'; 200]))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    ChannelBody(rx).boxed_unsync()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_are_cut_off_after_a_response_started_and_on_h2() {
    let origin = Origin::start();
    let edge = edge_with_limits(
        &origin,
        "body_min_rate = \"10KiB\"\nbody_rate_window = \"1s\"",
    );

    // `/echo` answers at once and streams the body back: the response has
    // started when the rate check trips, so it is cut off (no final
    // chunk) and the connection closed.
    let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickler = tokio::spawn(async move {
        let chunk = format!("c8\r\n{}\r\n", "x".repeat(200));
        while writer.write_all(chunk.as_bytes()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer))
        .await
        .expect("edge closes the connection")
        .ok();
    trickler.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        answer.contains("xxxx"),
        "some of the echo came back: {answer:?}"
    );
    assert!(
        !answer.ends_with("0\r\n\r\n"),
        "the response must not look complete"
    );

    // HTTP/2: the slow stream gets 408, the connection's other streams go on.
    let mut h2 = http2(edge.addr()).await;
    let slow = h2.send_request(request("POST", "/h2-slow").body(trickling_body()).unwrap());
    let response = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("an answer within the deadline")
        .expect("a response, not a broken connection");
    assert_eq!(response.status(), 408);
    let response = h2
        .send_request(request("GET", "/h2-after").body(empty()).unwrap())
        .await
        .expect("the connection still serves");
    assert_eq!(collect(response).await.status(), 200);
}

/// Connects and sends `GET path`; asserts edge closes the connection
/// unanswered (a reset may already fail the connect) and returns how long
/// that took.
async fn refused(addr: SocketAddr, path: &str) -> Duration {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return started.elapsed();
    };
    let head = format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    closed_within(&mut stream, Duration::from_secs(5)).await;
    started.elapsed()
}

/// One kept-alive HTTP/1.1 connection that got an answer to `GET path`;
/// `Err` if edge refused or broke it.
async fn try_hold(
    addr: SocketAddr,
    path: &str,
) -> Result<hyper::client::conn::http1::SendRequest<TestBody>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request("GET", path).body(empty()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    match collect(response).await.status() {
        200 => Ok(sender),
        status => Err(format!("status {status}")),
    }
}

/// Opens `n` kept-alive HTTP/1.1 connections that each got one answer, so
/// edge has certainly accepted and counted them.
async fn open_served(
    addr: SocketAddr,
    n: usize,
) -> Vec<hyper::client::conn::http1::SendRequest<TestBody>> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut sender = http1(addr).await;
        let response = sender
            .send_request(request("GET", &format!("/held/{i}")).body(empty()).unwrap())
            .await
            .expect("a connection within the cap is served");
        assert_eq!(collect(response).await.status(), 200);
        held.push(sender);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_ip_cap_are_closed_at_once() {
    let origin = Origin::start();
    let edge = edge_with_limits(&origin, "max_connections_per_ip = 10");
    let addr = edge.addr();
    let mut held = open_served(addr, 10).await;

    // The 11th from 127.0.0.1 is closed at once, unanswered.
    let took = refused(addr, "/eleventh").await;
    eprintln!("the 11th connection was closed after {took:?}");
    assert_eq!(origin.hits("/eleventh"), 0);
    assert!(try_hold(addr, "/twelfth").await.is_err());

    // Another client address is counted apart.
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0))
        .unwrap();
    let other = socket.connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(other))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(request("GET", "/other").body(empty()).unwrap())
        .await
        .expect("another address has its own cap");
    assert_eq!(collect(response).await.status(), 200);

    // The first ten still work.
    for (i, sender) in held.iter_mut().enumerate() {
        sender.ready().await.expect("connection still open");
        let response = sender
            .send_request(
                request("GET", &format!("/again/{i}"))
                    .body(empty())
                    .unwrap(),
            )
            .await
            .expect("connections within the cap keep working");
        assert_eq!(collect(response).await.status(), 200);
    }

    // Closing three makes room for three, and no more.
    held.truncate(7);
    let mut first = None;
    assert!(
        eventually(Duration::from_secs(10), async || {
            first = try_hold(addr, "/room").await.ok();
            first.is_some()
        })
        .await,
        "a new connection is accepted once others closed"
    );
    held.extend(first);
    held.extend(open_served(addr, 2).await);
    refused(addr, "/full-again").await;
    assert!(counter(&edge, "edge_connections_rejected_total", "ip_cap").await >= 2.0);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_listener_cap_are_closed_at_once() {
    let origin = Origin::start();
    let edge = edge_with_limits(&origin, "max_connections = 4\nmax_connections_per_ip = 0");
    let addr = edge.addr();
    let held = open_served(addr, 4).await;
    refused(addr, "/fifth").await;
    assert_eq!(origin.hits("/fifth"), 0);
    assert!(counter(&edge, "edge_connections_rejected_total", "listener_cap").await >= 1.0);
    drop(held);
    assert!(
        eventually(Duration::from_secs(10), async || try_hold(addr, "/room")
            .await
            .is_ok())
        .await,
        "a new connection is accepted once others closed"
    );
}

/// Reads HTTP/2 frames until `want` returns `Some`; returns that.
async fn read_frames<T>(
    stream: &mut TcpStream,
    mut want: impl FnMut(u8, u8, u32, &[u8]) -> Option<T>,
) -> T {
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await.expect("frame header");
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let stream_id = u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .expect("frame payload");
        if let Some(found) = want(kind, flags, stream_id, &payload) {
            return found;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_settings_advertise_the_configured_limits() {
    const SETTINGS: u8 = 0x4;
    const WINDOW_UPDATE: u8 = 0x8;
    let origin = Origin::start();
    let edge = edge_with_limits(
        &origin,
        "h2_max_concurrent_streams = 7\nh2_stream_window = \"128KiB\"\nh2_connection_window = \"2MiB\"\nh2_max_frame_size = \"32KiB\"",
    );
    let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
    // The client preface and an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let settings = tokio::time::timeout(
        Duration::from_secs(10),
        read_frames(&mut stream, |kind, flags, _, payload| {
            (kind == SETTINGS && flags & 1 == 0).then(|| {
                payload
                    .chunks_exact(6)
                    .map(|s| {
                        (
                            u16::from_be_bytes([s[0], s[1]]),
                            u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                        )
                    })
                    .collect::<std::collections::HashMap<_, _>>()
            })
        }),
    )
    .await
    .expect("SETTINGS from edge");
    // RFC 9113 §6.5.2: 0x3 MAX_CONCURRENT_STREAMS, 0x4 INITIAL_WINDOW_SIZE,
    // 0x5 MAX_FRAME_SIZE.
    assert_eq!(settings.get(&0x3), Some(&7), "{settings:?}");
    assert_eq!(settings.get(&0x4), Some(&(128 * 1024)), "{settings:?}");
    assert_eq!(settings.get(&0x5), Some(&(32 * 1024)), "{settings:?}");
    // The connection window grows from the protocol's 65,535 by WINDOW_UPDATE.
    let increment = tokio::time::timeout(
        Duration::from_secs(10),
        read_frames(&mut stream, |kind, _, stream_id, payload| {
            (kind == WINDOW_UPDATE && stream_id == 0)
                .then(|| u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff)
        }),
    )
    .await
    .expect("a connection WINDOW_UPDATE");
    assert_eq!(increment, 2 * 1024 * 1024 - 65_535);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_at_the_send_timeout() {
    let origin = Origin::start();
    let edge = edge_with_limits(&origin, "send_timeout = \"1s\"");
    // 64 MiB: far more than the socket buffers on both sides hold, so the
    // edge's writes block once the client stops reading.
    const SIZE: u64 = 64 << 20;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(edge.addr()).await.unwrap();
    let head = format!(
        "GET /big?size={SIZE}&header=Cache-Control:no-store HTTP/1.1\r\nHost: example.com\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let stopped = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), async || {
            counter(&edge, "edge_slow_clients_closed_total", "send_timeout").await >= 1.0
        })
        .await,
        "the stalled connection is closed"
    );
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "not before the timeout"
    );
    // What was sent before the close is there, then the end: the body is cut short.
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
    assert!(
        (received.len() as u64) < SIZE,
        "the response was cut off, got {} bytes",
        received.len()
    );
    // The edge stays healthy for everyone else.
    assert_eq!(get(edge.addr(), "/after").await.status(), 200);
}
