//! Why a session ended early, and what the client is told.
//!
//! Errors are typed until the session meets the client; only there are they turned into a
//! Postgres ErrorResponse with the SQLSTATE a driver expects.

use std::io;

use crate::wire::protocol::backend::{ErrorFields, MalformedBackend};
use crate::wire::protocol::frame::FrameError;
use crate::wire::protocol::startup::StartupError;
use crate::wire::upstream::UpstreamError;

/// A session-ending condition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The client's socket failed or closed.
    #[error("client i/o: {0}")]
    ClientIo(io::Error),
    /// The upstream's socket failed or closed.
    #[error("upstream i/o: {0}")]
    UpstreamIo(io::Error),
    /// A malformed startup packet.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A malformed or oversized frame from the client.
    #[error("client sent a bad frame: {0}")]
    ClientFrame(FrameError),
    /// A malformed or oversized frame from the upstream.
    #[error("upstream sent a bad frame: {0}")]
    UpstreamFrame(FrameError),
    /// A backend message Tandem must read was malformed.
    #[error(transparent)]
    MalformedBackend(#[from] MalformedBackend),
    /// The client sent something out of turn.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The upstream could not be reached.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Startup or authentication did not finish in time.
    #[error("startup did not finish within {0} ms")]
    StartupTimeout(u64),
    /// TLS with the client failed.
    #[error("TLS handshake with client failed: {0}")]
    ClientTls(io::Error),
    /// SCRAM channel binding was requested across Tandem's two TLS legs.
    #[error("SCRAM channel binding cannot span two TLS connections")]
    ChannelBinding,
    /// The client sat idle past `limits.client_idle_timeout_ms`.
    #[error("idle-session timeout")]
    IdleTimeout,
    /// The proxy is shutting down.
    #[error("proxy shutting down")]
    Shutdown,
    /// The upstream refused authentication or startup; its error was relayed as is.
    #[error("upstream refused the session: {0}")]
    Refused(String),
}

impl SessionError {
    /// The error to send the client before closing, if it can still receive one.
    pub fn client_error(&self) -> Option<ErrorFields> {
        let fatal = |code: &str, msg: String| Some(ErrorFields::new("FATAL", code, msg));
        match self {
            SessionError::ClientIo(_)
            | SessionError::ClientTls(_)
            | SessionError::Refused(_)
            | SessionError::IdleTimeout
            | SessionError::Shutdown => None,
            SessionError::Startup(e) => fatal("08P01", e.to_string()),
            SessionError::ClientFrame(e) => fatal("08P01", format!("invalid frontend message: {e}")),
            SessionError::Protocol(m) => fatal("08P01", m.clone()),
            SessionError::ChannelBinding => Some(
                ErrorFields::new(
                    "FATAL",
                    "28000",
                    "tandem: SCRAM channel binding cannot span two TLS connections (client to Tandem, Tandem to the server)",
                )
                .with_hint("connect with channel_binding=disable, or set upstream_tls.mode = \"disable\""),
            ),
            SessionError::UpstreamFrame(e) => {
                fatal("08006", format!("tandem: upstream sent an invalid message: {e}"))
            }
            SessionError::MalformedBackend(e) => fatal("08006", format!("tandem: {e}")),
            SessionError::UpstreamIo(e) => fatal("08006", format!("tandem: upstream connection lost: {e}")),
            SessionError::Upstream(e) => fatal("08001", format!("tandem: {e}")),
            SessionError::StartupTimeout(ms) => fatal(
                "08006",
                format!("tandem: startup and authentication did not finish within {ms} ms"),
            ),
        }
    }
}
