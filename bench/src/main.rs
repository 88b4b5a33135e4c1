//! edge-bench: the load harness that runs edge, nginx and Varnish side by
//! side and reports ratios (DESIGN.md, `bench/`).
//!
//! The scenarios arrive with the benchmark issue; until then this binary
//! says so instead of printing numbers it did not measure.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "edge-bench: no scenarios are built yet (they arrive with the benchmark issue); \
         nothing was measured"
    );
    ExitCode::FAILURE
}
