//! The background half of a miss: read the origin's body into the flight
//! and store the object once it arrived complete: in memory and then on
//! disk, or, for an object too large for memory, straight to disk.

use std::sync::Arc;

use bytes::BytesMut;
use edge_cache::age::ResponseTimes;
use edge_cache::cache_control::ResponseDirectives;
use edge_cache::coalesce::Leader;
use edge_cache::disk::DiskWriter;
use edge_cache::entry::{ObjectHead, StoredResponse};
use edge_cache::freshness::Lifetime;
use edge_cache::key::CacheKey;
use http_body_util::BodyExt;

use super::{HttpCache, SharedHead};
use crate::body::ProxyBody;

/// Everything decided at the head of a storable response.
pub(super) struct StorePlan {
    pub(super) head: SharedHead,
    pub(super) length: u64,
    /// Too large for the memory tier: written straight to the disk tier.
    pub(super) disk_only: bool,
    pub(super) times: ResponseTimes,
    pub(super) lifetime: Lifetime,
    pub(super) directives: ResponseDirectives,
}

/// Reads the upstream body into the flight and stores the object once the
/// body arrived complete; any error fails the flight and stores nothing.
pub(super) async fn fill(
    mut leader: Leader<CacheKey, Arc<SharedHead>>,
    mut body: ProxyBody,
    plan: StorePlan,
    key: CacheKey,
    cache: Arc<HttpCache>,
) {
    // A disk-only object is not collected here: each chunk goes to the
    // flight (which keeps only what its slowest reader still needs) and to
    // the disk writer.
    let mut chunks = Vec::new();
    let mut writer = if plan.disk_only {
        disk_writer(&cache, &key, &plan)
    } else {
        None
    };
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    if received > plan.length {
                        tracing::warn!(
                            expected = plan.length,
                            "origin sent more than Content-Length"
                        );
                        return;
                    }
                    if !plan.disk_only {
                        chunks.push(data.clone());
                    }
                    leader.push_chunk(data.clone());
                    if let Some(w) = &mut writer
                        && let Err(error) = w.write(data).await
                    {
                        tracing::debug!(%error, "disk tier write failed; object not stored");
                        writer = None;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "origin body failed; not stored");
                return;
            }
        }
    }
    if received != plan.length {
        tracing::warn!(
            expected = plan.length,
            received,
            "origin body truncated; not stored"
        );
        return;
    }
    if plan.disk_only {
        leader.finish();
        if let Some(writer) = writer
            && let Err(error) = writer.finish().await
        {
            tracing::debug!(%error, "object not written to the disk tier");
        }
        return;
    }
    // One compact copy per stored object: the received chunks may pin much
    // larger read buffers, and the store must hold what it counts.
    let mut compact = BytesMut::with_capacity(received as usize);
    for chunk in &chunks {
        compact.extend_from_slice(chunk);
    }
    let StorePlan {
        head,
        times,
        lifetime,
        directives,
        ..
    } = plan;
    let entry = StoredResponse {
        status: head.status,
        headers: head.headers,
        body: vec![compact.freeze()],
        times,
        lifetime,
        directives,
        vary: head.vary,
        secondary: head.secondary,
    };
    let entry = Arc::new(entry);
    let outcome = cache.memory.insert(key.clone(), entry.clone());
    let stats = cache.memory.stats();
    tracing::debug!(
        ?outcome,
        bytes = stats.bytes,
        objects = stats.objects,
        weighted = cache.memory.weighted_size(),
        "stored"
    );
    leader.finish();
    // After the clients are served: the disk copy is for later requests.
    cache.write_through(&key, &entry).await;
}

/// A writer for a disk-only object, or `None` (logged) when the disk tier
/// refuses it.
fn disk_writer(cache: &HttpCache, key: &CacheKey, plan: &StorePlan) -> Option<DiskWriter> {
    let disk = cache.disk.as_ref()?;
    let head = ObjectHead {
        status: plan.head.status,
        headers: plan.head.headers.clone(),
        times: plan.times,
        lifetime: plan.lifetime,
        directives: plan.directives.clone(),
        vary: plan.head.vary.clone(),
        secondary: plan.head.secondary.clone(),
    };
    disk.begin_write(key, &head, plan.length)
        .map_err(|error| tracing::debug!(%error, "disk tier refused the object"))
        .ok()
}
