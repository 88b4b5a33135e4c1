//! [`RateTable`]: every rate-limited client's GCRA state in one table of
//! fixed size, allocated (and touched) once at start, shared by all workers.
//!
//! **Layout.** Clients are 64-bit keyed hashes ([`super::client::KeyHasher`]).
//! The table is an array of sets of [`WAYS`] slots; a key's set is chosen
//! by its hash, and the key may sit in any slot of that set (4-way set
//! associative, as CPU caches are). A slot is the full 64-bit key and the
//! client's TAT, 16 bytes; a set is one 64-byte cache line of slots behind
//! its own `Mutex`. Memory is exactly
//! `ceil(capacity / 4) × size_of::<Mutex<[Slot; 4]>>()` — 72 bytes per set
//! on 64-bit Linux (the slots, the futex word and the poison flag), so
//! 1,179,648 bytes (1.125 MiB) for the default 65,536 clients; nothing
//! grows afterwards, whatever the traffic.
//!
//! **Concurrency.** One lock per set, 16,384 of them at the default size:
//! two workers contend only when they touch the same set at the same
//! instant, and each critical section is a scan of four slots. No global
//! lock, no allocation, no lock held across an await.
//!
//! **Eviction.** A key not in its set takes the slot with the smallest
//! TAT. An empty slot (TAT 0) or one whose TAT has passed carries no
//! information (GCRA treats it exactly like a new client), so those go
//! first and at no cost. Only when all four slots hold live state does a
//! newcomer evict a live client: the one closest to being idle, which loses
//! its state and, when it comes back, gets a fresh burst. That is the
//! trade-off of bounded memory: under a flood of distinct keys, light
//! clients' state is forgotten and the limit errs towards allowing. A heavy
//! client is the last to go — its TAT is the furthest ahead — so evicting
//! an abuser takes three clients in its set that are themselves further
//! over their limit; with a hash seeded at random per process an attacker
//! cannot aim at a set, so they would need to exhaust the burst of keys
//! across the whole table. Evictions of live state are counted
//! ([`RateTable::evictions`]): a table that is too small shows there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use edge_lb::Nanos;

use super::gcra::{Decision, Gcra};

/// Slots per set: four 16-byte slots fill one 64-byte cache line.
pub const WAYS: usize = 4;

/// One client's state: its key hash and its theoretical arrival time.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    /// Nanoseconds on the node clock; 0 (the empty slot) is always in the past.
    tat: u64,
}

type Set = Mutex<[Slot; WAYS]>;

/// A fixed-size, concurrently shared table of clients' GCRA state.
#[derive(Debug)]
pub struct RateTable {
    sets: Box<[Set]>,
    /// Live entries replaced by a newcomer (their clients got a fresh burst).
    evictions: AtomicU64,
}

impl RateTable {
    /// A table for at least `capacity` clients (rounded up to a whole set),
    /// every slot allocated and written now so its memory is resident from
    /// the start.
    pub fn new(capacity: usize) -> RateTable {
        let sets = capacity.div_ceil(WAYS).max(1);
        RateTable {
            sets: (0..sets)
                .map(|_| Mutex::new([Slot::default(); WAYS]))
                .collect(),
            evictions: AtomicU64::new(0),
        }
    }

    /// Clients the table holds at once.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Bytes the table occupies; constant for its life.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val::<[Set]>(&self.sets)
    }

    /// Live entries evicted so far to make room for other clients.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Decides a request at `now` from client `key` under `limit`, and
    /// records it when allowed.
    pub fn check(&self, key: u64, limit: &Gcra, now: Nanos) -> Decision {
        let mut set = self.sets[self.set_of(key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (slot, found) = match set.iter().position(|s| s.key == key) {
            Some(i) => (i, true),
            None => {
                let oldest = (0..WAYS)
                    .min_by_key(|&i| set[i].tat)
                    .expect("a set has slots");
                (oldest, false)
            }
        };
        let tat = if found { set[slot].tat } else { 0 };
        let decision = limit.decide(Nanos::from_nanos(tat), now);
        if let Decision::Allow { tat } = decision {
            if !found && set[slot].tat > now.as_nanos() {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
            set[slot] = Slot {
                key,
                tat: tat.as_nanos(),
            };
        }
        decision
    }

    /// The set for `key`: its hash scaled onto the set count (Lemire's
    /// multiply-shift), so any number of sets works without a modulo.
    fn set_of(&self, key: u64) -> usize {
        ((u128::from(key) * self.sets.len() as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    fn allowed(d: Decision) -> bool {
        matches!(d, Decision::Allow { .. })
    }

    /// A key in set `set` of a table of `sets` sets, distinct per small `n`:
    /// the smallest hash that scales onto `set`, plus `n`.
    fn key_in(set: usize, sets: usize, n: u64) -> u64 {
        (((set as u128) << 64).div_ceil(sets as u128) as u64) + n
    }

    #[test]
    fn memory_is_fixed_and_as_documented() {
        #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
        {
            assert_eq!(std::mem::size_of::<Set>(), 72);
            assert_eq!(RateTable::new(65_536).bytes(), 1_179_648);
        }
        let table = RateTable::new(10);
        assert_eq!(table.capacity(), 12, "rounded up to whole sets");
        assert_eq!(table.bytes(), 3 * std::mem::size_of::<Set>());
        assert_eq!(RateTable::new(0).capacity(), WAYS);
    }

    #[test]
    fn clients_are_limited_independently() {
        let table = RateTable::new(1024);
        let limit = Gcra::new(100 * MS, 3);
        let now = Nanos::from_secs(10);
        let a: Vec<bool> = (0..5)
            .map(|_| allowed(table.check(1, &limit, now)))
            .collect();
        let b: Vec<bool> = (0..5)
            .map(|_| allowed(table.check(2, &limit, now)))
            .collect();
        assert_eq!(a, [true, true, true, false, false]);
        assert_eq!(b, a);
        assert!(allowed(table.check(1, &limit, now + 100 * MS)));
        assert_eq!(table.evictions(), 0);
    }

    #[test]
    fn a_full_table_forgets_expired_clients_first_then_the_lightest() {
        // One set: four slots.
        let table = RateTable::new(WAYS);
        let limit = Gcra::new(100 * MS, 5);
        let t0 = Nanos::from_secs(10);
        // An abuser exhausts its burst; three light clients send once.
        for _ in 0..6 {
            table.check(666, &limit, t0);
        }
        for key in 1..=3 {
            assert!(allowed(table.check(key, &limit, t0)));
        }
        // A flood of newcomers, each once: the set is full of live state,
        // so each evicts the lightest entry (a TAT of t0 + 100 ms), never
        // the abuser (t0 + 500 ms).
        for key in 1000..1100 {
            assert!(allowed(table.check(key, &limit, t0 + MS)));
        }
        assert_eq!(table.evictions(), 100);
        assert!(!allowed(table.check(666, &limit, t0 + MS)), "still limited");
        // Once their TATs have passed (the abuser's too), all four entries
        // are reused without counting.
        let later = t0 + Duration::from_secs(1);
        for key in 2000..2000 + WAYS as u64 {
            assert!(allowed(table.check(key, &limit, later)));
        }
        assert_eq!(table.evictions(), 100);
    }

    #[test]
    fn an_evicted_client_starts_with_a_fresh_burst() {
        let table = RateTable::new(WAYS);
        let limit = Gcra::new(100 * MS, 2);
        let t0 = Nanos::from_secs(10);
        for key in 1..=4 {
            for _ in 0..2 {
                assert!(allowed(table.check(key, &limit, t0)));
            }
            assert!(!allowed(table.check(key, &limit, t0)));
        }
        // Four clients each two requests ahead: a fifth evicts one of them
        // (all equal, the first slot).
        assert!(allowed(table.check(5, &limit, t0)));
        assert_eq!(table.evictions(), 1);
        assert!(
            allowed(table.check(1, &limit, t0)),
            "forgotten: fresh burst"
        );
    }

    #[test]
    fn keys_spread_over_sets_and_stay_apart() {
        let sets = 64;
        let table = RateTable::new(sets * WAYS);
        let limit = Gcra::new(Duration::from_secs(1), 1);
        let now = Nanos::from_secs(5);
        // Four keys in each set fit; none evicts another.
        for set in 0..sets {
            for n in 0..WAYS as u64 {
                let key = key_in(set, sets, n);
                assert_eq!(table.set_of(key), set);
                assert!(allowed(table.check(key, &limit, now)));
            }
        }
        assert_eq!(table.evictions(), 0);
        for set in 0..sets {
            for n in 0..WAYS as u64 {
                assert!(!allowed(table.check(key_in(set, sets, n), &limit, now)));
            }
        }
        assert_eq!(table.set_of(0), 0);
        assert_eq!(table.set_of(u64::MAX), sets - 1);
    }

    #[test]
    fn concurrent_workers_never_allow_more_than_the_burst() {
        // Time stands still: whatever the interleaving, each key is allowed
        // exactly its burst, and every thread's decisions add up.
        let table = Arc::new(RateTable::new(64 * WAYS));
        let limit = Gcra::new(Duration::from_secs(1), 50);
        let now = Nanos::from_secs(100);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let table = table.clone();
                std::thread::spawn(move || {
                    let mut allowed_per_key = [0u32; 8];
                    for round in 0..1000 {
                        // Keys in sets of their own: none evicts another.
                        let key = round % 8;
                        if allowed(table.check(key_in(key * 8, 64, 0), &limit, now)) {
                            allowed_per_key[key] += 1;
                        }
                    }
                    allowed_per_key
                })
            })
            .collect();
        let mut total = [0u32; 8];
        for thread in threads {
            for (sum, n) in total.iter_mut().zip(thread.join().unwrap()) {
                *sum += n;
            }
        }
        assert_eq!(total, [50; 8]);
    }
}
