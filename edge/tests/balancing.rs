//! Load balancing and failure detection end to end: three real origins
//! behind the real binary under a steady, bounded load of idempotent GETs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use edge_test_support::{EdgeProcess, Origin};

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
