//! The on-disk object format: a fixed 64-byte header, the metadata, a table
//! of per-block body checksums, then the body.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"EDGEOBJ\n"
//! 8       4     format version (u32 LE) = FORMAT_VERSION
//! 12      4     meta_len (u32 LE)
//! 16      8     body_len (u64 LE)
//! 24      4     block_size (u32 LE) = BLOCK_SIZE
//! 28      4     n_blocks (u32 LE) = ceil(body_len / block_size)
//! 32      8     meta_sum: XXH3-64 of meta ++ block table
//! 40      16    reserved, zero
//! 56      8     header_sum: XXH3-64 of bytes 0..56
//! 64      meta_len       metadata (see `encode_meta`)
//! ..      8 * n_blocks   XXH3-64 of each body block (u64 LE)
//! ..      body_len       body
//! ```
//!
//! Every integer is little-endian. The file length must equal
//! `64 + meta_len + 8 * n_blocks + body_len` exactly; anything else is a
//! truncated or extended file and is treated as corrupt.
//!
//! Why per-block checksums instead of one over the whole body: the body is
//! streamed in blocks, and a block is only handed out after its checksum has
//! been verified, so a corrupt object is never *partly* served either. The
//! header sums cover the metadata and the block table, so together every
//! byte of the file is covered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::age::ResponseTimes;
use crate::cache_control::{FieldScope, ResponseDirectives};
use crate::entry::ObjectHead;
use crate::freshness::{Lifetime, LifetimeSource};
use crate::key::CacheKey;
use crate::vary::{SecondaryKey, VarySpec};

/// Object file magic.
pub const MAGIC: &[u8; 8] = b"EDGEOBJ\n";
/// Version of the object layout above. The store's `FORMAT` file has its
/// own version, which also covers the directory layout (see `disk/mod.rs`);
/// a change of this layout bumps both.
pub const FORMAT_VERSION: u32 = 1;
/// Body block size: 64 KiB, the read size the io_uring measurements used
/// (shared/research/io_uring.md §4.2) and the chunk size bodies stream in.
pub const BLOCK_SIZE: u32 = 64 * 1024;
/// Length of the fixed header.
pub const FIXED_LEN: usize = 64;

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub meta_len: u32,
    pub body_len: u64,
    pub n_blocks: u32,
    pub meta_sum: u64,
}

impl Fixed {
    /// Offset of the first body byte.
    pub fn body_offset(&self) -> u64 {
        FIXED_LEN as u64 + u64::from(self.meta_len) + 8 * u64::from(self.n_blocks)
    }

    /// The exact length the file must have.
    pub fn file_len(&self) -> u64 {
        self.body_offset() + self.body_len
    }
}

/// Why bytes failed to decode (becomes `DiskError::Corrupt`).
pub type Invalid = &'static str;

/// Metadata decoded from an object file: the key and the [`ObjectHead`].
#[derive(Debug, Clone)]
pub struct Meta {
    pub key: String,
    pub secondary: Option<Vec<u8>>,
    pub vary: VarySpec,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub times: ResponseTimes,
    pub lifetime: Lifetime,
    pub directives: ResponseDirectives,
}

/// Number of body blocks for a body of `body_len` bytes.
pub fn n_blocks(body_len: u64) -> u64 {
    body_len.div_ceil(u64::from(BLOCK_SIZE))
}

/// Offset of the first body byte, known before any body byte arrives: the
/// fixed header, `meta_len` metadata bytes and one checksum per block.
pub fn body_offset(meta_len: usize, body_len: u64) -> u64 {
    FIXED_LEN as u64 + meta_len as u64 + 8 * n_blocks(body_len)
}

/// Encodes everything before the body (fixed header, `meta` as made by
/// [`encode_meta`], block table). `sums` holds one checksum per block of a
/// `body_len`-byte body; its length must be [`n_blocks`]`(body_len)`.
pub fn encode_prefix(meta: &[u8], body_len: u64, sums: &[u64]) -> Vec<u8> {
    debug_assert_eq!(sums.len() as u64, n_blocks(body_len));
    let n_blocks = u32::try_from(sums.len()).expect("body under 256 TiB");
    let mut table_bytes = Vec::with_capacity(sums.len() * 8);
    for s in sums {
        table_bytes.extend_from_slice(&s.to_le_bytes());
    }
    let mut h = Xxh3::new();
    h.update(meta);
    h.update(&table_bytes);
    let meta_sum = h.digest();

    let mut out = Vec::with_capacity(FIXED_LEN + meta.len() + table_bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&BLOCK_SIZE.to_le_bytes());
    out.extend_from_slice(&n_blocks.to_le_bytes());
    out.extend_from_slice(&meta_sum.to_le_bytes());
    out.extend_from_slice(&[0u8; 16]);
    let header_sum = xxh3_64(&out[..56]);
    out.extend_from_slice(&header_sum.to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(&table_bytes);
    out
}

/// Computes the per-block checksums of a body fed in chunks of any size,
/// without buffering it: XXH3 is streamed, so only the running state of the
/// current block and the finished sums (8 bytes per 64 KiB) are held.
#[derive(Clone, Default)]
pub struct BlockHasher {
    current: Xxh3,
    filled: usize,
    sums: Vec<u64>,
}

impl BlockHasher {
    /// A hasher expecting about `body_len` bytes (sizes the sums table).
    pub fn with_body_len(body_len: u64) -> BlockHasher {
        BlockHasher {
            sums: Vec::with_capacity(usize::try_from(n_blocks(body_len)).unwrap_or(0)),
            ..BlockHasher::default()
        }
    }

    /// Feeds the next bytes of the body.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = bytes.len().min(BLOCK_SIZE as usize - self.filled);
            self.current.update(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == BLOCK_SIZE as usize {
                self.sums.push(self.current.digest());
                self.current.reset();
                self.filled = 0;
            }
        }
    }

    /// The checksum of every block, the last one possibly short.
    pub fn finish(mut self) -> Vec<u64> {
        if self.filled > 0 {
            self.sums.push(self.current.digest());
        }
        self.sums
    }
}

/// Checksum of one body block: XXH3-64, as [`BlockHasher`] writes it.
///
/// Every disk hit verifies every block it serves, so this is the read
/// path's main cost; twox-hash's XXH3 picks AVX2 at run time, which halves
/// it on CPUs that have it (64 KiB: 2.4 µs against 4.7 µs for the SSE2
/// code a portable build of xxhash-rust gets), with identical values.
pub fn block_sum(block: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(block)
}

/// Parses and checks the fixed header.
pub fn decode_fixed(b: &[u8]) -> Result<Fixed, Invalid> {
    if b.len() < FIXED_LEN {
        return Err("short header");
    }
    if &b[..8] != MAGIC {
        return Err("bad magic");
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    if u64_at(56) != xxh3_64(&b[..56]) {
        return Err("header checksum mismatch");
    }
    if u32_at(8) != FORMAT_VERSION {
        return Err("object format version");
    }
    if u32_at(24) != BLOCK_SIZE {
        return Err("block size");
    }
    let fixed = Fixed {
        meta_len: u32_at(12),
        body_len: u64_at(16),
        n_blocks: u32_at(28),
        meta_sum: u64_at(32),
    };
    if u64::from(fixed.n_blocks) != fixed.body_len.div_ceil(u64::from(BLOCK_SIZE)) {
        return Err("block count");
    }
    Ok(fixed)
}

/// Checks the meta + block table bytes (everything between the fixed header
/// and the body) and decodes them.
pub fn decode_rest(fixed: &Fixed, rest: &[u8]) -> Result<(Meta, Vec<u64>), Invalid> {
    let need = (fixed.body_offset() - FIXED_LEN as u64) as usize;
    if rest.len() < need {
        return Err("short metadata");
    }
    let rest = &rest[..need];
    if xxh3_64(rest) != fixed.meta_sum {
        return Err("metadata checksum mismatch");
    }
    let (meta, table) = rest.split_at(fixed.meta_len as usize);
    let sums = table
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok((decode_meta(meta)?, sums))
}

/// Encodes the metadata of an object: its key and everything in `r`.
pub fn encode_meta(key: &CacheKey, r: &ObjectHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_meta(key, r, &mut out);
    out
}

fn write_meta(key: &CacheKey, r: &ObjectHead, out: &mut Vec<u8>) {
    put_bytes32(out, key.as_str().as_bytes());
    match &r.secondary {
        Some(s) => {
            out.push(1);
            put_bytes32(out, s.as_bytes());
        }
        None => out.push(0),
    }
    match &r.vary {
        VarySpec::Any => out.push(0),
        VarySpec::Fields(f) => {
            out.push(1);
            put_u32(out, f.len() as u32);
            for n in f {
                put_bytes32(out, n.as_str().as_bytes());
            }
        }
    }
    out.extend_from_slice(&r.status.as_u16().to_le_bytes());
    put_u32(out, r.headers.len() as u32);
    for (n, v) in &r.headers {
        put_bytes32(out, n.as_str().as_bytes());
        put_bytes32(out, v.as_bytes());
    }
    put_time(out, r.times.request_time);
    put_time(out, r.times.response_time);
    put_opt(out, r.times.date, put_time);
    put_opt(out, r.times.age_header, put_u64);
    put_duration(out, r.lifetime.ttl);
    out.push(source_tag(r.lifetime.source));
    let d = &r.directives;
    put_opt(out, d.max_age, put_u64);
    put_opt(out, d.s_maxage, put_u64);
    put_scope(out, &d.no_cache);
    put_scope(out, &d.private);
    let flags = [
        d.no_store,
        d.public,
        d.must_revalidate,
        d.proxy_revalidate,
        d.must_understand,
        d.no_transform,
        d.immutable,
    ]
    .iter()
    .enumerate()
    .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i));
    out.push(flags);
    put_opt(out, d.stale_while_revalidate, put_u64);
    put_opt(out, d.stale_if_error, put_u64);
}

fn decode_meta(b: &[u8]) -> Result<Meta, Invalid> {
    let mut r = Reader(b);
    let key = String::from_utf8(r.bytes32()?.to_vec()).map_err(|_| "key not UTF-8")?;
    let secondary = match r.u8()? {
        0 => None,
        1 => Some(r.bytes32()?.to_vec()),
        _ => return Err("secondary tag"),
    };
    let vary = match r.u8()? {
        0 => VarySpec::Any,
        1 => {
            let n = r.u32()?;
            let mut f = Vec::new();
            for _ in 0..n {
                f.push(HeaderName::from_bytes(r.bytes32()?).map_err(|_| "vary name")?);
            }
            VarySpec::Fields(f)
        }
        _ => return Err("vary tag"),
    };
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| "status")?;
    let n = r.u32()?;
    let mut headers = HeaderMap::new();
    for _ in 0..n {
        let name = HeaderName::from_bytes(r.bytes32()?).map_err(|_| "header name")?;
        let value = HeaderValue::from_bytes(r.bytes32()?).map_err(|_| "header value")?;
        headers.append(name, value);
    }
    let times = ResponseTimes {
        request_time: r.time()?,
        response_time: r.time()?,
        date: r.opt(Reader::time)?,
        age_header: r.opt(Reader::u64)?,
    };
    let lifetime = Lifetime {
        ttl: r.duration()?,
        source: source_from_tag(r.u8()?)?,
    };
    let max_age = r.opt(Reader::u64)?;
    let s_maxage = r.opt(Reader::u64)?;
    let no_cache = r.scope()?;
    let private = r.scope()?;
    let f = r.u8()?;
    let bit = |i: u8| f & (1 << i) != 0;
    let directives = ResponseDirectives {
        max_age,
        s_maxage,
        no_cache,
        no_store: bit(0),
        private,
        public: bit(1),
        must_revalidate: bit(2),
        proxy_revalidate: bit(3),
        must_understand: bit(4),
        no_transform: bit(5),
        immutable: bit(6),
        stale_while_revalidate: r.opt(Reader::u64)?,
        stale_if_error: r.opt(Reader::u64)?,
    };
    if !r.0.is_empty() {
        return Err("trailing metadata");
    }
    Ok(Meta {
        key,
        secondary,
        vary,
        status,
        headers,
        times,
        lifetime,
        directives,
    })
}

impl Meta {
    /// The secondary key, rebuilt.
    pub fn secondary_key(&self) -> Option<SecondaryKey> {
        self.secondary.as_deref().map(SecondaryKey::from_bytes)
    }
}

fn source_tag(s: LifetimeSource) -> u8 {
    match s {
        LifetimeSource::Targeted => 0,
        LifetimeSource::SMaxAge => 1,
        LifetimeSource::MaxAge => 2,
        LifetimeSource::Expires => 3,
        LifetimeSource::Heuristic => 4,
        LifetimeSource::DefaultTtl => 5,
        LifetimeSource::None => 6,
    }
}

fn source_from_tag(t: u8) -> Result<LifetimeSource, Invalid> {
    Ok(match t {
        0 => LifetimeSource::Targeted,
        1 => LifetimeSource::SMaxAge,
        2 => LifetimeSource::MaxAge,
        3 => LifetimeSource::Expires,
        4 => LifetimeSource::Heuristic,
        5 => LifetimeSource::DefaultTtl,
        6 => LifetimeSource::None,
        _ => return Err("lifetime source"),
    })
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, u32::try_from(b.len()).expect("field under 4 GiB"));
    out.extend_from_slice(b);
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: fn(&mut Vec<u8>, T)) {
    match v {
        Some(v) => {
            out.push(1);
            put(out, v);
        }
        None => out.push(0),
    }
}

fn put_duration(out: &mut Vec<u8>, d: Duration) {
    put_u64(out, d.as_secs());
    put_u32(out, d.subsec_nanos());
}

/// Times are stored as a signed offset from the Unix epoch: a sign byte,
/// then seconds and nanoseconds of the magnitude.
fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => {
            out.push(0);
            put_duration(out, d);
        }
        Err(e) => {
            out.push(1);
            put_duration(out, e.duration());
        }
    }
}

fn put_scope(out: &mut Vec<u8>, s: &FieldScope) {
    match s {
        FieldScope::Absent => out.push(0),
        FieldScope::All => out.push(1),
        FieldScope::Fields(f) => {
            out.push(2);
            put_u32(out, f.len() as u32);
            for name in f {
                put_bytes32(out, name.as_bytes());
            }
        }
    }
}

/// A bounds-checked cursor: every read returns `Err` instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        if self.0.len() < n {
            return Err("metadata truncated");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Invalid> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, Invalid> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, Invalid> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn bytes32(&mut self) -> Result<&'a [u8], Invalid> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn duration(&mut self) -> Result<Duration, Invalid> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err("nanoseconds");
        }
        Ok(Duration::new(secs, nanos))
    }

    fn time(&mut self) -> Result<SystemTime, Invalid> {
        let sign = self.u8()?;
        let d = self.duration()?;
        let t = match sign {
            0 => UNIX_EPOCH.checked_add(d),
            1 => UNIX_EPOCH.checked_sub(d),
            _ => return Err("time sign"),
        };
        t.ok_or("time out of range")
    }

    fn opt<T>(&mut self, f: fn(&mut Self) -> Result<T, Invalid>) -> Result<Option<T>, Invalid> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err("option tag"),
        }
    }

    fn scope(&mut self) -> Result<FieldScope, Invalid> {
        Ok(match self.u8()? {
            0 => FieldScope::Absent,
            1 => FieldScope::All,
            2 => {
                let n = self.u32()?;
                let mut f = Vec::new();
                for _ in 0..n {
                    let s = std::str::from_utf8(self.bytes32()?).map_err(|_| "scope name")?;
                    f.push(s.to_owned());
                }
                FieldScope::Fields(f)
            }
            _ => return Err("scope tag"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use http::HeaderValue;

    use super::*;
    use crate::vary::secondary_key;

    /// Block sums of `data`, one `xxh3_64` per 64 KiB slice: the reference.
    fn reference_sums(data: &[u8]) -> Vec<u64> {
        data.chunks(BLOCK_SIZE as usize).map(block_sum).collect()
    }

    #[test]
    fn block_sums_are_the_xxh3_that_files_on_disk_carry() {
        // Files written before (and by the streaming writer) hold
        // xxhash-rust's XXH3-64: the reader's sums must be the same values,
        // across XXH3's size classes up to a whole block.
        let data: Vec<u8> = (0..BLOCK_SIZE as usize)
            .map(|i| (i * 31 + i / 97) as u8)
            .collect();
        for len in [
            0, 1, 3, 16, 17, 128, 129, 240, 241, 1024, 4095, 65_535, 65_536,
        ] {
            assert_eq!(
                block_sum(&data[..len]),
                xxh3_64(&data[..len]),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn block_hasher_matches_per_block_sums_for_any_chunking() {
        let data: Vec<u8> = (0..3 * BLOCK_SIZE as usize + 777)
            .map(|i| (i * 7 + i / 300) as u8)
            .collect();
        for sizes in [
            &[1usize][..],
            &[70_000],
            &[65_536],
            &[65_535, 2],
            &[3, 200_000, 1],
        ] {
            let mut h = BlockHasher::with_body_len(data.len() as u64);
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                h.update(&rest[..n]);
                rest = &rest[n..];
                i += 1;
            }
            assert_eq!(h.finish(), reference_sums(&data), "chunks {sizes:?}");
        }
        assert!(BlockHasher::default().finish().is_empty());
        let exact = vec![9u8; BLOCK_SIZE as usize];
        let mut h = BlockHasher::default();
        h.update(&exact);
        assert_eq!(h.finish(), reference_sums(&exact));
    }

    #[test]
    fn prefix_round_trips_and_offsets_are_known_up_front() {
        let mut headers = HeaderMap::new();
        headers.insert("surrogate-key", HeaderValue::from_static("a b"));
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let vary = VarySpec::Fields(vec![]);
        let head = ObjectHead {
            status: StatusCode::OK,
            headers,
            times: ResponseTimes {
                request_time: t,
                response_time: t,
                date: None,
                age_header: None,
            },
            lifetime: Lifetime {
                ttl: Duration::from_secs(60),
                source: LifetimeSource::MaxAge,
            },
            directives: ResponseDirectives::default(),
            secondary: secondary_key(&vary, &HeaderMap::new()),
            vary,
        };
        let key = CacheKey::from_text("https://example.com/x");
        let meta = encode_meta(&key, &head);
        let body_len = u64::from(BLOCK_SIZE) + 5;
        let sums = vec![1, 2];
        let prefix = encode_prefix(&meta, body_len, &sums);
        assert_eq!(prefix.len() as u64, body_offset(meta.len(), body_len));
        let fixed = decode_fixed(&prefix).unwrap();
        assert_eq!(fixed.body_offset(), prefix.len() as u64);
        assert_eq!(fixed.body_len, body_len);
        let (m, got_sums) = decode_rest(&fixed, &prefix[FIXED_LEN..]).unwrap();
        assert_eq!(got_sums, sums);
        assert_eq!(m.key, key.as_str());
        assert_eq!(m.headers, head.headers);
        assert_eq!(m.times, head.times);
        assert_eq!(body_offset(10, 0), FIXED_LEN as u64 + 10);
    }
}
