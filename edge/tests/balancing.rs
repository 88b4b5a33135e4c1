//! Load balancing and failure detection end to end: three real origins
//! behind the real binary under a steady, bounded load of idempotent GETs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use edge_test_support::{DnsServer, EdgeProcess, Origin};

const PATH: &str = "/load?header=Cache-Control:no-store";

/// An edge over `origins` with fast health checks and outlier detection.
fn edge_over(origins: &[&Origin]) -> EdgeProcess {
    let addrs: Vec<_> = origins.iter().map(|o| o.addr()).collect();
    EdgeProcess::start(
        edge_bin(),
        &config(
            &addrs,
            r#"balance = "p2c"
health = { path = "/health", interval = "50ms", timeout = "500ms", rise = 2, fall = 2 }
outlier = { failures = 3, base_ejection = "300ms", max_ejection_percent = 50 }"#,
        ),
    )
}

/// Sends `count` GETs from 4 concurrent clients; returns the failures.
async fn load(edge: &EdgeProcess, count: usize, done: Arc<AtomicUsize>) -> usize {
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (addr, failures, done) = (edge.addr(), failures.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = http1(addr).await;
            while done.fetch_add(1, Ordering::SeqCst) < count {
                let ok = match sender
                    .send_request(request("GET", PATH).body(empty()).unwrap())
                    .await
                {
                    Ok(response) => collect(response).await.status() == 200,
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::SeqCst);
                    sender = http1(addr).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    failures.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_origin_costs_no_request_and_rejoins_after_restart() {
    let (a, b) = (Origin::start(), Origin::start());
    let c = Origin::start();
    let c_addr = c.addr();
    let edge = edge_over(&[&a, &b, &c]);
    assert!(c.wait_for_hits("/health", 2, Duration::from_secs(10)));

    let done = Arc::new(AtomicUsize::new(0));
    let running = tokio::spawn({
        let done = done.clone();
        let edge_addr = edge.addr();
        async move {
            // Kill c once a quarter of the load has gone through.
            edge_test_support::wait_until(Duration::from_secs(30), || {
                done.load(Ordering::SeqCst) >= 100
            });
            drop(c);
            edge_addr
        }
    });
    let failures = load(&edge, 400, done).await;
    running.await.unwrap();
    assert_eq!(failures, 0, "retries cover the killed origin");
    assert!(a.hits("/load") > 0 && b.hits("/load") > 0);

    // Restarted on the same port: health checks bring it back (rise = 2).
    let c = Origin::start_at(c_addr);
    assert!(c.wait_for_hits("/health", 2, Duration::from_secs(10)));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.hits("/load") == 0 && std::time::Instant::now() < deadline {
        assert_eq!(load(&edge, 20, done.clone()).await, 0);
        done.store(0, Ordering::SeqCst);
    }
    assert!(
        c.hits("/load") > 0,
        "the restarted origin receives traffic again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answering_503_is_ejected_and_later_returns() {
    let (a, b, sick) = (Origin::start(), Origin::start(), Origin::start());
    // No health checks here: only passive detection sees the 503s.
    let addrs = [a.addr(), b.addr(), sick.addr()];
    let edge = EdgeProcess::start(
        edge_bin(),
        &config(
            &addrs,
            r#"balance = "round-robin"
outlier = { failures = 3, base_ejection = "1s", max_ejection_percent = 50 }"#,
        ),
    );
    sick.force_status(Some(503));
    let failures = load(&edge, 60, Arc::new(AtomicUsize::new(0))).await;
    assert_eq!(failures, 0, "503s were retried on the healthy origins");
    let while_sick = sick.total_hits();
    assert!(
        while_sick <= 6,
        "ejected after 3 failures in a row, got {while_sick} requests"
    );

    sick.force_status(None);
    // Repeated ejections last longer (n x base), so wait on the outcome
    // with a deadline rather than for a number of requests.
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sick.hits("/load") == while_sick && std::time::Instant::now() < deadline {
        assert_eq!(load(&edge, 10, done.clone()).await, 0);
        done.store(0, Ordering::SeqCst);
    }
    assert!(
        sick.hits("/load") > while_sick,
        "the ejection ends and traffic returns"
    );
}

#[tokio::test]
async fn weights_in_endpoints_shape_round_robin_exactly() {
    let (light, heavy) = (Origin::start(), Origin::start());
    let config = format!(
        r#"
[node]
id = "edge-test"
workers = 2
[admin]
listen = "127.0.0.1:0"
[[listeners]]
addr = "127.0.0.1:0"
[[sites]]
hosts = ["*"]
pool = "origin"
[pools.origin]
endpoints = ["{}", {{ addr = "{}", weight = 3 }}]
balance = "round-robin"
"#,
        light.addr(),
        heavy.addr()
    );
    let edge = EdgeProcess::start(edge_bin(), &config);
    let failures = load(&edge, 40, Arc::new(AtomicUsize::new(0))).await;
    assert_eq!(failures, 0);
    assert_eq!((light.hits("/load"), heavy.hits("/load")), (10, 30));
}

#[tokio::test]
async fn hash_pools_send_each_url_to_one_endpoint() {
    let origins = [Origin::start(), Origin::start(), Origin::start()];
    let addrs: Vec<_> = origins.iter().map(|o| o.addr()).collect();
    let edge = EdgeProcess::start(edge_bin(), &config(&addrs, "balance = \"hash\""));
    for round in 0..3 {
        for i in 0..20 {
            let path = format!("/h{i}?header=Cache-Control:no-store");
            assert_eq!(get(edge.addr(), &path).await.status(), 200, "round {round}");
        }
    }
    let mut used = std::collections::HashSet::new();
    for i in 0..20 {
        let counts: Vec<usize> = origins.iter().map(|o| o.hits(&format!("/h{i}"))).collect();
        assert_eq!(
            counts.iter().filter(|&&n| n == 3).count(),
            1,
            "/h{i}: {counts:?}"
        );
        assert_eq!(counts.iter().sum::<usize>(), 3, "/h{i}: {counts:?}");
        used.insert(counts.iter().position(|&n| n == 3));
    }
    assert!(
        used.len() >= 2,
        "20 URLs spread over more than one endpoint"
    );
}

/// Sends bounded rounds of load until `reached` holds; every request must succeed.
async fn load_until(edge: &EdgeProcess, what: &str, reached: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !reached() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        let failures = load(edge, 10, Arc::new(AtomicUsize::new(0))).await;
        assert_eq!(failures, 0, "no failed request while waiting: {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_follows_its_dns_name_without_failed_requests() {
    // Two origins on one port at two loopback addresses, so one name:port
    // can point at either.
    let first = Origin::start();
    let port = first.addr().port();
    let second = Origin::start_at(std::net::SocketAddr::from(([127, 0, 0, 2], port)));
    let (ip1, ip2) = (first.addr().ip(), second.addr().ip());
    let dns = DnsServer::start();
    dns.set("origin.test", &[ip1], 1);
    let dns_table = format!(
        "[dns]\nservers = [\"{}\"]\nmin_ttl = \"200ms\"\nmax_ttl = \"1s\"\nhosts_file = false",
        dns.addr()
    );
    let config = config_named(
        &format!("\"origin.test:{port}\""),
        &dns_table,
        "retries = 2",
    );
    let edge = EdgeProcess::start(edge_bin(), &config);
    assert_eq!(load(&edge, 20, Arc::new(AtomicUsize::new(0))).await, 0);
    assert_eq!((first.hits("/load"), second.hits("/load")), (20, 0));

    // The answer moves: within the TTL (1 s) the pool follows, and the old
    // address drains without a failed request.
    dns.set("origin.test", &[ip2], 1);
    load_until(&edge, "traffic moves to the new address", || {
        second.hits("/load") > 0
    })
    .await;
    let old = first.hits("/load");
    assert_eq!(load(&edge, 20, Arc::new(AtomicUsize::new(0))).await, 0);
    assert_eq!(
        first.hits("/load"),
        old,
        "the removed address gets nothing new"
    );

    // Both addresses: both receive traffic.
    dns.set("origin.test", &[ip1, ip2], 1);
    load_until(&edge, "both addresses serve", || first.hits("/load") > old).await;

    // The server breaks: lookups fail, the last good set stays in use.
    dns.fail("origin.test");
    let asked = dns.queries();
    load_until(&edge, "failed lookups happen", || {
        dns.queries() >= asked + 2
    })
    .await;
    let (a, b) = (first.hits("/load"), second.hits("/load"));
    assert_eq!(load(&edge, 40, Arc::new(AtomicUsize::new(0))).await, 0);
    assert!(
        first.hits("/load") > a && second.hits("/load") > b,
        "both addresses keep serving after failed lookups"
    );
    assert!(
        edge.output()
            .contains("lookup failed; keeping the last good addresses"),
        "the failure is logged"
    );
}

#[tokio::test]
async fn names_in_etc_hosts_resolve_without_asking_dns() {
    let origin = Origin::start();
    let dns = DnsServer::start(); // knows no name at all
    let config = config_named(
        &format!("\"localhost:{}\"", origin.addr().port()),
        &format!("[dns]\nservers = [\"{}\"]", dns.addr()),
        "",
    );
    let edge = EdgeProcess::start(edge_bin(), &config);
    assert_eq!(load(&edge, 8, Arc::new(AtomicUsize::new(0))).await, 0);
    assert_eq!(origin.hits("/load"), 8);
    assert_eq!(dns.queries(), 0, "/etc/hosts answered");
}

/// `count` occurrences of `needle` in the edge's log.
fn logged(edge: &EdgeProcess, needle: &str) -> usize {
    edge.output().matches(needle).count()
}

/// One GET at a time (so the breaker's consecutive count is exact).
async fn sequential(edge: &EdgeProcess, count: usize) {
    for _ in 0..count {
        assert_eq!(
            get(edge.addr(), PATH).await.status(),
            200,
            "every request succeeds"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opens_probes_half_open_and_closes() {
    let (good, sick) = (Origin::start(), Origin::start());
    let edge = EdgeProcess::start(
        edge_bin(),
        &config(
            &[good.addr(), sick.addr()],
            r#"balance = "round-robin"
outlier = { failures = 0 }
breaker = { failures = 3, open = "1s", max_open = "10s", probes = 1 }
retries = 1"#,
        ),
    );
    sick.force_status(Some(503));

    // Closed -> open after 3 consecutive failures (each retried on `good`).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while logged(&edge, "BreakerOpened") == 0 {
        assert!(std::time::Instant::now() < deadline, "the breaker opens");
        sequential(&edge, 1).await;
    }
    assert_eq!(sick.hits("/load"), 3, "opened at the failure threshold");

    // Open: nothing reaches `sick`; half-open after `open`: one probe,
    // which fails, so the breaker opens again (for twice as long).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while logged(&edge, "BreakerOpened") < 2 {
        assert!(std::time::Instant::now() < deadline, "the probe reopens it");
        sequential(&edge, 1).await;
        if sick.hits("/load") > 3 {
            // The log is read by another thread: wait for the line.
            assert!(
                edge_test_support::wait_until(Duration::from_secs(5), || {
                    logged(&edge, "BreakerHalfOpen") >= 1
                }),
                "no traffic while open, only a half-open probe"
            );
        }
    }
    assert_eq!(logged(&edge, "BreakerHalfOpen"), 1);
    assert_eq!(
        sick.hits("/load"),
        4,
        "half-open let exactly one probe through"
    );
    assert!(
        edge.output().contains("open_for: 2s"),
        "the second opening lasts twice as long"
    );

    // Healed: the next probe succeeds and closes the breaker; traffic returns.
    sick.force_status(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while logged(&edge, "BreakerClosed") == 0 {
        assert!(std::time::Instant::now() < deadline, "the breaker closes");
        sequential(&edge, 1).await;
    }
    sequential(&edge, 10).await;
    assert!(sick.hits("/load") >= 4 + 5, "closed: round-robin again");
}

#[tokio::test]
async fn hash_header_keeps_each_user_on_one_endpoint() {
    let origins = [Origin::start(), Origin::start(), Origin::start()];
    let addrs: Vec<_> = origins.iter().map(|o| o.addr()).collect();
    let edge = EdgeProcess::start(
        edge_bin(),
        &config(&addrs, "balance = \"hash\"\nhash_header = \"X-User\""),
    );
    let mut used = std::collections::HashSet::new();
    for user in 0..12 {
        for page in 0..4 {
            let path = format!("/u{user}/p{page}?header=Cache-Control:no-store");
            let req = request("GET", &path)
                .header("x-user", format!("user-{user}"))
                .body(empty())
                .unwrap();
            assert_eq!(send(edge.addr(), req).await.status(), 200);
        }
        let counts: Vec<usize> = origins
            .iter()
            .map(|o| (0..4).map(|p| o.hits(&format!("/u{user}/p{p}"))).sum())
            .collect();
        assert_eq!(
            counts.iter().filter(|&&n| n == 4).count(),
            1,
            "user-{user}'s four URLs went to one endpoint: {counts:?}"
        );
        used.insert(counts.iter().position(|&n| n == 4));
    }
    assert!(
        used.len() >= 2,
        "12 users spread over more than one endpoint"
    );
}

#[tokio::test]
async fn put_and_delete_are_retried_only_when_configured() {
    for (configured, expected) in [(false, 503), (true, 200)] {
        let (sick, good) = (Origin::start(), Origin::start());
        sick.force_status(Some(503));
        let extra = format!(
            "balance = \"round-robin\"\nretries = 1\nretry_unsafe_idempotent = {configured}"
        );
        let edge = EdgeProcess::start(edge_bin(), &config(&[sick.addr(), good.addr()], &extra));
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let req = request("DELETE", "/thing").body(empty()).unwrap();
            statuses.push(send(edge.addr(), req).await.status());
        }
        assert!(
            statuses.contains(&expected),
            "retry_unsafe_idempotent = {configured}: {statuses:?}"
        );
        if configured {
            assert_eq!(
                statuses,
                [200, 200],
                "every DELETE retried onto the good endpoint"
            );
        }
    }
}

/// Whether `/status` reports `addr` ejected from its pool.
async fn ejected(edge: &EdgeProcess, addr: std::net::SocketAddr) -> bool {
    let status = get(edge.admin(), "/status").await;
    let document: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    document["pools"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["addr"] == addr.to_string())
        .expect("the endpoint is listed")["ejected"]
        .as_bool()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_leaves_a_pool_alone_keeps_its_endpoint_state() {
    let (a, sick) = (Origin::start(), Origin::start());
    let addrs = [a.addr(), sick.addr()];
    // Ejections outlast the test, so only a reset can end one.
    let pool = r#"balance = "round-robin"
outlier = { failures = 3, base_ejection = "60s", max_ejection_percent = 50 }"#;
    let edge = EdgeProcess::start(edge_bin(), &config(&addrs, pool));
    sick.force_status(Some(503));
    assert_eq!(load(&edge, 30, Arc::new(AtomicUsize::new(0))).await, 0);
    assert!(ejected(&edge, sick.addr()).await);
    let reloaded = async |text: &str| {
        let answer = reload(&edge, text).await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
    };

    // A site added, the pool as it was: the ejection stands.
    let other_site = "[[sites]]\nhosts = [\"other.test\"]\npool = \"origin\"\n";
    reloaded(&config_with(&addrs, other_site, pool)).await;
    assert!(ejected(&edge, sick.addr()).await, "the pool carried over");
    let before = sick.total_hits();
    assert_eq!(load(&edge, 30, Arc::new(AtomicUsize::new(0))).await, 0);
    assert_eq!(
        sick.total_hits(),
        before,
        "the ejected endpoint gets nothing"
    );

    // The pool itself changed: it starts afresh.
    reloaded(&config_with(
        &addrs,
        other_site,
        &format!("{pool}\nretries = 0"),
    ))
    .await;
    assert!(
        !ejected(&edge, sick.addr()).await,
        "a changed pool starts afresh"
    );
}
