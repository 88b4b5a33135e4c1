//! Start-up: validating (or cleaning, or upgrading) the store root, and
//! rebuilding the index by scanning every object's header.
//!
//! Pure I/O over the directory; the index and the purge journal replay
//! happen in `DiskStore::open` with what this returns.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DiskEntryMeta, HEAD_READ, OBJECTS, ScanReport, format};
use crate::key::CacheKey;
use crate::tags::cache_tags;

/// Content of the `FORMAT` file; any other `edge-disk-cache` version is
/// incompatible and cleaned, except [`FORMAT_LINE_V1`], upgraded in place.
///
/// Version 2 added the soft-purge journal (`purges`). The objects are the
/// same as in version 1, so a version 1 store is upgraded by rewriting
/// `FORMAT` (it has no journal, so nothing is stale). The bump protects a
/// downgrade: a version 1 binary finding `2` cleans the store instead of
/// serving soft-purged objects as fresh.
pub const FORMAT_LINE: &str = "edge-disk-cache 2\n";
/// A version 1 store (before the purge journal), upgraded in place.
const FORMAT_LINE_V1: &str = "edge-disk-cache 1\n";
const FORMAT_PREFIX: &str = "edge-disk-cache ";

/// How `prepare_root` found the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootState {
    /// Our current format, or a new empty store.
    Ready,
    /// An incompatible store whose contents were deleted.
    Cleaned,
    /// A version 1 store, upgraded in place.
    Upgraded,
}

/// Creates or validates the root and its FORMAT file.
pub fn prepare_root(root: &Path) -> Result<RootState, String> {
    match fs::metadata(root) {
        Ok(m) if !m.is_dir() => return Err("exists and is not a directory".into()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(|e| format!("cannot create: {e}"))?;
        }
        Err(e) => return Err(format!("cannot stat: {e}")),
    }
    let format_path = root.join("FORMAT");
    let mut state = RootState::Ready;
    match fs::read(&format_path) {
        Ok(content) if content == FORMAT_LINE.as_bytes() => return Ok(RootState::Ready),
        Ok(content) if content == FORMAT_LINE_V1.as_bytes() => {
            tracing::info!(path = %root.display(), "disk cache format 1 upgraded to 2 in place");
            state = RootState::Upgraded;
        }
        Ok(content) if content.starts_with(FORMAT_PREFIX.as_bytes()) => {
            tracing::warn!(
                path = %root.display(),
                found = %String::from_utf8_lossy(&content).trim(),
                expected = FORMAT_LINE.trim(),
                "incompatible disk cache format; deleting its contents"
            );
            for entry in fs::read_dir(root).map_err(|e| format!("cannot list: {e}"))? {
                let entry = entry.map_err(|e| format!("cannot list: {e}"))?;
                let p = entry.path();
                let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| {
                    format!("cannot clean incompatible store entry {}: {e}", p.display())
                })?;
            }
            state = RootState::Cleaned;
        }
        Ok(_) => {
            return Err(
                "FORMAT file was not written by edge; refusing to use this directory".into(),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A fresh store: only our own half-created entries may be present.
            let foreign = fs::read_dir(root)
                .map_err(|e| format!("cannot list: {e}"))?
                .filter_map(Result::ok)
                .find(|e| e.file_name() != OBJECTS && e.file_name() != "FORMAT.tmp");
            if let Some(f) = foreign {
                return Err(format!(
                    "not empty and not an edge cache (found {:?}); point the cache at an empty or dedicated directory",
                    f.file_name()
                ));
            }
        }
        Err(e) => return Err(format!("cannot read FORMAT: {e}")),
    }
    let tmp = root.join("FORMAT.tmp");
    fs::write(&tmp, FORMAT_LINE)
        .and_then(|()| fs::rename(&tmp, &format_path))
        .map_err(|e| format!("not writable: {e}"))?;
    Ok(state)
}

/// Scans the fan-out directories in parallel: the objects found (tags
/// parsed, not yet purged) and the counts for the report.
pub fn scan(objects: &Path) -> (Vec<DiskEntryMeta>, ScanReport) {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let dirs: Vec<PathBuf> = (0..=255u8)
        .map(|i| objects.join(format!("{i:02x}")))
        .collect();
    let parts: Vec<(Vec<DiskEntryMeta>, ScanReport)> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .chunks(dirs.len().div_ceil(threads))
            .map(|chunk| s.spawn(move || chunk.iter().fold(Default::default(), scan_dir)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut all = Vec::new();
    let mut report = ScanReport::default();
    for (entries, r) in parts {
        all.extend(entries);
        report.temp_removed += r.temp_removed;
        report.invalid_removed += r.invalid_removed;
    }
    (all, report)
}

fn scan_dir(
    (mut out, mut report): (Vec<DiskEntryMeta>, ScanReport),
    dir: &PathBuf,
) -> (Vec<DiskEntryMeta>, ScanReport) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (out, report);
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            let _ = fs::remove_file(&path);
            report.temp_removed += 1;
            continue;
        }
        match load_meta(&path, &name) {
            Ok(m) => out.push(m),
            Err(reason) => {
                tracing::warn!(path = %path.display(), reason, "invalid disk cache object removed at start-up");
                let _ = fs::remove_file(&path);
                report.invalid_removed += 1;
            }
        }
    }
    (out, report)
}

/// Reads and checks one object's header (not its body blocks).
fn load_meta(path: &Path, name: &str) -> Result<DiskEntryMeta, &'static str> {
    let file = File::open(path).map_err(|_| "cannot open")?;
    let len = file.metadata().map_err(|_| "cannot stat")?.len();
    let mut buf = vec![0; HEAD_READ.min(len as usize)];
    let n = file.read_at(&mut buf, 0).map_err(|_| "cannot read")?;
    buf.truncate(n);
    let fixed = format::decode_fixed(&buf)?;
    if len != fixed.file_len() {
        return Err("file length does not match header (truncated?)");
    }
    let body_offset = fixed.body_offset() as usize;
    if buf.len() < body_offset {
        let mut more = vec![0; body_offset - buf.len()];
        file.read_exact_at(&mut more, buf.len() as u64)
            .map_err(|_| "short read")?;
        buf.extend_from_slice(&more);
    }
    let (m, _sums) = format::decode_rest(&fixed, &buf[format::FIXED_LEN..])?;
    let key = CacheKey::from_text(&m.key);
    let secondary = m.secondary_key().ok_or("stored without secondary key")?;
    let id = (u128::from_be_bytes(key.digest()), secondary.digest());
    if name != format!("{:032x}-{:016x}", id.0, id.1) {
        return Err("file name does not match its key");
    }
    Ok(DiskEntryMeta {
        tags: Arc::from(cache_tags(&m.headers)),
        purged_at: None,
        key,
        secondary,
        vary: m.vary,
        status: m.status,
        times: m.times,
        lifetime: m.lifetime,
        directives: m.directives,
        body_len: fixed.body_len,
        file_len: len,
        id,
        generation: 0,
    })
}
