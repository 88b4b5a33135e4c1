//! The access log and request ids end to end through the real binary
//! (acceptance of the "stability and operations" issue): one valid JSON
//! line per request with the right values, `X-Request-Id` upstream and
//! back, SIGUSR1 reopening the file after a rename, stdout mode, and a
//! load run whose lines plus drops equal its requests.
//!
//! Exact line counts are read after a SIGTERM: the node flushes the log
//! before it exits, so the file is then complete and nothing more comes.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use edge_test_support::{EdgeProcess, Origin, wait_until};
use serde_json::Value;

/// Bounds any awaited condition; only a hang on a loaded machine reaches it.
const DEADLINE: Duration = Duration::from_secs(30);

/// A cacheable answer for a minute.
const FRESH_60: &str = "header=Cache-Control:max-age%3D60";

/// The default test config in front of `origin` with a `[log]` table.
fn log_config(origin: &Origin, log_table: &str) -> String {
    format!("{}\n[log]\n{log_table}\n", config(&[origin.addr()], ""))
}

/// An edge logging to `access.log` in a fresh directory.
fn edge_logging_to_file(origin: &Origin, extra: &str) -> (EdgeProcess, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir for the log");
    let path = dir.path().join("access.log");
    let table = format!("access = {:?}\n{extra}", path.to_str().unwrap());
    let edge = EdgeProcess::start(edge_bin(), &log_config(origin, &table));
    (edge, dir, path)
}

/// Every line of the log at `path`, each parsed as JSON (panics naming the
/// line that is not).
fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "last line unfinished"
    );
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line:?}", i + 1))
        })
        .collect()
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// SIGTERM, then waits for a clean exit: the log is complete afterwards.
fn stop(edge: &mut EdgeProcess) {
    edge.signal(libc::SIGTERM);
    let status = edge
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("edge did not exit\n{}", edge.output()));
    assert!(status.success(), "{status}\n{}", edge.output());
}

/// [`stop`] from async code: the wait runs off the runtime's thread, so the
/// test's own client connections keep running and can answer the node's
/// graceful close (HTTP/2 acknowledges a PING before the final GOAWAY).
async fn stop_async(mut edge: EdgeProcess) -> EdgeProcess {
    tokio::task::spawn_blocking(move || {
        stop(&mut edge);
        edge
    })
    .await
    .expect("stop")
}

/// The `X-Request-Id` an answer carried.
fn id_of(answer: &Answer) -> String {
    answer
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on {:?}", answer.head))
        .to_owned()
}

/// What a request should have logged.
#[derive(Debug, Clone)]
struct Expected {
    method: &'static str,
    path: String,
    status: u16,
    bytes: u64,
    protocol: &'static str,
    /// The cache field: `None` for null.
    cache: Option<&'static str>,
    /// Whether an upstream endpoint was used.
    upstream: bool,
}

/// Sends `method path` with `body` on `sender` and returns what it should log.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    method: &'static str,
    path: &str,
    body: TestBody,
) -> Answer {
    let req = request(method, path).body(body).unwrap();
    let response = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("response from edge");
    collect(response).await
}

fn expect(
    answer: &Answer,
    method: &'static str,
    path: &str,
    cache: Option<&'static str>,
    upstream: bool,
) -> (String, Expected) {
    (
        id_of(answer),
        Expected {
            method,
            path: path.to_owned(),
            status: answer.status(),
            bytes: answer.body.len() as u64,
            protocol: "HTTP/1.1",
            cache,
            upstream,
        },
    )
}

/// Checks one line against what its request should have logged.
fn check_line(line: &Value, want: &Expected, origin: SocketAddr) {
    let ctx = || format!("{line} vs {want:?}");
    assert_eq!(line["method"], want.method, "{}", ctx());
    assert_eq!(line["path"], want.path.as_str(), "{}", ctx());
    assert_eq!(line["status"], want.status, "{}", ctx());
    assert_eq!(line["bytes"], want.bytes, "{}", ctx());
    assert_eq!(line["protocol"], want.protocol, "{}", ctx());
    assert_eq!(line["host"], "example.com", "{}", ctx());
    assert_eq!(line["client"], "127.0.0.1", "{}", ctx());
    assert!(line["client_port"].as_u64().unwrap() > 0, "{}", ctx());
    assert_eq!(line["scheme"], "http", "{}", ctx());
    assert_eq!(line["aborted"], false, "{}", ctx());
    match want.cache {
        Some(cache) => assert_eq!(line["cache"], cache, "{}", ctx()),
        None => assert!(line["cache"].is_null(), "{}", ctx()),
    }
    if want.upstream {
        assert_eq!(line["upstream"], origin.to_string(), "{}", ctx());
    } else {
        assert!(line["upstream"].is_null(), "{}", ctx());
    }
    let time = line["time"].as_str().expect("time is a string");
    // RFC 3339, UTC, milliseconds: 2024-05-06T07:08:09.123Z
    assert_eq!(time.len(), 24, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0, "{}", ctx());
}

#[tokio::test]
async fn every_request_gets_one_line_with_its_values() {
    let origin = Origin::start();
    let (edge, _dir, path) = edge_logging_to_file(&origin, "");
    let addr = edge.addr();
    let mut expected: HashMap<String, Expected> = HashMap::new();

    // Ten cacheable objects, fetched once each: misses that are stored.
    let mut sender = http1(addr).await;
    for k in 0..10 {
        let p = format!("/obj/{k}?size={}&{FRESH_60}", 100 * (k + 1));
        let answer = exchange(&mut sender, "GET", &p, empty()).await;
        assert_eq!(answer.body.len(), 100 * (k + 1));
        let (id, want) = expect(&answer, "GET", &p, Some("miss"), true);
        expected.insert(id, want);
    }

    // Eight concurrent clients, each on its own connection: hits, 404s
    // (fetched, not storable) and POSTs (around the cache), 60 each.
    let mut clients = Vec::new();
    for c in 0..8 {
        clients.push(tokio::spawn(async move {
            let mut sender = http1(addr).await;
            let mut mine = Vec::new();
            for i in 0..60 {
                let (method, p, body, cache, upstream) = match i % 6 {
                    0 => (
                        "GET",
                        format!("/missing/{c}-{i}?status=404"),
                        empty(),
                        Some("miss"),
                        true,
                    ),
                    1 => (
                        "POST",
                        "/echo".to_owned(),
                        text("posted body"),
                        Some("bypass"),
                        true,
                    ),
                    k => {
                        let k = (c + i + k) % 10;
                        let p = format!("/obj/{k}?size={}&{FRESH_60}", 100 * (k + 1));
                        ("GET", p, empty(), Some("hit"), false)
                    }
                };
                let answer = exchange(&mut sender, method, &p, body).await;
                mine.push(expect(&answer, method, &p, cache, upstream));
            }
            mine
        }));
    }
    for client in clients {
        expected.extend(client.await.unwrap());
    }

    // Edge's own answer: a loop it refuses (508), no cache, no upstream.
    let looped = send(
        addr,
        request("GET", "/loop")
            .header("cdn-loop", "edge-test")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(looped.status(), 508);
    let (id, want) = expect(&looped, "GET", "/loop", None, false);
    expected.insert(id, want);

    // One HTTP/2 request, for a stored object.
    let mut h2 = http2(addr).await;
    let req = http::Request::get(format!("http://example.com/obj/0?size=100&{FRESH_60}"))
        .version(http::Version::HTTP_2)
        .body(empty())
        .unwrap();
    let answer = collect(h2.send_request(req).await.expect("h2 answer")).await;
    let (id, mut want) = expect(
        &answer,
        "GET",
        &format!("/obj/0?size=100&{FRESH_60}"),
        Some("hit"),
        false,
    );
    want.protocol = "HTTP/2";
    expected.insert(id, want);

    // Enough hits to fill out 500, some HEAD (no body is sent for them).
    let mut sender = http1(addr).await;
    while expected.len() < 500 {
        let method = if expected.len().is_multiple_of(7) {
            "HEAD"
        } else {
            "GET"
        };
        let p = format!("/obj/3?size=400&{FRESH_60}");
        let answer = exchange(&mut sender, method, &p, empty()).await;
        let (id, want) = expect(&answer, method, &p, Some("hit"), false);
        expected.insert(id, want);
    }
    assert_eq!(expected.len(), 500, "every request id is distinct");

    stop_async(edge).await;
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 500, "one line per request");
    for line in &lines {
        let id = line["request_id"].as_str().expect("request_id is a string");
        let want = expected
            .remove(id)
            .unwrap_or_else(|| panic!("line for an unknown or repeated id: {line}"));
        check_line(line, &want, origin.addr());
    }
    assert!(expected.is_empty());
}

#[tokio::test]
async fn request_ids_reach_the_origin_and_come_back() {
    let origin = Origin::start();
    let (edge, _dir, path) = edge_logging_to_file(&origin, "");

    // A client's sane id is kept, sent upstream and echoed.
    let answer = send(
        edge.addr(),
        request("GET", "/given")
            .header("x-request-id", "client-chosen_id.42")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(id_of(&answer), "client-chosen_id.42");
    let seen = origin.last_request("/given").unwrap().headers;
    assert_eq!(
        seen.get_all("x-request-id").iter().collect::<Vec<_>>(),
        ["client-chosen_id.42"]
    );

    // None: one is generated, and the origin sees the same one.
    let answer = get(edge.addr(), "/absent").await;
    let generated = id_of(&answer);
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(
        generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "{generated}"
    );
    let seen = origin.last_request("/absent").unwrap().headers;
    assert_eq!(seen["x-request-id"], generated.as_str());

    // An unusable one (too long) is replaced, upstream too.
    let long = "x".repeat(129);
    let answer = send(
        edge.addr(),
        request("GET", "/too-long")
            .header("x-request-id", long.as_str())
            .body(empty())
            .unwrap(),
    )
    .await;
    let replaced = id_of(&answer);
    assert_ne!(replaced, long);
    assert_eq!(replaced.len(), 32);
    let seen = origin.last_request("/too-long").unwrap().headers;
    assert_eq!(seen["x-request-id"], replaced.as_str());

    // An id the origin answers with is not the client's: ours wins.
    let answer = send(
        edge.addr(),
        request("GET", "/origin-id?header=X-Request-Id:from-origin")
            .header("x-request-id", "mine")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        answer
            .head
            .headers
            .get_all("x-request-id")
            .iter()
            .collect::<Vec<_>>(),
        ["mine"]
    );

    stop_async(edge).await;
    let mut ids: Vec<_> = read_lines(&path)
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut want = vec![
        "client-chosen_id.42".to_owned(),
        generated,
        replaced,
        "mine".to_owned(),
    ];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn request_ids_can_be_turned_off() {
    let origin = Origin::start();
    let edge = EdgeProcess::start(edge_bin(), &log_config(&origin, "request_id = false"));
    let answer = get(edge.addr(), "/plain").await;
    assert_eq!(answer.header("x-request-id"), None);
    let seen = origin.last_request("/plain").unwrap().headers;
    assert!(!seen.contains_key("x-request-id"), "{seen:?}");
    // A client's own id passes through untouched, like any header.
    let answer = send(
        edge.addr(),
        request("GET", "/theirs")
            .header("x-request-id", "has space")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        origin.last_request("/theirs").unwrap().headers["x-request-id"],
        "has space"
    );
}

#[tokio::test]
async fn sigusr1_reopens_the_log_after_a_rename() {
    let origin = Origin::start();
    let (edge, dir, path) = edge_logging_to_file(&origin, "");
    let rotated = dir.path().join("access.log.1");

    let mut before = Vec::new();
    for i in 0..5 {
        before.push(id_of(&get(edge.addr(), &format!("/before/{i}")).await));
    }
    // Lines reach the file as soon as the writer is idle.
    assert!(
        wait_until(DEADLINE, || line_count(&path) == 5),
        "5 lines before the rename; file has {}",
        line_count(&path)
    );

    std::fs::rename(&path, &rotated).unwrap();
    edge.signal(libc::SIGUSR1);
    // Reopening creates the file at the original path.
    assert!(
        wait_until(DEADLINE, || path.exists()),
        "no new log file after SIGUSR1\n{}",
        edge.output()
    );

    let mut after = Vec::new();
    for i in 0..7 {
        after.push(id_of(&get(edge.addr(), &format!("/after/{i}")).await));
    }
    let edge = stop_async(edge).await;

    // Sorted: lines are in completion order, which two requests a moment
    // apart may swap.
    let ids = |p: &Path| -> Vec<String> {
        let mut ids: Vec<_> = read_lines(p)
            .iter()
            .map(|l| l["request_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    before.sort();
    after.sort();
    assert_eq!(
        ids(&rotated),
        before,
        "the renamed file keeps only the earlier lines"
    );
    assert_eq!(ids(&path), after, "new lines go to the new file");
    assert!(
        edge.output().contains("access log reopened"),
        "{}",
        edge.output()
    );
}

#[tokio::test]
async fn stdout_mode_writes_lines_there_and_ignores_sigusr1() {
    let origin = Origin::start();
    let edge = EdgeProcess::start(edge_bin(), &log_config(&origin, "access = \"stdout\""));
    let answer = get(edge.addr(), "/to-stdout?size=42").await;
    let id = id_of(&answer);
    edge.signal(libc::SIGUSR1);
    let answer = get(edge.addr(), "/still-serving").await;
    assert_eq!(answer.status(), 200, "SIGUSR1 did not stop the node");
    let edge = stop_async(edge).await;

    let lines: Vec<Value> = edge
        .output()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{}", edge.output());
    assert_eq!(lines[0]["request_id"], id.as_str());
    assert_eq!(lines[0]["bytes"], 42);
    assert_eq!(lines[1]["path"], "/still-serving");
}

#[test]
fn an_abandoned_download_is_logged_as_aborted() {
    let origin = Origin::start();
    let (mut edge, _dir, path) = edge_logging_to_file(&origin, "");
    // 64 MiB, far more than loopback socket buffers hold: the client reads
    // the first 64 KiB and closes while edge is still sending.
    let mut stream = std::net::TcpStream::connect(edge.addr()).unwrap();
    stream
        .write_all(
            b"GET /big?size=67108864 HTTP/1.1\r\nHost: example.com\r\nX-Request-Id: abandon-1\r\n\r\n",
        )
        .unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut received = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while received < 64 * 1024 {
        let n = stream.read(&mut buf).expect("edge sends the body");
        assert!(n > 0, "edge closed early");
        received += n;
    }
    drop(stream);
    assert!(
        wait_until(DEADLINE, || line_count(&path) == 1),
        "no line for the abandoned download\n{}",
        edge.output()
    );
    stop(&mut edge);
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["request_id"], "abandon-1");
    assert_eq!(lines[0]["aborted"], true);
    assert_eq!(lines[0]["status"], 200);
    let bytes = lines[0]["bytes"].as_u64().unwrap();
    assert!(bytes > 0 && bytes < 64 * 1024 * 1024, "{bytes}");
}

/// Requests of the load run: 32 connections × 100.
const LOAD_CONNECTIONS: usize = 32;
const LOAD_PER_CONNECTION: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_line_is_valid_json_and_none_is_lost() {
    let origin = Origin::start();
    let (edge, _dir, path) = edge_logging_to_file(&origin, "access_buffer = 65536");
    let addr = edge.addr();
    let mut clients = Vec::new();
    for c in 0..LOAD_CONNECTIONS {
        clients.push(tokio::spawn(async move {
            let mut sender = http1(addr).await;
            for i in 0..LOAD_PER_CONNECTION {
                // Mostly hits on 20 objects, some misses of unique URLs.
                let p = if i.is_multiple_of(10) {
                    format!("/load/unique-{c}-{i}")
                } else {
                    format!("/load/{}?{FRESH_60}", (c + i) % 20)
                };
                let answer = exchange(&mut sender, "GET", &p, empty()).await;
                assert_eq!(answer.status(), 200);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let edge = stop_async(edge).await;

    let requests = LOAD_CONNECTIONS * LOAD_PER_CONNECTION;
    let lines = read_lines(&path);
    let ids: std::collections::HashSet<_> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), lines.len(), "request ids are unique");
    let dropped = dropped_lines(&edge.output());
    assert_eq!(
        lines.len() as u64 + dropped,
        requests as u64,
        "lines + drops = requests"
    );
    assert_eq!(dropped, 0, "a 65536-line buffer keeps up with this run");
}

/// The total edge reported dropping when it closed the log (0 if it did not).
fn dropped_lines(output: &str) -> u64 {
    output
        .lines()
        .filter(|l| l.contains("lines dropped in total"))
        .filter_map(|l| l.split("dropped=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}
