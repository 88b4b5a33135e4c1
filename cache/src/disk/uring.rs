//! An io_uring ring driven by the tokio reactor (shared/research/io_uring.md
//! §6 (ii)): the ring fd is registered with `AsyncFd`, a driver task waits
//! for it to become readable, clears readiness *before* draining the
//! completion queue (clearing after could lose a wake-up), and wakes the
//! futures of the completed operations.
//!
//! - No `DEFER_TASKRUN`: with an epoll-driven wait, deferred completions
//!   never make the fd readable and O_DIRECT reads hang (§7.1). No
//!   `SINGLE_ISSUER` either: ops are submitted from whichever runtime worker
//!   polls them, so the ring sits behind a mutex.
//! - Buffers are owned by the ring's slot table while an op is in flight. A
//!   dropped future leaves its buffer (and file) in the slot until the CQE
//!   arrives; if the ring itself goes away with ops still in flight, the
//!   buffers are leaked rather than freed under the kernel (§7.2).
//!
//! TODO(perf): one ring per store, one `io_uring_enter` per op. The research
//! recommends a ring per worker thread with submissions batched per reactor
//! turn; that needs the thread-per-core runtime the edge binary does not
//! have yet.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use io_uring::{IoUring, opcode, squeue, types};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Submission queue entries; the completion queue is twice as large.
const RING_ENTRIES: u32 = 256;
/// `user_data` of the NOP that wakes the driver for shutdown.
const WAKE: u64 = u64::MAX;

/// An owned buffer the kernel reads into or writes from.
pub(crate) enum OpBuf {
    Read(Vec<u8>),
    // Only held, never read: it keeps the written bytes alive for the kernel.
    Write(#[allow(dead_code)] Bytes),
}

enum Slot {
    Free,
    Pending {
        waker: Option<Waker>,
        buf: OpBuf,
        _file: Arc<File>,
    },
    Done {
        res: i32,
        buf: OpBuf,
    },
    /// The future was dropped; the buffer waits here for the CQE.
    Abandoned {
        _buf: OpBuf,
        _file: Arc<File>,
    },
}

struct State {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    in_flight: usize,
}

impl Drop for State {
    fn drop(&mut self) {
        // Ops still in flight: the kernel may write into their buffers until
        // it has cancelled them, so leak the buffers instead of freeing them.
        for slot in self.slots.drain(..) {
            if matches!(slot, Slot::Pending { .. } | Slot::Abandoned { .. }) {
                std::mem::forget(slot);
            }
        }
    }
}

/// A ring shared by the store's I/O futures and its driver task.
pub(crate) struct Ring {
    state: Mutex<State>,
    shutdown: AtomicBool,
}

struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The driver's state; `afd` is declared first so it is deregistered
/// before the ring (and its fd) can be dropped.
struct Driver {
    afd: AsyncFd<RingFd>,
    ring: Arc<Ring>,
}

impl Ring {
    /// Sets up a ring, checks READ/WRITE/FSYNC support and spawns its driver
    /// on the current tokio runtime. `Err` carries the reason to log.
    pub(crate) fn start() -> Result<Arc<Ring>, String> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "no tokio runtime at open".to_owned())?;
        let ring = IoUring::builder()
            .build(RING_ENTRIES)
            .map_err(|e| format!("io_uring_setup: {e}"))?;
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("io_uring probe: {e}"))?;
        for (name, code) in [
            ("READ", opcode::Read::CODE),
            ("WRITE", opcode::Write::CODE),
            ("NOP", opcode::Nop::CODE),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("io_uring opcode {name} unsupported"));
            }
        }
        let fd = ring.as_raw_fd();
        let ring = Arc::new(Ring {
            state: Mutex::new(State {
                ring,
                slots: Vec::new(),
                free: Vec::new(),
                in_flight: 0,
            }),
            shutdown: AtomicBool::new(false),
        });
        let _enter = handle.enter();
        // SAFETY: `fd` is the ring's fd, owned by `IoUring` inside `ring`.
        // The `Driver` holds an `Arc<Ring>` and drops `afd` before it, so the
        // fd stays open and the same for the registration's whole life.
        let afd = unsafe { AsyncFd::register_with_interest(RingFd(fd), Interest::READABLE) }
            .map_err(|e| format!("register ring fd with tokio: {e}"))?;
        let driver = Driver {
            afd,
            ring: Arc::clone(&ring),
        };
        handle.spawn(driver.run());
        Ok(ring)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the driver to exit once no op is in flight.
    pub(crate) fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        let mut st = self.lock();
        let nop = opcode::Nop::new().build().user_data(WAKE);
        // SAFETY: a NOP references no memory.
        if unsafe { st.ring.submission().push(&nop) }.is_ok() {
            let _ = st.ring.submit();
        }
    }

    /// Reads up to `len` bytes at `offset`; `None` when the ring is
    /// saturated (the caller falls back to the blocking pool).
    pub(crate) fn read_at(
        self: &Arc<Self>,
        file: &Arc<File>,
        len: usize,
        offset: u64,
    ) -> Option<impl Future<Output = io::Result<Vec<u8>>>> {
        let mut buf = Vec::with_capacity(len);
        let ptr = buf.as_mut_ptr();
        let entry = opcode::Read::new(types::Fd(file.as_raw_fd()), ptr, len as u32)
            .offset(offset)
            .build();
        // SAFETY: `ptr` points into `buf`'s heap allocation, which moves into
        // the slot and stays alive until the CQE is reaped.
        let op = unsafe { self.submit(entry, OpBuf::Read(buf), file) }?;
        Some(async move {
            let (res, buf) = op.await;
            let OpBuf::Read(mut buf) = buf else {
                unreachable!("read op returns its read buffer")
            };
            let n = check(res)?;
            // SAFETY: the kernel initialised `n <= len` bytes.
            unsafe { buf.set_len(n) };
            Ok(buf)
        })
    }

    /// Writes `buf` (or a prefix of it) at `offset`; `None` when saturated.
    pub(crate) fn write_at(
        self: &Arc<Self>,
        file: &Arc<File>,
        buf: Bytes,
        offset: u64,
    ) -> Option<impl Future<Output = io::Result<usize>>> {
        let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), buf.as_ptr(), buf.len() as u32)
            .offset(offset)
            .build();
        // SAFETY: `Bytes` keeps its storage alive and unmoved while held in the slot.
        let op = unsafe { self.submit(entry, OpBuf::Write(buf), file) }?;
        Some(async move { check(op.await.0) })
    }

    /// # Safety
    /// `entry` may only reference memory owned by `buf` and the fd of `file`.
    unsafe fn submit(
        self: &Arc<Self>,
        entry: squeue::Entry,
        buf: OpBuf,
        file: &Arc<File>,
    ) -> Option<Op> {
        let mut st = self.lock();
        if st.in_flight >= 2 * RING_ENTRIES as usize {
            return None;
        }
        let idx = match st.free.pop() {
            Some(i) => i,
            None => {
                st.slots.push(Slot::Free);
                st.slots.len() - 1
            }
        };
        let entry = entry.user_data(idx as u64);
        // SAFETY: upheld by the caller; the buffer is stored below before
        // the submission is handed to the kernel.
        let mut pushed = unsafe { st.ring.submission().push(&entry) }.is_ok();
        if !pushed {
            let _ = st.ring.submit();
            pushed = unsafe { st.ring.submission().push(&entry) }.is_ok();
        }
        if !pushed {
            st.free.push(idx);
            return None;
        }
        st.slots[idx] = Slot::Pending {
            waker: None,
            buf,
            _file: Arc::clone(file),
        };
        st.in_flight += 1;
        // An error here (EBUSY/EAGAIN) leaves the SQE queued; the next
        // submit, or the driver's, hands it over.
        let _ = st.ring.submit();
        Some(Op {
            ring: Arc::clone(self),
            idx,
            done: false,
        })
    }
}

fn check(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

impl Driver {
    async fn run(self) {
        loop {
            let mut guard = match self.afd.readable().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(error = %e, "io_uring driver: reactor error; disk I/O stalls");
                    return;
                }
            };
            guard.clear_ready();
            let mut wake = Vec::new();
            let exit = {
                let mut st = self.ring.lock();
                let _ = st.ring.submit(); // hand over anything left queued
                let done: Vec<(u64, i32)> = st
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result()))
                    .collect();
                for (ud, res) in done {
                    if ud == WAKE {
                        continue;
                    }
                    let idx = ud as usize;
                    match std::mem::replace(&mut st.slots[idx], Slot::Free) {
                        Slot::Pending { waker, buf, .. } => {
                            st.slots[idx] = Slot::Done { res, buf };
                            wake.extend(waker);
                        }
                        Slot::Abandoned { .. } => st.free.push(idx),
                        other => st.slots[idx] = other,
                    }
                    st.in_flight -= 1;
                }
                self.ring.shutdown.load(Ordering::Acquire) && st.in_flight == 0
            };
            for w in wake {
                w.wake();
            }
            if exit {
                return;
            }
        }
    }
}

/// An in-flight operation; resolves to the CQE result and the buffer.
struct Op {
    ring: Arc<Ring>,
    idx: usize,
    done: bool,
}

impl Future for Op {
    type Output = (i32, OpBuf);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let idx = self.idx;
        let ring = Arc::clone(&self.ring);
        let mut st = ring.lock();
        match std::mem::replace(&mut st.slots[idx], Slot::Free) {
            Slot::Done { res, buf } => {
                st.free.push(idx);
                self.done = true;
                Poll::Ready((res, buf))
            }
            Slot::Pending { buf, _file, .. } => {
                st.slots[idx] = Slot::Pending {
                    waker: Some(cx.waker().clone()),
                    buf,
                    _file,
                };
                Poll::Pending
            }
            other => {
                st.slots[idx] = other;
                unreachable!("an op's slot is Pending or Done while its future lives")
            }
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.ring.lock();
        match std::mem::replace(&mut st.slots[self.idx], Slot::Free) {
            Slot::Pending { buf, _file, .. } => {
                st.slots[self.idx] = Slot::Abandoned { _buf: buf, _file }
            }
            Slot::Done { .. } | Slot::Free => st.free.push(self.idx),
            other => st.slots[self.idx] = other,
        }
    }
}
