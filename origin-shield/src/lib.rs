//! edge's hop chain towards the origin.
//!
//! For now this holds the loop detection every hop needs: the `CDN-Loop`
//! header of RFC 8586. Shield selection (rendezvous hashing over a shield
//! pool) arrives with the origin-shield issue.

pub mod cdn_loop;
