//! The send timeout: a client that stops reading is closed.
//!
//! A response write that cannot proceed because the client's receive
//! window is shut parks the connection with its buffers (and often an
//! upstream fetch) for as long as the client likes; slow-read attacks
//! hold many of them that way. [`SendDeadline`] wraps a connection's
//! socket: the first write that finds the socket full starts a timer, any
//! write that makes progress stops it, and when `send_timeout` passes with
//! no progress the write fails with `TimedOut`, which ends the connection.
//! Like nginx's `send_timeout`, it bounds the wait between two successful
//! writes, not the whole response, so a slow but steady reader is served
//! to the end.
//!
//! The cost on the data path is a branch per write; the timer is
//! allocated on the first stall only. An HTTP/2 client that stops sending
//! WINDOW_UPDATE frames stalls a stream without ever filling the socket;
//! that is bounded by the stream and connection windows instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The `reason` label of `edge_slow_clients_closed_total` for this timeout.
pub const SEND_TIMEOUT: &str = "send_timeout";

pin_project_lite::pin_project! {
    /// A socket whose writes fail once they have waited `timeout` for the
    /// client to read.
    pub struct SendDeadline<S> {
        #[pin]
        inner: S,
        timeout: Duration,
        // Allocated at the first stall, reused after.
        timer: Option<Pin<Box<Sleep>>>,
        // Whether a stall is being timed.
        stalled: bool,
        // edge_slow_clients_closed_total{reason="send_timeout"}.
        closed: metrics::Counter,
    }
}

impl<S> SendDeadline<S> {
    /// Wraps `inner`; a timeout counts on `closed`.
    pub fn new(inner: S, timeout: Duration, closed: metrics::Counter) -> Self {
        SendDeadline {
            inner,
            timeout,
            timer: None,
            stalled: false,
            closed,
        }
    }
}

/// Times one write attempt's outcome: progress (or an error) clears the
/// stall, a blocked attempt starts or checks it.
fn timed<T>(
    outcome: Poll<io::Result<T>>,
    cx: &mut Context<'_>,
    timeout: Duration,
    timer: &mut Option<Pin<Box<Sleep>>>,
    stalled: &mut bool,
    closed: &metrics::Counter,
) -> Poll<io::Result<T>> {
    if outcome.is_ready() {
        *stalled = false;
        return outcome;
    }
    if !*stalled {
        let deadline = Instant::now() + timeout;
        match timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        *stalled = true;
    }
    let timer = timer.as_mut().expect("armed above");
    // Polled so that the timer wakes the connection's task when it fires.
    ready!(timer.as_mut().poll(cx));
    closed.increment(1);
    tracing::debug!(
        ?timeout,
        "client stopped reading; closing at the send timeout"
    );
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "the client read nothing within send_timeout",
    )))
}

impl<S: AsyncRead> AsyncRead for SendDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let outcome = this.inner.poll_write(cx, buf);
        timed(
            outcome,
            cx,
            *this.timeout,
            this.timer,
            this.stalled,
            this.closed,
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let outcome = this.inner.poll_write_vectored(cx, bufs);
        timed(
            outcome,
            cx,
            *this.timeout,
            this.timer,
            this.stalled,
            this.closed,
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let outcome = this.inner.poll_flush(cx);
        timed(
            outcome,
            cx,
            *this.timeout,
            this.timer,
            this.stalled,
            this.closed,
        )
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn counter() -> metrics::Counter {
        metrics::Counter::noop()
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_fails_the_write_at_the_timeout() {
        // A 64-byte pipe whose far end never reads.
        let (near, _far) = tokio::io::duplex(64);
        let mut io = SendDeadline::new(near, Duration::from_secs(5), counter());
        let started = Instant::now();
        let error = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_steady_reader_is_never_cut_off() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = SendDeadline::new(near, Duration::from_secs(5), counter());
        // 64 bytes every 4 s: each wait is under the timeout, the whole
        // transfer (64 s) far over it.
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut chunk = [0u8; 64];
            loop {
                tokio::time::sleep(Duration::from_secs(4)).await;
                match far.read(&mut chunk).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        io.write_all(&[7u8; 1024]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 1024);
    }
}
