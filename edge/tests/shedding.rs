//! Load shedding end to end: an origin that slows to 1 s per request under
//! a bounded high-concurrency load gets its misses shed with a fast 503,
//! cache hits keep being served, and the limit recovers with the origin.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use edge_test_support::{EdgeProcess, Origin};

/// A slow miss; each request its own URL, so none waits on another's fetch.
fn slow(client: usize, n: usize) -> String {
    format!("/slow/{client}/{n}?delay=1000&header=Cache-Control:no-store")
}
const FAST: &str = "/fast?header=Cache-Control:no-store";
const HOT: &str = "/hot?size=100&header=Cache-Control:max-age=600";

/// The pool's current adaptive limit, from `/metrics`.
async fn limit(edge: &EdgeProcess) -> f64 {
    metric(
        edge,
        "edge_upstream_concurrency_limit",
        &[("pool", "origin")],
    )
    .await
    .expect("the limit gauge is exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_gets_its_misses_shed_fast_while_hits_keep_flowing() {
    let origin = Origin::start();
    let edge = EdgeProcess::start(
        edge_bin(),
        &config(
            &[origin.addr()],
            "adaptive_concurrency = { initial = 20, min = 2, max = 200 }\nresponse_timeout = \"5s\"",
        ),
    );
    assert_eq!(get(edge.addr(), HOT).await.status(), 200);
    // A baseline: the origin answers in about a millisecond.
    for _ in 0..50 {
        assert_eq!(get(edge.addr(), FAST).await.status(), 200);
    }

    // 64 clients ask for slow misses for 3 s (bounded); one client keeps
    // asking for a cached object.
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow_clients = Vec::new();
    for client in 0..64 {
        let (addr, stop) = (edge.addr(), stop.clone());
        slow_clients.push(tokio::spawn(async move {
            let mut shed = Vec::new();
            let mut served = 0;
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                let answer = get(addr, &slow(client, n)).await;
                match answer.status() {
                    200 => served += 1,
                    503 => {
                        assert_eq!(answer.header("retry-after"), Some("1"));
                        shed.push(started.elapsed());
                        // Pace the shed client a little, as a real one would.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            (shed, served)
        }));
    }
    let hits = tokio::spawn({
        let (addr, stop) = (edge.addr(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let answer = get(addr, HOT).await;
                assert_eq!(answer.status(), 200, "hits keep being served");
                assert!(answer.header("cache-status").unwrap().contains("hit"));
                n += 1;
            }
            n
        }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = limit(&edge).await;
    stop.store(true, Ordering::Relaxed);
    let mut shed = Vec::new();
    let mut served = 0;
    for client in slow_clients {
        let (s, n) = client.await.unwrap();
        shed.extend(s);
        served += n;
    }
    let hits = hits.await.unwrap();
    assert!(hits > 50, "{hits} hits served during the overload");
    assert!(shed.len() > 100, "misses were shed: {}", shed.len());
    assert!(served > 0, "the limit still lets some through");
    shed.sort();
    let p99 = shed[shed.len() * 99 / 100];
    assert!(p99 < Duration::from_millis(50), "p99 of the 503s: {p99:?}");
    assert!(during < 20.0, "the limit came down from 20: {during}");

    // The origin recovers: the limit climbs back and nothing is shed.
    let recovered_at = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all_ok = true;
        for _ in 0..50 {
            all_ok &= get(edge.addr(), FAST).await.status() == 200;
        }
        if all_ok && limit(&edge).await > during {
            break;
        }
        assert!(
            Instant::now() < recovered_at,
            "the limit recovers with the origin"
        );
    }
}
