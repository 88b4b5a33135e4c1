//! Process lifecycle end to end: `edge check`, the admin endpoints, and
//! graceful shutdown (acceptance 7 and 8 of the foundation issue).

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use edge_test_support::wait_until;

/// Runs `edge check` on `toml` written to a temp file; returns (exit code, stderr, file path).
fn check(toml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(edge_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

const GOOD: &str = r#"[[listeners]]
addr = "127.0.0.1:0"

[[sites]]
hosts = ["*"]
pool = "origin"

[pools.origin]
endpoints = ["127.0.0.1:9000"]
"#;

#[test]
fn check_accepts_good_files_and_names_file_line_and_key_of_bad_ones() {
    let (code, stderr, _) = check(GOOD);
    assert_eq!(code, 0, "{stderr}");

    let cases = [
        (
            GOOD.replace("endpoints =", "endpointz = [\"x:1\"]\nendpoints ="),
            ":9:1: pools.origin.endpointz: unknown field `endpointz`",
        ),
        (
            GOOD.replace("pool = \"origin\"", "pool = \"missing\""),
            ":6:8: sites[0].pool: unknown pool \"missing\"",
        ),
        (
            format!("{GOOD}connect_timeout = \"3 parsecs\"\n"),
            ":10:19: pools.origin.connect_timeout: invalid duration \"3 parsecs\"",
        ),
    ];
    for (toml, expected) in cases {
        let (code, stderr, path) = check(&toml);
        assert_eq!(code, 2, "{toml}");
        assert!(
            stderr.starts_with(&format!("{path}{expected}")),
            "expected {path}{expected}…, got {stderr}"
        );
    }
}

#[test]
fn shipped_example_config_is_valid() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/edge.example.toml"
    );
    let (code, stderr, _) = check(&std::fs::read_to_string(example).unwrap());
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, GOOD.replace("[[listeners]]", "[[listener]]")).unwrap();
    let out = Command::new(edge_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":1:3: listener: unknown field"));
}

#[test]
fn version_is_printed() {
    let out = Command::new(edge_bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("edge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let (origin, mut edge) = edge_with_origin("");
    let admin = edge.admin();
    assert_eq!(get(admin, "/healthz").await.status(), 200);
    assert_eq!(get(admin, "/readyz").await.status(), 200);

    let in_flight = tokio::spawn(get(edge.addr(), "/slow?hold=drain&size=200000"));
    assert!(
        origin
            .wait_for_hits_async("/slow", 1, Duration::from_secs(10))
            .await
    );

    edge.signal(libc::SIGTERM);
    let addr = edge.addr();
    let refused = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(addr).is_err()
        })
    })
    .await
    .unwrap();
    assert!(refused, "new connections are still accepted after SIGTERM");
    let ready = get(admin, "/readyz").await;
    assert_eq!((ready.status(), ready.text().as_str()), (503, "draining\n"));

    origin.release("drain");
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status(), 200);
    assert_eq!(
        finished.body.len(),
        200_000,
        "the in-flight response completed"
    );

    let status = tokio::task::spawn_blocking(move || {
        let status = edge.wait_exit(Duration::from_secs(15));
        (status, edge.output())
    })
    .await
    .unwrap();
    match status {
        (Some(status), _) => assert_eq!(status.code(), Some(0)),
        (None, output) => panic!("edge did not exit after draining:\n{output}"),
    }
}
