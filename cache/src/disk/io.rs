//! Positional file I/O through the backend chosen at open: an io_uring ring
//! in the tokio reactor, or `spawn_blocking` + `pread`/`pwrite`.
//!
//! Reads first try the page cache on the calling thread
//! (`preadv2(RWF_NOWAIT)`, which returns `EAGAIN` rather than wait for the
//! device) and hand only what is not cached to the backend. A disk-tier hit
//! on a warm page cache (the common case: recently written or read) then
//! costs a syscall and a copy, not a hop to the ring's driver thread or the
//! blocking pool and back, which cost two context switches per read on the
//! 2-vCPU bench machine (bench/RESULTS.md, 2026-11-29 diskperf entry).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::uring::Ring;

/// Which backend to use, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring when the kernel allows it, else the blocking pool.
    #[default]
    Auto,
    /// io_uring or a start-up error.
    Uring,
    /// The blocking pool, always.
    Blocking,
}

/// The backend in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring ring registered in the tokio reactor.
    Uring,
    /// `spawn_blocking` + `pread`/`pwrite`.
    Blocking,
}

impl Backend {
    /// `"io_uring"` or `"blocking"`, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Uring => "io_uring",
            Backend::Blocking => "blocking",
        }
    }
}

pub(crate) enum Io {
    Uring(Arc<Ring>),
    Blocking,
}

impl Io {
    /// Picks the backend once (shared/research/io_uring.md §6 start-up
    /// detection). `Err` only for a forced `Uring` that cannot start.
    pub(crate) fn detect(choice: BackendChoice) -> Result<(Io, String), String> {
        if choice == BackendChoice::Blocking {
            return Ok((Io::Blocking, "forced by config".into()));
        }
        let attempt = (|| {
            if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                && s.trim() == "2"
            {
                return Err("kernel.io_uring_disabled=2".to_owned());
            }
            Ring::start()
        })();
        match (attempt, choice) {
            (Ok(ring), _) => Ok((Io::Uring(ring), "ok".into())),
            (Err(reason), BackendChoice::Uring) => Err(reason),
            (Err(reason), _) => Ok((Io::Blocking, reason)),
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Io::Uring(_) => Backend::Uring,
            Io::Blocking => Backend::Blocking,
        }
    }

    /// Reads up to `len` bytes at `offset` (fewer only at end of file):
    /// what the page cache holds inline, the rest through the backend.
    pub(crate) async fn read_at(
        &self,
        file: &Arc<File>,
        len: usize,
        offset: u64,
    ) -> io::Result<Vec<u8>> {
        let mut bufs = self.read_vectored(file, &[len], offset).await?;
        Ok(bufs.pop().unwrap_or_default())
    }

    /// Reads consecutive ranges of `lens` bytes from `offset` into one
    /// buffer each (fewer bytes only at end of file): one `preadv2` when
    /// the page cache holds them. Separate buffers rather than one large
    /// one keep each allocation under glibc's mmap threshold (128 KiB),
    /// which a 256 KiB buffer per read crossed: an mmap, page faults and
    /// an munmap per read, measured as 4 of each per 1 MiB hit. Block-sized
    /// buffers are recycled (see `buffers.rs`).
    pub(crate) async fn read_vectored(
        &self,
        file: &Arc<File>,
        lens: &[usize],
        offset: u64,
    ) -> io::Result<Vec<Vec<u8>>> {
        let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| super::buffers::take(l)).collect();
        if !read_cached(file, &mut bufs, lens, offset)? {
            self.read_rest(file, &mut bufs, lens, offset).await?;
        }
        Ok(bufs)
    }

    /// Completes what [`read_cached`] left of `bufs` through the backend.
    async fn read_rest(
        &self,
        file: &Arc<File>,
        bufs: &mut [Vec<u8>],
        lens: &[usize],
        offset: u64,
    ) -> io::Result<()> {
        let mut at = offset;
        for (buf, &len) in bufs.iter_mut().zip(lens) {
            while buf.len() < len {
                let part = self
                    .read_once(file, len - buf.len(), at + buf.len() as u64)
                    .await?;
                if part.is_empty() {
                    return Ok(()); // end of file
                }
                if buf.is_empty() {
                    *buf = part;
                } else {
                    buf.extend_from_slice(&part);
                }
            }
            at += len as u64;
        }
        Ok(())
    }

    async fn read_once(&self, file: &Arc<File>, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        if let Io::Uring(ring) = self
            && let Some(op) = ring.read_at(file, len, offset)
        {
            return op.await;
        }
        let file = Arc::clone(file);
        blocking(move || {
            let mut buf = vec![0; len];
            let n = file.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) async fn write_all_at(
        &self,
        file: &Arc<File>,
        mut buf: Bytes,
        mut offset: u64,
    ) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write_once(file, buf.clone(), offset).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let _ = buf.split_to(n);
            offset += n as u64;
        }
        Ok(())
    }

    async fn write_once(&self, file: &Arc<File>, buf: Bytes, offset: u64) -> io::Result<usize> {
        if let Io::Uring(ring) = self
            && let Some(op) = ring.write_at(file, buf.clone(), offset)
        {
            return op.await;
        }
        let file = Arc::clone(file);
        blocking(move || file.write_at(&buf, offset)).await
    }
}

/// Cleared when the file system refuses `RWF_NOWAIT` (`EOPNOTSUPP`), so
/// every read goes straight to the backend from then on.
static NOWAIT_READS: AtomicBool = AtomicBool::new(true);

/// Fills the empty `bufs` (up to `lens` bytes each, consecutive from
/// `offset`) from the page cache, without blocking on the device. Returns
/// whether that is complete: every buffer full, or the file ended. A partly
/// cached range leaves the rest for the backend.
fn read_cached(file: &File, bufs: &mut [Vec<u8>], lens: &[usize], offset: u64) -> io::Result<bool> {
    // Index of the first buffer not yet full, and bytes read so far.
    let (mut first, mut total) = (0, 0u64);
    while NOWAIT_READS.load(Ordering::Relaxed) {
        while first < bufs.len() && bufs[first].len() == lens[first] {
            first += 1;
        }
        if first == bufs.len() {
            return Ok(true);
        }
        let iovs: Vec<libc::iovec> = bufs[first..]
            .iter_mut()
            .zip(&lens[first..])
            .map(|(b, &len)| {
                let filled = b.len();
                libc::iovec {
                    iov_base: b.spare_capacity_mut().as_mut_ptr().cast(),
                    iov_len: len - filled,
                }
            })
            .collect();
        // SAFETY: each iovec describes spare capacity of a buffer in
        // `bufs` (room for `len` bytes, see `buffers::take`), which outlives the
        // call; the kernel writes at most `iov_len` bytes into each.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                iovs.as_ptr(),
                iovs.len() as libc::c_int,
                (offset + total) as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(false),
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => {
                    NOWAIT_READS.store(false, Ordering::Relaxed);
                    tracing::info!(error = %e, "page-cache reads (RWF_NOWAIT) unsupported here; every disk read goes through the backend");
                    Ok(false)
                }
                _ => Err(e),
            };
        }
        if n == 0 {
            return Ok(true); // end of file
        }
        total += n as u64;
        let mut left = n as usize;
        for (b, &len) in bufs[first..].iter_mut().zip(&lens[first..]) {
            let take = left.min(len - b.len());
            // SAFETY: the kernel initialised these bytes, in iovec order.
            unsafe { b.set_len(b.len() + take) };
            left -= take;
            if left == 0 {
                break;
            }
        }
    }
    Ok(false)
}

/// Cleared when `openat2(RESOLVE_CACHED)` is unavailable (kernels before
/// 5.12, or a seccomp filter), so every open goes to the blocking pool.
static CACHED_OPENS: AtomicBool = AtomicBool::new(true);

/// Opens `path` read-only on the calling thread if the kernel can resolve
/// it from the dentry cache alone (`openat2` with `RESOLVE_CACHED`, the way
/// io_uring opens inline); `Ok(None)` when that would need disk I/O, and
/// the caller opens it on the blocking pool instead.
pub(crate) fn open_cached(path: &Path) -> io::Result<Option<File>> {
    if !CACHED_OPENS.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all-zero is a valid `open_how` (no flags); it is
    // `#[non_exhaustive]`, so it cannot be built with a literal.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_CACHED;
    loop {
        // SAFETY: `c_path` and `how` outlive the call; the size passed is
        // the struct's own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a new descriptor that nothing else owns.
            return Ok(Some(unsafe { File::from_raw_fd(fd as RawFd) }));
        }
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => Ok(None),
            Some(libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::E2BIG) => {
                CACHED_OPENS.store(false, Ordering::Relaxed);
                tracing::info!(error = %e, "openat2(RESOLVE_CACHED) unavailable; disk cache opens go through the blocking pool");
                Ok(None)
            }
            _ => Err(e),
        };
    }
}

/// Runs a blocking file-system call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend half of a read (what the page cache could not answer,
    /// rare in tests since the files were just written): partly filled and
    /// empty buffers complete in place, the file's end leaves them short.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backends_complete_what_the_page_cache_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let mut ios = vec![Io::Blocking];
        if let Ok((io @ Io::Uring(_), _)) = Io::detect(BackendChoice::Uring) {
            ios.push(io);
        }
        for io in ios {
            let lens = [65_536, 65_536, 100_000];
            let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| Vec::with_capacity(l)).collect();
            bufs[0].extend_from_slice(&data[1000..2000]);
            io.read_rest(&file, &mut bufs, &lens, 1000).await.unwrap();
            assert_eq!(bufs[0], data[1000..66_536], "{:?}", io.backend());
            assert_eq!(bufs[1], data[66_536..132_072]);
            assert_eq!(bufs[2], data[132_072..], "short at the end of the file");
            let whole = io.read_vectored(&file, &lens, 1000).await.unwrap();
            assert_eq!(whole, bufs);
            if let Io::Uring(ring) = &io {
                ring.shutdown();
            }
        }
    }
}
