//! Untagged startup packets: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.
//!
//! These are the first bytes a client sends, before it has authenticated, so every length
//! and string is checked and a malformed packet becomes a typed error, never a panic.

use bytes::{BufMut, BytesMut};

use super::frame::{read_cstr, read_i32};

/// Request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80877103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80877102;
/// Smallest startup packet: length word plus code.
pub const MIN_STARTUP_LEN: usize = 8;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// The client asks to cancel the query running on another connection.
    Cancel {
        /// Process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData (4 bytes in protocol 3.0, longer in 3.2).
        secret: Vec<u8>,
    },
    /// A StartupMessage.
    Startup(StartupMessage),
}

/// A StartupMessage: protocol version and parameters, in the client's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Major protocol version (3).
    pub major: u16,
    /// Minor protocol version (0, or higher for newer clients; the upstream negotiates).
    pub minor: u16,
    /// Parameters such as `user`, `database`, `application_name`, `options`.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of a parameter, if the client sent it.
    pub fn param(&self, name: &str) -> Option<&str> {
        // The server keeps the last of duplicate keys.
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The user name (required by the protocol).
    pub fn user(&self) -> Option<&str> {
        self.param("user")
    }

    /// The database, defaulting to the user name as Postgres does (when missing or empty).
    pub fn database(&self) -> Option<&str> {
        self.param("database")
            .filter(|d| !d.is_empty())
            .or_else(|| self.user())
    }

    /// Encodes the message for the upstream, length word included.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_i32(0);
        out.put_u16(self.major);
        out.put_u16(self.minor);
        for (k, v) in &self.params {
            out.put_slice(k.as_bytes());
            out.put_u8(0);
            out.put_slice(v.as_bytes());
            out.put_u8(0);
        }
        out.put_u8(0);
        let len = (out.len() - start) as i32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Why a startup packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The length word is below 8 or above the configured limit.
    #[error("invalid length of startup packet: {length}")]
    BadLength {
        /// The length as sent.
        length: i64,
    },
    /// The client speaks a major protocol version other than 3.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedVersion {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// The packet's body is malformed.
    #[error("invalid startup packet layout: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// No user name in the StartupMessage.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
}

/// Checks the length word of a startup packet (first four bytes), returning the body length.
pub fn check_length(length: i32, max_len: usize) -> Result<usize, StartupError> {
    let bad = || StartupError::BadLength {
        length: length.into(),
    };
    let total = usize::try_from(length).map_err(|_| bad())?;
    if !(MIN_STARTUP_LEN..=max_len).contains(&total) {
        return Err(bad());
    }
    Ok(total - 4)
}

/// Decodes a startup packet body (everything after the length word).
pub fn parse(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let (code, rest) = read_i32(body).ok_or(StartupError::Malformed {
        reason: "missing request code",
    })?;
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let (pid, secret) = read_i32(rest).ok_or(StartupError::Malformed {
                reason: "cancel request without process id",
            })?;
            if secret.len() < 4 || secret.len() > 256 {
                return Err(StartupError::Malformed {
                    reason: "cancel request key must be 4 to 256 bytes",
                });
            }
            Ok(StartupPacket::Cancel {
                pid,
                secret: secret.to_vec(),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedVersion { major, minor });
            }
            let params = parse_params(rest)?;
            let msg = StartupMessage {
                major,
                minor,
                params,
            };
            if msg.user().is_none_or(str::is_empty) {
                return Err(StartupError::NoUser);
            }
            Ok(StartupPacket::Startup(msg))
        }
    }
}

fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let malformed = |reason| StartupError::Malformed { reason };
    let mut params = Vec::new();
    loop {
        let (key, after_key) = read_cstr(rest).ok_or(malformed("missing terminator"))?;
        if key.is_empty() {
            if !after_key.is_empty() {
                return Err(malformed("bytes after the final terminator"));
            }
            return Ok(params);
        }
        let (value, after_value) =
            read_cstr(after_key).ok_or(malformed("parameter without a value"))?;
        let key = String::from_utf8(key.to_vec())
            .map_err(|_| malformed("parameter name is not UTF-8"))?;
        let value = String::from_utf8(value.to_vec())
            .map_err(|_| malformed("parameter value is not UTF-8"))?;
        params.push((key, value));
        rest = after_value;
    }
}

/// Encodes a CancelRequest packet.
pub fn encode_cancel(pid: i32, secret: &[u8], out: &mut BytesMut) {
    out.put_i32((12 + secret.len()) as i32);
    out.put_i32(CANCEL_REQUEST_CODE);
    out.put_i32(pid);
    out.put_slice(secret);
}

/// Encodes an SSLRequest packet.
pub fn encode_ssl_request(out: &mut BytesMut) {
    out.put_i32(8);
    out.put_i32(SSL_REQUEST_CODE);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(msg: &StartupMessage) -> Vec<u8> {
        let mut b = BytesMut::new();
        msg.encode(&mut b);
        b[4..].to_vec()
    }

    #[test]
    fn startup_round_trip() {
        let msg = StartupMessage {
            major: 3,
            minor: 0,
            params: vec![
                ("user".into(), "app".into()),
                ("database".into(), "db".into()),
            ],
        };
        assert_eq!(parse(&body(&msg)), Ok(StartupPacket::Startup(msg.clone())));
        assert_eq!(msg.database(), Some("db"));
    }

    #[test]
    fn database_defaults_to_user() {
        let msg = StartupMessage {
            major: 3,
            minor: 0,
            params: vec![("user".into(), "app".into())],
        };
        assert_eq!(msg.database(), Some("app"));
    }

    #[test]
    fn the_last_of_duplicate_keys_wins_and_an_empty_database_is_the_user() {
        let msg = StartupMessage {
            major: 3,
            minor: 0,
            params: vec![
                ("user".into(), "app".into()),
                ("database".into(), "other".into()),
                ("database".into(), "ruled".into()),
            ],
        };
        assert_eq!(msg.database(), Some("ruled"));
        let msg = StartupMessage {
            major: 3,
            minor: 0,
            params: vec![
                ("user".into(), "app".into()),
                ("database".into(), "".into()),
            ],
        };
        assert_eq!(msg.database(), Some("app"));
    }

    #[test]
    fn special_requests() {
        assert_eq!(
            parse(&SSL_REQUEST_CODE.to_be_bytes()),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            parse(&GSSENC_REQUEST_CODE.to_be_bytes()),
            Ok(StartupPacket::GssEncRequest)
        );
        let mut b = BytesMut::new();
        encode_cancel(42, &[1, 2, 3, 4], &mut b);
        assert_eq!(
            parse(&b[4..]),
            Ok(StartupPacket::Cancel {
                pid: 42,
                secret: vec![1, 2, 3, 4]
            })
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(parse(b"").is_err());
        assert!(parse(&[0, 3, 0, 0, b'u', b's']).is_err());
        assert!(matches!(
            parse(&[0, 2, 0, 0, 0]),
            Err(StartupError::UnsupportedVersion { major: 2, .. })
        ));
        assert_eq!(parse(&[0, 3, 0, 0, 0]), Err(StartupError::NoUser));
        assert!(parse(&[0, 3, 0, 0, b'u', 0, 0]).is_err());
        assert!(parse(&[0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1]).is_err());
        assert!(check_length(-1, 10000).is_err());
        assert!(check_length(7, 10000).is_err());
        assert!(check_length(10001, 10000).is_err());
        assert_eq!(check_length(8, 10000), Ok(4));
    }
}
