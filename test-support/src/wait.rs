//! The one way tests wait: poll a condition until a deadline.
//!
//! Fixed sleeps either flake on a slow CI machine or waste time on a fast
//! one; polling a condition with a generous deadline does neither.

use std::thread;
use std::time::{Duration, Instant};

/// Poll interval: short enough to add little latency to a test, long
/// enough that a waiting test does not spin a core.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Calls `cond` every 10 ms until it returns true (then true) or `deadline`
/// has passed (then false). `cond` is always tried at least once.
///
/// Blocks the calling thread; inside a tokio test whose own tasks must run
/// meanwhile, call it from `spawn_blocking` or use a multi-thread runtime.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        thread::sleep(POLL_INTERVAL.min(until - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_true_once_condition_holds() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn returns_false_at_deadline_after_trying() {
        let mut calls = 0;
        assert!(!wait_until(Duration::ZERO, || {
            calls += 1;
            false
        }));
        assert_eq!(calls, 1);
    }
}
