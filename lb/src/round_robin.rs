//! Lock-free round-robin over a fixed number of endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Hands out endpoint indexes in turn; shared by every worker of a node.
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
}
