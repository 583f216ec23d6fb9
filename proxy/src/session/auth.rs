//! Authentication, relayed: the upstream's pg_hba and passwords stay the source of truth.
//!
//! Tandem forwards the client's StartupMessage, then passes each Authentication request to
//! the client and each answer back, so trust, cleartext, md5, SCRAM-SHA-256 and GSS all
//! work unchanged. Two things are changed on the way: SCRAM-SHA-256-PLUS is removed from
//! the mechanism list (channel binding ties SCRAM to one TLS channel and there are two
//! legs), and the upstream's BackendKeyData is replaced by the proxy's own for cancels.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::error::SessionError;
use super::framed::{FrameReader, ReadError};
use crate::wire::cancel::{CancelMap, Registration};
use crate::wire::protocol::backend::{self, auth, ErrorFields, SCRAM_PLUS};
use crate::wire::protocol::startup::StartupMessage;
use crate::wire::protocol::tag;
use crate::wire::stream::Stream;

/// Largest authentication message a client may send.
const MAX_AUTH_MESSAGE: usize = 65535;

/// A session that is ready for queries.
pub struct Authenticated {
    /// Keeps the session's cancel key alive.
    pub cancel: Option<Registration>,
    /// Upstream bytes read past ReadyForQuery (normally none).
    pub upstream_leftover: BytesMut,
    /// Client bytes read past its last authentication answer (normally none).
    pub client_leftover: BytesMut,
    /// The ParameterStatus reports of the login, name and value.
    pub params: Vec<(String, String)>,
}

/// Runs startup and authentication between a client and a freshly opened upstream.
pub async fn relay(
    client: &mut Stream,
    upstream: &mut Stream,
    startup: &StartupMessage,
    cancels: &Arc<CancelMap>,
    max_body: usize,
) -> Result<Authenticated, SessionError> {
    let mut out = BytesMut::with_capacity(1024);
    startup.encode(&mut out);
    upstream
        .write_all(&out)
        .await
        .map_err(SessionError::UpstreamIo)?;
    out.clear();

    let mut from_upstream = FrameReader::new(max_body);
    // Postgres caps authentication messages at 65535 bytes (PG_MAX_AUTH_TOKEN_LENGTH).
    let mut from_client = FrameReader::new(max_body.min(MAX_AUTH_MESSAGE));
    let mut cancel = None;
    let mut params = Vec::new();
    loop {
        let frame = match from_upstream.next(upstream).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(SessionError::UpstreamIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Err(ReadError::Io(e)) => return Err(SessionError::UpstreamIo(e)),
            Err(ReadError::Frame(e)) => return Err(SessionError::UpstreamFrame(e)),
            Err(ReadError::Unexpected(t)) => {
                return Err(SessionError::Protocol(format!(
                    "unexpected message type {t} from upstream"
                )))
            }
        };
        match frame.tag {
            tag::AUTHENTICATION => {
                let code = backend::auth_code(frame.body())?;
                if code == auth::SASL {
                    let mechs: Vec<String> = backend::sasl_mechanisms(frame.body())?
                        .into_iter()
                        .filter(|m| m != SCRAM_PLUS)
                        .collect();
                    backend::encode_sasl(&mechs, &mut out);
                } else {
                    out.extend_from_slice(&frame.bytes);
                }
                if auth::expects_client_reply(code) {
                    client
                        .write_all(&out)
                        .await
                        .map_err(SessionError::ClientIo)?;
                    out.clear();
                    let answer = match from_client.next_if(client, |t| t == tag::PASSWORD).await {
                        Ok(Some(f)) => f,
                        Ok(None) => {
                            return Err(SessionError::ClientIo(
                                std::io::ErrorKind::UnexpectedEof.into(),
                            ))
                        }
                        Err(ReadError::Io(e)) => return Err(SessionError::ClientIo(e)),
                        Err(ReadError::Frame(e)) => return Err(SessionError::ClientFrame(e)),
                        Err(ReadError::Unexpected(t)) => {
                            return Err(SessionError::Protocol(format!(
                                "expected password response, got message type {t}"
                            )))
                        }
                    };
                    if code == auth::SASL
                        && upstream.is_tls()
                        && claims_binding_support(answer.body())
                    {
                        return Err(SessionError::ChannelBinding);
                    }
                    upstream
                        .write_all(&answer.bytes)
                        .await
                        .map_err(SessionError::UpstreamIo)?;
                }
            }
            tag::BACKEND_KEY_DATA => {
                let (pid, secret) = backend::backend_key(frame.body())?;
                let (proxy_pid, proxy_secret, registration) = cancels.register(pid, secret);
                backend::encode_backend_key(proxy_pid, &proxy_secret, &mut out);
                cancel = Some(registration);
            }
            tag::ERROR_RESPONSE => {
                out.extend_from_slice(&frame.bytes);
                client
                    .write_all(&out)
                    .await
                    .map_err(SessionError::ClientIo)?;
                let fields = ErrorFields::parse(frame.body());
                return Err(SessionError::Refused(format!(
                    "{} {}",
                    fields.code.as_deref().unwrap_or("(no SQLSTATE)"),
                    fields.message
                )));
            }
            tag::READY_FOR_QUERY => {
                out.extend_from_slice(&frame.bytes);
                client
                    .write_all(&out)
                    .await
                    .map_err(SessionError::ClientIo)?;
                return Ok(Authenticated {
                    cancel,
                    upstream_leftover: from_upstream.into_leftover(),
                    client_leftover: from_client.into_leftover(),
                    params,
                });
            }
            tag::PARAMETER_STATUS => {
                let mut parts = frame.body().split(|&b| b == 0);
                if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                    params.push((
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    ));
                }
                out.extend_from_slice(&frame.bytes);
            }
            _ => out.extend_from_slice(&frame.bytes),
        }
    }
}

/// Whether a SASLInitialResponse's GS2 header is `y`: "I support channel binding, but
/// you did not offer it". Postgres on a TLS connection rejects that as a downgrade attack,
/// and it did offer binding: on its own leg, which Tandem hid because it cannot hold.
fn claims_binding_support(body: &[u8]) -> bool {
    use crate::wire::protocol::frame::{read_cstr, read_i32};
    read_cstr(body)
        .and_then(|(_mechanism, rest)| read_i32(rest))
        .is_some_and(|(_len, data)| data.first() == Some(&b'y'))
}

#[cfg(test)]
mod tests {
    use super::claims_binding_support;

    #[test]
    fn gs2_flag_is_read_safely() {
        assert!(claims_binding_support(b"SCRAM-SHA-256\0\0\0\0\x05y,,n="));
        assert!(!claims_binding_support(b"SCRAM-SHA-256\0\0\0\0\x05n,,n="));
        assert!(!claims_binding_support(b"SCRAM-SHA-256\0\0\0"));
        assert!(!claims_binding_support(b""));
    }
}
