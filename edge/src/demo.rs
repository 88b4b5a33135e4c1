//! `edge demo`: two sample origins, a shield node in front of them and an
//! edge that fetches through the shield, on loopback, with a printed tour
//! of things to try. Both nodes run in this process and share its one
//! metrics registry, so the demo's `/metrics` counts the shield's requests
//! too. The edge serves plain
//! HTTP on the chosen port and HTTPS 363 ports above it (8080 → 8443),
//! with a certificate for `localhost` from a CA generated at start; the CA
//! is written to a file so curl can verify against it.
//!
//! The origins serve a small catalogue with the cache headers real sites
//! send (long-lived static files, no-store API answers, a private page, a
//! slow page, a large download), each tagged `X-Origin` so round-robin
//! balancing is visible.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Port of the demo edge on 127.0.0.1.
pub const DEFAULT_PORT: u16 = 8080;

/// Offset of the HTTPS port from the HTTP one: 8080 + 363 = 8443, the
/// conventional pair.
pub const HTTPS_PORT_OFFSET: u16 = 363;

/// Size of `/large.bin`: big enough to see streaming at work.
const LARGE_OBJECT: u64 = 64 * 1024 * 1024;

/// Starts the origins and the edge, prints the tour, runs until Ctrl-C.
pub fn run(port: u16) -> anyhow::Result<()> {
    let https_port = if port == 0 {
        0
    } else {
        port.checked_add(HTTPS_PORT_OFFSET).ok_or_else(|| {
            anyhow::anyhow!(
                "--port {port} leaves no room for the HTTPS port {port}+{HTTPS_PORT_OFFSET}; pick a port below {}",
                u16::MAX - HTTPS_PORT_OFFSET + 1
            )
        })?
    };
    // Removed when the demo exits; the CA file is only good for this run.
    let dir = tempfile::Builder::new().prefix("edge-demo-").tempdir()?;
    let certs = DemoCerts::generate(dir.path())?;
    let origin_a = start_origin("a")?;
    let origin_b = start_origin("b")?;
    // The shield tier: one node, in this process, in front of the origins.
    let shield_toml = format!(
        r#"
[node]
id = "shield-demo"
role = "shield"
workers = 1

[admin]
listen = "127.0.0.1:0"

[[listeners]]
addr = "127.0.0.1:0"

[[sites]]
hosts = ["*"]
pool = "origin"

[pools.origin]
endpoints = ["{origin_a}", "{origin_b}"]
balance = "round-robin"
response_timeout = "10s"
"#
    );
    let shield_config = edge_config::parse(&shield_toml, Path::new("<demo shield config>"))?;
    // Kept until the demo exits; it stops with the process.
    let shield = crate::node::Node::start(&shield_config, None)?;
    let shield_addr = shield.listeners()[0].addr;
    let toml = format!(
        r#"
[node]
id = "edge-demo"
workers = 2
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
addr = "127.0.0.1:{port}"

[[listeners]]
addr = "127.0.0.1:{https_port}"
tls = {{ certs = [{{ cert = {cert:?}, key = {key:?} }}] }}

[[sites]]
hosts = ["*"]
pool = "origin"
shield = "shield"

[pools.shield]
endpoints = ["{shield_addr}"]
balance = "hash"

[pools.origin]
endpoints = ["{origin_a}", "{origin_b}"]
balance = "round-robin"
response_timeout = "10s"
"#,
        cert = certs.cert.display().to_string(),
        key = certs.key.display().to_string(),
    );
    let config = edge_config::parse(&toml, Path::new("<demo config>"))?;
    let served = crate::serve(&config, None, |node| {
        print_tour(
            node.listeners()[0].addr,
            node.listeners()[1].addr,
            node.admin(),
            &certs.ca,
        )
    });
    drop(shield);
    served
}

/// The demo's certificate files.
struct DemoCerts {
    /// The CA certificate, for `curl --cacert`.
    ca: PathBuf,
    /// The server certificate for localhost, 127.0.0.1 and ::1, then the CA.
    cert: PathBuf,
    /// The server certificate's private key (mode 0600).
    key: PathBuf,
}

impl DemoCerts {
    /// Generates a CA and a server certificate signed by it in `dir`.
    fn generate(dir: &Path) -> anyhow::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "edge demo CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer)?;

        let files = DemoCerts {
            ca: dir.join("demo-ca.pem"),
            cert: dir.join("localhost.pem"),
            key: dir.join("localhost.key"),
        };
        std::fs::write(&files.ca, ca_cert.pem())?;
        std::fs::write(&files.cert, cert.pem() + &ca_cert.pem())?;
        write_private(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

/// Writes a file only its owner can read, as a private key should be.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(text.as_bytes())
}

fn print_tour(edge: SocketAddr, https: SocketAddr, admin: SocketAddr, ca: &Path) {
    let https_port = https.port();
    let ca = ca.display();
    println!(
        r#"
edge demo is running: an edge on http://{edge} and https://localhost:{https_port}
that fetches through a shield node (shield-demo) in front of two origins
(a, b). The HTTPS certificate comes from a CA made for this run: {ca}

Try:
  curl -i http://{edge}/hello.txt                      # miss then hit: Cache-Status has one member per hop, and Age
  curl --cacert {ca} https://localhost:{https_port}/hello.txt
  curl -i --http2 --cacert {ca} https://localhost:{https_port}/hello.txt   # HTTP/2 via ALPN
  curl -i http://{edge}/api/time                       # no-store: X-Origin alternates a/b
  curl -i --http2-prior-knowledge http://{edge}/hello.txt
  curl -s http://{edge}/ | head                        # the catalogue
  curl -o /dev/null -w '%{{size_download}} bytes in %{{time_total}}s\n' http://{edge}/large.bin
  curl -i -H 'CDN-Loop: edge-demo' http://{edge}/hello.txt   # 508 loop detected
  curl -i http://{admin}/readyz
  curl -X POST http://{admin}/reload                   # re-read the certificates (also: kill -HUP)
  oha -z 10s -c 64 http://{edge}/hello.txt             # cargo install oha

Ctrl-C stops everything (in-flight requests finish first).
"#
    );
}

/// Starts one sample origin on its own thread; returns its address.
fn start_origin(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("demo-origin-{name}"))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                loop {
                    let (stream, _) = listener.accept().await?;
                    tokio::spawn(async move {
                        let service = service_fn(move |req| async move {
                            Ok::<_, Infallible>(sample(name, &req).await)
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                #[allow(unreachable_code)]
                Ok::<_, std::io::Error>(())
            })
        })?;
    Ok(addr)
}

/// The catalogue: one answer per path, with realistic cache headers.
async fn sample<B>(origin: &'static str, req: &Request<B>) -> Response<DemoBody> {
    let (status, cache_control, content_type, body) = match req.uri().path() {
        "/" => (
            StatusCode::OK,
            "public, max-age=60",
            "text/plain",
            DemoBody::text(CATALOGUE),
        ),
        "/hello.txt" => (
            StatusCode::OK,
            "public, max-age=60",
            "text/plain",
            DemoBody::text(format!("Hello from origin {origin}\n")),
        ),
        "/logo.svg" => (
            StatusCode::OK,
            "public, max-age=86400, immutable",
            "image/svg+xml",
            DemoBody::text(LOGO),
        ),
        "/api/time" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            (
                StatusCode::OK,
                "no-store",
                "application/json",
                DemoBody::text(format!("{{\"unix\":{}}}\n", now.as_secs())),
            )
        }
        "/account" => (
            StatusCode::OK,
            "private, max-age=0",
            "text/plain",
            DemoBody::text("your account page (never shared through a cache)\n"),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (
                StatusCode::OK,
                "public, max-age=30",
                "text/plain",
                DemoBody::text("this page took 2 s at the origin\n"),
            )
        }
        "/large.bin" => (
            StatusCode::OK,
            "public, max-age=3600",
            "application/octet-stream",
            DemoBody::pattern(LARGE_OBJECT),
        ),
        "/health" => (
            StatusCode::OK,
            "no-store",
            "text/plain",
            DemoBody::text("ok\n"),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "public, max-age=10",
            "text/plain",
            DemoBody::text("not found\n"),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-origin", HeaderValue::from_static(origin));
    if req.uri().path() == "/account" {
        headers.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("session=demo; HttpOnly"),
        );
    }
    response
}

const CATALOGUE: &str = "\
/hello.txt   public, max-age=60
/logo.svg    public, max-age=86400, immutable
/api/time    no-store
/account     private, with Set-Cookie
/slow        2 s at the origin, max-age=30
/large.bin   64 MiB, streamed, max-age=3600
";

const LOGO: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"64\" height=\"64\">\
<circle cx=\"32\" cy=\"32\" r=\"30\" fill=\"#f60\"/></svg>\n";

/// A sample body: a short text, or a long byte pattern produced in chunks
/// so the origin never holds the whole object either.
enum DemoBody {
    Text(Option<Bytes>),
    Pattern { remaining: u64, chunk: Bytes },
}

impl DemoBody {
    fn text(text: impl Into<Bytes>) -> Self {
        DemoBody::Text(Some(text.into()))
    }

    fn pattern(len: u64) -> Self {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        DemoBody::Pattern {
            remaining: len,
            chunk: chunk.into(),
        }
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            DemoBody::Text(text) => text.take(),
            DemoBody::Pattern { remaining, chunk } => (*remaining > 0).then(|| {
                let n = (*remaining).min(chunk.len() as u64);
                *remaining -= n;
                chunk.slice(..n as usize)
            }),
        };
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DemoBody::Text(text) => text.is_none(),
            DemoBody::Pattern { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DemoBody::Text(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
            DemoBody::Pattern { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}
