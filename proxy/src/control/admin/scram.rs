//! Server-side SCRAM-SHA-256 (RFC 5802/7677) for the admin console.
//!
//! The admin console is Tandem's own database, so Tandem authenticates its user itself,
//! the way PostgreSQL does: the configured password becomes a verifier (salt, iteration
//! count, StoredKey, ServerKey, PostgreSQL's `SCRAM-SHA-256$...` format, which may also be
//! configured directly), and the exchange proves the client knows the password without the
//! password crossing the wire. Over TLS the exchange may also be bound to Tandem's
//! certificate (`SCRAM-SHA-256-PLUS`, RFC 5802 section 6, with RFC 5929's
//! `tls-server-end-point`, the only binding PostgreSQL supports): the client's final message
//! then carries the hash of the certificate it saw, so a man in the middle with another
//! certificate cannot relay the login. The checks and their order are PostgreSQL's
//! (`auth-scram.c`, `read_client_first_message` and `read_client_final_message`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(SCRAM-SHA-256, redacted)")
    }
}

impl Verifier {
    /// Parses PostgreSQL's format: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            "not a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)".to_string()
        };
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| {
            STANDARD
                .decode(s)
                .map_err(|e| format!("bad base64 in verifier: {e}"))
        };
        let verifier = Self {
            iterations: iterations.parse().map_err(|_| bad())?,
            salt: decode(salt)?,
            stored_key: decode(stored)?,
            server_key: decode(server)?,
        };
        if verifier.iterations == 0
            || verifier.stored_key.len() != 32
            || verifier.server_key.len() != 32
        {
            return Err(bad());
        }
        Ok(verifier)
    }

    /// A verifier for a plain password, with a random salt (PostgreSQL's own derivation).
    pub fn from_password(password: &str) -> Self {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The library's own output always parses.
        Self::parse(&text).unwrap_or_else(|_| Self {
            iterations: 4096,
            salt: Vec::new(),
            stored_key: vec![0; 32],
            server_key: vec![0; 32],
        })
    }
}

/// The mechanism without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The mechanism with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The one channel-binding type PostgreSQL (and so the console) supports.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// The mechanism the client chose, and what the server offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    /// `SCRAM-SHA-256`; `plus_offered`: whether `SCRAM-SHA-256-PLUS` was offered too (then a
    /// client saying it could bind but thinks the server cannot, `y`, is refused).
    Unbound {
        /// `SCRAM-SHA-256-PLUS` was offered.
        plus_offered: bool,
    },
    /// `SCRAM-SHA-256-PLUS`, bound to this `tls-server-end-point` data (the hash of the
    /// server's certificate).
    Bound(&'a [u8]),
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message is not SCRAM.
    Malformed(&'static str),
    /// The GS2 flag does not match the mechanism (PostgreSQL: `08P01 malformed SCRAM
    /// message`, with this as its detail).
    FlagMismatch(&'static str),
    /// `p=` names a binding type other than `tls-server-end-point` (PostgreSQL: `08P01`).
    UnsupportedBindingType(String),
    /// `y`: the client could bind but thinks the server cannot, while the server offered
    /// `SCRAM-SHA-256-PLUS` (a downgrade; PostgreSQL: `28000`).
    BindingNegotiation,
    /// The client-final `c=` does not carry this server's certificate hash (PostgreSQL:
    /// `28000 SCRAM channel binding check failed`).
    BindingMismatch,
    /// Without binding, the client-final `c=` is not the client-first GS2 header
    /// (PostgreSQL: `08P01 unexpected SCRAM channel-binding attribute in
    /// client-final-message`).
    UnexpectedBinding,
    /// The client-final nonce is not the exchange's (PostgreSQL: `08P01 invalid SCRAM
    /// response`, detail `Nonce does not match.`).
    NonceMismatch,
    /// The client sent an authorization identity (`a=` in the GS2 header), which
    /// PostgreSQL does not support either.
    AuthorizationIdentity,
    /// Wrong password (or a tampered exchange).
    BadProof,
}

/// PostgreSQL's refusal of a channel-binding error: SQLSTATE, message and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE.
    pub code: &'static str,
    /// Message, as PostgreSQL words it.
    pub message: String,
    /// Detail, as PostgreSQL words it.
    pub detail: Option<&'static str>,
}

impl ScramError {
    /// PostgreSQL's refusal for a channel-binding or exchange error (auth-scram.c,
    /// `read_client_first_message` and `read_client_final_message`); `None` for the others.
    pub fn binding_refusal(&self) -> Option<Refusal> {
        let (code, message, detail) = match self {
            Self::FlagMismatch(detail) => {
                ("08P01", "malformed SCRAM message".into(), Some(*detail))
            }
            Self::UnsupportedBindingType(kind) => {
                // Peer input, shown as PostgreSQL's sanitize_str does, and shortened.
                let kind: String = kind
                    .chars()
                    .take(64)
                    .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                    .collect();
                (
                    "08P01",
                    format!("unsupported SCRAM channel-binding type \"{kind}\""),
                    None,
                )
            }
            Self::BindingNegotiation => (
                "28000",
                "SCRAM channel binding negotiation error".into(),
                Some(
                    "The client supports SCRAM channel binding but thinks the server does not.  \
                     However, this server does support channel binding.",
                ),
            ),
            Self::BindingMismatch => ("28000", "SCRAM channel binding check failed".into(), None),
            Self::UnexpectedBinding => (
                "08P01",
                "unexpected SCRAM channel-binding attribute in client-final-message".into(),
                None,
            ),
            Self::NonceMismatch => (
                "08P01",
                "invalid SCRAM response".into(),
                Some("Nonce does not match."),
            ),
            _ => return None,
        };
        Some(Refusal {
            code,
            message,
            detail,
        })
    }
}

/// The body of AuthenticationSASL: the mechanisms, `SCRAM-SHA-256-PLUS` first when
/// `plus` (as PostgreSQL lists them), each NUL-terminated, then a NUL.
pub fn mechanisms(plus: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for name in [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        .into_iter()
        .filter(|&m| plus || m == SCRAM_SHA_256)
    {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    out.push(0);
    out
}

/// The server's side of one exchange, between the client's first and final messages.
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    /// The `c=` the client-final message must carry: base64 of the GS2 header, followed
    /// by the binding data when bound.
    expected_binding: String,
    bound: bool,
    nonce: String,
}

/// Equality in time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl Exchange {
    /// Reads the client-first message of the mechanism `channel` says the client chose;
    /// returns the exchange and the server-first message.
    pub fn start(
        client_first: &[u8],
        verifier: &Verifier,
        server_nonce: &[u8],
        channel: Channel<'_>,
    ) -> Result<(Self, String), ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("client-first-message is not UTF-8"))?;
        let (gs2_flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        // In PostgreSQL's order: the flag against the mechanism, then the binding type.
        let binding: &[u8] = match (gs2_flag.strip_prefix("p="), gs2_flag, channel) {
            (None, "n" | "y", Channel::Bound(_)) => {
                return Err(ScramError::FlagMismatch(
                    "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not \
                     include channel binding data.",
                ))
            }
            (None, "y", Channel::Unbound { plus_offered: true }) => {
                return Err(ScramError::BindingNegotiation)
            }
            (None, "n" | "y", Channel::Unbound { .. }) => &[],
            (Some(_), _, Channel::Unbound { .. }) => {
                return Err(ScramError::FlagMismatch(
                    "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM \
                     message includes channel binding data.",
                ))
            }
            (Some(TLS_SERVER_END_POINT), _, Channel::Bound(data)) => data,
            (Some(kind), _, Channel::Bound(_)) => {
                return Err(ScramError::UnsupportedBindingType(kind.to_string()))
            }
            (None, _, _) => return Err(ScramError::Malformed("bad GS2 flag")),
        };
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if authzid.starts_with("a=") {
            return Err(ScramError::AuthorizationIdentity);
        }
        if !authzid.is_empty() {
            return Err(ScramError::Malformed("bad authzid"));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            Self {
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                expected_binding: STANDARD
                    .encode([format!("{gs2_flag},{authzid},").as_bytes(), binding].concat()),
                bound: matches!(channel, Channel::Bound(_)),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks the client-final message; returns the server-final message on success.
    pub fn finish(self, client_final: &[u8], verifier: &Verifier) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final-message is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        // The binding first, as PostgreSQL checks it: a bound exchange that fails here was
        // relayed through another certificate (or the client hashed it differently).
        let binding_matches = channel
            .is_some_and(|c| constant_time_eq(c.as_bytes(), self.expected_binding.as_bytes()));
        if !binding_matches {
            return Err(if self.bound {
                ScramError::BindingMismatch
            } else {
                ScramError::UnexpectedBinding
            });
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::NonceMismatch);
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored = Sha256::digest(&client_key);
        if !constant_time_eq(&stored, &verifier.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    const UNBOUND: Channel<'static> = Channel::Unbound {
        plus_offered: false,
    };

    /// One exchange of a real client (postgres-protocol's) binding with `client_binding`
    /// against the server's `channel`.
    fn exchange(
        password: &str,
        verifier: &Verifier,
        client_binding: ChannelBinding,
        channel: Channel<'_>,
    ) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), client_binding);
        let (exchange, server_first) =
            Exchange::start(client.message(), verifier, b"server-nonce-bytes", channel)?;
        client
            .update(server_first.as_bytes())
            .map_err(|_| ScramError::Malformed("client"))?;
        let server_final = exchange.finish(client.message(), verifier)?;
        client
            .finish(server_final.as_bytes())
            .map_err(|_| ScramError::BadProof)
    }

    fn run(password: &str, verifier: &Verifier) -> Result<(), ScramError> {
        exchange(password, verifier, ChannelBinding::unsupported(), UNBOUND)
    }

    #[test]
    fn the_right_password_passes_and_a_wrong_one_fails() {
        let verifier = Verifier::from_password("s3cret");
        assert_eq!(run("s3cret", &verifier), Ok(()));
        assert_eq!(run("wrong", &verifier), Err(ScramError::BadProof));
    }

    #[test]
    fn a_postgres_verifier_works_as_configured() {
        let text = postgres_protocol::password::scram_sha_256(b"pw");
        let verifier = Verifier::parse(&text).unwrap();
        assert_eq!(run("pw", &verifier), Ok(()));
        assert!(Verifier::parse("md5abc").is_err());
        assert!(Verifier::parse("SCRAM-SHA-256$x:y$z:w").is_err());
    }

    #[test]
    fn a_bound_exchange_passes_with_the_servers_hash_only() {
        let v = Verifier::from_password("pw");
        let hash = [7u8; 32];
        let bound = Channel::Bound(&hash);
        let with = |data: &[u8]| ChannelBinding::tls_server_end_point(data.to_vec());
        assert_eq!(exchange("pw", &v, with(&hash), bound), Ok(()));
        // Another certificate's hash (a relay), or none at all: refused before the proof.
        assert_eq!(
            exchange("pw", &v, with(&[8u8; 32]), bound),
            Err(ScramError::BindingMismatch)
        );
        assert_eq!(
            exchange("pw", &v, with(&hash[..31]), bound),
            Err(ScramError::BindingMismatch)
        );
        assert_eq!(
            exchange("wrong", &v, with(&[8u8; 32]), bound),
            Err(ScramError::BindingMismatch)
        );
        assert_eq!(
            exchange("wrong", &v, with(&hash), bound),
            Err(ScramError::BadProof)
        );
        // A hand-built final message claiming the unbound header.
        let (ex, _) =
            Exchange::start(b"p=tls-server-end-point,,n=,r=abc", &v, b"n", bound).unwrap();
        assert_eq!(
            ex.finish(b"c=biws,r=abcbg==,p=AAAA", &v).err(),
            Some(ScramError::BindingMismatch)
        );
    }

    #[test]
    fn a_final_message_out_of_step_is_refused_as_postgres_refuses_it() {
        let v = Verifier::from_password("pw");
        let start = || {
            Exchange::start(b"n,,n=,r=abc", &v, b"n", UNBOUND)
                .unwrap()
                .0
        };
        // `c=` must repeat the client-first header (`n,,`: biws).
        let e = start().finish(b"c=eSws,r=abcbg==,p=AAAA", &v).unwrap_err();
        assert_eq!(e, ScramError::UnexpectedBinding);
        let refusal = e.binding_refusal().unwrap();
        assert_eq!(
            (refusal.code, refusal.message.as_str()),
            (
                "08P01",
                "unexpected SCRAM channel-binding attribute in client-final-message"
            )
        );
        let e = start().finish(b"c=biws,r=abcXX==,p=AAAA", &v).unwrap_err();
        assert_eq!(e, ScramError::NonceMismatch);
        let refusal = e.binding_refusal().unwrap();
        assert_eq!(
            (refusal.code, refusal.message.as_str(), refusal.detail),
            (
                "08P01",
                "invalid SCRAM response",
                Some("Nonce does not match.")
            )
        );
    }

    #[test]
    fn the_gs2_flag_must_match_the_mechanism_as_postgres_checks_it() {
        let v = Verifier::from_password("pw");
        let hash = [7u8; 32];
        let bound = Channel::Bound(&hash);
        let offered = Channel::Unbound { plus_offered: true };
        let start = |first: &[u8], channel| Exchange::start(first, &v, b"n", channel).err();
        // p= with the plain mechanism, offered PLUS or not.
        for channel in [UNBOUND, offered] {
            assert!(matches!(
                start(b"p=tls-server-end-point,,n=,r=abc", channel),
                Some(ScramError::FlagMismatch(_))
            ));
        }
        // PLUS with n or y.
        for first in [&b"n,,n=,r=abc"[..], b"y,,n=,r=abc"] {
            assert!(matches!(
                start(first, bound),
                Some(ScramError::FlagMismatch(_))
            ));
        }
        // y while PLUS was offered: a downgrade. Without PLUS offered, y is plain SCRAM.
        assert_eq!(
            start(b"y,,n=,r=abc", offered),
            Some(ScramError::BindingNegotiation)
        );
        assert_eq!(start(b"y,,n=,r=abc", UNBOUND), None);
        assert_eq!(start(b"n,,n=,r=abc", offered), None);
        assert_eq!(
            start(b"p=tls-unique,,n=,r=abc", bound),
            Some(ScramError::UnsupportedBindingType("tls-unique".into()))
        );
        assert_eq!(start(b"p=tls-server-end-point,,n=,r=abc", bound), None);
        // y and n as the client declared them, in c= of the final message.
        assert_eq!(
            exchange("pw", &v, ChannelBinding::unrequested(), UNBOUND),
            Ok(())
        );
    }

    #[test]
    fn plus_is_listed_first_and_refusals_are_worded_as_postgres_words_them() {
        assert_eq!(mechanisms(false), b"SCRAM-SHA-256\0\0");
        assert_eq!(mechanisms(true), b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let code = |e: ScramError| e.binding_refusal().map(|r| r.code);
        assert_eq!(code(ScramError::BindingMismatch), Some("28000"));
        assert_eq!(code(ScramError::BindingNegotiation), Some("28000"));
        assert_eq!(code(ScramError::FlagMismatch("x")), Some("08P01"));
        assert_eq!(code(ScramError::BadProof), None);
        assert_eq!(code(ScramError::AuthorizationIdentity), None);
        let odd = ScramError::UnsupportedBindingType(format!("tls\u{1}{}", "x".repeat(100)));
        let message = odd.binding_refusal().map(|r| r.message).unwrap_or_default();
        assert!(message.starts_with("unsupported SCRAM channel-binding type \"tls?x"));
        assert!(message.len() < 120, "{message}");
    }

    #[test]
    fn garbage_is_refused() {
        let v = Verifier::from_password("pw");
        assert!(Exchange::start(b"garbage", &v, b"n", UNBOUND).is_err());
        assert!(Exchange::start(&[0xff, 0xfe], &v, b"n", UNBOUND).is_err());
        assert!(Exchange::start(b"q,,n=,r=abc", &v, b"n", UNBOUND).is_err());
        assert!(Exchange::start(b"p,,n=,r=abc", &v, b"n", Channel::Bound(&[1])).is_err());
        let (ex, _) = Exchange::start(b"n,,n=,r=abc", &v, b"n", UNBOUND).unwrap();
        assert!(ex.finish(b"c=biws,r=wrong,p=AAAA", &v).is_err());
    }

    #[test]
    fn an_authorization_identity_is_refused_as_postgres_refuses_it() {
        let v = Verifier::from_password("pw");
        assert_eq!(
            Exchange::start(b"n,a=someone,n=,r=abc", &v, b"n", UNBOUND).err(),
            Some(ScramError::AuthorizationIdentity)
        );
        assert_eq!(
            Exchange::start(b"y,a=admin,n=,r=abc", &v, b"n", UNBOUND).err(),
            Some(ScramError::AuthorizationIdentity)
        );
    }
}
