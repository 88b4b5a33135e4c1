//! Disk tier integration tests: real files in a temp dir, both backends
//! (io_uring only where the kernel allows it).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edge_cache::age::ResponseTimes;
use edge_cache::cache_control::{FieldScope, ResponseDirectives};
use edge_cache::disk::{Backend, BackendChoice, DiskError, DiskHead, DiskStore};
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
