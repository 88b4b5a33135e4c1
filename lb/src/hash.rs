//! Consistent hashing: the `hash` balancer (ring hash, optional bounded load).
//!
//! The caller hashes what should stick (the cache key, a header) to a `u64`
//! and each key goes to the same endpoint for as long as that endpoint stays:
//! a shield or origin keeps its cache warm for "its" keys.
//!
//! **Why a ring (Karger et al. 1997; ketama) and not Maglev (Eisenbud et
//! al., NSDI 2016).** Maglev looks up in O(1) from a fixed-size table but is
//! only *nearly* minimally disruptive: removing an endpoint also reshuffles a
//! few slots between endpoints that stayed, and a skipped (unhealthy)
//! endpoint needs a rebuilt table. On a ring a key moves only if its own
//! endpoint left, or to the endpoint that joined — exactly 1/N on average,
//! which is what a CDN's hit ratio wants when DNS changes a pool — and an
//! unavailable or overloaded endpoint is skipped by walking on to the next
//! point, which spreads its keys over many successors without a rebuild. The
//! price is a search instead of one table index: a bucket table on the
//! points' top bits narrows it to ~8 points (three compares), and
//! `lb/benches/pick.rs` measures the result against the other balancers.
//!
//! Each endpoint gets [`VNODES_PER_WEIGHT`] × weight points, placed by
//! hashing its address with a fixed seed, so every worker, every node and
//! every restart builds the same ring (STYLE.md §1).
//!
//! **Bounded load** (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing
//! with Bounded Loads", 2018; HAProxy `hash-balance-factor`, Envoy
//! `hash_balance_factor`): with factor `c ≥ 1`, an endpoint whose in-flight
//! requests would exceed `c × (pool in-flight) × weight / available weight`
//! is skipped like an unavailable one, so a hot key spills to the next
//! endpoints on the ring instead of melting one. Some endpoint is always
//! under that cap, so the walk ends; `c = 1.25` is the paper's example.

use std::net::SocketAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Points per unit of weight: ketama's 160 per server. With N endpoints of
/// equal weight each owns 1/N of the keys ± ~8% of that (1/√160), which
/// keeps the keys moved by a membership change within 1/N + 2% for N ≥ 5
/// (`tests/simulation.rs`).
pub const VNODES_PER_WEIGHT: u32 = 160;

/// Largest ring (3 MiB of points and owners). Past it every endpoint's count
/// is scaled down, which moves some extra keys when membership changes.
pub const MAX_RING_POINTS: usize = 1 << 18;

/// Seed for point placement. Fixed, never random: the ring must be identical
/// in every worker and after every restart.
const RING_SEED: u64 = 0x6564_6765_2d6c_6221; // "edge-lb!"

/// Default bounded-load factor if a pool enables it without a value.
pub const DEFAULT_BALANCE_FACTOR: f64 = 1.25;

/// The points of every endpoint, sorted, with an index on their top bits.
#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<u64>,
    owners: Vec<u32>,
    /// `buckets[b]` = index of the first point whose top `bits` bits are
    /// `>= b`: a lookup reads one entry and binary-searches ~8 neighbouring
    /// points instead of the whole ring (a 300-endpoint ring is ~400 KiB,
    /// so a plain binary search takes a cache miss per step).
    buckets: Vec<u32>,
    bits: u32,
}

impl Ring {
    pub(crate) fn new(addrs: &[SocketAddr], weights: &[u32]) -> Self {
        let wanted: u64 = weights
            .iter()
            .map(|&w| u64::from(w.max(1)) * u64::from(VNODES_PER_WEIGHT))
            .sum();
        let scale = if wanted > MAX_RING_POINTS as u64 {
            MAX_RING_POINTS as f64 / wanted as f64
        } else {
            1.0
        };
        let mut ring: Vec<(u64, u32)> =
            Vec::with_capacity(wanted.min(MAX_RING_POINTS as u64) as usize);
        for (owner, (addr, &weight)) in addrs.iter().zip(weights).enumerate() {
            let count = u64::from(weight.max(1)) * u64::from(VNODES_PER_WEIGHT);
            let count = ((count as f64 * scale).round() as u64).max(1);
            let mut buf = [0u8; 16 + 2 + 8];
            let len = encode_addr(addr, &mut buf);
            for vnode in 0..count {
                buf[len..len + 8].copy_from_slice(&vnode.to_le_bytes());
                ring.push((xxh3_64_with_seed(&buf[..len + 8], RING_SEED), owner as u32));
            }
        }
        ring.sort_unstable();
        let points: Vec<u64> = ring.iter().map(|p| p.0).collect();
        // About 8 points per bucket: the index is 1/16 the size of the points.
        let bits = (usize::BITS - (points.len() / 8).leading_zeros()).clamp(1, 20);
        let buckets = (0..=1u64 << bits)
            .map(|b| {
                if b < 1 << bits {
                    points.partition_point(|&p| p < b << (64 - bits)) as u32
                } else {
                    points.len() as u32
                }
            })
            .collect();
        Self {
            owners: ring.iter().map(|p| p.1).collect(),
            points,
            buckets,
            bits,
        }
    }

    /// Index of the first point `>= key` (`len` if none).
    fn first_at_or_after(&self, key: u64) -> usize {
        let b = (key >> (64 - self.bits)) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        lo + self.points[lo..hi].partition_point(|&p| p < key)
    }

    /// The first endpoint clockwise from `key` that is eligible and accepted
    /// (under its bounded-load cap). If none is accepted, the first eligible
    /// one; `None` if none is eligible.
    pub(crate) fn pick<F, A>(&self, key: u64, eligible: &F, accept: A) -> Option<usize>
    where
        F: Fn(usize) -> bool,
        A: Fn(usize) -> bool,
    {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let start = self.first_at_or_after(key);
        let mut fallback = None;
        let mut last = usize::MAX;
        for k in 0..len {
            let owner = self.owners[(start + k) % len] as usize;
            if owner == last {
                continue; // consecutive points of one endpoint: already judged
            }
            last = owner;
            if !eligible(owner) {
                continue;
            }
            if accept(owner) {
                return Some(owner);
            }
            fallback.get_or_insert(owner);
        }
        fallback
    }
}

/// The address as bytes: 16 for the IP (v4 mapped into v6 form) and 2 for the port.
fn encode_addr(addr: &SocketAddr, buf: &mut [u8; 26]) -> usize {
    let ip = match addr {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    };
    buf[..16].copy_from_slice(&ip.octets());
    buf[16..18].copy_from_slice(&addr.port().to_be_bytes());
    18
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080)))
            .collect()
    }

    fn key(i: u64) -> u64 {
        xxh3_64_with_seed(&i.to_le_bytes(), 1)
    }

    #[test]
    fn same_endpoints_same_ring() {
        let a = Ring::new(&addrs(5), &[1; 5]);
        let b = Ring::new(&addrs(5), &[1; 5]);
        assert_eq!(a.points, b.points);
        assert_eq!(a.owners, b.owners);
        assert_eq!(a.points.len(), 5 * VNODES_PER_WEIGHT as usize);
    }

    #[test]
    fn weights_scale_the_share_of_keys() {
        let ring = Ring::new(&addrs(3), &[1, 2, 1]);
        let mut counts = [0u32; 3];
        for i in 0..100_000 {
            counts[ring.pick(key(i), &|_| true, |_| true).unwrap()] += 1;
        }
        assert!((45_000..55_000).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn unavailable_endpoints_are_skipped_and_others_keep_their_keys() {
        let ring = Ring::new(&addrs(10), &[1; 10]);
        for i in 0..10_000 {
            let k = key(i);
            let all = ring.pick(k, &|_| true, |_| true).unwrap();
            let without_3 = ring.pick(k, &|e| e != 3, |_| true).unwrap();
            assert_ne!(without_3, 3);
            if all != 3 {
                assert_eq!(all, without_3);
            }
        }
        assert_eq!(ring.pick(1, &|_| false, |_| true), None);
    }

    #[test]
    fn rejected_endpoints_fall_back_to_the_first_eligible() {
        let ring = Ring::new(&addrs(4), &[1; 4]);
        let first = ring.pick(77, &|_| true, |_| true).unwrap();
        assert_eq!(ring.pick(77, &|_| true, |_| false), Some(first));
        let second = ring.pick(77, &|_| true, |e| e != first).unwrap();
        assert_ne!(second, first);
    }

    #[test]
    fn bucket_index_agrees_with_a_full_binary_search() {
        for n in [1, 3, 30] {
            let ring = Ring::new(&addrs(n), &vec![1; n]);
            for i in 0..10_000 {
                let k = key(i);
                assert_eq!(
                    ring.first_at_or_after(k),
                    ring.points.partition_point(|&p| p < k)
                );
            }
            for k in [0, u64::MAX, ring.points[0], *ring.points.last().unwrap()] {
                assert_eq!(
                    ring.first_at_or_after(k),
                    ring.points.partition_point(|&p| p < k)
                );
            }
        }
    }

    #[test]
    fn huge_rings_are_scaled() {
        let ring = Ring::new(&addrs(10), &[256; 10]);
        assert!(ring.points.len() <= MAX_RING_POINTS + 10);
    }
}
