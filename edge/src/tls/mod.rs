//! Downstream TLS termination with rustls: one [`TlsListener`] per
//! listener that has `tls`.
//!
//! - [`certs`] reads PEM chains and keys and the names certificates carry;
//! - [`sni`] picks a certificate per handshake and swaps sets atomically;
//! - [`tickets`] shares session-ticket keys between processes;
//! - [`reload`] re-reads every listener's files on SIGHUP and `POST /reload`.
//!
//! Protocols are TLS 1.3 and 1.2 with rustls' default (AEAD-only,
//! forward-secret) cipher suites; ALPN offers `h2` then `http/1.1`.
//! Resumption uses stateless tickets (rustls' rotating ticketer, or
//! [`tickets::SharedTicketer`] with `ticket_key_file`) plus a bounded
//! server-side cache for clients that resume by session id.
//!
//! Crypto provider: aws-lc-rs, not ring. Measured here (2-vCPU VM, shared
//! and noisy; server-side thread CPU per full handshake, best of 4
//! interleaved rounds of 1500, in-memory, X25519):
//!
//! | certificate | TLS 1.3, ring | TLS 1.3, aws-lc-rs | TLS 1.2, ring | TLS 1.2, aws-lc-rs |
//! |---|---|---|---|---|
//! | ECDSA P-256 | 160 µs (6.3k/s) | 139 µs (7.2k/s) | 135 µs | 103 µs |
//! | RSA 2048    | 964 µs (1.0k/s) | 560 µs (1.8k/s) | 869 µs | 532 µs |
//!
//! With X25519MLKEM768 (what current browsers offer first) aws-lc-rs
//! takes 186 µs (ECDSA) and 599 µs (RSA); ring has no ML-KEM at all.
//! Per request on a kept-alive connection aws-lc-rs was 8% cheaper too
//! (shared/research/io_uring.md §4.1). The price is build time: a clean
//! build of rustls + provider + rcgen took 64 s debug / 122 s release with
//! aws-lc-rs against 27 s / 57 s with ring (gcc only, no cmake or nasm),
//! paid once per clean build.

pub mod certs;
pub mod client;
pub mod reload;
pub mod sni;
pub mod tickets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edge_config::ListenerTls;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache, StoresServerSessions};
use tokio_rustls::TlsAcceptor;

use self::certs::{CertError, LoadedCert};
use self::sni::{CertSet, SniResolver};
use self::tickets::{SharedTicketer, TicketSecret};

/// ALPN protocols in server preference order (RFC 7301): HTTP/2 first,
/// since one multiplexed connection is cheaper for both sides.
pub const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The crypto provider every TLS object of edge uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS on one listener: the acceptor, and what a reload re-reads.
pub struct TlsListener {
    index: usize,
    settings: ListenerTls,
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    shared_tickets: Option<Arc<SharedTicketer>>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("index", &self.index)
            .field("resolver", &self.resolver)
            .field("shared_tickets", &self.shared_tickets)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Loads every certificate of `listeners[index].tls`; the error names
    /// the file and the problem.
    pub fn new(index: usize, settings: &ListenerTls) -> anyhow::Result<Self> {
        let provider = provider();
        let set = load_set(index, settings, &provider)
            .map_err(|e| anyhow::anyhow!("listeners[{index}].tls: {e}"))?;
        let resolver = Arc::new(SniResolver::new(set));
        let shared_tickets = match &settings.ticket_key_file {
            Some(file) => Some(Arc::new(SharedTicketer::new(
                TicketSecret::read(file)
                    .map_err(|e| anyhow::anyhow!("listeners[{index}].tls.ticket_key_file: {e}"))?,
            ))),
            None => None,
        };
        warn_if_world_readable(index, settings.ticket_key_file.iter());

        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        config.ticketer = match &shared_tickets {
            Some(shared) => shared.clone(),
            None => rustls::crypto::aws_lc_rs::Ticketer::new()?,
        };
        config.session_storage = session_cache(settings.session_cache);
        Ok(TlsListener {
            index,
            settings: settings.clone(),
            provider,
            resolver,
            shared_tickets,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Starts handshakes.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// How long a handshake may take from accept.
    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// Re-reads every certificate, key (and the ticket key file) of this
    /// listener. All or nothing: if any file fails, the listener keeps
    /// serving exactly what it served before and the error says why.
    /// Connections already established are never touched.
    pub fn reload(&self) -> Result<Arc<CertSet>, String> {
        let index = self.index;
        let secret = match &self.settings.ticket_key_file {
            Some(file) => Some(TicketSecret::read(file)?),
            None => None,
        };
        let set = load_set(index, &self.settings, &self.provider).map_err(|e| e.to_string())?;
        warn_if_world_readable(index, self.settings.ticket_key_file.iter());
        self.resolver.replace(set);
        if let (Some(ticketer), Some(secret)) = (&self.shared_tickets, secret) {
            ticketer.replace(secret);
        }
        Ok(self.resolver.current())
    }
}

fn session_cache(entries: usize) -> Arc<dyn StoresServerSessions> {
    if entries == 0 {
        Arc::new(NoServerSessionStorage {})
    } else {
        ServerSessionMemoryCache::new(entries)
    }
}

fn load_set(
    index: usize,
    settings: &ListenerTls,
    provider: &CryptoProvider,
) -> Result<CertSet, CertError> {
    let certs = settings
        .certs
        .iter()
        .map(|pair| certs::load(&pair.cert, &pair.key, provider))
        .collect::<Result<Vec<LoadedCert>, _>>()?;
    warn_if_world_readable(index, settings.certs.iter().map(|pair| &pair.key));
    for cert in &certs {
        if cert.names.is_empty() {
            tracing::warn!(
                listener = index,
                cert = %cert.cert_file.display(),
                "certificate lists no DNS names (subjectAltName); it can only be served as the default"
            );
        }
    }
    let default = settings.certs.iter().position(|pair| pair.default);
    Ok(CertSet::new(certs, default))
}

fn warn_if_world_readable<'a>(index: usize, keys: impl Iterator<Item = &'a PathBuf>) {
    for key in keys {
        if certs::world_readable(key) {
            tracing::warn!(
                listener = index,
                file = %key.display(),
                "private key file is readable by every user; run `chmod o-r` on it"
            );
        }
    }
}
