//! S3-FIFO eviction (Yang et al., "FIFO queues are all you need for cache
//! eviction", SOSP 2023), weighted by bytes.
//!
//! New objects enter a small FIFO holding ~10% of the bytes; an object read
//! again before it reaches the head is promoted to the main FIFO, the rest
//! are evicted and remembered in a ghost FIFO of ids. An id found in the
//! ghost queue when it is inserted again goes straight to main. Main is a
//! CLOCK: an object read since it last passed the head gets another round.
//!
//! Why S3-FIFO for disk: one-hit wonders (most CDN objects) leave quickly
//! without flushing the popular set, and a read only bumps a small counter
//! (no list relinking under the lock, unlike LRU). Pure bookkeeping: the
//! caller deletes the files of the ids it is handed.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Share of the byte budget for the small queue (the paper's 10%).
const SMALL_PERCENT: u64 = 10;
/// Reads counted per object, saturating (the paper's 2-bit counter).
const MAX_FREQ: u8 = 3;

#[derive(Debug)]
struct Live {
    size: u64,
    freq: u8,
    in_small: bool,
    seq: u64,
}

/// Byte-weighted S3-FIFO over ids of type `K`.
#[derive(Debug)]
pub struct S3Fifo<K> {
    small: VecDeque<(K, u64)>,
    main: VecDeque<(K, u64)>,
    ghost: VecDeque<(K, u64)>,
    ghost_set: HashMap<K, u64>,
    live: HashMap<K, Live>,
    small_bytes: u64,
    total_bytes: u64,
    capacity: u64,
    seq: u64,
}

impl<K: Hash + Eq + Clone> S3Fifo<K> {
    /// An empty policy for a byte budget.
    pub fn new(capacity: u64) -> Self {
        S3Fifo {
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_set: HashMap::new(),
            live: HashMap::new(),
            small_bytes: 0,
            total_bytes: 0,
            capacity,
            seq: 0,
        }
    }

    /// Bytes of the tracked objects.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Number of tracked objects.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Starts tracking `id` (replacing an earlier entry for it).
    pub fn insert(&mut self, id: K, size: u64) {
        self.remove(&id);
        self.seq += 1;
        let seq = self.seq;
        let in_small = self.ghost_set.remove(&id).is_none();
        if in_small {
            self.small.push_back((id.clone(), seq));
            self.small_bytes += size;
        } else {
            self.main.push_back((id.clone(), seq));
        }
        self.total_bytes += size;
        self.live.insert(
            id,
            Live {
                size,
                freq: 0,
                in_small,
                seq,
            },
        );
    }

    /// Records a read of `id`.
    pub fn touch(&mut self, id: &K) {
        if let Some(l) = self.live.get_mut(id) {
            l.freq = (l.freq + 1).min(MAX_FREQ);
        }
    }

    /// Stops tracking `id` (explicit removal; not remembered as a ghost).
    /// Its queue slot is skipped lazily.
    pub fn remove(&mut self, id: &K) -> bool {
        match self.live.remove(id) {
            Some(l) => {
                self.total_bytes -= l.size;
                if l.in_small {
                    self.small_bytes -= l.size;
                }
                true
            }
            None => false,
        }
    }

    /// Picks the next object to evict and stops tracking it.
    pub fn evict(&mut self) -> Option<K> {
        loop {
            if self.live.is_empty() {
                self.small.clear();
                self.main.clear();
                return None;
            }
            let from_small =
                self.small_bytes * 100 > self.capacity * SMALL_PERCENT || self.main.is_empty();
            if from_small {
                let (id, seq) = self.small.pop_front()?;
                let Some(l) = self.live.get_mut(&id) else {
                    continue;
                };
                if l.seq != seq {
                    continue; // stale slot of a removed or re-inserted id
                }
                self.small_bytes -= l.size;
                if l.freq > 0 {
                    l.in_small = false;
                    l.freq = 0;
                    self.main.push_back((id, seq));
                    continue;
                }
                let size = l.size;
                self.live.remove(&id);
                self.total_bytes -= size;
                self.remember_ghost(id.clone());
                return Some(id);
            }
            let (id, seq) = self.main.pop_front()?;
            let Some(l) = self.live.get_mut(&id) else {
                continue;
            };
            if l.seq != seq {
                continue;
            }
            if l.freq > 0 {
                l.freq -= 1;
                self.main.push_back((id, seq));
                continue;
            }
            let size = l.size;
            self.live.remove(&id);
            self.total_bytes -= size;
            return Some(id);
        }
    }

    /// The ghost queue remembers as many ids as are live (at least 1024),
    /// the paper's "same number of entries as the main queue" rounded up.
    fn remember_ghost(&mut self, id: K) {
        self.seq += 1;
        self.ghost_set.insert(id.clone(), self.seq);
        self.ghost.push_back((id, self.seq));
        let cap = self.live.len().max(1024);
        while self.ghost_set.len() > cap {
            let Some((old, seq)) = self.ghost.pop_front() else {
                break;
            };
            if self.ghost_set.get(&old) == Some(&seq) {
                self.ghost_set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hit_wonders_leave_before_reread_objects() {
        let mut p = S3Fifo::new(1000);
        for id in 0..10u32 {
            p.insert(id, 100);
        }
        p.touch(&3);
        // 3 was read: promoted to main; the unread ones leave first until
        // the small queue is back within its 10% share.
        let order: Vec<u32> = std::iter::from_fn(|| p.evict()).collect();
        assert_eq!(&order[..8], &[0, 1, 2, 4, 5, 6, 7, 8]);
        assert_eq!(order.len(), 10);
        assert_eq!(p.total_bytes(), 0);
    }

    #[test]
    fn ghost_hit_goes_to_main() {
        let mut p = S3Fifo::new(1000);
        p.insert(1u32, 100);
        p.insert(2, 100);
        assert_eq!(p.evict(), Some(1));
        p.insert(1, 100); // ghost hit: main
        p.insert(3, 100);
        // small holds 2 and 3 (200 bytes > 10%): 2 goes; then small is
        // within its share and main's unread 1 goes before 3.
        assert_eq!(p.evict(), Some(2));
        assert_eq!(p.evict(), Some(1));
        assert_eq!(p.evict(), Some(3));
        assert_eq!(p.evict(), None);
    }

    #[test]
    fn remove_and_reinsert_keep_accounting() {
        let mut p = S3Fifo::new(1000);
        p.insert(1u32, 100);
        p.insert(1, 50);
        assert_eq!(p.total_bytes(), 50);
        assert!(p.remove(&1));
        assert!(!p.remove(&1));
        assert_eq!(p.total_bytes(), 0);
        assert_eq!(p.evict(), None);
        assert_eq!(p.len(), 0);
    }
}
