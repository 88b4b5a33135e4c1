//! The disk tier: a persistent object store below the memory tier that
//! survives restarts, for objects too large for memory among others.
//!
//! # Layout
//!
//! ```text
//! <root>/FORMAT                    "edge-disk-cache 2\n"
//! <root>/purges                    soft-purge journal (see `journal.rs`)
//! <root>/objects/<hh>/<key>-<var>  one object (see `format.rs`)
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
//! contents are deleted and the store starts empty, never misread (version
//! 1, the same objects without a journal, is upgraded in place; see
//! `scan.rs`). The index is rebuilt by scanning every object's header
//! (checksummed; body blocks are checked when read), in parallel over the
//! fan-out directories, then the purge journal is replayed and compacted.
//! Leftover `*.tmp` files and objects that fail their header checks are
//! deleted.
//!
//! Measured (`tests/disk.rs::startup_scan_100k_objects`, release, 2 vCPU
//! VM, ext4 on virtio, warm page cache): 100k objects of 2 KiB rebuild in
//! 2.0 s. A cold cache after reboot will be slower (one random read per
//! object); a journal/snapshot of the index is the fix if that matters.
//!
//! # Writes and durability
//!
//! One write path: [`DiskStore::begin_write`] opens `<name>.<n>.tmp`,
//! [`DiskWriter::write`] streams the body to its final offset (the head's
//! length is known up front from the metadata and the announced body
//! length), and [`DiskWriter::finish`] writes the head, renames the file into
//! place and indexes it. [`DiskStore::insert`] is that sequence for a body
//! already in memory. A reader or a restart sees the whole object or
//! nothing: a dropped writer deletes its temp file, and `kill -9` mid-write
//! leaves only a temp file, removed by the next start-up scan. There is
//! **no fsync**: a cache may lose objects on power loss, and what a torn
//! write leaves (zeroed or stale blocks behind a renamed name) fails the
//! header or block checksums, so it is deleted rather than served. Renames
//! and unlinks run under the index lock so the index and the directory
//! always agree (TODO(perf): these are short metadata syscalls on the
//! caller's thread; io_uring RENAMEAT/UNLINKAT would take them off it).
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
//! # Purges
//!
//! [`DiskStore::purge_key`], [`DiskStore::purge_url`] and
//! [`DiskStore::purge_tag`] select objects by key, by URL (the key and its
//! forms with appended request headers) or by cache tag (from
//! `Surrogate-Key` / `Cache-Tag`, see [`crate::tags`]). A hard purge deletes the files. A soft purge keeps the
//! objects but makes them stale from the purge on: [`DiskEntryMeta::lifetime`]
//! is capped at the age the object had at the purge and
//! [`DiskEntryMeta::purged_at`] is set, so the caller treats it like any
//! stale object (revalidate, or serve within stale-while-revalidate).
//! Both survive a restart: hard by unlinking, soft through the journal
//! (`journal.rs`; if its append fails, the purge is done hard instead).
//! A purge also reaches objects being written when it is issued: their
//! `finish` discards them (hard) or stores them stale (soft); see
//! `purge.rs` for the rule.
//!
//! # Eviction
//!
//! Byte-weighted S3-FIFO (see `evict.rs`) over file sizes; the total of
//! object file sizes never exceeds the configured size. Lookups count as
//! reads. After a restart, objects re-enter oldest response first, with no
//! history. Temp files of writes in flight are not counted (TODO: reserve
//! their size at `begin_write` if many concurrent large writes matter).
//!
//! # Faults
//!
//! A write failing with ENOSPC, EDQUOT, EROFS, EACCES or EPERM disables
//! writes: logged once, counted in [`DiskStats::write_failures`], and
//! [`DiskStore::is_disabled`] turns true so the node continues memory-only.
//! Reads of objects already stored, and purges, keep working.

mod buffers;
mod evict;
pub mod format;
mod index;
mod io;
mod journal;
mod purge;
mod read;
mod scan;
mod uring;
mod writer;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, StatusCode};

use crate::age::ResponseTimes;
use crate::cache_control::ResponseDirectives;
use crate::entry::StoredResponse;
use crate::freshness::Lifetime;
use crate::key::CacheKey;
use crate::vary::{SecondaryKey, VarySpec};

use io::Io;
pub use io::{Backend, BackendChoice};
pub use read::{DiskBody, DiskHead, DiskObject};
pub use writer::DiskWriter;

use index::Index;
use journal::Journal;
use purge::{PurgeTarget, RecentPurges};

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
    /// The body written differs from the length given to `begin_write`
    /// (an upstream cut short or overlong); nothing was stored.
    #[error("body of {received} bytes where {expected} were announced; not stored")]
    BodyLength { expected: u64, received: u64 },
    /// An earlier write on this writer failed or was cancelled; nothing was
    /// stored. Drop the writer.
    #[error("disk write abandoned after an earlier failure or cancellation; not stored")]
    WriteAbandoned,
    /// A purge matching the object was issued while it was being written,
    /// so it was dropped (see `purge.rs`). Not a fault; nothing to do.
    #[error("object purged while being written; not stored")]
    PurgedDuringWrite,
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
    /// Freshness lifetime: as stored, or after a soft purge capped at the
    /// object's age at [`purged_at`](Self::purged_at), so it is stale from then on.
    pub lifetime: Lifetime,
    /// Cache directives for reuse decisions.
    pub directives: ResponseDirectives,
    /// Body length in bytes.
    pub body_len: u64,
    /// Size of the object file (what eviction counts).
    pub file_len: u64,
    /// Cache tags from the stored `Surrogate-Key` / `Cache-Tag` headers.
    pub tags: Arc<[String]>,
    /// When a soft purge made this object stale; `None` if never soft-purged.
    pub purged_at: Option<SystemTime>,
    id: ObjectId,
    generation: u64,
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
    /// Variants removed or made stale by purges (including writes in
    /// flight that a purge discarded or made stale).
    pub purged: u64,
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
    /// Objects deleted for failing their header checks (or for being
    /// displaced by a newer variant list, after a crash mid-replace).
    pub invalid_removed: u64,
    /// Objects found soft-purged by the purge journal (stale).
    pub soft_purged: u64,
    /// Whether an incompatible store was cleaned.
    pub cleaned_incompatible: bool,
    /// Wall time of the scan.
    pub elapsed: Duration,
}

/// `(key digest, secondary digest)`: names the file.
type ObjectId = (u128, u64);

/// Everything behind the store's one lock.
struct State {
    index: Index,
    purges: RecentPurges,
    journal: Journal,
}

struct Inner {
    root: PathBuf,
    capacity: u64,
    io: Io,
    backend_reason: String,
    state: Mutex<State>,
    disabled: AtomicBool,
    tmp_seq: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    corrupt: AtomicU64,
    write_failures: AtomicU64,
    purged: AtomicU64,
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
        let root_state = scan::prepare_root(&root).map_err(unusable)?;
        let objects = root.join(OBJECTS);
        for i in 0..=255u8 {
            let dir = objects.join(format!("{i:02x}"));
            fs::create_dir_all(&dir)
                .map_err(|e| unusable(format!("create {}: {e}", dir.display())))?;
        }
        let (io, backend_reason) = Io::detect(backend).map_err(DiskError::UringUnavailable)?;
        let (mut entries, mut report) = scan::scan(&objects);
        report.cleaned_incompatible = root_state == scan::RootState::Cleaned;

        let journal_path = root.join(journal::FILE_NAME);
        let (lines, dropped) = journal::read(&journal_path)
            .map_err(|e| unusable(format!("read {}: {e}", journal_path.display())))?;
        let mut replay = journal::Replay::new(lines);
        // Oldest response first: a newer variant list wins over an older one
        // a crash left behind, and eviction starts with the oldest.
        entries.sort_by_key(|e| e.times.response_time);
        let mut index = Index::new(size_bytes);
        for e in entries {
            let purged_at = replay.purged_at(&e.key, &e.tags, e.times.response_time);
            let (e, displaced) = index.insert(e);
            if let Some(at) = purged_at {
                index.mark_purged(e.id, at);
                report.soft_purged += 1;
            }
            for d in displaced {
                tracing::warn!(key = %d.key, "disk cache variant displaced by a newer one at start-up");
                let _ = fs::remove_file(object_path(&root, d.id));
                report.invalid_removed += 1;
            }
        }
        let replayed = replay.line_count();
        let kept = replay.into_kept();
        if dropped > 0 {
            tracing::warn!(path = %journal_path.display(), dropped, "malformed purge journal lines dropped");
        }
        if kept.len() < replayed || dropped > 0 {
            journal::rewrite(&journal_path, &kept)
                .map_err(|e| unusable(format!("rewrite {}: {e}", journal_path.display())))?;
        }
        let journal = Journal::open(&journal_path)
            .map_err(|e| unusable(format!("open {}: {e}", journal_path.display())))?;

        let store = DiskStore {
            inner: Arc::new(Inner {
                root,
                capacity: size_bytes,
                io,
                backend_reason,
                state: Mutex::new(State {
                    index,
                    purges: RecentPurges::default(),
                    journal,
                }),
                disabled: AtomicBool::new(false),
                tmp_seq: AtomicU64::new(0),
                inserts: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
                corrupt: AtomicU64::new(0),
                write_failures: AtomicU64::new(0),
                purged: AtomicU64::new(0),
                report: ScanReport::default(),
            }),
        };
        {
            let mut st = store.lock();
            store.evict_to(&mut st.index, size_bytes);
            report.objects = st.index.len() as u64;
            report.bytes = st.index.total_bytes();
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
            soft_purged = report.soft_purged,
            purge_journal_lines = kept.len(),
            cleaned_incompatible = report.cleaned_incompatible,
            upgraded = root_state == scan::RootState::Upgraded,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "disk cache opened"
        );
        Ok(store)
    }

    /// The configured size bound in bytes.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
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
        let st = self.lock();
        let c = &self.inner;
        DiskStats {
            objects: st.index.len() as u64,
            bytes: st.index.total_bytes(),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
            purged: c.purged.load(Ordering::Relaxed),
        }
    }

    /// Finds the variant of `key` that `request` selects (RFC 9111 §4.1),
    /// from the in-memory index only. Check `lifetime` as for any stored
    /// response: a soft-purged object is stale.
    pub fn lookup(&self, key: &CacheKey, request: &HeaderMap) -> Option<DiskEntryMeta> {
        let found = self.lock().index.lookup(key, request)?;
        Some(DiskEntryMeta::clone(&found))
    }

    /// Writes `response` as a variant of `key` (replacing the same variant,
    /// or all variants when its Vary differs) and indexes it: the streaming
    /// writer fed from memory (see [`DiskStore::begin_write`]).
    pub async fn insert(&self, key: &CacheKey, response: &StoredResponse) -> Result<(), DiskError> {
        let mut writer = self.begin_write(key, &response.head(), response.body_len())?;
        for chunk in &response.body {
            writer.write(chunk.clone()).await?;
        }
        writer.finish().await
    }

    /// Soft (`soft = true`) or hard purge of every variant of `key`, and of
    /// writes of it in flight. Returns the number of stored variants affected.
    pub fn purge_key(&self, key: &CacheKey, soft: bool) -> usize {
        self.purge(PurgeTarget::Key(key.clone()), soft)
    }

    /// Soft or hard purge of every key whose URL part is `url` (the text
    /// form from [`crate::key::cache_url`]): the plain key and the keys with
    /// appended request headers, as [`crate::memory::MemoryTier::remove_url`]
    /// does. Returns the number of stored variants affected.
    pub fn purge_url(&self, url: &str, soft: bool) -> usize {
        self.purge(PurgeTarget::Url(url.to_owned()), soft)
    }

    /// Soft or hard purge of every object tagged `tag` (compared exactly;
    /// see [`crate::tags`]), and of writes of such objects in flight.
    /// Returns the number of stored variants affected.
    pub fn purge_tag(&self, tag: &str, soft: bool) -> usize {
        self.purge(PurgeTarget::Tag(tag.to_owned()), soft)
    }

    /// Removes every variant of `key`: a hard [`purge_key`](Self::purge_key).
    pub fn remove(&self, key: &CacheKey) -> usize {
        self.purge_key(key, false)
    }

    /// The one purge path. Hard: drop from the index and unlink. Soft: record
    /// the purge in the journal, then cap the lifetimes; if the journal
    /// cannot be written the purge is done hard instead, so that it still
    /// survives a restart. Either way writes in flight are told (see
    /// `purge.rs`). Blocking, like the other metadata syscalls here: the
    /// unlinks and the journal append happen under the lock.
    fn purge(&self, target: PurgeTarget, soft: bool) -> usize {
        let at = SystemTime::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let ids = st.index.matching(&target);
        let mut soft = soft;
        if soft && (!ids.is_empty() || st.purges.writes_in_flight()) {
            let line = journal::Line {
                target: target.clone(),
                at,
            };
            if let Err(e) = st.journal.append(&line) {
                tracing::error!(
                    path = %st.journal.path().display(),
                    error = %e,
                    "cannot record a soft purge in the journal; purging hard so it survives a restart"
                );
                soft = false;
            }
        }
        for &id in &ids {
            if soft {
                st.index.mark_purged(id, at);
            } else if st.index.remove(id).is_some() {
                self.delete_file(id);
            }
        }
        st.purges.record(target.clone(), soft, at);
        drop(guard);
        self.inner
            .purged
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        tracing::debug!(?target, soft, variants = ids.len(), "disk cache purge");
        ids.len()
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

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn object_path(&self, id: ObjectId) -> PathBuf {
        object_path(&self.inner.root, id)
    }

    /// Deletes an object's file (its index entry is already gone).
    fn delete_file(&self, id: ObjectId) {
        let _ = fs::remove_file(self.object_path(id));
    }

    /// Evicts until the tracked bytes are at most `target` (lock held).
    fn evict_to(&self, index: &mut Index, target: u64) {
        while index.total_bytes() > target {
            let Some(e) = index.evict_one() else { break };
            self.delete_file(e.id);
            self.inner.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets `meta` if the index still holds that generation of it (and
    /// deletes the file); returns whether it did.
    fn forget(&self, meta: &DiskEntryMeta) -> bool {
        let mut st = self.lock();
        let gone = st.index.forget(meta).is_some();
        if gone {
            self.delete_file(meta.id);
        }
        gone
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

/// `<root>/objects/<hh>/<key>-<var>` for an object id.
fn object_path(root: &Path, (key, var): ObjectId) -> PathBuf {
    let name = format!("{key:032x}-{var:016x}");
    root.join(OBJECTS).join(&name[..2]).join(name)
}
