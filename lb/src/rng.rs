//! Caller-provided randomness for the balancers.
//!
//! P2C and the hash fallback need random numbers on every pick. A shared RNG
//! would be a shared, written cache line (or a lock), so the caller passes its
//! own: the `edge` binary keeps one [`WyRand`] per worker thread, tests and
//! simulations seed one and replay exactly. [`RandomSource`] is the only thing
//! the balancers ask for, so any generator can be plugged in.

/// A source of uniformly distributed 64-bit values.
pub trait RandomSource {
    /// The next value.
    fn next_u64(&mut self) -> u64;

    /// A uniform index in `0..n` (`n > 0`), by Lemire's multiply-shift: one
    /// multiplication, no division; the bias is below `n / 2^64`, far under
    /// anything a balancer could notice.
    fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A uniform value in `[0, 1)` with 53 bits of precision.
    fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// wyrand (Wang Yi, public domain): 8 bytes of state, one 128-bit multiply
/// per value, passes BigCrush and PractRand. Not cryptographic, which a
/// balancer does not need.
#[derive(Debug, Clone)]
pub struct WyRand {
    state: u64,
}

impl WyRand {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl RandomSource for WyRand {
    fn next_u64(&mut self) -> u64 {
        // Constants from the wyhash reference implementation.
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = WyRand::new(42);
        let mut b = WyRand::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = WyRand::new(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[rng.below(10)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        for _ in 0..1000 {
            let x = rng.unit_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
