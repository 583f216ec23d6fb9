//! Backend messages Tandem reads during startup or originates itself.
//!
//! Reading: the Authentication request kind (to know when the client must answer, and to
//! hide SCRAM-SHA-256-PLUS), BackendKeyData (to map cancel keys), ErrorResponse fields (for
//! logs; a missing SQLSTATE is tolerated). Writing: ErrorResponse / NoticeResponse with
//! Postgres's field layout, BackendKeyData, and a filtered SASL mechanism list.

use bytes::{BufMut, BytesMut};

use super::frame::{begin, finish, read_cstr, read_i32};
use super::tag;

/// Authentication request codes (the i32 after the 'R' header).
pub mod auth {
    /// AuthenticationOk.
    pub const OK: i32 = 0;
    /// AuthenticationCleartextPassword.
    pub const CLEARTEXT: i32 = 3;
    /// AuthenticationMD5Password.
    pub const MD5: i32 = 5;
    /// AuthenticationGSS.
    pub const GSS: i32 = 7;
    /// AuthenticationGSSContinue.
    pub const GSS_CONTINUE: i32 = 8;
    /// AuthenticationSSPI.
    pub const SSPI: i32 = 9;
    /// AuthenticationSASL (mechanism list follows).
    pub const SASL: i32 = 10;
    /// AuthenticationSASLContinue.
    pub const SASL_CONTINUE: i32 = 11;
    /// AuthenticationSASLFinal.
    pub const SASL_FINAL: i32 = 12;

    /// Whether the client must answer this request with a PasswordMessage-family message.
    pub fn expects_client_reply(code: i32) -> bool {
        matches!(
            code,
            CLEARTEXT | MD5 | GSS | GSS_CONTINUE | SSPI | SASL | SASL_CONTINUE
        )
    }
}

/// The SCRAM mechanism that binds to the TLS channel; it cannot hold across two TLS legs.
pub const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// A malformed backend message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} from upstream")]
pub struct MalformedBackend {
    /// Which message.
    pub what: &'static str,
}

/// Reads the request code of an Authentication message body.
pub fn auth_code(body: &[u8]) -> Result<i32, MalformedBackend> {
    read_i32(body).map(|(c, _)| c).ok_or(MalformedBackend {
        what: "Authentication message",
    })
}

/// Lists the mechanisms of an AuthenticationSASL body (code included).
pub fn sasl_mechanisms(body: &[u8]) -> Result<Vec<String>, MalformedBackend> {
    let err = MalformedBackend {
        what: "AuthenticationSASL message",
    };
    let (_, mut rest) = read_i32(body).ok_or(err.clone())?;
    let mut mechs = Vec::new();
    loop {
        let (m, after) = read_cstr(rest).ok_or(err.clone())?;
        if m.is_empty() {
            return Ok(mechs);
        }
        mechs.push(String::from_utf8_lossy(m).into_owned());
        rest = after;
    }
}

/// Encodes AuthenticationSASL with the given mechanisms.
pub fn encode_sasl(mechs: &[String], out: &mut BytesMut) {
    let start = begin(out, tag::AUTHENTICATION);
    out.put_i32(auth::SASL);
    for m in mechs {
        out.put_slice(m.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    finish(out, start);
}

/// Reads BackendKeyData: process id and secret key (4 bytes in 3.0, up to 256 in 3.2).
pub fn backend_key(body: &[u8]) -> Result<(i32, Vec<u8>), MalformedBackend> {
    let (pid, key) = read_i32(body).ok_or(MalformedBackend {
        what: "BackendKeyData message",
    })?;
    if key.len() < 4 {
        return Err(MalformedBackend {
            what: "BackendKeyData message",
        });
    }
    Ok((pid, key.to_vec()))
}

/// Encodes BackendKeyData.
pub fn encode_backend_key(pid: i32, secret: &[u8], out: &mut BytesMut) {
    let start = begin(out, tag::BACKEND_KEY_DATA);
    out.put_i32(pid);
    out.put_slice(secret);
    finish(out, start);
}

/// Encodes NegotiateProtocolVersion: the newest protocol Tandem itself speaks (3.0) and the
/// `_pq_.` options it does not know, for a client that asked for more.
pub fn encode_negotiate_protocol_version(unrecognized: &[&str], out: &mut BytesMut) {
    let start = begin(out, tag::NEGOTIATE_PROTOCOL_VERSION);
    out.put_i32(0x0003_0000);
    out.put_i32(i32::try_from(unrecognized.len()).unwrap_or(i32::MAX));
    for name in unrecognized {
        out.put_slice(name.as_bytes());
        out.put_u8(0);
    }
    finish(out, start);
}

/// Fields of an ErrorResponse or NoticeResponse, as far as Tandem needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// 'S': ERROR, FATAL, PANIC, WARNING...
    pub severity: String,
    /// 'C': the SQLSTATE, when the sender included it.
    pub code: Option<String>,
    /// 'M': the primary message.
    pub message: String,
    /// 'D': detail.
    pub detail: Option<String>,
    /// 'H': hint.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// An error Tandem itself raises.
    pub fn new(severity: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            severity: severity.to_string(),
            code: Some(code.to_string()),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// Adds a detail line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Decodes the body of an ErrorResponse/NoticeResponse. Unknown fields are skipped and
    /// missing ones (even SQLSTATE) are tolerated: a peer's omission is not our crash.
    pub fn parse(body: &[u8]) -> Self {
        let mut fields = Self::default();
        let mut rest = body;
        while let Some((&kind, after)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let Some((value, after_value)) = read_cstr(after) else {
                break;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'S' => fields.severity = value,
                b'C' => fields.code = Some(value),
                b'M' => fields.message = value,
                b'D' => fields.detail = Some(value),
                b'H' => fields.hint = Some(value),
                _ => {}
            }
            rest = after_value;
        }
        fields
    }

    /// Encodes as an ErrorResponse.
    pub fn encode_error(&self, out: &mut BytesMut) {
        self.encode(tag::ERROR_RESPONSE, out);
    }

    /// Encodes as a NoticeResponse.
    pub fn encode_notice(&self, out: &mut BytesMut) {
        self.encode(tag::NOTICE_RESPONSE, out);
    }

    fn encode(&self, tag: u8, out: &mut BytesMut) {
        let start = begin(out, tag);
        let mut field = |kind: u8, value: &str| {
            out.put_u8(kind);
            // A NUL inside a field would end it early on the client; drop any.
            out.extend(value.bytes().filter(|&b| b != 0));
            out.put_u8(0);
        };
        field(b'S', &self.severity);
        field(b'V', &self.severity);
        if let Some(code) = &self.code {
            field(b'C', code);
        }
        field(b'M', &self.message);
        if let Some(detail) = &self.detail {
            field(b'D', detail);
        }
        if let Some(hint) = &self.hint {
            field(b'H', hint);
        }
        out.put_u8(0);
        finish(out, start);
    }
}

/// Encodes ReadyForQuery with the given transaction status ('I', 'T' or 'E').
pub fn encode_ready_for_query(status: u8, out: &mut BytesMut) {
    let start = begin(out, tag::READY_FOR_QUERY);
    out.put_u8(status);
    finish(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::frame::parse_header;

    #[test]
    fn error_round_trip() {
        let e = ErrorFields::new("FATAL", "53300", "sorry, too many clients already")
            .with_hint("raise max_clients");
        let mut b = BytesMut::new();
        e.encode_error(&mut b);
        let h = parse_header(&b, 1 << 20).unwrap().unwrap();
        assert_eq!(h.tag, b'E');
        assert_eq!(h.frame_len(), b.len());
        assert_eq!(ErrorFields::parse(&b[5..]), e);
    }

    #[test]
    fn error_without_sqlstate_parses() {
        let e = ErrorFields::parse(b"SERROR\0Mboom\0\0");
        assert_eq!(e.code, None);
        assert_eq!(e.message, "boom");
        // Truncated and garbage bodies do not panic.
        let _ = ErrorFields::parse(b"SERR");
        let _ = ErrorFields::parse(b"");
    }

    #[test]
    fn sasl_list_round_trip() {
        let mechs = vec![SCRAM_PLUS.to_string(), "SCRAM-SHA-256".to_string()];
        let mut b = BytesMut::new();
        encode_sasl(&mechs, &mut b);
        assert_eq!(auth_code(&b[5..]), Ok(auth::SASL));
        assert_eq!(sasl_mechanisms(&b[5..]).unwrap(), mechs);
        assert!(sasl_mechanisms(&b[5..b.len() - 1]).is_err());
    }

    #[test]
    fn negotiate_names_3_0_and_the_unknown_options() {
        let mut out = BytesMut::new();
        encode_negotiate_protocol_version(&["_pq_.x"], &mut out);
        assert_eq!(
            &out[..],
            b"v\0\0\0\x13\0\x03\0\0\0\0\0\x01_pq_.x\0".as_slice()
        );
    }

    #[test]
    fn backend_key_checks_length() {
        assert!(backend_key(&[0, 0, 0, 1, 9]).is_err());
        assert_eq!(
            backend_key(&[0, 0, 0, 1, 1, 2, 3, 4]),
            Ok((1, vec![1, 2, 3, 4]))
        );
    }
}
