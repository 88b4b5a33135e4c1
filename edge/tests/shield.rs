//! The origin-shield tier end to end: two edge nodes fetch through two
//! shield nodes (all real `edge` processes) in front of one origin. The
//! origin sees one request per object however many edges miss on it; a
//! dead shield's objects move to the other; with the whole tier down the
//! edges fetch from the origin directly and no request fails.

mod common;

use std::net::SocketAddr;

use common::*;
use edge_test_support::{EdgeProcess, Origin};

/// A shield node `id` in front of `origin`.
fn shield(id: &str, origin: &Origin) -> EdgeProcess {
    let text = config(&[origin.addr()], "").replace(
        "id = \"edge-test\"",
        &format!("id = \"{id}\"\nrole = \"shield\""),
    );
    EdgeProcess::start(edge_bin(), &text)
}

/// An edge node `id` whose site fetches through `shields`, hashed by URL.
fn edge(id: &str, origin: &Origin, shields: &[SocketAddr]) -> EdgeProcess {
    let shields: Vec<String> = shields.iter().map(|s| format!("\"{s}\"")).collect();
    let text = config(&[origin.addr()], "")
        .replace("id = \"edge-test\"", &format!("id = \"{id}\""))
        .replace(
            "pool = \"origin\"\n",
            "pool = \"origin\"\nshield = \"shields\"\n",
        )
        + &format!(
            "\n[pools.shields]\nendpoints = [{}]\nbalance = \"hash\"\n",
            shields.join(", ")
        );
    EdgeProcess::start(edge_bin(), &text)
}

/// A cacheable object's path.
fn object(name: &str) -> String {
    format!("/{name}?header=Cache-Control:max-age%3D300")
}

/// The sum of `edge_shield_fallbacks_total` samples with `reason`.
async fn fallbacks(edge: &EdgeProcess, reason: &str) -> f64 {
    metric(edge, "edge_shield_fallbacks_total", &[("reason", reason)])
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_fetches_each_object_from_the_origin_once() {
    let origin = Origin::start();
    let shields = [shield("shield-1", &origin), shield("shield-2", &origin)];
    let addrs = [shields[0].addr(), shields[1].addr()];
    let edges = [
        edge("edge-1", &origin, &addrs),
        edge("edge-2", &origin, &addrs),
    ];
    let status = get(shields[0].admin(), "/status").await.text();
    assert!(status.contains("\"role\":\"shield\""), "{status}");

    let mut via_shield = [0, 0];
    for i in 0..24 {
        let path = object(&format!("fleet-{i}"));
        for (round, edge) in edges.iter().chain(&edges).enumerate() {
            let answer = get(edge.addr(), &path).await;
            assert_eq!(answer.status(), 200, "{path} round {round}");
            assert_eq!(answer.text(), format!("origin /fleet-{i}\n"));
            let status = answer.header("cache-status").unwrap_or_default().to_owned();
            if round == 1 {
                // edge-2's first ask: a miss at edge-2, a hit at the shield
                // edge-1 went through.
                let shield = ["shield-1", "shield-2"]
                    .iter()
                    .position(|s| status.starts_with(&format!("{s}; hit")))
                    .unwrap_or_else(|| panic!("a shield hit first: {status}"));
                via_shield[shield] += 1;
                assert!(status.contains("edge-2; fwd=uri-miss"), "{status}");
            }
        }
        assert_eq!(
            origin.hits(&format!("/fleet-{i}")),
            1,
            "{path}: once per fleet"
        );
    }
    assert!(
        via_shield.iter().all(|&n| n > 0),
        "objects spread over both shields: {via_shield:?}"
    );

    // Requests whose answers no cache shares skip the shield tier.
    let post = send(
        edges[0].addr(),
        request("POST", "/form").body(text("x=1")).unwrap(),
    )
    .await;
    assert_eq!(post.status(), 200);
    let via = post.header("via").unwrap_or_default();
    assert!(
        !via.contains("shield"),
        "POST went straight to the origin: {via}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_route_around_dead_shields_without_a_failed_request() {
    let origin = Origin::start();
    let [mut one, mut two] = [shield("shield-1", &origin), shield("shield-2", &origin)];
    let edge = edge("edge-1", &origin, &[one.addr(), two.addr()]);

    // One shield down: its objects go through the other.
    one.signal(libc::SIGKILL);
    let _ = one.wait_exit(std::time::Duration::from_secs(10));
    for i in 0..16 {
        let answer = get(edge.addr(), &object(&format!("half-{i}"))).await;
        assert_eq!(answer.status(), 200, "half-{i}");
        let status = answer.header("cache-status").unwrap_or_default();
        assert!(
            status.starts_with("shield-2;"),
            "via the live shield: {status}"
        );
    }
    assert_eq!(fallbacks(&edge, "unreachable").await, 0.0);

    // The whole tier down: the edge fetches from the origin itself.
    two.signal(libc::SIGKILL);
    let _ = two.wait_exit(std::time::Duration::from_secs(10));
    for i in 0..8 {
        let path = format!("/down-{i}");
        let answer = get(edge.addr(), &object(&format!("down-{i}"))).await;
        assert_eq!(answer.status(), 200, "{path}");
        let status = answer.header("cache-status").unwrap_or_default();
        assert!(
            status.starts_with("edge-1; fwd=uri-miss"),
            "straight from the origin: {status}"
        );
        assert_eq!(origin.hits(&path), 1);
    }
    assert!(fallbacks(&edge, "unreachable").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_errors_pass_through_shields_and_shield_gateway_errors_go_around() {
    let origin = Origin::start();
    let good = shield("shield-1", &origin);
    let front = edge("edge-1", &origin, &[good.addr()]);

    // The origin's own 500s and 502s come back as they are, and do not
    // count against the shield that relayed them.
    for i in 0..12 {
        let status = if i % 2 == 0 { 500 } else { 502 };
        let answer = get(front.addr(), &format!("/err-{i}?status={status}")).await;
        assert_eq!(answer.status(), status);
        assert_eq!(
            origin.hits(&format!("/err-{i}")),
            1,
            "no second try around the shield"
        );
    }
    assert_eq!(fallbacks(&front, "gateway_error").await, 0.0);
    let status = get(front.admin(), "/status").await.text();
    assert!(
        !status.contains("\"ejected\":true"),
        "the shield stays in: {status}"
    );
    assert!(
        !status.contains("\"breaker\":\"open\""),
        "its breaker stays closed: {status}"
    );

    // A shield whose origin is unreachable says so (Proxy-Status), and the
    // edge, which can reach the origin, goes around it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let cut_off = EdgeProcess::start(
        edge_bin(),
        &config(&[dead_addr], "")
            .replace("id = \"edge-test\"", "id = \"shield-2\"\nrole = \"shield\""),
    );
    let around = edge("edge-2", &origin, &[cut_off.addr()]);
    let direct = get(cut_off.addr(), "/probe").await;
    assert_eq!(direct.status(), 502);
    assert!(
        direct
            .header("proxy-status")
            .unwrap_or_default()
            .contains("error="),
        "{:?}",
        direct.header("proxy-status")
    );
    let answer = get(around.addr(), &object("around")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(origin.hits("/around"), 1);
    assert_eq!(fallbacks(&around, "gateway_error").await, 1.0);
}
