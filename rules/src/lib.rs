//! Tandem's rule model and SQL rewriting. Pure: no I/O, no globals.
//!
//! Tandem is a PostgreSQL wire-protocol proxy that moves a hot legacy table to a new target
//! table without an application change. While a rule is in `dual_write`, every write to the
//! legacy table is sent to the server as one rewritten statement that also writes the
//! target, atomically. This crate decides what to send:
//!
//! - [`rule`], [`name`], [`ruleset`]: the rules, their tables' catalog facts, and name
//!   resolution through `search_path`;
//! - [`prefilter`]: the allocation-free check the proxy runs on every statement;
//! - [`plan()`] (in `planner`): from a client's SQL string to a [`Plan`] (types in [`plan`]) — pass through, rewritten
//!   statements with the response fix-ups they need, a COPY to mirror, or a rejection.
//!
//! One module per rewrite (`insert`, `update` and its key-moving form `keymove`, `delete`,
//! `truncate`, `merge`, `copy`), all
//! built on the CTE shape described in `sqlgen`. A large multi-row `INSERT ... VALUES`
//! is planned through `bulk`, in time linear in its size: its rows are carried over as
//! written, never parsed into a tree. Writes made by functions, triggers or views
//! are invisible in SQL text and out of scope.
#![deny(missing_docs)]

mod bulk;
mod carried;
mod copy;
mod ddl;
mod delete;
pub mod fingerprint;
pub mod guard;
mod ident;
mod insert;
mod keymove;
pub mod lexer;
pub mod literals;
mod merge;
pub mod name;
mod only;
mod parse;
pub mod plan;
mod planner;
pub mod prefilter;
pub mod prepared;
pub mod reading;
mod reads;
mod record;
mod refusal;
mod rename;
mod returning;
mod reverse;
pub mod rule;
pub mod ruleset;
pub mod shadow;
mod split;
mod sqlgen;
pub mod triggers;
mod truncate;
mod update;
mod writes;

#[cfg(test)]
mod testkit;

pub use fingerprint::{query_shape, QueryShape};
pub use ident::{name_part, quote_ident};
pub use lexer::{CharWidths, Lexing};
pub use name::{NameError, TableName};
pub use plan::{
    join_statements, ColumnOrigin, CopyFormat, CopyIn, PlainFirst, Plan, ResponseFix,
    StatementPlan, WriteTag,
};
pub use planner::plan;
pub use prefilter::{first_ruled_name, mentions_ruled_table, RuledNames};
pub use prepared::{executed_names, executes_by_statement, prepared_statements};
pub use reading::{
    custom_setting_names, parse_search_path, read, search_path_changes_before_ruled,
    settings_touch, Reading, SessionReading, SettingsTouch,
};
pub use record::SUPPORT_SQL;
pub use refusal::{
    Refusal, Rejection, Unreadable, FEATURE_NOT_SUPPORTED, OBJECT_NOT_IN_PREREQUISITE_STATE,
};
pub use reverse::reversed;
pub use rule::{
    mirrored_columns, ColumnInfo, GuardPolicy, MirrorErrorPolicy, Mode, ResolvedRule, Rule,
    RuleError, TableShape,
};
pub use ruleset::{refuse_chains, RuleSet};
pub use shadow::{overlap, shadow_pair, ShadowPair};
pub use split::statement_spans;

/// Checks that `text` is one SQL expression (a backfill's `--where` predicate, say), so it
/// can be put in a WHERE clause without changing the statement around it.
pub fn check_expression(text: &str) -> Result<(), String> {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    use sqlparser::tokenizer::Token;
    let mut parser = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .map_err(|e| e.to_string())?;
    parser.parse_expr().map_err(|e| e.to_string())?;
    parser
        .expect_token(&Token::EOF)
        .map(|_| ())
        .map_err(|_| "expected one expression and nothing after it".to_string())
}

#[cfg(test)]
mod expression_tests {
    #[test]
    fn one_expression_only() {
        assert!(super::check_expression("tenant = 'acme' AND id < 10").is_ok());
        assert!(super::check_expression("1=1; DROP TABLE x").is_err());
        assert!(super::check_expression("tenant = ").is_err());
    }
}
