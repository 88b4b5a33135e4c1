//! Request coalescing: concurrent misses on one key share one upstream fetch.
//!
//! The first caller of [`Coalescer::join`] for a key becomes the [`Leader`]
//! and fetches; later callers become [`Follower`]s and stream the leader's
//! response as it arrives (they do not wait for the end). The module is
//! generic and I/O-free: the `edge` binary drives the leader from its
//! upstream client and copies followers' chunks to their clients.
//!
//! Trade-offs:
//!
//! - **Replay buffer.** A flight keeps every chunk published so far, so a
//!   follower that joins late still receives the body from the first byte.
//!   The edge only coalesces responses it means to store, so the buffer is
//!   bounded by the per-object maximum of the memory tier; the
//!   [`Coalescer::with_max_buffer`] guard makes that bound explicit: once a
//!   flight has buffered more than the limit, new joins for the key get
//!   [`Joined::Bypass`] and fetch on their own, while the followers already
//!   attached keep streaming to the end.
//!   Once the limit is crossed no new follower can attach, so the flight
//!   drops every chunk all attached readers have read: a flight larger than
//!   the limit (an object filled straight to the disk tier) holds only the
//!   gap between its fastest and slowest reader, not the whole body.
//! - **No serialised queue.** If the response turns out not to be shareable,
//!   [`Leader::release_uncacheable`] releases every follower at once, each to
//!   fetch on its own; Varnish's waiting list instead hands the object to one
//!   waiter after another, which serialises uncacheable URLs.
//! - **Never wedge.** Dropping a [`Leader`] without [`Leader::finish`] fails
//!   the flight: followers wake with [`Abandoned::LeaderFailed`] (or
//!   [`LeaderFailed`] mid-body) and fetch on their own. The wait for the head
//!   is bounded by the caller's lock timeout; the body wait is bounded by the
//!   leader's own upstream timeouts, since a leader that gives up is dropped.
//! - **Locks.** The key map is one `std::sync::Mutex<HashMap>` held only for
//!   a lookup, insert or remove, never across an `.await`; each flight has its
//!   own small mutex, also never held across an `.await`. Wake-ups go through
//!   [`tokio::sync::Notify`]. A flight ends exactly once (finish, release or
//!   failure) and removes its key, so the next join starts a new flight.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

/// One fetch per key for concurrent requests; cheap to clone (shared state).
pub struct Coalescer<K, H> {
    shared: Arc<Shared<K, H>>,
}

impl<K, H> Clone for Coalescer<K, H> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<K, H> {
    flights: Mutex<HashMap<K, Arc<Flight<H>>>>,
    /// Buffered bytes past which a flight takes no new followers.
    max_buffer: usize,
    leaders: AtomicU64,
    coalesced: AtomicU64,
    bypassed: AtomicU64,
}

/// Counters for metrics, read with [`Coalescer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Joins that became a leader (one upstream fetch each).
    pub leaders: u64,
    /// Joins that waited on another request's fetch instead of fetching.
    pub coalesced: u64,
    /// Joins sent to fetch alone because the flight's buffer was full.
    pub bypassed: u64,
}

/// What [`Coalescer::join`] made of a caller.
pub enum Joined<K: Hash + Eq, H> {
    /// First caller: fetch upstream and publish through the handle.
    Leader(Leader<K, H>),
    /// A fetch is in flight: stream its response.
    Follower(Follower<H>),
    /// A fetch is in flight but buffers too much to replay: fetch alone.
    Bypass,
}

/// Why a follower must fetch on its own instead of waiting for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Abandoned {
    /// The leader found the response not shareable.
    #[error("the coalesced response is not shareable")]
    Released,
    /// The leader went away before finishing.
    #[error("the coalescing leader failed")]
    LeaderFailed,
    /// The head did not arrive within the lock timeout.
    #[error("timed out waiting for the coalesced response head")]
    TimedOut,
}

/// The leader stopped before the body was complete; the follower's response
/// is truncated and must not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the coalescing leader stopped before the body was complete")]
pub struct LeaderFailed;

/// How a flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Finished,
    Released,
    Failed,
}

struct Flight<H> {
    state: Mutex<FlightState<H>>,
    changed: Notify,
    /// The coalescer's `max_buffer`: past it, read chunks are dropped.
    max_buffer: usize,
}

struct FlightState<H> {
    head: Option<H>,
    /// Chunks not yet dropped; `chunks[0]` is chunk number `first`.
    chunks: VecDeque<Bytes>,
    first: usize,
    /// Bytes published so far (dropped chunks included).
    buffered: usize,
    end: Option<End>,
    /// Each reader's next chunk number; `usize::MAX` once it left.
    readers: Vec<usize>,
}

impl<H> FlightState<H> {
    /// A new reader starting at chunk 0; only while nothing was dropped.
    fn register(&mut self) -> usize {
        debug_assert_eq!(self.first, 0, "a reader joined after chunks were dropped");
        self.readers.push(0);
        self.readers.len() - 1
    }

    /// Drops the chunks every reader has read, once past `max_buffer`
    /// (no reader can join any more, so nobody needs them).
    fn trim(&mut self, max_buffer: usize) {
        if self.buffered <= max_buffer {
            return;
        }
        let published = self.first + self.chunks.len();
        let slowest = self.readers.iter().copied().min().unwrap_or(published);
        let drop = slowest.min(published).saturating_sub(self.first);
        self.chunks.drain(..drop);
        self.first += drop;
    }
}

impl<H> Flight<H> {
    fn new(max_buffer: usize) -> Self {
        Self {
            state: Mutex::new(FlightState {
                head: None,
                chunks: VecDeque::new(),
                first: 0,
                buffered: 0,
                end: None,
                readers: Vec::new(),
            }),
            changed: Notify::new(),
            max_buffer,
        }
    }

    /// Records that `reader` will next read chunk `next` (or left, with
    /// `usize::MAX`) and drops what nobody needs any more.
    fn advance(&self, reader: usize, next: usize) {
        let mut state = self.lock();
        state.readers[reader] = next;
        state.trim(self.max_buffer);
    }

    fn lock(&self) -> MutexGuard<'_, FlightState<H>> {
        // A panic while holding the lock cannot leave the state torn (each
        // update is a single push or assignment), so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `update` and wakes every waiting follower.
    fn update(&self, update: impl FnOnce(&mut FlightState<H>)) {
        update(&mut self.lock());
        self.changed.notify_waiters();
    }

    /// Waits until `ready` returns `Some`, re-checking after every change.
    async fn wait_for<T>(&self, mut ready: impl FnMut(&FlightState<H>) -> Option<T>) -> T {
        loop {
            // Created before the check: `notify_waiters` reaches every
            // `Notified` that exists when it is called, so no wake-up is lost
            // between the check and the await.
            let changed = self.changed.notified();
            if let Some(value) = ready(&self.lock()) {
                return value;
            }
            changed.await;
        }
    }
}

impl<K: Hash + Eq + Clone, H> Coalescer<K, H> {
    /// A coalescer with no replay-buffer limit (the caller bounds bodies).
    pub fn new() -> Self {
        Self::with_max_buffer(usize::MAX)
    }

    /// A coalescer whose flights take no new followers once they have
    /// buffered more than `max_buffer` bytes; set it to the per-object
    /// maximum of the store the flights feed.
    pub fn with_max_buffer(max_buffer: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                flights: Mutex::new(HashMap::new()),
                max_buffer,
                leaders: AtomicU64::new(0),
                coalesced: AtomicU64::new(0),
                bypassed: AtomicU64::new(0),
            }),
        }
    }

    /// Joins the flight for `key`, starting one if none is in progress.
    pub fn join(&self, key: K) -> Joined<K, H> {
        let mut flights = self.shared.lock_flights();
        match flights.entry(key) {
            Entry::Occupied(entry) => {
                let flight = Arc::clone(entry.get());
                drop(flights);
                // Checked and registered under one lock: trimming starts
                // only past the limit, so chunk 0 is still there.
                let reader = {
                    let mut state = flight.lock();
                    if state.buffered > self.shared.max_buffer {
                        None
                    } else {
                        Some(state.register())
                    }
                };
                let Some(reader) = reader else {
                    self.shared.bypassed.fetch_add(1, Ordering::Relaxed);
                    return Joined::Bypass;
                };
                self.shared.coalesced.fetch_add(1, Ordering::Relaxed);
                Joined::Follower(Follower {
                    flight,
                    next_chunk: 0,
                    reader,
                })
            }
            Entry::Vacant(entry) => {
                let key = entry.key().clone();
                let flight = Arc::new(Flight::new(self.shared.max_buffer));
                entry.insert(Arc::clone(&flight));
                drop(flights);
                self.shared.leaders.fetch_add(1, Ordering::Relaxed);
                Joined::Leader(Leader {
                    shared: Arc::clone(&self.shared),
                    key,
                    flight,
                    ended: false,
                })
            }
        }
    }

    /// Number of flights in progress.
    pub fn in_flight(&self) -> usize {
        self.shared.lock_flights().len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats {
            leaders: self.shared.leaders.load(Ordering::Relaxed),
            coalesced: self.shared.coalesced.load(Ordering::Relaxed),
            bypassed: self.shared.bypassed.load(Ordering::Relaxed),
        }
    }
}

impl<K: Hash + Eq + Clone, H> Default for Coalescer<K, H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, H> Shared<K, H> {
    fn lock_flights(&self) -> MutexGuard<'_, HashMap<K, Arc<Flight<H>>>> {
        // Map operations cannot leave it torn; ignore poisoning.
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The request that fetches for everyone; dropping it unfinished fails the
/// flight.
pub struct Leader<K: Hash + Eq, H> {
    shared: Arc<Shared<K, H>>,
    key: K,
    flight: Arc<Flight<H>>,
    ended: bool,
}

impl<K: Hash + Eq, H> Leader<K, H> {
    /// Publishes the response head (status and headers); followers waiting
    /// in [`Follower::head`] wake with it.
    pub fn publish_head(&mut self, head: H) {
        self.flight.update(|state| state.head = Some(head));
    }

    /// Appends a body chunk; followers receive it as soon as it is pushed.
    pub fn push_chunk(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let max_buffer = self.flight.max_buffer;
        self.flight.update(|state| {
            state.buffered = state.buffered.saturating_add(chunk.len());
            state.chunks.push_back(chunk);
            state.trim(max_buffer);
        });
    }

    /// A reader of this flight for the leader's own client, so the fetch can
    /// run in its own task (and finish for the others even if that client
    /// leaves) while the client streams like any follower.
    pub fn follower(&self) -> Follower<H> {
        let reader = self.flight.lock().register();
        Follower {
            flight: Arc::clone(&self.flight),
            next_chunk: 0,
            reader,
        }
    }

    /// The body is complete: followers drain the remaining chunks and end.
    pub fn finish(mut self) {
        self.end(End::Finished);
    }

    /// The response is not shareable: every follower is released at once to
    /// fetch on its own. Call it before [`Leader::publish_head`]; followers
    /// already streaming a published head see [`LeaderFailed`].
    pub fn release_uncacheable(mut self) {
        self.end(End::Released);
    }

    fn end(&mut self, end: End) {
        if self.ended {
            return;
        }
        self.ended = true;
        // Remove the key first, so a join racing with the end starts a new
        // flight rather than attaching to one that is over. The entry is
        // ours: a flight removes its key only here, and only once.
        {
            let mut flights = self.shared.lock_flights();
            if flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.key);
            }
        }
        self.flight.update(|state| state.end = Some(end));
    }
}

impl<K: Hash + Eq, H> Drop for Leader<K, H> {
    fn drop(&mut self) {
        self.end(End::Failed);
    }
}

/// A request streaming another request's fetch.
pub struct Follower<H> {
    flight: Arc<Flight<H>>,
    next_chunk: usize,
    /// This reader's slot in the flight's `readers`.
    reader: usize,
}

impl<H> Drop for Follower<H> {
    fn drop(&mut self) {
        self.flight.advance(self.reader, usize::MAX);
    }
}

impl<H: Clone> Follower<H> {
    /// Waits up to `timeout` for the response head. On `Err` the caller
    /// fetches on its own.
    pub async fn head(&self, timeout: Duration) -> Result<H, Abandoned> {
        let wait = self
            .flight
            .wait_for(|state| match (&state.head, state.end) {
                (Some(head), Some(End::Finished) | None) => Some(Ok(head.clone())),
                (_, Some(End::Released)) => Some(Err(Abandoned::Released)),
                // A leader that finished without a head is a broken leader.
                (_, Some(End::Failed | End::Finished)) => Some(Err(Abandoned::LeaderFailed)),
                (None, None) => None,
            });
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(Abandoned::TimedOut))
    }
}

impl<H> Follower<H> {
    /// The next body chunk, from the first one published, as soon as it is
    /// pushed; `None` once the body is complete. `Err` means the body is
    /// truncated (the leader failed or released mid-body).
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, LeaderFailed>> {
        let index = self.next_chunk;
        let next = self.flight.wait_for(|state| {
            if let Some(chunk) = state.chunks.get(index - state.first) {
                return Some(Some(Ok(chunk.clone())));
            }
            match state.end {
                None => None,
                Some(End::Finished) => Some(None),
                Some(End::Released | End::Failed) => Some(Some(Err(LeaderFailed))),
            }
        });
        let next = next.await;
        if matches!(next, Some(Ok(_))) {
            self.next_chunk += 1;
            self.flight.advance(self.reader, self.next_chunk);
        }
        next
    }
}

#[cfg(test)]
mod tests;
