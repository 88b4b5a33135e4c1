//! Reading an object: the head (fixed header and metadata, verified
//! together), then the body one verified 64 KiB block at a time, so no
//! unverified byte is ever returned. A failed check deletes the object.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::io::blocking;
use super::purge::lifetime_after_purge;
use super::{DiskEntryMeta, DiskError, DiskStore, HEAD_READ, format};
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

impl DiskStore {
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
        Ok(DiskObject {
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
            },
        })
    }
}
