//! Reading one configured certificate: a PEM chain and its private key
//! from disk, checked to belong together, with the DNS names the
//! certificate itself lists (subjectAltName) for SNI selection.
//!
//! Names come from the certificate, never from the config, so a renewed
//! certificate that adds a name serves it after a reload with no config
//! change. Every failure names the file and the problem, because it is
//! logged as is when a reload keeps the old certificate.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The chain (leaf first) and its signing key.
    pub key: Arc<CertifiedKey>,
    /// DNS names of the leaf's subjectAltName, lower-cased; `*.example.com`
    /// for wildcards.
    pub names: Vec<String>,
    /// The certificate file, for logs and the reload report.
    pub cert_file: PathBuf,
}

/// Why a certificate could not be loaded: always names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {source}", file.display())]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{}: malformed PEM: {detail}", file.display())]
    BadPem {
        /// The file.
        file: PathBuf,
        /// What the PEM parser said.
        detail: String,
    },
    /// No `CERTIFICATE` block in the certificate file.
    #[error("{}: no PEM CERTIFICATE block; expected the chain, leaf first", file.display())]
    NoCertificate {
        /// The file.
        file: PathBuf,
    },
    /// No private key block in the key file.
    #[error(
        "{}: no PEM private key; expected a PRIVATE KEY (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY block",
        file.display()
    )]
    NoKey {
        /// The file.
        file: PathBuf,
    },
    /// The leaf certificate does not parse as X.509.
    #[error("{}: the first certificate is not valid X.509: {detail}", file.display())]
    BadCertificate {
        /// The file.
        file: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The key's algorithm or encoding is not supported.
    #[error("{}: unsupported private key: {detail}", file.display())]
    BadKey {
        /// The file.
        file: PathBuf,
        /// What the crypto provider said.
        detail: String,
    },
    /// The key belongs to another certificate.
    #[error(
        "{}: the private key does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// Loads `cert` (PEM chain, leaf first) and `key` (PEM PKCS#8, PKCS#1 RSA
/// or SEC1 EC), checks that the key belongs to the leaf and reads the
/// leaf's DNS names.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<LoadedCert, CertError> {
    let chain = read_chain(cert)?;
    let names = dns_names(&chain[0]).map_err(|detail| CertError::BadCertificate {
        file: cert.to_owned(),
        detail,
    })?;
    let key_der = read_key(key)?;
    let certified =
        CertifiedKey::from_der(chain, key_der, provider).map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => CertError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            other => CertError::BadKey {
                file: key.to_owned(),
                detail: other.to_string(),
            },
        })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        cert_file: cert.to_owned(),
    })
}

/// Whether `key` is readable by every user on the host (`o+r`): a private
/// key should be readable by edge's user and group only.
pub fn world_readable(key: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(key).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

fn read(file: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(file).map_err(|source| CertError::Unreadable {
        file: file.to_owned(),
        source,
    })
}

pub(crate) fn read_chain(file: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read(file)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(file, &e))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            file: file.to_owned(),
        });
    }
    Ok(chain)
}

pub(crate) fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read(file)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => CertError::NoKey {
            file: file.to_owned(),
        },
        other => bad_pem(file, &other),
    })
}

fn bad_pem(file: &Path, error: &impl fmt::Display) -> CertError {
    CertError::BadPem {
        file: file.to_owned(),
        detail: error.to_string(),
    }
}

/// The leaf's subjectAltName DNS names, lower-cased. IP addresses in the
/// SAN are left out: SNI never carries an address (RFC 6066 §3).
fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = cert
        .valid_dns_names()
        .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn generate(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn loads_names_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate(
            &["Example.com", "*.example.org", "127.0.0.1"],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let cert = write(dir.path(), "c.pem", &cert);
        let key = write(dir.path(), "k.pem", &key);
        let loaded = load(&cert, &key, &provider()).unwrap();
        assert_eq!(loaded.names, ["example.com", "*.example.org"]);
        assert_eq!(loaded.key.cert.len(), 1);
    }

    #[test]
    fn each_failure_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = generate(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, key_b) = generate(&["b.test"], &rcgen::PKCS_ED25519);
        let cert = write(dir.path(), "a.pem", &cert_a);
        let key = write(dir.path(), "a.key", &key_a);
        let other_key = write(dir.path(), "b.key", &key_b);
        let empty = write(dir.path(), "empty.pem", "# nothing\n");
        let truncated = write(dir.path(), "cut.pem", &cert_a[..cert_a.len() / 2]);
        let missing = dir.path().join("missing.pem");
        let p = provider();

        let cases: [(&Path, &Path, &Path, &str); 5] = [
            (&missing, &key, &missing, "cannot read"),
            (&empty, &key, &empty, "no PEM CERTIFICATE block"),
            (&truncated, &key, &truncated, "malformed PEM"),
            (&cert, &empty, &empty, "no PEM private key"),
            (
                &cert,
                &other_key,
                &other_key,
                "does not match the certificate in",
            ),
        ];
        for (cert, key, at_fault, message) in cases {
            let text = load(cert, key, &p).unwrap_err().to_string();
            assert!(
                text.starts_with(&at_fault.display().to_string()) && text.contains(message),
                "{text}"
            );
        }
    }
}
