//! The disk tier in the request path: edge-cache's [`DiskStore`] below the
//! memory tier.
//!
//! - **Lookup** after a memory miss asks the store's in-memory index only
//!   (no disk I/O on the request path to learn there is nothing).
//! - **Objects that fit the memory tier** are read whole (every 64 KiB
//!   block verified against its checksum) before anything is answered, then
//!   offered to the memory tier (its TinyLFU admission decides whether they
//!   stay: promotion) and answered like a memory hit. A corrupt or missing
//!   file is removed by the store and the request simply becomes a miss, so
//!   the client gets the origin's body, never a damaged one.
//! - **Larger objects** stream from disk block by block. The first block is
//!   read and verified before the response head goes out; a later block
//!   failing its checksum aborts the transfer (the client sees a broken
//!   connection, never wrong bytes) and removes the object.
//! - **Writes**: every object stored in memory is also written to disk
//!   (write-through, from the fill's background task after the clients are
//!   served), so an object evicted from memory is still on disk and a
//!   restart finds everything that was stored.
//!
//! The store's io_uring ring is registered in the reactor of the runtime
//! that opened it, so the store is opened on its own `edge-disk` thread
//! whose runtime keeps driving the ring; workers submit from their own
//! runtimes and are woken across threads. Only reads the page cache cannot
//! answer go there: cached ones are done on the worker (see edge-cache's
//! `disk/io.rs`), so a warm disk hit does not leave the worker's thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use anyhow::Context as _;
use bytes::Bytes;
use edge_cache::age;
use edge_cache::cache_control::RequestDirectives;
use edge_cache::coalesce::Stats as CoalesceStats;
use edge_cache::counters::Outcome;
use edge_cache::disk::{
    BackendChoice, DiskBody, DiskEntryMeta, DiskError, DiskHead, DiskStats, DiskStore,
};
use edge_cache::entry::StoredResponse;
use edge_cache::key::CacheKey;
use edge_cache::memory::MemoryStats;
use edge_cache::reuse::{self, Reuse, StoredFreshness};
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{CacheableRequest, Fetch, HttpCache, StoredParts};
use crate::body::{BoxError, ProxyBody};

/// Opens the store described by `[cache] disk` on the `edge-disk` thread.
pub(super) fn open(config: &edge_config::DiskCache) -> anyhow::Result<DiskStore> {
    let (tx, rx) = std::sync::mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("edge-disk".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let backend = match config.backend {
                    edge_config::DiskBackend::Auto => BackendChoice::Auto,
                    edge_config::DiskBackend::IoUring => BackendChoice::Uring,
                    edge_config::DiskBackend::Blocking => BackendChoice::Blocking,
                };
                let opened = DiskStore::open(&config.path, config.size, backend);
                let running = opened.is_ok();
                let _ = tx.send(opened.map_err(anyhow::Error::from));
                if running {
                    // Drives the ring's completions for as long as the node runs.
                    std::future::pending::<()>().await;
                }
            });
        })?;
    rx.recv()
        .context("the disk cache thread stopped before opening the store")?
        .context("cache.disk")
}

/// Reads a whole object, verified, as a stored response: one read of the
/// file, and the body is a slice of that buffer (no copy).
pub(super) async fn load(
    store: &DiskStore,
    meta: &DiskEntryMeta,
) -> Result<StoredResponse, DiskError> {
    let (head, body) = store.read_whole(meta).await?;
    let DiskHead {
        status,
        headers,
        times,
        lifetime,
        directives,
        vary,
        secondary,
        ..
    } = head;
    Ok(StoredResponse {
        status,
        headers,
        body: vec![body],
        times,
        lifetime,
        directives,
        vary,
        secondary,
    })
}

/// Opens a large object for streaming: its head, and a body whose first
/// block has already been read and verified.
pub(super) async fn open_stream(
    store: &DiskStore,
    meta: &DiskEntryMeta,
) -> Result<(DiskHead, DiskStream), DiskError> {
    let (head, mut body) = store.read_head(meta).await?.into_parts();
    let first = match body.next_chunk().await {
        Some(chunk) => Some(chunk?),
        None => None,
    };
    let stream = DiskStream {
        remaining: head.body_len,
        first,
        body: Some(body),
        pending: None,
    };
    Ok((head, stream))
}

type NextBlock = Pin<Box<dyn Future<Output = (DiskBody, Option<Result<Bytes, DiskError>>)> + Send>>;

/// A body streaming from disk one verified block at a time.
pub(super) struct DiskStream {
    remaining: u64,
    first: Option<Bytes>,
    body: Option<DiskBody>,
    pending: Option<NextBlock>,
}

impl Body for DiskStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            self.remaining = self.remaining.saturating_sub(first.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.pending.is_none() {
            let Some(mut body) = self.body.take() else {
                return Poll::Ready(None);
            };
            self.pending = Some(Box::pin(async move {
                let next = body.next_chunk().await;
                (body, next)
            }));
        }
        let pending = self.pending.as_mut().expect("set above");
        let (body, next) = ready!(pending.as_mut().poll(cx));
        self.pending = None;
        match next {
            Some(Ok(chunk)) => {
                self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                self.body = Some(body);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "disk object failed mid-stream; transfer aborted");
                Poll::Ready(Some(Err(error.into())))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Counters and sizes of both tiers at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CacheStats {
    /// The memory tier.
    pub memory: MemoryStats,
    /// The disk tier, when configured.
    pub disk: Option<DiskTierStats>,
    /// Request coalescing.
    pub coalesce: CoalesceStats,
}

/// The disk tier's counters plus its lookups after memory misses.
#[derive(Debug, Clone, Copy)]
pub struct DiskTierStats {
    /// The store's own counters.
    pub store: DiskStats,
    /// Memory misses the disk index had an entry for.
    pub hits: u64,
    /// Memory misses it had nothing for.
    pub misses: u64,
    /// `"io_uring"` or `"blocking"`.
    pub backend: &'static str,
    /// Writes are off after a full or read-only disk.
    pub disabled: bool,
}

/// Which tier answered a hit; named in `Cache-Status` as `detail=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tier {
    Memory,
    Disk,
}

/// The `answer_from_store` member of a memory hit.
pub(super) const MEMORY_HIT: &str = "hit";
/// The `answer_from_store` member of a disk hit.
pub(super) const DISK_HIT: &str = "hit; detail=disk";

impl Tier {
    /// The `Cache-Status` parameter naming the tier.
    pub(super) fn detail(self) -> &'static str {
        match self {
            Tier::Memory => "; detail=memory",
            Tier::Disk => "; detail=disk",
        }
    }

    /// The member to pass to `answer_from_store` for a hit from this tier.
    pub(super) fn hit_member(self) -> &'static str {
        match self {
            Tier::Memory => MEMORY_HIT,
            Tier::Disk => DISK_HIT,
        }
    }
}

/// What the disk tier made of a memory miss.
pub(super) enum FromDisk {
    /// The whole object, verified and offered to the memory tier: decide
    /// on it like on a memory hit.
    Loaded(Arc<StoredResponse>),
    /// A large object answered from disk (or `only-if-cached` refused).
    Answered(Response<ProxyBody>),
    /// Nothing usable: fetch from origin.
    Miss,
}

/// Largest object the disk tier takes: an eighth of its size, so one
/// object never evicts most of the tier (as the memory tier's default).
const DISK_OBJECT_SHARE: u64 = 8;

impl HttpCache {
    /// Whether an object of `length` bytes too large for memory can be
    /// stored on disk instead.
    pub(super) fn disk_takes(&self, length: u64) -> bool {
        self.disk.as_ref().is_some_and(|disk| {
            !disk.is_disabled() && length <= disk.capacity() / DISK_OBJECT_SHARE
        })
    }

    /// The disk tier's entry for the request, from its index only.
    pub(super) fn disk_lookup(&self, key: &CacheKey, request: &HeaderMap) -> Option<DiskEntryMeta> {
        let found = self.disk.as_ref()?.lookup(key, request);
        let slot = usize::from(found.is_none());
        self.disk_lookups[slot].fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The memory tier's budget in bytes.
    pub fn memory_capacity(&self) -> u64 {
        self.memory.options().capacity_bytes
    }

    /// The tiers' counters and sizes, for metrics.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            memory: self.memory.stats(),
            disk: self.disk.as_ref().map(|disk| DiskTierStats {
                store: disk.stats(),
                hits: self.disk_lookups[0].load(Ordering::Relaxed),
                misses: self.disk_lookups[1].load(Ordering::Relaxed),
                backend: disk.backend().as_str(),
                disabled: disk.is_disabled(),
            }),
            coalesce: self.flights.stats(),
        }
    }

    /// Writes a stored object to the disk tier too (write-through).
    pub(super) async fn write_through(&self, key: &CacheKey, entry: &StoredResponse) {
        let Some(disk) = &self.disk else { return };
        if disk.is_disabled() {
            return;
        }
        if let Err(error) = disk.insert(key, entry).await {
            // Full or read-only disks are logged once by the store itself.
            tracing::debug!(%error, "object not written to the disk tier");
        }
    }

    /// Drops every variant of `key` from both tiers.
    pub(super) fn forget(&self, key: &CacheKey) {
        self.memory.invalidate(key);
        if let Some(disk) = &self.disk {
            disk.remove(key);
        }
    }

    /// Drops the cached variants of `url` from both tiers.
    pub(super) fn forget_url(&self, url: &str) {
        self.memory.remove_url(url);
        if let Some(disk) = &self.disk {
            disk.purge_url(url, false);
        }
    }
}

impl Fetch {
    /// Looks at the disk tier's entry `meta` after a memory miss.
    pub(super) async fn look_on_disk(
        &self,
        req: &CacheableRequest,
        key: &CacheKey,
        directives: &RequestDirectives,
        meta: DiskEntryMeta,
        now: SystemTime,
    ) -> FromDisk {
        let store = self
            .cache
            .disk
            .as_ref()
            .expect("the entry came from the disk tier");
        if meta.body_len <= self.cache.max_object() {
            return match load(store, &meta).await {
                Ok(entry) => {
                    let entry = Arc::new(entry);
                    self.cache.memory.insert(key.clone(), entry.clone());
                    FromDisk::Loaded(entry)
                }
                Err(error) => {
                    tracing::warn!(%error, "disk object unusable; fetching from origin");
                    FromDisk::Miss
                }
            };
        }
        let current_age = age::current_age(&meta.times, now);
        let stored = StoredFreshness {
            freshness_lifetime: meta.lifetime.ttl,
            current_age,
            directives: &meta.directives,
        };
        match reuse::decide(&stored, directives, &self.policy.reuse) {
            Reuse::Fresh | Reuse::StaleAccepted { .. } => {}
            Reuse::GatewayTimeout => return FromDisk::Answered(self.only_if_cached_miss()),
            // Revalidating needs the stale copy at hand, which for an object
            // too large for memory it is not: fetch it whole again instead.
            Reuse::StaleWhileRevalidate { .. } | Reuse::MustValidate { .. } => {
                return FromDisk::Miss;
            }
        }
        match open_stream(store, &meta).await {
            Ok((head, stream)) => {
                let cache_status = self
                    .cache
                    .hit_status(head.lifetime.remaining_secs(current_age), Tier::Disk);
                FromDisk::Answered(self.answer_stored(
                    req,
                    StoredParts {
                        status: head.status,
                        headers: &head.headers,
                        length: head.body_len,
                    },
                    move || stream.boxed_unsync(),
                    current_age,
                    &cache_status,
                    Outcome::Hit,
                ))
            }
            Err(error) => {
                tracing::warn!(%error, "disk object unusable; fetching from origin");
                FromDisk::Miss
            }
        }
    }
}
