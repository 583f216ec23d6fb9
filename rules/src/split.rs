//! Cutting a simple-query string into its statements, keeping each one's original text.
//!
//! A client may send `BEGIN; INSERT …; COMMIT` in one message. Each statement is planned on
//! its own, and the ones Tandem leaves alone must go back to the server exactly as the client
//! wrote them, comments and spacing included. Cutting at the top-level `;` found by the
//! [lexer](crate::lexer) gives those slices without re-serialising anything. Pieces that hold
//! only whitespace or comments (`;;`, a trailing comment) are dropped, as the server does.

use std::ops::Range;

use crate::lexer::{Kind, Lexing, Scanner};

/// The statements of `sql`, trimmed of surrounding whitespace, without their `;`.
pub(crate) fn split_statements(sql: &str) -> Vec<&str> {
    statement_spans(sql.as_bytes(), Lexing::default())
        .into_iter()
        .map(|span| sql[span].trim())
        .collect()
}

/// Byte ranges of the statements of `src` as a session with `lexing` reads it: cut at each
/// top-level `;`, without it, pieces holding only whitespace or comments left out.
pub fn statement_spans(src: &[u8], lexing: Lexing) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    let mut has_token = false;
    for token in Scanner::with(src, lexing) {
        if token.kind == Kind::Semicolon {
            if has_token {
                spans.push(start..token.start);
            }
            start = token.end;
            has_token = false;
        } else {
            has_token = true;
        }
    }
    if has_token {
        spans.push(start..src.len());
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons() {
        let sql = "BEGIN; INSERT INTO t VALUES ('a;b', $$;$$) /* ; */;\n COMMIT;";
        assert_eq!(
            split_statements(sql),
            vec![
                "BEGIN",
                "INSERT INTO t VALUES ('a;b', $$;$$) /* ; */",
                "COMMIT"
            ]
        );
    }

    #[test]
    fn drops_empty_pieces() {
        assert_eq!(split_statements(" ; ;-- c\n"), Vec::<&str>::new());
        assert_eq!(split_statements("SELECT 1;; -- done"), vec!["SELECT 1"]);
        assert_eq!(
            split_statements("-- lead\nSELECT 1"),
            vec!["-- lead\nSELECT 1"]
        );
    }
}
