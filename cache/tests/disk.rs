//! Disk tier integration tests: real files in a temp dir, both backends
//! (io_uring only where the kernel allows it).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edge_cache::age::{ResponseTimes, current_age};
use edge_cache::cache_control::{FieldScope, ResponseDirectives};
use edge_cache::disk::{Backend, BackendChoice, DiskEntryMeta, DiskError, DiskHead, DiskStore};
use edge_cache::entry::StoredResponse;
use edge_cache::freshness::{Lifetime, LifetimeSource};
use edge_cache::key::CacheKey;
use edge_cache::vary::{VarySpec, secondary_key};
use http::{HeaderMap, HeaderValue, StatusCode};

const MIB: u64 = 1024 * 1024;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_654_473_600 + secs)
}

fn response(body: Vec<Bytes>) -> StoredResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.append("x-multi", HeaderValue::from_static("a"));
    headers.append("x-multi", HeaderValue::from_static("b"));
    let vary = VarySpec::Fields(vec![]);
    StoredResponse {
        status: StatusCode::OK,
        headers,
        body,
        times: ResponseTimes {
            request_time: t(0),
            response_time: t(1),
            date: Some(t(0)),
            age_header: Some(5),
        },
        lifetime: Lifetime {
            ttl: Duration::from_secs(600),
            source: LifetimeSource::MaxAge,
        },
        directives: ResponseDirectives {
            max_age: Some(600),
            private: FieldScope::Fields(vec!["set-cookie".into()]),
            stale_while_revalidate: Some(30),
            immutable: true,
            ..Default::default()
        },
        secondary: secondary_key(&vary, &HeaderMap::new()),
        vary,
    }
}

/// A deterministic body of `len` bytes in uneven chunks.
fn body(len: usize, seed: u8) -> Vec<Bytes> {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 16) as u8)
        .collect();
    let mut out = Vec::new();
    let mut rest = &data[..];
    let mut step = 1000;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        out.push(Bytes::copy_from_slice(&rest[..n]));
        rest = &rest[n..];
        step = step * 3 % 100_003 + 17;
    }
    out
}

fn flat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.concat()
}

fn key(n: usize) -> CacheKey {
    CacheKey::from_text(&format!("https://example.com/obj/{n}"))
}

/// The backends to test: blocking always, io_uring when it starts here.
fn backends(dir: &Path) -> Vec<BackendChoice> {
    let mut out = vec![BackendChoice::Blocking];
    match DiskStore::open(dir.join("probe"), MIB, BackendChoice::Uring) {
        Ok(s) => {
            assert_eq!(s.backend(), Backend::Uring);
            out.push(BackendChoice::Uring);
        }
        Err(e) => eprintln!("io_uring not available, testing blocking only: {e}"),
    }
    out
}

async fn read_all(store: &DiskStore, k: &CacheKey) -> Result<(DiskHead, Vec<Bytes>), DiskError> {
    let meta = store
        .lookup(k, &HeaderMap::new())
        .ok_or(DiskError::Missing)?;
    let (head, mut body) = store.read_head(&meta).await?.into_parts();
    let mut chunks = Vec::new();
    while let Some(chunk) = body.next_chunk().await {
        chunks.push(chunk?);
    }
    Ok((head, chunks))
}

fn object_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(root.join("objects")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_5mib_streamed_in_chunks_and_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    for choice in backends(tmp.path()) {
        let root = tmp.path().join(format!("{choice:?}"));
        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        let resp = response(body(5 * MIB as usize + 123, 7));
        let k = key(1);
        store.insert(&k, &resp).await.unwrap();

        let (head, chunks) = read_all(&store, &k).await.unwrap();
        assert!(chunks.len() > 1 && chunks.iter().all(|c| c.len() <= 64 * 1024));
        assert_eq!(flat(&chunks), flat(&resp.body), "{choice:?}");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers, resp.headers);
        assert_eq!(head.times, resp.times);
        assert_eq!(head.lifetime, resp.lifetime);
        assert_eq!(head.directives, resp.directives);
        assert_eq!(head.vary, resp.vary);
        assert_eq!(head.secondary, resp.secondary);
        assert_eq!(head.body_len, resp.body_len());
        let meta = store.lookup(&k, &HeaderMap::new()).unwrap();
        assert_eq!(meta.lifetime, resp.lifetime);
        assert!(store.lookup(&key(2), &HeaderMap::new()).is_none());
        drop(store);

        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        assert_eq!(store.scan_report().objects, 1);
        let (_, chunks) = read_all(&store, &k).await.unwrap();
        assert_eq!(flat(&chunks), flat(&resp.body), "{choice:?} after reopen");
        assert_eq!(store.remove(&k), 1);
        assert!(store.lookup(&k, &HeaderMap::new()).is_none());
        assert!(object_files(&root).is_empty());
    }
}

#[tokio::test]
async fn vary_variants_are_separate_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), 8 * MIB, BackendChoice::Blocking).unwrap();
    let vary = VarySpec::Fields(vec![http::header::ACCEPT_ENCODING]);
    let k = key(1);
    for enc in ["gzip", "br"] {
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", HeaderValue::from_static(enc));
        let mut r = response(vec![Bytes::from(enc)]);
        r.vary = vary.clone();
        r.secondary = secondary_key(&vary, &req);
        store.insert(&k, &r).await.unwrap();
    }
    for enc in ["gzip", "br"] {
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", HeaderValue::from_static(enc));
        let meta = store.lookup(&k, &req).unwrap();
        let (_, mut b) = store.read_head(&meta).await.unwrap().into_parts();
        assert_eq!(b.next_chunk().await.unwrap().unwrap(), enc);
    }
    let mut other = HeaderMap::new();
    other.insert("accept-encoding", HeaderValue::from_static("zstd"));
    assert!(store.lookup(&k, &other).is_none());
    assert_eq!(object_files(tmp.path()).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_corrupt_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    for choice in backends(tmp.path()) {
        let root = tmp.path().join(format!("{choice:?}"));
        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        let resp = response(body(300_000, 3));
        store.insert(&key(1), &resp).await.unwrap();
        let file = object_files(&root).pop().unwrap();
        let mut bytes = fs::read(&file).unwrap();
        let at = bytes.len() - 1000; // inside the last body block
        bytes[at] ^= 0x01;
        fs::write(&file, &bytes).unwrap();

        let err = read_all(&store, &key(1)).await.unwrap_err();
        assert!(
            matches!(err, DiskError::Corrupt { .. }),
            "{choice:?}: {err}"
        );
        assert!(!file.exists());
        assert!(store.lookup(&key(1), &HeaderMap::new()).is_none());
        assert_eq!(store.stats().corrupt, 1);

        // A flipped metadata byte is caught at read_head, and at start-up.
        store.insert(&key(2), &resp).await.unwrap();
        let file = object_files(&root).pop().unwrap();
        let mut bytes = fs::read(&file).unwrap();
        bytes[80] ^= 0x40;
        fs::write(&file, &bytes).unwrap();
        let meta = store.lookup(&key(2), &HeaderMap::new()).unwrap();
        assert!(matches!(
            store.read_head(&meta).await,
            Err(DiskError::Corrupt { .. })
        ));
        assert!(!file.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_file_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    for choice in backends(tmp.path()) {
        let root = tmp.path().join(format!("{choice:?}"));
        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        store
            .insert(&key(1), &response(body(200_000, 1)))
            .await
            .unwrap();
        let file = object_files(&root).pop().unwrap();
        let len = fs::metadata(&file).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let err = read_all(&store, &key(1)).await.unwrap_err();
        assert!(
            matches!(err, DiskError::Corrupt { .. }),
            "{choice:?}: {err}"
        );
        assert!(!file.exists());

        // Truncated while streaming (after read_head passed): the short block
        // is reported Corrupt, never returned.
        store
            .insert(&key(2), &response(body(200_000, 2)))
            .await
            .unwrap();
        let meta = store.lookup(&key(2), &HeaderMap::new()).unwrap();
        let (_, mut b) = store.read_head(&meta).await.unwrap().into_parts();
        let file = object_files(&root).pop().unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let mut got = Vec::new();
        let err = loop {
            match b.next_chunk().await {
                Some(Ok(c)) => got.push(c),
                Some(Err(e)) => break e,
                None => panic!("truncated body streamed to the end"),
            }
        };
        assert!(matches!(err, DiskError::Corrupt { .. }));
        assert!(got.iter().all(|c| c.len() == 64 * 1024));
        assert!(!file.exists());
    }
}

#[tokio::test]
async fn leftover_temp_and_invalid_files_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = DiskStore::open(root, 8 * MIB, BackendChoice::Blocking).unwrap();
    store
        .insert(&key(1), &response(body(1000, 1)))
        .await
        .unwrap();
    drop(store);
    // What kill -9 mid-write leaves: a partial temp file.
    let real = object_files(root).pop().unwrap();
    let partial = real.with_extension("7.tmp");
    fs::write(&partial, &fs::read(&real).unwrap()[..100]).unwrap();
    let junk = root.join("objects/ab/abcd-garbage");
    fs::write(&junk, b"not an object").unwrap();

    let store = DiskStore::open(root, 8 * MIB, BackendChoice::Blocking).unwrap();
    let report = store.scan_report();
    assert_eq!(
        (report.objects, report.temp_removed, report.invalid_removed),
        (1, 1, 1)
    );
    assert!(!partial.exists() && !junk.exists() && real.exists());
    assert!(read_all(&store, &key(1)).await.is_ok());
}

#[tokio::test]
async fn incompatible_version_cleaned_foreign_dir_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let store = DiskStore::open(&root, 8 * MIB, BackendChoice::Blocking).unwrap();
    store
        .insert(&key(1), &response(body(1000, 1)))
        .await
        .unwrap();
    drop(store);
    fs::write(root.join("FORMAT"), "edge-disk-cache 0\n").unwrap();
    fs::write(root.join("old-index"), "x").unwrap();
    let store = DiskStore::open(&root, 8 * MIB, BackendChoice::Blocking).unwrap();
    assert!(store.scan_report().cleaned_incompatible);
    assert_eq!(store.stats().objects, 0);
    assert!(!root.join("old-index").exists());
    assert_eq!(
        fs::read_to_string(root.join("FORMAT")).unwrap(),
        "edge-disk-cache 2\n"
    );

    // A non-empty directory that is not ours, and a file, are refused.
    let foreign = tmp.path().join("home");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("precious.txt"), "x").unwrap();
    let err = DiskStore::open(&foreign, MIB, BackendChoice::Blocking).unwrap_err();
    assert!(matches!(err, DiskError::Unusable { .. }), "{err}");
    assert!(foreign.join("precious.txt").exists());
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = DiskStore::open(&file, MIB, BackendChoice::Blocking).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    // A missing directory is created.
    let fresh = tmp.path().join("a/b/c");
    DiskStore::open(&fresh, MIB, BackendChoice::Blocking).unwrap();
    assert!(fresh.join("FORMAT").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_total_within_size() {
    let tmp = tempfile::tempdir().unwrap();
    for choice in backends(tmp.path()) {
        let root = tmp.path().join(format!("{choice:?}"));
        let size = MIB;
        let store = DiskStore::open(&root, size, choice).unwrap();
        for i in 0..40 {
            store
                .insert(&key(i), &response(body(50_000, i as u8)))
                .await
                .unwrap();
            if i == 5 {
                // Read early and often: S3-FIFO keeps it.
                for _ in 0..3 {
                    store.lookup(&key(0), &HeaderMap::new()).unwrap();
                }
            }
            store.lookup(&key(0), &HeaderMap::new());
            let on_disk: u64 = object_files(&root)
                .iter()
                .map(|f| fs::metadata(f).unwrap().len())
                .sum();
            assert!(on_disk <= size, "{on_disk} > {size}");
            assert_eq!(store.stats().bytes, on_disk);
        }
        assert!(store.stats().evictions > 0);
        assert!(
            store.lookup(&key(0), &HeaderMap::new()).is_some(),
            "hot object kept"
        );
        assert!(
            store.lookup(&key(1), &HeaderMap::new()).is_none(),
            "one-hit wonder evicted"
        );
        let err = store
            .insert(&key(99), &response(body(2 * MIB as usize, 0)))
            .await
            .unwrap_err();
        assert!(matches!(err, DiskError::TooLarge { .. }));
        // Reopening with a smaller size evicts down to it.
        drop(store);
        let store = DiskStore::open(&root, size / 4, choice).unwrap();
        assert!(store.stats().bytes <= size / 4);
    }
}

#[tokio::test]
async fn forced_blocking_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), 8 * MIB, BackendChoice::Blocking).unwrap();
    assert_eq!(store.backend(), Backend::Blocking);
    assert_eq!(store.backend_reason(), "forced by config");
    store
        .insert(&key(1), &response(body(100_000, 1)))
        .await
        .unwrap();
    assert!(read_all(&store, &key(1)).await.is_ok());
}

#[tokio::test]
async fn auto_picks_a_backend_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), 8 * MIB, BackendChoice::Auto).unwrap();
    eprintln!(
        "auto backend: {:?} ({})",
        store.backend(),
        store.backend_reason()
    );
    if store.backend() == Backend::Uring {
        assert_eq!(store.backend_reason(), "ok");
    }
    store
        .insert(&key(1), &response(body(100_000, 1)))
        .await
        .unwrap();
    assert!(read_all(&store, &key(1)).await.is_ok());
}

#[test]
fn open_without_runtime_falls_back_to_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), MIB, BackendChoice::Auto).unwrap();
    assert_eq!(store.backend(), Backend::Blocking);
    assert!(store.backend_reason().contains("runtime"));
}

/// Disk full → writes disabled, counted, store reports itself disabled.
/// Uses a 1 MiB tmpfs when we may mount one (root); skipped otherwise.
#[tokio::test]
async fn full_disk_disables_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("cannot mount a tmpfs here; skipping");
        return;
    }
    let m = mnt.clone();
    let result = async move {
        let mnt = m;
        let store = DiskStore::open(&mnt, 64 * MIB, BackendChoice::Blocking).unwrap();
        let mut failed = None;
        for i in 0..10 {
            if let Err(e) = store.insert(&key(i), &response(body(300_000, 1))).await {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("a 1 MiB tmpfs fills up");
        assert!(matches!(e, DiskError::Io(_)), "{e}");
        assert!(store.is_disabled());
        assert_eq!(store.stats().write_failures, 1);
        assert!(matches!(
            store.insert(&key(50), &response(body(10, 1))).await,
            Err(DiskError::Disabled)
        ));
        // Objects already stored still read back whole.
        assert!(read_all(&store, &key(0)).await.is_ok());
        // No temp file is left behind.
        assert!(
            object_files(&mnt)
                .iter()
                .all(|f| !f.to_string_lossy().ends_with(".tmp"))
        );
    };
    let outcome = tokio::spawn(result).await;
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    outcome.unwrap();
}

/// Start-up scan of 100k small objects (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: writes 100k files"]
async fn startup_scan_100k_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), 4096 * MIB, BackendChoice::Auto).unwrap();
    let resp = response(body(2048, 1));
    let t0 = Instant::now();
    for i in 0..100_000 {
        store.insert(&key(i), &resp).await.unwrap();
    }
    eprintln!(
        "wrote 100k objects in {:?} ({:?})",
        t0.elapsed(),
        store.backend()
    );
    drop(store);
    let store = DiskStore::open(tmp.path(), 4096 * MIB, BackendChoice::Blocking).unwrap();
    let r = store.scan_report();
    assert_eq!(r.objects, 100_000);
    eprintln!(
        "start-up scan: {} objects, {} bytes in {:?}",
        r.objects, r.bytes, r.elapsed
    );
}

// ---- streaming writer -------------------------------------------------------

/// `response` with a Surrogate-Key header (tags) and times of now, so it is
/// fresh for its 600 s lifetime.
fn tagged_response(body: Vec<Bytes>, surrogate_key: &str) -> StoredResponse {
    let mut r = response(body);
    r.headers.insert(
        "surrogate-key",
        HeaderValue::from_str(surrogate_key).unwrap(),
    );
    let now = SystemTime::now();
    r.times = ResponseTimes {
        request_time: now,
        response_time: now,
        date: None,
        age_header: None,
    };
    r
}

fn is_fresh(meta: &DiskEntryMeta) -> bool {
    meta.lifetime
        .is_fresh(current_age(&meta.times, SystemTime::now()))
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    object_files(root)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".tmp"))
        .collect()
}

/// Writes `data` through a writer in chunks cycling through `sizes`.
async fn stream(
    store: &DiskStore,
    k: &CacheKey,
    head: &StoredResponse,
    data: &[u8],
    sizes: &[usize],
) -> Result<(), DiskError> {
    let mut w = store.begin_write(k, &head.head(), data.len() as u64)?;
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        w.write(Bytes::copy_from_slice(&rest[..n])).await?;
        rest = &rest[n..];
        i += 1;
    }
    w.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_write_in_odd_chunks_reads_back_exact() {
    let tmp = tempfile::tempdir().unwrap();
    for choice in backends(tmp.path()) {
        let root = tmp.path().join(format!("{choice:?}"));
        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        let data = flat(&body(3 * MIB as usize + 4321, 9));
        let cases: &[&[usize]] = &[
            &[1],
            &[70_000],
            &[1, 70_000, 0, 3, 65_536, 65_535, 131_072, 17],
            &[65_536],
            &[1_000_000],
        ];
        for (n, sizes) in cases.iter().enumerate() {
            // 1-byte chunks: a shorter body keeps the test quick.
            let data = if sizes == &[1] {
                &data[..200_000]
            } else {
                &data[..]
            };
            let k = key(100 + n);
            let head = response(vec![]);
            stream(&store, &k, &head, data, sizes).await.unwrap();
            let (got_head, chunks) = read_all(&store, &k).await.unwrap();
            assert_eq!(got_head.body_len, data.len() as u64);
            assert!(flat(&chunks) == data, "{choice:?} chunks {sizes:?}");
            assert_eq!(got_head.headers, head.headers);
        }
        // An empty body.
        stream(&store, &key(99), &response(vec![]), &[], &[1])
            .await
            .unwrap();
        let (h, chunks) = read_all(&store, &key(99)).await.unwrap();
        assert_eq!((h.body_len, chunks.len()), (0, 0));
        assert!(temp_files(&root).is_empty());
        drop(store);

        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        assert_eq!(store.scan_report().objects, cases.len() as u64 + 1);
        let (_, chunks) = read_all(&store, &key(101)).await.unwrap();
        assert!(flat(&chunks) == data, "{choice:?} after reopen");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_writer_leaves_nothing_visible() {
    let tmp = tempfile::tempdir().unwrap();
    for choice in backends(tmp.path()) {
        let root = tmp.path().join(format!("{choice:?}"));
        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        let old = response(body(1000, 1));
        store.insert(&key(1), &old).await.unwrap();

        let data = flat(&body(500_000, 2));
        let mut w = store
            .begin_write(&key(1), &response(vec![]).head(), data.len() as u64)
            .unwrap();
        w.write(Bytes::copy_from_slice(&data[..200_000]))
            .await
            .unwrap();
        assert_eq!(temp_files(&root).len(), 1, "the write goes to a temp file");
        drop(w);
        assert!(
            temp_files(&root).is_empty(),
            "{choice:?}: temp file removed"
        );
        // The old version is still the one served.
        let (_, chunks) = read_all(&store, &key(1)).await.unwrap();
        assert_eq!(flat(&chunks), flat(&old.body));

        // A writer dropped before any write, for a new key: nothing at all.
        let w = store
            .begin_write(&key(2), &response(vec![]).head(), 10)
            .unwrap();
        drop(w);
        assert!(store.lookup(&key(2), &HeaderMap::new()).is_none());
        assert_eq!(object_files(&root).len(), 1);
        assert_eq!(store.stats().inserts, 1);
    }
}

/// What `kill -9` mid-write leaves: a temp file (the writer never ran its
/// drop), which the next open deletes; the object never appears.
#[tokio::test]
async fn killed_writer_leaves_only_a_temp_file_cleaned_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = DiskStore::open(root, 8 * MIB, BackendChoice::Blocking).unwrap();
    let data = flat(&body(300_000, 3));
    let mut w = store
        .begin_write(&key(1), &response(vec![]).head(), data.len() as u64)
        .unwrap();
    w.write(Bytes::copy_from_slice(&data[..150_000]))
        .await
        .unwrap();
    std::mem::forget(w); // no destructor, as after kill -9
    assert!(store.lookup(&key(1), &HeaderMap::new()).is_none());
    assert_eq!(temp_files(root).len(), 1);
    drop(store);

    let store = DiskStore::open(root, 8 * MIB, BackendChoice::Blocking).unwrap();
    assert_eq!(store.scan_report().temp_removed, 1);
    assert_eq!(store.scan_report().objects, 0);
    assert!(object_files(root).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_length_mismatch_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for choice in backends(tmp.path()) {
        let root = tmp.path().join(format!("{choice:?}"));
        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        let head = response(vec![]).head();

        // Short: finish refuses.
        let mut w = store.begin_write(&key(1), &head, 100_000).unwrap();
        w.write(Bytes::from(vec![1u8; 99_999])).await.unwrap();
        let err = w.finish().await.unwrap_err();
        assert!(
            matches!(
                err,
                DiskError::BodyLength {
                    expected: 100_000,
                    received: 99_999
                }
            ),
            "{choice:?}: {err}"
        );

        // Long: the write that overflows fails, and the writer is dead.
        let mut w = store.begin_write(&key(2), &head, 10).unwrap();
        w.write(Bytes::from_static(b"12345")).await.unwrap();
        let err = w.write(Bytes::from_static(b"678901")).await.unwrap_err();
        assert!(matches!(
            err,
            DiskError::BodyLength {
                expected: 10,
                received: 11
            }
        ));
        assert!(matches!(
            w.write(Bytes::from_static(b"6")).await,
            Err(DiskError::WriteAbandoned)
        ));
        assert!(matches!(w.finish().await, Err(DiskError::WriteAbandoned)));

        assert!(store.lookup(&key(1), &HeaderMap::new()).is_none());
        assert!(store.lookup(&key(2), &HeaderMap::new()).is_none());
        assert!(object_files(&root).is_empty(), "{choice:?}: no file at all");
        assert_eq!(store.stats().inserts, 0);
    }
}

#[tokio::test]
async fn begin_write_refuses_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), MIB, BackendChoice::Blocking).unwrap();
    let head = response(vec![]).head();
    assert!(matches!(
        store.begin_write(&key(1), &head, 2 * MIB),
        Err(DiskError::TooLarge { .. })
    ));
    let mut any = head.clone();
    any.vary = VarySpec::Any;
    any.secondary = None;
    assert!(matches!(
        store.begin_write(&key(1), &any, 10),
        Err(DiskError::VaryAny)
    ));
    assert!(object_files(tmp.path()).is_empty());
}

// ---- purge ------------------------------------------------------------------

#[tokio::test]
async fn purge_by_key_and_tag_hard_and_soft() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = DiskStore::open(root, 64 * MIB, BackendChoice::Blocking).unwrap();
    let r = |tags: &str| tagged_response(body(100_000, 1), tags);
    store.insert(&key(1), &r("red round")).await.unwrap();
    store.insert(&key(2), &r("red")).await.unwrap();
    store.insert(&key(3), &r("blue")).await.unwrap();
    let mut both = r("blue");
    both.headers
        .insert("cache-tag", HeaderValue::from_static("round,square"));
    store.insert(&key(4), &both).await.unwrap();
    let get = |n| store.lookup(&key(n), &HeaderMap::new());
    assert_eq!(&get(1).unwrap().tags[..], ["red", "round"]);
    assert_eq!(&get(4).unwrap().tags[..], ["blue", "round", "square"]);
    assert!((1..=4).all(|n| is_fresh(&get(n).unwrap())));

    // Soft by tag: stay, but stale; the head read from disk agrees.
    assert_eq!(store.purge_tag("red", true), 2);
    for n in [1, 2] {
        let m = get(n).unwrap();
        assert!(m.purged_at.is_some() && !is_fresh(&m), "key {n}");
        assert!(m.lifetime.ttl < Duration::from_secs(600));
        let obj = store.read_head(&m).await.unwrap();
        assert_eq!(obj.head.purged_at, m.purged_at);
        assert_eq!(obj.head.lifetime, m.lifetime);
    }
    assert!(is_fresh(&get(3).unwrap()) && get(3).unwrap().purged_at.is_none());
    assert!(
        read_all(&store, &key(1)).await.is_ok(),
        "soft-purged body still reads"
    );

    // Hard by tag: gone from the index and the disk.
    assert_eq!(store.purge_tag("round", false), 2);
    assert!(get(1).is_none() && get(4).is_none());
    assert_eq!(object_files(root).len(), 2);
    assert_eq!(store.purge_tag("round", false), 0, "nothing left to purge");
    assert_eq!(
        store.purge_tag("square", true),
        0,
        "other tags of 4 went too"
    );
    assert_eq!(store.purge_tag("nope", true), 0);

    // By key.
    assert_eq!(store.purge_key(&key(3), true), 1);
    assert!(!is_fresh(&get(3).unwrap()));
    assert_eq!(store.purge_key(&key(3), false), 1);
    assert!(get(3).is_none());
    assert_eq!(store.remove(&key(2)), 1, "remove is a hard purge by key");
    assert!(object_files(root).is_empty());
    assert_eq!(store.stats().objects, 0);
    assert_eq!(store.stats().purged, 2 + 2 + 1 + 1 + 1);
}

#[tokio::test]
async fn purge_by_key_takes_every_variant() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DiskStore::open(tmp.path(), 8 * MIB, BackendChoice::Blocking).unwrap();
    let vary = VarySpec::Fields(vec![http::header::ACCEPT_ENCODING]);
    for enc in ["gzip", "br"] {
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", HeaderValue::from_static(enc));
        let mut r = tagged_response(vec![Bytes::from(enc)], "t");
        r.vary = vary.clone();
        r.secondary = secondary_key(&vary, &req);
        store.insert(&key(1), &r).await.unwrap();
    }
    assert_eq!(store.purge_tag("t", true), 2);
    assert_eq!(store.purge_key(&key(1), false), 2);
    assert!(object_files(tmp.path()).is_empty());
}

#[tokio::test]
async fn soft_and_hard_purges_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = DiskStore::open(root, 64 * MIB, BackendChoice::Blocking).unwrap();
    for (n, tags) in [(1, "a"), (2, "a b"), (3, "c"), (4, "d"), (5, "e")] {
        store
            .insert(&key(n), &tagged_response(body(10_000, n as u8), tags))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_tag("a", true), 2);
    assert_eq!(store.purge_key(&key(3), true), 1);
    assert_eq!(store.purge_tag("d", false), 1);
    assert_eq!(store.purge_tag("nothing-has-this", true), 0);
    let before = store.lookup(&key(1), &HeaderMap::new()).unwrap();
    // Refetched after its soft purge: a newer response, fresh again.
    let mut refetched = tagged_response(body(10_000, 9), "c");
    refetched.times.response_time = SystemTime::now() + Duration::from_secs(1);
    store.insert(&key(3), &refetched).await.unwrap();
    assert!(is_fresh(&store.lookup(&key(3), &HeaderMap::new()).unwrap()));
    let journal = fs::read_to_string(root.join("purges")).unwrap();
    assert_eq!(
        journal.lines().count(),
        2,
        "soft purges that matched: {journal}"
    );
    assert!(journal.starts_with("tag ") && journal.contains("\nkey "));
    drop(store);

    let store = DiskStore::open(root, 64 * MIB, BackendChoice::Blocking).unwrap();
    let report = store.scan_report();
    assert_eq!((report.objects, report.soft_purged), (4, 2));
    let get = |n| store.lookup(&key(n), &HeaderMap::new());
    for n in [1, 2] {
        let m = get(n).unwrap();
        assert!(!is_fresh(&m), "key {n} still stale after restart");
        assert!(m.purged_at.is_some());
    }
    assert_eq!(
        get(1).unwrap().lifetime,
        before.lifetime,
        "same cap as before"
    );
    assert!(is_fresh(&get(3).unwrap()), "the refetch is not purged");
    assert!(get(4).is_none(), "hard purge: gone for good");
    assert!(is_fresh(&get(5).unwrap()) && get(5).unwrap().purged_at.is_none());
    // Compaction: the key line matched only the replaced object.
    let journal = fs::read_to_string(root.join("purges")).unwrap();
    assert_eq!(journal.lines().count(), 1, "{journal}");
    assert!(journal.starts_with("tag ") && journal.trim_end().ends_with(" a"));

    // Once nothing it applies to is left, the line goes at the next start.
    assert_eq!(store.purge_tag("a", false), 2);
    drop(store);
    let store = DiskStore::open(root, 64 * MIB, BackendChoice::Blocking).unwrap();
    assert_eq!(store.scan_report().objects, 2);
    assert_eq!(fs::read_to_string(root.join("purges")).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_during_write_wins() {
    let tmp = tempfile::tempdir().unwrap();
    for choice in backends(tmp.path()) {
        let root = tmp.path().join(format!("{choice:?}"));
        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        let data = flat(&body(200_000, 5));
        let head = tagged_response(vec![], "news sport");
        let half = |i: usize| Bytes::copy_from_slice(&data[i * 100_000..(i + 1) * 100_000]);
        // Hard purge by key mid-write (an older version is stored too).
        store
            .insert(&key(1), &tagged_response(body(10, 1), "news"))
            .await
            .unwrap();
        let mut w = store.begin_write(&key(1), &head.head(), 200_000).unwrap();
        w.write(half(0)).await.unwrap();
        assert_eq!(store.purge_key(&key(1), false), 1);
        w.write(half(1)).await.unwrap();
        let err = w.finish().await.unwrap_err();
        assert!(
            matches!(err, DiskError::PurgedDuringWrite),
            "{choice:?}: {err}"
        );
        assert!(store.lookup(&key(1), &HeaderMap::new()).is_none());
        assert!(
            object_files(&root).is_empty(),
            "{choice:?}: no file, no temp"
        );

        // Hard purge by one of its tags.
        let mut w = store.begin_write(&key(2), &head.head(), 200_000).unwrap();
        w.write(half(0)).await.unwrap();
        assert_eq!(store.purge_tag("sport", false), 0, "nothing stored yet");
        w.write(half(1)).await.unwrap();
        assert!(matches!(
            w.finish().await,
            Err(DiskError::PurgedDuringWrite)
        ));
        assert!(store.lookup(&key(2), &HeaderMap::new()).is_none());

        // Soft purge by tag: stored, but stale, and still stale after reopen.
        let mut w = store.begin_write(&key(3), &head.head(), 200_000).unwrap();
        w.write(half(0)).await.unwrap();
        assert_eq!(store.purge_tag("news", true), 0);
        w.write(half(1)).await.unwrap();
        w.finish().await.unwrap();
        let m = store.lookup(&key(3), &HeaderMap::new()).unwrap();
        assert!(m.purged_at.is_some() && !is_fresh(&m), "{choice:?}");

        // Purges of other keys and tags, and purges before begin_write,
        // do not touch a write.
        let mut w = store.begin_write(&key(4), &head.head(), 200_000).unwrap();
        w.write(half(0)).await.unwrap();
        store.purge_tag("other", false);
        store.purge_key(&key(5), false);
        w.write(half(1)).await.unwrap();
        w.finish().await.unwrap();
        assert!(is_fresh(&store.lookup(&key(4), &HeaderMap::new()).unwrap()));
        assert_eq!(
            store.stats().purged,
            3 + 1,
            "two discarded, one stale, one hard"
        );
        drop(store);

        let store = DiskStore::open(&root, 64 * MIB, choice).unwrap();
        let m = store.lookup(&key(3), &HeaderMap::new()).unwrap();
        assert!(
            m.purged_at.is_some() && !is_fresh(&m),
            "{choice:?} after reopen"
        );
        assert!(store.lookup(&key(1), &HeaderMap::new()).is_none());
        assert!(store.lookup(&key(2), &HeaderMap::new()).is_none());
    }
}

#[tokio::test]
async fn tag_index_follows_eviction_replacement_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let size = MIB;
    let store = DiskStore::open(root, size, BackendChoice::Blocking).unwrap();
    for i in 0..40 {
        let tags = if i % 2 == 0 { "even all" } else { "odd all" };
        store
            .insert(&key(i), &tagged_response(body(50_000, i as u8), tags))
            .await
            .unwrap();
    }
    assert!(store.stats().evictions > 0);
    let present = |store: &DiskStore, parity: usize| {
        (0..40)
            .filter(|i| i % 2 == parity)
            .filter(|&i| store.lookup(&key(i), &HeaderMap::new()).is_some())
            .count()
    };
    let (even, odd) = (present(&store, 0), present(&store, 1));
    assert!(even + odd < 40);
    // Replacing an object with one tagged differently moves it.
    let last_even = (0..40)
        .rev()
        .find(|i| i % 2 == 0 && store.lookup(&key(*i), &HeaderMap::new()).is_some())
        .unwrap();
    store
        .insert(&key(last_even), &tagged_response(body(10, 0), "odd all"))
        .await
        .unwrap();
    drop(store);

    let store = DiskStore::open(root, size, BackendChoice::Blocking).unwrap();
    assert_eq!(store.purge_tag("even", true), even - 1);
    assert_eq!(store.purge_tag("odd", true), odd + 1);
    assert_eq!(store.purge_tag("all", false), even + odd);
    assert_eq!(store.stats().objects, 0);
    assert!(object_files(root).is_empty());
}

#[tokio::test]
async fn version_1_store_upgraded_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = DiskStore::open(root, 8 * MIB, BackendChoice::Blocking).unwrap();
    store
        .insert(&key(1), &response(body(1000, 1)))
        .await
        .unwrap();
    drop(store);
    fs::remove_file(root.join("purges")).unwrap();
    fs::write(root.join("FORMAT"), "edge-disk-cache 1\n").unwrap();
    let store = DiskStore::open(root, 8 * MIB, BackendChoice::Blocking).unwrap();
    assert!(!store.scan_report().cleaned_incompatible);
    assert_eq!(store.scan_report().objects, 1);
    assert!(read_all(&store, &key(1)).await.is_ok());
    assert_eq!(
        fs::read_to_string(root.join("FORMAT")).unwrap(),
        "edge-disk-cache 2\n"
    );
}

#[tokio::test]
async fn purge_by_url_covers_keys_with_appended_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = DiskStore::open(root, 8 * MIB, BackendChoice::Blocking).unwrap();
    let url = "https://example.com/page";
    let keys: Vec<CacheKey> = [
        url.to_owned(),
        format!("{url}\nx-device: mobile"),
        format!("{url}\nx-device: desktop"),
        "https://example.com/other\nx-device: mobile".to_owned(),
    ]
    .iter()
    .map(|t| CacheKey::from_text(t))
    .collect();
    for k in &keys {
        store
            .insert(k, &tagged_response(body(1000, 1), "t"))
            .await
            .unwrap();
    }
    assert_eq!(store.purge_url(url, true), 3);
    let stale = |k: &CacheKey| !is_fresh(&store.lookup(k, &HeaderMap::new()).unwrap());
    assert!(keys[..3].iter().all(stale));
    assert!(!stale(&keys[3]));
    drop(store);

    let store = DiskStore::open(root, 8 * MIB, BackendChoice::Blocking).unwrap();
    assert_eq!(store.scan_report().soft_purged, 3);
    assert!(
        fs::read_to_string(root.join("purges"))
            .unwrap()
            .starts_with("url ")
    );
    assert_eq!(store.purge_url(url, false), 3);
    assert_eq!(store.purge_url("https://example.com/other", false), 1);
    assert!(object_files(root).is_empty());
}
