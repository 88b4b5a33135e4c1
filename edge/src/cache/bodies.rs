//! Response bodies of the cache step: a stored object, and a flight's body
//! as it streams.

use std::sync::Arc;

use bytes::Bytes;
use edge_cache::coalesce::{Follower, LeaderFailed};
use edge_cache::entry::StoredResponse;
use http_body::{Body, Frame, SizeHint};

use super::SharedHead;
use crate::body::BoxError;

/// A stored body served chunk by chunk, sharing the stored `Bytes`.
pub(super) struct StoredBody {
    pub(super) entry: Arc<StoredResponse>,
    pub(super) next: usize,
}

impl Body for StoredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let chunk = self.entry.body.get(self.next).cloned();
        self.next += 1;
        std::task::Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.entry.body.len()
    }

    fn size_hint(&self) -> SizeHint {
        let left: u64 = self.entry.body[self.next.min(self.entry.body.len())..]
            .iter()
            .map(|c| c.len() as u64)
            .sum();
        SizeHint::with_exact(left)
    }
}

pub(super) type NextChunk = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Follower<Arc<SharedHead>>,
                    Option<Result<Bytes, LeaderFailed>>,
                ),
            > + Send,
    >,
>;

/// A flight's body as it streams: each chunk as soon as it is published.
pub(super) struct FlightBody {
    pub(super) follower: Option<Follower<Arc<SharedHead>>>,
    pub(super) pending: Option<NextChunk>,
}

impl Body for FlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.pending.is_none() {
            let Some(mut follower) = self.follower.take() else {
                return std::task::Poll::Ready(None);
            };
            self.pending = Some(Box::pin(async move {
                let next = follower.next_chunk().await;
                (follower, next)
            }));
        }
        let pending = self.pending.as_mut().expect("set above");
        let (follower, next) = std::task::ready!(pending.as_mut().poll(cx));
        self.pending = None;
        match next {
            Some(Ok(chunk)) => {
                self.follower = Some(follower);
                std::task::Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Some(Err(failed)) => std::task::Poll::Ready(Some(Err(failed.into()))),
            None => std::task::Poll::Ready(None),
        }
    }
}
