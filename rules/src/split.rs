//! Cutting a simple-query string into its statements, keeping each one's original text.
//!
//! A client may send `BEGIN; INSERT …; COMMIT` in one message. Each statement is planned on
//! its own, and the ones Tandem leaves alone must go back to the server exactly as the client
//! wrote them, comments and spacing included. Cutting at the top-level `;` found by the
//! [lexer](crate::lexer) gives those slices without re-serialising anything. Pieces that hold
//! only whitespace or comments (`;;`, a trailing comment) are dropped, as the server does.

use crate::lexer::{Kind, Scanner};

/// The statements of `sql`, trimmed of surrounding whitespace, without their `;`.
pub(crate) fn split_statements(sql: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut has_token = false;
    for token in Scanner::new(sql) {
        if token.kind == Kind::Semicolon {
            if has_token {
                pieces.push(sql[start..token.start].trim());
            }
            start = token.end;
            has_token = false;
        } else {
            has_token = true;
        }
    }
    if has_token {
        pieces.push(sql[start..].trim());
    }
    pieces
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
