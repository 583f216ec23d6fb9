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

/// The client-facing TLS of `[tls]`: the acceptor, and what SCRAM binds to.
pub struct ServerTls {
    /// Accepts clients' TLS handshakes.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `tls-server-end-point` channel-binding data (RFC 5929) of the certificate the
    /// acceptor presents (the first of `[tls] cert`): its DER hashed with the hash of its
    /// signature algorithm. `None` for a signature with no such hash (Ed25519), for which
    /// the admin console does not offer `SCRAM-SHA-256-PLUS`.
    pub end_point: Option<Vec<u8>>,
}

/// The hash RFC 5929 (section 4.1) binds a certificate with: that of its signature
/// algorithm, SHA-256 in place of MD5 and SHA-1, as PostgreSQL's `be_tls_get_certificate_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl EndPointHash {
    /// The hash for a signature algorithm or a digest OID (dotted), if it has one.
    fn of(oid: &str) -> Option<Self> {
        Some(match oid {
            // md5WithRSAEncryption, sha1WithRSAEncryption, ecdsa-with-SHA1, dsa-with-sha1, SHA-1
            "1.2.840.113549.1.1.4"
            | "1.2.840.113549.1.1.5"
            | "1.2.840.10045.4.1"
            | "1.2.840.10040.4.3"
            | "1.3.14.3.2.26" => Self::Sha256,
            // sha256WithRSAEncryption, ecdsa-with-SHA256, dsa-with-sha256, SHA-256
            "1.2.840.113549.1.1.11"
            | "1.2.840.10045.4.3.2"
            | "2.16.840.1.101.3.4.3.2"
            | "2.16.840.1.101.3.4.2.1" => Self::Sha256,
            "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" | "2.16.840.1.101.3.4.2.2" => {
                Self::Sha384
            }
            "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" | "2.16.840.1.101.3.4.2.3" => {
                Self::Sha512
            }
            "1.2.840.113549.1.1.14"
            | "1.2.840.10045.4.3.1"
            | "2.16.840.1.101.3.4.3.1"
            | "2.16.840.1.101.3.4.2.4" => Self::Sha224,
            _ => return None,
        })
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Self::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// `tls-server-end-point` channel-binding data of a DER certificate (RFC 5929): `None` when
/// it does not parse or its signature algorithm has no hash to bind with (Ed25519, Ed448).
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::signature_algorithm::SignatureAlgorithm;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let algorithm = &cert.signature_algorithm;
    let oid = match SignatureAlgorithm::try_from(algorithm) {
        // RSASSA-PSS names its hash in its parameters (SHA-1 when absent, RFC 4055).
        Ok(SignatureAlgorithm::RSASSA_PSS(params)) => params.hash_algorithm_oid().to_id_string(),
        _ => algorithm.algorithm.to_id_string(),
    };
    Some(EndPointHash::of(&oid)?.digest(cert_der))
}

/// Builds the client-facing acceptor, if `[tls]` is configured.
pub fn acceptor(config: &Config) -> Result<Option<ServerTls>, TlsError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let certs = read_certs("tls.cert", &tls.cert)?;
    let end_point = certs.first().and_then(|c| tls_server_end_point(c));
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
    Ok(Some(ServerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        end_point,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -sha384`.
    const ECDSA_SHA384: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBrDCCATKgAwIBAgIUc5KP4mt/r5oUZ3JNbIJ44nLTtUswCgYIKoZIzj0EAwMw\n\
DDEKMAgGA1UEAwwBYTAgFw0yNjExMjgxODA4MThaGA8yMTI2MTEwNDE4MDgxOFow\n\
DDEKMAgGA1UEAwwBYTB2MBAGByqGSM49AgEGBSuBBAAiA2IABEVqlxY7zKwZP7Y3\n\
cnwRTOKV2rjVFlC/dEt9kaihbdwva30osX6BXvu5sK9yStCBR6N8L/7x1BjqzTQD\n\
Xxhc7b0yUewn6odyw6rKOr7QFXg7FVxd4ZSoKNvGKv63Zq7/2qNTMFEwHQYDVR0O\n\
BBYEFAfwnbCBQ1Tu7Btemm+6BXv077LPMB8GA1UdIwQYMBaAFAfwnbCBQ1Tu7Bte\n\
mm+6BXv077LPMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwMDaAAwZQIxAJXV\n\
QVxUbSXptoLPq29EiPDpwqE/t/X7CDIsgoAHTzCmStzs44CczbWE+hWYDsgmDwIw\n\
GFKDuFUDbLUdh+3evX+HkmnUI8IQBETqan95qTk/gupN0Mi5pLSY4zLipDhq/RFz\n\
-----END CERTIFICATE-----";
    /// `openssl req -x509 -newkey ed25519`.
    const ED25519: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBLjCB4aADAgECAhQyleTxec63hpz3SzJ3JgMiUC9nzTAFBgMrZXAwDDEKMAgG\n\
A1UEAwwBYTAgFw0yNjExMjgxODA4MThaGA8yMTI2MTEwNDE4MDgxOFowDDEKMAgG\n\
A1UEAwwBYTAqMAUGAytlcAMhAGD8HgpnyPqJRZU4xBkSCANHMQ0xrseGPNd7G+ts\n\
C03So1MwUTAdBgNVHQ4EFgQUh2pEMHkmThyR3tkmz7oy8sd+cHIwHwYDVR0jBBgw\n\
FoAUh2pEMHkmThyR3tkmz7oy8sd+cHIwDwYDVR0TAQH/BAUwAwEB/zAFBgMrZXAD\n\
QQBmURScz3jcVeUfEzEP5zvl0r0JYYyPSCHC540NPgsw2FOwziPhwdGrfwyrEpbH\n\
Zo5AkPOFo3GTtP+CbZ4p+OsL\n\
-----END CERTIFICATE-----";
    /// `openssl req -x509 -newkey rsa-pss -sha512 -sigopt rsa_padding_mode:pss`.
    const RSA_PSS_SHA512: &str = "-----BEGIN CERTIFICATE-----\n\
MIICXDCCAZGgAwIBAgIUQObuWaUTZ2q+X7R4UdOdYys0/1kwQQYJKoZIhvcNAQEK\n\
MDSgDzANBglghkgBZQMEAgMFAKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgMF\n\
AKIDAgE+MAwxCjAIBgNVBAMMAWEwIBcNMjYxMTI4MTgwODIxWhgPMjEyNjExMDQx\n\
ODA4MjFaMAwxCjAIBgNVBAMMAWEwgZ0wCwYJKoZIhvcNAQEKA4GNADCBiQKBgQCc\n\
0N+ofdSR2x3DtdtMc5f8EQxdv991kV6i9k5SC638ykNV0kcj8knkeRAHyQil5yRw\n\
BkFKH5Qe211wZWzpp1uNhGccsKXbdPIK4X43i8GURt71cMfFmSJK68UTseHYZRlW\n\
6W6UnGz9g0M5fKyjqHoSkS2YS6GbaU0rQ2IyrRbwEQIDAQABo1MwUTAdBgNVHQ4E\n\
FgQUfnxIzu/lO2tljnWKFY9STNgyxPEwHwYDVR0jBBgwFoAUfnxIzu/lO2tljnWK\n\
FY9STNgyxPEwDwYDVR0TAQH/BAUwAwEB/zBBBgkqhkiG9w0BAQowNKAPMA0GCWCG\n\
SAFlAwQCAwUAoRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQCAwUAogMCAT4DgYEA\n\
ATL11c5s5k3z4U9aJfAWub967MC1R0OuqdalgmjyjRSdQpVLhLxxX83t4e7fGAlD\n\
DiV6BDa9KIxp96E2fwvoNFHHlH/L45Wlg74WaX++A1SzfxZfXD09cNl+/KKGuamc\n\
O8dZLuJkNx5bBgFHUT5kVjBbYfl0r6+HtuRVFh8Jwyc=\n\
-----END CERTIFICATE-----";

    fn der(pem: &str) -> Vec<u8> {
        let certs = rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        certs[0].to_vec()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }

    #[test]
    fn a_certificate_is_bound_with_the_hash_of_its_signature() {
        // `openssl x509 -noout -fingerprint -sha384` / `-sha512` of the same certificates.
        assert_eq!(
            tls_server_end_point(&der(ECDSA_SHA384)).map(|h| hex(&h)),
            Some(
                "5CE0FE903A3A97B2BA34E23806F55E5C89D568744FE747551F1F478650EA2A3178826C0251E8520B964250180152EE94"
                    .into()
            )
        );
        assert_eq!(
            tls_server_end_point(&der(RSA_PSS_SHA512)).map(|h| hex(&h)),
            Some(
                "553240435FE97D6C613CE2226D39D971684A7E0D47A4BC086FAB9C4E3573D74AFF0FABA6913DEB4BE6E957DD00812BA6FB473BD618A46EF25758FA17AB53E123"
                    .into()
            )
        );
        // Ed25519 signs without a separate hash: nothing to bind with (as in PostgreSQL).
        assert_eq!(tls_server_end_point(&der(ED25519)), None);
        assert_eq!(tls_server_end_point(b"not a certificate"), None);
    }

    #[test]
    fn md5_and_sha1_signatures_are_bound_with_sha256() {
        for oid in [
            "1.2.840.113549.1.1.4",
            "1.2.840.113549.1.1.5",
            "1.2.840.10045.4.1",
        ] {
            assert_eq!(EndPointHash::of(oid), Some(EndPointHash::Sha256), "{oid}");
        }
        assert_eq!(
            EndPointHash::of("1.2.840.113549.1.1.11"),
            Some(EndPointHash::Sha256)
        );
        assert_eq!(
            EndPointHash::of("1.2.840.113549.1.1.12"),
            Some(EndPointHash::Sha384)
        );
        assert_eq!(EndPointHash::of("1.3.101.112"), None);
    }
}
