//! TLS set-up with rustls for both legs, built once at start.
//!
//! Client leg: a server config from the PEM files in `[tls]`. Upstream leg: a client config
//! per `[upstream_tls]` mode; `prefer` and `require` encrypt without verifying (as libpq's
//! modes of the same name do), `verify-full` checks the chain against `ca` and the host name
//! as libpq does ([`verify_full`](super::verify_full)).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::verify_full::VerifyFull;
use crate::config::{Config, UpstreamTlsMode};

/// A TLS set-up problem, naming the file or key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key}: cannot use {path}: {reason}")]
    Pem {
        /// Config key.
        key: &'static str,
        /// File path.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the material.
    #[error("{key}: {source}")]
    Rustls {
        /// Config key.
        key: &'static str,
        /// rustls's error.
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        key,
        path: path.display().to_string(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| pem_err(e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no certificate found".into()));
    }
    Ok(certs)
}

/// Builds the client-facing acceptor, if `[tls]` is configured.
pub fn acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let certs = read_certs("tls.cert", &tls.cert)?;
    let key_err = |reason: String| TlsError::Pem {
        key: "tls.key",
        path: tls.key.display().to_string(),
        reason,
    };
    let data = std::fs::read(&tls.key).map_err(|e| key_err(e.to_string()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| key_err(e.to_string()))?
        .ok_or_else(|| key_err("no private key found".into()))?;
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { key: "tls", source })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls { key: "tls", source })?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// Builds the upstream connector for the configured mode (`None` for `disable`).
pub fn connector(config: &Config) -> Result<Option<tokio_rustls::TlsConnector>, TlsError> {
    let client = match config.upstream_tls.mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => client_config(None, "upstream_tls")?,
        UpstreamTlsMode::VerifyFull => {
            let Some(ca) = &config.upstream_tls.ca else {
                return Err(TlsError::Pem {
                    key: "upstream_tls.ca",
                    path: String::new(),
                    reason: "verify-full needs a CA file".into(),
                });
            };
            client_config(Some(ca), "upstream_tls.ca")?
        }
    };
    Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(client))))
}

/// A client-side TLS config: the server's certificate verified against `ca` with its host
/// name (verify-full), or, without `ca`, not verified (libpq's `require`/`prefer`). `key`
/// names the setting in errors.
pub fn client_config(
    ca: Option<&Path>,
    key: &'static str,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { key, source })?;
    Ok(match ca {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        Some(ca) => {
            let roots = read_certs(key, ca)?;
            let verifier = VerifyFull::new(roots, provider()).map_err(|reason| TlsError::Pem {
                key,
                path: ca.display().to_string(),
                reason,
            })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    })
}

/// The server name to present and verify for an upstream host.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}

/// Encrypts without authenticating the server: libpq's `require`/`prefer` semantics.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
