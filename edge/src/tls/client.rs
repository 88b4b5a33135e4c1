//! TLS towards origins: the rustls client configuration of a pool.
//!
//! Verification uses the system roots unless the pool names its own CA
//! bundle (`ca`); `insecure_skip_verify` turns verification off and is
//! logged as an error at every start, because it makes the origin hop
//! open to interception.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::certs::{read_chain, read_key};

/// The client configuration for the TLS pool `name`.
pub fn pool_config(name: &str, pool: &edge_config::Pool) -> anyhow::Result<ClientConfig> {
    let provider = super::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = if pool.insecure_skip_verify {
        tracing::error!(
            pool = %name,
            "insecure_skip_verify is set: origin certificates are NOT verified; anyone on the path can impersonate this origin"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        builder.with_root_certificates(roots(name, pool)?)
    };
    let config = match &pool.client_cert {
        Some(client) => {
            let chain = read_chain(&client.cert)?;
            let key = read_key(&client.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .with_context(|| format!("pools.{name}.client_cert: {}", client.cert.display()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// A configuration for pools without TLS: never used for a handshake, it
/// only lets every pool share one connector type.
pub fn unused_config() -> ClientConfig {
    ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

fn roots(name: &str, pool: &edge_config::Pool) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match &pool.ca {
        Some(ca) => {
            let (added, _) = roots.add_parsable_certificates(read_chain(ca)?);
            anyhow::ensure!(
                added > 0,
                "pools.{name}.ca: {} holds no usable CA certificate",
                ca.display()
            );
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(pool = %name, %error, "could not read part of the system CA store");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            anyhow::ensure!(
                added > 0,
                "pools.{name}: no system CA certificates found; install ca-certificates or set `ca`"
            );
        }
    }
    Ok(roots)
}

/// Accepts every certificate but still checks the handshake signatures, so
/// the connection is at least encrypted to whoever answered.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
