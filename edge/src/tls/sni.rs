//! Certificate selection by SNI, swappable at run time.
//!
//! Order: the exact name, then a `*.example.com` wildcard (which covers
//! exactly one label, as RFC 6125 §6.4.3 and every browser treat it: not
//! `example.com`, not `a.b.example.com`), then the default certificate.
//! A client without SNI gets the default. When several certificates claim
//! a name (an ECDSA and an RSA certificate for the same site, as nginx
//! allows), the first in config order whose key the client can verify wins.
//!
//! [`SniResolver`] holds the current [`CertSet`] behind an `ArcSwap`, so a
//! reload replaces every certificate of a listener in one atomic store:
//! handshakes already past selection keep what they picked, new ones see
//! the new set, and no handshake ever sees half of each.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCert;

/// One listener's certificates, indexed by the names they carry.
#[derive(Debug)]
pub struct CertSet {
    certs: Vec<LoadedCert>,
    /// Lower-cased DNS name -> indexes into `certs`, config order.
    exact: HashMap<String, Vec<usize>>,
    /// `example.com` for a `*.example.com` certificate -> indexes.
    wildcard: HashMap<String, Vec<usize>>,
    default: usize,
}

impl CertSet {
    /// Indexes `certs` (non-empty, config order). `default` is the
    /// position of the certificate marked `default = true`, if any;
    /// otherwise the first certificate is the default.
    pub fn new(certs: Vec<LoadedCert>, default: Option<usize>) -> CertSet {
        assert!(!certs.is_empty(), "edge-config requires at least one cert");
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_default().push(index),
                    None => exact.entry(name.clone()).or_default().push(index),
                }
            }
        }
        CertSet {
            default: default.filter(|d| *d < certs.len()).unwrap_or(0),
            certs,
            exact,
            wildcard,
        }
    }

    /// The certificates, config order.
    pub fn certs(&self) -> &[LoadedCert] {
        &self.certs
    }

    /// Index of the certificate for `sni`; `usable` says whether the
    /// client can verify a certificate's key (its signature schemes).
    pub fn select(&self, sni: Option<&str>, usable: impl Fn(&LoadedCert) -> bool) -> usize {
        let Some(sni) = sni else {
            return self.default;
        };
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        let parent = name.split_once('.').map(|(_, parent)| parent);
        let candidates = self
            .exact
            .get(&name)
            .or_else(|| parent.and_then(|p| self.wildcard.get(p)));
        match candidates {
            Some(indexes) => indexes
                .iter()
                .copied()
                .find(|&i| usable(&self.certs[i]))
                .unwrap_or(indexes[0]),
            None => self.default,
        }
    }
}

/// rustls' hook into the current [`CertSet`] of a listener.
#[derive(Debug)]
pub struct SniResolver {
    current: ArcSwap<CertSet>,
}

impl SniResolver {
    /// A resolver serving `set`.
    pub fn new(set: CertSet) -> Self {
        SniResolver {
            current: ArcSwap::from_pointee(set),
        }
    }

    /// Replaces the certificates for every handshake from now on.
    pub fn replace(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }

    /// The certificates now served.
    pub fn current(&self) -> Arc<CertSet> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        let schemes: &[SignatureScheme] = hello.signature_schemes();
        let index = set.select(hello.server_name(), |cert| {
            cert.key.key.choose_scheme(schemes).is_some()
        });
        Some(set.certs[index].key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A set of certificates that only carry names (selection never
    /// touches the keys unless `usable` does), built from one real key.
    fn set(names: &[&[&str]], default: Option<usize>) -> CertSet {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
                key.serialize_der().into(),
            ))
            .unwrap();
        let certs = names
            .iter()
            .enumerate()
            .map(|(i, names)| LoadedCert {
                key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing.clone())),
                names: names.iter().map(|n| n.to_string()).collect(),
                cert_file: PathBuf::from(format!("cert{i}.pem")),
            })
            .collect();
        CertSet::new(certs, default)
    }

    #[test]
    fn exact_then_one_label_wildcard_then_default() {
        let set = set(
            &[
                &["first.test"],
                &["example.com", "www.example.com"],
                &["*.example.com"],
                &["*.b.example.com"],
            ],
            None,
        );
        let cases = [
            (Some("example.com"), 1),
            (Some("WWW.Example.COM"), 1),
            (Some("www.example.com."), 1),
            (Some("a.example.com"), 2),
            (Some("x.b.example.com"), 3),
            // One label only: a.b.c.example.com is not under *.example.com.
            (Some("a.c.example.com"), 0),
            (Some("example.org"), 0),
            (Some("com"), 0),
            (None, 0),
        ];
        for (sni, want) in cases {
            assert_eq!(set.select(sni, |_| true), want, "{sni:?}");
        }
    }

    #[test]
    fn marked_default_wins_over_first() {
        let set = set(&[&["a.test"], &["b.test"], &["c.test"]], Some(2));
        assert_eq!(set.select(None, |_| true), 2);
        assert_eq!(set.select(Some("unknown.test"), |_| true), 2);
        assert_eq!(set.select(Some("a.test"), |_| true), 0);
    }

    #[test]
    fn first_usable_of_several_for_one_name() {
        let set = set(&[&["dual.test"], &["dual.test"], &["*.test"]], None);
        assert_eq!(set.select(Some("dual.test"), |_| true), 0);
        let only_second = |c: &LoadedCert| c.cert_file == Path::new("cert1.pem");
        assert_eq!(set.select(Some("dual.test"), only_second), 1);
        // Nobody usable: the first candidate, and the handshake fails cleanly.
        assert_eq!(set.select(Some("dual.test"), |_| false), 0);
    }
}
