//! edge's HTTP cache: RFC 9111 shared-cache policy, cache keys and (later)
//! the tiered store.
//!
//! The policy modules are pure: they take parsed headers and the current
//! time as arguments and return decisions, so every rule is tested with a
//! fake clock. The orchestration (lookup, fetch, store, coalesce) lives in
//! the `edge` binary, which asks these modules and acts.

pub mod age;
pub mod cache_control;
pub mod coalesce;
pub mod counters;
pub mod disk;
pub mod entry;
pub mod freshness;
pub mod invalidation;
pub mod key;
pub mod memory;
pub mod range;
pub mod reuse;
pub mod storable;
pub mod tags;
pub mod validation;
pub mod vary;

#[cfg(test)]
mod test_util;
