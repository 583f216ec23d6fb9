//! The SQL parser as Tandem uses it: PostgreSQL dialect, one statement or expression at a
//! time, and a check that a parsed statement renders back to the same tree (a rewrite
//! embeds the client's statement as rendered).

use sqlparser::ast::{Expr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Parse one SQL expression (a rule's `set` value).
pub(crate) fn parse_expr(text: &str) -> Result<Expr, String> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| e.to_string())
}

/// Parse text that must hold exactly one statement.
pub(crate) fn parse_statement(sql: &str) -> Result<Statement, String> {
    let mut statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| e.to_string())?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        n => Err(format!("expected one statement, found {n}")),
    }
}

/// Does the parser's rendering of `stmt` parse back to the same tree? A rewrite embeds the
/// client's statement as rendered, so a rendering that changed its meaning must not be sent.
pub(crate) fn renders_faithfully(stmt: &Statement) -> bool {
    parse_statement(&stmt.to_string()).is_ok_and(|back| &back == stmt)
}
