//! Body types of the request path.
//!
//! Every body that crosses the pipeline is a [`ProxyBody`]: a boxed stream of
//! `Bytes` frames. Bodies stream frame by frame; nothing here collects one.
//! [`IdleTimeout`] fails a body that stops making progress, so a stalled
//! origin or client cannot pin a connection forever; [`MinRate`] fails a
//! client's request body that trickles in below `[limits] body_min_rate`.

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

/// `[limits] body_min_rate` over `body_rate_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateRule {
    /// Slowest accepted rate, in bytes per second.
    pub bytes_per_sec: u64,
    /// Waiting time over which the rate is judged.
    pub window: Duration,
}

impl RateRule {
    /// The rule of `[limits]`; `None` when `body_min_rate` is 0 (off).
    pub fn from_limits(limits: &edge_config::Limits) -> Option<Self> {
        (limits.body_min_rate > 0).then_some(RateRule {
            bytes_per_sec: limits.body_min_rate,
            window: limits.body_rate_window,
        })
    }

    /// Bytes a window must bring.
    fn bytes_per_window(&self) -> u64 {
        let bytes = u128::from(self.bytes_per_sec) * self.window.as_millis() / 1000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// The `reason` of `edge_slow_clients_closed_total` for a body that was
/// too slow.
pub const BODY_RATE: &str = "body_rate";

/// The error a request body fails with when it arrives too slowly.
#[derive(Debug, thiserror::Error)]
#[error("request body arrived slower than {} bytes/s over {:?}", .0.bytes_per_sec, .0.window)]
pub struct BodyTooSlow(pub RateRule);

/// The rate judgement of one body, with time passed in.
///
/// The clock that counts is the time the reader spent *waiting* for the
/// client: while edge is not reading (its upstream is slow to take the
/// bytes), the client cannot be blamed, and its bytes pile up in the
/// socket to be read at once later. Each time the waiting adds up to a
/// window, the bytes received since the last judgement must reach the
/// rate × the window, or the body is too slow. The first window is the
/// grace: nothing is judged before a client has made edge wait that long.
#[derive(Debug, Clone)]
pub struct RateWindow {
    rule: RateRule,
    /// Waiting time in the current window.
    waited: Duration,
    /// Bytes received in the current window.
    bytes: u64,
    /// When the reader began waiting, while it waits.
    waiting_since: Option<Instant>,
}

impl RateWindow {
    /// A body that has not been read yet.
    pub fn new(rule: RateRule) -> Self {
        RateWindow {
            rule,
            waited: Duration::ZERO,
            bytes: 0,
            waiting_since: None,
        }
    }

    /// The reader found nothing to read at `now` and waits; returns when
    /// the current window's judgement falls due if nothing arrives.
    pub fn wait(&mut self, now: Instant) -> Instant {
        let since = *self.waiting_since.get_or_insert(now);
        since + self.rule.window.saturating_sub(self.waited)
    }

    /// `n` bytes arrived at `now`.
    pub fn received(&mut self, n: u64, now: Instant) -> Result<(), BodyTooSlow> {
        self.bytes = self.bytes.saturating_add(n);
        self.account(now, false)
    }

    /// Still waiting at `now` (the judgement `wait` announced fell due).
    pub fn tick(&mut self, now: Instant) -> Result<(), BodyTooSlow> {
        self.account(now, true)
    }

    fn account(&mut self, now: Instant, still_waiting: bool) -> Result<(), BodyTooSlow> {
        let Some(since) = self.waiting_since.take() else {
            // Data that was already there cost the client no time.
            return Ok(());
        };
        self.waited += now.saturating_duration_since(since);
        while self.waited >= self.rule.window {
            if self.bytes < self.rule.bytes_per_window() {
                return Err(BodyTooSlow(self.rule));
            }
            self.waited -= self.rule.window;
            self.bytes = 0;
        }
        if still_waiting {
            self.waiting_since = Some(now);
        }
        Ok(())
    }
}

/// Fails `body` with [`BodyTooSlow`] if it arrives slower than `rule`.
pub fn with_min_rate<B>(body: B, rule: RateRule) -> MinRate<B> {
    MinRate {
        inner: body,
        window: RateWindow::new(rule),
        sleep: None,
    }
}

pin_project_lite::pin_project! {
    /// A request body held to a minimum rate. The timer is allocated the
    /// first time the body has to wait, so bodies that never do (most GET
    /// requests have none) cost nothing.
    pub struct MinRate<B> {
        #[pin]
        inner: B,
        window: RateWindow,
        // Armed while the reader waits.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> MinRate<B> {
    fn too_slow(error: BodyTooSlow) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        crate::observe::metrics::slow_clients_closed(BODY_RATE).increment(1);
        tracing::debug!(%error, "request body too slow; aborting the request");
        Poll::Ready(Some(Err(error.into())))
    }
}

impl<B> Body for MinRate<B>
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
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |data| data.len() as u64);
                if let Err(error) = this.window.received(n, Instant::now()) {
                    return Self::too_slow(error);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let due = this.window.wait(Instant::now());
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if sleep.deadline() != due {
                    sleep.as_mut().reset(due);
                }
                while sleep.as_mut().poll(cx).is_ready() {
                    let now = Instant::now();
                    if let Err(error) = this.window.tick(now) {
                        return Self::too_slow(error);
                    }
                    sleep.as_mut().reset(this.window.wait(now));
                }
                Poll::Pending
            }
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

    const RULE: RateRule = RateRule {
        bytes_per_sec: 1000,
        window: Duration::from_secs(10),
    };

    /// Replays a body's arrival on a virtual clock: each step is
    /// (seconds spent waiting before it, bytes it brings). Bytes arriving
    /// at the very moment a judgement falls due count before it.
    fn replay(steps: &[(u64, u64)]) -> Result<(), BodyTooSlow> {
        let start = Instant::now();
        let mut now = start;
        let mut window = RateWindow::new(RULE);
        for &(wait, bytes) in steps {
            let mut due = window.wait(now);
            let until = now + Duration::from_secs(wait);
            while due < until {
                window.tick(due)?;
                due = window.wait(due);
            }
            now = until;
            window.received(bytes, now)?;
        }
        Ok(())
    }

    #[test]
    fn rate_windows() {
        // (steps, passes); the rule is 1000 B/s judged over 10 s of waiting.
        let cases: &[(&[(u64, u64)], bool)] = &[
            // Exactly the rate, and well above it.
            (&[(1, 1000); 30], true),
            (&[(2, 2000); 30], true),
            (&[(0, 1_000_000), (0, 1_000_000)], true),
            // A 9 s pause after a good start is within one window.
            (&[(1, 10_000), (9, 1000), (1, 10_000)], true),
            // A trickle below the rate fails at the first judgement.
            (&[(1, 100); 30], false),
            (&[(1, 999); 30], false),
            // Silence: fails once a window of waiting has passed.
            (&[(11, 0)], false),
            // A good burst buys one window, not forever.
            (&[(0, 50_000), (25, 1)], false),
        ];
        for (steps, passes) in cases {
            assert_eq!(replay(steps).is_ok(), *passes, "{steps:?}");
        }
    }

    #[test]
    fn time_spent_not_reading_is_not_the_clients() {
        let start = Instant::now();
        let mut window = RateWindow::new(RULE);
        // Edge reads only every 60 s (its upstream is slow to take the
        // body); the client's bytes are there each time it looks.
        for minute in 0..10 {
            let now = start + Duration::from_secs(60 * minute);
            assert!(window.received(100, now).is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_after_one_window() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut body = with_min_rate(ChannelBody(rx), RULE);
        let started = Instant::now();
        let feeder = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(Bytes::from_static(&[b'x'; 100])).await.is_err() {
                    return;
                }
            }
        });
        let error = loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(error)) => break error,
                None => panic!("the body ended"),
            }
        };
        assert!(error.is::<BodyTooSlow>(), "{error}");
        assert_eq!(started.elapsed(), RULE.window);
        drop(body);
        feeder.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_fails_at_the_window() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let mut body = with_min_rate(ChannelBody(rx), RULE);
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyTooSlow>(), "{error}");
        assert_eq!(started.elapsed(), RULE.window);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_rate_completes() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut body = with_min_rate(ChannelBody(rx), RULE);
        let feeder = tokio::spawn(async move {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tx.send(Bytes::from_static(&[b'x'; 600])).await.unwrap();
            }
        });
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            len += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(len, 40 * 600);
        feeder.await.unwrap();
    }
}
