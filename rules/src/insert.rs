//! Mirroring `INSERT` into a ruled table.
//!
//! ```sql
//! INSERT INTO orders AS o (id, amount) VALUES ($1, $2) RETURNING o.id
//! -- becomes
//! WITH tandem_w AS (INSERT INTO orders AS o (id, amount) VALUES ($1, $2) RETURNING *),
//!      tandem_m AS (INSERT INTO public.orders_v2 (...) SELECT ... FROM tandem_w
//!                   ON CONFLICT (id) DO UPDATE SET ...)
//! SELECT o.id FROM tandem_w AS o
//! ```
//!
//! Every INSERT form PostgreSQL has works the same way (VALUES, multi-row, SELECT, DEFAULT
//! VALUES, the client's own ON CONFLICT): `tandem_w` holds exactly the rows the legacy table
//! inserted or updated, and the target gets those rows by upsert, so a row the client's
//! `ON CONFLICT DO NOTHING` skipped is skipped in the target too.

use sqlparser::ast::{Insert, TableObject, With};

use crate::plan::{StatementPlan, WriteTag};
use crate::refusal::Refusal;
use crate::returning::Subject;
use crate::rule::ResolvedRule;

/// Rewrite an INSERT into `rule`'s table (with the client's `with`, if any);
/// `statement` is the client's text, kept with any drift under the `record` policy.
pub(crate) fn rewrite(
    with: Option<&With>,
    ins: &Insert,
    rule: &ResolvedRule,
    statement: &str,
) -> Result<StatementPlan, Refusal> {
    let unsupported = |construct: &str| Refusal::Unsupported {
        table: rule.rule.table.clone(),
        construct: construct.to_string(),
    };
    let TableObject::TableName(table) = &ins.table else {
        return Err(unsupported("INSERT INTO a table function"));
    };
    if has_foreign_syntax(ins) {
        return Err(unsupported("INSERT syntax from another SQL dialect"));
    }
    let subject = Subject {
        table,
        alias: ins.table_alias.as_ref().map(|a| &a.alias),
        rule,
    };
    let mut write = ins.clone();
    write.returning = None;
    Ok(subject.mirrored(
        with,
        &write,
        "*",
        WriteTag::Insert,
        ins.returning.as_deref(),
        statement,
    ))
}

/// Clauses the parser accepts for other databases; PostgreSQL would reject them anyway.
fn has_foreign_syntax(ins: &Insert) -> bool {
    ins.or.is_some()
        || ins.ignore
        || ins.overwrite
        || ins.replace_into
        || ins.has_table_keyword
        || ins.partitioned.is_some()
        || !ins.after_columns.is_empty()
        || !ins.assignments.is_empty()
        || ins.output.is_some()
        || ins.priority.is_some()
        || ins.insert_alias.is_some()
        || ins.settings.is_some()
        || ins.format_clause.is_some()
        || ins.multi_table_insert_type.is_some()
        || !ins.optimizer_hints.is_empty()
}

#[cfg(test)]
#[path = "tests/insert.rs"]
mod tests;
