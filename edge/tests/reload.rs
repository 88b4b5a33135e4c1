//! Config reload under load: sites and pools change with `POST /reload`,
//! no request fails, and a broken file changes nothing.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use edge_test_support::{EdgeProcess, Origin};

/// `example.com` on pool `origin` over `main`; with `extra`, a site
/// `b.test` on pool `other` over it too.
fn config(main: SocketAddr, extra: Option<SocketAddr>) -> String {
    let mut text = format!(
        r#"
[node]
id = "edge-test"
workers = 2
[admin]
listen = "127.0.0.1:0"
[[listeners]]
addr = "127.0.0.1:0"
[[sites]]
hosts = ["example.com"]
pool = "origin"
[pools.origin]
endpoints = ["{main}"]
"#
    );
    if let Some(extra) = extra {
        text.push_str(&format!(
            "[[sites]]\nhosts = [\"b.test\"]\npool = \"other\"\n[pools.other]\nendpoints = [\"{extra}\"]\n"
        ));
    }
    text
}

async fn reload(edge: &EdgeProcess, text: &str) -> Answer {
    std::fs::write(edge.config_path(), text).unwrap();
    send(
        edge.admin(),
        request("POST", "/reload").body(empty()).unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_and_pools_change_under_load_without_a_failed_request() {
    let (a, b) = (Origin::start(), Origin::start());
    // The edge starts with the config whose listener uses port 0; later
    // files keep the same listeners, so the reload is allowed.
    let v1 = config(a.addr(), None);
    let v2 = config(b.addr(), Some(b.addr()));
    let edge = EdgeProcess::start(edge_bin(), &v1);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (addr, stop, failures, sent) =
            (edge.addr(), stop.clone(), failures.clone(), sent.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = get(addr, "/r?header=Cache-Control:no-store").await;
                sent.fetch_add(1, Ordering::Relaxed);
                if answer.status() != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(8);
    let mut round = 0;
    while Instant::now() < deadline {
        round += 1;
        let (text, expect_b) = if round % 2 == 1 {
            (&v2, true)
        } else {
            (&v1, false)
        };
        let answer = reload(&edge, text).await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        let b_site = get_host(edge.addr(), "/b?header=Cache-Control:no-store", "b.test").await;
        assert_eq!(
            b_site.status(),
            if expect_b { 200 } else { 421 },
            "round {round}"
        );
        if round == 3 {
            // A broken file mid-run: refused with edge check's message.
            let broken = reload(&edge, "[[sites]\nhosts = ").await;
            assert_eq!(broken.status(), 422, "{}", broken.text());
            assert!(broken.text().contains("edge.toml"), "{}", broken.text());
            let still = get_host(edge.addr(), "/b?header=Cache-Control:no-store", "b.test").await;
            assert_eq!(still.status(), 200, "the running config stays");
            // A node id change needs a restart: refused, nothing changes.
            let renamed = v2.replace("id = \"edge-test\"", "id = \"edge-renamed\"");
            let refused = reload(&edge, &renamed).await;
            assert_eq!(refused.status(), 422, "{}", refused.text());
            assert!(refused.text().contains("[node]"), "{}", refused.text());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) > 100, "the load ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed across reloads"
    );
    assert!(
        a.hits("/r") > 0 && b.hits("/r") > 0,
        "traffic followed the pool change"
    );
}
