//! Reporting: the side-by-side table on stdout (every peer's ratio to
//! edge), the JSON file, and the dated row set appended to
//! `bench/RESULTS.md` with the machine and the versions measured.
//!
//! Ratios are peer ÷ edge for every column, so the reading is uniform:
//! CPU µs/req above 1 means the peer spends more CPU per request than
//! edge, req/s above 1 means the peer served more, p99 above 1 means the
//! peer's tail is slower.
//!
//! The disk scenarios have no plain `edge` row: there the baseline is
//! `edge-uring` (what `backend = "auto"` picks where the kernel allows
//! io_uring), so `edge-blocking`'s ratios read as "the fallback against
//! io_uring", and the ratio columns say `÷uring`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::scenario::Row;

/// The machine a run measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory.
    pub memory: String,
    /// /proc/loadavg when the run started.
    pub loadavg_at_start: String,
}

impl Machine {
    /// Reads this machine's description.
    pub fn read() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|line| line.starts_with(key))
                .and_then(|line| line.split_once(':'))
                .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned())
        };
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu: field(&cpuinfo, "model name"),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            memory: field(&meminfo, "MemTotal"),
            loadavg_at_start: read_trimmed("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// One line for humans.
    pub fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), Linux {}, {} RAM, loadavg at start {}",
            self.nproc, self.cpu, self.kernel, self.memory, self.loadavg_at_start
        )
    }
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path).map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// A whole run, as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// UTC start time, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// `--quick` smoke run or full run.
    pub quick: bool,
    /// The machine.
    pub machine: Machine,
    /// Program versions, `None` where not installed.
    pub versions: Vec<(String, Option<String>)>,
    /// CPU placement.
    pub placement: String,
    /// Interleaved rounds per scenario.
    pub rounds: u32,
    /// Seconds measured per round, per peer.
    pub round_s: f64,
    /// Peers skipped or scenarios limited, and why.
    pub notes: Vec<String>,
    /// Every row.
    pub rows: Vec<Row>,
    /// Whole run wall time, seconds.
    pub elapsed_s: f64,
}

/// A table that renders as aligned text or as Markdown.
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn text(&self, out: &mut String) {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|row| row[i].chars().count())
                    .chain([self.headers[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String], out: &mut String| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i == 0 {
                    text.push_str(&format!("  {cell}{}", " ".repeat(pad)));
                } else {
                    text.push_str(&format!("  {}{cell}", " ".repeat(pad)));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        line(&headers, out);
        for row in &self.rows {
            line(row, out);
        }
    }

    fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "| {} |", self.headers.join(" | "));
        let rule: Vec<&str> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(out, "| {} |", rule.join(" | "));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
    }
}

/// Table order: the origin baseline, edge's configurations, then the
/// peers by name.
fn rank(row: &Row) -> (u8, &str) {
    match row.peer.as_str() {
        "origin-direct" => (0, ""),
        "edge" => (1, ""),
        "edge-uring" => (2, ""),
        "edge-blocking" => (3, ""),
        other => (4, other),
    }
}

/// The row every ratio divides by: `edge`, or `edge-uring` in the disk
/// scenarios; only when it passed its checks.
fn baseline<'a>(rows: &[&'a Row]) -> Option<&'a Row> {
    ["edge", "edge-uring"]
        .iter()
        .find_map(|name| rows.iter().find(|r| r.peer == *name))
        .filter(|r| r.valid)
        .copied()
}

/// One scenario's rows in table order.
fn rows_of<'a>(run: &'a Run, scenario: &str) -> Vec<&'a Row> {
    let mut rows: Vec<&Row> = run.rows.iter().filter(|r| r.scenario == scenario).collect();
    rows.sort_by(|a, b| rank(a).cmp(&rank(b)));
    rows
}

/// The scenarios of `rows`, in first-seen order.
fn scenarios(rows: &[Row]) -> Vec<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for row in rows {
        if !seen.contains(&row.scenario.as_str()) {
            seen.push(&row.scenario);
        }
    }
    seen
}

fn table_for(rows: &[&Row]) -> Table {
    let storm = rows.iter().any(|r| r.storm.is_some());
    if storm {
        return storm_table(rows);
    }
    let miss = rows.iter().any(|r| r.p50_one_conn_ms.is_some());
    let edge = baseline(rows);
    // Even when edge-uring did not start: its failed row says why.
    let by_uring = rows.iter().any(|r| r.peer.starts_with("edge-"));
    let ratio = |value: Option<f64>, base: Option<f64>| match (value, base) {
        (Some(v), Some(b)) if b > 0.0 && v.is_finite() => format!("{:.2}", v / b),
        _ => "–".into(),
    };
    let mut headers = vec![
        "peer",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "rounds' range",
        "server cores",
        "client busy",
        "foreign cores",
    ];
    if by_uring {
        headers.extend(["CPU/req ÷uring", "req/s ÷uring", "p99 ÷uring"]);
    } else {
        headers.extend(["CPU/req ÷edge", "req/s ÷edge", "p99 ÷edge"]);
    }
    if miss {
        headers.extend(["p50 1-conn ms", "added p50 ms"]);
    }
    let mut table_rows = Vec::new();
    for row in rows {
        let load = row.load.as_ref();
        let base_load = edge.and_then(|e| e.load.as_ref());
        let mut cells = vec![
            label(row),
            load.map_or("–".into(), |l| thousands(l.rps)),
            load.map_or("–".into(), |l| format!("{:.2}", l.p50_ms)),
            load.map_or("–".into(), |l| format!("{:.2}", l.p99_ms)),
            row.cpu_us_per_req.map_or("–".into(), |c| format!("{c:.1}")),
            row.cpu_us_per_req_range
                .map_or("–".into(), |(lo, hi)| format!("{lo:.1}–{hi:.1}")),
            row.server_cores.map_or("–".into(), |c| format!("{c:.2}")),
            row.client_busy
                .map_or("–".into(), |c| format!("{:.0}%", c * 100.0)),
            format!("{:.2}", row.foreign_cores),
            ratio(row.cpu_us_per_req, edge.and_then(|e| e.cpu_us_per_req)),
            ratio(load.map(|l| l.rps), base_load.map(|l| l.rps)),
            ratio(load.map(|l| l.p99_ms), base_load.map(|l| l.p99_ms)),
        ];
        if miss {
            cells.push(
                row.p50_one_conn_ms
                    .map_or("–".into(), |v| format!("{v:.3}")),
            );
            cells.push(
                row.added_latency_ms
                    .map_or("–".into(), |v| format!("{v:+.3}")),
            );
        }
        table_rows.push(cells);
    }
    Table {
        headers,
        rows: table_rows,
    }
}

fn storm_table(rows: &[&Row]) -> Table {
    let mut table_rows = Vec::new();
    for row in rows {
        let storm = row.storm.as_ref();
        table_rows.push(vec![
            label(row),
            row.origin_requests.to_string(),
            storm.map_or("–".into(), |s| format!("{}/{}", s.ok, s.sent)),
            storm.map_or("–".into(), |s| format!("{:.0}", s.wall_ms)),
            storm.map_or("–".into(), |s| format!("{:.0}", s.p50_ms)),
            storm.map_or("–".into(), |s| format!("{:.0}", s.max_ms)),
            row.cpu_us_per_req.map_or("–".into(), |c| format!("{c:.1}")),
            format!("{:.2}", row.foreign_cores),
        ]);
    }
    Table {
        headers: vec![
            "peer",
            "origin requests",
            "200 answers",
            "all answered ms",
            "p50 ms",
            "max ms",
            "CPU µs/req",
            "foreign cores",
        ],
        rows: table_rows,
    }
}

/// The peer name, marked when a check failed or the peer sat out.
fn label(row: &Row) -> String {
    let mark = if !row.valid {
        " (!)"
    } else if row.skipped {
        " (skipped)"
    } else {
        ""
    };
    format!("{}{mark}", row.peer)
}

/// 123456.7 -> "123,457".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn notes_for(rows: &[&Row], out: &mut String, bullet: &str) {
    for row in rows {
        for note in &row.notes {
            let _ = writeln!(out, "{bullet}{}: {note}", row.peer);
        }
    }
}

/// The run as text for the terminal.
pub fn text(run: &Run) -> String {
    let mut out = String::new();
    for scenario in scenarios(&run.rows) {
        let rows = rows_of(run, scenario);
        let _ = writeln!(out, "\n{scenario}");
        table_for(&rows).text(&mut out);
        notes_for(&rows, &mut out, "    ! ");
    }
    out.push_str(
        "\nratios are peer ÷ edge (÷ edge-uring in the disk scenarios): CPU/req > 1 = the peer \
         spends more CPU per request; req/s > 1 = the peer served more; p99 > 1 = the peer's \
         tail is slower.\n",
    );
    out
}

/// The run as a Markdown section for RESULTS.md.
pub fn markdown(run: &Run) -> String {
    let mut out = String::new();
    let kind = if run.quick { "quick run" } else { "run" };
    let _ = writeln!(out, "\n## {} — {kind}\n", run.date);
    let _ = writeln!(out, "- machine: {}", run.machine.describe());
    let _ = writeln!(
        out,
        "- placement: {}; {} round(s) of {} s per peer and scenario, figures from each peer's least disturbed round; whole run {:.0} s",
        run.placement, run.rounds, run.round_s, run.elapsed_s
    );
    let versions: Vec<String> = run
        .versions
        .iter()
        .map(|(name, version)| format!("{name}: {}", version.as_deref().unwrap_or("not installed")))
        .collect();
    let _ = writeln!(out, "- versions: {}", versions.join("; "));
    for note in &run.notes {
        let _ = writeln!(out, "- {note}");
    }
    for scenario in scenarios(&run.rows) {
        let rows = rows_of(run, scenario);
        let _ = writeln!(out, "\n### {scenario}\n");
        table_for(&rows).markdown(&mut out);
        let mut notes = String::new();
        notes_for(&rows, &mut notes, "- ");
        if !notes.is_empty() {
            out.push('\n');
            out.push_str(&notes);
        }
    }
    out
}

const RESULTS_HEADER: &str = "# edge-bench results

Appended by `cargo run --release -p edge-bench` (bench/README.md): one
section per run, newest last. Ratios are peer ÷ edge. Each scenario's
measured time is split into interleaved rounds; a peer's figures come from
its least disturbed round, and `rounds' range` is its CPU µs/req over all
rounds. Rank by CPU µs/req when the load generator is saturated (client
busy near 100%). A row marked `(!)` failed a check (see its note);
`foreign cores` is the CPU other processes on the machine used during that
round.
";

/// Appends the run to `path` (created with a header if missing).
pub fn append_results(path: &Path, run: &Run) -> anyhow::Result<()> {
    let mut text = fs::read_to_string(path).unwrap_or_else(|_| RESULTS_HEADER.to_owned());
    text.push_str(&markdown(run));
    fs::write(path, text)?;
    Ok(())
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time.
pub fn utc_date(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadResult;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_796_000_000), "2026-11-30 00:53 UTC");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(123_456.7), "123,457");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    fn row(peer: &str, rps: f64, cpu: f64) -> Row {
        Row {
            scenario: "hit-1k".into(),
            peer: peer.into(),
            load: Some(LoadResult {
                rps,
                p99_ms: 1.0,
                ..LoadResult::default()
            }),
            cpu_us_per_req: Some(cpu),
            valid: true,
            ..Row::default()
        }
    }

    #[test]
    fn ratios_are_peer_over_edge() {
        let rows = [row("edge", 100_000.0, 8.0), row("nginx", 50_000.0, 20.0)];
        let refs: Vec<&Row> = rows.iter().collect();
        let table = table_for(&refs);
        let nginx = &table.rows[1];
        assert_eq!(nginx[9], "2.50");
        assert_eq!(nginx[10], "0.50");
        assert_eq!(nginx[11], "1.00");
        let mut md = String::new();
        table.markdown(&mut md);
        assert!(md.starts_with("| peer | req/s |"));
    }

    #[test]
    fn disk_rows_divide_by_edge_uring() {
        let rows = [
            row("nginx", 30_000.0, 30.0),
            row("edge-blocking", 15_000.0, 60.0),
            row("edge-uring", 20_000.0, 40.0),
        ];
        let mut refs: Vec<&Row> = rows.iter().collect();
        refs.sort_by(|a, b| rank(a).cmp(&rank(b)));
        let table = table_for(&refs);
        assert_eq!(table.headers[9], "CPU/req ÷uring");
        assert_eq!(table.rows[0][0], "edge-uring");
        let blocking = &table.rows[1];
        assert_eq!(blocking[0], "edge-blocking");
        assert_eq!(blocking[9], "1.50");
        assert_eq!(blocking[10], "0.75");
        assert_eq!(table.rows[2][9], "0.75");
    }
}
