//! The disk scenarios: hits served from edge's disk tier, 64 KiB and
//! 1 MiB objects, with the store on io_uring (`edge-uring`) and on the
//! blocking pool (`edge-blocking`) in the same run, nginx (whose
//! proxy_cache is files on disk, sent with sendfile) beside them.
//!
//! Making sure the hits come from disk:
//! - the disk edges' memory tier takes nothing over 32 KiB
//!   (`max_object_size`), so these objects are stored straight to disk and
//!   every hit streams from there (`peers::edge_disk_config`);
//! - each object is requested once, then again until an answer says it
//!   came from disk (`Cache-Status: …; detail=disk`; nginx:
//!   `X-Cache-Status: HIT`) before anything is measured;
//! - while each round runs, a [`Probe`] requests a few objects on its own
//!   connection and checks the same header; a row whose samples were not
//!   all from disk fails its check, like a row whose origin saw requests.
//!
//! [`OBJECTS`] distinct objects are requested in turn (wrk's `request()`
//! rotates over them), so the load is not one hot file. They were just
//! written, so they sit in the page cache: the figures are edge's read
//! path (io_uring submissions or blocking-pool hand-offs, per-block
//! checksums, copies), not the device's speed.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Bench, Row, Target, block_on};
use crate::client;
use crate::load::{Protocol, Rotation};
use crate::peers::{Kind, Peer};

/// Distinct objects per disk scenario: 64 files, 4 MiB (64 KiB each) or
/// 64 MiB (1 MiB each), well inside the disk edges' 1 GiB store.
pub const OBJECTS: u32 = 64;

/// How long warming may take until every object is answered from disk.
const WARM_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between polls while an object is not yet on disk (its file is
/// renamed into place just after the last byte reached the client).
const WARM_POLL: Duration = Duration::from_millis(20);

/// How often the probe samples during a round: ~4 requests a second
/// against thousands from the load generator, so it costs the measured
/// server next to nothing.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Sampled answers kept as examples when they were not from disk.
const EXAMPLES: usize = 3;

/// What an answer must carry to count as a hit from disk storage.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expect {
    /// Lower-case header name.
    header: &'static str,
    /// Text its value must contain.
    contains: &'static str,
}

impl Expect {
    /// edge names the tier in `Cache-Status`; nginx's proxy_cache is on
    /// disk, so any hit of it is one (`X-Cache-Status`, from the harness's
    /// nginx config).
    fn for_peer(kind: Kind) -> Option<Expect> {
        match kind {
            Kind::EdgeDisk(_) => Some(Expect {
                header: "cache-status",
                contains: "detail=disk",
            }),
            Kind::Nginx => Some(Expect {
                header: "x-cache-status",
                contains: "HIT",
            }),
            Kind::Edge | Kind::Varnish => None,
        }
    }

    fn describe(self) -> String {
        format!("{} containing {}", self.header, self.contains)
    }

    /// `Err` says what the answer was instead.
    fn check(self, answer: &client::Answer) -> Result<(), String> {
        let value = answer.header(self.header);
        match &value {
            Some(v) if answer.status == 200 && v.contains(self.contains) => Ok(()),
            _ => Err(format!(
                "status {}, {}: {}",
                answer.status,
                self.header,
                value.as_deref().unwrap_or("(absent)")
            )),
        }
    }
}

/// Answers sampled during the measured rounds of one peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    /// What each answer had to carry.
    pub expected: String,
    /// Requests sent.
    pub checked: u64,
    /// Answers that carried it.
    pub matched: u64,
    /// A few of the others: what they carried, or why the request failed.
    pub examples: Vec<String>,
}

impl Samples {
    fn add(&mut self, other: &Samples) {
        if self.expected.is_empty() {
            self.expected.clone_from(&other.expected);
        }
        self.checked += other.checked;
        self.matched += other.matched;
        for example in &other.examples {
            if self.examples.len() < EXAMPLES {
                self.examples.push(example.clone());
            }
        }
    }
}

/// Samples one peer's answers while a round runs.
pub(super) struct Probe {
    peer: std::net::SocketAddr,
    prefix: &'static str,
    count: u32,
    expect: Expect,
}

impl Probe {
    /// Requests an object every [`SAMPLE_EVERY`] until `stop` fires (or
    /// its sender is dropped), stepping through the objects.
    pub(super) fn sample_until(&self, stop: &mpsc::Receiver<()>) -> Samples {
        let mut samples = Samples {
            expected: self.expect.describe(),
            ..Samples::default()
        };
        // A stride coprime with the object count visits them all in turn.
        let mut object = 0;
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(SAMPLE_EVERY) {
            let path = format!("{}{object}", self.prefix);
            object = (object + 7) % self.count;
            samples.checked += 1;
            let outcome = block_on(client::get(self.peer, &path))
                .map_err(|e| format!("{e:#}"))
                .and_then(|answer| self.expect.check(&answer));
            match outcome {
                Ok(()) => samples.matched += 1,
                Err(why) if samples.examples.len() < EXAMPLES => {
                    samples.examples.push(format!("{path}: {why}"));
                }
                Err(_) => {}
            }
        }
        samples
    }
}

/// Requests every object once (the fill stores it), then again until each
/// answer says it came from disk.
fn warm_to_disk(
    peer: std::net::SocketAddr,
    prefix: &str,
    count: u32,
    expect: Expect,
) -> anyhow::Result<()> {
    block_on(async move {
        for object in 0..count {
            let path = format!("{prefix}{object}");
            let answer = client::get(peer, &path).await?;
            if answer.status != 200 {
                anyhow::bail!("{path}: status {}", answer.status);
            }
        }
        let until = Instant::now() + WARM_DEADLINE;
        for object in 0..count {
            let path = format!("{prefix}{object}");
            loop {
                let answer = client::get(peer, &path).await?;
                let Err(why) = expect.check(&answer) else {
                    break;
                };
                if Instant::now() >= until {
                    anyhow::bail!(
                        "{path} still not a hit from disk after {WARM_DEADLINE:?} ({why})"
                    );
                }
                tokio::time::sleep(WARM_POLL).await;
            }
        }
        Ok(())
    })
}

/// Marks `row` by its samples: every sampled answer must have come from
/// disk, and there must have been some.
pub(super) fn check_samples<'a>(row: &mut Row, rounds: impl Iterator<Item = &'a Samples>) {
    let mut all: Option<Samples> = None;
    for samples in rounds {
        all.get_or_insert_with(Samples::default).add(samples);
    }
    let Some(all) = all else { return };
    if all.checked == 0 {
        row.valid = false;
        row.notes
            .push("no answer was sampled during the rounds: disk hits unverified".into());
    } else if all.matched < all.checked {
        row.valid = false;
        row.notes.push(format!(
            "{} of {} answers sampled during the rounds lacked {}: {}",
            all.checked - all.matched,
            all.checked,
            all.expected,
            all.examples.join("; ")
        ));
    } else {
        row.notes.push(format!(
            "disk hits checked: {}/{} answers sampled during the rounds had {}",
            all.matched, all.checked, all.expected
        ));
    }
    row.disk_samples = Some(all);
}

impl Bench<'_> {
    /// A disk scenario: warm every object onto each peer's disk, warm the
    /// peer up, then the usual interleaved rounds with a probe sampling.
    pub(super) fn disk(
        &self,
        name: &str,
        prefix: &'static str,
        count: u32,
        peers: &[Peer],
        order: &[usize],
    ) -> Vec<Row> {
        let mut targets = Vec::new();
        let mut finished = Vec::new();
        for &i in order {
            let peer = &peers[i];
            let row = Row::new(name, peer.kind.name());
            let Some(expect) = Expect::for_peer(peer.kind) else {
                finished.push(row.skipped("no disk storage to measure"));
                continue;
            };
            if let Err(error) = warm_to_disk(peer.h1, prefix, count, expect) {
                finished.push(row.failed(format!(
                    "warming {count} objects onto disk failed: {error:#}"
                )));
                continue;
            }
            let mut spec = self.spec(peer.h1, &format!("{prefix}0"), Protocol::Http1, false);
            spec.rotate = Some(Rotation {
                prefix: prefix.to_owned(),
                count,
            });
            if let Err(error) = self.warm(&spec) {
                finished.push(row.failed(format!("warm-up failed: {error:#}")));
                continue;
            }
            targets.push(Target {
                row,
                spec,
                pid: Some(peer.pid()),
                probe: Some(Probe {
                    peer: peer.h1,
                    prefix,
                    count,
                    expect,
                }),
                measured: Vec::new(),
            });
        }
        self.rounds(&mut targets);
        let mut rows: Vec<Row> = targets
            .into_iter()
            .map(|target| self.summarise(target, true))
            .collect();
        rows.extend(finished);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)]) -> client::Answer {
        client::Answer {
            status,
            body_len: 0,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_disk_hit_is_named_in_cache_status() {
        let edge = Expect::for_peer(Kind::EdgeDisk(crate::peers::DiskIo::Uring)).unwrap();
        let disk = answer(
            200,
            &[("cache-status", "edge-bench; hit; ttl=3599; detail=disk")],
        );
        let memory = answer(
            200,
            &[("cache-status", "edge-bench; hit; ttl=3599; detail=memory")],
        );
        assert!(edge.check(&disk).is_ok());
        let why = edge.check(&memory).unwrap_err();
        assert!(why.contains("detail=memory"), "{why}");
        assert!(
            edge.check(&answer(200, &[]))
                .unwrap_err()
                .contains("(absent)")
        );
        assert!(Expect::for_peer(Kind::Varnish).is_none());
    }

    #[test]
    fn samples_decide_the_row() {
        let sampled = |checked, matched| Samples {
            expected: "cache-status containing detail=disk".into(),
            checked,
            matched,
            examples: vec!["/disk/1m/3: status 200, cache-status: edge-bench; fwd=uri-miss".into()],
        };
        let mut good = Row::new("disk-1m", "edge-uring");
        check_samples(&mut good, [sampled(8, 8), sampled(9, 9)].iter());
        assert!(good.valid);
        assert_eq!(good.disk_samples.as_ref().map(|s| s.checked), Some(17));

        let mut bad = Row::new("disk-1m", "edge-uring");
        check_samples(&mut bad, [sampled(8, 8), sampled(9, 8)].iter());
        assert!(!bad.valid);
        assert!(bad.notes[0].starts_with("1 of 17"), "{}", bad.notes[0]);

        let mut none = Row::new("disk-1m", "edge-uring");
        check_samples(&mut none, [sampled(0, 0)].iter());
        assert!(!none.valid);

        let mut unprobed = Row::new("hit-1k", "edge");
        check_samples(&mut unprobed, std::iter::empty());
        assert!(unprobed.valid && unprobed.disk_samples.is_none());
    }
}
