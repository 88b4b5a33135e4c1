//! The disk tier: a persistent object store below the memory tier that
//! survives restarts.
//!
//! # Layout
//!
//! ```text
//! <root>/FORMAT                    "edge-disk-cache 1\n"
//! <root>/objects/<hh>/<key>-<var>  one object (see `format`)
//! <root>/objects/<hh>/*.tmp        an object being written
//! ```
//!
//! `<key>` is the [`CacheKey`] digest in 32 hex digits, `<hh>` its first two
//! (256 fan-out directories, ~400 files each at 100k objects), `<var>` the
//! secondary key's XXH3-64 in 16 hex digits, so each Vary variant is a file.
//! The object format (header, metadata, per-64 KiB-block checksums, body)
//! is documented in `format.rs`.
//!
//! # Start-up
//!
//! [`DiskStore::open`] creates a missing directory, refuses a path that is
//! not a directory, not writable, or a non-empty directory without our
//! `FORMAT` file (so a typo in the config never wipes someone's data). A
//! `FORMAT` file of another version means an incompatible store: its
//! contents are deleted and the store starts empty, never misread. The
//! index is rebuilt by scanning every object's header (checksummed; body
//! blocks are checked when read), in parallel over the fan-out
//! directories. Leftover `*.tmp` files and objects that fail their header
//! checks are deleted.
//!
//! Measured (`tests/disk.rs::startup_scan_100k_objects`, release, 2 vCPU
//! VM, ext4 on virtio, warm page cache): 100k objects of 2 KiB rebuild in
//! 2.0 s. A cold cache after reboot will be slower (one random read per
//! object); a journal/snapshot of the index is the fix if that matters.
//!
//! # Writes and durability
//!
//! An object is written to `<name>.<n>.tmp` and renamed into place, so a
//! reader or a restart sees the whole object or nothing; `kill -9` mid-write
//! leaves only a temp file, removed by the next start-up scan. There is **no
//! fsync**: a cache may lose objects on power loss, and what a torn write
//! leaves (zeroed or stale blocks behind a renamed name) fails the header
//! or block checksums, so it is deleted rather than served. Renames and
//! unlinks run under the index lock so the index and the directory always
//! agree (TODO(perf): these are short metadata syscalls on the caller's
//! thread; io_uring RENAMEAT/UNLINKAT would take them off it).
//!
//! # Reads
//!
//! [`DiskStore::lookup`] answers from the in-memory index only. Reading is
//! two steps: [`DiskStore::read_head`] reads and verifies the header and
//! metadata, then [`DiskObject::read_body_chunks`] streams the body one
//! 64 KiB block at a time, each verified before it is returned. A checksum
//! mismatch or short read deletes the object and yields
//! [`DiskError::Corrupt`]; the caller refetches.
//!
//! # Eviction
//!
//! Byte-weighted S3-FIFO (see `evict.rs`) over file sizes; the total of
//! object file sizes never exceeds the configured size. Lookups count as
//! reads. After a restart, objects re-enter in scan order with no history.
//!
//! # Faults
//!
//! A write failing with ENOSPC, EDQUOT, EROFS, EACCES or EPERM disables
//! writes: logged once, counted in [`DiskStats::write_failures`], and
//! [`DiskStore::is_disabled`] turns true so the node continues memory-only.
//! Reads of objects already stored keep working.

mod evict;
pub mod format;
mod io;
mod uring;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::age::ResponseTimes;
use crate::cache_control::ResponseDirectives;
use crate::entry::StoredResponse;
use crate::freshness::Lifetime;
use crate::key::CacheKey;
use crate::vary::{SecondaryKey, VarySpec, secondary_key};

pub use io::{Backend, BackendChoice};
use io::{Io, blocking};

/// Content of the `FORMAT` file; any other `edge-disk-cache` version is
/// incompatible and cleaned.
const FORMAT_LINE: &str = "edge-disk-cache 1\n";
const FORMAT_PREFIX: &str = "edge-disk-cache ";
const OBJECTS: &str = "objects";
/// Variants kept per key, as in the memory tier (oldest dropped first).
const MAX_VARIANTS: usize = crate::memory::MAX_VARIANTS_PER_URL;
/// First read of an object: the fixed header plus typical metadata in one I/O.
const HEAD_READ: usize = 16 * 1024;

/// Errors of the disk tier; each says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The configured directory cannot be used; a start-up error.
    #[error("disk cache directory {path}: {reason}; fix [cache.disk].path or its permissions")]
    Unusable { path: PathBuf, reason: String },
    /// `BackendChoice::Uring` was forced but io_uring cannot be used here.
    #[error("io_uring unavailable ({0}); use backend auto or blocking")]
    UringUnavailable(String),
    /// A stored object failed its checks; it has been removed. Refetch.
    #[error("disk object {path} is corrupt ({reason}); removed, refetch from origin")]
    Corrupt { path: PathBuf, reason: &'static str },
    /// The object is no longer on disk (evicted or removed). Refetch.
    #[error("disk object no longer stored")]
    Missing,
    /// Writes are off after a full or read-only disk; the node runs memory-only.
    #[error("disk tier disabled after a write failure; running memory-only")]
    Disabled,
    /// The object is larger than the whole tier.
    #[error("object of {size} bytes does not fit a disk tier of {capacity} bytes")]
    TooLarge { size: u64, capacity: u64 },
    /// `Vary: *` responses never match a later request and are not stored.
    #[error("response with Vary: * is not stored")]
    VaryAny,
    /// Any other I/O error (the object was not stored / not read).
    #[error("disk I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What the index knows about one stored variant, answered without disk I/O.
#[derive(Debug, Clone)]
pub struct DiskEntryMeta {
    /// The primary key.
    pub key: CacheKey,
    /// The variant's secondary key.
    pub secondary: SecondaryKey,
    /// The response's Vary.
    pub vary: VarySpec,
    /// Stored status.
    pub status: StatusCode,
    /// Times for the age calculation.
    pub times: ResponseTimes,
    /// Freshness lifetime at store time.
    pub lifetime: Lifetime,
    /// Cache directives for reuse decisions.
    pub directives: ResponseDirectives,
    /// Body length in bytes.
    pub body_len: u64,
    /// Size of the object file (what eviction counts).
    pub file_len: u64,
    id: ObjectId,
    generation: u64,
}

/// The head of an object read from disk: the verified metadata and headers.
#[derive(Debug)]
pub struct DiskHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub times: ResponseTimes,
    pub lifetime: Lifetime,
    pub directives: ResponseDirectives,
    pub vary: VarySpec,
    pub secondary: Option<SecondaryKey>,
    pub body_len: u64,
}

/// An opened object: its head, and a handle to stream its body.
pub struct DiskObject {
    pub head: DiskHead,
    body: DiskBody,
}

impl DiskObject {
    /// Streams the body in verified 64 KiB blocks.
    pub fn read_body_chunks(self) -> DiskBody {
        self.body
    }

    /// The head and the body stream, separately.
    pub fn into_parts(self) -> (DiskHead, DiskBody) {
        (self.head, self.body)
    }
}

/// A body being streamed from disk; see [`DiskBody::next_chunk`].
pub struct DiskBody {
    store: DiskStore,
    meta: DiskEntryMeta,
    file: Arc<File>,
    path: PathBuf,
    sums: Vec<u64>,
    body_offset: u64,
    body_len: u64,
    next: usize,
}

impl DiskBody {
    /// The next block, `None` at the end. A corrupt or short block removes
    /// the object and yields `Corrupt`; no unverified byte is returned.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, DiskError>> {
        if self.next >= self.sums.len() {
            return None;
        }
        let block = u64::from(format::BLOCK_SIZE);
        let start = self.next as u64 * block;
        let len = block.min(self.body_len - start) as usize;
        let res = self
            .store
            .inner
            .io
            .read_at(&self.file, len, self.body_offset + start)
            .await;
        let buf = match res {
            Ok(b) => b,
            Err(e) => return Some(Err(e.into())),
        };
        let why = if buf.len() < len {
            Some("short read: file truncated")
        } else if format::block_sum(&buf) != self.sums[self.next] {
            Some("body checksum mismatch")
        } else {
            None
        };
        if let Some(reason) = why {
            self.next = self.sums.len();
            return Some(Err(self.store.discard(&self.meta, &self.path, reason)));
        }
        self.next += 1;
        Some(Ok(Bytes::from(buf)))
    }

    /// Body bytes not yet returned.
    pub fn remaining(&self) -> u64 {
        self.body_len
            .saturating_sub(self.next as u64 * u64::from(format::BLOCK_SIZE))
    }
}

/// Counters of the disk tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Variants in the index.
    pub objects: u64,
    /// Sum of object file sizes.
    pub bytes: u64,
    /// Objects written.
    pub inserts: u64,
    /// Objects evicted for space.
    pub evictions: u64,
    /// Objects removed because they failed a check.
    pub corrupt: u64,
    /// Writes that failed (any error).
    pub write_failures: u64,
}

/// What the start-up scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Objects indexed.
    pub objects: u64,
    /// Their total file size.
    pub bytes: u64,
    /// Leftover temp files deleted.
    pub temp_removed: u64,
    /// Objects deleted for failing their header checks.
    pub invalid_removed: u64,
    /// Whether an incompatible store was cleaned.
    pub cleaned_incompatible: bool,
    /// Wall time of the scan.
    pub elapsed: Duration,
}

/// `(key digest, secondary digest)`: names the file.
type ObjectId = (u128, u64);

struct Index {
    by_key: HashMap<CacheKey, Vec<Arc<DiskEntryMeta>>>,
    by_id: HashMap<ObjectId, Arc<DiskEntryMeta>>,
    policy: evict::S3Fifo<ObjectId>,
    next_generation: u64,
}

struct Inner {
    root: PathBuf,
    capacity: u64,
    io: Io,
    backend_reason: String,
    index: Mutex<Index>,
    disabled: AtomicBool,
    tmp_seq: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    corrupt: AtomicU64,
    write_failures: AtomicU64,
    report: ScanReport,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Io::Uring(ring) = &self.io {
            ring.shutdown();
        }
    }
}

/// The disk store. Cheap to clone (an `Arc`); all methods take `&self`.
#[derive(Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("root", &self.inner.root)
            .field("capacity", &self.inner.capacity)
            .field("backend", &self.backend())
            .finish()
    }
}

impl DiskStore {
    /// Opens (or creates) the store at `path`, bounded by `size_bytes`.
    /// Blocking: call at start-up. With `Auto`/`Uring`, call inside the tokio
    /// runtime that will do the I/O (the ring registers in its reactor).
    pub fn open(
        path: impl AsRef<Path>,
        size_bytes: u64,
        backend: BackendChoice,
    ) -> Result<DiskStore, DiskError> {
        let root = path.as_ref().to_path_buf();
        let unusable = |reason: String| DiskError::Unusable {
            path: root.clone(),
            reason,
        };
        let started = Instant::now();
        let cleaned = prepare_root(&root).map_err(unusable)?;
        let objects = root.join(OBJECTS);
        for i in 0..=255u8 {
            let dir = objects.join(format!("{i:02x}"));
            fs::create_dir_all(&dir)
                .map_err(|e| unusable(format!("create {}: {e}", dir.display())))?;
        }
        let (io, backend_reason) = Io::detect(backend).map_err(DiskError::UringUnavailable)?;
        let (entries, mut report) = scan(&objects);
        report.cleaned_incompatible = cleaned;

        let mut index = Index {
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            policy: evict::S3Fifo::new(size_bytes),
            next_generation: 0,
        };
        for mut e in entries {
            index.next_generation += 1;
            e.generation = index.next_generation;
            let e = Arc::new(e);
            index.policy.insert(e.id, e.file_len);
            index.by_id.insert(e.id, Arc::clone(&e));
            index.by_key.entry(e.key.clone()).or_default().push(e);
        }
        let store = DiskStore {
            inner: Arc::new(Inner {
                root,
                capacity: size_bytes,
                io,
                backend_reason,
                index: Mutex::new(index),
                disabled: AtomicBool::new(false),
                tmp_seq: AtomicU64::new(0),
                inserts: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                corrupt: AtomicU64::new(0),
                write_failures: AtomicU64::new(0),
                report: ScanReport::default(),
            }),
        };
        {
            let mut idx = store.lock();
            store.evict_to(&mut idx, size_bytes);
            report.objects = idx.by_id.len() as u64;
            report.bytes = idx.policy.total_bytes();
        }
        report.elapsed = started.elapsed();
        let mut store = store;
        Arc::get_mut(&mut store.inner)
            .expect("not yet shared")
            .report = report;
        tracing::info!(
            path = %store.inner.root.display(),
            backend = store.backend().as_str(),
            reason = %store.inner.backend_reason,
            objects = report.objects,
            bytes = report.bytes,
            temp_removed = report.temp_removed,
            invalid_removed = report.invalid_removed,
            cleaned_incompatible = report.cleaned_incompatible,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "disk cache opened"
        );
        Ok(store)
    }

    /// The I/O backend picked at open.
    pub fn backend(&self) -> Backend {
        self.inner.io.backend()
    }

    /// Why that backend was picked (`"ok"`, `"forced by config"`, or the
    /// io_uring error that caused the fallback).
    pub fn backend_reason(&self) -> &str {
        &self.inner.backend_reason
    }

    /// What the start-up scan found.
    pub fn scan_report(&self) -> ScanReport {
        self.inner.report
    }

    /// Whether writes are off after a full or read-only disk.
    pub fn is_disabled(&self) -> bool {
        self.inner.disabled.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DiskStats {
        let idx = self.lock();
        let c = &self.inner;
        DiskStats {
            objects: idx.by_id.len() as u64,
            bytes: idx.policy.total_bytes(),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
        }
    }

    /// Finds the variant of `key` that `request` selects (RFC 9111 §4.1),
    /// from the in-memory index only.
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Option<DiskEntryMeta> {
        let mut idx = self.lock();
        let variants = idx.by_key.get(key)?;
        let wanted = secondary_key(&variants.first()?.vary, request)?;
        let found = variants.iter().rev().find(|e| e.secondary == wanted)?;
        let found = DiskEntryMeta::clone(found);
        idx.policy.touch(&found.id);
        Some(found)
    }

    /// Writes `response` as a variant of `key` (replacing the same variant,
    /// or all variants when its Vary differs) and indexes it.
    pub async fn insert(&self, key: &CacheKey, response: &StoredResponse) -> Result<(), DiskError> {
        if self.is_disabled() {
            return Err(DiskError::Disabled);
        }
        let Some(secondary) = response.secondary.clone() else {
            return Err(DiskError::VaryAny);
        };
        let head = Bytes::from(format::encode_head(key, response));
        let body_len = response.body_len();
        let file_len = head.len() as u64 + body_len;
        if file_len > self.inner.capacity {
            return Err(DiskError::TooLarge {
                size: file_len,
                capacity: self.inner.capacity,
            });
        }
        let id = (u128::from_be_bytes(key.digest()), secondary.digest());
        let path = self.object_path(id);
        let seq = self.inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{seq}.tmp"));

        let written = self.write_object(&tmp, head, &response.body).await;
        if let Err(e) = written {
            self.write_failed(&e);
            let tmp2 = tmp.clone();
            let _ = blocking(move || fs::remove_file(tmp2)).await;
            return Err(e.into());
        }

        let meta = DiskEntryMeta {
            key: key.clone(),
            secondary,
            vary: response.vary.clone(),
            status: response.status,
            times: response.times,
            lifetime: response.lifetime,
            directives: response.directives.clone(),
            body_len,
            file_len,
            id,
            generation: 0,
        };
        let mut idx = self.lock();
        // Make room first, then publish: the rename and the index change
        // happen together under the lock.
        self.evict_to(&mut idx, self.inner.capacity.saturating_sub(file_len));
        if let Err(e) = fs::rename(&tmp, &path) {
            drop(idx);
            self.write_failed(&e);
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        idx.next_generation += 1;
        let meta = Arc::new(DiskEntryMeta {
            generation: idx.next_generation,
            ..meta
        });
        let variants = idx.by_key.remove(key).unwrap_or_default();
        let mut keep = Vec::with_capacity(variants.len() + 1);
        for v in variants {
            if v.id == id {
                idx.policy.remove(&v.id); // same file, already replaced by the rename
                idx.by_id.remove(&v.id);
            } else if v.vary != meta.vary {
                self.unlink_locked(&mut idx, &v);
            } else {
                keep.push(v);
            }
        }
        while keep.len() >= MAX_VARIANTS {
            let oldest = keep.remove(0);
            self.unlink_locked(&mut idx, &oldest);
        }
        keep.push(Arc::clone(&meta));
        idx.by_key.insert(key.clone(), keep);
        idx.by_id.insert(id, Arc::clone(&meta));
        idx.policy.insert(id, file_len);
        self.inner.inserts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn write_object(&self, tmp: &Path, head: Bytes, body: &[Bytes]) -> std::io::Result<()> {
        let tmp = tmp.to_path_buf();
        let file =
            blocking(move || OpenOptions::new().write(true).create_new(true).open(tmp)).await?;
        let file = Arc::new(file);
        let mut offset = head.len() as u64;
        self.inner.io.write_all_at(&file, head, 0).await?;
        for chunk in body {
            self.inner
                .io
                .write_all_at(&file, chunk.clone(), offset)
                .await?;
            offset += chunk.len() as u64;
        }
        Ok(())
    }

    fn write_failed(&self, e: &std::io::Error) {
        self.inner.write_failures.fetch_add(1, Ordering::Relaxed);
        let fatal = matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::EACCES | libc::EPERM)
        );
        if fatal && !self.inner.disabled.swap(true, Ordering::Relaxed) {
            tracing::error!(
                path = %self.inner.root.display(),
                error = %e,
                "disk cache write failed; disk tier writes disabled, continuing memory-only"
            );
        } else if !fatal {
            tracing::warn!(error = %e, "disk cache write failed");
        }
    }

    /// Reads and verifies the head of a looked-up object.
    pub async fn read_head(&self, meta: &DiskEntryMeta) -> Result<DiskObject, DiskError> {
        let path = self.object_path(meta.id);
        let p = path.clone();
        let opened = blocking(move || {
            let f = File::open(&p)?;
            let len = f.metadata()?.len();
            // Bodies are read front to back: let the kernel read ahead.
            // SAFETY: plain syscall on an fd we own.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
            Ok((f, len))
        })
        .await;
        let (file, len) = match opened {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(meta);
                return Err(DiskError::Missing);
            }
            Err(e) => return Err(e.into()),
        };
        let file = Arc::new(file);
        let first = self
            .inner
            .io
            .read_at(&file, HEAD_READ.min(len as usize), 0)
            .await?;
        let parsed = (|| {
            let fixed = format::decode_fixed(&first)?;
            if len != fixed.file_len() {
                return Err("file length does not match header (truncated?)");
            }
            Ok(fixed)
        })();
        let fixed = match parsed {
            Ok(f) => f,
            Err(reason) => return Err(self.discard(meta, &path, reason)),
        };
        let body_offset = fixed.body_offset();
        let rest = if body_offset as usize <= first.len() {
            first[format::FIXED_LEN..body_offset as usize].to_vec()
        } else {
            let more = self
                .inner
                .io
                .read_at(
                    &file,
                    (body_offset as usize) - first.len(),
                    first.len() as u64,
                )
                .await?;
            let mut r = first[format::FIXED_LEN..].to_vec();
            r.extend_from_slice(&more);
            r
        };
        let decoded = format::decode_rest(&fixed, &rest).and_then(|(m, sums)| {
            let same = m.key == meta.key.as_str()
                && m.secondary.as_deref() == Some(meta.secondary.as_bytes());
            if same {
                Ok((m, sums))
            } else {
                Err("object names another key")
            }
        });
        let (m, sums) = match decoded {
            Ok(x) => x,
            Err(reason) => return Err(self.discard(meta, &path, reason)),
        };
        let secondary = m.secondary_key();
        Ok(DiskObject {
            head: DiskHead {
                status: m.status,
                headers: m.headers,
                times: m.times,
                lifetime: m.lifetime,
                directives: m.directives,
                vary: m.vary,
                secondary,
                body_len: fixed.body_len,
            },
            body: DiskBody {
                store: self.clone(),
                meta: meta.clone(),
                file,
                path,
                sums,
                body_offset,
                body_len: fixed.body_len,
                next: 0,
            },
        })
    }

    /// Removes every variant of `key`. Returns how many were removed.
    pub fn remove(&self, key: &CacheKey) -> usize {
        let mut idx = self.lock();
        let variants = idx.by_key.remove(key).unwrap_or_default();
        for v in &variants {
            self.unlink_locked(&mut idx, v);
        }
        variants.len()
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn object_path(&self, (key, var): ObjectId) -> PathBuf {
        let name = format!("{key:032x}-{var:016x}");
        self.inner.root.join(OBJECTS).join(&name[..2]).join(name)
    }

    /// Evicts until the tracked bytes are at most `target`.
    fn evict_to(&self, idx: &mut Index, target: u64) {
        while idx.policy.total_bytes() > target {
            let Some(id) = idx.policy.evict() else { break };
            if let Some(e) = idx.by_id.remove(&id) {
                self.drop_variant(idx, &e);
                let _ = fs::remove_file(self.object_path(id));
                self.inner.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes `e` from the per-key list (not from `by_id`/`policy`).
    fn drop_variant(&self, idx: &mut Index, e: &DiskEntryMeta) {
        if let Some(list) = idx.by_key.get_mut(&e.key) {
            list.retain(|v| v.id != e.id);
            if list.is_empty() {
                idx.by_key.remove(&e.key);
            }
        }
    }

    /// Drops `e` from the index and deletes its file (lock held).
    fn unlink_locked(&self, idx: &mut Index, e: &DiskEntryMeta) {
        idx.by_id.remove(&e.id);
        idx.policy.remove(&e.id);
        self.drop_variant(idx, e);
        let _ = fs::remove_file(self.object_path(e.id));
    }

    /// Forgets `meta` if the index still holds that generation of it;
    /// returns whether it did (and so may delete the file).
    fn forget(&self, meta: &DiskEntryMeta) -> bool {
        let mut idx = self.lock();
        let current = idx
            .by_id
            .get(&meta.id)
            .is_some_and(|e| e.generation == meta.generation);
        if current {
            self.unlink_locked(&mut idx, meta);
        }
        current
    }

    /// Deletes a corrupt object and builds the error for the caller.
    fn discard(&self, meta: &DiskEntryMeta, path: &Path, reason: &'static str) -> DiskError {
        self.inner.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %path.display(), reason, "corrupt disk cache object removed");
        self.forget(meta);
        DiskError::Corrupt {
            path: path.to_path_buf(),
            reason,
        }
    }
}

/// Creates or validates the root and its FORMAT file. Returns whether an
/// incompatible store was cleaned.
fn prepare_root(root: &Path) -> Result<bool, String> {
    match fs::metadata(root) {
        Ok(m) if !m.is_dir() => return Err("exists and is not a directory".into()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(|e| format!("cannot create: {e}"))?;
        }
        Err(e) => return Err(format!("cannot stat: {e}")),
    }
    let format_path = root.join("FORMAT");
    let mut cleaned = false;
    match fs::read(&format_path) {
        Ok(content) if content == FORMAT_LINE.as_bytes() => return Ok(false),
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
            cleaned = true;
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
    Ok(cleaned)
}

/// Scans the fan-out directories in parallel.
fn scan(objects: &Path) -> (Vec<DiskEntryMeta>, ScanReport) {
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
