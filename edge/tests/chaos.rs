//! Fault injection end to end: configured and runtime rules on a site.

mod common;

use common::*;
use edge_test_support::{EdgeProcess, Origin};

const PATH: &str = "/chaos?header=Cache-Control:no-store";

/// `count` GETs on one keep-alive connection, with `header` when given;
/// returns how many got each of 200 and 503.
async fn statuses(
    edge: &EdgeProcess,
    count: usize,
    header: Option<(&str, &str)>,
) -> (usize, usize) {
    let mut sender = http1(edge.addr()).await;
    let (mut ok, mut unavailable) = (0, 0);
    for _ in 0..count {
        let mut req = request("GET", PATH);
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        sender.ready().await.expect("connection stays usable");
        let answer = collect(
            sender
                .send_request(req.body(empty()).unwrap())
                .await
                .unwrap(),
        )
        .await;
        match answer.status() {
            200 => ok += 1,
            503 => unavailable += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (ok, unavailable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_rule_aborts_about_its_share_of_matching_requests() {
    let origin = Origin::start();
    let config = config(&[origin.addr()], "").replace(
        "pool = \"origin\"\n",
        "pool = \"origin\"\nfaults = { abort_percent = 30.0, abort_status = 503, header = \"x-edge-fault: on\" }\n",
    );
    let edge = EdgeProcess::start(edge_bin(), &config);

    let (ok, aborted) = statuses(&edge, 1000, Some(("x-edge-fault", "on"))).await;
    // Binomial(1000, 0.3): mean 300, sd 14.5; +-5 sd fails once in ~2 million runs.
    assert!((228..=372).contains(&aborted), "{aborted} of 1000 aborted");
    assert_eq!(ok + aborted, 1000);
    assert_eq!(
        origin.hits("/chaos"),
        ok,
        "aborted requests never reach the origin"
    );

    // Requests without the header are untouched.
    assert_eq!(statuses(&edge, 100, None).await, (100, 0));
    assert_eq!(
        statuses(&edge, 20, Some(("x-edge-fault", "off"))).await,
        (20, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_rules_are_set_and_removed_through_the_admin_api() {
    let origin = Origin::start();
    let config = config(&[origin.addr()], "").replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n",
    );
    let edge = EdgeProcess::start(edge_bin(), &config);
    let admin = |method: &str, query: &str, token: bool| {
        let mut req = request(method, &format!("/faults{query}"));
        if token {
            req = req.header("authorization", "Bearer s3cret");
        }
        send(edge.admin(), req.body(empty()).unwrap())
    };

    assert_eq!(
        statuses(&edge, 20, None).await,
        (20, 0),
        "no faults by default"
    );
    let unauthorized = admin("POST", "?site=example.com&abort_percent=100", false).await;
    assert_eq!(unauthorized.status(), 401);

    // 100% resets: the connection closes without an answer.
    let set = admin(
        "POST",
        "?site=example.com&abort_percent=100&abort=reset&ttl=60s",
        true,
    )
    .await;
    assert_eq!(set.status(), 200, "{}", set.text());
    assert!(set.text().contains("\"abort\":\"reset\""), "{}", set.text());
    let mut sender = http1(edge.addr()).await;
    let reset = sender
        .send_request(request("GET", PATH).body(empty()).unwrap())
        .await;
    assert!(reset.is_err(), "the connection was reset, not answered");

    // 100% 503s, visible in GET /faults and in the metrics.
    let set = admin(
        "POST",
        "?site=example.com&abort_percent=100&abort_status=503",
        true,
    )
    .await;
    assert_eq!(set.status(), 200, "{}", set.text());
    assert_eq!(statuses(&edge, 10, None).await, (0, 10));
    let listed = admin("GET", "", false).await.text();
    assert!(
        listed.contains("\"active\":true") && listed.contains("\"source\":\"runtime\""),
        "{listed}"
    );
    assert_eq!(
        metric(&edge, "edge_faults_injected_total", &[("kind", "abort")]).await,
        Some(10.0)
    );

    // Removing the rule restores full success.
    let removed = admin("DELETE", "?site=example.com", true).await;
    assert_eq!(removed.status(), 200);
    assert!(
        removed.text().contains("\"active\":false"),
        "{}",
        removed.text()
    );
    assert_eq!(statuses(&edge, 50, None).await, (50, 0));

    let bad = admin("POST", "?site=example.com&abort_percent=250", true).await;
    assert_eq!(bad.status(), 400, "{}", bad.text());
}
