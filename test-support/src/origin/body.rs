//! Response bodies the origin streams: fixed text, the deterministic byte
//! pattern (optionally stalling part-way) and the echo of a request body.
//!
//! Every variant produces frames lazily, so a 1 GiB `size=` response costs
//! one 64 KiB window of memory, and `/echo` forwards each request frame as
//! it arrives instead of collecting the request first.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Frame size for pattern bodies: 64 KiB, the brief's streaming unit and
/// hyper's default HTTP/1 write buffer scale, so frames map onto writes.
pub(crate) const FRAME_LEN: usize = 64 * 1024;

/// Length of one period of [`pattern_byte`].
const PERIOD: usize = 26;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Byte `i` of every `size=` body: `a..z` repeating, so a test can check
/// any byte of a (possibly range-sliced) response without the original.
pub fn pattern_byte(i: u64) -> u8 {
    b'a' + (i % PERIOD as u64) as u8
}

/// One frame plus one period of the pattern, built once; frames are
/// zero-copy slices of it starting at `offset % PERIOD`.
fn pattern_window() -> &'static [u8] {
    static WINDOW: OnceLock<Vec<u8>> = OnceLock::new();
    WINDOW.get_or_init(|| (0..(FRAME_LEN + PERIOD) as u64).map(pattern_byte).collect())
}

/// Called once with the number of request-body bytes when an echoed
/// request body ends cleanly.
pub(crate) type OnEchoEnd = Box<dyn FnOnce(u64) + Send>;

/// A future that completes when a held pattern body may continue.
pub(crate) type Resume = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a pattern body does once it reached its `end`.
pub(crate) enum AfterEnd {
    /// It ends.
    Finish,
    /// It stays pending forever, as an origin that hangs mid-body would.
    Stall,
    /// It waits for `resume`, then continues up to `until` and ends.
    Resume { resume: Resume, until: u64 },
}

/// A response body produced by the origin.
pub(crate) enum OriginBody {
    /// A small in-memory body; `None` once sent (or for an empty body).
    Full(Option<Bytes>),
    /// Pattern bytes `offset..end`, then `after`. With `chunked`, the body
    /// reports no exact size, so hyper sends it without `Content-Length`.
    Pattern {
        offset: u64,
        end: u64,
        after: AfterEnd,
        chunked: bool,
    },
    /// The request body, frame by frame.
    Echo {
        incoming: Incoming,
        received: u64,
        on_end: Option<OnEchoEnd>,
    },
}

impl OriginBody {
    pub(crate) fn empty() -> Self {
        OriginBody::Full(None)
    }

    pub(crate) fn text(s: String) -> Self {
        OriginBody::Full(Some(Bytes::from(s)))
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            OriginBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            OriginBody::Pattern {
                offset, end, after, ..
            } => {
                if *offset >= *end {
                    let resumed_end = match after {
                        AfterEnd::Finish => return Poll::Ready(None),
                        // Never woken: the connection task is parked until
                        // the peer gives up or the origin shuts down.
                        AfterEnd::Stall => return Poll::Pending,
                        AfterEnd::Resume { resume, until } => {
                            std::task::ready!(resume.as_mut().poll(cx));
                            *until
                        }
                    };
                    *end = resumed_end;
                    *after = AfterEnd::Finish;
                    if *offset >= *end {
                        return Poll::Ready(None);
                    }
                }
                let len = (*end - *offset).min(FRAME_LEN as u64) as usize;
                let start = (*offset % PERIOD as u64) as usize;
                let frame = Bytes::from_static(&pattern_window()[start..start + len]);
                *offset += len as u64;
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
            OriginBody::Echo {
                incoming,
                received,
                on_end,
            } => match Pin::new(&mut *incoming).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    if let Some(done) = on_end.take() {
                        done(*received);
                    }
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        *received += data.len() as u64;
                    }
                    // With a known length hyper stops polling once it has
                    // sent that many bytes, so the final `None` may never be
                    // asked for: record the end as soon as the length is met.
                    if incoming.is_end_stream()
                        && let Some(done) = on_end.take()
                    {
                        done(*received);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OriginBody::Full(data) => data.is_none(),
            OriginBody::Pattern {
                offset, end, after, ..
            } => matches!(after, AfterEnd::Finish) && offset >= end,
            // Report the end only through poll_frame, so on_end always runs.
            OriginBody::Echo { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            OriginBody::Pattern {
                offset,
                end,
                after: AfterEnd::Finish,
                chunked: false,
            } => SizeHint::with_exact(end - offset),
            // A held body's declared Content-Length is set explicitly on the
            // response; a chunked one has none.
            OriginBody::Pattern { .. } => SizeHint::default(),
            OriginBody::Echo { incoming, .. } => incoming.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn pattern_is_a_to_z() {
        assert_eq!(pattern_byte(0), b'a');
        assert_eq!(pattern_byte(25), b'z');
        assert_eq!(pattern_byte(26), b'a');
    }

    #[tokio::test]
    async fn pattern_body_streams_exact_bytes_in_frames() {
        let len = 3 * FRAME_LEN as u64 + 7;
        let mut body = OriginBody::Pattern {
            offset: 0,
            end: len,
            after: AfterEnd::Finish,
            chunked: false,
        };
        assert_eq!(body.size_hint().exact(), Some(len));
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= FRAME_LEN);
            for (i, b) in data.iter().enumerate() {
                assert_eq!(*b, pattern_byte(seen + i as u64));
            }
            seen += data.len() as u64;
        }
        assert_eq!(seen, len);
    }

    #[tokio::test]
    async fn held_pattern_body_continues_after_resume() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut body = OriginBody::Pattern {
            offset: 0,
            end: 10,
            after: AfterEnd::Resume {
                resume: Box::pin(async move {
                    let _ = rx.await;
                }),
                until: 30,
            },
            chunked: false,
        };
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), 10);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let held = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(held.is_pending(), "the body waits for the resume");
        tx.send(()).unwrap();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest.len(), 20);
        assert_eq!(rest[0], pattern_byte(10));
    }
}
