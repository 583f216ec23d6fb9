//! `upstream_tls.mode = "verify-full"` as libpq's `sslmode=verify-full` reads it.
//!
//! rustls (webpki) checks the chain against `upstream_tls.ca` and the host name against the
//! certificate's subjectAltName. libpq (OpenSSL) accepts two more things, both common for a
//! database's own certificate, and Tandem accepts them too:
//!
//! - a server certificate that is itself in the CA file: a self-signed certificate used as
//!   its own CA (`openssl req -x509` marks it CA:TRUE, which webpki refuses as a server's
//!   certificate, `CaUsedAsEndEntity`). It is trusted as it stands, inside its validity
//!   period, and its names are still checked;
//! - a certificate with no DNS or IP subjectAltName: its Common Name is matched against the
//!   host (the certificate of PostgreSQL's own "creating certificates" recipe,
//!   `-subj "/CN=dbhost.yourdomain.com"`), a leftmost `*.` matching one label, as libpq does.
//!
//! Everything else is webpki's verdict.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

/// webpki's verifier, with libpq's two allowances (see the module doc).
#[derive(Debug)]
pub struct VerifyFull {
    /// The chain and name checks of rustls.
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of the CA file, to recognise a server presenting one of them.
    roots: Vec<CertificateDer<'static>>,
}

impl VerifyFull {
    /// A verifier trusting `roots` (the CA file's certificates).
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, String> {
        let mut store = RootCertStore::empty();
        for cert in &roots {
            store.add(cert.clone()).map_err(|e| e.to_string())?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { webpki, roots })
    }
}

impl ServerCertVerifier for VerifyFull {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let refused =
            match self
                .webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Ok(verified) => return Ok(verified),
                Err(e) => e,
            };
        let pinned = self
            .roots
            .iter()
            .any(|root| root.as_ref() == end_entity.as_ref());
        let only_the_name = matches!(
            refused,
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        );
        if !pinned && !only_the_name {
            return Err(refused);
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(end_entity) else {
            return Err(refused);
        };
        if pinned {
            let at = i64::try_from(now.as_secs())
                .ok()
                .and_then(|secs| ASN1Time::from_timestamp(secs).ok());
            match at {
                Some(at) if at < cert.validity().not_before => {
                    return Err(Error::InvalidCertificate(CertificateError::NotValidYet))
                }
                Some(at) if at > cert.validity().not_after => {
                    return Err(Error::InvalidCertificate(CertificateError::Expired))
                }
                Some(_) => {}
                None => return Err(refused),
            }
        }
        if names_match(end_entity, &cert, server_name) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Does the certificate name the host? Its DNS and IP subjectAltNames when it has any
/// (webpki's matching), else its Common Name (libpq's fallback).
fn names_match(
    der: &CertificateDer<'_>,
    cert: &X509Certificate<'_>,
    host: &ServerName<'_>,
) -> bool {
    let has_alt_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_)))
        });
    if has_alt_names {
        return rustls::server::ParsedCertificate::try_from(der)
            .is_ok_and(|parsed| rustls::client::verify_server_name(&parsed, host).is_ok());
    }
    let host = match host {
        ServerName::DnsName(name) => name.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => return false,
    };
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| common_name_matches(cn, &host))
}

/// libpq's match of a certificate name: equal ignoring case, or `*.rest` for one label
/// followed by `.rest`.
fn common_name_matches(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(rest) = pattern.strip_prefix("*.") else {
        return false;
    };
    match host.split_once('.') {
        Some((label, host_rest)) => !label.is_empty() && host_rest.eq_ignore_ascii_case(rest),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::common_name_matches;

    #[test]
    fn common_names_match_as_libpq_matches_them() {
        assert!(common_name_matches("db.example.com", "DB.example.com"));
        assert!(common_name_matches("*.example.com", "db.example.com"));
        assert!(!common_name_matches("*.example.com", "a.db.example.com"));
        assert!(!common_name_matches("*.example.com", "example.com"));
        assert!(!common_name_matches("db.example.com", "db2.example.com"));
        assert!(common_name_matches("127.0.0.1", "127.0.0.1"));
    }
}
