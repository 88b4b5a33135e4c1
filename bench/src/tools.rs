//! Finding the external programs (peers and load generators) and asking
//! them their versions. Every one is optional: a missing program is a
//! skipped peer or scenario with a note saying how to install it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian puts servers in sbin, which a non-root PATH often lacks.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// The external programs found on this machine.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// nginx.
    pub nginx: Option<PathBuf>,
    /// varnishd.
    pub varnishd: Option<PathBuf>,
    /// wrk (HTTP/1.1 load).
    pub wrk: Option<PathBuf>,
    /// h2load (HTTP/2 load).
    pub h2load: Option<PathBuf>,
    /// oha (HTTP/1.1 or HTTP/2 load; the fallback for either).
    pub oha: Option<PathBuf>,
}

impl Tools {
    /// Looks for every program.
    pub fn find() -> Tools {
        Tools {
            nginx: find("nginx"),
            varnishd: find("varnishd"),
            wrk: find("wrk"),
            h2load: find("h2load"),
            oha: find("oha"),
        }
    }

    /// Each program's version line, `None` where it is not installed.
    pub fn versions(&self) -> Vec<(&'static str, Option<String>)> {
        let of = |path: &Option<PathBuf>, flag: &str| path.as_deref().map(|p| version(p, flag));
        vec![
            ("nginx", of(&self.nginx, "-v")),
            ("varnishd", of(&self.varnishd, "-V")),
            ("wrk", of(&self.wrk, "-v")),
            ("h2load", of(&self.h2load, "--version")),
            ("oha", of(&self.oha, "--version")),
        ]
    }
}

/// `name` in PATH, cargo's bin directory or the sbin directories.
pub fn find(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.extend(EXTRA_DIRS.iter().map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first non-empty line a program prints (on either stream) for
/// `flag`; several print their version on stderr or exit non-zero.
pub fn version(program: &Path, flag: &str) -> String {
    let output = Command::new(program)
        .arg(flag)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) => {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("(no version printed)")
                .to_owned()
        }
        Err(error) => format!("(cannot run {}: {error})", program.display()),
    }
}

/// The first non-empty line of a command's stdout, if it ran and succeeded.
pub fn first_line(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_shell_and_not_a_fantasy() {
        assert!(find("sh").is_some());
        assert!(find("no-such-program-edge-bench").is_none());
    }

    #[test]
    fn version_reads_either_stream() {
        let sh = find("sh").unwrap();
        // `sh -c` with no script fails; whatever it says is a line or the
        // placeholder, never a panic.
        assert!(!version(&sh, "-c").is_empty());
    }
}
