//! The purge rules of the disk tier, without I/O: what a purge matches,
//! what a soft purge does to freshness, and how a purge issued while an
//! object is being written reaches that write.
//!
//! # Purges during a write
//!
//! A write takes a while (a large body streams for seconds), and a purge
//! may arrive in between. The rule: **a purge applies to every object
//! stored or being written when it is issued.** A write that began before a
//! matching purge (same key, or a tag of the object) is discarded at
//! `finish` if the purge was hard, and stored already stale if it was soft;
//! a write that begins after the purge is a new object and is unaffected.
//!
//! Implementation: purges are numbered by an epoch counter. `begin_write`
//! registers the current epoch; each purge takes the next epoch and is kept
//! in [`RecentPurges`] while some write that began before it is still in
//! flight; `finish` asks for the [`Verdict`] of the purges newer than its
//! epoch that match its key or tags. The store holds one lock around the
//! verdict and the rename into place, and takes the same lock to purge, so
//! no purge can fall between the two. Memory is bounded by the purges
//! issued during the longest write in flight (none are kept when no write
//! is in flight).
//!
//! After a restart no write is in flight, and the soft-purge journal
//! applies a purge by time instead (`journal.rs`): to each matching object
//! whose response was received at or before the purge. That covers every
//! object this rule made stale (a response is received before its write
//! begins), plus, rarely, a write begun just after a purge from a response
//! received just before it: that object comes back stale, which costs one
//! revalidation and never serves purged content as fresh.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use crate::age::{ResponseTimes, current_age};
use crate::freshness::Lifetime;
use crate::key::CacheKey;

/// What a purge selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    /// Every variant stored under this key.
    Key(CacheKey),
    /// Every key whose URL part ([`CacheKey::url`]) is this URL: the key
    /// itself and keys of it with appended request headers.
    Url(String),
    /// Every object carrying this cache tag (see [`crate::tags`]).
    Tag(String),
}

impl PurgeTarget {
    /// Whether an object with this key and these tags is selected.
    pub fn matches(&self, key: &CacheKey, tags: &[String]) -> bool {
        match self {
            PurgeTarget::Key(k) => k == key,
            PurgeTarget::Url(u) => key.url() == u,
            PurgeTarget::Tag(t) => tags.iter().any(|x| x == t),
        }
    }
}

/// The freshness lifetime of an object soft-purged at `purged_at`: capped at
/// the age it had at that moment, so it is stale from the purge on
/// (`is_fresh` needs `ttl > age`). Capping rather than zeroing lets
/// `stale-while-revalidate` / `stale-if-error` windows (RFC 5861) count from
/// the purge, as they would for an object that expired then; the lifetime's
/// source is kept.
pub fn lifetime_after_purge(
    lifetime: Lifetime,
    times: &ResponseTimes,
    purged_at: SystemTime,
) -> Lifetime {
    Lifetime {
        ttl: lifetime.ttl.min(current_age(times, purged_at)),
        source: lifetime.source,
    }
}

/// What `finish` does with an object after the purges issued during its write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No matching purge: store it as it is.
    Store,
    /// Soft-purged mid-write: store it, stale since the earliest such purge.
    StoreStale(SystemTime),
    /// Hard-purged mid-write: drop it.
    Discard,
}

#[derive(Debug)]
struct Recorded {
    epoch: u64,
    target: PurgeTarget,
    soft: bool,
    at: SystemTime,
}

/// Purges that writes still in flight have not yet seen (see the module docs).
#[derive(Debug, Default)]
pub struct RecentPurges {
    /// Purges issued so far; the epoch of the latest.
    epoch: u64,
    /// Epoch at which each in-flight write began -> number of such writes.
    writers: BTreeMap<u64, usize>,
    /// Purges newer than the oldest in-flight write, epoch ascending.
    purges: VecDeque<Recorded>,
}

impl RecentPurges {
    /// Registers a write beginning now; returns its epoch for
    /// [`verdict`](Self::verdict) and [`end_write`](Self::end_write).
    pub fn begin_write(&mut self) -> u64 {
        *self.writers.entry(self.epoch).or_default() += 1;
        self.epoch
    }

    /// Unregisters a write (finished or abandoned) that began at `epoch`.
    pub fn end_write(&mut self, epoch: u64) {
        if let Some(n) = self.writers.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                self.writers.remove(&epoch);
            }
        }
        self.prune();
    }

    /// Whether any write is in flight.
    pub fn writes_in_flight(&self) -> bool {
        !self.writers.is_empty()
    }

    /// Records a purge issued at `at`.
    pub fn record(&mut self, target: PurgeTarget, soft: bool, at: SystemTime) {
        self.epoch += 1;
        if self.writers.is_empty() {
            return; // no write can be affected
        }
        self.purges.push_back(Recorded {
            epoch: self.epoch,
            target,
            soft,
            at,
        });
    }

    /// The verdict for a write that began at `epoch`, of an object with
    /// this key and these tags: any hard purge since discards it, else the
    /// earliest soft purge since makes it stale.
    pub fn verdict(&self, epoch: u64, key: &CacheKey, tags: &[String]) -> Verdict {
        let mut stale_since: Option<SystemTime> = None;
        for p in self.purges.iter().filter(|p| p.epoch > epoch) {
            if !p.target.matches(key, tags) {
                continue;
            }
            if !p.soft {
                return Verdict::Discard;
            }
            stale_since = Some(stale_since.map_or(p.at, |s| s.min(p.at)));
        }
        stale_since.map_or(Verdict::Store, Verdict::StoreStale)
    }

    /// Purges kept for in-flight writes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.purges.len()
    }

    /// Drops purges that no in-flight write began before.
    fn prune(&mut self) {
        let oldest = self.writers.keys().next().copied().unwrap_or(self.epoch);
        while self.purges.front().is_some_and(|p| p.epoch <= oldest) {
            self.purges.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::freshness::LifetimeSource;
    use crate::test_util::t;

    fn key(s: &str) -> CacheKey {
        CacheKey::from_text(s)
    }

    fn tags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn targets_match_key_or_tag() {
        let k = key("https://a/1");
        let tg = tags(&["x", "y"]);
        assert!(PurgeTarget::Key(k.clone()).matches(&k, &tg));
        assert!(!PurgeTarget::Key(key("https://a/2")).matches(&k, &tg));
        assert!(PurgeTarget::Tag("y".into()).matches(&k, &tg));
        assert!(!PurgeTarget::Tag("Y".into()).matches(&k, &tg));
        assert!(!PurgeTarget::Tag("x".into()).matches(&k, &[]));
        let with_header = key("https://a/1\naccept-language: en");
        assert!(PurgeTarget::Url("https://a/1".into()).matches(&with_header, &[]));
        assert!(PurgeTarget::Url("https://a/1".into()).matches(&k, &[]));
        assert!(!PurgeTarget::Key(k.clone()).matches(&with_header, &[]));
    }

    #[test]
    fn soft_purge_caps_lifetime_at_age_then() {
        let times = ResponseTimes {
            request_time: t(0),
            response_time: t(0),
            date: Some(t(0)),
            age_header: None,
        };
        let lt = Lifetime {
            ttl: Duration::from_secs(600),
            source: LifetimeSource::MaxAge,
        };
        let capped = lifetime_after_purge(lt, &times, t(100));
        assert_eq!(capped.ttl, Duration::from_secs(100));
        assert_eq!(capped.source, LifetimeSource::MaxAge);
        // Stale from the purge on: at the purge and any time after.
        assert!(!capped.is_fresh(current_age(&times, t(100))));
        assert!(!capped.is_fresh(current_age(&times, t(101))));
        assert!(capped.is_fresh(current_age(&times, t(99))));
        // Already stale: unchanged.
        assert_eq!(lifetime_after_purge(lt, &times, t(1000)), lt);
        // A purge before the response arrived: stale at once.
        let early = lifetime_after_purge(lt, &times, t(-50));
        assert_eq!(early.ttl, Duration::ZERO);
    }

    #[test]
    fn purge_during_write_reaches_only_writes_begun_before() {
        let mut r = RecentPurges::default();
        let k = key("https://a/1");
        let tg = tags(&["t"]);
        let before = r.begin_write();
        r.record(PurgeTarget::Tag("t".into()), true, t(10));
        r.record(PurgeTarget::Tag("t".into()), true, t(5));
        let after = r.begin_write();
        assert_eq!(r.verdict(before, &k, &tg), Verdict::StoreStale(t(5)));
        assert_eq!(r.verdict(after, &k, &tg), Verdict::Store);
        assert_eq!(
            r.verdict(before, &k, &[]),
            Verdict::Store,
            "no tag: no match"
        );
        r.record(PurgeTarget::Key(k.clone()), false, t(20));
        assert_eq!(r.verdict(before, &k, &tg), Verdict::Discard);
        assert_eq!(r.verdict(after, &k, &[]), Verdict::Discard);
        assert_eq!(
            r.verdict(after, &key("https://a/2"), &[]),
            Verdict::Store,
            "other key"
        );
    }

    #[test]
    fn memory_is_released_when_writes_end() {
        let mut r = RecentPurges::default();
        r.record(PurgeTarget::Tag("t".into()), false, t(0));
        assert_eq!(r.len(), 0, "no write in flight: nothing kept");
        let a = r.begin_write();
        r.record(PurgeTarget::Tag("t".into()), false, t(1));
        let b = r.begin_write();
        r.record(PurgeTarget::Tag("u".into()), false, t(2));
        assert_eq!(r.len(), 2);
        assert!(r.writes_in_flight());
        r.end_write(a);
        assert_eq!(r.len(), 1, "only b's purge is still needed");
        assert_eq!(r.verdict(b, &key("k"), &tags(&["u"])), Verdict::Discard);
        r.end_write(b);
        assert_eq!(r.len(), 0);
        assert!(!r.writes_in_flight());
        // Two writes begun at the same epoch are counted.
        let c = r.begin_write();
        let d = r.begin_write();
        assert_eq!(c, d);
        r.record(PurgeTarget::Tag("t".into()), false, t(3));
        r.end_write(c);
        assert_eq!(r.len(), 1);
        r.end_write(d);
        assert_eq!(r.len(), 0);
    }
}
