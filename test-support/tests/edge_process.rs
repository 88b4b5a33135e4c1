//! EdgeProcess against a fake `edge`: a shell script that prints edge's
//! startup announcement and then behaves as each test needs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use edge_test_support::{EdgeProcess, wait_until};
use tempfile::TempDir;

/// Generous: only a broken helper takes this long.
const DEADLINE: Duration = Duration::from_secs(10);

const ANNOUNCE: &str = "\
echo 'listener 0: http://127.0.0.1:1234'
echo 'listener 1: http://[::1]:2345'
echo 'admin: http://127.0.0.1:5678'
echo ready
";

/// Writes an executable `edge` script with `body` after the shebang.
fn fake_edge(body: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("edge");
    fs::write(&bin, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

fn is_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists; no memory involved.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn parses_announced_addresses_and_passes_the_config() {
    let (_dir, bin) = fake_edge(&format!(
        "echo \"args: $*\"\necho \"config: $(cat \"$3\")\"\necho 'log: listener 9 is not an announcement'\n\
         echo 'warming up' >&2\n{ANNOUNCE}exec sleep 30\n"
    ));
    let edge = EdgeProcess::start(&bin, "answer = 42\n");

    let listeners: Vec<String> = edge.listeners().iter().map(|a| a.to_string()).collect();
    assert_eq!(listeners, ["127.0.0.1:1234", "[::1]:2345"]);
    assert_eq!(edge.addr().to_string(), "127.0.0.1:1234");
    assert_eq!(edge.admin().to_string(), "127.0.0.1:5678");

    let config = edge.config_path();
    assert_eq!(config.file_name().unwrap(), "edge.toml");
    assert_eq!(fs::read_to_string(&config).unwrap(), "answer = 42\n");
    let output = edge.output();
    assert!(
        output.contains(&format!("args: run --config {}", config.display())),
        "{output}"
    );
    assert!(output.contains("config: answer = 42"), "{output}");
    // stderr is drained in the background; it arrives independently.
    assert!(wait_until(DEADLINE, || edge
        .output()
        .contains("warming up")));
    assert!(edge.rss_kib() > 0);
}

#[test]
fn signal_and_wait_exit_report_how_edge_ended() {
    let (_dir, bin) = fake_edge(&format!("{ANNOUNCE}exec sleep 30\n"));
    let mut edge = EdgeProcess::start(&bin, "");
    assert_eq!(
        edge.wait_exit(Duration::from_millis(50)),
        None,
        "still running"
    );

    edge.signal(libc::SIGTERM);
    let status = edge.wait_exit(DEADLINE).expect("exits on SIGTERM");
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    // Asking again returns the recorded status.
    assert_eq!(edge.wait_exit(Duration::ZERO), Some(status));
}

#[test]
fn output_written_while_exiting_is_kept() {
    let (_dir, bin) = fake_edge(&format!(
        "trap 'kill $!; echo draining; echo bye >&2; exit 7' TERM\n{ANNOUNCE}\
         sleep 30 </dev/null >/dev/null 2>&1 &\nwait\n"
    ));
    let mut edge = EdgeProcess::start(&bin, "");
    edge.signal(libc::SIGTERM);
    let status = edge.wait_exit(DEADLINE).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(7));
    let output = edge.output();
    assert!(
        output.contains("draining") && output.contains("bye"),
        "{output}"
    );
}

#[test]
fn drop_kills_and_reaps_a_running_edge() {
    let (_dir, bin) = fake_edge(&format!("trap '' TERM\n{ANNOUNCE}exec sleep 30\n"));
    let edge = EdgeProcess::start(&bin, "");
    let pid = edge.pid();
    assert!(is_alive(pid));
    drop(edge);
    // Reaped, not a zombie: the pid no longer exists at all.
    assert!(!is_alive(pid));
}

#[test]
fn early_exit_panics_with_the_output() {
    let (_dir, bin) = fake_edge("echo 'config error: bad listener' >&2\nexit 3\n");
    let err = std::panic::catch_unwind(|| EdgeProcess::start(&bin, "nonsense"))
        .expect_err("start must fail when edge exits");
    let msg = err.downcast_ref::<String>().expect("panic message");
    assert!(msg.contains("stdout closed before `ready`"), "{msg}");
    assert!(msg.contains("config error: bad listener"), "{msg}");
    assert!(msg.contains("exit status: 3"), "{msg}");
}

#[test]
fn gap_in_listener_indexes_panics() {
    let (_dir, bin) =
        fake_edge("echo 'listener 1: http://127.0.0.1:1'\necho ready\nexec sleep 30\n");
    let err = std::panic::catch_unwind(|| EdgeProcess::start(&bin, ""))
        .expect_err("listener 0 is missing");
    let msg = err.downcast_ref::<String>().expect("panic message");
    assert!(msg.contains("not contiguous"), "{msg}");
}
