//! The TLS scenarios' pieces: a generated CA and ECDSA P-256 server
//! certificate that every TLS peer serves, and the handshake-churn client.
//!
//! The churn client runs as a child process (`edge-bench __tls-churn …`),
//! so it is pinned and accounted like any other load tool. Every request
//! opens a new TCP connection and does a full TLS 1.3 handshake: rustls
//! with resumption disabled (no tickets, no session ids), X25519 only (the
//! group nginx's OpenSSL 3.0 offers too, so both servers do the same
//! work), verifying the server against the generated CA. It prints the
//! same `EDGE-BENCH …` line as the wrk hook.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Certificate files in the harness's temp dir.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed `cert` (for the churn client).
    pub ca: PathBuf,
    /// Server certificate (ECDSA P-256, SAN localhost and 127.0.0.1).
    pub cert: PathBuf,
    /// Its PKCS#8 key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Generates a CA and a server certificate signed by it in `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<TlsFiles> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            PKCS_ECDSA_P256_SHA256,
        };
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "edge-bench CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer)?;
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("localhost.pem"),
            key: dir.join("localhost.key"),
        };
        std::fs::write(&files.ca, ca_cert.pem())?;
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}

/// The hidden subcommand's name.
pub const CHURN: &str = "__tls-churn";

/// `edge-bench __tls-churn URL SECS CONNECTIONS THREADS CA`: new TLS
/// connection per request for SECS; prints the `EDGE-BENCH` line.
pub fn churn_main(args: &[String]) -> ExitCode {
    match churn(args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{CHURN}: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    connect: u64,
    read: u64,
    status: u64,
    latencies_us: Vec<u64>,
}

fn churn(args: &[String]) -> anyhow::Result<String> {
    let [url, secs, connections, threads, ca] = args else {
        anyhow::bail!("usage: {CHURN} URL SECS CONNECTIONS THREADS CA");
    };
    let rest = url
        .strip_prefix("https://")
        .context("the URL must be https://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr: std::net::SocketAddr = authority.parse().context("URL host must be IP:port")?;
    let duration = Duration::from_secs(secs.parse()?);
    let connections: usize = connections.parse()?;
    let threads: usize = threads.parse::<usize>()?.clamp(1, connections.max(1));
    let config = Arc::new(client_config(Path::new(ca))?);
    let request: Arc<[u8]> = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nUser-Agent: edge-bench\r\n\r\n"
    )
    .into_bytes()
    .into();

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let share = connections / threads + usize::from(t < connections % threads);
            let (config, request, stop) = (config.clone(), request.clone(), stop.clone());
            std::thread::spawn(move || -> anyhow::Result<Tally> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let tasks: Vec<_> = (0..share)
                        .map(|_| {
                            let (config, request, stop) =
                                (config.clone(), request.clone(), stop.clone());
                            tokio::spawn(connection_loop(addr, config, request, stop))
                        })
                        .collect();
                    let mut tally = Tally::default();
                    for task in tasks {
                        let t = task.await?;
                        tally.ok += t.ok;
                        tally.connect += t.connect;
                        tally.read += t.read;
                        tally.status += t.status;
                        tally.latencies_us.extend(t.latencies_us);
                    }
                    Ok(tally)
                })
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut all = Tally::default();
    for worker in workers {
        let t = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        all.ok += t.ok;
        all.connect += t.connect;
        all.read += t.read;
        all.status += t.status;
        all.latencies_us.extend(t.latencies_us);
    }
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.latencies_us.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * all.latencies_us.len() as f64).ceil() as usize;
        all.latencies_us[rank.clamp(1, all.latencies_us.len()) - 1]
    };
    Ok(format!(
        "EDGE-BENCH requests={} duration_us={} connect={} read={} write=0 status={} timeout=0 p50_us={} p99_us={}",
        all.ok,
        elapsed.as_micros(),
        all.connect,
        all.read,
        all.status,
        pct(50.0),
        pct(99.0)
    ))
}

/// rustls client: TLS 1.3, X25519, no resumption, the generated CA.
fn client_config(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        ..provider
    };
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.context("CA PEM")?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One client slot: connect, handshake, one request, read to close; again.
async fn connection_loop(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: Arc<[u8]>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
    let mut tally = Tally::default();
    let mut body = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let tcp = match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => tcp,
            Err(_) => {
                tally.connect += 1;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut tls = match connector.connect(name.clone(), tcp).await {
            Ok(tls) => tls,
            Err(_) => {
                tally.connect += 1;
                continue;
            }
        };
        body.clear();
        let answered = async {
            tls.write_all(&request).await?;
            // Read to the close; a peer that closes without close_notify
            // is fine once the answer is in.
            match tls.read_to_end(&mut body).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !body.is_empty() => {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        .await;
        if answered.is_err() {
            // A round that ends mid-request is the deadline, not a failure.
            if !stop.load(Ordering::Relaxed) {
                tally.read += 1;
            }
            continue;
        }
        if body.starts_with(b"HTTP/1.1 200") {
            tally.ok += 1;
            tally.latencies_us.push(start.elapsed().as_micros() as u64);
        } else {
            tally.status += 1;
        }
    }
    tally
}
