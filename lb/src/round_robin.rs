//! Round-robin: the `round-robin` balancer (smooth weighted) and the plain
//! index rotation the `edge` binary uses until it switches to [`crate::Pool`].
//!
//! Smooth weighted round-robin is nginx's algorithm
//! (`ngx_http_upstream_get_peer`): each step every endpoint's current value
//! grows by its weight, the largest is chosen and loses the total weight.
//! Weights 5, 1, 1 give `a a b a c a a` rather than `a a a a a b c`, so a
//! heavy endpoint's share is spread through the cycle instead of arriving as
//! a burst (Pingora lacks this, cloudflare/pingora#195).
//!
//! nginx runs the algorithm under a lock on every pick. Here the whole cycle
//! (total weight long, after dividing by the weights' gcd) is computed when
//! the endpoint set changes and a pick is one `fetch_add` on a cursor plus an
//! index: exact proportions, no lock. Unavailable endpoints are skipped by
//! moving to the next slot of the cycle, so their share goes to whoever
//! follows them — proportions among the rest stay close, not exact, which is
//! the price of not rebuilding the cycle on every health flip.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest precomputed cycle (512 KiB of indexes). With weights capped at
/// [`crate::MAX_WEIGHT`] (256) it holds 512 endpoints of any weights exactly;
/// a larger pool's weights are scaled down to fit, each rounded to the
/// nearest whole slot. Building a cycle costs cycle length × endpoints steps
/// (about 20 ms for 300 endpoints of mixed weights), paid once per change of
/// the endpoint set, never per pick.
pub const MAX_CYCLE: usize = 1 << 17;

/// Hands out endpoint indexes in turn; shared by every worker of a node.
///
/// The unweighted rotation `edge/src/proxy.rs` uses today; [`crate::Pool`]
/// with `Balance::RoundRobin` replaces it.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A new rotation starting at the first endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the next endpoint out of `len`, or `None` when there are none.
    pub fn pick(&self, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        // Relaxed is enough: we need each caller to get a distinct ticket, not
        // any ordering with other memory. The counter wraps after 2^64 picks,
        // which at most skews one rotation.
        Some(self.next.fetch_add(1, Ordering::Relaxed) % len)
    }
}

/// One precomputed smooth weighted round-robin cycle and its cursor.
#[derive(Debug)]
pub(crate) struct SmoothWeighted {
    cycle: Vec<u32>,
    cursor: AtomicUsize,
}

impl SmoothWeighted {
    pub(crate) fn new(weights: &[u32]) -> Self {
        Self {
            cycle: smooth_cycle(weights, MAX_CYCLE),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next eligible endpoint in the cycle, or `None` if none is.
    pub(crate) fn pick<F: Fn(usize) -> bool>(&self, eligible: &F) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| self.cycle[(start.wrapping_add(k)) % len] as usize)
            .find(|&i| eligible(i))
    }

    #[cfg(test)]
    pub(crate) fn cycle(&self) -> &[u32] {
        &self.cycle
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// nginx's smooth weighted round-robin, run for one full cycle.
fn smooth_cycle(weights: &[u32], max_cycle: usize) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let mut weights: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    let g = weights.iter().copied().fold(0, gcd);
    weights.iter_mut().for_each(|w| *w /= g);
    let mut total: u64 = weights.iter().sum();
    if total > max_cycle as u64 {
        // TODO(pools beyond 512 endpoints): scaling rounds proportions; an
        // exact schedule there would need the lock nginx takes per pick.
        let scale = max_cycle as f64 / total as f64;
        weights
            .iter_mut()
            .for_each(|w| *w = ((*w as f64 * scale).round() as u64).max(1));
        total = weights.iter().sum();
    }
    let total = total as i64;
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_through_every_endpoint_in_order() {
        let rr = RoundRobin::new();
        let picks: Vec<_> = (0..7).map(|_| rr.pick(3).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn empty_pool_has_no_pick() {
        assert_eq!(RoundRobin::new().pick(0), None);
    }

    #[test]
    fn concurrent_pickers_share_the_load_evenly() {
        let rr = std::sync::Arc::new(RoundRobin::new());
        let counts: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let rr = rr.clone();
                    s.spawn(move || {
                        let mut c = [0usize; 4];
                        for _ in 0..1000 {
                            c[rr.pick(4).unwrap()] += 1;
                        }
                        c
                    })
                })
                .collect();
            let mut total = vec![0; 4];
            for h in handles {
                for (t, c) in total.iter_mut().zip(h.join().unwrap()) {
                    *t += c;
                }
            }
            total
        });
        assert_eq!(counts, [1000; 4]);
    }

    #[test]
    fn nginx_example_sequence() {
        // The sequence from nginx's commit introducing smooth weighting.
        assert_eq!(
            SmoothWeighted::new(&[5, 1, 1]).cycle(),
            [0, 0, 1, 0, 2, 0, 0]
        );
    }

    #[test]
    fn cycle_holds_exact_proportions_reduced_by_gcd() {
        let sw = SmoothWeighted::new(&[4, 2, 6]);
        assert_eq!(sw.cycle().len(), 6);
        let mut counts = [0; 3];
        for &i in sw.cycle() {
            counts[i as usize] += 1;
        }
        assert_eq!(counts, [2, 1, 3]);
    }

    #[test]
    fn skips_ineligible_endpoints() {
        let sw = SmoothWeighted::new(&[1, 1, 1]);
        let picks: Vec<_> = (0..6).map(|_| sw.pick(&|i| i != 1).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert_eq!(sw.pick(&|_| false), None);
    }

    #[test]
    fn oversized_cycles_are_scaled() {
        // Weights 10, 20, 30, 41 (total 101) into a cycle of at most 50.
        let cycle = smooth_cycle(&[10, 20, 30, 41], 50);
        let mut counts = [0; 4];
        for &i in &cycle {
            counts[i as usize] += 1;
        }
        assert_eq!(counts, [5, 10, 15, 20]);
    }
}
