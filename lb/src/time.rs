//! Time as the caller gives it.
//!
//! Every decision in this crate takes `now` as an argument instead of reading
//! a clock (STYLE.md §1, as quinn-proto and Sōzu do), so tests drive a virtual
//! clock and replay exactly. [`Nanos`] is a monotonic nanosecond count since
//! an epoch the caller chooses; it fits in one `AtomicU64`, which is how
//! endpoint state stores deadlines without locks. The `edge` binary makes one
//! [`Epoch`] at start-up and converts `Instant`s with [`Epoch::at`]; tests
//! simply count from [`Nanos::ZERO`]. `Instant::now` is banned in this crate
//! by `lb/clippy.toml`.

use std::ops::Add;
use std::time::{Duration, Instant};

/// A point on the caller's monotonic clock: nanoseconds since its [`Epoch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(u64);

impl Nanos {
    /// The epoch itself.
    pub const ZERO: Nanos = Nanos(0);

    /// `n` nanoseconds after the epoch.
    pub const fn from_nanos(n: u64) -> Self {
        Nanos(n)
    }

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Nanos(ms.saturating_mul(1_000_000))
    }

    /// `s` seconds after the epoch.
    pub const fn from_secs(s: u64) -> Self {
        Nanos(s.saturating_mul(1_000_000_000))
    }

    #[cfg(test)]
    pub(crate) const fn from_micros_for_tests(us: u64) -> Self {
        Nanos(us.saturating_mul(1_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later (clocks read
    /// on different threads may arrive slightly out of order).
    pub fn saturating_since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Nanos {
    type Output = Nanos;

    /// Saturates instead of overflowing: a deadline past `u64::MAX` ns
    /// (584 years) is "never".
    fn add(self, rhs: Duration) -> Nanos {
        Nanos(self.0.saturating_add(duration_nanos(rhs)))
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX`.
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The origin of a [`Nanos`] clock: converts `Instant`s read by the I/O layer.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    origin: Instant,
}

impl Epoch {
    /// A clock whose zero is `origin` (the binary passes `Instant::now()` once
    /// at start-up).
    pub fn new(origin: Instant) -> Self {
        Self { origin }
    }

    /// `instant` on this clock; instants before the origin map to zero.
    pub fn at(&self, instant: Instant) -> Nanos {
        Nanos(duration_nanos(
            instant.saturating_duration_since(self.origin),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Nanos::from_secs(1) + Duration::from_millis(5),
            Nanos::from_millis(1005)
        );
        assert_eq!(
            Nanos::from_nanos(u64::MAX) + Duration::from_secs(1),
            Nanos::from_nanos(u64::MAX)
        );
        assert_eq!(
            Nanos::from_secs(1).saturating_since(Nanos::from_secs(2)),
            Duration::ZERO
        );
        assert_eq!(
            Nanos::from_secs(3).saturating_since(Nanos::from_secs(1)),
            Duration::from_secs(2)
        );
    }

    #[test]
    // The one place the crate reads the clock: `Instant` has no other
    // constructor, and this test only does arithmetic on the value.
    #[allow(clippy::disallowed_methods)]
    fn epoch_counts_from_its_origin() {
        let origin = Instant::now();
        let epoch = Epoch::new(origin);
        assert_eq!(
            epoch.at(origin + Duration::from_millis(7)),
            Nanos::from_millis(7)
        );
    }
}
