//! SQL-level prepared statements (`PREPARE name AS …` / `EXECUTE name`).
//!
//! A statement prepared while a table's rule was `off` would, on a later `EXECUTE`, write
//! the legacy table unmirrored after the rule went to `dual_write`; one prepared under
//! `cutover` would read a stale legacy table under `target_only`. The proxy therefore
//! remembers each session's `PREPARE` text and the rules version it was planned under,
//! and plans it again when an `EXECUTE` names it under newer rules. This module only reads
//! names out of SQL text; parsing happens only for strings that start with `PREPARE` or
//! contain `EXECUTE`, which ordinary traffic does not.

use sqlparser::ast::Statement;

use crate::ident::normalize;
use crate::parse::parse_statement;
use crate::split::split_statements;

/// Every `PREPARE name [(types)] AS statement` in a simple-query string: the name
/// (catalog spelling) and that statement's own text. Cheap for strings without PREPARE.
pub fn prepared_statements(sql: &str) -> Vec<(String, &str)> {
    if !contains_word(sql, b"prepare") {
        return Vec::new();
    }
    split_statements(sql)
        .into_iter()
        .filter(|piece| {
            piece
                .get(..7)
                .is_some_and(|w| w.eq_ignore_ascii_case("prepare"))
        })
        .filter_map(|piece| match parse_statement(piece) {
            Ok(Statement::Prepare { name, .. }) => Some((normalize(&name), piece)),
            _ => None,
        })
        .collect()
}

/// The prepared statement names a simple-query string `EXECUTE`s, in order (catalog
/// spelling), `EXPLAIN EXECUTE` included (the server plans the statement it holds). A
/// statement that does not parse names nothing.
pub fn executed_names(sql: &str) -> Vec<String> {
    if !contains_word(sql, b"execute") {
        return Vec::new();
    }
    split_statements(sql)
        .into_iter()
        .filter_map(|piece| parse_statement(piece).ok())
        .filter_map(|stmt| executed_name(&stmt))
        .collect()
}

/// For each statement of a simple-query string, in order, the prepared statement it
/// `EXECUTE`s (catalog spelling) when it is a plain `EXECUTE`, whose rows are the prepared
/// statement's own (not EXPLAIN of one).
pub fn executes_by_statement(sql: &str) -> Vec<Option<String>> {
    if !contains_word(sql, b"execute") {
        return Vec::new();
    }
    split_statements(sql)
        .into_iter()
        .map(|piece| match parse_statement(piece) {
            Ok(stmt @ Statement::Execute { .. }) => executed_name(&stmt),
            _ => None,
        })
        .collect()
}

/// The name an `EXECUTE` (or EXPLAIN of one) runs.
fn executed_name(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::Execute {
            name: Some(name),
            immediate: false,
            ..
        } => name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .map(normalize),
        Statement::Explain { statement, .. } => executed_name(statement),
        _ => None,
    }
}

/// Case-insensitive substring test without allocating (the proxy calls this per query).
fn contains_word(sql: &str, word: &[u8]) -> bool {
    sql.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_and_folded() {
        assert_eq!(
            prepared_statements("  PREPARE Ins (int) AS INSERT INTO t VALUES ($1)"),
            vec![(
                "ins".to_string(),
                "PREPARE Ins (int) AS INSERT INTO t VALUES ($1)"
            )]
        );
        assert_eq!(
            prepared_statements("SELECT 1; prepare \"Q\" AS SELECT 1"),
            vec![("Q".to_string(), "prepare \"Q\" AS SELECT 1")]
        );
        assert!(prepared_statements("SELECT 'prepare'").is_empty());
        assert_eq!(
            executed_names("BEGIN; EXECUTE ins(1); execute \"Q\"; COMMIT"),
            vec!["ins".to_string(), "Q".to_string()]
        );
        assert!(executed_names("SELECT 'execute'").is_empty());
        assert_eq!(
            executed_names("EXPLAIN EXECUTE q(1); EXPLAIN (ANALYZE, COSTS off) EXECUTE r"),
            vec!["q".to_string(), "r".to_string()]
        );
        assert_eq!(
            executes_by_statement("SELECT 1; EXECUTE q; EXPLAIN EXECUTE q; EXECUTE \"R\"(1)"),
            vec![None, Some("q".to_string()), None, Some("R".to_string())]
        );
    }
}
