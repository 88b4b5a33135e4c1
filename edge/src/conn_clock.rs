//! The connection clock: the header timeout (slowloris) and the keep-alive
//! timeout of one downstream connection.
//!
//! hyper's own `header_read_timeout` is not used: it starts when hyper
//! begins waiting for a head, which on a keep-alive connection is the end
//! of the previous response, so it bounds idle time and head time together
//! (an idle keep-alive connection is closed after it), and it never covers
//! the auto builder's protocol detection, where a client that sends
//! nothing waits forever. Instead each connection carries a [`ConnClock`]
//! that three observers move through its phases:
//!
//! - the socket wrapper ([`ClockedIo`]) sees the first byte of a request
//!   arrive on an idle HTTP/1 connection;
//! - the service sees each request head complete ([`ConnClock::request_started`]);
//! - the response body's guard ([`InFlight`]) sees each exchange end.
//!
//! A [`Watchdog`] polled beside the connection turns the phase into a
//! deadline:
//!
//! | phase | deadline | on expiry |
//! |---|---|---|
//! | opening (accepted, no request yet) | accept + `header_timeout` | closed at once |
//! | head (HTTP/1 request bytes arriving) | first byte + `header_timeout` | closed at once |
//! | idle (keep-alive, or h2 with no stream) | last response end + `keepalive_timeout` | graceful close (h2: GOAWAY), then closed if not gone within `header_timeout` |
//! | busy (requests in flight) | none: body rate and upstream timeouts apply | |
//!
//! The phase, its start and the in-flight count are packed in one atomic
//! word, so HTTP/2 streams finishing on other tasks cannot interleave with
//! a new stream starting and leave a wrong phase. The transitions and
//! deadlines are pure functions of that word and the time ([`next`],
//! [`deadline`]), tested without sockets. The cost on the data path: one
//! atomic load per socket read, two read-modify-writes and one timer reset
//! per request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What a connection is doing, as far as its deadlines care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted (or TLS established); no request head completed yet.
    Opening,
    /// No request in flight: keep-alive between requests, or HTTP/2 with
    /// no open stream.
    Idle,
    /// An HTTP/1 request's first bytes arrived on an idle connection.
    Head,
    /// Requests in flight.
    Busy,
}

/// The clock's state: what [`ConnClock`] packs into one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The current phase.
    pub phase: Phase,
    /// When it began, in milliseconds since the connection's start.
    pub since_ms: u64,
    /// Requests whose response has not ended.
    pub in_flight: u32,
    /// Whether the connection speaks HTTP/2 (seen on its first request).
    pub h2: bool,
}

/// Something that moves the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Bytes arrived from the client.
    Bytes,
    /// A request head was complete and handed to the service.
    RequestStarted {
        /// The request came over HTTP/2.
        h2: bool,
    },
    /// A request's response ended (or was abandoned).
    RequestFinished,
}

/// The state after `event` at `now_ms`.
pub fn next(state: State, event: Event, now_ms: u64) -> State {
    match event {
        // HTTP/2 bytes are frames of all kinds (PING, WINDOW_UPDATE), not
        // the start of a request; an opening connection's clock runs from
        // accept whatever it sends.
        Event::Bytes if state.phase == Phase::Idle && !state.h2 => State {
            phase: Phase::Head,
            since_ms: now_ms,
            ..state
        },
        Event::Bytes => state,
        Event::RequestStarted { h2 } => State {
            phase: Phase::Busy,
            since_ms: if state.phase == Phase::Busy {
                state.since_ms
            } else {
                now_ms
            },
            in_flight: state.in_flight.saturating_add(1).min(MAX_IN_FLIGHT),
            h2: state.h2 || h2,
        },
        Event::RequestFinished => {
            let in_flight = state.in_flight.saturating_sub(1);
            if in_flight == 0 {
                State {
                    phase: Phase::Idle,
                    since_ms: now_ms,
                    in_flight,
                    ..state
                }
            } else {
                State { in_flight, ..state }
            }
        }
    }
}

/// The two timeouts a [`Watchdog`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `[limits] header_timeout`.
    pub header: Duration,
    /// `[limits] keepalive_timeout`.
    pub keepalive: Duration,
}

/// Why a connection's deadline passed; the `reason` label of
/// `edge_slow_clients_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request head in time: the connection is closed at once.
    Header,
    /// Idle too long: the connection is closed gracefully.
    Keepalive,
}

impl Expiry {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Expiry::Header => "header_timeout",
            Expiry::Keepalive => "keepalive",
        }
    }
}

/// When `state` expires (milliseconds since the connection's start) and
/// why; `None` while requests are in flight.
pub fn deadline(state: State, timeouts: Timeouts) -> Option<(u64, Expiry)> {
    let (after, why) = match state.phase {
        Phase::Opening | Phase::Head => (timeouts.header, Expiry::Header),
        Phase::Idle => (timeouts.keepalive, Expiry::Keepalive),
        Phase::Busy => return None,
    };
    let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    Some((state.since_ms.saturating_add(after), why))
}

// The packed word: bits 0..40 the phase start in ms (34 years), 40..42
// the phase, 42 the h2 flag, 43..64 the in-flight count.
const SINCE_BITS: u32 = 40;
const SINCE_MASK: u64 = (1 << SINCE_BITS) - 1;
const PHASE_SHIFT: u32 = 40;
const H2_BIT: u64 = 1 << 42;
const IN_FLIGHT_SHIFT: u32 = 43;
/// In-flight requests the word can count: twice the most HTTP/2 streams
/// edge-config accepts per connection (1,000,000).
const MAX_IN_FLIGHT: u32 = (1 << (64 - IN_FLIGHT_SHIFT)) - 1;

fn pack(state: State) -> u64 {
    let phase = match state.phase {
        Phase::Opening => 0,
        Phase::Idle => 1,
        Phase::Head => 2,
        Phase::Busy => 3,
    };
    (state.since_ms & SINCE_MASK)
        | (phase << PHASE_SHIFT)
        | if state.h2 { H2_BIT } else { 0 }
        | (u64::from(state.in_flight) << IN_FLIGHT_SHIFT)
}

fn unpack(word: u64) -> State {
    State {
        phase: match (word >> PHASE_SHIFT) & 3 {
            0 => Phase::Opening,
            1 => Phase::Idle,
            2 => Phase::Head,
            _ => Phase::Busy,
        },
        since_ms: word & SINCE_MASK,
        in_flight: (word >> IN_FLIGHT_SHIFT) as u32,
        h2: word & H2_BIT != 0,
    }
}

/// The packed word of an idle HTTP/1 connection: the only state in which
/// bytes move the clock, recognised from a single load.
fn idle_h1(word: u64) -> bool {
    word & ((3 << PHASE_SHIFT) | H2_BIT) == 1 << PHASE_SHIFT
}

/// One connection's clock, shared by its socket wrapper, its service and
/// its watchdog.
#[derive(Debug)]
pub struct ConnClock {
    start: Instant,
    word: AtomicU64,
    /// The watchdog's task while it waits on an HTTP/2 connection with
    /// streams in flight: those streams finish on their own tasks, which
    /// wake it so the idle deadline starts.
    waker: Mutex<Option<Waker>>,
}

impl ConnClock {
    /// A clock for a connection that starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(ConnClock {
            start: Instant::now(),
            word: AtomicU64::new(pack(State {
                phase: Phase::Opening,
                since_ms: 0,
                in_flight: 0,
                h2: false,
            })),
            waker: Mutex::new(None),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(SINCE_MASK)
    }

    fn apply(&self, event: Event) -> State {
        let now_ms = self.now_ms();
        let previous = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(pack(next(unpack(word), event, now_ms)))
            })
            .unwrap_or_else(|word| word);
        next(unpack(previous), event, now_ms)
    }

    /// Bytes arrived from the client.
    fn bytes(&self) {
        if idle_h1(self.word.load(Ordering::Relaxed)) {
            self.apply(Event::Bytes);
        }
    }

    /// A request head was handed to the service; the returned guard ends
    /// the request when dropped.
    pub fn request_started(self: &Arc<Self>, h2: bool) -> InFlight {
        self.apply(Event::RequestStarted { h2 });
        InFlight(Some(self.clone()))
    }

    fn request_finished(&self) {
        let state = self.apply(Event::RequestFinished);
        if state.phase == Phase::Idle && state.h2 {
            let waker = self
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    fn load(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }
}

/// One request in flight; dropping it (with the response body, or the
/// service future when the client left first) ends the request.
#[derive(Debug)]
pub struct InFlight(Option<Arc<ConnClock>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(clock) = self.0.take() {
            clock.request_finished();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends or
    /// is dropped.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        in_flight: InFlight,
    }
}

impl<B> Tracked<B> {
    /// Ties `in_flight` to `inner`.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked { inner, in_flight }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = frame
            && let Some(clock) = this.in_flight.0.take()
        {
            // Ended: the connection is idle from here, not from whenever
            // the protocol layer drops the body.
            clock.request_finished();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A socket that reports arriving bytes to its connection's clock.
    pub struct ClockedIo<S> {
        #[pin]
        inner: S,
        clock: Arc<ConnClock>,
    }
}

impl<S> ClockedIo<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, clock: Arc<ConnClock>) -> Self {
        ClockedIo { inner, clock }
    }
}

impl<S: AsyncRead> AsyncRead for ClockedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            this.clock.bytes();
        }
        result
    }
}

impl<S: AsyncWrite> AsyncWrite for ClockedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Turns a connection's clock into a deadline; poll it beside the
/// connection, after it, in the same task.
#[derive(Debug)]
pub struct Watchdog {
    clock: Arc<ConnClock>,
    timeouts: Timeouts,
    sleep: Pin<Box<Sleep>>,
    /// The word the armed deadline was computed from.
    seen: Option<u64>,
    /// The deadline in force, unless it fired or requests are in flight.
    armed: Option<Expiry>,
    /// Since when (ms) the connection has been closing, if it is.
    closing_from: Option<u64>,
}

impl Watchdog {
    /// Watches `clock` with `timeouts`.
    pub fn new(clock: Arc<ConnClock>, timeouts: Timeouts) -> Self {
        let start = clock.start;
        Watchdog {
            clock,
            timeouts,
            sleep: Box::pin(tokio::time::sleep_until(start)),
            seen: None,
            armed: None,
            closing_from: None,
        }
    }

    /// The connection is closing (after a keep-alive expiry, or on drain):
    /// from now on, whenever nothing is in flight, it gets `header_timeout`
    /// to be gone, however long its keep-alive timeout.
    pub fn closing(&mut self) {
        if self.closing_from.is_none() {
            self.closing_from = Some(self.clock.now_ms());
            self.seen = None;
        }
    }

    /// The deadline of `state`; while closing, `header_timeout` from when
    /// closing began (or the phase did, if later).
    fn due(&self, state: State) -> Option<(u64, Expiry)> {
        let (at, why) = deadline(state, self.timeouts)?;
        let Some(from) = self.closing_from else {
            return Some((at, why));
        };
        let linger = u64::try_from(self.timeouts.header.as_millis()).unwrap_or(u64::MAX);
        Some((from.max(state.since_ms).saturating_add(linger), why))
    }

    /// Resolves when the connection's deadline passes, once per deadline.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expiry> {
        loop {
            let word = self.clock.load();
            if self.seen != Some(word) {
                self.seen = Some(word);
                let state = unpack(word);
                match self.due(state) {
                    Some((at_ms, why)) => {
                        let at = self.clock.start + Duration::from_millis(at_ms);
                        if self.sleep.deadline() != at {
                            self.sleep.as_mut().reset(at);
                        }
                        self.armed = Some(why);
                    }
                    None => {
                        self.armed = None;
                        if state.h2 {
                            *self
                                .clock
                                .waker
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
                            // A stream may have finished between the load
                            // and the registration.
                            if self.clock.load() != word {
                                continue;
                            }
                        }
                    }
                }
            }
            let Some(why) = self.armed else {
                return Poll::Pending;
            };
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.clock.load() == word {
                self.armed = None;
                return Poll::Ready(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        keepalive: Duration::from_secs(60),
    };

    fn state(phase: Phase, since_ms: u64, in_flight: u32, h2: bool) -> State {
        State {
            phase,
            since_ms,
            in_flight,
            h2,
        }
    }

    #[test]
    fn transitions() {
        use Event::*;
        use Phase::*;
        let h1 = RequestStarted { h2: false };
        let h2 = RequestStarted { h2: true };
        // (state, event at 500 ms, expected)
        let cases = [
            // Opening: bytes do not restart the clock; a head makes it busy.
            (
                state(Opening, 0, 0, false),
                Bytes,
                state(Opening, 0, 0, false),
            ),
            (state(Opening, 0, 0, false), h1, state(Busy, 500, 1, false)),
            (state(Opening, 0, 0, false), h2, state(Busy, 500, 1, true)),
            // Idle HTTP/1: the first byte starts the head clock, later ones do not.
            (
                state(Idle, 100, 0, false),
                Bytes,
                state(Head, 500, 0, false),
            ),
            (
                state(Head, 100, 0, false),
                Bytes,
                state(Head, 100, 0, false),
            ),
            (state(Head, 100, 0, false), h1, state(Busy, 500, 1, false)),
            // Idle HTTP/2: frames are not request heads.
            (state(Idle, 100, 0, true), Bytes, state(Idle, 100, 0, true)),
            // Busy: more requests keep the phase's start; the last one to
            // finish makes the connection idle from then.
            (state(Busy, 100, 1, true), h2, state(Busy, 100, 2, true)),
            (
                state(Busy, 100, 2, true),
                RequestFinished,
                state(Busy, 100, 1, true),
            ),
            (
                state(Busy, 100, 1, true),
                RequestFinished,
                state(Idle, 500, 0, true),
            ),
            (
                state(Busy, 100, 1, false),
                Bytes,
                state(Busy, 100, 1, false),
            ),
        ];
        for (from, event, want) in cases {
            assert_eq!(next(from, event, 500), want, "{from:?} + {event:?}");
        }
    }

    #[test]
    fn deadlines() {
        use Phase::*;
        let cases = [
            (state(Opening, 0, 0, false), Some((10_000, Expiry::Header))),
            (state(Head, 2_000, 0, false), Some((12_000, Expiry::Header))),
            (
                state(Idle, 2_000, 0, false),
                Some((62_000, Expiry::Keepalive)),
            ),
            (
                state(Idle, 2_000, 0, true),
                Some((62_000, Expiry::Keepalive)),
            ),
            (state(Busy, 2_000, 3, true), None),
        ];
        for (s, want) in cases {
            assert_eq!(deadline(s, T), want, "{s:?}");
        }
    }

    #[test]
    fn packing_round_trips() {
        for phase in [Phase::Opening, Phase::Idle, Phase::Head, Phase::Busy] {
            for (since_ms, in_flight, h2) in [
                (0, 0, false),
                (SINCE_MASK, MAX_IN_FLIGHT, true),
                (12_345, 7, true),
            ] {
                let s = state(phase, since_ms, in_flight, h2);
                assert_eq!(unpack(pack(s)), s);
                assert_eq!(idle_h1(pack(s)), phase == Phase::Idle && !h2, "{s:?}");
            }
        }
    }

    /// A slow head is cut at header_timeout from its first byte, not from
    /// the end of the previous response; an idle connection waits the
    /// keep-alive timeout.
    #[tokio::test(start_paused = true)]
    async fn watchdog_follows_the_clock() {
        let clock = ConnClock::new();
        let mut dog = Watchdog::new(clock.clone(), T);

        // A request arrives at once and is answered 1 s later.
        let request = clock.request_started(false);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(request);
        // Idle for 30 s, then a slow head starts.
        tokio::time::advance(Duration::from_secs(30)).await;
        let early = tokio::time::timeout(
            Duration::ZERO,
            std::future::poll_fn(|cx| dog.poll_expired(cx)),
        );
        assert!(
            early.await.is_err(),
            "an idle connection within its keep-alive"
        );
        clock.bytes();
        let started = Instant::now();
        let why = std::future::poll_fn(|cx| dog.poll_expired(cx)).await;
        assert_eq!(why, Expiry::Header);
        assert_eq!(started.elapsed(), T.header);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire_after_the_keepalive_timeout() {
        let clock = ConnClock::new();
        let mut dog = Watchdog::new(clock.clone(), T);
        drop(clock.request_started(true));
        let idle_from = Instant::now();
        // HTTP/2 frames while idle do not keep the connection open.
        tokio::time::advance(Duration::from_secs(5)).await;
        clock.bytes();
        let why = std::future::poll_fn(|cx| dog.poll_expired(cx)).await;
        assert_eq!(why, Expiry::Keepalive);
        assert_eq!(idle_from.elapsed(), T.keepalive);
    }

    #[tokio::test(start_paused = true)]
    async fn an_opening_connection_gets_the_header_timeout_from_accept() {
        let clock = ConnClock::new();
        let mut dog = Watchdog::new(clock.clone(), T);
        tokio::time::advance(Duration::from_secs(4)).await;
        clock.bytes();
        let why = std::future::poll_fn(|cx| dog.poll_expired(cx)).await;
        assert_eq!(why, Expiry::Header);
        assert_eq!(clock.start.elapsed(), T.header);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_have_no_deadline_until_the_last_stream_ends() {
        let clock = ConnClock::new();
        let mut dog = Watchdog::new(clock.clone(), T);
        let a = clock.request_started(true);
        let b = clock.request_started(true);
        let waiting = tokio::time::timeout(
            Duration::from_secs(600),
            std::future::poll_fn(|cx| dog.poll_expired(cx)),
        );
        assert!(waiting.await.is_err(), "nothing expires while busy");
        drop(a);
        // The last stream ends on another task: the watchdog is woken and
        // counts the keep-alive timeout from then.
        let finisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(b);
        });
        let idle_from = Instant::now() + Duration::from_secs(1);
        let why = std::future::poll_fn(|cx| dog.poll_expired(cx)).await;
        assert_eq!(why, Expiry::Keepalive);
        assert_eq!(Instant::now() - idle_from, T.keepalive);
        finisher.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_connection_lingers_at_most_the_header_timeout() {
        let clock = ConnClock::new();
        let mut dog = Watchdog::new(clock.clone(), T);
        drop(clock.request_started(true));
        assert_eq!(
            std::future::poll_fn(|cx| dog.poll_expired(cx)).await,
            Expiry::Keepalive
        );
        dog.closing();
        let from = Instant::now();
        assert_eq!(
            std::future::poll_fn(|cx| dog.poll_expired(cx)).await,
            Expiry::Keepalive
        );
        assert_eq!(from.elapsed(), T.header);
    }
}
