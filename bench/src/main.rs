//! edge-bench: the load harness that runs edge, nginx and Varnish side by
//! side on one machine and reports every peer's ratio to edge
//! (DESIGN.md, `bench/`; bench/README.md says how to run it).
//!
//! One run: build the release `edge`, start the origin and every installed
//! peer (pinned to one core, one worker each), then for each scenario warm,
//! measure over a bounded window, verify, and finally print the table,
//! write JSON and append to `bench/RESULTS.md`.
//!
//! Modules: `origin` (the counted origin), `peers` (edge/nginx/Varnish
//! processes and their configs), `load` (wrk/h2load/oha), `storm` (the
//! coalescing storm client), `measure` (CPU from /proc), `scenario` (what
//! each scenario does and checks), `report` (table, JSON, RESULTS.md),
//! `storage` (where the disk scenarios' stores live), `pin`, `tools`,
//! `client`.

mod client;
mod load;
mod measure;
mod origin;
mod peers;
mod pin;
mod report;
mod scenario;
mod storage;
mod storm;
mod tls;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::load::Loader;
use crate::peers::{DiskIo, Kind, Peer};
use crate::pin::Placement;
use crate::scenario::{Bench, Timing};
use crate::tools::Tools;

/// Measured time per peer and scenario in a full run, split into
/// [`ROUNDS`] interleaved rounds: with 3 peers and 9 scenarios the whole
/// run stays under 5 minutes (9 s per peer took 312 s; 6 s about 240 s).
const MEASURE: Duration = Duration::from_secs(6);
/// Rounds per scenario in a full run (one with `--quick`).
const ROUNDS: u32 = 3;
/// Measured time per peer and scenario with `--quick`.
const MEASURE_QUICK: Duration = Duration::from_secs(2);
/// Unmeasured warm-up load before the first round (wrk counts whole seconds).
const WARMUP: Duration = Duration::from_secs(1);
/// miss-passthrough's one-connection latency phase.
const LATENCY: Duration = Duration::from_secs(3);
const LATENCY_QUICK: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "edge-bench",
    about = "Benchmarks edge against nginx and Varnish on this machine (loopback only)",
    after_help = "Scenarios: hit-1k hit-64k hit-1m hit-1k-h2 miss-passthrough coalesce-storm conn-churn tls-handshake hit-1k-tls disk-64k disk-1m (default: all).\n\
                  A group name picks every scenario it starts: `disk` = disk-64k disk-1m, `hit` = the hit-* ones.\n\
                  Peers are optional: apt-get install nginx varnish wrk nghttp2-client"
)]
struct Cli {
    /// Scenarios to run, or groups such as `disk` (all when none are given).
    scenarios: Vec<String>,
    /// Short smoke run (2 s per measurement); not recorded in RESULTS.md.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results (default: target/edge-bench/last.json).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Seconds measured per peer and scenario, over all rounds (default 9, or 2 with --quick).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Interleaved rounds the measured time is split into (default 3, or 1 with --quick).
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Only these peers (comma-separated: edge,nginx,varnish; the disk
    /// scenarios' edge-uring and edge-blocking count as edge too).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    peers: Option<Vec<String>>,
    /// Use this edge binary instead of building target/release/edge.
    #[arg(long, value_name = "PATH")]
    edge_bin: Option<PathBuf>,
    /// Run servers and load generator at this nice value (e.g. -10; needs
    /// root): other tenants of a shared machine disturb the run less.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    nice: Option<i32>,
    /// Do not append to bench/RESULTS.md.
    #[arg(long)]
    no_record: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(tls::CHURN) {
        return tls::churn_main(&args[2..]);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("edge-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs everything; `Ok(false)` when a check failed (the table says which).
fn run(cli: Cli) -> anyhow::Result<bool> {
    let started = Instant::now();
    let date = report::utc_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let scenarios = chosen_scenarios(&cli.scenarios)?;
    let wanted = |name: &str| {
        cli.peers.as_ref().is_none_or(|list| {
            list.iter()
                .any(|p| p == name || (p == "edge" && name.starts_with("edge-")))
        })
    };
    // The disk scenarios have their own edge peers, and Varnish (memory
    // storage) sits them out: start only what the chosen scenarios use.
    let disk_run = scenarios.iter().any(|s| scenario::is_disk(s));
    let other_run = scenarios.iter().any(|s| !scenario::is_disk(s));
    raise_fd_limit();
    let machine = report::Machine::read();

    let placement = Placement::detect(cli.nice);
    let mut notes = Vec::new();
    if !placement.pinned() {
        notes.push(placement.describe());
    }
    if cli.nice.is_some() {
        notes.push(
            "--nice: servers and load generator ran at raised priority over other tenants".into(),
        );
    }
    // The harness's own thread (and the load tools' parent) stays off the
    // server core; the origin pins its own thread to the server core.
    if let Err(error) = pin::current_thread(&placement.load) {
        notes.push(format!("could not pin the harness: {error}"));
    }

    let tools = Tools::find();
    if tools.wrk.is_none() && tools.oha.is_none() {
        bail!("no HTTP/1.1 load generator: apt-get install wrk (or cargo install oha)");
    }
    for (name, path, install) in [
        ("nginx", &tools.nginx, "apt-get install nginx"),
        ("varnish", &tools.varnishd, "apt-get install varnish"),
        ("h2load", &tools.h2load, "apt-get install nghttp2-client"),
    ] {
        if path.is_none() {
            notes.push(format!("{name} not installed, skipped: {install}"));
        }
    }

    let edge_bin = match &cli.edge_bin {
        Some(path) => path.clone(),
        None => peers::build_edge()?,
    };
    let edge_version = tools::version(&edge_bin, "--version");
    let workspace = workspace_root()?;
    let rev = edge_revision(&workspace);

    let certs_dir = tempfile::TempDir::with_prefix("edge-bench-tls-")?;
    let certs = tls::TlsFiles::generate(certs_dir.path()).context("generating certificates")?;

    let origin = origin::start(placement.server.first().copied(), placement.nice)?;
    eprintln!("origin on http://{}; {}", origin.addr, placement.describe());

    let mut servers: Vec<Peer> = Vec::new();
    let mut missing: Vec<(Kind, String)> = Vec::new();
    if wanted("edge") && other_run {
        servers.push(peers::start_edge(
            &edge_bin,
            origin.addr,
            &placement,
            &certs,
        )?);
    }
    if disk_run {
        let (base, note) = storage::store_base();
        notes.extend(note);
        for io in [DiskIo::Uring, DiskIo::Blocking] {
            let name = Kind::EdgeDisk(io).name();
            if !wanted(name) {
                continue;
            }
            // io_uring may be refused (seccomp, kernel.io_uring_disabled):
            // that peer is reported missing, never replaced by another.
            match peers::start_edge_disk(&edge_bin, origin.addr, &placement, io, &base) {
                Ok(peer) => servers.push(peer),
                Err(error) => {
                    eprintln!("{name} did not start: {error:#}");
                    missing.push((Kind::EdgeDisk(io), format!("{error:#}")));
                }
            }
        }
    }
    let optional = [
        (
            "nginx",
            tools.nginx.clone(),
            peers::start_nginx as PeerStart,
        ),
        ("varnish", tools.varnishd.clone(), peers::start_varnish),
    ];
    for (name, binary, start) in optional {
        let Some(binary) = binary.filter(|_| wanted(name)) else {
            continue;
        };
        if name == "varnish" && !other_run {
            continue;
        }
        match start(&binary, origin.addr, &placement, &certs) {
            Ok(peer) => servers.push(peer),
            Err(error) => notes.push(format!("{name} skipped: it did not start: {error:#}")),
        }
    }
    notes.extend(servers.iter().filter_map(|peer| peer.about.clone()));
    for peer in &servers {
        eprintln!(
            "{} on http://{} (pid {})",
            peer.kind.name(),
            peer.h1,
            peer.pid()
        );
    }

    let scratch = tempfile::TempDir::with_prefix("edge-bench-load-")?;
    let loader = Loader::new(tools.clone(), placement.clone(), scratch.path(), &certs.ca)?;
    if loader.tool_for(load::Protocol::Http2).is_none() && scenarios.contains(&"hit-1k-h2") {
        notes.push(
            "hit-1k-h2 skipped: no h2 load generator (apt-get install nghttp2-client)".into(),
        );
    }
    let measure = cli
        .duration
        .map(Duration::from_secs)
        .unwrap_or(if cli.quick { MEASURE_QUICK } else { MEASURE });
    let rounds = cli
        .rounds
        .unwrap_or(if cli.quick { 1 } else { ROUNDS })
        .max(1);
    // Load tools count whole seconds.
    let round = Duration::from_secs((measure.as_secs() / u64::from(rounds)).max(1));
    let bench = Bench {
        origin: &origin,
        loader: &loader,
        load_cores: placement.load_cores(),
        timing: Timing {
            round,
            rounds,
            warmup: WARMUP,
            latency: if cli.quick { LATENCY_QUICK } else { LATENCY },
        },
        missing: &missing,
    };

    let mut rows = Vec::new();
    for (turn, name) in scenarios.iter().enumerate() {
        if *name == "hit-1k-h2" && loader.tool_for(load::Protocol::Http2).is_none() {
            continue;
        }
        eprintln!("[{:>5.1}s] {name}…", started.elapsed().as_secs_f64());
        rows.extend(bench.run(name, turn, &mut servers));
    }
    drop(servers);

    let mut versions = vec![(
        "edge".to_owned(),
        Some(format!("{edge_version} (git {rev})")),
    )];
    versions.extend(
        tools
            .versions()
            .into_iter()
            .map(|(name, version)| (name.to_owned(), version)),
    );
    let all_valid = rows.iter().all(|r| r.valid);
    let run = report::Run {
        date,
        quick: cli.quick,
        machine,
        versions,
        placement: placement.describe(),
        rounds,
        round_s: round.as_secs_f64(),
        notes,
        rows,
        elapsed_s: started.elapsed().as_secs_f64(),
    };

    println!("edge-bench {} — {}", run.date, run.machine.describe());
    println!("{}", run.placement);
    for (name, version) in &run.versions {
        println!(
            "  {name}: {}",
            version.as_deref().unwrap_or("not installed")
        );
    }
    for note in &run.notes {
        println!("note: {note}");
    }
    print!("{}", report::text(&run));

    let json_path = match cli.json {
        Some(path) => path,
        None => workspace.join("target/edge-bench/last.json"),
    };
    if let Some(parent) = json_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&run)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("JSON: {}", json_path.display());
    if cli.quick || cli.no_record {
        println!("not recorded in bench/RESULTS.md (--quick / --no-record)");
    } else {
        let results = workspace.join("bench/RESULTS.md");
        report::append_results(&results, &run)
            .with_context(|| format!("appending to {}", results.display()))?;
        println!("appended to {}", results.display());
    }
    println!("whole run: {:.0} s", run.elapsed_s);
    Ok(all_valid)
}

type PeerStart =
    fn(&Path, std::net::SocketAddr, &Placement, &tls::TlsFiles) -> anyhow::Result<Peer>;

/// The scenarios named, in the order named; a name that is no scenario
/// but the start of some (`disk` for `disk-64k` and `disk-1m`) picks them
/// all. Each runs once.
fn chosen_scenarios(names: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(scenario::ALL.to_vec());
    }
    let mut chosen = Vec::new();
    for name in names {
        let group_prefix = format!("{name}-");
        let matching: Vec<&'static str> = match scenario::ALL.iter().find(|s| **s == name.as_str())
        {
            Some(known) => vec![*known],
            None => scenario::ALL
                .iter()
                .copied()
                .filter(|s| s.starts_with(&group_prefix))
                .collect(),
        };
        if matching.is_empty() {
            bail!(
                "unknown scenario {name:?}; known: {} (or a group: disk, hit)",
                scenario::ALL.join(" ")
            );
        }
        for scenario in matching {
            if !chosen.contains(&scenario) {
                chosen.push(scenario);
            }
        }
    }
    Ok(chosen)
}

/// Folders whose code goes into the `edge` binary.
const EDGE_SOURCES: &[&str] = &["edge", "cache", "config", "lb", "origin-shield"];

/// The commit edge was built from, and which of its folders had
/// uncommitted changes (a shared work tree often has some).
fn edge_revision(workspace: &Path) -> String {
    let Some(rev) = tools::first_line("git", &["rev-parse", "--short", "HEAD"], workspace) else {
        return "unknown".into();
    };
    let mut args = vec!["status", "--porcelain", "--"];
    args.extend(EDGE_SOURCES);
    let output = std::process::Command::new("git")
        .args(&args)
        .current_dir(workspace)
        .output();
    let changed: Vec<&str> = match &output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            EDGE_SOURCES
                .iter()
                .copied()
                .filter(|dir| {
                    text.lines().any(|line| {
                        line.get(3..)
                            .is_some_and(|p| p.starts_with(&format!("{dir}/")))
                    })
                })
                .collect()
        }
        _ => return format!("{rev} (work tree state unknown)"),
    };
    if changed.is_empty() {
        rev
    } else {
        format!("{rev} + uncommitted changes in {}", changed.join(", "))
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .context("bench crate has no parent directory")
}

/// A storm holds 1,000 sockets at once: raise the soft open-file limit to
/// the hard one.
fn raise_fd_limit() {
    // SAFETY: rlimit is plain data; get/setrlimit have no other preconditions.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scenarios_by_name_and_group() {
        assert_eq!(chosen_scenarios(&[]).unwrap(), scenario::ALL);
        assert_eq!(
            chosen_scenarios(&names(&["disk"])).unwrap(),
            ["disk-64k", "disk-1m"]
        );
        assert_eq!(
            chosen_scenarios(&names(&["disk-1m", "hit-1k", "disk"])).unwrap(),
            ["disk-1m", "hit-1k", "disk-64k"]
        );
        assert_eq!(
            chosen_scenarios(&names(&["hit-1k"])).unwrap(),
            ["hit-1k"],
            "an exact name is not also a group"
        );
        assert!(chosen_scenarios(&names(&["dis"])).is_err());
        assert!(chosen_scenarios(&names(&["hit-2k"])).is_err());
    }
}
