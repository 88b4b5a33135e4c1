//! The soft-purge journal: `<root>/purges`, one text line per soft purge,
//! appended before the purge call returns, replayed and compacted by the
//! start-up scan. Hard purges need no journal: they unlink the files.
//!
//! ```text
//! <kind> <unix seconds>.<nanoseconds, 9 digits> <value>\n
//! key 1764412345.000000123 https://example.com/a?b=1
//! url 1764412345.200000000 https://example.com/a?b=1
//! tag 1764412345.500000000 product-42
//! ```
//!
//! `kind` is `key` (value: the [`CacheKey`] text form), `url` (value: the
//! URL part of keys, [`CacheKey::url`]) or `tag` (value: the tag). The value is the rest of the line, with `%`, LF and CR written
//! `%25`, `%0A`, `%0D` (a key with appended request headers contains LF;
//! nothing else needs escaping). The time is the store's clock when the
//! purge was issued, with full precision so replay compares it exactly.
//!
//! Why a journal rather than rewriting object headers: a tag may match
//! thousands of objects, and a soft purge must not cost a write per object
//! on the caller's thread; one short append is enough.
//!
//! # Replay
//!
//! A line applies to each object it matches whose `response_time` is at
//! or before the line's time: that response was received before the purge,
//! so it is the content the purge meant to invalidate. A response received
//! after the purge is a refetch and stays fresh. The object's purge time is
//! the earliest line that applies.
//!
//! # Compaction
//!
//! At start-up the file is rewritten (temp file + rename) with only the
//! lines that applied to a remaining object, whenever some line did not:
//! a line that matched nothing can only apply to objects received before
//! it, and none is left (writes in flight did not survive the restart).
//! So the journal stays bounded by the objects it keeps stale.
//!
//! # Damage
//!
//! A line that does not parse, and a last line without its LF (a crash in
//! mid-append), are dropped with a warning and removed by the rewrite.
//! Like the objects, the journal is not fsynced: a power loss may forget
//! the latest soft purges (the objects come back fresh); a crash of the
//! process alone does not, as the line is in the page cache before the
//! purge returns.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::purge::PurgeTarget;
use crate::key::CacheKey;

/// File name of the journal in the store root.
pub const FILE_NAME: &str = "purges";

/// One soft purge: what it selected and when it was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// What the purge selected.
    pub target: PurgeTarget,
    /// When it was issued (the store's clock).
    pub at: SystemTime,
}

/// The line's text, LF included.
pub fn encode(line: &Line) -> String {
    let (kind, value) = match &line.target {
        PurgeTarget::Key(k) => ("key", k.as_str()),
        PurgeTarget::Url(u) => ("url", u.as_str()),
        PurgeTarget::Tag(t) => ("tag", t.as_str()),
    };
    // A clock before 1970 is broken; 0 keeps the line parseable.
    let d = line.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{kind} {}.{:09} {}\n",
        d.as_secs(),
        d.subsec_nanos(),
        escape(value)
    )
}

/// Parses one line (without its LF); `None` if it is malformed.
pub fn decode(text: &str) -> Option<Line> {
    let mut parts = text.splitn(3, ' ');
    let kind = parts.next()?;
    let time = parts.next()?;
    let value = unescape(parts.next()?)?;
    let (secs, nanos) = time.split_once('.')?;
    if nanos.len() != 9 || !nanos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = Duration::new(secs.parse().ok()?, nanos.parse().ok()?);
    let at = UNIX_EPOCH.checked_add(d)?;
    let target = match kind {
        "key" => PurgeTarget::Key(CacheKey::from_text(&value)),
        "url" => PurgeTarget::Url(value),
        "tag" if !value.is_empty() => PurgeTarget::Tag(value),
        _ => return None,
    };
    Some(Line { target, at })
}

/// Parses a whole journal: the valid lines, and how many were dropped
/// (malformed, or a last line cut short without its LF).
pub fn parse(content: &[u8]) -> (Vec<Line>, usize) {
    let mut lines = Vec::new();
    let mut dropped = 0;
    let mut rest = content;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            dropped += 1; // torn final append
            break;
        };
        let line = std::str::from_utf8(&rest[..end]).ok().and_then(decode);
        match line {
            Some(l) => lines.push(l),
            None => dropped += 1,
        }
        rest = &rest[end + 1..];
    }
    (lines, dropped)
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "0A" => '\n',
            "0D" => '\r',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Applies journal lines to the objects found by the start-up scan and
/// remembers which lines are still needed (see the module docs).
pub struct Replay {
    lines: Vec<Line>,
    by_key: HashMap<String, Vec<usize>>,
    by_url: HashMap<String, Vec<usize>>,
    by_tag: HashMap<String, Vec<usize>>,
    used: Vec<bool>,
}

impl Replay {
    /// Indexes `lines` by key, URL and tag.
    pub fn new(lines: Vec<Line>) -> Replay {
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_url: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_tag: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, l) in lines.iter().enumerate() {
            let (map, value) = match &l.target {
                PurgeTarget::Key(k) => (&mut by_key, k.as_str()),
                PurgeTarget::Url(u) => (&mut by_url, u.as_str()),
                PurgeTarget::Tag(t) => (&mut by_tag, t.as_str()),
            };
            map.entry(value.to_owned()).or_default().push(i);
        }
        let used = vec![false; lines.len()];
        Replay {
            lines,
            by_key,
            by_url,
            by_tag,
            used,
        }
    }

    /// When an object with this key, these tags and this response time was
    /// soft-purged (the earliest line that applies), or `None`.
    pub fn purged_at(
        &mut self,
        key: &CacheKey,
        tags: &[String],
        response_time: SystemTime,
    ) -> Option<SystemTime> {
        let candidates = self
            .by_key
            .get(key.as_str())
            .into_iter()
            .chain(self.by_url.get(key.url()))
            .chain(tags.iter().filter_map(|t| self.by_tag.get(t)))
            .flatten();
        let mut earliest: Option<SystemTime> = None;
        for &i in candidates {
            let at = self.lines[i].at;
            if response_time <= at {
                self.used[i] = true;
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        earliest
    }

    /// Number of lines replayed.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// The lines that applied to at least one object, in journal order.
    pub fn into_kept(self) -> Vec<Line> {
        self.lines
            .into_iter()
            .zip(self.used)
            .filter_map(|(l, used)| used.then_some(l))
            .collect()
    }
}

/// Reads the journal at `path`; a missing file is an empty journal.
pub fn read(path: &Path) -> io::Result<(Vec<Line>, usize)> {
    match fs::read(path) {
        Ok(content) => Ok(parse(&content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Vec::new(), 0)),
        Err(e) => Err(e),
    }
}

/// Replaces the journal at `path` with `lines` (temp file + rename, so a
/// crash leaves the old or the new journal, never a mix).
pub fn rewrite(path: &Path, lines: &[Line]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let text: String = lines.iter().map(encode).collect();
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// The journal open for appending.
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (or creates) the journal at `path` for appending.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one line with a single `write` (O_APPEND), so lines never
    /// interleave. Blocking, but a short buffered write.
    pub fn append(&mut self, line: &Line) -> io::Result<()> {
        self.file.write_all(encode(line).as_bytes())
    }

    /// The journal's path, for logs.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::t;

    fn key_line(k: &str, at: SystemTime) -> Line {
        Line {
            target: PurgeTarget::Key(CacheKey::from_text(k)),
            at,
        }
    }

    fn tag_line(tag: &str, at: SystemTime) -> Line {
        Line {
            target: PurgeTarget::Tag(tag.into()),
            at,
        }
    }

    #[test]
    fn lines_round_trip_exactly() {
        let at = t(5) + Duration::from_nanos(123);
        for line in [
            key_line("https://example.com/a?b=1", at),
            key_line("https://example.com/100%25 off\naccept-language: en", at),
            key_line("https://example.com/%0A\r", at),
            tag_line("product-42", at),
            Line {
                target: PurgeTarget::Url("https://example.com/a b%".into()),
                at,
            },
            tag_line("café", t(0)),
        ] {
            let text = encode(&line);
            assert!(
                text.ends_with('\n') && text.matches('\n').count() == 1,
                "{text:?}"
            );
            assert_eq!(decode(text.trim_end_matches('\n')), Some(line));
        }
        assert_eq!(
            encode(&tag_line("x", UNIX_EPOCH + Duration::new(17, 5))),
            "tag 17.000000005 x\n"
        );
    }

    #[test]
    fn malformed_and_torn_lines_dropped() {
        let good = encode(&tag_line("a", t(1)));
        let content = format!(
            "{good}bogus 1.000000000 x\ntag 1.5 x\ntag 1.000000000 %zz\ntag 1.000000000 \n{good}tag 1.0000"
        );
        let (lines, dropped) = parse(content.as_bytes());
        assert_eq!(lines, vec![tag_line("a", t(1)), tag_line("a", t(1))]);
        assert_eq!(dropped, 5);
        assert_eq!(parse(b""), (vec![], 0));
    }

    #[test]
    fn replay_applies_to_responses_received_before_and_keeps_used_lines() {
        let k = CacheKey::from_text("https://example.com/a");
        let lines = vec![
            key_line(k.as_str(), t(100)),
            tag_line("t", t(50)),
            tag_line("unused", t(100)),
            key_line("https://example.com/other", t(100)),
            Line {
                target: PurgeTarget::Url("https://example.com/h".into()),
                at: t(100),
            },
        ];
        let mut r = Replay::new(lines.clone());
        assert_eq!(r.line_count(), 5);
        // Received before both: the earliest applies.
        assert_eq!(r.purged_at(&k, &["t".into()], t(10)), Some(t(50)));
        // Received between: only the later key purge.
        assert_eq!(r.purged_at(&k, &["t".into()], t(60)), Some(t(100)));
        // Received at the purge time counts as before it.
        assert_eq!(r.purged_at(&k, &[], t(100)), Some(t(100)));
        // Received after: a refetch, fresh.
        assert_eq!(r.purged_at(&k, &["t".into()], t(101)), None);
        let other = CacheKey::from_text("https://example.com/b");
        assert_eq!(r.purged_at(&other, &[], t(0)), None);
        // A URL line covers the keys of that URL with appended headers.
        let with_header = CacheKey::from_text("https://example.com/h\nx-device: m");
        assert_eq!(r.purged_at(&with_header, &[], t(0)), Some(t(100)));
        let kept = r.into_kept();
        assert_eq!(kept[..2], lines[..2]);
        assert_eq!(kept[2], lines[4]);
        assert_eq!(kept.len(), 3);
    }

    #[test]
    fn append_rewrite_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(read(&path).unwrap(), (vec![], 0));
        let mut j = Journal::open(&path).unwrap();
        j.append(&tag_line("a", t(1))).unwrap();
        j.append(&key_line("https://x/\nh: v", t(2))).unwrap();
        drop(j);
        let (lines, dropped) = read(&path).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(lines.len(), 2);
        rewrite(&path, &lines[1..]).unwrap();
        assert_eq!(read(&path).unwrap(), (lines[1..].to_vec(), 0));
        assert!(!path.with_extension("tmp").exists());
    }
}
