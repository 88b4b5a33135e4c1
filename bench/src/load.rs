//! Driving load: wrk for HTTP/1.1, h2load for HTTP/2 (h2c with prior
//! knowledge), oha as the fallback for either. Every run is bounded in
//! time, pinned to the load CPUs, and parsed into one [`LoadResult`].
//!
//! wrk's own summary is read through a Lua `done()` hook that prints one
//! machine-readable line, so no human-oriented output is scraped; h2load
//! prints no percentiles, so they come from its per-request log file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::pin::Placement;
use crate::tools::Tools;

/// Time a load tool may overrun its duration (start-up, draining, the
/// log file) before it is killed and the run fails.
const OVERRUN: Duration = Duration::from_secs(20);

/// HTTP/2 streams per connection in h2 runs: 64 requests in flight, as in
/// the HTTP/1.1 scenarios, over a quarter of the connections.
const H2_STREAMS: u32 = 4;

/// wrk `done()` hook: one line the harness parses.
const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "EDGE-BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// wrk script for runs over many objects: each thread pre-formats one
/// request per object in `init` and `request` hands them out in turn, so
/// the per-request cost is a table lookup (wrk's `done()` hook follows).
const WRK_ROTATE: &str = r#"
local requests = {}
local turn = 0
init = function(args)
  local prefix, count = args[1], tonumber(args[2])
  for i = 0, count - 1 do
    requests[i + 1] = wrk.format(nil, prefix .. i)
  end
end
request = function()
  turn = turn % #requests + 1
  return requests[turn]
end
"#;

/// The protocol a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// HTTP/1.1 with keepalive (or `Connection: close`).
    Http1,
    /// HTTP/2 over cleartext, prior knowledge.
    Http2,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Full URL.
    pub url: String,
    /// Requests in flight.
    pub concurrency: u32,
    /// How long to drive load.
    pub duration: Duration,
    /// New connection per request (`Connection: close`).
    pub close: bool,
    /// HTTP/1.1 or h2c.
    pub protocol: Protocol,
    /// Requests rotate over many objects instead of repeating the URL's
    /// path (wrk only).
    pub rotate: Option<Rotation>,
}

/// Objects `prefix` + `0` … `prefix` + (`count` - 1), requested in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Path prefix, e.g. `/disk/64k/`.
    pub prefix: String,
    /// How many objects.
    pub count: u32,
}

/// What a load run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResult {
    /// The tool that drove it.
    pub tool: String,
    /// Requests completed.
    pub requests: u64,
    /// Seconds the tool measured over.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Failed requests: socket errors, timeouts, non-2xx answers.
    pub errors: u64,
    /// What the errors were, when there were any.
    pub error_detail: String,
    /// CPU seconds the load tool used.
    pub client_cpu_s: f64,
}

/// Runs load tools from a scratch directory.
pub struct Loader {
    tools: Tools,
    placement: Placement,
    dir: PathBuf,
    /// CA of the generated certificate, for the TLS churn client.
    ca: PathBuf,
}

impl Loader {
    /// A loader writing its scripts and logs under `dir`.
    pub fn new(
        tools: Tools,
        placement: Placement,
        dir: &Path,
        ca: &Path,
    ) -> anyhow::Result<Loader> {
        fs::write(dir.join("report.lua"), WRK_SCRIPT)?;
        fs::write(dir.join("rotate.lua"), format!("{WRK_ROTATE}{WRK_SCRIPT}"))?;
        Ok(Loader {
            tools,
            placement,
            dir: dir.to_owned(),
            ca: ca.to_owned(),
        })
    }

    /// Which tool would drive `protocol`, if any is installed.
    pub fn tool_for(&self, protocol: Protocol) -> Option<&'static str> {
        match protocol {
            Protocol::Http1 if self.tools.wrk.is_some() => Some("wrk"),
            Protocol::Http2 if self.tools.h2load.is_some() => Some("h2load"),
            _ if self.tools.oha.is_some() => Some("oha"),
            _ => None,
        }
    }

    /// Drives `spec` and parses the result.
    pub fn run(&self, spec: &LoadSpec) -> anyhow::Result<LoadResult> {
        let threads = self
            .placement
            .load_cores()
            .min(spec.concurrency as usize)
            .max(1);
        let secs = spec.duration.as_secs().max(1);
        let stdout_path = self.dir.join("load.out");
        let h2_log = self.dir.join("h2load.log");
        // A new TLS connection per request: the harness's own rustls
        // client (no resumption), run as a child like the other tools.
        let churn = spec.close && spec.url.starts_with("https://");
        let tool = if churn {
            Some(crate::tls::CHURN)
        } else {
            self.tool_for(spec.protocol)
        };
        if spec.rotate.is_some() && tool != Some("wrk") {
            bail!("runs over many objects need wrk (apt-get install wrk)");
        }
        let (tool, mut command) = match (tool, &self.tools) {
            (Some(crate::tls::CHURN), _) => {
                let mut command = Command::new(std::env::current_exe()?);
                command
                    .arg(crate::tls::CHURN)
                    .arg(&spec.url)
                    .arg(secs.to_string())
                    .arg(spec.concurrency.to_string())
                    .arg(threads.to_string())
                    .arg(&self.ca);
                ("rustls-churn", command)
            }
            (Some("wrk"), Tools { wrk: Some(wrk), .. }) => {
                let mut command = Command::new(wrk);
                command
                    .arg(format!("-t{threads}"))
                    .arg(format!("-c{}", spec.concurrency))
                    .arg(format!("-d{secs}s"))
                    .arg("-s");
                match &spec.rotate {
                    Some(_) => command.arg(self.dir.join("rotate.lua")),
                    None => command.arg(self.dir.join("report.lua")),
                };
                if spec.close {
                    command.args(["-H", "Connection: close"]);
                }
                command.arg(&spec.url);
                if let Some(rotate) = &spec.rotate {
                    // The script's init(args): what follows `--`.
                    command
                        .arg("--")
                        .arg(&rotate.prefix)
                        .arg(rotate.count.to_string());
                }
                ("wrk", command)
            }
            (
                Some("h2load"),
                Tools {
                    h2load: Some(h2load),
                    ..
                },
            ) => {
                let connections = (spec.concurrency / H2_STREAMS).max(1);
                let _ = fs::remove_file(&h2_log);
                let mut command = Command::new(h2load);
                command
                    .arg(format!("-c{connections}"))
                    .arg(format!("-m{H2_STREAMS}"))
                    .arg(format!("-t{}", threads.min(connections as usize)))
                    .arg(format!("-D{secs}"))
                    .arg(format!("--log-file={}", h2_log.display()))
                    .arg(&spec.url);
                ("h2load", command)
            }
            (Some("oha"), Tools { oha: Some(oha), .. }) => {
                let mut command = Command::new(oha);
                command
                    .arg("-z")
                    .arg(format!("{secs}s"))
                    .arg("--no-tui")
                    .args(["--output-format", "json"]);
                if spec.protocol == Protocol::Http2 {
                    let connections = (spec.concurrency / H2_STREAMS).max(1);
                    command
                        .arg("--http2")
                        .arg("-c")
                        .arg(connections.to_string())
                        .arg("-p")
                        .arg(H2_STREAMS.to_string());
                } else {
                    command.arg("-c").arg(spec.concurrency.to_string());
                }
                if spec.close {
                    command.arg("--disable-keepalive");
                }
                command.arg(&spec.url);
                ("oha", command)
            }
            _ => bail!(
                "no load generator for {:?}: apt-get install wrk nghttp2-client, or cargo install oha",
                spec.protocol
            ),
        };
        crate::pin::command(&mut command, &self.placement.load, self.placement.nice);
        command
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path)?)
            .stderr(fs::File::create(self.dir.join("load.err"))?);

        let cpu_before = children_cpu_s();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {tool}"))?;
        let until = Instant::now() + spec.duration + OVERRUN;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{tool} ran past {:?}; killed", spec.duration + OVERRUN);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let client_cpu_s = children_cpu_s() - cpu_before;
        let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
        if !status.success() {
            let stderr = fs::read_to_string(self.dir.join("load.err")).unwrap_or_default();
            bail!(
                "{tool} failed ({status}): {}{}",
                stdout.trim(),
                stderr.trim()
            );
        }
        let mut result = match tool {
            "wrk" | "rustls-churn" => parse_wrk(&stdout),
            "h2load" => parse_h2load(&stdout, &fs::read_to_string(&h2_log).unwrap_or_default()),
            _ => parse_oha(&stdout),
        }
        .with_context(|| format!("reading {tool}'s output: {}", stdout.trim()))?;
        result.tool = tool.to_owned();
        result.client_cpu_s = client_cpu_s;
        Ok(result)
    }
}

/// CPU seconds of all waited-for children so far (`RUSAGE_CHILDREN`): its
/// growth across one load run is that run's client CPU.
fn children_cpu_s() -> f64 {
    // SAFETY: rusage is plain data that getrusage fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Reads the `EDGE-BENCH key=value …` line of the wrk hook.
pub fn parse_wrk(stdout: &str) -> anyhow::Result<LoadResult> {
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("EDGE-BENCH "))
        .context("no EDGE-BENCH line (did the Lua done() hook run?)")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}="))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    let requests = field("requests")?;
    let seconds = field("duration_us")? as f64 / 1e6;
    let kinds = ["connect", "read", "write", "status", "timeout"];
    let mut errors = 0;
    let mut detail = Vec::new();
    for kind in kinds {
        let n = field(kind)?;
        if n > 0 {
            errors += n;
            let label = if kind == "status" {
                "non-2xx/3xx"
            } else {
                kind
            };
            detail.push(format!("{label} {n}"));
        }
    }
    Ok(LoadResult {
        requests,
        seconds,
        rps: rate(requests, seconds),
        p50_ms: field("p50_us")? as f64 / 1e3,
        p99_ms: field("p99_us")? as f64 / 1e3,
        errors,
        error_detail: detail.join(", "),
        ..LoadResult::default()
    })
}

/// Reads h2load's summary (requests, failures, status classes) and computes
/// percentiles from its per-request log (`start_us \t status \t duration_us`).
pub fn parse_h2load(stdout: &str, log: &str) -> anyhow::Result<LoadResult> {
    let finished = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("finished in "))
        .context("no `finished in` line")?;
    let seconds = parse_duration_s(finished.split(',').next().unwrap_or_default())
        .context("unreadable `finished in` time")?;
    let requests_line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("requests: "))
        .context("no `requests:` line")?;
    let counted = |line: &str, label: &str| -> Option<u64> {
        line.split(',')
            .map(str::trim)
            .find_map(|part| part.strip_suffix(label)?.trim().parse().ok())
    };
    let succeeded = counted(requests_line, "succeeded").context("no `succeeded` count")?;
    let failed = counted(requests_line, "failed").unwrap_or(0);
    let errored = counted(requests_line, "errored").unwrap_or(0);
    let timeout = counted(requests_line, "timeout").unwrap_or(0);
    let status_line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("status codes: "))
        .unwrap_or_default();
    let bad_status: u64 = ["3xx", "4xx", "5xx"]
        .iter()
        .filter_map(|class| counted(status_line, class))
        .sum();

    let mut durations: Vec<u64> = log
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let _start = fields.next()?;
            let status: u16 = fields.next()?.trim().parse().ok()?;
            let duration: u64 = fields.next()?.trim().parse().ok()?;
            (200..300).contains(&status).then_some(duration)
        })
        .collect();
    if durations.is_empty() {
        bail!("h2load's log file holds no successful request");
    }
    durations.sort_unstable();
    let mut detail = Vec::new();
    for (label, n) in [
        ("failed", failed),
        ("errored", errored),
        ("timeout", timeout),
        ("non-2xx", bad_status),
    ] {
        if n > 0 {
            detail.push(format!("{label} {n}"));
        }
    }
    Ok(LoadResult {
        requests: succeeded,
        seconds,
        rps: rate(succeeded, seconds),
        p50_ms: percentile(&durations, 50.0) as f64 / 1e3,
        p99_ms: percentile(&durations, 99.0) as f64 / 1e3,
        // `failed` already includes errored and timed-out requests.
        errors: failed.max(errored + timeout) + bad_status,
        error_detail: detail.join(", "),
        ..LoadResult::default()
    })
}

/// Reads oha's JSON summary (`--output-format json`).
pub fn parse_oha(stdout: &str) -> anyhow::Result<LoadResult> {
    let start = stdout.find('{').context("no JSON object")?;
    let json: serde_json::Value = serde_json::from_str(&stdout[start..]).context("bad JSON")?;
    let seconds = json["summary"]["total"]
        .as_f64()
        .context("no summary.total")?;
    let ok: u64 = json["statusCodeDistribution"]
        .as_object()
        .map(|codes| {
            codes
                .iter()
                .filter(|(code, _)| code.starts_with('2'))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let all_answers: u64 = json["statusCodeDistribution"]
        .as_object()
        .map(|codes| codes.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or(0);
    // Requests in flight when `-z` runs out are "aborted due to deadline":
    // the end of the run, not a failure.
    let socket_errors: u64 = json["errorDistribution"]
        .as_object()
        .map(|errors| {
            errors
                .iter()
                .filter(|(kind, _)| !kind.contains("deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let ms = |key: &str| json["latencyPercentiles"][key].as_f64().unwrap_or(f64::NAN) * 1e3;
    let errors = all_answers - ok + socket_errors;
    let error_detail = if errors > 0 {
        format!(
            "non-2xx {}, errors {}",
            all_answers - ok,
            json["errorDistribution"]
        )
    } else {
        String::new()
    };
    Ok(LoadResult {
        requests: ok,
        seconds,
        rps: rate(ok, seconds),
        p50_ms: ms("p50"),
        p99_ms: ms("p99"),
        errors,
        error_detail,
        ..LoadResult::default()
    })
}

fn rate(requests: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        requests as f64 / seconds
    } else {
        0.0
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// "10.00s", "523.12ms", "12us" -> seconds.
fn parse_duration_s(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wrk_hook_line() {
        let out = "Running 10s test @ http://127.0.0.1:1/1k\n  1 threads and 64 connections\n\
                   EDGE-BENCH requests=1200000 duration_us=10000000 connect=0 read=2 write=0 \
                   status=3 timeout=0 p50_us=450 p99_us=1200\n";
        let result = parse_wrk(out).unwrap();
        assert_eq!(result.requests, 1_200_000);
        assert!((result.rps - 120_000.0).abs() < 1e-6);
        assert!((result.p50_ms - 0.45).abs() < 1e-9);
        assert!((result.p99_ms - 1.2).abs() < 1e-9);
        assert_eq!(result.errors, 5);
        assert_eq!(result.error_detail, "read 2, non-2xx/3xx 3");
    }

    #[test]
    fn a_missing_hook_line_is_an_error() {
        assert!(parse_wrk("Running 10s test\n").is_err());
    }

    #[test]
    fn reads_h2load_summary_and_log() {
        let out = "finished in 2.00s, 5.00 req/s, 1KB/s\n\
                   requests: 10 total, 10 started, 10 done, 9 succeeded, 1 failed, 0 errored, 0 timeout\n\
                   status codes: 9 2xx, 0 3xx, 0 4xx, 1 5xx\n";
        let log: String = (1..=9)
            .map(|i| format!("1700000000{i}\t200\t{}\n", i * 100))
            .chain(std::iter::once("1700000000\t503\t50\n".to_owned()))
            .collect();
        let result = parse_h2load(out, &log).unwrap();
        assert_eq!(result.requests, 9);
        assert!((result.seconds - 2.0).abs() < 1e-9);
        assert!((result.p50_ms - 0.5).abs() < 1e-9);
        assert!((result.p99_ms - 0.9).abs() < 1e-9);
        assert_eq!(result.errors, 2);
    }

    #[test]
    fn reads_oha_json() {
        let out = r#"{"summary":{"successRate":1.0,"total":2.0,"requestsPerSec":50.0},
            "latencyPercentiles":{"p50":0.0005,"p99":0.002},
            "statusCodeDistribution":{"200":100},
            "errorDistribution":{"aborted due to deadline":4}}"#;
        let result = parse_oha(out).unwrap();
        assert_eq!(result.requests, 100);
        assert!((result.rps - 50.0).abs() < 1e-9);
        assert!((result.p99_ms - 2.0).abs() < 1e-9);
        assert_eq!(result.errors, 0);
    }

    #[test]
    fn durations_and_percentiles() {
        assert_eq!(parse_duration_s("10.00s"), Some(10.0));
        assert_eq!(parse_duration_s("250ms"), Some(0.25));
        assert_eq!(parse_duration_s("ten"), None);
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 99.0), 4);
        assert_eq!(percentile(&[7], 1.0), 7);
    }
}
