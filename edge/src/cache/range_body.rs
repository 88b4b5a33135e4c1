//! The body of a 206: the bytes of one range cut out of a body that streams
//! the whole representation from offset 0.
//!
//! [`RangeBody`] wraps any such body (a stored object's chunks, a flight's
//! chunks as they are published, later a disk read) and yields only the
//! bytes in the range, each as a zero-copy `Bytes::slice` of the chunk it
//! arrived in. It ends as soon as the last byte of the range has passed,
//! without waiting for the rest of the representation, and drops the inner
//! body then, so a client reading the first KiB of a cold object is done
//! while the fill is still streaming. The offset arithmetic is
//! [`ByteRange::within_chunk`] in edge-cache.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use edge_cache::range::ByteRange;
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;

/// The inner body ended before the last byte of the range: the 206 is
/// truncated and the client must see an error, not a short clean body.
#[derive(Debug, thiserror::Error)]
#[error("the representation ended at byte {ended_at}, before the range's last byte {wanted}")]
pub(super) struct RangeTruncated {
    ended_at: u64,
    wanted: u64,
}

pin_project_lite::pin_project! {
    /// The bytes of `range` out of `inner`, which yields the whole
    /// representation from offset 0.
    pub(super) struct RangeBody<B> {
        #[pin]
        inner: Option<B>,
        range: ByteRange,
        // Offset in the representation of the next byte `inner` yields.
        offset: u64,
    }
}

impl<B> RangeBody<B> {
    /// Cuts `range` out of `inner`.
    pub(super) fn new(inner: B, range: ByteRange) -> Self {
        RangeBody {
            inner: Some(inner),
            range,
            offset: 0,
        }
    }

    fn done(&self) -> bool {
        self.offset > self.range.end_inclusive
    }
}

impl<B> Body for RangeBody<B>
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
        loop {
            if *this.offset > this.range.end_inclusive {
                // Past the range: release the inner body (a flight reader,
                // a file) now rather than when the response is dropped.
                this.inner.set(None);
                return Poll::Ready(None);
            }
            let Some(inner) = this.inner.as_mut().as_pin_mut() else {
                return Poll::Ready(None);
            };
            let frame = match std::task::ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    this.inner.set(None);
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => {
                    this.inner.set(None);
                    let truncated = RangeTruncated {
                        ended_at: *this.offset,
                        wanted: this.range.end_inclusive,
                    };
                    return Poll::Ready(Some(Err(truncated.into())));
                }
            };
            // Trailers describe the whole representation; a part has none.
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let at = *this.offset;
            *this.offset = at.saturating_add(chunk.len() as u64);
            if let Some(part) = this.range.within_chunk(at, chunk.len()) {
                return Poll::Ready(Some(Ok(Frame::data(chunk.slice(part)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done()
    }

    fn size_hint(&self) -> SizeHint {
        let left = if self.done() {
            0
        } else {
            let from = self.range.start.max(self.offset);
            self.range.end_inclusive - from + 1
        };
        SizeHint::with_exact(left)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;

    use super::*;

    /// Yields `chunks` (bytes `0, 1, 2, …` mod 256), then stays pending
    /// forever when `then_hang`, else ends.
    struct Chunks {
        chunks: std::collections::VecDeque<Bytes>,
        then_hang: bool,
    }

    impl Chunks {
        fn new(lens: &[usize], then_hang: bool) -> Self {
            let mut offset = 0usize;
            let chunks = lens
                .iter()
                .map(|&len| {
                    let bytes: Vec<u8> = (offset..offset + len).map(|i| i as u8).collect();
                    offset += len;
                    Bytes::from(bytes)
                })
                .collect();
            Chunks { chunks, then_hang }
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.chunks.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None if self.then_hang => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn range(start: u64, end_inclusive: u64) -> ByteRange {
        ByteRange {
            start,
            end_inclusive,
        }
    }

    async fn collect(body: RangeBody<Chunks>) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn yields_exactly_the_range_across_chunk_boundaries() {
        let lens = [7, 1, 0, 30, 5, 57];
        for (start, end) in [
            (0, 0),
            (0, 99),
            (6, 8),
            (8, 8),
            (10, 40),
            (99, 99),
            (37, 38),
        ] {
            let body = RangeBody::new(Chunks::new(&lens, false), range(start, end));
            assert_eq!(body.size_hint().exact(), Some(end - start + 1));
            let want: Vec<u8> = (start..=end).map(|i| i as u8).collect();
            assert_eq!(collect(body).await.unwrap(), want, "{start}-{end}");
        }
    }

    #[tokio::test]
    async fn ends_once_the_range_is_passed_without_waiting_for_the_rest() {
        // The inner body never ends: a fill still streaming a large object.
        let body = RangeBody::new(Chunks::new(&[4, 4, 4], true), range(2, 5));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), collect(body))
            .await
            .expect("the range completes while the inner body hangs");
        assert_eq!(got.unwrap(), [2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn slices_share_the_chunk_memory() {
        let chunk = Bytes::from(vec![9u8; 64]);
        let base = chunk.as_ptr() as usize;
        let mut body = RangeBody::new(
            Chunks {
                chunks: [chunk].into(),
                then_hang: false,
            },
            range(10, 19),
        );
        let part = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(part.as_ptr() as usize, base + 10, "a slice, not a copy");
        assert_eq!(part.len(), 10);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_short_representation_is_an_error() {
        let body = RangeBody::new(Chunks::new(&[10], false), range(5, 20));
        let error = collect(body).await.unwrap_err();
        assert!(error.is::<RangeTruncated>(), "{error}");
    }
}
