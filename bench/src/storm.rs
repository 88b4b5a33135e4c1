//! The coalescing storm: [`STORM_REQUESTS`] clients ask for one cold object
//! at the same moment, while the origin takes [`crate::origin::SLOW_DELAY`]
//! to answer. A cache that coalesces makes one origin request; the harness
//! counts them.
//!
//! All connections are opened first, then every request is written in one
//! burst, so the requests really are concurrent and connection set-up does
//! not spread them out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::client;

/// Concurrent requests in a storm.
pub const STORM_REQUESTS: usize = 1000;

/// The origin's `/slow/` body is 1 KiB: a shorter answer was cut short.
const BODY_LEN: usize = 1024;

/// What a storm saw from the client side.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormResult {
    /// Requests sent.
    pub sent: usize,
    /// 200 answers received.
    pub ok: usize,
    /// Failed requests (connect/read errors, timeouts, non-200), first few named.
    pub failed: usize,
    /// The first failures, for the report.
    pub failures: Vec<String>,
    /// From the burst to the last answer, ms.
    pub wall_ms: f64,
    /// Median answer time, ms.
    pub p50_ms: f64,
    /// Slowest answer, ms.
    pub max_ms: f64,
}

/// Runs one storm against `addr` for `path`.
pub fn run(addr: SocketAddr, path: &str) -> anyhow::Result<StormResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("storm: building its runtime")?;
    runtime.block_on(storm(addr, path))
}

async fn storm(addr: SocketAddr, path: &str) -> anyhow::Result<StormResult> {
    let request = client::request_bytes(addr, path);
    let mut connecting = Vec::with_capacity(STORM_REQUESTS);
    for _ in 0..STORM_REQUESTS {
        connecting.push(tokio::spawn(TcpStream::connect(addr)));
    }
    let mut streams = Vec::with_capacity(STORM_REQUESTS);
    let mut failures = Vec::new();
    for connect in connecting {
        match connect.await {
            Ok(Ok(stream)) => streams.push(stream),
            Ok(Err(error)) => failures.push(format!("connect: {error}")),
            Err(error) => failures.push(format!("connect task: {error}")),
        }
    }

    let burst = Instant::now();
    let mut answers = Vec::with_capacity(streams.len());
    for stream in streams {
        let request = request.clone();
        answers.push(tokio::spawn(async move {
            let answer =
                tokio::time::timeout(client::REQUEST_TIMEOUT, client::exchange(stream, &request))
                    .await;
            (answer, burst.elapsed())
        }));
    }
    let mut times: Vec<Duration> = Vec::with_capacity(answers.len());
    let mut ok = 0;
    for answer in answers {
        match answer.await {
            Ok((Ok(Ok(answer)), took)) if answer.status == 200 && answer.body_len >= BODY_LEN => {
                ok += 1;
                times.push(took);
            }
            Ok((Ok(Ok(answer)), _)) => failures.push(format!(
                "status {} with {} body bytes",
                answer.status, answer.body_len
            )),
            Ok((Ok(Err(error)), _)) => failures.push(format!("{error:#}")),
            Ok((Err(_), _)) => failures.push(format!("no answer in {:?}", client::REQUEST_TIMEOUT)),
            Err(error) => failures.push(format!("request task: {error}")),
        }
    }
    let wall_ms = burst.elapsed().as_secs_f64() * 1e3;
    times.sort_unstable();
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let failed = failures.len();
    failures.truncate(3);
    Ok(StormResult {
        sent: STORM_REQUESTS,
        ok,
        failed,
        failures,
        wall_ms,
        p50_ms: ms(times.get(times.len() / 2)),
        max_ms: ms(times.last()),
    })
}
