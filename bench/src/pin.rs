//! CPU placement: each server on one core, the load generator on the rest
//! (the per-core comparison of shared/research/io_uring.md §1).
//!
//! Affinity is set with `sched_setaffinity` rather than by running
//! `taskset`, so it needs no extra tool; children inherit it, which covers
//! nginx's worker and Varnish's cache process. `--nice` also lowers the
//! nice value of servers and load generator alike, so that other tenants
//! of a shared machine disturb the run less (it needs root or
//! CAP_SYS_NICE, and slows those tenants down while it runs).

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Where servers and load generator run.
#[derive(Debug, Clone)]
pub struct Placement {
    /// CPUs the servers (and the origin) run on; empty: not pinned.
    pub server: Vec<usize>,
    /// CPUs the load generator runs on; empty: not pinned.
    pub load: Vec<usize>,
    /// Nice value for servers and load generator (`None`: inherited).
    pub nice: Option<i32>,
}

impl Placement {
    /// Server on the first allowed CPU, load on the others; no pinning on a
    /// single CPU (a note says so).
    pub fn detect(nice: Option<i32>) -> Placement {
        let cpus = allowed_cpus().unwrap_or_default();
        if cpus.len() < 2 {
            return Placement {
                server: Vec::new(),
                load: Vec::new(),
                nice,
            };
        }
        Placement {
            server: vec![cpus[0]],
            load: cpus[1..].to_vec(),
            nice,
        }
    }

    /// Whether servers and load are on separate cores.
    pub fn pinned(&self) -> bool {
        !self.server.is_empty()
    }

    /// How many cores the load generator may use (at least one).
    pub fn load_cores(&self) -> usize {
        self.load.len().max(1)
    }

    /// A one-line description, as `taskset -c` would name the sets.
    pub fn describe(&self) -> String {
        let mut text = if self.pinned() {
            format!(
                "servers on CPU {}, load generator on CPU {}",
                list(&self.server),
                list(&self.load)
            )
        } else {
            "not pinned (fewer than 2 CPUs): servers and load share the machine".into()
        };
        if let Some(nice) = self.nice {
            text.push_str(&format!(", all at nice {nice}"));
        }
        text
    }
}

fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size matches the set.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: i is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}

/// Pins the calling thread to `cpus` (threads it spawns later inherit it).
pub fn current_thread(cpus: &[usize]) -> io::Result<()> {
    set_affinity(cpus)
}

/// Sets the calling thread's nice value (Linux: per thread).
pub fn nice_current_thread(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority on our own thread id.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `command`'s process start pinned to `cpus` (unpinned when
/// empty) at nice value `nice` (inherited when `None`).
pub fn command(command: &mut Command, cpus: &[usize], nice: Option<i32>) {
    let cpus = cpus.to_vec();
    // SAFETY: the closure runs between fork and exec; it only builds a
    // cpu_set_t on the stack and calls sched_setaffinity and setpriority,
    // which are async-signal-safe (plain syscalls), and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            set_affinity(&cpus)?;
            if let Some(nice) = nice
                && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: cpu_set_t is plain data.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET bounds-checks against the set size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the size matches the set.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_may_run_somewhere() {
        assert!(!allowed_cpus().unwrap().is_empty());
    }

    #[test]
    fn describes_both_sets() {
        let mut placement = Placement {
            server: vec![0],
            load: vec![1, 2],
            nice: None,
        };
        assert_eq!(
            placement.describe(),
            "servers on CPU 0, load generator on CPU 1,2"
        );
        assert_eq!(placement.load_cores(), 2);
        placement.nice = Some(-10);
        assert!(placement.describe().ends_with(", all at nice -10"));
    }
}
