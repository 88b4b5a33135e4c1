//! Runs the `wrk` load generator (Debian package `wrk`) for end-to-end
//! tests that want load from an HTTP client edge does not share code with.
//!
//! [`Wrk::start`] runs `wrk` for a fixed duration against one address with
//! `wrk/count.lua`, which cycles through the given `(host, path)` requests,
//! counts every answer outside 200..=299 and prints one line when the run
//! ends:
//!
//! ```text
//! wrk-summary requests=41230 responses=41230 non_2xx=0 first_non_2xx=0 connect=0 read=0 write=0 timeout=0 status=0 p99_us=5120 max_us=40211 duration_us=20001234
//! ```
//!
//! [`Wrk::wait`] parses that line and, as a cross-check, wrk's own
//! `Socket errors: …` and `Non-2xx or 3xx responses: N` lines, which wrk
//! prints only when there is something to report.
//!
//! wrk is not a Rust crate, so a machine may lack it: [`Wrk::available`]
//! lets a test skip with a clear message, unless `EDGE_TEST_REQUIRE_WRK`
//! says this machine (CI, which installs wrk in `.ci/run`) must run it.
//!
//! The trade-off: an external program to install, in exchange for load
//! that does not come from the hyper client edge itself is built on.

use std::fs::{self, File};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::wait_until;

/// The script wrk runs; see the module docs.
const SCRIPT: &str = include_str!("wrk/count.lua");

/// Set (to anything but empty or `0`) where wrk must be installed, so a
/// missing wrk fails the test instead of skipping it.
pub const REQUIRE_WRK_ENV: &str = "EDGE_TEST_REQUIRE_WRK";

/// How long past its duration wrk may take to exit: it stops its threads
/// at the deadline without waiting for answers, so anything beyond a few
/// milliseconds is a loaded machine; 30 s keeps even that from failing.
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// How a run loads the target.
#[derive(Debug, Clone, Copy)]
pub struct WrkLoad {
    /// `-d`: wrk stops by itself after this long (whole seconds).
    pub duration: Duration,
    /// `-c`: keepalive connections, spread over the threads.
    pub connections: u32,
    /// `-t`: wrk threads.
    pub threads: u32,
    /// `--timeout`: an answer slower than this counts as a timeout error
    /// (whole seconds).
    pub timeout: Duration,
}

/// Socket error counts, as wrk reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SocketErrors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
}

impl SocketErrors {
    /// All four added up.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// What a finished run reported.
#[derive(Debug, Clone)]
pub struct WrkReport {
    /// Requests completed (wrk's `summary.requests`).
    pub requests: u64,
    /// Answers the script's `response()` saw.
    pub responses: u64,
    /// Answers outside 200..=299.
    pub non_2xx: u64,
    /// The first such status, if any.
    pub first_non_2xx: Option<u16>,
    /// wrk's socket error counts (from `done()`'s summary).
    pub socket_errors: SocketErrors,
    /// wrk's count of statuses from 400 up.
    pub status_errors: u64,
    /// 99th percentile and highest latency.
    pub p99: Duration,
    pub max: Duration,
    /// How long wrk actually ran.
    pub duration: Duration,
    /// wrk's `Socket errors:` line, parsed, when it printed one.
    pub printed_socket_errors: Option<SocketErrors>,
    /// wrk's `Non-2xx or 3xx responses:` count, when it printed one.
    pub printed_non_2xx_or_3xx: Option<u64>,
    /// wrk's stdout and stderr, for failure messages.
    pub output: String,
}

/// A running wrk; killed and reaped on drop if still running.
pub struct Wrk {
    child: Child,
    status: Option<ExitStatus>,
    dir: TempDir,
    load: WrkLoad,
}

impl Wrk {
    /// Whether wrk can run here. When it is not installed: panics if
    /// [`REQUIRE_WRK_ENV`] is set, else prints why `test` is skipped to
    /// stderr and returns false.
    pub fn available(test: &str) -> bool {
        let installed = Command::new("wrk")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if installed {
            return true;
        }
        let required = std::env::var_os(REQUIRE_WRK_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        if required {
            panic!("{test}: wrk is not on PATH but {REQUIRE_WRK_ENV} is set (apt-get install wrk)");
        }
        // Straight to stderr: the test harness captures eprintln! from a
        // passing test, and a skip nobody sees looks like a pass.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipping: wrk not installed (apt-get install wrk)"
        );
        false
    }

    /// Starts `wrk` against `http://addr/`, cycling through `requests` as
    /// `(Host, path and query)` pairs; returns once the process runs.
    pub fn start(addr: SocketAddr, requests: &[(&str, &str)], load: WrkLoad) -> Wrk {
        assert!(!requests.is_empty(), "wrk needs at least one request");
        for time in [load.duration, load.timeout] {
            // wrk's time arguments take s, m or h units only.
            assert!(
                time.as_secs() > 0 && time.subsec_nanos() == 0,
                "wrk takes whole seconds, not {time:?}"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("edge-wrk-")
            .tempdir()
            .expect("create temp dir for wrk");
        let script = dir.path().join("count.lua");
        fs::write(&script, SCRIPT).expect("write wrk script");
        let stdout = File::create(dir.path().join("stdout")).expect("create wrk stdout");
        let stderr = File::create(dir.path().join("stderr")).expect("create wrk stderr");

        let mut command = Command::new("wrk");
        command
            .arg(format!("--duration={}s", load.duration.as_secs()))
            .arg(format!("--connections={}", load.connections))
            .arg(format!("--threads={}", load.threads))
            .arg(format!("--timeout={}s", load.timeout.as_secs()))
            .arg("--latency")
            .arg("--script")
            .arg(&script)
            .arg(format!("http://{addr}/"))
            .arg("--");
        for (host, path) in requests {
            command.arg(host).arg(path);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn wrk: {e}"));
        Wrk {
            child,
            status: None,
            dir,
            load,
        }
    }

    /// Whether wrk is still running.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("poll wrk");
        }
        self.status.is_none()
    }

    /// Waits for wrk to stop by itself and parses its report; panics with
    /// its output if it does not stop, fails, or prints no summary line.
    pub fn wait(mut self) -> WrkReport {
        let deadline = self.load.duration + EXIT_GRACE;
        if !wait_until(deadline, || !self.is_running()) {
            panic!(
                "wrk still running {deadline:?} after it started:\n{}",
                self.output()
            );
        }
        let output = self.output();
        let status = self.status.expect("wrk exited");
        if !status.success() {
            panic!("wrk failed ({status}):\n{output}");
        }
        parse_report(&output).unwrap_or_else(|why| panic!("{why}; wrk said:\n{output}"))
    }

    fn output(&self) -> String {
        let read = |name| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }
}

impl std::fmt::Debug for Wrk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wrk")
            .field("pid", &self.child.id())
            .field("status", &self.status)
            .field("load", &self.load)
            .finish_non_exhaustive()
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if self.status.is_none() {
            // A test that fails mid-run must not leave load running.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses the script's summary line and wrk's own error lines.
fn parse_report(output: &str) -> Result<WrkReport, String> {
    let summary = output
        .lines()
        .find_map(|line| line.strip_prefix("wrk-summary "))
        .ok_or("no `wrk-summary` line")?;
    let field = |key: &str| -> Result<u64, String> {
        summary
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("no `{key}=` in the summary line"))?
            .parse()
            .map_err(|e| format!("`{key}=` in the summary line: {e}"))
    };
    let first_non_2xx = match field("first_non_2xx")? {
        0 => None,
        status => Some(u16::try_from(status).map_err(|e| format!("first_non_2xx: {e}"))?),
    };
    let mut printed_socket_errors = None;
    let mut printed_non_2xx_or_3xx = None;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            printed_socket_errors = Some(parse_socket_errors(rest)?);
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            let count = count.trim().parse().map_err(|e| format!("{line:?}: {e}"))?;
            printed_non_2xx_or_3xx = Some(count);
        }
    }
    Ok(WrkReport {
        requests: field("requests")?,
        responses: field("responses")?,
        non_2xx: field("non_2xx")?,
        first_non_2xx,
        socket_errors: SocketErrors {
            connect: field("connect")?,
            read: field("read")?,
            write: field("write")?,
            timeout: field("timeout")?,
        },
        status_errors: field("status")?,
        p99: Duration::from_micros(field("p99_us")?),
        max: Duration::from_micros(field("max_us")?),
        duration: Duration::from_micros(field("duration_us")?),
        printed_socket_errors,
        printed_non_2xx_or_3xx,
        output: output.to_owned(),
    })
}

/// ` connect 0, read 3, write 0, timeout 1` to its counts.
fn parse_socket_errors(text: &str) -> Result<SocketErrors, String> {
    let mut errors = SocketErrors::default();
    for part in text.split(',') {
        let (name, count) = part
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("socket errors {text:?}: no count in {part:?}"))?;
        let count = count
            .trim()
            .parse()
            .map_err(|e| format!("socket errors {text:?}: {name}: {e}"))?;
        match name {
            "connect" => errors.connect = count,
            "read" => errors.read = count,
            "write" => errors.write = count,
            "timeout" => errors.timeout = count,
            _ => return Err(format!("socket errors {text:?}: unknown kind {name:?}")),
        }
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
Running 20s test @ http://127.0.0.1:40000/
  2 threads and 8 connections
  41230 requests in 20.00s, 7.12MB read
Requests/sec:   2061.40
wrk-summary requests=41230 responses=41230 non_2xx=0 first_non_2xx=0 connect=0 read=0 write=0 timeout=0 status=0 p99_us=5120 max_us=40211 duration_us=20001234
";

    #[test]
    fn parses_a_clean_run() {
        let report = parse_report(CLEAN).unwrap();
        assert_eq!(report.requests, 41230);
        assert_eq!(report.responses, 41230);
        assert_eq!(report.non_2xx, 0);
        assert_eq!(report.first_non_2xx, None);
        assert_eq!(report.socket_errors, SocketErrors::default());
        assert_eq!(report.p99, Duration::from_micros(5120));
        assert_eq!(report.duration, Duration::from_micros(20_001_234));
        assert_eq!(report.printed_socket_errors, None);
        assert_eq!(report.printed_non_2xx_or_3xx, None);
    }

    #[test]
    fn parses_wrk_error_lines() {
        let output = CLEAN.replace(
            "Requests/sec",
            "  Socket errors: connect 1, read 3, write 0, timeout 7\n  Non-2xx or 3xx responses: 12\nRequests/sec",
        );
        let report = parse_report(&output).unwrap();
        assert_eq!(
            report.printed_socket_errors,
            Some(SocketErrors {
                connect: 1,
                read: 3,
                write: 0,
                timeout: 7
            })
        );
        assert_eq!(report.printed_socket_errors.unwrap().total(), 11);
        assert_eq!(report.printed_non_2xx_or_3xx, Some(12));
    }

    #[test]
    fn rejects_missing_or_malformed_summaries() {
        assert!(parse_report("Running 20s test\n").is_err());
        assert!(parse_report(&CLEAN.replace("non_2xx=0 ", "")).is_err());
        assert!(parse_report(&CLEAN.replace("read=0", "read=x")).is_err());
        let bad_line = CLEAN.replace("Requests/sec", "Socket errors: connect x\nRequests/sec");
        assert!(parse_report(&bad_line).is_err());
    }
}
