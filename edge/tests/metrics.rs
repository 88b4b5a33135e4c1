//! `GET /metrics` on the admin API: it parses as the Prometheus text format
//! and the documented series move as traffic flows.

mod common;

use std::time::Duration;

use common::*;
use edge_test_support::{EdgeProcess, Origin};
use prometheus_parse::{Sample, Scrape, Value};

/// Scrapes `/metrics` and parses it; panics if it is not valid text format.
async fn scrape(edge: &EdgeProcess) -> Scrape {
    let answer = send(
        edge.admin(),
        request("GET", "/metrics").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        answer.header("content-type")
    );
    let text = answer.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of the sample `name` whose labels include all of `labels`
/// (0 when there is none yet).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s: &&Sample| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

fn has(scrape: &Scrape, name: &str) -> bool {
    scrape.samples.iter().any(|s| s.metric == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_hits_misses_and_bytes() {
    let (origin, edge) = edge_with_origin("");
    let path = "/m?size=1000&header=Cache-Control:max-age=60";
    let before = scrape(&edge).await;
    let hits = |s: &Scrape| {
        value(
            s,
            "edge_requests_total",
            &[
                ("cache", "hit"),
                ("status", "2xx"),
                ("protocol", "http/1.1"),
            ],
        )
    };
    let misses = |s: &Scrape| value(s, "edge_requests_total", &[("cache", "miss")]);

    assert_eq!(get(edge.addr(), path).await.status(), 200);
    assert_eq!(get(edge.addr(), path).await.status(), 200);
    assert_eq!(origin.hits("/m"), 1);
    // Requests are counted when their body ends, just after the client saw it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut after = scrape(&edge).await;
    while hits(&after) < hits(&before) + 1.0 {
        assert!(std::time::Instant::now() < deadline, "the hit is counted");
        after = scrape(&edge).await;
    }
    assert_eq!(hits(&after) - hits(&before), 1.0, "one hit");
    assert_eq!(misses(&after) - misses(&before), 1.0, "one miss");
    let lookups = |s: &Scrape, result| {
        value(
            s,
            "edge_cache_lookups_total",
            &[("tier", "memory"), ("result", result)],
        )
    };
    assert_eq!(lookups(&after, "hit") - lookups(&before, "hit"), 1.0);
    assert!(value(&after, "edge_response_bytes_total", &[("site", "*")]) >= 2000.0);
    assert!(value(&after, "edge_request_duration_seconds", &[("site", "*")]) >= 2.0);
    assert_eq!(
        value(&after, "edge_cache_objects", &[("tier", "memory")]),
        1.0
    );
    for name in [
        "edge_connections_total",
        "edge_connections_open",
        "edge_cache_bytes",
        "edge_cache_coalesce_total",
        "edge_upstream_endpoint_healthy",
        "edge_upstream_endpoint_breaker",
        "edge_upstream_requests_total",
        "edge_upstream_duration_seconds",
        "edge_upstream_retry_budget_exhausted_total",
    ] {
        assert!(has(&after, name), "{name} is exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_shows_in_the_endpoint_gauge() {
    let (good, sick) = (Origin::start(), Origin::start());
    let edge = EdgeProcess::start(
        edge_bin(),
        &config(
            &[good.addr(), sick.addr()],
            r#"balance = "round-robin"
outlier = { failures = 2, base_ejection = "30s", max_ejection_percent = 50 }
retries = 1"#,
        ),
    );
    let sick_label = sick.addr().to_string();
    let ejected = |s: &Scrape| {
        value(
            s,
            "edge_upstream_endpoint_ejected",
            &[("pool", "origin"), ("endpoint", &sick_label)],
        )
    };
    assert_eq!(ejected(&scrape(&edge).await), 0.0);
    sick.force_status(Some(503));
    for _ in 0..8 {
        let answer = get(edge.addr(), "/e?header=Cache-Control:no-store").await;
        assert_eq!(answer.status(), 200, "retried onto the good endpoint");
    }
    let after = scrape(&edge).await;
    assert_eq!(ejected(&after), 1.0, "the sick endpoint is ejected");
    assert_eq!(
        value(
            &after,
            "edge_upstream_ejections_total",
            &[("endpoint", &sick_label)]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "edge_upstream_requests_total",
            &[("endpoint", &sick_label), ("outcome", "server_error")]
        ) >= 2.0
    );
}

#[tokio::test]
async fn status_reports_the_node_pools_and_cache() {
    let (origin, edge) = edge_with_origin("");
    assert_eq!(
        get(edge.addr(), "/s?size=10&header=Cache-Control:max-age=60")
            .await
            .status(),
        200
    );
    let answer = send(
        edge.admin(),
        request("GET", "/status").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let status: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(status["node"], "edge-test");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["config_digest"].as_str().unwrap().len(), 16);
    assert_eq!(status["listeners"][0], format!("http://{}", edge.addr()));
    let endpoint = &status["pools"][0]["endpoints"][0];
    assert_eq!(endpoint["addr"], origin.addr().to_string());
    assert_eq!(endpoint["breaker"], "closed");
    assert_eq!(endpoint["available"], true);
    assert_eq!(status["cache"]["memory"]["objects"], 1);
    assert!(status["cache"]["disk"].is_null(), "no disk tier configured");
}
