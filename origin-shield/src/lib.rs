//! edge's hop chain towards the origin: the shield hop's rules ([`hop`])
//! and the loop detection every hop needs, the `CDN-Loop` header of
//! RFC 8586 ([`cdn_loop`]).
//!
//! Picking a shield for an object is the `hash` balancer of edge-lb over
//! the shield pool, keyed by the request URL: consistent hashing moves only
//! the keys of a shield that left, and skips an unavailable shield by
//! walking on along the ring (see `edge_lb::hash` for why a ring rather
//! than rendezvous hashing or Maglev).

pub mod cdn_loop;
pub mod hop;
