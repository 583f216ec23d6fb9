//! The session settings that change how the server reads SQL text, as the server reports
//! them.
//!
//! `standard_conforming_strings` and `client_encoding` decide where a string literal ends
//! and what a byte means; the server reports both in ParameterStatus at login and whenever
//! they change. The upstream loop records each report here; the client side reads them
//! before it lexes a statement (see `tandem_rules::reading`).
//!
//! From PostgreSQL 18 the server reports `search_path` the same way; the client side
//! follows a change of it without asking (see `mirror::probe`).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tandem_rules::{CharWidths, Lexing, SessionReading};

/// How the session reads text at one moment: what a [`SessionReading`] borrows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSettings {
    /// String syntax and character widths.
    pub lexing: Lexing,
    /// The client encoding's name, as the server reported it.
    pub client_encoding: Arc<str>,
}

impl TextSettings {
    /// The reading of a statement under these settings; `certain` is false while a
    /// statement that may change them is still running.
    pub fn reading(&self, certain: bool) -> SessionReading<'_> {
        SessionReading {
            lexing: self.lexing,
            client_encoding: &self.client_encoding,
            certain,
        }
    }
}

/// The settings of one session, shared by its two loops.
#[derive(Debug)]
pub struct SessionSettings {
    /// `standard_conforming_strings = on`.
    standard_conforming_strings: AtomicBool,
    /// `client_encoding`, as the server names it, with its character widths (worked out
    /// once per report, not per statement).
    client_encoding: Mutex<(Arc<str>, CharWidths)>,
    /// The last `search_path` the server reported (PostgreSQL 18 and later; `None` before).
    search_path: Mutex<Option<Arc<str>>>,
    /// The server reports `search_path` (so older servers never take the lock above).
    reports_search_path: AtomicBool,
}

impl SessionSettings {
    /// The settings from the ParameterStatus messages of the login (the server's defaults
    /// when one is missing).
    pub fn from_login(params: &[(String, String)]) -> Self {
        let settings = Self {
            standard_conforming_strings: AtomicBool::new(true),
            client_encoding: Mutex::new((Arc::from("UTF8"), CharWidths::HighBitBytes)),
            search_path: Mutex::new(None),
            reports_search_path: AtomicBool::new(false),
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
                    .unwrap_or_else(|p| p.into_inner()) =
                    (Arc::from(value), CharWidths::of_encoding(value));
            }
            "search_path" => {
                *self.search_path.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Arc::from(value));
                self.reports_search_path.store(true, Relaxed);
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

    /// The session's search_path as the server last reported it, if it reports it
    /// (PostgreSQL 18 and later). At a quiet point (every statement sent has been
    /// answered) it is the path now: the server reports a changed value before its
    /// ReadyForQuery.
    pub fn reported_search_path(&self) -> Option<Arc<str>> {
        if !self.reports_search_path.load(Relaxed) {
            return None;
        }
        self.search_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How the server reads text in this session now (no allocation: the encoding's name
    /// is shared).
    pub fn now(&self) -> TextSettings {
        let (name, widths) = self
            .client_encoding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        TextSettings {
            lexing: Lexing {
                standard_conforming_strings: self.standard_conforming_strings.load(Relaxed),
                encoding: widths,
            },
            client_encoding: name,
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
        assert_eq!(&*s.now().client_encoding, "SJIS");
        assert_eq!(s.now().lexing.encoding, CharWidths::Sjis);
        assert!(!s.now().lexing.standard_conforming_strings);
        s.report_message(b"standard_conforming_strings\0on\0");
        s.report_message(b"client_encoding\0UTF8\0");
        assert_eq!(&*s.now().client_encoding, "UTF8");
        assert_eq!(s.now().lexing, Lexing::default());
        s.report_message(b"garbage");
        assert_eq!(&*s.now().client_encoding, "UTF8");
    }

    #[test]
    fn a_reported_search_path_is_kept_only_once_the_server_reports_it() {
        let s = SessionSettings::from_login(&[("client_encoding".into(), "UTF8".into())]);
        assert_eq!(s.reported_search_path(), None, "PostgreSQL 17 and older");
        let s = SessionSettings::from_login(&[("search_path".into(), "\"$user\", public".into())]);
        assert_eq!(
            s.reported_search_path().as_deref(),
            Some("\"$user\", public")
        );
        s.report_message(b"search_path\0app, public\0");
        assert_eq!(s.reported_search_path().as_deref(), Some("app, public"));
    }
}
