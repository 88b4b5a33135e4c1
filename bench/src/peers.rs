//! The servers under test: the release `edge` binary, and nginx and
//! Varnish when installed, each with a config generated into its own
//! temporary directory, run as the current user, pinned to the server CPU,
//! one worker each.
//!
//! Peer configs are what an operator who knows the server would write for
//! a caching proxy (keepalive to the origin, no access log, no per-client
//! keepalive request cap), and nothing that helps one scenario only —
//! with one exception, documented in bench/README.md: nginx takes
//! `proxy_cache_lock` only on the storm's `/slow/` paths, because with the
//! lock on, nginx makes concurrent requests for an uncacheable URL wait on
//! each other (500 ms polls) and miss-passthrough would measure that.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::pin::Placement;
use crate::tls::TlsFiles;
use crate::tools;

/// How long a server may take to start answering.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Listen backlog for the peers: a 1,000-connection storm arrives at once.
const BACKLOG: u32 = 4096;

/// Which server a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Our own.
    Edge,
    /// Our own with a disk tier on this file I/O backend and a small
    /// memory tier: the disk scenarios' edge.
    EdgeDisk(DiskIo),
    /// nginx with proxy_cache.
    Nginx,
    /// Varnish with malloc storage.
    Varnish,
}

impl Kind {
    /// Name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Edge => "edge",
            Kind::EdgeDisk(DiskIo::Uring) => "edge-uring",
            Kind::EdgeDisk(DiskIo::Blocking) => "edge-blocking",
            Kind::Nginx => "nginx",
            Kind::Varnish => "varnish",
        }
    }

    /// One of edge's configurations.
    pub fn is_edge(self) -> bool {
        matches!(self, Kind::Edge | Kind::EdgeDisk(_))
    }
}

/// The disk tier's file I/O backend (`[cache] disk.backend`), forced so a
/// run compares the two instead of measuring whatever `auto` picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskIo {
    /// `backend = "io_uring"`: start-up fails if the kernel refuses it.
    Uring,
    /// `backend = "blocking"`: tokio's blocking pool with pread.
    Blocking,
}

impl DiskIo {
    /// The config value.
    pub fn config_value(self) -> &'static str {
        match self {
            DiskIo::Uring => "io_uring",
            DiskIo::Blocking => "blocking",
        }
    }
}

/// A running server under test; stopped when dropped.
pub struct Peer {
    /// Which server.
    pub kind: Kind,
    /// HTTP/1.1 address.
    pub h1: SocketAddr,
    /// Address serving h2c with prior knowledge, if the peer can.
    pub h2: Option<SocketAddr>,
    /// HTTPS address (the generated certificate), if the peer does TLS.
    pub tls: Option<SocketAddr>,
    /// A line for the run's notes (where a disk store lives, its backend).
    pub about: Option<String>,
    child: Child,
    dir: TempDir,
}

impl Peer {
    /// The root pid of the server's process tree.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log file (for error messages).
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        // SAFETY: kill with a pid we own (our child, not yet reaped).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let until = Instant::now() + STOP_DEADLINE;
        while Instant::now() < until {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds the release `edge` (cargo decides whether it is stale) and
/// returns the binary's path.
pub fn build_edge() -> anyhow::Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("bench crate has no parent directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the release edge binary (cargo build --release -p edge)…");
    let output = Command::new(&cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "edge",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "cargo build --release -p edge failed ({}); fix the build or pass --edge-bin PATH",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_edge_bin = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "edge"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if let (true, Some(path)) = (is_edge_bin, message["executable"].as_str()) {
            return Ok(PathBuf::from(path));
        }
    }
    bail!("cargo build reported no `edge` executable; pass --edge-bin PATH")
}

/// Starts `edge run` with a generated config, on the server CPU.
pub fn start_edge(
    binary: &Path,
    origin: SocketAddr,
    placement: &Placement,
    tls: &TlsFiles,
) -> anyhow::Result<Peer> {
    let dir = TempDir::with_prefix("edge-bench-edge-")?;
    let config = edge_config(origin, tls);
    launch_edge(binary, Kind::Edge, dir, &config, placement)
}

/// Starts an edge with a disk tier on backend `io` (the disk scenarios).
/// The store lives in `store_base` (a directory on a real file system, not
/// tmpfs) and is removed with the peer.
pub fn start_edge_disk(
    binary: &Path,
    origin: SocketAddr,
    placement: &Placement,
    io: DiskIo,
    store_base: &Path,
) -> anyhow::Result<Peer> {
    let kind = Kind::EdgeDisk(io);
    let dir = TempDir::with_prefix_in(format!("edge-bench-{}-", kind.name()), store_base)
        .with_context(|| format!("creating a directory in {}", store_base.display()))?;
    let store = dir.path().join("store");
    let config = edge_disk_config(origin, &store, io);
    let mut peer = launch_edge(binary, kind, dir, &config, placement)?;
    // edge logs the backend it opened the store with; a mismatch would
    // make the comparison meaningless.
    let log = std::fs::read_to_string(peer.log()).unwrap_or_default();
    let logged = logged_disk_backend(&log);
    match logged.as_deref() {
        Some(backend) if backend != io.config_value() => {
            bail!(
                "{} opened its disk store with backend {backend}, not {}",
                kind.name(),
                io.config_value()
            );
        }
        Some(backend) => {
            peer.about = Some(format!(
                "{}: disk store {} ({}), backend {backend} (from its start-up log)",
                kind.name(),
                store.display(),
                crate::storage::fs_name(store_base)
            ));
        }
        None => {
            peer.about = Some(format!(
                "{}: disk store {} ({}); its log did not name the backend",
                kind.name(),
                store.display(),
                crate::storage::fs_name(store_base)
            ));
        }
    }
    Ok(peer)
}

/// The `backend=` field of edge's "disk store opened" log line.
fn logged_disk_backend(log: &str) -> Option<String> {
    log.lines()
        .filter(|line| line.contains("reason="))
        .find_map(|line| {
            let value = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("backend="))?;
            Some(value.trim_matches('"').to_owned())
        })
}

/// Runs `edge run` with `config` written into `dir` and waits for `ready`.
fn launch_edge(
    binary: &Path,
    kind: Kind,
    dir: TempDir,
    config: &str,
    placement: &Placement,
) -> anyhow::Result<Peer> {
    let config_path = dir.path().join("edge.toml");
    std::fs::write(&config_path, config)?;
    let mut command = Command::new(binary);
    command
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(dir.path())?);
    let mut child =
        spawn(&mut command, placement).with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("edge stdout was not captured")?;
    let (lines, announced) = mpsc::channel();
    // Reads the start-up lines, then keeps draining stdout for the life of
    // the process so a full pipe never blocks edge.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line);
        }
    });
    let mut h1 = None;
    let mut https = None;
    let until = Instant::now() + START_DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match announced.recv_timeout(left) {
            Ok(line) if line == "ready" => break,
            Ok(line) => {
                if let Some(url) = line.strip_prefix("listener 0: http://") {
                    h1 = Some(url.trim().parse::<SocketAddr>().with_context(|| {
                        format!("edge printed an unreadable listener line {line:?}")
                    })?);
                }
                if let Some(url) = line.strip_prefix("listener 1: https://") {
                    https = url.trim().parse::<SocketAddr>().ok();
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed before `ready`: edge exited (a config it
                // refused, io_uring unavailable, …).
                let status = child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                bail!(
                    "edge exited at start ({status}); its log: {}",
                    tail(&dir.path().join("server.log"))
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "edge did not print `ready` within {START_DEADLINE:?}; its log: {}",
                    tail(&dir.path().join("server.log"))
                );
            }
        }
    }
    let h1 = h1.context("edge printed `ready` without a `listener 0: http://…` line")?;
    Ok(Peer {
        kind,
        h1,
        h2: Some(h1),
        tls: https,
        about: None,
        child,
        dir,
    })
}

/// The second listener serves HTTPS with the generated certificate; its
/// session cache is off (the handshake scenario's client never resumes).
fn edge_config(origin: SocketAddr, tls: &TlsFiles) -> String {
    let (cert, key) = (tls.cert.display(), tls.key.display());
    format!(
        r#"# Generated by edge-bench.
[node]
id = "edge-bench"
workers = 1
drain_timeout = "1s"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
addr = "127.0.0.1:0"

[[listeners]]
addr = "127.0.0.1:0"
tls = {{ certs = [{{ cert = "{cert}", key = "{key}" }}], session_cache = 0 }}

[cache]
memory = "512MiB"
max_object_size = "8MiB"

[[sites]]
hosts = ["*"]
pool = "origin"

[pools.origin]
endpoints = ["{origin}"]
"#
    )
}

/// The disk scenarios' edge: objects over `max_object_size` (32 KiB) skip
/// the memory tier and go straight to disk, so every hit on a 64 KiB or
/// 1 MiB object streams from the store. The store's 1 GiB takes objects up
/// to 128 MiB (an eighth) and holds both scenarios' 68 MiB without
/// evicting. No TLS listener: the disk scenarios are plain HTTP/1.1.
fn edge_disk_config(origin: SocketAddr, store: &Path, io: DiskIo) -> String {
    let (path, backend) = (store.display(), io.config_value());
    format!(
        r#"# Generated by edge-bench (disk scenarios).
[node]
id = "edge-bench"
workers = 1
drain_timeout = "1s"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
addr = "127.0.0.1:0"

[cache]
memory = "64MiB"
max_object_size = "32KiB"
disk = {{ path = "{path}", size = "1GiB", backend = "{backend}" }}

[[sites]]
hosts = ["*"]
pool = "origin"

[pools.origin]
endpoints = ["{origin}"]
"#
    )
}

/// Starts nginx (proxy_cache, one worker) if installed.
pub fn start_nginx(
    binary: &Path,
    origin: SocketAddr,
    placement: &Placement,
    tls: &TlsFiles,
) -> anyhow::Result<Peer> {
    let dir = TempDir::with_prefix("edge-bench-nginx-")?;
    let h1 = free_port()?;
    let h2 = free_port()?;
    let https = free_port()?;
    let version = tools::version(binary, "-v");
    let ports = NginxPorts { h1, h2, https };
    let config = nginx_config(dir.path(), origin, ports, nginx_has_http2_on(&version), tls);
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, config)?;
    let mut command = Command::new(binary);
    command
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdin(Stdio::null())
        .stdout(log_file(dir.path())?)
        .stderr(log_file(dir.path())?);
    let child = spawn(&mut command, placement).context("starting nginx")?;
    let mut peer = Peer {
        kind: Kind::Nginx,
        h1,
        h2: Some(h2),
        tls: Some(https),
        about: None,
        child,
        dir,
    };
    wait_listening(&mut peer, &[h1, h2, https])?;
    Ok(peer)
}

/// `http2 on;` arrived in nginx 1.25.1; before it, h2c takes a dedicated
/// `listen … http2` socket (prior knowledge only).
fn nginx_has_http2_on(version: &str) -> bool {
    let Some(number) = version.split("nginx/").nth(1) else {
        return false;
    };
    let parts: Vec<u32> = number
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    parts.as_slice() >= [1, 25, 1].as_slice()
}

/// nginx's listening addresses.
struct NginxPorts {
    h1: SocketAddr,
    h2: SocketAddr,
    https: SocketAddr,
}

fn nginx_config(
    dir: &Path,
    origin: SocketAddr,
    ports: NginxPorts,
    http2_on: bool,
    tls: &TlsFiles,
) -> String {
    let NginxPorts { h1, h2, https } = ports;
    let (cert, key) = (tls.cert.display(), tls.key.display());
    let d = dir.display();
    // nginx as root would switch its worker to `nobody`, which cannot
    // write the cache directory; run the worker as ourselves.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;\n"
    } else {
        ""
    };
    let h2_listen = if http2_on {
        format!("listen {h2} backlog={BACKLOG};\n        http2 on;")
    } else {
        format!("listen {h2} http2 backlog={BACKLOG};")
    };
    let proxy = "proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache bench;
            add_header X-Cache-Status $upstream_cache_status;";
    let locations = format!(
        "location / {{
            {proxy}
        }}
        location /slow/ {{
            {proxy}
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
        }}"
    );
    format!(
        r#"# Generated by edge-bench.
daemon off;
master_process on;
worker_processes 1;
{user}pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    # sendfile sends cached bodies without a copy (1 MiB hits: 115 against
    # 390 µs/req measured here). tcp_nopush stays off: with it, cached
    # 64 KiB hits stalled ~40 ms each (cork against delayed ACK), 1.5k req/s.
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 10000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=bench:32m max_size=512m inactive=1h use_temp_path=off;

    upstream origin {{
        server {origin};
        keepalive 64;
    }}

    server {{
        listen {h1} backlog={BACKLOG};
        {locations}
    }}

    server {{
        {h2_listen}
        {locations}
    }}

    # HTTPS: TLS 1.3, the same ECDSA P-256 certificate as edge; no
    # session tickets or cache, so every new connection is a full handshake.
    server {{
        listen {https} ssl backlog={BACKLOG};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        {locations}
    }}
}}
"#
    )
}

/// Starts Varnish (malloc storage, one thread pool) if installed.
pub fn start_varnish(
    binary: &Path,
    origin: SocketAddr,
    placement: &Placement,
    _tls: &TlsFiles,
) -> anyhow::Result<Peer> {
    let dir = TempDir::with_prefix("edge-bench-varnish-")?;
    let h1 = free_port()?;
    let vcl = dir.path().join("bench.vcl");
    std::fs::write(&vcl, varnish_vcl(origin))?;
    let mut command = Command::new(binary);
    command
        .arg("-F")
        .args(["-j", "none"])
        .arg("-n")
        .arg(dir.path().join("work"))
        .arg("-f")
        .arg(&vcl)
        .arg("-a")
        .arg(h1.to_string())
        .args(["-T", "127.0.0.1:0"])
        .args(["-s", "malloc,512m"])
        .args(["-p", "thread_pools=1"])
        .args(["-p", "feature=+http2"])
        .args(["-p", &format!("listen_depth={BACKLOG}")])
        .stdin(Stdio::null())
        .stdout(log_file(dir.path())?)
        .stderr(log_file(dir.path())?);
    let child = spawn(&mut command, placement).context("starting varnishd")?;
    let mut peer = Peer {
        kind: Kind::Varnish,
        h1,
        // Varnish answers the h2 connection preface on its HTTP/1 listener.
        h2: Some(h1),
        // Varnish has no TLS.
        tls: None,
        about: None,
        child,
        dir,
    };
    wait_listening(&mut peer, &[h1])?;
    Ok(peer)
}

fn varnish_vcl(origin: SocketAddr) -> String {
    format!(
        r#"vcl 4.1;
# Generated by edge-bench: the built-in VCL does the rest (it honours
# Cache-Control, coalesces misses, and passes no-store answers).
backend origin {{
    .host = "{}";
    .port = "{}";
}}
"#,
        origin.ip(),
        origin.port()
    )
}

fn spawn(command: &mut Command, placement: &Placement) -> std::io::Result<Child> {
    crate::pin::command(command, &placement.server, placement.nice);
    // SAFETY: prctl is async-signal-safe; the server is told to stop
    // (SIGTERM) if the harness dies, so an interrupted run leaves no
    // servers behind.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command.spawn()
}

fn log_file(dir: &Path) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))?)
}

/// The last lines of a log, for an error message.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    let shown = lines[start..].join("\n    ");
    if shown.is_empty() {
        "(empty)".into()
    } else {
        format!("\n    {shown}")
    }
}

fn wait_listening(peer: &mut Peer, addrs: &[SocketAddr]) -> anyhow::Result<()> {
    let until = Instant::now() + START_DEADLINE;
    for addr in addrs {
        loop {
            if !peer.alive() {
                bail!(
                    "{} exited at start; its log: {}{}",
                    peer.kind.name(),
                    tail(&peer.log()),
                    tail(&peer.dir.path().join("error.log"))
                );
            }
            if TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() >= until {
                bail!(
                    "{} is not listening on {addr} after {START_DEADLINE:?}; its log: {}",
                    peer.kind.name(),
                    tail(&peer.log())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// A free port on 127.0.0.1 below the ephemeral range (32768+), so a
/// client socket of an earlier run cannot be holding it
/// (shared/research/io_uring.md §7.7).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let mut state = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..200 {
        // xorshift: any spread will do.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 20_000 + (state % 12_000) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    bail!("no free port found on 127.0.0.1 between 20000 and 32000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_http2_on_from_1_25_1() {
        assert!(!nginx_has_http2_on("nginx version: nginx/1.22.1"));
        assert!(!nginx_has_http2_on("nginx version: nginx/1.25.0"));
        assert!(nginx_has_http2_on("nginx version: nginx/1.25.1"));
        assert!(nginx_has_http2_on("nginx version: nginx/1.27.3 (Ubuntu)"));
        assert!(!nginx_has_http2_on("not nginx"));
    }

    #[test]
    fn reads_the_logged_disk_backend() {
        let log = "2026-11-30T10:00:00Z  INFO edge_cache::disk: disk store opened \
                   path=/tmp/x backend=\"io_uring\" reason=ok objects=0\n";
        assert_eq!(logged_disk_backend(log).as_deref(), Some("io_uring"));
        let plain = "INFO disk store opened backend=blocking reason=forced by config";
        assert_eq!(logged_disk_backend(plain).as_deref(), Some("blocking"));
        assert_eq!(logged_disk_backend("INFO listening\n"), None);
    }

    #[test]
    fn free_ports_are_below_the_ephemeral_range() {
        let addr = free_port().unwrap();
        assert!((20_000..32_000).contains(&addr.port()));
    }

    #[test]
    fn configs_name_the_origin() {
        let origin: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let tls = TlsFiles {
            ca: "/tmp/x/ca.pem".into(),
            cert: "/tmp/x/c.pem".into(),
            key: "/tmp/x/k.pem".into(),
        };
        let edge = edge_config(origin, &tls);
        assert!(edge.contains("endpoints = [\"127.0.0.1:9000\"]"));
        assert!(
            edge.contains("tls = { certs = [{ cert = \"/tmp/x/c.pem\", key = \"/tmp/x/k.pem\" }]")
        );
        assert!(varnish_vcl(origin).contains(".port = \"9000\""));
        let disk = edge_disk_config(origin, Path::new("/tmp/s"), DiskIo::Blocking);
        assert!(
            disk.contains("disk = { path = \"/tmp/s\", size = \"1GiB\", backend = \"blocking\" }")
        );
        assert!(disk.contains("max_object_size = \"32KiB\""));
        let ports = NginxPorts {
            h1: "127.0.0.1:20001".parse().unwrap(),
            h2: "127.0.0.1:20002".parse().unwrap(),
            https: "127.0.0.1:20003".parse().unwrap(),
        };
        let nginx = nginx_config(Path::new("/tmp/x"), origin, ports, false, &tls);
        assert!(nginx.contains("listen 127.0.0.1:20003 ssl"));
        assert!(nginx.contains("ssl_session_tickets off;"));
        assert!(nginx.contains("server 127.0.0.1:9000;"));
        assert!(nginx.contains("listen 127.0.0.1:20002 http2"));
        assert!(nginx.contains("worker_processes 1;"));
    }
}
