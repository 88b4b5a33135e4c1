//! [`ObservedBody`]: a response body that counts the bytes it hands to the
//! connection and completes the request's record when it ends, fails or
//! is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::InFlight;
use crate::body::{BoxError, ProxyBody};

/// A response body under observation.
pub(super) struct ObservedBody {
    inner: ProxyBody,
    flight: InFlight,
    bytes: u64,
    /// The response's `Content-Length`, when it declared one.
    declared: Option<u64>,
}

impl ObservedBody {
    /// Wraps `inner`, whose response declared `declared` bytes; `flight`
    /// completes when it is over.
    pub(super) fn new(inner: ProxyBody, declared: Option<u64>, flight: InFlight) -> Self {
        ObservedBody {
            inner,
            flight,
            bytes: 0,
            declared,
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.flight.complete(this.bytes, true),
            Poll::Ready(None) => this.flight.complete(this.bytes, false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // hyper drops a body without polling it again once it has ended:
        // when the body says so, or when the declared Content-Length has
        // gone out (HTTP/1.1). The body of an answer to HEAD is never sent
        // at all. All are normal ends; anything else is an abandoned one.
        let ended = self.inner.is_end_stream()
            || self.declared == Some(self.bytes)
            || self.flight.answers_head();
        self.flight.complete(self.bytes, !ended);
    }
}
