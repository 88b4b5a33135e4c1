//! CPU accounting from `/proc`: a server's CPU time over a measured window
//! (utime+stime of every process in its tree: nginx's master and worker,
//! Varnish's manager and cache process), and the "foreign" CPU that other
//! tenants of the machine used over the same window, so a run disturbed by
//! them is visible (shared/research/io_uring.md §1).
//!
//! Foreign CPU is the machine's busy time from `/proc/stat` (user, nice,
//! system and steal: interrupt and softirq time is left out, it is mostly
//! our own loopback traffic) minus the CPU of the harness's own processes
//! and of kernel threads. Summing other processes from `/proc/*/stat`
//! instead would miss every short-lived one (a compiler run by another
//! tenant), which on a shared build machine is most of them.
//!
//! The trade-off: both sources count in clock ticks (10 ms at the usual
//! 100 Hz), so a window needs a few seconds of busy CPU to be precise to a
//! percent.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::Instant;

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Parent pid.
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
}

/// Parses the fields we need from a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    // After ")": state(3) ppid(4) … utime(14) stime(15).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat {
        ppid,
        ticks: utime + stime,
    })
}

/// Every process on the machine now, by pid.
pub fn snapshot() -> HashMap<u32, ProcStat> {
    let mut all = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return all;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        if let Some(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            all.insert(pid, stat);
        }
    }
    all
}

/// `root` and all its descendants in `all`.
pub fn tree(all: &HashMap<u32, ProcStat>, root: u32) -> HashSet<u32> {
    let mut members = HashSet::from([root]);
    let mut grew = true;
    while grew {
        grew = false;
        for (&pid, stat) in all {
            if members.contains(&stat.ppid) && members.insert(pid) {
                grew = true;
            }
        }
    }
    members.retain(|pid| all.contains_key(pid));
    members
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 almost everywhere).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Busy ticks of the whole machine (`/proc/stat` line `cpu`): user + nice
/// + system + steal.
pub fn machine_busy_ticks() -> Option<u64> {
    parse_machine_busy(&fs::read_to_string("/proc/stat").ok()?)
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …
    let [
        user,
        nice,
        system,
        _idle,
        _iowait,
        _irq,
        _softirq,
        steal,
        ..,
    ] = fields[..]
    else {
        return None;
    };
    Some(user + nice + system + steal)
}

/// A measured window: started before the load, finished after it.
pub struct Window {
    started: Instant,
    before: HashMap<u32, ProcStat>,
    machine_before: Option<u64>,
}

/// What a window measured, in CPU seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowCpu {
    /// Wall-clock length of the window.
    pub wall_s: f64,
    /// CPU of the measured server's process tree.
    pub server_s: f64,
    /// CPU the rest of the machine used: busy time minus the harness's
    /// processes (servers, load generator, origin) and kernel threads.
    pub foreign_s: f64,
}

impl Window {
    /// Starts a window now.
    pub fn start() -> Window {
        Window {
            before: snapshot(),
            machine_before: machine_busy_ticks(),
            started: Instant::now(),
        }
    }

    /// Ends the window. `server` is the measured server's root pid; `ours`
    /// are the roots of every process the harness runs (itself, hence all
    /// its children); `reaped_s` is CPU of our children that exited inside
    /// the window (the load generator), which /proc no longer shows.
    pub fn finish(self, server: u32, ours: &[u32], reaped_s: f64) -> WindowCpu {
        let wall_s = self.started.elapsed().as_secs_f64();
        let after = snapshot();
        let machine_after = machine_busy_ticks();
        let hz = ticks_per_second();
        let delta = |pid: &u32| -> u64 {
            let now = after.get(pid).map_or(0, |s| s.ticks);
            // A process born inside the window spent all its time in it.
            let then = self.before.get(pid).map_or(0, |s| s.ticks);
            now.saturating_sub(then)
        };
        let mut server_tree = tree(&self.before, server);
        server_tree.extend(tree(&after, server));
        let server_ticks: u64 = server_tree.iter().map(delta).sum();

        let mut excluded: HashSet<u32> = HashSet::new();
        for &root in ours {
            excluded.extend(tree(&self.before, root));
            excluded.extend(tree(&after, root));
        }
        // Kernel threads (kthreadd, pid 2, and its children) carry softirq
        // and writeback work, largely for our own traffic.
        excluded.extend(tree(&after, 2));
        let ours_ticks: u64 = excluded.iter().map(delta).sum();
        let foreign_s = match (self.machine_before, machine_after) {
            (Some(before), Some(after)) => {
                let busy_s = after.saturating_sub(before) as f64 / hz;
                (busy_s - ours_ticks as f64 / hz - reaped_s).max(0.0)
            }
            _ => f64::NAN,
        };
        WindowCpu {
            wall_s,
            server_s: server_ticks as f64 / hz,
            foreign_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_tricky_name() {
        let line = "4242 (we (ird) name) S 17 4242 4242 0 -1 4194560 150 0 0 0 \
                    123 45 0 0 20 0 3 0 100 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                ppid: 17,
                ticks: 168
            })
        );
    }

    #[test]
    fn rejects_a_truncated_line() {
        assert_eq!(parse_stat("1 (init) S 0 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn tree_follows_parents() {
        let stat = |ppid| ProcStat { ppid, ticks: 0 };
        let all = HashMap::from([(10, stat(1)), (11, stat(10)), (12, stat(11)), (13, stat(1))]);
        assert_eq!(tree(&all, 10), HashSet::from([10, 11, 12]));
        assert_eq!(tree(&all, 99), HashSet::new());
    }

    #[test]
    fn machine_busy_counts_user_nice_system_steal() {
        let stat = "cpu  100 20 30 999 5 7 11 3 0 0\ncpu0 50 10 15 500 2 3 5 1 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(153));
        assert_eq!(parse_machine_busy("cpu  1 2 3\n"), None);
        assert!(machine_busy_ticks().is_some());
    }

    #[test]
    fn this_process_is_in_the_snapshot() {
        let all = snapshot();
        assert!(all.contains_key(&std::process::id()));
    }
}
