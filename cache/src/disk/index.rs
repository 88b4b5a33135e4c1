//! The in-memory index of the disk tier: which variants are stored, under
//! which key and tags, and their eviction order. Pure bookkeeping: methods
//! return the entries that left, and the store deletes their files.
//!
//! Every entry is in `by_id`, in the variant list of its key, under each of
//! its tags, under its URL if its key has appended request headers, and in
//! the eviction policy, or in none of them: all additions
//! go through [`Index::insert`] and all removals through one private
//! function, so purge by tag never counts an evicted or replaced object.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;

use super::purge::{PurgeTarget, lifetime_after_purge};
use super::{DiskEntryMeta, MAX_VARIANTS, ObjectId, evict};
use crate::key::CacheKey;
use crate::vary::secondary_key;

/// The index; see the module docs for its invariant.
pub struct Index {
    by_key: HashMap<CacheKey, Vec<Arc<DiskEntryMeta>>>,
    by_id: HashMap<ObjectId, Arc<DiskEntryMeta>>,
    by_tag: HashMap<String, HashSet<ObjectId>>,
    /// URL -> its keys with appended request headers (a plain key is its
    /// URL, found in `by_key` directly), for purge by URL.
    by_url: HashMap<String, HashSet<CacheKey>>,
    policy: evict::S3Fifo<ObjectId>,
    next_generation: u64,
}

impl Index {
    /// An empty index for a byte budget.
    pub fn new(capacity: u64) -> Index {
        Index {
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            by_tag: HashMap::new(),
            by_url: HashMap::new(),
            policy: evict::S3Fifo::new(capacity),
            next_generation: 0,
        }
    }

    /// Variants indexed.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Sum of their file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.policy.total_bytes()
    }

    /// The variant of `key` that `request` selects (RFC 9111 §4.1); counts
    /// as a read for eviction.
    pub fn lookup(&mut self, key: &CacheKey, request: &HeaderMap) -> Option<Arc<DiskEntryMeta>> {
        let variants = self.by_key.get(key)?;
        let wanted = secondary_key(&variants.first()?.vary, request)?;
        let found = Arc::clone(variants.iter().rev().find(|e| e.secondary == wanted)?);
        self.policy.touch(&found.id);
        Some(found)
    }

    /// The indexed entry `meta` was read from, if it is still that one
    /// (same generation: not replaced since).
    pub fn current(&self, meta: &DiskEntryMeta) -> Option<&Arc<DiskEntryMeta>> {
        self.by_id
            .get(&meta.id)
            .filter(|e| e.generation == meta.generation)
    }

    /// Indexes `meta` as the newest variant of its key, replacing the entry
    /// with the same id. Returns it (with its generation) and the variants
    /// it displaced, whose files the caller deletes: all of them when the
    /// Vary spec changed, the oldest beyond [`MAX_VARIANTS`]. The replaced
    /// same-id entry is not returned: its file was already replaced.
    pub fn insert(&mut self, meta: DiskEntryMeta) -> (Arc<DiskEntryMeta>, Vec<Arc<DiskEntryMeta>>) {
        self.next_generation += 1;
        let meta = Arc::new(DiskEntryMeta {
            generation: self.next_generation,
            ..meta
        });
        self.remove(meta.id);
        let mut displaced = Vec::new();
        let variants = self.by_key.get(&meta.key).cloned().unwrap_or_default();
        let mut kept = 0;
        for v in variants {
            if v.vary != meta.vary {
                displaced.extend(self.remove(v.id));
            } else {
                kept += 1;
            }
        }
        if kept >= MAX_VARIANTS {
            let list = self.by_key.get(&meta.key).cloned().unwrap_or_default();
            for oldest in &list[..=kept - MAX_VARIANTS] {
                displaced.extend(self.remove(oldest.id));
            }
        }
        self.by_key
            .entry(meta.key.clone())
            .or_default()
            .push(Arc::clone(&meta));
        for tag in meta.tags.iter() {
            self.by_tag.entry(tag.clone()).or_default().insert(meta.id);
        }
        if has_headers(&meta.key) {
            let url = meta.key.url().to_owned();
            self.by_url.entry(url).or_default().insert(meta.key.clone());
        }
        self.by_id.insert(meta.id, Arc::clone(&meta));
        self.policy.insert(meta.id, meta.file_len);
        (meta, displaced)
    }

    /// Drops the entry `meta` was read from, if it is still indexed (same
    /// generation); returns it so the caller deletes the file.
    pub fn forget(&mut self, meta: &DiskEntryMeta) -> Option<Arc<DiskEntryMeta>> {
        self.current(meta)?;
        self.remove(meta.id)
    }

    /// Picks the next entry to evict and drops it; `None` when empty.
    pub fn evict_one(&mut self) -> Option<Arc<DiskEntryMeta>> {
        loop {
            let id = self.policy.evict()?;
            if let Some(e) = self.unlink_maps(id) {
                return Some(e);
            }
        }
    }

    /// Ids of the entries a purge selects.
    pub fn matching(&self, target: &PurgeTarget) -> Vec<ObjectId> {
        let variants = |k: &CacheKey| self.by_key.get(k).into_iter().flatten().map(|e| e.id);
        match target {
            PurgeTarget::Key(k) => variants(k).collect(),
            PurgeTarget::Url(u) => {
                let with_headers = self.by_url.get(u).into_iter().flatten();
                variants(&CacheKey::from_text(u))
                    .chain(with_headers.flat_map(variants))
                    .collect()
            }
            PurgeTarget::Tag(t) => self
                .by_tag
                .get(t)
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    /// Drops entry `id` (explicit removal, not remembered by the eviction
    /// policy); returns it so the caller deletes the file.
    pub fn remove(&mut self, id: ObjectId) -> Option<Arc<DiskEntryMeta>> {
        self.policy.remove(&id);
        self.unlink_maps(id)
    }

    /// Marks entry `id` soft-purged at `at` (the earliest purge wins):
    /// same file and generation, lifetime capped so it is stale from `at`.
    pub fn mark_purged(&mut self, id: ObjectId, at: SystemTime) {
        let Some(old) = self.by_id.get(&id) else {
            return;
        };
        if old.purged_at.is_some_and(|p| p <= at) {
            return;
        }
        let new = Arc::new(DiskEntryMeta {
            lifetime: lifetime_after_purge(old.lifetime, &old.times, at),
            purged_at: Some(at),
            ..DiskEntryMeta::clone(old)
        });
        if let Some(list) = self.by_key.get_mut(&new.key)
            && let Some(slot) = list.iter_mut().find(|e| e.id == id)
        {
            *slot = Arc::clone(&new);
        }
        self.by_id.insert(id, new);
    }

    /// Removes `id` from every map but the policy.
    fn unlink_maps(&mut self, id: ObjectId) -> Option<Arc<DiskEntryMeta>> {
        let e = self.by_id.remove(&id)?;
        if let Some(list) = self.by_key.get_mut(&e.key) {
            list.retain(|v| v.id != id);
            if list.is_empty() {
                self.by_key.remove(&e.key);
                self.forget_url(&e.key);
            }
        }
        for tag in e.tags.iter() {
            if let Some(ids) = self.by_tag.get_mut(tag) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_tag.remove(tag);
                }
            }
        }
        Some(e)
    }

    /// Drops `key` (whose last variant left) from the URL map.
    fn forget_url(&mut self, key: &CacheKey) {
        if !has_headers(key) {
            return;
        }
        if let Some(keys) = self.by_url.get_mut(key.url()) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_url.remove(key.url());
            }
        }
    }

    /// Asserts the module invariant (tests).
    #[cfg(test)]
    pub fn assert_consistent(&self) {
        let mut from_keys = 0;
        for (k, list) in &self.by_key {
            assert!(!list.is_empty(), "empty variant list for {k}");
            for e in list {
                assert_eq!(&e.key, k);
                assert!(Arc::ptr_eq(e, &self.by_id[&e.id]), "list and by_id differ");
                from_keys += 1;
            }
        }
        assert_eq!(from_keys, self.by_id.len());
        let mut tag_refs = 0;
        for (tag, ids) in &self.by_tag {
            assert!(!ids.is_empty(), "empty id set for tag {tag}");
            for id in ids {
                assert!(self.by_id[id].tags.contains(tag));
                tag_refs += 1;
            }
        }
        let tags: usize = self.by_id.values().map(|e| e.tags.len()).sum();
        assert_eq!(tag_refs, tags);
        let header_keys: HashSet<&CacheKey> =
            self.by_key.keys().filter(|k| has_headers(k)).collect();
        let mut url_refs = 0;
        for (url, keys) in &self.by_url {
            assert!(!keys.is_empty(), "empty key set for url {url}");
            for k in keys {
                assert!(header_keys.contains(k) && k.url() == url);
                url_refs += 1;
            }
        }
        assert_eq!(url_refs, header_keys.len());
        assert_eq!(self.policy.len(), self.by_id.len());
        let bytes: u64 = self.by_id.values().map(|e| e.file_len).sum();
        assert_eq!(self.policy.total_bytes(), bytes);
    }
}

/// Whether `key` has appended request headers (is more than its URL).
fn has_headers(key: &CacheKey) -> bool {
    key.url().len() != key.as_str().len()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderValue, StatusCode};

    use super::*;
    use crate::age::ResponseTimes;
    use crate::freshness::{Lifetime, LifetimeSource};
    use crate::test_util::t;
    use crate::vary::{SecondaryKey, VarySpec};

    fn entry(key: &str, variant: &str, tags: &[&str], vary: &VarySpec) -> DiskEntryMeta {
        let key = CacheKey::from_text(key);
        let secondary = SecondaryKey::from_bytes(variant.as_bytes());
        DiskEntryMeta {
            id: (u128::from_be_bytes(key.digest()), secondary.digest()),
            key,
            secondary,
            vary: vary.clone(),
            status: StatusCode::OK,
            times: ResponseTimes {
                request_time: t(0),
                response_time: t(0),
                date: None,
                age_header: None,
            },
            lifetime: Lifetime {
                ttl: Duration::from_secs(600),
                source: LifetimeSource::MaxAge,
            },
            directives: Default::default(),
            body_len: 10,
            file_len: 100,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            purged_at: None,
            generation: 0,
        }
    }

    fn plain() -> VarySpec {
        VarySpec::Fields(vec![])
    }

    fn tag(t: &str) -> PurgeTarget {
        PurgeTarget::Tag(t.into())
    }

    #[test]
    fn tags_follow_insert_replace_remove_and_evict() {
        let mut idx = Index::new(1000);
        idx.insert(entry("https://a/1", "", &["x", "y"], &plain()));
        idx.insert(entry("https://a/2", "", &["y"], &plain()));
        assert_eq!(idx.matching(&tag("y")).len(), 2);
        // Replacing a/1 with a version tagged z: x is gone.
        let (_, displaced) = idx.insert(entry("https://a/1", "", &["z"], &plain()));
        assert!(displaced.is_empty(), "same id is replaced, not displaced");
        idx.assert_consistent();
        assert!(idx.matching(&tag("x")).is_empty());
        assert_eq!(idx.matching(&tag("y")).len(), 1);
        assert_eq!(idx.matching(&tag("z")).len(), 1);
        // Evict everything: no tag refers to anything.
        while idx.evict_one().is_some() {}
        idx.assert_consistent();
        assert!(idx.matching(&tag("y")).is_empty() && idx.matching(&tag("z")).is_empty());
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn vary_change_and_variant_limit_displace() {
        let mut idx = Index::new(100_000);
        let k = "https://a/1";
        for i in 0..MAX_VARIANTS {
            let (_, d) = idx.insert(entry(k, &format!("v{i}"), &["t"], &plain()));
            assert!(d.is_empty());
        }
        let (_, d) = idx.insert(entry(k, "new", &["t"], &plain()));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].secondary.as_bytes(), b"v0", "oldest displaced");
        idx.assert_consistent();
        assert_eq!(idx.matching(&tag("t")).len(), MAX_VARIANTS);
        let other = VarySpec::Fields(vec![http::header::ACCEPT_ENCODING]);
        let (_, d) = idx.insert(entry(k, "gz", &[], &other));
        assert_eq!(d.len(), MAX_VARIANTS, "a new Vary displaces every variant");
        idx.assert_consistent();
        assert!(idx.matching(&tag("t")).is_empty());
        let key = CacheKey::from_text(k);
        assert_eq!(idx.matching(&PurgeTarget::Key(key.clone())).len(), 1);
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", HeaderValue::from_static("gzip"));
        assert!(idx.lookup(&key, &req).is_none(), "secondary bytes differ");
    }

    #[test]
    fn url_purge_finds_keys_with_appended_headers() {
        let mut idx = Index::new(100_000);
        let url = "https://a/1";
        idx.insert(entry(url, "", &[], &plain()));
        idx.insert(entry("https://a/1\nx-device: m", "", &[], &plain()));
        idx.insert(entry("https://a/1\nx-device: d", "v1", &[], &plain()));
        idx.insert(entry("https://a/1\nx-device: d", "v2", &[], &plain()));
        idx.insert(entry("https://a/2\nx-device: m", "", &[], &plain()));
        idx.assert_consistent();
        let by_url = |idx: &Index, u: &str| idx.matching(&PurgeTarget::Url(u.into())).len();
        assert_eq!(by_url(&idx, url), 4);
        assert_eq!(by_url(&idx, "https://a/2"), 1);
        assert_eq!(by_url(&idx, "https://a/3"), 0);
        for id in idx.matching(&PurgeTarget::Url(url.into())) {
            idx.remove(id);
        }
        idx.assert_consistent();
        assert_eq!(by_url(&idx, url), 0);
        assert_eq!(idx.len(), 1);
        while idx.evict_one().is_some() {}
        idx.assert_consistent();
        assert!(idx.by_url.is_empty());
    }

    #[test]
    fn forget_only_the_generation_read() {
        let mut idx = Index::new(1000);
        let (old, _) = idx.insert(entry("https://a/1", "", &["t"], &plain()));
        let (new, _) = idx.insert(entry("https://a/1", "", &["t"], &plain()));
        assert!(idx.forget(&old).is_none(), "replaced since: kept");
        assert!(idx.forget(&new).is_some());
        idx.assert_consistent();
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn mark_purged_caps_lifetime_and_keeps_the_earliest() {
        let mut idx = Index::new(1000);
        let (e, _) = idx.insert(entry("https://a/1", "", &["t"], &plain()));
        idx.mark_purged(e.id, t(100));
        idx.mark_purged(e.id, t(200));
        let key = CacheKey::from_text("https://a/1");
        let got = idx.lookup(&key, &HeaderMap::new()).unwrap();
        assert_eq!(got.purged_at, Some(t(100)));
        assert_eq!(got.lifetime.ttl, Duration::from_secs(100));
        assert_eq!(got.generation, e.generation);
        assert!(idx.current(&e).is_some(), "same object, same generation");
        idx.mark_purged(e.id, t(50));
        assert_eq!(
            idx.lookup(&key, &HeaderMap::new()).unwrap().purged_at,
            Some(t(50))
        );
        idx.assert_consistent();
    }
}
