//! Body types of the request path.
//!
//! Every body that crosses the pipeline is a [`ProxyBody`]: a boxed stream of
//! `Bytes` frames. Bodies stream frame by frame; nothing here collects one.
//! [`IdleTimeout`] fails a body that stops making progress, so a stalled
//! origin or client cannot pin a connection forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use tokio::time::{Instant, Sleep};

/// Error type carried by bodies in the pipeline.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type of the pipeline, whatever produced it.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from a static or owned buffer.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes `body`, failing it when no frame arrives for `timeout`.
///
/// A body that is already complete is boxed without a timer.
pub fn with_idle_timeout<B>(body: B, timeout: Duration) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return empty();
    }
    IdleTimeout {
        inner: body,
        sleep: tokio::time::sleep(timeout),
        timeout,
    }
    .boxed_unsync()
}

/// The error a body fails with when it stalls.
#[derive(Debug, thiserror::Error)]
#[error("body made no progress for {0:?}")]
pub struct BodyStalled(pub Duration);

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyStalled`] when idle too long.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep.as_mut().reset(Instant::now() + *this.timeout);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyStalled(*this.timeout).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body fed by the test, one chunk at a time.
    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_body_fails_after_the_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut body = with_idle_timeout(ChannelBody(rx), Duration::from_secs(5));
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        // Nothing more is sent: the paused clock auto-advances to the deadline.
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyStalled>(), "{err}");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_moving_never_times_out() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut body = with_idle_timeout(ChannelBody(rx), Duration::from_secs(5));
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(4)).await;
            tx.send(Bytes::from_static(b"x")).await.unwrap();
            assert!(body.frame().await.unwrap().is_ok());
        }
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn complete_body_passes_through() {
        let mut body = with_idle_timeout(
            Full::new(Bytes::from_static(b"hello")),
            Duration::from_secs(1),
        );
        assert_eq!(body.size_hint().exact(), Some(5));
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data, "hello");
        assert!(body.frame().await.is_none());
    }
}
