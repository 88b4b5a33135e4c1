//! `POST /purge` on the admin API end to end: by URL and by tag, hard and
//! soft, guarded by the admin token, in memory and on disk, across restarts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use edge_test_support::{EdgeProcess, Origin, wait_until};

const TOKEN: &str = "s3cret";

fn edge_config(origin: &Origin, disk: &Path) -> String {
    let tables = format!(
        "[cache]\ndisk = {{ path = \"{}\", size = \"16MiB\" }}",
        disk.display()
    );
    config_with(&[origin.addr()], &tables, "").replace(
        "listen = \"127.0.0.1:0\"\n\n",
        &format!("listen = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n"),
    )
}

/// `POST /purge?<query>` with `token`; returns (status, body).
async fn purge(edge: &EdgeProcess, query: &str, token: Option<&str>) -> (u16, String) {
    let mut req = request("POST", &format!("/purge?{query}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let answer = send(edge.admin(), req.body(empty()).unwrap()).await;
    (answer.status(), answer.text())
}

/// The purge query for the object at `path` as the test clients name it
/// (they send Host `example.com`).
fn url_query(path: &str, soft: bool) -> String {
    let url = format!("http://example.com{path}");
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("url", &url);
    if soft {
        query.append_pair("soft", "1");
    }
    query.finish()
}

fn cache_status(answer: &Answer) -> String {
    answer.header("cache-status").unwrap_or_default().to_owned()
}

/// Gets `path` and returns its Cache-Status, checking a 200.
async fn fetch(edge: &EdgeProcess, path: &str) -> String {
    let answer = get(edge.addr(), path).await;
    assert_eq!(answer.status(), 200, "{path}");
    cache_status(&answer)
}

/// Waits until `path` is on disk (written through) by restarting nothing:
/// the disk directory holds one object file per stored object.
fn wait_for_disk_objects(disk: &Path, n: usize) {
    let count = || {
        std::fs::read_dir(disk.join("objects"))
            .map(|dirs| {
                dirs.flatten()
                    .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
                    .filter(|f| f.path().extension().is_none_or(|e| e != "tmp"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || count() >= n),
        "{n} objects written to disk"
    );
}

const A: &str = "/a?header=Cache-Control:max-age=3600&etag=a1&header=Surrogate-Key:all%20product-1";
const B: &str = "/b?header=Cache-Control:max-age=3600&etag=b1&header=Cache-Tag:product-2,all";
const C: &str = "/c?header=Cache-Control:max-age=3600&etag=c1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_url_and_tag_hard_and_soft_need_the_token() {
    let origin = Origin::start();
    let disk = tempfile::tempdir().unwrap();
    let edge = EdgeProcess::start(edge_bin(), &edge_config(&origin, disk.path()));
    for path in [A, B, C] {
        assert!(fetch(&edge, path).await.contains("stored"));
        assert!(fetch(&edge, path).await.contains("hit"));
    }

    // The token guards it.
    let query = url_query(C, false);
    assert_eq!(purge(&edge, &query, None).await.0, 401);
    assert_eq!(purge(&edge, &query, Some("wrong")).await.0, 401);
    assert_eq!(origin.hits("/c"), 1, "nothing purged without the token");

    // Hard purge by URL: the next request is a miss.
    let (status, body) = purge(&edge, &query, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"purged\":1"), "{body}");
    assert!(fetch(&edge, C).await.contains("fwd=uri-miss"));
    assert_eq!(origin.hits("/c"), 2);

    // Soft purge by URL: still stored, but revalidated before reuse (304).
    let (status, body) = purge(&edge, &url_query(C, true), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let revalidated = fetch(&edge, C).await;
    assert!(
        revalidated.contains("fwd=stale; fwd-status=304"),
        "{revalidated}"
    );
    assert!(
        fetch(&edge, C).await.contains("hit"),
        "fresh again after the 304"
    );

    // By tag: both tagged objects go (Surrogate-Key and Cache-Tag), C stays.
    let (status, body) = purge(&edge, "tag=all", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"purged\":2"), "{body}");
    assert!(fetch(&edge, A).await.contains("fwd=uri-miss"));
    assert!(fetch(&edge, B).await.contains("fwd=uri-miss"));
    assert!(fetch(&edge, C).await.contains("hit"));

    // A soft tag purge: revalidation on next use.
    let (status, body) = purge(&edge, "tag=product-2&soft=1", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(fetch(&edge, B).await.contains("fwd=stale; fwd-status=304"));

    // Bad queries are refused with a reason.
    let (status, body) = purge(&edge, "color=red", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown parameter"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_survive_a_restart() {
    let origin = Origin::start();
    let disk = tempfile::tempdir().unwrap();
    let config = edge_config(&origin, disk.path());
    let edge = EdgeProcess::start(edge_bin(), &config);
    for path in [A, B, C] {
        fetch(&edge, path).await;
    }
    wait_for_disk_objects(disk.path(), 3);

    assert_eq!(purge(&edge, &url_query(C, false), Some(TOKEN)).await.0, 200);
    assert_eq!(purge(&edge, "tag=product-1", Some(TOKEN)).await.0, 200);
    assert_eq!(
        purge(&edge, "tag=product-2&soft=1", Some(TOKEN)).await.0,
        200
    );
    drop(edge);

    let edge = EdgeProcess::start(edge_bin(), &config);
    let hits_before = origin.total_hits();
    // Hard-purged by URL and by tag: gone from disk too.
    assert!(fetch(&edge, C).await.contains("fwd=uri-miss"));
    assert!(fetch(&edge, A).await.contains("fwd=uri-miss"));
    // Soft-purged: still on disk, but stale, so revalidated.
    let b = fetch(&edge, B).await;
    assert!(b.contains("fwd=stale; fwd-status=304"), "{b}");
    assert_eq!(origin.total_hits(), hits_before + 3);
}

#[tokio::test]
async fn the_purge_method_works_only_from_allowed_networks() {
    let origin = Origin::start();
    let purge_method = |edge: &EdgeProcess, path: &str| {
        send(edge.addr(), request("PURGE", path).body(empty()).unwrap())
    };
    // Off by default.
    let edge = EdgeProcess::start(edge_bin(), &config(&[origin.addr()], ""));
    assert_eq!(purge_method(&edge, C).await.status(), 405);
    drop(edge);

    // Allowed from another network only: 403 from loopback.
    let edge = EdgeProcess::start(
        edge_bin(),
        &config_with(
            &[origin.addr()],
            "[cache]\npurge_from = [\"10.0.0.0/8\"]",
            "",
        ),
    );
    assert_eq!(purge_method(&edge, C).await.status(), 403);
    drop(edge);

    let edge = EdgeProcess::start(
        edge_bin(),
        &config_with(
            &[origin.addr()],
            "[cache]\npurge_from = [\"127.0.0.1/32\"]",
            "",
        ),
    );
    assert!(fetch(&edge, C).await.contains("stored"));
    assert!(fetch(&edge, C).await.contains("hit"));
    let answer = purge_method(&edge, C).await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert!(answer.text().contains("\"purged\":1"), "{}", answer.text());
    assert!(fetch(&edge, C).await.contains("fwd=uri-miss"));
}
