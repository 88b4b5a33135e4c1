//! Watches HTTP/1 request heads on the wire for `Content-Length` together
//! with `Transfer-Encoding`.
//!
//! hyper resolves that ambiguity silently (RFC 9112 §6.3 allows it): it
//! drops `Content-Length`, reads the body as chunked and closes the
//! connection afterwards, so by the time a request reaches the pipeline the
//! evidence is gone. Our contract is stricter: ambiguous framing is refused
//! with 400, as HAProxy and nginx do. [`FramingWatch`] wraps the socket,
//! scans each request head as hyper reads it, and queues one verdict per
//! head that carries `Transfer-Encoding`; the connection layer pops a
//! verdict for each request hyper hands over with that header.
//!
//! The watch follows message boundaries through `Content-Length` bodies.
//! A chunked body ends the watch for the rest of the connection (decoding
//! chunks twice is not worth it for the rare keepalive after an upload):
//! later requests there still get hyper's safe handling, just not the 400.
//! It also stands down on an HTTP/2 preface or anything it cannot follow.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-connection queue of verdicts, one per request head carrying
/// `Transfer-Encoding`: `true` when that head also carried `Content-Length`.
#[derive(Debug, Clone, Default)]
pub struct Verdicts(Arc<Mutex<VecDeque<bool>>>);

impl Verdicts {
    /// Whether the next `Transfer-Encoding` request on this connection had
    /// ambiguous framing. Call once per such request, in order.
    pub fn next_is_ambiguous(&self) -> bool {
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        queue.pop_front().unwrap_or(false)
    }

    fn push(&self, ambiguous: bool) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(ambiguous);
    }
}

/// Longest head we follow; hyper refuses far smaller ones (431).
const MAX_HEAD: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting a request head.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Stopped watching this connection.
    Off,
}

/// The pure scanner: feed it every byte read, in order.
#[derive(Debug)]
struct HeadScanner {
    phase: Phase,
    head: Vec<u8>,
    verdicts: Verdicts,
}

impl HeadScanner {
    fn new(verdicts: Verdicts) -> Self {
        HeadScanner {
            phase: Phase::Head,
            head: Vec::new(),
            verdicts,
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off => return,
                Phase::Body(left) => {
                    let skip = left.min(bytes.len() as u64);
                    bytes = &bytes[skip as usize..];
                    self.phase = if left == skip {
                        Phase::Head
                    } else {
                        Phase::Body(left - skip)
                    };
                }
                Phase::Head => {
                    let Some(end) = head_end(&self.head, bytes) else {
                        self.head.extend_from_slice(bytes);
                        if self.head.len() > MAX_HEAD {
                            self.stand_down();
                        }
                        return;
                    };
                    if self.head.is_empty() {
                        // The whole head arrived in this read: judge it in place.
                        self.phase = judge(&bytes[..end], &self.verdicts);
                    } else {
                        self.head.extend_from_slice(&bytes[..end]);
                        self.phase = judge(&self.head, &self.verdicts);
                        self.head.clear();
                    }
                    bytes = &bytes[end..];
                }
            }
        }
    }

    fn stand_down(&mut self) {
        self.phase = Phase::Off;
        self.head = Vec::new();
    }
}

/// Judges a complete request head, reporting into `verdicts`, and says
/// what follows it.
fn judge(head: &[u8], verdicts: &Verdicts) -> Phase {
    if head.starts_with(b"PRI * HTTP/2.0") {
        return Phase::Off;
    }
    let mut chunked = false;
    let mut length = None;
    let mut rest = head;
    while let Some(lf) = find_lf(rest) {
        rest = &rest[lf + 1..];
        // The line after this `\n`; only `Transfer-Encoding` and
        // `Content-Length` matter here.
        if !matches!(rest.first().map(|b| b | 0x20), Some(b't' | b'c')) {
            continue;
        }
        let line = &rest[..find_lf(rest).unwrap_or(rest.len())];
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match parse_length(value) {
                Some(n) => length = Some(n),
                // hyper answers an invalid length with 400 and closes.
                None => return Phase::Off,
            }
        }
    }
    if chunked {
        verdicts.push(length.is_some());
        // Either the connection closes after this request (ambiguous)
        // or a chunked body follows, which we do not decode.
        return Phase::Off;
    }
    match length {
        Some(n) if n > 0 => Phase::Body(n),
        _ => Phase::Head,
    }
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Where the head ends in `bytes` (just past the blank line), given the
/// head bytes already collected; the terminator may straddle the two.
fn head_end(collected: &[u8], bytes: &[u8]) -> Option<usize> {
    let carry = &collected[collected.len().saturating_sub(3)..];
    let mut window = [0u8; 6];
    let take = bytes.len().min(3);
    window[..carry.len()].copy_from_slice(carry);
    window[carry.len()..carry.len() + take].copy_from_slice(&bytes[..take]);
    if let Some(at) = find_blank_line(&window[..carry.len() + take]) {
        // The terminator cannot lie wholly in `collected`: we would have
        // stopped there on an earlier read.
        return Some((at + 4).saturating_sub(carry.len()));
    }
    find_blank_line(bytes).map(|at| at + 4)
}

/// Where `\r\n\r\n` first starts in `haystack`: jumps from `\n` to `\n`
/// (found a word at a time) instead of comparing at every offset.
fn find_blank_line(haystack: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(rel) = find_lf(&haystack[from..]) {
        let lf = from + rel;
        if lf >= 3 && &haystack[lf - 3..=lf] == b"\r\n\r\n" {
            return Some(lf - 3);
        }
        from = lf + 1;
    }
    None
}

/// The first `\n` in `bytes`, eight bytes per step (SWAR zero-byte test).
fn find_lf(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const LF: u64 = LO * b'\n' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes")) ^ LF;
        // The lowest flagged byte is exactly the first zero byte.
        let zero = word.wrapping_sub(LO) & !word & HI;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i)
}

/// A socket whose inbound bytes pass through a [`HeadScanner`].
#[derive(Debug)]
pub struct FramingWatch<S> {
    inner: S,
    scanner: HeadScanner,
}

impl<S> FramingWatch<S> {
    /// Wraps `inner`, reporting into `verdicts`.
    pub fn new(inner: S, verdicts: Verdicts) -> Self {
        FramingWatch {
            inner,
            scanner: HeadScanner::new(verdicts),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingWatch<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.scanner.observe(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingWatch<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` split at every `step` bytes; returns the verdicts.
    fn verdicts_for(wire: &[u8], step: usize) -> Vec<bool> {
        let verdicts = Verdicts::default();
        let mut scanner = HeadScanner::new(verdicts.clone());
        for chunk in wire.chunks(step) {
            scanner.observe(chunk);
        }
        let queue = verdicts.0.lock().unwrap();
        queue.iter().copied().collect()
    }

    fn every_split(wire: &[u8]) -> Vec<bool> {
        let whole = verdicts_for(wire, wire.len().max(1));
        for step in 1..wire.len() {
            assert_eq!(verdicts_for(wire, step), whole, "split every {step} bytes");
        }
        whole
    }

    #[test]
    fn content_length_with_transfer_encoding_is_ambiguous_in_either_order() {
        let te_first = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        let cl_first = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\nTRANSFER-ENCODING: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(every_split(te_first), [true]);
        assert_eq!(every_split(cl_first), [true]);
    }

    #[test]
    fn chunked_alone_is_fine_and_ends_the_watch() {
        let wire = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(every_split(wire), [false]);
    }

    #[test]
    fn follows_keepalive_requests_through_sized_bodies() {
        // The body of the first request looks like a head; it must be skipped.
        let body = b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        let mut wire = format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(body);
        wire.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        wire.extend_from_slice(b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(every_split(&wire), [true]);
    }

    #[test]
    fn http2_preface_and_bad_lengths_stand_down() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(every_split(h2), Vec::<bool>::new());
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(every_split(bad), Vec::<bool>::new());
    }

    #[test]
    fn next_is_ambiguous_pops_in_order_and_defaults_to_false() {
        let verdicts = Verdicts::default();
        verdicts.push(false);
        verdicts.push(true);
        assert!(!verdicts.next_is_ambiguous());
        assert!(verdicts.next_is_ambiguous());
        assert!(!verdicts.next_is_ambiguous());
    }
}
