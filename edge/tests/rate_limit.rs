//! Rate limiting end to end through the real binary (the "stability and
//! operations" issue): an abusive client gets 429 with `Retry-After` while
//! a polite one is served and the origin never sees the refused requests;
//! a flood of 10,000 distinct clients leaves memory where it was and the
//! abuser limited; header keys are limited apart; IPv6 clients by /64.
//!
//! The test client connects from 127.0.0.1, which every config here
//! trusts, so each request names its client in `X-Forwarded-For`. Limits
//! that must not refill during a test use a per-minute rate, so no
//! assertion depends on how fast the machine is.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use edge_test_support::{EdgeProcess, Origin, wait_until};
use hyper::client::conn::http1::SendRequest;
use serde_json::Value;

/// Bounds any awaited condition; only a hang on a loaded machine reaches it.
const DEADLINE: Duration = Duration::from_secs(60);

/// A node in front of `origin` that trusts the test client's
/// `X-Forwarded-For`, with extra `[limits]` lines, `[log]` lines and sites.
fn rate_config(origin: &Origin, limits: &str, log: &str, sites: &str) -> String {
    let tables =
        format!("[limits]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{limits}\n\n[log]\n{log}");
    config_sites(&[origin.addr()], &tables, sites, "")
}

/// `GET path` (Host `example.com`) on an open keep-alive connection as
/// `client` (sent as `X-Forwarded-For`), with `extra` headers replacing
/// or adding to those; panics if the connection closed.
async fn get_as(
    sender: &mut SendRequest<TestBody>,
    path: &str,
    client: &str,
    extra: &[(&str, &str)],
) -> Answer {
    sender
        .ready()
        .await
        .expect("the connection stays open (keep-alive)");
    let mut req = request("GET", path)
        .header("x-forwarded-for", client)
        .body(empty())
        .unwrap();
    for (name, value) in extra {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, http::HeaderValue::from_str(value).unwrap());
    }
    let response = sender.send_request(req).await.expect("response from edge");
    collect(response).await
}

/// Checks a 429: `Retry-After` of at least one whole second, a text body,
/// a connection kept open. Returns the `Retry-After` seconds.
fn assert_limited(answer: &Answer) -> u64 {
    assert_eq!(answer.status(), 429);
    let retry_after: u64 = answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {:?}", answer.head));
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    assert!(
        answer.text().contains("too many requests"),
        "{}",
        answer.text()
    );
    assert_eq!(answer.header("connection"), None, "keep-alive");
    retry_after
}

/// SIGTERM, then waits for a clean exit and returns edge's whole output.
async fn stop(mut edge: EdgeProcess) -> String {
    tokio::task::spawn_blocking(move || {
        edge.signal(libc::SIGTERM);
        let status = edge
            .wait_exit(DEADLINE)
            .unwrap_or_else(|| panic!("edge did not exit\n{}", edge.output()));
        assert!(status.success(), "{status}\n{}", edge.output());
        edge.output()
    })
    .await
    .unwrap()
}

/// The value of `name=` in the exit log line with the rate-limit totals.
fn exit_total(output: &str, name: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.contains("rate limiting totals"))
        .unwrap_or_else(|| panic!("no totals line in:\n{output}"));
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// Access-log lines (JSON objects) in edge's output.
fn log_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const ABUSER: &str = "198.51.100.1";
const POLITE: &str = "198.51.100.2";

#[tokio::test]
async fn an_abusive_client_gets_429_while_a_polite_one_is_served() {
    let origin = Origin::start();
    let edge = EdgeProcess::start(
        edge_bin(),
        &rate_config(
            &origin,
            "",
            "access = \"stdout\"",
            &site(&["*"], "rate_limit = { rate = \"10/s\", burst = 5 }"),
        ),
    );
    let addr = edge.addr();

    // The abuser sends 50 requests back to back on one connection; the
    // polite client, on another, one every 200 ms (half its allowance).
    let abuser = async {
        let mut sender = http1(addr).await;
        let started = Instant::now();
        let mut answers = Vec::new();
        for i in 0..50 {
            answers.push(get_as(&mut sender, &format!("/abuse/{i}"), ABUSER, &[]).await);
        }
        (answers, started.elapsed())
    };
    let polite = async {
        let mut sender = http1(addr).await;
        let mut pace = tokio::time::interval(Duration::from_millis(200));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut statuses = Vec::new();
        for i in 0..6 {
            pace.tick().await;
            let answer = get_as(&mut sender, &format!("/polite/{i}"), POLITE, &[]).await;
            statuses.push(answer.status());
        }
        statuses
    };
    let ((answers, elapsed), polite) = tokio::join!(abuser, polite);

    let served = answers.iter().filter(|a| a.status() == 200).count();
    let limited = answers.iter().filter(|a| a.status() == 429).count();
    eprintln!("abuser: {served} served, {limited} limited in {elapsed:?}");
    assert_eq!(served + limited, 50, "only 200 or 429");
    assert!(
        answers[..5].iter().all(|a| a.status() == 200),
        "the burst of 5 is served"
    );
    // Five at once, then one per 100 ms of the time the 50 took.
    let refilled = (elapsed.as_millis() / 100) as usize + 1;
    assert!(
        served <= 5 + refilled,
        "{served} served in {elapsed:?}: more than the burst and the rate allow"
    );
    assert!(limited >= 1);
    for answer in answers.iter().filter(|a| a.status() == 429) {
        assert!(assert_limited(answer) <= 1, "waits are under 100 ms");
    }
    assert_eq!(polite, [200; 6], "the polite client is always served");

    // Refused requests never reached the origin.
    let reached = |prefix: &str| {
        origin
            .requests()
            .iter()
            .filter(|r| r.uri.path().starts_with(prefix))
            .count()
    };
    assert_eq!(reached("/abuse/"), served);
    assert_eq!(reached("/polite/"), 6);

    // The access log shows each refusal as a 429 from the forwarded client.
    let logged_429 = || {
        log_lines(&edge.output())
            .iter()
            .filter(|l| l["status"] == 429 && l["client"] == ABUSER)
            .count()
    };
    // Lines are written off the request path; wait for them (edge is
    // another process, so blocking this thread holds nothing up).
    assert!(
        wait_until(DEADLINE, || logged_429() == limited),
        "{} of {limited} refusals logged\n{}",
        logged_429(),
        edge.output()
    );
    let lines = log_lines(&edge.output());
    assert!(
        lines
            .iter()
            .filter(|l| l["client"] == POLITE)
            .all(|l| l["status"] == 200),
        "the polite client's lines are 200s"
    );

    let output = stop(edge).await;
    assert_eq!(exit_total(&output, "rate_limited"), limited as u64);
}

/// Distinct clients of the flood: 10.x.y.z.
const FLOOD_CLIENTS: usize = 10_000;
/// Keep-alive connections the flood is spread over.
const FLOOD_CONNECTIONS: usize = 8;
/// Table size for the flood: a tenth of its clients, so it overflows.
const FLOOD_TABLE: usize = 1024;
/// How much the edge's peak RSS may grow during the flood. The table is
/// allocated and written at start (1024 clients: 256 sets × 72 bytes =
/// 18 KiB), so the flood adds no client state at all; what it does add is
/// allocator noise, measured at ~0.1 MiB. An unbounded map of 10,000
/// clients (key, state and hash-map overhead, grown by doubling) would add
/// about as much as this bound, so it would sit at its edge.
const FLOOD_GROWTH_BOUND_KIB: u64 = 1024;

fn flood_client(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_clients_keeps_memory_bounded_and_the_abuser_limited() {
    let origin = Origin::start();
    // One request a minute, five at once: nothing refills during the test,
    // and every flood client's entry stays live, so the table must evict.
    let edge = EdgeProcess::start(
        edge_bin(),
        &rate_config(
            &origin,
            &format!("rate_limit_clients = {FLOOD_TABLE}"),
            "access = \"off\"",
            &site(&["*"], "rate_limit = { rate = \"1/m\", burst = 5 }"),
        ),
    );
    let addr = edge.addr();
    // A cacheable answer: the flood measures the limiter, not the cache.
    let path = "/flood?header=Cache-Control:max-age%3D600";

    // The abuser spends its burst before the flood starts.
    let mut abuser = http1(addr).await;
    let mut polite = http1(addr).await;
    for i in 0..6 {
        let answer = get_as(&mut abuser, path, "192.0.2.66", &[]).await;
        if i < 5 {
            assert_eq!(answer.status(), 200);
        } else {
            assert_limited(&answer);
        }
    }
    assert_eq!(
        get_as(&mut polite, path, "192.0.2.77", &[]).await.status(),
        200
    );

    // Warm every flood connection with a request from outside the flood's
    // range, so their buffers exist before the baseline.
    let mut senders = Vec::new();
    for c in 0..FLOOD_CONNECTIONS {
        let mut sender = http1(addr).await;
        let answer = get_as(&mut sender, path, &format!("172.16.0.{c}"), &[]).await;
        assert_eq!(answer.status(), 200);
        senders.push(sender);
    }
    let before = peak_rss_kib(edge.pid());

    let progress = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, mut sender)| {
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut not_ok = Vec::new();
                for i in (c..FLOOD_CLIENTS).step_by(FLOOD_CONNECTIONS) {
                    let answer = get_as(&mut sender, path, &flood_client(i), &[]).await;
                    if answer.status() != 200 {
                        not_ok.push((i, answer.status()));
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                not_ok
            })
        })
        .collect();
    // Meanwhile the abuser hammers, and the polite client sends once at
    // each quarter of the flood (within its burst).
    let watcher = tokio::spawn({
        let (progress, done) = (progress.clone(), done.clone());
        async move {
            let (mut abuser_served, mut abuser_limited, mut polite_statuses) = (0, 0, Vec::new());
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let answer = get_as(&mut abuser, path, "192.0.2.66", &[]).await;
                match answer.status() {
                    200 => abuser_served += 1,
                    _ => {
                        assert_limited(&answer);
                        abuser_limited += 1;
                    }
                }
                let quarter = FLOOD_CLIENTS / 4 * (polite_statuses.len() + 1);
                if polite_statuses.len() < 3 && progress.load(Ordering::Relaxed) >= quarter {
                    let answer = get_as(&mut polite, path, "192.0.2.77", &[]).await;
                    polite_statuses.push(answer.status());
                }
            }
            (
                abuser_served,
                abuser_limited,
                polite_statuses,
                started.elapsed(),
                abuser,
                polite,
            )
        }
    });
    let flood_started = Instant::now();
    let mut refused = Vec::new();
    for task in flood {
        let not_ok = tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the flood finishes in time")
            .unwrap();
        refused.extend(not_ok);
    }
    let flood_time = flood_started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (abuser_served, abuser_limited, polite_statuses, watched, mut abuser, mut polite) =
        watcher.await.unwrap();

    let after = peak_rss_kib(edge.pid());
    let growth = after.saturating_sub(before);
    eprintln!(
        "flood of {FLOOD_CLIENTS} clients in {flood_time:?}: peak RSS {before} KiB -> {after} KiB (+{growth} KiB); \
         abuser {abuser_served} served / {abuser_limited} limited; polite {polite_statuses:?}"
    );
    assert!(
        refused.is_empty(),
        "every new client has its burst: {refused:?}"
    );
    assert!(
        growth <= FLOOD_GROWTH_BOUND_KIB,
        "peak RSS grew by {growth} KiB during the flood (bound {FLOOD_GROWTH_BOUND_KIB} KiB)"
    );
    // At one request a minute, the abuser regains at most one per minute.
    assert!(abuser_limited >= 1, "the abuser kept being refused");
    assert!(
        abuser_served <= watched.as_secs() / 60 + 1,
        "the abuser was served {abuser_served} times in {watched:?}: the flood evicted it"
    );
    assert_eq!(polite_statuses, [200; 3]);

    // After the flood: the abuser is still refused, the polite one served.
    assert_limited(&get_as(&mut abuser, path, "192.0.2.66", &[]).await);
    assert_eq!(
        get_as(&mut polite, path, "192.0.2.77", &[]).await.status(),
        200
    );

    // The flood overflowed the table: live entries were evicted.
    let output = stop(edge).await;
    let evictions = exit_total(&output, "evictions");
    eprintln!("evictions: {evictions}");
    assert!(evictions > 0, "the table of {FLOOD_TABLE} never overflowed");
}

#[tokio::test]
async fn header_keys_and_ipv6_prefixes_are_limited_apart() {
    let origin = Origin::start();
    let edge = EdgeProcess::start(
        edge_bin(),
        &rate_config(
            &origin,
            "",
            "access = \"off\"",
            &[
                site(
                    &["api.test"],
                    "rate_limit = { rate = \"1/m\", burst = 3, key = \"header:X-Api-Key\" }",
                ),
                site(&["*"], "rate_limit = { rate = \"1/m\", burst = 2 }"),
            ]
            .concat(),
        ),
    );
    let mut sender = http1(edge.addr()).await;

    // Every API request comes from one address; the key tells them apart.
    let mut api = async |key: Option<&str>| {
        let mut headers = vec![("host", "api.test")];
        headers.extend(key.map(|k| ("x-api-key", k)));
        let answer = get_as(&mut sender, "/api", "198.51.100.9", &headers).await;
        answer.status()
    };
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(api(Some("key-a")).await);
    }
    for _ in 0..5 {
        statuses.push(api(Some("key-b")).await);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429, 200, 200, 200, 429, 429],
        "each key its own burst of 3"
    );
    // Without the key the address counts: a fresh budget too.
    assert_eq!(api(None).await, 200);
    assert_eq!(api(Some("key-a")).await, 429, "key-a is still spent");
    assert_eq!(api(Some("key-c")).await, 200);

    // By address: IPv6 clients share their /64.
    let mut sender = http1(edge.addr()).await;
    let mut by_ip = Vec::new();
    for client in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff::3",
        "2001:db8:1:3::1",
        "192.0.2.10",
        "192.0.2.11",
    ] {
        by_ip.push(get_as(&mut sender, "/site", client, &[]).await.status());
    }
    assert_eq!(by_ip, [200, 200, 429, 200, 200, 200]);
    assert_eq!(origin.hits("/api"), 8);
}
