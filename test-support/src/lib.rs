//! Dev-only helpers for edge's integration tests.
//!
//! Four pieces, all real network/process plumbing rather than mocks:
//!
//! - [`Origin`]: an in-process hyper origin server whose behaviour each
//!   request scripts through its query string, so one origin serves every
//!   case of a test (delays, holds, stalls, ETags, large streamed bodies).
//! - [`EdgeProcess`]: runs the real `edge` binary against a config written to
//!   a temporary directory and parses the addresses it prints.
//!
//! - [`DnsServer`]: an authoritative DNS server on a loopback port whose
//!   answers a test sets and changes, for endpoint discovery.
//! - [`Wrk`]: runs the `wrk` load generator for a fixed time and reports
//!   its requests, socket errors and non-2xx answers.
//!
//! The trade-off: tests pay for real sockets and processes, and in exchange
//! exercise exactly the code paths production uses. Waiting is always on a
//! condition with a deadline ([`wait_until`]), never a fixed sleep.

mod dns;
mod edge_process;
mod origin;
mod wait;
mod wrk;

pub use dns::DnsServer;
pub use edge_process::EdgeProcess;
pub use origin::{Origin, RecordedRequest, pattern_byte};
pub use wait::wait_until;
pub use wrk::{REQUIRE_WRK_ENV, SocketErrors, Wrk, WrkLoad, WrkReport};
