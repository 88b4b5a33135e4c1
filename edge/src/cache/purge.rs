//! Purges across both tiers (the admin API's `POST /purge`).

use edge_cache::key::CacheKey;
use edge_cache::tags::cache_tags;

use super::HttpCache;

/// Variants a purge touched, per tier. Write-through puts most objects in
/// both tiers, so the two counts mostly name the same objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Variants purged from the memory tier.
    pub memory: usize,
    /// Variants purged from the disk tier.
    pub disk: usize,
}

impl Purged {
    /// Objects affected, counted in the tier that held more of them.
    pub fn objects(self) -> usize {
        self.memory.max(self.disk)
    }
}

impl HttpCache {
    /// Purges every variant of `url` (the cache-key text of
    /// [`edge_cache::key::cache_url`]); `soft` marks them stale instead.
    pub fn purge_url(&self, url: &str, soft: bool) -> Purged {
        Purged {
            memory: self.memory.purge_url(url, soft),
            disk: self
                .disk
                .as_ref()
                .map_or(0, |disk| disk.purge_url(url, soft)),
        }
    }

    /// Purges every variant whose `Surrogate-Key` / `Cache-Tag` lists `tag`.
    pub fn purge_tag(&self, tag: &str, soft: bool) -> Purged {
        let tagged = |_: &CacheKey, r: &edge_cache::entry::StoredResponse| {
            cache_tags(&r.headers).iter().any(|t| t == tag)
        };
        Purged {
            memory: self.memory.purge_matching(soft, &tagged),
            disk: self
                .disk
                .as_ref()
                .map_or(0, |disk| disk.purge_tag(tag, soft)),
        }
    }
}
