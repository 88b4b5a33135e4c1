//! Reading an object: the head (fixed header and metadata, verified
//! together), then the body one verified 64 KiB block at a time, so no
//! unverified byte is ever returned. A failed check deletes the object.
//!
//! Reads are larger than blocks (the head with the first block, then
//! [`READ_AHEAD_BLOCKS`] per `preadv2`, or the whole file for
//! [`DiskStore::read_whole`]) and the blocks handed out are those buffers
//! or slices of them, never copies. Opens
//! and reads are done on the calling thread when the dentry and page caches
//! can answer (see `io.rs`).

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::io::{blocking, open_cached};
use super::purge::lifetime_after_purge;
use super::{DiskEntryMeta, DiskError, DiskStore, HEAD_READ, format};

/// First read of an object streamed in blocks: the head (fixed header and
/// typical metadata) and the first body block in one read, so a 64 KiB
/// object is served from a single read.
const FIRST_READ: usize = HEAD_READ + format::BLOCK_SIZE as usize;
/// Blocks per read while streaming: 4 cuts syscalls per MiB from 16 to 4,
/// while a stream stalled on a slow client pins at most 256 KiB.
const READ_AHEAD_BLOCKS: usize = 4;
use crate::age::ResponseTimes;
use crate::cache_control::ResponseDirectives;
use crate::freshness::Lifetime;
use crate::vary::{SecondaryKey, VarySpec};

/// The head of an object read from disk: the verified metadata and headers.
#[derive(Debug)]
pub struct DiskHead {
    /// Stored status.
    pub status: StatusCode,
    /// Stored header section.
    pub headers: HeaderMap,
    /// Times for the age calculation.
    pub times: ResponseTimes,
    /// As in [`DiskEntryMeta::lifetime`]: capped after a soft purge.
    pub lifetime: Lifetime,
    /// Cache directives for reuse decisions.
    pub directives: ResponseDirectives,
    /// The response's Vary.
    pub vary: VarySpec,
    /// The variant's secondary key.
    pub secondary: Option<SecondaryKey>,
    /// Body length in bytes.
    pub body_len: u64,
    /// As in [`DiskEntryMeta::purged_at`].
    pub purged_at: Option<SystemTime>,
}

/// An opened object: its head, and a handle to stream its body.
pub struct DiskObject {
    /// The verified head.
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
    /// Blocks read but not yet returned, from block `next` on; not yet
    /// verified (each is checked as it is handed out).
    ahead: VecDeque<Bytes>,
}

impl DiskBody {
    /// The next block, `None` at the end. A corrupt or short block removes
    /// the object and yields `Corrupt`; no unverified byte is returned.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, DiskError>> {
        if self.next >= self.sums.len() {
            return None;
        }
        if self.ahead.is_empty() {
            // Several blocks per read: fewer syscalls (and, off the page
            // cache, fewer hand-offs to the backend) per byte served.
            let last = self.sums.len().min(self.next + READ_AHEAD_BLOCKS);
            let lens: Vec<usize> = (self.next..last).map(|i| self.block_len(i)).collect();
            let start = self.next as u64 * u64::from(format::BLOCK_SIZE);
            let io = &self.store.inner.io;
            match io
                .read_vectored(&self.file, &lens, self.body_offset + start)
                .await
            {
                Ok(bufs) => self
                    .ahead
                    .extend(bufs.into_iter().map(super::buffers::into_bytes)),
                Err(e) => return Some(Err(e.into())),
            }
        }
        let block = self.ahead.pop_front().unwrap_or_default();
        let why = if block.len() < self.block_len(self.next) {
            Some("short read: file truncated")
        } else if format::block_sum(&block) != self.sums[self.next] {
            Some("body checksum mismatch")
        } else {
            None
        };
        if let Some(reason) = why {
            return Some(Err(self.fail(reason)));
        }
        self.next += 1;
        Some(Ok(block))
    }

    /// Body bytes not yet returned.
    pub fn remaining(&self) -> u64 {
        self.body_len
            .saturating_sub(self.next as u64 * u64::from(format::BLOCK_SIZE))
    }

    /// Length of block `i` (the last one may be short).
    fn block_len(&self, i: usize) -> usize {
        let start = i as u64 * u64::from(format::BLOCK_SIZE);
        u64::from(format::BLOCK_SIZE).min(self.body_len - start) as usize
    }

    /// Ends the stream and removes the object.
    fn fail(&mut self, reason: &'static str) -> DiskError {
        self.next = self.sums.len();
        self.ahead.clear();
        self.store.discard(&self.meta, &self.path, reason)
    }
}

/// Opens an object file for reading and returns it with its length: on
/// the calling thread when its path is in the dentry cache, else on the
/// blocking pool.
async fn open_for_read(path: &Path) -> std::io::Result<(File, u64)> {
    let file = match open_cached(path)? {
        Some(f) => f,
        None => {
            let p = path.to_path_buf();
            blocking(move || File::open(&p)).await?
        }
    };
    // fstat on an open descriptor needs no disk I/O.
    let len = file.metadata()?.len();
    Ok((file, len))
}

impl DiskStore {
    /// Reads and verifies the head of a looked-up object (and, in the same
    /// read, usually its first body block).
    pub async fn read_head(&self, meta: &DiskEntryMeta) -> Result<DiskObject, DiskError> {
        let (object, first) = self.open_object(meta, FIRST_READ).await?;
        let mut object = object;
        let body = &mut object.body;
        let end = body.body_offset as usize + body.block_len(0).min(body.body_len as usize);
        if !body.sums.is_empty() && end <= first.len() {
            body.ahead
                .push_back(first.slice(body.body_offset as usize..end));
        }
        Ok(object)
    }

    /// The head and the whole body, every block verified: one read of the
    /// whole file, and the body is a slice of it (no copy). For objects
    /// read whole, to answer and promote to the memory tier.
    pub async fn read_whole(&self, meta: &DiskEntryMeta) -> Result<(DiskHead, Bytes), DiskError> {
        let (object, first) = self.open_object(meta, usize::MAX).await?;
        let DiskObject { head, mut body } = object;
        let from = (body.body_offset as usize).min(first.len());
        let all = first.slice(from..);
        let mut at = 0;
        for i in 0..body.sums.len() {
            let len = body.block_len(i);
            let Some(block) = all.get(at..at + len) else {
                return Err(body.fail("short read: file truncated"));
            };
            if format::block_sum(block) != body.sums[i] {
                return Err(body.fail("body checksum mismatch"));
            }
            at += len;
        }
        Ok((head, all))
    }

    /// Opens the object and reads its first `first_read` bytes (at most
    /// the file): the object with its head verified, and those bytes.
    async fn open_object(
        &self,
        meta: &DiskEntryMeta,
        first_read: usize,
    ) -> Result<(DiskObject, Bytes), DiskError> {
        let path = self.object_path(meta.id);
        let (file, len) = match open_for_read(&path).await {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(meta);
                return Err(DiskError::Missing);
            }
            Err(e) => return Err(e.into()),
        };
        let file = Arc::new(file);
        let want = usize::try_from(len).unwrap_or(usize::MAX).min(first_read);
        if (want as u64) < len {
            // More reads follow, front to back: let the kernel read ahead.
            // SAFETY: plain syscall on an fd we own.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
        }
        let first = Bytes::from(self.inner.io.read_at(&file, want, 0).await?);
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
        let more;
        let rest: &[u8] = if body_offset as usize <= first.len() {
            &first[format::FIXED_LEN..body_offset as usize]
        } else {
            let tail = self
                .inner
                .io
                .read_at(
                    &file,
                    (body_offset as usize) - first.len(),
                    first.len() as u64,
                )
                .await?;
            let mut r = first[format::FIXED_LEN..].to_vec();
            r.extend_from_slice(&tail);
            more = r;
            &more
        };
        let decoded = format::decode_rest(&fixed, rest).and_then(|(m, sums)| {
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
        // A soft purge may have landed since the lookup: ask the index.
        let purged_at = {
            let st = self.lock();
            st.index
                .current(meta)
                .map_or(meta.purged_at, |e| e.purged_at)
        };
        let lifetime = match purged_at {
            Some(at) => lifetime_after_purge(m.lifetime, &m.times, at),
            None => m.lifetime,
        };
        let secondary = m.secondary_key();
        let object = DiskObject {
            head: DiskHead {
                status: m.status,
                headers: m.headers,
                times: m.times,
                lifetime,
                directives: m.directives,
                vary: m.vary,
                secondary,
                body_len: fixed.body_len,
                purged_at,
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
                ahead: VecDeque::new(),
            },
        };
        Ok((object, first))
    }
}
