//! Opening connections to the real server: TCP or Unix socket, then TLS per the config.
//!
//! Used for every session and for every cancel request. Failures carry the address and
//! reason so the client's FATAL (SQLSTATE 08001) says what went wrong.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::config::{Config, UpstreamAddr, UpstreamTlsMode};
use crate::wire::protocol::startup::encode_ssl_request;
use crate::wire::stream::Stream;
use crate::wire::tls::{self, TlsError};

/// Why the upstream could not be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// TCP or socket connect failed.
    #[error("could not connect to upstream {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting took longer than `limits.upstream_connect_timeout_ms`.
    #[error(
        "timed out connecting to upstream {addr} after {} ms (limits.upstream_connect_timeout_ms)",
        after.as_millis()
    )]
    Timeout {
        /// The address tried.
        addr: String,
        /// The limit.
        after: Duration,
    },
    /// TLS was required but the server refused it.
    #[error("upstream {addr} does not support TLS but upstream_tls.mode requires it")]
    TlsRefused {
        /// The address.
        addr: String,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with upstream {addr} failed: {}", tls_reason(source))]
    TlsHandshake {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error(transparent)]
    TlsSetup(#[from] TlsError),
}

/// Opens upstream connections; built once, shared by all sessions.
pub struct Connector {
    /// Where the server is.
    addr: UpstreamAddr,
    /// TLS mode from the config.
    mode: UpstreamTlsMode,
    /// rustls connector unless the mode is `disable`.
    tls: Option<tokio_rustls::TlsConnector>,
    /// Connect timeout.
    timeout: Duration,
}

impl Connector {
    /// Builds the connector from the config.
    pub fn new(config: &Config) -> Result<Arc<Self>, crate::Error> {
        Ok(Arc::new(Self {
            addr: config.upstream_addr()?,
            mode: config.upstream_tls.mode,
            tls: tls::connector(config).map_err(UpstreamError::from)?,
            timeout: config.limits.upstream_connect_timeout(),
        }))
    }

    /// A printable form of the upstream address.
    pub fn addr_string(&self) -> String {
        match &self.addr {
            UpstreamAddr::Tcp { host, port } => format!("{host}:{port}"),
            UpstreamAddr::Unix(p) => p.display().to_string(),
        }
    }

    /// Connects, negotiating TLS per the configured mode.
    pub async fn connect(&self) -> Result<Stream, UpstreamError> {
        let addr = self.addr_string();
        let timed_out = || UpstreamError::Timeout {
            addr: addr.clone(),
            after: self.timeout,
        };
        tokio::time::timeout(self.timeout, self.connect_inner(&addr))
            .await
            .map_err(|_| timed_out())?
    }

    async fn connect_inner(&self, addr: &str) -> Result<Stream, UpstreamError> {
        let connect_err = |source| UpstreamError::Connect {
            addr: addr.to_string(),
            source,
        };
        let (tcp, host) = match &self.addr {
            UpstreamAddr::Unix(path) => {
                let s = UnixStream::connect(path).await.map_err(connect_err)?;
                return Ok(Stream::Unix(s));
            }
            UpstreamAddr::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?;
                // Latency matters more than packet count for request/response traffic.
                s.set_nodelay(true).map_err(connect_err)?;
                (s, host)
            }
        };
        let Some(tls) = &self.tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let mut tcp = tcp;
        let mut req = BytesMut::with_capacity(8);
        encode_ssl_request(&mut req);
        tcp.write_all(&req).await.map_err(connect_err)?;
        let answer = tcp.read_u8().await.map_err(connect_err)?;
        match answer {
            b'S' => {}
            b'N' if self.mode == UpstreamTlsMode::Prefer => return Ok(Stream::Tcp(tcp)),
            _ => {
                return Err(UpstreamError::TlsRefused {
                    addr: addr.to_string(),
                })
            }
        }
        let name = tls::server_name(host).ok_or_else(|| UpstreamError::TlsHandshake {
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid server name"),
        })?;
        let stream =
            tls.connect(name, tcp)
                .await
                .map_err(|source| UpstreamError::TlsHandshake {
                    addr: addr.to_string(),
                    source,
                })?;
        Ok(Stream::ClientTls(Box::new(stream)))
    }
}

/// Why a TLS handshake failed, in words for the certificate problems an operator fixes
/// (rustls's own text for them is a debug string, `Other(OtherError(CaUsedAsEndEntity))`).
fn tls_reason(error: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let Some(rustls::Error::InvalidCertificate(e)) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return error.to_string();
    };
    match e {
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet".into()
        }
        C::UnknownIssuer => "the server's certificate is not signed by a CA in upstream_tls.ca \
                              (nor is it one of that file's certificates)"
            .into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the server's certificate does not name this host (in its subjectAltName, or in \
             its Common Name when it has no DNS or IP subjectAltName); connect by a name it \
             has, or reissue it"
                .into()
        }
        C::BadSignature => "the server's certificate is not signed by the CA in upstream_tls.ca \
                             that bears its issuer's name (bad signature)"
            .into(),
        C::Revoked => "the server's certificate is revoked".into(),
        C::BadEncoding => "the server's certificate cannot be parsed".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the server's certificate is not for server authentication (extendedKeyUsage)".into()
        }
        C::UnhandledCriticalExtension => {
            "the server's certificate has a critical extension that cannot be checked".into()
        }
        other => format!("the server's certificate was refused ({other:?})"),
    }
}
