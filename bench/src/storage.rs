//! Where the disk scenarios keep edge's disk stores: a fresh directory on
//! a real file system. On tmpfs the "disk" would be memory and the
//! scenarios would measure nothing the disk tier does (a tmpfs read is a
//! memcpy from the page cache without a file system below it), so tmpfs
//! and ramfs are passed over for the next candidate.
//!
//! The trade-off, documented in bench/README.md: the objects were just
//! written, so they are in the page cache and the scenarios measure edge's
//! read path (syscalls or io_uring submissions, checksums, copies), not
//! the device.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

/// Tried in order; `/var/tmp` is on the root file system where `/tmp` is
/// a tmpfs (systemd's `tmp.mount`).
const CANDIDATES: &[&str] = &["/tmp", "/var/tmp"];

/// `statfs` magic numbers (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const KNOWN: &[(i64, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x2FC1_2FC1, "zfs"),
    (0x794C_7630, "overlayfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
];

/// The `statfs` file-system type of `path`.
fn fs_type(path: &Path) -> Option<i64> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain data that the call fills.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    Some(stat.f_type as i64)
}

/// The file system `path` lives on, by name where known.
pub fn fs_name(path: &Path) -> String {
    match fs_type(path) {
        Some(magic) => KNOWN.iter().find(|(m, _)| *m == magic).map_or_else(
            || format!("file system 0x{magic:x}"),
            |(_, n)| (*n).to_owned(),
        ),
        None => "unknown file system".into(),
    }
}

fn in_memory(magic: i64) -> bool {
    magic == TMPFS_MAGIC || magic == RAMFS_MAGIC
}

/// The directory to create disk stores in, and a note when only a
/// memory file system was available.
pub fn store_base() -> (PathBuf, Option<String>) {
    for candidate in CANDIDATES {
        let path = Path::new(candidate);
        if fs_type(path).is_some_and(|magic| !in_memory(magic)) {
            return (path.to_owned(), None);
        }
    }
    let fallback = PathBuf::from(CANDIDATES[0]);
    let note = format!(
        "disk stores are on {} ({}): no disk-backed candidate among {}; the disk scenarios measure a memory file system",
        fallback.display(),
        fs_name(&fallback),
        CANDIDATES.join(", ")
    );
    (fallback, Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_file_systems() {
        assert!(in_memory(TMPFS_MAGIC));
        assert!(!in_memory(0xEF53));
        // /proc is procfs everywhere: unknown to the table, named by magic.
        assert_eq!(fs_name(Path::new("/proc")), "file system 0x9fa0");
        assert_eq!(fs_name(Path::new("/no/such/path")), "unknown file system");
    }

    #[test]
    fn the_base_exists() {
        let (base, _) = store_base();
        assert!(base.is_dir());
    }
}
