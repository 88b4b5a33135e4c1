//! edge's endpoint selection for origin pools.
//!
//! For now a pool picks its endpoints in turn ([`RoundRobin`]); the balancers
//! of DESIGN.md (P2C least-connections, peak-EWMA, consistent hashing) and
//! failure detection arrive with the load-balancing issue and replace it.

mod round_robin;

pub use round_robin::RoundRobin;
