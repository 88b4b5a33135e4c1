//! edge's HTTP cache: RFC 9111 policy, cache keys and the tiered store.
//!
//! Empty until the cache issue lands: the foundation proxies every request
//! to origin. DESIGN.md describes what goes here.
