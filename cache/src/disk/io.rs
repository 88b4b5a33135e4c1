//! Positional file I/O through the backend chosen at open: an io_uring ring
//! in the tokio reactor, or `spawn_blocking` + `pread`/`pwrite`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

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

    /// Reads up to `len` bytes at `offset` (fewer only at end of file).
    pub(crate) async fn read_at(
        &self,
        file: &Arc<File>,
        len: usize,
        offset: u64,
    ) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < len {
            let want = len - out.len();
            let at = offset + out.len() as u64;
            let part = self.read_once(file, want, at).await?;
            if part.is_empty() {
                break;
            }
            if out.is_empty() {
                out = part;
            } else {
                out.extend_from_slice(&part);
            }
        }
        Ok(out)
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

/// Runs a blocking file-system call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}
