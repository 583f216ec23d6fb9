//! The untagged start of a connection: TLS and GSS requests, cancel, StartupMessage.
//!
//! Packets are read with exact lengths, so nothing the client sent before the TLS handshake
//! can be buffered and later mistaken for encrypted traffic.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::SessionError;
use crate::wire::protocol::startup::{self, StartupMessage, StartupPacket};
use crate::wire::stream::Stream;

/// What the client asked for.
pub enum Negotiated {
    /// A session: the (possibly TLS-wrapped) stream and the StartupMessage.
    Startup(Stream, StartupMessage),
    /// A cancel request for another session.
    Cancel {
        /// Proxy process id.
        pid: i32,
        /// Proxy secret.
        secret: Vec<u8>,
    },
}

/// More negotiation packets than this is a client going round in circles.
const MAX_NEGOTIATION_PACKETS: usize = 4;

/// Reads startup packets until a StartupMessage or CancelRequest arrives.
pub async fn negotiate(
    mut stream: Stream,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
    max_packet: usize,
) -> Result<Negotiated, SessionError> {
    for _ in 0..MAX_NEGOTIATION_PACKETS {
        let body = read_packet(&mut stream, max_packet).await?;
        match startup::parse(&body)? {
            StartupPacket::SslRequest => {
                if stream.is_tls() {
                    return Err(SessionError::Protocol(
                        "SSLRequest received on an encrypted connection".into(),
                    ));
                }
                stream = match (acceptor, stream) {
                    (Some(acceptor), Stream::Tcp(mut tcp)) => {
                        tcp.write_all(b"S").await.map_err(SessionError::ClientIo)?;
                        let tls = acceptor
                            .accept(tcp)
                            .await
                            .map_err(SessionError::ClientTls)?;
                        Stream::ServerTls(Box::new(tls))
                    }
                    (_, mut other) => {
                        other
                            .write_all(b"N")
                            .await
                            .map_err(SessionError::ClientIo)?;
                        other
                    }
                };
            }
            StartupPacket::GssEncRequest => {
                stream
                    .write_all(b"N")
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
            StartupPacket::Cancel { pid, secret } => return Ok(Negotiated::Cancel { pid, secret }),
            StartupPacket::Startup(msg) => return Ok(Negotiated::Startup(stream, msg)),
        }
    }
    Err(SessionError::Protocol(
        "too many negotiation requests before StartupMessage".into(),
    ))
}

async fn read_packet(stream: &mut Stream, max_packet: usize) -> Result<BytesMut, SessionError> {
    let length = stream.read_i32().await.map_err(SessionError::ClientIo)?;
    let body_len = startup::check_length(length, max_packet)?;
    let mut body = BytesMut::zeroed(body_len);
    stream
        .read_exact(&mut body)
        .await
        .map_err(SessionError::ClientIo)?;
    Ok(body)
}
