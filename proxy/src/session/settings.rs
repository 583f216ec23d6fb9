//! The session settings that change how the server reads SQL text, as the server reports
//! them.
//!
//! `standard_conforming_strings` and `client_encoding` decide where a string literal ends
//! and what a byte means; the server reports both in ParameterStatus at login and whenever
//! they change. The upstream loop records each report here; the client side reads them
//! before it lexes a statement (see `tandem_rules::reading`).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

use tandem_rules::{CharWidths, Lexing};

/// The settings of one session, shared by its two loops.
#[derive(Debug)]
pub struct SessionSettings {
    /// `standard_conforming_strings = on`.
    standard_conforming_strings: AtomicBool,
    /// `client_encoding`, as the server names it.
    client_encoding: Mutex<String>,
}

impl SessionSettings {
    /// The settings from the ParameterStatus messages of the login (the server's defaults
    /// when one is missing).
    pub fn from_login(params: &[(String, String)]) -> Self {
        let settings = Self {
            standard_conforming_strings: AtomicBool::new(true),
            client_encoding: Mutex::new("UTF8".to_string()),
        };
        for (name, value) in params {
            settings.report(name, value);
        }
        settings
    }

    /// Records one ParameterStatus report; other parameters are ignored.
    pub fn report(&self, name: &str, value: &str) {
        match name {
            "standard_conforming_strings" => self
                .standard_conforming_strings
                .store(value.eq_ignore_ascii_case("on"), Relaxed),
            "client_encoding" => {
                *self
                    .client_encoding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = value.to_string();
            }
            _ => {}
        }
    }

    /// Records a ParameterStatus message body (`name\0value\0`), if well formed.
    pub fn report_message(&self, body: &[u8]) {
        let mut parts = body.split(|&b| b == 0);
        if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            if let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) {
                self.report(name, value);
            }
        }
    }

    /// The encoding's name.
    pub fn client_encoding(&self) -> String {
        self.client_encoding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How the server reads text in this session now.
    pub fn lexing(&self, client_encoding: &str) -> Lexing {
        Lexing {
            standard_conforming_strings: self.standard_conforming_strings.load(Relaxed),
            encoding: CharWidths::of_encoding(client_encoding),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_update_the_settings() {
        let s = SessionSettings::from_login(&[
            ("client_encoding".into(), "SJIS".into()),
            ("standard_conforming_strings".into(), "off".into()),
        ]);
        assert_eq!(s.client_encoding(), "SJIS");
        assert!(!s.lexing("SJIS").standard_conforming_strings);
        s.report_message(b"standard_conforming_strings\0on\0");
        s.report_message(b"client_encoding\0UTF8\0");
        assert_eq!(s.client_encoding(), "UTF8");
        assert_eq!(s.lexing("UTF8"), Lexing::default());
        s.report_message(b"garbage");
        assert_eq!(s.client_encoding(), "UTF8");
    }
}
