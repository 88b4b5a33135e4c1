//! The access log writer: one thread that turns [`RequestRecord`]s into
//! JSON lines and appends them to a file or standard output.
//!
//! Workers never format or write: they hand a record to a bounded channel
//! with `try_send` and go on. When the channel is full (the disk cannot
//! keep up), the record is dropped and counted; the writer reports the
//! count every [`DROP_REPORT_INTERVAL`]. A worker never waits for the log.
//!
//! The writer buffers lines and flushes whenever the channel is momentarily
//! empty, so under load it writes in large blocks and when quiet a `tail -f`
//! sees each line at once. On SIGUSR1 it reopens its file by path (append,
//! create): after logrotate's `mv access.log access.log.1`, new lines go to
//! a new `access.log`. At shutdown it writes what is queued and flushes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edge_config::AccessLogTarget;

use super::record::RequestRecord;

/// How often dropped lines and write errors are reported: often enough to
/// notice, rarely enough that a full disk does not flood the error log.
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Longest pause between batches while lines keep coming: they wait at
/// most this long to become visible in the file, and a busy node's writer
/// wakes at most ~200 times a second instead of once per request.
const MAX_LINGER: Duration = Duration::from_millis(5);

/// The writer's output buffer: many lines per write(2) under load, and
/// larger than any one line (paths and hosts are bounded), so a line is
/// never split across two writes.
const WRITE_BUFFER: usize = 64 * 1024;

/// What the writer thread receives.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "the queue's slots are allocated once up front; boxing the record would cost an allocation per request"
)]
enum Message {
    /// A line to write.
    Record(RequestRecord),
    /// Look at the flags (reopen, close) now.
    Wake,
}

/// State shared by the workers' handles, the node's handle and the writer.
#[derive(Debug, Default)]
struct Shared {
    /// Records dropped because the channel was full (or the writer gone).
    dropped: AtomicU64,
    /// SIGUSR1 arrived: reopen the file before the next line.
    reopen: AtomicBool,
    /// The node is exiting: write what is queued, flush, stop.
    closing: AtomicBool,
}

/// The workers' end of the access log: hands records over without ever
/// blocking. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<Message>,
    shared: Arc<Shared>,
}

impl AccessLog {
    /// A log whose records wait in a queue of `capacity`, and that queue's
    /// receiving end, for [`spawn_writer`].
    fn channel(capacity: usize) -> (AccessLog, Receiver<Message>) {
        let (queue, records) = mpsc::sync_channel(capacity);
        let log = AccessLog {
            queue,
            shared: Arc::default(),
        };
        (log, records)
    }

    /// Queues `record` for the writer; drops and counts it if the queue is
    /// full.
    pub fn submit(&self, record: RequestRecord) {
        match self.queue.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Wakes the writer to look at its flags; if the queue is full the
    /// writer is busy and sees them before its next line anyway.
    fn wake(&self) {
        let _ = self.queue.try_send(Message::Wake);
    }
}

/// The node's end of the access log: reopens and closes it.
#[derive(Debug)]
pub struct AccessLogWriter {
    log: AccessLog,
    reopens: bool,
    /// Disconnects when the writer thread ends.
    finished: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl AccessLogWriter {
    /// Opens the access log of `target` and starts its writer thread;
    /// `None` when the log is off.
    pub fn start(target: &AccessLogTarget, capacity: usize) -> io::Result<Option<Self>> {
        let destination = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Destination::Stdout,
            AccessLogTarget::File(path) => Destination::File(path.clone()),
        };
        let file = destination.open()?;
        let (log, records) = AccessLog::channel(capacity);
        let reopens = matches!(destination, Destination::File(_));
        let (finished_tx, finished) = mpsc::channel();
        let thread = spawn_writer(
            records,
            capacity,
            log.shared.clone(),
            destination,
            file,
            finished_tx,
        )?;
        Ok(Some(AccessLogWriter {
            log,
            reopens,
            finished,
            thread: Some(thread),
        }))
    }

    /// The handle the workers submit records to.
    pub fn log(&self) -> AccessLog {
        self.log.clone()
    }

    /// Reopens the file by its path before the next line (SIGUSR1); a log
    /// on standard output has nothing to reopen.
    pub fn reopen(&self) {
        if self.reopens {
            self.log.shared.reopen.store(true, Ordering::Release);
            self.log.wake();
        }
    }

    /// Writes what is queued, flushes and stops the writer, waiting at most
    /// `deadline` (a disk that hangs must not hang the exit). Returns
    /// whether the writer finished.
    pub fn close(mut self, deadline: Duration) -> bool {
        self.log.shared.closing.store(true, Ordering::Release);
        self.log.wake();
        match self.finished.recv_timeout(deadline) {
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                let dropped = self.log.dropped();
                if dropped > 0 {
                    tracing::warn!(dropped, "access log closed; lines dropped in total");
                }
                true
            }
            Ok(()) | Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    ?deadline,
                    "access log writer did not finish; exiting without it"
                );
                false
            }
        }
    }
}

/// Where lines go.
#[derive(Debug, Clone)]
enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// A handle to write to: the file opened for appending (created if
    /// missing), or a duplicate of fd 1, so the writer never takes the
    /// process's stdout lock that the start-up announcement uses.
    fn open(&self) -> io::Result<File> {
        match self {
            Destination::Stdout => Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?)),
            Destination::File(path) => open_append(path),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
}

/// How long to let lines gather after writing `written` of them that
/// arrived over `period`: at that rate, at most a quarter of the queue's
/// `capacity` fills meanwhile (so lingering never causes drops), and never
/// longer than [`MAX_LINGER`].
fn linger(written: usize, period: Duration, capacity: usize) -> Duration {
    let quarter = (capacity / 4) as f64;
    let secs = period.as_secs_f64() * quarter / written.max(1) as f64;
    Duration::from_secs_f64(secs.min(MAX_LINGER.as_secs_f64()))
}

/// Starts the writer thread on `records`, writing to `file`.
fn spawn_writer(
    records: Receiver<Message>,
    capacity: usize,
    shared: Arc<Shared>,
    destination: Destination,
    file: File,
    finished: mpsc::Sender<()>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("edge-access-log".into())
        .spawn(move || {
            Writer {
                out: BufWriter::with_capacity(WRITE_BUFFER, file),
                destination,
                capacity,
                shared,
                line: Vec::with_capacity(512),
                reported_drops: 0,
                write_errors: 0,
            }
            .run(&records);
            drop(finished);
        })
}

/// The writer thread's state.
struct Writer {
    out: BufWriter<File>,
    destination: Destination,
    /// Size of the queue, which bounds how long to let lines gather.
    capacity: usize,
    shared: Arc<Shared>,
    /// The line being formatted, reused.
    line: Vec<u8>,
    /// Drops already reported.
    reported_drops: u64,
    /// Failed writes since the last report.
    write_errors: u64,
}

impl Writer {
    fn run(&mut self, records: &Receiver<Message>) {
        let mut next_report = Instant::now() + DROP_REPORT_INTERVAL;
        // When the queue was last seen empty: the lines of the next batch
        // arrived since then.
        let mut emptied = Instant::now();
        let mut written = 0usize;
        loop {
            loop {
                match records.try_recv() {
                    Ok(message) => written += self.handle(message),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        self.report();
                        return;
                    }
                }
            }
            // Momentarily empty: make what we have visible.
            self.flush();
            if self.shared.closing.load(Ordering::Acquire) {
                break;
            }
            let now = Instant::now();
            if now >= next_report {
                self.report();
                next_report = now + DROP_REPORT_INTERVAL;
            }
            if written > 0 {
                // Busy: let the next lines gather while we sleep, rather
                // than be woken (a futex call on the worker's side) for
                // each one.
                let linger = linger(written, now - emptied, self.capacity);
                emptied = now;
                written = 0;
                std::thread::sleep(linger);
                continue;
            }
            emptied = now;
            match records.recv_timeout(next_report.saturating_duration_since(now)) {
                Ok(message) => written += self.handle(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.flush();
        self.report();
    }

    /// Acts on one message; returns the lines written (0 or 1).
    fn handle(&mut self, message: Message) -> usize {
        if self.shared.reopen.swap(false, Ordering::AcqRel) {
            self.reopen();
        }
        match message {
            Message::Record(record) => {
                self.write(&record);
                1
            }
            Message::Wake => 0,
        }
    }

    fn write(&mut self, record: &RequestRecord) {
        self.line.clear();
        record.write_json(&mut self.line);
        if self.out.write_all(&self.line).is_err() {
            self.write_errors += 1;
        }
    }

    fn flush(&mut self) {
        if let Err(error) = self.out.flush() {
            self.write_errors += 1;
            tracing::debug!(%error, "access log flush failed");
        }
    }

    /// Switches to a freshly opened file at the same path; on failure keeps
    /// writing to the old one, so no line is lost to a bad rotation.
    fn reopen(&mut self) {
        let Destination::File(path) = self.destination.clone() else {
            return;
        };
        self.flush();
        match open_append(&path) {
            Ok(file) => {
                self.out = BufWriter::with_capacity(WRITE_BUFFER, file);
                tracing::info!(path = %path.display(), "access log reopened");
            }
            Err(error) => {
                tracing::error!(%error, "access log not reopened; still writing to the old file");
            }
        }
    }

    /// Warns about lines dropped and writes failed since the last report.
    fn report(&mut self) {
        let total = self.shared.dropped.load(Ordering::Relaxed);
        let dropped = total - self.reported_drops;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                total,
                "access log queue full; lines dropped (raise [log] access_buffer or use a faster disk)"
            );
            self.reported_drops = total;
        }
        if self.write_errors > 0 {
            tracing::warn!(
                failed = self.write_errors,
                "access log writes failed (disk full or file gone?)"
            );
            self.write_errors = 0;
        }
    }
}

/// A log whose queue a test reads directly, without a writer thread.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// The receiving end of a test log.
    pub(crate) struct Queue(Receiver<Message>);

    impl Queue {
        /// The next queued record, if any.
        pub(crate) fn try_recv(&self) -> Option<RequestRecord> {
            match self.0.try_recv().ok()? {
                Message::Record(record) => Some(record),
                Message::Wake => self.try_recv(),
            }
        }
    }

    /// A log of `capacity` records and its queue.
    pub(crate) fn queue(capacity: usize) -> (AccessLog, Queue) {
        let (log, records) = AccessLog::channel(capacity);
        (log, Queue(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::record::RequestRecord;
    use std::time::SystemTime;

    fn record(n: u64) -> RequestRecord {
        RequestRecord {
            started_at: SystemTime::now(),
            client: "127.0.0.1:4000".parse().unwrap(),
            scheme: "http",
            method: http::Method::GET,
            text: crate::observe::record::RequestText::new(None, Some("/t"), None),
            version: http::Version::HTTP_11,
            status: Some(http::StatusCode::OK),
            bytes: n,
            duration: Duration::ZERO,
            upstream: None,
            cache: None,
            aborted: false,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        // No writer runs yet: the queue of 2 fills and stays full.
        let (log, records) = AccessLog::channel(2);
        for n in 0..10 {
            log.submit(record(n));
        }
        assert_eq!(log.dropped(), 8);

        // The writer then writes exactly the two that were queued.
        let file = open_append(&path).unwrap();
        let (finished_tx, finished) = mpsc::channel();
        let thread = spawn_writer(
            records,
            2,
            log.shared.clone(),
            Destination::File(path.clone()),
            file,
            finished_tx,
        )
        .unwrap();
        let writer = AccessLogWriter {
            log: log.clone(),
            reopens: true,
            finished,
            thread: Some(thread),
        };
        assert!(writer.close(Duration::from_secs(10)));
        let written = lines(&path);
        let bytes: Vec<_> = written
            .iter()
            .map(|l| l["bytes"].as_u64().unwrap())
            .collect();
        assert_eq!(bytes, [0, 1]);
        // With the writer gone, further records are counted as dropped too.
        log.submit(record(10));
        assert_eq!(log.dropped(), 9);
    }

    #[test]
    fn reopen_follows_the_path_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        let writer = AccessLogWriter::start(&AccessLogTarget::File(path.clone()), 64)
            .unwrap()
            .unwrap();
        let log = writer.log();
        log.submit(record(1));
        // Lines are flushed when the queue empties, so this is prompt.
        assert!(edge_test_support::wait_until(
            Duration::from_secs(10),
            || { std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 1) }
        ));
        std::fs::rename(&path, &rotated).unwrap();
        writer.reopen();
        log.submit(record(2));
        assert!(writer.close(Duration::from_secs(10)));
        let before: Vec<_> = lines(&rotated).iter().map(|l| l["bytes"].clone()).collect();
        let after: Vec<_> = lines(&path).iter().map(|l| l["bytes"].clone()).collect();
        assert_eq!(before, [1]);
        assert_eq!(after, [2]);
    }

    #[test]
    fn lingering_lets_at_most_a_quarter_of_the_queue_fill() {
        let ms = Duration::from_millis;
        // 100 lines in 10 ms with room for 8192: linger the most.
        assert_eq!(linger(100, ms(10), 8192), MAX_LINGER);
        // 1000 lines in 1 ms with room for 1024: 256 more take 0.256 ms.
        assert_eq!(linger(1000, ms(1), 1024), Duration::from_micros(256));
        // A queue of 1..3 has no quarter to spare: no lingering at all.
        assert_eq!(linger(1, ms(1), 3), Duration::ZERO);
        assert_eq!(linger(0, Duration::ZERO, 8192), Duration::ZERO);
    }

    #[test]
    fn an_unopenable_file_fails_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("access.log");
        let error = AccessLogWriter::start(&AccessLogTarget::File(path.clone()), 8).unwrap_err();
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        assert!(
            AccessLogWriter::start(&AccessLogTarget::Off, 8)
                .unwrap()
                .is_none()
        );
    }
}
