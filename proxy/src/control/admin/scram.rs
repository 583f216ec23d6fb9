//! Server-side SCRAM-SHA-256 (RFC 5802/7677) for the admin console.
//!
//! The admin console is Tandem's own database, so Tandem authenticates its user itself,
//! the way PostgreSQL does: the configured password becomes a verifier (salt, iteration
//! count, StoredKey, ServerKey, PostgreSQL's `SCRAM-SHA-256$...` format, which may also be
//! configured directly), and the exchange proves the client knows the password without the
//! password crossing the wire. Channel binding is not offered (`SCRAM-SHA-256-PLUS` is
//! never advertised), so a client insisting on it (`p=` GS2 flag) is refused.

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

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message is not SCRAM.
    Malformed(&'static str),
    /// The client asked for channel binding.
    ChannelBinding,
    /// The client sent an authorization identity (`a=` in the GS2 header), which
    /// PostgreSQL does not support either.
    AuthorizationIdentity,
    /// Wrong password (or a tampered exchange).
    BadProof,
}

/// The server's side of one exchange, between the client's first and final messages.
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl Exchange {
    /// Reads the client-first message; returns the exchange and the server-first message.
    pub fn start(
        client_first: &[u8],
        verifier: &Verifier,
        server_nonce: &[u8],
    ) -> Result<(Self, String), ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("client-first-message is not UTF-8"))?;
        let (gs2_flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match gs2_flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad GS2 flag")),
        }
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
                gs2_header: format!("{gs2_flag},{authzid},"),
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
        if channel != Some(STANDARD.encode(self.gs2_header.as_bytes()).as_str()) {
            return Err(ScramError::Malformed("channel binding data does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
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
        // Constant-time comparison.
        let diff = stored
            .iter()
            .zip(&verifier.stored_key)
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
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

    fn run(password: &str, verifier: &Verifier) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let (exchange, server_first) =
            Exchange::start(client.message(), verifier, b"server-nonce-bytes")?;
        client
            .update(server_first.as_bytes())
            .map_err(|_| ScramError::Malformed("client"))?;
        let server_final = exchange.finish(client.message(), verifier)?;
        client
            .finish(server_final.as_bytes())
            .map_err(|_| ScramError::BadProof)
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
    fn channel_binding_and_garbage_are_refused() {
        let v = Verifier::from_password("pw");
        assert_eq!(
            Exchange::start(b"p=tls-server-end-point,,n=,r=abc", &v, b"n").err(),
            Some(ScramError::ChannelBinding)
        );
        assert!(Exchange::start(b"garbage", &v, b"n").is_err());
        assert!(Exchange::start(&[0xff, 0xfe], &v, b"n").is_err());
        let (ex, _) = Exchange::start(b"n,,n=,r=abc", &v, b"n").unwrap();
        assert!(ex.finish(b"c=biws,r=wrong,p=AAAA", &v).is_err());
    }

    #[test]
    fn an_authorization_identity_is_refused_as_postgres_refuses_it() {
        let v = Verifier::from_password("pw");
        assert_eq!(
            Exchange::start(b"n,a=someone,n=,r=abc", &v, b"n").err(),
            Some(ScramError::AuthorizationIdentity)
        );
        assert_eq!(
            Exchange::start(b"y,a=admin,n=,r=abc", &v, b"n").err(),
            Some(ScramError::AuthorizationIdentity)
        );
    }
}
