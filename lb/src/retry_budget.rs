//! Retry budget and the rule for which requests may be retried.
//!
//! Retries multiply load exactly when an origin is struggling; a budget caps
//! them. This is tower's `TpsBudget` (which linkerd2-proxy uses for its
//! retries): every original request deposits into a window of the last `ttl`,
//! every retry withdraws, and a retry is allowed while the balance covers it.
//! Retries are thus at most `ratio` of recent requests, plus a floor of
//! `min_per_sec` so a quiet pool can still retry its rare failures.
//! Defaults are linkerd2-proxy's: 20%, 10 per second, 10 s window.
//!
//! Lock-free: the window is ten slots of `ttl / 10`, each one `AtomicU64`
//! holding the slot's time-slice number and its balance, so rotating a slot
//! and depositing into it is a single CAS (no deposit lost to a rotation).
//! The check-then-withdraw is not atomic across slots: concurrent retries may
//! overdraw by a few, as in tower, which is fine for a budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Method;

use crate::time::{Nanos, duration_nanos};

/// linkerd2-proxy's default: retries may add 20% to the request rate.
pub const DEFAULT_RATIO: f64 = 0.2;
/// linkerd2-proxy's default floor: 10 retries per second even with no deposits.
pub const DEFAULT_MIN_PER_SEC: u32 = 10;
/// linkerd2-proxy's default window: deposits count for 10 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// tower bounds the window to 1 s ..= 60 s: shorter makes the budget jumpy,
/// longer lets a burst of old traffic fund a retry storm.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(60);
const SLOTS: u64 = 10;
/// Fixed point: one request deposits this many units, so a ratio like 0.3
/// costs 3333 units per retry instead of rounding to 3 or 4 requests.
const UNITS_PER_REQUEST: i64 = 1000;

/// Retry budget settings for a pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per original request over the window (0.2 = 20%).
    pub ratio: f64,
    /// Retries allowed per second regardless of traffic.
    pub min_per_sec: u32,
    /// How long a deposit counts (clamped to 1 s ..= 60 s).
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            min_per_sec: DEFAULT_MIN_PER_SEC,
            ttl: DEFAULT_TTL,
        }
    }
}

/// A pool's retry budget. Call [`deposit`](Self::deposit) once per original
/// request and [`try_withdraw`](Self::try_withdraw) before each retry.
#[derive(Debug)]
pub struct RetryBudget {
    slots: [AtomicU64; SLOTS as usize],
    slot_nanos: u64,
    deposit: i64,
    withdraw: i64,
    reserve: i64,
    /// Withdrawals refused since creation, for metrics.
    exhausted: AtomicU64,
}

impl RetryBudget {
    /// An empty budget (only the `min_per_sec` floor available).
    pub fn new(cfg: RetryBudgetConfig) -> Self {
        let ttl = cfg.ttl.clamp(MIN_TTL, MAX_TTL);
        let ratio = if cfg.ratio.is_finite() {
            cfg.ratio.max(0.0)
        } else {
            0.0
        };
        let (deposit, withdraw) = if ratio == 0.0 {
            (0, UNITS_PER_REQUEST)
        } else {
            (
                UNITS_PER_REQUEST,
                ((UNITS_PER_REQUEST as f64 / ratio).round() as i64).max(1),
            )
        };
        let reserve = i64::from(cfg.min_per_sec)
            .saturating_mul(ttl.as_secs() as i64)
            .saturating_mul(withdraw);
        Self {
            slots: Default::default(),
            slot_nanos: (duration_nanos(ttl) / SLOTS).max(1),
            deposit,
            withdraw,
            reserve,
            exhausted: AtomicU64::new(0),
        }
    }

    /// Records an original request (not a retry) at `now`.
    pub fn deposit(&self, now: Nanos) {
        self.add(now, self.deposit);
    }

    /// Takes one retry from the budget; false means "do not retry".
    pub fn try_withdraw(&self, now: Nanos) -> bool {
        if self.reserve + self.sum(now) < self.withdraw {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.add(now, -self.withdraw);
        true
    }

    /// Retries refused because the budget was spent, since creation.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Retries the budget would allow right now, for metrics.
    pub fn remaining(&self, now: Nanos) -> u64 {
        u64::try_from((self.reserve + self.sum(now)) / self.withdraw).unwrap_or(0)
    }

    fn slice(&self, now: Nanos) -> u64 {
        now.as_nanos() / self.slot_nanos
    }

    fn add(&self, now: Nanos, amount: i64) {
        if amount == 0 {
            return;
        }
        let slice = self.slice(now);
        let slot = &self.slots[(slice % SLOTS) as usize];
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let (tag, value) = unpack(word);
            let value = if tag == slice as u32 { value } else { 0 };
            Some(pack(slice as u32, value.saturating_add(amount)))
        });
    }

    fn sum(&self, now: Nanos) -> i64 {
        let slice = self.slice(now) as u32;
        self.slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|(tag, _)| slice.wrapping_sub(*tag) < SLOTS as u32)
            .map(|(_, value)| value)
            .sum()
    }
}

// A slot: the low 32 bits of its time-slice number (slices are >= 100 ms,
// so the tag wraps after 13 years) and an i32 balance (2 M requests per
// slice before it saturates).
fn pack(tag: u32, value: i64) -> u64 {
    let value = value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    (u64::from(tag) << 32) | u64::from(value as u32)
}

fn unpack(word: u64) -> (u32, i64) {
    ((word >> 32) as u32, i64::from(word as u32 as i32))
}

/// Whether a request with `method` may be retried on another endpoint at all.
///
/// GET, HEAD and OPTIONS are safe (RFC 9110 §9.2.1); PUT and DELETE are
/// idempotent but not safe (§9.2.2), so they are retried only when the pool
/// is configured to (`retry_unsafe_idempotent`). POST, PATCH and the rest
/// never are. The caller still checks the budget, and never retries once
/// response bytes reached the client.
pub fn retry_allowed(method: &Method, configured_unsafe: bool) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => true,
        Method::PUT | Method::DELETE => configured_unsafe,
        _ => false,
    }
}

/// Origin statuses worth a retry on another endpoint: the gateway failures
/// 502, 503 and 504, which say "this endpoint could not", not "this request
/// is wrong".
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 502..=504)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_sec: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            ratio,
            min_per_sec,
            ttl: Duration::from_secs(10),
        })
    }

    fn drain(b: &RetryBudget, now: Nanos) -> u32 {
        let mut n = 0;
        while b.try_withdraw(now) {
            n += 1;
            assert!(n < 1_000_000);
        }
        n
    }

    #[test]
    fn floor_only_without_traffic() {
        let b = budget(0.2, 10);
        // 10 per second over a 10 s window.
        assert_eq!(b.remaining(Nanos::ZERO), 100);
        assert_eq!(drain(&b, Nanos::ZERO), 100);
        assert_eq!(drain(&b, Nanos::from_secs(5)), 0);
    }

    #[test]
    fn ratio_of_recent_requests() {
        let b = budget(0.2, 0);
        for _ in 0..1000 {
            b.deposit(Nanos::from_secs(1));
        }
        assert_eq!(drain(&b, Nanos::from_secs(2)), 200);
    }

    #[test]
    fn deposits_expire_after_the_window() {
        let b = budget(0.5, 0);
        for _ in 0..100 {
            b.deposit(Nanos::from_secs(1));
        }
        assert_eq!(b.remaining(Nanos::from_millis(10_999)), 50);
        assert_eq!(b.remaining(Nanos::from_secs(11)), 0);
        // Withdrawals expire too: a slot rotated into a new slice starts at zero.
        assert_eq!(drain(&b, Nanos::from_secs(5)), 50);
        for _ in 0..10 {
            b.deposit(Nanos::from_secs(12));
        }
        assert_eq!(b.remaining(Nanos::from_secs(16)), 5);
    }

    #[test]
    fn table() {
        // (ratio, min_per_sec, deposits, retries allowed right after)
        let cases = [
            (0.2, 10, 0, 100),
            (0.2, 10, 500, 200),
            (0.0, 10, 500, 100),
            (1.0, 0, 30, 30),
            (0.3, 0, 100, 30),
            (2.0, 0, 10, 20),
        ];
        for (ratio, min, deposits, want) in cases {
            let b = budget(ratio, min);
            for _ in 0..deposits {
                b.deposit(Nanos::ZERO);
            }
            assert_eq!(
                drain(&b, Nanos::ZERO),
                want,
                "ratio {ratio}, min {min}, deposits {deposits}"
            );
        }
    }

    #[test]
    fn methods() {
        assert!(retry_allowed(&Method::GET, false));
        assert!(retry_allowed(&Method::HEAD, false));
        assert!(retry_allowed(&Method::OPTIONS, false));
        assert!(!retry_allowed(&Method::PUT, false));
        assert!(retry_allowed(&Method::PUT, true));
        assert!(retry_allowed(&Method::DELETE, true));
        assert!(!retry_allowed(&Method::POST, true));
        assert!(!retry_allowed(&Method::PATCH, true));
        assert!(retryable_status(502) && retryable_status(503) && retryable_status(504));
        assert!(!retryable_status(500) && !retryable_status(501) && !retryable_status(404));
    }
}
