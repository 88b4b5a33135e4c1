//! `edge demo` end to end: it starts, proxies its sample origins, and stops
//! cleanly on Ctrl-C (SIGINT).

mod common;

use std::time::Duration;

use common::*;
use edge_test_support::EdgeProcess;

#[tokio::test]
async fn demo_serves_its_catalogue_and_stops_on_ctrl_c() {
    let mut demo = EdgeProcess::start_demo(edge_bin());
    // The tour follows the `ready` line, so it may still be on its way.
    let printed = edge_test_support::wait_until(Duration::from_secs(10), || {
        demo.output().contains("curl -i http://")
    });
    assert!(printed, "the tour is printed:\n{}", demo.output());

    let mut origins = Vec::new();
    for _ in 0..2 {
        let time = get(demo.addr(), "/api/time").await;
        assert_eq!(time.status(), 200);
        let via: Vec<&str> = time
            .head
            .headers
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            via,
            ["1.1 shield-demo", "1.1 edge-demo"],
            "through the shield"
        );
        origins.push(time.header("x-origin").unwrap().to_owned());
    }
    origins.sort();
    assert_eq!(
        origins,
        ["a", "b"],
        "no-store answers rotate over both origins"
    );

    let first = get(demo.addr(), "/hello.txt").await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.header("cache-status"),
        Some("shield-demo; fwd=uri-miss; stored, edge-demo; fwd=uri-miss; stored"),
        "one member per hop"
    );
    let second = get(demo.addr(), "/hello.txt").await;
    assert!(
        second
            .header("cache-status")
            .unwrap()
            .contains("edge-demo; hit"),
        "{:?}",
        second.header("cache-status")
    );
    assert!(second.header("age").is_some());
    assert_eq!(second.text(), first.text(), "the hit is the stored answer");

    let mut sender = http1(demo.addr()).await;
    let large = sender
        .send_request(request("GET", "/large.bin").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(drain_len(large.into_body()).await, 64 * 1024 * 1024);

    demo.signal(libc::SIGINT);
    let status = tokio::task::spawn_blocking(move || demo.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
