//! TLS termination end to end, with real clients: curl (HTTP/1.1 and
//! HTTP/2), `openssl s_client` and a rustls client, against the real edge
//! binary with certificates from a private CA generated per test (rcgen).
//!
//! Covers certificate choice by SNI (exact, wildcard, default), protocol
//! versions and ALPN, resumption within one process and across two that
//! share a ticket key file, hot reload under load (and a broken
//! replacement), the handshake timeout, the site `redirect_https` and
//! `hsts` keys, and the demo's HTTPS listener.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use edge_test_support::{EdgeProcess, Origin, wait_until};
use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long any one client command may run before the test calls it hung.
const COMMAND_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Certificates

/// A private CA that signs leaf certificates into a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
    ca_der: CertificateDer<'static>,
    ca_file: PathBuf,
}

/// A leaf certificate written to disk; `cn` tells certificates apart in
/// openssl's output, `der` in the rustls client's.
#[derive(Clone, Debug)]
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    cn: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("edge-tls-test-")
            .tempdir()
            .unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "edge test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki {
            ca_der: ca.der().clone(),
            dir,
            ca_key,
            ca_params,
            ca_file,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Signs a leaf with common name `cn` for `names` and writes it to
    /// `<stem>.pem` and `<stem>.key` (mode 0600), replacing any earlier one.
    fn leaf(&self, stem: &str, cn: &str, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let (cert_pem, der) = self.sign(cn, names, &key);
        let leaf = Leaf {
            cert: self.path(&format!("{stem}.pem")),
            key: self.path(&format!("{stem}.key")),
            der,
            cn: cn.to_owned(),
        };
        std::fs::write(&leaf.cert, cert_pem).unwrap();
        write_private(&leaf.key, &key.serialize_pem());
        leaf
    }

    fn sign(
        &self,
        cn: &str,
        names: &[&str],
        key: &rcgen::KeyPair,
    ) -> (String, CertificateDer<'static>) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(key, &issuer).unwrap();
        (cert.pem(), cert.der().clone())
    }

    /// A leaf whose key openssl generates in the given PEM flavour
    /// (`genpkey` args) and converts with `pkey` args, e.g. `-traditional`
    /// for PKCS#1 RSA or SEC1 EC keys.
    fn leaf_with_openssl_key(
        &self,
        stem: &str,
        cn: &str,
        names: &[&str],
        genpkey: &[&str],
    ) -> Leaf {
        let pkcs8 = self.path(&format!("{stem}.pkcs8"));
        let key_file = self.path(&format!("{stem}.key"));
        run_ok(
            Command::new("openssl")
                .arg("genpkey")
                .args(genpkey)
                .arg("-out")
                .arg(&pkcs8),
        );
        run_ok(
            Command::new("openssl")
                .args(["pkey", "-traditional", "-in"])
                .arg(&pkcs8)
                .arg("-out")
                .arg(&key_file),
        );
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&pkcs8).unwrap()).unwrap();
        let (cert_pem, der) = self.sign(cn, names, &key);
        let cert = self.path(&format!("{stem}.pem"));
        std::fs::write(&cert, cert_pem).unwrap();
        Leaf {
            cert,
            key: key_file,
            der,
            cn: cn.to_owned(),
        }
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

// ---------------------------------------------------------------------------
// Edge configs

/// `tls = { ... }` for these leaves (the one at `default`, if any, marked
/// default), plus `extra` keys.
fn tls_table(leaves: &[&Leaf], default: Option<usize>, extra: &str) -> String {
    let certs: Vec<String> = leaves
        .iter()
        .enumerate()
        .map(|(i, leaf)| {
            format!(
                "{{ cert = {:?}, key = {:?}{} }}",
                leaf.cert.display().to_string(),
                leaf.key.display().to_string(),
                if Some(i) == default {
                    ", default = true"
                } else {
                    ""
                }
            )
        })
        .collect();
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!("{{ certs = [{}]{extra} }}", certs.join(", "))
}

/// Listener 0 plain, listener 1 TLS with `tls`; `admin` lines go into
/// `[admin]`, `sites` replaces the default `*` site when not empty.
fn config(origin: &Origin, tls: &str, admin: &str, sites: &str) -> String {
    let sites = if sites.is_empty() {
        "[[sites]]\nhosts = [\"*\"]\npool = \"origin\"\n"
    } else {
        sites
    };
    format!(
        r#"
[node]
id = "edge-tls"
workers = 2
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"
{admin}

[[listeners]]
addr = "127.0.0.1:0"

[[listeners]]
addr = "127.0.0.1:0"
tls = {tls}

{sites}

[pools.origin]
endpoints = ["{}"]
"#,
        origin.addr()
    )
}

fn start(origin: &Origin, tls: &str) -> EdgeProcess {
    EdgeProcess::start(edge_bin(), &config(origin, tls, "", ""))
}

// ---------------------------------------------------------------------------
// Clients

/// Runs `command` to completion within [`COMMAND_DEADLINE`], feeding it
/// `stdin`; returns (success, stdout + stderr).
fn run(command: &mut Command, stdin: &[u8]) -> (bool, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    // A client may exit before reading all of it (a refused handshake).
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // Collect on a thread so a full pipe never stalls the child.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let Ok(output) = finished.recv_timeout(COMMAND_DEADLINE) else {
        // SAFETY: kill(2) on our own unreaped child; touches no memory.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("{command:?} still running after {COMMAND_DEADLINE:?}");
    };
    let output = output.unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn run_ok(command: &mut Command) -> String {
    let (ok, output) = run(command, b"");
    assert!(ok, "{command:?} failed:\n{output}");
    output
}

/// `openssl s_client` to `addr` with `args`, sending an HTTP/1.1 request
/// that closes the connection (so the session tickets sent after the
/// handshake are read before it exits).
fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let request = b"GET /s_client HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    run(
        Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-ign_eof"])
            .args(args),
        request,
    )
}

/// The subject CN of the certificate `s_client` printed.
fn subject_cn(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let subject = line.strip_prefix("subject=")?;
        let cn = subject.split("CN").nth(1)?;
        Some(
            cn.trim_start_matches([' ', '='])
                .split(',')
                .next()?
                .trim()
                .to_owned(),
        )
    })
}

/// Accepts any server certificate, so a test can look at which one the
/// server chose for names the certificate does not cover; signatures are
/// still checked.
#[derive(Debug)]
struct AcceptAnyName(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyName {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls client that verifies against `pki`'s CA (or, with `None`,
/// accepts any name), offers `alpn`, and never resumes, so every handshake
/// shows the server's current certificate.
fn client(pki: Option<&Pki>, alpn: &[&[u8]]) -> TlsConnector {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let mut config = match pki {
        Some(pki) => {
            let mut roots = RootCertStore::empty();
            roots.add(pki.ca_der.clone()).unwrap();
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyName(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// Handshakes with `addr`, sending `sni` (none for `None`: rustls sends no
/// SNI for an IP address).
async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).unwrap(),
        None => ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    connector.connect(name, tcp).await
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server sent certificates")[0]
        .clone()
}

/// The CN of whichever of `leaves` the server presented.
fn which<'a>(der: &CertificateDer<'_>, leaves: &[&'a Leaf]) -> &'a str {
    leaves
        .iter()
        .find(|leaf| leaf.der == *der)
        .map(|leaf| leaf.cn.as_str())
        .unwrap_or("<unknown certificate>")
}

/// One HTTP/1.1 request on a TLS stream; returns the status.
async fn get_over(
    sender: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    path: &str,
) -> Result<u16, hyper::Error> {
    let req = Request::get(path)
        .header("host", "localhost")
        .body(empty())
        .unwrap();
    let response = sender.send_request(req).await?;
    let answer = collect(response).await;
    Ok(answer.status())
}

async fn http1_over(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake over TLS");
    tokio::spawn(conn);
    sender
}

/// `POST /reload` on the admin API with an optional bearer token; returns
/// (status, body).
async fn admin_reload(admin: SocketAddr, token: Option<&str>) -> (u16, String) {
    let mut req = Request::post("/reload").header("host", "admin");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let answer = send(admin, req.body(empty()).unwrap()).await;
    (answer.status(), answer.text())
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn curl_over_http1_and_http2_through_the_same_pipeline() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", "site", &["localhost"]);
    let origin = Origin::start();
    let edge = start(&origin, &tls_table(&[&leaf], None, ""));
    let https = edge.listeners()[1];
    let port = https.port();

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let path = format!("/curl-{version}?header=cache-control:no-store");
        let output = run_ok(
            Command::new("curl")
                .args(["-sS", "--fail", flag, "--cacert"])
                .arg(&pki.ca_file)
                .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                .args(["-w", "\nversion=%{http_version}\n"])
                .arg(format!("https://localhost:{port}{path}")),
        );
        assert!(
            output.contains(&format!("origin /curl-{version}")),
            "{output}"
        );
        assert!(output.contains(&format!("version={version}")), "{output}");
        let seen = origin
            .last_request(&format!("/curl-{version}"))
            .expect("origin saw the request");
        assert_eq!(seen.headers["x-forwarded-proto"], "https", "{flag}");
    }

    // The plain listener still says http.
    let output = run_ok(Command::new("curl").args([
        "-sS",
        "--fail",
        &format!("http://{}/plain?header=cache-control:no-store", edge.addr()),
    ]));
    assert!(output.contains("origin /plain"), "{output}");
    assert_eq!(
        origin.last_request("/plain").unwrap().headers["x-forwarded-proto"],
        "http"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_by_sni_exact_then_wildcard_then_default() {
    let pki = Pki::new();
    let first = pki.leaf("first", "first", &["first.test"]);
    let exact = pki.leaf_with_openssl_key(
        "exact",
        "exact",
        &["a.test", "www.a.test"],
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let wildcard = pki.leaf_with_openssl_key(
        "wildcard",
        "wildcard",
        &["*.wild.test"],
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let fallback = pki.leaf("fallback", "fallback", &["fallback.test"]);
    // PKCS#1 RSA and SEC1 EC keys load as well as rcgen's PKCS#8 ones.
    for leaf in [&exact, &wildcard] {
        let text = std::fs::read_to_string(&leaf.key).unwrap();
        assert!(
            text.starts_with("-----BEGIN RSA PRIVATE KEY")
                || text.starts_with("-----BEGIN EC PRIVATE KEY"),
            "{text}"
        );
    }
    let leaves = [&first, &exact, &wildcard, &fallback];
    let origin = Origin::start();
    let edge = start(&origin, &tls_table(&leaves, Some(3), ""));
    let https = edge.listeners()[1];

    let cases = [
        (Some("a.test"), "exact"),
        (Some("WWW.A.test"), "exact"),
        (Some("first.test"), "first"),
        (Some("x.wild.test"), "wildcard"),
        // A wildcard covers one label: neither the parent nor two labels.
        (Some("wild.test"), "fallback"),
        (Some("a.b.wild.test"), "fallback"),
        (Some("unknown.test"), "fallback"),
        (None, "fallback"),
    ];
    let connector = client(None, &[b"http/1.1"]);
    for (sni, want) in cases {
        let stream = connect(&connector, https, sni).await.unwrap();
        assert_eq!(
            which(&peer_leaf(&stream), &leaves),
            want,
            "rustls, SNI {sni:?}"
        );
    }

    let openssl_cases = [
        (vec!["-servername", "a.test"], "exact"),
        (vec!["-servername", "x.wild.test"], "wildcard"),
        (vec!["-servername", "nobody.test"], "fallback"),
        (vec!["-noservername"], "fallback"),
    ];
    for (args, want) in openssl_cases {
        let (_, output) = tokio::task::block_in_place(|| s_client(https, &args));
        assert_eq!(
            subject_cn(&output).as_deref(),
            Some(want),
            "openssl {args:?}:\n{output}"
        );
    }

    // A verifying client accepts the chosen certificate for its name.
    let verifying = client(Some(&pki), &[b"http/1.1"]);
    let stream = connect(&verifying, https, Some("x.wild.test"))
        .await
        .unwrap();
    let mut sender = http1_over(stream).await;
    assert_eq!(get_over(&mut sender, "/sni").await.unwrap(), 200);
}

#[test]
fn only_tls_1_2_and_1_3_are_spoken() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", "site", &["localhost"]);
    let origin = Origin::start();
    let edge = start(&origin, &tls_table(&[&leaf], None, ""));
    let https = edge.listeners()[1];
    let ca = pki.ca_file.display().to_string();

    for (flag, protocol) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (ok, output) = s_client(https, &[flag, "-servername", "localhost", "-CAfile", &ca]);
        assert!(ok, "{output}");
        assert!(
            output.contains(&format!("New, {protocol}, Cipher is")),
            "{output}"
        );
        assert!(output.contains("Verify return code: 0 (ok)"), "{output}");
    }

    // SECLEVEL=0 lets OpenSSL 3 offer TLS 1.1 at all; edge must refuse it.
    for flag in ["-tls1_1", "-tls1"] {
        let (ok, output) = s_client(
            https,
            &[
                flag,
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
                "-servername",
                "localhost",
            ],
        );
        assert!(!ok, "{flag} handshake succeeded:\n{output}");
        assert!(
            output.contains("alert"),
            "{flag}: no alert from edge:\n{output}"
        );
        assert!(output.contains("Cipher is (NONE)"), "{output}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alpn_negotiates_h2_and_http1_1() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", "site", &["localhost"]);
    let origin = Origin::start();
    let edge = start(&origin, &tls_table(&[&leaf], None, ""));
    let https = edge.listeners()[1];

    // h2 preferred when offered, and served as HTTP/2.
    let stream = connect(
        &client(Some(&pki), &[b"http/1.1", b"h2"]),
        https,
        Some("localhost"),
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://localhost/h2?header=cache-control:no-store")
        .body(empty())
        .unwrap();
    let answer = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.head.version, http::Version::HTTP_2);
    assert_eq!(answer.text(), "origin /h2\n");

    // http/1.1 only, or no ALPN at all: HTTP/1.1.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let stream = connect(&client(Some(&pki), alpn), https, Some("localhost"))
            .await
            .unwrap();
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(negotiated, alpn.first().map(|p| p.to_vec()));
        let mut sender = http1_over(stream).await;
        assert_eq!(get_over(&mut sender, "/h1").await.unwrap(), 200);
    }

    // A client offering only protocols edge does not speak is refused.
    let refused = connect(&client(Some(&pki), &[b"spdy/3"]), https, Some("localhost")).await;
    assert!(refused.is_err(), "handshake with only spdy/3 succeeded");

    let (_, output) = tokio::task::block_in_place(|| {
        s_client(https, &["-alpn", "h2", "-servername", "localhost"])
    });
    assert!(output.contains("ALPN protocol: h2"), "{output}");
}

#[test]
fn sessions_resume_by_ticket_and_by_session_id() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", "site", &["localhost"]);
    let origin = Origin::start();
    let edge = start(&origin, &tls_table(&[&leaf], None, ""));
    let https = edge.listeners()[1];

    let cases: [(&str, &[&str]); 3] = [
        ("TLSv1.3", &["-tls1_3"]),
        ("TLSv1.2", &["-tls1_2"]),
        // No ticket: TLS 1.2 resumes from the server-side session cache.
        ("TLSv1.2", &["-tls1_2", "-no_ticket"]),
    ];
    for (i, (protocol, flags)) in cases.iter().enumerate() {
        let session = pki.path(&format!("session-{i}"));
        let session = session.to_str().unwrap();
        let mut args = flags.to_vec();
        args.extend(["-servername", "localhost", "-sess_out", session]);
        let (ok, first) = s_client(https, &args);
        assert!(
            ok && first.contains(&format!("New, {protocol}")),
            "{flags:?}:\n{first}"
        );
        let mut args = flags.to_vec();
        args.extend(["-servername", "localhost", "-sess_in", session]);
        let (ok, second) = s_client(https, &args);
        assert!(ok, "{second}");
        assert!(
            second.contains(&format!("Reused, {protocol}")),
            "{flags:?}: not resumed:\n{second}"
        );
    }
}

#[test]
fn two_processes_sharing_a_ticket_key_file_resume_each_others_sessions() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", "site", &["localhost"]);
    let ticket_key = pki.path("ticket.key");
    let mut secret = [0u8; 48];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut secret)
        .unwrap();
    std::fs::write(&ticket_key, secret).unwrap();
    let shared = tls_table(
        &[&leaf],
        None,
        &format!("ticket_key_file = {:?}", ticket_key.display().to_string()),
    );
    let origin = Origin::start();
    let a = start(&origin, &shared);
    let b = start(&origin, &shared);
    let separate = start(&origin, &tls_table(&[&leaf], None, ""));

    for protocol in ["-tls1_3", "-tls1_2"] {
        let session = pki.path(&format!("session{protocol}"));
        let session = session.to_str().unwrap();
        let (ok, first) = s_client(
            a.listeners()[1],
            &[protocol, "-servername", "localhost", "-sess_out", session],
        );
        assert!(ok && first.contains("New, TLS"), "{first}");
        let (_, on_b) = s_client(
            b.listeners()[1],
            &[protocol, "-servername", "localhost", "-sess_in", session],
        );
        assert!(
            on_b.contains("Reused, TLS"),
            "{protocol}: B did not resume A's session:\n{on_b}"
        );
        // Control: a process with its own random ticket keys cannot.
        let (_, elsewhere) = s_client(
            separate.listeners()[1],
            &[protocol, "-servername", "localhost", "-sess_in", session],
        );
        assert!(
            elsewhere.contains("New, TLS"),
            "{protocol}: resumed without the key:\n{elsewhere}"
        );
    }
}

/// Connection outcomes of the rotation load: which certificate each new
/// handshake saw, and when it started relative to the reload.
#[derive(Default)]
struct LoadLog {
    requests: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
    /// (handshake started at, certificate CN).
    handshakes: std::sync::Mutex<Vec<(Instant, String)>>,
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_under_load_without_a_failed_request() {
    /// Clients of the bounded load, and the most requests each may send.
    const CLIENTS: usize = 4;
    const MAX_PER_CLIENT: usize = 500;
    const TOKEN: &str = "rotate-me";

    let pki = Pki::new();
    let v1 = pki.leaf("site", "v1", &["localhost"]);
    let origin = Origin::start();
    let edge = EdgeProcess::start(
        edge_bin(),
        &config(
            &origin,
            &tls_table(&[&v1], None, ""),
            &format!("token = {TOKEN:?}"),
            "",
        ),
    );
    let https = edge.listeners()[1];
    let admin = edge.admin();

    // A connection made before the rotation, kept alive across it.
    let connector = client(Some(&pki), &[b"http/1.1"]);
    let early = connect(&connector, https, Some("localhost")).await.unwrap();
    let early_leaf = peer_leaf(&early);
    let mut early = http1_over(early).await;
    assert_eq!(get_over(&mut early, "/early").await.unwrap(), 200);

    let log = Arc::new(LoadLog::default());
    let stop = Arc::new(AtomicBool::new(false));
    let v2 = Arc::new(std::sync::Mutex::new(None::<Leaf>));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (log, stop, connector, v1) = (log.clone(), stop.clone(), connector.clone(), v1.clone());
        let v2 = v2.clone();
        clients.push(tokio::spawn(async move {
            for n in 0..MAX_PER_CLIENT {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let started = Instant::now();
                let outcome = async {
                    let stream = connect(&connector, https, Some("localhost"))
                        .await
                        .map_err(|e| format!("handshake: {e}"))?;
                    let der = peer_leaf(&stream);
                    let cn = if der == v1.der {
                        "v1".to_owned()
                    } else if v2.lock().unwrap().as_ref().is_some_and(|l| l.der == der) {
                        "v2".to_owned()
                    } else {
                        "unknown".to_owned()
                    };
                    log.handshakes.lock().unwrap().push((started, cn));
                    let mut sender = http1_over(stream).await;
                    let status = get_over(&mut sender, &format!("/load/{c}/{n}"))
                        .await
                        .map_err(|e| format!("request: {e}"))?;
                    if status != 200 {
                        return Err(format!("status {status}"));
                    }
                    Ok::<_, String>(())
                }
                .await;
                log.requests.fetch_add(1, Ordering::SeqCst);
                if let Err(error) = outcome {
                    log.failures.lock().unwrap().push(error);
                }
            }
        }));
    }

    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        assert!(
            tokio::task::block_in_place(|| wait_until(Duration::from_secs(30), cond)),
            "timed out waiting for {what}"
        );
    };
    wait_for("load before the rotation", &|| {
        log.requests.load(Ordering::SeqCst) >= 40
    });

    // Unauthenticated reloads are refused and change nothing.
    assert_eq!(admin_reload(admin, None).await.0, 401);
    assert_eq!(admin_reload(admin, Some("wrong")).await.0, 401);

    // Rotate: new files in place, then reload through the admin API.
    let new_leaf = {
        let mut slot = v2.lock().unwrap();
        let leaf = pki.leaf("site", "v2", &["localhost"]);
        *slot = Some(leaf.clone());
        leaf
    };
    let (status, body) = admin_reload(admin, Some(TOKEN)).await;
    let reloaded_at = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"reloaded\":true"), "{body}");
    assert!(body.contains("\"names\":[\"localhost\"]"), "{body}");

    let requests_at_reload = log.requests.load(Ordering::SeqCst);
    wait_for("load after the rotation", &|| {
        log.requests.load(Ordering::SeqCst) >= requests_at_reload + 40
    });
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    {
        let failures = log.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during rotation: {failures:?}"
        );
        let handshakes = log.handshakes.lock().unwrap();
        assert!(
            handshakes.iter().any(|(_, cn)| cn == "v1"),
            "no handshake before the rotation"
        );
        let after: Vec<&String> = handshakes
            .iter()
            .filter(|(started, _)| *started > reloaded_at)
            .map(|(_, cn)| cn)
            .collect();
        assert!(!after.is_empty());
        assert!(
            after.iter().all(|cn| *cn == "v2"),
            "a handshake started after the reload saw another certificate: {after:?}"
        );
    }

    // The connection from before the rotation is untouched and still works.
    assert_eq!(early_leaf, v1.der);
    assert_eq!(get_over(&mut early, "/early-again").await.unwrap(), 200);

    // SIGHUP reloads too.
    let v3 = pki.leaf("site", "v3", &["localhost"]);
    edge.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stream = connect(&connector, https, Some("localhost")).await.unwrap();
        let der = peer_leaf(&stream);
        if der == v3.der {
            break;
        }
        assert!(der == new_leaf.der, "neither v2 nor v3 after SIGHUP");
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not rotate to v3:\n{}",
            edge.output()
        );
        // Poll interval while the signal is handled, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_replacement_keeps_the_old_certificate_and_says_why() {
    let pki = Pki::new();
    let good = pki.leaf("site", "good", &["localhost"]);
    let origin = Origin::start();
    let edge = start(&origin, &tls_table(&[&good], None, ""));
    let https = edge.listeners()[1];
    let connector = client(Some(&pki), &[b"http/1.1"]);

    let key_file = good.key.display().to_string();
    let cert_file = good.cert.display().to_string();
    let good_key = std::fs::read_to_string(&good.key).unwrap();
    let good_cert = std::fs::read_to_string(&good.cert).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    type Breakage<'a> = (&'a str, Box<dyn Fn() + 'a>, String);
    let breakages: [Breakage; 4] = [
        (
            "a key of another certificate",
            Box::new(|| write_private(&good.key, &other_key)),
            format!("{key_file}: the private key does not match the certificate in {cert_file}"),
        ),
        (
            "a missing certificate",
            Box::new(|| std::fs::remove_file(&good.cert).unwrap()),
            format!("{cert_file}: cannot read: No such file or directory"),
        ),
        (
            "a certificate file without PEM",
            Box::new(|| std::fs::write(&good.cert, "not a certificate\n").unwrap()),
            format!("{cert_file}: no PEM CERTIFICATE block"),
        ),
        (
            "a key file without a key",
            Box::new(|| write_private(&good.key, &good_cert)),
            format!("{key_file}: no PEM private key"),
        ),
    ];
    for (what, break_it, reason) in breakages {
        break_it();
        let (status, body) = admin_reload(edge.admin(), None).await;
        assert_eq!(status, 422, "{what}: {body}");
        assert!(body.contains("\"reloaded\":false"), "{what}: {body}");
        assert!(
            body.contains(&reason.replace('"', "\\\"")),
            "{what}: expected {reason:?} in {body}"
        );
        // The log line is written before the answer, but read from edge's
        // stderr by another thread: wait for it.
        let logged = tokio::task::block_in_place(|| {
            wait_until(Duration::from_secs(10), || {
                let output = edge.output();
                output
                    .contains("certificate reload failed; keeping the certificates already loaded")
                    && output.contains(&reason)
            })
        });
        assert!(
            logged,
            "{what}: the log does not say why:\n{}",
            edge.output()
        );
        serves(&connector, https, &good).await;
        // Repair for the next case.
        std::fs::write(&good.cert, &good_cert).unwrap();
        write_private(&good.key, &good_key);
    }

    // SIGHUP with a broken file logs the reason the same way.
    write_private(&good.key, &other_key);
    edge.signal(libc::SIGHUP);
    let logged = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), || {
            edge.output()
                .matches("does not match the certificate")
                .count()
                >= 2
        })
    });
    assert!(
        logged,
        "SIGHUP with a broken key left no log line:\n{}",
        edge.output()
    );
    serves(&connector, https, &good).await;
}

/// A new handshake gets `leaf`, and a request over it succeeds.
async fn serves(connector: &TlsConnector, https: SocketAddr, leaf: &Leaf) {
    let stream = connect(connector, https, Some("localhost")).await.unwrap();
    assert_eq!(peer_leaf(&stream), leaf.der, "not serving {}", leaf.cn);
    let mut sender = http1_over(stream).await;
    assert_eq!(get_over(&mut sender, "/still-good").await.unwrap(), 200);
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_cut_at_the_timeout() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", "site", &["localhost"]);
    let origin = Origin::start();
    let edge = start(
        &origin,
        &tls_table(&[&leaf], None, "handshake_timeout = \"300ms\""),
    );
    let https = edge.listeners()[1];

    // Silent after connect, and stalled mid-ClientHello (a record header
    // announcing 512 bytes, then one). hyper's own 30 s header timeout
    // plays no part before the handshake, so a close within the deadline
    // is the handshake timeout's doing.
    for bytes in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let started = Instant::now();
        let mut stream = std::net::TcpStream::connect(https).unwrap();
        stream.write_all(bytes).unwrap();
        let read = read_until_close(&mut stream, Duration::from_secs(10));
        assert!(read.is_empty(), "{read:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "closed before the timeout: {:?}",
            started.elapsed()
        );
    }

    // A real client in the meantime is unaffected.
    let (ok, output) = s_client(https, &["-servername", "localhost"]);
    assert!(ok && output.contains("New, TLSv1.3"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_https_and_hsts() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", "site", &["secure.test", "open.test"]);
    let origin = Origin::start();
    let sites = r#"
[[sites]]
hosts = ["secure.test"]
pool = "origin"
redirect_https = 308
hsts = "max-age=31536000; includeSubDomains"

[[sites]]
hosts = ["old.test"]
pool = "origin"
redirect_https = 301

[[sites]]
hosts = ["*"]
pool = "origin"
"#;
    let edge = EdgeProcess::start(
        edge_bin(),
        &config(&origin, &tls_table(&[&leaf], None, ""), "", sites),
    );
    let (plain, https) = (edge.addr(), edge.listeners()[1]);

    let redirected = get_host(plain, "/a/b?x=1&y=2", "secure.test").await;
    assert_eq!(redirected.status(), 308);
    assert_eq!(
        redirected.header("location"),
        Some(format!("https://secure.test:{}/a/b?x=1&y=2", https.port()).as_str())
    );
    assert_eq!(
        redirected.header("strict-transport-security"),
        None,
        "never over plain HTTP"
    );
    let old = get_host(plain, "/x", "old.test:8080").await;
    assert_eq!(old.status(), 301);
    assert_eq!(
        old.header("location"),
        Some(format!("https://old.test:{}/x", https.port()).as_str())
    );
    assert_eq!(
        origin.hits("/a/b") + origin.hits("/x"),
        0,
        "redirects never reach the origin"
    );

    // Sites without redirect_https are served over plain HTTP.
    let open = get_host(plain, "/open", "open.test").await;
    assert_eq!(open.status(), 200);

    // curl follows the redirect onto TLS and sees the HSTS header there.
    let output = run_ok(
        Command::new("curl")
            .args(["-sS", "--fail", "-i", "-L", "--cacert"])
            .arg(&pki.ca_file)
            .args([
                "--resolve",
                &format!("secure.test:{}:127.0.0.1", plain.port()),
                "--resolve",
                &format!("secure.test:{}:127.0.0.1", https.port()),
            ])
            .arg(format!(
                "http://secure.test:{}/followed?header=cache-control:no-store",
                plain.port()
            )),
    );
    assert!(output.contains("308"), "{output}");
    let lower = output.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{output}"
    );
    assert!(output.contains("origin /followed"), "{output}");

    // HSTS only for the site that sets it.
    let connector = client(Some(&pki), &[b"http/1.1"]);
    let stream = connect(&connector, https, Some("open.test")).await.unwrap();
    let mut sender = http1_over(stream).await;
    let req = Request::get("/open-tls")
        .header("host", "open.test")
        .body(empty())
        .unwrap();
    let answer = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.header("strict-transport-security"), None);
}

#[test]
fn startup_names_a_bad_file_and_warns_about_a_readable_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let pki = Pki::new();
    let leaf = pki.leaf("site", "site", &["localhost"]);
    let origin = Origin::start();

    // A world-readable key starts, with a warning naming the file.
    std::fs::set_permissions(&leaf.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let edge = start(&origin, &tls_table(&[&leaf], None, ""));
    let key = leaf.key.display().to_string();
    let warned = wait_until(Duration::from_secs(5), || {
        let output = edge.output();
        output.contains("private key file is readable by every user") && output.contains(&key)
    });
    assert!(warned, "{}", edge.output());
    drop(edge);

    // A missing key fails start-up with the file and the problem.
    let missing = pki.path("missing.key");
    let broken = Leaf {
        key: missing.clone(),
        ..leaf.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("edge.toml");
    std::fs::write(
        &config_file,
        config(&origin, &tls_table(&[&broken], None, ""), "", ""),
    )
    .unwrap();
    let (ok, output) = run(
        Command::new(edge_bin())
            .arg("run")
            .arg("--config")
            .arg(&config_file),
        b"",
    );
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!(
            "listeners[1].tls: {}: cannot read: No such file or directory",
            missing.display()
        )),
        "{output}"
    );
}

#[test]
fn demo_serves_https_with_its_own_ca() {
    let demo = EdgeProcess::start_demo(edge_bin());
    // The tour follows `ready` on stdout; wait until it has been read.
    wait_until(Duration::from_secs(10), || {
        demo.output().contains("Ctrl-C stops everything")
    });
    let output = demo.output();
    let https = demo.listeners()[1];
    let ca = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("curl --cacert "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `curl --cacert` command in the tour:\n{output}"));
    assert!(
        output.contains(&format!("https://localhost:{}/hello.txt", https.port())),
        "{output}"
    );
    let body = run_ok(
        Command::new("curl")
            .args(["-sS", "--fail", "--cacert", ca])
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", https.port()),
            ])
            .arg(format!("https://localhost:{}/hello.txt", https.port())),
    );
    assert!(body.starts_with("Hello from origin"), "{body}");
}

// ---------------------------------------------------------------------------
// Upstream TLS

/// An edge whose only pool is `endpoint` over TLS with `pool_tls` keys.
fn tls_client_edge(id: &str, endpoint: SocketAddr, pool_tls: &str) -> EdgeProcess {
    let config = format!(
        r#"
[node]
id = "{id}"
workers = 1
[admin]
listen = "127.0.0.1:0"
[[listeners]]
addr = "127.0.0.1:0"
[[sites]]
hosts = ["*"]
pool = "tls-origin"
cache = {{ enabled = false }}
[pools.tls-origin]
endpoints = ["{endpoint}"]
tls = true
{pool_tls}
"#
    );
    EdgeProcess::start(edge_bin(), &config)
}

#[tokio::test]
async fn upstream_tls_verifies_the_origin_against_a_private_ca() {
    let origin = Origin::start();
    let pki = Pki::new();
    let leaf = pki.leaf("origin", "tls origin", &["origin.test"]);
    // The TLS origin is another edge terminating TLS in front of `origin`.
    let tls_origin = start(&origin, &tls_table(&[&leaf], None, ""));
    let tls_addr = tls_origin.listeners()[1];
    let ca = pki.ca_file.display().to_string();

    let trusting = tls_client_edge(
        "edge-a",
        tls_addr,
        &format!("sni = \"origin.test\"\nca = \"{ca}\"\nh2 = true"),
    );
    let answer = get(trusting.addr(), "/through-tls").await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.text(), "origin /through-tls\n");
    let seen = origin.last_request("/through-tls").unwrap();
    let via: Vec<_> = seen.headers.get_all("via").iter().collect();
    assert_eq!(
        via,
        ["1.1 edge-a", "2 edge-tls"],
        "edge-a spoke HTTP/2 over TLS to the TLS origin (ALPN h2)"
    );

    // Another CA (with the same name, so rustls reports BadSignature): the
    // origin's certificate does not verify.
    let other = Pki::new();
    let wary = tls_client_edge(
        "edge-b",
        tls_addr,
        &format!(
            "sni = \"origin.test\"\nca = \"{}\"",
            other.ca_file.display()
        ),
    );
    let refused = get(wary.addr(), "/through-tls").await;
    assert_eq!(refused.status(), 502);
    assert!(
        wait_until(Duration::from_secs(10), || wary
            .output()
            .contains("invalid peer certificate")),
        "the log names the verification error:\n{}",
        wary.output()
    );
    assert_eq!(
        origin.hits("/through-tls"),
        1,
        "nothing got through unverified"
    );

    // A wrong name with the right CA fails too.
    let misnamed = tls_client_edge(
        "edge-c",
        tls_addr,
        &format!("sni = \"other.test\"\nca = \"{ca}\""),
    );
    assert_eq!(get(misnamed.addr(), "/through-tls").await.status(), 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_tls_listener_is_replaced_on_its_port_while_open_connections_carry_on() {
    let pki = Pki::new();
    let (a, b) = (
        pki.leaf("a", "a", &["localhost"]),
        pki.leaf("b", "b", &["localhost"]),
    );
    let origin = Origin::start();
    let edge = start(&origin, &tls_table(&[&a], None, ""));
    let https = edge.listeners()[1];
    let connector = client(Some(&pki), &[b"http/1.1"]);
    let stream = connect(&connector, https, Some("localhost")).await.unwrap();
    assert_eq!(which(&peer_leaf(&stream), &[&a, &b]), "a");
    let mut open = http1_over(stream).await;
    assert_eq!(get_over(&mut open, "/x").await.unwrap(), 200);

    // New listener settings (another certificate, no session cache): the
    // listener is replaced, on the port it had.
    let changed = config(
        &origin,
        &tls_table(&[&b], None, "session_cache = 0"),
        "",
        "",
    );
    std::fs::write(edge.config_path(), changed).unwrap();
    let (status, body) = admin_reload(edge.admin(), None).await;
    assert_eq!(status, 200, "{body}");
    // Every worker closes its old socket on its own time: wait until 20
    // handshakes in a row get the new certificate.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        assert!(Instant::now() < deadline, "the old listener never closed");
        in_a_row = match connect(&connector, https, Some("localhost")).await {
            Ok(stream) if which(&peer_leaf(&stream), &[&a, &b]) == "b" => in_a_row + 1,
            _ => 0,
        };
    }
    assert_eq!(
        get_over(&mut open, "/x").await.unwrap(),
        200,
        "a connection the old listener accepted carries on"
    );
    assert_eq!(get(edge.listeners()[0], "/x").await.status(), 200);
}
