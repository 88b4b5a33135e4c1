//! The disk tier end to end: the real binary with a real store directory,
//! filled past its memory budget, restarted, and given damaged files.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use edge_test_support::{EdgeProcess, Origin, wait_until};

const OBJECTS: usize = 20;
const OBJECT_SIZE: usize = 100 * 1024;

fn path(i: usize) -> String {
    format!("/obj{i}?size={OBJECT_SIZE}&header=Cache-Control:max-age=3600")
}

/// An edge with 1 MiB of memory (about 9 objects of 100 KiB) over a disk tier.
fn edge_config(origin: &Origin, disk: &Path) -> String {
    format!(
        r#"
[node]
id = "edge-test"
workers = 2
[admin]
listen = "127.0.0.1:0"
[[listeners]]
addr = "127.0.0.1:0"
[cache]
memory = "1MiB"
max_object_size = "256KiB"
disk = {{ path = "{}", size = "64MiB" }}
[[sites]]
hosts = ["*"]
pool = "origin"
[pools.origin]
endpoints = ["{}"]
"#,
        disk.display(),
        origin.addr()
    )
}

/// Object files in the store (not temp files).
fn object_files(disk: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(disk.join("objects")).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_none_or(|e| e != "tmp") {
                files.push(file);
            }
        }
    }
    files
}

/// Gets every object, checking each body byte; returns the Cache-Status values.
async fn get_all(edge: &EdgeProcess) -> Vec<String> {
    let mut statuses = Vec::new();
    for i in 0..OBJECTS {
        let answer = get(edge.addr(), &path(i)).await;
        assert_eq!(answer.status(), 200, "object {i}");
        assert_eq!(answer.body.len(), OBJECT_SIZE, "object {i}");
        assert_pattern(&answer.body, 0);
        statuses.push(answer.header("cache-status").unwrap_or_default().to_owned());
    }
    statuses
}

fn count(statuses: &[String], needle: &str) -> usize {
    statuses.iter().filter(|s| s.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_past_the_memory_budget_hit_from_disk_and_survive_restart() {
    let origin = Origin::start();
    let disk = tempfile::tempdir().unwrap();
    let config = edge_config(&origin, disk.path());
    let edge = EdgeProcess::start(edge_bin(), &config);

    let first = get_all(&edge).await;
    assert_eq!(count(&first, "fwd=uri-miss"), OBJECTS, "{first:?}");
    assert!(
        wait_until(Duration::from_secs(10), || object_files(disk.path()).len()
            == OBJECTS),
        "every object written through to disk"
    );
    let second = get_all(&edge).await;
    assert_eq!(origin.total_hits(), OBJECTS, "no refetch: {second:?}");
    assert!(
        count(&second, "detail=disk") > 0,
        "objects evicted from memory hit from disk: {second:?}"
    );
    assert!(
        count(&second, "detail=memory") > 0,
        "recent ones hit from memory: {second:?}"
    );
    drop(edge);

    // A new process over the same directory: every object hits, from disk.
    let edge = EdgeProcess::start(edge_bin(), &config);
    let after_restart = get_all(&edge).await;
    assert_eq!(
        origin.total_hits(),
        OBJECTS,
        "zero origin requests after restart"
    );
    assert_eq!(
        count(&after_restart, "edge-test; hit"),
        OBJECTS,
        "{after_restart:?}"
    );
    assert_eq!(
        count(&after_restart, "detail=disk"),
        OBJECTS,
        "memory starts empty: {after_restart:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_object_file_is_dropped_and_refetched_never_served() {
    let origin = Origin::start();
    let disk = tempfile::tempdir().unwrap();
    let config = edge_config(&origin, disk.path());
    let edge = EdgeProcess::start(edge_bin(), &config);
    get_all(&edge).await;
    assert!(wait_until(Duration::from_secs(10), || {
        object_files(disk.path()).len() == OBJECTS
    }));
    drop(edge);

    // Flip one body byte in every stored object (the headers stay valid,
    // so the start-up scan still indexes them).
    let damaged = object_files(disk.path());
    for file in &damaged {
        let mut bytes = std::fs::read(file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(file, bytes).unwrap();
    }
    let edge = EdgeProcess::start(edge_bin(), &config);
    // get_all checks every byte: the damaged copies were never served.
    let statuses = get_all(&edge).await;
    assert_eq!(
        origin.total_hits(),
        2 * OBJECTS,
        "each damaged object refetched once: {statuses:?}"
    );
    assert_eq!(count(&statuses, "fwd=uri-miss"), OBJECTS, "{statuses:?}");
    // The refetched objects are written again, whole and valid: the next
    // restart serves them all from disk.
    assert!(wait_until(Duration::from_secs(10), || {
        object_files(disk.path()).len() == OBJECTS
    }));
    drop(edge);
    let edge = EdgeProcess::start(edge_bin(), &config);
    let statuses = get_all(&edge).await;
    assert_eq!(origin.total_hits(), 2 * OBJECTS, "{statuses:?}");
    assert_eq!(count(&statuses, "detail=disk"), OBJECTS, "{statuses:?}");
}
