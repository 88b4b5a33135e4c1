//! DNS discovery policy: which addresses a pool's endpoint names stand
//! for, when to look each name up again, and what a failed lookup keeps.
//!
//! The `edge` binary does the lookups (hickory-resolver) and feeds the
//! answers here; [`Discovered::specs`] is then handed to
//! [`Pool::update`](crate::Pool::update), which keeps the state of endpoints
//! still present, adds new ones and lets removed ones drain (their
//! in-flight requests finish; nothing new is sent to them).
//!
//! # Rules
//!
//! - A name is looked up again when its answer's TTL runs out, clamped to
//!   [`RefreshPolicy::min_ttl`]`..=`[`RefreshPolicy::max_ttl`]: the floor
//!   keeps a TTL of 0 from becoming a lookup storm, the ceiling re-checks
//!   long-lived records so a moved origin is followed within minutes.
//! - A failed lookup (timeout, SERVFAIL, NXDOMAIN) **keeps the last good
//!   addresses** and retries after `min_ttl`, doubling per consecutive
//!   failure up to `max_ttl`. An answer with no address counts as a
//!   failure too: emptying an origin pool because a zone was briefly
//!   misedited is worse than sending to the addresses that worked a
//!   moment ago. (Envoy's STRICT_DNS keeps hosts on failure the same way.)
//! - Addresses are compared as sets: a resolver that rotates the order of
//!   its answers does not churn the pool.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::endpoint::EndpointSpec;

/// When to look a name up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Floor on the wait between two lookups of a name.
    pub min_ttl: Duration,
    /// Ceiling on how long an answer is trusted.
    pub max_ttl: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        // The documented `[dns]` defaults (edge-config).
        RefreshPolicy {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
        }
    }
}

impl RefreshPolicy {
    /// The wait before the next lookup after an answer valid for `ttl`.
    pub fn after_answer(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
    }

    /// The wait before retrying after `failures` consecutive failed lookups
    /// (1 for the first): `min_ttl`, doubling each time, capped at `max_ttl`.
    pub fn after_failure(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.min_ttl
            .saturating_mul(1 << doublings)
            .min(self.max_ttl.max(self.min_ttl))
    }
}

/// One entry of a pool's `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// An IP literal: never looked up.
    Fixed(EndpointSpec),
    /// A name, with the addresses of its last good answer.
    Named {
        name: String,
        port: u16,
        weight: u32,
        addrs: Vec<IpAddr>,
        failures: u32,
    },
}

/// What an answer did to a name's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Same set as before: nothing to update.
    Unchanged,
    /// The set changed; push [`Discovered::specs`] to the pool.
    Changed {
        /// Addresses that joined.
        added: Vec<IpAddr>,
        /// Addresses that left (they drain).
        removed: Vec<IpAddr>,
    },
    /// The answer held no address; the last good set is kept (see the module docs).
    EmptyKept,
}

/// A pool's endpoints as configured, with the current answer for each name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    entries: Vec<Entry>,
}

/// Identifies a name within a [`Discovered`] (its position in the config).
pub type NameIndex = usize;

impl Discovered {
    /// An empty set; add entries in config order.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an IP-literal endpoint.
    pub fn push_fixed(&mut self, addr: SocketAddr, weight: u32) {
        self.entries
            .push(Entry::Fixed(EndpointSpec::weighted(addr, weight)));
    }

    /// Adds a named endpoint with its first answer (which must not be
    /// empty: start-up refuses a name that does not resolve). Returns its index.
    pub fn push_named(
        &mut self,
        name: &str,
        port: u16,
        weight: u32,
        addrs: Vec<IpAddr>,
    ) -> NameIndex {
        self.entries.push(Entry::Named {
            name: name.to_owned(),
            port,
            weight,
            addrs: normalise(addrs),
            failures: 0,
        });
        self.entries.len() - 1
    }

    /// The names to keep looking up, with their indexes.
    pub fn names(&self) -> impl Iterator<Item = (NameIndex, &str)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Entry::Named { name, .. } => Some((i, name.as_str())),
                Entry::Fixed(_) => None,
            })
    }

    /// Whether any endpoint is a name (so a resolver is needed).
    pub fn has_names(&self) -> bool {
        self.names().next().is_some()
    }

    /// Records a successful lookup of the name at `index`.
    ///
    /// # Panics
    /// If `index` is not a name's index.
    pub fn record_answer(&mut self, index: NameIndex, answer: Vec<IpAddr>) -> Answered {
        let Entry::Named {
            addrs, failures, ..
        } = &mut self.entries[index]
        else {
            panic!("entry {index} is not a name");
        };
        let answer = normalise(answer);
        if answer.is_empty() {
            *failures += 1;
            return Answered::EmptyKept;
        }
        *failures = 0;
        if answer == *addrs {
            return Answered::Unchanged;
        }
        let added = answer
            .iter()
            .filter(|a| addrs.binary_search(a).is_err())
            .copied()
            .collect();
        let removed = addrs
            .iter()
            .filter(|a| answer.binary_search(a).is_err())
            .copied()
            .collect();
        *addrs = answer;
        Answered::Changed { added, removed }
    }

    /// Records a failed lookup of the name at `index`; the last good
    /// addresses stay. Returns the count of consecutive failures.
    ///
    /// # Panics
    /// If `index` is not a name's index.
    pub fn record_failure(&mut self, index: NameIndex) -> u32 {
        let Entry::Named { failures, .. } = &mut self.entries[index] else {
            panic!("entry {index} is not a name");
        };
        *failures += 1;
        *failures
    }

    /// Consecutive failed lookups of the name at `index`.
    pub fn failures(&self, index: NameIndex) -> u32 {
        match &self.entries[index] {
            Entry::Named { failures, .. } => *failures,
            Entry::Fixed(_) => 0,
        }
    }

    /// Every endpoint address with its weight, in config order (a name's
    /// addresses sorted), for [`Pool::new`](crate::Pool::new) or
    /// [`Pool::update`](crate::Pool::update).
    pub fn specs(&self) -> Vec<EndpointSpec> {
        let mut specs = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            match entry {
                Entry::Fixed(spec) => specs.push(*spec),
                Entry::Named {
                    port,
                    weight,
                    addrs,
                    ..
                } => specs.extend(
                    addrs
                        .iter()
                        .map(|ip| EndpointSpec::weighted(SocketAddr::new(*ip, *port), *weight)),
                ),
            }
        }
        specs
    }
}

/// Sorted and deduplicated, so answers compare as sets.
fn normalise(mut addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn refresh_clamps_the_ttl() {
        let policy = RefreshPolicy {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
        };
        assert_eq!(policy.after_answer(Duration::ZERO), Duration::from_secs(5));
        assert_eq!(
            policy.after_answer(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(
            policy.after_answer(Duration::from_secs(86_400)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn failures_back_off_to_the_ceiling() {
        let policy = RefreshPolicy {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(60),
        };
        let waits: Vec<u64> = (1..=6).map(|n| policy.after_failure(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(policy.after_failure(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn specs_keep_config_order_and_weights() {
        let mut d = Discovered::new();
        d.push_fixed("10.0.0.1:80".parse().unwrap(), 1);
        d.push_named("origin.test", 8080, 3, ips(&["10.0.0.9", "10.0.0.3"]));
        let specs = d.specs();
        let got: Vec<(String, u32)> = specs
            .iter()
            .map(|s| (s.addr.to_string(), s.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:80".to_owned(), 1),
                ("10.0.0.3:8080".to_owned(), 3),
                ("10.0.0.9:8080".to_owned(), 3)
            ]
        );
        assert_eq!(d.names().collect::<Vec<_>>(), [(1, "origin.test")]);
        assert!(d.has_names());
    }

    #[test]
    fn answers_compare_as_sets() {
        let mut d = Discovered::new();
        let i = d.push_named("o", 80, 1, ips(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(
            d.record_answer(i, ips(&["10.0.0.2", "10.0.0.1", "10.0.0.2"])),
            Answered::Unchanged
        );
        assert_eq!(
            d.record_answer(i, ips(&["10.0.0.2", "10.0.0.3"])),
            Answered::Changed {
                added: ips(&["10.0.0.3"]),
                removed: ips(&["10.0.0.1"])
            }
        );
        assert_eq!(d.specs().len(), 2);
    }

    #[test]
    fn failures_and_empty_answers_keep_the_last_good_set() {
        let mut d = Discovered::new();
        let i = d.push_named("o", 80, 1, ips(&["10.0.0.1"]));
        let before = d.specs();
        assert_eq!(d.record_failure(i), 1);
        assert_eq!(d.record_answer(i, Vec::new()), Answered::EmptyKept);
        assert_eq!(d.failures(i), 2);
        assert_eq!(d.specs(), before);
        assert_eq!(d.record_answer(i, ips(&["10.0.0.1"])), Answered::Unchanged);
        assert_eq!(d.failures(i), 0);
    }

    #[test]
    fn fixed_only_pools_need_no_resolver() {
        let mut d = Discovered::new();
        d.push_fixed("[::1]:80".parse().unwrap(), 2);
        assert!(!d.has_names());
        assert_eq!(d.specs()[0].weight, 2);
    }
}
