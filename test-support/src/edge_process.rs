//! Runs the real `edge` binary for end-to-end tests.
//!
//! [`EdgeProcess::start`] writes the config to a temporary directory, runs
//! `edge run --config <file>` and waits for edge's startup announcement on
//! stdout:
//!
//! ```text
//! listener 0: http://127.0.0.1:40123     one line per [[listeners]] entry
//! admin: http://127.0.0.1:40124
//! ready
//! ```
//!
//! Addresses come from those lines, so configs bind port 0 and tests never
//! race each other for ports. Both output streams are drained for the life
//! of the process (a full pipe would otherwise block edge's logging) into a
//! buffer tests can search and failures print.
//!
//! The trade-off: a real process costs a spawn per test, and in exchange
//! tests cover signals, reload, exit codes and memory as deployed.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::wait_until;

/// How long edge may take to print `ready`: generous, because a loaded CI
/// machine running many test binaries at once can be very slow to start.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// How long to wait, once edge has exited, for the reader threads to copy
/// its last output. Only a leftover grandchild holding the pipes makes this
/// wait run out.
const OUTPUT_DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// How long to retry a spawn failing with ETXTBSY. A binary written moments
/// ago (a test's fake edge) can still be open for writing in a child forked
/// by another test thread until that child execs.
const SPAWN_RETRY_DEADLINE: Duration = Duration::from_secs(2);

/// Name of the config file inside the temporary directory.
const CONFIG_FILE: &str = "edge.toml";

/// A running `edge` process; SIGKILLed and reaped on drop if still running.
pub struct EdgeProcess {
    child: Child,
    /// Set once the child has been reaped; its pid may be reused after that.
    status: Option<ExitStatus>,
    dir: TempDir,
    listeners: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    output: Arc<Output>,
}

/// Both output streams, interleaved in arrival order.
#[derive(Default)]
struct Output {
    text: Mutex<String>,
    /// Streams whose reader thread has not reached EOF yet.
    open: AtomicUsize,
}

impl Output {
    fn append(&self, chunk: &[u8]) {
        let mut text = self.text.lock().unwrap_or_else(PoisonError::into_inner);
        text.push_str(&String::from_utf8_lossy(chunk));
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }

    fn snapshot(&self) -> String {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One line of edge's startup announcement.
#[derive(Debug, PartialEq)]
enum Announcement {
    Listener(usize, SocketAddr),
    Admin(SocketAddr),
    Ready,
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("edge-test-")
        .tempdir()
        .expect("create temp dir for edge config")
}

impl EdgeProcess {
    /// Writes `config_toml` to a temp dir as `edge.toml`, runs
    /// `<bin> run --config <file>` (environment, including `RUST_LOG`,
    /// inherited) and returns once edge prints `ready`.
    ///
    /// Panics with edge's output if it exits or stays silent for 20 s first.
    pub fn start(bin: &Path, config_toml: &str) -> EdgeProcess {
        Self::start_within(bin, config_toml, READY_DEADLINE)
    }

    /// Runs `<bin> demo --port 0` and returns once it prints `ready`.
    pub fn start_demo(bin: &Path) -> EdgeProcess {
        let dir = temp_dir();
        Self::launch(bin, &["demo", "--port", "0"], dir, READY_DEADLINE)
    }

    fn start_within(bin: &Path, config_toml: &str, ready_deadline: Duration) -> EdgeProcess {
        let dir = temp_dir();
        let config = dir.path().join(CONFIG_FILE);
        fs::write(&config, config_toml).expect("write edge config");
        let config = config.to_str().expect("temp paths are UTF-8").to_owned();
        Self::launch(bin, &["run", "--config", &config], dir, ready_deadline)
    }

    fn launch(bin: &Path, args: &[&str], dir: TempDir, ready_deadline: Duration) -> EdgeProcess {
        let mut command = Command::new(bin);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut command, bin);

        let output = Arc::new(Output::default());
        output.open.store(2, Ordering::SeqCst);
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        spawn_reader("edge-stdout", stdout, output.clone(), Some(lines_tx));
        spawn_reader("edge-stderr", stderr, output.clone(), None);

        let mut edge = EdgeProcess {
            child,
            status: None,
            dir,
            listeners: Vec::new(),
            admin: None,
            output,
        };
        let mut listeners: Vec<Option<SocketAddr>> = Vec::new();
        let until = Instant::now() + ready_deadline;
        loop {
            let line = match lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    edge.fail(&format!("no `ready` line within {ready_deadline:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => edge.fail("stdout closed before `ready`"),
            };
            match parse_announcement(&line) {
                Ok(None) => {}
                Ok(Some(Announcement::Listener(index, addr))) => {
                    if listeners.len() <= index {
                        listeners.resize(index + 1, None);
                    }
                    listeners[index] = Some(addr);
                }
                Ok(Some(Announcement::Admin(addr))) => edge.admin = Some(addr),
                Ok(Some(Announcement::Ready)) => break,
                Err(msg) => edge.fail(&msg),
            }
        }
        match listeners.iter().copied().collect::<Option<Vec<_>>>() {
            Some(all) => edge.listeners = all,
            None => edge.fail(&format!("listener indexes not contiguous: {listeners:?}")),
        }
        edge
    }

    /// Kills edge, collects its output and panics with `reason` and both.
    fn fail(&mut self, reason: &str) -> ! {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.status = status;
        let output = self.output.clone();
        wait_until(OUTPUT_DRAIN_DEADLINE, || {
            output.open.load(Ordering::SeqCst) == 0
        });
        let status = status.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
        panic!(
            "edge did not start: {reason} (exit: {status})\n--- edge output ---\n{}",
            self.output.snapshot()
        );
    }

    /// Data listener addresses, in `[[listeners]]` order.
    pub fn listeners(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// Listener 0; panics if edge announced no data listener.
    pub fn addr(&self) -> SocketAddr {
        *self
            .listeners
            .first()
            .expect("edge announced no `listener 0:` line")
    }

    /// The admin listener; panics if edge announced none.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("edge announced no `admin:` line")
    }

    /// Everything edge wrote to stdout and stderr so far, line-interleaved.
    pub fn output(&self) -> String {
        self.output.snapshot()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file edge was started with; rewrite it to test reloads.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// Sends signal `sig` (e.g. `libc::SIGHUP`); panics if edge was reaped.
    pub fn signal(&self, sig: i32) {
        if let Some(status) = self.status {
            // Its pid may already belong to another process.
            panic!("edge already exited ({status}); not sending signal {sig}");
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and touches no memory of
        // ours; the pid is our unreaped child, so it cannot be recycled.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            panic!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
    }

    /// Waits up to `deadline` for edge to exit; `None` if still running.
    ///
    /// On exit, also waits briefly for the output readers to reach EOF, so
    /// [`EdgeProcess::output`] then holds everything edge wrote.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let child = &mut self.child;
        let mut status = None;
        wait_until(deadline, || match child.try_wait() {
            Ok(Some(s)) => {
                status = Some(s);
                true
            }
            Ok(None) => false,
            Err(e) => panic!("waiting for edge: {e}"),
        });
        self.status = status;
        if status.is_some() {
            let output = self.output.clone();
            wait_until(OUTPUT_DRAIN_DEADLINE, || {
                output.open.load(Ordering::SeqCst) == 0
            });
        }
        status
    }

    /// Resident set size in KiB (`VmRSS` from `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {path} (has edge exited?)"))
    }
}

impl std::fmt::Debug for EdgeProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeProcess")
            .field("pid", &self.child.id())
            .field("status", &self.status)
            .field("listeners", &self.listeners)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            // SIGKILL, so a test that fails mid-way never leaves edge behind.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `command`, retrying while the binary is busy being written.
fn spawn(command: &mut Command, bin: &Path) -> Child {
    let mut result = None;
    wait_until(SPAWN_RETRY_DEADLINE, || {
        let attempt = command.spawn();
        let busy = matches!(&attempt, Err(e) if e.raw_os_error() == Some(libc::ETXTBSY));
        result = Some(attempt);
        !busy
    });
    match result.expect("wait_until tries at least once") {
        Ok(child) => child,
        Err(e) => panic!("spawn {}: {e}", bin.display()),
    }
}

/// Copies `stream` into `output` line by line until EOF, forwarding each
/// line (without its newline) to `lines` while anyone listens.
fn spawn_reader(
    name: &str,
    stream: impl Read + Send + 'static,
    output: Arc<Output>,
    lines: Option<mpsc::Sender<String>>,
) {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                output.append(&buf);
                if let Some(tx) = &lines {
                    let line = String::from_utf8_lossy(&buf);
                    let _ = tx.send(line.trim_end_matches(['\r', '\n']).to_owned());
                }
            }
            output.open.fetch_sub(1, Ordering::SeqCst);
            // Dropping `lines` here tells a waiting start() that stdout ended.
        })
        .expect("spawn edge output reader");
}

/// Parses one stdout line; `Ok(None)` for lines that are not announcements
/// (such as logs), `Err` for an announcement edge got wrong.
fn parse_announcement(line: &str) -> Result<Option<Announcement>, String> {
    let line = line.trim_end();
    if line == "ready" {
        return Ok(Some(Announcement::Ready));
    }
    if let Some(rest) = line.strip_prefix("listener ") {
        let (index, url) = rest
            .split_once(": ")
            .ok_or_else(|| format!("malformed listener line {line:?}"))?;
        let index = index
            .parse()
            .map_err(|e| format!("listener index in {line:?}: {e}"))?;
        return Ok(Some(Announcement::Listener(index, parse_url(url, line)?)));
    }
    if let Some(url) = line.strip_prefix("admin: ") {
        return Ok(Some(Announcement::Admin(parse_url(url, line)?)));
    }
    Ok(None)
}

/// `http://ip:port` (or `https://`, for TLS listeners) to its address.
fn parse_url(url: &str, line: &str) -> Result<SocketAddr, String> {
    let authority = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("no http:// URL in {line:?}"))?;
    authority
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("address in {line:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_announcements() {
        let cases: [(&str, Option<Announcement>); 6] = [
            ("ready", Some(Announcement::Ready)),
            (
                "listener 0: http://127.0.0.1:1234",
                Some(Announcement::Listener(0, "127.0.0.1:1234".parse().unwrap())),
            ),
            (
                "listener 12: http://[::1]:80/",
                Some(Announcement::Listener(12, "[::1]:80".parse().unwrap())),
            ),
            (
                "admin: http://127.0.0.1:5678",
                Some(Announcement::Admin("127.0.0.1:5678".parse().unwrap())),
            ),
            ("2026-01-01T00:00:00Z INFO listener 0: bound", None),
            ("not ready", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_announcement(line).unwrap(), want, "{line}");
        }
        for bad in [
            "listener x: http://127.0.0.1:1",
            "admin: 127.0.0.1:1",
            "listener 0: http://nope",
        ] {
            assert!(parse_announcement(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn silent_edge_times_out_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("edge");
        fs::write(
            &bin,
            "#!/bin/sh\necho 'starting up'\necho 'oops' >&2\nexec sleep 30\n",
        )
        .unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();

        let err = std::panic::catch_unwind(|| {
            EdgeProcess::start_within(&bin, "", Duration::from_millis(300))
        })
        .expect_err("start must fail without `ready`");
        let msg = err.downcast_ref::<String>().expect("panic message");
        assert!(msg.contains("no `ready` line"), "{msg}");
        assert!(msg.contains("starting up") && msg.contains("oops"), "{msg}");
    }
}
