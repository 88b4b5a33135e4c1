//! The scenarios and how each one is run against every peer: prime and
//! warm, measure in interleaved rounds, verify (hits stayed hits, nothing
//! failed), and turn the measurements into one [`Row`] per peer.
//!
//! On a shared machine another tenant's burst can land on any one
//! measurement (shared/research/io_uring.md §1), so a scenario's measured
//! time is split into rounds that visit the peers in turn, each round in a
//! rotated order. A peer's reported figures are those of its least
//! disturbed round (least foreign CPU); every round stays in the JSON and
//! the table shows the spread of CPU µs/req across them.
//!
//! The disk scenarios (`disk-64k`, `disk-1m`) live in the `disk` child
//! module: their own edge peers, objects warmed onto disk, and answers
//! sampled during the rounds.

mod disk;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use crate::load::{LoadResult, LoadSpec, Loader, Protocol};
use crate::measure::{Window, WindowCpu};
use crate::origin::Origin;
use crate::peers::{Kind, Peer};
use crate::storm::{self, StormResult};

pub use disk::Samples;

/// Requests in flight in the load scenarios (HTTP/1.1: one per connection).
pub const CONCURRENCY: u32 = 64;

/// A client core this busy or more is the bottleneck: rank by CPU µs/req.
const CLIENT_SATURATED: f64 = 0.90;

/// Other tenants using this many cores or more make a run noisy.
const NOISY_CORES: f64 = 0.10;

/// Every scenario, in run order.
pub const ALL: &[&str] = &[
    "hit-1k",
    "hit-64k",
    "hit-1m",
    "hit-1k-h2",
    "miss-passthrough",
    "coalesce-storm",
    "conn-churn",
    "tls-handshake",
    "hit-1k-tls",
    "disk-64k",
    "disk-1m",
];

/// Whether `name` is one of the disk scenarios, which run against their
/// own edge peers (`edge-uring`, `edge-blocking`).
pub fn is_disk(name: &str) -> bool {
    matches!(plan(name), Some(Plan::Disk { .. }))
}

/// What one scenario does.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Cached object under load; every request must be a hit.
    Hit {
        path: &'static str,
        protocol: Protocol,
        close: bool,
        /// Over HTTPS (the peers' TLS listeners).
        tls: bool,
    },
    /// Uncacheable object: every request reaches the origin.
    Miss,
    /// 1,000 concurrent requests for one cold object.
    Storm,
    /// Hits from the disk tier over `count` objects `prefix` + 0, 1, …
    Disk { prefix: &'static str, count: u32 },
}

/// Whether a peer takes part in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Takes,
    /// It gets a row saying why not.
    Skipped(&'static str),
    /// No row: another configuration of the same server stands for it.
    Absent,
}

fn part(plan: Plan, kind: Kind) -> Part {
    match (plan, kind) {
        (Plan::Disk { .. }, Kind::EdgeDisk(_) | Kind::Nginx) => Part::Takes,
        (Plan::Disk { .. }, Kind::Varnish) => {
            Part::Skipped("its storage here is malloc (memory): no disk hits to measure")
        }
        // edge-uring and edge-blocking are edge in the disk scenarios, and
        // only there (their memory tier takes nothing over 32 KiB).
        (Plan::Disk { .. }, Kind::Edge) | (_, Kind::EdgeDisk(_)) => Part::Absent,
        _ => Part::Takes,
    }
}

fn plan(name: &str) -> Option<Plan> {
    let hit = |path, protocol, close| Plan::Hit {
        path,
        protocol,
        close,
        tls: false,
    };
    let tls = |close| Plan::Hit {
        path: "/1k",
        protocol: Protocol::Http1,
        close,
        tls: true,
    };
    Some(match name {
        "hit-1k" => hit("/1k", Protocol::Http1, false),
        "hit-64k" => hit("/64k", Protocol::Http1, false),
        "hit-1m" => hit("/1m", Protocol::Http1, false),
        "hit-1k-h2" => hit("/1k", Protocol::Http2, false),
        "conn-churn" => hit("/1k", Protocol::Http1, true),
        "tls-handshake" => tls(true),
        "hit-1k-tls" => tls(false),
        "miss-passthrough" => Plan::Miss,
        "coalesce-storm" => Plan::Storm,
        "disk-64k" => Plan::Disk {
            prefix: "/disk/64k/",
            count: disk::OBJECTS,
        },
        "disk-1m" => Plan::Disk {
            prefix: "/disk/1m/",
            count: disk::OBJECTS,
        },
        _ => return None,
    })
}

/// How a hit scenario drives load.
#[derive(Debug, Clone, Copy)]
struct HitLoad {
    path: &'static str,
    protocol: Protocol,
    close: bool,
    tls: bool,
}

/// Timing of a run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Measured time per round, per peer.
    pub round: Duration,
    /// Rounds per scenario.
    pub rounds: u32,
    /// Unmeasured load before the first round (connections, pools, threads warm).
    pub warmup: Duration,
    /// The one-connection latency phase of miss-passthrough.
    pub latency: Duration,
}

/// One round's figures, kept for the JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Round {
    /// Requests per second.
    pub rps: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Server CPU per request, µs.
    pub cpu_us_per_req: Option<f64>,
    /// Other tenants' CPU, cores.
    pub foreign_cores: f64,
}

/// One peer's figures in one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Peer name (`origin-direct` for the baseline).
    pub peer: String,
    /// The least disturbed round's load figures (absent for the storm).
    pub load: Option<LoadResult>,
    /// Server CPU per request in that round, µs (the ranking figure).
    pub cpu_us_per_req: Option<f64>,
    /// Lowest and highest CPU µs/req over all rounds.
    pub cpu_us_per_req_range: Option<(f64, f64)>,
    /// Server CPU over that round, in cores.
    pub server_cores: Option<f64>,
    /// Load generator CPU as a fraction of its cores, in that round.
    pub client_busy: Option<f64>,
    /// Other tenants' CPU over that round, in cores.
    pub foreign_cores: f64,
    /// Every round.
    pub rounds: Vec<Round>,
    /// Origin requests during all measured rounds.
    pub origin_requests: u64,
    /// miss-passthrough: p50 over direct-to-origin p50 at one connection, ms.
    pub added_latency_ms: Option<f64>,
    /// miss-passthrough: p50 with one connection, ms.
    pub p50_one_conn_ms: Option<f64>,
    /// coalesce-storm: the client side.
    pub storm: Option<StormResult>,
    /// Disk scenarios: answers sampled during the measured rounds.
    pub disk_samples: Option<Samples>,
    /// Whether every check passed.
    pub valid: bool,
    /// The peer could not take part (e.g. no h2c); not a failure.
    pub skipped: bool,
    /// What went wrong or needs a caveat.
    pub notes: Vec<String>,
}

/// Everything a scenario needs.
pub struct Bench<'a> {
    /// The origin.
    pub origin: &'a Origin,
    /// The load generator.
    pub loader: &'a Loader,
    /// Load CPU count, for the client-busy figure.
    pub load_cores: usize,
    /// Durations.
    pub timing: Timing,
    /// edge configurations that did not start, and why: a failed row in
    /// each scenario they belong to (edge-uring where io_uring is refused).
    pub missing: &'a [(Kind, String)],
}

/// A system being measured in a load scenario.
struct Target {
    row: Row,
    spec: LoadSpec,
    /// Server process to account; `None` for the origin itself.
    pid: Option<u32>,
    /// Answers to sample and check while each round runs.
    probe: Option<disk::Probe>,
    measured: Vec<Measured>,
}

/// One measured round of one target.
struct Measured {
    load: Result<LoadResult, String>,
    cpu: WindowCpu,
    origin_requests: u64,
    samples: Option<Samples>,
}

impl Bench<'_> {
    /// Runs scenario `name` (`turn` rotates the peer order) against
    /// `peers`. Peers that cannot take part get a row saying why.
    pub fn run(&self, name: &str, turn: usize, peers: &mut [Peer]) -> Vec<Row> {
        let Some(plan) = plan(name) else {
            return Vec::new();
        };
        let mut order: Vec<usize> = (0..peers.len())
            .filter(|&i| part(plan, peers[i].kind) == Part::Takes)
            .collect();
        let taking = order.len().max(1);
        order.rotate_left(turn % taking);
        let mut rows = match plan {
            Plan::Storm => order.iter().map(|&i| self.storm(name, &peers[i])).collect(),
            Plan::Hit {
                path,
                protocol,
                close,
                tls,
            } => {
                let mut finished = Vec::new();
                let mut targets = Vec::new();
                for &i in &order {
                    let how = HitLoad {
                        path,
                        protocol,
                        close,
                        tls,
                    };
                    match self.prepare_hit(name, &peers[i], how) {
                        Ok(target) => targets.push(target),
                        Err(row) => finished.push(*row),
                    }
                }
                self.rounds(&mut targets);
                let mut rows: Vec<Row> = targets
                    .into_iter()
                    .map(|t| self.summarise(t, true))
                    .collect();
                rows.extend(finished);
                rows
            }
            Plan::Miss => self.miss(name, peers, &order),
            Plan::Disk { prefix, count } => self.disk(name, prefix, count, peers, &order),
        };
        for peer in peers.iter() {
            if let Part::Skipped(why) = part(plan, peer.kind) {
                rows.push(Row::new(name, peer.kind.name()).skipped(why));
            }
        }
        for (kind, why) in self.missing {
            if part(plan, *kind) == Part::Takes {
                rows.push(Row::new(name, kind.name()).failed(format!("did not start: {why}")));
            }
        }
        for row in &mut rows {
            if let Some(peer) = peers.iter_mut().find(|p| p.kind.name() == row.peer)
                && !peer.alive()
            {
                row.valid = false;
                row.notes.push(format!(
                    "{} exited during the run; its log: {}",
                    row.peer,
                    crate::peers::tail(&peer.log())
                ));
            }
        }
        rows
    }

    /// Primes the cache (first request fills it) and warms the peer up.
    fn prepare_hit(&self, name: &str, peer: &Peer, how: HitLoad) -> Result<Target, Box<Row>> {
        let HitLoad {
            path,
            protocol,
            close,
            tls,
        } = how;
        let row = Row::new(name, peer.kind.name());
        let addr = match protocol {
            Protocol::Http1 if tls => peer.tls.ok_or_else(|| {
                Box::new(row.clone().skipped(&format!(
                    "{} has no TLS listener here (Varnish has no TLS)",
                    peer.kind.name()
                )))
            })?,
            Protocol::Http1 => peer.h1,
            Protocol::Http2 => peer
                .h2
                .ok_or_else(|| Box::new(row.clone().skipped("does not serve h2c")))?,
        };
        for _ in 0..2 {
            match block_on(crate::client::get(peer.h1, path)) {
                Ok(answer) if answer.status == 200 => {}
                Ok(answer) => {
                    let why = format!("priming {path}: status {}", answer.status);
                    return Err(Box::new(row.failed(why)));
                }
                Err(error) => {
                    return Err(Box::new(row.failed(format!("priming {path}: {error:#}"))));
                }
            }
        }
        let mut spec = self.spec(addr, path, protocol, close);
        if tls {
            spec.url = format!("https://{addr}{path}");
        }
        if let Err(error) = self.warm(&spec) {
            let what = if protocol == Protocol::Http2 {
                "h2c (prior knowledge) warm-up failed"
            } else {
                "warm-up failed"
            };
            let why = format!("{what}: {error:#}");
            // A peer that cannot take part is skipped; edge must.
            return Err(Box::new(match peer.kind {
                kind if kind.is_edge() => row.failed(why),
                _ => row.skipped(&why),
            }));
        }
        Ok(Target {
            row,
            spec,
            pid: Some(peer.pid()),
            probe: None,
            measured: Vec::new(),
        })
    }

    fn miss(&self, name: &str, peers: &[Peer], order: &[usize]) -> Vec<Row> {
        let mut targets = Vec::new();
        let mut finished = Vec::new();
        let systems = std::iter::once(("origin-direct", self.origin.addr, None)).chain(
            order
                .iter()
                .map(|&i| (peers[i].kind.name(), peers[i].h1, Some(peers[i].pid()))),
        );
        for (system, addr, pid) in systems {
            let row = Row::new(name, system);
            let spec = self.spec(addr, "/nostore", Protocol::Http1, false);
            match self.warm(&spec) {
                Ok(()) => targets.push(Target {
                    row,
                    spec,
                    pid,
                    probe: None,
                    measured: Vec::new(),
                }),
                Err(error) => finished.push(row.failed(format!("warm-up failed: {error:#}"))),
            }
        }
        self.rounds(&mut targets);
        let mut rows: Vec<Row> = targets
            .into_iter()
            .map(|target| {
                let spec = target.spec.clone();
                let mut row = self.summarise(target, false);
                self.one_connection(&mut row, spec);
                row
            })
            .collect();
        let direct = rows
            .iter()
            .find(|r| r.peer == "origin-direct")
            .and_then(|r| r.p50_one_conn_ms);
        for row in &mut rows {
            if row.peer != "origin-direct" {
                row.added_latency_ms = row.p50_one_conn_ms.zip(direct).map(|(p, d)| p - d);
            }
        }
        rows.extend(finished);
        rows
    }

    fn spec(&self, addr: SocketAddr, path: &str, protocol: Protocol, close: bool) -> LoadSpec {
        LoadSpec {
            url: format!("http://{addr}{path}"),
            concurrency: CONCURRENCY,
            duration: self.timing.round,
            close,
            protocol,
            rotate: None,
        }
    }

    /// The measured rounds: every target once per round, rotating.
    fn rounds(&self, targets: &mut [Target]) {
        let count = targets.len();
        for round in 0..self.timing.rounds as usize {
            for k in 0..count {
                let target = &mut targets[(k + round) % count];
                let measured = self.measure(target.pid, &target.spec, target.probe.as_ref());
                target.measured.push(measured);
            }
        }
    }

    /// One measured round: a CPU window around one load run (and the
    /// probe's samples, taken on a thread of their own meanwhile).
    fn measure(
        &self,
        server: Option<u32>,
        spec: &LoadSpec,
        probe: Option<&disk::Probe>,
    ) -> Measured {
        let before = self.origin.counts.total();
        let window = Window::start();
        let (load, samples) = std::thread::scope(|scope| {
            let (stop, stopped) = mpsc::channel::<()>();
            let sampler = probe.map(|probe| scope.spawn(move || probe.sample_until(&stopped)));
            let load = self.loader.run(spec).map_err(|e| format!("{e:#}"));
            drop(stop);
            let samples = sampler.map(|thread| thread.join().unwrap_or_default());
            (load, samples)
        });
        let this = std::process::id();
        let client_s = load.as_ref().map_or(0.0, |l| l.client_cpu_s);
        let cpu = window.finish(server.unwrap_or(this), &[this], client_s);
        Measured {
            load,
            cpu: if server.is_some() {
                cpu
            } else {
                // The origin runs inside the harness; its CPU is not a server's.
                WindowCpu {
                    server_s: f64::NAN,
                    ..cpu
                }
            },
            origin_requests: self.origin.counts.total() - before,
            samples,
        }
    }

    /// Turns a target's rounds into its row; `hits` demands no origin traffic.
    fn summarise(&self, target: Target, hits: bool) -> Row {
        let Target {
            mut row, measured, ..
        } = target;
        row.origin_requests = measured.iter().map(|m| m.origin_requests).sum();
        let mut errors = 0;
        let mut details = Vec::new();
        let mut answered = 0;
        for m in &measured {
            match &m.load {
                Ok(load) => {
                    answered += load.requests;
                    row.rounds.push(Round {
                        rps: load.rps,
                        p99_ms: load.p99_ms,
                        cpu_us_per_req: per_request(m.cpu.server_s, load.requests),
                        foreign_cores: m.cpu.foreign_s / m.cpu.wall_s,
                    });
                    if load.errors > 0 {
                        errors += load.errors;
                        details.push(load.error_detail.clone());
                    }
                }
                Err(error) => {
                    row.valid = false;
                    row.notes.push(error.clone());
                }
            }
        }
        if errors > 0 {
            row.valid = false;
            row.notes
                .push(format!("{errors} failed requests: {}", details.join("; ")));
        }
        disk::check_samples(&mut row, measured.iter().filter_map(|m| m.samples.as_ref()));
        if hits && row.origin_requests > 0 {
            row.valid = false;
            row.notes.push(format!(
                "{} origin requests during the measured rounds: not all hits",
                row.origin_requests
            ));
        }
        if !hits && row.origin_requests < answered {
            row.valid = false;
            row.notes.push(format!(
                "origin saw {} requests for {answered} answers: no-store answers were reused",
                row.origin_requests
            ));
        }
        let cpus: Vec<f64> = row.rounds.iter().filter_map(|r| r.cpu_us_per_req).collect();
        if let (Some(min), Some(max)) = (
            cpus.iter().copied().reduce(f64::min),
            cpus.iter().copied().reduce(f64::max),
        ) {
            row.cpu_us_per_req_range = Some((min, max));
        }
        // The least disturbed round speaks for the peer.
        let best = measured
            .iter()
            .filter(|m| m.load.is_ok())
            .min_by(|a, b| a.cpu.foreign_s.total_cmp(&b.cpu.foreign_s));
        let Some(best) = best else {
            row.valid = false;
            return row;
        };
        let Ok(load) = &best.load else {
            return row;
        };
        let wall = best.cpu.wall_s.max(1e-9);
        row.foreign_cores = best.cpu.foreign_s / wall;
        if best.cpu.server_s.is_finite() {
            row.server_cores = Some(best.cpu.server_s / wall);
            row.cpu_us_per_req = per_request(best.cpu.server_s, load.requests);
        }
        let busy = load.client_cpu_s / (load.seconds.max(1e-9) * self.load_cores as f64);
        row.client_busy = Some(busy);
        if busy >= CLIENT_SATURATED {
            row.notes.push(format!(
                "load generator {:.0}% busy: it is the bottleneck, rank by CPU µs/req",
                busy * 100.0
            ));
        }
        if row.foreign_cores >= NOISY_CORES {
            row.notes.push(format!(
                "noisy: other processes used {:.2} cores even in the least disturbed round",
                row.foreign_cores
            ));
        }
        row.load = Some(load.clone());
        row
    }

    /// Latency without queueing: one connection, one request at a time.
    fn one_connection(&self, row: &mut Row, spec: LoadSpec) {
        let spec = LoadSpec {
            concurrency: 1,
            duration: self.timing.latency,
            ..spec
        };
        match self.loader.run(&spec) {
            Ok(load) if load.errors == 0 => row.p50_one_conn_ms = Some(load.p50_ms),
            Ok(load) => row
                .notes
                .push(format!("one-connection run failed: {}", load.error_detail)),
            Err(error) => row
                .notes
                .push(format!("one-connection run failed: {error:#}")),
        }
    }

    fn storm(&self, name: &str, peer: &Peer) -> Row {
        let mut row = Row::new(name, peer.kind.name());
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = format!("/slow/{}-{nonce}", peer.kind.name());
        let window = Window::start();
        let result = storm::run(peer.h1, &path);
        let cpu = window.finish(peer.pid(), &[std::process::id()], 0.0);
        row.origin_requests = self.origin.counts.get(&path);
        row.foreign_cores = cpu.foreign_s / cpu.wall_s;
        row.server_cores = Some(cpu.server_s / cpu.wall_s);
        let result = match result {
            Ok(result) => result,
            Err(error) => return row.failed(format!("{error:#}")),
        };
        row.cpu_us_per_req = per_request(cpu.server_s, result.ok as u64);
        if result.failed > 0 {
            row.valid = false;
            row.notes.push(format!(
                "{} of {} requests failed: {}",
                result.failed,
                result.sent,
                result.failures.join("; ")
            ));
        }
        if row.foreign_cores >= NOISY_CORES {
            row.notes.push(format!(
                "noisy: other processes used {:.2} cores",
                row.foreign_cores
            ));
        }
        if row.origin_requests != 1 {
            row.notes.push(format!(
                "{} origin requests for one object (1 is perfect coalescing)",
                row.origin_requests
            ));
        }
        row.storm = Some(result);
        row
    }

    /// Unmeasured load, so connections, pools and threads are warm.
    fn warm(&self, spec: &LoadSpec) -> anyhow::Result<()> {
        let warm = LoadSpec {
            duration: self.timing.warmup,
            ..spec.clone()
        };
        let result = self.loader.run(&warm)?;
        if result.requests == 0 {
            anyhow::bail!("no request succeeded ({})", result.error_detail);
        }
        if result.errors * 2 > result.requests {
            anyhow::bail!("mostly failures: {}", result.error_detail);
        }
        Ok(())
    }
}

fn per_request(cpu_s: f64, requests: u64) -> Option<f64> {
    (requests > 0 && cpu_s.is_finite()).then(|| cpu_s * 1e6 / requests as f64)
}

impl Row {
    fn new(scenario: &str, peer: &str) -> Row {
        Row {
            scenario: scenario.to_owned(),
            peer: peer.to_owned(),
            valid: true,
            ..Row::default()
        }
    }

    fn skipped(mut self, why: &str) -> Row {
        self.skipped = true;
        self.notes.push(format!("skipped: {why}"));
        self
    }

    fn failed(mut self, why: String) -> Row {
        self.valid = false;
        self.notes.push(why);
        self
    }
}

/// Runs one of the harness's own requests. They are few; a runtime per
/// call keeps the harness free of a long-lived runtime thread.
fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_scenario_has_a_plan() {
        for name in ALL {
            assert!(plan(name).is_some(), "{name}");
        }
        assert!(plan("hit-2k").is_none());
        assert!(is_disk("disk-1m") && !is_disk("hit-1m"));
    }

    #[test]
    fn disk_scenarios_run_against_disk_peers() {
        use crate::peers::DiskIo;
        let disk = plan("disk-64k").unwrap();
        let hit = plan("hit-64k").unwrap();
        assert_eq!(part(disk, Kind::EdgeDisk(DiskIo::Uring)), Part::Takes);
        assert_eq!(part(disk, Kind::Nginx), Part::Takes);
        assert_eq!(part(disk, Kind::Edge), Part::Absent);
        assert!(matches!(part(disk, Kind::Varnish), Part::Skipped(_)));
        assert_eq!(part(hit, Kind::EdgeDisk(DiskIo::Blocking)), Part::Absent);
        assert_eq!(part(hit, Kind::Varnish), Part::Takes);
    }

    #[test]
    fn cpu_per_request() {
        assert_eq!(per_request(2.0, 1_000_000), Some(2.0));
        assert_eq!(per_request(2.0, 0), None);
        assert_eq!(per_request(f64::NAN, 10), None);
    }
}
