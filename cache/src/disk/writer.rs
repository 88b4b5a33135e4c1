//! Streaming writes: an object is written while its body arrives, without
//! holding the body in memory.
//!
//! Because `begin_write` is told the body length, the head's length is
//! known before the first body byte (metadata + 8 bytes per 64 KiB block,
//! `format::body_offset`), so body bytes go straight to their final offset
//! in the temp file while their block checksums are computed on the fly.
//! `finish` checks the length, writes the head (with the checksum table) at
//! offset 0, and renames the file into place under the index lock.
//!
//! Memory per writer is bounded: one 64 KiB coalescing buffer (small chunks
//! are gathered into block-sized writes so a body arriving in tiny frames
//! does not cost one I/O per frame; chunks of a block or more are written
//! as they are, without copying), the running block hash, and the checksum
//! table (8 bytes per 64 KiB of body, 16 KiB for a 128 MiB object).
//!
//! Failure handling: any failed or cancelled `write` leaves the writer
//! unusable (a cancelled write may have hashed bytes it never wrote), and
//! the temp file is deleted as soon as the writer fails or is dropped
//! unfinished. Deleting is a short unlink on the caller's thread, as the
//! store's other metadata syscalls are.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::format::{self, BLOCK_SIZE, BlockHasher};
use super::purge::Verdict;
use super::{DiskEntryMeta, DiskError, DiskStore};
use crate::entry::ObjectHead;
use crate::key::CacheKey;
use crate::tags::cache_tags;

/// Small chunks are gathered until this many bytes are pending.
const COALESCE: usize = BLOCK_SIZE as usize;

impl DiskStore {
    /// Starts writing a variant of `key` whose body will be exactly
    /// `body_len` bytes: feed the body to [`DiskWriter::write`], then call
    /// [`DiskWriter::finish`]. Nothing is visible to lookups before
    /// `finish` succeeds; dropping the writer earlier discards the object.
    ///
    /// Refused at once with [`DiskError::Disabled`], [`DiskError::VaryAny`]
    /// (`head.secondary` is `None`) or [`DiskError::TooLarge`]. Creates the
    /// temp file (a short blocking syscall).
    pub fn begin_write(
        &self,
        key: &CacheKey,
        head: &ObjectHead,
        body_len: u64,
    ) -> Result<DiskWriter, DiskError> {
        if self.is_disabled() {
            return Err(DiskError::Disabled);
        }
        let Some(secondary) = head.secondary.clone() else {
            return Err(DiskError::VaryAny);
        };
        let meta = format::encode_meta(key, head);
        let body_offset = format::body_offset(meta.len(), body_len);
        let capacity = self.inner.capacity;
        let file_len = body_offset.saturating_add(body_len);
        if file_len > capacity {
            return Err(DiskError::TooLarge {
                size: file_len,
                capacity,
            });
        }
        let id = (u128::from_be_bytes(key.digest()), secondary.digest());
        let path = self.object_path(id);
        let seq = self.inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{seq}.tmp"));
        let file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            Err(e) => {
                self.write_failed(&e);
                return Err(e.into());
            }
        };
        let epoch = self.lock().purges.begin_write();
        let entry = DiskEntryMeta {
            key: key.clone(),
            secondary,
            vary: head.vary.clone(),
            status: head.status,
            times: head.times,
            lifetime: head.lifetime,
            directives: head.directives.clone(),
            body_len,
            file_len,
            tags: Arc::from(cache_tags(&head.headers)),
            purged_at: None,
            id,
            generation: 0,
        };
        Ok(DiskWriter {
            store: self.clone(),
            entry,
            meta,
            file: Arc::new(file),
            path,
            tmp,
            body_offset,
            received: 0,
            flushed: 0,
            pending: BytesMut::new(),
            hasher: BlockHasher::with_body_len(body_len),
            epoch,
            tmp_live: true,
            usable: true,
            registered: true,
        })
    }
}

/// An object being written; see [`DiskStore::begin_write`]. Dropping it
/// before [`finish`](Self::finish) succeeds deletes the temp file.
pub struct DiskWriter {
    store: DiskStore,
    /// The index entry to publish at `finish`.
    entry: DiskEntryMeta,
    /// Encoded metadata (its length fixed the body offset).
    meta: Vec<u8>,
    file: Arc<File>,
    path: PathBuf,
    tmp: PathBuf,
    body_offset: u64,
    /// Body bytes accepted by `write` (hashed).
    received: u64,
    /// Body bytes written to the file; `pending` holds the rest.
    flushed: u64,
    pending: BytesMut,
    hasher: BlockHasher,
    /// Purge epoch at `begin_write` (see `purge.rs`).
    epoch: u64,
    /// The temp file exists and is ours to delete.
    tmp_live: bool,
    /// No write has failed or been cancelled.
    usable: bool,
    /// Still registered as in flight with the purge rules.
    registered: bool,
}

impl std::fmt::Debug for DiskWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskWriter")
            .field("key", &self.entry.key)
            .field("body_len", &self.entry.body_len)
            .field("received", &self.received)
            .field("usable", &self.usable)
            .finish()
    }
}

impl DiskWriter {
    /// Appends the next chunk of the body (any size, empty allowed). More
    /// bytes than announced fail with [`DiskError::BodyLength`]. After any
    /// error, or if this future is dropped before completing, the writer
    /// is unusable: later calls fail with [`DiskError::WriteAbandoned`].
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), DiskError> {
        if !self.usable {
            return Err(DiskError::WriteAbandoned);
        }
        let received = self.received + chunk.len() as u64;
        if received > self.entry.body_len {
            self.abandon();
            return Err(DiskError::BodyLength {
                expected: self.entry.body_len,
                received,
            });
        }
        // Unusable until this write completes: if the future is dropped
        // midway, bytes may be hashed but not written.
        self.usable = false;
        self.hasher.update(&chunk);
        self.received = received;
        match self.buffer_or_write(chunk).await {
            Ok(()) => {
                self.usable = true;
                Ok(())
            }
            Err(e) => Err(self.io_failed(e)),
        }
    }

    /// Body bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Completes the object: checks that exactly `body_len` bytes arrived,
    /// writes the head, renames the file into place and indexes it (evicting
    /// to make room, replacing the same variant or all variants when its
    /// Vary differs). A purge matching the object issued since
    /// `begin_write` makes it [`DiskError::PurgedDuringWrite`] (hard) or
    /// stores it already stale (soft). On any error nothing is stored.
    pub async fn finish(mut self) -> Result<(), DiskError> {
        if !self.usable {
            return Err(DiskError::WriteAbandoned);
        }
        if self.received != self.entry.body_len {
            self.abandon();
            return Err(DiskError::BodyLength {
                expected: self.entry.body_len,
                received: self.received,
            });
        }
        self.usable = false;
        if let Err(e) = self.write_head().await {
            return Err(self.io_failed(e));
        }
        self.publish()
    }

    async fn buffer_or_write(&mut self, mut chunk: Bytes) -> io::Result<()> {
        if !self.pending.is_empty() {
            let take = (COALESCE - self.pending.len()).min(chunk.len());
            self.pending.extend_from_slice(&chunk.split_to(take));
            if self.pending.len() < COALESCE {
                return Ok(());
            }
            self.flush().await?;
        }
        if chunk.len() >= COALESCE {
            self.write_body(chunk).await
        } else {
            self.pending.extend_from_slice(&chunk);
            Ok(())
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let buf = self.pending.split().freeze();
        self.write_body(buf).await
    }

    /// Writes `buf` at the next body offset.
    async fn write_body(&mut self, buf: Bytes) -> io::Result<()> {
        let len = buf.len() as u64;
        let offset = self.body_offset + self.flushed;
        let io = &self.store.inner.io;
        io.write_all_at(&self.file, buf, offset).await?;
        self.flushed += len;
        Ok(())
    }

    /// Flushes the body and writes the head, checksum table included.
    async fn write_head(&mut self) -> io::Result<()> {
        self.flush().await?;
        let sums = std::mem::take(&mut self.hasher).finish();
        let head = format::encode_prefix(&self.meta, self.entry.body_len, &sums);
        debug_assert_eq!(head.len() as u64, self.body_offset);
        let io = &self.store.inner.io;
        io.write_all_at(&self.file, Bytes::from(head), 0).await
    }

    /// Under the lock: apply the purge verdict, make room, rename, index.
    fn publish(&mut self) -> Result<(), DiskError> {
        let store = self.store.clone();
        let mut guard = store.lock();
        let st = &mut *guard;
        let verdict = st
            .purges
            .verdict(self.epoch, &self.entry.key, &self.entry.tags);
        st.purges.end_write(self.epoch);
        self.registered = false;
        if verdict != Verdict::Store {
            store.inner.purged.fetch_add(1, Ordering::Relaxed);
        }
        if verdict == Verdict::Discard {
            drop(guard);
            self.abandon();
            return Err(DiskError::PurgedDuringWrite);
        }
        // Make room first, then publish: the rename and the index change
        // happen together under the lock.
        let room = store.inner.capacity.saturating_sub(self.entry.file_len);
        store.evict_to(&mut st.index, room);
        if let Err(e) = fs::rename(&self.tmp, &self.path) {
            drop(guard);
            return Err(self.io_failed(e));
        }
        self.tmp_live = false;
        let (entry, displaced) = st.index.insert(self.entry.clone());
        if let Verdict::StoreStale(at) = verdict {
            st.index.mark_purged(entry.id, at);
        }
        for d in displaced {
            store.delete_file(d.id);
        }
        store.inner.inserts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts the failure (maybe disabling writes) and gives up the object.
    fn io_failed(&mut self, e: io::Error) -> DiskError {
        self.store.write_failed(&e);
        self.abandon();
        e.into()
    }

    /// Makes the writer unusable and deletes its temp file.
    fn abandon(&mut self) {
        self.usable = false;
        if self.tmp_live {
            self.tmp_live = false;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        self.abandon();
        if self.registered {
            self.store.lock().purges.end_write(self.epoch);
        }
    }
}
